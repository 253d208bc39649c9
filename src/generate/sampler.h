// Token choice for one row of logits: HF's logits processors (spec §7.2) and greedy or multinomial choice.
// Knows nothing about models or batching; mc_generate (generate.c) feeds it one row per sequence per step.
#pragma once

#include "base/rng.h"
#include "kernels/ref/sample.h"
#include "mambac.h"


// Checks every setting against HF's accepted ranges; MC_ERR_INVALID names the first bad one.
mc_status mc_sampler_opts_check(const mc_sampler_opts *opts, mc_error *err);

// Settings, per-sequence random streams and [V] scratch rows, allocated once. The math is kernels/ref/sample.c's.
typedef struct mc_sampler mc_sampler;

// n_vocab >= 1 entries per row; n_seq >= 1 random streams (stream i seeded from opts->seed and i). Owned:
// mc_sampler_free. Errors: MC_ERR_INVALID from mc_sampler_opts_check, MC_ERR_NOMEM.
mc_status mc_sampler_new(const mc_sampler_opts *opts, int64_t n_vocab, int64_t n_seq, mc_sampler **out, mc_error *err);
void mc_sampler_free(mc_sampler *s); // NULL is a no-op

// Applies the enabled processors to scores [V] in place, in HF's order: repetition penalty (over the distinct ids
// of prev [n_prev], prompt included), and only when sampling temperature, top-k, top-p, min-p. Removed entries
// become -inf. prev ids must lie in [0, V).
void mc_sampler_process(mc_sampler *s, float *scores, const int32_t *prev, int64_t n_prev);

// Picks a token from processed scores [V]: the first argmax when greedy, else a draw from softmax(scores) using
// sequence seq's stream (never an entry of probability 0).
int32_t mc_sampler_choose(mc_sampler *s, int64_t seq, const float *scores);

// The processors' settings as the `sample` op takes them (torch's f32 roundings of the Python floats).
void mc_sample_args_from_opts(mc_sample_args *a, const mc_sampler_opts *opts);
const mc_sample_args *mc_sampler_args(const mc_sampler *s);

// The next U[0, 1) of sequence seq's stream: the uniform mc_sampler_choose would draw for a row with a finite entry
// (a device `sample` op takes it so that it draws what the host draws).
double mc_sampler_uniform(mc_sampler *s, int64_t seq);

// mc_softmax_f32 (softmax of a row, f32 out, double accumulation) is declared in kernels/ref/sample.h.
