/* The forward pass of a model part on a batch of tokens.
 *
 * A batch is structure-of-arrays: n_tokens entries of token id, sequence slot
 * and position, plus n_tokens rows of d_model activations. Tokens of several
 * sequences may be mixed; the tokens of one sequence must appear in order
 * with consecutive positions starting at that sequence's KV length. Every
 * stage of a pipeline calls these same functions, which is why a split run
 * is bit-exact with a one-process run. */
#ifndef SLUICE_FORWARD_H
#define SLUICE_FORWARD_H

#include <stdint.h>

#include "model/kv.h"
#include "model/model.h"

typedef struct sl_batch {
    int n_tokens;
    const int32_t *token;
    const int32_t *seq;
    const int32_t *pos;
    /* Gemma 4, optional: the per-layer inputs of the part's layers, gathered
     * upstream (ple.h's PLE_AT_EMBED): slice (token i, part layer j) at
     * ple + i * ple_stride + j * ple_layer_stride. NULL: the part computes
     * them from token. */
    const float *ple;
    int64_t ple_stride, ple_layer_stride;
} sl_batch;

/* Scratch memory for batches of up to max_tokens, sized once. */
typedef struct sl_fwd sl_fwd;

int sl_fwd_new(sl_fwd **out, const sl_model *m, int max_tokens, sl_err *err);
void sl_fwd_free(sl_fwd *f);
int sl_fwd_max_tokens(const sl_fwd *f);

/* Wall time per class of op, for `sluice bench`: norms before blocks,
 * matmuls of the layers, attention (q/k norms, RoPE, cache writes and the
 * attention itself), element-wise work (activation, post-norms, residual
 * adds) and the head (final norm, lm_head, soft-cap). */
/* The ops of a layer step and the head, one by one (`sluice bench
 * --profile`). */
typedef enum sl_fwd_op {
    SL_OP_ATTN_NORM, SL_OP_QKV, SL_OP_QK_PREP, SL_OP_ATTN, SL_OP_O, SL_OP_ATTN_RES,
    SL_OP_FFN_NORM, SL_OP_GATE_UP, SL_OP_ACT, SL_OP_DOWN, SL_OP_FFN_RES, SL_OP_PLE_OUT,
    SL_OP_HEAD_NORM, SL_OP_HEAD, SL_OP_SOFTCAP, SL_OP_N
} sl_fwd_op;
const char *sl_fwd_op_name(sl_fwd_op op);

/* One op's totals: wall time, bytes it reads from weights and KV cache, the
 * parallel calls (barriers) it made, the caller's wait at their barriers
 * after it ran out of chunks, every thread's time in their chunks, and the
 * time its matmul spent quantising its activations (all in seconds). */
typedef struct sl_op_prof {
    double s, bytes, calls, wait, busy, quant;
} sl_op_prof;

typedef struct sl_fwd_times {
    double norm, matmul, attention, elementwise, head;
    double ple; /* per-layer inputs: embedding row, projection, gather + dequantise */
    sl_op_prof op[SL_OP_N];
} sl_fwd_times;

/* When t is not NULL, every later call adds its times to *t. */
void sl_fwd_set_times(sl_fwd *f, sl_fwd_times *t);

/* x[n][d_model] = embedding rows of tokens, scaled by embed_scale. */
int sl_embed(const sl_model *m, const int32_t *tokens, int n, float *x, sl_err *err);

/* Runs layers [part.l0, part.l1) on x in place, storing keys and values of
 * every token in kv. Models with per-layer embeddings (Gemma 4) need
 * b->token: each part computes its own layers' per-layer inputs from the
 * token ids (ple.h's PLE_AT_LAYERS), so only the residual row and the id
 * cross a stage boundary. */
int sl_forward_layers(sl_fwd *f, sl_kv *kv, const sl_batch *b, float *x, sl_err *err);

/* Gemma 4's per-layer inputs of layers [m->ple_l0, m->ple_l1) for n tokens
 * whose scaled main embedding rows are x0: out[n][(l1 - l0) * n_embd_per_layer].
 * The same function serves a layer part (its own layers) and an embed part
 * loaded with part.ple (all layers), so both placements give the same bits.
 * t (optional) gets the time added to its ple field. */
int sl_ple_inputs(const sl_model *m, const int32_t *tokens, const float *x0, int n, float *proj,
                  float *out, int64_t row_stride, int64_t layer_stride, sl_fwd_times *t,
                  sl_err *err);

/* logits[n][n_vocab] from final-layer activations (final norm, lm_head,
 * final soft-cap). x is not modified. */
int sl_head(sl_fwd *f, const float *x, int n, float *logits, sl_err *err);

#endif
