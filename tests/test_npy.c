// .npy writer tests: exact header bytes, 64-byte alignment, little-endian data, and no file left behind on failure.
#include <dirent.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

// cmocka.h needs setjmp.h and stdarg.h before it
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>
// clang-format on

#include "base/error.h"
#include "check.h"
#include "base/file.h"
#include "io/npy.h"

typedef mc_test_dir fixture;

static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e = readdir(d); e != NULL; e = readdir(d)) {
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    }
    closedir(d);
    return n;
}

// Writes and reads back; checks magic, version, header text (exactly want_dict then spaces then '\n'), alignment
// and the data as little-endian float32.
static void write_and_check(const fixture *f, const int64_t *shape, int ndim, const float *data, int64_t numel,
                            const char *want_dict) {
    char *path = mc_path_join(f->dir, "out.npy");
    assert_non_null(path);
    mc_error err = { 0 };
    assert_int_equal(mc_npy_write_f32(path, data, shape, ndim, &err), MC_OK);
    char *buf = NULL;
    size_t len = 0;
    assert_int_equal(mc_file_read(path, 1 << 20, &buf, &len, &err), MC_OK);
    assert_true(len >= 10);
    assert_memory_equal(buf, "\x93NUMPY\x01\x00", 8);
    size_t hlen = (unsigned char)buf[8] | (size_t)(unsigned char)buf[9] << 8;
    size_t total = 10 + hlen;
    assert_int_equal(total % 64, 0);
    assert_int_equal(len, total + (size_t)numel * 4);
    size_t dlen = strlen(want_dict);
    assert_true(dlen < hlen);
    assert_memory_equal(buf + 10, want_dict, dlen);
    for (size_t i = 10 + dlen; i < total - 1; i++) {
        assert_int_equal(buf[i], ' ');
    }
    assert_int_equal(buf[total - 1], '\n');
    assert_true(total - 10 - dlen <= 64); // minimal padding
    for (int64_t i = 0; i < numel; i++) {
        const unsigned char *p = (const unsigned char *)buf + total + i * 4;
        uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        float v;
        memcpy(&v, &u, 4);
        assert_memory_equal(&v, &data[i], 4);
    }
    assert_int_equal(count_entries(f->dir), 1); // no temp file left
    free(buf);
    free(path);
}

static void test_shapes(void **state) {
    fixture *f = *state;
    float data[24];
    for (int i = 0; i < 24; i++) {
        data[i] = (float)i * 0.5f - 3.25f;
    }
    data[3] = -0.0f;
    write_and_check(f, (int64_t[]){ 2, 3, 4 }, 3, data, 24,
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4), }");
    write_and_check(f, (int64_t[]){ 5 }, 1, data, 5, "{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }");
    write_and_check(f, NULL, 0, data, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }");
    write_and_check(f, (int64_t[]){ 0, 7 }, 2, NULL, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 7), }");
    write_and_check(f, (int64_t[]){ 24, 1 }, 2, data, 24,
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (24, 1), }");
}

// The header of a 1-d array is 128 bytes (dict 57 + padding): check the whole file byte for byte once.
static void test_exact_bytes(void **state) {
    fixture *f = *state;
    char *path = mc_path_join(f->dir, "exact.npy");
    assert_non_null(path);
    float data[2] = { 1.0f, -2.0f };
    assert_int_equal(mc_npy_write_f32(path, data, (int64_t[]){ 2 }, 1, NULL), MC_OK);
    char want[136];
    const char dict[] = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
    assert_int_equal(sizeof(dict) - 1, 57);
    memcpy(want, "\x93NUMPY\x01\x00\x76\x00", 10); // 128 - 10 = 118 = 0x76
    memcpy(want + 10, dict, 57);
    memset(want + 67, ' ', 127 - 67);
    want[127] = '\n';
    memcpy(want + 128, "\x00\x00\x80\x3f\x00\x00\x00\xc0", 8);
    char *buf = NULL;
    size_t len = 0;
    assert_int_equal(mc_file_read(path, 1 << 20, &buf, &len, NULL), MC_OK);
    assert_int_equal(len, 136);
    assert_memory_equal(buf, want, 136);
    free(buf);
    free(path);
}

// A big array crosses the writer's 4096-element chunks.
static void test_large(void **state) {
    fixture *f = *state;
    int64_t n = 10007;
    float *data = malloc((size_t)n * sizeof(float));
    assert_non_null(data);
    for (int64_t i = 0; i < n; i++) {
        data[i] = (float)i / 7.0f;
    }
    write_and_check(f, (int64_t[]){ 10007 }, 1, data, 10007,
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (10007,), }");
    free(data);
}

static void expect_fail(const char *path, const float *data, const int64_t *shape, int ndim, mc_status want,
                        const char *needle) {
    mc_error err = { 0 };
    mc_status st = mc_npy_write_f32(path, data, shape, ndim, &err);
    if (st != want || (path != NULL && strstr(err.msg, path) == NULL) || strstr(err.msg, needle) == NULL) {
        fail_msg("got status %d \"%s\", want %d with \"%s\"", st, err.msg, want, needle);
    }
}

static void test_errors(void **state) {
    fixture *f = *state;
    float data[4] = { 0 };
    char *path = mc_path_join(f->dir, "bad.npy");
    assert_non_null(path);
    expect_fail(path, data, (int64_t[]){ -1 }, 1, MC_ERR_INVALID, "shape[0] is -1");
    expect_fail(path, data, (int64_t[]){ INT64_MAX, 2 }, 2, MC_ERR_INVALID, "overflows");
    expect_fail(path, data, (int64_t[]){ INT64_MAX / 2 }, 1, MC_ERR_INVALID, "overflows");
    expect_fail(path, data, NULL, 33, MC_ERR_INVALID, "ndim 33");
    expect_fail(path, data, NULL, -1, MC_ERR_INVALID, "ndim -1");
    expect_fail(path, NULL, (int64_t[]){ 2 }, 1, MC_ERR_INVALID, "data is NULL");
    expect_fail(NULL, data, (int64_t[]){ 2 }, 1, MC_ERR_INVALID, "path");
    assert_int_equal(count_entries(f->dir), 0);
    free(path);
    path = mc_path_join(f->dir, "missing/dir/out.npy");
    assert_non_null(path);
    expect_fail(path, data, (int64_t[]){ 2 }, 1, MC_ERR_IO, "temp file");
    free(path);
    // The target is a folder: the write succeeds into the temp file, the rename fails, nothing is left behind.
    path = mc_path_join(f->dir, "adir");
    assert_non_null(path);
    assert_int_equal(mkdir(path, 0755), 0);
    expect_fail(path, data, (int64_t[]){ 2 }, 1, MC_ERR_IO, "cannot move");
    assert_int_equal(count_entries(f->dir), 1);
    free(path);
}

// Overwriting an existing file of other content leaves exactly the new one (the rename replaces it whole).
static void test_overwrite(void **state) {
    fixture *f = *state;
    char *path = mc_path_join(f->dir, "out.npy");
    assert_non_null(path);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    fputs("old contents, much longer than the new file will be ............................................"
          "......................................................................................",
          fp);
    fclose(fp);
    free(path);
    float data[3] = { 1, 2, 3 };
    write_and_check(f, (int64_t[]){ 3 }, 1, data, 3, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_shapes, mc_test_dir_setup, mc_test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_exact_bytes, mc_test_dir_setup, mc_test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_large, mc_test_dir_setup, mc_test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_errors, mc_test_dir_setup, mc_test_dir_teardown),
        cmocka_unit_test_setup_teardown(test_overwrite, mc_test_dir_setup, mc_test_dir_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
