// Batches for training: walks a dataset epoch after epoch in a seeded order and hands out right-padded [rows, T]
// ids and labels, optionally one rank's share of each global batch. Reading examples is data.h's job.
//
// Order: epoch e visits the examples in a permutation of 0..N-1. Without shuffle it is the identity. With shuffle it
// is a Fisher–Yates shuffle of the identity, for i = N-1 down to 1 swapping i with j = mc_rng_below(rng, i + 1),
// drawn from an mc_rng (base/rng.h) seeded with seed + e * 0x9E3779B97F4A7C15 (mod 2^64). So the order depends only
// on (seed, epoch, N): a run restarted from a saved position sees exactly the batches it would have seen. (The
// Trainer's RandomSampler draws from torch's generator; its order cannot be reproduced outside torch, spec §9.1.)
//
// Global batches: with n_ranks ranks, global batch k of an epoch is the permutation's slice [k·G, (k+1)·G),
// G = batch_size · n_ranks, and rank r takes the part [k·G + r·batch_size, k·G + (r+1)·batch_size) of it. The last
// global batch of an epoch may be short (kept unless drop_last, as dataloader_drop_last=False does); then the last
// ranks get fewer rows or none (n_seq 0: such a rank still joins the step with zero gradients). n_targets_global
// lets every rank divide by the loss count of the whole global batch, so summed gradients equal one big batch's.
//
// Padding, as DataCollatorForLanguageModeling: rows are right-padded to the longest row of the batch (rounded up to
// pad_to_multiple_of), padded ids are pad_id and padded labels -100. A recurrent model reads left to right, so
// right padding never changes the logits of real tokens.
#pragma once

#include "mambac.h"
#include "train/data.h"

typedef struct mc_batch_opts {
    int64_t batch_size;         // rows per rank per step (per_device_train_batch_size): 8
    bool shuffle;               // true (the Trainer's RandomSampler)
    uint64_t seed;              // 42 (TrainingArguments.seed)
    bool drop_last;             // false: the short last global batch of an epoch is kept
    int32_t pad_id;             // id at padded positions: 0 (SFTTrainer falls back to the EOS token, id 0 for NeoX)
    int64_t pad_to_multiple_of; // <= 1: off
    int64_t rank, n_ranks;      // 0 of 1: no sharding
} mc_batch_opts;

// batch_size 8, shuffle, seed 42, keep the last batch, pad_id 0, no rounding, rank 0 of 1.
void mc_batch_opts_init(mc_batch_opts *opts);

// Where the iterator stands: the next global batch it hands out is number index of epoch epoch. Save it with a
// checkpoint and pass it to mc_batcher_seek to continue with exactly the same batches.
typedef struct mc_batch_pos {
    int64_t epoch; // >= 0
    int64_t index; // 0 <= index < steps per epoch
} mc_batch_pos;

// One batch. The arrays are borrowed from the iterator: valid until its next call to next, seek or free.
typedef struct mc_batch {
    int64_t n_seq;            // rows (<= batch_size; 0 for a rank with no share of a short last batch)
    int64_t n_tok;            // T: the padded row length (0 when n_seq is 0)
    const int32_t *ids;       // [n_seq, n_tok]
    const int32_t *labels;    // [n_seq, n_tok]: -100 where ignored (padding, masked positions)
    const int64_t *len;       // [n_seq]: tokens before the padding in each row
    const int64_t *example;   // [n_seq]: each row's example index in the dataset
    int64_t n_targets;        // positions t >= 1 with labels[t] != -100, over this rank's rows: the count the mean
                              // next-token loss divides by (spec §6)
    int64_t n_targets_global; // the same over the whole global batch (every rank's rows)
    mc_batch_pos pos;         // which global batch this is
} mc_batch;

typedef struct mc_batcher mc_batcher;

// A batch iterator over ds (borrowed: it must outlive the iterator), positioned at epoch 0, batch 0. opts may be
// NULL (defaults). Errors: MC_ERR_INVALID naming the option (batch_size < 1, n_ranks < 1, rank outside
// [0, n_ranks), pad_id < 0, drop_last with fewer examples than one global batch), MC_ERR_NOMEM. Owned:
// mc_batcher_free.
mc_status mc_batcher_new(const mc_dataset *ds, const mc_batch_opts *opts, mc_batcher **out, mc_error *err);
void mc_batcher_free(mc_batcher *it); // NULL is a no-op

// Global batches per epoch: ceil(N / G), or floor(N / G) with drop_last; the same on every rank.
int64_t mc_batcher_steps_per_epoch(const mc_batcher *it);

// Fills batch with the batch at the current position and moves to the next one (batch 0 of the next epoch after
// an epoch's last batch, reshuffled). Never runs out. Cannot fail today (the buffers are sized at creation); the
// status is there for iterators that will upload to a device.
mc_status mc_batcher_next(mc_batcher *it, mc_batch *batch, mc_error *err);

mc_batch_pos mc_batcher_pos(const mc_batcher *it); // the position next will hand out

// Moves to pos (from mc_batcher_pos or a batch's pos, possibly of an earlier run with the same dataset and
// options). Errors: MC_ERR_INVALID when epoch < 0 or index is outside [0, steps per epoch); MC_ERR_NOMEM.
mc_status mc_batcher_seek(mc_batcher *it, mc_batch_pos pos, mc_error *err);
