// mc_generate against transformers' model.generate (tests/fixtures/expect/<model>.json from tools/oracle): greedy
// ids identical for every fixture model, ragged batches identical to each prompt alone, a batch of all greedy
// prompts of a model, and for tiny-neox the text path through the shared tokenizer. Also stopping (EOS, callback,
// max_new_tokens 0), sampled batches against single runs, stats, and argument errors.
#include <cjson/cJSON.h>
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// cmocka.h needs setjmp.h, stdarg.h and stddef.h first
#include <cmocka.h>

#include "check.h"
#include "mambac.h"

typedef struct fixture {
    char *name;
    cJSON *doc;
    mc_model *model;
} fixture;

static fixture *g_fix;
static int g_n_fix;

static int32_t *ids_of(const cJSON *arr, int64_t *n) {
    *n = cJSON_GetArraySize(arr);
    int32_t *ids = malloc((size_t)(*n > 0 ? *n : 1) * sizeof(int32_t));
    for (int64_t i = 0; i < *n; i++) {
        ids[i] = (int32_t)cJSON_GetArrayItem(arr, (int)i)->valuedouble;
    }
    return ids;
}

static bool add_fixture(const char *dir, const char *file) {
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    char *text = mc_test_read_text(path);
    cJSON *doc = text != NULL ? cJSON_Parse(text) : NULL;
    free(text);
    const cJSON *model = cJSON_GetObjectItem(doc, "model");
    if (!cJSON_IsString(model) || !cJSON_IsArray(cJSON_GetObjectItem(doc, "greedy"))) {
        cJSON_Delete(doc);
        return true;
    }
    char *mpath = mc_test_fixture(model->valuestring);
    mc_error err = { 0 };
    fixture fx = { .name = strndup(file, strlen(file) - 5), .doc = doc };
    mc_status st = mc_model_load(mpath, NULL, &fx.model, &err);
    free(mpath);
    if (st != MC_OK) {
        fprintf(stderr, "%s: %s\n", file, err.msg);
        free(fx.name);
        cJSON_Delete(doc);
        return false;
    }
    g_fix = realloc(g_fix, (size_t)(g_n_fix + 1) * sizeof(*g_fix));
    g_fix[g_n_fix++] = fx;
    return true;
}

static int setup(void **unused) {
    char *dir = mc_test_fixture("expect");
    DIR *d = dir != NULL ? opendir(dir) : NULL;
    if (d == NULL) {
        free(dir);
        mc_test_skip("no fixtures in $MC_FIXTURES/expect (run tools/oracle)");
    }
    bool ok = true;
    struct dirent *ent;
    while (ok && (ent = readdir(d)) != NULL) {
        size_t len = strlen(ent->d_name);
        if (len > 5 && strcmp(ent->d_name + len - 5, ".json") == 0 && strcmp(ent->d_name, "sampler.json") != 0) {
            ok = add_fixture(dir, ent->d_name);
        }
    }
    closedir(d);
    free(dir);
    if (ok && g_n_fix == 0) {
        mc_test_skip("no model fixtures with greedy generations in $MC_FIXTURES/expect");
    }
    return ok ? 0 : -1;
}

static int teardown(void **unused) {
    for (int i = 0; i < g_n_fix; i++) {
        mc_model_free(g_fix[i].model);
        cJSON_Delete(g_fix[i].doc);
        free(g_fix[i].name);
    }
    free(g_fix);
    return 0;
}

// ---------------------------------------------------------------------------------------------------------------
// Helpers

// Runs mc_generate on n prompts with opts; out_ids/out_len are caller arrays of n entries (free with free_outs).
static void run_generate(const mc_model *m, int32_t **prompts, const int64_t *lens, int64_t n,
                         const mc_generate_opts *opts, int32_t **out_ids, int64_t *out_len) {
    mc_error err = { 0 };
    mc_status st = mc_generate(m, (const int32_t *const *)prompts, lens, n, opts, out_ids, out_len, &err);
    if (st != MC_OK) {
        fail_msg("mc_generate: %s", err.msg);
    }
}

static void free_outs(int32_t **out_ids, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        free(out_ids[i]);
    }
}

// prompt + new (first n_new of them) must equal want [n_want]; reports the first difference.
static bool same_row(const char *label, const int32_t *prompt, int64_t n_prompt, const int32_t *new_ids, int64_t n_new,
                     const int32_t *want, int64_t n_want) {
    if (n_prompt + n_new != n_want) {
        fprintf(stderr, "%s: %lld ids, transformers has %lld\n", label, (long long)(n_prompt + n_new),
                (long long)n_want);
        return false;
    }
    for (int64_t t = 0; t < n_want; t++) {
        int32_t got = t < n_prompt ? prompt[t] : new_ids[t - n_prompt];
        if (got != want[t]) {
            fprintf(stderr, "%s: position %lld is %d, transformers has %d\n", label, (long long)t, got, want[t]);
            return false;
        }
    }
    return true;
}

static void greedy_opts(mc_generate_opts *o, const fixture *fx, int64_t max_new) {
    mc_generate_opts_init(o, fx->model);
    o->max_new_tokens = max_new;
}

// ---------------------------------------------------------------------------------------------------------------
// Fixture comparisons

static void test_greedy_matches_transformers(void **unused) {
    int n_bad = 0, n_cases = 0;
    for (int f = 0; f < g_n_fix; f++) {
        const cJSON *c = NULL;
        int k = 0;
        cJSON_ArrayForEach(c, cJSON_GetObjectItem(g_fix[f].doc, "greedy")) {
            int64_t n_prompt = 0, n_want = 0, out_len = 0;
            int32_t *prompt = ids_of(cJSON_GetObjectItem(c, "prompt"), &n_prompt);
            int32_t *want = ids_of(cJSON_GetObjectItem(c, "output"), &n_want);
            int32_t *out = NULL;
            mc_generate_opts o;
            greedy_opts(&o, &g_fix[f], (int64_t)cJSON_GetObjectItem(c, "max_new_tokens")->valuedouble);
            run_generate(g_fix[f].model, &prompt, &n_prompt, 1, &o, &out, &out_len);
            char label[128];
            snprintf(label, sizeof(label), "%s greedy[%d]", g_fix[f].name, k++);
            n_bad += !same_row(label, prompt, n_prompt, out, out_len, want, n_want);
            n_cases++;
            free(out);
            free(prompt);
            free(want);
        }
    }
    assert_true(n_cases > 0);
    assert_int_equal(n_bad, 0);
}

// One batched_greedy entry: prompts of different lengths together, each row as transformers' (pads stripped).
static int check_batch_entry(const fixture *fx, const cJSON *e, const char *label) {
    const cJSON *prompts = cJSON_GetObjectItem(e, "prompts"), *outputs = cJSON_GetObjectItem(e, "outputs");
    int64_t n = cJSON_GetArraySize(prompts), max_new = (int64_t)cJSON_GetObjectItem(e, "max_new_tokens")->valuedouble;
    int32_t **p = calloc((size_t)n, sizeof(*p)), **out = calloc((size_t)n, sizeof(*out));
    int64_t *lens = calloc((size_t)n, sizeof(*lens)), *out_len = calloc((size_t)n, sizeof(*out_len));
    for (int64_t i = 0; i < n; i++) {
        p[i] = ids_of(cJSON_GetArrayItem(prompts, (int)i), &lens[i]);
    }
    mc_generate_opts o;
    greedy_opts(&o, fx, max_new);
    run_generate(fx->model, p, lens, n, &o, out, out_len);
    int n_bad = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t n_want = 0;
        int32_t *want = ids_of(cJSON_GetArrayItem(outputs, (int)i), &n_want);
        char row[160];
        snprintf(row, sizeof(row), "%s row %lld", label, (long long)i);
        n_bad += !same_row(row, p[i], lens[i], out[i], out_len[i], want, n_want);
        free(want);
        free(p[i]);
    }
    free_outs(out, n);
    free(p);
    free(out);
    free(lens);
    free(out_len);
    return n_bad;
}

static void test_batched_greedy_matches_transformers(void **unused) {
    int n_bad = 0;
    for (int f = 0; f < g_n_fix; f++) {
        const cJSON *e = NULL;
        int k = 0;
        cJSON_ArrayForEach(e, cJSON_GetObjectItem(g_fix[f].doc, "batched_greedy")) {
            char label[128];
            snprintf(label, sizeof(label), "%s batched_greedy[%d]", g_fix[f].name, k++);
            n_bad += check_batch_entry(&g_fix[f], e, label);
        }
    }
    assert_int_equal(n_bad, 0);
}

// Every greedy prompt of a model in one batch with the largest max_new_tokens: each row cut to its own
// max_new_tokens equals the single-prompt reference (greedy rows do not depend on how long others run).
static void test_all_greedy_prompts_in_one_batch(void **unused) {
    int n_bad = 0;
    for (int f = 0; f < g_n_fix; f++) {
        const cJSON *cases = cJSON_GetObjectItem(g_fix[f].doc, "greedy");
        int64_t n = cJSON_GetArraySize(cases), max_new = 0;
        int32_t **p = calloc((size_t)n, sizeof(*p)), **out = calloc((size_t)n, sizeof(*out));
        int64_t *lens = calloc((size_t)n, sizeof(*lens)), *out_len = calloc((size_t)n, sizeof(*out_len));
        for (int64_t i = 0; i < n; i++) {
            const cJSON *c = cJSON_GetArrayItem(cases, (int)i);
            p[i] = ids_of(cJSON_GetObjectItem(c, "prompt"), &lens[i]);
            int64_t m = (int64_t)cJSON_GetObjectItem(c, "max_new_tokens")->valuedouble;
            max_new = m > max_new ? m : max_new;
        }
        mc_generate_opts o;
        greedy_opts(&o, &g_fix[f], max_new);
        run_generate(g_fix[f].model, p, lens, n, &o, out, out_len);
        for (int64_t i = 0; i < n; i++) {
            const cJSON *c = cJSON_GetArrayItem(cases, (int)i);
            int64_t n_want = 0, m = (int64_t)cJSON_GetObjectItem(c, "max_new_tokens")->valuedouble;
            int32_t *want = ids_of(cJSON_GetObjectItem(c, "output"), &n_want);
            char label[128];
            snprintf(label, sizeof(label), "%s all-greedy batch row %lld", g_fix[f].name, (long long)i);
            n_bad += !same_row(label, p[i], lens[i], out[i], out_len[i] < m ? out_len[i] : m, want, n_want);
            free(want);
            free(p[i]);
        }
        free_outs(out, n);
        free(p);
        free(out);
        free(lens);
        free(out_len);
    }
    assert_int_equal(n_bad, 0);
}

static const fixture *find_fixture(const char *name) {
    for (int f = 0; f < g_n_fix; f++) {
        if (strcmp(g_fix[f].name, name) == 0) {
            return &g_fix[f];
        }
    }
    return NULL;
}

// tiny-neox with the shared NeoX tokenizer: encode(prompt_text) -> generate -> decode, as transformers.
static void test_text_greedy(void **unused) {
    const fixture *fx = find_fixture("tiny-neox");
    char *tok_path = mc_test_shared("tokenizers/gpt-neox-20b/tokenizer.json");
    if (fx == NULL || tok_path == NULL || cJSON_GetObjectItem(fx->doc, "text_greedy") == NULL) {
        free(tok_path);
        skip(); // ../shared's tokenizer or the tiny-neox fixture is absent
    }
    mc_tokenizer *tok = NULL;
    mc_error err = { 0 };
    if (mc_tokenizer_load(tok_path, &tok, &err) != MC_OK) {
        fail_msg("%s: %s", tok_path, err.msg);
    }
    const cJSON *c = NULL;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(fx->doc, "text_greedy")) {
        const char *text = cJSON_GetObjectItem(c, "prompt_text")->valuestring;
        int32_t *prompt = NULL, *out = NULL;
        int64_t n_prompt = 0, n_want = 0, out_len = 0;
        assert_int_equal(mc_tokenizer_encode(tok, text, strlen(text), &prompt, &n_prompt, &err), MC_OK);
        mc_generate_opts o;
        greedy_opts(&o, fx, (int64_t)cJSON_GetObjectItem(c, "max_new_tokens")->valuedouble);
        run_generate(fx->model, &prompt, &n_prompt, 1, &o, &out, &out_len);
        int32_t *want = ids_of(cJSON_GetObjectItem(c, "output_ids"), &n_want);
        assert_true(same_row(text, prompt, n_prompt, out, out_len, want, n_want));
        char *got_text = NULL;
        size_t got_len = 0;
        assert_int_equal(mc_tokenizer_decode(tok, want, n_want, false, &got_text, &got_len, &err), MC_OK);
        assert_string_equal(got_text, cJSON_GetObjectItem(c, "output_text")->valuestring);
        free(got_text);
        free(want);
        free(out);
        free(prompt);
    }
    mc_tokenizer_free(tok);
    free(tok_path);
}

// ---------------------------------------------------------------------------------------------------------------
// Behaviour on the first fixture model (no reference needed)

typedef struct cb_log {
    int64_t n;
    int64_t seq[64];
    int32_t tok[64];
    int64_t stop_after; // return false at this many calls for sequence 0
} cb_log;

static bool log_token(void *user, int64_t seq, int32_t token) {
    cb_log *l = user;
    if (l->n < 64) {
        l->seq[l->n] = seq;
        l->tok[l->n] = token;
    }
    l->n++;
    return !(seq == 0 && l->n == l->stop_after);
}

static void test_callback_order_and_stop(void **unused) {
    const fixture *fx = &g_fix[0];
    int32_t prompt[3] = { 1, 2, 3 };
    int32_t *pp = prompt, *out = NULL;
    int64_t len = 3, out_len = 0;
    cb_log log = { .stop_after = 4 };
    mc_generate_stats stats = { 0 };
    mc_generate_opts o;
    greedy_opts(&o, fx, 10);
    o.stop_at_eos = false;
    o.on_token = log_token;
    o.user = &log;
    o.stats = &stats;
    run_generate(fx->model, &pp, &len, 1, &o, &out, &out_len);
    assert_int_equal(out_len, 4); // the token on which the callback said stop stays in the output
    assert_int_equal(log.n, 4);
    for (int64_t i = 0; i < out_len; i++) {
        assert_int_equal(log.tok[i], out[i]);
        assert_int_equal(log.seq[i], 0);
    }
    assert_int_equal(stats.n_prompt_tokens, 3);
    assert_int_equal(stats.n_new_tokens, 4);
    free(out);
    o.on_token = NULL; // without a stop: exactly max_new_tokens, the first four the same
    int32_t *out2 = NULL;
    run_generate(fx->model, &pp, &len, 1, &o, &out2, &out_len);
    assert_int_equal(out_len, 10);
    assert_memory_equal(out2, log.tok, 4 * sizeof(int32_t));
    free(out2);
}

// Sequence i of 6 ends after i + 1 tokens (callback) except the last, which runs to max_new_tokens: the batch
// shrinks step by step (and is compacted into smaller states), yet every row equals its single-prompt run.
static bool stop_by_index(void *user, int64_t seq, int32_t token) {
    int64_t *count = user;
    count[seq]++;
    return seq == 5 || count[seq] < seq + 1;
}

static void test_ragged_stops_match_single(void **unused) {
    for (int f = 0; f < g_n_fix; f++) {
        const fixture *fx = &g_fix[f];
        int32_t base[6][4] = { { 1, 2 }, { 3 }, { 4, 5, 6 }, { 7, 8, 9, 10 }, { 11 }, { 12, 13 } };
        int64_t lens[6] = { 2, 1, 3, 4, 1, 2 }, out_len[6] = { 0 }, count[6] = { 0 };
        int32_t *pp[6], *out[6] = { NULL };
        for (int i = 0; i < 6; i++) {
            pp[i] = base[i];
        }
        mc_generate_opts o;
        greedy_opts(&o, fx, 9);
        o.stop_at_eos = false;
        o.on_token = stop_by_index;
        o.user = count;
        run_generate(fx->model, pp, lens, 6, &o, out, out_len);
        for (int i = 0; i < 6; i++) {
            int64_t want_len = i == 5 ? 9 : i + 1, solo_len = 0;
            assert_int_equal(out_len[i], want_len);
            int32_t *solo = NULL;
            mc_generate_opts one;
            greedy_opts(&one, fx, want_len);
            one.stop_at_eos = false;
            run_generate(fx->model, &pp[i], &lens[i], 1, &one, &solo, &solo_len);
            if (memcmp(solo, out[i], (size_t)want_len * sizeof(int32_t)) != 0) {
                fail_msg("%s: row %d of the shrinking batch differs from the prompt alone", fx->name, i);
            }
            free(solo);
        }
        free_outs(out, 6);
    }
}

static void test_eos_and_zero_tokens(void **unused) {
    const fixture *fx = &g_fix[0];
    int32_t prompt[2] = { 4, 5 };
    int32_t *pp = prompt, *out = NULL;
    int64_t len = 2, out_len = 0;
    mc_generate_opts o;
    greedy_opts(&o, fx, 8);
    o.stop_at_eos = false;
    run_generate(fx->model, &pp, &len, 1, &o, &out, &out_len);
    assert_int_equal(out_len, 8);
    int32_t eos = out[2]; // declare the third new token an EOS id: generation ends right after it, keeping it
    free(out);
    o.stop_at_eos = true;
    o.eos_ids = &eos;
    o.n_eos_ids = 1;
    run_generate(fx->model, &pp, &len, 1, &o, &out, &out_len);
    assert_true(out_len >= 1 && out_len <= 3);
    assert_int_equal(out[out_len - 1], eos);
    free(out);
    o.max_new_tokens = 0;
    run_generate(fx->model, &pp, &len, 1, &o, &out, &out_len);
    assert_int_equal(out_len, 0);
    assert_non_null(out);
    free(out);
}

// Sampling: sequence 0 of a batch equals a single run with the same seed; the same seed repeats.
static void test_sampled_batch_matches_single(void **unused) {
    const fixture *fx = &g_fix[0];
    int32_t a[3] = { 1, 2, 3 }, b[5] = { 9, 8, 7, 6, 5 };
    int32_t *pp[2] = { a, b }, *out[2] = { NULL, NULL }, *solo = NULL, *again = NULL;
    int64_t lens[2] = { 3, 5 }, out_len[2] = { 0, 0 }, solo_len = 0, again_len = 0;
    mc_generate_opts o;
    greedy_opts(&o, fx, 12);
    o.stop_at_eos = false;
    o.sampler.do_sample = true;
    o.sampler.top_k = 50;
    o.sampler.temperature = 1.5;
    o.sampler.seed = 99;
    run_generate(fx->model, pp, lens, 2, &o, out, out_len);
    run_generate(fx->model, pp, lens, 1, &o, &solo, &solo_len);
    run_generate(fx->model, pp, lens, 1, &o, &again, &again_len);
    assert_int_equal(out_len[0], solo_len);
    assert_memory_equal(out[0], solo, (size_t)solo_len * sizeof(int32_t));
    assert_memory_equal(again, solo, (size_t)solo_len * sizeof(int32_t));
    free_outs(out, 2);
    free(solo);
    free(again);
}

static void expect_invalid(const mc_generate_opts *o, int32_t **pp, const int64_t *lens, int64_t n,
                           const char *needle) {
    int32_t *out[2] = { (int32_t *)1, (int32_t *)1 };
    int64_t out_len[2] = { 0, 0 };
    mc_error err = { 0 };
    mc_status st = mc_generate(g_fix[0].model, (const int32_t *const *)pp, lens, n, o, out, out_len, &err);
    assert_int_equal(st, MC_ERR_INVALID);
    if (strstr(err.msg, needle) == NULL) {
        fail_msg("message '%s' does not name '%s'", err.msg, needle);
    }
    for (int64_t i = 0; i < n; i++) {
        assert_null(out[i]);
    }
}

static void test_bad_arguments(void **unused) {
    const int64_t V = mc_model_config(g_fix[0].model)->vocab_size;
    int32_t good[2] = { 1, 2 }, bad[2] = { 1, (int32_t)V };
    int32_t *pp[2] = { good, bad };
    int64_t lens[2] = { 2, 2 }, zero[1] = { 0 };
    mc_generate_opts o;
    mc_generate_opts_init(&o, g_fix[0].model);
    expect_invalid(&o, pp, lens, 2, "prompt 1: token id");
    expect_invalid(&o, pp, zero, 1, "prompt 0 is empty");
    expect_invalid(&o, pp, lens, 0, "n_seq");
    o.max_new_tokens = -1;
    expect_invalid(&o, pp, lens, 1, "max_new_tokens");
    mc_generate_opts_init(&o, g_fix[0].model);
    o.sampler.temperature = 0;
    expect_invalid(&o, pp, lens, 1, "temperature");
    mc_generate_opts_init(&o, g_fix[0].model);
    o.sampler.top_k = -2;
    expect_invalid(&o, pp, lens, 1, "top_k");
    mc_generate_opts_init(&o, g_fix[0].model);
    o.sampler.top_p = 1.01;
    expect_invalid(&o, pp, lens, 1, "top_p");
    mc_generate_opts_init(&o, g_fix[0].model);
    o.sampler.min_p = -0.5;
    expect_invalid(&o, pp, lens, 1, "min_p");
    mc_generate_opts_init(&o, g_fix[0].model);
    o.sampler.repetition_penalty = 0;
    expect_invalid(&o, pp, lens, 1, "repetition_penalty");
    mc_generate_opts_init(&o, g_fix[0].model);
    int32_t eos = (int32_t)V;
    o.eos_ids = &eos;
    o.n_eos_ids = 1;
    expect_invalid(&o, pp, lens, 1, "eos id");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_matches_transformers),
        cmocka_unit_test(test_batched_greedy_matches_transformers),
        cmocka_unit_test(test_all_greedy_prompts_in_one_batch),
        cmocka_unit_test(test_text_greedy),
        cmocka_unit_test(test_callback_order_and_stop),
        cmocka_unit_test(test_ragged_stops_match_single),
        cmocka_unit_test(test_eos_and_zero_tokens),
        cmocka_unit_test(test_sampled_batch_matches_single),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
