#include "pipeline/host.h"

#include <arpa/inet.h>
#include <errno.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "pipeline/link_poll.h"
#include "pipeline/security.h"
#include "util/pool.h"

#define HOST_QUEUE 64

struct pl_host {
    void *zctx;
    sl_stage *stage;
    void *in, *out;
    sec_ipc_file in_file;   /* in's socket file, removed when it closes */
    /* the same-host link (link.h) beside an ipc:// input, and instead of
     * out when the output is ipc:// */
    pl_link_in *lin;
    pl_link_out *lout;
    /* a count on it means stop: a plain fd in the host's poll(2) set, as
     * are the input socket's ZMQ_FD and the link's fds (pipeline/link_poll.h:
     * zmq_poll would cost system calls before and after every wait) */
    int stop_fd;
    int threads;
    int numa;          /* -1: not bound */
    pthread_t thread;
    pl_wire_limits limits;
    pthread_mutex_t lock;
    pl_host_stats stats;
    pl_stage_metrics met;  /* under lock */
    sl_pool_stats pool;    /* the stage's calls on the worker pool */
    /* messages taken off the input socket and not yet processed: the
     * queue depth a stage sees is how many wait here when it takes one */
    pl_msg *pending;
    int q_head, n_pending;
    sl_emit emit;      /* where this host's stage sends: its socket, or the next member */
    bool member;       /* runs on the thread of the chain's first host */
    pl_host *up;       /* member: the host whose stage feeds it */
    double nested;     /* time the current message spent in later members */
    /* the highest fence seen: batches with ids up to it were sent before a
     * stage was lost (the driver replays their requests), so any that a
     * cut-off stage still flushes downstream are dropped, never computed */
    uint64_t fence;
    /* the pipeline run: stamped on what the host sends, required of what
     * it receives (the wire carries no other identity, and without CURVE
     * anyone who reaches the input can send) */
    uint64_t run_id;
    bool foreign_logged;
};

#include "proto/sluice.pb-c.h"
#include "scheduler/bind.h"
#include "util/clock.h"
#include "util/debug.h"

void pl_wire_limits_from_config(pl_wire_limits *w, const pl_limits *l)
{
    pl_wire_limits_default(w);
    w->max_frame_bytes = (size_t)l->max_frame_bytes;
    w->max_message_bytes = (size_t)l->max_message_bytes;
}

static int emit_send(void *ctx, pl_msg *m, sl_err *err)
{
    pl_host *h = ctx;
    pl_msg_raise_fence(m, h->fence);
    pl_msg_set_run_id(m, h->run_id);
    int rc = h->lout ? pl_link_send(h->lout, m, err) : pl_msg_send(m, h->out, 0, err);
    pl_msg_close(m);
    return rc;
}

/* ZeroMQ binds tcp:// only to an IP address or an interface name, while a
 * config naturally names hosts: a name is resolved here (connecting peers
 * resolve it themselves). Other addresses are copied unchanged. */
int pl_bind_address(const char *addr, char *out, size_t size, sl_err *err)
{
    snprintf(out, size, "%s", addr);
    if (strncmp(addr, "ipc://", 6) == 0)
        return sec_ipc_dir(addr, err);
    if (strncmp(addr, "tcp://", 6) != 0)
        return 0;
    const char *host = addr + 6, *colon = strrchr(host, ':');
    if (!colon || colon == host || *host == '[' || *host == '*')
        return 0;
    char name[256];
    size_t len = (size_t)(colon - host);
    if (len >= sizeof name)
        return sl_fail(err, "address %s: host name too long", addr);
    memcpy(name, host, len);
    name[len] = '\0';
    struct in_addr v4;
    if (inet_pton(AF_INET, name, &v4) == 1)
        return 0;
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
    int rc = getaddrinfo(name, NULL, &hints, &res);
    if (rc)
        return 0; /* maybe an interface name: let ZeroMQ say */
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &((struct sockaddr_in *)res->ai_addr)->sin_addr, ip, sizeof ip);
    freeaddrinfo(res);
    snprintf(out, size, "tcp://%s%s", ip, colon);
    return 0;
}

/* The stage's own counters before a message, to see what it did with it. */
typedef struct stage_marks {
    uint64_t errors, refused;
} stage_marks;

static stage_marks marks_of(const sl_stage *s)
{
    return (stage_marks){s->n_errors, s->n_refused};
}

static void count(pl_host *h, uint32_t rows, int failed, double t0, stage_marks before, int depth)
{
    double step = sl_now_s() - t0 - h->nested; /* this stage alone, not the members it fed */
    uint64_t errors = (failed != 0) + (h->stage->n_errors - before.errors);
    uint64_t refused = h->stage->n_refused - before.refused;
    pthread_mutex_lock(&h->lock);
    h->stats.messages++;
    h->stats.rows += rows;
    h->stats.errors += errors;
    h->stats.busy_seconds += step;
    h->met.messages++;
    h->met.tokens += rows;
    h->met.errors += errors;
    h->met.refused += refused;
    h->met.busy_seconds += step;
    h->met.queue_depth = (uint32_t)depth;
    pl_hist_observe(&h->met.step_seconds, step);
    pl_hist_observe(&h->met.queue, depth);
    pthread_mutex_unlock(&h->lock);
    h->nested = 0;
}

/* A message dropped on receipt; one past a wire limit is refused too. */
static void count_dropped(pl_host *h, const sl_err *why)
{
    fprintf(stderr, "sluice: %s: %s a message: %s\n", h->stage->name,
            pl_wire_err_is_limit(why) ? "refused" : "dropped a malformed", why->msg);
    pthread_mutex_lock(&h->lock);
    h->stats.dropped++;
    h->met.dropped++;
    h->met.refused += pl_wire_err_is_limit(why);
    pthread_mutex_unlock(&h->lock);
}

/* True when m is of another pipeline run (or of none): it is dropped,
 * counted and logged (the first one a stage sees, by its id and sender),
 * before its fence or anything else in it is taken. */
static bool foreign(pl_host *h, const pl_msg *m)
{
    if (m->hdr->run_id == h->run_id)
        return false;
    if (!h->foreign_logged) {
        h->foreign_logged = true;
        fprintf(stderr, "sluice: %s: dropping messages of another pipeline run (the first: %s batch %llu, run "
                "id %016llx, from %s; this run's is %016llx)\n", h->stage->name,
                pl_msg_kind_name(m->hdr->kind), (unsigned long long)m->hdr->batch_id,
                (unsigned long long)m->hdr->run_id, m->peer[0] ? m->peer : "a peer of unknown address",
                (unsigned long long)h->run_id);
    }
    pthread_mutex_lock(&h->lock);
    h->stats.dropped++;
    h->stats.foreign++;
    h->met.dropped++;
    h->met.foreign++;
    pthread_mutex_unlock(&h->lock);
    return true;
}

/* Takes m's fence; true when m is a batch at or below the fence (stale:
 * sent before a stage was lost), which is then counted as dropped. */
static bool fenced_off(pl_host *h, const pl_msg *m)
{
    if (m->hdr->fence > h->fence)
        h->fence = m->hdr->fence;
    if (m->hdr->kind != SLUICE__MSG_KIND__MSG_BATCH || m->hdr->batch_id > h->fence)
        return false;
    static bool logged;
    sl_debug_once(&logged, "%s: dropping batches sent before a stage was lost (the first: batch %llu, fence %llu)",
                  h->stage->name, (unsigned long long)m->hdr->batch_id, (unsigned long long)h->fence);
    pthread_mutex_lock(&h->lock);
    h->stats.dropped++;
    h->met.dropped++;
    pthread_mutex_unlock(&h->lock);
    return true;
}

/* A member's input: m as the wire would deliver it, with the receiver's
 * checks (pl_msg_hand_over: the header and payloads viewed in place, not
 * packed and unpacked), handed to the member's stage. */
static int emit_chain(void *ctx, pl_msg *m, sl_err *err)
{
    (void)err; /* failures are counted as drops, never the sender's error */
    pl_host *h = ctx;
    sl_err why;
    pl_msg_raise_fence(m, h->up->fence);
    pl_msg_set_run_id(m, h->up->run_id);
    if (pl_msg_seal(m, &why)) { /* one the next member would drop on receipt */
        count_dropped(h, &why);
        pl_msg_close(m);
        return 0;
    }
    pl_msg in;
    double entered = sl_now_s();
    if (pl_msg_hand_over(&in, m, &h->limits, &why)) {
        count_dropped(h, &why);
    } else if (foreign(h, &in) || fenced_off(h, &in)) {
        pl_msg_close(&in);
    } else {
        double t0 = sl_now_s();
        uint32_t rows = in.hdr->n_rows;
        stage_marks before = marks_of(h->stage);
        sl_pool_set_stats(&h->pool);
        int rc = h->stage->process(h->stage, &in, &h->emit, &why);
        sl_pool_set_stats(&h->up->pool); /* back in the member that fed this one */
        pl_msg_close(&in);
        if (rc)
            fprintf(stderr, "sluice: %s: %s\n", h->stage->name, why.msg);
        count(h, rows, rc, t0, before, 0);
    }
    pl_msg_close(m); /* in's header and views were m's */
    h->up->nested += sl_now_s() - entered;
    return 0;
}

/* Queues m unless it is stale. */
static void enqueue(pl_host *h)
{
    pl_msg *m = &h->pending[(h->q_head + h->n_pending) % HOST_QUEUE];
    if (foreign(h, m) || fenced_off(h, m))
        pl_msg_close(m);
    else
        h->n_pending++;
}

/* Takes every message waiting on the input (up to HOST_QUEUE) into the
 * host's queue, in order; malformed ones are dropped and counted here.
 * True when the queue filled first (the socket may hold more). */
static bool take_waiting(pl_host *h, bool *arrived)
{
    for (;;) {
        if (!pl_zmq_pending(h->in))
            return false;
        if (h->n_pending == HOST_QUEUE)
            return true;
        *arrived = true;
        pl_msg *m = &h->pending[(h->q_head + h->n_pending) % HOST_QUEUE];
        sl_err err;
        if (pl_msg_recv(m, h->in, &h->limits, &err)) {
            count_dropped(h, &err);
            continue;
        }
        enqueue(h);
    }
}

/* The same for the link's senders; true when the queue filled before
 * everything that arrived was taken. */
static bool take_linked(pl_host *h)
{
    while (h->n_pending < HOST_QUEUE) {
        pl_msg *m = &h->pending[(h->q_head + h->n_pending) % HOST_QUEUE];
        sl_err err;
        int rc = pl_link_in_recv(h->lin, m, &err);
        if (rc == 0)
            return false;
        if (rc < 0)
            count_dropped(h, &err);
        else
            enqueue(h);
    }
    return true;
}

/* The poll set: the stop fd, the input socket's ZMQ_FD, the link's fds. */
static int poll_items(pl_host *h, int in_fd, struct pollfd *items, int max)
{
    items[0] = (struct pollfd){.fd = h->stop_fd, .events = POLLIN};
    items[1] = (struct pollfd){.fd = in_fd, .events = POLLIN};
    return h->lin ? pl_link_poll_add(h->lin, items, 2, max) : 2;
}

static void *host_main(void *arg)
{
    pl_host *h = arg;
    if (h->numa >= 0) {
        int cores = 0;
        sl_err err;
        if (sl_bind_numa(h->numa, &cores, &err))
            fprintf(stderr, "sluice: %s: %s (running unbound)\n", h->stage->name, err.msg);
        else if (h->threads <= 0)
            sl_pool_set_thread_limit(cores);
    }
    if (h->threads > 0)
        sl_pool_set_thread_limit(h->threads);
    struct pollfd items[2 + 1 + PL_LINK_MAX_CONNS];
    bool busy_idle = false; /* the stage has work for idle time */
    bool link_more = false; /* the link may hold messages not yet taken */
    bool zmq_more = true;   /* the input socket may: look before sleeping */
    int in_fd = pl_zmq_fd(h->in);
    if (in_fd < 0) {
        fprintf(stderr, "sluice: %s: cannot poll its input socket: %s\n", h->stage->name,
                zmq_strerror(zmq_errno()));
        return NULL;
    }
    int spin = h->lin ? pl_link_spin_us() : 0;
    for (;;) {
        int n_items = poll_items(h, in_fd, items, (int)(sizeof items / sizeof items[0]));
        bool now = busy_idle || h->n_pending || link_more || zmq_more;
        /* a message that comes within the spin costs no wake-up */
        if (!now && spin > 0 && pl_link_in_spin(h->lin, spin))
            now = true;
        if (poll(items, (nfds_t)n_items, now ? 0 : -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (items[0].revents & POLLIN)
            break;
        bool arrived = false;
        if (zmq_more || items[1].revents)
            zmq_more = take_waiting(h, &arrived);
        if (h->lin)
            arrived |= pl_link_poll_seen(h->lin, items, 2, n_items);
        if (h->lin && (arrived || link_more))
            link_more = take_linked(h);
        if (!h->n_pending) {
            /* nothing waits: let the stage work ahead in small steps */
            if (!arrived)
                busy_idle = h->stage->idle && h->stage->idle(h->stage) > 0;
            continue;
        }
        busy_idle = h->stage->idle != NULL;
        pl_msg *m = &h->pending[h->q_head];
        h->q_head = (h->q_head + 1) % HOST_QUEUE;
        int depth = --h->n_pending;
        sl_err err;
        double t0 = sl_now_s();
        uint32_t rows = m->hdr->n_rows;
        stage_marks before = marks_of(h->stage);
        sl_pool_set_stats(&h->pool);
        int rc = h->stage->process(h->stage, m, &h->emit, &err);
        pl_msg_close(m);
        if (rc)
            fprintf(stderr, "sluice: %s: %s\n", h->stage->name, err.msg);
        count(h, rows, rc, t0, before, depth);
    }
    while (h->n_pending) {
        pl_msg_close(&h->pending[h->q_head]);
        h->q_head = (h->q_head + 1) % HOST_QUEUE;
        h->n_pending--;
    }
    return NULL;
}

static void close_sockets(pl_host *h)
{
    void **socks[] = {&h->in, &h->out};
    for (size_t i = 0; i < 2; i++)
        if (*socks[i]) {
            zmq_close(*socks[i]);
            *socks[i] = NULL;
        }
    sec_ipc_file_remove(&h->in_file);
    pl_link_in_close(h->lin);
    h->lin = NULL;
    pl_link_out_close(h->lout);
    h->lout = NULL;
    if (h->stop_fd >= 0)
        close(h->stop_fd);
    h->stop_fd = -1;
}

/* Starts a host whose stage's output goes to members[0] (when n_members >
 * 0), the last member sending on this host's socket; all wired before the
 * thread starts. */
/* CURVE on the host's tcp:// sockets, before they bind or connect. */
static int secure_sockets(pl_host *h, const char *in_addr, const char *out_addr, const pl_host_sec *sec,
                          sl_err *err)
{
    if (!sec || !sec->keys || !sec->keys->on)
        return 0;
    if (sec_server(h->in, sec->keys, sec->zap, "data", in_addr, err) ||
        sec_client(h->out, sec->keys, sec->out_server_key, out_addr, err))
        return sl_wrap(err, "%s", h->stage->name);
    if (strncmp(in_addr, "tcp://", 6) == 0) {
        char label[96];
        snprintf(label, sizeof label, "%s input", h->stage->name);
        if (sec_zap_watch(sec->zap, h->in, label, false, err))
            return -1;
    }
    return 0;
}

static int start_linked(pl_host **out, void *zctx, sl_stage *stage, const char *in_addr,
                        const char *out_addr, int threads, int numa, const pl_host_sec *sec,
                        pl_host **members, int n_members, sl_err *err)
{
    *out = NULL;
    pl_host *h = calloc(1, sizeof *h);
    if (!h) {
        sl_stage_destroy(stage);
        return sl_fail(err, "out of memory");
    }
    h->zctx = zctx;
    h->stage = stage;
    h->threads = threads;
    h->numa = numa;
    h->stop_fd = -1;
    h->emit = (sl_emit){emit_send, h};
    pl_wire_limits_default(&h->limits);
    if (sec && sec->limits)
        h->limits = *sec->limits;
    h->run_id = sec ? sec->run_id : 0;
    pl_stage_metrics_init(&h->met, stage->name, stage->index);
    pthread_mutex_init(&h->lock, NULL);
    if (!(h->pending = calloc(HOST_QUEUE, sizeof *h->pending))) {
        sl_fail(err, "%s: out of memory", stage->name);
        goto fail;
    }
    if ((h->stop_fd = eventfd(0, EFD_CLOEXEC)) < 0) {
        sl_fail(err, "%s: cannot make an eventfd: %s", stage->name, strerror(errno));
        goto fail;
    }
    int linger = 0;
    h->in = zmq_socket(zctx, ZMQ_PULL);
    h->out = zmq_socket(zctx, ZMQ_PUSH);
    if (!h->in || !h->out)
        goto zfail;
    zmq_setsockopt(h->out, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(h->in, ZMQ_LINGER, &linger, sizeof linger);
    /* ZeroMQ drops an oversized message before buffering all of it. */
    int64_t max_msg = (int64_t)h->limits.max_message_bytes;
    zmq_setsockopt(h->in, ZMQ_MAXMSGSIZE, &max_msg, sizeof max_msg);
    /* the next stage may be a worker process still starting: retry its
     * address soon rather than after ZeroMQ's default 100 ms */
    int reconnect_ms = 10;
    zmq_setsockopt(h->out, ZMQ_RECONNECT_IVL, &reconnect_ms, sizeof reconnect_ms);
    if (secure_sockets(h, in_addr, out_addr, sec, err))
        goto fail;
    char bind_addr[512];
    if (pl_bind_address(in_addr, bind_addr, sizeof bind_addr, err))
        goto fail;
    if (zmq_bind(h->in, bind_addr)) {
        sl_fail(err, "%s: cannot listen on %s: %s", stage->name, in_addr, zmq_strerror(zmq_errno()));
        goto fail;
    }
    sec_ipc_file_note(&h->in_file, bind_addr);
    if ((pl_link_wanted(in_addr) && pl_link_listen(&h->lin, bind_addr, &h->limits, err)) ||
        (pl_link_wanted(out_addr) && pl_link_out_open(&h->lout, out_addr, err))) {
        sl_wrap(err, "%s", stage->name);
        goto fail;
    }
    if (zmq_connect(h->out, out_addr)) {
        sl_fail(err, "%s: cannot connect to %s: %s", stage->name, out_addr, zmq_strerror(zmq_errno()));
        goto fail;
    }
    for (int i = 0; i < n_members; i++)
        members[i]->run_id = h->run_id;
    if (n_members > 0) {
        h->emit = (sl_emit){emit_chain, members[0]};
        members[0]->up = h;
        members[n_members - 1]->emit = (sl_emit){emit_send, h};
    }
    if (pthread_create(&h->thread, NULL, host_main, h)) {
        sl_fail(err, "%s: cannot start a thread", stage->name);
        goto fail;
    }
    *out = h;
    return 0;
zfail:
    sl_fail(err, "%s: ZeroMQ socket setup failed: %s", stage->name, zmq_strerror(zmq_errno()));
fail:
    close_sockets(h);
    sl_stage_destroy(h->stage);
    pthread_mutex_destroy(&h->lock);
    free(h->pending);
    free(h);
    return -1;
}

int pl_host_start(pl_host **out, void *zctx, sl_stage *stage, const char *in_addr,
                  const char *out_addr, int threads, sl_err *err)
{
    return start_linked(out, zctx, stage, in_addr, out_addr, threads, -1, NULL, NULL, 0, err);
}

int pl_host_start_numa(pl_host **out, void *zctx, sl_stage *stage, const char *in_addr,
                       const char *out_addr, int threads, int numa, const pl_host_sec *sec,
                       sl_err *err)
{
    return start_linked(out, zctx, stage, in_addr, out_addr, threads, numa, sec, NULL, 0, err);
}

static pl_host *member_new(sl_stage *stage)
{
    pl_host *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->stage = stage;
    h->member = true;
    pl_wire_limits_default(&h->limits);
    pl_stage_metrics_init(&h->met, stage->name, stage->index);
    pthread_mutex_init(&h->lock, NULL);
    return h;
}

int pl_host_start_chain(pl_host **out, int n, void *zctx, sl_stage **stages, const char *in_addr,
                        const char *out_addr, int threads, int numa, const pl_host_sec *sec,
                        sl_err *err)
{
    for (int i = 0; i < n; i++)
        out[i] = NULL;
    /* members first: the leader's thread may pass them a message at once */
    for (int i = 1; i < n; i++) {
        if (!(out[i] = member_new(stages[i]))) {
            for (int j = i; j < n; j++)
                sl_stage_destroy(stages[j]);
            for (int j = 1; j < i; j++)
                pl_host_stop(out[j]);
            sl_stage_destroy(stages[0]);
            return sl_fail(err, "out of memory");
        }
    }
    for (int i = 1; i + 1 < n; i++) {
        out[i]->emit = (sl_emit){emit_chain, out[i + 1]};
        out[i + 1]->up = out[i];
    }
    if (start_linked(&out[0], zctx, stages[0], in_addr, out_addr, threads, numa, sec, out + 1, n - 1,
                     err)) {
        for (int j = 1; j < n; j++)
            pl_host_stop(out[j]);
        return -1;
    }
    return 0;
}

void pl_host_stop(pl_host *h)
{
    if (!h)
        return;
    if (h->member) {
        sl_stage_destroy(h->stage);
        pthread_mutex_destroy(&h->lock);
        free(h);
        return;
    }
    uint64_t one = 1;
    while (write(h->stop_fd, &one, sizeof one) < 0 && errno == EINTR) {}
    pthread_join(h->thread, NULL);
    close_sockets(h);
    sl_stage_destroy(h->stage);
    pthread_mutex_destroy(&h->lock);
    free(h->pending);
    free(h);
}

static void pool_totals(const sl_pool_stats *p, uint64_t *calls, uint64_t *split, uint64_t *thread_sum,
                        uint32_t *threads, double *op_s, double *split_s, double *wait_s)
{
    *calls = atomic_load(&p->calls);
    *split = atomic_load(&p->split_calls);
    *thread_sum = atomic_load(&p->thread_sum);
    *threads = atomic_load(&p->last_threads);
    *op_s = (double)atomic_load(&p->op_ns) * 1e-9;
    *split_s = (double)atomic_load(&p->split_ns) * 1e-9;
    *wait_s = (double)atomic_load(&p->wait_ns) * 1e-9;
}

void pl_host_stats_get(pl_host *h, pl_host_stats *st)
{
    pthread_mutex_lock(&h->lock);
    *st = h->stats;
    pthread_mutex_unlock(&h->lock);
    pool_totals(&h->pool, &st->pool_calls, &st->pool_split_calls, &st->pool_thread_sum, &st->pool_threads,
                &st->pool_op_seconds, &st->pool_split_seconds, &st->pool_wait_seconds);
}

void pl_host_metrics_get(pl_host *h, pl_stage_metrics *m)
{
    pthread_mutex_lock(&h->lock);
    *m = h->met;
    pthread_mutex_unlock(&h->lock);
    pool_totals(&h->pool, &m->pool_calls, &m->pool_split_calls, &m->pool_thread_sum, &m->pool_threads,
                &m->pool_op_seconds, &m->pool_split_seconds, &m->pool_wait_seconds);
}

void pl_host_describe(const pl_host *h, char *buf, size_t size)
{
    buf[0] = '\0';
    if (h->stage && h->stage->describe)
        h->stage->describe(h->stage, buf, size);
}

const char *pl_host_name(const pl_host *h) { return h->stage->name; }


