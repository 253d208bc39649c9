// The ByteLevel pre-tokenizer split, written out by hand: the GPT-2 regex
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// with oniguruma's semantics (spec §10.2 4a). Character classes come from utf8proc's general categories, except
// where the reference's later Unicode tables class a code point otherwise (classes_ref.h, made from tokenizers).
#include <utf8proc.h>

#include "tokenizer/tokenizer.h"

enum { CLS_OTHER, CLS_LETTER, CLS_NUMBER, CLS_SPACE };

#include "tokenizer/classes_ref.h"

// The reference's class of cp when classes_ref.h lists it, else -1.
static int class_override(int32_t cp) {
    if (cp < class_ref[0].lo) { // the common case: below every listed range
        return -1;
    }
    int64_t lo = 0, hi = (int64_t)(sizeof(class_ref) / sizeof(class_ref[0])) - 1;
    while (lo <= hi) {
        const int64_t mid = (lo + hi) / 2;
        if (cp < class_ref[mid].lo) {
            hi = mid - 1;
        } else if (cp > class_ref[mid].hi) {
            lo = mid + 1;
        } else {
            return class_ref[mid].cls;
        }
    }
    return -1;
}

bool mc_char_is_space(int32_t cp) {
    // Unicode White_Space; oniguruma's \s (0009-000D, 0085, Zs, Zl, Zp) is the same set.
    if (cp < 0x80) {
        return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20;
    }
    return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
           cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

static int char_class(int32_t cp) {
    if (cp < 0x80) { // the common case, without a table lookup in utf8proc
        if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) {
            return CLS_LETTER;
        }
        if (cp >= '0' && cp <= '9') {
            return CLS_NUMBER;
        }
        return mc_char_is_space(cp) ? CLS_SPACE : CLS_OTHER;
    }
    if (mc_char_is_space(cp)) {
        return CLS_SPACE;
    }
    const int ref = class_override(cp);
    if (ref >= 0) {
        return ref;
    }
    switch (utf8proc_category(cp)) {
        case UTF8PROC_CATEGORY_LU:
        case UTF8PROC_CATEGORY_LL:
        case UTF8PROC_CATEGORY_LT:
        case UTF8PROC_CATEGORY_LM:
        case UTF8PROC_CATEGORY_LO:
            return CLS_LETTER;
        case UTF8PROC_CATEGORY_ND:
        case UTF8PROC_CATEGORY_NL:
        case UTF8PROC_CATEGORY_NO:
            return CLS_NUMBER;
        default:
            return CLS_OTHER;
    }
}

bool mc_char_is_word(int32_t cp) {
    if (cp == 0x200C || cp == 0x200D) { // Join_Control
        return true;
    }
    if (class_override(cp) > 0) { // letters and digits newer than utf8proc's tables
        return true;
    }
    // Other_Alphabetic outside the marks: circled and squared Latin letters (category So).
    if ((cp >= 0x24B6 && cp <= 0x24E9) || (cp >= 0x1F130 && cp <= 0x1F149) || (cp >= 0x1F150 && cp <= 0x1F169) ||
        (cp >= 0x1F170 && cp <= 0x1F189)) {
        return true;
    }
    switch (utf8proc_category(cp)) {
        case UTF8PROC_CATEGORY_LU:
        case UTF8PROC_CATEGORY_LL:
        case UTF8PROC_CATEGORY_LT:
        case UTF8PROC_CATEGORY_LM:
        case UTF8PROC_CATEGORY_LO:
        case UTF8PROC_CATEGORY_NL:
        case UTF8PROC_CATEGORY_MN:
        case UTF8PROC_CATEGORY_MC:
        case UTF8PROC_CATEGORY_ME:
        case UTF8PROC_CATEGORY_ND:
        case UTF8PROC_CATEGORY_PC:
            return true;
        default:
            return false;
    }
}

static int64_t contraction_end(const unsigned char *s, int64_t len, int64_t pos) {
    // 's 't 're 've 'm 'll 'd, case-sensitive, ASCII apostrophe only.
    if (s[pos] != '\'' || pos + 1 >= len) {
        return -1;
    }
    unsigned char a = s[pos + 1];
    if (a == 's' || a == 't' || a == 'm' || a == 'd') {
        return pos + 2;
    }
    if (pos + 2 < len) {
        unsigned char b = s[pos + 2];
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) {
            return pos + 3;
        }
    }
    return -1;
}

// End of the run of characters of class cls starting at pos.
static int64_t run_end(const unsigned char *s, int64_t len, int64_t pos, int cls) {
    while (pos < len) {
        int64_t next = pos;
        if (char_class(mc_utf8_next(s, &next)) != cls) {
            break;
        }
        pos = next;
    }
    return pos;
}

int64_t mc_pretok_next(const unsigned char *s, int64_t len, int64_t pos) {
    int64_t end = contraction_end(s, len, pos);
    if (end >= 0) {
        return end;
    }
    int64_t next = pos;
    int cls = char_class(mc_utf8_next(s, &next));
    if (cls != CLS_SPACE) { // \p{L}+, \p{N}+ or [^\s\p{L}\p{N}]+
        return run_end(s, len, next, cls);
    }
    if (s[pos] == ' ' && next < len) { // ' ?' then one of the three runs
        int64_t after = next;
        int cls2 = char_class(mc_utf8_next(s, &after));
        if (cls2 != CLS_SPACE) {
            return run_end(s, len, after, cls2);
        }
    }
    // \s+(?!\S): the whole whitespace run at the end of the text or before more whitespace; before a non-space
    // it backtracks one character (that one then joins the next piece when it is U+0020). A single whitespace
    // before a non-space falls through to \s+, which takes just it.
    int64_t last = pos; // start of the run's last character
    end = next;
    while (end < len) {
        int64_t after = end;
        if (!mc_char_is_space(mc_utf8_next(s, &after))) {
            break;
        }
        last = end;
        end = after;
    }
    if (end == len || last == pos) {
        return end;
    }
    return last;
}
