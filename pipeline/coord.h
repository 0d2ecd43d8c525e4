/* The coordinator's side of multi-process and multi-node pipelines: it
 * launches `sluice worker` processes for `spawn: true` nodes, connects to
 * every worker node's control socket, assigns each its stages (with the
 * data addresses they bind and connect to), waits until they are loaded,
 * and watches them with heartbeats. Internal to pipeline/. */
#ifndef SLUICE_COORD_H
#define SLUICE_COORD_H

#include "pipeline/config.h"
#include "pipeline/keyring.h"
#include "util/err.h"

typedef struct pl_coord pl_coord;

/* stage_in[i] is the address stage i binds; stage_out[i] the one it
 * connects to. Only stages on nodes other than nodes[0] are assigned.
 * Returns once every worker answered READY, or fails naming the node. */
/* keys: CURVE on the control sockets and in the assignments when
 * keys->self.on (zap then watches the control sockets' handshakes). */
int pl_coord_start(pl_coord **out, void *zctx, const pl_config *cfg, const char *const *stage_in,
                   const char *const *stage_out, const char *self_exe, double peer_timeout_s,
                   const pl_keyring *keys, sec_zap *zap, sl_err *err);
/* Exchanges heartbeats; returns -1 with a message naming the node and its
 * stages when one has stopped answering or its process exited. Cheap: call
 * it from the driver loop. */
int pl_coord_check(pl_coord *c, sl_err *err);
/* Tells workers to drop their stages, stops spawned processes, waits for them. */
void pl_coord_stop(pl_coord *c);

#endif
