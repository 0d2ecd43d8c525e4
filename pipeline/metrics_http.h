/* Prometheus metrics over HTTP (libmicrohttpd): GET /metrics answers the
 * text a source renders (pl_metrics_prometheus of the stages of this
 * process); other paths are 404, other methods 405. Plain HTTP, read-only,
 * no authentication: it binds 127.0.0.1 unless given an address. */
#ifndef SLUICE_METRICS_HTTP_H
#define SLUICE_METRICS_HTTP_H

#include "util/err.h"

typedef struct pl_metrics_http pl_metrics_http;

/* Renders the current metrics as Prometheus text (malloc'd; NULL: out of
 * memory). Called on the server's own thread: it must be thread-safe. */
typedef char *(*pl_metrics_source)(void *ctx);

/* Parses "PORT" (127.0.0.1:PORT) or "IPV4:PORT" into its parts; returns 0,
 * or -1 with err naming what is wrong. */
int pl_metrics_http_parse(const char *spec, char *ip, unsigned long ip_size, int *port, sl_err *err);

/* Starts serving on spec (see pl_metrics_http_parse); fails naming the
 * address and the system's reason when it cannot listen. */
int pl_metrics_http_start(pl_metrics_http **out, const char *spec, pl_metrics_source source, void *ctx,
                          sl_err *err);
void pl_metrics_http_stop(pl_metrics_http *h);
/* The URL served: http://IP:PORT/metrics. */
const char *pl_metrics_http_url(const pl_metrics_http *h);

#endif
