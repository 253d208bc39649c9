// The recurrent state (spec §4.1): per layer and sequence a conv window [E, K] and an SSM state [E, N], all f32.
#include <stdlib.h>
#include <string.h>

#include "base/checked.h"
#include "base/error.h"
#include "model/model.h"

mc_status mc_state_new(const mc_model *model, int64_t n_seq, mc_state **out, mc_error *err) {
    if (out == NULL || model == NULL) {
        return mc_fail(err, MC_ERR_INVALID, "state: model or out is NULL");
    }
    *out = NULL;
    const mc_config *c = mc_model_config(model);
    int64_t per_conv = 0, per_ssm = 0, n_conv = 0, n_ssm = 0;
    if (n_seq < 1 || n_seq > (1 << 20)) {
        return mc_fail(err, MC_ERR_INVALID, "state: n_seq %lld must be in [1, %d]", (long long)n_seq, 1 << 20);
    }
    if (!mc_mul_i64(c->num_hidden_layers * c->intermediate_size, c->conv_kernel, &per_conv) ||
        !mc_mul_i64(c->num_hidden_layers * c->intermediate_size, c->state_size, &per_ssm) ||
        !mc_mul_i64(per_conv, n_seq, &n_conv) || !mc_mul_i64(per_ssm, n_seq, &n_ssm)) {
        return mc_fail(err, MC_ERR_INVALID, "state: size for %lld sequences overflows", (long long)n_seq);
    }
    mc_state *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "state: out of memory");
    }
    s->ops = model->ops;
    mc_status st = s->ops->exec_init(&s->exec, model->n_threads, err);
    if (st != MC_OK) {
        free(s);
        return st;
    }
    s->exec.math = model->math;
    s->exec.err = err;
    st = s->ops->alloc(&s->exec, (void **)&s->conv, (size_t)n_conv * sizeof(float));
    if (st == MC_OK) {
        st = s->ops->alloc(&s->exec, (void **)&s->ssm, (size_t)n_ssm * sizeof(float));
    }
    s->exec.err = NULL;
    if (st != MC_OK) {
        mc_state_free(s);
        return mc_fail(err, st, "state: cannot allocate %lld floats for %lld sequences", (long long)(n_conv + n_ssm),
                       (long long)n_seq);
    }
    s->n_seq = n_seq;
    s->n_layer = c->num_hidden_layers;
    s->d_inner = c->intermediate_size;
    s->d_conv = c->conv_kernel;
    s->d_state = c->state_size;
    *out = s;
    return MC_OK;
}

void mc_state_free(mc_state *s) {
    if (s == NULL) {
        return;
    }
    s->ops->free(&s->exec, s->conv);
    s->ops->free(&s->exec, s->ssm);
    s->ops->free(&s->exec, s->scratch);
    s->ops->exec_free(&s->exec);
    free(s);
}

int64_t mc_state_n_seq(const mc_state *s) {
    return s != NULL ? s->n_seq : 0;
}

mc_status mc_state_reset(mc_state *s, mc_error *err) {
    if (s == NULL) {
        return mc_fail(err, MC_ERR_INVALID, "state reset: state is NULL");
    }
    s->exec.err = err;
    mc_status st = s->ops->zero(&s->exec, s->conv, (size_t)(s->n_layer * s->n_seq * s->d_inner * s->d_conv) *
                                                       sizeof(float));
    if (st == MC_OK) {
        st = s->ops->zero(&s->exec, s->ssm, (size_t)(s->n_layer * s->n_seq * s->d_inner * s->d_state) *
                                                sizeof(float));
    }
    s->exec.err = NULL;
    return st;
}

void mc_state_profile(mc_state *s, bool on) {
    if (s == NULL) {
        return;
    }
    if (on) {
        memset(s->profile_ns, 0, sizeof(s->profile_ns));
    }
    s->profiling = on;
}

void mc_state_profile_get(const mc_state *s, double seconds[MC_PROFILE_COUNT]) {
    for (int i = 0; seconds != NULL && i < MC_PROFILE_COUNT; i++) {
        seconds[i] = s != NULL ? (double)s->profile_ns[i] * 1e-9 : 0.0;
    }
}

const char *mc_profile_part_name(int part) {
    static const char *const names[MC_PROFILE_COUNT] = { "embed", "norm",  "in_proj",  "conv",   "x_proj",
                                                         "dt_proj", "scan", "out_proj", "lm_head" };
    return part >= 0 && part < MC_PROFILE_COUNT ? names[part] : "?";
}

mc_status mc_state_copy_seq(mc_state *dst, int64_t dst_seq, const mc_state *src, int64_t src_seq, mc_error *err) {
    if (dst == NULL || src == NULL) {
        return mc_fail(err, MC_ERR_INVALID, "state copy: a state is NULL");
    }
    if (dst->n_layer != src->n_layer || dst->d_inner != src->d_inner || dst->d_conv != src->d_conv ||
        dst->d_state != src->d_state) {
        return mc_fail(err, MC_ERR_INVALID, "state copy: the two states belong to different model shapes");
    }
    if (dst_seq < 0 || dst_seq >= dst->n_seq || src_seq < 0 || src_seq >= src->n_seq) {
        return mc_fail(err, MC_ERR_INVALID, "state copy: sequence %lld -> %lld out of range (%lld, %lld)",
                       (long long)src_seq, (long long)dst_seq, (long long)src->n_seq, (long long)dst->n_seq);
    }
    if (dst->ops != src->ops) {
        return mc_fail(err, MC_ERR_INVALID, "state copy: the two states belong to different backends (%s, %s)",
                       dst->ops->name, src->ops->name);
    }
    const int64_t nc = dst->d_inner * dst->d_conv, ns = dst->d_inner * dst->d_state;
    mc_status st = MC_OK;
    dst->exec.err = err;
    for (int64_t l = 0; st == MC_OK && l < dst->n_layer; l++) {
        st = dst->ops->copy(&dst->exec, dst->conv + (l * dst->n_seq + dst_seq) * nc,
                            src->conv + (l * src->n_seq + src_seq) * nc, (size_t)nc * sizeof(float));
        if (st == MC_OK) {
            st = dst->ops->copy(&dst->exec, dst->ssm + (l * dst->n_seq + dst_seq) * ns,
                                src->ssm + (l * src->n_seq + src_seq) * ns, (size_t)ns * sizeof(float));
        }
    }
    dst->exec.err = NULL;
    return st;
}
