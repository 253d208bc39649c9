// Whole-file reads and read-only memory maps; errors name the path and the failing call's reason.
#include "base/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"

static mc_status open_regular(const char *path, int *fd_out, size_t *size_out, mc_error *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return mc_fail(err, MC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return mc_fail(err, MC_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return mc_fail(err, MC_ERR_IO, "%s: not a regular file", path);
    }
    *fd_out = fd;
    *size_out = (size_t)st.st_size;
    return MC_OK;
}

mc_status mc_file_read(const char *path, size_t max_bytes, char **data, size_t *len, mc_error *err) {
    *data = NULL;
    *len = 0;
    int fd = -1;
    size_t size = 0;
    mc_status st = open_regular(path, &fd, &size, err);
    if (st != MC_OK) {
        return st;
    }
    if (size > max_bytes) {
        close(fd);
        return mc_fail(err, MC_ERR_FORMAT, "%s: file is %zu bytes, more than the %zu allowed", path, size, max_bytes);
    }
    char *buf = malloc(size + 1);
    if (buf == NULL) {
        close(fd);
        return mc_fail(err, MC_ERR_NOMEM, "%s: cannot allocate %zu bytes", path, size + 1);
    }
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            int e = errno;
            free(buf);
            close(fd);
            return mc_fail(err, MC_ERR_IO, "%s: read failed: %s", path, r == 0 ? "unexpected end of file" : strerror(e));
        }
        got += (size_t)r;
    }
    close(fd);
    buf[size] = '\0';
    *data = buf;
    *len = size;
    return MC_OK;
}

mc_status mc_file_map(const char *path, mc_mapping *map, mc_error *err) {
    map->data = NULL;
    map->len = 0;
    int fd = -1;
    size_t size = 0;
    mc_status st = open_regular(path, &fd, &size, err);
    if (st != MC_OK) {
        return st;
    }
    if (size > 0) {
        void *p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            return mc_fail(err, MC_ERR_IO, "%s: cannot map: %s", path, strerror(e));
        }
        map->data = p;
        map->len = size;
    }
    close(fd);
    return MC_OK;
}

void mc_file_unmap(mc_mapping *map) {
    if (map != NULL && map->data != NULL) {
        munmap((void *)map->data, map->len);
        map->data = NULL;
        map->len = 0;
    }
}

char *mc_path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (p == NULL) {
        return NULL;
    }
    memcpy(p, dir, a);
    size_t o = a;
    if (a > 0 && dir[a - 1] != '/') {
        p[o++] = '/';
    }
    memcpy(p + o, name, b + 1);
    return p;
}

bool mc_path_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

bool mc_path_is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}
