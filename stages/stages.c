/* The stage kinds: embed, layers, head, sample (tokenize runs in the driver
 * and is a pass-through here). */
#include "stages/stage.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/forward.h"
#include "model/kv.h"
#include "model/model.h"
#include "stages/sampler.h"
#include "stages/reqtab.h"
#include "stages/spec.h"
#include "util/debug.h"

/* ---- shared helpers ---- */

int sl_stage_error_msg(pl_msg *out, uint64_t batch_id, const uint64_t *requests, uint32_t n,
                       const char *origin, const char *text, sl_err *err)
{
    pl_msg_init(out, SLUICE__MSG_KIND__MSG_ERROR, batch_id, n);
    out->hdr_store.error = (char *)text;
    out->hdr_store.origin = (char *)origin;
    if (n && pl_msg_add(out, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, n, 0,
                        requests, NULL, NULL, err)) {
        pl_msg_close(out);
        return -1;
    }
    return 0;
}

/* Answers a batch with an ERROR naming its requests (when they can be read). */
int sl_stage_fail_batch(sl_stage *s, pl_msg *in, const sl_emit *out, const char *text, sl_err *err)
{
    sl_err ignore;
    uint32_t n = in->hdr->n_rows;
    const uint64_t *req = pl_msg_u64(in, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, n, &ignore);
    pl_msg m;
    s->n_errors++;
    /* A batch continuing a sequence this stage holds nothing of (expected
     * position 0) is what a restarted stage gets from before its restart:
     * the driver drops the answer and replays the request. Expected, so
     * logged once at debug level; any other failure is an error. */
    static bool stale_logged;
    if (strstr(text, ", expected 0"))
        sl_debug_once(&stale_logged, "%s: batch %llu continues a sequence this stage has no cache for (sent "
                      "before a restart?): %s", s->name, (unsigned long long)in->hdr->batch_id, text);
    else
        fprintf(stderr, "sluice: %s: batch %llu failed: %s\n", s->name, (unsigned long long)in->hdr->batch_id,
                text);
    if (sl_stage_error_msg(&m, in->hdr->batch_id, req, req ? n : 0, s->name, text, err))
        return -1;
    return out->send(out->ctx, &m, err);
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

static int fail_batch(sl_stage *s, pl_msg *in, const sl_emit *out, const char *text, sl_err *err)
{
    return sl_stage_fail_batch(s, in, out, text, err);
}

/* Passes a message's header extras (sampling params, release lists) on. */
void sl_stage_copy_extras(pl_msg *dst, const pl_msg *src)
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

/* Re-sends a control or error message unchanged (copies its small
 * payloads: an ERROR's request ids). */
static int forward_control(pl_msg *in, const sl_emit *out, sl_err *err)
{
    pl_msg m;
    sl_err ignore;
    uint32_t n = in->hdr->n_rows;
    pl_msg_init(&m, in->hdr->kind, in->hdr->batch_id, n);
    sl_stage_copy_extras(&m, in);
    const uint64_t *req = n ? pl_msg_u64(in, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, n, &ignore) : NULL;
    if (req && pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, n, 0, req,
                          NULL, NULL, err)) {
        pl_msg_close(&m);
        return -1;
    }
    if (n && !req)
        m.hdr_store.n_rows = 0;
    return out->send(out->ctx, &m, err);
}

/* Messages a stage does not transform: the in-band control and error
 * messages travel on; anything else (a kind this stage never receives from
 * its upstream) is dropped with a logged error. */
int sl_stage_route_other(sl_stage *s, pl_msg *in, const sl_emit *out, sl_err *err)
{
    switch (in->hdr->kind) {
    case SLUICE__MSG_KIND__MSG_RELEASE:
    case SLUICE__MSG_KIND__MSG_TRUNCATE:
    case SLUICE__MSG_KIND__MSG_CANCEL:
    case SLUICE__MSG_KIND__MSG_ERROR:
        return forward_control(in, out, err);
    default:
        s->n_errors++;
        fprintf(stderr, "sluice: %s: dropped an unexpected %s message (batch %llu)\n", s->name,
                pl_msg_kind_name(in->hdr->kind), (unsigned long long)in->hdr->batch_id);
        return 0;
    }
}

static int route_other(sl_stage *s, pl_msg *in, const sl_emit *out, sl_err *err)
{
    return sl_stage_route_other(s, in, out, err);
}

static void free_buffer(void *data, void *hint)
{
    (void)hint;
    free(data);
}

/* The row arrays every BATCH carries, checked. */
typedef struct batch_rows {
    uint32_t n;
    const uint64_t *req;
    const int32_t *seq, *pos;
    const uint8_t *flags;
} batch_rows;

/* Reads the rows and refuses a batch past the stage's limits. */
static int read_rows(sl_stage *s, const pl_msg *in, batch_rows *r, sl_err *err)
{
    r->n = in->hdr->n_rows;
    r->req = pl_msg_u64(in, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, r->n, err);
    r->seq = r->req ? pl_msg_i32(in, SLUICE__PAYLOAD_KIND__PL_SEQ, r->n, err) : NULL;
    r->pos = r->seq ? pl_msg_i32(in, SLUICE__PAYLOAD_KIND__PL_POS, r->n, err) : NULL;
    r->flags = r->pos ? pl_msg_u8(in, SLUICE__PAYLOAD_KIND__PL_FLAGS, r->n, err) : NULL;
    if (!r->flags)
        return -1;
    return sl_stage_check_limits(s, r->n, r->seq, r->pos, err) ? -1 : 0;
}

/* Speculative rows travel on unchanged: which rows hold drafted tokens,
 * and the draft's distributions for them (checked where they are used, in
 * the sample stage). */
static int pass_draft(pl_msg *m, const pl_msg *in, sl_err *err)
{
    static const int kinds[] = {SLUICE__PAYLOAD_KIND__PL_DRAFT_TOKEN,
                                SLUICE__PAYLOAD_KIND__PL_DRAFT_PROBS};
    for (int i = 0; i < 2; i++) {
        int k = kinds[i];
        if (in->data[k] &&
            pl_msg_add(m, (Sluice__PayloadKind)k, in->dtype[k], in->shape[k][0],
                       k == SLUICE__PAYLOAD_KIND__PL_DRAFT_PROBS ? in->shape[k][1] : 0,
                       in->data[k], NULL, NULL, err))
            return -1;
    }
    return 0;
}

/* Starts the outgoing BATCH with the same rows. */
static int begin_batch(pl_msg *m, const pl_msg *in, const batch_rows *r, sl_err *err)
{
    pl_msg_init(m, SLUICE__MSG_KIND__MSG_BATCH, in->hdr->batch_id, r->n);
    sl_stage_copy_extras(m, in);
    if (pl_msg_add(m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, r->n, 0, r->req, NULL, NULL, err) ||
        pl_msg_add(m, SLUICE__PAYLOAD_KIND__PL_SEQ, SLUICE__DTYPE__DT_I32, r->n, 0, r->seq, NULL, NULL, err) ||
        pl_msg_add(m, SLUICE__PAYLOAD_KIND__PL_POS, SLUICE__DTYPE__DT_I32, r->n, 0, r->pos, NULL, NULL, err) ||
        pl_msg_add(m, SLUICE__PAYLOAD_KIND__PL_FLAGS, SLUICE__DTYPE__DT_U8, r->n, 0, r->flags, NULL, NULL, err) ||
        pass_draft(m, in, err)) {
        pl_msg_close(m);
        return -1;
    }
    return 0;
}

/* Per-layer inputs travelling down (limits.ple: embed): cols floats a row,
 * layer-major (proto/sluice.proto's PL_PLE); owned with free when own. */
typedef struct ple_rows {
    float *data;
    uint64_t cols;
    bool own;
} ple_rows;

/* Sends the batch on with the stage's new activations x (taken over), when
 * tok is not NULL the batch's token ids (models with per-layer embeddings:
 * each layer stage computes its layers' inputs from them), and when
 * ple->cols > 0 the per-layer inputs of the layers ahead. */
static int emit_activations(sl_stage *s, const pl_msg *in, const batch_rows *r, float *x,
                            int d_model, const int32_t *tok, const ple_rows *ple,
                            const sl_emit *out, sl_err *err)
{
    pl_msg m;
    bool send_ple = ple && ple->cols > 0;
    if (begin_batch(&m, in, r, err)) {
        free(x);
        if (ple && ple->own)
            free(ple->data);
        return -1;
    }
    if (send_ple && pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_PLE, SLUICE__DTYPE__DT_F32, r->n,
                               ple->cols, ple->data, ple->own ? free_buffer : NULL, NULL, err)) {
        free(x);
        if (ple->own)
            free(ple->data);
        pl_msg_close(&m);
        return -1;
    }
    if ((tok && pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_TOKEN, SLUICE__DTYPE__DT_I32, r->n, 0, tok,
                           NULL, NULL, err)) ||
        pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_ACTIVATION, SLUICE__DTYPE__DT_F32, r->n,
                   (uint64_t)d_model, x, free_buffer, NULL, err)) {
        free(x);
        pl_msg_close(&m);
        return -1;
    }
    s->n_batches++;
    s->n_rows += r->n;
    return out->send(out->ctx, &m, err);
}

/* ---- model-backed stages ---- */

typedef struct model_stage {
    sl_model *model;
    sl_fwd *fwd;
    sl_kv *kv;
    int max_batch;
    float *ple_proj;   /* embed stage gathering every layer's per-layer inputs: scratch */
    /* batches whose per-layer inputs this stage gathered, or took from upstream */
    uint64_t ple_gathered, ple_received;
} model_stage;

static void model_stage_free(model_stage *ms)
{
    if (!ms)
        return;
    sl_kv_free(ms->kv);
    sl_fwd_free(ms->fwd);
    free(ms->ple_proj);
    sl_model_free(ms->model);
    free(ms);
}

static void destroy_model_stage(sl_stage *s)
{
    model_stage_free(s->impl);
    free(s);
}

/* Applies RELEASE/TRUNCATE to the stage's KV cache, then passes it on. */
static int kv_control(sl_stage *s, model_stage *ms, pl_msg *in, const sl_emit *out, sl_err *err)
{
    if (ms->kv) {
        for (size_t i = 0; i < in->hdr->n_seqs; i++) {
            int32_t seq = in->hdr->seqs[i];
            if (seq < 0 || seq >= sl_kv_max_seqs(ms->kv)) {
                fprintf(stderr, "sluice: %s: %s names slot %d outside [0, %d); ignored\n", s->name,
                        pl_msg_kind_name(in->hdr->kind), seq, sl_kv_max_seqs(ms->kv));
                continue;
            }
            if (in->hdr->kind == SLUICE__MSG_KIND__MSG_RELEASE)
                sl_kv_clear(ms->kv, seq);
            else
                sl_kv_truncate(ms->kv, seq, in->hdr->length);
        }
    }
    return forward_control(in, out, err);
}

static int embed_process(sl_stage *s, pl_msg *in, const sl_emit *out, sl_err *err)
{
    model_stage *ms = s->impl;
    if (in->hdr->kind != SLUICE__MSG_KIND__MSG_BATCH)
        return route_other(s, in, out, err);
    batch_rows r;
    sl_err why;
    if (read_rows(s, in, &r, &why))
        return fail_batch(s, in, out, why.msg, err);
    const int32_t *tok = pl_msg_i32(in, SLUICE__PAYLOAD_KIND__PL_TOKEN, r.n, &why);
    if (!tok)
        return fail_batch(s, in, out, why.msg, err);
    int d = ms->model->cfg.d_model;
    float *x = malloc((size_t)r.n * (size_t)d * sizeof(float) + 1);
    if (!x)
        return fail_batch(s, in, out, "out of memory", err);
    if (sl_embed(ms->model, tok, (int)r.n, x, &why)) {
        free(x);
        return fail_batch(s, in, out, why.msg, err);
    }
    const sl_config *c = &ms->model->cfg;
    if (c->n_embd_per_layer == 0)
        return emit_activations(s, in, &r, x, d, NULL, NULL, out, err);
    if (!ms->ple_proj) /* the layers stages gather their own slices */
        return emit_activations(s, in, &r, x, d, tok, NULL, out, err);
    if (r.n > (uint32_t)ms->max_batch) {
        free(x);
        snprintf(why.msg, sizeof why.msg, "batch of %u rows exceeds the stage's limit of %d",
                 r.n, ms->max_batch);
        return fail_batch(s, in, out, why.msg, err);
    }
    int64_t pl = c->n_embd_per_layer;
    ple_rows ple = {malloc((size_t)r.n * (size_t)c->n_layer * (size_t)pl * sizeof(float) + 1),
                    (uint64_t)c->n_layer * (uint64_t)pl, true};
    if (!ple.data || sl_ple_inputs(ms->model, tok, x, (int)r.n, ms->ple_proj, ple.data, pl,
                                   (int64_t)r.n * pl, NULL, &why)) {
        free(x);
        free(ple.data);
        return fail_batch(s, in, out, ple.data ? why.msg : "out of memory", err);
    }
    ms->ple_gathered++;
    return emit_activations(s, in, &r, x, d, NULL, &ple, out, err);
}

/* The per-layer inputs a batch carries for the stage's layers (limits.ple:
 * embed), checked: NULL with *why empty when it carries none. */
static const float *read_ple(const model_stage *ms, const pl_msg *in, uint32_t n, sl_err *why)
{
    const sl_model *m = ms->model;
    const int k = SLUICE__PAYLOAD_KIND__PL_PLE;
    why->msg[0] = 0;
    if (!in->data[k])
        return NULL;
    uint64_t want = (uint64_t)(m->cfg.n_layer - m->part.l0) * (uint64_t)m->cfg.n_embd_per_layer;
    if (in->dtype[k] != SLUICE__DTYPE__DT_F32 || in->shape[k][0] != n || in->shape[k][1] != want) {
        snprintf(why->msg, sizeof why->msg, "per-layer inputs are not f32 [%u, %llu] (layers "
                 "%d to %d of %d floats each)", n, (unsigned long long)want, m->part.l0,
                 m->cfg.n_layer, m->cfg.n_embd_per_layer);
        return NULL;
    }
    return in->data[k];
}

/* Reads the activations of a batch into a fresh buffer. */
static float *take_activations(const pl_msg *in, uint32_t n, int d, sl_err *why)
{
    float *x = malloc((size_t)n * (size_t)d * sizeof(float) + 1);
    if (!x) {
        sl_fail(why, "out of memory");
        return NULL;
    }
    if (pl_msg_f32(in, SLUICE__PAYLOAD_KIND__PL_ACTIVATION, n, (uint64_t)d, x, why)) {
        free(x);
        return NULL;
    }
    return x;
}

/* Positions are authoritative. A batch that starts a slot's rows before the
 * end of its cache rewrites what follows: a replay from position 0 after a
 * failure whose RELEASE was lost with a dead peer, or drafts whose TRUNCATE
 * was. The cache is cut there first, when that is safe: back to 0, or by at
 * most a batch (sliding-window rings keep that much slack behind their
 * window). Anything else stays an error of the forward pass. */
static void rewind_slots(sl_kv *kv, const batch_rows *r)
{
    for (uint32_t i = 0; i < r->n; i++) {
        int s = r->seq[i], p = r->pos[i];
        if ((i > 0 && r->seq[i - 1] == s) || s < 0 || s >= sl_kv_max_seqs(kv) || p < 0)
            continue;
        int len = sl_kv_len(kv, s);
        if (p == 0 && len > 0)
            sl_kv_clear(kv, s);
        else if (p < len && len - p <= sl_kv_max_batch(kv))
            sl_kv_truncate(kv, s, p);
    }
}

static int layers_process(sl_stage *s, pl_msg *in, const sl_emit *out, sl_err *err)
{
    model_stage *ms = s->impl;
    int kind = in->hdr->kind;
    if (kind == SLUICE__MSG_KIND__MSG_RELEASE || kind == SLUICE__MSG_KIND__MSG_TRUNCATE)
        return kv_control(s, ms, in, out, err);
    if (kind != SLUICE__MSG_KIND__MSG_BATCH)
        return route_other(s, in, out, err);
    batch_rows r;
    sl_err why;
    if (read_rows(s, in, &r, &why))
        return fail_batch(s, in, out, why.msg, err);
    const sl_config *c = &ms->model->cfg;
    int d = c->d_model;
    int64_t pl = c->n_embd_per_layer;
    const int32_t *tok = NULL;
    const float *ple = pl > 0 ? read_ple(ms, in, r.n, &why) : NULL;
    if (pl > 0 && !ple && why.msg[0])
        return fail_batch(s, in, out, why.msg, err);
    if (pl > 0 && !ple && !(tok = pl_msg_i32(in, SLUICE__PAYLOAD_KIND__PL_TOKEN, r.n, &why)))
        return fail_batch(s, in, out, why.msg, err);
    float *x = take_activations(in, r.n, d, &why);
    if (!x)
        return fail_batch(s, in, out, why.msg, err);
    sl_batch b = {.n_tokens = (int)r.n, .token = tok, .seq = r.seq, .pos = r.pos, .ple = ple,
                  .ple_stride = pl, .ple_layer_stride = (int64_t)r.n * pl};
    rewind_slots(ms->kv, &r);
    if (sl_forward_layers(ms->fwd, ms->kv, &b, x, &why)) {
        free(x);
        return fail_batch(s, in, out, why.msg, err);
    }
    if (pl > 0 && ple)
        ms->ple_received++;
    else if (pl > 0)
        ms->ple_gathered++;
    /* the slices of the layers ahead follow ours: passed on as they are */
    int part_layers = ms->model->part.l1 - ms->model->part.l0;
    ple_rows rest = {ple ? (float *)ple + (size_t)part_layers * r.n * (size_t)pl : NULL,
                     ple ? (uint64_t)(c->n_layer - ms->model->part.l1) * (uint64_t)pl : 0, false};
    return emit_activations(s, in, &r, x, d, tok, &rest, out, err);
}

/* Final norm and lm_head on the rows whose output is wanted; the logits go
 * to the sample stage, which runs in the same process. */
static int head_process(sl_stage *s, pl_msg *in, const sl_emit *out, sl_err *err)
{
    model_stage *ms = s->impl;
    if (in->hdr->kind != SLUICE__MSG_KIND__MSG_BATCH)
        return route_other(s, in, out, err);
    batch_rows r;
    sl_err why;
    if (read_rows(s, in, &r, &why))
        return fail_batch(s, in, out, why.msg, err);
    const sl_config *c = &ms->model->cfg;
    int d = c->d_model;
    float *x = take_activations(in, r.n, d, &why);
    if (!x)
        return fail_batch(s, in, out, why.msg, err);
    uint32_t m_rows = 0;
    uint64_t *req = malloc((size_t)r.n * sizeof *req + 1);
    if (!req) {
        free(x);
        return fail_batch(s, in, out, "out of memory", err);
    }
    const int32_t *drafted = in->data[SLUICE__PAYLOAD_KIND__PL_DRAFT_TOKEN]
                                 ? pl_msg_i32(in, SLUICE__PAYLOAD_KIND__PL_DRAFT_TOKEN, r.n, &why)
                                 : NULL;
    int32_t *out_drafted = drafted ? malloc((size_t)r.n * sizeof *out_drafted) : NULL;
    if (drafted && !out_drafted) {
        free(x);
        free(req);
        return fail_batch(s, in, out, "out of memory", err);
    }
    for (uint32_t i = 0; i < r.n; i++)
        if (r.flags[i] & 1) {
            memmove(x + (size_t)m_rows * d, x + (size_t)i * d, (size_t)d * sizeof(float));
            if (drafted)
                out_drafted[m_rows] = drafted[i];
            req[m_rows++] = r.req[i];
        }
    float *logits = NULL;
    if (m_rows) {
        logits = malloc((size_t)m_rows * (size_t)c->n_vocab * sizeof(float));
        if (!logits || m_rows > (uint32_t)ms->max_batch ||
            sl_head(ms->fwd, x, (int)m_rows, logits, &why)) {
            if (!logits || m_rows > (uint32_t)ms->max_batch)
                snprintf(why.msg, sizeof why.msg, "cannot compute logits of %u rows", m_rows);
            free(x);
            free(req);
            free(logits);
            free(out_drafted);
            return fail_batch(s, in, out, why.msg, err);
        }
    }
    free(x);
    pl_msg m;
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_LOGITS, in->hdr->batch_id, m_rows);
    sl_stage_copy_extras(&m, in);
    int rc = 0;
    if (m_rows &&
        (pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, m_rows, 0, req,
                    NULL, NULL, err) ||
         pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_LOGITS, SLUICE__DTYPE__DT_F32, m_rows,
                    (uint64_t)c->n_vocab, logits, free_buffer, NULL, err) ||
         (out_drafted && pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_DRAFT_TOKEN, SLUICE__DTYPE__DT_I32,
                                    m_rows, 0, out_drafted, NULL, NULL, err)))) {
        pl_msg_close(&m);
        rc = -1;
    }
    const int probs = SLUICE__PAYLOAD_KIND__PL_DRAFT_PROBS;
    if (rc == 0 && m_rows && out_drafted && in->data[probs] &&
        pl_msg_add(&m, (Sluice__PayloadKind)probs, in->dtype[probs], in->shape[probs][0],
                   in->shape[probs][1], in->data[probs], NULL, NULL, err)) {
        pl_msg_close(&m);
        rc = -1;
    }
    if (rc) {
        free(req);
        free(out_drafted);
        return -1;
    }
    s->n_batches++;
    s->n_rows += r.n;
    /* req is copied when the message is sent, so it lives until then. */
    rc = out->send(out->ctx, &m, err);
    free(req);
    free(out_drafted);
    return rc;
}

/* Where a Gemma 4 stage's per-layer inputs came from, for --stats. */
static void describe_ple(const sl_stage *s, char *buf, size_t size)
{
    const model_stage *ms = s->impl;
    if (ms->model->cfg.n_embd_per_layer == 0)
        buf[0] = '\0';
    else if (s->kind == PL_STAGE_EMBED)
        snprintf(buf, size, "per-layer inputs: %s (%llu batches)",
                 ms->ple_proj ? "gathered here for every layer" : "left to the layers stages",
                 (unsigned long long)ms->ple_gathered);
    else
        snprintf(buf, size, "per-layer inputs: gathered here %llu batches, from upstream %llu",
                 (unsigned long long)ms->ple_gathered, (unsigned long long)ms->ple_received);
}

static int model_stage_new(sl_stage *s, const sl_stage_spec *spec, sl_err *err)
{
    model_stage *ms = calloc(1, sizeof *ms);
    if (!ms)
        return sl_fail(err, "out of memory");
    s->impl = ms;
    s->destroy = destroy_model_stage;
    if (spec->kind != PL_STAGE_HEAD)
        s->describe = describe_ple;
    ms->max_batch = spec->max_batch_tokens;
    sl_model_part part = {0, 0, false, false, false};
    if (spec->kind == PL_STAGE_EMBED) {
        part.embed = true;
        part.ple = spec->ple_at_embed;
    }
    else if (spec->kind == PL_STAGE_HEAD)
        part.head = true;
    else {
        part.l0 = spec->l0;
        part.l1 = spec->l1;
    }
    if (sl_model_load(&ms->model, spec->model, &part, err))
        return -1;
    if (spec->kind == PL_STAGE_LAYERS &&
        sl_kv_new_typed(&ms->kv, &ms->model->cfg, spec->l0, spec->l1, spec->max_sequences,
                        spec->context, (sl_type)spec->kv_type, spec->max_batch_tokens, err))
        return -1;
    if (spec->kind != PL_STAGE_EMBED && sl_fwd_new(&ms->fwd, ms->model, spec->max_batch_tokens, err))
        return -1;
    const sl_config *c = &ms->model->cfg;
    if (spec->kind == PL_STAGE_EMBED && spec->ple_at_embed && c->n_embd_per_layer > 0) {
        size_t floats = (size_t)spec->max_batch_tokens * (size_t)c->n_layer * (size_t)c->n_embd_per_layer;
        if (!(ms->ple_proj = malloc(floats * sizeof(float))))
            return sl_fail(err, "out of memory for the per-layer inputs of %d tokens",
                           spec->max_batch_tokens);
    }
    return 0;
}

/* ---- sample ---- */

typedef struct req_state {
    sl_reqtab_key key;    /* first: the table's */
    sl_sampler *sampler;
    sl_rng spec_rng;      /* speculative sampling's acceptance draws */
    int32_t *recent;      /* ring of the last repeat_last_n tokens, oldest first when unrolled */
    int n_recent, cap_recent;
} req_state;

typedef struct sample_stage {
    int n_vocab;
    sl_reqtab states;     /* req_state by request id */
    int32_t *recent_buf;  /* unrolled history for the sampler */
    float *row;           /* one row of logits, modified by the sampler */
    int32_t *tokens;      /* output rows */
    uint64_t *reqs;
    int32_t *spec;        /* output rows: drafted tokens their step verified */
    /* speculative sampling scratch, made on first use: k+1 target and k
     * draft distributions, and per-vocabulary work rows */
    float *p_rows, *q_rows, *resid, *probs;
    int32_t *ids;
} sample_stage;

static req_state *find_state(sample_stage *ss, uint64_t id, bool create)
{
    return sl_reqtab_find(&ss->states, id, create, NULL);
}

static void free_state(void *entry)
{
    req_state *st = entry;
    sl_sampler_free(st->sampler);
    free(st->recent);
}

static void push_recent(req_state *st, int32_t tok)
{
    if (st->cap_recent == 0)
        return;
    if (st->n_recent == st->cap_recent) {
        memmove(st->recent, st->recent + 1, (size_t)(st->cap_recent - 1) * sizeof *st->recent);
        st->n_recent--;
    }
    st->recent[st->n_recent++] = tok;
}

static int add_params(sample_stage *ss, const Sluice__ReqParams *p, sl_err *err)
{
    req_state *st = find_state(ss, p->request_id, true);
    if (!st)
        return sl_fail(err, "too many requests in flight (%d)", ss->states.cap);
    if (st->sampler)
        return 0; /* already known (params repeat on each prefill chunk) */
    sl_sampling sp;
    sl_sampling_defaults(&sp);
    sp.temperature = p->temperature;
    sp.top_k = p->top_k;
    sp.top_p = p->top_p > 0.0f ? p->top_p : 1.0f;
    sp.min_p = p->min_p;
    sp.repeat_penalty = p->repeat_penalty > 0.0f ? p->repeat_penalty : 1.0f;
    sp.repeat_last_n = p->repeat_last_n > 0 ? p->repeat_last_n : 0;
    sp.seed = p->seed;
    st->sampler = sl_sampler_new(&sp, ss->n_vocab);
    sl_rng_seed(&st->spec_rng, sp.seed ^ 0x9E3779B97F4A7C15ull);
    st->cap_recent = sp.repeat_last_n;
    st->recent = st->cap_recent ? malloc((size_t)st->cap_recent * sizeof *st->recent) : NULL;
    if (!st->sampler || (st->cap_recent && !st->recent))
        return sl_fail(err, "out of memory");
    for (size_t i = 0; i < p->n_recent; i++)
        push_recent(st, p->recent[i]);
    return 0;
}

/* The speculative payloads of a LOGITS message, checked: which rows hold
 * drafted tokens, and the draft's distributions (NULL: one-hot). */
typedef struct spec_view {
    const int32_t *drafted;  /* per row: drafted token or -1; NULL: no speculation */
    const float *q;          /* n_q rows of n_vocab */
    uint32_t n_q;
} spec_view;

static int read_spec_view(const sample_stage *ss, const pl_msg *in, uint32_t n, spec_view *sv,
                          sl_err *why)
{
    memset(sv, 0, sizeof *sv);
    if (!n || !in->data[SLUICE__PAYLOAD_KIND__PL_DRAFT_TOKEN])
        return 0;
    if (!(sv->drafted = pl_msg_i32(in, SLUICE__PAYLOAD_KIND__PL_DRAFT_TOKEN, n, why)))
        return -1;
    uint32_t n_drafted = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (sv->drafted[i] >= ss->n_vocab)
            return sl_fail(why, "row %u holds drafted token %d outside the vocabulary of %d", i,
                           sv->drafted[i], ss->n_vocab);
        n_drafted += sv->drafted[i] >= 0;
    }
    const int kq = SLUICE__PAYLOAD_KIND__PL_DRAFT_PROBS;
    if (!in->data[kq])
        return 0;
    if (in->dtype[kq] != SLUICE__DTYPE__DT_F32 || in->shape[kq][1] != (uint64_t)ss->n_vocab ||
        in->shape[kq][0] != n_drafted)
        return sl_fail(why, "draft distributions are not f32 [%u, %d] (one per drafted row)",
                       n_drafted, ss->n_vocab);
    sv->q = in->data[kq];
    sv->n_q = n_drafted;
    return 0;
}

/* How many drafted rows of the same request follow the verified row i. */
static int group_drafts(const spec_view *sv, const uint64_t *req, uint32_t n, uint32_t i)
{
    int k = 0;
    while (sv->drafted && i + 1 + (uint32_t)k < n && sv->drafted[i + 1 + k] >= 0 &&
           req[i + 1 + k] == req[i] && k < SL_SPEC_K_MAX)
        k++;
    return k;
}

static int spec_scratch(sample_stage *ss, sl_err *why)
{
    if (ss->p_rows)
        return 0;
    size_t v = (size_t)ss->n_vocab;
    ss->p_rows = malloc((SL_SPEC_K_MAX + 1) * v * sizeof(float));
    ss->q_rows = malloc(SL_SPEC_K_MAX * v * sizeof(float));
    ss->resid = malloc(v * sizeof(float));
    ss->probs = malloc(v * sizeof(float));
    ss->ids = malloc(v * sizeof(int32_t));
    if (!ss->p_rows || !ss->q_rows || !ss->resid || !ss->probs || !ss->ids)
        return sl_fail(why, "out of memory for speculative sampling");
    return 0;
}

/* Greedy verification: the target's pick at each row, accepted while it
 * equals the drafted token that follows; the first mismatch (or the bonus
 * after all k) is the last token emitted. */
static int verify_greedy(sample_stage *ss, req_state *st, const float *logits, const int32_t *draft,
                         int k, int32_t *emit)
{
    int n = 0;
    for (int j = 0; j <= k; j++) {
        memcpy(ss->row, logits + (size_t)j * ss->n_vocab, (size_t)ss->n_vocab * sizeof(float));
        int32_t tok = sl_sampler_pick(st->sampler, ss->row, st->recent, st->n_recent);
        push_recent(st, tok);
        emit[n++] = tok;
        if (j == k || tok != draft[j])
            break;
    }
    return n;
}

/* Speculative sampling: the target's distribution at each row (the same
 * transforms as plain sampling, the penalty seeing the drafted tokens
 * before it), accepted by the min(1, p/q) rule against the draft's. */
static int verify_sampled(sample_stage *ss, req_state *st, const float *logits, const int32_t *draft,
                          int k, const float *q, int32_t *emit, sl_err *why)
{
    if (spec_scratch(ss, why))
        return -1;
    size_t v = (size_t)ss->n_vocab;
    int saved_n = st->n_recent;
    int32_t saved[64];
    int32_t *keep = st->cap_recent <= 64 ? saved : malloc((size_t)st->cap_recent * sizeof *keep);
    if (!keep)
        return sl_fail(why, "out of memory");
    if (st->n_recent)
        memcpy(keep, st->recent, (size_t)st->n_recent * sizeof *keep);
    for (int j = 0; j <= k; j++) {
        memcpy(ss->row, logits + (size_t)j * v, v * sizeof(float));
        sl_sampler_penalize(st->sampler, ss->row, st->recent, st->n_recent);
        sl_spec_dense_probs(st->sampler, ss->row, ss->n_vocab, ss->ids, ss->probs,
                            ss->p_rows + (size_t)j * v);
        if (j < k)
            push_recent(st, draft[j]);
    }
    st->n_recent = saved_n;
    if (saved_n)
        memcpy(st->recent, keep, (size_t)saved_n * sizeof *keep);
    if (keep != saved)
        free(keep);
    if (!q) { /* a deterministic drafter: all its mass on the drafted token */
        memset(ss->q_rows, 0, (size_t)k * v * sizeof(float));
        for (int j = 0; j < k; j++)
            ss->q_rows[(size_t)j * v + (size_t)draft[j]] = 1.0f;
        q = ss->q_rows;
    }
    int n = sl_spec_accept_sampled(ss->p_rows, q, draft, k, ss->n_vocab, &st->spec_rng, ss->resid,
                                   emit);
    for (int j = 0; j < n; j++)
        push_recent(st, emit[j]);
    return n;
}

/* Samples the group of row i and its k drafted rows; returns the tokens
 * written to emit (1 to k+1). */
static int sample_group(sample_stage *ss, req_state *st, const pl_msg *in, const spec_view *sv,
                        uint32_t i, int k, int32_t *emit, sl_err *why)
{
    const float *logits = (const float *)in->data[SLUICE__PAYLOAD_KIND__PL_LOGITS] + (size_t)i * ss->n_vocab;
    if (sv->drafted && sv->drafted[i] >= 0)
        return sl_fail(why, "row %u holds a drafted token but no verified row precedes it", i);
    if (k == 0) {
        /* The sampler rewrites its row: work on a copy, not the frame. */
        memcpy(ss->row, logits, (size_t)ss->n_vocab * sizeof(float));
        emit[0] = sl_sampler_pick(st->sampler, ss->row, st->recent, st->n_recent);
        push_recent(st, emit[0]);
        return 1;
    }
    const int32_t *draft = sv->drafted + i + 1;
    const float *q = NULL;
    if (sv->q) {
        uint32_t before = 0; /* drafted rows ahead of this group */
        for (uint32_t r = 0; r <= i; r++)
            before += sv->drafted[r] >= 0;
        q = sv->q + (size_t)before * ss->n_vocab;
    }
    if (st->sampler && sl_sampler_greedy(st->sampler))
        return verify_greedy(ss, st, logits, draft, k, emit);
    return verify_sampled(ss, st, logits, draft, k, q, emit, why);
}

static int sample_process(sl_stage *s, pl_msg *in, const sl_emit *out, sl_err *err)
{
    sample_stage *ss = s->impl;
    int kind = in->hdr->kind;
    sl_err why;
    if (kind == SLUICE__MSG_KIND__MSG_RELEASE || kind == SLUICE__MSG_KIND__MSG_CANCEL) {
        for (size_t i = 0; i < in->hdr->n_requests; i++)
            sl_reqtab_drop(&ss->states, in->hdr->requests[i], free_state);
        return 0; /* the end of the line for control messages */
    }
    if (kind == SLUICE__MSG_KIND__MSG_TRUNCATE)
        return 0;
    if (kind != SLUICE__MSG_KIND__MSG_LOGITS)
        return route_other(s, in, out, err); /* errors travel on to the driver */
    for (size_t i = 0; i < in->hdr->n_params; i++)
        if (add_params(ss, in->hdr->params[i], &why))
            return fail_batch(s, in, out, why.msg, err);
    uint32_t n = in->hdr->n_rows;
    const uint64_t *req = n ? pl_msg_u64(in, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, n, &why) : NULL;
    if (n && !req)
        return fail_batch(s, in, out, why.msg, err);
    if (n && (!in->data[SLUICE__PAYLOAD_KIND__PL_LOGITS] ||
              in->shape[SLUICE__PAYLOAD_KIND__PL_LOGITS][1] != (uint64_t)ss->n_vocab ||
              in->shape[SLUICE__PAYLOAD_KIND__PL_LOGITS][0] != n ||
              in->dtype[SLUICE__PAYLOAD_KIND__PL_LOGITS] != SLUICE__DTYPE__DT_F32)) {
        snprintf(why.msg, sizeof why.msg, "logits payload is not f32 [%u, %d]", n, ss->n_vocab);
        return fail_batch(s, in, out, why.msg, err);
    }
    spec_view sv;
    if (read_spec_view(ss, in, n, &sv, &why))
        return fail_batch(s, in, out, why.msg, err);
    uint32_t n_out = 0;
    for (uint32_t i = 0; i < n;) {
        req_state *st = find_state(ss, req[i], false);
        if (!st || !st->sampler) {
            snprintf(why.msg, sizeof why.msg, "request %llu has no sampling parameters",
                     (unsigned long long)req[i]);
            return fail_batch(s, in, out, why.msg, err);
        }
        int k = group_drafts(&sv, req, n, i);
        int emitted = sample_group(ss, st, in, &sv, i, k, ss->tokens + n_out, &why);
        if (emitted < 0)
            return fail_batch(s, in, out, why.msg, err);
        for (int j = 0; j < emitted; j++) {
            ss->reqs[n_out + (uint32_t)j] = req[i];
            ss->spec[n_out + (uint32_t)j] = k;
        }
        n_out += (uint32_t)emitted;
        i += (uint32_t)k + 1;
    }
    pl_msg m;
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_TOKENS, in->hdr->batch_id, n_out);
    m.hdr_store.sent_ns = in->hdr->sent_ns;
    if (n_out && (pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, n_out, 0,
                             ss->reqs, NULL, NULL, err) ||
                  pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_TOKEN, SLUICE__DTYPE__DT_I32, n_out, 0,
                             ss->tokens, NULL, NULL, err) ||
                  (sv.drafted && pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_SPEC, SLUICE__DTYPE__DT_I32,
                                            n_out, 0, ss->spec, NULL, NULL, err)))) {
        pl_msg_close(&m);
        return -1;
    }
    s->n_batches++;
    s->n_rows += n;
    return out->send(out->ctx, &m, err);
}

static void destroy_sample_stage(sl_stage *s)
{
    sample_stage *ss = s->impl;
    if (ss) {
        sl_reqtab_free(&ss->states, free_state);
        free(ss->row);
        free(ss->tokens);
        free(ss->reqs);
        free(ss->spec);
        free(ss->p_rows);
        free(ss->q_rows);
        free(ss->resid);
        free(ss->probs);
        free(ss->ids);
        free(ss);
    }
    free(s);
}

static int sample_stage_new(sl_stage *s, const sl_stage_spec *spec, sl_err *err)
{
    sample_stage *ss = calloc(1, sizeof *ss);
    if (!ss)
        return sl_fail(err, "out of memory");
    s->impl = ss;
    s->destroy = destroy_sample_stage;
    /* The vocabulary size comes from the model's metadata only. */
    gguf_file *f;
    sl_config c;
    if (gguf_open(&f, spec->model, err))
        return -1;
    int rc = sl_config_from_gguf(&c, f, err);
    gguf_close(f);
    if (rc)
        return -1;
    ss->n_vocab = c.n_vocab;
    int no_table = sl_reqtab_init(&ss->states, sizeof(req_state), spec->max_sequences);
    ss->row = malloc((size_t)ss->n_vocab * sizeof *ss->row);
    ss->tokens = malloc((size_t)spec->max_batch_tokens * sizeof *ss->tokens + 1);
    ss->reqs = malloc((size_t)spec->max_batch_tokens * sizeof *ss->reqs + 1);
    ss->spec = malloc((size_t)spec->max_batch_tokens * sizeof *ss->spec + 1);
    if (no_table || !ss->row || !ss->tokens || !ss->reqs || !ss->spec)
        return sl_fail(err, "out of memory");
    return 0;
}

/* ---- pass-through (tokenize: the driver tokenizes) ---- */

static int pass_process(sl_stage *s, pl_msg *in, const sl_emit *out, sl_err *err)
{
    (void)s;
    if (in->hdr->kind != SLUICE__MSG_KIND__MSG_BATCH)
        return route_other(s, in, out, err);
    batch_rows r;
    sl_err why;
    if (read_rows(s, in, &r, &why))
        return fail_batch(s, in, out, why.msg, err);
    const int32_t *tok = pl_msg_i32(in, SLUICE__PAYLOAD_KIND__PL_TOKEN, r.n, &why);
    if (!tok)
        return fail_batch(s, in, out, why.msg, err);
    pl_msg m;
    if (begin_batch(&m, in, &r, err))
        return -1;
    if (pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_TOKEN, SLUICE__DTYPE__DT_I32, r.n, 0, tok, NULL,
                   NULL, err)) {
        pl_msg_close(&m);
        return -1;
    }
    return out->send(out->ctx, &m, err);
}

static void destroy_plain(sl_stage *s) { free(s); }

sl_kv *sl_stage_kv(sl_stage *s)
{
    return s->kind == PL_STAGE_LAYERS ? ((model_stage *)s->impl)->kv : NULL;
}

/* ---- creation ---- */

int sl_stage_create(sl_stage **out, const sl_stage_spec *spec, sl_err *err)
{
    *out = NULL;
    if (spec->max_batch_tokens < 1 || spec->max_sequences < 1 || spec->context < 1)
        return sl_fail(err, "stage %d: limits must be positive", spec->index);
    sl_stage *s = calloc(1, sizeof *s);
    if (!s)
        return sl_fail(err, "out of memory");
    s->kind = spec->kind;
    s->destroy = destroy_plain;
    s->index = spec->index;
    s->max_sequences = spec->max_sequences;
    s->context = spec->context;
    s->max_batch_tokens = spec->max_batch_tokens;
    int rc = 0;
    switch (spec->kind) {
    case PL_STAGE_TOKENIZE:
        snprintf(s->name, sizeof s->name, "tokenize");
        s->process = pass_process;
        break;
    case PL_STAGE_EMBED:
        snprintf(s->name, sizeof s->name, "embed");
        s->process = embed_process;
        rc = model_stage_new(s, spec, err);
        break;
    case PL_STAGE_LAYERS:
        snprintf(s->name, sizeof s->name, "layers[%d,%d)", spec->l0, spec->l1);
        s->process = layers_process;
        rc = model_stage_new(s, spec, err);
        break;
    case PL_STAGE_HEAD:
        snprintf(s->name, sizeof s->name, "head");
        s->process = head_process;
        rc = model_stage_new(s, spec, err);
        break;
    case PL_STAGE_SAMPLE:
        snprintf(s->name, sizeof s->name, "sample");
        s->process = sample_process;
        rc = sample_stage_new(s, spec, err);
        break;
    case PL_STAGE_DRAFT:
        snprintf(s->name, sizeof s->name, "draft");
        rc = sl_draft_stage_new(s, spec, err);
        break;
    default:
        rc = sl_fail(err, "stage %d: unknown kind %d", spec->index, (int)spec->kind);
    }
    if (rc) {
        sl_stage_destroy(s);
        return sl_wrap(err, "stage %d (%s)", spec->index, pl_stage_kind_name(spec->kind));
    }
    *out = s;
    return 0;
}

void sl_stage_destroy(sl_stage *s)
{
    if (s)
        s->destroy(s);
}
