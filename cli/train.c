// mambac train and mambac finetune: the Trainer's loop over a dataset file, all weights (train) or LoRA adapters
// over a frozen model (finetune), with a progress line on stderr, log.jsonl + loss.svg, and checkpoints.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

static const char train_usage[] =
    "usage: mambac train -m MODEL --data FILE --output-dir DIR [--text-field NAME] [--epochs N] [--max-steps N] "
    "[--batch-size N] [--grad-accum N] [--lr LR] [--lr-scheduler NAME] [--warmup-steps N] [--weight-decay W] "
    "[--max-grad-norm G] [--max-length N] [--packing] [--tbptt] [--format NAME] [--eos MODE] [--seed S] [--no-shuffle] "
    "[--logging-steps N] [--logging-dir DIR] [--save-steps N] [--save-total-limit N] [--resume DIR] "
    "[--tokenizer FILE] [--quiet] " CLI_LOAD_USAGE;

static const char finetune_usage[] =
    "usage: mambac finetune -m MODEL --data FILE --output-dir DIR [--lora-r R] [--lora-alpha A] "
    "[--lora-targets LIST] [--lora-dropout P] [--lora-bias MODE] [--rslora] [--init-adapter DIR] [--text-field NAME] [--epochs N] "
    "[--max-steps N] [--batch-size N] [--grad-accum N] [--lr LR] [--lr-scheduler NAME] [--warmup-steps N] "
    "[--weight-decay W] [--max-grad-norm G] [--max-length N] [--packing] [--tbptt] [--format NAME] [--eos MODE] [--seed S] "
    "[--no-shuffle] [--logging-steps N] [--logging-dir DIR] [--save-steps N] [--save-total-limit N] "
    "[--resume DIR] [--tokenizer FILE] [--quiet] " CLI_LOAD_USAGE;

#define COMMON_HELP                                                                                                  \
    "  -m, --model MODEL        model folder, hub-cache snapshot, or ORG/NAME in the local hub cache (required)\n"  \
    "      --data FILE          JSON Lines (.jsonl/.json: a text field, or \"input_ids\" used as given), CSV\n"     \
    "                           with a header (.csv), plain text (.txt, one example per line), or a token file\n" \
    "                           of mambac data (.bin) (required)\n"                                             \
    "  -o, --output-dir DIR     where the result and the checkpoint-N folders go (required)\n"                      \
    "      --text-field NAME    the JSON key or CSV column holding the text (default text)\n"                        \
    "      --epochs N           passes over the data, may be fractional (default 3)\n"                              \
    "      --max-steps N        optimizer steps; overrides --epochs\n"                                            \
    "      --batch-size N       sequences per micro-batch (default 8)\n"                                          \
    "      --grad-accum N       micro-batches per optimizer step, 1..64 (default 1)\n"                            \
    "      --lr LR              peak learning rate (default 5e-5)\n"                                              \
    "      --lr-scheduler NAME  linear (default), cosine, constant, constant_with_warmup\n"                       \
    "      --warmup-steps N     warmup steps, or a ratio of the total when below 1 (default 0)\n"                 \
    "      --weight-decay W     AdamW weight decay, not on biases and layers.i.norm (default 0)\n"                \
    "      --max-grad-norm G    clip the global gradient norm; 0 turns clipping off (default 1)\n"               \
    "      --max-length N       truncate examples to N tokens, or the block length with --packing (default\n"     \
    "                           1024)\n"                                                                          \
    "      --packing            concatenate examples and cut max-length blocks (default: pad each batch, as\n"    \
    "                           SFTTrainer does; every sequence then starts from an empty state)\n"               \
    "      --tbptt              long documents in chunks: with --packing, batch-size streams of consecutive\n"      \
    "                           blocks, each row starting from the state the row before it ended with (truncated\n"\
    "                           backpropagation through time; the order is the file's)\n"                           \
    "      --format NAME        auto (by extension, default), jsonl, csv, lines, document (one text, packed),\n" \
    "                           tokens (a token file of mambac data, .bin; packed)\n"                          \
    "      --eos MODE           trl (default: EOS appended to a field named text, as SFTTrainer), always, never\n" \
    "      --seed S             shuffling and new adapters (default 42)\n"                                        \
    "      --no-shuffle         keep the file's order\n"                                                          \
    "      --logging-steps N    a log line every N steps: log.jsonl and loss.svg (default 500)\n"                 \
    "      --logging-dir DIR    where log.jsonl and loss.svg go (default: the output dir)\n"                      \
    "      --save-steps N       a checkpoint every N steps; 0: only the final result (default 500)\n"            \
    "      --save-total-limit N keep the newest N checkpoints (default: all)\n"                                  \
    "      --resume DIR         continue from a checkpoint-N folder (or the newest one in DIR)\n"                 \
    "      --tokenizer FILE     tokenizer.json (default: the model folder's)\n"                                   \
    "  -q, --quiet              no progress on stderr\n" CLI_LOAD_HELP                                             \
    "  -h, --help               this text\n"

static const char train_help[] =
    "Trains every weight of the model on a dataset as transformers' Trainer does by default (AdamW, linear\n"
    "schedule, clipping at 1.0, fp32 master weights) and writes the trained model to the output dir\n"
    "(config.json + model.safetensors). Start from any model, e.g. one made by 'mambac init'.\n"
    "\n"
    "flags:\n" COMMON_HELP "\n"
    "example:\n"
    "  mambac train -m tests/fixtures/models/f32-tied --data corpus.txt --format document --max-length 64 \\\n"
    "      --packing --epochs 1 --lr 1e-3 --output-dir run1\n";

static const char finetune_help[] =
    "Fine-tunes LoRA adapters (PEFT's math and file format) over a frozen model, as the Hugging Face Mamba\n"
    "example does with PEFT and SFTTrainer, and writes the adapter to the output dir (adapter_config.json +\n"
    "adapter_model.safetensors, loadable by PeftModel.from_pretrained and 'mambac generate --lora').\n"
    "\n"
    "flags:\n"
    "      --lora-r R           rank (default 8)\n"
    "      --lora-alpha A       lora_alpha (default 8)\n"
    "      --lora-targets LIST  comma list of embeddings, in_proj, x_proj, out_proj (default: all four)\n"
    "      --lora-dropout P     dropout on the adapters' input while training, in [0, 1) (default 0)\n"
    "      --lora-bias MODE     none (default), all, lora_only\n"
    "      --rslora             scaling alpha / sqrt(r) instead of alpha / r\n"
    "      --init-adapter DIR   start from this PEFT adapter (its config replaces the --lora flags)\n" COMMON_HELP "\n"
    "example:\n"
    "  mambac finetune -m state-spaces/mamba-130m-hf --data quotes.jsonl --text-field quote --epochs 3 \\\n"
    "      --batch-size 4 --lr 2e-3 --logging-steps 10 --lora-r 8 --output-dir results --logging-dir logs\n";

typedef struct train_args {
    const char *cmd, *model, *tokenizer;
    mc_train_opts o;
    mc_load_opts load;
    mc_lora_spec spec;
    bool quiet, tty;
} train_args;

static int parse_format(const char *v, int *out) {
    static const char *const names[] = { "auto", "jsonl", "csv", "lines", "document", "tokens" };
    for (int i = 0; i < 6; i++) {
        if (strcmp(v, names[i]) == 0) {
            *out = i;
            return CLI_OK;
        }
    }
    return CLI_USAGE;
}

static int parse_args(int argc, char **argv, train_args *a, bool lora) {
    const char *usage = lora ? finetune_usage : train_usage;
    mc_train_opts_init(&a->o);
    mc_load_opts_init(&a->load);
    a->spec = (mc_lora_spec){ .r = 8, .alpha = 8,
                              .targets = MC_LORA_EMBEDDINGS | MC_LORA_IN_PROJ | MC_LORA_X_PROJ | MC_LORA_OUT_PROJ };
    cli_flags f;
    cli_flags_init(&f, a->cmd, usage, argc, argv);
    while (cli_flags_next(&f)) {
        bool matched = false;
        int rc = cli_load_flag(&f, &a->load, &matched);
        if (matched) {
            if (rc != CLI_OK) {
                return rc;
            }
            continue;
        }
        const char *v = NULL;
        int64_t n = 0;
        double d = 0;
        uint64_t u = 0;
        mc_train_opts *o = &a->o;
        if (cli_flag_is(&f, "-h", "--help")) {
            return cli_print_help(usage, lora ? finetune_help : train_help);
        } else if (cli_flag_is(&f, "-m", "--model")) {
            rc = cli_flag_value(&f, &a->model);
        } else if (cli_flag_is(&f, NULL, "--data")) {
            rc = cli_flag_value(&f, &o->data);
        } else if (cli_flag_is(&f, "-o", "--output-dir")) {
            rc = cli_flag_value(&f, &o->output_dir);
        } else if (cli_flag_is(&f, NULL, "--text-field")) {
            rc = cli_flag_value(&f, &o->text_field);
        } else if (cli_flag_is(&f, NULL, "--epochs")) {
            rc = cli_flag_f64(&f, &d);
            rc = rc == CLI_OK && !(d > 0) ? cli_flag_bad(&f, "--epochs must be positive") : rc;
            o->epochs = d;
        } else if (cli_flag_is(&f, NULL, "--max-steps")) {
            rc = cli_flag_i64(&f, 1, INT64_MAX / 2, &o->max_steps);
        } else if (cli_flag_is(&f, NULL, "--batch-size")) {
            rc = cli_flag_i64(&f, 1, 1 << 20, &o->batch_size);
        } else if (cli_flag_is(&f, NULL, "--grad-accum")) {
            rc = cli_flag_i64(&f, 1, 64, &o->grad_accum);
        } else if (cli_flag_is(&f, NULL, "--lr")) {
            rc = cli_flag_f64(&f, &o->lr);
            rc = rc == CLI_OK && !(o->lr >= 0) ? cli_flag_bad(&f, "%g is negative, must be >= 0", o->lr) : rc;
        } else if (cli_flag_is(&f, NULL, "--lr-scheduler")) {
            rc = cli_flag_value(&f, &o->lr_scheduler);
        } else if (cli_flag_is(&f, NULL, "--warmup-steps")) {
            rc = cli_flag_f64(&f, &o->warmup);
            rc = rc == CLI_OK && !(o->warmup >= 0) ? cli_flag_bad(&f, "%g is negative, must be >= 0", o->warmup) : rc;
        } else if (cli_flag_is(&f, NULL, "--weight-decay")) {
            rc = cli_flag_f64(&f, &o->weight_decay);
            rc = rc == CLI_OK && !(o->weight_decay >= 0) ? cli_flag_bad(&f, "%g is negative, must be >= 0", o->weight_decay) : rc;
        } else if (cli_flag_is(&f, NULL, "--max-grad-norm")) {
            rc = cli_flag_f64(&f, &o->max_grad_norm);
            rc = rc == CLI_OK && !(o->max_grad_norm >= 0) ? cli_flag_bad(&f, "%g is negative, must be >= 0", o->max_grad_norm) : rc;
        } else if (cli_flag_is(&f, NULL, "--max-length")) {
            rc = cli_flag_i64(&f, 2, 1 << 24, &o->max_length);
        } else if (cli_flag_is(&f, NULL, "--packing") && f.inline_value == NULL) {
            o->packing = true;
        } else if (cli_flag_is(&f, NULL, "--tbptt") && f.inline_value == NULL) {
            o->tbptt = true;
            o->shuffle = false;
        } else if (cli_flag_is(&f, NULL, "--format")) {
            rc = cli_flag_value(&f, &v);
            rc = rc == CLI_OK && parse_format(v, &o->data_format) != CLI_OK
                     ? cli_flag_bad(&f, "'%s' is not auto, jsonl, csv, lines, document or tokens", v)
                     : rc;
            o->packing = o->packing || o->data_format >= 4;
        } else if (cli_flag_is(&f, NULL, "--eos")) {
            rc = cli_flag_value(&f, &v);
            o->eos = v == NULL ? 0 : strcmp(v, "always") == 0 ? 1 : strcmp(v, "never") == 0 ? 2 : 0;
            rc = rc == CLI_OK && strcmp(v, "trl") != 0 && o->eos == 0
                     ? cli_flag_bad(&f, "'%s' is not trl, always or never", v)
                     : rc;
        } else if (cli_flag_is(&f, NULL, "--seed")) {
            rc = cli_flag_u64(&f, &u);
            o->seed = u;
        } else if (cli_flag_is(&f, NULL, "--no-shuffle") && f.inline_value == NULL) {
            o->shuffle = false;
        } else if (cli_flag_is(&f, NULL, "--logging-steps")) {
            rc = cli_flag_i64(&f, 1, INT64_MAX / 2, &o->logging_steps);
        } else if (cli_flag_is(&f, NULL, "--logging-dir")) {
            rc = cli_flag_value(&f, &o->logging_dir);
        } else if (cli_flag_is(&f, NULL, "--save-steps")) {
            rc = cli_flag_i64(&f, 0, INT64_MAX / 2, &o->save_steps);
        } else if (cli_flag_is(&f, NULL, "--save-total-limit")) {
            rc = cli_flag_i64(&f, 0, 1 << 20, &o->save_total_limit);
        } else if (cli_flag_is(&f, NULL, "--resume")) {
            rc = cli_flag_value(&f, &o->resume);
        } else if (cli_flag_is(&f, NULL, "--tokenizer")) {
            rc = cli_flag_value(&f, &a->tokenizer);
        } else if (cli_flag_is(&f, "-q", "--quiet") && f.inline_value == NULL) {
            a->quiet = true;
        } else if (lora && cli_flag_is(&f, NULL, "--lora-r")) {
            rc = cli_flag_i64(&f, 1, 65536, &n);
            a->spec.r = (int)n;
        } else if (lora && cli_flag_is(&f, NULL, "--lora-alpha")) {
            rc = cli_flag_f64(&f, &a->spec.alpha);
            rc = rc == CLI_OK && !(a->spec.alpha > 0) ? cli_flag_bad(&f, "--lora-alpha must be positive") : rc;
        } else if (lora && cli_flag_is(&f, NULL, "--lora-targets")) {
            rc = cli_flag_value(&f, &v);
            rc = rc == CLI_OK && cli_lora_targets(a->cmd, v, &a->spec.targets) != CLI_OK ? CLI_USAGE : rc;
        } else if (lora && cli_flag_is(&f, NULL, "--lora-dropout")) {
            rc = cli_flag_f64(&f, &a->spec.dropout);
            rc = rc == CLI_OK && !(a->spec.dropout >= 0 && a->spec.dropout < 1)
                     ? cli_flag_bad(&f, "%g is out of range, must be in [0, 1)", a->spec.dropout)
                     : rc;
        } else if (lora && cli_flag_is(&f, NULL, "--lora-bias")) {
            rc = cli_flag_value(&f, &v);
            rc = rc == CLI_OK && cli_lora_bias(a->cmd, v, &a->spec.bias) != CLI_OK ? CLI_USAGE : rc;
        } else if (lora && cli_flag_is(&f, NULL, "--rslora") && f.inline_value == NULL) {
            a->spec.use_rslora = true;
        } else if (lora && cli_flag_is(&f, NULL, "--init-adapter")) {
            rc = cli_flag_value(&f, &o->init_adapter);
        } else {
            return cli_flag_unknown(&f);
        }
        if (rc != CLI_OK) {
            return rc;
        }
    }
    if (cli_need_model(a->cmd, usage, &a->model) != CLI_OK) {
        return CLI_USAGE;
    }
    if (a->o.data == NULL) {
        return cli_missing(a->cmd, usage, "--data FILE is required");
    }
    if (a->o.output_dir == NULL) {
        return cli_missing(a->cmd, usage, "--output-dir DIR is required");
    }
    a->o.lora = lora ? &a->spec : NULL;
    a->o.precision = (int)a->load.precision;
    return CLI_OK;
}

static void clock_text(char *out, size_t cap, double s) {
    if (!(s >= 0) || !isfinite(s)) {
        snprintf(out, cap, "--:--");
    } else if (s >= 3600) {
        snprintf(out, cap, "%d:%02d:%02d", (int)(s / 3600), (int)(s / 60) % 60, (int)s % 60);
    } else {
        snprintf(out, cap, "%d:%02d", (int)(s / 60), (int)s % 60);
    }
}

// The progress line: redrawn in place on a terminal; on a pipe or file, one line per logging step.
static bool progress(void *user, const mc_train_stats *s, bool logged) {
    const train_args *a = user;
    if (a->quiet || (!a->tty && !logged)) {
        return true;
    }
    char bar[21], eta[16];
    const int filled = s->total_steps > 0 ? (int)(20 * s->step / s->total_steps) : 0;
    for (int i = 0; i < 20; i++) {
        bar[i] = i < filled ? '#' : '.';
    }
    bar[20] = '\0';
    clock_text(eta, sizeof(eta), s->eta_s);
    fprintf(stderr, "%s[%s] step %lld/%lld  loss %.4f  lr %.3g  grad norm %.3g  %.0f tok/s  eta %s%s",
            a->tty ? "\r" : "", bar, (long long)s->step, (long long)s->total_steps, s->loss, s->lr, s->grad_norm,
            s->tokens_per_s, eta, a->tty && !logged ? "   " : "\n");
    return true;
}

static int run_train(int argc, char **argv, bool lora) {
    train_args a = { .cmd = lora ? "finetune" : "train" };
    int rc = parse_args(argc, argv, &a, lora);
    int rank = 0, size = 1;
    if (rc == CLI_OK) { // under mpirun: one rank of a data-parallel job
        mc_error err = { 0 };
        if (mc_dist_init(&rank, &size, &err) != MC_OK) {
            rc = cli_fail_err(a.cmd, &err);
        }
        a.quiet = a.quiet || rank != 0;
    }
    mc_model *model = NULL;
    mc_tokenizer *tok = NULL;
    if (rc == CLI_OK) {
        rc = cli_open_model(a.cmd, a.model, &a.load, &model, NULL);
    }
    // A tokenizer is needed unless the data is pre-tokenized: open it when given or present.
    if (rc == CLI_OK) {
        mc_error err = { 0 };
        char *dir = NULL;
        if (a.tokenizer != NULL) {
            rc = cli_open_tokenizer(a.cmd, a.tokenizer, a.model, a.load.revision, &tok);
        } else if (mc_model_resolve_dir(a.model, a.load.revision, &dir, &err) == MC_OK) {
            char path[4200];
            snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
            if (access(path, R_OK) == 0) {
                rc = cli_open_tokenizer(a.cmd, path, a.model, a.load.revision, &tok);
            }
        }
        free(dir);
    }
    if (rc == CLI_OK) {
        a.tty = isatty(2);
        a.o.progress = progress;
        a.o.user = &a;
        mc_train_stats s = { 0 };
        mc_error err = { 0 };
        const double t0 = cli_now();
        if (mc_train(model, tok, &a.o, &s, &err) != MC_OK) {
            if (a.tty && !a.quiet) {
                fputc('\n', stderr);
            }
            // rank 0 reports what all ranks saw; another rank reports only its own trouble ("rank N: ...")
            rc = rank == 0 || strncmp(err.msg, "rank ", 5) == 0 ? cli_fail_err(a.cmd, &err) : CLI_ERR;
            if (size > 1) {
                fflush(stderr);
                mc_dist_abort(1); // no rank is left waiting for this one
            }
        } else if (rank == 0 && !lora && (rc = cli_copy_tokenizer(a.cmd, mc_model_dir(model), a.o.output_dir)) != CLI_OK) {
            // a trained model folder keeps its tokenizer beside it
        } else if (!a.quiet) {
            fprintf(stderr, "%s: %lld steps in %.1f s (%.0f tokens/s), last loss %.4f; saved to %s\n", a.cmd,
                    (long long)s.step, cli_now() - t0, s.tokens_per_s, s.loss, a.o.output_dir);
        }
    }
    mc_tokenizer_free(tok);
    mc_model_free(model);
    mc_dist_finalize();
    return rc == CLI_HELP ? CLI_OK : rc;
}

int cli_train(int argc, char **argv) {
    return run_train(argc, argv, false);
}

int cli_finetune(int argc, char **argv) {
    return run_train(argc, argv, true);
}
