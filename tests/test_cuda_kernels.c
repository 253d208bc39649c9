// Parity of the cuda backend's ops (src/kernels/cuda/) with their reference twins, through the op table as the
// forward calls it (device memory, uploads and downloads): every dtype and path of matmul, embed, rmsnorm with and
// without the residual add, conv1d and the selective scan in sequence (batched, carried state) and step forms, on
// sizes that break blocks and tiles, strided and misaligned inputs. Skips (77) when no CUDA device is usable.
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
#include "kernels/ref/ref.h"
#include "mambac.h"

// f32 paths vs the reference (style §2.7: ref vs cuda f32, no TF32): only summation order, FMA contraction and
// CUDA's expf/log1pf (≤ 2 ulp) differ.
#define TOL_F32 1e-4
// cuBLAS with 16-bit weights takes x split into 2 (f16) or 3 (bf16) terms of the weight's type (22 or 24 bits of
// x): f32 rounding plus at most 2^-22 of each activation, so the f32 bound holds.
#define TOL_16BIT 1e-4
// Widening f16/bf16 is exact and int8 is q · scale rounded once, as the reference.
#define TOL_EXACT 0.0

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))


static float *alloc_f32(int64_t n) {
    float *p = calloc((size_t)(n > 0 ? n : 1), sizeof(float));
    assert_non_null(p);
    return p;
}

static double g_worst[8]; // worst relative error seen per class, printed at the end for the record

static void check(const float *got, const float *want, int64_t n, double tol, int cls, const char *label) {
    double e = mc_rel_err(got, want, n);
    g_worst[cls] = e > g_worst[cls] ? e : g_worst[cls];
    assert_true(mc_check_close(got, want, n, tol, label));
}

// ---- matmul -----------------------------------------------------------------------------------------------------

// A random weight [N, K] in dtype (int8: q in [−127, 127], group scales), host copy; data/scales point into *store.
static mc_weight make_weight(mc_test_rng *r, int dtype, int64_t N, int64_t K, int64_t group, void **data, float **scales) {
    mc_weight w = { .dtype = dtype, .rows = N, .cols = K };
    *data = malloc((size_t)(N * K * mc_dtype_size(dtype) + 16));
    *scales = NULL;
    for (int64_t i = 0; i < N * K; i++) {
        float v = mc_test_rng_uniform(r, -1.0f, 1.0f);
        switch (dtype) {
            case MC_DTYPE_F16:
                ((uint16_t *)*data)[i] = mc_f32_to_f16(v);
                break;
            case MC_DTYPE_BF16:
                ((uint16_t *)*data)[i] = mc_f32_to_bf16(v);
                break;
            case MC_DTYPE_I8:
                ((int8_t *)*data)[i] = (int8_t)((int)(mc_test_rng_u32(r) % 255) - 127);
                break;
            default:
                ((float *)*data)[i] = v;
        }
    }
    if (dtype == MC_DTYPE_I8) {
        const int64_t ng = (K + group - 1) / group;
        *scales = alloc_f32(N * ng);
        mc_test_fill(r, *scales, N * ng, 0.001f, 0.02f);
        w.scales = *scales;
        w.group = group;
    }
    w.data = *data;
    return w;
}

static void matmul_case(int dtype, int64_t M, int64_t N, int64_t K, int64_t ldx, int64_t group, bool bias,
                        uint64_t seed) {
    mc_test_rng r = { seed };
    void *wdata = NULL;
    float *wscales = NULL;
    mc_weight w = make_weight(&r, dtype, N, K, group, &wdata, &wscales);
    float *x = alloc_f32(M * ldx), *b = alloc_f32(N), *want = alloc_f32(M * N), *got = alloc_f32(M * N);
    mc_test_fill(&r, x, M * ldx, -1.0f, 1.0f);
    mc_test_fill(&r, b, N, -1.0f, 1.0f);
    for (int64_t i = 0; M == 130 && i < M * ldx; i += 3) { // past f16's range (65504): the row scaling must hold
        x[i] *= 3e5f;
    }
    mc_ref_matmul(&g_ex, want, x, ldx, &w, bias ? b : NULL, M, N, K);
    mc_weight dw = w;
    dw.data = dev_from(w.data, N * K * mc_dtype_size(dtype));
    dw.scales = wscales != NULL ? dev_from(wscales, N * ((K + group - 1) / group) * 4) : NULL;
    float *dx = dev_from(x, M * ldx * 4), *db = dev_from(b, N * 4), *dy = dev_from(NULL, M * N * 4);
    expect_ok(g_ops->matmul(&g_ex, dy, dx, ldx, &dw, bias ? db : NULL, M, N, K), "matmul");
    dev_to(got, dy, M * N * 4);
    char label[160];
    snprintf(label, sizeof(label), "matmul %s M=%lld N=%lld K=%lld ldx=%lld group=%lld bias=%d",
             mc_dtype_name((mc_dtype)dtype), (long long)M, (long long)N, (long long)K, (long long)ldx,
             (long long)group, bias);
    // Rows past 8 of a 16-bit weight go through cuBLAS on x split into terms of the weight's type.
    const bool rounded_x = (dtype == MC_DTYPE_F16 || dtype == MC_DTYPE_BF16) && M > 8;
    check(got, want, M * N, rounded_x ? TOL_16BIT : TOL_F32, rounded_x ? 1 : 0, label);
    dev_free((void *)dw.data);
    dev_free((void *)dw.scales);
    dev_free(dx);
    dev_free(db);
    dev_free(dy);
    free(wdata);
    free(wscales);
    free(x);
    free(b);
    free(want);
    free(got);
}

static void test_matmul(void **unused) {
    const int dtypes[] = { MC_DTYPE_F32, MC_DTYPE_F16, MC_DTYPE_BF16, MC_DTYPE_I8 };
    const int64_t Ms[] = { 1, 3, 8, 9, 17, 65 }, Ns[] = { 1, 17, 65 }, Ks[] = { 1, 3, 17, 64, 65, 256 };
    uint64_t seed = 1;
    for (size_t d = 0; d < 4; d++) {
        for (size_t mi = 0; mi < ARRAY_LEN(Ms); mi++) {
            for (size_t ni = 0; ni < ARRAY_LEN(Ns); ni++) {
                for (size_t ki = 0; ki < ARRAY_LEN(Ks); ki++) {
                    const int64_t K = Ks[ki];
                    // ldx = K (aligned rows when K % 4 == 0) and K + 3 (strided, misaligned); groups that divide
                    // the 16-byte vector (32) and that do not (7)
                    matmul_case(dtypes[d], Ms[mi], Ns[ni], K, K, 32, ni % 2 == 0, seed++);
                    matmul_case(dtypes[d], Ms[mi], Ns[ni], K, K + 3, 7, ni % 2 == 1, seed++);
                }
            }
        }
        matmul_case(dtypes[d], 130, 257, 768, 768, 64, true, seed++); // cuBLAS-sized, the 130m widths
        matmul_case(dtypes[d], 4, 1000, 1536, 1600, 64, false, seed++);
    }
}

// ---- embed ------------------------------------------------------------------------------------------------------

static void test_embed(void **unused) {
    const int dtypes[] = { MC_DTYPE_F32, MC_DTYPE_F16, MC_DTYPE_BF16, MC_DTYPE_I8 };
    const int64_t Hs[] = { 1, 3, 65, 768 };
    for (size_t d = 0; d < 4; d++) {
        for (size_t hi = 0; hi < ARRAY_LEN(Hs); hi++) {
            mc_test_rng r = { 100 + d * 10 + hi };
            const int64_t V = 37, H = Hs[hi], Bt = 3, T = 5, ldi = 7; // ids rows 7 apart: a strided batch
            void *wdata = NULL;
            float *wscales = NULL;
            mc_weight w = make_weight(&r, dtypes[d], V, H, 7, &wdata, &wscales);
            int32_t ids[3 * 7];
            for (int i = 0; i < 21; i++) {
                ids[i] = (int32_t)(mc_test_rng_u32(&r) % V);
            }
            ids[0] = 0;
            ids[8] = (int32_t)V - 1;
            float *want = alloc_f32(Bt * T * H), *got = alloc_f32(Bt * T * H);
            for (int64_t b = 0; b < Bt; b++) {
                mc_ref_embed(&g_ex, want + b * T * H, &w, ids + b * ldi, T, H);
            }
            mc_weight dw = w;
            dw.data = dev_from(w.data, V * H * mc_dtype_size(dtypes[d]));
            dw.scales = wscales != NULL ? dev_from(wscales, V * ((H + 6) / 7) * 4) : NULL;
            int32_t *dids = dev_from(ids, sizeof(ids));
            float *dout = dev_from(NULL, Bt * T * H * 4);
            expect_ok(g_ops->embed(&g_ex, dout, &dw, dids, ldi, Bt, T, H), "embed");
            dev_to(got, dout, Bt * T * H * 4);
            char label[96];
            snprintf(label, sizeof(label), "embed %s H=%lld", mc_dtype_name((mc_dtype)dtypes[d]), (long long)H);
            check(got, want, Bt * T * H, TOL_EXACT, 2, label);
            dev_free((void *)dw.data);
            dev_free((void *)dw.scales);
            dev_free(dids);
            dev_free(dout);
            free(wdata);
            free(wscales);
            free(want);
            free(got);
        }
    }
}

// ---- rmsnorm ----------------------------------------------------------------------------------------------------

static void test_rmsnorm(void **unused) {
    const int64_t Ms[] = { 1, 3, 17 }, Hs[] = { 1, 3, 17, 63, 65, 768, 1000 };
    for (size_t mi = 0; mi < ARRAY_LEN(Ms); mi++) {
        for (size_t hi = 0; hi < ARRAY_LEN(Hs); hi++) {
            for (int with_add = 0; with_add < 2; with_add++) {
                const int64_t M = Ms[mi], H = Hs[hi];
                mc_test_rng r = { 200 + mi * 100 + hi * 2 + (uint64_t)with_add };
                float *x = alloc_f32(M * H), *add = alloc_f32(M * H), *w = alloc_f32(H);
                float *want = alloc_f32(M * H), *got = alloc_f32(M * H), *got_x = alloc_f32(M * H);
                mc_test_fill(&r, x, M * H, -3.0f, 3.0f);
                mc_test_fill(&r, add, M * H, -3.0f, 3.0f);
                mc_test_fill(&r, w, H, 0.5f, 1.5f);
                float *dx = dev_from(x, M * H * 4), *dadd = dev_from(add, M * H * 4), *dw = dev_from(w, H * 4);
                float *dy = dev_from(NULL, M * H * 4);
                mc_ref_rmsnorm(&g_ex, want, x, with_add ? add : NULL, w, M, H, 1e-5f);
                expect_ok(g_ops->rmsnorm(&g_ex, dy, dx, with_add ? dadd : NULL, dw, M, H, 1e-5f), "rmsnorm");
                dev_to(got, dy, M * H * 4);
                dev_to(got_x, dx, M * H * 4);
                char label[96];
                snprintf(label, sizeof(label), "rmsnorm M=%lld H=%lld add=%d", (long long)M, (long long)H, with_add);
                check(got, want, M * H, TOL_F32, 3, label);
                check(got_x, x, M * H, TOL_EXACT, 2, label); // the residual sum is one f32 add either way
                dev_free(dx);
                dev_free(dadd);
                dev_free(dw);
                dev_free(dy);
                free(x);
                free(add);
                free(w);
                free(want);
                free(got);
                free(got_x);
            }
        }
    }
}

// ---- conv1d -----------------------------------------------------------------------------------------------------

// Bt sequences of L steps from x [Bt·L, ldx] (ldx = 2E + 1: the in_proj layout, odd so rows are misaligned):
// the sequence form against the reference per sequence, then the step form over the same inputs, one position at
// a time from the same starting state, against the sequence form's outputs.
static void conv_case(int64_t Bt, int64_t L, int64_t E, int64_t K, bool bias, uint64_t seed) {
    mc_test_rng r = { seed };
    const int64_t ldx = 2 * E + 1;
    float *x = alloc_f32(Bt * L * ldx), *w = alloc_f32(E * K), *b = alloc_f32(E), *s0 = alloc_f32(Bt * E * K);
    float *want_u = alloc_f32(Bt * L * E), *want_s = alloc_f32(Bt * E * K);
    float *got_u = alloc_f32(Bt * L * E), *got_s = alloc_f32(Bt * E * K);
    mc_test_fill(&r, x, Bt * L * ldx, -2.0f, 2.0f);
    mc_test_fill(&r, w, E * K, -1.0f, 1.0f);
    mc_test_fill(&r, b, E, -0.5f, 0.5f);
    mc_test_fill(&r, s0, Bt * E * K, -2.0f, 2.0f);
    memcpy(want_s, s0, (size_t)(Bt * E * K) * 4);
    for (int64_t q = 0; q < Bt; q++) {
        mc_ref_conv1d(&g_ex, want_u + q * L * E, want_s + q * E * K, x + q * L * ldx, ldx, w, bias ? b : NULL, L, E,
                      K);
    }
    float *dx = dev_from(x, Bt * L * ldx * 4), *dw = dev_from(w, E * K * 4), *db = dev_from(b, E * 4);
    float *ds = dev_from(s0, Bt * E * K * 4), *du = dev_from(NULL, Bt * L * E * 4);
    expect_ok(g_ops->conv1d(&g_ex, du, ds, dx, ldx, dw, bias ? db : NULL, Bt, L, E, K), "conv1d");
    dev_to(got_u, du, Bt * L * E * 4);
    dev_to(got_s, ds, Bt * E * K * 4);
    char label[128];
    snprintf(label, sizeof(label), "conv1d Bt=%lld L=%lld E=%lld K=%lld bias=%d", (long long)Bt, (long long)L,
             (long long)E, (long long)K, bias);
    check(got_u, want_u, Bt * L * E, TOL_F32, 4, label);
    check(got_s, want_s, Bt * E * K, TOL_EXACT, 2, label);
    // Step form: position t of every sequence at once, rows of x gathered into [Bt, ldx].
    float *xt = alloc_f32(Bt * ldx), *ut = alloc_f32(Bt * E), *step_u = alloc_f32(Bt * L * E);
    float *dxt = dev_from(NULL, Bt * ldx * 4), *dut = dev_from(NULL, Bt * E * 4);
    assert_int_equal(g_ops->upload(&g_ex, ds, s0, (size_t)(Bt * E * K) * 4), MC_OK);
    for (int64_t t = 0; t < L; t++) {
        for (int64_t q = 0; q < Bt; q++) {
            memcpy(xt + q * ldx, x + (q * L + t) * ldx, (size_t)ldx * 4);
        }
        assert_int_equal(g_ops->upload(&g_ex, dxt, xt, (size_t)(Bt * ldx) * 4), MC_OK);
        expect_ok(g_ops->conv1d_step(&g_ex, dut, ds, dxt, ldx, dw, bias ? db : NULL, Bt, E, K), "conv1d_step");
        dev_to(ut, dut, Bt * E * 4);
        for (int64_t q = 0; q < Bt; q++) {
            memcpy(step_u + (q * L + t) * E, ut + q * E, (size_t)E * 4);
        }
    }
    dev_to(got_s, ds, Bt * E * K * 4);
    strncat(label, " steps", sizeof(label) - strlen(label) - 1);
    check(step_u, want_u, Bt * L * E, TOL_F32, 4, label);
    check(got_s, want_s, Bt * E * K, TOL_EXACT, 2, label);
    dev_free(dx);
    dev_free(dw);
    dev_free(db);
    dev_free(ds);
    dev_free(du);
    dev_free(dxt);
    dev_free(dut);
    free(x);
    free(w);
    free(b);
    free(s0);
    free(want_u);
    free(want_s);
    free(got_u);
    free(got_s);
    free(xt);
    free(ut);
    free(step_u);
}

static void test_conv1d(void **unused) {
    const int64_t Bts[] = { 1, 3 }, Ls[] = { 1, 2, 3, 5, 17, 130 }, Es[] = { 1, 3, 17, 65, 129 }, Ks[] = { 1, 2, 4 };
    uint64_t seed = 300;
    for (size_t bi = 0; bi < ARRAY_LEN(Bts); bi++) {
        for (size_t li = 0; li < ARRAY_LEN(Ls); li++) {
            for (size_t ei = 0; ei < ARRAY_LEN(Es); ei++) {
                for (size_t ki = 0; ki < ARRAY_LEN(Ks); ki++) {
                    conv_case(Bts[bi], Ls[li], Es[ei], Ks[ki], (seed & 1) == 0, seed);
                    seed++;
                }
            }
        }
    }
}

// ---- selective scan ---------------------------------------------------------------------------------------------

// dt spans −30..+100: mostly where softplus is curved, some far below, some past the threshold 20, and a few
// within 0.01 of it (where a wrong threshold shows).
static float draw_dt(mc_test_rng *r) {
    uint32_t k = mc_test_rng_u32(r) % 10;
    return k < 6 ? mc_test_rng_uniform(r, -6.0f, 3.0f)
           : k < 7 ? mc_test_rng_uniform(r, -30.0f, -6.0f)
           : k < 8 ? mc_test_rng_uniform(r, 19.99f, 20.01f)
                   : mc_test_rng_uniform(r, 15.0f, 100.0f);
}

// Bt sequences of L steps in the forward's layout: q [Bt·L, R + 2N] holds δ, B, C (ldbc = R + 2N), xz
// [Bt·L, 2E + 1] holds x then z (ldz odd: misaligned). The sequence form against the reference per sequence (y and
// the carried h), then the step form position by position against the same outputs.
static void scan_case(int64_t Bt, int64_t L, int64_t E, int64_t N, uint64_t seed) {
    mc_test_rng r = { seed };
    const int64_t R = 3, ldbc = R + 2 * N, ldz = 2 * E + 1, rows = Bt * L;
    float *u = alloc_f32(rows * E), *dt = alloc_f32(rows * E), *dtb = alloc_f32(E), *A = alloc_f32(E * N);
    float *q = alloc_f32(rows * ldbc), *D = alloc_f32(E), *xz = alloc_f32(rows * ldz), *h0 = alloc_f32(Bt * E * N);
    float *want_y = alloc_f32(rows * E), *want_h = alloc_f32(Bt * E * N);
    float *got_y = alloc_f32(rows * E), *got_h = alloc_f32(Bt * E * N);
    mc_test_fill(&r, u, rows * E, -2.0f, 2.0f);
    for (int64_t i = 0; i < rows * E; i++) {
        dt[i] = draw_dt(&r);
    }
    mc_test_fill(&r, dtb, E, -2.0f, 1.0f);
    for (int64_t i = 0; i < E * N; i++) {
        A[i] = -expf(mc_test_rng_uniform(&r, -3.0f, logf((float)N) + 0.5f));
    }
    mc_test_fill(&r, q, rows * ldbc, -1.0f, 1.0f);
    mc_test_fill(&r, D, E, -1.0f, 1.0f);
    mc_test_fill(&r, xz, rows * ldz, -4.0f, 4.0f);
    mc_test_fill(&r, h0, Bt * E * N, -1.0f, 1.0f);
    memcpy(want_h, h0, (size_t)(Bt * E * N) * 4);
    for (int64_t b = 0; b < Bt; b++) {
        mc_ref_selective_scan(&g_ex, want_y + b * L * E, want_h + b * E * N, u + b * L * E, dt + b * L * E, dtb, A,
                              q + b * L * ldbc + R, q + b * L * ldbc + R + N, ldbc, D, xz + b * L * ldz + E, ldz, L,
                              E, N);
    }
    float *du = dev_from(u, rows * E * 4), *ddt = dev_from(dt, rows * E * 4), *ddtb = dev_from(dtb, E * 4);
    float *dA = dev_from(A, E * N * 4), *dq = dev_from(q, rows * ldbc * 4), *dD = dev_from(D, E * 4);
    float *dxz = dev_from(xz, rows * ldz * 4), *dh = dev_from(h0, Bt * E * N * 4), *dy = dev_from(NULL, rows * E * 4);
    expect_ok(g_ops->selective_scan(&g_ex, dy, dh, du, ddt, ddtb, dA, dq + R, dq + R + N, ldbc, dD, dxz + E, ldz, Bt,
                                    L, E, N),
              "selective_scan");
    dev_to(got_y, dy, rows * E * 4);
    dev_to(got_h, dh, Bt * E * N * 4);
    char label[128];
    snprintf(label, sizeof(label), "scan Bt=%lld L=%lld E=%lld N=%lld", (long long)Bt, (long long)L, (long long)E,
             (long long)N);
    check(got_y, want_y, rows * E, TOL_F32, 5, label);
    check(got_h, want_h, Bt * E * N, TOL_F32, 5, label);
    // Step form: position t of every sequence at once (rows gathered as the decode step lays them out).
    float *st_u = alloc_f32(Bt * E), *st_dt = alloc_f32(Bt * E), *st_q = alloc_f32(Bt * ldbc);
    float *st_xz = alloc_f32(Bt * ldz), *st_y = alloc_f32(Bt * E), *step_y = alloc_f32(rows * E);
    float *dsu = dev_from(NULL, Bt * E * 4), *dsdt = dev_from(NULL, Bt * E * 4), *dsq = dev_from(NULL, Bt * ldbc * 4);
    float *dsxz = dev_from(NULL, Bt * ldz * 4), *dsy = dev_from(NULL, Bt * E * 4);
    assert_int_equal(g_ops->upload(&g_ex, dh, h0, (size_t)(Bt * E * N) * 4), MC_OK);
    for (int64_t t = 0; t < L; t++) {
        for (int64_t b = 0; b < Bt; b++) {
            memcpy(st_u + b * E, u + (b * L + t) * E, (size_t)E * 4);
            memcpy(st_dt + b * E, dt + (b * L + t) * E, (size_t)E * 4);
            memcpy(st_q + b * ldbc, q + (b * L + t) * ldbc, (size_t)ldbc * 4);
            memcpy(st_xz + b * ldz, xz + (b * L + t) * ldz, (size_t)ldz * 4);
        }
        assert_int_equal(g_ops->upload(&g_ex, dsu, st_u, (size_t)(Bt * E) * 4), MC_OK);
        assert_int_equal(g_ops->upload(&g_ex, dsdt, st_dt, (size_t)(Bt * E) * 4), MC_OK);
        assert_int_equal(g_ops->upload(&g_ex, dsq, st_q, (size_t)(Bt * ldbc) * 4), MC_OK);
        assert_int_equal(g_ops->upload(&g_ex, dsxz, st_xz, (size_t)(Bt * ldz) * 4), MC_OK);
        expect_ok(g_ops->selective_scan_step(&g_ex, dsy, dh, dsu, dsdt, ddtb, dA, dsq + R, dsq + R + N, ldbc, dD,
                                             dsxz + E, ldz, Bt, E, N),
                  "selective_scan_step");
        dev_to(st_y, dsy, Bt * E * 4);
        for (int64_t b = 0; b < Bt; b++) {
            memcpy(step_y + (b * L + t) * E, st_y + b * E, (size_t)E * 4);
        }
    }
    dev_to(got_h, dh, Bt * E * N * 4);
    strncat(label, " steps", sizeof(label) - strlen(label) - 1);
    check(step_y, want_y, rows * E, TOL_F32, 5, label);
    check(got_h, want_h, Bt * E * N, TOL_F32, 5, label);
    float *bufs[] = { du, ddt, ddtb, dA, dq, dD, dxz, dh, dy, dsu, dsdt, dsq, dsxz, dsy };
    for (size_t i = 0; i < ARRAY_LEN(bufs); i++) {
        dev_free(bufs[i]);
    }
    float *host[] = { u, dt, dtb, A, q, D, xz, h0, want_y, want_h, got_y, got_h, st_u, st_dt, st_q, st_xz, st_y,
                      step_y };
    for (size_t i = 0; i < ARRAY_LEN(host); i++) {
        free(host[i]);
    }
}

// The decode step with dt_proj folded in (selective_scan_step_dt) against its reference twin: every weight dtype
// of dt_proj, ranks below and above the lanes of a channel, states from 1 to 65, rows of q padded.
static void step_dt_case(int dtype, int64_t n_seq, int64_t E, int64_t N, int64_t R, int64_t pad, uint64_t seed) {
    mc_test_rng r = { seed };
    const int64_t ldq = R + 2 * N + pad, ldz = 2 * E + 1, group = 16;
    float *u = alloc_f32(n_seq * E), *q = alloc_f32(n_seq * ldq), *dtb = alloc_f32(E), *A = alloc_f32(E * N);
    float *D = alloc_f32(E), *xz = alloc_f32(n_seq * ldz), *h0 = alloc_f32(n_seq * E * N);
    float *want_y = alloc_f32(n_seq * E), *want_h = alloc_f32(n_seq * E * N);
    float *got_y = alloc_f32(n_seq * E), *got_h = alloc_f32(n_seq * E * N);
    mc_test_fill(&r, u, n_seq * E, -2.0f, 2.0f);
    mc_test_fill(&r, q, n_seq * ldq, -1.0f, 1.0f);
    mc_test_fill(&r, dtb, E, -2.0f, 1.0f);
    for (int64_t i = 0; i < E * N; i++) {
        A[i] = -expf(mc_test_rng_uniform(&r, -3.0f, logf((float)N) + 0.5f));
    }
    mc_test_fill(&r, D, E, -1.0f, 1.0f);
    mc_test_fill(&r, xz, n_seq * ldz, -4.0f, 4.0f);
    mc_test_fill(&r, h0, n_seq * E * N, -1.0f, 1.0f);
    void *wdata = NULL;
    float *wscales = NULL;
    const mc_weight w = make_weight(&r, dtype, E, R, group, &wdata, &wscales);
    memcpy(want_h, h0, (size_t)(n_seq * E * N) * 4);
    assert_int_equal(mc_ref_selective_scan_step_dt(&g_ex, want_y, want_h, u, q, ldq, &w, dtb, A, D, xz + E, ldz,
                                                   n_seq, E, N, R),
                     MC_OK);
    mc_weight dw = w;
    dw.data = dev_from(w.data, E * R * mc_dtype_size(dtype));
    dw.scales = wscales != NULL ? dev_from(wscales, E * ((R + group - 1) / group) * 4) : NULL;
    float *du = dev_from(u, n_seq * E * 4), *dq = dev_from(q, n_seq * ldq * 4), *ddtb = dev_from(dtb, E * 4);
    float *dA = dev_from(A, E * N * 4), *dD = dev_from(D, E * 4), *dxz = dev_from(xz, n_seq * ldz * 4);
    float *dh = dev_from(h0, n_seq * E * N * 4), *dy = dev_from(NULL, n_seq * E * 4);
    expect_ok(g_ops->selective_scan_step_dt(&g_ex, dy, dh, du, dq, ldq, &dw, ddtb, dA, dD, dxz + E, ldz, n_seq, E, N,
                                            R),
              "selective_scan_step_dt");
    dev_to(got_y, dy, n_seq * E * 4);
    dev_to(got_h, dh, n_seq * E * N * 4);
    char label[128];
    snprintf(label, sizeof(label), "scan step_dt %s n_seq=%lld E=%lld N=%lld R=%lld", mc_dtype_name((mc_dtype)dtype),
             (long long)n_seq, (long long)E, (long long)N, (long long)R);
    check(got_y, want_y, n_seq * E, TOL_F32, 5, label);
    check(got_h, want_h, n_seq * E * N, TOL_F32, 5, label);
    void *dev[] = { (void *)dw.data, (void *)dw.scales, du, dq, ddtb, dA, dD, dxz, dh, dy };
    for (size_t i = 0; i < ARRAY_LEN(dev); i++) {
        dev_free(dev[i]);
    }
    float *host[] = { u, q, dtb, A, D, xz, h0, want_y, want_h, got_y, got_h, wscales };
    for (size_t i = 0; i < ARRAY_LEN(host); i++) {
        free(host[i]);
    }
    free(wdata);
}

static void test_scan_step_dt(void **unused) {
    const int dtypes[] = { MC_DTYPE_F32, MC_DTYPE_F16, MC_DTYPE_BF16, MC_DTYPE_I8 };
    const int64_t Ns[] = { 1, 4, 16, 17, 64, 65 }, Rs[] = { 1, 3, 48 }, Es[] = { 1, 17, 130 };
    uint64_t seed = 900;
    for (size_t d = 0; d < ARRAY_LEN(dtypes); d++) {
        for (size_t ni = 0; ni < ARRAY_LEN(Ns); ni++) {
            for (size_t ri = 0; ri < ARRAY_LEN(Rs); ri++) {
                for (size_t ei = 0; ei < ARRAY_LEN(Es); ei++) {
                    step_dt_case(dtypes[d], 1 + (int64_t)(seed % 3), Es[ei], Ns[ni], Rs[ri], 2, seed);
                    seed++;
                }
            }
        }
    }
    // The 130m shape at batch 64 (4 lanes a channel): rows as x_proj writes them (four states a lane as float4s)
    // and padded (one state at a time).
    step_dt_case(MC_DTYPE_BF16, 64, 1536, 16, 48, 0, seed++);
    step_dt_case(MC_DTYPE_BF16, 64, 1536, 16, 48, 2, seed++);
    // A weight that is not [E, R] is refused.
    float buf[4] = { 0 };
    const mc_weight bad = { .data = buf, .dtype = MC_DTYPE_F32, .rows = 2, .cols = 2 };
    assert_int_equal(g_ops->selective_scan_step_dt(&g_ex, buf, buf, buf, buf, 4, &bad, buf, buf, buf, buf, 2, 1, 3,
                                                   1, 2),
                     MC_ERR_INVALID);
}

static void test_selective_scan(void **unused) {
    const int64_t Bts[] = { 1, 3 }, Ls[] = { 1, 3, 17, 33, 65 }, Es[] = { 1, 3, 17, 65, 130 },
                  Ns[] = { 1, 3, 4, 16, 17, 64, 65 };
    uint64_t seed = 500;
    for (size_t bi = 0; bi < ARRAY_LEN(Bts); bi++) {
        for (size_t li = 0; li < ARRAY_LEN(Ls); li++) {
            for (size_t ei = 0; ei < ARRAY_LEN(Es); ei++) {
                for (size_t ni = 0; ni < ARRAY_LEN(Ns); ni++) {
                    scan_case(Bts[bi], Ls[li], Es[ei], Ns[ni], seed++);
                }
            }
        }
    }
    scan_case(2, 300, 1536, 16, seed++); // the 130m width, several time tiles
    scan_case(1, 70, 1536, 16, seed++);  // the lane layouts chosen by Bt·E: 1536 (16 lanes a channel),
    scan_case(9, 40, 1536, 16, seed++);  // 13824 (4 lanes × 4 states)
}

// The sequence form across the parallel scan's boundaries (scan_par.cu: lanes own slices of S = 4 or 8 steps,
// chunks of 128 or 256 steps, blocks of 8 channels): L around a slice, a warp's 32 slices and both chunk lengths,
// E breaking a block of channels, N in both state configurations, 1 to 5 sequences. B and C are columns of a
// padded q [rows, R + 2N + 2]; y and h sit in buffers with a guard tail that must stay untouched. The state is
// carried: the L steps run as two calls (L1 then L − L1, h passed on) against one reference call.
#define GUARD 37
static void scan_split_case(int64_t Bt, int64_t L, int64_t L1, int64_t E, int64_t N, uint64_t seed) {
    mc_test_rng r = { seed };
    const int64_t R = 5, ldbc = R + 2 * N + 2, ldz = 2 * E + 3, rows = Bt * L, S = Bt * E * N;
    float *u = alloc_f32(rows * E), *dt = alloc_f32(rows * E), *dtb = alloc_f32(E), *A = alloc_f32(E * N);
    float *q = alloc_f32(rows * ldbc), *D = alloc_f32(E), *xz = alloc_f32(rows * ldz), *h0 = alloc_f32(S);
    float *want_y = alloc_f32(rows * E + GUARD), *want_h = alloc_f32(S + GUARD);
    float *got_y = alloc_f32(rows * E + GUARD), *got_h = alloc_f32(S + GUARD);
    mc_test_fill(&r, u, rows * E, -2.0f, 2.0f);
    for (int64_t i = 0; i < rows * E; i++) {
        dt[i] = draw_dt(&r);
    }
    mc_test_fill(&r, dtb, E, -2.0f, 1.0f);
    for (int64_t i = 0; i < E * N; i++) {
        A[i] = -expf(mc_test_rng_uniform(&r, -3.0f, logf((float)N) + 0.5f));
    }
    mc_test_fill(&r, q, rows * ldbc, -1.0f, 1.0f);
    mc_test_fill(&r, D, E, -1.0f, 1.0f);
    mc_test_fill(&r, xz, rows * ldz, -4.0f, 4.0f);
    mc_test_fill(&r, h0, S, -1.0f, 1.0f);
    for (int64_t i = 0; i < GUARD; i++) { // the guards: what the device copies start with past the outputs
        want_y[rows * E + i] = want_h[S + i] = 3.5f + (float)i;
    }
    memcpy(want_h, h0, (size_t)S * 4);
    for (int64_t b = 0; b < Bt; b++) {
        mc_ref_selective_scan(&g_ex, want_y + b * L * E, want_h + b * E * N, u + b * L * E, dt + b * L * E, dtb, A,
                              q + b * L * ldbc + R, q + b * L * ldbc + R + N, ldbc, D, xz + b * L * ldz + E, ldz, L,
                              E, N);
    }
    // Device: sequence b's rows split at L1; each call takes Bt sequences of its length, so the rows are regathered.
    const int64_t L2 = L - L1;
    float *dh = dev_from(want_h, (S + GUARD) * 4); // guards copied; the state is set below
    assert_int_equal(g_ops->upload(&g_ex, dh, h0, (size_t)S * 4), MC_OK);
    float *dtb_d = dev_from(dtb, E * 4), *dA = dev_from(A, E * N * 4), *dD = dev_from(D, E * 4);
    for (int part = 0; part < 2; part++) {
        const int64_t Lp = part == 0 ? L1 : L2, off = part == 0 ? 0 : L1, rp = Bt * Lp;
        float *pu = alloc_f32(rp * E), *pdt = alloc_f32(rp * E), *pq = alloc_f32(rp * ldbc), *pxz = alloc_f32(rp * ldz);
        float *py = alloc_f32(rp * E + GUARD);
        for (int64_t b = 0; b < Bt; b++) {
            for (int64_t t = 0; t < Lp; t++) {
                const int64_t src = b * L + off + t, dst = b * Lp + t;
                memcpy(pu + dst * E, u + src * E, (size_t)E * 4);
                memcpy(pdt + dst * E, dt + src * E, (size_t)E * 4);
                memcpy(pq + dst * ldbc, q + src * ldbc, (size_t)ldbc * 4);
                memcpy(pxz + dst * ldz, xz + src * ldz, (size_t)ldz * 4);
            }
        }
        for (int64_t i = 0; i < GUARD; i++) {
            py[rp * E + i] = 3.5f + (float)i;
        }
        float *du = dev_from(pu, rp * E * 4), *ddt = dev_from(pdt, rp * E * 4), *dq = dev_from(pq, rp * ldbc * 4);
        float *dxz = dev_from(pxz, rp * ldz * 4), *dy = dev_from(py, (rp * E + GUARD) * 4);
        expect_ok(g_ops->selective_scan(&g_ex, dy, dh, du, ddt, dtb_d, dA, dq + R, dq + R + N, ldbc, dD, dxz + E, ldz,
                                        Bt, Lp, E, N),
                  "selective_scan");
        dev_to(py, dy, (rp * E + GUARD) * 4);
        for (int64_t b = 0; b < Bt; b++) {
            memcpy(got_y + (b * L + off) * E, py + b * Lp * E, (size_t)(Lp * E) * 4);
        }
        for (int64_t i = 0; i < GUARD; i++) {
            if (py[rp * E + i] != 3.5f + (float)i) {
                print_error("selective_scan Bt=%lld L=%lld E=%lld N=%lld: y guard %lld changed to %g\n", (long long)Bt,
                            (long long)Lp, (long long)E, (long long)N, (long long)i, (double)py[rp * E + i]);
                fail();
            }
        }
        float *bufs[] = { du, ddt, dq, dxz, dy };
        for (size_t i = 0; i < ARRAY_LEN(bufs); i++) {
            dev_free(bufs[i]);
        }
        free(pu);
        free(pdt);
        free(pq);
        free(pxz);
        free(py);
    }
    dev_to(got_h, dh, (S + GUARD) * 4);
    char label[160];
    snprintf(label, sizeof(label), "scan (split) Bt=%lld L=%lld+%lld E=%lld N=%lld", (long long)Bt, (long long)L1,
             (long long)L2, (long long)E, (long long)N);
    check(got_y, want_y, rows * E, TOL_F32, 5, label);
    check(got_h, want_h, S + GUARD, TOL_F32, 5, label); // the guard compares equal only if untouched
    for (int64_t i = 0; i < GUARD; i++) {
        assert_true(got_h[S + i] == 3.5f + (float)i);
    }
    float *dbufs[] = { dh, dtb_d, dA, dD };
    for (size_t i = 0; i < ARRAY_LEN(dbufs); i++) {
        dev_free(dbufs[i]);
    }
    float *host[] = { u, dt, dtb, A, q, D, xz, h0, want_y, want_h, got_y, got_h };
    for (size_t i = 0; i < ARRAY_LEN(host); i++) {
        free(host[i]);
    }
}

static void test_selective_scan_chunks(void **unused) {
    // Slices of 4 and 8 steps, 32 of them a chunk (128 or 256 steps): L on each side of those; E around 8 channels a
    // block; N in both configurations (≤ 16, ≤ 64) and just past 16.
    const int64_t Ls[] = { 1, 2, 31, 32, 33, 127, 128, 129, 255, 256, 257, 261, 517 }, Es[] = { 1, 7, 9, 33 },
                  Ns[] = { 1, 3, 16, 17, 64 };
    uint64_t seed = 7000;
    for (size_t li = 0; li < ARRAY_LEN(Ls); li++) {
        for (size_t ei = 0; ei < ARRAY_LEN(Es); ei++) {
            for (size_t ni = 0; ni < ARRAY_LEN(Ns); ni++) {
                const int64_t Bt = 1 + (int64_t)(seed % 5), L = Ls[li];
                // The split point: none (one call, L1 = L), or inside a slice, at a slice or chunk edge, or past one.
                const int64_t splits[] = { L, L / 2, L > 128 ? 128 : L, L > 33 ? 33 : L / 3 };
                const int64_t L1 = splits[seed % 4] > 0 ? splits[seed % 4] : L;
                scan_split_case(Bt, L, L1, Es[ei], Ns[ni], seed);
                seed++;
            }
        }
    }
    scan_split_case(2, 261, 261, 1537, 16, seed++); // the 130m width plus one: a last block of 1 channel
    scan_split_case(3, 600, 257, 1536, 16, seed++);
    scan_split_case(1, 300, 129, 1537, 17, seed++); // N > 16: the 64-state configuration
}

static void test_errors(void **unused) {
    // A failing allocation reports through the context's sink with CUDA's words, and leaves *out NULL.
    void *p = (void *)1;
    assert_int_equal(g_ops->alloc(&g_ex, &p, (size_t)1 << 62), MC_ERR_NOMEM);
    assert_null(p);
    assert_non_null(strstr(g_err.msg, "cannot allocate"));
    // The context is still usable afterwards, and the next launch does not report the old failure (the forward
    // retries a failed scratch allocation with shorter chunks).
    void *q = NULL;
    assert_int_equal(g_ops->alloc(&g_ex, &q, 64), MC_OK);
    float *f = (float *)q;
    assert_int_equal(g_ops->rmsnorm(&g_ex, f, f + 4, NULL, f + 8, 1, 4, 1e-5f), MC_OK);
    assert_int_equal(g_ops->sync(&g_ex), MC_OK);
    dev_free(q);
    assert_false(g_ops->host_memory);
    assert_string_equal(g_ops->name, "cuda");
}

static int setup(void **unused) {
    return dev_setup();
}

static int teardown(void **unused) {
    static const char *const classes[] = { "f32 matmul", "16-bit matmul (cuBLAS, x split)", "exact ops",
                                           "rmsnorm", "conv1d", "selective scan" };
    dev_print_worst(classes, g_worst, ARRAY_LEN(classes));
    dev_teardown();
    return 0;
}

// usage: test_cuda_kernels [PATTERN]   (only the tests whose names match, e.g. under compute-sanitizer: "*_step*")
int main(int argc, char **argv) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul),  cmocka_unit_test(test_scan_step_dt),   cmocka_unit_test(test_embed),
        cmocka_unit_test(test_rmsnorm), cmocka_unit_test(test_conv1d),         cmocka_unit_test(test_selective_scan),
        cmocka_unit_test(test_selective_scan_chunks), cmocka_unit_test(test_errors),
    };
    if (argc > 1) {
        cmocka_set_test_filter(argv[1]);
    }
    return cmocka_run_group_tests(tests, setup, teardown);
}
