/* The message model (see msg.h): a protobuf-c header frame followed by raw
 * little-endian payload frames. The same checks run on both sides: the
 * sender refuses to put a message on the wire that a receiver would drop, so
 * a mistake shows up where it was made. */
#include "msg/msg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/types.h"

/* Payload frames are sent as the host lays them out; the format says
 * little-endian, so a big-endian host would need byte swaps here. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the wire format assumes a little-endian host");

#define N_VIEWS PL_N_KINDS /* length of the view arrays in pl_msg, indexed by payload kind */
#define MAX_FRAMES_TOTAL (1 + PL_MAX_FRAMES)

/* What pl_msg.store points to for a received or decoded message: who
 * releases the frames the views point into, and aligned copies of frames
 * whose data could not be read in place. */
typedef struct msg_store {
    void (*release)(void *ctx);
    void *ctx;
    void *copies[PL_MAX_FRAMES];
} msg_store;

/* Views of empty payloads point here, so "present" never reads as NULL. */
static const uint64_t empty_payload;

/* ---- names and per-kind rules ---- */

const char *pl_msg_kind_name(int kind)
{
    switch (kind) {
    case SLUICE__MSG_KIND__MSG_NONE: return "NONE";
    case SLUICE__MSG_KIND__MSG_BATCH: return "BATCH";
    case SLUICE__MSG_KIND__MSG_LOGITS: return "LOGITS";
    case SLUICE__MSG_KIND__MSG_TOKENS: return "TOKENS";
    case SLUICE__MSG_KIND__MSG_ERROR: return "ERROR";
    case SLUICE__MSG_KIND__MSG_RELEASE: return "RELEASE";
    case SLUICE__MSG_KIND__MSG_TRUNCATE: return "TRUNCATE";
    case SLUICE__MSG_KIND__MSG_CANCEL: return "CANCEL";
    case SLUICE__MSG_KIND__MSG_HEARTBEAT: return "HEARTBEAT";
    case SLUICE__MSG_KIND__MSG_ASSIGN: return "ASSIGN";
    case SLUICE__MSG_KIND__MSG_READY: return "READY";
    case SLUICE__MSG_KIND__MSG_SHUTDOWN: return "SHUTDOWN";
    case SLUICE__MSG_KIND__MSG_STATUS: return "STATUS";
    default: return "unknown";
    }
}

static bool known_msg_kind(int kind)
{
    return kind != SLUICE__MSG_KIND__MSG_NONE && strcmp(pl_msg_kind_name(kind), "unknown") != 0;
}

const char *pl_msg_payload_name(int kind)
{
    static const char *const names[] = {"NONE", "REQUEST_ID", "SEQ", "POS", "TOKEN", "FLAGS",
                                        "ACTIVATION", "LOGITS", "TOPK_ID", "TOPK_VAL", "DRAFT_TOKEN",
                                        "DRAFT_PROBS", "SPEC", "PLE", "TOKEN_P",
                                        [SLUICE__PAYLOAD_KIND__PL_HIDDEN] = "HIDDEN",
                                        [SLUICE__PAYLOAD_KIND__PL_MTP_KV] = "MTP_KV",
                                        [SLUICE__PAYLOAD_KIND__PL_MTP_ROW] = "MTP_ROW",
                                        [SLUICE__PAYLOAD_KIND__PL_NEXT_DRAFT] = "NEXT_DRAFT",
                                        [SLUICE__PAYLOAD_KIND__PL_DRAFT_Q_COUNT] = "DRAFT_Q_COUNT",
                                        [SLUICE__PAYLOAD_KIND__PL_DRAFT_Q_ID] = "DRAFT_Q_ID"};
    bool known = kind >= 0 && kind < (int)(sizeof names / sizeof names[0]) && names[kind];
    return known ? names[kind] : "unknown";
}

static const char *dtype_name(int dtype)
{
    static const char *const names[] = {"none", "f32", "bf16", "i32", "u64", "u8"};
    return dtype >= 0 && dtype < (int)(sizeof names / sizeof names[0]) ? names[dtype] : "unknown";
}

/* Element bytes of a dtype; 0 for unknown ones. Also the alignment a typed
 * view of it needs. */
static size_t dtype_bytes(int dtype)
{
    switch (dtype) {
    case SLUICE__DTYPE__DT_F32: return 4;
    case SLUICE__DTYPE__DT_BF16: return 2;
    case SLUICE__DTYPE__DT_I32: return 4;
    case SLUICE__DTYPE__DT_U64: return 8;
    case SLUICE__DTYPE__DT_U8: return 1;
    default: return 0;
    }
}

/* ROWS_ANY: rows of the batch a message answers, not of the message (at
 * most max_rows, checked with the limits) */
enum row_rule { ROWS_EQUAL, ROWS_AT_MOST, ROWS_ANY };

/* The layout each payload kind must have (proto/sluice.proto). */
typedef struct payload_rule {
    int dtype, alt_dtype; /* alt_dtype 0: only one allowed */
    int dims;
    enum row_rule rows;
} payload_rule;

static const payload_rule *rule_of(int kind)
{
    static const payload_rule rules[] = {
        [SLUICE__PAYLOAD_KIND__PL_REQUEST_ID] = {SLUICE__DTYPE__DT_U64, 0, 1, ROWS_EQUAL},
        [SLUICE__PAYLOAD_KIND__PL_SEQ] = {SLUICE__DTYPE__DT_I32, 0, 1, ROWS_EQUAL},
        [SLUICE__PAYLOAD_KIND__PL_POS] = {SLUICE__DTYPE__DT_I32, 0, 1, ROWS_EQUAL},
        [SLUICE__PAYLOAD_KIND__PL_TOKEN] = {SLUICE__DTYPE__DT_I32, 0, 1, ROWS_EQUAL},
        [SLUICE__PAYLOAD_KIND__PL_FLAGS] = {SLUICE__DTYPE__DT_U8, 0, 1, ROWS_EQUAL},
        [SLUICE__PAYLOAD_KIND__PL_ACTIVATION] = {SLUICE__DTYPE__DT_F32, SLUICE__DTYPE__DT_BF16, 2, ROWS_EQUAL},
        /* the head answers only the rows whose output is wanted */
        [SLUICE__PAYLOAD_KIND__PL_LOGITS] = {SLUICE__DTYPE__DT_F32, 0, 2, ROWS_AT_MOST},
        [SLUICE__PAYLOAD_KIND__PL_TOPK_ID] = {SLUICE__DTYPE__DT_I32, 0, 2, ROWS_AT_MOST},
        [SLUICE__PAYLOAD_KIND__PL_TOPK_VAL] = {SLUICE__DTYPE__DT_F32, 0, 2, ROWS_AT_MOST},
        [SLUICE__PAYLOAD_KIND__PL_DRAFT_TOKEN] = {SLUICE__DTYPE__DT_I32, 0, 1, ROWS_EQUAL},
        /* only the drafted rows have a draft distribution */
        [SLUICE__PAYLOAD_KIND__PL_DRAFT_PROBS] = {SLUICE__DTYPE__DT_F32, 0, 1, ROWS_ANY},
        [SLUICE__PAYLOAD_KIND__PL_DRAFT_Q_COUNT] = {SLUICE__DTYPE__DT_I32, 0, 1, ROWS_AT_MOST},
        /* entries of the drafts' supports: as many as the frame limits allow */
        [SLUICE__PAYLOAD_KIND__PL_DRAFT_Q_ID] = {SLUICE__DTYPE__DT_I32, 0, 1, ROWS_ANY},
        [SLUICE__PAYLOAD_KIND__PL_SPEC] = {SLUICE__DTYPE__DT_I32, 0, 1, ROWS_EQUAL},
        [SLUICE__PAYLOAD_KIND__PL_PLE] = {SLUICE__DTYPE__DT_F32, 0, 2, ROWS_EQUAL},
        [SLUICE__PAYLOAD_KIND__PL_TOKEN_P] = {SLUICE__DTYPE__DT_F32, 0, 1, ROWS_EQUAL},
        [SLUICE__PAYLOAD_KIND__PL_HIDDEN] = {SLUICE__DTYPE__DT_F32, 0, 2, ROWS_EQUAL},
        [SLUICE__PAYLOAD_KIND__PL_MTP_KV] = {SLUICE__DTYPE__DT_F32, 0, 2, ROWS_ANY},
        [SLUICE__PAYLOAD_KIND__PL_MTP_ROW] = {SLUICE__DTYPE__DT_I32, 0, 2, ROWS_ANY},
        [SLUICE__PAYLOAD_KIND__PL_NEXT_DRAFT] = {SLUICE__DTYPE__DT_I32, 0, 2, ROWS_EQUAL},
    };
    _Static_assert(sizeof rules / sizeof rules[0] <= N_VIEWS, "a payload kind past the view arrays");
    if (kind <= 0 || kind >= (int)(sizeof rules / sizeof rules[0]) || rules[kind].dims == 0)
        return NULL;
    return &rules[kind];
}

static int check_dtype_and_dims(int index, int kind, int dtype, size_t dims, sl_err *err)
{
    const payload_rule *r = rule_of(kind);
    if (!r)
        return sl_fail(err, "payload %d has unknown kind %d", index, kind);
    if (dtype_bytes(dtype) == 0)
        return sl_fail(err, "payload %d (%s) has unknown dtype %d", index, pl_msg_payload_name(kind), dtype);
    if (dtype != r->dtype && dtype != r->alt_dtype)
        return sl_fail(err, "payload %d (%s) has dtype %s, expected %s%s%s", index, pl_msg_payload_name(kind),
                       dtype_name(dtype), dtype_name(r->dtype), r->alt_dtype ? " or " : "",
                       r->alt_dtype ? dtype_name(r->alt_dtype) : "");
    if (dims != (size_t)r->dims)
        return sl_fail(err, "payload %d (%s) has a %zu-D shape, expected %d-D", index, pl_msg_payload_name(kind),
                       dims, r->dims);
    return 0;
}

/* Bytes of dtype x shape, or -1 when that does not fit a size_t. */
static int payload_bytes(int dtype, const uint64_t *shape, size_t dims, size_t *out)
{
    size_t bytes = dtype_bytes(dtype);
    for (size_t d = 0; d < dims; d++) {
        if (shape[d] > SIZE_MAX || sl_mul_size(bytes, (size_t)shape[d], &bytes))
            return -1;
    }
    *out = bytes;
    return 0;
}

/* ---- checks shared by sender and receiver ---- */

static void shape_text(const uint64_t *shape, size_t dims, char *out, size_t cap)
{
    if (dims > 1)
        snprintf(out, cap, "[%llu, %llu]", (unsigned long long)shape[0], (unsigned long long)shape[1]);
    else
        snprintf(out, cap, "[%llu]", (unsigned long long)shape[0]);
}

static int check_payload(const Sluice__Header *h, size_t index, size_t frame_bytes, sl_err *err)
{
    const Sluice__Payload *p = h->payloads[index];
    int i = (int)index;
    if (!p)
        return sl_fail(err, "payload %d has no descriptor", i);
    if (check_dtype_and_dims(i, p->kind, p->dtype, p->n_shape, err))
        return -1;
    const char *name = pl_msg_payload_name(p->kind);
    const payload_rule *r = rule_of(p->kind);
    if (r->dims == 2 && p->shape[1] == 0)
        return sl_fail(err, "payload %d (%s) has an empty second dimension", i, name);
    if (r->rows == ROWS_EQUAL && p->shape[0] != h->n_rows)
        return sl_fail(err, "payload %d (%s) has %llu rows, but n_rows is %u", i, name,
                       (unsigned long long)p->shape[0], h->n_rows);
    if (r->rows == ROWS_AT_MOST && p->shape[0] > h->n_rows)
        return sl_fail(err, "payload %d (%s) has %llu rows, more than n_rows %u", i, name,
                       (unsigned long long)p->shape[0], h->n_rows);
    size_t need;
    if (payload_bytes(p->dtype, p->shape, p->n_shape, &need)) {
        char dims[48];
        shape_text(p->shape, p->n_shape, dims, sizeof dims);
        return sl_fail(err, "payload %d (%s): %s x %s overflows a size", i, name, dtype_name(p->dtype), dims);
    }
    if (need != frame_bytes) {
        char dims[48];
        shape_text(p->shape, p->n_shape, dims, sizeof dims);
        return sl_fail(err, "payload %d (%s): frame size mismatch: the frame holds %zu bytes, %s x %s needs %zu",
                       i, name, frame_bytes, dtype_name(p->dtype), dims, need);
    }
    return 0;
}

/* Fills at[kind] with the index of the payload of that kind (-1: absent). */
static int check_payload_list(const Sluice__Header *h, const size_t *frame_bytes, int n_frames,
                              int at[N_VIEWS], sl_err *err)
{
    if (h->n_payloads != (size_t)n_frames)
        return sl_fail(err, "frame count mismatch: the header lists %zu payloads but %d payload frames follow",
                       h->n_payloads, n_frames);
    for (int k = 0; k < N_VIEWS; k++)
        at[k] = -1;
    for (int i = 0; i < n_frames; i++) {
        if (check_payload(h, (size_t)i, frame_bytes[i], err))
            return -1;
        int kind = h->payloads[i]->kind;
        if (at[kind] >= 0)
            return sl_fail(err, "payload %d repeats payload kind %s (first at payload %d)", i,
                           pl_msg_payload_name(kind), at[kind]);
        at[kind] = i;
    }
    return 0;
}

static int require_payload(const int at[N_VIEWS], int kind, sl_err *err)
{
    if (at[kind] < 0)
        return sl_fail(err, "missing required payload %s", pl_msg_payload_name(kind));
    return 0;
}

static int check_batch(const int at[N_VIEWS], sl_err *err)
{
    if (require_payload(at, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, err) ||
        require_payload(at, SLUICE__PAYLOAD_KIND__PL_SEQ, err) ||
        require_payload(at, SLUICE__PAYLOAD_KIND__PL_POS, err) ||
        require_payload(at, SLUICE__PAYLOAD_KIND__PL_FLAGS, err))
        return -1;
    if (at[SLUICE__PAYLOAD_KIND__PL_TOKEN] < 0 && at[SLUICE__PAYLOAD_KIND__PL_ACTIVATION] < 0)
        return sl_fail(err, "missing required payload TOKEN or ACTIVATION");
    return 0;
}

/* A LOGITS message with rows carries full logits or a top-k pair of equal
 * shapes; with no wanted rows it may be empty (the batch still answers). */
static int check_logits(const Sluice__Header *h, const int at[N_VIEWS], sl_err *err)
{
    int id = at[SLUICE__PAYLOAD_KIND__PL_TOPK_ID], val = at[SLUICE__PAYLOAD_KIND__PL_TOPK_VAL];
    if ((id < 0) != (val < 0))
        return sl_fail(err, "missing required payload %s (top-k ids and values travel together)",
                       id < 0 ? "TOPK_ID" : "TOPK_VAL");
    if (id >= 0 && memcmp(h->payloads[id]->shape, h->payloads[val]->shape, 2 * sizeof(uint64_t)) != 0)
        return sl_fail(err, "TOPK_ID and TOPK_VAL shapes differ");
    if (h->n_rows == 0)
        return 0;
    if (require_payload(at, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, err))
        return -1;
    if (at[SLUICE__PAYLOAD_KIND__PL_LOGITS] < 0 && id < 0)
        return sl_fail(err, "missing required payload LOGITS or TOPK_ID and TOPK_VAL");
    return 0;
}

/* The draft distributions' three payloads: probabilities and counts travel
 * together, ids only with them (their contents: msg/draftq.h). */
static int check_draft_q(const int at[N_VIEWS], sl_err *err)
{
    bool probs = at[SLUICE__PAYLOAD_KIND__PL_DRAFT_PROBS] >= 0;
    bool counts = at[SLUICE__PAYLOAD_KIND__PL_DRAFT_Q_COUNT] >= 0;
    if (probs != counts)
        return sl_fail(err, "missing required payload %s (draft probabilities and their counts travel together)",
                       probs ? "DRAFT_Q_COUNT" : "DRAFT_PROBS");
    if (at[SLUICE__PAYLOAD_KIND__PL_DRAFT_Q_ID] >= 0 && !probs)
        return sl_fail(err, "payload DRAFT_Q_ID without DRAFT_PROBS and DRAFT_Q_COUNT");
    return 0;
}

static int check_kind_rules(const Sluice__Header *h, const int at[N_VIEWS], sl_err *err)
{
    if (check_draft_q(at, err))
        return -1;
    switch (h->kind) {
    case SLUICE__MSG_KIND__MSG_BATCH:
        return check_batch(at, err);
    case SLUICE__MSG_KIND__MSG_LOGITS:
        return check_logits(h, at, err);
    case SLUICE__MSG_KIND__MSG_TOKENS:
        /* a batch without wanted rows is answered by an empty TOKENS */
        if (h->n_rows == 0)
            return 0;
        if (require_payload(at, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, err) ||
            require_payload(at, SLUICE__PAYLOAD_KIND__PL_TOKEN, err))
            return -1;
        return 0;
    case SLUICE__MSG_KIND__MSG_ERROR:
        if (!h->error || !h->error[0])
            return sl_fail(err, "the error string is empty");
        return 0;
    case SLUICE__MSG_KIND__MSG_TRUNCATE:
        if (h->length < 0)
            return sl_fail(err, "length %d is negative", h->length);
        /* fall through */
    case SLUICE__MSG_KIND__MSG_RELEASE:
        if (h->n_seqs == 0)
            return sl_fail(err, "no seqs listed");
        return 0;
    default:
        return 0;
    }
}

/* The assistant drafter's K/V rows: a row (slot, position) for each, both
 * or neither present, within the row limit like a batch's rows. */
static int check_mtp_rows(const Sluice__Header *h, const int at[N_VIEWS], uint32_t max_rows, sl_err *err)
{
    int kv = at[SLUICE__PAYLOAD_KIND__PL_MTP_KV], row = at[SLUICE__PAYLOAD_KIND__PL_MTP_ROW];
    if (kv < 0 && row < 0)
        return 0;
    if (kv < 0 || row < 0)
        return sl_fail(err, "payload %s without %s", kv < 0 ? "MTP_ROW" : "MTP_KV",
                       kv < 0 ? "MTP_KV" : "MTP_ROW");
    const uint64_t *ks = h->payloads[kv]->shape, *rs = h->payloads[row]->shape;
    if (ks[0] != rs[0] || rs[1] != 2)
        return sl_fail(err, "MTP_KV has %llu rows, MTP_ROW is [%llu, %llu] (expected [%llu, 2])",
                       (unsigned long long)ks[0], (unsigned long long)rs[0],
                       (unsigned long long)rs[1], (unsigned long long)ks[0]);
    if (ks[0] > max_rows)
        return sl_fail(err, "MTP_KV has %llu rows, which exceeds the limit max_rows (%u)", (unsigned long long)ks[0],
                       max_rows);
    return 0;
}

/* Everything a receiver checks once the header is unpacked; frame_bytes
 * holds the sizes of the payload frames. */
static int check_message(const Sluice__Header *h, const size_t *frame_bytes, int n_frames, uint32_t max_rows,
                         sl_err *err)
{
    if (h->version != PL_WIRE_VERSION)
        return sl_fail(err, "wire: wrong version %u in the header (expected %d)", h->version, PL_WIRE_VERSION);
    if (!known_msg_kind(h->kind))
        return sl_fail(err, "wire: unknown message kind %d", (int)h->kind);
    int at[N_VIEWS];
    int rc = 0;
    if (h->n_rows > max_rows)
        rc = sl_fail(err, "n_rows %u exceeds the limit max_rows (%u)", h->n_rows, max_rows);
    else if (check_payload_list(h, frame_bytes, n_frames, at, err) || check_kind_rules(h, at, err) ||
             check_mtp_rows(h, at, max_rows, err))
        rc = -1;
    if (rc)
        return sl_wrap(err, "wire: %s message (batch %llu)", pl_msg_kind_name(h->kind),
                       (unsigned long long)h->batch_id);
    return 0;
}

void pl_wire_limits_default(pl_wire_limits *l)
{
    l->max_header_bytes = 64u << 10;
    l->max_frame_bytes = 256u << 20;
    l->max_message_bytes = 512u << 20;
    l->max_rows = 65536;
}

bool pl_wire_err_is_limit(const sl_err *err)
{
    /* the texts of pl_msg_check_frame and check_message's row limit */
    return strstr(err->msg, "exceeds max_") || strstr(err->msg, "exceeds the limit max_rows") ||
           strstr(err->msg, "more than 17 frames");
}

static const pl_wire_limits *limits_or_default(const pl_wire_limits *lim, pl_wire_limits *def)
{
    if (lim)
        return lim;
    pl_wire_limits_default(def);
    return def;
}

/* Frame i of a message (0: the header) against the limits; total is the
 * size of frames 0..i. */
int pl_msg_check_frame(int i, size_t bytes, size_t total, const pl_wire_limits *lim, sl_err *err)
{
    if (i >= MAX_FRAMES_TOTAL)
        return sl_fail(err, "wire: message has more than %d frames (limit: a header and PL_MAX_FRAMES = %d payloads)",
                       MAX_FRAMES_TOTAL, PL_MAX_FRAMES);
    if (i == 0 && bytes > lim->max_header_bytes)
        return sl_fail(err, "wire: header frame of %zu bytes exceeds max_header_bytes (%zu)", bytes,
                       lim->max_header_bytes);
    if (i > 0 && bytes > lim->max_frame_bytes)
        return sl_fail(err, "wire: payload frame %d of %zu bytes exceeds max_frame_bytes (%zu)", i - 1, bytes,
                       lim->max_frame_bytes);
    if (total > lim->max_message_bytes)
        return sl_fail(err, "wire: message of at least %zu bytes exceeds max_message_bytes (%zu)", total,
                       lim->max_message_bytes);
    return 0;
}

/* ---- building and sending ---- */

void pl_msg_init(pl_msg *m, Sluice__MsgKind kind, uint64_t batch_id, uint32_t n_rows)
{
    memset(m, 0, sizeof *m);
    sluice__header__init(&m->hdr_store);
    m->hdr_store.version = PL_WIRE_VERSION;
    m->hdr_store.kind = kind;
    m->hdr_store.batch_id = batch_id;
    m->hdr_store.n_rows = n_rows;
    m->hdr = &m->hdr_store;
}

int pl_msg_add(pl_msg *m, Sluice__PayloadKind kind, Sluice__DType dtype, uint64_t dim0, uint64_t dim1,
               const void *data, void (*free_fn)(void *, void *), void *hint, sl_err *err)
{
    if (m->received || !m->hdr)
        return sl_fail(err, "wire: cannot add a payload to a message that was received or already sent");
    if (m->n_frames >= PL_MAX_FRAMES)
        return sl_fail(err, "wire: cannot add payload %s: a message holds at most %d payloads",
                       pl_msg_payload_name(kind), PL_MAX_FRAMES);
    size_t dims = dim1 ? 2 : 1;
    if (check_dtype_and_dims(m->n_frames, kind, dtype, dims, err))
        return sl_wrap(err, "wire: cannot add to a %s message", pl_msg_kind_name(m->hdr_store.kind));
    if (m->dtype[kind] != SLUICE__DTYPE__DT_NONE)
        return sl_fail(err, "wire: payload %s added twice", pl_msg_payload_name(kind));
    uint64_t *shape = m->shape_store[m->n_frames];
    shape[0] = dim0;
    shape[1] = dim1;
    size_t bytes;
    if (payload_bytes(dtype, shape, dims, &bytes))
        return sl_fail(err, "wire: payload %s of shape [%llu, %llu] overflows a size", pl_msg_payload_name(kind),
                       (unsigned long long)dim0, (unsigned long long)dim1);
    if (!data && bytes)
        return sl_fail(err, "wire: payload %s has %zu bytes but no data", pl_msg_payload_name(kind), bytes);
    int i = m->n_frames++;
    Sluice__Payload *p = &m->pay_store[i];
    sluice__payload__init(p);
    p->kind = kind;
    p->dtype = dtype;
    p->n_shape = dims;
    p->shape = shape;
    m->pay_ptrs[i] = p;
    m->data[kind] = data;
    m->size[kind] = bytes;
    m->dtype[kind] = dtype;
    m->shape[kind][0] = dim0;
    m->shape[kind][1] = dim1;
    m->free_fn[i] = free_fn;
    m->free_hint[i] = hint;
    return 0;
}

int pl_msg_pass(pl_msg *m, const pl_msg *src, Sluice__PayloadKind kind, sl_err *err)
{
    if (!pl_msg_has(src, kind))
        return 0;
    return pl_msg_add(m, kind, src->dtype[kind], src->shape[kind][0], src->shape[kind][1], src->data[kind],
                      NULL, NULL, err);
}

/* ---- header fields ---- */

void pl_msg_set_error(pl_msg *m, const char *text, const char *origin)
{
    m->hdr_store.error = (char *)text;
    if (origin)
        m->hdr_store.origin = (char *)origin;
}

void pl_msg_set_text(pl_msg *m, const char *text)
{
    m->hdr_store.text = (char *)text;
}

void pl_msg_set_sent_ns(pl_msg *m, uint64_t sent_ns)
{
    m->hdr_store.sent_ns = sent_ns;
}

void pl_msg_set_run_id(pl_msg *m, uint64_t run_id)
{
    if (m->hdr && !m->received)
        m->hdr->run_id = run_id;
}

void pl_msg_raise_fence(pl_msg *m, uint64_t fence)
{
    if (m->hdr && m->hdr->fence < fence)
        m->hdr->fence = fence;
}

void pl_msg_set_slots(pl_msg *m, const int32_t *seqs, size_t n_seqs, const uint64_t *requests,
                      size_t n_requests, int32_t length)
{
    m->hdr_store.n_seqs = n_seqs;
    m->hdr_store.seqs = (int32_t *)seqs;
    m->hdr_store.n_requests = n_requests;
    m->hdr_store.requests = (uint64_t *)requests;
    m->hdr_store.length = length;
}

void pl_msg_set_params(pl_msg *m, Sluice__ReqParams **params, size_t n_params)
{
    m->hdr_store.n_params = n_params;
    m->hdr_store.params = params;
}

void pl_msg_set_assign(pl_msg *m, Sluice__StageAssign **assign, size_t n_assign)
{
    m->hdr_store.n_assign = n_assign;
    m->hdr_store.assign = assign;
}

void pl_msg_copy_extras(pl_msg *dst, const pl_msg *src)
{
    dst->hdr_store.n_params = src->hdr->n_params;
    dst->hdr_store.params = src->hdr->params;
    dst->hdr_store.n_seqs = src->hdr->n_seqs;
    dst->hdr_store.seqs = src->hdr->seqs;
    dst->hdr_store.n_requests = src->hdr->n_requests;
    dst->hdr_store.requests = src->hdr->requests;
    dst->hdr_store.length = src->hdr->length;
    dst->hdr_store.sent_ns = src->hdr->sent_ns;
    dst->hdr_store.error = src->hdr->error;
    dst->hdr_store.origin = src->hdr->origin;
}

/* ---- a built message's frames, for a transport ---- */

int pl_msg_seal(pl_msg *m, sl_err *err)
{
    if (m->received || !m->hdr)
        return sl_fail(err, "wire: only a message built with pl_msg_init can be sent, once");
    Sluice__Header *h = &m->hdr_store;
    h->n_payloads = (size_t)m->n_frames;
    h->payloads = m->n_frames ? m->pay_ptrs : NULL;
    size_t frame_bytes[PL_MAX_FRAMES];
    for (int i = 0; i < m->n_frames; i++)
        frame_bytes[i] = m->size[m->pay_store[i].kind];
    if (check_message(h, frame_bytes, m->n_frames, UINT32_MAX, err))
        return sl_wrap(err, "refusing to send");
    return 0;
}

size_t pl_msg_header_size(const pl_msg *m)
{
    return sluice__header__get_packed_size(&m->hdr_store);
}

void pl_msg_pack_header(const pl_msg *m, void *out)
{
    sluice__header__pack(&m->hdr_store, out);
}

const void *pl_msg_frame(const pl_msg *m, int i, size_t *bytes, int *kind)
{
    int k = m->pay_store[i].kind;
    if (kind)
        *kind = k;
    *bytes = m->size[k];
    return m->data[k];
}

pl_msg_free_fn pl_msg_take_frame(pl_msg *m, int i, void **hint)
{
    pl_msg_free_fn fn = m->free_fn[i];
    *hint = m->free_hint[i];
    m->free_fn[i] = NULL;
    return fn;
}

void pl_msg_mark_sent(pl_msg *m)
{
    m->hdr = NULL;
}

/* ---- receiving and decoding ---- */

static void store_free(msg_store *st)
{
    if (!st)
        return;
    if (st->release)
        st->release(st->ctx);
    for (int i = 0; i < PL_MAX_FRAMES; i++)
        free(st->copies[i]);
    free(st);
}

/* A view of frame data usable as its dtype: the frame itself when aligned
 * (frames need not be: tcp frames can sit at any offset of a receive
 * buffer), else an aligned copy kept in the store. */
static const void *aligned_view(msg_store *st, int i, const void *frame, size_t bytes, int dtype, sl_err *err)
{
    if (bytes == 0)
        return &empty_payload;
    if ((uintptr_t)frame % dtype_bytes(dtype) == 0)
        return frame;
    st->copies[i] = malloc(bytes); /* malloc aligns for every dtype */
    if (!st->copies[i]) {
        sl_fail(err, "wire: out of memory copying misaligned payload %d (%zu bytes)", i, bytes);
        return NULL;
    }
    memcpy(st->copies[i], frame, bytes);
    return st->copies[i];
}

static int fill_views(pl_msg *m, msg_store *st, const void *const *frames, const size_t *sizes, sl_err *err)
{
    const Sluice__Header *h = m->hdr;
    for (int i = 0; i < m->n_frames; i++) {
        const Sluice__Payload *p = h->payloads[i];
        int kind = p->kind;
        m->data[kind] = aligned_view(st, i, frames[i + 1], sizes[i + 1], p->dtype, err);
        if (!m->data[kind])
            return -1;
        m->size[kind] = sizes[i + 1];
        m->dtype[kind] = p->dtype;
        m->shape[kind][0] = p->shape[0];
        m->shape[kind][1] = p->n_shape > 1 ? p->shape[1] : 0;
    }
    return 0;
}

/* Decodes frames into m, which takes ownership of st. On failure m is
 * closed and left empty. */
static int decode_into(pl_msg *m, msg_store *st, const void *const *frames, const size_t *sizes, int n,
                       const pl_wire_limits *lim, sl_err *err)
{
    memset(m, 0, sizeof *m);
    m->received = true;
    m->store = st;
    int rc = 0;
    size_t total = 0;
    if (n < 1)
        rc = sl_fail(err, "wire: empty message (no header frame)");
    for (int i = 0; rc == 0 && i < n; i++)
        rc = sl_add_size(total, sizes[i], &total) ? sl_fail(err, "wire: message size overflows")
                                                  : pl_msg_check_frame(i, sizes[i], total, lim, err);
    if (rc == 0 && sizes[0] == 0)
        rc = sl_fail(err, "wire: empty header frame");
    if (rc == 0) {
        m->hdr = sluice__header__unpack(NULL, sizes[0], frames[0]);
        if (!m->hdr)
            rc = sl_fail(err, "wire: header frame of %zu bytes is not a valid sluice.Header protobuf", sizes[0]);
    }
    if (rc == 0)
        rc = check_message(m->hdr, sizes + 1, n - 1, lim->max_rows, err);
    if (rc == 0) {
        m->n_frames = n - 1;
        rc = fill_views(m, st, frames, sizes, err);
    }
    if (rc)
        pl_msg_close(m);
    return rc;
}

int pl_msg_decode_owned(pl_msg *m, const void *const *frames, const size_t *sizes, int n,
                        const pl_wire_limits *lim, void (*release)(void *), void *ctx, sl_err *err)
{
    pl_wire_limits def;
    lim = limits_or_default(lim, &def);
    msg_store *st = calloc(1, sizeof *st);
    if (!st) {
        memset(m, 0, sizeof *m);
        if (release)
            release(ctx);
        return sl_fail(err, "wire: out of memory");
    }
    st->release = release;
    st->ctx = ctx;
    return decode_into(m, st, frames, sizes, n, lim, err);
}

int pl_msg_decode(pl_msg *m, const void *const *frames, const size_t *sizes, int n, const pl_wire_limits *lim,
                  sl_err *err)
{
    return pl_msg_decode_owned(m, frames, sizes, n, lim, NULL, NULL, err);
}

int pl_msg_hand_over(pl_msg *in, const pl_msg *m, const pl_wire_limits *lim, sl_err *err)
{
    memset(in, 0, sizeof *in);
    if (m->received || !m->hdr || m->hdr->payloads != (m->n_frames ? m->pay_ptrs : NULL) ||
        m->hdr->n_payloads != (size_t)m->n_frames)
        return sl_fail(err, "wire: only a sealed message can be handed over");
    pl_wire_limits def;
    lim = limits_or_default(lim, &def);
    const void *frames[MAX_FRAMES_TOTAL] = {NULL};
    size_t sizes[MAX_FRAMES_TOTAL], total = 0;
    sizes[0] = pl_msg_header_size(m);
    if (sizes[0] == 0)
        return sl_fail(err, "wire: empty header frame");
    for (int i = 0; i < m->n_frames; i++)
        frames[i + 1] = pl_msg_frame(m, i, &sizes[i + 1], NULL);
    for (int i = 0; i <= m->n_frames; i++)
        if (sl_add_size(total, sizes[i], &total))
            return sl_fail(err, "wire: message size overflows");
        else if (pl_msg_check_frame(i, sizes[i], total, lim, err))
            return -1;
    if (check_message(m->hdr, sizes + 1, m->n_frames, lim->max_rows, err))
        return -1;
    msg_store *st = calloc(1, sizeof *st); /* for copies of misaligned payloads */
    if (!st)
        return sl_fail(err, "wire: out of memory");
    in->received = true;
    in->hdr_lent = true;
    in->store = st;
    in->hdr = m->hdr;
    in->n_frames = m->n_frames;
    if (fill_views(in, st, frames, sizes, err)) {
        pl_msg_close(in);
        return -1;
    }
    return 0;
}

void pl_msg_close(pl_msg *m)
{
    if (m->received) {
        if (m->hdr && !m->hdr_lent)
            sluice__header__free_unpacked(m->hdr, NULL);
        store_free(m->store);
    } else {
        /* payloads never handed to a transport are still ours to release */
        for (int i = 0; i < m->n_frames; i++)
            if (m->free_fn[i])
                m->free_fn[i]((void *)m->data[m->pay_store[i].kind], m->free_hint[i]);
    }
    memset(m, 0, sizeof *m);
}

/* ---- typed views ---- */

bool pl_msg_has(const pl_msg *m, Sluice__PayloadKind kind)
{
    return kind > 0 && kind < N_VIEWS && m->dtype[kind] != SLUICE__DTYPE__DT_NONE;
}

static int view_check(const pl_msg *m, int kind, uint64_t rows, sl_err *err)
{
    const char *what = m->hdr ? pl_msg_kind_name(m->hdr->kind) : "spent";
    unsigned long long batch = m->hdr ? (unsigned long long)m->hdr->batch_id : 0;
    if (kind <= 0 || kind >= N_VIEWS || m->dtype[kind] == SLUICE__DTYPE__DT_NONE)
        return sl_fail(err, "wire: %s message (batch %llu) has no %s payload", what, batch, pl_msg_payload_name(kind));
    if (m->shape[kind][0] != rows)
        return sl_fail(err, "wire: %s message (batch %llu): %s payload has %llu rows, expected %llu", what, batch,
                       pl_msg_payload_name(kind), (unsigned long long)m->shape[kind][0], (unsigned long long)rows);
    return 0;
}

static const void *typed_view(const pl_msg *m, int kind, int dtype, uint64_t rows, sl_err *err)
{
    if (view_check(m, kind, rows, err))
        return NULL;
    if ((int)m->dtype[kind] != dtype) {
        sl_fail(err, "wire: %s payload is %s, expected %s", pl_msg_payload_name(kind), dtype_name(m->dtype[kind]),
                dtype_name(dtype));
        return NULL;
    }
    return m->size[kind] ? m->data[kind] : &empty_payload;
}

const int32_t *pl_msg_i32(const pl_msg *m, Sluice__PayloadKind kind, uint64_t rows, sl_err *err)
{
    return typed_view(m, kind, SLUICE__DTYPE__DT_I32, rows, err);
}

const uint64_t *pl_msg_u64(const pl_msg *m, Sluice__PayloadKind kind, uint64_t rows, sl_err *err)
{
    return typed_view(m, kind, SLUICE__DTYPE__DT_U64, rows, err);
}

const uint8_t *pl_msg_u8(const pl_msg *m, Sluice__PayloadKind kind, uint64_t rows, sl_err *err)
{
    return typed_view(m, kind, SLUICE__DTYPE__DT_U8, rows, err);
}

int pl_msg_f32(const pl_msg *m, Sluice__PayloadKind kind, uint64_t rows, uint64_t cols, float *out, sl_err *err)
{
    if (view_check(m, kind, rows, err))
        return -1;
    if (m->shape[kind][1] != cols)
        return sl_fail(err, "wire: %s payload has %llu columns, expected %llu", pl_msg_payload_name(kind),
                       (unsigned long long)m->shape[kind][1], (unsigned long long)cols);
    int dtype = m->dtype[kind];
    size_t n = m->size[kind] / (dtype_bytes(dtype) ? dtype_bytes(dtype) : 1);
    if (dtype == SLUICE__DTYPE__DT_F32) {
        if (n)
            memcpy(out, m->data[kind], n * sizeof(float));
        return 0;
    }
    if (dtype != SLUICE__DTYPE__DT_BF16)
        return sl_fail(err, "wire: %s payload is %s, expected f32 or bf16", pl_msg_payload_name(kind), dtype_name(dtype));
    const sl_bf16 *src = m->data[kind];
    for (size_t i = 0; i < n; i++)
        out[i] = sl_bf16_to_f32(src[i]);
    return 0;
}

const float *pl_msg_f32_view(const pl_msg *m, Sluice__PayloadKind kind, uint64_t rows, uint64_t cols,
                             sl_err *err)
{
    const float *v = typed_view(m, kind, SLUICE__DTYPE__DT_F32, rows, err);
    if (v && m->shape[kind][1] != cols) {
        sl_fail(err, "wire: %s payload has %llu columns, expected %llu", pl_msg_payload_name(kind),
                (unsigned long long)m->shape[kind][1], (unsigned long long)cols);
        return NULL;
    }
    return v;
}
