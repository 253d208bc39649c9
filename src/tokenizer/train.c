// Byte-level BPE training, part 1: the trainer object, its first tokens, and counting words as Hugging Face
// tokenizers' Tokenizer::train_from_files feeds BpeTrainer (tokenizers 0.23), with GPT-NeoX's pipeline: NFC, then the
// ByteLevel regex split of pretokenize.c. Learning the merges is train_merges.c's job, writing JSON train_json.c's.
//
// As tokenizers does it:
// - Input: every file is read line by line, each line with its '\n' (and any '\r') one sequence; each sequence is
//   normalized (NFC) and pre-tokenized alone, and every piece counts as one occurrence of a word. Text that is not
//   UTF-8 is refused (read_line fails on it). Added tokens are not split out: a fresh Tokenizer has none.
// - Vocabulary: special tokens first (ids 0.., in the order given, duplicates once), then the alphabet, i.e. the 256
//   byte symbols (ByteLevel.alphabet() given as initial_alphabet) sorted by code point, then one token per merge.
#include "tokenizer/train.h"

#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/file.h"

#define MC_BPE_MAX_VOCAB ((int64_t)1 << 24) // tokenizer.c's id bound

// ---------------------------------------------------------------------------------------------------------------
// Options, creation, the vocabulary's first tokens

void mc_bpe_train_opts_init(mc_bpe_train_opts *opts) {
    static const char *const default_special[] = { "<|endoftext|>" };
    *opts = (mc_bpe_train_opts){
        .vocab_size = 8192, .min_frequency = 2, .special_tokens = default_special, .n_special = 1
    };
}

bool mc_bpe_vocab_add(mc_bpe_trainer *t, const char *s, int64_t len) {
    bool existed = false;
    if (!mc_strmap_put(&t->vocab, s, len, (int32_t)t->n_tokens, &existed)) {
        return false;
    }
    if (t->n_tokens + 2 > t->cap_tokens) {
        int64_t cap = t->cap_tokens == 0 ? 1024 : t->cap_tokens * 2;
        int64_t *off = realloc(t->tok_off, (size_t)cap * sizeof(*off));
        if (off == NULL) {
            return false;
        }
        t->tok_off = off;
        t->cap_tokens = cap;
    }
    if (t->tok_str_len + len > t->tok_str_cap) {
        int64_t cap = t->tok_str_cap == 0 ? 16384 : t->tok_str_cap;
        while (cap < t->tok_str_len + len) {
            cap *= 2;
        }
        char *str = realloc(t->tok_str, (size_t)cap);
        if (str == NULL) {
            return false;
        }
        t->tok_str = str;
        t->tok_str_cap = cap;
    }
    memcpy(t->tok_str + t->tok_str_len, s, (size_t)len);
    t->tok_off[t->n_tokens] = t->tok_str_len;
    t->tok_str_len += len;
    t->n_tokens++;
    t->tok_off[t->n_tokens] = t->tok_str_len;
    return true;
}

static int cmp_symbol(const void *pa, const void *pb) {
    int32_t a = mc_byte_to_symbol(*(const unsigned char *)pa), b = mc_byte_to_symbol(*(const unsigned char *)pb);
    return (a > b) - (a < b);
}

// Special tokens, then the byte alphabet sorted by code point (trainer.rs add_special_tokens, compute_alphabet).
static mc_status add_first_tokens(mc_bpe_trainer *t, const mc_bpe_train_opts *opts, mc_error *err) {
    char name[64];
    for (int64_t i = 0; i < opts->n_special; i++) {
        const char *s = opts->special_tokens[i];
        if (s == NULL || s[0] == '\0') {
            return mc_fail(err, MC_ERR_INVALID, "special token %lld is empty", (long long)i);
        }
        int64_t len = (int64_t)strlen(s);
        if (mc_utf8_check((const unsigned char *)s, len) < len) {
            mc_escape(name, sizeof(name), s, (size_t)len);
            return mc_fail(err, MC_ERR_INVALID, "special token \"%s\" is not valid UTF-8", name);
        }
        if (mc_strmap_get(&t->vocab, s, len) < 0 && !mc_bpe_vocab_add(t, s, len)) {
            return mc_fail(err, MC_ERR_NOMEM, "out of memory for the special tokens");
        }
    }
    t->n_special = t->n_tokens;
    unsigned char order[256];
    for (int b = 0; b < 256; b++) {
        order[b] = (unsigned char)b;
    }
    qsort(order, 256, 1, cmp_symbol);
    for (int k = 0; k < 256; k++) {
        char sym[4];
        int n = mc_utf8_put(mc_byte_to_symbol(order[k]), sym);
        int32_t id = mc_strmap_get(&t->vocab, sym, n); // a special token may already be this symbol
        if (id < 0) {
            id = (int32_t)t->n_tokens;
            if (!mc_bpe_vocab_add(t, sym, n)) {
                return mc_fail(err, MC_ERR_NOMEM, "out of memory for the alphabet");
            }
        }
        t->byte_id[order[k]] = id;
    }
    if (opts->vocab_size < t->n_tokens) {
        return mc_fail(err, MC_ERR_INVALID,
                       "vocab size %lld is smaller than the %lld tokens every vocabulary holds (%lld special + 256 "
                       "byte symbols)",
                       (long long)opts->vocab_size, (long long)t->n_tokens, (long long)t->n_special);
    }
    return MC_OK;
}

mc_status mc_bpe_trainer_new(const mc_bpe_train_opts *opts, mc_bpe_trainer **out, mc_error *err) {
    if (out == NULL) {
        return mc_fail(err, MC_ERR_INVALID, "tokenizer trainer: out is NULL");
    }
    *out = NULL;
    if (opts == NULL || (opts->n_special > 0 && opts->special_tokens == NULL) || opts->n_special < 0) {
        return mc_fail(err, MC_ERR_INVALID, "tokenizer trainer: options or special tokens are NULL");
    }
    if (opts->vocab_size < 1 || opts->vocab_size > MC_BPE_MAX_VOCAB) {
        return mc_fail(err, MC_ERR_INVALID, "vocab size %lld is out of range, expected 1..%lld",
                       (long long)opts->vocab_size, (long long)MC_BPE_MAX_VOCAB);
    }
    if (opts->min_frequency < 0) {
        return mc_fail(err, MC_ERR_INVALID, "min frequency %lld is negative", (long long)opts->min_frequency);
    }
    mc_bpe_trainer *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "tokenizer trainer: out of memory");
    }
    t->vocab_size = opts->vocab_size;
    t->min_frequency = opts->min_frequency;
    mc_status st = add_first_tokens(t, opts, err);
    if (st != MC_OK) {
        mc_bpe_trainer_free(t);
        return st;
    }
    *out = t;
    return MC_OK;
}

void mc_bpe_trainer_free(mc_bpe_trainer *t) {
    if (t == NULL) {
        return;
    }
    mc_strmap_free(&t->words);
    free(t->counts);
    mc_strmap_free(&t->vocab);
    free(t->tok_str);
    free(t->tok_off);
    free(t->merges);
    free(t);
}

void mc_bpe_trainer_stats(const mc_bpe_trainer *t, mc_bpe_train_stats *stats) {
    *stats = t == NULL ? (mc_bpe_train_stats){ 0 } : t->stats;
}

// ---------------------------------------------------------------------------------------------------------------
// Counting words (Trainer::feed through Tokenizer::train_from_files)

static bool count_word(mc_bpe_trainer *t, const unsigned char *s, int64_t len) {
    int32_t id = mc_strmap_get(&t->words, (const char *)s, len);
    if (id >= 0) {
        t->counts[id]++;
        return true;
    }
    if (t->n_words == INT32_MAX) {
        return false;
    }
    if (t->n_words == t->cap_words) {
        int64_t cap = t->cap_words == 0 ? 4096 : t->cap_words * 2;
        int64_t *counts = realloc(t->counts, (size_t)cap * sizeof(*counts));
        if (counts == NULL) {
            return false;
        }
        t->counts = counts;
        t->cap_words = cap;
    }
    bool existed = false;
    if (!mc_strmap_put(&t->words, (const char *)s, len, (int32_t)t->n_words, &existed)) {
        return false;
    }
    t->counts[t->n_words++] = 1;
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

// One sequence (a line with its ending): NFC, the ByteLevel split, one count per piece. False: out of memory.
static bool count_sequence(mc_bpe_trainer *t, const unsigned char *s, int64_t len) {
    char *nfc = NULL;
    if (!is_ascii(s, len)) { // ASCII is its own NFC
        int64_t n = 0;
        if (!mc_tokenizer_nfc(s, len, &nfc, &n)) {
            return false;
        }
        s = (const unsigned char *)nfc;
        len = n;
    }
    bool ok = true;
    for (int64_t pos = 0; ok && pos < len;) {
        int64_t end = mc_pretok_next(s, len, pos);
        ok = count_word(t, s + pos, end - pos);
        t->stats.n_words++;
        pos = end;
    }
    free(nfc);
    return ok;
}

mc_status mc_bpe_trainer_feed(mc_bpe_trainer *t, const char *text, size_t len, const char *name, mc_error *err) {
    if (t == NULL || (text == NULL && len > 0)) {
        return mc_fail(err, MC_ERR_INVALID, "tokenizer trainer: trainer or text is NULL");
    }
    name = name != NULL ? name : "text";
    if (t->trained) {
        return mc_fail(err, MC_ERR_INVALID, "%s: the tokenizer is already trained; feed every text before training",
                       name);
    }
    const unsigned char *s = (const unsigned char *)text;
    int64_t n = (int64_t)len;
    int64_t bad = mc_utf8_check(s, n);
    if (bad < n) { // tokenizers' read_line refuses the file too ("stream did not contain valid UTF-8")
        return mc_fail(err, MC_ERR_INVALID, "%s: invalid UTF-8 at byte %lld (the trainer reads UTF-8 text only)", name,
                       (long long)bad);
    }
    for (int64_t pos = 0; pos < n;) {
        const unsigned char *nl = memchr(s + pos, '\n', (size_t)(n - pos));
        int64_t end = nl != NULL ? (int64_t)(nl - s) + 1 : n;
        if (!count_sequence(t, s + pos, end - pos)) {
            return mc_fail(err, MC_ERR_NOMEM, "%s: out of memory counting words", name);
        }
        t->stats.n_sequences++;
        pos = end;
    }
    t->stats.n_files++;
    t->stats.n_bytes += n;
    t->stats.n_unique_words = t->n_words;
    return MC_OK;
}

mc_status mc_bpe_trainer_feed_file(mc_bpe_trainer *t, const char *path, mc_error *err) {
    if (path == NULL) {
        return mc_fail(err, MC_ERR_INVALID, "tokenizer trainer: path is NULL");
    }
    mc_mapping map = { 0 };
    mc_status st = mc_file_map(path, &map, err);
    if (st == MC_OK) {
        st = mc_bpe_trainer_feed(t, (const char *)map.data, map.len, path, err);
    }
    mc_file_unmap(&map);
    return st;
}
