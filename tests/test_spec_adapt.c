/* The adaptive-k controller's decisions on synthetic drafters: a step
 * drafting k tokens takes t_plain + k * t_token (plus seeded noise) and
 * each drafted token is accepted with probability alpha until the first
 * rejection. Speeds here are simulated tokens per simulated second, so
 * the checks are exact arithmetic, not timings. */
#include <math.h>
#include <stdint.h>

#include "stages/spec.h"
#include "stages/spec_adapt.h"
#include "tests/test.h"

typedef struct sim {
    double alpha, t_plain, t_token, noise;
    double t_fixed;     /* what a drafting step adds whatever its k */
    int cold_steps;     /* the first steps take cold_factor times as long */
    double cold_factor;
    uint64_t rng;
    /* totals */
    double seconds;
    long tokens, steps, drafting_steps, drafted;
} sim;

static double uniform(sim *s)
{
    s->rng = s->rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(s->rng >> 11) / 9007199254740992.0;
}

/* One step drafting k tokens (observed by c). */
static void sim_apply(sim *s, spa_ctl *c, int k)
{
    CHECK(k >= 0 && k <= c->k_max);
    int accepted = 0;
    while (accepted < k && uniform(s) < s->alpha)
        accepted++;
    double t = (s->t_plain + (k > 0) * s->t_fixed + k * s->t_token) * (1.0 + s->noise * (2.0 * uniform(s) - 1.0));
    if (s->steps < s->cold_steps)
        t *= s->cold_factor;
    spa_observe(c, k, accepted, t);
    s->seconds += t;
    s->tokens += accepted + 1;
    s->steps++;
    s->drafting_steps += k > 0;
    s->drafted += k;
}

/* One step with the controller's k; returns that k. */
static int sim_step(sim *s, spa_ctl *c)
{
    int k = spa_next_k(c);
    sim_apply(s, c, k);
    return k;
}

/* Simulated speed over plain decoding. */
static double sim_speedup(const sim *s)
{
    return ((double)s->tokens / s->seconds) * s->t_plain;
}

static void run(sim *s, spa_ctl *c, int steps)
{
    for (int i = 0; i < steps; i++)
        sim_step(s, c);
}

/* A drafter that never accepts falls back to plain decoding and probes
 * ever more rarely: the probes cost well under 3%. */
static void test_never_accepts(void)
{
    /* free (another request's rows dominate the step), cheap
     * (memory-bound), to dear (compute-bound) */
    double costs[] = {0.0, 0.05, 0.3, 1.2};
    for (int i = 0; i < 4; i++) {
        spa_ctl c;
        spa_init(&c, 8);
        sim s = {.alpha = 0.0, .t_plain = 0.01, .t_token = costs[i] * 0.01, .noise = 0.1, .rng = 7};
        run(&s, &c, 300);
        CHECKF(sim_speedup(&s) >= 0.97, "t_token %g: %.3fx of plain", costs[i], sim_speedup(&s));
        CHECK(!c.drafting);
        /* then probes keep coming, only rarely: gaps grow to 128 steps */
        long before = s.drafting_steps;
        run(&s, &c, 1000);
        CHECKF(s.drafting_steps > before && s.drafting_steps <= before + 12,
               "t_token %g: %ld of 1000 steps drafted", costs[i], s.drafting_steps - before);
        CHECK(c.gap >= 64);
        CHECKF(sim_speedup(&s) >= 0.98, "t_token %g: %.3fx of plain", costs[i], sim_speedup(&s));
    }
}

/* The tiny pair's case: the first steps run with cold caches (1.3x),
 * the drafter is dear (a drafted token adds 0.3 of a step) and rarely
 * accepted. Warm-up steps in t_plain made drafted tokens look free (a
 * step's excess over a too-high t_plain) and the controller drafted for
 * 70 steps at 10% acceptance (0.78-0.88x of plain measured); it must stay
 * at plain speed. */
static void test_cold_start(void)
{
    for (uint64_t seed = 1; seed <= 8; seed++) {
        spa_ctl c;
        spa_init(&c, 8);
        sim s = {.alpha = 0.1, .t_plain = 0.01, .t_token = 0.003, .noise = 0.05, .rng = seed,
                 .cold_steps = 2, .cold_factor = 1.35};
        run(&s, &c, 400);
        CHECKF(sim_speedup(&s) >= 0.97, "seed %d: %.3fx of plain", (int)seed, sim_speedup(&s));
        CHECKF(s.drafting_steps <= 20, "seed %d: %ld of 400 steps drafted", (int)seed, s.drafting_steps);
    }
}

/* Good acceptance and cheap verification (a memory-bound target): the
 * controller drafts on nearly every step, several tokens at a time, and
 * gets most of the available gain. */
static void test_good_drafter_stays_up(void)
{
    spa_ctl c;
    spa_init(&c, 8);
    sim s = {.alpha = 0.9, .t_plain = 0.02, .t_token = 0.001, .noise = 0.1, .rng = 11};
    run(&s, &c, 40);
    CHECK(c.drafting);
    sim after = s;
    run(&s, &c, 500);
    long steps = s.steps - after.steps, drafting = s.drafting_steps - after.drafting_steps;
    CHECKF(drafting >= steps * 95 / 100, "%ld of %ld steps drafted", drafting, steps);
    double mean_k = (double)(s.drafted - after.drafted) / drafting;
    CHECKF(mean_k >= 4.0, "mean k %.2f", mean_k);
    CHECKF(sim_speedup(&s) > 3.0, "%.2fx of plain", sim_speedup(&s));
}

/* High acceptance does not help when every drafted token costs as much as
 * a plain step (the shipped tiny pair: the target is compute-bound and
 * in cache): plain decoding, within 3%. */
static void test_accepting_but_dear(void)
{
    spa_ctl c;
    spa_init(&c, 8);
    sim s = {.alpha = 0.96, .t_plain = 0.002, .t_token = 0.0024, .noise = 0.2, .rng = 3};
    run(&s, &c, 200);
    CHECKF(sim_speedup(&s) >= 0.97, "%.3fx of plain", sim_speedup(&s));
    CHECK(!c.drafting);
    CHECK(spa_best_k(&c, NULL) == 0);
    /* no acceptance could make it pay: probes all but stop (a draft
     * model's probe would first catch up on every step since the last) */
    long before = s.drafting_steps;
    run(&s, &c, 1000);
    CHECKF(s.drafting_steps - before <= 1, "%ld probes in 1000 steps", s.drafting_steps - before);
    CHECKF(sim_speedup(&s) >= 0.99, "%.3fx of plain", sim_speedup(&s));
}

/* Where drafting pays a little, the chosen k is the one the model says. */
static void test_moderate(void)
{
    spa_ctl c;
    spa_init(&c, 8);
    sim s = {.alpha = 0.8, .t_plain = 0.01, .t_token = 0.003, .noise = 0.0, .rng = 5};
    run(&s, &c, 300);
    CHECK(c.drafting);
    double best_gain;
    int k = spa_best_k(&c, &best_gain);
    CHECKF(k >= 2 && k <= 5, "k = %d", k);
    CHECKF(best_gain > 1.3 && best_gain < 1.8, "gain %.2f", best_gain);
    CHECKF(sim_speedup(&s) > 1.25, "%.2fx of plain", sim_speedup(&s));
}

/* The text turns easy after 300 steps of rejections: probes notice and
 * drafting resumes; then it turns hard again and drafting stops. After
 * 300 rejections alpha is ~0 and probes come SPA_GAP_MAX (128) steps
 * apart, so the step count depends on where the turn falls between two
 * probes: the check counts probes (two lift alpha past the entry gain). */
static void test_turns(void)
{
    spa_ctl c;
    spa_init(&c, 8);
    sim s = {.alpha = 0.0, .t_plain = 0.02, .t_token = 0.002, .noise = 0.1, .rng = 13};
    run(&s, &c, 300);
    CHECK(!c.drafting);
    s.alpha = 0.95;
    long probes_before = c.probes;
    int found = -1;
    for (int i = 0; i < 400 && found < 0; i++)
        if (sim_step(&s, &c) > 0 && c.drafting)
            found = i;
    CHECKF(found >= 0 && c.probes - probes_before <= 3, "drafting resumed after %d steps, %ld probes", found,
           c.probes - probes_before);
    s.alpha = 0.0;
    int stopped = -1;
    for (int i = 0; i < 100 && stopped < 0; i++)
        if (sim_step(&s, &c) == 0 && !c.drafting)
            stopped = i;
    CHECKF(stopped >= 0 && stopped <= 20, "drafting stopped after %d steps", stopped);
}

/* One step stalled 100x by another process does not turn drafting off. */
static void test_stall(void)
{
    spa_ctl c;
    spa_init(&c, 8);
    sim s = {.alpha = 0.9, .t_plain = 0.02, .t_token = 0.001, .noise = 0.0, .rng = 17};
    run(&s, &c, 60);
    CHECK(c.drafting);
    int k = spa_next_k(&c);
    CHECK(k > 0);
    spa_observe(&c, k, k, 100.0 * (s.t_plain + k * s.t_token));
    CHECK(spa_next_k(&c) > 0);
    CHECK(c.drafting);
}

/* Edge cases: k_max 0 never drafts; a new controller starts from a
 * prior's costs and acceptance; nonsense observations are ignored. */
static void test_edges(void)
{
    spa_ctl c;
    spa_init(&c, 0);
    for (int i = 0; i < 50; i++) {
        CHECK(spa_next_k(&c) == 0);
        spa_observe(&c, 0, 0, 0.01);
    }
    spa_init(&c, 4);
    CHECK(spa_next_k(&c) == 0); /* plain steps first: their time is the yardstick */
    CHECK(spa_gain(&c, 3) == 1.0);
    spa_observe(&c, 2, 1, 0.01); /* drafted before any plain step: no reference, ignored */
    CHECK(c.n_spec == 0);
    spa_observe(&c, 0, 0, -1.0);
    CHECK(c.n_plain == 0);
    sim s = {.alpha = 0.9, .t_plain = 0.02, .t_token = 0.001, .rng = 19};
    run(&s, &c, 50);
    spa_ctl fresh;
    spa_init_from(&fresh, &c);
    CHECK(fresh.k_max == 4 && fresh.n_plain > 0 && fresh.n_spec > 0);
    CHECK(fabs(fresh.alpha - c.alpha) < 1e-12);
    CHECK(spa_next_k(&fresh) > 0); /* it knows drafting pays: no warm-up */
}

/* A draft model's probe first brings its cache up to date: catch_tok
 * seconds a token, over the steps since its cache was last current (at
 * most a window of 32, as the draft stage rebuilds it), and it sees the
 * draft's acceptance on 16 tokens of the text (shadow). Plain steps in
 * between cost nothing extra. */
typedef struct probe_sim {
    sim s;
    double catch_tok;
    int since_current; /* steps since the draft's cache was current */
    bool shadow;
} probe_sim;

static int probe_step(probe_sim *p, spa_ctl *c)
{
    bool was_drafting = c->drafting;
    int k = sim_step(&p->s, c);
    if (k > 0 && !was_drafting) { /* a probe (or the step drafting starts) */
        int behind = p->since_current < 32 ? p->since_current : 32;
        p->s.seconds += p->catch_tok * behind;
        if (!c->drafting && behind > 2) {
            spa_observe_probe(c, p->catch_tok * 32);
            if (p->shadow) {
                int hits = 0;
                for (int i = 0; i < 16; i++)
                    hits += uniform(&p->s) < p->s.alpha;
                spa_observe_alpha(c, 16, hits);
            }
        }
    }
    /* drafting keeps it current (its cost is in t_token) */
    p->since_current = k > 0 || c->drafting ? 1 : p->since_current + 1;
    return k;
}

/* The tiny pair's prompt 2: the draft accepts 62% yet a drafted token
 * adds 0.7 of a step, and its prefill costs 0.13 of a step a token. The
 * probes' catch-up was ~9% of plain decoding with gaps of 128 steps
 * (every plain step's token was caught up at the next probe); with
 * windows and probes paced by their cost (catch-up and verification
 * within 1% of plain decoding, SPA_PROBE_SHARE) it is within 2% over 400
 * steps (the first probe comes after 10) and 1.5% over 4000. */
static void test_probe_cost(void)
{
    for (uint64_t seed = 1; seed <= 6; seed++) {
        spa_ctl c;
        spa_init(&c, 8);
        probe_sim p = {.s = {.alpha = 0.62, .t_plain = 0.01, .t_token = 0.007, .noise = 0.05, .rng = seed},
                       .catch_tok = 0.0013, .shadow = true};
        for (int i = 0; i < 400; i++)
            probe_step(&p, &c);
        CHECKF(sim_speedup(&p.s) >= 0.98, "seed %d: %.3fx of plain over 400 steps", (int)seed,
               sim_speedup(&p.s));
        CHECK(c.gap >= 100);
        for (int i = 0; i < 3600; i++)
            probe_step(&p, &c);
        CHECKF(sim_speedup(&p.s) >= 0.985, "seed %d: %.3fx of plain over 4000 steps", (int)seed,
               sim_speedup(&p.s));
        CHECKF(c.probes >= 4, "seed %d: %ld probes in 4000 steps", (int)seed, c.probes);
    }
    /* where drafting pays, the dear probes still find it at once */
    for (uint64_t seed = 1; seed <= 6; seed++) {
        spa_ctl c;
        spa_init(&c, 8);
        probe_sim p = {.s = {.alpha = 0.85, .t_plain = 0.01, .t_token = 0.002, .noise = 0.05, .rng = seed},
                       .catch_tok = 0.0013, .shadow = true};
        for (int i = 0; i < 60; i++)
            probe_step(&p, &c);
        CHECKF(c.drafting, "seed %d: not drafting after 60 steps", (int)seed);
        for (int i = 0; i < 340; i++)
            probe_step(&p, &c);
        CHECKF(sim_speedup(&p.s) > 1.8, "seed %d: %.2fx of plain", (int)seed, sim_speedup(&p.s));
    }
}

/* The tiny pair on its repeating prompt: the draft accepts 98%, a
 * drafting step adds 0.3 of a plain step whatever its k and 0.62 a
 * drafted token (a one-token step: 0.92, so one-token probes said no
 * acceptance could pay), and drafting 8 gains ~1.3x. A probe drafts the
 * run the draft's acceptance on the text promises (spa_probe_k), which
 * prices tokens as drafting will, and drafting starts at once. */
static void test_fixed_part(void)
{
    for (uint64_t seed = 1; seed <= 6; seed++) {
        spa_ctl c;
        spa_init(&c, 8);
        probe_sim p = {.s = {.alpha = 0.98, .t_plain = 0.01, .t_fixed = 0.003, .t_token = 0.0062, .noise = 0.1,
                             .rng = seed},
                       .catch_tok = 0.0005, .shadow = true};
        for (int i = 0; i < 8; i++) /* warm-up (two cold steps ignored) */
            probe_step(&p, &c);
        /* the first probe: the catch-up shows the acceptance, then the
         * probe drafts a run that acceptance keeps */
        spa_observe_alpha(&c, 16, 16);
        CHECKF(spa_probe_k(&c) == 4, "seed %d: probe k %d", (int)seed, spa_probe_k(&c));
        for (int i = 0; i < 192; i++)
            probe_step(&p, &c);
        CHECKF(p.s.drafting_steps >= 140, "seed %d: %ld of 200 steps drafted", (int)seed, p.s.drafting_steps);
        CHECKF(sim_speedup(&p.s) > 1.15, "seed %d: %.2fx of plain", (int)seed, sim_speedup(&p.s));
    }
    /* a sampled request's first probe (no acceptance seen before it):
     * one accepted token whose step cost 1.15 of a plain step more. Priced
     * all per token, drafting is at 0.86 of plain decoding, and the probes
     * would wait for their cost (catch-up and verification: 135 steps);
     * half of it may be fixed, and then drafting 2 is within 0.9, so the
     * next probe comes at the least gap */
    {
        spa_ctl c;
        spa_init(&c, 8);
        for (int i = 0; i < 10; i++)
            spa_observe(&c, 0, 0, 0.01);
        CHECK(spa_next_k(&c) == 1);
        spa_observe(&c, 1, 1, 0.0215);
        spa_observe_probe(&c, 0.002);
        CHECKF(spa_gain(&c, 1) < 0.9 && spa_best_k(&c, NULL) == 0, "gain %g", spa_gain(&c, 1));
        CHECK(spa_next_k(&c) == 0);
        CHECKF(c.gap == 8, "gap %d", c.gap);
    }
    /* the fit: steps of 2 and 8 tokens give the fixed part and a token's
     * (exact without noise); steps of one k price every token at it */
    spa_ctl f;
    spa_init(&f, 8);
    for (int i = 0; i < 10; i++)
        spa_observe(&f, 0, 0, 0.01);
    for (int i = 0; i < 6; i++) {
        int k = i % 2 ? 8 : 2;
        spa_observe(&f, k, k, 0.01 + 0.003 + k * 0.006);
    }
    CHECKF(fabs(f.t_fixed - 0.003) < 1e-9 && fabs(f.t_token - 0.006) < 1e-9, "fixed %g, a token %g", f.t_fixed,
           f.t_token);
    CHECKF(fabs(spa_gain(&f, 8) - sl_spec_expected_tokens(f.alpha, 8) * 0.01 / 0.061) < 1e-9, "gain %g",
           spa_gain(&f, 8));
    spa_init(&f, 8);
    for (int i = 0; i < 10; i++)
        spa_observe(&f, 0, 0, 0.01);
    for (int i = 0; i < 6; i++)
        spa_observe(&f, 4, 4, 0.01 + 0.003 + 4 * 0.006);
    CHECKF(f.t_fixed == 0.0 && fabs(f.t_token - 0.00675) < 1e-9, "fixed %g, a token %g", f.t_fixed, f.t_token);

    /* the probe's length: one token until the acceptance is seen, and at
     * most what k_max allows */
    spa_ctl c;
    spa_init(&c, 8);
    CHECK(spa_probe_k(&c) == 1);
    spa_observe_alpha(&c, 16, 10); /* ~0.65: a run of one */
    CHECKF(spa_probe_k(&c) == 1, "probe k %d at alpha %.2f", spa_probe_k(&c), c.alpha);
    spa_observe_alpha(&c, 40, 36); /* ~0.9: 0.9^4 < 0.6 <= 0.9^3 */
    CHECKF(spa_probe_k(&c) == 4 || c.alpha < 0.9, "probe k %d at alpha %.3f", spa_probe_k(&c), c.alpha);
    spa_init(&c, 2);
    spa_observe_alpha(&c, 16, 16);
    CHECK(spa_probe_k(&c) == 2);
}

/* Shadow acceptance counts as that many drafted tokens' outcomes; a
 * probe's cost raises the gap at once, never while drafting. */
static void test_shadow_and_probe(void)
{
    spa_ctl c;
    spa_init(&c, 8);
    spa_observe_alpha(&c, 16, 12);
    spa_ctl one;
    spa_init(&one, 8);
    for (int i = 0; i < 16; i++) /* the same outcomes (hits spread evenly), one drafted token each */
        spa_observe_accept(&one, 1, (i + 1) * 12 / 16 > i * 12 / 16);
    CHECKF(fabs(c.alpha - one.alpha) < 1e-12 && c.alpha > 0.7 && c.alpha < 0.8, "alpha %.3f after 12 of 16",
           c.alpha);
    CHECK(c.n_alpha == 16);
    spa_observe_alpha(&c, 0, 0);
    spa_observe_alpha(&c, -3, 1);
    CHECK(c.n_alpha == 16);
    spa_observe_alpha(&c, 4, 9); /* hits clipped to n */
    CHECK(c.n_alpha == 20 && c.alpha > 0.75);
    for (int i = 0; i < 100; i++)
        spa_observe_alpha(&c, 10, 0);
    CHECK(c.alpha < 0.01);

    spa_init(&c, 8);
    spa_observe_probe(&c, 0.001); /* kept; nothing measured yet: no gap */
    CHECK(c.t_probe == 0.001);
    for (int i = 0; i < 10; i++) /* two cold steps, eight measured */
        spa_observe(&c, 0, 0, 0.01);
    CHECK(spa_next_k(&c) == 1); /* the first probe */
    spa_observe(&c, 1, 0, 0.015); /* a drafted token adds half a step, rejected */
    spa_observe_alpha(&c, 16, 2);  /* drafting is far from paying */
    CHECK(spa_next_k(&c) == 0);
    /* catch-up (0.001) and verification: 0.6 of a step, 1%: 60 steps */
    CHECKF(c.gap == 60, "gap %d", c.gap);
    spa_observe_probe(&c, 0.5);
    CHECK(spa_next_k(&c) == 0);
    CHECKF(c.gap == 1024, "gap %d (the cost bound)", c.gap);
    spa_observe_probe(&c, -1.0);
    CHECK(c.t_probe > 0.2 && c.t_probe < 0.3);
    spa_ctl fresh;
    spa_init_from(&fresh, &c);
    CHECK(fresh.t_probe == c.t_probe && fresh.gap == 8);

    /* close to paying after one probe: its cost may be noise; the gaps
     * double as usual until four probes have measured it */
    spa_init(&c, 8);
    for (int i = 0; i < 10; i++)
        spa_observe(&c, 0, 0, 0.01);
    CHECK(spa_next_k(&c) == 1);
    spa_observe(&c, 1, 1, 0.018);
    spa_observe_alpha(&c, 16, 13);
    spa_observe_probe(&c, 0.01);
    CHECK(spa_next_k(&c) == 0 && !c.drafting);
    CHECKF(c.gap == 8, "gap %d", c.gap);
    while (c.n_spec < 4) {
        int k = spa_next_k(&c);
        spa_observe(&c, k, 0, 0.01 + k * 0.008); /* rejected: the acceptance falls */
    }
    spa_next_k(&c);
    CHECKF(c.gap > 100, "gap %d after four probes", c.gap);
}

/* Where a draft model's cache starts: the whole text while drafting;
 * a probe catches up on at most a window, else rebuilds the last one. */
/* Prompt lookup scores the token it would have drafted on every plain
 * step (free_alpha): one step in the simulation, the shadow drawn like a
 * drafted token. */
static int sim_step_shadow(sim *s, spa_ctl *c)
{
    uint64_t rng = s->rng;
    int k = sim_step(s, c);
    if (k == 0) {
        s->rng = rng ^ 0x9E3779B97F4A7C15ull; /* a draw of its own */
        spa_observe_alpha(c, 1, uniform(s) < s->alpha);
    }
    return k;
}

/* Free acceptance: text lookup cannot predict costs one probe, the first,
 * which measures a drafted token's cost (it had cost two or three while
 * the shadow's first eight samples counted as hope whatever they said);
 * without it the probes came every 8..128 steps (6-7 in 300). When the
 * text turns to repeating, the shadow acceptance rises and drafting starts
 * within a few dozen steps. */
static void test_free_alpha(void)
{
    for (uint64_t seed = 1; seed <= 8; seed++) {
        spa_ctl c, plain;
        spa_init(&c, 8);
        c.free_alpha = true;
        spa_init(&plain, 8);
        sim s = {.alpha = 0.1, .t_plain = 0.01, .t_token = 0.006, .noise = 0.05, .rng = seed},
            sp = s;
        for (int i = 0; i < 300; i++) {
            sim_step_shadow(&s, &c);
            sim_step(&sp, &plain);
        }
        CHECKF(s.drafting_steps == 1 && sp.drafting_steps >= 5, "seed %d: %ld probes in 300 steps (%ld without "
               "free acceptance)", (int)seed, s.drafting_steps, sp.drafting_steps);
        CHECKF(sim_speedup(&s) >= 0.99, "seed %d: %.3fx of plain (%.3fx "
               "without free acceptance)", (int)seed, sim_speedup(&s), sim_speedup(&sp));
        s.alpha = 0.95;
        s.t_token = 0.001;
        int found = -1;
        for (int i = 0; i < 200 && found < 0; i++)
            if (sim_step_shadow(&s, &c) > 0 && c.drafting)
                found = i;
        CHECKF(found >= 0 && found <= 40, "seed %d: drafting resumed after %d steps", (int)seed, found);
    }
}

/* Plain steps (0.01 s each) until c asks for a probe: the step that
 * asks, counted from 1, or 0 when none did within limit. */
static int steps_to_probe(spa_ctl *c, int limit)
{
    for (int i = 1; i <= limit; i++) {
        if (spa_next_k(c) > 0)
            return i;
        spa_observe(c, 0, 0, 0.01);
    }
    return 0;
}

/* spa_worth_probe, the rule a drafter that sees its acceptance without
 * drafting asks before a probe: evidence of acceptance against a drafted
 * token's price (its least cost, and three quarters of what probes
 * measured, half of it fixed while they drafted one k). */
static void test_worth_probe(void)
{
    spa_ctl c;
    spa_init(&c, 8);
    CHECK(spa_worth_probe(&c, 1.0)); /* nothing known: no evidence against */
    for (int i = 0; i < 10; i++)
        spa_observe(&c, 0, 0, 0.01);
    CHECK(spa_worth_probe(&c, 1.0)); /* no acceptance sample yet */
    /* about one token in five: worth it where a drafted token is nearly
     * free, not where it costs at least 0.3 of a plain step */
    spa_observe_alpha(&c, 10, 2);
    CHECKF(c.alpha > 0.15 && c.alpha < 0.3, "alpha %.3f", c.alpha);
    CHECK(spa_worth_probe(&c, 0.0) && spa_hopeful(&c));
    CHECK(spa_worth_probe(&c, 0.001));
    CHECK(!spa_worth_probe(&c, 0.003));
    /* a probe measured a token at 0.9 of a plain step (the tiny target,
     * compute-bound): one token in five is far from paying; nearly every
     * token accepted pays at k = 4 with half that step fixed (3 * 0.45 *
     * 0.75 / 4 ...), though a whole one-token step's price a token would
     * not (4.5 tokens against 1 + 4 * 0.675 steps) */
    spa_observe(&c, 1, 0, 0.019);
    CHECK(c.n_spec == 1 && !spa_hopeful(&c) && !spa_worth_probe(&c, 0.0));
    spa_observe_alpha(&c, 40, 40);
    CHECKF(c.alpha > 0.95, "alpha %.3f", c.alpha);
    CHECK(spa_hopeful(&c));
    CHECK(!spa_worth_probe(&c, 0.009)); /* its least cost rules where higher */
    /* a memory-bound target (a drafted token: 0.1 of a step) at one token
     * in four: worth probing */
    spa_init(&c, 8);
    for (int i = 0; i < 10; i++)
        spa_observe(&c, 0, 0, 0.01);
    spa_observe(&c, 1, 0, 0.011);
    spa_observe_alpha(&c, 12, 3);
    CHECKF(spa_hopeful(&c), "alpha %.3f", c.alpha);

    /* a first probe declined is not asked for again at once: the gaps
     * run as after a probe (8, then 16 ...) */
    spa_init(&c, 8);
    for (int i = 0; i < 10; i++)
        spa_observe(&c, 0, 0, 0.01);
    CHECK(spa_next_k(&c) == 1);
    spa_decline(&c);
    spa_observe(&c, 0, 0, 0.01);
    int next = steps_to_probe(&c, 40);
    CHECKF(next == 8, "the probe after a declined first one came %d steps later", next);
    CHECK(c.declined == 1 && c.n_spec == 0);
    /* a draft model's declined probe: its catch-up's cost (0.005 s, half a
     * plain step) spaces the next at 1% of plain decoding, 52 steps, not at
     * the doubling gaps (each probe a catch-up) */
    spa_init(&c, 8);
    for (int i = 0; i < 10; i++)
        spa_observe(&c, 0, 0, 0.01);
    CHECK(spa_next_k(&c) == 1);
    spa_observe_probe(&c, 0.005);
    spa_decline(&c);
    spa_observe(&c, 0, 0, 0.01);
    next = steps_to_probe(&c, 100);
    CHECKF(next == 52, "the probe after a declined first one came %d steps later", next);
}

/* The least a drafted token of a draft model costs (spa_least_token_s):
 * its draft row and the target's row verifying it. The tiny pair on the
 * prompt it cannot predict (measured: a catch-up row at 0.1 of a plain
 * step, the draft agreeing with the text on 16-22% of the first probe's 10
 * scored tokens): priced at the draft's row alone the probe looked worth
 * making (1.13x at one token at 2 of 10) and verified a row the target
 * rejected; at the least a drafted token costs it is declined; where the
 * draft agrees on 3 of 10 or more it is made (k = 1: 1.34 tokens for 1.2
 * steps). */
static void test_least_token(void)
{
    CHECK(spa_least_token_s(0.0015) == 0.003 && spa_least_token_s(0.0) == 0.0);
    for (int hits = 0; hits <= 10; hits++) {
        spa_ctl c;
        spa_init(&c, 8);
        for (int i = 0; i < 10; i++)
            spa_observe(&c, 0, 0, 0.01);
        spa_observe_alpha(&c, 10, hits);
        bool worth = spa_worth_probe(&c, spa_least_token_s(0.001));
        CHECKF(worth == (hits >= 3), "%d of 10 agreeing (alpha %.3f): %s", hits, c.alpha,
               worth ? "probed" : "declined");
        if (hits == 2)
            CHECK(spa_worth_probe(&c, 0.001));
    }
}

/* A draft model on greedy requests: a probe's catch-up scores the draft
 * on the text before it drafts, and the probe drafts nothing where that
 * says it could not pay (the tiny pair's prompts that never gain: a
 * drafted token adds 0.7 of a step, the draft agrees 30%). Only the first
 * probe, which measures the cost, verifies a drafted token; a pair that
 * pays is found as before. */
static int decline_step(probe_sim *p, spa_ctl *c)
{
    int k = spa_next_k(c);
    if (k > 0 && !c->drafting) { /* a probe: its catch-up first */
        int behind = p->since_current < 32 ? p->since_current : 32;
        p->s.seconds += p->catch_tok * behind;
        spa_observe_probe(c, p->catch_tok * 32);
        int hits = 0;
        for (int i = 0; i < 16; i++)
            hits += uniform(&p->s) < p->s.alpha;
        spa_observe_alpha(c, 16, hits);
        if (!spa_worth_probe(c, spa_least_token_s(p->catch_tok))) {
            spa_decline(c);
            k = 0;
        }
        p->since_current = 0;
    }
    sim_apply(&p->s, c, k);
    p->since_current = k > 0 || c->drafting ? 1 : p->since_current + 1;
    return k;
}

static void test_greedy_decline(void)
{
    for (uint64_t seed = 1; seed <= 6; seed++) {
        spa_ctl c, old;
        spa_init(&c, 8);
        spa_init(&old, 8);
        probe_sim p = {.s = {.alpha = 0.3, .t_plain = 0.01, .t_token = 0.007, .noise = 0.05, .rng = seed},
                       .catch_tok = 0.0013, .shadow = true},
                  po = p;
        for (int i = 0; i < 4000; i++) {
            decline_step(&p, &c);
            probe_step(&po, &old);
        }
        CHECKF(p.s.drafting_steps == 1 && c.declined >= 3 && po.s.drafting_steps >= 4,
               "seed %d: %ld probes drafted, %ld declined (%ld drafted without declining)", (int)seed,
               p.s.drafting_steps, c.declined, po.s.drafting_steps);
        CHECKF(sim_speedup(&p.s) >= 0.99, "seed %d: %.3fx of plain (%.3fx without declining)", (int)seed,
               sim_speedup(&p.s), sim_speedup(&po.s));
    }
    for (uint64_t seed = 1; seed <= 6; seed++) {
        spa_ctl c;
        spa_init(&c, 8);
        probe_sim p = {.s = {.alpha = 0.85, .t_plain = 0.01, .t_token = 0.002, .noise = 0.05, .rng = seed},
                       .catch_tok = 0.0013, .shadow = true};
        for (int i = 0; i < 60; i++)
            decline_step(&p, &c);
        CHECKF(c.drafting && c.declined == 0, "seed %d: not drafting after 60 steps (%ld declined)", (int)seed,
               c.declined);
    }
}

/* A sampled request's acceptance seen without drafting
 * (spa_observe_alpha_sum): each token the target sampled, scored min(1,
 * q(y) / p(y)), counts as a drafted token's outcome at that expectation.
 * Scores averaging 0.05 move alpha there as 0/1 outcomes of that mean do,
 * and a probe is then declined at the costs of the tiny pair; scores near
 * 1 keep it worth making. Out-of-range input is clipped or ignored. */
static void test_alpha_sum(void)
{
    spa_ctl c, hits;
    spa_init(&c, 8);
    spa_init(&hits, 8);
    for (int i = 0; i < 10; i++) {
        spa_observe(&c, 0, 0, 0.01);
        spa_observe(&hits, 0, 0, 0.01);
    }
    spa_observe_alpha_sum(&c, 20, 1.0);
    /* the fading mean of 20 samples of 0.05 after the prior 0.7: a plain
     * mean while 1 / (n + 1) > 0.1, then weight 0.1 */
    double want = 0.7;
    for (int n = 1; n <= 20; n++)
        want += fmax(1.0 / (n + 1), 0.1) * (0.05 - want);
    CHECKF(c.n_alpha == 20 && fabs(c.alpha - want) < 1e-9, "alpha %.4f, want %.4f", c.alpha, want);
    spa_observe_alpha(&hits, 20, 1); /* one hit in 20 comes out about the same */
    CHECKF(fabs(c.alpha - hits.alpha) < 0.06, "alpha %.3f (as hits: %.3f)", c.alpha, hits.alpha);
    CHECKF(!spa_worth_probe(&c, 0.004), "alpha %.3f: a probe worth making", c.alpha);
    spa_observe_alpha_sum(&c, 20, 19.0);
    CHECKF(c.alpha > 0.8 && spa_worth_probe(&c, 0.004), "alpha %.3f after scores of 0.95", c.alpha);
    spa_ctl before = c;
    spa_observe_alpha_sum(&c, 0, 1.0);
    spa_observe_alpha_sum(&c, 3, -1.0);
    spa_observe_alpha_sum(&c, 2, NAN);
    CHECK(c.n_alpha == before.n_alpha && c.alpha == before.alpha);
    spa_observe_alpha_sum(&c, 2, 5.0); /* at most 1 a token */
    CHECKF(c.n_alpha == before.n_alpha + 2 && c.alpha <= 1.0, "alpha %.3f", c.alpha);
}

static void test_cache_offset(void)
{
    CHECK(spa_cache_offset(500, 0, 0, true, 32) == 0);     /* drafting: all the text */
    CHECK(spa_cache_offset(500, 480, 400, true, 32) == 0); /* drafting after a window: rebuilt whole */
    CHECK(spa_cache_offset(500, 0, 0, false, 0) == 0);     /* no window */
    CHECK(spa_cache_offset(20, 0, 0, false, 32) == 0);     /* a short text: all of it */
    CHECK(spa_cache_offset(32, 0, 0, false, 32) == 0);
    CHECK(spa_cache_offset(33, 0, 0, false, 32) == 1);     /* text 0, then 2..32: 32 rows */
    CHECK(spa_cache_offset(500, 0, 0, false, 32) == 468);  /* a long prompt's first probe */
    CHECK(spa_cache_offset(500, 470, 0, false, 32) == 0);  /* 30 behind: caught up */
    CHECK(spa_cache_offset(500, 468, 0, false, 32) == 0);  /* 32 behind: still */
    CHECK(spa_cache_offset(500, 467, 0, false, 32) == 468);
    CHECK(spa_cache_offset(500, 480, 400, false, 32) == 400); /* the window kept and extended */
    CHECK(spa_cache_offset(500, 460, 400, false, 32) == 468); /* too far behind: a new one */
}

/* The step clock both drafting stages keep a request: a step counts from
 * its start (plus the drafting before it) to the next arrival, once, and
 * only when comparable; what it teaches becomes the stage's prior. */
static void test_step_clock(void)
{
    spa_ctl c, prior;
    spa_init(&c, 4);
    c.cold = 0;
    spa_init(&prior, 4);
    spa_clock k = {0};
    CHECK(!spa_clock_stop(&k, 1.0, true, &c, &prior)); /* no step was running */
    CHECK(c.n_plain == 0);
    spa_clock_start(&k, 1.0, 0.25, 0);
    CHECK(spa_clock_stop(&k, 2.0, true, &c, &prior)); /* a plain step of 1.25 s */
    CHECK(c.n_plain == 1 && fabs(c.t_plain - 1.25) < 1e-12);
    CHECK(prior.n_plain == 1 && prior.t_plain == c.t_plain);
    CHECK(!spa_clock_stop(&k, 3.0, true, &c, &prior)); /* stopped: not again */
    CHECK(c.n_plain == 1);
    spa_clock_start(&k, 3.0, 0.0, 2);
    CHECK(!spa_clock_stop(&k, 9.0, false, &c, &prior)); /* not comparable (a prefill) */
    CHECK(c.n_plain == 1 && c.n_spec == 0);
    spa_clock_start(&k, 10.0, 0.5, 2);
    CHECK(spa_clock_stop(&k, 11.75, true, &c, &prior)); /* 2.25 s verifying 2 drafted tokens */
    CHECK(c.n_spec == 1 && fabs(c.t_token - 0.5) < 1e-12 && prior.n_spec == 1);
}

int main(void)
{
    test_never_accepts();
    test_cold_start();
    test_good_drafter_stays_up();
    test_accepting_but_dear();
    test_moderate();
    test_turns();
    test_stall();
    test_edges();
    test_probe_cost();
    test_fixed_part();
    test_shadow_and_probe();
    test_free_alpha();
    test_worth_probe();
    test_greedy_decline();
    test_least_token();
    test_alpha_sum();
    test_cache_offset();
    test_step_clock();
    return test_finish("test_spec_adapt");
}
