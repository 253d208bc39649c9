// The LoRA adapter's products on the device, skinny.cu's kernels against cuBLAS's SGEMM: for each adapted site of
// mamba-130m (in_proj 768 → 3072, x_proj 1536 → 80, out_proj 1536 → 768) at rank r and M rows, the six products
// a training step makes (as the trainer's matmul, matmul_add, matmul_dx and matmul_dw call mc_cuda_gemm_f32), each
// checked once against SGEMM and then timed with events (median of reps), with the bytes it must move at least and
// the bandwidth that gives.
//   usage: bench_skinny_cuda [M r reps]   (defaults: M 4096, r 8, 50 reps)
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels/cuda/common.cuh"

static int cmp_float(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

typedef struct product {
    const char *name;
    bool ta, tb;
    int64_t m, n, k, lda, ldb, ldc;
    float beta;
    const float *a, *b;
    float *c;
} product;

static float *dev_random(int64_t n, uint64_t seed) {
    float *h = (float *)malloc((size_t)n * sizeof(float)), *d = NULL;
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        h[i] = (float)((seed >> 40) & 0xffffff) / 16777216.0f - 0.5f;
    }
    if (cudaMalloc(&d, (size_t)n * sizeof(float)) != cudaSuccess ||
        cudaMemcpy(d, h, (size_t)n * sizeof(float), cudaMemcpyHostToDevice) != cudaSuccess) {
        fprintf(stderr, "bench_skinny_cuda: cannot allocate %lld floats on the device\n", (long long)n);
        exit(1);
    }
    free(h);
    return d;
}

// One run of p: skinny.cu's kernels when skinny, else cublasSgemm.
static mc_status run(const mc_exec *ex, const product *p, bool skinny) {
    if (skinny) {
        bool done = false;
        mc_status st = mc_cuda_gemm_skinny(ex, p->ta, p->tb, p->m, p->n, p->k, p->a, p->lda, p->b, p->ldb, p->beta,
                                           p->c, p->ldc, &done);
        return st == MC_OK && !done ? MC_ERR_UNSUPPORTED : st;
    }
    const float one = 1.0f;
    return mc_cublas_status(cublasSgemm(mc_cuda_ctx_of(ex)->blas, p->ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                                        p->tb ? CUBLAS_OP_T : CUBLAS_OP_N, (int)p->m, (int)p->n, (int)p->k, &one,
                                        p->a, (int)p->lda, p->b, (int)p->ldb, &p->beta, p->c, (int)p->ldc),
                            "sgemm", ex);
}

static float time_us(const mc_exec *ex, const product *p, bool skinny, int reps) {
    cudaStream_t s = mc_cuda_ctx_of(ex)->stream;
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    float *t = (float *)malloc((size_t)reps * sizeof(float));
    for (int i = 0; i < reps; i++) {
        cudaEventRecord(e0, s);
        if (run(ex, p, skinny) != MC_OK) {
            fprintf(stderr, "bench_skinny_cuda: %s failed\n", p->name);
            exit(1);
        }
        cudaEventRecord(e1, s);
        cudaEventSynchronize(e1);
        cudaEventElapsedTime(&t[i], e0, e1);
    }
    qsort(t, (size_t)reps, sizeof(float), cmp_float);
    const float med = t[reps / 2] * 1000.0f;
    free(t);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    return med;
}

// max |skinny − sgemm| / max |sgemm| over C, from the same starting C.
static double check(const mc_exec *ex, const product *p) {
    const int64_t n_c = p->ldc * p->n;
    float *c0 = (float *)malloc((size_t)n_c * sizeof(float)), *want = (float *)malloc((size_t)n_c * sizeof(float));
    float *got = (float *)malloc((size_t)n_c * sizeof(float));
    cudaMemcpy(c0, p->c, (size_t)n_c * sizeof(float), cudaMemcpyDeviceToHost);
    run(ex, p, false);
    cudaMemcpy(want, p->c, (size_t)n_c * sizeof(float), cudaMemcpyDeviceToHost);
    cudaMemcpy(p->c, c0, (size_t)n_c * sizeof(float), cudaMemcpyHostToDevice);
    if (run(ex, p, true) != MC_OK) {
        fprintf(stderr, "bench_skinny_cuda: %s is not a skinny product\n", p->name);
        exit(1);
    }
    cudaMemcpy(got, p->c, (size_t)n_c * sizeof(float), cudaMemcpyDeviceToHost);
    double scale = 0, worst = 0;
    for (int64_t i = 0; i < n_c; i++) {
        scale = fmax(scale, fabs(want[i]));
        worst = fmax(worst, fabs((double)got[i] - want[i]));
    }
    free(c0);
    free(want);
    free(got);
    return scale > 0 ? worst / scale : worst;
}

int main(int argc, char **argv) {
    const int64_t M = argc > 1 ? atoll(argv[1]) : 4096, r = argc > 2 ? atoll(argv[2]) : 8;
    const int reps = argc > 3 ? atoi(argv[3]) : 50;
    if (M < 1 || r < 1 || r > 16 || reps < 1) {
        fprintf(stderr, "usage: bench_skinny_cuda [M r reps]   (M >= 1, 1 <= r <= 16, reps >= 1)\n");
        return 2;
    }
    setenv("MAMBAC_SKINNY", "1", 1);
    mc_error err = {};
    const mc_ops *ops = mc_ops_get(MC_BACKEND_CUDA, &err);
    mc_exec ex;
    if (ops == NULL || ops->exec_init(&ex, 1, &err) != MC_OK) {
        fprintf(stderr, "bench_skinny_cuda: %s\n", err.msg);
        return 1;
    }
    const struct {
        const char *name;
        int64_t in, out;
    } sites[] = { { "in_proj", 768, 3072 }, { "x_proj", 1536, 80 }, { "out_proj", 1536, 768 } };
    printf("LoRA products, M %lld rows, rank %lld, median of %d (device times, µs)\n", (long long)M, (long long)r,
           reps);
    printf("%-24s %12s %10s %10s %8s %10s %10s\n", "product", "min MB", "skinny", "sgemm", "ratio", "GB/s", "rel err");
    double total_s = 0, total_b = 0;
    for (size_t si = 0; si < sizeof(sites) / sizeof(sites[0]); si++) {
        const int64_t K = sites[si].in, N = sites[si].out;
        float *x = dev_random(M * K, 1), *A = dev_random(r * K, 2), *B = dev_random(N * r, 3), *xa = dev_random(M * r, 4);
        float *y = dev_random(M * N, 5), *dy = dev_random(M * N, 6), *gA = dev_random(r * K, 7);
        float *gB = dev_random(N * r, 8), *tr = dev_random(M * r, 9), *dx = dev_random(M * K, 10);
        // (the column-major calls of the trainer's row-major products)
        const product ps[] = {
            { "x·Aᵀ (matmul)", true, false, r, M, K, K, K, r, 0.0f, A, x, xa },
            { "y += xa·Bᵀ (matmul_add)", true, false, N, M, r, r, r, N, 1.0f, B, xa, y },
            { "dB += dyᵀ·xa (dw)", false, true, r, N, M, r, N, r, 1.0f, xa, dy, gB },
            { "tr = dy·B (dx)", false, false, r, M, N, r, N, r, 0.0f, B, dy, tr },
            { "dA += trᵀ·x (dw)", false, true, K, r, M, K, r, K, 1.0f, x, tr, gA },
            { "dx += tr·A (dx)", false, false, K, M, r, K, r, K, 1.0f, A, tr, dx },
        };
        const double bytes[] = { 4.0 * M * K, 8.0 * M * N, 4.0 * M * N, 4.0 * M * N, 4.0 * M * K, 8.0 * M * K };
        for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) {
            const double e = check(&ex, &ps[i]);
            const float ts = time_us(&ex, &ps[i], true, reps), tc = time_us(&ex, &ps[i], false, reps);
            char label[64];
            snprintf(label, sizeof(label), "%s %s", sites[si].name, ps[i].name);
            printf("%-34s %8.1f %10.1f %10.1f %8.2f %10.0f %10.2e\n", label, bytes[i] / 1e6, ts, tc, tc / ts,
                   bytes[i] / ts / 1e3, e);
            total_s += ts;
            total_b += tc;
        }
        float *bufs[] = { x, A, B, xa, y, dy, gA, gB, tr, dx };
        for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) {
            cudaFree(bufs[i]);
        }
    }
    printf("a layer's 18 products: skinny %.1f µs, sgemm %.1f µs (%.2fx)\n", total_s, total_b, total_b / total_s);
    ops->exec_free(&ex);
    return 0;
}
