// AdamW, learning-rate schedules and gradient clipping with torch's and transformers' exact operation order
// (formulas in optim.h), and the AdamW state file. Gradients and the loop that calls these are elsewhere.
#include "train/optim.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "io/safetensors.h"
#include "kernels/ref/ref.h"

struct mc_adamw {
    int64_t n_params;
    mc_optim_group *groups;
    int64_t n_groups;
    mc_adamw_opts o;
    float *m, *v;   // first and second moments, compact: group k's at moff[k] (a rank of a sharded optimizer
    int64_t *moff;  // holds only its own groups, so its memory is its share)
    int64_t n_state; // floats in m and in v: the groups' total
    int64_t step;
    // Bound to a device backend (mc_adamw_bind): the moments live in its memory as dm, dv (same compact layout) and
    // m, v are host copies, stale while host_stale.
    const mc_ops *ops;
    const mc_exec *ex;
    float *dm, *dv;
    bool host_stale;
};

// ---------------------------------------------------------------------------------------------------------------
// The Trainer's weight-decay rule

static bool has_component(const char *s, const char *comp) {
    const size_t n = strlen(comp);
    for (const char *p = strstr(s, comp); p != NULL; p = strstr(p + 1, comp)) {
        if ((p == s || p[-1] == '.') && (p[n] == '\0' || p[n] == '.')) {
            return true;
        }
    }
    return false;
}

static bool has_suffix_component(const char *s, const char *suffix) { // "_norm" followed by the end or a dot
    const size_t n = strlen(suffix);
    for (const char *p = strstr(s, suffix); p != NULL; p = strstr(p + 1, suffix)) {
        if (p[n] == '\0' || p[n] == '.') {
            return true;
        }
    }
    return false;
}

bool mc_optim_name_decays(const char *name) {
    // transformers tests its patterns on every dotted suffix of the name; on the whole lower-cased name that is
    // the same test, with "(?:^|\.)norm(?:$|\.)" meaning a whole component.
    const size_t n = strlen(name);
    char *s = malloc(n + 1);
    if (s == NULL) {
        return true; // cannot happen in practice; decaying is the Trainer's default
    }
    for (size_t i = 0; i <= n; i++) {
        s[i] = (char)tolower((unsigned char)name[i]);
    }
    const bool exempt = strstr(s, "bias") != NULL || strstr(s, "layernorm") != NULL || strstr(s, "rmsnorm") != NULL ||
                        has_component(s, "norm") || has_suffix_component(s, "_norm");
    free(s);
    return !exempt;
}

// ---------------------------------------------------------------------------------------------------------------
// AdamW

void mc_adamw_opts_init(mc_adamw_opts *opts) {
    *opts = (mc_adamw_opts){ .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.0 };
}

static int cmp_group(const void *a, const void *b) {
    const mc_optim_group *x = a, *y = b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static mc_status check_groups(int64_t n_params, const mc_optim_group *groups, int64_t n_groups, mc_error *err) {
    if (n_params < 0 || n_groups < 0 || (n_groups > 0 && groups == NULL)) {
        return mc_fail(err, MC_ERR_INVALID, "optimizer: %lld parameters in %lld groups", (long long)n_params,
                       (long long)n_groups);
    }
    for (int64_t i = 0; i < n_groups; i++) {
        const mc_optim_group *g = &groups[i];
        if (g->offset < 0 || g->numel < 0 || g->offset > n_params - g->numel) {
            return mc_fail(err, MC_ERR_INVALID, "optimizer: group %lld (offset %lld, numel %lld) is outside [0, %lld)",
                           (long long)i, (long long)g->offset, (long long)g->numel, (long long)n_params);
        }
    }
    mc_optim_group *sorted = malloc((size_t)(n_groups > 0 ? n_groups : 1) * sizeof(*sorted));
    if (sorted == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "optimizer: out of memory for %lld groups", (long long)n_groups);
    }
    memcpy(sorted, groups, (size_t)n_groups * sizeof(*sorted));
    qsort(sorted, (size_t)n_groups, sizeof(*sorted), cmp_group);
    mc_status st = MC_OK;
    for (int64_t i = 1; i < n_groups && st == MC_OK; i++) {
        if (sorted[i - 1].offset + sorted[i - 1].numel > sorted[i].offset) {
            st = mc_fail(err, MC_ERR_INVALID, "optimizer: groups at offsets %lld and %lld overlap",
                         (long long)sorted[i - 1].offset, (long long)sorted[i].offset);
        }
    }
    free(sorted);
    return st;
}

static mc_status check_opts(const mc_adamw_opts *o, mc_error *err) {
    if (!(o->beta1 >= 0 && o->beta1 < 1) || !(o->beta2 >= 0 && o->beta2 < 1)) {
        return mc_fail(err, MC_ERR_INVALID, "adamw: betas (%g, %g) must lie in [0, 1)", o->beta1, o->beta2);
    }
    if (!(o->eps >= 0 && isfinite(o->eps))) {
        return mc_fail(err, MC_ERR_INVALID, "adamw: eps is %g, must be finite and >= 0", o->eps);
    }
    if (!(o->weight_decay >= 0 && isfinite(o->weight_decay))) {
        return mc_fail(err, MC_ERR_INVALID, "adamw: weight_decay is %g, must be finite and >= 0", o->weight_decay);
    }
    return MC_OK;
}

mc_status mc_adamw_new(int64_t n_params, const mc_optim_group *groups, int64_t n_groups, const mc_adamw_opts *opts,
                       mc_adamw **out, mc_error *err) {
    *out = NULL;
    mc_adamw_opts o;
    if (opts != NULL) {
        o = *opts;
    } else {
        mc_adamw_opts_init(&o);
    }
    mc_status st = check_groups(n_params, groups, n_groups, err);
    if (st == MC_OK) {
        st = check_opts(&o, err);
    }
    if (st != MC_OK) {
        return st;
    }
    mc_adamw *opt = calloc(1, sizeof(*opt));
    if (opt != NULL) {
        opt->n_params = n_params;
        opt->n_groups = n_groups;
        opt->o = o;
        opt->groups = malloc((size_t)(n_groups > 0 ? n_groups : 1) * sizeof(mc_optim_group));
        opt->moff = malloc((size_t)(n_groups > 0 ? n_groups : 1) * sizeof(int64_t));
        for (int64_t k = 0; k < n_groups; k++) {
            if (opt->moff != NULL) {
                opt->moff[k] = opt->n_state;
            }
            opt->n_state += groups[k].numel;
        }
        opt->m = calloc((size_t)(opt->n_state > 0 ? opt->n_state : 1), sizeof(float));
        opt->v = calloc((size_t)(opt->n_state > 0 ? opt->n_state : 1), sizeof(float));
    }
    if (opt == NULL || opt->groups == NULL || opt->moff == NULL || opt->m == NULL || opt->v == NULL) {
        mc_adamw_free(opt);
        return mc_fail(err, MC_ERR_NOMEM, "adamw: out of memory for %lld parameters", (long long)n_params);
    }
    memcpy(opt->groups, groups, (size_t)n_groups * sizeof(mc_optim_group));
    *out = opt;
    return MC_OK;
}

void mc_adamw_free(mc_adamw *opt) {
    if (opt == NULL) {
        return;
    }
    if (opt->ops != NULL) {
        opt->ops->free(opt->ex, opt->dm);
        opt->ops->free(opt->ex, opt->dv);
    }
    free(opt->groups);
    free(opt->moff);
    free(opt->m);
    free(opt->v);
    free(opt);
}

int64_t mc_adamw_steps(const mc_adamw *opt) {
    return opt->step;
}

mc_status mc_adamw_bind(mc_adamw *opt, const mc_ops *ops, const mc_exec *ex, mc_error *err) {
    if (ops->host_memory || opt->ops != NULL) {
        return MC_OK;
    }
    const size_t bytes = (size_t)(opt->n_state > 0 ? opt->n_state : 1) * sizeof(float);
    mc_exec e = *ex;
    e.err = err;
    float *dm = NULL, *dv = NULL;
    mc_status st = ops->alloc(&e, (void **)&dm, bytes);
    if (st == MC_OK) st = ops->alloc(&e, (void **)&dv, bytes);
    if (st == MC_OK) st = ops->upload(&e, dm, opt->m, bytes);
    if (st == MC_OK) st = ops->upload(&e, dv, opt->v, bytes);
    if (st != MC_OK) {
        ops->free(&e, dm);
        ops->free(&e, dv);
        return st;
    }
    opt->ops = ops;
    opt->ex = ex;
    opt->dm = dm;
    opt->dv = dv;
    return MC_OK;
}

// The host copies of bound moments, brought up to date.
static mc_status fetch_moments(mc_adamw *opt, mc_error *err) {
    if (opt->ops == NULL || !opt->host_stale) {
        return MC_OK;
    }
    const size_t bytes = (size_t)opt->n_state * sizeof(float);
    mc_exec e = *opt->ex;
    e.err = err;
    mc_status st = opt->ops->download(&e, opt->m, opt->dm, bytes);
    if (st == MC_OK) st = opt->ops->download(&e, opt->v, opt->dv, bytes);
    if (st != MC_OK) {
        return st;
    }
    opt->host_stale = false;
    return MC_OK;
}

mc_status mc_adamw_step(mc_adamw *opt, float *params, const float *grads, double lr, mc_error *err) {
    if (!(lr >= 0 && isfinite(lr))) {
        return mc_fail(err, MC_ERR_INVALID, "adamw: learning rate %g, must be finite and >= 0", lr);
    }
    const mc_adamw_opts *o = &opt->o;
    const int64_t t = ++opt->step;
    // The scalars as torch forms them: Python doubles, converted to f32 where they meet an f32 tensor.
    const double bc1 = 1.0 - pow(o->beta1, (double)t), bc2 = 1.0 - pow(o->beta2, (double)t);
    mc_adamw_args a = { .decay = 1.0f,
                        .w1 = (float)(1.0 - o->beta1),
                        .beta2 = (float)o->beta2,
                        .w2 = (float)(1.0 - o->beta2),
                        .neg_step = (float)-(lr / bc1),
                        .bc2_sqrt = (float)sqrt(bc2),
                        .eps = (float)o->eps };
    const float decay = (float)(1.0 - lr * o->weight_decay);
    for (int64_t k = 0, n; k < opt->n_groups; k += n) {
        const mc_optim_group *grp = &opt->groups[k];
        const bool decays = grp->decay && o->weight_decay != 0;
        a.decay = decays ? decay : 1.0f; // p · 1 is p: the undecayed path unchanged
        // The groups after k that continue it in the parameters and the moments with the same decay go in the same
        // call (elementwise, so one launch on a device instead of one per tensor).
        int64_t numel = grp->numel;
        for (n = 1; k + n < opt->n_groups; n++) {
            const mc_optim_group *next = &opt->groups[k + n];
            if (next->offset != grp->offset + numel || opt->moff[k + n] != opt->moff[k] + numel ||
                (next->decay && o->weight_decay != 0) != decays) {
                break;
            }
            numel += next->numel;
        }
        float *p = params + grp->offset;
        const float *g = grads + grp->offset;
        if (opt->ops == NULL) {
            mc_ref_adamw(p, g, opt->m + opt->moff[k], opt->v + opt->moff[k], numel, &a);
            continue;
        }
        mc_exec e = *opt->ex;
        e.err = err;
        mc_status st = opt->ops->adamw(&e, p, g, opt->dm + opt->moff[k], opt->dv + opt->moff[k], numel, &a);
        opt->host_stale = true;
        if (st != MC_OK) {
            return st;
        }
    }
    return MC_OK;
}

// ---------------------------------------------------------------------------------------------------------------
// State file

mc_status mc_adamw_export(mc_adamw *opt, float *m_full, float *v_full, mc_error *err) {
    mc_status st = fetch_moments(opt, err);
    if (st != MC_OK) {
        return st;
    }
    for (int64_t k = 0; k < opt->n_groups; k++) {
        const mc_optim_group *g = &opt->groups[k];
        memcpy(m_full + g->offset, opt->m + opt->moff[k], (size_t)g->numel * sizeof(float));
        memcpy(v_full + g->offset, opt->v + opt->moff[k], (size_t)g->numel * sizeof(float));
    }
    return MC_OK;
}

mc_status mc_adamw_write_state(const char *path, int64_t n_params, const mc_optim_group *groups, int64_t n_groups,
                               const float *m_full, const float *v_full, int64_t step, mc_error *err) {
    int64_t *layout = malloc((size_t)(n_groups > 0 ? n_groups : 1) * 3 * sizeof(int64_t));
    if (layout == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "%s: out of memory", path);
    }
    for (int64_t k = 0; k < n_groups; k++) {
        layout[3 * k] = groups[k].offset;
        layout[3 * k + 1] = groups[k].numel;
        layout[3 * k + 2] = groups[k].decay;
    }
    const int64_t bytes = n_params * (int64_t)sizeof(float);
    const mc_st_entry e[] = {
        { .name = "groups",
          .dtype = "I64",
          .ndim = 2,
          .shape = { n_groups, 3 },
          .data = layout,
          .nbytes = n_groups * 3 * (int64_t)sizeof(int64_t) },
        { .name = "m", .dtype = "F32", .ndim = 1, .shape = { n_params }, .data = m_full, .nbytes = bytes },
        { .name = "step", .dtype = "I64", .ndim = 1, .shape = { 1 }, .data = &step, .nbytes = 8 },
        { .name = "v", .dtype = "F32", .ndim = 1, .shape = { n_params }, .data = v_full, .nbytes = bytes },
    };
    mc_status st = mc_st_write(path, e, 4, err);
    free(layout);
    return st;
}

mc_status mc_adamw_save(mc_adamw *opt, const char *path, mc_error *err) {
    float *m = calloc((size_t)(opt->n_params > 0 ? opt->n_params : 1), sizeof(float));
    float *v = calloc((size_t)(opt->n_params > 0 ? opt->n_params : 1), sizeof(float));
    mc_status st = m != NULL && v != NULL ? MC_OK : mc_fail(err, MC_ERR_NOMEM, "%s: out of memory", path);
    if (st == MC_OK) st = mc_adamw_export(opt, m, v, err);
    if (st == MC_OK) {
        st = mc_adamw_write_state(path, opt->n_params, opt->groups, opt->n_groups, m, v, opt->step, err);
    }
    free(m);
    free(v);
    return st;
}

// The tensor name of dtype with shape [d0] (d1 < 0) or [d0, d1], or an error naming what differs.
static mc_status find_tensor(const mc_st_set *set, const char *path, const char *name, const char *dtype, int64_t d0,
                             int64_t d1, const mc_st_tensor **out, mc_error *err) {
    const mc_st_tensor *t = mc_st_find(set, name);
    if (t == NULL) {
        return mc_fail(err, MC_ERR_FORMAT, "%s: no tensor \"%s\"", path, name);
    }
    if (strcmp(t->dtype_name, dtype) != 0) {
        return mc_fail(err, MC_ERR_FORMAT, "%s: tensor %s is %s, expected %s", path, name, t->dtype_name, dtype);
    }
    const int ndim = d1 < 0 ? 1 : 2;
    if (t->ndim != ndim || t->shape[0] != d0 || (ndim == 2 && t->shape[1] != d1)) {
        char want[48];
        if (ndim == 1) {
            snprintf(want, sizeof(want), "[%lld]", (long long)d0);
        } else {
            snprintf(want, sizeof(want), "[%lld, %lld]", (long long)d0, (long long)d1);
        }
        return mc_fail(err, MC_ERR_FORMAT, "%s: tensor %s has %d dims (first %lld), expected %s", path, name, t->ndim,
                       (long long)(t->ndim > 0 ? t->shape[0] : 0), want);
    }
    *out = t;
    return MC_OK;
}

static int64_t load_i64(const void *data, int64_t i) { // little-endian, any alignment
    const unsigned char *b = (const unsigned char *)data + 8 * i;
    uint64_t x = 0;
    for (int k = 7; k >= 0; k--) {
        x = x << 8 | b[k];
    }
    return (int64_t)x;
}

// Every group of opt must be a group of the file (the file may hold more: a sharded optimizer loads its share of a
// whole state). Sets where[k] to the file's index of opt's group k.
static mc_status check_layout(const mc_adamw *opt, const mc_st_tensor *groups, const char *path, mc_error *err) {
    const int64_t n_file = groups->shape[0];
    for (int64_t k = 0; k < opt->n_groups; k++) {
        const mc_optim_group *g = &opt->groups[k];
        bool found = false;
        for (int64_t j = 0; j < n_file && !found; j++) {
            found = load_i64(groups->data, 3 * j) == g->offset && load_i64(groups->data, 3 * j + 1) == g->numel &&
                    load_i64(groups->data, 3 * j + 2) == (int64_t)g->decay;
        }
        if (!found) {
            return mc_fail(err, MC_ERR_FORMAT, "%s: no group (offset %lld, numel %lld, decay %d) as the optimizer's "
                                               "group %lld", path, (long long)g->offset, (long long)g->numel, g->decay,
                           (long long)k);
        }
    }
    return MC_OK;
}

mc_status mc_adamw_load(mc_adamw *opt, const char *path, mc_error *err) {
    mc_st_set *set = NULL;
    mc_status st = mc_st_open(path, &set, err);
    const mc_st_tensor *m = NULL, *v = NULL, *step = NULL, *groups = NULL;
    if (st == MC_OK) {
        groups = mc_st_find(set, "groups");
        st = groups != NULL && groups->ndim == 2 ? find_tensor(set, path, "groups", "I64", groups->shape[0], 3, &groups, err)
                                                 : mc_fail(err, MC_ERR_FORMAT, "%s: no [n, 3] tensor \"groups\"", path);
    }
    if (st == MC_OK) {
        st = check_layout(opt, groups, path, err);
    }
    if (st == MC_OK) {
        st = find_tensor(set, path, "m", "F32", opt->n_params, -1, &m, err);
    }
    if (st == MC_OK) {
        st = find_tensor(set, path, "v", "F32", opt->n_params, -1, &v, err);
    }
    if (st == MC_OK) {
        st = find_tensor(set, path, "step", "I64", 1, -1, &step, err);
    }
    if (st == MC_OK && load_i64(step->data, 0) < 0) {
        st = mc_fail(err, MC_ERR_FORMAT, "%s: step is %lld, must be >= 0", path, (long long)load_i64(step->data, 0));
    }
    if (st == MC_OK) {
        for (int64_t k = 0; k < opt->n_groups; k++) {
            const mc_optim_group *g = &opt->groups[k];
            memcpy(opt->m + opt->moff[k], (const char *)m->data + g->offset * 4, (size_t)g->numel * sizeof(float));
            memcpy(opt->v + opt->moff[k], (const char *)v->data + g->offset * 4, (size_t)g->numel * sizeof(float));
        }
        opt->step = load_i64(step->data, 0);
        opt->host_stale = false;
        if (opt->ops != NULL) {
            const size_t bytes = (size_t)opt->n_state * sizeof(float);
            mc_exec e = *opt->ex;
            e.err = err;
            st = opt->ops->upload(&e, opt->dm, opt->m, bytes);
            if (st == MC_OK) st = opt->ops->upload(&e, opt->dv, opt->v, bytes);
        }
    }
    mc_st_close(set);
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// Schedules

void mc_lr_schedule_init(mc_lr_schedule *s) {
    *s = (mc_lr_schedule){ .kind = MC_LR_LINEAR, .lr = 5e-5, .warmup_steps = 0, .total_steps = 0, .num_cycles = 0.5 };
}

mc_status mc_lr_schedule_check(const mc_lr_schedule *s, mc_error *err) {
    if ((int)s->kind < 0 || s->kind > MC_LR_CONSTANT_WITH_WARMUP) {
        return mc_fail(err, MC_ERR_INVALID, "lr schedule: unknown kind %d", (int)s->kind);
    }
    if (!(s->lr >= 0 && isfinite(s->lr))) {
        return mc_fail(err, MC_ERR_INVALID, "lr schedule: learning rate %g, must be finite and >= 0", s->lr);
    }
    if (s->warmup_steps < 0) {
        return mc_fail(err, MC_ERR_INVALID, "lr schedule: warmup_steps %lld, must be >= 0", (long long)s->warmup_steps);
    }
    if ((s->kind == MC_LR_LINEAR || s->kind == MC_LR_COSINE) && s->total_steps < 1) {
        return mc_fail(err, MC_ERR_INVALID, "lr schedule: total_steps %lld, must be >= 1 for %s",
                       (long long)s->total_steps, s->kind == MC_LR_LINEAR ? "linear" : "cosine");
    }
    if (!isfinite(s->num_cycles)) {
        return mc_fail(err, MC_ERR_INVALID, "lr schedule: num_cycles %g, must be finite", s->num_cycles);
    }
    return MC_OK;
}

// transformers' lambdas, with its int/float conversions: every quotient is of two doubles.
static double lr_lambda(const mc_lr_schedule *s, int64_t step) {
    const int64_t W = s->warmup_steps, S = s->total_steps;
    if (s->kind == MC_LR_CONSTANT) {
        return 1.0;
    }
    if (step < W) {
        return (double)step / (double)(W > 1 ? W : 1);
    }
    switch (s->kind) {
        case MC_LR_LINEAR: {
            const double f = (double)(S - step) / (double)(S - W > 1 ? S - W : 1);
            return f > 0.0 ? f : 0.0;
        }
        case MC_LR_COSINE: {
            const double progress = (double)(step - W) / (double)(S - W > 1 ? S - W : 1);
            const double f = 0.5 * (1.0 + cos(M_PI * s->num_cycles * 2.0 * progress));
            return f > 0.0 ? f : 0.0;
        }
        default: // MC_LR_CONSTANT_WITH_WARMUP
            return 1.0;
    }
}

double mc_lr_schedule_at(const mc_lr_schedule *s, int64_t step) {
    return s->lr * lr_lambda(s, step); // LambdaLR: base_lr * lambda(last_epoch)
}

mc_status mc_lr_kind_parse(const char *name, mc_lr_kind *kind, mc_error *err) {
    static const char *const names[] = { "linear", "cosine", "constant", "constant_with_warmup" };
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, names[i]) == 0) {
            *kind = (mc_lr_kind)i;
            return MC_OK;
        }
    }
    char esc[64];
    mc_escape(esc, sizeof(esc), name, strlen(name));
    return mc_fail(err, MC_ERR_INVALID,
                   "lr scheduler \"%s\": expected linear, cosine, constant or constant_with_warmup", esc);
}

int64_t mc_lr_warmup_steps(double warmup, int64_t total_steps) {
    if (!(warmup > 0)) {
        return 0;
    }
    return warmup >= 1 ? (int64_t)warmup : (int64_t)ceil((double)total_steps * warmup);
}

// ---------------------------------------------------------------------------------------------------------------
// Clipping

// The clip factor from the groups' sums of squares (double): torch's per-group norms rounded to f32, their norm G,
// c = max_norm · (1 / (G + 1e-6)) clamped to 1 (NaN kept).
static float clip_factor(const double *sumsq, int64_t n_groups, double max_norm, double *total_norm) {
    double sum = 0; // of the squared per-group norms, each rounded to f32 as torch keeps them
    for (int64_t k = 0; k < n_groups; k++) {
        const double norm = (double)(float)sqrt(sumsq[k]);
        sum += norm * norm;
    }
    const float norm = (float)sqrt(sum);
    if (total_norm != NULL) {
        *total_norm = norm;
    }
    if (max_norm == 0) {
        return 1.0f;
    }
    const float c = (1.0f / (norm + 1e-6f)) * (float)max_norm; // max_norm / (norm + 1e-6) as Tensor.__rtruediv__
    return c < 1.0f ? c : isnan(c) ? c : 1.0f;                 // torch.clamp(max=1.0) keeps NaN
}

mc_status mc_grads_clip_norm(float *grads, const mc_optim_group *groups, int64_t n_groups, double max_norm,
                             double *total_norm, mc_error *err) {
    if (!(max_norm >= 0 && isfinite(max_norm))) {
        return mc_fail(err, MC_ERR_INVALID, "max_grad_norm is %g, must be finite and >= 0", max_norm);
    }
    double *sumsq = malloc((size_t)(n_groups > 0 ? n_groups : 1) * sizeof(double));
    if (sumsq == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "clipping: out of memory");
    }
    for (int64_t k = 0; k < n_groups; k++) {
        sumsq[k] = mc_ref_sumsq(grads + groups[k].offset, groups[k].numel);
    }
    const float c = clip_factor(sumsq, n_groups, max_norm, total_norm);
    free(sumsq);
    if (c == 1.0f) {
        return MC_OK; // multiplying by 1 changes nothing
    }
    for (int64_t k = 0; k < n_groups; k++) {
        float *g = grads + groups[k].offset;
        for (int64_t i = 0; i < groups[k].numel; i++) {
            g[i] = g[i] * c;
        }
    }
    return MC_OK;
}

mc_status mc_grads_clip_norm_on(const mc_ops *ops, const mc_exec *ex, float *grads, const mc_optim_group *groups,
                                int64_t n_groups, double max_norm, double *total_norm, mc_error *err) {
    if (!(max_norm >= 0 && isfinite(max_norm))) {
        return mc_fail(err, MC_ERR_INVALID, "max_grad_norm is %g, must be finite and >= 0", max_norm);
    }
    mc_exec e = *ex;
    e.err = err;
    const size_t bytes = (size_t)(n_groups > 0 ? n_groups : 1) * sizeof(double);
    double *dev = NULL, *sumsq = malloc(bytes);
    mc_status st = sumsq != NULL ? ops->alloc(&e, (void **)&dev, bytes) : mc_fail(err, MC_ERR_NOMEM, "clipping: oom");
    for (int64_t k = 0; st == MC_OK && k < n_groups; k++) {
        st = ops->sumsq(&e, dev + k, grads + groups[k].offset, groups[k].numel);
    }
    if (st == MC_OK) st = ops->download(&e, sumsq, dev, (size_t)n_groups * sizeof(double));
    const float c = st == MC_OK ? clip_factor(sumsq, n_groups, max_norm, total_norm) : 1.0f;
    for (int64_t k = 0, n; st == MC_OK && c != 1.0f && k < n_groups; k += n) {
        int64_t numel = groups[k].numel; // contiguous groups scaled in one call
        for (n = 1; k + n < n_groups && groups[k + n].offset == groups[k].offset + numel; n++) {
            numel += groups[k + n].numel;
        }
        st = ops->axpby(&e, grads + groups[k].offset, c, NULL, 0.0f, numel);
    }
    ops->free(&e, dev);
    free(sumsq);
    return st;
}
