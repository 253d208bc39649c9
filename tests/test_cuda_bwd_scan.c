// Parity of the cuda backend's conv1d_bwd and selective_scan_bwd (src/kernels/cuda/conv1d_bwd.cu, scan_bwd.cu) with
// their reference twins (src/kernels/ref/backward.c), through the op table with device memory: sizes that break
// channel groups, time chunks and warps, strided rows (padding must stay untouched), accumulation onto non-zero
// values, NULL optional inputs, aliased state gradients, Δ past the softplus threshold, and the 130m shape.
// Skips (77) when no CUDA device is usable.
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
#include "kernels/ops.h"
#include "kernels/ref/backward.h"

// Device f32 vs the reference, relative to each output's largest magnitude (style §2.7's cuda bound): the device
// sums in f32 in another order (lanes, warps, blocks, atomics) where the reference sums in double, contracts into
// FMAs, and its expf/log1pf differ by ≤ 2 ulp. The adjoint carried back through L steps only shrinks (decay ≤ 1), so
// the error stays a few f32 roundings of each output's terms: well under 1e-4 of the largest value.
#define TOL 1e-4
// Padding columns between rows (ld > width) must come back unchanged.
#define SENTINEL 7.25f

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static double g_worst[2]; // worst max|got − ref| / max|ref| per op (conv1d_bwd, selective_scan_bwd), for the record

// ---- helpers ----------------------------------------------------------------------------------------------------

// Every host and device allocation of a case, freed together.
typedef struct pool {
    void *host[64], *dev[64];
    int n_host, n_dev;
} pool;

static float *new_f32(pool *pl, int64_t n, float v) {
    assert_true(pl->n_host < (int)ARRAY_LEN(pl->host));
    float *p = calloc((size_t)(n > 0 ? n : 1), sizeof(float));
    assert_non_null(p);
    for (int64_t i = 0; i < n; i++) {
        p[i] = v;
    }
    pl->host[pl->n_host++] = p;
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
    memcpy(p, src, (size_t)(n > 0 ? n : 0) * sizeof(float));
    return p;
}

// A device copy of n floats of host memory (NULL stays NULL), freed with the pool.
static float *pool_dev(pool *pl, const float *host, int64_t n) {
    if (host == NULL) {
        return NULL;
    }
    assert_true(pl->n_dev < (int)ARRAY_LEN(pl->dev));
    float *d = dev_from(n > 0 ? host : NULL, n * (int64_t)sizeof(float));
    pl->dev[pl->n_dev++] = d;
    return d;
}

static void pool_free(pool *pl) {
    for (int i = 0; i < pl->n_dev; i++) {
        g_ops->free(&g_ex, pl->dev[i]);
    }
    for (int i = 0; i < pl->n_host; i++) {
        free(pl->host[i]);
    }
    pl->n_host = pl->n_dev = 0;
}

static bool close_enough(const float *got, const float *want, int64_t n, int op, const char *label) {
    const double e = mc_rel_err(got, want, n);
    g_worst[op] = e > g_worst[op] ? e : g_worst[op];
    return mc_check_close(got, want, n, TOL, label);
}

// Rows ld apart whose columns [c0, c1) are an output: gathered and compared with their own scale. Columns outside
// [p0, p1) (the span of every output in the buffer) must be bit-equal to the reference's buffer (both started from
// the same values).
static bool check_cols(pool *pl, const float *got, const float *want, int64_t rows, int64_t ld, int64_t c0, int64_t c1,
                       int64_t p0, int64_t p1, int op, const char *label) {
    const int64_t w = c1 - c0;
    float *g = new_f32(pl, rows * w, 0.0f), *r = new_f32(pl, rows * w, 0.0f);
    bool ok = true;
    for (int64_t i = 0; i < rows; i++) {
        memcpy(g + i * w, got + i * ld + c0, (size_t)w * sizeof(float));
        memcpy(r + i * w, want + i * ld + c0, (size_t)w * sizeof(float));
        for (int64_t j = 0; j < ld && ok; j++) {
            if ((j < p0 || j >= p1) && memcmp(&got[i * ld + j], &want[i * ld + j], sizeof(float)) != 0) {
                printf("%s: padding [%lld, %lld] changed to %g\n", label, (long long)i, (long long)j,
                       (double)got[i * ld + j]);
                ok = false;
            }
        }
    }
    return close_enough(g, r, rows * w, op, label) && ok;
}

// ---- conv1d -----------------------------------------------------------------------------------------------------

typedef struct conv_case {
    int64_t Bt, L, E, K;
    bool bias, final_grad, alias, want_state;
} conv_case;

// x and dx are the x half of an xz-like buffer [rows, 2E + 1] (odd: misaligned rows); dw and db start non-zero.
// dstate0 starts NaN (anything unwritten fails) or is the final gradient's buffer (alias).
static bool conv_run(const conv_case *cc, uint64_t seed) {
    const int64_t Bt = cc->Bt, L = cc->L, E = cc->E, K = cc->K, ldx = 2 * E + 1, rows = Bt * L, S = Bt * E * K;
    pool pl = { 0 };
    mc_test_rng r = { seed };
    const float *x = new_rand(&pl, &r, rows * ldx, -3.0f, 3.0f), *state0 = new_rand(&pl, &r, S, -3.0f, 3.0f);
    const float *w = new_rand(&pl, &r, E * K, -1.0f, 1.0f), *b = cc->bias ? new_rand(&pl, &r, E, -1.0f, 1.0f) : NULL;
    const float *du = new_rand(&pl, &r, rows * E, -1.0f, 1.0f), *fin = new_rand(&pl, &r, S, -1.0f, 1.0f);
    const float *dw0 = new_rand(&pl, &r, E * K, -1.0f, 1.0f), *db0 = new_rand(&pl, &r, E, -1.0f, 1.0f);
    const float *ds0 = new_f32(&pl, S, NAN), *dx0 = new_f32(&pl, rows * ldx, SENTINEL);
    // Reference on the host.
    float *wdx = copy_f32(&pl, dx0, rows * ldx), *wdw = copy_f32(&pl, dw0, E * K), *wdb = copy_f32(&pl, db0, E);
    float *wfin = copy_f32(&pl, fin, S), *ws0 = cc->alias ? wfin : copy_f32(&pl, ds0, S);
    const mc_exec ex1 = { .n_threads = 1 };
    assert_int_equal(mc_ref_conv1d_bwd(&ex1, wdx, wdw, cc->bias ? wdb : NULL, cc->want_state ? ws0 : NULL, du,
                                       cc->final_grad ? wfin : NULL, x, ldx, state0, w, b, Bt, L, E, K),
                     MC_OK);
    // The device, from the same starting values.
    float *d_dx = pool_dev(&pl, dx0, rows * ldx), *d_dw = pool_dev(&pl, dw0, E * K), *d_db = pool_dev(&pl, db0, E);
    float *d_fin = pool_dev(&pl, fin, S), *d_s0 = cc->alias ? d_fin : pool_dev(&pl, ds0, S);
    const float *d_x = pool_dev(&pl, x, rows * ldx), *d_state0 = pool_dev(&pl, state0, S);
    const float *d_w = pool_dev(&pl, w, E * K), *d_b = pool_dev(&pl, b, E), *d_du = pool_dev(&pl, du, rows * E);
    const mc_status st =
        g_ops->conv1d_bwd(&g_ex, d_dx, d_dw, cc->bias ? d_db : NULL, cc->want_state ? d_s0 : NULL, d_du,
                          cc->final_grad ? d_fin : NULL, d_x, ldx, d_state0, d_w, d_b, Bt, L, E, K);
    if (st != MC_OK || g_ops->sync(&g_ex) != MC_OK) {
        print_error("conv1d_bwd: %s\n", g_err.msg);
        fail();
    }
    float *gdx = new_f32(&pl, rows * ldx, 0.0f), *gdw = new_f32(&pl, E * K, 0.0f), *gdb = new_f32(&pl, E, 0.0f);
    float *gs0 = new_f32(&pl, S, 0.0f);
    dev_to(gdx, d_dx, (rows * ldx) * (int64_t)sizeof(float));
    dev_to(gdw, d_dw, (E * K) * (int64_t)sizeof(float));
    dev_to(gdb, d_db, E * (int64_t)sizeof(float));
    dev_to(gs0, d_s0, S * (int64_t)sizeof(float));
    char label[192];
    snprintf(label, sizeof(label), "conv1d_bwd Bt=%lld L=%lld E=%lld K=%lld bias=%d final=%d alias=%d state=%d",
             (long long)Bt, (long long)L, (long long)E, (long long)K, cc->bias, cc->final_grad, cc->alias,
             cc->want_state);
    const size_t end = strlen(label);
    bool ok = true;
    strcpy(label + end, " dx");
    ok &= check_cols(&pl, gdx, wdx, rows, ldx, 0, E, 0, E, 0, label);
    strcpy(label + end, " dw");
    ok &= close_enough(gdw, wdw, E * K, 0, label);
    strcpy(label + end, " db"); // unchanged when db is NULL: both still hold db0
    ok &= close_enough(gdb, wdb, E, 0, label);
    strcpy(label + end, " dstate0"); // all NaN on both sides when not asked for (and not aliased): skipped
    ok &= close_enough(gs0, ws0, S, 0, label);
    pool_free(&pl);
    return ok;
}

static void test_conv1d_bwd(void **unused) {
    const int64_t Bts[] = { 1, 3 }, Ls[] = { 0, 1, 2, 5, 17, 130, 300 }, Es[] = { 1, 3, 17, 33, 65 },
                  Ks[] = { 1, 2, 3, 4, 5, 8, 9 };
    bool ok = true;
    uint64_t seed = 700;
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
    const conv_case big = { 2, 300, 1536, 4, true, true, false, true }; // the 130m width, runs of several blocks
    ok &= conv_run(&big, seed++);
    const conv_case wide_k = { 2, 40, 33, 32, true, true, true, true }; // the largest window the device takes
    ok &= conv_run(&wide_k, seed++);
    assert_true(ok);
}

// ---- selective scan ---------------------------------------------------------------------------------------------

typedef struct scan_in {
    int64_t Bt, L, E, N, R, ldbc, ldz;
    float *u, *dt, *xz, *q, *dt_bias, *A, *D, *h0, *dy, *dhT; // q [rows, ldbc]: δ (R), B, C, padding
} scan_in;

typedef struct scan_out { // everything selective_scan_bwd writes or adds to, as host buffers
    float *du, *ddt, *dxz, *dq, *dA, *dD, *dbias, *dh0, *dhT;
} scan_out;

typedef struct scan_mode {
    bool h0, dhT, dh0, alias; // h0 given; dh_final given; dh0 asked for; dh0 written over dh_final's buffer
} scan_mode;

// dt spans the softplus curve, the threshold 20 (kept 1e-3 away: both sides give the same f32 value within that),
// far above it (95: expf overflows, so a missed threshold gives inf) and far below; gates reach silu(20) and
// silu(−100).
static scan_in scan_inputs(pool *pl, int64_t Bt, int64_t L, int64_t E, int64_t N, int64_t R, int64_t ldbc, int64_t ldz,
                           scan_mode mode, uint64_t seed) {
    mc_test_rng r = { seed };
    const int64_t rows = Bt * L;
    scan_in c = { .Bt = Bt, .L = L, .E = E, .N = N, .R = R, .ldbc = ldbc, .ldz = ldz };
    c.u = new_rand(pl, &r, rows * E, -2.0f, 2.0f);
    c.xz = new_rand(pl, &r, rows * ldz, -4.0f, 4.0f);
    for (int64_t t = 0; E > 0 && t < rows; t += 5) {
        c.xz[t * ldz + E + t % E] = t % 2 == 0 ? 20.0f : -100.0f;
    }
    c.q = new_rand(pl, &r, rows * ldbc, -1.0f, 1.0f);
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
    c.h0 = mode.h0 ? new_rand(pl, &r, Bt * E * N, -1.0f, 1.0f) : NULL;
    c.dy = new_rand(pl, &r, rows * E, -1.0f, 1.0f);
    c.dhT = mode.dhT ? new_rand(pl, &r, Bt * E * N, -1.0f, 1.0f) : NULL;
    return c;
}

// Written outputs start NaN (padding SENTINEL) so anything left unwritten fails; accumulators start non-zero.
static scan_out scan_out_new(pool *pl, const scan_in *c) {
    const int64_t rows = c->Bt * c->L, E = c->E, N = c->N, S = c->Bt * E * N;
    scan_out o = { .du = new_f32(pl, rows * E, NAN),
                   .ddt = new_f32(pl, rows * E, NAN),
                   .dxz = new_f32(pl, rows * c->ldz, SENTINEL),
                   .dq = new_f32(pl, rows * c->ldbc, SENTINEL),
                   .dA = new_f32(pl, E * N, 0.5f),
                   .dD = new_f32(pl, E, -0.25f),
                   .dbias = new_f32(pl, E, 0.125f),
                   .dh0 = new_f32(pl, S, NAN),
                   .dhT = c->dhT != NULL ? copy_f32(pl, c->dhT, S) : NULL };
    for (int64_t i = 0; i < rows; i++) {
        for (int64_t e = E; e < 2 * E; e++) { // dz is the z half
            o.dxz[i * c->ldz + e] = NAN;
        }
        for (int64_t n = c->R; n < c->R + 2 * N; n++) { // dB and dC columns
            o.dq[i * c->ldbc + n] = NAN;
        }
    }
    return o;
}

// Device copies of every output buffer, from the same starting values.
static scan_out scan_out_dev(pool *pl, const scan_in *c, const scan_out *h) {
    const int64_t rows = c->Bt * c->L, E = c->E, N = c->N, S = c->Bt * E * N;
    scan_out d = { .du = pool_dev(pl, h->du, rows * E),
                   .ddt = pool_dev(pl, h->ddt, rows * E),
                   .dxz = pool_dev(pl, h->dxz, rows * c->ldz),
                   .dq = pool_dev(pl, h->dq, rows * c->ldbc),
                   .dA = pool_dev(pl, h->dA, E * N),
                   .dD = pool_dev(pl, h->dD, E),
                   .dbias = pool_dev(pl, h->dbias, E),
                   .dh0 = pool_dev(pl, h->dh0, S),
                   .dhT = pool_dev(pl, h->dhT, S) };
    return d;
}

// Where the backward writes dh0: nowhere, its own buffer, or over dh_final's (alias).
static float *dh0_of(const scan_out *o, scan_mode mode) {
    return !mode.dh0 ? NULL : mode.alias && o->dhT != NULL ? o->dhT : o->dh0;
}

static mc_status scan_call(const mc_ops *ops, const mc_exec *ex, const scan_in *c, const scan_out *o, scan_mode mode) {
    float *dh0 = dh0_of(o, mode);
    const int64_t R = c->R, N = c->N, E = c->E;
    return ops->selective_scan_bwd(ex, o->du, o->ddt, o->dxz + E, o->dq + R, o->dq + R + N, o->dA, o->dD, o->dbias, dh0,
                                   c->dy, o->dhT, c->u, c->dt, c->dt_bias, c->A, c->q + R, c->q + R + N, c->ldbc, c->D,
                                   c->xz + E, c->ldz, c->h0, c->Bt, c->L, E, N);
}

static bool scan_compare(pool *pl, const scan_in *c, const scan_out *got, const scan_out *want, const char *label) {
    const int64_t rows = c->Bt * c->L, E = c->E, N = c->N, R = c->R, S = c->Bt * E * N;

    const struct {
        const char *name;
        const float *g, *w;
        int64_t n;
    } flat[] = { { "du", got->du, want->du, rows * E },   { "ddt", got->ddt, want->ddt, rows * E },
                 { "dA", got->dA, want->dA, E * N },      { "dD", got->dD, want->dD, E },
                 { "dbias", got->dbias, want->dbias, E }, { "dh0", got->dh0, want->dh0, S },
                 { "dhT", got->dhT, want->dhT, S } };

    bool ok = true;
    char l[256];
    for (size_t i = 0; i < ARRAY_LEN(flat); i++) {
        if (flat[i].g != NULL) { // dh0 unasked stays NaN on both sides (skipped); dhT holds dh0 when aliased
            snprintf(l, sizeof(l), "%s %s", label, flat[i].name);
            ok &= close_enough(flat[i].g, flat[i].w, flat[i].n, 1, l);
        }
    }
    snprintf(l, sizeof(l), "%s dz", label);
    ok &= check_cols(pl, got->dxz, want->dxz, rows, c->ldz, E, 2 * E, E, 2 * E, 1, l);
    snprintf(l, sizeof(l), "%s dB", label);
    ok &= check_cols(pl, got->dq, want->dq, rows, c->ldbc, R, R + N, R, R + 2 * N, 1, l);
    snprintf(l, sizeof(l), "%s dC", label);
    ok &= check_cols(pl, got->dq, want->dq, rows, c->ldbc, R + N, R + 2 * N, R, R + 2 * N, 1, l);
    return ok;
}

// The training pair on the device: selective_scan_keep from h0 (zeros without), checked against the reference's
// forward (y and the final state), then selective_scan_bwd_kept on what it kept. Shapes the backend keeps nothing
// for (scan_keep_floats 0) take the plain backward.
static mc_status kept_call(pool *pl, const scan_in *c, const scan_in *host, const scan_out *o, scan_mode mode,
                           const char *label, bool *ok) {
    const int64_t Bt = c->Bt, L = c->L, E = c->E, N = c->N, R = c->R, rows = Bt * L, S = Bt * E * N;
    const int64_t nk = g_ops->scan_keep_floats(Bt, L, E, N);
    if (nk == 0) {
        return scan_call(g_ops, &g_ex, c, o, mode);
    }
    float *want_y = new_f32(pl, rows * E, 0.0f);
    float *want_h = host->h0 != NULL ? copy_f32(pl, host->h0, S) : new_f32(pl, S, 0.0f);
    // The device's h and y from the starting values, before the host's forward updates want_h.
    float *h = pool_dev(pl, want_h, S), *y = pool_dev(pl, new_f32(pl, rows * E, NAN), rows * E);
    const mc_exec ex1 = { .n_threads = 1 };
    assert_int_equal(mc_ops_ref.selective_scan(&ex1, want_y, want_h, host->u, host->dt, host->dt_bias, host->A,
                                               host->q + R, host->q + R + N, c->ldbc, host->D, host->xz + E, c->ldz,
                                               Bt, L, E, N),
                     MC_OK);
    float *keep = pool_dev(pl, new_f32(pl, nk, NAN), nk);
    mc_status st = g_ops->selective_scan_keep(&g_ex, y, h, c->u, c->dt, c->dt_bias, c->A, c->q + R, c->q + R + N,
                                              c->ldbc, c->D, c->xz + E, c->ldz, Bt, L, E, N, keep);
    if (st != MC_OK) {
        return st;
    }
    float *got_y = new_f32(pl, rows * E, 0.0f), *got_h = new_f32(pl, S, 0.0f);
    dev_to(got_y, y, rows * E * (int64_t)sizeof(float));
    dev_to(got_h, h, S * (int64_t)sizeof(float));
    char l[288];
    snprintf(l, sizeof(l), "%s selective_scan_keep y", label);
    *ok &= close_enough(got_y, want_y, rows * E, 1, l);
    snprintf(l, sizeof(l), "%s selective_scan_keep h", label);
    *ok &= close_enough(got_h, want_h, S, 1, l);
    return g_ops->selective_scan_bwd_kept(&g_ex, o->du, o->ddt, o->dxz + E, o->dq + R, o->dq + R + N, o->dA, o->dD,
                                          o->dbias, dh0_of(o, mode), c->dy, o->dhT, c->u, c->dt, c->dt_bias, c->A, c->q + R,
                                          c->q + R + N, c->ldbc, c->D, c->xz + E, c->ldz, c->h0, Bt, L, E, N, keep);
}

static bool g_kept; // scan_case runs the training pair (kept_call) instead of selective_scan_bwd alone

static bool scan_case(int64_t Bt, int64_t L, int64_t E, int64_t N, int64_t R, int64_t pad, scan_mode mode,
                      uint64_t seed) {
    pool pl = { 0 };
    const int64_t ldbc = R + 2 * N + pad, ldz = 2 * E + pad, rows = Bt * L, S = Bt * E * N;
    const scan_in c = scan_inputs(&pl, Bt, L, E, N, R, ldbc, ldz, mode, seed);
    const scan_out want = scan_out_new(&pl, &c), got = scan_out_new(&pl, &c);
    const mc_exec ex1 = { .n_threads = 1 };
    assert_int_equal(scan_call(&mc_ops_ref, &ex1, &c, &want, mode), MC_OK);
    const scan_out dout = scan_out_dev(&pl, &c, &got);
    const scan_in din = { .Bt = Bt,
                          .L = L,
                          .E = E,
                          .N = N,
                          .R = R,
                          .ldbc = ldbc,
                          .ldz = ldz,
                          .u = pool_dev(&pl, c.u, rows * E),
                          .dt = pool_dev(&pl, c.dt, rows * E),
                          .xz = pool_dev(&pl, c.xz, rows * ldz),
                          .q = pool_dev(&pl, c.q, rows * ldbc),
                          .dt_bias = pool_dev(&pl, c.dt_bias, E),
                          .A = pool_dev(&pl, c.A, E * N),
                          .D = pool_dev(&pl, c.D, E),
                          .h0 = pool_dev(&pl, c.h0, S),
                          .dy = pool_dev(&pl, c.dy, rows * E),
                          .dhT = NULL };
    char label[224];
    snprintf(label, sizeof(label),
             "selective_scan_bwd%s Bt=%lld L=%lld E=%lld N=%lld ldbc=%lld ldz=%lld h0=%d dhT=%d dh0=%d alias=%d "
             "seed=%llu",
             g_kept ? "_kept" : "", (long long)Bt, (long long)L, (long long)E, (long long)N, (long long)ldbc,
             (long long)ldz, mode.h0, mode.dhT, mode.dh0, mode.alias, (unsigned long long)seed);
    bool ok = true;
    const mc_status st =
        g_kept ? kept_call(&pl, &din, &c, &dout, mode, label, &ok) : scan_call(g_ops, &g_ex, &din, &dout, mode);
    if (st != MC_OK || g_ops->sync(&g_ex) != MC_OK) {
        print_error("selective_scan_bwd: %s\n", g_err.msg);
        fail();
    }
    dev_to(got.du, dout.du, (rows * E) * (int64_t)sizeof(float));
    dev_to(got.ddt, dout.ddt, (rows * E) * (int64_t)sizeof(float));
    dev_to(got.dxz, dout.dxz, (rows * ldz) * (int64_t)sizeof(float));
    dev_to(got.dq, dout.dq, (rows * ldbc) * (int64_t)sizeof(float));
    dev_to(got.dA, dout.dA, (E * N) * (int64_t)sizeof(float));
    dev_to(got.dD, dout.dD, E * (int64_t)sizeof(float));
    dev_to(got.dbias, dout.dbias, E * (int64_t)sizeof(float));
    dev_to(got.dh0, dout.dh0, S * (int64_t)sizeof(float));
    if (got.dhT != NULL) {
        dev_to(got.dhT, dout.dhT, S * (int64_t)sizeof(float));
    }
    ok &= scan_compare(&pl, &c, &got, &want, label);
    pool_free(&pl);
    return ok;
}

// scan_case over every (L, E, N) of the lists, one seed each from *seed on: Bt = 1 + seed % bt_mod, and the
// NULL / alias modes in turn.
static bool scan_sweep(const int64_t *Ls, size_t nL, const int64_t *Es, size_t nE, const int64_t *Ns, size_t nN,
                       int bt_mod, int64_t R, int64_t pad, uint64_t *seed) {
    bool ok = true;
    for (size_t a = 0; a < nL; a++) {
        for (size_t b = 0; b < nE; b++) {
            for (size_t d = 0; d < nN; d++) {
                const int v = (int)(*seed % 4);
                const scan_mode mode = { .h0 = v != 1, .dhT = v != 2, .dh0 = v != 0, .alias = v == 3 };
                ok &= scan_case(1 + (int64_t)(*seed % (uint64_t)bt_mod), Ls[a], Es[b], Ns[d], R, pad, mode, *seed);
                (*seed)++;
            }
        }
    }
    return ok;
}

static void test_selective_scan_bwd(void **unused) {
    // L = 33 and 300 leave partial time chunks (16 or 32 steps); E = 33 and 65 partial channel groups; every N
    // configuration (≤ 4, 16, 32, 64, 128) and the sizes just past each.
    const int64_t Ls[] = { 0, 1, 2, 5, 16, 17, 33, 129, 300 }, Es[] = { 1, 3, 17, 33, 65 },
                  Ns[] = { 1, 3, 4, 5, 16, 17, 32, 33, 64, 65, 128 };
    bool ok = true;
    uint64_t seed = 900;
    ok &= scan_sweep(Ls, ARRAY_LEN(Ls), Es, ARRAY_LEN(Es), Ns, ARRAY_LEN(Ns), 3, 3, 1, &seed);
    const scan_mode all = { .h0 = true, .dhT = true, .dh0 = true, .alias = false };
    const scan_mode none = { .h0 = false, .dhT = false, .dh0 = false, .alias = false };
    ok &= scan_case(2, 5, 0, 4, 3, 1, all, seed++); // no channels: dB and dC are empty sums, written as 0
    // The 130m shape: dt_rank 48, so B and C are columns of q [rows, 80]; z is the second half of xz [rows, 3072].
    ok &= scan_case(2, 300, 1536, 16, 48, 0, all, seed++);
    ok &= scan_case(5, 37, 1536, 16, 48, 0, all, seed++); // Bt·E > 6144: the other lane layout
    ok &= scan_case(3, 129, 1536, 16, 48, 0, none, seed++);
    assert_true(ok);
}

// The parallel backward's boundaries (scan_par.cu: lanes own slices of 4 steps, chunks of 128 steps walked from the
// last, blocks of 8 warps running 2 or 4 groups of 8 channels, dB and dC summed over blocks): L around a slice, a
// warp's 32 slices and a chunk; E around a warp group and a block (8, 16, 32 channels); N in both state
// configurations (≤ 16 and ≤ 64); 1 to 5 sequences (Bt·E picks 2 or 4 groups); every NULL / alias mode in turn.
static void test_selective_scan_bwd_chunks(void **unused) {
    const int64_t Ls[] = { 1, 3, 4, 5, 31, 32, 33, 127, 128, 129, 256, 261 }, Es[] = { 1, 8, 9, 17, 33 },
                  Ns[] = { 1, 3, 16, 17 };
    bool ok = true;
    uint64_t seed = 5000;
    ok &= scan_sweep(Ls, ARRAY_LEN(Ls), Es, ARRAY_LEN(Es), Ns, ARRAY_LEN(Ns), 5, 2, 3, &seed);
    const scan_mode all = { .h0 = true, .dhT = true, .dh0 = true, .alias = false };
    const scan_mode alias = { .h0 = true, .dhT = true, .dh0 = true, .alias = true };
    ok &= scan_case(2, 517, 1537, 16, 48, 1, all, seed++);  // 2·1537 ≤ 6144 channels: 2 groups a block, 1 left over
    ok &= scan_case(5, 261, 1537, 16, 48, 1, alias, seed++); // 7685: 4 groups a block
    ok &= scan_case(2, 300, 100, 64, 7, 2, all, seed++);     // the 64-state configuration, full
    ok &= scan_case(1, 129, 40, 33, 3, 0, alias, seed++);
    setenv("MAMBAC_SCAN_BWD_CONFIG", "5", 1); // one channel group a block (scan_par.cu's configuration 5)
    ok &= scan_case(2, 261, 33, 16, 7, 1, all, seed++);
    ok &= scan_case(3, 129, 1537, 16, 48, 0, alias, seed++);
    unsetenv("MAMBAC_SCAN_BWD_CONFIG");
    assert_true(ok);
}

// The training pair (selective_scan_keep, then selective_scan_bwd_kept on the chunk states it kept) against the
// reference's forward and backward: L around the kept chunks (128 steps), partial channel groups, both state
// configurations (≤ 16, ≤ 64) and N past them (nothing kept: the plain pair), with and without h0, and the 130m shape.
static void test_selective_scan_kept(void **unused) {
    const int64_t Ls[] = { 1, 5, 127, 128, 129, 261 }, Es[] = { 1, 9, 33 }, Ns[] = { 1, 16, 17, 64, 65 };
    bool ok = true;
    uint64_t seed = 7000;
    g_kept = true;
    ok &= scan_sweep(Ls, ARRAY_LEN(Ls), Es, ARRAY_LEN(Es), Ns, ARRAY_LEN(Ns), 3, 2, 1, &seed);
    const scan_mode all = { .h0 = true, .dhT = true, .dh0 = true, .alias = false };
    const scan_mode none = { .h0 = false, .dhT = false, .dh0 = false, .alias = false };
    ok &= scan_case(2, 300, 1536, 16, 48, 0, none, seed++); // the training call: no h0, no final gradient
    ok &= scan_case(3, 517, 1537, 16, 48, 1, all, seed++);
    setenv("MAMBAC_SCAN_BWD_CONFIG", "5", 1); // configuration 5 reads the kept states too
    ok &= scan_case(2, 300, 1536, 16, 48, 0, none, seed++);
    unsetenv("MAMBAC_SCAN_BWD_CONFIG");
    g_kept = false;
    assert_true(ok);
}

// ---- errors -----------------------------------------------------------------------------------------------------

static void expect_fail(mc_status st, mc_status want, const char *needle) {
    assert_int_equal(st, want);
    if (strstr(g_err.msg, needle) == NULL) {
        print_error("message \"%s\" lacks \"%s\"\n", g_err.msg, needle);
        fail();
    }
}

// Bad sizes fail with the reference's code before any pointer is touched (NULLs here); shapes the device does
// not take say so.
static void test_bad_input(void **unused) {
    float *f = NULL;
    expect_fail(g_ops->conv1d_bwd(&g_ex, f, f, f, f, f, f, f, 3, f, f, f, 1, 4, 4, 4), MC_ERR_INVALID, "ldx=3");
    expect_fail(g_ops->conv1d_bwd(&g_ex, f, f, f, f, f, f, f, 4, f, f, f, 1, 4, 4, 0), MC_ERR_INVALID, "K=0");
    expect_fail(g_ops->conv1d_bwd(&g_ex, f, f, f, f, f, f, f, 4, f, f, f, 1, 4, 4, 33), MC_ERR_UNSUPPORTED, "K=33");
    expect_fail(
        g_ops->selective_scan_bwd(&g_ex, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, 7, f, f, 8, f, 1, 4, 4, 8),
        MC_ERR_INVALID, "ldbc=7"); // B and C rows closer than their N = 8 entries
    expect_fail(
        g_ops->selective_scan_bwd(&g_ex, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, 8, f, f, 7, f, 1, 4, 8, 4),
        MC_ERR_INVALID, "ldz=7");
    expect_fail(g_ops->selective_scan_bwd(&g_ex, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, 300, f, f, 8, f, 1,
                                          4, 8, 129),
                MC_ERR_UNSUPPORTED, "N=129");
    assert_int_equal(g_ops->sync(&g_ex), MC_OK); // nothing was launched
}

static int setup(void **unused) {
    return dev_setup();
}

static int teardown(void **unused) {
    printf("worst max|got - ref| / max|ref|, conv1d_bwd: %.3g, selective_scan_bwd: %.3g\n", g_worst[0], g_worst[1]);
    dev_teardown();
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv1d_bwd),
        cmocka_unit_test(test_selective_scan_bwd),
        cmocka_unit_test(test_selective_scan_bwd_chunks),
        cmocka_unit_test(test_selective_scan_kept),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
