// Saving and initialising: a saved model loads back with identical logits (f32, bf16 and int8 matrices), and
// mambac init draws the distributions transformers uses (spec §5.1).
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "check.h"
#include "mambac.h"
#include "model/model.h"

static char g_tmp[64];

static int setup(void **unused) {
    snprintf(g_tmp, sizeof(g_tmp), "/tmp/mc_save_XXXXXX");
    return mkdtemp(g_tmp) != NULL ? 0 : -1;
}

static int teardown(void **unused) {
    char p[128];
    snprintf(p, sizeof(p), "%s/config.json", g_tmp);
    unlink(p);
    snprintf(p, sizeof(p), "%s/model.safetensors", g_tmp);
    unlink(p);
    rmdir(g_tmp);
    return 0;
}

static float *logits_of(const mc_model *m, const int32_t *ids, int64_t L) {
    const int64_t V = mc_model_config(m)->vocab_size;
    float *out = malloc((size_t)(L * V) * sizeof(float));
    mc_state *st = NULL;
    mc_error err = { 0 };
    assert_int_equal(mc_state_new(m, 1, &st, &err), MC_OK);
    assert_int_equal(mc_model_forward(m, st, ids, 1, L, true, out, &err), MC_OK);
    mc_state_free(st);
    return out;
}

// Saves m, loads it back (as stored), and checks the logits are bit-identical: same stored values, same kernels.
// transformers 5.x refuses an integer where its config class declares a float ("time_step_scale": 1 fails to load
// with StrictDataclassFieldValidationError), so every float field must be written with a point or an exponent.
static void check_float_fields(const char *label) {
    char p[128];
    snprintf(p, sizeof(p), "%s/config.json", g_tmp);
    char *text = mc_test_read_text(p);
    assert_non_null(text);
    static const char *const fields[] = { "layer_norm_epsilon", "initializer_range", "time_step_scale",
                                          "time_step_min",      "time_step_max",     "time_step_floor" };
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        char key[64];
        snprintf(key, sizeof(key), "\"%s\":", fields[i]);
        const char *at = strstr(text, key);
        assert_non_null(at);
        at += strlen(key) + strspn(at + strlen(key), " \t");
        const size_t len = strcspn(at, ",\n}");
        if (memchr(at, '.', len) == NULL && memchr(at, 'e', len) == NULL) {
            print_error("%s: config.json %s is written as an integer: %.*s\n", label, fields[i], (int)len, at);
            fail();
        }
    }
    free(text);
}

static void roundtrip(const mc_model *m, const char *label) {
    mc_error err = { 0 };
    if (mc_model_save(m, g_tmp, &err) != MC_OK) {
        print_error("%s: save: %s\n", label, err.msg);
        fail();
    }
    check_float_fields(label);
    mc_load_opts opts;
    mc_load_opts_init(&opts);
    opts.backend = MC_BACKEND_REF;
    mc_model *back = NULL;
    if (mc_model_load(g_tmp, &opts, &back, &err) != MC_OK) {
        print_error("%s: load back: %s\n", label, err.msg);
        fail();
    }
    const int64_t V = mc_model_config(m)->vocab_size, L = 9;
    int32_t ids[9];
    for (int64_t t = 0; t < L; t++) {
        ids[t] = (int32_t)((t * 7919 + 13) % V);
    }
    float *a = logits_of(m, ids, L), *b = logits_of(back, ids, L);
    assert_memory_equal(a, b, (size_t)(L * V) * sizeof(float));
    mc_model_info ia, ib;
    mc_model_get_info(m, &ia);
    mc_model_get_info(back, &ib);
    assert_int_equal(ia.n_params, ib.n_params);
    free(a);
    free(b);
    mc_model_free(back);
}

static void test_save_roundtrip(void **unused) {
    const char *names[] = { "models/f32-tied", "models/untied-bias", "models/sharded-bf16", "models/k1-rank1" };
    const mc_weight_dtype dtypes[] = { MC_WEIGHTS_AS_STORED, MC_WEIGHTS_INT8 };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char *path = mc_test_fixture(names[i]);
        if (path == NULL || access(path, R_OK) != 0) {
            free(path);
            mc_test_skip("fixture %s absent (run tools/oracle)", names[i]);
        }
        for (size_t d = 0; d < 2; d++) {
            mc_load_opts opts;
            mc_load_opts_init(&opts);
            opts.backend = MC_BACKEND_REF;
            opts.weight_dtype = dtypes[d];
            mc_model *m = NULL;
            mc_error err = { 0 };
            assert_int_equal(mc_model_load(path, &opts, &m, &err), MC_OK);
            roundtrip(m, names[i]);
            mc_model_free(m);
        }
        free(path);
    }
}

static double mean_of(const float *v, int64_t n, double *std) {
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < n; i++) {
        s += v[i];
        s2 += (double)v[i] * v[i];
    }
    *std = sqrt(s2 / n - (s / n) * (s / n));
    return s / n;
}

static void test_init_distributions(void **unused) {
    mc_config cfg;
    mc_error err = { 0 };
    assert_int_equal(mc_config_preset("130m", &cfg, &err), MC_OK);
    cfg.num_hidden_layers = 2; // the distributions are per layer and per row; a smaller model keeps the test fast
    cfg.vocab_size = 4096;
    mc_model *m = NULL;
    mc_load_opts opts; // the reference kernels, as roundtrip() loads the copy with: logits compare bit for bit
    mc_load_opts_init(&opts);
    opts.backend = MC_BACKEND_REF;
    assert_int_equal(mc_model_init(&cfg, 7, &opts, &m, &err), MC_OK);
    const int64_t H = cfg.hidden_size, E = cfg.intermediate_size, N = cfg.state_size, K = cfg.conv_kernel,
                  R = cfg.time_step_rank;
    double sd, mean = mean_of(m->embed.data, cfg.vocab_size * H, &sd);
    assert_true(fabs(mean) < 1e-3 && fabs(sd - cfg.initializer_range) < 1e-3); // N(0, 0.1), 3.1M draws
    const mc_layer *l = &m->layers[1];
    mean = mean_of(l->in_proj.data, 2 * E * H, &sd);
    assert_true(fabs(mean) < 1e-3 && fabs(sd - cfg.initializer_range) < 1e-3);
    const struct {
        const float *v;
        int64_t n;
        double bound;
    } uniform[] = { { l->conv_w, E * K, 1 / sqrt((double)K) },
                    { l->dt_proj.data, E * R, 1 / sqrt((double)R) },
                    { l->out_proj.data, H * E, 1 / sqrt((double)E) } };
    for (size_t i = 0; i < 3; i++) { // U(−b, b): all inside, std b/√3
        for (int64_t j = 0; j < uniform[i].n; j++) {
            assert_true(fabs(uniform[i].v[j]) <= uniform[i].bound);
        }
        mean_of(uniform[i].v, uniform[i].n, &sd);
        assert_true(fabs(sd - uniform[i].bound / sqrt(3.0)) < 0.03 * uniform[i].bound);
    }
    for (int64_t e = 0; e < E; e++) { // softplus(dt bias) in [time_step_min, time_step_max)
        double d = log1p(exp(l->dt_bias[e]));
        assert_true(d >= cfg.time_step_min * 0.999 && d < cfg.time_step_max * 1.001);
        assert_true(l->D[e] == 1.0f);
        for (int64_t n = 0; n < N; n++) {
            assert_true(fabsf(l->A_log[e * N + n] - logf((float)(n + 1))) == 0.0f);
        }
    }
    mc_model *again = NULL; // same seed, same weights
    assert_int_equal(mc_model_init(&cfg, 7, &opts, &again, &err), MC_OK); // host memory: compared below
    assert_memory_equal(m->layers[1].x_proj.data, again->layers[1].x_proj.data, (size_t)((R + 2 * N) * E) * 4);
    mc_model_free(again);
    roundtrip(m, "init 130m/2 layers");
    mc_model_free(m);
}

static void test_bad_preset(void **unused) {
    mc_config cfg;
    mc_error err = { 0 };
    assert_int_equal(mc_config_preset("7b", &cfg, &err), MC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "7b"));
}

// A config filled by the caller is checked as config.json is: these crashed (division by zero, a read past the
// layers, a huge allocation) or made a model that could not run.
static void test_init_bad_config(void **unused) {
    mc_config base;
    mc_error err = { 0 };
    assert_int_equal(mc_config_preset("130m", &base, &err), MC_OK);
    struct {
        int64_t *field;
        int64_t value;
        const char *name;
    } bad[] = { { &base.vocab_size, 0, "vocab_size" },         { &base.hidden_size, 0, "hidden_size" },
                { &base.num_hidden_layers, 0, "num_hidden_layers" }, { &base.state_size, -3, "state_size" },
                { &base.time_step_rank, 0, "time_step_rank" },     { &base.hidden_size, (int64_t)1 << 40, "hidden_size" } };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const int64_t keep = *bad[i].field;
        *bad[i].field = bad[i].value;
        mc_model *m = (mc_model *)&base; // must come back NULL
        assert_int_equal(mc_model_init(&base, 0, NULL, &m, &err), MC_ERR_INVALID);
        assert_null(m);
        if (strstr(err.msg, bad[i].name) == NULL) {
            fail_msg("message '%s' does not name %s", err.msg, bad[i].name);
        }
        *bad[i].field = keep;
    }
    mc_config cfg = base;
    cfg.layer_norm_epsilon = NAN;
    mc_model *m = NULL;
    assert_int_equal(mc_model_init(&cfg, 0, NULL, &m, &err), MC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "layer_norm_epsilon"));
    cfg = base;
    cfg.eos_token_id = (int32_t)cfg.vocab_size;
    assert_int_equal(mc_model_init(&cfg, 0, NULL, &m, &err), MC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "eos"));
    assert_int_equal(mc_model_init(NULL, 0, NULL, &m, &err), MC_ERR_INVALID);
    assert_int_equal(mc_model_save(NULL, "/nonexistent", &err), MC_ERR_INVALID);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_save_roundtrip),
        cmocka_unit_test(test_init_distributions),
        cmocka_unit_test(test_bad_preset),
        cmocka_unit_test(test_init_bad_config),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
