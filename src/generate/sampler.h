// Token choice for one row of logits: HF's logits processors (spec §7.2) and greedy or multinomial choice.
// Knows nothing about models or batching; mc_generate (generate.c) feeds it one row per sequence per step.
#pragma once

#include "base/rng.h"
#include "mambac.h"


// Checks every setting against HF's accepted ranges; MC_ERR_INVALID names the first bad one.
mc_status mc_sampler_opts_check(const mc_sampler_opts *opts, mc_error *err);

// Settings, per-sequence random streams and [V] scratch rows, allocated once.
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

// softmax of scores [n] into probs [n] (f32 out, double accumulation); -inf entries get 0.
void mc_softmax_f32(float *probs, const float *scores, int64_t n);
