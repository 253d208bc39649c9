// LoRA dropout's mask (ops.h `dropout`), one definition for every backend so their masks agree bit for bit:
// element i of the mask keyed by `key` keeps its input when u(key, i) >= p, u being the top 53 bits of
// splitmix64(key + (i + 1)·γ) as a double in [0, 1). Counter-based, so a device draws every element at once and
// the backward draws the forward's mask again from the key alone.
#pragma once

#include <stdint.h>

#ifdef __CUDACC__
#define MC_HOST_DEVICE __host__ __device__
#else
#define MC_HOST_DEVICE
#endif

static inline MC_HOST_DEVICE uint64_t mc_mix64(uint64_t z) { // splitmix64's finalizer
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

#define MC_DROPOUT_GAMMA 0x9E3779B97F4A7C15ull // splitmix64's counter step

static inline MC_HOST_DEVICE double mc_dropout_u(uint64_t key, uint64_t i) {
    return (double)(mc_mix64(key + (i + 1) * MC_DROPOUT_GAMMA) >> 11) * 0x1.0p-53;
}

// The key whose mask starts at element i0 of key's: mc_dropout_u(mc_dropout_skip(key, i0), i) = mc_dropout_u(key,
// i0 + i), so a part of a mask can be drawn on its own.
static inline MC_HOST_DEVICE uint64_t mc_dropout_skip(uint64_t key, uint64_t i0) {
    return key + i0 * MC_DROPOUT_GAMMA;
}

// What a kept element is multiplied by: 1/(1 − p) rounded once to f32 (0 when p >= 1, where nothing is kept).
static inline MC_HOST_DEVICE float mc_dropout_scale(double p) {
    return p < 1 ? (float)(1.0 / (1.0 - p)) : 0.0f;
}
