// Causal depthwise conv1d + SiLU for the cpu backend (spec §3.4 step 3, state §4.4): vector lanes hold consecutive
// channels, the K taps stay in registers, inputs before the chunk come from the [E, K] state, which is then updated
// exactly as the reference does. Threads split the channels. The oracle is mc_ref_conv1d.
#include <math.h>

#include "kernels/cpu/simd.h"
#include "kernels/cpu/ssm.h"

// Below this many L·E·K taps one thread is faster (a decode step, E=1536, K=4, is 6144 taps: ~1 µs of work).
#define CONV_MIN_PARALLEL 65536

// Taps kept in vector registers; a longer kernel runs the portable loop (no released model has K > 4).
#define CONV_MAX_K 8

typedef struct conv_args {
    float *u;       // [L, E]
    float *state;   // [E, K]
    const float *x; // [L, E], rows ldx apart
    const float *w; // [E, K]
    const float *b; // [E] or NULL
    int64_t ldx, L, E, K;
} conv_args;

// ---- portable C ----------------------------------------------------------------------------------------------

static float silu_c(float v) {
    return v / (1.0f + expf(-v));
}

// New state of channels [e0, e1): the last K of [old state, x[0..L)]. Column k reads column L + k > k of the old
// state, so ascending k never reads a column it already overwrote.
static void conv_state_update(const conv_args *a, int64_t e0, int64_t e1) {
    const int64_t K = a->K, L = a->L;
    for (int64_t e = e0; e < e1; e++) {
        for (int64_t k = 0; k < K; k++) {
            int64_t s = L - K + k;
            a->state[e * K + k] = s >= 0 ? a->x[s * a->ldx + e] : a->state[e * K + K + s];
        }
    }
}

static void conv_channels_c(const conv_args *a, int64_t e0, int64_t e1) {
    const int64_t K = a->K;
    for (int64_t t = 0; t < a->L; t++) {
        for (int64_t e = e0; e < e1; e++) {
            float acc = a->b != NULL ? a->b[e] : 0.0f;
            for (int64_t k = 0; k < K; k++) {
                int64_t s = t - (K - 1) + k;
                float v = s >= 0 ? a->x[s * a->ldx + e] : a->state[e * K + K + s];
                acc += a->w[e * K + k] * v;
            }
            a->u[t * a->E + e] = silu_c(acc);
        }
    }
    conv_state_update(a, e0, e1);
}

// Channel blocks of 64: the t-outer loop then walks contiguous rows of x and u.
#define CONV_C_BLOCK 64

static void conv_c(const mc_exec *ex, float *u, float *state, const float *x, int64_t ldx, const float *w,
                   const float *b, int64_t L, int64_t E, int64_t K) {
    const conv_args a = { u, state, x, w, b, ldx, L, E, K };
    const int nt = mc_simd_threads(ex, L * E * K, CONV_MIN_PARALLEL);
    const int64_t n_blocks = (E + CONV_C_BLOCK - 1) / CONV_C_BLOCK;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t blk = 0; blk < n_blocks; blk++) {
        int64_t e0 = blk * CONV_C_BLOCK, e1 = e0 + CONV_C_BLOCK < E ? e0 + CONV_C_BLOCK : E;
        conv_channels_c(&a, e0, e1);
    }
}

#if defined(__x86_64__)

// ---- AVX-512: 16 channels per vector ------------------------------------------------------------------------

// Channels e0 .. e0+15 (lanes beyond m off). Called with K as a constant the tap loops unroll.
MC_AVX512 static MC_INLINE void conv512_block_k(const conv_args *a, int64_t e0, __mmask16 m, int64_t K) {
    const int64_t E = a->E, ldx = a->ldx;
    const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32((int)K));
    const float *st = a->state + e0 * K;
    __m512 wv[CONV_MAX_K];
    for (int64_t k = 0; k < K; k++) {
        wv[k] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, a->w + e0 * K + k, 4);
    }
    const __m512 bias = a->b != NULL ? _mm512_maskz_loadu_ps(m, a->b + e0) : _mm512_setzero_ps();
    const int64_t head = K - 1 < a->L ? K - 1 : a->L; // steps whose window reaches into the state
    for (int64_t t = 0; t < head; t++) {
        __m512 acc = bias;
        for (int64_t k = 0; k < K; k++) {
            int64_t s = t - (K - 1) + k;
            __m512 v = s >= 0 ? _mm512_maskz_loadu_ps(m, a->x + s * ldx + e0)
                              : _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, st + K + s, 4);
            acc = _mm512_fmadd_ps(wv[k], v, acc);
        }
        _mm512_mask_storeu_ps(a->u + t * E + e0, m, mc_silu512(acc));
    }
    for (int64_t t = head; t < a->L; t++) {
        const float *xt = a->x + (t - (K - 1)) * ldx + e0;
        __m512 acc = bias;
        for (int64_t k = 0; k < K; k++) {
            acc = _mm512_fmadd_ps(wv[k], _mm512_maskz_loadu_ps(m, xt + k * ldx), acc);
        }
        _mm512_mask_storeu_ps(a->u + t * E + e0, m, mc_silu512(acc));
    }
    for (int64_t k = 0; k < K; k++) { // ascending k reads old column L + k > k first (see conv_state_update)
        int64_t s = a->L - K + k;
        __m512 v = s >= 0 ? _mm512_maskz_loadu_ps(m, a->x + s * ldx + e0)
                          : _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, st + K + s, 4);
        _mm512_mask_i32scatter_ps(a->state + e0 * K + k, m, idx, v, 4);
    }
}

MC_AVX512 static void conv512_block(const conv_args *a, int64_t e0) {
    const __mmask16 m = mc_mask512(a->E - e0);
    switch (a->K) {
        case 4:
            conv512_block_k(a, e0, m, 4);
            break;
        case 3:
            conv512_block_k(a, e0, m, 3);
            break;
        case 2:
            conv512_block_k(a, e0, m, 2);
            break;
        default:
            conv512_block_k(a, e0, m, a->K);
            break;
    }
}

MC_AVX512 static void conv_avx512(const mc_exec *ex, float *u, float *state, const float *x, int64_t ldx,
                                  const float *w, const float *b, int64_t L, int64_t E, int64_t K) {
    if (K > CONV_MAX_K) {
        conv_c(ex, u, state, x, ldx, w, b, L, E, K);
        return;
    }
    const conv_args a = { u, state, x, w, b, ldx, L, E, K };
    const int nt = mc_simd_threads(ex, L * E * K, CONV_MIN_PARALLEL);
    const int64_t n_blocks = (E + 15) / 16;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t blk = 0; blk < n_blocks; blk++) {
        conv512_block(&a, blk * 16);
    }
}

// ---- AVX2: 8 channels per vector ------------------------------------------------------------------------------

MC_AVX2 static MC_INLINE void conv256_block_k(const conv_args *a, int64_t e0, int64_t ne, int64_t K) {
    const int64_t E = a->E, ldx = a->ldx;
    const __m256i m = mc_mask256(ne);
    const __m256 mf = _mm256_castsi256_ps(m);
    const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)K));
    const float *st = a->state + e0 * K;
    __m256 wv[CONV_MAX_K];
    for (int64_t k = 0; k < K; k++) {
        wv[k] = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), a->w + e0 * K + k, idx, mf, 4);
    }
    const __m256 bias = a->b != NULL ? _mm256_maskload_ps(a->b + e0, m) : _mm256_setzero_ps();
    for (int64_t t = 0; t < a->L; t++) {
        __m256 acc = bias;
        for (int64_t k = 0; k < K; k++) {
            int64_t s = t - (K - 1) + k;
            __m256 v = s >= 0 ? _mm256_maskload_ps(a->x + s * ldx + e0, m)
                              : _mm256_mask_i32gather_ps(_mm256_setzero_ps(), st + K + s, idx, mf, 4);
            acc = _mm256_fmadd_ps(wv[k], v, acc);
        }
        _mm256_maskstore_ps(a->u + t * E + e0, m, mc_silu256(acc));
    }
}

MC_AVX2 static void conv256_block(const conv_args *a, int64_t e0) {
    const int64_t ne = a->E - e0 < 8 ? a->E - e0 : 8;
    switch (a->K) {
        case 4:
            conv256_block_k(a, e0, ne, 4);
            break;
        case 3:
            conv256_block_k(a, e0, ne, 3);
            break;
        case 2:
            conv256_block_k(a, e0, ne, 2);
            break;
        default:
            conv256_block_k(a, e0, ne, a->K);
            break;
    }
    conv_state_update(a, e0, e0 + ne); // no scatter in AVX2; E·K scalar moves
}

MC_AVX2 static void conv_avx2(const mc_exec *ex, float *u, float *state, const float *x, int64_t ldx, const float *w,
                              const float *b, int64_t L, int64_t E, int64_t K) {
    if (K > CONV_MAX_K) {
        conv_c(ex, u, state, x, ldx, w, b, L, E, K);
        return;
    }
    const conv_args a = { u, state, x, w, b, ldx, L, E, K };
    const int nt = mc_simd_threads(ex, L * E * K, CONV_MIN_PARALLEL);
    const int64_t n_blocks = (E + 7) / 8;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t blk = 0; blk < n_blocks; blk++) {
        conv256_block(&a, blk * 8);
    }
}
#endif

mc_cpu_conv1d_fn mc_cpu_conv1d_variant(int isa) {
    switch (isa) {
        case MC_SSM_ISA_C:
            return conv_c;
#if defined(__x86_64__)
        case MC_SSM_ISA_AVX2:
            return mc_simd_has_avx2() ? conv_avx2 : NULL;
        case MC_SSM_ISA_AVX512:
            return mc_simd_has_avx512() ? conv_avx512 : NULL;
#endif
        default:
            return NULL;
    }
}

mc_cpu_conv1d_fn mc_cpu_conv1d_select(void) {
    for (int isa = MC_SSM_ISA_COUNT - 1; isa > MC_SSM_ISA_C; isa--) {
        mc_cpu_conv1d_fn f = mc_cpu_conv1d_variant(isa);
        if (f != NULL) {
            return f;
        }
    }
    return conv_c;
}
