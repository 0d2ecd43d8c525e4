/* A whole model in one object: its weights (embedding, every layer, head)
 * loaded once, its tokenizer, a KV cache and forward scratch. What `run`'s
 * one-process tools, `perplexity`, `bench`, the draft stage and the
 * one-process speculative loop share. Sequence 0 is the one sl_lm_batch and
 * sl_lm_eval run; a cache of more sequences (the draft stage's, one per
 * request) is driven through lm->kv and lm->fwd directly. */
#ifndef SLUICE_LM_H
#define SLUICE_LM_H

#include <stdbool.h>
#include <stdint.h>

#include "model/forward.h"
#include "model/gguf.h"
#include "model/kv.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "util/err.h"

typedef struct sl_lm {
    sl_model *model;
    sl_tokenizer *tok;
    sl_kv *kv;
    sl_fwd *fwd;
    int n_ctx;
    int max_tokens;  /* rows a batch may hold */
    float *x;        /* max_tokens rows of d_model: the last batch's final activations */
    float *logits;   /* max_tokens rows of n_vocab, made by the first sl_lm_eval */
    int32_t *seq;    /* max_tokens zeros */
    int32_t *pos;    /* max_tokens positions */
} sl_lm;

/* The cache and scratch sl_lm_alloc makes. */
typedef struct sl_lm_size {
    int n_ctx;       /* positions per sequence */
    int max_tokens;  /* rows per batch */
    int n_seqs;      /* sequences in the cache (0 counts as 1) */
    sl_type kv_type; /* F32, F16, BF16 or Q8_0 */
    /* Sliding-window layers keep only window + max_tokens rows (less
     * memory), so the cache cannot be cut back past a batch: false for
     * speculative decoding, which rolls rejected tokens back. */
    bool window_rings;
} sl_lm_size;

/* Loads path's whole model and its tokenizer; no cache yet. */
int sl_lm_load(sl_lm **out, const char *path, sl_err *err);
/* The same without the tokenizer (tok stays NULL): for a draft stage, which
 * sees token ids only (the driver checks the vocabularies agree). */
int sl_lm_load_weights(sl_lm **out, const char *path, sl_err *err);
int sl_lm_alloc(sl_lm *lm, const sl_lm_size *size, sl_err *err);
/* Load and alloc for speculative decoding: one sequence of n_ctx positions
 * in f32 without rings, batches of up to max_tokens. */
int sl_lm_open(sl_lm **out, const char *path, int n_ctx, int max_tokens, sl_err *err);
void sl_lm_free(sl_lm *lm);

const sl_model *sl_lm_model(const sl_lm *lm);
sl_kv *sl_lm_kv(sl_lm *lm);
/* Positions sequence 0 holds. */
int sl_lm_len(const sl_lm *lm);
/* Keeps the first len positions of sequence 0 (rollback after a rejection). */
void sl_lm_truncate(sl_lm *lm, int len);

/* Runs n <= max_tokens tokens at positions pos0.. of sequence 0 through the
 * embedding and every layer; their final activations are left in lm->x. */
int sl_lm_batch(sl_lm *lm, const int32_t *tokens, int n, int pos0, sl_err *err);
/* Appends n tokens at sequence 0's next positions and runs the head too;
 * *logits points at n rows of n_vocab (valid until the next call). */
int sl_lm_eval(sl_lm *lm, const int32_t *tokens, int n, const float **logits, sl_err *err);

/* Fails naming both files unless the draft's vocabulary (draft: its open
 * GGUF; NULL checks nothing) is the target's: same size, same pieces.
 * *n_vocab gets the target's size. */
int sl_vocab_check(const char *target_path, const gguf_file *draft, const char *draft_path,
                   int *n_vocab, sl_err *err);
/* The same between two loaded models. */
int sl_lm_check_vocab(const sl_lm *target, const char *target_path, const sl_lm *draft,
                      const char *draft_path, sl_err *err);

#endif
