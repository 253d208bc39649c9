// Loading bad checkpoints: a fixture model's files rewritten with one defect each (missing tensor, wrong shape,
// unsupported dtype, config that disagrees with the tensors, missing files) must fail with a one-line message
// naming the file or tensor, never crash, and leak nothing.
#include <cjson/cJSON.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "check.h"
#include "mambac.h"

static char g_src[1024]; // the fixture model folder
static char g_tmp[64];   // a scratch folder holding one mutated copy at a time

static int setup(void **unused) {
    char *p = mc_test_fixture("models/f32-tied");
    char probe[1100];
    snprintf(probe, sizeof(probe), "%s/model.safetensors", p != NULL ? p : "");
    if (p == NULL || access(probe, R_OK) != 0) {
        free(p);
        mc_test_skip("fixture models/f32-tied is absent (run tools/oracle)");
    }
    snprintf(g_src, sizeof(g_src), "%s", p);
    free(p);
    snprintf(g_tmp, sizeof(g_tmp), "/tmp/mc_load_XXXXXX");
    return mkdtemp(g_tmp) != NULL ? 0 : -1;
}

static void remove_copy(void) {
    const char *names[] = { "config.json", "model.safetensors" };
    for (size_t i = 0; i < 2; i++) {
        char p[256];
        snprintf(p, sizeof(p), "%s/%s", g_tmp, names[i]);
        unlink(p);
    }
}

static int teardown(void **unused) {
    remove_copy();
    rmdir(g_tmp);
    return 0;
}

static void write_file(const char *name, const void *data, size_t len) {
    char p[256];
    snprintf(p, sizeof(p), "%s/%s", g_tmp, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

static char *read_src(const char *name, size_t *len) {
    char p[1100];
    snprintf(p, sizeof(p), "%s/%s", g_src, name);
    FILE *f = fopen(p, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc(*len + 1);
    assert_int_equal(fread(buf, 1, *len, f), *len);
    buf[*len] = '\0';
    fclose(f);
    return buf;
}

typedef void (*mutate_fn)(cJSON *header, cJSON *config);

// Copies the fixture into g_tmp with its safetensors header and config.json passed through mutate.
static void make_copy(mutate_fn mutate) {
    size_t st_len, cfg_len;
    char *st = read_src("model.safetensors", &st_len);
    char *cfg_text = read_src("config.json", &cfg_len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) {
        hlen = (hlen << 8) | (unsigned char)st[i];
    }
    cJSON *header = cJSON_ParseWithLength(st + 8, (size_t)hlen);
    cJSON *cfg = cJSON_Parse(cfg_text);
    assert_non_null(header);
    assert_non_null(cfg);
    mutate(header, cfg);
    char *h = cJSON_PrintUnformatted(header);
    char *c = cJSON_Print(cfg);
    size_t nh = strlen(h), padded = (nh + 7) / 8 * 8;
    size_t data_len = st_len - 8 - (size_t)hlen;
    unsigned char *out = malloc(8 + padded + data_len);
    for (int i = 0; i < 8; i++) {
        out[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    }
    memcpy(out + 8, h, nh);
    memset(out + 8 + nh, ' ', padded - nh);
    memcpy(out + 8 + padded, st + 8 + hlen, data_len);
    write_file("model.safetensors", out, 8 + padded + data_len);
    write_file("config.json", c, strlen(c));
    free(out);
    free(h);
    free(c);
    cJSON_Delete(header);
    cJSON_Delete(cfg);
    free(st);
    free(cfg_text);
}

static void expect_load_error(mc_status code, const char *needle1, const char *needle2) {
    mc_model *m = NULL;
    mc_error err = { 0 };
    mc_status st = mc_model_load(g_tmp, NULL, &m, &err);
    if (st != code || strstr(err.msg, needle1) == NULL || (needle2 != NULL && strstr(err.msg, needle2) == NULL)) {
        print_error("got status %d '%s'; wanted %d with '%s' and '%s'\n", st, err.msg, code, needle1,
                    needle2 ? needle2 : "");
        fail();
    }
    assert_null(m);
    assert_null(strchr(err.msg, '\n'));
    remove_copy();
}

static void no_change(cJSON *h, cJSON *c) {
}

// Renamed rather than deleted: safetensors requires the entries to cover the whole data section.
static void drop_norm_f(cJSON *h, cJSON *c) {
    cJSON_AddItemToObject(h, "backbone.norm_f.weight_renamed", cJSON_DetachItemFromObject(h, "backbone.norm_f.weight"));
}

static void transpose_in_proj(cJSON *h, cJSON *c) {
    cJSON *shape = cJSON_GetObjectItem(cJSON_GetObjectItem(h, "backbone.layers.0.mixer.in_proj.weight"), "shape");
    double a = cJSON_GetArrayItem(shape, 0)->valuedouble, b = cJSON_GetArrayItem(shape, 1)->valuedouble;
    cJSON_SetNumberValue(cJSON_GetArrayItem(shape, 0), b);
    cJSON_SetNumberValue(cJSON_GetArrayItem(shape, 1), a);
}

static void int_dtype(cJSON *h, cJSON *c) {
    cJSON *t = cJSON_GetObjectItem(h, "backbone.layers.1.mixer.D");
    cJSON_ReplaceItemInObject(t, "dtype", cJSON_CreateString("I32"));
}

static void more_layers(cJSON *h, cJSON *c) {
    cJSON_ReplaceItemInObject(c, "num_hidden_layers", cJSON_CreateNumber(cJSON_GetObjectItem(c, "num_hidden_layers")->valuedouble + 1));
}

static void wider_state(cJSON *h, cJSON *c) {
    cJSON_ReplaceItemInObject(c, "state_size", cJSON_CreateNumber(cJSON_GetObjectItem(c, "state_size")->valuedouble + 1));
}

static void untie_without_head(cJSON *h, cJSON *c) {
    cJSON_ReplaceItemInObject(c, "tie_word_embeddings", cJSON_CreateFalse());
}

static void bias_without_tensors(cJSON *h, cJSON *c) {
    cJSON_ReplaceItemInObject(c, "use_bias", cJSON_CreateTrue());
}

static void test_copy_loads(void **unused) { // the harness itself: an unmutated copy loads
    make_copy(no_change);
    mc_model *m = NULL;
    mc_error err = { 0 };
    assert_int_equal(mc_model_load(g_tmp, NULL, &m, &err), MC_OK);
    mc_model_free(m);
    remove_copy();
}

static void test_defects(void **unused) {
    make_copy(drop_norm_f);
    expect_load_error(MC_ERR_FORMAT, "backbone.norm_f.weight", "missing");
    make_copy(transpose_in_proj);
    expect_load_error(MC_ERR_FORMAT, "backbone.layers.0.mixer.in_proj.weight", "shape");
    make_copy(int_dtype);
    expect_load_error(MC_ERR_UNSUPPORTED, "backbone.layers.1.mixer.D", "I32");
    make_copy(more_layers);
    expect_load_error(MC_ERR_FORMAT, "missing", NULL);
    make_copy(wider_state);
    expect_load_error(MC_ERR_FORMAT, "shape", NULL);
    make_copy(untie_without_head);
    expect_load_error(MC_ERR_FORMAT, "lm_head.weight", NULL);
    make_copy(bias_without_tensors);
    expect_load_error(MC_ERR_FORMAT, "in_proj.bias", NULL);
}

static void test_missing_files(void **unused) {
    write_file("config.json", "{\"model_type\":\"mamba\"}", 22);
    expect_load_error(MC_ERR_IO, g_tmp, "safetensors");
    size_t n;
    char *st = read_src("model.safetensors", &n);
    write_file("model.safetensors", st, n);
    free(st);
    char p[256];
    snprintf(p, sizeof(p), "%s/config.json", g_tmp);
    unlink(p);
    mc_model *m = NULL;
    mc_error err = { 0 };
    assert_int_not_equal(mc_model_load(g_tmp, NULL, &m, &err), MC_OK);
    assert_non_null(strstr(err.msg, g_tmp));
    remove_copy();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_copy_loads),
        cmocka_unit_test(test_defects),
        cmocka_unit_test(test_missing_files),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
