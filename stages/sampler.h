/* Sampling a token from logits: greedy, temperature, top-k, top-p, min-p,
 * repetition penalty, with a seeded RNG so the same seed gives the same text. */
#ifndef SLUICE_SAMPLER_H
#define SLUICE_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>

typedef struct sl_sampling {
    float temperature;   /* <= 0: greedy */
    int top_k;           /* <= 0: off */
    float top_p;         /* >= 1: off */
    float min_p;         /* <= 0: off */
    float repeat_penalty;/* 1: off */
    int repeat_last_n;   /* tokens considered for the penalty */
    uint64_t seed;
} sl_sampling;

void sl_sampling_defaults(sl_sampling *s);

/* xoshiro256** seeded by splitmix64. */
typedef struct sl_rng {
    uint64_t s[4];
} sl_rng;

void sl_rng_seed(sl_rng *r, uint64_t seed);
uint64_t sl_rng_next(sl_rng *r);
/* Uniform in [0, 1). */
double sl_rng_uniform(sl_rng *r);

/* Work space for one sequence's sampling; sized for n_vocab once. */
typedef struct sl_sampler sl_sampler;

sl_sampler *sl_sampler_new(const sl_sampling *p, int n_vocab);
void sl_sampler_free(sl_sampler *s);
/* Picks a token from logits (n_vocab floats, modified in place); recent
 * holds the last n_recent tokens for the repetition penalty. */
int32_t sl_sampler_pick(sl_sampler *s, float *logits, const int32_t *recent, int n_recent);
/* The probability the token the last pick returned had in the distribution
 * it was drawn from (after the penalty and the filters; 1 when greedy). */
float sl_sampler_last_prob(const sl_sampler *s);
/* Whether picks are the argmax (temperature 0). */
bool sl_sampler_greedy(const sl_sampler *s);
/* The repetition penalty alone (what pick applies first). */
void sl_sampler_penalize(sl_sampler *s, float *logits, const int32_t *recent, int n_recent);
/* Index of the largest logit (lowest index on ties). */
int32_t sl_argmax(const float *logits, int n);

/* The candidate set the filters keep (tests): fills ids (capacity n_vocab)
 * and probabilities after temperature, top-k, top-p and min-p; returns the
 * count. */
int sl_sampler_candidates(sl_sampler *s, float *logits, int32_t *ids, float *probs);

#endif
