/* The layers stage: a range [l0, l1) of the model's layers, with its own
 * KV cache. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/quant.h"
#include "kernels/types.h"
#include "model/mtp.h"
#include "stages/kinds.h"
#include "stages/model_stage.h"

/* Applies RELEASE/TRUNCATE to the stage's KV cache, then passes it on. */
static int kv_control(sl_stage *s, sl_model_stage *ms, pl_msg *in, const sl_emit *out, sl_err *err)
{
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
    return sl_stage_forward_control(in, out, err);
}

/* The per-layer inputs a batch carries for the stage's layers (limits.ple:
 * embed), checked: NULL with *why empty when it carries none. */
static const float *read_ple(const sl_model_stage *ms, const pl_msg *in, uint32_t n, sl_err *why)
{
    const sl_model *m = ms->model;
    why->msg[0] = 0;
    if (!pl_msg_has(in, SLUICE__PAYLOAD_KIND__PL_PLE))
        return NULL;
    uint64_t want = (uint64_t)(m->cfg.n_layer - m->part.l0) * (uint64_t)m->cfg.n_embd_per_layer;
    sl_err bad;
    const float *ple = pl_msg_f32_view(in, SLUICE__PAYLOAD_KIND__PL_PLE, n, want, &bad);
    if (!ple)
        snprintf(why->msg, sizeof why->msg, "per-layer inputs are not f32 [%u, %llu] (layers "
                 "%d to %d of %d floats each): %.200s", n, (unsigned long long)want, m->part.l0,
                 m->cfg.n_layer, m->cfg.n_embd_per_layer, bad.msg);
    return ple;
}

/* Positions are authoritative. A batch that starts a slot's rows before the
 * end of its cache rewrites what follows: a replay from position 0 after a
 * failure whose RELEASE was lost with a dead peer, or drafts whose TRUNCATE
 * was. The cache is cut there first, when that is safe: back to 0, or by at
 * most a batch (sliding-window rings keep that much slack behind their
 * window). Anything else stays an error of the forward pass. */
static void rewind_slots(sl_kv *kv, const sl_batch_rows *r)
{
    for (uint32_t i = 0; i < r->n; i++) {
        int s = r->seq[i], p = r->pos[i];
        if ((i > 0 && r->seq[i - 1] == s) || s < 0 || s >= sl_kv_max_seqs(kv) || p < 0)
            continue;
        int len = sl_kv_len(kv, s);
        /* a new prompt in the slot: cut it, keeping its pages (giving
         * them back made each a page fault again in the coming steps) */
        if (p == 0 && len > 0)
            sl_kv_truncate(kv, s, 0);
        else if (p < len && len - p <= sl_kv_max_batch(kv))
            sl_kv_truncate(kv, s, p);
    }
}

/* Layer il's keys (vi 0) or values (vi 1) of every row into the columns
 * at col of kv (cols floats a row), as f32 whatever the cache's type. */
static void copy_kv_rows(sl_model_stage *ms, const sl_batch_rows *r, int il, int vi, float *kv,
                         uint64_t cols, uint64_t col)
{
    const sl_layer_cfg *L = &ms->model->cfg.layer[il];
    int64_t slots = sl_kv_slots(ms->kv, il), row_bytes = sl_kv_row_bytes(ms->kv, il);
    int64_t head_bytes = sl_kv_head_bytes(ms->kv, il);
    sl_type type = sl_kv_type(ms->kv);
    for (uint32_t i = 0; i < r->n; i++) {
        const uint8_t *base = vi ? sl_kv_v(ms->kv, r->seq[i], il) : sl_kv_k(ms->kv, r->seq[i], il);
        const uint8_t *slot = base + (size_t)((r->pos[i] % slots) * row_bytes);
        float *dst = kv + i * cols + col;
        for (int h = 0; h < L->n_kv_head; h++)
            sl_dequantize_row(type, slot + h * head_bytes, dst + (int64_t)h * L->head_dim, L->head_dim);
    }
}

/* A pipeline with an mtp stage: the new K/V rows of the source layers this
 * stage holds join those an earlier stage sent (K_s V_s K_g V_g a row). */
static int mtp_rows(sl_model_stage *ms, const pl_msg *in, const sl_batch_rows *r, sl_err *why)
{
    if (!ms->mtp_feed || (ms->mtp_src[0] < 0 && ms->mtp_src[1] < 0) || r->n == 0)
        return 0;
    uint64_t cols = ms->mtp_cols;
    ms->mtp_kv = calloc((size_t)r->n * cols, sizeof(float));
    ms->mtp_row = malloc((size_t)r->n * 2 * sizeof(int32_t));
    if (!ms->mtp_kv || !ms->mtp_row)
        return sl_fail(why, "out of memory for the assistant's K/V rows");
    if (pl_msg_has(in, SLUICE__PAYLOAD_KIND__PL_MTP_KV)) {
        sl_err ignore;
        const float *got = pl_msg_f32_view(in, SLUICE__PAYLOAD_KIND__PL_MTP_KV, r->n, cols, &ignore);
        if (!got)
            return sl_fail(why, "the assistant's K/V rows are not f32 [%u, %llu]", r->n,
                           (unsigned long long)cols);
        memcpy(ms->mtp_kv, got, (size_t)r->n * cols * sizeof(float));
    }
    for (uint32_t i = 0; i < r->n; i++) {
        ms->mtp_row[2 * i] = r->seq[i];
        ms->mtp_row[2 * i + 1] = r->pos[i];
    }
    uint64_t at = 0;
    for (int k = 0; k < 2; at += 2 * ms->mtp_w[k], k++) {
        if (ms->mtp_src[k] < 0)
            continue;
        copy_kv_rows(ms, r, ms->mtp_src[k], 0, ms->mtp_kv, cols, at);
        copy_kv_rows(ms, r, ms->mtp_src[k], 1, ms->mtp_kv, cols, at + ms->mtp_w[k]);
    }
    return 0;
}

/* The first row continuing a slot this stage holds no cache of (-1: none):
 * a batch from before this stage's restart. */
static int stale_row(sl_kv *kv, const sl_batch_rows *r)
{
    for (uint32_t i = 0; i < r->n; i++) {
        int s = r->seq[i];
        if ((i > 0 && r->seq[i - 1] == s) || s < 0 || s >= sl_kv_max_seqs(kv))
            continue;
        if (r->pos[i] > 0 && sl_kv_len(kv, s) == 0)
            return (int)i;
    }
    return -1;
}

static int layers_process(sl_stage *s, pl_msg *in, const sl_emit *out, sl_err *err)
{
    sl_model_stage *ms = s->impl;
    int kind = in->hdr->kind;
    if (kind == SLUICE__MSG_KIND__MSG_RELEASE || kind == SLUICE__MSG_KIND__MSG_TRUNCATE)
        return kv_control(s, ms, in, out, err);
    if (kind != SLUICE__MSG_KIND__MSG_BATCH)
        return sl_stage_route_other(s, in, out, err);
    sl_batch_rows r;
    sl_err why;
    if (sl_stage_read_rows(s, in, &r, &why))
        return sl_stage_fail_batch(s, in, out, why.msg, err);
    const sl_config *c = &ms->model->cfg;
    int64_t pl = c->n_embd_per_layer;
    const int32_t *tok = NULL;
    const float *ple = pl > 0 ? read_ple(ms, in, r.n, &why) : NULL;
    if (pl > 0 && !ple && why.msg[0])
        return sl_stage_fail_batch(s, in, out, why.msg, err);
    if (pl > 0 && !ple && !(tok = pl_msg_i32(in, SLUICE__PAYLOAD_KIND__PL_TOKEN, r.n, &why)))
        return sl_stage_fail_batch(s, in, out, why.msg, err);
    float *x = sl_model_stage_activations(in, r.n, c->d_model, &why);
    if (!x)
        return sl_stage_fail_batch(s, in, out, why.msg, err);
    sl_batch b = {.n_tokens = (int)r.n, .token = tok, .seq = r.seq, .pos = r.pos, .ple = ple,
                  .ple_stride = pl, .ple_layer_stride = (int64_t)r.n * pl};
    rewind_slots(ms->kv, &r);
    int stale = stale_row(ms->kv, &r);
    if (stale >= 0) {
        free(x);
        return sl_stage_fail_stale(s, in, out, r.seq[stale], r.pos[stale], err);
    }
    if (sl_forward_layers(ms->fwd, ms->kv, &b, x, &why)) {
        free(x);
        return sl_stage_fail_batch(s, in, out, why.msg, err);
    }
    if (mtp_rows(ms, in, &r, &why)) {
        free(x);
        free(ms->mtp_kv);
        free(ms->mtp_row);
        ms->mtp_kv = NULL;
        ms->mtp_row = NULL;
        return sl_stage_fail_batch(s, in, out, why.msg, err);
    }
    if (pl > 0 && ple)
        ms->ple_received++;
    else if (pl > 0)
        ms->ple_gathered++;
    /* the slices of the layers ahead follow ours: passed on as they are */
    int part_layers = ms->model->part.l1 - ms->model->part.l0;
    sl_ple_rows rest = {ple ? (float *)ple + (size_t)part_layers * r.n * (size_t)pl : NULL,
                        ple ? (uint64_t)(c->n_layer - ms->model->part.l1) * (uint64_t)pl : 0, false};
    return sl_model_stage_emit(s, in, &r, x, tok, &rest, out, err);
}

int sl_layers_stage_new(sl_stage *s, const sl_stage_spec *spec, sl_err *err)
{
    snprintf(s->name, sizeof s->name, "layers[%d,%d)", spec->l0, spec->l1);
    s->process = layers_process;
    s->describe = sl_model_stage_describe_ple;
    sl_model_part part = {spec->l0, spec->l1, false, false, false};
    if (sl_model_stage_open(s, spec, &part, true, err))
        return -1;
    sl_model_stage *ms = s->impl;
    if (spec->kv_full ? sl_kv_new_full(&ms->kv, &ms->model->cfg, spec->l0, spec->l1, spec->max_sequences,
                                       spec->context, (sl_type)spec->kv_type, err)
                      : sl_kv_new_typed(&ms->kv, &ms->model->cfg, spec->l0, spec->l1, spec->max_sequences,
                                        spec->context, (sl_type)spec->kv_type, spec->max_batch_tokens, err))
        return -1;
    s->kv = ms->kv;
    if (!spec->mtp_feed)
        return 0;
    int src[2];
    if (sl_mtp_target_sources(&ms->model->cfg, src, err))
        return -1;
    ms->mtp_feed = true;
    ms->mtp_cols = sl_model_stage_mtp_cols(ms->model, src);
    for (int k = 0; k < 2; k++) {
        const sl_layer_cfg *L = &ms->model->cfg.layer[src[k]];
        ms->mtp_w[k] = (uint64_t)L->n_kv_head * (uint64_t)L->head_dim;
        ms->mtp_src[k] = src[k] >= spec->l0 && src[k] < spec->l1 ? src[k] : -1;
    }
    return 0;
}
