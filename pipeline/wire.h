/* The wire: messages (msg/msg.h) as ZeroMQ multipart messages, the header
 * frame first, then one frame per payload. Payloads are sent without
 * copying (zmq_msg_init_data with the payload's free callback) and received
 * without copying (the decoded message points into the zmq frames it keeps
 * until pl_msg_close). */
#ifndef SLUICE_WIRE_H
#define SLUICE_WIRE_H

#include "msg/msg.h"
#include "util/err.h"

/* Sends as one multipart message on a ZeroMQ socket (flags: 0 or ZMQ_DONTWAIT).
 * The message is first checked by the receiver's rules (a message a peer
 * would drop is refused here). With ZMQ_DONTWAIT, "would block" fails before
 * anything is sent and m is unchanged (send again or close it). Otherwise
 * the message is spent (m->hdr = NULL): send it once, then pl_msg_close. */
int pl_msg_send(pl_msg *m, void *socket, int flags, sl_err *err);
/* Receives one multipart message and validates it (pl_msg_decode's checks,
 * the limits enforced frame by frame as they arrive); on failure every frame
 * of the message has been consumed, the error names the problem, and m is
 * left empty. On ROUTER sockets the caller reads the identity frame first.
 * lim NULL: the defaults. */
int pl_msg_recv(pl_msg *m, void *socket, const pl_wire_limits *lim, sl_err *err);

#endif
