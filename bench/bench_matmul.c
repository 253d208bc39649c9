// Benchmark of the CPU matmul (src/kernels/cpu/matmul.c) on mamba-130m's shapes, beside the two numbers it is judged
// against: the machine's read bandwidth (a vectorized multi-threaded read loop over 1 GiB) and its fp32 FMA peak.
// Not a test. Usage: bench_matmul [-t THREADS] [-v c|avx2|avx512] [-g INT8_GROUP] [-T SECONDS] [-R ROUNDS]
//   [-s SHAPE] [-d DTYPE] [-m M] (the last three run one slice and skip the bandwidth probe and the per-step summary)
#include <math.h>
#include <omp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "kernels/cpu/cpu.h"
#include "kernels/dtype.h"
#include "mambac.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// ---------------------------------------------------------------------------------------------------------------
// FMA peak: cycles per second from a chain of dependent integer adds (one per cycle on every x86 core), and fp32
// FLOP per cycle from 12 independent FMA chains per thread (more than latency × pipes, so the pipes stay full).

#if defined(__x86_64__)
static double measure_ghz(void) {
    const int64_t iters = 10000000;
    double best = 0.0;
    for (int rep = 0; rep < 20; rep++) {
        int64_t n = iters, a = 0;
        double t0 = now_s();
        __asm__ volatile("1:\n\t"
                         "add $1, %[a]\n\tadd $1, %[a]\n\tadd $1, %[a]\n\tadd $1, %[a]\n\t"
                         "add $1, %[a]\n\tadd $1, %[a]\n\tadd $1, %[a]\n\tadd $1, %[a]\n\t"
                         "sub $1, %[n]\n\tjnz 1b"
                         : [a] "+r"(a), [n] "+r"(n)
                         :
                         : "cc");
        double ghz = 8.0 * (double)iters / (now_s() - t0) * 1e-9;
        best = ghz > best ? ghz : best;
    }
    return best;
}

__attribute__((target("avx512f,fma"))) static float fma_loop512(int64_t iters) {
    __m512 acc[12];
    const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
    for (int j = 0; j < 12; j++) {
        acc[j] = _mm512_set1_ps((float)j);
    }
    for (int64_t i = 0; i < iters; i++) {
#pragma GCC unroll 12
        for (int j = 0; j < 12; j++) {
            acc[j] = _mm512_fmadd_ps(acc[j], a, b);
        }
    }
    __m512 s = acc[0];
    for (int j = 1; j < 12; j++) {
        s = _mm512_add_ps(s, acc[j]);
    }
    return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx2,fma"))) static float fma_loop256(int64_t iters) {
    __m256 acc[12];
    const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
    for (int j = 0; j < 12; j++) {
        acc[j] = _mm256_set1_ps((float)j);
    }
    for (int64_t i = 0; i < iters; i++) {
#pragma GCC unroll 12
        for (int j = 0; j < 12; j++) {
            acc[j] = _mm256_fmadd_ps(acc[j], a, b);
        }
    }
    __m256 s = acc[0];
    for (int j = 1; j < 12; j++) {
        s = _mm256_add_ps(s, acc[j]);
    }
    float t[8];
    _mm256_storeu_ps(t, s);
    return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
}

// fp32 GFLOP/s of the FMA loop on n_threads threads with `lanes`-wide vectors.
static double measure_fma(int n_threads, int lanes) {
    const int64_t iters = 2000000;
    double best = 0.0;
    volatile float sink = 0.0f;
    for (int rep = 0; rep < 20; rep++) {
        double t0 = now_s();
        float total = 0.0f;
#pragma omp parallel num_threads(n_threads) reduction(+ : total)
        { total += lanes == 16 ? fma_loop512(iters) : fma_loop256(iters); }
        double dt = now_s() - t0;
        sink += total;
        double gf = (double)n_threads * (double)iters * 12.0 * lanes * 2.0 / dt * 1e-9;
        best = gf > best ? gf : best;
    }
    (void)sink;
    return best;
}
#endif

// Prints how the peak is derived and returns it (GFLOP/s for n_threads cores; 0 when not measurable here).
static double report_peak(int n_threads) {
#if defined(__x86_64__)
    const double ghz = measure_ghz();
    const bool v512 = __builtin_cpu_supports("avx512f");
    const int lanes = v512 ? 16 : 8;
    const double fma1 = measure_fma(1, lanes);
    const double fman = measure_fma(n_threads, lanes);
    const double flop_cycle = fma1 / ghz;                        // measured fp32 FLOP per cycle, one core
    const double fmas_cycle = round(flop_cycle / (2.0 * lanes)); // vector FMAs per cycle (the FMA pipes)
    const double peak = n_threads * fmas_cycle * lanes * 2.0 * ghz;
    printf("fp32 FMA peak: clock %.2f GHz (dependent integer adds, 1/cycle); FMA loop 1 core %.1f GFLOP/s = %.1f "
           "FLOP/cycle -> %.0f x %d-lane FMA per cycle;\n",
           ghz, fma1, flop_cycle, fmas_cycle, lanes);
    printf("  peak = %d cores x %.0f FMA/cycle x %d lanes x 2 FLOP x %.2f GHz = %.1f GFLOP/s (FMA loop on %d "
           "threads: %.1f)\n",
           n_threads, fmas_cycle, lanes, ghz, peak, n_threads, fman);
    return peak;
#else
    (void)n_threads;
    printf("fp32 FMA peak: not derived on this architecture\n");
    return 0.0;
#endif
}

// ---------------------------------------------------------------------------------------------------------------
// The matmul timings.

typedef struct shape {
    const char *name;
    int64_t N, K, ldx;
    int per_step; // calls per token: 24 layers, or 1 for lm_head
} shape;

static const shape shapes[] = {
    { "in_proj", 3072, 768, 768, 24 },   { "x_proj", 80, 1536, 1536, 24 },  { "dt_proj", 1536, 48, 80, 24 },
    { "out_proj", 768, 1536, 1536, 24 }, { "lm_head", 50280, 768, 768, 1 },
};
static const int64_t Ms[] = { 1, 8, 32, 128 };
static const int dtypes[] = { MC_DTYPE_F32, MC_DTYPE_F16, MC_DTYPE_BF16, MC_DTYPE_I8 };

enum { N_SHAPES = 5, N_MS = 4, N_DTYPES = 4 };

static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// Copies of one weight, enough of them (>= 128 MiB, 4x the L3) that cycling through them reads from DRAM as the
// model's 24 layers do, not from the 32 MiB L3.
typedef struct weight_set {
    mc_weight *w; // [n_copies]
    void *data;
    float *scales;
    int n_copies;
    int64_t bytes; // per copy: elements plus int8 scales
} weight_set;

static bool weight_set_init(weight_set *ws, int dtype, int64_t N, int64_t K, int64_t group) {
    memset(ws, 0, sizeof(*ws));
    const int64_t elems = N * K, esz = mc_dtype_size(dtype);
    const int64_t n_groups = (K + group - 1) / group;
    const int64_t scale_n = dtype == MC_DTYPE_I8 ? N * n_groups : 0;
    const int64_t stride = (elems * esz + 63) / 64 * 64;
    ws->bytes = elems * esz + scale_n * (int64_t)sizeof(float);
    ws->n_copies = (int)((((int64_t)128 << 20) + ws->bytes - 1) / ws->bytes);
    ws->n_copies = ws->n_copies < 1 ? 1 : ws->n_copies;
    ws->w = calloc((size_t)ws->n_copies, sizeof(mc_weight));
    ws->data = aligned_alloc(64, (size_t)(stride * ws->n_copies));
    ws->scales = scale_n > 0 ? malloc((size_t)(scale_n * ws->n_copies) * sizeof(float)) : NULL;
    if (ws->w == NULL || ws->data == NULL || (scale_n > 0 && ws->scales == NULL)) {
        return false;
    }
    uint64_t seed = 42;
    uint8_t *d = ws->data;
    for (int64_t i = 0; i < elems; i++) {
        const uint64_t r = rng_next(&seed);
        switch (dtype) {
            case MC_DTYPE_F16:
                ((uint16_t *)d)[i] = (uint16_t)(0x2c00 | (r & 0x83ff)); // |v| in [1/16, 1/8)
                break;
            case MC_DTYPE_BF16:
                ((uint16_t *)d)[i] = (uint16_t)(0x3d80 | (r & 0x807f));
                break;
            case MC_DTYPE_I8:
                d[i] = (uint8_t)r;
                break;
            default:
                ((float *)d)[i] = (float)((double)(r >> 40) * 0x1.0p-24 - 0.5) * 0.1f;
                break;
        }
    }
    for (int c = 0; c < ws->n_copies; c++) {
        if (c > 0) {
            memcpy(d + c * stride, d, (size_t)(elems * esz));
        }
        for (int64_t i = 0; i < scale_n; i++) {
            ws->scales[c * scale_n + i] = 0.01f;
        }
        ws->w[c] = (mc_weight){ .data = d + c * stride, .dtype = dtype, .rows = N, .cols = K };
        if (dtype == MC_DTYPE_I8) {
            ws->w[c].scales = ws->scales + c * scale_n;
            ws->w[c].group = group;
        }
    }
    return true;
}

static void weight_set_free(weight_set *ws) {
    free(ws->w);
    free(ws->data);
    free(ws->scales);
}

// Seconds per call: the best of repeated batches, each cycling through the copies for >= 20 ms. Best-of, because
// other work on a shared machine only ever adds time.
static double time_matmul(mc_cpu_matmul_fn fn, const mc_exec *ex, const weight_set *ws, float *y, const float *x,
                          const shape *s, int64_t M, double min_s) {
    for (int c = 0; c < ws->n_copies; c++) { // warm-up: page faults, thread pool
        fn(ex, y, x, s->ldx, &ws->w[c], NULL, M, s->N, s->K);
    }
    double best = INFINITY, total = 0.0;
    int64_t next = 0;
    for (int batch = 0; batch < 3 || total < min_s; batch++) {
        int64_t calls = 0;
        const double t0 = now_s();
        double dt = 0.0;
        while (dt < 0.02 || calls < 2) {
            fn(ex, y, x, s->ldx, &ws->w[next++ % ws->n_copies], NULL, M, s->N, s->K);
            calls++;
            dt = now_s() - t0;
        }
        total += dt;
        best = dt / (double)calls < best ? dt / (double)calls : best;
    }
    return best;
}

typedef struct filters {
    const char *shape, *dtype;
    int64_t M; // 0: all
} filters;

static const char *const isa_names[MC_CPU_ISA_COUNT] = { "c", "avx2", "avx512" };

static int parse_args(int argc, char **argv, int *n_threads, int *variant, int64_t *group, double *min_s, int *rounds,
                      filters *f) {
    for (int i = 1; i < argc; i += 2) { // every flag takes a value
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL) {
            return -1;
        }
        if (strcmp(a, "-t") == 0) {
            *n_threads = atoi(v);
        } else if (strcmp(a, "-g") == 0) {
            *group = atoll(v);
        } else if (strcmp(a, "-s") == 0) {
            f->shape = v;
        } else if (strcmp(a, "-d") == 0) {
            f->dtype = v;
        } else if (strcmp(a, "-m") == 0) {
            f->M = atoll(v);
        } else if (strcmp(a, "-R") == 0) {
            *rounds = atoi(v);
        } else if (strcmp(a, "-T") == 0) {
            *min_s = atof(v);
        } else if (strcmp(a, "-v") == 0) {
            *variant = -1;
            for (int k = 0; k < MC_CPU_ISA_COUNT; k++) {
                if (strcmp(v, isa_names[k]) == 0) {
                    *variant = k;
                }
            }
        } else {
            return -1;
        }
    }
    return *n_threads >= 1 && *group >= 1 && *variant >= 0 && *rounds >= 1 ? 0 : -1;
}

int main(int argc, char **argv) {
    int n_threads = omp_get_num_procs(), variant = mc_cpu_kernels_best()->isa;
    int64_t group = 32;
    double min_s = 0.1;
    int rounds = 3;
    filters f = { NULL, NULL, 0 };
    if (parse_args(argc, argv, &n_threads, &variant, &group, &min_s, &rounds, &f) != 0) {
        fprintf(stderr, "usage: bench_matmul [-t THREADS] [-v c|avx2|avx512] [-g INT8_GROUP] [-T SECONDS] "
                        "[-R ROUNDS] [-s SHAPE] [-d DTYPE] [-m M]\n");
        return 2;
    }
    const mc_cpu_kernels *kernels = mc_cpu_kernels_get(variant);
    mc_cpu_matmul_fn fn = kernels != NULL ? kernels->matmul : NULL;
    if (fn == NULL) {
        fprintf(stderr, "bench_matmul: variant %s not supported here\n", isa_names[variant]);
        return 1;
    }
    const mc_exec ex = { .n_threads = n_threads };
    printf("bench_matmul: variant %s, %d threads, int8 group %lld\n", isa_names[variant], n_threads,
           (long long)group);
    const bool all = f.shape == NULL && f.dtype == NULL && f.M == 0;
    const double peak = report_peak(n_threads);

    float *x = malloc((size_t)(128 * 1536) * sizeof(float));
    float *y = malloc((size_t)(128 * 50280) * sizeof(float));
    static weight_set sets[N_DTYPES][N_SHAPES];
    static bool used[N_DTYPES][N_SHAPES];
    if (x == NULL || y == NULL) {
        fprintf(stderr, "bench_matmul: out of memory\n");
        return 1;
    }
    uint64_t seed = 7;
    for (int64_t i = 0; i < 128 * 1536; i++) {
        x[i] = (float)((double)(rng_next(&seed) >> 40) * 0x1.0p-24 - 0.5);
    }
    for (int di = 0; di < N_DTYPES; di++) {
        for (int si = 0; si < N_SHAPES; si++) {
            used[di][si] = (f.shape == NULL || strcmp(f.shape, shapes[si].name) == 0) &&
                           (f.dtype == NULL || strcmp(f.dtype, mc_dtype_name((mc_dtype)dtypes[di])) == 0);
            if (used[di][si] && !weight_set_init(&sets[di][si], dtypes[di], shapes[si].N, shapes[si].K, group)) {
                fprintf(stderr, "bench_matmul: out of memory for %s\n", shapes[si].name);
                return 1;
            }
        }
    }
    // Rounds over every case, keeping each one's best: other work on a shared machine comes in bursts, and a
    // later round catches the quiet between them. The bandwidth probe runs once per round too.
    static double secs[N_DTYPES][N_SHAPES][N_MS];
    double bw = 0.0;
    for (int round = 0; round < rounds; round++) {
        if (all) {
            const double b = mc_cpu_read_bandwidth(n_threads);
            bw = b > bw ? b : bw;
        }
        for (int di = 0; di < N_DTYPES; di++) {
            for (int si = 0; si < N_SHAPES; si++) {
                for (int mi = 0; mi < N_MS && used[di][si]; mi++) {
                    if (f.M != 0 && f.M != Ms[mi]) {
                        continue;
                    }
                    const double t = time_matmul(fn, &ex, &sets[di][si], y, x, &shapes[si], Ms[mi], min_s);
                    secs[di][si][mi] = round == 0 || t < secs[di][si][mi] ? t : secs[di][si][mi];
                }
            }
        }
        fprintf(stderr, "bench_matmul: round %d of %d done\n", round + 1, rounds);
    }
    if (all) {
        printf("read bandwidth probe (1 GiB, %d threads, vector loads, best of %d): %.1f GB/s\n", n_threads, rounds,
               bw);
    }
    printf("\n| shape | N | K | dtype | M | ms/call | GFLOP/s | weight GB/s | %% of FMA peak |\n");
    printf("|---|---|---|---|---|---|---|---|---|\n");
    static int64_t wbytes[N_DTYPES][N_SHAPES];
    for (int di = 0; di < N_DTYPES; di++) {
        for (int si = 0; si < N_SHAPES; si++) {
            if (!used[di][si]) {
                continue;
            }
            const shape *s = &shapes[si];
            wbytes[di][si] = sets[di][si].bytes;
            for (int mi = 0; mi < N_MS; mi++) {
                const int64_t M = Ms[mi];
                if (f.M != 0 && f.M != M) {
                    continue;
                }
                const double t = secs[di][si][mi];
                const double gflops = 2.0 * (double)(M * s->N * s->K) / t * 1e-9;
                printf("| %s | %lld | %lld | %s | %lld | %.4f | %.1f | %.1f | %.1f |\n", s->name, (long long)s->N,
                       (long long)s->K, mc_dtype_name((mc_dtype)dtypes[di]), (long long)M, t * 1e3, gflops,
                       (double)wbytes[di][si] / t * 1e-9, peak > 0 ? 100.0 * gflops / peak : 0.0);
            }
            weight_set_free(&sets[di][si]);
        }
    }
    if (!all) {
        free(x);
        free(y);
        return 0;
    }
    // Per token of mamba-130m (24 layers of the four projections, plus lm_head for decode).
    printf("\nmamba-130m matmuls per step (24 layers + lm_head), vs probe %.1f GB/s and peak %.1f GFLOP/s:\n", bw,
           peak);
    printf("| dtype | M=1 ms | M=1 GB/s (%% probe) | M=8 tok/s (x M=1) | M=32 tok/s (x M=1) | M=128 layer GFLOP/s (%% "
           "peak) |\n");
    printf("|---|---|---|---|---|---|\n");
    for (int di = 0; di < N_DTYPES; di++) {
        double step[N_MS] = { 0 }, bytes = 0, flops128 = 0, layer128 = 0;
        for (int si = 0; si < N_SHAPES; si++) {
            for (int mi = 0; mi < N_MS; mi++) {
                step[mi] += shapes[si].per_step * secs[di][si][mi];
            }
            bytes += (double)(shapes[si].per_step * wbytes[di][si]);
            if (si < N_SHAPES - 1) { // prefill: the layers only (lm_head runs for the last position)
                flops128 += shapes[si].per_step * 2.0 * 128.0 * (double)(shapes[si].N * shapes[si].K);
                layer128 += shapes[si].per_step * secs[di][si][3];
            }
        }
        const double tok1 = 1.0 / step[0], tok8 = 8.0 / step[1], tok32 = 32.0 / step[2];
        const double gf = flops128 / layer128 * 1e-9;
        printf("| %s | %.2f | %.1f (%.0f%%) | %.0f (%.1fx) | %.0f (%.1fx) | %.1f (%.0f%%) |\n",
               mc_dtype_name((mc_dtype)dtypes[di]), step[0] * 1e3, bytes / step[0] * 1e-9,
               100.0 * bytes / step[0] * 1e-9 / bw, tok8, tok8 / tok1, tok32, tok32 / tok1, gf,
               peak > 0 ? 100.0 * gf / peak : 0.0);
    }
    free(x);
    free(y);
    return 0;
}
