// Vector building blocks shared by the cpu SSM kernels: target attributes, CPU feature checks, thread counts, and
// exp / softplus / SiLU for AVX-512 and AVX2 (polynomials with range reduction, ~1 ulp). Kernels live elsewhere.
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "kernels/ops.h"

// Threads for a call doing `work` elementary steps: 1 below `min_work`, where waking a second thread costs more
// than it saves (the threshold is per op, measured in bench/bench_ssm.c).
static inline int mc_simd_threads(const mc_exec *ex, int64_t work, int64_t min_work) {
    int nt = ex != NULL && ex->n_threads > 1 ? ex->n_threads : 1;
    return work < min_work ? 1 : nt;
}

// Work item i of a kernel call (a block of channels, a row), reading its arguments from ctx.
typedef void (*mc_simd_item_fn)(const void *ctx, int64_t i);

// Runs fn on items 0..n-1, split statically over nt threads. One thread runs them in the caller without entering
// OpenMP: a region costs ~250 ns even when it runs serially, as much as a whole decode-step rmsnorm.
static inline void mc_simd_parallel_for(int nt, int64_t n, mc_simd_item_fn fn, const void *ctx) {
    if (nt <= 1 || n <= 1) {
        for (int64_t i = 0; i < n; i++) {
            fn(ctx, i);
        }
        return;
    }
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        fn(ctx, i);
    }
}

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>

#define MC_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")))
#define MC_AVX2   __attribute__((target("avx2,fma,f16c")))
#define MC_INLINE __attribute__((always_inline)) inline

// F16C by CPUID (leaf 1, ECX bit 29): clang before 15 rejects "f16c" in __builtin_cpu_supports.
static inline bool mc_simd_has_f16c(void) {
    unsigned eax, ebx, ecx, edx;
    return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
}

static inline bool mc_simd_has_avx512(void) {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx2") &&
           __builtin_cpu_supports("fma") && mc_simd_has_f16c();
}

static inline bool mc_simd_has_avx2(void) {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && mc_simd_has_f16c();
}

// exp(x) (Cephes expf): x = k·ln2 + r, |r| ≤ ln2/2, exp(r) by a degree-7 polynomial, then · 2^k. ln2 is split in a
// 9-bit head (k·head exact) and a tail, so r carries no cancellation error. The polynomial is evaluated in Estrin's
// order (3 dependent FMAs instead of 5): the scan is latency-bound on it (bench_ssm, L = 128: 7.3k → 6.7k ns). The
// clamp keeps k in [-150, 128]: below, the result rounds to 0 as expf does; above, 2^128 overflows to inf as expf does.
// NaN passes through.
#define MC_EXP_HI             89.0f
#define MC_EXP_LO             -104.0f
#define MC_LOG2E              1.44269504088896341f
#define MC_LN2_HI             0.693359375f
#define MC_LN2_LO             -2.12194440e-4f
#define MC_EXP_P0             1.9875691500e-4f
#define MC_EXP_P1             1.3981999507e-3f
#define MC_EXP_P2             8.3334519073e-3f
#define MC_EXP_P3             4.1665795894e-2f
#define MC_EXP_P4             1.6666665459e-1f
#define MC_EXP_P5             5.0000001201e-1f
#define MC_SQRT2              1.41421356237f
#define MC_SOFTPLUS_THRESHOLD 20.0f // torch softplus: v > 20 → v (spec §3.7)

MC_AVX512 static MC_INLINE __m512 mc_exp512(__m512 x) {
    // min/max return their second operand when one is NaN: x goes second so NaN survives.
    x = _mm512_max_ps(_mm512_set1_ps(MC_EXP_LO), _mm512_min_ps(_mm512_set1_ps(MC_EXP_HI), x));
    __m512 k =
        _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(MC_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(MC_LN2_HI), x);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(MC_LN2_LO), r);
    __m512 r2 = _mm512_mul_ps(r, r);
    __m512 q01 = _mm512_fmadd_ps(_mm512_set1_ps(MC_EXP_P0), r, _mm512_set1_ps(MC_EXP_P1));
    __m512 q23 = _mm512_fmadd_ps(_mm512_set1_ps(MC_EXP_P2), r, _mm512_set1_ps(MC_EXP_P3));
    __m512 q45 = _mm512_fmadd_ps(_mm512_set1_ps(MC_EXP_P4), r, _mm512_set1_ps(MC_EXP_P5));
    __m512 p = _mm512_fmadd_ps(_mm512_fmadd_ps(q01, r2, q23), r2, q45);
    p = _mm512_fmadd_ps(p, r2, r);
    p = _mm512_add_ps(p, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, k); // p · 2^k with IEEE rounding, subnormals and overflow included
}

// log1p(w) for w in [0, 1] (Cephes logf on u = 1 + w, u ∈ [1, 2]): u = 2^j·(1 + f) with f ∈ [√½ − 1, √2 − 1]
// exactly (Sterbenz), plus (w − (u − 1))/u for the rounding of u, which carries the whole result when w is tiny.
MC_AVX512 static MC_INLINE __m512 mc_log1p01_512(__m512 w) {
    const __m512 one = _mm512_set1_ps(1.0f);
    __m512 u = _mm512_add_ps(one, w);
    __m512 c = _mm512_div_ps(_mm512_sub_ps(w, _mm512_sub_ps(u, one)), u);
    __mmask16 big = _mm512_cmp_ps_mask(u, _mm512_set1_ps(MC_SQRT2), _CMP_GT_OQ);
    __m512 f = _mm512_sub_ps(_mm512_mask_mul_ps(u, big, u, _mm512_set1_ps(0.5f)), one);
    __m512 j = _mm512_maskz_mov_ps(big, one);
    __m512 z = _mm512_mul_ps(f, f);
    __m512 y = _mm512_set1_ps(7.0376836292e-2f);
    y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(-1.1514610310e-1f));
    y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(1.1676998740e-1f));
    y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(-1.2420140846e-1f));
    y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(1.4249322787e-1f));
    y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(-1.6668057665e-1f));
    y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(2.0000714765e-1f));
    y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(-2.4999993993e-1f));
    y = _mm512_fmadd_ps(y, f, _mm512_set1_ps(3.3333331174e-1f));
    y = _mm512_mul_ps(_mm512_mul_ps(y, f), z);
    y = _mm512_fmadd_ps(j, _mm512_set1_ps(MC_LN2_LO), y);
    y = _mm512_fmadd_ps(z, _mm512_set1_ps(-0.5f), y);
    __m512 r = _mm512_add_ps(f, y);
    r = _mm512_fmadd_ps(j, _mm512_set1_ps(MC_LN2_HI), r);
    return _mm512_add_ps(r, c);
}

// softplus(v) = max(v, 0) + log1p(exp(−|v|)): equal to the reference's log1pf(expf(v)) but never overflows, and
// v > 20 returns v exactly as torch does (spec §3.7).
MC_AVX512 static MC_INLINE __m512 mc_softplus512(__m512 v) {
    __m512 a = _mm512_abs_ps(v);
    __m512 s = _mm512_add_ps(_mm512_max_ps(v, _mm512_setzero_ps()),
                             mc_log1p01_512(mc_exp512(_mm512_sub_ps(_mm512_setzero_ps(), a))));
    __mmask16 big = _mm512_cmp_ps_mask(v, _mm512_set1_ps(MC_SOFTPLUS_THRESHOLD), _CMP_GT_OQ);
    return _mm512_mask_mov_ps(s, big, v);
}

// silu(z) = z / (1 + exp(−z)) as the reference writes it: very negative z gives z / inf = −0.
MC_AVX512 static MC_INLINE __m512 mc_silu512(__m512 z) {
    __m512 e = mc_exp512(_mm512_sub_ps(_mm512_setzero_ps(), z));
    return _mm512_div_ps(z, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

// Horizontal sum of 16 lanes.
MC_AVX512 static MC_INLINE float mc_hsum512(__m512 v) {
    __m256 s = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
}

// Row sums of 16 vectors: lane j of the result is the sum of p[j]'s lanes (a 4-level fold, 15 adds, one permute).
MC_AVX512 static MC_INLINE __m512 mc_hsum16x16_512(const __m512 *p) {
    __m512 s8[8], s4[4], s2[2];
    for (int i = 0; i < 8; i++) {
        s8[i] = _mm512_add_ps(_mm512_shuffle_f32x4(p[2 * i], p[2 * i + 1], 0x44),
                              _mm512_shuffle_f32x4(p[2 * i], p[2 * i + 1], 0xee));
    }
    for (int i = 0; i < 4; i++) {
        s4[i] = _mm512_add_ps(_mm512_shuffle_f32x4(s8[2 * i], s8[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                              _mm512_shuffle_f32x4(s8[2 * i], s8[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    }
    for (int i = 0; i < 2; i++) {
        s2[i] = _mm512_add_ps(_mm512_shuffle_ps(s4[2 * i], s4[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm512_shuffle_ps(s4[2 * i], s4[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    }
    __m512 r = _mm512_add_ps(_mm512_shuffle_ps(s2[0], s2[1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_ps(s2[0], s2[1], _MM_SHUFFLE(3, 1, 3, 1)));
    // The folds leave channel 4·(k mod 4) + k / 4 in lane k: a 4×4 transpose, its own inverse.
    return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), r);
}

// exp(x) as mc_exp512 but without scalef: 2^k (k in [-150, 128]) is applied as two factors 2^(k/2)·2^(k−k/2), each
// a normal float, so the product rounds to a subnormal or overflows where expf does.
MC_AVX2 static MC_INLINE __m256 mc_exp256(__m256 x) {
    x = _mm256_max_ps(_mm256_set1_ps(MC_EXP_LO), _mm256_min_ps(_mm256_set1_ps(MC_EXP_HI), x));
    __m256 k =
        _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(MC_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(MC_LN2_HI), x);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(MC_LN2_LO), r);
    __m256 r2 = _mm256_mul_ps(r, r);
    __m256 q01 = _mm256_fmadd_ps(_mm256_set1_ps(MC_EXP_P0), r, _mm256_set1_ps(MC_EXP_P1));
    __m256 q23 = _mm256_fmadd_ps(_mm256_set1_ps(MC_EXP_P2), r, _mm256_set1_ps(MC_EXP_P3));
    __m256 q45 = _mm256_fmadd_ps(_mm256_set1_ps(MC_EXP_P4), r, _mm256_set1_ps(MC_EXP_P5));
    __m256 p = _mm256_fmadd_ps(_mm256_fmadd_ps(q01, r2, q23), r2, q45);
    p = _mm256_fmadd_ps(p, r2, r);
    p = _mm256_add_ps(p, _mm256_set1_ps(1.0f));
    __m256i ki = _mm256_cvtps_epi32(k); // NaN gives INT_MIN: the factors are garbage but p is NaN already
    __m256i k1 = _mm256_srai_epi32(ki, 1);
    __m256i k2 = _mm256_sub_epi32(ki, k1);
    const __m256i bias = _mm256_set1_epi32(127);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k1, bias), 23));
    __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k2, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}

MC_AVX2 static MC_INLINE __m256 mc_log1p01_256(__m256 w) {
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 u = _mm256_add_ps(one, w);
    __m256 c = _mm256_div_ps(_mm256_sub_ps(w, _mm256_sub_ps(u, one)), u);
    __m256 big = _mm256_cmp_ps(u, _mm256_set1_ps(MC_SQRT2), _CMP_GT_OQ);
    __m256 f = _mm256_sub_ps(_mm256_blendv_ps(u, _mm256_mul_ps(u, _mm256_set1_ps(0.5f)), big), one);
    __m256 j = _mm256_and_ps(big, one);
    __m256 z = _mm256_mul_ps(f, f);
    __m256 y = _mm256_set1_ps(7.0376836292e-2f);
    y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(-1.1514610310e-1f));
    y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(1.1676998740e-1f));
    y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(-1.2420140846e-1f));
    y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(1.4249322787e-1f));
    y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(-1.6668057665e-1f));
    y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(2.0000714765e-1f));
    y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(-2.4999993993e-1f));
    y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(3.3333331174e-1f));
    y = _mm256_mul_ps(_mm256_mul_ps(y, f), z);
    y = _mm256_fmadd_ps(j, _mm256_set1_ps(MC_LN2_LO), y);
    y = _mm256_fmadd_ps(z, _mm256_set1_ps(-0.5f), y);
    __m256 r = _mm256_add_ps(f, y);
    r = _mm256_fmadd_ps(j, _mm256_set1_ps(MC_LN2_HI), r);
    return _mm256_add_ps(r, c);
}

MC_AVX2 static MC_INLINE __m256 mc_softplus256(__m256 v) {
    __m256 a = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v);
    __m256 s = _mm256_add_ps(_mm256_max_ps(v, _mm256_setzero_ps()),
                             mc_log1p01_256(mc_exp256(_mm256_sub_ps(_mm256_setzero_ps(), a))));
    __m256 big = _mm256_cmp_ps(v, _mm256_set1_ps(MC_SOFTPLUS_THRESHOLD), _CMP_GT_OQ);
    return _mm256_blendv_ps(s, v, big);
}

MC_AVX2 static MC_INLINE __m256 mc_silu256(__m256 z) {
    __m256 e = mc_exp256(_mm256_sub_ps(_mm256_setzero_ps(), z));
    return _mm256_div_ps(z, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

MC_AVX2 static MC_INLINE float mc_hsum256(__m256 v) {
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
}

// Row sums of 8 vectors: lane j of the result is the sum of p[j]'s lanes.
MC_AVX2 static MC_INLINE __m256 mc_hsum8x8_256(const __m256 *p) {
    __m256 q0 = _mm256_hadd_ps(p[0], p[1]), q1 = _mm256_hadd_ps(p[2], p[3]);
    __m256 q2 = _mm256_hadd_ps(p[4], p[5]), q3 = _mm256_hadd_ps(p[6], p[7]);
    __m256 lo = _mm256_hadd_ps(q0, q1), hi = _mm256_hadd_ps(q2, q3); // per 128-bit half: sums of p0..3, p4..7
    return _mm256_add_ps(_mm256_permute2f128_ps(lo, hi, 0x20), _mm256_permute2f128_ps(lo, hi, 0x31));
}

// Lane mask for the first n (0..8) of 8 lanes, for maskload/maskstore.
MC_AVX2 static MC_INLINE __m256i mc_mask256(int64_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// 8 floats, or the lanes of m when the block is partial (full is a constant where it matters: AMD runs the masked
// forms, vmaskmovps stores above all, as slow microcode).
MC_AVX2 static MC_INLINE __m256 mc_load8(const float *p, __m256i m, bool full) {
    return full ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, m);
}

MC_AVX2 static MC_INLINE void mc_store8(float *p, __m256i m, __m256 v, bool full) {
    if (full) {
        _mm256_storeu_ps(p, v);
    } else {
        _mm256_maskstore_ps(p, m, v);
    }
}

// Lane mask for the first n (0..16) of 16 lanes.
static inline __mmask16 mc_mask512(int64_t n) {
    return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1u);
}
#endif
