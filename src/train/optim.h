// The optimizer side of a training step: AdamW as torch.optim.AdamW, learning-rate schedules as
// transformers.get_scheduler, and global-norm clipping as torch.nn.utils.clip_grad_norm_ (spec §9.1), plus the
// AdamW state file for exact resumption. Gradients come from the backward pass; the loop calls these in order:
//
//     mc_grads_clip_norm(grads, groups, n_groups, max_grad_norm, &grad_norm, err);
//     mc_adamw_step(opt, params, grads, mc_lr_schedule_at(&sched, mc_adamw_steps(opt)), err);
//
// Parameters and gradients are each one flat f32 block; an mc_optim_group is one tensor of it (offset, numel) and
// says whether weight decay applies. Elements outside every group are frozen: never read, never written.
//
// Formulas (checked in torch 2.15's optim/adam.py `_single_tensor_adam`, the path torch takes on the CPU, and in
// transformers 5.17's optimization.py and torch's nn/utils/clip_grad.py):
//   AdamW, step t = 1, 2, ... (lr, the betas, eps and wd as Python floats, i.e. doubles):
//     p ← p · (float)(1 − lr·wd)                       (decayed groups only, before the moments, as torch)
//     m ← fma((float)(1 − β1), g − m, m)                (torch's lerp_, which is an FMA on the CPU)
//     v ← fma((float)(1 − β2) · g, g, v · (float)β2)    (mul_ then addcmul_, an FMA on the CPU)
//     bc1 = 1 − β1^t, bc2 = 1 − β2^t, step_size = lr / bc1  (doubles)
//     d ← sqrtf(v) / (float)sqrt(bc2) + (float)eps
//     p ← p + ((float)(−step_size) · m) / d             (addcdiv_)
//   All of it in f32 with these roundings; tests/test_optim.c holds mambac to torch's numbers (from
//   tools/oracle/optim_fixtures.py) at 1e-6 of scale, and on the committed fixture they agree bit for bit. Not on
//   every input: torch's own f32 sqrt (vectorized, AVX-512, torch 2.15) is not correctly rounded — about a fifth
//   of its results are one ulp from sqrtf's — so an update can differ by an ulp now and then.
//   The Trainer's default optimizer on a GPU, adamw_torch_fused, is the same math in a fused kernel.
//   Clipping: the 2-norm of each group's gradient (f32), G = the 2-norm of those norms (f32), c = max_norm · (1 /
//   (G + 1e-6)) in f32 (torch writes max_norm / (G + 1e-6), which Tensor.__rtruediv__ turns into reciprocal times
//   max_norm), clamped to 1; every gradient is multiplied by c. The per-group sums are taken in double here, where
//   torch sums f32 vector lanes, so G agrees to rounding, not bit for bit.
//   Schedules: the k-th optimizer step (k = 1, 2, ...) uses lr · λ(k − 1), λ from transformers (W warmup, S total):
//     linear:    s < W: s / max(1, W); else max(0, (S − s) / max(1, S − W))
//     cosine:    s < W: s / max(1, W); else max(0, 0.5 · (1 + cos(π · num_cycles · 2 · (s − W) / max(1, S − W))))
//     constant:  1 (get_scheduler's "constant" ignores warmup)
//     constant_with_warmup: s < W: s / max(1, W); else 1
#pragma once

#include "kernels/ops.h"
#include "mambac.h"

typedef struct mc_optim_group {
    int64_t offset; // first element in the flat parameter / gradient block
    int64_t numel;  // elements (>= 0)
    bool decay;     // weight decay applies (see mc_optim_name_decays for the Trainer's rule)
} mc_optim_group;

// The Trainer's weight-decay rule (transformers 5.17 get_decay_parameter_names): a parameter is decayed unless its
// lower-cased full name contains "bias", "layernorm" or "rmsnorm", has a dotted component exactly "norm", or a
// component ending in "_norm". So biases and backbone.layers.i.norm.weight are exempt, while norm_f.weight, A_log,
// D, the embedding and every LoRA matrix are decayed (spec §9.1).
bool mc_optim_name_decays(const char *name);

// ---------------------------------------------------------------------------------------------------------------
// AdamW

typedef struct mc_adamw_opts {
    double beta1;        // 0.9   (TrainingArguments.adam_beta1)
    double beta2;        // 0.999 (adam_beta2)
    double eps;          // 1e-8  (adam_epsilon)
    double weight_decay; // 0.0   (TrainingArguments.weight_decay; torch's own AdamW default 0.01 is overridden)
} mc_adamw_opts;

void mc_adamw_opts_init(mc_adamw_opts *opts); // the TrainingArguments defaults above

typedef struct mc_adamw mc_adamw;

// An optimizer for a block of n_params floats cut into groups (copied; they must lie inside the block and not
// overlap), with zero moments and step 0. opts may be NULL. Errors: MC_ERR_INVALID naming the bad group or
// setting (betas outside [0, 1), eps < 0, weight_decay < 0, non-finite values), MC_ERR_NOMEM. Owned:
// mc_adamw_free.
mc_status mc_adamw_new(int64_t n_params, const mc_optim_group *groups, int64_t n_groups, const mc_adamw_opts *opts,
                       mc_adamw **out, mc_error *err);
void mc_adamw_free(mc_adamw *opt); // NULL is a no-op

// One AdamW step at learning rate lr on params [n_params] with grads [n_params] (both read only inside the
// groups; params updated in place). Errors: MC_ERR_INVALID when lr is negative or not finite (nothing changes).
mc_status mc_adamw_step(mc_adamw *opt, float *params, const float *grads, double lr, mc_error *err);

int64_t mc_adamw_steps(const mc_adamw *opt);

// Moves the moments into a device backend's memory (a no-op on host backends): later steps take params and grads
// in that memory and run the backend's adamw op on ex's queue; save, export and load copy through the host. ex
// must outlive opt. Errors: those of the allocation or upload (opt is then unchanged).
mc_status mc_adamw_bind(mc_adamw *opt, const mc_ops *ops, const mc_exec *ex, mc_error *err); // steps taken: the t of the last step, and the scheduler's position

// Writes the state as one safetensors file: "m" and "v" F32 [n_params], "step" I64 [1], "groups" I64
// [n_groups, 3] (offset, numel, decay) so a load can check the layout. Errors name path (MC_ERR_IO, MC_ERR_NOMEM).
mc_status mc_adamw_save(mc_adamw *opt, const char *path, mc_error *err);

// The moments of opt's groups written into full-size arrays [n_params] at the groups' offsets (other elements are
// left as they are): ranks of a sharded optimizer sum these into one whole state. Errors: those of a download.
mc_status mc_adamw_export(mc_adamw *opt, float *m_full, float *v_full, mc_error *err);

// Writes a state file as mc_adamw_save does, from full-size moments and a group list.
mc_status mc_adamw_write_state(const char *path, int64_t n_params, const mc_optim_group *groups, int64_t n_groups,
                               const float *m_full, const float *v_full, int64_t step, mc_error *err);

// Reads a state written by mc_adamw_save into opt, whose n_params must be the file's and each of whose groups must be
// one of the file's (a rank's share of a whole state loads; mambac's moments are stored per group, so a rank's
// memory is its groups' share); the
// hyper-parameters stay opt's. On failure opt is unchanged. Errors: MC_ERR_IO, MC_ERR_FORMAT naming the path and
// the tensor (missing, wrong dtype or shape, a different group layout, a negative step).
mc_status mc_adamw_load(mc_adamw *opt, const char *path, mc_error *err);

// ---------------------------------------------------------------------------------------------------------------
// Learning-rate schedules (transformers.get_scheduler)

typedef enum mc_lr_kind {
    MC_LR_LINEAR = 0, // the TrainingArguments default ("linear")
    MC_LR_COSINE,     // "cosine"
    MC_LR_CONSTANT,   // "constant": no warmup
    MC_LR_CONSTANT_WITH_WARMUP,
} mc_lr_kind;

typedef struct mc_lr_schedule {
    mc_lr_kind kind;
    double lr;            // the peak (initial) learning rate: 5e-5 by default, 2e-3 in the spec §9 recipe
    int64_t warmup_steps; // W >= 0 (mc_lr_warmup_steps converts TrainingArguments.warmup_steps)
    int64_t total_steps;  // S: optimizer steps of the whole run (linear and cosine need S >= 1)
    double num_cycles;    // cosine only: 0.5 (half a cosine, down to 0)
} mc_lr_schedule;

// kind LINEAR, lr 5e-5, no warmup, total_steps 0 (must be set), num_cycles 0.5.
void mc_lr_schedule_init(mc_lr_schedule *s);

// Checks s (lr >= 0 and finite, W >= 0, S >= 1 where needed, num_cycles finite). Errors: MC_ERR_INVALID.
mc_status mc_lr_schedule_check(const mc_lr_schedule *s, mc_error *err);

// The learning rate of the optimizer step that follows `step` completed steps (step = mc_adamw_steps before it):
// lr · λ(step). Past S, linear stays at 0 and cosine follows its formula (it rises again), as in transformers.
double mc_lr_schedule_at(const mc_lr_schedule *s, int64_t step);

// Parses "linear", "cosine", "constant", "constant_with_warmup" (transformers' SchedulerType names). Errors:
// MC_ERR_INVALID naming the string.
mc_status mc_lr_kind_parse(const char *name, mc_lr_kind *kind, mc_error *err);

// TrainingArguments.get_warmup_steps: a value >= 1 is a step count (truncated), one in [0, 1) a ratio of
// total_steps rounded up: ceil(total_steps · warmup).
int64_t mc_lr_warmup_steps(double warmup, int64_t total_steps);

// ---------------------------------------------------------------------------------------------------------------
// Gradient clipping (torch.nn.utils.clip_grad_norm_)

// Computes the global 2-norm of the gradients in groups (*total_norm, before clipping; may be NULL) and, when
// max_norm > 0, scales them by min(1, max_norm / (norm + 1e-6)) as described above. max_norm == 0 only measures
// (the Trainer skips clipping when max_grad_norm is 0). A non-finite norm is reported, not refused: as torch, the
// gradients are then scaled by 0 or NaN, and the loop should skip the step. Errors: MC_ERR_INVALID when max_norm
// is negative or not finite.
mc_status mc_grads_clip_norm(float *grads, const mc_optim_group *groups, int64_t n_groups, double max_norm,
                             double *total_norm, mc_error *err);

// The same on gradients in a backend's memory: the groups' sums of squares by ops->sumsq (one small download),
// the scaling by ops->axpby.
mc_status mc_grads_clip_norm_on(const mc_ops *ops, const mc_exec *ex, float *grads, const mc_optim_group *groups,
                                int64_t n_groups, double max_norm, double *total_norm, mc_error *err);
