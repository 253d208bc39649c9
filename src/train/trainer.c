// The trainer: which tensors train (every weight, or LoRA adapters over a frozen model), one f32 block of their
// values and one of their gradients, the model view the forward reads, and the gradient dump of `mambac grad`.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/checked.h"
#include "base/error.h"
#include "base/rng.h"
#include "io/safetensors.h"
#include "kernels/dtype.h"
#include "train/optim.h"
#include "train/trainer.h"

// How a tensor's first values are made.
typedef enum init_kind { INIT_WEIGHT, INIT_F32, INIT_UNIFORM, INIT_NORMAL, INIT_ZERO } init_kind;

typedef struct init_src {
    init_kind kind;
    const mc_weight *w; // INIT_WEIGHT: a matrix of any dtype
    const float *f;     // INIT_F32
    double bound;       // INIT_UNIFORM: U(−bound, bound); INIT_NORMAL: N(0, bound²)
} init_src;

typedef struct builder {
    mc_trainer *t;
    init_src *init; // [n_tensors]
    int64_t cap;
} builder;

// Registers a tensor; its offset follows the previous one's. Returns its index, or −1 when out of memory.
static int64_t add_tensor(builder *b, const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2, init_src src,
                          bool transposed) {
    mc_trainer *t = b->t;
    if (t->n_tensors == b->cap) {
        int64_t cap = b->cap > 0 ? 2 * b->cap : 64;
        tensor_entry *te = realloc(t->tensors, (size_t)cap * sizeof(*te));
        init_src *is = te != NULL ? realloc(b->init, (size_t)cap * sizeof(*is)) : NULL;
        if (te != NULL) {
            t->tensors = te;
        }
        if (is == NULL) {
            return -1;
        }
        b->init = is;
        b->cap = cap;
    }
    tensor_entry *e = &t->tensors[t->n_tensors];
    memset(e, 0, sizeof(*e));
    snprintf(e->name, sizeof(e->name), "%s", name);
    e->ndim = ndim;
    e->shape[0] = d0;
    e->shape[1] = d1;
    e->shape[2] = d2;
    e->numel = d0 * (ndim > 1 ? d1 : 1) * (ndim > 2 ? d2 : 1);
    e->offset = t->n_params;
    e->decay = mc_optim_name_decays(name);
    e->transposed = transposed;
    t->n_params += e->numel;
    b->init[t->n_tensors] = src;
    return t->n_tensors++;
}

static init_src from_weight(const mc_weight *w) {
    return (init_src){ .kind = INIT_WEIGHT, .w = w };
}

static init_src from_f32(const float *f) {
    return (init_src){ .kind = INIT_F32, .f = f };
}

// The HF name of a layer tensor.
static const char *layer_name(char *buf, size_t cap, int64_t i, const char *suffix) {
    snprintf(buf, cap, "backbone.layers.%lld.%s", (long long)i, suffix);
    return buf;
}

// Registers every weight of the model (full training), in the order of the HF state dict.
static bool register_full(builder *b) {
    const mc_model *m = b->t->base;
    const mc_config *c = &m->cfg;
    const int64_t H = c->hidden_size, E = c->intermediate_size, N = c->state_size, R = c->time_step_rank,
                  K = c->conv_kernel, V = c->vocab_size;
    char nm[160];
    bool ok = add_tensor(b, "backbone.embeddings.weight", 2, V, H, 0, from_weight(&m->embed), false) >= 0;
    for (int64_t i = 0; ok && i < c->num_hidden_layers; i++) {
        const mc_layer *l = &m->layers[i];
        ok = add_tensor(b, layer_name(nm, sizeof(nm), i, "norm.weight"), 1, H, 0, 0, from_f32(l->norm), false) >= 0 &&
             add_tensor(b, layer_name(nm, sizeof(nm), i, "mixer.in_proj.weight"), 2, 2 * E, H, 0,
                        from_weight(&l->in_proj), false) >= 0 &&
             (l->in_bias == NULL || add_tensor(b, layer_name(nm, sizeof(nm), i, "mixer.in_proj.bias"), 1, 2 * E, 0, 0,
                                               from_f32(l->in_bias), false) >= 0) &&
             add_tensor(b, layer_name(nm, sizeof(nm), i, "mixer.conv1d.weight"), 3, E, 1, K, from_f32(l->conv_w),
                        false) >= 0 &&
             (l->conv_b == NULL || add_tensor(b, layer_name(nm, sizeof(nm), i, "mixer.conv1d.bias"), 1, E, 0, 0,
                                              from_f32(l->conv_b), false) >= 0) &&
             add_tensor(b, layer_name(nm, sizeof(nm), i, "mixer.x_proj.weight"), 2, R + 2 * N, E, 0,
                        from_weight(&l->x_proj), false) >= 0 &&
             add_tensor(b, layer_name(nm, sizeof(nm), i, "mixer.dt_proj.weight"), 2, E, R, 0,
                        from_weight(&l->dt_proj), false) >= 0 &&
             add_tensor(b, layer_name(nm, sizeof(nm), i, "mixer.dt_proj.bias"), 1, E, 0, 0, from_f32(l->dt_bias),
                        false) >= 0 &&
             add_tensor(b, layer_name(nm, sizeof(nm), i, "mixer.A_log"), 2, E, N, 0, from_f32(l->A_log), false) >= 0 &&
             add_tensor(b, layer_name(nm, sizeof(nm), i, "mixer.D"), 1, E, 0, 0, from_f32(l->D), false) >= 0 &&
             add_tensor(b, layer_name(nm, sizeof(nm), i, "mixer.out_proj.weight"), 2, H, E, 0,
                        from_weight(&l->out_proj), false) >= 0 &&
             (l->out_bias == NULL || add_tensor(b, layer_name(nm, sizeof(nm), i, "mixer.out_proj.bias"), 1, H, 0, 0,
                                                from_f32(l->out_bias), false) >= 0);
    }
    ok = ok && add_tensor(b, "backbone.norm_f.weight", 1, H, 0, 0, from_f32(m->norm_f), false) >= 0;
    if (ok && !c->tie_word_embeddings) {
        ok = add_tensor(b, "lm_head.weight", 2, V, H, 0, from_weight(&m->lm_head), false) >= 0;
    }
    return ok;
}

static const char *const site_names[SITE_COUNT] = { "in_proj", "x_proj", "out_proj" };

// Registers the adapters (PEFT's key names, spec §8.6) with PEFT's default initialisation.
static bool register_lora(builder *b) {
    const mc_trainer *t = b->t;
    const mc_config *c = &t->base->cfg;
    const int64_t H = c->hidden_size, E = c->intermediate_size, RN = c->time_step_rank + 2 * c->state_size,
                  V = c->vocab_size, r = t->spec.r;
    const unsigned bits[SITE_COUNT] = { MC_LORA_IN_PROJ, MC_LORA_X_PROJ, MC_LORA_OUT_PROJ };
    const int64_t in[SITE_COUNT] = { H, E, E }, out[SITE_COUNT] = { 2 * E, RN, H };
    char nm[160];
    bool ok = true;
    if (t->spec.targets & MC_LORA_EMBEDDINGS) { // A = 0, B ~ N(0, 1) (reversed relative to Linear)
        ok = add_tensor(b, "base_model.model.backbone.embeddings.lora_embedding_A", 2, r, V, 0,
                        (init_src){ .kind = INIT_ZERO }, true) >= 0 &&
             add_tensor(b, "base_model.model.backbone.embeddings.lora_embedding_B", 2, H, r, 0,
                        (init_src){ .kind = INIT_NORMAL, .bound = 1.0 }, false) >= 0;
    }
    for (int64_t i = 0; ok && i < c->num_hidden_layers; i++) {
        for (int s = 0; ok && s < SITE_COUNT; s++) {
            if (!(t->spec.targets & bits[s])) {
                continue;
            }
            snprintf(nm, sizeof(nm), "base_model.model.backbone.layers.%lld.mixer.%s.lora_A.weight", (long long)i,
                     site_names[s]);
            // kaiming_uniform(a = √5) on [r, in]: U(−1/√in, 1/√in).
            ok = add_tensor(b, nm, 2, r, in[s], 0, (init_src){ .kind = INIT_UNIFORM, .bound = 1.0 / sqrt((double)in[s]) },
                            false) >= 0;
            snprintf(nm, sizeof(nm), "base_model.model.backbone.layers.%lld.mixer.%s.lora_B.weight", (long long)i,
                     site_names[s]);
            ok = ok && add_tensor(b, nm, 2, out[s], r, 0, (init_src){ .kind = INIT_ZERO }, false) >= 0;
        }
        // Trainable biases (PEFT bias="all": every bias; "lora_only": those of adapted modules), named as PEFT
        // saves them: a wrapped module's own bias is "<module>.base_layer.bias".
        const mc_layer *l = &t->base->layers[i];
        const struct {
            const float *v;
            const char *module;
            int64_t n;
            unsigned site;
        } biases[4] = { { l->in_bias, "in_proj", 2 * E, MC_LORA_IN_PROJ },
                        { l->conv_b, "conv1d", E, 0 },
                        { l->dt_bias, "dt_proj", E, 0 },
                        { l->out_bias, "out_proj", H, MC_LORA_OUT_PROJ } };
        for (int k = 0; ok && k < 4; k++) {
            const bool adapted = (t->spec.targets & biases[k].site) != 0;
            if (biases[k].v == NULL || t->spec.bias == MC_LORA_BIAS_NONE ||
                (t->spec.bias == MC_LORA_BIAS_LORA_ONLY && !adapted)) {
                continue;
            }
            snprintf(nm, sizeof(nm), "base_model.model.backbone.layers.%lld.mixer.%s.%sbias", (long long)i,
                     biases[k].module, adapted ? "base_layer." : "");
            ok = add_tensor(b, nm, 1, biases[k].n, 0, 0, from_f32(biases[k].v), false) >= 0;
        }
    }
    return ok;
}

// Fills tensor i's values on the host (dst: numel floats).
static void init_values(const tensor_entry *e, const init_src *src, mc_rng *rng, float *dst) {
    switch (src->kind) {
        case INIT_WEIGHT:
            for (int64_t r = 0; r < src->w->rows; r++) {
                for (int64_t k = 0; k < src->w->cols; k++) {
                    dst[r * src->w->cols + k] = mc_weight_at(src->w, r, k);
                }
            }
            break;
        case INIT_F32:
            memcpy(dst, src->f, (size_t)e->numel * sizeof(float));
            break;
        case INIT_UNIFORM:
            for (int64_t j = 0; j < e->numel; j++) {
                dst[j] = (float)((2.0 * mc_rng_uniform(rng) - 1.0) * src->bound);
            }
            break;
        case INIT_NORMAL:
            for (int64_t j = 0; j < e->numel; j++) {
                dst[j] = (float)(mc_rng_normal(rng) * src->bound);
            }
            break;
        case INIT_ZERO:
            memset(dst, 0, (size_t)e->numel * sizeof(float));
            break;
    }
}

// init_values for a model whose weights live in a device backend's memory: the source is downloaded first.
static mc_status init_values_on(mc_trainer *t, const tensor_entry *e, const init_src *src, mc_rng *rng, float *dst,
                                mc_error *err) {
    if (t->ops->host_memory || (src->kind != INIT_WEIGHT && src->kind != INIT_F32)) {
        init_values(e, src, rng, dst);
        return MC_OK;
    }
    mc_exec ex = t->exec;
    ex.err = err;
    if (src->kind == INIT_F32) {
        return t->ops->download(&ex, dst, src->f, (size_t)e->numel * sizeof(float));
    }
    const mc_weight *w = src->w;
    const size_t bytes = (size_t)(w->rows * w->cols * mc_dtype_size(w->dtype));
    const size_t scale_bytes = w->dtype == MC_DTYPE_I8 ? (size_t)(w->rows * ((w->cols + w->group - 1) / w->group)) *
                                                             sizeof(float)
                                                       : 0;
    void *data = malloc(bytes > 0 ? bytes : 1);
    float *scales = scale_bytes > 0 ? malloc(scale_bytes) : NULL;
    mc_status st = data != NULL && (scale_bytes == 0 || scales != NULL)
                       ? t->ops->download(&ex, data, w->data, bytes)
                       : mc_fail(err, MC_ERR_NOMEM, "trainer: out of memory for %s", e->name);
    if (st == MC_OK && scales != NULL) st = t->ops->download(&ex, scales, w->scales, scale_bytes);
    if (st == MC_OK) {
        mc_weight host = *w;
        host.data = data;
        host.scales = scales;
        const init_src hs = { .kind = INIT_WEIGHT, .w = &host };
        init_values(e, &hs, rng, dst);
    }
    free(data);
    free(scales);
    return st;
}

static mc_weight f32_view(const float *data, int64_t rows, int64_t cols) {
    return (mc_weight){ .data = data, .dtype = MC_DTYPE_F32, .rows = rows, .cols = cols };
}

// Points the view's weights (full training) or the adapters (LoRA) into the blocks, walking the registry in the
// order it was built.
static void bind_views(mc_trainer *t) {
    const mc_config *c = &t->base->cfg;
    const int64_t H = c->hidden_size, E = c->intermediate_size, N = c->state_size, R = c->time_step_rank,
                  V = c->vocab_size, RN = R + 2 * N;
    int64_t k = 0;
#define NEXT_V() (t->params + t->tensors[k].offset)
#define NEXT_G() (t->grads + t->tensors[k++].offset)
    if (!t->lora) {
        t->view.embed = f32_view(NEXT_V(), V, H);
        t->g_embed = NEXT_G();
        for (int64_t i = 0; i < c->num_hidden_layers; i++) {
            mc_layer *l = &t->layers[i];
            layer_grads *g = &t->lg[i];
            l->norm = NEXT_V();
            g->norm = NEXT_G();
            l->in_proj = f32_view(NEXT_V(), 2 * E, H);
            g->in_proj = NEXT_G();
            if (l->in_bias != NULL) {
                l->in_bias = NEXT_V();
                g->in_bias = NEXT_G();
            }
            l->conv_w = NEXT_V();
            g->conv_w = NEXT_G();
            if (l->conv_b != NULL) {
                l->conv_b = NEXT_V();
                g->conv_b = NEXT_G();
            }
            l->x_proj = f32_view(NEXT_V(), RN, E);
            g->x_proj = NEXT_G();
            l->dt_proj = f32_view(NEXT_V(), E, R);
            g->dt_proj = NEXT_G();
            l->dt_bias = NEXT_V();
            g->dt_bias = NEXT_G();
            l->A_log = NEXT_V();
            g->A_log = NEXT_G();
            l->D = NEXT_V();
            g->D = NEXT_G();
            l->out_proj = f32_view(NEXT_V(), H, E);
            g->out_proj = NEXT_G();
            if (l->out_bias != NULL) {
                l->out_bias = NEXT_V();
                g->out_bias = NEXT_G();
            }
            l->A = t->A + i * E * N;
        }
        t->view.norm_f = NEXT_V();
        t->g_norm_f = NEXT_G();
        if (c->tie_word_embeddings) {
            t->view.lm_head = t->view.embed;
            t->g_head = t->g_embed;
        } else {
            t->view.lm_head = f32_view(NEXT_V(), V, H);
            t->g_head = NEXT_G();
        }
        return;
    }
    const int64_t r = t->spec.r;
    const int64_t in[SITE_COUNT] = { H, E, E }, out[SITE_COUNT] = { 2 * E, RN, H };
    const unsigned bits[SITE_COUNT] = { MC_LORA_IN_PROJ, MC_LORA_X_PROJ, MC_LORA_OUT_PROJ };
    if (t->spec.targets & MC_LORA_EMBEDDINGS) {
        t->emb_on = true;
        t->emb_AT = f32_view(NEXT_V(), V, r);
        t->g_emb_AT = NEXT_G();
        t->emb_B = f32_view(NEXT_V(), H, r);
        t->g_emb_B = NEXT_G();
    }
    for (int64_t i = 0; i < c->num_hidden_layers; i++) {
        for (int s = 0; s < SITE_COUNT; s++) {
            lora_lin *ll = &t->sites[i][s];
            if (!(t->spec.targets & bits[s])) {
                continue;
            }
            ll->on = true;
            ll->A = f32_view(NEXT_V(), r, in[s]);
            ll->gA = NEXT_G();
            ll->B = f32_view(NEXT_V(), out[s], r);
            ll->gB = NEXT_G();
        }
        // The biases register_lora made trainable, in its order.
        mc_layer *l = &t->layers[i];
        layer_grads *g = &t->lg[i];
        const float **views[4] = { &l->in_bias, &l->conv_b, &l->dt_bias, &l->out_bias };
        float **grads[4] = { &g->in_bias, &g->conv_b, &g->dt_bias, &g->out_bias };
        const char *const modules[4] = { "in_proj", "conv1d", "dt_proj", "out_proj" };
        for (int b = 0; b < 4; b++) {
            char prefix[128];
            snprintf(prefix, sizeof(prefix), "base_model.model.backbone.layers.%lld.mixer.%s.", (long long)i,
                     modules[b]);
            if (k < t->n_tensors && strncmp(t->tensors[k].name, prefix, strlen(prefix)) == 0) {
                *views[b] = NEXT_V();
                *grads[b] = NEXT_G();
            }
        }
    }
#undef NEXT_V
#undef NEXT_G
}

mc_status mc_trainer_values_changed(mc_trainer *t, mc_error *err) {
    if (t->lora) {
        return MC_OK;
    }
    const mc_config *c = &t->base->cfg;
    const int64_t EN = c->intermediate_size * c->state_size;
    mc_exec ex = t->exec;
    ex.err = err;
    mc_status st = MC_OK;
    for (int64_t i = 0; st == MC_OK && i < c->num_hidden_layers; i++) { // as mc_model_derive_A computes it
        st = t->ops->neg_exp(&ex, t->A + i * EN, t->layers[i].A_log, EN);
    }
    return st;
}

static mc_status freeze_weight(mc_trainer *t, const mc_weight *w) {
    return w->dtype == MC_DTYPE_F32 && w->data != NULL
               ? t->ops->freeze(&t->exec, w->data, (size_t)(w->rows * w->cols) * sizeof(float))
               : MC_OK;
}

// A LoRA run never changes the base model's matrices, so the backend may keep what it derives from them (ops.h's
// freeze; the CUDA backend's converted product operands).
static mc_status freeze_base(mc_trainer *t) {
    if (t->ops->freeze == NULL) {
        return MC_OK;
    }
    const mc_model *m = &t->view;
    mc_status st = freeze_weight(t, &m->embed);
    if (st == MC_OK && m->lm_head.data != m->embed.data) { // untied
        st = freeze_weight(t, &m->lm_head);
    }
    for (int64_t l = 0; st == MC_OK && l < m->cfg.num_hidden_layers; l++) {
        const mc_layer *y = &m->layers[l];
        st = freeze_weight(t, &y->in_proj);
        if (st == MC_OK) st = freeze_weight(t, &y->x_proj);
        if (st == MC_OK) st = freeze_weight(t, &y->dt_proj);
        if (st == MC_OK) st = freeze_weight(t, &y->out_proj);
    }
    return st;
}

static mc_status check_spec(const mc_lora_spec *s, mc_error *err) {
    if (s->r < 1 || s->r > 65536) {
        return mc_fail(err, MC_ERR_INVALID, "lora: rank r = %d must be in [1, 65536]", s->r);
    }
    if (!(s->alpha > 0) || !isfinite(s->alpha)) {
        return mc_fail(err, MC_ERR_INVALID, "lora: alpha %g must be a positive number", s->alpha);
    }
    if ((s->targets & ~(unsigned)(MC_LORA_EMBEDDINGS | MC_LORA_IN_PROJ | MC_LORA_X_PROJ | MC_LORA_OUT_PROJ)) != 0 ||
        s->targets == 0) {
        return mc_fail(err, MC_ERR_INVALID, "lora: targets must name at least one of embeddings, in_proj, x_proj, "
                                            "out_proj");
    }
    if (!(s->dropout >= 0 && s->dropout < 1)) {
        return mc_fail(err, MC_ERR_INVALID, "lora: dropout %g must be in [0, 1)", s->dropout);
    }
    if (s->bias != MC_LORA_BIAS_NONE && s->bias != MC_LORA_BIAS_ALL && s->bias != MC_LORA_BIAS_LORA_ONLY) {
        return mc_fail(err, MC_ERR_INVALID, "lora: bias mode %d is not none, all or lora_only", (int)s->bias);
    }
    return MC_OK;
}

mc_status mc_trainer_new(const mc_model *model, const mc_lora_spec *lora, uint64_t seed, mc_trainer **out,
                         mc_error *err) {
    if (out == NULL) {
        return mc_fail(err, MC_ERR_INVALID, "trainer: out is NULL");
    }
    *out = NULL;
    if (model == NULL) {
        return mc_fail(err, MC_ERR_INVALID, "trainer: model is NULL");
    }
    if (lora != NULL) {
        mc_status st = check_spec(lora, err);
        if (st != MC_OK) {
            return st;
        }
    }
    const mc_ops *ops = model->ops;
    if (ops->matmul_dx == NULL || ops->matmul_dw == NULL || ops->embed_bwd == NULL || ops->rmsnorm_bwd == NULL ||
        ops->conv1d_bwd == NULL || ops->selective_scan_bwd == NULL || ops->cross_entropy == NULL ||
        ops->axpby == NULL || ops->mul_acc == NULL || ops->dropout == NULL || ops->sumsq == NULL || ops->adamw == NULL ||
        ops->neg_exp == NULL) {
        return mc_fail(err, MC_ERR_UNSUPPORTED, "train: the %s backend has no backward kernels yet; train with "
                                                "--backend cpu", ops->name);
    }
    const mc_config *c = &model->cfg;
    mc_trainer *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "trainer: out of memory");
    }
    t->base = model;
    t->ops = model->ops;
    t->view = *model;
    t->lora = lora != NULL;
    t->dropout_seed = seed;
    if (lora != NULL) {
        t->spec = *lora;
        t->lora_scale = (float)(lora->use_rslora ? lora->alpha / sqrt((double)lora->r) : lora->alpha / lora->r);
    }
    const int64_t NL = c->num_hidden_layers, EN = c->intermediate_size * c->state_size;
    t->layers = malloc((size_t)NL * sizeof(*t->layers));
    t->lg = calloc((size_t)NL, sizeof(*t->lg));
    t->sites = calloc((size_t)NL, sizeof(*t->sites));
    mc_status st = t->layers != NULL && t->lg != NULL && t->sites != NULL
                       ? t->ops->exec_init(&t->exec, model->n_threads, err)
                       : mc_fail(err, MC_ERR_NOMEM, "trainer: out of memory");
    if (st != MC_OK) {
        mc_trainer_free(t);
        return st;
    }
    t->exec.math = model->math; // the load's precision until mc_trainer_set_precision
    memcpy(t->layers, model->layers, (size_t)NL * sizeof(*t->layers));
    t->view.layers = t->layers;
    builder b = { .t = t };
    if (!(t->lora ? register_lora(&b) : register_full(&b))) {
        free(b.init);
        mc_trainer_free(t);
        return mc_fail(err, MC_ERR_NOMEM, "trainer: out of memory");
    }
    // Values (staged on the host, then uploaded), zero gradients, A, and the sink for frozen small gradients.
    const int64_t junk = c->hidden_size + c->intermediate_size * (c->conv_kernel + 3) + EN;
    t->exec.err = err;
    st = t->ops->alloc(&t->exec, (void **)&t->params, (size_t)t->n_params * sizeof(float));
    if (st == MC_OK) st = t->ops->alloc(&t->exec, (void **)&t->grads, (size_t)t->n_params * sizeof(float));
    if (st == MC_OK) st = t->ops->alloc(&t->exec, (void **)&t->A, (size_t)(NL * EN) * sizeof(float));
    if (st == MC_OK) st = t->ops->alloc(&t->exec, (void **)&t->junk, (size_t)junk * sizeof(float));
    mc_rng rng;
    mc_rng_seed(&rng, seed);
    for (int64_t i = 0; st == MC_OK && i < t->n_tensors; i++) {
        const tensor_entry *e = &t->tensors[i];
        float *host = malloc((size_t)e->numel * sizeof(float));
        if (host == NULL) {
            st = mc_fail(err, MC_ERR_NOMEM, "trainer: out of memory for %s", e->name);
            break;
        }
        st = init_values_on(t, e, &b.init[i], &rng, host, err);
        if (st == MC_OK) st = t->ops->upload(&t->exec, t->params + e->offset, host, (size_t)e->numel * sizeof(float));
        free(host);
    }
    t->exec.err = NULL;
    free(b.init);
    if (st == MC_OK) {
        bind_views(t);
        st = mc_trainer_values_changed(t, err);
    }
    if (st == MC_OK && t->lora) {
        t->exec.err = err;
        st = freeze_base(t);
        t->exec.err = NULL;
    }
    if (st != MC_OK) {
        mc_trainer_free(t);
        return st;
    }
    *out = t;
    return MC_OK;
}

void mc_trainer_free(mc_trainer *t) {
    if (t == NULL) {
        return;
    }
    if (t->ops != NULL) {
        t->ops->free(&t->exec, t->params);
        t->ops->free(&t->exec, t->grads);
        t->ops->free(&t->exec, t->A);
        t->ops->free(&t->exec, t->junk);
        t->ops->free(&t->exec, t->act);
        mc_trainer_set_carry(t, 0, NULL);
        t->ops->exec_free(&t->exec);
    }
    free(t->host_params);
    free(t->host_grads);
    free(t->tensors);
    free(t->layers);
    free(t->lg);
    free(t->sites);
    free(t);
}

int64_t mc_trainer_n_tensors(const mc_trainer *t) {
    return t->n_tensors;
}

void mc_trainer_tensor(const mc_trainer *t, int64_t i, mc_train_tensor *out) {
    if (t == NULL || i < 0 || i >= t->n_tensors) { // no status to return: an index out of range gives an empty tensor
        *out = (mc_train_tensor){ 0 };
        return;
    }
    const tensor_entry *e = &t->tensors[i];
    *out = (mc_train_tensor){ .name = e->name,
                              .ndim = e->ndim,
                              .shape = { e->shape[0], e->shape[1], e->shape[2] },
                              .numel = e->numel,
                              .value = t->params + e->offset,
                              .grad = t->grads + e->offset,
                              .decay = e->decay,
                              .transposed = e->transposed };
}

void mc_trainer_zero_grad(mc_trainer *t) {
    t->ops->zero(&t->exec, t->grads, (size_t)t->n_params * sizeof(float));
}

mc_status mc_trainer_grad(mc_trainer *t, const int32_t *ids, const int32_t *labels, int64_t n_seq, int64_t n_tok,
                          double scale, double *nll_sum, int64_t *n_targets, mc_error *err) {
    if (t == NULL || ids == NULL || labels == NULL || nll_sum == NULL || n_targets == NULL) {
        return mc_fail(err, MC_ERR_INVALID, "train: trainer, ids, labels, nll_sum and n_targets must be given");
    }
    *nll_sum = 0;
    *n_targets = 0;
    if (!isfinite(scale)) { // it multiplies every gradient: NaN or inf would poison them all silently
        return mc_fail(err, MC_ERR_INVALID, "train: gradient scale %g is not a finite number", scale);
    }
    const int64_t V = t->base->cfg.vocab_size;
    int64_t n = 0;
    if (t->carry_rows > 0 && n_seq != t->carry_rows) {
        return mc_fail(err, MC_ERR_INVALID, "train: a batch of %lld sequences, but the carried state has %lld rows",
                       (long long)n_seq, (long long)t->carry_rows);
    }
    if (n_seq < 1 || n_tok < 1 || !mc_mul_i64(n_seq, n_tok, &n) || n > ((int64_t)1 << 31)) {
        return mc_fail(err, MC_ERR_INVALID, "train: a batch of %lld x %lld tokens is empty or too large",
                       (long long)n_seq, (long long)n_tok);
    }
    for (int64_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= V) {
            return mc_fail(err, MC_ERR_INVALID, "token id %d (sequence %lld, position %lld) is outside the vocabulary "
                                                "[0, %lld)", ids[i], (long long)(i / n_tok), (long long)(i % n_tok),
                           (long long)V);
        }
        if (labels[i] != -100 && (labels[i] < 0 || labels[i] >= V)) {
            return mc_fail(err, MC_ERR_INVALID, "label %d (sequence %lld, position %lld) is neither -100 nor in "
                                                "[0, %lld)", labels[i], (long long)(i / n_tok), (long long)(i % n_tok),
                           (long long)V);
        }
    }
    int32_t *targets = malloc((size_t)n * sizeof(int32_t));
    if (targets == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "train: out of memory for %lld targets", (long long)n);
    }
    for (int64_t i = 0; i < n; i++) { // position t predicts label t + 1; the last position predicts nothing
        targets[i] = i % n_tok + 1 < n_tok ? labels[i + 1] : -100;
    }
    t->exec.err = err;
    mc_status st = mc_trainer_run(t, ids, targets, n_seq, n_tok, scale, nll_sum, n_targets);
    t->exec.err = NULL;
    free(targets);
    return st;
}

mc_status mc_trainer_write_tensors(const mc_trainer *t, const char *path, bool grads, double loss, mc_error *err) {
    mc_st_entry *entries = calloc((size_t)t->n_tensors + 1, sizeof(*entries));
    float **bufs = calloc((size_t)t->n_tensors + 1, sizeof(*bufs));
    float loss_f = (float)loss;
    mc_status st = entries != NULL && bufs != NULL ? MC_OK : mc_fail(err, MC_ERR_NOMEM, "grads: out of memory");
    mc_exec ex = t->exec;
    ex.err = err;
    for (int64_t i = 0; st == MC_OK && i < t->n_tensors; i++) {
        const tensor_entry *e = &t->tensors[i];
        float *host = malloc((size_t)e->numel * sizeof(float));
        bufs[i] = malloc((size_t)e->numel * sizeof(float));
        if (host == NULL || bufs[i] == NULL) {
            free(host);
            st = mc_fail(err, MC_ERR_NOMEM, "grads: out of memory for %s", e->name);
            break;
        }
        st = t->ops->download(&ex, host, (grads ? t->grads : t->params) + e->offset, (size_t)e->numel * sizeof(float));
        if (e->transposed) { // held [shape[1], shape[0]]
            for (int64_t a = 0; a < e->shape[0]; a++) {
                for (int64_t b = 0; b < e->shape[1]; b++) {
                    bufs[i][a * e->shape[1] + b] = host[b * e->shape[0] + a];
                }
            }
        } else {
            memcpy(bufs[i], host, (size_t)e->numel * sizeof(float));
        }
        free(host);
        entries[i] = (mc_st_entry){ .name = e->name, .dtype = "F32", .ndim = e->ndim, .data = bufs[i],
                                    .nbytes = e->numel * (int64_t)sizeof(float) };
        for (int d = 0; d < e->ndim; d++) {
            entries[i].shape[d] = e->shape[d];
        }
    }
    if (st == MC_OK) {
        const bool with_loss = !isnan(loss);
        entries[t->n_tensors] = (mc_st_entry){ .name = "loss", .dtype = "F32", .ndim = 1, .shape = { 1 },
                                               .data = &loss_f, .nbytes = (int64_t)sizeof(float) };
        st = mc_st_write(path, entries, t->n_tensors + (with_loss ? 1 : 0), err);
    }
    for (int64_t i = 0; bufs != NULL && i < t->n_tensors; i++) {
        free(bufs[i]);
    }
    free(bufs);
    free(entries);
    return st;
}

// name with PEFT's "<module>.base_layer.<rest>" spelling read as "<module>.<rest>".
static void canonical(char *out, size_t cap, const char *name) {
    const char *base = strstr(name, ".base_layer.");
    if (base != NULL) {
        snprintf(out, cap, "%.*s.%s", (int)(base - name), name, base + strlen(".base_layer."));
    } else {
        snprintf(out, cap, "%s", name);
    }
}

// The registry index of name, or −1.
static int64_t find_tensor(const mc_trainer *t, const char *name) {
    char want[192], have[192];
    canonical(want, sizeof(want), name);
    for (int64_t i = 0; i < t->n_tensors; i++) {
        canonical(have, sizeof(have), t->tensors[i].name);
        if (strcmp(have, want) == 0) {
            return i;
        }
    }
    return -1;
}

mc_status mc_trainer_load_tensors(mc_trainer *t, const char *path, bool require_all, int64_t *n_loaded,
                                  mc_error *err) {
    *n_loaded = 0;
    mc_st_set *set = NULL;
    mc_status st = mc_st_open(path, &set, err);
    if (st != MC_OK) {
        return st;
    }
    bool *seen = calloc((size_t)t->n_tensors + 1, sizeof(bool));
    st = seen != NULL ? MC_OK : mc_fail(err, MC_ERR_NOMEM, "%s: out of memory", path);
    mc_exec ex = t->exec;
    ex.err = err;
    for (int64_t i = 0; st == MC_OK && i < mc_st_count(set); i++) {
        const mc_st_tensor *f = mc_st_at(set, i);
        const int64_t k = find_tensor(t, f->name);
        char name[96];
        mc_escape(name, sizeof(name), f->name, strlen(f->name));
        if (k < 0) {
            st = mc_fail(err, MC_ERR_FORMAT, "%s: tensor %s is not a trainable tensor of this model and setup", path,
                         name);
            break;
        }
        const tensor_entry *e = &t->tensors[k];
        bool fits = f->ndim == e->ndim && (f->dtype == MC_DTYPE_F32 || f->dtype == MC_DTYPE_F16 ||
                                           f->dtype == MC_DTYPE_BF16);
        for (int d = 0; fits && d < e->ndim; d++) {
            fits = f->shape[d] == e->shape[d];
        }
        if (!fits) {
            char want[64], got[64];
            mc_st_shape_format(want, sizeof(want), e->shape, e->ndim);
            mc_st_shape_format(got, sizeof(got), f->shape, f->ndim);
            st = mc_fail(err, MC_ERR_FORMAT, "%s: tensor %s is %s %s, the model needs F32/F16/BF16 %s", path, name,
                         f->dtype_name, got, want);
            break;
        }
        float *host = malloc((size_t)e->numel * sizeof(float));
        if (host == NULL) {
            st = mc_fail(err, MC_ERR_NOMEM, "%s: out of memory", path);
            break;
        }
        for (int64_t j = 0; j < e->numel; j++) {
            float v;
            if (f->dtype == MC_DTYPE_F32) {
                memcpy(&v, (const char *)f->data + 4 * j, 4);
            } else {
                uint16_t h;
                memcpy(&h, (const char *)f->data + 2 * j, 2);
                v = f->dtype == MC_DTYPE_F16 ? mc_f16_to_f32(h) : mc_bf16_to_f32(h);
            }
            if (e->transposed) { // file [s0, s1], held [s1, s0]
                host[(j % e->shape[1]) * e->shape[0] + j / e->shape[1]] = v;
            } else {
                host[j] = v;
            }
        }
        st = t->ops->upload(&ex, t->params + e->offset, host, (size_t)e->numel * sizeof(float));
        free(host);
        seen[k] = true;
        ++*n_loaded;
    }
    for (int64_t k = 0; st == MC_OK && require_all && k < t->n_tensors; k++) {
        if (!seen[k]) {
            st = mc_fail(err, MC_ERR_FORMAT, "%s: tensor %s is missing", path, t->tensors[k].name);
        }
    }
    free(seen);
    mc_st_close(set);
    t->host_params_stale = true;
    return st == MC_OK ? mc_trainer_values_changed(t, err) : st;
}

mc_status mc_trainer_save_grads(const mc_trainer *t, const char *path, double loss, mc_error *err) {
    return mc_trainer_write_tensors(t, path, true, loss, err);
}

void mc_trainer_set_dropout_stream(mc_trainer *t, uint64_t stream) {
    t->dropout_stream = stream;
}

void mc_trainer_set_precision(mc_trainer *t, mc_precision p) {
    if (t == NULL) {
        return;
    }
    t->exec.math = mc_math_of(p);
}

mc_status mc_trainer_set_carry(mc_trainer *t, int64_t n_seq, mc_error *err) {
    if (n_seq > (1 << 20)) { // mc_state_new's bound, which keeps the sizes below far from overflow; checked before
                             // anything changes, so a refused call leaves the carried state as it was
        return mc_fail(err, MC_ERR_INVALID, "train: carried state for %lld sequences, at most %d", (long long)n_seq,
                       1 << 20);
    }
    float **bufs[4] = { &t->carry_conv, &t->carry_ssm, &t->next_conv, &t->next_ssm };
    for (int i = 0; i < 4; i++) {
        t->ops->free(&t->exec, *bufs[i]);
        *bufs[i] = NULL;
    }
    t->carry_rows = 0;
    if (n_seq <= 0) {
        return MC_OK;
    }
    const mc_config *c = &t->base->cfg;
    const int64_t per = c->num_hidden_layers * n_seq * c->intermediate_size;
    mc_exec ex = t->exec;
    ex.err = err;
    for (int i = 0; i < 4; i++) {
        const int64_t n = per * (i % 2 == 0 ? c->conv_kernel : c->state_size);
        mc_status st = t->ops->alloc(&ex, (void **)bufs[i], (size_t)n * sizeof(float));
        if (st != MC_OK) {
            mc_trainer_set_carry(t, 0, NULL);
            return st;
        }
    }
    t->carry_rows = n_seq;
    return MC_OK;
}

int64_t mc_trainer_carry_floats(const mc_trainer *t, float **conv, float **ssm, int64_t *n_conv, int64_t *n_ssm) {
    const mc_config *c = &t->base->cfg;
    const int64_t per = c->num_hidden_layers * t->carry_rows * c->intermediate_size;
    *conv = t->carry_conv;
    *ssm = t->carry_ssm;
    *n_conv = per * c->conv_kernel;
    *n_ssm = per * c->state_size;
    return t->carry_rows;
}

mc_status mc_trainer_host_blocks(mc_trainer *t, float **values, float **grads, mc_error *err) {
    if (t->ops->host_memory) {
        *values = t->params;
        *grads = t->grads;
        return MC_OK;
    }
    const size_t bytes = (size_t)t->n_params * sizeof(float);
    if (t->host_params == NULL) {
        t->host_params = malloc(bytes > 0 ? bytes : 1);
        t->host_grads = malloc(bytes > 0 ? bytes : 1);
        t->host_params_stale = true;
        if (t->host_params == NULL || t->host_grads == NULL) {
            return mc_fail(err, MC_ERR_NOMEM, "train: out of memory for host copies of %lld parameters",
                           (long long)t->n_params);
        }
    }
    mc_exec ex = t->exec;
    ex.err = err;
    mc_status st = t->host_params_stale ? t->ops->download(&ex, t->host_params, t->params, bytes) : MC_OK;
    t->host_params_stale = st != MC_OK;
    if (st == MC_OK) st = t->ops->download(&ex, t->host_grads, t->grads, bytes);
    *values = t->host_params;
    *grads = t->host_grads;
    return st;
}

mc_status mc_trainer_host_values_changed(mc_trainer *t, mc_error *err) {
    if (!t->ops->host_memory) {
        mc_exec ex = t->exec;
        ex.err = err;
        mc_status st = t->ops->upload(&ex, t->params, t->host_params, (size_t)t->n_params * sizeof(float));
        if (st != MC_OK) {
            return st;
        }
    }
    return mc_trainer_values_changed(t, err);
}
