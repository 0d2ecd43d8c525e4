#include "pipeline/worker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <netdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "scheduler/bind.h"
#include <unistd.h>
#include <zmq.h>

#include "pipeline/config.h"
#include "pipeline/host.h"
#include "pipeline/metrics_http.h"
#include "pipeline/security.h"
#include "pipeline/status.h"
#include "pipeline/wire.h"
#include "stages/stage.h"
#include "util/clock.h"
#include "util/cpus.h"

#define ID_MAX 256

typedef struct worker {
    const pl_worker_opts *o;
    void *zctx, *ctl;
    sec_ipc_file ctl_file;    /* ctl's socket file, removed on the way out */
    pl_wire_limits limits;
    pl_host **hosts;          /* indexed like the assignment's stages */
    int n_hosts;
    pthread_mutex_t hosts_lock; /* hosts/n_hosts as the metrics server reads them */
    pl_metrics_http *http;
    uint8_t owner[ID_MAX];    /* routing id of the coordinator we serve */
    size_t owner_len;         /* 0: idle */
    double last_heard;
    bool served;              /* an assignment has ended (for --once) */
    char host_name[64];
    sec_keys keys;            /* keys.on: CURVE on our tcp:// sockets */
    sec_zap *zap;
} worker;

/* sec_zap_allow tag of the keys an assignment brings (forgotten with it) */
#define TAG_ASSIGNMENT 1

void pl_worker_opts_default(pl_worker_opts *o)
{
    memset(o, 0, sizeof *o);
    o->silence_s = 6.0;
    o->notify_fd = -1;
}

static void say(const worker *w, const char *fmt, const char *a, const char *b)
{
    if (!w->o->quiet) {
        fprintf(stderr, "sluice worker %s: ", w->o->listen);
        fprintf(stderr, fmt, a, b);
        fputc('\n', stderr);
    }
}

static void drop_stages(worker *w)
{
    pthread_mutex_lock(&w->hosts_lock);
    pl_host **hosts = w->hosts;
    int n = w->n_hosts;
    w->hosts = NULL;
    w->n_hosts = 0;
    pthread_mutex_unlock(&w->hosts_lock);
    /* Upstream first, so nothing new flows into a stage being stopped. */
    for (int i = 0; i < n; i++)
        pl_host_stop(hosts[i]);
    free(hosts);
}

/* The metrics server's source (its own thread): the stages of the current
 * assignment, as Prometheus text. */
static char *prometheus_text(void *ctx)
{
    worker *w = ctx;
    pthread_mutex_lock(&w->hosts_lock);
    pl_stage_metrics *m = calloc((size_t)w->n_hosts + 1, sizeof *m);
    int n = 0;
    for (int i = 0; m && i < w->n_hosts; i++)
        if (w->hosts[i])
            pl_host_metrics_get(w->hosts[i], &m[n++]);
    pthread_mutex_unlock(&w->hosts_lock);
    char *text = m ? pl_metrics_prometheus(m, n) : NULL;
    free(m);
    return text;
}

static void end_assignment(worker *w, const char *why)
{
    if (w->n_hosts)
        say(w, "dropping its stages: %s%s", why, "");
    drop_stages(w);
    if (w->zap)
        sec_zap_forget(w->zap, TAG_ASSIGNMENT);
    w->owner_len = 0;
    w->served = true;
}

/* Sends a control message with no payloads to the peer id. */
static int reply(worker *w, const zmq_msg_t *id, Sluice__MsgKind kind, const char *error)
{
    sl_err err;
    if (zmq_send(w->ctl, zmq_msg_data((zmq_msg_t *)id), zmq_msg_size(id), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return -1;
    pl_msg m;
    pl_msg_init(&m, kind, 0, 0);
    pl_msg_set_error(&m, error ? error : "", NULL);
    int rc = pl_msg_send(&m, w->ctl, ZMQ_DONTWAIT, &err);
    pl_msg_close(&m);
    if (rc)
        fprintf(stderr, "sluice worker %s: cannot answer a coordinator: %s\n", w->o->listen, err.msg);
    return rc;
}

static bool is_owner(const worker *w, const zmq_msg_t *id)
{
    return w->owner_len && w->owner_len == zmq_msg_size(id) &&
           memcmp(w->owner, zmq_msg_data((zmq_msg_t *)id), w->owner_len) == 0;
}

/* ---- assignment ---- */

/* The assignment's fields (msg/'s codec) and its CURVE keys. */
static int check_assign(const Sluice__StageAssign *sa, size_t i, sl_err *err)
{
    sl_stage_spec spec;
    pl_stage_place place;
    if (pl_assign_decode(sa, i, &spec, &place, err))
        return -1;
    if ((*place.output_key && !sec_is_key_text(place.output_key)) ||
        (*place.input_peer_key && !sec_is_key_text(place.input_peer_key)))
        return sl_fail(err, "assignment %zu: a peer key is not a CURVE public key", i);
    return 0;
}

static bool is_tcp(const char *addr)
{
    return strncmp(addr, "tcp://", 6) == 0;
}

static bool has_text(const char *s)
{
    return s && *s;
}

/* Both ends of a tcp:// hop must agree on CURVE: a secure worker refuses
 * plain hops, and a worker without keys cannot serve CURVE ones. */
static int check_assign_keys(const worker *w, const Sluice__StageAssign *sa, size_t i, sl_err *err)
{
    bool tcp_in = is_tcp(sa->input), tcp_out = is_tcp(sa->output);
    if (!tcp_in && !tcp_out)
        return 0;
    if (w->keys.on && ((tcp_out && !has_text(sa->output_key)) || (tcp_in && !has_text(sa->input_peer_key))))
        return sl_fail(err, "assignment %zu: the coordinator sent tcp:// addresses without CURVE keys (is its "
                       "config `insecure: true`?); this worker runs with --key and serves CURVE only", i);
    if (!w->keys.on && (has_text(sa->output_key) || has_text(sa->input_peer_key)))
        return sl_fail(err, "assignment %zu: the coordinator's config uses CURVE on tcp:// but this worker "
                       "has no --key", i);
    if (!w->keys.on && !w->o->insecure)
        return sl_fail(err, "assignment %zu: tcp:// hops need this worker's --key (or --insecure)", i);
    return 0;
}

/* The pool threads of a stage whose assignment leaves it open: the cores
 * shared among the layer stages that compute at the same time. */
static int stage_threads(const worker *w, const Sluice__Header *h, const Sluice__StageAssign *sa)
{
    if (sa->threads > 0)
        return sa->threads;
    int cores = w->o->threads > 0 ? w->o->threads : sl_cpus_available();
    int n_layers = 0;
    for (size_t i = 0; i < h->n_assign; i++)
        n_layers += h->assign[i]->kind == PL_STAGE_LAYERS;
    if (sa->kind != PL_STAGE_LAYERS || n_layers <= 1)
        return cores;
    return cores / n_layers > 0 ? cores / n_layers : 1;
}

static int check_model_file(const worker *w, const char *path, sl_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return sl_fail(err, "model file %s is missing on this worker (host %s): %s", path, w->host_name,
                       strerror(errno));
    close(fd);
    return 0;
}

/* The thread count a stage's host gets: the assignment's, or the
 * worker's choice (0 on a NUMA node: the node's cores). */
static int host_threads(const worker *w, const Sluice__Header *h, size_t i, const pl_stage_place *place)
{
    return place->numa >= 0 && place->threads <= 0 ? 0 : stage_threads(w, h, h->assign[i]);
}

/* Whether assignment i runs on the thread of the chain holding i-1: the
 * two talk over inproc:// (consecutive stages of this worker, no
 * local_hops sockets asked for), with the same binding and team size, as
 * the coordinator chains its own stages. A pipelined draft drafts ahead on
 * its own thread, and a chain holds at most one layers stage: the
 * coordinator counts each of a worker's layers stages as computing at the
 * same time as the others (concurrent_layer_stages in pipeline.c), and a
 * draft stage, working ahead when idle, leads its chain. */
static bool chains_on(const worker *w, const Sluice__Header *h, size_t i, bool chain_has_layers)
{
    if (i == 0)
        return false;
    sl_stage_spec a, b;
    pl_stage_place pa, pb;
    sl_err err;
    if (pl_assign_decode(h->assign[i - 1], i - 1, &a, &pa, &err) ||
        pl_assign_decode(h->assign[i], i, &b, &pb, &err))
        return false;
    if (strncmp(pb.input, "inproc://", 9) != 0 || strcmp(pa.output, pb.input) != 0)
        return false;
    if (pa.numa != pb.numa || host_threads(w, h, i - 1, &pa) != host_threads(w, h, i, &pb))
        return false;
    /* a member's idle work never runs (the leader's loop calls its own) */
    if ((a.kind == PL_STAGE_DRAFT && a.spec_pipelined) || b.kind == PL_STAGE_DRAFT)
        return false;
    return !(chain_has_layers && b.kind == PL_STAGE_LAYERS);
}

/* The end of the chain of assignments starting at i0. */
static size_t chain_end(const worker *w, const Sluice__Header *h, size_t i0)
{
    bool layers = h->assign[i0]->kind == PL_STAGE_LAYERS;
    size_t i = i0 + 1;
    for (; i < h->n_assign && chains_on(w, h, i, layers); i++)
        layers |= h->assign[i]->kind == PL_STAGE_LAYERS;
    return i;
}

/* Starts assignments [i0, i1) as one chain on one thread
 * (pl_host_start_chain): for a token they run one after the other anyway,
 * and a thread each cost a hand-off and a wake-up per hop. */
static int start_chain(worker *w, const Sluice__Header *h, size_t i0, size_t i1, pl_host **out, sl_err *err)
{
    sl_stage *stages[PL_MAX_STAGES];
    sl_stage_spec spec;
    pl_stage_place place, last;
    if (i1 - i0 > PL_MAX_STAGES || pl_assign_decode(h->assign[i0], i0, &spec, &place, err) ||
        pl_assign_decode(h->assign[i1 - 1], i1 - 1, &spec, &last, err)) /* checked before */
        return sl_fail(err, "assignment %zu: cannot start its stages", i0);
    /* loaded on its NUMA node, so the pages it first touches live there */
    if (place.numa >= 0 && sl_bind_numa(place.numa, NULL, err))
        return sl_wrap(err, "stage %zu", i0);
    for (size_t i = i0; i < i1; i++) {
        pl_stage_place pi;
        int rc = pl_assign_decode(h->assign[i], i, &spec, &pi, err) ||
                 sl_stage_create(&stages[i - i0], &spec, err);
        if (rc) {
            for (size_t j = i0; j < i; j++)
                sl_stage_destroy(stages[j - i0]);
            if (place.numa >= 0)
                sl_bind_reset();
            return sl_wrap(err, "stage %d (%s)", spec.index, pl_stage_kind_name(spec.kind));
        }
    }
    if (place.numa >= 0)
        sl_bind_reset();
    /* the config's size limits, within what this worker accepts at most */
    pl_wire_limits lim;
    pl_wire_limits_default(&lim);
    if (place.max_frame_bytes && place.max_frame_bytes < lim.max_frame_bytes)
        lim.max_frame_bytes = (size_t)place.max_frame_bytes;
    if (place.max_message_bytes && place.max_message_bytes < lim.max_message_bytes)
        lim.max_message_bytes = (size_t)place.max_message_bytes;
    pl_host_sec sec = {&w->keys, last.output_key, w->zap, &lim, h->run_id};
    return pl_host_start_chain(out, (int)(i1 - i0), w->zctx, stages, place.input, last.output,
                               host_threads(w, h, i0, &place), place.numa, &sec, err);
}

/* Loads and starts every assigned stage, last first so each one's
 * downstream is listening; on failure stops what was started. */
static int assign(worker *w, const Sluice__Header *h, sl_err *err)
{
    if (h->n_assign == 0)
        return sl_fail(err, "the assignment lists no stages");
    /* the stages stamp it on what they send and drop what lacks it */
    if (h->run_id == 0)
        return sl_fail(err, "the assignment carries no pipeline run id (a coordinator older than this "
                       "worker?); its stages could not tell its batches from a stranger's");
    if (h->n_assign > PL_MAX_STAGES)
        return sl_fail(err, "the assignment lists %zu stages, more than the %d a pipeline has at most",
                       h->n_assign, PL_MAX_STAGES);
    for (size_t i = 0; i < h->n_assign; i++)
        if (check_assign(h->assign[i], i, err) || check_assign_keys(w, h->assign[i], i, err))
            return -1;
    /* the peers that feed our stages, as the (authenticated) coordinator names them */
    for (size_t i = 0; w->keys.on && i < h->n_assign; i++)
        if (has_text(h->assign[i]->input_peer_key) &&
            sec_zap_allow(w->zap, "data", h->assign[i]->input_peer_key, TAG_ASSIGNMENT, err))
            return -1;
    for (size_t i = 0; i < h->n_assign; i++)
        if (check_model_file(w, h->assign[i]->model, err) ||
            (h->assign[i]->draft_model && *h->assign[i]->draft_model &&
             check_model_file(w, h->assign[i]->draft_model, err)))
            return -1;
    pl_host **hosts = calloc(h->n_assign, sizeof *hosts);
    if (!hosts)
        return sl_fail(err, "out of memory");
    size_t starts[PL_MAX_STAGES + 1], n_chains = 0;
    for (size_t i = 0; i < h->n_assign; i = chain_end(w, h, i))
        starts[n_chains++] = i;
    starts[n_chains] = h->n_assign;
    /* last first, so each chain's downstream is listening */
    for (size_t k = n_chains; k-- > 0;) {
        if (start_chain(w, h, starts[k], starts[k + 1], &hosts[starts[k]], err)) {
            for (size_t j = starts[k + 1]; j < h->n_assign; j++)
                pl_host_stop(hosts[j]);
            free(hosts);
            return -1;
        }
    }
    pthread_mutex_lock(&w->hosts_lock);
    w->hosts = hosts;
    w->n_hosts = (int)h->n_assign;
    pthread_mutex_unlock(&w->hosts_lock);
    return 0;
}

static void on_assign(worker *w, const zmq_msg_t *id, const Sluice__Header *h)
{
    if (w->owner_len && !is_owner(w, id)) {
        reply(w, id, SLUICE__MSG_KIND__MSG_READY, "busy: this worker serves another coordinator");
        return;
    }
    if (w->owner_len)
        drop_stages(w); /* the same coordinator assigns afresh */
    if (w->zap)
        sec_zap_forget(w->zap, TAG_ASSIGNMENT);
    w->owner_len = 0;
    sl_err err = {{0}};
    double t0 = sl_now_s();
    if (assign(w, h, &err)) {
        if (w->zap)
            sec_zap_forget(w->zap, TAG_ASSIGNMENT);
        fprintf(stderr, "sluice worker %s: assignment failed: %s\n", w->o->listen, err.msg);
        reply(w, id, SLUICE__MSG_KIND__MSG_READY, err.msg);
        w->served = true;
        return;
    }
    w->owner_len = zmq_msg_size(id);
    memcpy(w->owner, zmq_msg_data((zmq_msg_t *)id), w->owner_len);
    w->last_heard = sl_now_s();
    if (!w->o->quiet)
        fprintf(stderr, "sluice worker %s: %d stage(s) ready in %.2f s\n", w->o->listen, w->n_hosts,
                w->last_heard - t0);
    reply(w, id, SLUICE__MSG_KIND__MSG_READY, "");
}

/* A heartbeat answer says whether the asker owns our stages: a coordinator
 * must not mistake a restarted, idle worker for its living stages. */
static void on_heartbeat(worker *w, const zmq_msg_t *id)
{
    const char *state = "";
    if (is_owner(w, id))
        w->last_heard = sl_now_s();
    else
        state = w->owner_len ? "busy" : "idle";
    reply(w, id, SLUICE__MSG_KIND__MSG_HEARTBEAT, state);
}

/* The status text: what this worker serves, then each stage's metrics;
 * asked PL_METRICS_ASK (its coordinator, for its /metrics), the metrics
 * alone in their machine form. Answers anyone the control socket admits
 * (on tcp://, the --allow keys). */
static void on_status(worker *w, const zmq_msg_t *id, const Sluice__Header *h)
{
    bool machine = h->text && strcmp(h->text, PL_METRICS_ASK) == 0;
    pl_stage_metrics *m = calloc((size_t)w->n_hosts + 1, sizeof *m);
    char *body = NULL;
    if (m) {
        for (int i = 0; i < w->n_hosts; i++)
            pl_host_metrics_get(w->hosts[i], &m[i]);
        body = machine ? pl_metrics_encode(m, w->n_hosts) : pl_metrics_text(m, w->n_hosts);
    }
    free(m);
    if (machine) {
        sl_err err;
        if (body && pl_status_answer(w->ctl, zmq_msg_data((zmq_msg_t *)id), zmq_msg_size(id), body, &err))
            fprintf(stderr, "sluice worker %s: cannot answer a metrics request: %s\n", w->o->listen, err.msg);
        free(body);
        return;
    }
    char head[PL_ADDR_MAX + 160];
    snprintf(head, sizeof head, "worker %s (host %s): %s, %d stage(s)\n", w->o->listen, w->host_name,
             w->owner_len ? "serving a coordinator" : "idle", w->n_hosts);
    size_t len = strlen(head) + (body ? strlen(body) : 0) + 1;
    char *text = malloc(len);
    sl_err err;
    if (text) {
        snprintf(text, len, "%s%s", head, body ? body : "");
        if (pl_status_answer(w->ctl, zmq_msg_data((zmq_msg_t *)id), zmq_msg_size(id), text, &err))
            fprintf(stderr, "sluice worker %s: cannot answer a status request: %s\n", w->o->listen, err.msg);
    }
    free(text);
    free(body);
}

/* Reads one control message: [routing id][header][payloads...]. */
static void handle_one(worker *w)
{
    zmq_msg_t id;
    zmq_msg_init(&id);
    if (zmq_msg_recv(&id, w->ctl, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&id);
        return;
    }
    if (!zmq_msg_more(&id) || zmq_msg_size(&id) > ID_MAX) {
        /* a routing id without a message, or an absurd one: drain and drop */
        while (zmq_msg_more(&id) && zmq_msg_recv(&id, w->ctl, ZMQ_DONTWAIT) >= 0) {}
        zmq_msg_close(&id);
        return;
    }
    pl_msg m;
    sl_err err;
    if (pl_msg_recv(&m, w->ctl, &w->limits, &err)) {
        fprintf(stderr, "sluice worker %s: dropped a malformed control message: %s\n", w->o->listen, err.msg);
        zmq_msg_close(&id);
        return;
    }
    switch (m.hdr->kind) {
    case SLUICE__MSG_KIND__MSG_HEARTBEAT:
        on_heartbeat(w, &id);
        break;
    case SLUICE__MSG_KIND__MSG_ASSIGN:
        on_assign(w, &id, m.hdr);
        break;
    case SLUICE__MSG_KIND__MSG_STATUS:
        on_status(w, &id, m.hdr);
        break;
    case SLUICE__MSG_KIND__MSG_SHUTDOWN:
        /* an idle worker hears it from a coordinator that gave up before assigning */
        if (is_owner(w, &id) || !w->owner_len)
            end_assignment(w, "the coordinator shut the pipeline down");
        break;
    default:
        fprintf(stderr, "sluice worker %s: ignored an unexpected %s control message\n", w->o->listen,
                pl_msg_kind_name(m.hdr->kind));
    }
    pl_msg_close(&m);
    zmq_msg_close(&id);
}

static void notify(worker *w, const char *text)
{
    if (w->o->notify_fd < 0)
        return;
    size_t len = strlen(text);
    while (len) {
        ssize_t n = write(w->o->notify_fd, text, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        text += n;
        len -= (size_t)n;
    }
    close(w->o->notify_fd);
}

/* A worker stopped by a signal says so, rather than leave its coordinator
 * to find out from the silence. */
static void tell_owner_stopping(worker *w)
{
    zmq_msg_t id;
    if (zmq_msg_init_size(&id, w->owner_len))
        return;
    memcpy(zmq_msg_data(&id), w->owner, w->owner_len);
    reply(w, &id, SLUICE__MSG_KIND__MSG_HEARTBEAT, "the worker was stopped by a signal on its host");
    zmq_msg_close(&id);
    int linger = 500; /* let it leave before the socket closes */
    zmq_setsockopt(w->ctl, ZMQ_LINGER, &linger, sizeof linger);
}

/* Loads the worker's keys and starts its ZAP handler: the --allow keys are
 * admitted to the control socket and to the stages' inputs. */
static int setup_keys(worker *w, sl_err *err)
{
    const pl_worker_opts *o = w->o;
    bool tcp = is_tcp(o->listen);
    if (o->key && o->insecure)
        return sl_fail(err, "--key and --insecure exclude each other");
    if (!o->key && o->n_allow)
        return sl_fail(err, "--allow needs --key (this worker's own secret key)");
    if (tcp && !o->key && !o->insecure)
        return sl_fail(err, "listening on %s needs --key FILE (this worker's secret key, from `sluice keygen`) "
                       "and --allow FILE (the coordinator's public key), or --insecure for plain TCP",
                       o->listen);
    if (o->insecure) {
        /* a coordinator that spawned us has said so already */
        if (tcp && o->notify_fd < 0)
            fprintf(stderr, "sluice worker %s: warning: --insecure: its tcp:// traffic is neither authenticated "
                    "nor encrypted, and any host that reaches it may drive it\n", o->listen);
        return 0;
    }
    if (!o->key)
        return 0;
    if (o->n_allow == 0)
        return sl_fail(err, "--key needs at least one --allow (the coordinator's public key): nobody else "
                       "could connect");
    if (sec_keys_load(&w->keys, o->key, err))
        return -1;
    char who[PL_ADDR_MAX + 32];
    snprintf(who, sizeof who, "sluice worker %s", o->listen);
    if (sec_zap_start(&w->zap, w->zctx, who, err))
        return -1;
    for (int i = 0; i < o->n_allow; i++) {
        char pub[SEC_KEY_TEXT];
        if (sec_load_public_any(o->allow[i], pub, err))
            return sl_wrap(err, "--allow");
        if (sec_zap_allow(w->zap, "control", pub, 0, err) || sec_zap_allow(w->zap, "data", pub, 0, err))
            return -1;
    }
    return 0;
}

static int open_control(worker *w, sl_err *err)
{
    if (!(w->zctx = zmq_ctx_new()))
        return sl_fail(err, "cannot create a ZeroMQ context");
    if (setup_keys(w, err))
        return -1;
    if (!(w->ctl = zmq_socket(w->zctx, ZMQ_ROUTER)))
        return sl_fail(err, "cannot create the control socket: %s", zmq_strerror(zmq_errno()));
    if (sec_server(w->ctl, &w->keys, w->zap, "control", w->o->listen, err) ||
        (w->keys.on && is_tcp(w->o->listen) && sec_zap_watch(w->zap, w->ctl, "control socket", false, err)))
        return -1;
    int linger = 0, handover = 1;
    zmq_setsockopt(w->ctl, ZMQ_LINGER, &linger, sizeof linger);
    /* a coordinator that reconnects under its routing id takes its place back */
    zmq_setsockopt(w->ctl, ZMQ_ROUTER_HANDOVER, &handover, sizeof handover);
    char addr[PL_ADDR_MAX + 64];
    if (pl_bind_address(w->o->listen, addr, sizeof addr, err))
        return -1;
    if (zmq_bind(w->ctl, addr))
        return sl_fail(err, "cannot listen on %s: %s", w->o->listen, zmq_strerror(zmq_errno()));
    sec_ipc_file_note(&w->ctl_file, addr);
    return 0;
}

static int serve(worker *w, volatile sig_atomic_t *stop, sl_err *err)
{
    while (!*stop && !(w->o->once && w->served)) {
        zmq_pollitem_t item = {w->ctl, 0, ZMQ_POLLIN, 0};
        int rc = zmq_poll(&item, 1, 100);
        if (rc < 0) {
            if (zmq_errno() == EINTR)
                continue;
            return sl_fail(err, "control socket poll failed: %s", zmq_strerror(zmq_errno()));
        }
        if (rc > 0)
            handle_one(w);
        if (w->owner_len && sl_now_s() - w->last_heard > w->o->silence_s)
            end_assignment(w, "the coordinator fell silent");
    }
    return 0;
}

int pl_worker_run(const pl_worker_opts *o, volatile sig_atomic_t *stop, sl_err *err)
{
    worker w = {.o = o};
    pl_wire_limits_default(&w.limits);
    pthread_mutex_init(&w.hosts_lock, NULL);
    if (gethostname(w.host_name, sizeof w.host_name - 1))
        snprintf(w.host_name, sizeof w.host_name, "?");
    int rc = open_control(&w, err);
    if (rc == 0 && o->metrics && pl_metrics_http_start(&w.http, o->metrics, prometheus_text, &w, err))
        rc = -1;
    notify(&w, rc ? err->msg : "ok\n");
    if (rc == 0) {
        say(&w, "listening%s%s", o->once ? " (one assignment)" : "",
            w.keys.on && is_tcp(o->listen) ? " (CURVE)" : "");
        if (w.http)
            say(&w, "metrics at %s%s", pl_metrics_http_url(w.http), "");
        rc = serve(&w, stop, err);
    }
    if (w.n_hosts && *stop)
        tell_owner_stopping(&w);
    if (w.n_hosts)
        end_assignment(&w, *stop ? "interrupted" : "exiting");
    pl_metrics_http_stop(w.http);
    if (w.ctl)
        zmq_close(w.ctl);
    sec_ipc_file_remove(&w.ctl_file);
    if (w.zap && !o->quiet && sec_zap_refused(w.zap))
        fprintf(stderr, "sluice worker %s: refused %llu connection(s) in all\n", o->listen,
                (unsigned long long)sec_zap_refused(w.zap));
    sec_zap_stop(w.zap);
    if (w.zctx)
        zmq_ctx_term(w.zctx);
    pthread_mutex_destroy(&w.hosts_lock);
    return rc;
}
