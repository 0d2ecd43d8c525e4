/* Stage metrics (see metrics.h): histograms and their two renderings. */
#include "pipeline/metrics.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const double pl_step_bounds[] = {0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                 0.05,   0.1,    0.25,  0.5,    1.0,   2.5,  10.0};
const int pl_n_step_bounds = (int)(sizeof pl_step_bounds / sizeof pl_step_bounds[0]);
const double pl_depth_bounds[] = {0, 1, 2, 4, 8, 16, 32, 64};
const int pl_n_depth_bounds = (int)(sizeof pl_depth_bounds / sizeof pl_depth_bounds[0]);

void pl_hist_init(pl_hist *h, const double *bounds, int n_bounds)
{
    memset(h, 0, sizeof *h);
    h->bounds = bounds;
    h->n_bounds = n_bounds < PL_HIST_MAX ? n_bounds : PL_HIST_MAX;
}

void pl_hist_observe(pl_hist *h, double v)
{
    int i = 0;
    while (i < h->n_bounds && v > h->bounds[i])
        i++;
    h->counts[i]++;
    h->n++;
    h->sum += v;
}

uint64_t pl_hist_cumulative(const pl_hist *h, int i)
{
    uint64_t c = 0;
    for (int k = 0; k <= i && k <= h->n_bounds; k++)
        c += h->counts[k];
    return c;
}

void pl_stage_metrics_init(pl_stage_metrics *m, const char *name, int index)
{
    memset(m, 0, sizeof *m);
    snprintf(m->name, sizeof m->name, "%s", name);
    m->index = index;
    pl_hist_init(&m->step_seconds, pl_step_bounds, pl_n_step_bounds);
    pl_hist_init(&m->queue, pl_depth_bounds, pl_n_depth_bounds);
}

/* ---- a growing string ---- */

typedef struct sbuf {
    char *s;
    size_t len, cap;
    bool failed;
} sbuf;

__attribute__((format(printf, 2, 3))) static void put(sbuf *b, const char *fmt, ...)
{
    if (b->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = true;
            return;
        }
        if (b->s && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap : 1024;
        while (cap <= b->len + (size_t)n)
            cap *= 2;
        char *s = realloc(b->s, cap);
        if (!s) {
            b->failed = true;
            return;
        }
        b->s = s;
        b->cap = cap;
    }
}

static char *finish(sbuf *b)
{
    if (!b->failed && !b->s)
        put(b, "%s", "");
    if (b->failed) {
        free(b->s);
        return NULL;
    }
    return b->s;
}

/* ---- text for `sluice status` ---- */

static double hist_mean(const pl_hist *h)
{
    return h->n ? h->sum / (double)h->n : 0.0;
}

/* The smallest bound under which at least q of the observations fall (the
 * last bound, marked '>', when they lie beyond it). */
static void hist_quantile(const pl_hist *h, double q, char *out, size_t size)
{
    if (!h->n || !h->n_bounds) {
        snprintf(out, size, "-");
        return;
    }
    for (int i = 0; i < h->n_bounds; i++)
        if ((double)pl_hist_cumulative(h, i) >= q * (double)h->n) {
            snprintf(out, size, "<=%g", h->bounds[i]);
            return;
        }
    snprintf(out, size, ">%g", h->bounds[h->n_bounds - 1]);
}

/* The bucket of the largest observation: "<=8", ">64", or "-" when empty. */
static void hist_max(const pl_hist *h, char *out, size_t size)
{
    int top = h->n_bounds;
    while (top >= 0 && h->counts[top] == 0)
        top--;
    if (top < 0)
        snprintf(out, size, "-");
    else if (top < h->n_bounds)
        snprintf(out, size, "<=%g", h->bounds[top]);
    else
        snprintf(out, size, ">%g", h->bounds[h->n_bounds - 1]);
}

void pl_pool_text(char *out, size_t size, uint64_t calls, uint64_t split_calls, uint64_t thread_sum,
                  uint32_t last_threads, double op_s, double split_s)
{
    int n = snprintf(out, size, "pool ops %llu (%.3f s): split %llu", (unsigned long long)calls, op_s,
                     (unsigned long long)split_calls);
    if (split_calls && n >= 0 && (size_t)n < size)
        snprintf(out + n, size - (size_t)n, ", %.0f%% of the op time, on %.2f threads (last %u)",
                 op_s > 0 ? 100.0 * (split_s < op_s ? split_s : op_s) / op_s : 0.0,
                 (double)thread_sum / (double)split_calls, last_threads);
}

char *pl_metrics_text(const pl_stage_metrics *m, int n)
{
    sbuf b = {0};
    for (int i = 0; i < n; i++) {
        const pl_stage_metrics *s = &m[i];
        char p50[32], p99[32];
        hist_quantile(&s->step_seconds, 0.5, p50, sizeof p50);
        hist_quantile(&s->step_seconds, 0.99, p99, sizeof p99);
        put(&b, "stage %d %s\n", s->index, s->name);
        put(&b, "  messages %llu  tokens %llu  errors %llu  refused %llu  dropped %llu  foreign %llu\n",
            (unsigned long long)s->messages, (unsigned long long)s->tokens,
            (unsigned long long)s->errors, (unsigned long long)s->refused,
            (unsigned long long)s->dropped, (unsigned long long)s->foreign);
        put(&b, "  busy %.3f s  step mean %.6f s  p50 %s s  p99 %s s\n", s->busy_seconds,
            hist_mean(&s->step_seconds), p50, p99);
        char pool[160];
        pl_pool_text(pool, sizeof pool, s->pool_calls, s->pool_split_calls, s->pool_thread_sum, s->pool_threads,
                     s->pool_op_seconds, s->pool_split_seconds);
        put(&b, "  %s  barrier wait %.3f s\n", pool, s->pool_wait_seconds);
        char top[32];
        hist_max(&s->queue, top, sizeof top);
        put(&b, "  queue depth %u (mean %.2f, max %s)\n", s->queue_depth, hist_mean(&s->queue), top);
    }
    return finish(&b);
}

/* ---- Prometheus text format ---- */

/* A label value with \, " and newline escaped, as the format requires. */
static void put_label(sbuf *b, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\')
            put(b, "\\\\");
        else if (*v == '"')
            put(b, "\\\"");
        else if (*v == '\n')
            put(b, "\\n");
        else
            put(b, "%c", *v);
    }
}

static void labels(sbuf *b, const pl_stage_metrics *s)
{
    put(b, "{stage=\"");
    put_label(b, s->name);
    put(b, "\",index=\"%d\"", s->index);
}

typedef enum {
    F_MESSAGES, F_TOKENS, F_ERRORS, F_REFUSED, F_DROPPED, F_FOREIGN, F_BUSY, F_DEPTH,
    F_THREADS, F_POOL_CALLS, F_SPLIT_CALLS, F_THREAD_SUM, F_OP_S, F_SPLIT_S, F_WAIT
} field;

static void put_value(sbuf *b, const pl_stage_metrics *s, field f)
{
    switch (f) {
    case F_MESSAGES: put(b, "%llu", (unsigned long long)s->messages); break;
    case F_TOKENS: put(b, "%llu", (unsigned long long)s->tokens); break;
    case F_ERRORS: put(b, "%llu", (unsigned long long)s->errors); break;
    case F_REFUSED: put(b, "%llu", (unsigned long long)s->refused); break;
    case F_DROPPED: put(b, "%llu", (unsigned long long)s->dropped); break;
    case F_FOREIGN: put(b, "%llu", (unsigned long long)s->foreign); break;
    case F_BUSY: put(b, "%.9g", s->busy_seconds); break;
    case F_DEPTH: put(b, "%u", s->queue_depth); break;
    case F_THREADS: put(b, "%u", s->pool_threads); break;
    case F_POOL_CALLS: put(b, "%llu", (unsigned long long)s->pool_calls); break;
    case F_SPLIT_CALLS: put(b, "%llu", (unsigned long long)s->pool_split_calls); break;
    case F_THREAD_SUM: put(b, "%llu", (unsigned long long)s->pool_thread_sum); break;
    case F_OP_S: put(b, "%.9g", s->pool_op_seconds); break;
    case F_SPLIT_S: put(b, "%.9g", s->pool_split_seconds); break;
    case F_WAIT: put(b, "%.9g", s->pool_wait_seconds); break;
    }
}

static void family(sbuf *b, const pl_stage_metrics *m, int n, const char *name, const char *type,
                   const char *help, field f)
{
    put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    for (int i = 0; i < n; i++) {
        put(b, "%s", name);
        labels(b, &m[i]);
        put(b, "} ");
        put_value(b, &m[i], f);
        put(b, "\n");
    }
}

static void histogram(sbuf *b, const pl_stage_metrics *m, int n, const char *name, const char *help,
                      size_t offset)
{
    put(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    for (int i = 0; i < n; i++) {
        const pl_hist *h = (const pl_hist *)((const char *)&m[i] + offset);
        for (int k = 0; k < h->n_bounds; k++) {
            put(b, "%s_bucket", name);
            labels(b, &m[i]);
            put(b, ",le=\"%g\"} %llu\n", h->bounds[k], (unsigned long long)pl_hist_cumulative(h, k));
        }
        put(b, "%s_bucket", name);
        labels(b, &m[i]);
        put(b, ",le=\"+Inf\"} %llu\n", (unsigned long long)h->n);
        put(b, "%s_sum", name);
        labels(b, &m[i]);
        put(b, "} %.9g\n", h->sum);
        put(b, "%s_count", name);
        labels(b, &m[i]);
        put(b, "} %llu\n", (unsigned long long)h->n);
    }
}

char *pl_metrics_prometheus(const pl_stage_metrics *m, int n)
{
    sbuf b = {0};
    family(&b, m, n, "sluice_stage_messages_total", "counter", "Messages a stage received and processed.",
           F_MESSAGES);
    family(&b, m, n, "sluice_stage_tokens_total", "counter", "Rows (tokens) of the messages a stage processed.",
           F_TOKENS);
    family(&b, m, n, "sluice_stage_errors_total", "counter",
           "Messages a stage failed or answered with an error.", F_ERRORS);
    family(&b, m, n, "sluice_stage_refused_total", "counter",
           "Messages refused for going past a limit (sizes, slots, context, rows).", F_REFUSED);
    family(&b, m, n, "sluice_stage_dropped_total", "counter", "Malformed messages dropped on receipt.",
           F_DROPPED);
    family(&b, m, n, "sluice_stage_foreign_total", "counter",
           "Messages of another pipeline run (or of none) dropped on receipt (counted in dropped too).",
           F_FOREIGN);
    family(&b, m, n, "sluice_stage_busy_seconds_total", "counter", "Time a stage spent processing.", F_BUSY);
    family(&b, m, n, "sluice_stage_queue_depth", "gauge",
           "Messages waiting when the stage took its last one.", F_DEPTH);
    family(&b, m, n, "sluice_stage_threads", "gauge",
           "Threads the stage's last split op used (0: none yet; the pool adapts it).", F_THREADS);
    family(&b, m, n, "sluice_stage_pool_calls_total", "counter",
           "Ops a stage ran through the worker pool, split or on its thread alone.", F_POOL_CALLS);
    family(&b, m, n, "sluice_stage_pool_split_calls_total", "counter",
           "Of those, the ops split over more than one thread.", F_SPLIT_CALLS);
    family(&b, m, n, "sluice_stage_pool_threads_total", "counter",
           "Threads the split ops used, summed (over split calls: threads per split op).", F_THREAD_SUM);
    family(&b, m, n, "sluice_stage_pool_op_seconds_total", "counter", "Wall time of a stage's pool ops.",
           F_OP_S);
    family(&b, m, n, "sluice_stage_pool_split_seconds_total", "counter",
           "Wall time of its split ops (over op seconds: the share of op time that ran split).", F_SPLIT_S);
    family(&b, m, n, "sluice_stage_barrier_wait_seconds_total", "counter",
           "Time a stage's thread waited at the pool's barrier for other threads.", F_WAIT);
    histogram(&b, m, n, "sluice_stage_step_seconds", "Time a stage took for one message.",
              offsetof(pl_stage_metrics, step_seconds));
    histogram(&b, m, n, "sluice_stage_queue_depth_observed", "Messages waiting each time a stage took one.",
              offsetof(pl_stage_metrics, queue));
    return finish(&b);
}

char *pl_metrics_prometheus_client(const pl_client_metrics *c)
{
    sbuf b = {0};
    put(&b, "# HELP sluice_client_requests_in_flight Requests submitted and not yet ended.\n"
            "# TYPE sluice_client_requests_in_flight gauge\nsluice_client_requests_in_flight %llu\n",
        (unsigned long long)c->in_flight);
    put(&b, "# HELP sluice_client_max_requests The limit on requests in flight (limits.max_requests).\n"
            "# TYPE sluice_client_max_requests gauge\nsluice_client_max_requests %llu\n",
        (unsigned long long)c->max_requests);
    put(&b, "# HELP sluice_client_requests_total Requests accepted.\n"
            "# TYPE sluice_client_requests_total counter\nsluice_client_requests_total %llu\n",
        (unsigned long long)c->submitted);
    put(&b, "# HELP sluice_client_requests_refused_total Requests refused for going past max_requests.\n"
            "# TYPE sluice_client_requests_refused_total counter\nsluice_client_requests_refused_total %llu\n",
        (unsigned long long)c->refused);
    put(&b, "# HELP sluice_client_foreign_total Answers of another pipeline run the driver dropped.\n"
            "# TYPE sluice_client_foreign_total counter\nsluice_client_foreign_total %llu\n",
        (unsigned long long)c->foreign);
    return finish(&b);
}

/* ---- the machine form a worker answers a coordinator with ----
 * One line a stage: "stage INDEX NAME messages tokens errors refused
 * dropped foreign busy_seconds queue_depth", the pool's counters
 * "threads calls split_calls thread_sum op_seconds split_seconds
 * wait_seconds", then each histogram (step seconds, queue) as "n sum
 * count..." with one count per bucket (+Inf last). The pool's counters are
 * read one by one while the stage runs, so no relation between them is
 * required of a line. */

static void put_hist_counts(sbuf *b, const pl_hist *h)
{
    put(b, " %llu %.9g", (unsigned long long)h->n, h->sum);
    for (int i = 0; i <= h->n_bounds; i++)
        put(b, " %llu", (unsigned long long)h->counts[i]);
}

char *pl_metrics_encode(const pl_stage_metrics *m, int n)
{
    sbuf b = {0};
    for (int i = 0; i < n; i++) {
        const pl_stage_metrics *s = &m[i];
        char name[sizeof s->name];
        snprintf(name, sizeof name, "%s", s->name[0] ? s->name : "?");
        for (char *c = name; *c; c++)
            if (*c <= ' ' || *c > '~')
                *c = '_';
        put(&b, "stage %d %s %llu %llu %llu %llu %llu %llu %.9g %u", s->index, name,
            (unsigned long long)s->messages, (unsigned long long)s->tokens, (unsigned long long)s->errors,
            (unsigned long long)s->refused, (unsigned long long)s->dropped, (unsigned long long)s->foreign,
            s->busy_seconds, s->queue_depth);
        put(&b, " %u %llu %llu %llu %.9g %.9g %.9g", s->pool_threads, (unsigned long long)s->pool_calls,
            (unsigned long long)s->pool_split_calls, (unsigned long long)s->pool_thread_sum,
            s->pool_op_seconds, s->pool_split_seconds, s->pool_wait_seconds);
        put_hist_counts(&b, &s->step_seconds);
        put_hist_counts(&b, &s->queue);
        put(&b, "\n");
    }
    return finish(&b);
}

/* A cursor over one line's space-separated fields. */
typedef struct fields {
    const char *at, *end;
} fields;

static bool next_field(fields *f, char *out, size_t size)
{
    while (f->at < f->end && *f->at == ' ')
        f->at++;
    const char *start = f->at;
    while (f->at < f->end && *f->at != ' ')
        f->at++;
    size_t len = (size_t)(f->at - start);
    if (len == 0 || len >= size)
        return false;
    memcpy(out, start, len);
    out[len] = '\0';
    return true;
}

static bool next_u64(fields *f, uint64_t *v)
{
    char w[32], *end;
    if (!next_field(f, w, sizeof w) || w[0] < '0' || w[0] > '9')
        return false;
    errno = 0;
    unsigned long long x = strtoull(w, &end, 10);
    *v = x;
    return *end == '\0' && errno == 0;
}

static bool next_double(fields *f, double *v)
{
    char w[40], *end;
    if (!next_field(f, w, sizeof w))
        return false;
    *v = strtod(w, &end);
    return *end == '\0' && isfinite(*v) && *v >= 0;
}

static bool read_hist(fields *f, pl_hist *h)
{
    uint64_t total = 0;
    if (!next_u64(f, &h->n) || !next_double(f, &h->sum))
        return false;
    for (int i = 0; i <= h->n_bounds; i++) {
        if (!next_u64(f, &h->counts[i]) || h->counts[i] > h->n - total)
            return false;
        total += h->counts[i];
    }
    return total == h->n;
}

static bool read_stage(fields *f, pl_stage_metrics *s)
{
    char word[16], name[sizeof s->name];
    uint64_t index, depth, threads;
    if (!next_field(f, word, sizeof word) || strcmp(word, "stage") != 0 || !next_u64(f, &index) ||
        index > 4096 || !next_field(f, name, sizeof name))
        return false;
    for (const char *c = name; *c; c++)
        if (*c <= ' ' || *c > '~')
            return false; /* names go out as Prometheus labels and page text */
    pl_stage_metrics_init(s, name, (int)index);
    char rest[2];
    return next_u64(f, &s->messages) && next_u64(f, &s->tokens) && next_u64(f, &s->errors) &&
           next_u64(f, &s->refused) && next_u64(f, &s->dropped) && next_u64(f, &s->foreign) &&
           s->foreign <= s->dropped && next_double(f, &s->busy_seconds) &&
           next_u64(f, &depth) && depth <= UINT32_MAX && (s->queue_depth = (uint32_t)depth, true) &&
           next_u64(f, &threads) && threads <= UINT32_MAX && (s->pool_threads = (uint32_t)threads, true) &&
           next_u64(f, &s->pool_calls) && next_u64(f, &s->pool_split_calls) &&
           next_u64(f, &s->pool_thread_sum) && next_double(f, &s->pool_op_seconds) &&
           next_double(f, &s->pool_split_seconds) && next_double(f, &s->pool_wait_seconds) &&
           read_hist(f, &s->step_seconds) && read_hist(f, &s->queue) && !next_field(f, rest, sizeof rest);
}

int pl_metrics_decode(const char *text, pl_stage_metrics *out, int max, sl_err *err)
{
    int n = 0, line = 1;
    for (const char *at = text; *at; line++) {
        const char *end = strchr(at, '\n');
        if (!end)
            end = at + strlen(at);
        fields f = {at, end};
        if (n == max)
            return sl_fail(err, "stage metrics: more than %d stages", max);
        if (!read_stage(&f, &out[n]))
            return sl_fail(err, "stage metrics: line %d is not 'stage INDEX NAME' and %d counters", line,
                           8 + 7 + 4 + pl_n_step_bounds + pl_n_depth_bounds);
        n++;
        at = *end ? end + 1 : end;
    }
    return n;
}
