// Token choice settings and per-sequence random streams around the reference processors and choice of
// kernels/ref/sample.c (HF's order, spec §7.2). Batching, stopping and the model live in generate.c.
#include "generate/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

// ---------------------------------------------------------------------------------------------------------------
// Settings and the sampler object

mc_status mc_sampler_opts_check(const mc_sampler_opts *opts, mc_error *err) {
    // Written as !(ok) so NaN fails every check.
    if (!(opts->temperature > 0 && isfinite(opts->temperature))) {
        return mc_fail(err, MC_ERR_INVALID, "temperature is %g, must be a finite number > 0", opts->temperature);
    }
    if (opts->top_k < 0) {
        return mc_fail(err, MC_ERR_INVALID, "top_k is %lld, must be >= 0 (0 = off)", (long long)opts->top_k);
    }
    if (!(opts->top_p >= 0 && opts->top_p <= 1)) {
        return mc_fail(err, MC_ERR_INVALID, "top_p is %g, must be in [0, 1] (1 = off)", opts->top_p);
    }
    if (!(opts->min_p >= 0 && opts->min_p <= 1)) {
        return mc_fail(err, MC_ERR_INVALID, "min_p is %g, must be in [0, 1] (0 = off)", opts->min_p);
    }
    if (!(opts->repetition_penalty > 0 && isfinite(opts->repetition_penalty))) {
        return mc_fail(err, MC_ERR_INVALID, "repetition_penalty is %g, must be a finite number > 0 (1 = off)",
                       opts->repetition_penalty);
    }
    return MC_OK;
}

struct mc_sampler {
    mc_sampler_opts opts;
    mc_sample_args args; // opts resolved for the processors (kernels/ref/sample.h)
    int64_t n_vocab;
    int64_t n_seq;
    mc_rng *rngs; // [n_seq] one stream per sequence, so a batch draws what each sequence draws alone
    mc_sample_scratch scratch;
};

void mc_sample_args_from_opts(mc_sample_args *a, const mc_sampler_opts *o) {
    *a = (mc_sample_args){
        .do_sample = o->do_sample,
        .penalty_on = o->repetition_penalty != 1.0,
        .penalty = (float)o->repetition_penalty,
        .temperature_on = o->temperature != 1.0,
        .temperature = (float)o->temperature,
        .top_k = o->top_k,
        .top_p_on = o->top_p < 1.0,
        .top_p_threshold = (float)(1.0 - o->top_p),
        .min_p_on = o->min_p > 0.0,
        .min_p = (float)o->min_p,
    };
}

void mc_sampler_opts_init(mc_sampler_opts *opts) {
    *opts = (mc_sampler_opts){
        .do_sample = false,
        .temperature = 1.0,
        .top_k = 0,
        .top_p = 1.0,
        .min_p = 0.0,
        .repetition_penalty = 1.0,
        .seed = 0,
    };
}

mc_status mc_sampler_new(const mc_sampler_opts *opts, int64_t n_vocab, int64_t n_seq, mc_sampler **out, mc_error *err) {
    *out = NULL;
    mc_status st = mc_sampler_opts_check(opts, err);
    if (st != MC_OK) {
        return st;
    }
    if (n_vocab < 1 || n_vocab > INT32_MAX || n_seq < 1) {
        return mc_fail(err, MC_ERR_INVALID, "sampler: n_vocab %lld / n_seq %lld out of range", (long long)n_vocab,
                       (long long)n_seq);
    }
    mc_sampler *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "sampler: out of memory");
    }
    s->opts = *opts;
    s->n_vocab = n_vocab;
    s->n_seq = n_seq;
    mc_sample_args_from_opts(&s->args, opts);
    s->rngs = calloc((size_t)n_seq, sizeof(*s->rngs));
    if (s->rngs == NULL || !mc_sample_scratch_init(&s->scratch, n_vocab)) {
        mc_sampler_free(s);
        return mc_fail(err, MC_ERR_NOMEM, "sampler: out of memory for %lld-entry scratch rows", (long long)n_vocab);
    }
    for (int64_t i = 0; i < n_seq; i++) {
        // Stream 0 is seeded with seed itself, so sequence 0 of a batch equals a single-prompt run.
        mc_rng_seed(&s->rngs[i], opts->seed + (uint64_t)i * 0xD1B54A32D192ED03ull);
    }
    *out = s;
    return MC_OK;
}

void mc_sampler_free(mc_sampler *s) {
    if (s == NULL) {
        return;
    }
    free(s->rngs);
    mc_sample_scratch_free(&s->scratch);
    free(s);
}

// ---------------------------------------------------------------------------------------------------------------
// Processing and choice: the reference functions of kernels/ref/sample.c, with this sampler's settings and streams.

void mc_sampler_process(mc_sampler *s, float *scores, const int32_t *prev, int64_t n_prev) {
    mc_ref_sample_process(&s->args, &s->scratch, scores, prev, n_prev);
}

int32_t mc_sampler_choose(mc_sampler *s, int64_t seq, const float *scores) {
    if (!s->opts.do_sample) {
        return mc_ref_argmax_first(scores, s->n_vocab);
    }
    bool any = false; // a row with nothing left draws nothing from the stream
    for (int64_t i = 0; i < s->n_vocab && !any; i++) {
        any = scores[i] > -INFINITY;
    }
    if (!any) {
        return mc_ref_argmax_first(scores, s->n_vocab);
    }
    return mc_ref_sample_draw(&s->scratch, scores, mc_rng_uniform(&s->rngs[seq]));
}

const mc_sample_args *mc_sampler_args(const mc_sampler *s) {
    return &s->args;
}

double mc_sampler_uniform(mc_sampler *s, int64_t seq) {
    return mc_rng_uniform(&s->rngs[seq]);
}
