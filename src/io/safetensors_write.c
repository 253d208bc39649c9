// safetensors writer: header JSON then the tensors' bytes, laid out back to back as the format requires.
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/file.h"
#include "io/safetensors.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "mc_st_write writes host bytes: little-endian hosts only"
#endif

static char *build_header(const mc_st_entry *entries, int64_t n) {
    cJSON *h = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(h, "__metadata__");
    cJSON_AddStringToObject(meta, "format", "pt");
    int64_t offset = 0;
    for (int64_t i = 0; i < n; i++) {
        cJSON *t = cJSON_AddObjectToObject(h, entries[i].name);
        cJSON_AddStringToObject(t, "dtype", entries[i].dtype);
        cJSON *shape = cJSON_AddArrayToObject(t, "shape");
        for (int d = 0; d < entries[i].ndim; d++) {
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)entries[i].shape[d]));
        }
        cJSON *off = cJSON_AddArrayToObject(t, "data_offsets");
        cJSON_AddItemToArray(off, cJSON_CreateNumber((double)offset));
        offset += entries[i].nbytes;
        cJSON_AddItemToArray(off, cJSON_CreateNumber((double)offset));
    }
    char *text = cJSON_PrintUnformatted(h); // NULL if any allocation above failed
    cJSON_Delete(h);
    return text;
}

mc_status mc_st_write(const char *path, const mc_st_entry *entries, int64_t n, mc_error *err) {
    char *header = build_header(entries, n);
    if (header == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "%s: out of memory for the header", path);
    }
    size_t hlen = strlen(header), padded = (hlen + 7) / 8 * 8;
    unsigned char len_le[8];
    for (int i = 0; i < 8; i++) {
        len_le[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    }
    mc_file_out *f = NULL;
    mc_status st = mc_file_out_open(path, &f, err);
    if (st == MC_OK) {
        st = mc_file_out_write(f, len_le, 8, err);
    }
    if (st == MC_OK) {
        st = mc_file_out_write(f, header, hlen, err);
    }
    for (size_t i = hlen; st == MC_OK && i < padded; i++) {
        st = mc_file_out_write(f, " ", 1, err);
    }
    for (int64_t i = 0; st == MC_OK && i < n; i++) {
        st = mc_file_out_write(f, entries[i].data, (size_t)entries[i].nbytes, err);
    }
    free(header);
    if (st == MC_OK) {
        return mc_file_out_commit(f, err);
    }
    mc_file_out_abort(f);
    return st;
}
