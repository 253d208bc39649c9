// mc_generate: prefill each prompt alone, then step the unfinished sequences together one token at a time, so
// a ragged batch gives every sequence exactly the tokens it gets alone (spec §7.1). Token choice is sampler.c's;
// on a device backend the same choice runs as the backend's `sample` op next to the logits (issue 9 §2.2), with the
// uniforms drawn here from the same streams, so only the ids come back (MAMBAC_HOST_SAMPLING=1 keeps it on the host).
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/checked.h"
#include "base/error.h"
#include "generate/sampler.h"
#include "model/forward_sample.h"

void mc_generate_opts_init(mc_generate_opts *opts, const mc_model *model) {
    (void)model; // eos comes from the config at generate time (eos_ids NULL)
    if (opts == NULL) {
        return;
    }
    *opts = (mc_generate_opts){
        .max_new_tokens = 20, // HF's default limit when nothing sets max_length / max_new_tokens (spec §7.1)
        .stop_at_eos = true,
        .eos_ids = NULL,
        .n_eos_ids = 0,
        .on_token = NULL,
        .user = NULL,
        .stats = NULL,
    };
    mc_sampler_opts_init(&opts->sampler);
}

typedef struct gen_seq {
    int32_t *ids; // [cap] the prompt, then the new tokens: the history the repetition penalty reads
    int64_t n_ids, cap;
    int64_t n_prompt;
    bool done;
} gen_seq;

typedef struct gen_ctx {
    const mc_model *model;
    const mc_generate_opts *opts;
    int64_t n_seq, n_vocab;
    const int32_t *eos; // [n_eos]
    int64_t n_eos;
    int32_t cfg_eos;   // used when eos is NULL; negative = none
    gen_seq *seqs;     // [n_seq]
    float *logits;     // [n_seq, V] one row per batch slot
    int32_t *step_ids; // [n_seq] the token each slot feeds next
    int64_t *slot_seq; // [n_seq] the sequence each slot of batch holds
    int64_t n_slots;   // = mc_state_n_seq(batch)
    mc_sampler *sampler;
    bool on_device;    // logits stay on the device; the sample op chooses (arrays below), logits is NULL
    double *uniforms;  // [n_seq] one per batch slot
    int64_t *prev_off; // [n_seq + 1] the slots' histories in prev (repetition penalty only)
    int32_t *prev;     // [prev_cap]
    int64_t prev_cap;
    int32_t *chosen;   // [n_seq] the op's ids per slot
    mc_state *one;   // 1-sequence state for prefill
    mc_state *batch; // n_slots sequences for the decode steps
    mc_generate_stats stats;
} gen_ctx;

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// ---------------------------------------------------------------------------------------------------------------
// Argument checks: every message names the setting or the prompt.

static mc_status check_args(const mc_model *model, const int32_t *const *prompts, const int64_t *prompt_len,
                            int64_t n_seq, const mc_generate_opts *opts, mc_error *err) {
    if (n_seq < 1) {
        return mc_fail(err, MC_ERR_INVALID, "generate: n_seq is %lld, need at least 1 prompt", (long long)n_seq);
    }
    if (opts->max_new_tokens < 0) {
        return mc_fail(err, MC_ERR_INVALID, "max_new_tokens is %lld, must be >= 0", (long long)opts->max_new_tokens);
    }
    mc_status st = mc_sampler_opts_check(&opts->sampler, err);
    if (st != MC_OK) {
        return st;
    }
    const int64_t V = mc_model_config(model)->vocab_size;
    if (opts->eos_ids != NULL || opts->n_eos_ids != 0) {
        if (opts->eos_ids == NULL || opts->n_eos_ids < 0) {
            return mc_fail(err, MC_ERR_INVALID, "eos_ids: %lld ids given without a list", (long long)opts->n_eos_ids);
        }
        for (int64_t j = 0; j < opts->n_eos_ids; j++) {
            if (opts->eos_ids[j] < 0 || opts->eos_ids[j] >= V) {
                return mc_fail(err, MC_ERR_INVALID, "eos id %d is outside the vocabulary [0, %lld)", opts->eos_ids[j],
                               (long long)V);
            }
        }
    }
    for (int64_t i = 0; i < n_seq; i++) {
        if (prompt_len[i] < 1 || prompts[i] == NULL) {
            return mc_fail(err, MC_ERR_INVALID, "prompt %lld is empty (%lld tokens), need at least 1", (long long)i,
                           (long long)prompt_len[i]);
        }
        for (int64_t t = 0; t < prompt_len[i]; t++) {
            if (prompts[i][t] < 0 || prompts[i][t] >= V) {
                return mc_fail(err, MC_ERR_INVALID,
                               "prompt %lld: token id %d at position %lld is outside the vocabulary [0, %lld)",
                               (long long)i, prompts[i][t], (long long)t, (long long)V);
            }
        }
    }
    return MC_OK;
}

// ---------------------------------------------------------------------------------------------------------------
// The context: everything allocated once per call.

static void ctx_free(gen_ctx *c) {
    if (c->seqs != NULL) {
        for (int64_t i = 0; i < c->n_seq; i++) {
            free(c->seqs[i].ids);
        }
    }
    free(c->seqs);
    free(c->logits);
    free(c->step_ids);
    free(c->slot_seq);
    free(c->uniforms);
    free(c->prev_off);
    free(c->prev);
    free(c->chosen);
    mc_sampler_free(c->sampler);
    mc_state_free(c->one);
    mc_state_free(c->batch);
}

// History buffers start at prompt + min(max_new, 256) and grow by doubling, so a large max_new_tokens that EOS
// cuts short costs nothing up front.
static mc_status ctx_alloc_seqs(gen_ctx *c, const int32_t *const *prompts, const int64_t *prompt_len, mc_error *err) {
    c->seqs = calloc((size_t)c->n_seq, sizeof(*c->seqs));
    if (c->seqs == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "generate: out of memory for %lld sequences", (long long)c->n_seq);
    }
    int64_t first = c->opts->max_new_tokens < 256 ? c->opts->max_new_tokens : 256;
    for (int64_t i = 0; i < c->n_seq; i++) {
        gen_seq *s = &c->seqs[i];
        if (!mc_add_i64(prompt_len[i], first, &s->cap) || (uint64_t)s->cap > SIZE_MAX / sizeof(int32_t)) {
            return mc_fail(err, MC_ERR_NOMEM, "generate: prompt %lld is too long", (long long)i);
        }
        s->ids = malloc((size_t)s->cap * sizeof(int32_t));
        if (s->ids == NULL) {
            return mc_fail(err, MC_ERR_NOMEM, "generate: out of memory for prompt %lld", (long long)i);
        }
        memcpy(s->ids, prompts[i], (size_t)prompt_len[i] * sizeof(int32_t));
        s->n_ids = s->n_prompt = prompt_len[i];
        s->done = c->opts->max_new_tokens == 0;
        c->stats.n_prompt_tokens += prompt_len[i];
    }
    return MC_OK;
}

static mc_status ctx_alloc(gen_ctx *c, const int32_t *const *prompts, const int64_t *prompt_len, mc_error *err) {
    mc_status st = ctx_alloc_seqs(c, prompts, prompt_len, err);
    if (st != MC_OK) {
        return st;
    }
    int64_t n_logits = 0;
    if (!mc_mul_i64(c->n_seq, c->n_vocab, &n_logits) || (uint64_t)n_logits > SIZE_MAX / sizeof(float)) {
        return mc_fail(err, MC_ERR_NOMEM, "generate: %lld x %lld logits overflow", (long long)c->n_seq,
                       (long long)c->n_vocab);
    }
    if (c->on_device) {
        c->uniforms = calloc((size_t)c->n_seq, sizeof(double));
        c->prev_off = calloc((size_t)c->n_seq + 1, sizeof(int64_t));
        c->chosen = calloc((size_t)c->n_seq, sizeof(int32_t));
        if (c->uniforms == NULL || c->prev_off == NULL || c->chosen == NULL) {
            return mc_fail(err, MC_ERR_NOMEM, "generate: out of memory for %lld sequences", (long long)c->n_seq);
        }
    } else {
        c->logits = malloc((size_t)n_logits * sizeof(float));
    }
    c->step_ids = calloc((size_t)c->n_seq, sizeof(int32_t));
    c->slot_seq = calloc((size_t)c->n_seq, sizeof(int64_t));
    if ((!c->on_device && c->logits == NULL) || c->step_ids == NULL || c->slot_seq == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "generate: out of memory for %lld logits rows", (long long)c->n_seq);
    }
    st = mc_sampler_new(&c->opts->sampler, c->n_vocab, c->n_seq, &c->sampler, err);
    if (st == MC_OK) {
        st = mc_state_new(c->model, 1, &c->one, err);
    }
    if (st == MC_OK) {
        st = mc_state_new(c->model, c->n_seq, &c->batch, err);
    }
    for (int64_t j = 0; j < c->n_seq; j++) {
        c->slot_seq[j] = j;
    }
    c->n_slots = c->n_seq;
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// One token for one sequence

static bool is_eos(const gen_ctx *c, int32_t tok) {
    if (c->eos == NULL) {
        return c->cfg_eos >= 0 && tok == c->cfg_eos;
    }
    for (int64_t j = 0; j < c->n_eos; j++) {
        if (c->eos[j] == tok) {
            return true;
        }
    }
    return false;
}

static mc_status seq_append(gen_seq *s, int32_t tok, mc_error *err) {
    if (s->n_ids == s->cap) {
        int64_t cap = s->cap * 2;
        int32_t *ids =
            (uint64_t)cap <= SIZE_MAX / sizeof(int32_t) ? realloc(s->ids, (size_t)cap * sizeof(int32_t)) : NULL;
        if (ids == NULL) {
            return mc_fail(err, MC_ERR_NOMEM, "generate: out of memory for %lld tokens", (long long)cap);
        }
        s->ids = ids;
        s->cap = cap;
    }
    s->ids[s->n_ids++] = tok;
    return MC_OK;
}

// Records sequence i's new token and decides whether the sequence ends: callback said stop, EOS (when enabled),
// or max_new_tokens reached.
static mc_status record_token(gen_ctx *c, int64_t i, int32_t tok, mc_error *err) {
    gen_seq *s = &c->seqs[i];
    mc_status st = seq_append(s, tok, err);
    if (st != MC_OK) {
        return st;
    }
    c->stats.n_new_tokens++;
    if (c->opts->on_token != NULL && !c->opts->on_token(c->opts->user, i, tok)) {
        s->done = true;
    }
    if (c->opts->stop_at_eos && is_eos(c, tok)) {
        s->done = true;
    }
    if (s->n_ids - s->n_prompt >= c->opts->max_new_tokens) {
        s->done = true;
    }
    return MC_OK;
}

// Processes row (sequence i's next-token scores [V], overwritten) on the host, picks a token and records it.
static mc_status accept_token(gen_ctx *c, int64_t i, float *row, mc_error *err) {
    gen_seq *s = &c->seqs[i];
    mc_sampler_process(c->sampler, row, s->ids, s->n_ids);
    return record_token(c, i, mc_sampler_choose(c->sampler, i, row), err);
}

// The device path's inputs for slot j holding sequence i: its uniform (drawn only for an unfinished sampled
// sequence, as the host path draws once per chosen token) and its history for the penalty, appended to prev.
static mc_status stage_slot(gen_ctx *c, int64_t j, int64_t i, bool active, mc_error *err) {
    const gen_seq *s = &c->seqs[i];
    const mc_sample_args *a = mc_sampler_args(c->sampler);
    c->uniforms[j] = active && a->do_sample ? mc_sampler_uniform(c->sampler, i) : 0.0;
    const int64_t n = active && a->penalty_on ? s->n_ids : 0, off = c->prev_off[j];
    if (off + n > c->prev_cap) {
        int64_t cap = c->prev_cap * 2 > off + n ? c->prev_cap * 2 : off + n;
        int32_t *p = (uint64_t)cap <= SIZE_MAX / sizeof(int32_t) ? realloc(c->prev, (size_t)cap * sizeof(int32_t))
                                                                 : NULL;
        if (p == NULL) {
            return mc_fail(err, MC_ERR_NOMEM, "generate: out of memory for %lld history ids", (long long)cap);
        }
        c->prev = p;
        c->prev_cap = cap;
    }
    if (n > 0) {
        memcpy(c->prev + off, s->ids, (size_t)n * sizeof(int32_t));
    }
    c->prev_off[j + 1] = off + n;
    return MC_OK;
}

// ---------------------------------------------------------------------------------------------------------------
// Prefill and decode

// Each prompt alone in the 1-sequence state (so its state is what a solo run builds), then into its batch slot.
static mc_status prefill_all(gen_ctx *c, mc_error *err) {
    double t0 = now_seconds();
    for (int64_t i = 0; i < c->n_seq; i++) {
        gen_seq *s = &c->seqs[i];
        if (s->done) {
            continue; // max_new_tokens 0: nothing to prefill for
        }
        mc_status st = mc_state_reset(c->one, err);
        if (c->on_device) {
            c->prev_off[0] = 0;
            if (st == MC_OK) {
                st = stage_slot(c, 0, i, true, err);
            }
            if (st == MC_OK) {
                st = mc_model_forward_sample(c->model, c->one, s->ids, 1, s->n_prompt, mc_sampler_args(c->sampler),
                                             c->prev, c->prev_off, c->uniforms, c->chosen, err);
            }
        } else if (st == MC_OK) {
            st = mc_model_forward(c->model, c->one, s->ids, 1, s->n_prompt, false, c->logits + i * c->n_vocab, err);
        }
        if (st == MC_OK) {
            st = mc_state_copy_seq(c->batch, i, c->one, 0, err);
        }
        if (st == MC_OK) {
            st = c->on_device ? record_token(c, i, c->chosen[0], err)
                              : accept_token(c, i, c->logits + i * c->n_vocab, err);
        }
        if (st != MC_OK) {
            return st;
        }
    }
    c->stats.prefill_seconds = now_seconds() - t0;
    return MC_OK;
}

// Once at most half the slots hold unfinished sequences, moves those into a smaller state so finished ones stop
// costing forward work; halving bounds the reallocations to log2(n_seq).
static mc_status compact_slots(gen_ctx *c, int64_t n_active, mc_error *err) {
    if (n_active == 0 || n_active > c->n_slots / 2) {
        return MC_OK;
    }
    mc_state *small = NULL;
    mc_status st = mc_state_new(c->model, n_active, &small, err);
    int64_t k = 0;
    for (int64_t j = 0; j < c->n_slots && st == MC_OK; j++) {
        if (!c->seqs[c->slot_seq[j]].done) {
            st = mc_state_copy_seq(small, k, c->batch, j, err);
            c->slot_seq[k++] = c->slot_seq[j];
        }
    }
    if (st != MC_OK) {
        mc_state_free(small);
        return st;
    }
    mc_state_free(c->batch);
    c->batch = small;
    c->n_slots = n_active;
    return MC_OK;
}

static int64_t count_active(const gen_ctx *c) {
    int64_t n = 0;
    for (int64_t j = 0; j < c->n_slots; j++) {
        n += !c->seqs[c->slot_seq[j]].done;
    }
    return n;
}

// One step on the device: each slot's uniform and history go up with the ids, the chosen ids come back.
static mc_status decode_step_device(gen_ctx *c, mc_error *err) {
    mc_status st = MC_OK;
    c->prev_off[0] = 0;
    for (int64_t j = 0; j < c->n_slots && st == MC_OK; j++) {
        st = stage_slot(c, j, c->slot_seq[j], !c->seqs[c->slot_seq[j]].done, err);
    }
    if (st == MC_OK) {
        st = mc_model_forward_sample(c->model, c->batch, c->step_ids, c->n_slots, 1, mc_sampler_args(c->sampler),
                                     c->prev, c->prev_off, c->uniforms, c->chosen, err);
    }
    for (int64_t j = 0; j < c->n_slots && st == MC_OK; j++) {
        if (!c->seqs[c->slot_seq[j]].done) {
            st = record_token(c, c->slot_seq[j], c->chosen[j], err);
        }
    }
    return st;
}

// One token per step for every slot; a finished sequence still in a slot feeds its last token and its row is
// ignored (rows are independent, so it cannot change the others).
static mc_status decode_all(gen_ctx *c, mc_error *err) {
    double t0 = now_seconds();
    for (;;) {
        int64_t n_active = count_active(c);
        mc_status st = compact_slots(c, n_active, err);
        if (st != MC_OK || n_active == 0) {
            c->stats.decode_seconds = now_seconds() - t0;
            return st;
        }
        for (int64_t j = 0; j < c->n_slots; j++) {
            const gen_seq *s = &c->seqs[c->slot_seq[j]];
            c->step_ids[j] = s->ids[s->n_ids - 1];
        }
        if (c->on_device) {
            st = decode_step_device(c, err);
            if (st != MC_OK) {
                return st;
            }
            continue;
        }
        st = mc_model_forward(c->model, c->batch, c->step_ids, c->n_slots, 1, false, c->logits, err);
        for (int64_t j = 0; j < c->n_slots && st == MC_OK; j++) {
            if (!c->seqs[c->slot_seq[j]].done) {
                st = accept_token(c, c->slot_seq[j], c->logits + j * c->n_vocab, err);
            }
        }
        if (st != MC_OK) {
            return st;
        }
    }
}

static mc_status take_outputs(gen_ctx *c, int32_t **out_ids, int64_t *out_len, mc_error *err) {
    for (int64_t i = 0; i < c->n_seq; i++) {
        const gen_seq *s = &c->seqs[i];
        int64_t n = s->n_ids - s->n_prompt;
        out_ids[i] = malloc((size_t)(n > 0 ? n : 1) * sizeof(int32_t));
        if (out_ids[i] == NULL) {
            return mc_fail(err, MC_ERR_NOMEM, "generate: out of memory for the outputs");
        }
        memcpy(out_ids[i], s->ids + s->n_prompt, (size_t)n * sizeof(int32_t));
        out_len[i] = n;
    }
    return MC_OK;
}

mc_status mc_generate(const mc_model *model, const int32_t *const *prompts, const int64_t *prompt_len, int64_t n_seq,
                      const mc_generate_opts *opts, int32_t **out_ids, int64_t *out_len, mc_error *err) {
    if (model == NULL || prompts == NULL || prompt_len == NULL || opts == NULL || out_ids == NULL || out_len == NULL) {
        return mc_fail(err, MC_ERR_INVALID, "generate: model, prompts, prompt_len, opts and outputs must be given");
    }
    for (int64_t i = 0; i < n_seq; i++) {
        out_ids[i] = NULL;
        out_len[i] = 0;
    }
    mc_status st = check_args(model, prompts, prompt_len, n_seq, opts, err);
    if (st != MC_OK) {
        return st;
    }
    gen_ctx c = {
        .model = model,
        .opts = opts,
        .n_seq = n_seq,
        .n_vocab = mc_model_config(model)->vocab_size,
        .eos = opts->eos_ids,
        .n_eos = opts->n_eos_ids,
        .cfg_eos = mc_model_config(model)->eos_token_id,
    };
    const char *host_sampling = getenv("MAMBAC_HOST_SAMPLING");
    c.on_device = mc_model_samples_on_device(model) &&
                  (host_sampling == NULL || host_sampling[0] == '\0' || strcmp(host_sampling, "0") == 0);
    st = ctx_alloc(&c, prompts, prompt_len, err);
    if (st == MC_OK) {
        st = prefill_all(&c, err);
    }
    if (st == MC_OK) {
        st = decode_all(&c, err);
    }
    if (st == MC_OK) {
        st = take_outputs(&c, out_ids, out_len, err);
    }
    if (st != MC_OK) {
        for (int64_t i = 0; i < n_seq; i++) {
            free(out_ids[i]);
            out_ids[i] = NULL;
            out_len[i] = 0;
        }
    } else if (opts->stats != NULL) {
        *opts->stats = c.stats;
    }
    ctx_free(&c);
    return st;
}
