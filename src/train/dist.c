// The collectives of data-parallel training over MPI, each a non-blocking MPI call polled until done or until the
// timeout, so a rank that died or hangs ends the job with a message instead of a silent hang. Large buffers go in
// chunks of 2^28 elements (MPI counts are int).
#include "train/dist.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/error.h"

#ifdef MAMBAC_HAVE_MPI
#include <mpi.h>
#endif

static int g_rank = 0, g_size = 1;
static bool g_mpi = false; // MPI initialised by mc_dist_init

int mc_dist_rank(void) {
    return g_rank;
}

int mc_dist_size(void) {
    return g_size;
}

// The launcher's world size from its environment (Open MPI, PMI, PMIx), or 1.
static int launched_size(void) {
    const char *const vars[] = { "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS" };
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
        const char *v = getenv(vars[i]);
        if (v != NULL && atoi(v) > 0) {
            return atoi(v);
        }
    }
    return 1;
}

mc_status mc_dist_init(int *rank, int *size, mc_error *err) {
    if (rank == NULL || size == NULL) {
        return mc_fail(err, MC_ERR_INVALID, "dist init: rank and size must be given");
    }
    *rank = 0;
    *size = 1;
    const int want = launched_size();
    if (want <= 1) {
        return MC_OK;
    }
#ifdef MAMBAC_HAVE_MPI
    int ok = 0;
    MPI_Initialized(&ok);
    if (!ok) {
        int provided = 0;
        if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
            return mc_fail(err, MC_ERR_IO, "dist: MPI_Init failed");
        }
        g_mpi = true;
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    *rank = g_rank;
    *size = g_size;
    return MC_OK;
#else
    return mc_fail(err, MC_ERR_UNSUPPORTED, "dist: launched as %d ranks, but this mambac was built without MPI "
                                            "(install libopenmpi-dev and rebuild)", want);
#endif
}

void mc_dist_finalize(void) {
#ifdef MAMBAC_HAVE_MPI
    if (g_mpi) {
        MPI_Finalize();
        g_mpi = false;
    }
#endif
    g_rank = 0;
    g_size = 1;
}

void mc_dist_abort(int code) {
#ifdef MAMBAC_HAVE_MPI
    if (g_size > 1) {
        MPI_Abort(MPI_COMM_WORLD, code);
    }
#endif
    (void)code;
}

#ifdef MAMBAC_HAVE_MPI
static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double timeout_s(void) {
    const char *v = getenv("MAMBAC_DIST_TIMEOUT");
    const double t = v != NULL ? atof(v) : 0;
    return t > 0 ? t : 600;
}

// Polls req until it completes, the timeout passes, or MPI reports an error.
static mc_status wait_for(MPI_Request *req, const char *what, int64_t n, mc_error *err) {
    const double deadline = now_s() + timeout_s();
    for (;;) {
        int done = 0;
        const int rc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) {
            char msg[MPI_MAX_ERROR_STRING];
            int len = 0;
            MPI_Error_string(rc, msg, &len);
            return mc_fail(err, MC_ERR_IO, "rank %d: %s of %lld elements failed: %.*s", g_rank, what, (long long)n,
                           len, msg);
        }
        if (done) {
            return MC_OK;
        }
        if (now_s() > deadline) {
            return mc_fail(err, MC_ERR_IO, "rank %d: %s of %lld elements did not complete in %.0f s: another rank "
                                           "died or hangs", g_rank, what, (long long)n, timeout_s());
        }
        struct timespec pause = { 0, 20000 };
        nanosleep(&pause, NULL);
    }
}

static mc_status allreduce(void *buf, int64_t n, MPI_Datatype type, size_t size, const char *what, mc_error *err) {
    const int64_t chunk = (int64_t)1 << 28;
    for (int64_t i = 0; i < n; i += chunk) {
        const int count = (int)(n - i < chunk ? n - i : chunk);
        MPI_Request req;
        if (MPI_Iallreduce(MPI_IN_PLACE, (char *)buf + (size_t)i * size, count, type, MPI_SUM, MPI_COMM_WORLD, &req) !=
            MPI_SUCCESS) {
            return mc_fail(err, MC_ERR_IO, "rank %d: %s could not start", g_rank, what);
        }
        mc_status st = wait_for(&req, what, count, err);
        if (st != MC_OK) {
            return st;
        }
    }
    return MC_OK;
}
#endif

mc_status mc_dist_allreduce_f32(float *buf, int64_t n, mc_error *err) {
#ifdef MAMBAC_HAVE_MPI
    if (g_size > 1) {
        return allreduce(buf, n, MPI_FLOAT, sizeof(float), "all-reduce", err);
    }
#endif
    (void)buf, (void)n, (void)err;
    return MC_OK;
}

mc_status mc_dist_allreduce_f64(double *buf, int64_t n, mc_error *err) {
#ifdef MAMBAC_HAVE_MPI
    if (g_size > 1) {
        return allreduce(buf, n, MPI_DOUBLE, sizeof(double), "all-reduce", err);
    }
#endif
    (void)buf, (void)n, (void)err;
    return MC_OK;
}

mc_status mc_dist_allreduce_i64(int64_t *buf, int64_t n, mc_error *err) {
#ifdef MAMBAC_HAVE_MPI
    if (g_size > 1) {
        return allreduce(buf, n, MPI_INT64_T, sizeof(int64_t), "all-reduce", err);
    }
#endif
    (void)buf, (void)n, (void)err;
    return MC_OK;
}

mc_status mc_dist_bcast_f32(float *buf, int64_t n, int root, mc_error *err) {
#ifdef MAMBAC_HAVE_MPI
    if (g_size > 1) {
        const int64_t chunk = (int64_t)1 << 28;
        for (int64_t i = 0; i < n; i += chunk) {
            const int count = (int)(n - i < chunk ? n - i : chunk);
            MPI_Request req;
            if (MPI_Ibcast(buf + i, count, MPI_FLOAT, root, MPI_COMM_WORLD, &req) != MPI_SUCCESS) {
                return mc_fail(err, MC_ERR_IO, "rank %d: broadcast could not start", g_rank);
            }
            mc_status st = wait_for(&req, "broadcast", count, err);
            if (st != MC_OK) {
                return st;
            }
        }
    }
#endif
    (void)buf, (void)n, (void)root, (void)err;
    return MC_OK;
}

mc_status mc_dist_barrier(mc_error *err) {
#ifdef MAMBAC_HAVE_MPI
    if (g_size > 1) {
        MPI_Request req;
        if (MPI_Ibarrier(MPI_COMM_WORLD, &req) != MPI_SUCCESS) {
            return mc_fail(err, MC_ERR_IO, "rank %d: barrier could not start", g_rank);
        }
        return wait_for(&req, "barrier", 0, err);
    }
#endif
    (void)err;
    return MC_OK;
}
