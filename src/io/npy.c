// NumPy .npy writer (format 1.0, '<f4', C order), through a temp file renamed into place so a failed write never
// leaves a partial file at the target. Reading .npy is left to numpy (tools/oracle).
#include "io/npy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/checked.h"
#include "base/error.h"
#include "base/file.h"

#define NPY_MAX_DIMS 32 // keeps the header far below format 1.0's 65535-byte limit
#define NPY_ALIGN    64
#define NPY_CHUNK    4096 // elements converted to little-endian bytes per write

// Builds the 10-byte preamble + dict header, padded with spaces and '\n' to a multiple of 64 (numpy's layout).
// buf must hold NPY_ALIGN * 16 bytes (NPY_MAX_DIMS dims of 20 digits fit); returns the total length.
static size_t npy_header(char *buf, const int64_t *shape, int ndim) {
    char dict[1024];
    size_t o = (size_t)snprintf(dict, sizeof(dict), "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    for (int i = 0; i < ndim; i++) {
        o += (size_t)snprintf(dict + o, sizeof(dict) - o, "%s%lld", i > 0 ? ", " : "", (long long)shape[i]);
    }
    o += (size_t)snprintf(dict + o, sizeof(dict) - o, "%s), }", ndim == 1 ? "," : "");
    size_t total = (10 + o + 1 + NPY_ALIGN - 1) / NPY_ALIGN * NPY_ALIGN; // +1 for the final '\n'
    size_t hlen = total - 10;
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (char)(hlen & 0xff);
    buf[9] = (char)(hlen >> 8);
    memcpy(buf + 10, dict, o);
    memset(buf + 10 + o, ' ', total - 10 - o - 1);
    buf[total - 1] = '\n';
    return total;
}

static mc_status npy_write_data(mc_file_out *fp, const float *data, int64_t numel, const char *path, mc_error *err) {
    unsigned char *bytes = malloc(NPY_CHUNK * 4);
    if (bytes == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "%s: cannot allocate a write buffer", path);
    }
    mc_status st = MC_OK;
    for (int64_t i = 0; i < numel && st == MC_OK; i += NPY_CHUNK) {
        int64_t n = numel - i < NPY_CHUNK ? numel - i : NPY_CHUNK;
        for (int64_t k = 0; k < n; k++) {
            uint32_t u;
            memcpy(&u, &data[i + k], 4);
            for (int b = 0; b < 4; b++) {
                bytes[k * 4 + b] = (unsigned char)(u >> (8 * b));
            }
        }
        st = mc_file_out_write(fp, bytes, (size_t)n * 4, err);
    }
    free(bytes);
    return st;
}

static mc_status npy_check_args(const char *path, const float *data, const int64_t *shape, int ndim, int64_t *numel,
                                mc_error *err) {
    if (path == NULL || path[0] == '\0') {
        return mc_fail(err, MC_ERR_INVALID, "npy: output path is empty");
    }
    if (ndim < 0 || ndim > NPY_MAX_DIMS || (ndim > 0 && shape == NULL)) {
        return mc_fail(err, MC_ERR_INVALID, "%s: ndim %d; expected 0..%d with a shape", path, ndim, NPY_MAX_DIMS);
    }
    int64_t n = 1, bytes = 0;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) {
            return mc_fail(err, MC_ERR_INVALID, "%s: shape[%d] is %lld; expected >= 0", path, i, (long long)shape[i]);
        }
        if (!mc_mul_i64(n, shape[i], &n)) {
            return mc_fail(err, MC_ERR_INVALID, "%s: element count overflows int64", path);
        }
    }
    if (!mc_mul_i64(n, 4, &bytes)) {
        return mc_fail(err, MC_ERR_INVALID, "%s: byte size overflows int64", path);
    }
    if (n > 0 && data == NULL) {
        return mc_fail(err, MC_ERR_INVALID, "%s: data is NULL for %lld elements", path, (long long)n);
    }
    *numel = n;
    return MC_OK;
}

mc_status mc_npy_write_f32(const char *path, const float *data, const int64_t *shape, int ndim, mc_error *err) {
    int64_t numel = 0;
    mc_status st = npy_check_args(path, data, shape, ndim, &numel, err);
    if (st != MC_OK) {
        return st;
    }
    mc_file_out *fp = NULL;
    st = mc_file_out_open(path, &fp, err);
    if (st == MC_OK) {
        char header[NPY_ALIGN * 16];
        size_t hlen = npy_header(header, shape, ndim);
        st = mc_file_out_write(fp, header, hlen, err);
    }
    if (st == MC_OK) {
        st = npy_write_data(fp, data, numel, path, err);
    }
    if (st == MC_OK) {
        return mc_file_out_commit(fp, err);
    }
    mc_file_out_abort(fp);
    return st;
}
