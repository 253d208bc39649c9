// The cuda backend's `sample` op (src/kernels/cuda/sample.cu) against its reference twin (kernels/ref/sample.c, the
// host sampler's own processors) given the same uniforms: random and tied logits [n, V] for V = 1, 7, 1000, 50280,
// every processor alone and combined, greedy ties (first max), top-k >= V, top-p off / 0 / in between, min-p,
// repetition penalty with repeated ids, temperature. Greedy ids must be equal. Sampled ids must be equal unless the
// host finds u · Σw within 1e-6 · Σw of a cumulative boundary of its own weights (then the order of the double sums
// may decide; such rows are counted and printed). Then mc_generate on cuda (ids only come back) against the host
// path on cuda (MAMBAC_HOST_SAMPLING=1; same logits, so exact) on the f32-tied fixture and a random full-vocabulary
// model, and against cpu on the fixture, greedy and seeded sampling. Skips (77) when no CUDA device is usable.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// cmocka.h needs setjmp.h, stdarg.h and stddef.h first
#include <cmocka.h>

#include "base/rng.h"
#include "check.h"
#include "dev_check.h"
#include "generate/sampler.h"
#include "kernels/ops.h"
#include "kernels/ref/sample.h"
#include "mambac.h"

static int g_near_boundary; // sampled rows that differed with u within 1e-6 of a boundary (reported)
static int g_rows_checked;

enum { LOGITS_RANDOM, LOGITS_TIED, LOGITS_SOME_INF };

static void fill_logits(float *x, int64_t n, int kind, uint64_t seed) {
    mc_test_rng r = { seed };
    for (int64_t i = 0; i < n; i++) {
        switch (kind) {
            case LOGITS_TIED: // few levels: ties at the max, at the k-th value, at the top-p cut
                x[i] = (float)(mc_test_rng_u32(&r) % 5) - 2.0f;
                break;
            case LOGITS_SOME_INF:
                x[i] = mc_test_rng_u32(&r) % 4 == 0 ? -INFINITY : mc_test_rng_uniform(&r, -6.0f, 6.0f);
                break;
            default:
                x[i] = mc_test_rng_uniform(&r, -8.0f, 8.0f);
        }
    }
}

// Distance from u · Σw to the nearest cumulative boundary of the host-processed row, relative to Σw.
static double boundary_distance(const mc_sample_args *a, const float *logits, int64_t V, const int32_t *prev,
                                int64_t n_prev, double u01) {
    mc_sample_scratch w;
    float *row = malloc((size_t)V * sizeof(float));
    assert_non_null(row);
    assert_true(mc_sample_scratch_init(&w, V));
    memcpy(row, logits, (size_t)V * sizeof(float));
    mc_ref_sample_process(a, &w, row, prev, n_prev);
    float max = -INFINITY;
    for (int64_t i = 0; i < V; i++) {
        max = row[i] > max ? row[i] : max;
    }
    double total = 0;
    for (int64_t i = 0; i < V; i++) {
        total += exp((double)(row[i] - max));
    }
    const double u = u01 * total;
    double cum = 0, best = fabs(u);
    for (int64_t i = 0; i < V; i++) {
        cum += exp((double)(row[i] - max));
        best = fmin(best, fabs(u - cum));
    }
    mc_sample_scratch_free(&w);
    free(row);
    return best / total;
}

// One case: n rows of V logits (ld apart on the device), settings o, n_prev history ids per row drawn from
// [0, min(V, 8)) (so they repeat), uniforms from a seeded stream with the first rows pinned to 0 and 1 − 2^-53.
static void sample_case(const char *label, int64_t n, int64_t V, int64_t ld, int kind, const mc_sampler_opts *o,
                        int64_t n_prev, uint64_t seed) {
    mc_sample_args a;
    mc_sample_args_from_opts(&a, o);
    float *logits = calloc((size_t)(n * ld), sizeof(float));
    int32_t *prev = calloc((size_t)(n * n_prev + 1), sizeof(int32_t));
    int64_t *off = calloc((size_t)n + 1, sizeof(int64_t));
    double *u = calloc((size_t)n, sizeof(double));
    int32_t *want = calloc((size_t)n, sizeof(int32_t)), *got = calloc((size_t)n, sizeof(int32_t));
    assert_true(logits && prev && off && u && want && got);
    mc_test_rng r = { seed ^ 0x5eed };
    mc_rng ur;
    mc_rng_seed(&ur, seed);
    for (int64_t row = 0; row < n; row++) {
        fill_logits(logits + row * ld, V, kind, seed * 1000 + (uint64_t)row);
        off[row + 1] = off[row] + n_prev;
        for (int64_t j = 0; j < n_prev; j++) {
            prev[off[row] + j] = (int32_t)(mc_test_rng_u32(&r) % (uint32_t)(V < 8 ? V : 8));
        }
        u[row] = row == 0 ? 0.0 : row == 1 ? 1.0 - 0x1p-53 : mc_rng_uniform(&ur);
    }
    assert_int_equal(mc_ref_sample(NULL, want, logits, ld, n, V, &a, prev, off, u), MC_OK);
    void *d = NULL;
    assert_int_equal(g_ops->alloc(&g_ex, &d, (size_t)(n * ld) * sizeof(float)), MC_OK);
    assert_int_equal(g_ops->upload(&g_ex, d, logits, (size_t)(n * ld) * sizeof(float)), MC_OK);
    if (g_ops->sample(&g_ex, got, d, ld, n, V, &a, prev, off, u) != MC_OK) {
        fail_msg("%s: sample: %s", label, g_err.msg);
    }
    g_ops->free(&g_ex, d);
    for (int64_t row = 0; row < n; row++) {
        g_rows_checked++;
        assert_true(got[row] >= 0 && got[row] < V);
        if (got[row] == want[row]) {
            continue;
        }
        double dist = -1;
        if (a.do_sample) {
            dist = boundary_distance(&a, logits + row * ld, V, prev + off[row], n_prev, u[row]);
            if (dist <= 1e-6) {
                g_near_boundary++;
                printf("%s: row %lld: device %d, host %d, u within %.2g of a boundary (allowed)\n", label,
                       (long long)row, got[row], want[row], dist);
                continue;
            }
        }
        fail_msg("%s (n %lld, V %lld): row %lld: device chose %d, host %d (u %.17g, boundary distance %.3g)", label,
                 (long long)n, (long long)V, (long long)row, got[row], want[row], u[row], dist);
    }
    free(logits);
    free(prev);
    free(off);
    free(u);
    free(want);
    free(got);
}

static const int64_t g_vocabs[] = { 1, 7, 1000, 50280 };
#define N_VOCABS (sizeof(g_vocabs) / sizeof(g_vocabs[0]))

static int64_t rows_for(int64_t V) {
    return V >= 50000 ? 9 : 33; // several blocks, and rows 0 and 1 carry the extreme uniforms
}

// Every kind of logits and vocabulary size for settings o.
static void all_shapes(const char *label, const mc_sampler_opts *o, int64_t n_prev) {
    for (size_t vi = 0; vi < N_VOCABS; vi++) {
        const int64_t V = g_vocabs[vi];
        for (int kind = LOGITS_RANDOM; kind <= LOGITS_SOME_INF; kind++) {
            sample_case(label, rows_for(V), V, V, kind, o, n_prev, 17 * (uint64_t)vi + (uint64_t)kind + 1);
        }
    }
}

static void test_greedy(void **unused) {
    mc_sampler_opts o;
    mc_sampler_opts_init(&o);
    all_shapes("greedy", &o, 0); // LOGITS_TIED: the first of the maxima
    o.repetition_penalty = 1.7;
    all_shapes("greedy + penalty 1.7", &o, 12);
    o.repetition_penalty = 0.6;
    all_shapes("greedy + penalty 0.6", &o, 30);
    mc_sampler_opts_init(&o); // rows further apart than V
    sample_case("greedy, ld > V", 5, 1000, 1037, LOGITS_RANDOM, &o, 0, 3);
    o.temperature = 0.5; // ignored when greedy, as HF
    o.top_k = 3;
    all_shapes("greedy ignores sampling filters", &o, 0);
}

static void test_each_processor(void **unused) {
    mc_sampler_opts o;
    mc_sampler_opts_init(&o);
    o.do_sample = true;
    o.seed = 1;
    all_shapes("plain sampling", &o, 0);
    o.temperature = 0.7;
    all_shapes("temperature 0.7", &o, 0);
    o.temperature = 2.5;
    all_shapes("temperature 2.5", &o, 0);
    o.temperature = 1.0;
    const int64_t ks[] = { 1, 2, 5, 50, 999, 1000, 50280, 100000 };
    for (size_t i = 0; i < sizeof(ks) / sizeof(ks[0]); i++) { // top-k >= V removes nothing
        char label[64];
        snprintf(label, sizeof(label), "top-k %lld", (long long)ks[i]);
        o.top_k = ks[i];
        all_shapes(label, &o, 0);
    }
    o.top_k = 0;
    const double ps[] = { 0.0, 1e-9, 0.3, 0.9, 0.999, 1.0 }; // 0: only the top entry stays; 1: off
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) {
        char label[64];
        snprintf(label, sizeof(label), "top-p %g", ps[i]);
        o.top_p = ps[i];
        all_shapes(label, &o, 0);
    }
    o.top_p = 1.0;
    const double mps[] = { 1e-4, 0.05, 0.5, 1.0 };
    for (size_t i = 0; i < sizeof(mps) / sizeof(mps[0]); i++) {
        char label[64];
        snprintf(label, sizeof(label), "min-p %g", mps[i]);
        o.min_p = mps[i];
        all_shapes(label, &o, 0);
    }
    o.min_p = 0;
    o.repetition_penalty = 1.3;
    all_shapes("penalty 1.3 (repeated ids)", &o, 40);
    o.repetition_penalty = 0.8;
    all_shapes("penalty 0.8 (repeated ids)", &o, 40);
}

static void test_combined(void **unused) {
    mc_sampler_opts o;
    mc_sampler_opts_init(&o);
    o.do_sample = true;
    o.temperature = 0.8;
    o.top_k = 50;
    o.top_p = 0.95;
    o.min_p = 0.02;
    o.repetition_penalty = 1.2;
    all_shapes("all processors", &o, 25);
    o.top_k = 0;
    o.temperature = 1.3;
    o.top_p = 0.7;
    all_shapes("temperature + top-p + min-p + penalty", &o, 25);
    o.top_k = 7;
    o.top_p = 0.5;
    o.min_p = 0;
    o.repetition_penalty = 1.0;
    all_shapes("top-k 7 + top-p 0.5", &o, 0);
    // a batch of 64 full rows, the decode shape of issue 9
    o.top_k = 50;
    o.top_p = 0.9;
    o.repetition_penalty = 1.1;
    sample_case("batch 64, V 50280", 64, 50280, 50280, LOGITS_RANDOM, &o, 100, 77);
    mc_sampler_opts_init(&o);
    sample_case("greedy batch 64, V 50280", 64, 50280, 50280, LOGITS_RANDOM, &o, 0, 78);
    printf("sample op: %d rows checked, %d differed within 1e-6 of a boundary\n", g_rows_checked, g_near_boundary);
}

// ---- mc_generate end to end ----------------------------------------------------------------------------------

static void generate(const mc_model *m, const mc_generate_opts *o, bool host_sampling, int32_t **out, int64_t *len) {
    int32_t a[3] = { 1, 2, 3 }, b[5] = { 9, 8, 7, 6, 5 }, c[1] = { 4 };
    const int32_t *pp[3] = { a, b, c };
    int64_t lens[3] = { 3, 5, 1 };
    if (host_sampling) {
        setenv("MAMBAC_HOST_SAMPLING", "1", 1);
    } else {
        unsetenv("MAMBAC_HOST_SAMPLING");
    }
    mc_error err = { 0 };
    mc_status st = mc_generate(m, pp, lens, 3, o, out, len, &err);
    unsetenv("MAMBAC_HOST_SAMPLING");
    if (st != MC_OK) {
        fail_msg("mc_generate: %s", err.msg);
    }
}

static void expect_same(const char *label, int32_t **x, const int64_t *xl, int32_t **y, const int64_t *yl) {
    for (int i = 0; i < 3; i++) {
        if (xl[i] != yl[i] || memcmp(x[i], y[i], (size_t)xl[i] * sizeof(int32_t)) != 0) {
            for (int64_t t = 0; t < (xl[i] < yl[i] ? xl[i] : yl[i]); t++) {
                if (x[i][t] != y[i][t]) {
                    fail_msg("%s: sequence %d, new token %lld: %d vs %d", label, i, (long long)t, x[i][t], y[i][t]);
                }
            }
            fail_msg("%s: sequence %d has %lld vs %lld tokens", label, i, (long long)xl[i], (long long)yl[i]);
        }
    }
}

static void free3(int32_t **x) {
    for (int i = 0; i < 3; i++) {
        free(x[i]);
        x[i] = NULL;
    }
}

// cuda (device sampling) against cuda's host path and against cpu, for the settings in o.
// cpu may be NULL: a random model's nearly flat logits make cuda vs cpu rounding able to flip a choice.
static void compare_generate(const char *label, const mc_model *gpu, const mc_model *cpu, const mc_generate_opts *o) {
    int32_t *dev[3], *host[3], *ref[3];
    int64_t dl[3], hl[3], rl[3];
    generate(gpu, o, false, dev, dl);
    generate(gpu, o, true, host, hl);
    char what[160];
    snprintf(what, sizeof(what), "%s: cuda device sampling vs cuda host sampling (same logits)", label);
    expect_same(what, dev, dl, host, hl);
    free3(host);
    if (cpu != NULL) {
        generate(cpu, o, false, ref, rl);
        snprintf(what, sizeof(what), "%s: cuda vs cpu (logits differ by rounding; a mismatch only here is the forward)",
                 label);
        expect_same(what, dev, dl, ref, rl);
        free3(ref);
    }
    free3(dev);
}

static void generate_suite(const char *name, const mc_model *gpu, const mc_model *cpu) {
    mc_generate_opts o;
    mc_generate_opts_init(&o, gpu);
    o.max_new_tokens = 24;
    o.stop_at_eos = false;
    char label[128];
    snprintf(label, sizeof(label), "%s greedy", name);
    compare_generate(label, gpu, cpu, &o);
    o.sampler.repetition_penalty = 1.3;
    snprintf(label, sizeof(label), "%s greedy + penalty", name);
    compare_generate(label, gpu, cpu, &o);
    o.sampler.do_sample = true;
    o.sampler.seed = 1234;
    o.sampler.temperature = 0.9;
    o.sampler.top_k = 40;
    o.sampler.top_p = 0.9;
    o.sampler.min_p = 0.01;
    snprintf(label, sizeof(label), "%s seeded sampling (all processors)", name);
    compare_generate(label, gpu, cpu, &o);
    mc_sampler_opts_init(&o.sampler);
    o.sampler.do_sample = true;
    o.sampler.seed = 7;
    o.stop_at_eos = true; // the eos stop stays on the host: same lengths
    snprintf(label, sizeof(label), "%s seeded plain sampling, eos stop", name);
    compare_generate(label, gpu, cpu, &o);
}

static void load_pair(const char *path, mc_model **gpu, mc_model **cpu) {
    mc_load_opts lo;
    mc_load_opts_init(&lo);
    mc_error err = { 0 };
    lo.backend = MC_BACKEND_CUDA;
    if (mc_model_load(path, &lo, gpu, &err) != MC_OK) {
        fail_msg("load %s on cuda: %s", path, err.msg);
    }
    lo.backend = MC_BACKEND_CPU;
    if (mc_model_load(path, &lo, cpu, &err) != MC_OK) {
        fail_msg("load %s on cpu: %s", path, err.msg);
    }
}

static void test_generate_fixture(void **unused) {
    char *path = mc_test_fixture("models/f32-tied");
    if (path == NULL) {
        skip();
    }
    mc_model *gpu = NULL, *cpu = NULL;
    load_pair(path, &gpu, &cpu);
    generate_suite("f32-tied", gpu, cpu);
    mc_model_free(gpu);
    mc_model_free(cpu);
    free(path);
}

// A random model with the released vocabulary (50280 rows), small otherwise: device sampling against the host path
// on the same cuda logits (exact); cpu is not compared (random logits are nearly flat, so rounding may flip ties).
static void test_generate_full_vocab(void **unused) {
    mc_config cfg;
    mc_error err = { 0 };
    assert_int_equal(mc_config_preset("130m", &cfg, &err), MC_OK);
    cfg.hidden_size = 64;
    cfg.intermediate_size = 128;
    cfg.num_hidden_layers = 2;
    cfg.time_step_rank = 4;
    mc_load_opts lo;
    mc_load_opts_init(&lo);
    mc_model *gpu = NULL;
    lo.backend = MC_BACKEND_CUDA;
    if (mc_model_init(&cfg, 5, &lo, &gpu, &err) != MC_OK) {
        fail_msg("init on cuda: %s", err.msg);
    }
    generate_suite("random 50280-vocab", gpu, NULL);
    mc_model_free(gpu);
}

static int setup(void **unused) {
    return dev_setup();
}

static int teardown(void **unused) {
    dev_teardown();
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy),
        cmocka_unit_test(test_each_processor),
        cmocka_unit_test(test_combined),
        cmocka_unit_test(test_generate_fixture),
        cmocka_unit_test(test_generate_full_vocab),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
