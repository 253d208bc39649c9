// Token choice for one row of scores, the reference for the `sample` op: HF's logits processors (spec §7.2) in HF's
// order and the first argmax or an inverse-CDF draw with a given uniform. generate/sampler.c runs these on the host
// (drawing the uniform from each sequence's stream); the device backends' `sample` ops must choose as they do.
#pragma once

#include <stdint.h>

#include "kernels/ops.h"

// [V] scratch rows for one row at a time, all zero-initialised (the penalty's marks are cleared after each use).
typedef struct mc_sample_scratch {
    int64_t n_vocab;
    float *tmp;          // [V] top-k selection copy, min-p probabilities
    double *weights;     // [V] multinomial weights
    struct mc_scored *sorted; // [V] top-p order
    unsigned char *seen; // [V] repetition-penalty marks, all zero between calls
} mc_sample_scratch;

// false when out of memory (then *w is freed and zero).
bool mc_sample_scratch_init(mc_sample_scratch *w, int64_t n_vocab);
void mc_sample_scratch_free(mc_sample_scratch *w);

// Applies the enabled processors of a to scores [V] (V = w->n_vocab) in place: repetition penalty over the
// distinct ids of prev [n_prev] (prompt included; ids in [0, V)), and only when sampling temperature, top-k, top-p,
// min-p. Removed entries become -inf.
void mc_ref_sample_process(const mc_sample_args *a, mc_sample_scratch *w, float *scores, const int32_t *prev,
                           int64_t n_prev);

// The first argmax of scores [V] (ties: the lowest index, as torch.argmax).
int32_t mc_ref_argmax_first(const float *scores, int64_t n);

// A draw from softmax(scores [V]) with uniform u in [0, 1): weights exp((double)(s − max)), the first entry of
// positive weight whose cumulative weight (summed in index order, in double) exceeds u · Σ weights; the last entry
// of positive weight when u · Σ is within rounding of the total. A row with no finite entry gives its first argmax.
int32_t mc_ref_sample_draw(mc_sample_scratch *w, const float *scores, double u);

// softmax of scores [n] into probs [n] (f32 out, double accumulation); -inf entries get 0.
void mc_softmax_f32(float *probs, const float *scores, int64_t n);

// The `sample` op of the host backends: per row, a copy processed by mc_ref_sample_process, then the first argmax
// (greedy) or mc_ref_sample_draw with uniforms[r]. All pointers are host memory. MC_ERR_NOMEM for the scratch.
mc_status mc_ref_sample(const mc_exec *ex, int32_t *out_ids, const float *logits, int64_t ld, int64_t n, int64_t V,
                        const mc_sample_args *a, const int32_t *prev, const int64_t *prev_off, const double *uniforms);
