// Tokenizer training and token files: the trainer's tokenizer.json equals, byte for byte, the one tokenizers'
// BpeTrainer wrote for the fixture corpus (tools/oracle/tokenizer_train_check.py), and encodes the held-out text as
// tokenizers did; tie-breaks, min_frequency, bad input; token files round-trip and refuse damaged or foreign files.
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

static void write_all(const char *path, const void *data, size_t len) {
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
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

// ---------------------------------------------------------------------------------------------------------------
// Token files

static mc_tokenizer *load_reference(void) {
    char *path = fixture_path("reference.json");
    mc_tokenizer *tok = NULL;
    mc_error err = { 0 };
    if (mc_tokenizer_load(path, &tok, &err) != MC_OK) {
        fail_msg("%s", err.msg);
    }
    free(path);
    return tok;
}

static void write_tokens(const char *path, const mc_tokenizer *tok, int32_t eos, const int32_t *a, int64_t na,
                         const int32_t *b, int64_t nb) {
    mc_tokens_writer *w = NULL;
    mc_error err = { 0 };
    assert_int_equal(mc_tokens_writer_new(tok, "fixture/reference.json", eos, &w, &err), MC_OK);
    assert_int_equal(mc_tokens_writer_add(w, a, na, &err), MC_OK);
    assert_int_equal(mc_tokens_writer_add(w, b, nb, &err), MC_OK);
    if (mc_tokens_writer_save(w, path, &err) != MC_OK) {
        fail_msg("%s", err.msg);
    }
    mc_tokens_writer_free(w);
}

static void test_tokens_round_trip(void **state) {
    const mc_test_dir *d = *state;
    mc_tokenizer *tok = load_reference();
    char path[128];
    path_in(d, "tokens.bin", path, sizeof(path));
    const int32_t a[] = { 5, 999, 0, 1, 300 }, b[] = { 7 };
    write_tokens(path, tok, 0, a, 5, b, 1);
    mc_tokens *t = NULL;
    mc_error err = { 0 };
    if (mc_tokens_open(path, tok, &t, &err) != MC_OK) {
        fail_msg("%s", err.msg);
    }
    mc_tokens_info info;
    mc_tokens_get_info(t, &info);
    assert_int_equal(info.n_tokens, 8); // 5 + EOS + 1 + EOS
    assert_int_equal(info.n_docs, 2);
    assert_int_equal(info.n_vocab, 1000);
    assert_int_equal(info.token_bytes, 2);
    assert_int_equal(info.eos_id, 0);
    assert_string_equal(info.tokenizer_name, "fixture/reference.json");
    uint8_t sha[32];
    mc_tokenizer_sha256(tok, sha);
    assert_memory_equal(sha, info.tokenizer_sha256, 32);
    int32_t ids[8];
    const int32_t want[8] = { 5, 999, 0, 1, 300, 0, 7, 0 };
    assert_int_equal(mc_tokens_read(t, 0, 8, ids, &err), MC_OK);
    assert_memory_equal(ids, want, sizeof(want));
    assert_int_equal(mc_tokens_read(t, 6, 2, ids, &err), MC_OK);
    assert_int_equal(ids[0], 7);
    expect_message(mc_tokens_read(t, 6, 3, ids, &err), MC_ERR_INVALID, &err, "outside the 8");
    expect_message(mc_tokens_read(t, -1, 1, ids, &err), MC_ERR_INVALID, &err, "outside");
    mc_tokens_close(t);
    // the header is 84 bytes + the name, padded to 64; the ids follow as little-endian uint16
    size_t len = 0;
    unsigned char *bytes = (unsigned char *)read_all(path, &len);
    assert_int_equal(len, 128 + 8 * 2);
    assert_memory_equal(bytes, "MCTOKENS", 8);
    assert_int_equal(bytes[128 + 2] | bytes[128 + 3] << 8, 999);
    free(bytes);
    // without EOS; and opening without a tokenizer skips the hash check
    write_tokens(path, tok, -1, a, 5, b, 0);
    assert_int_equal(mc_tokens_open(path, NULL, &t, &err), MC_OK);
    mc_tokens_get_info(t, &info);
    assert_int_equal(info.n_tokens, 5);
    assert_int_equal(info.eos_id, -1);
    mc_tokens_close(t);
    // bad ids and EOS are refused by the writer
    mc_tokens_writer *w = NULL;
    expect_message(mc_tokens_writer_new(tok, "x", 1000, &w, &err), MC_ERR_INVALID, &err, "EOS id 1000");
    assert_int_equal(mc_tokens_writer_new(tok, "x", -1, &w, &err), MC_OK);
    const int32_t bad[] = { 3, 1000 };
    expect_message(mc_tokens_writer_add(w, bad, 2, &err), MC_ERR_INVALID, &err, "token 1 is id 1000");
    mc_tokens_writer_free(w);
    mc_tokenizer_free(tok);
}

// A vocabulary above 65536 ids takes uint32 ids: a tokenizer.json with the 256 byte symbols and one id 70000.
static void test_tokens_uint32(void **state) {
    const mc_test_dir *d = *state;
    char tok_path[128], path[128];
    path_in(d, "big.json", tok_path, sizeof(tok_path));
    path_in(d, "big.bin", path, sizeof(path));
    cJSON *root = cJSON_CreateObject(), *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    for (int b = 0; b < 256; b++) {
        int32_t cp = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE ? b : -1;
        if (cp < 0) {
            continue; // the other bytes are left out: not needed here
        }
        char s[4] = { 0 };
        if (cp < 0x80) {
            s[0] = (char)cp;
        } else {
            s[0] = (char)(0xC0 | cp >> 6);
            s[1] = (char)(0x80 | (cp & 0x3F));
        }
        cJSON_AddNumberToObject(vocab, s, b);
    }
    cJSON_AddNumberToObject(vocab, "zz", 70000);
    cJSON_AddArrayToObject(model, "merges");
    cJSON *pre = cJSON_AddObjectToObject(root, "pre_tokenizer");
    cJSON_AddStringToObject(pre, "type", "ByteLevel");
    cJSON_AddFalseToObject(pre, "add_prefix_space");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(root, "decoder"), "type", "ByteLevel");
    char *text = cJSON_Print(root);
    write_all(tok_path, text, strlen(text));
    free(text);
    cJSON_Delete(root);
    mc_tokenizer *tok = NULL;
    mc_error err = { 0 };
    if (mc_tokenizer_load(tok_path, &tok, &err) != MC_OK) {
        fail_msg("%s", err.msg);
    }
    const int32_t a[] = { 70000, 65 };
    write_tokens(path, tok, 70000, a, 2, a, 0);
    mc_tokens *t = NULL;
    assert_int_equal(mc_tokens_open(path, tok, &t, &err), MC_OK);
    mc_tokens_info info;
    mc_tokens_get_info(t, &info);
    assert_int_equal(info.token_bytes, 4);
    assert_int_equal(info.n_tokens, 4);
    int32_t ids[4];
    assert_int_equal(mc_tokens_read(t, 0, 4, ids, &err), MC_OK);
    assert_int_equal(ids[0], 70000);
    assert_int_equal(ids[1], 65);
    assert_int_equal(ids[3], 70000);
    mc_tokens_close(t);
    mc_tokenizer_free(tok);
}

// Damaged files: each one-line message names the file and the problem.
static void test_tokens_bad_files(void **state) {
    const mc_test_dir *d = *state;
    mc_tokenizer *tok = load_reference();
    char good[128], bad[128];
    path_in(d, "good.bin", good, sizeof(good));
    path_in(d, "bad.bin", bad, sizeof(bad));
    const int32_t a[] = { 5, 6, 7, 8 };
    write_tokens(good, tok, -1, a, 4, a, 0);
    size_t len = 0;
    unsigned char *bytes = (unsigned char *)read_all(good, &len);
    assert_int_equal(len, 128 + 8);
    mc_tokens *t = NULL;
    mc_error err = { 0 };
    // truncated anywhere: in the ids, in the header, inside the magic
    const size_t cuts[] = { len - 1, 128, 100, 40, 5 };
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        write_all(bad, bytes, cuts[i]);
        expect_message(mc_tokens_open(bad, tok, &t, &err), MC_ERR_FORMAT, &err, "truncated");
        assert_null(t);
        assert_non_null(strstr(err.msg, bad));
    }
    write_all(bad, bytes, 0);
    expect_message(mc_tokens_open(bad, tok, &t, &err), MC_ERR_FORMAT, &err, "empty file");
    // bytes after the ids
    unsigned char *longer = malloc(len + 2);
    assert_non_null(longer);
    memcpy(longer, bytes, len);
    longer[len] = longer[len + 1] = 0;
    write_all(bad, longer, len + 2);
    expect_message(mc_tokens_open(bad, tok, &t, &err), MC_ERR_FORMAT, &err, "2 bytes after the 4 tokens");
    free(longer);

    // bad magic, a later version, an odd id width, an id outside the vocabulary
    struct {
        size_t at;
        unsigned char value;
        mc_status code;
        const char *text;
    } edits[] = {
        { 0, 'X', MC_ERR_FORMAT, "bad magic" },        { 8, 2, MC_ERR_UNSUPPORTED, "version 2" },
        { 16, 3, MC_ERR_FORMAT, "3 bytes per token" }, { 12, 0, MC_ERR_FORMAT, "header size" },
        { 20, 0xFE, MC_ERR_FORMAT, "EOS id" },         { 128 + 1, 0x30, MC_ERR_FORMAT, "token 0 is id 12293" },
    };

    for (size_t i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
        unsigned char saved = bytes[edits[i].at];
        bytes[edits[i].at] = edits[i].value;
        write_all(bad, bytes, len);
        expect_message(mc_tokens_open(bad, tok, &t, &err), edits[i].code, &err, edits[i].text);
        bytes[edits[i].at] = saved;
    }
    // made with another tokenizer (the same file plus one trailing newline: another SHA-256)
    char *ref = fixture_path("reference.json");
    size_t ref_len = 0;
    char *ref_text = read_all(ref, &ref_len);
    char other_path[128];
    path_in(d, "other.json", other_path, sizeof(other_path));
    ref_text[ref_len] = '\n';
    write_all(other_path, ref_text, ref_len + 1);
    mc_tokenizer *other = NULL;
    assert_int_equal(mc_tokenizer_load(other_path, &other, &err), MC_OK);
    expect_message(mc_tokens_open(good, other, &t, &err), MC_ERR_INVALID, &err,
                   "made with tokenizer fixture/reference.json (sha256 ");
    assert_non_null(strstr(err.msg, "not the one in use"));
    expect_message(mc_tokens_open("/nonexistent/tokens.bin", tok, &t, &err), MC_ERR_IO, &err, "/nonexistent");
    mc_tokenizer_free(other);
    free(ref_text);
    free(ref);
    free(bytes);
    mc_tokenizer_free(tok);
}

static void test_sha256(void **unused) {
    // The digest of the fixture's bytes, as Python's hashlib computed it for expect.json.
    mc_tokenizer *tok = load_reference();
    uint8_t sha[32];
    mc_tokenizer_sha256(tok, sha);
    char hex[65];
    for (int i = 0; i < 32; i++) {
        snprintf(hex + 2 * i, 3, "%02x", sha[i]);
    }
    fixture f = { 0 };
    fixture_load(&f);
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(f.expect, "meta");
    assert_string_equal(hex, cJSON_GetObjectItemCaseSensitive(meta, "reference_sha256")->valuestring);
    fixture_free(&f);
    mc_tokenizer_free(tok);
    mc_tokenizer_sha256(NULL, sha);
    assert_int_equal(sha[0] | sha[31], 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_train_matches_tokenizers, mc_test_dir_setup, mc_test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_trained_encodes_as_tokenizers, mc_test_dir_setup, mc_test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_tie_break_and_min_frequency, mc_test_dir_setup, mc_test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_train_bad_input, mc_test_dir_setup, mc_test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_tokens_round_trip, mc_test_dir_setup, mc_test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_tokens_uint32, mc_test_dir_setup, mc_test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_tokens_bad_files, mc_test_dir_setup, mc_test_dir_teardown),
        cmocka_unit_test(test_sha256),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
