/* Does a config's numa:/threads: fit this machine? (see cli.h) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "pipeline/config.h"
#include "scheduler/topology.h"

/* Stages of the coordinator's own process and of the workers it spawns run
 * on this machine; the others run on hosts of their own. */
static bool runs_here(const pl_config *cfg, const pl_stage *st)
{
    return st->node == 0 || cfg->nodes[st->node].spawn;
}

int cli_check_machine(const pl_config *cfg, const char *what, sl_err *err)
{
    sl_topology *t = malloc(sizeof *t);
    if (!t)
        return sl_fail(err, "out of memory");
    sl_node_defaults d;
    sl_node_defaults_init(&d);
    int rc = sl_topo_hwloc(t, NULL, &d, err);
    for (int i = 0; rc == 0 && i < cfg->n_stages; i++) {
        const pl_stage *st = &cfg->stages[i];
        if (!runs_here(cfg, st))
            continue;
        if (st->numa >= t->numa_nodes)
            rc = sl_fail(err, "%s: stage %d (%s): NUMA node %d does not exist on this machine, which has %d "
                         "NUMA node(s) (0..%d) and %d cores: the config was made for another machine; plan one "
                         "for this machine with `sluice plan --topology local`, or drop the numa: lines",
                         what, i, pl_stage_kind_name(st->kind), st->numa, t->numa_nodes, t->numa_nodes - 1,
                         t->cores);
        else if (st->threads > t->cores)
            fprintf(stderr, "sluice run: warning: %s: stage %d (%s) asks for %d threads, but this machine has "
                    "%d cores: its threads will share them\n", what, i, pl_stage_kind_name(st->kind),
                    st->threads, t->cores);
    }
    free(t);
    return rc;
}
