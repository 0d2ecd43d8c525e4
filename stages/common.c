/* What every stage kind shares: reading and checking a batch's rows,
 * answering a batch with an ERROR, passing control messages on. Every
 * kind calls these; they call no kind. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stages/stage.h"
#include "util/debug.h"

int sl_stage_error_msg(pl_msg *out, uint64_t batch_id, const uint64_t *requests, uint32_t n,
                       const char *origin, const char *text, sl_err *err)
{
    pl_msg_init(out, SLUICE__MSG_KIND__MSG_ERROR, batch_id, n);
    pl_msg_set_error(out, text, origin);
    if (n && pl_msg_add(out, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, n, 0,
                        requests, NULL, NULL, err)) {
        pl_msg_close(out);
        return -1;
    }
    return 0;
}

/* The ERROR names the batch's requests when they can be read. */
static int send_batch_error(sl_stage *s, pl_msg *in, const sl_emit *out, const char *text, sl_err *err)
{
    sl_err ignore;
    uint32_t n = in->hdr->n_rows;
    const uint64_t *req = pl_msg_u64(in, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, n, &ignore);
    pl_msg m;
    s->n_errors++;
    if (sl_stage_error_msg(&m, in->hdr->batch_id, req, req ? n : 0, s->name, text, err))
        return -1;
    return out->send(out->ctx, &m, err);
}

int sl_stage_fail_batch(sl_stage *s, pl_msg *in, const sl_emit *out, const char *text, sl_err *err)
{
    fprintf(stderr, "sluice: %s: batch %llu failed: %s\n", s->name, (unsigned long long)in->hdr->batch_id,
            text);
    return send_batch_error(s, in, out, text, err);
}

/* A batch continuing a sequence this stage holds nothing of is what a
 * restarted stage gets from before its restart (queued for its address while
 * it was down): the driver drops the answer and replays the request.
 * Expected, so logged once at debug level, not as a failure. */
int sl_stage_fail_stale(sl_stage *s, pl_msg *in, const sl_emit *out, int seq, int pos, sl_err *err)
{
    static bool stale_logged;
    char text[200];
    snprintf(text, sizeof text, "sequence %d continues at position %d, but this stage holds no cache for it "
             "(a batch sent before a restart?)", seq, pos);
    sl_debug_once(&stale_logged, "%s: batch %llu: %s", s->name, (unsigned long long)in->hdr->batch_id, text);
    return send_batch_error(s, in, out, text, err);
}

int sl_stage_check_limits(sl_stage *s, uint32_t n, const int32_t *seq, const int32_t *pos, sl_err *why)
{
    int rc = 0;
    if (n > (uint32_t)s->max_batch_tokens)
        rc = sl_fail(why, "refused: a batch of %u rows is past the limit max_batch_tokens (%d)", n,
                     s->max_batch_tokens);
    for (uint32_t i = 0; rc == 0 && seq && i < n; i++)
        if (seq[i] < 0 || seq[i] >= s->max_sequences)
            rc = sl_fail(why, "refused: row %u names slot %d, past the limit max_sequences (%d)", i, seq[i],
                         s->max_sequences);
    for (uint32_t i = 0; rc == 0 && pos && i < n; i++)
        if (pos[i] < 0 || pos[i] >= s->context)
            rc = sl_fail(why, "refused: row %u is at position %d, past the limit context (%d)", i, pos[i],
                         s->context);
    if (rc == 0)
        return 0;
    s->n_refused++;
    return 1;
}

int sl_stage_read_rows(sl_stage *s, const pl_msg *in, sl_batch_rows *r, sl_err *why)
{
    r->n = in->hdr->n_rows;
    r->req = pl_msg_u64(in, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, r->n, why);
    r->seq = r->req ? pl_msg_i32(in, SLUICE__PAYLOAD_KIND__PL_SEQ, r->n, why) : NULL;
    r->pos = r->seq ? pl_msg_i32(in, SLUICE__PAYLOAD_KIND__PL_POS, r->n, why) : NULL;
    r->flags = r->pos ? pl_msg_u8(in, SLUICE__PAYLOAD_KIND__PL_FLAGS, r->n, why) : NULL;
    if (!r->flags)
        return -1;
    return sl_stage_check_limits(s, r->n, r->seq, r->pos, why) ? -1 : 0;
}

/* Copies the small payloads a control message may carry (an ERROR's
 * request ids). */
int sl_stage_forward_control(pl_msg *in, const sl_emit *out, sl_err *err)
{
    pl_msg m;
    sl_err ignore;
    uint32_t n = in->hdr->n_rows;
    const uint64_t *req = n ? pl_msg_u64(in, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, n, &ignore) : NULL;
    pl_msg_init(&m, in->hdr->kind, in->hdr->batch_id, req ? n : 0);
    pl_msg_copy_extras(&m, in);
    if (req && pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, n, 0, req,
                          NULL, NULL, err)) {
        pl_msg_close(&m);
        return -1;
    }
    return out->send(out->ctx, &m, err);
}

/* The in-band control and error messages travel on; anything else (a kind
 * this stage never receives from its upstream) is dropped with a logged
 * error. */
int sl_stage_route_other(sl_stage *s, pl_msg *in, const sl_emit *out, sl_err *err)
{
    switch (in->hdr->kind) {
    case SLUICE__MSG_KIND__MSG_RELEASE:
    case SLUICE__MSG_KIND__MSG_TRUNCATE:
    case SLUICE__MSG_KIND__MSG_CANCEL:
    case SLUICE__MSG_KIND__MSG_ERROR:
        return sl_stage_forward_control(in, out, err);
    default:
        s->n_errors++;
        fprintf(stderr, "sluice: %s: dropped an unexpected %s message (batch %llu)\n", s->name,
                pl_msg_kind_name(in->hdr->kind), (unsigned long long)in->hdr->batch_id);
        return 0;
    }
}

int sl_stage_begin_batch(pl_msg *m, const pl_msg *in, const sl_batch_rows *r, sl_err *err)
{
    pl_msg_init(m, SLUICE__MSG_KIND__MSG_BATCH, in->hdr->batch_id, r->n);
    pl_msg_copy_extras(m, in);
    if (pl_msg_add(m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, r->n, 0, r->req, NULL, NULL, err) ||
        pl_msg_add(m, SLUICE__PAYLOAD_KIND__PL_SEQ, SLUICE__DTYPE__DT_I32, r->n, 0, r->seq, NULL, NULL, err) ||
        pl_msg_add(m, SLUICE__PAYLOAD_KIND__PL_POS, SLUICE__DTYPE__DT_I32, r->n, 0, r->pos, NULL, NULL, err) ||
        pl_msg_add(m, SLUICE__PAYLOAD_KIND__PL_FLAGS, SLUICE__DTYPE__DT_U8, r->n, 0, r->flags, NULL, NULL, err) ||
        pl_msg_pass(m, in, SLUICE__PAYLOAD_KIND__PL_DRAFT_TOKEN, err) ||
        pl_msg_pass(m, in, SLUICE__PAYLOAD_KIND__PL_DRAFT_PROBS, err) ||
        pl_msg_pass(m, in, SLUICE__PAYLOAD_KIND__PL_DRAFT_Q_COUNT, err) ||
        pl_msg_pass(m, in, SLUICE__PAYLOAD_KIND__PL_DRAFT_Q_ID, err)) {
        pl_msg_close(m);
        return -1;
    }
    return 0;
}

int sl_stage_send(sl_stage *s, uint32_t rows, pl_msg *m, const sl_emit *out, sl_err *err)
{
    s->n_batches++;
    s->n_rows += rows;
    return out->send(out->ctx, m, err);
}
