// The CUDA backend's table: device discovery, per-caller contexts (stream, cuBLAS handle, recorded decode steps),
// device memory, and the host-side nll. The compute kernels live in the other .cu files of this folder.
#include "kernels/cuda/cuda.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/common.cuh"

extern "C" {
#include "kernels/ref/ref.h"
}

bool mc_cuda_pdl_on() {
    static const bool on = [] {
        const char *v = getenv("MAMBAC_PDL");
        int dev = 0, major = 0;
        return !(v != nullptr && strcmp(v, "0") == 0) && cudaGetDevice(&dev) == cudaSuccess &&
               cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess && major >= 9;
    }();
    return on;
}

#define MC_CUBLAS_WORK_BYTES (32u << 20) // cuBLAS' recommended workspace for Hopper

static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
static bool probe_ok; // written once under probe_once, read-only afterwards
static char probe_msg[200];

// A device is usable when the runtime lists one and a kernel-free call on it (a tiny allocation) succeeds, which
// also proves the driver can run this build's code.
static void probe(void) {
    int n = 0;
    cudaError_t rc = cudaGetDeviceCount(&n);
    if (rc != cudaSuccess || n < 1) {
        snprintf(probe_msg, sizeof(probe_msg), "no CUDA device (%s)",
                 rc != cudaSuccess ? cudaGetErrorString(rc) : "the runtime lists none");
        cudaGetLastError(); // clear the error so later calls start clean
        return;
    }
    void *p = NULL;
    rc = cudaMalloc(&p, 256);
    if (rc != cudaSuccess) {
        snprintf(probe_msg, sizeof(probe_msg), "no usable CUDA device (%s)", cudaGetErrorString(rc));
        cudaGetLastError();
        return;
    }
    cudaFree(p);
    probe_ok = true;
}

extern "C" bool mc_cuda_available(void) {
    pthread_once(&probe_once, probe);
    return probe_ok;
}

// ---------------------------------------------------------------------------------------------------------------
// Contexts

static void exec_free(mc_exec *ex) {
    if (ex == NULL || ex->dev == NULL) {
        return;
    }
    mc_cuda_ctx *c = mc_cuda_ctx_of(ex);
    if (c->stream != NULL) {
        cudaStreamSynchronize(c->stream);
    }
    for (int i = 0; i < MC_CUDA_GRAPHS; i++) {
        if (c->graphs[i].exec != NULL) {
            cudaGraphExecDestroy(c->graphs[i].exec);
        }
    }
    if (c->blas != NULL) {
        cublasDestroy(c->blas);
    }
    cudaFree(c->blas_work);
    cudaFree(c->work);
    cudaFree(c->cvt);
    cudaFree(c->sample_dev);
    cudaFree(c->argmax_dev);
    for (int i = 0; i < c->n_kept; i++) {
        cudaFree(c->kept[i].copy);
    }
    free(c->kept);
    free(c->frozen);
    if (c->sample_host != NULL) {
        cudaFreeHost(c->sample_host);
    }
    if (c->stream != NULL) {
        cudaStreamDestroy(c->stream);
    }
    free(c);
    ex->dev = NULL;
}

static mc_status exec_init(mc_exec *ex, int n_threads, mc_error *err) {
    memset(ex, 0, sizeof(*ex));
    ex->n_threads = n_threads > 0 ? n_threads : 1;
    if (!mc_cuda_available()) {
        return mc_fail(err, MC_ERR_UNSUPPORTED, "backend cuda: %s", probe_msg);
    }
    mc_cuda_ctx *c = (mc_cuda_ctx *)calloc(1, sizeof(*c));
    if (c == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "cuda: out of memory for a context");
    }
    ex->dev = c;
    ex->err = err;
    mc_status st = mc_cuda_status(cudaGetDevice(&c->device), "get device", ex);
    if (st == MC_OK) {
        st = mc_cuda_status(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking), "create stream", ex);
    }
    if (st == MC_OK) {
        st = mc_cublas_status(cublasCreate(&c->blas), "create handle", ex);
    }
    if (st == MC_OK) {
        st = mc_cuda_status(cudaMalloc(&c->blas_work, MC_CUBLAS_WORK_BYTES), "cuBLAS workspace", ex);
    }
    if (st == MC_OK) {
        st = mc_cublas_status(cublasSetStream(c->blas, c->stream), "set stream", ex);
    }
    if (st == MC_OK) {
        st = mc_cublas_status(cublasSetWorkspace(c->blas, c->blas_work, MC_CUBLAS_WORK_BYTES), "set workspace", ex);
    }
    if (st == MC_OK) { // f32 products in f32 (no TF32): the fixture bound is 1e-4 of the largest logit
        st = mc_cublas_status(cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH), "set math mode", ex);
    }
    ex->err = NULL;
    if (st != MC_OK) {
        exec_free(ex);
    }
    return st;
}

// Grows one of the context's workspaces (*buf of *have bytes) to at least `bytes`.
static mc_status reserve(const mc_exec *ex, void **buf, size_t *have, size_t bytes) {
    mc_cuda_ctx *c = mc_cuda_ctx_of(ex);
    if (bytes <= *have) {
        return MC_OK;
    }
    if (c->capturing) {
        return mc_fail(mc_cuda_err(ex), MC_ERR_INTERNAL, "cuda: workspace of %zu bytes needed while recording a "
                                                         "graph", bytes);
    }
    mc_status st = mc_cuda_status(cudaStreamSynchronize(c->stream), "workspace sync", ex);
    if (st != MC_OK) {
        return st;
    }
    // A recorded graph holds the old workspace's address: drop every recording (the calls are recorded again).
    for (int i = 0; i < MC_CUDA_GRAPHS; i++) {
        if (c->graphs[i].exec != NULL) {
            cudaGraphExecDestroy(c->graphs[i].exec);
        }
        c->graphs[i] = (mc_cuda_graph){ 0, NULL, 0 };
    }
    cudaFree(*buf);
    *buf = NULL;
    *have = 0;
    const size_t rounded = (bytes + (1u << 20) - 1) / (1u << 20) * (1u << 20);
    st = mc_cuda_status(cudaMalloc(buf, rounded), "workspace", ex);
    if (st == MC_OK) {
        *have = rounded;
    }
    return st;
}

mc_status mc_cuda_work_reserve(const mc_exec *ex, size_t bytes) {
    mc_cuda_ctx *c = mc_cuda_ctx_of(ex);
    return reserve(ex, &c->work, &c->work_bytes, bytes);
}

mc_status mc_cuda_cvt_reserve(const mc_exec *ex, size_t bytes) {
    mc_cuda_ctx *c = mc_cuda_ctx_of(ex);
    return reserve(ex, &c->cvt, &c->cvt_bytes, bytes);
}

// ---------------------------------------------------------------------------------------------------------------
// Memory. Every copy runs on the context's stream, in order with the kernels; download waits for it, since the
// caller reads the host buffer next. Uploads come from pageable memory, which the runtime stages before returning,
// so the caller may reuse the source at once. copy and zero wait too: their buffers may belong to another
// context's state (mc_state_copy_seq reads one state on the other's stream), and the next call on that context
// (a reset, a forward) must not overtake them.

static mc_status mem_alloc(const mc_exec *ex, void **out, size_t bytes) {
    *out = NULL;
    void *p = NULL;
    mc_status st = mc_cuda_status(cudaMalloc(&p, bytes > 0 ? bytes : 256), "allocate", ex);
    if (st != MC_OK) {
        return mc_fail(mc_cuda_err(ex), st, "cuda: cannot allocate %zu bytes of device memory", bytes);
    }
    cudaStream_t s = ex != NULL && ex->dev != NULL ? mc_cuda_ctx_of(ex)->stream : 0;
    st = mc_cuda_status(cudaMemsetAsync(p, 0, bytes > 0 ? bytes : 256, s), "zero new memory", ex);
    if (st == MC_OK && s == 0) {
        st = mc_cuda_status(cudaDeviceSynchronize(), "zero new memory", ex);
    }
    if (st != MC_OK) {
        cudaFree(p);
        return st;
    }
    *out = p;
    return MC_OK;
}

// cudaFree waits for the device, so memory still read by queued work is never released early.
static void mem_free(const mc_exec *ex, void *p) {
    if (p != NULL) {
        cudaFree(p);
    }
}

static mc_status mem_copy_kind(const mc_exec *ex, void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                               const char *what) {
    if (bytes == 0) {
        return MC_OK;
    }
    mc_cuda_ctx *c = mc_cuda_ctx_of(ex);
    return mc_cuda_status(cudaMemcpyAsync(dst, src, bytes, kind, c->stream), what, ex);
}

static mc_status mem_upload(const mc_exec *ex, void *dst, const void *src, size_t bytes) {
    return mem_copy_kind(ex, dst, src, bytes, cudaMemcpyHostToDevice, "upload");
}

static mc_status mem_download(const mc_exec *ex, void *dst, const void *src, size_t bytes) {
    mc_status st = mem_copy_kind(ex, dst, src, bytes, cudaMemcpyDeviceToHost, "download");
    return st != MC_OK ? st : mc_cuda_status(cudaStreamSynchronize(mc_cuda_ctx_of(ex)->stream), "download", ex);
}

static mc_status mem_copy(const mc_exec *ex, void *dst, const void *src, size_t bytes) {
    mc_status st = mem_copy_kind(ex, dst, src, bytes, cudaMemcpyDeviceToDevice, "copy");
    return st != MC_OK ? st : mc_cuda_status(cudaStreamSynchronize(mc_cuda_ctx_of(ex)->stream), "copy", ex);
}

static mc_status mem_zero(const mc_exec *ex, void *dst, size_t bytes) {
    if (bytes == 0) {
        return MC_OK;
    }
    cudaStream_t s = mc_cuda_ctx_of(ex)->stream;
    mc_status st = mc_cuda_status(cudaMemsetAsync(dst, 0, bytes, s), "zero", ex);
    return st != MC_OK ? st : mc_cuda_status(cudaStreamSynchronize(s), "zero", ex);
}

// Waits for the context's work; a fault inside an earlier kernel surfaces here.
static mc_status mem_sync(const mc_exec *ex) {
    return mc_cuda_status(cudaStreamSynchronize(mc_cuda_ctx_of(ex)->stream), "synchronize", ex);
}

// ---------------------------------------------------------------------------------------------------------------
// Recorded steps: a key seen once runs directly (warming workspaces outside any capture); seen twice, its calls
// are captured into a graph, which is launched then and for every later call with that key.

static mc_status graph_begin(const mc_exec *ex, uint64_t key, bool *replayed) {
    mc_cuda_ctx *c = mc_cuda_ctx_of(ex);
    *replayed = false;
    c->use_clock++;
    int slot = -1, lru = 0;
    for (int i = 0; i < MC_CUDA_GRAPHS; i++) {
        if (c->graphs[i].last_use != 0 && c->graphs[i].key == key) {
            slot = i;
        }
        if (c->graphs[i].last_use < c->graphs[lru].last_use) {
            lru = i;
        }
    }
    if (slot < 0) { // first sighting: remember the key, run directly
        mc_cuda_graph *g = &c->graphs[lru];
        if (g->exec != NULL) {
            cudaGraphExecDestroy(g->exec);
        }
        *g = (mc_cuda_graph){ key, NULL, c->use_clock };
        return MC_OK;
    }
    mc_cuda_graph *g = &c->graphs[slot];
    g->last_use = c->use_clock;
    if (g->exec != NULL) {
        *replayed = true;
        return mc_cuda_status(cudaGraphLaunch(g->exec, c->stream), "graph launch", ex);
    }
    mc_status st = mc_cuda_status(cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal),
                                  "begin capture", ex);
    if (st == MC_OK) {
        c->capturing = true;
        c->capture_slot = slot;
    }
    return st;
}

// Ends what graph_begin started without a replay. ok = false (a call failed) drops a recording in progress.
static mc_status graph_end(const mc_exec *ex, bool ok) {
    mc_cuda_ctx *c = mc_cuda_ctx_of(ex);
    if (!c->capturing) {
        return MC_OK;
    }
    c->capturing = false;
    mc_cuda_graph *g = &c->graphs[c->capture_slot];
    cudaGraph_t graph = NULL;
    mc_status st = mc_cuda_status(cudaStreamEndCapture(c->stream, &graph), "end capture", ex);
    if (st == MC_OK && ok) {
        st = mc_cuda_status(cudaGraphInstantiate(&g->exec, graph, 0), "graph instantiate", ex);
    }
    if (graph != NULL) {
        cudaGraphDestroy(graph);
    }
    if (st == MC_OK && ok) {
        st = mc_cuda_status(cudaGraphLaunch(g->exec, c->stream), "graph launch", ex);
    }
    if (st != MC_OK || !ok) { // forget the key: the next call starts over directly
        if (g->exec != NULL) {
            cudaGraphExecDestroy(g->exec);
        }
        *g = (mc_cuda_graph){ 0, NULL, 0 };
    }
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// The loss reads host logits (its contract), so it is the reference row function on the host.

static mc_status nll_op(const mc_exec *ex, double *out, const float *logits, int64_t T, int64_t V,
                        const int32_t *targets) {
    for (int64_t t = 0; t < T; t++) {
        out[t] = mc_ref_nll_row(logits + t * V, V, targets[t]);
    }
    return MC_OK;
}

static pthread_once_t table_once = PTHREAD_ONCE_INIT;
static mc_ops table; // filled once under table_once, read-only afterwards

static void table_init(void) {
    memset(&table, 0, sizeof(table));
    table.name = "cuda";
    table.backend = MC_BACKEND_CUDA;
    table.host_memory = false;
    table.exec_init = exec_init;
    table.exec_free = exec_free;
    table.alloc = mem_alloc;
    table.free = mem_free;
    table.upload = mem_upload;
    table.download = mem_download;
    table.copy = mem_copy;
    table.zero = mem_zero;
    table.sync = mem_sync;
    table.graph_begin = graph_begin;
    table.graph_end = graph_end;
    table.matmul = mc_cuda_matmul;
    table.matmul_add = mc_cuda_matmul_add;
    table.freeze = mc_cuda_freeze;
    table.embed = mc_cuda_embed;
    table.rmsnorm = mc_cuda_rmsnorm;
    table.conv1d = mc_cuda_conv1d;
    table.selective_scan = mc_cuda_selective_scan;
    table.conv1d_step = mc_cuda_conv1d_step;
    table.selective_scan_step = mc_cuda_selective_scan_step;
    table.selective_scan_step_dt = mc_cuda_selective_scan_step_dt;
    table.nll = nll_op;
    table.axpby = mc_cuda_axpby;
    table.mul_acc = mc_cuda_mul_acc;
    table.dropout = mc_cuda_dropout;
    table.sumsq = mc_cuda_sumsq;
    table.adamw = mc_cuda_adamw;
    table.neg_exp = mc_cuda_neg_exp;
    table.sample = mc_cuda_sample;
    table.matmul_dx = mc_cuda_matmul_dx;
    table.matmul_dw = mc_cuda_matmul_dw;
    table.matmul_bwd = mc_cuda_matmul_bwd;
    table.embed_bwd = mc_cuda_embed_bwd;
    table.rmsnorm_bwd = mc_cuda_rmsnorm_bwd;
    table.cross_entropy = mc_cuda_cross_entropy;
    table.conv1d_bwd = mc_cuda_conv1d_bwd;
    table.selective_scan_bwd = mc_cuda_selective_scan_bwd;
    table.scan_keep_floats = mc_cuda_scan_keep_floats;
    table.selective_scan_keep = mc_cuda_selective_scan_keep;
    table.selective_scan_bwd_kept = mc_cuda_selective_scan_bwd_kept;
}

extern "C" const mc_ops *mc_ops_cuda_get(mc_error *err) {
    if (!mc_cuda_available()) {
        mc_fail(err, MC_ERR_UNSUPPORTED, "backend cuda: %s", probe_msg);
        return NULL;
    }
    pthread_once(&table_once, table_init);
    return &table;
}
