// PEFT adapter folders (spec §8.6): adapter_config.json read into an mc_lora_spec and written with every key PEFT
// 0.21 writes, and adapter_model.safetensors with the trainer's tensors under PEFT's keys.
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

// PEFT matches a list entry against a module name when it equals the name or a whole dotted suffix of it. mambac
// adapts whole module kinds, so an entry must name one of the four kinds, possibly with leading path parts that
// every layer shares ("mixer.in_proj", "backbone.embeddings").
static unsigned target_of(const char *entry) {
    for (int i = 0; i < 4; i++) {
        const size_t n = strlen(entry), k = strlen(target_names[i]);
        if (n >= k && strcmp(entry + n - k, target_names[i]) == 0 && (n == k || entry[n - k - 1] == '.')) {
            const char *prefix_ok[] = { "", "mixer.", "backbone.", "model.backbone." };
            for (size_t p = 0; p < sizeof(prefix_ok) / sizeof(prefix_ok[0]); p++) {
                if (n - k == strlen(prefix_ok[p]) && strncmp(entry, prefix_ok[p], n - k) == 0) {
                    return target_bits[i];
                }
            }
        }
    }
    return 0;
}

static bool is_null_or_empty(const cJSON *v) {
    return v == NULL || cJSON_IsNull(v) || (cJSON_IsObject(v) && v->child == NULL) ||
           (cJSON_IsArray(v) && v->child == NULL) || cJSON_IsFalse(v);
}

mc_status mc_lora_spec_load(const char *dir, mc_lora_spec *spec, mc_error *err) {
    char *path = mc_path_join(dir, "adapter_config.json");
    if (path == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "adapter: out of memory");
    }
    char *text = NULL;
    size_t len = 0;
    mc_status st = mc_file_read(path, 1 << 20, &text, &len, err);
    cJSON *j = st == MC_OK ? cJSON_ParseWithLength(text, len) : NULL;
    if (st == MC_OK && !cJSON_IsObject(j)) {
        st = mc_fail(err, MC_ERR_FORMAT, "%s: not a JSON object", path);
    }
    const cJSON *type = cJSON_GetObjectItem(j, "peft_type");
    if (st == MC_OK && (!cJSON_IsString(type) || strcmp(type->valuestring, "LORA") != 0)) {
        st = mc_fail(err, MC_ERR_UNSUPPORTED, "%s: peft_type is not \"LORA\"", path);
    }
    // Features mambac does not implement are refused, not ignored.
    const char *refused[] = { "use_dora", "lora_bias", "fan_in_fan_out", "layer_replication", "modules_to_save",
                              "trainable_token_indices", "rank_pattern", "alpha_pattern", "layers_to_transform",
                              "exclude_modules", "target_parameters" };
    for (size_t i = 0; st == MC_OK && i < sizeof(refused) / sizeof(refused[0]); i++) {
        if (!is_null_or_empty(cJSON_GetObjectItem(j, refused[i]))) {
            st = mc_fail(err, MC_ERR_UNSUPPORTED, "%s: \"%s\" is set; mambac does not implement it", path,
                         refused[i]);
        }
    }
    const cJSON *r = cJSON_GetObjectItem(j, "r"), *alpha = cJSON_GetObjectItem(j, "lora_alpha");
    const cJSON *targets = cJSON_GetObjectItem(j, "target_modules"), *bias = cJSON_GetObjectItem(j, "bias");
    const cJSON *dropout = cJSON_GetObjectItem(j, "lora_dropout");
    *spec = (mc_lora_spec){ .r = 8, .alpha = 8 }; // PEFT's defaults for missing keys
    if (st == MC_OK && r != NULL && (!cJSON_IsNumber(r) || r->valuedouble < 1 || r->valuedouble > 65536 ||
                                     r->valuedouble != floor(r->valuedouble))) {
        st = mc_fail(err, MC_ERR_FORMAT, "%s: \"r\" must be an integer in [1, 65536]", path);
    }
    if (st == MC_OK && alpha != NULL && !cJSON_IsNumber(alpha)) {
        st = mc_fail(err, MC_ERR_FORMAT, "%s: \"lora_alpha\" must be a number", path);
    }
    if (st == MC_OK) {
        spec->r = r != NULL ? (int)r->valuedouble : 8;
        spec->alpha = alpha != NULL ? alpha->valuedouble : 8;
        spec->use_rslora = cJSON_IsTrue(cJSON_GetObjectItem(j, "use_rslora"));
        spec->dropout = cJSON_IsNumber(dropout) ? dropout->valuedouble : 0;
    }
    if (st == MC_OK && bias != NULL && !cJSON_IsNull(bias)) {
        const char *b = cJSON_IsString(bias) ? bias->valuestring : "";
        if (strcmp(b, "none") != 0 && strcmp(b, "all") != 0 && strcmp(b, "lora_only") != 0) {
            st = mc_fail(err, MC_ERR_FORMAT, "%s: \"bias\" must be \"none\", \"all\" or \"lora_only\"", path);
        } else {
            spec->bias = b[0] == 'n' ? MC_LORA_BIAS_NONE : b[0] == 'a' ? MC_LORA_BIAS_ALL : MC_LORA_BIAS_LORA_ONLY;
        }
    }
    if (st == MC_OK && !cJSON_IsArray(targets)) {
        st = mc_fail(err, MC_ERR_UNSUPPORTED, "%s: \"target_modules\" must be a list of module names (a regex "
                                              "string is not supported)", path);
    }
    const cJSON *t;
    const cJSON *list = st == MC_OK ? targets : (const cJSON *)NULL;
    cJSON_ArrayForEach(t, list) {
        const unsigned bit = cJSON_IsString(t) ? target_of(t->valuestring) : 0;
        if (bit == 0) {
            char name[64];
            mc_escape(name, sizeof(name), cJSON_IsString(t) ? t->valuestring : "?",
                      cJSON_IsString(t) ? strlen(t->valuestring) : 1);
            st = mc_fail(err, MC_ERR_UNSUPPORTED, "%s: target \"%s\" matches none of embeddings, in_proj, x_proj, "
                                                  "out_proj", path, name);
            break;
        }
        spec->targets |= bit;
    }
    if (st == MC_OK && spec->targets == 0) {
        st = mc_fail(err, MC_ERR_FORMAT, "%s: \"target_modules\" is empty", path);
    }
    cJSON_Delete(j);
    free(text);
    free(path);
    return st;
}

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
    cJSON_AddFalseToObject(j, "use_bdlora");
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

mc_status mc_trainer_save(const mc_trainer *t, const char *dir, mc_error *err) {
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        return mc_fail(err, MC_ERR_IO, "%s: cannot create the folder: %s", dir, strerror(errno));
    }
    if (!t->lora) { // all weights: a model folder transformers loads
        return mc_model_save(&t->view, dir, err);
    }
    char *path = mc_path_join(dir, "adapter_model.safetensors");
    mc_status st = path != NULL ? mc_trainer_write_tensors(t, path, false, NAN, err)
                                : mc_fail(err, MC_ERR_NOMEM, "adapter: out of memory");
    free(path);
    return st == MC_OK ? write_config(dir, &t->spec, t->base->dir, err) : st;
}
