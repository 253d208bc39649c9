// Tokenizer tests: exact parity with tokenizers 0.23.2 on the GPT-NeoX-20B tokenizer.json (fixture written by
// tools/oracle/tokenizer_fixtures.py), merge order on a hand-written tokenizer, and bad files and bad input.
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

// cmocka.h needs setjmp.h and stdarg.h before it
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>
// clang-format on

#include <cjson/cJSON.h>
#include <utf8proc.h>

#include "check.h"
#include "mambac.h"

// A byte string from the fixture: `key` (a JSON string) or `key_hex` (UTF-8 bytes in hex, used when the text has
// a NUL). Owned; NULL when neither key is present.
static char *fixture_bytes(const cJSON *obj, const char *key, size_t *len) {
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (cJSON_IsString(s)) {
        *len = strlen(s->valuestring);
        char *out = malloc(*len + 1);
        assert_non_null(out);
        memcpy(out, s->valuestring, *len + 1);
        return out;
    }
    char hex_key[64];
    snprintf(hex_key, sizeof(hex_key), "%s_hex", key);
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(obj, hex_key);
    if (!cJSON_IsString(h)) {
        return NULL;
    }
    size_t n = strlen(h->valuestring) / 2;
    char *out = malloc(n + 1);
    assert_non_null(out);
    for (size_t i = 0; i < n; i++) {
        unsigned v = 0;
        assert_int_equal(sscanf(h->valuestring + 2 * i, "%2x", &v), 1);
        out[i] = (char)v;
    }
    out[n] = '\0';
    *len = n;
    return out;
}

static int32_t *fixture_ids(const cJSON *obj, int64_t *n) {
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(obj, "ids");
    assert_true(cJSON_IsArray(arr));
    *n = cJSON_GetArraySize(arr);
    int32_t *ids = malloc((size_t)*n * sizeof(int32_t) + 1);
    assert_non_null(ids);
    int64_t i = 0;
    for (const cJSON *e = arr->child; e != NULL; e = e->next) {
        ids[i++] = (int32_t)e->valuedouble;
    }
    return ids;
}

static void print_ids(const char *what, const int32_t *ids, int64_t n) {
    fprintf(stderr, "  %s (%lld):", what, (long long)n);
    for (int64_t i = 0; i < n && i < 40; i++) {
        fprintf(stderr, " %d", ids[i]);
    }
    fprintf(stderr, n > 40 ? " ...\n" : "\n");
}

static bool same_bytes(const char *label, const char *got, size_t got_len, const char *want, size_t want_len) {
    if (got_len == want_len && memcmp(got, want, got_len) == 0) {
        return true;
    }
    char g[120], w[120];
    snprintf(g, sizeof(g), "%.*s", (int)(got_len < 100 ? got_len : 100), got);
    snprintf(w, sizeof(w), "%.*s", (int)(want_len < 100 ? want_len : 100), want);
    fprintf(stderr, "%s: got %zu bytes \"%s\", want %zu bytes \"%s\"\n", label, got_len, g, want_len, w);
    return false;
}

// Decoding token by token through mc_utf8_stream must give the whole decode's text.
static bool stream_matches(const mc_tokenizer *tok, const int32_t *ids, int64_t n, const char *want, size_t want_len) {
    size_t cap = want_len * 3 + 64, o = 0;
    char *out = malloc(cap + 64);
    assert_non_null(out);
    mc_utf8_stream s = { 0 };
    bool ok = true;
    for (int64_t i = 0; i < n && ok; i++) {
        size_t len = 0;
        const char *b = mc_tokenizer_token_bytes(tok, ids[i], &len);
        for (size_t k = 0; k < len && ok; k++) { // one byte at a time: the hardest split
            char tmp[32];
            size_t w = mc_utf8_stream_feed(&s, b + k, 1, tmp, sizeof(tmp));
            ok = o + w <= cap;
            if (ok) {
                memcpy(out + o, tmp, w);
                o += w;
            }
        }
    }
    char tmp[8];
    size_t w = mc_utf8_stream_flush(&s, tmp, sizeof(tmp));
    if (ok && o + w <= cap) {
        memcpy(out + o, tmp, w);
        o += w;
    }
    ok = ok && same_bytes("stream decode", out, o, want, want_len);
    free(out);
    return ok;
}

// One encode entry: ids exact, both decodes exact, streaming == whole decode. Returns false on a mismatch.
static bool check_encode_entry(const mc_tokenizer *tok, const cJSON *e, int64_t index) {
    size_t text_len = 0, dec_len = 0, skip_len = 0;
    char *text = fixture_bytes(e, "text", &text_len);
    assert_non_null(text);
    char *dec = fixture_bytes(e, "decoded", &dec_len);
    if (dec == NULL) { // absent: the decode equals the text
        dec = fixture_bytes(e, "text", &dec_len);
    }
    char *skip = fixture_bytes(e, "decoded_skip", &skip_len);
    if (skip == NULL) {
        skip = fixture_bytes(e, "decoded", &skip_len);
    }
    if (skip == NULL) {
        skip = fixture_bytes(e, "text", &skip_len);
    }
    int64_t n_want = 0, n_got = 0;
    int32_t *want = fixture_ids(e, &n_want);
    int32_t *got = NULL;
    mc_error err = { 0 };
    bool ok = mc_tokenizer_encode(tok, text, text_len, &got, &n_got, &err) == MC_OK;
    if (!ok) {
        fprintf(stderr, "encode[%lld]: %s\n", (long long)index, err.msg);
    }
    if (ok && (n_got != n_want || memcmp(got, want, (size_t)n_want * sizeof(int32_t)) != 0)) {
        char shown[120];
        snprintf(shown, sizeof(shown), "%.*s", (int)(text_len < 100 ? text_len : 100), text);
        fprintf(stderr, "encode[%lld] \"%s\" (%zu bytes): ids differ\n", (long long)index, shown, text_len);
        print_ids("got", got, n_got);
        print_ids("want", want, n_want);
        ok = false;
    }
    char *out = NULL;
    size_t out_len = 0;
    if (ok) {
        assert_int_equal(mc_tokenizer_decode(tok, want, n_want, false, &out, &out_len, &err), MC_OK);
        ok = same_bytes("decode", out, out_len, dec, dec_len) && strlen(out) <= out_len;
        ok = ok && stream_matches(tok, want, n_want, out, out_len);
        free(out);
        out = NULL;
    }
    if (ok) {
        assert_int_equal(mc_tokenizer_decode(tok, want, n_want, true, &out, &out_len, &err), MC_OK);
        ok = same_bytes("decode skip_special", out, out_len, skip, skip_len);
        free(out);
    }
    if (!ok) {
        fprintf(stderr, "  ... in encode entry %lld\n", (long long)index);
    }
    free(got);
    free(want);
    free(text);
    free(dec);
    free(skip);
    return ok;
}

static cJSON *load_fixture(void) {
    char *path = mc_test_fixture("tokenizer/neox.json");
    char *text = path != NULL ? mc_test_read_text(path) : NULL;
    if (text == NULL) {
        mc_test_skip("tokenizer fixture %s missing", path != NULL ? path : "(MC_FIXTURES unset)");
    }
    cJSON *doc = cJSON_Parse(text);
    assert_non_null(doc);
    free(text);
    free(path);
    return doc;
}

typedef struct neox {
    mc_tokenizer *tok;
    cJSON *doc;
} neox;

static neox load_neox(void) {
    char *path = mc_test_shared("tokenizers/gpt-neox-20b/tokenizer.json");
    if (path == NULL) {
        mc_test_skip("tokenizers/gpt-neox-20b/tokenizer.json not in $MC_SHARED");
    }
    neox n = { .doc = load_fixture() };
    mc_error err = { 0 };
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    mc_status st = mc_tokenizer_load(path, &n.tok, &err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (st != MC_OK) {
        fprintf(stderr, "%s\n", err.msg);
    }
    assert_int_equal(st, MC_OK);
    fprintf(stderr, "tokenizer: loaded %s in %.1f ms\n", path,
            (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6);
    free(path);
    return n;
}

static void test_neox_encode(void **unused) {
    neox n = load_neox();
    assert_int_equal(mc_tokenizer_n_vocab(n.tok), 50277);
    const cJSON *entries = cJSON_GetObjectItemCaseSensitive(n.doc, "encode");
    assert_true(cJSON_GetArraySize(entries) > 500);
    int64_t index = 0, failed = 0;
    for (const cJSON *e = entries->child; e != NULL; e = e->next, index++) {
        failed += !check_encode_entry(n.tok, e, index);
    }
    assert_int_equal(failed, 0);
    mc_tokenizer_free(n.tok);
    cJSON_Delete(n.doc);
}

// decode(encode(text)) == NFC(text) as tokenizers computes it (its decode of the same text), and == utf8proc's NFC
// except where tokenizers' Unicode 9.0 normalization tables differ from utf8proc's newer ones (see normalize.c).
static void test_neox_round_trip(void **unused) {
    neox n = load_neox();
    const cJSON *entries = cJSON_GetObjectItemCaseSensitive(n.doc, "encode");
    int64_t failed = 0, same_as_utf8proc = 0;
    for (const cJSON *e = entries->child; e != NULL; e = e->next) {
        size_t len = 0, out_len = 0, want_len = 0;
        char *text = fixture_bytes(e, "text", &len);
        char *want = fixture_bytes(e, "decoded", &want_len);
        if (want == NULL) {
            want = fixture_bytes(e, "text", &want_len);
        }
        int32_t *ids = NULL;
        int64_t n_ids = 0;
        char *out = NULL;
        mc_error err = { 0 };
        assert_int_equal(mc_tokenizer_encode(n.tok, text, len, &ids, &n_ids, &err), MC_OK);
        assert_int_equal(mc_tokenizer_decode(n.tok, ids, n_ids, false, &out, &out_len, &err), MC_OK);
        failed += !same_bytes("round trip", out, out_len, want, want_len);
        utf8proc_uint8_t *nfc = NULL;
        utf8proc_ssize_t nfc_len = len == 0 ? 0
                                            : utf8proc_map((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)len, &nfc,
                                                           UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        same_as_utf8proc += nfc_len == (utf8proc_ssize_t)out_len && (out_len == 0 || memcmp(nfc, out, out_len) == 0);
        free(nfc);
        free(out);
        free(ids);
        free(want);
        free(text);
    }
    assert_int_equal(failed, 0);
    // Only the handful of post-Unicode-9.0 cases of the corpus may differ from plain utf8proc NFC.
    assert_true(same_as_utf8proc >= cJSON_GetArraySize(entries) - 10);
    mc_tokenizer_free(n.tok);
    cJSON_Delete(n.doc);
}

static void test_neox_decode(void **unused) {
    neox n = load_neox();
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(n.doc, "decode");
    assert_true(cJSON_GetArraySize(cases) > 100);
    int64_t failed = 0;
    for (const cJSON *e = cases->child; e != NULL; e = e->next) {
        int64_t n_ids = 0;
        int32_t *ids = fixture_ids(e, &n_ids);
        size_t want_len = 0, skip_len = 0, got_len = 0;
        char *want = fixture_bytes(e, "text", &want_len);
        char *skip = fixture_bytes(e, "text_skip", &skip_len);
        if (skip == NULL) {
            skip = fixture_bytes(e, "text", &skip_len);
        }
        char *got = NULL;
        mc_error err = { 0 };
        assert_int_equal(mc_tokenizer_decode(n.tok, ids, n_ids, false, &got, &got_len, &err), MC_OK);
        bool ok = same_bytes("decode", got, got_len, want, want_len) && stream_matches(n.tok, ids, n_ids, got, got_len);
        free(got);
        assert_int_equal(mc_tokenizer_decode(n.tok, ids, n_ids, true, &got, &got_len, &err), MC_OK);
        ok = ok && same_bytes("decode skip_special", got, got_len, skip, skip_len);
        if (!ok) {
            print_ids("ids", ids, n_ids);
            failed++;
        }
        free(got);
        free(want);
        free(skip);
        free(ids);
    }
    assert_int_equal(failed, 0);
    mc_error err = { 0 };
    char *out = NULL;
    int32_t bad[] = { 12092, -5 };
    assert_int_equal(mc_tokenizer_decode(n.tok, bad, 2, false, &out, NULL, &err), MC_ERR_INVALID);
    assert_null(out);
    assert_non_null(strstr(err.msg, "-5"));
    assert_true(mc_tokenizer_is_special(n.tok, 0));
    assert_true(mc_tokenizer_is_special(n.tok, 1));
    assert_false(mc_tokenizer_is_special(n.tok, 50254));
    assert_false(mc_tokenizer_is_special(n.tok, 50277));
    size_t len = 99;
    assert_null(mc_tokenizer_token_bytes(n.tok, 50277, &len));
    assert_int_equal(len, 0);
    const char *b = mc_tokenizer_token_bytes(n.tok, 50276, &len); // two spaces: the added token's own bytes
    assert_int_equal(len, 2);
    assert_memory_equal(b, "  ", 2);
    mc_tokenizer_free(n.tok);
    cJSON_Delete(n.doc);
}

// Invalid UTF-8 is refused with the offset of the first bad byte; NUL is ordinary text.
static void test_neox_invalid_utf8(void **unused) {
    neox n = load_neox();

    const struct {
        const char *text;
        size_t len;
        long at;
    } cases[] = {
        { "\xff", 1, 0 },
        { "ab\xc3", 3, 2 },
        { "ok \xc0\x80", 5, 3 },
        { "\xed\xa0\x80", 3, 0 },
        { "x\xf4\x90\x80\x80", 5, 1 },
        { "\xe2\x82", 2, 0 },
        { "abc\x80", 4, 3 },
        { "\xf0\x9f\x98", 3, 0 },
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int32_t *ids = (int32_t *)&n; // must come back NULL
        int64_t n_ids = 7;
        mc_error err = { 0 };
        assert_int_equal(mc_tokenizer_encode(n.tok, cases[i].text, cases[i].len, &ids, &n_ids, &err), MC_ERR_INVALID);
        assert_null(ids);
        assert_int_equal(n_ids, 0);
        char want[64];
        snprintf(want, sizeof(want), "text: invalid UTF-8 at byte %ld", cases[i].at);
        assert_string_equal(err.msg, want);
    }
    int32_t *ids = NULL;
    int64_t n_ids = 0;
    mc_error err = { 0 };
    assert_int_equal(mc_tokenizer_encode(n.tok, "a\0b", 3, &ids, &n_ids, &err), MC_OK);
    assert_int_equal(n_ids, 3); // a, U+0000's byte symbol, b
    free(ids);
    assert_int_equal(mc_tokenizer_encode(n.tok, NULL, 0, &ids, &n_ids, &err), MC_OK);
    assert_int_equal(n_ids, 0);
    free(ids);
    mc_tokenizer_free(n.tok);
    cJSON_Delete(n.doc);
}

// Load and encode speed, reported only (sanitized debug builds are several times slower than release).
static void test_neox_speed(void **unused) {
    neox n = load_neox();
    const char *para = "The quick brown fox jumps over the lazy dog. It wasn't the first time; in 1969, about "
                       "95% of the fuel (8,200 kg) was used.\n  Indented, \"quoted\" -- and so on!\n";
    size_t plen = strlen(para), len = 0, cap = (1 << 20) + plen;
    char *text = malloc(cap);
    assert_non_null(text);
    while (len + plen <= (1 << 20)) {
        memcpy(text + len, para, plen);
        len += plen;
    }
    struct timespec t0, t1;
    int32_t *ids = NULL;
    int64_t n_ids = 0;
    mc_error err = { 0 };
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(mc_tokenizer_encode(n.tok, text, len, &ids, &n_ids, &err), MC_OK);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    fprintf(stderr, "tokenizer: encoded %zu bytes of English into %lld ids in %.1f ms\n", len, (long long)n_ids,
            (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6);
    free(ids);
    // One 200k-character piece of a single letter: the merge heap keeps this n log n.
    memset(text, 'a', 200000);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(mc_tokenizer_encode(n.tok, text, 200000, &ids, &n_ids, &err), MC_OK);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    fprintf(stderr, "tokenizer: one 200000-byte piece into %lld ids in %.1f ms\n", (long long)n_ids,
            (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6);
    free(ids);
    free(text);
    mc_tokenizer_free(n.tok);
    cJSON_Delete(n.doc);
}

// ---------------------------------------------------------------------------------------------------------------
// Small tokenizers written to a temporary folder.

typedef struct tmp {
    char dir[64];
    char path[128];
} tmp;

static void tmp_init(tmp *t) {
    snprintf(t->dir, sizeof(t->dir), "/tmp/mc_tok_XXXXXX");
    assert_non_null(mkdtemp(t->dir));
    snprintf(t->path, sizeof(t->path), "%s/tokenizer.json", t->dir);
}

static void tmp_write(tmp *t, const char *content, size_t len) {
    FILE *f = fopen(t->path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(content, 1, len, f), len);
    fclose(f);
}

static void tmp_done(tmp *t) {
    unlink(t->path);
    rmdir(t->dir);
}

#define PIPELINE                                                                                                       \
    "\"normalizer\":{\"type\":\"NFC\"},\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,"          \
    "\"trim_offsets\":true},\"decoder\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true}"

static mc_tokenizer *load_json(const char *json) {
    tmp t;
    tmp_init(&t);
    tmp_write(&t, json, strlen(json));
    mc_tokenizer *tok = NULL;
    mc_error err = { 0 };
    mc_status st = mc_tokenizer_load(t.path, &tok, &err);
    if (st != MC_OK) {
        fprintf(stderr, "%s\n", err.msg);
    }
    assert_int_equal(st, MC_OK);
    tmp_done(&t);
    return tok;
}

static void expect_ids(const mc_tokenizer *tok, const char *text, const int32_t *want, int64_t n_want) {
    int32_t *ids = NULL;
    int64_t n = 0;
    mc_error err = { 0 };
    assert_int_equal(mc_tokenizer_encode(tok, text, strlen(text), &ids, &n, &err), MC_OK);
    if (n != n_want || memcmp(ids, want, (size_t)n * sizeof(int32_t)) != 0) {
        fprintf(stderr, "\"%s\":\n", text);
        print_ids("got", ids, n);
        print_ids("want", want, n_want);
        fail();
    }
    free(ids);
}

// Lowest rank first, leftmost among equal pairs, overlapping pairs as tokenizers resolves them.
static void test_merge_order(void **unused) {
    const char *vocab = "\"vocab\":{\"a\":0,\"b\":1,\"c\":2,\"aa\":3,\"ab\":4,\"bc\":5,\"abc\":6,\"aaaa\":7}";
    char json[1024];
    snprintf(json, sizeof(json), "{\"model\":{\"type\":\"BPE\",%s,\"merges\":[\"b c\",\"a b\",\"a bc\",\"a a\"]},%s}",
             vocab, PIPELINE);
    mc_tokenizer *tok = load_json(json);
    assert_int_equal(mc_tokenizer_n_vocab(tok), 8);
    expect_ids(tok, "abc", (int32_t[]){ 6 }, 1);     // b c (rank 0) before a b (rank 1), then a bc
    expect_ids(tok, "aaa", (int32_t[]){ 3, 0 }, 2);  // a a a -> aa a
    expect_ids(tok, "aaaa", (int32_t[]){ 3, 3 }, 2); // no "aa aa" merge here
    expect_ids(tok, "ab", (int32_t[]){ 4 }, 1);
    expect_ids(tok, "cab", (int32_t[]){ 2, 4 }, 2);
    expect_ids(tok, "a d b", (int32_t[]){ 0, 1 }, 2); // symbols absent from the vocab (space, d) are dropped
    mc_tokenizer_free(tok);

    // Same vocab, "a b" ranked first and merges as [a, b] pairs: abc -> ab c; "aa aa" joins the pairs.
    snprintf(json, sizeof(json),
             "{\"model\":{\"type\":\"BPE\",%s,\"merges\":[[\"a\",\"b\"],[\"b\",\"c\"],[\"a\",\"bc\"],[\"a\",\"a\"],"
             "[\"aa\",\"aa\"]]},%s}",
             vocab, PIPELINE);
    tok = load_json(json);
    expect_ids(tok, "abc", (int32_t[]){ 4, 2 }, 2);
    expect_ids(tok, "aaaaa", (int32_t[]){ 7, 0 }, 2);
    expect_ids(tok, "aaaaaa", (int32_t[]){ 7, 3 }, 2);
    mc_tokenizer_free(tok);
}

// The mini tokenizer of the fixture: added-token flags (lstrip, rstrip, single_word, normalized) and
// add_prefix_space, against tokenizers.
static void test_mini_flags(void **unused) {
    cJSON *doc = load_fixture();
    const cJSON *mini = cJSON_GetObjectItemCaseSensitive(doc, "mini");
    char *json = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(mini, "tokenizer"));
    assert_non_null(json);
    mc_tokenizer *tok = load_json(json);
    free(json);
    int64_t index = 0, failed = 0;
    for (const cJSON *e = cJSON_GetObjectItemCaseSensitive(mini, "encode")->child; e != NULL; e = e->next) {
        failed += !check_encode_entry(tok, e, index++);
    }
    assert_int_equal(failed, 0);
    int32_t *ids = NULL;
    int64_t n_ids = 0;
    mc_error err = { 0 };
    assert_int_equal(mc_tokenizer_encode(tok, "a", SIZE_MAX, &ids, &n_ids, &err), MC_ERR_INVALID); // no such text
    assert_null(ids);
    assert_non_null(strstr(err.msg, "bytes"));
    mc_tokenizer_free(tok);
    cJSON_Delete(doc);
}

// Every bad file fails with the expected status and a message that names the file.
static void test_bad_files(void **unused) {
    static const char *good =
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"a b\"]},"
        "\"added_tokens\":[{\"id\":3,\"content\":\"<s>\",\"special\":true,\"normalized\":false}]," PIPELINE "}";

    const struct {
        const char *json;
        mc_status want;
        const char *says; // part of the message after the path
    } cases[] = {
        { "", MC_ERR_FORMAT, "empty file" },
        { "{\"model\": ", MC_ERR_FORMAT, "invalid JSON" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\"", MC_ERR_FORMAT, "invalid JSON" },
        { "[1, 2]", MC_ERR_FORMAT, "not a JSON object" },
        { "{\"x\":1}\xff", MC_ERR_FORMAT, "UTF-8" },
        { "{\"added_tokens\":[]," PIPELINE "}", MC_ERR_FORMAT, "\"model\" is missing" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":[],\"merges\":[]}," PIPELINE "}", MC_ERR_FORMAT, "model.vocab" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":\"0\"},\"merges\":[]}," PIPELINE "}", MC_ERR_FORMAT,
          "model.vocab[\"a\"]" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-1},\"merges\":[]}," PIPELINE "}", MC_ERR_FORMAT,
          "model.vocab[\"a\"]" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":{}}," PIPELINE "}", MC_ERR_FORMAT,
          "model.merges" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0}}," PIPELINE "}", MC_ERR_FORMAT, "model.merges" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"a x\"]}," PIPELINE "}",
          MC_ERR_FORMAT, "model.merges[0]: token \"x\" is not in the vocab" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[\"a b\"]}," PIPELINE "}", MC_ERR_FORMAT,
          "token \"ab\" is not in the vocab" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"a  b\"]}," PIPELINE "}",
          MC_ERR_FORMAT, "model.merges[0] is not two tokens" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[7]}," PIPELINE "}",
          MC_ERR_FORMAT, "model.merges[0] is neither" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":0},\"merges\":[]}," PIPELINE "}", MC_ERR_FORMAT,
          "id 0 is used twice" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"a\":1},\"merges\":[]}," PIPELINE "}", MC_ERR_FORMAT,
          "token \"a\" twice" },
        { "{\"model\":{\"type\":\"WordPiece\",\"vocab\":{\"a\":0}}," PIPELINE "}", MC_ERR_UNSUPPORTED,
          "model type \"WordPiece\" is not supported" },
        { "{\"model\":{\"type\":\"Unigram\",\"vocab\":[[\"a\",0.0]]}," PIPELINE "}", MC_ERR_UNSUPPORTED,
          "model type \"Unigram\"" },
        { "{\"model\":{\"type\":7,\"vocab\":{},\"merges\":[]}," PIPELINE "}", MC_ERR_FORMAT, "model.type" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[],\"dropout\":0.1}," PIPELINE "}",
          MC_ERR_UNSUPPORTED, "model.dropout" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[],\"byte_fallback\":true}," PIPELINE "}",
          MC_ERR_UNSUPPORTED, "byte_fallback" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[],\"fuse_unk\":\"no\"}," PIPELINE "}",
          MC_ERR_FORMAT, "model.fuse_unk is not a boolean" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[],\"unk_token\":\"<unk>\"}," PIPELINE "}",
          MC_ERR_FORMAT, "unk_token \"<unk>\" is not in the vocab" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[],\"continuing_subword_prefix\":\"##\"}"
          "," PIPELINE "}",
          MC_ERR_UNSUPPORTED, "continuing_subword_prefix" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"normalizer\":{\"type\":\"Lowercase\"},"
          "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false},\"decoder\":{\"type\":\"ByteLevel\"}}",
          MC_ERR_UNSUPPORTED, "normalizer \"Lowercase\"" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"pre_tokenizer\":{\"type\":\"Whitespace\"},"
          "\"decoder\":{\"type\":\"ByteLevel\"}}",
          MC_ERR_UNSUPPORTED, "pre_tokenizer \"Whitespace\"" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"pre_tokenizer\":{\"type\":\"ByteLevel\"},"
          "\"decoder\":{\"type\":\"ByteLevel\"}}",
          MC_ERR_FORMAT, "add_prefix_space" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"pre_tokenizer\":{\"type\":\"ByteLevel\","
          "\"add_prefix_space\":false},\"decoder\":null}",
          MC_ERR_UNSUPPORTED, "decoder \"null\"" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"added_tokens\":{}," PIPELINE "}",
          MC_ERR_FORMAT, "added_tokens is not an array" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"added_tokens\":[{\"content\":\"x\"}]"
          "," PIPELINE "}",
          MC_ERR_FORMAT, "added_tokens[0] needs" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"added_tokens\":[{\"id\":5,\"content\":"
          "\"x\"}]," PIPELINE "}",
          MC_ERR_FORMAT, "added token \"x\" has id 5, but tokenizers would give it 1" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"added_tokens\":[{\"id\":0,\"content\":"
          "\"a\",\"special\":\"yes\"}]," PIPELINE "}",
          MC_ERR_FORMAT, "added_tokens[0].special is not a boolean" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":99999999},\"merges\":[]}," PIPELINE "}", MC_ERR_FORMAT,
          "model.vocab[\"a\"]" },
    };

    tmp t;
    tmp_init(&t);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        tmp_write(&t, cases[i].json, strlen(cases[i].json));
        mc_tokenizer *tok = (mc_tokenizer *)&t; // must come back NULL
        mc_error err = { 0 };
        mc_status st = mc_tokenizer_load(t.path, &tok, &err);
        if (st != cases[i].want || strstr(err.msg, t.path) == NULL || strstr(err.msg, cases[i].says) == NULL) {
            fprintf(stderr, "case %zu: status %s, message \"%s\"; want %s and \"%s\"\n", i, mc_status_name(st), err.msg,
                    mc_status_name(cases[i].want), cases[i].says);
            fail();
        }
        assert_null(tok);
    }
    // A truncated copy of a good file, at every length.
    size_t good_len = strlen(good);
    for (size_t cut = 0; cut < good_len; cut++) {
        tmp_write(&t, good, cut);
        mc_tokenizer *tok = NULL;
        mc_error err = { 0 };
        assert_int_equal(mc_tokenizer_load(t.path, &tok, &err), MC_ERR_FORMAT);
        assert_non_null(strstr(err.msg, t.path));
        assert_null(tok);
    }
    tmp_write(&t, good, good_len);
    mc_tokenizer *tok = NULL;
    mc_error err = { 0 };
    assert_int_equal(mc_tokenizer_load(t.path, &tok, &err), MC_OK);
    assert_int_equal(mc_tokenizer_n_vocab(tok), 4);
    assert_true(mc_tokenizer_is_special(tok, 3));
    expect_ids(tok, "ab<s>ba", (int32_t[]){ 2, 3, 1, 0 }, 4);
    mc_tokenizer_free(tok);
    tmp_done(&t);

    tok = (mc_tokenizer *)&t;
    assert_int_equal(mc_tokenizer_load("/nonexistent/dir/tokenizer.json", &tok, &err), MC_ERR_IO);
    assert_non_null(strstr(err.msg, "/nonexistent/dir/tokenizer.json"));
    assert_null(tok);
    assert_int_equal(mc_tokenizer_load(t.dir, &tok, &err), MC_ERR_IO); // removed folder
    mc_tokenizer_free(NULL);
}

// The stream holds incomplete sequences and replaces invalid ones exactly like the whole decode.
static void test_utf8_stream(void **unused) {
    const struct {
        const char *in;
        size_t len;
        const char *want;
    } cases[] = {
        { "\xf0\x9f\x98\x80", 4, "\xf0\x9f\x98\x80" },
        { "\xf0\x9f", 2, "\xef\xbf\xbd" },
        { "\xf0\x9f ok", 5, "\xef\xbf\xbd ok" },
        { "\x80\x80", 2, "\xef\xbf\xbd\xef\xbf\xbd" },
        { "\xe0\x80", 2, "\xef\xbf\xbd\xef\xbf\xbd" }, // E0 80 is never a valid prefix
        { "\xed\xa0\x80", 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" },
        { "\xf4\x90", 2, "\xef\xbf\xbd\xef\xbf\xbd" },
        { "\xc3\xa9\xc3", 3, "\xc3\xa9\xef\xbf\xbd" },
        { "\xe2\x82\xe2\x82\xac", 5, "\xef\xbf\xbd\xe2\x82\xac" },
        { "a\0b", 3, "a\0b" },
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t want_len = cases[i].in[0] == 'a' ? 3 : strlen(cases[i].want);
        for (size_t chunk = 1; chunk <= cases[i].len; chunk++) {
            mc_utf8_stream s = { 0 };
            char out[64];
            size_t o = 0;
            for (size_t k = 0; k < cases[i].len; k += chunk) {
                size_t n = k + chunk <= cases[i].len ? chunk : cases[i].len - k;
                o += mc_utf8_stream_feed(&s, cases[i].in + k, n, out + o, sizeof(out) - o);
            }
            o += mc_utf8_stream_flush(&s, out + o, sizeof(out) - o);
            assert_int_equal(o, want_len);
            assert_memory_equal(out, cases[i].want, want_len);
        }
    }
    // NULL stream, output or input: nothing consumed or written
    mc_utf8_stream s = { 0 };
    char out[64];
    assert_int_equal(mc_utf8_stream_feed(NULL, "a", 1, out, sizeof(out)), 0);
    assert_int_equal(mc_utf8_stream_feed(&s, "a", 1, NULL, sizeof(out)), 0);
    assert_int_equal(mc_utf8_stream_feed(&s, NULL, 1, out, sizeof(out)), 0);
    assert_int_equal(s.n_pending, 0);
}

int main(void) {
    const struct CMUnitTest unit[] = {
        cmocka_unit_test(test_merge_order),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_utf8_stream),
        cmocka_unit_test(test_mini_flags),
    };
    int failed = cmocka_run_group_tests_name("tokenizer units", unit, NULL, NULL);
    if (failed != 0) {
        return failed;
    }
    char *shared = mc_test_shared("tokenizers/gpt-neox-20b/tokenizer.json");
    if (shared == NULL) {
        mc_test_skip("tokenizers/gpt-neox-20b/tokenizer.json not in $MC_SHARED (unit tests passed)");
    }
    free(shared);
    const struct CMUnitTest neox_tests[] = {
        cmocka_unit_test(test_neox_encode),     cmocka_unit_test(test_neox_decode),
        cmocka_unit_test(test_neox_round_trip), cmocka_unit_test(test_neox_invalid_utf8),
        cmocka_unit_test(test_neox_speed),
    };
    return cmocka_run_group_tests_name("tokenizer neox", neox_tests, NULL, NULL);
}
