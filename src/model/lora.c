// LoRA adapters at load time (spec §8): a PEFT adapter folder's adapter_config.json read into an mc_lora_spec, and
// its tensors merged into the model's weights in f32 before any dtype conversion, with PEFT's unmerged semantics:
// an adapted tied embedding is untied first, so the head keeps the base matrix as PEFT's does (§8.4).
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/file.h"
#include "io/safetensors.h"
#include "kernels/dtype.h"
#include "model/model.h"

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

// A tensor of the adapter as f32 [rows, cols] (owned), checked against the shape the model needs.
static mc_status adapter_tensor(const mc_st_set *set, const char *path, const char *name, int64_t rows, int64_t cols,
                                float **out, mc_error *err) {
    *out = NULL;
    const mc_st_tensor *t = mc_st_find(set, name);
    if (t == NULL) {
        return mc_fail(err, MC_ERR_FORMAT, "%s: tensor %s is missing", path, name);
    }
    const bool vec = cols == 0;
    if ((t->dtype != MC_DTYPE_F32 && t->dtype != MC_DTYPE_F16 && t->dtype != MC_DTYPE_BF16) ||
        t->ndim != (vec ? 1 : 2) || t->shape[0] != rows || (!vec && t->shape[1] != cols)) {
        const int64_t need[2] = { rows, cols };
        char want[64], got[64];
        mc_st_shape_format(want, sizeof(want), need, vec ? 1 : 2);
        mc_st_shape_format(got, sizeof(got), t->shape, t->ndim);
        return mc_fail(err, MC_ERR_FORMAT, "%s: tensor %s is %s %s, the model needs F32/F16/BF16 %s", path, name,
                       t->dtype_name, got, want);
    }
    float *f = malloc((size_t)t->numel * sizeof(float));
    if (f == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "%s: out of memory", path);
    }
    for (int64_t i = 0; i < t->numel; i++) { // the mapping is only byte-aligned
        if (t->dtype == MC_DTYPE_F32) {
            memcpy(&f[i], (const char *)t->data + 4 * i, 4);
        } else {
            uint16_t h;
            memcpy(&h, (const char *)t->data + 2 * i, 2);
            f[i] = t->dtype == MC_DTYPE_F16 ? mc_f16_to_f32(h) : mc_bf16_to_f32(h);
        }
    }
    *out = f;
    return MC_OK;
}

// w ← w + s·B·A (ΔW [out, in] = B [out, r] · A [r, in]) into a new f32 matrix owned by the model; transposed:
// the embedding's ΔE [V, H] = (B [H, r] · A [r, V])ᵀ.
static mc_status merge_matrix(mc_model *m, mc_weight *w, const float *A, const float *B, int64_t r, float s,
                              bool transposed, mc_error *err) {
    float *merged = mc_model_own(m, (size_t)(w->rows * w->cols) * sizeof(float));
    if (merged == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "lora: out of memory merging a [%lld, %lld] matrix", (long long)w->rows,
                       (long long)w->cols);
    }
    for (int64_t o = 0; o < w->rows; o++) {
        for (int64_t i = 0; i < w->cols; i++) {
            double d = 0;
            for (int64_t j = 0; j < r; j++) {
                d += transposed ? (double)B[i * r + j] * A[j * w->rows + o] : (double)B[o * r + j] * A[j * w->cols + i];
            }
            merged[o * w->cols + i] = mc_weight_at(w, o, i) + s * (float)d;
        }
    }
    *w = (mc_weight){ .data = merged, .dtype = MC_DTYPE_F32, .rows = w->rows, .cols = w->cols };
    return MC_OK;
}

// A trained bias from the adapter (bias "all" / "lora_only"), when the file has one for this module.
static mc_status replace_bias(mc_model *m, const mc_st_set *set, const char *path, int64_t layer, const char *module,
                              const float **bias, int64_t n, mc_error *err) {
    char name[160];
    for (int wrapped = 0; wrapped < 2; wrapped++) {
        snprintf(name, sizeof(name), "base_model.model.backbone.layers.%lld.mixer.%s.%sbias", (long long)layer,
                 module, wrapped ? "base_layer." : "");
        if (mc_st_find(set, name) == NULL) {
            continue;
        }
        if (*bias == NULL) {
            return mc_fail(err, MC_ERR_FORMAT, "%s: tensor %s: the model's %s has no bias", path, name, module);
        }
        float *f = NULL;
        mc_status st = adapter_tensor(set, path, name, n, 0, &f, err);
        float *owned = st == MC_OK ? mc_model_own(m, (size_t)n * sizeof(float)) : NULL;
        if (st == MC_OK && owned == NULL) {
            st = mc_fail(err, MC_ERR_NOMEM, "%s: out of memory", path);
        }
        if (st == MC_OK) {
            memcpy(owned, f, (size_t)n * sizeof(float));
            *bias = owned;
        }
        free(f);
        return st;
    }
    return MC_OK;
}

static mc_status apply(mc_model *m, const mc_lora_spec *spec, const mc_st_set *set, const char *path, mc_error *err) {
    const mc_config *c = &m->cfg;
    const int64_t H = c->hidden_size, E = c->intermediate_size, RN = c->time_step_rank + 2 * c->state_size,
                  V = c->vocab_size, r = spec->r;
    const float s = (float)(spec->use_rslora ? spec->alpha / sqrt((double)r) : spec->alpha / (double)r);
    int64_t used = 0;
    char na[160], nb[160];
    mc_status st = MC_OK;
    float *A = NULL, *B = NULL;
    if (spec->targets & MC_LORA_EMBEDDINGS) {
        st = adapter_tensor(set, path, "base_model.model.backbone.embeddings.lora_embedding_A", r, V, &A, err);
        if (st == MC_OK) st = adapter_tensor(set, path, "base_model.model.backbone.embeddings.lora_embedding_B", H, r, &B, err);
        if (st == MC_OK) {
            const bool tied = m->lm_head.data == m->embed.data;
            mc_weight base = m->embed;
            st = merge_matrix(m, &m->embed, A, B, r, s, true, err);
            if (st == MC_OK && tied) { // the head keeps the base matrix (PEFT's unmerged semantics)
                m->lm_head = base;
                m->cfg.tie_word_embeddings = false;
            }
            used += 2;
        }
        free(A);
        free(B);
        A = B = NULL;
    }
    const char *const sites[3] = { "in_proj", "x_proj", "out_proj" };
    const unsigned bits[3] = { MC_LORA_IN_PROJ, MC_LORA_X_PROJ, MC_LORA_OUT_PROJ };
    const int64_t in[3] = { H, E, E }, out[3] = { 2 * E, RN, H };
    for (int64_t i = 0; st == MC_OK && i < c->num_hidden_layers; i++) {
        mc_layer *l = &m->layers[i];
        mc_weight *ws[3] = { &l->in_proj, &l->x_proj, &l->out_proj };
        for (int k = 0; st == MC_OK && k < 3; k++) {
            if (!(spec->targets & bits[k])) {
                continue;
            }
            snprintf(na, sizeof(na), "base_model.model.backbone.layers.%lld.mixer.%s.lora_A.weight", (long long)i,
                     sites[k]);
            snprintf(nb, sizeof(nb), "base_model.model.backbone.layers.%lld.mixer.%s.lora_B.weight", (long long)i,
                     sites[k]);
            st = adapter_tensor(set, path, na, r, in[k], &A, err);
            if (st == MC_OK) st = adapter_tensor(set, path, nb, out[k], r, &B, err);
            if (st == MC_OK) st = merge_matrix(m, ws[k], A, B, r, s, false, err);
            free(A);
            free(B);
            A = B = NULL;
            used += 2;
        }
        const struct {
            const char *module;
            const float **bias;
            int64_t n;
        } biases[4] = { { "in_proj", &l->in_bias, 2 * E }, { "conv1d", &l->conv_b, E }, { "dt_proj", &l->dt_bias, E },
                        { "out_proj", &l->out_bias, H } };
        for (int k = 0; st == MC_OK && k < 4; k++) {
            const float *before = *biases[k].bias;
            st = replace_bias(m, set, path, i, biases[k].module, biases[k].bias, biases[k].n, err);
            used += st == MC_OK && *biases[k].bias != before;
        }
    }
    if (st == MC_OK && used != mc_st_count(set)) { // something in the file fits nothing of this model
        for (int64_t i = 0; i < mc_st_count(set); i++) {
            const char *name = mc_st_at(set, i)->name;
            if (strstr(name, "lora_") == NULL && strstr(name, "bias") == NULL) {
                char esc[96];
                mc_escape(esc, sizeof(esc), name, strlen(name));
                return mc_fail(err, MC_ERR_FORMAT, "%s: tensor %s is not a LoRA tensor mambac reads", path, esc);
            }
        }
        return mc_fail(err, MC_ERR_FORMAT, "%s: %lld tensors, %lld of them fit the configured targets of this "
                                           "model", path, (long long)mc_st_count(set), (long long)used);
    }
    return st;
}

mc_status mc_model_apply_lora(mc_model *m, const char *dir, mc_error *err) {
    mc_lora_spec spec;
    mc_status st = mc_lora_spec_load(dir, &spec, err);
    if (st != MC_OK) {
        return st;
    }
    char *path = mc_path_join(dir, "adapter_model.safetensors");
    mc_st_set *set = NULL;
    st = path != NULL ? mc_st_open(path, &set, err) : mc_fail(err, MC_ERR_NOMEM, "out of memory");
    if (st == MC_OK) {
        st = apply(m, &spec, set, path, err);
    }
    mc_st_close(set);
    free(path);
    return st;
}
