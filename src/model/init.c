// Random initialisation of a new model, drawn as transformers 5.17 initialises MambaForCausalLM (spec §5.1).
// Bit-exact reproduction of torch's RNG is out of scope: the distributions match, the draws do not.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/rng.h"
#include "model/model.h"

typedef enum { FILL_NORMAL, FILL_UNIFORM, FILL_CONST } fill_kind;

static float *new_f32(mc_model *m, int64_t n, fill_kind kind, double a, mc_rng *rng) {
    float *p = mc_model_own(m, (size_t)n * sizeof(float));
    for (int64_t i = 0; p != NULL && i < n; i++) {
        switch (kind) {
            case FILL_NORMAL: // N(0, a)
                p[i] = (float)(a * mc_rng_normal(rng));
                break;
            case FILL_UNIFORM: // U(-a, a)
                p[i] = (float)(a * (2.0 * mc_rng_uniform(rng) - 1.0));
                break;
            case FILL_CONST:
                p[i] = (float)a;
                break;
        }
    }
    if (p != NULL) {
        m->info.n_params += n;
        m->info.n_by_dtype[MC_DTYPE_F32] += n;
        m->info.weight_bytes += n * 4;
    }
    return p;
}

static mc_weight new_matrix(mc_model *m, int64_t rows, int64_t cols, fill_kind kind, double a, mc_rng *rng) {
    mc_weight w = { .data = new_f32(m, rows * cols, kind, a, rng), .dtype = MC_DTYPE_F32, .rows = rows, .cols = cols };
    return w;
}

// dt_proj.bias: softplus⁻¹ of a log-uniform draw in [time_step_min, time_step_max), floored (spec §5).
static float *dt_bias(mc_model *m, int64_t E, mc_rng *rng) {
    const mc_config *c = &m->cfg;
    float *b = new_f32(m, E, FILL_CONST, 0, rng);
    for (int64_t e = 0; b != NULL && e < E; e++) {
        double lo = log(c->time_step_min), hi = log(c->time_step_max);
        double d = exp(mc_rng_uniform(rng) * (hi - lo) + lo);
        d = fmax(d, c->time_step_floor);
        b[e] = (float)(d + log(-expm1(-d)));
    }
    return b;
}

static bool init_layer(mc_model *m, mc_layer *l, mc_rng *rng) {
    const mc_config *c = &m->cfg;
    const int64_t H = c->hidden_size, E = c->intermediate_size, N = c->state_size, R = c->time_step_rank,
                  K = c->conv_kernel;
    const double std = c->initializer_range, dt_s = pow((double)R, -0.5) * c->time_step_scale;
    l->norm = new_f32(m, H, FILL_CONST, 1, rng);
    l->in_proj = new_matrix(m, 2 * E, H, FILL_NORMAL, std, rng);
    l->in_bias = c->use_bias ? new_f32(m, 2 * E, FILL_CONST, 0, rng) : NULL;
    l->conv_w = new_f32(m, E * K, FILL_UNIFORM, 1.0 / sqrt((double)K), rng);
    l->conv_b = c->use_conv_bias ? new_f32(m, E, FILL_CONST, 0, rng) : NULL;
    l->x_proj = new_matrix(m, R + 2 * N, E, FILL_NORMAL, std, rng);
    l->dt_proj = new_matrix(m, E, R, c->time_step_init_constant ? FILL_CONST : FILL_UNIFORM, dt_s, rng);
    l->dt_bias = dt_bias(m, E, rng);
    float *A_log = new_f32(m, E * N, FILL_CONST, 0, rng);
    for (int64_t i = 0; A_log != NULL && i < E * N; i++) {
        A_log[i] = logf((float)(i % N + 1));
    }
    l->A_log = A_log;
    l->D = new_f32(m, E, FILL_CONST, 1, rng);
    double out_bound = 1.0 / sqrt((double)E) / (c->rescale_prenorm_residual ? sqrt((double)c->num_hidden_layers) : 1);
    l->out_proj = new_matrix(m, H, E, FILL_UNIFORM, out_bound, rng);
    l->out_bias = c->use_bias ? new_f32(m, H, FILL_CONST, 0, rng) : NULL;
    return l->norm && l->in_proj.data && (l->in_bias || !c->use_bias) && l->conv_w && (l->conv_b || !c->use_conv_bias) &&
           l->x_proj.data && l->dt_proj.data && l->dt_bias && l->A_log && l->D && l->out_proj.data &&
           (l->out_bias || !c->use_bias);
}

mc_status mc_model_init(const mc_config *cfg, uint64_t seed, const mc_load_opts *opts, mc_model **out,
                        mc_error *err) {
    if (out == NULL) {
        return mc_fail(err, MC_ERR_INVALID, "init: out is NULL");
    }
    *out = NULL;
    if (cfg == NULL) {
        return mc_fail(err, MC_ERR_INVALID, "init: config is NULL");
    }
    mc_status cst = mc_config_check(cfg, "config", MC_ERR_INVALID, err); // a caller-filled config has not been through config.json's checks
    if (cst != MC_OK) {
        return cst;
    }
    mc_model *m = calloc(1, sizeof(*m));
    if (m == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "init: out of memory");
    }
    mc_load_opts defaults;
    if (opts == NULL) {
        mc_load_opts_init(&defaults);
        opts = &defaults;
    }
    m->cfg = *cfg;
    m->cfg.int8_group = 0;
    mc_status st = mc_model_setup_backend(m, opts, err);
    mc_rng rng;
    mc_rng_seed(&rng, seed);
    if (st == MC_OK && ((m->dir = strdup("(initialised)")) == NULL ||
                        (m->layers = calloc((size_t)cfg->num_hidden_layers, sizeof(mc_layer))) == NULL)) {
        st = mc_fail(err, MC_ERR_NOMEM, "init: out of memory");
    }
    if (st == MC_OK) { // embedding first, then layers in order, then the head (transformers' module order)
        m->embed = new_matrix(m, cfg->vocab_size, cfg->hidden_size, FILL_NORMAL, cfg->initializer_range, &rng);
        bool ok = m->embed.data != NULL;
        for (int64_t i = 0; ok && i < cfg->num_hidden_layers; i++) {
            ok = init_layer(m, &m->layers[i], &rng);
        }
        m->norm_f = ok ? new_f32(m, cfg->hidden_size, FILL_CONST, 1, &rng) : NULL;
        m->lm_head = cfg->tie_word_embeddings ? m->embed
                                              : new_matrix(m, cfg->vocab_size, cfg->hidden_size, FILL_NORMAL,
                                                           cfg->initializer_range, &rng);
        if (!ok || m->norm_f == NULL || m->lm_head.data == NULL) {
            st = mc_fail(err, MC_ERR_NOMEM, "init: out of memory for %lld layers", (long long)cfg->num_hidden_layers);
        }
    }
    if (st == MC_OK) {
        st = mc_model_derive_A(m, err);
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
