// mambac quantize and mambac merge: load a model once with a conversion (another dtype; a LoRA adapter merged in)
// and save the result as a model folder.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

static const char usage[] = "usage: mambac quantize -m MODEL --dtype int8|bf16|f16|f32 -o DIR [--revision REV]";

static const char help[] =
    "Loads MODEL, converts every projection matrix, the embedding and the head to DTYPE (int8: symmetric, one f32\n"
    "scale per group of 64 weights of a row), and writes DIR/config.json and DIR/model.safetensors, which mambac\n"
    "loads again as stored (int8 folders are mambac's own format: transformers cannot read them). The model's\n"
    "tokenizer.json is copied beside them when it exists.\n"
    "\n"
    "flags:\n"
    "  -m, --model MODEL   the model to convert (required)\n"
    "      --dtype DTYPE   int8, bf16, f16 or f32 (required)\n"
    "  -o, --output DIR    where to write (required; created if missing)\n"
    "      --revision REV  hub-cache revision for ORG/NAME (default main)\n"
    "  -h, --help          this text\n"
    "\n"
    "example:\n"
    "  mambac quantize -m state-spaces/mamba-130m-hf --dtype int8 -o mamba-130m-int8\n";


// Loads path with load (one thread: nothing runs) and saves it to out with its tokenizer.
static int save_converted(const char *cmd, const char *path, mc_load_opts *load, const char *out) {
    load->n_threads = 1;
    mc_model *model = NULL;
    int rc = cli_open_model(cmd, path, load, &model, NULL);
    if (rc != CLI_OK) {
        return rc;
    }
    mc_error err = { 0 };
    if (mc_model_save(model, out, &err) != MC_OK) {
        rc = cli_fail_err(cmd, &err);
    } else {
        rc = cli_copy_tokenizer(cmd, mc_model_dir(model), out);
    }
    if (rc == CLI_OK) {
        mc_model_info info;
        mc_model_get_info(model, &info);
        fprintf(stderr, "%s: %s -> %s (%lld bytes read per decode step)\n", cmd, mc_model_dir(model), out,
                (long long)info.read_bytes_per_token);
    }
    mc_model_free(model);
    return rc;
}

int cli_quantize(int argc, char **argv) {
    const char *path = NULL, *out = NULL;
    bool dtype_given = false;
    mc_load_opts load;
    mc_load_opts_init(&load);
    cli_flags f;
    cli_flags_init(&f, "quantize", usage, argc, argv);
    while (cli_flags_next(&f)) {
        bool matched = false;
        int rc = CLI_OK;
        if (cli_flag_is(&f, NULL, "--dtype") || cli_flag_is(&f, NULL, "--revision")) {
            dtype_given |= cli_flag_is(&f, NULL, "--dtype");
            rc = cli_load_flag(&f, &load, &matched);
            if (rc == CLI_OK && dtype_given && load.weight_dtype == MC_WEIGHTS_AS_STORED) {
                rc = cli_flag_bad(&f, "'stored' converts nothing; give int8, bf16, f16 or f32");
            }
        } else if (cli_flag_is(&f, "-h", "--help")) {
            cli_print_help(usage, help);
            return CLI_OK;
        } else if (cli_flag_is(&f, "-m", "--model")) {
            rc = cli_flag_value(&f, &path);
        } else if (cli_flag_is(&f, "-o", "--output")) {
            rc = cli_flag_value(&f, &out);
        } else {
            return cli_flag_unknown(&f);
        }
        if (rc != CLI_OK) {
            return rc;
        }
    }
    if (path == NULL || out == NULL || load.weight_dtype == MC_WEIGHTS_AS_STORED) {
        return cli_missing("quantize", usage, "-m MODEL, --dtype (int8, bf16, f16 or f32) and -o DIR are required");
    }
    return save_converted("quantize", path, &load, out);
}

static const char merge_usage[] =
    "usage: mambac merge -m MODEL --lora DIR -o DIR [--dtype stored|f32|f16|bf16|int8] [--revision REV]";

static const char merge_help[] =
    "Merges a PEFT LoRA adapter into MODEL's weights (W + scaling · B·A, in f32) and writes a model folder that\n"
    "transformers and mambac load without PEFT. A tied embedding that the adapter changes is untied first: the\n"
    "written model has its own lm_head.weight equal to the base embedding, so its logits are PEFT's unmerged ones\n"
    "(PEFT's merge_and_unload would change the head too). Adapted matrices are written in f32 unless --dtype says\n"
    "otherwise. The model's tokenizer.json is copied.\n"
    "\n"
    "flags:\n"
    "  -m, --model MODEL   the base model (required)\n"
    "      --lora DIR      the adapter folder: adapter_config.json + adapter_model.safetensors (required)\n"
    "  -o, --output DIR    where to write (required; created if missing)\n"
    "      --dtype DTYPE   stored (default), f32, f16, bf16 or int8\n"
    "      --revision REV  hub-cache revision for ORG/NAME (default main)\n"
    "  -h, --help          this text\n"
    "\n"
    "example:\n"
    "  mambac merge -m state-spaces/mamba-130m-hf --lora results -o mamba-130m-quotes\n";

int cli_merge(int argc, char **argv) {
    const char *path = NULL, *out = NULL;
    mc_load_opts load;
    mc_load_opts_init(&load);
    cli_flags f;
    cli_flags_init(&f, "merge", merge_usage, argc, argv);
    while (cli_flags_next(&f)) {
        bool matched = false;
        int rc = CLI_OK;
        if (cli_flag_is(&f, NULL, "--dtype") || cli_flag_is(&f, NULL, "--revision") ||
            cli_flag_is(&f, NULL, "--lora")) {
            rc = cli_load_flag(&f, &load, &matched);
        } else if (cli_flag_is(&f, "-h", "--help")) {
            cli_print_help(merge_usage, merge_help);
            return CLI_OK;
        } else if (cli_flag_is(&f, "-m", "--model")) {
            rc = cli_flag_value(&f, &path);
        } else if (cli_flag_is(&f, "-o", "--output")) {
            rc = cli_flag_value(&f, &out);
        } else {
            return cli_flag_unknown(&f);
        }
        if (rc != CLI_OK) {
            return rc;
        }
    }
    if (path == NULL || out == NULL || load.lora == NULL) {
        return cli_missing("merge", merge_usage, "-m MODEL, --lora DIR and -o DIR are required");
    }
    return save_converted("merge", path, &load, out);
}
