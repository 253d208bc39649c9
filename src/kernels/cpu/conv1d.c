// Causal depthwise conv1d + SiLU for the cpu backend (spec §3.4 step 3, state §4.4): vector lanes hold consecutive
// channels, the K taps stay in registers, inputs before the chunk come from the [E, K] state, which is then updated
// exactly as the reference does. Threads split the channels. The oracle is mc_ref_conv1d.
#include <math.h>

#include "kernels/cpu/simd.h"
#include "kernels/cpu/cpu.h"

// Below this many L·E·K taps the call runs on one thread: a decode step (E=1536, K=4: 6144 taps) takes ~1.5 µs
// (bench_ssm), too short to pay for waking a second thread.
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

// Rows this far ahead are prefetched: a block walks a column strip of x and u whose stride (2E and E floats) the
// hardware prefetchers follow poorly once a sequence outgrows L2 (as in scan.c).
#define CONV_PREFETCH_ROWS 8

static inline void conv_prefetch(const conv_args *a, int64_t t, int64_t e0, int64_t width) {
    int64_t tp = t + CONV_PREFETCH_ROWS;
    if (tp < a->L) {
        __builtin_prefetch(a->x + tp * a->ldx + e0);
        __builtin_prefetch(a->x + tp * a->ldx + e0 + width - 1);
        __builtin_prefetch(a->u + tp * a->E + e0, 1);
        __builtin_prefetch(a->u + tp * a->E + e0 + width - 1, 1);
    }
}

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

static void conv_block_c(const void *ctx, int64_t blk) {
    const conv_args *a = ctx;
    int64_t e0 = blk * CONV_C_BLOCK, e1 = e0 + CONV_C_BLOCK < a->E ? e0 + CONV_C_BLOCK : a->E;
    conv_channels_c(a, e0, e1);
}

void mc_cpu_conv1d_c(const mc_exec *ex, float *u, float *state, const float *x, int64_t ldx, const float *w,
                   const float *b, int64_t L, int64_t E, int64_t K) {
    const conv_args a = { u, state, x, w, b, ldx, L, E, K };
    mc_simd_parallel_for(mc_simd_threads(ex, L * E * K, CONV_MIN_PARALLEL), (E + CONV_C_BLOCK - 1) / CONV_C_BLOCK,
                         conv_block_c, &a);
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
        conv_prefetch(a, t, e0, 16);
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

// Decode step (L = 1) for K = 4, the kernel width of every released model, 16 channels: their state rows are 4
// contiguous vectors (4 channels × 4 taps), shifted by one tap with the new inputs appended in registers and stored
// back as they lie, where the general form spends most of a step in gathers and scatters. The tap products of the
// 16 channels are then summed per channel by two in-lane folds.
MC_AVX512 static void conv512_step_k4(const conv_args *a, int64_t e0) {
    float *st = a->state + e0 * 4;
    const __m512 xv = _mm512_loadu_ps(a->x + e0);
    __m512 p[4];
    for (int i = 0; i < 4; i++) {
        // lane 4c + k takes tap k + 1 of channel c, and the new input (second operand, index 16 + channel) at k = 3
        const __m512i shift =
            _mm512_setr_epi32(1, 2, 3, 16 + 4 * i, 5, 6, 7, 17 + 4 * i, 9, 10, 11, 18 + 4 * i, 13, 14, 15, 19 + 4 * i);
        __m512 ns = _mm512_permutex2var_ps(_mm512_loadu_ps(st + 16 * i), shift, xv);
        _mm512_storeu_ps(st + 16 * i, ns);
        p[i] = _mm512_mul_ps(_mm512_loadu_ps(a->w + e0 * 4 + 16 * i), ns);
    }
    __m512 s0 = _mm512_add_ps(_mm512_shuffle_ps(p[0], p[1], _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm512_shuffle_ps(p[0], p[1], _MM_SHUFFLE(3, 2, 3, 2)));
    __m512 s1 = _mm512_add_ps(_mm512_shuffle_ps(p[2], p[3], _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm512_shuffle_ps(p[2], p[3], _MM_SHUFFLE(3, 2, 3, 2)));
    __m512 r = _mm512_add_ps(_mm512_shuffle_ps(s0, s1, _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_ps(s0, s1, _MM_SHUFFLE(3, 1, 3, 1)));
    // Lane 4l + j now holds channel 4j + l: a 4×4 transpose, its own inverse.
    r = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), r);
    if (a->b != NULL) {
        r = _mm512_add_ps(r, _mm512_loadu_ps(a->b + e0));
    }
    _mm512_storeu_ps(a->u + e0, mc_silu512(r));
}

MC_AVX512 static void conv512_block(const void *ctx, int64_t blk) {
    const conv_args *a = ctx;
    const int64_t e0 = blk * 16;
    const __mmask16 m = mc_mask512(a->E - e0);
    if (a->L == 1 && a->K == 4 && a->E - e0 >= 16) {
        conv512_step_k4(a, e0);
        return;
    }
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

MC_AVX512 void mc_cpu_conv1d_avx512(const mc_exec *ex, float *u, float *state, const float *x, int64_t ldx,
                                  const float *w, const float *b, int64_t L, int64_t E, int64_t K) {
    if (K > CONV_MAX_K) {
        mc_cpu_conv1d_c(ex, u, state, x, ldx, w, b, L, E, K);
        return;
    }
    const conv_args a = { u, state, x, w, b, ldx, L, E, K };
    mc_simd_parallel_for(mc_simd_threads(ex, L * E * K, CONV_MIN_PARALLEL), (E + 15) / 16, conv512_block, &a);
}

// ---- AVX2: 8 channels per vector ------------------------------------------------------------------------------

MC_AVX2 static MC_INLINE void conv256_block_k(const conv_args *a, int64_t e0, int64_t ne, int64_t K, bool full) {
    const int64_t E = a->E, ldx = a->ldx;
    const __m256i m = mc_mask256(ne);
    const __m256 mf = _mm256_castsi256_ps(m);
    const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)K));
    const float *st = a->state + e0 * K;
    __m256 wv[CONV_MAX_K];
    for (int64_t k = 0; k < K; k++) {
        wv[k] = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), a->w + e0 * K + k, idx, mf, 4);
    }
    const __m256 bias = a->b != NULL ? mc_load8(a->b + e0, m, full) : _mm256_setzero_ps();
    for (int64_t t = 0; t < a->L; t++) {
        conv_prefetch(a, t, e0, 8);
        __m256 acc = bias;
        for (int64_t k = 0; k < K; k++) {
            int64_t s = t - (K - 1) + k;
            __m256 v = s >= 0 ? mc_load8(a->x + s * ldx + e0, m, full)
                              : _mm256_mask_i32gather_ps(_mm256_setzero_ps(), st + K + s, idx, mf, 4);
            acc = _mm256_fmadd_ps(wv[k], v, acc);
        }
        mc_store8(a->u + t * E + e0, m, mc_silu256(acc), full);
    }
}

// Decode step for K = 4 as conv512_step_k4, 8 channels: their state rows are 4 vectors of 2 channels × 4 taps,
// shifted by one tap in registers with the new inputs blended in at tap 3.
MC_AVX2 static void conv256_step_k4(const conv_args *a, int64_t e0) {
    float *st = a->state + e0 * 4;
    const __m256 xv = _mm256_loadu_ps(a->x + e0);
    const __m256i shift = _mm256_setr_epi32(1, 2, 3, 0, 5, 6, 7, 4);
    __m256 p[4];
    for (int i = 0; i < 4; i++) {
        // channels 2i and 2i + 1 take their new input at lanes 3 and 7
        __m256 xi = _mm256_permutevar8x32_ps(xv, _mm256_setr_epi32(0, 0, 0, 2 * i, 0, 0, 0, 2 * i + 1));
        __m256 ns = _mm256_blend_ps(_mm256_permutevar8x32_ps(_mm256_loadu_ps(st + 8 * i), shift), xi, 0x88);
        _mm256_storeu_ps(st + 8 * i, ns);
        p[i] = _mm256_mul_ps(_mm256_loadu_ps(a->w + e0 * 4 + 8 * i), ns);
    }
    // Per 128-bit half l after two hadds: the tap sums of p0..p3's channel l, i.e. channels 0, 2, 4, 6 (l = 0)
    // and 1, 3, 5, 7 (l = 1); the permute puts channel c in lane c.
    __m256 r = _mm256_hadd_ps(_mm256_hadd_ps(p[0], p[1]), _mm256_hadd_ps(p[2], p[3]));
    r = _mm256_permutevar8x32_ps(r, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    if (a->b != NULL) {
        r = _mm256_add_ps(r, _mm256_loadu_ps(a->b + e0));
    }
    _mm256_storeu_ps(a->u + e0, mc_silu256(r));
}

MC_AVX2 static void conv256_block(const void *ctx, int64_t blk) {
    const conv_args *a = ctx;
    const int64_t e0 = blk * 8;
    const int64_t ne = a->E - e0 < 8 ? a->E - e0 : 8;
    if (a->L == 1 && a->K == 4 && ne == 8) {
        conv256_step_k4(a, e0);
        return;
    }
    if (ne < 8) {
        conv256_block_k(a, e0, ne, a->K, false);
    } else if (a->K == 4) {
        conv256_block_k(a, e0, 8, 4, true);
    } else if (a->K == 3) {
        conv256_block_k(a, e0, 8, 3, true);
    } else if (a->K == 2) {
        conv256_block_k(a, e0, 8, 2, true);
    } else {
        conv256_block_k(a, e0, 8, a->K, true);
    }
    conv_state_update(a, e0, e0 + ne); // no scatter in AVX2; E·K scalar moves
}

MC_AVX2 void mc_cpu_conv1d_avx2(const mc_exec *ex, float *u, float *state, const float *x, int64_t ldx, const float *w,
                              const float *b, int64_t L, int64_t E, int64_t K) {
    if (K > CONV_MAX_K) {
        mc_cpu_conv1d_c(ex, u, state, x, ldx, w, b, L, E, K);
        return;
    }
    const conv_args a = { u, state, x, w, b, ldx, L, E, K };
    mc_simd_parallel_for(mc_simd_threads(ex, L * E * K, CONV_MIN_PARALLEL), (E + 7) / 8, conv256_block, &a);
}
#endif

// Channel blocks per work item of a batched step (E = 1536: 12 items per sequence at 16 channels a block).
#define STEP_GROUP 8

// ---- decode step of a batch --------------------------------------------------------------------------------------

// One step of n_seq sequences: row b of x and u belongs to sequence b, whose state is state[b] ([E, K]). Each
// (sequence, channel block) is a work item of one parallel loop, run by a variant's block function.
typedef struct conv_step_args {
    conv_args seq0; // sequence 0, L = 1
    int64_t n_blocks;
    mc_simd_item_fn block_fn;
} conv_step_args;

// Item i: channel blocks [g·STEP_GROUP, (g+1)·STEP_GROUP) of sequence b (i = b·n_groups + g); groups amortize the
// per-item decoding over several blocks.
static void conv_step_item(const void *ctx, int64_t i) {
    const conv_step_args *s = ctx;
    const int64_t n_groups = (s->n_blocks + STEP_GROUP - 1) / STEP_GROUP;
    const int64_t b = i / n_groups, g = i % n_groups;
    conv_args a = s->seq0;
    a.u += b * a.E;
    a.state += b * a.E * a.K;
    a.x += b * a.ldx;
    for (int64_t blk = g * STEP_GROUP; blk < s->n_blocks && blk < (g + 1) * STEP_GROUP; blk++) {
        s->block_fn(&a, blk);
    }
}

static void conv_step_run(const mc_exec *ex, mc_simd_item_fn block_fn, int64_t width, float *u, float *state,
                          const float *x, int64_t ldx, const float *w, const float *b, int64_t n_seq, int64_t E,
                          int64_t K) {
    const conv_step_args s = { { u, state, x, w, b, ldx, 1, E, K }, (E + width - 1) / width, block_fn };
    mc_simd_parallel_for(mc_simd_threads(ex, n_seq * E * K, CONV_MIN_PARALLEL),
                         n_seq * ((s.n_blocks + STEP_GROUP - 1) / STEP_GROUP), conv_step_item, &s);
}

void mc_cpu_conv1d_step_c(const mc_exec *ex, float *u, float *state, const float *x, int64_t ldx, const float *w,
                        const float *b, int64_t n_seq, int64_t E, int64_t K) {
    conv_step_run(ex, conv_block_c, CONV_C_BLOCK, u, state, x, ldx, w, b, n_seq, E, K);
}

#if defined(__x86_64__)
void mc_cpu_conv1d_step_avx512(const mc_exec *ex, float *u, float *state, const float *x, int64_t ldx, const float *w,
                             const float *b, int64_t n_seq, int64_t E, int64_t K) {
    if (K > CONV_MAX_K) {
        mc_cpu_conv1d_step_c(ex, u, state, x, ldx, w, b, n_seq, E, K);
        return;
    }
    conv_step_run(ex, conv512_block, 16, u, state, x, ldx, w, b, n_seq, E, K);
}

void mc_cpu_conv1d_step_avx2(const mc_exec *ex, float *u, float *state, const float *x, int64_t ldx, const float *w,
                           const float *b, int64_t n_seq, int64_t E, int64_t K) {
    if (K > CONV_MAX_K) {
        mc_cpu_conv1d_step_c(ex, u, state, x, ldx, w, b, n_seq, E, K);
        return;
    }
    conv_step_run(ex, conv256_block, 8, u, state, x, ldx, w, b, n_seq, E, K);
}
#endif
