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
