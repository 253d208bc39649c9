// The training loop against torch + transformers (tools/oracle/train_fixtures.py, adam_* cases): three optimizer
// steps of mc_train on the case's batch (a pre-tokenized JSON Lines file with its labels, batch 2, no shuffle,
// linear schedule with 1 warmup step, clipping at 1.0, AdamW with the Trainer's decay groups) give the recorded
// loss of every step and the recorded final weights, on the cpu backend and, where a GPU is usable, on cuda (its
// clipping and AdamW run on the device). Also: --resume continues bit for bit, and bad runs fail with their message.
#include <cjson/cJSON.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "check.h"
#include "io/safetensors.h"
#include "mambac.h"

// Losses: f32 against the f64 reference (the oracle's own f32 rerun: up to 3.5e-5 absolute on a loss of 13.7).
#define LOSS_TOL 1e-5
// Final weights after three steps at lr 1e-2: the oracle's f32 rerun differs by up to 1.5e-4 absolute.
#define WEIGHT_TOL 5e-4

static cJSON *g_index;

static int setup(void **state) {
    char *path = mc_test_fixture("expect/train/index.json");
    char *text = path != NULL ? mc_test_read_text(path) : NULL;
    free(path);
    if (text == NULL) {
        mc_test_skip("no expect/train/index.json (run tools/oracle/train_fixtures.py)");
    }
    g_index = cJSON_Parse(text);
    free(text);
    return mc_test_dir_setup(state);
}

static int teardown(void **state) {
    cJSON_Delete(g_index);
    return mc_test_dir_teardown(state);
}

// NULL when the backend cannot run here (cuda without a GPU).
static mc_model *load_model(const char *rel, mc_backend backend) {
    bool no_device = false;
    mc_model *m = mc_test_load_model(rel, backend, &no_device);
    if (!no_device) {
        assert_non_null(m);
    }
    return m;
}

// Writes the case's rows as {"input_ids": [...], "labels": [...]} lines.
static void write_jsonl(const char *path, const cJSON *c) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    const cJSON *ids = cJSON_GetObjectItem(c, "input_ids"), *labels = cJSON_GetObjectItem(c, "labels");
    for (int b = 0; b < cJSON_GetArraySize(ids); b++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToObject(o, "input_ids", cJSON_Duplicate(cJSON_GetArrayItem(ids, b), true));
        cJSON_AddItemToObject(o, "labels", cJSON_Duplicate(cJSON_GetArrayItem(labels, b), true));
        char *line = cJSON_PrintUnformatted(o);
        fprintf(f, "%s\n", line);
        free(line);
        cJSON_Delete(o);
    }
    fclose(f);
}

// The loss of every logged step of dir/log.jsonl into losses (at most cap).
static int read_losses(const char *dir, double *losses, int cap) {
    char path[1024];
    snprintf(path, sizeof(path), "%s/log.jsonl", dir);
    char *text = mc_test_read_text(path);
    assert_non_null(text);
    int n = 0;
    for (char *line = strtok(text, "\n"); line != NULL && n < cap; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        losses[n++] = cJSON_GetObjectItem(j, "loss")->valuedouble;
        cJSON_Delete(j);
    }
    free(text);
    return n;
}

// The case's run (its batch, optimizer, schedule and clipping) into out: checkpoints every save_steps (0: none),
// continuing from resume when not NULL.
static mc_status train_case(const cJSON *c, const mc_model *m, const char *data, const char *out, int64_t save_steps,
                            const char *resume, mc_error *err) {
    const bool lora = strcmp(cJSON_GetObjectItem(c, "kind")->valuestring, "adam_lora") == 0;
    const cJSON *opt = cJSON_GetObjectItem(c, "optimizer"), *sched = cJSON_GetObjectItem(c, "schedule");
    mc_train_opts o;
    mc_train_opts_init(&o);
    o.data = data;
    o.output_dir = out;
    o.batch_size = 2;
    o.shuffle = false;
    o.max_steps = (int64_t)cJSON_GetObjectItem(c, "steps")->valuedouble;
    o.lr = cJSON_GetObjectItem(opt, "lr")->valuedouble;
    o.weight_decay = cJSON_GetObjectItem(opt, "weight_decay")->valuedouble;
    o.max_grad_norm = cJSON_GetObjectItem(c, "max_grad_norm")->valuedouble;
    o.warmup = cJSON_GetObjectItem(sched, "warmup_steps")->valuedouble;
    o.lr_scheduler = cJSON_GetObjectItem(sched, "type")->valuestring;
    o.logging_steps = 1;
    o.save_steps = save_steps;
    o.resume = resume;
    char *adapter = lora ? mc_test_fixture(cJSON_GetObjectItem(c, "initial")->valuestring) : NULL;
    o.init_adapter = adapter;
    mc_train_stats s;
    const mc_status st = mc_train(m, NULL, &o, &s, err);
    free(adapter);
    return st;
}

static void run_adam_case(const cJSON *c, const char *tmp, mc_backend backend) {
    char name[160];
    snprintf(name, sizeof(name), "%s-%s", cJSON_GetObjectItem(c, "name")->valuestring,
             backend == MC_BACKEND_CUDA ? "cuda" : "cpu");
    const bool lora = strcmp(cJSON_GetObjectItem(c, "kind")->valuestring, "adam_lora") == 0;
    char data[512], out[512];
    snprintf(data, sizeof(data), "%s/%s.jsonl", tmp, name);
    snprintf(out, sizeof(out), "%s/%s", tmp, name);
    write_jsonl(data, c);
    mc_model *m = load_model(cJSON_GetObjectItem(c, "model")->valuestring, backend);
    if (m == NULL) {
        printf("%s: skipped, no usable CUDA device\n", name);
        return;
    }
    mc_error err = { 0 };
    if (train_case(c, m, data, out, 0, NULL, &err) != MC_OK) {
        print_error("%s: %s\n", name, err.msg);
        fail();
    }
    // Every step's loss.
    double losses[16];
    const cJSON *want = cJSON_GetObjectItem(c, "loss_per_step");
    const int n = read_losses(out, losses, 16);
    assert_int_equal(n, cJSON_GetArraySize(want));
    for (int i = 0; i < n; i++) {
        const double w = cJSON_GetArrayItem(want, i)->valuedouble;
        if (fabs(losses[i] - w) > LOSS_TOL * fabs(w)) {
            print_error("%s: step %d loss %.9g, torch %.9g\n", name, i + 1, losses[i], w);
            fail();
        }
    }
    // The final trainable tensors, from the saved result.
    char saved[600];
    snprintf(saved, sizeof(saved), "%s/%s", out, lora ? "adapter_model.safetensors" : "model.safetensors");
    char *ref_path = mc_test_fixture(cJSON_GetObjectItem(c, "file")->valuestring);
    mc_st_set *got = NULL, *ref = NULL;
    assert_int_equal(mc_st_open(saved, &got, &err), MC_OK);
    assert_int_equal(mc_st_open(ref_path, &ref, &err), MC_OK);
    const cJSON *t;
    double worst = 0;
    bool ok = true;
    cJSON_ArrayForEach(t, cJSON_GetObjectItem(c, "final")) {
        const char *tn = cJSON_GetObjectItem(t, "name")->valuestring;
        const mc_st_tensor *a = mc_st_find(got, tn), *b = mc_st_find(ref, tn);
        if (a == NULL || b == NULL || a->numel != b->numel || a->dtype != MC_DTYPE_F32) {
            print_error("%s: %s missing or mis-shaped in %s\n", name, tn, saved);
            ok = false;
            continue;
        }
        for (int64_t j = 0; j < a->numel; j++) {
            float x, y;
            memcpy(&x, (const char *)a->data + 4 * j, 4);
            memcpy(&y, (const char *)b->data + 4 * j, 4);
            const double d = fabs((double)x - (double)y);
            worst = d > worst ? d : worst;
            if (!(d <= WEIGHT_TOL)) {
                print_error("%s: %s[%lld] = %.7g, torch %.7g\n", name, tn, (long long)j, (double)x, (double)y);
                ok = false;
                break;
            }
        }
    }
    printf("%s: %d step losses within %.0e, final weights max |diff| %.2e\n", name, n, LOSS_TOL, worst);
    assert_true(ok);
    mc_st_close(got);
    mc_st_close(ref);
    free(ref_path);
    mc_model_free(m);
}

// Three steps in one run against two steps, a checkpoint, and the third step resumed from it: the same result, bit
// for bit on the cpu. On cuda some gradient sums (dA, D, the conv and embedding gradients) end in atomic adds whose
// order varies from run to run, so the runs agree to rounding — except that AdamW's first steps move an element by
// about lr whatever its gradient's size, so an element whose gradient is a cancellation near 0 may step the other
// way: up to 2·lr·steps on a few elements. Held: at most that, and at most 1 element in 1000 beyond 1e-6 (not yet
// measured on a GPU).
#define RESUME_TOL_CUDA 1e-6
static void resume_case(const cJSON *c, const char *tmp, mc_backend backend) {
    char name[160], data[512], whole[512], part[512], ck[600];
    snprintf(name, sizeof(name), "resume-%s-%s", cJSON_GetObjectItem(c, "name")->valuestring,
             backend == MC_BACKEND_CUDA ? "cuda" : "cpu");
    snprintf(data, sizeof(data), "%s/%s.jsonl", tmp, name);
    snprintf(whole, sizeof(whole), "%s/%s-whole", tmp, name);
    snprintf(part, sizeof(part), "%s/%s-part", tmp, name);
    snprintf(ck, sizeof(ck), "%s/checkpoint-2", whole);
    write_jsonl(data, c);
    mc_model *m = load_model(cJSON_GetObjectItem(c, "model")->valuestring, backend);
    if (m == NULL) {
        printf("%s: skipped, no usable CUDA device\n", name);
        return;
    }
    mc_error err = { 0 };
    if (train_case(c, m, data, whole, 1, NULL, &err) != MC_OK || train_case(c, m, data, part, 0, ck, &err) != MC_OK) {
        print_error("%s: %s\n", name, err.msg);
        fail();
    }
    const bool lora = strcmp(cJSON_GetObjectItem(c, "kind")->valuestring, "adam_lora") == 0;
    const char *file = lora ? "adapter_model.safetensors" : "model.safetensors";
    char pa[700], pb[700];
    snprintf(pa, sizeof(pa), "%s/%s", whole, file);
    snprintf(pb, sizeof(pb), "%s/%s", part, file);
    mc_st_set *a = NULL, *b = NULL;
    assert_int_equal(mc_st_open(pa, &a, &err), MC_OK);
    assert_int_equal(mc_st_open(pb, &b, &err), MC_OK);
    double worst = 0;
    int64_t n = 0, beyond = 0;
    for (int64_t i = 0; i < mc_st_count(a); i++) {
        const mc_st_tensor *x = mc_st_at(a, i), *y = mc_st_find(b, x->name);
        assert_non_null(y);
        assert_int_equal(x->numel, y->numel);
        for (int64_t j = 0; x->dtype == MC_DTYPE_F32 && j < x->numel; j++) {
            float u, v;
            memcpy(&u, (const char *)x->data + 4 * j, 4);
            memcpy(&v, (const char *)y->data + 4 * j, 4);
            worst = fmax(worst, fabs((double)u - (double)v));
            beyond += fabs((double)u - (double)v) > RESUME_TOL_CUDA;
            n++;
        }
    }
    printf("%s: resumed run's weights within %.2e of the whole run's (%lld of %lld beyond %.0e)\n", name, worst,
           (long long)beyond, (long long)n, RESUME_TOL_CUDA);
    if (backend == MC_BACKEND_CUDA) {
        const double lr = cJSON_GetObjectItem(cJSON_GetObjectItem(c, "optimizer"), "lr")->valuedouble;
        assert_true(worst <= 2 * lr * 3 && beyond * 1000 <= n);
    } else {
        assert_true(worst == 0);
    }
    mc_st_close(a);
    mc_st_close(b);
    mc_model_free(m);
}

static void test_adam_steps(void **state) {
    const mc_test_dir *d = *state;
    const cJSON *c;
    int n = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(g_index, "cases")) {
        const char *kind = cJSON_GetObjectItem(c, "kind")->valuestring;
        if (strcmp(kind, "adam_lora") == 0 || strcmp(kind, "adam_full") == 0) {
            run_adam_case(c, d->dir, MC_BACKEND_CPU);
            run_adam_case(c, d->dir, MC_BACKEND_CUDA);
            n++;
        }
    }
    assert_true(n >= 4);
}

static void test_resume(void **state) {
    const mc_test_dir *d = *state;
    const cJSON *c;
    bool done[2] = { false, false }; // the first LoRA and the first full case
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(g_index, "cases")) {
        const char *kind = cJSON_GetObjectItem(c, "kind")->valuestring;
        const int k = strcmp(kind, "adam_lora") == 0 ? 0 : strcmp(kind, "adam_full") == 0 ? 1 : -1;
        if (k >= 0 && !done[k]) {
            resume_case(c, d->dir, MC_BACKEND_CPU);
            resume_case(c, d->dir, MC_BACKEND_CUDA);
            done[k] = true;
        }
    }
    assert_true(done[0] && done[1]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adam_steps),
        cmocka_unit_test(test_resume),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
