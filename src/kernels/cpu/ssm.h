// The cpu backend's SSM-path kernels other than matmul: embedding lookup, residual add + RMSNorm, causal conv1d +
// SiLU and the selective scan. Each op has one variant per instruction set; _select() picks the best the running CPU
// supports (AVX-512, AVX2+FMA, portable C), _variant() hands out one by name for the parity tests and benchmarks.
// Contracts are those of the matching mc_ops entries (kernels/ops.h); the oracles are the mc_ref_* twins.
#pragma once

#include <stdint.h>

#include "kernels/ops.h"

typedef enum mc_ssm_isa {
    MC_SSM_ISA_C = 0,  // portable C (OpenMP threads, libm exp): builds everywhere, ARM64 included
    MC_SSM_ISA_AVX2,   // x86-64 AVX2 + FMA + F16C, 8 lanes
    MC_SSM_ISA_AVX512, // x86-64 AVX-512 F/BW/DQ/VL, 16 lanes
    MC_SSM_ISA_COUNT,
} mc_ssm_isa;

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

// The variant for isa (mc_ssm_isa), or NULL when it is not built for this architecture or the CPU lacks it. These
// and the _select() functions read CPUID, which a virtual machine traps (~8 µs): look up once, at backend init.
mc_cpu_embed_fn mc_cpu_embed_variant(int isa);
mc_cpu_rmsnorm_fn mc_cpu_rmsnorm_variant(int isa);
mc_cpu_conv1d_fn mc_cpu_conv1d_variant(int isa);
mc_cpu_selective_scan_fn mc_cpu_selective_scan_variant(int isa);

// The fastest variant this CPU runs (never NULL: portable C is always there).
mc_cpu_embed_fn mc_cpu_embed_select(void);
mc_cpu_rmsnorm_fn mc_cpu_rmsnorm_select(void);
mc_cpu_conv1d_fn mc_cpu_conv1d_select(void);
mc_cpu_selective_scan_fn mc_cpu_selective_scan_select(void);

// Decode steps of a batch (mc_<backend>_<op>_step): the same signature as the sequence kernels with L replaced by
// n_seq, the rows being one step of n_seq different sequences, each with its own state: conv1d_step takes x rows
// ldx apart, u [n_seq, E], state [n_seq, E, K]; selective_scan_step takes u, dt, y [n_seq, E], B/C rows ldbc
// apart, z rows ldz apart, h [n_seq, E, N]. This is how forward.c's buffers lie at T = 1, so a decode step of
// Bt sequences is one call (one thread fork) per layer instead of Bt. Each equals n_seq sequence calls with L = 1.
mc_cpu_conv1d_fn mc_cpu_conv1d_step_variant(int isa);
mc_cpu_selective_scan_fn mc_cpu_selective_scan_step_variant(int isa);
mc_cpu_conv1d_fn mc_cpu_conv1d_step_select(void);
mc_cpu_selective_scan_fn mc_cpu_selective_scan_step_select(void);
