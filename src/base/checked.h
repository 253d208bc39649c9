// Overflow-checked integer arithmetic for sizes that come from files or flags.
#pragma once

#include <stdbool.h>
#include <stdint.h>

static inline bool mc_mul_i64(int64_t a, int64_t b, int64_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}

static inline bool mc_add_i64(int64_t a, int64_t b, int64_t *out) {
    return !__builtin_add_overflow(a, b, out);
}
