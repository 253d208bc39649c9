// Backend selection and the host-memory entries the host backends share.
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "kernels/cpu/cpu.h"
#include "kernels/ops.h"
#ifdef MAMBAC_HAVE_CUDA
#include "kernels/cuda/cuda.h"
#endif

static mc_ops cpu_table;
static pthread_once_t cpu_once = PTHREAD_ONCE_INIT;

static void cpu_table_init(void) {
    mc_ops_cpu_init(&cpu_table);
}

const mc_ops *mc_ops_get(mc_backend backend, mc_error *err) {
    switch (backend) {
        case MC_BACKEND_REF:
            return &mc_ops_ref;
        case MC_BACKEND_AUTO:
#ifdef MAMBAC_HAVE_CUDA
            if (mc_cuda_available()) {
                return mc_ops_cuda_get(err);
            }
#endif
            pthread_once(&cpu_once, cpu_table_init);
            return &cpu_table;
        case MC_BACKEND_CPU:
            pthread_once(&cpu_once, cpu_table_init);
            return &cpu_table;
        case MC_BACKEND_CUDA:
#ifdef MAMBAC_HAVE_CUDA
            return mc_ops_cuda_get(err);
#else
            mc_fail(err, MC_ERR_UNSUPPORTED, "backend cuda: this build has no CUDA support (nvcc was not found when "
                                             "it was configured; see -DMAMBAC_CUDA=ON)");
            return NULL;
#endif
    }
    mc_fail(err, MC_ERR_INVALID, "backend: unknown backend %d", (int)backend);
    return NULL;
}

mc_status mc_host_exec_init(mc_exec *ex, int n_threads, mc_error *err) {
    (void)err;
    memset(ex, 0, sizeof(*ex));
    ex->n_threads = n_threads > 0 ? n_threads : 1;
    return MC_OK;
}

void mc_host_exec_free(mc_exec *ex) {
    (void)ex;
}

mc_status mc_host_alloc(const mc_exec *ex, void **out, size_t bytes) {
    const size_t rounded = (bytes + 63) / 64 * 64; // aligned_alloc wants a multiple of the alignment
    *out = aligned_alloc(64, rounded > 0 ? rounded : 64);
    if (*out == NULL) {
        return mc_fail(ex != NULL ? ex->err : NULL, MC_ERR_NOMEM, "cannot allocate %zu bytes", bytes);
    }
    memset(*out, 0, rounded > 0 ? rounded : 64);
    return MC_OK;
}

void mc_host_free(const mc_exec *ex, void *p) {
    (void)ex;
    free(p);
}

mc_status mc_host_copy(const mc_exec *ex, void *dst, const void *src, size_t bytes) {
    (void)ex;
    if (bytes > 0 && dst != src) {
        memmove(dst, src, bytes);
    }
    return MC_OK;
}

mc_status mc_host_zero(const mc_exec *ex, void *dst, size_t bytes) {
    (void)ex;
    if (bytes > 0) {
        memset(dst, 0, bytes);
    }
    return MC_OK;
}

mc_status mc_host_sync(const mc_exec *ex) {
    (void)ex;
    return MC_OK;
}
