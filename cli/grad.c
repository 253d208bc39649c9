// mambac grad: the causal-LM loss of one batch of token ids and the gradient of every trainable parameter, written
// to a safetensors file under Hugging Face names (all weights) or PEFT adapter keys (LoRA).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

static const char usage[] = "usage: mambac grad -m MODEL --ids 1,2,3 [--ids 4,5,6]... --out FILE.safetensors "
                            "[--lora DIR | --lora-r R --lora-alpha A --lora-targets LIST --rslora --lora-bias MODE "
                            "--seed S] [--quiet] " CLI_LOAD_USAGE;

static const char help[] =
    "Runs each --ids list as one sequence of a batch (all the same length) with labels = ids, as\n"
    "MambaForCausalLM(input_ids, labels=input_ids): position t predicts token t + 1 and the loss is the mean\n"
    "over the batch. Writes the loss (a one-element F32 tensor named \"loss\") and the gradient of every\n"
    "trainable parameter: all weights under their Hugging Face names, or with LoRA the adapter's tensors under\n"
    "PEFT's keys (base_model.model.backbone.layers.0.mixer.in_proj.lora_A.weight, ...).\n"
    "\n"
    "flags:\n"
    "  -m, --model MODEL      model folder, hub-cache snapshot, or ORG/NAME in the local hub cache (required)\n"
    "      --ids 1,2,3        token ids of one sequence; repeat for a batch (required)\n"
    "  -o, --out FILE         the .safetensors file to write (required)\n"
    "      --lora DIR         a PEFT adapter folder (adapter_config.json + adapter_model.safetensors): the\n"
    "                         gradients of its tensors at its values (here it is not merged)\n"
    "      --lora-r R         a new adapter of rank R instead (PEFT's initialisation, so B = 0)\n"
    "      --lora-alpha A     its lora_alpha (default: R)\n"
    "      --lora-targets L   comma list of embeddings, in_proj, x_proj, out_proj (default: all four)\n"
    "      --rslora           scaling alpha / sqrt(r) instead of alpha / r\n"
    "      --lora-bias MODE   none (default), all or lora_only\n"
    "      --seed S           seed of a new adapter's initialisation (default 0)\n"
    "  -q, --quiet            no summary on stderr\n" CLI_LOAD_HELP
    "  -h, --help             this text\n"
    "\n"
    "examples:\n"
    "  mambac grad -m tests/fixtures/models/f32-tied --ids 5,17,42,7 --ids 9,3,1,2 --out grads.safetensors\n"
    "  mambac grad -m tests/fixtures/models/f32-tied --ids 5,17,42,7 --lora-r 8 --out lora-grads.safetensors\n";

typedef struct grad_args {
    const char *model, *out, *lora_dir;
    int32_t **ids;
    int64_t *n_ids;
    int64_t n_seq;
    mc_load_opts load;
    mc_lora_spec spec;
    bool lora, alpha_set, quiet;
    uint64_t seed;
} grad_args;

// Parses a comma list of LoRA target names into MC_LORA_* bits.
int cli_lora_targets(const char *cmd, const char *list, unsigned *bits) {
    static const char *const names[] = { "embeddings", "in_proj", "x_proj", "out_proj" };
    static const unsigned values[] = { MC_LORA_EMBEDDINGS, MC_LORA_IN_PROJ, MC_LORA_X_PROJ, MC_LORA_OUT_PROJ };
    *bits = 0;
    for (const char *p = list; *p != '\0';) {
        const char *end = strchr(p, ',');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        unsigned hit = 0;
        for (int i = 0; i < 4; i++) {
            hit = strlen(names[i]) == len && strncmp(p, names[i], len) == 0 ? values[i] : hit;
        }
        if (hit == 0) {
            return cli_fail(cmd, "--lora-targets: '%.*s' matches no module (embeddings, in_proj, x_proj, out_proj)",
                            (int)len, p);
        }
        *bits |= hit;
        p += len + (end != NULL ? 1 : 0);
    }
    return *bits != 0 ? CLI_OK : cli_fail(cmd, "--lora-targets: empty list");
}

// Parses none, all or lora_only.
int cli_lora_bias(const char *cmd, const char *v, mc_lora_bias *bias) {
    if (strcmp(v, "none") == 0 || strcmp(v, "all") == 0 || strcmp(v, "lora_only") == 0) {
        *bias = v[0] == 'n' ? MC_LORA_BIAS_NONE : v[0] == 'a' ? MC_LORA_BIAS_ALL : MC_LORA_BIAS_LORA_ONLY;
        return CLI_OK;
    }
    return cli_fail(cmd, "--lora-bias: '%s' is not none, all or lora_only", v);
}

static int parse_args(int argc, char **argv, grad_args *a) {
    a->ids = calloc((size_t)argc, sizeof(*a->ids));
    a->n_ids = calloc((size_t)argc, sizeof(*a->n_ids));
    if (a->ids == NULL || a->n_ids == NULL) {
        return cli_fail("grad", "out of memory");
    }
    mc_load_opts_init(&a->load);
    a->spec = (mc_lora_spec){ .r = 8, .alpha = 8,
                              .targets = MC_LORA_EMBEDDINGS | MC_LORA_IN_PROJ | MC_LORA_X_PROJ | MC_LORA_OUT_PROJ };
    cli_flags f;
    cli_flags_init(&f, "grad", usage, argc, argv);
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
        if (cli_flag_is(&f, "-h", "--help")) {
            return cli_print_help(usage, help);
        } else if (cli_flag_is(&f, "-m", "--model")) {
            rc = cli_flag_value(&f, &a->model);
        } else if (cli_flag_is(&f, "-o", "--out")) {
            rc = cli_flag_value(&f, &a->out);
        } else if (cli_flag_is(&f, NULL, "--ids")) {
            rc = cli_flag_ids(&f, &a->ids[a->n_seq], &a->n_ids[a->n_seq]);
            a->n_seq += rc == CLI_OK;
        } else if (cli_flag_is(&f, NULL, "--lora-r")) {
            rc = cli_flag_i64(&f, 1, 65536, &n);
            a->spec.r = (int)n;
            a->lora = true;
        } else if (cli_flag_is(&f, NULL, "--lora-alpha")) {
            rc = cli_flag_f64(&f, &a->spec.alpha);
            a->alpha_set = true;
        } else if (cli_flag_is(&f, NULL, "--lora-targets")) {
            rc = cli_flag_value(&f, &v);
            rc = rc == CLI_OK ? (cli_lora_targets("grad", v, &a->spec.targets) == CLI_OK ? CLI_OK : CLI_USAGE) : rc;
            a->lora = true;
        } else if (cli_flag_is(&f, NULL, "--rslora") && f.inline_value == NULL) {
            a->spec.use_rslora = true;
        } else if (cli_flag_is(&f, NULL, "--lora-bias")) {
            rc = cli_flag_value(&f, &v);
            rc = rc == CLI_OK ? (cli_lora_bias("grad", v, &a->spec.bias) == CLI_OK ? CLI_OK : CLI_USAGE) : rc;
        } else if (cli_flag_is(&f, NULL, "--seed")) {
            rc = cli_flag_u64(&f, &a->seed);
        } else if (cli_flag_is(&f, "-q", "--quiet") && f.inline_value == NULL) {
            a->quiet = true;
        } else {
            return cli_flag_unknown(&f);
        }
        if (rc != CLI_OK) {
            return rc;
        }
    }
    a->lora_dir = a->load.lora; // here --lora names the adapter whose gradients are wanted, not one to merge
    a->load.lora = NULL;
    if (cli_need_model("grad", usage, &a->model) != CLI_OK) {
        return CLI_USAGE;
    }
    if (a->n_seq == 0) {
        return cli_missing("grad", usage, "give at least one --ids list");
    }
    if (a->out == NULL) {
        return cli_missing("grad", usage, "--out FILE.safetensors is required");
    }
    if (a->lora_dir != NULL && a->lora) {
        return cli_missing("grad", usage, "--lora DIR and --lora-r/--lora-targets exclude each other");
    }
    if (a->lora && !a->alpha_set) {
        a->spec.alpha = a->spec.r;
    }
    if (cli_ids_same_length("grad", a->n_ids, a->n_seq) != CLI_OK) {
        return CLI_ERR;
    }
    return CLI_OK;
}

static int run_grad(const grad_args *a, const mc_model *model) {
    const int64_t B = a->n_seq, L = a->n_ids[0];
    int32_t *ids = malloc((size_t)(B * L) * sizeof(int32_t));
    if (ids == NULL) {
        return cli_fail("grad", "out of memory");
    }
    for (int64_t i = 0; i < B; i++) {
        memcpy(ids + i * L, a->ids[i], (size_t)L * sizeof(int32_t));
    }
    mc_trainer *t = NULL;
    mc_error err = { 0 };
    int rc = CLI_OK;
    double sum = 0, t0 = cli_now();
    int64_t n = 0;
    mc_lora_spec spec = a->spec;
    if (a->lora_dir != NULL && mc_lora_spec_load(a->lora_dir, &spec, &err) != MC_OK) {
        rc = cli_fail_err("grad", &err);
    }
    const bool lora = a->lora || a->lora_dir != NULL;
    if (rc == CLI_OK && mc_trainer_new(model, lora ? &spec : NULL, a->seed, &t, &err) != MC_OK) {
        rc = cli_fail_err("grad", &err);
    }
    if (rc == CLI_OK && a->lora_dir != NULL) {
        char path[4200];
        int64_t n_loaded = 0;
        snprintf(path, sizeof(path), "%s/adapter_model.safetensors", a->lora_dir);
        if (mc_trainer_load_tensors(t, path, true, &n_loaded, &err) != MC_OK) {
            rc = cli_fail_err("grad", &err);
        }
    }
    // The mean loss's gradient needs the target count first: a pass with scale 0 would double the work, so the
    // count is taken from the labels (= ids: every position but the last of each sequence).
    const int64_t want_n = B * (L - 1);
    if (rc == CLI_OK && want_n < 1) {
        rc = cli_fail("grad", "--ids: sequences of one token have no next-token target");
    }
    if (rc == CLI_OK && mc_trainer_grad(t, ids, ids, B, L, 1.0 / (double)want_n, &sum, &n, &err) != MC_OK) {
        rc = cli_fail_err("grad", &err);
    }
    const double loss = n > 0 ? sum / (double)n : 0;
    if (rc == CLI_OK && mc_trainer_save_grads(t, a->out, loss, &err) != MC_OK) {
        rc = cli_fail_err("grad", &err);
    }
    if (rc == CLI_OK && !a->quiet) {
        fprintf(stderr, "stats: loss %.6f over %lld targets; %lld tensors written to %s; %.3f s\n", loss, (long long)n,
                (long long)mc_trainer_n_tensors(t), a->out, cli_now() - t0);
    }
    mc_trainer_free(t);
    free(ids);
    return rc;
}

int cli_grad(int argc, char **argv) {
    grad_args a = { 0 };
    int rc = parse_args(argc, argv, &a);
    mc_model *model = NULL;
    if (rc == CLI_OK) {
        rc = cli_open_model("grad", a.model, &a.load, &model, NULL);
    }
    if (rc == CLI_OK) {
        rc = run_grad(&a, model);
    }
    mc_model_free(model);
    for (int64_t i = 0; i < a.n_seq; i++) {
        free(a.ids[i]);
    }
    free(a.ids);
    free(a.n_ids);
    return rc == CLI_HELP ? CLI_OK : rc;
}
