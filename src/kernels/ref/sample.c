// Token choice, reference-clear: HF's logits processors in HF's order (spec §7.2), then first argmax or a
// multinomial draw with a given uniform. The settings and random streams live in generate/sampler.c; this file is
// also the host backends' `sample` op and the oracle of the device ones.
#include "kernels/ref/sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

typedef struct mc_scored {
    float score;
    int32_t id;
} mc_scored;

bool mc_sample_scratch_init(mc_sample_scratch *w, int64_t n_vocab) {
    memset(w, 0, sizeof(*w));
    w->n_vocab = n_vocab;
    w->tmp = calloc((size_t)n_vocab, sizeof(*w->tmp));
    w->weights = calloc((size_t)n_vocab, sizeof(*w->weights));
    w->sorted = calloc((size_t)n_vocab, sizeof(*w->sorted));
    w->seen = calloc((size_t)n_vocab, 1);
    if (w->tmp == NULL || w->weights == NULL || w->sorted == NULL || w->seen == NULL) {
        mc_sample_scratch_free(w);
        return false;
    }
    return true;
}

void mc_sample_scratch_free(mc_sample_scratch *w) {
    free(w->tmp);
    free(w->weights);
    free(w->sorted);
    free(w->seen);
    memset(w, 0, sizeof(*w));
}

// ---------------------------------------------------------------------------------------------------------------
// Processors (spec §7.2). Each takes the row as the previous one left it.

void mc_softmax_f32(float *probs, const float *scores, int64_t n) {
    float max = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        max = scores[i] > max ? scores[i] : max;
    }
    if (max == -INFINITY) { // nothing left: no distribution (processors always keep one entry)
        memset(probs, 0, (size_t)n * sizeof(*probs));
        return;
    }
    double sum = 0;
    for (int64_t i = 0; i < n; i++) {
        sum += exp((double)(scores[i] - max)); // x - max in f32, as torch's softmax; exp(-inf) = 0
    }
    for (int64_t i = 0; i < n; i++) {
        probs[i] = (float)(exp((double)(scores[i] - max)) / sum);
    }
}

// HF RepetitionPenaltyLogitsProcessor: each distinct id of the sequence once; negative scores are multiplied,
// others divided (0 stays 0). torch does it in f32 with the Python float rounded to f32.
static void apply_repetition_penalty(const mc_sample_args *a, mc_sample_scratch *w, float *scores,
                                     const int32_t *prev, int64_t n_prev) {
    const float p = a->penalty;
    for (int64_t i = 0; i < n_prev; i++) {
        int32_t id = prev[i];
        if (!w->seen[id]) {
            w->seen[id] = 1;
            scores[id] = scores[id] < 0 ? scores[id] * p : scores[id] / p;
        }
    }
    for (int64_t i = 0; i < n_prev; i++) {
        w->seen[prev[i]] = 0;
    }
}

static void apply_temperature(const mc_sample_args *a, float *scores, int64_t n) {
    const float t = a->temperature; // torch divides the f32 row by the Python float rounded to f32
    for (int64_t i = 0; i < n; i++) {
        scores[i] = scores[i] / t;
    }
}

static void swap_f32(float *a, float *b) {
    float t = *a;
    *a = *b;
    *b = t;
}

// The (k+1)-th largest of a[0..n) (k in [0, n)), reordering a. Three-way quickselect: linear on average, and
// runs of equal values (e.g. many -inf) are one step, not a quadratic worst case.
static float kth_largest(float *a, int64_t n, int64_t k) {
    int64_t lo = 0, hi = n;
    while (hi - lo > 1) {
        float pivot = a[lo + (hi - lo) / 2];
        int64_t gt_end = lo, i = lo, lt_begin = hi; // [lo, gt_end) > pivot, [gt_end, i) == pivot, [lt_begin, hi) <
        while (i < lt_begin) {
            if (a[i] > pivot) {
                swap_f32(&a[gt_end++], &a[i++]);
            } else if (a[i] < pivot) {
                swap_f32(&a[i], &a[--lt_begin]);
            } else {
                i++;
            }
        }
        if (k < gt_end) {
            hi = gt_end;
        } else if (k >= lt_begin) {
            lo = lt_begin;
        } else {
            return pivot;
        }
    }
    return a[lo];
}

// HF TopKLogitsWarper: k' = min(max(k, 1), V); remove scores < the k'-th largest, so ties at it all stay.
static void apply_top_k(const mc_sample_args *a, mc_sample_scratch *w, float *scores) {
    const int64_t n = w->n_vocab;
    const int64_t k = a->top_k < n ? a->top_k : n;
    if (k >= n) {
        return; // the threshold would be the minimum: nothing is below it
    }
    memcpy(w->tmp, scores, (size_t)n * sizeof(*scores));
    float threshold = kth_largest(w->tmp, n, k - 1);
    for (int64_t i = 0; i < n; i++) {
        if (scores[i] < threshold) {
            scores[i] = -INFINITY;
        }
    }
}

// Ascending by score; equal scores by ascending id, the order torch's sort gave in the spec's checks (§7.2).
static int cmp_scored_asc(const void *pa, const void *pb) {
    const mc_scored *a = pa, *b = pb;
    if (a->score != b->score) {
        return a->score < b->score ? -1 : 1;
    }
    return (a->id > b->id) - (a->id < b->id);
}

// HF TopPLogitsWarper, literally: sort ascending, c_i = cumsum(softmax) (torch's CPU cumsum adds in double and
// rounds each partial sum to f32), remove c_i <= (f32)(1 - p), never the last (highest) entry. Entries already at
// -inf come first in that order with probability 0, so they are removed anyway: only finite ones are sorted.
static void apply_top_p(const mc_sample_args *a, mc_sample_scratch *w, float *scores) {
    int64_t m = 0;
    for (int64_t i = 0; i < w->n_vocab; i++) {
        if (scores[i] > -INFINITY) {
            w->sorted[m++] = (mc_scored){ .score = scores[i], .id = (int32_t)i };
        }
    }
    if (m == 0) {
        return;
    }
    qsort(w->sorted, (size_t)m, sizeof(*w->sorted), cmp_scored_asc);
    float max = w->sorted[m - 1].score;
    double sum = 0;
    for (int64_t j = 0; j < m; j++) {
        sum += exp((double)(w->sorted[j].score - max));
    }
    const float threshold = a->top_p_threshold;
    double cum = 0;
    for (int64_t j = 0; j < m - 1; j++) { // j = m - 1 is the kept highest entry
        float p = (float)(exp((double)(w->sorted[j].score - max)) / sum);
        cum += p;
        if ((float)cum <= threshold) {
            scores[w->sorted[j].id] = -INFINITY;
        }
    }
}

// HF MinPLogitsWarper: P = softmax(scores); remove P < (f32)min_p * max P, keeping the most probable entry.
static void apply_min_p(const mc_sample_args *a, mc_sample_scratch *w, float *scores) {
    const int64_t n = w->n_vocab;
    mc_softmax_f32(w->tmp, scores, n);
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++) {
        if (w->tmp[i] > w->tmp[best]) {
            best = i;
        }
    }
    float threshold = a->min_p * w->tmp[best];
    for (int64_t i = 0; i < n; i++) {
        if (i != best && w->tmp[i] < threshold) {
            scores[i] = -INFINITY;
        }
    }
}

void mc_ref_sample_process(const mc_sample_args *a, mc_sample_scratch *w, float *scores, const int32_t *prev,
                           int64_t n_prev) {
    if (a->penalty_on) {
        apply_repetition_penalty(a, w, scores, prev, n_prev);
    }
    if (!a->do_sample) {
        return; // HF installs only the penalty when greedy (spec §7.1)
    }
    if (a->temperature_on) {
        apply_temperature(a, scores, w->n_vocab);
    }
    if (a->top_k > 0) {
        apply_top_k(a, w, scores);
    }
    if (a->top_p_on) {
        apply_top_p(a, w, scores);
    }
    if (a->min_p_on) { // HF installs it for min_p = 0 too, where it removes nothing
        apply_min_p(a, w, scores);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Choice

int32_t mc_ref_argmax_first(const float *scores, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++) {
        if (scores[i] > scores[best]) { // strict: the first index wins ties, as torch.argmax
            best = i;
        }
    }
    return (int32_t)best;
}

// One draw from softmax(scores) by inverting the cumulative weights; weights in double so the tail is not lost.
int32_t mc_ref_sample_draw(mc_sample_scratch *w, const float *scores, double u01) {
    const int64_t n = w->n_vocab;
    float max = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        max = scores[i] > max ? scores[i] : max;
    }
    if (max == -INFINITY) {
        return mc_ref_argmax_first(scores, n);
    }
    double total = 0;
    int64_t last = 0;
    for (int64_t i = 0; i < n; i++) {
        w->weights[i] = exp((double)(scores[i] - max));
        total += w->weights[i];
        if (w->weights[i] > 0) {
            last = i;
        }
    }
    double u = u01 * total;
    double cum = 0;
    for (int64_t i = 0; i < n; i++) {
        cum += w->weights[i];
        if (w->weights[i] > 0 && u < cum) {
            return (int32_t)i;
        }
    }
    return (int32_t)last; // u within rounding of total
}

// ---------------------------------------------------------------------------------------------------------------
// The op

mc_status mc_ref_sample(const mc_exec *ex, int32_t *out_ids, const float *logits, int64_t ld, int64_t n, int64_t V,
                        const mc_sample_args *a, const int32_t *prev, const int64_t *prev_off, const double *uniforms) {
    mc_sample_scratch w;
    float *row = malloc((size_t)(V > 0 ? V : 1) * sizeof(float));
    if (row == NULL || !mc_sample_scratch_init(&w, V)) {
        free(row);
        return mc_fail(ex != NULL ? ex->err : NULL, MC_ERR_NOMEM, "sample: out of memory for %lld-entry rows",
                       (long long)V);
    }
    for (int64_t r = 0; r < n; r++) {
        memcpy(row, logits + r * ld, (size_t)V * sizeof(float));
        const int64_t p0 = prev_off != NULL ? prev_off[r] : 0, p1 = prev_off != NULL ? prev_off[r + 1] : 0;
        mc_ref_sample_process(a, &w, row, prev != NULL ? prev + p0 : NULL, p1 - p0);
        out_ids[r] = a->do_sample ? mc_ref_sample_draw(&w, row, uniforms[r]) : mc_ref_argmax_first(row, V);
    }
    mc_sample_scratch_free(&w);
    free(row);
    return MC_OK;
}
