// The reference backward kernels (src/kernels/ref/backward.c) against central finite differences of double-precision
// copies of the forward twins, on awkward small shapes. Each double forward is first checked against the f32 twin
// it copies, so the finite differences differentiate the function the reference computes.
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
#include "kernels/dtype.h"
#include "kernels/ref/backward.h"
#include "kernels/ref/ref.h"

// Analytic f32 gradient vs f64 central differences, bound relative to max|want| (style §2.7). What remains is the
// f32 reference itself (states rounded every step, the gradient taken at the f32 forward's point): measured worst
// 4.6e-7 over every case here (scan dA, L = 17), plus the differences' own floor of ~1e-11 absolute, which reaches
// 2.1e-6 of scale only where a whole gradient is ~4e-6 (scan dA at L = 2, rmsnorm dx at H = 1). Each planted bug
// (a factor of 2, a dropped term, a one-step or one-tap shift, a wrong int8 scale group) reached 0.36 of scale or
// more in some case.
#define TOL_GRAD 1e-5
// f64 copy of the forward vs the f32 twin: the same math with f32 rounding of every step (measured 3.8e-7).
#define TOL_FWD 2e-6
// Chunked backward vs one long run: the same f32 values, except the carried adjoint rounded to f32 at the boundary
// and the parameter sums added in two parts (measured 1.1e-7).
#define TOL_CHUNK 1e-6
// The second call of an accumulating kernel doubles what the first one added (one more rounding; measured 1.1e-7).
#define TOL_TWICE 1e-6
// Step of the central differences, relative to max(1, |p|): truncation ~h²·f''' and cancellation ~1e-16·|loss|/h,
// both ~1e-11.
#define FD_STEP 1e-5
// Padding columns between rows (ld > width) must come back unchanged.
#define SENTINEL 7.25f
#define MAX_N    8

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

// ---- helpers ----------------------------------------------------------------------------------------------------

typedef struct rng {
    uint64_t s;
} rng;

static uint32_t rng_u32(rng *r) {
    r->s = r->s * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(r->s >> 33);
}

static float rng_uniform(rng *r, float lo, float hi) {
    return lo + (hi - lo) * ((float)rng_u32(r) / 4294967296.0f);
}

// Every allocation of a case, freed together.
typedef struct pool {
    void *p[256];
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

static float *new_f32(pool *pl, int64_t n, float fillv) {
    float *p = pool_alloc(pl, (size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) {
        p[i] = fillv;
    }
    return p;
}

static float *new_rand(pool *pl, rng *r, int64_t n, float lo, float hi) {
    float *p = new_f32(pl, n, 0.0f);
    for (int64_t i = 0; i < n; i++) {
        p[i] = rng_uniform(r, lo, hi);
    }
    return p;
}

// The f64 copy the finite differences perturb: exactly the f32 values, so both sides start at the same point.
static double *to_f64(pool *pl, const float *f, int64_t n) {
    if (f == NULL) {
        return NULL;
    }
    double *p = pool_alloc(pl, (size_t)n * sizeof(double));
    for (int64_t i = 0; i < n; i++) {
        p[i] = f[i];
    }
    return p;
}

typedef double (*loss_fn)(const void *ctx);

// Central differences of loss(ctx) wrt the [rows, cols] elements of p (rows ld apart), into want [rows, cols].
static void fd_grad(float *want, double *p, int64_t rows, int64_t cols, int64_t ld, loss_fn loss, const void *ctx) {
    for (int64_t i = 0; i < rows; i++) {
        for (int64_t j = 0; j < cols; j++) {
            double *q = p + i * ld + j, q0 = *q, h = FD_STEP * fmax(1.0, fabs(q0));
            double up = q0 + h, dn = q0 - h;
            *q = up;
            double lp = loss(ctx);
            *q = dn;
            double lm = loss(ctx);
            *q = q0;
            want[i * cols + j] = (float)((lp - lm) / (up - dn));
        }
    }
}

// buf's [rows, cols] elements (rows ld apart) against the finite differences of loss wrt p's (same layout).
static bool check_fd(const float *buf, double *p, int64_t rows, int64_t cols, int64_t ld, loss_fn loss, const void *ctx,
                     const char *what, const char *label) {
    float *got = malloc((size_t)(rows * cols + 1) * sizeof(float));
    float *want = malloc((size_t)(rows * cols + 1) * sizeof(float));
    assert_true(got != NULL && want != NULL);
    for (int64_t i = 0; i < rows; i++) {
        memcpy(got + i * cols, buf + i * ld, (size_t)cols * sizeof(float));
    }
    fd_grad(want, p, rows, cols, ld, loss, ctx);
    char full[200];
    snprintf(full, sizeof(full), "%s %s", label, what);
    bool ok = mc_check_close(got, want, rows * cols, TOL_GRAD, full);
    free(got);
    free(want);
    return ok;
}

// Columns outside [c0, c1) of every row must still hold SENTINEL.
static bool check_padding(const float *buf, int64_t rows, int64_t ld, int64_t c0, int64_t c1, const char *what,
                          const char *label) {
    for (int64_t i = 0; i < rows; i++) {
        for (int64_t j = 0; j < ld; j++) {
            if ((j < c0 || j >= c1) && buf[i * ld + j] != SENTINEL) {
                fprintf(stderr, "%s %s: padding [%lld, %lld] overwritten with %g\n", label, what, (long long)i,
                        (long long)j, buf[i * ld + j]);
                return false;
            }
        }
    }
    return true;
}

// An accumulating output after two identical calls (twice) against after one (once).
static bool check_twice(const float *twice, const float *once, int64_t n, const char *what, const char *label) {
    float *dbl = malloc((size_t)(n + 1) * sizeof(float));
    assert_non_null(dbl);
    for (int64_t i = 0; i < n; i++) {
        dbl[i] = 2.0f * once[i];
    }
    char full[200];
    snprintf(full, sizeof(full), "%s %s accumulates", label, what);
    bool ok = mc_check_close(twice, dbl, n, TOL_TWICE, full);
    free(dbl);
    return ok;
}

static bool check_fwd(const float *got, const double *want, int64_t n, const char *what, const char *label) {
    float *w = malloc((size_t)(n + 1) * sizeof(float));
    assert_non_null(w);
    for (int64_t i = 0; i < n; i++) {
        w[i] = (float)want[i];
    }
    char full[200];
    snprintf(full, sizeof(full), "%s %s: f64 forward copy vs the f32 twin", label, what);
    bool ok = mc_check_close(got, w, n, TOL_FWD, full);
    free(w);
    return ok;
}

// Rows [t0, t1) of each of Bt sequences of L rows (ld floats each) into dst, packed as Bt sequences of t1 − t0 rows.
static void slice_rows(float *dst, const float *src, int64_t Bt, int64_t L, int64_t t0, int64_t t1, int64_t ld) {
    for (int64_t b = 0; b < Bt; b++) {
        memcpy(dst + b * (t1 - t0) * ld, src + (b * L + t0) * ld, (size_t)((t1 - t0) * ld) * sizeof(float));
    }
}

static double dsilu(double v) {
    return v / (1.0 + exp(-v));
}

// ---- matmul -----------------------------------------------------------------------------------------------------

typedef struct mm_prob {
    int64_t M, N, K, ldx;
    double *x, *W, *bias, *r; // [M, ldx], [N, K] (as mc_weight_at reads it), [N] or NULL, [M, N]
} mm_prob;

static double mm_forward_d(const mm_prob *p, double *y) {
    double loss = 0;
    for (int64_t m = 0; m < p->M; m++) {
        for (int64_t n = 0; n < p->N; n++) {
            double acc = p->bias != NULL ? p->bias[n] : 0.0;
            for (int64_t k = 0; k < p->K; k++) {
                acc += p->W[n * p->K + k] * p->x[m * p->ldx + k];
            }
            if (y != NULL) {
                y[m * p->N + n] = acc;
            }
            loss += p->r[m * p->N + n] * acc;
        }
    }
    return loss;
}

static double mm_loss(const void *ctx) {
    return mm_forward_d(ctx, NULL);
}

// A [N, K] weight in dtype (int8: groups of `group`, scales in [0.005, 0.02]), from values in [-1, 1].
static mc_weight weight_new(pool *pl, rng *r, int dtype, int64_t N, int64_t K, int64_t group) {
    mc_weight w = { .dtype = dtype, .rows = N, .cols = K, .group = group };
    if (dtype == MC_DTYPE_F32) {
        w.data = new_rand(pl, r, N * K, -1.0f, 1.0f);
    } else if (dtype == MC_DTYPE_I8) {
        int8_t *q = pool_alloc(pl, (size_t)(N * K));
        for (int64_t i = 0; i < N * K; i++) {
            q[i] = (int8_t)(rng_u32(r) & 0xff);
        }
        w.data = q;
        w.scales = new_rand(pl, r, N * ((K + group - 1) / group), 0.005f, 0.02f);
    } else {
        uint16_t *h = pool_alloc(pl, (size_t)(N * K) * sizeof(uint16_t));
        for (int64_t i = 0; i < N * K; i++) {
            float v = rng_uniform(r, -1.0f, 1.0f);
            h[i] = dtype == MC_DTYPE_BF16 ? mc_f32_to_bf16(v) : mc_f32_to_f16(v);
        }
        w.data = h;
    }
    return w;
}

static bool matmul_case(int dtype, int64_t M, int64_t N, int64_t K, bool with_bias, uint64_t seed) {
    static const char *names[] = { "f32", "f16", "bf16", "int8" };
    pool pl = { 0 };
    rng r = { seed };
    const int64_t ldx = K + 2, group = K > 2 ? 2 : 1; // K odd: the last int8 group is short
    char label[128];
    snprintf(label, sizeof(label), "matmul %s M=%lld N=%lld K=%lld%s", names[dtype], (long long)M, (long long)N,
             (long long)K, with_bias ? " bias" : "");
    mc_weight w = weight_new(&pl, &r, dtype, N, K, group);
    float *x = new_rand(&pl, &r, M * ldx, -2.0f, 2.0f), *dy = new_rand(&pl, &r, M * N, -1.0f, 1.0f);
    float *bias = with_bias ? new_rand(&pl, &r, N, -1.0f, 1.0f) : NULL;
    mm_prob p = { .M = M,
                  .N = N,
                  .K = K,
                  .ldx = ldx,
                  .x = to_f64(&pl, x, M * ldx),
                  .bias = to_f64(&pl, bias, N),
                  .r = to_f64(&pl, dy, M * N) };
    p.W = pool_alloc(&pl, (size_t)(N * K) * sizeof(double));
    for (int64_t i = 0; i < N * K; i++) {
        p.W[i] = mc_weight_at(&w, i / K, i % K);
    }
    float *y = new_f32(&pl, M * N, 0.0f);
    double *yd = pool_alloc(&pl, (size_t)(M * N) * sizeof(double));
    const mc_exec ex = { .n_threads = 1 };
    mc_ref_matmul(&ex, y, x, ldx, &w, bias, M, N, K);
    mm_forward_d(&p, yd);
    bool ok = check_fwd(y, yd, M * N, "y", label);

    // dx, written: padding keeps its sentinel; then accumulated: two calls on zeros give twice one call.
    float *dx = new_f32(&pl, M * ldx, SENTINEL), *dx2 = new_f32(&pl, M * ldx, SENTINEL);
    for (int64_t m = 0; m < M; m++) {
        for (int64_t k = 0; k < K; k++) {
            dx[m * ldx + k] = NAN;
            dx2[m * ldx + k] = 0.0f;
        }
    }
    assert_int_equal(mc_ref_matmul_dx(&ex, dx, ldx, dy, &w, M, N, K, false), MC_OK);
    ok &= check_fd(dx, p.x, M, K, ldx, mm_loss, &p, "dx", label);
    ok &= check_padding(dx, M, ldx, 0, K, "dx", label);
    for (int call = 0; call < 2; call++) {
        assert_int_equal(mc_ref_matmul_dx(&ex, dx2, ldx, dy, &w, M, N, K, true), MC_OK);
    }
    for (int64_t m = 0; m < M; m++) {
        ok &= check_twice(dx2 + m * ldx, dx + m * ldx, K, "dx", label);
    }
    ok &= check_padding(dx2, M, ldx, 0, K, "dx accumulate", label);

    // dW and dbias (f32 whatever the weight's dtype: the gradient wrt the values the forward read).
    float *dw = new_f32(&pl, N * K, 0.0f), *db = new_f32(&pl, N, 0.0f);
    assert_int_equal(mc_ref_matmul_dw(&ex, dw, with_bias ? db : NULL, dy, x, ldx, M, N, K), MC_OK);
    ok &= check_fd(dw, p.W, N, K, K, mm_loss, &p, "dW", label);
    if (with_bias) {
        ok &= check_fd(db, p.bias, 1, N, N, mm_loss, &p, "dbias", label);
    }
    float *dw1 = new_f32(&pl, N * K, 0.0f), *db1 = new_f32(&pl, N, 0.0f);
    memcpy(dw1, dw, (size_t)(N * K) * sizeof(float));
    memcpy(db1, db, (size_t)N * sizeof(float));
    assert_int_equal(mc_ref_matmul_dw(&ex, dw, with_bias ? db : NULL, dy, x, ldx, M, N, K), MC_OK);
    ok &= check_twice(dw, dw1, N * K, "dW", label);
    ok &= check_twice(db, db1, N, "dbias", label);
    pool_free(&pl);
    return ok;
}

static void test_matmul(void **unused) {
    const int dtypes[] = { MC_DTYPE_F32, MC_DTYPE_F16, MC_DTYPE_BF16, MC_DTYPE_I8 };
    const int64_t Ms[] = { 1, 3, 7 }, Ns[] = { 1, 5 }, Ks[] = { 1, 3, 9 };
    bool ok = true;
    uint64_t seed = 100;
    for (size_t d = 0; d < ARRAY_LEN(dtypes); d++) {
        for (size_t a = 0; a < ARRAY_LEN(Ms); a++) {
            for (size_t b = 0; b < ARRAY_LEN(Ns); b++) {
                for (size_t c = 0; c < ARRAY_LEN(Ks); c++) {
                    ok &= matmul_case(dtypes[d], Ms[a], Ns[b], Ks[c], (seed & 1) != 0, seed);
                    seed++;
                }
            }
        }
    }
    assert_true(ok);
}

// ---- embedding --------------------------------------------------------------------------------------------------

typedef struct emb_prob {
    int64_t n, V, H;
    const int32_t *ids;
    double *W, *r; // [V, H], [n, H]
} emb_prob;

static double emb_loss(const void *ctx) {
    const emb_prob *p = ctx;
    double loss = 0;
    for (int64_t i = 0; i < p->n; i++) {
        for (int64_t h = 0; h < p->H; h++) {
            loss += p->r[i * p->H + h] * p->W[p->ids[i] * p->H + h];
        }
    }
    return loss;
}

static void test_embed(void **unused) {
    enum { n = 11, V = 7, H = 3 };

    const int32_t ids[n] = { 3, 0, 6, 3, 3, 1, 6, 2, 0, 3, 5 }; // repeats add up; row 4 is never used
    pool pl = { 0 };
    rng r = { 7 };
    float *W = new_rand(&pl, &r, V * H, -1.0f, 1.0f), *dout = new_rand(&pl, &r, n * H, -1.0f, 1.0f);
    emb_prob p = { .n = n, .V = V, .H = H, .ids = ids, .W = to_f64(&pl, W, V * H), .r = to_f64(&pl, dout, n * H) };
    float *dw = new_f32(&pl, V * H, 0.0f), *dw1 = new_f32(&pl, V * H, 0.0f);
    const mc_exec ex = { .n_threads = 1 };
    assert_int_equal(mc_ref_embed_bwd(&ex, dw, dout, ids, n, V, H), MC_OK);
    bool ok = check_fd(dw, p.W, V, H, H, emb_loss, &p, "dW", "embed");
    memcpy(dw1, dw, sizeof(float) * V * H);
    assert_int_equal(mc_ref_embed_bwd(&ex, dw, dout, ids, n, V, H), MC_OK);
    ok &= check_twice(dw, dw1, V * H, "dW", "embed");
    assert_true(ok);
    pool_free(&pl);
}

// ---- rmsnorm ----------------------------------------------------------------------------------------------------

typedef struct norm_prob {
    int64_t M, H;
    double eps;
    double *x, *w, *r; // [M, H], [H], [M, H]
} norm_prob;

static double norm_forward_d(const norm_prob *p, double *y) {
    double loss = 0;
    for (int64_t m = 0; m < p->M; m++) {
        const double *xm = p->x + m * p->H;
        double ms = 0;
        for (int64_t h = 0; h < p->H; h++) {
            ms += xm[h] * xm[h];
        }
        double rr = 1.0 / sqrt(ms / (double)p->H + p->eps);
        for (int64_t h = 0; h < p->H; h++) {
            double v = xm[h] * rr * p->w[h];
            if (y != NULL) {
                y[m * p->H + h] = v;
            }
            loss += p->r[m * p->H + h] * v;
        }
    }
    return loss;
}

static double norm_loss(const void *ctx) {
    return norm_forward_d(ctx, NULL);
}

static void test_rmsnorm(void **unused) {
    const int64_t Ms[] = { 1, 3, 5 }, Hs[] = { 1, 2, 3, 17 };
    bool ok = true;
    for (size_t a = 0; a < ARRAY_LEN(Ms); a++) {
        for (size_t b = 0; b < ARRAY_LEN(Hs); b++) {
            const int64_t M = Ms[a], H = Hs[b];
            const float eps = 1e-5f;
            pool pl = { 0 };
            rng r = { 300 + a * 10 + b };
            char label[64];
            snprintf(label, sizeof(label), "rmsnorm M=%lld H=%lld", (long long)M, (long long)H);
            float *x = new_rand(&pl, &r, M * H, -2.0f, 2.0f), *w = new_rand(&pl, &r, H, 0.5f, 1.5f);
            float *dy = new_rand(&pl, &r, M * H, -1.0f, 1.0f);
            x[0] = H > 1 ? 1e-3f : x[0]; // one small element: its own r³ term is what keeps its gradient right
            norm_prob p = { .M = M,
                            .H = H,
                            .eps = eps,
                            .x = to_f64(&pl, x, M * H),
                            .w = to_f64(&pl, w, H),
                            .r = to_f64(&pl, dy, M * H) };
            float *xc = new_f32(&pl, M * H, 0.0f), *y = new_f32(&pl, M * H, 0.0f);
            double *yd = pool_alloc(&pl, (size_t)(M * H) * sizeof(double));
            memcpy(xc, x, sizeof(float) * (size_t)(M * H));
            const mc_exec ex = { .n_threads = 1 };
            mc_ref_rmsnorm(&ex, y, xc, NULL, w, M, H, eps);
            norm_forward_d(&p, yd);
            ok &= check_fwd(y, yd, M * H, "y", label);
            float *dx = new_f32(&pl, M * H, 0.0f), *dw = new_f32(&pl, H, 0.0f);
            float *dx1 = new_f32(&pl, M * H, 0.0f), *dw1 = new_f32(&pl, H, 0.0f);
            assert_int_equal(mc_ref_rmsnorm_bwd(&ex, dx, dw, dy, x, w, M, H, eps), MC_OK);
            ok &= check_fd(dx, p.x, M, H, H, norm_loss, &p, "dx", label);
            ok &= check_fd(dw, p.w, 1, H, H, norm_loss, &p, "dw", label);
            memcpy(dx1, dx, sizeof(float) * (size_t)(M * H));
            memcpy(dw1, dw, sizeof(float) * (size_t)H);
            assert_int_equal(mc_ref_rmsnorm_bwd(&ex, dx, dw, dy, x, w, M, H, eps), MC_OK);
            ok &= check_twice(dx, dx1, M * H, "dx", label);
            ok &= check_twice(dw, dw1, H, "dw", label);
            pool_free(&pl);
        }
    }
    assert_true(ok);
}

// ---- conv1d -----------------------------------------------------------------------------------------------------

typedef struct conv_prob {
    int64_t Bt, L, E, K, ldx;
    double *x;      // [Bt·L, ldx]
    double *state0; // [Bt, E, K]
    double *w, *b;  // [E, K], [E] or NULL
    double *r;      // [Bt·L, E] weights of u in the loss
    double *rs;     // [Bt, E, K] weights of the window left behind, or NULL
} conv_prob;

// Input s of channel e of sequence seq, s < 0 from the starting window.
static double conv_in(const conv_prob *p, int64_t seq, int64_t e, int64_t s) {
    return s >= 0 ? p->x[(seq * p->L + s) * p->ldx + e] : p->state0[(seq * p->E + e) * p->K + p->K + s];
}

static double conv_forward_d(const conv_prob *p, double *u, double *sT) {
    const int64_t L = p->L, E = p->E, K = p->K;
    double loss = 0;
    for (int64_t seq = 0; seq < p->Bt; seq++) {
        for (int64_t e = 0; e < E; e++) {
            for (int64_t t = 0; t < L; t++) {
                double c = p->b != NULL ? p->b[e] : 0.0;
                for (int64_t k = 0; k < K; k++) {
                    c += p->w[e * K + k] * conv_in(p, seq, e, t - (K - 1) + k);
                }
                if (u != NULL) {
                    u[(seq * L + t) * E + e] = dsilu(c);
                }
                loss += p->r[(seq * L + t) * E + e] * dsilu(c);
            }
            for (int64_t k = 0; k < K; k++) {
                double v = conv_in(p, seq, e, L - K + k);
                if (sT != NULL) {
                    sT[(seq * E + e) * K + k] = v;
                }
                loss += p->rs != NULL ? p->rs[(seq * E + e) * K + k] * v : 0.0;
            }
        }
    }
    return loss;
}

static double conv_loss(const void *ctx) {
    return conv_forward_d(ctx, NULL, NULL);
}

typedef struct conv_in_f32 { // the f32 inputs of one case
    int64_t Bt, L, E, K, ldx;
    float *x, *state0, *w, *b, *du, *dsT;
} conv_in_f32;

// The f32 twin over Bt sequences (it takes one at a time), for the forward check and the chunk states.
static void conv_forward_f32(const conv_in_f32 *c, float *u, float *state) {
    const mc_exec ex = { .n_threads = 1 };
    memcpy(state, c->state0, sizeof(float) * (size_t)(c->Bt * c->E * c->K));
    for (int64_t seq = 0; seq < c->Bt; seq++) {
        mc_ref_conv1d(&ex, u + seq * c->L * c->E, state + seq * c->E * c->K, c->x + seq * c->L * c->ldx, c->ldx, c->w,
                      c->b, c->L, c->E, c->K);
    }
}

static bool conv_case(int64_t Bt, int64_t L, int64_t E, int64_t K, bool bias, bool final_grad, uint64_t seed) {
    pool pl = { 0 };
    rng r = { seed };
    const int64_t ldx = 2 * E + 1, n = Bt * L;
    char label[128];
    snprintf(label, sizeof(label), "conv1d Bt=%lld L=%lld E=%lld K=%lld%s%s", (long long)Bt, (long long)L, (long long)E,
             (long long)K, bias ? " bias" : "", final_grad ? " dstate_final" : "");
    conv_in_f32 c = { .Bt = Bt, .L = L, .E = E, .K = K, .ldx = ldx };
    c.x = new_rand(&pl, &r, n * ldx, -2.0f, 2.0f);
    c.state0 = new_rand(&pl, &r, Bt * E * K, -2.0f, 2.0f);
    c.w = new_rand(&pl, &r, E * K, -1.0f, 1.0f);
    c.b = bias ? new_rand(&pl, &r, E, -0.5f, 0.5f) : NULL;
    c.du = new_rand(&pl, &r, n * E, -1.0f, 1.0f);
    c.dsT = final_grad ? new_rand(&pl, &r, Bt * E * K, -1.0f, 1.0f) : NULL;
    conv_prob p = { .Bt = Bt,
                    .L = L,
                    .E = E,
                    .K = K,
                    .ldx = ldx,
                    .x = to_f64(&pl, c.x, n * ldx),
                    .state0 = to_f64(&pl, c.state0, Bt * E * K),
                    .w = to_f64(&pl, c.w, E * K),
                    .b = to_f64(&pl, c.b, E),
                    .r = to_f64(&pl, c.du, n * E),
                    .rs = to_f64(&pl, c.dsT, Bt * E * K) };
    float *u = new_f32(&pl, n * E, 0.0f), *sT = new_f32(&pl, Bt * E * K, 0.0f);
    double *ud = pool_alloc(&pl, sizeof(double) * (size_t)(n * E)), *sTd = pool_alloc(&pl, sizeof(double) * Bt * E * K);
    conv_forward_f32(&c, u, sT);
    conv_forward_d(&p, ud, sTd);
    bool ok = check_fwd(u, ud, n * E, "u", label);
    ok &= check_fwd(sT, sTd, Bt * E * K, "final window", label); // both checks run: each reports its own failure

    float *dx = new_f32(&pl, n * ldx, SENTINEL), *dw = new_f32(&pl, E * K, 0.0f), *db = new_f32(&pl, E, 0.0f);
    float *ds0 = new_f32(&pl, Bt * E * K, NAN), *dw1 = new_f32(&pl, E * K, 0.0f), *db1 = new_f32(&pl, E, 0.0f);
    for (int64_t i = 0; i < n; i++) {
        for (int64_t e = 0; e < E; e++) {
            dx[i * ldx + e] = NAN;
        }
    }
    const mc_exec ex = { .n_threads = 1 };
    for (int call = 0; call < 2; call++) {
        assert_int_equal(mc_ref_conv1d_bwd(&ex, dx, dw, bias ? db : NULL, ds0, c.du, c.dsT, c.x, ldx, c.state0, c.w,
                                           c.b, Bt, L, E, K),
                         MC_OK);
        if (call == 0) {
            memcpy(dw1, dw, sizeof(float) * (size_t)(E * K));
            memcpy(db1, db, sizeof(float) * (size_t)E);
        }
    }
    ok &= check_fd(dx, p.x, n, E, ldx, conv_loss, &p, "dx", label);
    ok &= check_padding(dx, n, ldx, 0, E, "dx", label);
    ok &= check_fd(dw1, p.w, E, K, K, conv_loss, &p, "dw", label);
    ok &= check_twice(dw, dw1, E * K, "dw", label);
    if (bias) {
        ok &= check_fd(db1, p.b, 1, E, E, conv_loss, &p, "db", label);
        ok &= check_twice(db, db1, E, "db", label);
    }
    ok &= check_fd(ds0, p.state0, Bt * E, K, K, conv_loss, &p, "dstate0", label);
    pool_free(&pl);
    return ok;
}

// Every combination of the awkward sizes, including windows longer than the chunk (L < K), where the window left
// behind reaches back into state0.
static void test_conv1d(void **unused) {
    const int64_t Bts[] = { 1, 2, 3 }, Ls[] = { 1, 2, 5, 17 }, Es[] = { 1, 3, 8 }, Ks[] = { 1, 2, 3, 4 };
    bool ok = true;
    uint64_t seed = 500;
    for (size_t a = 0; a < ARRAY_LEN(Bts); a++) {
        for (size_t b = 0; b < ARRAY_LEN(Ls); b++) {
            for (size_t c = 0; c < ARRAY_LEN(Es); c++) {
                for (size_t d = 0; d < ARRAY_LEN(Ks); d++) {
                    for (int full = 1; full >= 0; full--) { // with bias and final-window gradient, then neither
                        ok &= conv_case(Bts[a], Ls[b], Es[c], Ks[d], full, full, seed++);
                    }
                }
            }
        }
    }
    assert_true(ok);
}

// Two chunks, the second starting from the window the first left and the first ending with the second's dstate0
// (in place: dstate0 aliasing dstate_final), equal one long run; dstate0 NULL is accepted.
static void test_conv1d_chunks(void **unused) {
    const int64_t Bt = 2, L = 11, E = 3, K = 4, ldx = E, n = Bt * L;
    const int64_t splits[] = { 1, 2, 6 }; // a chunk shorter than the window, one of K − 2, one longer
    pool pl = { 0 };
    rng r = { 900 };
    conv_in_f32 c = { .Bt = Bt, .L = L, .E = E, .K = K, .ldx = ldx };
    c.x = new_rand(&pl, &r, n * ldx, -2.0f, 2.0f);
    c.state0 = new_rand(&pl, &r, Bt * E * K, -2.0f, 2.0f);
    c.w = new_rand(&pl, &r, E * K, -1.0f, 1.0f);
    c.b = new_rand(&pl, &r, E, -0.5f, 0.5f);
    c.du = new_rand(&pl, &r, n * E, -1.0f, 1.0f);
    c.dsT = new_rand(&pl, &r, Bt * E * K, -1.0f, 1.0f);
    const mc_exec ex = { .n_threads = 1 };
    float *dx = new_f32(&pl, n * E, 0.0f), *dw = new_f32(&pl, E * K, 0.0f), *db = new_f32(&pl, E, 0.0f);
    float *ds0 = new_f32(&pl, Bt * E * K, 0.0f);
    assert_int_equal(mc_ref_conv1d_bwd(&ex, dx, dw, db, ds0, c.du, c.dsT, c.x, ldx, c.state0, c.w, c.b, Bt, L, E, K),
                     MC_OK);
    bool ok = true;
    for (size_t si = 0; si < ARRAY_LEN(splits); si++) {
        const int64_t L1 = splits[si], L2 = L - L1;
        conv_in_f32 c1 = c, c2 = c;
        c1.L = L1;
        c2.L = L2;
        c1.x = new_f32(&pl, Bt * L1 * E, 0.0f);
        c2.x = new_f32(&pl, Bt * L2 * E, 0.0f);
        c1.du = new_f32(&pl, Bt * L1 * E, 0.0f);
        c2.du = new_f32(&pl, Bt * L2 * E, 0.0f);
        slice_rows(c1.x, c.x, Bt, L, 0, L1, E);
        slice_rows(c2.x, c.x, Bt, L, L1, L, E);
        slice_rows(c1.du, c.du, Bt, L, 0, L1, E);
        slice_rows(c2.du, c.du, Bt, L, L1, L, E);
        float *u1 = new_f32(&pl, Bt * L1 * E, 0.0f);
        c2.state0 = new_f32(&pl, Bt * E * K, 0.0f);
        conv_forward_f32(&c1, u1, c2.state0);
        float *dx1 = new_f32(&pl, Bt * L1 * E, 0.0f), *dx2 = new_f32(&pl, Bt * L2 * E, 0.0f);
        float *dwc = new_f32(&pl, E * K, 0.0f), *dbc = new_f32(&pl, E, 0.0f), *dmid = new_f32(&pl, Bt * E * K, 0.0f);
        assert_int_equal(
            mc_ref_conv1d_bwd(&ex, dx2, dwc, dbc, dmid, c2.du, c.dsT, c2.x, ldx, c2.state0, c.w, c.b, Bt, L2, E, K),
            MC_OK);
        assert_int_equal(
            mc_ref_conv1d_bwd(&ex, dx1, dwc, dbc, dmid, c1.du, dmid, c1.x, ldx, c.state0, c.w, c.b, Bt, L1, E, K),
            MC_OK);
        float *dxc = new_f32(&pl, n * E, 0.0f);
        for (int64_t b = 0; b < Bt; b++) {
            memcpy(dxc + b * L * E, dx1 + b * L1 * E, sizeof(float) * (size_t)(L1 * E));
            memcpy(dxc + (b * L + L1) * E, dx2 + b * L2 * E, sizeof(float) * (size_t)(L2 * E));
        }
        char label[64];
        snprintf(label, sizeof(label), "conv1d chunks %lld+%lld", (long long)L1, (long long)L2);
        ok &= mc_check_close(dxc, dx, n * E, TOL_CHUNK, label);
        ok &= mc_check_close(dwc, dw, E * K, TOL_CHUNK, label);
        ok &= mc_check_close(dbc, db, E, TOL_CHUNK, label);
        ok &= mc_check_close(dmid, ds0, Bt * E * K, TOL_CHUNK, label);
    }
    float *dx3 = new_f32(&pl, n * E, 0.0f), *dw3 = new_f32(&pl, E * K, 0.0f);
    assert_int_equal(
        mc_ref_conv1d_bwd(&ex, dx3, dw3, NULL, NULL, c.du, c.dsT, c.x, ldx, c.state0, c.w, c.b, Bt, L, E, K), MC_OK);
    ok &= mc_check_close(dx3, dx, n * E, 0.0, "conv1d without db and dstate0");
    assert_true(ok);
    pool_free(&pl);
}

// ---- selective scan ---------------------------------------------------------------------------------------------

// B and C live in rows of ldbc = 2N + 2 floats, B at column 1 and C at column 1 + N (as in x_proj's output, whose δ
// comes first); z in rows of ldz = 2E + 1 at column 0.
typedef struct scan_prob {
    int64_t Bt, L, E, N, ldbc, ldz;
    double *u, *dt, *z, *q;  // [Bt·L, E], [Bt·L, E], [Bt·L, ldz], [Bt·L, ldbc]
    double *dt_bias, *A, *D; // [E], [E, N], [E]
    double *h0;              // [Bt, E, N] or NULL
    double *ry, *rh;         // loss weights of y [Bt·L, E] and of the final state [Bt, E, N] (or NULL)
} scan_prob;

static double scan_forward_d(const scan_prob *p, double *y, double *hT) {
    const int64_t L = p->L, E = p->E, N = p->N;
    double loss = 0;
    for (int64_t seq = 0; seq < p->Bt; seq++) {
        for (int64_t e = 0; e < E; e++) {
            double h[MAX_N];
            for (int64_t n = 0; n < N; n++) {
                h[n] = p->h0 != NULL ? p->h0[(seq * E + e) * N + n] : 0.0;
            }
            for (int64_t t = 0; t < L; t++) {
                const int64_t row = seq * L + t;
                const double *Bv = p->q + row * p->ldbc + 1, *Cv = Bv + N;
                double v = p->dt[row * E + e] + p->dt_bias[e];
                double delta = v > 20.0 ? v : log1p(exp(v)), ut = p->u[row * E + e], acc = 0;
                for (int64_t n = 0; n < N; n++) {
                    h[n] = exp(delta * p->A[e * N + n]) * h[n] + delta * Bv[n] * ut;
                    acc += Cv[n] * h[n];
                }
                double yt = (acc + p->D[e] * ut) * dsilu(p->z[row * p->ldz + e]);
                if (y != NULL) {
                    y[row * E + e] = yt;
                }
                loss += p->ry[row * E + e] * yt;
            }
            for (int64_t n = 0; n < N; n++) {
                if (hT != NULL) {
                    hT[(seq * E + e) * N + n] = h[n];
                }
                loss += p->rh != NULL ? p->rh[(seq * E + e) * N + n] * h[n] : 0.0;
            }
        }
    }
    return loss;
}

static double scan_loss(const void *ctx) {
    return scan_forward_d(ctx, NULL, NULL);
}

typedef struct scan_in_f32 {
    int64_t Bt, L, E, N, ldbc, ldz;
    float *u, *dt, *z, *q, *dt_bias, *A, *D, *h0, *dy, *dhT;
} scan_in_f32;

typedef struct scan_grads { // everything mc_ref_selective_scan_bwd writes
    float *du, *ddt, *dz, *dq, *dA, *dD, *dbias, *dh0;
} scan_grads;

// dt mode 0: most of softplus's curve (Δ from 0.007 to 2.6). Mode 1: v = dt + dt_bias around the threshold 20
// (19..21, kept 1e-3 away from it so no difference straddles it), far above it where expf(v) overflows (95),
// and far below (−30, Δ ≈ 1e-13).
static void draw_dt(rng *r, scan_in_f32 *c, int mode) {
    const int64_t n = c->Bt * c->L;
    for (int64_t i = 0; i < n * c->E; i++) {
        const int64_t e = i % c->E;
        float v = rng_uniform(r, -5.0f, 2.5f);
        if (mode == 1) {
            uint32_t k = rng_u32(r) % 8;
            v = k < 5 ? rng_uniform(r, 19.0f, 21.0f) : k < 6 ? 95.0f : k < 7 ? -30.0f : v;
            v = fabsf(v - 20.0f) < 1e-3f ? 20.01f : v;
        }
        c->dt[i] = v - c->dt_bias[e];
    }
}

static scan_in_f32 scan_inputs(pool *pl, int64_t Bt, int64_t L, int64_t E, int64_t N, bool with_h0, bool with_dhT,
                               int dt_mode, uint64_t seed) {
    rng r = { seed };
    const int64_t n = Bt * L;
    scan_in_f32 c = { .Bt = Bt, .L = L, .E = E, .N = N, .ldbc = 2 * N + 2, .ldz = 2 * E + 1 };
    c.u = new_rand(pl, &r, n * E, -2.0f, 2.0f);
    c.z = new_rand(pl, &r, n * c.ldz, -4.0f, 4.0f);
    c.q = new_rand(pl, &r, n * c.ldbc, -1.0f, 1.0f);
    c.dt_bias = new_rand(pl, &r, E, -2.0f, 1.0f);
    c.dt = new_f32(pl, n * E, 0.0f);
    draw_dt(&r, &c, dt_mode);
    c.A = new_f32(pl, E * N, 0.0f);
    for (int64_t i = 0; i < E * N; i++) { // A = −exp(A_log), A_log around ln(1..N) as initialised
        c.A[i] = -expf(rng_uniform(&r, -2.0f, logf((float)N) + 0.5f));
    }
    c.D = new_rand(pl, &r, E, -1.0f, 1.0f);
    c.h0 = with_h0 ? new_rand(pl, &r, Bt * E * N, -1.0f, 1.0f) : NULL;
    c.dy = new_rand(pl, &r, n * E, -1.0f, 1.0f);
    c.dhT = with_dhT ? new_rand(pl, &r, Bt * E * N, -1.0f, 1.0f) : NULL;
    return c;
}

// Written outputs start NaN (padding columns SENTINEL) so anything left unwritten fails; accumulators start at 0.
static scan_grads scan_grads_new(pool *pl, const scan_in_f32 *c) {
    const int64_t n = c->Bt * c->L;
    scan_grads g = { .du = new_f32(pl, n * c->E, NAN),
                     .ddt = new_f32(pl, n * c->E, NAN),
                     .dz = new_f32(pl, n * c->ldz, SENTINEL),
                     .dq = new_f32(pl, n * c->ldbc, SENTINEL),
                     .dA = new_f32(pl, c->E * c->N, 0.0f),
                     .dD = new_f32(pl, c->E, 0.0f),
                     .dbias = new_f32(pl, c->E, 0.0f),
                     .dh0 = new_f32(pl, c->Bt * c->E * c->N, NAN) };
    for (int64_t i = 0; i < n; i++) {
        for (int64_t e = 0; e < c->E; e++) {
            g.dz[i * c->ldz + e] = NAN;
        }
        for (int64_t j = 1; j < 1 + 2 * c->N; j++) {
            g.dq[i * c->ldbc + j] = NAN;
        }
    }
    return g;
}

static mc_status scan_bwd(const scan_in_f32 *c, const scan_grads *g, const float *dh_final) {
    const mc_exec ex = { .n_threads = 1 };
    return mc_ref_selective_scan_bwd(&ex, g->du, g->ddt, g->dz, g->dq + 1, g->dq + 1 + c->N, g->dA, g->dD, g->dbias,
                                     g->dh0, c->dy, dh_final, c->u, c->dt, c->dt_bias, c->A, c->q + 1, c->q + 1 + c->N,
                                     c->ldbc, c->D, c->z, c->ldz, c->h0, c->Bt, c->L, c->E, c->N);
}

// The f32 twin over Bt sequences from h0 (zeros when NULL): y [Bt·L, E] and the final states.
static void scan_forward_f32(const scan_in_f32 *c, float *y, float *h) {
    const mc_exec ex = { .n_threads = 1 };
    const int64_t EN = c->E * c->N;
    for (int64_t seq = 0; seq < c->Bt; seq++) {
        const int64_t r0 = seq * c->L;
        for (int64_t i = 0; i < EN; i++) {
            h[seq * EN + i] = c->h0 != NULL ? c->h0[seq * EN + i] : 0.0f;
        }
        mc_ref_selective_scan(&ex, y + r0 * c->E, h + seq * EN, c->u + r0 * c->E, c->dt + r0 * c->E, c->dt_bias, c->A,
                              c->q + r0 * c->ldbc + 1, c->q + r0 * c->ldbc + 1 + c->N, c->ldbc, c->D,
                              c->z + r0 * c->ldz, c->ldz, c->L, c->E, c->N);
    }
}

static bool scan_case(int64_t Bt, int64_t L, int64_t E, int64_t N, bool with_h0, bool with_dhT, int dt_mode,
                      uint64_t seed) {
    pool pl = { 0 };
    const int64_t n = Bt * L;
    assert_true(N <= MAX_N);
    char label[128];
    snprintf(label, sizeof(label), "scan Bt=%lld L=%lld E=%lld N=%lld%s%s%s", (long long)Bt, (long long)L, (long long)E,
             (long long)N, with_h0 ? " h0" : "", with_dhT ? " dh_final" : "", dt_mode == 1 ? " dt-edges" : "");
    scan_in_f32 c = scan_inputs(&pl, Bt, L, E, N, with_h0, with_dhT, dt_mode, seed);
    scan_prob p = { .Bt = Bt,
                    .L = L,
                    .E = E,
                    .N = N,
                    .ldbc = c.ldbc,
                    .ldz = c.ldz,
                    .u = to_f64(&pl, c.u, n * E),
                    .dt = to_f64(&pl, c.dt, n * E),
                    .z = to_f64(&pl, c.z, n * c.ldz),
                    .q = to_f64(&pl, c.q, n * c.ldbc),
                    .dt_bias = to_f64(&pl, c.dt_bias, E),
                    .A = to_f64(&pl, c.A, E * N),
                    .D = to_f64(&pl, c.D, E),
                    .h0 = to_f64(&pl, c.h0, Bt * E * N),
                    .ry = to_f64(&pl, c.dy, n * E),
                    .rh = to_f64(&pl, c.dhT, Bt * E * N) };
    float *y = new_f32(&pl, n * E, 0.0f), *hT = new_f32(&pl, Bt * E * N, 0.0f);
    double *yd = pool_alloc(&pl, sizeof(double) * (size_t)(n * E)), *hTd = pool_alloc(&pl, sizeof(double) * Bt * E * N);
    scan_forward_f32(&c, y, hT);
    scan_forward_d(&p, yd, hTd);
    bool ok = check_fwd(y, yd, n * E, "y", label);
    ok &= check_fwd(hT, hTd, Bt * E * N, "final h", label); // both checks run: each reports its own failure

    scan_grads g = scan_grads_new(&pl, &c);
    float *dA1 = new_f32(&pl, E * N, 0.0f), *dD1 = new_f32(&pl, E, 0.0f), *db1 = new_f32(&pl, E, 0.0f);
    for (int call = 0; call < 2; call++) {
        assert_int_equal(scan_bwd(&c, &g, c.dhT), MC_OK);
        if (call == 0) {
            memcpy(dA1, g.dA, sizeof(float) * (size_t)(E * N));
            memcpy(dD1, g.dD, sizeof(float) * (size_t)E);
            memcpy(db1, g.dbias, sizeof(float) * (size_t)E);
        }
    }
    ok &= check_fd(g.du, p.u, n, E, E, scan_loss, &p, "du", label);
    ok &= check_fd(g.ddt, p.dt, n, E, E, scan_loss, &p, "ddt", label);
    ok &= check_fd(g.dz, p.z, n, E, c.ldz, scan_loss, &p, "dz", label);
    ok &= check_padding(g.dz, n, c.ldz, 0, E, "dz", label);
    ok &= check_fd(g.dq + 1, p.q + 1, n, N, c.ldbc, scan_loss, &p, "dB", label);
    ok &= check_fd(g.dq + 1 + N, p.q + 1 + N, n, N, c.ldbc, scan_loss, &p, "dC", label);
    ok &= check_padding(g.dq, n, c.ldbc, 1, 1 + 2 * N, "dB/dC", label);
    ok &= check_fd(dA1, p.A, E, N, N, scan_loss, &p, "dA", label);
    ok &= check_fd(dD1, p.D, 1, E, E, scan_loss, &p, "dD", label);
    ok &= check_fd(db1, p.dt_bias, 1, E, E, scan_loss, &p, "ddt_bias", label);
    ok &= check_twice(g.dA, dA1, E * N, "dA", label);
    ok &= check_twice(g.dD, dD1, E, "dD", label);
    ok &= check_twice(g.dbias, db1, E, "ddt_bias", label);
    if (with_h0) {
        ok &= check_fd(g.dh0, p.h0, Bt * E, N, N, scan_loss, &p, "dh0", label);
    }
    pool_free(&pl);
    return ok;
}

static void test_scan(void **unused) {
    const int64_t Bts[] = { 1, 2, 3 }, Ls[] = { 1, 2, 5, 17 }, Es[] = { 1, 3, 8 }, Ns[] = { 1, 4 };
    bool ok = true;
    uint64_t seed = 1000;
    for (size_t a = 0; a < ARRAY_LEN(Bts); a++) {
        for (size_t b = 0; b < ARRAY_LEN(Ls); b++) {
            for (size_t c = 0; c < ARRAY_LEN(Es); c++) {
                for (size_t d = 0; d < ARRAY_LEN(Ns); d++) {
                    for (int full = 1; full >= 0; full--) { // h0 and dh_final given, then neither (zeros)
                        ok &= scan_case(Bts[a], Ls[b], Es[c], Ns[d], full, full, 0, seed++);
                    }
                }
            }
        }
    }
    assert_true(ok);
}

static void test_scan_softplus_edges(void **unused) {
    bool ok = true;
    ok &= scan_case(2, 5, 3, 4, true, true, 1, 2000);
    ok &= scan_case(1, 17, 8, 1, true, false, 1, 2001);
    ok &= scan_case(3, 2, 8, 4, false, true, 1, 2002);
    assert_true(ok);
}

// A [Bt, L, ld] array's rows [t0, t1) of each sequence, packed.
static float *slice_new(pool *pl, const float *src, int64_t Bt, int64_t L, int64_t t0, int64_t t1, int64_t ld) {
    if (src == NULL) {
        return NULL;
    }
    float *p = new_f32(pl, Bt * (t1 - t0) * ld, 0.0f);
    slice_rows(p, src, Bt, L, t0, t1, ld);
    return p;
}

static scan_in_f32 scan_chunk(pool *pl, const scan_in_f32 *c, int64_t t0, int64_t t1) {
    scan_in_f32 s = *c;
    s.L = t1 - t0;
    s.u = slice_new(pl, c->u, c->Bt, c->L, t0, t1, c->E);
    s.dt = slice_new(pl, c->dt, c->Bt, c->L, t0, t1, c->E);
    s.dy = slice_new(pl, c->dy, c->Bt, c->L, t0, t1, c->E);
    s.z = slice_new(pl, c->z, c->Bt, c->L, t0, t1, c->ldz);
    s.q = slice_new(pl, c->q, c->Bt, c->L, t0, t1, c->ldbc);
    return s;
}

// Chunk gradients [Bt, L1 or L2, ld] against the long run's rows of each sequence.
static bool scan_chunk_rows(const float *g1, const float *g2, const float *want, const scan_in_f32 *c, int64_t L1,
                            int64_t ld, int64_t c0, int64_t c1, const char *what) {
    pool pl = { 0 };
    const int64_t L2 = c->L - L1, n = c->Bt * c->L, w = c1 - c0;
    float *got = new_f32(&pl, n * w, 0.0f), *ref = new_f32(&pl, n * w, 0.0f);
    for (int64_t b = 0; b < c->Bt; b++) {
        for (int64_t t = 0; t < c->L; t++) {
            const float *src = t < L1 ? g1 + (b * L1 + t) * ld : g2 + (b * L2 + t - L1) * ld;
            memcpy(got + (b * c->L + t) * w, src + c0, sizeof(float) * (size_t)w);
            memcpy(ref + (b * c->L + t) * w, want + (b * c->L + t) * ld + c0, sizeof(float) * (size_t)w);
        }
    }
    char label[96];
    snprintf(label, sizeof(label), "scan chunks %lld+%lld %s", (long long)L1, (long long)L2, what);
    bool ok = mc_check_close(got, ref, n * w, TOL_CHUNK, label);
    pool_free(&pl);
    return ok;
}

// Two chunks — the second starting from the state the f32 forward left after the first, the first ending with the
// second's dh0 as its dh_final (in place: dh0 aliasing dh_final) — equal one long run.
static void test_scan_chunks(void **unused) {
    const int64_t Bt = 2, L = 17, E = 3, N = 4, splits[] = { 1, 6, 16 };
    pool pl = { 0 };
    scan_in_f32 c = scan_inputs(&pl, Bt, L, E, N, true, true, 0, 3000);
    scan_grads whole = scan_grads_new(&pl, &c);
    assert_int_equal(scan_bwd(&c, &whole, c.dhT), MC_OK);
    bool ok = true;
    for (size_t si = 0; si < ARRAY_LEN(splits); si++) {
        const int64_t L1 = splits[si];
        scan_in_f32 c1 = scan_chunk(&pl, &c, 0, L1), c2 = scan_chunk(&pl, &c, L1, L);
        c2.h0 = new_f32(&pl, Bt * E * N, 0.0f);
        scan_forward_f32(&c1, new_f32(&pl, Bt * L1 * E, 0.0f), c2.h0);
        scan_grads g1 = scan_grads_new(&pl, &c1), g2 = scan_grads_new(&pl, &c2);
        g1.dA = g2.dA; // parameter gradients of both chunks add up in one place
        g1.dD = g2.dD;
        g1.dbias = g2.dbias;
        g1.dh0 = g2.dh0; // in place: chunk 1 reads its dh_final from, and writes its dh0 to, the same buffer
        assert_int_equal(scan_bwd(&c2, &g2, c.dhT), MC_OK);
        assert_int_equal(scan_bwd(&c1, &g1, g2.dh0), MC_OK);
        ok &= scan_chunk_rows(g1.du, g2.du, whole.du, &c, L1, E, 0, E, "du");
        ok &= scan_chunk_rows(g1.ddt, g2.ddt, whole.ddt, &c, L1, E, 0, E, "ddt");
        ok &= scan_chunk_rows(g1.dz, g2.dz, whole.dz, &c, L1, c.ldz, 0, E, "dz");
        ok &= scan_chunk_rows(g1.dq, g2.dq, whole.dq, &c, L1, c.ldbc, 1, 1 + 2 * N, "dB/dC");
        char label[64];
        snprintf(label, sizeof(label), "scan chunks %lld+%lld", (long long)L1, (long long)(L - L1));
        ok &= mc_check_close(g2.dA, whole.dA, E * N, TOL_CHUNK, label);
        ok &= mc_check_close(g2.dD, whole.dD, E, TOL_CHUNK, label);
        ok &= mc_check_close(g2.dbias, whole.dbias, E, TOL_CHUNK, label);
        ok &= mc_check_close(g1.dh0, whole.dh0, Bt * E * N, TOL_CHUNK, label);
    }
    // L = 0 passes the final state's gradient straight through; dh0 NULL and h0 NULL are accepted.
    scan_in_f32 c0 = scan_chunk(&pl, &c, 0, 0);
    scan_grads g0 = scan_grads_new(&pl, &c0);
    assert_int_equal(scan_bwd(&c0, &g0, c.dhT), MC_OK);
    ok &= mc_check_close(g0.dh0, c.dhT, Bt * E * N, 0.0, "scan L=0 dh0");
    g0.dh0 = NULL;
    c0.h0 = NULL;
    assert_int_equal(scan_bwd(&c0, &g0, NULL), MC_OK);
    assert_true(ok);
    pool_free(&pl);
}

// ---- cross entropy ----------------------------------------------------------------------------------------------

typedef struct ce_prob {
    int64_t T, V;
    const int32_t *targets;
    double scale;
    double *logits; // [T, V]
} ce_prob;

static double ce_loss(const void *ctx) {
    const ce_prob *p = ctx;
    double loss = 0;
    for (int64_t t = 0; t < p->T; t++) {
        if (p->targets[t] == -100) {
            continue;
        }
        const double *row = p->logits + t * p->V;
        double mx = row[0], sum = 0;
        for (int64_t v = 1; v < p->V; v++) {
            mx = fmax(mx, row[v]);
        }
        for (int64_t v = 0; v < p->V; v++) {
            sum += exp(row[v] - mx);
        }
        loss += log(sum) + mx - row[p->targets[t]];
    }
    return p->scale * loss;
}

static bool ce_case(int64_t V, uint64_t seed) {
    enum { T = 6 };

    pool pl = { 0 };
    rng r = { seed };
    int32_t targets[T];
    for (int t = 0; t < T; t++) {
        targets[t] = t == 1 || t == 4 ? -100 : (int32_t)(rng_u32(&r) % (uint32_t)V);
    }
    targets[T - 1] = (int32_t)(V - 1);
    float *logits = new_rand(&pl, &r, T * V, -8.0f, 8.0f);
    for (int64_t v = 0; v < V; v++) { // row 2 far from zero: only the max subtraction keeps exp finite
        logits[2 * V + v] += 95.0f;
    }
    const float scale = 1.0f / 4.0f; // 4 kept rows: the mean
    ce_prob p = { .T = T, .V = V, .targets = targets, .scale = scale, .logits = to_f64(&pl, logits, T * V) };
    char label[64];
    snprintf(label, sizeof(label), "cross_entropy V=%lld", (long long)V);
    float *dl = new_f32(&pl, T * V, NAN);
    double loss = 1.5;
    int64_t count = 5;
    const mc_exec ex = { .n_threads = 1 };
    assert_int_equal(mc_ref_cross_entropy(&ex, dl, &loss, &count, logits, targets, T, V, scale), MC_OK);
    assert_int_equal(count, 5 + 4);
    double want_loss = ce_loss(&p) / scale, same = 1.5; // the f64 loss, and mc_ref_nll_row's numbers in row order
    assert_true(fabs((loss - 1.5) - want_loss) <= 1e-12 * fabs(want_loss));
    for (int t = 0; t < T; t++) {
        same += targets[t] != -100 ? mc_ref_nll_row(logits + t * V, V, targets[t]) : 0.0;
    }
    assert_true(loss == same);
    bool ok = check_fd(dl, p.logits, T, V, V, ce_loss, &p, "dlogits", label);
    for (int64_t v = 0; v < V; v++) {
        ok &= dl[1 * V + v] == 0.0f && dl[4 * V + v] == 0.0f; // ignored rows: zero gradient
    }
    // In place: the gradient overwrites the logits, bit for bit the out-of-place result.
    float *inplace = new_f32(&pl, T * V, 0.0f);
    memcpy(inplace, logits, sizeof(float) * (size_t)(T * V));
    double loss2 = 1.5;
    assert_int_equal(mc_ref_cross_entropy(&ex, inplace, &loss2, &count, inplace, targets, T, V, scale), MC_OK);
    assert_memory_equal(inplace, dl, sizeof(float) * (size_t)(T * V));
    assert_true(loss2 == loss);
    pool_free(&pl);
    return ok;
}

static void test_cross_entropy(void **unused) {
    bool ok = true;
    const int64_t Vs[] = { 1, 2, 5, 33 };
    for (size_t i = 0; i < ARRAY_LEN(Vs); i++) {
        ok &= ce_case(Vs[i], 4000 + i);
    }
    assert_true(ok);
}

// ---- bad input --------------------------------------------------------------------------------------------------

static void expect_invalid(mc_status st, const mc_error *err, const char *needle) {
    assert_int_equal(st, MC_ERR_INVALID);
    assert_int_equal(err->code, MC_ERR_INVALID);
    if (strstr(err->msg, needle) == NULL) {
        fail_msg("message \"%s\" lacks \"%s\"", err->msg, needle);
    }
}

static void test_bad_input(void **unused) {
    mc_error err = { 0 };
    const mc_exec ex = { .n_threads = 1, .err = &err }, quiet = { .n_threads = 1 };
    float buf[64] = { 0 }, dl[4] = { 0.5f, 0.5f, 0.5f, 0.5f };
    const float logits[4] = { 1, 2, 3, 4 };
    mc_weight w = { .data = buf, .dtype = MC_DTYPE_F32, .rows = 2, .cols = 3 };
    expect_invalid(mc_ref_matmul_dx(&ex, buf, 2, buf, &w, 1, 2, 3, false), &err, "ldx=2");
    expect_invalid(mc_ref_matmul_dx(&ex, buf, 3, buf, &w, 1, 3, 3, false), &err, "matmul_dx: weight");
    w.dtype = MC_DTYPE_I8; // no scales
    expect_invalid(mc_ref_matmul_dx(&ex, buf, 3, buf, &w, 1, 2, 3, false), &err, "int8");
    expect_invalid(mc_ref_matmul_dw(&ex, buf, NULL, buf, buf, 3, -1, 2, 3), &err, "matmul_dw: M=-1");
    expect_invalid(mc_ref_embed_bwd(&ex, buf, buf, (const int32_t[]){ 0, 4 }, 2, 4, 1), &err, "id 4 at row 1");
    expect_invalid(mc_ref_embed_bwd(&ex, buf, buf, (const int32_t[]){ -1 }, 1, 4, 1), &err, "id -1");
    expect_invalid(mc_ref_rmsnorm_bwd(&ex, buf, buf, buf, buf, buf, 1, 0, 1e-5f), &err, "H=0");
    expect_invalid(mc_ref_conv1d_bwd(&ex, buf, buf, NULL, NULL, buf, NULL, buf, 1, buf, buf, NULL, 1, 1, 1, 0), &err,
                   "K=0");
    expect_invalid(mc_ref_conv1d_bwd(&ex, buf, buf, NULL, NULL, buf, NULL, buf, 1, buf, buf, NULL, 1, 1, 2, 1), &err,
                   "ldx=1");
    expect_invalid(mc_ref_selective_scan_bwd(&ex, buf, buf, buf, buf, buf, buf, buf, buf, NULL, buf, NULL, buf, buf,
                                             buf, buf, buf, buf, 3, buf, buf, 1, NULL, 1, 1, 1, 4),
                   &err, "ldbc=3");
    expect_invalid(mc_ref_selective_scan_bwd(&ex, buf, buf, buf, buf, buf, buf, buf, buf, NULL, buf, NULL, buf, buf,
                                             buf, buf, buf, buf, 4, buf, buf, 1, NULL, 1, 1, 2, 4),
                   &err, "ldz=1");
    // A bad target anywhere: nothing written, nothing added.
    double loss = 2.0;
    int64_t count = 3;
    expect_invalid(mc_ref_cross_entropy(&ex, dl, &loss, &count, logits, (const int32_t[]){ 1, 2 }, 2, 2, 1.0f), &err,
                   "target 2 at row 1");
    expect_invalid(mc_ref_cross_entropy(&ex, dl, &loss, &count, logits, (const int32_t[]){ -1 }, 1, 4, 1.0f), &err,
                   "target -1");
    assert_true(loss == 2.0 && count == 3 && dl[0] == 0.5f && dl[3] == 0.5f);
    // err may be NULL.
    assert_int_equal(mc_ref_cross_entropy(&quiet, dl, &loss, &count, logits, (const int32_t[]){ 9 }, 1, 4, 1.0f),
                     MC_ERR_INVALID);
    assert_int_equal(mc_ref_conv1d_bwd(&quiet, buf, buf, NULL, NULL, buf, NULL, buf, 1, buf, buf, NULL, 1, 1, 1, 0),
                     MC_ERR_INVALID);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_embed),
        cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_conv1d),
        cmocka_unit_test(test_conv1d_chunks),
        cmocka_unit_test(test_scan),
        cmocka_unit_test(test_scan_softplus_edges),
        cmocka_unit_test(test_scan_chunks),
        cmocka_unit_test(test_cross_entropy),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
