// Shared pieces of the mambac commands: flag scanning, value parsing with range checks, opening models and
// tokenizers, and the two error shapes (runtime error: exit 1; bad usage: exit 2). Commands live in cli/<cmd>.c.
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mambac.h"

#define CLI_VERSION "0.1.0"

// Exit codes of every command; CLI_HELP is internal: --help was printed, the command exits 0.
enum { CLI_HELP = -1, CLI_OK = 0, CLI_ERR = 1, CLI_USAGE = 2 };

// Each command: argv[0] is the command name; returns the process exit code.
int cli_generate(int argc, char **argv);
int cli_forward(int argc, char **argv);
int cli_tokenize(int argc, char **argv);
int cli_detokenize(int argc, char **argv);
int cli_tokenizer(int argc, char **argv);
int cli_data(int argc, char **argv);
int cli_info(int argc, char **argv);
int cli_perplexity(int argc, char **argv);
int cli_init(int argc, char **argv);
int cli_quantize(int argc, char **argv);
int cli_bench(int argc, char **argv);
int cli_grad(int argc, char **argv);
int cli_merge(int argc, char **argv);
int cli_train(int argc, char **argv);
int cli_finetune(int argc, char **argv);

// LoRA flags shared by grad, finetune: a comma list of target modules into MC_LORA_* bits; none/all/lora_only.
// -m MODEL when it was not given: $MAMBAC_MODEL, else mambac's own model (the source tree's models/, then the
// installed one); cli_need_model sets *model to it or fails with the places it looked.
// Copies from_dir/tokenizer.json to to_dir/tokenizer.json when it exists.
int cli_copy_tokenizer(const char *cmd, const char *from_dir, const char *to_dir);

const char *cli_default_model(void);
int cli_need_model(const char *cmd, const char *usage, const char **model);

int cli_lora_targets(const char *cmd, const char *list, unsigned *bits);
int cli_lora_bias(const char *cmd, const char *v, mc_lora_bias *bias);

// Walks argv[1..] of a command. Accepts "-x VALUE", "--name VALUE" and "--name=VALUE"; anything else that is
// not a known flag is an error with the usage line.
typedef struct cli_flags {
    const char *cmd;   // "generate"
    const char *usage; // one line: "usage: mambac generate -m MODEL ..."
    int argc;
    char **argv;
    int i;                    // index of the current argument
    char name[64];            // the current flag without any "=value"
    const char *inline_value; // the part after '=', or NULL
} cli_flags;

void cli_flags_init(cli_flags *f, const char *cmd, const char *usage, int argc, char **argv);
// Advances to the next argument; false when there is none.
bool cli_flags_next(cli_flags *f);
// Whether the current flag is short_name or long_name (either may be NULL).
bool cli_flag_is(const cli_flags *f, const char *short_name, const char *long_name);
// A flag that takes no value given one ("--greedy=1") or an unknown flag: prints the message and the usage line.
int cli_flag_unknown(const cli_flags *f);
// The value of the current flag (inline or the next argument). Missing: message + usage, returns CLI_USAGE.
int cli_flag_value(cli_flags *f, const char **value);
// Parses the current flag's value as an integer in [lo, hi] / a finite number / comma-separated token ids.
// Errors print "mambac <cmd>: <flag>: ..." and return CLI_USAGE.
int cli_flag_i64(cli_flags *f, int64_t lo, int64_t hi, int64_t *out);
int cli_flag_u64(cli_flags *f, uint64_t *out);
int cli_flag_f64(cli_flags *f, double *out);
int cli_flag_ids(cli_flags *f, int32_t **ids, int64_t *n_ids);
// Fails (one line naming the first list that differs) unless the n_seq --ids lists have one length: a batch.
int cli_ids_same_length(const char *cmd, const int64_t *n_ids, int64_t n_seq);
// "mambac <cmd>: <flag>: <message>" for a value that parsed but is out of range; returns CLI_USAGE.
int cli_flag_bad(const cli_flags *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// A required flag that never came: message + usage, CLI_USAGE.
int cli_missing(const char *cmd, const char *usage, const char *what);

// Prints usage, a blank line and help to stdout; returns CLI_HELP.
int cli_print_help(const char *usage, const char *help);

// Prints "mambac <cmd>: <message>" to stderr and returns CLI_ERR.
int cli_fail(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Same with an mc_error's message.
int cli_fail_err(const char *cmd, const mc_error *err);

// Seconds on a monotonic clock.
double cli_now(void);

// The load flags every model command takes: --revision, --backend, -t/--threads, --dtype, --lora, --precision. Sets *matched when the
// current flag is one of them; bad values print a message and return CLI_USAGE.
int cli_load_flag(cli_flags *f, mc_load_opts *opts, bool *matched);
#define CLI_LOAD_USAGE                                                                                                 \
    "[--backend auto|ref|cpu|cuda] [-t N] [--dtype stored|f32|f16|bf16|int8] [--precision f32|tf32|bf16] "        \
    "[--lora DIR] [--revision REV]"
#define CLI_LOAD_HELP                                                                                                  \
    "      --backend NAME       kernels: auto (default: cuda when a GPU is usable, else cpu), ref (plain\n"      \
    "                           reference), cpu (SIMD + threads), cuda (NVIDIA GPU, when built with it)\n"              \
    "  -t, --threads N          kernel threads, 1..4096 (default: the physical cores)\n"                               \
    "      --dtype DTYPE        weights of the matrices: stored (default, as in the files), f32, f16, bf16,\n"    \
    "                           int8 (per-group quantized on load)\n"                \
    "      --precision P        how a GPU multiplies: f32 (default: f32-accurate products for every dtype,\n"  \
    "                           large f32 x f32 ones as three TF32 terms on the tensor cores),\n"              \
    "                           tf32, or bf16 (tensor cores, both operands rounded to bf16 as autocast\n"      \
    "                           does; f32 accumulation, state and master weights); the CPU computes in f32\n"  \
    "      --lora DIR           a PEFT LoRA adapter folder applied to the model (merged on load; an adapted\n"      \
    "                           tied embedding keeps the base head, as PEFT does)\n"                              \
    "      --revision REV       hub-cache revision for ORG/NAME (default main)\n"

// Loads MODEL with opts (NULL = defaults), reporting failures as runtime errors. *seconds gets the load time
// (may be NULL).
int cli_open_model(const char *cmd, const char *path, const mc_load_opts *opts, mc_model **model, double *seconds);
// Loads tok_path, or MODEL's folder's tokenizer.json when tok_path is NULL; errors say which file was missing.
int cli_open_tokenizer(const char *cmd, const char *tok_path, const char *model_path, const char *revision,
                       mc_tokenizer **tok);
// Checks ids [n] against [0, n_vocab); the message names what (e.g. "--ids 2") and the position.
int cli_check_ids(const char *cmd, const char *what, const int32_t *ids, int64_t n, int64_t n_vocab);

// Reads all of stdin byte for byte into *data (owned, free(); NUL-terminated, *len excludes it).
int cli_read_stdin(const char *cmd, char **data, size_t *len);
// Reads all of the file at path (owned, NUL-terminated); errors name the path.
int cli_read_file(const char *cmd, const char *path, char **data, size_t *len);
// Writes ids as "1,2,3\n" to stdout.
void cli_print_ids(const int32_t *ids, int64_t n);
// Writes len bytes to stdout as they are.
void cli_write(const char *bytes, size_t len);
