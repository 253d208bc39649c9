// Reference kernels: scalar loops in the spec's order, no intrinsics, no threads. Every fast kernel is tested
// against these, so they stay slow and obvious.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "kernels/dropout.h"
#include "kernels/dtype.h"
#include "kernels/ops.h"
#include "kernels/ref/backward.h"
#include "kernels/ref/ref.h"
#include "kernels/ref/sample.h"

void mc_ref_matmul(const mc_exec *ex, float *y, const float *x, int64_t ldx, const mc_weight *w,
                          const float *bias, int64_t M, int64_t N, int64_t K) {
    for (int64_t m = 0; m < M; m++) {
        const float *xm = x + m * ldx;
        for (int64_t n = 0; n < N; n++) {
            float acc = 0.0f;
            for (int64_t k = 0; k < K; k++) {
                acc += mc_weight_at(w, n, k) * xm[k];
            }
            y[m * N + n] = acc + (bias != NULL ? bias[n] : 0.0f);
        }
    }
}

void mc_ref_embed(const mc_exec *ex, float *out, const mc_weight *w, const int32_t *ids, int64_t n,
                         int64_t H) {
    for (int64_t i = 0; i < n; i++) {
        for (int64_t h = 0; h < H; h++) {
            out[i * H + h] = mc_weight_at(w, ids[i], h);
        }
    }
}

void mc_ref_rmsnorm(const mc_exec *ex, float *y, float *x, const float *add, const float *w, int64_t M,
                           int64_t H, float eps) {
    for (int64_t m = 0; m < M; m++) {
        if (add != NULL) {
            for (int64_t h = 0; h < H; h++) {
                x[m * H + h] += add[m * H + h];
            }
        }
        float ms = 0.0f;
        for (int64_t h = 0; h < H; h++) {
            ms += x[m * H + h] * x[m * H + h];
        }
        float r = 1.0f / sqrtf(ms / (float)H + eps);
        for (int64_t h = 0; h < H; h++) {
            y[m * H + h] = x[m * H + h] * r * w[h];
        }
    }
}

static float silu(float v) {
    return v / (1.0f + expf(-v));
}

// Window position s < 0 reads the state's column K + s (the state holds inputs −K..−1).
void mc_ref_conv1d(const mc_exec *ex, float *u, float *state, const float *x, int64_t ldx, const float *w, const float *b,
                          int64_t L, int64_t E, int64_t K) {
    for (int64_t e = 0; e < E; e++) {
        for (int64_t t = 0; t < L; t++) {
            float acc = b != NULL ? b[e] : 0.0f;
            for (int64_t k = 0; k < K; k++) {
                int64_t s = t - (K - 1) + k;
                float v = s >= 0 ? x[s * ldx + e] : state[e * K + K + s];
                acc += w[e * K + k] * v;
            }
            u[t * E + e] = silu(acc);
        }
        // New state: the last K of [old state, x[0..L)].
        for (int64_t k = 0; k < K; k++) {
            int64_t s = L - K + k;
            state[e * K + k] = s >= 0 ? x[s * ldx + e] : state[e * K + K + s];
        }
    }
}

void mc_ref_selective_scan(const mc_exec *ex, float *y, float *h, const float *u, const float *dt, const float *dt_bias,
                                  const float *A, const float *B, const float *C, int64_t ldbc, const float *D,
                                  const float *z, int64_t ldz, int64_t L, int64_t E, int64_t N) {
    for (int64_t e = 0; e < E; e++) {
        float *he = h + e * N;
        for (int64_t t = 0; t < L; t++) {
            float v = dt[t * E + e] + dt_bias[e];
            float delta = v > 20.0f ? v : log1pf(expf(v)); // torch softplus, threshold 20 (spec §3.7)
            float ut = u[t * E + e];
            float acc = 0.0f;
            for (int64_t n = 0; n < N; n++) {
                he[n] = expf(delta * A[e * N + n]) * he[n] + delta * B[t * ldbc + n] * ut;
                acc += C[t * ldbc + n] * he[n];
            }
            y[t * E + e] = (acc + D[e] * ut) * silu(z[t * ldz + e]);
        }
    }
}

// The batched step is the sequence form once per sequence, one position each.
void mc_ref_conv1d_step(const mc_exec *ex, float *u, float *state, const float *x, int64_t ldx, const float *w,
                        const float *b, int64_t n_seq, int64_t E, int64_t K) {
    for (int64_t s = 0; s < n_seq; s++) {
        mc_ref_conv1d(ex, u + s * E, state + s * E * K, x + s * ldx, ldx, w, b, 1, E, K);
    }
}

void mc_ref_selective_scan_step(const mc_exec *ex, float *y, float *h, const float *u, const float *dt,
                                const float *dt_bias, const float *A, const float *B, const float *C, int64_t ldbc,
                                const float *D, const float *z, int64_t ldz, int64_t n_seq, int64_t E, int64_t N) {
    for (int64_t s = 0; s < n_seq; s++) {
        mc_ref_selective_scan(ex, y + s * E, h + s * E * N, u + s * E, dt + s * E, dt_bias, A, B + s * ldbc,
                              C + s * ldbc, ldbc, D, z + s * ldz, ldz, 1, E, N);
    }
}

mc_status mc_ref_selective_scan_step_dt(const mc_exec *ex, float *y, float *h, const float *u, const float *q,
                                        int64_t ldq, const mc_weight *dt_w, const float *dt_bias, const float *A,
                                        const float *D, const float *z, int64_t ldz, int64_t n_seq, int64_t E,
                                        int64_t N, int64_t R) {
    float *dt = malloc((size_t)(n_seq * E > 0 ? n_seq * E : 1) * sizeof(float));
    if (dt == NULL) {
        return mc_fail(ex->err, MC_ERR_NOMEM, "selective_scan_step_dt: out of memory for %lld rows", (long long)n_seq);
    }
    mc_ref_matmul(ex, dt, q, ldq, dt_w, NULL, n_seq, E, R);
    mc_ref_selective_scan_step(ex, y, h, u, dt, dt_bias, A, q + R, q + R + N, ldq, D, z, ldz, n_seq, E, N);
    free(dt);
    return MC_OK;
}

double mc_ref_row_expsum(const float *row, int64_t V, float *max) {
    float mx = row[0];
    for (int64_t v = 1; v < V; v++) {
        mx = row[v] > mx ? row[v] : mx;
    }
    double sum = 0;
    for (int64_t v = 0; v < V; v++) {
        sum += exp((double)row[v] - mx);
    }
    *max = mx;
    return sum;
}

double mc_ref_nll_row(const float *row, int64_t V, int32_t target) {
    float mx;
    const double sum = mc_ref_row_expsum(row, V, &mx);
    return log(sum) + mx - row[target];
}

void mc_ref_nll(const mc_exec *ex, double *out, const float *logits, int64_t T, int64_t V, const int32_t *targets) {
    (void)ex;
    for (int64_t t = 0; t < T; t++) {
        out[t] = mc_ref_nll_row(logits + t * V, V, targets[t]);
    }
}

void mc_ref_axpby(const mc_exec *ex, float *y, float a, const float *x, float b, int64_t n) {
    (void)ex;
    for (int64_t i = 0; i < n; i++) {
        y[i] = a * y[i] + (x != NULL ? b * x[i] : 0.0f);
    }
}

void mc_ref_dropout(const mc_exec *ex, float *y, const float *x, int64_t ldx, int64_t M, int64_t K, double p,
                    uint64_t key) {
    (void)ex;
    const float scale = mc_dropout_scale(p);
    for (int64_t m = 0; m < M; m++) {
        for (int64_t k = 0; k < K; k++) {
            const float v = x[m * ldx + k];
            y[m * K + k] = mc_dropout_u(key, (uint64_t)(m * K + k)) >= p ? v * scale : 0.0f;
        }
    }
}

void mc_ref_mul_acc(const mc_exec *ex, float *y, const float *a, const float *b, int64_t n) {
    (void)ex;
    for (int64_t i = 0; i < n; i++) {
        y[i] += a[i] * b[i];
    }
}

double mc_ref_sumsq(const float *x, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) {
        s += (double)x[i] * (double)x[i];
    }
    return s;
}

void mc_ref_adamw(float *restrict p, const float *restrict g, float *restrict m, float *restrict v, int64_t n,
                  const mc_adamw_args *a) {
    for (int64_t i = 0; i < n; i++) {
        const float pi = p[i] * a->decay;
        m[i] = fmaf(a->w1, g[i] - m[i], m[i]);
        v[i] = fmaf(a->w2 * g[i], g[i], v[i] * a->beta2);
        const float d = sqrtf(v[i]) / a->bc2_sqrt + a->eps;
        p[i] = pi + (a->neg_step * m[i]) / d;
    }
}

void mc_ref_neg_exp(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        y[i] = -expf(x[i]);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The ref backend's op table: the twins above, once per sequence of a batch. They cannot fail.

static mc_status matmul_op(const mc_exec *ex, float *y, const float *x, int64_t ldx, const mc_weight *w,
                           const float *bias, int64_t M, int64_t N, int64_t K) {
    mc_ref_matmul(ex, y, x, ldx, w, bias, M, N, K);
    return MC_OK;
}

static mc_status embed_op(const mc_exec *ex, float *out, const mc_weight *w, const int32_t *ids, int64_t ldi,
                          int64_t Bt, int64_t T, int64_t H) {
    for (int64_t b = 0; b < Bt; b++) {
        mc_ref_embed(ex, out + b * T * H, w, ids + b * ldi, T, H);
    }
    return MC_OK;
}

static mc_status rmsnorm_op(const mc_exec *ex, float *y, float *x, const float *add, const float *w, int64_t M,
                            int64_t H, float eps) {
    mc_ref_rmsnorm(ex, y, x, add, w, M, H, eps);
    return MC_OK;
}

static mc_status conv1d_op(const mc_exec *ex, float *u, float *state, const float *x, int64_t ldx, const float *w,
                           const float *bias, int64_t Bt, int64_t L, int64_t E, int64_t K) {
    for (int64_t b = 0; b < Bt; b++) {
        mc_ref_conv1d(ex, u + b * L * E, state + b * E * K, x + b * L * ldx, ldx, w, bias, L, E, K);
    }
    return MC_OK;
}

static mc_status scan_op(const mc_exec *ex, float *y, float *h, const float *u, const float *dt, const float *dt_bias,
                         const float *A, const float *B, const float *C, int64_t ldbc, const float *D, const float *z,
                         int64_t ldz, int64_t Bt, int64_t L, int64_t E, int64_t N) {
    for (int64_t b = 0; b < Bt; b++) {
        mc_ref_selective_scan(ex, y + b * L * E, h + b * E * N, u + b * L * E, dt + b * L * E, dt_bias, A,
                              B + b * L * ldbc, C + b * L * ldbc, ldbc, D, z + b * L * ldz, ldz, L, E, N);
    }
    return MC_OK;
}

static mc_status conv1d_step_op(const mc_exec *ex, float *u, float *state, const float *x, int64_t ldx,
                                const float *w, const float *bias, int64_t n_seq, int64_t E, int64_t K) {
    mc_ref_conv1d_step(ex, u, state, x, ldx, w, bias, n_seq, E, K);
    return MC_OK;
}

static mc_status scan_step_op(const mc_exec *ex, float *y, float *h, const float *u, const float *dt,
                              const float *dt_bias, const float *A, const float *B, const float *C, int64_t ldbc,
                              const float *D, const float *z, int64_t ldz, int64_t n_seq, int64_t E, int64_t N) {
    mc_ref_selective_scan_step(ex, y, h, u, dt, dt_bias, A, B, C, ldbc, D, z, ldz, n_seq, E, N);
    return MC_OK;
}

static mc_status axpby_op(const mc_exec *ex, float *y, float a, const float *x, float b, int64_t n) {
    mc_ref_axpby(ex, y, a, x, b, n);
    return MC_OK;
}

static mc_status dropout_op(const mc_exec *ex, float *y, const float *x, int64_t ldx, int64_t M, int64_t K, double p,
                            uint64_t key) {
    if (M < 0 || K < 0 || ldx < K || !(p >= 0 && p <= 1)) {
        return mc_fail(ex != NULL ? ex->err : NULL, MC_ERR_INVALID,
                       "dropout: M=%lld K=%lld ldx=%lld p=%g, expected sizes >= 0, ldx >= K and p in [0, 1]",
                       (long long)M, (long long)K, (long long)ldx, p);
    }
    mc_ref_dropout(ex, y, x, ldx, M, K, p, key);
    return MC_OK;
}

static mc_status mul_acc_op(const mc_exec *ex, float *y, const float *a, const float *b, int64_t n) {
    mc_ref_mul_acc(ex, y, a, b, n);
    return MC_OK;
}

static mc_status nll_op(const mc_exec *ex, double *out, const float *logits, int64_t T, int64_t V,
                        const int32_t *targets) {
    mc_ref_nll(ex, out, logits, T, V, targets);
    return MC_OK;
}

static mc_status sumsq_op(const mc_exec *ex, double *out, const float *x, int64_t n) {
    (void)ex;
    *out = mc_ref_sumsq(x, n);
    return MC_OK;
}

static mc_status adamw_op(const mc_exec *ex, float *p, const float *g, float *m, float *v, int64_t n,
                          const mc_adamw_args *a) {
    (void)ex;
    mc_ref_adamw(p, g, m, v, n, a);
    return MC_OK;
}

static mc_status neg_exp_op(const mc_exec *ex, float *y, const float *x, int64_t n) {
    (void)ex;
    mc_ref_neg_exp(y, x, n);
    return MC_OK;
}

const mc_ops mc_ops_ref = {
    .name = "ref",
    .backend = MC_BACKEND_REF,
    .host_memory = true,
    .exec_init = mc_host_exec_init,
    .exec_free = mc_host_exec_free,
    .alloc = mc_host_alloc,
    .free = mc_host_free,
    .upload = mc_host_copy,
    .download = mc_host_copy,
    .copy = mc_host_copy,
    .zero = mc_host_zero,
    .sync = mc_host_sync,
    .matmul = matmul_op,
    .embed = embed_op,
    .rmsnorm = rmsnorm_op,
    .conv1d = conv1d_op,
    .selective_scan = scan_op,
    .conv1d_step = conv1d_step_op,
    .selective_scan_step = scan_step_op,
    .nll = nll_op,
    .axpby = axpby_op,
    .mul_acc = mul_acc_op,
    .dropout = dropout_op,
    .sumsq = sumsq_op,
    .adamw = adamw_op,
    .neg_exp = neg_exp_op,
    .sample = mc_ref_sample,
    .matmul_dx = mc_ref_matmul_dx,
    .matmul_dw = mc_ref_matmul_dw,
    .embed_bwd = mc_ref_embed_bwd,
    .rmsnorm_bwd = mc_ref_rmsnorm_bwd,
    .conv1d_bwd = mc_ref_conv1d_bwd,
    .selective_scan_bwd = mc_ref_selective_scan_bwd,
    .cross_entropy = mc_ref_cross_entropy,
};
