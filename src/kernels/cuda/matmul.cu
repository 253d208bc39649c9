// y[M, N] = x[M, K] · Wᵀ (+ bias) on the device. Which shapes go where:
// - small M (decode), any dtype, and int8 at every M: our own kernel, one warp per output column, the weight row
//   streamed once per pass of up to GEMV_ROWS rows of x (from L2 after the first pass) and dequantised in registers
//   (f32 accumulation). "Small" is gemv_rows(): 32 rows for 16-bit weights in MC_MATH_F32, where cuBLAS would take
//   five launches (split, three GEMMs, scales), else GEMV_ROWS. Measured on an H100 (bf16 weights, decode steps at
//   batch 16): f32 products 8,751 tokens/s with 32 GEMV rows vs 7,292 through cuBLAS; bf16 products (one GEMM)
//   12,691 through cuBLAS vs 10,195 with GEMV passes. MAMBAC_GEMV_ROWS overrides it, for such benchmarks. Int8
//   prefill re-reads each weight row once per GEMV_ROWS rows: correct, not yet fast.
// - f32 weights, larger M: cuBLAS in ex->math's mode (mc_cuda_gemm_f32): MC_MATH_F32 splits both operands into
//   three TF32 terms (near f32's accuracy, on tensor cores) where no side is skinny, else cublasSgemm; TF32 lets the
//   tensor cores round the operands; BF16 rounds both operands to bf16 copies first (cuBLAS runs f32 operands under
//   FAST_16BF with TF32-rate kernels) where no side is skinny.
// - f16/bf16 weights, larger M: cuBLAS has no f32 × 16-bit product, and rounding x to the weight's type once costs
//   2^-9 (bf16) of every activation, ten times the fixtures' 1e-4 bound on logits. So x is split into terms of the
//   weight's type, x·p = t0 + t1 (+ t2), p a power of two per row that keeps f16 terms inside its range, and
//   cublasGemmEx (f32 accumulation, f32 output) runs once per term with beta = 1: bf16 takes 3 terms (24 bits of
//   x), f16 2 terms (22 bits), so the product is an f32 product up to f32 rounding; a last pass scales rows by 1/p
//   and adds the bias. The weights are read once per term (2–3× the tensor-core work; still far below f32 SIMT).
//   Under MC_MATH_BF16 x is one term, rounded once as bf16 autocast rounds activations (with bf16 weights unscaled:
//   bf16 has f32's range, so one conversion and one GEMM, plus the bias pass when there is a bias).
// The M ≤ GEMV_ROWS kernel is exact f32 in every math mode: the modes permit rounding, they do not require it.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <string.h>

#include "kernels/cuda/common.cuh"

extern "C" {
#include "kernels/dtype.h"
}

#define GEMV_ROWS 8     // rows of x per pass of the weight: registers per thread bound it
#define GEMV_WARPS 8    // output columns per block

static int64_t gemv_rows(const mc_exec *ex, const mc_weight *w) {
    static const int64_t forced = [] {
        const char *v = getenv("MAMBAC_GEMV_ROWS");
        const long long n = v != nullptr ? atoll(v) : 0;
        return (int64_t)(n >= 1 && n <= 4096 ? n : 0);
    }();
    if (forced > 0) {
        return forced;
    }
    const bool split3 = (w->dtype == MC_DTYPE_BF16 || w->dtype == MC_DTYPE_F16) && ex->math == MC_MATH_F32;
    return split3 ? 32 : GEMV_ROWS;
}

static __device__ __forceinline__ float to_f32(float v) {
    return v;
}

static __device__ __forceinline__ float to_f32(__half v) {
    return __half2float(v);
}

static __device__ __forceinline__ float to_f32(__nv_bfloat16 v) {
    return __bfloat162float(v);
}

static __device__ __forceinline__ float to_f32(int8_t v) {
    return (float)v;
}

// VEC consecutive elements of w (16 bytes when VEC > 1) as f32.
template <typename WT, int VEC>
static __device__ __forceinline__ void load_w(float *out, const WT *p) {
    if constexpr (VEC == 1) {
        out[0] = to_f32(*p);
    } else {
        static_assert(VEC * sizeof(WT) == 16, "vector loads are 16 bytes");
        uint4 raw = __ldg(reinterpret_cast<const uint4 *>(p));
        const WT *e = reinterpret_cast<const WT *>(&raw);
#pragma unroll
        for (int i = 0; i < VEC; i++) {
            out[i] = to_f32(e[i]);
        }
    }
}

template <int VEC>
static __device__ __forceinline__ void load_x(float *out, const float *p) {
    if constexpr (VEC == 1) {
        out[0] = *p;
    } else {
#pragma unroll
        for (int i = 0; i < VEC; i += 4) {
            float4 v = *reinterpret_cast<const float4 *>(p + i);
            out[i] = v.x;
            out[i + 1] = v.y;
            out[i + 2] = v.z;
            out[i + 3] = v.w;
        }
    }
}

// One warp per output column n, rows [row0, row0 + rows) of x (blockIdx.y picks the pass). Lanes stride K by
// 32·VEC; the int8 group scale is applied per VEC-chunk (VEC divides the group when VEC > 1).
template <typename WT, int VEC>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
    gemv_kernel(float *__restrict__ y, const float *__restrict__ x, int64_t ldx, const WT *__restrict__ w,
                const float *__restrict__ scales, int64_t group, const float *__restrict__ bias, int64_t M, int64_t N,
                int64_t K) {
    mc_pdl_wait();
    mc_pdl_trigger();
    const int lane = threadIdx.x & 31;
    const int64_t n = (int64_t)blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    const int64_t row0 = (int64_t)blockIdx.y * GEMV_ROWS;
    if (n >= N) {
        return;
    }
    const int rows = (int)(M - row0 < GEMV_ROWS ? M - row0 : GEMV_ROWS);
    const WT *wn = w + n * K;
    const int64_t n_groups = scales != nullptr ? (K + group - 1) / group : 0;
    float acc[GEMV_ROWS];
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++) {
        acc[r] = 0.0f;
    }
    for (int64_t k = (int64_t)lane * VEC; k < K; k += 32 * VEC) {
        float wv[VEC];
        load_w<WT, VEC>(wv, wn + k);
        if (scales != nullptr) {
            if constexpr (VEC == 1) {
                wv[0] *= scales[n * n_groups + k / group];
            } else {
                const float s = scales[n * n_groups + k / group];
#pragma unroll
                for (int i = 0; i < VEC; i++) {
                    wv[i] *= s;
                }
            }
        }
#pragma unroll
        for (int r = 0; r < GEMV_ROWS; r++) {
            if (r < rows) {
                float xv[VEC];
                load_x<VEC>(xv, x + (row0 + r) * ldx + k);
#pragma unroll
                for (int i = 0; i < VEC; i++) {
                    acc[r] = fmaf(wv[i], xv[i], acc[r]);
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; r++) {
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) {
            acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], off);
        }
    }
    if (lane == 0) {
        const float b = bias != nullptr ? bias[n] : 0.0f;
#pragma unroll
        for (int r = 0; r < GEMV_ROWS; r++) {
            if (r < rows) {
                y[(row0 + r) * N + n] = acc[r] + b;
            }
        }
    }
}

template <typename WT>
static mc_status gemv(const mc_exec *ex, float *y, const float *x, int64_t ldx, const mc_weight *w, const float *bias,
                      int64_t M, int64_t N, int64_t K) {
    constexpr int VEC = (int)(16 / sizeof(WT));
    const WT *wd = (const WT *)w->data;
    // 16-byte loads need every weight row, every x row and the group edges on 16-byte boundaries.
    const bool vec = K % VEC == 0 && (uintptr_t)wd % 16 == 0 && (uintptr_t)x % 16 == 0 && ldx % 4 == 0 &&
                     (w->scales == nullptr || w->group % VEC == 0);
    const int64_t passes = (M + GEMV_ROWS - 1) / GEMV_ROWS;
    if (passes > 65535) { // grid.y
        return mc_fail(mc_cuda_err(ex), MC_ERR_UNSUPPORTED, "cuda matmul: %lld rows in one call (at most %d)",
                       (long long)M, 65535 * GEMV_ROWS);
    }
    dim3 grid(mc_cuda_blocks(N, GEMV_WARPS), (unsigned)passes);
    cudaStream_t s = mc_cuda_ctx_of(ex)->stream;
    if (vec) {
        mc_cuda_launch(gemv_kernel<WT, VEC>, grid, dim3(GEMV_WARPS * 32), 0, s, y, x, ldx, wd, w->scales, w->group, bias,
                       M, N, K);
    } else {
        mc_cuda_launch(gemv_kernel<WT, 1>, grid, dim3(GEMV_WARPS * 32), 0, s, y, x, ldx, wd, w->scales, w->group, bias, M,
                       N, K);
    }
    return mc_cuda_launched("matmul (gemv)", ex);
}

template <typename T>
static __device__ __forceinline__ T from_f32(float v);

template <>
__device__ __forceinline__ __half from_f32<__half>(float v) {
    return __float2half_rn(v);
}

template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
    return __float2bfloat16_rn(v);
}

#define SPLIT_THREADS 256

// One block per row m of x (ldx apart): p = 2^(14 − e) with max|x[m, :]| < 2^e, so x·p < 2^14 fits f16 with its
// full precision; terms[s][m, :] (packed [M, K] each) are the successive roundings of the remainder of x·p.
// inv_p[m] = 1/p (exact: a power of two).
template <typename T, int TERMS>
__global__ void __launch_bounds__(SPLIT_THREADS)
    split_rows_kernel(T *__restrict__ terms, float *__restrict__ inv_p, const float *__restrict__ x, int64_t ldx,
                      int64_t M, int64_t K) {
    __shared__ float partial[SPLIT_THREADS / 32];
    const int64_t m = blockIdx.x;
    const float *xm = x + m * ldx;
    if (inv_p == nullptr) { // one bf16 term, unscaled
        for (int64_t k = threadIdx.x; k < K; k += SPLIT_THREADS) {
            terms[m * K + k] = from_f32<T>(xm[k]);
        }
        return;
    }
    float amax = 0.0f;
    for (int64_t k = threadIdx.x; k < K; k += SPLIT_THREADS) {
        amax = fmaxf(amax, fabsf(xm[k]));
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
    }
    if ((threadIdx.x & 31) == 0) {
        partial[threadIdx.x >> 5] = amax;
    }
    __syncthreads();
    amax = 0.0f;
#pragma unroll
    for (int i = 0; i < SPLIT_THREADS / 32; i++) {
        amax = fmaxf(amax, partial[i]);
    }
    int e = 0;
    if (amax > 0.0f && isfinite(amax)) {
        frexpf(amax, &e); // amax in [2^(e−1), 2^e)
        e = e < -100 ? -100 : e; // p stays finite for rows of (sub)normal dust
    }
    const float p = ldexpf(1.0f, 14 - e);
    if (threadIdx.x == 0) {
        inv_p[m] = ldexpf(1.0f, e - 14);
    }
    for (int64_t k = threadIdx.x; k < K; k += SPLIT_THREADS) {
        float r = xm[k] * p;
#pragma unroll
        for (int s = 0; s < TERMS; s++) {
            const T t = from_f32<T>(r);
            terms[(s * M + m) * K + k] = t;
            r -= to_f32(t);
        }
    }
}

// y[m, :] = y[m, :] · inv_p[m] (+ bias)
__global__ void finish_rows_kernel(float *__restrict__ y, const float *__restrict__ inv_p,
                                   const float *__restrict__ bias, int64_t M, int64_t N) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < M * N) {
        const float s = inv_p != nullptr ? inv_p[i / N] : 1.0f;
        y[i] = y[i] * s + (bias != nullptr ? bias[i % N] : 0.0f);
    }
}

template <typename T, int TERMS>
static void split_launch(void *terms, float *inv_p, const float *x, int64_t ldx, int64_t M, int64_t K,
                         cudaStream_t s) {
    split_rows_kernel<T, TERMS><<<(unsigned)M, SPLIT_THREADS, 0, s>>>((T *)terms, inv_p, x, ldx, M, K);
}

int mc_cuda_split_terms(int dtype, int math) {
    if (math == MC_MATH_BF16) {
        return 1;
    }
    return dtype == MC_DTYPE_BF16 ? 3 : 2;
}

mc_status mc_cuda_split_rows(const mc_exec *ex, void *terms, float *inv_p, const float *x, int64_t ldx, int64_t M,
                             int64_t K, int dtype, int n_terms) {
    cudaStream_t s = mc_cuda_ctx_of(ex)->stream;
    const bool bf16 = dtype == MC_DTYPE_BF16;
    if (n_terms == 1 && bf16) {
        split_launch<__nv_bfloat16, 1>(terms, inv_p, x, ldx, M, K, s);
    } else if (n_terms == 1) {
        split_launch<__half, 1>(terms, inv_p, x, ldx, M, K, s);
    } else if (bf16) {
        split_launch<__nv_bfloat16, 3>(terms, inv_p, x, ldx, M, K, s);
    } else {
        split_launch<__half, 2>(terms, inv_p, x, ldx, M, K, s);
    }
    return mc_cuda_launched("matmul (split x)", ex);
}

static mc_status gemm_split(const mc_exec *ex, float *y, const float *x, int64_t ldx, const mc_weight *w, int64_t M,
                            int64_t N, int64_t K, float **inv_p) {
    mc_cuda_ctx *c = mc_cuda_ctx_of(ex);
    const int n_terms = mc_cuda_split_terms(w->dtype, ex->math);
    const cudaDataType_t type = w->dtype == MC_DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_16F;
    const size_t term_bytes = (size_t)(M * K) * 2, scale_off = (n_terms * term_bytes + 255) / 256 * 256;
    mc_status st = mc_cuda_work_reserve(ex, scale_off + (size_t)M * sizeof(float));
    if (st != MC_OK) {
        return st;
    }
    char *terms = (char *)c->work;
    const bool unscaled = n_terms == 1 && w->dtype == MC_DTYPE_BF16;
    *inv_p = unscaled ? nullptr : (float *)((char *)c->work + scale_off);
    st = mc_cuda_split_rows(ex, terms, *inv_p, x, ldx, M, K, w->dtype, n_terms);
    const float one = 1.0f, zero = 0.0f;
    for (int s = 0; st == MC_OK && s < n_terms; s++) {
        st = mc_cublas_status(cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)M, (int)K, &one, w->data,
                                           type, (int)K, terms + (size_t)s * term_bytes, type, (int)K,
                                           s == 0 ? &zero : &one, y, CUDA_R_32F, (int)N, CUBLAS_COMPUTE_32F,
                                           CUBLAS_GEMM_DEFAULT),
                              "gemm (16-bit weights)", ex);
    }
    return st;
}

// At most this many operand elements are converted at once under MC_MATH_BF16, a quarter of it for the
// three-term TF32 copies (12 bytes an element against 2); MAMBAC_CVT_ELEMS overrides both. Larger products go in
// pieces along m or n when that size is the largest and the other operand fits in half, else along k (beta = 1
// after the first piece). The pieces keep the copies at 64 MiB (bf16) and 96 MiB (TF32 terms) while the training
// head's products (a 256 MiB logit chunk against the [V, H] embedding) stay a few large GEMMs.
#define CVT_ELEMS ((int64_t)1 << 25)
#define CVT_MIN_SIDE 128 // m, n and k at least this for a converted product (mc_cuda_gemm_f32)

// How a converted product rounds its operands: one bf16 copy each (MC_MATH_BF16, as autocast rounds them), or
// three TF32 terms each (MC_MATH_F32): x = hi + lo with hi = tf32(x) and lo = tf32(x − hi), and the product
// hi_a·hi_b + lo_a·hi_b + hi_a·lo_b runs as one TF32 GEMM over k tripled (A's copy [hi | lo | hi] along k, B's
// [hi | hi | lo]). What it leaves out, lo_a·lo_b and lo's own rounding, is below 2^-21 of each term; the tensor
// cores' f32 sums round less carefully than SGEMM's: on an H100 the worst error seen in tests/test_cuda_bwd.c
// was 9.7e-6 of the largest output (SGEMM 1.1e-6, one TF32 term 2.7e-4), at three times a TF32 product's work
// (CUTLASS's "3xTF32"); an f32 LoRA step at 4 × 1024 took 72.7 ms against 85.6 ms with SGEMM (bench/RESULTS.md).
enum cvt_kind { CVT_BF16, CVT_TF32X3 };

// Bytes a converted copy takes per operand element: three f32 terms, or one bf16.
static size_t cvt_elem_bytes(cvt_kind kind) {
    return kind == CVT_TF32X3 ? 3 * sizeof(float) : sizeof(__nv_bfloat16);
}

// The most operand elements a converted product of this kind converts at once.
static int64_t cvt_cap(cvt_kind kind) {
    const char *v = getenv("MAMBAC_CVT_ELEMS"); // a smaller cap, for the tests of the pieces
    if (v != nullptr && atoll(v) > 0) {
        return (int64_t)atoll(v);
    }
    return kind == CVT_TF32X3 ? CVT_ELEMS / 4 : CVT_ELEMS;
}

// Round to nearest (ties away) to TF32's 10 mantissa bits; the result is an f32 whose low 13 bits are 0.
static __device__ __forceinline__ float tf32_rna(float x) {
    uint32_t r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return __uint_as_float(r);
}

// For n_vec vectors of len floats (src, ld apart): element j of vector v goes to dst[s·bs + v·vs + j] for the three
// terms s, lo in term lo_at and hi in the other two.
__global__ void to_tf32x3_kernel(float *__restrict__ dst, const float *__restrict__ src, int64_t ld, int64_t n_vec,
                                 int64_t len, int64_t bs, int64_t vs, int lo_at) {
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n_vec * len; i += stride) {
        const int64_t v = i / len, j = i % len;
        const float x = src[v * ld + j], hi = tf32_rna(x), lo = tf32_rna(x - hi);
        float *d = dst + v * vs + j;
        d[0] = lo_at == 0 ? lo : hi;
        d[bs] = lo_at == 1 ? lo : hi;
        d[2 * bs] = lo_at == 2 ? lo : hi;
    }
}

// dst[v, i] = bf16(src[v · ld + i]) for n_vec vectors of len floats (dst packed, len apart); four at a time when
// rows and start are 16-byte aligned.
__global__ void to_bf16_kernel(__nv_bfloat16 *__restrict__ dst, const float *__restrict__ src, int64_t ld,
                               int64_t n_vec, int64_t len, bool vec4) {
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    if (vec4) {
        const int64_t q = len / 4;
        for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n_vec * q; i += stride) {
            const int64_t v = i / q, j = (i % q) * 4;
            const float4 x = *reinterpret_cast<const float4 *>(src + v * ld + j);
            __nv_bfloat162 *d = reinterpret_cast<__nv_bfloat162 *>(dst + v * len + j);
            d[0] = __floats2bfloat162_rn(x.x, x.y);
            d[1] = __floats2bfloat162_rn(x.z, x.w);
        }
        return;
    }
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n_vec * len; i += stride) {
        dst[i] = __float2bfloat16_rn(src[(i / len) * ld + i % len]);
    }
}

// One operand piece (n_vec vectors of len floats, ld apart) into its packed copy at dst. The copy keeps the
// operand's layout; with TF32 terms the three terms tile k: side by side in each vector when the vectors run
// along k (k_in_vec), else as three consecutive blocks of vectors.
static mc_status convert(const mc_exec *ex, cvt_kind kind, void *dst, const float *src, int64_t ld, int64_t n_vec,
                         int64_t len, bool k_in_vec, int lo_at) {
    cudaStream_t s = mc_cuda_ctx_of(ex)->stream;
    if (kind == CVT_TF32X3) {
        const int64_t blocks = (n_vec * len + 255) / 256;
        to_tf32x3_kernel<<<(unsigned)(blocks < 65536 ? blocks : 65536), 256, 0, s>>>(
            (float *)dst, src, ld, n_vec, len, k_in_vec ? len : n_vec * len, k_in_vec ? 3 * len : len, lo_at);
        return mc_cuda_launched("gemm (split operands into TF32 terms)", ex);
    }
    const bool vec4 = len % 4 == 0 && ld % 4 == 0 && (uintptr_t)src % 16 == 0;
    const int64_t items = vec4 ? n_vec * (len / 4) : n_vec * len;
    const int64_t blocks = (items + 255) / 256;
    to_bf16_kernel<<<(unsigned)(blocks < 65536 ? blocks : 65536), 256, 0, s>>>((__nv_bfloat16 *)dst, src, ld, n_vec,
                                                                               len, vec4);
    return mc_cuda_launched("gemm (round operands to bf16)", ex);
}

// Ranges the caller froze (ops.h's freeze) may keep their converted copies across products, up to
// MAMBAC_CVT_CACHE_MB megabytes (read when a range is frozen; unset or 0: nothing is kept): a LoRA run converts each
// frozen weight once per layout instead of twice a step. A copy is made on the piece's first use (cudaMalloc, so
// not while a graph is recorded) and lives until exec_free.
extern "C" mc_status mc_cuda_freeze(const mc_exec *ex, const void *p, size_t bytes) {
    mc_cuda_ctx *c = mc_cuda_ctx_of(ex);
    const char *v = getenv("MAMBAC_CVT_CACHE_MB");
    const long long mb = v != nullptr ? atoll(v) : 0;
    c->kept_budget = mb > 0 ? (size_t)mb << 20 : 0;
    if (p == nullptr || bytes == 0 || c->kept_budget == 0) {
        return MC_OK;
    }
    mc_cuda_frozen *f = (mc_cuda_frozen *)realloc(c->frozen, (size_t)(c->n_frozen + 1) * sizeof(*f));
    if (f == nullptr) {
        return mc_fail(mc_cuda_err(ex), MC_ERR_NOMEM, "cuda freeze: out of memory");
    }
    c->frozen = f;
    c->frozen[c->n_frozen++] = { (const char *)p, bytes };
    return MC_OK;
}

// The kept copy of an operand piece (as convert() would write it), made now if its source lies in a frozen range
// and the budget has room; nullptr when it is not kept (*st says whether making it failed).
static const void *kept_copy(const mc_exec *ex, cvt_kind kind, const float *src, int64_t ld, int64_t n_vec,
                             int64_t len, bool k_in_vec, int lo_at, mc_status *st) {
    mc_cuda_ctx *c = mc_cuda_ctx_of(ex);
    *st = MC_OK;
    if (c->n_frozen == 0 || c->capturing) {
        return nullptr;
    }
    for (int i = 0; i < c->n_kept; i++) {
        const mc_cuda_kept *k = &c->kept[i];
        if (k->src == src && k->ld == ld && k->n_vec == n_vec && k->len == len && k->kind == kind &&
            k->lo_at == lo_at && k->k_in_vec == k_in_vec) {
            return k->copy;
        }
    }
    const char *lo = (const char *)src, *hi = (const char *)(src + (n_vec - 1) * ld + len);
    bool frozen = false;
    for (int i = 0; i < c->n_frozen && !frozen; i++) {
        frozen = lo >= c->frozen[i].p && hi <= c->frozen[i].p + c->frozen[i].bytes;
    }
    const size_t bytes = (size_t)(n_vec * len) * cvt_elem_bytes(kind);
    if (!frozen || c->kept_bytes + bytes > c->kept_budget) {
        return nullptr;
    }
    mc_cuda_kept *grown = (mc_cuda_kept *)realloc(c->kept, (size_t)(c->n_kept + 1) * sizeof(*grown));
    if (grown == nullptr) {
        *st = mc_fail(mc_cuda_err(ex), MC_ERR_NOMEM, "cuda: out of memory for a kept operand copy");
        return nullptr;
    }
    c->kept = grown;
    void *copy = nullptr;
    if (cudaMalloc(&copy, bytes) != cudaSuccess) {
        cudaGetLastError(); // out of device memory: this piece is converted each time instead
        return nullptr;
    }
    *st = convert(ex, kind, copy, src, ld, n_vec, len, k_in_vec, lo_at);
    if (*st != MC_OK) {
        cudaFree(copy);
        return nullptr;
    }
    c->kept[c->n_kept++] = { src, ld, n_vec, len, (int)kind, lo_at, k_in_vec, copy };
    c->kept_bytes += bytes;
    return copy;
}

// An operand piece for a product: its kept copy where there is one (kept_copy), else converted into dst; *use is
// where the product reads it.
static mc_status operand(const mc_exec *ex, cvt_kind kind, void *dst, const float *src, int64_t ld, int64_t n_vec,
                         int64_t len, bool k_in_vec, int lo_at, const void **use) {
    mc_status st = MC_OK;
    const void *kept = kept_copy(ex, kind, src, ld, n_vec, len, k_in_vec, lo_at, &st);
    if (st != MC_OK || kept != nullptr) {
        *use = kept;
        return st;
    }
    *use = dst;
    return convert(ex, kind, dst, src, ld, n_vec, len, k_in_vec, lo_at);
}

// The converted product: each piece's op(A) rows [m0, m0 + mc) and op(B) columns [n0, n0 + nc) over k in
// [k0, k0 + kc) converted into cvt (packed, op as given), one GemmEx into C.
static mc_status gemm_converted(const mc_exec *ex, cvt_kind kind, bool trans_a, bool trans_b, int64_t m, int64_t n,
                                int64_t k, const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                                float *c, int64_t ldc, const char *what) {
    const int64_t cap = cvt_cap(kind);
    int64_t mc = m, nc = n, kc = k; // piece sizes; a split size is rounded down to a tile multiple
    if (m * k + k * n > cap) {
        if (m >= n && m > k && k * n <= cap / 2) {
            mc = (cap - k * n) / k;
            mc = mc > 128 ? mc / 128 * 128 : mc;
        } else if (n > m && n > k && m * k <= cap / 2) {
            nc = (cap - m * k) / k;
            nc = nc > 128 ? nc / 128 * 128 : nc;
        } else {
            kc = cap / (m + n);
            kc = kc > 64 ? kc / 64 * 64 : kc < 1 ? 1 : kc;
        }
    }
    const int terms = kind == CVT_TF32X3 ? 3 : 1;
    const size_t elem = cvt_elem_bytes(kind);
    const size_t a_bytes = ((size_t)(mc * kc) * elem + 255) / 256 * 256;
    mc_status st = mc_cuda_cvt_reserve(ex, a_bytes + (size_t)(kc * nc) * elem);
    mc_cuda_ctx *cx = mc_cuda_ctx_of(ex);
    void *ac = cx->cvt, *bc = (char *)cx->cvt + a_bytes;
    const void *au = ac, *bu = bc; // what the GEMM reads: the converted pieces, or kept copies
    const cublasOperation_t ta = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, tb = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cudaDataType_t type = kind == CVT_TF32X3 ? CUDA_R_32F : CUDA_R_16BF;
    const cublasComputeType_t compute = kind == CVT_TF32X3 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    const float one = 1.0f;
    for (int64_t k0 = 0; k0 < k && st == MC_OK; k0 += kc) {
        const int64_t kp = k - k0 < kc ? k - k0 : kc, kt = terms * kp;
        const float *beta_p = k0 == 0 ? &beta : &one;
        for (int64_t n0 = 0; n0 < n && st == MC_OK; n0 += nc) {
            const int64_t np = n - n0 < nc ? n - n0 : nc;
            // op(B)[k0 + i, n0 + j]: B[(k0 + i) + (n0 + j)·ldb] stored as is, B[(n0 + j) + (k0 + i)·ldb] transposed
            st = trans_b ? operand(ex, kind, bc, b + n0 + k0 * ldb, ldb, kp, np, false, 2, &bu)
                         : operand(ex, kind, bc, b + k0 + n0 * ldb, ldb, np, kp, true, 2, &bu);
            for (int64_t m0 = 0; m0 < m && st == MC_OK; m0 += mc) {
                const int64_t mp = m - m0 < mc ? m - m0 : mc;
                if (mc < m || n0 == 0) { // when m is whole, A's piece is converted once for every n0
                    st = trans_a ? operand(ex, kind, ac, a + k0 + m0 * lda, lda, mp, kp, true, 1, &au)
                                 : operand(ex, kind, ac, a + m0 + k0 * lda, lda, kp, mp, false, 1, &au);
                }
                if (st == MC_OK) {
                    st = mc_cublas_status(cublasGemmEx(cx->blas, ta, tb, (int)mp, (int)np, (int)kt, &one, au, type,
                                                       (int)(trans_a ? kt : mp), bu, type, (int)(trans_b ? np : kt),
                                                       beta_p, c + m0 + n0 * ldc, CUDA_R_32F, (int)ldc, compute,
                                                       CUBLAS_GEMM_DEFAULT),
                                          what, ex);
                }
            }
        }
    }
    return st;
}

// dwᵀ[K, N] += x'[K, M]·dy'ᵀ and dxᵀ[K, M] (+)= W'[K, N]·dy'[N, M] (row-major as cuBLAS sees them) from one
// bf16 copy of each operand: x once, then W's rows and dy's columns in pieces n0.. that fit beside it, each piece
// rounded once and read by both products (apart, gemm_converted would round dy once per product).
mc_status mc_cuda_gemm_bwd_bf16(const mc_exec *ex, float *dx, int64_t lddx, bool accumulate, float *dw,
                                const float *dy, const float *x, int64_t ldx, const float *w, int64_t M, int64_t N,
                                int64_t K, bool *done) {
    const int64_t cap = cvt_cap(CVT_BF16);
    *done = false;
    if (ex->math != MC_MATH_BF16 || M < CVT_MIN_SIDE || N < CVT_MIN_SIDE || K < CVT_MIN_SIDE || M * K > cap / 2) {
        return MC_OK; // not this path: the caller runs the two products
    }
    int64_t np = (cap - M * K) / (M + K); // at least 64: M, K >= 128 and M·K <= cap / 2
    np = np > N ? N : np > 128 ? np / 128 * 128 : np;
    if (np < 1) {
        return MC_OK;
    }
    const size_t x_bytes = ((size_t)(M * K) * 2 + 255) / 256 * 256;
    const size_t dy_bytes = ((size_t)(M * np) * 2 + 255) / 256 * 256;
    mc_status st = mc_cuda_cvt_reserve(ex, x_bytes + dy_bytes + (size_t)(np * K) * 2);
    if (st != MC_OK) {
        return st;
    }
    mc_cuda_ctx *cx = mc_cuda_ctx_of(ex);
    __nv_bfloat16 *x16 = (__nv_bfloat16 *)cx->cvt, *dy16 = (__nv_bfloat16 *)((char *)cx->cvt + x_bytes);
    __nv_bfloat16 *w16 = (__nv_bfloat16 *)((char *)cx->cvt + x_bytes + dy_bytes);
    st = convert(ex, CVT_BF16, x16, x, ldx, M, K, true, 0); // [M][K]: x'[K, M], ld K
    const float one = 1.0f, zero = 0.0f;
    for (int64_t n0 = 0; n0 < N && st == MC_OK; n0 += np) {
        const int64_t p = N - n0 < np ? N - n0 : np;
        st = convert(ex, CVT_BF16, dy16, dy + n0, N, M, p, true, 0); // [M][p]: dy'_p[p, M], ld p
        if (st == MC_OK) {
            st = convert(ex, CVT_BF16, w16, w + n0 * K, K, p, K, true, 0); // [p][K]: W'_p[K, p], ld K
        }
        if (st == MC_OK) {
            st = mc_cublas_status(cublasGemmEx(cx->blas, CUBLAS_OP_N, CUBLAS_OP_T, (int)K, (int)p, (int)M, &one, x16,
                                               CUDA_R_16BF, (int)K, dy16, CUDA_R_16BF, (int)p, &one, dw + n0 * K,
                                               CUDA_R_32F, (int)K, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                                  "matmul_bwd (dw)", ex);
        }
        if (st == MC_OK) {
            st = mc_cublas_status(cublasGemmEx(cx->blas, CUBLAS_OP_N, CUBLAS_OP_N, (int)K, (int)M, (int)p, &one, w16,
                                               CUDA_R_16BF, (int)K, dy16, CUDA_R_16BF, (int)p,
                                               accumulate || n0 > 0 ? &one : &zero, dx, CUDA_R_32F, (int)lddx,
                                               CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                                  "matmul_bwd (dx)", ex);
        }
    }
    *done = st == MC_OK;
    return st;
}

mc_status mc_cuda_gemm_f32(const mc_exec *ex, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                           const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
                           int64_t ldc, const char *what) {
    bool done = false;
    const mc_status st = mc_cuda_gemm_skinny(ex, trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc, &done);
    if (st != MC_OK || done) {
        return st;
    }
    cublasHandle_t h = mc_cuda_ctx_of(ex)->blas;
    const cublasOperation_t ta = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, tb = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    const float one = 1.0f;
    // Converting the operands first pays where the product is compute-bound; a skinny one (decode's rows, a LoRA
    // rank) is bound by reading its operands once, which cuBLAS's SIMT or FAST_16BF kernels do in f32.
    const bool wide = m >= CVT_MIN_SIDE && n >= CVT_MIN_SIDE && k >= CVT_MIN_SIDE;
    if (ex->math == MC_MATH_BF16 && wide) {
        return gemm_converted(ex, CVT_BF16, trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc, what);
    }
    if (ex->math == MC_MATH_F32) {
        const char *v = getenv("MAMBAC_F32_GEMM"); // "sgemm": SIMT cublasSgemm at every size, for comparisons
        if (wide && (v == nullptr || strcmp(v, "sgemm") != 0)) {
            return gemm_converted(ex, CVT_TF32X3, trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc, what);
        }
        return mc_cublas_status(cublasSgemm(h, ta, tb, (int)m, (int)n, (int)k, &one, a, (int)lda, b, (int)ldb, &beta,
                                            c, (int)ldc),
                                what, ex);
    }
    return mc_cublas_status(cublasGemmEx(h, ta, tb, (int)m, (int)n, (int)k, &one, a, CUDA_R_32F, (int)lda, b,
                                         CUDA_R_32F, (int)ldb, &beta, c, CUDA_R_32F, (int)ldc,
                                         ex->math == MC_MATH_TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                                  : CUBLAS_COMPUTE_32F_FAST_16BF,
                                         CUBLAS_GEMM_DEFAULT),
                            what, ex);
}

// Row-major y[M, N] = x[M, K] · W[N, K]ᵀ is column-major yᵀ = W'ᵀ · xᵀ with W' the [K, N] column-major view of W.
static mc_status gemm_blas(const mc_exec *ex, float *y, const float *x, int64_t ldx, const mc_weight *w,
                           const float *bias, int64_t M, int64_t N, int64_t K) {
    mc_cuda_ctx *c = mc_cuda_ctx_of(ex);
    if (!mc_cuda_blas_sizes_ok(M, N, K, ldx)) {
        return mc_fail(mc_cuda_err(ex), MC_ERR_UNSUPPORTED, "cuda matmul: [%lld, %lld] x [%lld, %lld] exceeds cuBLAS' "
                       "int sizes", (long long)M, (long long)K, (long long)N, (long long)K);
    }
    float *inv_p = nullptr;
    mc_status st;
    if (w->dtype == MC_DTYPE_F32) {
        st = mc_cuda_gemm_f32(ex, true, false, N, M, K, (const float *)w->data, K, x, ldx, 0.0f, y, N, "sgemm");
    } else {
        st = gemm_split(ex, y, x, ldx, w, M, N, K, &inv_p);
    }
    if (st == MC_OK && (bias != nullptr || inv_p != nullptr)) {
        finish_rows_kernel<<<mc_cuda_blocks(M * N, 256), 256, 0, c->stream>>>(y, inv_p, bias, M, N);
        st = mc_cuda_launched("matmul (rows)", ex);
    }
    return st;
}

extern "C" mc_status mc_cuda_matmul(const mc_exec *ex, float *y, const float *x, int64_t ldx, const mc_weight *w,
                                    const float *bias, int64_t M, int64_t N, int64_t K) {
    if (M <= 0 || N <= 0) {
        return MC_OK;
    }
    if (w->dtype == MC_DTYPE_I8 || M <= gemv_rows(ex, w) || K == 0) {
        switch (w->dtype) {
            case MC_DTYPE_F32:
                return gemv<float>(ex, y, x, ldx, w, bias, M, N, K);
            case MC_DTYPE_F16:
                return gemv<__half>(ex, y, x, ldx, w, bias, M, N, K);
            case MC_DTYPE_BF16:
                return gemv<__nv_bfloat16>(ex, y, x, ldx, w, bias, M, N, K);
            case MC_DTYPE_I8:
                return gemv<int8_t>(ex, y, x, ldx, w, bias, M, N, K);
            default:
                return mc_fail(mc_cuda_err(ex), MC_ERR_INTERNAL, "cuda matmul: unknown weight dtype %d", w->dtype);
        }
    }
    return gemm_blas(ex, y, x, ldx, w, bias, M, N, K);
}

extern "C" mc_status mc_cuda_matmul_add(const mc_exec *ex, float *y, const float *x, int64_t ldx, const mc_weight *w,
                                        int64_t M, int64_t N, int64_t K) {
    if (M < 0 || N < 0 || K < 0 || ldx < K || !mc_weight_ok(w, N, K) || w->dtype != MC_DTYPE_F32) {
        return mc_fail(mc_cuda_err(ex), MC_ERR_INVALID,
                       "cuda matmul_add: M=%lld N=%lld K=%lld ldx=%lld with a [%lld, %lld] %s weight, expected sizes "
                       ">= 0, ldx >= K and an f32 [N, K] weight", (long long)M, (long long)N, (long long)K,
                       (long long)ldx, (long long)w->rows, (long long)w->cols, mc_dtype_name((mc_dtype)w->dtype));
    }
    if (!mc_cuda_blas_sizes_ok(M, N, K, ldx)) {
        return mc_fail(mc_cuda_err(ex), MC_ERR_UNSUPPORTED, "cuda matmul_add: [%lld, %lld] x [%lld, %lld] exceeds "
                       "cuBLAS' int sizes", (long long)M, (long long)K, (long long)N, (long long)K);
    }
    if (M == 0 || N == 0 || K == 0) {
        return MC_OK;
    }
    return mc_cuda_gemm_f32(ex, true, false, N, M, K, (const float *)w->data, K, x, ldx, 1.0f, y, N, "matmul_add");
}
