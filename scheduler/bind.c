#include "scheduler/bind.h"

#include <hwloc.h>

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
    int rc = 0;
    if (hwloc_set_cpubind(t, node->cpuset, HWLOC_CPUBIND_THREAD))
        rc = sl_fail(err, "binding: cannot pin this thread to NUMA node %d's CPUs", numa);
    /* memory binding may be unsupported (no NUMA support in the kernel):
     * CPU binding alone still keeps first-touch pages local */
    else
        hwloc_set_membind(t, node->nodeset, HWLOC_MEMBIND_BIND,
                          HWLOC_MEMBIND_THREAD | HWLOC_MEMBIND_BYNODESET);
    if (cores) {
        int c = hwloc_get_nbobjs_inside_cpuset_by_type(t, node->cpuset, HWLOC_OBJ_CORE);
        *cores = c > 0 ? c : 1;
    }
    hwloc_topology_destroy(t);
    return rc;
}

void sl_bind_reset(void)
{
    hwloc_topology_t t;
    sl_err err;
    if (topo_load(&t, &err))
        return;
    hwloc_set_cpubind(t, hwloc_topology_get_topology_cpuset(t), HWLOC_CPUBIND_THREAD);
    hwloc_set_membind(t, hwloc_topology_get_topology_nodeset(t), HWLOC_MEMBIND_DEFAULT,
                      HWLOC_MEMBIND_THREAD | HWLOC_MEMBIND_BYNODESET);
    hwloc_topology_destroy(t);
}
