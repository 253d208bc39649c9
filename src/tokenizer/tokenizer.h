// Internal layout of mc_tokenizer (byte-level BPE from tokenizer.json, spec §10) and the helpers its files share:
// hash maps (hashmap.c), the regex pre-tokenizer (pretokenize.c), the merge loop (bpe.c), UTF-8 (utf8.c).
#pragma once

#include "mambac.h"

// String -> id map with owned key bytes; keys may contain any byte, including NUL.
typedef struct mc_strmap_slot {
    uint64_t hash;
    int64_t off; // key bytes at keys + off; -1 marks an empty slot
    int32_t len;
    int32_t value;
} mc_strmap_slot;

typedef struct mc_strmap {
    char *keys;
    int64_t keys_len, keys_cap;
    mc_strmap_slot *slots;
    int64_t cap, count; // cap is a power of two (or 0)
} mc_strmap;

// Inserts key -> value unless key is present; *existed says which (the old value is kept). False: out of memory.
bool mc_strmap_put(mc_strmap *m, const char *key, int64_t len, int32_t value, bool *existed);
// The value of key, or -1 when absent.
int32_t mc_strmap_get(const mc_strmap *m, const char *key, int64_t len);
void mc_strmap_free(mc_strmap *m);

// (left id, right id) -> (rank, merged id): the BPE merge table.
typedef struct mc_pairmap_slot {
    uint64_t key; // left << 32 | right; UINT64_MAX marks an empty slot (ids are < 2^31)
    int32_t rank;
    int32_t new_id;
} mc_pairmap_slot;

typedef struct mc_pairmap {
    mc_pairmap_slot *slots;
    int64_t cap, count;
} mc_pairmap;

// Inserts or overwrites (a later duplicate merge line wins, as in tokenizers' HashMap collect). False: out of memory.
bool mc_pairmap_put(mc_pairmap *m, int32_t left, int32_t right, int32_t rank, int32_t new_id);
bool mc_pairmap_get(const mc_pairmap *m, int32_t left, int32_t right, int32_t *rank, int32_t *new_id);
void mc_pairmap_free(mc_pairmap *m);

// An entry of added_tokens, with the id tokenizers assigns to it.
typedef struct mc_added_token {
    int32_t id;
    bool special, normalized, lstrip, rstrip, single_word;
    char *pattern; // owned: the content, or its normalized form for normalized tokens (what is matched)
    int64_t pattern_len;
} mc_added_token;

// The patterns one matching pass uses, grouped by first byte, longest first within a group, so the first hit at
// a position is the leftmost-longest match (aho-corasick MatchKind::LeftmostLongest in tokenizers).
typedef struct mc_added_set {
    int32_t *order;     // owned: indices into mc_tokenizer.added
    int64_t first[257]; // patterns starting with byte b are order[first[b] .. first[b + 1])
} mc_added_set;

struct mc_tokenizer {
    mc_strmap vocab;      // byte-level symbol string -> id (model.vocab)
    mc_pairmap merges;    // model.merges
    int32_t byte_id[256]; // id of the one-symbol string bytes_to_unicode(b), -1 when absent from the vocab

    mc_added_token *added; // owned, n_added entries in file order
    int64_t n_added;
    mc_added_set raw_set;  // normalized == false: matched on the raw text
    mc_added_set norm_set; // normalized == true: matched on each normalized gap

    int64_t n_vocab;      // max id + 1
    char *bytes;          // owned: the byte-level decoding of every token, concatenated
    int64_t *bytes_off;   // [n_vocab + 1]: token id's bytes are bytes[bytes_off[id] .. bytes_off[id + 1])
    unsigned char *flags; // [n_vocab]: MC_TOK_HAS_STRING | MC_TOK_SPECIAL

    bool nfc;              // normalizer NFC (else none)
    bool add_prefix_space; // ByteLevel pre-tokenizer flags
    bool use_regex;
    bool ignore_merges; // BPE model flags
    bool fuse_unk;
    int32_t unk_id; // -1: no unk_token
    uint8_t sha256[32]; // of the tokenizer.json bytes (token files record it, tokens_file.c)
};

enum { MC_TOK_HAS_STRING = 1, MC_TOK_SPECIAL = 2 };

// SHA-256 of data[0..len) (sha256.c).
void mc_sha256(const void *data, size_t len, uint8_t out[32]);

// The code point GPT-2's bytes_to_unicode maps byte b to (spec §10.3).
int32_t mc_byte_to_symbol(unsigned char b);

// UTF-8 (utf8.c). Offset of the first byte that is not part of valid UTF-8 (Rust str rules: no overlongs,
// surrogates or code points past U+10FFFF), or len when all of s is valid.
int64_t mc_utf8_check(const unsigned char *s, int64_t len);
// Decodes the code point at s[*pos] of valid UTF-8 and advances *pos past it.
int32_t mc_utf8_next(const unsigned char *s, int64_t *pos);
// Writes cp as UTF-8 to out (room for 4); returns the byte count.
int mc_utf8_put(int32_t cp, char *out);

// NFC of valid UTF-8 s as tokenizers computes it (normalize.c): *out owned (free()), NUL-terminated. False: out
// of memory.
bool mc_tokenizer_nfc(const unsigned char *s, int64_t len, char **out, int64_t *out_len);

// Pre-tokenizer (pretokenize.c): end of the piece of s[0..len) that starts at pos, following the GPT-2 regex of
// spec §10.2 4a. s must be valid UTF-8 and pos < len.
int64_t mc_pretok_next(const unsigned char *s, int64_t len, int64_t pos);
// Unicode White_Space (regex \s in both oniguruma and Rust regex).
bool mc_char_is_space(int32_t cp);
// Rust regex \w (Alphabetic, M, Nd, Pc, Join_Control), used by single_word added tokens.
bool mc_char_is_word(int32_t cp);

// Growable id list for encoding.
typedef struct mc_ids {
    int32_t *v;
    int64_t n, cap;
} mc_ids;

bool mc_ids_push(mc_ids *ids, int32_t id);

// Reusable buffers of the merge loop (bpe.c), owned by one encode call.
typedef struct mc_bpe_scratch {
    void *symbols;
    void *heap;
    int64_t cap_symbols, cap_heap;
} mc_bpe_scratch;

// Runs BPE (spec §10.4) over one pre-tokenized piece given as raw bytes (each byte is one byte-level symbol) and
// appends the ids. False: out of memory.
bool mc_bpe_piece(const mc_tokenizer *tok, mc_bpe_scratch *scratch, const unsigned char *piece, int64_t len,
                  mc_ids *out);
void mc_bpe_scratch_free(mc_bpe_scratch *scratch);
