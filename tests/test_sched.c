/* The scheduler: placement against brute force over every contiguous split
 * (both objectives, random models and clusters, memory limits that cut
 * some splits out), infeasible cases, a heterogeneous cluster, the cost
 * model against a GGUF's own tensor table, hwloc topologies (this machine
 * and synthetic ones) and the cluster file parser's errors. */
#include <stdint.h>

#include "model/gguf.h"
#include <hwloc.h>

#include "scheduler/bind.h"
#include "scheduler/cost.h"
#include "scheduler/place.h"
#include "scheduler/topology.h"
#include "tests/test.h"

static uint64_t rng = 0xdeadbeefcafef00dull;

static double rnd(void) /* [0, 1) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

static void random_model(sl_model_cost *mc, int L)
{
    memset(mc, 0, sizeof *mc);
    mc->n_layer = L;
    mc->d_model = 1024;
    mc->boundary_bytes = 4096;
    for (int i = 0; i < L; i++) {
        sl_layer_cost *l = &mc->layer[i];
        l->weight_bytes = (0.5 + rnd()) * 1e8;
        l->flops = (0.5 + rnd()) * 2e8;
        l->kv_bytes_per_pos = (0.5 + rnd()) * 4096;
        l->window = rnd() < 0.5 ? 512 : 0;
        l->attn_flops_per_pos = 4096;
    }
    mc->embed_bytes = (0.5 + rnd()) * 3e8;
    mc->head_bytes = mc->embed_bytes;
    mc->head_flops = 1e9;
    mc->tied = true;
}

static void random_cluster(sl_topology *t, int n)
{
    memset(t, 0, sizeof *t);
    t->n_nodes = n;
    for (int i = 0; i < n; i++) {
        sl_sched_node *x = &t->nodes[i];
        snprintf(x->name, sizeof x->name, "n%d", i);
        x->cores = 1 + (int)(rnd() * 16);
        x->memory = (0.3 + rnd()) * 2e9;
        x->bandwidth = (0.2 + rnd()) * 50e9;
        x->flops = (0.2 + rnd()) * 500e9;
    }
    t->link_bandwidth = (0.1 + rnd()) * 2e9;
    t->link_latency = rnd() * 1e-3;
    t->n_links = 1;
    t->links[0] = (sl_sched_link){0, n - 1, 10e9, 1e-5};
}

/* Every non-decreasing owner array of L layers over S slots: the best
 * objective among those that fit, or INFINITY. */
static double brute_force(const sl_model_cost *mc, const sl_topology *t, const int *slots, int S,
                          const sl_place_opts *o, int *n_feasible)
{
    int L = mc->n_layer, owner[16] = {0};
    double best = INFINITY;
    *n_feasible = 0;
    for (;;) {
        sl_plan p;
        sl_err err;
        bool all = true;
        for (int s = 0; s < S && o->use_all_slots; s++) {
            bool used = false;
            for (int i = 0; i < L; i++)
                used |= owner[i] == s;
            all &= used;
        }
        if (all && sl_plan_eval(mc, t, slots, S, owner, o, &p, &err) == 0) {
            (*n_feasible)++;
            best = p.objective < best ? p.objective : best;
        }
        int i = L - 1; /* next non-decreasing sequence */
        while (i >= 0 && owner[i] == S - 1)
            i--;
        if (i < 0)
            break;
        owner[i]++;
        for (int j = i + 1; j < L; j++)
            owner[j] = owner[i];
    }
    return best;
}

static void test_against_brute_force(void)
{
    int cases = 0, infeasible = 0;
    for (int trial = 0; trial < 300; trial++) {
        int L = 1 + (int)(rnd() * 8), S = 1 + (int)(rnd() * 4);
        sl_model_cost mc;
        sl_topology t;
        random_model(&mc, L);
        random_cluster(&t, S);
        if (trial % 4 == 3 && L >= 3) { /* Gemma 4 KV sharing: layer b reads layer a's cache */
            int a = (int)(rnd() * (L - 2)), b = a + 1 + (int)(rnd() * (L - 1 - a));
            for (int k = a + 1; k <= b; k++) {
                mc.no_cut[k] = true;
                mc.no_cut_reader[k] = b;
                mc.no_cut_source[k] = a;
            }
        }
        int slots[4];
        for (int s = 0; s < S; s++) /* a random order of the nodes */
            slots[s] = s;
        for (int s = S - 1; s > 0; s--) {
            int r = (int)(rnd() * (s + 1)), tmp = slots[s];
            slots[s] = slots[r];
            slots[r] = tmp;
        }
        sl_place_opts o;
        sl_place_opts_init(&o);
        o.objective = trial % 2 ? SL_OBJ_THROUGHPUT : SL_OBJ_LATENCY;
        o.context = 256 + (int)(rnd() * 4096);
        o.sequences = 1 + (int)(rnd() * 16);
        o.use_all_slots = trial % 3 == 2 && L >= S;
        int feasible;
        double want = brute_force(&mc, &t, slots, S, &o, &feasible);
        sl_plan plan;
        sl_err err = {{0}};
        int rc = sl_place(&mc, &t, slots, S, &o, &plan, &err);
        cases++;
        if (feasible == 0) {
            infeasible++;
            CHECKF(rc == -1, "trial %d: brute force finds no split but the solver returned one", trial);
            if (rc == -1 && !strstr(err.msg, "cannot hold the token table"))
                CHECK_ERR_HAS(err, "no placement fits");
            continue;
        }
        CHECKF(rc == 0, "trial %d: %s", trial, err.msg);
        if (rc)
            continue;
        CHECKF(fabs(plan.objective - want) <= 1e-12 * want, "trial %d (%s, L %d, S %d): solver %.9g, "
               "brute force %.9g", trial, o.objective ? "throughput" : "latency", L, S,
               plan.objective, want);
        /* the plan covers every layer once, in order, within each node's memory */
        int next = 0;
        for (int i = 0; i < plan.n; i++) {
            CHECK(plan.st[i].l0 == next && plan.st[i].l1 > plan.st[i].l0);
            CHECKF(i == 0 || !mc.no_cut[plan.st[i].l0], "trial %d: stage %d starts at layer %d, "
                   "inside a KV-sharing span", trial, i, plan.st[i].l0);
            next = plan.st[i].l1;
            CHECK(plan.st[i].memory <= t.nodes[plan.st[i].node].memory * (1 - o.headroom));
            CHECK(i == 0 || plan.st[i].slot > plan.st[i - 1].slot);
        }
        if (o.use_all_slots)
            CHECK(plan.n == S);
        CHECK(next == L);
    }
    fprintf(stderr, "placement: %d cases against brute force, %d infeasible\n", cases, infeasible);
    CHECK(infeasible > 5 && infeasible < cases - 100); /* both kinds were exercised */
}

/* The size: 100+ layers on 64 slots, solved (no timing asserted;
 * O(slots^2 x layers^2) with O(1) stage costs runs in well under a second). */
static void test_large(void)
{
    static sl_model_cost mc;
    static sl_topology t;
    random_model(&mc, 128);
    random_cluster(&t, 64);
    for (int i = 0; i < 64; i++)
        t.nodes[i].memory = 8e9;
    int slots[64];
    for (int i = 0; i < 64; i++)
        slots[i] = i;
    sl_place_opts o;
    sl_place_opts_init(&o);
    o.objective = SL_OBJ_THROUGHPUT;
    static sl_plan plan;
    sl_err err = {{0}};
    CHECKF(sl_place(&mc, &t, slots, 64, &o, &plan, &err) == 0, "%s", err.msg);
    CHECK(plan.n >= 2 && plan.st[plan.n - 1].l1 == 128);
}

/* A split that separates a KV-sharing layer from its source is refused by
 * name. */
static void test_kv_sharing_cut(void)
{
    sl_model_cost mc;
    sl_topology t;
    random_model(&mc, 8);
    random_cluster(&t, 2);
    for (int i = 0; i < 2; i++)
        t.nodes[i].memory = 1e12;
    for (int k = 3; k <= 7; k++) {
        mc.no_cut[k] = true;
        mc.no_cut_reader[k] = 7;
        mc.no_cut_source[k] = 2;
    }
    int slots[2] = {0, 1}, owner[8] = {0, 0, 0, 0, 1, 1, 1, 1};
    sl_place_opts o;
    sl_place_opts_init(&o);
    sl_plan plan;
    sl_err err = {{0}};
    CHECK(sl_plan_eval(&mc, &t, slots, 2, owner, &o, &plan, &err) == -1);
    CHECK_ERR_HAS(err, "cannot split before layer 4: layer 7 reuses the KV cache of layer 2");
    owner[3] = 1;
    owner[2] = 1;
    CHECK(sl_plan_eval(&mc, &t, slots, 2, owner, &o, &plan, &err) == 0);
    o.use_all_slots = true;
    CHECK(sl_place(&mc, &t, slots, 2, &o, &plan, &err) == 0);
    CHECK(plan.n == 2 && plan.st[1].l0 <= 2);
}

static void test_heterogeneous_and_infeasible(void)
{
    sl_model_cost mc;
    random_model(&mc, 40);
    for (int i = 0; i < 40; i++)
        mc.layer[i] = mc.layer[0]; /* equal layers */
    sl_topology t;
    random_cluster(&t, 2);
    t.n_links = 0;
    t.link_latency = 1e-4;
    for (int i = 0; i < 2; i++) {
        t.nodes[i].memory = 64e9;
        t.nodes[i].flops = 1e15;
    }
    t.nodes[0].bandwidth = 10e9;
    t.nodes[1].bandwidth = 30e9; /* three times faster */
    int slots[2] = {0, 1};
    sl_place_opts o;
    sl_place_opts_init(&o);
    o.objective = SL_OBJ_THROUGHPUT;
    sl_plan plan;
    sl_err err = {{0}};
    CHECK(sl_place(&mc, &t, slots, 2, &o, &plan, &err) == 0);
    CHECK(plan.n == 2);
    int a = plan.st[0].l1 - plan.st[0].l0, b = plan.st[1].l1 - plan.st[1].l0;
    fprintf(stderr, "heterogeneous: slow node %d layers, fast node %d layers\n", a, b);
    CHECK(b > 2 * a);
    /* memory: nothing fits */
    t.nodes[0].memory = t.nodes[1].memory = 1e9;
    CHECK(sl_place(&mc, &t, slots, 2, &o, &plan, &err) == -1);
    CHECK_ERR_HAS(err, "no placement fits");
    /* the coordinator cannot even hold the token table */
    t.nodes[0].memory = mc.embed_bytes / 2;
    CHECK(sl_place(&mc, &t, slots, 2, &o, &plan, &err) == -1);
    CHECK_ERR_HAS(err, "cannot hold the token table");
    /* a node listed twice */
    int twice[2] = {1, 1};
    CHECK(sl_place(&mc, &t, twice, 2, &o, &plan, &err) == -1);
    CHECK_ERR_HAS(err, "listed twice");
}

/* The cost model against the file: every layer tensor's bytes are counted
 * once, the embedding and KV sizes follow the configuration. */
static void test_cost_from_gguf(void)
{
    const char *src = getenv("SLUICE_SRC");
    char path[4096];
    snprintf(path, sizeof path, "%s/models/tiny-gemma3.gguf", src ? src : ".");
    sl_model_cost mc;
    sl_err err = {{0}};
    CHECK(sl_cost_from_gguf(&mc, path, SL_TYPE_F32, &err) == 0);
    gguf_file *f;
    CHECK(gguf_open(&f, path, &err) == 0);
    double all = 0;
    for (uint64_t i = 0; i < f->n_tensors; i++)
        all += (double)f->tensors[i].size;
    const gguf_tensor *onorm = gguf_find_tensor(f, "output_norm.weight");
    double counted = sl_cost_weight_bytes(&mc, 0, mc.n_layer) + mc.embed_bytes +
                     (onorm ? (double)onorm->size : 0);
    CHECK(fabs(counted - all) < 0.5);
    CHECK(mc.tied && mc.head_bytes == mc.embed_bytes);
    /* tiny-gemma3: 2 KV heads of 64, 5 of 6 layers with a 128 window */
    CHECK(mc.layer[0].kv_bytes_per_pos == 2 * 2 * 64 * 4);
    CHECK(mc.layer[0].window == 128 && mc.layer[5].window == 0);
    CHECK(sl_cost_kv_bytes(&mc, 0, 6, 1000, 2) == 2 * (5 * 128 + 1000) * 1024.0);
    gguf_close(f);
    CHECK(sl_cost_from_gguf(&mc, "/nonexistent.gguf", SL_TYPE_F32, &err) == -1);
    CHECK_ERR_HAS(err, "/nonexistent.gguf");
    /* shapes: gemma3 12b, Q4_0: about 6.9 GB of weights with the table */
    const sl_shape *s = sl_shape_find("gemma3", "12b");
    CHECK(s != NULL);
    sl_cost_from_shape(&mc, s, SL_TYPE_Q4_0, SL_TYPE_F16);
    double total = (sl_cost_weight_bytes(&mc, 0, mc.n_layer) + mc.embed_bytes) / 1e9;
    fprintf(stderr, "gemma3 12b q4_0 shapes: %.2f GB\n", total);
    CHECK(total > 6.0 && total < 7.5);
    CHECK(sl_shape_find("gemma3", "13b") == NULL);
    /* gemma4 e2b: layers 15..34 read layers 13 (sliding) and 14 (global)'s
     * caches: they hold no KV, and no stage may start at 14..34; q4_0 with
     * the per-layer token table: about 2.6 GB like the synth file */
    s = sl_shape_find("gemma4", "e2b");
    CHECK(s != NULL);
    sl_cost_from_shape(&mc, s, SL_TYPE_Q4_0, SL_TYPE_F32);
    CHECK(mc.layer[14].kv_bytes_per_pos == 2 * 512 * 4 && mc.layer[13].kv_bytes_per_pos == 2 * 256 * 4);
    CHECK(mc.layer[15].kv_bytes_per_pos == 0 && mc.layer[34].kv_bytes_per_pos == 0);
    CHECK(!mc.no_cut[13] && mc.no_cut[14] && mc.no_cut[34] && mc.no_cut_source[14] == 13);
    total = (sl_cost_weight_bytes(&mc, 0, mc.n_layer) + mc.embed_bytes) / 1e9;
    fprintf(stderr, "gemma4 e2b q4_0 shapes: %.2f GB\n", total);
    CHECK(total > 2.4 && total < 2.8);
}

static void test_topologies(void)
{
    sl_node_defaults d;
    sl_node_defaults_init(&d);
    sl_topology t;
    sl_err err = {{0}};
    CHECK(sl_topo_hwloc(&t, NULL, &d, &err) == 0);
    CHECK(t.n_nodes >= 1 && t.cores >= 1 && t.nodes[0].memory > 0);
    CHECK(sl_topo_hwloc(&t, "pack:2 numa:1 core:16 pu:2", &d, &err) == 0);
    CHECK(t.n_nodes == 2 && t.packages == 2 && t.cores == 32 && t.pus == 64);
    CHECK(t.nodes[1].cores == 16 && t.nodes[1].pus == 32 && t.nodes[1].numa == 1);
    CHECK(t.nodes[0].memory == d.memory); /* synthetic: the stated default */
    CHECK(sl_topo_hwloc(&t, "pack:4 numa:2 core:8 pu:1", &d, &err) == 0 && t.n_nodes == 8);
    CHECK(sl_topo_hwloc(&t, "pack:2 numa:1(memory=8GB) core:4 pu:1", &d, &err) == 0 &&
          fabs(t.nodes[1].memory - 8e9) < 1e6); /* hwloc: GB = 10^9 bytes */
    CHECK(sl_topo_hwloc(&t, "pack:two", &d, &err) == -1);
    CHECK_ERR_HAS(err, "not a valid hwloc synthetic");

    static const char ok[] =
        "nodes:\n"
        "  - {name: a, cores: 8, memory_gb: 16, bandwidth_gb_s: 20, matmul_gflop_s: 300}\n"
        "  - {name: b, address: tcp://10.0.0.2:7100, cores: 4, memory_gb: 8}\n"
        "links:\n"
        "  - {from: a, to: b, bandwidth_gb_s: 10, latency_ms: 0.05}\n"
        "default_link: {bandwidth_gb_s: 1, latency_ms: 1}\n";
    CHECK(sl_topo_cluster_parse(&t, ok, sizeof ok - 1, "ok.yaml", &d, &err) == 0);
    CHECK(t.n_nodes == 2 && t.nodes[0].bandwidth == 20e9 && t.nodes[1].bandwidth == d.bandwidth);
    double bw, lat;
    sl_topo_link(&t, 1, 0, &bw, &lat);
    CHECK(bw == 10e9 && fabs(lat - 5e-5) < 1e-12);
    static const struct {
        const char *text, *want;
    } bad[] = {
        {"nodes:\n  - {name: a, corez: 8}\n", "bad.yaml:2: nodes[0]: unknown key 'corez'"},
        {"nodes:\n  - {cores: 8}\n", "nodes[0]: needs a name"},
        {"nodes:\n  - {name: a, cores: \"8\"}\n", "nodes[0].cores: must be an unquoted number"},
        {"nodes:\n  - {name: a, memory_gb: -3}\n", "nodes[0].memory_gb"},
        {"nodes:\n  - {name: a}\n  - {name: b}\n", "node 'b' needs an address"},
        {"nodes:\n  - {name: a}\n  - {name: a, address: x}\n", "'a' names another node"},
        {"nodes:\n  - {name: a}\nlinks:\n  - {from: a, to: c}\n", "no node is named 'c'"},
        {"nodes: []\n", "has 0 nodes"},
        {"nodes:\n  - {name: a\n", "bad.yaml:"},
        {"hosts: 3\n", "unknown key 'hosts'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = sl_topo_cluster_parse(&t, bad[i].text, strlen(bad[i].text), "bad.yaml", &d, &err);
        CHECKF(rc == -1 && strstr(err.msg, bad[i].want), "case %zu: rc %d, message \"%s\"", i, rc,
               err.msg);
    }
}

/* Binding: the thread's CPU set becomes the node's; a node that does not
 * exist is refused with the count. */
static void test_binding(void)
{
    int cores = 0;
    sl_err err = {{0}};
    CHECKF(sl_bind_numa(0, &cores, &err) == 0, "%s", err.msg);
    hwloc_topology_t t;
    hwloc_topology_init(&t);
    hwloc_topology_load(t);
    hwloc_bitmap_t now = hwloc_bitmap_alloc();
    hwloc_get_cpubind(t, now, HWLOC_CPUBIND_THREAD);
    hwloc_obj_t n0 = hwloc_get_obj_by_type(t, HWLOC_OBJ_NUMANODE, 0);
    CHECK(n0 && hwloc_bitmap_isequal(now, n0->cpuset));
    CHECK(cores == hwloc_get_nbobjs_inside_cpuset_by_type(t, n0->cpuset, HWLOC_OBJ_CORE));
    CHECK(sl_bind_numa(97, &cores, &err) == -1);
    CHECK_ERR_HAS(err, "NUMA node 97 does not exist");
    sl_bind_reset();
    hwloc_get_cpubind(t, now, HWLOC_CPUBIND_THREAD);
    CHECK(hwloc_bitmap_isequal(now, hwloc_topology_get_topology_cpuset(t)));
    hwloc_bitmap_free(now);
    hwloc_topology_destroy(t);
}

/* Gemma 4's per-layer embeddings in the cost model: gathered at the embed
 * stage, their rows cross every cut ahead and the projection moves to the
 * coordinator's slot; a slow link then favours gathering at the layers. */
static void test_ple_placement(void)
{
    static sl_model_cost mc;
    const sl_shape *s = sl_shape_find("gemma4", "e2b");
    CHECK(s != NULL);
    sl_cost_from_shape(&mc, s, SL_TYPE_Q4_0, SL_TYPE_F32);
    CHECK(mc.ple == PLE_AT_LAYERS && mc.n_embd_per_layer == 256);
    double w_local = sl_cost_weight_bytes(&mc, 0, mc.n_layer);
    CHECK(sl_cost_boundary_bytes(&mc, 13) == 1536 * 4 + 4);
    sl_cost_set_ple(&mc, PLE_AT_EMBED);
    CHECK(sl_cost_boundary_bytes(&mc, 0) == (1536 + 35 * 256) * 4);
    CHECK(sl_cost_boundary_bytes(&mc, 13) == (1536 + 22 * 256) * 4);
    CHECK(sl_cost_boundary_bytes(&mc, 35) == 1536 * 4);
    double moved = w_local - sl_cost_weight_bytes(&mc, 0, mc.n_layer);
    /* the projection: 35 x 256 rows of 1536 q4_0 elements */
    CHECK_NEAR(moved, 35.0 * 256 * sl_row_bytes(SL_TYPE_Q4_0, 1536), 1.0);
    CHECK_NEAR(mc.embed_read_bytes, moved, 1.0);
    CHECK(mc.embed_flops > 0);
    sl_cost_set_ple(&mc, PLE_AT_LAYERS);
    CHECK(sl_cost_weight_bytes(&mc, 0, mc.n_layer) == w_local && mc.embed_read_bytes == 0);

    sl_topology t;
    random_cluster(&t, 2);
    t.n_links = 0;
    t.link_bandwidth = 1e8; /* 100 MB/s between the nodes */
    t.link_latency = 1e-4;
    for (int i = 0; i < 2; i++) {
        t.nodes[i].memory = 64e9;
        t.nodes[i].flops = 1e12;
        t.nodes[i].bandwidth = 20e9;
    }
    int slots[2] = {0, 1}, owner[35];
    for (int i = 0; i < 35; i++)
        owner[i] = i < 13 ? 0 : 1;
    sl_place_opts o;
    sl_place_opts_init(&o);
    o.objective = SL_OBJ_LATENCY;
    sl_plan local, embed;
    sl_err err = {{0}};
    CHECK(sl_plan_eval(&mc, &t, slots, 2, owner, &o, &local, &err) == 0);
    sl_cost_set_ple(&mc, PLE_AT_EMBED);
    CHECK(sl_plan_eval(&mc, &t, slots, 2, owner, &o, &embed, &err) == 0);
    /* the hop into layer 13 carries 22 layers' rows more */
    CHECK_NEAR(embed.st[1].hop_in - local.st[1].hop_in, (22.0 * 256 * 4 - 4) / 1e8, 1e-9);
    CHECK(embed.latency > local.latency);
    /* the first stage (with embed) now projects for all 35 layers, not its 13 */
    CHECK(embed.st[0].time > local.st[0].time && embed.st[1].time < local.st[1].time);
}

int main(void)
{
    test_against_brute_force();
    test_heterogeneous_and_infeasible();
    test_kv_sharing_cut();
    test_large();
    test_cost_from_gguf();
    test_ple_placement();
    test_topologies();
    test_binding();
    return test_finish("test_sched");
}
