#include "scheduler/place.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void sl_place_opts_init(sl_place_opts *o)
{
    o->objective = SL_OBJ_LATENCY;
    o->context = 2048;
    o->sequences = 1;
    o->headroom = 0.1;
    o->stage_overhead = 50e-6;
    o->use_all_slots = false;
}

typedef struct ctx {
    const sl_model_cost *mc;
    const sl_topology *t;
    const int *slots;
    int n_slots, L;
    const sl_place_opts *o;
    double *wprefix;       /* weight bytes of layers [0, i) */
    double *kvprefix;      /* KV bytes held for the context and sequences */
    double *readprefix;    /* KV bytes read per token at the full context */
    double *flopprefix;
} ctx;

static double usable(const ctx *c, int node)
{
    return c->t->nodes[node].memory * (1.0 - c->o->headroom);
}

/* Memory of a stage on slot s with layers [k, l). */
static double stage_memory(const ctx *c, int s, int k, int l, bool head)
{
    double m = c->wprefix[l] - c->wprefix[k] + c->kvprefix[l] - c->kvprefix[k];
    if (s == 0)
        m += c->mc->embed_bytes;
    if (head && !(s == 0 && c->mc->tied))
        m += c->mc->head_bytes; /* a tied table on slot 0 is held once */
    return m;
}

static double stage_time(const ctx *c, int s, int k, int l, bool head)
{
    const sl_sched_node *n = &c->t->nodes[c->slots[s]];
    double bytes = c->wprefix[l] - c->wprefix[k] + c->readprefix[l] - c->readprefix[k];
    double flops = c->flopprefix[l] - c->flopprefix[k];
    if (head) {
        bytes += c->mc->head_bytes;
        flops += c->mc->head_flops;
    }
    if (s == 0) { /* the embed stage runs on the coordinator's slot */
        bytes += c->mc->embed_read_bytes;
        flops += c->mc->embed_flops;
    }
    double t_mem = bytes / n->bandwidth, t_flop = flops / n->flops;
    return (t_mem > t_flop ? t_mem : t_flop) + c->o->stage_overhead;
}

/* One token's activations from slot p to slot s, whose stage starts at
 * layer cut. */
static double hop(const ctx *c, int p, int s, int cut, bool for_latency)
{
    double bw, lat;
    sl_topo_link(c->t, c->slots[p], c->slots[s], &bw, &lat);
    double xfer = sl_cost_boundary_bytes(c->mc, cut) / bw;
    return for_latency ? lat + xfer : xfer;
}

static double ret_hop(const ctx *c, int s)
{
    double bw, lat;
    sl_topo_link(c->t, c->slots[s], c->slots[0], &bw, &lat);
    return lat + 8.0 / bw; /* a token id */
}

static int ctx_init(ctx *c, const sl_model_cost *mc, const sl_topology *t, const int *slots,
                    int n_slots, const sl_place_opts *o, sl_err *err)
{
    memset(c, 0, sizeof *c);
    c->mc = mc;
    c->t = t;
    c->slots = slots;
    c->n_slots = n_slots;
    c->L = mc->n_layer;
    c->o = o;
    if (n_slots < 1 || n_slots > SL_TOPO_MAX)
        return sl_fail(err, "placement: %d stage slots (1 to %d)", n_slots, SL_TOPO_MAX);
    if (c->L < 1)
        return sl_fail(err, "placement: the model has no layers");
    for (int s = 0; s < n_slots; s++) {
        if (slots[s] < 0 || slots[s] >= t->n_nodes)
            return sl_fail(err, "placement: slot %d names node %d of %d", s, slots[s], t->n_nodes);
        for (int q = 0; q < s; q++)
            if (slots[q] == slots[s])
                return sl_fail(err, "placement: node '%s' is listed twice", t->nodes[slots[s]].name);
    }
    size_t n = (size_t)c->L + 1;
    c->wprefix = calloc(n, sizeof(double));
    c->kvprefix = calloc(n, sizeof(double));
    c->readprefix = calloc(n, sizeof(double));
    c->flopprefix = calloc(n, sizeof(double));
    if (!c->wprefix || !c->kvprefix || !c->readprefix || !c->flopprefix)
        return sl_fail(err, "placement: out of memory");
    for (int i = 0; i < c->L; i++) {
        c->wprefix[i + 1] = c->wprefix[i] + mc->layer[i].weight_bytes;
        c->kvprefix[i + 1] = c->kvprefix[i] + sl_cost_kv_bytes(mc, i, i + 1, o->context, o->sequences);
        c->readprefix[i + 1] = c->readprefix[i] + sl_cost_kv_bytes(mc, i, i + 1, o->context, 1);
        c->flopprefix[i + 1] = c->flopprefix[i] + sl_cost_flops(mc, i, i + 1, o->context);
    }
    return 0;
}

static void ctx_free(ctx *c)
{
    free(c->wprefix);
    free(c->kvprefix);
    free(c->readprefix);
    free(c->flopprefix);
}

static double combine(const ctx *c, double acc, double add)
{
    return c->o->objective == SL_OBJ_LATENCY ? acc + add : (acc > add ? acc : add);
}

/* Fills plan's stages from (slot, l0, l1) triples and totals it. */
static void plan_fill(const ctx *c, sl_plan *plan, const int *slot, const int *l0, const int *l1, int n)
{
    memset(plan, 0, sizeof *plan);
    plan->n = n;
    double lat = 0, period = 0, worst = -1;
    for (int i = 0; i < n; i++) {
        sl_plan_stage *st = &plan->st[i];
        bool head = l1[i] == c->L;
        st->slot = slot[i];
        st->node = c->slots[slot[i]];
        st->l0 = l0[i];
        st->l1 = l1[i];
        st->embed = slot[i] == 0;
        st->head = head;
        st->weights = c->wprefix[l1[i]] - c->wprefix[l0[i]];
        st->kv = c->kvprefix[l1[i]] - c->kvprefix[l0[i]];
        st->memory = stage_memory(c, slot[i], l0[i], l1[i], head);
        st->time = stage_time(c, slot[i], l0[i], l1[i], head);
        int prev = i ? slot[i - 1] : 0;
        st->hop_in = prev == slot[i] ? 0 : hop(c, prev, slot[i], l0[i], true);
        double xfer = prev == slot[i] ? 0 : hop(c, prev, slot[i], l0[i], false);
        lat += st->time + st->hop_in;
        period = period > st->time ? period : st->time;
        period = period > xfer ? period : xfer;
        if (st->time > worst) {
            worst = st->time;
            plan->bottleneck = i;
        }
    }
    plan->return_hop = n ? ret_hop(c, slot[n - 1]) : 0;
    plan->latency = lat + plan->return_hop;
    plan->period = period;
    plan->objective = c->o->objective == SL_OBJ_LATENCY ? plan->latency : plan->period;
    if (n && slot[0] != 0)
        plan->embed_memory = c->mc->embed_bytes;
}

static int memory_error(const ctx *c, int s, int k, int l, sl_err *err)
{
    const sl_sched_node *n = &c->t->nodes[c->slots[s]];
    return sl_fail(err, "node '%s' cannot hold layers [%d, %d)%s: %.2f GB needed, %.2f GB usable "
                   "(%.0f%% of %.2f GB)", n->name, k, l, l == c->L ? " with the head" : "",
                   stage_memory(c, s, k, l, l == c->L) / 1e9, usable(c, c->slots[s]) / 1e9,
                   100 * (1 - c->o->headroom), n->memory / 1e9);
}

int sl_plan_eval(const sl_model_cost *mc, const sl_topology *t, const int *slots, int n_slots,
                 const int *owner, const sl_place_opts *o, sl_plan *plan, sl_err *err)
{
    ctx c;
    if (ctx_init(&c, mc, t, slots, n_slots, o, err)) {
        ctx_free(&c);
        return -1;
    }
    int slot[SL_TOPO_MAX], l0[SL_TOPO_MAX], l1[SL_TOPO_MAX], n = 0, rc = 0;
    for (int i = 0; i < c.L && rc == 0; i++) {
        if (owner[i] < 0 || owner[i] >= n_slots || (i && owner[i] < owner[i - 1]))
            rc = sl_fail(err, "placement: layer %d's slot %d breaks the order", i, owner[i]);
        else if (n && slot[n - 1] == owner[i])
            l1[n - 1] = i + 1;
        else {
            slot[n] = owner[i];
            l0[n] = i;
            l1[n] = i + 1;
            n++;
        }
    }
    for (int i = 1; i < n && rc == 0; i++)
        if (mc->no_cut[l0[i]])
            rc = sl_fail(err, "placement: cannot split before layer %d: layer %d reuses the KV "
                         "cache of layer %d, so layers %d..%d must run in the same stage", l0[i],
                         mc->no_cut_reader[l0[i]], mc->no_cut_source[l0[i]],
                         mc->no_cut_source[l0[i]], mc->no_cut_reader[l0[i]]);
    for (int i = 0; i < n && rc == 0; i++)
        if (stage_memory(&c, slot[i], l0[i], l1[i], l1[i] == c.L) > usable(&c, slots[slot[i]]))
            rc = memory_error(&c, slot[i], l0[i], l1[i], err);
    if (rc == 0 && slot[0] != 0 && mc->embed_bytes > usable(&c, slots[0]))
        rc = sl_fail(err, "node '%s' cannot hold the token table (%.2f GB)",
                     t->nodes[slots[0]].name, mc->embed_bytes / 1e9);
    if (rc == 0)
        plan_fill(&c, plan, slot, l0, l1, n);
    ctx_free(&c);
    return rc;
}

/* The dynamic programme of sl_place: best[s][l] is the best value with slot
 * s the last one used, ending at layer l; prev_slot/prev_end say where its
 * stage came from (slot -1: it is the first stage, starting at layer 0). */
typedef struct dp {
    int S, L;
    double *best;
    int *prev_slot, *prev_end;
} dp;

static size_t dp_at(const dp *d, int s, int l) { return (size_t)s * (size_t)(d->L + 1) + (size_t)l; }

static void dp_free(dp *d)
{
    free(d->best);
    free(d->prev_slot);
    free(d->prev_end);
}

static int dp_init(dp *d, int S, int L, sl_err *err)
{
    size_t cells = (size_t)S * (size_t)(L + 1);
    d->S = S;
    d->L = L;
    d->best = malloc(cells * sizeof *d->best);
    d->prev_slot = malloc(cells * sizeof *d->prev_slot);
    d->prev_end = malloc(cells * sizeof *d->prev_end);
    if (!d->best || !d->prev_slot || !d->prev_end) {
        dp_free(d);
        return sl_fail(err, "placement: out of memory");
    }
    for (size_t i = 0; i < cells; i++) {
        d->best[i] = INFINITY;
        d->prev_slot[i] = d->prev_end[i] = -1;
    }
    return 0;
}

static void dp_offer(dp *d, int s, int l, double v, int p, int k)
{
    size_t i = dp_at(d, s, l);
    if (v < d->best[i]) {
        d->best[i] = v;
        d->prev_slot[i] = p;
        d->prev_end[i] = k;
    }
}

/* Every way to end at layer l on slot s with a stage [k, l). */
static void dp_extend(const ctx *c, dp *d, int s, int k, int l)
{
    const sl_place_opts *o = c->o;
    bool latency = o->objective == SL_OBJ_LATENCY, head = l == c->L;
    if (c->mc->no_cut[k] || stage_memory(c, s, k, l, head) > usable(c, c->slots[s]))
        return;
    double st = stage_time(c, s, k, l, head);
    if (k == 0) { /* first stage: reached from the coordinator's slot */
        if (o->use_all_slots && s != 0)
            return;
        double h = s == 0 ? 0 : hop(c, 0, s, 0, latency);
        dp_offer(d, s, l, combine(c, h, st), -1, 0);
        return;
    }
    for (int p = o->use_all_slots && s > 0 ? s - 1 : 0; p < s; p++) {
        double b = d->best[dp_at(d, p, k)];
        if (isfinite(b))
            dp_offer(d, s, l, combine(c, combine(c, b, hop(c, p, s, k, latency)), st), p, k);
    }
}

/* The slot whose stage holds the last layers in the best plan; -1: none fits. */
static int dp_last_slot(const ctx *c, const dp *d)
{
    int last = -1;
    double top = INFINITY;
    for (int s = c->o->use_all_slots ? d->S - 1 : 0; s < d->S; s++) {
        double v = d->best[dp_at(d, s, d->L)];
        if (c->o->objective == SL_OBJ_LATENCY && isfinite(v))
            v += ret_hop(c, s);
        if (v < top) {
            top = v;
            last = s;
        }
    }
    return last;
}

/* Walks the best plan back from its last stage and fills plan in pipeline order. */
static void dp_trace(const ctx *c, const dp *d, int last, sl_plan *plan)
{
    int slot[SL_TOPO_MAX], l0[SL_TOPO_MAX], l1[SL_TOPO_MAX], n = 0;
    for (int s = last, l = d->L; s >= 0; n++) {
        size_t i = dp_at(d, s, l);
        slot[n] = s;
        l0[n] = d->prev_end[i];
        l1[n] = l;
        s = d->prev_slot[i];
        l = l0[n];
    }
    for (int i = 0; i < n / 2; i++) { /* back into pipeline order */
        int j = n - 1 - i, a = slot[i], b = l0[i], e = l1[i];
        slot[i] = slot[j];
        l0[i] = l0[j];
        l1[i] = l1[j];
        slot[j] = a;
        l0[j] = b;
        l1[j] = e;
    }
    plan_fill(c, plan, slot, l0, l1, n);
}

static int no_fit_error(const ctx *c, sl_err *err)
{
    const sl_model_cost *mc = c->mc;
    int L = c->L;
    double total = c->wprefix[L] + c->kvprefix[L] + mc->head_bytes + mc->embed_bytes, have = 0;
    for (int s = 0; s < c->n_slots; s++)
        have += usable(c, c->slots[s]);
    return sl_fail(err, "no placement fits: the model needs %.2f GB (weights %.2f, KV cache %.2f "
                   "for %d x %d positions, embedding and head %.2f) and the %d node(s) offer "
                   "%.2f GB usable, or no split fits each node's share",
                   total / 1e9, c->wprefix[L] / 1e9, c->kvprefix[L] / 1e9, c->o->sequences,
                   c->o->context, (mc->head_bytes + mc->embed_bytes) / 1e9, c->n_slots, have / 1e9);
}

int sl_place(const sl_model_cost *mc, const sl_topology *t, const int *slots, int n_slots,
             const sl_place_opts *o, sl_plan *plan, sl_err *err)
{
    ctx c;
    dp d = {0};
    int rc = -1;
    if (ctx_init(&c, mc, t, slots, n_slots, o, err))
        goto done;
    if (mc->embed_bytes > usable(&c, slots[0])) {
        sl_fail(err, "node '%s' (the coordinator) cannot hold the token table: %.2f GB needed, "
                "%.2f GB usable", t->nodes[slots[0]].name, mc->embed_bytes / 1e9,
                usable(&c, slots[0]) / 1e9);
        goto done;
    }
    if (dp_init(&d, n_slots, c.L, err))
        goto done;
    for (int s = 0; s < n_slots; s++)
        for (int l = 1; l <= c.L; l++)
            for (int k = 0; k < l; k++)
                dp_extend(&c, &d, s, k, l);
    int last = dp_last_slot(&c, &d);
    if (last < 0) {
        no_fit_error(&c, err);
        goto done;
    }
    dp_trace(&c, &d, last, plan);
    rc = 0;
done:
    dp_free(&d);
    ctx_free(&c);
    return rc;
}
