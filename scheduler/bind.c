#include "scheduler/bind.h"

#include <hwloc.h>
#include <string.h>

#include "util/cpus.h"

/* The thread's mask before sl_bind_numa, which sl_bind_reset restores: the
 * cores the process was given (a config's `cores:`, taskset, a container),
 * never every CPU of the machine. */
static _Thread_local sl_cpuset saved_mask;
static _Thread_local bool saved;

static int topo_load(hwloc_topology_t *t, sl_err *err)
{
    if (hwloc_topology_init(t))
        return sl_fail(err, "binding: hwloc cannot start");
    if (hwloc_topology_load(*t)) {
        hwloc_topology_destroy(*t);
        return sl_fail(err, "binding: hwloc cannot read this machine's topology");
    }
    return 0;
}

int sl_bind_numa(int numa, int *cores, sl_err *err)
{
    hwloc_topology_t t;
    if (topo_load(&t, err))
        return -1;
    hwloc_obj_t node = NULL;
    int n = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_NUMANODE);
    for (int i = 0; i < n; i++) {
        hwloc_obj_t o = hwloc_get_obj_by_type(t, HWLOC_OBJ_NUMANODE, (unsigned)i);
        if (o && (int)o->os_index == numa)
            node = o;
    }
    if (!node) {
        hwloc_topology_destroy(t);
        return sl_fail(err, "binding: NUMA node %d does not exist (this machine has %d: 0..%d)",
                       numa, n, n - 1);
    }
    /* only the node's CPUs among those this process was given */
    hwloc_bitmap_t mine = hwloc_bitmap_alloc(), both = hwloc_bitmap_alloc();
    sl_cpuset now;
    int rc = !mine || !both ? sl_fail(err, "binding: out of memory") : sl_cpus_allowed(&now, err);
    if (rc) {
        hwloc_bitmap_free(mine);
        hwloc_bitmap_free(both);
        hwloc_topology_destroy(t);
        return -1;
    }
    for (int c = 0; c < SL_CPUS_MAX; c++)
        if (sl_cpuset_has(&now, c))
            hwloc_bitmap_set(mine, (unsigned)c);
    hwloc_bitmap_and(both, node->cpuset, mine);
    if (hwloc_bitmap_iszero(both)) {
        char have[256];
        rc = sl_fail(err, "binding: NUMA node %d has none of the CPUs this process may use (%s)", numa,
                     sl_cpuset_format(&now, have, sizeof have));
    } else if (!saved) {
        saved_mask = now;
        saved = true;
    }
    if (rc == 0 && hwloc_set_cpubind(t, both, HWLOC_CPUBIND_THREAD))
        rc = sl_fail(err, "binding: cannot pin this thread to NUMA node %d's CPUs", numa);
    /* memory binding may be unsupported (no NUMA support in the kernel):
     * CPU binding alone still keeps first-touch pages local */
    else if (rc == 0)
        hwloc_set_membind(t, node->nodeset, HWLOC_MEMBIND_BIND,
                          HWLOC_MEMBIND_THREAD | HWLOC_MEMBIND_BYNODESET);
    if (cores) {
        int c = hwloc_get_nbobjs_inside_cpuset_by_type(t, both, HWLOC_OBJ_CORE);
        *cores = c > 0 ? c : 1;
    }
    hwloc_bitmap_free(mine);
    hwloc_bitmap_free(both);
    hwloc_topology_destroy(t);
    return rc;
}

void sl_bind_reset(void)
{
    hwloc_topology_t t;
    sl_err err;
    if (topo_load(&t, &err))
        return;
    if (saved) {
        sl_cpus_bind(&saved_mask);
        saved = false;
    }
    hwloc_set_membind(t, hwloc_topology_get_topology_nodeset(t), HWLOC_MEMBIND_DEFAULT,
                      HWLOC_MEMBIND_THREAD | HWLOC_MEMBIND_BYNODESET);
    hwloc_topology_destroy(t);
}
