// Residual add + RMSNorm on the device (spec §3.2–3.3): one block per row; the sum of squares in f32 as the
// reference, reduced in a tree (so it differs from the reference's sequential sum only by rounding).
#include "kernels/cuda/common.cuh"

#define NORM_THREADS 256

__global__ void __launch_bounds__(NORM_THREADS)
    rmsnorm_kernel(float *__restrict__ y, float *__restrict__ x, const float *__restrict__ add,
                   const float *__restrict__ w, int64_t H, float eps) {
    __shared__ float partial[NORM_THREADS / 32];
    mc_pdl_wait();
    mc_pdl_trigger();
    const int64_t m = blockIdx.x;
    float *xm = x + m * H;
    float ss = 0.0f;
    for (int64_t h = threadIdx.x; h < H; h += NORM_THREADS) {
        float v = xm[h];
        if (add != nullptr) {
            v += add[m * H + h];
            xm[h] = v;
        }
        ss = fmaf(v, v, ss);
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        ss += __shfl_xor_sync(0xffffffffu, ss, off);
    }
    if ((threadIdx.x & 31) == 0) {
        partial[threadIdx.x >> 5] = ss;
    }
    __syncthreads();
    float total = 0.0f;
#pragma unroll
    for (int i = 0; i < NORM_THREADS / 32; i++) {
        total += partial[i];
    }
    const float r = 1.0f / sqrtf(total / (float)H + eps);
    // Each thread reads back only the elements it wrote itself, so no barrier is needed before this pass.
    for (int64_t h = threadIdx.x; h < H; h += NORM_THREADS) {
        y[m * H + h] = xm[h] * r * w[h];
    }
}

extern "C" mc_status mc_cuda_rmsnorm(const mc_exec *ex, float *y, float *x, const float *add, const float *w,
                                     int64_t M, int64_t H, float eps) {
    if (M <= 0) {
        return MC_OK;
    }
    if (M > INT32_MAX) {
        return mc_fail(mc_cuda_err(ex), MC_ERR_UNSUPPORTED, "cuda rmsnorm: %lld rows in one call", (long long)M);
    }
    mc_cuda_launch(rmsnorm_kernel, dim3((unsigned)M), dim3(NORM_THREADS), 0, mc_cuda_ctx_of(ex)->stream, y, x, add, w, H,
                   eps);
    return mc_cuda_launched("rmsnorm", ex);
}
