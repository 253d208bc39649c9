// NumPy .npy writer (format 1.0, little-endian float32, C order).
#pragma once

#include "mambac.h"

// Writes data [shape[0], ..., shape[ndim-1]] (ndim 0..32; ndim 0 is a scalar) to path via a temp file beside it
// and a rename, so path is either the old file or the complete new one. Errors: MC_ERR_INVALID (bad shape or
// NULL data), MC_ERR_IO (cannot create, write or rename; the message names path), MC_ERR_NOMEM.
mc_status mc_npy_write_f32(const char *path, const float *data, const int64_t *shape, int ndim, mc_error *err);
