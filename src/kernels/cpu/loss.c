// The next-token loss of rows of logits for the cpu backend: the reference's row arithmetic (so the losses are
// the oracle's, bit for bit), with the rows split over the threads. Scoring a text spends as long in these
// 50,280-term log-sum-exps as in the forward pass when they run on one thread.
#include "kernels/cpu/cpu.h"
#include "kernels/cpu/simd.h"
#include "kernels/ref/ref.h"

typedef struct nll_args {
    double *out;
    const float *logits;
    int64_t V;
    const int32_t *targets;
} nll_args;

static void nll_item(const void *ctx, int64_t t) {
    const nll_args *a = ctx;
    a->out[t] = mc_ref_nll_row(a->logits + t * a->V, a->V, a->targets[t]);
}

void mc_cpu_nll(const mc_exec *ex, double *out, const float *logits, int64_t T, int64_t V, const int32_t *targets) {
    const nll_args a = { out, logits, V, targets };
    mc_simd_parallel_for(mc_simd_threads(ex, T * V, 1 << 16), T, nll_item, &a);
}
