// The CPU backend: SIMD kernels chosen for this CPU at run time, threaded with OpenMP.
#pragma once

#include "kernels/ops.h"

// Fills ops with the best kernel per entry for the running CPU (entries without a fast kernel use ref/).
void mc_ops_cpu_init(mc_ops *ops);

// The next-token loss (ops.h `nll`): mc_ref_nll's rows, split over the threads.
void mc_cpu_nll(const mc_exec *ex, double *out, const float *logits, int64_t T, int64_t V, const int32_t *targets);
