// The device tests' shared context (tests/test_cuda_*.c): the CUDA backend's op table and one execution context,
// set up once per test program (skipping with a message where no device is usable), and the helpers that move
// buffers between host and device. Include after cmocka.h.
#ifndef MC_TESTS_DEV_CHECK_H
#define MC_TESTS_DEV_CHECK_H

#include <stdint.h>
#include <stdio.h>

#include "check.h"
#include "kernels/ops.h"

static const mc_ops *g_ops;
static mc_exec g_ex;
static mc_error g_err; // the context's error slot: failed ops leave their message here

// cmocka group setup: the CUDA op table and a context, or the program skips (exit 77) saying why.
static inline int dev_setup(void) {
    mc_error err = { 0 };
    g_ops = mc_ops_get(MC_BACKEND_CUDA, &err);
    if (g_ops == NULL || g_ops->exec_init(&g_ex, 1, &err) != MC_OK) {
        mc_test_skip("no CUDA device usable: %s", err.msg);
    }
    g_ex.err = &g_err;
    return 0;
}

static inline void dev_teardown(void) {
    g_ops->exec_free(&g_ex);
}

// A device buffer of bytes (at least 4), holding a copy of host when host is not NULL; freed by dev_free.
static inline void *dev_from(const void *host, int64_t bytes) {
    void *d = NULL;
    assert_int_equal(g_ops->alloc(&g_ex, &d, (size_t)(bytes > 0 ? bytes : 4)), MC_OK);
    if (bytes > 0 && host != NULL) {
        assert_int_equal(g_ops->upload(&g_ex, d, host, (size_t)bytes), MC_OK);
    }
    return d;
}

static inline void dev_to(void *host, const void *dev, int64_t bytes) {
    if (bytes > 0 && g_ops->download(&g_ex, host, dev, (size_t)bytes) != MC_OK) {
        print_error("download: %s\n", g_err.msg);
        fail();
    }
}

static inline void dev_free(void *d) {
    g_ops->free(&g_ex, d);
}

// Prints the worst max|got − ref| / max|ref| seen per class of op, for the record.
static inline void dev_print_worst(const char *const *classes, const double *worst, size_t n) {
    for (size_t i = 0; i < n; i++) {
        printf("worst max|got - ref| / max|ref|, %s: %.3g\n", classes[i], worst[i]);
    }
}

// The op returned MC_OK and the stream ran it without an error.
static inline void expect_ok(mc_status st, const char *what) {
    if (st != MC_OK || g_ops->sync(&g_ex) != MC_OK) {
        print_error("%s: %s\n", what, g_err.msg);
        fail();
    }
}

#endif
