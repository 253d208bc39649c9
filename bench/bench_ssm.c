// Times the cpu backend's scan, conv1d and rmsnorm variants against the reference twins at mamba-130m shapes
// (E = 1536, N = 16, K = 4, H = 768, dt_rank 48), called as src/model/forward.c calls them: conv1d and scan once per
// sequence, rmsnorm once over all Bt·L rows. Prints ns per token per layer and the speedup over the reference.
// Usage: bench_ssm [min_seconds_per_point (default 0.2) [op name filter [max threads]]]
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/cpu/cpu.h"
#include "kernels/ref/ref.h"

enum { E = 1536, N = 16, K = 4, H = 768, R = 48 };

static const char *const isa_names[MC_CPU_ISA_COUNT] = { "c", "avx2", "avx512" };

typedef struct bufs {
    int64_t Bt, L;
    float *xz, *u, *q, *dt, *y, *conv_state, *ssm_state, *hidden, *normed, *out; // forward.c's scratch, [Bt, L, ·]
    float *conv_w, *conv_b, *dt_bias, *A, *D, *norm_w;                           // one layer's weights
} bufs;

// The _step ops are the batched decode kernels: one call for all Bt sequences (L = 1 only); their reference is Bt
// calls of the sequence twin.
typedef enum op { OP_SCAN, OP_SCAN_STEP, OP_CONV, OP_CONV_STEP, OP_NORM, OP_COUNT } op;

static const char *const op_names[OP_COUNT] = { "selective_scan", "selective_scan_step", "conv1d+silu", "conv1d_step",
                                                "add+rmsnorm" };

// One thread is timed by its own CPU clock, which a busy machine's preemptions do not inflate; several threads by
// the wall clock (their sum of CPU time would count spinning).
static double now_s(int nt) {
    struct timespec ts;
    clock_gettime(nt == 1 ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static float *filled(int64_t n, unsigned seed, float lo, float hi) {
    float *p = malloc((size_t)n * sizeof(float));
    if (p == NULL) {
        fprintf(stderr, "bench_ssm: out of memory\n");
        exit(1);
    }
    srand(seed);
    for (int64_t i = 0; i < n; i++) {
        p[i] = lo + (hi - lo) * (float)rand() / (float)RAND_MAX;
    }
    return p;
}

static bufs bufs_new(int64_t Bt, int64_t L) {
    const int64_t M = Bt * L;
    bufs b = { .Bt = Bt, .L = L };
    b.xz = filled(M * 2 * E, 1, -2.0f, 2.0f);
    b.u = filled(M * E, 2, -2.0f, 2.0f);
    b.q = filled(M * (R + 2 * N), 3, -1.0f, 1.0f);
    b.dt = filled(M * E, 4, -5.0f, 1.0f);
    b.y = filled(M * E, 5, 0.0f, 0.0f);
    b.conv_state = filled(Bt * E * K, 6, -1.0f, 1.0f);
    b.ssm_state = filled(Bt * E * N, 7, -1.0f, 1.0f);
    b.hidden = filled(M * H, 8, -3.0f, 3.0f);
    b.normed = filled(M * H, 9, 0.0f, 0.0f);
    b.out = filled(M * H, 10, -0.01f, 0.01f); // small: repeated residual adds stay bounded
    b.conv_w = filled(E * K, 11, -0.5f, 0.5f);
    b.conv_b = filled(E, 12, -0.1f, 0.1f);
    b.dt_bias = filled(E, 13, -4.0f, -2.0f);
    b.A = filled(E * N, 14, -16.0f, -1.0f);
    b.D = filled(E, 15, 0.5f, 1.5f);
    b.norm_w = filled(H, 16, 0.5f, 1.5f);
    return b;
}

static void bufs_free(bufs *b) {
    float *ps[] = { b->xz,     b->u,   b->q,      b->dt,     b->y,       b->conv_state, b->ssm_state, b->hidden,
                    b->normed, b->out, b->conv_w, b->conv_b, b->dt_bias, b->A,          b->D,         b->norm_w };
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) {
        free(ps[i]);
    }
}

// The kernels of one variant, looked up once: the lookups read CPUID, which a virtual machine traps (~8 µs).
typedef struct kernels {
    mc_cpu_selective_scan_fn scan, scan_step; // scan_step NULL: Bt calls of scan
    mc_cpu_conv1d_fn conv, conv_step;
    mc_cpu_rmsnorm_fn norm;
} kernels;

// isa < 0: the reference twins.
static kernels kernels_of(int isa) {
    if (isa < 0) {
        return (kernels){ mc_ref_selective_scan, NULL, mc_ref_conv1d, NULL, mc_ref_rmsnorm };
    }
    const mc_cpu_kernels *k = mc_cpu_kernels_get(isa);
    return (kernels){ k->selective_scan, k->selective_scan_step, k->conv1d, k->conv1d_step, k->rmsnorm };
}

// One layer's worth of op `o` for all sequences.
static void run_op(op o, const kernels *kn, const mc_exec *ex, bufs *b) {
    const int64_t L = b->L, RN = R + 2 * N;
    if (o == OP_NORM) {
        kn->norm(ex, b->normed, b->hidden, b->out, b->norm_w, b->Bt * L, H, 1e-5f);
        return;
    }
    if (o == OP_SCAN_STEP && kn->scan_step != NULL) { // forward.c's buffers at T = 1: row s is sequence s
        kn->scan_step(ex, b->y, b->ssm_state, b->u, b->dt, b->dt_bias, b->A, b->q + R, b->q + R + N, RN, b->D,
                      b->xz + E, 2 * E, b->Bt, E, N);
        return;
    }
    if (o == OP_CONV_STEP && kn->conv_step != NULL) {
        kn->conv_step(ex, b->u, b->conv_state, b->xz, 2 * E, b->conv_w, b->conv_b, b->Bt, E, K);
        return;
    }
    for (int64_t s = 0; s < b->Bt; s++) {
        if (o == OP_CONV || o == OP_CONV_STEP) {
            kn->conv(ex, b->u + s * L * E, b->conv_state + s * E * K, b->xz + s * L * 2 * E, 2 * E, b->conv_w,
                     b->conv_b, L, E, K);
        } else {
            const float *qs = b->q + s * L * RN;
            kn->scan(ex, b->y + s * L * E, b->ssm_state + s * E * N, b->u + s * L * E, b->dt + s * L * E, b->dt_bias,
                     b->A, qs + R, qs + R + N, RN, b->D, b->xz + s * L * 2 * E + E, 2 * E, L, E, N);
        }
    }
}

static double time_op(op o, int isa, const mc_exec *ex, bufs *b, double min_s) {
    const kernels kn = kernels_of(isa);
    run_op(o, &kn, ex, b); // warm caches and the thread pool
    double best = INFINITY;
    for (int rep = 0; rep < 3; rep++) {
        for (int64_t iters = 1;; iters *= 2) {
            double t0 = now_s(ex->n_threads);
            for (int64_t i = 0; i < iters; i++) {
                run_op(o, &kn, ex, b);
            }
            double dt = now_s(ex->n_threads) - t0;
            if (dt >= min_s / 3) {
                double ns = dt * 1e9 / (double)iters / (double)(b->Bt * b->L);
                best = ns < best ? ns : best;
                break;
            }
        }
    }
    return best;
}

// Cost of one empty OpenMP fork/join at nt threads: what each extra call (one per sequence) pays.
static double fork_join_ns(int nt) {
    const int iters = 20000;
    double t0 = now_s(nt);
    for (int i = 0; i < iters; i++) {
#pragma omp parallel num_threads(nt)
        { __asm__ volatile("" ::: "memory"); }
    }
    return (now_s(nt) - t0) * 1e9 / iters;
}

int main(int argc, char **argv) {
    const double min_s = argc > 1 ? atof(argv[1]) : 0.2;
    const char *filter = argc > 2 ? argv[2] : "";
    const int64_t Ls[] = { 1, 128 }, Bts[] = { 1, 8, 32 };
    const int max_threads = argc > 3 ? atoi(argv[3]) : omp_get_num_procs();
    printf("mamba-130m shapes: E=%d N=%d K=%d H=%d; ns per token per layer (best of 3), speedup vs ref (1 thread)\n", E,
           N, K, H);
    printf("OpenMP fork/join: %.0f ns at %d threads\n\n", fork_join_ns(max_threads), max_threads);
    printf("| op | L | Bt | ref ns | variant | threads | ns | speedup |\n|---|---|---|---|---|---|---|---|\n");
    for (int o = 0; o < OP_COUNT; o++) {
        if (strstr(op_names[o], filter) == NULL) {
            continue;
        }
        for (size_t li = 0; li < sizeof(Ls) / sizeof(Ls[0]); li++) {
            if ((o == OP_SCAN_STEP || o == OP_CONV_STEP) && Ls[li] != 1) {
                continue;
            }
            for (size_t bi = 0; bi < sizeof(Bts) / sizeof(Bts[0]); bi++) {
                bufs b = bufs_new(Bts[bi], Ls[li]);
                mc_exec ex1 = { .n_threads = 1 };
                double ref = time_op((op)o, -1, &ex1, &b, min_s);
                for (int isa = MC_CPU_ISA_COUNT - 1; isa >= 0; isa--) {
                    if (mc_cpu_kernels_get(isa) == NULL) {
                        printf("| %s | %lld | %lld | | %s | | unavailable | |\n", op_names[o], (long long)Ls[li],
                               (long long)Bts[bi], isa_names[isa]);
                        continue;
                    }
                    for (int nt = 1; nt <= max_threads; nt *= 2) {
                        mc_exec ex = { .n_threads = nt };
                        double ns = time_op((op)o, isa, &ex, &b, min_s);
                        printf("| %s | %lld | %lld | %.0f | %s | %d | %.1f | %.1fx |\n", op_names[o], (long long)Ls[li],
                               (long long)Bts[bi], ref, isa_names[isa], nt, ns, ref / ns);
                        fflush(stdout);
                    }
                }
                bufs_free(&b);
            }
        }
    }
    return 0;
}
