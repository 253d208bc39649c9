// UTF-8 for the tokenizer: strict validation, code point iteration, and the lossy streaming conversion that
// decode shares (invalid input becomes U+FFFD per maximal invalid subsequence, as Rust's String::from_utf8_lossy).
#include <string.h>

#include "tokenizer/tokenizer.h"

// Length of the sequence a lead byte starts (0: not a lead byte), and the allowed range of its second byte:
// the ranges exclude overlongs (E0, F0), surrogates (ED) and code points past U+10FFFF (F4), as the Unicode
// table of well-formed byte sequences does.
static int seq_len(unsigned char c, unsigned char *lo, unsigned char *hi) {
    *lo = 0x80;
    *hi = 0xBF;
    if (c < 0x80) {
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF) {
        return 2;
    }
    if (c >= 0xE0 && c <= 0xEF) {
        *lo = c == 0xE0 ? 0xA0 : 0x80;
        *hi = c == 0xED ? 0x9F : 0xBF;
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        *lo = c == 0xF0 ? 0x90 : 0x80;
        *hi = c == 0xF4 ? 0x8F : 0xBF;
        return 4;
    }
    return 0;
}

int64_t mc_utf8_check(const unsigned char *s, int64_t len) {
    int64_t i = 0;
    while (i < len) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        unsigned char lo, hi;
        int n = seq_len(s[i], &lo, &hi);
        if (n == 0 || i + n > len || s[i + 1] < lo || s[i + 1] > hi) {
            return i;
        }
        for (int k = 2; k < n; k++) {
            if ((s[i + k] & 0xC0) != 0x80) {
                return i;
            }
        }
        i += n;
    }
    return len;
}

int32_t mc_utf8_next(const unsigned char *s, int64_t *pos) {
    int64_t i = *pos;
    unsigned char c = s[i];
    if (c < 0x80) {
        *pos = i + 1;
        return c;
    }
    if (c < 0xE0) {
        *pos = i + 2;
        return (int32_t)(c & 0x1F) << 6 | (s[i + 1] & 0x3F);
    }
    if (c < 0xF0) {
        *pos = i + 3;
        return (int32_t)(c & 0x0F) << 12 | (int32_t)(s[i + 1] & 0x3F) << 6 | (s[i + 2] & 0x3F);
    }
    *pos = i + 4;
    return (int32_t)(c & 0x07) << 18 | (int32_t)(s[i + 1] & 0x3F) << 12 | (int32_t)(s[i + 2] & 0x3F) << 6 |
           (s[i + 3] & 0x3F);
}

int mc_utf8_put(int32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static size_t put_replacement(char *out) {
    memcpy(out, "\xEF\xBF\xBD", 3);
    return 3;
}

// One byte through the state machine. The pending bytes are always a valid, incomplete prefix; a byte that
// cannot continue it ends that maximal invalid subsequence (one U+FFFD) and is then read afresh.
static size_t stream_byte(mc_utf8_stream *s, unsigned char c, char *out) {
    size_t o = 0;
    if (s->n_pending > 0) {
        unsigned char lo, hi;
        int n = seq_len(s->pending[0], &lo, &hi);
        if (s->n_pending > 1) {
            lo = 0x80;
            hi = 0xBF;
        }
        if (c >= lo && c <= hi) {
            s->pending[s->n_pending++] = c;
            if (s->n_pending == n) {
                memcpy(out, s->pending, (size_t)n);
                s->n_pending = 0;
                return (size_t)n;
            }
            return 0;
        }
        o += put_replacement(out);
        s->n_pending = 0;
    }
    unsigned char lo, hi;
    int n = seq_len(c, &lo, &hi);
    if (n == 1) {
        out[o++] = (char)c;
    } else if (n == 0) {
        o += put_replacement(out + o);
    } else {
        s->pending[0] = c;
        s->n_pending = 1;
    }
    return o;
}

size_t mc_utf8_stream_feed(mc_utf8_stream *s, const char *bytes, size_t len, char *out, size_t out_cap) {
    // Worst case per input byte is one U+FFFD plus the byte itself, bounded by 3 * len + 16 overall.
    if (s == NULL || out == NULL || (bytes == NULL && len > 0) || len > (SIZE_MAX - 16) / 3 ||
        out_cap < len * 3 + 16 || s->n_pending < 0 || s->n_pending > 3) {
        return 0;
    }
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        o += stream_byte(s, (unsigned char)bytes[i], out + o);
    }
    return o;
}

size_t mc_utf8_stream_flush(mc_utf8_stream *s, char *out, size_t out_cap) {
    if (s->n_pending <= 0 || s->n_pending > 3) {
        s->n_pending = 0;
        return 0;
    }
    if (out_cap < 3) {
        return 0; // contract broken: keep the pending bytes for a call with room
    }
    s->n_pending = 0; // a truncated sequence at the end is one maximal invalid subsequence
    return put_replacement(out);
}
