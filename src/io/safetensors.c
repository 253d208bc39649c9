// safetensors reader (spec §11.1, §11.2): validates headers and lists tensors as views into mmapped files. What the
// tensors mean, and dtype conversion, is left to the model loader.
#include "io/safetensors.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/checked.h"
#include "base/error.h"
#include "base/file.h"

#define ST_MAX_HEADER 100000000LL           // the reference reader's limit (spec §11.1)
#define ST_MAX_INT    9007199254740992.0    // 2^53: above it a JSON double no longer holds every integer
#define ST_MAX_INDEX  (64u * 1024u * 1024u) // an index.json of a few thousand entries is well below 1 MB
#define ST_NAME_ESC   96                    // escaped tensor or shard name in a message

struct mc_st_set {
    mc_st_tensor *tensors; // sorted by name (strcmp), so mc_st_find is a bsearch and mc_st_at is deterministic
    int64_t n_tensors;
    int64_t cap_tensors;
    char **paths;     // [n_files] owned
    mc_mapping *maps; // [n_files]
    int n_files;
};

typedef struct st_dtype_info {
    const char *name;
    int64_t size;
    int dtype;
} st_dtype_info;

static const st_dtype_info st_dtypes[] = {
    { "BOOL", 1, -1 },
    { "U8", 1, -1 },
    { "I8", 1, -1 },
    { "F8_E4M3", 1, -1 },
    { "F8_E5M2", 1, -1 },
    { "I16", 2, -1 },
    { "U16", 2, -1 },
    { "F16", 2, MC_DTYPE_F16 },
    { "BF16", 2, MC_DTYPE_BF16 },
    { "I32", 4, -1 },
    { "U32", 4, -1 },
    { "F32", 4, MC_DTYPE_F32 },
    { "F64", 8, -1 },
    { "I64", 8, -1 },
    { "U64", 8, -1 },
};

static const st_dtype_info *st_dtype_lookup(const char *name) {
    for (size_t i = 0; i < sizeof(st_dtypes) / sizeof(st_dtypes[0]); i++) {
        if (strcmp(st_dtypes[i].name, name) == 0) {
            return &st_dtypes[i];
        }
    }
    return NULL;
}

static void st_esc(char *out, size_t cap, const char *s) {
    mc_escape(out, cap, s, strlen(s));
}

static uint64_t st_load_u64_le(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

// A JSON number that is a whole number in [0, 2^53]; doubles beyond that skip integers, so offsets would be guesses.
static bool st_json_int(const cJSON *item, int64_t *out) {
    if (!cJSON_IsNumber(item)) {
        return false;
    }
    double d = item->valuedouble;
    if (!(d >= 0.0 && d <= ST_MAX_INT) || d != (double)(int64_t)d) {
        return false;
    }
    *out = (int64_t)d;
    return true;
}

static mc_status st_grow(mc_st_set *set, const char *path, mc_error *err) {
    if (set->n_tensors < set->cap_tensors) {
        return MC_OK;
    }
    int64_t cap = set->cap_tensors == 0 ? 64 : set->cap_tensors * 2;
    mc_st_tensor *t = realloc(set->tensors, (size_t)cap * sizeof(*t));
    if (t == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "%s: cannot allocate the table of %lld tensors", path, (long long)cap);
    }
    set->tensors = t;
    set->cap_tensors = cap;
    return MC_OK;
}

// Reads one header entry into t (the caller sets the name once it passes). data_len: size of the data section.
static mc_status st_parse_entry(const cJSON *entry, const char *path, const char *ename, const unsigned char *data_base,
                                int64_t data_len, mc_st_tensor *t, mc_error *err) {
    if (!cJSON_IsObject(entry)) {
        return mc_fail(err, MC_ERR_FORMAT,
                       "%s: tensor %s: entry is not an object; expected {dtype, shape, data_offsets}", path, ename);
    }
    const cJSON *jdt = cJSON_GetObjectItemCaseSensitive(entry, "dtype");
    const cJSON *jshape = cJSON_GetObjectItemCaseSensitive(entry, "shape");
    const cJSON *joff = cJSON_GetObjectItemCaseSensitive(entry, "data_offsets");
    if (!cJSON_IsString(jdt)) {
        return mc_fail(err, MC_ERR_FORMAT, "%s: tensor %s: dtype is missing or not a string", path, ename);
    }
    const st_dtype_info *dt = st_dtype_lookup(jdt->valuestring);
    if (dt == NULL) {
        char esc[32];
        st_esc(esc, sizeof(esc), jdt->valuestring);
        return mc_fail(err, MC_ERR_FORMAT, "%s: tensor %s: unknown dtype \"%s\"; expected F32, F16, BF16, I64, ...",
                       path, ename, esc);
    }
    snprintf(t->dtype_name, sizeof(t->dtype_name), "%s", dt->name);
    t->dtype = dt->dtype;
    if (!cJSON_IsArray(jshape)) {
        return mc_fail(err, MC_ERR_FORMAT, "%s: tensor %s: shape is missing or not an array", path, ename);
    }
    int ndim = cJSON_GetArraySize(jshape);
    if (ndim > MC_ST_MAX_DIMS) {
        return mc_fail(err, MC_ERR_FORMAT, "%s: tensor %s: shape has %d dimensions; at most %d supported", path, ename,
                       ndim, MC_ST_MAX_DIMS);
    }
    t->ndim = ndim;
    int64_t numel = 1; // shape [] is a scalar
    int d = 0;
    for (const cJSON *dim = jshape->child; dim != NULL; dim = dim->next, d++) {
        if (!st_json_int(dim, &t->shape[d])) {
            return mc_fail(err, MC_ERR_FORMAT, "%s: tensor %s: shape[%d] is not an integer in [0, 2^53]", path, ename,
                           d);
        }
        if (!mc_mul_i64(numel, t->shape[d], &numel)) {
            return mc_fail(err, MC_ERR_FORMAT, "%s: tensor %s: element count overflows int64", path, ename);
        }
    }
    t->numel = numel;
    if (!mc_mul_i64(numel, dt->size, &t->nbytes)) {
        return mc_fail(err, MC_ERR_FORMAT, "%s: tensor %s: byte size overflows int64", path, ename);
    }
    int64_t begin = 0, end = 0;
    if (!cJSON_IsArray(joff) || cJSON_GetArraySize(joff) != 2 || !st_json_int(joff->child, &begin) ||
        !st_json_int(joff->child->next, &end)) {
        return mc_fail(err, MC_ERR_FORMAT,
                       "%s: tensor %s: data_offsets is missing or not [begin, end] integers in [0, 2^53]", path, ename);
    }
    if (end < begin) {
        return mc_fail(err, MC_ERR_FORMAT, "%s: tensor %s: data_offsets [%lld, %lld] end before begin", path, ename,
                       (long long)begin, (long long)end);
    }
    if (end > data_len) {
        return mc_fail(err, MC_ERR_FORMAT,
                       "%s: tensor %s: data_offsets [%lld, %lld] past the end of the %lld-byte data section", path,
                       ename, (long long)begin, (long long)end, (long long)data_len);
    }
    if (end - begin != t->nbytes) {
        return mc_fail(err, MC_ERR_FORMAT,
                       "%s: tensor %s: data_offsets span %lld bytes; expected %lld (%lld elements of %s)", path, ename,
                       (long long)(end - begin), (long long)t->nbytes, (long long)numel, dt->name);
    }
    t->data = data_base + begin;
    return MC_OK;
}

typedef struct st_range {
    int64_t begin, end;
    const char *name;
} st_range;

static int st_range_cmp(const void *a, const void *b) {
    const st_range *x = a, *y = b;
    if (x->begin != y->begin) {
        return x->begin < y->begin ? -1 : 1;
    }
    return (x->end > y->end) - (x->end < y->end);
}

// Spec §11.1: sorted by begin, the tensors tile the data section exactly (as the reference reader checks).
static mc_status st_check_tiling(const mc_st_tensor *ts, int64_t n, const unsigned char *data_base, int64_t data_len,
                                 const char *path, mc_error *err) {
    st_range *r = malloc((size_t)(n > 0 ? n : 1) * sizeof(*r));
    if (r == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "%s: cannot allocate %lld tensor ranges", path, (long long)n);
    }
    for (int64_t i = 0; i < n; i++) {
        r[i].begin = (const unsigned char *)ts[i].data - data_base;
        r[i].end = r[i].begin + ts[i].nbytes;
        r[i].name = ts[i].name;
    }
    qsort(r, (size_t)n, sizeof(*r), st_range_cmp);
    mc_status st = MC_OK;
    int64_t pos = 0;
    char a[ST_NAME_ESC], b[ST_NAME_ESC];
    for (int64_t i = 0; i < n && st == MC_OK; i++) {
        if (r[i].begin < pos) {
            st_esc(a, sizeof(a), r[i].name);
            st_esc(b, sizeof(b), r[i - 1].name);
            st =
                mc_fail(err, MC_ERR_FORMAT, "%s: tensor %s: data_offsets [%lld, %lld] overlap tensor %s (ends at %lld)",
                        path, a, (long long)r[i].begin, (long long)r[i].end, b, (long long)pos);
        } else if (r[i].begin > pos) {
            st_esc(a, sizeof(a), r[i].name);
            st = mc_fail(err, MC_ERR_FORMAT,
                         "%s: tensor %s: begins at %lld, leaving a gap after byte %lld; expected tensors to tile the "
                         "data section",
                         path, a, (long long)r[i].begin, (long long)pos);
        }
        pos = r[i].end;
    }
    if (st == MC_OK && pos != data_len) {
        st = mc_fail(err, MC_ERR_FORMAT,
                     "%s: tensors cover %lld bytes of the %lld-byte data section; expected all of it", path,
                     (long long)pos, (long long)data_len);
    }
    free(r);
    return st;
}

// Splits a mapped file into header JSON (parsed) and data section; checks the length prefix.
static mc_status st_parse_header(const mc_mapping *map, const char *path, cJSON **doc, int64_t *header_len,
                                 mc_error *err) {
    *doc = NULL;
    if (map->len < 8) {
        return mc_fail(err, MC_ERR_FORMAT, "%s: file is %zu bytes; expected at least 8 (header length) for safetensors",
                       path, map->len);
    }
    uint64_t n = st_load_u64_le(map->data);
    if (n > (uint64_t)ST_MAX_HEADER) {
        return mc_fail(err, MC_ERR_FORMAT,
                       "%s: header length %llu is larger than the %lld-byte limit; not safetensors?", path,
                       (unsigned long long)n, ST_MAX_HEADER);
    }
    if (n > map->len - 8) {
        return mc_fail(err, MC_ERR_FORMAT, "%s: header length %llu runs past the end of the %zu-byte file", path,
                       (unsigned long long)n, map->len);
    }
    // Parse a NUL-terminated copy: the mapping has no terminator, and a NUL stops any read past the header.
    char *text = malloc((size_t)n + 1);
    if (text == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "%s: cannot allocate %llu bytes for the header", path, (unsigned long long)n);
    }
    memcpy(text, map->data + 8, (size_t)n);
    text[n] = '\0';
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(text, (size_t)n, &end, 0);
    mc_status st = MC_OK;
    if (j == NULL) {
        size_t at = end != NULL && end >= text ? (size_t)(end - text) : 0;
        st = mc_fail(err, MC_ERR_FORMAT, "%s: header is not valid JSON (near byte %zu of %llu)", path, at,
                     (unsigned long long)n);
    } else if (!cJSON_IsObject(j)) {
        st = mc_fail(err, MC_ERR_FORMAT, "%s: header is not a JSON object", path);
    } else {
        for (const char *p = end; p < text + n; p++) {
            if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
                st = mc_fail(err, MC_ERR_FORMAT,
                             "%s: header has data after the JSON object at byte %zu; expected spaces", path,
                             (size_t)(p - text));
                break;
            }
        }
    }
    free(text);
    if (st != MC_OK) {
        cJSON_Delete(j);
        return st;
    }
    *doc = j;
    *header_len = (int64_t)n;
    return MC_OK;
}

// Parses the file mapped as set->maps[fi] and appends its tensors to set.
static mc_status st_load_file(mc_st_set *set, int fi, mc_error *err) {
    const char *path = set->paths[fi];
    const mc_mapping *map = &set->maps[fi];
    cJSON *doc = NULL;
    int64_t header_len = 0;
    mc_status st = st_parse_header(map, path, &doc, &header_len, err);
    if (st != MC_OK) {
        return st;
    }
    const unsigned char *data_base = map->data + 8 + header_len;
    int64_t data_len = (int64_t)map->len - 8 - header_len;
    int64_t first = set->n_tensors;
    char ename[ST_NAME_ESC];
    for (const cJSON *e = doc->child; e != NULL && st == MC_OK; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) {
            continue; // string→string map (e.g. {"format": "pt"}); nothing here needs it
        }
        st_esc(ename, sizeof(ename), e->string);
        st = st_grow(set, path, err);
        if (st != MC_OK) {
            break;
        }
        mc_st_tensor *t = &set->tensors[set->n_tensors];
        memset(t, 0, sizeof(*t));
        t->file_index = fi;
        st = st_parse_entry(e, path, ename, data_base, data_len, t, err);
        if (st == MC_OK) {
            t->name = strdup(e->string);
            if (t->name == NULL) {
                st = mc_fail(err, MC_ERR_NOMEM, "%s: tensor %s: cannot allocate its name", path, ename);
            } else {
                set->n_tensors++;
            }
        }
    }
    if (st == MC_OK) {
        st = st_check_tiling(set->tensors + first, set->n_tensors - first, data_base, data_len, path, err);
    }
    cJSON_Delete(doc);
    return st;
}

static int st_tensor_cmp(const void *a, const void *b) {
    return strcmp(((const mc_st_tensor *)a)->name, ((const mc_st_tensor *)b)->name);
}

static const char *st_base(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash == NULL ? path : slash + 1;
}

// Sorts by name and rejects a name seen twice (cJSON keeps duplicate keys; shards may repeat each other). ctx is
// the path the caller opened (the file, or the index for shards).
static mc_status st_sort_unique(mc_st_set *set, const char *ctx, mc_error *err) {
    if (set->n_tensors == 0) {
        return MC_OK; // qsort(NULL, 0) is undefined
    }
    qsort(set->tensors, (size_t)set->n_tensors, sizeof(*set->tensors), st_tensor_cmp);
    for (int64_t i = 1; i < set->n_tensors; i++) {
        const mc_st_tensor *a = &set->tensors[i - 1], *b = &set->tensors[i];
        if (strcmp(a->name, b->name) == 0) {
            char ename[ST_NAME_ESC];
            st_esc(ename, sizeof(ename), a->name);
            if (a->file_index == b->file_index) {
                return mc_fail(err, MC_ERR_FORMAT,
                               "%s: tensor %s: name appears twice in the header; expected unique names",
                               set->paths[a->file_index], ename);
            }
            char sa[ST_NAME_ESC], sb[ST_NAME_ESC];
            st_esc(sa, sizeof(sa), st_base(set->paths[a->file_index]));
            st_esc(sb, sizeof(sb), st_base(set->paths[b->file_index]));
            return mc_fail(err, MC_ERR_FORMAT, "%s: tensor %s: present in both shards %s and %s; expected one", ctx,
                           ename, sa, sb);
        }
    }
    return MC_OK;
}

static mc_status st_add_file(mc_st_set *set, char *path_owned, const char *ctx, mc_error *err) {
    if (path_owned == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "%s: cannot allocate a shard path", ctx);
    }
    char **paths = realloc(set->paths, (size_t)(set->n_files + 1) * sizeof(*paths));
    if (paths == NULL) {
        free(path_owned);
        return mc_fail(err, MC_ERR_NOMEM, "%s: cannot allocate the shard table", ctx);
    }
    set->paths = paths;
    mc_mapping *maps = realloc(set->maps, (size_t)(set->n_files + 1) * sizeof(*maps));
    if (maps == NULL) {
        free(path_owned);
        return mc_fail(err, MC_ERR_NOMEM, "%s: cannot allocate the shard table", ctx);
    }
    set->maps = maps;
    int fi = set->n_files++;
    set->paths[fi] = path_owned;
    memset(&set->maps[fi], 0, sizeof(set->maps[fi]));
    mc_status st = mc_file_map(path_owned, &set->maps[fi], err);
    if (st == MC_OK) {
        st = st_load_file(set, fi, err);
    }
    return st;
}

static bool st_ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && memcmp(s + a - b, suffix, b) == 0;
}

static char *st_dirname(const char *path) {
    const char *slash = strrchr(path, '/');
    if (slash == NULL) {
        return strdup(".");
    }
    if (slash == path) {
        return strdup("/");
    }
    return strndup(path, (size_t)(slash - path));
}

typedef struct st_wm_entry {
    const char *name;
    const char *shard;
} st_wm_entry;

// Opens the shard wm names, beside the index; a missing one is reported against the index that named it.
static mc_status st_add_shard(mc_st_set *set, const char *dir, const st_wm_entry *wm, const char *index_path,
                              mc_error *err) {
    char *shard_path = mc_path_join(dir, wm->shard);
    if (shard_path != NULL && !mc_path_is_file(shard_path)) {
        char ename[ST_NAME_ESC], sname[ST_NAME_ESC];
        st_esc(ename, sizeof(ename), wm->name);
        st_esc(sname, sizeof(sname), wm->shard);
        free(shard_path);
        return mc_fail(err, MC_ERR_IO, "%s: tensor %s: its shard %s is missing from the index's folder", index_path,
                       ename, sname);
    }
    return st_add_file(set, shard_path, index_path, err);
}

static int st_wm_cmp(const void *a, const void *b) {
    return strcmp(((const st_wm_entry *)a)->name, ((const st_wm_entry *)b)->name);
}

// Reads the weight_map into entries (pointing into doc), rejecting bad shard names and duplicate keys.
static mc_status st_read_weight_map(const cJSON *doc, const char *path, st_wm_entry **out, int64_t *n_out,
                                    mc_error *err) {
    *out = NULL;
    *n_out = 0;
    const cJSON *wm = cJSON_IsObject(doc) ? cJSON_GetObjectItemCaseSensitive(doc, "weight_map") : NULL;
    if (!cJSON_IsObject(wm)) {
        return mc_fail(err, MC_ERR_FORMAT, "%s: weight_map is missing or not an object; expected {tensor: shard}",
                       path);
    }
    int64_t n = cJSON_GetArraySize(wm);
    if (n == 0) {
        return mc_fail(err, MC_ERR_FORMAT, "%s: weight_map is empty; expected at least one tensor", path);
    }
    st_wm_entry *e = malloc((size_t)n * sizeof(*e));
    if (e == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "%s: cannot allocate %lld weight_map entries", path, (long long)n);
    }
    char ename[ST_NAME_ESC], sname[ST_NAME_ESC];
    int64_t i = 0;
    for (const cJSON *it = wm->child; it != NULL; it = it->next, i++) {
        st_esc(ename, sizeof(ename), it->string);
        if (!cJSON_IsString(it)) {
            free(e);
            return mc_fail(err, MC_ERR_FORMAT, "%s: tensor %s: weight_map value is not a string; expected a shard name",
                           path, ename);
        }
        const char *s = it->valuestring;
        if (s[0] == '\0' || strchr(s, '/') != NULL || strchr(s, '\\') != NULL || strstr(s, "..") != NULL) {
            st_esc(sname, sizeof(sname), s);
            free(e);
            return mc_fail(err, MC_ERR_FORMAT,
                           "%s: tensor %s: shard name \"%s\" is not a plain file name; expected one beside the index",
                           path, ename, sname);
        }
        e[i].name = it->string;
        e[i].shard = s;
    }
    qsort(e, (size_t)n, sizeof(*e), st_wm_cmp);
    for (i = 1; i < n; i++) {
        if (strcmp(e[i - 1].name, e[i].name) == 0) {
            st_esc(ename, sizeof(ename), e[i].name);
            free(e);
            return mc_fail(err, MC_ERR_FORMAT, "%s: tensor %s: appears twice in weight_map; expected unique names",
                           path, ename);
        }
    }
    *out = e;
    *n_out = n;
    return MC_OK;
}

// Opens every distinct shard once, then checks each weight_map entry lives in the shard it names. Tensors that a
// shard holds but weight_map omits are kept (a name present in two shards is still an error): they are real data in
// the files, and the model loader rejects names it does not expect.
static mc_status st_open_index(mc_st_set *set, const char *path, mc_error *err) {
    char *text = NULL;
    size_t len = 0;
    cJSON *doc = NULL;
    st_wm_entry *wm = NULL;
    int64_t n_wm = 0;
    char *dir = NULL;
    mc_status st = mc_file_read(path, ST_MAX_INDEX, &text, &len, err);
    if (st == MC_OK) {
        doc = cJSON_ParseWithLength(text, len);
        if (doc == NULL) {
            st = mc_fail(err, MC_ERR_FORMAT, "%s: not valid JSON; expected a safetensors index", path);
        }
    }
    if (st == MC_OK) {
        st = st_read_weight_map(doc, path, &wm, &n_wm, err);
    }
    if (st == MC_OK) {
        dir = st_dirname(path);
        if (dir == NULL) {
            st = mc_fail(err, MC_ERR_NOMEM, "%s: cannot allocate its folder name", path);
        }
    }
    for (int64_t i = 0; i < n_wm && st == MC_OK; i++) {
        bool seen = false;
        for (int f = 0; f < set->n_files && !seen; f++) {
            seen = strcmp(st_base(set->paths[f]), wm[i].shard) == 0;
        }
        if (!seen) {
            st = st_add_shard(set, dir, &wm[i], path, err);
        }
    }
    if (st == MC_OK) {
        st = st_sort_unique(set, path, err);
    }
    for (int64_t i = 0; i < n_wm && st == MC_OK; i++) {
        const mc_st_tensor *t = mc_st_find(set, wm[i].name);
        const char *in = t == NULL ? NULL : st_base(set->paths[t->file_index]);
        if (t == NULL || strcmp(in, wm[i].shard) != 0) {
            char ename[ST_NAME_ESC], sname[ST_NAME_ESC];
            st_esc(ename, sizeof(ename), wm[i].name);
            st_esc(sname, sizeof(sname), wm[i].shard);
            char iname[ST_NAME_ESC];
            st_esc(iname, sizeof(iname), in == NULL ? "" : in);
            st = mc_fail(err, MC_ERR_FORMAT, "%s: tensor %s: not found in its shard %s%s%s", path, ename, sname,
                         t == NULL ? "" : "; it is in ", iname);
        }
    }
    free(dir);
    free(wm);
    cJSON_Delete(doc);
    free(text);
    return st;
}

mc_status mc_st_open(const char *path, mc_st_set **out, mc_error *err) {
    *out = NULL;
    if (path == NULL) {
        return mc_fail(err, MC_ERR_INVALID, "safetensors: path is NULL");
    }
    mc_st_set *set = calloc(1, sizeof(*set));
    if (set == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "%s: cannot allocate a tensor set", path);
    }
    mc_status st;
    if (st_ends_with(path, ".json")) {
        st = st_open_index(set, path, err);
    } else {
        st = st_add_file(set, strdup(path), path, err);
        if (st == MC_OK) {
            st = st_sort_unique(set, path, err);
        }
    }
    if (st != MC_OK) {
        mc_st_close(set);
        return st;
    }
    *out = set;
    return MC_OK;
}

void mc_st_close(mc_st_set *set) {
    if (set == NULL) {
        return;
    }
    for (int64_t i = 0; i < set->n_tensors; i++) {
        free(set->tensors[i].name);
    }
    free(set->tensors);
    for (int f = 0; f < set->n_files; f++) {
        mc_file_unmap(&set->maps[f]);
        free(set->paths[f]);
    }
    free(set->maps);
    free(set->paths);
    free(set);
}

int64_t mc_st_count(const mc_st_set *set) {
    return set == NULL ? 0 : set->n_tensors;
}

const mc_st_tensor *mc_st_at(const mc_st_set *set, int64_t i) {
    if (set == NULL || i < 0 || i >= set->n_tensors) {
        return NULL;
    }
    return &set->tensors[i];
}

const mc_st_tensor *mc_st_find(const mc_st_set *set, const char *name) {
    if (set == NULL || name == NULL || set->n_tensors == 0) {
        return NULL;
    }
    mc_st_tensor key = { .name = (char *)name };
    return bsearch(&key, set->tensors, (size_t)set->n_tensors, sizeof(*set->tensors), st_tensor_cmp);
}

const char *mc_st_file_path(const mc_st_set *set, int file_index) {
    if (set == NULL || file_index < 0 || file_index >= set->n_files) {
        return NULL;
    }
    return set->paths[file_index];
}

void mc_st_shape_format(char *buf, size_t cap, const int64_t *shape, int ndim) {
    snprintf(buf, cap, "[");
    for (int i = 0; i < ndim; i++) {
        const size_t len = strlen(buf);
        snprintf(buf + len, cap - len, "%s%lld", i > 0 ? ", " : "", (long long)shape[i]);
    }
    const size_t len = strlen(buf);
    snprintf(buf + len, cap - len, "]");
}
