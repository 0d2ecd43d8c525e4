#include "stages/spec_adapt.h"

#include "stages/spec.h"

#include <math.h>
#include <string.h>

/* A fresh controller's first plain steps are not measured: they run with
 * cold caches (seen: 1.3x the steady step on the tiny pair). */
#define SPA_COLD_PLAIN 2
/* Tokens a probe drafts: one is enough to measure what a drafted token
 * costs and whether it is accepted, and costs least when it does not pay
 * (a compute-bound target verifies two rows in about twice one). But a
 * step that drafts pays a part that does not grow with k (the draft
 * model's first row after the text, the verification's fixed work): on
 * the tiny pair a one-token step cost 0.9 of a plain step more, an
 * eight-token step 0.6 a token, so one-token probes priced every token at
 * the first one's cost and a pair accepting 98% at 1.28x (k = 8) looked
 * as if it could never pay. Where the acceptance seen (a probe's outcome
 * or more, with the prior) says a block would mostly be accepted, a probe drafts
 * the run it expects to keep whole (alpha^k >= SPA_PROBE_KEEP), up to SPA_PROBE_K_LONG:
 * the fixed part then weighs as it will while drafting. */
#define SPA_PROBE_K 1
#define SPA_PROBE_K_LONG 4
#define SPA_PROBE_KEEP 0.6
/* Plain steps between probes: doubles after each probe that finds no
 * gain, so a drafter that never pays costs well under 1% in probes. */
#define SPA_GAP_MIN 8
#define SPA_GAP_MAX 128
/* Plain steps between probes when drafting could not pay even if every
 * drafted token were accepted (a drafted token costs about a plain step):
 * a probe then only re-measures the costs (and a draft model's probe first
 * rebuilds a window of its cache: stages/draft.c). */
#define SPA_GAP_COST_BOUND 1024
/* Most of plain decoding's time that probes may cost where they are dear
 * (a draft model's catch-up, spa_observe_probe): their gap is at least
 * (t_probe + a drafted token's cost) / (SPA_PROBE_SHARE * t_plain) steps,
 * up to SPA_GAP_COST_BOUND; but while fewer than SPA_COST_SETTLED probes
 * have measured a drafted token's cost and drafting is predicted within
 * SPA_CLOSE of plain decoding, the gaps double from SPA_GAP_MIN as
 * elsewhere: one step's noise in the first probe (a drafted token measured
 * at 1.6x its cost) hid a pair that gains 1.25x for 700 steps (and while
 * the probes drafted one k, half their excess counts as fixed there). */
#define SPA_PROBE_SHARE 0.01
#define SPA_COST_SETTLED 4
#define SPA_CLOSE 0.9
/* While drafting, one plain step in this many keeps t_plain current (the
 * step time grows with the context); one in SPA_REFRESH_EARLY while fewer
 * than SPA_PLAIN_SETTLED plain steps are behind it. */
#define SPA_REFRESH 64
#define SPA_REFRESH_EARLY 16
#define SPA_PLAIN_SETTLED 16
/* spa_worth_probe's discount on a drafted token's measured cost (their
 * fading mean; while the probes all drafted one k, half of it counts as
 * fixed, as in cost_gap): one noisy probe measured a token at 1.6x its
 * cost, and a probe of one token prices every token of a long block at
 * the block's fixed part too, which hid lookup's gain on repeating text
 * when the cost was trusted whole. */
#define SPA_HOPE_COST 0.75
/* Hysteresis on the predicted gain: drafting starts above ENTER and stops
 * below EXIT, so noise does not flip it every step. */
#define SPA_ENTER 1.05
#define SPA_EXIT 1.0
/* Fading weights of the running estimates: about the last 10 steps (and
 * the last 10 drafted tokens) count; the first observations are plain
 * means so one prior guess does not linger. */
#define SPA_W_TIME 0.1
#define SPA_W_ALPHA 0.1
/* Least variance of the drafting steps' k before their cost is fitted as
 * a fixed part and a part a token (fit_costs). */
#define SPA_K_SPREAD 0.5
/* Least cost of a drafted token, as a share of a plain step. */
#define SPA_TOKEN_FLOOR 0.02
/* An observation more than this far from the prediction is clipped: one
 * step stalled by another process must not swing the choice. */
#define SPA_CLIP 3.0

void spa_init(spa_ctl *c, int k_max)
{
    memset(c, 0, sizeof *c);
    c->k_max = k_max > 0 ? k_max : 0;
    c->alpha = 0.7; /* counts as one observation: the first outcome mostly replaces it */
    c->gap = SPA_GAP_MIN;
    c->cold = SPA_COLD_PLAIN;
}

void spa_init_from(spa_ctl *c, const spa_ctl *prior)
{
    spa_init(c, prior->k_max);
    c->alpha = prior->alpha;
    c->t_plain = prior->t_plain;
    c->t_token = prior->t_token;
    c->t_fixed = prior->t_fixed;
    c->m_k = prior->m_k;
    c->m_kk = prior->m_kk;
    c->m_y = prior->m_y;
    c->m_ky = prior->m_ky;
    c->t_probe = prior->t_probe;
    c->free_alpha = prior->free_alpha;
    /* a few observations' weight: the new request's own steps soon rule */
    c->n_plain = prior->n_plain < 4 ? prior->n_plain : 4;
    c->n_spec = prior->n_spec < 4 ? prior->n_spec : 4;
    c->n_alpha = prior->n_alpha < 4 ? prior->n_alpha : 4;
    if (c->n_plain > 0)
        c->cold = 0; /* the process is warm: this request's steps count at once */
}

/* Seconds a drafted token adds to a step, as the choice uses it: never
 * quite free (noise can make the estimate 0 or less), so a drafter whose
 * tokens are all rejected always loses. */
static double token_cost(const spa_ctl *c)
{
    double floor = SPA_TOKEN_FLOOR * c->t_plain;
    return c->t_token > floor ? c->t_token : floor;
}

/* Seconds a step drafting k > 0 tokens adds to a plain step. */
static double step_excess(const spa_ctl *c, int k)
{
    return c->t_fixed + k * token_cost(c);
}

double spa_gain(const spa_ctl *c, int k)
{
    if (k <= 0 || c->n_plain == 0 || c->n_spec == 0 || c->t_plain <= 0.0)
        return 1.0;
    return sl_spec_expected_tokens(c->alpha, k) * c->t_plain / (c->t_plain + step_excess(c, k));
}

int spa_best_k(const spa_ctl *c, double *gain)
{
    int best = 0;
    double best_gain = 1.0;
    for (int k = 1; k <= c->k_max; k++) {
        double g = spa_gain(c, k);
        if (g > best_gain) {
            best_gain = g;
            best = k;
        }
    }
    if (gain)
        *gain = best_gain;
    return best;
}

int spa_probe_k(const spa_ctl *c)
{
    int k = SPA_PROBE_K;
    if (c->n_alpha >= 1) {
        double run = c->alpha >= 1.0 ? SPA_PROBE_K_LONG : log(SPA_PROBE_KEEP) / log(c->alpha);
        k = run > SPA_PROBE_K_LONG ? SPA_PROBE_K_LONG : run > SPA_PROBE_K ? (int)run : SPA_PROBE_K;
    }
    return k < c->k_max ? k : c->k_max;
}

/* Whether drafting could beat plain decoding with every token accepted.
 * Before SPA_COST_SETTLED probes have measured a drafted token's cost it
 * could: one probe's cost may be noise (or the fixed part of a short
 * block: SPA_PROBE_K_LONG), and a pair accepting 98% that gains 1.28x
 * once measured a token at 1.1-1.4x a plain step and probed no more. */
static bool could_pay(const spa_ctl *c)
{
    if (c->n_spec < SPA_COST_SETTLED)
        return true;
    spa_ctl perfect = *c;
    perfect.alpha = 1.0;
    double gain;
    spa_best_k(&perfect, &gain);
    return gain > SPA_ENTER;
}

/* Steps of one k cannot tell the fixed part of their excess from a
 * token's: up to half of it may be fixed (a one-token step on the tiny
 * pair: a third), and a pair that pays at k = 8 looks far from it priced
 * all per token. */
static void split_one_k(spa_ctl *o)
{
    if (o->t_fixed == 0.0 && o->m_k > 0.0) {
        o->t_fixed = 0.5 * o->m_y;
        o->t_token = 0.5 * o->m_y / o->m_k;
    }
}

bool spa_worth_probe(const spa_ctl *c, double least_token_s)
{
    if (c->n_alpha == 0 || c->n_plain == 0 || c->t_plain <= 0.0)
        return true; /* no evidence against it */
    spa_ctl o = *c;
    if (o.n_spec > 0) {
        split_one_k(&o);
        o.t_token *= SPA_HOPE_COST;
        o.t_fixed *= SPA_HOPE_COST;
    } else {
        o.t_token = 0.0; /* the floor */
        o.t_fixed = 0.0;
        o.n_spec = 1;
    }
    if (o.t_token < least_token_s)
        o.t_token = least_token_s;
    double gain;
    spa_best_k(&o, &gain);
    return gain > SPA_ENTER;
}

bool spa_hopeful(const spa_ctl *c)
{
    return spa_worth_probe(c, 0.0);
}

void spa_decline(spa_ctl *c)
{
    c->declined++;
}

/* The least gap between dear probes (spa_observe_probe), or 0. */
static int cost_gap(const spa_ctl *c)
{
    if (c->t_probe <= 0.0 || c->t_plain <= 0.0)
        return 0;
    /* a probe declined (its drafter's acceptance said it could not pay,
     * spa_worth_probe) is evidence enough: the gaps follow the cost */
    if (c->n_spec < SPA_COST_SETTLED && c->declined == 0) {
        /* steps of one k cannot tell the fixed part from a token's: up to
         * half of their excess may be fixed (a one-token step on the tiny
         * pair: a third), and a pair that pays at k = 8 looked far from
         * it after one one-token probe of a sampled request */
        spa_ctl o = *c;
        split_one_k(&o);
        double best = 0.0;
        for (int k = 1; k <= c->k_max; k++) {
            double g = spa_gain(&o, k);
            best = g > best ? g : best;
        }
        if (best >= SPA_CLOSE)
            return 0;
    }
    double gap = (c->t_probe + step_excess(c, SPA_PROBE_K)) / (SPA_PROBE_SHARE * c->t_plain);
    return gap < SPA_GAP_COST_BOUND ? (int)(gap + 0.5) : SPA_GAP_COST_BOUND;
}

/* Not drafting: plain steps, and every gap steps a probe. */
static int next_plain(spa_ctl *c)
{
    if (!could_pay(c) && c->gap < SPA_GAP_COST_BOUND)
        c->gap = SPA_GAP_COST_BOUND;
    int least = c->left ? 0 : cost_gap(c);
    if (c->gap < least)
        c->gap = least;
    /* a drafter scoring its drafts for free waits for hope at a full gap */
    if (c->since < c->gap)
        c->since++;
    if (c->since < c->gap || (c->free_alpha && !spa_hopeful(c)))
        return 0;
    c->since = 0;
    c->left = false;
    if (c->gap < SPA_GAP_MAX)
        c->gap = c->gap * 2 < SPA_GAP_MAX ? c->gap * 2 : SPA_GAP_MAX;
    c->probes++;
    return spa_probe_k(c);
}

int spa_next_k(spa_ctl *c)
{
    /* warm-up only before the first probe: a controller started from a
     * prior (spa_init_from) has its measurements already */
    if (c->k_max == 0 || (c->n_spec == 0 && c->n_plain < SPA_WARM_PLAIN))
        return 0;
    /* the first probe, whatever the acceptance so far: what does a drafted
     * token cost? (Waiting for hope there cost prompt lookup 4% of its gain
     * on the 1b model's 48-token loop: the running acceptance rises a few
     * steps after the loop starts.) */
    if (c->n_spec == 0 && c->declined == 0)
        return spa_probe_k(c);
    double gain;
    int best = spa_best_k(c, &gain);
    if (c->drafting && (best == 0 || gain < SPA_EXIT)) {
        c->drafting = false;
        c->since = 0;
        c->gap = SPA_GAP_MIN;
        c->left = true;
    } else if (!c->drafting && best > 0 && gain > SPA_ENTER) {
        c->drafting = true;
        c->since = 0;
    }
    if (!c->drafting)
        return next_plain(c);
    if (++c->since >= (c->n_plain < SPA_PLAIN_SETTLED ? SPA_REFRESH_EARLY : SPA_REFRESH)) {
        c->since = 0;
        return 0;
    }
    return best;
}

/* Moves *avg toward x by weight w, or to the plain mean over the first
 * 1/w observations (n counts x). */
static void fade(double *avg, double x, double n, double w)
{
    double wn = 1.0 / n;
    *avg += (wn > w ? wn : w) * (x - *avg);
}

static double clip(double x, double predicted, int n_behind)
{
    if (n_behind == 0 || predicted <= 0.0)
        return x;
    if (x > SPA_CLIP * predicted)
        return SPA_CLIP * predicted;
    if (x < predicted / SPA_CLIP)
        return predicted / SPA_CLIP;
    return x;
}

/* The line y = t_fixed + k * t_token through the drafting steps' excess
 * (the fading means): least squares once their k spread (variance at
 * least SPA_K_SPREAD), else through the origin (one k: no telling the
 * parts apart, and every token priced at that k's mean is what a step
 * of that k costs); t_fixed is never negative (then through the origin)
 * and t_token never below the floor (then the rest is fixed). */
static void fit_costs(spa_ctl *c)
{
    double var = c->m_kk - c->m_k * c->m_k, floor = SPA_TOKEN_FLOOR * c->t_plain;
    c->t_fixed = 0.0;
    c->t_token = c->m_kk > 0.0 ? c->m_ky / c->m_kk : 0.0;
    if (var < SPA_K_SPREAD)
        return;
    double t = (c->m_ky - c->m_k * c->m_y) / var, f = c->m_y - t * c->m_k;
    if (t < floor) {
        t = floor;
        f = c->m_y - t * c->m_k;
    }
    if (f > 0.0) {
        c->t_token = t;
        c->t_fixed = f;
    }
}

void spa_observe_cost(spa_ctl *c, int drafted, double step_s)
{
    if (step_s < 0.0 || drafted < 0)
        return;
    if (drafted == 0) {
        if (c->cold > 0) {
            c->cold--;
            return;
        }
        step_s = clip(step_s, c->t_plain, c->n_plain);
        c->n_plain++;
        fade(&c->t_plain, step_s, c->n_plain, SPA_W_TIME);
        return;
    }
    if (c->n_plain == 0)
        return; /* a drafted token's cost is read against a plain step */
    step_s = clip(step_s, c->t_plain + step_excess(c, drafted), c->n_spec);
    c->n_spec++;
    double k = drafted, y = step_s - c->t_plain;
    fade(&c->m_k, k, c->n_spec, SPA_W_TIME);
    fade(&c->m_kk, k * k, c->n_spec, SPA_W_TIME);
    fade(&c->m_y, y, c->n_spec, SPA_W_TIME);
    fade(&c->m_ky, k * y, c->n_spec, SPA_W_TIME);
    fit_costs(c);
}

/* One acceptance sample (an outcome, 0 or 1, or an expected acceptance
 * in between) into the fading mean (the prior counts as one). */
static void alpha_sample(spa_ctl *c, double x)
{
    c->n_alpha++;
    fade(&c->alpha, x, (double)c->n_alpha + 1.0, SPA_W_ALPHA);
}

void spa_observe_accept(spa_ctl *c, int drafted, int accepted)
{
    if (drafted <= 0)
        return;
    if (accepted < 0)
        accepted = 0;
    if (accepted > drafted)
        accepted = drafted;
    /* the tokens up to the first rejection are observed, those after it
     * never verified; the prior counts as one token */
    int seen = accepted + (accepted < drafted);
    for (int i = 0; i < seen; i++)
        alpha_sample(c, i < accepted ? 1.0 : 0.0);
}

void spa_observe_alpha(spa_ctl *c, int n, int hits)
{
    if (n <= 0)
        return;
    if (hits < 0)
        hits = 0;
    if (hits > n)
        hits = n;
    /* hits spread evenly: the fading mean does not favour either kind */
    for (int i = 0; i < n; i++)
        alpha_sample(c, (long)(i + 1) * hits / n > (long)i * hits / n ? 1.0 : 0.0);
}

void spa_observe_alpha_sum(spa_ctl *c, int n, double sum)
{
    if (n <= 0 || !(sum >= 0.0))
        return;
    double each = sum / n > 1.0 ? 1.0 : sum / n;
    for (int i = 0; i < n; i++)
        alpha_sample(c, each);
}

void spa_observe_probe(spa_ctl *c, double extra_s)
{
    if (!(extra_s >= 0.0))
        return;
    c->t_probe = c->t_probe > 0.0 ? 0.5 * (c->t_probe + extra_s) : extra_s;
}

int spa_cache_offset(int n_text, int cached, int off, bool drafting, int window)
{
    if (drafting || window <= 0)
        return 0;
    if (n_text - cached <= window)
        return off;
    return n_text - window;
}

void spa_clock_start(spa_clock *k, double t0, double extra_s, int drafted)
{
    *k = (spa_clock){t0, extra_s, drafted, true};
}

bool spa_clock_stop(spa_clock *k, double t, bool comparable, spa_ctl *c, spa_ctl *prior)
{
    bool running = k->running;
    k->running = false;
    if (!running || !comparable)
        return false;
    spa_observe_cost(c, k->drafted, t - k->t0 + k->extra_s);
    *prior = *c;
    return true;
}

void spa_observe(spa_ctl *c, int drafted, int accepted, double step_s)
{
    spa_observe_cost(c, drafted, step_s);
    if (step_s >= 0.0 && c->n_plain > 0)
        spa_observe_accept(c, drafted, accepted);
}
