/* Adaptive k: how many tokens to draft next, from what drafting has cost
 * and earned so far. One controller follows one stream of verifications
 * (a request): each step it is told how many tokens were drafted, how
 * many the target accepted, and the step's wall time (drafting on the
 * critical path plus the verification's round trip); it answers the next
 * k, 0 meaning plain decoding.
 *
 * The model: a step drafting k tokens takes t_plain + t_fixed + k *
 * t_token and emits 1 + alpha + ... + alpha^k tokens (t_fixed, t_token: a
 * line fitted to the drafting steps' excess over a plain step, with
 * fading weights; through the origin while they all drafted about one k). Drafting is chosen only when
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

/* Plain steps measured before the first probe: a probe's cost is read
 * against them, so t_plain must be right first. A drafted token's cost is
 * the step's excess over t_plain: a t_plain too high by 30% (two warm-up
 * steps in a mean of two) made a dear drafter (a third of a step a token)
 * look free, and one accepting 1 token in 10 drafted for 70 steps. A
 * draft model takes in all but these last tokens of its first probe's
 * window at prefill (stages/draft.c). */
#define SPA_WARM_PLAIN 8

typedef struct spa_ctl {
    int k_max;          /* most tokens a step may draft */
    /* what has been learned (EWMA) */
    double alpha;       /* per drafted token acceptance */
    double t_plain;     /* seconds of a plain step */
    double t_token;     /* extra seconds a drafted token adds to a step */
    double t_fixed;     /* extra seconds a drafting step adds whatever its k
                         * (fitted once steps of different k are in; 0 before) */
    double m_k, m_kk, m_y, m_ky; /* fading means over drafted steps of k, k^2,
                         * the step's excess over t_plain, k times it: the fit */
    int n_plain, n_spec;/* observations behind t_plain and t_token */
    int cold;           /* first plain steps still to ignore (cold caches) */
    long n_alpha;       /* drafted tokens behind alpha */
    double t_probe;     /* seconds a probe costs beyond its step: a draft
                         * model's catch-up (spa_observe_probe); 0 for others */
    bool free_alpha;    /* the drafter scores what it would have drafted on
                         * every plain step (spa_observe_alpha: prompt
                         * lookup), so a probe after the first is made only
                         * while that acceptance could pay (spa_hopeful) */
    /* the schedule */
    bool drafting;      /* drafting pays: every step drafts */
    int gap;            /* plain steps between probes while not drafting */
    bool left;          /* drafting stopped and no probe since: the first
                         * probe comes SPA_GAP_MIN steps later whatever
                         * probes cost (a draft model's cache is nearly
                         * current then; a dip in acceptance that stopped
                         * a paying drafter kept it off for ~250 steps) */
    int since;          /* steps since the last probe (or plain refresh) */
    long probes;        /* probes made while not drafting (statistics) */
    long declined;      /* probes that drafted nothing (spa_decline) */
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

/* Acceptance seen without drafting: of n tokens of the text, the drafter
 * would have proposed hits (a draft model evaluating the text it catches
 * up on predicts each next token; for greedy decoding that is exactly
 * whether a drafted token would be accepted). Each counts as a drafted
 * token's outcome. */
void spa_observe_alpha(spa_ctl *c, int n, int hits);

/* The same for a sampled request: n tokens whose expected acceptances
 * (each in [0, 1]) sum to sum. A token y the target sampled from p, scored
 * min(1, q(y) / p(y)) against the draft's q, has for its expectation the
 * acceptance of a token drafted there, sum over x of min(p(x), q(x)): the
 * mean of such scores estimates a sampled request's acceptance without
 * drafting (stages/draft.c); the draft's q(y) alone (its mean sum p q) erred
 * far low. Each counts as a drafted token's outcome. */
void spa_observe_alpha_sum(spa_ctl *c, int n, double sum);

/* Tokens a probe drafts: one, or, where the acceptance seen so far says
 * a block would mostly be accepted, the run expected to be kept (up to
 * 4), so the part of a step's cost that does not grow with k is spread as
 * it will be while drafting. A draft model sees its acceptance on the
 * text while catching up, before it drafts: it asks again then. */
int spa_probe_k(const spa_ctl *c);

/* Whether a probe is worth making: drafting could beat plain decoding at
 * the acceptance seen so far (the prior counting as one sample) with a
 * drafted token costing at least least_token_s seconds, and, once a probe
 * has measured it, three quarters of its measured cost (half of it fixed
 * while the probes all drafted one k). True before any acceptance sample.
 * A drafter that sees its acceptance without drafting asks it before
 * drafting: prompt lookup on every plain step (spa_hopeful: a probe after
 * the first waits for it), a draft model after a probe's catch-up (a
 * greedy request: it drafts nothing where it says no, spa_decline). */
bool spa_worth_probe(const spa_ctl *c, double least_token_s);
bool spa_hopeful(const spa_ctl *c); /* spa_worth_probe(c, 0) */

/* The probe just asked for drafted nothing: the acceptance its drafter saw
 * said it could not pay (spa_worth_probe). The schedule goes on as after a
 * probe; a first probe declined is not asked for at once again. */
void spa_decline(spa_ctl *c);

/* What a probe costs beyond its step (seconds): a draft model must bring
 * its cache up to date first. Once the costs are known (or drafting is
 * clearly far from paying) probes come far enough apart that they cost at
 * most SPA_PROBE_SHARE of plain decoding (stages/spec_adapt.c). */
void spa_observe_probe(spa_ctl *c, double extra_s);

/* The least a drafted token costs, given what a row of the draft model's
 * catch-up cost: the draft's own row and the target's verification of it,
 * which costs at least as much (the target is the larger model, and a
 * catch-up's rows, like a verification's, are a batch's rows, while the
 * drafted row runs alone). The drafters pass it to spa_worth_probe. */
static inline double spa_least_token_s(double draft_row_s)
{
    return 2.0 * draft_row_s;
}

/* The clock of one request's steps, which both drafters that pace
 * themselves by step cost share (the draft stage before the target, the
 * mtp stage after sample): a step starts when the request's batch leaves
 * or its tokens arrive, counting extra seconds already spent on its
 * critical path (drafting before the batch left), and ends when the
 * request's next batch or tokens arrive. Times are the caller's clock
 * (this file reads none). */
typedef struct spa_clock {
    double t0, extra_s;
    int drafted;        /* tokens the step verifies (whose cost it shows) */
    bool running;
} spa_clock;

void spa_clock_start(spa_clock *k, double t0, double extra_s, int drafted);

/* Ends the running step at t. When there was one and it is comparable
 * with others (the caller's test: one row of the request's own, going
 * on from the step before), c observes its cost (spa_observe_cost) and
 * *prior, what a new request on the stage starts from, takes c. Returns
 * whether it was observed. */
bool spa_clock_stop(spa_clock *k, double t, bool comparable, spa_ctl *c, spa_ctl *prior);

/* A draft model's cache for a request holds its text's first token at
 * position 0 and tokens off+1.. at positions 1.. (off 0: the text as it
 * is), up to cached tokens of the text (0: empty). Before drafting after a
 * text of n_text tokens, the offset to use: off itself (catch up on what
 * is missing), or a new one after which the cache is rebuilt: 0 (all the
 * text) when drafting (fixed k, or adaptive k while drafting pays: the
 * drafts see all the context, as without windows), else n_text - window
 * when catching up would take more than window tokens (a probe after a
 * long run of plain steps: it needs a fair draft, not all the context,
 * and costs window tokens however long the run). */
int spa_cache_offset(int n_text, int cached, int off, bool drafting, int window);

/* Predicted speed of drafting k tokens a step over plain decoding
 * (tokens per second, ratio); 1 for k = 0 or before any measurement. */
double spa_gain(const spa_ctl *c, int k);

/* The k in [0, k_max] with the best predicted gain (0 when none beats
 * plain decoding). */
int spa_best_k(const spa_ctl *c, double *gain);

#endif
