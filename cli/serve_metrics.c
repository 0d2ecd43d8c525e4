/* /metrics of sluice serve: the pipeline's Prometheus text (what
 * --metrics-port serves) followed by the server's own families: requests
 * by endpoint and status, queue and running gauges, time to first token and
 * per-request decode speed histograms. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/pipecfg.h"
#include "cli/serve.h"

typedef struct textbuf {
    char *s;
    size_t len, cap;
    bool oom;
} textbuf;

__attribute__((format(printf, 2, 3))) static void put(textbuf *b, const char *fmt, ...)
{
    for (int tries = 0; tries < 2 && !b->oom; tries++) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if (b->s && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = (b->cap + (size_t)n + 1) * 2;
        char *t = realloc(b->s, cap);
        if (!t) {
            b->oom = true;
            return;
        }
        b->s = t;
        b->cap = cap;
    }
}

static void put_hist(textbuf *b, const char *name, const char *help, const pl_hist *h)
{
    put(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    for (int i = 0; i < h->n_bounds; i++)
        put(b, "%s_bucket{le=\"%g\"} %llu\n", name, h->bounds[i], (unsigned long long)pl_hist_cumulative(h, i));
    put(b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name, (unsigned long long)h->n, name,
        h->sum, name, (unsigned long long)h->n);
}

static void put_counts(textbuf *b, const sv_counts *c)
{
    static const char *const eps[SV_N_ENDPOINTS] = {"/v1/chat/completions", "/v1/completions", "/v1/models",
                                                    "/health", "/metrics", "/", "other"};
    static const char *const codes[6] = {"2xx", "400", "401", "429", "5xx", "other"};
    put(b, "# HELP sluice_http_requests_total HTTP requests answered, by endpoint and status\n"
           "# TYPE sluice_http_requests_total counter\n");
    for (int e = 0; e < SV_N_ENDPOINTS; e++)
        for (int k = 0; k < 6; k++)
            if (c->by[e][k] || e <= 1)
                put(b, "sluice_http_requests_total{endpoint=\"%s\",status=\"%s\"} %llu\n", eps[e], codes[k],
                    (unsigned long long)c->by[e][k]);
}

char *sv_metrics_text(sv_server *s)
{
    char *pipe = cli_pipeline_prometheus(s->pipe);
    if (!pipe)
        return NULL;
    textbuf b = {0};
    put(&b, "%s", pipe);
    free(pipe);
    pthread_mutex_lock(&s->mu);
    put_counts(&b, &s->counts);
    put(&b, "# HELP sluice_server_queue_length Requests waiting for one of limits.max_requests to end\n"
            "# TYPE sluice_server_queue_length gauge\nsluice_server_queue_length %d\n", s->n_queued);
    put(&b, "# HELP sluice_server_queue_max Requests that may wait (--queue); past it 429\n"
            "# TYPE sluice_server_queue_max gauge\nsluice_server_queue_max %d\n", s->max_queue);
    put(&b, "# HELP sluice_server_requests_running Requests in the pipeline\n"
            "# TYPE sluice_server_requests_running gauge\nsluice_server_requests_running %d\n", s->n_running);
    put(&b, "# HELP sluice_server_tokens_total Tokens generated\n"
            "# TYPE sluice_server_tokens_total counter\nsluice_server_tokens_total %llu\n",
        (unsigned long long)s->tokens_out);
    put_hist(&b, "sluice_server_time_to_first_token_seconds", "Arrival of a request to its first token", &s->ttft);
    put_hist(&b, "sluice_server_decode_tokens_per_second", "A request's tokens after its first over their time",
             &s->tok_s);
    pthread_mutex_unlock(&s->mu);
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    return b.s;
}
