// The forward walk (spec §3, design "The forward pass"): embed → per layer rmsnorm → in_proj → conv1d+silu →
// x_proj → dt_proj → selective scan (softplus, D skip, SiLU(z) gate) → out_proj + residual → final norm → lm_head.
// Long inputs run in chunks that carry the state, so memory does not grow with the number of tokens.
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/checked.h"
#include "base/error.h"
#include "model/forward_sample.h"
#include "model/model.h"

#define MC_CHUNK_TOKENS 128 // positions per sequence per chunk on a host backend: bounds the scratch
// On a device a chunk holds as many rows (sequences × positions, at least MC_CHUNK_TOKENS positions) as fit this
// much scratch, rounded down to a power of two: the products then have thousands of rows and the scan long
// stretches of time to spread over the GPU, in fewer launches (~40 KB a row for the 130m shape: 32768 rows, 1.3 GB;
// on an H100 prefill 16 × 2048 ran 11% faster than with 4096 rows).
#define MC_DEVICE_CHUNK_BYTES (2ll << 30)
#define MC_HEAD_ROWS 256 // rows of all-position logits per head product on a device: bounds the logits scratch

typedef struct scratch {
    float *hidden; // [Bt, T, H] residual stream, f32 always (spec §3.3)
    float *normed; // [Bt, T, H]
    float *xz;     // [Bt, T, 2E] in_proj output: x then z
    float *u;      // [Bt, T, E] conv + silu output
    float *q;      // [Bt, T, R + 2N] x_proj output: δ, B, C
    float *dt;     // [Bt, T, E] dt_proj output before bias and softplus
    float *y;      // [Bt, T, E] gated scan output
    float *out;    // [Bt, T, H]
    int32_t *ids;  // [Bt, T] the chunk's ids, on a device backend only
    float *logits; // [max(T, Bt), V] on a device backend only (host backends write the caller's buffer)
} scratch;

// Floats of scratch a row of a chunk takes (the buffers of struct scratch before the ids and logits).
static int64_t scratch_per_row(const mc_config *c) {
    return 3 * c->hidden_size + 5 * c->intermediate_size + c->time_step_rank + 2 * c->state_size;
}

// Carves the scratch for Bt sequences of T positions out of one buffer in the backend's memory that the state keeps
// between calls (grown when a call needs more), so a decode step allocates nothing.
static mc_status scratch_get(scratch *s, mc_state *state, const mc_model *m, int64_t Bt, int64_t T, mc_error *err) {
    const mc_config *c = &m->cfg;
    const int64_t H = c->hidden_size, E = c->intermediate_size, RN = c->time_step_rank + 2 * c->state_size;
    const int64_t rows = Bt * T, per_row = scratch_per_row(c);
    const int64_t head_rows = T < MC_HEAD_ROWS ? T : MC_HEAD_ROWS;
    const int64_t device_rows = m->ops->host_memory ? 0 : (head_rows > Bt ? head_rows : Bt);
    const int64_t need = rows * per_row + (m->ops->host_memory ? 0 : rows + device_rows * c->vocab_size);
    if (need > state->scratch_rows) { // scratch_rows counts floats
        void *grown = NULL;
        mc_status st = m->ops->alloc(&state->exec, &grown, (size_t)need * sizeof(float));
        if (st != MC_OK) {
            return mc_fail(err, st, "forward: cannot allocate scratch for %lld positions", (long long)rows);
        }
        m->ops->free(&state->exec, state->scratch);
        state->scratch = grown;
        state->scratch_rows = need;
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
    p += rows * H;
    s->ids = m->ops->host_memory ? NULL : (int32_t *)p; // int32 and float share size and alignment
    s->logits = m->ops->host_memory ? NULL : p + rows;
    return MC_OK;
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

// Runs the op `call` and returns its status when it fails; while the state is profiling, the op's wall time
// (waited for on a device) is added to part `part`.
#define RUN(state, part, call)                                                                                       \
    do {                                                                                                             \
        const int64_t t0_ = (state)->profiling ? now_ns() : 0;                                                       \
        mc_status st_ = (call);                                                                                      \
        if (st_ == MC_OK && (state)->profiling) {                                                                    \
            st_ = (state)->ops->sync(&(state)->exec);                                                                \
            (state)->profile_ns[part] += now_ns() - t0_;                                                             \
        }                                                                                                            \
        if (st_ != MC_OK) {                                                                                          \
            return st_;                                                                                              \
        }                                                                                                            \
    } while (0)

// One layer over T positions of Bt sequences; hidden is updated in place.
static mc_status layer_forward(const mc_model *m, int64_t li, mc_state *state, const scratch *s, int64_t Bt,
                               int64_t T) {
    const mc_config *c = &m->cfg;
    const mc_ops *ops = m->ops;
    const mc_exec *ex = &state->exec;
    const mc_layer *l = &m->layers[li];
    const int64_t H = c->hidden_size, E = c->intermediate_size, N = c->state_size, R = c->time_step_rank,
                  K = c->conv_kernel, RN = R + 2 * N, M = Bt * T;
    // The previous layer's mixer output joins the residual stream here, fused with this layer's norm.
    RUN(state, MC_PROFILE_NORM,
        ops->rmsnorm(ex, s->normed, s->hidden, li > 0 ? s->out : NULL, l->norm, M, H, (float)c->layer_norm_epsilon));
    RUN(state, MC_PROFILE_IN_PROJ, ops->matmul(ex, s->xz, s->normed, H, &l->in_proj, l->in_bias, M, 2 * E, H));
    float *conv_states = state->conv + li * state->n_seq * E * K; // [Bt, E, K] of this layer
    float *ssm_states = state->ssm + li * state->n_seq * E * N;   // [Bt, E, N]
    if (T == 1) { // a decode step
        RUN(state, MC_PROFILE_CONV, ops->conv1d_step(ex, s->u, conv_states, s->xz, 2 * E, l->conv_w, l->conv_b, Bt, E, K));
    } else {
        RUN(state, MC_PROFILE_CONV,
            ops->conv1d(ex, s->u, conv_states, s->xz, 2 * E, l->conv_w, l->conv_b, Bt, T, E, K));
    }
    RUN(state, MC_PROFILE_X_PROJ, ops->matmul(ex, s->q, s->u, E, &l->x_proj, NULL, M, RN, E));
    if (T == 1 && ops->selective_scan_step_dt != NULL && !state->profiling) { // dt_proj inside the step (profiling
        // times the two apart, below)
        RUN(state, MC_PROFILE_SCAN,
            ops->selective_scan_step_dt(ex, s->y, ssm_states, s->u, s->q, RN, &l->dt_proj, l->dt_bias, l->A, l->D,
                                        s->xz + E, 2 * E, Bt, E, N, R));
        RUN(state, MC_PROFILE_OUT_PROJ, ops->matmul(ex, s->out, s->y, E, &l->out_proj, l->out_bias, M, H, E));
        return MC_OK;
    }
    RUN(state, MC_PROFILE_DT_PROJ, ops->matmul(ex, s->dt, s->q, RN, &l->dt_proj, NULL, M, E, R));
    if (T == 1) {
        RUN(state, MC_PROFILE_SCAN,
            ops->selective_scan_step(ex, s->y, ssm_states, s->u, s->dt, l->dt_bias, l->A, s->q + R, s->q + R + N, RN,
                                     l->D, s->xz + E, 2 * E, Bt, E, N));
    } else {
        RUN(state, MC_PROFILE_SCAN,
            ops->selective_scan(ex, s->y, ssm_states, s->u, s->dt, l->dt_bias, l->A, s->q + R, s->q + R + N, RN, l->D,
                                s->xz + E, 2 * E, Bt, T, E, N));
    }
    // Added to hidden by the next norm.
    RUN(state, MC_PROFILE_OUT_PROJ, ops->matmul(ex, s->out, s->y, E, &l->out_proj, l->out_bias, M, H, E));
    return MC_OK;
}

// Embeds ids[b, t0 .. t0+T) of every sequence: read in place on a host backend, uploaded on a device.
static mc_status embed_chunk(const mc_model *m, mc_state *state, const scratch *s, const int32_t *ids, int64_t Bt,
                             int64_t n_tok, int64_t t0, int64_t T) {
    const mc_exec *ex = &state->exec;
    if (m->ops->host_memory) {
        return m->ops->embed(ex, s->hidden, &m->embed, ids + t0, n_tok, Bt, T, m->cfg.hidden_size);
    }
    for (int64_t b = 0; b < Bt; b++) {
        mc_status st = m->ops->upload(ex, s->ids + b * T, ids + b * n_tok + t0, (size_t)T * sizeof(int32_t));
        if (st != MC_OK) {
            return st;
        }
    }
    return m->ops->embed(ex, s->hidden, &m->embed, s->ids, T, Bt, T, m->cfg.hidden_size);
}

// The head over M rows of normed (ldx apart) into dst [M, V] in host memory: directly on a host backend; on a
// device through the scratch's logits rows, up to MC_HEAD_ROWS (or M when it is a batch's last positions) a product,
// each downloaded.
static mc_status head_rows(const mc_model *m, mc_state *state, const scratch *s, float *dst, const float *x,
                           int64_t ldx, int64_t M) {
    const mc_exec *ex = &state->exec;
    const int64_t H = m->cfg.hidden_size, V = m->cfg.vocab_size;
    if (m->ops->host_memory) {
        return m->ops->matmul(ex, dst, x, ldx, &m->lm_head, NULL, M, V, H);
    }
    const int64_t block = M < MC_HEAD_ROWS || ldx != H ? M : MC_HEAD_ROWS;
    mc_status st = MC_OK;
    for (int64_t r0 = 0; st == MC_OK && r0 < M; r0 += block) {
        const int64_t rows = M - r0 < block ? M - r0 : block;
        st = m->ops->matmul(ex, s->logits, x + r0 * ldx, ldx, &m->lm_head, NULL, rows, V, H);
        st = st != MC_OK ? st : m->ops->download(ex, dst + r0 * V, s->logits, (size_t)(rows * V) * sizeof(float));
    }
    return st;
}

// A device chunk's rows: MAMBAC_CHUNK_ROWS (128 to 1048576) when set, for benchmarks that weigh the scratch's size
// against fewer, longer launches; else what fits MC_DEVICE_CHUNK_BYTES.
static int64_t device_chunk_rows(const mc_config *c) {
    const char *v = getenv("MAMBAC_CHUNK_ROWS");
    const long long n = v != NULL ? atoll(v) : 0;
    if (n >= 128 && n <= 1048576) {
        return (int64_t)n;
    }
    const int64_t fit = MC_DEVICE_CHUNK_BYTES / (scratch_per_row(c) * (int64_t)sizeof(float));
    int64_t rows = 1;
    while (rows * 2 <= fit) {
        rows *= 2;
    }
    return rows;
}

// Positions per sequence in each chunk of n_tok (see MC_CHUNK_TOKENS, MC_DEVICE_CHUNK_BYTES).
static int64_t chunk_tokens(const mc_model *m, const mc_state *state, int64_t n_seq, int64_t n_tok) {
    int64_t t = MC_CHUNK_TOKENS;
    if (!m->ops->host_memory && state->chunk_rows > 0) { // a test's size: any number of positions
        t = state->chunk_rows / n_seq > 0 ? state->chunk_rows / n_seq : 1;
    } else if (!m->ops->host_memory && n_tok > MC_CHUNK_TOKENS) { // decode steps and short prompts need not ask
        const int64_t per_seq = device_chunk_rows(&m->cfg) / n_seq;
        t = per_seq > MC_CHUNK_TOKENS ? per_seq : MC_CHUNK_TOKENS;
    }
    return n_tok < t ? n_tok : t;
}

// The calls of one decode step on a device, from the uploaded ids to the head's rows in the device scratch.
static mc_status step_calls(const mc_model *m, mc_state *state, const scratch *s, int64_t n_seq, bool head) {
    const mc_exec *ex = &state->exec;
    const int64_t H = m->cfg.hidden_size;
    mc_status st = m->ops->embed(ex, s->hidden, &m->embed, s->ids, 1, n_seq, 1, H);
    for (int64_t li = 0; st == MC_OK && li < m->cfg.num_hidden_layers; li++) {
        st = layer_forward(m, li, state, s, n_seq, 1);
    }
    if (st == MC_OK) {
        st = m->ops->rmsnorm(ex, s->normed, s->hidden, s->out, m->norm_f, n_seq, H, (float)m->cfg.layer_norm_epsilon);
    }
    if (st == MC_OK && head) {
        st = m->ops->matmul(ex, s->logits, s->normed, H, &m->lm_head, NULL, n_seq, m->cfg.vocab_size, H);
    }
    return st;
}

static uint64_t mix64(uint64_t h, uint64_t v) { // splitmix64 finaliser over the running hash
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    return h ^ (h >> 31);
}

// A decode step on a device with recorded calls (issue 9 §2.4): the ids go up, the step's launches are recorded
// once per (model, state buffers, batch, head or not) and replayed as one graph launch, the logits come down (when
// logits is given; with keep they stay in s->logits for the sample op instead).
// Everything the recording touches by address is fixed by that key: the model's weights (uid), the state's conv,
// ssm and scratch (scratch pointer and n_seq fix its layout; conv and ssm live as long as the state's context).
static mc_status decode_step_recorded(const mc_model *m, mc_state *state, const scratch *s, const int32_t *ids,
                                      int64_t n_seq, float *logits, bool keep) {
    const mc_ops *ops = m->ops;
    const mc_exec *ex = &state->exec;
    mc_status st = ops->upload(ex, s->ids, ids, (size_t)n_seq * sizeof(int32_t));
    if (st != MC_OK) {
        return st;
    }
    uint64_t key = mix64(mix64(mix64(0, m->uid), (uint64_t)(uintptr_t)state->scratch), (uint64_t)n_seq);
    const bool head = logits != NULL || keep;
    key = mix64(key, head);
    bool replayed = false;
    st = ops->graph_begin(ex, key, &replayed);
    if (st == MC_OK && !replayed) {
        st = step_calls(m, state, s, n_seq, head);
        mc_status end = ops->graph_end(ex, st == MC_OK);
        st = st != MC_OK ? st : end;
    }
    if (st == MC_OK && logits != NULL) {
        st = ops->download(ex, logits, s->logits, (size_t)(n_seq * m->cfg.vocab_size) * sizeof(float));
    }
    return st != MC_OK || keep ? st : ops->sync(ex); // with keep, the sample op that follows waits
}

// keep (device backends, last position only): the head's rows stay in the scratch (s->logits) and nothing is
// downloaded; the caller runs the sample op on them before the next call on the state.
static mc_status forward_chunks(const mc_model *m, mc_state *state, const int32_t *ids, int64_t n_seq, int64_t n_tok,
                                bool all_logits, float *logits, bool keep, const float **kept, mc_error *err) {
    const mc_config *c = &m->cfg;
    const int64_t H = c->hidden_size, V = c->vocab_size;
    const mc_exec *ex = &state->exec;
    const float eps = (float)c->layer_norm_epsilon;
    int64_t chunk = chunk_tokens(m, state, n_seq, n_tok);
    scratch s = { 0 };
    mc_status st = scratch_get(&s, state, m, n_seq, chunk, err);
    // A device without room for the largest chunk's scratch takes chunks half as long, down to one position.
    while (st == MC_ERR_NOMEM && !m->ops->host_memory && chunk > 1) {
        chunk /= 2;
        st = scratch_get(&s, state, m, n_seq, chunk, err);
    }
    if (st != MC_OK) {
        return st;
    }
    if (keep) {
        *kept = s.logits;
    }
    if (n_tok == 1 && m->ops->graph_begin != NULL && !state->profiling) { // all_logits: the same rows when T = 1
        return decode_step_recorded(m, state, &s, ids, n_seq, logits, keep);
    }
    for (int64_t t0 = 0; t0 < n_tok; t0 += chunk) {
        const int64_t T = n_tok - t0 < chunk ? n_tok - t0 : chunk;
        RUN(state, MC_PROFILE_EMBED, embed_chunk(m, state, &s, ids, n_seq, n_tok, t0, T));
        for (int64_t li = 0; li < c->num_hidden_layers; li++) {
            st = layer_forward(m, li, state, &s, n_seq, T);
            if (st != MC_OK) {
                return st;
            }
        }
        // The last layer's output joins the stream: the final norm then reads hidden alone.
        RUN(state, MC_PROFILE_NORM, m->ops->rmsnorm(ex, s.normed, s.hidden, s.out, m->norm_f, n_seq * T, H, eps));
        if (keep && t0 + T == n_tok) { // the last position's rows (T·H apart) into the device scratch
            RUN(state, MC_PROFILE_LM_HEAD,
                m->ops->matmul(ex, s.logits, s.normed + (T - 1) * H, T * H, &m->lm_head, NULL, n_seq, V, H));
        }
        if (logits == NULL) {
            continue;
        }
        if (all_logits) {
            for (int64_t b = 0; b < n_seq; b++) {
                RUN(state, MC_PROFILE_LM_HEAD,
                    head_rows(m, state, &s, logits + (b * n_tok + t0) * V, s.normed + b * T * H, H, T));
            }
        } else if (t0 + T == n_tok) { // only the last position of each sequence: rows T·H apart
            RUN(state, MC_PROFILE_LM_HEAD, head_rows(m, state, &s, logits, s.normed + (T - 1) * H, T * H, n_seq));
        }
    }
    return m->ops->sync(ex);
}

static mc_status forward_check(const mc_model *m, const mc_state *state, const int32_t *ids, int64_t n_seq,
                               int64_t n_tok, mc_error *err) {
    if (m == NULL || state == NULL || ids == NULL) {
        return mc_fail(err, MC_ERR_INVALID, "forward: model, state and ids must be given");
    }
    const mc_config *c = &m->cfg;
    const int64_t V = c->vocab_size;
    int64_t n = 0;
    if (n_seq < 1 || n_tok < 1) {
        return mc_fail(err, MC_ERR_INVALID, "forward: need at least one sequence and one token (got %lld x %lld)",
                       (long long)n_seq, (long long)n_tok);
    }
    if (!mc_mul_i64(n_seq, n_tok, &n) || !mc_mul_i64(n, V, &(int64_t){ 0 })) { // the logits' size must fit too
        return mc_fail(err, MC_ERR_INVALID, "forward: %lld x %lld tokens is too many", (long long)n_seq,
                       (long long)n_tok);
    }
    if (state->n_seq != n_seq || state->n_layer != c->num_hidden_layers || state->d_inner != c->intermediate_size ||
        state->d_conv != c->conv_kernel || state->d_state != c->state_size || state->ops != m->ops) {
        return mc_fail(err, MC_ERR_INVALID, "forward: the state does not fit this model and batch of %lld",
                       (long long)n_seq);
    }
    for (int64_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= V) {
            return mc_fail(err, MC_ERR_INVALID, "token id %d (sequence %lld, position %lld) is outside the vocabulary "
                                                "[0, %lld)", ids[i], (long long)(i / n_tok), (long long)(i % n_tok),
                           (long long)V);
        }
    }
    return MC_OK;
}

mc_status mc_model_forward(const mc_model *m, mc_state *state, const int32_t *ids, int64_t n_seq, int64_t n_tok,
                           bool all_logits, float *logits, mc_error *err) {
    mc_status st = forward_check(m, state, ids, n_seq, n_tok, err);
    if (st != MC_OK) {
        return st;
    }
    state->exec.err = err;
    st = forward_chunks(m, state, ids, n_seq, n_tok, all_logits, logits, false, NULL, err);
    state->exec.err = NULL;
    return st;
}

bool mc_model_samples_on_device(const mc_model *m) {
    return !m->ops->host_memory && m->ops->sample != NULL;
}

mc_status mc_model_forward_sample(const mc_model *m, mc_state *state, const int32_t *ids, int64_t n_seq,
                                  int64_t n_tok, const mc_sample_args *a, const int32_t *prev, const int64_t *prev_off,
                                  const double *uniforms, int32_t *out_ids, mc_error *err) {
    if (!mc_model_samples_on_device(m)) {
        return mc_fail(err, MC_ERR_UNSUPPORTED, "forward: backend %s does not sample on the device", m->ops->name);
    }
    mc_status st = forward_check(m, state, ids, n_seq, n_tok, err);
    if (st != MC_OK) {
        return st;
    }
    state->exec.err = err;
    const float *dev_logits = NULL;
    st = forward_chunks(m, state, ids, n_seq, n_tok, false, NULL, true, &dev_logits, err);
    if (st == MC_OK) {
        const int64_t V = m->cfg.vocab_size;
        st = m->ops->sample(&state->exec, out_ids, dev_logits, V, n_seq, V, a, prev, prev_off, uniforms);
    }
    state->exec.err = NULL;
    return st;
}
