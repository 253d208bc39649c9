// Whole-file reads and read-only memory maps; errors name the path and the failing call's reason.
#include "base/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
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

struct mc_file_out {
    FILE *fp;
    char *path;
    char *tmp;
};

mc_status mc_file_out_open(const char *path, mc_file_out **out, mc_error *err) {
    *out = NULL;
    if (path == NULL || path[0] == '\0') {
        return mc_fail(err, MC_ERR_INVALID, "output path is empty");
    }
    mc_file_out *f = calloc(1, sizeof(*f));
    size_t plen = strlen(path);
    if (f == NULL || (f->path = strdup(path)) == NULL || (f->tmp = malloc(plen + 16)) == NULL) {
        mc_file_out_abort(f);
        return mc_fail(err, MC_ERR_NOMEM, "%s: out of memory", path);
    }
    memcpy(f->tmp, path, plen);
    memcpy(f->tmp + plen, ".tmp.XXXXXX", 12);
    int fd = mkstemp(f->tmp); // beside the target, so rename stays on one filesystem and is atomic
    if (fd < 0) {
        mc_status st = mc_fail(err, MC_ERR_IO, "%s: cannot create a temp file beside it: %s", path, strerror(errno));
        free(f->tmp);
        f->tmp = NULL;
        mc_file_out_abort(f);
        return st;
    }
    (void)fchmod(fd, 0644); // mkstemp makes 0600; outputs are meant to be read by others
    f->fp = fdopen(fd, "wb");
    if (f->fp == NULL) {
        mc_status st = mc_fail(err, MC_ERR_IO, "%s: cannot open the temp file: %s", path, strerror(errno));
        close(fd);
        mc_file_out_abort(f);
        return st;
    }
    *out = f;
    return MC_OK;
}

mc_status mc_file_out_write(mc_file_out *f, const void *data, size_t len, mc_error *err) {
    if (len > 0 && fwrite(data, 1, len, f->fp) != len) {
        return mc_fail(err, MC_ERR_IO, "%s: write failed: %s", f->path, strerror(errno));
    }
    return MC_OK;
}

mc_status mc_file_out_commit(mc_file_out *f, mc_error *err) {
    mc_status st = MC_OK;
    int rc = fclose(f->fp);
    f->fp = NULL;
    if (rc != 0) {
        st = mc_fail(err, MC_ERR_IO, "%s: write failed on close: %s", f->path, strerror(errno));
    } else if (rename(f->tmp, f->path) != 0) {
        st = mc_fail(err, MC_ERR_IO, "%s: cannot move the temp file into place: %s", f->path, strerror(errno));
    } else {
        free(f->tmp);
        f->tmp = NULL;
    }
    mc_file_out_abort(f);
    return st;
}

void mc_file_out_abort(mc_file_out *f) {
    if (f == NULL) {
        return;
    }
    if (f->fp != NULL) {
        fclose(f->fp);
    }
    if (f->tmp != NULL) {
        unlink(f->tmp);
    }
    free(f->tmp);
    free(f->path);
    free(f);
}

void mc_mapping_release(const void *p, size_t len) {
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t begin = ((uintptr_t)p + page - 1) / page * page, end = ((uintptr_t)p + len) / page * page;
    if (end > begin) {
        madvise((void *)begin, end - begin, MADV_DONTNEED);
    }
}
