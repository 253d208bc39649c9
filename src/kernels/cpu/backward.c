// The cpu backend's backward ops (training), the fast twins of kernels/ref/backward.c: the transposed products are
// OpenBLAS sgemm calls that our own OpenMP team splits, the rest threaded loops, AVX2 / AVX-512 where exp dominates.
// Contracts (what accumulates, what may alias) are those of kernels/ref/backward.h; the ref twins are the oracles.
#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "base/checked.h"
#include "base/error.h"
#include "kernels/cpu/cpu.h"
#include "kernels/cpu/simd.h"
#include "kernels/ref/backward.h"
#include "kernels/dtype.h"

#define IGNORE_INDEX       (-100) // PyTorch CrossEntropyLoss's default ignore_index (spec §6)
#define SOFTPLUS_THRESHOLD 20.0f  // torch softplus: identity above (spec §3.7)

// Work below which a call stays on the calling thread (elementary steps; a fork/join costs a few µs).
#define BWD_MIN_PARALLEL 32768

static mc_error *err_of(const mc_exec *ex) {
    return ex != NULL ? ex->err : NULL;
}

static int threads_of(const mc_exec *ex) {
    return ex != NULL && ex->n_threads > 1 ? ex->n_threads : 1;
}

// Owned scratch of n floats (at least one, 64-byte aligned, uninitialized), or NULL.
static float *scratch_f32(int64_t n) {
    int64_t bytes = 0;
    if (n < 0 || !mc_mul_i64(n + 16, (int64_t)sizeof(float), &bytes)) {
        return NULL;
    }
    return aligned_alloc(64, ((size_t)bytes + 63) / 64 * 64);
}

// [lo, hi) of n items for thread tid of nt, in multiples of `align` items (the last thread takes the rest).
static void split_range(int64_t n, int tid, int nt, int64_t align, int64_t *lo, int64_t *hi) {
    const int64_t units = (n + align - 1) / align;
    *lo = units * tid / nt * align;
    *hi = units * (tid + 1) / nt * align;
    *lo = *lo < n ? *lo : n;
    *hi = *hi < n ? *hi : n;
}

// Runs fn(ctx, tid, nt) once on each of nt threads (in the caller when nt = 1). Each thread owns tid's slice of any
// per-thread scratch; a team smaller than asked for leaves the other slices unused.
typedef void (*team_fn)(const void *ctx, int tid, int nt);

static void team_run(int nt, team_fn fn, const void *ctx) {
    if (nt <= 1) {
        fn(ctx, 0, 1);
        return;
    }
#pragma omp parallel num_threads(nt)
    fn(ctx, omp_get_thread_num(), omp_get_num_threads());
}

static float sigmoid_c(float v) {
    return 1.0f / (1.0f + expf(-v));
}

// d silu(v) / dv = σ(v)·(1 + v·(1 − σ(v))), as the reference writes it.
static float silu_grad_c(float v) {
    float s = sigmoid_c(v);
    return s * (1.0f + v * (1.0f - s));
}

// ---- matmul: OpenBLAS sgemm -------------------------------------------------------------------------------------
//
// OpenBLAS is the dependency for the transposed products (dY·W and dYᵀ·X): its sgemm packs and tiles every layout we
// need at ~85% of the FMA peak. OpenBLAS runs single-threaded inside our own OpenMP team, which splits the output in
// column or row strips: its own pthreads would spin (sched_yield) for a while after each call and take the cores
// from the OpenMP kernels that run between the products (measured in bench/RESULTS.md, "Training, CPU").

typedef struct gemm_args {
    bool trans_a;    // op(A) = Aᵀ
    int64_t M, N, K; // C [M, N] = op(A) [M, K] · B [K, N]
    const float *a;  // lda apart
    const float *b;  // ldb apart
    float *c;        // ldc apart
    int64_t lda, ldb, ldc;
    float beta;      // 0: C is written, 1: added to
    bool split_rows; // threads take strips of C's rows, else of its columns
} gemm_args;

static void gemm_part(const void *ctx, int tid, int nt) {
    const gemm_args *g = ctx;
    int64_t lo, hi;
    if (g->split_rows) {
        split_range(g->M, tid, nt, 4, &lo, &hi);
        const float *a = g->trans_a ? g->a + lo : g->a + lo * g->lda;
        if (hi > lo) {
            cblas_sgemm(CblasRowMajor, g->trans_a ? CblasTrans : CblasNoTrans, CblasNoTrans, (int)(hi - lo), (int)g->N,
                        (int)g->K, 1.0f, a, (int)g->lda, g->b, (int)g->ldb, g->beta, g->c + lo * g->ldc, (int)g->ldc);
        }
    } else {
        split_range(g->N, tid, nt, 16, &lo, &hi); // strips of whole cache lines
        if (hi > lo) {
            cblas_sgemm(CblasRowMajor, g->trans_a ? CblasTrans : CblasNoTrans, CblasNoTrans, (int)g->M, (int)(hi - lo),
                        (int)g->K, 1.0f, g->a, (int)g->lda, g->b + lo, (int)g->ldb, g->beta, g->c + lo, (int)g->ldc);
        }
    }
}

// C = op(A)·B (+ C when beta = 1) on the exec's threads. Every size is ≥ 1 and fits an int (checked by the callers).
static void gemm_run(const mc_exec *ex, gemm_args g) {
    int nt = threads_of(ex);
    if ((double)g.M * (double)g.N * (double)g.K < 2e5) { // tiny products (LoRA ranks, tests): one thread
        nt = 1;
    }
    // Rows when there are enough of them for every thread, else columns (lm_head's 64-row chunks have 768).
    g.split_rows = g.M >= 64 * nt || g.M >= g.N;
    openblas_set_num_threads(1); // process-wide: OpenBLAS's own threads stay idle (see above)
    team_run(nt, gemm_part, &g);
}

static bool blas_sizes_ok(int64_t a, int64_t b, int64_t c, int64_t d) {
    return a <= INT_MAX && b <= INT_MAX && c <= INT_MAX && d <= INT_MAX;
}

// Rows [r0, r0 + rows) of a weight as f32 into out [rows, cols]: exact for f16/bf16, q · scale for int8 as the
// forward reads them.
typedef struct widen_args {
    float *out;
    const mc_weight *w;
    int64_t r0, rows;
} widen_args;

static void widen_part(const void *ctx, int tid, int nt) {
    const widen_args *a = ctx;
    const mc_weight *w = a->w;
    const int64_t K = w->cols;
    int64_t lo, hi;
    split_range(a->rows, tid, nt, 1, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        float *o = a->out + r * K;
        const int64_t src = (a->r0 + r) * K;
        if (w->dtype == MC_DTYPE_BF16) {
            const uint16_t *p = (const uint16_t *)w->data + src;
            for (int64_t k = 0; k < K; k++) {
                o[k] = mc_bf16_to_f32(p[k]);
            }
        } else if (w->dtype == MC_DTYPE_F16) {
            const uint16_t *p = (const uint16_t *)w->data + src;
            for (int64_t k = 0; k < K; k++) {
                o[k] = mc_f16_to_f32(p[k]);
            }
        } else {
            for (int64_t k = 0; k < K; k++) {
                o[k] = mc_weight_at(w, a->r0 + r, k);
            }
        }
    }
}

// Panel height for widening a non-f32 weight: ~4 MiB of f32 at a time, so a frozen 50k-row head needs no 150 MB copy.
#define WIDEN_PANEL_FLOATS (1 << 20)

mc_status mc_cpu_matmul_dx(const mc_exec *ex, float *dx, int64_t ldx, const float *dy, const mc_weight *w, int64_t M,
                           int64_t N, int64_t K, bool accumulate) {
    const mc_status bad = mc_bwd_check_matmul(ex, "matmul_dx", M, N, K, ldx, w);
    if (bad != MC_OK) {
        return bad;
    }
    if (!blas_sizes_ok(M, N, K, ldx)) {
        return mc_fail(err_of(ex), MC_ERR_INVALID, "matmul_dx: M=%lld N=%lld K=%lld ldx=%lld exceed sgemm's int sizes",
                       (long long)M, (long long)N, (long long)K, (long long)ldx);
    }
    if (M == 0 || K == 0) {
        return MC_OK;
    }
    if (N == 0) { // an empty sum
        for (int64_t m = 0; m < M && !accumulate; m++) {
            memset(dx + m * ldx, 0, (size_t)K * sizeof(float));
        }
        return MC_OK;
    }
    gemm_args g = { .trans_a = false, .M = M, .N = K, .a = dy, .lda = N, .c = dx, .ldc = ldx, .ldb = K };
    if (w->dtype == MC_DTYPE_F32) {
        g.K = N;
        g.b = w->data;
        g.beta = accumulate ? 1.0f : 0.0f;
        gemm_run(ex, g);
        return MC_OK;
    }
    // Other dtypes: dx (+)= Σ over panels of W's rows, each widened to f32 first (correct, slower than f32).
    const int64_t panel = WIDEN_PANEL_FLOATS / K > 0 ? WIDEN_PANEL_FLOATS / K : 1;
    float *wf = scratch_f32((panel < N ? panel : N) * K);
    if (wf == NULL) {
        return mc_fail(err_of(ex), MC_ERR_NOMEM, "matmul_dx: no memory for a %lld x %lld f32 panel", (long long)panel,
                       (long long)K);
    }
    for (int64_t n0 = 0; n0 < N; n0 += panel) {
        const int64_t rows = N - n0 < panel ? N - n0 : panel;
        const widen_args wa = { wf, w, n0, rows };
        team_run(mc_simd_threads(ex, rows * K, BWD_MIN_PARALLEL), widen_part, &wa);
        g.a = dy + n0;
        g.K = rows;
        g.b = wf;
        g.beta = accumulate || n0 > 0 ? 1.0f : 0.0f;
        gemm_run(ex, g);
    }
    free(wf);
    return MC_OK;
}

// dbias[n] += Σ_m dy[m, n]: threads take column strips, each summed in double down the rows.
typedef struct colsum_args {
    float *dbias;
    const float *dy;
    int64_t M, N;
} colsum_args;

#define COLSUM_STRIP 256

static void colsum_part(const void *ctx, int tid, int nt) {
    const colsum_args *a = ctx;
    int64_t lo, hi;
    split_range(a->N, tid, nt, 16, &lo, &hi);
    double acc[COLSUM_STRIP];
    for (int64_t n0 = lo; n0 < hi; n0 += COLSUM_STRIP) {
        const int64_t w = hi - n0 < COLSUM_STRIP ? hi - n0 : COLSUM_STRIP;
        memset(acc, 0, sizeof(acc));
        for (int64_t m = 0; m < a->M; m++) {
            const float *row = a->dy + m * a->N + n0;
            for (int64_t j = 0; j < w; j++) {
                acc[j] += row[j];
            }
        }
        for (int64_t j = 0; j < w; j++) {
            a->dbias[n0 + j] = (float)((double)a->dbias[n0 + j] + acc[j]);
        }
    }
}

mc_status mc_cpu_matmul_dw(const mc_exec *ex, float *dw, float *dbias, const float *dy, const float *x, int64_t ldx,
                           int64_t M, int64_t N, int64_t K) {
    const mc_status bad = mc_bwd_check_matmul(ex, "matmul_dw", M, N, K, ldx, NULL);
    if (bad != MC_OK) {
        return bad;
    }
    if (!blas_sizes_ok(M, N, K, ldx)) {
        return mc_fail(err_of(ex), MC_ERR_INVALID, "matmul_dw: M=%lld N=%lld K=%lld ldx=%lld exceed sgemm's int sizes",
                       (long long)M, (long long)N, (long long)K, (long long)ldx);
    }
    if (M == 0 || N == 0) {
        return MC_OK;
    }
    if (K > 0) {
        const gemm_args g = {
            .trans_a = true, .M = N, .N = K, .K = M, .a = dy, .lda = N, .b = x, .ldb = ldx, .c = dw, .ldc = K, .beta = 1
        };
        gemm_run(ex, g);
    }
    if (dbias != NULL) {
        const colsum_args a = { dbias, dy, M, N };
        team_run(mc_simd_threads(ex, M * N, BWD_MIN_PARALLEL), colsum_part, &a);
    }
    return MC_OK;
}

// ---- embedding --------------------------------------------------------------------------------------------------

// Threads own column strips of every row, and walk the ids in order: repeated ids add up in the reference's order
// with no race, so the result equals the reference's bit for bit.
typedef struct embed_bwd_args {
    float *dw;
    const float *dout;
    const int32_t *ids;
    int64_t n, H;
} embed_bwd_args;

static void embed_bwd_part(const void *ctx, int tid, int nt) {
    const embed_bwd_args *a = ctx;
    int64_t lo, hi;
    split_range(a->H, tid, nt, 16, &lo, &hi);
    for (int64_t i = 0; i < a->n; i++) {
        float *row = a->dw + (int64_t)a->ids[i] * a->H;
        const float *src = a->dout + i * a->H;
        for (int64_t h = lo; h < hi; h++) {
            row[h] += src[h];
        }
    }
}

mc_status mc_cpu_embed_bwd(const mc_exec *ex, float *dw, const float *dout, const int32_t *ids, int64_t n, int64_t V,
                           int64_t H) {
    const mc_status bad = mc_bwd_check_embed(ex, ids, n, V, H);
    if (bad != MC_OK) {
        return bad;
    }
    const embed_bwd_args a = { dw, dout, ids, n, H };
    team_run(H >= 64 ? mc_simd_threads(ex, n * H, BWD_MIN_PARALLEL) : 1, embed_bwd_part, &a);
    return MC_OK;
}

// ---- rmsnorm ----------------------------------------------------------------------------------------------------

// Threads take rows; dw's row sums go to per-thread double partials, added in thread order. A row's sums of squares
// and of w·dy·x run in 16 f32 lanes (as the forward's), then r and the scalars in double.
typedef struct norm_bwd_args {
    float *dx;
    double *part; // [nt, H]
    const float *dy, *x, *w;
    int64_t M, H;
    float eps;
} norm_bwd_args;

#define NORM_LANES 16

static void norm_bwd_row(const norm_bwd_args *a, double *part, int64_t m) {
    const int64_t H = a->H;
    const float *xm = a->x + m * H, *gm = a->dy + m * H, *w = a->w;
    float *dxm = a->dx + m * H;
    float ss[NORM_LANES] = { 0 }, sd[NORM_LANES] = { 0 };
    int64_t h = 0;
    for (; h + NORM_LANES <= H; h += NORM_LANES) {
        for (int j = 0; j < NORM_LANES; j++) {
            ss[j] += xm[h + j] * xm[h + j];
            sd[j] += gm[h + j] * w[h + j] * xm[h + j];
        }
    }
    double ms = 0, dot = 0;
    for (; h < H; h++) {
        ms += (double)xm[h] * xm[h];
        dot += (double)gm[h] * w[h] * xm[h];
    }
    for (int j = 0; j < NORM_LANES; j++) {
        ms += ss[j];
        dot += sd[j];
    }
    const double r = 1.0 / sqrt(ms / (double)H + a->eps);
    const float rf = (float)r, cf = (float)(r * r * r * dot / (double)H);
    for (h = 0; h < H; h++) {
        dxm[h] += rf * w[h] * gm[h] - xm[h] * cf;
        part[h] += (double)(gm[h] * xm[h]) * r;
    }
}

static void norm_bwd_part(const void *ctx, int tid, int nt) {
    const norm_bwd_args *a = ctx;
    double *part = a->part + tid * a->H;
    int64_t lo, hi;
    split_range(a->M, tid, nt, 1, &lo, &hi);
    memset(part, 0, (size_t)a->H * sizeof(double));
    for (int64_t m = lo; m < hi; m++) {
        norm_bwd_row(a, part, m);
    }
}

mc_status mc_cpu_rmsnorm_bwd(const mc_exec *ex, float *dx, float *dw, const float *dy, const float *x, const float *w,
                             int64_t M, int64_t H, float eps) {
    const mc_status bad = mc_bwd_check_rmsnorm(ex, M, H);
    if (bad != MC_OK) {
        return bad;
    }
    const int nt = mc_simd_threads(ex, M * H, BWD_MIN_PARALLEL);
    double *part = calloc((size_t)nt * (size_t)H, sizeof(double)); // [nt, H]; a team may be smaller than nt
    if (part == NULL) {
        return mc_fail(err_of(ex), MC_ERR_NOMEM, "rmsnorm_bwd: no memory for %d x %lld partial sums", nt, (long long)H);
    }
    const norm_bwd_args a = { dx, part, dy, x, w, M, H, eps };
    team_run(nt, norm_bwd_part, &a);
    for (int64_t h = 0; h < H; h++) {
        double acc = 0;
        for (int t = 0; t < nt; t++) {
            acc += part[t * H + h];
        }
        dw[h] = (float)((double)dw[h] + acc);
    }
    free(part);
    return MC_OK;
}

// ---- conv1d -----------------------------------------------------------------------------------------------------

// Threads take blocks of channels (1 for portable C, a vector's lanes for SIMD); each channel's dw and db are summed
// over every sequence by the one thread that owns it, so nothing is shared. The window of a channel is [state0 (K
// inputs), x[0..L)]: output t reads window[t + 1 .. t + K] (as the reference's conv_channel_bwd).
typedef struct conv_bwd_args conv_bwd_args;

// Channels [e0, e0 + width) of every sequence, in sc (the thread's scratch, conv_bwd_scratch_floats).
typedef void (*conv_bwd_block_fn)(const conv_bwd_args *a, float *sc, int64_t e0);

struct conv_bwd_args {
    float *dx, *dw, *db, *dstate0;
    const float *du, *dstate_final, *x, *state0, *w, *b;
    int64_t ldx, Bt, L, E, K;
    int64_t width; // channels per block
    conv_bwd_block_fn block;
    float *scratch; // per thread: scratch_per floats
    int64_t scratch_per;
};

// A block's scratch: the window and its gradient [K + L, width], then 4K·width floats for the taps (portable C: dw
// sums [K] doubles; SIMD: taps and f32 dw sums [K, width] each, then double dw sums [K, width]). Even, so the
// doubles stay 8-byte aligned.
static int64_t conv_bwd_scratch_floats(int64_t L, int64_t K, int64_t width) {
    return (2 * (K + L) + 4 * K) * width;
}

static void conv_bwd_part(const void *ctx, int tid, int nt) {
    const conv_bwd_args *a = ctx;
    int64_t lo, hi;
    split_range((a->E + a->width - 1) / a->width, tid, nt, 1, &lo, &hi);
    for (int64_t blk = lo; blk < hi; blk++) {
        a->block(a, a->scratch + tid * a->scratch_per, blk * a->width);
    }
}

// Checks the sizes, allocates per-thread scratch and runs block over the channel blocks on the exec's threads.
static mc_status conv_bwd_run(const mc_exec *ex, conv_bwd_args a) {
    mc_status st = mc_bwd_check_conv1d(ex, a.Bt, a.L, a.E, a.K, a.ldx);
    if (st != MC_OK) {
        return st;
    }
    const int nt = mc_simd_threads(ex, a.Bt * a.L * a.E * a.K, BWD_MIN_PARALLEL);
    int64_t total = 0;
    a.scratch_per = conv_bwd_scratch_floats(a.L, a.K, a.width);
    if (!mc_mul_i64(a.scratch_per, nt, &total) || (a.scratch = scratch_f32(total)) == NULL) {
        return mc_fail(err_of(ex), MC_ERR_NOMEM, "conv1d_bwd: no memory for windows of %lld", (long long)(a.K + a.L));
    }
    team_run(nt, conv_bwd_part, &a);
    free(a.scratch);
    return MC_OK;
}

// sc: xw, gw [K + L] floats, then dw_acc [K] doubles.
static void conv_bwd_channel_c(const conv_bwd_args *a, float *sc, int64_t e) {
    const int64_t K = a->K, L = a->L, E = a->E;
    float *xw = sc, *gw = xw + K + L;
    double *dw_acc = (double *)(gw + K + L), db_acc = 0;
    const float *w = a->w + e * K;
    const float bias = a->b != NULL ? a->b[e] : 0.0f;
    memset(dw_acc, 0, (size_t)K * sizeof(double));
    for (int64_t seq = 0; seq < a->Bt; seq++) {
        const int64_t se = (seq * E + e) * K;
        for (int64_t k = 0; k < K; k++) {
            xw[k] = a->state0[se + k];
            gw[k] = 0.0f;
        }
        for (int64_t t = 0; t < L; t++) {
            xw[K + t] = a->x[(seq * L + t) * a->ldx + e];
            gw[K + t] = 0.0f;
        }
        for (int64_t k = 0; k < K && a->dstate_final != NULL; k++) {
            gw[L + k] += a->dstate_final[se + k];
        }
        for (int64_t t = 0; t < L; t++) {
            float c = bias;
            for (int64_t k = 0; k < K; k++) {
                c += w[k] * xw[t + 1 + k];
            }
            const float dc = a->du[(seq * L + t) * E + e] * silu_grad_c(c);
            db_acc += dc;
            for (int64_t k = 0; k < K; k++) {
                dw_acc[k] += dc * xw[t + 1 + k];
                gw[t + 1 + k] += dc * w[k];
            }
        }
        for (int64_t t = 0; t < L; t++) {
            a->dx[(seq * L + t) * a->ldx + e] = gw[K + t];
        }
        for (int64_t k = 0; k < K && a->dstate0 != NULL; k++) { // after dstate_final was read: they may alias
            a->dstate0[se + k] = gw[k];
        }
    }
    for (int64_t k = 0; k < K; k++) {
        a->dw[e * K + k] = (float)((double)a->dw[e * K + k] + dw_acc[k]);
    }
    if (a->db != NULL) {
        a->db[e] = (float)((double)a->db[e] + db_acc);
    }
}

mc_status mc_cpu_conv1d_bwd_c(const mc_exec *ex, float *dx, float *dw, float *db, float *dstate0, const float *du,
                              const float *dstate_final, const float *x, int64_t ldx, const float *state0,
                              const float *w, const float *b, int64_t Bt, int64_t L, int64_t E, int64_t K) {
    return conv_bwd_run(ex, (conv_bwd_args){ dx, dw, db, dstate0, du, dstate_final, x, state0, w, b, ldx, Bt, L, E, K,
                                             1, conv_bwd_channel_c, NULL, 0 });
}

// ---- selective scan: portable C ---------------------------------------------------------------------------------

// Shared by every variant. Threads take blocks of channels (1 for portable C, a vector's lanes for SIMD) and loop
// over the sequences inside, so dA, dD and ddt_bias of a channel have one owner; dB and dC (sums over channels) go
// to per-thread partials [Bt, L, N] that are added in thread order at the end.
typedef struct sbwd_args sbwd_args;

// Channels [e0, e0 + width) of every sequence; pB, pC are the thread's dB, dC partials [Bt, L, N], sc its scratch.
typedef void (*sbwd_block_fn)(const sbwd_args *a, float *sc, float *pB, float *pC, int64_t e0);

struct sbwd_args {
    float *du, *ddt, *dz, *dB, *dC, *dA, *dD, *ddt_bias, *dh0;
    const float *dy, *dh_final, *u, *dt, *dt_bias, *A, *B, *C, *D, *z, *h0;
    int64_t ldbc, ldz, Bt, L, E, N;
    int64_t width; // channels per block
    sbwd_block_fn block;
    float *part;    // [nt, 2, Bt, L, N]: dB then dC partials per thread
    float *scratch; // [nt, scratch_per]
    int64_t scratch_per;
};

static float softplus_c(float v) {
    return v > SOFTPLUS_THRESHOLD ? v : log1pf(expf(v));
}

// Channel e of sequence seq. sc: dA_acc [N] doubles (this channel's dA over the sequences), then h [(L + 1)·N],
// dec [L·N], g [N] floats.
static void sbwd_channel_c(const sbwd_args *a, float *sc, float *pB, float *pC, int64_t seq, int64_t e, double *dD_acc,
                           double *dbias_acc) {
    const int64_t L = a->L, E = a->E, N = a->N, r0 = seq * L, s0 = (seq * E + e) * N;
    double *dA_acc = (double *)sc;
    float *h = sc + 2 * N, *dec = h + (L + 1) * N, *g = dec + L * N;
    const float *Ae = a->A + e * N;
    for (int64_t n = 0; n < N; n++) {
        h[n] = a->h0 != NULL ? a->h0[s0 + n] : 0.0f;
        g[n] = a->dh_final != NULL ? a->dh_final[s0 + n] : 0.0f;
    }
    for (int64_t t = 0; t < L; t++) { // the forward again, states kept
        const int64_t row = r0 + t;
        const float delta = softplus_c(a->dt[row * E + e] + a->dt_bias[e]), dut = delta * a->u[row * E + e];
        const float *Bt = a->B + row * a->ldbc;
        for (int64_t n = 0; n < N; n++) {
            dec[t * N + n] = expf(delta * Ae[n]);
            h[(t + 1) * N + n] = dec[t * N + n] * h[t * N + n] + dut * Bt[n];
        }
    }
    for (int64_t t = L - 1; t >= 0; t--) {
        const int64_t row = r0 + t;
        const float *Bt = a->B + row * a->ldbc, *Ct = a->C + row * a->ldbc, *ht = h + (t + 1) * N, *hp = h + t * N;
        const float v = a->dt[row * E + e] + a->dt_bias[e], delta = softplus_c(v), ut = a->u[row * E + e];
        const float zt = a->z[row * a->ldz + e], dyt = a->dy[row * E + e], sz = sigmoid_c(zt);
        float readout = 0.0f, lamB = 0.0f, lamAhp = 0.0f;
        const float gy = dyt * zt * sz;
        for (int64_t n = 0; n < N; n++) {
            readout += Ct[n] * ht[n];
            const float lam = g[n] + gy * Ct[n];
            pC[t * N + n] += gy * ht[n];
            pB[t * N + n] += lam * delta * ut;
            lamB += lam * Bt[n];
            g[n] = lam * dec[t * N + n];
            const float wn = g[n] * hp[n];
            lamAhp += Ae[n] * wn;
            dA_acc[n] += delta * wn;
        }
        a->dz[row * a->ldz + e] = dyt * (readout + a->D[e] * ut) * (sz * (1.0f + zt * (1.0f - sz)));
        *dD_acc += gy * ut;
        const float ddelta = lamAhp + ut * lamB;
        const float dv = v > SOFTPLUS_THRESHOLD ? ddelta : ddelta * sigmoid_c(v);
        a->du[row * E + e] = gy * a->D[e] + delta * lamB;
        a->ddt[row * E + e] = dv;
        *dbias_acc += dv;
    }
    for (int64_t n = 0; n < N && a->dh0 != NULL; n++) { // after dh_final was read: they may alias
        a->dh0[s0 + n] = g[n];
    }
}

// Channel e of every sequence.
static void sbwd_block_c(const sbwd_args *a, float *sc, float *pB, float *pC, int64_t e) {
    double dD_acc = 0, dbias_acc = 0, *dA_acc = (double *)sc;
    memset(dA_acc, 0, (size_t)a->N * sizeof(double));
    for (int64_t seq = 0; seq < a->Bt; seq++) {
        const int64_t off = seq * a->L * a->N;
        sbwd_channel_c(a, sc, pB + off, pC + off, seq, e, &dD_acc, &dbias_acc);
    }
    for (int64_t n = 0; n < a->N; n++) {
        a->dA[e * a->N + n] = (float)((double)a->dA[e * a->N + n] + dA_acc[n]);
    }
    a->dD[e] = (float)((double)a->dD[e] + dD_acc);
    a->ddt_bias[e] = (float)((double)a->ddt_bias[e] + dbias_acc);
}

static void sbwd_part(const void *ctx, int tid, int nt) {
    const sbwd_args *a = ctx;
    const int64_t BLN = a->Bt * a->L * a->N;
    float *pB = a->part + 2 * tid * BLN, *pC = pB + BLN;
    memset(pB, 0, (size_t)(2 * BLN) * sizeof(float));
    int64_t lo, hi;
    split_range((a->E + a->width - 1) / a->width, tid, nt, 1, &lo, &hi);
    for (int64_t blk = lo; blk < hi; blk++) {
        a->block(a, a->scratch + tid * a->scratch_per, pB, pC, blk * a->width);
    }
}

// dB and dC rows from the per-thread partials, rows split over the threads.
typedef struct sbwd_reduce_args {
    const sbwd_args *a;
    int nt; // partials to add
} sbwd_reduce_args;

static void sbwd_reduce_part(const void *ctx, int tid, int nt) {
    const sbwd_reduce_args *r = ctx;
    const sbwd_args *a = r->a;
    const int64_t N = a->N, rows = a->Bt * a->L, BLN = rows * N;
    int64_t lo, hi;
    split_range(rows, tid, nt, 1, &lo, &hi);
    for (int64_t row = lo; row < hi; row++) {
        for (int64_t n = 0; n < N; n++) {
            float sb = 0.0f, scc = 0.0f;
            for (int t = 0; t < r->nt; t++) {
                sb += a->part[2 * t * BLN + row * N + n];
                scc += a->part[(2 * t + 1) * BLN + row * N + n];
            }
            a->dB[row * a->ldbc + n] = sb;
            a->dC[row * a->ldbc + n] = scc;
        }
    }
}

// Floats of per-thread scratch a variant needs at (L, N), or -1 when that overflows.
typedef int64_t (*sbwd_scratch_fn)(int64_t L, int64_t N);

// Checks the sizes, allocates the partials and scratch, runs a.block over the channel blocks on the exec's threads,
// then adds the partials up.
static mc_status sbwd_run(const mc_exec *ex, sbwd_args a, sbwd_scratch_fn scratch_floats) {
    mc_status st = mc_bwd_check_scan(ex, a.Bt, a.L, a.E, a.N, a.ldbc, a.ldz);
    if (st != MC_OK) {
        return st;
    }
    const int nt = mc_simd_threads(ex, a.Bt * a.L * a.E * a.N, BWD_MIN_PARALLEL);
    int64_t BLN = 0, part_n = 0, scratch_n = 0;
    a.scratch_per = scratch_floats(a.L, a.N);
    if (a.scratch_per < 0 || !mc_mul_i64(a.Bt * a.L, a.N, &BLN) || !mc_mul_i64(BLN, 2 * nt, &part_n) ||
        !mc_mul_i64(a.scratch_per, nt, &scratch_n)) {
        return mc_fail(err_of(ex), MC_ERR_INVALID, "selective_scan_bwd: Bt=%lld L=%lld N=%lld overflow the scratch",
                       (long long)a.Bt, (long long)a.L, (long long)a.N);
    }
    a.part = scratch_f32(part_n);
    a.scratch = scratch_f32(scratch_n);
    if (a.part == NULL || a.scratch == NULL) {
        free(a.part);
        free(a.scratch);
        return mc_fail(err_of(ex), MC_ERR_NOMEM, "selective_scan_bwd: no memory for %lld floats of scratch",
                       (long long)(part_n + scratch_n));
    }
    team_run(nt, sbwd_part, &a);
    const sbwd_reduce_args r = { &a, nt };
    team_run(mc_simd_threads(ex, BLN * nt, BWD_MIN_PARALLEL), sbwd_reduce_part, &r);
    free(a.part);
    free(a.scratch);
    return MC_OK;
}

// dA_acc [N] doubles, h [(L + 1)·N], dec [L·N], g [N]: even, so the doubles stay aligned.
static int64_t sbwd_scratch_floats_c(int64_t L, int64_t N) {
    int64_t per = 0;
    return L < INT64_MAX / 4 && mc_mul_i64(2 * L + 4, N, &per) ? per : -1;
}

mc_status mc_cpu_selective_scan_bwd_c(const mc_exec *ex, float *du, float *ddt, float *dz, float *dB, float *dC,
                                      float *dA, float *dD, float *ddt_bias, float *dh0, const float *dy,
                                      const float *dh_final, const float *u, const float *dt, const float *dt_bias,
                                      const float *A, const float *B, const float *C, int64_t ldbc, const float *D,
                                      const float *z, int64_t ldz, const float *h0, int64_t Bt, int64_t L, int64_t E,
                                      int64_t N) {
    const sbwd_args a = { du, ddt, dz, dB,   dC,  dA, dD, ddt_bias, dh0, dy, dh_final,     u,    dt,   dt_bias, A, B, C,
                          D,  z,   h0, ldbc, ldz, Bt, L,  E,        N,   1,  sbwd_block_c, NULL, NULL, 0 };
    return sbwd_run(ex, a, sbwd_scratch_floats_c);
}

// ---- cross entropy: portable C ----------------------------------------------------------------------------------

// Threads take rows; each row's loss goes to row_loss and the sum is taken in row order afterwards, so the result
// does not depend on the thread count. A row's gradient is written after all of its logits were read (dlogits may
// alias logits): pass 1 the max, pass 2 exp(l − max) stored and summed, pass 3 the scaling. The passes are per ISA.
typedef struct ce_passes {
    float (*max)(const float *row, int64_t V);
    double (*exp_store)(float *grad, const float *row, int64_t V, float mx); // grad = exp(row − mx); returns the sum
    void (*scale)(float *grad, int64_t V, float s);                          // grad *= s
} ce_passes;

typedef struct ce_args {
    float *dlogits;
    double *row_loss; // [T], NAN for ignored rows
    const float *logits;
    const int32_t *targets;
    int64_t T, V;
    float scale;
    const ce_passes *passes;
} ce_args;

static void ce_row(const ce_args *a, int64_t t) {
    const int64_t V = a->V;
    const float *row = a->logits + t * V;
    float *grad = a->dlogits + t * V;
    const int32_t target = a->targets[t];
    if (target == IGNORE_INDEX) {
        memset(grad, 0, (size_t)V * sizeof(float));
        a->row_loss[t] = NAN;
        return;
    }
    const float xt = row[target];
    const float mx = a->passes->max(row, V);
    const double sum = a->passes->exp_store(grad, row, V, mx);
    a->row_loss[t] = log(sum) + mx - xt;
    a->passes->scale(grad, V, (float)(a->scale / sum));
    grad[target] -= a->scale;
}

static void ce_part(const void *ctx, int tid, int nt) {
    const ce_args *a = ctx;
    int64_t lo, hi;
    split_range(a->T, tid, nt, 1, &lo, &hi);
    for (int64_t t = lo; t < hi; t++) {
        ce_row(a, t);
    }
}

// Checks the targets, runs the rows on the exec's threads, adds the kept rows' losses in row order.
static mc_status ce_run(const mc_exec *ex, ce_args a, double *loss_sum, int64_t *n_valid) {
    mc_status st = mc_bwd_check_cross_entropy(ex, a.targets, a.T, a.V);
    if (st != MC_OK) {
        return st;
    }
    a.row_loss = malloc((size_t)(a.T > 0 ? a.T : 1) * sizeof(double));
    if (a.row_loss == NULL) {
        return mc_fail(err_of(ex), MC_ERR_NOMEM, "cross_entropy: no memory for %lld rows", (long long)a.T);
    }
    team_run(mc_simd_threads(ex, a.T * a.V, BWD_MIN_PARALLEL), ce_part, &a);
    int64_t kept = 0;
    for (int64_t t = 0; t < a.T; t++) {
        if (a.targets[t] != IGNORE_INDEX) {
            *loss_sum += a.row_loss[t];
            kept++;
        }
    }
    *n_valid += kept;
    free(a.row_loss);
    return MC_OK;
}

static float ce_max_c(const float *row, int64_t V) {
    float mx = row[0];
    for (int64_t v = 1; v < V; v++) {
        mx = row[v] > mx ? row[v] : mx;
    }
    return mx;
}

static double ce_exp_store_c(float *grad, const float *row, int64_t V, float mx) {
    double sum = 0;
    for (int64_t v = 0; v < V; v++) {
        const float e = expf(row[v] - mx);
        sum += e;
        grad[v] = e;
    }
    return sum;
}

static void ce_scale_c(float *grad, int64_t V, float s) {
    for (int64_t v = 0; v < V; v++) {
        grad[v] *= s;
    }
}

static const ce_passes ce_passes_c = { ce_max_c, ce_exp_store_c, ce_scale_c };

mc_status mc_cpu_cross_entropy_c(const mc_exec *ex, float *dlogits, double *loss_sum, int64_t *n_valid,
                                 const float *logits, const int32_t *targets, int64_t T, int64_t V, float scale) {
    return ce_run(ex, (ce_args){ dlogits, NULL, logits, targets, T, V, scale, &ce_passes_c }, loss_sum, n_valid);
}

#if defined(__x86_64__)

// ---- SIMD (AVX-512 and AVX2): what both widths share -----------------------------------------------------------

// Cross entropy: the exponentials sum in f32 lanes over blocks of CE_BLOCK vectors (1024 logits at 16 lanes, 512 at
// 8), the blocks in double, so a 50k-term row keeps the reference's loss to ~1e-8 relative.
#define CE_BLOCK 64

// Conv1d: lanes hold W channels; a block's window and its gradient are transposed into [K + L, W] scratch rows, the
// taps and their dw sums into [K, W] (conv_bwd_scratch_floats).
typedef struct conv_simd_scratch {
    float *xw, *gw;  // [K + L, W] window and its gradient
    float *wv, *dwv; // [K, W] taps and their dw sums over one sequence (f32)
    double *dw_sum;  // [K, W] dw sums across sequences
} conv_simd_scratch;

static conv_simd_scratch conv_simd_scratch_at(float *sc, int64_t L, int64_t K, int64_t W) {
    conv_simd_scratch s = { .xw = sc };
    s.gw = s.xw + (K + L) * W;
    s.wv = s.gw + (K + L) * W;
    s.dwv = s.wv + K * W;
    s.dw_sum = (double *)(s.dwv + K * W);
    return s;
}

// Selective scan: lanes hold W channels (W = 16 or 8), states run in passes of up to W (each state's adjoint is its
// own chain; the sums over states, Σ λ·B and Σ λ·A·decay·h, add up across passes). Time runs in chunks of
// SBWD_CHUNK steps: the states and decays of one chunk are kept ([chunk + 1, W states, W lanes] and [chunk, W, W],
// 256 KiB at 128 steps and W = 16: L2), and a longer sequence first runs the forward once to checkpoint each chunk's
// starting state.
#define SBWD_CHUNK 128

// Per (block, sequence) vectors over time, [L, W] each, gathered once from the strided [·, E] rows (the walk down a
// column strip is what the hardware prefetchers follow poorly); then the chunk's states and decays, the checkpoints.
typedef struct sbwd_scratch {
    float *delta, *u, *v, *gy, *dzf; // Δ; u; v = dt + dt_bias; gy = dy·silu(z); dy·silu'(z)
    float *lamb, *lamahp, *readout;  // Σ_n λ·B; Σ_n λ·A·decay·h_prev; C·h (summed over the passes)
    float *h;                        // [SBWD_CHUNK + 1, W, W] states of the chunk, row 0 its start
    float *dec;                      // [SBWD_CHUNK, W, W]
    float *ck;                       // [n_chunks, W, W] starting state of each chunk
    float *pbc;                      // [2, W, W] one step's λ·Δ·u and gy·h per state, to fold
} sbwd_scratch;

#define SBWD_STEP_VECS 8 // vectors per step in the struct's first two lines

static int64_t sbwd_chunks(int64_t L) {
    return L > 0 ? (L + SBWD_CHUNK - 1) / SBWD_CHUNK : 1;
}

// Floats of sbwd_scratch for W lanes, or -1 when L overflows it. Every array starts a whole number of vectors in.
static int64_t sbwd_scratch_floats(int64_t L, int64_t W) {
    if (L > INT64_MAX / (SBWD_STEP_VECS * 2 * W * W)) {
        return -1;
    }
    return (SBWD_STEP_VECS * L + (2 * SBWD_CHUNK + 1) * W + sbwd_chunks(L) * W + 2 * W) * W;
}

static sbwd_scratch sbwd_scratch_at(float *p, int64_t L, int64_t W) {
    float **step[SBWD_STEP_VECS];
    sbwd_scratch s;
    step[0] = &s.delta, step[1] = &s.u, step[2] = &s.v, step[3] = &s.gy, step[4] = &s.dzf, step[5] = &s.lamb;
    step[6] = &s.lamahp, step[7] = &s.readout;
    for (int i = 0; i < SBWD_STEP_VECS; i++) {
        *step[i] = p + i * L * W;
    }
    s.h = p + SBWD_STEP_VECS * L * W;
    s.dec = s.h + (SBWD_CHUNK + 1) * W * W;
    s.ck = s.dec + SBWD_CHUNK * W * W;
    s.pbc = s.ck + sbwd_chunks(L) * W * W;
    return s;
}

// Rows this far ahead are prefetched in the walks down the [·, E] inputs and outputs (as scan.c's forward does).
#define SBWD_PREFETCH_ROWS 8

// The inputs of step t (row r0 + t) SBWD_PREFETCH_ROWS steps ahead, in a walk down channels [e0, e0 + W).
static inline void sbwd_prefetch_inputs(const sbwd_args *a, int64_t t, int64_t row, int64_t e0) {
    if (t + SBWD_PREFETCH_ROWS < a->L) {
        const int64_t pr = row + SBWD_PREFETCH_ROWS, E = a->E;
        __builtin_prefetch(a->u + pr * E + e0);
        __builtin_prefetch(a->dt + pr * E + e0);
        __builtin_prefetch(a->dy + pr * E + e0);
        __builtin_prefetch(a->z + pr * a->ldz + e0);
    }
}

// The outputs likewise, for writing.
static inline void sbwd_prefetch_outputs(const sbwd_args *a, int64_t t, int64_t row, int64_t e0) {
    if (t + SBWD_PREFETCH_ROWS < a->L) {
        const int64_t pr = row + SBWD_PREFETCH_ROWS, E = a->E;
        __builtin_prefetch(a->du + pr * E + e0, 1);
        __builtin_prefetch(a->ddt + pr * E + e0, 1);
        __builtin_prefetch(a->dz + pr * a->ldz + e0, 1);
    }
}

// What one (block, sequence, state pass) works on.
typedef struct sbwd_pass {
    const sbwd_args *a;
    const sbwd_scratch *s;
    int64_t seq, e0, n0;
    int64_t ne;     // live channels (lanes) of the block
    float *pB, *pC; // this thread's dB, dC partials of the sequence, [L, N]
} sbwd_pass;

// ---- AVX-512 ----------------------------------------------------------------------------------------------------

// acc[0..16) (two double vectors) += the 16 lanes of v.
MC_AVX512 static MC_INLINE void add_pd16(__m512d *acc, __m512 v) {
    acc[0] = _mm512_add_pd(acc[0], _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
    acc[1] = _mm512_add_pd(acc[1], _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)));
}

// (float)((double)cur + acc) per lane: a parameter gradient plus a double sum, rounded once as the reference does.
MC_AVX512 static MC_INLINE __m512 add_pd16_ps(__m512 cur, const __m512d *acc) {
    const __m512d lo = _mm512_add_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(cur)), acc[0]);
    const __m512d hi = _mm512_add_pd(_mm512_cvtps_pd(_mm512_extractf32x8_ps(cur, 1)), acc[1]);
    return _mm512_insertf32x8(_mm512_castps256_ps512(_mm512_cvtpd_ps(lo)), _mm512_cvtpd_ps(hi), 1);
}

MC_AVX512 static MC_INLINE __m512 sigmoid512(__m512 v) {
    return _mm512_div_ps(_mm512_set1_ps(1.0f),
                         _mm512_add_ps(_mm512_set1_ps(1.0f), mc_exp512(_mm512_sub_ps(_mm512_setzero_ps(), v))));
}

// Row of a [·, 16]-lane array: 16 floats per row.
#define LANES16 16

// Cross entropy: 16 logits per vector, exponentials summed in f32 over blocks of CE_BLOCK vectors (1024 logits).
MC_AVX512 static float ce_max512(const float *row, int64_t V) {
    __m512 vmax = _mm512_set1_ps(row[0]);
    for (int64_t v = 0; v < V; v += LANES16) {
        vmax = _mm512_max_ps(vmax, _mm512_mask_loadu_ps(vmax, mc_mask512(V - v), row + v));
    }
    return _mm512_reduce_max_ps(vmax);
}

MC_AVX512 static double ce_exp_store512(float *grad, const float *row, int64_t V, float mx) {
    const __m512 vmx = _mm512_set1_ps(mx);
    __m512d total = _mm512_setzero_pd();
    int64_t v = 0;
    while (v < V) {
        __m512 acc = _mm512_setzero_ps();
        for (int i = 0; i < CE_BLOCK && v < V; i++, v += LANES16) {
            const __mmask16 m = mc_mask512(V - v);
            __m512 e = mc_exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, row + v), vmx));
            e = _mm512_maskz_mov_ps(m, e);
            _mm512_mask_storeu_ps(grad + v, m, e);
            acc = _mm512_add_ps(acc, e);
        }
        total = _mm512_add_pd(total, _mm512_cvtps_pd(_mm512_castps512_ps256(acc)));
        total = _mm512_add_pd(total, _mm512_cvtps_pd(_mm512_extractf32x8_ps(acc, 1)));
    }
    return _mm512_reduce_add_pd(total);
}

MC_AVX512 static void ce_scale512(float *grad, int64_t V, float s) {
    const __m512 vs = _mm512_set1_ps(s);
    for (int64_t v = 0; v < V; v += LANES16) {
        const __mmask16 m = mc_mask512(V - v);
        _mm512_mask_storeu_ps(grad + v, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, grad + v), vs));
    }
}

static const ce_passes ce_passes512 = { ce_max512, ce_exp_store512, ce_scale512 };

mc_status mc_cpu_cross_entropy_avx512(const mc_exec *ex, float *dlogits, double *loss_sum, int64_t *n_valid,
                                      const float *logits, const int32_t *targets, int64_t T, int64_t V, float scale) {
    return ce_run(ex, (ce_args){ dlogits, NULL, logits, targets, T, V, scale, &ce_passes512 }, loss_sum, n_valid);
}

// Conv1d: lanes hold 16 channels (see the shared layout above).
MC_AVX512 static void conv_bwd_block512(const conv_bwd_args *a, float *sc, int64_t e0) {
    const int64_t K = a->K, L = a->L, E = a->E;
    const __mmask16 m = mc_mask512(E - e0);
    const __m512i kidx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32((int)K));
    const conv_simd_scratch cs = conv_simd_scratch_at(sc, L, K, LANES16);
    float *xw = cs.xw, *gw = cs.gw, *wv = cs.wv, *dwv = cs.dwv;
    __m512d *dw_sum = (__m512d *)cs.dw_sum; // [K, 2]
    __m512d db_sum[2] = { _mm512_setzero_pd(), _mm512_setzero_pd() };
    for (int64_t k = 0; k < K; k++) {
        _mm512_store_ps(wv + k * LANES16, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, kidx, a->w + e0 * K + k, 4));
        dw_sum[2 * k] = dw_sum[2 * k + 1] = _mm512_setzero_pd();
    }
    const __m512 bias = a->b != NULL ? _mm512_maskz_loadu_ps(m, a->b + e0) : _mm512_setzero_ps();
    for (int64_t seq = 0; seq < a->Bt; seq++) {
        __m512 db = _mm512_setzero_ps();
        for (int64_t k = 0; k < K; k++) {
            _mm512_store_ps(dwv + k * LANES16, _mm512_setzero_ps());
        }
        const float *s0 = a->state0 + (seq * E + e0) * K;
        for (int64_t k = 0; k < K; k++) {
            _mm512_store_ps(xw + k * LANES16, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, kidx, s0 + k, 4));
        }
        for (int64_t t = 0; t < L; t++) {
            _mm512_store_ps(xw + (K + t) * LANES16, _mm512_maskz_loadu_ps(m, a->x + (seq * L + t) * a->ldx + e0));
        }
        memset(gw, 0, (size_t)((K + L) * LANES16) * sizeof(float));
        if (a->dstate_final != NULL) {
            const float *f = a->dstate_final + (seq * E + e0) * K;
            for (int64_t k = 0; k < K; k++) {
                _mm512_store_ps(gw + (L + k) * LANES16,
                                _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, kidx, f + k, 4));
            }
        }
        for (int64_t t = 0; t < L; t++) {
            __m512 c = bias;
            for (int64_t k = 0; k < K; k++) {
                c = _mm512_fmadd_ps(_mm512_load_ps(wv + k * LANES16), _mm512_load_ps(xw + (t + 1 + k) * LANES16), c);
            }
            const __m512 s = sigmoid512(c), one = _mm512_set1_ps(1.0f);
            const __m512 sg = _mm512_mul_ps(s, _mm512_fmadd_ps(c, _mm512_sub_ps(one, s), one));
            const __m512 dc = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, a->du + (seq * L + t) * E + e0), sg);
            db = _mm512_add_ps(db, dc);
            for (int64_t k = 0; k < K; k++) {
                float *dwk = dwv + k * LANES16, *gk = gw + (t + 1 + k) * LANES16;
                _mm512_store_ps(dwk,
                                _mm512_fmadd_ps(dc, _mm512_load_ps(xw + (t + 1 + k) * LANES16), _mm512_load_ps(dwk)));
                _mm512_store_ps(gk, _mm512_fmadd_ps(dc, _mm512_load_ps(wv + k * LANES16), _mm512_load_ps(gk)));
            }
        }
        for (int64_t t = 0; t < L; t++) {
            _mm512_mask_storeu_ps(a->dx + (seq * L + t) * a->ldx + e0, m, _mm512_load_ps(gw + (K + t) * LANES16));
        }
        if (a->dstate0 != NULL) { // after dstate_final was read: they may alias
            float *d0 = a->dstate0 + (seq * E + e0) * K;
            for (int64_t k = 0; k < K; k++) {
                _mm512_mask_i32scatter_ps(d0 + k, m, kidx, _mm512_load_ps(gw + k * LANES16), 4);
            }
        }
        for (int64_t k = 0; k < K; k++) {
            add_pd16(dw_sum + 2 * k, _mm512_load_ps(dwv + k * LANES16));
        }
        add_pd16(db_sum, db);
    }
    for (int64_t k = 0; k < K; k++) {
        float *dw = a->dw + e0 * K + k;
        __m512 cur = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, kidx, dw, 4);
        _mm512_mask_i32scatter_ps(dw, m, kidx, add_pd16_ps(cur, dw_sum + 2 * k), 4);
    }
    if (a->db != NULL) {
        _mm512_mask_storeu_ps(a->db + e0, m, add_pd16_ps(_mm512_maskz_loadu_ps(m, a->db + e0), db_sum));
    }
}

mc_status mc_cpu_conv1d_bwd_avx512(const mc_exec *ex, float *dx, float *dw, float *db, float *dstate0, const float *du,
                                   const float *dstate_final, const float *x, int64_t ldx, const float *state0,
                                   const float *w, const float *b, int64_t Bt, int64_t L, int64_t E, int64_t K) {
    return conv_bwd_run(ex, (conv_bwd_args){ dx, dw, db, dstate0, du, dstate_final, x, state0, w, b, ldx, Bt, L, E, K,
                                             LANES16, conv_bwd_block512, NULL, 0 });
}

// Selective scan: lanes hold 16 channels, states run in passes of up to 16 (see the shared layout above).

// Forward over steps [t0, t1) from the states hv; keep = store each state and decay into the chunk buffers (row 0 =
// the state at t0) and add C·h to the readout.
MC_AVX512 static MC_INLINE void sbwd_fwd512(const sbwd_pass *p, __m512 *hv, const __m512 *av, int64_t t0, int64_t t1,
                                            bool keep, int nb) {
    const sbwd_args *a = p->a;
    const sbwd_scratch *s = p->s;
    const int64_t r0 = p->seq * a->L;
    if (keep) {
        for (int j = 0; j < nb; j++) {
            _mm512_store_ps(s->h + j * LANES16, hv[j]);
        }
    }
    for (int64_t t = t0; t < t1; t++) {
        const int64_t row = r0 + t, i = t - t0;
        const float *bt = a->B + row * a->ldbc + p->n0, *ct = a->C + row * a->ldbc + p->n0;
        const __m512 dl = _mm512_load_ps(s->delta + t * LANES16);
        const __m512 dut = _mm512_mul_ps(dl, _mm512_load_ps(s->u + t * LANES16));
        __m512 r0v = _mm512_setzero_ps(), r1v = _mm512_setzero_ps();
        for (int j = 0; j < nb; j++) {
            const __m512 dec = mc_exp512(_mm512_mul_ps(dl, av[j]));
            hv[j] = _mm512_fmadd_ps(dec, hv[j], _mm512_mul_ps(dut, _mm512_set1_ps(bt[j])));
            if (keep) {
                _mm512_store_ps(s->h + ((i + 1) * LANES16 + j) * LANES16, hv[j]);
                _mm512_store_ps(s->dec + (i * LANES16 + j) * LANES16, dec);
                if (j % 2 == 0) {
                    r0v = _mm512_fmadd_ps(_mm512_set1_ps(ct[j]), hv[j], r0v);
                } else {
                    r1v = _mm512_fmadd_ps(_mm512_set1_ps(ct[j]), hv[j], r1v);
                }
            }
        }
        if (keep) {
            float *rd = s->readout + t * LANES16;
            _mm512_store_ps(rd, _mm512_add_ps(_mm512_load_ps(rd), _mm512_add_ps(r0v, r1v)));
        }
    }
}

// Backward over the kept chunk [t0, t1), the adjoints g entering as ∂/∂h[t1 − 1] and leaving as ∂/∂h[t0 − 1].
MC_AVX512 static MC_INLINE void sbwd_bwd512(const sbwd_pass *p, __m512 *g, __m512 *dA, const __m512 *av, int64_t t0,
                                            int64_t t1, int nb) {
    const sbwd_args *a = p->a;
    const sbwd_scratch *s = p->s;
    const int64_t N = a->N, r0 = p->seq * a->L;
    const __mmask16 nm = mc_mask512(nb);
    __m512 *pb = (__m512 *)s->pbc, *pc = pb + LANES16;
    for (int64_t t = t1 - 1; t >= t0; t--) {
        const int64_t row = r0 + t, i = t - t0;
        const float *bt = a->B + row * a->ldbc + p->n0, *ct = a->C + row * a->ldbc + p->n0;
        const __m512 dl = _mm512_load_ps(s->delta + t * LANES16), gy = _mm512_load_ps(s->gy + t * LANES16);
        const __m512 dut = _mm512_mul_ps(dl, _mm512_load_ps(s->u + t * LANES16));
        __m512 lamb = _mm512_setzero_ps(), lamahp = _mm512_setzero_ps();
        for (int j = 0; j < nb; j++) {
            const __m512 lam = _mm512_fmadd_ps(gy, _mm512_set1_ps(ct[j]), g[j]);
            pc[j] = _mm512_mul_ps(gy, _mm512_load_ps(s->h + ((i + 1) * LANES16 + j) * LANES16));
            pb[j] = _mm512_mul_ps(lam, dut);
            lamb = _mm512_fmadd_ps(lam, _mm512_set1_ps(bt[j]), lamb);
            g[j] = _mm512_mul_ps(lam, _mm512_load_ps(s->dec + (i * LANES16 + j) * LANES16));
            const __m512 w = _mm512_mul_ps(g[j], _mm512_load_ps(s->h + (i * LANES16 + j) * LANES16));
            dA[j] = _mm512_fmadd_ps(dl, w, dA[j]);
            lamahp = _mm512_fmadd_ps(av[j], w, lamahp);
        }
        float *lb = s->lamb + t * LANES16, *la = s->lamahp + t * LANES16;
        _mm512_store_ps(lb, _mm512_add_ps(_mm512_load_ps(lb), lamb));
        _mm512_store_ps(la, _mm512_add_ps(_mm512_load_ps(la), lamahp));
        float *qb = p->pB + t * N + p->n0, *qc = p->pC + t * N + p->n0;
        _mm512_mask_storeu_ps(qb, nm, _mm512_add_ps(_mm512_maskz_loadu_ps(nm, qb), mc_hsum16x16_512(pb)));
        _mm512_mask_storeu_ps(qc, nm, _mm512_add_ps(_mm512_maskz_loadu_ps(nm, qc), mc_hsum16x16_512(pc)));
    }
}

// One pass of states [n0, n0 + nb) over the whole sequence: checkpoints, then chunks from the last, each recomputed
// and walked back. Ends with dh0 and dA of these states.
MC_AVX512 static MC_INLINE void sbwd_pass512(const sbwd_pass *p, int nb) {
    const sbwd_args *a = p->a;
    const sbwd_scratch *s = p->s;
    const int64_t N = a->N, L = a->L, base = (p->seq * a->E + p->e0) * N + p->n0, n_chunks = sbwd_chunks(L);
    const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32((int)N));
    const __mmask16 m = mc_mask512(p->ne);
    __m512 av[LANES16], hv[LANES16], g[LANES16], dA[LANES16];
    __m512d dA_sum[2 * LANES16]; // dA in double across chunks: f32 within a chunk
    for (int j = 0; j < nb; j++) {
        dA_sum[2 * j] = dA_sum[2 * j + 1] = _mm512_setzero_pd();
        av[j] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, a->A + p->e0 * N + p->n0 + j, 4);
        hv[j] = a->h0 != NULL ? _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, a->h0 + base + j, 4)
                              : _mm512_setzero_ps();
        g[j] = a->dh_final != NULL ? _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, a->dh_final + base + j, 4)
                                   : _mm512_setzero_ps();
        dA[j] = _mm512_setzero_ps();
    }
    for (int64_t c = 0; c < n_chunks; c++) { // checkpoints (a single chunk needs no extra forward)
        for (int j = 0; j < nb; j++) {
            _mm512_store_ps(s->ck + (c * LANES16 + j) * LANES16, hv[j]);
        }
        if (c + 1 < n_chunks) {
            sbwd_fwd512(p, hv, av, c * SBWD_CHUNK, (c + 1) * SBWD_CHUNK, false, nb);
        }
    }
    for (int64_t c = n_chunks - 1; c >= 0; c--) {
        const int64_t t0 = c * SBWD_CHUNK, t1 = t0 + SBWD_CHUNK < L ? t0 + SBWD_CHUNK : L;
        for (int j = 0; j < nb; j++) {
            hv[j] = _mm512_load_ps(s->ck + (c * LANES16 + j) * LANES16);
        }
        sbwd_fwd512(p, hv, av, t0, t1, true, nb);
        sbwd_bwd512(p, g, dA, av, t0, t1, nb);
        for (int j = 0; j < nb; j++) {
            add_pd16(dA_sum + 2 * j, dA[j]);
            dA[j] = _mm512_setzero_ps();
        }
    }
    for (int j = 0; j < nb; j++) {
        if (a->dh0 != NULL) { // after dh_final was read: they may alias
            _mm512_mask_i32scatter_ps(a->dh0 + base + j, m, idx, g[j], 4);
        }
        float *dAj = a->dA + p->e0 * N + p->n0 + j;
        const __m512 cur = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, dAj, 4);
        _mm512_mask_i32scatter_ps(dAj, m, idx, add_pd16_ps(cur, dA_sum + 2 * j), 4);
    }
}

// Per-step vectors of a (block, sequence) before the passes: the strided inputs gathered, Δ, the gate's factors,
// zeroed sums.
MC_AVX512 static void sbwd_prepare512(const sbwd_args *a, const sbwd_scratch *s, int64_t seq, int64_t e0, __mmask16 m) {
    const int64_t E = a->E, r0 = seq * a->L;
    const __m512 bias = _mm512_maskz_loadu_ps(m, a->dt_bias + e0), one = _mm512_set1_ps(1.0f);
    for (int64_t t = 0; t < a->L; t++) {
        const int64_t row = r0 + t;
        sbwd_prefetch_inputs(a, t, row, e0);
        const __m512 zt = _mm512_maskz_loadu_ps(m, a->z + row * a->ldz + e0);
        const __m512 dyt = _mm512_maskz_loadu_ps(m, a->dy + row * E + e0);
        const __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, a->dt + row * E + e0), bias);
        const __m512 sz = sigmoid512(zt);
        const __m512 sg = _mm512_mul_ps(sz, _mm512_fmadd_ps(zt, _mm512_sub_ps(one, sz), one)); // silu'(z)
        _mm512_store_ps(s->u + t * LANES16, _mm512_maskz_loadu_ps(m, a->u + row * E + e0));
        _mm512_store_ps(s->v + t * LANES16, v);
        _mm512_store_ps(s->delta + t * LANES16, mc_softplus512(v));
        _mm512_store_ps(s->gy + t * LANES16, _mm512_mul_ps(dyt, _mm512_mul_ps(zt, sz)));
        _mm512_store_ps(s->dzf + t * LANES16, _mm512_mul_ps(dyt, sg));
        _mm512_store_ps(s->lamb + t * LANES16, _mm512_setzero_ps());
        _mm512_store_ps(s->lamahp + t * LANES16, _mm512_setzero_ps());
        _mm512_store_ps(s->readout + t * LANES16, _mm512_setzero_ps());
    }
}

// After the passes: du, ddt, dz of the block's channels, and their dD and ddt_bias sums.
MC_AVX512 static void sbwd_finish512(const sbwd_args *a, const sbwd_scratch *s, int64_t seq, int64_t e0, __mmask16 m,
                                     __m512d *dD, __m512d *dbias) {
    const int64_t E = a->E, r0 = seq * a->L;
    const __m512 dskip = _mm512_maskz_loadu_ps(m, a->D + e0);
    for (int64_t t = 0; t < a->L; t++) {
        const int64_t row = r0 + t;
        sbwd_prefetch_outputs(a, t, row, e0);
        const __m512 ut = _mm512_load_ps(s->u + t * LANES16), gy = _mm512_load_ps(s->gy + t * LANES16);
        const __m512 lamb = _mm512_load_ps(s->lamb + t * LANES16), dl = _mm512_load_ps(s->delta + t * LANES16);
        const __m512 v = _mm512_load_ps(s->v + t * LANES16);
        const __m512 ddelta = _mm512_fmadd_ps(ut, lamb, _mm512_load_ps(s->lamahp + t * LANES16));
        const __mmask16 big = _mm512_cmp_ps_mask(v, _mm512_set1_ps(SOFTPLUS_THRESHOLD), _CMP_GT_OQ);
        const __m512 dv = _mm512_mask_mov_ps(_mm512_mul_ps(ddelta, sigmoid512(v)), big, ddelta);
        _mm512_mask_storeu_ps(a->ddt + row * E + e0, m, dv);
        add_pd16(dbias, _mm512_maskz_mov_ps(m, dv));
        _mm512_mask_storeu_ps(a->du + row * E + e0, m, _mm512_fmadd_ps(gy, dskip, _mm512_mul_ps(dl, lamb)));
        add_pd16(dD, _mm512_mul_ps(gy, ut));
        const __m512 pre = _mm512_fmadd_ps(dskip, ut, _mm512_load_ps(s->readout + t * LANES16));
        _mm512_mask_storeu_ps(a->dz + row * a->ldz + e0, m, _mm512_mul_ps(_mm512_load_ps(s->dzf + t * LANES16), pre));
    }
}

MC_AVX512 static void sbwd_block512(const sbwd_args *a, float *sc, float *pB, float *pC, int64_t e0) {
    const int64_t ne = a->E - e0 < LANES16 ? a->E - e0 : LANES16, LN = a->L * a->N;
    const __mmask16 m = mc_mask512(ne);
    const sbwd_scratch s = sbwd_scratch_at(sc, a->L, LANES16);
    __m512d dD[2] = { _mm512_setzero_pd(), _mm512_setzero_pd() }, dbias[2] = { dD[0], dD[1] };
    for (int64_t seq = 0; seq < a->Bt; seq++) {
        sbwd_prepare512(a, &s, seq, e0, m);
        for (int64_t n0 = 0; n0 < a->N; n0 += LANES16) {
            const sbwd_pass p = { a, &s, seq, e0, n0, ne, pB + seq * LN, pC + seq * LN };
            if (a->N - n0 >= LANES16) { // constant nb: the state loops unroll and stay in registers
                sbwd_pass512(&p, LANES16);
            } else {
                sbwd_pass512(&p, (int)(a->N - n0));
            }
        }
        sbwd_finish512(a, &s, seq, e0, m, dD, dbias);
    }
    _mm512_mask_storeu_ps(a->dD + e0, m, add_pd16_ps(_mm512_maskz_loadu_ps(m, a->dD + e0), dD));
    _mm512_mask_storeu_ps(a->ddt_bias + e0, m, add_pd16_ps(_mm512_maskz_loadu_ps(m, a->ddt_bias + e0), dbias));
}

static int64_t sbwd_scratch_floats16(int64_t L, int64_t N) {
    return sbwd_scratch_floats(L, LANES16);
}

mc_status mc_cpu_selective_scan_bwd_avx512(const mc_exec *ex, float *du, float *ddt, float *dz, float *dB, float *dC,
                                           float *dA, float *dD, float *ddt_bias, float *dh0, const float *dy,
                                           const float *dh_final, const float *u, const float *dt, const float *dt_bias,
                                           const float *A, const float *B, const float *C, int64_t ldbc, const float *D,
                                           const float *z, int64_t ldz, const float *h0, int64_t Bt, int64_t L,
                                           int64_t E, int64_t N) {
    const sbwd_args a = { du,   ddt,  dz, dB, dC, dA, dD,   ddt_bias, dh0, dy, dh_final, u, dt,      dt_bias,
                          A,    B,    C,  D,  z,  h0, ldbc, ldz,      Bt,  L,  E,        N, LANES16, sbwd_block512,
                          NULL, NULL, 0 };
    return sbwd_run(ex, a, sbwd_scratch_floats16);
}

// ---- AVX2 -------------------------------------------------------------------------------------------------------
//
// The AVX-512 kernels at 8 lanes. AVX2 has no masked arithmetic and no scatter, and AMD runs the masked loads and
// stores (vmaskmovps) as slow microcode, so a block of channels is `full` or not as a constant (mc_load8) and
// strided lanes are written one by one.

// Row of a [·, 8]-lane array: 8 floats per row.
#define LANES8 8

// acc[0..8) (two double vectors) += the 8 lanes of v.
MC_AVX2 static MC_INLINE void add_pd8(__m256d *acc, __m256 v) {
    acc[0] = _mm256_add_pd(acc[0], _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    acc[1] = _mm256_add_pd(acc[1], _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
}

// (float)((double)cur + acc) per lane, as add_pd16_ps.
MC_AVX2 static MC_INLINE __m256 add_pd8_ps(__m256 cur, const __m256d *acc) {
    const __m256d lo = _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(cur)), acc[0]);
    const __m256d hi = _mm256_add_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(cur, 1)), acc[1]);
    return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm256_cvtpd_ps(lo)), _mm256_cvtpd_ps(hi), 1);
}

MC_AVX2 static MC_INLINE __m256 sigmoid256(__m256 v) {
    return _mm256_div_ps(_mm256_set1_ps(1.0f),
                         _mm256_add_ps(_mm256_set1_ps(1.0f), mc_exp256(_mm256_sub_ps(_mm256_setzero_ps(), v))));
}

// silu'(v) = σ·(1 + v·(1 − σ)) from s = σ(v).
MC_AVX2 static MC_INLINE __m256 dsilu256(__m256 v, __m256 s) {
    const __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_mul_ps(s, _mm256_fmadd_ps(v, _mm256_sub_ps(one, s), one));
}

// Lanes of p[0], p[stride], ..., p[7·stride] where mf is set (0 elsewhere); idx holds lane·stride.
MC_AVX2 static MC_INLINE __m256 gather8(const float *p, __m256i idx, __m256 mf) {
    return _mm256_mask_i32gather_ps(_mm256_setzero_ps(), p, idx, mf, 4);
}

// Lanes [0, ne) of v to p[0], p[stride], ...
MC_AVX2 static MC_INLINE void scatter8(float *p, int64_t stride, __m256 v, int64_t ne) {
    float tmp[LANES8];
    _mm256_storeu_ps(tmp, v);
    for (int64_t j = 0; j < ne; j++) {
        p[j * stride] = tmp[j];
    }
}

// Cross entropy: 8 logits per vector, the last vector of a row partial.
MC_AVX2 static float ce_max256(const float *row, int64_t V) {
    __m256 vmax = _mm256_set1_ps(row[0]);
    int64_t v = 0;
    for (; v + LANES8 <= V; v += LANES8) {
        vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(row + v));
    }
    if (v < V) { // lanes past the row keep the running max
        const __m256i m = mc_mask256(V - v);
        vmax = _mm256_max_ps(vmax, _mm256_blendv_ps(vmax, _mm256_maskload_ps(row + v, m), _mm256_castsi256_ps(m)));
    }
    __m128 q = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
    q = _mm_max_ps(q, _mm_movehl_ps(q, q));
    q = _mm_max_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
}

// exp(row[0..n) − mx) stored to grad and returned, lanes past n zero.
MC_AVX2 static MC_INLINE __m256 ce_exp8(float *grad, const float *row, __m256 vmx, int64_t n, bool full) {
    const __m256i m = mc_mask256(n);
    __m256 e = mc_exp256(_mm256_sub_ps(mc_load8(row, m, full), vmx));
    if (!full) {
        e = _mm256_and_ps(e, _mm256_castsi256_ps(m));
    }
    mc_store8(grad, m, e, full);
    return e;
}

MC_AVX2 static double ce_exp_store256(float *grad, const float *row, int64_t V, float mx) {
    const __m256 vmx = _mm256_set1_ps(mx);
    __m256d total[2] = { _mm256_setzero_pd(), _mm256_setzero_pd() };
    int64_t v = 0;
    while (v + LANES8 <= V) {
        __m256 acc = _mm256_setzero_ps();
        for (int i = 0; i < CE_BLOCK && v + LANES8 <= V; i++, v += LANES8) {
            acc = _mm256_add_ps(acc, ce_exp8(grad + v, row + v, vmx, LANES8, true));
        }
        add_pd8(total, acc);
    }
    if (v < V) {
        add_pd8(total, ce_exp8(grad + v, row + v, vmx, V - v, false));
    }
    const __m256d t = _mm256_add_pd(total[0], total[1]);
    __m128d q = _mm_add_pd(_mm256_castpd256_pd128(t), _mm256_extractf128_pd(t, 1));
    return _mm_cvtsd_f64(_mm_add_sd(q, _mm_unpackhi_pd(q, q)));
}

MC_AVX2 static void ce_scale256(float *grad, int64_t V, float s) {
    const __m256 vs = _mm256_set1_ps(s);
    int64_t v = 0;
    for (; v + LANES8 <= V; v += LANES8) {
        _mm256_storeu_ps(grad + v, _mm256_mul_ps(_mm256_loadu_ps(grad + v), vs));
    }
    if (v < V) {
        const __m256i m = mc_mask256(V - v);
        _mm256_maskstore_ps(grad + v, m, _mm256_mul_ps(_mm256_maskload_ps(grad + v, m), vs));
    }
}

static const ce_passes ce_passes256 = { ce_max256, ce_exp_store256, ce_scale256 };

mc_status mc_cpu_cross_entropy_avx2(const mc_exec *ex, float *dlogits, double *loss_sum, int64_t *n_valid,
                                    const float *logits, const int32_t *targets, int64_t T, int64_t V, float scale) {
    return ce_run(ex, (ce_args){ dlogits, NULL, logits, targets, T, V, scale, &ce_passes256 }, loss_sum, n_valid);
}

// Conv1d: lanes hold 8 channels (see the shared layout above).
MC_AVX2 static MC_INLINE void conv_bwd_block256(const conv_bwd_args *a, float *sc, int64_t e0, bool full) {
    const int64_t K = a->K, L = a->L, E = a->E, ne = E - e0 < LANES8 ? E - e0 : LANES8;
    const __m256i m = mc_mask256(ne);
    const __m256 mf = _mm256_castsi256_ps(m);
    const __m256i kidx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)K));
    const conv_simd_scratch cs = conv_simd_scratch_at(sc, L, K, LANES8);
    float *xw = cs.xw, *gw = cs.gw, *wv = cs.wv, *dwv = cs.dwv;
    __m256d *dw_sum = (__m256d *)cs.dw_sum; // [K, 2]
    __m256d db_sum[2] = { _mm256_setzero_pd(), _mm256_setzero_pd() };
    for (int64_t k = 0; k < K; k++) {
        _mm256_store_ps(wv + k * LANES8, gather8(a->w + e0 * K + k, kidx, mf));
        dw_sum[2 * k] = dw_sum[2 * k + 1] = _mm256_setzero_pd();
    }
    const __m256 bias = a->b != NULL ? mc_load8(a->b + e0, m, full) : _mm256_setzero_ps();
    for (int64_t seq = 0; seq < a->Bt; seq++) {
        __m256 db = _mm256_setzero_ps();
        for (int64_t k = 0; k < K; k++) {
            _mm256_store_ps(dwv + k * LANES8, _mm256_setzero_ps());
        }
        const float *s0 = a->state0 + (seq * E + e0) * K;
        for (int64_t k = 0; k < K; k++) {
            _mm256_store_ps(xw + k * LANES8, gather8(s0 + k, kidx, mf));
        }
        for (int64_t t = 0; t < L; t++) {
            _mm256_store_ps(xw + (K + t) * LANES8, mc_load8(a->x + (seq * L + t) * a->ldx + e0, m, full));
        }
        memset(gw, 0, (size_t)((K + L) * LANES8) * sizeof(float));
        if (a->dstate_final != NULL) {
            const float *f = a->dstate_final + (seq * E + e0) * K;
            for (int64_t k = 0; k < K; k++) {
                _mm256_store_ps(gw + (L + k) * LANES8, gather8(f + k, kidx, mf));
            }
        }
        for (int64_t t = 0; t < L; t++) {
            __m256 c = bias;
            for (int64_t k = 0; k < K; k++) {
                c = _mm256_fmadd_ps(_mm256_load_ps(wv + k * LANES8), _mm256_load_ps(xw + (t + 1 + k) * LANES8), c);
            }
            const __m256 dc =
                _mm256_mul_ps(mc_load8(a->du + (seq * L + t) * E + e0, m, full), dsilu256(c, sigmoid256(c)));
            db = _mm256_add_ps(db, dc);
            for (int64_t k = 0; k < K; k++) {
                float *dwk = dwv + k * LANES8, *gk = gw + (t + 1 + k) * LANES8;
                _mm256_store_ps(dwk,
                                _mm256_fmadd_ps(dc, _mm256_load_ps(xw + (t + 1 + k) * LANES8), _mm256_load_ps(dwk)));
                _mm256_store_ps(gk, _mm256_fmadd_ps(dc, _mm256_load_ps(wv + k * LANES8), _mm256_load_ps(gk)));
            }
        }
        for (int64_t t = 0; t < L; t++) {
            mc_store8(a->dx + (seq * L + t) * a->ldx + e0, m, _mm256_load_ps(gw + (K + t) * LANES8), full);
        }
        if (a->dstate0 != NULL) { // after dstate_final was read: they may alias
            for (int64_t k = 0; k < K; k++) {
                scatter8(a->dstate0 + (seq * E + e0) * K + k, K, _mm256_load_ps(gw + k * LANES8), ne);
            }
        }
        for (int64_t k = 0; k < K; k++) {
            add_pd8(dw_sum + 2 * k, _mm256_load_ps(dwv + k * LANES8));
        }
        add_pd8(db_sum, db);
    }
    for (int64_t k = 0; k < K; k++) {
        float *dw = a->dw + e0 * K + k;
        scatter8(dw, K, add_pd8_ps(gather8(dw, kidx, mf), dw_sum + 2 * k), ne);
    }
    if (a->db != NULL) {
        mc_store8(a->db + e0, m, add_pd8_ps(mc_load8(a->db + e0, m, full), db_sum), full);
    }
}

MC_AVX2 static void conv_bwd_blocks256(const conv_bwd_args *a, float *sc, int64_t e0) {
    if (a->E - e0 >= LANES8) {
        conv_bwd_block256(a, sc, e0, true);
    } else {
        conv_bwd_block256(a, sc, e0, false);
    }
}

mc_status mc_cpu_conv1d_bwd_avx2(const mc_exec *ex, float *dx, float *dw, float *db, float *dstate0, const float *du,
                                 const float *dstate_final, const float *x, int64_t ldx, const float *state0,
                                 const float *w, const float *b, int64_t Bt, int64_t L, int64_t E, int64_t K) {
    return conv_bwd_run(ex, (conv_bwd_args){ dx, dw, db, dstate0, du, dstate_final, x, state0, w, b, ldx, Bt, L, E, K,
                                             LANES8, conv_bwd_blocks256, NULL, 0 });
}

// Selective scan: lanes hold 8 channels, states run in passes of up to 8 (16 ymm registers hold a pass's states,
// A and adjoints only in part; the rest stays in L1), as the AVX-512 kernel otherwise.
MC_AVX2 static MC_INLINE void sbwd_fwd256(const sbwd_pass *p, __m256 *hv, const __m256 *av, int64_t t0, int64_t t1,
                                          bool keep, int nb) {
    const sbwd_args *a = p->a;
    const sbwd_scratch *s = p->s;
    const int64_t r0 = p->seq * a->L;
    if (keep) {
        for (int j = 0; j < nb; j++) {
            _mm256_store_ps(s->h + j * LANES8, hv[j]);
        }
    }
    for (int64_t t = t0; t < t1; t++) {
        const int64_t row = r0 + t, i = t - t0;
        const float *bt = a->B + row * a->ldbc + p->n0, *ct = a->C + row * a->ldbc + p->n0;
        const __m256 dl = _mm256_load_ps(s->delta + t * LANES8);
        const __m256 dut = _mm256_mul_ps(dl, _mm256_load_ps(s->u + t * LANES8));
        __m256 r0v = _mm256_setzero_ps(), r1v = _mm256_setzero_ps();
        for (int j = 0; j < nb; j++) {
            const __m256 dec = mc_exp256(_mm256_mul_ps(dl, av[j]));
            hv[j] = _mm256_fmadd_ps(dec, hv[j], _mm256_mul_ps(dut, _mm256_broadcast_ss(bt + j)));
            if (keep) {
                _mm256_store_ps(s->h + ((i + 1) * LANES8 + j) * LANES8, hv[j]);
                _mm256_store_ps(s->dec + (i * LANES8 + j) * LANES8, dec);
                if (j % 2 == 0) {
                    r0v = _mm256_fmadd_ps(_mm256_broadcast_ss(ct + j), hv[j], r0v);
                } else {
                    r1v = _mm256_fmadd_ps(_mm256_broadcast_ss(ct + j), hv[j], r1v);
                }
            }
        }
        if (keep) {
            float *rd = s->readout + t * LANES8;
            _mm256_store_ps(rd, _mm256_add_ps(_mm256_load_ps(rd), _mm256_add_ps(r0v, r1v)));
        }
    }
}

MC_AVX2 static MC_INLINE void sbwd_bwd256(const sbwd_pass *p, __m256 *g, __m256 *dA, const __m256 *av, int64_t t0,
                                          int64_t t1, int nb) {
    const sbwd_args *a = p->a;
    const sbwd_scratch *s = p->s;
    const int64_t N = a->N, r0 = p->seq * a->L;
    const __m256i nm = mc_mask256(nb);
    __m256 *pb = (__m256 *)s->pbc, *pc = pb + LANES8;
    for (int64_t t = t1 - 1; t >= t0; t--) {
        const int64_t row = r0 + t, i = t - t0;
        const float *bt = a->B + row * a->ldbc + p->n0, *ct = a->C + row * a->ldbc + p->n0;
        const __m256 dl = _mm256_load_ps(s->delta + t * LANES8), gy = _mm256_load_ps(s->gy + t * LANES8);
        const __m256 dut = _mm256_mul_ps(dl, _mm256_load_ps(s->u + t * LANES8));
        __m256 lamb = _mm256_setzero_ps(), lamahp = _mm256_setzero_ps();
        for (int j = 0; j < nb; j++) {
            const __m256 lam = _mm256_fmadd_ps(gy, _mm256_broadcast_ss(ct + j), g[j]);
            pc[j] = _mm256_mul_ps(gy, _mm256_load_ps(s->h + ((i + 1) * LANES8 + j) * LANES8));
            pb[j] = _mm256_mul_ps(lam, dut);
            lamb = _mm256_fmadd_ps(lam, _mm256_broadcast_ss(bt + j), lamb);
            g[j] = _mm256_mul_ps(lam, _mm256_load_ps(s->dec + (i * LANES8 + j) * LANES8));
            const __m256 w = _mm256_mul_ps(g[j], _mm256_load_ps(s->h + (i * LANES8 + j) * LANES8));
            dA[j] = _mm256_fmadd_ps(dl, w, dA[j]);
            lamahp = _mm256_fmadd_ps(av[j], w, lamahp);
        }
        float *lb = s->lamb + t * LANES8, *la = s->lamahp + t * LANES8;
        _mm256_store_ps(lb, _mm256_add_ps(_mm256_load_ps(lb), lamb));
        _mm256_store_ps(la, _mm256_add_ps(_mm256_load_ps(la), lamahp));
        float *qb = p->pB + t * N + p->n0, *qc = p->pC + t * N + p->n0;
        const bool all = nb == LANES8;
        mc_store8(qb, nm, _mm256_add_ps(mc_load8(qb, nm, all), mc_hsum8x8_256(pb)), all);
        mc_store8(qc, nm, _mm256_add_ps(mc_load8(qc, nm, all), mc_hsum8x8_256(pc)), all);
    }
}

MC_AVX2 static MC_INLINE void sbwd_pass256(const sbwd_pass *p, int nb) {
    const sbwd_args *a = p->a;
    const sbwd_scratch *s = p->s;
    const int64_t N = a->N, L = a->L, base = (p->seq * a->E + p->e0) * N + p->n0, n_chunks = sbwd_chunks(L);
    const __m256 mf = _mm256_castsi256_ps(mc_mask256(p->ne));
    const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)N));
    __m256 av[LANES8], hv[LANES8], g[LANES8], dA[LANES8];
    __m256d dA_sum[2 * LANES8]; // dA in double across chunks: f32 within a chunk
    for (int j = 0; j < nb; j++) {
        dA_sum[2 * j] = dA_sum[2 * j + 1] = _mm256_setzero_pd();
        av[j] = gather8(a->A + p->e0 * N + p->n0 + j, idx, mf);
        hv[j] = a->h0 != NULL ? gather8(a->h0 + base + j, idx, mf) : _mm256_setzero_ps();
        g[j] = a->dh_final != NULL ? gather8(a->dh_final + base + j, idx, mf) : _mm256_setzero_ps();
        dA[j] = _mm256_setzero_ps();
    }
    for (int64_t c = 0; c < n_chunks; c++) { // checkpoints (a single chunk needs no extra forward)
        for (int j = 0; j < nb; j++) {
            _mm256_store_ps(s->ck + (c * LANES8 + j) * LANES8, hv[j]);
        }
        if (c + 1 < n_chunks) {
            sbwd_fwd256(p, hv, av, c * SBWD_CHUNK, (c + 1) * SBWD_CHUNK, false, nb);
        }
    }
    for (int64_t c = n_chunks - 1; c >= 0; c--) {
        const int64_t t0 = c * SBWD_CHUNK, t1 = t0 + SBWD_CHUNK < L ? t0 + SBWD_CHUNK : L;
        for (int j = 0; j < nb; j++) {
            hv[j] = _mm256_load_ps(s->ck + (c * LANES8 + j) * LANES8);
        }
        sbwd_fwd256(p, hv, av, t0, t1, true, nb);
        sbwd_bwd256(p, g, dA, av, t0, t1, nb);
        for (int j = 0; j < nb; j++) {
            add_pd8(dA_sum + 2 * j, dA[j]);
            dA[j] = _mm256_setzero_ps();
        }
    }
    for (int j = 0; j < nb; j++) {
        if (a->dh0 != NULL) { // after dh_final was read: they may alias
            scatter8(a->dh0 + base + j, N, g[j], p->ne);
        }
        float *dAj = a->dA + p->e0 * N + p->n0 + j;
        scatter8(dAj, N, add_pd8_ps(gather8(dAj, idx, mf), dA_sum + 2 * j), p->ne);
    }
}

MC_AVX2 static MC_INLINE void sbwd_prepare256(const sbwd_args *a, const sbwd_scratch *s, int64_t seq, int64_t e0,
                                              __m256i m, bool full) {
    const int64_t E = a->E, r0 = seq * a->L;
    const __m256 bias = mc_load8(a->dt_bias + e0, m, full);
    for (int64_t t = 0; t < a->L; t++) {
        const int64_t row = r0 + t;
        sbwd_prefetch_inputs(a, t, row, e0);
        const __m256 zt = mc_load8(a->z + row * a->ldz + e0, m, full);
        const __m256 dyt = mc_load8(a->dy + row * E + e0, m, full);
        const __m256 v = _mm256_add_ps(mc_load8(a->dt + row * E + e0, m, full), bias);
        const __m256 sz = sigmoid256(zt);
        _mm256_store_ps(s->u + t * LANES8, mc_load8(a->u + row * E + e0, m, full));
        _mm256_store_ps(s->v + t * LANES8, v);
        _mm256_store_ps(s->delta + t * LANES8, mc_softplus256(v));
        _mm256_store_ps(s->gy + t * LANES8, _mm256_mul_ps(dyt, _mm256_mul_ps(zt, sz)));
        _mm256_store_ps(s->dzf + t * LANES8, _mm256_mul_ps(dyt, dsilu256(zt, sz)));
        _mm256_store_ps(s->lamb + t * LANES8, _mm256_setzero_ps());
        _mm256_store_ps(s->lamahp + t * LANES8, _mm256_setzero_ps());
        _mm256_store_ps(s->readout + t * LANES8, _mm256_setzero_ps());
    }
}

MC_AVX2 static MC_INLINE void sbwd_finish256(const sbwd_args *a, const sbwd_scratch *s, int64_t seq, int64_t e0,
                                             __m256i m, bool full, __m256d *dD, __m256d *dbias) {
    const int64_t E = a->E, r0 = seq * a->L;
    const __m256 dskip = mc_load8(a->D + e0, m, full);
    for (int64_t t = 0; t < a->L; t++) {
        const int64_t row = r0 + t;
        sbwd_prefetch_outputs(a, t, row, e0);
        const __m256 ut = _mm256_load_ps(s->u + t * LANES8), gy = _mm256_load_ps(s->gy + t * LANES8);
        const __m256 lamb = _mm256_load_ps(s->lamb + t * LANES8), dl = _mm256_load_ps(s->delta + t * LANES8);
        const __m256 v = _mm256_load_ps(s->v + t * LANES8);
        const __m256 ddelta = _mm256_fmadd_ps(ut, lamb, _mm256_load_ps(s->lamahp + t * LANES8));
        const __m256 big = _mm256_cmp_ps(v, _mm256_set1_ps(SOFTPLUS_THRESHOLD), _CMP_GT_OQ);
        const __m256 dv = _mm256_blendv_ps(_mm256_mul_ps(ddelta, sigmoid256(v)), ddelta, big);
        mc_store8(a->ddt + row * E + e0, m, dv, full);
        add_pd8(dbias, _mm256_and_ps(dv, _mm256_castsi256_ps(m)));
        mc_store8(a->du + row * E + e0, m, _mm256_fmadd_ps(gy, dskip, _mm256_mul_ps(dl, lamb)), full);
        add_pd8(dD, _mm256_mul_ps(gy, ut));
        const __m256 pre = _mm256_fmadd_ps(dskip, ut, _mm256_load_ps(s->readout + t * LANES8));
        mc_store8(a->dz + row * a->ldz + e0, m, _mm256_mul_ps(_mm256_load_ps(s->dzf + t * LANES8), pre), full);
    }
}

MC_AVX2 static MC_INLINE void sbwd_block256(const sbwd_args *a, float *sc, float *pB, float *pC, int64_t e0,
                                            bool full) {
    const int64_t ne = a->E - e0 < LANES8 ? a->E - e0 : LANES8, LN = a->L * a->N;
    const __m256i m = mc_mask256(ne);
    const sbwd_scratch s = sbwd_scratch_at(sc, a->L, LANES8);
    __m256d dD[2] = { _mm256_setzero_pd(), _mm256_setzero_pd() }, dbias[2] = { dD[0], dD[1] };
    for (int64_t seq = 0; seq < a->Bt; seq++) {
        sbwd_prepare256(a, &s, seq, e0, m, full);
        for (int64_t n0 = 0; n0 < a->N; n0 += LANES8) {
            const sbwd_pass p = { a, &s, seq, e0, n0, ne, pB + seq * LN, pC + seq * LN };
            if (a->N - n0 >= LANES8) { // constant nb: the state loops unroll
                sbwd_pass256(&p, LANES8);
            } else {
                sbwd_pass256(&p, (int)(a->N - n0));
            }
        }
        sbwd_finish256(a, &s, seq, e0, m, full, dD, dbias);
    }
    mc_store8(a->dD + e0, m, add_pd8_ps(mc_load8(a->dD + e0, m, full), dD), full);
    mc_store8(a->ddt_bias + e0, m, add_pd8_ps(mc_load8(a->ddt_bias + e0, m, full), dbias), full);
}

MC_AVX2 static void sbwd_blocks256(const sbwd_args *a, float *sc, float *pB, float *pC, int64_t e0) {
    if (a->E - e0 >= LANES8) {
        sbwd_block256(a, sc, pB, pC, e0, true);
    } else {
        sbwd_block256(a, sc, pB, pC, e0, false);
    }
}

static int64_t sbwd_scratch_floats8(int64_t L, int64_t N) {
    return sbwd_scratch_floats(L, LANES8);
}

mc_status mc_cpu_selective_scan_bwd_avx2(const mc_exec *ex, float *du, float *ddt, float *dz, float *dB, float *dC,
                                         float *dA, float *dD, float *ddt_bias, float *dh0, const float *dy,
                                         const float *dh_final, const float *u, const float *dt, const float *dt_bias,
                                         const float *A, const float *B, const float *C, int64_t ldbc, const float *D,
                                         const float *z, int64_t ldz, const float *h0, int64_t Bt, int64_t L, int64_t E,
                                         int64_t N) {
    const sbwd_args a = { du,   ddt,  dz, dB, dC, dA, dD,   ddt_bias, dh0, dy, dh_final, u, dt,     dt_bias,
                          A,    B,    C,  D,  z,  h0, ldbc, ldz,      Bt,  L,  E,        N, LANES8, sbwd_blocks256,
                          NULL, NULL, 0 };
    return sbwd_run(ex, a, sbwd_scratch_floats8);
}
#endif
