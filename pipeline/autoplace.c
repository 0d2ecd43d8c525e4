/* `layers: auto` in a pipeline config: the layers stages, in order, split
 * the model's layers so that the slowest stage is as fast as it can be,
 * every stage getting at least one layer. Nodes are taken as alike (a
 * config does not say what its hosts can do; `sluice plan` with a cluster
 * file does), so the split balances bytes read per token. The scheduler
 * only places (plan in, plan out); writing its answer into the config is
 * the pipeline's business, so this lives here. */
#include "pipeline/autoplace.h"

#include <stdlib.h>

#include "scheduler/place.h"

int pl_config_resolve_auto(pl_config *c, sl_err *err)
{
    int layers[PL_MAX_STAGES], n = 0, n_auto = 0;
    for (int i = 0; i < c->n_stages; i++)
        if (c->stages[i].kind == PL_STAGE_LAYERS) {
            layers[n++] = i;
            n_auto += c->stages[i].layers_auto;
        }
    if (n_auto == 0)
        return 0;
    if (n_auto != n)
        return sl_fail(err, "%s: layers: auto must be on every layers stage or none (%d of %d are)",
                       c->path, n_auto, n);
    if (n > SL_TOPO_MAX)
        return sl_fail(err, "%s: %d layers stages (at most %d with layers: auto)", c->path, n,
                       SL_TOPO_MAX);
    sl_model_cost *mc = malloc(sizeof *mc);
    sl_topology *t = calloc(1, sizeof *t);
    int rc = -1;
    if (!mc || !t) {
        sl_fail(err, "out of memory");
        goto done;
    }
    if (sl_cost_from_gguf(mc, c->model, (sl_type)c->limits.kv_type, err))
        goto done;
    sl_cost_set_ple(mc, (ple_mode)c->limits.ple);
    if (mc->n_layer < n) {
        sl_fail(err, "%s: %d layers stages for a model of %d layers", c->path, n, mc->n_layer);
        goto done;
    }
    sl_node_defaults d;
    sl_node_defaults_init(&d);
    t->n_nodes = n;
    t->link_bandwidth = 10e9;
    t->link_latency = 50e-6;
    int slots[SL_TOPO_MAX];
    for (int i = 0; i < n; i++) {
        sl_sched_node *x = &t->nodes[i];
        snprintf(x->name, sizeof x->name, "stage %d", layers[i]);
        x->cores = 1;
        x->memory = 1e18; /* a config's nodes state no memory: not a constraint here */
        x->bandwidth = d.bandwidth;
        x->flops = d.flops;
        slots[i] = i;
    }
    sl_place_opts o;
    sl_place_opts_init(&o);
    o.objective = SL_OBJ_THROUGHPUT;
    o.context = c->limits.context;
    o.sequences = c->limits.max_sequences;
    o.use_all_slots = true;
    sl_plan p;
    if (sl_place(mc, t, slots, n, &o, &p, err))
        goto done;
    for (int i = 0; i < n; i++) {
        pl_stage *st = &c->stages[layers[i]];
        st->l0 = p.st[i].l0;
        st->l1 = p.st[i].l1;
        st->layers_auto = false;
    }
    rc = 0;
done:
    free(mc);
    free(t);
    return rc;
}
