// Shared test helpers: the one numeric comparison (style §2.7), fixture paths, skipping.
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mambac.h"

// Passes when every got is finite where want is and max|got - want| <= tol * max|want|. On failure prints the
// label, worst index, both values, the scale and the ratio to tol, and returns false.
bool mc_check_close(const float *got, const float *want, int64_t n, double tol, const char *label);

// Max |got - want| / max |want| (for reports).
double mc_rel_err(const float *got, const float *want, int64_t n);

// The tests' input generator: a 64-bit LCG (deterministic across machines; for test data only).
typedef struct mc_test_rng {
    uint64_t s;
} mc_test_rng;

uint32_t mc_test_rng_u32(mc_test_rng *r);
float mc_test_rng_uniform(mc_test_rng *r, float lo, float hi); // in [lo, hi)
void mc_test_fill(mc_test_rng *r, float *p, int64_t n, float lo, float hi);

// $MC_FIXTURES/<rel> (owned string) or NULL when MC_FIXTURES is unset.
char *mc_test_fixture(const char *rel);
// $MC_SHARED/<rel> when that file exists, else NULL (owned string).
char *mc_test_shared(const char *rel);
// The fixture model $MC_FIXTURES/<rel> loaded on backend with 2 threads (skips when MC_FIXTURES is unset). NULL
// on failure, with the message on stderr — except that a cuda load with no usable device sets *no_device (when
// no_device is not NULL) and prints nothing, so the caller can skip instead of failing.
mc_model *mc_test_load_model(const char *rel, mc_backend backend, bool *no_device);
// A training batch of n positions for m: ids drawn from a 64-bit LCG seeded with seed over [0, vocab), labels = ids
// except every fifth position from the fourth, which is ignored (-100).
void mc_test_train_batch(const mc_model *m, int64_t n, uint64_t seed, int32_t *ids, int32_t *labels);

// Prints "SKIP: <reason>" and exits 77 (ctest's skip code).
void mc_test_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

// Reads a little-endian float32 C-order .npy file (as numpy.save writes it). Returns an owned array (free()) and
// its shape, or NULL (with a message on stderr) when the file is missing or not such an array.
float *mc_test_read_npy(const char *path, int64_t *shape, int *ndim, int max_dims);

// Reads a whole text file (owned, NUL-terminated) or NULL.
char *mc_test_read_text(const char *path);

// A scratch folder per test: cmocka setup/teardown functions that put an mc_test_dir in *state (a fresh mkdtemp
// folder under /tmp) and remove it with everything in it afterwards.
typedef struct mc_test_dir {
    char dir[64];
} mc_test_dir;

int mc_test_dir_setup(void **state);
int mc_test_dir_teardown(void **state);
