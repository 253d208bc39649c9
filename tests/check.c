// Test helpers: relative-to-scale comparison, fixture lookup and skipping.
#define _GNU_SOURCE // nftw
#include "check.h"

#include <ftw.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

double mc_rel_err(const float *got, const float *want, int64_t n) {
    double scale = 0, worst = 0;
    for (int64_t i = 0; i < n; i++) {
        scale = fmax(scale, fabs((double)want[i]));
        worst = fmax(worst, fabs((double)got[i] - (double)want[i]));
    }
    return scale > 0 ? worst / scale : worst;
}

bool mc_check_close(const float *got, const float *want, int64_t n, double tol, const char *label) {
    double scale = 0, worst = -1;
    int64_t wi = 0;
    for (int64_t i = 0; i < n; i++) {
        scale = fmax(scale, fabs((double)want[i]));
    }
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        if (isfinite(want[i]) && !isfinite(got[i])) {
            d = INFINITY;
        }
        if (d > worst) {
            worst = d;
            wi = i;
        }
    }
    if (n > 0 && worst > tol * scale) {
        fprintf(stderr, "%s: mismatch at %lld: got %.8g want %.8g (scale %.6g, err/scale %.3g = %.2fx tol %.1e)\n",
                label, (long long)wi, got[wi], want[wi], scale, worst / scale, worst / scale / tol, tol);
        return false;
    }
    return true;
}

uint32_t mc_test_rng_u32(mc_test_rng *r) {
    r->s = r->s * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(r->s >> 33);
}

float mc_test_rng_uniform(mc_test_rng *r, float lo, float hi) {
    return lo + (hi - lo) * ((float)mc_test_rng_u32(r) / 2147483648.0f);
}

void mc_test_fill(mc_test_rng *r, float *p, int64_t n, float lo, float hi) {
    for (int64_t i = 0; i < n; i++) {
        p[i] = mc_test_rng_uniform(r, lo, hi);
    }
}

mc_model *mc_test_load_model(const char *rel, mc_backend backend, bool *no_device) {
    char *path = mc_test_fixture(rel);
    if (path == NULL) {
        mc_test_skip("MC_FIXTURES is unset");
    }
    mc_load_opts opts;
    mc_load_opts_init(&opts);
    opts.backend = backend;
    opts.n_threads = 2;
    mc_model *m = NULL;
    mc_error err = { 0 };
    const mc_status st = mc_model_load(path, &opts, &m, &err);
    free(path);
    if (no_device != NULL) {
        *no_device = st == MC_ERR_UNSUPPORTED && backend == MC_BACKEND_CUDA;
        if (*no_device) {
            return NULL;
        }
    }
    if (st != MC_OK) {
        fprintf(stderr, "%s: %s\n", rel, err.msg);
    }
    return m;
}

void mc_test_train_batch(const mc_model *m, int64_t n, uint64_t seed, int32_t *ids, int32_t *labels) {
    const int64_t V = mc_model_config(m)->vocab_size;
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)((seed >> 33) % (uint64_t)V);
        labels[i] = i % 5 == 3 ? -100 : ids[i];
    }
}

char *mc_test_fixture(const char *rel) {
    const char *root = getenv("MC_FIXTURES");
    if (root == NULL) {
        return NULL;
    }
    size_t n = strlen(root) + strlen(rel) + 2;
    char *p = malloc(n);
    if (p != NULL) {
        snprintf(p, n, "%s/%s", root, rel);
    }
    return p;
}

char *mc_test_shared(const char *rel) {
    const char *root = getenv("MC_SHARED");
    if (root == NULL) {
        return NULL;
    }
    size_t n = strlen(root) + strlen(rel) + 2;
    char *p = malloc(n);
    if (p != NULL) {
        snprintf(p, n, "%s/%s", root, rel);
        if (access(p, R_OK) != 0) {
            free(p);
            p = NULL;
        }
    }
    return p;
}

void mc_test_skip(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stdout, "SKIP: ");
    vfprintf(stdout, fmt, ap);
    fprintf(stdout, "\n");
    va_end(ap);
    exit(77);
}

char *mc_test_read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = (len + 4096 + 1) * 2;
            char *nb = realloc(buf, cap);
            if (nb == NULL) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        size_t r = fread(buf + len, 1, 4096, f);
        len += r;
        if (r == 0) {
            break;
        }
    }
    fclose(f);
    buf[len] = '\0';
    return buf;
}

float *mc_test_read_npy(const char *path, int64_t *shape, int *ndim, int max_dims) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "%s: cannot open\n", path);
        return NULL;
    }
    unsigned char pre[10];
    char header[4096];
    float *data = NULL;
    if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6) != 0 || pre[6] != 1) {
        goto fail;
    }
    size_t hlen = (size_t)pre[8] | ((size_t)pre[9] << 8);
    if (hlen >= sizeof(header) || fread(header, 1, hlen, f) != hlen) {
        goto fail;
    }
    header[hlen] = '\0';
    if (strstr(header, "'<f4'") == NULL || strstr(header, "'fortran_order': False") == NULL) {
        goto fail;
    }
    const char *p = strstr(header, "'shape'");
    p = p != NULL ? strchr(p, '(') : NULL;
    int64_t numel = 1;
    *ndim = 0;
    while (p != NULL && *p != ')') {
        p++;
        while (*p == ' ' || *p == ',') {
            p++;
        }
        if (*p == ')') {
            break;
        }
        if (*ndim >= max_dims) {
            goto fail;
        }
        char *end;
        shape[*ndim] = strtoll(p, &end, 10);
        numel *= shape[(*ndim)++];
        p = end;
    }
    data = malloc((size_t)numel * sizeof(float) + 1);
    if (data == NULL || fread(data, sizeof(float), (size_t)numel, f) != (size_t)numel) {
        goto fail;
    }
    fclose(f);
    return data;
fail:
    fprintf(stderr, "%s: not a float32 .npy file this reader understands\n", path);
    free(data);
    fclose(f);
    return NULL;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int mc_test_dir_setup(void **state) {
    mc_test_dir *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        return -1;
    }
    snprintf(d->dir, sizeof(d->dir), "/tmp/mc_test_XXXXXX");
    if (mkdtemp(d->dir) == NULL) {
        free(d);
        return -1;
    }
    *state = d;
    return 0;
}

int mc_test_dir_teardown(void **state) {
    mc_test_dir *d = *state;
    nftw(d->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(d);
    return 0;
}
