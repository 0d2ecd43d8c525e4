/* The wire format: ZeroMQ multipart messages whose first frame is a
 * protobuf-c Header (proto/sluice.proto) and whose further frames are raw
 * little-endian payloads described by the header. Payloads are sent without
 * copying (zmq_msg_init_data with a free callback) and received without
 * copying (the decoded message points into the zmq frames it keeps).
 *
 * Every field is validated on receipt: version, kind, frame count against
 * the payload list, each frame's byte size against dtype x shape, shapes
 * against n_rows and the receiver's expectations, limits on frame and
 * message size. A message that fails is reported with an error naming what
 * is wrong; the caller decides whom to tell. */
#ifndef SLUICE_WIRE_H
#define SLUICE_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/sluice.pb-c.h"
#include "util/err.h"

#define PL_WIRE_VERSION 1
#define PL_MAX_FRAMES 16

/* A message being built or one received. */
typedef struct pl_msg {
    Sluice__Header *hdr;       /* received: unpacked header (owned); building: see pl_msg_init */
    int n_frames;              /* payload frames */
    /* payload views, indexed by Sluice__PayloadKind (NULL when absent) */
    const void *data[16];
    size_t size[16];
    Sluice__DType dtype[16];
    uint64_t shape[16][2];
    /* storage */
    void *zframes;             /* received: its zmq frames and aligned copies (owned, opaque) */
    Sluice__Header hdr_store;  /* building */
    Sluice__Payload pay_store[PL_MAX_FRAMES];
    Sluice__Payload *pay_ptrs[PL_MAX_FRAMES];
    uint64_t shape_store[PL_MAX_FRAMES][2];
    void (*free_fn[PL_MAX_FRAMES])(void *data, void *hint);
    void *free_hint[PL_MAX_FRAMES];
    bool received;
} pl_msg;

/* Limits a receiver enforces before trusting anything. */
typedef struct pl_wire_limits {
    size_t max_header_bytes;   /* default 64 KiB */
    size_t max_frame_bytes;    /* default 256 MiB */
    size_t max_message_bytes;  /* default 512 MiB */
    uint32_t max_rows;         /* default 65536 */
} pl_wire_limits;

void pl_wire_limits_default(pl_wire_limits *l);
/* True when err (from pl_msg_recv or pl_msg_decode) says the message went
 * past one of the limits (sizes, frames, rows) rather than being malformed:
 * the receiver counts it as refused. */
bool pl_wire_err_is_limit(const sl_err *err);

/* Starts building a message of a kind with n_rows rows. */
void pl_msg_init(pl_msg *m, Sluice__MsgKind kind, uint64_t batch_id, uint32_t n_rows);
/* Adds a payload frame: data of dtype with shape [dim0] or [dim0, dim1]
 * (dim1 = 0 for 1-D). free_fn(data, hint) is called once ZeroMQ is done
 * with it (NULL: the data must outlive the send; it is copied if so).
 * On success the message owns data with a free_fn: it is freed exactly once,
 * by ZeroMQ after sending (possibly on ZeroMQ's I/O thread, or the receiving
 * thread for inproc) or by pl_msg_close when never sent. On failure the
 * caller keeps it. Each payload kind's dtype and rank are checked here. */
int pl_msg_add(pl_msg *m, Sluice__PayloadKind kind, Sluice__DType dtype, uint64_t dim0,
               uint64_t dim1, const void *data, void (*free_fn)(void *, void *), void *hint,
               sl_err *err);
/* Sends as one multipart message on a ZeroMQ socket (flags: 0 or ZMQ_DONTWAIT).
 * The message is first checked by the receiver's rules (a message a peer
 * would drop is refused here). With ZMQ_DONTWAIT, "would block" fails before
 * anything is sent and m is unchanged (send again or close it). Otherwise
 * the message is spent (m->hdr = NULL): send it once, then pl_msg_close. */
int pl_msg_send(pl_msg *m, void *socket, int flags, sl_err *err);
/* Receives one multipart message and validates it; on failure every frame
 * of the message has been consumed, the error names the problem, and m is
 * left empty. On ROUTER sockets the caller reads the identity frame first. */
int pl_msg_recv(pl_msg *m, void *socket, const pl_wire_limits *lim, sl_err *err);
/* Validates frames already read (fuzzing, tests): frames[0] is the header.
 * The views point into the frames (which must outlive m) except for
 * payloads not aligned for their dtype, which are copied. lim NULL: the
 * defaults (also for pl_msg_recv). */
int pl_msg_decode(pl_msg *m, const void *const *frames, const size_t *sizes, int n,
                  const pl_wire_limits *lim, sl_err *err);
void pl_msg_close(pl_msg *m);

/* Typed views with shape checks: return the array, or NULL with err when the
 * payload is missing or its dtype/shape disagree (expected dim1 = 0 for 1-D).
 * The integer views check the rows only; a 2-D payload's width is
 * m->shape[kind][1]. Views are aligned for their type (misaligned frames
 * were copied on receipt) and non-NULL for present empty payloads. */
const int32_t *pl_msg_i32(const pl_msg *m, Sluice__PayloadKind kind, uint64_t rows, sl_err *err);
const uint64_t *pl_msg_u64(const pl_msg *m, Sluice__PayloadKind kind, uint64_t rows, sl_err *err);
const uint8_t *pl_msg_u8(const pl_msg *m, Sluice__PayloadKind kind, uint64_t rows, sl_err *err);
/* f32 [rows, cols] (bf16 payloads are converted into out, which must hold
 * rows*cols floats; f32 payloads are copied to out too, so the caller owns
 * the result). */
int pl_msg_f32(const pl_msg *m, Sluice__PayloadKind kind, uint64_t rows, uint64_t cols,
               float *out, sl_err *err);

/* "BATCH", "LOGITS", ...; "NONE" for 0 and "unknown" for other values. */
const char *pl_msg_kind_name(int kind);

#endif
