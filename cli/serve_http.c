/* The HTTP side of sluice serve (libmicrohttpd, one thread per connection):
 * routing, the API key, request bodies, and answers (whole, or streamed as
 * server-sent events from a response callback that waits on its job). */
#define _GNU_SOURCE /* POLLRDHUP */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/serve.h"

enum { EP_CHAT, EP_COMPLETIONS, EP_MODELS, EP_HEALTH, EP_METRICS, EP_PAGE, EP_OTHER };
static const char *const ep_paths[] = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/health",
                                       "/metrics", "/"};

typedef struct sv_conn {
    int ep;
    bool refused;              /* answered on its first call (auth, method, path) */
    char *body;
    size_t len, cap;
    bool too_big;
} sv_conn;

#define JSON_TYPE "application/json"

static void count(sv_server *s, int ep, unsigned status)
{
    int k = status < 300 ? 0 : status == 400 ? 1 : status == 401 ? 2 : status == 429 ? 3 : status >= 500 ? 4 : 5;
    pthread_mutex_lock(&s->mu);
    s->counts.by[ep][k]++;
    pthread_mutex_unlock(&s->mu);
}

static enum MHD_Result reply(sv_server *s, struct MHD_Connection *c, int ep, unsigned status, char *body,
                             const char *type)
{
    if (!body)
        return MHD_NO;
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (status == 429)
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    if (status == 401)
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    enum MHD_Result rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    count(s, ep, status);
    return rc;
}

static enum MHD_Result reply_error(sv_server *s, struct MHD_Connection *c, int ep, const sv_error *err)
{
    return reply(s, c, ep, (unsigned)err->status, sv_error_json(err), JSON_TYPE);
}

/* Compares the whole key whatever the guess, so the time taken tells
 * nothing about how much of it matched. */
static bool key_matches(const sv_server *s, const char *given)
{
    size_t n = given ? strlen(given) : 0;
    unsigned diff = (unsigned)(n ^ s->api_key_len);
    for (size_t i = 0; i < s->api_key_len; i++)
        diff |= (unsigned char)s->api_key[i] ^ (unsigned char)(i < n ? given[i] : 0);
    return diff == 0;
}

static bool authorized(const sv_server *s, struct MHD_Connection *c)
{
    if (!s->api_key)
        return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return false;
    return key_matches(s, h + 7);
}

/* Whether the client closed its connection (checked while a handler waits:
 * a client that leaves cancels its request at once). */
static bool client_gone(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci)
        return false;
    struct pollfd pf = {ci->connect_fd, POLLIN | POLLRDHUP, 0};
    if (poll(&pf, 1, 0) <= 0)
        return false;
    if (pf.revents & (POLLRDHUP | POLLHUP | POLLERR))
        return true;
    char byte;
    return recv(ci->connect_fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

/* mu held: waits up to 50 ms for the job to change */
static void wait_job(sv_server *s, sv_job *j)
{
    sv_cond_wait_ms(&j->cond, &s->mu, 50);
}

/* ---- streams ---- */

typedef struct sv_stream {
    sv_server *s;
    sv_job *j;
    struct MHD_Connection *c;
    char *out;                 /* the event being written */
    size_t out_len, out_off;
    size_t sent;               /* bytes of the job's text sent */
    int phase;                 /* 0 role chunk, 1 text, 2 usage, 3 [DONE], 4 end */
} sv_stream;

/* An error after the stream began: the status line is gone, so it goes
 * as an event, as OpenAI's clients expect it. */
static char *sse_error(const sv_error *err)
{
    char *body = sv_error_json(err);
    size_t len = body ? strlen(body) + 16 : 0;
    char *ev = body ? malloc(len) : NULL;
    if (ev)
        snprintf(ev, len, "data: %s\n\n", body);
    free(body);
    return ev;
}

/* mu held: the next event of the stream, NULL while there is none yet */
static char *next_event(sv_stream *st)
{
    sv_job *j = st->j;
    if (st->phase == 0) {
        st->phase = 1;
        if (j->chat)
            return sv_sse_chunk(st->s, j, "", 0, true, NULL, false);
    }
    if (st->phase == 1) {
        size_t vis = sv_job_visible(j);
        if (vis > st->sent) {
            char *ev = sv_sse_chunk(st->s, j, j->text + st->sent, vis - st->sent, false, NULL, false);
            st->sent = vis;
            return ev;
        }
        if (!j->ended)
            return NULL;
        st->phase = j->include_usage && !j->error.status ? 2 : 3;
        if (j->error.status)
            return sse_error(&j->error);
        return sv_sse_chunk(st->s, j, NULL, 0, false, j->finish ? j->finish : "stop", false);
    }
    if (st->phase == 2) {
        st->phase = 3;
        return sv_sse_chunk(st->s, j, NULL, 0, false, NULL, true);
    }
    st->phase = 4;
    return strdup("data: [DONE]\n\n");
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    sv_stream *st = cls;
    if (st->out_off == st->out_len) {
        free(st->out);
        st->out = NULL;
        st->out_len = st->out_off = 0;
        if (st->phase == 4)
            return MHD_CONTENT_READER_END_OF_STREAM;
        pthread_mutex_lock(&st->s->mu);
        while (!(st->out = next_event(st)) && st->phase != 4) {
            if (client_gone(st->c))
                break;
            wait_job(st->s, st->j);
        }
        pthread_mutex_unlock(&st->s->mu);
        if (!st->out)
            return st->phase == 4 ? MHD_CONTENT_READER_END_OF_STREAM : MHD_CONTENT_READER_END_WITH_ERROR;
        st->out_len = strlen(st->out);
    }
    size_t n = st->out_len - st->out_off < max ? st->out_len - st->out_off : max;
    memcpy(buf, st->out + st->out_off, n);
    st->out_off += n;
    return (ssize_t)n;
}

static void stream_free(void *cls)
{
    sv_stream *st = cls;
    sv_job_release(st->s, st->j);
    free(st->out);
    free(st);
}

static enum MHD_Result start_stream(sv_server *s, struct MHD_Connection *c, int ep, sv_job *j)
{
    sv_stream *st = calloc(1, sizeof *st);
    struct MHD_Response *r = st ? MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, st,
                                                                     stream_free)
                                : NULL;
    if (!r) {
        free(st);
        sv_job_release(s, j);
        return MHD_NO;
    }
    st->s = s;
    st->j = j;
    st->c = c;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    enum MHD_Result rc = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    count(s, ep, 200);
    return rc;
}

/* ---- generation ---- */

/* The job of a parsed request: the prompt (a chat's turns formatted), its
 * parameters and stop strings, which the job takes from p. */
static sv_job *make_job(sv_server *s, sv_params *p, sv_error *err)
{
    int state = s->state;
    if (state != SV_READY) { /* the chat format is the loaded pipeline's */
        sv_fail(err, 503, "server_error", "", "unavailable", "%s",
                state == SV_LOADING ? "the model is still loading" : "the server is shutting down");
        return NULL;
    }
    sv_job *j = sv_job_new();
    if (!j) {
        sv_fail(err, 500, "server_error", "", NULL, "out of memory");
        return NULL;
    }
    if (p->chat ? sv_chat_prompt(s->chat, s->chat_none, p->msgs, p->n_msgs, &j->prompt, err)
                : !(j->prompt = strdup(p->prompt))) {
        if (!p->chat)
            sv_fail(err, 500, "server_error", "", NULL, "out of memory");
        pthread_cond_destroy(&j->cond);
        free(j);
        return NULL;
    }
    j->chat = p->chat;
    j->stream = p->stream;
    j->include_usage = p->include_usage;
    memcpy(j->stop, p->stop, sizeof j->stop);
    j->n_stop = p->n_stop;
    p->n_stop = 0;
    j->gp = (sl_gen_params){.prompt = j->prompt, .sampling = p->sampling, .chat = p->chat, .formatted = true,
                            .max_tokens = p->max_tokens ? p->max_tokens : s->cfg->limits.context};
    pthread_mutex_lock(&s->mu);
    uint64_t n = ++s->next_job;
    pthread_mutex_unlock(&s->mu);
    snprintf(j->id, sizeof j->id, "%s-%llx%06llx", p->chat ? "chatcmpl" : "cmpl", (unsigned long long)time(NULL),
             (unsigned long long)n);
    j->created = (long)time(NULL);
    j->t_arrive = cli_now();
    return j;
}

/* A whole answer: waits for the job's end (or the client's leaving). */
static enum MHD_Result answer_whole(sv_server *s, struct MHD_Connection *c, int ep, sv_job *j)
{
    pthread_mutex_lock(&s->mu);
    bool gone = false;
    while (!j->ended && !(gone = client_gone(c)))
        wait_job(s, j);
    char *body = gone ? NULL : j->error.status ? sv_error_json(&j->error) : sv_json_final(s, j);
    int status = j->error.status ? j->error.status : 200;
    pthread_mutex_unlock(&s->mu);
    sv_job_release(s, j);
    if (gone)
        return MHD_NO; /* nobody to answer: close the connection */
    return reply(s, c, ep, (unsigned)status, body, JSON_TYPE);
}

static enum MHD_Result generate(sv_server *s, struct MHD_Connection *c, sv_conn *cn)
{
    sv_error err = {0};
    sv_params p;
    if (cn->too_big)
        sv_fail(&err, 400, "invalid_request_error", "", "request_too_large",
                "the request body is larger than %d bytes", SV_BODY_MAX);
    else if (sv_parse_request(cn->body ? cn->body : "", cn->len, cn->ep == EP_CHAT, &s->cfg->sampling,
                              s->cfg->limits.context, &p, &err) == 0) {
        sv_job *j = make_job(s, &p, &err);
        sv_params_free(&p);
        if (j && sv_job_queue(s, j, &err) == 0)
            return j->stream ? start_stream(s, c, cn->ep, j) : answer_whole(s, c, cn->ep, j);
        if (j) {
            j->refs = 1;
            sv_job_release(s, j);
        }
        return reply_error(s, c, cn->ep, &err);
    } else {
        sv_params_free(&p);
    }
    return reply_error(s, c, cn->ep, &err);
}

/* ---- the other endpoints ---- */

static enum MHD_Result health(sv_server *s, struct MHD_Connection *c)
{
    int state = s->state;
    bool down = state == SV_READY && sl_pipeline_down(s->pipe);
    if (state == SV_READY && !down)
        return reply(s, c, EP_HEALTH, 200, strdup("{\"status\":\"ok\"}"), JSON_TYPE);
    const char *why = state == SV_LOADING ? "loading the model"
                      : state == SV_READY ? "a worker is down"
                      : state == SV_FAILED ? "the pipeline failed to start" : "shutting down";
    sv_error err;
    sv_fail(&err, 503, "unavailable_error", "", "unavailable", "%s", why);
    return reply_error(s, c, EP_HEALTH, &err);
}

static enum MHD_Result get(sv_server *s, struct MHD_Connection *c, int ep)
{
    if (ep == EP_HEALTH)
        return health(s, c);
    if (ep == EP_PAGE)
        return reply(s, c, ep, 200, strdup(s->page), "text/html; charset=utf-8");
    if (s->state == SV_LOADING || s->state == SV_FAILED) {
        sv_error err;
        sv_fail(&err, 503, "unavailable_error", "", "unavailable", "the model is not loaded");
        return reply_error(s, c, ep, &err);
    }
    if (ep == EP_MODELS)
        return reply(s, c, ep, 200, sv_json_models(s), JSON_TYPE);
    return reply(s, c, ep, 200, sv_metrics_text(s), "text/plain; version=0.0.4; charset=utf-8");
}

/* What a request may not do, answered on its first call before any body
 * is read: a wrong path or method, or a missing key. */
static bool refuse_early(sv_server *s, struct MHD_Connection *c, const char *method, sv_conn *cn)
{
    sv_error err;
    bool post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
    bool get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    if (cn->ep == EP_OTHER)
        sv_fail(&err, 404, "invalid_request_error", "", "not_found",
                "no such endpoint (POST /v1/chat/completions, POST /v1/completions, GET /v1/models, "
                "GET /health, GET /metrics, GET /)");
    else if (cn->ep <= EP_COMPLETIONS ? !post : !get)
        sv_fail(&err, 405, "invalid_request_error", "", "method_not_allowed", "%s %s: use %s", method,
                ep_paths[cn->ep], cn->ep <= EP_COMPLETIONS ? "POST" : "GET");
    /* the page is static and holds nothing secret; a browser cannot send
     * the header when it opens it, and the page's own API calls carry it */
    else if (cn->ep != EP_HEALTH && cn->ep != EP_PAGE && !authorized(s, c))
        sv_fail(&err, 401, "invalid_request_error", "", "invalid_api_key",
                "a valid API key is needed: send the header 'Authorization: Bearer KEY'");
    else
        return false;
    reply_error(s, c, cn->ep, &err);
    return true;
}

static void take_body(sv_conn *cn, const char *data, size_t size)
{
    if (cn->too_big || cn->len + size > SV_BODY_MAX) {
        cn->too_big = true;
        return;
    }
    if (cn->len + size + 1 > cn->cap) {
        size_t cap = (cn->len + size + 1) * 2;
        cap = cap > SV_BODY_MAX + 1 ? SV_BODY_MAX + 1 : cap;
        char *t = realloc(cn->body, cap);
        if (!t) {
            cn->too_big = true;
            return;
        }
        cn->body = t;
        cn->cap = cap;
    }
    memcpy(cn->body + cn->len, data, size);
    cn->len += size;
    cn->body[cn->len] = 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **state)
{
    (void)version;
    sv_server *s = cls;
    sv_conn *cn = *state;
    if (!cn) {
        if (!(cn = calloc(1, sizeof *cn)))
            return MHD_NO;
        *state = cn;
        cn->ep = EP_OTHER;
        for (int i = 0; i < EP_OTHER; i++)
            if (strcmp(url, ep_paths[i]) == 0)
                cn->ep = i;
        cn->refused = refuse_early(s, c, method, cn);
        return MHD_YES;
    }
    if (*upload_size) {
        if (!cn->refused)
            take_body(cn, upload, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    if (cn->refused)
        return MHD_YES;
    return cn->ep <= EP_COMPLETIONS ? generate(s, c, cn) : get(s, c, cn->ep);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **state, enum MHD_RequestTerminationCode why)
{
    (void)cls;
    (void)c;
    (void)why;
    sv_conn *cn = *state;
    if (cn) {
        free(cn->body);
        free(cn);
        *state = NULL;
    }
}

int sv_http_start(sv_server *s, const char *ip, int port, void **daemon, sl_err *err)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1)
        return sl_fail(err, "--host '%s' is not an IPv4 address", ip);
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD, (uint16_t)port,
        NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_CONNECTION_LIMIT,
        1024u, MHD_OPTION_CONNECTION_TIMEOUT, 300u, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_END);
    if (!d)
        return sl_fail(err, "cannot listen on http://%s:%d (is the port in use?)", ip, port);
    *daemon = d;
    return 0;
}

int sv_http_port(void *daemon)
{
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT);
    return i ? i->port : 0;
}

void sv_http_stop(void *daemon)
{
    if (daemon)
        MHD_stop_daemon(daemon);
}
