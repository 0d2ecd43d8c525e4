/* Pinning a thread to a NUMA node: its CPUs (pool workers a thread
 * starts later inherit them), and its memory policy, so pages it touches
 * first (repacked weights, KV cache, activations) come from that node. */
#ifndef SLUICE_SCHED_BIND_H
#define SLUICE_SCHED_BIND_H

#include "util/err.h"

/* Binds the calling thread to NUMA node `numa` (hwloc's os index); *cores
 * gets the node's core count (for its thread count). */
int sl_bind_numa(int numa, int *cores, sl_err *err);
/* Back to every CPU and the default memory policy. */
void sl_bind_reset(void);

#endif
