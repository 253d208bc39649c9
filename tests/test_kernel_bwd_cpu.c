// Parity of the cpu backend's backward ops (src/kernels/cpu/backward.c) with their reference twins
// (src/kernels/ref/backward.c): every per-ISA variant this CPU runs (skipped with a note otherwise), 1 and 2 threads,
// sizes that break vector blocks and thread splits, strided rows, accumulation, aliasing, ignored targets, and the
// quantized weights a frozen LoRA base may have.
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
#include "kernels/ref/backward.h"

// Fast vs reference, f32 both: sgemm's blocked f32 sums against the reference's double sums, the polynomial exp
// (≤ 2 ulp against libm), FMA, and f32 partial sums (per thread, per 16 lanes) where the reference sums in double.
// Measured worst over every case here: see the per-op notes; none above 2e-6.
#define TOL_F32 1e-5
// The loss of cross_entropy: the reference's double sum of exact exponentials against f32 exponentials summed in
// blocks (measured worst 3e-9 relative).
#define TOL_LOSS 1e-6
// embed_bwd adds the same f32 values in the same order as the reference.
#define TOL_EXACT 0.0
// Padding columns between rows (ld > width) must come back unchanged.
#define SENTINEL 7.25f

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static const char *const isa_names[MC_CPU_ISA_COUNT] = { "c", "avx2", "avx512" };
static const int thread_counts[] = { 1, 2 };

// ---- helpers ----------------------------------------------------------------------------------------------------

// Every allocation of a case, freed together.
typedef struct pool {
    void *p[128];
    int n;
} pool;

static void *pool_alloc(pool *pl, size_t bytes) {
    assert_true(pl->n < (int)ARRAY_LEN(pl->p));
    void *p = calloc(1, bytes > 0 ? bytes : 1);
    assert_non_null(p);
    pl->p[pl->n++] = p;
    return p;
}

static void pool_free(pool *pl) {
    for (int i = 0; i < pl->n; i++) {
        free(pl->p[i]);
    }
    pl->n = 0;
}

static float *new_f32(pool *pl, int64_t n, float v) {
    float *p = pool_alloc(pl, (size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) {
        p[i] = v;
    }
    return p;
}

static float *new_rand(pool *pl, mc_test_rng *r, int64_t n, float lo, float hi) {
    float *p = new_f32(pl, n, 0.0f);
    for (int64_t i = 0; i < n; i++) {
        p[i] = mc_test_rng_uniform(r, lo, hi);
    }
    return p;
}

static float *copy_f32(pool *pl, const float *src, int64_t n) {
    float *p = new_f32(pl, n, 0.0f);
    memcpy(p, src, (size_t)n * sizeof(float));
    return p;
}

// Buffers of rows ld apart whose columns [c0, c1) are outputs: compared whole (outputs by tolerance), then every
// padding column must be exactly as it was (equal to the reference's untouched copy).
static bool check_cols(const float *got, const float *want, int64_t rows, int64_t ld, int64_t c0, int64_t c1,
                       double tol, const char *label) {
    bool ok = mc_check_close(got, want, rows * ld, tol, label);
    for (int64_t i = 0; i < rows && ok; i++) {
        for (int64_t j = 0; j < ld; j++) {
            if ((j < c0 || j >= c1) && memcmp(&got[i * ld + j], &want[i * ld + j], sizeof(float)) != 0) {
                printf("%s: padding [%lld, %lld] changed to %g\n", label, (long long)i, (long long)j,
                       (double)got[i * ld + j]);
                ok = false;
                break;
            }
        }
    }
    return ok;
}

static bool variant_note(const void *fn, const char *op, int isa) {
    if (fn == NULL) {
        printf("note: %s[%s] not available on this CPU/build, skipped\n", op, isa_names[isa]);
        return false;
    }
    return true;
}

// The table of isa or NULL (this CPU lacks it).
static const mc_cpu_kernels *table(int isa) {
    return mc_cpu_kernels_get(isa);
}

// ---- matmul -----------------------------------------------------------------------------------------------------

static mc_weight weight_new(pool *pl, mc_test_rng *r, int dtype, int64_t N, int64_t K, int64_t group) {
    mc_weight w = { .dtype = dtype, .rows = N, .cols = K, .group = group };
    if (dtype == MC_DTYPE_F32) {
        w.data = new_rand(pl, r, N * K, -1.0f, 1.0f);
    } else if (dtype == MC_DTYPE_I8) {
        int8_t *q = pool_alloc(pl, (size_t)(N * K));
        for (int64_t i = 0; i < N * K; i++) {
            q[i] = (int8_t)(mc_test_rng_u32(r) & 0xff);
        }
        w.data = q;
        w.scales = new_rand(pl, r, N * ((K + group - 1) / group), 0.005f, 0.02f);
    } else {
        uint16_t *h = pool_alloc(pl, (size_t)(N * K) * sizeof(uint16_t));
        for (int64_t i = 0; i < N * K; i++) {
            float v = mc_test_rng_uniform(r, -1.0f, 1.0f);
            h[i] = dtype == MC_DTYPE_BF16 ? mc_f32_to_bf16(v) : mc_f32_to_f16(v);
        }
        w.data = h;
    }
    return w;
}

// dx = dy·W written and accumulated into rows ldx = K + 3 apart; dW (+ dbias) accumulated onto non-zero values from
// x rows ldx apart. Non-f32 weights only reach matmul_dx (dw is always f32).
static bool matmul_case(int dtype, int64_t M, int64_t N, int64_t K, uint64_t seed) {
    static const char *names[] = { "f32", "f16", "bf16", "int8" };
    pool pl = { 0 };
    mc_test_rng r = { seed };
    const int64_t ldx = K + 3;
    const mc_weight w = weight_new(&pl, &r, dtype, N, K, 32);
    const float *dy = new_rand(&pl, &r, M * N, -1.0f, 1.0f), *x = new_rand(&pl, &r, M * ldx, -1.0f, 1.0f);
    const float *dx0 = new_rand(&pl, &r, M * ldx, -1.0f, 1.0f); // what accumulate adds onto (padding included)
    const float *dw0 = new_rand(&pl, &r, N * K, -1.0f, 1.0f), *db0 = new_rand(&pl, &r, N, -1.0f, 1.0f);
    float *want = new_f32(&pl, M * ldx, 0), *got = new_f32(&pl, M * ldx, 0);
    float *wdw = new_f32(&pl, N * K, 0), *gdw = new_f32(&pl, N * K, 0), *wdb = new_f32(&pl, N, 0),
          *gdb = new_f32(&pl, N, 0);
    bool ok = true;
    for (size_t ti = 0; ti < ARRAY_LEN(thread_counts); ti++) {
        const mc_exec ex = { .n_threads = thread_counts[ti] };
        char label[160];
        for (int acc = 0; acc < 2; acc++) {
            memcpy(want, dx0, (size_t)(M * ldx) * sizeof(float));
            memcpy(got, dx0, (size_t)(M * ldx) * sizeof(float));
            assert_int_equal(mc_ref_matmul_dx(&ex, want, ldx, dy, &w, M, N, K, acc), MC_OK);
            assert_int_equal(mc_cpu_matmul_dx(&ex, got, ldx, dy, &w, M, N, K, acc), MC_OK);
            snprintf(label, sizeof(label), "matmul_dx %s M=%lld N=%lld K=%lld acc=%d threads=%d", names[dtype],
                     (long long)M, (long long)N, (long long)K, acc, ex.n_threads);
            ok &= check_cols(got, want, M, ldx, 0, K, TOL_F32, label);
        }
        if (dtype != MC_DTYPE_F32) {
            continue;
        }
        for (int bias = 0; bias < 2; bias++) {
            memcpy(wdw, dw0, (size_t)(N * K) * sizeof(float));
            memcpy(gdw, dw0, (size_t)(N * K) * sizeof(float));
            memcpy(wdb, db0, (size_t)N * sizeof(float));
            memcpy(gdb, db0, (size_t)N * sizeof(float));
            assert_int_equal(mc_ref_matmul_dw(&ex, wdw, bias ? wdb : NULL, dy, x, ldx, M, N, K), MC_OK);
            assert_int_equal(mc_cpu_matmul_dw(&ex, gdw, bias ? gdb : NULL, dy, x, ldx, M, N, K), MC_OK);
            snprintf(label, sizeof(label), "matmul_dw M=%lld N=%lld K=%lld bias=%d threads=%d dW", (long long)M,
                     (long long)N, (long long)K, bias, ex.n_threads);
            ok &= mc_check_close(gdw, wdw, N * K, TOL_F32, label);
            label[strlen(label) - 2] = 'b';
            ok &= mc_check_close(gdb, wdb, N, TOL_F32, label);
        }
    }
    pool_free(&pl);
    return ok;
}

static void test_matmul(void **unused) {
    const int64_t sizes[] = { 1, 3, 17, 63, 65 };
    bool ok = true;
    uint64_t seed = 1;
    for (int dtype = MC_DTYPE_F32; dtype <= MC_DTYPE_I8; dtype++) {
        for (size_t a = 0; a < ARRAY_LEN(sizes); a++) {
            for (size_t b = 0; b < ARRAY_LEN(sizes); b++) {
                for (size_t c = 0; c < ARRAY_LEN(sizes); c++) {
                    ok &= matmul_case(dtype, sizes[a], sizes[b], sizes[c], seed++);
                }
            }
        }
    }
    // Shapes that take each thread split: rows (M ≥ 64 per thread), columns (lm_head's few rows, many outputs),
    // a long inner sum, and non-f32 weights in several widened panels (N·K > 2^20).
    const int64_t big[][3] = { { 300, 70, 129 }, { 17, 2000, 130 }, { 5, 130, 3000 }, { 3, 70001, 17 } };
    for (size_t i = 0; i < ARRAY_LEN(big); i++) {
        for (int dtype = MC_DTYPE_F32; dtype <= MC_DTYPE_I8; dtype++) {
            ok &= matmul_case(dtype, big[i][0], big[i][1], big[i][2], seed++);
        }
    }
    assert_true(ok);
}

// ---- embedding --------------------------------------------------------------------------------------------------

static void test_embed(void **unused) {
    const int64_t ns[] = { 1, 3, 17, 65 }, Hs[] = { 1, 3, 17, 63, 65, 200 };
    bool ok = true;
    uint64_t seed = 100;
    for (size_t a = 0; a < ARRAY_LEN(ns); a++) {
        for (size_t b = 0; b < ARRAY_LEN(Hs); b++) {
            pool pl = { 0 };
            mc_test_rng r = { seed++ };
            const int64_t n = ns[a], H = Hs[b], V = 7; // V < n: ids repeat
            int32_t *ids = pool_alloc(&pl, (size_t)n * sizeof(int32_t));
            for (int64_t i = 0; i < n; i++) {
                ids[i] = (int32_t)(mc_test_rng_u32(&r) % V);
            }
            const float *dout = new_rand(&pl, &r, n * H, -1.0f, 1.0f), *dw0 = new_rand(&pl, &r, V * H, -1.0f, 1.0f);
            float *want = copy_f32(&pl, dw0, V * H), *got = new_f32(&pl, V * H, 0);
            const mc_exec ex1 = { .n_threads = 1 };
            assert_int_equal(mc_ref_embed_bwd(&ex1, want, dout, ids, n, V, H), MC_OK);
            for (size_t ti = 0; ti < ARRAY_LEN(thread_counts); ti++) {
                const mc_exec ex = { .n_threads = thread_counts[ti] };
                memcpy(got, dw0, (size_t)(V * H) * sizeof(float));
                assert_int_equal(mc_cpu_embed_bwd(&ex, got, dout, ids, n, V, H), MC_OK);
                char label[96];
                snprintf(label, sizeof(label), "embed_bwd n=%lld H=%lld threads=%d", (long long)n, (long long)H,
                         ex.n_threads);
                ok &= mc_check_close(got, want, V * H, TOL_EXACT, label);
            }
            pool_free(&pl);
        }
    }
    assert_true(ok);
}

// ---- rmsnorm ----------------------------------------------------------------------------------------------------

static void test_rmsnorm(void **unused) {
    const int64_t Ms[] = { 1, 3, 17, 65 }, Hs[] = { 1, 3, 17, 63, 65, 768 };
    bool ok = true;
    uint64_t seed = 200;
    for (size_t a = 0; a < ARRAY_LEN(Ms); a++) {
        for (size_t b = 0; b < ARRAY_LEN(Hs); b++) {
            pool pl = { 0 };
            mc_test_rng r = { seed++ };
            const int64_t M = Ms[a], H = Hs[b];
            const float *x = new_rand(&pl, &r, M * H, -3.0f, 3.0f), *dy = new_rand(&pl, &r, M * H, -1.0f, 1.0f);
            const float *w = new_rand(&pl, &r, H, 0.5f, 1.5f), *dx0 = new_rand(&pl, &r, M * H, -1.0f, 1.0f);
            const float *dw0 = new_rand(&pl, &r, H, -1.0f, 1.0f);
            float *wdx = copy_f32(&pl, dx0, M * H), *wdw = copy_f32(&pl, dw0, H);
            float *gdx = new_f32(&pl, M * H, 0), *gdw = new_f32(&pl, H, 0);
            const mc_exec ex1 = { .n_threads = 1 };
            assert_int_equal(mc_ref_rmsnorm_bwd(&ex1, wdx, wdw, dy, x, w, M, H, 1e-5f), MC_OK);
            for (size_t ti = 0; ti < ARRAY_LEN(thread_counts); ti++) {
                const mc_exec ex = { .n_threads = thread_counts[ti] };
                memcpy(gdx, dx0, (size_t)(M * H) * sizeof(float));
                memcpy(gdw, dw0, (size_t)H * sizeof(float));
                assert_int_equal(mc_cpu_rmsnorm_bwd(&ex, gdx, gdw, dy, x, w, M, H, 1e-5f), MC_OK);
                char label[96];
                snprintf(label, sizeof(label), "rmsnorm_bwd M=%lld H=%lld threads=%d dx", (long long)M, (long long)H,
                         ex.n_threads);
                ok &= mc_check_close(gdx, wdx, M * H, TOL_F32, label);
                label[strlen(label) - 1] = 'w';
                ok &= mc_check_close(gdw, wdw, H, TOL_F32, label);
            }
            pool_free(&pl);
        }
    }
    assert_true(ok);
}

// ---- conv1d -----------------------------------------------------------------------------------------------------

typedef struct conv_case {
    int64_t Bt, L, E, K;
    bool bias, final_grad, alias, want_state;
} conv_case;

static bool conv_run(const conv_case *cc, uint64_t seed) {
    const int64_t Bt = cc->Bt, L = cc->L, E = cc->E, K = cc->K, ldx = 2 * E + 1, rows = Bt * L, S = Bt * E * K;
    pool pl = { 0 };
    mc_test_rng r = { seed };
    const float *x = new_rand(&pl, &r, rows * ldx, -3.0f, 3.0f), *state0 = new_rand(&pl, &r, S, -3.0f, 3.0f);
    const float *w = new_rand(&pl, &r, E * K, -1.0f, 1.0f), *b = cc->bias ? new_rand(&pl, &r, E, -1.0f, 1.0f) : NULL;
    const float *du = new_rand(&pl, &r, rows * E, -1.0f, 1.0f), *fin = new_rand(&pl, &r, S, -1.0f, 1.0f);
    const float *dw0 = new_rand(&pl, &r, E * K, -1.0f, 1.0f), *db0 = new_rand(&pl, &r, E, -1.0f, 1.0f);
    // Reference outputs: dx rows ldx apart (padding SENTINEL), dstate0 written (into the final gradient's buffer when
    // aliased).
    float *wdx = new_f32(&pl, rows * ldx, SENTINEL), *wdw = copy_f32(&pl, dw0, E * K), *wdb = copy_f32(&pl, db0, E);
    float *wfin = copy_f32(&pl, fin, S), *ws0 = cc->alias ? wfin : new_f32(&pl, S, NAN);
    const mc_exec ex1 = { .n_threads = 1 };
    assert_int_equal(mc_ref_conv1d_bwd(&ex1, wdx, wdw, cc->bias ? wdb : NULL, cc->want_state ? ws0 : NULL, du,
                                       cc->final_grad ? wfin : NULL, x, ldx, state0, w, b, Bt, L, E, K),
                     MC_OK);
    float *gdx = new_f32(&pl, rows * ldx, 0), *gdw = new_f32(&pl, E * K, 0), *gdb = new_f32(&pl, E, 0);
    float *gfin = new_f32(&pl, S, 0), *gs0 = cc->alias ? gfin : new_f32(&pl, S, 0);
    bool ok = true;
    for (int isa = 0; isa < MC_CPU_ISA_COUNT; isa++) {
        if (table(isa) == NULL) {
            continue;
        }
        for (size_t ti = 0; ti < ARRAY_LEN(thread_counts); ti++) {
            const mc_exec ex = { .n_threads = thread_counts[ti] };
            for (int64_t i = 0; i < rows * ldx; i++) {
                gdx[i] = SENTINEL;
            }
            memcpy(gdw, dw0, (size_t)(E * K) * sizeof(float));
            memcpy(gdb, db0, (size_t)E * sizeof(float));
            memcpy(gfin, fin, (size_t)S * sizeof(float));
            if (!cc->alias) {
                for (int64_t i = 0; i < S; i++) {
                    gs0[i] = NAN;
                }
            }
            assert_int_equal(table(isa)->conv1d_bwd(&ex, gdx, gdw, cc->bias ? gdb : NULL, cc->want_state ? gs0 : NULL,
                                                    du, cc->final_grad ? gfin : NULL, x, ldx, state0, w, b, Bt, L, E,
                                                    K),
                             MC_OK);
            char label[192];
            snprintf(label, sizeof(label),
                     "conv1d_bwd[%s] Bt=%lld L=%lld E=%lld K=%lld bias=%d final=%d alias=%d threads=%d dx",
                     isa_names[isa], (long long)Bt, (long long)L, (long long)E, (long long)K, cc->bias, cc->final_grad,
                     cc->alias, ex.n_threads);
            const size_t end = strlen(label);
            ok &= check_cols(gdx, wdx, rows, ldx, 0, E, TOL_F32, label);
            memcpy(label + end - 2, "dw", 3);
            ok &= mc_check_close(gdw, wdw, E * K, TOL_F32, label);
            memcpy(label + end - 2, "db", 3);
            ok &= mc_check_close(gdb, wdb, E, TOL_F32, label);
            if (cc->want_state) {
                memcpy(label + end - 2, "ds", 3);
                ok &= mc_check_close(gs0, ws0, S, TOL_F32, label);
            }
        }
    }
    pool_free(&pl);
    return ok;
}

static void test_conv1d(void **unused) {
    for (int isa = 0; isa < MC_CPU_ISA_COUNT; isa++) {
        variant_note(table(isa), "conv1d_bwd", isa);
    }
    const int64_t Bts[] = { 1, 3 }, Ls[] = { 1, 2, 5, 17, 130 }, Es[] = { 1, 3, 17, 63, 65 }, Ks[] = { 1, 3, 4 };
    bool ok = true;
    uint64_t seed = 300;
    for (size_t a = 0; a < ARRAY_LEN(Bts); a++) {
        for (size_t b = 0; b < ARRAY_LEN(Ls); b++) {
            for (size_t c = 0; c < ARRAY_LEN(Es); c++) {
                for (size_t d = 0; d < ARRAY_LEN(Ks); d++) {
                    const int v = (int)(seed % 4); // cycle through bias / final gradient / alias / no dstate0
                    const conv_case cc = { Bts[a], Ls[b], Es[c], Ks[d], v != 1, v != 2, v == 3, v != 2 };
                    ok &= conv_run(&cc, seed++);
                }
            }
        }
    }
    assert_true(ok);
}

// ---- selective scan ---------------------------------------------------------------------------------------------

typedef struct scan_in {
    int64_t Bt, L, E, N, R, ldbc, ldz;
    float *u, *dt, *z, *q, *dt_bias, *A, *D, *h0, *dy, *dhT; // q [rows, R + 2N + 1]: δ, B, C, one pad column
} scan_in;

typedef struct scan_out { // everything selective_scan_bwd writes or adds to
    float *du, *ddt, *dz, *dq, *dA, *dD, *dbias, *dh0, *dhT;
} scan_out;

// dt spans the softplus curve, the threshold 20 (kept 1e-3 away), far above it (expf(v) overflows) and far below;
// gates reach silu(20) and silu(−100).
static scan_in scan_inputs(pool *pl, int64_t Bt, int64_t L, int64_t E, int64_t N, bool with_h0, bool with_dhT,
                           uint64_t seed) {
    mc_test_rng r = { seed };
    const int64_t rows = Bt * L;
    scan_in c = { .Bt = Bt, .L = L, .E = E, .N = N, .R = 3 };
    c.ldbc = c.R + 2 * N + 1;
    c.ldz = 2 * E + 1;
    c.u = new_rand(pl, &r, rows * E, -2.0f, 2.0f);
    c.z = new_rand(pl, &r, rows * c.ldz, -4.0f, 4.0f);
    for (int64_t t = 0; t < rows; t += 5) {
        c.z[t * c.ldz + E + t % E] = t % 2 == 0 ? 20.0f : -100.0f;
    }
    c.q = new_rand(pl, &r, rows * c.ldbc, -1.0f, 1.0f);
    c.dt_bias = new_rand(pl, &r, E, -2.0f, 1.0f);
    c.dt = new_f32(pl, rows * E, 0.0f);
    for (int64_t i = 0; i < rows * E; i++) {
        const uint32_t k = mc_test_rng_u32(&r) % 10;
        float v = k < 7 ? mc_test_rng_uniform(&r, -5.0f, 2.5f) : k < 8 ? mc_test_rng_uniform(&r, 19.0f, 21.0f) : k < 9 ? 95.0f : -30.0f;
        v = fabsf(v - 20.0f) < 1e-3f ? 20.01f : v;
        c.dt[i] = v - c.dt_bias[i % E];
    }
    c.A = new_f32(pl, E * N, 0.0f);
    for (int64_t i = 0; i < E * N; i++) {
        c.A[i] = -expf(mc_test_rng_uniform(&r, -2.0f, logf((float)N) + 0.5f));
    }
    c.D = new_rand(pl, &r, E, -1.0f, 1.0f);
    c.h0 = with_h0 ? new_rand(pl, &r, Bt * E * N, -1.0f, 1.0f) : NULL;
    c.dy = new_rand(pl, &r, rows * E, -1.0f, 1.0f);
    c.dhT = with_dhT ? new_rand(pl, &r, Bt * E * N, -1.0f, 1.0f) : NULL;
    return c;
}

// Written outputs start NaN (padding columns SENTINEL) so anything left unwritten fails; accumulators start at
// non-zero values. dhT is a copy of the final state's gradient, which dh0 overwrites when the two alias.
static scan_out scan_out_new(pool *pl, const scan_in *c) {
    const int64_t rows = c->Bt * c->L, S = c->Bt * c->E * c->N;
    scan_out o = { .du = new_f32(pl, rows * c->E, NAN),
                   .ddt = new_f32(pl, rows * c->E, NAN),
                   .dz = new_f32(pl, rows * c->ldz, SENTINEL),
                   .dq = new_f32(pl, rows * c->ldbc, SENTINEL),
                   .dA = new_f32(pl, c->E * c->N, 0.5f),
                   .dD = new_f32(pl, c->E, -0.25f),
                   .dbias = new_f32(pl, c->E, 0.125f),
                   .dh0 = new_f32(pl, S, NAN),
                   .dhT = c->dhT != NULL ? copy_f32(pl, c->dhT, S) : NULL };
    for (int64_t i = 0; i < rows; i++) {
        for (int64_t e = c->E; e < 2 * c->E; e++) { // dz is the z half of a [rows, 2E + 1] buffer
            o.dz[i * c->ldz + e] = NAN;
        }
        for (int64_t n = c->R; n < c->R + 2 * c->N; n++) { // dB and dC columns of q's layout
            o.dq[i * c->ldbc + n] = NAN;
        }
    }
    return o;
}

typedef struct scan_mode {
    bool dh0, alias; // ask for dh0; write it over dh_final's buffer
} scan_mode;

static mc_status scan_call(mc_cpu_selective_scan_bwd_fn f, const mc_exec *ex, const scan_in *c, const scan_out *o,
                           scan_mode mode) {
    float *dh0 = !mode.dh0 ? NULL : mode.alias && o->dhT != NULL ? o->dhT : o->dh0;
    const int64_t R = c->R, N = c->N, E = c->E;
    return f(ex, o->du, o->ddt, o->dz + E, o->dq + R, o->dq + R + N, o->dA, o->dD, o->dbias, dh0, c->dy, o->dhT, c->u,
             c->dt, c->dt_bias, c->A, c->q + R, c->q + R + N, c->ldbc, c->D, c->z + E, c->ldz, c->h0, c->Bt, c->L, E,
             N);
}

static bool scan_compare(const scan_in *c, const scan_out *got, const scan_out *want, scan_mode mode,
                         const char *label) {
    const int64_t rows = c->Bt * c->L, E = c->E, N = c->N, S = c->Bt * E * N;

    const struct {
        const char *name;
        const float *g, *w;
        int64_t n;
    } flat[] = { { "du", got->du, want->du, rows * E },   { "ddt", got->ddt, want->ddt, rows * E },
                 { "dA", got->dA, want->dA, E * N },      { "dD", got->dD, want->dD, E },
                 { "dbias", got->dbias, want->dbias, E }, { "dh0", got->dh0, want->dh0, S },
                 { "dhT", got->dhT, want->dhT, S } };

    bool ok = true;
    char l[224];
    for (size_t i = 0; i < ARRAY_LEN(flat); i++) {
        if (flat[i].g != NULL) {
            snprintf(l, sizeof(l), "%s %s", label, flat[i].name);
            ok &= mc_check_close(flat[i].g, flat[i].w, flat[i].n, TOL_F32, l);
        }
    }
    snprintf(l, sizeof(l), "%s dz", label);
    ok &= check_cols(got->dz, want->dz, rows, c->ldz, E, 2 * E, TOL_F32, l);
    snprintf(l, sizeof(l), "%s dB,dC", label);
    ok &= check_cols(got->dq, want->dq, rows, c->ldbc, c->R, c->R + 2 * N, TOL_F32, l);
    (void)mode;
    return ok;
}

static bool scan_case(int64_t Bt, int64_t L, int64_t E, int64_t N, bool with_h0, bool with_dhT, scan_mode mode,
                      uint64_t seed) {
    pool pl = { 0 };
    const scan_in c = scan_inputs(&pl, Bt, L, E, N, with_h0, with_dhT, seed);
    const scan_out want = scan_out_new(&pl, &c);
    const mc_exec ex1 = { .n_threads = 1 };
    assert_int_equal(scan_call(mc_ref_selective_scan_bwd, &ex1, &c, &want, mode), MC_OK);
    bool ok = true;
    mc_cpu_selective_scan_bwd_fn done[MC_CPU_ISA_COUNT] = { 0 };
    for (int isa = 0; isa < MC_CPU_ISA_COUNT; isa++) {
        if (table(isa) == NULL || table(isa)->selective_scan_bwd == done[isa > 0 ? isa - 1 : 0]) {
            continue; // a table that runs the previous table's kernel: tested once
        }
        done[isa] = table(isa)->selective_scan_bwd;
        for (size_t ti = 0; ti < ARRAY_LEN(thread_counts); ti++) {
            const mc_exec ex = { .n_threads = thread_counts[ti] };
            const scan_out got = scan_out_new(&pl, &c);
            assert_int_equal(scan_call(table(isa)->selective_scan_bwd, &ex, &c, &got, mode), MC_OK);
            char label[192];
            snprintf(
                label, sizeof(label),
                "selective_scan_bwd[%s] Bt=%lld L=%lld E=%lld N=%lld h0=%d dhT=%d dh0=%d alias=%d threads=%d seed=%llu",
                isa_names[isa], (long long)Bt, (long long)L, (long long)E, (long long)N, with_h0, with_dhT, mode.dh0,
                mode.alias, ex.n_threads, (unsigned long long)seed);
            ok &= scan_compare(&c, &got, &want, mode, label);
        }
    }
    pool_free(&pl);
    return ok;
}

static void test_scan(void **unused) {
    for (int isa = 0; isa < MC_CPU_ISA_COUNT; isa++) {
        variant_note(table(isa), "selective_scan_bwd", isa);
    }
    // L = 300 crosses the AVX-512 kernel's 128-step chunks (checkpointed forward); N = 17 takes two state passes.
    const int64_t Ls[] = { 1, 2, 5, 17, 129, 300 }, Es[] = { 1, 3, 17, 63, 65 }, Ns[] = { 1, 3, 16, 17 };
    bool ok = true;
    uint64_t seed = 400;
    for (size_t a = 0; a < ARRAY_LEN(Ls); a++) {
        for (size_t b = 0; b < ARRAY_LEN(Es); b++) {
            for (size_t d = 0; d < ARRAY_LEN(Ns); d++) {
                const int v = (int)(seed % 4);
                const scan_mode mode = { v != 0, v == 3 };
                ok &= scan_case(1 + (int64_t)(seed % 3), Ls[a], Es[b], Ns[d], v != 1, v != 2, mode, seed);
                seed++;
            }
        }
    }
    assert_true(ok);
}

// ---- cross entropy ----------------------------------------------------------------------------------------------

// Logits spread over ±10 with one spike per row (a confident prediction: the target's gradient p − 1 cancels), but
// every third row lies in [−50, −30] without one (a negative max: a SIMD kernel's lanes past the row's end, exp(0 −
// max) ≫ 1, must not reach the sum); every fourth row ignored, or every row when all_ignored.
static bool ce_case(int64_t T, int64_t V, bool all_ignored, uint64_t seed) {
    pool pl = { 0 };
    mc_test_rng r = { seed };
    float *logits = new_rand(&pl, &r, T * V, -10.0f, 10.0f);
    int32_t *targets = pool_alloc(&pl, (size_t)T * sizeof(int32_t));
    int64_t kept = 0;
    for (int64_t t = 0; t < T; t++) {
        targets[t] = all_ignored || t % 4 == 3 ? -100 : (int32_t)(mc_test_rng_u32(&r) % V);
        const uint32_t spike = mc_test_rng_u32(&r) % V;
        for (int64_t v = 0; v < V && t % 3 == 1; v++) {
            logits[t * V + v] -= 40.0f;
        }
        if (t % 3 != 1) {
            logits[t * V + spike] = 25.0f;
        }
        kept += targets[t] != -100;
    }
    const float scale = kept > 0 ? 1.0f / (float)kept : 1.0f;
    float *want = new_f32(&pl, T * V, NAN), *got = new_f32(&pl, T * V, NAN);
    double want_loss = 1.5, loss_1t = 0;
    int64_t want_n = 2;
    const mc_exec ex1 = { .n_threads = 1 };
    assert_int_equal(mc_ref_cross_entropy(&ex1, want, &want_loss, &want_n, logits, targets, T, V, scale), MC_OK);
    bool ok = true;
    for (int isa = 0; isa < MC_CPU_ISA_COUNT; isa++) {
        if (table(isa) == NULL) {
            continue;
        }
        for (size_t ti = 0; ti < ARRAY_LEN(thread_counts); ti++) {
            for (int alias = 0; alias < 2; alias++) {
                const mc_exec ex = { .n_threads = thread_counts[ti] };
                float *out = got;
                if (alias) { // the gradient overwrites the logits
                    out = copy_f32(&pl, logits, T * V);
                }
                double loss = 1.5;
                int64_t n = 2;
                assert_int_equal(
                    table(isa)->cross_entropy(&ex, out, &loss, &n, alias ? out : logits, targets, T, V, scale), MC_OK);
                char label[160];
                snprintf(label, sizeof(label), "cross_entropy[%s] T=%lld V=%lld alias=%d threads=%d", isa_names[isa],
                         (long long)T, (long long)V, alias, ex.n_threads);
                ok &= mc_check_close(out, want, T * V, TOL_F32, label);
                if (n != want_n || !(fabs(loss - want_loss) <= TOL_LOSS * fabs(want_loss))) {
                    printf("%s: loss %.17g count %lld, want %.17g count %lld\n", label, loss, (long long)n, want_loss,
                           (long long)want_n);
                    ok = false;
                }
                if (ti == 0 && alias == 0) {
                    loss_1t = loss;
                } else if (loss != loss_1t) { // row order, not thread count, decides the sum
                    printf("%s: loss %.17g differs from 1 thread's %.17g\n", label, loss, loss_1t);
                    ok = false;
                }
            }
        }
    }
    pool_free(&pl);
    return ok;
}

static void test_cross_entropy(void **unused) {
    for (int isa = 0; isa < MC_CPU_ISA_COUNT; isa++) {
        variant_note(table(isa), "cross_entropy", isa);
    }
    const int64_t Ts[] = { 1, 3, 17, 65 }, Vs[] = { 1, 3, 17, 63, 65, 1000, 50280 };
    bool ok = true;
    uint64_t seed = 600;
    for (size_t a = 0; a < ARRAY_LEN(Ts); a++) {
        for (size_t b = 0; b < ARRAY_LEN(Vs); b++) {
            ok &= ce_case(Ts[a], Vs[b], false, seed++);
        }
    }
    ok &= ce_case(5, 63, true, seed++);
    assert_true(ok);
}

// ---- dropout ----------------------------------------------------------------------------------------------------

// The cpu entry (rows in blocks over threads) against the reference's loop, bit for bit: strided and packed rows,
// in place, every p from none to all. The mask itself: kept elements are x·(1/(1 − p)) in f32, the others 0; the
// share dropped is within six standard deviations of p; the same key gives the same mask, another key another.
static void test_dropout(void **unused) {
    const mc_ops *ref = mc_ops_get(MC_BACKEND_REF, NULL), *cpu = mc_ops_get(MC_BACKEND_CPU, NULL);
    assert_non_null(ref);
    assert_non_null(cpu);
    const int64_t shapes[][3] = { { 1, 1, 1 }, { 3, 5, 7 }, { 130, 300, 301 }, { 200, 768, 768 } }; // M, K, ldx
    const double ps[] = { 0.0, 0.1, 0.5, 1.0 };
    uint64_t seed = 700;
    for (size_t si = 0; si < ARRAY_LEN(shapes); si++) {
        const int64_t M = shapes[si][0], K = shapes[si][1], ldx = shapes[si][2];
        pool pl = { 0 };
        float *x = pool_alloc(&pl, (size_t)(M * ldx) * sizeof(float)), *want = pool_alloc(&pl, (size_t)(M * K) * 4);
        float *got = pool_alloc(&pl, (size_t)(M * K) * 4), *other = pool_alloc(&pl, (size_t)(M * K) * 4);
        mc_test_rng r = { seed++ };
        mc_test_fill(&r, x, M * ldx, 0.5f, 2.0f); // never 0, so a 0 in y is a dropped element
        for (size_t pi = 0; pi < ARRAY_LEN(ps); pi++) {
            const double p = ps[pi];
            const uint64_t key = 0x1234567ull * (si + 1) + pi;
            assert_int_equal(ref->dropout(NULL, want, x, ldx, M, K, p, key), MC_OK);
            for (size_t ti = 0; ti < ARRAY_LEN(thread_counts); ti++) {
                const mc_exec ex = { .n_threads = thread_counts[ti] };
                memset(got, 0xff, (size_t)(M * K) * 4);
                assert_int_equal(cpu->dropout(&ex, got, x, ldx, M, K, p, key), MC_OK);
                assert_memory_equal(got, want, (size_t)(M * K) * 4);
            }
            const float scale = p < 1 ? (float)(1.0 / (1.0 - p)) : 0.0f;
            int64_t dropped = 0;
            for (int64_t m = 0; m < M; m++) {
                for (int64_t k = 0; k < K; k++) {
                    const float y = want[m * K + k], v = x[m * ldx + k];
                    dropped += y == 0.0f;
                    assert_true(y == 0.0f || y == v * scale);
                }
            }
            const double n = (double)(M * K), sd = sqrt(n * p * (1 - p));
            if (fabs((double)dropped - n * p) > 6 * sd + 1e-9) {
                fail_msg("dropout p=%g M=%lld K=%lld: %lld of %.0f dropped", p, (long long)M, (long long)K,
                         (long long)dropped, n);
            }
            if (p > 0 && p < 1 && n >= 100) { // another key: another mask
                assert_int_equal(ref->dropout(NULL, other, x, ldx, M, K, p, key + 1), MC_OK);
                assert_true(memcmp(other, want, (size_t)(M * K) * 4) != 0);
            }
            if (ldx == K) { // in place
                memcpy(got, x, (size_t)(M * K) * 4);
                const mc_exec ex = { .n_threads = 2 };
                assert_int_equal(cpu->dropout(&ex, got, got, K, M, K, p, key), MC_OK);
                assert_memory_equal(got, want, (size_t)(M * K) * 4);
            }
        }
        pool_free(&pl);
    }
    mc_error err = { 0 };
    const mc_exec ex = { .n_threads = 1, .err = &err };
    float buf[4] = { 0 };
    assert_int_equal(cpu->dropout(&ex, buf, buf, 1, 1, 2, 0.5, 1), MC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "ldx=1"));
    assert_int_equal(cpu->dropout(&ex, buf, buf, 2, 1, 2, 1.5, 1), MC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "p=1.5"));
}

// ---- bad input --------------------------------------------------------------------------------------------------

static void expect_invalid(mc_status st, const mc_error *err, const char *needle) {
    assert_int_equal(st, MC_ERR_INVALID);
    assert_int_equal(err->code, MC_ERR_INVALID);
    if (strstr(err->msg, needle) == NULL) {
        fail_msg("message \"%s\" lacks \"%s\"", err->msg, needle);
    }
}

// The reference's checks, messages and "nothing written" on every fast entry.
static void test_bad_input(void **unused) {
    mc_error err = { 0 };
    const mc_exec ex = { .n_threads = 2, .err = &err };
    float buf[64] = { 0 }, dl[4] = { 0.5f, 0.5f, 0.5f, 0.5f };
    const float logits[4] = { 1, 2, 3, 4 };
    mc_weight w = { .data = buf, .dtype = MC_DTYPE_F32, .rows = 2, .cols = 3 };
    expect_invalid(mc_cpu_matmul_dx(&ex, buf, 2, buf, &w, 1, 2, 3, false), &err, "ldx=2");
    expect_invalid(mc_cpu_matmul_dx(&ex, buf, 3, buf, &w, 1, 3, 3, false), &err, "matmul_dx: weight");
    w.dtype = MC_DTYPE_I8; // no scales
    expect_invalid(mc_cpu_matmul_dx(&ex, buf, 3, buf, &w, 1, 2, 3, false), &err, "int8");
    expect_invalid(mc_cpu_matmul_dw(&ex, buf, NULL, buf, buf, 3, -1, 2, 3), &err, "matmul_dw: M=-1");
    expect_invalid(mc_cpu_matmul_dw(&ex, buf, NULL, buf, buf, (int64_t)1 << 31, 1, 2, (int64_t)1 << 31), &err,
                   "int sizes");
    buf[0] = 3.0f;
    expect_invalid(mc_cpu_embed_bwd(&ex, buf, buf, (const int32_t[]){ 0, 4 }, 2, 4, 1), &err, "id 4 at row 1");
    assert_true(buf[0] == 3.0f); // row 0's id was fine, but nothing is written
    expect_invalid(mc_cpu_embed_bwd(&ex, buf, buf, (const int32_t[]){ -1 }, 1, 4, 1), &err, "id -1");
    expect_invalid(mc_cpu_rmsnorm_bwd(&ex, buf, buf, buf, buf, buf, 1, 0, 1e-5f), &err, "H=0");
    for (int isa = 0; isa < MC_CPU_ISA_COUNT; isa++) {
        const mc_cpu_kernels *k = table(isa);
        if (k == NULL) {
            continue;
        }
        expect_invalid(k->conv1d_bwd(&ex, buf, buf, NULL, NULL, buf, NULL, buf, 1, buf, buf, NULL, 1, 1, 1, 0), &err,
                       "K=0");
        expect_invalid(k->conv1d_bwd(&ex, buf, buf, NULL, NULL, buf, NULL, buf, 1, buf, buf, NULL, 1, 1, 2, 1), &err,
                       "ldx=1");
        expect_invalid(k->selective_scan_bwd(&ex, buf, buf, buf, buf, buf, buf, buf, buf, NULL, buf, NULL, buf, buf,
                                             buf, buf, buf, buf, 3, buf, buf, 1, NULL, 1, 1, 1, 4),
                       &err, "ldbc=3");
        expect_invalid(k->selective_scan_bwd(&ex, buf, buf, buf, buf, buf, buf, buf, buf, NULL, buf, NULL, buf, buf,
                                             buf, buf, buf, buf, 4, buf, buf, 1, NULL, 1, 1, 2, 4),
                       &err, "ldz=1");
        double loss = 2.0;
        int64_t count = 3;
        expect_invalid(k->cross_entropy(&ex, dl, &loss, &count, logits, (const int32_t[]){ 1, 2 }, 2, 2, 1.0f), &err,
                       "target 2 at row 1");
        expect_invalid(k->cross_entropy(&ex, dl, &loss, &count, logits, (const int32_t[]){ -1 }, 1, 4, 1.0f), &err,
                       "target -1");
        assert_true(loss == 2.0 && count == 3 && dl[0] == 0.5f && dl[3] == 0.5f);
        const mc_exec quiet = { .n_threads = 1 }; // err may be NULL
        assert_int_equal(k->cross_entropy(&quiet, dl, &loss, &count, logits, (const int32_t[]){ 9 }, 1, 4, 1.0f),
                         MC_ERR_INVALID);
    }
}

// The op table runs these kernels (the best table's, OpenBLAS's products).
static void test_op_table(void **unused) {
    const mc_ops *ops = mc_ops_get(MC_BACKEND_CPU, NULL);
    assert_non_null(ops);
    const mc_cpu_kernels *best = mc_cpu_kernels_best();
    assert_true(ops->matmul_dx == mc_cpu_matmul_dx && ops->matmul_dw == mc_cpu_matmul_dw);
    assert_true(ops->embed_bwd == mc_cpu_embed_bwd && ops->rmsnorm_bwd == mc_cpu_rmsnorm_bwd);
    assert_true(ops->conv1d_bwd == best->conv1d_bwd && ops->selective_scan_bwd == best->selective_scan_bwd &&
                ops->cross_entropy == best->cross_entropy);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul),    cmocka_unit_test(test_embed),    cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_conv1d),    cmocka_unit_test(test_scan),     cmocka_unit_test(test_cross_entropy),
        cmocka_unit_test(test_bad_input), cmocka_unit_test(test_op_table),  cmocka_unit_test(test_dropout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
