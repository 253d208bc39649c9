// mambac tokenize: prints the token ids of all of stdin (read byte for byte) on one comma-separated line.
#include <stdio.h>
#include <stdlib.h>

#include "common.h"

static const char usage[] = "usage: mambac tokenize (-m MODEL | --tokenizer FILE) < TEXT";

static const char help[] =
    "Reads all of stdin byte for byte (no newline is stripped) and prints its token ids, comma-separated, on one\n"
    "line, as tokenizer.encode(text) (no special tokens are added). Empty input prints an empty line. Input that\n"
    "is not valid UTF-8 is an error naming the byte offset.\n"
    "\n"
    "flags:\n"
    "  -m, --model MODEL    use MODEL's folder's tokenizer.json\n"
    "      --tokenizer FILE a tokenizer.json (takes precedence over -m)\n"
    "  -h, --help           this text\n"
    "\n"
    "example:\n"
    "  printf 'Hey how are you doing?' | mambac tokenize --tokenizer ../shared/tokenizers/gpt-neox-20b/tokenizer.json\n"
    "  8262,849,403,368,2509,32\n";

static int parse_args(int argc, char **argv, const char **model, const char **tok_path) {
    cli_flags f;
    cli_flags_init(&f, "tokenize", usage, argc, argv);
    while (cli_flags_next(&f)) {
        int rc = CLI_OK;
        if (cli_flag_is(&f, "-h", "--help")) {
            return cli_print_help(usage, help);
        } else if (cli_flag_is(&f, "-m", "--model")) {
            rc = cli_flag_value(&f, model);
        } else if (cli_flag_is(&f, NULL, "--tokenizer")) {
            rc = cli_flag_value(&f, tok_path);
        } else {
            return cli_flag_unknown(&f);
        }
        if (rc != CLI_OK) {
            return rc;
        }
    }
    if (*tok_path == NULL && cli_need_model("tokenize", usage, model) != CLI_OK) {
        return CLI_USAGE;
    }
    return CLI_OK;
}

int cli_tokenize(int argc, char **argv) {
    const char *model = NULL, *tok_path = NULL;
    int rc = parse_args(argc, argv, &model, &tok_path);
    mc_tokenizer *tok = NULL;
    char *text = NULL;
    size_t len = 0;
    int32_t *ids = NULL;
    int64_t n_ids = 0;
    if (rc == CLI_OK) {
        rc = cli_open_tokenizer("tokenize", tok_path, model, NULL, &tok);
    }
    if (rc == CLI_OK) {
        rc = cli_read_stdin("tokenize", &text, &len);
    }
    if (rc == CLI_OK) {
        mc_error err = { 0 };
        if (mc_tokenizer_encode(tok, text, len, &ids, &n_ids, &err) != MC_OK) {
            rc = cli_fail("tokenize", "stdin: %s", err.msg);
        } else {
            cli_print_ids(ids, n_ids);
        }
    }
    free(ids);
    free(text);
    mc_tokenizer_free(tok);
    return rc == CLI_HELP ? CLI_OK : rc;
}
