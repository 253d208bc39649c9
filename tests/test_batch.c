// Batch iterator: padding and label masks, the documented per-epoch shuffle, exact resumption from a position,
// and data-parallel shards that add up to the unsharded global batch.
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// cmocka.h needs setjmp.h and stdarg.h before it
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>
// clang-format on

#include "base/rng.h"
#include "check.h"
#include "mambac.h"
#include "train/batch.h"
#include "train/data.h"

// n pre-tokenized examples; example i has i % 5 + 1 tokens, ids 10·i + t, and its first label masked when i % 3 == 0
// (unless that would leave no label, which would drop the example).
static mc_dataset *make_dataset(int64_t n) {
    size_t cap = (size_t)n * 128 + 16;
    char *text = malloc(cap), *p = text;
    for (int64_t i = 0; i < n; i++) {
        p += sprintf(p, "{\"input_ids\": [");
        for (int64_t t = 0; t <= i % 5; t++) {
            p += sprintf(p, "%s%lld", t ? ", " : "", (long long)(10 * i + t));
        }
        p += sprintf(p, "], \"labels\": [");
        for (int64_t t = 0; t <= i % 5; t++) {
            p += sprintf(p, "%s%lld", t ? ", " : "",
                         (i % 3 == 0 && i % 5 != 0 && t == 0) ? -100LL : (long long)(10 * i + t));
        }
        p += sprintf(p, "]}\n");
    }
    mc_data_opts o;
    mc_data_opts_init(&o);
    o.n_vocab = 10 * n + 10;
    mc_dataset *ds = NULL;
    mc_error err = { 0 };
    if (mc_dataset_parse("gen.jsonl", text, strlen(text), NULL, &o, &ds, &err) != MC_OK) {
        fail_msg("%s", err.msg);
    }
    free(text);
    return ds;
}

static mc_batcher *make_batcher(const mc_dataset *ds, const mc_batch_opts *o) {
    mc_batcher *it = NULL;
    mc_error err = { 0 };
    if (mc_batcher_new(ds, o, &it, &err) != MC_OK) {
        fail_msg("%s", err.msg);
    }
    return it;
}

static mc_batch next(mc_batcher *it) {
    mc_batch b;
    mc_error err = { 0 };
    assert_int_equal(mc_batcher_next(it, &b, &err), MC_OK);
    return b;
}

// Every row holds its example right-padded; the target counts are what the loss divides by.
static void check_rows(const mc_dataset *ds, const mc_batch *b, int32_t pad_id) {
    int64_t longest = 0, targets = 0;
    for (int64_t r = 0; r < b->n_seq; r++) {
        const int32_t *ids = NULL, *labels = NULL;
        int64_t len = 0;
        assert_true(mc_dataset_example(ds, b->example[r], &ids, &labels, &len, NULL));
        assert_int_equal(b->len[r], len);
        longest = len > longest ? len : longest;
        for (int64_t t = 0; t < b->n_tok; t++) {
            const int32_t want_id = t < len ? ids[t] : pad_id, want_label = t < len ? labels[t] : -100;
            assert_int_equal(b->ids[r * b->n_tok + t], want_id);
            assert_int_equal(b->labels[r * b->n_tok + t], want_label);
            targets += t >= 1 && want_label != -100;
        }
    }
    assert_true(b->n_tok >= longest);
    assert_int_equal(b->n_targets, targets);
}

static void test_in_order(void **unused) {
    mc_dataset *ds = make_dataset(10);
    mc_batch_opts o;
    mc_batch_opts_init(&o);
    o.shuffle = false;
    o.batch_size = 4;
    o.pad_id = 7;
    mc_batcher *it = make_batcher(ds, &o);
    assert_int_equal(mc_batcher_steps_per_epoch(it), 3);
    for (int64_t k = 0; k < 7; k++) {
        const mc_batch b = next(it);
        assert_int_equal(b.pos.epoch, k / 3);
        assert_int_equal(b.pos.index, k % 3);
        assert_int_equal(b.n_seq, k % 3 == 2 ? 2 : 4); // the short last batch is kept
        for (int64_t r = 0; r < b.n_seq; r++) {
            assert_int_equal(b.example[r], (k % 3) * 4 + r);
        }
        int64_t longest = 0;
        for (int64_t r = 0; r < b.n_seq; r++) {
            longest = b.len[r] > longest ? b.len[r] : longest;
        }
        assert_int_equal(b.n_tok, longest); // padded to the batch's longest row, no further
        assert_int_equal(b.n_targets, b.n_targets_global);
        check_rows(ds, &b, 7);
    }
    mc_batcher_free(it);

    o.drop_last = true;
    o.pad_to_multiple_of = 8;
    it = make_batcher(ds, &o);
    assert_int_equal(mc_batcher_steps_per_epoch(it), 2);
    const mc_batch b = next(it);
    assert_int_equal(b.n_tok, 8);
    check_rows(ds, &b, 7);
    assert_int_equal(next(it).pos.index, 1);
    assert_int_equal(next(it).pos.epoch, 1);
    mc_batcher_free(it);
    mc_dataset_free(ds);
}

// The documented order: Fisher–Yates from mc_rng seeded with seed + epoch · 0x9E3779B97F4A7C15.
static void test_shuffle_order(void **unused) {
    const int64_t n = 10;
    mc_dataset *ds = make_dataset(n);
    mc_batch_opts o;
    mc_batch_opts_init(&o);
    o.batch_size = 3;
    mc_batcher *it = make_batcher(ds, &o);
    int64_t first[10];
    for (int64_t e = 0; e < 3; e++) {
        int64_t want[10], got[10], m = 0;
        for (int64_t i = 0; i < n; i++) {
            want[i] = i;
        }
        mc_rng rng;
        mc_rng_seed(&rng, 42 + (uint64_t)e * 0x9E3779B97F4A7C15ull);
        for (int64_t i = n - 1; i > 0; i--) {
            const int64_t j = (int64_t)mc_rng_below(&rng, (uint64_t)i + 1), t = want[i];
            want[i] = want[j];
            want[j] = t;
        }
        for (int64_t k = 0; k < mc_batcher_steps_per_epoch(it); k++) {
            const mc_batch b = next(it);
            assert_int_equal(b.pos.epoch, e);
            check_rows(ds, &b, 0);
            for (int64_t r = 0; r < b.n_seq; r++) {
                got[m++] = b.example[r];
            }
        }
        assert_int_equal(m, n);
        assert_memory_equal(got, want, sizeof(want));
        if (e == 0) {
            memcpy(first, got, sizeof(first));
            // Pinned: a change here breaks resuming checkpoints written before it.
            const int64_t pinned[10] = { 9, 1, 4, 2, 8, 7, 6, 5, 3, 0 };
            if (memcmp(got, pinned, sizeof(pinned)) != 0) {
                fail_msg("epoch 0 order changed: %lld %lld %lld %lld %lld %lld %lld %lld %lld %lld", (long long)got[0],
                         (long long)got[1], (long long)got[2], (long long)got[3], (long long)got[4], (long long)got[5],
                         (long long)got[6], (long long)got[7], (long long)got[8], (long long)got[9]);
            }
        } else {
            assert_memory_not_equal(got, first, sizeof(first)); // a fresh order each epoch
        }
    }
    mc_batcher_free(it);
    mc_dataset_free(ds);
}

// A second iterator seeked to a saved position hands out exactly the batches the first one does from there.
static void test_resume(void **unused) {
    mc_dataset *ds = make_dataset(23);
    mc_batch_opts o;
    mc_batch_opts_init(&o);
    o.batch_size = 4;
    o.seed = 1234;
    mc_batcher *a = make_batcher(ds, &o);
    for (int64_t k = 0; k < 9; k++) { // into epoch 1 (6 batches per epoch)
        next(a);
    }
    const mc_batch_pos saved = mc_batcher_pos(a);
    assert_int_equal(saved.epoch, 1);
    assert_int_equal(saved.index, 3);
    mc_batcher *b = make_batcher(ds, &o);
    mc_error err = { 0 };
    assert_int_equal(mc_batcher_seek(b, saved, &err), MC_OK);
    for (int64_t k = 0; k < 10; k++) {
        const mc_batch x = next(a);
        int64_t ex[4], n = x.n_seq;
        memcpy(ex, x.example, (size_t)n * sizeof(int64_t));
        const mc_batch y = next(b);
        assert_int_equal(y.n_seq, n);
        assert_memory_equal(y.example, ex, (size_t)n * sizeof(int64_t));
        assert_int_equal(x.pos.epoch, y.pos.epoch);
        assert_int_equal(x.pos.index, y.pos.index);
    }
    assert_int_equal(mc_batcher_seek(b, (mc_batch_pos){ .epoch = 0, .index = 6 }, &err), MC_ERR_INVALID);
    assert_string_equal(err.msg, "batch position epoch 0 index 6: need epoch >= 0, 0 <= index < 6");
    assert_int_equal(mc_batcher_seek(b, (mc_batch_pos){ .epoch = -1, .index = 0 }, &err), MC_ERR_INVALID);
    mc_batcher_free(a);
    mc_batcher_free(b);
    mc_dataset_free(ds);
}

// Rank r of n takes rows [r·B, (r+1)·B) of each global batch of n·B rows; together the ranks cover it.
static void test_shards(void **unused) {
    mc_dataset *ds = make_dataset(11);
    const int64_t n_ranks = 3, B = 2;
    mc_batch_opts o;
    mc_batch_opts_init(&o);
    o.batch_size = B * n_ranks;
    mc_batcher *whole = make_batcher(ds, &o);
    mc_batcher *rank[3];
    o.batch_size = B;
    o.n_ranks = n_ranks;
    for (int64_t r = 0; r < n_ranks; r++) {
        o.rank = r;
        rank[r] = make_batcher(ds, &o);
        assert_int_equal(mc_batcher_steps_per_epoch(rank[r]), 2);
    }
    for (int64_t k = 0; k < 4; k++) {
        const mc_batch g = next(whole);
        int64_t want[6], sum = 0, rows = 0;
        memcpy(want, g.example, (size_t)g.n_seq * sizeof(int64_t));
        for (int64_t r = 0; r < n_ranks; r++) {
            const mc_batch b = next(rank[r]);
            check_rows(ds, &b, 0);
            assert_int_equal(b.n_targets_global, g.n_targets_global);
            assert_int_equal(b.pos.epoch, g.pos.epoch);
            assert_int_equal(b.pos.index, g.pos.index);
            for (int64_t i = 0; i < b.n_seq; i++) {
                assert_int_equal(b.example[i], want[rows + i]);
            }
            if (k % 2 == 1) { // 11 = 6 + 5: the last global batch leaves rank 2 one row
                assert_int_equal(b.n_seq, r < 2 ? 2 : 1);
            }
            rows += b.n_seq;
            sum += b.n_targets;
        }
        assert_int_equal(rows, g.n_seq);
        assert_int_equal(sum, g.n_targets_global);
    }
    for (int64_t r = 0; r < n_ranks; r++) {
        mc_batcher_free(rank[r]);
    }
    mc_batcher_free(whole);

    // 4 examples over 3 ranks of 2: rank 2 gets an empty batch and still takes the step.
    mc_dataset_free(ds);
    ds = make_dataset(4);
    o.rank = 2;
    mc_batcher *it = make_batcher(ds, &o);
    const mc_batch b = next(it);
    assert_int_equal(b.n_seq, 0);
    assert_int_equal(b.n_tok, 0);
    assert_int_equal(b.n_targets, 0);
    assert_true(b.n_targets_global > 0);
    mc_batcher_free(it);
    mc_dataset_free(ds);
}

static void test_bad_options(void **unused) {
    mc_dataset *ds = make_dataset(5);
    mc_batch_opts o;
    mc_batcher *it = NULL;
    mc_error err = { 0 };
    mc_batch_opts_init(&o);
    o.batch_size = 0;
    assert_int_equal(mc_batcher_new(ds, &o, &it, &err), MC_ERR_INVALID);
    assert_string_equal(err.msg, "batch_size is 0, must be >= 1");
    mc_batch_opts_init(&o);
    o.rank = 2;
    o.n_ranks = 2;
    assert_int_equal(mc_batcher_new(ds, &o, &it, &err), MC_ERR_INVALID);
    assert_string_equal(err.msg, "rank 2 of 2: need 0 <= rank < n_ranks");
    mc_batch_opts_init(&o);
    o.drop_last = true;
    assert_int_equal(mc_batcher_new(ds, &o, &it, &err), MC_ERR_INVALID);
    assert_string_equal(err.msg, "drop_last: 5 examples make no global batch of 8");
    mc_batch_opts_init(&o);
    o.pad_id = -1;
    assert_int_equal(mc_batcher_new(ds, &o, &it, &err), MC_ERR_INVALID);
    assert_string_equal(err.msg, "pad_id is -1, must be a token id >= 0");
    assert_null(it);
    mc_batcher_free(NULL);
    mc_dataset_free(ds);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_in_order), cmocka_unit_test(test_shuffle_order), cmocka_unit_test(test_resume),
        cmocka_unit_test(test_shards),   cmocka_unit_test(test_bad_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
