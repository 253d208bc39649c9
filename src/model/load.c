// Loading a checkpoint folder: resolve the path (folder, hub snapshot or ORG/NAME), parse config.json, map the
// safetensors files and bind every tensor to its place with shape and dtype checks (spec §2). No math here beyond
// A = −exp(A_log) and dtype widening of the small vectors.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/file.h"
#include "io/hub.h"
#include "kernels/dtype.h"
#include "model/model.h"

void *mc_model_own(mc_model *m, size_t bytes) {
    if (m->n_owned == m->cap_owned) {
        int64_t cap = m->cap_owned ? m->cap_owned * 2 : 64;
        void **p = realloc(m->owned, (size_t)cap * sizeof(*p));
        if (p == NULL) {
            return NULL;
        }
        m->owned = p;
        m->cap_owned = cap;
    }
    void *b = malloc(bytes ? bytes : 1);
    if (b != NULL) {
        m->owned[m->n_owned++] = b;
        m->info.resident_bytes += (int64_t)bytes;
    }
    return b;
}

// Finds a tensor under its HF name, or the mamba_ssm spelling (backbone.embedding.), or without "backbone.".
static const mc_st_tensor *find(const mc_model *m, const char *name) {
    const mc_st_tensor *t = mc_st_find(m->st, name);
    char alt[256];
    if (t == NULL && strcmp(name, "backbone.embeddings.weight") == 0) {
        t = mc_st_find(m->st, "backbone.embedding.weight");
        if (t == NULL) {
            t = mc_st_find(m->st, "embedding.weight");
        }
        if (t == NULL) {
            t = mc_st_find(m->st, "embeddings.weight");
        }
    }
    if (t == NULL && strncmp(name, "backbone.", 9) == 0) {
        snprintf(alt, sizeof(alt), "%s", name + 9);
        t = mc_st_find(m->st, alt);
    }
    return t;
}

// Looks up name and checks its dtype and shape (dims[0..ndim), with shape [E,1,K] accepted as [E,K] for conv1d).
static mc_status bind(mc_model *m, const char *name, int ndim, const int64_t *dims, bool optional,
                      const mc_st_tensor **out, mc_error *err) {
    *out = NULL;
    const mc_st_tensor *t = find(m, name);
    if (t == NULL) {
        if (optional) {
            return MC_OK;
        }
        return mc_fail(err, MC_ERR_FORMAT, "%s: tensor %s is missing", m->dir, name);
    }
    if (t->dtype < 0) {
        return mc_fail(err, MC_ERR_UNSUPPORTED, "%s: tensor %s has dtype %s (supported: F32, F16, BF16)",
                       mc_st_file_path(m->st, t->file_index), name, t->dtype_name);
    }
    // Collapse size-1 dims so [E,1,K] matches [E,K].
    int64_t got[MC_ST_MAX_DIMS], want[MC_ST_MAX_DIMS];
    int ng = 0, nw = 0;
    for (int i = 0; i < t->ndim; i++) {
        if (t->shape[i] != 1) {
            got[ng++] = t->shape[i];
        }
    }
    for (int i = 0; i < ndim; i++) {
        if (dims[i] != 1) {
            want[nw++] = dims[i];
        }
    }
    bool same = ng == nw;
    for (int i = 0; same && i < ng; i++) {
        same = got[i] == want[i];
    }
    if (!same) {
        char gs[96] = "", ws[96] = "";
        for (int i = 0; i < t->ndim; i++) {
            snprintf(gs + strlen(gs), sizeof(gs) - strlen(gs), "%s%lld", i ? "," : "", (long long)t->shape[i]);
        }
        for (int i = 0; i < ndim; i++) {
            snprintf(ws + strlen(ws), sizeof(ws) - strlen(ws), "%s%lld", i ? "," : "", (long long)dims[i]);
        }
        return mc_fail(err, MC_ERR_FORMAT, "%s: tensor %s has shape [%s], the config needs [%s]",
                       mc_st_file_path(m->st, t->file_index), name, gs, ws);
    }
    m->info.n_tensors++;
    *out = t;
    return MC_OK;
}

static void count(mc_model *m, const mc_st_tensor *t) {
    m->info.n_params += t->numel;
    m->info.n_by_dtype[t->dtype] += t->numel;
    m->info.weight_bytes += t->nbytes;
}

// A small vector or matrix widened to f32 (owned by the model).
static mc_status bind_f32(mc_model *m, const char *name, int ndim, const int64_t *dims, bool optional,
                          const float **out, mc_error *err) {
    const mc_st_tensor *t = NULL;
    *out = NULL;
    mc_status st = bind(m, name, ndim, dims, optional, &t, err);
    if (st != MC_OK || t == NULL) {
        return st;
    }
    count(m, t);
    float *f = mc_model_own(m, (size_t)t->numel * sizeof(float));
    if (f == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "%s: out of memory for %s", m->dir, name);
    }
    int64_t esz = mc_dtype_size(t->dtype);
    for (int64_t i = 0; i < t->numel; i++) { // memcpy per element: the mapping need not be aligned
        unsigned char b[4];
        memcpy(b, (const unsigned char *)t->data + i * esz, (size_t)esz);
        f[i] = mc_load_f32(b, t->dtype, 0);
    }
    *out = f;
    return MC_OK;
}

// An int8 matrix written by `mambac quantize`: the I8 tensor plus "<name>_scale" [rows, ceil(cols / group)] in F32.
static mc_status bind_int8(mc_model *m, const char *name, const mc_st_tensor *t, mc_weight *w, mc_error *err) {
    const int64_t group = m->cfg.int8_group;
    if (group <= 0) {
        return mc_fail(err, MC_ERR_FORMAT, "%s: tensor %s is int8 but config.json has no quantization_config.group_size",
                       mc_st_file_path(m->st, t->file_index), name);
    }
    char sname[160];
    snprintf(sname, sizeof(sname), "%s_scale", name);
    const mc_st_tensor *s = mc_st_find(m->st, sname);
    const int64_t n_groups = (w->cols + group - 1) / group;
    if (s == NULL || s->dtype != MC_DTYPE_F32 || s->numel != w->rows * n_groups) {
        return mc_fail(err, MC_ERR_FORMAT, "%s: tensor %s (int8) needs %s as F32 [%lld, %lld]",
                       mc_st_file_path(m->st, t->file_index), name, sname, (long long)w->rows, (long long)n_groups);
    }
    float *scales = mc_model_own(m, (size_t)s->nbytes);
    if (scales == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "%s: out of memory for %s", m->dir, sname);
    }
    memcpy(scales, s->data, (size_t)s->nbytes); // also realigns
    w->dtype = MC_DTYPE_I8;
    w->data = t->data;
    w->scales = scales;
    w->group = group;
    m->info.n_params += t->numel;
    m->info.n_by_dtype[MC_DTYPE_I8] += t->numel;
    m->info.weight_bytes += t->nbytes + s->nbytes;
    m->info.n_tensors += 2;
    return MC_OK;
}

// A matrix kept in its stored dtype; copied only when the mapping is misaligned for the element type.
static mc_status bind_matrix(mc_model *m, const char *name, int64_t rows, int64_t cols, mc_weight *w, mc_error *err) {
    const mc_st_tensor *t = find(m, name);
    int64_t dims[2] = { rows, cols };
    memset(w, 0, sizeof(*w));
    w->rows = rows;
    w->cols = cols;
    if (t != NULL && strcmp(t->dtype_name, "I8") == 0 && t->ndim == 2 && t->shape[0] == rows && t->shape[1] == cols) {
        return bind_int8(m, name, t, w, err);
    }
    mc_status st = bind(m, name, 2, dims, false, &t, err);
    if (st != MC_OK) {
        return st;
    }
    count(m, t);
    w->dtype = t->dtype;
    w->data = t->data;
    if ((uintptr_t)t->data % (uintptr_t)mc_dtype_size(t->dtype) != 0) {
        void *copy = mc_model_own(m, (size_t)t->nbytes);
        if (copy == NULL) {
            return mc_fail(err, MC_ERR_NOMEM, "%s: out of memory for %s", m->dir, name);
        }
        memcpy(copy, t->data, (size_t)t->nbytes);
        w->data = copy;
    }
    return MC_OK;
}

static mc_status bind_layer(mc_model *m, int64_t i, mc_error *err) {
    const mc_config *c = &m->cfg;
    const int64_t H = c->hidden_size, E = c->intermediate_size, N = c->state_size, R = c->time_step_rank,
                  K = c->conv_kernel;
    mc_layer *l = &m->layers[i];
    char name[128];
    mc_status st = MC_OK;
#define NAME(s) (snprintf(name, sizeof(name), "backbone.layers.%lld.%s", (long long)i, s), name)
    int64_t dH[1] = { H }, dE[1] = { E }, d2E[1] = { 2 * E }, dEK[3] = { E, 1, K }, dEN[2] = { E, N };
    if (st == MC_OK) st = bind_f32(m, NAME("norm.weight"), 1, dH, false, &l->norm, err);
    if (st == MC_OK) st = bind_matrix(m, NAME("mixer.in_proj.weight"), 2 * E, H, &l->in_proj, err);
    if (st == MC_OK) st = bind_f32(m, NAME("mixer.in_proj.bias"), 1, d2E, !c->use_bias, &l->in_bias, err);
    if (st == MC_OK) st = bind_f32(m, NAME("mixer.conv1d.weight"), 3, dEK, false, &l->conv_w, err);
    if (st == MC_OK) st = bind_f32(m, NAME("mixer.conv1d.bias"), 1, dE, !c->use_conv_bias, &l->conv_b, err);
    if (st == MC_OK) st = bind_matrix(m, NAME("mixer.x_proj.weight"), R + 2 * N, E, &l->x_proj, err);
    if (st == MC_OK) st = bind_matrix(m, NAME("mixer.dt_proj.weight"), E, R, &l->dt_proj, err);
    if (st == MC_OK) st = bind_f32(m, NAME("mixer.dt_proj.bias"), 1, dE, false, &l->dt_bias, err);
    if (st == MC_OK) st = bind_f32(m, NAME("mixer.A_log"), 2, dEN, false, &l->A_log, err);
    if (st == MC_OK) st = bind_f32(m, NAME("mixer.D"), 1, dE, false, &l->D, err);
    if (st == MC_OK) st = bind_matrix(m, NAME("mixer.out_proj.weight"), H, E, &l->out_proj, err);
    if (st == MC_OK) st = bind_f32(m, NAME("mixer.out_proj.bias"), 1, dH, !c->use_bias, &l->out_bias, err);
#undef NAME
    return st;
}

mc_status mc_model_derive_A(mc_model *m, mc_error *err) {
    const int64_t EN = m->cfg.intermediate_size * m->cfg.state_size;
    for (int64_t i = 0; i < m->cfg.num_hidden_layers; i++) {
        float *A = mc_model_own(m, (size_t)EN * sizeof(float));
        if (A == NULL) {
            return mc_fail(err, MC_ERR_NOMEM, "%s: out of memory", m->dir);
        }
        for (int64_t j = 0; j < EN; j++) {
            A[j] = -expf(m->layers[i].A_log[j]);
        }
        m->layers[i].A = A;
    }
    return MC_OK;
}

static mc_status bind_all(mc_model *m, mc_error *err) {
    const mc_config *c = &m->cfg;
    int64_t dH[1] = { c->hidden_size };
    mc_status st = bind_matrix(m, "backbone.embeddings.weight", c->vocab_size, c->hidden_size, &m->embed, err);
    for (int64_t i = 0; st == MC_OK && i < c->num_hidden_layers; i++) {
        st = bind_layer(m, i, err);
    }
    if (st == MC_OK) {
        st = bind_f32(m, "backbone.norm_f.weight", 1, dH, false, &m->norm_f, err);
    }
    if (st == MC_OK) {
        st = mc_model_derive_A(m, err);
    }
    if (st != MC_OK) {
        return st;
    }
    // Tied: the head is the embedding (a stored lm_head.weight in a tied file is the same matrix, spec §2.1).
    if (c->tie_word_embeddings) {
        m->lm_head = m->embed;
        return MC_OK;
    }
    if (mc_st_find(m->st, "lm_head.weight") == NULL) {
        return mc_fail(err, MC_ERR_FORMAT, "%s: tensor lm_head.weight is missing (tie_word_embeddings is false)",
                       m->dir);
    }
    return bind_matrix(m, "lm_head.weight", c->vocab_size, c->hidden_size, &m->lm_head, err);
}

// Picks the weight file by transformers' precedence (spec §1.5).
static mc_status open_weights(mc_model *m, mc_error *err) {
    static const char *const names[] = { "model.safetensors", "model.safetensors.index.json" };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char *p = mc_path_join(m->dir, names[i]);
        if (p == NULL) {
            return mc_fail(err, MC_ERR_NOMEM, "%s: out of memory", m->dir);
        }
        if (mc_path_is_file(p)) {
            mc_status st = mc_st_open(p, &m->st, err);
            free(p);
            return st;
        }
        free(p);
    }
    char *bin = mc_path_join(m->dir, "pytorch_model.bin");
    bool has_bin = bin != NULL && mc_path_is_file(bin);
    free(bin);
    if (has_bin) {
        return mc_fail(err, MC_ERR_UNSUPPORTED,
                       "%s: only pytorch_model.bin found; mambac reads safetensors (model.safetensors or "
                       "model.safetensors.index.json)", m->dir);
    }
    return mc_fail(err, MC_ERR_IO, "%s: no model.safetensors or model.safetensors.index.json", m->dir);
}

mc_status mc_model_setup_backend(mc_model *m, const mc_load_opts *opts, mc_error *err) {
    if (opts->n_threads > 4096) {
        return mc_fail(err, MC_ERR_INVALID, "threads: %d is more than 4096", opts->n_threads);
    }
    m->n_threads = opts->n_threads > 0 ? opts->n_threads : mc_cpu_physical_cores();
    if ((unsigned)opts->precision > MC_PRECISION_BF16) {
        return mc_fail(err, MC_ERR_INVALID, "precision: %d is not f32, tf32 or bf16", (int)opts->precision);
    }
    m->math = mc_math_of(opts->precision);
    m->ops = mc_ops_get(opts->backend, err);
    return m->ops != NULL ? MC_OK : err != NULL ? err->code : MC_ERR_UNSUPPORTED;
}

static int64_t matrix_bytes(const mc_weight *w) {
    int64_t b = w->rows * w->cols * mc_dtype_size(w->dtype);
    if (w->dtype == MC_DTYPE_I8) {
        b += w->rows * ((w->cols + w->group - 1) / w->group) * (int64_t)sizeof(float);
    }
    return b;
}

// Bytes one decode step reads: every layer's matrices and vectors, the head, one embedding row.
static int64_t read_bytes_per_token(const mc_model *m) {
    const mc_config *c = &m->cfg;
    const int64_t E = c->intermediate_size, H = c->hidden_size, N = c->state_size, K = c->conv_kernel;
    int64_t total = matrix_bytes(&m->lm_head) + matrix_bytes(&m->embed) / c->vocab_size + H * 4;
    for (int64_t i = 0; i < c->num_hidden_layers; i++) {
        const mc_layer *l = &m->layers[i];
        total += matrix_bytes(&l->in_proj) + matrix_bytes(&l->x_proj) + matrix_bytes(&l->dt_proj) +
                 matrix_bytes(&l->out_proj);
        total += 4 * (H + E * K + 3 * E + E * N) + (l->conv_b ? 4 * E : 0) + (l->in_bias ? 8 * E : 0) +
                 (l->out_bias ? 4 * H : 0);
    }
    return total;
}

void mc_load_opts_init(mc_load_opts *opts) {
    memset(opts, 0, sizeof(*opts));
}

const char *mc_backend_name(mc_backend backend) {
    switch (backend) {
        case MC_BACKEND_AUTO:
            return "auto";
        case MC_BACKEND_REF:
            return "ref";
        case MC_BACKEND_CPU:
            return "cpu";
        case MC_BACKEND_CUDA:
            return "cuda";
    }
    return "?";
}

mc_status mc_model_resolve_dir(const char *path, const char *revision, char **dir, mc_error *err) {
    if (dir == NULL) {
        return mc_fail(err, MC_ERR_INVALID, "model: dir is NULL");
    }
    *dir = NULL;
    if (path == NULL || path[0] == '\0') {
        return mc_fail(err, MC_ERR_INVALID, "model: empty path");
    }
    return mc_hub_resolve(path, revision, dir, err);
}

mc_status mc_model_load(const char *path, const mc_load_opts *opts, mc_model **out, mc_error *err) {
    if (out == NULL) {
        return mc_fail(err, MC_ERR_INVALID, "model: out is NULL");
    }
    *out = NULL;
    mc_model *m = calloc(1, sizeof(*m));
    if (m == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "model: out of memory");
    }
    mc_load_opts defaults;
    if (opts == NULL) {
        mc_load_opts_init(&defaults);
        opts = &defaults;
    }
    mc_status st = mc_model_setup_backend(m, opts, err);
    if (st == MC_OK) {
        st = mc_model_resolve_dir(path, opts->revision, &m->dir, err);
    }
    char *cfg_path = NULL;
    if (st == MC_OK) {
        cfg_path = mc_path_join(m->dir, "config.json");
        st = cfg_path != NULL ? mc_config_load(cfg_path, &m->cfg, err) : mc_fail(err, MC_ERR_NOMEM, "out of memory");
    }
    free(cfg_path);
    if (st == MC_OK) {
        st = open_weights(m, err);
    }
    if (st == MC_OK) {
        m->layers = calloc((size_t)m->cfg.num_hidden_layers, sizeof(mc_layer));
        st = m->layers != NULL ? bind_all(m, err) : mc_fail(err, MC_ERR_NOMEM, "%s: out of memory", m->dir);
    }
    if (st == MC_OK && opts->lora != NULL) {
        st = mc_model_apply_lora(m, opts->lora, err);
    }
    if (st == MC_OK) {
        st = mc_model_finish(m, opts, err);
    }
    if (st != MC_OK) {
        mc_model_free(m);
        return st;
    }
    *out = m;
    return MC_OK;
}

mc_status mc_model_finish(mc_model *m, const mc_load_opts *opts, mc_error *err) {
    mc_status st = mc_model_convert_weights(m, opts->weight_dtype, err);
    if (st != MC_OK) {
        return st;
    }
    const mc_config *c = &m->cfg;
    m->info.read_bytes_per_token = read_bytes_per_token(m);
    m->info.state_bytes = c->num_hidden_layers * c->intermediate_size * (c->conv_kernel + c->state_size) * 4;
    return mc_model_place(m, err);
}

void mc_model_free(mc_model *m) {
    if (m == NULL) {
        return;
    }
    mc_model_unplace(m);
    for (int64_t i = 0; i < m->n_owned; i++) {
        free(m->owned[i]);
    }
    free(m->owned);
    free(m->layers);
    mc_st_close(m->st);
    free(m->dir);
    free(m);
}

const mc_config *mc_model_config(const mc_model *m) {
    return &m->cfg;
}

mc_dtype mc_model_weight_dtype(const mc_model *m) {
    return (mc_dtype)m->layers[0].in_proj.dtype;
}

const char *mc_model_dir(const mc_model *m) {
    return m->dir;
}

void mc_model_get_info(const mc_model *m, mc_model_info *info) {
    *info = m->info;
    info->n_threads = m->n_threads;
    info->backend = m->ops->backend;
}

const char *mc_dtype_name(mc_dtype dtype) {
    switch (dtype) {
        case MC_DTYPE_F32:
            return "f32";
        case MC_DTYPE_F16:
            return "f16";
        case MC_DTYPE_BF16:
            return "bf16";
        case MC_DTYPE_I8:
            return "int8";
    }
    return "?";
}
