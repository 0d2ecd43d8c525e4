/* Where stages can run: nodes (a NUMA node of this machine, of a synthetic
 * machine, or a host of a cluster) with their cores, memory, the bandwidth
 * a decode streams weights at and their matmul throughput, and the links
 * between them. Built from hwloc (this machine, or a synthetic topology
 * string such as "pack:2 numa:1 core:16 pu:2") or from a cluster YAML file:
 *
 *   nodes:
 *     - name: a                      # required, unique
 *       address: tcp://10.0.0.1:7100 # where its `sluice worker` listens
 *       cores: 16
 *       memory_gb: 64
 *       bandwidth_gb_s: 40           # `sluice bench --calibrate` measures these
 *       matmul_gflop_s: 500
 *   links:                           # optional; others use default_link
 *     - {from: a, to: b, bandwidth_gb_s: 1.25, latency_ms: 0.2}
 *   default_link: {bandwidth_gb_s: 1.25, latency_ms: 0.3}
 *
 * The first node is the coordinator. Errors name file:line and field. */
#ifndef SLUICE_SCHED_TOPOLOGY_H
#define SLUICE_SCHED_TOPOLOGY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "util/err.h"

#define SL_TOPO_MAX 64
#define SL_TOPO_MAX_LINKS 512

typedef struct sl_sched_node {
    char name[64];
    char address[256];   /* empty: the coordinator's process or host */
    int numa;            /* NUMA node within its host to bind to; -1: none */
    int cores, pus;
    double memory;       /* bytes */
    double bandwidth;    /* bytes/s */
    double flops;        /* FLOP/s */
    int line;            /* in the cluster file */
} sl_sched_node;

typedef struct sl_sched_link {
    int a, b;
    double bandwidth;    /* bytes/s */
    double latency;      /* seconds */
} sl_sched_link;

typedef struct sl_topology {
    char source[512];
    bool one_host;       /* NUMA nodes of one machine: stages share a process */
    int n_nodes;
    sl_sched_node nodes[SL_TOPO_MAX];
    int n_links;
    sl_sched_link links[SL_TOPO_MAX_LINKS];
    double link_bandwidth, link_latency; /* between nodes without a link entry */
    /* what hwloc reported (machine or synthetic) */
    int packages, numa_nodes, cores, pus;
    size_t l2_bytes, l3_bytes;
} sl_topology;

/* Figures a node gets when its source does not state them. */
typedef struct sl_node_defaults {
    double bandwidth;    /* bytes/s per NUMA node */
    double flops;        /* FLOP/s per core */
    double memory;       /* bytes per NUMA node when hwloc reports none */
} sl_node_defaults;
void sl_node_defaults_init(sl_node_defaults *d); /* 25 GB/s, 50 GFLOP/s per core, 64 GiB */

/* This machine (synthetic NULL) or a synthetic one: a node per NUMA node. */
int sl_topo_hwloc(sl_topology *t, const char *synthetic, const sl_node_defaults *d, sl_err *err);
int sl_topo_cluster_load(sl_topology *t, const char *path, const sl_node_defaults *d, sl_err *err);
int sl_topo_cluster_parse(sl_topology *t, const char *text, size_t len, const char *name,
                          const sl_node_defaults *d, sl_err *err);

/* Bandwidth and latency from node a to node b (0 latency for a == b). */
void sl_topo_link(const sl_topology *t, int a, int b, double *bandwidth, double *latency);
int sl_topo_find(const sl_topology *t, const char *name);
void sl_topo_print(const sl_topology *t, FILE *out);

#endif
