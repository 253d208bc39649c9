// The training ops on the device: the products' gradients (cuBLAS), embedding, RMSNorm and loss gradients, and the
// optimizer's elementwise ops. Contracts are the reference twins' (kernels/ref/backward.h, ref.c); sums the
// reference takes in double are double here too, in a fixed order wherever no atomic is needed.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda/common.cuh"
#include "kernels/dropout.h"

extern "C" {
#include "kernels/dtype.h"
}

#define IGNORE_INDEX     (-100)      // PyTorch CrossEntropyLoss's default ignore_index (spec §6), as the reference
#define WORK_CHUNK_BYTES (64u << 20) // workspace one pass of a backward product may take: bounds memory at large M
#define ELEM_THREADS     256
#define ELEM_MAX_BLOCKS  16384 // elementwise grids stride past this: enough blocks to fill any current GPU
#define COL_TILE         32    // columns per block of a column sum: one coalesced 128-byte row segment
#define COL_LANES        8     // rows in flight per block of a column sum
#define COL_MAX_CHUNKS   128   // row chunks of a column sum (each a partial per column, added in order)
#define NORM_THREADS     256
#define CE_THREADS       512
#define SUMSQ_THREADS    256
#define SUMSQ_BLOCKS     1024

static unsigned elem_blocks(int64_t n) {
    const unsigned b = mc_cuda_blocks(n, ELEM_THREADS);
    return b < ELEM_MAX_BLOCKS ? b : ELEM_MAX_BLOCKS;
}

// Offsets of consecutive workspace regions, each on a 256-byte boundary.
static size_t work_align(size_t bytes) {
    return (bytes + 255) / 256 * 256;
}

// The reduction of v over the block (blockDim.x a multiple of 32, at most 1024), returned to every thread. shared
// holds one value per warp; the trailing barrier lets the caller run another reduction on it at once.
template <typename T, typename Op> static __device__ T block_reduce(T v, T *shared, Op op) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        v = op(v, __shfl_xor_sync(0xffffffffu, v, off));
    }
    if ((threadIdx.x & 31) == 0) {
        shared[threadIdx.x >> 5] = v;
    }
    __syncthreads();
    T r = shared[0];
    for (unsigned i = 1; i < blockDim.x / 32; i++) {
        r = op(r, shared[i]);
    }
    __syncthreads();
    return r;
}

struct op_add {
    template <typename T> __device__ T operator()(T a, T b) const {
        return a + b;
    }
};

struct op_max {
    __device__ float operator()(float a, float b) const {
        return fmaxf(a, b);
    }
};

// ---- column sums (dbias, rmsnorm's dw) --------------------------------------------------------------------------

// out[n] += Σ_m f(m, n) for M rows and N columns, in double: blocks of COL_TILE columns × a chunk of rows write
// partial[chunk, n]; a second pass adds the chunks in order, so the result does not depend on scheduling.
template <typename F>
__global__ void __launch_bounds__(COL_TILE *COL_LANES)
    colsum_kernel(double *__restrict__ partial, F f, int64_t M, int64_t N, int64_t rows_per_chunk) {
    __shared__ double lanes[COL_LANES][COL_TILE];
    const int64_t n = (int64_t)blockIdx.x * COL_TILE + threadIdx.x;
    const int64_t m0 = (int64_t)blockIdx.y * rows_per_chunk;
    const int64_t m1 = m0 + rows_per_chunk < M ? m0 + rows_per_chunk : M;
    double acc = 0;
    for (int64_t m = m0 + threadIdx.y; n < N && m < m1; m += COL_LANES) {
        acc += f(m, n);
    }
    lanes[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && n < N) {
        for (int i = 1; i < COL_LANES; i++) {
            acc += lanes[i][threadIdx.x];
        }
        partial[(int64_t)blockIdx.y * N + n] = acc;
    }
}

__global__ void colsum_finish_kernel(float *__restrict__ out, const double *__restrict__ partial, int64_t chunks,
                                     int64_t N) {
    const int64_t n = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (n < N) {
        double acc = 0;
        for (int64_t c = 0; c < chunks; c++) {
            acc += partial[c * N + n];
        }
        out[n] = (float)((double)out[n] + acc);
    }
}

// Row chunks of a column sum over [M, N]: enough to occupy the GPU when N is narrow, their partials within the
// workspace budget.
static int64_t colsum_chunks(int64_t M, int64_t N) {
    int64_t chunks = (M + 63) / 64;
    const int64_t fit = (int64_t)(WORK_CHUNK_BYTES / 8) / (N > 0 ? N : 1);
    chunks = chunks < COL_MAX_CHUNKS ? chunks : COL_MAX_CHUNKS;
    chunks = chunks < fit ? chunks : fit;
    return chunks > 1 ? chunks : 1;
}

// Runs the column sum with its partials at `partial` (colsum_chunks(M, N) · N doubles of workspace).
template <typename F>
static mc_status colsum_add(const mc_exec *ex, float *out, F f, int64_t M, int64_t N, double *partial,
                            const char *what) {
    const int64_t chunks = colsum_chunks(M, N), rows_per_chunk = (M + chunks - 1) / chunks;
    cudaStream_t s = mc_cuda_ctx_of(ex)->stream;
    const dim3 grid(mc_cuda_blocks(N, COL_TILE), (unsigned)chunks), block(COL_TILE, COL_LANES);
    colsum_kernel<<<grid, block, 0, s>>>(partial, f, M, N, rows_per_chunk);
    mc_status st = mc_cuda_launched(what, ex);
    if (st == MC_OK) {
        colsum_finish_kernel<<<mc_cuda_blocks(N, ELEM_THREADS), ELEM_THREADS, 0, s>>>(out, partial, chunks, N);
        st = mc_cuda_launched(what, ex);
    }
    return st;
}

struct col_dy { // dbias: dy[m, n]
    const float *dy;
    int64_t N;

    __device__ double operator()(int64_t m, int64_t n) const {
        return dy[m * N + n];
    }
};

struct col_rms { // rmsnorm's dw: dy · x · r of the row, in the reference's double order
    const float *dy, *x;
    const double *r;
    int64_t H;

    __device__ double operator()(int64_t m, int64_t n) const {
        return (double)dy[m * H + n] * x[m * H + n] * r[m];
    }
};

// ---- matmul_dx --------------------------------------------------------------------------------------------------
// dx[M, K] (=, or += when accumulate) = dy[M, N] · W[N, K]. As column-major cuBLAS: dxᵀ[K, M] = W'[K, N] · dyᵀ[N, M]
// with W' the column-major view of row-major W (no transposes). By weight dtype:
// - f32: one GEMM in ex->math's mode, beta = accumulate.
// - f16/bf16: dy split into terms of the weight's type (matmul.cu says why and how; 2–3 terms, 1 under
//   MC_MATH_BF16), one GemmEx per term into a [rows, K] workspace, then rows scaled by 1/p into dx (+=). Widening W
//   to f32 instead reads and writes 10 bytes per weight where the terms read 4–6, and runs on SIMT instead of
//   tensor cores. Rows go in chunks so the terms (up to 6·N bytes a row; N = 50280 for the head) fit the budget.
// - int8: panels of W's rows widened to f32 (q · scale, as mc_weight_at) in the workspace, one GEMM each, beta = 1
//   after the first.

// dx[m, k] = (accumulate ? dx[m, k] : 0) + tmp[m, k] · inv_p[m]
__global__ void dx_rows_kernel(float *__restrict__ dx, int64_t ldx, const float *__restrict__ tmp,
                               const float *__restrict__ inv_p, int64_t M, int64_t K, bool accumulate) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < M * K; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t m = i / K, k = i % K;
        const float v = tmp[i] * inv_p[m];
        float *p = dx + m * ldx + k;
        *p = accumulate ? *p + v : v;
    }
}

static mc_status dx_split(const mc_exec *ex, float *dx, int64_t ldx, const float *dy, const mc_weight *w, int64_t M,
                          int64_t N, int64_t K, bool accumulate) {
    mc_cuda_ctx *c = mc_cuda_ctx_of(ex);
    const int n_terms = mc_cuda_split_terms(w->dtype, ex->math);
    const cudaDataType_t type = w->dtype == MC_DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_16F;
    int64_t rows = (int64_t)WORK_CHUNK_BYTES / ((int64_t)n_terms * N * 2 + K * 4 + 4);
    rows = rows < 1 ? 1 : rows < M ? rows : M;
    const size_t terms_bytes = work_align((size_t)(n_terms * rows * N) * 2);
    const size_t tmp_bytes = work_align((size_t)(rows * K) * sizeof(float));
    mc_status st = mc_cuda_work_reserve(ex, terms_bytes + tmp_bytes + (size_t)rows * sizeof(float));
    if (st != MC_OK) {
        return st;
    }
    char *terms = (char *)c->work;
    float *tmp = (float *)(terms + terms_bytes), *inv_p = (float *)(terms + terms_bytes + tmp_bytes);
    const float one = 1.0f, zero = 0.0f;
    for (int64_t m0 = 0; m0 < M && st == MC_OK; m0 += rows) {
        const int64_t mc = M - m0 < rows ? M - m0 : rows;
        st = mc_cuda_split_rows(ex, terms, inv_p, dy + m0 * N, N, mc, N, w->dtype, n_terms);
        for (int s = 0; st == MC_OK && s < n_terms; s++) {
            st = mc_cublas_status(cublasGemmEx(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, (int)K, (int)mc, (int)N, &one,
                                               w->data, type, (int)K, terms + (size_t)(s * mc * N) * 2, type, (int)N,
                                               s == 0 ? &zero : &one, tmp, CUDA_R_32F, (int)K, CUBLAS_COMPUTE_32F,
                                               CUBLAS_GEMM_DEFAULT),
                                  "matmul_dx (16-bit weights)", ex);
        }
        if (st == MC_OK) {
            dx_rows_kernel<<<elem_blocks(mc * K), ELEM_THREADS, 0, c->stream>>>(dx + m0 * ldx, ldx, tmp, inv_p, mc, K,
                                                                                accumulate);
            st = mc_cuda_launched("matmul_dx (rows)", ex);
        }
    }
    return st;
}

// wf[r, k] = q[n0 + r, k] · scale of its group, for `rows` rows of an int8 weight [·, K].
__global__ void widen_i8_kernel(float *__restrict__ wf, const int8_t *__restrict__ q, const float *__restrict__ scales,
                                int64_t group, int64_t n0, int64_t rows, int64_t K) {
    const int64_t n_groups = (K + group - 1) / group;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < rows * K;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t n = n0 + i / K, k = i % K;
        wf[i] = (float)q[n * K + k] * scales[n * n_groups + k / group];
    }
}

static mc_status dx_int8(const mc_exec *ex, float *dx, int64_t ldx, const float *dy, const mc_weight *w, int64_t M,
                         int64_t N, int64_t K, bool accumulate) {
    mc_cuda_ctx *c = mc_cuda_ctx_of(ex);
    int64_t panel = (int64_t)(WORK_CHUNK_BYTES / sizeof(float)) / K;
    panel = panel < 1 ? 1 : panel < N ? panel : N;
    mc_status st = mc_cuda_work_reserve(ex, (size_t)(panel * K) * sizeof(float));
    if (st != MC_OK) {
        return st;
    }
    float *wf = (float *)c->work;
    for (int64_t n0 = 0; n0 < N && st == MC_OK; n0 += panel) {
        const int64_t rows = N - n0 < panel ? N - n0 : panel;
        widen_i8_kernel<<<elem_blocks(rows * K), ELEM_THREADS, 0, c->stream>>>(wf, (const int8_t *)w->data, w->scales,
                                                                               w->group, n0, rows, K);
        st = mc_cuda_launched("matmul_dx (widen int8)", ex);
        if (st == MC_OK) {
            st = mc_cuda_gemm_f32(ex, false, false, K, M, rows, wf, K, dy + n0, N, accumulate || n0 > 0 ? 1.0f : 0.0f,
                                  dx, ldx, "matmul_dx (int8 weights)");
        }
    }
    return st;
}

extern "C" mc_status mc_cuda_matmul_dx(const mc_exec *ex, float *dx, int64_t ldx, const float *dy, const mc_weight *w,
                                       int64_t M, int64_t N, int64_t K, bool accumulate) {
    if (M < 0 || N < 0 || K < 0 || ldx < K) {
        return mc_fail(mc_cuda_err(ex), MC_ERR_INVALID,
                       "cuda matmul_dx: M=%lld N=%lld K=%lld ldx=%lld, expected sizes >= 0 and ldx >= K", (long long)M,
                       (long long)N, (long long)K, (long long)ldx);
    }
    if (!mc_weight_ok(w, N, K)) {
        return mc_fail(mc_cuda_err(ex), MC_ERR_INVALID,
                       "cuda matmul_dx: weight is not a [%lld, %lld] f32/f16/bf16/int8 matrix", (long long)N,
                       (long long)K);
    }
    if (!mc_cuda_blas_sizes_ok(M, N, K, ldx)) {
        return mc_fail(mc_cuda_err(ex), MC_ERR_INVALID,
                       "cuda matmul_dx: M=%lld N=%lld K=%lld ldx=%lld exceed cuBLAS' int sizes", (long long)M,
                       (long long)N, (long long)K, (long long)ldx);
    }
    if (M == 0 || K == 0) {
        return MC_OK;
    }
    if (N == 0) { // an empty sum
        return accumulate
                   ? MC_OK
                   : mc_cuda_status(cudaMemset2DAsync(dx, (size_t)ldx * sizeof(float), 0, (size_t)K * sizeof(float),
                                                      (size_t)M, mc_cuda_ctx_of(ex)->stream),
                                    "matmul_dx (zero)", ex);
    }
    switch (w->dtype) {
        case MC_DTYPE_F32:
            return mc_cuda_gemm_f32(ex, false, false, K, M, N, (const float *)w->data, K, dy, N,
                                    accumulate ? 1.0f : 0.0f, dx, ldx, "matmul_dx");
        case MC_DTYPE_I8:
            return dx_int8(ex, dx, ldx, dy, w, M, N, K, accumulate);
        default:
            return dx_split(ex, dx, ldx, dy, w, M, N, K, accumulate);
    }
}

// ---- matmul_dw --------------------------------------------------------------------------------------------------

// dw[N, K] += dyᵀ · x as column-major dwᵀ[K, N] += x'[K, M] · dy'ᵀ (x' = x's column-major view, ld ldx); K = 1 with
// x a column of ones is the trainer's bias of a frozen matrix. dbias by a column sum of dy.
extern "C" mc_status mc_cuda_matmul_dw(const mc_exec *ex, float *dw, float *dbias, const float *dy, const float *x,
                                       int64_t ldx, int64_t M, int64_t N, int64_t K) {
    if (M < 0 || N < 0 || K < 0 || ldx < K) {
        return mc_fail(mc_cuda_err(ex), MC_ERR_INVALID,
                       "cuda matmul_dw: M=%lld N=%lld K=%lld ldx=%lld, expected sizes >= 0 and ldx >= K", (long long)M,
                       (long long)N, (long long)K, (long long)ldx);
    }
    if (!mc_cuda_blas_sizes_ok(M, N, K, ldx)) {
        return mc_fail(mc_cuda_err(ex), MC_ERR_INVALID,
                       "cuda matmul_dw: M=%lld N=%lld K=%lld ldx=%lld exceed cuBLAS' int sizes", (long long)M,
                       (long long)N, (long long)K, (long long)ldx);
    }
    if (M == 0 || N == 0) {
        return MC_OK;
    }
    mc_status st = MC_OK;
    if (K > 0) {
        st = mc_cuda_gemm_f32(ex, false, true, K, N, M, x, ldx, dy, N, 1.0f, dw, K, "matmul_dw");
    }
    if (st == MC_OK && dbias != nullptr) {
        st = mc_cuda_work_reserve(ex, (size_t)(colsum_chunks(M, N) * N) * sizeof(double));
        if (st == MC_OK) {
            st = colsum_add(ex, dbias, col_dy{ dy, N }, M, N, (double *)mc_cuda_ctx_of(ex)->work, "matmul_dw (bias)");
        }
    }
    return st;
}

// ---- matmul_bwd -------------------------------------------------------------------------------------------------

// Both gradients with dy rounded once (mc_cuda_gemm_bwd_bf16) where that applies: MC_MATH_BF16, an f32 weight,
// sizes that pass the two ops' checks; everything else is matmul_dw then matmul_dx (their checks and errors).
extern "C" mc_status mc_cuda_matmul_bwd(const mc_exec *ex, float *dx, int64_t lddx, bool accumulate, float *dw,
                                        float *dbias, const float *dy, const float *x, int64_t ldx, const mc_weight *w,
                                        int64_t M, int64_t N, int64_t K) {
    if (ex->math == MC_MATH_BF16 && M > 0 && N > 0 && K > 0 && ldx >= K && lddx >= K && mc_weight_ok(w, N, K) &&
        w->dtype == MC_DTYPE_F32 && mc_cuda_blas_sizes_ok(M, N, K, ldx) && lddx <= INT32_MAX) {
        bool done = false;
        mc_status st = mc_cuda_gemm_bwd_bf16(ex, dx, lddx, accumulate, dw, dy, x, ldx, (const float *)w->data, M, N, K,
                                             &done);
        if (st != MC_OK || (done && dbias == nullptr)) {
            return st;
        }
        if (done) {
            st = mc_cuda_work_reserve(ex, (size_t)(colsum_chunks(M, N) * N) * sizeof(double));
            return st != MC_OK ? st
                               : colsum_add(ex, dbias, col_dy{ dy, N }, M, N, (double *)mc_cuda_ctx_of(ex)->work,
                                            "matmul_bwd (bias)");
        }
    }
    const mc_status st = mc_cuda_matmul_dw(ex, dw, dbias, dy, x, ldx, M, N, K);
    return st != MC_OK ? st : mc_cuda_matmul_dx(ex, dx, lddx, dy, w, M, N, K, accumulate);
}

// ---- embed_bwd --------------------------------------------------------------------------------------------------

// dw[ids[i], :] += dout[i, :], one block per row i; rows sharing an id meet in atomics (so their order varies). The
// caller checked the ids; one outside [0, V) is skipped rather than written outside dw.
__global__ void embed_bwd_kernel(float *__restrict__ dw, const float *__restrict__ dout,
                                 const int32_t *__restrict__ ids, int64_t V, int64_t H) {
    const int64_t i = blockIdx.x, id = ids[i];
    if (id < 0 || id >= V) {
        return;
    }
    for (int64_t h = threadIdx.x; h < H; h += blockDim.x) {
        atomicAdd(dw + id * H + h, dout[i * H + h]);
    }
}

extern "C" mc_status mc_cuda_embed_bwd(const mc_exec *ex, float *dw, const float *dout, const int32_t *ids, int64_t n,
                                       int64_t V, int64_t H) {
    if (n < 0 || V < 0 || H < 0 || n > INT32_MAX) {
        return mc_fail(mc_cuda_err(ex), MC_ERR_INVALID,
                       "cuda embed_bwd: n=%lld V=%lld H=%lld, expected sizes >= 0 and n < 2^31", (long long)n,
                       (long long)V, (long long)H);
    }
    if (n == 0 || H == 0) {
        return MC_OK;
    }
    embed_bwd_kernel<<<(unsigned)n, ELEM_THREADS, 0, mc_cuda_ctx_of(ex)->stream>>>(dw, dout, ids, V, H);
    return mc_cuda_launched("embed_bwd", ex);
}

// ---- rmsnorm_bwd ------------------------------------------------------------------------------------------------

// One block per row m: r = 1 / sqrt(mean(x²) + eps) and dot = Σ dy·w·x in double (the reference's sums, in a tree),
// dx += r·w·dy − x·r³·dot / H; r is kept for dw's column sum.
__global__ void __launch_bounds__(NORM_THREADS)
    rmsnorm_dx_kernel(float *__restrict__ dx, double *__restrict__ r_out, const float *__restrict__ dy,
                      const float *__restrict__ x, const float *__restrict__ w, int64_t H, float eps) {
    __shared__ double partial[NORM_THREADS / 32];
    const int64_t m = blockIdx.x;
    const float *xm = x + m * H, *gm = dy + m * H;
    double ms = 0, dot = 0;
    for (int64_t h = threadIdx.x; h < H; h += NORM_THREADS) {
        ms += (double)xm[h] * xm[h];
        dot += (double)gm[h] * w[h] * xm[h];
    }
    ms = block_reduce(ms, partial, op_add());
    dot = block_reduce(dot, partial, op_add());
    const double r = 1.0 / sqrt(ms / (double)H + eps), r3_mean = r * r * r * dot / (double)H;
    if (threadIdx.x == 0) {
        r_out[m] = r;
    }
    for (int64_t h = threadIdx.x; h < H; h += NORM_THREADS) {
        dx[m * H + h] += (float)(r * w[h] * gm[h] - xm[h] * r3_mean);
    }
}

extern "C" mc_status mc_cuda_rmsnorm_bwd(const mc_exec *ex, float *dx, float *dw, const float *dy, const float *x,
                                         const float *w, int64_t M, int64_t H, float eps) {
    if (M < 0 || H < 1 || M > INT32_MAX) {
        return mc_fail(mc_cuda_err(ex), MC_ERR_INVALID,
                       "cuda rmsnorm_bwd: M=%lld H=%lld, expected 0 <= M < 2^31 and H >= 1", (long long)M,
                       (long long)H);
    }
    if (M == 0) {
        return MC_OK;
    }
    const size_t r_bytes = work_align((size_t)M * sizeof(double));
    mc_status st = mc_cuda_work_reserve(ex, r_bytes + (size_t)(colsum_chunks(M, H) * H) * sizeof(double));
    if (st != MC_OK) {
        return st;
    }
    mc_cuda_ctx *c = mc_cuda_ctx_of(ex);
    double *r = (double *)c->work, *partial = (double *)((char *)c->work + r_bytes);
    rmsnorm_dx_kernel<<<(unsigned)M, NORM_THREADS, 0, c->stream>>>(dx, r, dy, x, w, H, eps);
    st = mc_cuda_launched("rmsnorm_bwd", ex);
    return st != MC_OK ? st : colsum_add(ex, dw, col_rms{ dy, x, r, H }, M, H, partial, "rmsnorm_bwd (dw)");
}

// ---- cross_entropy ----------------------------------------------------------------------------------------------

// One block per row: the max, Σ exp(x − max) (expf per logit, summed in double: the log-sum differs from the
// reference's double exp by ≤ 2 ulp of expf plus the rounding of x − max, both relative), the row's NLL added to
// *loss_sum and the count to *n_valid by double / 64-bit atomics, then dlogits = scale · (softmax − onehot), the
// target's entry as −Σ_{v≠target} exp / Σ exp (p − 1 in f32 would lose all digits when p ≈ 1). Every
// read of the row precedes the barrier ahead of the writes, so dlogits may alias logits. The caller checked the
// targets; one outside [0, V) that is not −100 turns the loss and its row's gradient into NaN, so a bad target
// shows in the loss rather than reading outside the row.
__global__ void __launch_bounds__(CE_THREADS)
    cross_entropy_kernel(float *dlogits, double *__restrict__ loss_sum, unsigned long long *__restrict__ n_valid,
                         const float *logits, const int32_t *__restrict__ targets, int64_t V, float scale) {
    __shared__ float fpart[CE_THREADS / 32];
    __shared__ double dpart[CE_THREADS / 32];
    const int64_t t = blockIdx.x, target = targets[t];
    const float *row = logits + t * V;
    float *grad = dlogits + t * V;
    if (target == IGNORE_INDEX) {
        for (int64_t v = threadIdx.x; v < V; v += CE_THREADS) {
            grad[v] = 0.0f;
        }
        return;
    }
    const bool valid = target >= 0 && target < V;
    const float x_target = valid && threadIdx.x == 0 ? row[target] : 0.0f;
    float mx = -INFINITY;
    for (int64_t v = threadIdx.x; v < V; v += CE_THREADS) {
        mx = fmaxf(mx, row[v]);
    }
    mx = block_reduce(mx, fpart, op_max());
    double sum = 0, rest = 0; // rest: Σ over v ≠ target, so the target's 1 − p keeps its digits when p ≈ 1
    for (int64_t v = threadIdx.x; v < V; v += CE_THREADS) {
        const double e = expf(row[v] - mx);
        sum += e;
        rest += v != target ? e : 0.0;
    }
    sum = block_reduce(sum, dpart, op_add());
    rest = block_reduce(rest, dpart, op_add());
    if (threadIdx.x == 0) {
        atomicAdd(loss_sum, valid ? log(sum) + mx - x_target : (double)NAN);
        atomicAdd(n_valid, 1ull);
    }
    const double inv_sum = 1.0 / sum;
    for (int64_t v = threadIdx.x; v < V; v += CE_THREADS) {
        const double d = v == target ? -rest * inv_sum : (double)expf(row[v] - mx) * inv_sum; // softmax − onehot
        grad[v] = valid ? (float)((double)scale * d) : NAN;
    }
}

extern "C" mc_status mc_cuda_cross_entropy(const mc_exec *ex, float *dlogits, double *loss_sum, int64_t *n_valid,
                                           const float *logits, const int32_t *targets, int64_t T, int64_t V,
                                           float scale) {
    if (T < 0 || V < 1 || T > INT32_MAX) {
        return mc_fail(mc_cuda_err(ex), MC_ERR_INVALID,
                       "cuda cross_entropy: T=%lld V=%lld, expected 0 <= T < 2^31 and V >= 1", (long long)T,
                       (long long)V);
    }
    if (T == 0) {
        return MC_OK;
    }
    cross_entropy_kernel<<<(unsigned)T, CE_THREADS, 0, mc_cuda_ctx_of(ex)->stream>>>(
        dlogits, loss_sum, (unsigned long long *)n_valid, logits, targets, V, scale);
    return mc_cuda_launched("cross_entropy", ex);
}

// ---- elementwise ------------------------------------------------------------------------------------------------
// The reference's f32 expressions with explicit roundings (__fmul_rn and friends are never contracted into FMAs),
// so each element equals the host's.

__global__ void axpby_kernel(float *y, float a, const float *x, float b, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        y[i] = __fadd_rn(__fmul_rn(a, y[i]), x != nullptr ? __fmul_rn(b, x[i]) : 0.0f);
    }
}

// ops.h dropout: element i of y [M, K] from x (rows ldx apart; y may be x when ldx = K: each element is read,
// then written, by one thread).
__global__ void dropout_kernel(float *y, const float *x, int64_t ldx, int64_t M, int64_t K, double p, float scale,
                               uint64_t key) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < M * K; i += (int64_t)gridDim.x * blockDim.x) {
        const float v = x[(i / K) * ldx + i % K];
        y[i] = mc_dropout_u(key, (uint64_t)i) >= p ? __fmul_rn(v, scale) : 0.0f;
    }
}

__global__ void mul_acc_kernel(float *__restrict__ y, const float *__restrict__ a, const float *__restrict__ b,
                               int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        y[i] = __fadd_rn(y[i], __fmul_rn(a[i], b[i]));
    }
}

__global__ void neg_exp_kernel(float *y, const float *x, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        y[i] = -expf(x[i]);
    }
}

// mc_ref_adamw's operations in its order, each rounded once as the host rounds them.
__global__ void adamw_kernel(float *__restrict__ p, const float *__restrict__ g, float *__restrict__ m,
                             float *__restrict__ v, int64_t n, mc_adamw_args a) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float gi = g[i], pi = __fmul_rn(p[i], a.decay);
        const float mi = __fmaf_rn(a.w1, __fsub_rn(gi, m[i]), m[i]);
        const float vi = __fmaf_rn(__fmul_rn(a.w2, gi), gi, __fmul_rn(v[i], a.beta2));
        const float d = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), a.bc2_sqrt), a.eps);
        m[i] = mi;
        v[i] = vi;
        p[i] = __fadd_rn(pi, __fdiv_rn(__fmul_rn(a.neg_step, mi), d));
    }
}

// Σ x² in double: a grid-stride partial per block, then one block adds the partials in order and writes *out.
__global__ void __launch_bounds__(SUMSQ_THREADS)
    sumsq_partial_kernel(double *__restrict__ partial, const float *__restrict__ x, int64_t n) {
    __shared__ double red[SUMSQ_THREADS / 32];
    double acc = 0;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        acc += (double)x[i] * x[i];
    }
    acc = block_reduce(acc, red, op_add());
    if (threadIdx.x == 0) {
        partial[blockIdx.x] = acc;
    }
}

__global__ void __launch_bounds__(SUMSQ_THREADS)
    sumsq_finish_kernel(double *__restrict__ out, const double *__restrict__ partial, unsigned count) {
    __shared__ double red[SUMSQ_THREADS / 32];
    double acc = 0;
    for (unsigned i = threadIdx.x; i < count; i += SUMSQ_THREADS) {
        acc += partial[i];
    }
    acc = block_reduce(acc, red, op_add());
    if (threadIdx.x == 0) {
        *out = acc;
    }
}

static mc_status bad_count(const mc_exec *ex, const char *op, int64_t n) {
    return mc_fail(mc_cuda_err(ex), MC_ERR_INVALID, "cuda %s: n=%lld, expected n >= 0", op, (long long)n);
}

extern "C" mc_status mc_cuda_axpby(const mc_exec *ex, float *y, float a, const float *x, float b, int64_t n) {
    if (n <= 0) {
        return n < 0 ? bad_count(ex, "axpby", n) : MC_OK;
    }
    axpby_kernel<<<elem_blocks(n), ELEM_THREADS, 0, mc_cuda_ctx_of(ex)->stream>>>(y, a, x, b, n);
    return mc_cuda_launched("axpby", ex);
}

extern "C" mc_status mc_cuda_dropout(const mc_exec *ex, float *y, const float *x, int64_t ldx, int64_t M, int64_t K,
                                     double p, uint64_t key) {
    if (M < 0 || K < 0 || ldx < K || !(p >= 0 && p <= 1)) {
        return mc_fail(mc_cuda_err(ex), MC_ERR_INVALID,
                       "cuda dropout: M=%lld K=%lld ldx=%lld p=%g, expected sizes >= 0, ldx >= K and p in [0, 1]",
                       (long long)M, (long long)K, (long long)ldx, p);
    }
    if (M == 0 || K == 0) {
        return MC_OK;
    }
    dropout_kernel<<<elem_blocks(M * K), ELEM_THREADS, 0, mc_cuda_ctx_of(ex)->stream>>>(y, x, ldx, M, K, p,
                                                                                       mc_dropout_scale(p), key);
    return mc_cuda_launched("dropout", ex);
}

extern "C" mc_status mc_cuda_mul_acc(const mc_exec *ex, float *y, const float *a, const float *b, int64_t n) {
    if (n <= 0) {
        return n < 0 ? bad_count(ex, "mul_acc", n) : MC_OK;
    }
    mul_acc_kernel<<<elem_blocks(n), ELEM_THREADS, 0, mc_cuda_ctx_of(ex)->stream>>>(y, a, b, n);
    return mc_cuda_launched("mul_acc", ex);
}

extern "C" mc_status mc_cuda_neg_exp(const mc_exec *ex, float *y, const float *x, int64_t n) {
    if (n <= 0) {
        return n < 0 ? bad_count(ex, "neg_exp", n) : MC_OK;
    }
    neg_exp_kernel<<<elem_blocks(n), ELEM_THREADS, 0, mc_cuda_ctx_of(ex)->stream>>>(y, x, n);
    return mc_cuda_launched("neg_exp", ex);
}

extern "C" mc_status mc_cuda_adamw(const mc_exec *ex, float *p, const float *g, float *m, float *v, int64_t n,
                                   const mc_adamw_args *a) {
    if (n <= 0) {
        return n < 0 ? bad_count(ex, "adamw", n) : MC_OK;
    }
    adamw_kernel<<<elem_blocks(n), ELEM_THREADS, 0, mc_cuda_ctx_of(ex)->stream>>>(p, g, m, v, n, *a);
    return mc_cuda_launched("adamw", ex);
}

// n = 0 runs too: *out is written (0) either way.
extern "C" mc_status mc_cuda_sumsq(const mc_exec *ex, double *out, const float *x, int64_t n) {
    if (n < 0) {
        return bad_count(ex, "sumsq", n);
    }
    mc_status st = mc_cuda_work_reserve(ex, SUMSQ_BLOCKS * sizeof(double));
    if (st != MC_OK) {
        return st;
    }
    mc_cuda_ctx *c = mc_cuda_ctx_of(ex);
    const unsigned blocks =
        mc_cuda_blocks(n, SUMSQ_THREADS) < SUMSQ_BLOCKS ? mc_cuda_blocks(n, SUMSQ_THREADS) : SUMSQ_BLOCKS;
    sumsq_partial_kernel<<<blocks, SUMSQ_THREADS, 0, c->stream>>>((double *)c->work, x, n);
    st = mc_cuda_launched("sumsq", ex);
    if (st == MC_OK) {
        sumsq_finish_kernel<<<1, SUMSQ_THREADS, 0, c->stream>>>(out, (const double *)c->work, blocks);
        st = mc_cuda_launched("sumsq (finish)", ex);
    }
    return st;
}
