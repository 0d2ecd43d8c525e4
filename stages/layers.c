/* The layers stage: a range [l0, l1) of the model's layers, with its own
 * KV cache. */
#include <stdio.h>
#include <stdlib.h>

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
    sl_err ignore;
    const float *ple = pl_msg_f32_view(in, SLUICE__PAYLOAD_KIND__PL_PLE, n, want, &ignore);
    if (!ple)
        snprintf(why->msg, sizeof why->msg, "per-layer inputs are not f32 [%u, %llu] (layers "
                 "%d to %d of %d floats each)", n, (unsigned long long)want, m->part.l0,
                 m->cfg.n_layer, m->cfg.n_embd_per_layer);
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
        if (p == 0 && len > 0)
            sl_kv_clear(kv, s);
        else if (p < len && len - p <= sl_kv_max_batch(kv))
            sl_kv_truncate(kv, s, p);
    }
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
    if (sl_kv_new_typed(&ms->kv, &ms->model->cfg, spec->l0, spec->l1, spec->max_sequences, spec->context,
                        (sl_type)spec->kv_type, spec->max_batch_tokens, err))
        return -1;
    s->kv = ms->kv;
    return 0;
}
