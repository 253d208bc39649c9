// mambac forward: runs token ids through the model from an empty state and writes every position's logits,
// float32 [batch, seq, vocab], to a .npy file (the one CLI use of an internal header: io/npy.h).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "io/npy.h"

static const char usage[] =
    "usage: mambac forward -m MODEL --ids 1,2,3 [--ids 4,5,6]... --out FILE.npy [--quiet] " CLI_LOAD_USAGE;

static const char help[] =
    "Runs each --ids list as one sequence of a batch (all lists must have the same length) from an empty state\n"
    "and writes the logits of every position as float32 [batch, seq, vocab] (C order) to a NumPy .npy file,\n"
    "comparable to MambaForCausalLM(input_ids).logits. A summary line goes to stderr.\n"
    "\n"
    "flags:\n"
    "  -m, --model MODEL   model folder, hub-cache snapshot, or ORG/NAME in the local hub cache (required)\n"
    "      --ids 1,2,3     token ids of one sequence; repeat for a batch (required)\n"
    "  -o, --out FILE      the .npy file to write (required)\n"
    "  -q, --quiet         no summary on stderr\n" CLI_LOAD_HELP "  -h, --help          this text\n"
    "\n"
    "example:\n"
    "  mambac forward -m tests/fixtures/models/tiny-neox --ids 8262,849,403 --ids 368,2509,32 --out logits.npy\n";

typedef struct fwd_args {
    const char *model, *out;
    int32_t **ids; // [n_seq] owned lists
    int64_t *n_ids;
    int64_t n_seq;
    mc_load_opts load;
    bool quiet;
} fwd_args;

static int parse_args(int argc, char **argv, fwd_args *a) {
    a->ids = calloc((size_t)argc, sizeof(*a->ids));
    a->n_ids = calloc((size_t)argc, sizeof(*a->n_ids));
    if (a->ids == NULL || a->n_ids == NULL) {
        return cli_fail("forward", "out of memory");
    }
    mc_load_opts_init(&a->load);
    cli_flags f;
    cli_flags_init(&f, "forward", usage, argc, argv);
    while (cli_flags_next(&f)) {
        bool matched = false;
        int rc = cli_load_flag(&f, &a->load, &matched);
        if (matched) {
            if (rc != CLI_OK) {
                return rc;
            }
            continue;
        }
        if (cli_flag_is(&f, "-h", "--help")) {
            return cli_print_help(usage, help);
        } else if (cli_flag_is(&f, "-m", "--model")) {
            rc = cli_flag_value(&f, &a->model);
        } else if (cli_flag_is(&f, "-o", "--out")) {
            rc = cli_flag_value(&f, &a->out);
        } else if (cli_flag_is(&f, NULL, "--ids")) {
            rc = cli_flag_ids(&f, &a->ids[a->n_seq], &a->n_ids[a->n_seq]);
            a->n_seq += rc == CLI_OK;
        } else if (cli_flag_is(&f, "-q", "--quiet") && f.inline_value == NULL) {
            a->quiet = true;
        } else {
            return cli_flag_unknown(&f);
        }
        if (rc != CLI_OK) {
            return rc;
        }
    }
    if (cli_need_model("forward", usage, &a->model) != CLI_OK) {
        return CLI_USAGE;
    }
    if (a->n_seq == 0) {
        return cli_missing("forward", usage, "give at least one --ids list");
    }
    if (a->out == NULL) {
        return cli_missing("forward", usage, "--out FILE.npy is required");
    }
    if (cli_ids_same_length("forward", a->n_ids, a->n_seq) != CLI_OK) {
        return CLI_ERR;
    }
    return CLI_OK;
}

static int run_forward(const fwd_args *a, const mc_model *model) {
    const int64_t V = mc_model_config(model)->vocab_size, B = a->n_seq, L = a->n_ids[0];
    for (int64_t i = 0; i < B; i++) {
        char what[32];
        snprintf(what, sizeof(what), "--ids %lld", (long long)(i + 1));
        if (cli_check_ids("forward", what, a->ids[i], L, V) != CLI_OK) {
            return CLI_ERR;
        }
    }
    // B * L tokens are argv-bounded; B * L * V floats can still be too many to hold
    if ((uint64_t)B * (uint64_t)L > SIZE_MAX / sizeof(float) / (uint64_t)V) {
        return cli_fail("forward", "%lld x %lld x %lld logits do not fit in memory", (long long)B, (long long)L,
                        (long long)V);
    }
    int32_t *ids = malloc((size_t)(B * L) * sizeof(int32_t));
    float *logits = malloc((size_t)(B * L * V) * sizeof(float));
    mc_state *state = NULL;
    mc_error err = { 0 };
    int rc = CLI_OK;
    if (ids == NULL || logits == NULL) {
        rc = cli_fail("forward", "out of memory for %lld x %lld x %lld logits", (long long)B, (long long)L,
                      (long long)V);
    }
    for (int64_t i = 0; rc == CLI_OK && i < B; i++) {
        memcpy(ids + i * L, a->ids[i], (size_t)L * sizeof(int32_t));
    }
    double t0 = cli_now();
    if (rc == CLI_OK && (mc_state_new(model, B, &state, &err) != MC_OK ||
                         mc_model_forward(model, state, ids, B, L, true, logits, &err) != MC_OK)) {
        rc = cli_fail_err("forward", &err);
    }
    double secs = cli_now() - t0;
    const int64_t shape[3] = { B, L, V };
    if (rc == CLI_OK && mc_npy_write_f32(a->out, logits, shape, 3, &err) != MC_OK) {
        rc = cli_fail_err("forward", &err);
    }
    if (rc == CLI_OK && !a->quiet) {
        fprintf(stderr, "stats: wrote %s float32 [%lld, %lld, %lld]; forward %.3f s (%.1f tok/s)\n", a->out,
                (long long)B, (long long)L, (long long)V, secs, secs > 0 ? (double)(B * L) / secs : 0.0);
    }
    mc_state_free(state);
    free(logits);
    free(ids);
    return rc;
}

int cli_forward(int argc, char **argv) {
    fwd_args a = { 0 };
    int rc = parse_args(argc, argv, &a);
    mc_model *model = NULL;
    if (rc == CLI_OK) {
        rc = cli_open_model("forward", a.model, &a.load, &model, NULL);
    }
    if (rc == CLI_OK) {
        rc = run_forward(&a, model);
    }
    mc_model_free(model);
    for (int64_t i = 0; i < a.n_seq; i++) {
        free(a.ids[i]);
    }
    free(a.ids);
    free(a.n_ids);
    return rc == CLI_HELP ? CLI_OK : rc;
}
