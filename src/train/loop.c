// The training loop: transformers' Trainer step (gradient accumulation over micro-batches, clipping, AdamW, the
// LR schedule) over SFTTrainer's batches, with logging (log.jsonl, loss.svg), checkpoints that --resume continues
// exactly, and an output folder that transformers or PEFT loads.
#define _GNU_SOURCE // nftw
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/error.h"
#include "base/file.h"
#include "io/safetensors.h"
#include "train/batch.h"
#include "train/data.h"
#include "train/dist.h"
#include "train/optim.h"
#include "train/trainer.h"

void mc_train_opts_init(mc_train_opts *o) {
    memset(o, 0, sizeof(*o));
    o->text_field = "text";
    o->max_length = 1024;
    o->epochs = 3;
    o->max_steps = -1;
    o->batch_size = 8;
    o->grad_accum = 1;
    o->lr = 5e-5;
    o->max_grad_norm = 1.0;
    o->lr_scheduler = "linear";
    o->seed = 42;
    o->shuffle = true;
    o->logging_steps = 500;
    o->save_steps = 500;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// ---------------------------------------------------------------------------------------------------------------
// Files and folders.

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void rm_tree(const char *path) {
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static mc_status make_dir(const char *dir, mc_error *err) {
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        return mc_fail(err, MC_ERR_IO, "%s: cannot create the folder: %s", dir, strerror(errno));
    }
    return MC_OK;
}

static mc_status write_text(const char *dir, const char *name, const char *text, mc_error *err) {
    char *path = mc_path_join(dir, name);
    mc_file_out *f = NULL;
    mc_status st = path != NULL ? mc_file_out_open(path, &f, err) : mc_fail(err, MC_ERR_NOMEM, "out of memory");
    if (st == MC_OK) st = mc_file_out_write(f, text, strlen(text), err);
    if (st == MC_OK) {
        st = mc_file_out_commit(f, err);
    } else {
        mc_file_out_abort(f);
    }
    free(path);
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// The run: what a checkpoint must match to be resumed.

typedef struct run {
    const mc_train_opts *o;
    const mc_model *model;
    mc_dataset *ds;
    mc_batcher *it;
    mc_trainer *t;
    mc_adamw *opt;
    mc_optim_group *groups; // every trainable tensor
    int64_t n_groups;
    int *owner;             // [n_groups] the rank whose optimizer shard holds each tensor (ZeRO stage 1)
    int rank, n_ranks;
    bool on_device; // one rank on a device backend: the optimizer runs there (else on host mirrors)
    mc_lr_schedule sched;
    int64_t total_steps, updates_per_epoch;
    const char *log_dir;
    char fingerprint[512];
    // micro-batch copies of one optimizer step
    int32_t *ids, *labels;
    int64_t cap;
    // truncated BPTT: batch_size streams of consecutive blocks; row b of step k is block b·streams_len + k
    int64_t streams_len;
    mc_batch_pos spos;
    int32_t *sids, *slabels;
    int64_t slen[1024], sexample[1024];
} run;

// ---------------------------------------------------------------------------------------------------------------
// Batches: the batcher's, or with --tbptt the streams' (each row continues the row of the previous batch, and the
// trainer carries its state).

static mc_batch_pos batch_pos(const run *r) {
    return r->o->tbptt ? r->spos : mc_batcher_pos(r->it);
}

static int64_t batches_per_epoch(const run *r) {
    return r->o->tbptt ? r->streams_len : mc_batcher_steps_per_epoch(r->it);
}

static mc_status batch_seek(run *r, mc_batch_pos pos, mc_error *err) {
    if (!r->o->tbptt) {
        return mc_batcher_seek(r->it, pos, err);
    }
    if (pos.epoch < 0 || pos.index < 0 || pos.index >= r->streams_len) {
        return mc_fail(err, MC_ERR_INVALID, "train: batch position %lld of epoch %lld is outside the run",
                       (long long)pos.index, (long long)pos.epoch);
    }
    r->spos = pos;
    return MC_OK;
}

static mc_status next_batch(run *r, mc_batch *b, mc_error *err) {
    if (!r->o->tbptt) {
        return mc_batcher_next(r->it, b, err);
    }
    const int64_t B = r->o->batch_size, k = r->spos.index;
    if (k == 0) { // a new pass over the streams starts from an empty state
        mc_status st = mc_trainer_set_carry(r->t, B, err);
        if (st != MC_OK) {
            return st;
        }
    }
    int64_t T = 0;
    for (int64_t row = 0; row < B; row++) {
        int64_t len = 0;
        mc_dataset_example(r->ds, row * r->streams_len + k, NULL, NULL, &len, NULL);
        T = len > T ? len : T;
    }
    *b = (mc_batch){ .n_seq = B, .n_tok = T, .ids = r->sids, .labels = r->slabels, .len = r->slen,
                     .example = r->sexample, .pos = r->spos };
    for (int64_t row = 0; row < B; row++) {
        const int32_t *ids = NULL, *labels = NULL;
        int64_t len = 0;
        r->sexample[row] = row * r->streams_len + k;
        mc_dataset_example(r->ds, r->sexample[row], &ids, &labels, &len, NULL);
        r->slen[row] = len;
        for (int64_t t = 0; t < T; t++) { // a short last block is padded and masked
            r->sids[row * T + t] = t < len ? ids[t] : 0;
            r->slabels[row * T + t] = t < len ? labels[t] : -100;
            b->n_targets += t >= 1 && t < len && labels[t] != -100;
        }
    }
    b->n_targets_global = b->n_targets;
    r->spos.index = k + 1 < r->streams_len ? k + 1 : 0;
    r->spos.epoch += k + 1 < r->streams_len ? 0 : 1;
    return MC_OK;
}

// The settings a resumed run must share with the one that wrote the checkpoint.
static void make_fingerprint(run *r) {
    const mc_train_opts *o = r->o;
    const mc_config *c = mc_model_config(r->model);
    const mc_lora_spec *l = &r->t->spec;
    snprintf(r->fingerprint, sizeof(r->fingerprint),
             "model %lldx%lldx%lld vocab %lld; data %lld examples %lld tokens; global batch %lld accum %lld; seed %llu "
             "shuffle %d; max_length %lld packing %d tbptt %d; %s r %d alpha %g rslora %d targets %u bias %d",
             (long long)c->num_hidden_layers, (long long)c->hidden_size, (long long)c->intermediate_size,
             (long long)c->vocab_size, (long long)mc_dataset_count(r->ds), (long long)mc_dataset_n_tokens(r->ds),
             (long long)(o->batch_size * r->n_ranks), (long long)o->grad_accum, (unsigned long long)o->seed, (int)o->shuffle,
             (long long)o->max_length, (int)o->packing, (int)o->tbptt, r->t->lora ? "lora" : "full", r->t->lora ? l->r : 0,
             r->t->lora ? l->alpha : 0, r->t->lora ? (int)l->use_rslora : 0, r->t->lora ? l->targets : 0,
             r->t->lora ? (int)l->bias : 0);
}

// The carried recurrent state (--tbptt) as carry.safetensors: "conv" and "ssm", F32, flat.
static mc_status carry_io(run *r, const char *dir, bool save, mc_error *err) {
    float *conv = NULL, *ssm = NULL;
    int64_t n_conv = 0, n_ssm = 0;
    mc_trainer_carry_floats(r->t, &conv, &ssm, &n_conv, &n_ssm);
    char *path = mc_path_join(dir, "carry.safetensors");
    float *host = malloc((size_t)(n_conv + n_ssm) * sizeof(float));
    mc_exec ex = r->t->exec;
    ex.err = err;
    mc_status st = path != NULL && host != NULL ? MC_OK : mc_fail(err, MC_ERR_NOMEM, "train: out of memory");
    if (st == MC_OK && save) {
        st = r->t->ops->download(&ex, host, conv, (size_t)n_conv * sizeof(float));
        if (st == MC_OK) st = r->t->ops->download(&ex, host + n_conv, ssm, (size_t)n_ssm * sizeof(float));
        const mc_st_entry e[2] = { { .name = "conv", .dtype = "F32", .ndim = 1, .shape = { n_conv }, .data = host,
                                     .nbytes = n_conv * 4 },
                                   { .name = "ssm", .dtype = "F32", .ndim = 1, .shape = { n_ssm }, .data = host + n_conv,
                                     .nbytes = n_ssm * 4 } };
        if (st == MC_OK) st = mc_st_write(path, e, 2, err);
    } else if (st == MC_OK) {
        mc_st_set *set = NULL;
        st = mc_st_open(path, &set, err);
        const mc_st_tensor *c = st == MC_OK ? mc_st_find(set, "conv") : NULL, *h = st == MC_OK ? mc_st_find(set, "ssm") : NULL;
        if (st == MC_OK && (c == NULL || h == NULL || c->dtype != MC_DTYPE_F32 || h->dtype != MC_DTYPE_F32 ||
                            c->numel != n_conv || h->numel != n_ssm)) {
            st = mc_fail(err, MC_ERR_FORMAT, "%s: not the carried state of this run", path);
        }
        if (st == MC_OK) {
            memcpy(host, c->data, (size_t)n_conv * 4);
            memcpy(host + n_conv, h->data, (size_t)n_ssm * 4);
            st = r->t->ops->upload(&ex, conv, host, (size_t)n_conv * sizeof(float));
        }
        if (st == MC_OK) st = r->t->ops->upload(&ex, ssm, host + n_conv, (size_t)n_ssm * sizeof(float));
        mc_st_close(set);
    }
    free(host);
    free(path);
    return st;
}

// The whole optimizer state (every rank's shard summed into full-size moments) written by rank 0.
static mc_status save_optimizer(run *r, const char *dir, mc_error *err) {
    const int64_t n = r->t->n_params;
    float *m = calloc((size_t)(n > 0 ? n : 1), sizeof(float)), *v = calloc((size_t)(n > 0 ? n : 1), sizeof(float));
    mc_status st = m != NULL && v != NULL ? MC_OK : mc_fail(err, MC_ERR_NOMEM, "train: out of memory");
    if (st == MC_OK) st = mc_adamw_export(r->opt, m, v, err);
    if (st == MC_OK) st = mc_dist_allreduce_f32(m, n, err);
    if (st == MC_OK) st = mc_dist_allreduce_f32(v, n, err);
    char *path = st == MC_OK && r->rank == 0 ? mc_path_join(dir, "optimizer.safetensors") : NULL;
    if (st == MC_OK && r->rank == 0) {
        st = path != NULL ? mc_adamw_write_state(path, n, r->groups, r->n_groups, m, v, mc_adamw_steps(r->opt), err)
                          : mc_fail(err, MC_ERR_NOMEM, "train: out of memory");
    }
    free(path);
    free(m);
    free(v);
    return st;
}

// Every rank takes part (the optimizer state is gathered); rank 0 writes, and the others wait until it has.
static mc_status save_checkpoint_rank0(run *r, int64_t step, mc_error *err);

static mc_status save_checkpoint(run *r, int64_t step, mc_error *err) {
    mc_status st = save_checkpoint_rank0(r, step, err);
    if (r->n_ranks > 1) {
        mc_error e2 = { 0 };
        mc_status b = mc_dist_barrier(st == MC_OK ? err : &e2);
        st = st == MC_OK ? b : st;
    }
    return st;
}

static mc_status save_checkpoint_rank0(run *r, int64_t step, mc_error *err) {
    char final[4096], tmp[4200];
    snprintf(final, sizeof(final), "%s/checkpoint-%lld", r->o->output_dir, (long long)step);
    snprintf(tmp, sizeof(tmp), "%s.tmp-%ld", final, (long)getpid());
    if (r->rank != 0) {
        return save_optimizer(r, tmp, err);
    }
    rm_tree(tmp);
    mc_status st = make_dir(tmp, err);
    if (st == MC_OK) st = mc_trainer_save(r->t, tmp, err);
    if (st == MC_OK) st = save_optimizer(r, tmp, err);
    if (st == MC_OK && r->o->tbptt) {
        st = carry_io(r, tmp, true, err);
    }
    if (st == MC_OK) {
        const mc_batch_pos pos = batch_pos(r);
        cJSON *j = cJSON_CreateObject();
        cJSON_AddNumberToObject(j, "global_step", (double)step);
        cJSON_AddNumberToObject(j, "max_steps", (double)r->total_steps);
        cJSON_AddNumberToObject(j, "batch_epoch", (double)pos.epoch);
        cJSON_AddNumberToObject(j, "batch_index", (double)pos.index);
        cJSON_AddStringToObject(j, "run", r->fingerprint);
        char *text = cJSON_Print(j);
        cJSON_Delete(j);
        st = text != NULL ? write_text(tmp, "trainer_state.json", text, err) : mc_fail(err, MC_ERR_NOMEM, "oom");
        free(text);
    }
    if (st != MC_OK) {
        rm_tree(tmp);
        return st;
    }
    rm_tree(final); // a checkpoint of the same step from an earlier run
    if (rename(tmp, final) != 0) {
        st = mc_fail(err, MC_ERR_IO, "%s: cannot rename the checkpoint into place: %s", final, strerror(errno));
        rm_tree(tmp);
        return st;
    }
    if (r->o->save_total_limit > 0 && r->o->save_steps > 0) { // drop the oldest beyond the limit
        const int64_t drop = step - r->o->save_total_limit * r->o->save_steps;
        if (drop > 0 && drop % r->o->save_steps == 0) {
            snprintf(final, sizeof(final), "%s/checkpoint-%lld", r->o->output_dir, (long long)drop);
            rm_tree(final);
        }
    }
    return MC_OK;
}

// The newest complete checkpoint-N under dir, or dir itself when it holds a trainer_state.json. Owned, or NULL.
static char *find_checkpoint(const char *dir) {
    char *state = mc_path_join(dir, "trainer_state.json");
    const bool is_ckpt = state != NULL && mc_path_is_file(state);
    free(state);
    if (is_ckpt) {
        return strdup(dir);
    }
    DIR *d = opendir(dir);
    if (d == NULL) {
        return NULL;
    }
    long long best = -1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        long long n = -1;
        char tail = 0;
        if (sscanf(e->d_name, "checkpoint-%lld%c", &n, &tail) == 1 && n > best) { // no ".tmp-..." suffix
            char sub[4200];
            snprintf(sub, sizeof(sub), "%s/%s/trainer_state.json", dir, e->d_name);
            best = mc_path_is_file(sub) ? n : best;
        }
    }
    closedir(d);
    if (best < 0) {
        return NULL;
    }
    char path[4200];
    snprintf(path, sizeof(path), "%s/checkpoint-%lld", dir, best);
    return strdup(path);
}

// Restores weights, optimizer and batch position from a checkpoint; *step = its global step.
static mc_status resume(run *r, int64_t *step, mc_error *err) {
    char *ckpt = find_checkpoint(r->o->resume);
    if (ckpt == NULL) {
        return mc_fail(err, MC_ERR_IO, "%s: no complete checkpoint (a folder with trainer_state.json, or "
                                       "checkpoint-N folders holding one)", r->o->resume);
    }
    char *state_path = mc_path_join(ckpt, "trainer_state.json");
    char *text = NULL;
    size_t len = 0;
    mc_status st = mc_file_read(state_path, 1 << 20, &text, &len, err);
    cJSON *j = st == MC_OK ? cJSON_ParseWithLength(text, len) : NULL;
    const cJSON *gs = cJSON_GetObjectItem(j, "global_step"), *be = cJSON_GetObjectItem(j, "batch_epoch");
    const cJSON *bi = cJSON_GetObjectItem(j, "batch_index"), *fp = cJSON_GetObjectItem(j, "run");
    if (st == MC_OK && (!cJSON_IsNumber(gs) || !cJSON_IsNumber(be) || !cJSON_IsNumber(bi) || !cJSON_IsString(fp))) {
        st = mc_fail(err, MC_ERR_FORMAT, "%s: not a mambac trainer state", state_path);
    }
    if (st == MC_OK && strcmp(fp->valuestring, r->fingerprint) != 0) {
        st = mc_fail(err, MC_ERR_INVALID, "%s: the checkpoint is from another run (it has \"%s\", this run is \"%s\")",
                     ckpt, fp->valuestring, r->fingerprint);
    }
    if (st == MC_OK) {
        char *w = mc_path_join(ckpt, r->t->lora ? "adapter_model.safetensors" : "model.safetensors");
        int64_t n = 0;
        st = w != NULL ? mc_trainer_load_tensors(r->t, w, true, &n, err) : mc_fail(err, MC_ERR_NOMEM, "oom");
        free(w);
    }
    if (st == MC_OK) {
        char *o = mc_path_join(ckpt, "optimizer.safetensors");
        st = o != NULL ? mc_adamw_load(r->opt, o, err) : mc_fail(err, MC_ERR_NOMEM, "oom");
        free(o);
    }
    if (st == MC_OK) {
        st = batch_seek(r, (mc_batch_pos){ (int64_t)be->valuedouble, (int64_t)bi->valuedouble }, err);
    }
    if (st == MC_OK && r->o->tbptt && r->spos.index > 0) { // mid-pass: the state the streams had reached
        st = mc_trainer_set_carry(r->t, r->o->batch_size, err);
        if (st == MC_OK) st = carry_io(r, ckpt, false, err);
    }
    if (st == MC_OK) {
        *step = (int64_t)gs->valuedouble;
    }
    cJSON_Delete(j);
    free(text);
    free(state_path);
    free(ckpt);
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// Logging: one JSON object per logging step in log.jsonl, and loss.svg drawn from all of them.

static mc_status append_log(const run *r, const mc_train_stats *s, mc_error *err) {
    char *path = mc_path_join(r->log_dir, "log.jsonl");
    FILE *f = path != NULL ? fopen(path, "a") : NULL;
    if (f == NULL) {
        mc_status st = mc_fail(err, MC_ERR_IO, "%s: cannot append: %s", path != NULL ? path : r->log_dir,
                               strerror(errno));
        free(path);
        return st;
    }
    const double epoch = (double)s->step / (double)r->updates_per_epoch;
    fprintf(f, "{\"step\": %lld, \"epoch\": %.4f, \"loss\": %.9g, \"learning_rate\": %.6g, \"grad_norm\": %.6g, "
               "\"tokens_per_s\": %.1f, \"elapsed_s\": %.3f}\n",
            (long long)s->step, epoch, s->loss, s->lr, s->grad_norm, s->tokens_per_s, s->elapsed_s);
    const bool ok = fclose(f) == 0;
    mc_status st = ok ? MC_OK : mc_fail(err, MC_ERR_IO, "%s: write failed", path);
    free(path);
    return st;
}

static mc_status write_svg(const run *r, mc_error *err) {
    char *path = mc_path_join(r->log_dir, "log.jsonl");
    char *text = NULL;
    size_t len = 0;
    mc_status st = path != NULL ? mc_file_read(path, (size_t)1 << 30, &text, &len, err)
                                : mc_fail(err, MC_ERR_NOMEM, "oom");
    free(path);
    if (st != MC_OK) {
        return st;
    }
    int64_t n = 0, cap = 0;
    double *xs = NULL, *ys = NULL;
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        const cJSON *step = cJSON_GetObjectItem(j, "step"), *loss = cJSON_GetObjectItem(j, "loss");
        if (cJSON_IsNumber(step) && cJSON_IsNumber(loss) && isfinite(loss->valuedouble)) {
            if (n == cap) {
                cap = cap > 0 ? 2 * cap : 256;
                double *nx = realloc(xs, (size_t)cap * sizeof(double)), *ny = nx != NULL ? realloc(ys, (size_t)cap * sizeof(double)) : NULL;
                if (nx != NULL) xs = nx;
                if (ny == NULL) {
                    cJSON_Delete(j);
                    break;
                }
                ys = ny;
            }
            xs[n] = step->valuedouble;
            ys[n++] = loss->valuedouble;
        }
        cJSON_Delete(j);
    }
    free(text);
    double x0 = 0, x1 = 1, y0 = INFINITY, y1 = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        x1 = xs[i] > x1 ? xs[i] : x1;
        y0 = ys[i] < y0 ? ys[i] : y0;
        y1 = ys[i] > y1 ? ys[i] : y1;
    }
    if (!(y1 > y0)) {
        y0 = n > 0 ? ys[0] - 1 : 0;
        y1 = n > 0 ? ys[0] + 1 : 1;
    }
    // 640 x 400, plot area 60..620 x 20..360, axes labelled with the ranges.
    size_t cap_out = 4096 + (size_t)n * 32;
    char *svg = malloc(cap_out);
    if (svg == NULL) {
        free(xs);
        free(ys);
        return mc_fail(err, MC_ERR_NOMEM, "loss.svg: out of memory");
    }
    size_t o = (size_t)snprintf(svg, cap_out,
                                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"640\" height=\"400\" "
                                "font-family=\"sans-serif\" font-size=\"12\">\n"
                                "<rect width=\"640\" height=\"400\" fill=\"white\"/>\n"
                                "<path d=\"M60 20 V360 H620\" stroke=\"black\" fill=\"none\"/>\n"
                                "<text x=\"340\" y=\"392\" text-anchor=\"middle\">step (%g to %g)</text>\n"
                                "<text x=\"14\" y=\"190\" transform=\"rotate(-90 14 190)\" "
                                "text-anchor=\"middle\">training loss (%.3f to %.3f)</text>\n"
                                "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"",
                                x0, x1, y0, y1);
    for (int64_t i = 0; i < n && o < cap_out; i++) {
        const double px = 60 + 560 * (xs[i] - x0) / (x1 - x0), py = 360 - 340 * (ys[i] - y0) / (y1 - y0);
        o += (size_t)snprintf(svg + o, cap_out - o, "%.1f,%.1f ", px, py);
    }
    if (o < cap_out) {
        snprintf(svg + o, cap_out - o, "\"/>\n</svg>\n");
    }
    st = write_text(r->log_dir, "loss.svg", svg, err);
    free(svg);
    free(xs);
    free(ys);
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// One optimizer step: grad_accum micro-batches, the mean over all their targets (transformers 5.17 divides the
// summed loss by the targets of the whole accumulated batch), clipping, AdamW at the schedule's rate.

static mc_status train_step(run *r, double *loss, double *grad_norm, double *lr, int64_t *real_tokens,
                            mc_error *err) {
    const int64_t ga = r->o->grad_accum;
    int64_t rows[64], toks[64], total_targets = 0, off = 0;
    *real_tokens = 0;
    for (int64_t k = 0; k < ga; k++) { // copy the micro-batches (the iterator lends its arrays)
        mc_batch b;
        mc_status st = next_batch(r, &b, err);
        if (st != MC_OK) {
            return st;
        }
        const int64_t n = b.n_seq * b.n_tok;
        if (off + n > r->cap) {
            const int64_t cap = 2 * (off + n);
            int32_t *ids = realloc(r->ids, (size_t)cap * sizeof(int32_t));
            int32_t *labels = ids != NULL ? realloc(r->labels, (size_t)cap * sizeof(int32_t)) : NULL;
            if (ids != NULL) r->ids = ids;
            if (labels == NULL) {
                return mc_fail(err, MC_ERR_NOMEM, "train: out of memory for a batch of %lld tokens", (long long)n);
            }
            r->labels = labels;
            r->cap = cap;
        }
        memcpy(r->ids + off, b.ids, (size_t)n * sizeof(int32_t));
        memcpy(r->labels + off, b.labels, (size_t)n * sizeof(int32_t));
        rows[k] = b.n_seq;
        toks[k] = b.n_tok;
        total_targets += b.n_targets_global;
        for (int64_t i = 0; i < b.n_seq; i++) {
            *real_tokens += b.len[i];
        }
        off += n;
    }
    if (total_targets == 0) { // every row shorter than 2 tokens (or all -100): the mean loss would be 0 / 0
        return mc_fail(err, MC_ERR_FORMAT, "train: the batch of step %lld has no next-token target (its examples have "
                                           "fewer than 2 tokens); stopped without updating (the last checkpoint in %s "
                                           "is intact)", (long long)mc_adamw_steps(r->opt) + 1, r->o->output_dir);
    }
    mc_trainer_zero_grad(r->t);
    double sum = 0;
    off = 0;
    for (int64_t k = 0; k < ga; k++) {
        if (rows[k] == 0 || toks[k] < 2 || total_targets == 0) {
            off += rows[k] * toks[k];
            continue;
        }
        double part = 0;
        int64_t n = 0;
        mc_trainer_set_dropout_stream(r->t, (uint64_t)(mc_adamw_steps(r->opt) * ga + k));
        mc_status st = mc_trainer_grad(r->t, r->ids + off, r->labels + off, rows[k], toks[k],
                                       1.0 / (double)total_targets, &part, &n, err);
        if (st != MC_OK) {
            return st;
        }
        sum += part;
        off += rows[k] * toks[k];
    }
    // Data parallel: the ranks' gradients (each already divided by the global target count), losses and token
    // counts summed, so every rank holds the whole global batch's gradient.
    double sums[2] = { sum, (double)*real_tokens };
    mc_status st = mc_dist_allreduce_f64(sums, 2, err);
    if (st != MC_OK) {
        return st;
    }
    *real_tokens = (int64_t)sums[1];
    *loss = total_targets > 0 ? sums[0] / (double)total_targets : NAN;
    if (!isfinite(*loss)) {
        return MC_OK; // the caller names the step
    }
    *lr = mc_lr_schedule_at(&r->sched, mc_adamw_steps(r->opt));
    if (r->on_device) { // one rank on a device: clipping and AdamW where the blocks are, nothing crosses to the host
        mc_trainer *t = r->t;
        st = mc_grads_clip_norm_on(t->ops, &t->exec, t->grads, r->groups, r->n_groups, r->o->max_grad_norm,
                                   grad_norm, err);
        if (st == MC_OK) st = mc_adamw_step(r->opt, t->params, t->grads, *lr, err);
        t->host_params_stale = true;
        return st == MC_OK ? mc_trainer_values_changed(t, err) : st;
    }
    float *values = NULL, *grads = NULL;
    st = mc_trainer_host_blocks(r->t, &values, &grads, err);
    if (st == MC_OK) st = mc_dist_allreduce_f32(grads, r->t->n_params, err);
    if (st != MC_OK) {
        return st;
    }
    st = mc_grads_clip_norm(grads, r->groups, r->n_groups, r->o->max_grad_norm, grad_norm, err);
    // Each rank updates the tensors of its optimizer shard, then every tensor goes out from its owner.
    if (st == MC_OK) st = mc_adamw_step(r->opt, values, grads, *lr, err);
    for (int64_t i = 0; st == MC_OK && r->n_ranks > 1 && i < r->n_groups; i++) {
        st = mc_dist_bcast_f32(values + r->groups[i].offset, r->groups[i].numel, r->owner[i], err);
    }
    if (st == MC_OK) st = mc_trainer_host_values_changed(r->t, err);
    return st;
}

static mc_status check_opts(const mc_train_opts *o, mc_error *err) {
    if (o->data == NULL || o->output_dir == NULL) {
        return mc_fail(err, MC_ERR_INVALID, "train: a dataset and an output folder are required");
    }
    if (o->batch_size < 1 || o->grad_accum < 1 || o->grad_accum > 64) {
        return mc_fail(err, MC_ERR_INVALID, "train: batch size %lld must be >= 1 and gradient accumulation %lld in "
                                            "[1, 64]", (long long)o->batch_size, (long long)o->grad_accum);
    }
    if (o->max_steps <= 0 && !(o->epochs > 0 && isfinite(o->epochs))) {
        return mc_fail(err, MC_ERR_INVALID, "train: epochs %g must be positive (or give max steps)", o->epochs);
    }
    if (!(o->lr >= 0) || !isfinite(o->lr) || !(o->weight_decay >= 0) || !(o->max_grad_norm >= 0) ||
        !(o->warmup >= 0) || !isfinite(o->warmup)) {
        return mc_fail(err, MC_ERR_INVALID, "train: learning rate, weight decay, max grad norm and warmup must be "
                                            "finite and >= 0");
    }
    if (o->tbptt && (!o->packing || o->batch_size > 1024)) {
        return mc_fail(err, MC_ERR_INVALID, "train: --tbptt needs --packing (or a document) and at most 1024 rows");
    }
    if (o->logging_steps < 1 || o->save_steps < 0 || o->save_total_limit < 0) {
        return mc_fail(err, MC_ERR_INVALID, "train: logging steps must be >= 1, save steps and the checkpoint "
                                            "limit >= 0");
    }
    return MC_OK;
}

static mc_status setup(run *r, const mc_model *model, const mc_tokenizer *tok, mc_error *err) {
    const mc_train_opts *o = r->o;
    const mc_config *c = mc_model_config(model);
    mc_data_opts dopts;
    mc_data_opts_init(&dopts);
    dopts.format = (mc_data_format)o->data_format;
    dopts.text_field = o->text_field;
    dopts.max_length = o->max_length;
    dopts.packing = o->packing;
    dopts.eos = (mc_data_eos)o->eos;
    dopts.eos_id = c->eos_token_id;
    dopts.n_vocab = c->vocab_size;
    mc_status st = mc_dataset_load(o->data, tok, &dopts, &r->ds, err);
    mc_batch_opts bopts;
    mc_batch_opts_init(&bopts);
    bopts.batch_size = o->batch_size;
    bopts.shuffle = o->shuffle;
    bopts.seed = o->seed;
    bopts.rank = r->rank;
    bopts.n_ranks = r->n_ranks;
    bopts.pad_id = c->pad_token_id >= 0 && c->pad_token_id < c->vocab_size ? c->pad_token_id : 0;
    if (st == MC_OK) st = mc_batcher_new(r->ds, &bopts, &r->it, err);
    mc_lora_spec spec;
    const mc_lora_spec *lora = o->lora;
    if (st == MC_OK && o->init_adapter != NULL) {
        st = mc_lora_spec_load(o->init_adapter, &spec, err);
        lora = &spec;
    }
    if (st == MC_OK) st = mc_trainer_new(model, lora, o->seed, &r->t, err);
    if (st == MC_OK) mc_trainer_set_precision(r->t, (mc_precision)o->precision);
    if (st == MC_OK && o->init_adapter != NULL) {
        char *w = mc_path_join(o->init_adapter, "adapter_model.safetensors");
        int64_t n = 0;
        st = w != NULL ? mc_trainer_load_tensors(r->t, w, true, &n, err) : mc_fail(err, MC_ERR_NOMEM, "oom");
        free(w);
    }
    if (st != MC_OK) {
        return st;
    }
    // Steps: ceil(batches per epoch / accumulation) updates per epoch; epochs may be fractional (the Trainer's
    // max_steps = ceil(epochs · updates per epoch)).
    if (o->tbptt) {
        r->streams_len = mc_dataset_count(r->ds) / o->batch_size;
        r->sids = malloc((size_t)(o->batch_size * o->max_length) * sizeof(int32_t));
        r->slabels = malloc((size_t)(o->batch_size * o->max_length) * sizeof(int32_t));
        if (r->sids == NULL || r->slabels == NULL) {
            return mc_fail(err, MC_ERR_NOMEM, "train: out of memory");
        }
        if (r->streams_len < 1) {
            return mc_fail(err, MC_ERR_INVALID, "%s: %lld blocks of %lld tokens cannot fill %lld streams", o->data,
                           (long long)mc_dataset_count(r->ds), (long long)o->max_length, (long long)o->batch_size);
        }
    }
    const int64_t batches = batches_per_epoch(r);
    r->updates_per_epoch = (batches + o->grad_accum - 1) / o->grad_accum;
    r->total_steps = o->max_steps > 0 ? o->max_steps : (int64_t)ceil(o->epochs * (double)r->updates_per_epoch);
    r->n_groups = mc_trainer_n_tensors(r->t);
    r->groups = calloc((size_t)r->n_groups, sizeof(*r->groups));
    if (r->groups == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "train: out of memory");
    }
    for (int64_t i = 0; i < r->n_groups; i++) {
        mc_train_tensor tt;
        mc_trainer_tensor(r->t, i, &tt);
        r->groups[i] = (mc_optim_group){ .offset = tt.value - r->t->params, .numel = tt.numel, .decay = tt.decay };
    }
    // ZeRO stage 1: tensors go to ranks largest first, each to the rank holding the fewest elements so far.
    r->owner = calloc((size_t)r->n_groups + 1, sizeof(int));
    int64_t *load = calloc((size_t)r->n_ranks, sizeof(int64_t));
    mc_optim_group *mine = calloc((size_t)r->n_groups + 1, sizeof(*mine));
    bool *done = calloc((size_t)r->n_groups + 1, sizeof(bool));
    if (r->owner == NULL || load == NULL || mine == NULL || done == NULL) {
        free(load);
        free(mine);
        free(done);
        return mc_fail(err, MC_ERR_NOMEM, "train: out of memory");
    }
    int64_t n_mine = 0;
    for (int64_t k = 0; k < r->n_groups; k++) {
        int64_t big = -1;
        for (int64_t i = 0; i < r->n_groups; i++) {
            big = !done[i] && (big < 0 || r->groups[i].numel > r->groups[big].numel) ? i : big;
        }
        int least = 0;
        for (int q = 1; q < r->n_ranks; q++) {
            least = load[q] < load[least] ? q : least;
        }
        done[big] = true;
        r->owner[big] = least;
        load[least] += r->groups[big].numel;
    }
    for (int64_t i = 0; i < r->n_groups; i++) {
        if (r->owner[i] == r->rank) {
            mine[n_mine++] = r->groups[i];
        }
    }
    mc_adamw_opts aopts;
    mc_adamw_opts_init(&aopts);
    aopts.weight_decay = o->weight_decay;
    st = mc_adamw_new(r->t->n_params, mine, n_mine, &aopts, &r->opt, err);
    r->on_device = !r->t->ops->host_memory && r->n_ranks == 1;
    if (st == MC_OK && r->on_device) st = mc_adamw_bind(r->opt, r->t->ops, &r->t->exec, err);
    free(load);
    free(mine);
    free(done);
    mc_lr_schedule_init(&r->sched);
    if (st == MC_OK) st = mc_lr_kind_parse(o->lr_scheduler != NULL ? o->lr_scheduler : "linear", &r->sched.kind, err);
    r->sched.lr = o->lr;
    r->sched.total_steps = r->total_steps;
    r->sched.warmup_steps = mc_lr_warmup_steps(o->warmup, r->total_steps);
    if (st == MC_OK) st = mc_lr_schedule_check(&r->sched, err);
    if (st == MC_OK) make_fingerprint(r);
    if (st == MC_OK && r->rank == 0) st = make_dir(o->output_dir, err);
    r->log_dir = o->logging_dir != NULL ? o->logging_dir : o->output_dir;
    if (st == MC_OK && r->rank == 0) st = make_dir(r->log_dir, err);
    return st;
}

static void teardown(run *r) {
    mc_adamw_free(r->opt);
    mc_trainer_free(r->t);
    mc_batcher_free(r->it);
    mc_dataset_free(r->ds);
    free(r->groups);
    free(r->owner);
    free(r->ids);
    free(r->labels);
    free(r->sids);
    free(r->slabels);
}

mc_status mc_train(const mc_model *model, const mc_tokenizer *tok, const mc_train_opts *o, mc_train_stats *final,
                   mc_error *err) {
    if (model == NULL || o == NULL) {
        return mc_fail(err, MC_ERR_INVALID, "train: model and options must be given");
    }
    mc_status st = check_opts(o, err);
    if (st != MC_OK) {
        return st;
    }
    run r = { .o = o, .model = model, .rank = mc_dist_rank(), .n_ranks = mc_dist_size() };
    int64_t step = 0;
    if (o->tbptt && r.n_ranks > 1) {
        return mc_fail(err, MC_ERR_UNSUPPORTED, "train: --tbptt runs on one rank only");
    }
    st = setup(&r, model, tok, err);
    if (st == MC_OK && o->resume != NULL) {
        st = resume(&r, &step, err);
    }
    const double t0 = now_s();
    const int64_t start = step; // steps before this process (a resumed run)
    double window_loss = 0, tokens = 0;
    int64_t window = 0;
    mc_train_stats s = { .step = step, .total_steps = r.total_steps };
    bool stop = false;
    while (st == MC_OK && step < r.total_steps && !stop) {
        double loss = 0, grad_norm = 0, lr = 0;
        int64_t real = 0;
        st = train_step(&r, &loss, &grad_norm, &lr, &real, err);
        if (st == MC_OK && !isfinite(loss)) {
            st = mc_fail(err, MC_ERR_INVALID, "train: the loss is %s at step %lld; stopped without updating (the "
                                              "last checkpoint in %s is intact)", isnan(loss) ? "NaN" : "infinite",
                         (long long)step + 1, o->output_dir);
        }
        if (st != MC_OK) {
            break;
        }
        step++;
        tokens += (double)real;
        window_loss += loss;
        window++;
        const double el = now_s() - t0;
        s = (mc_train_stats){ .step = step,
                              .total_steps = r.total_steps,
                              .epoch = batch_pos(&r).epoch,
                              .loss = window_loss / (double)window,
                              .lr = lr,
                              .grad_norm = grad_norm,
                              .tokens_per_s = el > 0 ? tokens / el : 0,
                              .elapsed_s = el,
                              .eta_s = el / (double)(step - start) * (double)(r.total_steps - step) };
        const bool logged = step % o->logging_steps == 0 || step == r.total_steps;
        if (logged && r.rank == 0) { // one log for the job
            st = append_log(&r, &s, err);
            if (st == MC_OK) st = write_svg(&r, err);
        }
        if (logged) {
            window_loss = 0;
            window = 0;
        }
        if (st == MC_OK && r.rank == 0 && o->progress != NULL && !o->progress(o->user, &s, logged)) {
            stop = true;
        }
        if (r.n_ranks > 1) { // every rank stops when rank 0's caller asks
            double flag = stop ? 1 : 0;
            if (st == MC_OK) st = mc_dist_allreduce_f64(&flag, 1, err);
            stop = flag > 0;
        }
        if (st == MC_OK && ((o->save_steps > 0 && step % o->save_steps == 0) || stop)) {
            st = save_checkpoint(&r, step, err);
        }
    }
    if (st == MC_OK && !stop && r.rank == 0) {
        st = mc_trainer_save(r.t, o->output_dir, err);
    }
    if (final != NULL) {
        *final = s;
    }
    teardown(&r);
    return st;
}
