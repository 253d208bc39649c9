// mambac: dispatches to one command per cli/<command>.c; prints the command list and the version.
#include <stdio.h>
#include <string.h>

#include "common.h"

typedef struct cli_command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} cli_command;

static const cli_command commands[] = {
    { "generate", cli_generate, "continue prompts (greedy or sampled, as transformers' generate)" },
    { "forward", cli_forward, "write the logits of token ids to a .npy file" },
    { "tokenize", cli_tokenize, "print the token ids of stdin's text" },
    { "detokenize", cli_detokenize, "print the text of token ids" },
    { "tokenizer", cli_tokenizer, "train a byte-level BPE tokenizer.json on text files (as tokenizers does)" },
    { "data", cli_data, "tokenize text files into a binary token file for training" },
    { "info", cli_info, "print a model's config, parameter count and memory" },
    { "perplexity", cli_perplexity, "score a text file: perplexity and bits per byte" },
    { "bench", cli_bench, "measure prefill and decode speed, memory and bandwidth" },
    { "init", cli_init, "write a randomly initialised model (presets 130m .. 2.8b)" },
    { "quantize", cli_quantize, "convert a model's weights to int8/bf16/f16 and save it" },
    { "train", cli_train, "train every weight on a dataset (AdamW, schedules, checkpoints, --resume)" },
    { "finetune", cli_finetune, "fine-tune LoRA adapters that PEFT reads (the Hugging Face example's job)" },
    { "merge", cli_merge, "merge a PEFT LoRA adapter into a model and save it" },
    { "grad", cli_grad, "write the loss and every trainable gradient of a batch (all weights or LoRA)" },
};

static void print_help(FILE *out) {
    fprintf(out,
            "mambac %s: the Mamba-1 language model in C\n\n"
            "usage: mambac <command> [flags]   (mambac <command> --help for its flags)\n\n"
            "commands:\n",
            CLI_VERSION);
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        fprintf(out, "  %-11s %s\n", commands[i].name, commands[i].summary);
    }
    fprintf(out, "\nexample:\n  mambac generate -m state-spaces/mamba-130m-hf -p \"Hey how are you doing?\" -n 10\n"
                 "\nexit status: 0 ok, 1 runtime error (message 'mambac <command>: ...'), 2 bad usage\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        print_help(stderr);
        return CLI_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        print_help(stdout);
        return CLI_OK;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        printf("mambac %s\n", CLI_VERSION);
        return CLI_OK;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(cmd, commands[i].name) == 0) {
            return commands[i].run(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "mambac: unknown command '%s'\nusage: mambac <command> [flags]   (see mambac --help)\n", cmd);
    return CLI_USAGE;
}
