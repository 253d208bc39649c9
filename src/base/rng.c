// xoshiro256** seeded through splitmix64, plus normal draws for weight initialisation.
#include "base/rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rotl64(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

void mc_rng_seed(mc_rng *rng, uint64_t seed) {
    uint64_t x = seed; // splitmix64 never yields four zero words, which xoshiro could not leave
    for (int i = 0; i < 4; i++) {
        rng->s[i] = splitmix64(&x);
    }
}

uint64_t mc_rng_next(mc_rng *rng) {
    uint64_t *s = rng->s;
    uint64_t result = rotl64(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return result;
}

double mc_rng_uniform(mc_rng *rng) {
    return (double)(mc_rng_next(rng) >> 11) * 0x1.0p-53;
}

double mc_rng_normal(mc_rng *rng) {
    // Box-Muller; 1 - u keeps the logarithm's argument in (0, 1].
    double u = 1.0 - mc_rng_uniform(rng), v = mc_rng_uniform(rng);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

uint64_t mc_rng_below(mc_rng *rng, uint64_t n) {
    // The high word of x * n is uniform in [0, n) once the low words below 2^64 mod n are rejected.
    unsigned __int128 m = (unsigned __int128)mc_rng_next(rng) * n;
    uint64_t low = (uint64_t)m;
    if (low < n) {
        uint64_t threshold = (0 - n) % n;
        while (low < threshold) {
            m = (unsigned __int128)mc_rng_next(rng) * n;
            low = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}
