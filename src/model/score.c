// Next-token loss over a long token stream in fixed memory: chunks of positions carry the state (spec §4.4) and
// each chunk's logits are reduced to log-probabilities of the following token before the next chunk runs.
#include <stdlib.h>

#include "base/error.h"
#include "model/model.h"

#define MC_SCORE_CHUNK 256 // positions per forward call: bounds the logits buffer to 256 × V floats

mc_status mc_model_score(const mc_model *m, const int32_t *ids, int64_t n_ids, mc_progress_cb progress, void *user,
                         double *nll, int64_t *n_scored, mc_error *err) {
    if (m == NULL || ids == NULL || nll == NULL || n_scored == NULL) {
        return mc_fail(err, MC_ERR_INVALID, "score: model, ids, nll and n_scored must be given");
    }
    *nll = 0;
    *n_scored = 0;
    if (n_ids < 2) {
        return mc_fail(err, MC_ERR_INVALID, "score: need at least 2 tokens, got %lld", (long long)n_ids);
    }
    const int64_t V = m->cfg.vocab_size;
    for (int64_t i = 0; i < n_ids; i++) { // the forward checks its inputs; the last token is only a target
        if (ids[i] < 0 || ids[i] >= V) {
            return mc_fail(err, MC_ERR_INVALID, "token id %d at position %lld is outside the vocabulary [0, %lld)",
                           ids[i], (long long)i, (long long)V);
        }
    }
    mc_state *state = NULL;
    mc_status st = mc_state_new(m, 1, &state, err);
    float *logits = st == MC_OK ? malloc((size_t)(MC_SCORE_CHUNK * V) * sizeof(float)) : NULL;
    if (st == MC_OK && logits == NULL) {
        st = mc_fail(err, MC_ERR_NOMEM, "score: cannot allocate %d x %lld logits", MC_SCORE_CHUNK, (long long)V);
    }
    double total = 0;
    // The last token is never an input whose prediction is scored, so positions 0 .. n_ids − 2 run.
    for (int64_t t0 = 0; st == MC_OK && t0 < n_ids - 1; t0 += MC_SCORE_CHUNK) {
        const int64_t T = n_ids - 1 - t0 < MC_SCORE_CHUNK ? n_ids - 1 - t0 : MC_SCORE_CHUNK;
        st = mc_model_forward(m, state, ids + t0, 1, T, true, logits, err);
        if (st == MC_OK) {
            double row_nll[MC_SCORE_CHUNK];
            state->exec.err = err;
            st = m->ops->nll(&state->exec, row_nll, logits, T, V, ids + t0 + 1);
            state->exec.err = NULL;
            for (int64_t t = 0; st == MC_OK && t < T; t++) { // summed in order, whatever the thread count
                total += row_nll[t];
            }
        }
        if (st == MC_OK && progress != NULL && !progress(user, t0 + T, n_ids - 1)) {
            st = mc_fail(err, MC_ERR_INVALID, "score: cancelled after %lld tokens", (long long)(t0 + T));
        }
    }
    free(logits);
    mc_state_free(state);
    if (st == MC_OK) {
        *nll = total;
        *n_scored = n_ids - 1;
    }
    return st;
}
