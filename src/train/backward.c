// One training pass over a batch: the forward walk of model/forward.c that keeps each layer's activations (and
// the LoRA branches), the causal-LM loss fused with its logit gradient in row chunks (so [M, V] logits are never
// held whole), and the backward walk through the ops' backward twins (spec §6.1). The scan's inner states are
// recomputed by its backward op, not stored (a backend may keep each chunk's starting state from the forward:
// ops->scan_keep_floats). Every sequence starts from an empty state.
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "kernels/dropout.h"
#include "train/trainer.h"

#define LOSS_ROWS_HOST 64          // positions per logits chunk on the host: [64, V] floats stay in cache
// On a device, logit chunks of 256 MiB to 1 GiB: as few as four where that range allows (each chunk converts the
// [V, H] head for its products), more past 4 GiB of logits.
#define LOSS_FLOATS_DEVICE (1 << 26)
#define LOSS_FLOATS_DEVICE_MAX (1 << 28)
#define LOSS_CHUNKS_DEVICE 4

// Where one batch's buffers lie.
typedef struct acts {
    layer_acts *layer; // [NL]
    float *emb_xa;     // [M, r] s·(embedding LoRA A lookup)
    float *normed;     // [M, H] a layer's norm output (forward and backward)
    float *hfin;       // [M, H] stream after the last layer
    float *normf;      // [M, H]
    float *dh, *dnormed, *dxz, *du, *dq, *ddt, *dy; // backward, reused by every layer
    float *tmp;        // [M, max(2E, H, R + 2N)]; in the backward: u [M, E], then dt [M, E]
    float *tr;         // [M, r]
    float *conv;       // [Bt, E, K] conv window (zero at each layer's start)
    float *h;          // [Bt, E, N] SSM state
    float *zero_conv;  // [Bt, E, K] zeros: the starting window the backward reads
    float *logits;     // [loss_rows, V]
    int64_t loss_rows;
    float *dA;         // [E, N]
    int32_t *ids;      // [M] the batch's ids and targets in the backend's memory
    int32_t *targets;  // [M]
    float *ones;       // [M] ones: a bias gradient alone is dyᵀ · ones
    float *xd;         // [M, max(H, E)] LoRA dropout (only with dropout > 0): the dropped input
    double *loss_sum;  // [1] the loss op's sum and count, in the backend's memory
    int64_t *loss_count;
} acts;

#define TRY(call)                                                                                                    \
    do {                                                                                                             \
        mc_status st_ = (call);                                                                                      \
        if (st_ != MC_OK) {                                                                                          \
            return st_;                                                                                              \
        }                                                                                                            \
    } while (0)

static mc_status acts_get(mc_trainer *t, acts *a, layer_acts *layers, int64_t Bt, int64_t T) {
    const mc_config *c = &t->base->cfg;
    const int64_t H = c->hidden_size, E = c->intermediate_size, N = c->state_size, K = c->conv_kernel,
                  RN = c->time_step_rank + 2 * N, NL = c->num_hidden_layers, V = c->vocab_size, M = Bt * T;
    const int64_t r = t->lora ? t->spec.r : 0;
    int64_t wide = 2 * E > H ? 2 * E : H;
    wide = wide > RN ? wide : RN;
    const int64_t per_layer = H + 3 * E + RN + SITE_COUNT * r;
    const int64_t per_row = NL * per_layer + r + 3 * H + (2 * H + 2 * E + E + RN + 2 * E) + wide + r;
    const int64_t drop = t->lora && t->spec.dropout > 0 ? (H > E ? H : E) : 0;
    int64_t loss_rows = LOSS_ROWS_HOST;
    if (!t->ops->host_memory) {
        const int64_t lo = LOSS_FLOATS_DEVICE / V / 64 * 64, hi = LOSS_FLOATS_DEVICE_MAX / V / 64 * 64;
        const int64_t quarter = (M + LOSS_CHUNKS_DEVICE - 1) / LOSS_CHUNKS_DEVICE;
        loss_rows = (quarter + 63) / 64 * 64;
        loss_rows = loss_rows > hi ? hi : loss_rows;
        loss_rows = loss_rows < lo ? lo : loss_rows;
        loss_rows = loss_rows < LOSS_ROWS_HOST ? LOSS_ROWS_HOST : loss_rows;
    }
    loss_rows = loss_rows < M ? loss_rows : M;
    a->loss_rows = loss_rows;
    const int64_t keep = t->ops->scan_keep_floats != NULL ? t->ops->scan_keep_floats(Bt, T, E, N) : 0;
    const int64_t total = 8 + M * (per_row + 3 + drop) + NL * keep + Bt * E * (2 * K + N) + loss_rows * V + E * N;
    if (total > t->act_rows) { // act_rows counts floats
        float *grown = NULL;
        TRY(t->ops->alloc(&t->exec, (void **)&grown, (size_t)total * sizeof(float)));
        t->ops->free(&t->exec, t->act);
        t->act = grown;
        t->act_rows = total;
    }
    float *p = t->act;
#define TAKE(n) (p += (n), p - (n))
    a->loss_sum = (double *)TAKE(2); // first: 8-byte aligned
    a->loss_count = (int64_t *)TAKE(2);
    for (int64_t l = 0; l < NL; l++) {
        layer_acts *la = &layers[l];
        la->hin = TAKE(M * H);
        la->xz = TAKE(M * 2 * E);
        la->q = TAKE(M * RN);
        la->y = TAKE(M * E);
        for (int s = 0; s < SITE_COUNT; s++) {
            la->xa[s] = TAKE(M * r);
        }
        la->keep = keep > 0 ? TAKE(keep) : NULL;
    }
    a->layer = layers;
    a->emb_xa = TAKE(M * r);
    a->normed = TAKE(M * H);
    a->hfin = TAKE(M * H);
    a->normf = TAKE(M * H);
    a->dh = TAKE(M * H);
    a->dnormed = TAKE(M * H);
    a->dxz = TAKE(M * 2 * E);
    a->du = TAKE(M * E);
    a->dq = TAKE(M * RN);
    a->ddt = TAKE(M * E);
    a->dy = TAKE(M * E);
    a->tmp = TAKE(M * wide);
    a->tr = TAKE(M * r);
    a->conv = TAKE(Bt * E * K);
    a->zero_conv = TAKE(Bt * E * K);
    a->h = TAKE(Bt * E * N);
    a->logits = TAKE(loss_rows * V);
    a->dA = TAKE(E * N);
    a->ids = (int32_t *)TAKE(M); // int32 and float share size and alignment
    a->targets = (int32_t *)TAKE(M);
    a->ones = TAKE(M);
    a->xd = TAKE(M * drop);
#undef TAKE
    return t->ops->zero(&t->exec, a->zero_conv, (size_t)(Bt * E * K) * sizeof(float));
}

// LoRA dropout (PEFT: inverted dropout on the adapter's input, Linear sites only): a->xd = drop(x) with the mask of
// site s of layer li for this call (ops.h dropout), keyed by (seed, call stream, layer, site), so the backward draws
// the same mask again instead of keeping it, and a resumed run draws what the uninterrupted one did.
static uint64_t dropout_key(const mc_trainer *t, int64_t li, int s) {
    return mc_mix64(t->dropout_seed ^ (t->dropout_stream * 0x9E3779B97F4A7C15ull) ^
                    ((uint64_t)li * 0xBF58476D1CE4E5B9ull + (uint64_t)s * 0x94D049BB133111EBull));
}

static mc_status dropped(mc_trainer *t, const acts *a, int64_t li, int s, const float *x, int64_t ldx, int64_t M,
                         int64_t K) {
    return t->ops->dropout(&t->exec, a->xd, x, ldx, M, K, t->spec.dropout, dropout_key(t, li, s));
}

static bool has_dropout(const mc_trainer *t) {
    return t->lora && t->spec.dropout > 0;
}

// y[M, N] += x·Wᵀ (W f32, no bias): the backend's matmul_add where it has one, else matmul into a->tmp and axpby.
static mc_status matmul_add(mc_trainer *t, const acts *a, float *y, const float *x, int64_t ldx, const mc_weight *w,
                            int64_t M, int64_t N, int64_t K) {
    const mc_ops *ops = t->ops;
    if (ops->matmul_add != NULL) {
        return ops->matmul_add(&t->exec, y, x, ldx, w, M, N, K);
    }
    TRY(ops->matmul(&t->exec, a->tmp, x, ldx, w, NULL, M, N, K));
    return ops->axpby(&t->exec, y, 1.0f, a->tmp, 1.0f, M * N);
}

// y[M, N] = x·Wᵀ + bias (+ s·(drop(x)·Aᵀ)·Bᵀ when site s of layer li is adapted; xa keeps s·(drop(x)·Aᵀ)).
static mc_status linear_fwd(mc_trainer *t, const acts *a, int64_t li, int s, const lora_lin *ll, float *xa, float *y,
                            const float *x, int64_t ldx, const mc_weight *w, const float *bias, int64_t M, int64_t N,
                            int64_t K) {
    const mc_ops *ops = t->ops;
    const mc_exec *ex = &t->exec;
    TRY(ops->matmul(ex, y, x, ldx, w, bias, M, N, K));
    if (ll == NULL || !ll->on) {
        return MC_OK;
    }
    const int64_t r = ll->A.rows;
    if (has_dropout(t)) {
        TRY(dropped(t, a, li, s, x, ldx, M, K));
        x = a->xd;
        ldx = K;
    }
    TRY(ops->matmul(ex, xa, x, ldx, &ll->A, NULL, M, r, K));
    TRY(ops->axpby(ex, xa, t->lora_scale, NULL, 0.0f, M * r));
    return matmul_add(t, a, y, xa, r, &ll->B, M, N, r);
}

// dx (=, or += when accumulate) dy·W and, when dw is not NULL, dw += dyᵀ·x and dbias += Σ_rows dy (when not NULL;
// without dw, dbias is left alone): the backend's matmul_bwd where it has one (it shares work between the two),
// else matmul_dw then matmul_dx.
static mc_status matmul_grads(const mc_ops *ops, const mc_exec *ex, float *dx, int64_t lddx, bool accumulate,
                              float *dw, float *dbias, const float *dy, const float *x, int64_t ldx,
                              const mc_weight *w, int64_t M, int64_t N, int64_t K) {
    if (dw != NULL && ops->matmul_bwd != NULL) {
        return ops->matmul_bwd(ex, dx, lddx, accumulate, dw, dbias, dy, x, ldx, w, M, N, K);
    }
    if (dw != NULL) {
        TRY(ops->matmul_dw(ex, dw, dbias, dy, x, ldx, M, N, K));
    }
    return ops->matmul_dx(ex, dx, lddx, dy, w, M, N, K, accumulate);
}

// Backward of linear_fwd: dx (written, or added to when accumulate) from dy; dW, dbias (+=, when not NULL) and the
// adapter's gradients.
static mc_status linear_bwd(mc_trainer *t, const acts *a, int64_t li, int s, const lora_lin *ll, const float *xa,
                            float *dx, int64_t lddx, bool accumulate, float *dw, float *dbias, const float *dy,
                            const float *x, int64_t ldx, const mc_weight *w, int64_t M, int64_t N, int64_t K) {
    const mc_ops *ops = t->ops;
    const mc_exec *ex = &t->exec;
    float *tr = a->tr;
    if (dw == NULL && dbias != NULL) { // a trainable bias of a frozen matrix: Σ_rows dy = dyᵀ · ones
        TRY(ops->matmul_dw(ex, dbias, NULL, dy, a->ones, 1, M, N, 1));
    }
    TRY(matmul_grads(ops, ex, dx, lddx, accumulate, dw, dbias, dy, x, ldx, w, M, N, K));
    if (ll == NULL || !ll->on) {
        return MC_OK;
    }
    const int64_t r = ll->A.rows;
    TRY(ops->matmul_dw(ex, ll->gB, NULL, dy, xa, r, M, N, r)); // dB += dyᵀ · s(drop(x)·Aᵀ)
    TRY(ops->matmul_dx(ex, tr, r, dy, &ll->B, M, N, r, false)); // tr = s · dy·B
    TRY(ops->axpby(ex, tr, t->lora_scale, NULL, 0.0f, M * r));
    if (!has_dropout(t)) {
        TRY(ops->matmul_dw(ex, ll->gA, NULL, tr, x, ldx, M, r, K)); // dA += trᵀ · x
        return ops->matmul_dx(ex, dx, lddx, tr, &ll->A, M, r, K, true); // dx += tr · A
    }
    TRY(dropped(t, a, li, s, x, ldx, M, K)); // the forward's mask again
    TRY(ops->matmul_dw(ex, ll->gA, NULL, tr, a->xd, K, M, r, K)); // dA += trᵀ · drop(x)
    TRY(ops->matmul_dx(ex, a->xd, K, tr, &ll->A, M, r, K, false)); // tr · A, then dropped with that mask into dx
    TRY(ops->dropout(ex, a->xd, a->xd, K, M, K, t->spec.dropout, dropout_key(t, li, s)));
    return ops->axpby(ex, dx, 1.0f, a->xd, 1.0f, M * K);
}

static const lora_lin *site(const mc_trainer *t, int64_t l, int s) {
    return t->lora ? &t->sites[l][s] : NULL;
}

static mc_status forward_keep(mc_trainer *t, const acts *a, const int32_t *ids, int64_t Bt, int64_t T) {
    const mc_model *m = &t->view;
    const mc_config *c = &m->cfg;
    const mc_ops *ops = t->ops;
    const mc_exec *ex = &t->exec;
    const int64_t H = c->hidden_size, E = c->intermediate_size, N = c->state_size, R = c->time_step_rank,
                  K = c->conv_kernel, RN = R + 2 * N, M = Bt * T, NL = c->num_hidden_layers;
    const float eps = (float)c->layer_norm_epsilon;
    TRY(ops->embed(ex, a->layer[0].hin, &m->embed, ids, T, Bt, T, H));
    if (t->emb_on) { // + s·(Aᵀ[id])·Bᵀ, no dropout on this branch (spec §8.4)
        const int64_t r = t->spec.r;
        TRY(ops->embed(ex, a->emb_xa, &t->emb_AT, ids, T, Bt, T, r));
        TRY(ops->axpby(ex, a->emb_xa, t->lora_scale, NULL, 0.0f, M * r));
        TRY(matmul_add(t, a, a->layer[0].hin, a->emb_xa, r, &t->emb_B, M, H, r));
    }
    for (int64_t li = 0; li < NL; li++) {
        const mc_layer *l = &m->layers[li];
        const layer_acts *la = &a->layer[li];
        // hin holds the previous layer's output (layer 0: the embedding); the norm adds the previous hin to it.
        TRY(ops->rmsnorm(ex, a->normed, la->hin, li > 0 ? a->layer[li - 1].hin : NULL, l->norm, M, H, eps));
        TRY(linear_fwd(t, a, li, SITE_IN, site(t, li, SITE_IN), la->xa[SITE_IN], la->xz, a->normed, H, &l->in_proj,
                       l->in_bias, M, 2 * E, H));
        const size_t conv_bytes = (size_t)(Bt * E * K) * sizeof(float), ssm_bytes = (size_t)(Bt * E * N) * sizeof(float);
        if (t->carry_rows > 0) { // the state the previous call left behind
            TRY(ops->copy(ex, a->conv, t->carry_conv + li * Bt * E * K, conv_bytes));
            TRY(ops->copy(ex, a->h, t->carry_ssm + li * Bt * E * N, ssm_bytes));
        } else {
            TRY(ops->zero(ex, a->conv, conv_bytes));
            TRY(ops->zero(ex, a->h, ssm_bytes));
        }
        // u and dt live in backward buffers that are free until the backward, which recomputes them.
        float *u = a->du, *dt = a->ddt;
        TRY(ops->conv1d(ex, u, a->conv, la->xz, 2 * E, l->conv_w, l->conv_b, Bt, T, E, K));
        TRY(linear_fwd(t, a, li, SITE_X, site(t, li, SITE_X), la->xa[SITE_X], la->q, u, E, &l->x_proj, NULL, M, RN,
                       E));
        TRY(ops->matmul(ex, dt, la->q, RN, &l->dt_proj, NULL, M, E, R));
        if (la->keep != NULL) {
            TRY(ops->selective_scan_keep(ex, la->y, a->h, u, dt, l->dt_bias, l->A, la->q + R, la->q + R + N, RN, l->D,
                                         la->xz + E, 2 * E, Bt, T, E, N, la->keep));
        } else {
            TRY(ops->selective_scan(ex, la->y, a->h, u, dt, l->dt_bias, l->A, la->q + R, la->q + R + N, RN, l->D,
                                    la->xz + E, 2 * E, Bt, T, E, N));
        }
        if (t->carry_rows > 0) { // where the next call starts (truncated: no gradient flows back into it)
            TRY(ops->copy(ex, t->next_conv + li * Bt * E * K, a->conv, conv_bytes));
            TRY(ops->copy(ex, t->next_ssm + li * Bt * E * N, a->h, ssm_bytes));
        }
        float *out = li + 1 < NL ? a->layer[li + 1].hin : a->hfin;
        TRY(linear_fwd(t, a, li, SITE_OUT, site(t, li, SITE_OUT), la->xa[SITE_OUT], out, la->y, E, &l->out_proj,
                       l->out_bias, M, H, E));
    }
    return ops->rmsnorm(ex, a->normf, a->hfin, a->layer[NL - 1].hin, m->norm_f, M, H, eps);
}

// The loss over every position, a->loss_rows rows of logits at a time: Σ NLL, the count, the head's gradients, and
// dnormed = ∂/∂normf.
static mc_status loss_bwd(mc_trainer *t, const acts *a, const int32_t *targets, int64_t M, double scale,
                          double *nll_sum, int64_t *n_targets) {
    const mc_model *m = &t->view;
    const int64_t H = m->cfg.hidden_size, V = m->cfg.vocab_size;
    const mc_ops *ops = t->ops;
    const mc_exec *ex = &t->exec;
    // The sum and count live in the backend's memory (the op adds to them there) and come back once at the end.
    double *sum = a->loss_sum;
    int64_t *count = a->loss_count;
    TRY(ops->zero(ex, sum, sizeof(double)));
    TRY(ops->zero(ex, count, sizeof(int64_t)));
    for (int64_t r0 = 0; r0 < M; r0 += a->loss_rows) {
        const int64_t rows = M - r0 < a->loss_rows ? M - r0 : a->loss_rows;
        TRY(ops->matmul(ex, a->logits, a->normf + r0 * H, H, &m->lm_head, NULL, rows, V, H));
        TRY(ops->cross_entropy(ex, a->logits, sum, count, a->logits, targets + r0, rows, V, (float)scale));
        TRY(matmul_grads(ops, ex, a->dnormed + r0 * H, H, false, t->g_head, NULL, a->logits, a->normf + r0 * H, H,
                         &m->lm_head, rows, V, H));
    }
    TRY(ops->download(ex, nll_sum, sum, sizeof(double)));
    return ops->download(ex, n_targets, count, sizeof(int64_t));
}

static mc_status backward(mc_trainer *t, const acts *a, const int32_t *ids, int64_t Bt, int64_t T) {
    const mc_model *m = &t->view;
    const mc_config *c = &m->cfg;
    const mc_ops *ops = t->ops;
    const mc_exec *ex = &t->exec;
    const int64_t H = c->hidden_size, E = c->intermediate_size, N = c->state_size, R = c->time_step_rank,
                  K = c->conv_kernel, RN = R + 2 * N, M = Bt * T, NL = c->num_hidden_layers, V = c->vocab_size;
    const float eps = (float)c->layer_norm_epsilon;
    // Frozen small parameters' gradients land in junk (the ops always write them).
    float *junk_h = t->junk, *junk_conv = junk_h + H, *junk_e = junk_conv + E * K, *junk_en = junk_e + 3 * E;
    TRY(ops->zero(ex, a->dh, (size_t)(M * H) * sizeof(float)));
    TRY(ops->rmsnorm_bwd(ex, a->dh, t->g_norm_f != NULL ? t->g_norm_f : junk_h, a->dnormed, a->hfin, m->norm_f, M, H,
                         eps));
    for (int64_t li = NL - 1; li >= 0; li--) {
        const mc_layer *l = &m->layers[li];
        const layer_grads *g = &t->lg[li];
        const layer_acts *la = &a->layer[li];
        // dh is ∂/∂(this layer's output): out_proj back to dy.
        TRY(linear_bwd(t, a, li, SITE_OUT, site(t, li, SITE_OUT), la->xa[SITE_OUT], a->dy, E, false, g->out_proj, g->out_bias,
                       a->dh, la->y, E, &l->out_proj, M, H, E));
        // The forward's u and dt again (same ops on the same inputs: the same values).
        float *u = a->tmp, *dt = a->tmp + M * E;
        const float *conv0 = t->carry_rows > 0 ? t->carry_conv + li * Bt * E * K : a->zero_conv;
        TRY(ops->copy(ex, a->conv, conv0, (size_t)(Bt * E * K) * sizeof(float)));
        TRY(ops->conv1d(ex, u, a->conv, la->xz, 2 * E, l->conv_w, l->conv_b, Bt, T, E, K));
        TRY(ops->matmul(ex, dt, la->q, RN, &l->dt_proj, NULL, M, E, R));
        // The scan writes du, ddt, dz (into dxz's z half), dB and dC (into dq's B and C columns).
        float *dA = g->A_log != NULL ? a->dA : junk_en;
        if (g->A_log != NULL) {
            TRY(ops->zero(ex, a->dA, (size_t)(E * N) * sizeof(float)));
        }
        float *dD = g->D != NULL ? g->D : junk_e, *ddt_bias = g->dt_bias != NULL ? g->dt_bias : junk_e + E;
        const float *h0 = t->carry_rows > 0 ? t->carry_ssm + li * Bt * E * N : NULL;
        if (la->keep != NULL) { // the forward's chunk states: no first pass
            TRY(ops->selective_scan_bwd_kept(ex, a->du, a->ddt, a->dxz + E, a->dq + R, a->dq + R + N, dA, dD, ddt_bias,
                                             NULL, a->dy, NULL, u, dt, l->dt_bias, l->A, la->q + R, la->q + R + N, RN,
                                             l->D, la->xz + E, 2 * E, h0, Bt, T, E, N, la->keep));
        } else {
            TRY(ops->selective_scan_bwd(ex, a->du, a->ddt, a->dxz + E, a->dq + R, a->dq + R + N, dA, dD, ddt_bias,
                                        NULL, a->dy, NULL, u, dt, l->dt_bias, l->A, la->q + R, la->q + R + N, RN, l->D,
                                        la->xz + E, 2 * E, h0, Bt, T, E, N));
        }
        if (g->A_log != NULL) { // A = −exp(A_log): ∂/∂A_log = ∂/∂A · A
            TRY(ops->mul_acc(ex, g->A_log, a->dA, l->A, E * N));
        }
        // dt_proj: dq's δ columns (written) and its weight.
        TRY(linear_bwd(t, a, li, -1, NULL, NULL, a->dq, RN, false, g->dt_proj, NULL, a->ddt, la->q, RN, &l->dt_proj, M, E,
                       R));
        // x_proj: adds into du.
        TRY(linear_bwd(t, a, li, SITE_X, site(t, li, SITE_X), la->xa[SITE_X], a->du, E, true, g->x_proj, NULL, a->dq, u,
                       E, &l->x_proj, M, RN, E));
        // conv1d + SiLU: dx into dxz's x half.
        TRY(ops->conv1d_bwd(ex, a->dxz, g->conv_w != NULL ? g->conv_w : junk_conv,
                            l->conv_b != NULL ? (g->conv_b != NULL ? g->conv_b : junk_e + 2 * E) : NULL, NULL, a->du,
                            NULL, la->xz, 2 * E, conv0, l->conv_w, l->conv_b, Bt, T, E, K));
        // in_proj back to the normed input (the norm's output recomputed).
        TRY(ops->rmsnorm(ex, a->normed, la->hin, NULL, l->norm, M, H, eps));
        TRY(linear_bwd(t, a, li, SITE_IN, site(t, li, SITE_IN), la->xa[SITE_IN], a->dnormed, H, false, g->in_proj, g->in_bias,
                       a->dxz, a->normed, H, &l->in_proj, M, 2 * E, H));
        // The norm adds its branch to dh, which then is ∂/∂(this layer's input stream).
        TRY(ops->rmsnorm_bwd(ex, a->dh, g->norm != NULL ? g->norm : junk_h, a->dnormed, la->hin, l->norm, M, H, eps));
    }
    if (t->g_embed != NULL) {
        TRY(ops->embed_bwd(ex, t->g_embed, a->dh, ids, M, V, H));
    }
    if (t->emb_on) { // out += s·(Aᵀ[id])·Bᵀ: dB += dhᵀ · s(Aᵀ[id]); dAᵀ[id] += s · dh·B
        const int64_t r = t->spec.r;
        TRY(ops->matmul_dw(ex, t->g_emb_B, NULL, a->dh, a->emb_xa, r, M, H, r));
        TRY(ops->matmul_dx(ex, a->tr, r, a->dh, &t->emb_B, M, H, r, false));
        TRY(ops->axpby(ex, a->tr, t->lora_scale, NULL, 0.0f, M * r));
        TRY(ops->embed_bwd(ex, t->g_emb_AT, a->tr, ids, M, V, r));
    }
    return MC_OK;
}

mc_status mc_trainer_run(mc_trainer *t, const int32_t *ids, const int32_t *targets, int64_t Bt, int64_t T,
                         double scale, double *nll_sum, int64_t *n_targets) {
    const int64_t NL = t->base->cfg.num_hidden_layers;
    layer_acts *layers = calloc((size_t)NL, sizeof(*layers));
    if (layers == NULL) {
        return mc_fail(t->exec.err, MC_ERR_NOMEM, "train: out of memory");
    }
    acts a;
    const size_t id_bytes = (size_t)(Bt * T) * sizeof(int32_t);
    mc_status st = acts_get(t, &a, layers, Bt, T);
    if (st == MC_OK) st = t->ops->upload(&t->exec, a.ids, ids, id_bytes);
    if (st == MC_OK) st = t->ops->upload(&t->exec, a.targets, targets, id_bytes);
    float *ones = st == MC_OK ? malloc(id_bytes) : NULL;
    for (int64_t i = 0; ones != NULL && i < Bt * T; i++) {
        ones[i] = 1.0f;
    }
    if (st == MC_OK) st = ones != NULL ? t->ops->upload(&t->exec, a.ones, ones, id_bytes)
                                       : mc_fail(t->exec.err, MC_ERR_NOMEM, "train: out of memory");
    free(ones);
    if (st == MC_OK) st = forward_keep(t, &a, a.ids, Bt, T);
    if (st == MC_OK) st = loss_bwd(t, &a, a.targets, Bt * T, scale, nll_sum, n_targets);
    if (st == MC_OK) st = backward(t, &a, a.ids, Bt, T);
    if (st == MC_OK) st = t->ops->sync(&t->exec);
    if (st == MC_OK && t->carry_rows > 0) { // the ending state becomes the next call's start
        float *c = t->carry_conv, *h = t->carry_ssm;
        t->carry_conv = t->next_conv;
        t->carry_ssm = t->next_ssm;
        t->next_conv = c;
        t->next_ssm = h;
    }
    free(layers);
    return st;
}
