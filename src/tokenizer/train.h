// Internal layout of mc_bpe_trainer, shared by train.c (counting words), train_merges.c (learning merges) and
// train_json.c (writing the trained tokenizer.json).
#pragma once

#include "tokenizer/tokenizer.h"

struct mc_bpe_trainer {
    int64_t vocab_size, min_frequency;

    // Word counts (trainer.rs' `words`): the raw bytes of each pre-tokenized piece -> index into counts.
    mc_strmap words;
    int64_t *counts;
    int64_t n_words, cap_words;
    mc_bpe_train_stats stats;

    // The vocabulary: special tokens (ids 0 .. n_special - 1), the 256 byte symbols by code point, then merged
    // tokens in the order made. Strings are byte-level UTF-8 (spec §10.3), the form tokenizer.json stores.
    int64_t n_special;
    mc_strmap vocab; // token string -> id
    char *tok_str;   // owned: every token's string, concatenated
    int64_t tok_str_len, tok_str_cap;
    int64_t *tok_off; // [n_tokens + 1]: token id's string is tok_str[tok_off[id] .. tok_off[id + 1])
    int64_t n_tokens, cap_tokens;
    int32_t byte_id[256]; // id of the one-symbol token of byte b

    int32_t *merges; // [n_merges][3]: left id, right id, merged id, in the order made (a pair may come twice)
    int64_t n_merges, cap_merges;
    bool trained;
};

// Appends token string s (byte-level UTF-8, not yet in the vocabulary) as the next id (train.c). False: out of memory.
bool mc_bpe_vocab_add(mc_bpe_trainer *t, const char *s, int64_t len);

// The merges tokenizer.json lists, as indices into t->merges in file order: each pair once, at the rank of its last
// merge (tokenizers keys merges by pair, so a later merge of a pair replaces the earlier). *idx owned (free()).
// False: out of memory.
bool mc_bpe_saved_merges(const mc_bpe_trainer *t, int64_t **idx, int64_t *n);
