/* A whole model in one process (embed, every layer, head) with its own KV
 * cache and forward scratch: the draft model of speculative decoding, and
 * the target in the one-process speculative loop. One sequence. */
#ifndef SLUICE_DRAFT_H
#define SLUICE_DRAFT_H

#include <stdbool.h>
#include <stdint.h>

#include "model/forward.h"
#include "model/gguf.h"
#include "stages/spec.h"
#include "util/err.h"

typedef struct sl_lm sl_lm;

/* Loads path for contexts of n_ctx positions and batches of up to
 * max_tokens. */
int sl_lm_open(sl_lm **out, const char *path, int n_ctx, int max_tokens, sl_err *err);
void sl_lm_free(sl_lm *lm);
const sl_model *sl_lm_model(const sl_lm *lm);
sl_kv *sl_lm_kv(sl_lm *lm);
int sl_lm_len(const sl_lm *lm);
/* Keeps the first len positions (rollback after a rejection). */
void sl_lm_truncate(sl_lm *lm, int len);
/* Appends n tokens at the next positions; *logits points at n rows of
 * n_vocab (valid until the next call). */
int sl_lm_eval(sl_lm *lm, const int32_t *tokens, int n, const float **logits, sl_err *err);

/* Fails naming both files unless the draft's vocabulary (draft: its open
 * GGUF; NULL checks nothing) is the target's: same size, same pieces.
 * *n_vocab gets the target's size. */
int sl_vocab_check(const char *target_path, const gguf_file *draft, const char *draft_path,
                   int *n_vocab, sl_err *err);

/* Fails naming both files unless the vocabularies have the same size. */
int sl_lm_check_vocab(const sl_lm *target, const char *target_path, const sl_lm *draft,
                      const char *draft_path, sl_err *err);

/* How the one-process speculative loop drafts. */
typedef struct sl_spec_opts {
    int k;              /* tokens drafted a step; 0: plain decoding */
    bool auto_k;        /* k follows the acceptance rate, at most k */
    bool prompt_lookup; /* draft by n-gram match instead of a draft model */
} sl_spec_opts;

/* Greedy decoding of n_gen tokens after the prompt. The drafter (draft
 * model, or prompt lookup when opts says so; draft may then be NULL)
 * proposes tokens and the target verifies them with the last accepted
 * token as one batch. The target's cache ends holding prompt + n_gen - 1
 * positions. stats may be NULL. */
int sl_spec_generate_greedy(sl_lm *target, sl_lm *draft, const sl_spec_opts *opts,
                            const int32_t *prompt, int n_prompt, int n_gen, int32_t *out,
                            sl_spec_stats *stats, sl_err *err);

#endif
