// Selective scan, forward and backward, parallel over time (contracts: ops.h selective_scan and
// mc_ref_selective_scan_bwd in kernels/ref/backward.h). The layout is ours: u, Δ, z, y are [Bt, L, E] (consecutive
// steps of a channel E floats apart), B and C rows ldbc apart.
//
// Threads. A warp owns one channel e of one sequence b; its 32 lanes own 32 consecutive runs ("slices") of S steps,
// so a chunk of T = 32·S steps is in flight at once. A block is W warps = W consecutive channels; chunks of T steps
// follow each other in a loop inside the block, carrying the state. Grid: (ceil(E / W), Bt) forward,
// (ceil(E / (W·G)), Bt) backward (the block runs G groups of W channels one after the other, see below).
//
// The recurrence h_t = d_t·h_{t−1} + x_t (d_t = exp(Δ_t·A_n), x_t = Δ_t·u_t·B_{t,n}, one state n at a time) is a
// composition of affine maps h ↦ a·h + b; the map of step t then step t' (later) is
//     (a, b) ∘ (a', b') = (a·a', a'·b + b'),
// which is associative. Per chunk and state n:
//  1. local: each lane runs its S steps from h = 0 (b) and takes a = exp(A_n·ΣΔ) over its slice; the d_t and x_t
//     stay in registers. Lane 0 folds the chunk's incoming state in: b₀ ← a₀·h_in + b₀.
//  2. scan: an inclusive Kogge–Stone scan over the 32 lanes with __shfl_up_sync (5 levels, 10 shuffles) turns b
//     into the state at the end of each lane's slice. The state before a slice is the left neighbour's (lane 0:
//     h_in); lane 31's is the next chunk's h_in (kept per channel and state in shared memory).
//  3. the lane steps through its slice again from that state, using the stored d_t and x_t: y_t += C_{t,n}·h_t.
// Exponentials are ex2.approx(Δ·A·log2 e) (2 ulp; ex2(0) = 1 exactly, so the zero-Δ padding steps past L are
// identities). After all states, y_t = (Σ_n C·h + D·u)·silu(z), staged through shared memory so that loads and
// stores of [steps, channels] tiles are coalesced rows of W channels.
//
// Shared memory (floats; dynamic, opted in above 48 KiB):
//   B, C of the chunk: 2 × 32 × (S·NP + 4)   (lane s's NP states of S steps each, state-major so that a state's S
//                                            values are float4 reads; +4: 8 lanes' float4s on distinct banks)
//   Δ and u (then y before the gate) tiles: 2 × W × (32·(S+1) + 32/W)
//   per (channel, state): A·log2 e and the carried state: 2 × W × NP
//
// Backward. The adjoint g = ∂loss/∂h runs backwards: with gy_t = dy_t·z_t·σ(z_t), λ_t = g + gy_t·C_t,n is
// ∂loss/∂h_t and g ← λ_t·d_t moves it to h_{t−1} (the reference's scan_step_bwd). That is the same affine
// recurrence in reverse time (the map of slice s takes the adjoint entering its end to the one leaving its start;
// the composition applies the later slice first), scanned with __shfl_down_sync, lane 31 folding in the adjoint
// coming from the next chunk. The forward states are recomputed chunk by chunk: a first kernel (the forward kernel
// in its ck mode) stores each chunk's starting state in scratch ck; the backward kernel walks the chunks from the
// last, per state: local forward (1), scan (2), the states h_t of the slice into registers, local reverse, reverse
// scan, then the slice backwards producing
//     du_t  = gy·D + Σ_n λ·Δ·B          ddt_t = (Σ_n λ·(A·d·h_{t−1} + B·u))·softplus'(v)
//     dz_t  = dy·(Σ_n C·h + D·u)·silu'(z)
//     dB_t,n = Σ_e λ·Δ·u    dC_t,n = Σ_e gy·h_t     dA_n += λ·Δ·d·h_{t−1}    dD += gy·u    ddt_bias += ddt
// (per-step sums over n in registers). dB and dC sum over channels: per state, the W warps' per-step values meet in
// shared memory (sP) and one thread per (step, dB|dC) adds them in warp order to the block's chunk accumulator
// (sAcc), over the G channel groups in order; at the chunk's end the block writes its partial sums (scratch part,
// [Bt, nblk, 2N, L]) and a second kernel adds the nblk blocks' partials into dB and dC (fixed order: deterministic).
// dA, dD and ddt_bias are reduced per warp (shuffles) into shared memory and added with one atomicAdd per element
// per block at the end.
//
// Backward shared memory (floats): B, C: 2 × 32 × (S·NP + 4); v, u, gy tiles (then du, ddt, pre-gate y): 3 × W ×
// (32·(S+1) + 32/W); sP: 2 × W × 32·(S+1); sAcc: 2 × NP × T; per (group channel, state) A, adjoint carry, dA:
// 3 × W·G × NP; chunk starting states of the group: W × NP; dD, ddt_bias: 2 × W·G.
// Scratch (device workspace): ck Bt·ceil(L/T)·E·N floats, part Bt·ceil(E/(W·G))·2N·L floats.
#include "kernels/cuda/common.cuh"

#define FULL_MASK 0xffffffffu

namespace {

constexpr float kLog2e = 1.4426950408889634f;

// 2^x in one MUFU op (max relative error 2^-22; exact 1 at x = ±0, 0 at −inf; results below 2^-126 flush to 0).
__device__ __forceinline__ float ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// Inclusive scan of the maps (a, b) over the warp's lanes, lane 0 first: b becomes the composition of lanes 0..lane.
__device__ __forceinline__ void scan_up(float &a, float &b, int lane) {
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
        const float ap = __shfl_up_sync(FULL_MASK, a, off), bp = __shfl_up_sync(FULL_MASK, b, off);
        if (lane >= off) {
            b = fmaf(a, bp, b);
            a *= ap;
        }
    }
}

// The same from lane 31 down (reverse time): b becomes the composition of lanes 31..lane, the higher lanes first.
__device__ __forceinline__ void scan_down(float &a, float &b, int lane) {
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
        const float ap = __shfl_down_sync(FULL_MASK, a, off), bp = __shfl_down_sync(FULL_MASK, b, off);
        if (lane + off < 32) {
            b = fmaf(a, bp, b);
            a *= ap;
        }
    }
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        v += __shfl_xor_sync(FULL_MASK, v, off);
    }
    return v;
}

// Tile geometry shared by both kernels. A [steps, channels] tile of a chunk is stored per channel c at c·CP, lane
// s's S steps at s·XP (XP odd: a warp's lanes read 32 banks); CP ≡ 32 / W (mod 32) keeps the coalesced staging
// writes (W channels × 32 / W steps a warp) on distinct banks.
template <int S, int W, int NP> struct tile {
    static_assert(S == 4 || S == 8 || S == 16, "S: steps a lane");
    static_assert(W == 4 || W == 8 || W == 16, "W: warps (channels) a block");
    static_assert(S != 4 || 32 * S == MC_SCAN_KEEP_STEPS, "the kept chunk states are the S = 4 kernels' chunks");
    static constexpr int T = 32 * S;
    static constexpr int XP = S + 1;
    static constexpr int CP = 32 * XP + 32 / W;
    static constexpr int BCP = S * NP + 4;
    static __device__ __forceinline__ int slot(int tt) { // position of chunk step tt inside a channel's tile
        return (tt / S) * XP + tt % S;
    }
    // The S values of state n of a lane's slice (B or C block, lane's row at my), read as float4s.
    static __device__ __forceinline__ void bc_row(const float *my, int n, float (&v)[S]) {
        const float4 *p = reinterpret_cast<const float4 *>(my + n * S);
#pragma unroll
        for (int i = 0; i < S / 4; i++) {
            const float4 q = p[i];
            v[4 * i] = q.x;
            v[4 * i + 1] = q.y;
            v[4 * i + 2] = q.z;
            v[4 * i + 3] = q.w;
        }
    }
};

// Stages B (and C when with_c) rows t0 .. t0 + T of sequence b, states 0 .. 2^ln ≥ N: zeros past L and for states
// n ≥ N, so padding steps add nothing. Aligned rows of a power-of-two N ≥ 4 (Mamba's 16) are read as float4s. Consecutive threads take consecutive steps of one lane's slice and state, so
// the stores are consecutive floats (the loads gather 8 rows a warp; B and C are small and shared by the grid through
// L2). Loads go out in batches of 8 a thread before their stores, so a batch waits for memory once.
template <int S, int W, int NP>
__device__ __forceinline__ void stage_bc(float *sB, float *sC, const float *B, const float *C, int64_t ldbc,
                                         int64_t row0, int tl, int N, bool with_c) {
    using G = tile<S, W, NP>;
    constexpr int NT = 32 * W, lS = S == 4 ? 2 : S == 8 ? 3 : 4, BATCH = 8;
    int ln = 0; // states staged: 2^ln ≥ N (states past N are never read)
    while ((1 << ln) < N) {
        ln++;
    }
    if (N == 1 << ln && N >= 4 && ldbc % 4 == 0 && ((uintptr_t)B | (uintptr_t)(with_c ? C : B)) % 16 == 0) {
        // Rows as float4s (4 states): consecutive threads read a row's quads, then its neighbours' (a warp: 8 rows
        // of 16 states); each quad's 4 values go to 4 state rows of the slice's block.
        const int lq = ln - 2, total4 = G::T << lq;
        for (int base = 0; base < total4; base += 4 * NT) {
            float4 vb[4], vc[4];
#pragma unroll
            for (int k = 0; k < 4; k++) {
                const int idx = base + k * NT + threadIdx.x, q = idx & ((1 << lq) - 1), tt = idx >> lq;
                const bool ok = idx < total4 && tt < tl;
                const int64_t at = (row0 + tt) * ldbc + 4 * q;
                vb[k] = ok ? *reinterpret_cast<const float4 *>(B + at) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                vc[k] = ok && with_c ? *reinterpret_cast<const float4 *>(C + at) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            }
#pragma unroll
            for (int k = 0; k < 4; k++) {
                const int idx = base + k * NT + threadIdx.x, q = idx & ((1 << lq) - 1), tt = idx >> lq;
                if (idx < total4) {
                    const int slot = (tt >> lS) * G::BCP + 4 * q * S + (tt & (S - 1));
                    sB[slot] = vb[k].x;
                    sB[slot + S] = vb[k].y;
                    sB[slot + 2 * S] = vb[k].z;
                    sB[slot + 3 * S] = vb[k].w;
                    if (with_c) {
                        sC[slot] = vc[k].x;
                        sC[slot + S] = vc[k].y;
                        sC[slot + 2 * S] = vc[k].z;
                        sC[slot + 3 * S] = vc[k].w;
                    }
                }
            }
        }
        return;
    }
    const int total = G::T << ln;
    for (int base = 0; base < total; base += BATCH * NT) {
        float vb[BATCH], vc[BATCH];
#pragma unroll
        for (int k = 0; k < BATCH; k++) {
            const int idx = base + k * NT + threadIdx.x;
            const int lo = idx & (S - 1), n = (idx >> lS) & ((1 << ln) - 1), tt = (idx >> (lS + ln)) * S + lo;
            const bool ok = idx < total && tt < tl && n < N;
            const int64_t at = (row0 + tt) * ldbc + n;
            vb[k] = ok ? B[at] : 0.0f;
            vc[k] = ok && with_c ? C[at] : 0.0f;
        }
#pragma unroll
        for (int k = 0; k < BATCH; k++) {
            const int idx = base + k * NT + threadIdx.x;
            const int lo = idx & (S - 1), n = (idx >> lS) & ((1 << ln) - 1), hi = idx >> (lS + ln);
            if (idx < total) {
                sB[hi * G::BCP + n * S + lo] = vb[k];
                if (with_c) {
                    sC[hi * G::BCP + n * S + lo] = vc[k];
                }
            }
        }
    }
}

// ---- forward ------------------------------------------------------------------------------------------------------

struct fwd_args {
    float *y, *h;     // normal mode: y [Bt, L, E] written, h [Bt, E, N] carried in and out
    const float *h0;  // ck mode: starting states [Bt, E, N] or NULL (zeros)
    float *ck;        // [Bt, nch, E, N] the state at the start of each chunk: ck mode, and the normal mode when
                      // the training forward keeps them for the backward (else NULL there)
    const float *u, *dt, *dt_bias, *A, *B, *C, *D, *z;
    int64_t ldbc, ldz, L, E, N, nch;
};

// The inputs every forward mode reads; the caller adds y and h (normal mode) or h0 and ck (ck mode).
static fwd_args fwd_args_of(const float *u, const float *dt, const float *dt_bias, const float *A, const float *B,
                            const float *C, int64_t ldbc, const float *D, const float *z, int64_t ldz, int64_t L,
                            int64_t E, int64_t N) {
    fwd_args a = {};
    a.u = u;
    a.dt = dt;
    a.dt_bias = dt_bias;
    a.A = A;
    a.B = B;
    a.C = C;
    a.D = D;
    a.z = z;
    a.ldbc = ldbc;
    a.ldz = ldz;
    a.L = L;
    a.E = E;
    a.N = N;
    return a;
}

template <int S, int W, int NP> constexpr int fwd_smem_floats() {
    return 2 * 32 * tile<S, W, NP>::BCP + 2 * W * tile<S, W, NP>::CP + 2 * W * NP;
}

// CK: the backward's first pass: no C, no y; stores the state at the start of every chunk into ck instead, h0 in.
template <int S, int W, int NP, bool CK, int MINB>
__global__ void __launch_bounds__(32 * W, MINB) scan_par_fwd_kernel(const fwd_args a) {
    using G = tile<S, W, NP>;
    constexpr int T = G::T;
    extern __shared__ float smem[];
    float *sB = smem, *sC = sB + 32 * G::BCP;
    float *sD = sC + 32 * G::BCP, *sU = sD + W * G::CP; // Δ, then u (then y before the gate)
    float *sA2 = sU + W * G::CP, *sH = sA2 + W * NP;    // [W][NP]: A·log2 e, carried state
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, N = (int)a.N;
    const int64_t b = blockIdx.y, e0 = (int64_t)blockIdx.x * W, E = a.E, L = a.L;
    for (int idx = threadIdx.x; idx < W * NP; idx += 32 * W) {
        const int c = idx / NP, n = idx % NP;
        const int64_t e = e0 + c;
        const bool ok = e < E && n < N;
        const int64_t at = (b * E + e) * N + n;
        sA2[idx] = ok ? a.A[e * N + n] * kLog2e : 0.0f;
        if (CK) {
            sH[idx] = ok && a.h0 != nullptr ? a.h0[at] : 0.0f;
        } else {
            sH[idx] = ok ? a.h[at] : 0.0f;
        }
    }
    const int64_t e = e0 + warp;
    const float Dv = !CK && e < E ? a.D[e] : 0.0f;
    const int sc = threadIdx.x % W; // the channel this thread stages (32 · W threads: 32 steps of each channel)
    const int64_t se = e0 + sc;
    const float sbias = se < E ? a.dt_bias[se] : 0.0f;
    float *myD = sD + warp * G::CP + lane * G::XP, *myU = sU + warp * G::CP + lane * G::XP;
    const float *myB = sB + lane * G::BCP, *myC = sC + lane * G::BCP;
    for (int64_t ch = 0; ch < a.nch; ch++) {
        const int64_t t0 = ch * T, row0 = b * L + t0;
        const int tl = (int)(L - t0 < T ? L - t0 : T);
        __syncthreads(); // the previous chunk's tiles are read, its carried states written
        if (CK || a.ck != nullptr) {
            for (int idx = threadIdx.x; idx < W * N; idx += 32 * W) {
                const int c = idx / N, n = idx % N;
                if (e0 + c < E) {
                    a.ck[((b * a.nch + ch) * E + e0 + c) * N + n] = sH[c * NP + n];
                }
            }
            if (CK && ch == a.nch - 1) { // the last chunk's end state is not needed
                break;
            }
        }
        stage_bc<S, W, NP>(sB, sC, a.B, a.C, a.ldbc, row0, tl, N, !CK);
        { // Δ and u: a thread keeps its channel sc and takes steps 32 apart, all S loads of each out at once
            float vd[S], vu[S];
            const int64_t at0 = (row0 + threadIdx.x / W) * E + se; // step k: at0 + k·32·E
#pragma unroll
            for (int k = 0; k < S; k++) {
                const bool ok = (int)threadIdx.x / W + 32 * k < tl && se < E;
                vd[k] = ok ? a.dt[at0 + k * 32 * E] : 0.0f;
                vu[k] = ok ? a.u[at0 + k * 32 * E] : 0.0f;
            }
#pragma unroll
            for (int k = 0; k < S; k++) {
                const int tt = threadIdx.x / W + 32 * k;
                const bool ok = tt < tl && se < E;
                sD[sc * G::CP + G::slot(tt)] = ok ? mc_dev_softplus(vd[k] + sbias) : 0.0f;
                sU[sc * G::CP + G::slot(tt)] = vu[k];
            }
        }
        __syncthreads();
        float dl[S], dul[S], yacc[S], sumD = 0.0f;
#pragma unroll
        for (int i = 0; i < S; i++) {
            dl[i] = myD[i];
            dul[i] = dl[i] * myU[i];
            yacc[i] = 0.0f;
            sumD += dl[i];
        }
        for (int n = 0; n < N; n++) {
            const float A2 = sA2[warp * NP + n];
            float d[S], x[S], hb = 0.0f;
            G::bc_row(myB, n, x);
#pragma unroll
            for (int i = 0; i < S; i++) {
                d[i] = ex2(dl[i] * A2);
                x[i] *= dul[i];
                hb = fmaf(d[i], hb, x[i]);
            }
            float ag = ex2(sumD * A2);
            const float carry = sH[warp * NP + n];
            if (lane == 0) {
                hb = fmaf(ag, carry, hb);
            }
            scan_up(ag, hb, lane); // hb: the state at the end of this lane's slice
            float hcur = __shfl_up_sync(FULL_MASK, hb, 1);
            __syncwarp(); // every lane has read the carried state
            if (lane == 31) {
                sH[warp * NP + n] = hb;
            }
            if (!CK) {
                hcur = lane == 0 ? carry : hcur;
                float cv[S];
                G::bc_row(myC, n, cv);
#pragma unroll
                for (int i = 0; i < S; i++) {
                    hcur = fmaf(d[i], hcur, x[i]);
                    yacc[i] = fmaf(cv[i], hcur, yacc[i]);
                }
            }
        }
        if (!CK) {
#pragma unroll
            for (int i = 0; i < S; i++) { // this lane's own slots: y before the gate replaces u
                myU[i] = yacc[i] + Dv * myU[i];
            }
            __syncthreads();
            float vz[S];
#pragma unroll
            for (int k = 0; k < S; k++) { // the gate's loads out at once, then the stores
                const int tt = threadIdx.x / W + 32 * k;
                vz[k] = tt < tl && se < E ? a.z[(row0 + tt) * a.ldz + se] : 0.0f;
            }
#pragma unroll
            for (int k = 0; k < S; k++) {
                const int tt = threadIdx.x / W + 32 * k;
                if (tt < tl && se < E) {
                    a.y[(row0 + tt) * E + se] = sU[sc * G::CP + G::slot(tt)] * mc_dev_silu(vz[k]);
                }
            }
        }
    }
    if (!CK) {
        __syncthreads();
        for (int idx = threadIdx.x; idx < W * N; idx += 32 * W) {
            const int c = idx / N, n = idx % N;
            if (e0 + c < E) {
                a.h[(b * E + e0 + c) * N + n] = sH[c * NP + n];
            }
        }
    }
}

template <int S, int W, int NP, bool CK, int MINB> mc_status fwd_launch(const mc_exec *ex, fwd_args a, int64_t Bt) {
    constexpr int T = 32 * S;
    constexpr size_t bytes = (size_t)fwd_smem_floats<S, W, NP>() * sizeof(float);
    a.nch = (a.L + T - 1) / T;
    if (a.nch == 0 || a.E == 0 || Bt == 0) {
        return MC_OK;
    }
    auto kernel = scan_par_fwd_kernel<S, W, NP, CK, MINB>;
    mc_status st = mc_cuda_status(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes), "selective_scan "
        "(shared memory)", ex);
    if (st != MC_OK) {
        return st;
    }
    const dim3 grid(mc_cuda_blocks(a.E, W), (unsigned)Bt);
    kernel<<<grid, 32 * W, bytes, mc_cuda_ctx_of(ex)->stream>>>(a);
    return mc_cuda_launched(CK ? "selective_scan_bwd (chunk states)" : "selective_scan (parallel)", ex);
}

// ---- backward -----------------------------------------------------------------------------------------------------

using bwd_args = mc_scan_bwd_args; // ck: [Bt, nch, E, N]; part: [Bt, nblk, 2N, L], dB in rows 0..N, dC in N..2N

template <int S, int W, int G, int NP> struct bwd_smem {
    using TL = tile<S, W, NP>;
    static constexpr int CB = W * G, PP = 32 * TL::XP;
    static constexpr int B = 0, C = B + 32 * TL::BCP;
    static constexpr int V = C + 32 * TL::BCP, U = V + W * TL::CP, GY = U + W * TL::CP;
    static constexpr int P = GY + W * TL::CP;   // [2][W][PP] per-warp dB (0) and dC (1) of one state
    static constexpr int ACC = P + 2 * W * PP;  // [2][NP][T] the block's dB and dC of the chunk
    static constexpr int A = ACC + 2 * NP * TL::T; // [CB][NP]
    static constexpr int CAR = A + CB * NP;     // [CB][NP] the adjoint entering the chunk from the right
    static constexpr int DA = CAR + CB * NP;    // [CB][NP]
    static constexpr int HC = DA + CB * NP;     // [W][NP] the group's states at the chunk's start
    static constexpr int DD = HC + W * NP;      // [CB]
    static constexpr int DB = DD + CB;          // [CB]
    static constexpr int FLOATS = DB + CB;
};

template <int S, int W, int G, int NP, int MINB>
__global__ void __launch_bounds__(32 * W, MINB) scan_par_bwd_kernel(const bwd_args a) {
    using TL = tile<S, W, NP>;
    using SM = bwd_smem<S, W, G, NP>;
    constexpr int T = TL::T, CB = SM::CB, NT = 32 * W;
    extern __shared__ float smem[];
    float *sB = smem + SM::B, *sC = smem + SM::C, *sV = smem + SM::V, *sU = smem + SM::U, *sG = smem + SM::GY;
    float *sP = smem + SM::P, *sAcc = smem + SM::ACC, *sA = smem + SM::A, *sCar = smem + SM::CAR;
    float *sdA = smem + SM::DA, *sHc = smem + SM::HC, *sdD = smem + SM::DD, *sdb = smem + SM::DB;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, N = (int)a.N;
    const int64_t b = blockIdx.y, eb = (int64_t)blockIdx.x * CB, E = a.E, L = a.L;
    for (int idx = threadIdx.x; idx < CB * NP; idx += NT) {
        const int c = idx / NP, n = idx % NP;
        const int64_t e = eb + c;
        const bool ok = e < E && n < N;
        sA[idx] = ok ? a.A[e * N + n] : 0.0f;
        sCar[idx] = ok && a.dh_final != nullptr ? a.dh_final[(b * E + e) * N + n] : 0.0f;
        sdA[idx] = 0.0f;
    }
    for (int idx = threadIdx.x; idx < CB; idx += NT) {
        sdD[idx] = sdb[idx] = 0.0f;
    }
    float *myV = sV + warp * TL::CP + lane * TL::XP, *myU = sU + warp * TL::CP + lane * TL::XP;
    float *myG = sG + warp * TL::CP + lane * TL::XP;
    const float *myB = sB + lane * TL::BCP, *myC = sC + lane * TL::BCP;
    float *myP0 = sP + warp * SM::PP + lane * TL::XP, *myP1 = myP0 + W * SM::PP;
    for (int64_t ch = a.nch - 1; ch >= 0; ch--) {
        const int64_t t0 = ch * T, row0 = b * L + t0;
        const int tl = (int)(L - t0 < T ? L - t0 : T);
        __syncthreads(); // the previous chunk's partial sums and outputs are stored
        stage_bc<S, W, NP>(sB, sC, a.B, a.C, a.ldbc, row0, tl, N, true);
        for (int idx = threadIdx.x; idx < 2 * NP * T; idx += NT) {
            sAcc[idx] = 0.0f;
        }
        for (int g = 0; g < G; g++) {
            const int64_t e0 = eb + (int64_t)g * W;
            __syncthreads(); // the previous group's outputs are stored
            // v = dt + dt_bias (−inf past L or E: Δ = softplus(−inf) = 0 and softplus' = σ(−inf) = 0), u, gy.
            { // a thread keeps channel c and takes steps 32 apart, all S loads of each out at once
                const int c = threadIdx.x % W;
                const int64_t ee = e0 + c;
                const float bias = ee < E ? a.dt_bias[ee] : 0.0f;
                float v0[S], v1[S];
#pragma unroll
                for (int k = 0; k < S; k++) {
                    const int tt = threadIdx.x / W + 32 * k;
                    const bool ok = tt < tl && ee < E;
                    v0[k] = ok ? a.dt[(row0 + tt) * E + ee] : 0.0f;
                    v1[k] = ok ? a.u[(row0 + tt) * E + ee] : 0.0f;
                }
#pragma unroll
                for (int k = 0; k < S; k++) {
                    const int tt = threadIdx.x / W + 32 * k;
                    const int s = c * TL::CP + TL::slot(tt);
                    sV[s] = tt < tl && ee < E ? v0[k] + bias : -INFINITY;
                    sU[s] = v1[k];
                }
#pragma unroll
                for (int k = 0; k < S; k++) {
                    const int tt = threadIdx.x / W + 32 * k;
                    const bool ok = tt < tl && ee < E;
                    v0[k] = ok ? a.z[(row0 + tt) * a.ldz + ee] : 0.0f;
                    v1[k] = ok ? a.dy[(row0 + tt) * E + ee] : 0.0f;
                }
#pragma unroll
                for (int k = 0; k < S; k++) { // gradient wrt C·h + D·u
                    sG[c * TL::CP + TL::slot(threadIdx.x / W + 32 * k)] = v1[k] * (v0[k] * mc_sigmoid(v0[k]));
                }
            }
            for (int idx = threadIdx.x; idx < W * N; idx += NT) {
                const int c = idx / N, n = idx % N;
                sHc[c * NP + n] = e0 + c < E ? a.ck[((b * a.nch + ch) * E + e0 + c) * N + n] : 0.0f;
            }
            __syncthreads();
            const int cb = g * W + warp; // this warp's channel within the block
            float dl[S], ul[S], gyl[S], dua[S], dda[S], ro[S], sumD = 0.0f;
#pragma unroll
            for (int i = 0; i < S; i++) {
                dl[i] = mc_dev_softplus(myV[i]);
                ul[i] = myU[i];
                gyl[i] = myG[i];
                dua[i] = dda[i] = ro[i] = 0.0f;
                sumD += dl[i];
            }
            for (int n = 0; n < N; n++) {
                const float An = sA[cb * NP + n], A2 = An * kLog2e;
                // Forward over the slice from 0, scan, then the states h[i] after each step (hs: before the first).
                float d[S], Bv[S], Cv[S], hh[S], q[S], hb = 0.0f;
                TL::bc_row(myB, n, Bv);
#pragma unroll
                for (int i = 0; i < S; i++) {
                    d[i] = ex2(dl[i] * A2);
                    hb = fmaf(d[i], hb, (dl[i] * ul[i]) * Bv[i]);
                }
                const float a_own = ex2(sumD * A2);
                const float hc = sHc[warp * NP + n];
                float ag = a_own;
                if (lane == 0) {
                    hb = fmaf(ag, hc, hb);
                }
                scan_up(ag, hb, lane);
                float hs = __shfl_up_sync(FULL_MASK, hb, 1);
                hs = lane == 0 ? hc : hs;
                float hcur = hs;
#pragma unroll
                for (int i = 0; i < S; i++) {
                    hcur = fmaf(d[i], hcur, (dl[i] * ul[i]) * Bv[i]);
                    hh[i] = hcur;
                }
                // Adjoint: the slice backwards from 0, scan from lane 31 (the adjoint from the next chunk folded
                // in there), then g entering each slice's last step.
                float gb = 0.0f;
                TL::bc_row(myC, n, Cv);
#pragma unroll
                for (int i = S - 1; i >= 0; i--) {
                    q[i] = gyl[i] * Cv[i];
                    ro[i] = fmaf(Cv[i], hh[i], ro[i]);
                    gb = d[i] * (gb + q[i]);
                }
                const float gc = sCar[cb * NP + n];
                float ar = a_own;
                if (lane == 31) {
                    gb = fmaf(ar, gc, gb);
                }
                scan_down(ar, gb, lane); // gb: the adjoint leaving this lane's slice (∂loss/∂h before it)
                float gcur = __shfl_down_sync(FULL_MASK, gb, 1);
                gcur = lane == 31 ? gc : gcur;
                __syncwarp(); // every lane has read the carried adjoint
                if (lane == 0) {
                    sCar[cb * NP + n] = gb; // the adjoint into the previous chunk
                }
                float pB[S], pC[S], pdA = 0.0f;
#pragma unroll
                for (int i = S - 1; i >= 0; i--) {
                    const float lam = gcur + q[i]; // ∂loss/∂h_t
                    const float t1 = d[i] * (i > 0 ? hh[i - 1] : hs);
                    pB[i] = lam * (dl[i] * ul[i]);
                    pC[i] = gyl[i] * hh[i];
                    dua[i] = fmaf(lam, dl[i] * Bv[i], dua[i]);
                    dda[i] = fmaf(lam, fmaf(An, t1, Bv[i] * ul[i]), dda[i]);
                    pdA = fmaf(lam, dl[i] * t1, pdA);
                    gcur = lam * d[i];
                }
                pdA = warp_sum(pdA);
                if (lane == 0) {
                    sdA[cb * NP + n] += pdA;
                }
                // dB and dC of state n: the W warps' values summed per step, in warp order, into the chunk's sums.
                __syncthreads(); // the previous state's sums are read
#pragma unroll
                for (int i = 0; i < S; i++) {
                    myP0[i] = pB[i];
                    myP1[i] = pC[i];
                }
                __syncthreads();
                for (int j = threadIdx.x; j < 2 * T; j += NT) {
                    const int k = j / T, tt = j % T;
                    const float *p = sP + k * W * SM::PP + TL::slot(tt);
                    float sum = 0.0f;
#pragma unroll
                    for (int w = 0; w < W; w++) {
                        sum += p[w * SM::PP];
                    }
                    sAcc[(k * NP + n) * T + tt] += sum;
                }
            }
            // Per-step outputs into this lane's own tile slots: du over v, ddt over u, C·h + D·u over gy.
            const int64_t e = e0 + warp;
            const float Dv = e < E ? a.D[e] : 0.0f;
            float sdd = 0.0f, sdbv = 0.0f;
#pragma unroll
            for (int i = 0; i < S; i++) {
                const float v = myV[i];
                const float ddtv = dda[i] * (v > 20.0f ? 1.0f : mc_sigmoid(v)); // softplus' = σ below the threshold
                if (lane * S + i < tl) {
                    sdd = fmaf(gyl[i], ul[i], sdd);
                    sdbv += ddtv;
                }
                myV[i] = fmaf(gyl[i], Dv, dua[i]);
                myU[i] = ddtv;
                myG[i] = fmaf(Dv, ul[i], ro[i]);
            }
            sdd = warp_sum(sdd);
            sdbv = warp_sum(sdbv);
            if (lane == 0) {
                sdD[cb] += sdd;
                sdb[cb] += sdbv;
            }
            __syncthreads();
            { // outputs: channel c, steps 32 apart, the loads of z and dy out at once
                const int c = threadIdx.x % W;
                const int64_t ee = e0 + c;
                float vz[S], vy[S];
#pragma unroll
                for (int k = 0; k < S; k++) {
                    const int tt = threadIdx.x / W + 32 * k;
                    const bool ok = tt < tl && ee < E;
                    vz[k] = ok ? a.z[(row0 + tt) * a.ldz + ee] : 0.0f;
                    vy[k] = ok ? a.dy[(row0 + tt) * E + ee] : 0.0f;
                }
#pragma unroll
                for (int k = 0; k < S; k++) {
                    const int tt = threadIdx.x / W + 32 * k;
                    if (tt < tl && ee < E) {
                        const int64_t row = row0 + tt;
                        const int s = c * TL::CP + TL::slot(tt);
                        a.du[row * E + ee] = sV[s];
                        a.ddt[row * E + ee] = sU[s];
                        a.dz[row * a.ldz + ee] = vy[k] * sG[s] * mc_silu_grad(mc_sigmoid(vz[k]), vz[k]);
                    }
                }
            }
        }
        __syncthreads(); // the chunk's dB and dC sums are complete
        const int N2 = 2 * N;
        float *part = a.part + (b * a.nblk + blockIdx.x) * N2 * L + t0;
        for (int j = threadIdx.x; j < N2 * T; j += NT) {
            const int k = j / T, tt = j % T;
            if (tt < tl) {
                part[(int64_t)k * L + tt] = sAcc[(k < N ? k : NP + k - N) * T + tt];
            }
        }
    }
    __syncthreads();
    // dh0 after dh_final was read (same block, same elements): the two may alias.
    for (int idx = threadIdx.x; idx < CB * NP; idx += NT) {
        const int c = idx / NP, n = idx % NP;
        const int64_t e = eb + c;
        if (e < E && n < N) {
            if (a.dh0 != nullptr) {
                a.dh0[(b * E + e) * N + n] = sCar[idx];
            }
            atomicAdd(&a.dA[e * N + n], sdA[idx]);
        }
    }
    for (int idx = threadIdx.x; idx < CB; idx += NT) {
        if (eb + idx < E) {
            atomicAdd(&a.dD[eb + idx], sdD[idx]);
            atomicAdd(&a.ddt_bias[eb + idx], sdb[idx]);
        }
    }
}

// dB and dC (written): the sum of the blocks' partial sums in block order, one thread per (sequence, column, step).
__global__ void scan_par_bc_kernel(float *__restrict__ dB, float *__restrict__ dC, int64_t ldbc,
                                   const float *__restrict__ part, int64_t Bt, int64_t L, int64_t N, int64_t nblk) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, N2 = 2 * N;
    if (i >= Bt * N2 * L) {
        return;
    }
    const int64_t t = i % L, k = (i / L) % N2, b = i / (L * N2);
    const float *p = part + (b * nblk * N2 + k) * L + t;
    float sum = 0.0f;
    for (int64_t blk = 0; blk < nblk; blk++) {
        sum += p[blk * N2 * L];
    }
    const int64_t row = b * L + t;
    if (k < N) {
        dB[row * ldbc + k] = sum;
    } else {
        dC[row * ldbc + k - N] = sum;
    }
}

// kept: the chunk states the training forward stored (its chunks are T steps too: the S = 4 configurations), or
// NULL: a first pass recomputes them into scratch.
template <int S, int W, int G, int NP, int MINB>
mc_status bwd_launch(const mc_exec *ex, bwd_args a, int64_t Bt, const float *h0, const float *kept) {
    constexpr int T = 32 * S, CB = W * G;
    constexpr size_t bytes = (size_t)bwd_smem<S, W, G, NP>::FLOATS * sizeof(float);
    a.nch = (a.L + T - 1) / T;
    a.nblk = (a.E + CB - 1) / CB;
    a.ck = const_cast<float *>(kept); // read only; with it the scratch holds the partial sums alone
    mc_status st = mc_scan_bwd_scratch(ex, &a, Bt); // chunk states and partial sums
    if (st != MC_OK) {
        return st;
    }
    const mc_cuda_ctx *ctx = mc_cuda_ctx_of(ex);
    if (kept == nullptr && a.nch > 0 && a.E > 0) { // pass 1: the forward's chunk states (its chunks are T steps too)
        fwd_args f = fwd_args_of(a.u, a.dt, a.dt_bias, a.A, a.B, a.C, a.ldbc, a.D, a.z, a.ldz, a.L, a.E, a.N);
        f.h0 = h0;
        f.ck = a.ck;
        st = fwd_launch<S, 8, NP, true, 1>(ex, f, Bt);
        if (st != MC_OK) {
            return st;
        }
    }
    if (a.nblk > 0) { // also with L = 0: dh0 = dh_final
        auto kernel = scan_par_bwd_kernel<S, W, G, NP, MINB>;
        st = mc_cuda_status(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes),
                            "selective_scan_bwd (shared memory)", ex);
        if (st != MC_OK) {
            return st;
        }
        kernel<<<dim3((unsigned)a.nblk, (unsigned)Bt), 32 * W, bytes, ctx->stream>>>(a);
        st = mc_cuda_launched("selective_scan_bwd (parallel)", ex);
        if (st != MC_OK) {
            return st;
        }
    }
    if (a.L > 0 && a.N > 0) { // with E = 0 the sums are empty: dB and dC are written as zeros
        scan_par_bc_kernel<<<mc_cuda_blocks(Bt * 2 * a.N * a.L, 256), 256, 0, ctx->stream>>>(
            a.dB, a.dC, a.ldbc, a.part, Bt, a.L, a.N, a.nblk);
        st = mc_cuda_launched("selective_scan_bwd (dB, dC)", ex);
    }
    return st;
}

} // namespace

// ---- entries ------------------------------------------------------------------------------------------------------

// Forward configurations: 1: S 8, N ≤ 16 (chunks of 256 steps); 2: S 4, N ≤ 16 (128); 3: S 4, N ≤ 64 (128); 4: S 16,
// N ≤ 16 (512 steps; the per-state lane scan spread over twice the steps, at half the blocks an SM). With keep, the
// chunk states go there too, at the backward's 128-step chunks: configuration 2 or 3 whatever config says.
mc_status mc_cuda_scan_par(const mc_exec *ex, int config, float *y, float *h, const float *u, const float *dt,
                           const float *dt_bias, const float *A, const float *B, const float *C, int64_t ldbc,
                           const float *D, const float *z, int64_t ldz, int64_t Bt, int64_t L, int64_t E, int64_t N,
                           float *keep) {
    if (config == 0 || keep != nullptr) {
        config = keep != nullptr ? (N <= 16 ? 2 : 3) : N <= 16 ? 1 : 3;
    }
    if (N > (config == 3 ? 64 : 16) || config < 1 || config > 4 || Bt > 65535) {
        return mc_fail(mc_cuda_err(ex), MC_ERR_UNSUPPORTED,
                       "cuda selective_scan (parallel, configuration %d): N=%lld Bt=%lld not supported", config,
                       (long long)N, (long long)Bt);
    }
    fwd_args a = fwd_args_of(u, dt, dt_bias, A, B, C, ldbc, D, z, ldz, L, E, N);
    a.y = y;
    a.h = h;
    a.ck = keep;
    switch (config) {
    case 1:
        return fwd_launch<8, 8, 16, false, 4>(ex, a, Bt);
    case 2:
        return fwd_launch<4, 8, 16, false, 4>(ex, a, Bt);
    case 3:
        return fwd_launch<4, 8, 64, false, 2>(ex, a, Bt);
    default:
        return fwd_launch<16, 8, 16, false, 2>(ex, a, Bt);
    }
}

// Backward configurations (S steps a lane, W warps, G channel groups a block): 1: S 4, W 8, G 4, N ≤ 16; 2: S 4,
// W 8, G 2, N ≤ 16 (twice the blocks); 3: S 4, W 8, G 4, N ≤ 64; 4: S 8, W 8, G 4, N ≤ 16; 5: S 4, W 8, G 1, N ≤ 16
// (twice 2's blocks again, for small batches: at Bt 16 it took 2.276 ms; not yet timed at Bt 4). 2 is the default
// for N ≤ 16: on an H100 at L 1024, E 1536 it took 0.544 ms at Bt 4 (1: 0.745) and 2.021 ms at Bt 16 (1: 2.180).
// kept: the chunk states mc_cuda_scan_par stored with keep (NULL: recomputed first); configuration 4 (other chunks)
// is then replaced by the default.
mc_status mc_cuda_scan_par_bwd(const mc_exec *ex, int config, float *du, float *ddt, float *dz, float *dB, float *dC,
                               float *dA, float *dD, float *ddt_bias, float *dh0, const float *dy,
                               const float *dh_final, const float *u, const float *dt, const float *dt_bias,
                               const float *A, const float *B, const float *C, int64_t ldbc, const float *D,
                               const float *z, int64_t ldz, const float *h0, int64_t Bt, int64_t L, int64_t E,
                               int64_t N, const float *kept) {
    if (config == 0) { // MAMBAC_SCAN_BWD_CONFIG picks another, for whole-step benchmarks
        const char *v = getenv("MAMBAC_SCAN_BWD_CONFIG");
        config = v != nullptr && atoi(v) > 0 ? atoi(v) : N > 16 ? 3 : 2;
    }
    if (kept != nullptr && config == 4) {
        config = N > 16 ? 3 : 2;
    }
    if (N > (config == 3 ? 64 : 16) || config < 1 || config > 5 || Bt > 65535) {
        return mc_fail(mc_cuda_err(ex), MC_ERR_UNSUPPORTED,
                       "cuda selective_scan_bwd (parallel, configuration %d): N=%lld Bt=%lld not supported", config,
                       (long long)N, (long long)Bt);
    }
    if (Bt == 0) {
        return MC_OK;
    }
    bwd_args a = mc_scan_bwd_args_of(du, ddt, dz, dB, dC, dA, dD, ddt_bias, dh0, dy, dh_final, u, dt, dt_bias, A, B, C,
                                     ldbc, D, z, ldz, h0, L, E, N);
    switch (config) {
    case 1:
        return bwd_launch<4, 8, 4, 16, 3>(ex, a, Bt, h0, kept);
    case 2:
        return bwd_launch<4, 8, 2, 16, 3>(ex, a, Bt, h0, kept);
    case 3:
        return bwd_launch<4, 8, 4, 64, 1>(ex, a, Bt, h0, kept);
    case 5:
        return bwd_launch<4, 8, 1, 16, 3>(ex, a, Bt, h0, kept);
    default:
        return bwd_launch<8, 8, 4, 16, 1>(ex, a, Bt, h0, nullptr);
    }
}
