// Causal depthwise conv + SiLU on the device (spec §3.4 step 3), sequence and step forms. Window position s < 0
// reads the state's column K + s (the state holds inputs −K..−1), as the reference.
#include "kernels/cuda/common.cuh"

#define CONV_THREADS 256

// One thread per (b, t, e), e fastest so the reads of x are coalesced. The state is only read here.
__global__ void conv1d_kernel(float *__restrict__ u, const float *__restrict__ state, const float *__restrict__ x,
                              int64_t ldx, const float *__restrict__ w, const float *__restrict__ bias, int64_t Bt,
                              int64_t L, int64_t E, int64_t K) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= Bt * L * E) {
        return;
    }
    const int64_t e = i % E, t = (i / E) % L, b = i / (E * L);
    const float *xb = x + b * L * ldx;
    const float *sb = state + (b * E + e) * K;
    float acc = bias != nullptr ? bias[e] : 0.0f;
    for (int64_t k = 0; k < K; k++) {
        const int64_t s = t - (K - 1) + k;
        const float v = s >= 0 ? xb[s * ldx + e] : sb[K + s];
        acc += w[e * K + k] * v;
    }
    u[i] = mc_dev_silu(acc);
}

// New state: the last K of [old state, x[0..L)], one thread per (b, e). Ascending k reads only columns above the
// one it writes (K + s = L + k > k), so the shift is safe in place.
__global__ void conv1d_state_kernel(float *__restrict__ state, const float *__restrict__ x, int64_t ldx, int64_t Bt,
                                    int64_t L, int64_t E, int64_t K) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= Bt * E) {
        return;
    }
    const int64_t e = i % E, b = i / E;
    const float *xb = x + b * L * ldx;
    float *sb = state + i * K;
    for (int64_t k = 0; k < K; k++) {
        const int64_t s = L - K + k;
        sb[k] = s >= 0 ? xb[s * ldx + e] : sb[K + s];
    }
}

// The same for a kernel width KW known at compile time: a thread owns channel e (threads: consecutive channels)
// and TT consecutive steps of one sequence (grid: step runs, channel blocks, sequences), so its window's KW − 1 + TT
// inputs are read once, all loads out before the sums.
template <int KW, int TT>
__global__ void conv1d_tile_kernel(float *__restrict__ u, const float *__restrict__ state,
                                   const float *__restrict__ x, int64_t ldx, const float *__restrict__ w,
                                   const float *__restrict__ bias, int64_t L, int64_t E) {
    const int64_t e = (int64_t)blockIdx.y * blockDim.x + threadIdx.x, t0 = (int64_t)blockIdx.x * TT,
                  b = blockIdx.z;
    if (e >= E) {
        return;
    }
    const float *xb = x + b * L * ldx + e;
    const float *sb = state + (b * E + e) * KW;
    float win[KW - 1 + TT], wk[KW];
#pragma unroll
    for (int j = 0; j < KW - 1 + TT; j++) { // window slot j is step t0 − (KW − 1) + j
        const int64_t s = t0 - (KW - 1) + j;
        win[j] = s < 0 ? sb[KW + s] : s < L ? xb[s * ldx] : 0.0f;
    }
#pragma unroll
    for (int k = 0; k < KW; k++) {
        wk[k] = w[e * KW + k];
    }
    const float b0 = bias != nullptr ? bias[e] : 0.0f;
    float *ub = u + (b * L + t0) * E + e;
#pragma unroll
    for (int i = 0; i < TT; i++) {
        if (t0 + i < L) {
            float acc = b0;
#pragma unroll
            for (int k = 0; k < KW; k++) {
                acc += wk[k] * win[i + k];
            }
            ub[(int64_t)i * E] = mc_dev_silu(acc);
        }
    }
}

extern "C" mc_status mc_cuda_conv1d(const mc_exec *ex, float *u, float *state, const float *x, int64_t ldx,
                                    const float *w, const float *bias, int64_t Bt, int64_t L, int64_t E, int64_t K) {
    if (Bt * L * E <= 0) {
        return MC_OK;
    }
    cudaStream_t s = mc_cuda_ctx_of(ex)->stream;
    constexpr int TT = 8;
    if (K == 4 && Bt <= 65535 && (L + TT - 1) / TT <= INT32_MAX) {
        const dim3 grid((unsigned)((L + TT - 1) / TT), (unsigned)mc_cuda_blocks(E, 128), (unsigned)Bt);
        conv1d_tile_kernel<4, TT><<<grid, 128, 0, s>>>(u, state, x, ldx, w, bias, L, E);
    } else {
        conv1d_kernel<<<mc_cuda_blocks(Bt * L * E, CONV_THREADS), CONV_THREADS, 0, s>>>(u, state, x, ldx, w, bias, Bt,
                                                                                        L, E, K);
    }
    mc_status st = mc_cuda_launched("conv1d", ex);
    if (st != MC_OK) {
        return st;
    }
    conv1d_state_kernel<<<mc_cuda_blocks(Bt * E, CONV_THREADS), CONV_THREADS, 0, s>>>(state, x, ldx, Bt, L, E, K);
    return mc_cuda_launched("conv1d (state)", ex);
}

// One decode step: one thread per (sequence, channel) reads its window, writes u and shifts the window by one.
__global__ void conv1d_step_kernel(float *__restrict__ u, float *__restrict__ state, const float *__restrict__ x,
                                   int64_t ldx, const float *__restrict__ w, const float *__restrict__ bias,
                                   int64_t n_seq, int64_t E, int64_t K) {
    mc_pdl_wait();
    mc_pdl_trigger();
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_seq * E) {
        return;
    }
    const int64_t e = i % E, sq = i / E;
    float *st = state + i * K;
    const float xv = x[sq * ldx + e];
    float acc = bias != nullptr ? bias[e] : 0.0f;
    for (int64_t k = 0; k < K - 1; k++) { // window position k reads state column k + 1, the last one x itself
        const float v = st[k + 1];
        acc += w[e * K + k] * v;
        st[k] = v;
    }
    acc += w[e * K + K - 1] * xv;
    st[K - 1] = xv;
    u[i] = mc_dev_silu(acc);
}

extern "C" mc_status mc_cuda_conv1d_step(const mc_exec *ex, float *u, float *state, const float *x, int64_t ldx,
                                         const float *w, const float *bias, int64_t n_seq, int64_t E, int64_t K) {
    if (n_seq * E <= 0) {
        return MC_OK;
    }
    mc_cuda_launch(conv1d_step_kernel, dim3(mc_cuda_blocks(n_seq * E, CONV_THREADS)), dim3(CONV_THREADS), 0,
                   mc_cuda_ctx_of(ex)->stream, u, state, x, ldx, w, bias, n_seq, E, K);
    return mc_cuda_launched("conv1d_step", ex);
}
