// Parity of the CPU matmul variants (src/kernels/cpu/matmul.c) with the reference twin mc_ref_matmul: every
// variant this CPU runs, every weight dtype, sizes that break the SIMD widths and register tiles, strided x.
#include <inttypes.h>
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
#include "kernels/cpu/cpu.h"
#include "kernels/dtype.h"
#include "kernels/ref/ref.h"

// Both sides multiply the same stored values (f16/bf16/int8 decoded exactly, int8 as q · scale in f32 on both
// sides); only the summation order differs (vector lanes, FMA, groups), a few ulp of the row sums for K <= 1536.
#define MATMUL_TOL 1e-5

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static const int64_t Ms[] = { 1, 2, 3, 7, 8, 12, 16, 17, 32, 33, 129 }; // 12, 16: the one-vector gemm panel
static const int64_t Ns[] = { 1, 3, 17, 63, 65, 80, 257 };
static const int64_t Ks[] = { 1, 3, 16, 17, 48, 63, 65, 130, 768 };
static const int dtypes[] = { MC_DTYPE_F32, MC_DTYPE_F16, MC_DTYPE_BF16, MC_DTYPE_I8 };

static uint64_t rng_next(uint64_t *s) { // splitmix64: fixed seeds, so a failure replays exactly
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static float rng_uniform(uint64_t *s) { // [-1, 1)
    return (float)((double)(rng_next(s) >> 11) * 0x1.0p-53 * 2.0 - 1.0);
}

// An int8 group size that does not divide K (and is < K when K > 2), so groups start mid-vector.
static int64_t odd_group(int64_t K) {
    for (int64_t g = 20; g >= 2; g--) {
        if (g < K && K % g != 0) {
            return g;
        }
    }
    return 2;
}

typedef struct mm_case {
    int64_t M, N, K, ldx, group;
    bool bias;
} mm_case;

typedef struct mm_data {
    mc_weight w;
    void *wdata;
    float *scales, *x, *bias, *want, *got;
} mm_data;

static void mm_data_free(mm_data *d) {
    free(d->wdata);
    free(d->scales);
    free(d->x);
    free(d->bias);
    free(d->want);
    free(d->got);
}

// Random stored weights: f16 with exponents from subnormal to 2^2, bf16 around 1, int8 over its whole range.
static void fill_weight(mm_data *d, int dtype, const mm_case *c, uint64_t *seed) {
    const int64_t n = c->N * c->K;
    d->wdata = malloc((size_t)(n * mc_dtype_size(dtype)));
    assert_non_null(d->wdata);
    for (int64_t i = 0; i < n; i++) {
        const uint64_t r = rng_next(seed);
        switch (dtype) {
            case MC_DTYPE_F16: // sign, exponent 0..17 (0: subnormal), mantissa
                ((uint16_t *)d->wdata)[i] = (uint16_t)(((r & 1) << 15) | (((r >> 1) % 18) << 10) | ((r >> 8) & 0x3ff));
                break;
            case MC_DTYPE_BF16: // sign, exponent 2^-7..2^1, mantissa
                ((uint16_t *)d->wdata)[i] =
                    (uint16_t)(((r & 1) << 15) | ((120 + (r >> 1) % 9) << 7) | ((r >> 8) & 0x7f));
                break;
            case MC_DTYPE_I8:
                ((int8_t *)d->wdata)[i] = (int8_t)(r & 0xff);
                break;
            default:
                ((float *)d->wdata)[i] = rng_uniform(seed);
                break;
        }
    }
    d->w = (mc_weight){ .data = d->wdata, .dtype = dtype, .rows = c->N, .cols = c->K };
    if (dtype == MC_DTYPE_I8) {
        const int64_t n_scales = c->N * ((c->K + c->group - 1) / c->group);
        d->scales = malloc((size_t)n_scales * sizeof(float));
        assert_non_null(d->scales);
        for (int64_t i = 0; i < n_scales; i++) {
            d->scales[i] = 0.001f + 0.01f * (rng_uniform(seed) + 1.0f);
        }
        d->w.scales = d->scales;
        d->w.group = c->group;
    }
}

// x rows ldx apart; the padding between rows is NaN, so a kernel that reads past K poisons its output.
static void fill_case(mm_data *d, int dtype, const mm_case *c, uint64_t seed) {
    memset(d, 0, sizeof(*d));
    fill_weight(d, dtype, c, &seed);
    d->x = malloc((size_t)((c->M - 1) * c->ldx + c->K) * sizeof(float));
    d->want = malloc((size_t)(c->M * c->N) * sizeof(float));
    d->got = malloc((size_t)(c->M * c->N) * sizeof(float));
    assert_true(d->x != NULL && d->want != NULL && d->got != NULL);
    for (int64_t m = 0; m < c->M; m++) {
        for (int64_t k = 0; k < c->ldx && m * c->ldx + k < (c->M - 1) * c->ldx + c->K; k++) {
            d->x[m * c->ldx + k] = k < c->K ? rng_uniform(&seed) : NAN;
        }
    }
    if (c->bias) {
        d->bias = malloc((size_t)c->N * sizeof(float));
        assert_non_null(d->bias);
        for (int64_t n = 0; n < c->N; n++) {
            d->bias[n] = rng_uniform(&seed);
        }
    }
}

// One case on one variant at 1 and 2 threads; y starts as NaN so an element left unwritten fails.
static bool run_case(mc_cpu_matmul_fn fn, const char *vname, int dtype, const mm_case *c, uint64_t seed) {
    mm_data d;
    fill_case(&d, dtype, c, seed);
    const mc_exec ex1 = { .n_threads = 1 };
    mc_ref_matmul(&ex1, d.want, d.x, c->ldx, &d.w, d.bias, c->M, c->N, c->K);
    bool ok = true;
    for (int nt = 1; nt <= 2; nt++) {
        const mc_exec ex = { .n_threads = nt };
        for (int64_t i = 0; i < c->M * c->N; i++) {
            d.got[i] = NAN;
        }
        fn(&ex, d.got, d.x, c->ldx, &d.w, d.bias, c->M, c->N, c->K);
        char label[160];
        snprintf(label, sizeof(label),
                 "matmul[%s] %s M=%" PRId64 " N=%" PRId64 " K=%" PRId64 " ldx=%" PRId64 " group=%" PRId64
                 " bias=%d threads=%d",
                 vname, mc_dtype_name((mc_dtype)dtype), c->M, c->N, c->K, c->ldx, dtype == MC_DTYPE_I8 ? c->group : 0,
                 c->bias, nt);
        ok = mc_check_close(d.got, d.want, c->M * c->N, MATMUL_TOL, label) && ok;
    }
    mm_data_free(&d);
    return ok;
}

// Every (M, K) pair with an N, ldx, bias and int8 group that rotate with it, so each M meets every K tail and
// every int8 grouping, in both the decode (small M) and prefill (large M) paths; then the model's odd shapes.
static void check_variant(int isa) {
    static const char *const names[MC_CPU_ISA_COUNT] = { "c", "avx2", "avx512" };
    const mc_cpu_kernels *k = mc_cpu_kernels_get(isa);
    mc_cpu_matmul_fn fn = k != NULL ? k->matmul : NULL;
    const char *vname = names[isa];
    if (fn == NULL) {
        printf("SKIP: matmul variant %s: not supported by this CPU or build\n", vname);
        skip();
    }
    bool ok = true;
    for (size_t di = 0; di < ARRAY_LEN(dtypes); di++) {
        for (size_t im = 0; im < ARRAY_LEN(Ms); im++) {
            for (size_t ik = 0; ik < ARRAY_LEN(Ks); ik++) {
                const int64_t K = Ks[ik];
                const int64_t groups[] = { 32, 64, K, odd_group(K), 24 }; // 24: whole AVX2 vectors only
                const mm_case c = {
                    .M = Ms[im],
                    .N = Ns[(im * 3 + ik + di) % ARRAY_LEN(Ns)],
                    .K = K,
                    .ldx = K + (int64_t)((im + ik) % 3) * 5, // ldx == K, and two strides > K
                    .group = groups[(im + ik + di) % ARRAY_LEN(groups)],
                    .bias = (im + ik + di) % 2 == 0,
                };
                ok = run_case(fn, vname, dtypes[di], &c, 1000 * di + 10 * im + ik) && ok;
            }
        }
        // mamba-130m's own odd shapes, shrunk in N: dt_proj (K = R = 48, x rows 80 apart), x_proj (N = 80).
        const mm_case model[] = {
            { .M = 1, .N = 1536, .K = 48, .ldx = 80, .group = 32, .bias = true },
            { .M = 129, .N = 100, .K = 48, .ldx = 80, .group = 48, .bias = false },
            { .M = 33, .N = 80, .K = 1536, .ldx = 1536, .group = 64, .bias = false },
            { .M = 8, .N = 80, .K = 1536, .ldx = 1536, .group = 100, .bias = true },
            // weights over the 2^18-element split_rows limit: threads split N (gemm, then dot) whatever M is
            { .M = 33, .N = 401, .K = 768, .ldx = 770, .group = 64, .bias = true },
            { .M = 8, .N = 350, .K = 769, .ldx = 769, .group = 32, .bias = false },
        };
        for (size_t i = 0; i < ARRAY_LEN(model); i++) {
            ok = run_case(fn, vname, dtypes[di], &model[i], 77 + i) && ok;
        }
    }
    assert_true(ok);
}

static void test_matmul_portable(void **state) {
    (void)state;
    check_variant(MC_CPU_ISA_C);
}

static void test_matmul_avx2(void **state) {
    (void)state;
    check_variant(MC_CPU_ISA_AVX2);
}

static void test_matmul_avx512(void **state) {
    (void)state;
    check_variant(MC_CPU_ISA_AVX512);
}

// K = 0 or M = 0 calls behave on every table.
static void test_matmul_select_and_empty(void **state) {
    (void)state;
    assert_non_null(mc_cpu_kernels_best()->matmul);
    for (int v = 0; v < MC_CPU_ISA_COUNT; v++) {
        const mc_cpu_kernels *k = mc_cpu_kernels_get(v);
        if (k == NULL) {
            continue;
        }
        mc_cpu_matmul_fn fn = k->matmul;
        const float w0 = 0.0f, x0 = 0.0f, bias[3] = { 1.0f, -2.0f, 3.0f };
        const mc_weight w = { .data = &w0, .dtype = MC_DTYPE_F32, .rows = 3, .cols = 0 };
        const mc_exec ex = { .n_threads = 2 };
        float y[6] = { NAN, NAN, NAN, NAN, NAN, NAN };
        fn(&ex, y, &x0, 0, &w, bias, 2, 3, 0); // K = 0: y = bias
        const float want[6] = { 1.0f, -2.0f, 3.0f, 1.0f, -2.0f, 3.0f };
        assert_true(mc_check_close(y, want, 6, 0.0, "matmul K=0"));
        fn(&ex, y, &x0, 0, &w, bias, 0, 3, 0); // M = 0: nothing written
        assert_true(mc_check_close(y, want, 6, 0.0, "matmul M=0"));
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_portable),
        cmocka_unit_test(test_matmul_avx2),
        cmocka_unit_test(test_matmul_avx512),
        cmocka_unit_test(test_matmul_select_and_empty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
