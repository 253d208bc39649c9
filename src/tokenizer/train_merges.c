// Byte-level BPE training, part 2: learning the merges from the counted words, step for step as tokenizers'
// BpeTrainer::do_train (tokenizers 0.23: models/bpe/trainer.rs, word.rs). Counting words is train.c's job.
//
// - Pairs: count(a, b) = Σ over words of (occurrences of adjacent a b) · word count. A max-priority queue holds
//   (count, pair, positions); the top is the highest count, ties going to the smaller pair (a, b) compared as ids,
//   left id first. Entries are stale-checked lazily: a popped entry whose count is not the pair's current count is
//   pushed back with the current one.
// - Each step: stop when the vocabulary has vocab_size tokens; pop; stop when the count is < 1 or < min_frequency;
//   the new token's string is a + b (an existing token with that string keeps its id and the vocabulary does not
//   grow, but the merge is still recorded); merge the pair, left to right without overlap, in the words of the
//   entry's positions; every pair that lost or gained an occurrence next to a merged spot changes its count, and
//   every pair that gained one is pushed as a new entry whose positions are just the words where it gained.
//   The merged pair's own count is not decreased (trainer.rs leaves it), and positions are per entry, so a pair
//   pushed twice is merged twice (once per entry): the file then lists it once, at its later rank, as tokenizers'
//   serializer (a HashMap keyed by pair) does.
// - Entries that tie on count and pair (two entries of one pair) pop in tokenizers' heap order, which depends on a
//   random hash iteration order; here the older entry pops first. No corpus tried so far had such a tie.
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "tokenizer/train.h"

// ---------------------------------------------------------------------------------------------------------------
// Pair counts: (left << 32 | right) -> count, open addressing. Entries are never removed (trainer.rs' AHashMap
// keeps them too).

typedef struct pair_counts {
    uint64_t *keys; // UINT64_MAX: empty
    int64_t *vals;
    int64_t cap, count;
} pair_counts;

static uint64_t mix64(uint64_t x) {
    x ^= x >> 30; // splitmix64 finalizer
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

static bool pair_counts_grow(pair_counts *m) {
    int64_t cap = m->cap == 0 ? 1 << 16 : m->cap * 2;
    uint64_t *keys = malloc((size_t)cap * sizeof(*keys));
    int64_t *vals = malloc((size_t)cap * sizeof(*vals));
    if (keys == NULL || vals == NULL) {
        free(keys);
        free(vals);
        return false;
    }
    memset(keys, 0xFF, (size_t)cap * sizeof(*keys));
    for (int64_t i = 0; i < m->cap; i++) {
        if (m->keys[i] == UINT64_MAX) {
            continue;
        }
        int64_t j = (int64_t)(mix64(m->keys[i]) & (uint64_t)(cap - 1));
        while (keys[j] != UINT64_MAX) {
            j = (j + 1) & (cap - 1);
        }
        keys[j] = m->keys[i];
        vals[j] = m->vals[i];
    }
    free(m->keys);
    free(m->vals);
    m->keys = keys;
    m->vals = vals;
    m->cap = cap;
    return true;
}

// The slot of key, inserted with count 0 when absent; -1: out of memory.
static int64_t pair_counts_slot(pair_counts *m, uint64_t key) {
    if ((m->count + 1) * 2 > m->cap && !pair_counts_grow(m)) {
        return -1;
    }
    int64_t j = (int64_t)(mix64(key) & (uint64_t)(m->cap - 1));
    while (m->keys[j] != key) {
        if (m->keys[j] == UINT64_MAX) {
            m->keys[j] = key;
            m->vals[j] = 0;
            m->count++;
            return j;
        }
        j = (j + 1) & (m->cap - 1);
    }
    return j;
}

// ---------------------------------------------------------------------------------------------------------------
// The priority queue of trainer.rs (a max-heap of Merge): count, then the smaller pair; see the file header.

typedef struct merge_entry {
    int64_t count;
    uint64_t pair;
    int64_t seq;  // push order, for entries of one pair with one count
    int32_t *pos; // owned: distinct word indices to merge in
    int64_t n_pos;
} merge_entry;

typedef struct merge_heap {
    merge_entry *v;
    int64_t n, cap, next_seq;
} merge_heap;

static bool entry_before(const merge_entry *a, const merge_entry *b) {
    if (a->count != b->count) {
        return a->count > b->count;
    }
    if (a->pair != b->pair) {
        return a->pair < b->pair; // left id, then right id: (u32, u32) tuple order
    }
    return a->seq < b->seq;
}

static bool heap_push(merge_heap *h, merge_entry e) {
    if (h->n == h->cap) {
        int64_t cap = h->cap == 0 ? 1024 : h->cap * 2;
        merge_entry *v = realloc(h->v, (size_t)cap * sizeof(*v));
        if (v == NULL) {
            return false;
        }
        h->v = v;
        h->cap = cap;
    }
    int64_t i = h->n++;
    while (i > 0) {
        int64_t parent = (i - 1) / 2;
        if (!entry_before(&e, &h->v[parent])) {
            break;
        }
        h->v[i] = h->v[parent];
        i = parent;
    }
    h->v[i] = e;
    return true;
}

static merge_entry heap_pop(merge_heap *h) {
    merge_entry top = h->v[0];
    merge_entry last = h->v[--h->n];
    int64_t i = 0;
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= h->n) {
            break;
        }
        if (c + 1 < h->n && entry_before(&h->v[c + 1], &h->v[c])) {
            c++;
        }
        if (!entry_before(&h->v[c], &last)) {
            break;
        }
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n > 0) {
        h->v[i] = last;
    }
    return top;
}

static void heap_free(merge_heap *h) {
    for (int64_t i = 0; i < h->n; i++) {
        free(h->v[i].pos);
    }
    free(h->v);
}

// ---------------------------------------------------------------------------------------------------------------
// Training state: the words as symbol ids, pair counts, the queue, and the changes of one merge step.

typedef struct change {
    uint64_t pair;
    int32_t word;
    int32_t delta; // -1 or +1 occurrence
} change;

typedef struct changes {
    change *v;
    int64_t n, cap;
} changes;

typedef struct train_state {
    int32_t *sym;   // every word's symbols; word w at sym[w_off[w] .. w_off[w] + w_len[w])
    int64_t *w_off; // [n_words]
    int32_t *w_len; // [n_words]
    pair_counts counts;
    merge_heap heap;
    changes ch, plus; // a step's changes; the +1 ones sorted by (pair, word)
    char *scratch;    // the new token's string
    int64_t scratch_cap;
} train_state;

static void train_state_free(train_state *s) {
    free(s->sym);
    free(s->w_off);
    free(s->w_len);
    free(s->counts.keys);
    free(s->counts.vals);
    heap_free(&s->heap);
    free(s->ch.v);
    free(s->plus.v);
    free(s->scratch);
}

static bool changes_push(changes *c, uint64_t pair, int32_t word, int32_t delta) {
    if (c->n == c->cap) {
        int64_t cap = c->cap == 0 ? 4096 : c->cap * 2;
        change *v = realloc(c->v, (size_t)cap * sizeof(*v));
        if (v == NULL) {
            return false;
        }
        c->v = v;
        c->cap = cap;
    }
    c->v[c->n++] = (change){ .pair = pair, .word = word, .delta = delta };
    return true;
}

static uint64_t pair_key(int32_t a, int32_t b) {
    return (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
}

static int cmp_change(const void *pa, const void *pb) {
    const change *a = pa, *b = pb;
    if (a->pair != b->pair) {
        return a->pair < b->pair ? -1 : 1;
    }
    return (a->word > b->word) - (a->word < b->word);
}

// Words as symbol ids (trainer.rs tokenize_words): each byte of a piece is its byte symbol's token.
static bool build_words(const mc_bpe_trainer *t, train_state *s) {
    int64_t total = 0;
    for (int64_t i = 0; i < t->words.cap; i++) {
        total += t->words.slots[i].off >= 0 ? t->words.slots[i].len : 0;
    }
    s->sym = malloc((size_t)(total + 1) * sizeof(*s->sym));
    s->w_off = malloc((size_t)(t->n_words + 1) * sizeof(*s->w_off));
    s->w_len = malloc((size_t)(t->n_words + 1) * sizeof(*s->w_len));
    if (s->sym == NULL || s->w_off == NULL || s->w_len == NULL) {
        return false;
    }
    int64_t o = 0;
    for (int64_t i = 0; i < t->words.cap; i++) {
        const mc_strmap_slot *slot = &t->words.slots[i];
        if (slot->off < 0) {
            continue;
        }
        const unsigned char *bytes = (const unsigned char *)t->words.keys + slot->off;
        s->w_off[slot->value] = o;
        s->w_len[slot->value] = slot->len;
        for (int32_t k = 0; k < slot->len; k++) {
            s->sym[o++] = t->byte_id[bytes[k]];
        }
    }
    return true;
}

// Pushes one entry per pair of the sorted +1 changes in c, with the distinct words as positions and the pair's
// current count (pairs whose count is not positive are left out, as trainer.rs does).
static bool push_groups(train_state *s, const changes *c) {
    for (int64_t i = 0; i < c->n;) {
        int64_t j = i;
        while (j < c->n && c->v[j].pair == c->v[i].pair) {
            j++;
        }
        int64_t slot = pair_counts_slot(&s->counts, c->v[i].pair);
        if (slot < 0) {
            return false;
        }
        int64_t count = s->counts.vals[slot];
        if (count > 0) {
            merge_entry e = { .count = count, .pair = c->v[i].pair, .seq = s->heap.next_seq++ };
            e.pos = malloc((size_t)(j - i) * sizeof(int32_t));
            if (e.pos == NULL) {
                return false;
            }
            for (int64_t k = i; k < j; k++) {
                if (e.n_pos == 0 || e.pos[e.n_pos - 1] != c->v[k].word) {
                    e.pos[e.n_pos++] = c->v[k].word;
                }
            }
            if (!heap_push(&s->heap, e)) {
                free(e.pos);
                return false;
            }
        }
        i = j;
    }
    return true;
}

// trainer.rs count_pairs plus the first pushes: every adjacent pair, weighted by its word's count.
static bool count_pairs(const mc_bpe_trainer *t, train_state *s) {
    s->plus.n = 0;
    for (int64_t w = 0; w < t->n_words; w++) {
        const int32_t *sym = s->sym + s->w_off[w];
        for (int32_t k = 0; k + 1 < s->w_len[w]; k++) {
            uint64_t key = pair_key(sym[k], sym[k + 1]);
            int64_t slot = pair_counts_slot(&s->counts, key);
            if (slot < 0 || !changes_push(&s->plus, key, (int32_t)w, 1)) {
                return false;
            }
            s->counts.vals[slot] += t->counts[w];
        }
    }
    if (s->plus.n > 1) { // qsort's pointer must not be NULL, even for no elements
        qsort(s->plus.v, (size_t)s->plus.n, sizeof(change), cmp_change);
    }
    return push_groups(s, &s->plus);
}

// word.rs Word::merge: replaces every non-overlapping a b, left to right, by id, recording the pairs lost and
// gained around each merged spot (the pair a b itself is not recorded). False: out of memory.
static bool merge_word(train_state *s, int32_t w, int32_t a, int32_t b, int32_t id) {
    int32_t *sym = s->sym + s->w_off[w];
    int32_t n = s->w_len[w], o = 0;
    for (int32_t r = 0; r < n;) {
        if (sym[r] != a || r + 1 >= n || sym[r + 1] != b) {
            sym[o++] = sym[r++];
            continue;
        }
        bool ok = true;
        if (o > 0) {
            ok = changes_push(&s->ch, pair_key(sym[o - 1], a), w, -1) &&
                 changes_push(&s->ch, pair_key(sym[o - 1], id), w, 1);
        }
        if (ok && r + 2 < n) {
            ok = changes_push(&s->ch, pair_key(b, sym[r + 2]), w, -1) &&
                 changes_push(&s->ch, pair_key(id, sym[r + 2]), w, 1);
        }
        if (!ok) {
            return false;
        }
        sym[o++] = id;
        r += 2;
    }
    s->w_len[w] = o;
    return true;
}

// The token a + b: its existing id, or a new one. -1: out of memory.
static int32_t merged_token(mc_bpe_trainer *t, train_state *s, int32_t a, int32_t b) {
    int64_t la = t->tok_off[a + 1] - t->tok_off[a], lb = t->tok_off[b + 1] - t->tok_off[b];
    if (la + lb > s->scratch_cap) {
        char *p = realloc(s->scratch, (size_t)(la + lb) * 2);
        if (p == NULL) {
            return -1;
        }
        s->scratch = p;
        s->scratch_cap = (la + lb) * 2;
    }
    memcpy(s->scratch, t->tok_str + t->tok_off[a], (size_t)la);
    memcpy(s->scratch + la, t->tok_str + t->tok_off[b], (size_t)lb);
    int32_t id = mc_strmap_get(&t->vocab, s->scratch, la + lb);
    if (id >= 0) {
        return id;
    }
    id = (int32_t)t->n_tokens;
    return mc_bpe_vocab_add(t, s->scratch, la + lb) ? id : -1;
}

static bool record_merge(mc_bpe_trainer *t, int32_t a, int32_t b, int32_t id) {
    if (t->n_merges == t->cap_merges) {
        int64_t cap = t->cap_merges == 0 ? 1024 : t->cap_merges * 2;
        int32_t *m = realloc(t->merges, (size_t)cap * 3 * sizeof(*m));
        if (m == NULL) {
            return false;
        }
        t->merges = m;
        t->cap_merges = cap;
    }
    int32_t *m = t->merges + 3 * t->n_merges++;
    m[0] = a;
    m[1] = b;
    m[2] = id;
    return true;
}

// One merge of the popped entry top: the token, the words, then the counts and the new entries. False: out of
// memory.
static bool merge_step(mc_bpe_trainer *t, train_state *s, const merge_entry *top) {
    int32_t a = (int32_t)(top->pair >> 32), b = (int32_t)(uint32_t)top->pair;
    int32_t id = merged_token(t, s, a, b);
    if (id < 0 || !record_merge(t, a, b, id)) {
        return false;
    }
    s->ch.n = 0;
    for (int64_t k = 0; k < top->n_pos; k++) {
        if (!merge_word(s, top->pos[k], a, b, id)) {
            return false;
        }
    }
    s->plus.n = 0;
    for (int64_t k = 0; k < s->ch.n; k++) { // every count first: the new entries take the counts after the step
        const change *c = &s->ch.v[k];
        int64_t slot = pair_counts_slot(&s->counts, c->pair);
        if (slot < 0 || (c->delta > 0 && !changes_push(&s->plus, c->pair, c->word, 1))) {
            return false;
        }
        s->counts.vals[slot] += c->delta * t->counts[c->word];
    }
    if (s->plus.n > 1) { // qsort's pointer must not be NULL, even for no elements
        qsort(s->plus.v, (size_t)s->plus.n, sizeof(change), cmp_change);
    }
    return push_groups(s, &s->plus);
}

// trainer.rs do_train's merge loop. False: out of memory.
static bool merge_loop(mc_bpe_trainer *t, train_state *s) {
    while (t->n_tokens < t->vocab_size && s->heap.n > 0) {
        merge_entry top = heap_pop(&s->heap);
        int64_t slot = pair_counts_slot(&s->counts, top.pair);
        if (slot < 0) {
            free(top.pos);
            return false;
        }
        if (top.count != s->counts.vals[slot]) { // stale: back in with the current count
            top.count = s->counts.vals[slot];
            if (!heap_push(&s->heap, top)) {
                free(top.pos);
                return false;
            }
            continue;
        }
        if (top.count < 1 || t->min_frequency > top.count) {
            free(top.pos);
            break;
        }
        bool ok = merge_step(t, s, &top);
        free(top.pos);
        if (!ok) {
            return false;
        }
    }
    return true;
}

mc_status mc_bpe_trainer_train(mc_bpe_trainer *t, mc_error *err) {
    if (t == NULL) {
        return mc_fail(err, MC_ERR_INVALID, "tokenizer trainer is NULL");
    }
    if (t->trained) {
        return mc_fail(err, MC_ERR_INVALID, "the tokenizer is already trained");
    }
    if (t->n_words == 0) {
        return mc_fail(err, MC_ERR_INVALID, "the corpus is empty: no text to learn merges from (%lld file%s read)",
                       (long long)t->stats.n_files, t->stats.n_files == 1 ? "" : "s");
    }
    train_state s = { 0 };
    bool ok = build_words(t, &s) && count_pairs(t, &s) && merge_loop(t, &s);
    train_state_free(&s);
    int64_t *saved = NULL;
    ok = ok && mc_bpe_saved_merges(t, &saved, &t->stats.n_merges);
    free(saved);
    if (!ok) {
        return mc_fail(err, MC_ERR_NOMEM, "out of memory training the tokenizer (%lld distinct words)",
                       (long long)t->n_words);
    }
    t->trained = true;
    t->stats.vocab_size = t->n_tokens;
    return MC_OK;
}
