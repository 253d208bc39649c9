// The CPU matrix multiply y[M, N] = x[M, K]·Wᵀ (+bias) with W read as stored (f32, f16, bf16, int8 + group
// scales): AVX-512, AVX2+FMA and portable variants behind one selector. The oracle is mc_ref_matmul.
//
// Three shapes of work, one entry:
// - stream (M = 1, decode): weight rows one after another as a single prefetched stream, four accumulators per
//   row, int8 scaled per vector by a running group scale. Bandwidth-bound.
// - dot (M < GEMM_MIN_M*, batched decode): blocks of weight rows are read once, converted in registers, and dotted
//   with every row of x (which sits in L1/L2); the next rows are prefetched meanwhile.
// - gemm (prefill): x is packed once into panels [K][MR] (zero-padded in M, so the kernel needs no masks), each
//   block of NR weight rows is converted into a small per-thread f32 tile (f32 weights are used in place), and an
//   MR×NR register tile accumulates x-panel vectors times broadcast weights over all of K. Compute-bound.
// Threads split N into contiguous ranges; nothing is shared but the packed x, written before a barrier.
#include "kernels/cpu/cpu.h"

#include <omp.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/dtype.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

// Below this M the weights are streamed through the dot kernel: the gemm path's packing and conversion only pay
// for themselves once each converted weight is reused by many rows of x. f32 weights need no conversion, and on
// AVX-512 a 16-row gemm panel beats the dot kernel from M = 10 (in_proj, 1 thread, M=12: 0.42 vs 0.60 ms; M=8:
// 0.43 vs 0.34); converted dtypes still lose there (bf16 M=8: 0.47 vs 0.21 ms).
enum { GEMM_MIN_M = 16, GEMM_MIN_M_F32_AVX512 = 10 };

static inline int64_t min_i64(int64_t a, int64_t b) {
    return a < b ? a : b;
}

// Rows of int8 scales: ceil(K / group) per weight row; one group spanning K for the float dtypes.
static inline int64_t group_of(const mc_weight *w, int64_t K) {
    return w->dtype == MC_DTYPE_I8 && w->group > 0 ? w->group : (K > 0 ? K : 1);
}

// Threads to fork: all of them, or one for tiny products (a fork costs a few microseconds, about 2^16
// multiply-adds). Never a count in between, even when N has fewer units than threads (those threads get empty
// ranges): on the 16-core Xeon, regions of alternating sizes (x_proj on 5 threads, then dt_proj on 16) left the
// idle threads parked, and waking them cost more than the products (decode fell from 191 to 48 tokens/s).
static int pick_threads(const mc_exec *ex, int64_t M, int64_t N, int64_t K) {
    const int nt = ex != NULL && ex->n_threads > 1 ? ex->n_threads : 1;
    return M * N * K < ((int64_t)1 << 16) ? 1 : nt;
}

// Threads split N in units that are whole cache lines of y (16 f32) as well as whole blocks of the kernel (4
// rows for dot, 12 or 6 for gemm), so no two threads write parts of one line of y. Units of 12 let neighbours
// share lines; on a 16-core Xeon that false sharing made small batched products several times slower.
enum { SPLIT_DOT = 16, SPLIT_GEMM = 48 };

// Thread t's rows [lo, hi) of N, split in whole units of `align` rows.
static void thread_range(int64_t N, int64_t align, int nt, int t, int64_t *lo, int64_t *hi) {
    int64_t units = (N + align - 1) / align;
    *lo = min_i64(N, units * t / nt * align);
    *hi = min_i64(N, units * (t + 1) / nt * align);
}

// K == 0: every dot product is empty.
static void fill_bias(float *y, const float *bias, int64_t M, int64_t N) {
    for (int64_t m = 0; m < M; m++) {
        for (int64_t n = 0; n < N; n++) {
            y[m * N + n] = bias != NULL ? bias[n] : 0.0f;
        }
    }
}

// The gemm paths' x panels: xp[k][i] = x[m0 + i, k] for i < mr (zero past M), columns [k0, k1) of one panel.
// The threads pack slices of KC columns of every panel together (one thread per panel left the rest waiting at
// the barrier for a 32-row batch).
enum { PACK_KC = 64 };

static void pack_x(float *xp, const float *x, int64_t ldx, int64_t M, int64_t m0, int64_t mr, int64_t k0,
                   int64_t k1) {
    const int64_t mn = min_i64(mr, M - m0);
    for (int64_t i = 0; i < mr; i++) {
        const float *xm = x + (m0 + i) * ldx;
        for (int64_t k = k0; k < k1; k++) {
            xp[k * mr + i] = i < mn ? xm[k] : 0.0f;
        }
    }
}

// Weights of at most this many elements (1 MiB of f32: x_proj and dt_proj of the 130m model) fit each core's L2.
enum { SPLIT_ROWS_MAX_WEIGHT = 1 << 18 };

// Small weights with at least as many rows of x as threads: the threads split M rather than N, each running the
// one-thread product `fn` on its rows of x and owning those rows of y. Split over N, a small weight gives each
// thread a few columns and a barrier-bound pack (16-core Xeon, M = 32: dt_proj 250 µs per call at 16 threads,
// 72 at 8); split over M, each thread reads the whole weight, which stays in cache. False when not taken.
static bool split_rows(const mc_exec *ex, mc_cpu_matmul_fn fn, float *y, const float *x, int64_t ldx,
                       const mc_weight *w, const float *bias, int64_t M, int64_t N, int64_t K) {
    const int nt = pick_threads(ex, M, N, K);
    if (nt == 1 || M < nt || N * K > SPLIT_ROWS_MAX_WEIGHT) {
        return false;
    }
    const mc_exec one = { .n_threads = 1 };
#pragma omp parallel num_threads(nt)
    {
        const int64_t t = omp_get_thread_num(), n = omp_get_num_threads();
        const int64_t m0 = M * t / n, m1 = M * (t + 1) / n;
        if (m1 > m0) {
            fn(&one, y + m0 * N, x + m0 * ldx, ldx, w, bias, m1 - m0, N, K);
        }
    }
    return true;
}

// ---------------------------------------------------------------------------------------------------------------
// Portable C: one weight row at a time is converted in chunks into a stack buffer, then dotted with every row of x
// by a loop the compiler vectorizes (omp simd). Also what non-x86 builds run.

enum { PORT_KC = 256 };

// dst[i] = W[n, k0 + i] as f32 for i < kn (int8: q · scale, as mc_weight_at rounds it).
static void port_convert(float *dst, const mc_weight *w, int64_t n, int64_t k0, int64_t kn, int64_t K) {
    const int64_t off = n * K + k0;
    switch (w->dtype) {
        case MC_DTYPE_F16: {
            // mc_f16_to_f32 without its branches, so the loop vectorizes: the bits moved into f32 place, then a
            // multiply by 2^112 rebiases the exponent exactly, and also makes f32-subnormal-placed subnormal
            // halves exact normals (needs subnormals honoured: no -ffast-math); Inf/NaN land at >= 2^16 and get
            // the all-ones exponent back.
            const uint16_t *p = (const uint16_t *)w->data + off;
            for (int64_t i = 0; i < kn; i++) {
                uint32_t bits = (uint32_t)(p[i] & 0x7fff) << 13;
                float f;
                memcpy(&f, &bits, sizeof(f));
                f *= 0x1p112f;
                memcpy(&bits, &f, sizeof(bits));
                bits |= (f >= 65536.0f ? 0x7f800000u : 0u) | (uint32_t)(p[i] & 0x8000) << 16;
                memcpy(&dst[i], &bits, sizeof(bits));
            }
            break;
        }
        case MC_DTYPE_BF16: {
            const uint16_t *p = (const uint16_t *)w->data + off;
            for (int64_t i = 0; i < kn; i++) {
                dst[i] = mc_bf16_to_f32(p[i]);
            }
            break;
        }
        case MC_DTYPE_I8: {
            const int8_t *q = (const int8_t *)w->data + off;
            const int64_t group = group_of(w, K);
            const float *sc = w->scales + n * ((K + group - 1) / group);
            for (int64_t i = 0; i < kn;) { // one group segment at a time: no division per element
                const int64_t g = (k0 + i) / group;
                const int64_t end = min_i64(kn, (g + 1) * group - k0);
                const float s = sc[g];
                for (; i < end; i++) {
                    dst[i] = (float)q[i] * s;
                }
            }
            break;
        }
        default:
            memcpy(dst, (const float *)w->data + off, (size_t)kn * sizeof(float));
            break;
    }
}

static void port_rows(float *y, const float *x, int64_t ldx, const mc_weight *w, const float *bias, int64_t M,
                      int64_t N, int64_t K, int64_t lo, int64_t hi) {
    float buf[PORT_KC];
    for (int64_t n = lo; n < hi; n++) {
        for (int64_t m = 0; m < M; m++) {
            y[m * N + n] = 0.0f;
        }
        for (int64_t k0 = 0; k0 < K; k0 += PORT_KC) {
            const int64_t kn = min_i64(PORT_KC, K - k0);
            port_convert(buf, w, n, k0, kn, K);
            for (int64_t m = 0; m < M; m++) {
                const float *xm = x + m * ldx + k0;
                float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
                for (int64_t k = 0; k < kn; k++) {
                    acc += buf[k] * xm[k];
                }
                y[m * N + n] += acc;
            }
        }
        if (bias != NULL) {
            for (int64_t m = 0; m < M; m++) {
                y[m * N + n] += bias[n];
            }
        }
    }
}

void mc_cpu_matmul_c(const mc_exec *ex, float *y, const float *x, int64_t ldx, const mc_weight *w,
                            const float *bias, int64_t M, int64_t N, int64_t K) {
    if (M <= 0 || N <= 0) {
        return;
    }
    if (K <= 0) {
        fill_bias(y, bias, M, N);
        return;
    }
    if (split_rows(ex, mc_cpu_matmul_c, y, x, ldx, w, bias, M, N, K)) {
        return;
    }
    const int nt = pick_threads(ex, M, N, K);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int64_t lo, hi;
        thread_range(N, SPLIT_DOT, omp_get_num_threads(), omp_get_thread_num(), &lo, &hi);
        port_rows(y, x, ldx, w, bias, M, N, K, lo, hi);
    }
}

#if defined(__x86_64__)

// n floats, 64-byte aligned (aligned_alloc wants a size that is a multiple of the alignment), or NULL.
static float *alloc_f32(int64_t n) {
    return aligned_alloc(64, (size_t)((n * (int64_t)sizeof(float) + 63) / 64 * 64));
}

// x for the dot and stream paths: rows that start on a 64-byte boundary, so no vector load of x splits across
// two cache lines (a large malloc'd x sits 16 bytes past one). Those paths load x once per weight vector
// (batched: up to 8 per weight vector), so split loads halved them (in_proj M=8 f32: 0.83 vs 0.33 ms, 1 thread).
// Returns x itself when it is aligned already or the copy cannot be allocated; *owned is what to free.
static const float *aligned_rows(const float *x, int64_t ldx, int64_t M, int64_t K, int64_t *ld_out, float **owned) {
    *owned = NULL;
    *ld_out = ldx;
    if (((uintptr_t)x % 64 == 0 && ldx % 16 == 0) || M * K < 64) {
        return x;
    }
    const int64_t ld = (K + 15) / 16 * 16;
    float *xa = alloc_f32(M * ld);
    if (xa == NULL) {
        return x;
    }
    for (int64_t m = 0; m < M; m++) {
        memcpy(xa + m * ld, x + m * ldx, (size_t)K * sizeof(float));
    }
    *owned = xa;
    *ld_out = ld;
    return xa;
}

// A variant's gemm kernel: rows [lo, hi) of y for all M, from x packed in panels of mr rows; wbuf holds the
// calling thread's nr converted weight rows.
typedef void (*gemm_rows_fn)(float *y, const float *xp, int64_t mr, const mc_weight *w, const float *bias, int64_t M,
                             int64_t N, int64_t K, int64_t lo, int64_t hi, float *wbuf);

// A variant's dot/stream kernels: rows [lo, hi) of y from x as it lies (rows ldx apart).
typedef void (*dot_rows_fn)(float *y, const float *x, int64_t ldx, const mc_weight *w, const float *bias, int64_t M,
                            int64_t N, int64_t K, int64_t lo, int64_t hi);

// The gemm path: all threads pack K-slices of x into panels of mr rows, then each runs `rows` on its N range
// with its own nr-row weight tile. False when the buffers cannot be allocated (the dot path needs none).
static bool run_gemm(const mc_exec *ex, gemm_rows_fn rows, int64_t mr, int64_t nr, float *y, const float *x,
                     int64_t ldx, const mc_weight *w, const float *bias, int64_t M, int64_t N, int64_t K) {
    const int nt = pick_threads(ex, M, N, K);
    const int64_t n_panels = (M + mr - 1) / mr;
    float *xp = alloc_f32(n_panels * mr * K), *wbuf = alloc_f32(nt * nr * K);
    if (xp == NULL || wbuf == NULL) {
        free(xp);
        free(wbuf);
        return false;
    }
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
#pragma omp for collapse(2) schedule(static)
        for (int64_t p = 0; p < n_panels; p++) {
            for (int64_t k0 = 0; k0 < K; k0 += PACK_KC) {
                pack_x(xp + p * mr * K, x, ldx, M, p * mr, mr, k0, min_i64(K, k0 + PACK_KC));
            }
        }
        int64_t lo, hi;
        const int t = omp_get_thread_num();
        thread_range(N, SPLIT_GEMM, omp_get_num_threads(), t, &lo, &hi);
        rows(y, xp, mr, w, bias, M, N, K, lo, hi, wbuf + t * nr * K);
    }
    free(xp);
    free(wbuf);
    return true;
}

// The dot/stream path: x with 64-byte aligned rows, each thread running `rows` on its N range.
static void run_dot(const mc_exec *ex, dot_rows_fn rows, float *y, const float *x, int64_t ldx, const mc_weight *w,
                    const float *bias, int64_t M, int64_t N, int64_t K) {
    int64_t lda;
    float *owned;
    const float *xa = aligned_rows(x, ldx, M, K, &lda, &owned);
    const int nt = pick_threads(ex, M, N, K);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int64_t lo, hi;
        thread_range(N, SPLIT_DOT, omp_get_num_threads(), omp_get_thread_num(), &lo, &hi);
        rows(y, xa, lda, w, bias, M, N, K, lo, hi);
    }
    free(owned);
}

#define MC_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
#define MC_AVX2   __attribute__((target("avx2,fma,f16c")))
#define MC_INLINE static inline __attribute__((always_inline))

// ---------------------------------------------------------------------------------------------------------------
// AVX-512: 16 lanes; tails use masked loads, so every K is handled in vector code.

// 16 weights from element `off` of `base` as f32; int8 is multiplied by sc (q · scale, rounded as the reference
// does). A tail reads only the lanes in mk (masked loads do not touch the rest) and returns 0 in the others.
MC_AVX512 MC_INLINE __m512 w16_load(const void *base, int dtype, int64_t off, bool tail, __mmask16 mk, __m512 sc) {
    switch (dtype) {
        case MC_DTYPE_F16: {
            const uint16_t *p = (const uint16_t *)base + off;
            __m256i h = tail ? _mm256_maskz_loadu_epi16(mk, p) : _mm256_loadu_si256((const __m256i *)p);
            return _mm512_cvtph_ps(h);
        }
        case MC_DTYPE_BF16: {
            const uint16_t *p = (const uint16_t *)base + off;
            __m256i h = tail ? _mm256_maskz_loadu_epi16(mk, p) : _mm256_loadu_si256((const __m256i *)p);
            return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
        }
        case MC_DTYPE_I8: {
            const int8_t *p = (const int8_t *)base + off;
            __m128i q = tail ? _mm_maskz_loadu_epi8(mk, p) : _mm_loadu_si128((const __m128i *)p);
            return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)), sc);
        }
        default: {
            const float *p = (const float *)base + off;
            return tail ? _mm512_maskz_loadu_ps(mk, p) : _mm512_loadu_ps(p);
        }
    }
}

// Dot block sizes (16 accumulators either way): converted dtypes take 4 weight rows × 4 rows of x, so each
// conversion is shared by 4 rows of x; f32 takes 2 × 8, which reads only 2 weight streams at a time and kept up
// with DRAM better (in_proj M=8, 1 thread: 0.36 ms vs 0.42 through gemm and 0.49 as 4 × 4).
enum { D512_R = 4, D512_MB = 8 }; // array bounds: the largest of each

// One 16-wide step of a dot block at column k: R weight vectors, each used by MB rows of x.
MC_AVX512 MC_INLINE void d512_step(__m512 acc[D512_R][D512_MB], const float *const xr[D512_MB], const mc_weight *w,
                                   int64_t K, int64_t n0, int64_t k, bool tail, __mmask16 mk, const __m512 sc[D512_R],
                                   int R, int MB, int dtype) {
    __m512 wv[D512_R];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        wv[r] = w16_load(w->data, dtype, (n0 + r) * K + k, tail, mk, sc[r]);
    }
#pragma GCC unroll 8
    for (int m = 0; m < MB; m++) {
        __m512 xv = tail ? _mm512_maskz_loadu_ps(mk, xr[m] + k) : _mm512_loadu_ps(xr[m] + k);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            acc[r][m] = _mm512_fmadd_ps(wv[r], xv, acc[r][m]);
        }
    }
}

// y[m0 + m, n0 + r] for r < R, m < MB: whole dot products over K, one int8 scale group at a time.
// pf (or NULL): the first of R later weight rows to prefetch meanwhile, so the row streams do not wait on DRAM.
MC_AVX512 MC_INLINE void d512_block(float *y, const float *x, int64_t ldx, const mc_weight *w, const float *bias,
                                    int64_t N, int64_t K, int64_t n0, int64_t m0, const char *pf, int R, int MB,
                                    int dtype) {
    const int64_t esz = mc_dtype_size(dtype);
    __m512 acc[D512_R][D512_MB];
    const float *xr[D512_MB];
#pragma GCC unroll 8
    for (int m = 0; m < MB; m++) {
        xr[m] = x + (m0 + m) * ldx;
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            acc[r][m] = _mm512_setzero_ps();
        }
    }
    const int64_t group = dtype == MC_DTYPE_I8 ? group_of(w, K) : K;
    const int64_t n_groups = (K + group - 1) / group;
    for (int64_t g = 0; g < n_groups; g++) {
        __m512 sc[D512_R];
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            sc[r] = dtype == MC_DTYPE_I8 ? _mm512_set1_ps(w->scales[(n0 + r) * n_groups + g]) : _mm512_setzero_ps();
        }
        const int64_t k1 = min_i64(K, (g + 1) * group);
        int64_t k = g * group;
        for (; k + 16 <= k1; k += 16) {
            if (pf != NULL) {
#pragma GCC unroll 8
                for (int r = 0; r < R; r++) {
                    _mm_prefetch(pf + (r * K + k) * esz, _MM_HINT_T0);
                }
            }
            d512_step(acc, xr, w, K, n0, k, false, 0xffff, sc, R, MB, dtype);
        }
        if (k < k1) {
            d512_step(acc, xr, w, K, n0, k, true, (__mmask16)((1u << (k1 - k)) - 1), sc, R, MB, dtype);
        }
    }
#pragma GCC unroll 8
    for (int m = 0; m < MB; m++) {
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            y[(m0 + m) * N + n0 + r] = _mm512_reduce_add_ps(acc[r][m]) + (bias != NULL ? bias[n0 + r] : 0.0f);
        }
    }
}

// All M rows of x against R weight rows from n0, MB rows of x at a time: the weight rows stay in L1 while the x
// blocks cycle past them. The first block prefetches the rows `pf` points to.
MC_AVX512 MC_INLINE void d512_mblocks(float *y, const float *x, int64_t ldx, const mc_weight *w, const float *bias,
                                      int64_t M, int64_t N, int64_t K, int64_t n0, const char *pf, int R, int MB,
                                      int dtype) {
    int64_t m = 0;
    for (; m + MB <= M; m += MB) {
        d512_block(y, x, ldx, w, bias, N, K, n0, m, m == 0 ? pf : NULL, R, MB, dtype);
    }
    pf = m == 0 ? pf : NULL;
    switch (M - m) { // the rest, below MB
        case 7:
            d512_block(y, x, ldx, w, bias, N, K, n0, m, pf, R, 7, dtype);
            break;
        case 6:
            d512_block(y, x, ldx, w, bias, N, K, n0, m, pf, R, 6, dtype);
            break;
        case 5:
            d512_block(y, x, ldx, w, bias, N, K, n0, m, pf, R, 5, dtype);
            break;
        case 4:
            d512_block(y, x, ldx, w, bias, N, K, n0, m, pf, R, 4, dtype);
            break;
        case 3:
            d512_block(y, x, ldx, w, bias, N, K, n0, m, pf, R, 3, dtype);
            break;
        case 2:
            d512_block(y, x, ldx, w, bias, N, K, n0, m, pf, R, 2, dtype);
            break;
        case 1:
            d512_block(y, x, ldx, w, bias, N, K, n0, m, pf, R, 1, dtype);
            break;
        default:
            break;
    }
}

enum { GEMV512_PF_BYTES = 8192 }; // how far ahead of the reads the single weight stream is prefetched

// M = 1 with f32/f16/bf16 weights (decode): the rows one after another, so the weights are one sequential stream,
// prefetched GEMV512_PF_BYTES ahead; four accumulators per row keep the FMA latency out of the way. Reading 4
// rows side by side (the dot block) held f32 at ~30 GB/s on one core, this reaches ~40 (the read loop: 44.5).
MC_AVX512 MC_INLINE void gemv512_rows(float *y, const float *x, const mc_weight *w, const float *bias, int64_t K,
                                      int64_t lo, int64_t hi, int dtype) {
    const int64_t esz = mc_dtype_size(dtype);
    const char *base = w->data;
    const int64_t end = hi * K * esz; // prefetch no further than the last row this thread reads
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t n = lo; n < hi; n++) {
        const int64_t row = n * K;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        int64_t k = 0;
        for (; k + 64 <= K; k += 64) {
            const int64_t pf = (row + k) * esz + GEMV512_PF_BYTES;
#pragma GCC unroll 4
            for (int64_t l = 0; l < esz; l++) { // 64 elements: esz cache lines
                if (pf + 64 * l < end) {
                    _mm_prefetch(base + pf + 64 * l, _MM_HINT_T0);
                }
            }
            a0 = _mm512_fmadd_ps(w16_load(base, dtype, row + k, false, 0xffff, one), _mm512_loadu_ps(x + k), a0);
            a1 = _mm512_fmadd_ps(w16_load(base, dtype, row + k + 16, false, 0xffff, one), _mm512_loadu_ps(x + k + 16),
                                 a1);
            a2 = _mm512_fmadd_ps(w16_load(base, dtype, row + k + 32, false, 0xffff, one), _mm512_loadu_ps(x + k + 32),
                                 a2);
            a3 = _mm512_fmadd_ps(w16_load(base, dtype, row + k + 48, false, 0xffff, one), _mm512_loadu_ps(x + k + 48),
                                 a3);
        }
        for (; k + 16 <= K; k += 16) {
            a0 = _mm512_fmadd_ps(w16_load(base, dtype, row + k, false, 0xffff, one), _mm512_loadu_ps(x + k), a0);
        }
        if (k < K) {
            const __mmask16 mk = (__mmask16)((1u << (K - k)) - 1);
            a1 = _mm512_fmadd_ps(w16_load(base, dtype, row + k, true, mk, one), _mm512_maskz_loadu_ps(mk, x + k), a1);
        }
        const __m512 sum = _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3));
        y[n] = _mm512_reduce_add_ps(sum) + (bias != NULL ? bias[n] : 0.0f);
    }
}

// The int8 twin of gemv512_rows, for groups of whole vectors (group % 16 == 0, the usual 32/64/128/K): the scale
// moves to the next group after every group/16 vectors, without a loop per group. Small groups otherwise cost a
// loop per 32 bytes (group 32: 24 GB/s on one core; this form 33).
MC_AVX512 MC_INLINE __m512 gemv512_i8_vec(const int8_t *q, int64_t k, const float **sp, int64_t *left, int64_t vpg,
                                          __m512 *s, bool more) {
    const __m512 wv =
        _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(q + k)))), *s);
    if (--*left == 0 && more) { // the next vector starts a new group
        *left = vpg;
        *s = _mm512_set1_ps(*++*sp);
    }
    return wv;
}

MC_AVX512 static void gemv512_rows_i8(float *y, const float *x, const mc_weight *w, const float *bias, int64_t K,
                                      int64_t lo, int64_t hi) {
    const int8_t *base = w->data;
    const int64_t group = w->group, n_groups = (K + group - 1) / group, vpg = group / 16;
    const int64_t end = hi * K;
    for (int64_t n = lo; n < hi; n++) {
        const int8_t *q = base + n * K;
        const float *sp = w->scales + n * n_groups;
        int64_t left = vpg;
        __m512 s = _mm512_set1_ps(*sp);
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        int64_t k = 0;
        for (; k + 64 <= K; k += 64) {
            if (n * K + k + GEMV512_PF_BYTES < end) {
                _mm_prefetch((const char *)(q + k) + GEMV512_PF_BYTES, _MM_HINT_T0);
            }
            a0 = _mm512_fmadd_ps(gemv512_i8_vec(q, k, &sp, &left, vpg, &s, true), _mm512_loadu_ps(x + k), a0);
            a1 = _mm512_fmadd_ps(gemv512_i8_vec(q, k + 16, &sp, &left, vpg, &s, true), _mm512_loadu_ps(x + k + 16), a1);
            a2 = _mm512_fmadd_ps(gemv512_i8_vec(q, k + 32, &sp, &left, vpg, &s, true), _mm512_loadu_ps(x + k + 32), a2);
            a3 = _mm512_fmadd_ps(gemv512_i8_vec(q, k + 48, &sp, &left, vpg, &s, k + 64 < K),
                                 _mm512_loadu_ps(x + k + 48), a3);
        }
        for (; k + 16 <= K; k += 16) {
            a0 = _mm512_fmadd_ps(gemv512_i8_vec(q, k, &sp, &left, vpg, &s, k + 16 < K), _mm512_loadu_ps(x + k), a0);
        }
        if (k < K) { // K % 16 != 0: the last group's tail (its scale is current)
            const __mmask16 mk = (__mmask16)((1u << (K - k)) - 1);
            const __m512 wv =
                _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mk, q + k))), s);
            a1 = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(mk, x + k), a1);
        }
        const __m512 sum = _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3));
        y[n] = _mm512_reduce_add_ps(sum) + (bias != NULL ? bias[n] : 0.0f);
    }
}

MC_AVX512 MC_INLINE void d512_rows(float *y, const float *x, int64_t ldx, const mc_weight *w, const float *bias,
                                   int64_t M, int64_t N, int64_t K, int64_t lo, int64_t hi, int dtype) {
    if (M == 1 && dtype != MC_DTYPE_I8) {
        gemv512_rows(y, x, w, bias, K, lo, hi, dtype);
        return;
    }
    if (M == 1 && dtype == MC_DTYPE_I8 && group_of(w, K) % 16 == 0) {
        gemv512_rows_i8(y, x, w, bias, K, lo, hi);
        return;
    }
    const int R = dtype == MC_DTYPE_F32 ? 2 : 4, MB = dtype == MC_DTYPE_F32 ? 8 : 4;
    // Prefetch distance in blocks: one for f32 (a farther one fell out of L1 before use), four for the narrower
    // dtypes, whose blocks are 2-4x shorter.
    const int64_t pf_blocks = dtype == MC_DTYPE_F32 ? 1 : 4;
    const int64_t row_bytes = K * mc_dtype_size(dtype);
    int64_t n = lo;
    for (; n + R <= hi; n += R) {
        const int64_t pn = n + pf_blocks * R;
        const char *pf = pn + R <= hi ? (const char *)w->data + pn * row_bytes : NULL;
        d512_mblocks(y, x, ldx, w, bias, M, N, K, n, pf, R, MB, dtype);
    }
    for (; n < hi; n++) {
        d512_mblocks(y, x, ldx, w, bias, M, N, K, n, NULL, 1, MB, dtype);
    }
}

// One instance per dtype, so the loads above fold to straight-line code.
MC_AVX512 static void d512_rows_f32(float *y, const float *x, int64_t ldx, const mc_weight *w, const float *bias,
                                    int64_t M, int64_t N, int64_t K, int64_t lo, int64_t hi) {
    d512_rows(y, x, ldx, w, bias, M, N, K, lo, hi, MC_DTYPE_F32);
}

MC_AVX512 static void d512_rows_f16(float *y, const float *x, int64_t ldx, const mc_weight *w, const float *bias,
                                    int64_t M, int64_t N, int64_t K, int64_t lo, int64_t hi) {
    d512_rows(y, x, ldx, w, bias, M, N, K, lo, hi, MC_DTYPE_F16);
}

MC_AVX512 static void d512_rows_bf16(float *y, const float *x, int64_t ldx, const mc_weight *w, const float *bias,
                                     int64_t M, int64_t N, int64_t K, int64_t lo, int64_t hi) {
    d512_rows(y, x, ldx, w, bias, M, N, K, lo, hi, MC_DTYPE_BF16);
}

MC_AVX512 static void d512_rows_i8(float *y, const float *x, int64_t ldx, const mc_weight *w, const float *bias,
                                   int64_t M, int64_t N, int64_t K, int64_t lo, int64_t hi) {
    d512_rows(y, x, ldx, w, bias, M, N, K, lo, hi, MC_DTYPE_I8);
}

MC_AVX512 static void d512_dispatch(float *y, const float *x, int64_t ldx, const mc_weight *w, const float *bias,
                                    int64_t M, int64_t N, int64_t K, int64_t lo, int64_t hi) {
    switch (w->dtype) {
        case MC_DTYPE_F16:
            d512_rows_f16(y, x, ldx, w, bias, M, N, K, lo, hi);
            break;
        case MC_DTYPE_BF16:
            d512_rows_bf16(y, x, ldx, w, bias, M, N, K, lo, hi);
            break;
        case MC_DTYPE_I8:
            d512_rows_i8(y, x, ldx, w, bias, M, N, K, lo, hi);
            break;
        default:
            d512_rows_f32(y, x, ldx, w, bias, M, N, K, lo, hi);
            break;
    }
}

// gemm register tile: MV vectors of 16 x rows (MV = 2 for prefill, 1 when M <= 16) × 12 weight rows. Measured against
// OpenBLAS 0.3.21 (Debian libopenblas-openmp, sgemm on the same f32 data, 2 threads, 2-core Zen 5 EPYC): in_proj
// M=128 234 GFLOP/s there vs 499 here, out_proj 239 vs 466, lm_head 218 vs 491; so no BLAS dependency.
enum { G512_NR = 12, G512_MR_MAX = 32 };

// dst[j, k] = W[n0 + j, k] as f32 for j < nr, zero rows up to G512_NR (so the tile kernel runs full width).
MC_AVX512 MC_INLINE void g512_convert(float *dst, const mc_weight *w, int64_t n0, int64_t nr, int64_t K, int dtype) {
    const int64_t group = dtype == MC_DTYPE_I8 ? group_of(w, K) : K;
    const int64_t n_groups = (K + group - 1) / group;
    for (int64_t j = 0; j < nr; j++) {
        float *d = dst + j * K;
        for (int64_t g = 0; g < n_groups; g++) {
            const __m512 sc =
                dtype == MC_DTYPE_I8 ? _mm512_set1_ps(w->scales[(n0 + j) * n_groups + g]) : _mm512_setzero_ps();
            const int64_t k1 = min_i64(K, (g + 1) * group);
            int64_t k = g * group;
            for (; k + 16 <= k1; k += 16) {
                _mm512_storeu_ps(d + k, w16_load(w->data, dtype, (n0 + j) * K + k, false, 0xffff, sc));
            }
            if (k < k1) {
                const __mmask16 mk = (__mmask16)((1u << (k1 - k)) - 1);
                _mm512_mask_storeu_ps(d + k, mk, w16_load(w->data, dtype, (n0 + j) * K + k, true, mk, sc));
            }
        }
    }
    memset(dst + nr * K, 0, (size_t)((G512_NR - nr) * K) * sizeof(float));
}

MC_AVX512 static void g512_convert_any(float *dst, const mc_weight *w, int64_t n0, int64_t nr, int64_t K) {
    switch (w->dtype) {
        case MC_DTYPE_F16:
            g512_convert(dst, w, n0, nr, K, MC_DTYPE_F16);
            break;
        case MC_DTYPE_BF16:
            g512_convert(dst, w, n0, nr, K, MC_DTYPE_BF16);
            break;
        case MC_DTYPE_I8:
            g512_convert(dst, w, n0, nr, K, MC_DTYPE_I8);
            break;
        default:
            g512_convert(dst, w, n0, nr, K, MC_DTYPE_F32);
            break;
    }
}

// y[m0 + i, n0 + j] (i < 16·MV and < M - m0, j < nr) = Σ_k xp[k][i] · wr[j, k] + bias: the x vectors are loaded
// once per k and each weight is a broadcast operand of MV FMAs.
// pf (or NULL): G512_NR rows of pf_row bytes to prefetch meanwhile (the next block's stored weights).
MC_AVX512 MC_INLINE void g512_tile(float *y, int64_t N, const float *bias, const float *xp, const float *wr,
                                   int64_t ldw, int64_t K, int64_t M, int64_t m0, int64_t n0, int64_t nr,
                                   const char *pf, int64_t pf_row, int MV) {
    const int MR = 16 * MV;
    __m512 c[G512_NR][2];
#pragma GCC unroll 12
    for (int j = 0; j < G512_NR; j++) {
#pragma GCC unroll 2
        for (int v = 0; v < MV; v++) {
            c[j][v] = _mm512_setzero_ps();
        }
    }
    for (int64_t k0 = 0; k0 < K; k0 += 16) {
        if (pf != NULL) { // one line of each row per 16 k: spread over the tile, the whole rows by its end
            const int64_t off = k0 * pf_row / K / 64 * 64;
#pragma GCC unroll 12
            for (int j = 0; j < G512_NR; j++) {
                _mm_prefetch(pf + j * pf_row + off, _MM_HINT_T0);
            }
        }
        const int64_t k1 = min_i64(K, k0 + 16);
        for (int64_t k = k0; k < k1; k++) {
            __m512 a[2];
#pragma GCC unroll 2
            for (int v = 0; v < MV; v++) {
                a[v] = _mm512_load_ps(xp + k * MR + 16 * v);
            }
#pragma GCC unroll 12
            for (int j = 0; j < G512_NR; j++) {
                const __m512 b = _mm512_set1_ps(wr[j * ldw + k]);
#pragma GCC unroll 2
                for (int v = 0; v < MV; v++) {
                    c[j][v] = _mm512_fmadd_ps(a[v], b, c[j][v]);
                }
            }
        }
    }
    _Alignas(64) float t[G512_NR][G512_MR_MAX];
#pragma GCC unroll 12
    for (int j = 0; j < G512_NR; j++) {
#pragma GCC unroll 2
        for (int v = 0; v < MV; v++) {
            _mm512_store_ps(t[j] + 16 * v, c[j][v]);
        }
    }
    const int64_t mn = min_i64(MR, M - m0);
    for (int64_t i = 0; i < mn; i++) {
        float *yr = y + (m0 + i) * N + n0;
        for (int64_t j = 0; j < nr; j++) {
            yr[j] = t[j][i] + (bias != NULL ? bias[n0 + j] : 0.0f);
        }
    }
}

MC_AVX512 static void g512_tile32(float *y, int64_t N, const float *bias, const float *xp, const float *wr, int64_t ldw,
                                  int64_t K, int64_t M, int64_t m0, int64_t n0, int64_t nr, const char *pf,
                                  int64_t pf_row) {
    g512_tile(y, N, bias, xp, wr, ldw, K, M, m0, n0, nr, pf, pf_row, 2);
}

MC_AVX512 static void g512_tile16(float *y, int64_t N, const float *bias, const float *xp, const float *wr, int64_t ldw,
                                  int64_t K, int64_t M, int64_t m0, int64_t n0, int64_t nr, const char *pf,
                                  int64_t pf_row) {
    g512_tile(y, N, bias, xp, wr, ldw, K, M, m0, n0, nr, pf, pf_row, 1);
}

// Rows [lo, hi) of y for all M, x packed in panels of mr rows: per block of 12 weight rows, one conversion
// (skipped for f32 unless it is a short last block), then every x panel.
MC_AVX512 static void g512_rows(float *y, const float *xp, int64_t mr, const mc_weight *w, const float *bias, int64_t M,
                                int64_t N, int64_t K, int64_t lo, int64_t hi, float *wbuf) {
    for (int64_t n0 = lo; n0 < hi; n0 += G512_NR) {
        const int64_t nr = min_i64(G512_NR, hi - n0);
        const float *wr = wbuf;
        if (w->dtype == MC_DTYPE_F32 && nr == G512_NR) {
            wr = (const float *)w->data + n0 * K;
        } else {
            g512_convert_any(wbuf, w, n0, nr, K);
        }
        const int64_t row_bytes = K * mc_dtype_size(w->dtype);
        const char *pf = n0 + 2 * G512_NR <= hi ? (const char *)w->data + (n0 + G512_NR) * row_bytes : NULL;
        for (int64_t m0 = 0; m0 < M; m0 += mr) {
            if (mr == 16) {
                g512_tile16(y, N, bias, xp + m0 * K, wr, K, K, M, m0, n0, nr, m0 == 0 ? pf : NULL, row_bytes);
            } else {
                g512_tile32(y, N, bias, xp + m0 * K, wr, K, K, M, m0, n0, nr, m0 == 0 ? pf : NULL, row_bytes);
            }
        }
    }
}

void mc_cpu_matmul_avx512(const mc_exec *ex, float *y, const float *x, int64_t ldx, const mc_weight *w,
                          const float *bias, int64_t M, int64_t N, int64_t K) {
    if (M <= 0 || N <= 0) {
        return;
    }
    if (K <= 0) {
        fill_bias(y, bias, M, N);
        return;
    }
    if (split_rows(ex, mc_cpu_matmul_avx512, y, x, ldx, w, bias, M, N, K)) {
        return;
    }
    const int64_t mr = M <= 16 ? 16 : 32; // one vector of x rows wastes less of a small batch
    const bool gemm = M >= GEMM_MIN_M || (M >= GEMM_MIN_M_F32_AVX512 && w->dtype == MC_DTYPE_F32);
    if (!gemm || !run_gemm(ex, g512_rows, mr, G512_NR, y, x, ldx, w, bias, M, N, K)) {
        run_dot(ex, d512_dispatch, y, x, ldx, w, bias, M, N, K);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// AVX2 + FMA + F16C: 8 lanes and 16 registers; K tails (< 8 columns of a group) run in scalar code.

// 8 weights from element `off` of `base` as f32 (int8 times sc).
MC_AVX2 MC_INLINE __m256 w8_load(const void *base, int dtype, int64_t off, __m256 sc) {
    switch (dtype) {
        case MC_DTYPE_F16:
            return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)base + off)));
        case MC_DTYPE_BF16: {
            __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)base + off));
            return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
        }
        case MC_DTYPE_I8: {
            __m128i q = _mm_loadl_epi64((const __m128i *)((const int8_t *)base + off));
            return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), sc);
        }
        default:
            return _mm256_loadu_ps((const float *)base + off);
    }
}

// Element `off` of the weights as f32 (int8 times s): the scalar tail of w8_load.
MC_INLINE float w1_load(const void *base, int dtype, int64_t off, float s) {
    return dtype == MC_DTYPE_I8 ? (float)((const int8_t *)base)[off] * s : mc_load_f32(base, dtype, off);
}

MC_AVX2 MC_INLINE float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

enum { D256_R = 4, D256_MB = 2 }; // 8 accumulators + 4 weight vectors + 1 x vector fit the 16 registers

// pf (or NULL): R later weight rows to prefetch meanwhile (as in d512_block).
MC_AVX2 MC_INLINE void d256_block(float *y, const float *x, int64_t ldx, const mc_weight *w, const float *bias,
                                  int64_t N, int64_t K, int64_t n0, int64_t m0, const char *pf, int R, int MB,
                                  int dtype) {
    const int64_t esz = mc_dtype_size(dtype);
    __m256 acc[D256_R][D256_MB];
    float tail[D256_R][D256_MB];
    const float *xr[D256_MB];
#pragma GCC unroll 4
    for (int m = 0; m < MB; m++) {
        xr[m] = x + (m0 + m) * ldx;
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            acc[r][m] = _mm256_setzero_ps();
            tail[r][m] = 0.0f;
        }
    }
    const int64_t group = dtype == MC_DTYPE_I8 ? group_of(w, K) : K;
    const int64_t n_groups = (K + group - 1) / group;
    for (int64_t g = 0; g < n_groups; g++) {
        float s[D256_R];
        __m256 sc[D256_R];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            s[r] = dtype == MC_DTYPE_I8 ? w->scales[(n0 + r) * n_groups + g] : 1.0f;
            sc[r] = _mm256_set1_ps(s[r]);
        }
        const int64_t k1 = min_i64(K, (g + 1) * group);
        int64_t k = g * group;
        for (; k + 8 <= k1; k += 8) {
            if (pf != NULL && (k & 15) == 0) { // a line per row per 16 f32 (more often for smaller dtypes: harmless)
#pragma GCC unroll 4
                for (int r = 0; r < R; r++) {
                    _mm_prefetch(pf + (r * K + k) * esz, _MM_HINT_T0);
                }
            }
            __m256 wv[D256_R];
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                wv[r] = w8_load(w->data, dtype, (n0 + r) * K + k, sc[r]);
            }
#pragma GCC unroll 4
            for (int m = 0; m < MB; m++) {
                const __m256 xv = _mm256_loadu_ps(xr[m] + k);
#pragma GCC unroll 4
                for (int r = 0; r < R; r++) {
                    acc[r][m] = _mm256_fmadd_ps(wv[r], xv, acc[r][m]);
                }
            }
        }
        for (; k < k1; k++) {
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                const float wk = w1_load(w->data, dtype, (n0 + r) * K + k, s[r]);
#pragma GCC unroll 4
                for (int m = 0; m < MB; m++) {
                    tail[r][m] += wk * xr[m][k];
                }
            }
        }
    }
#pragma GCC unroll 4
    for (int m = 0; m < MB; m++) {
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            y[(m0 + m) * N + n0 + r] = hsum256(acc[r][m]) + tail[r][m] + (bias != NULL ? bias[n0 + r] : 0.0f);
        }
    }
}

// M = 1: one weight row after another (a single prefetched stream), as gemv512_rows; int8 needs groups of whole
// vectors (group % 8 == 0) for its running scale, else it takes the dot block.
MC_AVX2 MC_INLINE void gemv256_rows(float *y, const float *x, const mc_weight *w, const float *bias, int64_t K,
                                    int64_t lo, int64_t hi, int dtype) {
    const int64_t esz = mc_dtype_size(dtype);
    const char *base = w->data;
    const int64_t end = hi * K * esz;
    const int64_t group = dtype == MC_DTYPE_I8 ? group_of(w, K) : K, vpg = group / 8;
    const int64_t n_groups = (K + group - 1) / group;
    for (int64_t n = lo; n < hi; n++) {
        const int64_t row = n * K;
        const float *sp = dtype == MC_DTYPE_I8 ? w->scales + n * n_groups : NULL;
        int64_t left = vpg;
        __m256 sc = _mm256_set1_ps(sp != NULL ? *sp : 1.0f);
        __m256 a[4] = { _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps() };
        int64_t k = 0;
        for (; k + 32 <= K; k += 32) {
            const int64_t pf = (row + k) * esz + GEMV512_PF_BYTES;
            if (pf < end && ((row + k) * esz & 63) < 32 * esz) { // once per cache line
                _mm_prefetch(base + pf, _MM_HINT_T0);
            }
#pragma GCC unroll 4
            for (int v = 0; v < 4; v++) {
                a[v] = _mm256_fmadd_ps(w8_load(base, dtype, row + k + 8 * v, sc), _mm256_loadu_ps(x + k + 8 * v), a[v]);
                if (dtype == MC_DTYPE_I8 && --left == 0 && k + 8 * v + 8 < K) { // next vector: next group
                    left = vpg;
                    sc = _mm256_set1_ps(*++sp);
                }
            }
        }
        for (; k + 8 <= K; k += 8) {
            a[0] = _mm256_fmadd_ps(w8_load(base, dtype, row + k, sc), _mm256_loadu_ps(x + k), a[0]);
            if (dtype == MC_DTYPE_I8 && --left == 0 && k + 8 < K) {
                left = vpg;
                sc = _mm256_set1_ps(*++sp);
            }
        }
        float t = 0.0f; // K % 8 tail, in the last group
        for (; k < K; k++) {
            t += w1_load(base, dtype, row + k, sp != NULL ? *sp : 1.0f) * x[k];
        }
        const __m256 sum = _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3]));
        y[n] = hsum256(sum) + t + (bias != NULL ? bias[n] : 0.0f);
    }
}

MC_AVX2 MC_INLINE void d256_rows(float *y, const float *x, int64_t ldx, const mc_weight *w, const float *bias,
                                 int64_t M, int64_t N, int64_t K, int64_t lo, int64_t hi, int dtype) {
    if (M == 1 && (dtype != MC_DTYPE_I8 || group_of(w, K) % 8 == 0)) {
        gemv256_rows(y, x, w, bias, K, lo, hi, dtype);
        return;
    }
    const int64_t row_bytes = K * mc_dtype_size(dtype);
    const int64_t pf_blocks = (GEMV512_PF_BYTES + D256_R * row_bytes - 1) / (D256_R * row_bytes);
    int64_t n = lo;
    for (; n + D256_R <= hi; n += D256_R) {
        const int64_t pn = n + pf_blocks * D256_R;
        const char *pf = pn + D256_R <= hi ? (const char *)w->data + pn * row_bytes : NULL;
        int64_t m = 0;
        for (; m + D256_MB <= M; m += D256_MB) {
            d256_block(y, x, ldx, w, bias, N, K, n, m, m == 0 ? pf : NULL, D256_R, D256_MB, dtype);
        }
        if (m < M) {
            d256_block(y, x, ldx, w, bias, N, K, n, m, m == 0 ? pf : NULL, D256_R, 1, dtype);
        }
    }
    for (; n < hi; n++) {
        int64_t m = 0;
        for (; m + D256_MB <= M; m += D256_MB) {
            d256_block(y, x, ldx, w, bias, N, K, n, m, NULL, 1, D256_MB, dtype);
        }
        if (m < M) {
            d256_block(y, x, ldx, w, bias, N, K, n, m, NULL, 1, 1, dtype);
        }
    }
}

MC_AVX2 static void d256_rows_f32(float *y, const float *x, int64_t ldx, const mc_weight *w, const float *bias,
                                  int64_t M, int64_t N, int64_t K, int64_t lo, int64_t hi) {
    d256_rows(y, x, ldx, w, bias, M, N, K, lo, hi, MC_DTYPE_F32);
}

MC_AVX2 static void d256_rows_f16(float *y, const float *x, int64_t ldx, const mc_weight *w, const float *bias,
                                  int64_t M, int64_t N, int64_t K, int64_t lo, int64_t hi) {
    d256_rows(y, x, ldx, w, bias, M, N, K, lo, hi, MC_DTYPE_F16);
}

MC_AVX2 static void d256_rows_bf16(float *y, const float *x, int64_t ldx, const mc_weight *w, const float *bias,
                                   int64_t M, int64_t N, int64_t K, int64_t lo, int64_t hi) {
    d256_rows(y, x, ldx, w, bias, M, N, K, lo, hi, MC_DTYPE_BF16);
}

MC_AVX2 static void d256_rows_i8(float *y, const float *x, int64_t ldx, const mc_weight *w, const float *bias,
                                 int64_t M, int64_t N, int64_t K, int64_t lo, int64_t hi) {
    d256_rows(y, x, ldx, w, bias, M, N, K, lo, hi, MC_DTYPE_I8);
}

MC_AVX2 static void d256_dispatch(float *y, const float *x, int64_t ldx, const mc_weight *w, const float *bias,
                                  int64_t M, int64_t N, int64_t K, int64_t lo, int64_t hi) {
    switch (w->dtype) {
        case MC_DTYPE_F16:
            d256_rows_f16(y, x, ldx, w, bias, M, N, K, lo, hi);
            break;
        case MC_DTYPE_BF16:
            d256_rows_bf16(y, x, ldx, w, bias, M, N, K, lo, hi);
            break;
        case MC_DTYPE_I8:
            d256_rows_i8(y, x, ldx, w, bias, M, N, K, lo, hi);
            break;
        default:
            d256_rows_f32(y, x, ldx, w, bias, M, N, K, lo, hi);
            break;
    }
}

enum { G256_MR = 16, G256_NR = 6 }; // 2 vectors of x rows × 6 weight rows = 12 accumulators

MC_AVX2 MC_INLINE void g256_convert(float *dst, const mc_weight *w, int64_t n0, int64_t nr, int64_t K, int dtype) {
    const int64_t group = dtype == MC_DTYPE_I8 ? group_of(w, K) : K;
    const int64_t n_groups = (K + group - 1) / group;
    for (int64_t j = 0; j < nr; j++) {
        float *d = dst + j * K;
        for (int64_t g = 0; g < n_groups; g++) {
            const float s = dtype == MC_DTYPE_I8 ? w->scales[(n0 + j) * n_groups + g] : 1.0f;
            const __m256 sc = _mm256_set1_ps(s);
            const int64_t k1 = min_i64(K, (g + 1) * group);
            int64_t k = g * group;
            for (; k + 8 <= k1; k += 8) {
                _mm256_storeu_ps(d + k, w8_load(w->data, dtype, (n0 + j) * K + k, sc));
            }
            for (; k < k1; k++) {
                d[k] = w1_load(w->data, dtype, (n0 + j) * K + k, s);
            }
        }
    }
    memset(dst + nr * K, 0, (size_t)((G256_NR - nr) * K) * sizeof(float));
}

MC_AVX2 static void g256_convert_any(float *dst, const mc_weight *w, int64_t n0, int64_t nr, int64_t K) {
    switch (w->dtype) {
        case MC_DTYPE_F16:
            g256_convert(dst, w, n0, nr, K, MC_DTYPE_F16);
            break;
        case MC_DTYPE_BF16:
            g256_convert(dst, w, n0, nr, K, MC_DTYPE_BF16);
            break;
        case MC_DTYPE_I8:
            g256_convert(dst, w, n0, nr, K, MC_DTYPE_I8);
            break;
        default:
            g256_convert(dst, w, n0, nr, K, MC_DTYPE_F32);
            break;
    }
}

MC_AVX2 static void g256_tile(float *y, int64_t N, const float *bias, const float *xp, const float *wr, int64_t ldw,
                              int64_t K, int64_t M, int64_t m0, int64_t n0, int64_t nr) {
    __m256 c0[G256_NR], c1[G256_NR];
#pragma GCC unroll 6
    for (int j = 0; j < G256_NR; j++) {
        c0[j] = _mm256_setzero_ps();
        c1[j] = _mm256_setzero_ps();
    }
    for (int64_t k = 0; k < K; k++) {
        const __m256 a0 = _mm256_load_ps(xp + k * G256_MR);
        const __m256 a1 = _mm256_load_ps(xp + k * G256_MR + 8);
#pragma GCC unroll 6
        for (int j = 0; j < G256_NR; j++) {
            const __m256 b = _mm256_broadcast_ss(wr + j * ldw + k);
            c0[j] = _mm256_fmadd_ps(a0, b, c0[j]);
            c1[j] = _mm256_fmadd_ps(a1, b, c1[j]);
        }
    }
    _Alignas(32) float t[G256_NR][G256_MR];
#pragma GCC unroll 6
    for (int j = 0; j < G256_NR; j++) {
        _mm256_store_ps(t[j], c0[j]);
        _mm256_store_ps(t[j] + 8, c1[j]);
    }
    const int64_t mn = min_i64(G256_MR, M - m0);
    for (int64_t i = 0; i < mn; i++) {
        float *yr = y + (m0 + i) * N + n0;
        for (int64_t j = 0; j < nr; j++) {
            yr[j] = t[j][i] + (bias != NULL ? bias[n0 + j] : 0.0f);
        }
    }
}

// mr: the panel height, G256_MR (the tile kernel's).
MC_AVX2 static void g256_rows(float *y, const float *xp, int64_t mr, const mc_weight *w, const float *bias, int64_t M,
                              int64_t N, int64_t K, int64_t lo, int64_t hi, float *wbuf) {
    for (int64_t n0 = lo; n0 < hi; n0 += G256_NR) {
        const int64_t nr = min_i64(G256_NR, hi - n0);
        const float *wr = wbuf;
        if (w->dtype == MC_DTYPE_F32 && nr == G256_NR) {
            wr = (const float *)w->data + n0 * K;
        } else {
            g256_convert_any(wbuf, w, n0, nr, K);
        }
        for (int64_t m0 = 0; m0 < M; m0 += mr) {
            g256_tile(y, N, bias, xp + m0 * K, wr, K, K, M, m0, n0, nr);
        }
    }
}

void mc_cpu_matmul_avx2(const mc_exec *ex, float *y, const float *x, int64_t ldx, const mc_weight *w, const float *bias,
                        int64_t M, int64_t N, int64_t K) {
    if (M <= 0 || N <= 0) {
        return;
    }
    if (K <= 0) {
        fill_bias(y, bias, M, N);
        return;
    }
    if (split_rows(ex, mc_cpu_matmul_avx2, y, x, ldx, w, bias, M, N, K)) {
        return;
    }
    if (M < GEMM_MIN_M || !run_gemm(ex, g256_rows, G256_MR, G256_NR, y, x, ldx, w, bias, M, N, K)) {
        run_dot(ex, d256_dispatch, y, x, ldx, w, bias, M, N, K);
    }
}

#endif // __x86_64__
