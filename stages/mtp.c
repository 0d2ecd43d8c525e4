/* The mtp stage: Gemma 4's assistant drafter (model/mtp.h) after the sample
 * stage. The target's layers stages holding the assistant's two source
 * layers send the new K/V rows of every batch row (PL_MTP_KV, PL_MTP_ROW),
 * the head each wanted row's final-normed hidden state, and sample passes
 * them on with its TOKENS: the hidden state of the row whose logits gave
 * each token, with the row's slot and position. This stage keeps its own
 * copy of the source layers' rows per slot (positions are authoritative: a
 * row at position p cuts the copy there, as in the layers stages), so it
 * reads no other stage's memory and can run on any node.
 *
 * For each request's last token t0 (at position p, not yet in any cache) it
 * cuts the copy to [0, p) (the rows of rejected drafts go), drafts k tokens
 * by the assistant's recurrent loop from the hidden state that gave t0, and
 * sends them on as PL_NEXT_DRAFT with the TOKENS. The driver appends them
 * after the request's next row, as the draft stage would: the target
 * verifies them and the sample stage accepts a prefix by the same rules
 * (the drafts are deterministic: q is one-hot). The heavy payloads stop
 * here. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/attn.h"
#include "model/model.h"
#include "model/mtp.h"
#include "stages/kinds.h"
#include "stages/model_stage.h"
#include "stages/spec.h"
#include "stages/spec_adapt.h"
#include "util/clock.h"

/* One slot's copy of the source layers' rows: positions [0, len) of the
 * global layer, [lo, len) of the sliding one (all of them without a ring). */
typedef struct mtp_slot {
    float *kv[4];           /* K_s, V_s (ring rows, or cap), K_g, V_g (cap rows) of w[kind] floats */
    int len, cap, lo;
    /* adaptive k (stages/spec_adapt.c): one controller a slot, fed the
     * time from one arrival of the slot's tokens to the next, with the
     * drafts sent after the first (clock.drafted) */
    sl_spec_stats stats;
    spa_ctl spa;
    spa_clock clock;        /* running once its tokens have arrived */
    int last_p;             /* t0's position then */
} mtp_slot;

typedef struct mtp_stage {
    sl_mtp *m;
    sl_model *target;       /* the target's token embedding (the assistant's input) */
    sl_mtp_ctx *ctx;
    int64_t w[2];           /* floats of K (or V) a row: sliding, global source layer */
    int ring;               /* sliding rows kept a slot (position p at p % ring); 0: all */
    uint64_t cols;          /* a PL_MTP_KV row: 2 w[0] + 2 w[1] */
    int d_backbone, n_vocab, context, max_seqs, k_max;
    bool auto_k;
    mtp_slot *slots;
    int32_t *next;          /* outgoing PL_NEXT_DRAFT: max_batch rows of k_max */
    int max_batch;
    spa_ctl spa_prior;      /* what the latest step taught: a new request starts from it */
    double draft_s;
    /* statistics */
    long rounds, drafted, kv_rows;
} mtp_stage;

/* ---- the copy of the target's rows ---- */

/* The sliding source layer is read only within its window before the
 * draft position, so its rows go round a ring: the window, plus the most
 * rows a rejection cuts (those overwrite the oldest), whole attention spans
 * (spans must not cross the ring's end). 0 when the context is no longer. */
static int ring_rows(int window, int context)
{
    int rows = (window - 1 + SL_SPEC_K_MAX + SL_ATTN_SPAN - 1) / SL_ATTN_SPAN * SL_ATTN_SPAN;
    return window > 0 && rows < context ? rows : 0;
}

static int slot_reserve(mtp_stage *ms, mtp_slot *sl, int rows, sl_err *why)
{
    if (ms->ring && !sl->kv[0])
        for (int i = 0; i < 2; i++)
            if (!(sl->kv[i] = malloc((size_t)ms->ring * (size_t)ms->w[0] * sizeof(float))))
                return sl_fail(why, "out of memory for the assistant's copy of slot rows");
    if (rows <= sl->cap)
        return 0;
    int cap = sl->cap ? sl->cap : 64;
    while (cap < rows)
        cap *= 2;
    if (cap > ms->context)
        cap = ms->context;
    for (int i = ms->ring ? 2 : 0; i < 4; i++) {
        float *p = realloc(sl->kv[i], (size_t)cap * (size_t)ms->w[i / 2] * sizeof(float));
        if (!p)
            return sl_fail(why, "out of memory for the assistant's copy of slot rows");
        sl->kv[i] = p;
    }
    sl->cap = cap;
    return 0;
}

/* Takes the K/V rows a batch sent: each cuts its slot's copy at its
 * position and is appended there. */
static int take_kv_rows(mtp_stage *ms, const pl_msg *in, sl_err *why)
{
    if (!pl_msg_has(in, SLUICE__PAYLOAD_KIND__PL_MTP_KV))
        return 0;
    uint64_t n = in->shape[SLUICE__PAYLOAD_KIND__PL_MTP_KV][0];
    sl_err ignore;
    const float *kv = pl_msg_f32_view(in, SLUICE__PAYLOAD_KIND__PL_MTP_KV, n, ms->cols, &ignore);
    if (!kv)
        return sl_fail(why, "the target's K/V rows are not f32 [%llu, %llu] (the source layers of "
                       "this assistant)", (unsigned long long)n, (unsigned long long)ms->cols);
    const int32_t *row = pl_msg_i32(in, SLUICE__PAYLOAD_KIND__PL_MTP_ROW, n, why);
    if (!row)
        return -1;
    for (uint64_t i = 0; i < n; i++) {
        int seq = row[2 * i], pos = row[2 * i + 1];
        if (seq < 0 || seq >= ms->max_seqs || pos < 0 || pos >= ms->context)
            return sl_fail(why, "K/V row %llu is for slot %d position %d, outside %d slots of %d "
                           "positions", (unsigned long long)i, seq, pos, ms->max_seqs, ms->context);
        mtp_slot *sl = &ms->slots[seq];
        if (pos > sl->len)
            return sl_fail(why, "K/V row %llu is for slot %d position %d, but the copy holds only "
                           "positions before %d", (unsigned long long)i, seq, pos, sl->len);
        if (slot_reserve(ms, sl, pos + 1, why))
            return -1;
        const float *src = kv + i * ms->cols;
        for (int j = 0; j < 4; j++) {
            size_t w = (size_t)ms->w[j / 2], at = j < 2 && ms->ring ? (size_t)(pos % ms->ring) : (size_t)pos;
            memcpy(sl->kv[j] + at * w, src, w * sizeof(float));
            src += w;
        }
        /* a ring row of position pos held pos - ring before */
        if (pos < sl->lo)
            sl->lo = pos;
        if (ms->ring && pos - sl->lo >= ms->ring)
            sl->lo = pos - ms->ring + 1;
        sl->len = pos + 1;
    }
    ms->kv_rows += (long)n;
    return 0;
}

/* ---- drafting ---- */

/* Feeds the slot's controller the step that ended with the tokens at
 * rows [i0, i1) (t0 at position p): comparable steps only, a request new
 * to the slot starting from what the stage has learned. */
static void learn_step(mtp_stage *ms, mtp_slot *sl, int p, int emitted, bool verified)
{
    double now = sl_now_s();
    bool was_running = sl->clock.running;
    int sent = sl->clock.drafted;
    if (!verified)
        sl->clock.drafted = 0; /* its drafts were not verified: a plain step */
    if (spa_clock_stop(&sl->clock, now, was_running && p == sl->last_p + emitted, &sl->spa, &ms->spa_prior)) {
        if (verified && sl->spa.n_plain > 0) {
            spa_observe_accept(&sl->spa, sent, emitted - 1);
            ms->spa_prior = sl->spa;
        }
    } else if (!was_running || p <= sl->last_p) {
        spa_init_from(&sl->spa, &ms->spa_prior);
    }
    spa_clock_start(&sl->clock, now, 0.0, 0);
    sl->last_p = p;
}

/* The tokens emitted for a request: rows [i0, i1) of the TOKENS, the last
 * of them t0. Learns what its previous block became, cuts the slot's copy
 * to t0's position, and drafts after t0 into out (k_max wide, -1 padded). */
static int draft_after(mtp_stage *ms, const pl_msg *in, uint32_t i0, uint32_t i1, const float *hidden,
                       int32_t *out, sl_err *why)
{
    sl_err e;
    uint32_t n = in->hdr->n_rows, j = i1 - 1;
    const int32_t *tok = pl_msg_i32(in, SLUICE__PAYLOAD_KIND__PL_TOKEN, n, &e);
    const int32_t *seq = pl_msg_i32(in, SLUICE__PAYLOAD_KIND__PL_SEQ, n, &e);
    const int32_t *pos = pl_msg_i32(in, SLUICE__PAYLOAD_KIND__PL_POS, n, &e);
    const int32_t *spec = pl_msg_has(in, SLUICE__PAYLOAD_KIND__PL_SPEC)
                              ? pl_msg_i32(in, SLUICE__PAYLOAD_KIND__PL_SPEC, n, &e) : NULL;
    if (!tok || !seq || !pos)
        return sl_fail(why, "tokens without their slots and positions (the sample stage sends them "
                       "to an mtp stage)");
    int s = seq[j], p = pos[j] + 1; /* t0 sits at the position after its row's */
    if (s < 0 || s >= ms->max_seqs || p < 1 || p > ms->context)
        return sl_fail(why, "row %u: slot %d position %d outside %d slots of %d positions", j, s,
                       pos[j], ms->max_seqs, ms->context);
    if (tok[j] < 0 || tok[j] >= ms->n_vocab)
        return sl_fail(why, "row %u: token %d outside the vocabulary of %d", j, tok[j], ms->n_vocab);
    mtp_slot *sl = &ms->slots[s];
    bool verified = sl->clock.drafted > 0 && spec && spec[j] > 0;
    if (verified)
        sl_spec_stats_add(&sl->stats, spec[j], (int)(i1 - i0) - 1);
    learn_step(ms, sl, p, (int)(i1 - i0), verified);
    if (sl->len > p)
        sl->len = p; /* rows of rejected drafts */
    int k = ms->auto_k ? spa_next_k(&sl->spa) : ms->k_max;
    if (sl->len != p || k > ms->context - 1 - p)
        k = sl->len == p ? ms->context - 1 - p : 0;
    if (k <= 0)
        return 0;
    const sl_mtp_kv kv[2] = {
        {sl->kv[0], sl->kv[1], sl->lo, sl->len - sl->lo, ms->w[0] * (int64_t)sizeof(float),
         SL_TYPE_F32, ms->ring},
        {sl->kv[2], sl->kv[3], 0, sl->len, ms->w[1] * (int64_t)sizeof(float), SL_TYPE_F32, 0},
    };
    double t0 = sl_now_s();
    if (sl_mtp_draft(ms->ctx, hidden + (size_t)j * ms->d_backbone, tok[j], p, kv, k, out, why))
        return -1;
    ms->draft_s += sl_now_s() - t0;
    ms->drafted += k;
    ms->rounds++;
    sl->clock.drafted = k;
    return k;
}

/* Drafts after each request's last token; returns whether any did. */
static int draft_all(mtp_stage *ms, const pl_msg *in, sl_err *why)
{
    uint32_t n = in->hdr->n_rows;
    if (!n || !pl_msg_has(in, SLUICE__PAYLOAD_KIND__PL_HIDDEN) || ms->k_max == 0)
        return 0;
    if (n > (uint32_t)ms->max_batch)
        return sl_fail(why, "%u tokens, more than a batch's %d rows", n, ms->max_batch);
    sl_err ignore;
    const float *hidden = pl_msg_f32_view(in, SLUICE__PAYLOAD_KIND__PL_HIDDEN, n, (uint64_t)ms->d_backbone,
                                          &ignore);
    const uint64_t *req = pl_msg_u64(in, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, n, why);
    if (!hidden)
        return sl_fail(why, "hidden states are not f32 [%u, %d] (the target's width)", n, ms->d_backbone);
    if (!req)
        return -1;
    for (size_t i = 0; i < (size_t)n * ms->k_max; i++)
        ms->next[i] = -1;
    int any = 0;
    for (uint32_t i0 = 0; i0 < n;) {
        uint32_t i1 = i0 + 1;
        while (i1 < n && req[i1] == req[i0])
            i1++;
        int k = draft_after(ms, in, i0, i1, hidden, ms->next + (size_t)(i1 - 1) * ms->k_max, why);
        if (k < 0)
            return -1;
        any |= k > 0;
        i0 = i1;
    }
    return any;
}

/* ---- the stage ---- */

/* The TOKENS for the driver: the tokens and their verification counts as
 * they came, and the drafts. */
static int send_tokens(sl_stage *s, const pl_msg *in, bool drafts, const sl_emit *out, sl_err *err)
{
    mtp_stage *ms = s->impl;
    uint32_t n = in->hdr->n_rows;
    pl_msg m;
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_TOKENS, in->hdr->batch_id, n);
    pl_msg_copy_extras(&m, in);
    if (pl_msg_pass(&m, in, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, err) ||
        pl_msg_pass(&m, in, SLUICE__PAYLOAD_KIND__PL_TOKEN, err) ||
        pl_msg_pass(&m, in, SLUICE__PAYLOAD_KIND__PL_SPEC, err) ||
        (drafts && pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_NEXT_DRAFT, SLUICE__DTYPE__DT_I32, n,
                              (uint64_t)ms->k_max, ms->next, NULL, NULL, err))) {
        pl_msg_close(&m);
        return -1;
    }
    return sl_stage_send(s, n, &m, out, err);
}

static int mtp_process(sl_stage *s, pl_msg *in, const sl_emit *out, sl_err *err)
{
    mtp_stage *ms = s->impl;
    if (in->hdr->kind != SLUICE__MSG_KIND__MSG_TOKENS)
        return sl_stage_route_other(s, in, out, err);
    sl_err why;
    int drafts;
    if (take_kv_rows(ms, in, &why) || (drafts = draft_all(ms, in, &why)) < 0)
        return sl_stage_fail_batch(s, in, out, why.msg, err);
    return send_tokens(s, in, drafts > 0, out, err);
}

static void mtp_describe(const sl_stage *s, char *buf, size_t size)
{
    const mtp_stage *ms = s->impl;
    /* the copy of a slot at the full context: the sliding rows in their ring */
    int sliding_rows = ms->ring ? ms->ring : ms->context;
    double slot_mb = 2.0 * sizeof(float) *
                     ((double)sliding_rows * (double)ms->w[0] + (double)ms->context * (double)ms->w[1]) / 1e6;
    snprintf(buf, size, "assistant drafted %ld tokens in %ld rounds (%.3f ms a token); took %ld K/V "
             "rows of %llu B; a slot's copy at most %.2f MB (sliding rows: %d)", ms->drafted,
             ms->rounds, ms->drafted ? 1e3 * ms->draft_s / (double)ms->drafted : 0.0, ms->kv_rows,
             (unsigned long long)(ms->cols * sizeof(float)), slot_mb, sliding_rows);
}

static void destroy_mtp_stage(sl_stage *s)
{
    mtp_stage *ms = s->impl;
    if (ms) {
        for (int i = 0; ms->slots && i < ms->max_seqs; i++)
            for (int j = 0; j < 4; j++)
                free(ms->slots[i].kv[j]);
        free(ms->slots);
        free(ms->next);
        sl_mtp_ctx_free(ms->ctx);
        sl_mtp_free(ms->m);
        sl_model_free(ms->target);
        free(ms);
    }
    free(s);
}

int sl_mtp_stage_new(sl_stage *s, const sl_stage_spec *spec, sl_err *err)
{
    mtp_stage *ms = calloc(1, sizeof *ms);
    if (!ms)
        return sl_fail(err, "out of memory");
    s->impl = ms;
    s->destroy = destroy_mtp_stage;
    s->process = mtp_process;
    s->describe = mtp_describe;
    ms->context = spec->context;
    ms->max_seqs = spec->max_sequences;
    ms->max_batch = spec->max_batch_tokens;
    ms->k_max = spec->spec_k;
    ms->auto_k = spec->spec_auto;
    if (ms->k_max < 0 || ms->k_max > SL_SPEC_K_MAX)
        return sl_fail(err, "speculative k = %d outside 0..%d", ms->k_max, SL_SPEC_K_MAX);
    if (!spec->draft_model || !spec->draft_model[0])
        return sl_fail(err, "an mtp stage needs the assistant's file");
    sl_model_part embed = {0, 0, true, false, false};
    int src[2];
    if (sl_mtp_load(&ms->m, spec->draft_model, err) ||
        sl_model_load(&ms->target, spec->model, &embed, err) ||
        sl_mtp_ctx_new(&ms->ctx, ms->m, ms->target, err))
        return -1;
    sl_mtp_ctx_sources(ms->ctx, src);
    for (int k = 0; k < 2; k++)
        ms->w[k] = (int64_t)ms->target->cfg.layer[src[k]].n_kv_head * ms->target->cfg.layer[src[k]].head_dim;
    ms->ring = ring_rows(ms->target->cfg.layer[src[0]].sliding_window, ms->context);
    ms->cols = sl_model_stage_mtp_cols(ms->target, src);
    ms->d_backbone = ms->target->cfg.d_model;
    ms->n_vocab = ms->target->cfg.n_vocab;
    ms->slots = calloc((size_t)ms->max_seqs, sizeof *ms->slots);
    ms->next = malloc(((size_t)ms->max_batch * (size_t)(ms->k_max > 0 ? ms->k_max : 1) + 1) * sizeof(int32_t));
    if (!ms->slots || !ms->next)
        return sl_fail(err, "out of memory");
    for (int i = 0; i < ms->max_seqs; i++)
        sl_spec_stats_init(&ms->slots[i].stats);
    spa_init(&ms->spa_prior, ms->k_max);
    return 0;
}
