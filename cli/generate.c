// mambac generate: continue one or more prompts with mc_generate and print what transformers' batch_decode of
// model.generate shows (prompt + continuation, special tokens kept). Stop strings are checked here, on token bytes.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"

#define MAX_NEW_LIMIT 1000000

static const char usage[] =
    "usage: mambac generate -m MODEL (-p TEXT | -f FILE | --ids 1,2,3)... [-n N] [--greedy | --sample --temperature T --top-k K "
    "--top-p P --min-p P --seed S] [--repetition-penalty R] [--stop STR]... [--no-eos] [--eos ID]... [--print-ids] "
    "[--tokenizer FILE] [--batch N] [--quiet] " CLI_LOAD_USAGE;

static const char help[] =
    "Continues each prompt and prints the prompt text followed by its continuation, as transformers'\n"
    "tokenizer.batch_decode(model.generate(...)) shows it (special tokens are not skipped), then a newline.\n"
    "A single prompt is streamed token by token (bytes of a partial UTF-8 character are held back until it is\n"
    "complete); with several prompts each sequence is printed after generation, one per line, in prompt order.\n"
    "Statistics (load time, prompt and new tokens, prefill and decode tokens/s) go to stderr.\n"
    "\n"
    "flags:\n"
    "  -m, --model MODEL        model folder, hub-cache snapshot, or ORG/NAME in the local hub cache (required)\n"
    "  -p, --prompt TEXT        a prompt; repeat for a batch (each gets exactly the tokens it gets alone)\n"
    "      --ids 1,2,3          a prompt given as token ids instead of text; repeatable, mixes with -p\n"
    "  -f, --prompt-file FILE   a prompt read from a file (any length: it is prefilled in chunks); repeatable\n"
    "  -n, --max-new-tokens N   new tokens per sequence, 0..1000000 (default 20, as transformers)\n"
    "      --greedy             always take the most probable token (the default); overrides sampling flags\n"
    "      --sample             sample with the defaults below (implied by any of the next five flags)\n"
    "      --temperature T      > 0, divides the scores (default 1)\n"
    "      --top-k K            keep the K best scores, ties kept; 0 = off (default 50 when sampling, as\n"
    "                           transformers' generate)\n"
    "      --top-p P            nucleus filter, 0..1 (default 1 = off)\n"
    "      --min-p P            drop tokens below P times the best probability, 0..1 (default 0 = off)\n"
    "      --seed S             random seed, 0..2^64-1 (default: from the clock, printed with the statistics);\n"
    "                           sequence i of a batch draws from its own stream, so sequence 0 equals a\n"
    "                           single-prompt run with the same seed\n"
    "      --repetition-penalty R  > 0, applies in greedy mode too (default 1 = off)\n"
    "      --stop STR           end a sequence after the token that completes STR (kept in the output), like\n"
    "                           transformers' stop_strings; repeatable; needs the tokenizer\n"
    "      --no-eos             do not stop at the end-of-sequence token\n"
    "      --eos ID             end-of-sequence token id instead of the config's eos_token_id; repeatable\n"
    "      --print-ids          print each whole sequence (prompt + new) as comma-separated ids, one line each,\n"
    "                           instead of text; with --ids only, no tokenizer is needed\n"
    "      --tokenizer FILE     tokenizer.json (default: MODEL's folder's tokenizer.json)\n"
    "      --batch N            run every prompt N times as one batch (1..4096), to measure batched decoding\n"
    "  -q, --quiet              no statistics on stderr\n" CLI_LOAD_HELP "  -h, --help               this text\n"
    "\n"
    "examples:\n"
    "  mambac generate -m state-spaces/mamba-130m-hf -p \"Hey how are you doing?\" -n 10\n"
    "  mambac generate -m tests/fixtures/models/tiny-neox --ids 8262,849,403 --print-ids -n 5\n"
    "  mambac generate -m MODEL -p \"Once upon a time\" --temperature 0.8 --top-p 0.9 --seed 1 --stop \".\"\n";

typedef struct prompt_arg {
    const char *text; // -p or -f, or NULL for --ids
    char *file_text;  // owned text of -f
    int32_t *ids;     // owned (--ids, or the encoded text)
    int64_t n_ids;
} prompt_arg;

typedef struct gen_args {
    const char *model, *tokenizer;
    prompt_arg *prompts; // [n_prompts]
    int64_t n_prompts;
    int32_t *eos; // [n_eos] owned
    int64_t n_eos;
    const char **stops; // [n_stops] borrowed from argv
    int64_t n_stops;
    mc_generate_opts opts;
    mc_load_opts load;
    bool greedy, sample, seed_given, top_k_given, no_eos, print_ids, quiet;
    int64_t batch; // --batch: copies of each prompt (1 = none)
} gen_args;

static void gen_args_free(gen_args *a) {
    for (int64_t i = 0; i < a->n_prompts; i++) {
        free(a->prompts[i].ids);
        free(a->prompts[i].file_text);
    }
    free(a->prompts);
    free(a->eos);
    free(a->stops);
}

// The flags that take a number; each sets a field and may turn sampling on.
static int parse_number_flag(cli_flags *f, gen_args *a, bool *matched) {
    mc_sampler_opts *s = &a->opts.sampler;
    int rc = CLI_OK;
    *matched = true;
    if (cli_flag_is(f, "-n", "--max-new-tokens")) {
        rc = cli_flag_i64(f, 0, MAX_NEW_LIMIT, &a->opts.max_new_tokens);
    } else if (cli_flag_is(f, NULL, "--temperature")) {
        rc = cli_flag_f64(f, &s->temperature);
        rc = rc == CLI_OK && !(s->temperature > 0) ? cli_flag_bad(f, "%g must be > 0", s->temperature) : rc;
        a->sample = true;
    } else if (cli_flag_is(f, NULL, "--top-k")) {
        rc = cli_flag_i64(f, 0, INT32_MAX, &s->top_k);
        a->sample = a->top_k_given = true;
    } else if (cli_flag_is(f, NULL, "--top-p")) {
        rc = cli_flag_f64(f, &s->top_p);
        rc = rc == CLI_OK && !(s->top_p >= 0 && s->top_p <= 1) ? cli_flag_bad(f, "%g must be in 0..1", s->top_p) : rc;
        a->sample = true;
    } else if (cli_flag_is(f, NULL, "--min-p")) {
        rc = cli_flag_f64(f, &s->min_p);
        rc = rc == CLI_OK && !(s->min_p >= 0 && s->min_p <= 1) ? cli_flag_bad(f, "%g must be in 0..1", s->min_p) : rc;
        a->sample = true;
    } else if (cli_flag_is(f, NULL, "--seed")) {
        rc = cli_flag_u64(f, &s->seed);
        a->sample = a->seed_given = true;
    } else if (cli_flag_is(f, NULL, "--repetition-penalty")) {
        rc = cli_flag_f64(f, &s->repetition_penalty);
        rc = rc == CLI_OK && !(s->repetition_penalty > 0) ? cli_flag_bad(f, "%g must be > 0", s->repetition_penalty)
                                                          : rc;
    } else {
        *matched = false;
    }
    return rc;
}

// Flags that take a list entry: -p, --ids, --eos, --stop.
static int parse_list_flag(cli_flags *f, gen_args *a, bool *matched) {
    const char *v = NULL;
    int rc = CLI_OK;
    *matched = true;
    if (cli_flag_is(f, "-p", "--prompt")) {
        rc = cli_flag_value(f, &v);
        a->prompts[a->n_prompts++] = (prompt_arg){ .text = v };
    } else if (cli_flag_is(f, "-f", "--prompt-file")) {
        prompt_arg *p = &a->prompts[a->n_prompts];
        size_t len = 0;
        rc = cli_flag_value(f, &v);
        rc = rc == CLI_OK ? cli_read_file("generate", v, &p->file_text, &len) : rc;
        if (rc == CLI_OK && strlen(p->file_text) != len) {
            rc = cli_fail("generate", "%s: contains a NUL byte; prompts are text", v);
        }
        p->text = p->file_text;
        a->n_prompts += rc == CLI_OK;
        if (rc != CLI_OK) {
            free(p->file_text);
            p->file_text = NULL;
        }
    } else if (cli_flag_is(f, NULL, "--ids")) {
        prompt_arg *p = &a->prompts[a->n_prompts];
        rc = cli_flag_ids(f, &p->ids, &p->n_ids);
        a->n_prompts += rc == CLI_OK;
    } else if (cli_flag_is(f, NULL, "--eos")) {
        int64_t id = 0;
        rc = cli_flag_i64(f, 0, INT32_MAX, &id);
        a->eos[a->n_eos++] = (int32_t)id;
    } else if (cli_flag_is(f, NULL, "--stop")) {
        rc = cli_flag_value(f, &v);
        rc = rc == CLI_OK && v[0] == '\0' ? cli_flag_bad(f, "the stop string is empty") : rc;
        a->stops[a->n_stops++] = v;
    } else {
        *matched = false;
    }
    return rc;
}

static int parse_args(int argc, char **argv, gen_args *a) {
    mc_generate_opts_init(&a->opts, NULL);
    mc_load_opts_init(&a->load);
    a->prompts = calloc((size_t)argc, sizeof(*a->prompts));
    a->eos = calloc((size_t)argc, sizeof(*a->eos));
    a->stops = calloc((size_t)argc, sizeof(*a->stops));
    if (a->prompts == NULL || a->eos == NULL || a->stops == NULL) {
        return cli_fail("generate", "out of memory");
    }
    cli_flags f;
    cli_flags_init(&f, "generate", usage, argc, argv);
    while (cli_flags_next(&f)) {
        bool matched = false;
        int rc = parse_number_flag(&f, a, &matched);
        if (!matched) {
            rc = parse_list_flag(&f, a, &matched);
        }
        if (!matched) {
            rc = cli_load_flag(&f, &a->load, &matched);
        }
        if (matched) {
            if (rc != CLI_OK) {
                return rc;
            }
            continue;
        }
        if (cli_flag_is(&f, "-h", "--help")) {
            return cli_print_help(usage, help);
        } else if (cli_flag_is(&f, "-m", "--model")) {
            rc = cli_flag_value(&f, &a->model);
        } else if (cli_flag_is(&f, NULL, "--tokenizer")) {
            rc = cli_flag_value(&f, &a->tokenizer);
        } else if (cli_flag_is(&f, NULL, "--greedy") && f.inline_value == NULL) {
            a->greedy = true;
        } else if (cli_flag_is(&f, NULL, "--sample") && f.inline_value == NULL) {
            a->sample = true;
        } else if (cli_flag_is(&f, NULL, "--no-eos") && f.inline_value == NULL) {
            a->no_eos = true;
        } else if (cli_flag_is(&f, NULL, "--print-ids") && f.inline_value == NULL) {
            a->print_ids = true;
        } else if (cli_flag_is(&f, "-q", "--quiet") && f.inline_value == NULL) {
            a->quiet = true;
        } else if (cli_flag_is(&f, NULL, "--batch")) {
            rc = cli_flag_i64(&f, 1, 4096, &a->batch);
        } else {
            return cli_flag_unknown(&f);
        }
        if (rc != CLI_OK) {
            return rc;
        }
    }
    if (cli_need_model("generate", usage, &a->model) != CLI_OK) {
        return CLI_USAGE;
    }
    if (a->n_prompts == 0) {
        return cli_missing("generate", usage, "give at least one prompt with -p TEXT or --ids 1,2,3");
    }
    return CLI_OK;
}

// Turns the flags into sampler settings: any sampling flag turns sampling on unless --greedy; HF's top-k 50
// applies when sampling without --top-k (spec §7.1).
static void settle_sampling(gen_args *a) {
    mc_sampler_opts *s = &a->opts.sampler;
    s->do_sample = a->sample && !a->greedy;
    if (s->do_sample && !a->top_k_given) {
        s->top_k = 50;
    }
    if (s->do_sample && !a->seed_given) {
        s->seed = (uint64_t)(cli_now() * 1e9) ^ ((uint64_t)getpid() << 32);
    }
    a->opts.stop_at_eos = !a->no_eos;
    if (a->n_eos > 0) {
        a->opts.eos_ids = a->eos;
        a->opts.n_eos_ids = a->n_eos;
    }
}

// --batch N: every prompt N times, so N sequences step together (for measuring batched decoding).
static int replicate_prompts(gen_args *a) {
    if (a->batch <= 1) {
        return CLI_OK;
    }
    prompt_arg *more = calloc((size_t)(a->n_prompts * a->batch), sizeof(*more));
    if (more == NULL) {
        return cli_fail("generate", "out of memory for --batch %lld", (long long)a->batch);
    }
    for (int64_t i = 0; i < a->n_prompts * a->batch; i++) {
        const prompt_arg *src = &a->prompts[i % a->n_prompts];
        more[i] = *src;
        more[i].file_text = i < a->n_prompts ? src->file_text : NULL; // the first copy owns a -f text
        more[i].ids = malloc((size_t)src->n_ids * sizeof(int32_t));
        if (more[i].ids == NULL) {
            for (int64_t j = 0; j < i; j++) {
                free(more[j].ids);
            }
            free(more);
            return cli_fail("generate", "out of memory for --batch %lld", (long long)a->batch);
        }
        memcpy(more[i].ids, src->ids, (size_t)src->n_ids * sizeof(int32_t));
    }
    for (int64_t i = 0; i < a->n_prompts; i++) {
        free(a->prompts[i].ids);
    }
    free(a->prompts);
    a->prompts = more;
    a->n_prompts *= a->batch;
    return CLI_OK;
}

// Encodes text prompts and checks every prompt against the model's vocabulary.
static int prepare_prompts(gen_args *a, const mc_tokenizer *tok, int64_t n_vocab) {
    for (int64_t i = 0; i < a->n_prompts; i++) {
        prompt_arg *p = &a->prompts[i];
        char what[48];
        snprintf(what, sizeof(what), "prompt %lld", (long long)(i + 1));
        if (p->text != NULL) {
            mc_error err = { 0 };
            if (mc_tokenizer_encode(tok, p->text, strlen(p->text), &p->ids, &p->n_ids, &err) != MC_OK) {
                return cli_fail("generate", "%s: %s", what, err.msg);
            }
        }
        if (p->n_ids == 0) {
            return cli_fail("generate", "%s is empty: need at least one token", what);
        }
        if (cli_check_ids("generate", what, p->ids, p->n_ids, n_vocab) != CLI_OK) {
            return CLI_ERR;
        }
    }
    for (int64_t j = 0; j < a->n_eos; j++) {
        if (a->eos[j] >= n_vocab) {
            return cli_fail("generate", "--eos %d is outside the vocabulary [0, %lld)", a->eos[j], (long long)n_vocab);
        }
    }
    return CLI_OK;
}

// ---------------------------------------------------------------------------------------------------------------
// Per-token work during generation: streaming output and stop strings.

typedef struct stop_tail {
    char *bytes; // the last (longest stop - 1) bytes of the sequence so far, then the newest token's bytes
    size_t n, cap;
} stop_tail;

typedef struct gen_run {
    const mc_tokenizer *tok;
    bool stream;
    mc_utf8_stream utf8;
    char *out; // utf8 stream output buffer
    size_t out_cap;
    const char **stops;
    int64_t n_stops;
    size_t max_stop;
    stop_tail *tails; // [n_seq] when n_stops > 0
    bool oom;
} gen_run;

static bool ensure_cap(char **buf, size_t *cap, size_t need) {
    if (need <= *cap) {
        return true;
    }
    size_t c = *cap > 0 ? *cap : 64;
    while (c < need) {
        c *= 2;
    }
    char *b = realloc(*buf, c);
    if (b == NULL) {
        return false;
    }
    *buf = b;
    *cap = c;
    return true;
}

static void stream_bytes(gen_run *r, const char *bytes, size_t len) {
    if (len == 0) { // ids without a string (vocabulary padding) print nothing, as decode skips them
        return;
    }
    if (!ensure_cap(&r->out, &r->out_cap, len * 3 + 16)) {
        r->oom = true;
        return;
    }
    size_t n = mc_utf8_stream_feed(&r->utf8, bytes, len, r->out, r->out_cap);
    cli_write(r->out, n);
}

// Appends bytes to the tail and reports whether a stop string ends inside them (an occurrence overlapping the
// newest token: one that ended earlier was seen at its own token), then keeps only the last max_stop - 1 bytes.
static bool tail_push(gen_run *r, stop_tail *t, const char *bytes, size_t len, bool check) {
    size_t before = t->n;
    if (len == 0) {
        return false; // no new bytes cannot complete a stop string
    }
    if (!ensure_cap(&t->bytes, &t->cap, t->n + len + 1)) {
        r->oom = true;
        return true;
    }
    memcpy(t->bytes + t->n, bytes, len);
    t->n += len;
    bool hit = false;
    for (int64_t k = 0; check && k < r->n_stops && !hit && len > 0; k++) {
        size_t sl = strlen(r->stops[k]);
        size_t from = before + 1 > sl ? before + 1 - sl : 0;
        for (size_t pos = from; !hit && pos + sl <= t->n; pos++) {
            hit = memcmp(t->bytes + pos, r->stops[k], sl) == 0;
        }
    }
    size_t keep = r->max_stop - 1;
    if (t->n > keep) {
        memmove(t->bytes, t->bytes + t->n - keep, keep);
        t->n = keep;
    }
    return hit;
}

static bool on_token(void *user, int64_t seq, int32_t token) {
    gen_run *r = user;
    size_t len = 0;
    const char *bytes = r->tok != NULL ? mc_tokenizer_token_bytes(r->tok, token, &len) : NULL;
    if (r->stream) {
        stream_bytes(r, bytes, len);
        fflush(stdout);
    }
    bool stop = r->n_stops > 0 && tail_push(r, &r->tails[seq], bytes, len, true);
    return !stop && !r->oom;
}

static int run_init(gen_run *r, const gen_args *a, const mc_tokenizer *tok) {
    r->tok = tok;
    r->stream = a->n_prompts == 1 && !a->print_ids;
    r->stops = a->stops;
    r->n_stops = a->n_stops;
    for (int64_t k = 0; k < a->n_stops; k++) {
        size_t sl = strlen(a->stops[k]);
        r->max_stop = sl > r->max_stop ? sl : r->max_stop;
    }
    if (a->n_stops > 0) {
        r->tails = calloc((size_t)a->n_prompts, sizeof(*r->tails));
        if (r->tails == NULL) {
            return cli_fail("generate", "out of memory");
        }
    }
    for (int64_t i = 0; i < a->n_prompts; i++) { // the prompt's bytes: a stop string may start inside it, as in HF
        const prompt_arg *p = &a->prompts[i];
        for (int64_t t = 0; t < p->n_ids && (r->stream || r->tails != NULL); t++) {
            size_t len = 0;
            const char *bytes = mc_tokenizer_token_bytes(tok, p->ids[t], &len);
            if (r->stream) {
                stream_bytes(r, bytes, len);
            }
            if (r->tails != NULL) {
                tail_push(r, &r->tails[i], bytes, len, false);
            }
        }
    }
    fflush(stdout);
    return r->oom ? cli_fail("generate", "out of memory") : CLI_OK;
}

static void run_free(gen_run *r, int64_t n_seq) {
    for (int64_t i = 0; r->tails != NULL && i < n_seq; i++) {
        free(r->tails[i].bytes);
    }
    free(r->tails);
    free(r->out);
}

// ---------------------------------------------------------------------------------------------------------------
// Output after generation

static int print_results(const gen_args *a, gen_run *r, int32_t **new_ids, const int64_t *n_new) {
    if (r->stream) {
        size_t n = mc_utf8_stream_flush(&r->utf8, r->out, r->out_cap);
        cli_write(r->out, n);
        putchar('\n');
        return CLI_OK;
    }
    for (int64_t i = 0; i < a->n_prompts; i++) {
        const prompt_arg *p = &a->prompts[i];
        int32_t *all = malloc((size_t)(p->n_ids + n_new[i]) * sizeof(int32_t));
        if (all == NULL) {
            return cli_fail("generate", "out of memory");
        }
        memcpy(all, p->ids, (size_t)p->n_ids * sizeof(int32_t));
        memcpy(all + p->n_ids, new_ids[i], (size_t)n_new[i] * sizeof(int32_t));
        int rc = CLI_OK;
        if (a->print_ids) {
            cli_print_ids(all, p->n_ids + n_new[i]);
        } else {
            char *text = NULL;
            size_t len = 0;
            mc_error err = { 0 };
            if (mc_tokenizer_decode(r->tok, all, p->n_ids + n_new[i], false, &text, &len, &err) == MC_OK) {
                cli_write(text, len);
                putchar('\n');
            } else {
                rc = cli_fail_err("generate", &err);
            }
            free(text);
        }
        free(all);
        if (rc != CLI_OK) {
            return rc;
        }
    }
    return CLI_OK;
}

static void print_stats(const gen_args *a, double load_s, const mc_generate_stats *st) {
    int64_t n_first = a->opts.max_new_tokens > 0 ? a->n_prompts : 0; // first tokens come from the prefill logits
    int64_t n_decode = st->n_new_tokens > n_first ? st->n_new_tokens - n_first : 0;
    fprintf(stderr,
            "stats: load %.3f s | %lld prompt tokens, prefill %.3f s (%.1f tok/s) | %lld new tokens, decode "
            "%.3f s (%.1f tok/s)\n",
            load_s, (long long)st->n_prompt_tokens, st->prefill_seconds,
            st->prefill_seconds > 0 ? (double)st->n_prompt_tokens / st->prefill_seconds : 0.0,
            (long long)st->n_new_tokens, st->decode_seconds,
            st->decode_seconds > 0 ? (double)n_decode / st->decode_seconds : 0.0);
    const mc_sampler_opts *s = &a->opts.sampler;
    if (s->do_sample) {
        fprintf(stderr, "stats: sampling with seed %llu, temperature %g, top-k %lld, top-p %g, min-p %g\n",
                (unsigned long long)s->seed, s->temperature, (long long)s->top_k, s->top_p, s->min_p);
    }
}

static void note_demo_model(const mc_model *model) {
    const char *dir = mc_model_dir(model);
    char path[4096];
    struct stat sb;
    if (dir != NULL && (size_t)snprintf(path, sizeof(path), "%s/MAMBAC_DEMO", dir) < sizeof(path) &&
        stat(path, &sb) == 0) {
        fprintf(stderr, "note: demo model: random weights, output is not meaningful\n");
    }
}

static int generate_and_print(gen_args *a, const mc_model *model, const mc_tokenizer *tok, double load_s) {
    gen_run r = { 0 };
    mc_generate_stats stats = { 0 };
    int64_t n = a->n_prompts;
    const int32_t **ids = calloc((size_t)n, sizeof(*ids));
    int64_t *lens = calloc((size_t)n, sizeof(*lens));
    int32_t **new_ids = calloc((size_t)n, sizeof(*new_ids));
    int64_t *n_new = calloc((size_t)n, sizeof(*n_new));
    int rc = ids != NULL && lens != NULL && new_ids != NULL && n_new != NULL ? CLI_OK : cli_fail("generate", "oom");
    for (int64_t i = 0; rc == CLI_OK && i < n; i++) {
        ids[i] = a->prompts[i].ids;
        lens[i] = a->prompts[i].n_ids;
    }
    rc = rc == CLI_OK ? run_init(&r, a, tok) : rc;
    if (rc == CLI_OK) {
        a->opts.on_token = on_token;
        a->opts.user = &r;
        a->opts.stats = &stats;
        mc_error err = { 0 };
        if (mc_generate(model, (const int32_t *const *)ids, lens, n, &a->opts, new_ids, n_new, &err) != MC_OK) {
            rc = cli_fail_err("generate", &err);
        } else if (r.oom) {
            rc = cli_fail("generate", "out of memory");
        }
    }
    rc = rc == CLI_OK ? print_results(a, &r, new_ids, n_new) : rc;
    fflush(stdout);
    if (rc == CLI_OK && !a->quiet) {
        print_stats(a, load_s, &stats);
    }
    for (int64_t i = 0; new_ids != NULL && i < n; i++) {
        free(new_ids[i]);
    }
    run_free(&r, n);
    free(ids);
    free(lens);
    free(new_ids);
    free(n_new);
    return rc;
}

int cli_generate(int argc, char **argv) {
    gen_args a = { 0 };
    int rc = parse_args(argc, argv, &a);
    mc_model *model = NULL;
    mc_tokenizer *tok = NULL;
    double load_s = 0;
    if (rc == CLI_OK) {
        settle_sampling(&a);
        rc = cli_open_model("generate", a.model, &a.load, &model, &load_s);
    }
    bool need_tok = !a.print_ids || a.n_stops > 0;
    for (int64_t i = 0; i < a.n_prompts; i++) {
        need_tok = need_tok || a.prompts[i].text != NULL;
    }
    if (rc == CLI_OK && need_tok) {
        rc = cli_open_tokenizer("generate", a.tokenizer, a.model, a.load.revision, &tok);
    }
    if (rc == CLI_OK) {
        if (!a.quiet) {
            note_demo_model(model);
        }
        rc = prepare_prompts(&a, tok, mc_model_config(model)->vocab_size);
    }
    if (rc == CLI_OK) {
        rc = replicate_prompts(&a);
    }
    if (rc == CLI_OK) {
        rc = generate_and_print(&a, model, tok, load_s);
    }
    mc_tokenizer_free(tok);
    mc_model_free(model);
    gen_args_free(&a);
    return rc == CLI_HELP ? CLI_OK : rc;
}
