// Reference backward kernels: the gradients of the forward twins in ref.c (spec §6.1, Appendix A), scalar loops,
// no threads. Fast CPU and CUDA backward kernels are tested against these; these are tested by finite differences.
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "kernels/ops.h"

// Conventions shared by every function below:
// - Gradients into parameters (dW, dw, db, dA, dD, ddt_bias) ACCUMULATE (+=), so chunks and sequences add up.
//   Gradients into activations are written (=) unless the comment says +=.
// - Sequence forms take Bt sequences of L steps laid out contiguously: sequence b's rows start at row b·L.
// - Errors: MC_ERR_INVALID for bad sizes, strides or ids (nothing is written then), MC_ERR_NOMEM when scratch cannot
//   be allocated; the message goes to ex->err (ex->err may be NULL).

// The argument checks of the backward ops, shared by the host backends so the same calls are refused with the same
// one-line message (MC_ERR_INVALID in ex->err; MC_OK otherwise). Ids and targets are all checked before anything is
// written. w == NULL: no weight to check (matmul_dw).
mc_status mc_bwd_check_matmul(const mc_exec *ex, const char *op, int64_t M, int64_t N, int64_t K, int64_t ldx,
                              const mc_weight *w);
mc_status mc_bwd_check_embed(const mc_exec *ex, const int32_t *ids, int64_t n, int64_t V, int64_t H);
mc_status mc_bwd_check_rmsnorm(const mc_exec *ex, int64_t M, int64_t H);
mc_status mc_bwd_check_conv1d(const mc_exec *ex, int64_t Bt, int64_t L, int64_t E, int64_t K, int64_t ldx);
mc_status mc_bwd_check_scan(const mc_exec *ex, int64_t Bt, int64_t L, int64_t E, int64_t N, int64_t ldbc, int64_t ldz);
mc_status mc_bwd_check_cross_entropy(const mc_exec *ex, const int32_t *targets, int64_t T, int64_t V);

// Backward of mc_ref_matmul wrt its input: dx[m, k] = Σ_n dy[m, n] · W[n, k], added to dx when accumulate, else
// written. W is read as mc_ref_matmul reads it (f32/f16/bf16, int8 · group scale).
mc_status mc_ref_matmul_dx(const mc_exec *ex, float *dx, int64_t ldx, // [M, K], rows ldx apart
                           const float *dy,                           // [M, N]
                           const mc_weight *w,                        // [N, K], any dtype
                           int64_t M, int64_t N, int64_t K, bool accumulate);

// Backward of mc_ref_matmul wrt its parameters: dw += dyᵀ · x, and dbias[n] += Σ_m dy[m, n] when dbias != NULL.
mc_status mc_ref_matmul_dw(const mc_exec *ex, float *dw, // [N, K] f32, +=
                           float *dbias,                 // [N], +=, or NULL
                           const float *dy,              // [M, N]
                           const float *x, int64_t ldx,  // [M, K], rows ldx apart
                           int64_t M, int64_t N, int64_t K);

// Backward of mc_ref_embed: dw[ids[i], :] += dout[i, :] (repeated ids add up). Every id must be in [0, V).
mc_status mc_ref_embed_bwd(const mc_exec *ex, float *dw, // [V, H] f32, +=
                           const float *dout,            // [n, H]
                           const int32_t *ids,           // [n]
                           int64_t n, int64_t V, int64_t H);

// Backward of y = x / sqrt(mean(x²) + eps) · w per row (mc_ref_rmsnorm, x = the stream after the residual add):
// dx += r·w·dy − x·r³·mean(w·dy·x), dw += Σ_rows dy·x·r. dx accumulates because the residual stream's gradient
// (the identity branch of the add) is already in it: the caller passes the same dx to both branches.
mc_status mc_ref_rmsnorm_bwd(const mc_exec *ex, float *dx, // [M, H], +=
                             float *dw,                    // [H], +=
                             const float *dy,              // [M, H]
                             const float *x,               // [M, H]
                             const float *w,               // [H]
                             int64_t M, int64_t H, float eps);

// Backward of mc_ref_conv1d over Bt sequences: u[t, e] = silu(Σ_k w[e, k]·x[t − (K−1) + k, e] + b[e]), inputs
// before t = 0 read from the starting window state0 (column K + s holds input s < 0). dx is written (rows ldx
// apart, like x); dw and db accumulate; dstate0 (written) is the gradient wrt the starting window, for truncated
// BPTT across chunks. dstate_final is the gradient flowing into the window the forward leaves behind (the last K
// of [state0, x]; NULL = zero): pass the next chunk's dstate0 so chunked backward equals one long run. dstate0 may
// alias dstate_final. b == NULL means no bias; db may be NULL; dstate0 may be NULL.
mc_status mc_ref_conv1d_bwd(const mc_exec *ex, float *dx, // [Bt, L, E], rows ldx apart, written
                            float *dw,                    // [E, K], +=
                            float *db,                    // [E], +=, or NULL
                            float *dstate0,               // [Bt, E, K], written, or NULL
                            const float *du,              // [Bt, L, E] gradient wrt the SiLU output u
                            const float *dstate_final,    // [Bt, E, K] or NULL
                            const float *x, int64_t ldx,  // [Bt, L, E], rows ldx apart
                            const float *state0,          // [Bt, E, K]
                            const float *w,               // [E, K]
                            const float *b,               // [E] or NULL
                            int64_t Bt, int64_t L, int64_t E, int64_t K);

// Backward of mc_ref_selective_scan over Bt sequences, each from its starting state h0 (NULL = zeros):
// v = dt + dt_bias, Δ = softplus(v) (identity above 20, spec §3.7), h = exp(Δ·A)·h + Δ·B·u,
// y = (C·h + D·u)·silu(z). The inner states are recomputed from the inputs, one channel at a time (O(L·N) scratch
// per sequence), never read from storage.
// Written: du, ddt (wrt dt, before bias and softplus), dz (rows ldz apart, like z), dB and dC (rows ldbc apart, like
// B and C, summed over E), dh0 (gradient wrt h0, for truncated BPTT; may be NULL, may alias dh_final).
// Accumulated: dA, dD, ddt_bias. dA is wrt A itself: the model stores A_log with A = −exp(A_log), so the caller
// gets dA_log = dA · A.
// dh_final is the gradient flowing into the final state (NULL = zero): pass the next chunk's dh0 so chunked
// backward equals one long run.
mc_status mc_ref_selective_scan_bwd(const mc_exec *ex, float *du,                 // [Bt, L, E]
                                    float *ddt,                                   // [Bt, L, E]
                                    float *dz,                                    // [Bt, L, E], rows ldz apart
                                    float *dB, float *dC,                         // [Bt, L, N] each, rows ldbc apart
                                    float *dA,                                    // [E, N], +=
                                    float *dD,                                    // [E], +=
                                    float *ddt_bias,                              // [E], +=
                                    float *dh0,                                   // [Bt, E, N] or NULL
                                    const float *dy,                              // [Bt, L, E]
                                    const float *dh_final,                        // [Bt, E, N] or NULL
                                    const float *u,                               // [Bt, L, E]
                                    const float *dt,                              // [Bt, L, E]
                                    const float *dt_bias,                         // [E]
                                    const float *A,                               // [E, N]
                                    const float *B, const float *C, int64_t ldbc, // [Bt, L, N] each, rows ldbc apart
                                    const float *D,                               // [E]
                                    const float *z, int64_t ldz,                  // [Bt, L, E], rows ldz apart
                                    const float *h0,                              // [Bt, E, N] or NULL
                                    int64_t Bt, int64_t L, int64_t E, int64_t N);

// Next-token loss and its logit gradient for T rows (spec §6): targets[t] in [0, V), or −100 to ignore the row.
// *loss_sum += Σ −log softmax(logits[t])[targets[t]] over kept rows (the numbers of mc_ref_nll_row), *n_valid += the
// kept count, dlogits[t] = scale · (softmax(logits[t]) − onehot(targets[t])) for kept rows and 0 for ignored ones.
// The caller picks scale = 1 / (valid targets in the batch) so the loss is a mean. dlogits may alias logits.
mc_status mc_ref_cross_entropy(const mc_exec *ex, float *dlogits, // [T, V]
                               double *loss_sum, int64_t *n_valid,
                               const float *logits,    // [T, V]
                               const int32_t *targets, // [T]
                               int64_t T, int64_t V, float scale);
