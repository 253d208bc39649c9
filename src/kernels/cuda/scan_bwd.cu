// Backward of the selective scan on the device (contract: mc_ref_selective_scan_bwd in kernels/ref/backward.h).
// The entry sends N ≤ 64 to mc_cuda_scan_par_bwd (scan_par.cu, parallel over time); the kernel here
// (mc_cuda_scan_bwd_tiled) takes N up to 128 and stays reachable for the benchmarks' comparison.
// Layout as the forward's tiled kernel: one block per (sequence, group of CH channels), each channel's N states in
// the registers of TPC threads (SPT states each). The states are recomputed, never read from the forward:
// - pass 1 runs the recurrence forward and stores the state at the start of every chunk of TC steps (scratch ck);
// - pass 2 walks the chunks backwards: it recomputes the chunk's TC states into registers (a fully unrolled loop,
//   so the history is indexed by constants), then steps back through them carrying the adjoint g = ∂loss/∂h.
// dB and dC sum over all E channels: each warp reduces its channels with shuffles, the block its warps in shared
// memory, and the blocks' partial sums (scratch part) are added by a second kernel that writes dB and dC.
// dA, dD and ddt_bias are summed per thread over the sequence and added with one atomic each.
#include "kernels/cuda/common.cuh"

extern "C" {
#include "base/checked.h"
}

#define SCANB_THREADS 128
#define SCANB_MAX_N   128 // largest d_state with a tiled configuration below

// Everything the kernel reads and writes; sizes and strides as in mc_ref_selective_scan_bwd.
typedef mc_scan_bwd_args scan_bwd_args; // part: [Bt, nblk, L, 2N], dB in columns 0..N, dC in N..2N


// Sum over the TPC lanes of one channel (an aligned group of lanes).
template <int TPC> static __device__ __forceinline__ float channel_sum(float p) {
#pragma unroll
    for (int off = TPC / 2; off > 0; off >>= 1) {
        p += __shfl_xor_sync(0xffffffffu, p, off);
    }
    return p;
}

// The number of values a lane still holds after reduce_channels<TPC, OFF, M>.
__host__ __device__ constexpr int reduced_count(int tpc, int off, int m) {
    return off < tpc ? m : reduced_count(tpc, off / 2, m > 1 ? m / 2 : 1);
}

// Sums v[0..M) over the lanes of a warp that hold the same states of different channels (lane bits OFF down to
// TPC), halving the values each lane keeps at every level (a reduce-scatter: 2·SPT − 1 shuffles instead of
// (2·SPT)·log2(32 / TPC)). Afterwards the lane holds the sums of values idx .. idx + reduced_count − 1 in v[0..).
template <int TPC, int OFF, int M>
static __device__ __forceinline__ void reduce_channels(float *v, int lane, int &idx) {
    if constexpr (OFF >= TPC) {
        const bool up = (lane & OFF) != 0;
        if constexpr (M > 1) {
            constexpr int H = M / 2;
#pragma unroll
            for (int k = 0; k < H; k++) {
                const float send = up ? v[k] : v[k + H], keep = up ? v[k + H] : v[k];
                v[k] = keep + __shfl_xor_sync(0xffffffffu, send, OFF);
            }
            idx += up ? H : 0;
            reduce_channels<TPC, OFF / 2, H>(v, lane, idx);
        } else {
            v[0] += __shfl_xor_sync(0xffffffffu, v[0], OFF);
            reduce_channels<TPC, OFF / 2, 1>(v, lane, idx);
        }
    }
}

// Shared memory of one block: a chunk's inputs, its per-channel outputs, and the per-warp dB/dC sums.
template <int TPC, int SPT, int TC> struct scan_bwd_smem {
    static constexpr int NMAX = TPC * SPT, CH = SCANB_THREADS / TPC, NW = SCANB_THREADS / 32;
    float B[TC][NMAX], C[TC][NMAX];
    float delta[TC][CH], dsp[TC][CH], u[TC][CH], z[TC][CH], dy[TC][CH]; // dsp = dΔ/dv (1 above the threshold)
    float du[TC][CH], ddt[TC][CH], dz[TC][CH];
    float part[NW][TC][2 * NMAX];
};

// Stages steps t0 .. t0 + tl of the block's channels (zeros past E: computed on, never stored). Pass 1 needs only
// Δ, u and B (full = false).
template <int TPC, int SPT, int TC>
static __device__ void stage_chunk(scan_bwd_smem<TPC, SPT, TC> &s, const scan_bwd_args &a, int64_t b, int64_t e0,
                                   int64_t t0, int tl, bool full) {
    constexpr int NMAX = TPC * SPT, CH = SCANB_THREADS / TPC;
    for (int idx = threadIdx.x; idx < tl * NMAX; idx += SCANB_THREADS) {
        const int tt = idx / NMAX, n = idx % NMAX;
        const int64_t row = b * a.L + t0 + tt;
        s.B[tt][n] = n < a.N ? a.B[row * a.ldbc + n] : 0.0f;
        if (full) {
            s.C[tt][n] = n < a.N ? a.C[row * a.ldbc + n] : 0.0f;
        }
    }
    for (int idx = threadIdx.x; idx < tl * CH; idx += SCANB_THREADS) {
        const int tt = idx / CH, cc = idx % CH;
        const int64_t ee = e0 + cc, row = b * a.L + t0 + tt;
        float delta = 0.0f, dsp = 0.0f, uv = 0.0f, zv = 0.0f, dyv = 0.0f;
        if (ee < a.E) {
            const float v = a.dt[row * a.E + ee] + a.dt_bias[ee];
            delta = mc_dev_softplus(v);
            dsp = v > 20.0f ? 1.0f : mc_sigmoid(v); // softplus' = σ below the threshold (spec §3.7)
            uv = a.u[row * a.E + ee];
            if (full) {
                zv = a.z[row * a.ldz + ee];
                dyv = a.dy[row * a.E + ee];
            }
        }
        s.delta[tt][cc] = delta;
        s.u[tt][cc] = uv;
        if (full) {
            s.dsp[tt][cc] = dsp;
            s.z[tt][cc] = zv;
            s.dy[tt][cc] = dyv;
        }
    }
}

// Writes a chunk's du, ddt, dz (coalesced over channels) and the block's dB/dC sums for its steps.
template <int TPC, int SPT, int TC>
static __device__ void store_chunk(const scan_bwd_smem<TPC, SPT, TC> &s, const scan_bwd_args &a, int64_t b, int64_t e0,
                                   int64_t t0, int tl) {
    constexpr int NMAX = TPC * SPT, CH = SCANB_THREADS / TPC, NW = SCANB_THREADS / 32;
    for (int idx = threadIdx.x; idx < tl * CH; idx += SCANB_THREADS) {
        const int tt = idx / CH, cc = idx % CH;
        const int64_t ee = e0 + cc, row = b * a.L + t0 + tt;
        if (ee < a.E) {
            a.du[row * a.E + ee] = s.du[tt][cc];
            a.ddt[row * a.E + ee] = s.ddt[tt][cc];
            a.dz[row * a.ldz + ee] = s.dz[tt][cc];
        }
    }
    const int64_t N2 = 2 * a.N;
    float *part = a.part + ((b * a.nblk + blockIdx.x) * a.L + t0) * N2;
    for (int64_t idx = threadIdx.x; idx < tl * N2; idx += SCANB_THREADS) {
        const int tt = (int)(idx / N2);
        const int64_t k = idx % N2;
        const int slot = (int)(k < a.N ? k : NMAX + k - a.N);
        float sum = 0.0f;
#pragma unroll
        for (int w = 0; w < NW; w++) {
            sum += s.part[w][tt][slot];
        }
        part[idx] = sum;
    }
}

// CACHE keeps each recomputed step's decay exp(Δ·A) in registers for the backward steps (one exp per state and
// step fewer, more registers); MINB is the blocks per SM the register allocation must allow.
template <int TPC, int SPT, int TC, bool CACHE, int MINB>
__global__ void __launch_bounds__(SCANB_THREADS, MINB) scan_bwd_kernel(const scan_bwd_args a) {
    constexpr int NMAX = TPC * SPT, CH = SCANB_THREADS / TPC, M = 2 * SPT, MR = reduced_count(TPC, 16, M);
    static_assert((SPT & (SPT - 1)) == 0 && 32 % TPC == 0, "SPT a power of two, TPC divides a warp");
    __shared__ scan_bwd_smem<TPC, SPT, TC> s;
    const int64_t b = blockIdx.y, e0 = (int64_t)blockIdx.x * CH;
    const int c = threadIdx.x / TPC, j = threadIdx.x % TPC, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int64_t e = e0 + c;
    const bool live = e < a.E;
    float hr[SPT], Ar[SPT], g[SPT], dAr[SPT];
#pragma unroll
    for (int i = 0; i < SPT; i++) {
        const int64_t n = j + i * TPC, at = (b * a.E + e) * a.N + n;
        const bool ok = live && n < a.N;
        hr[i] = ok && a.h0 != nullptr ? a.h0[at] : 0.0f;
        Ar[i] = ok ? a.A[e * a.N + n] : 0.0f;
        g[i] = ok && a.dh_final != nullptr ? a.dh_final[at] : 0.0f;
        dAr[i] = 0.0f;
    }
    const float Dv = live ? a.D[e] : 0.0f;
    float *ck = a.ck + (b * a.nch * a.E + e) * a.N; // + chunk · E · N + n

    // Pass 1: the forward recurrence (the reference's f32 expression), keeping each chunk's starting state.
    for (int64_t ch = 0; ch < a.nch; ch++) {
#pragma unroll
        for (int i = 0; i < SPT; i++) {
            const int64_t n = j + i * TPC;
            if (live && n < a.N) {
                ck[ch * a.E * a.N + n] = hr[i];
            }
        }
        if (ch == a.nch - 1) { // the last chunk's end state is not needed
            break;
        }
        __syncthreads(); // the previous chunk's inputs are consumed
        stage_chunk(s, a, b, e0, ch * TC, TC, false);
        __syncthreads();
#pragma unroll
        for (int tt = 0; tt < TC; tt++) {
            const float delta = s.delta[tt][c], ut = s.u[tt][c];
#pragma unroll
            for (int i = 0; i < SPT; i++) {
                hr[i] = expf(delta * Ar[i]) * hr[i] + delta * s.B[tt][j + i * TPC] * ut;
            }
        }
    }

    // Pass 2: chunks in reverse, each recomputed from its starting state, then stepped back.
    float dD_acc = 0.0f, dbias_acc = 0.0f;
    for (int64_t ch = a.nch - 1; ch >= 0; ch--) {
        const int64_t t0 = ch * TC;
        const int tl = (int)(a.L - t0 < TC ? a.L - t0 : TC);
        __syncthreads(); // the previous chunk's outputs are stored
        stage_chunk(s, a, b, e0, t0, tl, true);
        __syncthreads();
        float h_start[SPT], hist[TC][SPT]; // hist[tt] = state after step t0 + tt
        float dec[CACHE ? TC : 1][SPT];     // dec[tt] = exp(Δ·A) of step t0 + tt (CACHE)
#pragma unroll
        for (int i = 0; i < SPT; i++) {
            const int64_t n = j + i * TPC;
            h_start[i] = live && n < a.N ? ck[ch * a.E * a.N + n] : 0.0f;
        }
#pragma unroll
        for (int tt = 0; tt < TC; tt++) {
            if (tt < tl) {
                const float delta = s.delta[tt][c], ut = s.u[tt][c];
#pragma unroll
                for (int i = 0; i < SPT; i++) {
                    const float hp = tt > 0 ? hist[tt - 1][i] : h_start[i], d = expf(delta * Ar[i]);
                    if constexpr (CACHE) {
                        dec[tt][i] = d;
                    }
                    hist[tt][i] = d * hp + delta * s.B[tt][j + i * TPC] * ut;
                }
            }
        }
#pragma unroll
        for (int tt = TC - 1; tt >= 0; tt--) {
            if (tt >= tl) { // uniform over the block: tl is
                continue;
            }
            const float delta = s.delta[tt][c], ut = s.u[tt][c], zt = s.z[tt][c], dyt = s.dy[tt][c];
            float readout = 0.0f;
#pragma unroll
            for (int i = 0; i < SPT; i++) {
                readout += s.C[tt][j + i * TPC] * hist[tt][i];
            }
            readout = channel_sum<TPC>(readout);
            const float sz = mc_sigmoid(zt);
            const float gy = dyt * (zt * sz); // gradient wrt C·h + D·u
            float v[M], du_p = 0.0f, dd_p = 0.0f;
#pragma unroll
            for (int i = 0; i < SPT; i++) {
                const int n = j + i * TPC;
                const float Bn = s.B[tt][n], Cn = s.C[tt][n];
                float decay;
                if constexpr (CACHE) {
                    decay = dec[tt][i];
                } else {
                    decay = expf(delta * Ar[i]);
                }
                const float hp = tt > 0 ? hist[tt - 1][i] : h_start[i];
                const float lam = g[i] + gy * Cn; // ∂loss/∂h[t] (spec Appendix A)
                v[i] = lam * delta * ut;          // dB
                v[SPT + i] = gy * hist[tt][i];    // dC
                du_p += lam * delta * Bn;
                dd_p += lam * (Ar[i] * decay * hp + Bn * ut);
                dAr[i] += lam * delta * decay * hp;
                g[i] = lam * decay;
            }
            du_p = channel_sum<TPC>(du_p);
            dd_p = channel_sum<TPC>(dd_p);
            if (j == 0) {
                const float dv = dd_p * s.dsp[tt][c];
                s.du[tt][c] = gy * Dv + du_p;
                s.ddt[tt][c] = dv;
                s.dz[tt][c] = dyt * (readout + Dv * ut) * mc_silu_grad(sz, zt);
                dD_acc += gy * ut;
                dbias_acc += dv;
            }
            int idx = 0;
            reduce_channels<TPC, 16, M>(v, lane, idx);
#pragma unroll
            for (int k = 0; k < MR; k++) { // value idx + k: dB or dC of state j + i·TPC
                const int vi = idx + k, i = vi % SPT;
                s.part[warp][tt][(vi < SPT ? 0 : NMAX) + j + i * TPC] = v[k];
            }
        }
        __syncthreads();
        store_chunk(s, a, b, e0, t0, tl);
    }

    // dh0 after dh_final was read (same thread, same element): the two may alias.
#pragma unroll
    for (int i = 0; i < SPT; i++) {
        const int64_t n = j + i * TPC;
        if (live && n < a.N) {
            if (a.dh0 != nullptr) {
                a.dh0[(b * a.E + e) * a.N + n] = g[i];
            }
            atomicAdd(&a.dA[e * a.N + n], dAr[i]);
        }
    }
    if (live && j == 0) {
        atomicAdd(&a.dD[e], dD_acc);
        atomicAdd(&a.ddt_bias[e], dbias_acc);
    }
}

// dB and dC (written): the sum of the blocks' partial sums, one thread per (row, column of 2N).
__global__ void scan_bwd_bc_kernel(float *__restrict__ dB, float *__restrict__ dC, int64_t ldbc,
                                   const float *__restrict__ part, int64_t Bt, int64_t L, int64_t N, int64_t nblk) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, N2 = 2 * N;
    if (i >= Bt * L * N2) {
        return;
    }
    const int64_t k = i % N2, row = i / N2, b = row / L, t = row % L;
    const float *p = part + (b * nblk * L + t) * N2 + k;
    float sum = 0.0f;
    for (int64_t blk = 0; blk < nblk; blk++) {
        sum += p[blk * L * N2];
    }
    if (k < N) {
        dB[row * ldbc + k] = sum;
    } else {
        dC[row * ldbc + k - N] = sum;
    }
}

mc_status mc_scan_bwd_scratch(const mc_exec *ex, mc_scan_bwd_args *a, int64_t Bt) {
    // Overflow is impossible for shapes whose inputs fit in memory (both are at most Bt·L·E·N / chunk and
    // Bt·L·E / channels a block · 2N floats) but is checked, as everything from callers.
    int64_t n_ck = 0, n_part = 0, total = 0; // n_ck stays 0 when the caller brings the chunk states (a->ck set)
    if ((a->ck == nullptr && !mc_mul_i64(Bt * a->nch, a->E * a->N, &n_ck)) ||
        !mc_mul_i64(Bt * a->nblk, a->L * 2 * a->N, &n_part) || !mc_add_i64(n_ck, n_part, &total) ||
        total > (int64_t)(SIZE_MAX / sizeof(float))) {
        return mc_fail(mc_cuda_err(ex), MC_ERR_INVALID,
                       "cuda selective_scan_bwd: Bt=%lld L=%lld E=%lld N=%lld overflow the scratch", (long long)Bt,
                       (long long)a->L, (long long)a->E, (long long)a->N);
    }
    mc_status st = mc_cuda_work_reserve(ex, (size_t)total * sizeof(float));
    if (st == MC_OK) {
        float *work = (float *)mc_cuda_ctx_of(ex)->work;
        a->ck = a->ck != nullptr ? a->ck : work;
        a->part = work + n_ck;
    }
    return st;
}

template <int TPC, int SPT, int TC, bool CACHE = false, int MINB = 1>
static mc_status scan_bwd_run(const mc_exec *ex, scan_bwd_args a, int64_t Bt) {
    constexpr int CH = SCANB_THREADS / TPC;
    a.nch = (a.L + TC - 1) / TC;
    a.nblk = (a.E + CH - 1) / CH;
    mc_status st = mc_scan_bwd_scratch(ex, &a, Bt);
    if (st != MC_OK) {
        return st;
    }
    const mc_cuda_ctx *ctx = mc_cuda_ctx_of(ex);
    if (a.nblk > 0) {
        scan_bwd_kernel<TPC, SPT, TC, CACHE, MINB><<<dim3((unsigned)a.nblk, (unsigned)Bt), SCANB_THREADS, 0, ctx->stream>>>(a);
        st = mc_cuda_launched("selective_scan_bwd", ex);
        if (st != MC_OK) {
            return st;
        }
    }
    if (a.L > 0) { // with E = 0 the sums are empty: dB and dC are written as zeros
        scan_bwd_bc_kernel<<<mc_cuda_blocks(Bt * a.L * 2 * a.N, 256), 256, 0, ctx->stream>>>(a.dB, a.dC, a.ldbc, a.part,
                                                                                             Bt, a.L, a.N, a.nblk);
        st = mc_cuda_launched("selective_scan_bwd (dB, dC)", ex);
    }
    return st;
}

// kept: the chunk states mc_cuda_selective_scan_keep stored, or NULL (recomputed).
static mc_status scan_bwd_entry(const mc_exec *ex, float *du, float *ddt, float *dz, float *dB, float *dC, float *dA,
                                float *dD, float *ddt_bias, float *dh0, const float *dy, const float *dh_final,
                                const float *u, const float *dt, const float *dt_bias, const float *A, const float *B,
                                const float *C, int64_t ldbc, const float *D, const float *z, int64_t ldz,
                                const float *h0, int64_t Bt, int64_t L, int64_t E, int64_t N, const float *kept) {
    if (Bt < 0 || L < 0 || E < 0 || N < 0 || ldbc < N || ldz < E) {
        return mc_fail(mc_cuda_err(ex), MC_ERR_INVALID,
                       "selective_scan_bwd: Bt=%lld L=%lld E=%lld N=%lld ldbc=%lld ldz=%lld, expected sizes >= 0, "
                       "ldbc >= N, ldz >= E",
                       (long long)Bt, (long long)L, (long long)E, (long long)N, (long long)ldbc, (long long)ldz);
    }
    if (N > SCANB_MAX_N || Bt > 65535) {
        return mc_fail(mc_cuda_err(ex), MC_ERR_UNSUPPORTED,
                       "cuda selective_scan_bwd: N=%lld Bt=%lld, at most N=%d states and 65535 sequences in one call",
                       (long long)N, (long long)Bt, SCANB_MAX_N);
    }
    if (N <= 64) {
        return mc_cuda_scan_par_bwd(ex, 0, du, ddt, dz, dB, dC, dA, dD, ddt_bias, dh0, dy, dh_final, u, dt, dt_bias, A,
                                    B, C, ldbc, D, z, ldz, h0, Bt, L, E, N, kept);
    }
    if (kept != nullptr) { // mc_cuda_scan_keep_floats kept nothing
        return mc_fail(mc_cuda_err(ex), MC_ERR_UNSUPPORTED,
                       "cuda selective_scan_bwd: N=%lld, kept chunk states only for N <= 64", (long long)N);
    }
    return mc_cuda_scan_bwd_tiled(ex, du, ddt, dz, dB, dC, dA, dD, ddt_bias, dh0, dy, dh_final, u, dt, dt_bias, A, B,
                                  C, ldbc, D, z, ldz, h0, Bt, L, E, N);
}

extern "C" mc_status mc_cuda_selective_scan_bwd(const mc_exec *ex, float *du, float *ddt, float *dz, float *dB,
                                                float *dC, float *dA, float *dD, float *ddt_bias, float *dh0,
                                                const float *dy, const float *dh_final, const float *u, const float *dt,
                                                const float *dt_bias, const float *A, const float *B, const float *C,
                                                int64_t ldbc, const float *D, const float *z, int64_t ldz,
                                                const float *h0, int64_t Bt, int64_t L, int64_t E, int64_t N) {
    return scan_bwd_entry(ex, du, ddt, dz, dB, dC, dA, dD, ddt_bias, dh0, dy, dh_final, u, dt, dt_bias, A, B, C, ldbc,
                          D, z, ldz, h0, Bt, L, E, N, nullptr);
}

extern "C" mc_status mc_cuda_selective_scan_bwd_kept(const mc_exec *ex, float *du, float *ddt, float *dz, float *dB,
                                                     float *dC, float *dA, float *dD, float *ddt_bias, float *dh0,
                                                     const float *dy, const float *dh_final, const float *u,
                                                     const float *dt, const float *dt_bias, const float *A,
                                                     const float *B, const float *C, int64_t ldbc, const float *D,
                                                     const float *z, int64_t ldz, const float *h0, int64_t Bt,
                                                     int64_t L, int64_t E, int64_t N, const float *kept) {
    return scan_bwd_entry(ex, du, ddt, dz, dB, dC, dA, dD, ddt_bias, dh0, dy, dh_final, u, dt, dt_bias, A, B, C, ldbc,
                          D, z, ldz, h0, Bt, L, E, N, kept);
}

// Sizes checked by the caller (mc_cuda_selective_scan_bwd) or the benchmark.
mc_status mc_cuda_scan_bwd_tiled(const mc_exec *ex, float *du, float *ddt, float *dz, float *dB, float *dC, float *dA,
                                 float *dD, float *ddt_bias, float *dh0, const float *dy, const float *dh_final,
                                 const float *u, const float *dt, const float *dt_bias, const float *A,
                                 const float *B, const float *C, int64_t ldbc, const float *D, const float *z,
                                 int64_t ldz, const float *h0, int64_t Bt, int64_t L, int64_t E, int64_t N) {
    if (Bt == 0) {
        return MC_OK;
    }
    scan_bwd_args a = mc_scan_bwd_args_of(du, ddt, dz, dB, dC, dA, dD, ddt_bias, dh0, dy, dh_final, u, dt, dt_bias, A, B,
                                          C, ldbc, D, z, ldz, h0, L, E, N);
    // Configurations keep TC · SPT ≤ 64 history registers and the shared memory under 48 KiB. For N ≤ 16 the
    // choice follows the channels to spread (Bt·E): at Bt·E ≤ 6144 (e.g. 4 × 1536) 8 lanes × 2 states with cached
    // decays took 0.84 ms against 1.13 ms for 4 × 4 (Bt 4, L 1024); at 24576 the 4 × 4 layout with 3 blocks an SM
    // took 2.63 ms against 2.9–3.4 ms for the others (.dev experiment, H100, 2026-12-07).
    if (N <= 4) {
        return scan_bwd_run<4, 1, 32>(ex, a, Bt);
    }
    if (N <= 16) { // measured on an H100 (L 1024–2048, N 16): more lanes a channel while channels are few
        return Bt * E <= 6144 ? scan_bwd_run<8, 2, 16, true, 1>(ex, a, Bt) : scan_bwd_run<4, 4, 16, false, 3>(ex, a, Bt);
    }
    if (N <= 32) {
        return scan_bwd_run<8, 4, 16>(ex, a, Bt);
    }
    if (N <= 64) {
        return scan_bwd_run<16, 4, 16>(ex, a, Bt);
    }
    return scan_bwd_run<32, 4, 8>(ex, a, Bt);
}
