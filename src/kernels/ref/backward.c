// Reference backward kernels: the gradients of ref.c's forward twins, scalar loops in the order of spec Appendix A,
// no threads. Per-element math is f32 as in the forward; every long sum (over rows, steps, channels, states) and the
// scan's adjoint carry are double. Wiring into the ops table and the training walk is left to their callers.
#include "kernels/ref/backward.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/checked.h"
#include "base/error.h"
#include "kernels/dtype.h"
#include "kernels/ref/ref.h"

#define IGNORE_INDEX       (-100) // PyTorch CrossEntropyLoss's default ignore_index (spec §6)
#define SOFTPLUS_THRESHOLD 20.0f  // torch softplus: identity above (spec §3.7), as mc_ref_selective_scan

static mc_error *err_of(const mc_exec *ex) {
    return ex != NULL ? ex->err : NULL;
}

// Scratch for n elements of size bytes each (at least one element, so 0-length shapes need no special case).
static void *scratch_new(int64_t n, size_t size) {
    if (n < 0 || (uint64_t)n > SIZE_MAX / size - 1) {
        return NULL;
    }
    return calloc((size_t)n + 1, size);
}

static float sigmoid(float v) {
    return 1.0f / (1.0f + expf(-v));
}

// d silu(v) / dv = σ(v)·(1 + v·(1 − σ(v))); at v = −100 σ is 0 (expf overflows) and so is the derivative.
static float silu_grad(float v) {
    float s = sigmoid(v);
    return s * (1.0f + v * (1.0f - s));
}

// ---- argument checks (every host backend's) ---------------------------------------------------------------------

mc_status mc_bwd_check_matmul(const mc_exec *ex, const char *op, int64_t M, int64_t N, int64_t K, int64_t ldx,
                              const mc_weight *w) {
    if (M < 0 || N < 0 || K < 0 || ldx < K) {
        return mc_fail(err_of(ex), MC_ERR_INVALID,
                       "%s: M=%lld N=%lld K=%lld ldx=%lld, expected sizes >= 0 and ldx >= K", op, (long long)M,
                       (long long)N, (long long)K, (long long)ldx);
    }
    if (w != NULL && !mc_weight_ok(w, N, K)) {
        return mc_fail(err_of(ex), MC_ERR_INVALID, "%s: weight is not a [%lld, %lld] f32/f16/bf16/int8 matrix", op,
                       (long long)N, (long long)K);
    }
    return MC_OK;
}

mc_status mc_bwd_check_embed(const mc_exec *ex, const int32_t *ids, int64_t n, int64_t V, int64_t H) {
    if (n < 0 || V < 0 || H < 0) {
        return mc_fail(err_of(ex), MC_ERR_INVALID, "embed_bwd: n=%lld V=%lld H=%lld, expected sizes >= 0", (long long)n,
                       (long long)V, (long long)H);
    }
    for (int64_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= V) {
            return mc_fail(err_of(ex), MC_ERR_INVALID, "embed_bwd: id %lld at row %lld, expected 0 <= id < %lld",
                           (long long)ids[i], (long long)i, (long long)V);
        }
    }
    return MC_OK;
}

mc_status mc_bwd_check_rmsnorm(const mc_exec *ex, int64_t M, int64_t H) {
    if (M < 0 || H < 1) {
        return mc_fail(err_of(ex), MC_ERR_INVALID, "rmsnorm_bwd: M=%lld H=%lld, expected M >= 0 and H >= 1",
                       (long long)M, (long long)H);
    }
    return MC_OK;
}

mc_status mc_bwd_check_conv1d(const mc_exec *ex, int64_t Bt, int64_t L, int64_t E, int64_t K, int64_t ldx) {
    if (Bt < 0 || L < 0 || E < 0 || K < 1 || ldx < E) {
        return mc_fail(err_of(ex), MC_ERR_INVALID,
                       "conv1d_bwd: Bt=%lld L=%lld E=%lld K=%lld ldx=%lld, expected K >= 1, ldx >= E, others >= 0",
                       (long long)Bt, (long long)L, (long long)E, (long long)K, (long long)ldx);
    }
    return MC_OK;
}

mc_status mc_bwd_check_scan(const mc_exec *ex, int64_t Bt, int64_t L, int64_t E, int64_t N, int64_t ldbc, int64_t ldz) {
    if (Bt < 0 || L < 0 || E < 0 || N < 0 || ldbc < N || ldz < E) {
        return mc_fail(err_of(ex), MC_ERR_INVALID,
                       "selective_scan_bwd: Bt=%lld L=%lld E=%lld N=%lld ldbc=%lld ldz=%lld, expected sizes >= 0, "
                       "ldbc >= N, ldz >= E",
                       (long long)Bt, (long long)L, (long long)E, (long long)N, (long long)ldbc, (long long)ldz);
    }
    return MC_OK;
}

mc_status mc_bwd_check_cross_entropy(const mc_exec *ex, const int32_t *targets, int64_t T, int64_t V) {
    if (T < 0 || V < 1) {
        return mc_fail(err_of(ex), MC_ERR_INVALID, "cross_entropy: T=%lld V=%lld, expected T >= 0 and V >= 1",
                       (long long)T, (long long)V);
    }
    for (int64_t t = 0; t < T; t++) {
        if (targets[t] != IGNORE_INDEX && (targets[t] < 0 || targets[t] >= V)) {
            return mc_fail(err_of(ex), MC_ERR_INVALID,
                           "cross_entropy: target %lld at row %lld, expected 0 <= target < %lld or -100",
                           (long long)targets[t], (long long)t, (long long)V);
        }
    }
    return MC_OK;
}

// ---- matmul -----------------------------------------------------------------------------------------------------

mc_status mc_ref_matmul_dx(const mc_exec *ex, float *dx, int64_t ldx, const float *dy, const mc_weight *w, int64_t M,
                           int64_t N, int64_t K, bool accumulate) {
    mc_status st = mc_bwd_check_matmul(ex, "matmul_dx", M, N, K, ldx, w);
    if (st != MC_OK) {
        return st;
    }
    for (int64_t m = 0; m < M; m++) {
        for (int64_t k = 0; k < K; k++) {
            double acc = 0;
            for (int64_t n = 0; n < N; n++) {
                acc += (double)dy[m * N + n] * mc_weight_at(w, n, k);
            }
            float *p = dx + m * ldx + k;
            *p = accumulate ? (float)((double)*p + acc) : (float)acc;
        }
    }
    return MC_OK;
}

mc_status mc_ref_matmul_dw(const mc_exec *ex, float *dw, float *dbias, const float *dy, const float *x, int64_t ldx,
                           int64_t M, int64_t N, int64_t K) {
    mc_status st = mc_bwd_check_matmul(ex, "matmul_dw", M, N, K, ldx, NULL);
    if (st != MC_OK) {
        return st;
    }
    for (int64_t n = 0; n < N; n++) {
        for (int64_t k = 0; k < K; k++) {
            double acc = 0;
            for (int64_t m = 0; m < M; m++) {
                acc += (double)dy[m * N + n] * x[m * ldx + k];
            }
            dw[n * K + k] = (float)((double)dw[n * K + k] + acc);
        }
        if (dbias != NULL) {
            double acc = 0;
            for (int64_t m = 0; m < M; m++) {
                acc += dy[m * N + n];
            }
            dbias[n] = (float)((double)dbias[n] + acc);
        }
    }
    return MC_OK;
}

// ---- embedding --------------------------------------------------------------------------------------------------

// Rows sharing an id add in f32 in row order: the order a scatter with atomics cannot promise, so fast kernels get
// a tolerance here, not bit equality.
mc_status mc_ref_embed_bwd(const mc_exec *ex, float *dw, const float *dout, const int32_t *ids, int64_t n, int64_t V,
                           int64_t H) {
    mc_status st = mc_bwd_check_embed(ex, ids, n, V, H);
    if (st != MC_OK) {
        return st;
    }
    for (int64_t i = 0; i < n; i++) {
        float *row = dw + (int64_t)ids[i] * H;
        for (int64_t h = 0; h < H; h++) {
            row[h] += dout[i * H + h];
        }
    }
    return MC_OK;
}

// ---- rmsnorm ----------------------------------------------------------------------------------------------------

// r is recomputed in double from x (the forward's f32 r differs by a few ulp): the oracle is the exact gradient.
mc_status mc_ref_rmsnorm_bwd(const mc_exec *ex, float *dx, float *dw, const float *dy, const float *x, const float *w,
                             int64_t M, int64_t H, float eps) {
    mc_status st = mc_bwd_check_rmsnorm(ex, M, H);
    if (st != MC_OK) {
        return st;
    }
    double *r = scratch_new(M, sizeof(double)); // [M] 1 / rms of each row
    if (r == NULL) {
        return mc_fail(err_of(ex), MC_ERR_NOMEM, "rmsnorm_bwd: no memory for %lld rows", (long long)M);
    }
    for (int64_t m = 0; m < M; m++) {
        const float *xm = x + m * H, *gm = dy + m * H;
        double ms = 0, dot = 0;
        for (int64_t h = 0; h < H; h++) {
            ms += (double)xm[h] * xm[h];
            dot += (double)gm[h] * w[h] * xm[h];
        }
        r[m] = 1.0 / sqrt(ms / (double)H + eps);
        double r3_mean = r[m] * r[m] * r[m] * dot / (double)H;
        for (int64_t h = 0; h < H; h++) {
            dx[m * H + h] += (float)(r[m] * w[h] * gm[h] - xm[h] * r3_mean);
        }
    }
    for (int64_t h = 0; h < H; h++) {
        double acc = 0;
        for (int64_t m = 0; m < M; m++) {
            acc += (double)dy[m * H + h] * x[m * H + h] * r[m];
        }
        dw[h] = (float)((double)dw[h] + acc);
    }
    free(r);
    return MC_OK;
}

// ---- conv1d -----------------------------------------------------------------------------------------------------

typedef struct conv_scratch {
    float *xw;   // [K + L] the channel's window: state0 (inputs −K..−1), then x[0..L)
    double *gw;  // [K + L] gradient wrt xw
    double *dwk; // [K] this channel's dw sum
} conv_scratch;

// One channel of one sequence: forward recomputed step by step (same f32 order as mc_ref_conv1d), its gradient
// scattered into the window. Output step t reads xw[t + 1 .. t + K].
static void conv_channel_bwd(const conv_scratch *sc, double *db_acc, const float *du, const float *w, float bias,
                             int64_t L, int64_t E, int64_t K) {
    for (int64_t t = 0; t < L; t++) {
        float c = bias;
        for (int64_t k = 0; k < K; k++) {
            c += w[k] * sc->xw[t + 1 + k];
        }
        double dc = (double)du[t * E] * silu_grad(c);
        *db_acc += dc;
        for (int64_t k = 0; k < K; k++) {
            sc->dwk[k] += dc * sc->xw[t + 1 + k];
            sc->gw[t + 1 + k] += dc * w[k];
        }
    }
}

mc_status mc_ref_conv1d_bwd(const mc_exec *ex, float *dx, float *dw, float *db, float *dstate0, const float *du,
                            const float *dstate_final, const float *x, int64_t ldx, const float *state0, const float *w,
                            const float *b, int64_t Bt, int64_t L, int64_t E, int64_t K) {
    mc_status st = mc_bwd_check_conv1d(ex, Bt, L, E, K, ldx);
    if (st != MC_OK) {
        return st;
    }
    conv_scratch sc = { scratch_new(K + L, sizeof(float)), scratch_new(K + L, sizeof(double)),
                        scratch_new(K, sizeof(double)) };
    if (sc.xw == NULL || sc.gw == NULL || sc.dwk == NULL) {
        free(sc.xw);
        free(sc.gw);
        free(sc.dwk);
        return mc_fail(err_of(ex), MC_ERR_NOMEM, "conv1d_bwd: no memory for a window of %lld", (long long)(K + L));
    }
    for (int64_t seq = 0; seq < Bt; seq++) {
        for (int64_t e = 0; e < E; e++) {
            const int64_t se = (seq * E + e) * K; // this channel's window in state0 / dstate0 / dstate_final
            memcpy(sc.xw, state0 + se, (size_t)K * sizeof(float));
            memset(sc.gw, 0, (size_t)(K + L) * sizeof(double));
            memset(sc.dwk, 0, (size_t)K * sizeof(double));
            for (int64_t t = 0; t < L; t++) {
                sc.xw[K + t] = x[(seq * L + t) * ldx + e];
            }
            // The window left behind is xw[L .. L + K): its gradient lands there directly.
            for (int64_t k = 0; k < K && dstate_final != NULL; k++) {
                sc.gw[L + k] += dstate_final[se + k];
            }
            double db_acc = 0;
            conv_channel_bwd(&sc, &db_acc, du + seq * L * E + e, w + e * K, b != NULL ? b[e] : 0.0f, L, E, K);
            for (int64_t t = 0; t < L; t++) {
                dx[(seq * L + t) * ldx + e] = (float)sc.gw[K + t];
            }
            for (int64_t k = 0; k < K; k++) {
                if (dstate0 != NULL) { // written after dstate_final was read: the two may alias
                    dstate0[se + k] = (float)sc.gw[k];
                }
                dw[e * K + k] = (float)((double)dw[e * K + k] + sc.dwk[k]);
            }
            if (db != NULL) {
                db[e] = (float)((double)db[e] + db_acc);
            }
        }
    }
    free(sc.xw);
    free(sc.gw);
    free(sc.dwk);
    return MC_OK;
}

// ---- selective scan ---------------------------------------------------------------------------------------------

typedef struct scan_args { // the inputs of one sequence, pointers already offset to its first row
    const float *dy, *u, *dt, *dt_bias, *A, *B, *C, *D, *z;
    int64_t ldbc, ldz, L, E, N;
} scan_args;

typedef struct scan_scratch {
    float *h;     // [L + 1, N] one channel's states: row 0 = h0, row t + 1 = h after step t
    float *delta; // [L] one channel's Δ
    double *g;    // [N] gradient wrt the state, carried backwards
    double *dA;   // [N] this channel's dA sum
    double *dB;   // [L, N] this sequence's dB summed over channels
    double *dC;   // [L, N] same for dC
} scan_scratch;

static float softplus(float v) {
    return v > SOFTPLUS_THRESHOLD ? v : log1pf(expf(v));
}

// Channel e's states from h[0] on, the same f32 expressions in the same order as mc_ref_selective_scan, so the
// recomputed states equal the forward's.
static void scan_channel_forward(const scan_args *a, const scan_scratch *sc, int64_t e) {
    const int64_t E = a->E, N = a->N;
    for (int64_t t = 0; t < a->L; t++) {
        float delta = softplus(a->dt[t * E + e] + a->dt_bias[e]);
        float ut = a->u[t * E + e];
        const float *hp = sc->h + t * N;
        float *ht = sc->h + (t + 1) * N;
        for (int64_t n = 0; n < N; n++) {
            ht[n] = expf(delta * a->A[e * N + n]) * hp[n] + delta * a->B[t * a->ldbc + n] * ut;
        }
        sc->delta[t] = delta;
    }
}

// One step t of channel e backwards, the adjoint sc->g entering as ∂loss/∂h[t] from the steps after t and leaving
// as ∂loss/∂h[t − 1] (spec Appendix A, λ = g + gy·C).
static void scan_step_bwd(const scan_args *a, const scan_scratch *sc, int64_t t, int64_t e, float *du, float *ddt,
                          float *dz, double *dD_acc, double *dbias_acc) {
    const int64_t E = a->E, N = a->N;
    const float *hp = sc->h + t * N, *ht = sc->h + (t + 1) * N, *Bv = a->B + t * a->ldbc, *Cv = a->C + t * a->ldbc;
    const float delta = sc->delta[t], ut = a->u[t * E + e], zt = a->z[t * a->ldz + e], dyt = a->dy[t * E + e];
    float readout = 0.0f;
    for (int64_t n = 0; n < N; n++) {
        readout += Cv[n] * ht[n];
    }
    dz[t * a->ldz + e] = dyt * (readout + a->D[e] * ut) * silu_grad(zt);
    const double gy = (double)dyt * (zt * sigmoid(zt)); // gradient wrt C·h + D·u
    *dD_acc += gy * ut;
    double du_acc = gy * a->D[e], ddelta = 0;
    for (int64_t n = 0; n < N; n++) {
        const float An = a->A[e * N + n], decay = expf(delta * An);
        const double lam = sc->g[n] + gy * Cv[n]; // ∂loss/∂h[t]
        sc->dC[t * N + n] += gy * ht[n];
        sc->dB[t * N + n] += lam * delta * ut;
        du_acc += lam * delta * Bv[n];
        ddelta += lam * ((double)An * decay * hp[n] + (double)Bv[n] * ut);
        sc->dA[n] += lam * delta * decay * hp[n];
        sc->g[n] = lam * decay;
    }
    const float v = a->dt[t * E + e] + a->dt_bias[e];
    const double dv = v > SOFTPLUS_THRESHOLD ? ddelta : ddelta * sigmoid(v); // softplus' = σ below the threshold
    du[t * E + e] = (float)du_acc;
    ddt[t * E + e] = (float)dv;
    *dbias_acc += dv;
}

// One channel of one sequence: recompute, then walk back from the final state's gradient.
static void scan_channel_bwd(const scan_args *a, const scan_scratch *sc, int64_t e, float *du, float *ddt, float *dz,
                             float *dA, float *dD, float *ddt_bias, float *dh0, const float *dh_final,
                             const float *h0) {
    const int64_t N = a->N;
    for (int64_t n = 0; n < N; n++) {
        sc->h[n] = h0 != NULL ? h0[e * N + n] : 0.0f;
        sc->g[n] = dh_final != NULL ? dh_final[e * N + n] : 0.0;
        sc->dA[n] = 0;
    }
    scan_channel_forward(a, sc, e);
    double dD_acc = 0, dbias_acc = 0;
    for (int64_t t = a->L - 1; t >= 0; t--) {
        scan_step_bwd(a, sc, t, e, du, ddt, dz, &dD_acc, &dbias_acc);
    }
    for (int64_t n = 0; n < N; n++) {
        if (dh0 != NULL) { // written after dh_final was read: the two may alias
            dh0[e * N + n] = (float)sc->g[n];
        }
        dA[e * N + n] = (float)((double)dA[e * N + n] + sc->dA[n]);
    }
    dD[e] = (float)((double)dD[e] + dD_acc);
    ddt_bias[e] = (float)((double)ddt_bias[e] + dbias_acc);
}

static void scan_scratch_free(scan_scratch *sc) {
    free(sc->h);
    free(sc->delta);
    free(sc->g);
    free(sc->dA);
    free(sc->dB);
    free(sc->dC);
}

mc_status mc_ref_selective_scan_bwd(const mc_exec *ex, float *du, float *ddt, float *dz, float *dB, float *dC,
                                    float *dA, float *dD, float *ddt_bias, float *dh0, const float *dy,
                                    const float *dh_final, const float *u, const float *dt, const float *dt_bias,
                                    const float *A, const float *B, const float *C, int64_t ldbc, const float *D,
                                    const float *z, int64_t ldz, const float *h0, int64_t Bt, int64_t L, int64_t E,
                                    int64_t N) {
    int64_t LN = 0;
    mc_status st = mc_bwd_check_scan(ex, Bt, L, E, N, ldbc, ldz);
    if (st != MC_OK) {
        return st;
    }
    if (!mc_mul_i64(L + 1, N, &LN)) {
        return mc_fail(err_of(ex), MC_ERR_INVALID, "selective_scan_bwd: L=%lld N=%lld overflow the scratch",
                       (long long)L, (long long)N);
    }
    scan_scratch sc = {
        scratch_new(LN, sizeof(float)), scratch_new(L, sizeof(float)),   scratch_new(N, sizeof(double)),
        scratch_new(N, sizeof(double)), scratch_new(LN, sizeof(double)), scratch_new(LN, sizeof(double))
    };
    if (sc.h == NULL || sc.delta == NULL || sc.g == NULL || sc.dA == NULL || sc.dB == NULL || sc.dC == NULL) {
        scan_scratch_free(&sc);
        return mc_fail(err_of(ex), MC_ERR_NOMEM, "selective_scan_bwd: no memory for %lld states", (long long)LN);
    }
    for (int64_t seq = 0; seq < Bt; seq++) {
        const int64_t r0 = seq * L; // first row of this sequence
        const scan_args a = { .dy = dy + r0 * E,
                              .u = u + r0 * E,
                              .dt = dt + r0 * E,
                              .dt_bias = dt_bias,
                              .A = A,
                              .B = B + r0 * ldbc,
                              .C = C + r0 * ldbc,
                              .D = D,
                              .z = z + r0 * ldz,
                              .ldbc = ldbc,
                              .ldz = ldz,
                              .L = L,
                              .E = E,
                              .N = N };
        const int64_t s0 = seq * E * N; // this sequence's state block
        memset(sc.dB, 0, (size_t)LN * sizeof(double));
        memset(sc.dC, 0, (size_t)LN * sizeof(double));
        for (int64_t e = 0; e < E; e++) {
            scan_channel_bwd(&a, &sc, e, du + r0 * E, ddt + r0 * E, dz + r0 * ldz, dA, dD, ddt_bias,
                             dh0 != NULL ? dh0 + s0 : NULL, dh_final != NULL ? dh_final + s0 : NULL,
                             h0 != NULL ? h0 + s0 : NULL);
        }
        for (int64_t t = 0; t < L; t++) {
            for (int64_t n = 0; n < N; n++) {
                dB[(r0 + t) * ldbc + n] = (float)sc.dB[t * N + n];
                dC[(r0 + t) * ldbc + n] = (float)sc.dC[t * N + n];
            }
        }
    }
    scan_scratch_free(&sc);
    return MC_OK;
}

// ---- loss -------------------------------------------------------------------------------------------------------

// The loss of a row is mc_ref_nll_row's (so it equals mc_ref_nll bit for bit); the softmax for the gradient repeats
// its max and double sum. Each logit is read before its gradient overwrites it, so dlogits may alias logits.
mc_status mc_ref_cross_entropy(const mc_exec *ex, float *dlogits, double *loss_sum, int64_t *n_valid,
                               const float *logits, const int32_t *targets, int64_t T, int64_t V, float scale) {
    mc_status st = mc_bwd_check_cross_entropy(ex, targets, T, V);
    if (st != MC_OK) {
        return st;
    }
    int64_t kept = 0;
    for (int64_t t = 0; t < T; t++) {
        const float *row = logits + t * V;
        float *grad = dlogits + t * V;
        const int32_t target = targets[t];
        if (target == IGNORE_INDEX) {
            memset(grad, 0, (size_t)V * sizeof(float));
            continue;
        }
        float mx;
        const double sum = mc_ref_row_expsum(row, V, &mx);
        *loss_sum += log(sum) + mx - row[target]; // mc_ref_nll_row's number, its normaliser computed once
        kept++;
        for (int64_t v = 0; v < V; v++) {
            double p = exp((double)row[v] - mx) / sum;
            grad[v] = (float)((double)scale * (p - (v == target ? 1.0 : 0.0)));
        }
    }
    *n_valid += kept;
    return MC_OK;
}
