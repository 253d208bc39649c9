// Selective-scan kernel benchmark on the device: the cuda backend's sequence scan at batch 8 × d_inner 1536 ×
// length 2048 × state 16 (issue 9's shape), timed with events over the op table's entry, with the bytes it must
// move (every input read once, y written once, h read and written) and the achieved bandwidth. Checked once against
// the reference twin on the first sequence before timing.
//   usage: bench_scan_cuda [Bt E L N reps]
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/common.cuh"

extern "C" {
#include "kernels/ref/ref.h"
}

static float uniform(uint64_t *s, float lo, float hi) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return lo + (hi - lo) * (float)((*s >> 40) & 0xffffff) / 16777216.0f;
}

static int cmp_float(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    const int64_t Bt = argc > 1 ? atoll(argv[1]) : 8, E = argc > 2 ? atoll(argv[2]) : 1536,
                  L = argc > 3 ? atoll(argv[3]) : 2048, N = argc > 4 ? atoll(argv[4]) : 16;
    const int reps = argc > 5 ? atoi(argv[5]) : 20;
    mc_error err = {};
    const mc_ops *ops = mc_ops_get(MC_BACKEND_CUDA, &err);
    mc_exec ex;
    if (ops == NULL || ops->exec_init(&ex, 1, &err) != MC_OK) {
        printf("SKIP: no CUDA device usable: %s\n", err.msg);
        return 77;
    }
    ex.err = &err;
    const int64_t rows = Bt * L, ldbc = 2 * N; // B then C in one [rows, 2N] array, as x_proj lays them out (no δ)
    const size_t n_u = (size_t)(rows * E), n_bc = (size_t)(rows * ldbc), n_h = (size_t)(Bt * E * N);
    float *u = (float *)malloc(n_u * 4), *dt = (float *)malloc(n_u * 4), *z = (float *)malloc(n_u * 4);
    float *bc = (float *)malloc(n_bc * 4), *h = (float *)calloc(n_h, 4), *y = (float *)malloc(n_u * 4);
    float *dtb = (float *)malloc((size_t)E * 4), *A = (float *)malloc((size_t)(E * N) * 4),
          *D = (float *)malloc((size_t)E * 4);
    uint64_t s = 7;
    for (size_t i = 0; i < n_u; i++) {
        u[i] = uniform(&s, -2, 2);
        dt[i] = uniform(&s, -6, 3);
        z[i] = uniform(&s, -4, 4);
    }
    for (size_t i = 0; i < n_bc; i++) {
        bc[i] = uniform(&s, -1, 1);
    }
    for (int64_t e = 0; e < E; e++) {
        dtb[e] = uniform(&s, -2, 1);
        D[e] = uniform(&s, -1, 1);
        for (int64_t n = 0; n < N; n++) {
            A[e * N + n] = -(float)(n + 1);
        }
    }
    void *du, *ddt, *dz, *dbc, *dh, *dy, *ddtb, *dA, *dD;
    mc_status st = MC_OK;
    void **bufs[] = { &du, &ddt, &dz, &dbc, &dh, &dy, &ddtb, &dA, &dD };
    const float *srcs[] = { u, dt, z, bc, h, y, dtb, A, D };
    const size_t sizes[] = { n_u, n_u, n_u, n_bc, n_h, n_u, (size_t)E, (size_t)(E * N), (size_t)E };
    for (int i = 0; st == MC_OK && i < 9; i++) {
        st = ops->alloc(&ex, bufs[i], sizes[i] * 4);
        if (st == MC_OK && i != 5) {
            st = ops->upload(&ex, *bufs[i], srcs[i], sizes[i] * 4);
        }
    }
    if (st == MC_OK) { // one check against the reference on sequence 0 before timing
        st = ops->selective_scan(&ex, (float *)dy, (float *)dh, (float *)du, (float *)ddt, (float *)ddtb, (float *)dA,
                                 (float *)dbc, (float *)dbc + N, ldbc, (float *)dD, (float *)dz, E, Bt, L, E, N);
    }
    if (st == MC_OK) {
        st = ops->download(&ex, y, dy, (size_t)(L * E) * 4);
    }
    if (st != MC_OK) {
        printf("FAIL: %s\n", err.msg);
        return 1;
    }
    float *want = (float *)malloc((size_t)(L * E) * 4), *h0 = (float *)calloc((size_t)(E * N), 4);
    mc_ref_selective_scan(&ex, want, h0, u, dt, dtb, A, bc, bc + N, ldbc, D, z, E, L, E, N);
    double scale = 0, worst = 0;
    for (int64_t i = 0; i < L * E; i++) {
        scale = fmax(scale, fabs(want[i]));
        worst = fmax(worst, fabs((double)y[i] - want[i]));
    }
    const mc_cuda_ctx *c = mc_cuda_ctx_of(&ex);
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    float *ms = (float *)malloc((size_t)reps * sizeof(float));
    for (int r = -3; r < reps && st == MC_OK; r++) { // 3 warm-ups
        cudaEventRecord(e0, c->stream);
        st = ops->selective_scan(&ex, (float *)dy, (float *)dh, (float *)du, (float *)ddt, (float *)ddtb, (float *)dA,
                                 (float *)dbc, (float *)dbc + N, ldbc, (float *)dD, (float *)dz, E, Bt, L, E, N);
        cudaEventRecord(e1, c->stream);
        cudaEventSynchronize(e1);
        if (r >= 0) {
            cudaEventElapsedTime(&ms[r], e0, e1);
        }
    }
    if (st != MC_OK || ops->sync(&ex) != MC_OK) {
        printf("FAIL: %s\n", err.msg);
        return 1;
    }
    qsort(ms, (size_t)reps, sizeof(float), cmp_float);
    const double med = ms[reps / 2];
    // Fewest bytes: u, Δ, z, B, C read once, y written once, h read and written once, the per-channel vectors.
    const double bytes = 4.0 * (4.0 * (double)n_u + (double)n_bc + 2.0 * (double)n_h + (double)(E * N + 2 * E));
    cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, c->device);
    printf("device: %s\n", prop.name);
    printf("selective_scan f32 Bt=%lld E=%lld L=%lld N=%lld: median %.3f ms (min %.3f, max %.3f over %d), "
           "%.1f MB moved, %.0f GB/s; max err vs ref (sequence 0) / max|ref| = %.2g\n",
           (long long)Bt, (long long)E, (long long)L, (long long)N, med, ms[0], ms[reps - 1], reps, bytes / 1e6,
           bytes / (med * 1e-3) / 1e9, scale > 0 ? worst / scale : worst);
    for (int i = 0; i < 9; i++) {
        ops->free(&ex, *bufs[i]);
    }
    ops->exec_free(&ex);
    free(u);
    free(dt);
    free(z);
    free(bc);
    free(h);
    free(y);
    free(dtb);
    free(A);
    free(D);
    free(want);
    free(h0);
    free(ms);
    return worst <= 1e-4 * scale ? 0 : 1;
}
