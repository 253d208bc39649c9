// mambac init: writes a randomly initialised model (transformers' initialisation) from a preset or a config.json.
#include <stdio.h>
#include <string.h>

#include "common.h"

static const char usage[] = "usage: mambac init (--preset 130m|370m|790m|1.4b|2.8b | --config FILE) [--seed S] "
                            "[--dtype f32|f16|bf16|int8] -o DIR";

static const char help[] =
    "Creates DIR (if missing) holding config.json and model.safetensors of a new model whose weights are drawn as\n"
    "transformers 5.17 initialises MambaForCausalLM: embeddings and in/x projections N(0, initializer_range),\n"
    "dt/conv/out projections uniform, the time-step bias from the log-uniform rule, A_log = ln(1..N), D = 1.\n"
    "Benchmarks and training can start from it without downloading anything. No tokenizer is written: copy the\n"
    "GPT-NeoX tokenizer.json beside it (or pass --tokenizer to the other commands).\n"
    "\n"
    "flags:\n"
    "      --preset NAME   the shape of a released state-spaces/mamba-*-hf model\n"
    "      --config FILE   a config.json (transformers or mamba_ssm layout) instead of a preset\n"
    "      --seed S        seed of the generator (default 0); the same seed gives the same weights\n"
    "      --dtype DTYPE   weights written as f32 (default), f16, bf16 or int8\n"
    "  -o, --output DIR    where to write (required)\n"
    "  -h, --help          this text\n"
    "\n"
    "example:\n"
    "  mambac init --preset 130m --seed 0 -o /tmp/mamba-130m-random\n";

int cli_init(int argc, char **argv) {
    const char *preset = NULL, *config = NULL, *out = NULL;
    uint64_t seed = 0;
    mc_load_opts load;
    mc_load_opts_init(&load);
    cli_flags f;
    cli_flags_init(&f, "init", usage, argc, argv);
    while (cli_flags_next(&f)) {
        bool matched = false;
        int rc = CLI_OK;
        if (cli_flag_is(&f, NULL, "--dtype")) {
            rc = cli_load_flag(&f, &load, &matched);
        } else if (cli_flag_is(&f, "-h", "--help")) {
            cli_print_help(usage, help);
            return CLI_OK;
        } else if (cli_flag_is(&f, NULL, "--preset")) {
            rc = cli_flag_value(&f, &preset);
            mc_config probe;
            mc_error perr = { 0 };
            if (rc == CLI_OK && mc_config_preset(preset, &probe, &perr) != MC_OK) { // a bad name is bad usage
                rc = cli_flag_bad(&f, "%s", perr.msg);
            }
        } else if (cli_flag_is(&f, NULL, "--config")) {
            rc = cli_flag_value(&f, &config);
        } else if (cli_flag_is(&f, NULL, "--seed")) {
            rc = cli_flag_u64(&f, &seed);
        } else if (cli_flag_is(&f, "-o", "--output")) {
            rc = cli_flag_value(&f, &out);
        } else {
            return cli_flag_unknown(&f);
        }
        if (rc != CLI_OK) {
            return rc;
        }
    }
    if (out == NULL || (preset == NULL) == (config == NULL)) {
        return cli_missing("init", usage, "-o DIR and exactly one of --preset or --config are required");
    }
    mc_config cfg;
    mc_error err = { 0 };
    mc_status st = preset != NULL ? mc_config_preset(preset, &cfg, &err) : mc_config_load(config, &cfg, &err);
    if (st != MC_OK) {
        return cli_fail_err("init", &err);
    }
    load.n_threads = 1; // no kernels run
    mc_model *model = NULL;
    double t0 = cli_now();
    if (mc_model_init(&cfg, seed, &load, &model, &err) != MC_OK || mc_model_save(model, out, &err) != MC_OK) {
        mc_model_free(model);
        return cli_fail_err("init", &err);
    }
    mc_model_info info;
    mc_model_get_info(model, &info);
    fprintf(stderr, "init: %lld parameters, seed %llu, written to %s in %.1f s\n", (long long)info.n_params,
            (unsigned long long)seed, out, cli_now() - t0);
    mc_model_free(model);
    return CLI_OK;
}
