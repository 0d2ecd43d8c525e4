/* Error reporting shared by every module.
 *
 * A function that can fail returns 0 on success and -1 on failure, and fills
 * the caller's sl_err with a message that names the file, field or peer at
 * fault. Messages are complete sentences without a trailing newline. */
#ifndef SLUICE_ERR_H
#define SLUICE_ERR_H

#include <stddef.h>

typedef struct sl_err {
    char msg[512];
} sl_err;

/* Formats the message into err (when err is non-NULL) and returns -1, so a
 * failing path reads `return sl_fail(err, "...", ...);`. */
int sl_fail(sl_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prepends "prefix: " to an existing message (context added on the way up). */
int sl_wrap(sl_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Checked size arithmetic: return 0 and store the result, or -1 on overflow. */
int sl_mul_size(size_t a, size_t b, size_t *out);
int sl_add_size(size_t a, size_t b, size_t *out);

#endif
