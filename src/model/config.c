// config.json → mc_config: both the transformers (MambaConfig) and mamba_ssm layouts, every default applied and every
// value range-checked (spec §1). Knows nothing about weights.
#include <cjson/cJSON.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/file.h"
#include "model/model.h"

#define MC_CONFIG_MAX_BYTES (16u << 20)
#define MC_DIM_MAX          (1 << 20) // any one dimension; keeps every product of two dims far from overflow

// Checks one integer item: absent → def; present but not an integral number in [lo, hi] → error naming key.
static mc_status int_item(const cJSON *it, const char *key, int64_t def, int64_t lo, int64_t hi, const char *path,
                          int64_t *out, mc_error *err) {
    if (it == NULL || cJSON_IsNull(it)) {
        *out = def;
        return MC_OK;
    }
    double v = cJSON_IsNumber(it) ? it->valuedouble : NAN;
    if (!cJSON_IsNumber(it) || v != floor(v) || v < (double)lo || v > (double)hi) {
        return mc_fail(err, MC_ERR_FORMAT, "%s: %s must be an integer in [%lld, %lld]", path, key, (long long)lo,
                       (long long)hi);
    }
    *out = (int64_t)v;
    return MC_OK;
}

static mc_status get_int(const cJSON *obj, const char *key, int64_t def, int64_t lo, int64_t hi, const char *path,
                         int64_t *out, mc_error *err) {
    return int_item(cJSON_GetObjectItemCaseSensitive(obj, key), key, def, lo, hi, path, out, err);
}

static mc_status get_float(const cJSON *obj, const char *key, double def, double lo, double hi, const char *path,
                           double *out, mc_error *err) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (it == NULL || cJSON_IsNull(it)) {
        *out = def;
        return MC_OK;
    }
    if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble) || it->valuedouble < lo || it->valuedouble > hi) {
        return mc_fail(err, MC_ERR_FORMAT, "%s: %s must be a number in [%g, %g]", path, key, lo, hi);
    }
    *out = it->valuedouble;
    return MC_OK;
}

static mc_status get_bool(const cJSON *obj, const char *key, bool def, const char *path, bool *out, mc_error *err) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (it == NULL || cJSON_IsNull(it)) {
        *out = def;
        return MC_OK;
    }
    if (!cJSON_IsBool(it)) {
        return mc_fail(err, MC_ERR_FORMAT, "%s: %s must be true or false", path, key);
    }
    *out = cJSON_IsTrue(it);
    return MC_OK;
}

// An eos_token_id may be an int or a list of ints (generation configs); the first one is the config's EOS.
static mc_status get_token_id(const cJSON *obj, const char *key, int32_t def, const char *path, int32_t *out,
                              mc_error *err) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (cJSON_IsArray(it)) {
        it = cJSON_GetArrayItem(it, 0);
    }
    int64_t v = 0;
    mc_status st = int_item(it, key, def, 0, INT32_MAX, path, &v, err);
    *out = (int32_t)v;
    return st;
}

// Fields shared by both layouts once the names are mapped.
static mc_status resolve_and_check(mc_config *c, const char *path, mc_error *err) {
    if (c->time_step_rank <= 0) { // "auto"
        c->time_step_rank = (c->hidden_size + 15) / 16;
    }
    if (c->intermediate_size <= 0) {
        c->intermediate_size = c->expand * c->hidden_size;
    }
    return mc_config_check(c, path, MC_ERR_FORMAT, err); // the values derived above, and the token ids
}

static mc_status parse_time_step_rank(const cJSON *obj, const char *key, const char *path, int64_t *out,
                                      mc_error *err) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (it == NULL || cJSON_IsNull(it) || (cJSON_IsString(it) && strcmp(it->valuestring, "auto") == 0)) {
        *out = 0;
        return MC_OK;
    }
    if (cJSON_IsString(it)) {
        return mc_fail(err, MC_ERR_FORMAT, "%s: %s must be \"auto\" or a positive integer", path, key);
    }
    return get_int(obj, key, 0, 1, MC_DIM_MAX, path, out, err);
}

static mc_status parse_hf(const cJSON *j, const char *path, mc_config *c, mc_error *err) {
    mc_status st = MC_OK;
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(j, "hidden_act");
    if (act != NULL && !cJSON_IsNull(act) &&
        !(cJSON_IsString(act) && (strcmp(act->valuestring, "silu") == 0 || strcmp(act->valuestring, "swish") == 0))) {
        return mc_fail(err, MC_ERR_UNSUPPORTED, "%s: hidden_act must be \"silu\" (or \"swish\")", path);
    }
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(j, "model_type");
    if (cJSON_IsString(mt) && strcmp(mt->valuestring, "mamba") != 0) {
        return mc_fail(err, MC_ERR_UNSUPPORTED, "%s: model_type \"%.40s\" is not supported (expected \"mamba\")", path,
                       mt->valuestring);
    }
    if (st == MC_OK) st = get_int(j, "vocab_size", 50280, 1, INT32_MAX, path, &c->vocab_size, err);
    if (st == MC_OK) st = get_int(j, "hidden_size", 768, 1, MC_DIM_MAX, path, &c->hidden_size, err);
    if (st == MC_OK) st = get_int(j, "state_size", 16, 1, 4096, path, &c->state_size, err);
    if (st == MC_OK) st = get_int(j, "num_hidden_layers", 32, 1, 100000, path, &c->num_hidden_layers, err);
    if (st == MC_OK) st = get_int(j, "expand", 2, 1, 1024, path, &c->expand, err);
    if (st == MC_OK) st = get_int(j, "conv_kernel", 4, 1, 1024, path, &c->conv_kernel, err);
    if (st == MC_OK) st = get_int(j, "intermediate_size", 0, 1, MC_DIM_MAX, path, &c->intermediate_size, err);
    if (st == MC_OK) st = parse_time_step_rank(j, "time_step_rank", path, &c->time_step_rank, err);
    if (st == MC_OK) st = get_float(j, "layer_norm_epsilon", 1e-5, 0, 1, path, &c->layer_norm_epsilon, err);
    if (st == MC_OK) st = get_bool(j, "use_bias", false, path, &c->use_bias, err);
    if (st == MC_OK) st = get_bool(j, "use_conv_bias", true, path, &c->use_conv_bias, err);
    if (st == MC_OK) st = get_bool(j, "residual_in_fp32", true, path, &c->residual_in_fp32, err);
    if (st == MC_OK) st = get_bool(j, "tie_word_embeddings", true, path, &c->tie_word_embeddings, err);
    if (st == MC_OK) st = get_bool(j, "rescale_prenorm_residual", false, path, &c->rescale_prenorm_residual, err);
    if (st == MC_OK) st = get_float(j, "initializer_range", 0.1, 0, 1e6, path, &c->initializer_range, err);
    if (st == MC_OK) st = get_float(j, "time_step_scale", 1.0, 0, 1e6, path, &c->time_step_scale, err);
    if (st == MC_OK) st = get_float(j, "time_step_min", 0.001, 0, 1e6, path, &c->time_step_min, err);
    if (st == MC_OK) st = get_float(j, "time_step_max", 0.1, 0, 1e6, path, &c->time_step_max, err);
    if (st == MC_OK) st = get_float(j, "time_step_floor", 1e-4, 0, 1e6, path, &c->time_step_floor, err);
    if (st == MC_OK) st = get_token_id(j, "bos_token_id", 0, path, &c->bos_token_id, err);
    if (st == MC_OK) st = get_token_id(j, "eos_token_id", 0, path, &c->eos_token_id, err);
    if (st == MC_OK) st = get_token_id(j, "pad_token_id", 0, path, &c->pad_token_id, err);
    const cJSON *scheme = cJSON_GetObjectItemCaseSensitive(j, "time_step_init_scheme");
    c->time_step_init_constant = cJSON_IsString(scheme) && strcmp(scheme->valuestring, "constant") == 0;
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(j, "quantization_config");
    if (st == MC_OK && q != NULL) {
        const cJSON *method = cJSON_GetObjectItemCaseSensitive(q, "quant_method");
        if (!cJSON_IsString(method) || strcmp(method->valuestring, "mambac_int8") != 0) {
            return mc_fail(err, MC_ERR_UNSUPPORTED, "%s: quantization_config.quant_method must be \"mambac_int8\"",
                           path);
        }
        st = get_int(q, "group_size", 0, 1, MC_DIM_MAX, path, &c->int8_group, err);
    }
    return st;
}

// mamba_ssm's MambaConfig dataclass (spec §1.3, mapping §1.5): unpadded vocab, mixer settings in ssm_cfg.
static mc_status parse_original(const cJSON *j, const char *path, mc_config *c, mc_error *err) {
    mc_status st = MC_OK;
    int64_t d_intermediate = 0, pad_multiple = 8;
    bool rms_norm = true;
    const cJSON *ssm = cJSON_GetObjectItemCaseSensitive(j, "ssm_cfg");
    cJSON *empty = NULL;
    if (ssm == NULL || cJSON_IsNull(ssm)) {
        ssm = empty = cJSON_CreateObject();
        if (empty == NULL) {
            return mc_fail(err, MC_ERR_NOMEM, "%s: out of memory", path);
        }
    } else if (!cJSON_IsObject(ssm)) {
        return mc_fail(err, MC_ERR_FORMAT, "%s: ssm_cfg must be an object", path);
    }
    const cJSON *layer = cJSON_GetObjectItemCaseSensitive(ssm, "layer");
    const cJSON *attn = cJSON_GetObjectItemCaseSensitive(j, "attn_layer_idx");
    if (layer != NULL && !(cJSON_IsString(layer) && strcmp(layer->valuestring, "Mamba1") == 0)) {
        st = mc_fail(err, MC_ERR_UNSUPPORTED, "%s: ssm_cfg.layer \"%.32s\" is not supported (only Mamba1)", path,
                     cJSON_IsString(layer) ? layer->valuestring : "?");
    } else if (attn != NULL && cJSON_GetArraySize(attn) > 0) {
        st = mc_fail(err, MC_ERR_UNSUPPORTED, "%s: attn_layer_idx is set (hybrid attention models are not supported)",
                     path);
    }
    if (st == MC_OK) st = get_int(j, "d_model", 2560, 1, MC_DIM_MAX, path, &c->hidden_size, err);
    if (st == MC_OK) st = get_int(j, "n_layer", 64, 1, 100000, path, &c->num_hidden_layers, err);
    if (st == MC_OK) st = get_int(j, "vocab_size", 50277, 1, INT32_MAX - 4096, path, &c->vocab_size, err);
    if (st == MC_OK) st = get_int(j, "d_intermediate", 0, 0, MC_DIM_MAX, path, &d_intermediate, err);
    if (st == MC_OK) st = get_int(j, "pad_vocab_size_multiple", 8, 1, 4096, path, &pad_multiple, err);
    if (st == MC_OK) st = get_bool(j, "rms_norm", true, path, &rms_norm, err);
    if (st == MC_OK) st = get_bool(j, "residual_in_fp32", true, path, &c->residual_in_fp32, err);
    if (st == MC_OK) st = get_bool(j, "tie_embeddings", true, path, &c->tie_word_embeddings, err);
    if (st == MC_OK) st = get_int(ssm, "d_state", 16, 1, 4096, path, &c->state_size, err);
    if (st == MC_OK) st = get_int(ssm, "d_conv", 4, 1, 1024, path, &c->conv_kernel, err);
    if (st == MC_OK) st = get_int(ssm, "expand", 2, 1, 1024, path, &c->expand, err);
    if (st == MC_OK) st = parse_time_step_rank(ssm, "dt_rank", path, &c->time_step_rank, err);
    if (st == MC_OK) st = get_bool(ssm, "bias", false, path, &c->use_bias, err);
    if (st == MC_OK) st = get_bool(ssm, "conv_bias", true, path, &c->use_conv_bias, err);
    if (st == MC_OK) st = get_float(ssm, "dt_scale", 1.0, 0, 1e6, path, &c->time_step_scale, err);
    if (st == MC_OK) st = get_float(ssm, "dt_min", 0.001, 0, 1e6, path, &c->time_step_min, err);
    if (st == MC_OK) st = get_float(ssm, "dt_max", 0.1, 0, 1e6, path, &c->time_step_max, err);
    if (st == MC_OK) st = get_float(ssm, "dt_init_floor", 1e-4, 0, 1e6, path, &c->time_step_floor, err);
    cJSON_Delete(empty);
    if (st != MC_OK) {
        return st;
    }
    if (d_intermediate != 0) {
        return mc_fail(err, MC_ERR_UNSUPPORTED, "%s: d_intermediate %lld (a gated MLP per block) is not supported",
                       path, (long long)d_intermediate);
    }
    if (!rms_norm) {
        return mc_fail(err, MC_ERR_UNSUPPORTED, "%s: rms_norm false (LayerNorm blocks) is not supported", path);
    }
    if (c->vocab_size % pad_multiple != 0) {
        c->vocab_size += pad_multiple - c->vocab_size % pad_multiple;
    }
    c->intermediate_size = 0;
    c->layer_norm_epsilon = 1e-5;
    c->original_format = true;
    return MC_OK;
}

mc_status mc_config_from_json(const char *text, size_t len, const char *path, mc_config *cfg, mc_error *err) {
    memset(cfg, 0, sizeof(*cfg));
    cJSON *j = cJSON_ParseWithLength(text, len);
    if (j == NULL) {
        return mc_fail(err, MC_ERR_FORMAT, "%s: not valid JSON", path);
    }
    mc_status st;
    if (!cJSON_IsObject(j)) {
        st = mc_fail(err, MC_ERR_FORMAT, "%s: top level must be a JSON object", path);
    } else if (cJSON_HasObjectItem(j, "model_type") ||
               (cJSON_HasObjectItem(j, "hidden_size") && cJSON_HasObjectItem(j, "state_size"))) {
        st = parse_hf(j, path, cfg, err);
    } else if (cJSON_HasObjectItem(j, "d_model") && cJSON_HasObjectItem(j, "n_layer")) {
        st = parse_original(j, path, cfg, err);
    } else {
        st = mc_fail(err, MC_ERR_FORMAT, "%s: neither a transformers Mamba config (model_type, hidden_size, "
                                         "state_size) nor a mamba_ssm one (d_model, n_layer)", path);
    }
    cJSON_Delete(j);
    if (st == MC_OK) {
        st = resolve_and_check(cfg, path, err);
    }
    return st;
}

mc_status mc_config_check(const mc_config *c, const char *what, mc_status code, mc_error *err) {
    static const struct {
        const char *name;
        size_t off;
        int64_t hi;
    } dims[] = {
        { "vocab_size", offsetof(mc_config, vocab_size), INT32_MAX },
        { "hidden_size", offsetof(mc_config, hidden_size), MC_DIM_MAX },
        { "intermediate_size", offsetof(mc_config, intermediate_size), MC_DIM_MAX },
        { "state_size", offsetof(mc_config, state_size), 4096 },
        { "time_step_rank", offsetof(mc_config, time_step_rank), MC_DIM_MAX },
        { "conv_kernel", offsetof(mc_config, conv_kernel), 1024 },
        { "num_hidden_layers", offsetof(mc_config, num_hidden_layers), 100000 },
    };
    for (size_t i = 0; i < sizeof(dims) / sizeof(dims[0]); i++) {
        int64_t v;
        memcpy(&v, (const char *)c + dims[i].off, sizeof(v));
        if (v < 1 || v > dims[i].hi) {
            return mc_fail(err, code, "%s: %s is %lld, must be in [1, %lld]", what, dims[i].name, (long long)v,
                           (long long)dims[i].hi);
        }
    }
    // Written as !(ok) so NaN fails.
    if (!(c->layer_norm_epsilon >= 0 && c->layer_norm_epsilon <= 1)) {
        return mc_fail(err, code, "%s: layer_norm_epsilon is %g, must be in [0, 1]", what, c->layer_norm_epsilon);
    }
    const double reals[] = { c->initializer_range, c->time_step_scale, c->time_step_min, c->time_step_max,
                             c->time_step_floor };
    const char *const real_names[] = { "initializer_range", "time_step_scale", "time_step_min", "time_step_max",
                                       "time_step_floor" };
    for (size_t i = 0; i < sizeof(reals) / sizeof(reals[0]); i++) {
        if (!(reals[i] >= 0 && reals[i] <= 1e6)) {
            return mc_fail(err, code, "%s: %s is %g, must be in [0, 1e6]", what, real_names[i], reals[i]);
        }
    }
    if (c->bos_token_id >= c->vocab_size || c->eos_token_id >= c->vocab_size || c->pad_token_id >= c->vocab_size) {
        return mc_fail(err, code, "%s: bos/eos/pad token id (%d, %d, %d) outside the vocabulary of %lld", what,
                       c->bos_token_id, c->eos_token_id, c->pad_token_id, (long long)c->vocab_size);
    }
    return MC_OK;
}

mc_status mc_config_load(const char *path, mc_config *cfg, mc_error *err) {
    if (path == NULL || cfg == NULL) {
        return mc_fail(err, MC_ERR_INVALID, "config: path and cfg must be given");
    }
    char *text = NULL;
    size_t len = 0;
    memset(cfg, 0, sizeof(*cfg));
    mc_status st = mc_file_read(path, MC_CONFIG_MAX_BYTES, &text, &len, err);
    if (st == MC_OK) {
        st = mc_config_from_json(text, len, path, cfg, err);
    }
    free(text);
    return st;
}

mc_status mc_config_preset(const char *name, mc_config *cfg, mc_error *err) {
    static const struct {
        const char *name;
        int64_t d_model, n_layer;
    } presets[] = { { "130m", 768, 24 }, { "370m", 1024, 48 }, { "790m", 1536, 48 }, { "1.4b", 2048, 48 },
                    { "2.8b", 2560, 64 } };
    if (name == NULL || cfg == NULL) {
        return mc_fail(err, MC_ERR_INVALID, "config: preset name and cfg must be given");
    }
    for (size_t i = 0; i < sizeof(presets) / sizeof(presets[0]); i++) {
        if (name != NULL && strcmp(name, presets[i].name) == 0) {
            char json[256];
            int n = snprintf(json, sizeof(json),
                             "{\"model_type\": \"mamba\", \"hidden_size\": %lld, \"num_hidden_layers\": %lld, "
                             "\"vocab_size\": 50280, \"state_size\": 16, \"conv_kernel\": 4, \"expand\": 2}",
                             (long long)presets[i].d_model, (long long)presets[i].n_layer);
            return mc_config_from_json(json, (size_t)n, name, cfg, err);
        }
    }
    return mc_fail(err, MC_ERR_INVALID, "preset \"%.32s\" is unknown (130m, 370m, 790m, 1.4b, 2.8b)",
                   name != NULL ? name : "");
}
