// Whole-file reads and read-only memory maps, with errors that name the path.
#pragma once

#include "mambac.h"

// Reads all of path (at most max_bytes) into a NUL-terminated buffer owned by the caller (free()).
mc_status mc_file_read(const char *path, size_t max_bytes, char **data, size_t *len, mc_error *err);

typedef struct mc_mapping {
    const unsigned char *data; // NULL for an empty file
    size_t len;
} mc_mapping;

// Maps path read-only. Owned: mc_file_unmap.
mc_status mc_file_map(const char *path, mc_mapping *map, mc_error *err);
void mc_file_unmap(mc_mapping *map);

// Joins dir and name into a new string (free()); NULL on allocation failure.
char *mc_path_join(const char *dir, const char *name);
bool mc_path_is_dir(const char *path);
bool mc_path_is_file(const char *path);

// A file written through a temp file beside its target and renamed into place on commit, so a failed or
// interrupted write never leaves a partial file at path. Errors name path.
typedef struct mc_file_out mc_file_out;

mc_status mc_file_out_open(const char *path, mc_file_out **out, mc_error *err);
mc_status mc_file_out_write(mc_file_out *f, const void *data, size_t len, mc_error *err);
// Closes, renames into place and frees f (also on failure, after removing the temp file).
mc_status mc_file_out_commit(mc_file_out *f, mc_error *err);
// Removes the temp file and frees f; NULL is a no-op.
void mc_file_out_abort(mc_file_out *f);

// Tells the kernel the pages wholly inside [p, p + len) of a read-only mapping are no longer needed, so they stop
// counting toward resident memory (they are read from the file again if touched).
void mc_mapping_release(const void *p, size_t len);
