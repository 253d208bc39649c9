// Parity of the cuda backend's training ops (src/kernels/cuda/backward.cu) with their reference twins, through the
// op table as the trainer calls them: matmul_dx for every weight dtype, matmul_dw with and without the bias sum,
// the math modes, embed_bwd, rmsnorm_bwd, cross_entropy and the optimizer's elementwise ops, on sizes that break
// blocks and tiles, strided rows with their padding checked untouched. Skips (77) when no CUDA device is usable.
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

#include "check.h"
#include "dev_check.h"
#include "kernels/dtype.h"
#include "kernels/ops.h"
#include "kernels/ref/backward.h"
#include "kernels/ref/ref.h"
#include "mambac.h"

// f32 products vs the reference's double sums (style §2.7: ref vs cuda f32, no TF32): f32 accumulation order only.
#define TOL_F32 1e-4
// 16-bit weights: dy split into 2 (f16) or 3 (bf16) terms of the weight's type holds 22–24 bits of each element, so
// the f32 bound holds (as the forward's, tests/test_cuda_kernels.c).
#define TOL_16BIT 1e-4
// MC_MATH_F32's three-TF32-term products (matmul.cu) leave out lo_a·lo_b and lo's rounding (under 2^-21 of a
// term) and sum on the tensor cores, whose f32 accumulation is not rounded as SGEMM's: the worst seen on an H100
// was 9.7e-6 of the largest output (SGEMM 1.1e-6, TF32 2.7e-4), so 5e-5 leaves room and stays below TOL_F32.
#define TOL_F32X3 5e-5
// TF32 rounds both operands to 11 significant bits (2^-11 each, 2^-10 if truncated): on uniform operands the
// product's error is ~2^-10.5 of a term, and the worst of ~30,000 outputs about 4e-4 (8e-4 truncated) of the largest.
#define TOL_TF32 2e-3
// bf16 rounds both operands to 8 bits (2^-8 each): the same estimate gives ~3e-3 of the largest (6e-3 truncated).
#define TOL_BF16 1e-2
// Sums the reference takes in double, taken in double in another order, then rounded once to f32 as the reference
// rounds: at most an ulp of each element apart.
#define TOL_SUM 1e-6
// embed_bwd: rows sharing an id meet in f32 atomics in any order (a few roundings of the element's sum).
#define TOL_SCATTER 1e-5
// cross_entropy's gradient: expf (≤ 2 ulp) of x − max rounded in f32, times 1 / Σ in double: a few f32 ulp of each
// probability, far below 1e-5 of the row's largest |softmax − onehot|.
#define TOL_CE 1e-5
// Per kept row, the log of Σ exp differs from the reference's double exp by the relative error of the sum: expf's
// 2 ulp plus the rounding of x − max (|x − max| · 2^-24, whose softmax-weighted mean is at most log V ≈ 11), so
// under 1e-6; 2e-6 per row absolute on loss_sum.
#define TOL_LOSS_ROW 2e-6
// axpby and mul_acc round each operation as the host does (no FMA), so the default build matches exactly; a
// -march=native host may contract a·y + b·x into an FMA, one rounding apart: 4 ulp of the largest value covers it.
#define TOL_ELEM 2.4e-7
// neg_exp: CUDA's expf is within 2 ulp, glibc's within 1.
#define TOL_EXP 5e-7
// sumsq: both sides add positive doubles (random-walk error ~ sqrt(n) · 2^-53 ≈ 1e-12 at n = 4e7); an f32 sum would
// be off by ~1e-4.
#define TOL_SUMSQ 1e-10
// adamw: every operation is IEEE-rounded on both sides (fmaf, sqrtf, division, no contraction): bit-equal.
#define ADAMW_MAX_ULP 0

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))


enum { C_F32, C_F32X3, C_16BIT, C_TF32, C_BF16, C_SUM, C_SCATTER, C_CE, C_ELEM, C_COUNT };

static double g_worst[C_COUNT]; // worst relative error seen per class, printed at the end for the record

static float *alloc_f32(int64_t n) {
    float *p = calloc((size_t)(n > 0 ? n : 1), sizeof(float));
    assert_non_null(p);
    return p;
}

static float *copy_f32(const float *src, int64_t n) {
    float *p = alloc_f32(n);
    memcpy(p, src, (size_t)n * sizeof(float));
    return p;
}

static void check(const float *got, const float *want, int64_t n, double tol, int cls, const char *label) {
    double e = mc_rel_err(got, want, n);
    g_worst[cls] = e > g_worst[cls] ? e : g_worst[cls];
    assert_true(mc_check_close(got, want, n, tol, label));
}

// Rows [M, K] of got and want, ld floats apart, compared packed; the padding columns [K, ld) of got must still hold
// orig's values bit for bit (nothing writes past a row).
static void check_rows(const float *got, const float *want, const float *orig, int64_t M, int64_t K, int64_t ld,
                       double tol, int cls, const char *label) {
    float *g = alloc_f32(M * K), *w = alloc_f32(M * K);
    for (int64_t m = 0; m < M; m++) {
        memcpy(g + m * K, got + m * ld, (size_t)K * sizeof(float));
        memcpy(w + m * K, want + m * ld, (size_t)K * sizeof(float));
        for (int64_t k = K; k < ld; k++) {
            if (memcmp(&got[m * ld + k], &orig[m * ld + k], sizeof(float)) != 0) {
                print_error("%s: padding [%lld, %lld] changed\n", label, (long long)m, (long long)k);
                fail();
            }
        }
    }
    check(g, w, M * K, tol, cls, label);
    free(g);
    free(w);
}

// ---- matmul_dx / matmul_dw --------------------------------------------------------------------------------------

typedef struct host_weight {
    mc_weight w;   // host view
    mc_weight dev; // the same on the device
    void *data;
    float *scales;
} host_weight;

// A random weight [N, K] in dtype (int8: q in [−127, 127], group scales), on the host and the device.
static host_weight weight_new(mc_test_rng *r, int dtype, int64_t N, int64_t K, int64_t group) {
    host_weight h = { .w = { .dtype = dtype, .rows = N, .cols = K } };
    h.data = malloc((size_t)(N * K * mc_dtype_size(dtype) + 16));
    assert_non_null(h.data);
    for (int64_t i = 0; i < N * K; i++) {
        const float v = mc_test_rng_uniform(r, -1.0f, 1.0f);
        if (dtype == MC_DTYPE_F16) {
            ((uint16_t *)h.data)[i] = mc_f32_to_f16(v);
        } else if (dtype == MC_DTYPE_BF16) {
            ((uint16_t *)h.data)[i] = mc_f32_to_bf16(v);
        } else if (dtype == MC_DTYPE_I8) {
            ((int8_t *)h.data)[i] = (int8_t)((int)(mc_test_rng_u32(r) % 255) - 127);
        } else {
            ((float *)h.data)[i] = v;
        }
    }
    const int64_t ng = dtype == MC_DTYPE_I8 ? (K + group - 1) / group : 0;
    if (dtype == MC_DTYPE_I8) {
        h.scales = alloc_f32(N * ng);
        mc_test_fill(r, h.scales, N * ng, 0.001f, 0.02f);
        h.w.scales = h.scales;
        h.w.group = group;
    }
    h.w.data = h.data;
    h.dev = h.w;
    h.dev.data = dev_from(h.data, N * K * mc_dtype_size(dtype));
    h.dev.scales = h.scales != NULL ? dev_from(h.scales, N * ng * 4) : NULL;
    return h;
}

static void weight_free(host_weight *h) {
    dev_free((void *)h->dev.data);
    dev_free((void *)h->dev.scales);
    free(h->data);
    free(h->scales);
}

typedef struct dx_shape {
    int64_t M, N, K, pad, group;
} dx_shape;

// dx (rows K + pad apart, padding random) = or += dy · W under `math`, against the reference.
static void dx_case(int dtype, dx_shape s, bool acc, int math, double tol, int cls, uint64_t seed) {
    mc_test_rng r = { seed };
    const int64_t ldx = s.K + s.pad;
    host_weight hw = weight_new(&r, dtype, s.N, s.K, s.group);
    float *dy = alloc_f32(s.M * s.N), *dx0 = alloc_f32(s.M * ldx), *got = alloc_f32(s.M * ldx);
    mc_test_fill(&r, dy, s.M * s.N, -1.0f, 1.0f);
    mc_test_fill(&r, dx0, s.M * ldx, -1.0f, 1.0f);
    for (int64_t i = 0; s.M == 130 && i < s.M * s.N; i += 3) { // past f16's range (65504): the row scaling must hold
        dy[i] *= 3e5f;
    }
    float *want = copy_f32(dx0, s.M * ldx);
    assert_int_equal(mc_ref_matmul_dx(&g_ex, want, ldx, dy, &hw.w, s.M, s.N, s.K, acc), MC_OK);
    float *ddy = dev_from(dy, s.M * s.N * 4), *ddx = dev_from(dx0, s.M * ldx * 4);
    g_ex.math = math;
    const mc_status st = g_ops->matmul_dx(&g_ex, ddx, ldx, ddy, &hw.dev, s.M, s.N, s.K, acc);
    g_ex.math = MC_MATH_F32;
    expect_ok(st, "matmul_dx");
    dev_to(got, ddx, s.M * ldx * 4);
    char label[160];
    snprintf(label, sizeof(label), "matmul_dx %s math=%d M=%lld N=%lld K=%lld ldx=%lld group=%lld acc=%d",
             mc_dtype_name((mc_dtype)dtype), math, (long long)s.M, (long long)s.N, (long long)s.K, (long long)ldx,
             (long long)s.group, acc);
    check_rows(got, want, dx0, s.M, s.K, ldx, tol, cls, label);
    dev_free(ddy);
    dev_free(ddx);
    weight_free(&hw);
    free(dy);
    free(dx0);
    free(got);
    free(want);
}

static void test_matmul_dx(void **unused) {
    const int dtypes[] = { MC_DTYPE_F32, MC_DTYPE_F16, MC_DTYPE_BF16, MC_DTYPE_I8 };
    const int64_t Ms[] = { 1, 3, 7, 9, 130 };
    const int64_t NKs[][2] = { { 1, 1 }, { 17, 65 }, { 65, 33 }, { 257, 100 } };
    uint64_t seed = 1;
    for (size_t d = 0; d < ARRAY_LEN(dtypes); d++) {
        const int cls = dtypes[d] == MC_DTYPE_F16 || dtypes[d] == MC_DTYPE_BF16 ? C_16BIT : C_F32;
        for (size_t mi = 0; mi < ARRAY_LEN(Ms); mi++) {
            for (size_t i = 0; i < ARRAY_LEN(NKs); i++) {
                // packed and padded rows (5: misaligned); groups that divide K and that do not; both write modes
                const dx_shape packed = { Ms[mi], NKs[i][0], NKs[i][1], 0, 32 };
                const dx_shape padded = { Ms[mi], NKs[i][0], NKs[i][1], 5, 7 };
                dx_case(dtypes[d], packed, false, MC_MATH_F32, TOL_F32, cls, seed++);
                dx_case(dtypes[d], padded, true, MC_MATH_F32, TOL_F32, cls, seed++);
            }
        }
        dx_case(dtypes[d], (dx_shape){ 1000, 300, 200, 3, 64 }, true, MC_MATH_F32, TOL_F32, cls, seed++);
        // the lm head's N: bf16's 3 terms of dy in two row chunks at M = 300, int8 in two panels at K = 400
        dx_case(dtypes[d],
                (dx_shape){ dtypes[d] == MC_DTYPE_I8 ? 3 : 300, 50280, dtypes[d] == MC_DTYPE_I8 ? 400 : 64, 1, 64 },
                false, MC_MATH_F32, TOL_F32, cls, seed++);
    }
}

// dw += dyᵀ · x (x rows K + pad apart), dbias += Σ_m dy when bias, against the reference.
static void dw_case(int64_t M, int64_t N, int64_t K, int64_t pad, bool bias, int math, double tol, int cls,
                    uint64_t seed) {
    mc_test_rng r = { seed };
    const int64_t ldx = K + pad;
    float *x = alloc_f32(M * ldx), *dy = alloc_f32(M * N), *dw0 = alloc_f32(N * K), *db0 = alloc_f32(N);
    float *got_w = alloc_f32(N * K), *got_b = alloc_f32(N);
    mc_test_fill(&r, x, M * ldx, -1.0f, 1.0f);
    mc_test_fill(&r, dy, M * N, -1.0f, 1.0f);
    mc_test_fill(&r, dw0, N * K, -1.0f, 1.0f);
    mc_test_fill(&r, db0, N, -1.0f, 1.0f);
    float *want_w = copy_f32(dw0, N * K), *want_b = copy_f32(db0, N);
    assert_int_equal(mc_ref_matmul_dw(&g_ex, want_w, bias ? want_b : NULL, dy, x, ldx, M, N, K), MC_OK);
    float *dx = dev_from(x, M * ldx * 4), *ddy = dev_from(dy, M * N * 4), *ddw = dev_from(dw0, N * K * 4);
    float *ddb = dev_from(db0, N * 4);
    g_ex.math = math;
    const mc_status st = g_ops->matmul_dw(&g_ex, ddw, bias ? ddb : NULL, ddy, dx, ldx, M, N, K);
    g_ex.math = MC_MATH_F32;
    expect_ok(st, "matmul_dw");
    dev_to(got_w, ddw, N * K * 4);
    dev_to(got_b, ddb, N * 4);
    char label[128];
    snprintf(label, sizeof(label), "matmul_dw math=%d M=%lld N=%lld K=%lld ldx=%lld bias=%d", math, (long long)M,
             (long long)N, (long long)K, (long long)ldx, bias);
    check(got_w, want_w, N * K, tol, cls, label);
    strncat(label, " dbias", sizeof(label) - strlen(label) - 1);
    check(got_b, want_b, N, TOL_SUM, C_SUM, label); // untouched (exactly db0) when !bias
    float *bufs[] = { dx, ddy, ddw, ddb };
    for (size_t i = 0; i < ARRAY_LEN(bufs); i++) {
        dev_free(bufs[i]);
    }
    float *host[] = { x, dy, dw0, db0, got_w, got_b, want_w, want_b };
    for (size_t i = 0; i < ARRAY_LEN(host); i++) {
        free(host[i]);
    }
}

// The trainer's bias of a frozen matrix: matmul_dw(dbias, NULL, dy, ones, 1, M, N, 1), a K = 1 product.
static void frozen_bias_case(int64_t M, int64_t N, uint64_t seed) {
    mc_test_rng r = { seed };
    float *dy = alloc_f32(M * N), *ones = alloc_f32(M), *db0 = alloc_f32(N), *got = alloc_f32(N);
    mc_test_fill(&r, dy, M * N, -1.0f, 1.0f);
    mc_test_fill(&r, db0, N, -1.0f, 1.0f);
    for (int64_t m = 0; m < M; m++) {
        ones[m] = 1.0f;
    }
    float *want = copy_f32(db0, N);
    assert_int_equal(mc_ref_matmul_dw(&g_ex, want, NULL, dy, ones, 1, M, N, 1), MC_OK);
    float *ddy = dev_from(dy, M * N * 4), *dones = dev_from(ones, M * 4), *ddb = dev_from(db0, N * 4);
    expect_ok(g_ops->matmul_dw(&g_ex, ddb, NULL, ddy, dones, 1, M, N, 1), "matmul_dw (frozen bias)");
    dev_to(got, ddb, N * 4);
    char label[96];
    snprintf(label, sizeof(label), "matmul_dw frozen bias M=%lld N=%lld", (long long)M, (long long)N);
    check(got, want, N, TOL_F32, C_F32, label); // an f32 GEMM with K = 1: f32 sums over M
    dev_free(ddy);
    dev_free(dones);
    dev_free(ddb);
    free(dy);
    free(ones);
    free(db0);
    free(got);
    free(want);
}

static void test_matmul_dw(void **unused) {
    const int64_t Ms[] = { 1, 3, 7, 9, 130, 1000 };
    const int64_t NKs[][2] = { { 1, 1 }, { 17, 65 }, { 65, 33 }, { 257, 100 } };
    uint64_t seed = 1000;
    for (size_t mi = 0; mi < ARRAY_LEN(Ms); mi++) {
        for (size_t i = 0; i < ARRAY_LEN(NKs); i++) {
            dw_case(Ms[mi], NKs[i][0], NKs[i][1], 0, true, MC_MATH_F32, TOL_F32, C_F32, seed++);
            dw_case(Ms[mi], NKs[i][0], NKs[i][1], 3, i % 2 == 0, MC_MATH_F32, TOL_F32, C_F32, seed++);
        }
        frozen_bias_case(Ms[mi], 65, seed++);
    }
    dw_case(9000, 70, 3, 0, true, MC_MATH_F32, TOL_F32, C_F32, seed++); // the column sum's chunk cap (128 chunks)
}

// The math modes on f32 weights at a cuBLAS-sized shape: TF32 and BF16 within their rounding's bound, MC_MATH_F32
// within f32's (as three TF32 terms; test_f32_terms holds them tighter); 16-bit weights under BF16 (x rounded
// once) within bf16's.
// The forward product under MC_MATH_BF16 with a 16-bit weight [N, K] and x rows K + s.pad apart
// against the exact reference, twice (the second call reuses the workspace the first one grew).
static void bf16_product_case(int wtype, dx_shape s, bool with_bias, uint64_t seed) {
    mc_test_rng r = { seed };
    const int64_t M = s.M, N = s.N, K = s.K, ldx = K + s.pad;
    host_weight hw = weight_new(&r, wtype, N, K, 0);
    float *x = alloc_f32(M * ldx), *b = alloc_f32(N), *want = alloc_f32(M * N), *got = alloc_f32(M * N);
    mc_test_fill(&r, x, M * ldx, -1.0f, 1.0f);
    mc_test_fill(&r, b, N, -1.0f, 1.0f);
    mc_ref_matmul(&g_ex, want, x, ldx, &hw.w, with_bias ? b : NULL, M, N, K);
    float *dx = dev_from(x, M * ldx * 4), *db = dev_from(b, N * 4), *dy = dev_from(NULL, M * N * 4);
    for (int rep = 0; rep < 2; rep++) {
        g_ex.math = MC_MATH_BF16;
        const mc_status st = g_ops->matmul(&g_ex, dy, dx, ldx, &hw.dev, with_bias ? db : NULL, M, N, K);
        g_ex.math = MC_MATH_F32;
        expect_ok(st, "matmul");
        dev_to(got, dy, M * N * 4);
        char label[128];
        snprintf(label, sizeof(label), "matmul %s math=bf16 M=%lld N=%lld K=%lld ldx=%lld bias=%d call %d",
                 mc_dtype_name((mc_dtype)wtype), (long long)M, (long long)N, (long long)K, (long long)ldx,
                 with_bias, rep + 1);
        check(got, want, M * N, TOL_BF16, C_BF16, label);
    }
    dev_free(dx);
    dev_free(db);
    dev_free(dy);
    weight_free(&hw);
    free(x);
    free(b);
    free(want);
    free(got);
}

// The forward product with an f32 weight [N, K] under `math` against the exact reference.
static void f32_product_case(int64_t M, int64_t N, int64_t K, int math, double tol, int cls, uint64_t seed) {
    mc_test_rng r = { seed };
    host_weight hw = weight_new(&r, MC_DTYPE_F32, N, K, 0);
    float *x = alloc_f32(M * K), *want = alloc_f32(M * N), *got = alloc_f32(M * N);
    mc_test_fill(&r, x, M * K, -1.0f, 1.0f);
    mc_ref_matmul(&g_ex, want, x, K, &hw.w, NULL, M, N, K);
    float *dx = dev_from(x, M * K * 4), *dy = dev_from(NULL, M * N * 4);
    g_ex.math = math;
    const mc_status st = g_ops->matmul(&g_ex, dy, dx, K, &hw.dev, NULL, M, N, K);
    g_ex.math = MC_MATH_F32;
    expect_ok(st, "matmul");
    dev_to(got, dy, M * N * 4);
    char label[96];
    snprintf(label, sizeof(label), "matmul f32 math=%d M=%lld N=%lld K=%lld", math, (long long)M, (long long)N,
             (long long)K);
    check(got, want, M * N, tol, cls, label);
    dev_free(dx);
    dev_free(dy);
    weight_free(&hw);
    free(x);
    free(want);
    free(got);
}

static void test_math_modes(void **unused) {
    const int modes[] = { MC_MATH_F32, MC_MATH_TF32, MC_MATH_BF16 };
    const double tols[] = { TOL_F32, TOL_TF32, TOL_BF16 };
    const int classes[] = { C_F32, C_TF32, C_BF16 };
    uint64_t seed = 2000;
    for (size_t i = 0; i < ARRAY_LEN(modes); i++) {
        const int64_t M = 130, N = 257, K = 768;
        f32_product_case(M, N, K, modes[i], tols[i], classes[i], seed++);
        dx_case(MC_DTYPE_F32, (dx_shape){ M, N, K, 3, 0 }, true, modes[i], tols[i], classes[i], seed++);
        dw_case(700, N, 300, 1, false, modes[i], tols[i], classes[i], seed++);
    }
    // The forward product with 16-bit weights under BF16: x is one bf16 term (bf16 weights: unscaled; f16: scaled
    // by a power of two into f16's range), with and without the bias pass.
    const int wtypes[] = { MC_DTYPE_BF16, MC_DTYPE_F16 };
    for (size_t i = 0; i < ARRAY_LEN(wtypes); i++) {
        for (int with_bias = 0; with_bias < 2; with_bias++) {
            bf16_product_case(wtypes[i], (dx_shape){ 130, 257, 768, 0, 0 }, with_bias, seed++);
        }
    }
    // Batched decode's rows (9 to 64) with bf16 weights: ragged rows and columns, the 130m model's three products,
    // K not in 32-wide steps, rows not 16-byte aligned, and more than 64 rows.
    const dx_shape rows[] = { { 9, 1, 64, 0, 0 },      { 16, 257, 768, 0, 0 },  { 33, 300, 1536, 4, 0 },
                              { 64, 3072, 768, 0, 0 }, { 64, 80, 1536, 0, 0 },  { 64, 768, 1536, 0, 0 },
                              { 17, 129, 96, 0, 0 },   { 40, 65, 100, 0, 0 },   { 24, 65, 64, 2, 0 },
                              { 65, 65, 64, 0, 0 } };
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        bf16_product_case(MC_DTYPE_BF16, rows[i], i % 2 == 0, seed++);
    }
    // 16-bit weights: only x is rounded (once) under BF16; MC_MATH_F32's terms keep the f32 bound
    dx_case(MC_DTYPE_BF16, (dx_shape){ 130, 257, 768, 0, 0 }, false, MC_MATH_BF16, TOL_BF16, C_BF16, seed++);
    dx_case(MC_DTYPE_F16, (dx_shape){ 130, 257, 768, 0, 0 }, false, MC_MATH_BF16, TOL_BF16, C_BF16, seed++);
    dx_case(MC_DTYPE_BF16, (dx_shape){ 130, 257, 768, 0, 0 }, false, MC_MATH_F32, TOL_16BIT, C_16BIT, seed++);
}

// MC_MATH_BF16's f32-operand products convert both operands to bf16 in pieces when they exceed a cap
// (MAMBAC_CVT_ELEMS, 2^25 elements by default; matmul.cu): a small cap makes each product here go in pieces along
// k (accumulating with beta = 1 onto dx or dw), along m, or along n, with packed and padded (scalar-converted) rows;
// a skinny product (a side under 128) keeps cuBLAS's FAST_16BF kernels on the f32 operands.
static void test_bf16_pieces(void **unused) {
    uint64_t seed = 2500;
    setenv("MAMBAC_CVT_ELEMS", "40000", 1);
    f32_product_case(130, 257, 768, MC_MATH_BF16, TOL_BF16, C_BF16, seed++);  // k: 12 pieces of 64
    f32_product_case(700, 65, 100, MC_MATH_BF16, TOL_BF16, C_BF16, seed++);   // n (x's rows): 3 pieces of 256
    dw_case(700, 257, 300, 1, false, MC_MATH_BF16, TOL_BF16, C_BF16, seed++); // k (rows), onto dw0
    dw_case(700, 257, 300, 0, true, MC_MATH_BF16, TOL_BF16, C_BF16, seed++);
    setenv("MAMBAC_CVT_ELEMS", "100000", 1);
    dx_case(MC_DTYPE_F32, (dx_shape){ 130, 257, 768, 3, 0 }, true, MC_MATH_BF16, TOL_BF16, C_BF16, seed++); // m
    dx_case(MC_DTYPE_F32, (dx_shape){ 130, 257, 768, 0, 0 }, false, MC_MATH_BF16, TOL_BF16, C_BF16, seed++);
    setenv("MAMBAC_CVT_ELEMS", "1", 1); // pieces of one k step
    f32_product_case(130, 300, 200, MC_MATH_BF16, TOL_BF16, C_BF16, seed++);
    unsetenv("MAMBAC_CVT_ELEMS");
    f32_product_case(20, 257, 768, MC_MATH_BF16, TOL_BF16, C_BF16, seed++); // skinny: FAST_16BF on f32 operands
}

// MC_MATH_F32's products on cuBLAS-sized operands run as three TF32 terms each: forward, dx (accumulating, padded
// rows) and dw within a few f32 errors of the double reference, whole and in pieces along k, m and n (a small
// MAMBAC_CVT_ELEMS), and MAMBAC_F32_GEMM=sgemm's SIMT product within f32's own bound.
static void test_f32_terms(void **unused) {
    uint64_t seed = 2700;
    f32_product_case(130, 257, 768, MC_MATH_F32, TOL_F32X3, C_F32X3, seed++);
    f32_product_case(1000, 3072, 768, MC_MATH_F32, TOL_F32X3, C_F32X3, seed++); // the 130m in_proj's shape
    dx_case(MC_DTYPE_F32, (dx_shape){ 300, 768, 1536, 3, 0 }, true, MC_MATH_F32, TOL_F32X3, C_F32X3, seed++);
    dw_case(700, 257, 300, 1, false, MC_MATH_F32, TOL_F32X3, C_F32X3, seed++);
    setenv("MAMBAC_CVT_ELEMS", "40000", 1);
    f32_product_case(130, 257, 768, MC_MATH_F32, TOL_F32X3, C_F32X3, seed++); // k
    f32_product_case(700, 65, 100, MC_MATH_F32, TOL_F32, C_F32, seed++);      // skinny: cublasSgemm
    f32_product_case(700, 130, 200, MC_MATH_F32, TOL_F32X3, C_F32X3, seed++); // n (x's rows)
    dw_case(700, 257, 300, 0, true, MC_MATH_F32, TOL_F32X3, C_F32X3, seed++);
    setenv("MAMBAC_CVT_ELEMS", "100000", 1);
    dx_case(MC_DTYPE_F32, (dx_shape){ 130, 257, 768, 3, 0 }, true, MC_MATH_F32, TOL_F32X3, C_F32X3, seed++); // m
    unsetenv("MAMBAC_CVT_ELEMS");
    setenv("MAMBAC_F32_GEMM", "sgemm", 1);
    f32_product_case(130, 257, 768, MC_MATH_F32, TOL_F32, C_F32, seed++);
    unsetenv("MAMBAC_F32_GEMM");
}

// matmul_bwd against the reference's matmul_dw then matmul_dx: dw (from non-zero) and dbias accumulate, dx is
// written or accumulated with padded rows. Under MC_MATH_BF16 with cuBLAS-sized sides dy is rounded once for both
// products (whole, or in pieces of W's rows with a small MAMBAC_CVT_ELEMS); x over half that budget, a skinny side,
// and MC_MATH_F32 take matmul_dw and matmul_dx.
static void bwd_case(int64_t M, int64_t N, int64_t K, int64_t pad, bool bias, bool acc, int math, double tol, int cls,
                     uint64_t seed) {
    mc_test_rng r = { seed };
    const int64_t ldx = K + pad;
    host_weight hw = weight_new(&r, MC_DTYPE_F32, N, K, 0);
    float *x = alloc_f32(M * ldx), *dy = alloc_f32(M * N), *dw0 = alloc_f32(N * K), *db0 = alloc_f32(N);
    float *dx0 = alloc_f32(M * ldx), *got_w = alloc_f32(N * K), *got_b = alloc_f32(N), *got_x = alloc_f32(M * ldx);
    mc_test_fill(&r, x, M * ldx, -1.0f, 1.0f);
    mc_test_fill(&r, dy, M * N, -1.0f, 1.0f);
    mc_test_fill(&r, dw0, N * K, -1.0f, 1.0f);
    mc_test_fill(&r, db0, N, -1.0f, 1.0f);
    mc_test_fill(&r, dx0, M * ldx, -1.0f, 1.0f);
    float *want_w = copy_f32(dw0, N * K), *want_b = copy_f32(db0, N), *want_x = copy_f32(dx0, M * ldx);
    assert_int_equal(mc_ref_matmul_dw(&g_ex, want_w, bias ? want_b : NULL, dy, x, ldx, M, N, K), MC_OK);
    assert_int_equal(mc_ref_matmul_dx(&g_ex, want_x, ldx, dy, &hw.w, M, N, K, acc), MC_OK);
    float *d_x = dev_from(x, M * ldx * 4), *d_dy = dev_from(dy, M * N * 4), *d_dw = dev_from(dw0, N * K * 4);
    float *d_db = dev_from(db0, N * 4), *d_dx = dev_from(dx0, M * ldx * 4);
    g_ex.math = math;
    const mc_status st = g_ops->matmul_bwd(&g_ex, d_dx, ldx, acc, d_dw, bias ? d_db : NULL, d_dy, d_x, ldx, &hw.dev,
                                           M, N, K);
    g_ex.math = MC_MATH_F32;
    expect_ok(st, "matmul_bwd");
    dev_to(got_w, d_dw, N * K * 4);
    dev_to(got_b, d_db, N * 4);
    dev_to(got_x, d_dx, M * ldx * 4);
    char label[160];
    snprintf(label, sizeof(label), "matmul_bwd math=%d M=%lld N=%lld K=%lld ldx=%lld bias=%d acc=%d", math,
             (long long)M, (long long)N, (long long)K, (long long)ldx, bias, acc);
    const size_t end = strlen(label);
    strcpy(label + end, " dw");
    check(got_w, want_w, N * K, tol, cls, label);
    strcpy(label + end, " dbias");
    check(got_b, want_b, N, TOL_SUM, C_SUM, label); // untouched (exactly db0) when !bias
    strcpy(label + end, " dx");
    check_rows(got_x, want_x, dx0, M, K, ldx, tol, cls, label);
    float *bufs[] = { d_x, d_dy, d_dw, d_db, d_dx };
    for (size_t i = 0; i < ARRAY_LEN(bufs); i++) {
        dev_free(bufs[i]);
    }
    float *host[] = { x, dy, dw0, db0, dx0, got_w, got_b, got_x, want_w, want_b, want_x };
    for (size_t i = 0; i < ARRAY_LEN(host); i++) {
        free(host[i]);
    }
    weight_free(&hw);
}

static void test_matmul_bwd(void **unused) {
    uint64_t seed = 2900;
    bwd_case(300, 257, 200, 3, true, true, MC_MATH_BF16, TOL_BF16, C_BF16, seed++); // whole
    bwd_case(300, 700, 200, 0, false, false, MC_MATH_BF16, TOL_BF16, C_BF16, seed++);
    bwd_case(300, 257, 200, 1, true, false, MC_MATH_F32, TOL_F32X3, C_F32X3, seed++); // apart, three TF32 terms
    bwd_case(300, 80, 200, 0, true, true, MC_MATH_BF16, TOL_BF16, C_BF16, seed++);    // skinny: apart
    setenv("MAMBAC_CVT_ELEMS", "200000", 1);
    bwd_case(300, 700, 200, 3, true, true, MC_MATH_BF16, TOL_BF16, C_BF16, seed++); // 3 pieces of 256 rows of W
    bwd_case(300, 700, 200, 0, false, false, MC_MATH_BF16, TOL_BF16, C_BF16, seed++);
    setenv("MAMBAC_CVT_ELEMS", "100000", 1);
    bwd_case(700, 257, 200, 0, true, false, MC_MATH_BF16, TOL_BF16, C_BF16, seed++); // x over half: apart
    unsetenv("MAMBAC_CVT_ELEMS");
}

// Products with a side of at most 16 (a LoRA rank) take skinny.cu's kernels in every math mode: the adapter's
// forward pair (x·Aᵀ with N = r, then (x·Aᵀ)·Bᵀ with K = r), dx with K or N = r (written and accumulated, padded
// and misaligned rows), dw with N or K = r over many rows (k in slices, summed in order) and few (one slice),
// batched rows (9 to 16, the transposed problem), float4 and scalar paths (sizes not in fours), against the
// reference's double sums. They are off unless MAMBAC_SKINNY=1 (read once a process), which setup sets, so every
// case of this file with such a side takes them too.
static void test_skinny(void **unused) {
    uint64_t seed = 3100;
    const int64_t ranks[] = { 1, 3, 8, 12, 16 };
    for (size_t i = 0; i < ARRAY_LEN(ranks); i++) {
        const int64_t r = ranks[i];
        f32_product_case(1000, r, 768, MC_MATH_F32, TOL_F32, C_F32, seed++);  // down: x·Aᵀ
        f32_product_case(300, r, 101, MC_MATH_F32, TOL_F32, C_F32, seed++);   // down, scalar loads
        f32_product_case(1000, 3072, r, MC_MATH_F32, TOL_F32, C_F32, seed++); // up: (x·Aᵀ)·Bᵀ
        f32_product_case(300, 77, r, MC_MATH_F32, TOL_F32, C_F32, seed++);
        dx_case(MC_DTYPE_F32, (dx_shape){ 1000, 3072, r, 0, 0 }, false, MC_MATH_F32, TOL_F32, C_F32, seed++); // dy·B
        dx_case(MC_DTYPE_F32, (dx_shape){ 300, 101, r, 5, 0 }, true, MC_MATH_F32, TOL_F32, C_F32, seed++);
        dx_case(MC_DTYPE_F32, (dx_shape){ 1000, r, 1536, 0, 0 }, true, MC_MATH_F32, TOL_F32, C_F32, seed++); // tr·A
        dx_case(MC_DTYPE_F32, (dx_shape){ 300, r, 101, 5, 0 }, false, MC_MATH_F32, TOL_F32, C_F32, seed++);
        dw_case(4096, r, 1536, 0, false, MC_MATH_F32, TOL_F32, C_F32, seed++); // dA: k in slices
        dw_case(4096, 3072, r, 0, true, MC_MATH_F32, TOL_F32, C_F32, seed++);  // dB
        dw_case(100, r, 301, 3, false, MC_MATH_F32, TOL_F32, C_F32, seed++);   // one slice, padded rows
        dw_case(100, 77, r, 1, false, MC_MATH_F32, TOL_F32, C_F32, seed++);
    }
    const int64_t rows[] = { 9, 12, 16 }; // batched decode's rows with f32 weights: n small, m large
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        f32_product_case(rows[i], 3072, 768, MC_MATH_F32, TOL_F32, C_F32, seed++);
        f32_product_case(rows[i], 257, 101, MC_MATH_F32, TOL_F32, C_F32, seed++);
    }
    f32_product_case(1000, 8, 768, MC_MATH_BF16, TOL_F32, C_F32, seed++); // exact in every mode
    bwd_case(1000, 3072, 8, 0, false, true, MC_MATH_BF16, TOL_F32, C_F32, seed++);
}

// Converted copies kept for a frozen weight (ops.h's freeze, MAMBAC_CVT_CACHE_MB), on a context of their own (the
// kept copies live as long as it): the forward product and dx of a frozen f32 weight, whole and in pieces (a small
// MAMBAC_CVT_ELEMS), each run twice (the second reads the kept copies), under three TF32 terms and bf16; a budget
// the weight does not fit converts it each time. All against the reference.
static void kept_case(int math, double tol, int cls, const char *budget_mb, const char *cvt_elems, uint64_t seed) {
    setenv("MAMBAC_CVT_CACHE_MB", budget_mb, 1);
    if (cvt_elems != NULL) {
        setenv("MAMBAC_CVT_ELEMS", cvt_elems, 1);
    }
    mc_exec ex;
    assert_int_equal(g_ops->exec_init(&ex, 1, NULL), MC_OK);
    ex.math = math;
    mc_test_rng r = { seed };
    const int64_t M = 300, N = 768, K = 1536;
    host_weight hw = weight_new(&r, MC_DTYPE_F32, N, K, 0);
    expect_ok(g_ops->freeze(&ex, hw.dev.data, (size_t)(N * K) * sizeof(float)), "freeze");
    float *x = alloc_f32(M * K), *dy = alloc_f32(M * N), *want_y = alloc_f32(M * N), *want_dx = alloc_f32(M * K);
    float *got_y = alloc_f32(M * N), *got_dx = alloc_f32(M * K);
    mc_test_fill(&r, x, M * K, -1.0f, 1.0f);
    mc_test_fill(&r, dy, M * N, -1.0f, 1.0f);
    mc_ref_matmul(&g_ex, want_y, x, K, &hw.w, NULL, M, N, K);
    assert_int_equal(mc_ref_matmul_dx(&g_ex, want_dx, K, dy, &hw.w, M, N, K, false), MC_OK);
    float *d_x = dev_from(x, M * K * 4), *d_dy = dev_from(dy, M * N * 4), *d_y = dev_from(NULL, M * N * 4);
    float *d_dx = dev_from(NULL, M * K * 4);
    for (int rep = 0; rep < 2; rep++) {
        expect_ok(g_ops->matmul(&ex, d_y, d_x, K, &hw.dev, NULL, M, N, K), "matmul (kept)");
        expect_ok(g_ops->matmul_dx(&ex, d_dx, K, d_dy, &hw.dev, M, N, K, false), "matmul_dx (kept)");
        dev_to(got_y, d_y, M * N * 4);
        dev_to(got_dx, d_dx, M * K * 4);
        char label[128];
        snprintf(label, sizeof(label), "kept copies math=%d budget=%s MB pieces=%s run %d: matmul", math, budget_mb,
                 cvt_elems != NULL ? cvt_elems : "-", rep);
        check(got_y, want_y, M * N, tol, cls, label);
        strncat(label, "_dx", sizeof(label) - strlen(label) - 1);
        check(got_dx, want_dx, M * K, tol, cls, label);
    }
    g_ops->exec_free(&ex);
    unsetenv("MAMBAC_CVT_CACHE_MB");
    unsetenv("MAMBAC_CVT_ELEMS");
    float *bufs[] = { d_x, d_dy, d_y, d_dx };
    for (size_t i = 0; i < ARRAY_LEN(bufs); i++) {
        dev_free(bufs[i]);
    }
    float *host[] = { x, dy, want_y, want_dx, got_y, got_dx };
    for (size_t i = 0; i < ARRAY_LEN(host); i++) {
        free(host[i]);
    }
    weight_free(&hw);
}

static void test_kept_copies(void **unused) {
    kept_case(MC_MATH_F32, TOL_F32X3, C_F32X3, "64", NULL, 3300);
    kept_case(MC_MATH_F32, TOL_F32X3, C_F32X3, "64", "300000", 3301); // pieces, each kept
    kept_case(MC_MATH_F32, TOL_F32X3, C_F32X3, "1", NULL, 3302);      // over the budget: converted each time
    kept_case(MC_MATH_BF16, TOL_BF16, C_BF16, "64", NULL, 3303);
}

// ---- embed_bwd --------------------------------------------------------------------------------------------------

// Repeated ids add up; an id outside [0, V) (the caller's check failed) writes nothing, inside or past dw.
static void test_embed_bwd(void **unused) {
    const int64_t ns[] = { 1, 3, 130 }, Hs[] = { 1, 3, 65, 768 };
    for (size_t ni = 0; ni < ARRAY_LEN(ns); ni++) {
        for (size_t hi = 0; hi < ARRAY_LEN(Hs); hi++) {
            mc_test_rng r = { 3000 + ni * 10 + hi };
            const int64_t n = ns[ni], H = Hs[hi], V = 37;
            int32_t *ids = malloc((size_t)n * sizeof(int32_t));
            assert_non_null(ids);
            for (int64_t i = 0; i < n; i++) {
                ids[i] = (int32_t)(mc_test_rng_u32(&r) % V);
            }
            ids[0] = (int32_t)V - 1;
            float *dout = alloc_f32(n * H), *dw0 = alloc_f32((V + 1) * H), *got = alloc_f32((V + 1) * H);
            mc_test_fill(&r, dout, n * H, -1.0f, 1.0f);
            mc_test_fill(&r, dw0, (V + 1) * H, -1.0f, 1.0f); // row V: a guard past the table
            float *want = copy_f32(dw0, (V + 1) * H);
            if (n > 1) { // the last id out of range: the device skips that row, the reference refuses the call
                ids[n - 1] = (int32_t)V;
                assert_int_equal(mc_ref_embed_bwd(&g_ex, want, dout, ids, n, V, H), MC_ERR_INVALID);
            }
            assert_int_equal(mc_ref_embed_bwd(&g_ex, want, dout, ids, n > 1 ? n - 1 : n, V, H), MC_OK);
            float *ddout = dev_from(dout, n * H * 4), *ddw = dev_from(dw0, (V + 1) * H * 4);
            int32_t *dids = dev_from(ids, n * 4);
            expect_ok(g_ops->embed_bwd(&g_ex, ddw, ddout, dids, n, V, H), "embed_bwd");
            dev_to(got, ddw, (V + 1) * H * 4);
            char label[64];
            snprintf(label, sizeof(label), "embed_bwd n=%lld H=%lld", (long long)n, (long long)H);
            check(got, want, (V + 1) * H, TOL_SCATTER, C_SCATTER, label);
            dev_free(ddout);
            dev_free(ddw);
            dev_free(dids);
            free(ids);
            free(dout);
            free(dw0);
            free(got);
            free(want);
        }
    }
}

// ---- rmsnorm_bwd ------------------------------------------------------------------------------------------------

static void rmsnorm_bwd_case(int64_t M, int64_t H, uint64_t seed) {
    mc_test_rng r = { seed };
    float *dy = alloc_f32(M * H), *x = alloc_f32(M * H), *w = alloc_f32(H), *dx0 = alloc_f32(M * H);
    float *dw0 = alloc_f32(H), *got_x = alloc_f32(M * H), *got_w = alloc_f32(H);
    mc_test_fill(&r, dy, M * H, -1.0f, 1.0f);
    mc_test_fill(&r, x, M * H, -3.0f, 3.0f);
    mc_test_fill(&r, w, H, 0.5f, 1.5f);
    mc_test_fill(&r, dx0, M * H, -1.0f, 1.0f); // dx accumulates: the residual branch's gradient is already there
    mc_test_fill(&r, dw0, H, -1.0f, 1.0f);
    float *want_x = copy_f32(dx0, M * H), *want_w = copy_f32(dw0, H);
    assert_int_equal(mc_ref_rmsnorm_bwd(&g_ex, want_x, want_w, dy, x, w, M, H, 1e-5f), MC_OK);
    float *ddy = dev_from(dy, M * H * 4), *dx = dev_from(x, M * H * 4), *dw = dev_from(w, H * 4);
    float *ddx = dev_from(dx0, M * H * 4), *ddw = dev_from(dw0, H * 4);
    expect_ok(g_ops->rmsnorm_bwd(&g_ex, ddx, ddw, ddy, dx, dw, M, H, 1e-5f), "rmsnorm_bwd");
    dev_to(got_x, ddx, M * H * 4);
    dev_to(got_w, ddw, H * 4);
    char label[96];
    snprintf(label, sizeof(label), "rmsnorm_bwd M=%lld H=%lld dx", (long long)M, (long long)H);
    check(got_x, want_x, M * H, TOL_SUM, C_SUM, label);
    snprintf(label, sizeof(label), "rmsnorm_bwd M=%lld H=%lld dw", (long long)M, (long long)H);
    check(got_w, want_w, H, TOL_SUM, C_SUM, label);
    float *bufs[] = { ddy, dx, dw, ddx, ddw };
    for (size_t i = 0; i < ARRAY_LEN(bufs); i++) {
        dev_free(bufs[i]);
    }
    float *host[] = { dy, x, w, dx0, dw0, got_x, got_w, want_x, want_w };
    for (size_t i = 0; i < ARRAY_LEN(host); i++) {
        free(host[i]);
    }
}

static void test_rmsnorm_bwd(void **unused) {
    const int64_t Ms[] = { 1, 3, 7, 130 }, Hs[] = { 1, 3, 65, 768, 4100 };
    uint64_t seed = 4000;
    for (size_t mi = 0; mi < ARRAY_LEN(Ms); mi++) {
        for (size_t hi = 0; hi < ARRAY_LEN(Hs); hi++) {
            rmsnorm_bwd_case(Ms[mi], Hs[hi], seed++);
        }
    }
    rmsnorm_bwd_case(9000, 65, seed++); // dw's column sum at its chunk cap
}

// ---- cross_entropy ----------------------------------------------------------------------------------------------

// T rows of V logits (a spike of 25 per row, so the max matters, and on the target now and then, where p ≈ 1 and
// the gradient is 1 − p), every third row ignored; loss_sum and n_valid start non-zero (they accumulate); alias
// puts dlogits on logits, as the trainer does.
static void ce_case(int64_t T, int64_t V, bool alias, uint64_t seed) {
    mc_test_rng r = { seed };
    float *logits = alloc_f32(T * V), *got = alloc_f32(T * V), *want = alloc_f32(T * V);
    int32_t *targets = malloc((size_t)T * sizeof(int32_t));
    assert_non_null(targets);
    mc_test_fill(&r, logits, T * V, -8.0f, 8.0f);
    int64_t kept = 0;
    for (int64_t t = 0; t < T; t++) {
        logits[t * V + (t * 7) % V] = 25.0f;
        targets[t] = t % 3 == 1 ? -100 : t % 3 == 2 ? (int32_t)((t * 7) % V) : (int32_t)(mc_test_rng_u32(&r) % V);
        kept += targets[t] != -100;
    }
    const float scale = 1.0f / (float)(kept > 0 ? kept : 1);
    double want_sum = 1.25, got_sum = 0;
    int64_t want_n = 7, got_n = 0;
    assert_int_equal(mc_ref_cross_entropy(&g_ex, want, &want_sum, &want_n, logits, targets, T, V, scale), MC_OK);
    float *dlog = dev_from(logits, T * V * 4), *dgrad = alias ? dlog : dev_from(NULL, T * V * 4);
    int32_t *dtargets = dev_from(targets, T * 4);
    const double sum0 = 1.25;
    const int64_t n0 = 7;
    double *dsum = dev_from(&sum0, sizeof(double));
    int64_t *dn = dev_from(&n0, sizeof(int64_t));
    expect_ok(g_ops->cross_entropy(&g_ex, dgrad, dsum, dn, dlog, dtargets, T, V, scale), "cross_entropy");
    dev_to(got, dgrad, T * V * 4);
    dev_to(&got_sum, dsum, sizeof(double));
    dev_to(&got_n, dn, sizeof(int64_t));
    char label[96];
    snprintf(label, sizeof(label), "cross_entropy T=%lld V=%lld alias=%d", (long long)T, (long long)V, alias);
    for (int64_t t = 0; t < T; t++) { // row by row: a row with p ≈ 1 has gradients far below the others' scale
        char row_label[160];
        snprintf(row_label, sizeof(row_label), "%s row %lld target %d", label, (long long)t, targets[t]);
        // The reference forms the target's p − 1 in double, which keeps only 2^-53 of 1 (absolute): where
        // 1 − p is below ~1e-9 that rounding exceeds TOL_CE of the row, and the kernel's −Σ_{v≠t} p_v is the
        // accurate one. Such rows are held to the reference's own rounding instead.
        double row_max = 0;
        for (int64_t v = 0; v < V; v++) {
            row_max = fmax(row_max, fabs(want[t * V + v]));
        }
        const double ref_round = 4.0 * 0x1p-53 * scale;
        if (targets[t] != -100 && row_max * TOL_CE < ref_round) {
            for (int64_t v = 0; v < V; v++) {
                if (!(fabs((double)got[t * V + v] - want[t * V + v]) <= ref_round + TOL_CE * row_max)) {
                    print_error("%s: [%lld] = %.9g, reference %.9g\n", row_label, (long long)v,
                                (double)got[t * V + v], (double)want[t * V + v]);
                    fail();
                }
            }
            continue;
        }
        check(got + t * V, want + t * V, V, TOL_CE, C_CE, row_label);
    }
    assert_int_equal(got_n, want_n);
    if (!(fabs(got_sum - want_sum) <= TOL_LOSS_ROW * (double)kept)) {
        print_error("%s: loss_sum %.17g, reference %.17g\n", label, got_sum, want_sum);
        fail();
    }
    dev_free(dlog);
    if (!alias) {
        dev_free(dgrad);
    }
    dev_free(dtargets);
    dev_free(dsum);
    dev_free(dn);
    free(logits);
    free(got);
    free(want);
    free(targets);
}

// A target outside [0, V) that is not −100 (the caller's check failed) makes the loss and its row NaN.
static void ce_bad_target(void) {
    const int64_t T = 2, V = 10;
    float logits[20] = { 0 }, got[20];
    const int32_t targets[2] = { 3, 12 };
    float *dlog = dev_from(logits, sizeof(logits));
    int32_t *dtargets = dev_from(targets, sizeof(targets));
    double *dsum = dev_from(NULL, sizeof(double)), sum = 0;
    int64_t *dn = dev_from(NULL, sizeof(int64_t));
    expect_ok(g_ops->cross_entropy(&g_ex, dlog, dsum, dn, dlog, dtargets, T, V, 0.5f), "cross_entropy (bad)");
    dev_to(got, dlog, sizeof(got));
    dev_to(&sum, dsum, sizeof(double));
    assert_true(isnan(sum));
    assert_false(isnan(got[0]));
    assert_true(isnan(got[V]));
    dev_free(dlog);
    dev_free(dtargets);
    dev_free(dsum);
    dev_free(dn);
}

static void test_cross_entropy(void **unused) {
    const int64_t Ts[] = { 1, 3, 7, 130 }, Vs[] = { 1, 5, 1000, 1031 };
    uint64_t seed = 5000;
    for (size_t ti = 0; ti < ARRAY_LEN(Ts); ti++) {
        for (size_t vi = 0; vi < ARRAY_LEN(Vs); vi++) {
            ce_case(Ts[ti], Vs[vi], false, seed++);
            ce_case(Ts[ti], Vs[vi], true, seed++);
        }
    }
    ce_case(9, 50280, true, seed++); // the vocabulary of the released models
    ce_bad_target();
}

// ---- elementwise ------------------------------------------------------------------------------------------------

static void test_axpby_mul_acc(void **unused) {
    const int64_t ns[] = { 1, 1000, (1 << 20) + 3 };
    for (size_t i = 0; i < ARRAY_LEN(ns); i++) {
        const int64_t n = ns[i];
        mc_test_rng r = { 6000 + i };
        float *y = alloc_f32(n), *x = alloc_f32(n), *a = alloc_f32(n), *got = alloc_f32(n);
        mc_test_fill(&r, y, n, -2.0f, 2.0f);
        mc_test_fill(&r, x, n, -2.0f, 2.0f);
        mc_test_fill(&r, a, n, -2.0f, 2.0f);
        float *dy = dev_from(y, n * 4), *dx = dev_from(x, n * 4), *da = dev_from(a, n * 4);
        for (int form = 0; form < 3; form++) { // x separate, x NULL, x == y
            float *want = copy_f32(y, n);
            mc_ref_axpby(&g_ex, want, 0.75f, form == 0 ? x : form == 1 ? NULL : want, -1.5f, n);
            assert_int_equal(g_ops->upload(&g_ex, dy, y, (size_t)n * 4), MC_OK);
            expect_ok(g_ops->axpby(&g_ex, dy, 0.75f, form == 0 ? dx : form == 1 ? NULL : dy, -1.5f, n), "axpby");
            dev_to(got, dy, n * 4);
            char label[64];
            snprintf(label, sizeof(label), "axpby n=%lld form=%d", (long long)n, form);
            check(got, want, n, TOL_ELEM, C_ELEM, label);
            free(want);
        }
        float *want = copy_f32(y, n);
        mc_ref_mul_acc(&g_ex, want, x, a, n);
        assert_int_equal(g_ops->upload(&g_ex, dy, y, (size_t)n * 4), MC_OK);
        expect_ok(g_ops->mul_acc(&g_ex, dy, dx, da, n), "mul_acc");
        dev_to(got, dy, n * 4);
        check(got, want, n, TOL_ELEM, C_ELEM, "mul_acc");
        mc_test_fill(&r, x, n, -10.0f, 5.0f);
        mc_ref_neg_exp(want, x, n);
        assert_int_equal(g_ops->upload(&g_ex, dx, x, (size_t)n * 4), MC_OK);
        expect_ok(g_ops->neg_exp(&g_ex, dy, dx, n), "neg_exp");
        dev_to(got, dy, n * 4);
        check(got, want, n, TOL_EXP, C_ELEM, "neg_exp");
        dev_free(dy);
        dev_free(dx);
        dev_free(da);
        free(y);
        free(x);
        free(a);
        free(got);
        free(want);
    }
}

// dropout: the reference's mask and values bit for bit (kernels/dropout.h's one hash on both sides), strided rows,
// in place, p from none to all.
static void test_dropout(void **unused) {
    const int64_t shapes[][3] = { { 1, 1, 1 }, { 3, 5, 7 }, { 300, 1536, 1536 }, { 130, 768, 800 } }; // M, K, ldx
    const double ps[] = { 0.0, 0.05, 0.5, 1.0 };
    for (size_t si = 0; si < ARRAY_LEN(shapes); si++) {
        const int64_t M = shapes[si][0], K = shapes[si][1], ldx = shapes[si][2];
        mc_test_rng r = { 6100 + si };
        float *x = alloc_f32(M * ldx), *want = alloc_f32(M * K), *got = alloc_f32(M * K);
        mc_test_fill(&r, x, M * ldx, -2.0f, 2.0f);
        float *dx = dev_from(x, M * ldx * 4), *dy = dev_from(NULL, M * K * 4);
        for (size_t pi = 0; pi < ARRAY_LEN(ps); pi++) {
            const uint64_t key = 0xC0FFEEull * (si + 1) + pi;
            mc_ref_dropout(&g_ex, want, x, ldx, M, K, ps[pi], key);
            expect_ok(g_ops->dropout(&g_ex, dy, dx, ldx, M, K, ps[pi], key), "dropout");
            dev_to(got, dy, M * K * 4);
            assert_memory_equal(got, want, (size_t)(M * K) * 4);
            if (ldx == K) { // in place
                expect_ok(g_ops->dropout(&g_ex, dx, dx, K, M, K, ps[pi], key), "dropout (in place)");
                dev_to(got, dx, M * K * 4);
                assert_memory_equal(got, want, (size_t)(M * K) * 4);
                assert_int_equal(g_ops->upload(&g_ex, dx, x, (size_t)(M * K) * 4), MC_OK);
            }
        }
        dev_free(dx);
        dev_free(dy);
        free(x);
        free(want);
        free(got);
    }
}

// *out is written, not added to: it starts as garbage, and n = 0 gives 0.
static void test_sumsq(void **unused) {
    const int64_t ns[] = { 0, 1, 1000, 40000003 };
    for (size_t i = 0; i < ARRAY_LEN(ns); i++) {
        const int64_t n = ns[i];
        mc_test_rng r = { 7000 + i };
        float *x = alloc_f32(n);
        mc_test_fill(&r, x, n, -3.0f, 3.0f);
        const double want = mc_ref_sumsq(x, n), garbage = 123.5;
        double got = 0;
        float *dx = dev_from(x, n * 4);
        double *dout = dev_from(&garbage, sizeof(double));
        expect_ok(g_ops->sumsq(&g_ex, dout, dx, n), "sumsq");
        dev_to(&got, dout, sizeof(double));
        if (!(fabs(got - want) <= TOL_SUMSQ * want)) {
            print_error("sumsq n=%lld: %.17g, reference %.17g\n", (long long)n, got, want);
            fail();
        }
        dev_free(dx);
        dev_free(dout);
        free(x);
    }
}

// Distance in units in the last place between two finite floats of any sign (0 when bit-equal).
static int64_t ulp_diff(float a, float b) {
    int32_t ia, ib;
    memcpy(&ia, &a, sizeof(ia));
    memcpy(&ib, &b, sizeof(ib));
    const int64_t oa = ia < 0 ? (int64_t)INT32_MIN - ia : ia, ob = ib < 0 ? (int64_t)INT32_MIN - ib : ib;
    return oa > ob ? oa - ob : ob - oa;
}

static int64_t max_ulp(const float *got, const float *want, int64_t n) {
    int64_t worst = 0;
    for (int64_t i = 0; i < n; i++) {
        const int64_t d = ulp_diff(got[i], want[i]);
        worst = d > worst ? d : worst;
    }
    return worst;
}

// Two steps (t = 1 from zero moments, then t = 10) with optim.c's scalars, decayed and not.
static void test_adamw(void **unused) {
    const int64_t n = (1 << 16) + 3;
    mc_test_rng r = { 8000 };
    float *p = alloc_f32(n), *g = alloc_f32(n), *m = alloc_f32(n), *v = alloc_f32(n);
    float *gp = alloc_f32(n), *gm = alloc_f32(n), *gv = alloc_f32(n);
    mc_test_fill(&r, p, n, -1.0f, 1.0f);
    float *dp = dev_from(p, n * 4), *dg = dev_from(NULL, n * 4), *dm = dev_from(m, n * 4), *dv = dev_from(v, n * 4);
    const double lr = 1e-3, b1 = 0.9, b2 = 0.999;
    const int steps[] = { 1, 10 };
    for (size_t s = 0; s < ARRAY_LEN(steps); s++) {
        mc_test_fill(&r, g, n, -1.0f, 1.0f);
        g[0] = 0.0f;
        const double bc1 = 1.0 - pow(b1, steps[s]), bc2 = 1.0 - pow(b2, steps[s]);
        const mc_adamw_args a = { .decay = s == 0 ? (float)(1.0 - lr * 0.1) : 1.0f,
                                  .w1 = (float)(1.0 - b1),
                                  .beta2 = (float)b2,
                                  .w2 = (float)(1.0 - b2),
                                  .neg_step = (float)-(lr / bc1),
                                  .bc2_sqrt = (float)sqrt(bc2),
                                  .eps = 1e-8f };
        mc_ref_adamw(p, g, m, v, n, &a);
        assert_int_equal(g_ops->upload(&g_ex, dg, g, (size_t)n * 4), MC_OK);
        expect_ok(g_ops->adamw(&g_ex, dp, dg, dm, dv, n, &a), "adamw");
        dev_to(gp, dp, n * 4);
        dev_to(gm, dm, n * 4);
        dev_to(gv, dv, n * 4);
        const int64_t up = max_ulp(gp, p, n), um = max_ulp(gm, m, n), uv = max_ulp(gv, v, n);
        printf("adamw step %d: max ulp p %lld, m %lld, v %lld\n", steps[s], (long long)up, (long long)um,
               (long long)uv);
        assert_true(up <= ADAMW_MAX_ULP && um <= ADAMW_MAX_ULP && uv <= ADAMW_MAX_ULP);
    }
    float *bufs[] = { dp, dg, dm, dv };
    for (size_t i = 0; i < ARRAY_LEN(bufs); i++) {
        dev_free(bufs[i]);
    }
    float *host[] = { p, g, m, v, gp, gm, gv };
    for (size_t i = 0; i < ARRAY_LEN(host); i++) {
        free(host[i]);
    }
}

// ---- errors and empty calls -------------------------------------------------------------------------------------

static void expect_invalid(mc_status st, const char *needle) {
    assert_int_equal(st, MC_ERR_INVALID);
    if (strstr(g_err.msg, needle) == NULL || strchr(g_err.msg, '\n') != NULL) {
        print_error("message \"%s\" lacks \"%s\"\n", g_err.msg, needle);
        fail();
    }
}

static void test_errors(void **unused) {
    float *buf = dev_from(NULL, 64 * 4);
    const float init[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
    const mc_weight w = { .data = buf, .dtype = MC_DTYPE_F32, .rows = 2, .cols = 3 };
    const mc_weight i8 = { .data = buf, .dtype = MC_DTYPE_I8, .rows = 2, .cols = 3 }; // no scales
    expect_invalid(g_ops->matmul_dx(&g_ex, buf, 2, buf, &w, 1, 2, 3, false), "cuda matmul_dx: M=1");
    expect_invalid(g_ops->matmul_dx(&g_ex, buf, 3, buf, &w, 1, 3, 3, false), "weight is not a [3, 3]");
    expect_invalid(g_ops->matmul_dx(&g_ex, buf, 3, buf, &i8, 1, 2, 3, false), "weight is not a [2, 3]");
    expect_invalid(g_ops->matmul_dw(&g_ex, buf, NULL, buf, buf, 3, -1, 2, 3), "cuda matmul_dw: M=-1");
    expect_invalid(g_ops->embed_bwd(&g_ex, buf, buf, (const int32_t *)buf, -1, 4, 4), "cuda embed_bwd: n=-1");
    expect_invalid(g_ops->rmsnorm_bwd(&g_ex, buf, buf, buf, buf, buf, 1, 0, 1e-5f), "cuda rmsnorm_bwd: M=1 H=0");
    expect_invalid(
        g_ops->cross_entropy(&g_ex, buf, (double *)buf, (int64_t *)buf, buf, (const int32_t *)buf, 1, 0, 1.0f),
        "cuda cross_entropy: T=1 V=0");
    expect_invalid(g_ops->axpby(&g_ex, buf, 1.0f, NULL, 1.0f, -1), "cuda axpby: n=-1");
    expect_invalid(g_ops->mul_acc(&g_ex, buf, buf, buf, -2), "cuda mul_acc: n=-2");
    expect_invalid(g_ops->sumsq(&g_ex, (double *)buf, buf, -3), "cuda sumsq: n=-3");
    expect_invalid(g_ops->neg_exp(&g_ex, buf, buf, -4), "cuda neg_exp: n=-4");
    const mc_adamw_args a = { 1, 0.1f, 0.999f, 0.001f, -1e-3f, 1, 1e-8f };
    expect_invalid(g_ops->adamw(&g_ex, buf, buf, buf, buf, -5, &a), "cuda adamw: n=-5");
    // Empty calls succeed and write nothing, except matmul_dx's empty sum (N = 0), which writes dx = 0.
    assert_int_equal(g_ops->upload(&g_ex, buf, init, sizeof(init)), MC_OK);
    expect_ok(g_ops->matmul_dx(&g_ex, buf, 3, buf + 32, &w, 0, 2, 3, false), "matmul_dx M=0");
    expect_ok(g_ops->matmul_dw(&g_ex, buf, buf, buf + 32, buf + 40, 3, 0, 2, 3), "matmul_dw M=0");
    expect_ok(g_ops->embed_bwd(&g_ex, buf, buf + 32, (const int32_t *)buf + 40, 0, 4, 2), "embed_bwd n=0");
    expect_ok(g_ops->rmsnorm_bwd(&g_ex, buf, buf, buf + 32, buf + 40, buf + 48, 0, 2, 1e-5f), "rmsnorm_bwd M=0");
    expect_ok(g_ops->cross_entropy(&g_ex, buf, (double *)buf, (int64_t *)buf, buf, (const int32_t *)buf, 0, 4, 1.0f),
              "cross_entropy T=0");
    expect_ok(g_ops->axpby(&g_ex, buf, 2.0f, NULL, 1.0f, 0), "axpby n=0");
    expect_ok(g_ops->adamw(&g_ex, buf, buf, buf, buf, 0, &a), "adamw n=0");
    float got[8];
    dev_to(got, buf, sizeof(got));
    assert_memory_equal(got, init, sizeof(init));
    const mc_weight empty = { .data = buf + 32, .dtype = MC_DTYPE_F32, .rows = 0, .cols = 3 };
    expect_ok(g_ops->matmul_dx(&g_ex, buf, 4, buf + 40, &empty, 2, 0, 3, false), "matmul_dx N=0");
    dev_to(got, buf, sizeof(got));
    const float zeroed[8] = { 0, 0, 0, 4, 0, 0, 0, 8 }; // rows of 3, 4 apart: the padding kept
    assert_memory_equal(got, zeroed, sizeof(zeroed));
    dev_free(buf);
}

static int setup(void **unused) {
    setenv("MAMBAC_SKINNY", "1", 1); // skinny.cu's kernels (off by default until they have run on a GPU)
    return dev_setup();
}

static int teardown(void **unused) {
    static const char *const classes[C_COUNT] = { "f32 products",        "f32 as three TF32 terms",
                                                  "16-bit weights (dy split)", "TF32 products",
                                                  "BF16 products",
                                                  "double sums",         "embed scatter",
                                                  "cross_entropy grads", "elementwise" };
    dev_print_worst(classes, g_worst, ARRAY_LEN(classes));
    dev_teardown();
    return 0;
}

int main(int argc, char **argv) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_dx),     cmocka_unit_test(test_matmul_dw),   cmocka_unit_test(test_math_modes),
        cmocka_unit_test(test_embed_bwd),     cmocka_unit_test(test_rmsnorm_bwd), cmocka_unit_test(test_cross_entropy),
        cmocka_unit_test(test_axpby_mul_acc), cmocka_unit_test(test_sumsq),       cmocka_unit_test(test_adamw),
        cmocka_unit_test(test_errors),        cmocka_unit_test(test_bf16_pieces), cmocka_unit_test(test_f32_terms),
        cmocka_unit_test(test_matmul_bwd),    cmocka_unit_test(test_skinny),
        cmocka_unit_test(test_kept_copies),   cmocka_unit_test(test_dropout),
    };
    if (argc > 1) { // a test-name pattern, for a run under compute-sanitizer
        cmocka_set_test_filter(argv[1]);
    }
    return cmocka_run_group_tests(tests, setup, teardown);
}
