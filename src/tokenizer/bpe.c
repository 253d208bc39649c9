// The BPE merge loop of one pre-tokenized piece (spec §10.4), as tokenizers' Word::merge_all does it: a linked
// list of symbols and a min-heap of candidate merges keyed by (rank, position), stale entries skipped when popped.
// O(n log n) per piece, so a 100k-character run costs no more than its length suggests.
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer.h"

typedef struct symbol {
    int32_t id;
    int32_t prev, next; // -1 at the ends
    bool removed;       // merged into its left neighbour
} symbol;

typedef struct merge {
    int32_t rank;
    int32_t pos; // the left symbol of the pair
    int32_t new_id;
} merge;

static bool merge_less(merge a, merge b) {
    return a.rank != b.rank ? a.rank < b.rank : a.pos < b.pos;
}

typedef struct heap {
    merge *v;
    int64_t n, cap;
} heap;

static bool heap_push(heap *h, merge m) {
    if (h->n == h->cap) {
        int64_t cap = h->cap == 0 ? 64 : h->cap * 2;
        merge *v = realloc(h->v, (size_t)cap * sizeof(*v));
        if (v == NULL) {
            return false;
        }
        h->v = v;
        h->cap = cap;
    }
    int64_t i = h->n++;
    while (i > 0 && merge_less(m, h->v[(i - 1) / 2])) {
        h->v[i] = h->v[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h->v[i] = m;
    return true;
}

static merge heap_pop(heap *h) {
    merge top = h->v[0];
    merge last = h->v[--h->n];
    int64_t i = 0;
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= h->n) {
            break;
        }
        if (c + 1 < h->n && merge_less(h->v[c + 1], h->v[c])) {
            c++;
        }
        if (!merge_less(h->v[c], last)) {
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

static bool push_pair(const mc_tokenizer *tok, heap *h, const symbol *sym, int32_t pos) {
    int32_t rank, new_id;
    if (sym[pos].next < 0 || !mc_pairmap_get(&tok->merges, sym[pos].id, sym[sym[pos].next].id, &rank, &new_id)) {
        return true;
    }
    return heap_push(h, (merge){ .rank = rank, .pos = pos, .new_id = new_id });
}

// Initial symbols: one per byte, its byte-level symbol's id. A symbol missing from the vocab becomes unk_token
// (consecutive ones fused when fuse_unk) or, without unk_token, is dropped, as BPE::merge_word does.
static int64_t initial_symbols(const mc_tokenizer *tok, const unsigned char *piece, int64_t len, symbol *sym) {
    int64_t n = 0;
    bool unk_pending = false;
    for (int64_t i = 0; i <= len; i++) {
        int32_t id = i < len ? tok->byte_id[piece[i]] : -1;
        bool flush_unk = unk_pending && (i == len || id >= 0 || !tok->fuse_unk);
        if (flush_unk) {
            sym[n++].id = tok->unk_id;
            unk_pending = false;
        }
        if (i == len) {
            break;
        }
        if (id >= 0) {
            sym[n++].id = id;
        } else if (tok->unk_id >= 0) {
            unk_pending = true;
        }
    }
    for (int64_t i = 0; i < n; i++) {
        sym[i].prev = (int32_t)i - 1;
        sym[i].next = i + 1 < n ? (int32_t)i + 1 : -1;
        sym[i].removed = false;
    }
    return n;
}

static bool merge_all(const mc_tokenizer *tok, heap *h, symbol *sym, int64_t n) {
    h->n = 0;
    for (int32_t i = 0; i + 1 < n; i++) {
        if (!push_pair(tok, h, sym, i)) {
            return false;
        }
    }
    while (h->n > 0) {
        merge top = heap_pop(h);
        symbol *left = &sym[top.pos];
        if (left->removed || left->next < 0) {
            continue;
        }
        int32_t right = left->next;
        int32_t rank, new_id;
        // Stale entry: the pair at this position changed since it was pushed (tokenizers compares new_id only).
        if (!mc_pairmap_get(&tok->merges, left->id, sym[right].id, &rank, &new_id) || new_id != top.new_id) {
            continue;
        }
        left->id = top.new_id;
        left->next = sym[right].next;
        sym[right].removed = true;
        if (left->next >= 0) {
            sym[left->next].prev = top.pos;
        }
        if (left->prev >= 0 && !push_pair(tok, h, sym, left->prev)) {
            return false;
        }
        if (!push_pair(tok, h, sym, top.pos)) {
            return false;
        }
    }
    return true;
}

bool mc_bpe_piece(const mc_tokenizer *tok, mc_bpe_scratch *scratch, const unsigned char *piece, int64_t len,
                  mc_ids *out) {
    if (len <= 0) {
        return true;
    }
    if (len > INT32_MAX - 1) { // positions are int32 like tokenizers' ids; a 2 GiB piece is not text we run
        return false;
    }
    if (tok->ignore_merges) { // a whole piece found in the vocab is one token, no merges tried
        char *mapped = malloc((size_t)len * 2);
        if (mapped == NULL) {
            return false;
        }
        int64_t m = 0;
        for (int64_t i = 0; i < len; i++) {
            m += mc_utf8_put(mc_byte_to_symbol(piece[i]), mapped + m);
        }
        int32_t id = mc_strmap_get(&tok->vocab, mapped, m);
        free(mapped);
        if (id >= 0) {
            return mc_ids_push(out, id);
        }
    }
    if (scratch->cap_symbols < len) {
        symbol *s = realloc(scratch->symbols, (size_t)len * sizeof(symbol));
        if (s == NULL) {
            return false;
        }
        scratch->symbols = s;
        scratch->cap_symbols = len;
    }
    symbol *sym = scratch->symbols;
    int64_t n = initial_symbols(tok, piece, len, sym);
    heap h = { .v = scratch->heap, .n = 0, .cap = scratch->cap_heap };
    bool ok = merge_all(tok, &h, sym, n);
    scratch->heap = h.v; // the heap may have grown: keep it for the next piece
    scratch->cap_heap = h.cap;
    for (int64_t i = 0; ok && i < n; i++) {
        if (!sym[i].removed) {
            ok = mc_ids_push(out, sym[i].id);
        }
    }
    return ok;
}

void mc_bpe_scratch_free(mc_bpe_scratch *scratch) {
    free(scratch->symbols);
    free(scratch->heap);
    *scratch = (mc_bpe_scratch){ 0 };
}
