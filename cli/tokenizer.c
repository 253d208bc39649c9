// mambac tokenizer train: learns a byte-level BPE tokenizer from text files as tokenizers' BpeTrainer does and
// writes its tokenizer.json. The algorithm is src/tokenizer/train.c's; this file reads flags and reports.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

static const char usage[] = "usage: mambac tokenizer train --vocab-size N [--min-frequency N] [--special TOKEN]... "
                            "-o FILE FILES...";

static const char help[] =
    "Learns a byte-level BPE vocabulary from UTF-8 text files exactly as Hugging Face tokenizers' BpeTrainer does\n"
    "for a GPT-NeoX-style tokenizer (NFC normalizer, ByteLevel pre-tokenizer with the GPT-2 regex and no prefix\n"
    "space, ByteLevel decoder), and writes its tokenizer.json: byte for byte the file tokenizers saves for the same\n"
    "files and settings, loadable by mambac (--tokenizer FILE) and by tokenizers / transformers.\n"
    "\n"
    "Ids: the special tokens first (0, 1, ...), then the 256 byte symbols, then one per merge, until the vocabulary\n"
    "has N tokens or no pair is seen --min-frequency times. Files are read line by line as tokenizers reads them;\n"
    "a file that is not valid UTF-8 is an error (tokenizers refuses it too), and so is an empty corpus. The same\n"
    "files in the same order always give the same file.\n"
    "\n"
    "flags:\n"
    "      --vocab-size N      vocabulary size, special tokens and the 256 byte symbols included (required;\n"
    "                          at least 256 + the special tokens)\n"
    "      --min-frequency N   stop at the first pair seen fewer than N times (default 2, as tokenizers'\n"
    "                          ByteLevelBPETokenizer; 0 or 1: merge every pair seen)\n"
    "      --special TOKEN     a special token (repeat for more; ids in the order given). Default: one,\n"
    "                          <|endoftext|> (id 0), the GPT-NeoX end-of-text token that mambac's models use as\n"
    "                          EOS and padding; GPT-NeoX's <|padding|> is not added unless you ask for it\n"
    "  -o, --output FILE       the tokenizer.json to write (replaced atomically)\n"
    "  -h, --help              this text\n"
    "\n"
    "example:\n"
    "  mambac tokenizer train --vocab-size 8192 -o tokenizer.json corpus.txt\n"
    "  printf 'It is a truth' | mambac tokenize --tokenizer tokenizer.json\n";

typedef struct train_args {
    int64_t vocab_size, min_frequency;
    const char **special;
    int64_t n_special;
    const char *output;
    const char **files;
    int64_t n_files;
} train_args;

static int add_special(train_args *a, const char *token) {
    const char **v = realloc(a->special, (size_t)(a->n_special + 1) * sizeof(*v));
    if (v == NULL) {
        return cli_fail("tokenizer", "out of memory");
    }
    a->special = v;
    a->special[a->n_special++] = token;
    return CLI_OK;
}

static int parse_flag(cli_flags *f, train_args *a) {
    if (cli_flag_is(f, NULL, "--vocab-size")) {
        return cli_flag_i64(f, 1, (int64_t)1 << 24, &a->vocab_size);
    }
    if (cli_flag_is(f, NULL, "--min-frequency")) {
        return cli_flag_i64(f, 0, INT64_MAX, &a->min_frequency);
    }
    if (cli_flag_is(f, "-o", "--output")) {
        return cli_flag_value(f, &a->output);
    }
    if (cli_flag_is(f, NULL, "--special")) {
        const char *token = NULL;
        int rc = cli_flag_value(f, &token);
        if (rc == CLI_OK && token[0] == '\0') {
            return cli_flag_bad(f, "a special token cannot be empty");
        }
        return rc == CLI_OK ? add_special(a, token) : rc;
    }
    return cli_flag_unknown(f);
}

// argv[0] is "tokenizer", argv[1] "train".
static int parse_args(int argc, char **argv, train_args *a) {
    cli_flags f;
    cli_flags_init(&f, "tokenizer", usage, argc - 1, argv + 1);
    while (cli_flags_next(&f)) {
        int rc = CLI_OK;
        const char *arg = f.argv[f.i];
        if (cli_flag_is(&f, "-h", "--help")) {
            return cli_print_help(usage, help);
        } else if (arg[0] != '-') {
            a->files[a->n_files++] = arg; // room for argc entries was made
        } else {
            rc = parse_flag(&f, a);
        }
        if (rc != CLI_OK) {
            return rc;
        }
    }
    if (a->vocab_size == 0) {
        return cli_missing("tokenizer", usage, "--vocab-size N is required");
    }
    if (a->output == NULL) {
        return cli_missing("tokenizer", usage, "-o FILE is required");
    }
    if (a->n_files == 0) {
        return cli_missing("tokenizer", usage, "give at least one text file to train on");
    }
    return CLI_OK;
}

static int train(const train_args *a) {
    mc_bpe_train_opts opts;
    mc_bpe_train_opts_init(&opts);
    opts.vocab_size = a->vocab_size;
    opts.min_frequency = a->min_frequency;
    if (a->n_special > 0) {
        opts.special_tokens = a->special;
        opts.n_special = a->n_special;
    }
    mc_error err = { 0 };
    mc_bpe_trainer *t = NULL;
    double t0 = cli_now();
    mc_status st = mc_bpe_trainer_new(&opts, &t, &err);
    for (int64_t i = 0; st == MC_OK && i < a->n_files; i++) {
        st = mc_bpe_trainer_feed_file(t, a->files[i], &err);
    }
    double t1 = cli_now();
    if (st == MC_OK) {
        st = mc_bpe_trainer_train(t, &err);
    }
    double t2 = cli_now();
    if (st == MC_OK) {
        st = mc_bpe_trainer_save(t, a->output, &err);
    }
    if (st != MC_OK) {
        mc_bpe_trainer_free(t);
        return cli_fail_err("tokenizer", &err);
    }
    mc_bpe_train_stats s;
    mc_bpe_trainer_stats(t, &s);
    mc_bpe_trainer_free(t);
    fprintf(stderr,
            "read %lld files (%.2f MB, %lld lines): %lld words, %lld distinct, in %.2f s\n"
            "learned %lld merges in %.2f s: vocabulary of %lld tokens%s\n"
            "wrote %s\n",
            (long long)s.n_files, (double)s.n_bytes / 1e6, (long long)s.n_sequences, (long long)s.n_words,
            (long long)s.n_unique_words, t1 - t0, (long long)s.n_merges, t2 - t1, (long long)s.vocab_size,
            s.vocab_size < a->vocab_size ? " (fewer than asked: no pair left above --min-frequency)" : "", a->output);
    return CLI_OK;
}

int cli_tokenizer(int argc, char **argv) {
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        cli_print_help(usage, help);
        return CLI_OK;
    }
    if (argc < 2 || strcmp(argv[1], "train") != 0) {
        char what[160];
        snprintf(what, sizeof(what),
                 argc < 2 ? "give a subcommand: train" : "unknown subcommand '%.64s' (there is one: train)",
                 argc < 2 ? "" : argv[1]);
        return cli_missing("tokenizer", usage, what);
    }
    train_args a = { .min_frequency = 2, .files = calloc((size_t)argc + 1, sizeof(char *)) };
    if (a.files == NULL) {
        return cli_fail("tokenizer", "out of memory");
    }
    int rc = parse_args(argc, argv, &a);
    if (rc == CLI_OK) {
        rc = train(&a);
    }
    free(a.files);
    free(a.special);
    return rc == CLI_HELP ? CLI_OK : rc;
}
