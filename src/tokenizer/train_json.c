// Writes a trained mc_bpe_trainer as tokenizer.json, byte for byte what tokenizers' Tokenizer.save() (pretty,
// serde_json) writes for the same tokenizer built with its Python API (tools/oracle/tokenizer_train_check.py). Training
// is train.c's.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/file.h"
#include "tokenizer/train.h"

bool mc_bpe_saved_merges(const mc_bpe_trainer *t, int64_t **idx, int64_t *n) {
    *idx = NULL;
    *n = 0;
    mc_pairmap last = { 0 }; // pair -> index of its last merge
    int64_t *v = malloc((size_t)(t->n_merges + 1) * sizeof(*v));
    bool ok = v != NULL;
    for (int64_t i = 0; ok && i < t->n_merges; i++) {
        ok = mc_pairmap_put(&last, t->merges[3 * i], t->merges[3 * i + 1], (int32_t)i, t->merges[3 * i + 2]);
    }
    for (int64_t i = 0; ok && i < t->n_merges; i++) {
        int32_t rank = -1, id = -1;
        mc_pairmap_get(&last, t->merges[3 * i], t->merges[3 * i + 1], &rank, &id);
        if (rank == i) {
            v[(*n)++] = i;
        }
    }
    mc_pairmap_free(&last);
    if (!ok) {
        free(v);
        *n = 0;
        return false;
    }
    *idx = v;
    return true;
}

// A growing output buffer; `failed` sticks after the first allocation failure so writers need not check each call.
typedef struct jbuf {
    char *p;
    size_t len, cap;
    bool failed;
} jbuf;

static void put(jbuf *b, const char *s, size_t n) {
    if (b->failed) {
        return;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap == 0 ? 1 << 16 : b->cap;
        while (cap < b->len + n) {
            cap *= 2;
        }
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->failed = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void puts_(jbuf *b, const char *s) {
    put(b, s, strlen(s));
}

// A JSON string as serde_json writes it: quotes, backslashes and control characters escaped (\b \f \n \r \t, else
// \u00xx in lower-case hex), everything else, non-ASCII included, as is.
static void put_string(jbuf *b, const char *s, int64_t len) {
    put(b, "\"", 1);
    int64_t run = 0; // start of the bytes not yet written
    for (int64_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            continue;
        }
        put(b, s + run, (size_t)(i - run));
        run = i + 1;
        char esc[8];
        switch (c) {
            case '"':
                puts_(b, "\\\"");
                break;
            case '\\':
                puts_(b, "\\\\");
                break;
            case '\b':
                puts_(b, "\\b");
                break;
            case '\f':
                puts_(b, "\\f");
                break;
            case '\n':
                puts_(b, "\\n");
                break;
            case '\r':
                puts_(b, "\\r");
                break;
            case '\t':
                puts_(b, "\\t");
                break;
            default:
                snprintf(esc, sizeof(esc), "\\u%04x", c);
                puts_(b, esc);
                break;
        }
    }
    put(b, s + run, (size_t)(len - run));
    put(b, "\"", 1);
}

static void put_token(jbuf *b, const mc_bpe_trainer *t, int32_t id) {
    put_string(b, t->tok_str + t->tok_off[id], t->tok_off[id + 1] - t->tok_off[id]);
}

static void put_added_tokens(jbuf *b, const mc_bpe_trainer *t) {
    if (t->n_special == 0) {
        puts_(b, "  \"added_tokens\": [],\n");
        return;
    }
    puts_(b, "  \"added_tokens\": [\n");
    for (int64_t i = 0; i < t->n_special; i++) {
        char line[64];
        snprintf(line, sizeof(line), "    {\n      \"id\": %lld,\n      \"content\": ", (long long)i);
        puts_(b, line);
        put_token(b, t, (int32_t)i);
        // BpeTrainer's special tokens are AddedToken(content, special=true): normalized = !special
        puts_(b, ",\n      \"single_word\": false,\n      \"lstrip\": false,\n      \"rstrip\": false,\n"
                 "      \"normalized\": false,\n      \"special\": true\n    }");
        puts_(b, i + 1 < t->n_special ? ",\n" : "\n");
    }
    puts_(b, "  ],\n");
}

// The pipeline of GPT-NeoX's tokenizer.json (spec §10). The decoder's add_prefix_space is true because the Python
// decoders.ByteLevel() ignores its arguments and serializes its default; decoding does not read the flag.
static const char pipeline[] = "  \"normalizer\": {\n"
                               "    \"type\": \"NFC\"\n"
                               "  },\n"
                               "  \"pre_tokenizer\": {\n"
                               "    \"type\": \"ByteLevel\",\n"
                               "    \"add_prefix_space\": false,\n"
                               "    \"trim_offsets\": true,\n"
                               "    \"use_regex\": true\n"
                               "  },\n"
                               "  \"post_processor\": {\n"
                               "    \"type\": \"ByteLevel\",\n"
                               "    \"add_prefix_space\": false,\n"
                               "    \"trim_offsets\": true,\n"
                               "    \"use_regex\": true\n"
                               "  },\n"
                               "  \"decoder\": {\n"
                               "    \"type\": \"ByteLevel\",\n"
                               "    \"add_prefix_space\": true,\n"
                               "    \"trim_offsets\": true,\n"
                               "    \"use_regex\": true\n"
                               "  },\n";

static const char model_head[] = "  \"model\": {\n"
                                 "    \"type\": \"BPE\",\n"
                                 "    \"dropout\": null,\n"
                                 "    \"unk_token\": null,\n"
                                 "    \"continuing_subword_prefix\": null,\n"
                                 "    \"end_of_word_suffix\": null,\n"
                                 "    \"fuse_unk\": false,\n"
                                 "    \"byte_fallback\": false,\n"
                                 "    \"ignore_merges\": false,\n";

static void put_model(jbuf *b, const mc_bpe_trainer *t, const int64_t *saved, int64_t n_saved) {
    puts_(b, model_head);
    puts_(b, "    \"vocab\": {\n"); // in id order, as tokenizers' OrderedVocabIter
    for (int64_t id = 0; id < t->n_tokens; id++) {
        char num[32];
        puts_(b, "      ");
        put_token(b, t, (int32_t)id);
        snprintf(num, sizeof(num), ": %lld%s\n", (long long)id, id + 1 < t->n_tokens ? "," : "");
        puts_(b, num);
    }
    puts_(b, "    },\n");
    if (n_saved == 0) {
        puts_(b, "    \"merges\": []\n  }\n}");
        return;
    }
    puts_(b, "    \"merges\": [\n"); // pairs, as tokenizers >= 0.20 writes them
    for (int64_t k = 0; k < n_saved; k++) {
        const int32_t *m = t->merges + 3 * saved[k];
        puts_(b, "      [\n        ");
        put_token(b, t, m[0]);
        puts_(b, ",\n        ");
        put_token(b, t, m[1]);
        puts_(b, k + 1 < n_saved ? "\n      ],\n" : "\n      ]\n");
    }
    puts_(b, "    ]\n  }\n}");
}

mc_status mc_bpe_trainer_save(const mc_bpe_trainer *t, const char *path, mc_error *err) {
    if (t == NULL || path == NULL) {
        return mc_fail(err, MC_ERR_INVALID, "tokenizer save: trainer or path is NULL");
    }
    if (!t->trained) {
        return mc_fail(err, MC_ERR_INVALID, "%s: the tokenizer is not trained yet", path);
    }
    int64_t *saved = NULL, n_saved = 0;
    if (!mc_bpe_saved_merges(t, &saved, &n_saved)) {
        return mc_fail(err, MC_ERR_NOMEM, "%s: out of memory", path);
    }
    jbuf b = { 0 };
    puts_(&b, "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n");
    put_added_tokens(&b, t);
    puts_(&b, pipeline);
    put_model(&b, t, saved, n_saved);
    free(saved);
    if (b.failed) {
        free(b.p);
        return mc_fail(err, MC_ERR_NOMEM, "%s: out of memory writing the tokenizer", path);
    }
    mc_file_out *f = NULL;
    mc_status st = mc_file_out_open(path, &f, err);
    if (st == MC_OK) {
        st = mc_file_out_write(f, b.p, b.len, err);
    }
    if (st == MC_OK) {
        st = mc_file_out_commit(f, err);
    } else {
        mc_file_out_abort(f);
    }
    free(b.p);
    return st;
}
