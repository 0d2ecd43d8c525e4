/* A stage host: one thread running one stage with an event loop over its
 * sockets. It binds a PULL socket at its input address, connects a PUSH
 * socket to the next stage's input (or the driver's return address), and
 * hands every valid message to the stage. A malformed message is dropped
 * with a logged error and counted; the stage keeps serving. */
#ifndef SLUICE_HOST_H
#define SLUICE_HOST_H

#include <stdint.h>

#include "stages/stage.h"

typedef struct pl_host pl_host;

typedef struct pl_host_stats {
    uint64_t messages, rows, dropped, errors;
    double busy_seconds;
} pl_host_stats;

/* Starts a thread hosting stage (taking ownership of it). zctx is the
 * process's ZeroMQ context. threads > 0 sizes the OpenMP team the stage's
 * kernels use. The input is bound before this returns, so a caller may
 * connect to it at once. */
int pl_host_start(pl_host **out, void *zctx, sl_stage *stage, const char *in_addr,
                  const char *out_addr, int threads, sl_err *err);
/* Stops the thread, closes its sockets and destroys the stage. */
void pl_host_stop(pl_host *h);
void pl_host_stats_get(pl_host *h, pl_host_stats *st);
const char *pl_host_name(const pl_host *h);

/* The address to bind for addr: ZeroMQ binds tcp:// only to an IP address or
 * an interface name, while configs name hosts, so a host name is resolved
 * (connecting peers resolve names themselves). Others are copied as is. */
int pl_bind_address(const char *addr, char *out, size_t size, sl_err *err);

#endif
