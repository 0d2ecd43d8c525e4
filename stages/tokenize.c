/* The tokenize stage: a pass-through (the driver tokenizes); it checks
 * a batch's rows like every stage and sends them on. */
#include "stages/kinds.h"

static int tokenize_process(sl_stage *s, pl_msg *in, const sl_emit *out, sl_err *err)
{
    if (in->hdr->kind != SLUICE__MSG_KIND__MSG_BATCH)
        return sl_stage_route_other(s, in, out, err);
    sl_batch_rows r;
    sl_err why;
    if (sl_stage_read_rows(s, in, &r, &why))
        return sl_stage_fail_batch(s, in, out, why.msg, err);
    const int32_t *tok = pl_msg_i32(in, SLUICE__PAYLOAD_KIND__PL_TOKEN, r.n, &why);
    if (!tok)
        return sl_stage_fail_batch(s, in, out, why.msg, err);
    pl_msg m;
    if (sl_stage_begin_batch(&m, in, &r, err))
        return -1;
    if (pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_TOKEN, SLUICE__DTYPE__DT_I32, r.n, 0, tok, NULL,
                   NULL, err)) {
        pl_msg_close(&m);
        return -1;
    }
    return out->send(out->ctx, &m, err);
}

int sl_tokenize_stage_new(sl_stage *s, const sl_stage_spec *spec, sl_err *err)
{
    (void)spec;
    (void)err;
    s->process = tokenize_process;
    return 0;
}
