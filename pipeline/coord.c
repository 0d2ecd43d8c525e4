/* The coordinator: spawns and connects workers, assigns them their stages,
 * and watches them from a thread of its own, so a client that stops calling
 * the driver for a while does not make its workers believe it is gone. */
#define _GNU_SOURCE /* pipe2 */
#include "pipeline/coord.h"

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "pipeline/wire.h"
#include "util/clock.h"
#include "util/cpus.h"

#define HEARTBEAT_EVERY_S 0.25
#define CONNECT_TIMEOUT_S 5.0   /* an answer to the first ping, or the node is unreachable */
#define LOAD_TIMEOUT_S 60.0     /* a big model's layers loading on a worker */
#define START_TIMEOUT_S 10.0    /* a spawned worker binding its control socket */
#define STOP_WAIT_S 3.0         /* a spawned worker exiting after SHUTDOWN */
#define REASSIGN_AGAIN_S 1.0    /* a re-joining worker that refused its stages is asked again */

typedef struct peer {
    int node;
    pl_node nd;              /* a copy: the config may go before we do */
    char stages[160];       /* "layers[3,6), head, sample" for messages */
    int n_stages;
    void *sock;             /* DEALER to the worker's control socket */
    pid_t pid;              /* spawned: the child; else 0 */
    int notify_fd;          /* spawned: read end of its start pipe */
    bool exited, dead;
    bool assigning;         /* dead, re-joining: ASSIGN sent, READY awaited */
    int status;
    double last_heard, last_ping;
    double assign_sent;     /* when the last re-joining ASSIGN went out */
    double last_asked;      /* when we last asked for its stages' metrics */
    pl_stage_metrics *met;  /* under the coordinator's lock: its stages' last metrics */
    int n_met;
} peer;

struct pl_coord {
    const pl_config *cfg;   /* lives as long as we do: re-joins assign from it */
    char model[PATH_MAX];   /* absolute: a worker's cwd is not ours */
    peer *peers;
    int n_peers;
    double timeout_s;
    const pl_keyring *keys; /* lives as long as we do, like cfg */
    char **stage_in, **stage_out;
    int n_addr; /* copies of the data addresses, for re-joins */
    sec_zap *zap;
    pthread_t watcher;
    bool watching;
    atomic_bool quit;
    pthread_mutex_t lock;
    uint64_t deaths;        /* under lock: peers that died so far */
    int n_down;             /* under lock: peers dead and not re-joined yet */
    uint64_t rejoins;       /* under lock */
    char failure[512];      /* under lock: the latest death */
    pl_wire_limits limits;
    uint64_t run_id;        /* the pipeline's: sent with every control message (ASSIGN: the
                             * workers' stages stamp and require it on the data plane) */
};

/* ---- naming ---- */

static void describe_stages(const pl_config *cfg, peer *p)
{
    size_t len = 0;
    p->stages[0] = '\0';
    for (int i = 0; i < cfg->n_stages; i++) {
        const pl_stage *st = &cfg->stages[i];
        if (st->node != p->node || len >= sizeof p->stages)
            continue;
        const char *sep = p->n_stages++ ? ", " : "";
        if (st->kind == PL_STAGE_LAYERS)
            len += (size_t)snprintf(p->stages + len, sizeof p->stages - len, "%slayers[%d,%d)", sep, st->l0, st->l1);
        else
            len += (size_t)snprintf(p->stages + len, sizeof p->stages - len, "%s%s", sep, pl_stage_kind_name(st->kind));
    }
}

/* "stage layers[3,6) on node 'p1' (ipc:///tmp/x)" */
static void peer_label(const peer *p, char *out, size_t size)
{
    snprintf(out, size, "%s %.160s on node '%.64s' (%.200s)", p->n_stages > 1 ? "stages" : "stage", p->stages,
             p->nd.name, p->nd.address);
}

static void exit_text(int status, char *out, size_t size)
{
    if (WIFEXITED(status))
        snprintf(out, size, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(out, size, "was killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        snprintf(out, size, "ended (status %d)", status);
}

/* Polls a spawned worker; true once it has exited (status kept). */
static bool reap(peer *p)
{
    if (p->pid <= 0 || p->exited)
        return p->exited;
    int status;
    pid_t r = waitpid(p->pid, &status, WNOHANG);
    if (r == p->pid || (r < 0 && errno == ECHILD)) {
        p->exited = true;
        p->status = r == p->pid ? status : 0;
    }
    return p->exited;
}

/* ---- spawning ---- */

/* Starts `self_exe worker --listen ADDR --once --quiet --notify-fd N` in its
 * own process group (a Ctrl-C on the terminal reaches the coordinator,
 * which shuts workers down in order) that dies with its parent. */
static int spawn_worker(pl_coord *c, peer *p, const char *self_exe, sl_err *err)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC))
        return sl_fail(err, "node '%s': cannot create a pipe: %s", p->nd.name, strerror(errno));
    char fd_text[16], exe[PL_PATH_MAX];
    snprintf(fd_text, sizeof fd_text, "%d", fds[1]);
    /* the real path, so ps and pgrep show "sluice worker" */
    ssize_t n = readlink(self_exe, exe, sizeof exe - 1);
    if (n > 0)
        exe[n] = '\0';
    else
        snprintf(exe, sizeof exe, "%s", self_exe);
    char *argv[16] = {exe, "worker", "--listen", (char *)p->nd.address, "--once",
                      "--quiet", "--notify-fd", fd_text};
    int argc = 8;
    /* a worker of ours uses the key the config gives it (for its tcp://
     * sockets) and admits us; without CURVE, plain TCP is what the config
     * asked for */
    if (c->keys->self.on && p->nd.key[0]) {
        argv[argc++] = "--key";
        argv[argc++] = p->nd.key;
        argv[argc++] = "--allow";
        argv[argc++] = (char *)c->keys->self.public_;
    } else if (!c->keys->self.on && c->cfg->insecure) {
        argv[argc++] = "--insecure";
    }
    argv[argc] = NULL;
    bool bind = sl_cpuset_count(&p->nd.cores) > 0;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return sl_fail(err, "node '%s': cannot fork: %s", p->nd.name, strerror(errno));
    }
    if (pid == 0) {
        /* only async-signal-safe calls until exec */
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(1);
        if (bind && sl_cpus_bind(&p->nd.cores)) { /* its share of this host's cores */
            static const char no_cpus[] = "cannot bind the worker to its cores";
            ssize_t ignored = write(fds[1], no_cpus, sizeof no_cpus - 1);
            (void)ignored;
            _exit(1);
        }
        dup2(STDERR_FILENO, STDOUT_FILENO); /* stdout carries the coordinator's text */
        fcntl(fds[1], F_SETFD, 0);
        execv(exe, argv);
        static const char msg[] = "cannot execute the sluice binary for the worker";
        ssize_t ignored = write(fds[1], msg, sizeof msg - 1);
        (void)ignored;
        _exit(127);
    }
    close(fds[1]);
    p->pid = pid;
    p->notify_fd = fds[0];
    return 0;
}

/* Waits for a spawned worker's "ok" (its control socket is bound) or its
 * error text. */
static int await_spawned(peer *p, sl_err *err)
{
    char text[512];
    size_t len = 0;
    double deadline = sl_now_s() + START_TIMEOUT_S;
    for (;;) {
        double left = deadline - sl_now_s();
        if (left <= 0)
            return sl_fail(err, "node '%s': the worker process did not start listening on %s within %.0f s",
                           p->nd.name, p->nd.address, START_TIMEOUT_S);
        struct pollfd pfd = {p->notify_fd, POLLIN, 0};
        int rc = poll(&pfd, 1, (int)(left * 1000) + 1);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0)
            continue;
        ssize_t n = read(p->notify_fd, text + len, sizeof text - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n > 0 && len + (size_t)n < sizeof text - 1) {
            len += (size_t)n;
            continue;
        }
        if (n > 0)
            len += (size_t)n;
        break; /* EOF (or a full buffer): the worker has said all it will */
    }
    close(p->notify_fd);
    p->notify_fd = -1;
    text[len] = '\0';
    if (strcmp(text, "ok\n") == 0)
        return 0;
    if (len)
        return sl_fail(err, "node '%s': the worker process failed to start: %s", p->nd.name, text);
    char how[96] = "ended";
    for (int i = 0; i < 100 && !reap(p); i++)
        usleep(10000);
    if (p->exited)
        exit_text(p->status, how, sizeof how);
    return sl_fail(err, "node '%s': the worker process %s before listening on %s", p->nd.name, how,
                   p->nd.address);
}

/* ---- control messages ---- */

static int send_ctl(const pl_coord *c, peer *p, Sluice__MsgKind kind, Sluice__StageAssign **assign,
                    size_t n_assign, sl_err *err)
{
    pl_msg m;
    pl_msg_init(&m, kind, 0, 0);
    pl_msg_set_run_id(&m, c->run_id);
    pl_msg_set_assign(&m, assign, n_assign);
    int rc = pl_msg_send(&m, p->sock, ZMQ_DONTWAIT, err);
    pl_msg_close(&m);
    return rc;
}

/* Receives one control message from a peer without blocking; 1 with *m
 * filled, 0 when nothing is there, -1 for a malformed one (dropped). */
static int recv_ctl(pl_coord *c, peer *p, pl_msg *m)
{
    zmq_pollitem_t item = {p->sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, 0) <= 0)
        return 0;
    sl_err err;
    if (pl_msg_recv(m, p->sock, &c->limits, &err)) {
        fprintf(stderr, "sluice: node '%s': dropped a malformed control message: %s\n", p->nd.name, err.msg);
        return -1;
    }
    return 1;
}

static int open_socket(pl_coord *c, void *zctx, peer *p, int index, sl_err *err)
{
    if (!(p->sock = zmq_socket(zctx, ZMQ_DEALER)))
        return sl_fail(err, "node '%s': cannot create a socket: %s", p->nd.name, zmq_strerror(zmq_errno()));
    char id[64];
    /* a fixed routing id: a reconnect after a network blip keeps our claim on the worker */
    int id_len = snprintf(id, sizeof id, "coord-%ld-%p-%d", (long)getpid(), (void *)c, index);
    int linger = 0, reconnect_ms = 100, connect_ms = (int)(CONNECT_TIMEOUT_S * 1000);
    zmq_setsockopt(p->sock, ZMQ_ROUTING_ID, id, (size_t)id_len);
    zmq_setsockopt(p->sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(p->sock, ZMQ_RECONNECT_IVL, &reconnect_ms, sizeof reconnect_ms);
    zmq_setsockopt(p->sock, ZMQ_CONNECT_TIMEOUT, &connect_ms, sizeof connect_ms);
    if (c->keys->self.on && strncmp(p->nd.address, "tcp://", 6) == 0) {
        char label[160];
        snprintf(label, sizeof label, "node '%.64s'", p->nd.name);
        if (sec_client(p->sock, &c->keys->self, c->keys->pub[p->node], p->nd.address, err) ||
            sec_zap_watch(c->zap, p->sock, label, true, err))
            return sl_wrap(err, "node '%s'", p->nd.name);
    }
    if (zmq_connect(p->sock, p->nd.address))
        return sl_fail(err, "node '%s': cannot connect to %s: %s", p->nd.name, p->nd.address,
                       zmq_strerror(zmq_errno()));
    return 0;
}

/* Fails when a spawned worker has exited while we wait for it. */
static int check_alive(peer *p, const char *waiting_for, sl_err *err)
{
    if (!reap(p))
        return 0;
    char how[96];
    exit_text(p->status, how, sizeof how);
    return sl_fail(err, "node '%s' (%s): the worker process %s while %s", p->nd.name, p->nd.address, how,
                   waiting_for);
}

/* Waits until every peer has sent a message of kind `want`; handle is
 * called for each (it may fail). */
static int await_all(pl_coord *c, Sluice__MsgKind want, double timeout_s,
                     int (*handle)(peer *p, const Sluice__Header *h, sl_err *err),
                     int (*on_timeout)(peer *p, double timeout_s, sl_err *err), const char *waiting_for,
                     sl_err *err)
{
    bool *got = calloc((size_t)c->n_peers, sizeof *got);
    zmq_pollitem_t *items = calloc((size_t)c->n_peers, sizeof *items);
    int rc = 0, left = c->n_peers;
    double deadline = sl_now_s() + timeout_s;
    if (!got || !items)
        rc = sl_fail(err, "out of memory");
    for (int i = 0; rc == 0 && i < c->n_peers; i++)
        items[i] = (zmq_pollitem_t){c->peers[i].sock, 0, ZMQ_POLLIN, 0};
    while (rc == 0 && left > 0) {
        for (int i = 0; rc == 0 && i < c->n_peers; i++)
            if (!got[i])
                rc = check_alive(&c->peers[i], waiting_for, err);
        if (rc)
            break;
        if (sl_now_s() > deadline) {
            for (int i = 0; i < c->n_peers; i++)
                if (!got[i]) {
                    rc = on_timeout(&c->peers[i], timeout_s, err);
                    break;
                }
            break;
        }
        if (zmq_poll(items, c->n_peers, 50) < 0 && zmq_errno() != EINTR) {
            rc = sl_fail(err, "coordinator: poll failed: %s", zmq_strerror(zmq_errno()));
            break;
        }
        for (int i = 0; rc == 0 && i < c->n_peers; i++) {
            pl_msg m;
            int r;
            while (rc == 0 && !got[i] && (r = recv_ctl(c, &c->peers[i], &m)) != 0) {
                if (r < 0)
                    continue;
                if ((int)m.hdr->kind == (int)want) {
                    got[i] = true;
                    left--;
                    c->peers[i].last_heard = sl_now_s();
                    rc = handle(&c->peers[i], m.hdr, err);
                }
                pl_msg_close(&m);
            }
        }
    }
    free(got);
    free(items);
    return rc;
}

static int pong_ok(peer *p, const Sluice__Header *h, sl_err *err)
{
    (void)p, (void)h, (void)err;
    return 0; /* "busy" shows up as the answer to ASSIGN */
}

static int unreachable(peer *p, double timeout_s, sl_err *err)
{
    if (p->nd.public_key[0] && strncmp(p->nd.address, "tcp://", 6) == 0)
        return sl_fail(err, "node '%s' (%s) is unreachable: no answer within %.0f s (is `sluice worker --listen "
                       "%s --key ... --allow ...` running there, with the secret half of the public_key the "
                       "config names and this coordinator's public key among its --allow keys?)",
                       p->nd.name, p->nd.address, timeout_s, p->nd.address);
    return sl_fail(err, "node '%s' (%s) is unreachable: no answer within %.0f s (is `sluice worker --listen %s` "
                   "running there?)", p->nd.name, p->nd.address, timeout_s, p->nd.address);
}

static int ready_ok(peer *p, const Sluice__Header *h, sl_err *err)
{
    if (h->error && *h->error)
        return sl_fail(err, "node '%s' (%s): %s", p->nd.name, p->nd.address, h->error);
    return 0;
}

static int load_timeout(peer *p, double timeout_s, sl_err *err)
{
    return sl_fail(err, "node '%s' (%s) did not load its stages (%s) within %.0f s", p->nd.name,
                   p->nd.address, p->stages, timeout_s);
}

/* ---- assignment ---- */

static int send_assign(pl_coord *c, peer *p, const char *const *stage_in, const char *const *stage_out,
                       sl_err *err)
{
    const pl_config *cfg = c->cfg;
    Sluice__StageAssign *sa = calloc((size_t)p->n_stages, sizeof *sa);
    Sluice__StageAssign **ptrs = calloc((size_t)p->n_stages, sizeof *ptrs);
    if (!sa || !ptrs) {
        free(sa);
        free(ptrs);
        return sl_fail(err, "out of memory");
    }
    int n = 0;
    for (int i = 0; i < cfg->n_stages && n < p->n_stages; i++) {
        const pl_stage *st = &cfg->stages[i];
        if (st->node != p->node)
            continue;
        pl_stage_place place = {
            .input = stage_in[i], .output = stage_out[i], .threads = st->threads, .numa = st->numa,
            /* the worker trusts these because they come from us, over CURVE */
            .output_key = pl_keyring_stage_key(c->keys, cfg, i + 1),
            .input_peer_key = c->keys->self.on ? c->keys->pub[i ? cfg->stages[i - 1].node : 0] : "",
            .max_frame_bytes = (uint64_t)cfg->limits.max_frame_bytes,
            .max_message_bytes = (uint64_t)cfg->limits.max_message_bytes,
        };
        sl_stage_spec spec;
        pl_config_stage_spec(cfg, i, &spec);
        spec.model = c->model;
        pl_assign_encode(&sa[n], &spec, &place);
        ptrs[n] = &sa[n];
        n++;
    }
    int rc = send_ctl(c, p, SLUICE__MSG_KIND__MSG_ASSIGN, ptrs, (size_t)n, err);
    if (rc)
        sl_wrap(err, "node '%s' (%s): cannot send its assignment", p->nd.name, p->nd.address);
    free(sa);
    free(ptrs);
    return rc;
}

static int collect_peers(pl_coord *c, sl_err *err)
{
    const pl_config *cfg = c->cfg;
    bool used[PL_MAX_NODES] = {false};
    for (int i = 0; i < cfg->n_stages; i++)
        if (cfg->stages[i].node > 0 && cfg->stages[i].node < cfg->n_nodes)
            used[cfg->stages[i].node] = true;
    int n = 0;
    for (int k = 1; k < cfg->n_nodes; k++)
        n += used[k];
    c->peers = calloc((size_t)(n ? n : 1), sizeof *c->peers);
    if (!c->peers)
        return sl_fail(err, "out of memory");
    for (int k = 1; k < cfg->n_nodes; k++) {
        if (!used[k])
            continue;
        peer *p = &c->peers[c->n_peers++];
        p->node = k;
        p->nd = cfg->nodes[k];
        p->notify_fd = -1;
        describe_stages(cfg, p);
        if (strncmp(p->nd.address, "tcp://", 6) != 0 && strncmp(p->nd.address, "ipc://", 6) != 0)
            return sl_fail(err, "%s: node '%s' runs %s but has no tcp:// or ipc:// address to reach it at",
                           cfg->path, p->nd.name, p->stages);
    }
    return 0;
}

/* ---- watching ---- */

static void mark_dead(pl_coord *c, peer *p, const char *what)
{
    p->dead = true;
    p->assigning = false;
    p->last_ping = 0; /* start asking for it at once */
    char label[480];
    peer_label(p, label, sizeof label);
    pthread_mutex_lock(&c->lock);
    c->deaths++;
    c->n_down++;
    p->n_met = 0; /* its stages' numbers are gone with it */
    snprintf(c->failure, sizeof c->failure, "%.380s %.120s", label, what);
    pthread_mutex_unlock(&c->lock);
    fprintf(stderr, "sluice: %s %s\n", label, what);
}

/* A dead peer's worker answers again (restarted at its address, or back
 * after a partition): it gets its stages afresh, with empty caches. A
 * spawned worker is ours to restart, not to wait for, so it stays dead. */
static void rejoin_peer(pl_coord *c, peer *p, double t)
{
    pl_msg m;
    int r;
    sl_err err;
    while (p->dead && (r = recv_ctl(c, p, &m)) != 0) {
        if (r < 0)
            continue;
        if (m.hdr->kind == SLUICE__MSG_KIND__MSG_HEARTBEAT && !p->assigning &&
            t - p->assign_sent >= REASSIGN_AGAIN_S &&
            (!m.hdr->error || !*m.hdr->error || strcmp(m.hdr->error, "idle") == 0)) {
            /* ours (a partition healed) or free: either way, its stages anew */
            if (send_assign(c, p, (const char *const *)c->stage_in,
                            (const char *const *)c->stage_out, &err) == 0) {
                p->assigning = true;
                p->assign_sent = t;
            } else {
                fprintf(stderr, "sluice: %s\n", err.msg);
            }
        } else if (m.hdr->kind == SLUICE__MSG_KIND__MSG_READY && p->assigning) {
            p->assigning = false;
            if (m.hdr->error && *m.hdr->error) {
                fprintf(stderr, "sluice: node '%s' (%s) could not take its stages back: %s\n", p->nd.name,
                        p->nd.address, m.hdr->error);
            } else {
                char label[480];
                peer_label(p, label, sizeof label);
                p->dead = false;
                p->last_heard = p->last_ping = t;
                pthread_mutex_lock(&c->lock);
                c->n_down--;
                c->rejoins++;
                pthread_mutex_unlock(&c->lock);
                fprintf(stderr, "sluice: %s re-joined\n", label);
            }
        }
        pl_msg_close(&m);
    }
    if (!p->dead)
        return;
    if (p->assigning && t - p->assign_sent > LOAD_TIMEOUT_S)
        p->assigning = false;
    if (!p->assigning && t - p->last_ping >= HEARTBEAT_EVERY_S) {
        p->last_ping = t;
        send_ctl(c, p, SLUICE__MSG_KIND__MSG_HEARTBEAT, NULL, 0, &err);
    }
}

/* ---- remote stages' metrics (for the coordinator's /metrics) ---- */

static void ask_metrics(peer *p, double t)
{
    if (t - p->last_asked < PL_COORD_METRICS_EVERY_S)
        return;
    p->last_asked = t;
    pl_msg m;
    sl_err err;
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_STATUS, 0, 0);
    pl_msg_set_text(&m, PL_METRICS_ASK);
    pl_msg_send(&m, p->sock, ZMQ_DONTWAIT, &err); /* a full queue: next time */
    pl_msg_close(&m);
}

/* A worker's answer: its stages' metrics, kept whole or not at all. */
static void take_metrics(pl_coord *c, peer *p, const pl_msg *m)
{
    int max = p->n_stages > 0 ? p->n_stages : 1;
    pl_stage_metrics *met = calloc((size_t)max, sizeof *met);
    sl_err err;
    int n = met && m->hdr->text ? pl_metrics_decode(m->hdr->text, met, max, &err) : -1;
    for (int i = 0; i < n; i++)
        if (met[i].index >= c->cfg->n_stages || c->cfg->stages[met[i].index].node != p->node) {
            snprintf(err.msg, sizeof err.msg, "stage metrics: stage %d is not one of this node's", met[i].index);
            n = -1;
        }
    if (n < 0) {
        static bool logged;
        if (met && m->hdr->text && !logged) {
            logged = true;
            fprintf(stderr, "sluice: node '%s': %s\n", p->nd.name, err.msg);
        }
        free(met);
        return;
    }
    pthread_mutex_lock(&c->lock);
    free(p->met);
    p->met = met;
    p->n_met = n;
    pthread_mutex_unlock(&c->lock);
}

int pl_coord_metrics(pl_coord *c, pl_stage_metrics *out, int max)
{
    int n = 0;
    pthread_mutex_lock(&c->lock);
    for (int i = 0; i < c->n_peers; i++)
        for (int k = 0; k < c->peers[i].n_met && n < max; k++)
            out[n++] = c->peers[i].met[k];
    pthread_mutex_unlock(&c->lock);
    return n;
}

static void watch_peer(pl_coord *c, peer *p, double t)
{
    pl_msg m;
    int r;
    if (p->dead) {
        if (p->pid <= 0)
            rejoin_peer(c, p, t);
        return;
    }
    while (!p->dead && (r = recv_ctl(c, p, &m)) != 0) {
        if (r < 0)
            continue;
        if (m.hdr->kind == SLUICE__MSG_KIND__MSG_STATUS) {
            take_metrics(c, p, &m);
        } else if (m.hdr->kind == SLUICE__MSG_KIND__MSG_HEARTBEAT) {
            if (m.hdr->error && *m.hdr->error) {
                char what[160];
                if (strcmp(m.hdr->error, "busy") == 0 || strcmp(m.hdr->error, "idle") == 0)
                    snprintf(what, sizeof what, "lost its stages (the worker there is %s: was it restarted?)",
                             m.hdr->error);
                else
                    snprintf(what, sizeof what, "stopped: %.120s", m.hdr->error);
                mark_dead(c, p, what);
            } else {
                p->last_heard = t;
            }
        }
        pl_msg_close(&m);
    }
    if (p->dead)
        return;
    if (reap(p)) {
        char how[96];
        exit_text(p->status, how, sizeof how);
        mark_dead(c, p, how);
        return;
    }
    if (t - p->last_heard > c->timeout_s) {
        char what[96];
        snprintf(what, sizeof what, "stopped answering (silent for %.1f s)", t - p->last_heard);
        mark_dead(c, p, what);
        return;
    }
    if (t - p->last_ping >= HEARTBEAT_EVERY_S) {
        sl_err err;
        p->last_ping = t;
        send_ctl(c, p, SLUICE__MSG_KIND__MSG_HEARTBEAT, NULL, 0, &err); /* a full queue just means silence */
    }
    ask_metrics(p, t);
}

static void *watch_main(void *arg)
{
    pl_coord *c = arg;
    zmq_pollitem_t *items = calloc((size_t)c->n_peers, sizeof *items);
    if (!items)
        return NULL;
    for (int i = 0; i < c->n_peers; i++)
        items[i] = (zmq_pollitem_t){c->peers[i].sock, 0, ZMQ_POLLIN, 0};
    while (!atomic_load(&c->quit)) {
        zmq_poll(items, c->n_peers, 50);
        double t = sl_now_s();
        for (int i = 0; i < c->n_peers; i++)
            watch_peer(c, &c->peers[i], t);
    }
    free(items);
    return NULL;
}

/* ---- the contract ---- */

static int start_workers(pl_coord *c, void *zctx, const char *const *stage_in,
                         const char *const *stage_out, const char *self_exe, sl_err *err)
{
    if (collect_peers(c, err))
        return -1;
    for (int i = 0; i < c->n_peers; i++)
        if (c->peers[i].nd.spawn && spawn_worker(c, &c->peers[i], self_exe, err))
            return -1;
    for (int i = 0; i < c->n_peers; i++)
        if (c->peers[i].pid > 0 && await_spawned(&c->peers[i], err))
            return -1;
    for (int i = 0; i < c->n_peers; i++)
        if (open_socket(c, zctx, &c->peers[i], i, err) ||
            send_ctl(c, &c->peers[i], SLUICE__MSG_KIND__MSG_HEARTBEAT, NULL, 0, err))
            return -1;
    if (await_all(c, SLUICE__MSG_KIND__MSG_HEARTBEAT, CONNECT_TIMEOUT_S, pong_ok, unreachable,
                  "waiting for its first answer", err))
        return -1;
    /* every worker loads at once */
    for (int i = 0; i < c->n_peers; i++)
        if (send_assign(c, &c->peers[i], stage_in, stage_out, err))
            return -1;
    return await_all(c, SLUICE__MSG_KIND__MSG_READY, LOAD_TIMEOUT_S, ready_ok, load_timeout,
                     "loading its stages", err);
}

static void free_addresses(pl_coord *c)
{
    for (int i = 0; i < c->n_addr; i++) {
        if (c->stage_in)
            free(c->stage_in[i]);
        if (c->stage_out)
            free(c->stage_out[i]);
    }
    free(c->stage_in);
    free(c->stage_out);
}

int pl_coord_start(pl_coord **out, void *zctx, const pl_config *cfg, const char *const *stage_in,
                   const char *const *stage_out, const char *self_exe, double peer_timeout_s,
                   const pl_keyring *keys, sec_zap *zap, uint64_t run_id, sl_err *err)
{
    *out = NULL;
    pl_coord *c = calloc(1, sizeof *c);
    if (!c)
        return sl_fail(err, "out of memory");
    c->run_id = run_id;
    c->cfg = cfg;
    c->keys = keys;
    c->zap = zap;
    if (!realpath(cfg->model, c->model))
        snprintf(c->model, sizeof c->model, "%s", cfg->model);
    c->timeout_s = peer_timeout_s > 0 ? peer_timeout_s : 2.0;
    c->n_addr = cfg->n_stages;
    c->stage_in = calloc((size_t)cfg->n_stages, sizeof *c->stage_in);
    c->stage_out = calloc((size_t)cfg->n_stages, sizeof *c->stage_out);
    bool copied = c->stage_in && c->stage_out;
    for (int i = 0; copied && i < cfg->n_stages; i++)
        copied = (c->stage_in[i] = strdup(stage_in[i])) && (c->stage_out[i] = strdup(stage_out[i]));
    if (!copied) {
        free_addresses(c);
        free(c);
        return sl_fail(err, "out of memory");
    }
    pl_wire_limits_default(&c->limits);
    pthread_mutex_init(&c->lock, NULL);
    atomic_init(&c->quit, false);
    if (start_workers(c, zctx, stage_in, stage_out, self_exe ? self_exe : "/proc/self/exe", err)) {
        pl_coord_stop(c);
        return -1;
    }
    double t = sl_now_s();
    for (int i = 0; i < c->n_peers; i++)
        c->peers[i].last_heard = c->peers[i].last_ping = t;
    if (pthread_create(&c->watcher, NULL, watch_main, c)) {
        pl_coord_stop(c);
        return sl_fail(err, "coordinator: cannot start the heartbeat thread");
    }
    c->watching = true;
    *out = c;
    return 0;
}

void pl_coord_status_get(pl_coord *c, pl_coord_status *st)
{
    pthread_mutex_lock(&c->lock);
    st->deaths = c->deaths;
    st->n_down = c->n_down;
    st->rejoins = c->rejoins;
    snprintf(st->failure, sizeof st->failure, "%s", c->failure);
    pthread_mutex_unlock(&c->lock);
}

/* Waits for a spawned worker to exit, and kills it when it does not. */
static void stop_spawned(peer *p)
{
    if (p->dead && !reap(p))
        kill(p->pid, SIGKILL); /* stopped or hung: nothing to wait for */
    double deadline = sl_now_s() + STOP_WAIT_S;
    while (!reap(p) && sl_now_s() < deadline)
        usleep(5000);
    if (!reap(p)) {
        fprintf(stderr, "sluice: node '%s': the worker process %d did not exit; killing it\n", p->nd.name,
                (int)p->pid);
        kill(p->pid, SIGKILL);
        waitpid(p->pid, &p->status, 0);
        p->exited = true;
    }
}

void pl_coord_stop(pl_coord *c)
{
    if (!c)
        return;
    if (c->watching) {
        atomic_store(&c->quit, true);
        pthread_join(c->watcher, NULL);
    }
    int linger = 1000; /* let SHUTDOWN reach a remote worker after we close */
    for (int i = 0; i < c->n_peers; i++) {
        peer *p = &c->peers[i];
        if (!p->sock)
            continue;
        sl_err err;
        if (!p->dead && !reap(p)) {
            zmq_setsockopt(p->sock, ZMQ_LINGER, &linger, sizeof linger);
            send_ctl(c, p, SLUICE__MSG_KIND__MSG_SHUTDOWN, NULL, 0, &err);
        }
    }
    for (int i = 0; i < c->n_peers; i++) {
        peer *p = &c->peers[i];
        if (p->notify_fd >= 0)
            close(p->notify_fd);
        if (p->pid > 0)
            stop_spawned(p);
        if (p->sock)
            zmq_close(p->sock);
        free(p->met);
    }
    free(c->peers);
    free_addresses(c);
    pthread_mutex_destroy(&c->lock);
    free(c);
}
