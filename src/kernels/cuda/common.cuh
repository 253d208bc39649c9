// What the CUDA backend's files share: the per-caller context behind mc_exec.dev, status conversion, and the
// compute entries each .cu file defines (the op table in backend.cu points at them).
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "base/error.h"
#include "kernels/ops.h"
}

#define MC_CUDA_GRAPHS 8 // recorded decode steps kept per context (least recently used one replaced)

// One recorded call sequence: the key it was recorded under, and its executable graph (NULL while the key has been
// seen once: the first call runs directly, which also grows any workspace outside a capture).
typedef struct mc_cuda_graph {
    uint64_t key;
    cudaGraphExec_t exec;
    uint64_t last_use;
} mc_cuda_graph;

// A range of device memory the caller froze (ops.h's freeze), and a converted operand copy kept for it.
typedef struct mc_cuda_frozen {
    const char *p;
    size_t bytes;
} mc_cuda_frozen;

typedef struct mc_cuda_kept {
    const float *src; // the operand piece: n_vec vectors of len floats, ld apart
    int64_t ld, n_vec, len;
    int kind, lo_at; // matmul.cu's conversion kind and layout
    bool k_in_vec;
    void *copy;
} mc_cuda_kept;

// The per-caller context (mc_exec.dev): everything here belongs to one caller, so two states run independently.
typedef struct mc_cuda_ctx {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    void *blas_work; // cuBLAS workspace set once, so a captured GEMM allocates nothing
    void *work;      // conversion workspace (activations rounded to a weight's 16-bit type for cuBLAS)
    size_t work_bytes;
    void *cvt;       // converted copies of both f32 operands of a product (mc_cuda_gemm_f32: bf16, or TF32 terms), apart
    size_t cvt_bytes; // from `work`, which a caller may hold across such a product
    mc_cuda_graph graphs[MC_CUDA_GRAPHS];
    uint64_t use_clock;
    bool capturing;     // between graph_begin and graph_end of a recording
    int capture_slot;   // the slot being recorded
    bool capture_error; // an op failed while recording: graph_end drops the recording
    void *sample_dev;   // the sample op's device workspace (processed rows, staged uniforms, histories, ids)
    size_t sample_dev_bytes;
    void *sample_host;  // its pinned host staging buffer (one upload, one download per call)
    size_t sample_host_bytes;
    void *argmax_dev;   // the multi-block greedy choice's row counters (zero between calls) and block results
    size_t argmax_dev_bytes;
    mc_cuda_frozen *frozen; // ranges frozen by the caller, and the converted copies kept for them (matmul.cu)
    int n_frozen;
    mc_cuda_kept *kept;
    int n_kept;
    size_t kept_bytes, kept_budget;
} mc_cuda_ctx;

static inline mc_cuda_ctx *mc_cuda_ctx_of(const mc_exec *ex) {
    return (mc_cuda_ctx *)ex->dev;
}

static inline mc_error *mc_cuda_err(const mc_exec *ex) {
    return ex != NULL ? ex->err : NULL;
}

// Converts a CUDA result at the call site: MC_OK, or a one-line message "cuda: <what>: <CUDA's words>".
static inline mc_status mc_cuda_status(cudaError_t rc, const char *what, const mc_exec *ex) {
    if (rc == cudaSuccess) {
        return MC_OK;
    }
    // A failed call also leaves its error as the thread's last one: cleared, so that after a recoverable failure
    // (an allocation the forward retries smaller) the next launch's check does not report it again.
    (void)cudaGetLastError();
    return mc_fail(mc_cuda_err(ex), rc == cudaErrorMemoryAllocation ? MC_ERR_NOMEM : MC_ERR_INTERNAL, "cuda: %s: %s",
                   what, cudaGetErrorString(rc));
}

static inline mc_status mc_cublas_status(cublasStatus_t rc, const char *what, const mc_exec *ex) {
    if (rc == CUBLAS_STATUS_SUCCESS) {
        return MC_OK;
    }
    return mc_fail(mc_cuda_err(ex), rc == CUBLAS_STATUS_ALLOC_FAILED ? MC_ERR_NOMEM : MC_ERR_INTERNAL,
                   "cublas: %s: %s", what, cublasGetStatusString(rc));
}

// After a kernel launch: a bad configuration shows here; faults inside the kernel show at the next sync.
static inline mc_status mc_cuda_launched(const char *what, const mc_exec *ex) {
    return mc_cuda_status(cudaGetLastError(), what, ex);
}

// Programmatic dependent launch (Hopper): a kernel launched by mc_cuda_launch may be scheduled while the kernel
// before it on the stream still runs, so a decode step's ~170 small kernels overlap each one's launch and block
// scheduling with the previous one's tail. Every kernel launched so must call mc_pdl_wait() before it touches
// memory (it returns once the previous grid has finished and its writes are visible: without a dependency it returns
// at once), and may call mc_pdl_trigger() to let the next kernel be scheduled early. MAMBAC_PDL=0 turns it off.
static __device__ __forceinline__ void mc_pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

static __device__ __forceinline__ void mc_pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

bool mc_cuda_pdl_on(); // the device is sm_90 or later and MAMBAC_PDL is not 0 (decided once)

template <typename... KArgs, typename... Args>
static inline void mc_cuda_launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                                  Args... args) {
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = s;
    cfg.attrs = attr;
    cfg.numAttrs = mc_cuda_pdl_on() ? 1 : 0;
    (void)cudaLaunchKernelEx(&cfg, kernel, static_cast<KArgs>(args)...); // errors: cudaGetLastError, as <<<>>>
}

// Grid size for n items of `per_block`, at least one block.
static inline unsigned mc_cuda_blocks(int64_t n, int64_t per_block) {
    int64_t b = (n + per_block - 1) / per_block;
    return (unsigned)(b > 0 ? b : 1);
}

// Makes the context's conversion workspace at least `bytes` long (the stream is drained first: work in flight may
// read the old one). Fails while recording a graph, where an allocation cannot be captured.
mc_status mc_cuda_work_reserve(const mc_exec *ex, size_t bytes);
// The same for the operand-conversion buffer `cvt`.
mc_status mc_cuda_cvt_reserve(const mc_exec *ex, size_t bytes);

// Whether four sizes of a product (dimensions, leading dimension) fit cuBLAS's int arguments.
static inline bool mc_cuda_blas_sizes_ok(int64_t a, int64_t b, int64_t c, int64_t d) {
    return a <= INT32_MAX && b <= INT32_MAX && c <= INT32_MAX && d <= INT32_MAX;
}

// C = op(A)·op(B) + beta·C, column-major f32 in and out (cuBLAS' argument order, sizes within int), multiplied as
// ex->math allows: MC_MATH_F32 splits both operands into three TF32 terms each in `cvt` and runs one TF32 GemmEx
// within ~1e-5 of the largest output, SGEMM ~1e-6 (matmul.cu says how; a skinny product, with a side under 128, or
// MAMBAC_F32_GEMM=sgemm: cublasSgemm, no TF32), TF32 is cublasGemmEx with CUBLAS_COMPUTE_32F_FAST_TF32, and BF16
// rounds both operands to bf16 (as autocast does) into `cvt` and runs a bf16 × bf16 GemmEx with f32 accumulation
// and output (a skinny product: GemmEx on the f32 operands with CUBLAS_COMPUTE_32F_FAST_16BF instead). `what` names
// the call in a failure.
mc_status mc_cuda_gemm_f32(const mc_exec *ex, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                           const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
                           int64_t ldc, const char *what);

// The same product by skinny.cu's kernels where k, or m or n, is at most 16 (a LoRA rank): *done false when the
// shape is not theirs (nothing was launched) or MAMBAC_SKINNY=1 is not set (not yet run on a GPU); exact f32
// operands and sums in every math mode.
mc_status mc_cuda_gemm_skinny(const mc_exec *ex, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                              const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
                              int64_t ldc, bool *done);

// Both gradients of a product under MC_MATH_BF16 (matmul_bwd's contract, f32 weight w [N, K], no bias) with dy
// rounded to bf16 once for both; *done false when the shape is not for it (a side under 128, or x over half the
// conversion budget): then nothing was written and the caller runs matmul_dw and matmul_dx.
mc_status mc_cuda_gemm_bwd_bf16(const mc_exec *ex, float *dx, int64_t lddx, bool accumulate, float *dw,
                                const float *dy, const float *x, int64_t ldx, const float *w, int64_t M, int64_t N,
                                int64_t K, bool *done);

// An f32 operand for cuBLAS against 16-bit weights (matmul.cu's header says why): x [M, K] (rows ldx apart) as
// n_terms packed [M, K] matrices of the weight's type (MC_DTYPE_F16 or _BF16), each 2·M·K bytes at `terms`, with
// x[m, :] = (Σ_s terms[s][m, :]) · inv_p[m] up to the terms' precision. mc_cuda_split_terms: how many terms a
// weight dtype takes under a math mode (3 bf16, 2 f16; 1 under MC_MATH_BF16, rounded once as autocast does).
int mc_cuda_split_terms(int dtype, int math);
mc_status mc_cuda_split_rows(const mc_exec *ex, void *terms, float *inv_p, const float *x, int64_t ldx, int64_t M,
                             int64_t K, int dtype, int n_terms);

// The compute entries (contracts in ops.h).
extern "C" {
mc_status mc_cuda_matmul(const mc_exec *ex, float *y, const float *x, int64_t ldx, const mc_weight *w,
                         const float *bias, int64_t M, int64_t N, int64_t K);
mc_status mc_cuda_freeze(const mc_exec *ex, const void *p, size_t bytes);
mc_status mc_cuda_matmul_add(const mc_exec *ex, float *y, const float *x, int64_t ldx, const mc_weight *w, int64_t M,
                             int64_t N, int64_t K);
mc_status mc_cuda_embed(const mc_exec *ex, float *out, const mc_weight *w, const int32_t *ids, int64_t ldi, int64_t Bt,
                        int64_t T, int64_t H);
mc_status mc_cuda_rmsnorm(const mc_exec *ex, float *y, float *x, const float *add, const float *w, int64_t M,
                          int64_t H, float eps);
mc_status mc_cuda_conv1d(const mc_exec *ex, float *u, float *state, const float *x, int64_t ldx, const float *w,
                         const float *bias, int64_t Bt, int64_t L, int64_t E, int64_t K);
mc_status mc_cuda_conv1d_step(const mc_exec *ex, float *u, float *state, const float *x, int64_t ldx, const float *w,
                              const float *bias, int64_t n_seq, int64_t E, int64_t K);
mc_status mc_cuda_selective_scan(const mc_exec *ex, float *y, float *h, const float *u, const float *dt,
                                 const float *dt_bias, const float *A, const float *B, const float *C, int64_t ldbc,
                                 const float *D, const float *z, int64_t ldz, int64_t Bt, int64_t L, int64_t E,
                                 int64_t N);
mc_status mc_cuda_selective_scan_step(const mc_exec *ex, float *y, float *h, const float *u, const float *dt,
                                      const float *dt_bias, const float *A, const float *B, const float *C,
                                      int64_t ldbc, const float *D, const float *z, int64_t ldz, int64_t n_seq,
                                      int64_t E, int64_t N);
mc_status mc_cuda_selective_scan_step_dt(const mc_exec *ex, float *y, float *h, const float *u, const float *q,
                                         int64_t ldq, const mc_weight *dt_w, const float *dt_bias, const float *A,
                                         const float *D, const float *z, int64_t ldz, int64_t n_seq, int64_t E,
                                         int64_t N, int64_t R);
mc_status mc_cuda_conv1d_bwd(const mc_exec *ex, float *dx, float *dw, float *db, float *dstate0, const float *du,
                             const float *dstate_final, const float *x, int64_t ldx, const float *state0,
                             const float *w, const float *b, int64_t Bt, int64_t L, int64_t E, int64_t K);
mc_status mc_cuda_selective_scan_bwd(const mc_exec *ex, float *du, float *ddt, float *dz, float *dB, float *dC,
                                     float *dA, float *dD, float *ddt_bias, float *dh0, const float *dy,
                                     const float *dh_final, const float *u, const float *dt, const float *dt_bias,
                                     const float *A, const float *B, const float *C, int64_t ldbc, const float *D,
                                     const float *z, int64_t ldz, const float *h0, int64_t Bt, int64_t L, int64_t E,
                                     int64_t N);
int64_t mc_cuda_scan_keep_floats(int64_t Bt, int64_t L, int64_t E, int64_t N);
mc_status mc_cuda_selective_scan_keep(const mc_exec *ex, float *y, float *h, const float *u, const float *dt,
                                      const float *dt_bias, const float *A, const float *B, const float *C,
                                      int64_t ldbc, const float *D, const float *z, int64_t ldz, int64_t Bt, int64_t L,
                                      int64_t E, int64_t N, float *keep);
mc_status mc_cuda_selective_scan_bwd_kept(const mc_exec *ex, float *du, float *ddt, float *dz, float *dB, float *dC,
                                          float *dA, float *dD, float *ddt_bias, float *dh0, const float *dy,
                                          const float *dh_final, const float *u, const float *dt,
                                          const float *dt_bias, const float *A, const float *B, const float *C,
                                          int64_t ldbc, const float *D, const float *z, int64_t ldz, const float *h0,
                                          int64_t Bt, int64_t L, int64_t E, int64_t N, const float *kept);
}

// The chunk length of the states the training forward keeps for the backward (scan_par.cu's S = 4 kernels).
#define MC_SCAN_KEEP_STEPS 128

// Selective-scan kernels behind mc_cuda_selective_scan and mc_cuda_selective_scan_bwd, callable directly so that
// benchmarks can time one against another (same arguments and contracts as those entries, sizes already checked).
// scan_par.cu, parallel over time (header there): config 0 picks by shape, 1.. names one (listed at the
// definitions); MC_ERR_UNSUPPORTED for N beyond the configuration (at most 64). scan.cu / scan_bwd.cu: the tiled
// kernels that walk time in order (the entries' fallback for N > 64; the backward's up to N = 128).
mc_status mc_cuda_scan_par(const mc_exec *ex, int config, float *y, float *h, const float *u, const float *dt,
                           const float *dt_bias, const float *A, const float *B, const float *C, int64_t ldbc,
                           const float *D, const float *z, int64_t ldz, int64_t Bt, int64_t L, int64_t E, int64_t N,
                           float *keep);
mc_status mc_cuda_scan_par_bwd(const mc_exec *ex, int config, float *du, float *ddt, float *dz, float *dB, float *dC,
                               float *dA, float *dD, float *ddt_bias, float *dh0, const float *dy,
                               const float *dh_final, const float *u, const float *dt, const float *dt_bias,
                               const float *A, const float *B, const float *C, int64_t ldbc, const float *D,
                               const float *z, int64_t ldz, const float *h0, int64_t Bt, int64_t L, int64_t E,
                               int64_t N, const float *kept);
mc_status mc_cuda_scan_tiled(const mc_exec *ex, float *y, float *h, const float *u, const float *dt,
                             const float *dt_bias, const float *A, const float *B, const float *C, int64_t ldbc,
                             const float *D, const float *z, int64_t ldz, int64_t Bt, int64_t L, int64_t E, int64_t N);
mc_status mc_cuda_scan_bwd_tiled(const mc_exec *ex, float *du, float *ddt, float *dz, float *dB, float *dC, float *dA,
                                 float *dD, float *ddt_bias, float *dh0, const float *dy, const float *dh_final,
                                 const float *u, const float *dt, const float *dt_bias, const float *A,
                                 const float *B, const float *C, int64_t ldbc, const float *D, const float *z,
                                 int64_t ldz, const float *h0, int64_t Bt, int64_t L, int64_t E, int64_t N);

// The training ops (backward.cu; contracts in ops.h and the reference twins).
extern "C" {
mc_status mc_cuda_matmul_dx(const mc_exec *ex, float *dx, int64_t ldx, const float *dy, const mc_weight *w, int64_t M,
                            int64_t N, int64_t K, bool accumulate);
mc_status mc_cuda_matmul_dw(const mc_exec *ex, float *dw, float *dbias, const float *dy, const float *x, int64_t ldx,
                            int64_t M, int64_t N, int64_t K);
mc_status mc_cuda_matmul_bwd(const mc_exec *ex, float *dx, int64_t lddx, bool accumulate, float *dw, float *dbias,
                             const float *dy, const float *x, int64_t ldx, const mc_weight *w, int64_t M, int64_t N,
                             int64_t K);
mc_status mc_cuda_embed_bwd(const mc_exec *ex, float *dw, const float *dout, const int32_t *ids, int64_t n, int64_t V,
                            int64_t H);
mc_status mc_cuda_rmsnorm_bwd(const mc_exec *ex, float *dx, float *dw, const float *dy, const float *x, const float *w,
                              int64_t M, int64_t H, float eps);
mc_status mc_cuda_cross_entropy(const mc_exec *ex, float *dlogits, double *loss_sum, int64_t *n_valid,
                                const float *logits, const int32_t *targets, int64_t T, int64_t V, float scale);
mc_status mc_cuda_axpby(const mc_exec *ex, float *y, float a, const float *x, float b, int64_t n);
mc_status mc_cuda_dropout(const mc_exec *ex, float *y, const float *x, int64_t ldx, int64_t M, int64_t K, double p,
                          uint64_t key);
mc_status mc_cuda_mul_acc(const mc_exec *ex, float *y, const float *a, const float *b, int64_t n);
mc_status mc_cuda_sumsq(const mc_exec *ex, double *out, const float *x, int64_t n);
mc_status mc_cuda_adamw(const mc_exec *ex, float *p, const float *g, float *m, float *v, int64_t n,
                        const mc_adamw_args *a);
mc_status mc_cuda_neg_exp(const mc_exec *ex, float *y, const float *x, int64_t n);
}

// Token choice on the device (sample.cu; contract in ops.h, reference kernels/ref/sample.c).
extern "C" mc_status mc_cuda_sample(const mc_exec *ex, int32_t *out_ids, const float *logits, int64_t ld, int64_t n,
                                    int64_t V, const mc_sample_args *a, const int32_t *prev, const int64_t *prev_off,
                                    const double *uniforms);

// Shared device math: softplus with torch's threshold 20 (spec §3.7) and SiLU, in f32 as the reference. e^v is one
// ex2.approx of v·log2 e (relative error about |v|·2^-24 from rounding the product, ≤ 2e-6 for |v| ≤ 20; results
// below 2^-126 flush to 0) and SiLU's quotient one reciprocal: expf's and the IEEE division's exact paths cost ~50
// instructions an element, a third of the parallel scan's work outside its state loop (SASS, sm_90).
static __device__ __forceinline__ float mc_dev_exp(float v) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(v * 1.4426950408889634f));
    return y;
}

// softplus(v) = max(v, 0) + log1p(t), t = e^−|v| in [0, 1], log1p(t) = t·p(t) with p of degree 9 (a Chebyshev fit of
// log1p(t)/t on [0, 1], coefficients rounded to f32: at most 1.6e-7 relative, evaluated in f32) in place of log1pf's
// ~35 instructions. −inf gives 0, NaN NaN, as log1pf(expf(v)).
static __device__ __forceinline__ float mc_dev_log1p01(float t) {
    float p = -0.0032141131814569235f;
    p = fmaf(p, t, 0.019649622961878777f);
    p = fmaf(p, t, -0.05643612518906593f);
    p = fmaf(p, t, 0.10533368587493896f);
    p = fmaf(p, t, -0.15251556038856506f);
    p = fmaf(p, t, 0.19651539623737335f);
    p = fmaf(p, t, -0.24947820603847504f);
    p = fmaf(p, t, 0.3332909941673279f);
    p = fmaf(p, t, -0.4999985098838806f);
    p = fmaf(p, t, 1.0f);
    return t * p;
}

static __device__ __forceinline__ float mc_dev_softplus(float v) {
    return v > 20.0f ? v : fmaxf(v, 0.0f) + mc_dev_log1p01(mc_dev_exp(-fabsf(v)));
}

static __device__ __forceinline__ float mc_dev_silu(float v) {
    return __fdividef(v, 1.0f + mc_dev_exp(-v));
}

// The selective scan backward's arguments, shared by the tiled kernels (scan_bwd.cu) and the parallel ones
// (scan_par.cu): mc_scan_bwd_args_of takes the op's parameters in its order; each launcher adds its scratch (ck,
// part) and their counts (nch, nblk).
struct mc_scan_bwd_args {
    float *du, *ddt, *dz, *dB, *dC, *dA, *dD, *ddt_bias, *dh0;
    const float *dy, *dh_final, *u, *dt, *dt_bias, *A, *B, *C, *D, *z, *h0;
    float *ck;   // [Bt, nch, E, N] the state at the start of each chunk
    float *part; // per block: Σ over its channels of dB and dC (the layout is the kernel's)
    int64_t ldbc, ldz, L, E, N, nch, nblk;
};

// Points a->ck ([Bt, nch, E, N]) and a->part (Bt·nblk·2N·L floats) into the context's workspace, reserved for
// both; a->nch and a->nblk are the caller's. Sizes that would overflow are refused (scan_bwd.cu).
mc_status mc_scan_bwd_scratch(const mc_exec *ex, mc_scan_bwd_args *a, int64_t Bt);

static inline mc_scan_bwd_args mc_scan_bwd_args_of(float *du, float *ddt, float *dz, float *dB, float *dC, float *dA,
                                                   float *dD, float *ddt_bias, float *dh0, const float *dy,
                                                   const float *dh_final, const float *u, const float *dt,
                                                   const float *dt_bias, const float *A, const float *B,
                                                   const float *C, int64_t ldbc, const float *D, const float *z,
                                                   int64_t ldz, const float *h0, int64_t L, int64_t E, int64_t N) {
    mc_scan_bwd_args a = {};
    a.du = du;
    a.ddt = ddt;
    a.dz = dz;
    a.dB = dB;
    a.dC = dC;
    a.dA = dA;
    a.dD = dD;
    a.ddt_bias = ddt_bias;
    a.dh0 = dh0;
    a.dy = dy;
    a.dh_final = dh_final;
    a.u = u;
    a.dt = dt;
    a.dt_bias = dt_bias;
    a.A = A;
    a.B = B;
    a.C = C;
    a.D = D;
    a.z = z;
    a.h0 = h0;
    a.ldbc = ldbc;
    a.ldz = ldz;
    a.L = L;
    a.E = E;
    a.N = N;
    return a;
}

// Element i of a weight's data in its dtype, widened to f32 as kernels/dtype.h does (int8: q alone, the caller
// applies the group's scale).
static __device__ __forceinline__ float mc_dev_element(const void *data, int dtype, int64_t i) {
    switch (dtype) {
        case MC_DTYPE_F16:
            return __half2float(((const __half *)data)[i]);
        case MC_DTYPE_BF16:
            return __bfloat162float(((const __nv_bfloat16 *)data)[i]);
        case MC_DTYPE_I8:
            return (float)((const int8_t *)data)[i];
        default:
            return ((const float *)data)[i];
    }
}

static __device__ __forceinline__ float mc_sigmoid(float v) {
    return 1.0f / (1.0f + expf(-v));
}

// d silu(v) / dv = σ(v)·(1 + v·(1 − σ(v))) from s = σ(v), as the reference.
static __device__ __forceinline__ float mc_silu_grad(float s, float v) {
    return s * (1.0f + v * (1.0f - s));
}
