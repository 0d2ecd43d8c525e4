#include "model/lm.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

int sl_lm_load_weights(sl_lm **out, const char *path, sl_err *err)
{
    *out = NULL;
    sl_lm *lm = calloc(1, sizeof *lm);
    if (!lm)
        return sl_fail(err, "out of memory opening %s", path);
    /* NULL part: the whole model, whatever its layer count */
    if (sl_model_load(&lm->model, path, NULL, err)) {
        sl_lm_free(lm);
        return -1;
    }
    *out = lm;
    return 0;
}

int sl_lm_load(sl_lm **out, const char *path, sl_err *err)
{
    if (sl_lm_load_weights(out, path, err))
        return -1;
    if (sl_tok_load_gguf(&(*out)->tok, (*out)->model->gguf, err)) {
        sl_wrap(err, "%s: tokenizer", path);
        sl_lm_free(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

int sl_lm_alloc(sl_lm *lm, const sl_lm_size *size, sl_err *err)
{
    const sl_config *c = &lm->model->cfg;
    int n_seqs = size->n_seqs > 0 ? size->n_seqs : 1, rows = size->max_tokens;
    if (rows < 1 || size->n_ctx < 1)
        return sl_fail(err, "a model needs a context and a batch of at least 1 (got %d and %d)",
                       size->n_ctx, rows);
    if (!size->window_rings && size->kv_type != SL_TYPE_F32)
        return sl_fail(err, "a KV cache without window rings is f32 only");
    lm->n_ctx = size->n_ctx;
    lm->max_tokens = rows;
    int rc = size->window_rings
                 ? sl_kv_new_typed(&lm->kv, c, 0, c->n_layer, n_seqs, size->n_ctx, size->kv_type,
                                   rows, err)
                 : sl_kv_new(&lm->kv, c, 0, c->n_layer, n_seqs, size->n_ctx, err);
    if (rc || sl_fwd_new(&lm->fwd, lm->model, rows, err))
        return -1;
    lm->x = malloc((size_t)rows * (size_t)c->d_model * sizeof *lm->x);
    lm->seq = calloc((size_t)rows, sizeof *lm->seq);
    lm->pos = malloc((size_t)rows * sizeof *lm->pos);
    if (!lm->x || !lm->seq || !lm->pos)
        return sl_fail(err, "out of memory for a batch of %d tokens", rows);
    return 0;
}

int sl_lm_open(sl_lm **out, const char *path, int n_ctx, int max_tokens, sl_err *err)
{
    sl_lm_size size = {.n_ctx = n_ctx, .max_tokens = max_tokens, .n_seqs = 1, .kv_type = SL_TYPE_F32};
    if (sl_lm_load(out, path, err))
        return -1;
    if (sl_lm_alloc(*out, &size, err)) {
        sl_lm_free(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

void sl_lm_free(sl_lm *lm)
{
    if (!lm)
        return;
    /* other modules' free functions are not promised to take NULL */
    if (lm->fwd)
        sl_fwd_free(lm->fwd);
    if (lm->kv)
        sl_kv_free(lm->kv);
    if (lm->tok)
        sl_tok_free(lm->tok);
    if (lm->model)
        sl_model_free(lm->model);
    free(lm->x);
    free(lm->logits);
    free(lm->seq);
    free(lm->pos);
    free(lm);
}

const sl_model *sl_lm_model(const sl_lm *lm) { return lm->model; }
sl_kv *sl_lm_kv(sl_lm *lm) { return lm->kv; }
int sl_lm_len(const sl_lm *lm) { return sl_kv_len(lm->kv, 0); }
void sl_lm_truncate(sl_lm *lm, int len) { sl_kv_truncate(lm->kv, 0, len); }

int sl_lm_batch(sl_lm *lm, const int32_t *tokens, int n, int pos0, sl_err *err)
{
    if (n < 1 || n > lm->max_tokens)
        return sl_fail(err, "batch of %d tokens outside 1..%d", n, lm->max_tokens);
    if (pos0 < 0 || pos0 + n > lm->n_ctx)
        return sl_fail(err, "positions %d..%d exceed the context of %d", pos0, pos0 + n - 1, lm->n_ctx);
    for (int i = 0; i < n; i++)
        lm->pos[i] = pos0 + i;
    sl_batch b = {.n_tokens = n, .token = tokens, .seq = lm->seq, .pos = lm->pos};
    if (sl_embed(lm->model, tokens, n, lm->x, err) || sl_forward_layers(lm->fwd, lm->kv, &b, lm->x, err))
        return -1;
    return 0;
}

int sl_lm_eval(sl_lm *lm, const int32_t *tokens, int n, const float **logits, sl_err *err)
{
    const sl_config *c = &lm->model->cfg;
    /* made on first use: perplexity and bench run the head on a few rows of
     * their own, and max_tokens rows of a 256K vocabulary are large */
    if (!lm->logits &&
        !(lm->logits = malloc((size_t)lm->max_tokens * (size_t)c->n_vocab * sizeof *lm->logits)))
        return sl_fail(err, "out of memory for %d rows of logits", lm->max_tokens);
    if (sl_lm_batch(lm, tokens, n, sl_lm_len(lm), err) ||
        sl_head(lm->fwd, lm->x, n, lm->logits, err))
        return -1;
    *logits = lm->logits;
    return 0;
}

/* ---- vocabulary comparison ---- */

/* Index of the first token whose piece differs, or -1 when all agree. */
static int first_piece_mismatch(const sl_tokenizer *a, const sl_tokenizer *b, int n_vocab)
{
    char pa[256], pb[256];
    for (int id = 0; id < n_vocab; id++) {
        int na = sl_tok_piece_bytes(a, id, pa, sizeof pa);
        int nb = sl_tok_piece_bytes(b, id, pb, sizeof pb);
        if (na != nb || (na > 0 && memcmp(pa, pb, (size_t)na) != 0))
            return id;
    }
    return -1;
}

/* The draft's vocabulary against the target's: same size, same pieces.
 * Tokenizers not given (NULL) are loaded from the files. */
static int compare_vocab(const gguf_file *target, const sl_tokenizer *target_tok,
                         const char *target_path, const gguf_file *draft,
                         const sl_tokenizer *draft_tok, const char *draft_path, sl_err *err)
{
    sl_config tc, dc;
    if (sl_config_from_gguf(&tc, target, err) || sl_config_from_gguf(&dc, draft, err))
        return -1;
    if (dc.n_vocab != tc.n_vocab)
        return sl_fail(err, "draft %s has a vocabulary of %d tokens but target %s has %d",
                       draft_path, dc.n_vocab, target_path, tc.n_vocab);
    sl_tokenizer *tt = NULL, *td = NULL;
    int rc = 0;
    if ((!target_tok && sl_tok_load_gguf(&tt, target, err)) ||
        (!draft_tok && sl_tok_load_gguf(&td, draft, err))) {
        rc = -1;
    } else {
        int id = first_piece_mismatch(target_tok ? target_tok : tt, draft_tok ? draft_tok : td,
                                      tc.n_vocab);
        if (id >= 0)
            rc = sl_fail(err, "draft %s and target %s differ at vocabulary piece %d", draft_path,
                         target_path, id);
    }
    if (tt)
        sl_tok_free(tt);
    if (td)
        sl_tok_free(td);
    return rc;
}

int sl_vocab_check(const char *target_path, const gguf_file *draft, const char *draft_path,
                   int *n_vocab, sl_err *err)
{
    gguf_file *tf;
    if (gguf_open(&tf, target_path, err))
        return -1;
    sl_config tc;
    int rc = sl_config_from_gguf(&tc, tf, err);
    if (rc == 0)
        *n_vocab = tc.n_vocab;
    /* a model drafting for itself needs no comparison */
    char real_t[PATH_MAX], real_d[PATH_MAX];
    bool same_file = draft && realpath(target_path, real_t) && realpath(draft_path, real_d) &&
                     strcmp(real_t, real_d) == 0;
    if (rc == 0 && draft && !same_file)
        rc = compare_vocab(tf, NULL, target_path, draft, NULL, draft_path, err);
    gguf_close(tf);
    return rc;
}

int sl_lm_check_vocab(const sl_lm *target, const char *target_path, const sl_lm *draft,
                      const char *draft_path, sl_err *err)
{
    return compare_vocab(target->model->gguf, target->tok, target_path, draft->model->gguf,
                         draft->tok, draft_path, err);
}
