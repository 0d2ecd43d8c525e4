/* CPUs for the processes of one pipeline on one host. At run time the
 * coordinator and the workers it spawns share the CPUs no node's `cores:`
 * takes: their pools sleep when idle, and a process alone at work (one
 * request, stages taking turns) then has every core, where disjoint shares
 * left it one (the synth Gemma 3 1B split in two processes on 2 CPUs: 0.96x
 * one process shared, 0.57x disjoint). `sluice plan` writes disjoint shares
 * as explicit `cores:` (pl_cores_resolve) for layouts that want them. */
#ifndef SLUICE_PIPELINE_CORES_H
#define SLUICE_PIPELINE_CORES_H

#include "pipeline/config.h"
#include "util/cpus.h"

/* Fills nodes[i].cores for nodes[0] and every spawned node: the config's
 * `cores:` where it gives them (each must be among `allowed`, the CPUs this
 * process may use), the rest of `allowed` split evenly among the others
 * that compute (hold layers, head or draft stages; a process with only
 * embed or sample stays unbound). With a single computing process on this
 * host and no `cores:`, nothing changes.
 * When there are fewer free CPUs than processes, they stay unbound and
 * share them: a warning with the numbers goes to warn (empty: none); so
 * does a node whose stages' `threads:` add up to more than its CPUs. */
int pl_cores_resolve(pl_config *c, const sl_cpuset *allowed, char *warn, size_t warn_cap, sl_err *err);

/* The run-time policy: nodes with `cores:` get theirs (each must be among
 * `allowed`); when some do, the others that compute share the rest of
 * `allowed` (none left is an error); when none do, every process keeps
 * all of `allowed`. A node whose stages' `threads:` add up to more than
 * its CPUs gets a warning in warn. */
int pl_cores_share(pl_config *c, const sl_cpuset *allowed, char *warn, size_t warn_cap, sl_err *err);

/* Resolves the config's cores (pl_cores_share, warning on stderr) and
 * binds the calling thread, the coordinator's, to nodes[0]'s: the stage
 * threads it starts next inherit them. *before gets the mask to give back
 * with pl_cores_restore; *bound says whether there is one. */
int pl_cores_apply(pl_config *c, sl_cpuset *before, bool *bound, sl_err *err);
void pl_cores_restore(const sl_cpuset *before, bool bound);

#endif
