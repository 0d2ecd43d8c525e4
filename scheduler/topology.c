#include "scheduler/topology.h"

#include <hwloc.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

void sl_node_defaults_init(sl_node_defaults *d)
{
    d->bandwidth = 25e9;
    d->flops = 50e9;
    d->memory = 64.0 * (1u << 30);
}

static void topo_reset(sl_topology *t, const char *source)
{
    memset(t, 0, sizeof *t);
    snprintf(t->source, sizeof t->source, "%s", source);
}

/* ---- hwloc ---- */

static size_t cache_size(hwloc_topology_t topo, hwloc_obj_type_t type)
{
    hwloc_obj_t o = hwloc_get_obj_by_type(topo, type, 0);
    return o && o->attr ? (size_t)o->attr->cache.size : 0;
}

int sl_topo_hwloc(sl_topology *t, const char *synthetic, const sl_node_defaults *d, sl_err *err)
{
    topo_reset(t, synthetic ? synthetic : "local");
    hwloc_topology_t topo;
    if (hwloc_topology_init(&topo))
        return sl_fail(err, "topology: hwloc cannot start");
    if (synthetic && hwloc_topology_set_synthetic(topo, synthetic)) {
        hwloc_topology_destroy(topo);
        return sl_fail(err, "topology: '%s' is not a valid hwloc synthetic description "
                       "(e.g. \"pack:2 numa:1 core:16 pu:2\")", synthetic);
    }
    if (hwloc_topology_load(topo)) {
        hwloc_topology_destroy(topo);
        return sl_fail(err, "topology: hwloc cannot load %s", t->source);
    }
    t->one_host = true;
    t->packages = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_PACKAGE);
    t->numa_nodes = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_NUMANODE);
    t->cores = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_CORE);
    t->pus = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_PU);
    t->l2_bytes = cache_size(topo, HWLOC_OBJ_L2CACHE);
    t->l3_bytes = cache_size(topo, HWLOC_OBJ_L3CACHE);
    int n = t->numa_nodes > 0 ? t->numa_nodes : 1;
    if (n > SL_TOPO_MAX)
        n = SL_TOPO_MAX;
    for (int i = 0; i < n; i++) {
        sl_sched_node *node = &t->nodes[i];
        hwloc_obj_t numa = hwloc_get_obj_by_type(topo, HWLOC_OBJ_NUMANODE, (unsigned)i);
        hwloc_const_cpuset_t set = numa ? numa->cpuset : hwloc_topology_get_topology_cpuset(topo);
        node->numa = numa ? (int)numa->os_index : -1;
        snprintf(node->name, sizeof node->name, "numa%d", node->numa >= 0 ? node->numa : i);
        node->cores = hwloc_get_nbobjs_inside_cpuset_by_type(topo, set, HWLOC_OBJ_CORE);
        node->pus = hwloc_get_nbobjs_inside_cpuset_by_type(topo, set, HWLOC_OBJ_PU);
        if (node->cores < 1)
            node->cores = node->pus > 0 ? node->pus : 1;
        /* hwloc makes up 1 GB per synthetic NUMA node unless the string
         * says "(memory=...)": the stated default is more useful */
        uint64_t mem = numa ? numa->attr->numanode.local_memory : 0;
        if (synthetic && !strstr(synthetic, "memory="))
            mem = 0;
        node->memory = mem ? (double)mem : d->memory;
        node->bandwidth = d->bandwidth;
        node->flops = d->flops * node->cores;
    }
    t->n_nodes = n;
    /* between NUMA nodes of one host a hop is an in-process message */
    t->link_bandwidth = 20e9;
    t->link_latency = 10e-6;
    hwloc_topology_destroy(topo);
    return 0;
}

/* ---- cluster YAML ---- */

typedef struct yctx {
    const char *name;
    yaml_document_t *doc;
    sl_err *err;
} yctx;

static int line_of(const yaml_node_t *n) { return n ? (int)n->start_mark.line + 1 : 0; }

static int yfail(const yctx *x, const yaml_node_t *n, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int yfail(const yctx *x, const yaml_node_t *n, const char *field, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return sl_fail(x->err, "%s:%d: %s: %s", x->name, line_of(n), field, msg);
}

static const char *scalar(const yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static int read_text(const yctx *x, const yaml_node_t *n, const char *field, char *dst, size_t cap)
{
    const char *s = scalar(n);
    if (!s)
        return yfail(x, n, field, "must be a string");
    size_t len = n->data.scalar.length;
    if (len == 0 || memchr(s, 0, len))
        return yfail(x, n, field, "must be a non-empty string");
    if (len >= cap)
        return yfail(x, n, field, "is too long (%zu bytes, at most %zu)", len, cap - 1);
    memcpy(dst, s, len);
    dst[len] = 0;
    return 0;
}

static int read_number(const yctx *x, const yaml_node_t *n, const char *field, double lo,
                       double hi, double *out)
{
    const char *s = scalar(n);
    if (!s || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return yfail(x, n, field, "must be an unquoted number");
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= lo && v <= hi))
        return yfail(x, n, field, "'%s' is not a number in [%g, %g]", s, lo, hi);
    *out = v;
    return 0;
}

/* Values of the known keys of a mapping (NULL when absent); unknown keys
 * and repeats are errors. */
static int read_map(const yctx *x, const yaml_node_t *map, const char *field,
                    const char *const *keys, int n_keys, yaml_node_t **vals)
{
    for (int i = 0; i < n_keys; i++)
        vals[i] = NULL;
    if (!map || map->type != YAML_MAPPING_NODE)
        return yfail(x, map, field, "must be a mapping");
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(x->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(x->doc, p->value);
        const char *ks = scalar(k);
        int found = -1;
        for (int i = 0; ks && i < n_keys; i++)
            if (strcmp(ks, keys[i]) == 0)
                found = i;
        if (found < 0)
            return yfail(x, k, field, "unknown key '%s'", ks ? ks : "?");
        if (vals[found])
            return yfail(x, k, field, "key '%s' given twice", ks);
        vals[found] = v;
    }
    return 0;
}

enum { N_NAME, N_ADDRESS, N_CORES, N_MEMORY, N_BW, N_GEMV, N_FLOPS, N_NUMA, N_KEYS };
static const char *const node_keys[N_KEYS] = {"name", "address", "cores", "memory_gb",
                                              "bandwidth_gb_s", "gemv_gflop_s", "matmul_gflop_s",
                                              "numa"};

static int read_node(const yctx *x, sl_topology *t, const yaml_node_t *n, int i,
                     const sl_node_defaults *d)
{
    char field[64];
    snprintf(field, sizeof field, "nodes[%d]", i);
    yaml_node_t *v[N_KEYS];
    if (read_map(x, n, field, node_keys, N_KEYS, v))
        return -1;
    sl_sched_node *node = &t->nodes[i];
    node->line = line_of(n);
    node->numa = -1;
    if (!v[N_NAME])
        return yfail(x, n, field, "needs a name");
    char sub[96];
    snprintf(sub, sizeof sub, "%s.name", field);
    if (read_text(x, v[N_NAME], sub, node->name, sizeof node->name))
        return -1;
    if (sl_topo_find(t, node->name) >= 0 && sl_topo_find(t, node->name) < i)
        return yfail(x, v[N_NAME], sub, "'%s' names another node already", node->name);
    snprintf(sub, sizeof sub, "%s.address", field);
    if (v[N_ADDRESS] && read_text(x, v[N_ADDRESS], sub, node->address, sizeof node->address))
        return -1;
    double cores = 1, mem = d->memory / (1u << 30), bw = d->bandwidth / 1e9, fl = 0, gemv = 0,
           numa = -1;
    snprintf(sub, sizeof sub, "%s.cores", field);
    if (v[N_CORES] && read_number(x, v[N_CORES], sub, 1, 1 << 20, &cores))
        return -1;
    snprintf(sub, sizeof sub, "%s.memory_gb", field);
    if (v[N_MEMORY] && read_number(x, v[N_MEMORY], sub, 0.001, 1 << 24, &mem))
        return -1;
    snprintf(sub, sizeof sub, "%s.bandwidth_gb_s", field);
    if (v[N_BW] && read_number(x, v[N_BW], sub, 0.001, 1e6, &bw))
        return -1;
    snprintf(sub, sizeof sub, "%s.gemv_gflop_s", field);
    if (v[N_GEMV] && read_number(x, v[N_GEMV], sub, 0, 1e9, &gemv))
        return -1;
    snprintf(sub, sizeof sub, "%s.matmul_gflop_s", field);
    if (v[N_FLOPS] && read_number(x, v[N_FLOPS], sub, 0.001, 1e9, &fl))
        return -1;
    snprintf(sub, sizeof sub, "%s.numa", field);
    if (v[N_NUMA] && read_number(x, v[N_NUMA], sub, 0, 4096, &numa))
        return -1;
    node->cores = node->pus = (int)cores;
    node->memory = mem * (1u << 30);
    node->bandwidth = bw * 1e9;
    node->flops = fl > 0 ? fl * 1e9 : d->flops * cores;
    node->numa = (int)numa;
    if (i > 0 && !node->address[0])
        return yfail(x, n, field, "node '%s' needs an address (only the first node, the "
                     "coordinator, may leave it out)", node->name);
    return 0;
}

enum { K_FROM, K_TO, K_BW, K_LAT, K_KEYS };
static const char *const link_keys[K_KEYS] = {"from", "to", "bandwidth_gb_s", "latency_ms"};

static int read_link_figures(const yctx *x, yaml_node_t **v, const char *field, double *bw,
                             double *lat)
{
    char sub[96];
    double b = 1.25, l = 0.3;
    snprintf(sub, sizeof sub, "%s.bandwidth_gb_s", field);
    if (v[K_BW] && read_number(x, v[K_BW], sub, 1e-6, 1e6, &b))
        return -1;
    snprintf(sub, sizeof sub, "%s.latency_ms", field);
    if (v[K_LAT] && read_number(x, v[K_LAT], sub, 0, 1e6, &l))
        return -1;
    *bw = b * 1e9;
    *lat = l * 1e-3;
    return 0;
}

static int read_link(const yctx *x, sl_topology *t, const yaml_node_t *n, int i)
{
    char field[64];
    snprintf(field, sizeof field, "links[%d]", i);
    yaml_node_t *v[K_KEYS];
    if (read_map(x, n, field, link_keys, K_KEYS, v))
        return -1;
    int ends[2];
    for (int e = 0; e < 2; e++) {
        char name[64], sub[96];
        snprintf(sub, sizeof sub, "%s.%s", field, e ? "to" : "from");
        if (!v[e])
            return yfail(x, n, field, "needs '%s'", e ? "to" : "from");
        if (read_text(x, v[e], sub, name, sizeof name))
            return -1;
        if ((ends[e] = sl_topo_find(t, name)) < 0)
            return yfail(x, v[e], sub, "no node is named '%s'", name);
    }
    if (ends[0] == ends[1])
        return yfail(x, n, field, "links a node to itself");
    sl_sched_link *l = &t->links[i];
    l->a = ends[0];
    l->b = ends[1];
    return read_link_figures(x, v, field, &l->bandwidth, &l->latency);
}

enum { T_NODES, T_LINKS, T_DEFAULT, T_KEYS };
static const char *const top_keys[T_KEYS] = {"nodes", "links", "default_link"};

static int read_cluster(const yctx *x, sl_topology *t, const sl_node_defaults *d)
{
    yaml_node_t *root = yaml_document_get_root_node(x->doc);
    if (!root)
        return sl_fail(x->err, "%s: empty cluster description", x->name);
    yaml_node_t *v[T_KEYS];
    if (read_map(x, root, "cluster", top_keys, T_KEYS, v))
        return -1;
    if (!v[T_NODES] || v[T_NODES]->type != YAML_SEQUENCE_NODE)
        return yfail(x, v[T_NODES] ? v[T_NODES] : root, "nodes", "must be a list of nodes");
    yaml_node_item_t *it = v[T_NODES]->data.sequence.items.start;
    int n = (int)(v[T_NODES]->data.sequence.items.top - it);
    if (n < 1 || n > SL_TOPO_MAX)
        return yfail(x, v[T_NODES], "nodes", "has %d nodes (1 to %d)", n, SL_TOPO_MAX);
    for (int i = 0; i < n; i++) {
        t->n_nodes = i + 1;
        if (read_node(x, t, yaml_document_get_node(x->doc, it[i]), i, d))
            return -1;
    }
    t->link_bandwidth = 1.25e9;
    t->link_latency = 0.3e-3;
    if (v[T_DEFAULT]) {
        yaml_node_t *dv[K_KEYS];
        if (read_map(x, v[T_DEFAULT], "default_link", link_keys, K_KEYS, dv))
            return -1;
        if (dv[K_FROM] || dv[K_TO])
            return yfail(x, v[T_DEFAULT], "default_link", "takes no 'from' or 'to'");
        if (read_link_figures(x, dv, "default_link", &t->link_bandwidth, &t->link_latency))
            return -1;
    }
    if (v[T_LINKS]) {
        if (v[T_LINKS]->type != YAML_SEQUENCE_NODE)
            return yfail(x, v[T_LINKS], "links", "must be a list");
        it = v[T_LINKS]->data.sequence.items.start;
        int nl = (int)(v[T_LINKS]->data.sequence.items.top - it);
        if (nl > SL_TOPO_MAX_LINKS)
            return yfail(x, v[T_LINKS], "links", "has %d links (at most %d)", nl, SL_TOPO_MAX_LINKS);
        for (int i = 0; i < nl; i++) {
            t->n_links = i + 1;
            if (read_link(x, t, yaml_document_get_node(x->doc, it[i]), i))
                return -1;
        }
    }
    return 0;
}

int sl_topo_cluster_parse(sl_topology *t, const char *text, size_t len, const char *name,
                          const sl_node_defaults *d, sl_err *err)
{
    topo_reset(t, name);
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser))
        return sl_fail(err, "%s: cannot start the YAML parser", name);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        sl_fail(err, "%s:%d: %s", name, (int)parser.problem_mark.line + 1,
                parser.problem ? parser.problem : "YAML syntax error");
        yaml_parser_delete(&parser);
        return -1;
    }
    yctx x = {name, &doc, err};
    int rc = read_cluster(&x, t, d);
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return rc;
}

int sl_topo_cluster_load(sl_topology *t, const char *path, const sl_node_defaults *d, sl_err *err)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return sl_fail(err, "%s: cannot open: %m", path);
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 > cap) {
            cap = (len + 4096) * 2;
            if (cap > (64u << 20)) {
                free(buf);
                fclose(fp);
                return sl_fail(err, "%s: larger than 64 MB: not a cluster description", path);
            }
            char *g = realloc(buf, cap);
            if (!g) {
                free(buf);
                fclose(fp);
                return sl_fail(err, "%s: out of memory", path);
            }
            buf = g;
        }
        size_t got = fread(buf + len, 1, 4096, fp);
        len += got;
        if (got < 4096)
            break;
    }
    fclose(fp);
    int rc = sl_topo_cluster_parse(t, buf, len, path, d, err);
    free(buf);
    return rc;
}

/* ---- queries ---- */

int sl_topo_find(const sl_topology *t, const char *name)
{
    for (int i = 0; i < t->n_nodes; i++)
        if (strcmp(t->nodes[i].name, name) == 0)
            return i;
    return -1;
}

void sl_topo_link(const sl_topology *t, int a, int b, double *bandwidth, double *latency)
{
    if (a == b) {
        *bandwidth = 1e12;
        *latency = 0;
        return;
    }
    for (int i = 0; i < t->n_links; i++) {
        const sl_sched_link *l = &t->links[i];
        if ((l->a == a && l->b == b) || (l->a == b && l->b == a)) {
            *bandwidth = l->bandwidth;
            *latency = l->latency;
            return;
        }
    }
    *bandwidth = t->link_bandwidth;
    *latency = t->link_latency;
}

void sl_topo_print(const sl_topology *t, FILE *out)
{
    fprintf(out, "topology %s", t->source);
    if (t->one_host)
        fprintf(out, ": %d package(s), %d NUMA node(s), %d cores, %d PUs, L2 %zu KB, L3 %zu KB",
                t->packages, t->numa_nodes, t->cores, t->pus, t->l2_bytes >> 10, t->l3_bytes >> 10);
    fprintf(out, "\n");
    for (int i = 0; i < t->n_nodes; i++) {
        const sl_sched_node *n = &t->nodes[i];
        fprintf(out, "  %-12s %3d cores %7.1f GB  %6.1f GB/s  %8.1f GFLOP/s%s%s\n", n->name,
                n->cores, n->memory / (1u << 30), n->bandwidth / 1e9, n->flops / 1e9,
                n->address[0] ? "  " : "", n->address);
    }
}
