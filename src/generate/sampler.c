// Token choice, reference-clear: HF's logits processors in HF's order (spec §7.2), then first argmax or a
// multinomial draw. Batching, stopping and the model live in generate.c.
#include "generate/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

// ---------------------------------------------------------------------------------------------------------------
// Settings and the sampler object

mc_status mc_sampler_opts_check(const mc_sampler_opts *opts, mc_error *err) {
    // Written as !(ok) so NaN fails every check.
    if (!(opts->temperature > 0 && isfinite(opts->temperature))) {
        return mc_fail(err, MC_ERR_INVALID, "temperature is %g, must be a finite number > 0", opts->temperature);
    }
    if (opts->top_k < 0) {
        return mc_fail(err, MC_ERR_INVALID, "top_k is %lld, must be >= 0 (0 = off)", (long long)opts->top_k);
    }
    if (!(opts->top_p >= 0 && opts->top_p <= 1)) {
        return mc_fail(err, MC_ERR_INVALID, "top_p is %g, must be in [0, 1] (1 = off)", opts->top_p);
    }
    if (!(opts->min_p >= 0 && opts->min_p <= 1)) {
        return mc_fail(err, MC_ERR_INVALID, "min_p is %g, must be in [0, 1] (0 = off)", opts->min_p);
    }
    if (!(opts->repetition_penalty > 0 && isfinite(opts->repetition_penalty))) {
        return mc_fail(err, MC_ERR_INVALID, "repetition_penalty is %g, must be a finite number > 0 (1 = off)",
                       opts->repetition_penalty);
    }
    return MC_OK;
}

typedef struct mc_scored {
    float score;
    int32_t id;
} mc_scored;

struct mc_sampler {
    mc_sampler_opts opts;
    int64_t n_vocab;
    int64_t n_seq;
    mc_rng *rngs;        // [n_seq] one stream per sequence, so a batch draws what each sequence draws alone
    float *tmp;          // [V] top-k selection copy, min-p probabilities
    double *weights;     // [V] multinomial weights
    mc_scored *sorted;   // [V] top-p order
    unsigned char *seen; // [V] repetition-penalty marks, all zero between calls
};

void mc_sampler_opts_init(mc_sampler_opts *opts) {
    *opts = (mc_sampler_opts){
        .do_sample = false,
        .temperature = 1.0,
        .top_k = 0,
        .top_p = 1.0,
        .min_p = 0.0,
        .repetition_penalty = 1.0,
        .seed = 0,
    };
}

mc_status mc_sampler_new(const mc_sampler_opts *opts, int64_t n_vocab, int64_t n_seq, mc_sampler **out, mc_error *err) {
    *out = NULL;
    mc_status st = mc_sampler_opts_check(opts, err);
    if (st != MC_OK) {
        return st;
    }
    if (n_vocab < 1 || n_vocab > INT32_MAX || n_seq < 1) {
        return mc_fail(err, MC_ERR_INVALID, "sampler: n_vocab %lld / n_seq %lld out of range", (long long)n_vocab,
                       (long long)n_seq);
    }
    mc_sampler *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "sampler: out of memory");
    }
    s->opts = *opts;
    s->n_vocab = n_vocab;
    s->n_seq = n_seq;
    s->rngs = calloc((size_t)n_seq, sizeof(*s->rngs));
    s->tmp = calloc((size_t)n_vocab, sizeof(*s->tmp));
    s->weights = calloc((size_t)n_vocab, sizeof(*s->weights));
    s->sorted = calloc((size_t)n_vocab, sizeof(*s->sorted));
    s->seen = calloc((size_t)n_vocab, 1);
    if (s->rngs == NULL || s->tmp == NULL || s->weights == NULL || s->sorted == NULL || s->seen == NULL) {
        mc_sampler_free(s);
        return mc_fail(err, MC_ERR_NOMEM, "sampler: out of memory for %lld-entry scratch rows", (long long)n_vocab);
    }
    for (int64_t i = 0; i < n_seq; i++) {
        // Stream 0 is seeded with seed itself, so sequence 0 of a batch equals a single-prompt run.
        mc_rng_seed(&s->rngs[i], opts->seed + (uint64_t)i * 0xD1B54A32D192ED03ull);
    }
    *out = s;
    return MC_OK;
}

void mc_sampler_free(mc_sampler *s) {
    if (s == NULL) {
        return;
    }
    free(s->rngs);
    free(s->tmp);
    free(s->weights);
    free(s->sorted);
    free(s->seen);
    free(s);
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
static void apply_repetition_penalty(mc_sampler *s, float *scores, const int32_t *prev, int64_t n_prev) {
    float p = (float)s->opts.repetition_penalty;
    for (int64_t i = 0; i < n_prev; i++) {
        int32_t id = prev[i];
        if (!s->seen[id]) {
            s->seen[id] = 1;
            scores[id] = scores[id] < 0 ? scores[id] * p : scores[id] / p;
        }
    }
    for (int64_t i = 0; i < n_prev; i++) {
        s->seen[prev[i]] = 0;
    }
}

static void apply_temperature(mc_sampler *s, float *scores) {
    float t = (float)s->opts.temperature; // torch divides the f32 row by the Python float rounded to f32
    for (int64_t i = 0; i < s->n_vocab; i++) {
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
static void apply_top_k(mc_sampler *s, float *scores) {
    int64_t n = s->n_vocab;
    int64_t k = s->opts.top_k < n ? s->opts.top_k : n;
    if (k >= n) {
        return; // the threshold would be the minimum: nothing is below it
    }
    memcpy(s->tmp, scores, (size_t)n * sizeof(*scores));
    float threshold = kth_largest(s->tmp, n, k - 1);
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
static void apply_top_p(mc_sampler *s, float *scores) {
    int64_t m = 0;
    for (int64_t i = 0; i < s->n_vocab; i++) {
        if (scores[i] > -INFINITY) {
            s->sorted[m++] = (mc_scored){ .score = scores[i], .id = (int32_t)i };
        }
    }
    if (m == 0) {
        return;
    }
    qsort(s->sorted, (size_t)m, sizeof(*s->sorted), cmp_scored_asc);
    float max = s->sorted[m - 1].score;
    double sum = 0;
    for (int64_t j = 0; j < m; j++) {
        sum += exp((double)(s->sorted[j].score - max));
    }
    float threshold = (float)(1.0 - s->opts.top_p);
    double cum = 0;
    for (int64_t j = 0; j < m - 1; j++) { // j = m - 1 is the kept highest entry
        float p = (float)(exp((double)(s->sorted[j].score - max)) / sum);
        cum += p;
        if ((float)cum <= threshold) {
            scores[s->sorted[j].id] = -INFINITY;
        }
    }
}

// HF MinPLogitsWarper: P = softmax(scores); remove P < (f32)min_p * max P, keeping the most probable entry.
static void apply_min_p(mc_sampler *s, float *scores) {
    int64_t n = s->n_vocab;
    mc_softmax_f32(s->tmp, scores, n);
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++) {
        if (s->tmp[i] > s->tmp[best]) {
            best = i;
        }
    }
    float threshold = (float)s->opts.min_p * s->tmp[best];
    for (int64_t i = 0; i < n; i++) {
        if (i != best && s->tmp[i] < threshold) {
            scores[i] = -INFINITY;
        }
    }
}

void mc_sampler_process(mc_sampler *s, float *scores, const int32_t *prev, int64_t n_prev) {
    const mc_sampler_opts *o = &s->opts;
    if (o->repetition_penalty != 1.0) {
        apply_repetition_penalty(s, scores, prev, n_prev);
    }
    if (!o->do_sample) {
        return; // HF installs only the penalty when greedy (spec §7.1)
    }
    if (o->temperature != 1.0) {
        apply_temperature(s, scores);
    }
    if (o->top_k != 0) {
        apply_top_k(s, scores);
    }
    if (o->top_p < 1.0) {
        apply_top_p(s, scores);
    }
    if (o->min_p > 0.0) { // HF installs it for min_p = 0 too, where it removes nothing
        apply_min_p(s, scores);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Choice

static int32_t argmax_first(const float *scores, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++) {
        if (scores[i] > scores[best]) { // strict: the first index wins ties, as torch.argmax
            best = i;
        }
    }
    return (int32_t)best;
}

// One draw from softmax(scores) by inverting the cumulative weights; weights in double so the tail is not lost.
static int32_t draw_multinomial(mc_sampler *s, mc_rng *rng, const float *scores) {
    int64_t n = s->n_vocab;
    float max = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        max = scores[i] > max ? scores[i] : max;
    }
    if (max == -INFINITY) {
        return argmax_first(scores, n);
    }
    double total = 0;
    int64_t last = 0;
    for (int64_t i = 0; i < n; i++) {
        s->weights[i] = exp((double)(scores[i] - max));
        total += s->weights[i];
        if (s->weights[i] > 0) {
            last = i;
        }
    }
    double u = mc_rng_uniform(rng) * total;
    double cum = 0;
    for (int64_t i = 0; i < n; i++) {
        cum += s->weights[i];
        if (s->weights[i] > 0 && u < cum) {
            return (int32_t)i;
        }
    }
    return (int32_t)last; // u within rounding of total
}

int32_t mc_sampler_choose(mc_sampler *s, int64_t seq, const float *scores) {
    if (!s->opts.do_sample) {
        return argmax_first(scores, s->n_vocab);
    }
    return draw_multinomial(s, &s->rngs[seq], scores);
}
