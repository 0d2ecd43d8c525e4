/* The same-host data link: stage-to-stage messages between processes on one
 * host over a unix stream socket instead of ZeroMQ's ipc://. A ZeroMQ hop
 * wakes the sender's I/O thread, the receiver's I/O thread and the
 * receiving thread, some twenty system calls; a link hop is one sendmsg on
 * the sending stage's thread and one recv on the receiving one, which it
 * wakes directly (or finds while it busy-polls, pl_link_in_spin).
 *
 * A stage whose input address is ipc://PATH listens on PATH.link too (in the
 * same private directory, sec_ipc_dir); a sender whose output is ipc://PATH
 * sends every message there, so its messages stay in order on one stream.
 * SLUICE_IPC_LINK=zmq in the environment turns the link off (ZeroMQ ipc://
 * then carries the hop, as before). The control plane and tcp:// links stay
 * ZeroMQ.
 *
 * On the stream a message is its ZeroMQ frames with a prefix:
 *   u32 magic "SLK1", u32 n (frames, 1..1+PL_MAX_FRAMES), n x u64 sizes,
 *   then the frames' bytes (frame 0 the protobuf-c header), little-endian.
 * The sizes are checked against the receiver's limits before anything is
 * allocated; a stream that breaks the format (bad magic, frame count, a
 * size past a limit) gets its error and is closed, since nothing after it
 * can be trusted; a message that decodes badly is dropped and the stream
 * goes on. */
#ifndef SLUICE_LINK_H
#define SLUICE_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "msg/msg.h"
#include "util/err.h"

#define PL_LINK_MAGIC 0x314b4c53u /* "SLK1" */
/* at most this many senders at once (a restarted one replaces a dead one) */
#define PL_LINK_MAX_CONNS 4

/* True when a data hop to addr goes over the link: ipc:// (not abstract,
 * its path short enough to take ".link") and SLUICE_IPC_LINK is not "zmq". */
bool pl_link_wanted(const char *addr);
/* The link's socket path for ipc://PATH: PATH.link. */
int pl_link_path(const char *addr, char *out, size_t size, sl_err *err);

/* ---- receiving ---- */

typedef struct pl_link_in pl_link_in;

/* Listens at addr's link path (a stale socket file there is replaced).
 * lim NULL: the defaults. */
int pl_link_listen(pl_link_in **out, const char *addr, const pl_wire_limits *lim, sl_err *err);
/* The fds to poll for input (the listener and each connection), up to max;
 * returns how many. They change as senders come and go: ask again after
 * each pl_link_in_recv. */
int pl_link_in_fds(const pl_link_in *l, int *fds, int max);
/* Tells the link that a poll of its fds found fd readable. A caller that
 * does this (after each of its polls, for every readable fd) saves system
 * calls: from its first call on, pl_link_in_recv accepts senders only when
 * a poll saw the listener readable, and reads a connection only when a poll
 * (or pl_link_in_spin) saw bytes on it since a read drained it; a read that
 * gets less than it asked for counts as draining, and what arrives after it
 * shows in the next poll. A caller that never calls it gets every fd looked
 * at in each pl_link_in_recv. */
void pl_link_in_ready(pl_link_in *l, int fd);
/* Takes the next whole message that has arrived, without blocking: 1 with
 * m filled, 0 when none is waiting, -1 when a message was dropped or a
 * sender's stream was closed for breaking the format (err says which and
 * why; call again for more). A sender that went away is forgotten quietly. */
int pl_link_in_recv(pl_link_in *l, pl_msg *m, sl_err *err);
/* Busy-polls the connections for up to spin_us microseconds: true as soon
 * as bytes are waiting on one of them (pl_link_in_recv takes them). It
 * adapts: a spin that found nothing (the sender's replies come later than
 * spin_us, as when the other process computes half a token) makes the next
 * 1, 2, 4, ... up to 64 calls return false at once, so a stage whose input
 * comes slowly costs its machine almost no spinning, while one in a quick
 * exchange wakes no thread. */
bool pl_link_in_spin(pl_link_in *l, int spin_us);
/* Closes the listener and every connection and removes the socket file. */
void pl_link_in_close(pl_link_in *l);
/* How long a receiver busy-polls before sleeping: SLUICE_LINK_SPIN_US
 * (0..1000), or 50. */
int pl_link_spin_us(void);

/* ---- sending ---- */

typedef struct pl_link_out pl_link_out;

/* A sender to addr's link; it connects at the first send (the receiver may
 * be a worker not yet assigned). */
int pl_link_out_open(pl_link_out **out, const char *addr, sl_err *err);
/* Sends m (built with pl_msg_init; checked as pl_msg_send checks it) as one
 * sendmsg, blocking while the receiver's buffer is full. A receiver that
 * was never reached is retried for a moment (it may be starting); one that
 * closed its end (its process died or restarted) is reconnected once; when
 * neither works the message is dropped with an error naming the peer. m is
 * spent either way: pl_msg_close it. */
int pl_link_send(pl_link_out *o, pl_msg *m, sl_err *err);
void pl_link_out_close(pl_link_out *o);

/* ---- the stream format, for the receiver and its fuzz target ---- */

/* The prefix at p (have bytes of it so far) against the limits: 0 with
 * *need set to the prefix's full size while have is short of it, then with
 * the frame sizes in sizes[] and *n set; -1 with err when the prefix breaks
 * the format or a limit. */
int pl_link_parse_prefix(const uint8_t *p, size_t have, const pl_wire_limits *lim, int *n, uint64_t *sizes,
                         size_t *need, sl_err *err);

#endif
