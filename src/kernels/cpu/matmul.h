// The CPU backend's matrix multiply (the `matmul` entry of ops.h): AVX-512, AVX2+FMA and portable C variants of
// y[M, N] = x[M, K]·Wᵀ (+bias), W read as stored. The caller wires the selected one into its op table.
#pragma once

#include "kernels/ops.h"

// The signature of ops.h's `matmul` entry.
typedef void (*mc_cpu_matmul_fn)(const mc_exec *ex, float *y, const float *x, int64_t ldx, const mc_weight *w,
                                 const float *bias, int64_t M, int64_t N, int64_t K);

// The implementations, best last. Every one handles every shape and dtype; they differ in the instructions used.
// Shapes (SIMD variants): M = 1 (decode) reads W as one prefetched stream; M < 16 (10 for f32 on AVX-512; batched
// decode) reads each weight row once and dots it with all rows of x; larger M (prefill) packs x and runs a
// register-blocked tile kernel over f32 tiles of W. The portable variant dots each row with all rows of x.
typedef enum mc_cpu_matmul_variant {
    MC_CPU_MATMUL_PORTABLE = 0, // plain C that the compiler vectorizes; builds anywhere (ARM64 included)
    MC_CPU_MATMUL_AVX2,         // x86-64 with AVX2, FMA and F16C
    MC_CPU_MATMUL_AVX512,       // x86-64 with AVX-512 F/BW/VL/DQ
    MC_CPU_MATMUL_COUNT
} mc_cpu_matmul_variant;

// The best variant this CPU runs (detected with __builtin_cpu_supports on x86-64).
mc_cpu_matmul_fn mc_cpu_matmul_select(void);

// Variant `variant` (mc_cpu_matmul_variant), or NULL when this build or CPU lacks it. For tests and benchmarks.
mc_cpu_matmul_fn mc_cpu_matmul_variant_get(int variant);

// "portable", "avx2", "avx512" (or "?" for an unknown value).
const char *mc_cpu_matmul_variant_name(int variant);
