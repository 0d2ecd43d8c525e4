/* Metrics of a pipeline's stages: counters and fixed-bucket histograms,
 * kept by each stage host (under the host's lock) and rendered two ways:
 * plain text for `sluice status ADDR`, and Prometheus exposition text for
 * the optional HTTP port (`--metrics-port N`, GET /metrics).
 *
 * A histogram has fixed upper bounds (a bucket counts the observations at
 * most its bound; one more bucket, +Inf, takes the rest), so observing is a
 * short loop with no allocation: cheap enough for every step of a stage. */
#ifndef SLUICE_METRICS_H
#define SLUICE_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

#define PL_HIST_MAX 16

typedef struct pl_hist {
    const double *bounds;          /* ascending upper bounds, n_bounds of them (static) */
    int n_bounds;                  /* at most PL_HIST_MAX */
    uint64_t counts[PL_HIST_MAX + 1]; /* per bucket (not cumulative); [n_bounds]: +Inf */
    uint64_t n;
    double sum;
} pl_hist;

/* The bounds every stage uses: step time in seconds, and the queue depth
 * (messages waiting behind the one a stage takes). */
extern const double pl_step_bounds[];
extern const int pl_n_step_bounds;
extern const double pl_depth_bounds[];
extern const int pl_n_depth_bounds;

void pl_hist_init(pl_hist *h, const double *bounds, int n_bounds);
void pl_hist_observe(pl_hist *h, double v);
/* Observations at most bounds[i] (cumulative, as Prometheus counts them). */
uint64_t pl_hist_cumulative(const pl_hist *h, int i);

/* One stage's metrics (a snapshot: plain data, copied out of its host). */
typedef struct pl_stage_metrics {
    char name[64];                 /* "layers[0,3)" */
    int index;                     /* position in the pipeline */
    uint64_t messages;             /* messages received and handed to the stage */
    uint64_t tokens;               /* rows of those messages */
    uint64_t errors;               /* messages the stage answered with an ERROR, or failed on */
    uint64_t refused;              /* messages past a limit (wire sizes, slots, context, rows) */
    uint64_t dropped;              /* malformed messages dropped on receipt (refused included) */
    uint64_t foreign;              /* of those, well-formed ones of another pipeline run (or
                                    * none): Header.run_id not the stage's */
    double busy_seconds;
    uint32_t queue_depth;          /* messages waiting when the stage took its last one */
    /* the stage's ops on the worker pool (util/pool.h: sl_pool_stats): all
     * of them and their time, those split over more than one thread and
     * their time, the threads the split ones used (sum; the last one's
     * count, 0 before any), and the stage thread's wait at their barriers */
    uint64_t pool_calls, pool_split_calls, pool_thread_sum;
    uint32_t pool_threads;
    double pool_op_seconds, pool_split_seconds, pool_wait_seconds;
    pl_hist step_seconds;
    pl_hist queue;
} pl_stage_metrics;

void pl_stage_metrics_init(pl_stage_metrics *m, const char *name, int index);

/* What a stage's pool counters say, as text: its ops and their time, how
 * many split, and (when some did) the share of the op time they took and
 * the threads a split op used (mean, and the last one's). */
void pl_pool_text(char *out, size_t size, uint64_t calls, uint64_t split_calls, uint64_t thread_sum,
                  uint32_t last_threads, double op_s, double split_s);

/* Human-readable text, one block a stage; returns a malloc'd string (NULL:
 * out of memory). */
char *pl_metrics_text(const pl_stage_metrics *m, int n);
/* Prometheus text exposition format (version 0.0.4): every metric family
 * with its HELP and TYPE lines, stages labelled stage="NAME",index="I".
 * Returns a malloc'd string (NULL: out of memory). */
char *pl_metrics_prometheus(const pl_stage_metrics *m, int n);

/* The machine form of n stages' metrics, which a worker answers its
 * coordinator's STATUS PL_METRICS_ASK with (one line a stage; every count
 * but the pool's, foreign among them, and both histograms, so the
 * coordinator's /metrics shows remote stages as its own). Malloc'd; NULL:
 * out of memory. */
#define PL_METRICS_ASK "metrics"
char *pl_metrics_encode(const pl_stage_metrics *m, int n);
/* Reads pl_metrics_encode's text (from another host: checked, a foreign
 * count past its dropped refused) into at most max stages; returns how
 * many, or -1 with err naming the line at fault. */
int pl_metrics_decode(const char *text, pl_stage_metrics *out, int max, sl_err *err);

/* The client's side of a pipeline (sl_pipeline_submit): requests. */
typedef struct pl_client_metrics {
    uint64_t in_flight;            /* submitted and not yet ended */
    uint64_t submitted;            /* accepted by submit over the pipeline's life */
    uint64_t refused;              /* refused by submit: past max_requests in flight */
    uint64_t max_requests;         /* the limit */
    uint64_t foreign;              /* answers of another pipeline run the driver dropped */
} pl_client_metrics;

/* Prometheus text of the client counters: sluice_client_requests_in_flight
 * and sluice_client_max_requests (gauges), sluice_client_requests_total,
 * sluice_client_requests_refused_total and sluice_client_foreign_total
 * (counters). Malloc'd; NULL: out of
 * memory. */
char *pl_metrics_prometheus_client(const pl_client_metrics *c);

#endif
