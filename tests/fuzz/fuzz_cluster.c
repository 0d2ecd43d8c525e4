/* libFuzzer target: any byte string either fails sl_topo_cluster_parse with
 * a message naming the file, or yields a cluster whose nodes and links keep
 * the documented invariants, on which the placement solver either finds a
 * plan covering every layer or says why not. Broken invariants trap. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "scheduler/place.h"
#include "scheduler/topology.h"

static void require(int ok)
{
    if (!ok)
        __builtin_trap();
}

static void check_topology(const sl_topology *t)
{
    require(t->n_nodes >= 1 && t->n_nodes <= SL_TOPO_MAX);
    for (int i = 0; i < t->n_nodes; i++) {
        const sl_sched_node *n = &t->nodes[i];
        require(n->name[0] && memchr(n->name, 0, sizeof n->name));
        require(i == 0 || n->address[0]);
        require(n->cores >= 1 && n->memory > 0 && n->bandwidth > 0 && n->flops > 0);
        require(isfinite(n->memory) && isfinite(n->bandwidth) && isfinite(n->flops));
        require(sl_topo_find(t, n->name) == i);
    }
    require(t->n_links >= 0 && t->n_links <= SL_TOPO_MAX_LINKS);
    for (int i = 0; i < t->n_links; i++) {
        const sl_sched_link *l = &t->links[i];
        require(l->a >= 0 && l->a < t->n_nodes && l->b >= 0 && l->b < t->n_nodes && l->a != l->b);
        require(l->bandwidth > 0 && l->latency >= 0);
    }
}

static void check_placement(const sl_topology *t)
{
    static sl_model_cost mc;
    memset(&mc, 0, sizeof mc);
    mc.n_layer = 5;
    mc.boundary_bytes = 4096;
    for (int i = 0; i < 5; i++)
        mc.layer[i] = (sl_layer_cost){1e8 * (i + 1), 2e8, 4096, i % 2 ? 512 : 0, 1024, 0, 0};
    mc.embed_bytes = mc.head_bytes = 2e8;
    mc.tied = true;
    int slots[SL_TOPO_MAX];
    for (int i = 0; i < t->n_nodes; i++)
        slots[i] = i;
    sl_place_opts o;
    sl_place_opts_init(&o);
    static sl_plan p;
    sl_err err;
    for (int obj = 0; obj < 2; obj++) {
        o.objective = (sl_objective)obj;
        int rc = sl_place(&mc, t, slots, t->n_nodes, &o, &p, &err);
        require(rc == 0 || rc == -1);
        if (rc)
            continue;
        int next = 0;
        for (int i = 0; i < p.n; i++) {
            require(p.st[i].l0 == next && p.st[i].l1 > next);
            next = p.st[i].l1;
        }
        require(next == 5 && isfinite(p.objective) && p.objective > 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static sl_topology t;
    sl_node_defaults d;
    sl_node_defaults_init(&d);
    sl_err err;
    int rc = sl_topo_cluster_parse(&t, (const char *)data, size, "fuzz.yaml", &d, &err);
    require(rc == 0 || rc == -1);
    if (rc) {
        require(memchr(err.msg, 0, sizeof err.msg) != NULL);
        require(strncmp(err.msg, "fuzz.yaml", 9) == 0);
        return 0;
    }
    check_topology(&t);
    check_placement(&t);
    return 0;
}
