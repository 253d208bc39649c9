// The kernel interface: one table of function pointers per backend. Kernels see only arrays, shapes and dtypes —
// no configs, files or tokens. Every entry has a plain twin in ref/ that the tests use as the oracle.
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "mambac.h"

// The per-caller execution context: how a kernel call may run and where its errors go. Owned by the caller (the
// state or a training run), never by the shared model, so two threads can use one model with their own contexts.
// How a backend may multiply: MC_MATH_F32 (the default) keeps f32 products' accuracy (the CUDA backend runs its
// large f32 products as three TF32 tensor-core terms an operand: ~1e-5 of the largest output against SGEMM's
// ~1e-6 and TF32's ~3e-4, measured). On a GPU, MC_MATH_TF32 and MC_MATH_BF16 let the tensor cores round each
// product's operands to TF32 or bf16 (f32 accumulation, f32 in and out), as PyTorch's allow_tf32 and bf16 autocast
// do; the host backends always compute in f32.
enum { MC_MATH_F32 = 0, MC_MATH_TF32, MC_MATH_BF16 };

typedef struct mc_exec {
    int n_threads;  // threads to use (1 = the calling thread only)
    int math;       // MC_MATH_*: set by the caller after exec_init (which sets MC_MATH_F32)
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

// The scalars of one AdamW step (torch's roundings, train/optim.h): p ← p·decay; m ← fma(w1, g − m, m);
// v ← fma(w2·g, g, v·beta2); p ← p + (neg_step · m) / (sqrtf(v) / bc2_sqrt + eps).
typedef struct mc_adamw_args {
    float decay;    // 1 − lr·wd for decayed tensors, 1 otherwise
    float w1;       // 1 − β1
    float beta2;    // β2
    float w2;       // 1 − β2
    float neg_step; // −lr / (1 − β1^t)
    float bc2_sqrt; // sqrt(1 − β2^t)
    float eps;
} mc_adamw_args;

// Token choice settings for the `sample` op, resolved from mc_sampler_opts (generate/sampler.c) with torch's f32
// roundings of HF's Python floats. A processor runs only when its flag is set (top_k: when > 0), in this order:
// repetition penalty (also when !do_sample), then only when do_sample temperature, top-k, top-p, min-p.
typedef struct mc_sample_args {
    bool do_sample;         // false: first argmax after the penalty
    bool penalty_on;        // repetition_penalty != 1
    float penalty;          // (f32) repetition_penalty
    bool temperature_on;    // temperature != 1
    float temperature;      // (f32) temperature
    int64_t top_k;          // 0 = off
    bool top_p_on;          // top_p < 1
    float top_p_threshold;  // (f32)(1 - top_p), computed in double as transformers does
    bool min_p_on;          // min_p > 0
    float min_p;            // (f32) min_p
} mc_sample_args;

// A backend: the memory it computes in, per-caller contexts, and the compute ops. Every entry returns mc_status
// (a failed launch or allocation is reported through ex->err, never by exiting). Pointers handed to the memory
// and compute entries live in the backend's memory (host memory when host_memory is true), except where an entry
// says otherwise. Calls on one context run in order; `sync` waits for them (a no-op on the host backends).
typedef struct mc_ops {
    const char *name;
    mc_backend backend; // never MC_BACKEND_AUTO
    bool host_memory;   // the backend computes in host memory: a caller's host pointers may be passed directly

    // A per-caller context: n_threads, and on a device its stream and library handles. exec_free(NULL) is a no-op.
    mc_status (*exec_init)(mc_exec *ex, int n_threads, mc_error *err);
    void (*exec_free)(mc_exec *ex);

    // Memory: alloc returns `bytes` zeroed bytes, 64-byte aligned (*out NULL on failure); free(NULL) is a no-op.
    // upload copies host → backend, download backend → host, copy within the backend; zero clears bytes.
    mc_status (*alloc)(const mc_exec *ex, void **out, size_t bytes);
    void (*free)(const mc_exec *ex, void *p);
    mc_status (*upload)(const mc_exec *ex, void *dst, const void *src, size_t bytes);
    mc_status (*download)(const mc_exec *ex, void *dst, const void *src, size_t bytes);
    mc_status (*copy)(const mc_exec *ex, void *dst, const void *src, size_t bytes);
    mc_status (*zero)(const mc_exec *ex, void *dst, size_t bytes);
    mc_status (*sync)(const mc_exec *ex);

    // Optional (NULL on the host backends, whose calls cost nothing to issue): replay of recorded calls. The calls
    // between graph_begin and graph_end on this context are recorded under `key`, which must name everything they
    // read or write by address, their shapes and scalars; a later graph_begin with that key launches the recording
    // instead, sets *replayed and the caller skips the calls and graph_end. Otherwise the caller makes the calls
    // (recorded or run directly, the backend decides) and then calls graph_end, with ok = false when one of them
    // failed (a recording in progress is dropped). No call in between may synchronize or copy to or from the host.
    mc_status (*graph_begin)(const mc_exec *ex, uint64_t key, bool *replayed);
    mc_status (*graph_end)(const mc_exec *ex, bool ok);

    // y[M, N] = x[M, K] · Wᵀ (+ bias[N] when bias != NULL), W = w [N, K] read as stored. Rows of x are ldx floats
    // apart. y does not alias x.
    mc_status (*matmul)(const mc_exec *ex, float *y, const float *x, int64_t ldx, const mc_weight *w,
                        const float *bias, int64_t M, int64_t N, int64_t K);

    // Optional (NULL: matmul into a scratch, then axpby): y[M, N] += x[M, K] · Wᵀ for an f32 weight w [N, K] (the
    // trainer's LoRA branch added onto its base product), rows of x ldx apart; y does not alias x. One pass over y
    // where the pair takes three.
    mc_status (*matmul_add)(const mc_exec *ex, float *y, const float *x, int64_t ldx, const mc_weight *w, int64_t M,
                            int64_t N, int64_t K);

    // Optional (NULL: nothing is kept): the caller promises that the `bytes` at p (a weight it does not train) stay
    // as they are until exec_free, so the backend may keep copies derived from them across calls (CUDA: the
    // converted operand copies of its f32 products, up to MAMBAC_CVT_CACHE_MB megabytes; unset or 0: none).
    mc_status (*freeze)(const mc_exec *ex, const void *p, size_t bytes);

    // out[b, t, :] = W[ids[b · ldi + t], :] for Bt sequences of T positions; W is [rows, H]. ids were checked by
    // the caller.
    mc_status (*embed)(const mc_exec *ex, float *out, const mc_weight *w, const int32_t *ids, int64_t ldi,
                       int64_t Bt, int64_t T, int64_t H);

    // Residual add + RMSNorm (spec §3.2–3.3): when add != NULL, x[m, :] += add[m, :] first; then
    // y[m, :] = x[m, :] / sqrt(mean(x[m, :]²) + eps) · w. y does not alias x.
    mc_status (*rmsnorm)(const mc_exec *ex, float *y, float *x, const float *add, const float *w, int64_t M,
                         int64_t H, float eps);

    // Causal depthwise conv + SiLU over Bt sequences of L steps (spec §3.4 step 3), each continuing from its state
    // [E, K] (the last K inputs, oldest first; state is [Bt, E, K]), updated to the last K inputs after the call.
    // u[b, t, e] = silu(Σ_k w[e, k] · x[b, t − (K−1) + k, e] + b[e]); x rows are ldx floats apart (sequence b
    // starts at row b · L); u is [Bt, L, E]; bias may be NULL.
    mc_status (*conv1d)(const mc_exec *ex, float *u, float *state, const float *x, int64_t ldx, const float *w,
                        const float *bias, int64_t Bt, int64_t L, int64_t E, int64_t K);

    // Selective scan of Bt sequences (spec §3.4 steps 4–9), each continuing from h [E, N] (h is [Bt, E, N],
    // updated in place): Δ = softplus(dt[t, e] + dt_bias[e]); h = exp(Δ·A)·h + Δ·B[t]·u[t, e];
    // y = (C[t]·h + D[e]·u[t, e])·silu(z[t, e]). u, dt, y are [Bt, L, E]; B and C rows are ldbc floats apart, z
    // rows ldz apart (sequence b starts at row b · L of each).
    mc_status (*selective_scan)(const mc_exec *ex, float *y, float *h, const float *u, const float *dt,
                                const float *dt_bias, const float *A, const float *B, const float *C, int64_t ldbc,
                                const float *D, const float *z, int64_t ldz, int64_t Bt, int64_t L, int64_t E,
                                int64_t N);

    // One decode step of n_seq sequences: the sequence forms with L = 1 and Bt = n_seq, row b being sequence b
    // with its own state (conv state [n_seq, E, K], h [n_seq, E, N]). Kept apart because a step is laid out for
    // parallelism across sequences, not along time.
    mc_status (*conv1d_step)(const mc_exec *ex, float *u, float *state, const float *x, int64_t ldx, const float *w,
                             const float *bias, int64_t n_seq, int64_t E, int64_t K);
    mc_status (*selective_scan_step)(const mc_exec *ex, float *y, float *h, const float *u, const float *dt,
                                     const float *dt_bias, const float *A, const float *B, const float *C,
                                     int64_t ldbc, const float *D, const float *z, int64_t ldz, int64_t n_seq,
                                     int64_t E, int64_t N);
    // Optional (NULL: the forward runs matmul, then selective_scan_step): the step with dt_proj folded in, one launch
    // instead of two on a device. q [n_seq, ldq] is x_proj's output (δ rank R, then B, then C, N each); dt_w is
    // dt_proj's weight [E, R]: dt[b, e] = q[b, 0:R] · dt_w[e, :], then selective_scan_step(dt, B = q + R, C = q + R + N,
    // ldbc = ldq). Reference: mc_ref_selective_scan_step_dt.
    mc_status (*selective_scan_step_dt)(const mc_exec *ex, float *y, float *h, const float *u, const float *q,
                                        int64_t ldq, const mc_weight *dt_w, const float *dt_bias, const float *A,
                                        const float *D, const float *z, int64_t ldz, int64_t n_seq, int64_t E,
                                        int64_t N, int64_t R);

    // Next-token loss of T rows of logits [T, V] in HOST memory (as mc_model_forward returns them):
    // out[t] = −log softmax(logits[t, :])[targets[t]], the row's max subtracted first and the exponentials summed
    // in double. targets were checked by the caller.
    mc_status (*nll)(const mc_exec *ex, double *out, const float *logits, int64_t T, int64_t V,
                     const int32_t *targets);

    // Token choice for n rows of logits [n, V] (rows ld floats apart) in the backend's memory, not modified: the
    // processors of `a` (kernels/ref/sample.h has the math), then the first argmax (greedy) or the first entry whose
    // cumulative weight exp(s − max) exceeds uniforms[r] · Σ weights (a draw from softmax). Row r's penalty reads
    // prev[prev_off[r] .. prev_off[r + 1]) (repeats allowed, ids in [0, V)). out_ids [n], prev, prev_off [n + 1] and
    // uniforms [n] are in HOST memory, so on a device only the ids cross back.
    mc_status (*sample)(const mc_exec *ex, int32_t *out_ids, const float *logits, int64_t ld, int64_t n, int64_t V,
                        const mc_sample_args *a, const int32_t *prev, const int64_t *prev_off,
                        const double *uniforms);

    // y[i] = a · y[i] + b · x[i] for i < n (x may be NULL: then y = a · y). x may equal y.
    mc_status (*axpby)(const mc_exec *ex, float *y, float a, const float *x, float b, int64_t n);
    // y[i] += a[i] · b[i] for i < n.
    mc_status (*mul_acc)(const mc_exec *ex, float *y, const float *a, const float *b, int64_t n);

    // Inverted dropout (LoRA's, on an adapter's input): y[m·K + k] = x[m·ldx + k] · mask, the mask 1/(1 − p) where
    // mc_dropout_u(key, m·K + k) >= p and 0 elsewhere (kernels/dropout.h: the same mask on every backend, and again
    // for the same key). y is packed [M, K]; it may be x itself when ldx = K.
    mc_status (*dropout)(const mc_exec *ex, float *y, const float *x, int64_t ldx, int64_t M, int64_t K, double p,
                         uint64_t key);

    // The optimizer's elementwise parts (train/optim.h has the formulas). *out = Σ x[i]² summed in double
    // (written, in the backend's memory). adamw: one torch AdamW step on n elements with the step's scalars.
    // neg_exp: y[i] = −exp(x[i]) (A from A_log).
    mc_status (*sumsq)(const mc_exec *ex, double *out, const float *x, int64_t n);
    mc_status (*adamw)(const mc_exec *ex, float *p, const float *g, float *m, float *v, int64_t n,
                       const struct mc_adamw_args *a);
    mc_status (*neg_exp)(const mc_exec *ex, float *y, const float *x, int64_t n);

    // Training: the backward twins. Contracts (shapes, what accumulates, aliasing) are those of the mc_ref_* functions
    // of the same names in kernels/ref/backward.h; every pointer is in the backend's memory.
    mc_status (*matmul_dx)(const mc_exec *ex, float *dx, int64_t ldx, const float *dy, const mc_weight *w, int64_t M,
                           int64_t N, int64_t K, bool accumulate);
    mc_status (*matmul_dw)(const mc_exec *ex, float *dw, float *dbias, const float *dy, const float *x, int64_t ldx,
                           int64_t M, int64_t N, int64_t K);
    // Optional (NULL: matmul_dw, then matmul_dx): both at once, where a backend shares work between them (CUDA
    // under MC_MATH_BF16 rounds dy to bf16 once for both products): dw [N, K] += dyᵀ·x, dbias [N] += Σ_rows dy
    // (when not NULL), dx [M, K] (rows lddx apart) = (or += when accumulate) dy·W. dx overlaps no other argument.
    mc_status (*matmul_bwd)(const mc_exec *ex, float *dx, int64_t lddx, bool accumulate, float *dw, float *dbias,
                            const float *dy, const float *x, int64_t ldx, const mc_weight *w, int64_t M, int64_t N,
                            int64_t K);
    mc_status (*embed_bwd)(const mc_exec *ex, float *dw, const float *dout, const int32_t *ids, int64_t n, int64_t V,
                           int64_t H);
    mc_status (*rmsnorm_bwd)(const mc_exec *ex, float *dx, float *dw, const float *dy, const float *x, const float *w,
                             int64_t M, int64_t H, float eps);
    mc_status (*conv1d_bwd)(const mc_exec *ex, float *dx, float *dw, float *db, float *dstate0, const float *du,
                            const float *dstate_final, const float *x, int64_t ldx, const float *state0,
                            const float *w, const float *b, int64_t Bt, int64_t L, int64_t E, int64_t K);
    mc_status (*selective_scan_bwd)(const mc_exec *ex, float *du, float *ddt, float *dz, float *dB, float *dC,
                                    float *dA, float *dD, float *ddt_bias, float *dh0, const float *dy,
                                    const float *dh_final, const float *u, const float *dt, const float *dt_bias,
                                    const float *A, const float *B, const float *C, int64_t ldbc, const float *D,
                                    const float *z, int64_t ldz, const float *h0, int64_t Bt, int64_t L, int64_t E,
                                    int64_t N);
    mc_status (*cross_entropy)(const mc_exec *ex, float *dlogits, double *loss_sum, int64_t *n_valid,
                               const float *logits, const int32_t *targets, int64_t T, int64_t V, float scale);

    // Optional, all three or none (NULL: selective_scan_bwd recomputes what it needs): the training forward's scan
    // also stores in `keep` what the backward would otherwise recompute first (on CUDA the state at the start of
    // each chunk of steps), scan_keep_floats(Bt, L, E, N) floats in the backend's layout (0: nothing is kept for
    // that shape; use the plain pair), and the backward reads it. Results are selective_scan's and
    // selective_scan_bwd's.
    int64_t (*scan_keep_floats)(int64_t Bt, int64_t L, int64_t E, int64_t N);
    mc_status (*selective_scan_keep)(const mc_exec *ex, float *y, float *h, const float *u, const float *dt,
                                     const float *dt_bias, const float *A, const float *B, const float *C,
                                     int64_t ldbc, const float *D, const float *z, int64_t ldz, int64_t Bt, int64_t L,
                                     int64_t E, int64_t N, float *keep);
    mc_status (*selective_scan_bwd_kept)(const mc_exec *ex, float *du, float *ddt, float *dz, float *dB, float *dC,
                                         float *dA, float *dD, float *ddt_bias, float *dh0, const float *dy,
                                         const float *dh_final, const float *u, const float *dt,
                                         const float *dt_bias, const float *A, const float *B, const float *C,
                                         int64_t ldbc, const float *D, const float *z, int64_t ldz, const float *h0,
                                         int64_t Bt, int64_t L, int64_t E, int64_t N, const float *kept);
} mc_ops;

// The op table of a backend: AUTO resolves to the fastest one built and usable here. MC_ERR_UNSUPPORTED names a
// backend this build lacks or this machine cannot run. The tables are static and shared by every caller.
const mc_ops *mc_ops_get(mc_backend backend, mc_error *err);

extern const mc_ops mc_ops_ref;

// Host-memory entries shared by the host backends (ref, cpu).
mc_status mc_host_exec_init(mc_exec *ex, int n_threads, mc_error *err);
void mc_host_exec_free(mc_exec *ex);
mc_status mc_host_alloc(const mc_exec *ex, void **out, size_t bytes);
void mc_host_free(const mc_exec *ex, void *p);
mc_status mc_host_copy(const mc_exec *ex, void *dst, const void *src, size_t bytes); // upload, download and copy
mc_status mc_host_zero(const mc_exec *ex, void *dst, size_t bytes);
mc_status mc_host_sync(const mc_exec *ex);
