// mambac perplexity: token-level loss of a model over a text file, as perplexity and bits per byte, in fixed memory.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "common.h"

static const char usage[] = "usage: mambac perplexity -m MODEL -f FILE [--tokenizer FILE] [--max-tokens N] "
                            "[--no-progress] " CLI_LOAD_USAGE;

static const char help[] =
    "Tokenizes FILE (UTF-8 text, read whole) and scores every token after the first with the model's next-token\n"
    "distribution, feeding the text through the recurrent state in chunks so memory does not grow with its length.\n"
    "Prints to stdout: tokens, bytes, the mean negative log-likelihood in nats, the perplexity exp(mean NLL), and\n"
    "bits per byte (total NLL in bits over the file's bytes). A progress bar goes to stderr.\n"
    "\n"
    "flags:\n"
    "  -m, --model MODEL        model folder, hub-cache snapshot, or ORG/NAME (required)\n"
    "  -f, --file FILE          the text to score (required)\n"
    "      --tokenizer FILE     tokenizer.json (default: MODEL's)\n"
    "      --max-tokens N       score only the first N tokens (>= 2)\n"
    "      --no-progress        no progress bar\n" CLI_LOAD_HELP "  -h, --help               this text\n"
    "\n"
    "example:\n"
    "  mambac perplexity -m state-spaces/mamba-130m-hf -f wiki.test.raw\n";

typedef struct progress {
    double t0, last;
    bool show;
} progress;

static bool on_progress(void *user, int64_t done, int64_t total) {
    progress *p = user;
    double now = cli_now();
    if (p->show && (now - p->last > 0.5 || done == total)) {
        p->last = now;
        double rate = done / fmax(now - p->t0, 1e-9);
        int filled = (int)(30 * done / total);
        fprintf(stderr, "\r[%.*s%*s] %3d%% %lld/%lld tokens, %.1f tokens/s, %.0f s left ", filled,
                "##############################", 30 - filled, "", (int)(100 * done / total), (long long)done,
                (long long)total, rate, (double)(total - done) / fmax(rate, 1e-9));
        if (done == total) {
            fprintf(stderr, "\n");
        }
    }
    return true;
}

int cli_perplexity(int argc, char **argv) {
    const char *path = NULL, *file = NULL, *tok_path = NULL;
    int64_t max_tokens = 0;
    bool show = true;
    mc_load_opts load;
    mc_load_opts_init(&load);
    cli_flags f;
    cli_flags_init(&f, "perplexity", usage, argc, argv);
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
        } else if (cli_flag_is(&f, "-f", "--file")) {
            rc = cli_flag_value(&f, &file);
        } else if (cli_flag_is(&f, NULL, "--tokenizer")) {
            rc = cli_flag_value(&f, &tok_path);
        } else if (cli_flag_is(&f, NULL, "--max-tokens")) {
            rc = cli_flag_i64(&f, 2, INT64_MAX, &max_tokens);
        } else if (cli_flag_is(&f, NULL, "--no-progress")) {
            show = false;
        } else {
            return cli_flag_unknown(&f);
        }
        if (rc != CLI_OK) {
            return rc;
        }
    }
    if (file == NULL) {
        return cli_missing("perplexity", usage, "-f FILE is required");
    }
    if (cli_need_model("perplexity", usage, &path) != CLI_OK) {
        return CLI_USAGE;
    }
    char *text = NULL;
    size_t len = 0;
    int rc = cli_read_file("perplexity", file, &text, &len);
    mc_tokenizer *tok = NULL;
    mc_model *model = NULL;
    int32_t *ids = NULL;
    int64_t n_ids = 0;
    mc_error err = { 0 };
    if (rc == CLI_OK) {
        rc = cli_open_tokenizer("perplexity", tok_path, path, load.revision, &tok);
    }
    if (rc == CLI_OK && mc_tokenizer_encode(tok, text, len, &ids, &n_ids, &err) != MC_OK) {
        rc = cli_fail("perplexity", "%s: %s", file, err.msg);
    }
    if (rc == CLI_OK && n_ids < 2) {
        rc = cli_fail("perplexity", "%s: %lld token%s; need at least 2 to score one", file, (long long)n_ids,
                      n_ids == 1 ? "" : "s");
    }
    if (rc == CLI_OK) {
        rc = cli_open_model("perplexity", path, &load, &model, NULL);
    }
    if (rc == CLI_OK) {
        int64_t n = max_tokens > 0 && max_tokens < n_ids ? max_tokens : n_ids;
        progress p = { .t0 = cli_now(), .show = show };
        double nll = 0;
        int64_t n_scored = 0;
        if (mc_model_score(model, ids, n, on_progress, &p, &nll, &n_scored, &err) != MC_OK) {
            rc = cli_fail("perplexity", "%s: %s", file, err.msg); // e.g. a token id the model's vocabulary lacks
        } else {
            double secs = cli_now() - p.t0;
            // Bytes of the scored part: the whole file unless --max-tokens cut it short (then decode what was used).
            double bytes = (double)len;
            if (n < n_ids) {
                char *used = NULL;
                size_t used_len = 0;
                if (mc_tokenizer_decode(tok, ids, n, false, &used, &used_len, &err) == MC_OK) {
                    bytes = (double)used_len;
                }
                free(used);
            }
            printf("tokens: %lld\n", (long long)n);
            printf("bytes: %.0f\n", bytes);
            printf("mean_nll: %.6f\n", nll / (double)n_scored);
            printf("perplexity: %.4f\n", exp(nll / (double)n_scored));
            printf("bits_per_byte: %.6f\n", nll / log(2.0) / bytes);
            fprintf(stderr, "stats: %lld tokens scored in %.2f s (%.1f tokens/s)\n", (long long)n_scored, secs,
                    (double)n_scored / secs);
        }
    }
    free(ids);
    free(text);
    mc_tokenizer_free(tok);
    mc_model_free(model);
    return rc;
}
