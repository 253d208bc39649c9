// Open-addressing hash maps (linear probing, power-of-two tables, load <= 1/2) for the vocab and the merge ranks.
// No deletion: both tables are built once at load and only read afterwards.
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer.h"

static uint64_t hash_bytes(const char *s, int64_t len) {
    uint64_t h = 1469598103934665603ull; // FNV-1a, then a final mix so the low bits used for the index spread
    for (int64_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return h;
}

static uint64_t hash_u64(uint64_t x) {
    x ^= x >> 30; // splitmix64 finalizer
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

static bool strmap_grow(mc_strmap *m) {
    int64_t cap = m->cap == 0 ? 64 : m->cap * 2;
    mc_strmap_slot *slots = malloc((size_t)cap * sizeof(*slots));
    if (slots == NULL) {
        return false;
    }
    for (int64_t i = 0; i < cap; i++) {
        slots[i].off = -1;
    }
    for (int64_t i = 0; i < m->cap; i++) {
        if (m->slots[i].off < 0) {
            continue;
        }
        int64_t j = (int64_t)(m->slots[i].hash & (uint64_t)(cap - 1));
        while (slots[j].off >= 0) {
            j = (j + 1) & (cap - 1);
        }
        slots[j] = m->slots[i];
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    return true;
}

static int64_t strmap_find(const mc_strmap *m, const char *key, int64_t len, uint64_t h) {
    if (m->cap == 0) {
        return -1;
    }
    int64_t j = (int64_t)(h & (uint64_t)(m->cap - 1));
    while (m->slots[j].off >= 0) {
        const mc_strmap_slot *s = &m->slots[j];
        if (s->hash == h && s->len == len && memcmp(m->keys + s->off, key, (size_t)len) == 0) {
            return j;
        }
        j = (j + 1) & (m->cap - 1);
    }
    return -1;
}

bool mc_strmap_put(mc_strmap *m, const char *key, int64_t len, int32_t value, bool *existed) {
    uint64_t h = hash_bytes(key, len);
    *existed = strmap_find(m, key, len, h) >= 0;
    if (*existed) {
        return true;
    }
    if (len > INT32_MAX) {
        return false;
    }
    if ((m->count + 1) * 2 > m->cap && !strmap_grow(m)) {
        return false;
    }
    if (m->keys_len + len > m->keys_cap) {
        int64_t cap = m->keys_cap == 0 ? 4096 : m->keys_cap;
        while (cap < m->keys_len + len) {
            cap *= 2;
        }
        char *keys = realloc(m->keys, (size_t)cap);
        if (keys == NULL) {
            return false;
        }
        m->keys = keys;
        m->keys_cap = cap;
    }
    if (len > 0) {
        memcpy(m->keys + m->keys_len, key, (size_t)len);
    }
    int64_t j = (int64_t)(h & (uint64_t)(m->cap - 1));
    while (m->slots[j].off >= 0) {
        j = (j + 1) & (m->cap - 1);
    }
    m->slots[j] = (mc_strmap_slot){ .hash = h, .off = m->keys_len, .len = (int32_t)len, .value = value };
    m->keys_len += len;
    m->count++;
    return true;
}

int32_t mc_strmap_get(const mc_strmap *m, const char *key, int64_t len) {
    int64_t j = strmap_find(m, key, len, hash_bytes(key, len));
    return j < 0 ? -1 : m->slots[j].value;
}

void mc_strmap_free(mc_strmap *m) {
    free(m->keys);
    free(m->slots);
    *m = (mc_strmap){ 0 };
}

static bool pairmap_grow(mc_pairmap *m) {
    int64_t cap = m->cap == 0 ? 64 : m->cap * 2;
    mc_pairmap_slot *slots = malloc((size_t)cap * sizeof(*slots));
    if (slots == NULL) {
        return false;
    }
    for (int64_t i = 0; i < cap; i++) {
        slots[i].key = UINT64_MAX;
    }
    for (int64_t i = 0; i < m->cap; i++) {
        if (m->slots[i].key == UINT64_MAX) {
            continue;
        }
        int64_t j = (int64_t)(hash_u64(m->slots[i].key) & (uint64_t)(cap - 1));
        while (slots[j].key != UINT64_MAX) {
            j = (j + 1) & (cap - 1);
        }
        slots[j] = m->slots[i];
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    return true;
}

static uint64_t pair_key(int32_t left, int32_t right) {
    return (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
}

bool mc_pairmap_put(mc_pairmap *m, int32_t left, int32_t right, int32_t rank, int32_t new_id) {
    if ((m->count + 1) * 2 > m->cap && !pairmap_grow(m)) {
        return false;
    }
    uint64_t key = pair_key(left, right);
    int64_t j = (int64_t)(hash_u64(key) & (uint64_t)(m->cap - 1));
    while (m->slots[j].key != UINT64_MAX && m->slots[j].key != key) {
        j = (j + 1) & (m->cap - 1);
    }
    if (m->slots[j].key == UINT64_MAX) {
        m->count++;
    }
    m->slots[j] = (mc_pairmap_slot){ .key = key, .rank = rank, .new_id = new_id };
    return true;
}

bool mc_pairmap_get(const mc_pairmap *m, int32_t left, int32_t right, int32_t *rank, int32_t *new_id) {
    if (m->cap == 0) {
        return false;
    }
    uint64_t key = pair_key(left, right);
    int64_t j = (int64_t)(hash_u64(key) & (uint64_t)(m->cap - 1));
    while (m->slots[j].key != UINT64_MAX) {
        if (m->slots[j].key == key) {
            *rank = m->slots[j].rank;
            *new_id = m->slots[j].new_id;
            return true;
        }
        j = (j + 1) & (m->cap - 1);
    }
    return false;
}

void mc_pairmap_free(mc_pairmap *m) {
    free(m->slots);
    *m = (mc_pairmap){ 0 };
}
