// The forward walk (spec §3, design "The forward pass"): embed → per layer rmsnorm → in_proj → conv1d+silu →
// x_proj → dt_proj → selective scan (softplus, D skip, SiLU(z) gate) → out_proj + residual → final norm → lm_head.
// Long inputs run in chunks that carry the state, so memory does not grow with the number of tokens.
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/error.h"
#include "model/model.h"

#define MC_CHUNK_TOKENS 128 // positions per sequence per chunk: bounds the scratch

typedef struct scratch {
    float *hidden; // [Bt, T, H] residual stream, f32 always (spec §3.3)
    float *normed; // [Bt, T, H]
    float *xz;     // [Bt, T, 2E] in_proj output: x then z
    float *u;      // [Bt, T, E] conv + silu output
    float *q;      // [Bt, T, R + 2N] x_proj output: δ, B, C
    float *dt;     // [Bt, T, E] dt_proj output before bias and softplus
    float *y;      // [Bt, T, E] gated scan output
    float *out;    // [Bt, T, H]
} scratch;

// Carves the scratch for `rows` positions out of one buffer the state keeps between calls (grown when a call
// needs more rows), so a decode step allocates nothing.
static mc_status scratch_get(scratch *s, int32_t **chunk_ids, mc_state *state, const mc_config *c, int64_t rows,
                             mc_error *err) {
    const int64_t H = c->hidden_size, E = c->intermediate_size, RN = c->time_step_rank + 2 * c->state_size;
    const int64_t per_row = 3 * H + 5 * E + RN + 1; // the +1 holds the row's token id
    if (rows > state->scratch_rows) {
        float *grown = malloc((size_t)(rows * per_row) * sizeof(float));
        if (grown == NULL) {
            return mc_fail(err, MC_ERR_NOMEM, "forward: cannot allocate scratch for %lld rows", (long long)rows);
        }
        free(state->scratch);
        state->scratch = grown;
        state->scratch_rows = rows;
    }
    float *p = state->scratch;
    s->hidden = p;
    s->normed = p += rows * H;
    s->xz = p += rows * H;
    s->u = p += rows * 2 * E;
    s->q = p += rows * E;
    s->dt = p += rows * RN;
    s->y = p += rows * E;
    s->out = p += rows * E;
    *chunk_ids = (int32_t *)(p + rows * H); // int32 and float share size and alignment
    return MC_OK;
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

// Runs `call`; while the state is profiling, its wall time is added to part `part`.
#define TIMED(state, part, call)                                                                                     \
    do {                                                                                                             \
        const int64_t t0_ = (state)->profiling ? now_ns() : 0;                                                       \
        call;                                                                                                        \
        if ((state)->profiling) {                                                                                    \
            (state)->profile_ns[part] += now_ns() - t0_;                                                             \
        }                                                                                                            \
    } while (0)

// One layer over T positions of Bt sequences; hidden is updated in place.
static void layer_forward(const mc_model *m, int64_t li, mc_state *state, scratch *s, int64_t Bt, int64_t T) {
    const mc_config *c = &m->cfg;
    const mc_ops *ops = m->ops;
    const mc_exec *ex = &m->exec;
    const mc_layer *l = &m->layers[li];
    const int64_t H = c->hidden_size, E = c->intermediate_size, N = c->state_size, R = c->time_step_rank,
                  K = c->conv_kernel, RN = R + 2 * N, M = Bt * T;
    // The previous layer's mixer output joins the residual stream here, fused with this layer's norm.
    TIMED(state, MC_PROFILE_NORM,
          ops->rmsnorm(ex, s->normed, s->hidden, li > 0 ? s->out : NULL, l->norm, M, H, (float)c->layer_norm_epsilon));
    TIMED(state, MC_PROFILE_IN_PROJ, ops->matmul(ex, s->xz, s->normed, H, &l->in_proj, l->in_bias, M, 2 * E, H));
    float *conv_states = state->conv + li * state->n_seq * E * K; // [Bt, E, K] of this layer
    float *ssm_states = state->ssm + li * state->n_seq * E * N;   // [Bt, E, N]
    if (T == 1) { // a decode step: all sequences in one call
        TIMED(state, MC_PROFILE_CONV,
              ops->conv1d_step(ex, s->u, conv_states, s->xz, 2 * E, l->conv_w, l->conv_b, Bt, E, K));
    }
    for (int64_t b = 0; T > 1 && b < Bt; b++) {
        TIMED(state, MC_PROFILE_CONV,
              ops->conv1d(ex, s->u + b * T * E, conv_states + b * E * K, s->xz + b * T * 2 * E, 2 * E, l->conv_w,
                          l->conv_b, T, E, K));
    }
    TIMED(state, MC_PROFILE_X_PROJ, ops->matmul(ex, s->q, s->u, E, &l->x_proj, NULL, M, RN, E));
    TIMED(state, MC_PROFILE_DT_PROJ, ops->matmul(ex, s->dt, s->q, RN, &l->dt_proj, NULL, M, E, R));
    if (T == 1) {
        TIMED(state, MC_PROFILE_SCAN,
              ops->selective_scan_step(ex, s->y, ssm_states, s->u, s->dt, l->dt_bias, l->A, s->q + R, s->q + R + N,
                                       RN, l->D, s->xz + E, 2 * E, Bt, E, N));
    }
    for (int64_t b = 0; T > 1 && b < Bt; b++) {
        const float *qb = s->q + b * T * RN;
        TIMED(state, MC_PROFILE_SCAN,
              ops->selective_scan(ex, s->y + b * T * E, ssm_states + b * E * N, s->u + b * T * E, s->dt + b * T * E,
                                  l->dt_bias, l->A, qb + R, qb + R + N, RN, l->D, s->xz + b * T * 2 * E + E, 2 * E, T,
                                  E, N));
    }
    // Added to hidden by the next norm.
    TIMED(state, MC_PROFILE_OUT_PROJ, ops->matmul(ex, s->out, s->y, E, &l->out_proj, l->out_bias, M, H, E));
}

// Copies ids[b, t0 .. t0+T) for every sequence into a contiguous [Bt, T] block and embeds it.
static void embed_chunk(const mc_model *m, scratch *s, int32_t *chunk_ids, const int32_t *ids, int64_t Bt,
                        int64_t n_tok, int64_t t0, int64_t T) {
    for (int64_t b = 0; b < Bt; b++) {
        memcpy(chunk_ids + b * T, ids + b * n_tok + t0, (size_t)T * sizeof(int32_t));
    }
    m->ops->embed(&m->exec, s->hidden, &m->embed, chunk_ids, Bt * T, m->cfg.hidden_size);
}

mc_status mc_model_forward(const mc_model *m, mc_state *state, const int32_t *ids, int64_t n_seq, int64_t n_tok,
                           bool all_logits, float *logits, mc_error *err) {
    const mc_config *c = &m->cfg;
    const int64_t H = c->hidden_size, V = c->vocab_size;
    const mc_exec *ex = &m->exec;
    const float eps = (float)c->layer_norm_epsilon;
    if (n_seq < 1 || n_tok < 1) {
        return mc_fail(err, MC_ERR_INVALID, "forward: need at least one sequence and one token (got %lld x %lld)",
                       (long long)n_seq, (long long)n_tok);
    }
    if (state->n_seq != n_seq || state->n_layer != c->num_hidden_layers || state->d_inner != c->intermediate_size ||
        state->d_conv != c->conv_kernel || state->d_state != c->state_size) {
        return mc_fail(err, MC_ERR_INVALID, "forward: the state does not fit this model and batch of %lld",
                       (long long)n_seq);
    }
    for (int64_t i = 0; i < n_seq * n_tok; i++) {
        if (ids[i] < 0 || ids[i] >= V) {
            return mc_fail(err, MC_ERR_INVALID, "token id %d (sequence %lld, position %lld) is outside the vocabulary "
                                                "[0, %lld)", ids[i], (long long)(i / n_tok), (long long)(i % n_tok),
                           (long long)V);
        }
    }
    const int64_t chunk = n_tok < MC_CHUNK_TOKENS ? n_tok : MC_CHUNK_TOKENS;
    scratch s = { 0 };
    int32_t *chunk_ids = NULL;
    mc_status st = scratch_get(&s, &chunk_ids, state, c, n_seq * chunk, err);
    if (st != MC_OK) {
        return st;
    }
    for (int64_t t0 = 0; t0 < n_tok; t0 += chunk) {
        const int64_t T = n_tok - t0 < chunk ? n_tok - t0 : chunk;
        TIMED(state, MC_PROFILE_EMBED, embed_chunk(m, &s, chunk_ids, ids, n_seq, n_tok, t0, T));
        for (int64_t li = 0; li < c->num_hidden_layers; li++) {
            layer_forward(m, li, state, &s, n_seq, T);
        }
        // The last layer's output joins the stream: the final norm then reads hidden alone.
        TIMED(state, MC_PROFILE_NORM, m->ops->rmsnorm(ex, s.normed, s.hidden, s.out, m->norm_f, n_seq * T, H, eps));
        if (logits == NULL) {
            continue;
        }
        if (all_logits) {
            for (int64_t b = 0; b < n_seq; b++) {
                TIMED(state, MC_PROFILE_LM_HEAD,
                      m->ops->matmul(ex, logits + (b * n_tok + t0) * V, s.normed + b * T * H, H, &m->lm_head, NULL, T,
                                     V, H));
            }
        } else if (t0 + T == n_tok) { // only the last position of each sequence
            for (int64_t b = 0; b < n_seq; b++) {
                memmove(s.normed + b * H, s.normed + (b * T + T - 1) * H, (size_t)H * sizeof(float));
            }
            TIMED(state, MC_PROFILE_LM_HEAD, m->ops->matmul(ex, logits, s.normed, H, &m->lm_head, NULL, n_seq, V, H));
        }
    }
    return MC_OK;
}
