// Placing a finished model's weights in its backend's memory (a device): every pointer the forward reads is
// repointed at a device copy; the host views stay, for saving. Host backends keep the weights where they are.
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "kernels/dtype.h"
#include "model/model.h"

static atomic_uint_fast64_t next_uid = 1; // identity of placed models, for the keys of recorded decode steps

// Copies bytes of host memory src into new backend memory owned by the model; *dst = the copy. NULL stays NULL.
static mc_status put(mc_model *m, const mc_exec *ex, const void *src, size_t bytes, const void **dst) {
    if (src == NULL) {
        *dst = NULL;
        return MC_OK;
    }
    if (m->n_dev_owned == m->cap_dev_owned) {
        int64_t cap = m->cap_dev_owned ? m->cap_dev_owned * 2 : 64;
        void **p = realloc(m->dev_owned, (size_t)cap * sizeof(*p));
        if (p == NULL) {
            return mc_fail(ex->err, MC_ERR_NOMEM, "place: out of memory");
        }
        m->dev_owned = p;
        m->cap_dev_owned = cap;
    }
    void *d = NULL;
    mc_status st = m->ops->alloc(ex, &d, bytes);
    if (st != MC_OK) {
        return st;
    }
    m->dev_owned[m->n_dev_owned++] = d;
    *dst = d;
    return m->ops->upload(ex, d, src, bytes);
}

static mc_status put_f32(mc_model *m, const mc_exec *ex, const float **v, int64_t n) {
    const void *d = NULL;
    mc_status st = put(m, ex, *v, (size_t)n * sizeof(float), &d);
    *v = d;
    return st;
}

static mc_status put_matrix(mc_model *m, const mc_exec *ex, mc_weight *w) {
    const void *d = NULL;
    mc_status st = put(m, ex, w->data, (size_t)(w->rows * w->cols * mc_dtype_size(w->dtype)), &d);
    w->data = d;
    if (st == MC_OK && w->dtype == MC_DTYPE_I8) {
        st = put_f32(m, ex, &w->scales, w->rows * ((w->cols + w->group - 1) / w->group));
    }
    return st;
}

static mc_status put_layer(mc_model *m, const mc_exec *ex, mc_layer *l) {
    const mc_config *c = &m->cfg;
    const int64_t H = c->hidden_size, E = c->intermediate_size, N = c->state_size, K = c->conv_kernel;
    mc_status st = put_f32(m, ex, &l->norm, H);
    if (st == MC_OK) st = put_matrix(m, ex, &l->in_proj);
    if (st == MC_OK) st = put_f32(m, ex, &l->in_bias, 2 * E);
    if (st == MC_OK) st = put_f32(m, ex, &l->conv_w, E * K);
    if (st == MC_OK) st = put_f32(m, ex, &l->conv_b, E);
    if (st == MC_OK) st = put_matrix(m, ex, &l->x_proj);
    if (st == MC_OK) st = put_matrix(m, ex, &l->dt_proj);
    if (st == MC_OK) st = put_f32(m, ex, &l->dt_bias, E);
    if (st == MC_OK) st = put_f32(m, ex, &l->A_log, E * N);
    if (st == MC_OK) st = put_f32(m, ex, &l->A, E * N);
    if (st == MC_OK) st = put_f32(m, ex, &l->D, E);
    if (st == MC_OK) st = put_matrix(m, ex, &l->out_proj);
    if (st == MC_OK) st = put_f32(m, ex, &l->out_bias, H);
    return st;
}

static mc_status place_all(mc_model *m, const mc_exec *ex) {
    const int64_t NL = m->cfg.num_hidden_layers;
    m->host_layers = malloc((size_t)NL * sizeof(mc_layer));
    if (m->host_layers == NULL) {
        return mc_fail(ex->err, MC_ERR_NOMEM, "place: out of memory");
    }
    memcpy(m->host_layers, m->layers, (size_t)NL * sizeof(mc_layer));
    m->host_embed = m->embed;
    m->host_lm_head = m->lm_head;
    m->host_norm_f = m->norm_f;
    const bool tied = m->lm_head.data == m->embed.data;
    mc_status st = put_matrix(m, ex, &m->embed);
    for (int64_t i = 0; st == MC_OK && i < NL; i++) {
        st = put_layer(m, ex, &m->layers[i]);
    }
    if (st == MC_OK) {
        st = put_f32(m, ex, &m->norm_f, m->cfg.hidden_size);
    }
    if (st == MC_OK) {
        if (tied) {
            m->lm_head = m->embed;
        } else {
            st = put_matrix(m, ex, &m->lm_head);
        }
    }
    return st != MC_OK ? st : m->ops->sync(ex);
}

mc_status mc_model_place(mc_model *m, mc_error *err) {
    if (m->ops->host_memory) {
        return MC_OK;
    }
    mc_exec ex;
    mc_status st = m->ops->exec_init(&ex, 1, err);
    if (st != MC_OK) {
        return st;
    }
    ex.err = err;
    st = place_all(m, &ex);
    m->ops->exec_free(&ex);
    m->uid = atomic_fetch_add(&next_uid, 1);
    return st;
}

void mc_model_unplace(mc_model *m) {
    for (int64_t i = 0; i < m->n_dev_owned; i++) {
        m->ops->free(NULL, m->dev_owned[i]);
    }
    free(m->dev_owned);
    m->dev_owned = NULL;
    m->n_dev_owned = m->cap_dev_owned = 0;
    free(m->host_layers);
    m->host_layers = NULL;
}

const mc_model *mc_model_host_view(const mc_model *m, mc_model *view) {
    if (m->host_layers == NULL) {
        return m;
    }
    *view = *m;
    view->layers = m->host_layers;
    view->embed = m->host_embed;
    view->lm_head = m->host_lm_head;
    view->norm_f = m->host_norm_f;
    return view;
}
