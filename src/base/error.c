// mc_error filling and message-safe escaping; no printing happens here.
#include "base/error.h"

#include <stdio.h>
#include <string.h>

mc_status mc_fail(mc_error *err, mc_status code, const char *fmt, ...) {
    if (err != NULL) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
        for (char *p = err->msg; *p; p++) { // one line, always
            if (*p == '\n' || *p == '\r') {
                *p = ' ';
            }
        }
    }
    return code;
}

void mc_escape(char *out, size_t cap, const char *s, size_t len) {
    size_t o = 0;
    if (cap == 0) {
        return;
    }
    for (size_t i = 0; i < len && o + 5 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            out[o++] = (char)c;
        } else {
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
        }
    }
    if (o + 5 >= cap && cap > 4) { // truncated: mark it
        o = cap - 4 < o ? cap - 4 : o;
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

const char *mc_status_name(mc_status st) {
    switch (st) {
        case MC_OK:
            return "ok";
        case MC_ERR_IO:
            return "io error";
        case MC_ERR_FORMAT:
            return "format error";
        case MC_ERR_INVALID:
            return "invalid argument";
        case MC_ERR_UNSUPPORTED:
            return "unsupported";
        case MC_ERR_NOMEM:
            return "out of memory";
        case MC_ERR_INTERNAL:
            return "internal error";
    }
    return "unknown status";
}
