// The kernel interface: one table of function pointers per backend. Kernels see only arrays, shapes and dtypes —
// no configs, files or tokens. Every entry has a plain twin in ref/ that the tests use as the oracle.
#pragma once

#include <stdint.h>

#include "mambac.h"

typedef struct mc_ops {
    const char *name;

    // y[M, N] = x[M, K] · W[N, K]ᵀ (+ bias[N] when bias != NULL). Rows of x are ldx floats apart; W is row-major
    // in wdtype (mc_dtype), read as stored.
    void (*matmul)(float *y, const float *x, int64_t ldx, const void *w, int wdtype, const float *bias, int64_t M,
                   int64_t N, int64_t K);

    // out[i, :] = W[ids[i], :] for i < n; W is [rows, H] in wdtype. ids were checked by the caller.
    void (*embed)(float *out, const void *w, int wdtype, const int32_t *ids, int64_t n, int64_t H);

    // y[m, :] = x[m, :] / sqrt(mean(x[m, :]²) + eps) · w (spec §3.2). y may equal x.
    void (*rmsnorm)(float *y, const float *x, const float *w, int64_t M, int64_t H, float eps);

    // Causal depthwise conv + SiLU over L steps of one sequence (spec §3.4 step 3), continuing from state [E, K]
    // (the last K inputs, oldest first), which is updated to the last K inputs after the call.
    // u[t, e] = silu(Σ_k w[e, k] · x[t − (K−1) + k, e] + b[e]); x rows are ldx floats apart; b may be NULL.
    void (*conv1d)(float *u, float *state, const float *x, int64_t ldx, const float *w, const float *b, int64_t L,
                   int64_t E, int64_t K);

    // Selective scan of one sequence (spec §3.4 steps 4–9), continuing from h [E, N] (updated in place):
    // Δ = softplus(dt[t, e] + dt_bias[e]); h = exp(Δ·A)·h + Δ·B[t]·u[t, e]; y = (C[t]·h + D[e]·u[t, e])·silu(z[t, e]).
    // u, dt, y are [L, E]; B and C rows are ldbc floats apart; z rows ldz floats apart.
    void (*selective_scan)(float *y, float *h, const float *u, const float *dt, const float *dt_bias, const float *A,
                           const float *B, const float *C, int64_t ldbc, const float *D, const float *z, int64_t ldz,
                           int64_t L, int64_t E, int64_t N);
} mc_ops;

extern const mc_ops mc_ops_ref;
