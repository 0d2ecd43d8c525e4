/* A loaded model with its tokenizer, one-sequence KV cache and forward
 * scratch: what `run` and `perplexity` share. */
#ifndef SLUICE_CLI_SESSION_H
#define SLUICE_CLI_SESSION_H

#include "model/forward.h"
#include "model/kv.h"
#include "model/model.h"
#include "model/tokenizer.h"

typedef struct cli_session {
    sl_model *model;
    sl_tokenizer *tok;
    sl_kv *kv;
    sl_fwd *fwd;
    int n_ctx;
    int max_batch;
    int kv_type;    /* sl_type of the cache, set before cli_session_alloc (0: f32) */
    float *x;       /* max_batch rows of d_model */
    int32_t *seq;   /* max_batch zeros */
    int32_t *pos;   /* max_batch positions */
} cli_session;

/* Loads the whole model and its tokenizer. */
int cli_session_load(cli_session *s, const char *path, sl_err *err);
/* Sizes the cache and the scratch once the context length is known. */
int cli_session_alloc(cli_session *s, int n_ctx, int max_batch, sl_err *err);
void cli_session_free(cli_session *s);

/* Runs n <= max_batch tokens at positions pos0.. of sequence 0 through the
 * embedding and every layer; their final activations are left in s->x. */
int cli_session_batch(cli_session *s, const int32_t *tokens, int n, int pos0, sl_err *err);

#endif
