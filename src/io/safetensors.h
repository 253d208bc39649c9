// safetensors reader: maps one file, or an index.json and its shards, and lists named tensors as views into the
// mapping. Knows nothing about models.
#pragma once

#include "mambac.h"

#define MC_ST_MAX_DIMS 8

typedef struct mc_st_tensor {
    char *name;         // NUL-terminated, owned by the set
    char dtype_name[8]; // as written in the header ("F32", "BF16", "I64", ...)
    int dtype;          // an mc_dtype for F32/F16/BF16, else -1 (sizes still validated)
    int ndim;
    int64_t shape[MC_ST_MAX_DIMS];
    int64_t numel;
    const void *data; // into the mapping; not necessarily aligned beyond 1 byte
    int64_t nbytes;
    int file_index; // which shard it came from
} mc_st_tensor;

typedef struct mc_st_set mc_st_set;

// Opens a .safetensors file, or a *.safetensors.index.json (then every shard it names, relative to its folder).
// Checks: header length within the file, valid JSON, known dtypes, offsets within the data section, byte size ==
// numel * element size, no overlapping tensors, no duplicate names across shards, every index entry present in its
// shard. Owned: mc_st_close.
// A path ending in ".json" is read as an index. Tensors a shard holds but weight_map omits are kept. Errors:
// MC_ERR_IO (a file or shard missing or unreadable), MC_ERR_FORMAT (message: file, tensor, problem), MC_ERR_NOMEM.
mc_status mc_st_open(const char *path, mc_st_set **out, mc_error *err);
void mc_st_close(mc_st_set *set);
int64_t mc_st_count(const mc_st_set *set);
const mc_st_tensor *mc_st_at(const mc_st_set *set, int64_t i);          // in name order (strcmp); NULL out of range
const mc_st_tensor *mc_st_find(const mc_st_set *set, const char *name); // NULL when absent
const char *mc_st_file_path(const mc_st_set *set, int file_index);
// Writes "[d0, d1, ...]" (the first ndim entries of shape; "[]" for a scalar) into buf, cut to cap bytes.
void mc_st_shape_format(char *buf, size_t cap, const int64_t *shape, int ndim);

// One tensor to write: name, dtype as safetensors spells it ("F32", "BF16", "I8", ...), shape, and its bytes in
// little-endian order (nbytes must equal numel × element size).
typedef struct mc_st_entry {
    const char *name;
    const char *dtype;
    int ndim;
    int64_t shape[MC_ST_MAX_DIMS];
    const void *data;
    int64_t nbytes;
} mc_st_entry;

// Writes a .safetensors file (header with __metadata__ {"format": "pt"}, data 8-byte aligned, entries in the order
// given) through a temp file renamed into place. Errors name path.
mc_status mc_st_write(const char *path, const mc_st_entry *entries, int64_t n, mc_error *err);
