// LoRA adapters applied on load (mc_load_opts.lora) against PEFT (tools/oracle/lora_logits.py): the logits of
// PEFT-written adapters and of adapters written by `mambac finetune`, as PeftModel.from_pretrained computes them
// (unmerged; a tied embedding's adapter leaves the head on the base matrix), on the ref and cpu backends; and
// adapters that do not fit are refused with the tensor's name.
#include <cjson/cJSON.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "check.h"
#include "mambac.h"

#define LOGIT_TOL 1e-4 // of the largest logit, as test_model.c

static cJSON *g_doc;

static int setup(void **unused) {
    char *path = mc_test_fixture("expect/train/lora_logits.json");
    char *text = path != NULL ? mc_test_read_text(path) : NULL;
    free(path);
    if (text == NULL) {
        mc_test_skip("no expect/train/lora_logits.json (run tools/oracle/lora_logits.py)");
    }
    g_doc = cJSON_Parse(text);
    free(text);
    return g_doc != NULL ? 0 : -1;
}

static int teardown(void **unused) {
    cJSON_Delete(g_doc);
    return 0;
}

static mc_status load(const char *model, const char *adapter, mc_backend backend, mc_model **m, mc_error *err) {
    char *mpath = mc_test_fixture(model), *apath = adapter != NULL ? mc_test_fixture(adapter) : NULL;
    mc_load_opts opts;
    mc_load_opts_init(&opts);
    opts.backend = backend;
    opts.n_threads = 2;
    opts.lora = apath;
    mc_status st = mc_model_load(mpath, &opts, m, err);
    free(mpath);
    free(apath);
    return st;
}

static void test_logits_match_peft(void **unused) {
    const cJSON *c;
    int n = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(g_doc, "cases")) {
        const char *adapter = cJSON_GetObjectItem(c, "adapter")->valuestring;
        const cJSON *rows = cJSON_GetObjectItem(c, "input_ids");
        const int64_t B = cJSON_GetArraySize(rows), T = cJSON_GetArraySize(cJSON_GetArrayItem(rows, 0));
        int32_t *ids = malloc((size_t)(B * T) * sizeof(int32_t));
        for (int64_t b = 0; b < B; b++) {
            for (int64_t t = 0; t < T; t++) {
                ids[b * T + t] = cJSON_GetArrayItem(cJSON_GetArrayItem(rows, (int)b), (int)t)->valueint;
            }
        }
        char *npy = mc_test_fixture(cJSON_GetObjectItem(c, "logits")->valuestring);
        int64_t shape[3];
        int nd = 0;
        float *want = mc_test_read_npy(npy, shape, &nd, 3);
        free(npy);
        assert_non_null(want);
        const mc_backend backends[2] = { MC_BACKEND_REF, MC_BACKEND_CPU };
        for (int k = 0; k < 2; k++) {
            mc_model *m = NULL;
            mc_error err = { 0 };
            if (load(cJSON_GetObjectItem(c, "model")->valuestring, adapter, backends[k], &m, &err) != MC_OK) {
                print_error("%s: %s\n", adapter, err.msg);
                fail();
            }
            const int64_t V = mc_model_config(m)->vocab_size;
            assert_true(nd == 3 && shape[0] == B && shape[1] == T && shape[2] == V);
            float *got = malloc((size_t)(B * T * V) * sizeof(float));
            mc_state *s = NULL;
            assert_int_equal(mc_state_new(m, B, &s, &err), MC_OK);
            assert_int_equal(mc_model_forward(m, s, ids, B, T, true, got, &err), MC_OK);
            char label[256];
            snprintf(label, sizeof(label), "%s[%s]", adapter, mc_backend_name(backends[k]));
            assert_true(mc_check_close(got, want, B * T * V, LOGIT_TOL, label));
            printf("%s: max err / max|logit| %.2e\n", label, mc_rel_err(got, want, B * T * V));
            mc_state_free(s);
            free(got);
            mc_model_free(m);
        }
        free(want);
        free(ids);
        n++;
    }
    assert_true(n >= 5);
}

// An adapter for another model shape, and a folder without an adapter, fail with the reason.
static void test_bad_adapters(void **unused) {
    mc_model *m = NULL;
    mc_error err = { 0 };
    assert_int_equal(load("models/untied-bias", "expect/train/lora-f32-tied-adapter", MC_BACKEND_CPU, &m, &err),
                     MC_ERR_FORMAT);
    assert_null(m);
    assert_non_null(strstr(err.msg, "lora_"));
    assert_non_null(strstr(err.msg, "the model needs"));
    assert_int_equal(load("models/f32-tied", "models/f32-tied", MC_BACKEND_CPU, &m, &err), MC_ERR_IO);
    assert_non_null(strstr(err.msg, "adapter_config.json"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logits_match_peft),
        cmocka_unit_test(test_bad_adapters),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
