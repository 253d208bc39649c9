// Ids -> text as tokenizers' decode with the ByteLevel decoder (spec §10.5): token bytes concatenated, then lossy
// UTF-8 through the same stream that streaming callers use, so both give identical text.
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "tokenizer/tokenizer.h"

static bool kept(const mc_tokenizer *tok, int32_t id, bool skip_special) {
    if (id >= tok->n_vocab || !(tok->flags[id] & MC_TOK_HAS_STRING)) { // no string: skipped silently
        return false;
    }
    return !(skip_special && (tok->flags[id] & MC_TOK_SPECIAL));
}

mc_status mc_tokenizer_decode(const mc_tokenizer *tok, const int32_t *ids, int64_t n_ids, bool skip_special,
                              char **text, size_t *len, mc_error *err) {
    if (text == NULL) {
        return mc_fail(err, MC_ERR_INVALID, "decode: text is NULL");
    }
    *text = NULL;
    if (len != NULL) {
        *len = 0;
    }
    if (tok == NULL || n_ids < 0 || (ids == NULL && n_ids > 0)) {
        return mc_fail(err, MC_ERR_INVALID, "decode: tokenizer or ids is NULL, or n_ids %lld < 0", (long long)n_ids);
    }
    int64_t total = 0;
    for (int64_t i = 0; i < n_ids; i++) {
        if (ids[i] < 0) {
            return mc_fail(err, MC_ERR_INVALID, "decode: token id %d at position %lld is negative", ids[i],
                           (long long)i);
        }
        if (kept(tok, ids[i], skip_special)) {
            total += tok->bytes_off[ids[i] + 1] - tok->bytes_off[ids[i]];
        }
    }
    char *raw = malloc((size_t)total + 1);
    char *out = NULL;
    if (raw != NULL && total <= (int64_t)(SIZE_MAX / 4) - 64) {
        out = malloc((size_t)total * 3 + 16 + 4); // the stream's bound, plus the flush and the NUL
    }
    if (out == NULL) {
        free(raw);
        return mc_fail(err, MC_ERR_NOMEM, "decode: out of memory for %lld bytes", (long long)total);
    }
    int64_t o = 0;
    for (int64_t i = 0; i < n_ids; i++) {
        if (kept(tok, ids[i], skip_special)) {
            int64_t n = tok->bytes_off[ids[i] + 1] - tok->bytes_off[ids[i]];
            memcpy(raw + o, tok->bytes + tok->bytes_off[ids[i]], (size_t)n);
            o += n;
        }
    }
    mc_utf8_stream stream = { 0 };
    size_t n = mc_utf8_stream_feed(&stream, raw, (size_t)total, out, (size_t)total * 3 + 16);
    n += mc_utf8_stream_flush(&stream, out + n, 4);
    out[n] = '\0';
    free(raw);
    *text = out;
    if (len != NULL) {
        *len = n;
    }
    return MC_OK;
}
