#include "pipeline/cores.h"

#include <stdio.h>
#include <string.h>

/* The processes this coordinator runs on its host: itself and its spawns
 * (an ipc:// worker someone else started is bound by whoever started it). */
static bool ours(const pl_config *c, int node)
{
    return node == 0 || c->nodes[node].spawn;
}

/* Whether node runs a stage that keeps cores busy (layers, head, draft);
 * embed and sample alone are light enough to run wherever the kernel puts
 * them, so such a process is not given a share of its own. */
static bool computes(const pl_config *c, int node)
{
    for (int i = 0; i < c->n_stages; i++) {
        pl_stage_kind k = c->stages[i].kind;
        if (c->stages[i].node == node &&
            (k == PL_STAGE_LAYERS || k == PL_STAGE_HEAD || k == PL_STAGE_DRAFT))
            return true;
    }
    return false;
}

static int check_stated(const pl_config *c, const sl_cpuset *allowed, sl_cpuset *taken, sl_err *err)
{
    char want[256], have[256];
    memset(taken, 0, sizeof *taken);
    for (int i = 0; i < c->n_nodes; i++) {
        const sl_cpuset *s = &c->nodes[i].cores;
        if (!sl_cpuset_count(s))
            continue;
        if (!ours(c, i))
            return sl_fail(err, "%s: nodes[%d].cores: node '%s' is a worker this coordinator does not start; "
                           "`cores` applies to nodes[0] and spawned nodes (start that worker under "
                           "`taskset -c %s`)", c->path, i, c->nodes[i].name,
                           sl_cpuset_format(s, want, sizeof want));
        sl_cpuset in = sl_cpuset_and(s, allowed);
        if (sl_cpuset_count(&in) != sl_cpuset_count(s))
            return sl_fail(err, "%s: nodes[%d].cores: node '%s' asks for CPUs %s, but this process may "
                           "use only %s", c->path, i, c->nodes[i].name,
                           sl_cpuset_format(s, want, sizeof want), sl_cpuset_format(allowed, have, sizeof have));
        for (int w = 0; w < SL_CPUS_MAX / 64; w++)
            taken->bits[w] |= s->bits[w];
    }
    return 0;
}

/* Deals the CPUs of pool out to the nodes in order, in contiguous runs
 * (neighbouring CPU numbers tend to share a core's caches or a socket). */
static void split(pl_config *c, const int *nodes, int n, const sl_cpuset *pool)
{
    int total = sl_cpuset_count(pool), cpu = 0;
    for (int k = 0; k < n; k++) {
        int share = total / n + (k < total % n);
        sl_cpuset *dst = &c->nodes[nodes[k]].cores;
        memset(dst, 0, sizeof *dst);
        for (; share > 0 && cpu < SL_CPUS_MAX; cpu++)
            if (sl_cpuset_has(pool, cpu)) {
                sl_cpuset_add(dst, cpu);
                share--;
            }
    }
}

/* A node of ours whose stages' `threads:` add up to more than its CPUs
 * (after the split, or all of ours when it is not bound): a warning, since
 * the config may be meant for a larger machine. */
static void check_threads(const pl_config *c, const sl_cpuset *allowed, char *warn, size_t warn_cap)
{
    for (int i = 0; i < c->n_nodes && !warn[0]; i++) {
        if (!ours(c, i))
            continue;
        int want = 0;
        for (int k = 0; k < c->n_stages; k++)
            if (c->stages[k].node == i && c->stages[k].threads > 0 &&
                (c->stages[k].kind == PL_STAGE_LAYERS || c->stages[k].kind == PL_STAGE_DRAFT))
                want += c->stages[k].threads;
        const sl_cpuset *mine = sl_cpuset_count(&c->nodes[i].cores) ? &c->nodes[i].cores : allowed;
        int have = sl_cpuset_count(mine);
        char list[256];
        if (want > have)
            snprintf(warn, warn_cap, "node '%s' runs %d threads in its stages on %d CPU(s) (%s): "
                     "they will wait for each other", c->nodes[i].name, want, have,
                     sl_cpuset_format(mine, list, sizeof list));
    }
}

int pl_cores_resolve(pl_config *c, const sl_cpuset *allowed, char *warn, size_t warn_cap, sl_err *err)
{
    warn[0] = '\0';
    sl_cpuset taken;
    if (check_stated(c, allowed, &taken, err))
        return -1;
    int open[PL_MAX_NODES], n_open = 0, n_ours = 0;
    for (int i = 0; i < c->n_nodes; i++) {
        if (!ours(c, i) || !computes(c, i))
            continue;
        n_ours++;
        if (!sl_cpuset_count(&c->nodes[i].cores))
            open[n_open++] = i;
    }
    if (n_ours < 2 || n_open == 0) {
        check_threads(c, allowed, warn, warn_cap);
        return 0;
    }
    sl_cpuset pool = *allowed;
    for (int w = 0; w < SL_CPUS_MAX / 64; w++)
        pool.bits[w] &= ~taken.bits[w];
    int free_cpus = sl_cpuset_count(&pool);
    char list[256];
    if (free_cpus == 0)
        return sl_fail(err, "%s: the nodes' `cores` take every CPU this process may use (%s) and leave "
                       "none for node '%s'", c->path, sl_cpuset_format(allowed, list, sizeof list),
                       c->nodes[open[0]].name);
    if (free_cpus < n_open) {
        snprintf(warn, warn_cap, "%d processes of this pipeline share %d CPU(s) (%s) on this host: "
                 "they will slow each other down", n_open, free_cpus,
                 sl_cpuset_format(&pool, list, sizeof list));
        return 0;
    }
    split(c, open, n_open, &pool);
    check_threads(c, allowed, warn, warn_cap);
    return 0;
}

int pl_cores_share(pl_config *c, const sl_cpuset *allowed, char *warn, size_t warn_cap, sl_err *err)
{
    warn[0] = '\0';
    sl_cpuset taken;
    if (check_stated(c, allowed, &taken, err))
        return -1;
    sl_cpuset pool = *allowed;
    for (int w = 0; w < SL_CPUS_MAX / 64; w++)
        pool.bits[w] &= ~taken.bits[w];
    if (sl_cpuset_count(&taken)) {
        char list[256];
        for (int i = 0; i < c->n_nodes; i++) {
            if (!ours(c, i) || !computes(c, i) || sl_cpuset_count(&c->nodes[i].cores))
                continue;
            if (!sl_cpuset_count(&pool))
                return sl_fail(err, "%s: the nodes' `cores` take every CPU this process may use (%s) "
                               "and leave none for node '%s'", c->path,
                               sl_cpuset_format(allowed, list, sizeof list), c->nodes[i].name);
            c->nodes[i].cores = pool;
        }
    }
    check_threads(c, allowed, warn, warn_cap);
    return 0;
}

int pl_cores_apply(pl_config *c, sl_cpuset *before, bool *bound, sl_err *err)
{
    *bound = false;
    char warn[512];
    if (sl_cpus_allowed(before, err) || pl_cores_share(c, before, warn, sizeof warn, err))
        return -1;
    if (warn[0])
        fprintf(stderr, "sluice: warning: %s\n", warn);
    if (!sl_cpuset_count(&c->nodes[0].cores))
        return 0;
    char list[256];
    if (sl_cpus_bind(&c->nodes[0].cores))
        return sl_fail(err, "cannot bind the coordinator to CPUs %s",
                       sl_cpuset_format(&c->nodes[0].cores, list, sizeof list));
    *bound = true;
    return 0;
}

void pl_cores_restore(const sl_cpuset *before, bool bound)
{
    if (bound)
        sl_cpus_bind(before);
}
