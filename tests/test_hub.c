// Hub cache lookup tests on a fake cache tree (refs/, snapshots/ with symlinks into blobs/): ORG/NAME, repo and
// snapshot folders, revisions by branch and commit id, the sole-snapshot fallback and every error message.
#define _GNU_SOURCE // nftw
#include <ftw.h>
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
#include "base/file.h"
#include "io/hub.h"

#define COMMIT1 "0123456789abcdef0123456789abcdef01234567"
#define COMMIT2 "fedcba9876543210fedcba9876543210fedcba98"

typedef struct fixture {
    char dir[64];
    char *root; // <dir>/hf/hub
    char *repo; // <root>/models--org--name
} fixture;

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    return remove(path);
}

static char *pathf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *pathf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *p = NULL;
    int n = vasprintf(&p, fmt, ap);
    va_end(ap);
    assert_true(n > 0);
    return p;
}

static void mkdir_p(const char *path) {
    char *p = strdup(path);
    assert_non_null(p);
    for (char *s = p + 1; *s; s++) {
        if (*s == '/') {
            *s = '\0';
            mkdir(p, 0755);
            *s = '/';
        }
    }
    mkdir(p, 0755);
    assert_true(mc_path_is_dir(path));
    free(p);
}

static void write_text(const char *path, const char *text) {
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    fputs(text, fp);
    assert_int_equal(fclose(fp), 0);
}

// A snapshot as huggingface_hub writes it: config.json a relative symlink to ../../blobs/<etag>.
static void add_snapshot(const fixture *f, const char *commit, const char *etag) {
    char *blobs = pathf("%s/blobs", f->repo);
    mkdir_p(blobs);
    char *blob = pathf("%s/%s", blobs, etag);
    write_text(blob, "{\"model_type\": \"mamba\"}");
    char *snap = pathf("%s/snapshots/%s", f->repo, commit);
    mkdir_p(snap);
    char *link = pathf("%s/config.json", snap);
    char *target = pathf("../../blobs/%s", etag);
    assert_int_equal(symlink(target, link), 0);
    free(target);
    free(link);
    free(snap);
    free(blob);
    free(blobs);
}

static void set_ref(const fixture *f, const char *name, const char *text) {
    char *refs = pathf("%s/refs", f->repo);
    mkdir_p(refs);
    char *ref = pathf("%s/%s", refs, name);
    write_text(ref, text);
    free(ref);
    free(refs);
}

static int setup(void **state) {
    fixture *f = calloc(1, sizeof(*f));
    if (f == NULL) {
        return -1;
    }
    snprintf(f->dir, sizeof(f->dir), "/tmp/mc_hub_XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    f->root = pathf("%s/hf/hub", f->dir);
    f->repo = pathf("%s/models--org--name", f->root);
    mkdir_p(f->repo);
    add_snapshot(f, COMMIT1, "aaaa1111");
    set_ref(f, "main", COMMIT1 "\n");
    char *home = pathf("%s/hf", f->dir);
    setenv("HF_HOME", home, 1);
    unsetenv("HF_HUB_CACHE");
    free(home);
    if (chdir(f->dir) != 0) { // relative specs must not meet folders of wherever the test runs
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    if (chdir("/") != 0) {
        return -1;
    }
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f->root);
    free(f->repo);
    free(f);
    return 0;
}

static void expect_dir(const char *spec, const char *revision, const char *want) {
    char *dir = NULL;
    mc_error err = { 0 };
    mc_status st = mc_hub_resolve(spec, revision, &dir, &err);
    if (st != MC_OK) {
        fail_msg("%s @ %s: %s", spec, revision ? revision : "(null)", err.msg);
    }
    assert_string_equal(dir, want);
    free(dir);
}

static void expect_fail(const char *spec, const char *revision, mc_status want, const char *n1, const char *n2) {
    char *dir = (char *)&dir; // must come back NULL
    mc_error err = { 0 };
    mc_status st = mc_hub_resolve(spec, revision, &dir, &err);
    if (st != want || strstr(err.msg, n1) == NULL || (n2 != NULL && strstr(err.msg, n2) == NULL)) {
        fail_msg("%s @ %s: got %d \"%s\", want %d with \"%s\" and \"%s\"", spec, revision ? revision : "(null)", st,
                 err.msg, want, n1, n2 ? n2 : "");
    }
    assert_null(dir);
}

static void test_cache_root(void **state) {
    fixture *f = *state;
    char *r = mc_hub_cache_root();
    assert_string_equal(r, f->root);
    free(r);
    setenv("HF_HUB_CACHE", "/x/hub-cache", 1);
    r = mc_hub_cache_root();
    assert_string_equal(r, "/x/hub-cache");
    free(r);
    unsetenv("HF_HUB_CACHE");
    char *home = strdup(getenv("HF_HOME"));
    assert_non_null(home);
    unsetenv("HF_HOME");
    char *old_home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
    setenv("HOME", "/home/u", 1);
    r = mc_hub_cache_root();
    assert_string_equal(r, "/home/u/.cache/huggingface/hub");
    free(r);
    unsetenv("HOME");
    assert_null(mc_hub_cache_root());
    expect_fail("org/name", NULL, MC_ERR_IO, "org/name: cannot locate the hub cache", NULL);
    if (old_home != NULL) {
        setenv("HOME", old_home, 1);
    }
    setenv("HF_HOME", home, 1);
    free(old_home);
    free(home);
}

static void test_resolve_forms(void **state) {
    fixture *f = *state;
    char *snap1 = pathf("%s/snapshots/" COMMIT1, f->repo);
    expect_dir("org/name", NULL, snap1);
    expect_dir("org/name", "main", snap1);
    expect_dir(f->repo, NULL, snap1);
    char *repo_slash = pathf("%s/", f->repo);
    expect_dir(repo_slash, NULL, snap1);
    expect_dir(snap1, NULL, snap1);
    expect_dir(snap1, "ignored-for-a-folder", snap1);
    // The resolved folder holds config.json through the blob symlink.
    char *dir = NULL;
    assert_int_equal(mc_hub_resolve("org/name", NULL, &dir, NULL), MC_OK);
    char *cfg = mc_path_join(dir, "config.json");
    assert_true(mc_path_is_file(cfg));
    free(cfg);
    free(dir);
    // HF_HUB_CACHE wins over HF_HOME.
    char *other = pathf("%s/other", f->dir);
    char *other_snap = pathf("%s/models--org--name/snapshots/" COMMIT2, other);
    mkdir_p(other_snap);
    char *other_ref = pathf("%s/models--org--name/refs", other);
    mkdir_p(other_ref);
    char *other_main = pathf("%s/main", other_ref);
    write_text(other_main, "  " COMMIT2 "\r\n");
    setenv("HF_HUB_CACHE", other, 1);
    expect_dir("org/name", NULL, other_snap);
    unsetenv("HF_HUB_CACHE");
    free(other_main);
    free(other_ref);
    free(other_snap);
    free(other);
    free(repo_slash);
    free(snap1);
}

static void test_plain_folder(void **state) {
    fixture *f = *state;
    char *plain = pathf("%s/plain", f->dir);
    mkdir_p(plain);
    char *cfg = pathf("%s/config.json", plain);
    write_text(cfg, "{}");
    expect_dir(plain, NULL, plain);
    free(cfg);
    // A folder without config.json or snapshots/ comes back as is: the caller names the file it misses.
    char *bare = pathf("%s/bare", f->dir);
    mkdir_p(bare);
    expect_dir(bare, NULL, bare);
    free(bare);
    free(plain);
}

static void test_revisions(void **state) {
    fixture *f = *state;
    add_snapshot(f, COMMIT2, "bbbb2222");
    set_ref(f, "v1", COMMIT2);
    char *snap1 = pathf("%s/snapshots/" COMMIT1, f->repo);
    char *snap2 = pathf("%s/snapshots/" COMMIT2, f->repo);
    expect_dir("org/name", NULL, snap1);
    expect_dir("org/name", COMMIT2, snap2);
    expect_dir("org/name", COMMIT1, snap1);
    expect_dir("org/name", "v1", snap2);
    expect_dir(f->repo, "v1", snap2);
    char *pr = pathf("%s/refs/pr", f->repo);
    mkdir_p(pr);
    set_ref(f, "pr/1", COMMIT2 "\n");
    expect_dir("org/name", "pr/1", snap2);
    free(pr);

    expect_fail("org/name", "v2", MC_ERR_IO, "revision v2 not in the cache", "refs/v2");
    expect_fail("org/name", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", MC_ERR_IO,
                "snapshots/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa is missing", NULL);
    expect_fail("org/name", "../refs/main", MC_ERR_INVALID, "revision \"../refs/main\"", NULL);
    expect_fail("org/name", "/etc/passwd", MC_ERR_INVALID, "revision", NULL);
    expect_fail("org/name", "", MC_ERR_INVALID, "revision", NULL);

    // Two snapshots and no refs/main: ambiguous.
    char *main_ref = pathf("%s/refs/main", f->repo);
    assert_int_equal(unlink(main_ref), 0);
    expect_fail("org/name", NULL, MC_ERR_IO, "no refs/main and 2 snapshots", f->repo);
    free(main_ref);
    free(snap2);
    free(snap1);
}

static void test_sole_snapshot(void **state) {
    fixture *f = *state;
    char *main_ref = pathf("%s/refs/main", f->repo);
    assert_int_equal(unlink(main_ref), 0);
    char *snap1 = pathf("%s/snapshots/" COMMIT1, f->repo);
    expect_dir("org/name", NULL, snap1);
    expect_dir(f->repo, "main", snap1);
    expect_fail("org/name", "v1", MC_ERR_IO, "revision v1 not in the cache", NULL); // only main falls back
    free(snap1);
    free(main_ref);
}

static void test_bad_refs(void **state) {
    fixture *f = *state;
    set_ref(f, "main", "not-a-commit\n");
    expect_fail("org/name", NULL, MC_ERR_FORMAT, "refs/main: holds \"not-a-commit\"", "40-hex");
    set_ref(f, "main", COMMIT1 "0");
    expect_fail("org/name", NULL, MC_ERR_FORMAT, "40-hex", NULL);
    set_ref(f, "main", "0123456789ABCDEF0123456789ABCDEF01234567");
    expect_fail("org/name", NULL, MC_ERR_FORMAT, "40-hex", NULL);
    set_ref(f, "main", "");
    expect_fail("org/name", NULL, MC_ERR_FORMAT, "holds \"\"", NULL);
    set_ref(f, "main", "\x01\x02\n");
    expect_fail("org/name", NULL, MC_ERR_FORMAT, "\\x01\\x02", NULL);
    // refs/main points at a commit whose snapshot is gone.
    set_ref(f, "main", COMMIT2);
    expect_fail("org/name", NULL, MC_ERR_IO, "revision main is commit " COMMIT2, "download it first");
}

static void test_not_found(void **state) {
    fixture *f = *state;
    char *want = pathf("org/missing: not found in the hub cache %s (looked for models--org--missing); download it "
                       "first, e.g. `huggingface-cli download org/missing`, or pass a folder",
                       f->root);
    char *dir = NULL;
    mc_error err = { 0 };
    assert_int_equal(mc_hub_resolve("org/missing", NULL, &dir, &err), MC_ERR_IO);
    assert_null(dir);
    assert_string_equal(err.msg, want);
    free(want);
    expect_fail("state-spaces/mamba-130m-hf", NULL, MC_ERR_IO, "looked for models--state-spaces--mamba-130m-hf",
                "huggingface-cli download state-spaces/mamba-130m-hf");
}

static void test_bad_specs(void **state) {
    fixture *f = *state;
    const char *bad[] = { "org/..", "../name", "org/../x", "a/b/c",   "org/", "/name",
                          "name",   "org//x",  "o rg/x",   "org/x\n", "..x",  "org/na\\me" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        expect_fail(bad[i], NULL, MC_ERR_INVALID, "not a hub repo id", "ORG/NAME");
    }
    expect_fail("", NULL, MC_ERR_INVALID, "empty", NULL);
    expect_fail(NULL, NULL, MC_ERR_INVALID, "empty", NULL);
    // A file is not a model folder.
    char *file = pathf("%s/config.json", f->dir);
    write_text(file, "{}");
    expect_fail(file, NULL, MC_ERR_INVALID, "is a file", file);
    free(file);
    // A repo folder without snapshots or refs is still a folder: returned as is.
    char *dir = NULL;
    assert_int_equal(mc_hub_resolve(f->root, NULL, &dir, NULL), MC_OK);
    assert_string_equal(dir, f->root);
    free(dir);
    // Repo folder with an empty snapshots/ and no refs.
    char *empty = pathf("%s/models--org--empty/snapshots", f->root);
    mkdir_p(empty);
    expect_fail("org/empty", NULL, MC_ERR_IO, "no refs/main and 0 snapshots", NULL);
    free(empty);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cache_root, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resolve_forms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plain_folder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_revisions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sole_snapshot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_refs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_found, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_specs, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
