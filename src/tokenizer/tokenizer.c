// Loading a tokenizer.json (byte-level BPE, spec §10) into mc_tokenizer, checking it as tokenizers would, and the
// read-only accessors. Encoding lives in encode.c, decoding in decode.c.
#include "tokenizer/tokenizer.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/file.h"

#define MC_TOKENIZER_MAX_BYTES ((size_t)1 << 30)
#define MC_TOKENIZER_MAX_ID    ((1 << 24) - 1) // per-id tables are dense: bound them

int32_t mc_byte_to_symbol(unsigned char b) {
    // GPT-2 bytes_to_unicode: printable bytes keep their code point, the other 68 take U+0100.. in byte order.
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE) {
        return b;
    }
    int32_t k = 0; // how many non-printable bytes come before b
    if (b <= 0x20) {
        k = b;
    } else if (b <= 0xA0) {
        k = 0x21 + (b - 0x7F);
    } else { // 0xAD
        k = 0x21 + 0x22;
    }
    return 0x100 + k;
}

static int symbol_to_byte(int32_t cp) {
    if (cp < 0 || cp > 0x143) {
        return -1;
    }
    if (cp < 0x100) {
        return mc_byte_to_symbol((unsigned char)cp) == cp ? cp : -1;
    }
    int32_t k = cp - 0x100;
    if (k <= 0x20) {
        return k;
    }
    if (k <= 0x20 + 0x22) {
        return 0x7F + (k - 0x21);
    }
    return 0xAD;
}

// Loading context: the parsed document plus what the steps hand each other.
typedef struct loader {
    const char *path;
    mc_tokenizer *tok;
    const cJSON *model;
    int64_t max_vocab_id;
    const char **id_str;        // [n_vocab]: the token string of each id (borrowed from the document)
    const char **added_content; // [n_added]: content of tok->added[i] (borrowed from the document)
} loader;

static mc_status parse_document(const char *path, const char *text, size_t len, cJSON **root, mc_error *err) {
    if (len == 0) {
        return mc_fail(err, MC_ERR_FORMAT, "%s: empty file, expected a tokenizer.json object", path);
    }
    int64_t bad = mc_utf8_check((const unsigned char *)text, (int64_t)len);
    if (bad < (int64_t)len) { // serde_json rejects these files too
        return mc_fail(err, MC_ERR_FORMAT, "%s: not valid UTF-8 at byte %lld", path, (long long)bad);
    }
    const char *nul = memchr(text, '\0', len);
    if (nul != NULL) { // cJSON would stop there and quietly ignore the rest
        return mc_fail(err, MC_ERR_FORMAT, "%s: NUL byte at offset %td, not JSON", path, nul - text);
    }
    const char *end = NULL;
    *root = cJSON_ParseWithLengthOpts(text, len + 1, &end, true);
    if (*root == NULL) {
        long long at = end != NULL && end >= text ? (long long)(end - text) : -1;
        return mc_fail(err, MC_ERR_FORMAT, "%s: invalid JSON near byte %lld", path, at);
    }
    if (!cJSON_IsObject(*root)) {
        return mc_fail(err, MC_ERR_FORMAT, "%s: top level is not a JSON object", path);
    }
    return MC_OK;
}

static mc_status get_bool(const cJSON *obj, const char *key, bool dflt, bool *out, const char *where, loader *ld,
                          mc_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (v == NULL || cJSON_IsNull(v)) {
        *out = dflt;
        return MC_OK;
    }
    if (!cJSON_IsBool(v)) {
        return mc_fail(err, MC_ERR_FORMAT, "%s: %s.%s is not a boolean", ld->path, where, key);
    }
    *out = cJSON_IsTrue(v);
    return MC_OK;
}

// The "type" of a component object, escaped for messages; "" when absent.
static const char *type_of(const cJSON *obj, char *buf, size_t cap) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(obj, "type");
    const char *s = cJSON_IsString(t) ? t->valuestring : "";
    mc_escape(buf, cap, s, strlen(s));
    return buf;
}

static bool json_id(const cJSON *v, int64_t *id) {
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > MC_TOKENIZER_MAX_ID ||
        v->valuedouble != (double)(int64_t)v->valuedouble) {
        return false;
    }
    *id = (int64_t)v->valuedouble;
    return true;
}

static mc_status load_vocab(loader *ld, mc_error *err) {
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(ld->model, "vocab");
    if (!cJSON_IsObject(vocab)) {
        return mc_fail(err, MC_ERR_FORMAT, "%s: model.vocab is missing or not an object", ld->path);
    }
    char name[64];
    ld->max_vocab_id = -1;
    for (const cJSON *e = vocab->child; e != NULL; e = e->next) {
        int64_t id = 0;
        if (!json_id(e, &id)) {
            mc_escape(name, sizeof(name), e->string, strlen(e->string));
            return mc_fail(err, MC_ERR_FORMAT, "%s: model.vocab[\"%s\"] is not an integer id in [0, %d]", ld->path,
                           name, MC_TOKENIZER_MAX_ID);
        }
        bool existed = false;
        if (!mc_strmap_put(&ld->tok->vocab, e->string, (int64_t)strlen(e->string), (int32_t)id, &existed)) {
            return mc_fail(err, MC_ERR_NOMEM, "%s: out of memory reading model.vocab", ld->path);
        }
        if (existed) {
            mc_escape(name, sizeof(name), e->string, strlen(e->string));
            return mc_fail(err, MC_ERR_FORMAT, "%s: model.vocab has token \"%s\" twice", ld->path, name);
        }
        ld->max_vocab_id = id > ld->max_vocab_id ? id : ld->max_vocab_id;
    }
    return MC_OK;
}

static mc_status merge_token_id(loader *ld, int64_t index, const char *s, size_t len, int32_t *id, mc_error *err) {
    *id = mc_strmap_get(&ld->tok->vocab, s, (int64_t)len);
    if (*id < 0) {
        char name[64];
        mc_escape(name, sizeof(name), s, len);
        return mc_fail(err, MC_ERR_FORMAT, "%s: model.merges[%lld]: token \"%s\" is not in the vocab", ld->path,
                       (long long)index, name);
    }
    return MC_OK;
}

// One merge (left, right) of rank `rank`: both sides and their concatenation must be vocab tokens.
static mc_status add_merge(loader *ld, int64_t index, int64_t rank, const char *a, size_t a_len, const char *b,
                           size_t b_len, mc_error *err) {
    int32_t left, right, merged;
    mc_status st = merge_token_id(ld, index, a, a_len, &left, err);
    if (st == MC_OK) {
        st = merge_token_id(ld, index, b, b_len, &right, err);
    }
    if (st != MC_OK) {
        return st;
    }
    char *cat = malloc(a_len + b_len + 1);
    if (cat == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "%s: out of memory reading model.merges", ld->path);
    }
    memcpy(cat, a, a_len);
    memcpy(cat + a_len, b, b_len);
    st = merge_token_id(ld, index, cat, a_len + b_len, &merged, err);
    free(cat);
    if (st == MC_OK && !mc_pairmap_put(&ld->tok->merges, left, right, (int32_t)rank, merged)) {
        st = mc_fail(err, MC_ERR_NOMEM, "%s: out of memory reading model.merges", ld->path);
    }
    return st;
}

static mc_status load_merges(loader *ld, mc_error *err) {
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(ld->model, "merges");
    if (!cJSON_IsArray(merges)) {
        return mc_fail(err, MC_ERR_FORMAT, "%s: model.merges is missing or not an array", ld->path);
    }
    int64_t index = 0, rank = 0;
    for (const cJSON *e = merges->child; e != NULL; e = e->next, index++) {
        mc_status st = MC_OK;
        if (cJSON_IsString(e)) {
            const char *s = e->valuestring;
            if (strncmp(s, "#version", 8) == 0) { // merges.txt header lines take no rank
                continue;
            }
            const char *sp = strchr(s, ' ');
            if (sp == NULL || strchr(sp + 1, ' ') != NULL) {
                return mc_fail(err, MC_ERR_FORMAT, "%s: model.merges[%lld] is not two tokens separated by one space",
                               ld->path, (long long)index);
            }
            st = add_merge(ld, index, rank, s, (size_t)(sp - s), sp + 1, strlen(sp + 1), err);
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) &&
                   cJSON_IsString(e->child->next)) {
            const char *a = e->child->valuestring, *b = e->child->next->valuestring;
            st = add_merge(ld, index, rank, a, strlen(a), b, strlen(b), err);
        } else {
            return mc_fail(err, MC_ERR_FORMAT, "%s: model.merges[%lld] is neither \"a b\" nor [\"a\", \"b\"]", ld->path,
                           (long long)index);
        }
        if (st != MC_OK) {
            return st;
        }
        if (++rank > INT32_MAX) {
            return mc_fail(err, MC_ERR_UNSUPPORTED, "%s: more than 2^31 merges", ld->path);
        }
    }
    return MC_OK;
}

// The BPE options tokenizers reads; those that change results and that mambac does not implement are refused.
static mc_status load_model_options(loader *ld, mc_error *err) {
    const cJSON *m = ld->model;
    mc_tokenizer *tok = ld->tok;
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(m, "dropout");
    if (dropout != NULL && !cJSON_IsNull(dropout)) {
        if (!cJSON_IsNumber(dropout) || dropout->valuedouble < 0 || dropout->valuedouble > 1) {
            return mc_fail(err, MC_ERR_FORMAT, "%s: model.dropout is not a number in [0, 1]", ld->path);
        }
        if (dropout->valuedouble > 0) {
            return mc_fail(err, MC_ERR_UNSUPPORTED, "%s: model.dropout %g is not supported (only 0 or null)", ld->path,
                           dropout->valuedouble);
        }
    }
    const char *unsupported[] = { "continuing_subword_prefix", "end_of_word_suffix" };
    for (size_t i = 0; i < sizeof(unsupported) / sizeof(unsupported[0]); i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(m, unsupported[i]);
        if (v != NULL && !cJSON_IsNull(v) && !(cJSON_IsString(v) && v->valuestring[0] == '\0')) {
            return mc_fail(err, MC_ERR_UNSUPPORTED, "%s: model.%s is not supported (only null)", ld->path,
                           unsupported[i]);
        }
    }
    bool byte_fallback = false;
    mc_status st = get_bool(m, "byte_fallback", false, &byte_fallback, "model", ld, err);
    if (st == MC_OK && byte_fallback) {
        st = mc_fail(err, MC_ERR_UNSUPPORTED, "%s: model.byte_fallback true is not supported", ld->path);
    }
    if (st == MC_OK) {
        st = get_bool(m, "fuse_unk", false, &tok->fuse_unk, "model", ld, err);
    }
    if (st == MC_OK) {
        st = get_bool(m, "ignore_merges", false, &tok->ignore_merges, "model", ld, err);
    }
    if (st != MC_OK) {
        return st;
    }
    tok->unk_id = -1;
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(m, "unk_token");
    if (unk != NULL && !cJSON_IsNull(unk)) {
        if (!cJSON_IsString(unk)) {
            return mc_fail(err, MC_ERR_FORMAT, "%s: model.unk_token is not a string", ld->path);
        }
        tok->unk_id = mc_strmap_get(&tok->vocab, unk->valuestring, (int64_t)strlen(unk->valuestring));
        if (tok->unk_id < 0) {
            char name[64];
            mc_escape(name, sizeof(name), unk->valuestring, strlen(unk->valuestring));
            return mc_fail(err, MC_ERR_FORMAT, "%s: model.unk_token \"%s\" is not in the vocab", ld->path, name);
        }
    }
    return MC_OK;
}

static mc_status load_model(loader *ld, const cJSON *root, mc_error *err) {
    ld->model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(ld->model)) {
        return mc_fail(err, MC_ERR_FORMAT, "%s: \"model\" is missing or not an object", ld->path);
    }
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(ld->model, "type");
    if (type != NULL && !cJSON_IsString(type)) {
        return mc_fail(err, MC_ERR_FORMAT, "%s: model.type is not a string", ld->path);
    }
    if (type != NULL && strcmp(type->valuestring, "BPE") != 0) { // files without "type" are BPE if they parse
        char name[64];
        return mc_fail(err, MC_ERR_UNSUPPORTED, "%s: model type \"%s\" is not supported (only BPE)", ld->path,
                       type_of(ld->model, name, sizeof(name)));
    }
    mc_status st = load_vocab(ld, err);
    if (st == MC_OK) {
        st = load_merges(ld, err);
    }
    if (st == MC_OK) {
        st = load_model_options(ld, err);
    }
    return st;
}

static mc_status load_pipeline(loader *ld, const cJSON *root, mc_error *err) {
    mc_tokenizer *tok = ld->tok;
    char name[64];
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    if (norm != NULL && !cJSON_IsNull(norm)) {
        if (!cJSON_IsObject(norm) || strcmp(type_of(norm, name, sizeof(name)), "NFC") != 0) {
            return mc_fail(err, MC_ERR_UNSUPPORTED, "%s: normalizer \"%s\" is not supported (only NFC or null)",
                           ld->path, cJSON_IsObject(norm) ? name : "?");
        }
        tok->nfc = true;
    }
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    if (!cJSON_IsObject(pre) || strcmp(type_of(pre, name, sizeof(name)), "ByteLevel") != 0) {
        return mc_fail(err, MC_ERR_UNSUPPORTED, "%s: pre_tokenizer \"%s\" is not supported (only ByteLevel)", ld->path,
                       cJSON_IsObject(pre) ? name : "null");
    }
    if (!cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(pre, "add_prefix_space"))) { // required by serde
        return mc_fail(err, MC_ERR_FORMAT, "%s: pre_tokenizer.add_prefix_space is missing or not a boolean", ld->path);
    }
    mc_status st = get_bool(pre, "add_prefix_space", false, &tok->add_prefix_space, "pre_tokenizer", ld, err);
    if (st == MC_OK) {
        st = get_bool(pre, "use_regex", true, &tok->use_regex, "pre_tokenizer", ld, err);
    }
    if (st != MC_OK) {
        return st;
    }
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    if (!cJSON_IsObject(dec) || strcmp(type_of(dec, name, sizeof(name)), "ByteLevel") != 0) {
        return mc_fail(err, MC_ERR_UNSUPPORTED, "%s: decoder \"%s\" is not supported (only ByteLevel)", ld->path,
                       cJSON_IsObject(dec) ? name : "null");
    }
    // post_processor, truncation and padding play no part: encode never adds special tokens (spec §10.2 step 6).
    return MC_OK;
}

// NFC of s when nfc, else a copy (owned, free()); NULL when out of memory.
static char *normalize_copy(bool nfc, const char *s, size_t len, int64_t *out_len) {
    if (nfc) {
        char *normed = NULL;
        return mc_tokenizer_nfc((const unsigned char *)s, (int64_t)len, &normed, out_len) ? normed : NULL;
    }
    char *copy = malloc(len + 1);
    if (copy != NULL) {
        memcpy(copy, s, len);
        copy[len] = '\0';
    }
    *out_len = (int64_t)len;
    return copy;
}

// One added_tokens entry: its id as tokenizers' AddedVocabulary::add_tokens assigns it (the vocab id of the same
// content, else the next free id), checked against the id the file states.
static mc_status load_added_token(loader *ld, const cJSON *e, int64_t index, mc_strmap *seen, int64_t *next_id,
                                  mc_error *err) {
    mc_tokenizer *tok = ld->tok;
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(e, "content");
    int64_t file_id = 0;
    if (!cJSON_IsObject(e) || !cJSON_IsString(content) ||
        !json_id(cJSON_GetObjectItemCaseSensitive(e, "id"), &file_id)) {
        return mc_fail(err, MC_ERR_FORMAT, "%s: added_tokens[%lld] needs a string content and an integer id", ld->path,
                       (long long)index);
    }
    mc_added_token t = { 0 };
    char where[48];
    snprintf(where, sizeof(where), "added_tokens[%lld]", (long long)index);
    mc_status st = get_bool(e, "special", false, &t.special, where, ld, err);
    if (st == MC_OK) {
        st = get_bool(e, "normalized", !t.special, &t.normalized, where, ld, err);
    }
    if (st == MC_OK) {
        st = get_bool(e, "lstrip", false, &t.lstrip, where, ld, err);
    }
    if (st == MC_OK) {
        st = get_bool(e, "rstrip", false, &t.rstrip, where, ld, err);
    }
    if (st == MC_OK) {
        st = get_bool(e, "single_word", false, &t.single_word, where, ld, err);
    }
    size_t len = strlen(content->valuestring);
    if (st != MC_OK || len == 0) { // empty content is ignored by tokenizers
        return st;
    }
    int32_t prev = mc_strmap_get(seen, content->valuestring, (int64_t)len);
    int32_t id = mc_strmap_get(&tok->vocab, content->valuestring, (int64_t)len);
    if (prev >= 0) {
        id = tok->added[prev].id;
    } else if (id < 0) {
        id = (int32_t)(*next_id)++;
    }
    if (id != file_id) {
        char name[64];
        mc_escape(name, sizeof(name), content->valuestring, len);
        return mc_fail(err, MC_ERR_FORMAT, "%s: added token \"%s\" has id %lld, but tokenizers would give it %d",
                       ld->path, name, (long long)file_id, id);
    }
    t.id = id;
    // Normalized tokens are matched on normalized text, so by their normalized form (refresh_added_tokens).
    t.pattern = normalize_copy(t.normalized && tok->nfc, content->valuestring, len, &t.pattern_len);
    if (t.pattern == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "%s: out of memory reading added_tokens", ld->path);
    }
    if (prev >= 0) { // same content again: the later entry's flags win, the special mark stays
        t.special = t.special || tok->added[prev].special;
        free(tok->added[prev].pattern);
        tok->added[prev] = t;
        return MC_OK;
    }
    bool existed = false;
    if (!mc_strmap_put(seen, content->valuestring, (int64_t)len, (int32_t)tok->n_added, &existed)) {
        free(t.pattern);
        return mc_fail(err, MC_ERR_NOMEM, "%s: out of memory reading added_tokens", ld->path);
    }
    ld->added_content[tok->n_added] = content->valuestring;
    tok->added[tok->n_added++] = t;
    return MC_OK;
}

static mc_status load_added_tokens(loader *ld, const cJSON *root, mc_error *err) {
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (arr == NULL || cJSON_IsNull(arr)) {
        return MC_OK;
    }
    if (!cJSON_IsArray(arr)) {
        return mc_fail(err, MC_ERR_FORMAT, "%s: added_tokens is not an array", ld->path);
    }
    int64_t n = cJSON_GetArraySize(arr);
    ld->tok->added = calloc((size_t)n + 1, sizeof(mc_added_token));
    ld->added_content = calloc((size_t)n + 1, sizeof(char *));
    if (ld->tok->added == NULL || ld->added_content == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "%s: out of memory reading added_tokens", ld->path);
    }
    mc_strmap seen = { 0 };
    int64_t next_id = ld->tok->vocab.count; // tokenizers starts at the model's vocab size (its entry count)
    mc_status st = MC_OK;
    int64_t index = 0;
    for (const cJSON *e = arr->child; e != NULL && st == MC_OK; e = e->next, index++) {
        st = load_added_token(ld, e, index, &seen, &next_id, err);
    }
    mc_strmap_free(&seen);
    return st;
}

// Dense per-id tables: which string each id has, its byte-level decoding, and whether it is special.
static mc_status build_id_tables(loader *ld, mc_error *err) {
    mc_tokenizer *tok = ld->tok;
    int64_t max_id = ld->max_vocab_id;
    for (int64_t i = 0; i < tok->n_added; i++) {
        max_id = tok->added[i].id > max_id ? tok->added[i].id : max_id;
    }
    tok->n_vocab = max_id + 1;
    ld->id_str = calloc((size_t)tok->n_vocab + 1, sizeof(char *));
    tok->flags = calloc((size_t)tok->n_vocab + 1, 1);
    tok->bytes_off = calloc((size_t)tok->n_vocab + 1, sizeof(int64_t));
    if (ld->id_str == NULL || tok->flags == NULL || tok->bytes_off == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "%s: out of memory for %lld ids", ld->path, (long long)tok->n_vocab);
    }
    char name[64];
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(ld->model, "vocab");
    for (const cJSON *e = vocab->child; e != NULL; e = e->next) {
        int64_t id = (int64_t)e->valuedouble;
        if (ld->id_str[id] != NULL) {
            mc_escape(name, sizeof(name), e->string, strlen(e->string));
            return mc_fail(err, MC_ERR_FORMAT, "%s: model.vocab: id %lld is used twice (again by \"%s\")", ld->path,
                           (long long)id, name);
        }
        ld->id_str[id] = e->string;
    }
    for (int64_t i = 0; i < tok->n_added; i++) {
        const mc_added_token *t = &tok->added[i];
        const char *content = ld->added_content[i];
        if (ld->id_str[t->id] != NULL && strcmp(ld->id_str[t->id], content) != 0) {
            mc_escape(name, sizeof(name), content, strlen(content));
            return mc_fail(err, MC_ERR_FORMAT, "%s: added token \"%s\" has id %d, which the vocab already uses",
                           ld->path, name, t->id);
        }
        ld->id_str[t->id] = content;
        tok->flags[t->id] |= t->special ? MC_TOK_SPECIAL : 0;
    }
    return MC_OK;
}

// The byte-level decoding of every id's string (spec §10.5): symbols mapped back to bytes when every character
// is one, else the string's own UTF-8 (how the space-run added tokens decode to spaces).
static mc_status build_bytes(loader *ld, mc_error *err) {
    mc_tokenizer *tok = ld->tok;
    int64_t total = 0;
    for (int64_t id = 0; id < tok->n_vocab; id++) {
        total += ld->id_str[id] != NULL ? (int64_t)strlen(ld->id_str[id]) : 0;
    }
    tok->bytes = malloc((size_t)total + 1);
    if (tok->bytes == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "%s: out of memory for token bytes", ld->path);
    }
    int64_t o = 0;
    for (int64_t id = 0; id < tok->n_vocab; id++) {
        tok->bytes_off[id] = o;
        const unsigned char *s = (const unsigned char *)ld->id_str[id];
        if (s == NULL) {
            continue;
        }
        tok->flags[id] |= MC_TOK_HAS_STRING;
        int64_t len = (int64_t)strlen((const char *)s), pos = 0, start = o;
        while (pos < len) {
            int b = symbol_to_byte(mc_utf8_next(s, &pos));
            if (b < 0) { // not all symbols: the raw string
                memcpy(tok->bytes + start, s, (size_t)len);
                o = start + len;
                break;
            }
            tok->bytes[o++] = (char)b;
        }
    }
    tok->bytes_off[tok->n_vocab] = o;
    for (int b = 0; b < 256; b++) {
        char sym[4];
        int n = mc_utf8_put(mc_byte_to_symbol((unsigned char)b), sym);
        tok->byte_id[b] = mc_strmap_get(&tok->vocab, sym, n);
    }
    return MC_OK;
}

typedef struct pattern_key {
    unsigned char first;
    int64_t len;
    int32_t index;
} pattern_key;

static int cmp_pattern(const void *pa, const void *pb) {
    const pattern_key *a = pa, *b = pb;
    if (a->first != b->first) {
        return a->first < b->first ? -1 : 1;
    }
    if (a->len != b->len) { // longest first: the first hit at a position is then the longest
        return a->len > b->len ? -1 : 1;
    }
    return a->index < b->index ? -1 : 1;
}

static mc_status build_set(loader *ld, bool normalized, mc_added_set *set, mc_error *err) {
    mc_tokenizer *tok = ld->tok;
    pattern_key *keys = malloc(((size_t)tok->n_added + 1) * sizeof(*keys));
    set->order = malloc(((size_t)tok->n_added + 1) * sizeof(int32_t));
    if (keys == NULL || set->order == NULL) {
        free(keys);
        return mc_fail(err, MC_ERR_NOMEM, "%s: out of memory for added tokens", ld->path);
    }
    int64_t n = 0;
    for (int64_t i = 0; i < tok->n_added; i++) {
        const mc_added_token *t = &tok->added[i];
        if (t->normalized == normalized && t->pattern_len > 0) {
            keys[n++] =
                (pattern_key){ .first = (unsigned char)t->pattern[0], .len = t->pattern_len, .index = (int32_t)i };
        }
    }
    qsort(keys, (size_t)n, sizeof(*keys), cmp_pattern);
    int64_t k = 0;
    for (int b = 0; b < 256; b++) {
        set->first[b] = k;
        while (k < n && keys[k].first == b) {
            set->order[k] = keys[k].index;
            k++;
        }
    }
    set->first[256] = k;
    free(keys);
    return MC_OK;
}

static mc_status load_all(loader *ld, const cJSON *root, mc_error *err) {
    mc_status st = load_model(ld, root, err);
    if (st == MC_OK) {
        st = load_pipeline(ld, root, err);
    }
    if (st == MC_OK) {
        st = load_added_tokens(ld, root, err);
    }
    if (st == MC_OK) {
        st = build_id_tables(ld, err);
    }
    if (st == MC_OK) {
        st = build_bytes(ld, err);
    }
    if (st == MC_OK) {
        st = build_set(ld, false, &ld->tok->raw_set, err);
    }
    if (st == MC_OK) {
        st = build_set(ld, true, &ld->tok->norm_set, err);
    }
    return st;
}

mc_status mc_tokenizer_load(const char *path, mc_tokenizer **out, mc_error *err) {
    if (out == NULL) {
        return mc_fail(err, MC_ERR_INVALID, "tokenizer load: out is NULL");
    }
    *out = NULL;
    if (path == NULL) {
        return mc_fail(err, MC_ERR_INVALID, "tokenizer load: path is NULL");
    }
    char *text = NULL;
    size_t len = 0;
    cJSON *root = NULL;
    loader ld = { .path = path, .tok = calloc(1, sizeof(mc_tokenizer)) };
    mc_status st = ld.tok == NULL ? mc_fail(err, MC_ERR_NOMEM, "%s: out of memory", path) : MC_OK;
    if (st == MC_OK) {
        st = mc_file_read(path, MC_TOKENIZER_MAX_BYTES, &text, &len, err);
    }
    if (st == MC_OK) {
        st = parse_document(path, text, len, &root, err);
    }
    if (st == MC_OK) {
        st = load_all(&ld, root, err);
    }
    if (st == MC_OK) {
        mc_sha256(text, len, ld.tok->sha256);
    }
    free(ld.id_str);
    free(ld.added_content);
    cJSON_Delete(root);
    free(text);
    if (st != MC_OK) {
        mc_tokenizer_free(ld.tok);
        return st;
    }
    *out = ld.tok;
    return MC_OK;
}

void mc_tokenizer_free(mc_tokenizer *tok) {
    if (tok == NULL) {
        return;
    }
    mc_strmap_free(&tok->vocab);
    mc_pairmap_free(&tok->merges);
    for (int64_t i = 0; i < tok->n_added; i++) {
        free(tok->added[i].pattern);
    }
    free(tok->added);
    free(tok->raw_set.order);
    free(tok->norm_set.order);
    free(tok->bytes);
    free(tok->bytes_off);
    free(tok->flags);
    free(tok);
}

int64_t mc_tokenizer_n_vocab(const mc_tokenizer *tok) {
    return tok == NULL ? 0 : tok->n_vocab;
}

const char *mc_tokenizer_token_bytes(const mc_tokenizer *tok, int32_t id, size_t *len) {
    if (len != NULL) {
        *len = 0;
    }
    if (tok == NULL || id < 0 || id >= tok->n_vocab || !(tok->flags[id] & MC_TOK_HAS_STRING)) {
        return NULL;
    }
    if (len != NULL) {
        *len = (size_t)(tok->bytes_off[id + 1] - tok->bytes_off[id]);
    }
    return tok->bytes + tok->bytes_off[id];
}

void mc_tokenizer_sha256(const mc_tokenizer *tok, uint8_t out[32]) {
    memset(out, 0, 32);
    if (tok != NULL) {
        memcpy(out, tok->sha256, 32);
    }
}

bool mc_tokenizer_is_special(const mc_tokenizer *tok, int32_t id) {
    return tok != NULL && id >= 0 && id < tok->n_vocab && (tok->flags[id] & MC_TOK_SPECIAL);
}
