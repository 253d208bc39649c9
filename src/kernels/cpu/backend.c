// The CPU backend's tables: one kernel table per instruction set, and the op table built from the best one this CPU
// runs (the batch and the status around the kernels; memory is host memory).
#include "kernels/cpu/cpu.h"

#include "kernels/cpu/simd.h"
#include "kernels/dropout.h"
#include "kernels/ref/ref.h"

static const mc_cpu_kernels kernels_c = {
    MC_CPU_ISA_C,           "c",
    mc_cpu_matmul_c,        mc_cpu_embed_c,
    mc_cpu_rmsnorm_c,       mc_cpu_conv1d_c,
    mc_cpu_conv1d_step_c,   mc_cpu_selective_scan_c,
    mc_cpu_selective_scan_step_c,
    mc_cpu_conv1d_bwd_c,    mc_cpu_selective_scan_bwd_c,
    mc_cpu_cross_entropy_c,
};

#if defined(__x86_64__)
static const mc_cpu_kernels kernels_avx2 = {
    MC_CPU_ISA_AVX2,         "avx2",
    mc_cpu_matmul_avx2,      mc_cpu_embed_avx2,
    mc_cpu_rmsnorm_avx2,     mc_cpu_conv1d_avx2,
    mc_cpu_conv1d_step_avx2, mc_cpu_selective_scan_avx2,
    mc_cpu_selective_scan_step_avx2,
    mc_cpu_conv1d_bwd_avx2,  mc_cpu_selective_scan_bwd_avx2,
    mc_cpu_cross_entropy_avx2,
};

static const mc_cpu_kernels kernels_avx512 = {
    MC_CPU_ISA_AVX512,         "avx512",
    mc_cpu_matmul_avx512,      mc_cpu_embed_avx512,
    mc_cpu_rmsnorm_avx512,     mc_cpu_conv1d_avx512,
    mc_cpu_conv1d_step_avx512, mc_cpu_selective_scan_avx512,
    mc_cpu_selective_scan_step_avx512,
    mc_cpu_conv1d_bwd_avx512,  mc_cpu_selective_scan_bwd_avx512,
    mc_cpu_cross_entropy_avx512,
};
#endif

const mc_cpu_kernels *mc_cpu_kernels_get(int isa) {
    switch (isa) {
        case MC_CPU_ISA_C:
            return &kernels_c;
#if defined(__x86_64__)
        case MC_CPU_ISA_AVX2:
            return mc_simd_has_avx2() ? &kernels_avx2 : NULL;
        case MC_CPU_ISA_AVX512:
            return mc_simd_has_avx512() ? &kernels_avx512 : NULL;
#endif
        default:
            return NULL;
    }
}

const mc_cpu_kernels *mc_cpu_kernels_best(void) {
    for (int isa = MC_CPU_ISA_COUNT - 1; isa > MC_CPU_ISA_C; isa--) {
        const mc_cpu_kernels *k = mc_cpu_kernels_get(isa);
        if (k != NULL) {
            return k;
        }
    }
    return &kernels_c;
}

// ---------------------------------------------------------------------------------------------------------------
// The op table: the best kernels, set once by mc_ops_cpu_init (under mc_ops_get's pthread_once).

static const mc_cpu_kernels *best;

static mc_status matmul_op(const mc_exec *ex, float *y, const float *x, int64_t ldx, const mc_weight *w,
                           const float *bias, int64_t M, int64_t N, int64_t K) {
    best->matmul(ex, y, x, ldx, w, bias, M, N, K);
    return MC_OK;
}

static mc_status embed_op(const mc_exec *ex, float *out, const mc_weight *w, const int32_t *ids, int64_t ldi,
                          int64_t Bt, int64_t T, int64_t H) {
    if (ldi == T) { // the ids lie contiguously: one call
        best->embed(ex, out, w, ids, Bt * T, H);
        return MC_OK;
    }
    for (int64_t b = 0; b < Bt; b++) {
        best->embed(ex, out + b * T * H, w, ids + b * ldi, T, H);
    }
    return MC_OK;
}

static mc_status rmsnorm_op(const mc_exec *ex, float *y, float *x, const float *add, const float *w, int64_t M,
                            int64_t H, float eps) {
    best->rmsnorm(ex, y, x, add, w, M, H, eps);
    return MC_OK;
}

static mc_status conv1d_op(const mc_exec *ex, float *u, float *state, const float *x, int64_t ldx, const float *w,
                           const float *bias, int64_t Bt, int64_t L, int64_t E, int64_t K) {
    for (int64_t b = 0; b < Bt; b++) {
        best->conv1d(ex, u + b * L * E, state + b * E * K, x + b * L * ldx, ldx, w, bias, L, E, K);
    }
    return MC_OK;
}

static mc_status scan_op(const mc_exec *ex, float *y, float *h, const float *u, const float *dt, const float *dt_bias,
                         const float *A, const float *B, const float *C, int64_t ldbc, const float *D, const float *z,
                         int64_t ldz, int64_t Bt, int64_t L, int64_t E, int64_t N) {
    for (int64_t b = 0; b < Bt; b++) {
        best->selective_scan(ex, y + b * L * E, h + b * E * N, u + b * L * E, dt + b * L * E, dt_bias, A,
                             B + b * L * ldbc, C + b * L * ldbc, ldbc, D, z + b * L * ldz, ldz, L, E, N);
    }
    return MC_OK;
}

static mc_status conv1d_step_op(const mc_exec *ex, float *u, float *state, const float *x, int64_t ldx,
                                const float *w, const float *bias, int64_t n_seq, int64_t E, int64_t K) {
    best->conv1d_step(ex, u, state, x, ldx, w, bias, n_seq, E, K);
    return MC_OK;
}

static mc_status scan_step_op(const mc_exec *ex, float *y, float *h, const float *u, const float *dt,
                              const float *dt_bias, const float *A, const float *B, const float *C, int64_t ldbc,
                              const float *D, const float *z, int64_t ldz, int64_t n_seq, int64_t E, int64_t N) {
    best->selective_scan_step(ex, y, h, u, dt, dt_bias, A, B, C, ldbc, D, z, ldz, n_seq, E, N);
    return MC_OK;
}

static mc_status nll_op(const mc_exec *ex, double *out, const float *logits, int64_t T, int64_t V,
                        const int32_t *targets) {
    mc_cpu_nll(ex, out, logits, T, V, targets);
    return MC_OK;
}

typedef struct axpby_args {
    float *y;
    const float *x;
    float a, b;
    int64_t n;
} axpby_args;

static void axpby_item(const void *ctx, int64_t i) { // block i of 4096 elements
    const axpby_args *p = ctx;
    const int64_t lo = i * 4096, hi = lo + 4096 < p->n ? lo + 4096 : p->n;
    mc_ref_axpby(NULL, p->y + lo, p->a, p->x != NULL ? p->x + lo : NULL, p->b, hi - lo);
}

static mc_status axpby_op(const mc_exec *ex, float *y, float a, const float *x, float b, int64_t n) {
    const axpby_args p = { y, x, a, b, n };
    mc_simd_parallel_for(mc_simd_threads(ex, n, 1 << 15), (n + 4095) / 4096, axpby_item, &p);
    return MC_OK;
}

typedef struct dropout_args {
    float *y;
    const float *x;
    int64_t ldx, M, K;
    double p;
    uint64_t key;
} dropout_args;

static void dropout_item(const void *ctx, int64_t i) { // rows [64·i, 64·i + 64): the reference's loop, from row 64·i
    const dropout_args *a = ctx;
    const int64_t m0 = i * 64, rows = a->M - m0 < 64 ? a->M - m0 : 64;
    // The mask index of y[m, k] is m·K + k, so rows from m0 on draw the mask from element m0·K on.
    mc_ref_dropout(NULL, a->y + m0 * a->K, a->x + m0 * a->ldx, a->ldx, rows, a->K, a->p,
                   mc_dropout_skip(a->key, (uint64_t)(m0 * a->K)));
}

static mc_status dropout_op(const mc_exec *ex, float *y, const float *x, int64_t ldx, int64_t M, int64_t K, double p,
                            uint64_t key) {
    if (M < 0 || K < 0 || ldx < K || !(p >= 0 && p <= 1)) {
        return mc_ops_ref.dropout(ex, y, x, ldx, M, K, p, key); // its message
    }
    const dropout_args a = { y, x, ldx, M, K, p, key };
    mc_simd_parallel_for(mc_simd_threads(ex, M * K, 1 << 15), (M + 63) / 64, dropout_item, &a);
    return MC_OK;
}

void mc_ops_cpu_init(mc_ops *ops) {
    best = mc_cpu_kernels_best();
    // The host-memory entries and mul_acc are the reference's; the compute entries are this backend's.
    *ops = mc_ops_ref;
    ops->name = "cpu";
    ops->backend = MC_BACKEND_CPU;
    ops->matmul = matmul_op;
    ops->embed = embed_op;
    ops->rmsnorm = rmsnorm_op;
    ops->conv1d = conv1d_op;
    ops->selective_scan = scan_op;
    ops->conv1d_step = conv1d_step_op;
    ops->selective_scan_step = scan_step_op;
    ops->nll = nll_op;
    ops->axpby = axpby_op;
    ops->dropout = dropout_op;
    ops->matmul_dx = mc_cpu_matmul_dx;
    ops->matmul_dw = mc_cpu_matmul_dw;
    ops->embed_bwd = mc_cpu_embed_bwd;
    ops->rmsnorm_bwd = mc_cpu_rmsnorm_bwd;
    ops->conv1d_bwd = best->conv1d_bwd;
    ops->selective_scan_bwd = best->selective_scan_bwd;
    ops->cross_entropy = best->cross_entropy;
}
