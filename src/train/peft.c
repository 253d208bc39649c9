// Writing PEFT adapter folders (spec §8.6): adapter_config.json with every key PEFT 0.21 writes, and
// adapter_model.safetensors with the trainer's tensors under PEFT's keys. Reading one is model/lora.c's job.
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/error.h"
#include "base/file.h"
#include "train/trainer.h"

static const char *const target_names[] = { "embeddings", "in_proj", "x_proj", "out_proj" };
static const unsigned target_bits[] = { MC_LORA_EMBEDDINGS, MC_LORA_IN_PROJ, MC_LORA_X_PROJ, MC_LORA_OUT_PROJ };

// adapter_config.json as PEFT 0.21 writes it: every key, sorted (cJSON keeps insertion order).
static mc_status write_config(const char *dir, const mc_lora_spec *s, const char *base_model, mc_error *err) {
    cJSON *j = cJSON_CreateObject();
    cJSON *targets = cJSON_CreateArray();
    for (int i = 0; i < 4; i++) {
        if (s->targets & target_bits[i]) {
            cJSON_AddItemToArray(targets, cJSON_CreateString(target_names[i]));
        }
    }
    const char *bias = s->bias == MC_LORA_BIAS_ALL ? "all" : s->bias == MC_LORA_BIAS_LORA_ONLY ? "lora_only" : "none";
    cJSON_AddNullToObject(j, "alora_invocation_tokens");
    cJSON_AddItemToObject(j, "alpha_pattern", cJSON_CreateObject());
    cJSON_AddNullToObject(j, "arrow_config");
    cJSON_AddNullToObject(j, "auto_mapping");
    if (base_model != NULL) {
        cJSON_AddStringToObject(j, "base_model_name_or_path", base_model);
    } else {
        cJSON_AddNullToObject(j, "base_model_name_or_path");
    }
    cJSON_AddStringToObject(j, "bias", bias);
    cJSON_AddNullToObject(j, "corda_config");
    cJSON_AddFalseToObject(j, "ensure_weight_tying");
    cJSON_AddNullToObject(j, "eva_config");
    cJSON_AddNullToObject(j, "exclude_modules");
    cJSON_AddFalseToObject(j, "fan_in_fan_out");
    cJSON_AddTrueToObject(j, "inference_mode");
    cJSON_AddTrueToObject(j, "init_lora_weights");
    cJSON_AddNullToObject(j, "kasa_config");
    cJSON_AddNullToObject(j, "layer_replication");
    cJSON_AddNullToObject(j, "layers_pattern");
    cJSON_AddNullToObject(j, "layers_to_transform");
    cJSON_AddItemToObject(j, "loftq_config", cJSON_CreateObject());
    cJSON_AddNumberToObject(j, "lora_alpha", s->alpha);
    cJSON_AddFalseToObject(j, "lora_bias");
    cJSON_AddNumberToObject(j, "lora_dropout", s->dropout);
    cJSON_AddNullToObject(j, "lora_ga_config");
    cJSON_AddNullToObject(j, "megatron_config");
    cJSON_AddStringToObject(j, "megatron_core", "megatron.core");
    cJSON_AddNullToObject(j, "modules_to_save");
    cJSON_AddNullToObject(j, "monteclora_config");
    cJSON_AddStringToObject(j, "peft_type", "LORA");
    cJSON_AddStringToObject(j, "peft_version", "0.21.0");
    cJSON_AddNumberToObject(j, "qalora_group_size", 16);
    cJSON_AddNumberToObject(j, "r", s->r);
    cJSON_AddItemToObject(j, "rank_pattern", cJSON_CreateObject());
    cJSON_AddNullToObject(j, "revision");
    cJSON_AddItemToObject(j, "target_modules", targets);
    cJSON_AddNullToObject(j, "target_parameters");
    cJSON_AddStringToObject(j, "task_type", "CAUSAL_LM");
    cJSON_AddNullToObject(j, "trainable_token_indices");
    cJSON_AddNullToObject(j, "use_bdlora"); // a BdLoraConfig or null: PEFT 0.21 refuses false
    cJSON_AddFalseToObject(j, "use_dora");
    cJSON_AddFalseToObject(j, "use_qalora");
    cJSON_AddBoolToObject(j, "use_rslora", s->use_rslora);
    cJSON_AddNullToObject(j, "velora_config");
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    char *path = mc_path_join(dir, "adapter_config.json");
    mc_file_out *f = NULL;
    mc_status st = text != NULL && path != NULL ? mc_file_out_open(path, &f, err)
                                                : mc_fail(err, MC_ERR_NOMEM, "adapter: out of memory");
    if (st == MC_OK) st = mc_file_out_write(f, text, strlen(text), err);
    if (st == MC_OK) st = mc_file_out_write(f, "\n", 1, err);
    if (st == MC_OK) {
        st = mc_file_out_commit(f, err);
    } else {
        mc_file_out_abort(f);
    }
    free(path);
    free(text);
    return st;
}

// The block's device address p as the same place in a host copy (host), or the host view's own pointer (fallback)
// for what the block does not hold.
static const float *rebase(const float *p, const mc_trainer *t, const float *host, const float *fallback) {
    return p != NULL && p >= t->params && p < t->params + t->n_params ? host + (p - t->params) : fallback;
}

static void rebase_w(mc_weight *w, const mc_trainer *t, const float *host, const mc_weight *fallback) {
    const float *p = w->data;
    *w = p != NULL && p >= t->params && p < t->params + t->n_params ? (mc_weight){ .data = host + (p - t->params),
                                                                                   .dtype = MC_DTYPE_F32,
                                                                                   .rows = w->rows,
                                                                                   .cols = w->cols }
                                                                     : *fallback;
}

// All weights trained on a device: the trained values are downloaded and saved through a host view of the model
// (the model's own host views hold the weights it was loaded with).
static mc_status save_device_model(const mc_trainer *t, const char *dir, mc_error *err) {
    const int64_t NL = t->base->cfg.num_hidden_layers;
    float *host = malloc((size_t)(t->n_params > 0 ? t->n_params : 1) * sizeof(float));
    mc_layer *layers = malloc((size_t)NL * sizeof(mc_layer));
    mc_exec ex = t->exec;
    ex.err = err;
    mc_status st = host != NULL && layers != NULL ? t->ops->download(&ex, host, t->params, (size_t)t->n_params * 4)
                                                  : mc_fail(err, MC_ERR_NOMEM, "%s: out of memory", dir);
    if (st == MC_OK) {
        mc_model base_view;
        const mc_model *b = mc_model_host_view(t->base, &base_view);
        mc_model v = *b;
        for (int64_t i = 0; i < NL; i++) {
            const mc_layer *d = &t->view.layers[i], *f = &b->layers[i];
            mc_layer *l = &layers[i];
            *l = *f;
            l->norm = rebase(d->norm, t, host, f->norm);
            l->in_bias = rebase(d->in_bias, t, host, f->in_bias);
            l->conv_w = rebase(d->conv_w, t, host, f->conv_w);
            l->conv_b = rebase(d->conv_b, t, host, f->conv_b);
            l->dt_bias = rebase(d->dt_bias, t, host, f->dt_bias);
            l->A_log = rebase(d->A_log, t, host, f->A_log);
            l->D = rebase(d->D, t, host, f->D);
            l->out_bias = rebase(d->out_bias, t, host, f->out_bias);
            l->in_proj = d->in_proj;
            rebase_w(&l->in_proj, t, host, &f->in_proj);
            l->x_proj = d->x_proj;
            rebase_w(&l->x_proj, t, host, &f->x_proj);
            l->dt_proj = d->dt_proj;
            rebase_w(&l->dt_proj, t, host, &f->dt_proj);
            l->out_proj = d->out_proj;
            rebase_w(&l->out_proj, t, host, &f->out_proj);
        }
        v.layers = layers;
        v.embed = t->view.embed;
        rebase_w(&v.embed, t, host, &b->embed);
        v.lm_head = t->view.lm_head;
        rebase_w(&v.lm_head, t, host, &b->lm_head);
        v.norm_f = rebase(t->view.norm_f, t, host, b->norm_f);
        v.host_layers = NULL; // v is itself the host view
        st = mc_model_save(&v, dir, err);
    }
    free(host);
    free(layers);
    return st;
}

mc_status mc_trainer_save(const mc_trainer *t, const char *dir, mc_error *err) {
    if (t == NULL || dir == NULL) {
        return mc_fail(err, MC_ERR_INVALID, "train: trainer and folder must be given");
    }
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        return mc_fail(err, MC_ERR_IO, "%s: cannot create the folder: %s", dir, strerror(errno));
    }
    if (!t->lora) { // all weights: a model folder transformers loads
        return t->ops->host_memory ? mc_model_save(&t->view, dir, err) : save_device_model(t, dir, err);
    }
    char *path = mc_path_join(dir, "adapter_model.safetensors");
    mc_status st = path != NULL ? mc_trainer_write_tensors(t, path, false, NAN, err)
                                : mc_fail(err, MC_ERR_NOMEM, "adapter: out of memory");
    free(path);
    return st == MC_OK ? write_config(dir, &t->spec, t->base->dir, err) : st;
}
