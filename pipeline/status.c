/* `sluice status` (see status.h): one STATUS request on a DEALER socket. */
#include "pipeline/status.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

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
