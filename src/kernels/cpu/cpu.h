// The CPU backend: SIMD kernels chosen for this CPU at run time, threaded with OpenMP.
#pragma once

#include "kernels/ops.h"

// Fills ops with the best kernel per entry for the running CPU (entries without a fast kernel use ref/).
void mc_ops_cpu_init(mc_ops *ops);
