// The trainer's internal layout, shared by trainer.c (tensors, views, saving) and backward.c (the forward that
// keeps what the backward reads, and the backward walk). Nothing outside src/train/ includes it.
#pragma once

#include "model/model.h"

// The LoRA sites of one layer, in this order.
enum { SITE_IN = 0, SITE_X, SITE_OUT, SITE_COUNT };

// One adapted Linear: y = x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ (spec §8.3). A [r, K] and B [N, r] are f32 views into the
// parameter block; gA, gB their gradients.
typedef struct lora_lin {
    bool on;
    mc_weight A, B;
    float *gA, *gB;
} lora_lin;

// Gradients of one layer's weights (NULL where the weight is frozen).
typedef struct layer_grads {
    float *norm, *in_proj, *in_bias, *conv_w, *conv_b, *x_proj, *dt_proj, *dt_bias, *A_log, *D, *out_proj, *out_bias;
} layer_grads;

// What one layer's forward keeps for its backward ([M, ·] rows, M = Bt·T). The norm's output, the conv's output
// u and dt are recomputed by the backward from these (cheap ops), which halves the kept bytes; the layer's output
// is never kept apart: out_proj writes it into the next layer's hin, whose norm adds this layer's hin to it.
typedef struct layer_acts {
    float *hin;    // [M, H] the residual stream entering the layer's norm (after the residual add)
    float *xz;     // [M, 2E]
    float *q;      // [M, R + 2N]
    float *y;      // [M, E]
    float *xa[SITE_COUNT]; // [M, r] s·(x·Aᵀ) of each adapted site
    float *keep;   // what the scan's backward would recompute first (ops->scan_keep_floats), or NULL
} layer_acts;

typedef struct tensor_entry {
    char name[160];
    int ndim;
    int64_t shape[3];
    int64_t offset, numel; // into params and grads (floats)
    bool decay, transposed;
} tensor_entry;

struct mc_trainer {
    const mc_model *base;
    const mc_ops *ops;
    mc_exec exec;
    mc_model view;     // the base with trainable weights pointing into params
    mc_layer *layers;  // view's layers [NL]
    float *A;          // [NL, E, N] = −exp(A_log) of the view (full training)
    bool lora;
    mc_lora_spec spec;
    float lora_scale;
    lora_lin (*sites)[SITE_COUNT];      // [NL][SITE_COUNT]
    bool emb_on;                        // embedding adapter
    mc_weight emb_AT, emb_B;            // AT [V, r] (PEFT's lora_embedding_A transposed), B [H, r]
    float *g_emb_AT, *g_emb_B;
    layer_grads *lg;                    // [NL]
    float *g_embed, *g_head, *g_norm_f; // NULL when frozen; g_head == g_embed when tied
    tensor_entry *tensors;
    int64_t n_tensors;
    float *params, *grads; // one block each
    int64_t n_params;
    float *junk; // gradients of frozen small parameters land here
    uint64_t dropout_seed, dropout_stream; // LoRA dropout masks: see mc_trainer_set_dropout_stream
    float *host_params, *host_grads; // host mirrors of the blocks on a device backend (NULL on host backends)
    bool host_params_stale;          // the device's values changed since the mirror was taken
    int64_t carry_rows; // > 0: truncated BPTT over that many rows; the state each call starts from and ends with
    float *carry_conv, *carry_ssm; // [NL, rows, E, K], [NL, rows, E, N] where this call starts
    float *next_conv, *next_ssm;   // where it ends (swapped in after a successful call)
    // Activations, sized for act_rows positions.
    float *act;
    int64_t act_rows, act_B;
};

// The forward over ids [Bt, T] that keeps every layer's activations, then the loss and the backward walk
// (backward.c). targets [Bt, T] are the shifted labels (−100 = none).
mc_status mc_trainer_run(mc_trainer *t, const int32_t *ids, const int32_t *targets, int64_t Bt, int64_t T,
                         double scale, double *nll_sum, int64_t *n_targets);

// Writes every trainable tensor's values (grads false) or gradients under its name, F32 in its saved shape, plus
// "loss" [1] unless loss is NaN.
mc_status mc_trainer_write_tensors(const mc_trainer *t, const char *path, bool grads, double loss, mc_error *err);

// The carried state (truncated BPTT) for checkpoints: its two blocks in the backend's memory and their sizes in
// floats; returns the carried rows (0: none).
int64_t mc_trainer_carry_floats(const mc_trainer *t, float **conv, float **ssm, int64_t *n_conv, int64_t *n_ssm);

// The value and gradient blocks in host memory for host-side work (clipping, the optimizer, the all-reduce): the
// blocks themselves on a host backend; on a device, mirrors (gradients always downloaded, values when stale).
mc_status mc_trainer_host_blocks(mc_trainer *t, float **values, float **grads, mc_error *err);

// After host-side work changed the values: uploads the mirror on a device, then mc_trainer_values_changed.
mc_status mc_trainer_host_values_changed(mc_trainer *t, mc_error *err);
