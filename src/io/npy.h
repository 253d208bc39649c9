// NumPy .npy writer (format 1.0, little-endian float32, C order).
#pragma once

#include "mambac.h"

mc_status mc_npy_write_f32(const char *path, const float *data, const int64_t *shape, int ndim, mc_error *err);
