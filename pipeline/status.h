/* The client side of `sluice status ADDR`: asks a worker's control socket
 * (its --listen address) for its stages' metrics. On tcp:// the socket is a
 * CURVE server admitting only the keys it allows: the asker brings a secret
 * key the worker admits (a coordinator's) and the worker's public key. */
#ifndef SLUICE_STATUS_H
#define SLUICE_STATUS_H

#include <stdbool.h>

#include "util/err.h"

typedef struct pl_status_opts {
    const char *addr;        /* tcp://HOST:PORT or ipc://PATH */
    const char *key;         /* our secret key file (tcp://, unless insecure) */
    const char *server_key;  /* the worker's public key: a .pub file or 40 Z85 characters */
    bool insecure;           /* plain TCP */
    double timeout_s;        /* no answer within it: an error (default 5) */
} pl_status_opts;

/* Returns 0 with *text (malloc'd; the caller frees it) holding the answer,
 * its bytes outside printable ASCII, tab and newline replaced by '?' (it is
 * shown on a terminal), or -1 with err naming the address. */
int pl_status_query(const pl_status_opts *o, char **text, sl_err *err);

/* Replaces in place every byte that is not printable ASCII, '\t' or '\n'. */
void pl_status_sanitize(char *text);

#endif
