// Weight dtype conversion at load (--dtype): projections, embedding and head to f32, f16, bf16 or per-group int8.
// The small vectors are f32 already (load.c). Converted matrices are owned by the model.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/file.h"
#include "kernels/dtype.h"
#include "model/model.h"

static mc_status to_float(mc_model *m, mc_weight *w, int want, mc_error *err);

// Symmetric int8 per group of `group` elements of a row: scale = max|w| / 127, q = round(w / scale).
static mc_status to_int8(mc_model *m, mc_weight *w, int64_t group, mc_error *err) {
    const int64_t n_groups = (w->cols + group - 1) / group;
    int8_t *q = mc_model_own(m, (size_t)(w->rows * w->cols));
    float *scales = mc_model_own(m, (size_t)(w->rows * n_groups) * sizeof(float));
    if (q == NULL || scales == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "quantize: out of memory for a [%lld, %lld] matrix", (long long)w->rows,
                       (long long)w->cols);
    }
    for (int64_t r = 0; r < w->rows; r++) {
        for (int64_t g = 0; g < n_groups; g++) {
            const int64_t c0 = g * group, c1 = c0 + group < w->cols ? c0 + group : w->cols;
            float amax = 0.0f;
            for (int64_t c = c0; c < c1; c++) {
                amax = fmaxf(amax, fabsf(mc_weight_at(w, r, c)));
            }
            const float scale = amax / 127.0f, inv = amax > 0.0f ? 127.0f / amax : 0.0f;
            scales[r * n_groups + g] = scale;
            for (int64_t c = c0; c < c1; c++) {
                float v = rintf(mc_weight_at(w, r, c) * inv);
                q[r * w->cols + c] = (int8_t)fmaxf(-127.0f, fminf(127.0f, v));
            }
        }
    }
    w->data = q;
    w->dtype = MC_DTYPE_I8;
    w->scales = scales;
    w->group = group;
    return MC_OK;
}

static bool owned_by(const mc_model *m, const void *p) {
    for (int64_t i = 0; i < m->n_owned; i++) {
        if (m->owned[i] == p) {
            return true;
        }
    }
    return false;
}

static mc_status convert_one(mc_model *m, mc_weight *w, mc_weight_dtype target, mc_error *err) {
    static const int dtype_of[] = { -1, MC_DTYPE_F32, MC_DTYPE_F16, MC_DTYPE_BF16, MC_DTYPE_I8 };
    const int want = dtype_of[target];
    if (w->dtype == want) {
        return MC_OK;
    }
    // The source leaves resident memory once converted when it lives in the file mapping, so peak memory is the
    // converted model plus one matrix, not both models.
    const void *src = w->data;
    const size_t src_bytes = (size_t)(w->rows * w->cols * mc_dtype_size(w->dtype));
    const bool mapped = !owned_by(m, src);
    mc_status st;
    if (want == MC_DTYPE_I8) {
        st = to_int8(m, w, MC_INT8_GROUP, err);
    } else {
        st = to_float(m, w, want, err);
    }
    if (st == MC_OK && mapped) {
        mc_mapping_release(src, src_bytes);
    }
    return st;
}

static mc_status to_float(mc_model *m, mc_weight *w, int want, mc_error *err) {
    const int64_t n = w->rows * w->cols;
    void *out = mc_model_own(m, (size_t)(n * mc_dtype_size(want)));
    if (out == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "convert: out of memory for a [%lld, %lld] matrix", (long long)w->rows,
                       (long long)w->cols);
    }
    for (int64_t i = 0; i < n; i++) {
        float v = mc_weight_at(w, i / w->cols, i % w->cols);
        if (want == MC_DTYPE_F32) {
            ((float *)out)[i] = v;
        } else if (want == MC_DTYPE_BF16) {
            ((uint16_t *)out)[i] = mc_f32_to_bf16(v);
        } else {
            ((uint16_t *)out)[i] = mc_f32_to_f16(v);
        }
    }
    w->data = out;
    w->dtype = want;
    w->scales = NULL;
    w->group = 0;
    return MC_OK;
}

mc_status mc_model_convert_weights(mc_model *m, mc_weight_dtype target, mc_error *err) {
    if (target == MC_WEIGHTS_AS_STORED) {
        return MC_OK;
    }
    if ((int)target < 0 || target > MC_WEIGHTS_INT8) {
        return mc_fail(err, MC_ERR_INVALID, "load: unknown weight dtype %d", (int)target);
    }
    const bool tied = m->lm_head.data == m->embed.data;
    mc_status st = convert_one(m, &m->embed, target, err);
    for (int64_t i = 0; st == MC_OK && i < m->cfg.num_hidden_layers; i++) {
        mc_layer *l = &m->layers[i];
        mc_weight *ws[] = { &l->in_proj, &l->x_proj, &l->dt_proj, &l->out_proj };
        for (size_t j = 0; st == MC_OK && j < sizeof(ws) / sizeof(ws[0]); j++) {
            st = convert_one(m, ws[j], target, err);
        }
    }
    if (st == MC_OK) {
        if (tied) {
            m->lm_head = m->embed;
        } else {
            st = convert_one(m, &m->lm_head, target, err);
        }
    }
    return st;
}
