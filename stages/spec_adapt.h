/* Adaptive k: how many tokens to draft next, from what drafting has cost
 * and earned so far. One controller follows one stream of verifications
 * (a request): each step it is told how many tokens were drafted, how
 * many the target accepted, and the step's wall time (drafting on the
 * critical path plus the verification's round trip); it answers the next
 * k, 0 meaning plain decoding.
 *
 * The model: a step drafting k tokens takes t_plain + k * t_token and
 * emits 1 + alpha + ... + alpha^k tokens. Drafting is chosen only when
 * its predicted tokens per second beat plain decoding by a margin; a
 * drafter that does not pay (a compute-bound target verifies k+1 rows in
 * about k+1 times a row, or the drafts are rejected) falls back to plain
 * decoding and probes with a short draft at growing intervals, so it
 * costs at most a few per cent and still notices text turning easy.
 *
 * Pure arithmetic on observations, no clock: the draft stage, prompt
 * lookup, the one-process loop and any other drafter share it, and the
 * tests drive it with synthetic numbers. */
#ifndef SLUICE_SPEC_ADAPT_H
#define SLUICE_SPEC_ADAPT_H

#include <stdbool.h>

typedef struct spa_ctl {
    int k_max;          /* most tokens a step may draft */
    /* what has been learned (EWMA) */
    double alpha;       /* per drafted token acceptance */
    double t_plain;     /* seconds of a plain step */
    double t_token;     /* extra seconds a drafted token adds to a step */
    int n_plain, n_spec;/* observations behind t_plain and t_token */
    int cold;           /* first plain steps still to ignore (cold caches) */
    long n_alpha;       /* drafted tokens behind alpha */
    /* the schedule */
    bool drafting;      /* drafting pays: every step drafts */
    int gap;            /* plain steps between probes while not drafting */
    int since;          /* steps since the last probe (or plain refresh) */
    long probes;        /* probes made while not drafting (statistics) */
} spa_ctl;

/* A controller for up to k_max tokens a step, knowing nothing yet. */
void spa_init(spa_ctl *c, int k_max);

/* Starts c from what prior has learned about costs and acceptance (a
 * new request on a stage that has served others), with a fresh
 * schedule. */
void spa_init_from(spa_ctl *c, const spa_ctl *prior);

/* The k for the next step, 0..k_max (0: plain decoding). Advances the
 * schedule: call once per step. */
int spa_next_k(spa_ctl *c);

/* One step's outcome: drafted tokens (0 for a plain step, may be fewer
 * than asked, as prompt lookup finds), how many of them the target
 * accepted, and the step's seconds. Steps that are not comparable (a
 * prefill, a catch-up of many tokens) should not be reported. */
void spa_observe(spa_ctl *c, int drafted, int accepted, double step_s);

/* The same in two halves, for a drafter batching several streams: the
 * cost of a step that verified drafted tokens in all (every stream's),
 * and this stream's acceptance. */
void spa_observe_cost(spa_ctl *c, int drafted, double step_s);
void spa_observe_accept(spa_ctl *c, int drafted, int accepted);

/* Predicted speed of drafting k tokens a step over plain decoding
 * (tokens per second, ratio); 1 for k = 0 or before any measurement. */
double spa_gain(const spa_ctl *c, int k);

/* The k in [0, k_max] with the best predicted gain (0 when none beats
 * plain decoding). */
int spa_best_k(const spa_ctl *c, double *gain);

#endif
