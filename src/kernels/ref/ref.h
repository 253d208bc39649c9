// The reference twins, callable one by one (fast backends fall back to them for entries they lack).
#pragma once

#include "kernels/ops.h"

void mc_ref_matmul(const mc_exec *ex, float *y, const float *x, int64_t ldx, const mc_weight *w, const float *bias,
                   int64_t M, int64_t N, int64_t K);
void mc_ref_embed(const mc_exec *ex, float *out, const mc_weight *w, const int32_t *ids, int64_t n, int64_t H);
void mc_ref_rmsnorm(const mc_exec *ex, float *y, float *x, const float *add, const float *w, int64_t M, int64_t H,
                    float eps);
void mc_ref_conv1d(const mc_exec *ex, float *u, float *state, const float *x, int64_t ldx, const float *w,
                   const float *b, int64_t L, int64_t E, int64_t K);
void mc_ref_selective_scan(const mc_exec *ex, float *y, float *h, const float *u, const float *dt,
                           const float *dt_bias, const float *A, const float *B, const float *C, int64_t ldbc,
                           const float *D, const float *z, int64_t ldz, int64_t L, int64_t E, int64_t N);
void mc_ref_conv1d_step(const mc_exec *ex, float *u, float *state, const float *x, int64_t ldx, const float *w,
                        const float *b, int64_t n_seq, int64_t E, int64_t K);
void mc_ref_selective_scan_step(const mc_exec *ex, float *y, float *h, const float *u, const float *dt,
                                const float *dt_bias, const float *A, const float *B, const float *C, int64_t ldbc,
                                const float *D, const float *z, int64_t ldz, int64_t n_seq, int64_t E, int64_t N);
// selective_scan_step_dt's reference: dt_proj by mc_ref_matmul into a row per sequence, then the reference step.
mc_status mc_ref_selective_scan_step_dt(const mc_exec *ex, float *y, float *h, const float *u, const float *q,
                                        int64_t ldq, const mc_weight *dt_w, const float *dt_bias, const float *A,
                                        const float *D, const float *z, int64_t ldz, int64_t n_seq, int64_t E,
                                        int64_t N, int64_t R);
void mc_ref_nll(const mc_exec *ex, double *out, const float *logits, int64_t T, int64_t V, const int32_t *targets);

// One row of mc_ref_nll, which the fast backends run on their threads (so their losses equal the reference's).
double mc_ref_nll_row(const float *row, int64_t V, int32_t target);

// A row's largest entry (*max) and Σ exp(row − max) summed in double: the softmax normaliser of mc_ref_nll_row.
double mc_ref_row_expsum(const float *row, int64_t V, float *max);

// y = a·y + b·x elementwise (ops.h `axpby`; x may be NULL).
void mc_ref_axpby(const mc_exec *ex, float *y, float a, const float *x, float b, int64_t n);

// ops.h `dropout`.
void mc_ref_dropout(const mc_exec *ex, float *y, const float *x, int64_t ldx, int64_t M, int64_t K, double p,
                    uint64_t key);
// y += a ⊙ b elementwise (ops.h `mul_acc`).
void mc_ref_mul_acc(const mc_exec *ex, float *y, const float *a, const float *b, int64_t n);

// Σ x² in double, AdamW, y = −exp(x) (ops.h `sumsq`, `adamw`, `neg_exp`).
double mc_ref_sumsq(const float *x, int64_t n);
void mc_ref_adamw(float *p, const float *g, float *m, float *v, int64_t n, const mc_adamw_args *a);
void mc_ref_neg_exp(float *y, const float *x, int64_t n);
