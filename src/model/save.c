// Writing a model as transformers lays it out (config.json + model.safetensors), for mambac init and quantize.
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/error.h"
#include "base/file.h"
#include "io/safetensors.h"
#include "kernels/dtype.h"
#include "model/model.h"

static const char *st_dtype(int dtype) {
    static const char *names[] = { "F32", "F16", "BF16", "I8" };
    return names[dtype];
}

// A float field, written so that it reads back as a float: transformers' config classes (5.x) reject an integer
// for a float field ("time_step_scale": 1), so an integral value keeps its ".0". Shortest form that round-trips.
static void add_float(cJSON *j, const char *name, double v) {
    char buf[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, sizeof(buf), "%.*g", prec, v);
        if (strtod(buf, NULL) == v) {
            break;
        }
    }
    if (strpbrk(buf, ".eEn") == NULL) { // integral (n: nan/inf, which the config loader refuses anyway)
        strcat(buf, ".0");
    }
    cJSON_AddRawToObject(j, name, buf);
}

static cJSON *config_json(const mc_model *m) {
    const mc_config *c = &m->cfg;
    cJSON *j = cJSON_CreateObject();
    cJSON *arch = cJSON_AddArrayToObject(j, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString("MambaForCausalLM"));
    cJSON_AddStringToObject(j, "model_type", "mamba");
    cJSON_AddNumberToObject(j, "vocab_size", (double)c->vocab_size);
    cJSON_AddNumberToObject(j, "hidden_size", (double)c->hidden_size);
    cJSON_AddNumberToObject(j, "intermediate_size", (double)c->intermediate_size);
    cJSON_AddNumberToObject(j, "state_size", (double)c->state_size);
    cJSON_AddNumberToObject(j, "num_hidden_layers", (double)c->num_hidden_layers);
    add_float(j, "layer_norm_epsilon", c->layer_norm_epsilon);
    cJSON_AddNumberToObject(j, "pad_token_id", c->pad_token_id);
    cJSON_AddNumberToObject(j, "bos_token_id", c->bos_token_id);
    cJSON_AddNumberToObject(j, "eos_token_id", c->eos_token_id);
    cJSON_AddNumberToObject(j, "expand", (double)c->expand);
    cJSON_AddNumberToObject(j, "conv_kernel", (double)c->conv_kernel);
    cJSON_AddBoolToObject(j, "use_bias", c->use_bias);
    cJSON_AddBoolToObject(j, "use_conv_bias", c->use_conv_bias);
    cJSON_AddStringToObject(j, "hidden_act", "silu");
    add_float(j, "initializer_range", c->initializer_range);
    cJSON_AddBoolToObject(j, "residual_in_fp32", c->residual_in_fp32);
    cJSON_AddNumberToObject(j, "time_step_rank", (double)c->time_step_rank);
    add_float(j, "time_step_scale", c->time_step_scale);
    add_float(j, "time_step_min", c->time_step_min);
    add_float(j, "time_step_max", c->time_step_max);
    cJSON_AddStringToObject(j, "time_step_init_scheme", c->time_step_init_constant ? "constant" : "random");
    add_float(j, "time_step_floor", c->time_step_floor);
    cJSON_AddBoolToObject(j, "rescale_prenorm_residual", c->rescale_prenorm_residual);
    cJSON_AddBoolToObject(j, "use_cache", true);
    cJSON_AddBoolToObject(j, "tie_word_embeddings", c->tie_word_embeddings);
    const int dtype = m->embed.dtype;
    cJSON_AddStringToObject(j, "torch_dtype", dtype == MC_DTYPE_F16 ? "float16" : dtype == MC_DTYPE_BF16 ? "bfloat16"
                                                                                                        : "float32");
    if (dtype == MC_DTYPE_I8) {
        cJSON *q = cJSON_AddObjectToObject(j, "quantization_config");
        cJSON_AddStringToObject(q, "quant_method", "mambac_int8");
        cJSON_AddNumberToObject(q, "group_size", (double)m->embed.group);
    }
    return j;
}

typedef struct entries {
    mc_st_entry *e;
    int64_t n, cap;
    char **names; // owned copies of the names built here
} entries;

// Appends a 1-D [d0] or 2-D [d0, d1] tensor; its byte size follows from dtype and shape.
static bool add(entries *es, const char *name, const char *dtype, int ndim, int64_t d0, int64_t d1, const void *data) {
    if (data == NULL) {
        return true; // an absent optional tensor (bias)
    }
    if (es->n == es->cap) {
        int64_t cap = es->cap ? es->cap * 2 : 64;
        mc_st_entry *e = realloc(es->e, (size_t)cap * sizeof(*e));
        char **names = realloc(es->names, (size_t)cap * sizeof(*names));
        if (e != NULL) {
            es->e = e;
        }
        if (names != NULL) {
            es->names = names;
        }
        if (e == NULL || names == NULL) {
            return false;
        }
        es->cap = cap;
    }
    char *copy = strdup(name);
    if (copy == NULL) {
        return false;
    }
    es->names[es->n] = copy;
    mc_st_entry *t = &es->e[es->n++];
    memset(t, 0, sizeof(*t));
    t->name = copy;
    t->dtype = dtype;
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->data = data;
    t->nbytes = (ndim == 1 ? d0 : d0 * d1) * (strcmp(dtype, "I8") == 0 ? 1 : strcmp(dtype, "F32") == 0 ? 4 : 2);
    return true;
}

static bool add_vec(entries *es, const char *name, const float *v, int64_t n) {
    return add(es, name, "F32", 1, n, 0, v);
}

static bool add_matrix(entries *es, const char *name, const mc_weight *w) {
    bool ok = add(es, name, st_dtype(w->dtype), 2, w->rows, w->cols, w->data);
    if (ok && w->dtype == MC_DTYPE_I8) {
        char sname[160];
        snprintf(sname, sizeof(sname), "%s_scale", name);
        ok = add(es, sname, "F32", 2, w->rows, (w->cols + w->group - 1) / w->group, w->scales);
    }
    return ok;
}

static bool collect(const mc_model *m, entries *es) {
    const mc_config *c = &m->cfg;
    const int64_t H = c->hidden_size, E = c->intermediate_size, N = c->state_size, K = c->conv_kernel;
    bool ok = add_matrix(es, "backbone.embeddings.weight", &m->embed);
    char n[128];
    for (int64_t i = 0; ok && i < c->num_hidden_layers; i++) {
        const mc_layer *l = &m->layers[i];
#define NAME(s) (snprintf(n, sizeof(n), "backbone.layers.%lld.%s", (long long)i, s), n)
        ok = add_vec(es, NAME("norm.weight"), l->norm, H) && add_matrix(es, NAME("mixer.in_proj.weight"), &l->in_proj) &&
             add_vec(es, NAME("mixer.in_proj.bias"), l->in_bias, 2 * E) &&
             add(es, NAME("mixer.conv1d.weight"), "F32", 2, E, K, l->conv_w) &&
             add_vec(es, NAME("mixer.conv1d.bias"), l->conv_b, E) &&
             add_matrix(es, NAME("mixer.x_proj.weight"), &l->x_proj) &&
             add_matrix(es, NAME("mixer.dt_proj.weight"), &l->dt_proj) &&
             add_vec(es, NAME("mixer.dt_proj.bias"), l->dt_bias, E) &&
             add(es, NAME("mixer.A_log"), "F32", 2, E, N, l->A_log) && add_vec(es, NAME("mixer.D"), l->D, E) &&
             add_matrix(es, NAME("mixer.out_proj.weight"), &l->out_proj) &&
             add_vec(es, NAME("mixer.out_proj.bias"), l->out_bias, H);
#undef NAME
    }
    ok = ok && add_vec(es, "backbone.norm_f.weight", m->norm_f, H);
    if (ok && !c->tie_word_embeddings) {
        ok = add_matrix(es, "lm_head.weight", &m->lm_head);
    }
    return ok;
}

// conv1d.weight is [E, 1, K] in transformers' files: fix the shapes written as 2-D above.
static void conv_shapes(entries *es, int64_t K) {
    for (int64_t i = 0; i < es->n; i++) {
        if (strstr(es->e[i].name, "conv1d.weight") != NULL) {
            es->e[i].ndim = 3;
            es->e[i].shape[1] = 1;
            es->e[i].shape[2] = K;
        }
    }
}

mc_status mc_model_save(const mc_model *model, const char *dir, mc_error *err) {
    if (model == NULL || dir == NULL) {
        return mc_fail(err, MC_ERR_INVALID, "save: model or folder is NULL");
    }
    mc_model view;
    const mc_model *m = mc_model_host_view(model, &view); // a model on a device is saved from its host copies
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        return mc_fail(err, MC_ERR_IO, "%s: cannot create the folder: %s", dir, strerror(errno));
    }
    entries es = { 0 };
    mc_status st = MC_OK;
    char *cfg_path = mc_path_join(dir, "config.json"), *st_path = mc_path_join(dir, "model.safetensors");
    cJSON *cfg = config_json(m);
    char *cfg_text = cfg != NULL ? cJSON_Print(cfg) : NULL;
    if (cfg_path == NULL || st_path == NULL || cfg_text == NULL || !collect(m, &es)) {
        st = mc_fail(err, MC_ERR_NOMEM, "%s: out of memory", dir);
    }
    if (st == MC_OK) {
        conv_shapes(&es, m->cfg.conv_kernel);
        st = mc_st_write(st_path, es.e, es.n, err);
    }
    mc_file_out *f = NULL;
    if (st == MC_OK) {
        st = mc_file_out_open(cfg_path, &f, err);
    }
    if (st == MC_OK) {
        st = mc_file_out_write(f, cfg_text, strlen(cfg_text), err);
    }
    if (st == MC_OK) {
        st = mc_file_out_write(f, "\n", 1, err);
    }
    if (st == MC_OK) {
        st = mc_file_out_commit(f, err);
    } else {
        mc_file_out_abort(f);
    }
    for (int64_t i = 0; i < es.n; i++) {
        free(es.names[i]);
    }
    free(es.names);
    free(es.e);
    free(cfg_text);
    cJSON_Delete(cfg);
    free(cfg_path);
    free(st_path);
    return st;
}
