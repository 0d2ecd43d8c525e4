/* Speculative decoding arithmetic: accepting drafted tokens against the
 * target's distributions (greedy and speculative sampling), the
 * prompt-lookup drafter, and choosing how many tokens to draft.
 *
 * Everything here works on plain arrays so the sample stage, the draft
 * stage and the tests share one implementation; no sockets, no model. */
#ifndef SLUICE_SPEC_H
#define SLUICE_SPEC_H

#include <stdbool.h>
#include <stdint.h>

#include "msg/assign.h"
#include "stages/sampler.h"

/* Most tokens drafted in one step (an assignment's limit too). */
#define SL_SPEC_K_MAX PL_SPEC_K_MAX

/* Greedy acceptance. target holds the target's argmax at each of the k+1
 * verified positions (target[i] follows draft[0..i)). Writes the accepted
 * drafted tokens followed by one target token (the correction at the first
 * mismatch, or the bonus token after all k) to out (capacity k+1) and
 * returns how many it wrote: accepted + 1. */
int sl_spec_accept_greedy(const int32_t *target, const int32_t *draft, int k, int32_t *out);

/* Speculative sampling. p: k+1 rows of the target's transformed
 * distribution over n_vocab; q: k rows of the draft's distribution that
 * draft[i] was sampled from. Accepts draft[i] with probability
 * min(1, p/q); at the first rejection samples from normalised
 * max(0, p - q); after all k samples the bonus token from p[k]. resid is
 * scratch of n_vocab floats. Writes the emitted tokens to out (capacity
 * k+1) and returns their count (accepted + 1). The emitted tokens follow
 * exactly the distribution of sampling p step by step. */
int sl_spec_accept_sampled(const float *p, const float *q, const int32_t *draft, int k,
                           int n_vocab, sl_rng *rng, float *resid, int32_t *out);

/* Samples an index from a dense distribution (sums to ~1). */
int32_t sl_spec_sample_dense(const float *probs, int n, sl_rng *rng);

/* The distribution the sampler would draw from, as a dense vector of
 * n_vocab probabilities: temperature, top-k, top-p and min-p applied
 * (one-hot on the argmax when greedy). logits are modified; ids and probs
 * are scratch of n_vocab entries each. Applying the same transforms to
 * the draft's and the target's logits keeps the output exactly the
 * target's transformed distribution. */
void sl_spec_dense_probs(sl_sampler *s, float *logits, int n_vocab, int32_t *ids,
                         float *probs, float *dense);

/* Prompt lookup: finds the latest earlier occurrence of the last n tokens
 * of hist (n from ngram_max down to ngram_min) and proposes up to k
 * tokens that followed it. Returns the count written to out (0 when no
 * n-gram matches). */
int sl_prompt_lookup(const int32_t *hist, int n_hist, int ngram_min, int ngram_max, int k,
                     int32_t *out);

/* Expected tokens emitted by one verification of k drafted tokens when
 * each is accepted independently with probability alpha. */
double sl_spec_expected_tokens(double alpha, int k);

/* Running acceptance statistics (reported; spec_adapt.c chooses k). */
typedef struct sl_spec_stats {
    long steps;          /* verifications */
    long drafted;        /* tokens proposed */
    long accepted;       /* proposed tokens accepted */
} sl_spec_stats;

void sl_spec_stats_init(sl_spec_stats *st);
/* Records one verification: k drafted, n_accepted of them accepted. */
void sl_spec_stats_add(sl_spec_stats *st, int k, int n_accepted);
/* Overall acceptance rate (accepted / drafted), 0 when nothing drafted. */
double sl_spec_acceptance(const sl_spec_stats *st);
/* Mean tokens emitted per verification (accepted + 1). */
double sl_spec_mean_emitted(const sl_spec_stats *st);

#endif
