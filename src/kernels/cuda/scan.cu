// Selective scan on the device (spec §3.4 steps 4–9), sequence and step forms. Which shapes go where:
// - sequence, N ≤ 64: mc_cuda_scan_par (scan_par.cu), parallel over time within each chunk of steps.
// - the step form (L = 1): scan_step_kernel, up to 32 lanes per (sequence, channel), one state each (h read and
//   written in device memory: a step touches each state once anyway).
// - the sequence form with N > 64: scan_generic_kernel, one thread per (sequence, channel).
// - scan_tiled_kernel (mc_cuda_scan_tiled, N ≤ 64), the sequence form before scan_par.cu: one block per (sequence,
//   group of channels); each channel's state lives in the registers of TPC threads (SPT states each) for the whole
//   sequence; time advances in tiles of SCAN_TILE steps whose B, C, Δ, u, z are staged in shared memory with
//   coalesced loads and whose y leaves the same way. No entry uses it; it stays for the benchmarks' comparison.
#include "kernels/cuda/common.cuh"

#define SCAN_TILE 32    // time steps staged per tile
#define SCAN_THREADS 128

template <int TPC, int SPT>
__global__ void __launch_bounds__(SCAN_THREADS)
    scan_tiled_kernel(float *__restrict__ y, float *__restrict__ h, const float *__restrict__ u,
                      const float *__restrict__ dt, const float *__restrict__ dt_bias, const float *__restrict__ A,
                      const float *__restrict__ B, const float *__restrict__ C, int64_t ldbc,
                      const float *__restrict__ D, const float *__restrict__ z, int64_t ldz, int64_t L, int64_t E,
                      int64_t N) {
    constexpr int NMAX = TPC * SPT, CH = SCAN_THREADS / TPC;
    __shared__ float sB[SCAN_TILE][NMAX], sC[SCAN_TILE][NMAX];
    __shared__ float sDelta[SCAN_TILE][CH], sU[SCAN_TILE][CH], sZ[SCAN_TILE][CH], sY[SCAN_TILE][CH];
    const int64_t b = blockIdx.y, e0 = (int64_t)blockIdx.x * CH;
    const int c = threadIdx.x / TPC, j = threadIdx.x % TPC;
    const int64_t e = e0 + c;
    const bool live = e < E;
    float hr[SPT], Ar[SPT];
#pragma unroll
    for (int i = 0; i < SPT; i++) {
        const int64_t n = j + i * TPC;
        const bool ok = live && n < N;
        hr[i] = ok ? h[(b * E + e) * N + n] : 0.0f;
        Ar[i] = ok ? A[e * N + n] : 0.0f;
    }
    const float Dv = live ? D[e] : 0.0f;
    for (int64_t t0 = 0; t0 < L; t0 += SCAN_TILE) {
        const int tl = (int)(L - t0 < SCAN_TILE ? L - t0 : SCAN_TILE);
        for (int idx = threadIdx.x; idx < tl * NMAX; idx += SCAN_THREADS) {
            const int tt = idx / NMAX, n = idx % NMAX;
            const int64_t row = b * L + t0 + tt;
            sB[tt][n] = n < N ? B[row * ldbc + n] : 0.0f;
            sC[tt][n] = n < N ? C[row * ldbc + n] : 0.0f;
        }
        for (int idx = threadIdx.x; idx < tl * CH; idx += SCAN_THREADS) {
            const int tt = idx / CH, cc = idx % CH;
            const int64_t ee = e0 + cc, row = b * L + t0 + tt;
            if (ee < E) {
                sDelta[tt][cc] = mc_dev_softplus(dt[row * E + ee] + dt_bias[ee]);
                sU[tt][cc] = u[row * E + ee];
                sZ[tt][cc] = z[row * ldz + ee];
            } else { // a channel past E: computed on zeros, never stored
                sDelta[tt][cc] = sU[tt][cc] = sZ[tt][cc] = 0.0f;
            }
        }
        __syncthreads();
        for (int tt = 0; tt < tl; tt++) {
            const float delta = sDelta[tt][c], ut = sU[tt][c];
            float p = 0.0f;
#pragma unroll
            for (int i = 0; i < SPT; i++) {
                const int n = j + i * TPC;
                hr[i] = expf(delta * Ar[i]) * hr[i] + delta * sB[tt][n] * ut;
                p += sC[tt][n] * hr[i];
            }
#pragma unroll
            for (int off = TPC / 2; off > 0; off >>= 1) {
                p += __shfl_xor_sync(0xffffffffu, p, off);
            }
            if (j == 0) {
                sY[tt][c] = (p + Dv * ut) * mc_dev_silu(sZ[tt][c]);
            }
        }
        __syncthreads();
        for (int idx = threadIdx.x; idx < tl * CH; idx += SCAN_THREADS) {
            const int tt = idx / CH, cc = idx % CH;
            const int64_t ee = e0 + cc;
            if (ee < E) {
                y[(b * L + t0 + tt) * E + ee] = sY[tt][cc];
            }
        }
    }
#pragma unroll
    for (int i = 0; i < SPT; i++) {
        const int64_t n = j + i * TPC;
        if (live && n < N) {
            h[(b * E + e) * N + n] = hr[i];
        }
    }
}

// One thread per (sequence b, channel e), the recurrence in the reference's order.
__global__ void scan_generic_kernel(float *__restrict__ y, float *__restrict__ h, const float *__restrict__ u,
                                    const float *__restrict__ dt, const float *__restrict__ dt_bias,
                                    const float *__restrict__ A, const float *__restrict__ B,
                                    const float *__restrict__ C, int64_t ldbc, const float *__restrict__ D,
                                    const float *__restrict__ z, int64_t ldz, int64_t Bt, int64_t L, int64_t E,
                                    int64_t N) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= Bt * E) {
        return;
    }
    const int64_t e = i % E, b = i / E;
    float *he = h + i * N;
    const float *Ae = A + e * N;
    for (int64_t t = 0; t < L; t++) {
        const int64_t row = b * L + t;
        const float delta = mc_dev_softplus(dt[row * E + e] + dt_bias[e]);
        const float ut = u[row * E + e];
        const float *Bt_ = B + row * ldbc, *Ct = C + row * ldbc;
        float acc = 0.0f;
        for (int64_t n = 0; n < N; n++) {
            const float hn = expf(delta * Ae[n]) * he[n] + delta * Bt_[n] * ut;
            he[n] = hn;
            acc += Ct[n] * hn;
        }
        y[row * E + e] = (acc + D[e] * ut) * mc_dev_silu(z[row * ldz + e]);
    }
}

static mc_status scan_generic(const mc_exec *ex, float *y, float *h, const float *u, const float *dt,
                              const float *dt_bias, const float *A, const float *B, const float *C, int64_t ldbc,
                              const float *D, const float *z, int64_t ldz, int64_t Bt, int64_t L, int64_t E,
                              int64_t N) {
    scan_generic_kernel<<<mc_cuda_blocks(Bt * E, 128), 128, 0, mc_cuda_ctx_of(ex)->stream>>>(
        y, h, u, dt, dt_bias, A, B, C, ldbc, D, z, ldz, Bt, L, E, N);
    return mc_cuda_launched("selective_scan (generic)", ex);
}

template <int TPC, int SPT>
static mc_status scan_tiled(const mc_exec *ex, float *y, float *h, const float *u, const float *dt,
                            const float *dt_bias, const float *A, const float *B, const float *C, int64_t ldbc,
                            const float *D, const float *z, int64_t ldz, int64_t Bt, int64_t L, int64_t E,
                            int64_t N) {
    constexpr int CH = SCAN_THREADS / TPC;
    dim3 grid(mc_cuda_blocks(E, CH), (unsigned)Bt);
    scan_tiled_kernel<TPC, SPT><<<grid, SCAN_THREADS, 0, mc_cuda_ctx_of(ex)->stream>>>(y, h, u, dt, dt_bias, A, B, C,
                                                                                      ldbc, D, z, ldz, L, E, N);
    return mc_cuda_launched("selective_scan", ex);
}

mc_status mc_cuda_scan_tiled(const mc_exec *ex, float *y, float *h, const float *u, const float *dt,
                             const float *dt_bias, const float *A, const float *B, const float *C, int64_t ldbc,
                             const float *D, const float *z, int64_t ldz, int64_t Bt, int64_t L, int64_t E, int64_t N) {
    if (Bt * E <= 0 || L <= 0) {
        return MC_OK;
    }
    if (Bt > 65535 || N > 64) {
        return mc_fail(mc_cuda_err(ex), MC_ERR_UNSUPPORTED, "cuda selective_scan (tiled): N=%lld Bt=%lld (at most 64 "
                       "states and 65535 sequences)", (long long)N, (long long)Bt);
    }
    if (N <= 4) {
        return scan_tiled<4, 1>(ex, y, h, u, dt, dt_bias, A, B, C, ldbc, D, z, ldz, Bt, L, E, N);
    }
    if (N <= 16) { // more lanes a channel while channels are few (H100, N 16: Bt·E 1536: 0.58 ms against 0.87
                   // for 4 × 4 at L 2048; 6144: 0.35 against 0.47 at L 1024; 24576: 4 × 4 best, 0.71 ms)
        if (Bt * E <= 2048) {
            return scan_tiled<16, 1>(ex, y, h, u, dt, dt_bias, A, B, C, ldbc, D, z, ldz, Bt, L, E, N);
        }
        if (Bt * E <= 12288) {
            return scan_tiled<8, 2>(ex, y, h, u, dt, dt_bias, A, B, C, ldbc, D, z, ldz, Bt, L, E, N);
        }
        return scan_tiled<4, 4>(ex, y, h, u, dt, dt_bias, A, B, C, ldbc, D, z, ldz, Bt, L, E, N);
    }
    return scan_tiled<8, 8>(ex, y, h, u, dt, dt_bias, A, B, C, ldbc, D, z, ldz, Bt, L, E, N);
}

// keep: where the training forward stores the chunk states for the backward (mc_cuda_scan_keep_floats), or NULL.
static mc_status scan_entry(const mc_exec *ex, float *y, float *h, const float *u, const float *dt,
                            const float *dt_bias, const float *A, const float *B, const float *C, int64_t ldbc,
                            const float *D, const float *z, int64_t ldz, int64_t Bt, int64_t L, int64_t E, int64_t N,
                            float *keep) {
    if (Bt * E <= 0 || L <= 0) {
        return MC_OK;
    }
    if (Bt > 65535) {
        return mc_fail(mc_cuda_err(ex), MC_ERR_UNSUPPORTED, "cuda selective_scan: %lld sequences in one call (at most "
                       "65535)", (long long)Bt);
    }
    if (N <= 64) {
        return mc_cuda_scan_par(ex, 0, y, h, u, dt, dt_bias, A, B, C, ldbc, D, z, ldz, Bt, L, E, N, keep);
    }
    if (keep != nullptr) { // mc_cuda_scan_keep_floats said 0
        return mc_fail(mc_cuda_err(ex), MC_ERR_UNSUPPORTED,
                       "cuda selective_scan: N=%lld, chunk states are kept only for N <= 64", (long long)N);
    }
    return scan_generic(ex, y, h, u, dt, dt_bias, A, B, C, ldbc, D, z, ldz, Bt, L, E, N);
}

extern "C" mc_status mc_cuda_selective_scan(const mc_exec *ex, float *y, float *h, const float *u, const float *dt,
                                            const float *dt_bias, const float *A, const float *B, const float *C,
                                            int64_t ldbc, const float *D, const float *z, int64_t ldz, int64_t Bt,
                                            int64_t L, int64_t E, int64_t N) {
    return scan_entry(ex, y, h, u, dt, dt_bias, A, B, C, ldbc, D, z, ldz, Bt, L, E, N, nullptr);
}

extern "C" mc_status mc_cuda_selective_scan_keep(const mc_exec *ex, float *y, float *h, const float *u,
                                                 const float *dt, const float *dt_bias, const float *A, const float *B,
                                                 const float *C, int64_t ldbc, const float *D, const float *z,
                                                 int64_t ldz, int64_t Bt, int64_t L, int64_t E, int64_t N,
                                                 float *keep) {
    return scan_entry(ex, y, h, u, dt, dt_bias, A, B, C, ldbc, D, z, ldz, Bt, L, E, N, keep);
}

// The backward's chunk states, MC_SCAN_KEEP_STEPS apart: [Bt, ceil(L / 128), E, N] for N ≤ 64 (scan_par.cu).
extern "C" int64_t mc_cuda_scan_keep_floats(int64_t Bt, int64_t L, int64_t E, int64_t N) {
    if (N < 1 || N > 64 || Bt <= 0 || L <= 0 || E <= 0) {
        return 0;
    }
    return Bt * ((L + MC_SCAN_KEEP_STEPS - 1) / MC_SCAN_KEEP_STEPS) * E * N;
}

// One decode step (the sequence form with L = 1, one row per sequence): TPC lanes per (sequence, channel), lane j
// owning states j, j + TPC, ..., so a channel's states are read, decayed and written at once rather than one after
// another by one thread (at batch 1 that thread per channel made 12 blocks for the whole GPU); the readout Σ C·h
// is summed over the TPC lanes with shuffles. TPC is a power of two ≤ 32, so a group never straddles a warp; every
// lane of a warp reaches the shuffles (lanes past the end carry zeros).
template <int TPC>
static __device__ __forceinline__ float lanes_sum(float v) {
#pragma unroll
    for (int off = TPC / 2; off > 0; off >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, off);
    }
    return v;
}

// The step of channel e of sequence b by its TPC lanes from the pre-softplus Δ: h updated, y written by lane 0.
template <int TPC>
static __device__ __forceinline__ void step_channel(float *__restrict__ y, float *__restrict__ h,
                                                    const float *__restrict__ u, float dt_raw,
                                                    const float *__restrict__ dt_bias, const float *__restrict__ A,
                                                    const float *__restrict__ B, const float *__restrict__ C,
                                                    int64_t ldbc, const float *__restrict__ D,
                                                    const float *__restrict__ z, int64_t ldz, bool live, int64_t b,
                                                    int64_t e, int lane, int64_t E, int64_t N) {
    float acc = 0.0f, ut = 0.0f;
    // Four states a lane (N = 4·TPC, rows 16-byte aligned: batched decode of Mamba's N 16 at 4 lanes): one float4 of
    // h, A, B and C each, so a warp's state traffic is 8 channels' contiguous 64 bytes an instruction.
    const bool quad = N == 4 * TPC && (ldbc & 3) == 0 &&
                      (((uintptr_t)h | (uintptr_t)A | (uintptr_t)B | (uintptr_t)C) & 15) == 0;
    if (live) {
        const float delta = mc_dev_softplus(dt_raw + dt_bias[e]);
        ut = u[b * E + e];
        const float *Bb = B + b * ldbc, *Cb = C + b * ldbc, *Ae = A + e * N;
        float *he = h + (b * E + e) * N;
        if (quad) {
            float4 hv = reinterpret_cast<float4 *>(he)[lane];
            const float4 av = reinterpret_cast<const float4 *>(Ae)[lane];
            const float4 bv = reinterpret_cast<const float4 *>(Bb)[lane];
            const float4 cv = reinterpret_cast<const float4 *>(Cb)[lane];
            hv.x = mc_dev_exp(delta * av.x) * hv.x + delta * bv.x * ut;
            hv.y = mc_dev_exp(delta * av.y) * hv.y + delta * bv.y * ut;
            hv.z = mc_dev_exp(delta * av.z) * hv.z + delta * bv.z * ut;
            hv.w = mc_dev_exp(delta * av.w) * hv.w + delta * bv.w * ut;
            reinterpret_cast<float4 *>(he)[lane] = hv;
            acc = cv.x * hv.x + cv.y * hv.y + cv.z * hv.z + cv.w * hv.w;
        } else {
            for (int64_t n = lane; n < N; n += TPC) {
                const float hn = mc_dev_exp(delta * Ae[n]) * he[n] + delta * Bb[n] * ut;
                he[n] = hn;
                acc += Cb[n] * hn;
            }
        }
    }
    acc = lanes_sum<TPC>(acc);
    if (live && lane == 0) {
        y[b * E + e] = (acc + D[e] * ut) * mc_dev_silu(z[b * ldz + e]);
    }
}

template <int TPC>
__global__ void __launch_bounds__(128)
    scan_step_kernel(float *__restrict__ y, float *__restrict__ h, const float *__restrict__ u,
                     const float *__restrict__ dt, const float *__restrict__ dt_bias, const float *__restrict__ A,
                     const float *__restrict__ B, const float *__restrict__ C, int64_t ldbc,
                     const float *__restrict__ D, const float *__restrict__ z, int64_t ldz, int64_t n_seq, int64_t E,
                     int64_t N) {
    mc_pdl_wait();
    mc_pdl_trigger();
    const unsigned i = (blockIdx.x * blockDim.x + threadIdx.x) / TPC; // (sequence, channel); < 2^31 (launcher)
    const bool live = i < n_seq * E;
    const int64_t e = live ? i % (unsigned)E : 0, b = live ? i / (unsigned)E : 0;
    step_channel<TPC>(y, h, u, live ? dt[b * E + e] : 0.0f, dt_bias, A, B, C, ldbc, D, z, ldz, live, b, e,
                      (int)(threadIdx.x % TPC), E, N);
}

// The same with dt_proj folded in: the lanes of (b, e) first form dt = q[b, 0:R] · dt_w[e, :] (the weight widened
// as the reference does, int8 q · its group's scale), summed over the lanes, then step as above.
template <int TPC>
__global__ void __launch_bounds__(128)
    scan_step_dt_kernel(float *__restrict__ y, float *__restrict__ h, const float *__restrict__ u,
                        const float *__restrict__ q, int64_t ldq, const void *__restrict__ w, int dtype,
                        const float *__restrict__ scales, int64_t group, const float *__restrict__ dt_bias,
                        const float *__restrict__ A, const float *__restrict__ D, const float *__restrict__ z,
                        int64_t ldz, int64_t n_seq, int64_t E, int64_t N, int64_t R) {
    mc_pdl_wait();
    mc_pdl_trigger();
    const unsigned i = (blockIdx.x * blockDim.x + threadIdx.x) / TPC; // < 2^31 (launcher)
    const int lane = (int)(threadIdx.x % TPC);
    const bool live = i < n_seq * E;
    const int64_t e = live ? i % (unsigned)E : 0, b = live ? i / (unsigned)E : 0;
    float part = 0.0f;
    if (live) {
        const float *qb = q + b * ldq;
        const int64_t n_groups = scales != nullptr ? (R + group - 1) / group : 0;
        for (int64_t r = lane; r < R; r += TPC) {
            float wv = mc_dev_element(w, dtype, e * R + r);
            if (scales != nullptr) {
                wv *= scales[e * n_groups + r / group];
            }
            part += wv * qb[r];
        }
    }
    const float dt = lanes_sum<TPC>(part);
    step_channel<TPC>(y, h, u, dt, dt_bias, A, q + R, q + R + N, ldq, D, z, ldz, live, b, e, lane, E, N);
}

template <int TPC>
static mc_status scan_step(const mc_exec *ex, float *y, float *h, const float *u, const float *dt,
                           const float *dt_bias, const float *A, const float *B, const float *C, int64_t ldbc,
                           const float *D, const float *z, int64_t ldz, int64_t n_seq, int64_t E, int64_t N) {
    mc_cuda_launch(scan_step_kernel<TPC>, dim3(mc_cuda_blocks(n_seq * E * TPC, 128)), dim3(128), 0,
                   mc_cuda_ctx_of(ex)->stream, y, h, u, dt, dt_bias, A, B, C, ldbc, D, z, ldz, n_seq, E, N);
    return mc_cuda_launched("selective_scan_step", ex);
}

template <int TPC>
static mc_status scan_step_dt(const mc_exec *ex, float *y, float *h, const float *u, const float *q, int64_t ldq,
                              const mc_weight *w, const float *dt_bias, const float *A, const float *D, const float *z,
                              int64_t ldz, int64_t n_seq, int64_t E, int64_t N, int64_t R) {
    const float *scales = w->dtype == MC_DTYPE_I8 ? w->scales : nullptr;
    mc_cuda_launch(scan_step_dt_kernel<TPC>, dim3(mc_cuda_blocks(n_seq * E * TPC, 128)), dim3(128), 0,
                   mc_cuda_ctx_of(ex)->stream, y, h, u, q, ldq, w->data, w->dtype, scales, w->group, dt_bias, A, D, z,
                   ldz, n_seq, E, N, R);
    return mc_cuda_launched("selective_scan_step_dt", ex);
}

// Lanes per channel: the states rounded up to a power of two, 4 to 32, while the threads stay few; with many
// channels (batched decode) fewer, down to 4, each with more states, so a channel's own work (softplus, dt_proj's
// dot product, the index) is shared by more states (H100, batch 64 × 1536 channels, 16 lanes: 29 µs a call).
static int step_lanes(int64_t N, int64_t channels) {
    int lanes = N <= 4 ? 4 : N <= 8 ? 8 : N <= 16 ? 16 : 32;
    while (lanes > 4 && channels * lanes > 65536) {
        lanes /= 2;
    }
    return lanes;
}

// The step kernels index (sequence, channel, lane) in 32 bits.
static bool step_fits(int64_t n_seq, int64_t E) {
    return n_seq * E * 32 + 128 < INT32_MAX;
}

extern "C" mc_status mc_cuda_selective_scan_step_dt(const mc_exec *ex, float *y, float *h, const float *u,
                                                    const float *q, int64_t ldq, const mc_weight *dt_w,
                                                    const float *dt_bias, const float *A, const float *D,
                                                    const float *z, int64_t ldz, int64_t n_seq, int64_t E, int64_t N,
                                                    int64_t R) {
    if (n_seq * E <= 0) {
        return MC_OK;
    }
    if (!step_fits(n_seq, E)) {
        return mc_fail(mc_cuda_err(ex), MC_ERR_UNSUPPORTED, "cuda selective_scan_step_dt: %lld sequences × %lld "
                       "channels is too many for one step", (long long)n_seq, (long long)E);
    }
    if (dt_w->rows != E || dt_w->cols != R) {
        return mc_fail(mc_cuda_err(ex), MC_ERR_INVALID, "cuda selective_scan_step_dt: dt_proj weight is [%lld, %lld], "
                       "not [%lld, %lld]", (long long)dt_w->rows, (long long)dt_w->cols, (long long)E, (long long)R);
    }
    switch (step_lanes(N, n_seq * E)) {
        case 4:
            return scan_step_dt<4>(ex, y, h, u, q, ldq, dt_w, dt_bias, A, D, z, ldz, n_seq, E, N, R);
        case 8:
            return scan_step_dt<8>(ex, y, h, u, q, ldq, dt_w, dt_bias, A, D, z, ldz, n_seq, E, N, R);
        case 16:
            return scan_step_dt<16>(ex, y, h, u, q, ldq, dt_w, dt_bias, A, D, z, ldz, n_seq, E, N, R);
        default:
            return scan_step_dt<32>(ex, y, h, u, q, ldq, dt_w, dt_bias, A, D, z, ldz, n_seq, E, N, R);
    }
}

extern "C" mc_status mc_cuda_selective_scan_step(const mc_exec *ex, float *y, float *h, const float *u,
                                                 const float *dt, const float *dt_bias, const float *A,
                                                 const float *B, const float *C, int64_t ldbc, const float *D,
                                                 const float *z, int64_t ldz, int64_t n_seq, int64_t E, int64_t N) {
    if (n_seq * E <= 0) {
        return MC_OK;
    }
    if (!step_fits(n_seq, E)) {
        return mc_fail(mc_cuda_err(ex), MC_ERR_UNSUPPORTED, "cuda selective_scan_step: %lld sequences × %lld channels "
                       "is too many for one step", (long long)n_seq, (long long)E);
    }
    switch (step_lanes(N, n_seq * E)) {
        case 4:
            return scan_step<4>(ex, y, h, u, dt, dt_bias, A, B, C, ldbc, D, z, ldz, n_seq, E, N);
        case 8:
            return scan_step<8>(ex, y, h, u, dt, dt_bias, A, B, C, ldbc, D, z, ldz, n_seq, E, N);
        case 16:
            return scan_step<16>(ex, y, h, u, dt, dt_bias, A, B, C, ldbc, D, z, ldz, n_seq, E, N);
        default:
            return scan_step<32>(ex, y, h, u, dt, dt_bias, A, B, C, ldbc, D, z, ldz, n_seq, E, N);
    }
}
