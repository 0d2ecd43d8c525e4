/* Layer placement: contiguous layer ranges onto an ordered list of stage
 * slots (nodes of a topology), minimising one stream's time per token
 * (latency: stage times plus hops) or the slowest stage (throughput: many
 * streams in flight), within each node's memory. Exact: dynamic programming
 * over (last slot used, layers covered), O(slots^2 x layers^2).
 *
 * The embedding runs on the first slot's node (the coordinator's), which
 * holds the token table whether or not it gets layers; the head and the
 * sampler run with the last layers. A slot may be left without layers (a
 * node too slow to be worth a hop). */
#ifndef SLUICE_SCHED_PLACE_H
#define SLUICE_SCHED_PLACE_H

#include "scheduler/cost.h"
#include "scheduler/topology.h"

typedef enum sl_objective { SL_OBJ_LATENCY = 0, SL_OBJ_THROUGHPUT = 1 } sl_objective;

typedef struct sl_place_opts {
    sl_objective objective;
    int context;           /* positions each sequence may reach */
    int sequences;         /* sequences whose caches must fit */
    double headroom;       /* share of each node's memory kept free (default 0.1) */
    double stage_overhead; /* seconds a stage adds per token (default 50 us) */
    bool use_all_slots;    /* every slot gets at least one layer (a config's own stages) */
} sl_place_opts;
void sl_place_opts_init(sl_place_opts *o);

typedef struct sl_plan_stage {
    int slot, node;
    int l0, l1;
    bool embed, head;
    double weights, kv, memory; /* bytes */
    double time;           /* seconds per token (decode at the full context) */
    double hop_in;         /* seconds to reach this stage from the previous one */
} sl_plan_stage;

typedef struct sl_plan {
    int n;                 /* stages with layers */
    sl_plan_stage st[SL_TOPO_MAX];
    double return_hop;     /* the sampled token back to the coordinator */
    double latency;        /* one stream: sum of stages and hops */
    double period;         /* many streams: the slowest stage or hop */
    double objective;
    int bottleneck;        /* stage index with the largest time */
    double embed_memory;   /* held by slot 0's node when it has no layers */
} sl_plan;

/* slots: node indices, in pipeline order, each at most once. */
int sl_place(const sl_model_cost *mc, const sl_topology *t, const int *slots, int n_slots,
             const sl_place_opts *o, sl_plan *plan, sl_err *err);

/* The plan of one given split: owner[i] is the slot (index into slots) of
 * layer i, non-decreasing. -1 with the reason when a node's memory is
 * exceeded. The brute-force oracle of the tests, and `sluice plan`'s check
 * of a config's own split. */
int sl_plan_eval(const sl_model_cost *mc, const sl_topology *t, const int *slots, int n_slots,
                 const int *owner, const sl_place_opts *o, sl_plan *plan, sl_err *err);

#endif
