// Decode with token choice on the device (issue 9 §2.2): the forward's logits stay in the backend's memory and the
// `sample` op returns only the chosen ids. Used by mc_generate on device backends.
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "kernels/ops.h"
#include "mambac.h"

// True when the model's backend computes outside host memory and has a `sample` op (CUDA).
bool mc_model_samples_on_device(const mc_model *m);

// mc_model_forward for the last position of each of the n_seq sequences, then ops->sample on those rows (contract
// in ops.h: prev, prev_off, uniforms and out_ids [n_seq] in host memory). Nothing but the ids is downloaded.
// MC_ERR_UNSUPPORTED when !mc_model_samples_on_device(m); otherwise the errors of mc_model_forward and the op.
mc_status mc_model_forward_sample(const mc_model *m, mc_state *state, const int32_t *ids, int64_t n_seq,
                                  int64_t n_tok, const mc_sample_args *a, const int32_t *prev, const int64_t *prev_off,
                                  const double *uniforms, int32_t *out_ids, mc_error *err);
