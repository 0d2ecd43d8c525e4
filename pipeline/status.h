/* The client side of `sluice status ADDR`: asks a worker's control socket
 * (its --listen address) for its stages' metrics. On tcp:// the socket is a
 * CURVE server admitting only the keys it allows: the asker brings a secret
 * key the worker admits (a coordinator's) and the worker's public key. */
#ifndef SLUICE_STATUS_H
#define SLUICE_STATUS_H

#include <stdbool.h>
#include <stddef.h>

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

/* ---- the serving side, for a coordinator (`sluice run --status-listen`) ---- */

typedef struct pl_status_server pl_status_server;
typedef struct sec_keys sec_keys;

/* The text to answer with (malloc'd; NULL: out of memory), called on the
 * server's thread: it must be thread-safe. */
typedef char *(*pl_status_source)(void *ctx);

/* Answers STATUS requests at addr on a thread of its own. On tcp:// with
 * keys->on it is a CURVE server with those keys admitting only the client
 * key allow (a public key, 40 Z85 characters); without, plain (ipc://, or
 * an insecure config). Fails naming the address. */
int pl_status_server_start(pl_status_server **out, const char *addr, const sec_keys *keys,
                           const char *allow, pl_status_source source, void *ctx, sl_err *err);
void pl_status_server_stop(pl_status_server *s);

/* Longest answer text: it travels in a header, within every receiver's
 * max_header_bytes (64 KiB). */
#define PL_STATUS_TEXT_MAX (48u << 10)

/* Sends a STATUS answer with text (cut at PL_STATUS_TEXT_MAX) to the peer
 * of routing id `id` on the ROUTER socket sock. */
int pl_status_answer(void *sock, const void *id, size_t id_len, const char *text, sl_err *err);

/* Replaces in place every byte that is not printable ASCII, '\t' or '\n'. */
void pl_status_sanitize(char *text);

#endif
