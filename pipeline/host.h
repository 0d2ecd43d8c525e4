/* A stage host: one thread running one stage with an event loop over its
 * sockets. It binds a PULL socket at its input address, connects a PUSH
 * socket to the next stage's input (or the driver's return address), and
 * hands every valid message to the stage. A malformed message is dropped
 * with a logged error and counted; the stage keeps serving. */
#ifndef SLUICE_HOST_H
#define SLUICE_HOST_H

#include <stdint.h>

#include "pipeline/config.h"
#include "pipeline/metrics.h"
#include "pipeline/security.h"
#include "pipeline/wire.h"
#include "stages/stage.h"

typedef struct pl_host pl_host;

/* CURVE for a host's tcp:// sockets: its input is a server admitting the
 * keys zap lists for "data", its output a client of out_server_key. NULL
 * (or keys->on false): plain. */
typedef struct pl_host_sec {
    const sec_keys *keys;
    const char *out_server_key;
    sec_zap *zap;
    const pl_wire_limits *limits; /* what the input accepts; NULL: pl_wire_limits_default */
    /* the pipeline run (Header.run_id): stamped on everything the host
     * sends; a message carrying another id is dropped on receipt, counted
     * (foreign) and logged once, before anything in it is read. Without
     * sec the run id is 0. */
    uint64_t run_id;
} pl_host_sec;

/* The wire limits a config's `limits:` sets: frame and message sizes as
 * given, the rest defaults. */
void pl_wire_limits_from_config(pl_wire_limits *w, const pl_limits *l);

typedef struct pl_host_stats {
    uint64_t messages, rows, dropped, errors;
    uint64_t foreign;      /* of dropped: messages of another run (pl_host_sec.run_id) */
    double busy_seconds;
    /* the stage's ops on the worker pool (util/pool.h: sl_pool_stats) */
    uint64_t pool_calls, pool_split_calls, pool_thread_sum;
    uint32_t pool_threads; /* the last split op's (0: none yet) */
    double pool_op_seconds, pool_split_seconds, pool_wait_seconds;
} pl_host_stats;

/* Starts a thread hosting stage (taking ownership of it). zctx is the
 * process's ZeroMQ context. threads > 0 caps the pool threads the stage's
 * kernels use. The input is bound before this returns, so a caller may
 * connect to it at once. */
int pl_host_start(pl_host **out, void *zctx, sl_stage *stage, const char *in_addr,
                  const char *out_addr, int threads, sl_err *err);
/* numa >= 0: the host thread (and the pool workers it starts) is pinned to that
 * NUMA node's CPUs and memory before it serves; threads 0 then means that
 * node's cores. */
int pl_host_start_numa(pl_host **out, void *zctx, sl_stage *stage, const char *in_addr,
                       const char *out_addr, int threads, int numa, const pl_host_sec *sec,
                       sl_err *err);
/* Consecutive stages on one thread: stages[0] receives at in_addr, each
 * stage's output goes straight into the next one's process call (encoded
 * and decoded as on the wire, so every stage sees exactly what a socket
 * would have delivered), and the last one sends to out_addr. One thread
 * and one share of the pool instead of one per stage: stages that run one after
 * the other for a token (embed, layers, head, sample on one node) stop
 * paying a thread hand-off and a team wake-up per hop. out[0..n-1] get a
 * host per stage (for names and statistics); out[0] runs them all. Members
 * must be stopped after out[0] (stage order does that). */
int pl_host_start_chain(pl_host **out, int n, void *zctx, sl_stage **stages, const char *in_addr,
                        const char *out_addr, int threads, int numa, const pl_host_sec *sec,
                        sl_err *err);
/* Stops the thread, closes its sockets and destroys the stage. */
void pl_host_stop(pl_host *h);
void pl_host_stats_get(pl_host *h, pl_host_stats *st);
/* The stage's metrics (a snapshot taken under the host's lock: any thread
 * may ask while the stage runs). */
void pl_host_metrics_get(pl_host *h, pl_stage_metrics *m);
const char *pl_host_name(const pl_host *h);
/* The stage's own statistics line ("" when it has none). */
void pl_host_describe(const pl_host *h, char *buf, size_t size);

/* The address to bind for addr: ZeroMQ binds tcp:// only to an IP address or
 * an interface name, while configs name hosts, so a host name is resolved
 * (connecting peers resolve names themselves). Others are copied as is; an
 * ipc:// address's directory must be private to this user (sec_ipc_dir). */
int pl_bind_address(const char *addr, char *out, size_t size, sl_err *err);

#endif
