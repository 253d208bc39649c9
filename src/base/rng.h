// Random numbers owned by their users (no global state): xoshiro256** seeded through splitmix64.
#pragma once

#include <stdint.h>

typedef struct mc_rng {
    uint64_t s[4];
} mc_rng;

void mc_rng_seed(mc_rng *rng, uint64_t seed);
uint64_t mc_rng_next(mc_rng *rng);
double mc_rng_uniform(mc_rng *rng); // in [0, 1), 53 random bits
double mc_rng_normal(mc_rng *rng);  // standard normal
// Uniform integer in [0, n) without modulo bias (Lemire's multiply-and-reject); n >= 1.
uint64_t mc_rng_below(mc_rng *rng, uint64_t n);
