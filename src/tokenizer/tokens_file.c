// Token files (mambac data): writing a tokenized corpus with a header that names its tokenizer and that
// tokenizer.json's SHA-256, and reading it back checked. The layout is documented at mc_tokens_open in mambac.h.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/checked.h"
#include "base/error.h"
#include "base/file.h"
#include "tokenizer/tokenizer.h"

#define TOKENS_MAGIC       "MCTOKENS"
#define TOKENS_VERSION     1
#define TOKENS_FIXED_BYTES 84 // the header up to and including name_len
#define TOKENS_ALIGN       64 // token data starts at a multiple of this, so a mapping can be read as uint16/uint32
#define TOKENS_MAX_NAME    4096

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

static uint32_t get_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const unsigned char *p) {
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

static void hex16(const uint8_t *sha, char out[17]) { // the first 8 bytes, enough to tell two files apart
    for (int i = 0; i < 8; i++) {
        snprintf(out + 2 * i, 3, "%02x", sha[i]);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Writer: ids are kept in memory in their file encoding, then written in one go behind the header.

struct mc_tokens_writer {
    char *name;
    uint8_t sha256[32];
    int64_t n_vocab;
    int32_t eos_id;
    int token_bytes;
    unsigned char *data;
    int64_t n_tokens, n_docs, cap_bytes;
};

mc_status mc_tokens_writer_new(const mc_tokenizer *tok, const char *tokenizer_name, int32_t eos_id,
                               mc_tokens_writer **out, mc_error *err) {
    if (out == NULL) {
        return mc_fail(err, MC_ERR_INVALID, "token file writer: out is NULL");
    }
    *out = NULL;
    if (tok == NULL || tokenizer_name == NULL) {
        return mc_fail(err, MC_ERR_INVALID, "token file writer: tokenizer or its name is NULL");
    }
    int64_t n_vocab = mc_tokenizer_n_vocab(tok);
    if (eos_id < -1 || eos_id >= n_vocab) {
        return mc_fail(err, MC_ERR_INVALID, "EOS id %d is outside the tokenizer's vocabulary of %lld", eos_id,
                       (long long)n_vocab);
    }
    size_t name_len = strlen(tokenizer_name);
    if (name_len > TOKENS_MAX_NAME) {
        return mc_fail(err, MC_ERR_INVALID, "tokenizer name is %zu bytes, more than the %d a token file holds",
                       name_len, TOKENS_MAX_NAME);
    }
    mc_tokens_writer *w = calloc(1, sizeof(*w));
    if (w == NULL || (w->name = strdup(tokenizer_name)) == NULL) {
        free(w);
        return mc_fail(err, MC_ERR_NOMEM, "token file writer: out of memory");
    }
    mc_tokenizer_sha256(tok, w->sha256);
    w->n_vocab = n_vocab;
    w->eos_id = eos_id;
    w->token_bytes = n_vocab <= 65536 ? 2 : 4; // every id < n_vocab fits
    *out = w;
    return MC_OK;
}

void mc_tokens_writer_free(mc_tokens_writer *w) {
    if (w == NULL) {
        return;
    }
    free(w->name);
    free(w->data);
    free(w);
}

static bool writer_reserve(mc_tokens_writer *w, int64_t n) {
    int64_t need = 0;
    if (!mc_add_i64(w->n_tokens, n, &need) || !mc_mul_i64(need, w->token_bytes, &need)) {
        return false;
    }
    if (need <= w->cap_bytes) {
        return true;
    }
    int64_t cap = w->cap_bytes == 0 ? 1 << 20 : w->cap_bytes;
    while (cap < need) {
        cap *= 2;
    }
    unsigned char *p = realloc(w->data, (size_t)cap);
    if (p == NULL) {
        return false;
    }
    w->data = p;
    w->cap_bytes = cap;
    return true;
}

static void writer_put(mc_tokens_writer *w, int32_t id) {
    unsigned char *p = w->data + w->n_tokens * w->token_bytes;
    p[0] = (unsigned char)id;
    p[1] = (unsigned char)(id >> 8);
    if (w->token_bytes == 4) {
        p[2] = (unsigned char)(id >> 16);
        p[3] = (unsigned char)(id >> 24);
    }
    w->n_tokens++;
}

mc_status mc_tokens_writer_add(mc_tokens_writer *w, const int32_t *ids, int64_t n, mc_error *err) {
    if (w == NULL || n < 0 || (ids == NULL && n > 0)) {
        return mc_fail(err, MC_ERR_INVALID, "token file writer: writer or ids is NULL, or n < 0");
    }
    for (int64_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= w->n_vocab) {
            return mc_fail(err, MC_ERR_INVALID, "document %lld: token %lld is id %d, outside the vocabulary of %lld",
                           (long long)w->n_docs, (long long)i, ids[i], (long long)w->n_vocab);
        }
    }
    int64_t total = n + (w->eos_id >= 0 ? 1 : 0);
    if (!writer_reserve(w, total)) {
        return mc_fail(err, MC_ERR_NOMEM, "token file writer: out of memory for %lld more tokens", (long long)total);
    }
    for (int64_t i = 0; i < n; i++) {
        writer_put(w, ids[i]);
    }
    if (w->eos_id >= 0) {
        writer_put(w, w->eos_id);
    }
    w->n_docs++;
    return MC_OK;
}

void mc_tokens_writer_get_info(const mc_tokens_writer *w, mc_tokens_info *info) {
    *info = (mc_tokens_info){ 0 };
    if (w == NULL) {
        return;
    }
    *info = (mc_tokens_info){ .n_tokens = w->n_tokens,
                              .n_docs = w->n_docs,
                              .n_vocab = w->n_vocab,
                              .token_bytes = w->token_bytes,
                              .eos_id = w->eos_id,
                              .tokenizer_name = w->name };
    memcpy(info->tokenizer_sha256, w->sha256, 32);
}

mc_status mc_tokens_writer_save(const mc_tokens_writer *w, const char *path, mc_error *err) {
    if (w == NULL || path == NULL) {
        return mc_fail(err, MC_ERR_INVALID, "token file writer: writer or path is NULL");
    }
    size_t name_len = strlen(w->name);
    size_t header_bytes = (TOKENS_FIXED_BYTES + name_len + TOKENS_ALIGN - 1) / TOKENS_ALIGN * TOKENS_ALIGN;
    unsigned char *h = calloc(1, header_bytes);
    if (h == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "%s: out of memory", path);
    }
    memcpy(h, TOKENS_MAGIC, 8);
    put_u32(h + 8, TOKENS_VERSION);
    put_u32(h + 12, (uint32_t)header_bytes);
    put_u32(h + 16, (uint32_t)w->token_bytes);
    put_u32(h + 20, (uint32_t)w->eos_id);
    put_u64(h + 24, (uint64_t)w->n_tokens);
    put_u64(h + 32, (uint64_t)w->n_docs);
    put_u64(h + 40, (uint64_t)w->n_vocab);
    memcpy(h + 48, w->sha256, 32);
    put_u32(h + 80, (uint32_t)name_len);
    memcpy(h + TOKENS_FIXED_BYTES, w->name, name_len);
    mc_file_out *f = NULL;
    mc_status st = mc_file_out_open(path, &f, err);
    if (st == MC_OK) {
        st = mc_file_out_write(f, h, header_bytes, err);
    }
    if (st == MC_OK) {
        st = mc_file_out_write(f, w->data, (size_t)(w->n_tokens * w->token_bytes), err);
    }
    if (st == MC_OK) {
        st = mc_file_out_commit(f, err);
    } else {
        mc_file_out_abort(f);
    }
    free(h);
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// Reader: the file is memory-mapped; every header field is checked before it sizes anything.

struct mc_tokens {
    mc_mapping map;
    mc_tokens_info info;
    char *name; // owned, NUL-terminated: info.tokenizer_name
    const unsigned char *data;
};

void mc_tokens_close(mc_tokens *t) {
    if (t == NULL) {
        return;
    }
    mc_file_unmap(&t->map);
    free(t->name);
    free(t);
}

static mc_status check_magic(const char *path, const unsigned char *p, size_t len, mc_error *err) {
    size_t n = len < 8 ? len : 8;
    if (memcmp(p, TOKENS_MAGIC, n) != 0) {
        return mc_fail(err, MC_ERR_FORMAT, "%s: not a mambac token file (bad magic, expected \"%s\")", path,
                       TOKENS_MAGIC);
    }
    if (len < TOKENS_FIXED_BYTES) {
        return mc_fail(err, MC_ERR_FORMAT, "%s: truncated: %zu bytes, shorter than the %d-byte header", path, len,
                       TOKENS_FIXED_BYTES);
    }
    uint32_t version = get_u32(p + 8);
    if (version != TOKENS_VERSION) {
        return mc_fail(err, MC_ERR_UNSUPPORTED, "%s: token file version %u, this mambac reads version %d", path,
                       version, TOKENS_VERSION);
    }
    return MC_OK;
}

// The header fields into t->info, each checked against the file's size.
static mc_status parse_header(const char *path, mc_tokens *t, mc_error *err) {
    const unsigned char *p = t->map.data;
    size_t len = t->map.len;
    uint32_t header_bytes = get_u32(p + 12), token_bytes = get_u32(p + 16), name_len = get_u32(p + 80);
    int32_t eos_id = (int32_t)get_u32(p + 20);
    uint64_t n_tokens = get_u64(p + 24), n_docs = get_u64(p + 32), n_vocab = get_u64(p + 40);
    if (header_bytes < TOKENS_FIXED_BYTES || header_bytes % TOKENS_ALIGN != 0 ||
        name_len > header_bytes - TOKENS_FIXED_BYTES) {
        return mc_fail(err, MC_ERR_FORMAT, "%s: header size %u or tokenizer name length %u is inconsistent", path,
                       header_bytes, name_len);
    }
    if (header_bytes > len) {
        return mc_fail(err, MC_ERR_FORMAT, "%s: truncated: %zu bytes, shorter than its %u-byte header", path, len,
                       header_bytes);
    }
    if (token_bytes != 2 && token_bytes != 4) {
        return mc_fail(err, MC_ERR_FORMAT, "%s: %u bytes per token, expected 2 (uint16) or 4 (uint32)", path,
                       token_bytes);
    }
    if (n_vocab < 1 || n_vocab > INT32_MAX || (token_bytes == 2 && n_vocab > 65536)) {
        return mc_fail(err, MC_ERR_FORMAT, "%s: vocabulary size %llu does not fit %u-byte ids", path,
                       (unsigned long long)n_vocab, token_bytes);
    }
    if (eos_id < -1 || (int64_t)eos_id >= (int64_t)n_vocab) {
        return mc_fail(err, MC_ERR_FORMAT, "%s: EOS id %d is outside its vocabulary of %llu", path, eos_id,
                       (unsigned long long)n_vocab);
    }
    uint64_t have = (len - header_bytes) / token_bytes;
    if (n_tokens > have) {
        return mc_fail(err, MC_ERR_FORMAT, "%s: truncated: holds %llu of the %llu tokens its header counts", path,
                       (unsigned long long)have, (unsigned long long)n_tokens);
    }
    if (len - header_bytes != n_tokens * token_bytes) {
        return mc_fail(err, MC_ERR_FORMAT, "%s: %llu bytes after the %llu tokens its header counts", path,
                       (unsigned long long)(len - header_bytes - n_tokens * token_bytes), (unsigned long long)n_tokens);
    }
    t->name = malloc((size_t)name_len + 1);
    if (t->name == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "%s: out of memory", path);
    }
    memcpy(t->name, p + TOKENS_FIXED_BYTES, name_len);
    t->name[name_len] = '\0';
    t->data = p + header_bytes;
    t->info = (mc_tokens_info){ .n_tokens = (int64_t)n_tokens,
                                .n_docs = n_docs > INT64_MAX ? INT64_MAX : (int64_t)n_docs,
                                .n_vocab = (int64_t)n_vocab,
                                .token_bytes = (int)token_bytes,
                                .eos_id = eos_id,
                                .tokenizer_name = t->name };
    memcpy(t->info.tokenizer_sha256, p + 48, 32);
    return MC_OK;
}

static int64_t token_at(const mc_tokens *t, int64_t i) {
    const unsigned char *p = t->data + i * t->info.token_bytes;
    return t->info.token_bytes == 2 ? (int64_t)(p[0] | p[1] << 8) : (int64_t)get_u32(p);
}

static mc_status check_tokens(const char *path, const mc_tokens *t, const mc_tokenizer *tok, mc_error *err) {
    if (tok != NULL) {
        uint8_t sha[32];
        mc_tokenizer_sha256(tok, sha);
        if (memcmp(sha, t->info.tokenizer_sha256, 32) != 0) {
            char want[17], have[17], name[96];
            hex16(t->info.tokenizer_sha256, want);
            hex16(sha, have);
            mc_escape(name, sizeof(name), t->name, strlen(t->name));
            return mc_fail(err, MC_ERR_INVALID,
                           "%s: made with tokenizer %s (sha256 %s...), not the one in use (sha256 %s...)", path, name,
                           want, have);
        }
    }
    for (int64_t i = 0; i < t->info.n_tokens; i++) {
        int64_t id = token_at(t, i);
        if (id >= t->info.n_vocab) {
            return mc_fail(err, MC_ERR_FORMAT, "%s: token %lld is id %lld, outside its vocabulary of %lld", path,
                           (long long)i, (long long)id, (long long)t->info.n_vocab);
        }
    }
    return MC_OK;
}

mc_status mc_tokens_open(const char *path, const mc_tokenizer *tok, mc_tokens **out, mc_error *err) {
    if (out == NULL) {
        return mc_fail(err, MC_ERR_INVALID, "token file: out is NULL");
    }
    *out = NULL;
    if (path == NULL) {
        return mc_fail(err, MC_ERR_INVALID, "token file: path is NULL");
    }
    mc_tokens *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "%s: out of memory", path);
    }
    mc_status st = mc_file_map(path, &t->map, err);
    if (st == MC_OK && t->map.len == 0) {
        st = mc_fail(err, MC_ERR_FORMAT, "%s: empty file, not a mambac token file", path);
    }
    if (st == MC_OK) {
        st = check_magic(path, t->map.data, t->map.len, err);
    }
    if (st == MC_OK) {
        st = parse_header(path, t, err);
    }
    if (st == MC_OK) {
        st = check_tokens(path, t, tok, err);
    }
    if (st != MC_OK) {
        mc_tokens_close(t);
        return st;
    }
    *out = t;
    return MC_OK;
}

void mc_tokens_get_info(const mc_tokens *t, mc_tokens_info *info) {
    *info = t == NULL ? (mc_tokens_info){ .eos_id = -1 } : t->info;
}

mc_status mc_tokens_read(const mc_tokens *t, int64_t start, int64_t n, int32_t *ids, mc_error *err) {
    if (t == NULL || (ids == NULL && n > 0)) {
        return mc_fail(err, MC_ERR_INVALID, "token file read: file or ids is NULL");
    }
    if (start < 0 || n < 0 || start > t->info.n_tokens || n > t->info.n_tokens - start) {
        return mc_fail(err, MC_ERR_INVALID, "token file read: tokens [%lld, %lld + %lld) are outside the %lld it holds",
                       (long long)start, (long long)start, (long long)n, (long long)t->info.n_tokens);
    }
    for (int64_t i = 0; i < n; i++) {
        ids[i] = (int32_t)token_at(t, start + i);
    }
    return MC_OK;
}
