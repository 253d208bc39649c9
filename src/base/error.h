// Error reporting shared by every layer: mc_fail fills an mc_error and returns its code.
#pragma once

#include "mambac.h"

#include <stdarg.h>

// Fills err (may be NULL) with code and a printf-style one-line message; returns code so callers `return mc_fail(...)`.
mc_status mc_fail(mc_error *err, mc_status code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

// Writes at most cap bytes of s into out as printable ASCII (C-style escapes), NUL-terminated: for names taken
// from files before they go into a message.
void mc_escape(char *out, size_t cap, const char *s, size_t len);
