// Selective-scan and conv1d backward benchmark on the device: the cuda backend's selective_scan (forward),
// selective_scan_bwd and conv1d_bwd at mamba-130m's training shapes (d_inner 1536, d_state 16, dt_rank 48 so B and C
// are columns of a [rows, 80] matrix, z the second half of xz [rows, 3072], d_conv 4), timed with events over the
// op table's entries, with the fewest bytes each must move and the achieved bandwidth. The backward outputs of
// sequence 0 (du, ddt, dz, dB, dC: per-sequence values) are checked once against the reference twin before timing.
//   usage: bench_scan_bwd_cuda [Bt L E N reps]   (defaults: Bt = 4 and then 16, L 1024, E 1536, N 16, 20 reps)
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/common.cuh"

extern "C" {
#include "kernels/ref/backward.h"
}

#define R_RANK 48 // dt_rank of mamba-130m: the δ columns in front of B and C
#define K_CONV 4

static float uniform(uint64_t *s, float lo, float hi) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return lo + (hi - lo) * (float)((*s >> 40) & 0xffffff) / 16777216.0f;
}

static int cmp_float(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

typedef struct host_bufs { // inputs and the reference's outputs for sequence 0
    float *u, *dt, *xz, *q, *dtb, *A, *D, *dy, *state0, *w, *cb;
} host_bufs;

typedef struct dev_bufs {
    float *u, *dt, *xz, *q, *dtb, *A, *D, *dy, *h, *y, *du, *ddt, *dxz, *dq, *dA, *dD, *ddtb, *state0, *w, *cb, *dw,
        *dcb;
} dev_bufs;

// max |got − want| / max |want| over columns [c0, c0 + n) of rows ld apart.
static double rel_err(const float *got, const float *want, int64_t rows, int64_t ld, int64_t c0, int64_t n) {
    double scale = 0, worst = 0;
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t i = c0; i < c0 + n; i++) {
            scale = fmax(scale, fabs(want[r * ld + i]));
            worst = fmax(worst, fabs((double)got[r * ld + i] - want[r * ld + i]));
        }
    }
    return scale > 0 ? worst / scale : worst;
}

static mc_status run_bwd(const mc_ops *ops, const mc_exec *ex, const dev_bufs *d, int64_t Bt, int64_t L, int64_t E,
                         int64_t N) {
    const int64_t ldbc = R_RANK + 2 * N;
    return ops->selective_scan_bwd(ex, d->du, d->ddt, d->dxz + E, d->dq + R_RANK, d->dq + R_RANK + N, d->dA, d->dD,
                                   d->ddtb, NULL, d->dy, NULL, d->u, d->dt, d->dtb, d->A, d->q + R_RANK,
                                   d->q + R_RANK + N, ldbc, d->D, d->xz + E, 2 * E, NULL, Bt, L, E, N);
}

static mc_status run_fwd(const mc_ops *ops, const mc_exec *ex, const dev_bufs *d, int64_t Bt, int64_t L, int64_t E,
                         int64_t N) {
    const int64_t ldbc = R_RANK + 2 * N;
    return ops->selective_scan(ex, d->y, d->h, d->u, d->dt, d->dtb, d->A, d->q + R_RANK, d->q + R_RANK + N, ldbc, d->D,
                               d->xz + E, 2 * E, Bt, L, E, N);
}

static mc_status run_conv(const mc_ops *ops, const mc_exec *ex, const dev_bufs *d, int64_t Bt, int64_t L, int64_t E,
                          int64_t N) {
    return ops->conv1d_bwd(ex, d->dxz, d->dw, d->dcb, NULL, d->du, NULL, d->xz, 2 * E, d->state0, d->w, d->cb, Bt, L, E,
                           K_CONV);
}

typedef mc_status (*op_fn)(const mc_ops *, const mc_exec *, const dev_bufs *, int64_t, int64_t, int64_t, int64_t);

// Median of reps timed calls after 3 warm-ups (ms), or a negative value when a call fails.
static double time_op(op_fn f, const mc_ops *ops, const mc_exec *ex, const dev_bufs *d, int64_t Bt, int64_t L,
                      int64_t E, int64_t N, int reps) {
    cudaStream_t stream = mc_cuda_ctx_of(ex)->stream;
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    float *ms = (float *)malloc((size_t)reps * sizeof(float));
    mc_status st = MC_OK;
    for (int r = -3; r < reps && st == MC_OK; r++) {
        cudaEventRecord(e0, stream);
        st = f(ops, ex, d, Bt, L, E, N);
        cudaEventRecord(e1, stream);
        cudaEventSynchronize(e1);
        if (r >= 0) {
            cudaEventElapsedTime(&ms[r], e0, e1);
        }
    }
    if (st == MC_OK) {
        st = ops->sync(ex);
    }
    qsort(ms, (size_t)reps, sizeof(float), cmp_float);
    const double med = ms[reps / 2];
    free(ms);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    return st == MC_OK ? med : -1.0;
}

static void fill_inputs(host_bufs *h, int64_t rows, int64_t E, int64_t N) {
    const int64_t ldbc = R_RANK + 2 * N;
    uint64_t s = 7;
    for (int64_t i = 0; i < rows * E; i++) {
        h->u[i] = uniform(&s, -2, 2);
        h->dt[i] = uniform(&s, -6, 3);
        h->dy[i] = uniform(&s, -1, 1);
    }
    for (int64_t i = 0; i < rows * 2 * E; i++) {
        h->xz[i] = uniform(&s, -4, 4);
    }
    for (int64_t i = 0; i < rows * ldbc; i++) {
        h->q[i] = uniform(&s, -1, 1);
    }
    for (int64_t e = 0; e < E; e++) {
        h->dtb[e] = uniform(&s, -2, 1);
        h->D[e] = uniform(&s, -1, 1);
        h->cb[e] = uniform(&s, -1, 1);
        for (int64_t n = 0; n < N; n++) {
            h->A[e * N + n] = -(float)(n + 1);
        }
        for (int64_t k = 0; k < K_CONV; k++) {
            h->w[e * K_CONV + k] = uniform(&s, -1, 1);
        }
    }
}

// One shape: allocate, check sequence 0 of the backward against the reference, time the three ops.
static int bench_shape(const mc_ops *ops, mc_exec *ex, int64_t Bt, int64_t L, int64_t E, int64_t N, int reps) {
    const int64_t rows = Bt * L, ldbc = R_RANK + 2 * N;
    const size_t n_u = (size_t)(rows * E), n_xz = 2 * n_u, n_q = (size_t)(rows * ldbc), n_h = (size_t)(Bt * E * N);
    host_bufs h;
    float **hp[] = { &h.u, &h.dt, &h.xz, &h.q, &h.dtb, &h.A, &h.D, &h.dy, &h.state0, &h.w, &h.cb };
    const size_t hn[] = { n_u,
                          n_u,
                          n_xz,
                          n_q,
                          (size_t)E,
                          (size_t)(E * N),
                          (size_t)E,
                          n_u,
                          (size_t)(Bt * E * K_CONV),
                          (size_t)(E * K_CONV),
                          (size_t)E };
    for (size_t i = 0; i < sizeof(hp) / sizeof(hp[0]); i++) {
        *hp[i] = (float *)calloc(hn[i], sizeof(float));
    }
    fill_inputs(&h, rows, E, N);
    dev_bufs d;
    float **dp[] = { &d.u,   &d.dt,  &d.xz, &d.q,  &d.dtb, &d.A,    &d.D,      &d.dy, &d.h,  &d.y,  &d.du,
                     &d.ddt, &d.dxz, &d.dq, &d.dA, &d.dD,  &d.ddtb, &d.state0, &d.w,  &d.cb, &d.dw, &d.dcb };
    const float *src[] = { h.u,  h.dt, h.xz, h.q,  h.dtb, h.A,  h.D,      h.dy, NULL, NULL, NULL,
                           NULL, NULL, NULL, NULL, NULL,  NULL, h.state0, h.w,  h.cb, NULL, NULL };
    const size_t dn[] = { n_u,
                          n_u,
                          n_xz,
                          n_q,
                          (size_t)E,
                          (size_t)(E * N),
                          (size_t)E,
                          n_u,
                          n_h,
                          n_u,
                          n_u,
                          n_u,
                          n_xz,
                          n_q,
                          (size_t)(E * N),
                          (size_t)E,
                          (size_t)E,
                          (size_t)(Bt * E * K_CONV),
                          (size_t)(E * K_CONV),
                          (size_t)E,
                          (size_t)(E * K_CONV),
                          (size_t)E };
    mc_status st = MC_OK;
    for (size_t i = 0; st == MC_OK && i < sizeof(dp) / sizeof(dp[0]); i++) {
        st = ops->alloc(ex, (void **)dp[i], dn[i] * sizeof(float));
        if (st == MC_OK && src[i] != NULL) {
            st = ops->upload(ex, *dp[i], src[i], dn[i] * sizeof(float));
        }
    }
    // Reference for sequence 0 (dA, dD, ddt_bias sum over every sequence: not compared here).
    float *w_du = (float *)calloc((size_t)(L * E), 4), *w_ddt = (float *)calloc((size_t)(L * E), 4);
    float *w_dxz = (float *)calloc((size_t)(L * 2 * E), 4), *w_dq = (float *)calloc((size_t)(L * ldbc), 4);
    float *w_dA = (float *)calloc((size_t)(E * N), 4), *w_dD = (float *)calloc((size_t)E, 4),
          *w_db = (float *)calloc((size_t)E, 4);
    float *g_du = (float *)calloc((size_t)(L * E), 4), *g_ddt = (float *)calloc((size_t)(L * E), 4);
    float *g_dxz = (float *)calloc((size_t)(L * 2 * E), 4), *g_dq = (float *)calloc((size_t)(L * ldbc), 4);
    mc_exec hx = {};
    hx.n_threads = 1;
    mc_ref_selective_scan_bwd(&hx, w_du, w_ddt, w_dxz + E, w_dq + R_RANK, w_dq + R_RANK + N, w_dA, w_dD, w_db, NULL,
                              h.dy, NULL, h.u, h.dt, h.dtb, h.A, h.q + R_RANK, h.q + R_RANK + N, ldbc, h.D, h.xz + E,
                              2 * E, NULL, 1, L, E, N);
    if (st == MC_OK) {
        st = run_bwd(ops, ex, &d, Bt, L, E, N);
    }
    if (st == MC_OK) {
        st = ops->download(ex, g_du, d.du, (size_t)(L * E) * 4);
    }
    if (st == MC_OK) {
        st = ops->download(ex, g_ddt, d.ddt, (size_t)(L * E) * 4);
    }
    if (st == MC_OK) {
        st = ops->download(ex, g_dxz, d.dxz, (size_t)(L * 2 * E) * 4);
    }
    if (st == MC_OK) {
        st = ops->download(ex, g_dq, d.dq, (size_t)(L * ldbc) * 4);
    }
    if (st != MC_OK) {
        printf("FAIL: %s\n", ex->err->msg);
        return 1;
    }
    double worst = rel_err(g_du, w_du, L, E, 0, E);
    worst = fmax(worst, rel_err(g_ddt, w_ddt, L, E, 0, E));
    worst = fmax(worst, rel_err(g_dxz, w_dxz, L, 2 * E, E, E));
    worst = fmax(worst, rel_err(g_dq, w_dq, L, ldbc, R_RANK, N));
    worst = fmax(worst, rel_err(g_dq, w_dq, L, ldbc, R_RANK + N, N));
    const double t_fwd = time_op(run_fwd, ops, ex, &d, Bt, L, E, N, reps);
    const double t_bwd = time_op(run_bwd, ops, ex, &d, Bt, L, E, N, reps);
    const double t_conv = time_op(run_conv, ops, ex, &d, Bt, L, E, N, reps);
    if (t_fwd < 0 || t_bwd < 0 || t_conv < 0) {
        printf("FAIL: %s\n", ex->err->msg);
        return 1;
    }
    // Fewest bytes: forward reads u, Δ, z, B, C and writes y (h in and out); backward also reads dy and writes du,
    // ddt, dz, dB, dC; conv1d_bwd reads x and du, writes dx.
    const double ue = 4.0 * (double)n_u, bc = 4.0 * (double)(rows * 2 * N), hb = 4.0 * (double)n_h;
    const double b_fwd = 4 * ue + bc + 2 * hb, b_bwd = 7 * ue + 2 * bc, b_conv = 3 * ue;
    printf(
        "Bt=%lld L=%lld E=%lld N=%lld: backward sequence 0 vs ref: max err / max|ref| = %.2g (du, ddt, dz, dB, dC)\n",
        (long long)Bt, (long long)L, (long long)E, (long long)N, worst);
    printf("  selective_scan      %8.3f ms  %6.0f GB/s\n", t_fwd, b_fwd / (t_fwd * 1e-3) / 1e9);
    printf("  selective_scan_bwd  %8.3f ms  %6.0f GB/s\n", t_bwd, b_bwd / (t_bwd * 1e-3) / 1e9);
    printf("  conv1d_bwd (K=%d)    %8.3f ms  %6.0f GB/s\n", K_CONV, t_conv, b_conv / (t_conv * 1e-3) / 1e9);
    for (size_t i = 0; i < sizeof(dp) / sizeof(dp[0]); i++) {
        ops->free(ex, *dp[i]);
    }
    for (size_t i = 0; i < sizeof(hp) / sizeof(hp[0]); i++) {
        free(*hp[i]);
    }
    float *outs[] = { w_du, w_ddt, w_dxz, w_dq, w_dA, w_dD, w_db, g_du, g_ddt, g_dxz, g_dq };
    for (size_t i = 0; i < sizeof(outs) / sizeof(outs[0]); i++) {
        free(outs[i]);
    }
    return worst <= 1e-4 ? 0 : 1;
}

int main(int argc, char **argv) {
    const int64_t L = argc > 2 ? atoll(argv[2]) : 1024, E = argc > 3 ? atoll(argv[3]) : 1536,
                  N = argc > 4 ? atoll(argv[4]) : 16;
    const int reps = argc > 5 ? atoi(argv[5]) : 20;
    mc_error err = {};
    const mc_ops *ops = mc_ops_get(MC_BACKEND_CUDA, &err);
    mc_exec ex;
    if (ops == NULL || ops->exec_init(&ex, 1, &err) != MC_OK) {
        printf("SKIP: no CUDA device usable: %s\n", err.msg);
        return 77;
    }
    ex.err = &err;
    cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, mc_cuda_ctx_of(&ex)->device);
    printf("device: %s\n", prop.name);
    int rc = 0;
    if (argc > 1) {
        rc = bench_shape(ops, &ex, atoll(argv[1]), L, E, N, reps);
    } else {
        rc = bench_shape(ops, &ex, 4, L, E, N, reps);
        rc |= bench_shape(ops, &ex, 16, L, E, N, reps);
    }
    ops->exec_free(&ex);
    return rc;
}
