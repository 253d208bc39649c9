// Text -> ids in tokenizers' order (spec §10.2): added tokens on the raw text, NFC of the gaps, normalized added
// tokens, the ByteLevel regex split, then BPE per piece (bpe.c). No special tokens are added around the result.
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "tokenizer/tokenizer.h"

bool mc_ids_push(mc_ids *ids, int32_t id) {
    if (ids->n == ids->cap) {
        int64_t cap = ids->cap == 0 ? 256 : ids->cap * 2;
        int32_t *v = realloc(ids->v, (size_t)cap * sizeof(*v));
        if (v == NULL) {
            return false;
        }
        ids->v = v;
        ids->cap = cap;
    }
    ids->v[ids->n++] = id;
    return true;
}

// A stretch of text: an added token (id >= 0) or a gap left for the next stage (id -1).
typedef struct span {
    int64_t start, end;
    int32_t id;
} span;

typedef struct spans {
    span *v;
    int64_t n, cap;
} spans;

static bool spans_push(spans *s, int64_t start, int64_t end, int32_t id) {
    if (s->n == s->cap) {
        int64_t cap = s->cap == 0 ? 16 : s->cap * 2;
        span *v = realloc(s->v, (size_t)cap * sizeof(*v));
        if (v == NULL) {
            return false;
        }
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = (span){ .start = start, .end = end, .id = id };
    return true;
}

typedef struct encoder {
    const mc_tokenizer *tok;
    mc_ids ids;
    mc_bpe_scratch bpe;
    char *prefixed; // " " + gap, for add_prefix_space
    int64_t prefixed_cap;
} encoder;

static int32_t last_char(const unsigned char *s, int64_t end) {
    int64_t i = end - 1;
    while (i > 0 && (s[i] & 0xC0) == 0x80) {
        i--;
    }
    return mc_utf8_next(s, &i);
}

// Length of the whitespace run starting at pos / start of the one ending at end (regexes ^\s* and \s*$).
static int64_t space_run_end(const unsigned char *s, int64_t len, int64_t pos) {
    while (pos < len) {
        int64_t next = pos;
        if (!mc_char_is_space(mc_utf8_next(s, &next))) {
            break;
        }
        pos = next;
    }
    return pos;
}

static int64_t space_run_start(const unsigned char *s, int64_t end) {
    while (end > 0) {
        int64_t i = end - 1;
        while (i > 0 && (s[i] & 0xC0) == 0x80) {
            i--;
        }
        int64_t j = i;
        if (!mc_char_is_space(mc_utf8_next(s, &j))) {
            break;
        }
        end = i;
    }
    return end;
}

// Longest pattern of set matching at s[pos..], as an index into tok->added, or -1.
static int64_t match_at(const mc_tokenizer *tok, const mc_added_set *set, const unsigned char *s, int64_t len,
                        int64_t pos) {
    for (int64_t k = set->first[s[pos]]; k < set->first[s[pos] + 1]; k++) {
        const mc_added_token *t = &tok->added[set->order[k]];
        if (t->pattern_len <= len - pos && memcmp(s + pos, t->pattern, (size_t)t->pattern_len) == 0) {
            return set->order[k];
        }
    }
    return -1;
}

// AddedVocabulary::find_matches: leftmost-longest non-overlapping matches, filtered by single_word and widened
// by lstrip / rstrip exactly as tokenizers does (including its quirks), with the gaps between them.
static bool find_matches(const mc_tokenizer *tok, const mc_added_set *set, const unsigned char *s, int64_t len,
                         spans *out) {
    out->n = 0;
    int64_t start_offset = 0, pos = 0;
    while (set->first[256] > 0 && pos < len) {
        int64_t k = match_at(tok, set, s, len, pos);
        if (k < 0) {
            pos++;
            continue;
        }
        const mc_added_token *t = &tok->added[k];
        int64_t start = pos, stop = pos + t->pattern_len;
        pos = stop; // the match iterator resumes after the match itself, whatever happens to it below
        if (t->single_word) {
            bool start_space = start == 0 || !mc_char_is_word(last_char(s, start));
            int64_t next = stop;
            bool stop_space = stop == len || !mc_char_is_word(mc_utf8_next(s, &next));
            if (!start_space || !stop_space) {
                continue;
            }
        }
        if (t->lstrip) {
            int64_t new_start = space_run_start(s, start);
            start = new_start > start_offset ? new_start : start_offset;
        }
        if (t->rstrip) {
            stop = space_run_end(s, len, stop);
        }
        if (start_offset < start && !spans_push(out, start_offset, start, -1)) {
            return false;
        }
        if (!spans_push(out, start, stop, t->id)) {
            return false;
        }
        start_offset = stop;
    }
    if (start_offset != len) {
        return spans_push(out, start_offset, len, -1);
    }
    return true;
}

// ByteLevel pre-tokenization and BPE of one non-empty gap.
static bool encode_words(encoder *enc, const unsigned char *s, int64_t len) {
    const mc_tokenizer *tok = enc->tok;
    if (tok->add_prefix_space && s[0] != ' ') { // per gap, as ByteLevel::pre_tokenize sees each split
        if (enc->prefixed_cap < len + 1) {
            char *p = realloc(enc->prefixed, (size_t)len + 1);
            if (p == NULL) {
                return false;
            }
            enc->prefixed = p;
            enc->prefixed_cap = len + 1;
        }
        enc->prefixed[0] = ' ';
        memcpy(enc->prefixed + 1, s, (size_t)len);
        s = (const unsigned char *)enc->prefixed;
        len++;
    }
    if (!tok->use_regex) {
        return mc_bpe_piece(tok, &enc->bpe, s, len, &enc->ids);
    }
    for (int64_t pos = 0; pos < len;) {
        int64_t end = mc_pretok_next(s, len, pos);
        if (!mc_bpe_piece(tok, &enc->bpe, s + pos, end - pos, &enc->ids)) {
            return false;
        }
        pos = end;
    }
    return true;
}

static bool is_ascii(const unsigned char *s, int64_t len) {
    for (int64_t i = 0; i < len; i++) {
        if (s[i] >= 0x80) {
            return false;
        }
    }
    return true;
}

// One gap between raw-text added tokens: normalize, then split out the normalized added tokens.
static bool encode_gap(encoder *enc, const unsigned char *s, int64_t len) {
    const mc_tokenizer *tok = enc->tok;
    char *nfc = NULL;
    if (tok->nfc && !is_ascii(s, len)) { // ASCII is its own NFC
        int64_t n = 0;
        if (!mc_tokenizer_nfc(s, len, &nfc, &n)) {
            return false;
        }
        s = (const unsigned char *)nfc;
        len = n;
    }
    spans parts = { 0 };
    bool ok = find_matches(tok, &tok->norm_set, s, len, &parts);
    for (int64_t i = 0; ok && i < parts.n; i++) {
        const span *p = &parts.v[i];
        if (p->id >= 0) {
            ok = mc_ids_push(&enc->ids, p->id);
        } else if (p->end > p->start) {
            ok = encode_words(enc, s + p->start, p->end - p->start);
        }
    }
    free(parts.v);
    free(nfc);
    return ok;
}

mc_status mc_tokenizer_encode(const mc_tokenizer *tok, const char *text, size_t len, int32_t **ids, int64_t *n_ids,
                              mc_error *err) {
    if (ids == NULL || n_ids == NULL) {
        return mc_fail(err, MC_ERR_INVALID, "encode: ids or n_ids is NULL");
    }
    *ids = NULL;
    *n_ids = 0;
    if (tok == NULL || (text == NULL && len > 0)) {
        return mc_fail(err, MC_ERR_INVALID, "encode: tokenizer or text is NULL");
    }
    if (len > (size_t)INT64_MAX) {
        return mc_fail(err, MC_ERR_INVALID, "text: %zu bytes, more than a text can hold", len);
    }
    const unsigned char *s = (const unsigned char *)text;
    int64_t bad = mc_utf8_check(s, (int64_t)len);
    if (bad < (int64_t)len) {
        return mc_fail(err, MC_ERR_INVALID, "text: invalid UTF-8 at byte %lld", (long long)bad);
    }
    encoder enc = { .tok = tok };
    spans parts = { 0 };
    bool ok = find_matches(tok, &tok->raw_set, s, (int64_t)len, &parts);
    for (int64_t i = 0; ok && i < parts.n; i++) {
        const span *p = &parts.v[i];
        if (p->id >= 0) {
            ok = mc_ids_push(&enc.ids, p->id);
        } else if (p->end > p->start) {
            ok = encode_gap(&enc, s + p->start, p->end - p->start);
        }
    }
    free(parts.v);
    free(enc.prefixed);
    mc_bpe_scratch_free(&enc.bpe);
    if (!ok) {
        free(enc.ids.v);
        return mc_fail(err, MC_ERR_NOMEM, "encode: out of memory for %zu bytes of text", len);
    }
    if (enc.ids.v == NULL) { // empty result: still hand back a pointer the caller may free
        enc.ids.v = malloc(sizeof(int32_t));
        if (enc.ids.v == NULL) {
            return mc_fail(err, MC_ERR_NOMEM, "encode: out of memory");
        }
    }
    *ids = enc.ids.v;
    *n_ids = enc.ids.n;
    return MC_OK;
}
