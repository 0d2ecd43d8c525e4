/* The worker side of multi-process and multi-node pipelines: a process that
 * listens on a control socket (ROUTER), takes an assignment of stages from
 * one coordinator at a time (MSG_ASSIGN), hosts them on threads, answers
 * heartbeats from its main thread, and drops the stages again when the
 * coordinator says MSG_SHUTDOWN or falls silent. */
#ifndef SLUICE_WORKER_H
#define SLUICE_WORKER_H

#include <signal.h>
#include <stdbool.h>

#include "util/err.h"

typedef struct pl_worker_opts {
    const char *listen;    /* tcp://host:port or ipc://path */
    bool once;             /* exit when the first assignment ends */
    int threads;           /* cores the stages share when an assignment leaves threads at 0;
                              0: all online cores */
    double silence_s;      /* a coordinator silent this long is gone (default 6: 3 x its
                              default peer timeout) */
    bool quiet;            /* no progress lines on stderr (errors still go there) */
    int notify_fd;         /* -1, or a pipe: "ok\n" once listening, else the error text */
    /* CURVE: a tcp:// worker serves with its secret key and admits only the
     * clients whose public keys are allowed (the coordinator; the peers that
     * feed its stages are named by the coordinator's assignment). */
    const char *key;       /* secret key file; NULL: none */
    const char *const *allow; /* public key files or inline Z85 keys */
    int n_allow;
    bool insecure;         /* plain TCP without keys (warned about) */
    const char *metrics;   /* [IPV4:]PORT: Prometheus text of the stages at GET /metrics
                              (127.0.0.1 when no address); NULL: none */
} pl_worker_opts;

void pl_worker_opts_default(pl_worker_opts *o);

/* Serves coordinators until *stop becomes non-zero (a signal handler sets
 * it) or, with once, until the first assignment ends. Returns 0, or -1 with
 * err when the control socket cannot be set up, or when a tcp:// listen
 * address has neither a key (with at least one allowed key) nor insecure, or
 * the secret key file is readable by group or others. */
int pl_worker_run(const pl_worker_opts *o, volatile sig_atomic_t *stop, sl_err *err);

#endif
