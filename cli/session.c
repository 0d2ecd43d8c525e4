#include "cli/session.h"

#include <stdlib.h>
#include <string.h>

int cli_session_load(cli_session *s, const char *path, sl_err *err)
{
    memset(s, 0, sizeof *s);
    if (sl_model_load(&s->model, path, NULL, err))
        return -1;
    if (sl_tok_load_gguf(&s->tok, s->model->gguf, err)) {
        sl_wrap(err, "%s: tokenizer", path);
        cli_session_free(s);
        return -1;
    }
    return 0;
}

int cli_session_alloc(cli_session *s, int n_ctx, int max_batch, sl_err *err)
{
    const sl_config *c = &s->model->cfg;
    s->n_ctx = n_ctx;
    s->max_batch = max_batch;
    if (sl_kv_new_typed(&s->kv, c, 0, c->n_layer, 1, n_ctx, (sl_type)s->kv_type, max_batch, err) || sl_fwd_new(&s->fwd, s->model, max_batch, err))
        return -1;
    s->x = malloc((size_t)max_batch * (size_t)c->d_model * sizeof *s->x);
    s->seq = calloc((size_t)max_batch, sizeof *s->seq);
    s->pos = malloc((size_t)max_batch * sizeof *s->pos);
    if (!s->x || !s->seq || !s->pos)
        return sl_fail(err, "out of memory for a batch of %d tokens", max_batch);
    return 0;
}

void cli_session_free(cli_session *s)
{
    free(s->x);
    free(s->seq);
    free(s->pos);
    /* other modules' free functions are not promised to take NULL */
    if (s->fwd)
        sl_fwd_free(s->fwd);
    if (s->kv)
        sl_kv_free(s->kv);
    if (s->tok)
        sl_tok_free(s->tok);
    if (s->model)
        sl_model_free(s->model);
    memset(s, 0, sizeof *s);
}

int cli_session_batch(cli_session *s, const int32_t *tokens, int n, int pos0, sl_err *err)
{
    if (n <= 0 || n > s->max_batch)
        return sl_fail(err, "batch of %d tokens (limit %d)", n, s->max_batch);
    if (pos0 + n > s->n_ctx)
        return sl_fail(err, "positions %d..%d exceed the context of %d", pos0, pos0 + n - 1, s->n_ctx);
    for (int i = 0; i < n; i++)
        s->pos[i] = pos0 + i;
    sl_batch b = {.n_tokens = n, .token = tokens, .seq = s->seq, .pos = s->pos};
    if (sl_embed(s->model, tokens, n, s->x, err) || sl_forward_layers(s->fwd, s->kv, &b, s->x, err))
        return -1;
    return 0;
}
