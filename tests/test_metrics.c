/* Stage metrics and limits: histograms bucket as documented; the text and
 * Prometheus renderings say what the counters hold; after a run every
 * stage counted exactly the messages and tokens the driver sent; a message
 * past each limit (rows, slot, position, frame size, message size) is
 * refused with an error naming the limit and counted, and the pipeline
 * still serves; a client past max_requests is refused.
 *
 * The model is a synthetic gemma3 (`sluice synth --size test`: d_model 256,
 * 6 layers). */
#include "pipeline/client.h"
#include "pipeline/host.h"
#include "pipeline/metrics.h"
#include "pipeline/metrics_http.h"
#include "pipeline/status.h"
#include "pipeline/wire.h"
#include "tests/lib/ports.h"
#include "tests/test.h"
#include "tests/lib/open.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <regex.h>
#include <sys/socket.h>
#include <stdint.h>
#include <unistd.h>
#include <zmq.h>

#define D_MODEL 256

static char model_path[512];
static char tmpdir[256];

/* ---- histograms and rendering ---- */

static void check_hist(void)
{
    static const double bounds[] = {1, 2, 4};
    pl_hist h;
    pl_hist_init(&h, bounds, 3);
    const double v[] = {0.5, 1, 1.5, 3, 4, 5, 100};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        pl_hist_observe(&h, v[i]);
    /* a bucket holds the values at most its bound: 1 takes 0.5 and 1 */
    CHECK(h.counts[0] == 2 && h.counts[1] == 1 && h.counts[2] == 2 && h.counts[3] == 2);
    CHECK(pl_hist_cumulative(&h, 0) == 2 && pl_hist_cumulative(&h, 1) == 3 &&
          pl_hist_cumulative(&h, 2) == 5 && pl_hist_cumulative(&h, 3) == 7);
    CHECK(h.n == 7);
    CHECK_NEAR(h.sum, 115.0, 1e-9);
}

/* Every line of Prometheus text: a comment (# HELP/# TYPE name ...), or
 * name{label="value",...} number. Returns the number of sample lines, -1
 * (with the line printed) when one does not parse. */
static int prom_samples(const char *text)
{
    regex_t sample, comment;
    CHECK(regcomp(&sample,
                  "^[a-zA-Z_:][a-zA-Z0-9_:]*(\\{[a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\\\]|\\\\.)*\""
                  "(,[a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\\\]|\\\\.)*\")*\\})? "
                  "(-?[0-9.eE+-]+|\\+Inf|-Inf|NaN)$",
                  REG_EXTENDED | REG_NOSUB) == 0);
    CHECK(regcomp(&comment, "^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+$", REG_EXTENDED | REG_NOSUB) == 0);
    int n = 0;
    const char *p = text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        if (!nl) {
            fprintf(stderr, "no newline at the end of: %s\n", p);
            n = -1;
            break;
        }
        char line[1024];
        size_t len = (size_t)(nl - p) < sizeof line - 1 ? (size_t)(nl - p) : sizeof line - 1;
        memcpy(line, p, len);
        line[len] = '\0';
        if (regexec(&comment, line, 0, NULL, 0) == 0) {
        } else if (regexec(&sample, line, 0, NULL, 0) == 0) {
            n++;
        } else {
            fprintf(stderr, "not Prometheus text: '%s'\n", line);
            n = -1;
            break;
        }
        p = nl + 1;
    }
    regfree(&sample);
    regfree(&comment);
    return n;
}

static void check_render(void)
{
    pl_stage_metrics m[2];
    pl_stage_metrics_init(&m[0], "layers[0,3)", 1);
    pl_stage_metrics_init(&m[1], "we\"ird\\name", 2);
    m[0].messages = 12;
    m[0].tokens = 40;
    m[0].refused = 3;
    m[0].errors = 4;
    m[0].dropped = 6;
    m[0].foreign = 5;
    m[0].busy_seconds = 0.5;
    m[0].queue_depth = 2;
    pl_hist_observe(&m[0].step_seconds, 0.003);
    pl_hist_observe(&m[0].step_seconds, 0.2);
    pl_hist_observe(&m[0].queue, 2);
    m[0].pool_calls = 10;
    m[0].pool_split_calls = 8;
    m[0].pool_thread_sum = 17;
    m[0].pool_threads = 2;
    m[0].pool_op_seconds = 2.0;
    m[0].pool_split_seconds = 1.5;
    m[0].pool_wait_seconds = 0.25;
    char *prom = pl_metrics_prometheus(m, 2);
    CHECK(prom != NULL);
    if (!prom)
        return;
    CHECK(strstr(prom, "# TYPE sluice_stage_messages_total counter\n"));
    CHECK(strstr(prom, "sluice_stage_messages_total{stage=\"layers[0,3)\",index=\"1\"} 12\n"));
    CHECK(strstr(prom, "sluice_stage_tokens_total{stage=\"layers[0,3)\",index=\"1\"} 40\n"));
    CHECK(strstr(prom, "sluice_stage_refused_total{stage=\"layers[0,3)\",index=\"1\"} 3\n"));
    CHECK(strstr(prom, "sluice_stage_errors_total{stage=\"layers[0,3)\",index=\"1\"} 4\n"));
    CHECK(strstr(prom, "sluice_stage_dropped_total{stage=\"layers[0,3)\",index=\"1\"} 6\n"));
    CHECK(strstr(prom, "sluice_stage_foreign_total{stage=\"layers[0,3)\",index=\"1\"} 5\n"));
    CHECK(strstr(prom, "sluice_stage_queue_depth{stage=\"layers[0,3)\",index=\"1\"} 2\n"));
    /* cumulative buckets: 0.003 is past 0.0025, within 0.005 */
    CHECK(strstr(prom, "sluice_stage_step_seconds_bucket{stage=\"layers[0,3)\",index=\"1\",le=\"0.0025\"} 0\n"));
    CHECK(strstr(prom, "sluice_stage_step_seconds_bucket{stage=\"layers[0,3)\",index=\"1\",le=\"0.005\"} 1\n"));
    CHECK(strstr(prom, "sluice_stage_step_seconds_bucket{stage=\"layers[0,3)\",index=\"1\",le=\"0.25\"} 2\n"));
    CHECK(strstr(prom, "sluice_stage_step_seconds_bucket{stage=\"layers[0,3)\",index=\"1\",le=\"+Inf\"} 2\n"));
    CHECK(strstr(prom, "sluice_stage_step_seconds_count{stage=\"layers[0,3)\",index=\"1\"} 2\n"));
    CHECK(strstr(prom, "# TYPE sluice_stage_step_seconds histogram\n"));
    CHECK(strstr(prom, "# TYPE sluice_stage_threads gauge\n"));
    CHECK(strstr(prom, "sluice_stage_threads{stage=\"layers[0,3)\",index=\"1\"} 2\n"));
    CHECK(strstr(prom, "sluice_stage_pool_calls_total{stage=\"layers[0,3)\",index=\"1\"} 10\n"));
    CHECK(strstr(prom, "sluice_stage_pool_split_calls_total{stage=\"layers[0,3)\",index=\"1\"} 8\n"));
    CHECK(strstr(prom, "sluice_stage_pool_op_seconds_total{stage=\"layers[0,3)\",index=\"1\"} 2\n"));
    CHECK(strstr(prom, "sluice_stage_pool_split_seconds_total{stage=\"layers[0,3)\",index=\"1\"} 1.5\n"));
    CHECK(strstr(prom, "sluice_stage_pool_threads_total{stage=\"layers[0,3)\",index=\"1\"} 17\n"));
    CHECK(strstr(prom, "# TYPE sluice_stage_barrier_wait_seconds_total counter\n"));
    CHECK(strstr(prom, "sluice_stage_barrier_wait_seconds_total{stage=\"layers[0,3)\",index=\"1\"} 0.25\n"));
    /* label values escaped */
    CHECK(strstr(prom, "{stage=\"we\\\"ird\\\\name\",index=\"2\"}"));
    /* 15 single-value families and two histograms (buckets + Inf, sum, count), 2 stages */
    int expect = 2 * (15 + (pl_n_step_bounds + 3) + (pl_n_depth_bounds + 3));
    int got = prom_samples(prom);
    CHECKF(got == expect, "%d sample lines, expected %d", got, expect);
    free(prom);

    char *text = pl_metrics_text(m, 1);
    CHECK(text != NULL);
    if (text) {
        CHECKF(strstr(text, "stage 1 layers[0,3)\n") &&
                   strstr(text, "messages 12  tokens 40  errors 4  refused 3  dropped 6  foreign 5\n"),
               "%s", text);
        CHECKF(strstr(text, "p50 <=0.005 s") && strstr(text, "queue depth 2 (mean 2.00, max <=2)"), "%s", text);
        /* 8 of 10 ops split, 1.5 of their 2 s: 75%; 17 threads over the 8 */
        CHECKF(strstr(text, "  pool ops 10 (2.000 s): split 8, 75% of the op time, on 2.12 threads (last 2)  "
                            "barrier wait 0.250 s\n"), "%s", text);
    }
    free(text);
}

/* ---- a pipeline's counters ---- */

static void layout(pl_config *c)
{
    pl_config_default(c, model_path, 6);
    c->limits.max_sequences = 4;
    c->limits.context = 256;
    c->limits.max_batch_tokens = 32;
}

static const pl_stage_metrics *find(const pl_stage_metrics *m, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(m[i].name, name) == 0)
            return &m[i];
    return NULL;
}

/* Waits until stage `name` counted `messages` (control messages trail the
 * driver's last event); returns the snapshot. */
static int settle(sl_pipeline *p, const char *name, uint64_t messages, pl_stage_metrics **m, int *n)
{
    for (int tries = 0; tries < 200; tries++) {
        CHECK(sl_pipeline_metrics(p, m, n) == 0);
        const pl_stage_metrics *s = find(*m, *n, name);
        if (s && s->messages >= messages)
            return 0;
        free(*m);
        *m = NULL;
        usleep(10000);
    }
    return sl_pipeline_metrics(p, m, n);
}

static void check_counts(void)
{
    pl_config c;
    layout(&c);
    sl_pipeline *p;
    sl_err err;
    if (sl_pipeline_open(&p, &c, NULL, &err)) {
        fprintf(stderr, "open: %s\n", err.msg);
        CHECK(0);
        return;
    }
    sl_gen_params gp = {.prompt = "This program is free software", .max_tokens = 9};
    sl_sampling_defaults(&gp.sampling);
    gp.sampling.temperature = 1.0f;
    gp.sampling.seed = 7;
    int32_t *ids;
    int n_prompt;
    CHECK(sl_pipeline_tokenize(p, &gp, &ids, &n_prompt, &err) == 0);
    free(ids);
    uint64_t id;
    CHECK(sl_pipeline_submit(p, &gp, &id, &err) == 0);
    sl_event ev;
    int n_gen = -1;
    while (sl_pipeline_next(p, &ev, 10000, &err) == 1)
        if (ev.kind == SL_EV_DONE)
            n_gen = ev.n_generated;
    CHECKF(n_gen >= 1, "the request finished (%d tokens)", n_gen);
    /* One prefill batch of the whole prompt, then one batch a further
     * token; then the RELEASE of its slot: n_gen + 1 messages a stage.
     * Rows: the prompt, then one a token; sample sees one row a batch. */
    uint64_t msgs = (uint64_t)n_gen + 1, rows = (uint64_t)n_prompt + (uint64_t)n_gen - 1;
    pl_stage_metrics *m = NULL;
    int n = 0;
    settle(p, "sample", msgs, &m, &n);
    CHECK(n == 4);
    const char *names[] = {"embed", "layers[0,6)", "head", "sample"};
    for (int i = 0; i < 4 && m; i++) {
        const pl_stage_metrics *s = find(m, n, names[i]);
        CHECKF(s != NULL, "stage %s has metrics", names[i]);
        if (!s)
            continue;
        uint64_t want_rows = i == 3 ? (uint64_t)n_gen : rows;
        CHECKF(s->messages == msgs && s->tokens == want_rows,
               "%s: %llu messages, %llu tokens; expected %llu and %llu", names[i],
               (unsigned long long)s->messages, (unsigned long long)s->tokens,
               (unsigned long long)msgs, (unsigned long long)want_rows);
        CHECK(s->index == i);
        CHECK(s->errors == 0 && s->refused == 0 && s->dropped == 0);
        CHECKF(s->step_seconds.n == msgs, "%s: %llu steps timed", names[i],
               (unsigned long long)s->step_seconds.n);
        CHECK(s->queue.n == msgs);
        CHECK(s->busy_seconds > 0);
        if (i == 1) /* the layers' matmuls go through the worker pool, counted per stage */
            CHECKF(s->pool_calls > 0 && s->pool_op_seconds > 0 && s->pool_split_calls <= s->pool_calls &&
                       s->pool_split_seconds <= s->pool_op_seconds &&
                       s->pool_thread_sum >= 2 * s->pool_split_calls &&
                       (s->pool_split_calls == 0) == (s->pool_threads == 0) && s->pool_wait_seconds >= 0,
                   "layers: %llu pool ops (%.6f s), %llu split (%.6f s) on %llu threads, the last on %u",
                   (unsigned long long)s->pool_calls, s->pool_op_seconds, (unsigned long long)s->pool_split_calls,
                   s->pool_split_seconds, (unsigned long long)s->pool_thread_sum, s->pool_threads);
    }
    char *prom = m ? pl_metrics_prometheus(m, n) : NULL;
    CHECK(prom && prom_samples(prom) > 0);
    free(prom);
    free(m);
    sl_pipeline_close(p);
}

/* ---- over HTTP ---- */

static char *pipeline_prometheus(void *ctx)
{
    pl_stage_metrics *m;
    int n;
    if (sl_pipeline_metrics(ctx, &m, &n))
        return NULL;
    char *text = pl_metrics_prometheus(m, n);
    free(m);
    return text;
}

/* A tiny HTTP/1.0 client: the whole response in a malloc'd string. */
static char *http_get(int port, const char *request)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa)) {
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    size_t len = strlen(request), cap = 1 << 16, got = 0;
    if (write(fd, request, len) != (ssize_t)len) {
        close(fd);
        return NULL;
    }
    char *buf = malloc(cap);
    for (;;) {
        if (got + 1 == cap)
            buf = realloc(buf, cap *= 2);
        ssize_t n = read(fd, buf + got, cap - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    buf[got] = '\0';
    close(fd);
    return buf;
}

/* The Prometheus text a client gets over HTTP after a run carries the
 * same counts the host kept; the server refuses other paths and methods. */
static void check_http(void)
{
    pl_config c;
    layout(&c);
    sl_pipeline *p;
    sl_err err;
    if (sl_pipeline_open(&p, &c, NULL, &err)) {
        CHECK(0);
        return;
    }
    pl_metrics_http *h = NULL;
    char spec[64];
    /* a port reserved for this process (tests/lib/ports.h): the server
     * listens on it, no other test can */
    int port_fd = -1;
    int port = test_reserve_ports(1, &port_fd);
    snprintf(spec, sizeof spec, "127.0.0.1:%d", port);
    CHECKF(port > 0 && pl_metrics_http_start(&h, spec, pipeline_prometheus, p, &err) == 0,
           "metrics on %s: %s", spec, port > 0 ? err.msg : "no port reserved");
    if (!h) {
        if (port > 0)
            test_release_ports(1, &port_fd);
        sl_pipeline_close(p);
        return;
    }
    pl_metrics_http *twice = NULL;
    CHECK(pl_metrics_http_start(&twice, spec, pipeline_prometheus, p, &err) == -1);
    CHECK_ERR_HAS(err, "cannot serve metrics on http://127.0.0.1:");
    sl_gen_params gp = {.prompt = "This program is free software", .max_tokens = 5};
    sl_sampling_defaults(&gp.sampling);
    gp.sampling.temperature = 1.0f;
    uint64_t id;
    CHECK(sl_pipeline_submit(p, &gp, &id, &err) == 0);
    sl_event ev;
    int n_gen = -1;
    while (sl_pipeline_next(p, &ev, 10000, &err) == 1)
        if (ev.kind == SL_EV_DONE)
            n_gen = ev.n_generated;
    pl_stage_metrics *m = NULL;
    int n = 0;
    settle(p, "sample", (uint64_t)n_gen + 1, &m, &n);
    free(m);
    char *resp = http_get(port, "GET /metrics HTTP/1.0\r\n\r\n");
    CHECK(resp != NULL);
    if (resp) {
        CHECKF(strncmp(resp, "HTTP/1.0 200", 12) == 0 || strncmp(resp, "HTTP/1.1 200", 12) == 0, "%.40s", resp);
        CHECK(strstr(resp, "Content-Type: text/plain; version=0.0.4"));
        char *body = strstr(resp, "\r\n\r\n");
        CHECK(body != NULL);
        if (body) {
            body += 4;
            CHECKF(prom_samples(body) == 4 * (15 + (pl_n_step_bounds + 3) + (pl_n_depth_bounds + 3)),
                   "every line of the body parses, for four stages");
            char want[128];
            snprintf(want, sizeof want, "\nsluice_stage_messages_total{stage=\"sample\",index=\"3\"} %d\n", n_gen + 1);
            CHECKF(strstr(body, want) != NULL, "%s", want);
            snprintf(want, sizeof want, "\nsluice_stage_tokens_total{stage=\"sample\",index=\"3\"} %d\n", n_gen);
            CHECKF(strstr(body, want) != NULL, "%s", want);
        }
        free(resp);
    }
    resp = http_get(port, "GET /other HTTP/1.0\r\n\r\n");
    CHECK(resp && strstr(resp, " 404 "));
    free(resp);
    resp = http_get(port, "POST /metrics HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc");
    CHECK(resp && strstr(resp, " 405 "));
    free(resp);
    pl_metrics_http_stop(h);
    test_release_ports(1, &port_fd);
    sl_pipeline_close(p);
    char ip[64];
    CHECK(pl_metrics_http_parse("9100", ip, sizeof ip, &port, &err) == 0 && port == 9100 &&
          strcmp(ip, "127.0.0.1") == 0);
    CHECK(pl_metrics_http_parse("0.0.0.0:80", ip, sizeof ip, &port, &err) == 0 && port == 80 &&
          strcmp(ip, "0.0.0.0") == 0);
    CHECK(pl_metrics_http_parse("0", ip, sizeof ip, &port, &err) == -1);
    CHECK_ERR_HAS(err, "the port must be a number in [1, 65535]");
    CHECK(pl_metrics_http_parse("host:80", ip, sizeof ip, &port, &err) == -1);
    CHECK_ERR_HAS(err, "'host' is not an IPv4 address");
    CHECK(pl_metrics_http_parse("1.2.3.4:", ip, sizeof ip, &port, &err) == -1);
}

/* ---- limits ---- */

/* A BATCH for the layers stage (activations D_MODEL wide) with n rows, each
 * at slot seq and positions pos0.., optionally with draft_rows of draft
 * distributions (a second big payload). */
/* The run the injected batches claim: the open pipeline's, so they reach
 * the stage's own checks (a batch of another run is dropped before them). */
static uint64_t inject_run_id;

static void send_batch(void *sock, uint32_t n, int32_t seq, int32_t pos0, uint32_t draft_rows)
{
    pl_msg m;
    sl_err err;
    uint64_t *req = calloc(n, sizeof *req);
    int32_t *seqs = calloc(n, sizeof *seqs), *pos = calloc(n, sizeof *pos);
    uint8_t *flags = calloc(n, 1);
    float *act = calloc((size_t)n * D_MODEL, sizeof *act);
    float *probs = calloc((size_t)(draft_rows ? draft_rows : 1) * D_MODEL, sizeof *probs);
    int32_t *drafted = calloc(n, sizeof *drafted), *q_count = calloc(n, sizeof *q_count);
    for (uint32_t i = 0; i < n; i++) {
        q_count[i] = D_MODEL;
        req[i] = 999999;
        seqs[i] = seq;
        pos[i] = pos0 + (int32_t)i;
        drafted[i] = i < draft_rows ? 1 : -1;
    }
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_BATCH, 4242, n);
    CHECK(pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, n, 0, req, NULL, NULL, &err) == 0);
    CHECK(pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_SEQ, SLUICE__DTYPE__DT_I32, n, 0, seqs, NULL, NULL, &err) == 0);
    CHECK(pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_POS, SLUICE__DTYPE__DT_I32, n, 0, pos, NULL, NULL, &err) == 0);
    CHECK(pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_FLAGS, SLUICE__DTYPE__DT_U8, n, 0, flags, NULL, NULL, &err) == 0);
    CHECK(pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_ACTIVATION, SLUICE__DTYPE__DT_F32, n, D_MODEL, act, NULL, NULL,
                     &err) == 0);
    if (draft_rows) {
        CHECK(pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_DRAFT_TOKEN, SLUICE__DTYPE__DT_I32, n, 0, drafted, NULL,
                         NULL, &err) == 0);
        CHECK(pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_DRAFT_PROBS, SLUICE__DTYPE__DT_F32,
                         (uint64_t)draft_rows * D_MODEL, 0, probs, NULL, NULL, &err) == 0);
        CHECK(pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_DRAFT_Q_COUNT, SLUICE__DTYPE__DT_I32, draft_rows, 0,
                         q_count, NULL, NULL, &err) == 0);
    }
    pl_msg_set_run_id(&m, inject_run_id);
    CHECKF(pl_msg_send(&m, sock, 0, &err) == 0, "%s", err.msg);
    pl_msg_close(&m);
    free(req);
    free(seqs);
    free(pos);
    free(flags);
    free(act);
    free(probs);
    free(drafted);
    free(q_count);
}

/* Runs one request to its end; returns its tokens' count (-1: an error). */
static int run_one(sl_pipeline *p, const char *prompt, int n_tokens)
{
    sl_gen_params gp = {.prompt = prompt, .max_tokens = n_tokens};
    sl_sampling_defaults(&gp.sampling);
    uint64_t id;
    sl_err err;
    if (sl_pipeline_submit(p, &gp, &id, &err))
        return -1;
    sl_event ev;
    int got = 0;
    while (sl_pipeline_next(p, &ev, 10000, &err) == 1) {
        if (ev.kind == SL_EV_ERROR)
            return -1;
        if (ev.kind == SL_EV_DONE)
            got = ev.n_generated;
    }
    return got;
}

static void check_refusals(void)
{
    pl_config c;
    layout(&c);
    c.limits.max_frame_bytes = 64 << 10;
    c.limits.max_message_bytes = 96 << 10;
    char hops[300];
    snprintf(hops, sizeof hops, "ipc:%s", tmpdir);
    sl_pipeline *p = test_open_on_hops(&c, hops);
    if (!p)
        return;
    inject_run_id = sl_pipeline_run_id(p);
    void *zctx = zmq_ctx_new();
    void *sock = zmq_socket(zctx, ZMQ_PUSH);
    char addr[400];
    snprintf(addr, sizeof addr, "ipc://%s/s1", tmpdir); /* the layers stage */
    CHECK(zmq_connect(sock, addr) == 0);
    int before = run_one(p, "you may not use this file", 6);
    CHECK(before == 6);
    send_batch(sock, 33, 0, 0, 0);      /* rows past max_batch_tokens 32 */
    send_batch(sock, 2, 4, 0, 0);       /* slot past max_sequences 4 */
    send_batch(sock, 2, 0, 255, 0);     /* position 256 past context 256 */
    /* 80 KiB of activations past max_frame_bytes 64 KiB (within ZeroMQ's own
     * cap of max_message_bytes a frame, which would cut the connection) */
    send_batch(sock, 80, 0, 0, 0);
    send_batch(sock, 60, 0, 0, 60);     /* two frames of 60 KiB, past max_message_bytes 96 KiB */
    send_batch(sock, 2, 3, 0, 0);       /* within every limit: runs */
    pl_stage_metrics *m = NULL;
    int n = 0;
    /* 1 request (7 messages with its RELEASE) + 4 processed injections;
     * the two oversized ones never reach the stage */
    settle(p, "layers[0,6)", 7 + 4, &m, &n);
    const pl_stage_metrics *s = m ? find(m, n, "layers[0,6)") : NULL;
    CHECK(s != NULL);
    if (s) {
        CHECKF(s->refused == 5 && s->dropped == 2 && s->errors == 3 && s->messages == 11,
               "layers: refused %llu, dropped %llu, errors %llu, messages %llu",
               (unsigned long long)s->refused, (unsigned long long)s->dropped,
               (unsigned long long)s->errors, (unsigned long long)s->messages);
    }
    const pl_stage_metrics *e = m ? find(m, n, "embed") : NULL;
    CHECK(e && e->refused == 0 && e->errors == 0);
    free(m);
    /* still serving, with the same tokens */
    CHECK(run_one(p, "you may not use this file", 6) == 6);
    zmq_close(sock);
    zmq_ctx_term(zctx);
    sl_pipeline_close(p);
}

/* The stage's own check names each limit. */
static void check_stage_messages(void)
{
    sl_stage s = {.max_sequences = 4, .context = 256, .max_batch_tokens = 32};
    int32_t seq[2] = {0, 4}, pos[2] = {10, 256};
    sl_err why;
    CHECK(sl_stage_check_limits(&s, 33, NULL, NULL, &why) == 1);
    CHECK_ERR_HAS(why, "a batch of 33 rows is past the limit max_batch_tokens (32)");
    CHECK(sl_stage_check_limits(&s, 2, seq, NULL, &why) == 1);
    CHECK_ERR_HAS(why, "row 1 names slot 4, past the limit max_sequences (4)");
    CHECK(sl_stage_check_limits(&s, 2, NULL, pos, &why) == 1);
    CHECK_ERR_HAS(why, "row 1 is at position 256, past the limit context (256)");
    seq[1] = -1;
    CHECK(sl_stage_check_limits(&s, 2, seq, NULL, &why) == 1);
    CHECK(sl_stage_check_limits(&s, 1, seq, pos, &why) == 0);
    CHECK(s.n_refused == 4);
    sl_err w = {.msg = "wire: payload frame 0 of 160 bytes exceeds max_frame_bytes (64)"};
    CHECK(pl_wire_err_is_limit(&w));
    snprintf(w.msg, sizeof w.msg, "wire: header frame of 3 bytes is not a valid sluice.Header protobuf");
    CHECK(!pl_wire_err_is_limit(&w));
}

/* A spawned worker enforces the config's limits (they travel in its
 * assignment) and counts a refusal, which `sluice status` on its control
 * socket then shows. */
static void check_worker(const char *sluice)
{
    char yaml[2048];
    snprintf(yaml, sizeof yaml,
             "model: %s\n"
             "nodes:\n"
             "  - {name: local, address: ipc://%s/local}\n"
             "  - {name: p1, address: ipc://%s/p1, spawn: true}\n"
             "stages:\n"
             "  - {kind: embed, node: local}\n"
             "  - {kind: layers, node: p1, layers: [0, 6]}\n"
             "  - {kind: head, node: p1}\n"
             "  - {kind: sample, node: p1}\n"
             "limits: {max_sequences: 4, context: 256, max_batch_tokens: 32, max_frame_bytes: 65536}\n",
             model_path, tmpdir, tmpdir);
    pl_config c;
    sl_err err;
    if (pl_config_parse(&c, yaml, strlen(yaml), "worker.yaml", &err)) {
        fprintf(stderr, "config: %s\n", err.msg);
        CHECK(0);
        return;
    }
    sl_pipeline_opts o;
    sl_pipeline_opts_default(&o);
    o.self_exe = sluice;
    o.quiet = true;
    sl_pipeline *p;
    if (sl_pipeline_open(&p, &c, &o, &err)) {
        fprintf(stderr, "open: %s\n", err.msg);
        CHECK(0);
        return;
    }
    CHECK(run_one(p, "you may not use this file", 4) == 4);
    inject_run_id = sl_pipeline_run_id(p);
    void *zctx = zmq_ctx_new();
    void *sock = zmq_socket(zctx, ZMQ_PUSH);
    char addr[400], ctl[400];
    snprintf(addr, sizeof addr, "ipc://%s/p1-s1", tmpdir); /* the worker's layers stage */
    snprintf(ctl, sizeof ctl, "ipc://%s/p1", tmpdir);
    CHECK(zmq_connect(sock, addr) == 0);
    send_batch(sock, 80, 0, 0, 0); /* 80 KiB: past the config's 64 KiB, within the default 256 MiB */
    send_batch(sock, 2, 9, 0, 0);  /* slot 9 past max_sequences 4 */
    /* a well-formed batch of another run: dropped as foreign, before the
     * stage sees it */
    inject_run_id ^= 0x5a5a5a5a5a5a5a5aull;
    send_batch(sock, 2, 0, 0, 0);
    inject_run_id ^= 0x5a5a5a5a5a5a5a5aull;
    pl_status_opts so = {.addr = ctl, .timeout_s = 5};
    char *text = NULL;
    bool seen = false;
    for (int tries = 0; tries < 200 && !seen; tries++) {
        free(text);
        text = NULL;
        CHECKF(pl_status_query(&so, &text, &err) == 0, "%s", err.msg);
        seen = text && strstr(text, "refused 2  dropped 2  foreign 1");
        if (!seen)
            usleep(10000);
    }
    /* 4 batches and a RELEASE of the request, and the refused batch; the
     * oversized message and the foreign one never reached the stage */
    CHECKF(seen && strstr(text, ": serving a coordinator, 3 stage(s)\n") &&
               strstr(text, "stage 1 layers[0,6)\n  messages 6  tokens ") &&
               strstr(text, "  errors 1  refused 2  dropped 2  foreign 1\n"),
           "worker status:\n%s", text ? text : "(none)");
    free(text);
    CHECK(run_one(p, "you may not use this file", 4) == 4);
    /* the coordinator's snapshot holds the worker's stages too (asked every
     * half second): stage 1 with the rows it computed and what it dropped */
    bool remote = false;
    char *prom = NULL;
    for (int tries = 0; tries < 300 && !remote; tries++) {
        pl_stage_metrics *all = NULL;
        int n = 0;
        CHECK(sl_pipeline_metrics_all(p, &all, &n) == 0);
        remote = n == 4 && all[0].index == 0 && all[1].index == 1 && all[3].index == 3 &&
                 strcmp(all[1].name, "layers[0,6)") == 0 && all[1].tokens > 0 && all[1].refused == 2 &&
                 all[1].dropped == 2 && all[1].foreign == 1 && all[1].step_seconds.n > 0 &&
                 all[1].pool_calls > 0 && all[1].pool_op_seconds > 0;
        if (remote)
            prom = pl_metrics_prometheus(all, n); /* what the coordinator's /metrics serves */
        free(all);
        if (!remote)
            usleep(10000);
    }
    CHECKF(remote, "the worker's stages in the coordinator's metrics");
    CHECKF(prom && strstr(prom, "\nsluice_stage_foreign_total{stage=\"layers[0,6)\",index=\"1\"} 1\n") &&
               strstr(prom, "\nsluice_stage_dropped_total{stage=\"layers[0,6)\",index=\"1\"} 2\n"),
           "the worker stage's foreign batch in the coordinator's Prometheus text");
    /* and its pool's ops (a layers stage runs its matmuls through the pool) */
    CHECKF(prom && strstr(prom, "\nsluice_stage_pool_calls_total{stage=\"layers[0,6)\",index=\"1\"} ") &&
               !strstr(prom, "\nsluice_stage_pool_calls_total{stage=\"layers[0,6)\",index=\"1\"} 0\n"),
           "the worker stage's pool ops in the coordinator's Prometheus text");
    free(prom);
    pl_stage_metrics *own = NULL;
    int n_own = 0;
    CHECK(sl_pipeline_metrics(p, &own, &n_own) == 0 && n_own == 1 && own[0].index == 0);
    free(own);
    zmq_close(sock);
    zmq_ctx_term(zctx);
    sl_pipeline_close(p);
}

/* Limits that would refuse the pipeline's own full batches fail at open. */
static void check_inconsistent(void)
{
    pl_config c;
    layout(&c);
    sl_pipeline *p;
    sl_err err;
    c.limits.max_frame_bytes = 32 * D_MODEL * 4 - 1;
    CHECK(sl_pipeline_open(&p, &c, NULL, &err) == -1);
    CHECK_ERR_HAS(err, "limits.max_frame_bytes (32767) is below the activations of a full batch "
                       "(max_batch_tokens 32 x d_model 256 x 4 bytes = 32768)");
    c.limits.max_frame_bytes = 32 * D_MODEL * 4;
    c.limits.max_message_bytes = 32 * D_MODEL * 4 - 1;
    CHECK(sl_pipeline_open(&p, &c, NULL, &err) == -1);
    CHECK_ERR_HAS(err, "limits.max_message_bytes (32767) is below max_frame_bytes (32768)");
    c.limits.max_message_bytes = 32 * D_MODEL * 4;
    CHECK(sl_pipeline_open(&p, &c, NULL, &err) == 0);
    sl_pipeline_close(p);
}

static void check_max_requests(void)
{
    pl_config c;
    layout(&c);
    c.limits.max_requests = 2;
    sl_pipeline *p;
    sl_err err;
    if (sl_pipeline_open(&p, &c, NULL, &err)) {
        CHECK(0);
        return;
    }
    sl_gen_params gp = {.prompt = "THE SOFTWARE IS PROVIDED", .max_tokens = 4};
    sl_sampling_defaults(&gp.sampling);
    uint64_t a, b, x;
    CHECK(sl_pipeline_submit(p, &gp, &a, &err) == 0);
    CHECK(sl_pipeline_submit(p, &gp, &b, &err) == 0);
    CHECK(sl_pipeline_submit(p, &gp, &x, &err) == -1);
    CHECK_ERR_HAS(err, "refused: 2 requests are in flight, the limit max_requests (2)");
    CHECK(sl_pipeline_refused(p) == 1);
    pl_client_metrics cm;
    sl_pipeline_client_metrics(p, &cm);
    CHECK(cm.in_flight == 2 && cm.submitted == 2 && cm.refused == 1 && cm.max_requests == 2 &&
          cm.foreign == 0);
    cm.foreign = 3;
    char *prom = pl_metrics_prometheus_client(&cm);
    CHECK(prom && prom_samples(prom) == 5);
    CHECK(prom && strstr(prom, "# TYPE sluice_client_foreign_total counter\nsluice_client_foreign_total 3\n"));
    CHECK(prom && strstr(prom, "\nsluice_client_requests_refused_total 1\n"));
    CHECK(prom && strstr(prom, "\nsluice_client_requests_in_flight 2\n"));
    CHECK(prom && strstr(prom, "# TYPE sluice_client_requests_total counter\nsluice_client_requests_total 2\n"));
    free(prom);
    sl_event ev;
    int done = 0;
    while (sl_pipeline_next(p, &ev, 10000, &err) == 1)
        done += ev.kind == SL_EV_DONE;
    CHECK(done == 2);
    sl_pipeline_client_metrics(p, &cm);
    CHECK(cm.in_flight == 0 && cm.submitted == 2 && cm.refused == 1);
    CHECK(sl_pipeline_submit(p, &gp, &x, &err) == 0); /* room again */
    while (sl_pipeline_next(p, &ev, 10000, &err) == 1) {}
    sl_pipeline_close(p);
}

/* The machine form a worker answers its coordinator with: every count and
 * both histograms read back; malformed lines refused naming the line. */
static void check_machine_form(void)
{
    pl_stage_metrics m[2], back[2];
    pl_stage_metrics_init(&m[0], "layers[3,6)", 2);
    pl_stage_metrics_init(&m[1], "sa mple", 4);
    m[0].messages = 7, m[0].tokens = 1234, m[0].errors = 1, m[0].refused = 2, m[0].dropped = 3, m[0].foreign = 1;
    m[0].busy_seconds = 1.5, m[0].queue_depth = 5;
    m[0].pool_threads = 2, m[0].pool_calls = 90, m[0].pool_split_calls = 40, m[0].pool_thread_sum = 81;
    m[0].pool_op_seconds = 0.75, m[0].pool_split_seconds = 0.5, m[0].pool_wait_seconds = 0.125;
    pl_hist_observe(&m[0].step_seconds, 0.003);
    pl_hist_observe(&m[0].step_seconds, 20.0);
    pl_hist_observe(&m[0].queue, 3);
    char *text = pl_metrics_encode(m, 2);
    sl_err err = {{0}};
    CHECK(text && pl_metrics_decode(text, back, 2, &err) == 2);
    CHECK(back[0].index == 2 && strcmp(back[0].name, "layers[3,6)") == 0 && back[0].messages == 7 &&
          back[0].tokens == 1234 && back[0].errors == 1 && back[0].refused == 2 && back[0].dropped == 3 &&
          back[0].foreign == 1 && back[0].busy_seconds == 1.5 && back[0].queue_depth == 5);
    CHECK(back[0].pool_threads == 2 && back[0].pool_calls == 90 && back[0].pool_split_calls == 40 &&
          back[0].pool_thread_sum == 81 && back[0].pool_op_seconds == 0.75 &&
          back[0].pool_split_seconds == 0.5 && back[0].pool_wait_seconds == 0.125);
    CHECK(back[1].pool_calls == 0 && back[1].pool_threads == 0);
    CHECK(memcmp(back[0].step_seconds.counts, m[0].step_seconds.counts, sizeof m[0].step_seconds.counts) == 0 &&
          back[0].step_seconds.n == 2 && back[0].queue.n == 1 && back[0].queue.counts[3] == 1);
    CHECK(back[1].index == 4 && strcmp(back[1].name, "sa_mple") == 0 && back[1].tokens == 0);
    CHECK(pl_metrics_decode(text, back, 1, &err) == -1);
    CHECK_ERR_HAS(err, "more than 1 stages");
    free(text);
    CHECK(pl_metrics_decode("", back, 2, &err) == 0);
    CHECK(pl_metrics_decode("stage 1 x 1 2 3\n", back, 2, &err) == -1);
    CHECK_ERR_HAS(err, "stage metrics: line 1 is not");
    /* buckets that do not add up to the count */
    text = pl_metrics_encode(m, 1);
    char *five = text ? strstr(text, " 0.125 2 ") : NULL; /* wait seconds, step count */
    CHECK(five != NULL);
    if (five) {
        five[7] = '3'; /* step count 2 -> 3 */
        CHECK(pl_metrics_decode(text, back, 2, &err) == -1);
    }
    free(text);
    /* a pool counter that is not a count (or seconds that are negative) */
    text = pl_metrics_encode(m, 1);
    char *pool = text ? strstr(text, " 5 2 90 40 81 0.75 ") : NULL;
    CHECK(pool != NULL);
    if (pool) {
        pool[5] = 'x'; /* calls 90 -> x0 */
        CHECK(pl_metrics_decode(text, back, 2, &err) == -1);
        CHECK_ERR_HAS(err, "stage metrics: line 1 is not");
        pool[5] = '9';
        CHECK(pl_metrics_decode(text, back, 2, &err) == 1);
        pool[14] = '-'; /* op seconds 0.75 -> -.75 */
        CHECK(pl_metrics_decode(text, back, 2, &err) == -1);
    }
    free(text);
    /* foreign messages are some of the dropped ones: more is refused */
    m[0].foreign = 4;
    text = pl_metrics_encode(m, 1);
    CHECK(text && strstr(text, " 2 3 4 1.5 5 ") && pl_metrics_decode(text, back, 2, &err) == -1);
    CHECK_ERR_HAS(err, "stage metrics: line 1 is not");
    free(text);
}

int main(void)
{
    check_hist();
    check_machine_form();
    check_render();
    check_stage_messages();
    const char *sluice = getenv("SLUICE");
    if (!sluice) {
        fprintf(stderr, "SLUICE (path of the sluice binary) is not set\n");
        return 1;
    }
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sluice-test-metrics-%d", (int)getpid());
    snprintf(model_path, sizeof model_path, "%s/m.gguf", tmpdir);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "mkdir -p -m 700 %s && %s synth --arch gemma3 --size test --type q8_0 --seed 5 "
             "--weight-scale 0.6 -o %s 2>/dev/null", tmpdir, sluice, model_path);
    if (system(cmd) != 0) {
        fprintf(stderr, "synth failed\n");
        return 1;
    }
    check_counts();
    check_refusals();
    check_max_requests();
    check_inconsistent();
    check_http();
    check_worker(sluice);
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup of %s failed\n", tmpdir);
    return test_finish("test_metrics");
}
