// NFC as tokenizers computes it: utf8proc's NFC, held to the Unicode 9.0 tables of the normalization crate inside
// tokenizers 0.23.2 (unicode-normalization-alignments 0.1.12, UNICODE_VERSION 9.0.0).
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer/tokenizer.h"

// Code points assigned after Unicode 9.0 that newer tables (utf8proc's) give a nonzero combining class, a
// canonical decomposition, or a place in one. For tokenizers they are unassigned: starters NFC leaves alone,
// which end reordering and composition. Generated from Perl's Unicode::UCD (Unicode 14.0) Age and charinfo.
// Plus U+11A7 (the jamo at TBase, not a trailing consonant): utf8proc 2.6 wrongly composes LV + U+11A7 and drops
// it; tokenizers keeps it, as the standard's Hangul composition says.
static const struct {
    int32_t lo, hi;
} post9[] = {
    { 0x7FD, 0x7FD },     { 0x898, 0x89F },     { 0x8CA, 0x8D3 },     { 0x9FE, 0x9FE },     { 0xC3C, 0xC3C },
    { 0xD3B, 0xD3C },     { 0xEBA, 0xEBA },     { 0x11A7, 0x11A7 },   { 0x1715, 0x1715 },   { 0x1ABF, 0x1ACE },
    { 0x1DF6, 0x1DFA },   { 0xA82C, 0xA82C },   { 0x10D24, 0x10D27 }, { 0x10EAB, 0x10EAC }, { 0x10F46, 0x10F50 },
    { 0x10F82, 0x10F85 }, { 0x11070, 0x11070 }, { 0x1133B, 0x1133B }, { 0x1145E, 0x1145E }, { 0x11839, 0x1183A },
    { 0x11930, 0x11930 }, { 0x11935, 0x11935 }, { 0x11938, 0x11938 }, { 0x1193D, 0x1193E }, { 0x11943, 0x11943 },
    { 0x119E0, 0x119E0 }, { 0x11A34, 0x11A34 }, { 0x11A47, 0x11A47 }, { 0x11A99, 0x11A99 }, { 0x11D42, 0x11D42 },
    { 0x11D44, 0x11D45 }, { 0x11D97, 0x11D97 }, { 0x16FF0, 0x16FF1 }, { 0x1E130, 0x1E136 }, { 0x1E2AE, 0x1E2AE },
    { 0x1E2EC, 0x1E2EF },
};

static bool is_post9(int32_t cp) {
    int64_t lo = 0, hi = (int64_t)(sizeof(post9) / sizeof(post9[0])) - 1;
    if (cp < post9[0].lo) {
        return false;
    }
    while (lo <= hi) {
        int64_t mid = (lo + hi) / 2;
        if (cp < post9[mid].lo) {
            hi = mid - 1;
        } else if (cp > post9[mid].hi) {
            lo = mid + 1;
        } else {
            return true;
        }
    }
    return false;
}

typedef struct buf {
    char *v;
    int64_t n, cap;
} buf;

static bool buf_append(buf *b, const void *data, int64_t len) {
    if (b->n + len + 1 > b->cap) {
        int64_t cap = b->cap == 0 ? 64 : b->cap;
        while (cap < b->n + len + 1) {
            cap *= 2;
        }
        char *v = realloc(b->v, (size_t)cap);
        if (v == NULL) {
            return false;
        }
        b->v = v;
        b->cap = cap;
    }
    memcpy(b->v + b->n, data, (size_t)len);
    b->n += len;
    b->v[b->n] = '\0';
    return true;
}

static bool append_nfc(buf *b, const unsigned char *s, int64_t len) {
    if (len == 0) {
        return true;
    }
    utf8proc_uint8_t *nfc = NULL;
    utf8proc_ssize_t n = utf8proc_map(s, (utf8proc_ssize_t)len, &nfc, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    bool ok = n >= 0 && buf_append(b, nfc, n);
    free(nfc);
    return ok;
}

bool mc_tokenizer_nfc(const unsigned char *s, int64_t len, char **out, int64_t *out_len) {
    buf b = { 0 };
    bool ok = buf_append(&b, "", 0);
    int64_t start = 0, pos = 0;
    while (ok && pos < len) {
        int64_t at = pos;
        int32_t cp = mc_utf8_next(s, &pos);
        if (cp >= 0x300 && is_post9(cp)) { // a segment boundary: normalize what precedes, copy the character
            ok = append_nfc(&b, s + start, at - start) && buf_append(&b, s + at, pos - at);
            start = pos;
        }
    }
    ok = ok && append_nfc(&b, s + start, len - start);
    if (!ok) {
        free(b.v);
        return false;
    }
    *out = b.v;
    *out_len = b.n;
    return true;
}
