// matmul paths on the device at the mamba-130m shapes: the GEMV kernel against cuBLAS (Sgemm for f32, the split-x
// GemmEx for bf16) per row count M, to place the switch between them (matmul.cu takes GEMV for M ≤ 8). Events,
// median of 30 calls after 5 warm-ups; GB/s counts the weight bytes once per call.
//   usage: bench_matmul_cuda
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels/cuda/common.cuh"

static int cmp_float(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

static float time_path(const mc_exec *ex, int path, float *y, const float *x, const mc_weight *w, int64_t M) {
    const mc_cuda_ctx *c = mc_cuda_ctx_of(ex);
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    float ms[30];
    for (int r = -5; r < 30; r++) {
        cudaEventRecord(e0, c->stream);
        if (mc_cuda_matmul_path(ex, path, y, x, w->cols, w, NULL, M, w->rows, w->cols) != MC_OK) {
            return -1;
        }
        cudaEventRecord(e1, c->stream);
        cudaEventSynchronize(e1);
        if (r >= 0) {
            cudaEventElapsedTime(&ms[r], e0, e1);
        }
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    qsort(ms, 30, sizeof(float), cmp_float);
    return ms[15];
}

int main(void) {
    mc_error err = {};
    const mc_ops *ops = mc_ops_get(MC_BACKEND_CUDA, &err);
    mc_exec ex;
    if (ops == NULL || ops->exec_init(&ex, 1, &err) != MC_OK) {
        printf("SKIP: no CUDA device usable: %s\n", err.msg);
        return 77;
    }
    ex.err = &err;
    struct shape {
        const char *name;
        int64_t N, K;
    } shapes[] = { { "in_proj", 3072, 768 }, { "x_proj", 80, 1536 }, { "dt_proj", 1536, 48 },
                   { "out_proj", 768, 1536 }, { "lm_head", 50280, 768 } };
    const int dtypes[] = { MC_DTYPE_F32, MC_DTYPE_BF16 };
    const int64_t Ms[] = { 1, 4, 8, 16, 32, 64, 128 };
    void *w = NULL, *x = NULL, *y = NULL;
    if (ops->alloc(&ex, &w, (size_t)50280 * 768 * 4) != MC_OK || ops->alloc(&ex, &x, (size_t)128 * 1536 * 4) != MC_OK ||
        ops->alloc(&ex, &y, (size_t)128 * 50280 * 4) != MC_OK) {
        printf("FAIL: %s\n", err.msg);
        return 1;
    }
    // Random-ish contents (not zeros): a byte pattern that is a finite value in every dtype.
    cudaMemset(w, 0x3c, (size_t)50280 * 768 * 4);
    cudaMemset(x, 0x3c, (size_t)128 * 1536 * 4);
    cudaDeviceSynchronize();
    printf("| shape | dtype | M | gemv ms | gemv weight GB/s | cuBLAS ms |\n|---|---|---:|---:|---:|---:|\n");
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
        for (int d = 0; d < 2; d++) {
            mc_weight wt = { w, dtypes[d], shapes[s].N, shapes[s].K, NULL, 0 };
            for (size_t m = 0; m < sizeof(Ms) / sizeof(Ms[0]); m++) {
                const float g = time_path(&ex, MC_MATMUL_GEMV, (float *)y, (const float *)x, &wt, Ms[m]);
                const float b = time_path(&ex, MC_MATMUL_BLAS, (float *)y, (const float *)x, &wt, Ms[m]);
                const double bytes = (double)(shapes[s].N * shapes[s].K * (dtypes[d] == MC_DTYPE_F32 ? 4 : 2));
                printf("| %s | %s | %lld | %.4f | %.0f | %.4f |\n", shapes[s].name, mc_dtype_name((mc_dtype)dtypes[d]),
                       (long long)Ms[m], g, bytes / (g * 1e-3) / 1e9, b);
            }
        }
    }
    ops->free(&ex, w);
    ops->free(&ex, x);
    ops->free(&ex, y);
    ops->exec_free(&ex);
    return 0;
}
