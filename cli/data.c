// mambac data: tokenizes text files into one token file (layout in mambac.h, "Token files") for training, each
// file one document, optionally followed by EOS. Encoding is the library's; this file picks the tokenizer and EOS.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

static const char usage[] = "usage: mambac data -o FILE (--tokenizer FILE | -m MODEL) [--eos] FILES...";

static const char help[] =
    "Tokenizes UTF-8 text files, each one document, exactly as mambac tokenize would (no special tokens added),\n"
    "and writes all their ids, in the order given, to one binary token file for training. Its header names the\n"
    "tokenizer and records the SHA-256 of its tokenizer.json bytes (what sha256sum prints), so the reader\n"
    "(mc_tokens_open) refuses the file with another tokenizer; ids are uint16 when the vocabulary has at most\n"
    "65536 entries, else uint32. The layout is documented in include/mambac.h (\"Token files\"). Text that is not\n"
    "valid UTF-8 is an error naming the file and byte offset.\n"
    "\n"
    "flags:\n"
    "  -o, --output FILE    the token file to write (replaced atomically)\n"
    "      --tokenizer FILE the tokenizer.json to use (takes precedence over -m)\n"
    "  -m, --model MODEL    use MODEL's folder's tokenizer.json, and its config's eos_token_id for --eos\n"
    "      --eos            write the EOS id after every document: the model config's eos_token_id with -m,\n"
    "                       else the tokenizer's <|endoftext|> special token\n"
    "  -h, --help           this text\n"
    "\n"
    "example:\n"
    "  mambac tokenizer train --vocab-size 8192 -o tokenizer.json train.txt\n"
    "  mambac data --tokenizer tokenizer.json --eos -o train.bin train.txt\n";

typedef struct data_args {
    const char *output, *tok_path, *model;
    bool eos;
    const char **files;
    int64_t n_files;
} data_args;

static int parse_args(int argc, char **argv, data_args *a) {
    cli_flags f;
    cli_flags_init(&f, "data", usage, argc, argv);
    while (cli_flags_next(&f)) {
        int rc = CLI_OK;
        if (cli_flag_is(&f, "-h", "--help")) {
            return cli_print_help(usage, help);
        } else if (f.argv[f.i][0] != '-') {
            a->files[a->n_files++] = f.argv[f.i]; // room for argc entries was made
        } else if (cli_flag_is(&f, "-o", "--output")) {
            rc = cli_flag_value(&f, &a->output);
        } else if (cli_flag_is(&f, NULL, "--tokenizer")) {
            rc = cli_flag_value(&f, &a->tok_path);
        } else if (cli_flag_is(&f, "-m", "--model")) {
            rc = cli_flag_value(&f, &a->model);
        } else if (cli_flag_is(&f, NULL, "--eos") && f.inline_value == NULL) {
            a->eos = true;
        } else {
            return cli_flag_unknown(&f);
        }
        if (rc != CLI_OK) {
            return rc;
        }
    }
    if (a->output == NULL) {
        return cli_missing("data", usage, "-o FILE is required");
    }
    if (a->tok_path == NULL && a->model == NULL) {
        return cli_missing("data", usage, "give --tokenizer FILE or -m MODEL");
    }
    if (a->n_files == 0) {
        return cli_missing("data", usage, "give at least one text file to tokenize");
    }
    return CLI_OK;
}

// The tokenizer.json path: --tokenizer, else MODEL's folder's (*dir gets that folder, owned). *path owned.
static int tokenizer_path(const data_args *a, char **path, char **dir) {
    mc_error err = { 0 };
    if (a->model != NULL && mc_model_resolve_dir(a->model, NULL, dir, &err) != MC_OK) {
        return cli_fail_err("data", &err);
    }
    const char *p = a->tok_path;
    char buf[4096];
    if (p == NULL) {
        snprintf(buf, sizeof(buf), "%s/tokenizer.json", *dir);
        p = buf;
    }
    *path = strdup(p);
    return *path != NULL ? CLI_OK : cli_fail("data", "out of memory");
}

// The EOS id for --eos: the model config's eos_token_id, else the tokenizer's <|endoftext|> special token.
static int eos_id(const data_args *a, const char *dir, const mc_tokenizer *tok, int32_t *eos) {
    *eos = -1;
    if (!a->eos) {
        return CLI_OK;
    }
    mc_error err = { 0 };
    if (dir != NULL) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/config.json", dir);
        mc_config cfg;
        if (mc_config_load(path, &cfg, &err) != MC_OK) {
            return cli_fail_err("data", &err);
        }
        if (cfg.eos_token_id < 0 || cfg.eos_token_id >= mc_tokenizer_n_vocab(tok)) {
            return cli_fail("data", "%s: eos_token_id %d is not a token of the tokenizer", path, cfg.eos_token_id);
        }
        *eos = cfg.eos_token_id;
        return CLI_OK;
    }
    static const char eot[] = "<|endoftext|>";
    int32_t *ids = NULL;
    int64_t n = 0;
    if (mc_tokenizer_encode(tok, eot, sizeof(eot) - 1, &ids, &n, &err) != MC_OK) {
        return cli_fail_err("data", &err);
    }
    if (n == 1 && mc_tokenizer_is_special(tok, ids[0])) {
        *eos = ids[0];
    }
    free(ids);
    if (*eos < 0) {
        return cli_fail("data", "--eos: the tokenizer has no <|endoftext|> special token; give -m MODEL to use its "
                                "config's eos_token_id");
    }
    return CLI_OK;
}

static int add_file(const char *path, const mc_tokenizer *tok, mc_tokens_writer *w, int64_t *n_bytes) {
    char *text = NULL;
    size_t len = 0;
    int32_t *ids = NULL;
    int64_t n_ids = 0;
    mc_error err = { 0 };
    int rc = cli_read_file("data", path, &text, &len);
    if (rc == CLI_OK && mc_tokenizer_encode(tok, text, len, &ids, &n_ids, &err) != MC_OK) {
        rc = cli_fail("data", "%s: %s", path, err.msg);
    }
    if (rc == CLI_OK && mc_tokens_writer_add(w, ids, n_ids, &err) != MC_OK) {
        rc = cli_fail("data", "%s: %s", path, err.msg);
    }
    *n_bytes += (int64_t)len;
    free(ids);
    free(text);
    return rc;
}

static void report(const data_args *a, const mc_tokens_writer *w, int64_t n_bytes, double seconds) {
    mc_tokens_info info;
    mc_tokens_writer_get_info(w, &info);
    char sha[65];
    for (int i = 0; i < 32; i++) {
        snprintf(sha + 2 * i, 3, "%02x", info.tokenizer_sha256[i]);
    }
    fprintf(stderr,
            "%s: %lld tokens (uint%d) from %lld document%s, %.2f MB of text (%.2f bytes per token) in %.2f s\n"
            "tokenizer %s (vocabulary %lld, sha256 %s), EOS %s\n",
            a->output, (long long)info.n_tokens, 8 * info.token_bytes, (long long)info.n_docs,
            info.n_docs == 1 ? "" : "s", (double)n_bytes / 1e6,
            info.n_tokens > 0 ? (double)n_bytes / (double)info.n_tokens : 0.0, seconds, info.tokenizer_name,
            (long long)info.n_vocab, sha, info.eos_id >= 0 ? "after every document" : "not written");
}

static int run(const data_args *a) {
    char *path = NULL, *dir = NULL;
    mc_tokenizer *tok = NULL;
    mc_tokens_writer *w = NULL;
    int32_t eos = -1;
    mc_error err = { 0 };
    double t0 = cli_now();
    int rc = tokenizer_path(a, &path, &dir);
    if (rc == CLI_OK) {
        rc = cli_open_tokenizer("data", a->tok_path, a->model, NULL, &tok);
    }
    if (rc == CLI_OK) {
        rc = eos_id(a, dir, tok, &eos);
    }
    if (rc == CLI_OK && mc_tokens_writer_new(tok, path, eos, &w, &err) != MC_OK) {
        rc = cli_fail_err("data", &err);
    }
    int64_t n_bytes = 0;
    for (int64_t i = 0; rc == CLI_OK && i < a->n_files; i++) {
        rc = add_file(a->files[i], tok, w, &n_bytes);
    }
    if (rc == CLI_OK && mc_tokens_writer_save(w, a->output, &err) != MC_OK) {
        rc = cli_fail_err("data", &err);
    }
    if (rc == CLI_OK) {
        report(a, w, n_bytes, cli_now() - t0);
    }
    mc_tokens_writer_free(w);
    mc_tokenizer_free(tok);
    free(path);
    free(dir);
    return rc;
}

int cli_data(int argc, char **argv) {
    data_args a = { .files = calloc((size_t)argc + 1, sizeof(char *)) };
    if (a.files == NULL) {
        return cli_fail("data", "out of memory");
    }
    int rc = parse_args(argc, argv, &a);
    if (rc == CLI_OK) {
        rc = run(&a);
    }
    free(a.files);
    return rc == CLI_HELP ? CLI_OK : rc;
}
