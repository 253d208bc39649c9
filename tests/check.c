// Test helpers: relative-to-scale comparison, fixture lookup and skipping.
#include "check.h"

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
