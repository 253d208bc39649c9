// mambac detokenize: prints the exact text of token ids, nothing added (no newline).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

static const char usage[] = "usage: mambac detokenize (-m MODEL | --tokenizer FILE) --ids 1,2,3 [--skip-special]";

static const char help[] =
    "Prints the text of the token ids exactly as tokenizer.decode(ids) gives it, and nothing else: no newline is\n"
    "added, so the output can be compared byte for byte. Invalid UTF-8 from partial characters becomes U+FFFD.\n"
    "\n"
    "flags:\n"
    "  -m, --model MODEL    use MODEL's folder's tokenizer.json\n"
    "      --tokenizer FILE a tokenizer.json (takes precedence over -m)\n"
    "      --ids 1,2,3      the token ids (required); repeated lists are joined in order\n"
    "      --skip-special   leave out special tokens (decode(ids, skip_special_tokens=True))\n"
    "  -h, --help           this text\n"
    "\n"
    "example:\n"
    "  mambac detokenize --tokenizer ../shared/tokenizers/gpt-neox-20b/tokenizer.json --ids 8262,849,403,368,2509,32\n"
    "  Hey how are you doing?\n";

typedef struct detok_args {
    const char *model, *tok_path;
    int32_t *ids; // owned, all lists joined
    int64_t n_ids;
    bool any_ids, skip_special;
} detok_args;

static int add_ids(cli_flags *f, detok_args *a) {
    int32_t *more = NULL;
    int64_t n = 0;
    int rc = cli_flag_ids(f, &more, &n);
    if (rc != CLI_OK) {
        return rc;
    }
    int32_t *all = realloc(a->ids, (size_t)(a->n_ids + n) * sizeof(int32_t));
    if (all == NULL) {
        free(more);
        return cli_fail("detokenize", "out of memory");
    }
    memcpy(all + a->n_ids, more, (size_t)n * sizeof(int32_t));
    free(more);
    a->ids = all;
    a->n_ids += n;
    a->any_ids = true;
    return CLI_OK;
}

static int parse_args(int argc, char **argv, detok_args *a) {
    cli_flags f;
    cli_flags_init(&f, "detokenize", usage, argc, argv);
    while (cli_flags_next(&f)) {
        int rc = CLI_OK;
        if (cli_flag_is(&f, "-h", "--help")) {
            return cli_print_help(usage, help);
        } else if (cli_flag_is(&f, "-m", "--model")) {
            rc = cli_flag_value(&f, &a->model);
        } else if (cli_flag_is(&f, NULL, "--tokenizer")) {
            rc = cli_flag_value(&f, &a->tok_path);
        } else if (cli_flag_is(&f, NULL, "--ids")) {
            rc = add_ids(&f, a);
        } else if (cli_flag_is(&f, NULL, "--skip-special") && f.inline_value == NULL) {
            a->skip_special = true;
        } else {
            return cli_flag_unknown(&f);
        }
        if (rc != CLI_OK) {
            return rc;
        }
    }
    if (a->tok_path == NULL && cli_need_model("detokenize", usage, &a->model) != CLI_OK) {
        return CLI_USAGE;
    }
    if (!a->any_ids) {
        return cli_missing("detokenize", usage, "--ids 1,2,3 is required");
    }
    return CLI_OK;
}

// Ids the model can emit but the tokenizer has no string for (the padded rows 50277..50279 of the NeoX models)
// decode to nothing, as tokenizers' decode skips them; so the limit is the larger of the two vocabularies.
static int64_t id_limit(const detok_args *a, const mc_tokenizer *tok) {
    int64_t limit = mc_tokenizer_n_vocab(tok);
    char *dir = NULL;
    mc_error err = { 0 };
    if (a->model != NULL && mc_model_resolve_dir(a->model, NULL, &dir, &err) == MC_OK) {
        size_t n = strlen(dir) + sizeof("/config.json");
        char *path = malloc(n);
        mc_config cfg;
        if (path != NULL) {
            snprintf(path, n, "%s/config.json", dir);
            if (mc_config_load(path, &cfg, &err) == MC_OK && cfg.vocab_size > limit) {
                limit = cfg.vocab_size;
            }
        }
        free(path);
    }
    free(dir);
    return limit;
}

int cli_detokenize(int argc, char **argv) {
    detok_args a = { 0 };
    int rc = parse_args(argc, argv, &a);
    mc_tokenizer *tok = NULL;
    if (rc == CLI_OK) {
        rc = cli_open_tokenizer("detokenize", a.tok_path, a.model, NULL, &tok);
    }
    if (rc == CLI_OK) {
        rc = cli_check_ids("detokenize", "--ids", a.ids, a.n_ids, id_limit(&a, tok));
    }
    if (rc == CLI_OK) {
        char *text = NULL;
        size_t len = 0;
        mc_error err = { 0 };
        if (mc_tokenizer_decode(tok, a.ids, a.n_ids, a.skip_special, &text, &len, &err) != MC_OK) {
            rc = cli_fail_err("detokenize", &err);
        } else {
            cli_write(text, len);
        }
        free(text);
    }
    mc_tokenizer_free(tok);
    free(a.ids);
    return rc == CLI_HELP ? CLI_OK : rc;
}
