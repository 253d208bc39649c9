// Benchmark of the cpu backend's backward ops (src/kernels/cpu/backward.c) on the shapes one training step of
// mamba-130m runs (batch × length rows, lm_head chunks of 64 rows), per ISA table for the exp-bound kernels, with
// their total per step (× 24 layers, × chunks). Not a test. Usage: bench_bwd [-t THREADS] [-b BATCH] [-l LENGTH]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/cpu/cpu.h"

#define N_LAYER     24
#define D_MODEL     768
#define D_INNER     1536
#define D_STATE     16
#define DT_RANK     48
#define D_CONV      4
#define N_VOCAB     50280
#define LOSS_ROWS   64 // the trainer's logits chunk (src/train/backward.c)
#define MIN_SECONDS 0.3

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static float *buf(int64_t n, float lo, float hi, uint64_t seed) {
    float *p = malloc((size_t)n * sizeof(float));
    if (p == NULL) {
        fprintf(stderr, "bench_bwd: out of memory\n");
        exit(1);
    }
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = lo + (hi - lo) * (float)(seed >> 40) / 16777216.0f;
    }
    return p;
}

// Everything one call needs, so each op is a closure over it.
typedef struct bench_data {
    mc_exec ex;
    const mc_cpu_kernels *k;
    int64_t M, Bt, L;
    float *x, *xz, *dxz, *u, *du, *q, *dq, *dt, *ddt, *dy, *w_in, *w_head, *dw, *small, *logits, *dlogits;
    float *dA, *dD, *db;
    int32_t *ids, *targets;
} bench_data;

typedef void (*op_fn)(const bench_data *d);

static void op_dx_in(const bench_data *d) {
    const mc_weight w = { .data = d->w_in, .dtype = MC_DTYPE_F32, .rows = 2 * D_INNER, .cols = D_MODEL };
    mc_cpu_matmul_dx(&d->ex, d->x, D_MODEL, d->dxz, &w, d->M, 2 * D_INNER, D_MODEL, false);
}

static void op_dw_in(const bench_data *d) {
    mc_cpu_matmul_dw(&d->ex, d->dw, NULL, d->dxz, d->x, D_MODEL, d->M, 2 * D_INNER, D_MODEL);
}

static void op_dx_head(const bench_data *d) {
    const mc_weight w = { .data = d->w_head, .dtype = MC_DTYPE_F32, .rows = N_VOCAB, .cols = D_MODEL };
    mc_cpu_matmul_dx(&d->ex, d->x, D_MODEL, d->dlogits, &w, LOSS_ROWS, N_VOCAB, D_MODEL, false);
}

static void op_dw_head(const bench_data *d) {
    mc_cpu_matmul_dw(&d->ex, d->w_head, NULL, d->dlogits, d->x, D_MODEL, LOSS_ROWS, N_VOCAB, D_MODEL);
}

static void op_ce(const bench_data *d) {
    double loss = 0;
    int64_t n = 0;
    d->k->cross_entropy(&d->ex, d->dlogits, &loss, &n, d->logits, d->targets, LOSS_ROWS, N_VOCAB, 1e-3f);
}

static void op_scan(const bench_data *d) {
    d->k->selective_scan_bwd(&d->ex, d->du, d->ddt, d->dxz + D_INNER, d->dq + DT_RANK, d->dq + DT_RANK + D_STATE, d->dA,
                             d->dD, d->db, NULL, d->dy, NULL, d->u, d->dt, d->db, d->dA, d->q + DT_RANK,
                             d->q + DT_RANK + D_STATE, DT_RANK + 2 * D_STATE, d->dD, d->xz + D_INNER, 2 * D_INNER, NULL,
                             d->Bt, d->L, D_INNER, D_STATE);
}

static void op_conv(const bench_data *d) {
    d->k->conv1d_bwd(&d->ex, d->dxz, d->dw, d->db, NULL, d->du, NULL, d->xz, 2 * D_INNER, d->small, d->dw, d->db, d->Bt,
                     d->L, D_INNER, D_CONV);
}

static void op_norm(const bench_data *d) {
    mc_cpu_rmsnorm_bwd(&d->ex, d->dy, d->db, d->x, d->x, d->db, d->M, D_MODEL, 1e-5f);
}

static void op_embed(const bench_data *d) {
    mc_cpu_embed_bwd(&d->ex, d->w_head, d->x, d->ids, d->M, N_VOCAB, D_MODEL);
}

// The kernel an exp-bound op runs from table k (NULL for the ops without an ISA table).
static const void *kernel_of(op_fn f, const mc_cpu_kernels *k) {
    return f == op_ce     ? (const void *)k->cross_entropy
           : f == op_scan ? (const void *)k->selective_scan_bwd
           : f == op_conv ? (const void *)k->conv1d_bwd
                          : NULL;
}

static double time_op(op_fn f, const bench_data *d) {
    f(d); // warm-up
    double best = 1e30, t_end = now_s() + MIN_SECONDS;
    int runs = 0;
    while (runs < 3 || now_s() < t_end) {
        double t0 = now_s();
        f(d);
        double t = now_s() - t0;
        best = t < best ? t : best;
        runs++;
    }
    return best;
}

int main(int argc, char **argv) {
    int threads = 2, batch = 4, length = 128;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "-t") == 0) {
            threads = atoi(argv[i + 1]);
        } else if (strcmp(argv[i], "-b") == 0) {
            batch = atoi(argv[i + 1]);
        } else if (strcmp(argv[i], "-l") == 0) {
            length = atoi(argv[i + 1]);
        } else {
            fprintf(stderr, "usage: bench_bwd [-t THREADS] [-b BATCH] [-l LENGTH]\n");
            return 2;
        }
    }
    bench_data d = { .ex = { .n_threads = threads }, .Bt = batch, .L = length, .M = (int64_t)batch * length };
    const int64_t M = d.M, RN = DT_RANK + 2 * D_STATE;
    d.x = buf(M * D_MODEL, -1, 1, 1);
    d.xz = buf(M * 2 * D_INNER, -2, 2, 2);
    d.dxz = buf(M * 2 * D_INNER, -1, 1, 3);
    d.u = buf(M * D_INNER, -2, 2, 4);
    d.du = buf(M * D_INNER, -1, 1, 5);
    d.q = buf(M * RN, -1, 1, 6);
    d.dq = buf(M * RN, -1, 1, 7);
    d.dt = buf(M * D_INNER, -4, 1, 8);
    d.ddt = buf(M * D_INNER, -1, 1, 9);
    d.dy = buf(M * D_INNER, -1, 1, 10);
    d.w_in = buf(2 * D_INNER * D_MODEL, -0.1f, 0.1f, 11);
    d.w_head = buf((int64_t)N_VOCAB * D_MODEL, -0.1f, 0.1f, 12);
    d.dw = buf(2 * D_INNER * D_MODEL, 0, 0, 13);
    d.small = buf(batch * D_INNER * D_CONV, 0, 0, 14);
    d.logits = buf((int64_t)LOSS_ROWS * N_VOCAB, -10, 10, 15);
    d.dlogits = buf((int64_t)LOSS_ROWS * N_VOCAB, -1e-5f, 1e-5f, 16);
    d.dA = buf(D_INNER * D_STATE, -8, -0.5f, 17); // also A: the values only need to be a plausible A
    d.dD = buf(D_INNER, -1, 1, 18);
    d.db = buf(2 * D_INNER, -1, 1, 19);
    d.ids = malloc((size_t)M * sizeof(int32_t));
    d.targets = malloc(LOSS_ROWS * sizeof(int32_t));
    for (int64_t i = 0; i < M; i++) {
        d.ids[i] = (int32_t)((i * 7919) % N_VOCAB);
    }
    for (int64_t i = 0; i < LOSS_ROWS; i++) {
        d.targets[i] = (int32_t)((i * 104729) % N_VOCAB);
    }
    d.k = mc_cpu_kernels_best();
    const int64_t chunks = (M + LOSS_ROWS - 1) / LOSS_ROWS;
    printf("backward ops, batch %d x %d, %d threads, kernels %s (ms per call; ms per step = calls per step x call)\n",
           batch, length, threads, d.k->name);
    printf("| op | shape | ms/call | GFLOP/s | calls/step | ms/step |\n|---|---|---:|---:|---:|---:|\n");

    const struct {
        const char *name, *shape;
        op_fn f;
        double flop;
        int64_t calls;
    } ops[] = {
        { "matmul_dx in_proj", "[M,3072]·[3072,768]", op_dx_in, 2.0 * M * 2 * D_INNER * D_MODEL, N_LAYER },
        { "matmul_dw in_proj", "[3072,M]·[M,768]", op_dw_in, 2.0 * M * 2 * D_INNER * D_MODEL, N_LAYER },
        { "matmul_dx lm_head", "[64,50280]·[50280,768]", op_dx_head, 2.0 * LOSS_ROWS * N_VOCAB * D_MODEL, chunks },
        { "matmul_dw lm_head", "[50280,64]·[64,768]", op_dw_head, 2.0 * LOSS_ROWS * N_VOCAB * D_MODEL, chunks },
        { "cross_entropy", "[64,50280]", op_ce, 0, chunks },
        { "selective_scan_bwd", "E=1536 N=16", op_scan, 0, N_LAYER },
        { "conv1d_bwd", "E=1536 K=4", op_conv, 0, N_LAYER },
        { "rmsnorm_bwd", "H=768", op_norm, 0, N_LAYER + 1 },
        { "embed_bwd", "H=768", op_embed, 0, 1 },
    };

    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        for (int isa = 0; isa < MC_CPU_ISA_COUNT; isa++) {
            // The exp-bound kernels once per distinct ISA kernel; the others once.
            const mc_cpu_kernels *k = mc_cpu_kernels_get(isa);
            const bool per_isa = kernel_of(ops[i].f, mc_cpu_kernels_get(0)) != NULL;
            if (k == NULL ||
                (isa != 0 && (!per_isa || kernel_of(ops[i].f, k) == kernel_of(ops[i].f, mc_cpu_kernels_get(0))))) {
                continue;
            }
            d.k = k;
            const double s = time_op(ops[i].f, &d);
            char name[64];
            snprintf(name, sizeof(name), per_isa ? "%s [%s]" : "%s", ops[i].name, k->name);
            printf("| %s | %s | %.3f | ", name, ops[i].shape, s * 1e3);
            if (ops[i].flop > 0) {
                printf("%.1f", ops[i].flop / s * 1e-9);
            }
            printf(" | %lld | %.1f |\n", (long long)ops[i].calls, s * 1e3 * (double)ops[i].calls);
        }
    }
    return 0;
}
