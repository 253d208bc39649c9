// Selective-scan and conv1d backward benchmark on the device: the cuda backend's selective_scan (forward),
// selective_scan_bwd and conv1d_bwd at mamba-130m's training shapes (d_inner 1536, d_state 16, dt_rank 48 so B and C
// are columns of a [rows, 80] matrix, z the second half of xz [rows, 3072], d_conv 4), timed with events over the
// op table's entries, with the fewest bytes each must move and the achieved bandwidth; then each scan kernel the
// entries can reach, called directly (the tiled kernels that walk time in order, and every configuration of the
// parallel ones in scan_par.cu that takes N), so one run compares them. Every timed variant is checked once before
// timing against the reference twin on sequence 0: the forward's y from h = 0, the backward's du, ddt, dz, dB, dC.
//   usage: bench_scan_bwd_cuda [Bt L E N reps]   (defaults: Bt = 4 and then 16, L 1024, E 1536, N 16, 20 reps)
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/common.cuh"

extern "C" {
#include "kernels/ref/backward.h"
#include "kernels/ref/ref.h"
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

// The kernel a run_fwd / run_bwd call takes: the op table's entry (VAR_OP), the tiled kernel, or a scan_par.cu
// configuration (VAR_PAR + config).
enum { VAR_OP = 0, VAR_TILED = 1, VAR_PAR = 10 };
static int g_var = VAR_OP;

static mc_status run_bwd(const mc_ops *ops, const mc_exec *ex, const dev_bufs *d, int64_t Bt, int64_t L, int64_t E,
                         int64_t N) {
    const int64_t ldbc = R_RANK + 2 * N;
    if (g_var == VAR_TILED) {
        return mc_cuda_scan_bwd_tiled(ex, d->du, d->ddt, d->dxz + E, d->dq + R_RANK, d->dq + R_RANK + N, d->dA, d->dD,
                                      d->ddtb, NULL, d->dy, NULL, d->u, d->dt, d->dtb, d->A, d->q + R_RANK,
                                      d->q + R_RANK + N, ldbc, d->D, d->xz + E, 2 * E, NULL, Bt, L, E, N);
    }
    if (g_var >= VAR_PAR) {
        return mc_cuda_scan_par_bwd(ex, g_var - VAR_PAR, d->du, d->ddt, d->dxz + E, d->dq + R_RANK, d->dq + R_RANK + N,
                                    d->dA, d->dD, d->ddtb, NULL, d->dy, NULL, d->u, d->dt, d->dtb, d->A, d->q + R_RANK,
                                    d->q + R_RANK + N, ldbc, d->D, d->xz + E, 2 * E, NULL, Bt, L, E, N, NULL);
    }
    return ops->selective_scan_bwd(ex, d->du, d->ddt, d->dxz + E, d->dq + R_RANK, d->dq + R_RANK + N, d->dA, d->dD,
                                   d->ddtb, NULL, d->dy, NULL, d->u, d->dt, d->dtb, d->A, d->q + R_RANK,
                                   d->q + R_RANK + N, ldbc, d->D, d->xz + E, 2 * E, NULL, Bt, L, E, N);
}

static mc_status run_fwd(const mc_ops *ops, const mc_exec *ex, const dev_bufs *d, int64_t Bt, int64_t L, int64_t E,
                         int64_t N) {
    const int64_t ldbc = R_RANK + 2 * N;
    if (g_var == VAR_TILED) {
        return mc_cuda_scan_tiled(ex, d->y, d->h, d->u, d->dt, d->dtb, d->A, d->q + R_RANK, d->q + R_RANK + N, ldbc,
                                  d->D, d->xz + E, 2 * E, Bt, L, E, N);
    }
    if (g_var >= VAR_PAR) {
        return mc_cuda_scan_par(ex, g_var - VAR_PAR, d->y, d->h, d->u, d->dt, d->dtb, d->A, d->q + R_RANK,
                                d->q + R_RANK + N, ldbc, d->D, d->xz + E, 2 * E, Bt, L, E, N, NULL);
    }
    return ops->selective_scan(ex, d->y, d->h, d->u, d->dt, d->dtb, d->A, d->q + R_RANK, d->q + R_RANK + N, ldbc, d->D,
                               d->xz + E, 2 * E, Bt, L, E, N);
}

// The backward's per-sequence outputs of sequence 0 (du, ddt, dz, dB, dC) after one call of the current variant,
// against the reference's: max err / max|ref| over the five, or a negative value when the call fails.
static double check_bwd(const mc_ops *ops, const mc_exec *ex, const dev_bufs *d, int64_t Bt, int64_t L, int64_t E,
                        int64_t N, const float *w_du, const float *w_ddt, const float *w_dxz, const float *w_dq) {
    const int64_t ldbc = R_RANK + 2 * N;
    float *g_du = (float *)calloc((size_t)(L * E), 4), *g_ddt = (float *)calloc((size_t)(L * E), 4);
    float *g_dxz = (float *)calloc((size_t)(L * 2 * E), 4), *g_dq = (float *)calloc((size_t)(L * ldbc), 4);
    mc_status st = run_bwd(ops, ex, d, Bt, L, E, N);
    if (st == MC_OK) {
        st = ops->download(ex, g_du, d->du, (size_t)(L * E) * 4);
    }
    if (st == MC_OK) {
        st = ops->download(ex, g_ddt, d->ddt, (size_t)(L * E) * 4);
    }
    if (st == MC_OK) {
        st = ops->download(ex, g_dxz, d->dxz, (size_t)(L * 2 * E) * 4);
    }
    if (st == MC_OK) {
        st = ops->download(ex, g_dq, d->dq, (size_t)(L * ldbc) * 4);
    }
    double worst = -1.0;
    if (st == MC_OK) {
        worst = rel_err(g_du, w_du, L, E, 0, E);
        worst = fmax(worst, rel_err(g_ddt, w_ddt, L, E, 0, E));
        worst = fmax(worst, rel_err(g_dxz, w_dxz, L, 2 * E, E, E));
        worst = fmax(worst, rel_err(g_dq, w_dq, L, ldbc, R_RANK, N));
        worst = fmax(worst, rel_err(g_dq, w_dq, L, ldbc, R_RANK + N, N));
    }
    free(g_du);
    free(g_ddt);
    free(g_dxz);
    free(g_dq);
    return worst;
}

// The forward's y of sequence 0 from h = 0 after one call of the current variant, against w_y (the reference's).
static double check_fwd(const mc_ops *ops, const mc_exec *ex, const dev_bufs *d, int64_t Bt, int64_t L, int64_t E,
                        int64_t N, const float *w_y) {
    float *g_y = (float *)calloc((size_t)(L * E), 4);
    mc_status st = ops->zero(ex, d->h, (size_t)(Bt * E * N) * 4);
    if (st == MC_OK) {
        st = run_fwd(ops, ex, d, Bt, L, E, N);
    }
    if (st == MC_OK) {
        st = ops->download(ex, g_y, d->y, (size_t)(L * E) * 4);
    }
    const double worst = st == MC_OK ? rel_err(g_y, w_y, L, E, 0, E) : -1.0;
    free(g_y);
    return worst;
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
    mc_exec hx = {};
    hx.n_threads = 1;
    mc_ref_selective_scan_bwd(&hx, w_du, w_ddt, w_dxz + E, w_dq + R_RANK, w_dq + R_RANK + N, w_dA, w_dD, w_db, NULL,
                              h.dy, NULL, h.u, h.dt, h.dtb, h.A, h.q + R_RANK, h.q + R_RANK + N, ldbc, h.D, h.xz + E,
                              2 * E, NULL, 1, L, E, N);
    // Reference forward for sequence 0 from h = 0.
    float *w_y = (float *)calloc((size_t)(L * E), 4), *w_h = (float *)calloc((size_t)(E * N), 4);
    mc_ref_selective_scan(&hx, w_y, w_h, h.u, h.dt, h.dtb, h.A, h.q + R_RANK, h.q + R_RANK + N, ldbc, h.D, h.xz + E,
                          2 * E, L, E, N);
    if (st != MC_OK) {
        printf("FAIL: %s\n", ex->err->msg);
        return 1;
    }
    const double ue = 4.0 * (double)n_u, bc = 4.0 * (double)(rows * 2 * N), hb = 4.0 * (double)n_h;
    const double b_fwd = 4 * ue + bc + 2 * hb, b_bwd = 7 * ue + 2 * bc, b_conv = 3 * ue;
    printf("Bt=%lld L=%lld E=%lld N=%lld (errors: max err / max|ref| on sequence 0; forward y, backward du, ddt, dz, "
           "dB, dC)\n", (long long)Bt, (long long)L, (long long)E, (long long)N);
    // Variants: the op table's choice, the tiled kernels, each scan_par.cu configuration that takes N.
    const struct {
        const char *name;
        int var;
        bool fwd, bwd;
    } vars[] = { { "op table", VAR_OP, true, true },
                 { "tiled (time in order)", VAR_TILED, N <= 64, N <= 128 },
                 { "par fwd 1 S8 / bwd 1 S4 G4", VAR_PAR + 1, N <= 16, N <= 16 },
                 { "par fwd 2 S4 / bwd 2 S4 G2", VAR_PAR + 2, N <= 16, N <= 16 },
                 { "par fwd 3 / bwd 3 (N <= 64)", VAR_PAR + 3, N <= 64, N <= 64 },
                 { "par fwd 4 S16 / bwd 4 S8 G4", VAR_PAR + 4, N <= 16, N <= 16 },
                 { "par bwd 5 S4 G1", VAR_PAR + 5, false, N <= 16 } };
    double worst = 0;
    int rc = 0;
    for (size_t v = 0; v < sizeof(vars) / sizeof(vars[0]); v++) {
        g_var = vars[v].var;
        if (vars[v].fwd) {
            const double err = check_fwd(ops, ex, &d, Bt, L, E, N, w_y);
            const double t = err < 0 ? -1.0 : time_op(run_fwd, ops, ex, &d, Bt, L, E, N, reps);
            if (err < 0 || t < 0) {
                printf("  FAIL selective_scan [%s]: %s\n", vars[v].name, ex->err->msg);
                rc = 1;
            } else {
                printf("  selective_scan      %8.3f ms  %6.0f GB/s  err %.2g  [%s]\n", t, b_fwd / (t * 1e-3) / 1e9, err,
                       vars[v].name);
                worst = fmax(worst, err);
            }
        }
        if (vars[v].bwd) {
            const double err = check_bwd(ops, ex, &d, Bt, L, E, N, w_du, w_ddt, w_dxz, w_dq);
            const double t = err < 0 ? -1.0 : time_op(run_bwd, ops, ex, &d, Bt, L, E, N, reps);
            if (err < 0 || t < 0) {
                printf("  FAIL selective_scan_bwd [%s]: %s\n", vars[v].name, ex->err->msg);
                rc = 1;
            } else {
                printf("  selective_scan_bwd  %8.3f ms  %6.0f GB/s  err %.2g  [%s]\n", t, b_bwd / (t * 1e-3) / 1e9,
                       err, vars[v].name);
                worst = fmax(worst, err);
            }
        }
    }
    g_var = VAR_OP;
    const double t_conv = time_op(run_conv, ops, ex, &d, Bt, L, E, N, reps);
    if (t_conv < 0) {
        printf("FAIL: %s\n", ex->err->msg);
        return 1;
    }
    printf("  conv1d_bwd (K=%d)    %8.3f ms  %6.0f GB/s\n", K_CONV, t_conv, b_conv / (t_conv * 1e-3) / 1e9);
    free(w_y);
    free(w_h);
    for (size_t i = 0; i < sizeof(dp) / sizeof(dp[0]); i++) {
        ops->free(ex, *dp[i]);
    }
    for (size_t i = 0; i < sizeof(hp) / sizeof(hp[0]); i++) {
        free(*hp[i]);
    }
    float *outs[] = { w_du, w_ddt, w_dxz, w_dq, w_dA, w_dD, w_db };
    for (size_t i = 0; i < sizeof(outs) / sizeof(outs[0]); i++) {
        free(outs[i]);
    }
    return rc != 0 || worst > 1e-4 ? 1 : 0;
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
