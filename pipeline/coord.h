/* The coordinator's side of multi-process and multi-node pipelines: it
 * launches `sluice worker` processes for `spawn: true` nodes, connects to
 * every worker node's control socket, assigns each its stages (with the
 * data addresses they bind and connect to), waits until they are loaded,
 * and watches them with heartbeats. Internal to pipeline/. */
#ifndef SLUICE_COORD_H
#define SLUICE_COORD_H

#include "pipeline/config.h"
#include "pipeline/keyring.h"
#include "pipeline/metrics.h"
#include "util/err.h"

typedef struct pl_coord pl_coord;

/* stage_in[i] is the address stage i binds; stage_out[i] the one it
 * connects to. Only stages on nodes other than nodes[0] are assigned.
 * Returns once every worker answered READY, or fails naming the node. */
/* cfg and keys must outlive the coordinator: a worker that re-joins after
 * it died (restarted at its address, or back from a partition) gets its
 * stages again from them. */
/* keys: CURVE on the control sockets and in the assignments when
 * keys->self.on (zap then watches the control sockets' handshakes). */
int pl_coord_start(pl_coord **out, void *zctx, const pl_config *cfg, const char *const *stage_in,
                   const char *const *stage_out, const char *self_exe, double peer_timeout_s,
                   const pl_keyring *keys, sec_zap *zap, uint64_t run_id, sl_err *err);
/* What the heartbeat thread has seen. A worker that stops answering, says
 * it stopped, or whose process exited counts as a death (failure names the
 * node and its stages, and how it died); the coordinator then keeps asking
 * for it, and once a worker answers at its address again (restarted, or
 * back from a partition) assigns it its stages anew, with empty KV caches:
 * a re-join. Spawned workers are not restarted. Cheap: call it from the
 * driver loop. */
typedef struct pl_coord_status {
    uint64_t deaths;         /* so far */
    int n_down;              /* dead now, not re-joined yet */
    uint64_t rejoins;        /* so far */
    char failure[512];       /* the latest death: "stage layers[3,6) on node 'b' (tcp://...) was killed ..." */
} pl_coord_status;
void pl_coord_status_get(pl_coord *c, pl_coord_status *st);
/* The metrics of the stages on worker nodes, as their workers last told
 * them (asked every PL_COORD_METRICS_EVERY_S; a dead worker's are
 * dropped): up to max into out; returns how many. Any thread. */
#define PL_COORD_METRICS_EVERY_S 0.5
int pl_coord_metrics(pl_coord *c, pl_stage_metrics *out, int max);
/* Tells workers to drop their stages, stops spawned processes, waits for them. */
void pl_coord_stop(pl_coord *c);

#endif
