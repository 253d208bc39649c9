// Selective scan for the cpu backend (spec §3.4 steps 4–9): discretize, recur, read out, D skip and SiLU(z) gate in
// one pass over the sequence. Vector lanes hold consecutive channels e (u, dt, z, y rows are contiguous in e), so
// softplus is vectorized too and the readout needs no horizontal sum; each lane keeps its N states in registers
// for the whole sequence. Threads split the channels. The oracle is mc_ref_selective_scan.
#include <math.h>
#include <stdbool.h>

#include "kernels/cpu/simd.h"
#include "kernels/cpu/cpu.h"

// Below this many L·E·N state updates the call runs on one thread. A decode step of mamba-130m (E=1536, N=16: 24576
// updates) takes ~8.5 µs on one Zen 4 core (bench_ssm), several times an OpenMP fork/join, so it is split.
#define SCAN_MIN_PARALLEL 8192

// Up to this many steps the state-in-lanes decode form wins over channels-in-lanes (bench_ssm).
#define SCAN_DECODE_MAX_L 4

// Steps whose Δ = softplus(...) and SiLU gates are computed ahead, together: they depend on nothing carried, but
// every state update of a step waits for its Δ, and with the step's ~300 instructions in flight the core cannot
// reach the next step's softplus early on its own (bench_ssm, L = 128: avx512 6.7k → 4.8k, avx2 15.2k → 11.9k ns).
#define SCAN_TILE 8

typedef struct scan_args {
    float *y;                     // [L, E]
    float *h;                     // [E, N]
    const float *u;               // [L, E]
    const float *dt;              // [L, E]
    const float *dt_bias, *A, *D; // [E], [E, N], [E]
    const float *B, *C;           // [L, N], rows ldbc apart
    const float *z;               // [L, E], rows ldz apart
    int64_t ldbc, ldz, L, E, N;
} scan_args;

// Rows this far ahead are prefetched: a block walks a column strip of u, dt, z and y whose stride (E or 2E floats,
// a page or more) the hardware prefetchers follow poorly once a sequence outgrows L2 (bench_ssm, L = 128, Bt = 8:
// 2x without).
#define SCAN_PREFETCH_ROWS 8

// Prefetches row t + SCAN_PREFETCH_ROWS of the strip [e0, e0 + width) of the step inputs and the output.
static inline void scan_prefetch(const scan_args *a, int64_t t, int64_t e0, int64_t width) {
    int64_t tp = t + SCAN_PREFETCH_ROWS;
    if (tp >= a->L) {
        return;
    }
    const float *rows[3] = { a->u + tp * a->E + e0, a->dt + tp * a->E + e0, a->z + tp * a->ldz + e0 };
    for (int i = 0; i < 3; i++) {
        __builtin_prefetch(rows[i]);
        __builtin_prefetch(rows[i] + width - 1);
    }
    __builtin_prefetch(a->y + tp * a->E + e0, 1);
    __builtin_prefetch(a->y + tp * a->E + e0 + width - 1, 1);
}

// ---- portable C ----------------------------------------------------------------------------------------------

static float silu_c(float v) {
    return v / (1.0f + expf(-v));
}

static void scan_channel_c(const void *ctx, int64_t e) {
    const scan_args *a = ctx;
    const int64_t N = a->N, E = a->E;
    float *he = a->h + e * N;
    const float *Ae = a->A + e * N;
    for (int64_t t = 0; t < a->L; t++) {
        const float *bt = a->B + t * a->ldbc, *ct = a->C + t * a->ldbc;
        float v = a->dt[t * E + e] + a->dt_bias[e];
        float delta = v > 20.0f ? v : log1pf(expf(v)); // torch softplus, threshold 20 (spec §3.7)
        float ut = a->u[t * E + e];
        float du = delta * ut;
        float acc = 0.0f;
        for (int64_t n = 0; n < N; n++) {
            he[n] = expf(delta * Ae[n]) * he[n] + du * bt[n];
            acc += ct[n] * he[n];
        }
        a->y[t * E + e] = (acc + a->D[e] * ut) * silu_c(a->z[t * a->ldz + e]);
    }
}

void mc_cpu_selective_scan_c(const mc_exec *ex, float *y, float *h, const float *u, const float *dt, const float *dt_bias,
                   const float *A, const float *B, const float *C, int64_t ldbc, const float *D, const float *z,
                   int64_t ldz, int64_t L, int64_t E, int64_t N) {
    const scan_args a = { y, h, u, dt, dt_bias, A, D, B, C, z, ldbc, ldz, L, E, N };
    mc_simd_parallel_for(mc_simd_threads(ex, L * E * N, SCAN_MIN_PARALLEL), E, scan_channel_c, &a);
}

#if defined(__x86_64__)

// ---- AVX-512: 16 channels per vector, up to 16 states per pass ----------------------------------------------

// States n0 .. n0+nb of channels e0 .. e0+15 (lanes beyond m are off) over all L steps. With N > 16 the states run
// in passes of 16 and y collects the partial readouts: the first pass stores, the last adds the skip and the gate.
// Called with nb = 16 as a constant, the state and A stay in registers (the loops unroll).
MC_AVX512 static MC_INLINE void scan512_pass(const scan_args *a, int64_t e0, __mmask16 m, int64_t n0, int nb,
                                             bool first, bool last) {
    const int64_t N = a->N, E = a->E;
    const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32((int)N));
    __m512 hv[16], av[16];
    for (int i = 0; i < nb; i++) { // [E, N] → one vector per state n: strided gathers, once per call
        av[i] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, a->A + e0 * N + n0 + i, 4);
        hv[i] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, a->h + e0 * N + n0 + i, 4);
    }
    const __m512 bias = _mm512_maskz_loadu_ps(m, a->dt_bias + e0);
    const __m512 dskip = _mm512_maskz_loadu_ps(m, a->D + e0);
    for (int64_t t0 = 0; t0 < a->L; t0 += SCAN_TILE) {
        const int tn = (int)(a->L - t0 < SCAN_TILE ? a->L - t0 : SCAN_TILE);
        __m512 dl[SCAN_TILE], gl[SCAN_TILE];
        for (int i = 0; i < tn; i++) { // the tile's Δ and gates first (see SCAN_TILE)
            const int64_t t = t0 + i;
            dl[i] = mc_softplus512(_mm512_add_ps(_mm512_maskz_loadu_ps(m, a->dt + t * E + e0), bias));
            gl[i] = last ? mc_silu512(_mm512_maskz_loadu_ps(m, a->z + t * a->ldz + e0)) : _mm512_setzero_ps();
        }
        for (int i = 0; i < tn; i++) {
            const int64_t t = t0 + i;
            scan_prefetch(a, t, e0, 16);
            const float *bt = a->B + t * a->ldbc + n0, *ct = a->C + t * a->ldbc + n0;
            __m512 ut = _mm512_maskz_loadu_ps(m, a->u + t * E + e0);
            __m512 du = _mm512_mul_ps(dl[i], ut);
            __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps(); // two chains halve the readout latency
            for (int j = 0; j < nb; j++) {
                __m512 da = mc_exp512(_mm512_mul_ps(dl[i], av[j]));
                hv[j] = _mm512_fmadd_ps(da, hv[j], _mm512_mul_ps(du, _mm512_set1_ps(bt[j])));
                if (j % 2 == 0) {
                    acc0 = _mm512_fmadd_ps(_mm512_set1_ps(ct[j]), hv[j], acc0);
                } else {
                    acc1 = _mm512_fmadd_ps(_mm512_set1_ps(ct[j]), hv[j], acc1);
                }
            }
            __m512 acc = _mm512_add_ps(acc0, acc1);
            if (!first) {
                acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(m, a->y + t * E + e0));
            }
            if (last) {
                acc = _mm512_mul_ps(_mm512_fmadd_ps(dskip, ut, acc), gl[i]);
            }
            _mm512_mask_storeu_ps(a->y + t * E + e0, m, acc);
        }
    }
    for (int i = 0; i < nb; i++) {
        _mm512_mask_i32scatter_ps(a->h + e0 * N + n0 + i, m, idx, hv[i], 4);
    }
}

// Decode form for N = 16 (few steps): lanes hold the 16 states of one channel, so h [E, 16] and A [E, 16] are read
// and written as they lie, with no transposing gathers and scatters, which cost more than a single step's work.
// Δ and the gate are still computed 16 channels at a time; the readouts of 16 channels are folded together.
MC_AVX512 static void scan512_block_n16(const void *ctx, int64_t blk) {
    const scan_args *a = ctx;
    const int64_t E = a->E, e0 = blk * 16;
    const int ne = (int)(E - e0 < 16 ? E - e0 : 16);
    const __mmask16 m = mc_mask512(ne);
    const __m512 bias = _mm512_maskz_loadu_ps(m, a->dt_bias + e0);
    const __m512 dskip = _mm512_maskz_loadu_ps(m, a->D + e0);
    for (int64_t t = 0; t < a->L; t++) {
        const __m512 bt = _mm512_loadu_ps(a->B + t * a->ldbc), ct = _mm512_loadu_ps(a->C + t * a->ldbc);
        __m512 ut = _mm512_maskz_loadu_ps(m, a->u + t * E + e0);
        __m512 delta = mc_softplus512(_mm512_add_ps(_mm512_maskz_loadu_ps(m, a->dt + t * E + e0), bias));
        // Δ and Δ·u per channel go through memory: a broadcast load costs a load port, a lane permute an FP pipe.
        float dl[16], dul[16];
        _mm512_storeu_ps(dl, delta);
        _mm512_storeu_ps(dul, _mm512_mul_ps(delta, ut));
        __m512 p[16];
        for (int j = 0; j < 16; j++) {
            if (j >= ne) {
                p[j] = _mm512_setzero_ps();
                continue;
            }
            float *hj = a->h + (e0 + j) * 16;
            __m512 da = mc_exp512(_mm512_mul_ps(_mm512_set1_ps(dl[j]), _mm512_loadu_ps(a->A + (e0 + j) * 16)));
            __m512 hv = _mm512_fmadd_ps(da, _mm512_loadu_ps(hj), _mm512_mul_ps(_mm512_set1_ps(dul[j]), bt));
            _mm512_storeu_ps(hj, hv);
            p[j] = _mm512_mul_ps(ct, hv);
        }
        __m512 acc = mc_hsum16x16_512(p);
        __m512 zt = _mm512_maskz_loadu_ps(m, a->z + t * a->ldz + e0);
        _mm512_mask_storeu_ps(a->y + t * E + e0, m, _mm512_mul_ps(_mm512_fmadd_ps(dskip, ut, acc), mc_silu512(zt)));
    }
}

MC_AVX512 static void scan512_block(const void *ctx, int64_t blk) {
    const scan_args *a = ctx;
    const int64_t e0 = blk * 16;
    const __mmask16 m = mc_mask512(a->E - e0);
    for (int64_t n0 = 0; n0 < a->N; n0 += 16) {
        const bool first = n0 == 0, last = n0 + 16 >= a->N;
        if (a->N - n0 >= 16) {
            scan512_pass(a, e0, m, n0, 16, first, last);
        } else {
            scan512_pass(a, e0, m, n0, (int)(a->N - n0), first, last);
        }
    }
}

MC_AVX512 void mc_cpu_selective_scan_avx512(const mc_exec *ex, float *y, float *h, const float *u, const float *dt,
                                  const float *dt_bias, const float *A, const float *B, const float *C, int64_t ldbc,
                                  const float *D, const float *z, int64_t ldz, int64_t L, int64_t E, int64_t N) {
    const scan_args a = { y, h, u, dt, dt_bias, A, D, B, C, z, ldbc, ldz, L, E, N };
    const bool decode = N == 16 && L <= SCAN_DECODE_MAX_L;
    mc_simd_parallel_for(mc_simd_threads(ex, L * E * N, SCAN_MIN_PARALLEL), (E + 15) / 16,
                         decode ? scan512_block_n16 : scan512_block, &a);
}

// ---- AVX2: 8 channels per vector, up to 8 states per pass (16 ymm registers hold only 8 states + temporaries) --

MC_AVX2 static MC_INLINE void scan256_pass(const scan_args *a, int64_t e0, int64_t ne, int64_t n0, int nb, bool first,
                                           bool last, bool full) {
    const int64_t N = a->N, E = a->E;
    const __m256i m = mc_mask256(ne);
    const __m256 mf = _mm256_castsi256_ps(m);
    const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)N));
    __m256 hv[8], av[8];
    for (int i = 0; i < nb; i++) {
        av[i] = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), a->A + e0 * N + n0 + i, idx, mf, 4);
        hv[i] = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), a->h + e0 * N + n0 + i, idx, mf, 4);
    }
    const __m256 bias = mc_load8(a->dt_bias + e0, m, full);
    const __m256 dskip = mc_load8(a->D + e0, m, full);
    for (int64_t t = 0; t < a->L; t++) {
        scan_prefetch(a, t, e0, 8);
        const float *bt = a->B + t * a->ldbc + n0, *ct = a->C + t * a->ldbc + n0;
        __m256 ut = mc_load8(a->u + t * E + e0, m, full);
        __m256 delta = mc_softplus256(_mm256_add_ps(mc_load8(a->dt + t * E + e0, m, full), bias));
        __m256 du = _mm256_mul_ps(delta, ut);
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
        for (int i = 0; i < nb; i++) {
            __m256 da = mc_exp256(_mm256_mul_ps(delta, av[i]));
            hv[i] = _mm256_fmadd_ps(da, hv[i], _mm256_mul_ps(du, _mm256_broadcast_ss(bt + i)));
            if (i % 2 == 0) {
                acc0 = _mm256_fmadd_ps(_mm256_broadcast_ss(ct + i), hv[i], acc0);
            } else {
                acc1 = _mm256_fmadd_ps(_mm256_broadcast_ss(ct + i), hv[i], acc1);
            }
        }
        __m256 acc = _mm256_add_ps(acc0, acc1);
        if (!first) {
            acc = _mm256_add_ps(acc, mc_load8(a->y + t * E + e0, m, full));
        }
        if (last) {
            __m256 zt = mc_load8(a->z + t * a->ldz + e0, m, full);
            acc = _mm256_mul_ps(_mm256_fmadd_ps(dskip, ut, acc), mc_silu256(zt));
        }
        mc_store8(a->y + t * E + e0, m, acc, full);
    }
    for (int i = 0; i < nb; i++) { // no scatter in AVX2
        float tmp[8];
        _mm256_storeu_ps(tmp, hv[i]);
        for (int64_t j = 0; j < ne; j++) {
            a->h[(e0 + j) * N + n0 + i] = tmp[j];
        }
    }
}

MC_AVX2 static void scan256_block(const void *ctx, int64_t blk) {
    const scan_args *a = ctx;
    const int64_t e0 = blk * 8;
    const int64_t ne = a->E - e0 < 8 ? a->E - e0 : 8;
    for (int64_t n0 = 0; n0 < a->N; n0 += 8) {
        const bool first = n0 == 0, last = n0 + 8 >= a->N;
        if (a->N - n0 >= 8 && ne == 8) {
            scan256_pass(a, e0, ne, n0, 8, first, last, true);
        } else {
            scan256_pass(a, e0, ne, n0, (int)(a->N - n0 < 8 ? a->N - n0 : 8), first, last, false);
        }
    }
}

// States-in-lanes form for N = 16 as scan512_block_n16 (used at every L here): a channel's 16 states are two
// vectors read and written as they lie. Only full blocks of 8 channels come here.
MC_AVX2 static void scan256_block_n16(const scan_args *a, int64_t e0) {
    const int64_t E = a->E;
    const __m256 bias = _mm256_loadu_ps(a->dt_bias + e0);
    const __m256 dskip = _mm256_loadu_ps(a->D + e0);
    for (int64_t t0 = 0; t0 < a->L; t0 += SCAN_TILE) {
        const int tn = (int)(a->L - t0 < SCAN_TILE ? a->L - t0 : SCAN_TILE);
        __m256 dl[SCAN_TILE], gl[SCAN_TILE];
        for (int i = 0; i < tn; i++) { // the tile's Δ and gates first (see SCAN_TILE)
            const int64_t t = t0 + i;
            dl[i] = mc_softplus256(_mm256_add_ps(_mm256_loadu_ps(a->dt + t * E + e0), bias));
            gl[i] = mc_silu256(_mm256_loadu_ps(a->z + t * a->ldz + e0));
        }
        for (int i = 0; i < tn; i++) {
            const int64_t t = t0 + i;
            scan_prefetch(a, t, e0, 8);
            const float *bt = a->B + t * a->ldbc, *ct = a->C + t * a->ldbc;
            const __m256 b0 = _mm256_loadu_ps(bt), b1 = _mm256_loadu_ps(bt + 8);
            const __m256 c0 = _mm256_loadu_ps(ct), c1 = _mm256_loadu_ps(ct + 8);
            __m256 ut = _mm256_loadu_ps(a->u + t * E + e0);
            __m256 du = _mm256_mul_ps(dl[i], ut);
            __m256 p[8];
            for (int j = 0; j < 8; j++) {
                const __m256i lane = _mm256_set1_epi32(j);
                const __m256 dj = _mm256_permutevar8x32_ps(dl[i], lane), duj = _mm256_permutevar8x32_ps(du, lane);
                float *hj = a->h + (e0 + j) * 16;
                const float *Aj = a->A + (e0 + j) * 16;
                __m256 h0 = _mm256_fmadd_ps(mc_exp256(_mm256_mul_ps(dj, _mm256_loadu_ps(Aj))), _mm256_loadu_ps(hj),
                                            _mm256_mul_ps(duj, b0));
                __m256 h1 = _mm256_fmadd_ps(mc_exp256(_mm256_mul_ps(dj, _mm256_loadu_ps(Aj + 8))),
                                            _mm256_loadu_ps(hj + 8), _mm256_mul_ps(duj, b1));
                _mm256_storeu_ps(hj, h0);
                _mm256_storeu_ps(hj + 8, h1);
                p[j] = _mm256_fmadd_ps(c1, h1, _mm256_mul_ps(c0, h0));
            }
            __m256 acc = mc_hsum8x8_256(p);
            _mm256_storeu_ps(a->y + t * E + e0, _mm256_mul_ps(_mm256_fmadd_ps(dskip, ut, acc), gl[i]));
        }
    }
}

MC_AVX2 static void scan256_block_n16_item(const void *ctx, int64_t blk) {
    const scan_args *a = ctx;
    if (a->E - blk * 8 >= 8) {
        scan256_block_n16(a, blk * 8);
    } else {
        scan256_block(ctx, blk);
    }
}

MC_AVX2 void mc_cpu_selective_scan_avx2(const mc_exec *ex, float *y, float *h, const float *u, const float *dt,
                              const float *dt_bias, const float *A, const float *B, const float *C, int64_t ldbc,
                              const float *D, const float *z, int64_t ldz, int64_t L, int64_t E, int64_t N) {
    const scan_args a = { y, h, u, dt, dt_bias, A, D, B, C, z, ldbc, ldz, L, E, N };
    // States in lanes beat channels in lanes at every L with AVX2's 16 registers (bench_ssm, L = 128: 16.4k vs
    // 21.7k ns/token), which hold only half of N = 16 states and force two passes.
    mc_simd_parallel_for(mc_simd_threads(ex, L * E * N, SCAN_MIN_PARALLEL), (E + 7) / 8,
                         N == 16 ? scan256_block_n16_item : scan256_block, &a);
}
#endif

// Channel blocks per work item of a batched step: E = 1536 gives 12 items per sequence at 16 channels a block.
#define STEP_GROUP 8

// ---- decode step of a batch --------------------------------------------------------------------------------------

// One step of n_seq sequences: row b of u, dt, y, B/C and z belongs to sequence b, whose state is h[b] ([E, N]).
// Each (sequence, channel block) is a work item of one parallel loop, run by a variant's sequence block function.
typedef struct scan_step_args {
    scan_args seq0; // sequence 0, L = 1
    int64_t n_blocks;
    mc_simd_item_fn block_fn; // a variant's block function over scan_args
} scan_step_args;

// Item i: channel blocks [g·STEP_GROUP, (g+1)·STEP_GROUP) of sequence b (i = b·n_groups + g); groups amortize the
// per-item decoding over several blocks.
static void scan_step_item(const void *ctx, int64_t i) {
    const scan_step_args *s = ctx;
    const int64_t n_groups = (s->n_blocks + STEP_GROUP - 1) / STEP_GROUP;
    const int64_t b = i / n_groups, g = i % n_groups, E = s->seq0.E;
    scan_args a = s->seq0;
    a.y += b * E;
    a.h += b * E * a.N;
    a.u += b * E;
    a.dt += b * E;
    a.B += b * a.ldbc;
    a.C += b * a.ldbc;
    a.z += b * a.ldz;
    for (int64_t blk = g * STEP_GROUP; blk < s->n_blocks && blk < (g + 1) * STEP_GROUP; blk++) {
        s->block_fn(&a, blk);
    }
}

static void scan_step_run(const mc_exec *ex, mc_simd_item_fn block_fn, int64_t width, float *y, float *h,
                          const float *u, const float *dt, const float *dt_bias, const float *A, const float *B,
                          const float *C, int64_t ldbc, const float *D, const float *z, int64_t ldz, int64_t n_seq,
                          int64_t E, int64_t N) {
    const scan_step_args s = { { y, h, u, dt, dt_bias, A, D, B, C, z, ldbc, ldz, 1, E, N },
                               (E + width - 1) / width,
                               block_fn };
    mc_simd_parallel_for(mc_simd_threads(ex, n_seq * E * N, SCAN_MIN_PARALLEL),
                         n_seq * ((s.n_blocks + STEP_GROUP - 1) / STEP_GROUP), scan_step_item, &s);
}

void mc_cpu_selective_scan_step_c(const mc_exec *ex, float *y, float *h, const float *u, const float *dt, const float *dt_bias,
                        const float *A, const float *B, const float *C, int64_t ldbc, const float *D, const float *z,
                        int64_t ldz, int64_t n_seq, int64_t E, int64_t N) {
    scan_step_run(ex, scan_channel_c, 1, y, h, u, dt, dt_bias, A, B, C, ldbc, D, z, ldz, n_seq, E, N);
}

#if defined(__x86_64__)
void mc_cpu_selective_scan_step_avx512(const mc_exec *ex, float *y, float *h, const float *u, const float *dt,
                             const float *dt_bias, const float *A, const float *B, const float *C, int64_t ldbc,
                             const float *D, const float *z, int64_t ldz, int64_t n_seq, int64_t E, int64_t N) {
    scan_step_run(ex, N == 16 ? scan512_block_n16 : scan512_block, 16, y, h, u, dt, dt_bias, A, B, C, ldbc, D, z, ldz,
                  n_seq, E, N);
}

void mc_cpu_selective_scan_step_avx2(const mc_exec *ex, float *y, float *h, const float *u, const float *dt, const float *dt_bias,
                           const float *A, const float *B, const float *C, int64_t ldbc, const float *D, const float *z,
                           int64_t ldz, int64_t n_seq, int64_t E, int64_t N) {
    scan_step_run(ex, N == 16 ? scan256_block_n16_item : scan256_block, 8, y, h, u, dt, dt_bias, A, B, C, ldbc, D, z,
                  ldz, n_seq, E, N);
}
#endif
