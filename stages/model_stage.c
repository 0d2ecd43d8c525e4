#include "stages/model_stage.h"

#include <stdio.h>
#include <stdlib.h>

static void model_stage_free(sl_model_stage *ms)
{
    if (!ms)
        return;
    sl_kv_free(ms->kv);
    sl_fwd_free(ms->fwd);
    free(ms->ple_proj);
    free(ms->mtp_kv);
    free(ms->mtp_row);
    sl_model_free(ms->model);
    free(ms);
}

static void destroy_model_stage(sl_stage *s)
{
    model_stage_free(s->impl);
    free(s);
}

int sl_model_stage_open(sl_stage *s, const sl_stage_spec *spec, const sl_model_part *part, bool fwd,
                        sl_err *err)
{
    sl_model_stage *ms = calloc(1, sizeof *ms);
    if (!ms)
        return sl_fail(err, "out of memory");
    s->impl = ms;
    s->destroy = destroy_model_stage;
    ms->max_batch = spec->max_batch_tokens;
    if (sl_model_load(&ms->model, spec->model, part, err))
        return -1;
    if (fwd && sl_fwd_new(&ms->fwd, ms->model, spec->max_batch_tokens, err))
        return -1;
    return 0;
}

/* Frees what the message did not take over. */
static int emit_failed(float *x, const sl_ple_rows *ple, pl_msg *m)
{
    free(x);
    if (ple && ple->own)
        free(ple->data);
    if (m)
        pl_msg_close(m);
    return -1;
}

uint64_t sl_model_stage_mtp_cols(const sl_model *m, const int src[2])
{
    const sl_layer_cfg *S = &m->cfg.layer[src[0]], *G = &m->cfg.layer[src[1]];
    return 2 * (uint64_t)S->n_kv_head * (uint64_t)S->head_dim +
           2 * (uint64_t)G->n_kv_head * (uint64_t)G->head_dim;
}

int sl_model_stage_pass_mtp(pl_msg *m, const pl_msg *in, sl_err *err)
{
    return pl_msg_pass(m, in, SLUICE__PAYLOAD_KIND__PL_MTP_KV, err) ||
           pl_msg_pass(m, in, SLUICE__PAYLOAD_KIND__PL_MTP_ROW, err) ? -1 : 0;
}

/* The rows this stage filled (given to the message), or those it got. */
static int add_mtp_rows(sl_model_stage *ms, pl_msg *m, const pl_msg *in, uint32_t n, sl_err *err)
{
    if (!ms->mtp_kv)
        return sl_model_stage_pass_mtp(m, in, err);
    float *kv = ms->mtp_kv;
    int32_t *row = ms->mtp_row;
    ms->mtp_kv = NULL;
    ms->mtp_row = NULL;
    if (pl_msg_add(m, SLUICE__PAYLOAD_KIND__PL_MTP_KV, SLUICE__DTYPE__DT_F32, n, ms->mtp_cols, kv,
                   sl_free_cb, NULL, err)) {
        free(kv);
        free(row);
        return -1;
    }
    if (pl_msg_add(m, SLUICE__PAYLOAD_KIND__PL_MTP_ROW, SLUICE__DTYPE__DT_I32, n, 2, row, sl_free_cb,
                   NULL, err)) {
        free(row);
        return -1;
    }
    return 0;
}

int sl_model_stage_emit(sl_stage *s, const pl_msg *in, const sl_batch_rows *r, float *x, const int32_t *tok,
                        const sl_ple_rows *ple, const sl_emit *out, sl_err *err)
{
    const sl_model_stage *ms = s->impl;
    int d_model = ms->model->cfg.d_model;
    pl_msg m;
    if (sl_stage_begin_batch(&m, in, r, err))
        return emit_failed(x, ple, NULL);
    if (ple && ple->cols > 0 &&
        pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_PLE, SLUICE__DTYPE__DT_F32, r->n, ple->cols, ple->data,
                   ple->own ? sl_free_cb : NULL, NULL, err))
        return emit_failed(x, ple, &m);
    if (add_mtp_rows(s->impl, &m, in, r->n, err))
        return emit_failed(x, ple, &m);
    if ((tok && pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_TOKEN, SLUICE__DTYPE__DT_I32, r->n, 0, tok,
                           NULL, NULL, err)) ||
        pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_ACTIVATION, SLUICE__DTYPE__DT_F32, r->n,
                   (uint64_t)d_model, x, sl_free_cb, NULL, err))
        return emit_failed(x, NULL, &m); /* the message owns the per-layer inputs now */
    return sl_stage_send(s, r->n, &m, out, err);
}

float *sl_model_stage_activations(const pl_msg *in, uint32_t n, int d, sl_err *why)
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

void sl_model_stage_describe_ple(const sl_stage *s, char *buf, size_t size)
{
    const sl_model_stage *ms = s->impl;
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
