// safetensors reader tests: a valid file reads back exactly; every malformed header, truncation and byte flip
// fails cleanly with a message naming the file (and tensor); sharded indexes resolve and reject bad shards.
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// cmocka.h needs setjmp.h and stdarg.h before it
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>
// clang-format on

#include "base/error.h"
#include "check.h"
#include "io/safetensors.h"

typedef mc_test_dir fixture;

static char *join(const fixture *f, const char *name) {
    size_t n = strlen(f->dir) + strlen(name) + 2;
    char *p = malloc(n);
    assert_non_null(p);
    snprintf(p, n, "%s/%s", f->dir, name);
    return p;
}

static void write_bytes(const char *path, const void *data, size_t len) {
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    if (len > 0) {
        assert_int_equal(fwrite(data, 1, len, fp), len);
    }
    assert_int_equal(fclose(fp), 0);
}

// Builds [u64 N][header padded with spaces to 8 + N = 0 mod 8][data] in memory (caller frees).
static unsigned char *build_st(const char *header, const void *data, size_t data_len, size_t *len) {
    size_t h = strlen(header);
    size_t n = (h + 7) / 8 * 8;
    *len = 8 + n + data_len;
    unsigned char *buf = malloc(*len + 1);
    assert_non_null(buf);
    for (int i = 0; i < 8; i++) {
        buf[i] = (unsigned char)((uint64_t)n >> (8 * i));
    }
    memcpy(buf + 8, header, h);
    memset(buf + 8 + h, ' ', n - h);
    if (data_len > 0) {
        memcpy(buf + 8 + n, data, data_len);
    }
    return buf;
}

// Writes a safetensors file named fname in the fixture folder; returns its path (owned).
static char *write_st(const fixture *f, const char *fname, const char *header, const void *data, size_t data_len) {
    size_t len = 0;
    unsigned char *buf = build_st(header, data, data_len, &len);
    char *path = join(f, fname);
    write_bytes(path, buf, len);
    free(buf);
    return path;
}

// The valid file: F32 [2,3], F16 [4], BF16 [2,2], I64 scalar, an empty F32 [0,5], plus __metadata__.
static const char valid_header[] = "{\"__metadata__\":{\"format\":\"pt\"},"
                                   "\"a.f32\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                                   "\"d.i64\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[40,48]},"
                                   "\"b.f16\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[24,32]},"
                                   "\"e.empty\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[48,48]},"
                                   "\"c.bf16\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[32,40]}}";

static void valid_data(unsigned char data[48]) {
    for (int i = 0; i < 48; i++) {
        data[i] = (unsigned char)(i * 7 + 3);
    }
}

static void check_tensor(const mc_st_set *set, const char *name, const char *dtype_name, int dtype, int ndim,
                         const int64_t *shape, int64_t numel, const unsigned char *want, int64_t nbytes) {
    const mc_st_tensor *t = mc_st_find(set, name);
    assert_non_null(t);
    assert_string_equal(t->name, name);
    assert_string_equal(t->dtype_name, dtype_name);
    assert_int_equal(t->dtype, dtype);
    assert_int_equal(t->ndim, ndim);
    for (int i = 0; i < ndim; i++) {
        assert_int_equal(t->shape[i], shape[i]);
    }
    assert_int_equal(t->numel, numel);
    assert_int_equal(t->nbytes, nbytes);
    if (nbytes > 0) {
        assert_memory_equal(t->data, want, (size_t)nbytes);
    }
    assert_int_equal(t->file_index, 0);
}

static void test_valid_file(void **state) {
    fixture *f = *state;
    unsigned char data[48];
    valid_data(data);
    char *path = write_st(f, "model.safetensors", valid_header, data, sizeof(data));
    mc_st_set *set = NULL;
    mc_error err = { 0 };
    assert_int_equal(mc_st_open(path, &set, &err), MC_OK);
    assert_int_equal(mc_st_count(set), 5);
    check_tensor(set, "a.f32", "F32", MC_DTYPE_F32, 2, (int64_t[]){ 2, 3 }, 6, data, 24);
    check_tensor(set, "b.f16", "F16", MC_DTYPE_F16, 1, (int64_t[]){ 4 }, 4, data + 24, 8);
    check_tensor(set, "c.bf16", "BF16", MC_DTYPE_BF16, 2, (int64_t[]){ 2, 2 }, 4, data + 32, 8);
    check_tensor(set, "d.i64", "I64", -1, 0, NULL, 1, data + 40, 8);
    check_tensor(set, "e.empty", "F32", MC_DTYPE_F32, 2, (int64_t[]){ 0, 5 }, 0, NULL, 0);
    // mc_st_at lists tensors in name order, whatever the header's key order.
    const char *order[] = { "a.f32", "b.f16", "c.bf16", "d.i64", "e.empty" };
    for (int64_t i = 0; i < 5; i++) {
        assert_string_equal(mc_st_at(set, i)->name, order[i]);
    }
    assert_null(mc_st_at(set, 5));
    assert_null(mc_st_at(set, -1));
    assert_null(mc_st_find(set, "__metadata__"));
    assert_null(mc_st_find(set, "a.f3"));
    assert_null(mc_st_find(set, "zzz"));
    assert_string_equal(mc_st_file_path(set, 0), path);
    assert_null(mc_st_file_path(set, 1));
    mc_st_close(set);
    mc_st_close(NULL);
    assert_int_equal(mc_st_count(NULL), 0);
    free(path);
}

static void test_no_tensors(void **state) {
    fixture *f = *state;
    char *path = write_st(f, "empty.safetensors", "{\"__metadata__\":{}}", NULL, 0);
    mc_st_set *set = NULL;
    mc_error err = { 0 };
    assert_int_equal(mc_st_open(path, &set, &err), MC_OK);
    assert_int_equal(mc_st_count(set), 0);
    assert_null(mc_st_find(set, "x"));
    mc_st_close(set);
    free(path);
}

// Opens path, expects status want and a message holding the path and every non-NULL needle.
static void expect_fail(const char *path, mc_status want, const char *needle1, const char *needle2) {
    mc_st_set *set = (mc_st_set *)&set; // must be reset to NULL on failure
    mc_error err = { 0 };
    mc_status st = mc_st_open(path, &set, &err);
    if (st != want || strstr(err.msg, path) == NULL || (needle1 != NULL && strstr(err.msg, needle1) == NULL) ||
        (needle2 != NULL && strstr(err.msg, needle2) == NULL)) {
        fail_msg("%s: got status %d \"%s\", want %d with \"%s\" and \"%s\"", path, st, err.msg, want,
                 needle1 ? needle1 : "", needle2 ? needle2 : "");
    }
    assert_null(set);
    assert_int_equal(err.code, want);
}

typedef struct bad_case {
    const char *header;
    size_t data_len;
    const char *needle1; // in the message besides the path (tensor name, problem)
    const char *needle2;
} bad_case;

#define T(dt, shape, off) "{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":" off "}"

static const bad_case bad_cases[] = {
    { "{\"w\":", 0, "not valid JSON", NULL },
    { "[1,2]", 0, "not a JSON object", NULL },
    { "{} x", 0, "after the JSON", NULL },
    { "{}\x01", 0, "after the JSON", NULL },
    { "{\"w\":5}", 0, "tensor w:", "not an object" },
    { "{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor w:", "dtype" },
    { "{\"w\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor w:", "dtype" },
    { "{\"w\":" T("F33", "[1]", "[0,4]") "}", 4, "tensor w:", "unknown dtype \"F33\"" },
    { "{\"w\":" T("f32", "[1]", "[0,4]") "}", 4, "tensor w:", "unknown dtype" },
    { "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "tensor w:", "shape" },
    { "{\"w\":" T("F32", "4", "[0,4]") "}", 4, "tensor w:", "shape" },
    { "{\"w\":" T("F32", "[-1]", "[0,4]") "}", 4, "tensor w:", "shape[0]" },
    { "{\"w\":" T("F32", "[1, 2.5]", "[0,4]") "}", 4, "tensor w:", "shape[1]" },
    { "{\"w\":" T("F32", "[\"1\"]", "[0,4]") "}", 4, "tensor w:", "shape[0]" },
    { "{\"w\":" T("F32", "[1e17]", "[0,4]") "}", 4, "tensor w:", "shape[0]" },
    { "{\"w\":" T("F32", "[1,1,1,1,1,1,1,1,1]", "[0,4]") "}", 4, "tensor w:", "9 dimensions" },
    { "{\"w\":" T("F32", "[9007199254740992,9007199254740992]", "[0,4]") "}", 4, "tensor w:", "overflows" },
    { "{\"w\":" T("F64", "[2147483648,2147483648,4]", "[0,4]") "}", 4, "tensor w:", "overflows" },
    { "{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "tensor w:", "data_offsets" },
    { "{\"w\":" T("F32", "[1]", "[0]") "}", 4, "tensor w:", "data_offsets" },
    { "{\"w\":" T("F32", "[1]", "[0,4,8]") "}", 4, "tensor w:", "data_offsets" },
    { "{\"w\":" T("F32", "[1]", "[-4,0]") "}", 4, "tensor w:", "data_offsets" },
    { "{\"w\":" T("F32", "[1]", "[0,4.5]") "}", 4, "tensor w:", "data_offsets" },
    { "{\"w\":" T("F32", "[1]", "[0,1e300]") "}", 4, "tensor w:", "data_offsets" },
    { "{\"w\":" T("F32", "[0]", "[4,0]") "}", 4, "tensor w:", "end before begin" },
    { "{\"w\":" T("F32", "[25]", "[0,100]") "}", 4, "tensor w:", "past the end" },
    { "{\"w\":" T("F32", "[2]", "[0,4]") "}", 4, "tensor w:", "expected 8" },
    { "{\"a\":" T("F32", "[2]", "[0,8]") ",\"b\":" T("F32", "[2]", "[4,12]") "}", 12, "tensor b:", "tensor a" },
    { "{\"a\":" T("F32", "[2]", "[0,8]") ",\"b\":" T("F32", "[1]", "[2,6]") "}", 8, "overlap", NULL },
    { "{\"a\":" T("F32", "[1]", "[0,4]") ",\"b\":" T("F32", "[1]", "[8,12]") "}", 12, "tensor b:", "gap" },
    { "{\"a\":" T("F32", "[1]", "[4,8]") "}", 8, "tensor a:", "gap" },
    { "{\"a\":" T("F32", "[1]", "[0,4]") "}", 8, "cover 4 bytes", NULL },
    { "{\"a\":" T("F32", "[1]", "[0,4]") ",\"a\":" T("F32", "[1]", "[4,8]") "}", 8, "tensor a:", "twice" },
    { "{\"a\\nb\":" T("F32", "[2]", "[0,4]") "}", 4, "tensor a\\x0ab:", NULL }, // names are escaped
};

static void test_malformed_headers(void **state) {
    fixture *f = *state;
    unsigned char data[128] = { 0 };
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        char name[32];
        snprintf(name, sizeof(name), "bad%02zu.safetensors", i);
        char *path = write_st(f, name, bad_cases[i].header, data, bad_cases[i].data_len);
        expect_fail(path, MC_ERR_FORMAT, bad_cases[i].needle1, bad_cases[i].needle2);
        free(path);
    }
}

static void write_len_prefixed(const char *path, uint64_t n, const char *rest, size_t rest_len) {
    unsigned char buf[64];
    for (int i = 0; i < 8; i++) {
        buf[i] = (unsigned char)(n >> (8 * i));
    }
    memcpy(buf + 8, rest, rest_len);
    write_bytes(path, buf, 8 + rest_len);
}

static void test_bad_length_prefix(void **state) {
    fixture *f = *state;
    char *path = join(f, "short.safetensors");
    write_bytes(path, "\x02\0\0\0\0", 5);
    expect_fail(path, MC_ERR_FORMAT, "5 bytes", "at least 8");
    write_bytes(path, "", 0);
    expect_fail(path, MC_ERR_FORMAT, "0 bytes", NULL);
    write_len_prefixed(path, 1000, "{}      ", 8);
    expect_fail(path, MC_ERR_FORMAT, "header length 1000", "past the end");
    write_len_prefixed(path, 200000000, "{}      ", 8);
    expect_fail(path, MC_ERR_FORMAT, "header length 200000000", "limit");
    write_len_prefixed(path, UINT64_MAX, "{}      ", 8);
    expect_fail(path, MC_ERR_FORMAT, "limit", NULL);
    write_len_prefixed(path, 0, "", 0);
    expect_fail(path, MC_ERR_FORMAT, "not valid JSON", NULL);
    write_len_prefixed(path, 8, "{}\0     ", 8); // a NUL inside the header
    expect_fail(path, MC_ERR_FORMAT, "after the JSON", NULL);
    free(path);
}

static void test_missing_file(void **state) {
    fixture *f = *state;
    char *path = join(f, "nope.safetensors");
    expect_fail(path, MC_ERR_IO, NULL, NULL);
    free(path);
    path = join(f, "nope.safetensors.index.json");
    expect_fail(path, MC_ERR_IO, NULL, NULL);
    free(path);
    mc_st_set *set = NULL;
    assert_int_equal(mc_st_open(NULL, &set, NULL), MC_ERR_INVALID); // err may be NULL
    assert_null(set);
}

// Every proper prefix of a valid file must fail (the tensors no longer tile the data) without crashing.
static void test_truncation(void **state) {
    fixture *f = *state;
    unsigned char data[48];
    valid_data(data);
    size_t len = 0;
    unsigned char *buf = build_st(valid_header, data, sizeof(data), &len);
    char *path = join(f, "cut.safetensors");
    for (size_t cut = 0; cut < len; cut++) {
        write_bytes(path, buf, cut);
        mc_st_set *set = NULL;
        mc_error err = { 0 };
        mc_status st = mc_st_open(path, &set, &err);
        if (st != MC_ERR_FORMAT || set != NULL || strstr(err.msg, path) == NULL) {
            fail_msg("cut at %zu of %zu: status %d \"%s\"", cut, len, st, err.msg);
        }
    }
    write_bytes(path, buf, len);
    mc_st_set *set = NULL;
    assert_int_equal(mc_st_open(path, &set, NULL), MC_OK);
    mc_st_close(set);
    free(path);
    free(buf);
}

static uint32_t lcg(uint64_t *s) {
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(*s >> 33);
}

// Random byte flips in the length prefix and header: any outcome but a crash, a leak or an out-of-file view.
static void test_byte_flips(void **state) {
    fixture *f = *state;
    unsigned char data[48];
    valid_data(data);
    size_t len = 0;
    unsigned char *buf = build_st(valid_header, data, sizeof(data), &len);
    size_t header_end = len - sizeof(data);
    char *path = join(f, "flip.safetensors");
    uint64_t seed = 20240601;
    int n_ok = 0;
    for (int iter = 0; iter < 400; iter++) {
        unsigned char *mut = malloc(len);
        assert_non_null(mut);
        memcpy(mut, buf, len);
        int n_flips = 1 + (int)(lcg(&seed) % 3);
        for (int k = 0; k < n_flips; k++) {
            size_t at = lcg(&seed) % header_end;
            if (lcg(&seed) % 2 == 0) {
                mut[at] ^= (unsigned char)(1u << (lcg(&seed) % 8));
            } else {
                mut[at] = (unsigned char)lcg(&seed);
            }
        }
        write_bytes(path, mut, len);
        mc_st_set *set = NULL;
        mc_error err = { 0 };
        mc_status st = mc_st_open(path, &set, &err);
        if (st == MC_OK) {
            n_ok++;
            for (int64_t i = 0; i < mc_st_count(set); i++) {
                const mc_st_tensor *t = mc_st_at(set, i);
                assert_true(t->nbytes >= 0 && t->nbytes <= (int64_t)len);
                volatile unsigned char sink = 0;
                for (int64_t b = 0; b < t->nbytes; b++) { // ASan would catch a view outside the mapping
                    sink ^= ((const unsigned char *)t->data)[b];
                }
                (void)sink;
            }
            mc_st_close(set);
        } else {
            assert_null(set);
            assert_non_null(strstr(err.msg, path));
        }
        free(mut);
    }
    assert_true(n_ok < 400); // most flips must be caught
    free(path);
    free(buf);
}

// ---- sharded checkpoints ----

static const unsigned char shard_data[16] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 };

#define SHARD1 "model-00001-of-00002.safetensors"
#define SHARD2 "model-00002-of-00002.safetensors"

static void write_shards(const fixture *f, const char *shard2_header) {
    free(write_st(f, SHARD1, "{\"a\":" T("F32", "[2]", "[0,8]") ",\"b\":" T("F32", "[2]", "[8,16]") "}", shard_data,
                  16));
    free(write_st(f, SHARD2, shard2_header, shard_data, 8));
}

static char *write_index(const fixture *f, const char *weight_map) {
    char *path = join(f, "model.safetensors.index.json");
    char text[1024];
    snprintf(text, sizeof(text), "{\"metadata\":{\"total_size\":24},\"weight_map\":%s}", weight_map);
    write_bytes(path, text, strlen(text));
    return path;
}

static const char shard2_ok[] = "{\"c\":" T("I64", "[1]", "[0,8]") "}";
static const char wm_ok[] = "{\"a\":\"" SHARD1 "\",\"c\":\"" SHARD2 "\",\"b\":\"" SHARD1 "\"}";

static void test_index_ok(void **state) {
    fixture *f = *state;
    write_shards(f, shard2_ok);
    char *path = write_index(f, wm_ok);
    mc_st_set *set = NULL;
    mc_error err = { 0 };
    assert_int_equal(mc_st_open(path, &set, &err), MC_OK);
    assert_int_equal(mc_st_count(set), 3);
    const mc_st_tensor *a = mc_st_find(set, "a"), *b = mc_st_find(set, "b"), *c = mc_st_find(set, "c");
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    assert_memory_equal(a->data, shard_data, 8);
    assert_memory_equal(b->data, shard_data + 8, 8);
    assert_memory_equal(c->data, shard_data, 8);
    assert_string_equal(c->dtype_name, "I64");
    assert_int_equal(a->file_index, b->file_index);
    assert_int_not_equal(a->file_index, c->file_index);
    const char *p = mc_st_file_path(set, c->file_index);
    assert_non_null(p);
    assert_non_null(strstr(p, SHARD2));
    assert_non_null(strstr(mc_st_file_path(set, a->file_index), SHARD1));
    assert_null(mc_st_file_path(set, 2)); // each shard opened once
    mc_st_close(set);
    free(path);
}

static void test_index_errors(void **state) {
    fixture *f = *state;
    write_shards(f, shard2_ok);
    char *path = NULL;

    // weight_map names a shard that is not there: the shard's open fails naming its path.
    path = write_index(f, "{\"a\":\"" SHARD1 "\",\"x\":\"model-00003-of-00003.safetensors\"}");
    expect_fail(path, MC_ERR_IO, "tensor x: its shard model-00003-of-00003.safetensors is missing", NULL);
    free(path);

    path = write_index(f, "{\"a\":\"" SHARD1 "\",\"x\":\"" SHARD1 "\"}");
    expect_fail(path, MC_ERR_FORMAT, "tensor x:", "not found in its shard " SHARD1);
    free(path);

    path = write_index(f, "{\"a\":\"" SHARD1 "\",\"c\":\"" SHARD1 "\",\"b\":\"" SHARD2 "\"}");
    expect_fail(path, MC_ERR_FORMAT, "not found in its shard", "it is in");
    free(path);

    path = write_index(f, "{\"a\":\"" SHARD1 "\",\"a\":\"" SHARD1 "\"}");
    expect_fail(path, MC_ERR_FORMAT, "tensor a:", "twice in weight_map");
    free(path);

    path = write_index(f, "{\"a\":\"../" SHARD1 "\"}");
    expect_fail(path, MC_ERR_FORMAT, "tensor a:", "not a plain file name");
    free(path);

    path = write_index(f, "{\"a\":\"sub/" SHARD1 "\"}");
    expect_fail(path, MC_ERR_FORMAT, "not a plain file name", NULL);
    free(path);

    path = write_index(f, "{\"a\":\"..\"}");
    expect_fail(path, MC_ERR_FORMAT, "not a plain file name", NULL);
    free(path);

    path = write_index(f, "{\"a\":\"\"}");
    expect_fail(path, MC_ERR_FORMAT, "not a plain file name", NULL);
    free(path);

    path = write_index(f, "{\"a\":3}");
    expect_fail(path, MC_ERR_FORMAT, "tensor a:", "not a string");
    free(path);

    path = write_index(f, "{}");
    expect_fail(path, MC_ERR_FORMAT, "weight_map is empty", NULL);
    free(path);

    path = write_index(f, "[]");
    expect_fail(path, MC_ERR_FORMAT, "weight_map", NULL);
    free(path);

    path = join(f, "model.safetensors.index.json");
    write_bytes(path, "{\"weight_map\":", 14);
    expect_fail(path, MC_ERR_FORMAT, "not valid JSON", NULL);
    write_bytes(path, "[1]", 3);
    expect_fail(path, MC_ERR_FORMAT, "weight_map is missing", NULL);
    free(path);

    // A tensor stored in two shards is ambiguous even if weight_map picks one.
    write_shards(f, "{\"a\":" T("I64", "[1]", "[0,8]") "}");
    path = write_index(f, "{\"a\":\"" SHARD1 "\",\"b\":\"" SHARD1 "\",\"c\":\"" SHARD2 "\"}");
    expect_fail(path, MC_ERR_FORMAT, "tensor a: present in both shards " SHARD1 " and " SHARD2, NULL);
    free(path);

    // A malformed shard reports the shard's own path.
    write_shards(f, "{\"c\":" T("I64", "[1]", "[0,9]") "}");
    path = write_index(f, wm_ok);
    mc_error err = { 0 };
    mc_st_set *set = NULL;
    assert_int_equal(mc_st_open(path, &set, &err), MC_ERR_FORMAT);
    assert_non_null(strstr(err.msg, SHARD2 ": tensor c:"));
    assert_null(set);
    free(path);
}

// Tensors a shard holds beyond weight_map are kept (documented in safetensors.c).
static void test_index_extra_tensor(void **state) {
    fixture *f = *state;
    write_shards(f, shard2_ok);
    char *path = write_index(f, "{\"a\":\"" SHARD1 "\",\"c\":\"" SHARD2 "\"}");
    mc_st_set *set = NULL;
    assert_int_equal(mc_st_open(path, &set, NULL), MC_OK);
    assert_int_equal(mc_st_count(set), 3);
    assert_non_null(mc_st_find(set, "b"));
    mc_st_close(set);
    free(path);
}

// mc_st_find over a realistic count: every name found, near-misses not.
static void test_many_tensors(void **state) {
    fixture *f = *state;
    int n = 2000;
    size_t cap = (size_t)n * 96 + 16;
    char *h = malloc(cap);
    assert_non_null(h);
    size_t o = (size_t)snprintf(h, cap, "{");
    for (int i = 0; i < n; i++) {
        o += (size_t)snprintf(h + o, cap - o, "%s\"backbone.layers.%d.w\":" T("U8", "[1]", "[%d,%d]"), i ? "," : "",
                              n - 1 - i, i, i + 1);
    }
    snprintf(h + o, cap - o, "}");
    unsigned char *data = malloc((size_t)n);
    assert_non_null(data);
    for (int i = 0; i < n; i++) {
        data[i] = (unsigned char)i;
    }
    char *path = write_st(f, "many.safetensors", h, data, (size_t)n);
    mc_st_set *set = NULL;
    mc_error err = { 0 };
    assert_int_equal(mc_st_open(path, &set, &err), MC_OK);
    assert_int_equal(mc_st_count(set), n);
    for (int i = 0; i < n; i++) {
        char name[64];
        snprintf(name, sizeof(name), "backbone.layers.%d.w", i);
        const mc_st_tensor *t = mc_st_find(set, name);
        assert_non_null(t);
        assert_int_equal(*(const unsigned char *)t->data, (unsigned char)(n - 1 - i));
        snprintf(name, sizeof(name), "backbone.layers.%d.x", i);
        assert_null(mc_st_find(set, name));
    }
    mc_st_close(set);
    free(path);
    free(data);
    free(h);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_valid_file, mc_test_dir_setup, mc_test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_no_tensors, mc_test_dir_setup, mc_test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_malformed_headers, mc_test_dir_setup, mc_test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_bad_length_prefix, mc_test_dir_setup, mc_test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_missing_file, mc_test_dir_setup, mc_test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_truncation, mc_test_dir_setup, mc_test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_byte_flips, mc_test_dir_setup, mc_test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_index_ok, mc_test_dir_setup, mc_test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_index_errors, mc_test_dir_setup, mc_test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_index_extra_tensor, mc_test_dir_setup, mc_test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_many_tensors, mc_test_dir_setup, mc_test_dir_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
