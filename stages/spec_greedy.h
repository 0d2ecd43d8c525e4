/* The one-process speculative loop: greedy decoding where a drafter (a
 * draft model, or prompt lookup) proposes tokens and the target model
 * verifies them in one batch. Both models are whole (model/lm.h); the
 * arithmetic is stages/spec.h's. The pipeline's draft stage does the same
 * over many requests. */
#ifndef SLUICE_SPEC_GREEDY_H
#define SLUICE_SPEC_GREEDY_H

#include <stdbool.h>
#include <stdint.h>

#include "model/lm.h"
#include "stages/spec.h"
#include "util/err.h"

/* How the one-process speculative loop drafts. */
typedef struct sl_spec_opts {
    int k;              /* tokens drafted a step; 0: plain decoding */
    bool auto_k;        /* k chosen step by step (stages/spec_adapt.h), at most k */
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
