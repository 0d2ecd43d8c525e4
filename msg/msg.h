/* The message model: a protobuf-c Header (proto/sluice.proto) and raw
 * little-endian payload frames described by it. This layer builds,
 * validates and views messages; it knows no transport (pipeline/wire.c
 * puts them on ZeroMQ): the frames of a received message belong to
 * whoever read them and are given back through a release callback.
 *
 * Every field is validated on receipt: version, kind, frame count against
 * the payload list, each frame's byte size against dtype x shape, shapes
 * against n_rows and the receiver's expectations, limits on frame and
 * message size. A message that fails is reported with an error naming what
 * is wrong; the caller decides whom to tell. The same checks run before a
 * message is sent, so a mistake shows up where it was made. */
#ifndef SLUICE_MSG_H
#define SLUICE_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/sluice.pb-c.h"
#include "util/err.h"
#include "util/mem.h" /* sl_free_cb: the free_fn for malloc'ed payloads */

#define PL_WIRE_VERSION 1
#define PL_MAX_FRAMES 16
/* Payload kinds are below this (the view arrays' length). */
#define PL_N_KINDS 26

/* Releases a payload's data once nothing reads it any more. */
typedef void (*pl_msg_free_fn)(void *data, void *hint);

/* A message being built or one received. Fields are read through the
 * functions below (and hdr, for a received message's header); only msg/
 * writes them. */
typedef struct pl_msg {
    Sluice__Header *hdr;       /* received: unpacked header (owned); building: see pl_msg_init */
    int n_frames;              /* payload frames */
    /* payload views, indexed by Sluice__PayloadKind (NULL when absent) */
    const void *data[PL_N_KINDS];
    size_t size[PL_N_KINDS];
    Sluice__DType dtype[PL_N_KINDS];
    uint64_t shape[PL_N_KINDS][2];
    /* storage */
    void *store;               /* received: release callback of its frames, aligned copies (owned, opaque) */
    Sluice__Header hdr_store;  /* building */
    Sluice__Payload pay_store[PL_MAX_FRAMES];
    Sluice__Payload *pay_ptrs[PL_MAX_FRAMES];
    uint64_t shape_store[PL_MAX_FRAMES][2];
    void (*free_fn[PL_MAX_FRAMES])(void *data, void *hint);
    void *free_hint[PL_MAX_FRAMES];
    bool received;
    bool hdr_lent;             /* received in the same thread (pl_msg_hand_over): hdr is the sender's */
    char peer[64];             /* received: the sender's address where the transport knows it
                                * (tcp: its IP), for messages naming a stranger; else "" */
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
/* Frame i of a message (0: the header) against the limits, total being the
 * size of frames 0..i; i past the last frame a message may have fails. For
 * a transport reading frames one by one. */
int pl_msg_check_frame(int i, size_t bytes, size_t total, const pl_wire_limits *lim, sl_err *err);

/* ---- building ---- */

/* Starts building a message of a kind with n_rows rows. */
void pl_msg_init(pl_msg *m, Sluice__MsgKind kind, uint64_t batch_id, uint32_t n_rows);
/* Adds a payload frame: data of dtype with shape [dim0] or [dim0, dim1]
 * (dim1 = 0 for 1-D). free_fn(data, hint) is called once the transport is
 * done with it (NULL: the data must outlive the send; it is copied if so).
 * On success the message owns data with a free_fn: it is freed exactly once,
 * by the transport after sending (possibly on ZeroMQ's I/O thread, or the
 * receiving thread for inproc) or by pl_msg_close when never sent. On
 * failure the caller keeps it. Each payload kind's dtype and rank are
 * checked here. */
int pl_msg_add(pl_msg *m, Sluice__PayloadKind kind, Sluice__DType dtype, uint64_t dim0,
               uint64_t dim1, const void *data, void (*free_fn)(void *, void *), void *hint,
               sl_err *err);
/* Adds src's payload of a kind to m by reference (src must outlive m's
 * send); nothing when src has none. */
int pl_msg_pass(pl_msg *m, const pl_msg *src, Sluice__PayloadKind kind, sl_err *err);

/* Header fields of a message being built. The strings and arrays are not
 * copied: they must outlive the send. */
/* origin NULL: none (left as pl_msg_init made it). */
void pl_msg_set_error(pl_msg *m, const char *text, const char *origin);
void pl_msg_set_text(pl_msg *m, const char *text);
void pl_msg_set_sent_ns(pl_msg *m, uint64_t sent_ns);
/* Raises the message's fence (never lowers it): the stage hosts drop every
 * MSG_BATCH whose id is at or below the highest fence they have seen. */
void pl_msg_raise_fence(pl_msg *m, uint64_t fence);
/* The pipeline run the message belongs to (Header.run_id): the stage hosts
 * and the driver drop a message of another run, or of none (0). */
void pl_msg_set_run_id(pl_msg *m, uint64_t run_id);
/* A slot message (RELEASE, TRUNCATE): its slots, requests and length. */
void pl_msg_set_slots(pl_msg *m, const int32_t *seqs, size_t n_seqs, const uint64_t *requests,
                      size_t n_requests, int32_t length);
void pl_msg_set_params(pl_msg *m, Sluice__ReqParams **params, size_t n_params);
void pl_msg_set_assign(pl_msg *m, Sluice__StageAssign **assign, size_t n_assign);
/* Passes a received message's header extras (sampling params, release
 * lists, error text, timing) on to one being built. */
void pl_msg_copy_extras(pl_msg *dst, const pl_msg *src);

/* ---- for a transport: a built message's frames ---- */

/* Checks a built message by the receiver's rules and fixes its payload list;
 * fails for a received or spent message. Call before the frames below. */
int pl_msg_seal(pl_msg *m, sl_err *err);
size_t pl_msg_header_size(const pl_msg *m);
void pl_msg_pack_header(const pl_msg *m, void *out);
/* Payload frame i (0-based, in the order added): its bytes, and its kind. */
const void *pl_msg_frame(const pl_msg *m, int i, size_t *bytes, int *kind);
/* Takes over the release of frame i's data: returns its free_fn (NULL when
 * the data is the caller's and must be copied), which the message then no
 * longer calls. */
pl_msg_free_fn pl_msg_take_frame(pl_msg *m, int i, void **hint);
/* Marks a built message as put on the wire: it cannot be sent again. */
void pl_msg_mark_sent(pl_msg *m);

/* ---- receiving ---- */

/* Validates frames already read: frames[0] is the header. The views point
 * into the frames (which must outlive m) except for payloads not aligned
 * for their dtype, which are copied. lim NULL: the defaults. On failure m
 * is left empty. */
int pl_msg_decode(pl_msg *m, const void *const *frames, const size_t *sizes, int n,
                  const pl_wire_limits *lim, sl_err *err);
/* The same, with m owning the frames: release(ctx) is called once when m is
 * closed, or before returning when decoding fails. */
int pl_msg_decode_owned(pl_msg *m, const void *const *frames, const size_t *sizes, int n,
                        const pl_wire_limits *lim, void (*release)(void *), void *ctx, sl_err *err);
void pl_msg_close(pl_msg *m);
/* A sealed message m handed to a stage of the same thread (a chain), as
 * pl_msg_decode would give its packed frames without packing its header
 * or copying anything: in's header and views are m's (m must stay open
 * until in is closed), and every check a received message gets is made
 * (the limits, the header's packed size among them; the payload list and
 * the kinds' rules). On failure in is left empty and m is untouched. */
int pl_msg_hand_over(pl_msg *in, const pl_msg *m, const pl_wire_limits *lim, sl_err *err);

/* ---- typed views ---- */

/* Whether the message carries a payload of a kind. */
bool pl_msg_has(const pl_msg *m, Sluice__PayloadKind kind);
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
/* An f32 [rows, cols] payload in place, or NULL with err (any other dtype
 * or shape). */
const float *pl_msg_f32_view(const pl_msg *m, Sluice__PayloadKind kind, uint64_t rows, uint64_t cols,
                             sl_err *err);

/* "BATCH", "LOGITS", ...; "NONE" for 0 and "unknown" for other values. */
const char *pl_msg_kind_name(int kind);
/* "REQUEST_ID", "SEQ", ...; "unknown" for values the format lacks. */
const char *pl_msg_payload_name(int kind);

#endif
