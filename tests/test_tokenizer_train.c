// Tokenizer training: the trainer's tokenizer.json equals, byte for byte, the one tokenizers' BpeTrainer wrote for
// the fixture corpus (tools/oracle/tokenizer_train_check.py), and encodes the held-out text as tokenizers did;
// tie-breaks, min_frequency, bad input.
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// cmocka.h needs setjmp.h and stdarg.h before it
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>
// clang-format on

#include <cjson/cJSON.h>

#include "check.h"
#include "mambac.h"

// A whole file (owned) and its length; NULL when unreadable.
static char *read_all(const char *path, size_t *len) {
    FILE *fp = fopen(path, "rb");
    if (fp == NULL) {
        return NULL;
    }
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
    buf[n] = '\0';
    fclose(fp);
    *len = (size_t)n;
    return buf;
}

static char *fixture_path(const char *name) {
    char rel[128];
    snprintf(rel, sizeof(rel), "tokenizer_train/%s", name);
    char *path = mc_test_fixture(rel);
    FILE *fp = path != NULL ? fopen(path, "rb") : NULL;
    if (fp == NULL) {
        mc_test_skip("fixture %s is missing (tools/oracle/tokenizer_train_check.py fixture writes it)", rel);
    }
    fclose(fp);
    return path;
}

static void path_in(const mc_test_dir *d, const char *name, char *out, size_t cap) {
    snprintf(out, cap, "%s/%s", d->dir, name);
}

// ---------------------------------------------------------------------------------------------------------------
// Against tokenizers' BpeTrainer

typedef struct fixture {
    cJSON *expect;
    const cJSON *settings;
    const char **special;
    int64_t n_special;
} fixture;

static void fixture_load(fixture *f) {
    char *path = fixture_path("expect.json");
    char *text = mc_test_read_text(path);
    assert_non_null(text);
    f->expect = cJSON_Parse(text);
    assert_non_null(f->expect);
    free(text);
    free(path);
    f->settings = cJSON_GetObjectItemCaseSensitive(f->expect, "settings");
    const cJSON *special = cJSON_GetObjectItemCaseSensitive(f->settings, "special");
    f->n_special = cJSON_GetArraySize(special);
    f->special = calloc((size_t)f->n_special + 1, sizeof(char *));
    assert_non_null(f->special);
    int64_t i = 0;
    for (const cJSON *e = special->child; e != NULL; e = e->next) {
        f->special[i++] = e->valuestring;
    }
}

static void fixture_free(fixture *f) {
    free(f->special);
    cJSON_Delete(f->expect);
}

static void fixture_opts(const fixture *f, mc_bpe_train_opts *opts) {
    mc_bpe_train_opts_init(opts);
    opts->vocab_size = (int64_t)cJSON_GetObjectItemCaseSensitive(f->settings, "vocab_size")->valuedouble;
    opts->min_frequency = (int64_t)cJSON_GetObjectItemCaseSensitive(f->settings, "min_frequency")->valuedouble;
    opts->special_tokens = f->special;
    opts->n_special = f->n_special;
}

// Trains on the fixture corpus (from the file, or from memory) and saves to out.
static void train_fixture(const fixture *f, bool from_memory, const char *out, mc_bpe_train_stats *stats) {
    mc_bpe_train_opts opts;
    fixture_opts(f, &opts);
    mc_bpe_trainer *t = NULL;
    mc_error err = { 0 };
    assert_int_equal(mc_bpe_trainer_new(&opts, &t, &err), MC_OK);
    char *corpus = fixture_path("corpus.txt");
    mc_status st = MC_OK;
    if (from_memory) {
        size_t len = 0;
        char *text = read_all(corpus, &len);
        assert_non_null(text);
        st = mc_bpe_trainer_feed(t, text, len, "corpus.txt", &err);
        free(text);
    } else {
        st = mc_bpe_trainer_feed_file(t, corpus, &err);
    }
    free(corpus);
    if (st == MC_OK) {
        st = mc_bpe_trainer_train(t, &err);
    }
    if (st == MC_OK) {
        st = mc_bpe_trainer_save(t, out, &err);
    }
    if (st != MC_OK) {
        fail_msg("training on the fixture: %s", err.msg);
    }
    mc_bpe_trainer_stats(t, stats);
    mc_bpe_trainer_free(t);
}

// On a difference, the first vocab entry and merge that differ (more useful than a byte offset).
static void report_difference(const char *got_text, const char *want_text) {
    cJSON *got = cJSON_Parse(got_text), *want = cJSON_Parse(want_text);
    assert_non_null(got);
    assert_non_null(want);
    const char *keys[] = { "vocab", "merges" };
    for (int k = 0; k < 2; k++) {
        const cJSON *g = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(got, "model"), keys[k]);
        const cJSON *w = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(want, "model"), keys[k]);
        int64_t i = 0;
        const cJSON *a = g->child, *b = w->child;
        for (; a != NULL && b != NULL; a = a->next, b = b->next, i++) {
            char *sa = cJSON_PrintUnformatted(a), *sb = cJSON_PrintUnformatted(b);
            bool same = strcmp(sa, sb) == 0 && (k == 1 || strcmp(a->string, b->string) == 0);
            if (!same) {
                fprintf(stderr, "  %s[%lld]: mambac %s %s, tokenizers %s %s\n", keys[k], (long long)i,
                        k == 0 ? a->string : "", sa, k == 0 ? b->string : "", sb);
            }
            free(sa);
            free(sb);
            if (!same) {
                break;
            }
        }
        fprintf(stderr, "  %s: mambac %d entries, tokenizers %d\n", keys[k], cJSON_GetArraySize(g),
                cJSON_GetArraySize(w));
    }
    cJSON_Delete(got);
    cJSON_Delete(want);
}

static void test_train_matches_tokenizers(void **state) {
    const mc_test_dir *d = *state;
    fixture f = { 0 };
    fixture_load(&f);
    char out[128], out2[128];
    path_in(d, "tokenizer.json", out, sizeof(out));
    path_in(d, "tokenizer2.json", out2, sizeof(out2));
    mc_bpe_train_stats stats;
    train_fixture(&f, false, out, &stats);
    char *ref_path = fixture_path("reference.json");
    size_t got_len = 0, want_len = 0;
    char *got = read_all(out, &got_len), *want = read_all(ref_path, &want_len);
    assert_non_null(got);
    assert_non_null(want);
    if (got_len != want_len || memcmp(got, want, got_len) != 0) {
        report_difference(got, want);
        fail_msg("the trained tokenizer.json (%zu bytes) differs from tokenizers' (%zu bytes)", got_len, want_len);
    }
    assert_int_equal(stats.vocab_size, 1000);
    assert_int_equal(stats.n_files, 1);
    assert_true(stats.n_unique_words > 0 && stats.n_unique_words < stats.n_words);

    // The same bytes fed from memory give the same file: training is deterministic.
    train_fixture(&f, true, out2, &stats);
    size_t len2 = 0;
    char *got2 = read_all(out2, &len2);
    assert_true(len2 == got_len && memcmp(got2, got, got_len) == 0);
    free(got2);
    free(got);
    free(want);
    free(ref_path);
    fixture_free(&f);
}

// The ids tokenizers gave for the held-out text and the extra strings, with the trained file loaded by mambac.
static void test_trained_encodes_as_tokenizers(void **state) {
    const mc_test_dir *d = *state;
    fixture f = { 0 };
    fixture_load(&f);
    char out[128];
    path_in(d, "tokenizer.json", out, sizeof(out));
    mc_bpe_train_stats stats;
    train_fixture(&f, false, out, &stats);
    mc_tokenizer *tok = NULL;
    mc_error err = { 0 };
    if (mc_tokenizer_load(out, &tok, &err) != MC_OK) {
        fail_msg("loading the trained tokenizer: %s", err.msg);
    }
    assert_int_equal(mc_tokenizer_n_vocab(tok), 1000);
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(f.expect, "encode");
    int64_t n_cases = 0;
    for (const cJSON *c = cases->child; c != NULL; c = c->next, n_cases++) {
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(c, "text");
        char *owned = NULL;
        size_t len = 0;
        if (cJSON_IsString(text)) {
            len = strlen(text->valuestring);
        } else {
            char *path = fixture_path("heldout.txt");
            owned = read_all(path, &len);
            free(path);
        }
        const char *s = owned != NULL ? owned : text->valuestring;
        int32_t *ids = NULL;
        int64_t n = 0;
        assert_int_equal(mc_tokenizer_encode(tok, s, len, &ids, &n, &err), MC_OK);
        const cJSON *want = cJSON_GetObjectItemCaseSensitive(c, "ids");
        int64_t i = 0;
        for (const cJSON *e = want->child; e != NULL; e = e->next, i++) {
            if (i >= n || ids[i] != (int32_t)e->valuedouble) {
                fail_msg("case %lld: id %lld is %d, tokenizers gave %d", (long long)n_cases, (long long)i,
                         i < n ? ids[i] : -1, (int)e->valuedouble);
            }
        }
        assert_int_equal(n, i);
        free(ids);
        free(owned);
    }
    assert_true(n_cases >= 2);
    // Special tokens got the first ids and are special; byte symbols follow in code-point order ('!' first).
    assert_true(mc_tokenizer_is_special(tok, 0) && mc_tokenizer_is_special(tok, 1) && !mc_tokenizer_is_special(tok, 2));
    size_t blen = 0;
    const char *b = mc_tokenizer_token_bytes(tok, 2, &blen);
    assert_true(blen == 1 && b[0] == '!');
    mc_tokenizer_free(tok);
    fixture_free(&f);
}

// ---------------------------------------------------------------------------------------------------------------
// Rules checked on hand-made corpora (the rules the fixture exercises, isolated)

// Trains on text with vocab_size and min_frequency, the default special token; returns the saved file's text.
static char *train_text(const mc_test_dir *d, const char *text, int64_t vocab_size, int64_t min_frequency,
                        mc_bpe_train_stats *stats) {
    mc_bpe_train_opts opts;
    mc_bpe_train_opts_init(&opts);
    opts.vocab_size = vocab_size;
    opts.min_frequency = min_frequency;
    mc_bpe_trainer *t = NULL;
    mc_error err = { 0 };
    char out[128];
    path_in(d, "small.json", out, sizeof(out));
    assert_int_equal(mc_bpe_trainer_new(&opts, &t, &err), MC_OK);
    assert_int_equal(mc_bpe_trainer_feed(t, text, strlen(text), "small", &err), MC_OK);
    if (mc_bpe_trainer_train(t, &err) != MC_OK || mc_bpe_trainer_save(t, out, &err) != MC_OK) {
        fail_msg("%s", err.msg);
    }
    mc_bpe_trainer_stats(t, stats);
    mc_bpe_trainer_free(t);
    size_t len = 0;
    char *json = read_all(out, &len);
    assert_non_null(json);
    return json;
}

static void test_tie_break_and_min_frequency(void **state) {
    const mc_test_dir *d = *state;
    mc_bpe_train_stats stats;
    // "cd" and "ab" are each seen once: a tie, which the smaller pair of ids wins ('a' < 'c'), whatever the order
    // of the text.
    char *json = train_text(d, "cd\nab\n", 258, 0, &stats);
    assert_non_null(strstr(json, "\"merges\": [\n      [\n        \"a\",\n        \"b\"\n      ]\n    ]"));
    assert_non_null(strstr(json, "\"ab\": 257\n"));
    assert_int_equal(stats.n_merges, 1);
    assert_int_equal(stats.n_sequences, 2);
    free(json);
    // A count beats the pair order: "cd" twice.
    json = train_text(d, "ab cd cd\n", 258, 0, &stats);
    assert_non_null(strstr(json, "\"cd\": 257\n")); // (c, d) and (Ġ, c) both twice: 'c' < 'Ġ' by id
    free(json);
    // min_frequency 2: no pair is seen twice, so no merge and a vocabulary of 257.
    json = train_text(d, "cd\nab\n", 300, 2, &stats);
    assert_non_null(strstr(json, "\"merges\": []"));
    assert_int_equal(stats.vocab_size, 257);
    assert_int_equal(stats.n_merges, 0);
    free(json);
    // Lines are sequences: no piece spans a line break, so "\n\n" stays two newline words (no "ĊĊ" token).
    json = train_text(d, "a\n\nb\n\n", 300, 0, &stats);
    assert_null(strstr(json, "ĊĊ"));
    assert_int_equal(stats.n_sequences, 4);
    free(json);
}

static void expect_message(mc_status st, mc_status code, const mc_error *err, const char *text) {
    assert_int_equal(st, code);
    if (strstr(err->msg, text) == NULL) {
        fail_msg("message '%s' lacks '%s'", err->msg, text);
    }
}

static void test_train_bad_input(void **state) {
    const mc_test_dir *d = *state;
    mc_bpe_train_opts opts;
    mc_bpe_train_opts_init(&opts);
    mc_bpe_trainer *t = NULL;
    mc_error err = { 0 };
    // vocab smaller than the alphabet + specials
    opts.vocab_size = 256;
    expect_message(mc_bpe_trainer_new(&opts, &t, &err), MC_ERR_INVALID, &err, "vocab size 256 is smaller than the 257");
    assert_null(t);
    opts.vocab_size = 0;
    expect_message(mc_bpe_trainer_new(&opts, &t, &err), MC_ERR_INVALID, &err, "out of range");
    opts.vocab_size = 300;
    opts.min_frequency = -1;
    expect_message(mc_bpe_trainer_new(&opts, &t, &err), MC_ERR_INVALID, &err, "negative");
    opts.min_frequency = 2;
    const char *empty[] = { "" }, *bad[] = { "\xff" };
    opts.special_tokens = empty;
    expect_message(mc_bpe_trainer_new(&opts, &t, &err), MC_ERR_INVALID, &err, "special token 0 is empty");
    opts.special_tokens = bad;
    expect_message(mc_bpe_trainer_new(&opts, &t, &err), MC_ERR_INVALID, &err, "not valid UTF-8");
    mc_bpe_train_opts_init(&opts);
    opts.vocab_size = 300;
    assert_int_equal(mc_bpe_trainer_new(&opts, &t, &err), MC_OK);
    // an empty corpus, non-UTF-8 text (refused whole: nothing of it is counted), an unreadable file
    expect_message(mc_bpe_trainer_train(t, &err), MC_ERR_INVALID, &err, "corpus is empty");
    assert_int_equal(mc_bpe_trainer_feed(t, "", 0, "empty.txt", &err), MC_OK);
    expect_message(mc_bpe_trainer_train(t, &err), MC_ERR_INVALID, &err, "corpus is empty");
    expect_message(mc_bpe_trainer_feed(t, "ok\nab\xc3(", 6, "latin1.txt", &err), MC_ERR_INVALID, &err,
                   "latin1.txt: invalid UTF-8 at byte 5");
    expect_message(mc_bpe_trainer_train(t, &err), MC_ERR_INVALID, &err, "corpus is empty");
    expect_message(mc_bpe_trainer_feed_file(t, "/nonexistent/corpus.txt", &err), MC_ERR_IO, &err,
                   "/nonexistent/corpus.txt");
    char out[128];
    path_in(d, "x.json", out, sizeof(out));
    expect_message(mc_bpe_trainer_save(t, out, &err), MC_ERR_INVALID, &err, "not trained");
    // after training: no more text
    assert_int_equal(mc_bpe_trainer_feed(t, "hello hello\n", 12, "a.txt", &err), MC_OK);
    assert_int_equal(mc_bpe_trainer_train(t, &err), MC_OK);
    expect_message(mc_bpe_trainer_feed(t, "x", 1, "b.txt", &err), MC_ERR_INVALID, &err, "already trained");
    expect_message(mc_bpe_trainer_train(t, &err), MC_ERR_INVALID, &err, "already trained");
    expect_message(mc_bpe_trainer_save(t, "/nonexistent/dir/x.json", &err), MC_ERR_IO, &err, "/nonexistent/dir");
    mc_bpe_trainer_free(t);
    mc_bpe_trainer_free(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_train_matches_tokenizers, mc_test_dir_setup, mc_test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_trained_encodes_as_tokenizers, mc_test_dir_setup, mc_test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_tie_break_and_min_frequency, mc_test_dir_setup, mc_test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_train_bad_input, mc_test_dir_setup, mc_test_dir_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
