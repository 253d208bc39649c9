// The machine's memory read bandwidth, measured the way decode reads weights: wide loads, all threads streaming
// their own slice. A scalar loop under-reports it by about half, so the loads are as wide as the CPU has (512-bit
// loads read 139 GB/s on the 16-core Xeon where 256-bit ones read 96-100 in the same minute).
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mambac.h"

#if defined(__x86_64__)
#include <immintrin.h>

__attribute__((target("avx512f"))) static float sum_avx512(const float *p, int64_t n) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t i = 0; i + 64 <= n; i += 64) {
        a0 = _mm512_add_ps(a0, _mm512_load_ps(p + i));
        a1 = _mm512_add_ps(a1, _mm512_load_ps(p + i + 16));
        a2 = _mm512_add_ps(a2, _mm512_load_ps(p + i + 32));
        a3 = _mm512_add_ps(a3, _mm512_load_ps(p + i + 48));
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

__attribute__((target("avx2"))) static float sum_avx2(const float *p, int64_t n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t i = 0; i + 32 <= n; i += 32) {
        a0 = _mm256_add_ps(a0, _mm256_load_ps(p + i));
        a1 = _mm256_add_ps(a1, _mm256_load_ps(p + i + 8));
        a2 = _mm256_add_ps(a2, _mm256_load_ps(p + i + 16));
        a3 = _mm256_add_ps(a3, _mm256_load_ps(p + i + 24));
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
    float out[8];
    _mm256_storeu_ps(out, s);
    return out[0] + out[1] + out[2] + out[3] + out[4] + out[5] + out[6] + out[7];
}
#endif

static float sum_plain(const float *p, int64_t n) {
    float acc[16] = { 0 };
    for (int64_t i = 0; i + 16 <= n; i += 16) {
        for (int k = 0; k < 16; k++) {
            acc[k] += p[i + k];
        }
    }
    float s = 0;
    for (int k = 0; k < 16; k++) {
        s += acc[k];
    }
    return s;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double mc_cpu_read_bandwidth(int n_threads) {
    const int64_t n = (int64_t)1 << 28; // floats: 1 GiB
    float *buf = aligned_alloc(64, (size_t)n * sizeof(float));
    if (buf == NULL) {
        return 0;
    }
    if (n_threads < 1) {
        n_threads = 1;
    }
    if (n_threads > 4096) { // mc_load_opts' bound: a huge count would ask OpenMP for a stack per thread
        n_threads = 4096;
    }
#if defined(__x86_64__)
    const int avx2 = __builtin_cpu_supports("avx2"), avx512 = __builtin_cpu_supports("avx512f");
#else
    const int avx2 = 0, avx512 = 0;
#endif
    volatile float sink = 0;
    double best = 0;
    // Pages are first touched by the thread that will read them, as the model's weights are by the mapping.
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int64_t i = 0; i < n; i += 1024) {
        memset(buf + i, 0, 1024 * sizeof(float));
    }
    for (int pass = 0; pass < 5; pass++) {
        double t0 = now();
        float total = 0;
#pragma omp parallel num_threads(n_threads) reduction(+ : total)
        {
            const int64_t per = n / omp_get_num_threads() / 64 * 64;
            const float *p = buf + per * omp_get_thread_num();
#if defined(__x86_64__)
            total += avx512 ? sum_avx512(p, per) : avx2 ? sum_avx2(p, per) : sum_plain(p, per);
#else
            total += sum_plain(p, per);
#endif
        }
        double secs = now() - t0;
        sink += total; // read back below, so the sums stay live
        double gbs = (double)n * sizeof(float) / secs / 1e9;
        best = gbs > best ? gbs : best;
    }
    (void)sink;
    (void)avx2;
    (void)avx512;
    free(buf);
    return best;
}
