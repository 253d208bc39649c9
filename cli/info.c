// mambac info: prints a model's resolved config, parameter count, stored dtypes and memory figures.
#include <stdio.h>

#include "common.h"

static const char usage[] = "usage: mambac info -m MODEL " CLI_LOAD_USAGE;

static const char help[] =
    "Loads MODEL and prints, one 'key: value' per line: the folder, every config field (after defaults and\n"
    "vocabulary padding), the parameter count (a tied lm_head counted once), parameters per stored dtype, weight\n"
    "bytes as stored, bytes mambac holds besides the file mapping (converted copies), and the recurrent state\n"
    "bytes per sequence; then the backend, its threads and the weight bytes one decode step reads.\n"
    "\n"
    "flags:\n"
    "  -m, --model MODEL   model folder, hub-cache snapshot, or ORG/NAME in the local hub cache "
    "(required)\n" CLI_LOAD_HELP "  -h, --help          this text\n"
    "\n"
    "example:\n"
    "  mambac info -m tests/fixtures/models/tiny-neox\n";

static const char *yes_no(bool b) {
    return b ? "true" : "false";
}

static void print_config(const mc_config *c) {
    printf("vocab_size: %lld\n", (long long)c->vocab_size);
    printf("hidden_size: %lld\n", (long long)c->hidden_size);
    printf("intermediate_size: %lld\n", (long long)c->intermediate_size);
    printf("state_size: %lld\n", (long long)c->state_size);
    printf("time_step_rank: %lld\n", (long long)c->time_step_rank);
    printf("conv_kernel: %lld\n", (long long)c->conv_kernel);
    printf("num_hidden_layers: %lld\n", (long long)c->num_hidden_layers);
    printf("expand: %lld\n", (long long)c->expand);
    printf("layer_norm_epsilon: %g\n", c->layer_norm_epsilon);
    printf("use_bias: %s\n", yes_no(c->use_bias));
    printf("use_conv_bias: %s\n", yes_no(c->use_conv_bias));
    printf("residual_in_fp32: %s\n", yes_no(c->residual_in_fp32));
    printf("tie_word_embeddings: %s\n", yes_no(c->tie_word_embeddings));
    printf("bos_token_id: %d\n", c->bos_token_id);
    printf("eos_token_id: %d\n", c->eos_token_id);
    printf("pad_token_id: %d\n", c->pad_token_id);
    printf("initializer_range: %g\n", c->initializer_range);
    printf("time_step_scale: %g\n", c->time_step_scale);
    printf("time_step_min: %g\n", c->time_step_min);
    printf("time_step_max: %g\n", c->time_step_max);
    printf("time_step_floor: %g\n", c->time_step_floor);
    printf("rescale_prenorm_residual: %s\n", yes_no(c->rescale_prenorm_residual));
    printf("original_format: %s\n", yes_no(c->original_format));
}

static void print_info(const mc_model_info *info) {
    printf("parameters: %lld\n", (long long)info->n_params);
    printf("tensors: %lld\n", (long long)info->n_tensors);
    for (int d = 0; d < (int)(sizeof(info->n_by_dtype) / sizeof(info->n_by_dtype[0])); d++) {
        if (info->n_by_dtype[d] > 0) {
            printf("parameters_%s: %lld\n", mc_dtype_name((mc_dtype)d), (long long)info->n_by_dtype[d]);
        }
    }
    printf("weight_bytes: %lld (%.2f MiB)\n", (long long)info->weight_bytes,
           (double)info->weight_bytes / (1024.0 * 1024.0));
    printf("resident_bytes: %lld (%.2f MiB)\n", (long long)info->resident_bytes,
           (double)info->resident_bytes / (1024.0 * 1024.0));
    printf("state_bytes_per_sequence: %lld (%.2f KiB)\n", (long long)info->state_bytes,
           (double)info->state_bytes / 1024.0);
    printf("read_bytes_per_token: %lld\n", (long long)info->read_bytes_per_token);
    printf("backend: %s\n", mc_backend_name(info->backend));
    printf("threads: %d\n", info->n_threads);
}

int cli_info(int argc, char **argv) {
    const char *path = NULL;
    mc_load_opts load;
    mc_load_opts_init(&load);
    cli_flags f;
    cli_flags_init(&f, "info", usage, argc, argv);
    while (cli_flags_next(&f)) {
        bool matched = false;
        int rc = cli_load_flag(&f, &load, &matched);
        if (matched) {
            if (rc != CLI_OK) {
                return rc;
            }
            continue;
        }
        if (cli_flag_is(&f, "-h", "--help")) {
            cli_print_help(usage, help);
            return CLI_OK;
        } else if (cli_flag_is(&f, "-m", "--model")) {
            rc = cli_flag_value(&f, &path);
        } else {
            return cli_flag_unknown(&f);
        }
        if (rc != CLI_OK) {
            return rc;
        }
    }
    if (cli_need_model("info", usage, &path) != CLI_OK) {
        return CLI_USAGE;
    }
    mc_model *model = NULL;
    double secs = 0;
    int rc = cli_open_model("info", path, &load, &model, &secs);
    if (rc != CLI_OK) {
        return rc;
    }
    mc_model_info info;
    mc_model_get_info(model, &info);
    printf("model: %s\n", mc_model_dir(model));
    print_config(mc_model_config(model));
    print_info(&info);
    printf("load_seconds: %.3f\n", secs);
    mc_model_free(model);
    return CLI_OK;
}
