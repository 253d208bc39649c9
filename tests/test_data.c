// Training datasets: each format, TRL's EOS / truncation / drop rules, packing, and the message of every bad input.
// Text examples use the shared GPT-NeoX tokenizer (skipped when ../shared is absent); pre-tokenized ones need none.
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

#include "check.h"
#include "mambac.h"
#include "train/data.h"

static mc_tokenizer *g_tok;

static int load_tokenizer(void **unused) {
    char *path = mc_test_shared("tokenizers/gpt-neox-20b/tokenizer.json");
    if (path != NULL) {
        mc_error err = { 0 };
        if (mc_tokenizer_load(path, &g_tok, &err) != MC_OK) {
            fprintf(stderr, "%s: %s\n", path, err.msg);
        }
    }
    free(path);
    return 0;
}

static int free_tokenizer(void **unused) {
    mc_tokenizer_free(g_tok);
    return 0;
}

static void need_tokenizer(void) {
    if (g_tok == NULL) {
        skip(); // ../shared/tokenizers/gpt-neox-20b/tokenizer.json absent
    }
}

static mc_dataset *parse_ok(const char *name, const char *text, const mc_data_opts *o) {
    mc_dataset *ds = NULL;
    mc_error err = { 0 };
    if (mc_dataset_parse(name, text, strlen(text), g_tok, o, &ds, &err) != MC_OK) {
        fail_msg("%s: unexpected failure: %s", name, err.msg);
    }
    return ds;
}

// Parses text expecting failure with code and exactly msg.
static void parse_fails(const char *name, const char *text, const mc_data_opts *o, mc_status code, const char *msg) {
    mc_dataset *ds = NULL;
    mc_error err = { 0 };
    mc_status st = mc_dataset_parse(name, text, strlen(text), g_tok, o, &ds, &err);
    assert_null(ds);
    if (st != code || strcmp(err.msg, msg) != 0) {
        fail_msg("%s: got %s \"%s\", want %s \"%s\"", name, mc_status_name(st), err.msg, mc_status_name(code), msg);
    }
}

static int32_t *encode(const char *text, int64_t *n) {
    int32_t *ids = NULL;
    mc_error err = { 0 };
    assert_int_equal(mc_tokenizer_encode(g_tok, text, strlen(text), &ids, n, &err), MC_OK);
    return ids;
}

// Example i has ids want[0..n) (and labels equal to them) and starts at line.
static void check_example(const mc_dataset *ds, int64_t i, const int32_t *want, int64_t n, int64_t line) {
    const int32_t *ids = NULL, *labels = NULL;
    int64_t len = 0, at = 0;
    assert_true(mc_dataset_example(ds, i, &ids, &labels, &len, &at));
    assert_int_equal(len, n);
    assert_int_equal(at, line);
    for (int64_t t = 0; t < n; t++) {
        if (ids[t] != want[t] || labels[t] != want[t]) {
            fail_msg("example %lld position %lld: id %d label %d, want %d", (long long)i, (long long)t, ids[t],
                     labels[t], want[t]);
        }
    }
}

static void check_text_example(const mc_dataset *ds, int64_t i, const char *text, bool eos, int64_t line) {
    int64_t n = 0;
    int32_t *want = encode(text, &n);
    if (eos) {
        want = realloc(want, (size_t)(n + 1) * sizeof(int32_t));
        want[n++] = 0; // <|endoftext|>
    }
    check_example(ds, i, want, n, line);
    free(want);
}

static void test_jsonl_text_field(void **unused) {
    need_tokenizer();
    mc_data_opts o;
    mc_data_opts_init(&o);
    o.text_field = "quote";
    const char *text = "{\"quote\": \"Hello world\", \"author\": \"x\"}\n"
                       "\n"
                       "   \n"
                       "{\"author\": \"y\", \"quote\": \"“Be yourself; everyone else is already taken.”\"}\r\n"
                       "{\"quote\": \"\"}\n" // no tokens, no EOS: dropped as TRL's filter does
                       "{\"quote\": \"last line without a newline\"}";
    mc_dataset *ds = parse_ok("quotes.jsonl", text, &o);
    assert_int_equal(mc_dataset_count(ds), 3);
    assert_int_equal(mc_dataset_n_dropped(ds), 1);
    const int32_t hello[] = { 12092, 1533 }; // tests/fixtures/tokenizer/neox.json: no EOS with text_field "quote"
    check_example(ds, 0, hello, 2, 1);
    check_text_example(ds, 1, "“Be yourself; everyone else is already taken.”", false, 4);
    check_text_example(ds, 2, "last line without a newline", false, 6);
    mc_dataset_free(ds);

    o.eos = MC_DATA_EOS_ALWAYS; // now the empty quote becomes a one-token example
    ds = parse_ok("quotes.jsonl", text, &o);
    assert_int_equal(mc_dataset_count(ds), 4);
    check_text_example(ds, 0, "Hello world", true, 1);
    check_example(ds, 2, (const int32_t[]){ 0 }, 1, 5);
    mc_dataset_free(ds);
}

// TRL appends the EOS string to a column literally named "text", and not when the text already ends with it.
static void test_jsonl_eos_rule(void **unused) {
    need_tokenizer();
    mc_data_opts o;
    mc_data_opts_init(&o);
    const char *text = "{\"text\": \"Hello world\"}\n{\"text\": \"Hello world<|endoftext|>\"}\n";
    mc_dataset *ds = parse_ok("d.jsonl", text, &o);
    const int32_t want[] = { 12092, 1533, 0 };
    check_example(ds, 0, want, 3, 1);
    check_example(ds, 1, want, 3, 2);
    mc_dataset_free(ds);
    o.eos = MC_DATA_EOS_NEVER;
    ds = parse_ok("d.jsonl", text, &o);
    check_example(ds, 0, want, 2, 1);
    check_example(ds, 1, want, 3, 2); // the literal special token in the text stays
    mc_dataset_free(ds);
}

static void test_json_array(void **unused) {
    need_tokenizer();
    mc_data_opts o;
    mc_data_opts_init(&o);
    o.text_field = "q";
    mc_dataset *ds = parse_ok("d.json", " [{\"q\": \"Hello world\"}, {\"q\": \"a  b\"}]", &o);
    assert_int_equal(mc_dataset_count(ds), 2);
    check_example(ds, 1, (const int32_t[]){ 66, 50276, 67 }, 3, 1);
    mc_dataset_free(ds);
    parse_fails("d.json", "[{\"q\": \"x\"}, {\"q\": 3}]", &o, MC_ERR_FORMAT,
                "d.json: item 1: field \"q\" is not a string");
    parse_fails("d.json", "[{\"q\": \"x\"}, 7]", &o, MC_ERR_FORMAT, "d.json: item 1: not a JSON object");
    parse_fails("d.json", "[{\"q\": \"x\"}", &o, MC_ERR_FORMAT, "d.json: not a JSON array of objects");
}

static void test_jsonl_errors(void **unused) {
    need_tokenizer();
    mc_data_opts o;
    mc_data_opts_init(&o);
    o.text_field = "quote";
    parse_fails("data.jsonl", "{\"quote\": \"a\"}\n\n{\"quote\": \"b\"\n", &o, MC_ERR_FORMAT, "data.jsonl:3: not JSON");
    parse_fails("data.jsonl", "{\"quote\": \"a\"} x\n", &o, MC_ERR_FORMAT, "data.jsonl:1: not JSON");
    parse_fails("data.jsonl", "{\"quote\": \"a\"}\n[1, 2]\n", &o, MC_ERR_FORMAT, "data.jsonl:2: not a JSON object");
    parse_fails("data.jsonl", "{\"quote\": \"a\"}\n{\"author\": \"b\"}\n", &o, MC_ERR_FORMAT,
                "data.jsonl:2: no field \"quote\"");
    parse_fails("data.jsonl", "{\"quote\": null}\n", &o, MC_ERR_FORMAT,
                "data.jsonl:1: field \"quote\" is not a string");
    parse_fails("data.jsonl", "{\"quote\": [\"a\"]}\n", &o, MC_ERR_FORMAT,
                "data.jsonl:1: field \"quote\" is not a string");
    parse_fails("data.jsonl", "{\"quote\": \"bad \xff byte\"}\n", &o, MC_ERR_INVALID,
                "data.jsonl:1: text: invalid UTF-8 at byte 4");
    parse_fails("data.jsonl", "\n \n", &o, MC_ERR_FORMAT, "data.jsonl: no examples");
    parse_fails("data.jsonl", "{\"quote\": \"\"}\n", &o, MC_ERR_FORMAT,
                "data.jsonl: no examples (1 dropped: no tokens or all labels -100)");
    o.n_vocab = 1000; // a model whose vocabulary is smaller than the tokenizer's
    parse_fails("data.jsonl", "{\"quote\": \"Hello world\"}\n", &o, MC_ERR_INVALID,
                "data.jsonl:1: token id 12092 is outside the vocabulary [0, 1000)");
    o.n_vocab = 0;
    o.text_field = "";
    parse_fails("data.jsonl", "{}\n", &o, MC_ERR_INVALID, "data.jsonl: text_field is empty");
    mc_data_opts_init(&o);
    o.eos_id = 60000;
    parse_fails("data.jsonl", "{}\n", &o, MC_ERR_INVALID, "data.jsonl: eos_id 60000 has no token in the tokenizer");
}

// Pre-tokenized lines need no tokenizer: ids as given, no EOS, optional labels, checked against n_vocab.
static void test_jsonl_pretokenized(void **unused) {
    mc_data_opts o;
    mc_data_opts_init(&o);
    o.n_vocab = 100;
    o.max_length = 4;
    const char *text = "{\"input_ids\": [5, 6, 7]}\n"
                       "{\"input_ids\": [1, 2, 3, 4, 5, 6], \"text\": \"ignored\"}\n"
                       "{\"input_ids\": [8, 9], \"labels\": [-100, 9]}\n"
                       "{\"input_ids\": [8, 9], \"labels\": [-100, -100]}\n"; // no label left: dropped
    mc_dataset *ds = NULL;
    mc_error err = { 0 };
    assert_int_equal(mc_dataset_parse("ids.jsonl", text, strlen(text), NULL, &o, &ds, &err), MC_OK);
    assert_int_equal(mc_dataset_count(ds), 3);
    assert_int_equal(mc_dataset_n_truncated(ds), 1);
    assert_int_equal(mc_dataset_n_dropped(ds), 1);
    assert_int_equal(mc_dataset_max_len(ds), 4);
    assert_int_equal(mc_dataset_n_tokens(ds), 3 + 4 + 2);
    check_example(ds, 0, (const int32_t[]){ 5, 6, 7 }, 3, 1);
    check_example(ds, 1, (const int32_t[]){ 1, 2, 3, 4 }, 4, 2);
    const int32_t *ids = NULL, *labels = NULL;
    int64_t len = 0;
    assert_true(mc_dataset_example(ds, 2, &ids, &labels, &len, NULL));
    assert_int_equal(len, 2);
    assert_int_equal(ids[0], 8);
    assert_int_equal(labels[0], -100);
    assert_int_equal(labels[1], 9);
    assert_false(mc_dataset_example(ds, 3, &ids, NULL, NULL, NULL));
    mc_dataset_free(ds);

    o.keep_end = true;
    ds = parse_ok("ids.jsonl", "{\"input_ids\": [1, 2, 3, 4, 5, 6]}", &o);
    check_example(ds, 0, (const int32_t[]){ 3, 4, 5, 6 }, 4, 1);
    mc_dataset_free(ds);

    parse_fails("ids.jsonl", "{\"input_ids\": [1]}\n{\"input_ids\": [1, 100]}", &o, MC_ERR_INVALID,
                "ids.jsonl:2: input_ids[1] = 100 is outside the vocabulary [0, 100)");
    parse_fails("ids.jsonl", "{\"input_ids\": [1, -1]}", &o, MC_ERR_INVALID,
                "ids.jsonl:1: input_ids[1] = -1 is outside the vocabulary [0, 100)");
    parse_fails("ids.jsonl", "{\"input_ids\": [1, 2.5]}", &o, MC_ERR_FORMAT,
                "ids.jsonl:1: input_ids[1] is not an integer");
    parse_fails("ids.jsonl", "{\"input_ids\": [1, \"2\"]}", &o, MC_ERR_FORMAT,
                "ids.jsonl:1: input_ids[1] is not an integer");
    parse_fails("ids.jsonl", "{\"input_ids\": 3}", &o, MC_ERR_FORMAT, "ids.jsonl:1: field \"input_ids\" is not a list");
    parse_fails("ids.jsonl", "{\"input_ids\": [1, 2]}\n{\"text\": \"a\"}", &o, MC_ERR_FORMAT,
                "ids.jsonl:2: no field \"input_ids\"");
    parse_fails("ids.jsonl", "{\"input_ids\": [1, 2], \"labels\": [1]}", &o, MC_ERR_FORMAT,
                "ids.jsonl:1: labels has 1 items, input_ids 2");
    parse_fails("ids.jsonl", "{\"input_ids\": [1, 2], \"labels\": [1, 200]}", &o, MC_ERR_INVALID,
                "ids.jsonl:1: labels[1] = 200 is outside the vocabulary [0, 100)");
    o.n_vocab = 0;
    assert_int_equal(mc_dataset_parse("ids.jsonl", "{}", 2, NULL, &o, &ds, &err), MC_ERR_INVALID);
    assert_null(ds);
    assert_string_equal(err.msg, "ids.jsonl: n_vocab must be given without a tokenizer");
}

static void test_truncation(void **unused) {
    need_tokenizer();
    mc_data_opts o;
    mc_data_opts_init(&o);
    o.max_length = 3;
    const char *text = "{\"text\": \"one two three four five\"}\n{\"text\": \"one\"}\n";
    mc_dataset *ds = parse_ok("t.jsonl", text, &o);
    int64_t n = 0;
    int32_t *all = encode("one two three four five<|endoftext|>", &n);
    assert_true(n > 3);
    check_example(ds, 0, all, 3, 1);
    check_text_example(ds, 1, "one", true, 2);
    assert_int_equal(mc_dataset_n_truncated(ds), 1);
    mc_dataset_free(ds);
    o.keep_end = true;
    ds = parse_ok("t.jsonl", text, &o);
    check_example(ds, 0, all + n - 3, 3, 1);
    mc_dataset_free(ds);
    free(all);
}

// Packing: the examples' ids (with EOS) back to back, cut every max_length tokens; the last block is shorter.
static void test_packing(void **unused) {
    need_tokenizer();
    mc_data_opts o;
    mc_data_opts_init(&o);
    o.packing = true;
    o.max_length = 4;
    const char *text = "{\"text\": \"one two three\"}\n{\"text\": \"four five six seven\"}\n{\"text\": \"eight\"}\n";
    mc_dataset *ds = parse_ok("p.jsonl", text, &o);
    int64_t n = 0;
    int32_t *stream = encode("one two three<|endoftext|>four five six seven<|endoftext|>eight<|endoftext|>", &n);
    assert_int_equal(mc_dataset_n_tokens(ds), n);
    assert_int_equal(mc_dataset_count(ds), (n + 3) / 4);
    assert_int_equal(mc_dataset_n_truncated(ds), 0);
    for (int64_t k = 0; k < mc_dataset_count(ds); k++) {
        const int64_t len = n - 4 * k < 4 ? n - 4 * k : 4;
        const int32_t *ids = NULL;
        int64_t line = 0;
        mc_dataset_example(ds, k, &ids, NULL, NULL, &line);
        check_example(ds, k, stream + 4 * k, len, line);
    }
    int64_t line = 0;
    mc_dataset_example(ds, 1, NULL, NULL, NULL, &line); // tokens 4..7: "one two three" + EOS is 4 tokens
    assert_int_equal(line, 2);
    free(stream);
    mc_dataset_free(ds);
    o.max_length = 0;
    parse_fails("p.jsonl", text, &o, MC_ERR_INVALID, "p.jsonl: packing needs max_length >= 1, got 0");
}

static void test_csv(void **unused) {
    need_tokenizer();
    mc_data_opts o;
    mc_data_opts_init(&o);
    o.text_field = "quote";
    const char *text = "\xef\xbb\xbf"
                       "author,quote,tags\r\n"
                       "a,Hello world,x\r\n"
                       "\r\n"
                       "\"b, c\",\"He said \"\"hi\"\"\nand left\",\"[\"\"t\"\"]\"\n"
                       "d,,y\n" // empty quote: no tokens, dropped
                       "e,\"\",z\n"
                       "f,last,";
    mc_dataset *ds = parse_ok("q.csv", text, &o);
    assert_int_equal(mc_dataset_count(ds), 3);
    assert_int_equal(mc_dataset_n_dropped(ds), 2);
    check_example(ds, 0, (const int32_t[]){ 12092, 1533 }, 2, 2);
    check_text_example(ds, 1, "He said \"hi\"\nand left", false, 4);
    check_text_example(ds, 2, "last", false, 8);
    mc_dataset_free(ds);

    o.eos = MC_DATA_EOS_ALWAYS;
    ds = parse_ok("q.csv", text, &o);
    assert_int_equal(mc_dataset_count(ds), 5);
    check_text_example(ds, 4, "last", true, 8);
    mc_dataset_free(ds);
    o.eos = MC_DATA_EOS_TRL;

    parse_fails("q.csv", "author,quote\na,b\nc,d,e\n", &o, MC_ERR_FORMAT, "q.csv:3: 3 fields, the header has 2");
    parse_fails("q.csv", "author,quote\n\"a\nb\",c\nd\n", &o, MC_ERR_FORMAT, "q.csv:4: 1 fields, the header has 2");
    parse_fails("q.csv", "author,quote\na,\"b\n\nc\n", &o, MC_ERR_FORMAT, "q.csv:2: quoted field never closed");
    parse_fails("q.csv", "author,quote\na,\"b\"c\n", &o, MC_ERR_FORMAT,
                "q.csv:2: unexpected character after a closing quote");
    parse_fails("q.csv", "\nauthor,text\na,b\n", &o, MC_ERR_FORMAT, "q.csv:2: no column \"quote\" in the header");
    parse_fails("q.csv", "author,quote\n", &o, MC_ERR_FORMAT, "q.csv: no examples");
}

static void test_lines_and_document(void **unused) {
    need_tokenizer();
    mc_data_opts o;
    mc_data_opts_init(&o);
    const char *text = "Hello world\r\n\n  \none two\n";
    mc_dataset *ds = parse_ok("corpus.txt", text, &o); // a .txt is a "text" column: EOS appended as TRL does
    assert_int_equal(mc_dataset_count(ds), 2);
    check_example(ds, 0, (const int32_t[]){ 12092, 1533, 0 }, 3, 1);
    check_text_example(ds, 1, "one two", true, 4);
    mc_dataset_free(ds);

    o.format = MC_DATA_DOCUMENT;
    o.max_length = 5;
    o.eos = MC_DATA_EOS_NEVER;
    ds = parse_ok("corpus.txt", text, &o);
    int64_t n = 0;
    int32_t *all = encode(text, &n);
    assert_int_equal(mc_dataset_count(ds), (n + 4) / 5);
    for (int64_t k = 0; k < mc_dataset_count(ds); k++) {
        check_example(ds, k, all + 5 * k, n - 5 * k < 5 ? n - 5 * k : 5, 1);
    }
    free(all);
    mc_dataset_free(ds);
    parse_fails("corpus.txt", " \n\n", &o, MC_ERR_FORMAT, "corpus.txt: no examples");
    o.format = MC_DATA_LINES;
    parse_fails("corpus.txt", "ok\nbad \xc3\n", &o, MC_ERR_INVALID, "corpus.txt:2: text: invalid UTF-8 at byte 4");
    mc_data_opts_init(&o);
    parse_fails("corpus.md", "x", &o, MC_ERR_INVALID,
                "corpus.md: unknown extension: expected .jsonl, .json, .csv, .txt or .bin (a token file)");
}

static void test_load_file(void **state) {
    mc_test_dir *d = *state;
    char path[128];
    snprintf(path, sizeof(path), "%s/ids.jsonl", d->dir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs("{\"input_ids\": [1, 2]}\n", f);
    fclose(f);
    mc_data_opts o;
    mc_data_opts_init(&o);
    o.n_vocab = 10;
    mc_dataset *ds = NULL;
    mc_error err = { 0 };
    assert_int_equal(mc_dataset_load(path, NULL, &o, &ds, &err), MC_OK);
    assert_int_equal(mc_dataset_count(ds), 1);
    mc_dataset_free(ds);
    snprintf(path, sizeof(path), "%s/missing.jsonl", d->dir);
    assert_int_equal(mc_dataset_load(path, NULL, &o, &ds, &err), MC_ERR_IO);
    assert_null(ds);
    assert_non_null(strstr(err.msg, "missing.jsonl: cannot open"));
    mc_dataset_free(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jsonl_text_field),
        cmocka_unit_test(test_jsonl_eos_rule),
        cmocka_unit_test(test_json_array),
        cmocka_unit_test(test_jsonl_errors),
        cmocka_unit_test(test_jsonl_pretokenized),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_packing),
        cmocka_unit_test(test_csv),
        cmocka_unit_test(test_lines_and_document),
        cmocka_unit_test_setup_teardown(test_load_file, mc_test_dir_setup, mc_test_dir_teardown),
    };
    return cmocka_run_group_tests(tests, load_tokenizer, free_tokenizer);
}
