// Benchmark of one training step (forward that keeps activations, loss, backward; no optimizer) through the public
// trainer API: the trainer is made once, then mc_trainer_grad runs on a fixed random batch several times. Reports
// seconds per step, tokens/s and GFLOP/s counted as 6 × trainable-or-all parameters per token, and on cuda the
// device memory in use after the steps (total − free: context, weights, optimizer-free training buffers). Not a
// test; `mambac train` times whole steps with the optimizer.
// Usage: bench_train -m MODEL [-t THREADS] [-b BATCH] [-l LENGTH] [-n STEPS] [-r LORA_RANK] [-P PEAK_GFLOPS]
//                    [-B cpu|cuda] [-p f32|tf32|bf16]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mambac.h"

#ifdef MAMBAC_HAVE_CUDA
#include <cuda_runtime.h>
#endif

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct bench_args {
    const char *model;
    int threads, batch, length, steps, lora_r;
    double peak;
    mc_backend backend;
    mc_precision precision;
} bench_args;

static int parse(int argc, char **argv, bench_args *a) {
    *a = (bench_args){ .threads = 2, .batch = 4, .length = 128, .steps = 3, .backend = MC_BACKEND_CPU };
    if (argc % 2 == 0) { // flags come in pairs
        return 2;
    }
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *v = argv[i + 1];
        if (strcmp(argv[i], "-m") == 0) {
            a->model = v;
        } else if (strcmp(argv[i], "-t") == 0) {
            a->threads = atoi(v);
        } else if (strcmp(argv[i], "-b") == 0) {
            a->batch = atoi(v);
        } else if (strcmp(argv[i], "-l") == 0) {
            a->length = atoi(v);
        } else if (strcmp(argv[i], "-n") == 0) {
            a->steps = atoi(v);
        } else if (strcmp(argv[i], "-r") == 0) {
            a->lora_r = atoi(v);
        } else if (strcmp(argv[i], "-P") == 0) {
            a->peak = atof(v);
        } else if (strcmp(argv[i], "-B") == 0 && (strcmp(v, "cpu") == 0 || strcmp(v, "cuda") == 0)) {
            a->backend = strcmp(v, "cuda") == 0 ? MC_BACKEND_CUDA : MC_BACKEND_CPU;
        } else if (strcmp(argv[i], "-p") == 0 && (strcmp(v, "f32") == 0 || strcmp(v, "tf32") == 0 ||
                                                  strcmp(v, "bf16") == 0)) {
            a->precision = strcmp(v, "bf16") == 0 ? MC_PRECISION_BF16
                           : strcmp(v, "tf32") == 0 ? MC_PRECISION_TF32 : MC_PRECISION_F32;
        } else {
            return 2;
        }
    }
    return a->model != NULL && a->threads >= 1 && a->batch >= 1 && a->length >= 2 && a->steps >= 1 ? 0 : 2;
}

int main(int argc, char **argv) {
    bench_args a;
    if (parse(argc, argv, &a) != 0) {
        fprintf(stderr, "usage: bench_train -m MODEL [-t THREADS] [-b BATCH] [-l LENGTH] [-n STEPS] [-r LORA_RANK] "
                        "[-P PEAK_GFLOPS] [-B cpu|cuda] [-p f32|tf32|bf16]\n");
        return 2;
    }
    mc_error err = { 0 };
    mc_load_opts opts;
    mc_load_opts_init(&opts);
    opts.n_threads = a.threads;
    opts.backend = a.backend;
    mc_model *model = NULL;
    mc_trainer *tr = NULL;
    const mc_lora_spec spec = { .r = a.lora_r,
                                .alpha = a.lora_r,
                                .targets = MC_LORA_EMBEDDINGS | MC_LORA_IN_PROJ | MC_LORA_X_PROJ | MC_LORA_OUT_PROJ };
    if (mc_model_load(a.model, &opts, &model, &err) != MC_OK ||
        mc_trainer_new(model, a.lora_r > 0 ? &spec : NULL, 0, &tr, &err) != MC_OK) {
        fprintf(stderr, "bench_train: %s\n", err.msg);
        mc_model_free(model);
        return 1;
    }
    mc_trainer_set_precision(tr, a.precision);
    mc_model_info info;
    mc_model_get_info(model, &info);
    const int64_t n_tok = (int64_t)a.batch * a.length, V = mc_model_config(model)->vocab_size;
    int32_t *ids = malloc((size_t)n_tok * sizeof(int32_t));
    double *secs = malloc((size_t)a.steps * sizeof(double));
    uint64_t s = 12345;
    for (int64_t i = 0; ids != NULL && i < n_tok; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)((s >> 33) % (uint64_t)V);
    }
    int rc = ids != NULL && secs != NULL ? 0 : 1;
    double nll = 0;
    int64_t count = 0;
    for (int step = -1; rc == 0 && step < a.steps; step++) { // step −1: warm-up (activation buffers, page faults)
        double t0 = now_s();
        if (mc_trainer_grad(tr, ids, ids, a.batch, a.length, 1.0 / (double)(n_tok - a.batch), &nll, &count, &err) !=
            MC_OK) {
            fprintf(stderr, "bench_train: %s\n", err.msg);
            rc = 1;
        } else if (step >= 0) {
            secs[step] = now_s() - t0;
            fprintf(stderr, "step %d: %.3f s, loss %.4f\n", step, secs[step], nll / (double)count);
        }
    }
    if (rc == 0) {
        qsort(secs, (size_t)a.steps, sizeof(double), cmp_double);
        const double med = secs[a.steps / 2], flop = 6.0 * (double)info.n_params * (double)n_tok;
        printf("batch %d x %d, %d threads, %lld params%s: median %.3f s/step (best %.3f), %.1f tokens/s, %.1f "
               "GFLOP/s (6 x params x tokens)",
               a.batch, a.length, a.threads, (long long)info.n_params, a.lora_r > 0 ? " (LoRA)" : "", med, secs[0],
               (double)n_tok / med, flop / med * 1e-9);
        if (a.peak > 0) {
            printf(", %.1f%% of %.1f GFLOP/s", 100.0 * flop / med * 1e-9 / a.peak, a.peak);
        }
#ifdef MAMBAC_HAVE_CUDA
        size_t free_b = 0, total_b = 0;
        if (a.backend == MC_BACKEND_CUDA && cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) {
            printf(", cuda %s, device memory in use %.2f GB", a.precision == MC_PRECISION_BF16 ? "bf16"
                                                               : a.precision == MC_PRECISION_TF32 ? "tf32" : "f32",
                   (double)(total_b - free_b) * 1e-9);
        }
#endif
        printf("\n");
    }
    free(ids);
    free(secs);
    mc_trainer_free(tr);
    mc_model_free(model);
    return rc;
}
