// Embedding lookup on the device: one block per output row, the table row dequantised as kernels/dtype.h does
// (f16/bf16 widened exactly, int8 q · scale of its group), so the rows equal the reference's bit for bit.
#include "kernels/cuda/common.cuh"

// out[b, t, :] = W[ids[b · ldi + t], :]; blockIdx.x = b · T + t.
__global__ void embed_kernel(float *__restrict__ out, const void *__restrict__ data, int dtype,
                             const float *__restrict__ scales, int64_t group, const int32_t *__restrict__ ids,
                             int64_t ldi, int64_t T, int64_t H) {
    mc_pdl_wait();
    mc_pdl_trigger();
    const int64_t row = blockIdx.x, b = row / T, t = row % T;
    const int64_t id = ids[b * ldi + t];
    const int64_t n_groups = scales != nullptr ? (H + group - 1) / group : 0;
    for (int64_t h = threadIdx.x; h < H; h += blockDim.x) {
        float v = mc_dev_element(data, dtype, id * H + h);
        if (scales != nullptr) {
            v *= scales[id * n_groups + h / group];
        }
        out[row * H + h] = v;
    }
}

extern "C" mc_status mc_cuda_embed(const mc_exec *ex, float *out, const mc_weight *w, const int32_t *ids, int64_t ldi,
                                   int64_t Bt, int64_t T, int64_t H) {
    if (Bt * T <= 0) {
        return MC_OK;
    }
    if (Bt * T > INT32_MAX) {
        return mc_fail(mc_cuda_err(ex), MC_ERR_UNSUPPORTED, "cuda embed: %lld rows in one call", (long long)(Bt * T));
    }
    const float *scales = w->dtype == MC_DTYPE_I8 ? w->scales : nullptr;
    mc_cuda_launch(embed_kernel, dim3((unsigned)(Bt * T)), dim3(256), 0, mc_cuda_ctx_of(ex)->stream, out, w->data,
                   w->dtype, scales, w->group, ids, ldi, T, H);
    return mc_cuda_launched("embed", ex);
}
