// Scalar conversions between the stored weight dtypes and f32 (IEEE half, bfloat16), shared by every backend.
#pragma once

#include <stdint.h>
#include <string.h>

#include "mambac.h"

static inline float mc_bf16_to_f32(uint16_t v) {
    uint32_t bits = (uint32_t)v << 16;
    float f;
    memcpy(&f, &bits, sizeof(f));
    return f;
}

static inline float mc_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { // subnormal: renormalize
            exp = 127 - 15 + 1;
            while ((man & 0x400) == 0) {
                man <<= 1;
                exp--;
            }
            man &= 0x3ff;
            bits = sign | (exp << 23) | (man << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof(f));
    return f;
}

// Element i of an array stored in dtype (mc_dtype). The array must be aligned for its element type.
static inline float mc_load_f32(const void *p, int dtype, int64_t i) {
    switch (dtype) {
        case MC_DTYPE_F16:
            return mc_f16_to_f32(((const uint16_t *)p)[i]);
        case MC_DTYPE_BF16:
            return mc_bf16_to_f32(((const uint16_t *)p)[i]);
        default:
            return ((const float *)p)[i];
    }
}

static inline int64_t mc_dtype_size(int dtype) {
    return dtype == MC_DTYPE_F32 ? 4 : dtype == MC_DTYPE_I8 ? 1 : 2;
}

#include "kernels/ops.h"

// Element [r, c] of a weight matrix as f32 (int8: q · scale of its group). For reference code and tails.
static inline float mc_weight_at(const mc_weight *w, int64_t r, int64_t c) {
    if (w->dtype == MC_DTYPE_I8) {
        int64_t n_groups = (w->cols + w->group - 1) / w->group;
        return (float)((const int8_t *)w->data)[r * w->cols + c] * w->scales[r * n_groups + c / w->group];
    }
    return mc_load_f32(w->data, w->dtype, r * w->cols + c);
}

// Round-to-nearest-even f32 → bf16 (NaN kept quiet), as torch's .to(bfloat16).
static inline uint16_t mc_f32_to_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof(bits));
    if ((bits & 0x7fffffffu) > 0x7f800000u) {
        return (uint16_t)((bits >> 16) | 0x40);
    }
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

// Round-to-nearest-even f32 → IEEE half (overflow to inf, subnormals kept), as torch's .to(float16).
static inline uint16_t mc_f32_to_f16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof(bits));
    uint32_t sign = (bits >> 16) & 0x8000u;
    uint32_t absb = bits & 0x7fffffffu;
    if (absb > 0x7f800000u) {
        return (uint16_t)(sign | 0x7e00u);
    }
    if (absb >= 0x477ff000u) { // rounds to >= 65520: inf
        return (uint16_t)(sign | 0x7c00u);
    }
    if (absb < 0x38800000u) { // below the smallest normal half: subnormal or zero
        float a;
        memcpy(&a, &absb, sizeof(a));
        // a * 2^24 lies in [0, 1024); rint rounds half to even in the default mode.
        float m = a * 16777216.0f;
        uint32_t q = (uint32_t)__builtin_rintf(m);
        return (uint16_t)(sign | q);
    }
    uint32_t mant = absb & 0x7fffffu;
    uint32_t exp = (absb >> 23) - 127 + 15;
    uint32_t half = (exp << 10) | (mant >> 13);
    uint32_t rest = mant & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) {
        half++;
    }
    return (uint16_t)(sign | half);
}

// A [N, K] weight matrix that the kernels can read: data present, a known dtype, int8 with its scales and group.
static inline bool mc_weight_ok(const mc_weight *w, int64_t N, int64_t K) {
    if (w == NULL || w->data == NULL || w->rows != N || w->cols != K) {
        return false;
    }
    switch (w->dtype) {
        case MC_DTYPE_F32:
        case MC_DTYPE_F16:
        case MC_DTYPE_BF16:
            return true;
        case MC_DTYPE_I8:
            return w->scales != NULL && w->group >= 1;
        default:
            return false;
    }
}
