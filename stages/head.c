/* The head stage: final norm and lm_head on the rows whose output is
 * wanted; the logits go to the sample stage, which runs in the same
 * process. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"
#include "stages/kinds.h"
#include "stages/model_stage.h"

/* The rows a LOGITS message answers: the wanted rows of the batch. */
typedef struct head_rows {
    uint32_t n;
    uint64_t *req;
    int32_t *drafted;  /* their drafted tokens (NULL: the batch has none) */
    float *logits;     /* n rows of n_vocab */
    /* a pipeline with an mtp stage: the rows' slots, positions and
     * final-normed hidden states (what the lm_head reads) */
    int32_t *seq, *pos;
    float *hidden;
} head_rows;

static void head_rows_free(head_rows *h)
{
    free(h->req);
    free(h->drafted);
    free(h->logits);
    free(h->seq);
    free(h->pos);
    free(h->hidden);
}

/* Moves the wanted rows' activations to the front of x and takes their
 * request ids (and drafted tokens) into h. */
static int gather_wanted(const pl_msg *in, const sl_batch_rows *r, float *x, int d, head_rows *h, sl_err *why)
{
    memset(h, 0, sizeof *h);
    const int32_t *drafted = pl_msg_has(in, SLUICE__PAYLOAD_KIND__PL_DRAFT_TOKEN)
                                 ? pl_msg_i32(in, SLUICE__PAYLOAD_KIND__PL_DRAFT_TOKEN, r->n, why)
                                 : NULL;
    h->req = malloc((size_t)r->n * sizeof *h->req + 1);
    h->drafted = drafted ? malloc((size_t)r->n * sizeof *h->drafted) : NULL;
    if (!h->req || (drafted && !h->drafted))
        return sl_fail(why, "out of memory");
    for (uint32_t i = 0; i < r->n; i++)
        if (r->flags[i] & 1) {
            memmove(x + (size_t)h->n * d, x + (size_t)i * d, (size_t)d * sizeof(float));
            if (drafted)
                h->drafted[h->n] = drafted[i];
            h->req[h->n++] = r->req[i];
        }
    return 0;
}

/* The assistant drafter's inputs: each wanted row's slot, position and
 * hidden state after the final norm (x holds the wanted rows first). */
static int gather_hidden(const sl_model_stage *ms, const sl_batch_rows *r, const float *x, head_rows *h,
                         sl_err *why)
{
    const sl_config *c = &ms->model->cfg;
    h->seq = malloc((size_t)h->n * sizeof *h->seq + 1);
    h->pos = malloc((size_t)h->n * sizeof *h->pos + 1);
    h->hidden = malloc((size_t)h->n * (size_t)c->d_model * sizeof(float) + 1);
    if (!h->seq || !h->pos || !h->hidden)
        return sl_fail(why, "out of memory");
    for (uint32_t i = 0, j = 0; i < r->n; i++)
        if (r->flags[i] & 1) {
            h->seq[j] = r->seq[i];
            h->pos[j++] = r->pos[i];
        }
    for (uint32_t j = 0; j < h->n; j++)
        sl_rmsnorm(h->hidden + (size_t)j * c->d_model, x + (size_t)j * c->d_model, ms->model->output_norm,
                   c->d_model, c->norm_eps);
    return 0;
}

/* The assistant's payloads on the LOGITS message: hidden states, slots and
 * positions of its rows, and the K/V rows the layers stages sent. */
static int add_mtp_payloads(pl_msg *m, const pl_msg *in, head_rows *h, int d_model, sl_err *err)
{
    if (sl_model_stage_pass_mtp(m, in, err))
        return -1;
    if (!h->hidden || !h->n)
        return 0;
    if (pl_msg_add(m, SLUICE__PAYLOAD_KIND__PL_SEQ, SLUICE__DTYPE__DT_I32, h->n, 0, h->seq, NULL, NULL, err) ||
        pl_msg_add(m, SLUICE__PAYLOAD_KIND__PL_POS, SLUICE__DTYPE__DT_I32, h->n, 0, h->pos, NULL, NULL, err) ||
        pl_msg_add(m, SLUICE__PAYLOAD_KIND__PL_HIDDEN, SLUICE__DTYPE__DT_F32, h->n, (uint64_t)d_model,
                   h->hidden, sl_free_cb, NULL, err))
        return -1;
    h->hidden = NULL; /* the message's now */
    return 0;
}

static int compute_logits(sl_model_stage *ms, const float *x, head_rows *h, sl_err *why)
{
    if (!h->n)
        return 0;
    h->logits = malloc((size_t)h->n * (size_t)ms->model->cfg.n_vocab * sizeof(float));
    if (!h->logits || h->n > (uint32_t)ms->max_batch)
        return sl_fail(why, "cannot compute logits of %u rows", h->n);
    return sl_head(ms->fwd, x, (int)h->n, h->logits, why);
}

/* The LOGITS message of h's rows; the logits go with it (the other arrays
 * are copied when it is sent). */
static int build_logits(pl_msg *m, const pl_msg *in, head_rows *h, int n_vocab, int d_model, sl_err *err)
{
    pl_msg_init(m, SLUICE__MSG_KIND__MSG_LOGITS, in->hdr->batch_id, h->n);
    pl_msg_copy_extras(m, in);
    if (add_mtp_payloads(m, in, h, d_model, err))
        return -1;
    if (!h->n)
        return 0;
    if (pl_msg_add(m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, h->n, 0, h->req, NULL,
                   NULL, err) ||
        pl_msg_add(m, SLUICE__PAYLOAD_KIND__PL_LOGITS, SLUICE__DTYPE__DT_F32, h->n, (uint64_t)n_vocab,
                   h->logits, sl_free_cb, NULL, err))
        return -1;
    h->logits = NULL; /* the message's now */
    if (h->drafted &&
        (pl_msg_add(m, SLUICE__PAYLOAD_KIND__PL_DRAFT_TOKEN, SLUICE__DTYPE__DT_I32, h->n, 0, h->drafted,
                    NULL, NULL, err) ||
         pl_msg_pass(m, in, SLUICE__PAYLOAD_KIND__PL_DRAFT_PROBS, err) ||
         pl_msg_pass(m, in, SLUICE__PAYLOAD_KIND__PL_DRAFT_Q_COUNT, err) ||
         pl_msg_pass(m, in, SLUICE__PAYLOAD_KIND__PL_DRAFT_Q_ID, err)))
        return -1;
    return 0;
}

static int head_process(sl_stage *s, pl_msg *in, const sl_emit *out, sl_err *err)
{
    sl_model_stage *ms = s->impl;
    if (in->hdr->kind != SLUICE__MSG_KIND__MSG_BATCH)
        return sl_stage_route_other(s, in, out, err);
    sl_batch_rows r;
    sl_err why;
    if (sl_stage_read_rows(s, in, &r, &why))
        return sl_stage_fail_batch(s, in, out, why.msg, err);
    float *x = sl_model_stage_activations(in, r.n, ms->model->cfg.d_model, &why);
    if (!x)
        return sl_stage_fail_batch(s, in, out, why.msg, err);
    head_rows h;
    int rc = gather_wanted(in, &r, x, ms->model->cfg.d_model, &h, &why) ||
             (ms->mtp_feed && h.n && gather_hidden(ms, &r, x, &h, &why)) ||
             compute_logits(ms, x, &h, &why);
    free(x);
    if (rc) {
        head_rows_free(&h);
        return sl_stage_fail_batch(s, in, out, why.msg, err);
    }
    pl_msg m;
    if (build_logits(&m, in, &h, ms->model->cfg.n_vocab, ms->model->cfg.d_model, err)) {
        pl_msg_close(&m);
        head_rows_free(&h);
        return -1;
    }
    /* h's arrays are copied when the message is sent, so they live until then */
    rc = sl_stage_send(s, r.n, &m, out, err);
    head_rows_free(&h);
    return rc;
}

int sl_head_stage_new(sl_stage *s, const sl_stage_spec *spec, sl_err *err)
{
    s->process = head_process;
    sl_model_part part = {0, 0, false, true, false};
    if (sl_model_stage_open(s, spec, &part, true, err))
        return -1;
    ((sl_model_stage *)s->impl)->mtp_feed = spec->mtp_feed;
    return 0;
}
