// The `sample` op on the device (issue 9 §2.2): token choice from rows of logits that stay in device memory, so a
// decode step downloads n_seq ids instead of n_seq × V logits. One block of 256 threads per row, in the reference's
// order (kernels/ref/sample.c): repetition penalty and temperature while copying the row to a workspace, top-k by
// a 4-pass radix select of the k-th largest value, top-p by a 4-pass radix descent over the ascending order
// weighted by probability (the host's sort and cumulative sum without sorting), min-p, then the first argmax or an
// inverse-CDF draw with the host's uniform. Sums run in double where the host's do, so choices equal the host's
// except where a cumulative sum lies within rounding (~1e-16 relative) of a decision boundary.
#include <limits.h>
#include <math.h>
#include <string.h>

#include "kernels/cuda/common.cuh"

#define ST 256       // threads per row; also the number of radix bins (one bin per thread in the reductions)
#define SW (ST / 32) // warps per row
#define ITEMS 8      // consecutive entries per thread in the draw's scan
#define FULL_MASK 0xffffffffu

static_assert(ST == 256, "the radix passes reduce one bin per thread");

typedef struct sample_params {
    const float *logits; // [n, ld]
    int64_t ld, V;
    float *work;         // [n, V] processed scores
    float *prob;         // [n, V] probabilities (top-p, min-p); NULL when neither runs
    const double *uniforms;  // [n]
    const int64_t *prev_off; // [n + 1]
    const int32_t *prev;
    int32_t *out; // [n]
    mc_sample_args a;
} sample_params;

// Per-warp histograms (so only a warp's own lanes collide on a bin), their per-bin totals, and broadcast slots.
typedef struct sample_shared {
    int count[SW][256];
    double mass[SW][256];
    int bin_count[256];
    double bin_mass[256];
    double red_d[SW];
    float red_f[SW];
    int red_i[SW];
    int sel;
    int64_t rank;
    double below;
    int64_t n_remove;
} sample_shared;

// ---------------------------------------------------------------------------------------------------------------
// Block-wide reductions: every thread gets the result, combined in a fixed order (so all agree bit for bit). Each
// starts with a barrier, so the shared slots may be reused by consecutive calls.

static __device__ __forceinline__ float block_max_f(float v, sample_shared &sh) {
    for (int o = 16; o > 0; o >>= 1) {
        v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    }
    __syncthreads();
    if ((threadIdx.x & 31) == 0) {
        sh.red_f[threadIdx.x >> 5] = v;
    }
    __syncthreads();
    float r = sh.red_f[0];
    for (int w = 1; w < SW; w++) {
        r = fmaxf(r, sh.red_f[w]);
    }
    return r;
}

static __device__ __forceinline__ double block_sum_d(double v, sample_shared &sh) {
    for (int o = 16; o > 0; o >>= 1) {
        v += __shfl_xor_sync(FULL_MASK, v, o);
    }
    __syncthreads();
    if ((threadIdx.x & 31) == 0) {
        sh.red_d[threadIdx.x >> 5] = v;
    }
    __syncthreads();
    double r = 0;
    for (int w = 0; w < SW; w++) {
        r += sh.red_d[w];
    }
    return r;
}

static __device__ __forceinline__ int block_min_i(int v, sample_shared &sh) {
    for (int o = 16; o > 0; o >>= 1) {
        v = min(v, __shfl_xor_sync(FULL_MASK, v, o));
    }
    __syncthreads();
    if ((threadIdx.x & 31) == 0) {
        sh.red_i[threadIdx.x >> 5] = v;
    }
    __syncthreads();
    int r = sh.red_i[0];
    for (int w = 1; w < SW; w++) {
        r = min(r, sh.red_i[w]);
    }
    return r;
}

static __device__ __forceinline__ int block_max_i(int v, sample_shared &sh) {
    return -block_min_i(-v, sh);
}

// Exclusive prefix sum of v over the threads in thread order; *total gets the sum of all.
static __device__ __forceinline__ double block_excl_scan_d(double v, double *total, sample_shared &sh) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    double x = v;
    for (int o = 1; o < 32; o <<= 1) {
        double y = __shfl_up_sync(FULL_MASK, x, o);
        if (lane >= o) {
            x += y;
        }
    }
    double excl = __shfl_up_sync(FULL_MASK, x, 1);
    excl = lane == 0 ? 0.0 : excl;
    __syncthreads();
    if (lane == 31) {
        sh.red_d[w] = x;
    }
    __syncthreads();
    double before = 0, all = 0;
    for (int ww = 0; ww < SW; ww++) {
        before += ww < w ? sh.red_d[ww] : 0.0;
        all += sh.red_d[ww];
    }
    *total = all;
    return before + excl;
}

// (bv, bi) takes (v, i) when v is larger, or equal at a lower index (NaN never wins).
static __device__ __forceinline__ void argmax_take(float &bv, int &bi, float v, int i) {
    if (v > bv || (v == bv && i < bi)) {
        bv = v;
        bi = i;
    }
}

// The first index of the largest value of s[lo, hi) and that value, for every thread of the block (INT_MAX and −inf
// when every entry is NaN). red_f, red_i: SW entries of shared memory, free to reuse once it returns.
static __device__ int block_argmax_range(const float *s, int64_t lo, int64_t hi, float *red_f, int *red_i,
                                         float &value) {
    float bv = -INFINITY;
    int bi = INT_MAX;
    for (int64_t i = lo + threadIdx.x; i < hi; i += ST) { // ascending per thread: the first of equals stays
        argmax_take(bv, bi, s[i], (int)i);
    }
    for (int o = 16; o > 0; o >>= 1) {
        argmax_take(bv, bi, __shfl_xor_sync(FULL_MASK, bv, o), __shfl_xor_sync(FULL_MASK, bi, o));
    }
    __syncthreads(); // red_f, red_i may still be read by an earlier reduction
    if ((threadIdx.x & 31) == 0) {
        red_f[threadIdx.x >> 5] = bv;
        red_i[threadIdx.x >> 5] = bi;
    }
    __syncthreads();
    bv = red_f[0];
    bi = red_i[0];
    for (int w = 1; w < SW; w++) {
        argmax_take(bv, bi, red_f[w], red_i[w]);
    }
    value = bv;
    return bi;
}

// The first index of the largest value (NaN never wins; a row of -inf gives 0, as torch.argmax).
static __device__ int block_argmax_first(const float *s, int64_t V, sample_shared &sh) {
    float value;
    const int bi = block_argmax_range(s, 0, V, sh.red_f, sh.red_i, value);
    return bi == INT_MAX ? 0 : bi;
}

// ---------------------------------------------------------------------------------------------------------------
// Radix keys: unsigned integers in the order of the floats, -0 read as +0 (the host's comparisons tie them).

static __device__ __forceinline__ uint32_t order_key(float f) {
    const uint32_t u = __float_as_uint(f == 0.0f ? 0.0f : f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

static __device__ __forceinline__ float key_value(uint32_t k) {
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

static __device__ __forceinline__ void clear_hist(sample_shared &sh, bool with_mass) {
    for (int i = threadIdx.x; i < SW * 256; i += ST) {
        (&sh.count[0][0])[i] = 0;
        if (with_mass) {
            (&sh.mass[0][0])[i] = 0.0;
        }
    }
}

// The k-th largest of s [V] (1 <= k < V), ties counted: four passes of 8 bits from the top, each counting the
// entries that match the bits chosen so far.
static __device__ float kth_largest(const float *s, int64_t V, int64_t k, sample_shared &sh) {
    const int w = threadIdx.x >> 5;
    uint32_t prefix = 0, mask = 0;
    int64_t want = k; // 1-based rank among the entries matching prefix
    for (int shift = 24; shift >= 0; shift -= 8) {
        clear_hist(sh, false);
        __syncthreads();
#pragma unroll 4
        for (int64_t i = threadIdx.x; i < V; i += ST) {
            const uint32_t key = order_key(s[i]);
            if ((key & mask) == prefix) {
                atomicAdd(&sh.count[w][(key >> shift) & 255u], 1);
            }
        }
        __syncthreads();
        int c = 0;
        for (int ww = 0; ww < SW; ww++) {
            c += sh.count[ww][threadIdx.x];
        }
        sh.bin_count[threadIdx.x] = c;
        __syncthreads();
        if (threadIdx.x == 0) {
            int b = 255;
            int64_t r = want;
            for (; b > 0; b--) {
                if (r <= sh.bin_count[b]) {
                    break;
                }
                r -= sh.bin_count[b];
            }
            sh.sel = b;
            sh.rank = r;
        }
        __syncthreads();
        prefix |= (uint32_t)sh.sel << shift;
        mask |= 255u << shift;
        want = sh.rank;
    }
    return key_value(prefix);
}

// HF TopKLogitsWarper as the reference: remove scores below the k-th largest (1 <= k < V).
static __device__ void top_k(float *s, int64_t V, int64_t k, sample_shared &sh) {
    const float threshold = kth_largest(s, V, k, sh);
    for (int64_t i = threadIdx.x; i < V; i += ST) {
        if (s[i] < threshold) {
            s[i] = -INFINITY;
        }
    }
    __syncthreads();
}

// Removes the first n_remove entries equal to c in index order (the host's sort puts equal scores by ascending id).
static __device__ void remove_first_ties(float *s, int64_t V, float c, int64_t n_remove, sample_shared &sh) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    int64_t base = 0;
    for (int64_t start = 0; start < V && base < n_remove; start += ST) { // uniform bounds: every lane iterates
        const int64_t i = start + threadIdx.x;
        const bool tie = i < V && s[i] == c;
        const unsigned bal = __ballot_sync(FULL_MASK, tie);
        __syncthreads();
        if (lane == 0) {
            sh.red_i[w] = __popc(bal);
        }
        __syncthreads();
        int before = 0, total = 0;
        for (int ww = 0; ww < SW; ww++) {
            before += ww < w ? sh.red_i[ww] : 0;
            total += sh.red_i[ww];
        }
        const int64_t rank = base + before + __popc(bal & ((1u << lane) - 1u));
        if (tie && rank < n_remove) {
            s[i] = -INFINITY;
        }
        base += total;
    }
    __syncthreads();
}

// HF TopPLogitsWarper as the reference computes it: ascending order by (score, id), c_j = Σ_{i <= j} p_i in double
// with p_i = (f32)(exp(s_i − max) / Σ), remove (f32)c_j <= threshold except the last entry. The removed entries are a
// prefix of that order; the first kept one is found by descending 8 bits at a time over the score's radix key,
// weighting each bin by its probability mass, then among the entries equal to its score by counting in id order.
static __device__ void top_p(float *s, float *prob, int64_t V, float threshold, sample_shared &sh) {
    const int w = threadIdx.x >> 5;
    float mx = -INFINITY;
    for (int64_t i = threadIdx.x; i < V; i += ST) {
        mx = fmaxf(mx, s[i]);
    }
    mx = block_max_f(mx, sh);
    if (mx == -INFINITY) {
        return;
    }
    double part = 0;
    for (int64_t i = threadIdx.x; i < V; i += ST) {
        part += exp((double)(s[i] - mx));
    }
    const double sum = block_sum_d(part, sh);
    for (int64_t i = threadIdx.x; i < V; i += ST) {
        prob[i] = (float)(exp((double)(s[i] - mx)) / sum);
    }
    uint32_t prefix = 0, mask = 0;
    double below = 0; // Σ p of the finite entries before the chosen bins in ascending order
    int64_t n_c = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
        clear_hist(sh, true);
        __syncthreads(); // also orders the prob writes above before the reads below
#pragma unroll 4
        for (int64_t i = threadIdx.x; i < V; i += ST) {
            const float v = s[i];
            const uint32_t key = order_key(v);
            if (v > -INFINITY && (key & mask) == prefix) {
                const uint32_t b = (key >> shift) & 255u;
                atomicAdd(&sh.count[w][b], 1);
                atomicAdd(&sh.mass[w][b], (double)prob[i]);
            }
        }
        __syncthreads();
        int c = 0;
        double m = 0;
        for (int ww = 0; ww < SW; ww++) {
            c += sh.count[ww][threadIdx.x];
            m += sh.mass[ww][threadIdx.x];
        }
        sh.bin_count[threadIdx.x] = c;
        sh.bin_mass[threadIdx.x] = m;
        __syncthreads();
        if (threadIdx.x == 0) {
            double acc = below;
            int sel = -1, last = 0;
            for (int b = 0; b < 256; b++) {
                if (sh.bin_count[b] == 0) {
                    continue;
                }
                last = b;
                const double next = acc + sh.bin_mass[b];
                if (sel < 0 && (float)next > threshold) {
                    sel = b;
                    break;
                }
                acc = next;
            }
            if (sel < 0) { // nothing here passes the threshold: only the last (highest) entry will stay
                sel = last;
                acc = below;
                for (int b = 0; b < last; b++) {
                    acc += sh.bin_count[b] != 0 ? sh.bin_mass[b] : 0.0;
                }
            }
            sh.sel = sel;
            sh.below = acc;
            sh.rank = sh.bin_count[sel];
        }
        __syncthreads();
        prefix |= (uint32_t)sh.sel << shift;
        mask |= 255u << shift;
        below = sh.below;
        n_c = sh.rank;
    }
    const float c = key_value(prefix); // the score of the first kept entry; n_c entries have it
    if (threadIdx.x == 0) {
        const float p_c = (float)(exp((double)(c - mx)) / sum);
        double cum = below;
        int64_t n_remove = 0;
        while (n_remove < n_c) {
            cum += p_c;
            if (!((float)cum <= threshold)) {
                break;
            }
            n_remove++;
        }
        if (c == mx && n_remove > n_c - 1) { // the highest entry (largest id among the maxima) always stays
            n_remove = n_c - 1;
        }
        sh.n_remove = n_remove;
    }
    __syncthreads();
    const int64_t n_remove = sh.n_remove;
    for (int64_t i = threadIdx.x; i < V; i += ST) {
        if (s[i] < c || (n_remove == n_c && s[i] == c)) {
            s[i] = -INFINITY;
        }
    }
    __syncthreads();
    if (n_remove > 0 && n_remove < n_c) {
        remove_first_ties(s, V, c, n_remove, sh);
    }
}

// HF MinPLogitsWarper as the reference: P = softmax (f32, double sums); remove P < min_p · max P except the first
// entry of the largest P.
static __device__ void min_p(float *s, float *prob, int64_t V, float min_p_value, sample_shared &sh) {
    float mx = -INFINITY;
    for (int64_t i = threadIdx.x; i < V; i += ST) {
        mx = fmaxf(mx, s[i]);
    }
    mx = block_max_f(mx, sh);
    if (mx == -INFINITY) {
        return; // the reference's probabilities are all 0: nothing is below 0
    }
    double part = 0;
    for (int64_t i = threadIdx.x; i < V; i += ST) {
        part += exp((double)(s[i] - mx));
    }
    const double sum = block_sum_d(part, sh);
    float pmax = 0;
    for (int64_t i = threadIdx.x; i < V; i += ST) { // each thread rereads only its own entries below
        const float p = (float)(exp((double)(s[i] - mx)) / sum);
        prob[i] = p;
        pmax = fmaxf(pmax, p);
    }
    pmax = block_max_f(pmax, sh);
    int first = INT_MAX;
    for (int64_t i = threadIdx.x; i < V && first == INT_MAX; i += ST) {
        if (prob[i] == pmax) {
            first = (int)i;
        }
    }
    const int best = block_min_i(first, sh);
    const float threshold = min_p_value * pmax;
    for (int64_t i = threadIdx.x; i < V; i += ST) {
        if (i != best && prob[i] < threshold) {
            s[i] = -INFINITY;
        }
    }
    __syncthreads();
}

// A draw as mc_ref_sample_draw: the first entry of positive weight exp(s − max) whose cumulative weight exceeds
// u · Σ weights, scanning ST · ITEMS entries at a time (ITEMS consecutive ones per thread).
static __device__ int draw(const float *s, int64_t V, double u01, sample_shared &sh) {
    float mx = -INFINITY;
    for (int64_t i = threadIdx.x; i < V; i += ST) {
        mx = fmaxf(mx, s[i]);
    }
    mx = block_max_f(mx, sh);
    if (mx == -INFINITY) {
        return block_argmax_first(s, V, sh);
    }
    double part = 0;
    for (int64_t i = threadIdx.x; i < V; i += ST) {
        part += exp((double)(s[i] - mx));
    }
    const double total = block_sum_d(part, sh);
    const double u = u01 * total;
    double base = 0;
    for (int64_t start = 0; start < V; start += (int64_t)ST * ITEMS) {
        const int64_t i0 = start + (int64_t)threadIdx.x * ITEMS;
        double wt[ITEMS];
        double local = 0;
#pragma unroll
        for (int j = 0; j < ITEMS; j++) {
            wt[j] = i0 + j < V ? exp((double)(s[i0 + j] - mx)) : 0.0;
            local += wt[j];
        }
        double chunk = 0;
        double cum = base + block_excl_scan_d(local, &chunk, sh);
        int hit = INT_MAX;
#pragma unroll
        for (int j = 0; j < ITEMS; j++) {
            cum += wt[j];
            if (hit == INT_MAX && wt[j] > 0 && u < cum) {
                hit = (int)(i0 + j);
            }
        }
        hit = block_min_i(hit, sh);
        if (hit != INT_MAX) {
            return hit;
        }
        base += chunk;
    }
    int last = -1; // u within rounding of the total: the last entry of positive weight
    for (int64_t i = threadIdx.x; i < V; i += ST) {
        if (exp((double)(s[i] - mx)) > 0) {
            last = (int)i;
        }
    }
    last = block_max_i(last, sh);
    return last >= 0 ? last : 0;
}

__global__ void __launch_bounds__(ST) sample_kernel(sample_params p) {
    __shared__ sample_shared sh;
    const int64_t row = blockIdx.x, V = p.V;
    const float *in = p.logits + row * p.ld;
    float *s = p.work + row * V;
    const mc_sample_args &a = p.a;
    const bool temper = a.do_sample && a.temperature_on;
    if (!a.do_sample && !a.penalty_on) {
        const int id = block_argmax_first(in, V, sh);
        if (threadIdx.x == 0) {
            p.out[row] = id;
        }
        return;
    }
    // Repetition penalty, then temperature: the row is copied (divided by t), then each listed id's entry is
    // rewritten from the input (penalised, then divided), so repeated ids are penalised once.
    for (int64_t i = threadIdx.x; i < V; i += ST) {
        s[i] = temper ? in[i] / a.temperature : in[i];
    }
    __syncthreads();
    if (a.penalty_on) {
        for (int64_t j = p.prev_off[row] + threadIdx.x; j < p.prev_off[row + 1]; j += ST) {
            const int32_t id = p.prev[j];
            if (id >= 0 && id < V) {
                float x = in[id];
                x = x < 0 ? x * a.penalty : x / a.penalty;
                s[id] = temper ? x / a.temperature : x;
            }
        }
        __syncthreads();
    }
    int id;
    if (!a.do_sample) {
        id = block_argmax_first(s, V, sh);
    } else {
        float *prob = p.prob != NULL ? p.prob + row * V : NULL;
        if (a.top_k > 0 && a.top_k < V) {
            top_k(s, V, a.top_k, sh);
        }
        if (a.top_p_on) {
            top_p(s, prob, V, a.top_p_threshold, sh);
        }
        if (a.min_p_on) {
            min_p(s, prob, V, a.min_p, sh);
        }
        id = draw(s, V, p.uniforms[row], sh);
    }
    if (threadIdx.x == 0) {
        p.out[row] = id;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The op: one upload of the uniforms, offsets and ids (through pinned memory), the kernel, one download of the ids.

static size_t align_up(size_t x) {
    return (x + 255) / 256 * 256;
}

// Grows the context's device workspace or pinned staging buffer to at least `bytes` (at least doubling, so a
// history that grows a little each step does not reallocate each step). The stream is drained first.
// Greedy choice without a penalty, the common decode case, over several blocks per row: one block reading all of a
// 50280-entry row took ~12 µs of a ~650 µs step at batch 1 on an H100. Block g of row r takes the first argmax of
// its slice by block_argmax_first's rule (NaN never chosen, ties to the lower index) into part_v/part_i[r, g]; the
// last block of the row to finish (count[r], which it resets to 0) merges the G results in order and writes out[r].
#define ARGMAX_SLICE 4096 // entries per block

__global__ void __launch_bounds__(ST) argmax_rows_kernel(const float *__restrict__ logits, int64_t ld, int64_t V,
                                                         float *part_v, int *part_i, unsigned *count,
                                                         int32_t *__restrict__ out) {
    __shared__ float red_f[SW];
    __shared__ int red_i[SW];
    __shared__ bool last;
    const int64_t row = blockIdx.y;
    const int g = (int)blockIdx.x, G = (int)gridDim.x;
    const int64_t lo = (int64_t)g * ARGMAX_SLICE, hi = lo + ARGMAX_SLICE < V ? lo + ARGMAX_SLICE : V;
    const float *s = logits + row * ld;
    float bv;
    int bi = block_argmax_range(s, lo, hi, red_f, red_i, bv);
    if (threadIdx.x == 0) {
        part_v[row * G + g] = bv;
        part_i[row * G + g] = bi;
        __threadfence(); // the result is visible before the count says so
        last = atomicAdd(&count[row], 1u) == (unsigned)(G - 1);
    }
    __syncthreads();
    if (last && threadIdx.x == 0) {
        __threadfence();
        bv = __ldcg(&part_v[row * G]);
        bi = __ldcg(&part_i[row * G]);
        for (int j = 1; j < G; j++) {
            argmax_take(bv, bi, __ldcg(&part_v[row * G + j]), __ldcg(&part_i[row * G + j]));
        }
        out[row] = bi == INT_MAX ? 0 : bi;
        count[row] = 0;
    }
}

static mc_status grow(const mc_exec *ex, void **buf, size_t *have, size_t bytes, bool pinned) {
    if (bytes <= *have) {
        return MC_OK;
    }
    mc_cuda_ctx *c = mc_cuda_ctx_of(ex);
    if (c->capturing) {
        return mc_fail(mc_cuda_err(ex), MC_ERR_INTERNAL, "cuda: sample called while recording a graph");
    }
    mc_status st = mc_cuda_status(cudaStreamSynchronize(c->stream), "sample workspace sync", ex);
    if (st != MC_OK) {
        return st;
    }
    if (*buf != NULL) {
        if (pinned) {
            cudaFreeHost(*buf);
        } else {
            cudaFree(*buf);
        }
    }
    const size_t size = align_up(bytes > 2 * *have ? bytes : 2 * *have);
    *buf = NULL;
    *have = 0;
    st = pinned ? mc_cuda_status(cudaMallocHost(buf, size), "sample staging memory", ex)
                : mc_cuda_status(cudaMalloc(buf, size), "sample workspace", ex);
    if (st == MC_OK) {
        *have = size;
    }
    return st;
}

extern "C" mc_status mc_cuda_sample(const mc_exec *ex, int32_t *out_ids, const float *logits, int64_t ld, int64_t n,
                                    int64_t V, const mc_sample_args *a, const int32_t *prev, const int64_t *prev_off,
                                    const double *uniforms) {
    if (n <= 0) {
        return MC_OK;
    }
    if (V < 1 || V >= INT_MAX || ld < V || n > INT_MAX) {
        return mc_fail(mc_cuda_err(ex), MC_ERR_INVALID, "sample: %lld rows of %lld entries (%lld apart) out of range",
                       (long long)n, (long long)V, (long long)ld);
    }
    if (a->do_sample && uniforms == NULL) {
        return mc_fail(mc_cuda_err(ex), MC_ERR_INVALID, "sample: sampling needs one uniform per row");
    }
    const bool use_prev = a->penalty_on && prev_off != NULL;
    int64_t n_prev = 0;
    if (use_prev) {
        for (int64_t r = 0; r < n; r++) {
            if (prev_off[r] < 0 || prev_off[r + 1] < prev_off[r] || (prev_off[r + 1] > 0 && prev == NULL)) {
                return mc_fail(mc_cuda_err(ex), MC_ERR_INVALID, "sample: bad history offsets at row %lld",
                               (long long)r);
            }
        }
        n_prev = prev_off[n];
    }
    const bool with_prob = a->do_sample && (a->top_p_on || a->min_p_on);
    const size_t row_bytes = align_up((size_t)n * (size_t)V * sizeof(float));
    // Staged block (host and device alike): uniforms [n] | offsets [n + 1] | out [n] | prev [n_prev].
    const size_t off_uni = 0, off_off = align_up((size_t)n * sizeof(double)),
                 off_out = off_off + align_up((size_t)(n + 1) * sizeof(int64_t)),
                 off_prev = off_out + align_up((size_t)n * sizeof(int32_t)),
                 stage_bytes = off_prev + (size_t)n_prev * sizeof(int32_t);
    mc_cuda_ctx *c = mc_cuda_ctx_of(ex);
    mc_status st = grow(ex, &c->sample_dev, &c->sample_dev_bytes, row_bytes * (with_prob ? 2 : 1) + align_up(stage_bytes),
                        false);
    if (st == MC_OK) {
        st = grow(ex, &c->sample_host, &c->sample_host_bytes, stage_bytes, true);
    }
    if (st != MC_OK) {
        return st;
    }
    char *h = (char *)c->sample_host, *d = (char *)c->sample_dev;
    char *stage = d + row_bytes * (with_prob ? 2 : 1);
    if (a->do_sample) {
        memcpy(h + off_uni, uniforms, (size_t)n * sizeof(double));
    }
    if (use_prev) {
        memcpy(h + off_off, prev_off, (size_t)(n + 1) * sizeof(int64_t));
        if (n_prev > 0) {
            memcpy(h + off_prev, prev, (size_t)n_prev * sizeof(int32_t));
        }
    }
    // The previous call's download finished before it returned, so the staging buffer is free to refill.
    const size_t up_bytes = use_prev ? stage_bytes : a->do_sample ? (size_t)n * sizeof(double) : 0;
    if (up_bytes > 0) {
        st = mc_cuda_status(cudaMemcpyAsync(stage, h, up_bytes, cudaMemcpyHostToDevice, c->stream), "sample upload",
                            ex);
        if (st != MC_OK) {
            return st;
        }
    }
    sample_params p;
    p.logits = logits;
    p.ld = ld;
    p.V = V;
    p.work = (float *)d;
    p.prob = with_prob ? (float *)(d + row_bytes) : NULL;
    p.uniforms = (const double *)(stage + off_uni);
    p.prev_off = (const int64_t *)(stage + off_off);
    p.prev = (const int32_t *)(stage + off_prev);
    p.out = (int32_t *)(stage + off_out);
    p.a = *a;
    p.a.penalty_on = use_prev;
    const int64_t slices = (V + ARGMAX_SLICE - 1) / ARGMAX_SLICE;
    if (!a->do_sample && !use_prev && slices > 1 && n <= 65535) {
        // counters [n] | block values [n, slices] | block indices [n, slices]
        const size_t off_v = align_up((size_t)n * sizeof(unsigned)), off_i = off_v + align_up((size_t)(n * slices) * 4),
                     bytes = off_i + (size_t)(n * slices) * 4;
        if (bytes > c->argmax_dev_bytes) {
            st = grow(ex, &c->argmax_dev, &c->argmax_dev_bytes, bytes, false);
            st = st != MC_OK ? st
                             : mc_cuda_status(cudaMemsetAsync(c->argmax_dev, 0, c->argmax_dev_bytes, c->stream),
                                              "sample counters", ex);
            if (st != MC_OK) {
                c->argmax_dev_bytes = 0; // counters of unknown state: allocate and clear again next time
                return st;
            }
        }
        char *w = (char *)c->argmax_dev;
        argmax_rows_kernel<<<dim3((unsigned)slices, (unsigned)n), ST, 0, c->stream>>>(
            logits, ld, V, (float *)(w + off_v), (int *)(w + off_i), (unsigned *)w, p.out);
    } else {
        sample_kernel<<<(unsigned)n, ST, 0, c->stream>>>(p);
    }
    st = mc_cuda_launched("sample", ex);
    if (st == MC_OK) {
        st = mc_cuda_status(cudaMemcpyAsync(h + off_out, stage + off_out, (size_t)n * sizeof(int32_t),
                                            cudaMemcpyDeviceToHost, c->stream),
                            "sample download", ex);
    }
    if (st == MC_OK) {
        st = mc_cuda_status(cudaStreamSynchronize(c->stream), "sample", ex);
    }
    if (st == MC_OK) {
        memcpy(out_ids, h + off_out, (size_t)n * sizeof(int32_t));
    }
    return st;
}
