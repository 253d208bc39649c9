// Batch iterator: the per-epoch order (seeded Fisher–Yates), the rank's slice of each global batch, right padding.
// Examples come from data.c; the loss and the step are the training loop's.
#include "train/batch.h"

#include <stdlib.h>
#include <string.h>

#include "base/checked.h"
#include "base/error.h"
#include "base/rng.h"

#define LABEL_IGNORE      (-100)
#define EPOCH_SEED_STRIDE 0x9E3779B97F4A7C15ull // the golden-ratio increment: epochs get far-apart seeds

struct mc_batcher {
    const mc_dataset *ds;
    mc_batch_opts o;
    int64_t n_examples, global, steps; // N, G = batch_size * n_ranks, global batches per epoch
    int64_t *order;                    // [N] this epoch's permutation
    int64_t order_epoch;               // the epoch order belongs to (-1: none yet)
    mc_batch_pos pos;
    int32_t *ids, *labels; // [batch_size, T_max] batch buffers
    int64_t *len, *example;
};

void mc_batch_opts_init(mc_batch_opts *opts) {
    *opts = (mc_batch_opts){ .batch_size = 8,
                             .shuffle = true,
                             .seed = 42,
                             .drop_last = false,
                             .pad_id = 0,
                             .pad_to_multiple_of = 0,
                             .rank = 0,
                             .n_ranks = 1 };
}

static mc_status check_opts(const mc_batch_opts *o, int64_t n, mc_error *err) {
    if (o->batch_size < 1) {
        return mc_fail(err, MC_ERR_INVALID, "batch_size is %lld, must be >= 1", (long long)o->batch_size);
    }
    if (o->n_ranks < 1 || o->rank < 0 || o->rank >= o->n_ranks) {
        return mc_fail(err, MC_ERR_INVALID, "rank %lld of %lld: need 0 <= rank < n_ranks", (long long)o->rank,
                       (long long)o->n_ranks);
    }
    if (o->pad_id < 0) {
        return mc_fail(err, MC_ERR_INVALID, "pad_id is %d, must be a token id >= 0", o->pad_id);
    }
    int64_t g = 0;
    if (!mc_mul_i64(o->batch_size, o->n_ranks, &g)) {
        return mc_fail(err, MC_ERR_INVALID, "batch_size %lld x n_ranks %lld overflows", (long long)o->batch_size,
                       (long long)o->n_ranks);
    }
    if (o->drop_last && n < g) {
        return mc_fail(err, MC_ERR_INVALID, "drop_last: %lld examples make no global batch of %lld", (long long)n,
                       (long long)g);
    }
    return MC_OK;
}

mc_status mc_batcher_new(const mc_dataset *ds, const mc_batch_opts *opts, mc_batcher **out, mc_error *err) {
    *out = NULL;
    mc_batch_opts o;
    if (opts != NULL) {
        o = *opts;
    } else {
        mc_batch_opts_init(&o);
    }
    const int64_t n = mc_dataset_count(ds);
    mc_status st = check_opts(&o, n, err);
    if (st != MC_OK) {
        return st;
    }
    int64_t t_max = mc_dataset_max_len(ds), cells = 0;
    if (o.pad_to_multiple_of > 1) {
        t_max = (t_max + o.pad_to_multiple_of - 1) / o.pad_to_multiple_of * o.pad_to_multiple_of;
    }
    if (!mc_mul_i64(o.batch_size, t_max, &cells) || cells > INT64_MAX / 4) {
        return mc_fail(err, MC_ERR_INVALID, "batch_size %lld x %lld tokens overflows", (long long)o.batch_size,
                       (long long)t_max);
    }
    mc_batcher *it = calloc(1, sizeof(*it));
    if (it != NULL) {
        it->ds = ds;
        it->o = o;
        it->n_examples = n;
        it->global = o.batch_size * o.n_ranks;
        it->steps = o.drop_last ? n / it->global : (n + it->global - 1) / it->global;
        it->order_epoch = -1;
        it->order = malloc((size_t)n * sizeof(int64_t));
        it->ids = malloc((size_t)(cells > 0 ? cells : 1) * sizeof(int32_t));
        it->labels = malloc((size_t)(cells > 0 ? cells : 1) * sizeof(int32_t));
        it->len = malloc((size_t)o.batch_size * sizeof(int64_t));
        it->example = malloc((size_t)o.batch_size * sizeof(int64_t));
    }
    if (it == NULL || it->order == NULL || it->ids == NULL || it->labels == NULL || it->len == NULL ||
        it->example == NULL) {
        mc_batcher_free(it);
        return mc_fail(err, MC_ERR_NOMEM, "batcher: out of memory for %lld examples", (long long)n);
    }
    *out = it;
    return MC_OK;
}

void mc_batcher_free(mc_batcher *it) {
    if (it == NULL) {
        return;
    }
    free(it->order);
    free(it->ids);
    free(it->labels);
    free(it->len);
    free(it->example);
    free(it);
}

int64_t mc_batcher_steps_per_epoch(const mc_batcher *it) {
    return it->steps;
}

mc_batch_pos mc_batcher_pos(const mc_batcher *it) {
    return it->pos;
}

mc_status mc_batcher_seek(mc_batcher *it, mc_batch_pos pos, mc_error *err) {
    if (pos.epoch < 0 || pos.index < 0 || pos.index >= it->steps) {
        return mc_fail(err, MC_ERR_INVALID, "batch position epoch %lld index %lld: need epoch >= 0, 0 <= index < %lld",
                       (long long)pos.epoch, (long long)pos.index, (long long)it->steps);
    }
    it->pos = pos;
    return MC_OK;
}

// The permutation of epoch e (see batch.h): identity, then Fisher–Yates from the epoch's seed.
static void make_order(mc_batcher *it, int64_t epoch) {
    const int64_t n = it->n_examples;
    for (int64_t i = 0; i < n; i++) {
        it->order[i] = i;
    }
    if (it->o.shuffle) {
        mc_rng rng;
        mc_rng_seed(&rng, it->o.seed + (uint64_t)epoch * EPOCH_SEED_STRIDE);
        for (int64_t i = n - 1; i > 0; i--) {
            const int64_t j = (int64_t)mc_rng_below(&rng, (uint64_t)i + 1);
            const int64_t t = it->order[i];
            it->order[i] = it->order[j];
            it->order[j] = t;
        }
    }
    it->order_epoch = epoch;
}

// Loss positions of one example: labels[t] != -100 for t >= 1 (position t-1 predicts label t).
static int64_t targets_of(const int32_t *labels, int64_t len) {
    int64_t n = 0;
    for (int64_t t = 1; t < len; t++) {
        n += labels[t] != LABEL_IGNORE;
    }
    return n;
}

mc_status mc_batcher_next(mc_batcher *it, mc_batch *batch, mc_error *err) {
    (void)err; // nothing here allocates: the buffers were sized for the longest example at creation
    if (it->order_epoch != it->pos.epoch) {
        make_order(it, it->pos.epoch);
    }
    const mc_batch_opts *o = &it->o;
    const int64_t g0 = it->pos.index * it->global;
    const int64_t g1 = g0 + it->global < it->n_examples ? g0 + it->global : it->n_examples;
    int64_t r0 = g0 + o->rank * o->batch_size, r1 = r0 + o->batch_size;
    r0 = r0 < g1 ? r0 : g1;
    r1 = r1 < g1 ? r1 : g1;

    int64_t t_max = 0, n_global = 0;
    for (int64_t k = g0; k < g1; k++) {
        const int32_t *labels = NULL;
        int64_t len = 0;
        mc_dataset_example(it->ds, it->order[k], NULL, &labels, &len, NULL);
        n_global += targets_of(labels, len);
        if (k >= r0 && k < r1) {
            t_max = len > t_max ? len : t_max;
        }
    }
    if (o->pad_to_multiple_of > 1) {
        t_max = (t_max + o->pad_to_multiple_of - 1) / o->pad_to_multiple_of * o->pad_to_multiple_of;
    }
    int64_t n_local = 0;
    for (int64_t k = r0; k < r1; k++) {
        const int64_t row = k - r0;
        const int32_t *ids = NULL, *labels = NULL;
        int64_t len = 0;
        mc_dataset_example(it->ds, it->order[k], &ids, &labels, &len, NULL);
        int32_t *out_ids = it->ids + row * t_max, *out_labels = it->labels + row * t_max;
        memcpy(out_ids, ids, (size_t)len * sizeof(int32_t));
        memcpy(out_labels, labels, (size_t)len * sizeof(int32_t));
        for (int64_t t = len; t < t_max; t++) {
            out_ids[t] = o->pad_id;
            out_labels[t] = LABEL_IGNORE;
        }
        it->len[row] = len;
        it->example[row] = it->order[k];
        n_local += targets_of(labels, len);
    }
    *batch = (mc_batch){ .n_seq = r1 - r0,
                         .n_tok = r1 > r0 ? t_max : 0,
                         .ids = it->ids,
                         .labels = it->labels,
                         .len = it->len,
                         .example = it->example,
                         .n_targets = n_local,
                         .n_targets_global = n_global,
                         .pos = it->pos };
    if (++it->pos.index >= it->steps) {
        it->pos.index = 0;
        it->pos.epoch++;
    }
    return MC_OK;
}
