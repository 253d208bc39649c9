// The model's internal layout: resolved config, per-layer weight views, and the state object. Shared by the
// loader, the forward walk and the state functions; nothing outside src/model/ includes it.
#pragma once

#include "io/safetensors.h"
#include "kernels/ops.h"
#include "mambac.h"

typedef struct mc_layer {
    const float *norm;     // [H]
    mc_weight in_proj;     // [2E, H]
    const float *in_bias;  // [2E] or NULL
    const float *conv_w;   // [E, K]
    const float *conv_b;   // [E] or NULL
    mc_weight x_proj;      // [R + 2N, E]
    mc_weight dt_proj;     // [E, R]
    const float *dt_bias;  // [E]
    const float *A_log;    // [E, N] as stored (kept for saving)
    const float *A;        // [E, N], = −exp(A_log), computed once at load
    const float *D;        // [E]
    mc_weight out_proj;    // [H, E]
    const float *out_bias; // [H] or NULL
} mc_layer;

struct mc_model {
    mc_config cfg;
    char *dir;
    mc_st_set *st;
    mc_weight embed;   // [V, H]
    mc_weight lm_head; // [V, H]; the embedding itself when tied
    const float *norm_f;
    mc_layer *layers; // [NL]
    void **owned;     // converted copies (f32 vectors, realigned matrices), freed with the model
    int64_t n_owned, cap_owned;
    mc_model_info info;
    const mc_ops *ops; // the backend (a static table shared by every model)
    int n_threads;     // each state's context starts with this many threads
    int math;          // and this mc_math mode (from mc_load_opts.precision)
    // On a device backend (place.c): every weight pointer above points to device memory, listed here and freed
    // through ops->free; the host views they were copied from stay valid for saving (mc_model_host_view).
    void **dev_owned;
    int64_t n_dev_owned, cap_dev_owned;
    mc_layer *host_layers; // [NL] the host views, NULL when the weights were never placed
    mc_weight host_embed, host_lm_head;
    const float *host_norm_f;
    uint64_t uid; // unique per placed model in this process: part of the keys of recorded decode steps
};

struct mc_state {
    int64_t n_seq, n_layer, d_inner, d_conv, d_state;
    const mc_ops *ops; // the model's backend: conv, ssm and scratch live in its memory
    mc_exec exec;      // this state's context (threads; a device's stream and handles)
    float *conv; // [NL, n_seq, E, K]
    float *ssm;  // [NL, n_seq, E, N]
    float *scratch; // the forward's activations, kept between calls (not part of the recurrent state)
    int64_t scratch_rows; // its size in floats
    int64_t chunk_rows;   // sequences × positions per chunk on a device; 0: the default (forward.c; tests set less)
    bool profiling;
    int64_t profile_ns[MC_PROFILE_COUNT]; // summed while profiling
};

// Allocates bytes owned by the model (freed with it), counted as resident memory; NULL when out of memory.
void *mc_model_own(mc_model *m, size_t bytes);

// Sets the op table and thread count from opts (shared by load and init).
mc_status mc_model_setup_backend(mc_model *m, const mc_load_opts *opts, mc_error *err);
// The kernel layer's math mode for a precision (the two enums list the same modes in the same order).
static inline int mc_math_of(mc_precision p) {
    return p == MC_PRECISION_BF16 ? MC_MATH_BF16 : p == MC_PRECISION_TF32 ? MC_MATH_TF32 : MC_MATH_F32;
}

// Last step of load and init: weight dtype conversion per opts, derived sizes for mc_model_info.
mc_status mc_model_finish(mc_model *m, const mc_load_opts *opts, mc_error *err);

// Last step of mc_model_finish: on a backend that does not compute in host memory, copies every weight the
// forward reads into the backend's memory and repoints the model at it (host views kept for saving). No-op on host
// backends.
mc_status mc_model_place(mc_model *m, mc_error *err);

// Frees what mc_model_place allocated (called by mc_model_free).
void mc_model_unplace(mc_model *m);

// The model as the host sees it: m itself on a host backend, else *view filled with m's host weight views.
const mc_model *mc_model_host_view(const mc_model *m, mc_model *view);

// Computes A = −exp(A_log) for every layer into model-owned memory (spec §3.4 step 5).
mc_status mc_model_derive_A(mc_model *m, mc_error *err);

// Converts every projection matrix, the embedding and the head to target (no-op for MC_WEIGHTS_AS_STORED).
mc_status mc_model_convert_weights(mc_model *m, mc_weight_dtype target, mc_error *err);

mc_status mc_config_from_json(const char *text, size_t len, const char *path, mc_config *cfg, mc_error *err);
// Checks a resolved config, one a caller filled (mc_model_init) or config.json's after its derived sizes: every size
// in the range config.json may give, the reals finite and in range, the special token ids inside the vocabulary.
// Fails with `code`, the message naming `what` (the file, or "config") and the field.
mc_status mc_config_check(const mc_config *cfg, const char *what, mc_status code, mc_error *err);

// Merges the PEFT adapter in folder dir into the model's weights (f32), before any dtype conversion (load.c).
mc_status mc_model_apply_lora(mc_model *m, const char *dir, mc_error *err);
