// Embedding lookup for the cpu backend: rows of the table read in their stored dtype (f32, f16, bf16, int8 with
// per-group scales) and widened to f32, exactly (every stored value is representable in f32; int8 is q · scale, one
// rounding, as mc_weight_at). Threads split the rows. The oracle is mc_ref_embed.
#include <string.h>

#include "kernels/cpu/simd.h"
#include "kernels/cpu/cpu.h"
#include "kernels/dtype.h"

// Below this many elements one thread is faster: the copy is memory-bound and short.
#define EMBED_MIN_PARALLEL 65536

typedef struct embed_args {
    float *out; // [n, H]
    const mc_weight *w;
    const int32_t *ids; // [n]
    int64_t H;
} embed_args;

static void embed_run(const mc_exec *ex, mc_simd_item_fn row_fn, float *out, const mc_weight *w, const int32_t *ids,
                      int64_t n, int64_t H) {
    const embed_args a = { out, w, ids, H };
    mc_simd_parallel_for(mc_simd_threads(ex, n * H, EMBED_MIN_PARALLEL), n, row_fn, &a);
}

// ---- portable C ----------------------------------------------------------------------------------------------

static void embed_row_c(float *out, const mc_weight *w, int64_t r, int64_t H) {
    const int64_t cols = w->cols;
    switch (w->dtype) {
        case MC_DTYPE_F16: {
            const uint16_t *p = (const uint16_t *)w->data + r * cols;
            for (int64_t h = 0; h < H; h++) {
                out[h] = mc_f16_to_f32(p[h]);
            }
            break;
        }
        case MC_DTYPE_BF16: {
            const uint16_t *p = (const uint16_t *)w->data + r * cols;
            for (int64_t h = 0; h < H; h++) {
                out[h] = mc_bf16_to_f32(p[h]);
            }
            break;
        }
        case MC_DTYPE_I8: {
            const int8_t *p = (const int8_t *)w->data + r * cols;
            const float *sc = w->scales + r * ((cols + w->group - 1) / w->group);
            for (int64_t h = 0; h < H; h++) {
                out[h] = (float)p[h] * sc[h / w->group];
            }
            break;
        }
        default:
            memcpy(out, (const float *)w->data + r * cols, (size_t)H * sizeof(float));
            break;
    }
}

static void embed_item_c(const void *ctx, int64_t i) {
    const embed_args *a = ctx;
    embed_row_c(a->out + i * a->H, a->w, a->ids[i], a->H);
}

void mc_cpu_embed_c(const mc_exec *ex, float *out, const mc_weight *w, const int32_t *ids, int64_t n, int64_t H) {
    embed_run(ex, embed_item_c, out, w, ids, n, H);
}

#if defined(__x86_64__)

// ---- AVX-512 --------------------------------------------------------------------------------------------------

// out[0..n) = q[0..n) · s for one scale group.
MC_AVX512 static void dequant_i8_512(float *out, const int8_t *q, float s, int64_t n) {
    const __m512 sv = _mm512_set1_ps(s);
    for (int64_t h = 0; h < n; h += 16) {
        __mmask16 m = mc_mask512(n - h);
        __m512i v = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, q + h));
        _mm512_mask_storeu_ps(out + h, m, _mm512_mul_ps(_mm512_cvtepi32_ps(v), sv));
    }
}

MC_AVX512 static void embed_row_512(float *out, const mc_weight *w, int64_t r, int64_t H) {
    const int64_t cols = w->cols;
    switch (w->dtype) {
        case MC_DTYPE_F16: {
            const uint16_t *p = (const uint16_t *)w->data + r * cols;
            for (int64_t h = 0; h < H; h += 16) {
                __mmask16 m = mc_mask512(H - h);
                _mm512_mask_storeu_ps(out + h, m, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p + h)));
            }
            break;
        }
        case MC_DTYPE_BF16: {
            const uint16_t *p = (const uint16_t *)w->data + r * cols;
            for (int64_t h = 0; h < H; h += 16) {
                __mmask16 m = mc_mask512(H - h);
                __m512i v = _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p + h)), 16);
                _mm512_mask_storeu_ps(out + h, m, _mm512_castsi512_ps(v));
            }
            break;
        }
        case MC_DTYPE_I8: {
            const int8_t *p = (const int8_t *)w->data + r * cols;
            const float *sc = w->scales + r * ((cols + w->group - 1) / w->group);
            for (int64_t g0 = 0; g0 < H; g0 += w->group) {
                dequant_i8_512(out + g0, p + g0, sc[g0 / w->group], H - g0 < w->group ? H - g0 : w->group);
            }
            break;
        }
        default:
            memcpy(out, (const float *)w->data + r * cols, (size_t)H * sizeof(float));
            break;
    }
}

MC_AVX512 static void embed_item_512(const void *ctx, int64_t i) {
    const embed_args *a = ctx;
    embed_row_512(a->out + i * a->H, a->w, a->ids[i], a->H);
}

void mc_cpu_embed_avx512(const mc_exec *ex, float *out, const mc_weight *w, const int32_t *ids, int64_t n, int64_t H) {
    embed_run(ex, embed_item_512, out, w, ids, n, H);
}

// ---- AVX2 (+F16C) ---------------------------------------------------------------------------------------------

MC_AVX2 static void dequant_i8_256(float *out, const int8_t *q, float s, int64_t n) {
    const __m256 sv = _mm256_set1_ps(s);
    int64_t h = 0;
    for (; h + 8 <= n; h += 8) {
        int64_t bytes;
        memcpy(&bytes, q + h, sizeof(bytes));
        __m256i v = _mm256_cvtepi8_epi32(_mm_cvtsi64_si128(bytes));
        _mm256_storeu_ps(out + h, _mm256_mul_ps(_mm256_cvtepi32_ps(v), sv));
    }
    for (; h < n; h++) {
        out[h] = (float)q[h] * s;
    }
}

MC_AVX2 static void embed_row_256(float *out, const mc_weight *w, int64_t r, int64_t H) {
    const int64_t cols = w->cols;
    switch (w->dtype) {
        case MC_DTYPE_F16: {
            const uint16_t *p = (const uint16_t *)w->data + r * cols;
            int64_t h = 0;
            for (; h + 8 <= H; h += 8) {
                _mm256_storeu_ps(out + h, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + h))));
            }
            for (; h < H; h++) {
                out[h] = mc_f16_to_f32(p[h]);
            }
            break;
        }
        case MC_DTYPE_BF16: {
            const uint16_t *p = (const uint16_t *)w->data + r * cols;
            int64_t h = 0;
            for (; h + 8 <= H; h += 8) {
                __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p + h)));
                _mm256_storeu_ps(out + h, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
            }
            for (; h < H; h++) {
                out[h] = mc_bf16_to_f32(p[h]);
            }
            break;
        }
        case MC_DTYPE_I8: {
            const int8_t *p = (const int8_t *)w->data + r * cols;
            const float *sc = w->scales + r * ((cols + w->group - 1) / w->group);
            for (int64_t g0 = 0; g0 < H; g0 += w->group) {
                dequant_i8_256(out + g0, p + g0, sc[g0 / w->group], H - g0 < w->group ? H - g0 : w->group);
            }
            break;
        }
        default:
            memcpy(out, (const float *)w->data + r * cols, (size_t)H * sizeof(float));
            break;
    }
}

MC_AVX2 static void embed_item_256(const void *ctx, int64_t i) {
    const embed_args *a = ctx;
    embed_row_256(a->out + i * a->H, a->w, a->ids[i], a->H);
}

void mc_cpu_embed_avx2(const mc_exec *ex, float *out, const mc_weight *w, const int32_t *ids, int64_t n, int64_t H) {
    embed_run(ex, embed_item_256, out, w, ids, n, H);
}
#endif
