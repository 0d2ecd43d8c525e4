/* The embed stage: token ids in, embedding rows out (and, for models with
 * per-layer embeddings under limits.ple: embed, every layer's per-layer
 * inputs). */
#include <stdio.h>
#include <stdlib.h>

#include "stages/kinds.h"
#include "stages/model_stage.h"

/* Gathers every layer's per-layer inputs of the batch (limits.ple: embed)
 * and sends them down with x. */
static int emit_with_ple(sl_stage *s, pl_msg *in, const sl_batch_rows *r, const int32_t *tok, float *x,
                         const sl_emit *out, sl_err *err)
{
    sl_model_stage *ms = s->impl;
    const sl_config *c = &ms->model->cfg;
    sl_err why;
    if (r->n > (uint32_t)ms->max_batch) {
        free(x);
        snprintf(why.msg, sizeof why.msg, "batch of %u rows exceeds the stage's limit of %d",
                 r->n, ms->max_batch);
        return sl_stage_fail_batch(s, in, out, why.msg, err);
    }
    int64_t pl = c->n_embd_per_layer;
    sl_ple_rows ple = {malloc((size_t)r->n * (size_t)c->n_layer * (size_t)pl * sizeof(float) + 1),
                       (uint64_t)c->n_layer * (uint64_t)pl, true};
    if (!ple.data || sl_ple_inputs(ms->model, tok, x, (int)r->n, ms->ple_proj, ple.data, pl,
                                   (int64_t)r->n * pl, NULL, &why)) {
        free(x);
        free(ple.data);
        return sl_stage_fail_batch(s, in, out, ple.data ? why.msg : "out of memory", err);
    }
    ms->ple_gathered++;
    return sl_model_stage_emit(s, in, r, x, NULL, &ple, out, err);
}

static int embed_process(sl_stage *s, pl_msg *in, const sl_emit *out, sl_err *err)
{
    sl_model_stage *ms = s->impl;
    if (in->hdr->kind != SLUICE__MSG_KIND__MSG_BATCH)
        return sl_stage_route_other(s, in, out, err);
    sl_batch_rows r;
    sl_err why;
    if (sl_stage_read_rows(s, in, &r, &why))
        return sl_stage_fail_batch(s, in, out, why.msg, err);
    const int32_t *tok = pl_msg_i32(in, SLUICE__PAYLOAD_KIND__PL_TOKEN, r.n, &why);
    if (!tok)
        return sl_stage_fail_batch(s, in, out, why.msg, err);
    int d = ms->model->cfg.d_model;
    float *x = malloc((size_t)r.n * (size_t)d * sizeof(float) + 1);
    if (!x)
        return sl_stage_fail_batch(s, in, out, "out of memory", err);
    if (sl_embed(ms->model, tok, (int)r.n, x, &why)) {
        free(x);
        return sl_stage_fail_batch(s, in, out, why.msg, err);
    }
    if (ms->model->cfg.n_embd_per_layer == 0)
        return sl_model_stage_emit(s, in, &r, x, NULL, NULL, out, err);
    if (!ms->ple_proj) /* the layers stages gather their own slices */
        return sl_model_stage_emit(s, in, &r, x, tok, NULL, out, err);
    return emit_with_ple(s, in, &r, tok, x, out, err);
}

int sl_embed_stage_new(sl_stage *s, const sl_stage_spec *spec, sl_err *err)
{
    s->process = embed_process;
    s->describe = sl_model_stage_describe_ple;
    sl_model_part part = {0, 0, true, false, spec->ple_at_embed};
    if (sl_model_stage_open(s, spec, &part, false, err))
        return -1;
    sl_model_stage *ms = s->impl;
    const sl_config *c = &ms->model->cfg;
    if (spec->ple_at_embed && c->n_embd_per_layer > 0) {
        size_t floats = (size_t)spec->max_batch_tokens * (size_t)c->n_layer * (size_t)c->n_embd_per_layer;
        if (!(ms->ple_proj = malloc(floats * sizeof(float))))
            return sl_fail(err, "out of memory for the per-layer inputs of %d tokens",
                           spec->max_batch_tokens);
    }
    return 0;
}
