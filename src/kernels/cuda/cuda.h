// The CUDA backend's entry points for backend selection (ops.c). Built only with MAMBAC_HAVE_CUDA.
#pragma once

#include <stdbool.h>

#include "kernels/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

// True when the CUDA runtime finds at least one device this build can run on (checked once per process).
bool mc_cuda_available(void);

// The CUDA op table, or NULL with MC_ERR_UNSUPPORTED ("no CUDA device ...") when none is usable.
const mc_ops *mc_ops_cuda_get(mc_error *err);

#ifdef __cplusplus
}
#endif
