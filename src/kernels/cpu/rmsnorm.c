// Residual add + RMSNorm for the cpu backend (spec §3.2–3.3): the add, the store of the new residual and the sum of
// squares share one pass over a row, the scaling a second. The mean of squares accumulates in f32 as the reference
// does, in several vector partial sums (closer to the exact value than one running sum). Threads split the rows.
// The oracle is mc_ref_rmsnorm.
#include <math.h>

#include "kernels/cpu/simd.h"
#include "kernels/cpu/cpu.h"

// Below this many elements the call runs on one thread: a row of H=768 takes ~65 ns (bench_ssm), so even a decode
// step of 32 sequences (~2 µs) is too short to pay for waking a second thread.
#define RMSNORM_MIN_PARALLEL 65536

typedef struct norm_args {
    float *y, *x;     // [M, H]
    const float *add; // [M, H] or NULL
    const float *w;   // [H]
    int64_t H;
    float eps;
} norm_args;

// Row-wise work items of any variant (row_fn takes one row), threaded when the call is big enough.
static void rmsnorm_run(const mc_exec *ex, mc_simd_item_fn row_fn, float *y, float *x, const float *add, const float *w,
                        int64_t M, int64_t H, float eps) {
    const norm_args a = { y, x, add, w, H, eps };
    mc_simd_parallel_for(mc_simd_threads(ex, M * H, RMSNORM_MIN_PARALLEL), M, row_fn, &a);
}

// ---- portable C ----------------------------------------------------------------------------------------------

static void rmsnorm_row_c(float *y, float *x, const float *add, const float *w, int64_t H, float eps) {
    float ss[8] = { 0 }; // independent partial sums: the compiler may vectorize them
    int64_t h = 0;
    for (; h + 8 <= H; h += 8) {
        for (int j = 0; j < 8; j++) {
            float v = add != NULL ? x[h + j] + add[h + j] : x[h + j];
            x[h + j] = v;
            ss[j] += v * v;
        }
    }
    float ms = 0.0f;
    for (; h < H; h++) {
        float v = add != NULL ? x[h] + add[h] : x[h];
        x[h] = v;
        ms += v * v;
    }
    for (int j = 0; j < 8; j++) {
        ms += ss[j];
    }
    float r = 1.0f / sqrtf(ms / (float)H + eps);
    for (h = 0; h < H; h++) {
        y[h] = x[h] * r * w[h];
    }
}

static void rmsnorm_item_c(const void *ctx, int64_t m) {
    const norm_args *a = ctx;
    rmsnorm_row_c(a->y + m * a->H, a->x + m * a->H, a->add != NULL ? a->add + m * a->H : NULL, a->w, a->H, a->eps);
}

void mc_cpu_rmsnorm_c(const mc_exec *ex, float *y, float *x, const float *add, const float *w, int64_t M, int64_t H,
                      float eps) {
    rmsnorm_run(ex, rmsnorm_item_c, y, x, add, w, M, H, eps);
}

#if defined(__x86_64__)

// ---- AVX-512 --------------------------------------------------------------------------------------------------

MC_AVX512 static void rmsnorm_row_512(float *y, float *x, const float *add, const float *w, int64_t H, float eps) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t h = 0;
    for (; h + 32 <= H; h += 32) {
        __m512 v0 = _mm512_loadu_ps(x + h), v1 = _mm512_loadu_ps(x + h + 16);
        if (add != NULL) {
            v0 = _mm512_add_ps(v0, _mm512_loadu_ps(add + h));
            v1 = _mm512_add_ps(v1, _mm512_loadu_ps(add + h + 16));
            _mm512_storeu_ps(x + h, v0);
            _mm512_storeu_ps(x + h + 16, v1);
        }
        s0 = _mm512_fmadd_ps(v0, v0, s0);
        s1 = _mm512_fmadd_ps(v1, v1, s1);
    }
    for (; h < H; h += 16) {
        __mmask16 m = mc_mask512(H - h);
        __m512 v = _mm512_maskz_loadu_ps(m, x + h);
        if (add != NULL) {
            v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, add + h));
            _mm512_mask_storeu_ps(x + h, m, v);
        }
        s0 = _mm512_fmadd_ps(v, v, s0);
    }
    float ms = mc_hsum512(_mm512_add_ps(s0, s1));
    const __m512 r = _mm512_set1_ps(1.0f / sqrtf(ms / (float)H + eps));
    for (h = 0; h < H; h += 16) { // (x · r) · w in the reference's order
        __mmask16 m = mc_mask512(H - h);
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + h), r);
        _mm512_mask_storeu_ps(y + h, m, _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, w + h)));
    }
}

MC_AVX512 static void rmsnorm_item_512(const void *ctx, int64_t m) {
    const norm_args *a = ctx;
    rmsnorm_row_512(a->y + m * a->H, a->x + m * a->H, a->add != NULL ? a->add + m * a->H : NULL, a->w, a->H, a->eps);
}

void mc_cpu_rmsnorm_avx512(const mc_exec *ex, float *y, float *x, const float *add, const float *w, int64_t M,
                           int64_t H, float eps) {
    rmsnorm_run(ex, rmsnorm_item_512, y, x, add, w, M, H, eps);
}

// ---- AVX2 -----------------------------------------------------------------------------------------------------

MC_AVX2 static void rmsnorm_row_256(float *y, float *x, const float *add, const float *w, int64_t H, float eps) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t h = 0;
    for (; h + 16 <= H; h += 16) {
        __m256 v0 = _mm256_loadu_ps(x + h), v1 = _mm256_loadu_ps(x + h + 8);
        if (add != NULL) {
            v0 = _mm256_add_ps(v0, _mm256_loadu_ps(add + h));
            v1 = _mm256_add_ps(v1, _mm256_loadu_ps(add + h + 8));
            _mm256_storeu_ps(x + h, v0);
            _mm256_storeu_ps(x + h + 8, v1);
        }
        s0 = _mm256_fmadd_ps(v0, v0, s0);
        s1 = _mm256_fmadd_ps(v1, v1, s1);
    }
    for (; h < H; h += 8) {
        __m256i m = mc_mask256(H - h);
        __m256 v = _mm256_maskload_ps(x + h, m);
        if (add != NULL) {
            v = _mm256_add_ps(v, _mm256_maskload_ps(add + h, m));
            _mm256_maskstore_ps(x + h, m, v);
        }
        s0 = _mm256_fmadd_ps(v, v, s0);
    }
    float ms = mc_hsum256(_mm256_add_ps(s0, s1));
    const __m256 r = _mm256_set1_ps(1.0f / sqrtf(ms / (float)H + eps));
    h = 0;
    for (; h + 8 <= H; h += 8) {
        __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + h), r);
        _mm256_storeu_ps(y + h, _mm256_mul_ps(v, _mm256_loadu_ps(w + h)));
    }
    if (h < H) {
        __m256i m = mc_mask256(H - h);
        __m256 v = _mm256_mul_ps(_mm256_maskload_ps(x + h, m), r);
        _mm256_maskstore_ps(y + h, m, _mm256_mul_ps(v, _mm256_maskload_ps(w + h, m)));
    }
}

MC_AVX2 static void rmsnorm_item_256(const void *ctx, int64_t m) {
    const norm_args *a = ctx;
    rmsnorm_row_256(a->y + m * a->H, a->x + m * a->H, a->add != NULL ? a->add + m * a->H : NULL, a->w, a->H, a->eps);
}

void mc_cpu_rmsnorm_avx2(const mc_exec *ex, float *y, float *x, const float *add, const float *w, int64_t M, int64_t H,
                         float eps) {
    rmsnorm_run(ex, rmsnorm_item_256, y, x, add, w, M, H, eps);
}
#endif
