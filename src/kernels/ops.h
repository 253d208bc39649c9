// The kernel interface: one table of function pointers per backend. Kernels see only arrays, shapes and dtypes —
// no configs, files or tokens. Every entry has a plain twin in ref/ that the tests use as the oracle.
#pragma once

#include <stdint.h>

#include "mambac.h"

// The per-caller execution context: how a kernel call may run and where its errors go. Owned by the caller (the
// state or a training run), never by the shared model, so two threads can use one model with their own contexts.
typedef struct mc_exec {
    int n_threads;  // threads to use (1 = the calling thread only)
    void *dev;      // the backend's per-caller handle (CUDA: stream, cuBLAS handle, graphs); NULL on host backends
    mc_error *err;  // where a failing op writes its one-line message (may be NULL)
} mc_exec;

// A weight matrix [rows, cols], row-major, as stored: f32/f16/bf16 elements, or int8 with one f32 scale per group
// of `group` consecutive elements of a row (scales [rows, ceil(cols / group)]; value = q · scale).
typedef struct mc_weight {
    const void *data;
    int dtype; // mc_dtype
    int64_t rows, cols;
    const float *scales; // MC_DTYPE_I8 only
    int64_t group;       // MC_DTYPE_I8 only
} mc_weight;

typedef struct mc_ops {
    const char *name;

    // y[M, N] = x[M, K] · Wᵀ (+ bias[N] when bias != NULL), W = w [N, K] read as stored. Rows of x are ldx floats
    // apart. y does not alias x.
    void (*matmul)(const mc_exec *ex, float *y, const float *x, int64_t ldx, const mc_weight *w, const float *bias,
                   int64_t M, int64_t N, int64_t K);

    // out[i, :] = W[ids[i], :] for i < n; W is [rows, H]. ids were checked by the caller.
    void (*embed)(const mc_exec *ex, float *out, const mc_weight *w, const int32_t *ids, int64_t n, int64_t H);

    // Residual add + RMSNorm (spec §3.2–3.3): when add != NULL, x[m, :] += add[m, :] first; then
    // y[m, :] = x[m, :] / sqrt(mean(x[m, :]²) + eps) · w. y does not alias x.
    void (*rmsnorm)(const mc_exec *ex, float *y, float *x, const float *add, const float *w, int64_t M, int64_t H,
                    float eps);

    // Causal depthwise conv + SiLU over L steps of one sequence (spec §3.4 step 3), continuing from state [E, K]
    // (the last K inputs, oldest first), which is updated to the last K inputs after the call.
    // u[t, e] = silu(Σ_k w[e, k] · x[t − (K−1) + k, e] + b[e]); x rows are ldx floats apart; b may be NULL.
    void (*conv1d)(const mc_exec *ex, float *u, float *state, const float *x, int64_t ldx, const float *w,
                   const float *b, int64_t L, int64_t E, int64_t K);

    // Selective scan of one sequence (spec §3.4 steps 4–9), continuing from h [E, N] (updated in place):
    // Δ = softplus(dt[t, e] + dt_bias[e]); h = exp(Δ·A)·h + Δ·B[t]·u[t, e]; y = (C[t]·h + D[e]·u[t, e])·silu(z[t, e]).
    // u, dt, y are [L, E]; B and C rows are ldbc floats apart; z rows ldz floats apart.
    void (*selective_scan)(const mc_exec *ex, float *y, float *h, const float *u, const float *dt,
                           const float *dt_bias, const float *A, const float *B, const float *C, int64_t ldbc,
                           const float *D, const float *z, int64_t ldz, int64_t L, int64_t E, int64_t N);

    // One decode step of n_seq sequences in one call: conv1d and selective_scan with L replaced by n_seq, row b
    // being sequence b with its own state (conv state [n_seq, E, K], h [n_seq, E, N]); x, u, dt, y are [n_seq, ·]
    // rows as in the sequence forms (x ldx apart, B/C ldbc apart, z ldz apart).
    void (*conv1d_step)(const mc_exec *ex, float *u, float *state, const float *x, int64_t ldx, const float *w,
                        const float *b, int64_t n_seq, int64_t E, int64_t K);
    void (*selective_scan_step)(const mc_exec *ex, float *y, float *h, const float *u, const float *dt,
                                const float *dt_bias, const float *A, const float *B, const float *C, int64_t ldbc,
                                const float *D, const float *z, int64_t ldz, int64_t n_seq, int64_t E, int64_t N);

    // Next-token loss of T rows of logits [T, V]: out[t] = −log softmax(logits[t, :])[targets[t]], the row's max
    // subtracted first and the exponentials summed in double. targets were checked by the caller.
    void (*nll)(const mc_exec *ex, double *out, const float *logits, int64_t T, int64_t V, const int32_t *targets);
} mc_ops;

extern const mc_ops mc_ops_ref;
