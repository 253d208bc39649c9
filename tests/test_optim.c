// Optimizer: AdamW + schedules + clipping against torch / transformers (tests/fixtures/expect/optim.json from
// tools/oracle/optim_fixtures.py), the weight-decay name rule, exact resumption through the state file, bad input.
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// cmocka.h needs setjmp.h and stdarg.h before it
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>
// clang-format on

#include <cjson/cJSON.h>

#include "check.h"
#include "io/safetensors.h"
#include "mambac.h"
#include "train/optim.h"

static cJSON *g_doc;

static int load_fixture(void **unused) {
    char *path = mc_test_fixture("expect/optim.json");
    char *text = path != NULL ? mc_test_read_text(path) : NULL;
    g_doc = text != NULL ? cJSON_Parse(text) : NULL;
    free(text);
    free(path);
    return 0;
}

static int free_fixture(void **unused) {
    cJSON_Delete(g_doc);
    return 0;
}

static const cJSON *fixture(const char *key) {
    if (g_doc == NULL) {
        skip(); // $MC_FIXTURES/expect/optim.json absent: run tools/oracle/optim_fixtures.py
    }
    const cJSON *j = cJSON_GetObjectItem(g_doc, key);
    assert_non_null(j);
    return j;
}

static double num(const cJSON *obj, const char *key) {
    const cJSON *j = cJSON_GetObjectItem(obj, key);
    assert_true(cJSON_IsNumber(j));
    return j->valuedouble;
}

static float *floats(const cJSON *arr, int64_t n) {
    assert_int_equal(cJSON_GetArraySize(arr), n);
    float *v = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    int64_t i = 0;
    const cJSON *x = NULL;
    cJSON_ArrayForEach(x, arr) {
        v[i++] = (float)x->valuedouble; // the fixture holds f32 values printed exactly
    }
    return v;
}

// Tensor name of the state file at path, as floats (owned).
static float *state_tensor(const char *path, const char *name, int64_t n) {
    mc_st_set *set = NULL;
    mc_error err = { 0 };
    if (mc_st_open(path, &set, &err) != MC_OK) {
        fail_msg("%s", err.msg);
    }
    const mc_st_tensor *t = mc_st_find(set, name);
    assert_non_null(t);
    assert_int_equal(t->numel, n);
    float *v = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    memcpy(v, t->data, (size_t)n * sizeof(float));
    mc_st_close(set);
    return v;
}

// Learning rates are doubles computed by the same formulas in the same order: equal up to libm's cos.
static void check_lr(double got, double want, const char *label, int64_t k) {
    if (fabs(got - want) > 1e-14 * fabs(want)) {
        fail_msg("%s step %lld: lr %.17g, want %.17g", label, (long long)k, got, want);
    }
}

static void test_schedules(void **unused) {
    const cJSON *c = NULL;
    cJSON_ArrayForEach(c, fixture("schedules")) {
        mc_lr_schedule s;
        mc_lr_schedule_init(&s);
        mc_error err = { 0 };
        assert_int_equal(mc_lr_kind_parse(cJSON_GetObjectItem(c, "name")->valuestring, &s.kind, &err), MC_OK);
        s.lr = num(c, "lr");
        s.warmup_steps = (int64_t)num(c, "warmup");
        s.total_steps = (int64_t)num(c, "total");
        if (cJSON_GetObjectItem(c, "num_cycles") != NULL) {
            s.num_cycles = num(c, "num_cycles");
        }
        assert_int_equal(mc_lr_schedule_check(&s, &err), MC_OK);
        char label[64];
        snprintf(label, sizeof(label), "%s W=%lld S=%lld", cJSON_GetObjectItem(c, "name")->valuestring,
                 (long long)s.warmup_steps, (long long)s.total_steps);
        int64_t k = 0;
        const cJSON *lr = NULL;
        cJSON_ArrayForEach(lr, cJSON_GetObjectItem(c, "lrs")) {
            check_lr(mc_lr_schedule_at(&s, k), lr->valuedouble, label, k);
            k++;
        }
    }
    cJSON_ArrayForEach(c, fixture("warmup")) {
        assert_int_equal(mc_lr_warmup_steps(num(c, "warmup"), (int64_t)num(c, "total")), (int64_t)num(c, "steps"));
    }
}

static void test_decay_names(void **unused) {
    const cJSON *c = NULL;
    cJSON_ArrayForEach(c, fixture("decay")) {
        const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
        if (mc_optim_name_decays(name) != cJSON_IsTrue(cJSON_GetObjectItem(c, "decays"))) {
            fail_msg("%s: mambac says decays=%d, transformers the opposite", name, mc_optim_name_decays(name));
        }
    }
}

// Every run of the fixture, step by step: the clipped norm, the lr, the parameters; then the moments.
// Bound 1e-6 of max|want|: the update is f32 arithmetic in torch's order, but torch's vectorized f32 sqrt (AVX-512)
// is not correctly rounded and the grad norm is summed in another order, so a few elements differ by an ulp.
static void test_runs(void **state) {
    const cJSON *run = NULL;
    cJSON_ArrayForEach(run, fixture("runs")) {
        const char *name = cJSON_GetObjectItem(run, "name")->valuestring;
        const cJSON *tensors = cJSON_GetObjectItem(run, "tensors");
        const int64_t n_groups = cJSON_GetArraySize(tensors);
        mc_optim_group *groups = calloc((size_t)n_groups, sizeof(*groups));
        int64_t n = 0, k = 0;
        const cJSON *t = NULL;
        cJSON_ArrayForEach(t, tensors) {
            groups[k] = (mc_optim_group){ .offset = n,
                                          .numel = (int64_t)num(t, "numel"),
                                          .decay = cJSON_IsTrue(cJSON_GetObjectItem(t, "decay")) };
            n += groups[k++].numel;
        }
        mc_adamw_opts o = { .beta1 = num(run, "beta1"),
                            .beta2 = num(run, "beta2"),
                            .eps = num(run, "eps"),
                            .weight_decay = num(run, "weight_decay") };
        mc_lr_schedule s;
        mc_lr_schedule_init(&s);
        mc_error err = { 0 };
        assert_int_equal(mc_lr_kind_parse(cJSON_GetObjectItem(run, "schedule")->valuestring, &s.kind, &err), MC_OK);
        s.lr = num(run, "lr");
        s.warmup_steps = (int64_t)num(run, "warmup");
        s.total_steps = (int64_t)num(run, "total");
        const double max_norm = num(run, "max_norm");
        mc_adamw *opt = NULL;
        assert_int_equal(mc_adamw_new(n, groups, n_groups, &o, &opt, &err), MC_OK);
        float *params = floats(cJSON_GetObjectItem(run, "init"), n);
        const cJSON *step = NULL;
        cJSON_ArrayForEach(step, cJSON_GetObjectItem(run, "steps")) {
            char label[80];
            snprintf(label, sizeof(label), "%s step %lld", name, (long long)mc_adamw_steps(opt) + 1);
            float *grads = floats(cJSON_GetObjectItem(step, "grads"), n);
            double norm = 0;
            assert_int_equal(mc_grads_clip_norm(grads, groups, n_groups, max_norm, &norm, &err), MC_OK);
            if (max_norm > 0) {
                const double want = num(step, "total_norm");
                if (fabs(norm - want) > 1e-6 * want) {
                    fail_msg("%s: grad norm %.9g, want %.9g", label, norm, want);
                }
            }
            const double lr = mc_lr_schedule_at(&s, mc_adamw_steps(opt));
            check_lr(lr, num(step, "lr"), name, mc_adamw_steps(opt));
            assert_int_equal(mc_adamw_step(opt, params, grads, lr, &err), MC_OK);
            float *want = floats(cJSON_GetObjectItem(step, "params"), n);
            assert_true(mc_check_close(params, want, n, 1e-6, label));
            free(want);
            free(grads);
        }
        // The moments, read back from the state file.
        char path[128];
        snprintf(path, sizeof(path), "%s/state.safetensors", ((mc_test_dir *)*state)->dir);
        assert_int_equal(mc_adamw_save(opt, path, &err), MC_OK);
        const char *keys[] = { "m", "v" }, *want_keys[] = { "final_m", "final_v" };
        for (int i = 0; i < 2; i++) {
            float *got = state_tensor(path, keys[i], n), *want = floats(cJSON_GetObjectItem(run, want_keys[i]), n);
            char label[80];
            snprintf(label, sizeof(label), "%s %s", name, want_keys[i]);
            assert_true(mc_check_close(got, want, n, 1e-6, label));
            free(got);
            free(want);
        }
        free(params);
        mc_adamw_free(opt);
        free(groups);
    }
}

static void fill(float *x, int64_t n, uint32_t seed, float scale) {
    for (int64_t i = 0; i < n; i++) { // a small LCG: the values only need to vary
        seed = seed * 1664525u + 1013904223u;
        x[i] = scale * ((float)(seed >> 8) / 16777216.0f - 0.5f);
    }
}

// Saving after 3 steps and loading into a fresh optimizer continues bit for bit; frozen elements stay untouched.
static void test_resume(void **state) {
    const mc_optim_group groups[] = { { .offset = 0, .numel = 10, .decay = true },
                                      { .offset = 12, .numel = 7, .decay = false } }; // 10, 11 and 19 frozen
    const int64_t n = 20;
    mc_adamw_opts o;
    mc_adamw_opts_init(&o);
    o.weight_decay = 0.1;
    mc_adamw *a = NULL, *b = NULL;
    mc_error err = { 0 };
    assert_int_equal(mc_adamw_new(n, groups, 2, &o, &a, &err), MC_OK);
    assert_int_equal(mc_adamw_new(n, groups, 2, &o, &b, &err), MC_OK);
    float pa[20], pb[20], g[20], p0[20];
    fill(pa, n, 1, 2.0f);
    memcpy(p0, pa, sizeof(p0));
    for (int k = 0; k < 3; k++) {
        fill(g, n, 100 + (uint32_t)k, 1.0f);
        assert_int_equal(mc_adamw_step(a, pa, g, 1e-2, &err), MC_OK);
    }
    char path[128];
    snprintf(path, sizeof(path), "%s/adamw.safetensors", ((mc_test_dir *)*state)->dir);
    assert_int_equal(mc_adamw_save(a, path, &err), MC_OK);
    assert_int_equal(mc_adamw_load(b, path, &err), MC_OK);
    assert_int_equal(mc_adamw_steps(b), 3);
    memcpy(pb, pa, sizeof(pb));
    for (int k = 3; k < 6; k++) {
        fill(g, n, 100 + (uint32_t)k, 1.0f);
        assert_int_equal(mc_adamw_step(a, pa, g, 1e-2, &err), MC_OK);
        assert_int_equal(mc_adamw_step(b, pb, g, 1e-2, &err), MC_OK);
    }
    assert_memory_equal(pa, pb, sizeof(pa));
    assert_true(pa[10] == p0[10] && pa[11] == p0[11] && pa[19] == p0[19]);
    assert_true(pa[0] != p0[0] && pa[12] != p0[12]);

    // A state for another layout is refused and leaves the optimizer as it was.
    mc_adamw *c = NULL;
    const mc_optim_group other[] = { { .offset = 0, .numel = 10, .decay = true },
                                     { .offset = 12, .numel = 8, .decay = false } };
    assert_int_equal(mc_adamw_new(n, other, 2, &o, &c, &err), MC_OK);
    assert_int_equal(mc_adamw_load(c, path, &err), MC_ERR_FORMAT);
    char want[256];
    snprintf(want, sizeof(want), "%s: no group (offset 12, numel 8, decay 0) as the optimizer's group 1", path);
    assert_string_equal(err.msg, want);
    assert_int_equal(mc_adamw_steps(c), 0);
    mc_adamw_free(c);
    // A shard (one of the groups, as a rank of a sharded optimizer holds) loads its part of the whole state.
    assert_int_equal(mc_adamw_new(n, groups + 1, 1, &o, &c, &err), MC_OK);
    assert_int_equal(mc_adamw_load(c, path, &err), MC_OK);
    assert_int_equal(mc_adamw_steps(c), 3);
    float *ma = calloc((size_t)n, sizeof(float)), *va = calloc((size_t)n, sizeof(float));
    float *mc = calloc((size_t)n, sizeof(float)), *vc = calloc((size_t)n, sizeof(float));
    mc_st_set *file = NULL;
    assert_int_equal(mc_st_open(path, &file, &err), MC_OK);
    memcpy(ma, mc_st_find(file, "m")->data, (size_t)n * sizeof(float));
    memcpy(va, mc_st_find(file, "v")->data, (size_t)n * sizeof(float));
    mc_st_close(file);
    assert_int_equal(mc_adamw_export(c, mc, vc, &err), MC_OK);
    assert_memory_equal(ma + groups[1].offset, mc + groups[1].offset, (size_t)groups[1].numel * sizeof(float));
    assert_memory_equal(va + groups[1].offset, vc + groups[1].offset, (size_t)groups[1].numel * sizeof(float));
    assert_true(ma[0] != 0 && mc[0] == 0 && vc[0] == 0); // group 0 is not the shard's
    free(ma);
    free(va);
    free(mc);
    free(vc);
    mc_adamw_free(c);
    assert_int_equal(mc_adamw_new(n + 1, groups, 2, &o, &c, &err), MC_OK);
    assert_int_equal(mc_adamw_load(c, path, &err), MC_ERR_FORMAT);
    snprintf(want, sizeof(want), "%s: tensor m has 1 dims (first 20), expected [21]", path);
    assert_string_equal(err.msg, want);
    mc_adamw_free(c);
    snprintf(path, sizeof(path), "%s/missing.safetensors", ((mc_test_dir *)*state)->dir);
    assert_int_equal(mc_adamw_load(b, path, &err), MC_ERR_IO);
    mc_adamw_free(a);
    mc_adamw_free(b);
    mc_adamw_free(NULL);
}

static void test_clip(void **unused) {
    const mc_optim_group groups[] = { { .offset = 0, .numel = 2, .decay = true },
                                      { .offset = 3, .numel = 1, .decay = false } };
    float g[4] = { 3, 0, 100, 4 }; // g[2] is outside every group: neither counted nor scaled
    double norm = 0;
    mc_error err = { 0 };
    assert_int_equal(mc_grads_clip_norm(g, groups, 2, 0.0, &norm, &err), MC_OK); // 0: measure only
    assert_true(norm == 5.0 && g[0] == 3 && g[3] == 4);
    assert_int_equal(mc_grads_clip_norm(g, groups, 2, 10.0, &norm, &err), MC_OK); // under the limit: unchanged
    assert_true(g[0] == 3 && g[3] == 4);
    assert_int_equal(mc_grads_clip_norm(g, groups, 2, 1.0, &norm, &err), MC_OK);
    const float c = (1.0f / (5.0f + 1e-6f)) * 1.0f;
    assert_true(norm == 5.0 && g[0] == 3 * c && g[3] == 4 * c && g[2] == 100);
    g[0] = INFINITY; // as torch: the norm is inf, the coefficient 0, inf * 0 = NaN; the loop decides
    assert_int_equal(mc_grads_clip_norm(g, groups, 2, 1.0, &norm, &err), MC_OK);
    assert_true(isinf(norm) && isnan(g[0]) && g[3] == 0);
    assert_int_equal(mc_grads_clip_norm(g, groups, 2, -1.0, &norm, &err), MC_ERR_INVALID);
    assert_string_equal(err.msg, "max_grad_norm is -1, must be finite and >= 0");
}

static void test_bad_input(void **unused) {
    mc_adamw *opt = NULL;
    mc_error err = { 0 };
    const mc_optim_group overlap[] = { { .offset = 4, .numel = 4, .decay = true },
                                       { .offset = 0, .numel = 5, .decay = false } };
    assert_int_equal(mc_adamw_new(10, overlap, 2, NULL, &opt, &err), MC_ERR_INVALID);
    assert_string_equal(err.msg, "optimizer: groups at offsets 0 and 4 overlap");
    const mc_optim_group outside[] = { { .offset = 8, .numel = 4, .decay = true } };
    assert_int_equal(mc_adamw_new(10, outside, 1, NULL, &opt, &err), MC_ERR_INVALID);
    assert_string_equal(err.msg, "optimizer: group 0 (offset 8, numel 4) is outside [0, 10)");
    mc_adamw_opts o;
    mc_adamw_opts_init(&o);
    o.beta2 = 1.0;
    assert_int_equal(mc_adamw_new(10, overlap, 1, &o, &opt, &err), MC_ERR_INVALID);
    assert_string_equal(err.msg, "adamw: betas (0.9, 1) must lie in [0, 1)");
    assert_null(opt);
    assert_int_equal(mc_adamw_new(10, overlap, 1, NULL, &opt, &err), MC_OK);
    float p[10] = { 0 }, g[10] = { 0 };
    assert_int_equal(mc_adamw_step(opt, p, g, NAN, &err), MC_ERR_INVALID);
    assert_string_equal(err.msg, "adamw: learning rate nan, must be finite and >= 0");
    assert_int_equal(mc_adamw_steps(opt), 0);
    mc_adamw_free(opt);

    mc_lr_schedule s;
    mc_lr_schedule_init(&s);
    assert_int_equal(mc_lr_schedule_check(&s, &err), MC_ERR_INVALID);
    assert_string_equal(err.msg, "lr schedule: total_steps 0, must be >= 1 for linear");
    mc_lr_kind kind;
    assert_int_equal(mc_lr_kind_parse("cosine_with_restarts", &kind, &err), MC_ERR_INVALID);
    assert_string_equal(
        err.msg, "lr scheduler \"cosine_with_restarts\": expected linear, cosine, constant or constant_with_warmup");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schedules),
        cmocka_unit_test(test_decay_names),
        cmocka_unit_test_setup_teardown(test_runs, mc_test_dir_setup, mc_test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_resume, mc_test_dir_setup, mc_test_dir_teardown),
        cmocka_unit_test(test_clip),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, load_fixture, free_fixture);
}
