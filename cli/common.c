// Flag scanning and value parsing shared by the commands, model/tokenizer opening, and error printing.
// Only public API calls here; what each command does is in its own file.
#include "common.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void cli_flags_init(cli_flags *f, const char *cmd, const char *usage, int argc, char **argv) {
    *f = (cli_flags){ .cmd = cmd, .usage = usage, .argc = argc, .argv = argv, .i = 0 };
}

bool cli_flags_next(cli_flags *f) {
    f->i++;
    if (f->i >= f->argc) {
        return false;
    }
    const char *a = f->argv[f->i];
    const char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
    size_t n = eq != NULL ? (size_t)(eq - a) : strlen(a);
    if (n >= sizeof(f->name)) {
        n = sizeof(f->name) - 1; // too long for any known flag: stays unknown
    }
    memcpy(f->name, a, n);
    f->name[n] = '\0';
    f->inline_value = eq != NULL ? eq + 1 : NULL;
    return true;
}

bool cli_flag_is(const cli_flags *f, const char *short_name, const char *long_name) {
    if (short_name != NULL && f->inline_value == NULL && strcmp(f->name, short_name) == 0) {
        return true;
    }
    return long_name != NULL && strcmp(f->name, long_name) == 0;
}

static void print_usage(const char *cmd, const char *usage) {
    fprintf(stderr, "%s\n(see mambac %s --help)\n", usage, cmd);
}

int cli_flag_unknown(const cli_flags *f) {
    const char *a = f->argv[f->i];
    if (f->name[0] != '-') {
        fprintf(stderr, "mambac %s: unexpected argument '%s'\n", f->cmd, a);
    } else if (f->inline_value != NULL) {
        fprintf(stderr, "mambac %s: unknown flag or flag without a value: '%s'\n", f->cmd, a);
    } else {
        fprintf(stderr, "mambac %s: unknown flag '%s'\n", f->cmd, a);
    }
    print_usage(f->cmd, f->usage);
    return CLI_USAGE;
}

int cli_missing(const char *cmd, const char *usage, const char *what) {
    fprintf(stderr, "mambac %s: %s\n", cmd, what);
    print_usage(cmd, usage);
    return CLI_USAGE;
}

int cli_flag_value(cli_flags *f, const char **value) {
    if (f->inline_value != NULL) {
        *value = f->inline_value;
        return CLI_OK;
    }
    if (f->i + 1 >= f->argc) {
        fprintf(stderr, "mambac %s: %s needs a value\n", f->cmd, f->name);
        print_usage(f->cmd, f->usage);
        return CLI_USAGE;
    }
    f->i++;
    *value = f->argv[f->i];
    return CLI_OK;
}

int cli_flag_bad(const cli_flags *f, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "mambac %s: %s: ", f->cmd, f->name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return CLI_USAGE;
}

// Whole-string integer parse; false on junk, emptiness or overflow.
static bool parse_i64(const char *s, int64_t *out) {
    char *end = NULL;
    errno = 0;
    while (*s == ' ') {
        s++;
    }
    long long v = strtoll(s, &end, 10);
    while (end != NULL && *end == ' ') {
        end++;
    }
    if (end == s || *end != '\0' || errno == ERANGE) {
        return false;
    }
    *out = (int64_t)v;
    return true;
}

int cli_flag_i64(cli_flags *f, int64_t lo, int64_t hi, int64_t *out) {
    const char *v = NULL;
    int rc = cli_flag_value(f, &v);
    if (rc != CLI_OK) {
        return rc;
    }
    int64_t x = 0;
    if (!parse_i64(v, &x)) {
        return cli_flag_bad(f, "'%s' is not an integer (expected %lld..%lld)", v, (long long)lo, (long long)hi);
    }
    if (x < lo || x > hi) {
        return cli_flag_bad(f, "%lld is out of range, must be in %lld..%lld", (long long)x, (long long)lo,
                            (long long)hi);
    }
    *out = x;
    return CLI_OK;
}

int cli_flag_u64(cli_flags *f, uint64_t *out) {
    const char *v = NULL;
    int rc = cli_flag_value(f, &v);
    if (rc != CLI_OK) {
        return rc;
    }
    char *end = NULL;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (end == v || *end != '\0' || errno == ERANGE || v[0] == '-') {
        return cli_flag_bad(f, "'%s' is not an unsigned integer (expected 0..%llu)", v, (unsigned long long)UINT64_MAX);
    }
    *out = (uint64_t)x;
    return CLI_OK;
}

int cli_flag_f64(cli_flags *f, double *out) {
    const char *v = NULL;
    int rc = cli_flag_value(f, &v);
    if (rc != CLI_OK) {
        return rc;
    }
    char *end = NULL;
    errno = 0;
    double x = strtod(v, &end);
    if (end == v || *end != '\0' || errno == ERANGE || !(x == x) || x - x != 0) { // junk, overflow, nan, inf
        return cli_flag_bad(f, "'%s' is not a finite number", v);
    }
    *out = x;
    return CLI_OK;
}

int cli_flag_ids(cli_flags *f, int32_t **ids, int64_t *n_ids) {
    const char *v = NULL;
    int rc = cli_flag_value(f, &v);
    if (rc != CLI_OK) {
        return rc;
    }
    *ids = NULL;
    *n_ids = 0;
    int64_t cap = 1;
    for (const char *p = v; *p; p++) {
        cap += *p == ',';
    }
    int32_t *out = malloc((size_t)cap * sizeof(int32_t));
    if (out == NULL) {
        return cli_fail(f->cmd, "out of memory");
    }
    int64_t n = 0;
    const char *p = v;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
        char item[32];
        int64_t x = 0;
        if (len >= sizeof(item) || (memcpy(item, p, len), item[len] = '\0', !parse_i64(item, &x))) {
            free(out);
            if (len == 0 && n == 0 && comma == NULL) {
                return cli_flag_bad(f, "empty list, need at least one token id like 1,2,3");
            }
            return cli_flag_bad(f, "item %lld ('%.*s') is not a token id", (long long)(n + 1),
                                (int)(len < 40 ? len : 40), p);
        }
        if (x < 0 || x > INT32_MAX) {
            free(out);
            return cli_flag_bad(f, "token id %lld (item %lld) is out of range, must be in 0..%d", (long long)x,
                                (long long)(n + 1), INT32_MAX);
        }
        out[n++] = (int32_t)x;
        if (comma == NULL) {
            break;
        }
        p = comma + 1;
    }
    *ids = out;
    *n_ids = n;
    return CLI_OK;
}

int cli_print_help(const char *usage, const char *help) {
    printf("%s\n\n%s", usage, help);
    return CLI_HELP;
}

int cli_fail(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "mambac %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return CLI_ERR;
}

int cli_fail_err(const char *cmd, const mc_error *err) {
    return cli_fail(cmd, "%s", err->msg[0] != '\0' ? err->msg : mc_status_name(err->code));
}

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// Index of value in names [n], or -1.
static int pick_name(const char *value, const char *const *names, int n) {
    for (int i = 0; i < n; i++) {
        if (strcmp(value, names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

int cli_load_flag(cli_flags *f, mc_load_opts *opts, bool *matched) {
    static const char *const backends[] = { "auto", "ref", "cpu", "cuda" };
    static const mc_backend backend_ids[] = { MC_BACKEND_AUTO, MC_BACKEND_REF, MC_BACKEND_CPU, MC_BACKEND_CUDA };
    static const char *const weights[] = { "stored", "f32", "f16", "bf16", "int8" };
    static const char *const precisions[] = { "f32", "tf32", "bf16" }; // in mc_precision's order
    static const mc_weight_dtype weight_ids[] = { MC_WEIGHTS_AS_STORED, MC_WEIGHTS_F32, MC_WEIGHTS_F16, MC_WEIGHTS_BF16,
                                                  MC_WEIGHTS_INT8 };
    const char *v = NULL;
    int rc = CLI_OK;
    *matched = true;
    if (cli_flag_is(f, NULL, "--revision")) {
        rc = cli_flag_value(f, &opts->revision);
    } else if (cli_flag_is(f, NULL, "--lora")) {
        rc = cli_flag_value(f, &opts->lora);
    } else if (cli_flag_is(f, "-t", "--threads")) {
        int64_t n = 0;
        rc = cli_flag_i64(f, 1, 4096, &n);
        opts->n_threads = (int)n;
    } else if (cli_flag_is(f, NULL, "--backend")) {
        rc = cli_flag_value(f, &v);
        int k = rc == CLI_OK ? pick_name(v, backends, 4) : 0;
        rc = k < 0 ? cli_flag_bad(f, "'%s' is not a backend (auto, ref, cpu or cuda)", v) : rc;
        opts->backend = k >= 0 ? backend_ids[k] : opts->backend;
    } else if (cli_flag_is(f, NULL, "--dtype")) {
        rc = cli_flag_value(f, &v);
        int k = rc == CLI_OK ? pick_name(v, weights, 5) : 0;
        rc = k < 0 ? cli_flag_bad(f, "'%s' is not a weight dtype (stored, f32, f16, bf16 or int8)", v) : rc;
        opts->weight_dtype = k >= 0 ? weight_ids[k] : opts->weight_dtype;
    } else if (cli_flag_is(f, NULL, "--precision")) {
        rc = cli_flag_value(f, &v);
        int k = rc == CLI_OK ? pick_name(v, precisions, 3) : 0;
        rc = k < 0 ? cli_flag_bad(f, "'%s' is not f32, tf32 or bf16", v) : rc;
        opts->precision = k >= 0 ? (mc_precision)k : opts->precision;
    } else {
        *matched = false;
    }
    return rc;
}

int cli_open_model(const char *cmd, const char *path, const mc_load_opts *opts, mc_model **model, double *seconds) {
    mc_error err = { 0 };
    double t0 = cli_now();
    if (mc_model_load(path, opts, model, &err) != MC_OK) {
        return cli_fail_err(cmd, &err);
    }
    if (seconds != NULL) {
        *seconds = cli_now() - t0;
    }
    return CLI_OK;
}

int cli_open_tokenizer(const char *cmd, const char *tok_path, const char *model_path, const char *revision,
                       mc_tokenizer **tok) {
    mc_error err = { 0 };
    *tok = NULL;
    if (tok_path != NULL) {
        return mc_tokenizer_load(tok_path, tok, &err) == MC_OK ? CLI_OK : cli_fail_err(cmd, &err);
    }
    char *dir = NULL;
    if (mc_model_resolve_dir(model_path, revision, &dir, &err) != MC_OK) {
        return cli_fail_err(cmd, &err);
    }
    size_t n = strlen(dir) + sizeof("/tokenizer.json");
    char *path = malloc(n);
    if (path == NULL) {
        free(dir);
        return cli_fail(cmd, "out of memory");
    }
    snprintf(path, n, "%s/tokenizer.json", dir);
    int rc = CLI_OK;
    if (access(path, R_OK) != 0) {
        rc = cli_fail(cmd, "%s: no tokenizer.json in the model folder; pass --tokenizer FILE", dir);
    } else if (mc_tokenizer_load(path, tok, &err) != MC_OK) {
        rc = cli_fail_err(cmd, &err);
    }
    free(path);
    free(dir);
    return rc;
}

int cli_check_ids(const char *cmd, const char *what, const int32_t *ids, int64_t n, int64_t n_vocab) {
    for (int64_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= n_vocab) {
            return cli_fail(cmd, "%s: token id %d at position %lld is outside the vocabulary [0, %lld)", what, ids[i],
                            (long long)i, (long long)n_vocab);
        }
    }
    return CLI_OK;
}

// Reads all of fp (named name in messages) into a NUL-terminated buffer.
static int read_stream(const char *cmd, FILE *fp, const char *name, char **data, size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf != NULL) {
        if (n + 1 >= cap) {
            char *bigger = realloc(buf, cap * 2);
            if (bigger == NULL) {
                break;
            }
            buf = bigger;
            cap *= 2;
        }
        errno = 0;
        size_t got = fread(buf + n, 1, cap - n - 1, fp);
        const int read_errno = errno;
        n += got;
        if (got == 0) {
            if (ferror(fp)) { // e.g. a folder given as a file: say so (EISDIR)
                free(buf);
                return cli_fail(cmd, "%s: read error: %s", name, strerror(read_errno != 0 ? read_errno : EIO));
            }
            buf[n] = '\0';
            *data = buf;
            *len = n;
            return CLI_OK;
        }
    }
    free(buf);
    return cli_fail(cmd, "%s: out of memory after %zu bytes", name, n);
}

int cli_read_stdin(const char *cmd, char **data, size_t *len) {
    return read_stream(cmd, stdin, "stdin", data, len);
}

int cli_read_file(const char *cmd, const char *path, char **data, size_t *len) {
    FILE *fp = fopen(path, "rb");
    if (fp == NULL) {
        return cli_fail(cmd, "%s: cannot open: %s", path, strerror(errno));
    }
    int rc = read_stream(cmd, fp, path, data, len);
    fclose(fp);
    return rc;
}

void cli_print_ids(const int32_t *ids, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        printf(i == 0 ? "%d" : ",%d", ids[i]);
    }
    putchar('\n');
}

void cli_write(const char *bytes, size_t len) {
    fwrite(bytes, 1, len, stdout);
}

// The model folder used when -m is not given: $MAMBAC_MODEL, else mambac's own model in the source tree this binary
// was built from, else where `cmake --install` put it. NULL when none exists.
const char *cli_default_model(void) {
    const char *env = getenv("MAMBAC_MODEL");
    if (env != NULL && env[0] != '\0') {
        return env;
    }
    static const char *const dirs[] = { MAMBAC_SOURCE_MODELS "/" MAMBAC_DEFAULT_MODEL,
                                        MAMBAC_INSTALL_MODELS "/" MAMBAC_DEFAULT_MODEL };
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        char cfg[4096];
        snprintf(cfg, sizeof(cfg), "%s/config.json", dirs[i]);
        if (access(cfg, R_OK) == 0) {
            return dirs[i];
        }
    }
    return NULL;
}

int cli_need_model(const char *cmd, const char *usage, const char **model) {
    if (*model == NULL) {
        *model = cli_default_model();
    }
    if (*model == NULL) {
        return cli_missing(cmd, usage, "-m MODEL is required: no default model found ($MAMBAC_MODEL, "
                                       MAMBAC_SOURCE_MODELS "/" MAMBAC_DEFAULT_MODEL ", " MAMBAC_INSTALL_MODELS
                                       "/" MAMBAC_DEFAULT_MODEL ")");
    }
    return CLI_OK;
}

// Copies from_dir/tokenizer.json into to_dir when it exists (a model folder travels with its tokenizer).
int cli_copy_tokenizer(const char *cmd, const char *from_dir, const char *to_dir) {
    char src[4096], dst[4096];
    snprintf(src, sizeof(src), "%s/tokenizer.json", from_dir);
    snprintf(dst, sizeof(dst), "%s/tokenizer.json", to_dir);
    char *data = NULL;
    size_t len = 0;
    FILE *probe = fopen(src, "rb");
    if (probe == NULL) {
        return CLI_OK; // nothing to copy
    }
    fclose(probe);
    int rc = cli_read_file(cmd, src, &data, &len);
    FILE *out = rc == CLI_OK ? fopen(dst, "wb") : NULL;
    if (rc == CLI_OK && (out == NULL || fwrite(data, 1, len, out) != len)) {
        rc = cli_fail(cmd, "%s: cannot write", dst);
    }
    if (out != NULL && fclose(out) != 0 && rc == CLI_OK) {
        rc = cli_fail(cmd, "%s: cannot write", dst);
    }
    free(data);
    return rc;
}

int cli_ids_same_length(const char *cmd, const int64_t *n_ids, int64_t n_seq) {
    for (int64_t i = 1; i < n_seq; i++) {
        if (n_ids[i] != n_ids[0]) {
            return cli_fail(cmd, "--ids %lld has %lld tokens but --ids 1 has %lld: all sequences of a batch must have "
                                 "the same length",
                            (long long)(i + 1), (long long)n_ids[i], (long long)n_ids[0]);
        }
    }
    return CLI_OK;
}
