/* sluice plan: which layers each stage owns and where it runs, for this
 * machine, a synthetic one or a cluster file, written as a runnable
 * pipeline config. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "kernels/probe.h"
#include "pipeline/config.h"
#include "pipeline/cores.h"
#include "scheduler/cost.h"
#include "scheduler/place.h"
#include "scheduler/topology.h"

static const char usage[] =
    "usage: sluice plan (-m FILE | --shape ARCH:SIZE) [options] [-o plan.yaml]\n"
    "\n"
    "Places the model's layers on the nodes of a topology: contiguous layer\n"
    "ranges in node order, the embedding on the first node (the coordinator),\n"
    "head and sampler with the last layers, each node within its memory\n"
    "(weights, KV cache for the context and sequences, 10% headroom). Prints\n"
    "the plan (layers, memory and predicted decode time per stage, and each\n"
    "stage's share of the bottleneck) and writes it as a pipeline config.\n"
    "\n"
    "options:\n"
    "  -m, --model FILE        GGUF model: costs from its tensor table\n"
    "  --shape ARCH:SIZE       a model not on this machine, by its shapes:\n"
    "                          gemma3 270m, 1b, 4b, 12b, 27b; gemma2 2b, 9b, 27b;\n"
    "                          gemma 2b, 7b; gemma4 e2b, e4b\n"
    "  --type T                weight type with --shape (default q4_0)\n"
    "  --model-path PATH       model path the config names (default: -m FILE,\n"
    "                          or MODEL.gguf with --shape)\n"
    "  --topology T            local (default): this machine's NUMA nodes;\n"
    "                          an hwloc synthetic string, e.g. \"pack:2 numa:1\n"
    "                          core:16 pu:2\"; or a cluster YAML file (see\n"
    "                          configs/cluster-4node.yaml)\n"
    "  --calibration FILE      node figures from `sluice bench --calibrate` for\n"
    "                          local and synthetic nodes (default: local nodes\n"
    "                          measure their read bandwidth now; synthetic ones\n"
    "                          assume 25 GB/s, 50 GFLOP/s per core, 64 GB)\n"
    "  --objective O           latency (one stream, default) or throughput\n"
    "                          (many streams: the slowest stage)\n"
    "  --context N             positions per sequence (default 4096)\n"
    "  --sequences N           sequences in flight (default 1)\n"
    "  --kv-type T             KV cache type: f32 (default), f16, bf16, q8_0\n"
    "  --ple local|embed       Gemma 4: per-layer embeddings gathered at each layers stage\n"
    "                          (local, the default) or at the embed stage and sent down\n"
    "  --processes N           this machine as N processes (the coordinator and\n"
    "                          N-1 spawned workers, ipc:// between them), each\n"
    "                          with its layers and its own `cores:`: disjoint\n"
    "                          shares of the CPUs this process may use\n"
    "  --insecure              a cluster plan with plain TCP (insecure: true)\n"
    "                          instead of CURVE key fields (keys/NAME.key for the\n"
    "                          coordinator, keys/NAME.pub for each other node:\n"
    "                          make them with `sluice keygen -o keys/NAME`)\n"
    "  -o, --output FILE       write the config there\n"
    "  -h, --help              show this help\n";

typedef struct plan_opts {
    const char *model, *shape, *model_path, *topology, *calibration, *output;
    int wtype, kv_type, ple;
    int processes;              /* > 1: this host split into that many processes */
    bool insecure;
    sl_place_opts place;
} plan_opts;

static bool is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int load_costs(const plan_opts *o, sl_model_cost *mc, sl_err *err)
{
    if (o->model) {
        if (sl_cost_from_gguf(mc, o->model, (sl_type)o->kv_type, err))
            return -1;
        sl_cost_set_ple(mc, (ple_mode)o->ple);
        return 0;
    }
    char arch[32], size[32];
    if (sscanf(o->shape, "%31[^:]:%31s", arch, size) != 2)
        return sl_fail(err, "--shape '%s': expected ARCH:SIZE, e.g. gemma3:12b", o->shape);
    const sl_shape *s = sl_shape_find(arch, size);
    if (!s)
        return sl_fail(err, "--shape '%s': unknown; known shapes: %s", o->shape, sl_shape_list());
    sl_cost_from_shape(mc, s, (sl_type)o->wtype, (sl_type)o->kv_type);
    sl_cost_set_ple(mc, (ple_mode)o->ple);
    return 0;
}

/* Node figures for hwloc nodes: a calibration file's first node, or a
 * measurement of this machine now (local), or the stated defaults. */
static int node_defaults(const plan_opts *o, bool local, sl_node_defaults *d, sl_err *err)
{
    sl_node_defaults_init(d);
    if (o->calibration) {
        sl_topology *cal = malloc(sizeof *cal);
        if (!cal)
            return sl_fail(err, "out of memory");
        sl_node_defaults def = *d;
        int rc = sl_topo_cluster_load(cal, o->calibration, &def, err);
        if (rc == 0) {
            d->bandwidth = cal->nodes[0].bandwidth;
            d->flops = cal->nodes[0].flops / cal->nodes[0].cores;
        }
        free(cal);
        return rc;
    }
    if (local) {
        fprintf(stderr, "plan: measuring this machine's read bandwidth (use --calibration FILE "
                "to skip)...\n");
        double bw = sl_probe_read_bw((size_t)256 << 20, 12);
        if (bw > 0)
            d->bandwidth = bw;
    }
    return 0;
}

static int load_topology(const plan_opts *o, sl_topology *t, sl_err *err)
{
    const char *tp = o->topology ? o->topology : "local";
    sl_node_defaults d;
    if (is_file(tp)) {
        sl_node_defaults_init(&d);
        return sl_topo_cluster_load(t, tp, &d, err);
    }
    bool local = strcmp(tp, "local") == 0;
    if (!local && !strchr(tp, ':'))
        return sl_fail(err, "--topology '%s': neither local, a file, nor an hwloc synthetic "
                       "description", tp);
    if (node_defaults(o, local, &d, err))
        return -1;
    return sl_topo_hwloc(t, local ? NULL : tp, &d, err);
}

/* --processes N: this host as N nodes alike, each with its share of the
 * host's cores, bandwidth and compute (they read memory at once, so the
 * bandwidth is shared too); the placement then balances the layers across
 * processes the way `layers: auto` does. */
static int process_topology(const plan_opts *o, sl_topology *t, sl_err *err)
{
    if (!t->one_host || (o->topology && strcmp(o->topology, "local") != 0))
        return sl_fail(err, "--processes splits this machine (--topology local), not \"%s\"", o->topology);
    sl_cpuset allowed;
    if (sl_cpus_allowed(&allowed, err))
        return -1;
    int n_cpus = sl_cpuset_count(&allowed);
    if (o->processes > n_cpus)
        return sl_fail(err, "--processes %d: this process may use %d CPU(s); give each process at least one",
                       o->processes, n_cpus);
    double bw = 0, fl = 0, mem = 0;
    for (int i = 0; i < t->n_nodes; i++) {
        bw += t->nodes[i].bandwidth;
        fl += t->nodes[i].flops;
        mem += t->nodes[i].memory;
    }
    int n = o->processes;
    t->n_nodes = n;
    t->one_host = false;
    t->n_links = 0;
    /* an ipc:// hop goes over the same-host link: one way to a receiver
     * asleep, p50 31 us on a 2-vCPU EPYC virtual machine (bench/wire_latency;
     * 7 us to one busy-polling, 110 us through ZeroMQ ipc) */
    t->link_latency = 31e-6;
    for (int i = 0; i < n; i++) {
        sl_sched_node *x = &t->nodes[i];
        memset(x, 0, sizeof *x);
        snprintf(x->name, sizeof x->name, i ? "p%d" : "local", i);
        x->numa = -1;
        x->cores = x->pus = n_cpus / n + (i < n_cpus % n);
        x->bandwidth = bw / n;
        x->flops = fl * x->cores / n_cpus;
        x->memory = mem; /* the weights are mapped once, shared by the page cache */
    }
    return 0;
}

/* The config of a --processes plan: node i on ipc://, spawned but the
 * first, holding stage i; then each its cores (pl_cores_resolve: disjoint,
 * together every CPU this process may use). */
static int process_nodes(pl_config *c, sl_err *err)
{
    for (int i = 0; i < c->n_nodes; i++) {
        snprintf(c->nodes[i].address, sizeof c->nodes[i].address, "ipc:///tmp/sluice-plan/%s",
                 c->nodes[i].name);
        c->nodes[i].spawn = i > 0;
        c->nodes[i].key[0] = c->nodes[i].public_key[0] = '\0';
    }
    sl_cpuset allowed;
    char warn[512];
    if (sl_cpus_allowed(&allowed, err) || pl_cores_resolve(c, &allowed, warn, sizeof warn, err))
        return -1;
    if (warn[0])
        printf("warning: %s\n", warn);
    return 0;
}

/* A cluster runs CURVE on every tcp:// hop: the coordinator's secret key and
 * each other node's public key, as keygen names them (placeholders until
 * the pairs are made), or plain TCP when asked for. */
static void plan_keys(const plan_opts *o, pl_config *c)
{
    if (o->insecure) {
        c->insecure = true;
        return;
    }
    snprintf(c->nodes[0].key, sizeof c->nodes[0].key, "keys/%s.key", c->nodes[0].name);
    for (int i = 1; i < c->n_nodes; i++)
        snprintf(c->nodes[i].public_key, sizeof c->nodes[i].public_key, "keys/%s.pub", c->nodes[i].name);
}

/* The plan as a pipeline config: one process with a stage per NUMA node
 * (pinned with numa:) for a single host, or a node per cluster host. */
static void plan_config(const plan_opts *o, const sl_topology *t, const sl_plan *p, pl_config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->model, sizeof c->model, "%s",
             o->model_path ? o->model_path : o->model ? o->model : "MODEL.gguf");
    sl_sampling_defaults(&c->sampling);
    pl_limits_default(&c->limits);
    c->limits.max_sequences = o->place.sequences;
    c->limits.context = o->place.context;
    c->limits.max_batch_tokens = 512;
    c->limits.kv_type = o->kv_type;
    c->limits.ple = o->ple;
    int node_of[SL_TOPO_MAX]; /* topology node -> config node */
    for (int i = 0; i < SL_TOPO_MAX; i++)
        node_of[i] = 0;
    c->n_nodes = 1;
    snprintf(c->nodes[0].name, sizeof c->nodes[0].name, "%s", t->one_host ? "local" : t->nodes[0].name);
    snprintf(c->nodes[0].address, sizeof c->nodes[0].address, "%s",
             t->one_host ? "" : t->nodes[0].address);
    if (!t->one_host)
        for (int i = 0; i < p->n; i++) {
            int n = p->st[i].node;
            if (n == 0 || node_of[n])
                continue;
            pl_node *cn = &c->nodes[c->n_nodes];
            snprintf(cn->name, sizeof cn->name, "%s", t->nodes[n].name);
            snprintf(cn->address, sizeof cn->address, "%s", t->nodes[n].address);
            node_of[n] = c->n_nodes++;
        }
    if (!t->one_host)
        plan_keys(o, c);
    int ns = 0;
    c->stages[ns++] = (pl_stage){.kind = PL_STAGE_EMBED, .node = 0, .numa = -1};
    if (t->one_host)
        c->stages[0].numa = t->nodes[0].numa;
    for (int i = 0; i < p->n; i++) {
        const sl_plan_stage *ps = &p->st[i];
        pl_stage *st = &c->stages[ns++];
        *st = (pl_stage){.kind = PL_STAGE_LAYERS, .l0 = ps->l0, .l1 = ps->l1, .numa = -1};
        st->node = t->one_host ? 0 : node_of[ps->node];
        if (t->one_host) {
            st->numa = t->nodes[ps->node].numa;
            st->threads = t->nodes[ps->node].cores;
        }
    }
    const pl_stage *last = &c->stages[ns - 1];
    c->stages[ns++] = (pl_stage){.kind = PL_STAGE_HEAD, .node = last->node, .numa = last->numa,
                                 .threads = last->threads};
    c->stages[ns++] = (pl_stage){.kind = PL_STAGE_SAMPLE, .node = last->node, .numa = last->numa,
                                 .threads = last->threads};
    c->n_stages = ns;
}

/* Why the written config looks as it does, as comments at its top: the
 * keys a cluster needs, and a machine that is not this one. */
static int notes(const plan_opts *o, const sl_topology *t, const pl_config *c, char *buf, size_t size)
{
    size_t n = 0;
    const char *tp = o->topology ? o->topology : "local";
    if (o->processes > 1)
        return snprintf(buf, size, "# This machine as %d processes on ipc:// (the coordinator spawns the others),\n"
                        "# each with its own `cores:` (disjoint shares of the CPUs `sluice plan` could use).\n",
                        c->n_nodes);
    if (t->one_host && strcmp(tp, "local") != 0)
        n += (size_t)snprintf(buf + n, size - n,
                              "# Planned for the machine \"%s\" (%d NUMA node(s), %d cores), not this one:\n"
                              "# its numa: and threads: fit that machine. `sluice run` refuses a numa:\n"
                              "# node this machine lacks; plan here with --topology local.\n",
                              tp, t->numa_nodes, t->cores);
    if (!t->one_host && c->insecure)
        n += (size_t)snprintf(buf + n, size - n, "# insecure: true: plain TCP, anyone who reaches a port may "
                              "join (planned with --insecure).\n");
    else if (!t->one_host)
        n += (size_t)snprintf(buf + n, size - n,
                              "# Every tcp:// hop is CURVE. Make each node's key pair on its own host:\n"
                              "#   sluice keygen -o keys/NAME     (NAME: %s and each node below)\n"
                              "# The coordinator (%s) keeps keys/%s.key; every other node's keys/NAME.pub\n"
                              "# is copied to the coordinator, and each worker runs\n"
                              "#   sluice worker --listen ADDRESS --key keys/NAME.key --allow keys/%s.pub\n",
                              c->nodes[0].name, c->nodes[0].name, c->nodes[0].name, c->nodes[0].name);
    return (int)n;
}

static int prepend_notes(const plan_opts *o, const sl_topology *t, const pl_config *c, const char *path,
                         sl_err *err)
{
    char head[2048];
    if (notes(o, t, c, head, sizeof head) == 0)
        return 0;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return sl_fail(err, "%s: cannot read back: %s", path, strerror(errno));
    char *body = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&body, &len);
    char chunk[4096];
    size_t got;
    while (mem && (got = fread(chunk, 1, sizeof chunk, fp)) > 0)
        fwrite(chunk, 1, got, mem);
    fclose(fp);
    if (!mem || fclose(mem) != 0) {
        free(body);
        return sl_fail(err, "out of memory");
    }
    fp = fopen(path, "wb");
    int rc = fp && fputs(head, fp) >= 0 && fwrite(body, 1, len, fp) == len ? 0 : -1;
    if (fp && fclose(fp) != 0)
        rc = -1;
    free(body);
    return rc ? sl_fail(err, "%s: cannot write: %s", path, strerror(errno)) : 0;
}

static void print_plan(const sl_model_cost *mc, const sl_topology *t, const sl_plan *p,
                       const plan_opts *o)
{
    printf("model     %s\n", mc->desc);
    sl_topo_print(t, stdout);
    printf("objective %s, context %d, %d sequence(s)\n\n",
           o->place.objective == SL_OBJ_LATENCY ? "latency" : "throughput", o->place.context,
           o->place.sequences);
    printf("%-6s %-12s %-11s %10s %9s %9s %10s %8s %s\n", "stage", "node", "layers", "weights MB",
           "KV MB", "mem GB", "ms/token", "of peak", "");
    double peak = p->st[p->bottleneck].time;
    for (int i = 0; i < p->n; i++) {
        const sl_plan_stage *s = &p->st[i];
        char layers[32];
        snprintf(layers, sizeof layers, "[%d, %d)", s->l0, s->l1);
        printf("%-6d %-12s %-11s %10.1f %9.1f %9.2f %10.3f %7.0f%% %s%s%s\n", i,
               t->nodes[s->node].name, layers, s->weights / 1e6, s->kv / 1e6, s->memory / 1e9,
               s->time * 1e3, 100 * s->time / peak, s->embed ? "embed " : "", s->head ? "head+sample " : "",
               i == p->bottleneck ? "<- bottleneck" : "");
    }
    double hops = 0;
    for (int i = 0; i < p->n; i++)
        hops += p->st[i].hop_in;
    printf("\npredicted: %.3f ms per token for one stream (%.1f tok/s; hops %.3f ms), %.1f tok/s "
           "across streams at the bottleneck\n", p->latency * 1e3, 1 / p->latency,
           (hops + p->return_hop) * 1e3, 1 / p->period);
    const sl_plan_stage *b = &p->st[p->bottleneck];
    const sl_sched_node *bn = &t->nodes[b->node];
    double read = b->weights + b->kv / o->place.sequences + (b->head ? mc->head_bytes : 0);
    printf("bottleneck: stage %d on %s reads %.1f MB per token (weights %.1f%s, KV %.1f at "
           "context %d) at %.1f GB/s: %.3f ms\n", p->bottleneck, bn->name, read / 1e6,
           b->weights / 1e6, b->head ? " plus the head" : "", b->kv / o->place.sequences / 1e6,
           o->place.context, bn->bandwidth / 1e9, b->time * 1e3);
}

static int plan(const char *cmd, plan_opts *o)
{
    sl_err err = {{0}};
    sl_model_cost *mc = malloc(sizeof *mc);
    sl_topology *t = malloc(sizeof *t);
    pl_config *c = malloc(sizeof *c), *back = malloc(sizeof *back);
    int rc = CLI_FAIL;
    if (!mc || !t || !c || !back) {
        sl_fail(&err, "out of memory");
        goto done;
    }
    if (load_costs(o, mc, &err) || load_topology(o, t, &err) ||
        (o->processes > 1 && process_topology(o, t, &err)))
        goto done;
    if (o->processes > 1)
        o->place.use_all_slots = true;
    int slots[SL_TOPO_MAX];
    for (int i = 0; i < t->n_nodes; i++)
        slots[i] = i;
    sl_plan p;
    if (sl_place(mc, t, slots, t->n_nodes, &o->place, &p, &err))
        goto done;
    print_plan(mc, t, &p, o);
    plan_config(o, t, &p, c);
    if (o->processes > 1) {
        c->insecure = false;
        if (process_nodes(c, &err))
            goto done;
    }
    const char *tp = o->topology ? o->topology : "local";
    if (t->one_host && strcmp(tp, "local") != 0)
        printf("\nnote: this plan is for the machine \"%s\" (%d NUMA node(s), %d cores), not this one; "
               "`sluice run` refuses numa: nodes this machine lacks\n", tp, t->numa_nodes, t->cores);
    if (o->output) {
        /* written, then read back: the plan must be a config the loader takes */
        if (pl_config_write(c, o->output, &err) || prepend_notes(o, t, c, o->output, &err) ||
            pl_config_load(back, o->output, &err) || pl_config_check_layers(back, mc->n_layer, &err))
            goto done;
        printf("\nwrote %s\n", o->output);
        if (!t->one_host && !o->insecure && o->processes <= 1)
            printf("keys: make each node's pair on its host with `sluice keygen -o keys/NAME` (the names in "
                   "%s), and copy each .pub to the coordinator\n", o->output);
    }
    rc = CLI_OK;
done:
    if (rc != CLI_OK)
        cli_fail(cmd, "%s", err.msg);
    free(mc);
    free(t);
    free(c);
    free(back);
    return rc;
}

static int parse_type(const char *s, bool kv, int *out)
{
    int t = kv ? cli_kv_type(s) : sl_type_from_name(s);
    if (t < 0)
        return -1;
    *out = t;
    return 0;
}

int cmd_plan(int argc, char **argv)
{
    enum { O_SHAPE = 1000, O_TYPE, O_MPATH, O_TOPO, O_CAL, O_OBJ, O_CTX, O_SEQ, O_KV, O_PLE, O_INSECURE, O_PROCS };
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"model", required_argument, NULL, 'm'},
        {"output", required_argument, NULL, 'o'},
        {"shape", required_argument, NULL, O_SHAPE},
        {"type", required_argument, NULL, O_TYPE},
        {"model-path", required_argument, NULL, O_MPATH},
        {"topology", required_argument, NULL, O_TOPO},
        {"calibration", required_argument, NULL, O_CAL},
        {"objective", required_argument, NULL, O_OBJ},
        {"context", required_argument, NULL, O_CTX},
        {"sequences", required_argument, NULL, O_SEQ},
        {"kv-type", required_argument, NULL, O_KV},
        {"ple", required_argument, NULL, O_PLE},
        {"insecure", no_argument, NULL, O_INSECURE},
        {"processes", required_argument, NULL, O_PROCS},
        {NULL, 0, NULL, 0},
    };
    plan_opts o = {.wtype = SL_TYPE_Q4_0, .kv_type = SL_TYPE_F32};
    sl_place_opts_init(&o.place);
    o.place.context = 4096;
    int c;
    while ((c = cli_getopt(argc, argv, ":hm:o:", longopts, usage)) != -1) {
        int bad = 0;
        switch (c) {
        case 'h': fputs(usage, stdout); return CLI_OK;
        case 'm': o.model = optarg; break;
        case 'o': o.output = optarg; break;
        case O_SHAPE: o.shape = optarg; break;
        case O_TYPE: bad = parse_type(optarg, false, &o.wtype); break;
        case O_MPATH: o.model_path = optarg; break;
        case O_INSECURE: o.insecure = true; break;
        case O_PROCS: bad = cli_parse_int(optarg, 1, SL_TOPO_MAX, &o.processes); break;
        case O_TOPO: o.topology = optarg; break;
        case O_CAL: o.calibration = optarg; break;
        case O_OBJ:
            bad = strcmp(optarg, "latency") != 0 && strcmp(optarg, "throughput") != 0;
            o.place.objective = strcmp(optarg, "throughput") == 0 ? SL_OBJ_THROUGHPUT : SL_OBJ_LATENCY;
            break;
        case O_CTX: bad = cli_parse_int(optarg, 16, 1 << 22, &o.place.context); break;
        case O_SEQ: bad = cli_parse_int(optarg, 1, 4096, &o.place.sequences); break;
        case O_KV: bad = parse_type(optarg, true, &o.kv_type); break;
        case O_PLE:
            bad = strcmp(optarg, "local") != 0 && strcmp(optarg, "embed") != 0;
            o.ple = strcmp(optarg, "embed") == 0 ? PLE_AT_EMBED : PLE_AT_LAYERS;
            break;
        default: return CLI_USAGE;
        }
        if (bad)
            return cli_usage(argv[0], usage, "bad value '%s' for --%s", optarg, cli_opt_name(longopts, c));
    }
    if (optind != argc)
        return cli_usage(argv[0], usage, "unexpected argument '%s'", argv[optind]);
    if (!o.model == !o.shape)
        return cli_usage(argv[0], usage, "give exactly one of -m FILE and --shape ARCH:SIZE");
    return plan(argv[0], &o);
}
