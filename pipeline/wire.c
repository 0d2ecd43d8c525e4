/* The wire (see wire.h): ZeroMQ's part of sending and receiving messages;
 * what a message is and the checks on it are msg/'s. */
#include "pipeline/wire.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

/* Payload frames are sent as the host lays them out; the format says
 * little-endian, so a big-endian host would need byte swaps here. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the wire format assumes a little-endian host");

#define MAX_FRAMES_TOTAL (1 + PL_MAX_FRAMES)

/* The zmq frames of a received message, released when the message closes. */
typedef struct wire_frames {
    int n_zmsgs;
    zmq_msg_t zmsgs[MAX_FRAMES_TOTAL];
} wire_frames;

/* ---- sending ---- */

static int send_frame(zmq_msg_t *f, void *socket, int flags)
{
    for (;;) {
        if (zmq_msg_send(f, socket, flags) != -1)
            return 0;
        if (zmq_errno() != EINTR)
            return -1;
    }
}

static int header_frame(const pl_msg *m, zmq_msg_t *f)
{
    if (zmq_msg_init_size(f, pl_msg_header_size(m)))
        return -1;
    pl_msg_pack_header(m, zmq_msg_data(f));
    return 0;
}

/* Closes a multipart message whose payload i could not be sent. */
static int end_cut_short(const pl_msg *m, int kind, uint64_t batch, int i, void *socket, int flags, sl_err *err)
{
    int e = zmq_errno();
    zmq_msg_t end;
    zmq_msg_init(&end);
    if (send_frame(&end, socket, flags))
        zmq_msg_close(&end);
    int pkind;
    size_t bytes;
    pl_msg_frame(m, i, &bytes, &pkind);
    return sl_fail(err, "wire: %s message (batch %llu) cut short at payload %d (%s): %s; the receiver will drop it",
                   pl_msg_kind_name(kind), (unsigned long long)batch, i, pl_msg_payload_name(pkind),
                   zmq_strerror(e));
}

/* Payload i as a zmq frame: handed over without copying when the caller
 * gave a free function (ZeroMQ then owns the data), copied otherwise. */
static int payload_frame(pl_msg *m, int i, zmq_msg_t *f)
{
    size_t bytes;
    void *data = (void *)pl_msg_frame(m, i, &bytes, NULL);
    void *hint;
    pl_msg_free_fn free_fn = pl_msg_take_frame(m, i, &hint);
    if (free_fn) {
        if (zmq_msg_init_data(f, data, bytes, free_fn, hint) == 0)
            return 0;
        free_fn(data, hint);
        return -1;
    }
    if (zmq_msg_init_size(f, bytes))
        return -1;
    if (bytes)
        memcpy(zmq_msg_data(f), data, bytes);
    return 0;
}

/* Payload frames after the header went out. ZeroMQ delivers a multipart
 * message whole or not at all, and once its first part is accepted the
 * rest is too (the high-water mark counts whole messages), so these sends
 * run without ZMQ_DONTWAIT. If a frame still cannot be made or sent, an
 * empty last frame ends the message so the next one starts cleanly; the
 * receiver drops the short one on its frame count. */
static int send_payloads(pl_msg *m, int kind, uint64_t batch, void *socket, int flags, sl_err *err)
{
    for (int i = 0; i < m->n_frames; i++) {
        int more = i + 1 < m->n_frames ? ZMQ_SNDMORE : 0;
        zmq_msg_t f;
        if (payload_frame(m, i, &f))
            return end_cut_short(m, kind, batch, i, socket, flags, err);
        if (send_frame(&f, socket, flags | more)) {
            int rc = end_cut_short(m, kind, batch, i, socket, flags, err);
            zmq_msg_close(&f); /* a zero-copy frame's free function runs here */
            return rc;
        }
    }
    return 0;
}

int pl_msg_send(pl_msg *m, void *socket, int flags, sl_err *err)
{
    if (pl_msg_seal(m, err))
        return -1;
    int kind = m->hdr->kind;
    uint64_t batch = m->hdr->batch_id;
    zmq_msg_t head;
    if (header_frame(m, &head))
        return sl_fail(err, "wire: cannot make the header frame: %s", zmq_strerror(zmq_errno()));
    if (send_frame(&head, socket, flags | (m->n_frames ? ZMQ_SNDMORE : 0))) {
        int e = zmq_errno();
        zmq_msg_close(&head);
        if (e == EAGAIN)
            return sl_fail(err, "wire: %s message (batch %llu) not sent: the socket would block (no peer "
                           "ready or its queue is full); nothing was sent",
                           pl_msg_kind_name(kind), (unsigned long long)batch);
        return sl_fail(err, "wire: cannot send %s message (batch %llu): %s", pl_msg_kind_name(kind),
                       (unsigned long long)batch, zmq_strerror(e));
    }
    /* The message has started on the wire: it is spent whatever happens. */
    pl_msg_mark_sent(m);
    return send_payloads(m, kind, batch, socket, flags & ~ZMQ_DONTWAIT, err);
}

/* ---- receiving ---- */

static void frames_free(void *ctx)
{
    wire_frames *st = ctx;
    for (int i = 0; i < st->n_zmsgs; i++)
        zmq_msg_close(&st->zmsgs[i]);
    free(st);
}

static int recv_frame(zmq_msg_t *f, void *socket)
{
    for (;;) {
        if (zmq_msg_recv(f, socket, 0) != -1)
            return 0;
        if (zmq_errno() != EINTR)
            return -1;
    }
}

/* Reads and discards the rest of a message; returns the frames read. */
static int drain(void *socket)
{
    int n = 0, more = 1;
    while (more) {
        zmq_msg_t f;
        zmq_msg_init(&f);
        if (recv_frame(&f, socket)) {
            zmq_msg_close(&f);
            break;
        }
        n++;
        more = zmq_msg_more(&f);
        zmq_msg_close(&f);
    }
    return n;
}

/* Reads every frame of one message into st, enforcing the limits as it
 * goes; a message over a limit is drained so the next one starts clean. */
static int read_frames(wire_frames *st, void *socket, const pl_wire_limits *lim, sl_err *err)
{
    size_t total = 0;
    for (;;) {
        zmq_msg_t *f = &st->zmsgs[st->n_zmsgs];
        zmq_msg_init(f);
        if (recv_frame(f, socket)) {
            int e = zmq_errno();
            zmq_msg_close(f);
            if (e == EAGAIN)
                return sl_fail(err, "wire: no message to receive");
            return sl_fail(err, "wire: cannot receive: %s", zmq_strerror(e));
        }
        int i = st->n_zmsgs++;
        size_t bytes = zmq_msg_size(f);
        int more = zmq_msg_more(f);
        if (sl_add_size(total, bytes, &total))
            total = SIZE_MAX;
        /* a frame beyond the last slot counts as index MAX_FRAMES_TOTAL */
        int over = more && st->n_zmsgs == MAX_FRAMES_TOTAL;
        if (pl_msg_check_frame(i, bytes, total, lim, err) ||
            (over && pl_msg_check_frame(MAX_FRAMES_TOTAL, 0, total, lim, err))) {
            if (more)
                drain(socket);
            return -1;
        }
        if (!more)
            return 0;
    }
}

int pl_msg_recv(pl_msg *m, void *socket, const pl_wire_limits *lim, sl_err *err)
{
    pl_wire_limits def;
    if (!lim) {
        pl_wire_limits_default(&def);
        lim = &def;
    }
    memset(m, 0, sizeof *m);
    wire_frames *st = calloc(1, sizeof *st);
    if (!st) {
        drain(socket);
        return sl_fail(err, "wire: out of memory receiving a message");
    }
    if (read_frames(st, socket, lim, err)) {
        frames_free(st);
        return -1;
    }
    const void *frames[MAX_FRAMES_TOTAL];
    size_t sizes[MAX_FRAMES_TOTAL];
    for (int i = 0; i < st->n_zmsgs; i++) {
        frames[i] = zmq_msg_data(&st->zmsgs[i]);
        sizes[i] = zmq_msg_size(&st->zmsgs[i]);
    }
    /* the sender's address before m owns the frames (tcp only: "" else) */
    const char *peer = zmq_msg_gets(&st->zmsgs[0], "Peer-Address");
    char who[sizeof m->peer];
    snprintf(who, sizeof who, "%s", peer ? peer : "");
    if (pl_msg_decode_owned(m, frames, sizes, st->n_zmsgs, lim, frames_free, st, err))
        return -1;
    memcpy(m->peer, who, sizeof who);
    return 0;
}
