// Parity of the cpu backend's SSM-path kernels (src/kernels/cpu/cpu.h) with their reference twins: every variant
// (portable C, AVX2, AVX-512; called directly, skipped with a note when the CPU lacks it), 1 and 2 threads, on sizes
// that break vector blocks, with the state carried across chunked calls; batched decode steps against per-sequence
// reference steps.
#include <cjson/cJSON.h>
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
#include "kernels/ref/ref.h"
#include "mambac.h"

// Scan and conv vs the reference, f32 both: the differences are the polynomial exp/softplus (≤ 2 ulp against libm's
// expf/log1pf), FMA and the order of the N-term readout sum. exp(Δ·A) ≤ 1 makes the recurrence contractive, so they
// do not grow with L (L = 1000: < 2e-6). Measured worst over 400 random scan cases: 6.4e-6, an output whose readout
// cancels (terms ~36 summing to 0.2 at Δ = 39), where the reference itself is ~7e-6 off the f64 value.
#define TOL_F32 1e-5
// RMSNorm: only the order of the f32 sum of squares differs (one rounding of r, a few ulp).
#define TOL_NORM 1e-6
// Embedding: widening f16/bf16 to f32 is exact and int8 is q · scale rounded once, as the reference does.
#define TOL_EXACT 0.0

static const char *const isa_names[MC_CPU_ISA_COUNT] = { "c", "avx2", "avx512" };

// The kernel `op` of isa's table, or NULL when this CPU or build lacks the table.
#define KERNEL(isa, op) (mc_cpu_kernels_get(isa) != NULL ? mc_cpu_kernels_get(isa)->op : NULL)
static const int thread_counts[] = { 1, 2 };

static float *alloc_f32(int64_t n) {
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    assert_non_null(p);
    return p;
}

// Prints once per test and op that a variant is not available here (never passes quietly).
static bool variant_note(const void *fn, const char *op, int isa) {
    if (fn == NULL) {
        printf("note: %s[%s] not available on this CPU/build, skipped\n", op, isa_names[isa]);
        return false;
    }
    return true;
}

// ---- selective scan ---------------------------------------------------------------------------------------------

typedef struct scan_data {
    int64_t L, E, N, R, ldbc, ldz;
    float *u, *dt, *dt_bias, *A, *q, *D, *xz, *h0; // q: [L, R + 2N] (δ, B, C); xz: [L, 2E + 1] (x, z)
    float *want_y, *want_h;
} scan_data;

// dt spans −30..+100: most of the mass where softplus is curved, some far below (Δ ≈ 0, exp(Δ·A) = 1) and some
// past the threshold 20 and far past where expf(v) overflows (v > 88.7).
static float draw_dt(mc_test_rng *r) {
    uint32_t k = mc_test_rng_u32(r) % 10;
    return k < 7 ? mc_test_rng_uniform(r, -6.0f, 3.0f) : k < 8 ? mc_test_rng_uniform(r, -30.0f, -6.0f) : mc_test_rng_uniform(r, 15.0f, 100.0f);
}

static scan_data scan_data_new(int64_t L, int64_t E, int64_t N, uint64_t seed) {
    mc_test_rng r = { seed };
    scan_data d = { .L = L, .E = E, .N = N, .R = 3 };
    d.ldbc = d.R + 2 * N;
    d.ldz = 2 * E + 1; // odd: z rows are misaligned as well as strided
    d.u = alloc_f32(L * E);
    d.dt = alloc_f32(L * E);
    d.dt_bias = alloc_f32(E);
    d.A = alloc_f32(E * N);
    d.q = alloc_f32(L * d.ldbc);
    d.D = alloc_f32(E);
    d.xz = alloc_f32(L * d.ldz);
    d.h0 = alloc_f32(E * N);
    d.want_y = alloc_f32(L * E);
    d.want_h = alloc_f32(E * N);
    mc_test_fill(&r, d.u, L * E, -2.0f, 2.0f);
    for (int64_t i = 0; i < L * E; i++) {
        d.dt[i] = draw_dt(&r);
    }
    mc_test_fill(&r, d.dt_bias, E, -2.0f, 1.0f);
    for (int64_t i = 0; i < E * N; i++) { // A = −exp(A_log), A_log near ln(1..N) as initialised, some near 0
        d.A[i] = -expf(mc_test_rng_uniform(&r, -3.0f, logf((float)N) + 0.5f));
    }
    mc_test_fill(&r, d.q, L * d.ldbc, -1.0f, 1.0f);
    mc_test_fill(&r, d.D, E, -1.0f, 1.0f);
    mc_test_fill(&r, d.xz, L * d.ldz, -4.0f, 4.0f);
    for (int64_t t = 0; t < L; t += 7) { // gates far out: silu(20) = 20 and silu(−100) = −0 (exp(100) overflows)
        d.xz[t * d.ldz + E + (t % E)] = t % 2 == 0 ? 20.0f : -100.0f;
    }
    mc_test_fill(&r, d.h0, E * N, -1.0f, 1.0f); // a carried state, not zeros
    memcpy(d.want_h, d.h0, (size_t)(E * N) * sizeof(float));
    mc_exec ex = { .n_threads = 1 };
    mc_ref_selective_scan(&ex, d.want_y, d.want_h, d.u, d.dt, d.dt_bias, d.A, d.q + d.R, d.q + d.R + N, d.ldbc, d.D,
                          d.xz + E, d.ldz, L, E, N);
    return d;
}

static void scan_data_free(scan_data *d) {
    float *ps[] = { d->u, d->dt, d->dt_bias, d->A, d->q, d->D, d->xz, d->h0, d->want_y, d->want_h };
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) {
        free(ps[i]);
    }
}

// Runs f over steps [t0, t1) continuing from h.
static void scan_run(mc_cpu_selective_scan_fn f, const mc_exec *ex, const scan_data *d, float *y, float *h, int64_t t0,
                     int64_t t1) {
    const int64_t E = d->E, N = d->N;
    const float *q = d->q + t0 * d->ldbc;
    f(ex, y + t0 * E, h, d->u + t0 * E, d->dt + t0 * E, d->dt_bias, d->A, q + d->R, q + d->R + N, d->ldbc, d->D,
      d->xz + t0 * d->ldz + E, d->ldz, t1 - t0, E, N);
}

// Whole sequence in one call, then in three chunks (1 step, about half, the rest): both must match the reference's
// single call, outputs and final state.
static bool scan_check(const scan_data *d, uint64_t seed) {
    const int64_t L = d->L, E = d->E, N = d->N;
    float *y = alloc_f32(L * E), *h = alloc_f32(E * N);
    bool ok = true;
    for (int isa = 0; isa < MC_CPU_ISA_COUNT; isa++) {
        mc_cpu_selective_scan_fn f = KERNEL(isa, selective_scan);
        if (f == NULL) {
            continue;
        }
        for (size_t ti = 0; ti < sizeof(thread_counts) / sizeof(thread_counts[0]); ti++) {
            mc_exec ex = { .n_threads = thread_counts[ti] };
            for (int chunked = 0; chunked < 2; chunked++) {
                memcpy(h, d->h0, (size_t)(E * N) * sizeof(float));
                if (chunked && L > 1) {
                    int64_t c1 = 1, c2 = 1 + (L - 1) / 2;
                    scan_run(f, &ex, d, y, h, 0, c1);
                    scan_run(f, &ex, d, y, h, c1, c2);
                    scan_run(f, &ex, d, y, h, c2, L);
                } else {
                    scan_run(f, &ex, d, y, h, 0, L);
                }
                char label[160];
                snprintf(label, sizeof(label), "scan[%s] threads=%d L=%lld E=%lld N=%lld%s seed=%llu y", isa_names[isa],
                         ex.n_threads, (long long)L, (long long)E, (long long)N, chunked ? " chunked" : "",
                         (unsigned long long)seed);
                ok &= mc_check_close(y, d->want_y, L * E, TOL_F32, label);
                label[strlen(label) - 1] = 'h';
                ok &= mc_check_close(h, d->want_h, E * N, TOL_F32, label);
            }
        }
    }
    free(y);
    free(h);
    return ok;
}

static void scan_notes(void) {
    for (int isa = 0; isa < MC_CPU_ISA_COUNT; isa++) {
        variant_note((const void *)KERNEL(isa, selective_scan), "selective_scan", isa);
    }
}

static void test_scan_small(void **unused) {
    const int64_t Es[] = { 1, 3, 17, 63, 65 }, Ns[] = { 1, 3, 4, 16, 17 }, Ls[] = { 1, 2, 5, 129 };
    bool ok = true;
    uint64_t seed = 1;
    scan_notes();
    for (size_t a = 0; a < sizeof(Es) / sizeof(Es[0]); a++) {
        for (size_t b = 0; b < sizeof(Ns) / sizeof(Ns[0]); b++) {
            for (size_t c = 0; c < sizeof(Ls) / sizeof(Ls[0]); c++) {
                scan_data d = scan_data_new(Ls[c], Es[a], Ns[b], seed);
                ok &= scan_check(&d, seed);
                scan_data_free(&d);
                seed++;
            }
        }
    }
    assert_true(ok);
}

// Long sequences (the state compounds over 1000 steps) and the real width of mamba-130m (E = 1536).
static void test_scan_large(void **unused) {
    const struct {
        int64_t L, E, N;
    } cases[] = { { 1000, 17, 16 }, { 1000, 65, 17 },  { 1000, 3, 1 }, { 1, 1536, 16 },
                  { 5, 1536, 16 },  { 129, 1536, 16 }, { 2, 1536, 17 } };

    bool ok = true;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        scan_data d = scan_data_new(cases[i].L, cases[i].E, cases[i].N, 1000 + i);
        ok &= scan_check(&d, 1000 + i);
        scan_data_free(&d);
    }
    assert_true(ok);
}

// softplus near and past the threshold, one value per call so each is compared at its own scale (E = N = L = 1,
// h = 0, A = −1, B = C = u = 1, D = 0, z = 50: h' = Δ exactly as the reference's Δ, y = Δ · silu(50)).
static void test_scan_softplus_edges(void **unused) {
    const float vs[] = { -80.0f, -30.0f, -17.0f, -1.0f,     -1e-3f, 0.0f,  1e-3f, 0.5f,   1.0f,
                         15.0f,  19.99f, 20.0f,  20.00001f, 21.0f,  88.0f, 89.0f, 100.0f, 1e30f };
    const float one = 1.0f, A = -1.0f, D = 0.0f, z = 50.0f, zero = 0.0f;
    float bc[2] = { 1.0f, 1.0f };
    bool ok = true;
    for (int isa = 0; isa < MC_CPU_ISA_COUNT; isa++) {
        mc_cpu_selective_scan_fn f = KERNEL(isa, selective_scan);
        if (!variant_note((const void *)f, "selective_scan", isa)) {
            continue;
        }
        for (size_t i = 0; i < sizeof(vs) / sizeof(vs[0]); i++) {
            mc_exec ex = { .n_threads = 1 };
            float y_want, h_want = 0.0f, y_got, h_got = 0.0f;
            mc_ref_selective_scan(&ex, &y_want, &h_want, &one, &vs[i], &zero, &A, bc, bc + 1, 2, &D, &z, 1, 1, 1, 1);
            f(&ex, &y_got, &h_got, &one, &vs[i], &zero, &A, bc, bc + 1, 2, &D, &z, 1, 1, 1, 1);
            char label[96];
            snprintf(label, sizeof(label), "scan[%s] softplus(%g)", isa_names[isa], (double)vs[i]);
            // 2 ulp of the value itself: log1p(exp(v)) by polynomials against libm's.
            ok &= mc_check_close(&h_got, &h_want, 1, 2.5e-7, label);
            ok &= mc_check_close(&y_got, &y_want, 1, 2.5e-7, label);
        }
    }
    assert_true(ok);
}

// Δ = softplus(dt + dt_bias) against torch's own softplus (threshold 20; tools/oracle/softplus_fixture.py), on the
// reference and every variant: with A = 0, h0 = 0 and B = u = 1 one step leaves h = Δ. A threshold below ~16 (where
// log1p(exp(v)) and v still differ in f32) or a wrong branch fails here.
static void test_scan_softplus_reference(void **unused) {
    char *path = mc_test_fixture("expect/softplus.json");
    char *text = path != NULL ? mc_test_read_text(path) : NULL;
    free(path);
    if (text == NULL) {
        skip();
    }
    cJSON *doc = cJSON_Parse(text);
    free(text);
    const cJSON *xs = cJSON_GetObjectItem(doc, "x"), *ys = cJSON_GetObjectItem(doc, "softplus");
    assert_true(cJSON_GetArraySize(xs) == cJSON_GetArraySize(ys) && cJSON_GetArraySize(xs) > 100);
    const float one = 1.0f, A = 0.0f, D = 0.0f, z = 30.0f, zero = 0.0f;
    const float bc[2] = { 1.0f, 1.0f };
    bool ok = true;
    for (int isa = -1; isa < MC_CPU_ISA_COUNT; isa++) { // -1: the reference
        mc_cpu_selective_scan_fn f = isa < 0 ? mc_ref_selective_scan : KERNEL(isa, selective_scan);
        if (f == NULL) {
            continue;
        }
        for (int i = 0; i < cJSON_GetArraySize(xs); i++) {
            const float v = (float)cJSON_GetArrayItem(xs, i)->valuedouble, want = (float)cJSON_GetArrayItem(ys, i)->valuedouble;
            mc_exec ex = { .n_threads = 1 };
            float y = 0.0f, h = 0.0f;
            f(&ex, &y, &h, &one, &v, &zero, &A, bc, bc + 1, 2, &D, &z, 1, 1, 1, 1);
            char label[96];
            snprintf(label, sizeof(label), "scan[%s] delta at %g vs torch's softplus", isa < 0 ? "ref" : isa_names[isa],
                     (double)v);
            ok &= mc_check_close(&h, &want, 1, 4e-7, label);
        }
    }
    cJSON_Delete(doc);
    assert_true(ok);
}

// ---- conv1d -----------------------------------------------------------------------------------------------------

static bool conv_case(int64_t L, int64_t E, int64_t K, bool with_bias, uint64_t seed) {
    mc_test_rng r = { seed };
    const int64_t ldx = 2 * E + 1;
    float *x = alloc_f32(L * ldx), *w = alloc_f32(E * K), *b = alloc_f32(E), *s0 = alloc_f32(E * K);
    float *want_u = alloc_f32(L * E), *want_s = alloc_f32(E * K), *u = alloc_f32(L * E), *s = alloc_f32(E * K);
    mc_test_fill(&r, x, L * ldx, -3.0f, 3.0f);
    mc_test_fill(&r, w, E * K, -1.0f, 1.0f);
    mc_test_fill(&r, b, E, -0.5f, 0.5f);
    mc_test_fill(&r, s0, E * K, -3.0f, 3.0f);
    const float *bias = with_bias ? b : NULL;
    mc_exec ex1 = { .n_threads = 1 };
    memcpy(want_s, s0, (size_t)(E * K) * sizeof(float));
    mc_ref_conv1d(&ex1, want_u, want_s, x, ldx, w, bias, L, E, K);
    bool ok = true;
    for (int isa = 0; isa < MC_CPU_ISA_COUNT; isa++) {
        mc_cpu_conv1d_fn f = KERNEL(isa, conv1d);
        if (f == NULL) {
            continue;
        }
        for (size_t ti = 0; ti < sizeof(thread_counts) / sizeof(thread_counts[0]); ti++) {
            mc_exec ex = { .n_threads = thread_counts[ti] };
            for (int chunked = 0; chunked < 2; chunked++) {
                memcpy(s, s0, (size_t)(E * K) * sizeof(float));
                // Chunks of 1, 2 and the rest: shorter than K, so windows straddle two calls and the state.
                int64_t bounds[4] = { 0, 1, 3, L };
                int n_chunks = chunked && L > 3 ? 3 : 1;
                if (n_chunks == 1) {
                    bounds[1] = L;
                }
                for (int c = 0; c < n_chunks; c++) {
                    int64_t t0 = bounds[c], t1 = bounds[c + 1];
                    f(&ex, u + t0 * E, s, x + t0 * ldx, ldx, w, bias, t1 - t0, E, K);
                }
                char label[160];
                snprintf(label, sizeof(label), "conv1d[%s] threads=%d L=%lld E=%lld K=%lld%s%s u", isa_names[isa],
                         ex.n_threads, (long long)L, (long long)E, (long long)K, with_bias ? " bias" : "",
                         n_chunks > 1 ? " chunked" : "");
                ok &= mc_check_close(u, want_u, L * E, TOL_F32, label);
                label[strlen(label) - 1] = 's';
                ok &= mc_check_close(s, want_s, E * K, TOL_EXACT, label); // moved, not computed: exact
            }
        }
    }
    float *ps[] = { x, w, b, s0, want_u, want_s, u, s };
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) {
        free(ps[i]);
    }
    return ok;
}

static void test_conv1d(void **unused) {
    const int64_t Es[] = { 1, 3, 17, 63, 65, 1536 }, Ks[] = { 1, 2, 3, 4, 5, 9 }, Ls[] = { 1, 2, 5, 129 };
    bool ok = true;
    uint64_t seed = 500;
    for (int isa = 0; isa < MC_CPU_ISA_COUNT; isa++) {
        variant_note((const void *)KERNEL(isa, conv1d), "conv1d", isa);
    }
    for (size_t a = 0; a < sizeof(Es) / sizeof(Es[0]); a++) {
        for (size_t b = 0; b < sizeof(Ks) / sizeof(Ks[0]); b++) {
            for (size_t c = 0; c < sizeof(Ls) / sizeof(Ls[0]); c++) {
                ok &= conv_case(Ls[c], Es[a], Ks[b], (seed & 1) == 0, seed);
                seed++;
            }
        }
    }
    ok &= conv_case(1000, 65, 4, true, seed);
    assert_true(ok);
}

// ---- decode steps of a batch ---------------------------------------------------------------------------------

// `steps` decode steps of n_seq sequences laid out as forward.c's buffers at T = 1 (row b = sequence b), each step
// through the batched step kernel, against n_seq reference calls with L = 1; outputs every step, states at the end.
static bool scan_step_case(int64_t n_seq, int64_t E, int64_t N, int steps, uint64_t seed) {
    mc_test_rng r = { seed };
    const int64_t R = 3, ldbc = R + 2 * N, ldz = 2 * E + 1;
    float *u = alloc_f32(n_seq * E), *dt = alloc_f32(n_seq * E), *q = alloc_f32(n_seq * ldbc);
    float *xz = alloc_f32(n_seq * ldz), *bias = alloc_f32(E), *A = alloc_f32(E * N), *D = alloc_f32(E);
    float *h0 = alloc_f32(n_seq * E * N), *want_h = alloc_f32(n_seq * E * N), *got_h = alloc_f32(n_seq * E * N);
    float *want_y = alloc_f32(n_seq * E), *got_y = alloc_f32(n_seq * E);
    mc_test_fill(&r, bias, E, -2.0f, 1.0f);
    for (int64_t i = 0; i < E * N; i++) {
        A[i] = -expf(mc_test_rng_uniform(&r, -3.0f, logf((float)N) + 0.5f));
    }
    mc_test_fill(&r, D, E, -1.0f, 1.0f);
    mc_test_fill(&r, h0, n_seq * E * N, -1.0f, 1.0f);
    bool ok = true;
    for (int isa = 0; isa < MC_CPU_ISA_COUNT; isa++) {
        mc_cpu_selective_scan_fn f = KERNEL(isa, selective_scan_step);
        if (f == NULL) {
            continue;
        }
        for (size_t ti = 0; ti < sizeof(thread_counts) / sizeof(thread_counts[0]); ti++) {
            mc_exec ex = { .n_threads = thread_counts[ti] }, ex1 = { .n_threads = 1 };
            mc_test_rng rs = { seed + 1 }; // the same inputs for every variant
            memcpy(want_h, h0, (size_t)(n_seq * E * N) * sizeof(float));
            memcpy(got_h, h0, (size_t)(n_seq * E * N) * sizeof(float));
            for (int step = 0; step < steps; step++) {
                mc_test_fill(&rs, u, n_seq * E, -2.0f, 2.0f);
                for (int64_t i = 0; i < n_seq * E; i++) {
                    dt[i] = draw_dt(&rs);
                }
                mc_test_fill(&rs, q, n_seq * ldbc, -1.0f, 1.0f);
                mc_test_fill(&rs, xz, n_seq * ldz, -4.0f, 4.0f);
                for (int64_t b = 0; b < n_seq; b++) {
                    mc_ref_selective_scan(&ex1, want_y + b * E, want_h + b * E * N, u + b * E, dt + b * E, bias, A,
                                          q + b * ldbc + R, q + b * ldbc + R + N, ldbc, D, xz + b * ldz + E, ldz, 1, E,
                                          N);
                }
                f(&ex, got_y, got_h, u, dt, bias, A, q + R, q + R + N, ldbc, D, xz + E, ldz, n_seq, E, N);
                char label[160];
                snprintf(label, sizeof(label), "scan_step[%s] threads=%d n_seq=%lld E=%lld N=%lld step=%d y",
                         isa_names[isa], ex.n_threads, (long long)n_seq, (long long)E, (long long)N, step);
                ok &= mc_check_close(got_y, want_y, n_seq * E, TOL_F32, label);
            }
            char label[160];
            snprintf(label, sizeof(label), "scan_step[%s] threads=%d n_seq=%lld E=%lld N=%lld h", isa_names[isa],
                     ex.n_threads, (long long)n_seq, (long long)E, (long long)N);
            ok &= mc_check_close(got_h, want_h, n_seq * E * N, TOL_F32, label);
        }
    }
    float *ps[] = { u, dt, q, xz, bias, A, D, h0, want_h, got_h, want_y, got_y };
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) {
        free(ps[i]);
    }
    return ok;
}

static bool conv_step_case(int64_t n_seq, int64_t E, int64_t K, int steps, uint64_t seed) {
    mc_test_rng r = { seed };
    const int64_t ldx = 2 * E + 1;
    float *x = alloc_f32(n_seq * ldx), *w = alloc_f32(E * K), *bias = alloc_f32(E), *s0 = alloc_f32(n_seq * E * K);
    float *want_s = alloc_f32(n_seq * E * K), *got_s = alloc_f32(n_seq * E * K);
    float *want_u = alloc_f32(n_seq * E), *got_u = alloc_f32(n_seq * E);
    mc_test_fill(&r, w, E * K, -1.0f, 1.0f);
    mc_test_fill(&r, bias, E, -0.5f, 0.5f);
    mc_test_fill(&r, s0, n_seq * E * K, -3.0f, 3.0f);
    bool ok = true;
    for (int isa = 0; isa < MC_CPU_ISA_COUNT; isa++) {
        mc_cpu_conv1d_fn f = KERNEL(isa, conv1d_step);
        if (f == NULL) {
            continue;
        }
        for (size_t ti = 0; ti < sizeof(thread_counts) / sizeof(thread_counts[0]); ti++) {
            mc_exec ex = { .n_threads = thread_counts[ti] }, ex1 = { .n_threads = 1 };
            mc_test_rng rs = { seed + 1 };
            memcpy(want_s, s0, (size_t)(n_seq * E * K) * sizeof(float));
            memcpy(got_s, s0, (size_t)(n_seq * E * K) * sizeof(float));
            for (int step = 0; step < steps; step++) {
                mc_test_fill(&rs, x, n_seq * ldx, -3.0f, 3.0f);
                for (int64_t b = 0; b < n_seq; b++) {
                    mc_ref_conv1d(&ex1, want_u + b * E, want_s + b * E * K, x + b * ldx, ldx, w, bias, 1, E, K);
                }
                f(&ex, got_u, got_s, x, ldx, w, bias, n_seq, E, K);
                char label[160];
                snprintf(label, sizeof(label), "conv1d_step[%s] threads=%d n_seq=%lld E=%lld K=%lld step=%d u",
                         isa_names[isa], ex.n_threads, (long long)n_seq, (long long)E, (long long)K, step);
                ok &= mc_check_close(got_u, want_u, n_seq * E, TOL_F32, label);
            }
            char label[160];
            snprintf(label, sizeof(label), "conv1d_step[%s] threads=%d n_seq=%lld E=%lld K=%lld state", isa_names[isa],
                     ex.n_threads, (long long)n_seq, (long long)E, (long long)K);
            ok &= mc_check_close(got_s, want_s, n_seq * E * K, TOL_EXACT, label);
        }
    }
    float *ps[] = { x, w, bias, s0, want_s, got_s, want_u, got_u };
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) {
        free(ps[i]);
    }
    return ok;
}

static void test_steps(void **unused) {
    const int64_t n_seqs[] = { 1, 3, 8 }, Es[] = { 1, 17, 65, 1536 }, Ns[] = { 1, 16, 17 }, Ks[] = { 1, 4, 5, 9 };
    bool ok = true;
    uint64_t seed = 9000;
    for (int isa = 0; isa < MC_CPU_ISA_COUNT; isa++) {
        variant_note((const void *)KERNEL(isa, selective_scan_step), "selective_scan_step", isa);
        variant_note((const void *)KERNEL(isa, conv1d_step), "conv1d_step", isa);
    }
    for (size_t a = 0; a < sizeof(n_seqs) / sizeof(n_seqs[0]); a++) {
        for (size_t b = 0; b < sizeof(Es) / sizeof(Es[0]); b++) {
            for (size_t c = 0; c < sizeof(Ns) / sizeof(Ns[0]); c++) {
                ok &= scan_step_case(n_seqs[a], Es[b], Ns[c], 3, seed++);
            }
            for (size_t c = 0; c < sizeof(Ks) / sizeof(Ks[0]); c++) {
                ok &= conv_step_case(n_seqs[a], Es[b], Ks[c], 6, seed++); // 6 steps > K: the window turns over
            }
        }
    }
    assert_true(ok);
}

// ---- rmsnorm ----------------------------------------------------------------------------------------------------

static void test_rmsnorm(void **unused) {
    const int64_t Ms[] = { 1, 3, 17, 64 }, Hs[] = { 1, 3, 17, 63, 65, 768, 1536 }; // 64 × 1536: threaded
    bool ok = true;
    for (int isa = 0; isa < MC_CPU_ISA_COUNT; isa++) {
        mc_cpu_rmsnorm_fn f = KERNEL(isa, rmsnorm);
        if (!variant_note((const void *)f, "rmsnorm", isa)) {
            continue;
        }
        for (size_t a = 0; a < sizeof(Ms) / sizeof(Ms[0]); a++) {
            for (size_t b = 0; b < sizeof(Hs) / sizeof(Hs[0]); b++) {
                const int64_t M = Ms[a], H = Hs[b];
                mc_test_rng r = { (uint64_t)(M * 7919 + H) };
                float *x0 = alloc_f32(M * H), *add = alloc_f32(M * H), *w = alloc_f32(H);
                float *xw = alloc_f32(M * H), *yw = alloc_f32(M * H), *xg = alloc_f32(M * H), *yg = alloc_f32(M * H);
                mc_test_fill(&r, x0, M * H, -10.0f, 10.0f);
                mc_test_fill(&r, add, M * H, -3.0f, 3.0f);
                mc_test_fill(&r, w, H, 0.5f, 1.5f);
                for (int with_add = 0; with_add < 2; with_add++) {
                    mc_exec ex1 = { .n_threads = 1 };
                    memcpy(xw, x0, (size_t)(M * H) * sizeof(float));
                    mc_ref_rmsnorm(&ex1, yw, xw, with_add ? add : NULL, w, M, H, 1e-5f);
                    for (size_t ti = 0; ti < sizeof(thread_counts) / sizeof(thread_counts[0]); ti++) {
                        mc_exec ex = { .n_threads = thread_counts[ti] };
                        memcpy(xg, x0, (size_t)(M * H) * sizeof(float));
                        f(&ex, yg, xg, with_add ? add : NULL, w, M, H, 1e-5f);
                        char label[128];
                        snprintf(label, sizeof(label), "rmsnorm[%s] threads=%d M=%lld H=%lld%s y", isa_names[isa],
                                 ex.n_threads, (long long)M, (long long)H, with_add ? " add" : "");
                        ok &= mc_check_close(yg, yw, M * H, TOL_NORM, label);
                        label[strlen(label) - 1] = 'x';
                        ok &= mc_check_close(xg, xw, M * H, TOL_EXACT, label); // one f32 add, same as the ref
                    }
                }
                float *ps[] = { x0, add, w, xw, yw, xg, yg };
                for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) {
                    free(ps[i]);
                }
            }
        }
    }
    assert_true(ok);
}

// ---- embed ------------------------------------------------------------------------------------------------------

// A [V, H] table in dtype with random bits (f16/bf16: every finite pattern, subnormals included) or int8 values
// with `group`-wide scale groups.
static void *table_new(mc_test_rng *r, int dtype, int64_t V, int64_t H, int64_t group, float **scales) {
    int64_t n = V * H;
    *scales = NULL;
    if (dtype == MC_DTYPE_F32) {
        float *p = alloc_f32(n);
        mc_test_fill(r, p, n, -2.0f, 2.0f);
        return p;
    }
    if (dtype == MC_DTYPE_I8) {
        int8_t *p = malloc((size_t)n);
        assert_non_null(p);
        for (int64_t i = 0; i < n; i++) {
            p[i] = (int8_t)(mc_test_rng_u32(r) & 0xff);
        }
        int64_t n_groups = (H + group - 1) / group;
        *scales = alloc_f32(V * n_groups);
        mc_test_fill(r, *scales, V * n_groups, 1e-4f, 0.05f);
        return p;
    }
    uint16_t *p = malloc((size_t)n * sizeof(uint16_t));
    assert_non_null(p);
    for (int64_t i = 0; i < n; i++) {
        uint16_t v;
        do { // no inf/NaN: the all-ones exponent is 0x7c00 in f16, 0x7f80 in bf16
            v = (uint16_t)mc_test_rng_u32(r);
        } while (dtype == MC_DTYPE_F16 ? (v & 0x7c00) == 0x7c00 : (v & 0x7f80) == 0x7f80);
        p[i] = v;
    }
    return p;
}

static void test_embed(void **unused) {
    const int dtypes[] = { MC_DTYPE_F32, MC_DTYPE_F16, MC_DTYPE_BF16, MC_DTYPE_I8 };
    const char *dtype_names[] = { "f32", "f16", "bf16", "int8" };
    const int64_t Hs[] = { 1, 3, 17, 63, 65, 768 }, groups[] = { 1, 7, 32, 0 }; // 0: one group per row
    const int64_t V = 37;
    bool ok = true;
    for (int isa = 0; isa < MC_CPU_ISA_COUNT; isa++) {
        mc_cpu_embed_fn f = KERNEL(isa, embed);
        if (!variant_note((const void *)f, "embed", isa)) {
            continue;
        }
        for (size_t di = 0; di < sizeof(dtypes) / sizeof(dtypes[0]); di++) {
            for (size_t hi = 0; hi < sizeof(Hs) / sizeof(Hs[0]); hi++) {
                size_t n_groups = dtypes[di] == MC_DTYPE_I8 ? sizeof(groups) / sizeof(groups[0]) : 1;
                for (size_t gi = 0; gi < n_groups; gi++) {
                    const int64_t H = Hs[hi], group = groups[gi] > 0 ? groups[gi] : H, n = 100; // 100 × 768: threaded
                    mc_test_rng r = { 77 + di * 100 + hi * 10 + gi };
                    float *scales;
                    void *data = table_new(&r, dtypes[di], V, H, group, &scales);
                    mc_weight w = {
                        .data = data, .dtype = dtypes[di], .rows = V, .cols = H, .scales = scales, .group = group
                    };
                    int32_t ids[100];
                    for (int64_t i = 0; i < n; i++) {
                        ids[i] = i == 0 ? 0 : i == 1 ? (int32_t)(V - 1) : (int32_t)(mc_test_rng_u32(&r) % V);
                    }
                    float *want = alloc_f32(n * H), *got = alloc_f32(n * H);
                    mc_exec ex1 = { .n_threads = 1 };
                    mc_ref_embed(&ex1, want, &w, ids, n, H);
                    for (size_t ti = 0; ti < sizeof(thread_counts) / sizeof(thread_counts[0]); ti++) {
                        mc_exec ex = { .n_threads = thread_counts[ti] };
                        f(&ex, got, &w, ids, n, H);
                        char label[128];
                        snprintf(label, sizeof(label), "embed[%s] %s threads=%d H=%lld group=%lld", isa_names[isa],
                                 dtype_names[di], ex.n_threads, (long long)H, (long long)group);
                        ok &= mc_check_close(got, want, n * H, TOL_EXACT, label);
                    }
                    free(want);
                    free(got);
                    free(data);
                    free(scales);
                }
            }
        }
    }
    assert_true(ok);
}

// The cpu loss runs the reference's rows on threads: equal to mc_ref_nll bit for bit at any thread count, and the
// reference itself against a direct double-precision log-softmax (the max-subtraction must not change the value).
static void test_nll(void **unused) {
    enum { T = 37, V = 2003 }; // T·V over the one-thread limit (2^16), so 2 and 3 threads split the rows
    mc_test_rng r = { 99 };
    float *logits = malloc((size_t)T * V * sizeof(float));
    mc_test_fill(&r, logits, (int64_t)T * V, -30.0f, 30.0f);
    int32_t targets[T];
    for (int t = 0; t < T; t++) {
        targets[t] = (int32_t)((t * 7919 + 5) % V);
    }
    double want[T], got[T];
    const mc_exec one = { .n_threads = 1 };
    mc_ref_nll(&one, want, logits, T, V, targets);
    for (int nt = 1; nt <= 3; nt++) {
        const mc_exec ex = { .n_threads = nt };
        memset(got, 0, sizeof(got));
        mc_cpu_nll(&ex, got, logits, T, V, targets);
        assert_memory_equal(got, want, sizeof(want));
    }
    for (int t = 0; t < T; t++) {
        double sum = 0;
        for (int v = 0; v < V; v++) {
            sum += exp((double)logits[t * V + v]);
        }
        assert_true(fabs(want[t] - (log(sum) - logits[t * V + targets[t]])) < 1e-9 * fmax(1.0, fabs(want[t])));
    }
    free(logits);
}

// The best table is the last one this CPU runs, the portable one always runs, and no table exists past the enum.
static void test_select(void **unused) {
    const mc_cpu_kernels *best = NULL;
    for (int isa = 0; isa < MC_CPU_ISA_COUNT; isa++) {
        const mc_cpu_kernels *k = mc_cpu_kernels_get(isa);
        if (k != NULL) {
            assert_int_equal(k->isa, isa);
            assert_string_equal(k->name, isa_names[isa]);
            best = k;
        }
    }
    assert_ptr_equal(mc_cpu_kernels_best(), best);
    assert_non_null(mc_cpu_kernels_get(MC_CPU_ISA_C));
    assert_null(mc_cpu_kernels_get(MC_CPU_ISA_COUNT));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_select),     cmocka_unit_test(test_scan_softplus_edges),
        cmocka_unit_test(test_scan_softplus_reference),
        cmocka_unit_test(test_scan_small), cmocka_unit_test(test_scan_large),
        cmocka_unit_test(test_conv1d),     cmocka_unit_test(test_steps),
        cmocka_unit_test(test_rmsnorm),    cmocka_unit_test(test_embed),      cmocka_unit_test(test_nll),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
