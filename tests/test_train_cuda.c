// Training on the cuda backend against the cpu backend (itself held to finite differences and to transformers +
// PEFT by test_train and test_train_oracle): the same trainer, weights and batch give the same loss and gradients
// — full training and LoRA (every target, rsLoRA, dropout, bias "all") on tied, untied-with-biases and bf16 models,
// carried state (truncated BPTT), and the bf16 math mode within its rounding. Skips (77) without a usable GPU.
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
#include "kernels/ops.h"
#include "mambac.h"
#include "train/optim.h"
#include "train/trainer.h"

// f32 on both sides: sums in another order (cuBLAS tiles, atomics, block reductions) and CUDA's expf/log1pf
// (≤ 2 ulp). Through 2–4 layers and the softmax that leaves ~1e-6 relative; the bound leaves room for larger
// models' deeper chains.
#define LOSS_TOL 1e-5
#define GRAD_TOL 1e-4 // of each tensor's largest |gradient|
// LoRA gradients on these random fixtures are more sensitive: PEFT's own f32 run differs from its f64 one by 1.1e-4
// of scale (test_train_oracle holds the cpu to PEFT at 3e-4 for the same reason); measured cuda vs cpu: 1.4e-4.
#define GRAD_TOL_LORA 3e-4
// MC_MATH_BF16 rounds each product's operands to 8 mantissa bits (2^-9 relative each): the loss moves by about that
// relative amount; gradients by a few times it.
#define BF16_LOSS_TOL 2e-2

enum { B_SEQ = 3, T_TOK = 37 };

static mc_model *load(const char *name, mc_backend backend) {
    char rel[128];
    snprintf(rel, sizeof(rel), "models/%s", name);
    bool no_device = false;
    mc_model *m = mc_test_load_model(rel, backend, &no_device);
    if (no_device) {
        mc_test_skip("no usable CUDA device");
    }
    assert_non_null(m);
    return m;
}

// Every trainable value set to a fixed pattern (non-zero adapters, so every LoRA gradient is non-trivial), through
// the host mirror so it works on either backend.
static void set_values(mc_trainer *t, float amp) {
    float *values = NULL, *grads = NULL;
    mc_error err = { 0 };
    assert_int_equal(mc_trainer_host_blocks(t, &values, &grads, &err), MC_OK);
    for (int64_t i = 0; i < t->n_params; i++) {
        values[i] = amp * sinf(0.37f * (float)(i % 100003) + 0.1f);
    }
    assert_int_equal(mc_trainer_host_values_changed(t, &err), MC_OK);
}

typedef struct result {
    double loss;
    float *grads; // host copy [n_params]
    int64_t n;
} result;

static result grad_of(mc_trainer *t, const int32_t *ids, const int32_t *labels, int64_t calls) {
    mc_error err = { 0 };
    mc_trainer_zero_grad(t);
    double sum = 0;
    int64_t n = 0;
    for (int64_t c = 0; c < calls; c++) { // calls > 1: the carried state runs on from call to call
        double part = 0;
        int64_t k = 0;
        if (mc_trainer_grad(t, ids, labels, B_SEQ, T_TOK, 0.01, &part, &k, &err) != MC_OK) {
            print_error("grad: %s\n", err.msg);
            fail();
        }
        sum += part;
        n += k;
    }
    float *values = NULL, *grads = NULL;
    assert_int_equal(mc_trainer_host_blocks(t, &values, &grads, &err), MC_OK);
    result r = { .loss = sum / (double)n, .n = t->n_params };
    r.grads = malloc((size_t)t->n_params * sizeof(float));
    assert_non_null(r.grads);
    memcpy(r.grads, grads, (size_t)t->n_params * sizeof(float));
    return r;
}

// Per tensor: max |cuda − cpu| against the tensor's largest |cpu| gradient.
static void compare(const mc_trainer *t, const result *cpu, const result *gpu, double grad_tol, const char *label) {
    bool ok = fabs(gpu->loss - cpu->loss) <= LOSS_TOL * fabs(cpu->loss);
    if (!ok) {
        print_error("%s: loss cuda %.9g, cpu %.9g\n", label, gpu->loss, cpu->loss);
    }
    double worst = 0;
    for (int64_t i = 0; i < mc_trainer_n_tensors(t); i++) {
        mc_train_tensor tt;
        mc_trainer_tensor(t, i, &tt);
        const int64_t off = tt.value - t->params;
        double scale = 0, diff = 0;
        for (int64_t j = 0; j < tt.numel; j++) {
            scale = fmax(scale, fabs(cpu->grads[off + j]));
            diff = fmax(diff, fabs((double)gpu->grads[off + j] - cpu->grads[off + j]));
        }
        if (!(diff <= grad_tol * scale) && scale > 0) {
            print_error("%s: %s gradient differs by %.3g of its largest %.3g\n", label, tt.name, diff / scale, scale);
            ok = false;
        }
        if (scale == 0 && diff != 0) {
            print_error("%s: %s gradient is zero on cpu, %.3g on cuda\n", label, tt.name, diff);
            ok = false;
        }
        worst = scale > 0 ? fmax(worst, diff / scale) : worst;
    }
    printf("%s: loss %.9g (cpu %.9g), worst gradient diff %.2e of scale\n", label, gpu->loss, cpu->loss, worst);
    assert_true(ok);
}

static void run_case(const char *model, const mc_lora_spec *lora, int64_t carry_calls) {
    mc_model *gm = load(model, MC_BACKEND_CUDA), *cm = load(model, MC_BACKEND_CPU);
    int32_t ids[B_SEQ * T_TOK], labels[B_SEQ * T_TOK];
    mc_test_train_batch(cm, B_SEQ * T_TOK, 17, ids, labels);
    mc_trainer *ct = NULL, *gt = NULL;
    mc_error err = { 0 };
    assert_int_equal(mc_trainer_new(cm, lora, 5, &ct, &err), MC_OK);
    assert_int_equal(mc_trainer_new(gm, lora, 5, &gt, &err), MC_OK);
    assert_int_equal(ct->n_params, gt->n_params);
    if (lora != NULL) {
        set_values(ct, 0.05f);
        set_values(gt, 0.05f);
    }
    if (carry_calls > 1) {
        assert_int_equal(mc_trainer_set_carry(ct, B_SEQ, &err), MC_OK);
        assert_int_equal(mc_trainer_set_carry(gt, B_SEQ, &err), MC_OK);
    }
    result c = grad_of(ct, ids, labels, carry_calls), g = grad_of(gt, ids, labels, carry_calls);
    char label[160];
    snprintf(label, sizeof(label), "%s%s%s%s", model, lora != NULL ? " lora" : " full",
             lora != NULL && lora->dropout > 0 ? " dropout" : "", carry_calls > 1 ? " carried" : "");
    compare(ct, &c, &g, lora != NULL ? GRAD_TOL_LORA : GRAD_TOL, label);
    // bf16 products: the same loss within their rounding, and a finite gradient
    if (carry_calls == 1) {
        gt->exec.math = MC_MATH_BF16;
        result b = grad_of(gt, ids, labels, 1);
        printf("%s: bf16 loss %.7g (f32 %.7g)\n", label, b.loss, c.loss);
        assert_true(fabs(b.loss - c.loss) <= BF16_LOSS_TOL * fabs(c.loss));
        for (int64_t i = 0; i < b.n; i++) {
            assert_true(isfinite(b.grads[i]));
        }
        free(b.grads);
    }
    free(c.grads);
    free(g.grads);
    mc_trainer_free(ct);
    mc_trainer_free(gt);
    mc_model_free(cm);
    mc_model_free(gm);
}

static void test_full(void **unused) {
    run_case("f32-tied", NULL, 1);
    run_case("untied-bias", NULL, 1);
    run_case("f16-inter", NULL, 1);
}

static void test_lora(void **unused) {
    const mc_lora_spec all = { .r = 3, .alpha = 6, .targets = MC_LORA_EMBEDDINGS | MC_LORA_IN_PROJ | MC_LORA_X_PROJ |
                                                               MC_LORA_OUT_PROJ };
    run_case("f32-tied", &all, 1);
    mc_lora_spec rs = all;
    rs.use_rslora = true;
    rs.bias = MC_LORA_BIAS_ALL;
    rs.dropout = 0.2;
    run_case("untied-bias", &rs, 1);
    run_case("sharded-bf16", &all, 1); // a frozen bf16 base: the 16-bit weight paths of matmul_dx
}

static void test_carry(void **unused) {
    run_case("untied-bias", NULL, 3);
}

// Optimizer steps on the device (clipping and AdamW there) against the host's, from the same gradients.
static void test_optimizer(void **unused) {
    mc_model *gm = load("untied-bias", MC_BACKEND_CUDA), *cm = load("untied-bias", MC_BACKEND_CPU);
    mc_trainer *ct = NULL, *gt = NULL;
    mc_error err = { 0 };
    assert_int_equal(mc_trainer_new(cm, NULL, 5, &ct, &err), MC_OK);
    assert_int_equal(mc_trainer_new(gm, NULL, 5, &gt, &err), MC_OK);
    const int64_t n = ct->n_params;
    mc_optim_group group = { .offset = 0, .numel = n, .decay = true };
    mc_adamw_opts o;
    mc_adamw_opts_init(&o);
    o.weight_decay = 0.1;
    mc_adamw *copt = NULL, *gopt = NULL;
    assert_int_equal(mc_adamw_new(n, &group, 1, &o, &copt, &err), MC_OK);
    assert_int_equal(mc_adamw_new(n, &group, 1, &o, &gopt, &err), MC_OK);
    assert_int_equal(mc_adamw_bind(gopt, gt->ops, &gt->exec, &err), MC_OK);
    float *values = NULL, *grads = NULL;
    for (int step = 0; step < 3; step++) {
        // the same gradient on both: a pattern large enough that clipping applies
        assert_int_equal(mc_trainer_host_blocks(ct, &values, &grads, &err), MC_OK);
        for (int64_t i = 0; i < n; i++) {
            grads[i] = 0.3f * cosf(0.11f * (float)(i % 9973) + (float)step);
        }
        double cn = 0, gn = 0;
        assert_int_equal(gt->ops->upload(&gt->exec, gt->grads, grads, (size_t)n * sizeof(float)), MC_OK);
        assert_int_equal(mc_grads_clip_norm(grads, &group, 1, 1.0, &cn, &err), MC_OK);
        assert_int_equal(mc_grads_clip_norm_on(gt->ops, &gt->exec, gt->grads, &group, 1, 1.0, &gn, &err), MC_OK);
        assert_true(fabs(cn - gn) <= 1e-6 * cn);
        assert_int_equal(mc_adamw_step(copt, values, grads, 1e-3, &err), MC_OK);
        assert_int_equal(mc_adamw_step(gopt, gt->params, gt->grads, 1e-3, &err), MC_OK);
        gt->host_params_stale = true;
    }
    float *gv = NULL, *gg = NULL;
    assert_int_equal(mc_trainer_host_blocks(gt, &gv, &gg, &err), MC_OK);
    double worst = 0;
    for (int64_t i = 0; i < n; i++) { // the same f32 operations in the same order: ulps at most
        worst = fmax(worst, fabs((double)gv[i] - values[i]) / fmax(fabs(values[i]), 1e-30));
    }
    printf("optimizer: 3 device steps, worst relative difference %.2e\n", worst);
    assert_true(worst <= 1e-5);
    mc_adamw_free(copt);
    mc_adamw_free(gopt);
    mc_trainer_free(ct);
    mc_trainer_free(gt);
    mc_model_free(cm);
    mc_model_free(gm);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_lora),
        cmocka_unit_test(test_carry),
        cmocka_unit_test(test_optimizer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
