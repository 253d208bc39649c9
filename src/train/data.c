// Training datasets: parses JSON Lines, CSV and plain text into examples, tokenizes, truncates or packs them as
// TRL's SFTTrainer does (spec §9.3). Batching lives in batch.c.
#include "train/data.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"
#include "base/file.h"

#define DATA_MAX_BYTES ((size_t)1 << 36) // 64 GiB: far beyond any corpus one machine tokenizes in memory
#define LABEL_IGNORE   (-100)

struct mc_dataset {
    int32_t *ids;    // [n_tok] every example's ids back to back
    int32_t *labels; // [n_tok]
    int64_t n_tok, cap_ids, cap_labels;
    int64_t *off;  // [count + 1]: example i is [off[i], off[i + 1])
    int64_t *line; // [count]
    int64_t count, cap_off, cap_line;
    int64_t max_len, n_dropped, n_truncated;
};

void mc_data_opts_init(mc_data_opts *opts) {
    *opts = (mc_data_opts){ .format = MC_DATA_AUTO,
                            .text_field = "text",
                            .max_length = 1024,
                            .keep_end = false,
                            .packing = false,
                            .eos = MC_DATA_EOS_TRL,
                            .eos_id = 0,
                            .n_vocab = 0 };
}

// ---------------------------------------------------------------------------------------------------------------
// Building: examples are appended to one growing dataset; the context knows how to report where an example is.

typedef struct builder {
    const char *name;
    const mc_tokenizer *tok;
    mc_data_opts o;
    int64_t n_vocab;
    bool packing;
    bool add_eos;    // append the EOS string to text examples
    const char *eos; // its bytes (borrowed from tok)
    size_t eos_len;
    bool array_items; // locations are "item N" of a JSON array, not lines
    int pretokenized; // JSONL: -1 undecided, 0 text field, 1 input_ids (decided by the first object, as TRL does)
    char field[80];   // text_field escaped for messages
    char *tmp;        // text + EOS scratch
    size_t tmp_cap;
    mc_dataset *ds;
} builder;

// "name:line: message" (or "name: item N: message") for the example at line.
__attribute__((format(printf, 5, 6))) static mc_status fail_at(const builder *b, int64_t line, mc_status code,
                                                               mc_error *err, const char *fmt, ...) {
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (b->array_items) {
        return mc_fail(err, code, "%s: item %lld: %s", b->name, (long long)line, msg);
    }
    return mc_fail(err, code, "%s:%lld: %s", b->name, (long long)line, msg);
}

static bool grow(void **p, int64_t *cap, int64_t need, size_t elem) {
    if (need <= *cap) {
        return true;
    }
    int64_t n = *cap < 16 ? 16 : *cap;
    while (n < need) {
        n *= 2;
    }
    void *q = realloc(*p, (size_t)n * elem);
    if (q == NULL) {
        return false;
    }
    *p = q;
    *cap = n;
    return true;
}

// Appends one example (ids, labels == NULL meaning labels = ids) of n tokens, after truncation and TRL's filter.
static mc_status add_example(builder *b, int64_t line, const int32_t *ids, const int32_t *labels, int64_t n,
                             mc_error *err) {
    mc_dataset *ds = b->ds;
    int64_t first = 0;
    if (!b->packing && b->o.max_length > 0 && n > b->o.max_length) {
        first = b->o.keep_end ? n - b->o.max_length : 0;
        n = b->o.max_length;
        ds->n_truncated++;
    }
    if (!b->packing && b->o.max_length > 0) { // TRL drops examples with no label left: they carry no loss
        bool any = false;
        for (int64_t i = 0; i < n && !any; i++) {
            any = (labels != NULL ? labels[first + i] : ids[first + i]) != LABEL_IGNORE;
        }
        if (!any) {
            ds->n_dropped++;
            return MC_OK;
        }
    }
    if (!grow((void **)&ds->ids, &ds->cap_ids, ds->n_tok + n, sizeof(int32_t)) ||
        !grow((void **)&ds->labels, &ds->cap_labels, ds->n_tok + n, sizeof(int32_t))) {
        return mc_fail(err, MC_ERR_NOMEM, "%s: out of memory at %lld tokens", b->name, (long long)ds->n_tok);
    }
    if (!grow((void **)&ds->line, &ds->cap_line, ds->count + 1, sizeof(int64_t)) ||
        !grow((void **)&ds->off, &ds->cap_off, ds->count + 2, sizeof(int64_t))) {
        return mc_fail(err, MC_ERR_NOMEM, "%s: out of memory at %lld examples", b->name, (long long)ds->count);
    }
    memcpy(ds->ids + ds->n_tok, ids + first, (size_t)n * sizeof(int32_t));
    memcpy(ds->labels + ds->n_tok, (labels != NULL ? labels : ids) + first, (size_t)n * sizeof(int32_t));
    ds->line[ds->count] = line;
    ds->off[ds->count] = ds->n_tok;
    ds->n_tok += n;
    ds->count++;
    ds->off[ds->count] = ds->n_tok;
    return MC_OK;
}

static bool ends_with(const char *s, size_t len, const char *suffix, size_t n) {
    return len >= n && memcmp(s + len - n, suffix, n) == 0;
}

// Tokenizes one text example (EOS appended first when asked, as TRL appends the token's string).
static mc_status add_text(builder *b, int64_t line, const char *text, size_t len, mc_error *err) {
    const char *src = text;
    size_t n = len;
    if (b->add_eos && !ends_with(text, len, b->eos, b->eos_len)) {
        if (len + b->eos_len > b->tmp_cap) {
            size_t cap = (len + b->eos_len) * 2;
            char *t = realloc(b->tmp, cap);
            if (t == NULL) {
                return fail_at(b, line, MC_ERR_NOMEM, err, "out of memory for %zu bytes of text", len);
            }
            b->tmp = t;
            b->tmp_cap = cap;
        }
        memcpy(b->tmp, text, len);
        memcpy(b->tmp + len, b->eos, b->eos_len);
        src = b->tmp;
        n = len + b->eos_len;
    }
    int32_t *ids = NULL;
    int64_t n_ids = 0;
    mc_error e = { 0 };
    mc_status st = mc_tokenizer_encode(b->tok, src, n, &ids, &n_ids, &e);
    if (st != MC_OK) {
        return fail_at(b, line, st, err, "%s", e.msg); // "text: invalid UTF-8 at byte N"
    }
    for (int64_t i = 0; i < n_ids; i++) {
        if (ids[i] < 0 || ids[i] >= b->n_vocab) {
            st = fail_at(b, line, MC_ERR_INVALID, err, "token id %d is outside the vocabulary [0, %lld)", ids[i],
                         (long long)b->n_vocab);
            break;
        }
    }
    if (st == MC_OK) {
        st = add_example(b, line, ids, NULL, n_ids, err);
    }
    free(ids);
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// JSON Lines

// A JSON list of integers into a new array; what says which list ("input_ids", "labels") for messages.
static mc_status int_list(builder *b, int64_t line, const cJSON *list, const char *what, bool allow_ignore,
                          int32_t **out, int64_t *n_out, mc_error *err) {
    *out = NULL;
    *n_out = 0;
    if (!cJSON_IsArray(list)) {
        return fail_at(b, line, MC_ERR_FORMAT, err, "field \"%s\" is not a list", what);
    }
    int64_t n = cJSON_GetArraySize(list);
    int32_t *v = malloc((size_t)(n > 0 ? n : 1) * sizeof(int32_t));
    if (v == NULL) {
        return fail_at(b, line, MC_ERR_NOMEM, err, "out of memory for %lld ids", (long long)n);
    }
    int64_t i = 0;
    const cJSON *item = NULL;
    cJSON_ArrayForEach(item, list) {
        double d = cJSON_IsNumber(item) ? item->valuedouble : NAN;
        if (!(d == floor(d) && fabs(d) < 2147483648.0)) { // NaN (not a number) fails too
            free(v);
            return fail_at(b, line, MC_ERR_FORMAT, err, "%s[%lld] is not an integer", what, (long long)i);
        }
        if (!(allow_ignore && d == LABEL_IGNORE) && (d < 0 || d >= (double)b->n_vocab)) {
            free(v);
            return fail_at(b, line, MC_ERR_INVALID, err, "%s[%lld] = %.0f is outside the vocabulary [0, %lld)", what,
                           (long long)i, d, (long long)b->n_vocab);
        }
        v[i++] = (int32_t)d;
    }
    *out = v;
    *n_out = n;
    return MC_OK;
}

static mc_status add_pretokenized(builder *b, int64_t line, const cJSON *obj, mc_error *err) {
    const cJSON *jids = cJSON_GetObjectItemCaseSensitive(obj, "input_ids");
    const cJSON *jlabels = cJSON_GetObjectItemCaseSensitive(obj, "labels");
    if (jids == NULL) {
        return fail_at(b, line, MC_ERR_FORMAT, err, "no field \"input_ids\"");
    }
    int32_t *ids = NULL, *labels = NULL;
    int64_t n = 0, n_labels = 0;
    mc_status st = int_list(b, line, jids, "input_ids", false, &ids, &n, err);
    if (st == MC_OK && jlabels != NULL && !cJSON_IsNull(jlabels)) {
        st = int_list(b, line, jlabels, "labels", true, &labels, &n_labels, err);
        if (st == MC_OK && n_labels != n) {
            st = fail_at(b, line, MC_ERR_FORMAT, err, "labels has %lld items, input_ids %lld", (long long)n_labels,
                         (long long)n);
        }
    }
    if (st == MC_OK) {
        st = add_example(b, line, ids, labels, n, err);
    }
    free(ids);
    free(labels);
    return st;
}

static mc_status add_object(builder *b, int64_t line, const cJSON *obj, mc_error *err) {
    if (!cJSON_IsObject(obj)) {
        return fail_at(b, line, MC_ERR_FORMAT, err, "not a JSON object");
    }
    if (b->pretokenized < 0) {
        b->pretokenized = cJSON_GetObjectItemCaseSensitive(obj, "input_ids") != NULL;
        if (!b->pretokenized && b->tok == NULL) {
            return fail_at(b, line, MC_ERR_INVALID, err, "text examples need a tokenizer");
        }
    }
    if (b->pretokenized) {
        return add_pretokenized(b, line, obj, err);
    }
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(obj, b->o.text_field);
    if (t == NULL) {
        return fail_at(b, line, MC_ERR_FORMAT, err, "no field \"%s\"", b->field);
    }
    if (!cJSON_IsString(t)) {
        return fail_at(b, line, MC_ERR_FORMAT, err, "field \"%s\" is not a string", b->field);
    }
    return add_text(b, line, t->valuestring, strlen(t->valuestring), err);
}

static bool is_blank(const char *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (strchr(" \t\r\n\v\f", p[i]) == NULL || p[i] == '\0') {
            return false;
        }
    }
    return true;
}

static mc_status parse_json_array(builder *b, const char *data, size_t len, mc_error *err) {
    cJSON *doc = cJSON_ParseWithLength(data, len);
    if (doc == NULL || !cJSON_IsArray(doc)) {
        cJSON_Delete(doc);
        return mc_fail(err, MC_ERR_FORMAT, "%s: not a JSON array of objects", b->name);
    }
    b->array_items = true;
    mc_status st = MC_OK;
    int64_t i = 0;
    const cJSON *item = NULL;
    cJSON_ArrayForEach(item, doc) {
        st = add_object(b, i++, item, err);
        if (st != MC_OK) {
            break;
        }
    }
    cJSON_Delete(doc);
    return st;
}

static mc_status parse_jsonl(builder *b, const char *data, size_t len, mc_error *err) {
    size_t lead = 0;
    while (lead < len && strchr(" \t\r\n", data[lead]) != NULL && data[lead] != '\0') {
        lead++;
    }
    if (lead < len && data[lead] == '[') {
        return parse_json_array(b, data, len, err);
    }
    int64_t line = 0;
    for (size_t pos = 0; pos < len;) {
        const char *p = data + pos, *nl = memchr(p, '\n', len - pos);
        size_t n = nl != NULL ? (size_t)(nl - p) : len - pos;
        pos += n + (nl != NULL);
        line++;
        if (is_blank(p, n)) {
            continue;
        }
        const char *end = NULL;
        cJSON *obj = cJSON_ParseWithLengthOpts(p, n, &end, false);
        if (obj == NULL || !is_blank(end, (size_t)(p + n - end))) {
            cJSON_Delete(obj);
            return fail_at(b, line, MC_ERR_FORMAT, err, "not JSON");
        }
        mc_status st = add_object(b, line, obj, err);
        cJSON_Delete(obj);
        if (st != MC_OK) {
            return st;
        }
    }
    return MC_OK;
}

// ---------------------------------------------------------------------------------------------------------------
// CSV (RFC 4180): fields unescaped into one buffer per row.

typedef struct csv_row {
    char *buf; // the row's fields back to back (unescaped)
    int64_t len, cap;
    int64_t *start, *flen; // per field
    int64_t n, cap_start, cap_flen;
    bool quoted0; // whether the first field was quoted (a lone empty unquoted field is a blank line)
} csv_row;

static bool csv_put(csv_row *r, char c) {
    if (!grow((void **)&r->buf, &r->cap, r->len + 1, 1)) {
        return false;
    }
    r->buf[r->len++] = c;
    return true;
}

static bool csv_field_begin(csv_row *r) {
    if (!grow((void **)&r->start, &r->cap_start, r->n + 1, sizeof(int64_t)) ||
        !grow((void **)&r->flen, &r->cap_flen, r->n + 1, sizeof(int64_t))) {
        return false;
    }
    r->start[r->n] = r->len;
    r->flen[r->n] = 0;
    r->n++;
    return true;
}

// Reads the record starting at *pos (its first line is *line); on return *pos is past its line break and *line is
// the next record's line.
static mc_status csv_read_row(builder *b, const char *d, size_t len, size_t *pos, int64_t *line, csv_row *r,
                              mc_error *err) {
    const int64_t first_line = *line;
    size_t i = *pos;
    r->n = 0;
    r->len = 0;
    r->quoted0 = false;
    for (;;) { // one field per turn
        if (!csv_field_begin(r)) {
            return fail_at(b, first_line, MC_ERR_NOMEM, err, "out of memory");
        }
        bool ok = true;
        if (i < len && d[i] == '"') {
            r->quoted0 |= r->n == 1;
            for (i++;; i++) {
                if (i >= len) {
                    return fail_at(b, first_line, MC_ERR_FORMAT, err, "quoted field never closed");
                }
                if (d[i] == '"') {
                    if (i + 1 >= len || d[i + 1] != '"') {
                        i++; // the closing quote
                        break;
                    }
                    i++; // "" stands for one quote
                }
                *line += d[i] == '\n';
                ok = ok && csv_put(r, d[i]);
            }
            if (i < len && d[i] != ',' && d[i] != '\n' && !(d[i] == '\r' && i + 1 < len && d[i + 1] == '\n')) {
                return fail_at(b, first_line, MC_ERR_FORMAT, err, "unexpected character after a closing quote");
            }
        } else {
            for (; i < len && d[i] != ',' && d[i] != '\n' && !(d[i] == '\r' && i + 1 < len && d[i + 1] == '\n'); i++) {
                ok = ok && csv_put(r, d[i]);
            }
        }
        if (!ok) {
            return fail_at(b, first_line, MC_ERR_NOMEM, err, "out of memory");
        }
        r->flen[r->n - 1] = r->len - r->start[r->n - 1];
        if (i < len && d[i] == ',') {
            i++;
            continue;
        }
        if (i < len) { // "\n" or "\r\n"
            i += d[i] == '\r' ? 2 : 1;
            (*line)++;
        }
        break;
    }
    *pos = i;
    return MC_OK;
}

static mc_status parse_csv(builder *b, const char *d, size_t len, mc_error *err) {
    csv_row r = { 0 };
    int64_t n_cols = -1, col = -1, line = 1;
    mc_status st = MC_OK;
    for (size_t pos = 0; st == MC_OK && pos < len;) {
        int64_t at = line;
        st = csv_read_row(b, d, len, &pos, &line, &r, err);
        if (st != MC_OK || (r.n == 1 && r.len == 0 && !r.quoted0)) {
            continue; // a blank line
        }
        if (n_cols < 0) { // the header
            n_cols = r.n;
            for (int64_t c = 0; c < r.n && col < 0; c++) {
                if ((size_t)r.flen[c] == strlen(b->o.text_field) &&
                    memcmp(r.buf + r.start[c], b->o.text_field, (size_t)r.flen[c]) == 0) {
                    col = c;
                }
            }
            if (col < 0) {
                st = fail_at(b, at, MC_ERR_FORMAT, err, "no column \"%s\" in the header", b->field);
            }
        } else if (r.n != n_cols) {
            st = fail_at(b, at, MC_ERR_FORMAT, err, "%lld fields, the header has %lld", (long long)r.n,
                         (long long)n_cols);
        } else {
            st = add_text(b, at, r.buf + r.start[col], (size_t)r.flen[col], err);
        }
    }
    free(r.buf);
    free(r.start);
    free(r.flen);
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// Plain text

static mc_status parse_lines(builder *b, const char *data, size_t len, mc_error *err) {
    int64_t line = 0;
    for (size_t pos = 0; pos < len;) {
        const char *p = data + pos, *nl = memchr(p, '\n', len - pos);
        size_t n = nl != NULL ? (size_t)(nl - p) : len - pos;
        pos += n + (nl != NULL);
        line++;
        if (n > 0 && p[n - 1] == '\r') {
            n--;
        }
        if (is_blank(p, n)) {
            continue;
        }
        mc_status st = add_text(b, line, p, n, err);
        if (st != MC_OK) {
            return st;
        }
    }
    return MC_OK;
}

// ---------------------------------------------------------------------------------------------------------------

static mc_status resolve_format(const char *name, mc_data_format f, mc_data_format *out, mc_error *err) {
    if (f != MC_DATA_AUTO) {
        if ((int)f < 0 || f > MC_DATA_TOKENS) {
            return mc_fail(err, MC_ERR_INVALID, "%s: unknown data format %d", name, (int)f);
        }
        *out = f;
        return MC_OK;
    }
    const char *dot = strrchr(name, '.');
    const char *ext = dot != NULL && strchr(dot, '/') == NULL ? dot + 1 : "";
    if (strcmp(ext, "jsonl") == 0 || strcmp(ext, "json") == 0) {
        *out = MC_DATA_JSONL;
    } else if (strcmp(ext, "csv") == 0) {
        *out = MC_DATA_CSV;
    } else if (strcmp(ext, "txt") == 0) {
        *out = MC_DATA_LINES;
    } else if (strcmp(ext, "bin") == 0 || strcmp(ext, "tokens") == 0) {
        *out = MC_DATA_TOKENS;
    } else {
        return mc_fail(err, MC_ERR_INVALID, "%s: unknown extension: expected .jsonl, .json, .csv, .txt or .bin (a "
                                            "token file)", name);
    }
    return MC_OK;
}

static mc_status builder_init(builder *b, const char *name, const mc_tokenizer *tok, const mc_data_opts *opts,
                              mc_error *err) {
    memset(b, 0, sizeof(*b));
    b->name = name;
    b->tok = tok;
    b->pretokenized = -1;
    if (opts != NULL) {
        b->o = *opts;
    } else {
        mc_data_opts_init(&b->o);
    }
    mc_status st = resolve_format(name, b->o.format, &b->o.format, err);
    if (st != MC_OK) {
        return st;
    }
    const char *field = b->o.format == MC_DATA_LINES || b->o.format == MC_DATA_DOCUMENT || b->o.format == MC_DATA_TOKENS
                            ? "text"
                            : b->o.text_field;
    if (field == NULL || field[0] == '\0') {
        return mc_fail(err, MC_ERR_INVALID, "%s: text_field is empty", name);
    }
    b->o.text_field = field;
    mc_escape(b->field, sizeof(b->field), field, strlen(field));
    b->packing = b->o.packing || b->o.format == MC_DATA_DOCUMENT || b->o.format == MC_DATA_TOKENS;
    if (b->packing && b->o.max_length <= 0) {
        return mc_fail(err, MC_ERR_INVALID, "%s: packing needs max_length >= 1, got %lld", name,
                       (long long)b->o.max_length);
    }
    if (tok == NULL && b->o.format != MC_DATA_JSONL && b->o.format != MC_DATA_TOKENS) {
        return mc_fail(err, MC_ERR_INVALID, "%s: text examples need a tokenizer", name);
    }
    b->n_vocab = b->o.n_vocab > 0 ? b->o.n_vocab : tok != NULL ? mc_tokenizer_n_vocab(tok) : 0;
    if (b->n_vocab <= 0) {
        return mc_fail(err, MC_ERR_INVALID, "%s: n_vocab must be given without a tokenizer", name);
    }
    b->add_eos = b->o.format != MC_DATA_TOKENS && // a token file has its EOS ids already, or none by choice
                 (b->o.eos == MC_DATA_EOS_ALWAYS || (b->o.eos == MC_DATA_EOS_TRL && strcmp(field, "text") == 0));
    if (b->add_eos && tok != NULL) {
        b->eos = mc_tokenizer_token_bytes(tok, b->o.eos_id, &b->eos_len);
        if (b->eos == NULL || b->eos_len == 0) {
            return mc_fail(err, MC_ERR_INVALID, "%s: eos_id %d has no token in the tokenizer", name, b->o.eos_id);
        }
    }
    b->ds = calloc(1, sizeof(mc_dataset));
    if (b->ds == NULL) {
        return mc_fail(err, MC_ERR_NOMEM, "%s: out of memory", name);
    }
    return MC_OK;
}

// Packing: the examples already lie back to back, so blocks are new offsets every max_length tokens.
static mc_status pack(builder *b, mc_error *err) {
    mc_dataset *ds = b->ds;
    const int64_t T = b->o.max_length, n_blocks = (ds->n_tok + T - 1) / T;
    int64_t *off = malloc((size_t)(n_blocks + 1) * sizeof(int64_t));
    int64_t *line = malloc((size_t)(n_blocks > 0 ? n_blocks : 1) * sizeof(int64_t));
    if (off == NULL || line == NULL) {
        free(off);
        free(line);
        return mc_fail(err, MC_ERR_NOMEM, "%s: out of memory for %lld blocks", b->name, (long long)n_blocks);
    }
    int64_t ex = 0;
    for (int64_t k = 0; k < n_blocks; k++) {
        off[k] = k * T;
        while (ds->off[ex + 1] <= off[k]) { // the example holding the block's first token
            ex++;
        }
        line[k] = ds->line[ex];
    }
    off[n_blocks] = ds->n_tok;
    free(ds->off);
    free(ds->line);
    ds->off = off;
    ds->line = line;
    ds->count = ds->cap_line = n_blocks;
    ds->cap_off = n_blocks + 1;
    return MC_OK;
}

// Whether some example has a target for the loss: a label other than -100 after its first position.
static bool any_target(const mc_dataset *ds) {
    for (int64_t i = 0; i < ds->count; i++) {
        for (int64_t t = ds->off[i] + 1; t < ds->off[i + 1]; t++) {
            if (ds->labels[t] != LABEL_IGNORE) {
                return true;
            }
        }
    }
    return false;
}

// The error for a dataset whose examples all lack a target: every loss would be 0 / 0.
static mc_status no_target(const char *name, mc_error *err) {
    return mc_fail(err, MC_ERR_FORMAT, "%s: no example has a next-token target (each has fewer than 2 tokens, or "
                                       "labels -100 after its first)", name);
}

mc_status mc_dataset_parse(const char *name, const char *data, size_t len, const mc_tokenizer *tok,
                           const mc_data_opts *opts, mc_dataset **out, mc_error *err) {
    *out = NULL;
    builder b;
    mc_status st = builder_init(&b, name, tok, opts, err);
    if (st == MC_OK && len >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0) { // a UTF-8 byte order mark
        data += 3;
        len -= 3;
    }
    if (st == MC_OK) {
        switch (b.o.format) {
            case MC_DATA_JSONL:
                st = parse_jsonl(&b, data, len, err);
                break;
            case MC_DATA_CSV:
                st = parse_csv(&b, data, len, err);
                break;
            case MC_DATA_LINES:
                st = parse_lines(&b, data, len, err);
                break;
            case MC_DATA_TOKENS:
                st = mc_fail(err, MC_ERR_INVALID, "%s: a token file is read from its path (mc_dataset_load)", name);
                break;
            default: // MC_DATA_DOCUMENT
                st = is_blank(data, len) ? MC_OK : add_text(&b, 1, data, len, err);
                break;
        }
    }
    if (st == MC_OK && b.packing && b.ds->count > 0) {
        st = pack(&b, err);
    }
    if (st == MC_OK && b.ds->count == 0) {
        st = b.ds->n_dropped > 0
                 ? mc_fail(err, MC_ERR_FORMAT, "%s: no examples (%lld dropped: no tokens or all labels -100)", name,
                           (long long)b.ds->n_dropped)
                 : mc_fail(err, MC_ERR_FORMAT, "%s: no examples", name);
    }
    if (st == MC_OK && !any_target(b.ds)) {
        st = no_target(name, err);
    }
    free(b.tmp);
    if (st != MC_OK) {
        mc_dataset_free(b.ds);
        return st;
    }
    for (int64_t i = 0; i < b.ds->count; i++) {
        const int64_t n = b.ds->off[i + 1] - b.ds->off[i];
        b.ds->max_len = n > b.ds->max_len ? n : b.ds->max_len;
    }
    *out = b.ds;
    return MC_OK;
}

// A token file: its ids as one example, cut into blocks.
static mc_status load_tokens(const char *path, const mc_tokenizer *tok, const mc_data_opts *opts, mc_dataset **out,
                             mc_error *err) {
    builder b;
    mc_status st = builder_init(&b, path, tok, opts, err);
    mc_tokens *tf = NULL;
    if (st == MC_OK) st = mc_tokens_open(path, tok, &tf, err);
    mc_tokens_info info = { 0 };
    int32_t *ids = NULL;
    if (st == MC_OK) {
        mc_tokens_get_info(tf, &info);
        if (info.n_vocab > b.n_vocab) {
            st = mc_fail(err, MC_ERR_INVALID, "%s: made with a vocabulary of %lld, the model has %lld", path,
                         (long long)info.n_vocab, (long long)b.n_vocab);
        }
    }
    if (st == MC_OK) {
        ids = malloc((size_t)(info.n_tokens > 0 ? info.n_tokens : 1) * sizeof(int32_t));
        st = ids != NULL ? mc_tokens_read(tf, 0, info.n_tokens, ids, err)
                         : mc_fail(err, MC_ERR_NOMEM, "%s: out of memory for %lld ids", path, (long long)info.n_tokens);
    }
    if (st == MC_OK && info.n_tokens > 0) st = add_example(&b, 1, ids, NULL, info.n_tokens, err);
    if (st == MC_OK && b.ds->count > 0) st = pack(&b, err);
    if (st == MC_OK && b.ds->count == 0) st = mc_fail(err, MC_ERR_FORMAT, "%s: no tokens", path);
    if (st == MC_OK && !any_target(b.ds)) st = no_target(path, err);
    free(ids);
    mc_tokens_close(tf);
    free(b.tmp);
    if (st != MC_OK) {
        mc_dataset_free(b.ds);
        return st;
    }
    for (int64_t i = 0; i < b.ds->count; i++) {
        const int64_t n = b.ds->off[i + 1] - b.ds->off[i];
        b.ds->max_len = n > b.ds->max_len ? n : b.ds->max_len;
    }
    *out = b.ds;
    return MC_OK;
}

mc_status mc_dataset_load(const char *path, const mc_tokenizer *tok, const mc_data_opts *opts, mc_dataset **out,
                          mc_error *err) {
    *out = NULL;
    mc_data_format f = MC_DATA_AUTO;
    mc_status st = resolve_format(path, opts != NULL ? opts->format : MC_DATA_AUTO, &f, err);
    if (st == MC_OK && f == MC_DATA_TOKENS) {
        return load_tokens(path, tok, opts, out, err);
    }
    char *data = NULL;
    size_t len = 0;
    if (st == MC_OK) st = mc_file_read(path, DATA_MAX_BYTES, &data, &len, err);
    if (st == MC_OK) {
        st = mc_dataset_parse(path, data, len, tok, opts, out, err);
    }
    free(data);
    return st;
}

void mc_dataset_free(mc_dataset *ds) {
    if (ds == NULL) {
        return;
    }
    free(ds->ids);
    free(ds->labels);
    free(ds->off);
    free(ds->line);
    free(ds);
}

int64_t mc_dataset_count(const mc_dataset *ds) {
    return ds->count;
}

int64_t mc_dataset_max_len(const mc_dataset *ds) {
    return ds->max_len;
}

int64_t mc_dataset_n_tokens(const mc_dataset *ds) {
    return ds->n_tok;
}

int64_t mc_dataset_n_dropped(const mc_dataset *ds) {
    return ds->n_dropped;
}

int64_t mc_dataset_n_truncated(const mc_dataset *ds) {
    return ds->n_truncated;
}

bool mc_dataset_example(const mc_dataset *ds, int64_t i, const int32_t **ids, const int32_t **labels, int64_t *len,
                        int64_t *line) {
    if (i < 0 || i >= ds->count) {
        return false;
    }
    const int64_t o = ds->off[i];
    if (ids != NULL) {
        *ids = ds->ids + o;
    }
    if (labels != NULL) {
        *labels = ds->labels + o;
    }
    if (len != NULL) {
        *len = ds->off[i + 1] - o;
    }
    if (line != NULL) {
        *line = ds->line[i];
    }
    return true;
}
