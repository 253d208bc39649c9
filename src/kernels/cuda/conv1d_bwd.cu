// Backward of the causal depthwise conv + SiLU on the device (contract: mc_ref_conv1d_bwd in kernels/ref/backward.h).
// Window position s reads x[s] for s >= 0 and state0's column K + s for −K <= s < 0, as the forward.
// - conv1d_bwd_kernel: dx, dw and db. A block is 32 channels × CONVB_TY row runs of CONVB_ROWS steps of one
//   sequence; a thread walks its run with the last KMAX inputs and the last KMAX gradients dc (wrt the pre-activation)
//   in registers, recomputing the pre-activation from the inputs (nothing is stored by the forward). dx[s] needs dc
//   at s .. s + K − 1, so a run computes K − 1 steps past its end. dw and db are summed per thread, then per block
//   in shared memory, then added with one atomic per block and weight.
// - conv1d_bwd_state_kernel: dstate0, one thread per (sequence, channel), after the first kernel has read
//   dstate_final (the two may alias).
#include "kernels/cuda/common.cuh"

#define CONVB_ROWS  16 // steps per thread
#define CONVB_TY    8  // row runs per block
#define CONVB_MAX_K 32

typedef struct conv_bwd_args {
    float *dx, *dw, *db, *dstate0;
    const float *du, *dstate_final, *x, *state0, *w, *bias;
    int64_t ldx, L, E, K, nseg; // nseg: blocks per sequence
} conv_bwd_args;

// The input at window position s of channel e of sequence b (0 before the window).
static __device__ __forceinline__ float conv_input(const conv_bwd_args &a, int64_t b, int64_t e, int64_t s) {
    if (s >= 0) {
        return a.x[(b * a.L + s) * a.ldx + e];
    }
    return s >= -a.K ? a.state0[(b * a.E + e) * a.K + a.K + s] : 0.0f;
}

// d silu(c) / dc (0 where expf(−c) overflows), as the reference.
static __device__ __forceinline__ float conv_silu_grad(float c) {
    const float s = 1.0f / (1.0f + expf(-c));
    return s * (1.0f + c * (1.0f - s));
}

// Windows are right-aligned in KMAX registers: win[KMAX − 1] is the newest step, so every index is a constant and K
// may be anything up to KMAX. Tap k of the weight meets win[KMAX − K + k]; wa holds the taps at those places
// (zeros below), wr the taps reversed (wr[m] = w[KMAX − 1 − m]) for the transposed product of dx.
template <int KMAX> __global__ void __launch_bounds__(32 * CONVB_TY) conv1d_bwd_kernel(const conv_bwd_args a) {
    __shared__ float red[KMAX + 1][CONVB_TY][32]; // per thread: dw at window places, then db
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int64_t e = (int64_t)blockIdx.y * 32 + tx, b = blockIdx.x / a.nseg, K = a.K;
    const int64_t t0 = ((blockIdx.x % a.nseg) * CONVB_TY + ty) * CONVB_ROWS;
    const int64_t t1 = t0 + CONVB_ROWS < a.L ? t0 + CONVB_ROWS : a.L;
    float acc[KMAX + 1];
#pragma unroll
    for (int m = 0; m <= KMAX; m++) {
        acc[m] = 0.0f;
    }
    if (e < a.E && t0 < a.L) {
        float wa[KMAX], wr[KMAX], win[KMAX], dcw[KMAX];
#pragma unroll
        for (int m = 0; m < KMAX; m++) {
            const int64_t k = m - (KMAX - K), kr = KMAX - 1 - m;
            wa[m] = k >= 0 ? a.w[e * K + k] : 0.0f;
            wr[m] = kr < K ? a.w[e * K + kr] : 0.0f;
            win[m] = conv_input(a, b, e, t0 - KMAX + m);
            dcw[m] = 0.0f;
        }
        const float bias = a.bias != nullptr ? a.bias[e] : 0.0f;
        for (int64_t t = t0; t < t1 + K - 1; t++) {
#pragma unroll
            for (int m = 0; m < KMAX - 1; m++) {
                win[m] = win[m + 1];
                dcw[m] = dcw[m + 1];
            }
            win[KMAX - 1] = t < a.L ? a.x[(b * a.L + t) * a.ldx + e] : 0.0f;
            float dc = 0.0f; // past L no step reads the window: its gradient is 0
            if (t < a.L) {
                float c = bias; // the reference's order: bias, then taps 0..K−1 (zeros first here)
#pragma unroll
                for (int m = 0; m < KMAX; m++) {
                    c += wa[m] * win[m];
                }
                dc = a.du[(b * a.L + t) * a.E + e] * conv_silu_grad(c);
            }
            dcw[KMAX - 1] = dc;
            if (t < t1) {
#pragma unroll
                for (int m = 0; m < KMAX; m++) {
                    acc[m] += dc * win[m];
                }
                acc[KMAX] += dc;
            }
            const int64_t s = t - (K - 1); // every step reading x[s] is done: dx[s] is complete
            if (s >= t0) {
                const int64_t j = K + s; // place in the reference's window [state0, x]
                float gx = a.dstate_final != nullptr && j >= a.L ? a.dstate_final[(b * a.E + e) * K + j - a.L] : 0.0f;
#pragma unroll
                for (int m = 0; m < KMAX; m++) { // steps s .. s + K − 1 in ascending order, as the reference
                    gx += dcw[m] * wr[m];
                }
                a.dx[(b * a.L + s) * a.ldx + e] = gx;
            }
        }
    }
#pragma unroll
    for (int m = 0; m <= KMAX; m++) {
        red[m][ty][tx] = acc[m];
    }
    __syncthreads();
    for (int m = ty; m <= KMAX; m += CONVB_TY) {
        float sum = 0.0f;
#pragma unroll
        for (int y = 0; y < CONVB_TY; y++) {
            sum += red[m][y][tx];
        }
        const int64_t k = m - (KMAX - K);
        if (e >= a.E) {
            continue;
        }
        if (m < KMAX && k >= 0) {
            atomicAdd(&a.dw[e * K + k], sum);
        } else if (m == KMAX && a.db != nullptr) {
            atomicAdd(&a.db[e], sum);
        }
    }
}

// dstate0[k] = (k >= L ? dstate_final[k − L] : 0) + Σ_t dc[t] · w[k − 1 − t] over steps 0 <= t < L reading place k.
// Places go downwards: place k reads dstate_final[k − L] with k − L < k, and only places above k are written yet,
// so an aliased dstate_final is read before it is overwritten.
__global__ void conv1d_bwd_state_kernel(const conv_bwd_args a, int64_t Bt) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, K = a.K;
    if (i >= Bt * a.E) {
        return;
    }
    const int64_t e = i % a.E, b = i / a.E;
    const float bias = a.bias != nullptr ? a.bias[e] : 0.0f;
    for (int64_t k = K - 1; k >= 0; k--) {
        float gx = a.dstate_final != nullptr && k >= a.L ? a.dstate_final[i * K + k - a.L] : 0.0f;
        for (int64_t t = k - K > 0 ? k - K : 0; t < k && t < a.L; t++) {
            float c = bias;
            for (int64_t kk = 0; kk < K; kk++) {
                c += a.w[e * K + kk] * conv_input(a, b, e, t - (K - 1) + kk);
            }
            gx += a.du[(b * a.L + t) * a.E + e] * conv_silu_grad(c) * a.w[e * K + k - 1 - t];
        }
        a.dstate0[i * K + k] = gx;
    }
}

template <int KMAX> static mc_status conv_bwd_launch(const mc_exec *ex, const conv_bwd_args &a, int64_t Bt) {
    const dim3 grid((unsigned)(Bt * a.nseg), (unsigned)((a.E + 31) / 32)), block(32, CONVB_TY);
    conv1d_bwd_kernel<KMAX><<<grid, block, 0, mc_cuda_ctx_of(ex)->stream>>>(a);
    return mc_cuda_launched("conv1d_bwd", ex);
}

extern "C" mc_status mc_cuda_conv1d_bwd(const mc_exec *ex, float *dx, float *dw, float *db, float *dstate0,
                                        const float *du, const float *dstate_final, const float *x, int64_t ldx,
                                        const float *state0, const float *w, const float *b, int64_t Bt, int64_t L,
                                        int64_t E, int64_t K) {
    if (Bt < 0 || L < 0 || E < 0 || K < 1 || ldx < E) {
        return mc_fail(mc_cuda_err(ex), MC_ERR_INVALID,
                       "conv1d_bwd: Bt=%lld L=%lld E=%lld K=%lld ldx=%lld, expected K >= 1, ldx >= E, others >= 0",
                       (long long)Bt, (long long)L, (long long)E, (long long)K, (long long)ldx);
    }
    const int64_t nseg = (L + CONVB_TY * CONVB_ROWS - 1) / (CONVB_TY * CONVB_ROWS);
    if (K > CONVB_MAX_K || (E + 31) / 32 > 65535 || Bt * nseg > INT32_MAX) {
        return mc_fail(mc_cuda_err(ex), MC_ERR_UNSUPPORTED,
                       "cuda conv1d_bwd: K=%lld E=%lld Bt=%lld L=%lld, at most K=%d, E=%d and 2^31 blocks of %d steps",
                       (long long)K, (long long)E, (long long)Bt, (long long)L, CONVB_MAX_K, 65535 * 32,
                       CONVB_TY * CONVB_ROWS);
    }
    if (Bt * E == 0) {
        return MC_OK;
    }
    conv_bwd_args a = {};
    a.dx = dx;
    a.dw = dw;
    a.db = db;
    a.dstate0 = dstate0;
    a.du = du;
    a.dstate_final = dstate_final;
    a.x = x;
    a.state0 = state0;
    a.w = w;
    a.bias = b;
    a.ldx = ldx;
    a.L = L;
    a.E = E;
    a.K = K;
    a.nseg = nseg;
    mc_status st = MC_OK;
    if (L > 0) {
        st = K <= 4    ? conv_bwd_launch<4>(ex, a, Bt)
             : K <= 8  ? conv_bwd_launch<8>(ex, a, Bt)
             : K <= 16 ? conv_bwd_launch<16>(ex, a, Bt)
                       : conv_bwd_launch<32>(ex, a, Bt);
    }
    if (st != MC_OK || dstate0 == nullptr) {
        return st;
    }
    conv1d_bwd_state_kernel<<<mc_cuda_blocks(Bt * E, 256), 256, 0, mc_cuda_ctx_of(ex)->stream>>>(a, Bt);
    return mc_cuda_launched("conv1d_bwd (state)", ex);
}
