/* `sluice status` (see status.h): one STATUS request on a DEALER socket. */
#include "pipeline/status.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "pipeline/host.h"
#include "pipeline/security.h"
#include "pipeline/wire.h"

void pl_status_sanitize(char *text)
{
    for (unsigned char *p = (unsigned char *)text; *p; p++)
        if (!(*p == '\n' || *p == '\t' || (*p >= 0x20 && *p < 0x7f)))
            *p = '?';
}

static int secure(void *sock, const pl_status_opts *o, sl_err *err)
{
    if (strncmp(o->addr, "tcp://", 6) != 0 || o->insecure)
        return 0;
    if (!o->key || !o->server_key)
        return sl_fail(err, "%s: tcp:// needs --key (a secret key the worker allows, e.g. its coordinator's) "
                       "and --server-key (the worker's public key), or --insecure", o->addr);
    sec_keys keys;
    char server[SEC_KEY_TEXT];
    if (sec_keys_load(&keys, o->key, err))
        return -1;
    if (sec_load_public_any(o->server_key, server, err))
        return sl_wrap(err, "--server-key");
    return sec_client(sock, &keys, server, o->addr, err);
}

static int ask(void *sock, const pl_status_opts *o, char **text, sl_err *err)
{
    int linger = 0, timeout_ms = (int)(o->timeout_s * 1000);
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(sock, ZMQ_SNDTIMEO, &timeout_ms, sizeof timeout_ms);
    if (secure(sock, o, err))
        return -1;
    /* ZeroMQ would retry a dead address quietly until the timeout */
    if (sec_probe_served(o->addr, err))
        return -1;
    if (zmq_connect(sock, o->addr))
        return sl_fail(err, "cannot connect to %s: %s", o->addr, zmq_strerror(zmq_errno()));
    pl_msg m;
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_STATUS, 0, 0);
    int rc = pl_msg_send(&m, sock, 0, err);
    pl_msg_close(&m);
    if (rc)
        return sl_wrap(err, "%s", o->addr);
    zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
    for (;;) {
        rc = zmq_poll(&item, 1, timeout_ms);
        if (rc < 0 && zmq_errno() == EINTR)
            continue;
        break;
    }
    if (rc <= 0)
        return sl_fail(err, "no answer from %s within %.1f s (is a sluice worker listening there, and does it "
                       "admit this key?)", o->addr, o->timeout_s);
    pl_wire_limits lim;
    pl_wire_limits_default(&lim);
    if (pl_msg_recv(&m, sock, &lim, err))
        return sl_wrap(err, "%s", o->addr);
    if (m.hdr->kind != SLUICE__MSG_KIND__MSG_STATUS) {
        sl_fail(err, "%s answered with a %s message, not STATUS (an older sluice worker?)", o->addr,
                pl_msg_kind_name(m.hdr->kind));
        pl_msg_close(&m);
        return -1;
    }
    *text = strdup(m.hdr->text ? m.hdr->text : "");
    pl_msg_close(&m);
    if (!*text)
        return sl_fail(err, "out of memory");
    pl_status_sanitize(*text);
    return 0;
}

int pl_status_query(const pl_status_opts *o, char **text, sl_err *err)
{
    *text = NULL;
    void *zctx = zmq_ctx_new();
    if (!zctx)
        return sl_fail(err, "cannot create a ZeroMQ context");
    void *sock = zmq_socket(zctx, ZMQ_DEALER);
    int rc = sock ? ask(sock, o, text, err)
                  : sl_fail(err, "cannot create a socket: %s", zmq_strerror(zmq_errno()));
    if (sock)
        zmq_close(sock);
    zmq_ctx_term(zctx);
    return rc;
}

/* ---- serving ---- */

int pl_status_answer(void *sock, const void *id, size_t id_len, const char *text, sl_err *err)
{
    size_t len = strlen(text);
    char *cut = NULL;
    if (len >= PL_STATUS_TEXT_MAX) {
        if (!(cut = malloc(PL_STATUS_TEXT_MAX)))
            return sl_fail(err, "out of memory");
        memcpy(cut, text, PL_STATUS_TEXT_MAX - 1);
        cut[PL_STATUS_TEXT_MAX - 1] = '\0';
        text = cut;
    }
    int rc = -1;
    if (zmq_send(sock, id, id_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        sl_fail(err, "cannot answer: %s", zmq_strerror(zmq_errno()));
    } else {
        pl_msg m;
        pl_msg_init(&m, SLUICE__MSG_KIND__MSG_STATUS, 0, 0);
        pl_msg_set_text(&m, text);
        rc = pl_msg_send(&m, sock, ZMQ_DONTWAIT, err);
        pl_msg_close(&m);
    }
    free(cut);
    return rc;
}

struct pl_status_server {
    void *zctx, *sock;
    sec_ipc_file file;
    sec_zap *zap;
    pl_status_source source;
    void *ctx;
    char addr[256];
    pthread_t thread;
    bool running;
    atomic_bool quit;
};

static void serve_one(pl_status_server *s)
{
    uint8_t id[256];
    int id_len = zmq_recv(s->sock, id, sizeof id, ZMQ_DONTWAIT);
    if (id_len < 0)
        return;
    int more = 0;
    size_t ml = sizeof more;
    zmq_getsockopt(s->sock, ZMQ_RCVMORE, &more, &ml);
    if (!more || id_len > (int)sizeof id)
        return;
    pl_msg m;
    sl_err err;
    pl_wire_limits lim;
    pl_wire_limits_default(&lim);
    lim.max_frame_bytes = lim.max_message_bytes = 64u << 10; /* requests carry no payloads */
    if (pl_msg_recv(&m, s->sock, &lim, &err)) {
        fprintf(stderr, "sluice: status %s: dropped a malformed request: %s\n", s->addr, err.msg);
        return;
    }
    bool status = m.hdr->kind == SLUICE__MSG_KIND__MSG_STATUS;
    pl_msg_close(&m);
    if (!status)
        return;
    char *text = s->source(s->ctx);
    if (text && pl_status_answer(s->sock, id, (size_t)id_len, text, &err))
        fprintf(stderr, "sluice: status %s: %s\n", s->addr, err.msg);
    free(text);
}

static void *server_main(void *arg)
{
    pl_status_server *s = arg;
    while (!atomic_load(&s->quit)) {
        zmq_pollitem_t item = {s->sock, 0, ZMQ_POLLIN, 0};
        int rc = zmq_poll(&item, 1, 100);
        if (rc < 0 && zmq_errno() != EINTR)
            break;
        if (rc > 0)
            serve_one(s);
    }
    return NULL;
}

void pl_status_server_stop(pl_status_server *s)
{
    if (!s)
        return;
    if (s->running) {
        atomic_store(&s->quit, true);
        pthread_join(s->thread, NULL);
    }
    if (s->sock)
        zmq_close(s->sock);
    sec_ipc_file_remove(&s->file);
    sec_zap_stop(s->zap);
    if (s->zctx)
        zmq_ctx_term(s->zctx);
    free(s);
}

static int server_open(pl_status_server *s, const char *addr, const sec_keys *keys, const char *allow,
                       sl_err *err)
{
    bool curve = keys && keys->on && strncmp(addr, "tcp://", 6) == 0;
    if (!(s->zctx = zmq_ctx_new()))
        return sl_fail(err, "cannot create a ZeroMQ context");
    char who[300];
    snprintf(who, sizeof who, "sluice status %s", addr);
    if (curve && (sec_zap_start(&s->zap, s->zctx, who, err) || sec_zap_allow(s->zap, "status", allow, 0, err)))
        return -1;
    if (!(s->sock = zmq_socket(s->zctx, ZMQ_ROUTER)))
        return sl_fail(err, "cannot create a socket: %s", zmq_strerror(zmq_errno()));
    int linger = 0;
    zmq_setsockopt(s->sock, ZMQ_LINGER, &linger, sizeof linger);
    int64_t max_msg = 64 << 10;
    zmq_setsockopt(s->sock, ZMQ_MAXMSGSIZE, &max_msg, sizeof max_msg);
    if (curve && (sec_server(s->sock, keys, s->zap, "status", addr, err) ||
                  sec_zap_watch(s->zap, s->sock, "status socket", false, err)))
        return -1;
    char bind[512];
    if (pl_bind_address(addr, bind, sizeof bind, err))
        return -1;
    if (zmq_bind(s->sock, bind))
        return sl_fail(err, "cannot serve status on %s: %s", addr, zmq_strerror(zmq_errno()));
    sec_ipc_file_note(&s->file, addr);
    return 0;
}

int pl_status_server_start(pl_status_server **out, const char *addr, const sec_keys *keys, const char *allow,
                           pl_status_source source, void *ctx, sl_err *err)
{
    *out = NULL;
    pl_status_server *s = calloc(1, sizeof *s);
    if (!s)
        return sl_fail(err, "out of memory");
    s->source = source;
    s->ctx = ctx;
    snprintf(s->addr, sizeof s->addr, "%s", addr);
    if (server_open(s, addr, keys, allow, err)) {
        pl_status_server_stop(s);
        return -1;
    }
    if (pthread_create(&s->thread, NULL, server_main, s)) {
        pl_status_server_stop(s);
        return sl_fail(err, "status %s: cannot start a thread", addr);
    }
    s->running = true;
    *out = s;
    return 0;
}
