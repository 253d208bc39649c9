// The trainer's gradients against central finite differences of its own loss, for every tensor (the entries with
// the largest gradients, where the difference quotient stands clear of f32 noise), full training and LoRA, on the
// ref and cpu backends; and bad batches. The oracle fixtures (tools/oracle/train_fixtures.py) pin the exact values.
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
#include "mambac.h"

#define B_SEQ 2
#define T_TOK 7

static mc_model *load(const char *name, mc_backend backend) {
    char rel[128];
    snprintf(rel, sizeof(rel), "models/%s", name);
    mc_model *m = mc_test_load_model(rel, backend, NULL);
    assert_non_null(m);
    return m;
}

static double mean_loss(mc_trainer *t, const int32_t *ids, const int32_t *labels) {
    double sum = 0;
    int64_t n = 0;
    mc_error err = { 0 };
    assert_int_equal(mc_trainer_values_changed(t, &err), MC_OK);
    assert_int_equal(mc_trainer_grad(t, ids, labels, B_SEQ, T_TOK, 0.0, &sum, &n, &err), MC_OK);
    return sum / (double)n;
}

// For each tensor: the k entries with the largest |gradient| against (L(θ + ε) − L(θ − ε)) / 2ε.
static void check_fd(mc_trainer *t, const int32_t *ids, const int32_t *labels, const char *label) {
    mc_error err = { 0 };
    double sum = 0;
    int64_t n = 0;
    mc_trainer_zero_grad(t);
    assert_int_equal(mc_trainer_grad(t, ids, labels, B_SEQ, T_TOK, 1.0, &sum, &n, &err), MC_OK);
    assert_true(n > 0);
    const double inv_n = 1.0 / (double)n;
    bool ok = true;
    for (int64_t ti = 0; ti < mc_trainer_n_tensors(t); ti++) {
        mc_train_tensor tt;
        mc_trainer_tensor(t, ti, &tt);
        float *g = malloc((size_t)tt.numel * sizeof(float));
        memcpy(g, tt.grad, (size_t)tt.numel * sizeof(float)); // the gradient of Σ NLL; the FD is of the mean
        for (int k = 0; k < 3; k++) {
            int64_t best = 0;
            for (int64_t j = 1; j < tt.numel; j++) {
                best = fabsf(g[j]) > fabsf(g[best]) ? j : best;
            }
            const double want = g[best] * inv_n;
            g[best] = 0; // next pick differs
            const float v0 = tt.value[best];
            const float eps = 1e-3f * fmaxf(1.0f, fabsf(v0));
            tt.value[best] = v0 + eps;
            const double up = mean_loss(t, ids, labels);
            tt.value[best] = v0 - eps;
            const double down = mean_loss(t, ids, labels);
            tt.value[best] = v0;
            const double h = (double)(v0 + eps) - (double)v0;
            const double fd = (up - down) / (2.0 * h);
            // 3% of the gradient, plus the f32 noise of two losses (~1e-6 relative each) over the step.
            const double allowed = 3e-2 * fabs(want) + 2e-6 * fabs(up) / h;
            const double rel = fabs(fd - want) / fmax(fabs(want), 1e-12);
            if (fabs(fd - want) > allowed) {
                print_error("%s: %s[%lld]: gradient %.6g, finite difference %.6g (rel %.3g)\n", label, tt.name,
                            (long long)best, want, fd, rel);
                ok = false;
            }
        }
        free(g);
    }
    mean_loss(t, ids, labels); // values back as they were
    assert_true(ok);
}

static void run_case(const char *model, mc_backend backend, const mc_lora_spec *lora) {
    mc_model *m = load(model, backend);
    int32_t ids[B_SEQ * T_TOK], labels[B_SEQ * T_TOK];
    mc_test_train_batch(m, B_SEQ * T_TOK, 11, ids, labels);
    mc_trainer *t = NULL;
    mc_error err = { 0 };
    assert_int_equal(mc_trainer_new(m, lora, 5, &t, &err), MC_OK);
    if (lora != NULL) { // B = 0 at PEFT's init leaves A's gradient zero: give every tensor values first
        for (int64_t ti = 0; ti < mc_trainer_n_tensors(t); ti++) {
            mc_train_tensor tt;
            mc_trainer_tensor(t, ti, &tt);
            for (int64_t j = 0; j < tt.numel; j++) {
                tt.value[j] = 0.05f * sinf(0.7f * (float)j + (float)ti);
            }
        }
    }
    char label[128];
    snprintf(label, sizeof(label), "%s[%s]%s", model, mc_backend_name(backend), lora != NULL ? " lora" : "");
    check_fd(t, ids, labels, label);
    mc_trainer_free(t);
    mc_model_free(m);
}

static void test_full_fd(void **unused) {
    run_case("f32-tied", MC_BACKEND_REF, NULL);
    run_case("untied-bias", MC_BACKEND_REF, NULL);
    run_case("untied-bias", MC_BACKEND_CPU, NULL);
}

static void test_lora_fd(void **unused) {
    const mc_lora_spec spec = { .r = 3, .alpha = 6, .targets = MC_LORA_EMBEDDINGS | MC_LORA_IN_PROJ | MC_LORA_X_PROJ |
                                                                MC_LORA_OUT_PROJ };
    run_case("f32-tied", MC_BACKEND_CPU, &spec);
    mc_lora_spec rs = spec;
    rs.use_rslora = true;
    run_case("untied-bias", MC_BACKEND_REF, &rs);
    // Dropout: the masks repeat for the same stream, so the loss is a fixed function of the weights.
    mc_lora_spec dr = spec;
    dr.dropout = 0.3;
    dr.bias = MC_LORA_BIAS_ALL;
    run_case("untied-bias", MC_BACKEND_CPU, &dr);
}

// Dropout changes the adapted loss, the masks follow the stream, and p = 0 is no dropout.
static void test_lora_dropout(void **unused) {
    mc_model *m = load("f32-tied", MC_BACKEND_CPU);
    int32_t ids[B_SEQ * T_TOK], labels[B_SEQ * T_TOK];
    mc_test_train_batch(m, B_SEQ * T_TOK, 9, ids, labels);
    mc_lora_spec spec = { .r = 4, .alpha = 8, .targets = MC_LORA_IN_PROJ | MC_LORA_X_PROJ | MC_LORA_OUT_PROJ };
    double loss[4];
    for (int k = 0; k < 4; k++) {
        spec.dropout = k == 0 ? 0.0 : 0.5;
        mc_trainer *t = NULL;
        mc_error err = { 0 };
        assert_int_equal(mc_trainer_new(m, &spec, 3, &t, &err), MC_OK);
        for (int64_t ti = 0; ti < mc_trainer_n_tensors(t); ti++) { // non-zero adapters
            mc_train_tensor tt;
            mc_trainer_tensor(t, ti, &tt);
            for (int64_t j = 0; j < tt.numel; j++) {
                tt.value[j] = 0.2f * sinf(0.3f * (float)j + (float)ti);
            }
        }
        mc_trainer_set_dropout_stream(t, k == 3 ? 1 : 0);
        loss[k] = mean_loss(t, ids, labels);
        mc_trainer_free(t);
    }
    assert_true(loss[1] != loss[0]); // masks drop inputs
    assert_true(loss[2] == loss[1]); // the same stream: the same masks
    assert_true(loss[3] != loss[1]); // another stream: other masks
    mc_model_free(m);
}

// A fresh adapter leaves the model's loss as it was (B = 0, embedding A = 0), and the loss equals mean NLL of the
// forward pass's logits.
static void test_fresh_adapter_is_noop(void **unused) {
    mc_model *m = load("f32-tied", MC_BACKEND_CPU);
    int32_t ids[B_SEQ * T_TOK], labels[B_SEQ * T_TOK];
    mc_test_train_batch(m, B_SEQ * T_TOK, 3, ids, labels);
    const mc_lora_spec spec = { .r = 4, .alpha = 8, .targets = MC_LORA_EMBEDDINGS | MC_LORA_IN_PROJ | MC_LORA_X_PROJ |
                                                                MC_LORA_OUT_PROJ };
    mc_trainer *full = NULL, *lora = NULL;
    mc_error err = { 0 };
    assert_int_equal(mc_trainer_new(m, NULL, 1, &full, &err), MC_OK);
    assert_int_equal(mc_trainer_new(m, &spec, 1, &lora, &err), MC_OK);
    const double loss_full = mean_loss(full, ids, labels), loss_lora = mean_loss(lora, ids, labels);
    // The forward pass: mean of −log softmax at the kept targets.
    const int64_t V = mc_model_config(m)->vocab_size;
    float *logits = malloc((size_t)(B_SEQ * T_TOK * V) * sizeof(float));
    mc_state *s = NULL;
    assert_int_equal(mc_state_new(m, B_SEQ, &s, &err), MC_OK);
    assert_int_equal(mc_model_forward(m, s, ids, B_SEQ, T_TOK, true, logits, &err), MC_OK);
    double sum = 0;
    int n = 0;
    for (int b = 0; b < B_SEQ; b++) {
        for (int i = 0; i + 1 < T_TOK; i++) {
            const int32_t y = labels[b * T_TOK + i + 1];
            if (y == -100) {
                continue;
            }
            const float *row = logits + (b * T_TOK + i) * V;
            double mx = row[0], z = 0;
            for (int64_t v = 1; v < V; v++) {
                mx = row[v] > mx ? row[v] : mx;
            }
            for (int64_t v = 0; v < V; v++) {
                z += exp(row[v] - mx);
            }
            sum += log(z) + mx - row[y];
            n++;
        }
    }
    const double want = sum / n;
    assert_true(fabs(loss_full - want) < 1e-5 * fabs(want));
    assert_true(fabs(loss_lora - want) < 1e-5 * fabs(want));
    mc_state_free(s);
    free(logits);
    mc_trainer_free(full);
    mc_trainer_free(lora);
    mc_model_free(m);
}

// Truncated BPTT: two chunks with the state carried sum to the whole sequence's NLL over the same targets (the
// chunk boundary's target is the one a chunked run cannot score), on each backend; the carry resets on request.
static void test_carry(void **unused) {
    const mc_backend backends[2] = { MC_BACKEND_REF, MC_BACKEND_CPU };
    for (int k = 0; k < 2; k++) {
        mc_model *m = load("untied-bias", backends[k]);
        enum { B = 2, T1 = 5, T2 = 9, T = T1 + T2 };
        int32_t ids[B * T], labels[B * T], c1[B * T1], c2[B * T2], l1[B * T1], l2[B * T2];
        const int64_t V = mc_model_config(m)->vocab_size;
        for (int i = 0; i < B * T; i++) {
            ids[i] = (int32_t)((i * 7919 + 13) % V);
            labels[i] = i % T == T1 ? -100 : ids[i]; // the boundary target
        }
        for (int b = 0; b < B; b++) {
            memcpy(c1 + b * T1, ids + b * T, T1 * sizeof(int32_t));
            memcpy(c2 + b * T2, ids + b * T + T1, T2 * sizeof(int32_t));
            memcpy(l1 + b * T1, labels + b * T, T1 * sizeof(int32_t));
            memcpy(l2 + b * T2, labels + b * T + T1, T2 * sizeof(int32_t));
        }
        mc_trainer *t = NULL;
        mc_error err = { 0 };
        assert_int_equal(mc_trainer_new(m, NULL, 0, &t, &err), MC_OK);
        double whole = 0, p1 = 0, p2 = 0, again = 0;
        int64_t n = 0, n1 = 0, n2 = 0;
        assert_int_equal(mc_trainer_grad(t, ids, labels, B, T, 1.0, &whole, &n, &err), MC_OK);
        assert_int_equal(mc_trainer_set_carry(t, B, &err), MC_OK);
        assert_int_equal(mc_trainer_grad(t, c1, l1, B, T1, 1.0, &p1, &n1, &err), MC_OK);
        assert_int_equal(mc_trainer_grad(t, c2, l2, B, T2, 1.0, &p2, &n2, &err), MC_OK);
        assert_int_equal(n1 + n2, n);
        if (fabs(p1 + p2 - whole) > 1e-5 * whole) {
            print_error("%s: chunks %.9g + %.9g, whole %.9g\n", mc_backend_name(backends[k]), p1, p2, whole);
            fail();
        }
        // a new stream starts from zero: chunk 2 alone differs from chunk 2 after chunk 1
        assert_int_equal(mc_trainer_set_carry(t, B, &err), MC_OK);
        assert_int_equal(mc_trainer_grad(t, c2, l2, B, T2, 1.0, &again, &n2, &err), MC_OK);
        assert_true(fabs(again - p2) > 1e-3);
        assert_int_equal(mc_trainer_grad(t, c2, l2, 1, T2, 1.0, &again, &n2, &err), MC_ERR_INVALID);
        assert_non_null(strstr(err.msg, "carried state"));
        mc_trainer_free(t);
        mc_model_free(m);
    }
}

static void test_bad_input(void **unused) {
    mc_model *m = load("f32-tied", MC_BACKEND_REF);
    mc_trainer *t = NULL;
    mc_error err = { 0 };
    mc_lora_spec bad = { .r = 0, .alpha = 8, .targets = MC_LORA_IN_PROJ };
    assert_int_equal(mc_trainer_new(m, &bad, 1, &t, &err), MC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "rank"));
    bad.r = 4;
    bad.targets = 0;
    assert_int_equal(mc_trainer_new(m, &bad, 1, &t, &err), MC_ERR_INVALID);
    assert_int_equal(mc_trainer_new(m, NULL, 1, &t, &err), MC_OK);
    int32_t ids[4] = { 1, 2, 3, 400 }, labels[4] = { 1, 2, 3, 4 };
    double sum;
    int64_t n;
    assert_int_equal(mc_trainer_grad(t, ids, labels, 1, 4, 1.0, &sum, &n, &err), MC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "token id 400"));
    ids[3] = 4;
    labels[2] = -5;
    assert_int_equal(mc_trainer_grad(t, ids, labels, 1, 4, 1.0, &sum, &n, &err), MC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "label -5"));
    assert_int_equal(mc_trainer_grad(t, ids, labels, 0, 4, 1.0, &sum, &n, &err), MC_ERR_INVALID);
    labels[2] = 3;
    assert_int_equal(mc_trainer_grad(t, ids, NULL, 1, 4, 1.0, &sum, &n, &err), MC_ERR_INVALID); // crashed
    assert_int_equal(mc_trainer_grad(t, ids, labels, 1, 4, NAN, &sum, &n, &err), MC_ERR_INVALID); // poisoned grads
    assert_non_null(strstr(err.msg, "scale"));
    // A carried state too large to size: an overflow and a huge allocation before; refused, carrying stays as it was.
    assert_int_equal(mc_trainer_set_carry(t, 2, &err), MC_OK);
    assert_int_equal(mc_trainer_set_carry(t, INT64_MAX / 4, &err), MC_ERR_INVALID);
    assert_int_equal(mc_trainer_grad(t, ids, labels, 1, 4, 1.0, &sum, &n, &err), MC_ERR_INVALID); // still 2 rows
    assert_non_null(strstr(err.msg, "carried state has 2 rows"));
    mc_train_tensor x;
    mc_trainer_tensor(t, mc_trainer_n_tensors(t), &x); // read past the table before
    assert_null(x.name);
    mc_trainer_tensor(t, -1, &x);
    assert_null(x.value);
    assert_int_equal(mc_trainer_save(t, NULL, &err), MC_ERR_INVALID);
    assert_int_equal(mc_train(NULL, NULL, NULL, NULL, &err), MC_ERR_INVALID);
    assert_int_equal(mc_dist_init(NULL, NULL, &err), MC_ERR_INVALID);
    mc_trainer_set_precision(NULL, MC_PRECISION_BF16); // ignored
    mc_trainer_free(t);
    assert_int_equal(mc_trainer_new(NULL, NULL, 1, &t, &err), MC_ERR_INVALID);
    assert_null(t);
    mc_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fresh_adapter_is_noop),
        cmocka_unit_test(test_full_fd),
        cmocka_unit_test(test_lora_fd),
        cmocka_unit_test(test_lora_dropout),
        cmocka_unit_test(test_carry),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
