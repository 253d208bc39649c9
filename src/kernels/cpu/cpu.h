// The CPU backend: SIMD kernels chosen for this CPU at run time, threaded with OpenMP (the training backward's
// matrix products are OpenBLAS sgemm calls split over the same OpenMP threads).
//
// Each op has one kernel per instruction set (mc_cpu_isa), collected in one table per ISA (mc_cpu_kernels);
// mc_ops_cpu_init wires the best table this CPU runs into the backend's op table, and the tests and benchmarks take
// every table by ISA. The kernels' contracts are those of the matching mc_ops entries (kernels/ops.h) for one
// sequence (the op table adds the batch and the status); their oracles are the mc_ref_* twins.
#pragma once

#include <stdint.h>

#include "kernels/ops.h"

typedef enum mc_cpu_isa {
    MC_CPU_ISA_C = 0,  // portable C (OpenMP threads, libm exp) that the compiler vectorizes: builds anywhere
    MC_CPU_ISA_AVX2,   // x86-64 AVX2 + FMA + F16C, 8 lanes
    MC_CPU_ISA_AVX512, // x86-64 AVX-512 F/BW/DQ/VL, 16 lanes
    MC_CPU_ISA_COUNT,
} mc_cpu_isa;

typedef void (*mc_cpu_matmul_fn)(const mc_exec *ex, float *y, const float *x, int64_t ldx, const mc_weight *w,
                                 const float *bias, int64_t M, int64_t N, int64_t K);
typedef void (*mc_cpu_embed_fn)(const mc_exec *ex, float *out, const mc_weight *w, const int32_t *ids, int64_t n,
                                int64_t H);
typedef void (*mc_cpu_rmsnorm_fn)(const mc_exec *ex, float *y, float *x, const float *add, const float *w, int64_t M,
                                  int64_t H, float eps);
typedef void (*mc_cpu_conv1d_fn)(const mc_exec *ex, float *u, float *state, const float *x, int64_t ldx, const float *w,
                                 const float *b, int64_t L, int64_t E, int64_t K);
typedef void (*mc_cpu_selective_scan_fn)(const mc_exec *ex, float *y, float *h, const float *u, const float *dt,
                                         const float *dt_bias, const float *A, const float *B, const float *C,
                                         int64_t ldbc, const float *D, const float *z, int64_t ldz, int64_t L,
                                         int64_t E, int64_t N);
// Backward kernels with exp in their inner loops: the ops.h entries of the same names, whole batch and status.
typedef mc_status (*mc_cpu_conv1d_bwd_fn)(const mc_exec *ex, float *dx, float *dw, float *db, float *dstate0,
                                          const float *du, const float *dstate_final, const float *x, int64_t ldx,
                                          const float *state0, const float *w, const float *b, int64_t Bt, int64_t L,
                                          int64_t E, int64_t K);
typedef mc_status (*mc_cpu_selective_scan_bwd_fn)(const mc_exec *ex, float *du, float *ddt, float *dz, float *dB,
                                                  float *dC, float *dA, float *dD, float *ddt_bias, float *dh0,
                                                  const float *dy, const float *dh_final, const float *u,
                                                  const float *dt, const float *dt_bias, const float *A, const float *B,
                                                  const float *C, int64_t ldbc, const float *D, const float *z,
                                                  int64_t ldz, const float *h0, int64_t Bt, int64_t L, int64_t E,
                                                  int64_t N);
typedef mc_status (*mc_cpu_cross_entropy_fn)(const mc_exec *ex, float *dlogits, double *loss_sum, int64_t *n_valid,
                                             const float *logits, const int32_t *targets, int64_t T, int64_t V,
                                             float scale);

// The kernels of one instruction set.
// - matmul: M = 1 (decode) reads W as one prefetched stream; M < 16 (10 for f32 on AVX-512; batched decode) reads
//   each weight row once and dots it with all rows of x; larger M (prefill) packs x and runs a register-blocked
//   tile kernel over f32 tiles of W. The portable one dots each row with all rows of x.
// - conv1d_step / selective_scan_step: a decode step of a batch, the sequence signature with L replaced by n_seq,
//   the rows being one step of n_seq sequences each with its own state (conv1d_step: x rows ldx apart, u [n_seq, E],
//   state [n_seq, E, K]; selective_scan_step: u, dt, y [n_seq, E], B/C rows ldbc apart, z rows ldz apart,
//   h [n_seq, E, N]). That is how forward.c's buffers lie at T = 1, so a decode step is one call (one thread fork)
//   per layer instead of one per sequence. Each equals n_seq sequence calls with L = 1.
// - conv1d_bwd, selective_scan_bwd, cross_entropy (training): portable C (threads, libm exp), AVX2 and AVX-512.
typedef struct mc_cpu_kernels {
    mc_cpu_isa isa;
    const char *name; // "c", "avx2", "avx512"
    mc_cpu_matmul_fn matmul;
    mc_cpu_embed_fn embed;
    mc_cpu_rmsnorm_fn rmsnorm;
    mc_cpu_conv1d_fn conv1d;
    mc_cpu_conv1d_fn conv1d_step;
    mc_cpu_selective_scan_fn selective_scan;
    mc_cpu_selective_scan_fn selective_scan_step;
    mc_cpu_conv1d_bwd_fn conv1d_bwd;
    mc_cpu_selective_scan_bwd_fn selective_scan_bwd;
    mc_cpu_cross_entropy_fn cross_entropy;
} mc_cpu_kernels;

// The table of isa, or NULL when this build or this CPU lacks it. Reads CPUID, which a virtual machine traps
// (~8 µs): look up once, at backend init.
const mc_cpu_kernels *mc_cpu_kernels_get(int isa);

// The fastest table this CPU runs (never NULL: portable C is always there).
const mc_cpu_kernels *mc_cpu_kernels_best(void);

// Fills ops with the cpu backend: the best table's kernels, the batch and status around them, host memory.
void mc_ops_cpu_init(mc_ops *ops);

// The next-token loss (ops.h `nll`): mc_ref_nll's rows, split over the threads.
void mc_cpu_nll(const mc_exec *ex, double *out, const float *logits, int64_t T, int64_t V, const int32_t *targets);

// Training: the backward ops without an ISA table (ops.h contracts, those of the mc_ref_* twins in
// kernels/ref/backward.h, whole batch and status). matmul_dx and matmul_dw are OpenBLAS sgemm calls split over the
// threads (f16/bf16/int8 weights of matmul_dx are widened to f32 panels first); embed_bwd and rmsnorm_bwd are
// threaded loops.
mc_status mc_cpu_matmul_dx(const mc_exec *ex, float *dx, int64_t ldx, const float *dy, const mc_weight *w, int64_t M,
                           int64_t N, int64_t K, bool accumulate);
mc_status mc_cpu_matmul_dw(const mc_exec *ex, float *dw, float *dbias, const float *dy, const float *x, int64_t ldx,
                           int64_t M, int64_t N, int64_t K);
mc_status mc_cpu_embed_bwd(const mc_exec *ex, float *dw, const float *dout, const int32_t *ids, int64_t n, int64_t V,
                           int64_t H);
mc_status mc_cpu_rmsnorm_bwd(const mc_exec *ex, float *dx, float *dw, const float *dy, const float *x, const float *w,
                             int64_t M, int64_t H, float eps);

// The per-ISA backward kernels (signatures as the mc_cpu_*_bwd_fn typedefs).
#define MC_CPU_DECLARE_BWD(isa)                                                                                      \
    mc_status mc_cpu_conv1d_bwd_##isa(const mc_exec *ex, float *dx, float *dw, float *db, float *dstate0,            \
                                      const float *du, const float *dstate_final, const float *x, int64_t ldx,       \
                                      const float *state0, const float *w, const float *b, int64_t Bt, int64_t L,    \
                                      int64_t E, int64_t K);                                                         \
    mc_status mc_cpu_selective_scan_bwd_##isa(                                                                       \
        const mc_exec *ex, float *du, float *ddt, float *dz, float *dB, float *dC, float *dA, float *dD,             \
        float *ddt_bias, float *dh0, const float *dy, const float *dh_final, const float *u, const float *dt,        \
        const float *dt_bias, const float *A, const float *B, const float *C, int64_t ldbc, const float *D,          \
        const float *z, int64_t ldz, const float *h0, int64_t Bt, int64_t L, int64_t E, int64_t N);                 \
    mc_status mc_cpu_cross_entropy_##isa(const mc_exec *ex, float *dlogits, double *loss_sum, int64_t *n_valid,      \
                                         const float *logits, const int32_t *targets, int64_t T, int64_t V,          \
                                         float scale);
MC_CPU_DECLARE_BWD(c)
#if defined(__x86_64__)
MC_CPU_DECLARE_BWD(avx2)
MC_CPU_DECLARE_BWD(avx512)
#endif

// The kernels, per ISA (x86-64 ones exist only there). Signatures as the typedefs above.
#define MC_CPU_DECLARE_ISA(isa)                                                                                      \
    void mc_cpu_matmul_##isa(const mc_exec *ex, float *y, const float *x, int64_t ldx, const mc_weight *w,           \
                             const float *bias, int64_t M, int64_t N, int64_t K);                                    \
    void mc_cpu_embed_##isa(const mc_exec *ex, float *out, const mc_weight *w, const int32_t *ids, int64_t n,         \
                            int64_t H);                                                                              \
    void mc_cpu_rmsnorm_##isa(const mc_exec *ex, float *y, float *x, const float *add, const float *w, int64_t M,     \
                              int64_t H, float eps);                                                                 \
    void mc_cpu_conv1d_##isa(const mc_exec *ex, float *u, float *state, const float *x, int64_t ldx, const float *w,  \
                             const float *b, int64_t L, int64_t E, int64_t K);                                       \
    void mc_cpu_conv1d_step_##isa(const mc_exec *ex, float *u, float *state, const float *x, int64_t ldx,            \
                                  const float *w, const float *b, int64_t n_seq, int64_t E, int64_t K);              \
    void mc_cpu_selective_scan_##isa(const mc_exec *ex, float *y, float *h, const float *u, const float *dt,         \
                                     const float *dt_bias, const float *A, const float *B, const float *C,           \
                                     int64_t ldbc, const float *D, const float *z, int64_t ldz, int64_t L, int64_t E, \
                                     int64_t N);                                                                     \
    void mc_cpu_selective_scan_step_##isa(const mc_exec *ex, float *y, float *h, const float *u, const float *dt,    \
                                          const float *dt_bias, const float *A, const float *B, const float *C,      \
                                          int64_t ldbc, const float *D, const float *z, int64_t ldz, int64_t n_seq,  \
                                          int64_t E, int64_t N);
MC_CPU_DECLARE_ISA(c)
#if defined(__x86_64__)
MC_CPU_DECLARE_ISA(avx2)
MC_CPU_DECLARE_ISA(avx512)
#endif
