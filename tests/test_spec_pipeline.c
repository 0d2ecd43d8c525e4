/* Speculative decoding through the pipeline, on the shipped tiny target and
 * draft models:
 * - greedy output is token for token that of plain decoding, for a draft
 *   model with k = 2, 4, 8 and auto, drafting ahead on its own thread, and
 *   prompt lookup; with several requests in flight, tight batch limits
 *   (chunked prompts, k trimmed to fit) and a context that fills up;
 * - at temperature 1 the first two tokens follow the target's distribution
 *   (chi-square against probabilities computed with the model runner, at a
 *   1e-3 false-alarm rate), with requests sampled and greedy mixed;
 * - a layers stage that verified rejected drafts and got TRUNCATE holds
 *   exactly the KV cache of a plain run at the same position;
 * - a draft whose vocabulary differs is refused at start, naming both files. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/kv.h"
#include "model/lm.h"
#include "pipeline/client.h"
#include "stages/spec.h"
#include "stages/stage.h"
#include "tests/catch_msg.h"
#include "tests/test.h"

#define MAX_GEN 200

static char target_path[1024], draft_path[1024];
static int g_n_layer = 6; /* the target's layers */

static const char *const PROMPTS[] = {
    "This program is free software; you can",
    "Licensed under the Apache License, Version 2.0 (the",
    "THIS SOFTWARE IS PROVIDED BY THE REGENTS AND CONTRIBUTORS",
    "the the the the the the",
    /* the model continues its last line with the passage it opens with */
    "it under the terms of the GNU General Public License as published by\n"
    "    the Free Software Foundation; either version 2 of the License, or\n"
    "    (at your option) any later version.\n\n"
    "This program is free software; you can redistribute it and/or modify\n    ",
};
#define N_PROMPTS 5

typedef struct result {
    int32_t tok[MAX_GEN];
    int n;
    bool done, failed;
    char error[512];
    long steps, drafted, accepted;
} result;

typedef struct spec_setup {
    const char *draft; /* NULL: plain; a path, or "prompt-lookup" */
    int k;
    bool auto_k;
    int threads;       /* > 0: own thread, pipelined */
    const char *name;
} spec_setup;

/* The synthetic pair: the assistant's random drafts may all be rejected,
 * and the target may sample end of sequence first. */
static bool g_drafts_may_fail;

static void config_for(pl_config *c, const spec_setup *s, int max_batch, int ctx)
{
    pl_config_default(c, target_path, g_n_layer);
    c->limits.max_sequences = 4;
    c->limits.context = ctx;
    c->limits.max_batch_tokens = max_batch;
    sl_err err;
    if (s && s->draft)
        CHECKF(pl_config_add_speculative(c, s->draft, s->k, s->auto_k, s->threads, &err) == 0, "%s",
               err.msg);
}

/* Runs n requests (params[i]) concurrently through c; results in res. */
static int run(const pl_config *c, const sl_gen_params *params, int n, result *res, sl_spec_summary *sum)
{
    sl_pipeline *p;
    sl_err err;
    if (sl_pipeline_open(&p, c, NULL, &err)) {
        fprintf(stderr, "open: %s\n", err.msg);
        return -1;
    }
    uint64_t *ids = calloc((size_t)n, sizeof *ids);
    memset(res, 0, (size_t)n * sizeof *res);
    for (int i = 0; i < n; i++)
        if (sl_pipeline_submit(p, &params[i], &ids[i], &err)) {
            fprintf(stderr, "submit: %s\n", err.msg);
            free(ids);
            sl_pipeline_close(p);
            return -1;
        }
    sl_event ev;
    int rc, left = n;
    while (left > 0 && (rc = sl_pipeline_next(p, &ev, 20000, &err)) == 1) {
        for (int i = 0; i < n; i++) {
            if (ids[i] != ev.request)
                continue;
            result *r = &res[i];
            if (ev.kind == SL_EV_TOKEN && r->n < MAX_GEN) {
                r->tok[r->n++] = ev.token;
            } else if (ev.kind != SL_EV_TOKEN) {
                r->done = true;
                r->failed = ev.kind == SL_EV_ERROR;
                snprintf(r->error, sizeof r->error, "%s", ev.error);
                r->steps = ev.spec_steps;
                r->drafted = ev.spec_drafted;
                r->accepted = ev.spec_accepted;
                left--;
            }
        }
    }
    if (sum)
        sl_pipeline_spec_stats(p, sum);
    sl_pipeline_close(p);
    free(ids);
    return left == 0 ? 0 : -1;
}

static sl_gen_params greedy(const char *prompt, int n_gen)
{
    sl_gen_params gp = {.prompt = prompt, .max_tokens = n_gen};
    sl_sampling_defaults(&gp.sampling);
    gp.sampling.temperature = 0.0f;
    return gp;
}

static void check_same(const result *want, const result *got, int n, const char *what)
{
    for (int i = 0; i < n; i++) {
        CHECKF(!got[i].failed, "%s: request %d failed: %s", what, i, got[i].error);
        bool same = want[i].n == got[i].n &&
                    memcmp(want[i].tok, got[i].tok, (size_t)want[i].n * sizeof want[i].tok[0]) == 0;
        int at = 0;
        while (at < want[i].n && at < got[i].n && want[i].tok[at] == got[i].tok[at])
            at++;
        CHECKF(same, "%s: prompt %d: %d vs %d tokens, first difference at %d", what, i, want[i].n,
               got[i].n, at);
    }
}

static void test_greedy_identity(void)
{
    sl_gen_params gp[N_PROMPTS];
    for (int i = 0; i < N_PROMPTS; i++)
        gp[i] = greedy(PROMPTS[i], 96);
    pl_config c;
    result plain[N_PROMPTS], got[N_PROMPTS];
    config_for(&c, NULL, 256, 512);
    CHECK(run(&c, gp, N_PROMPTS, plain, NULL) == 0);
    for (int i = 0; i < N_PROMPTS; i++)
        CHECKF(plain[i].n == 96, "plain prompt %d made %d tokens", i, plain[i].n);

    const spec_setup setups[] = {
        {draft_path, 2, false, 0, "draft k=2"},
        {draft_path, 4, false, 0, "draft k=4"},
        {draft_path, 8, false, 0, "draft k=8"},
        {draft_path, 8, true, 0, "draft k=auto"},
        {draft_path, 4, false, 1, "draft k=4 pipelined"},
        {"prompt-lookup", 4, false, 0, "prompt lookup k=4"},
        {"prompt-lookup", 8, true, 0, "prompt lookup k=auto"},
    };
    for (size_t s = 0; s < sizeof setups / sizeof setups[0]; s++) {
        config_for(&c, &setups[s], 256, 512);
        sl_spec_summary sum;
        CHECKF(run(&c, gp, N_PROMPTS, got, &sum) == 0, "%s: the run did not finish", setups[s].name);
        check_same(plain, got, N_PROMPTS, setups[s].name);
        /* it did speculate (auto k too: its probes come after so many steps,
         * whatever the machine), and the shipped pair agrees most of the time.
         * The acceptance is asserted on the fixed-k runs only: auto k's
         * drafting follows the step times measured here, and on a loaded
         * machine it may draft nothing but a probe or two, too few tokens for
         * a rate; what auto guarantees is checked above, the plain tokens
         * (its decisions are tested on synthetic times in test_spec_adapt) */
        CHECKF(sum.steps > 0 && sum.drafted > 0, "%s: nothing drafted", setups[s].name);
        if (setups[s].draft == draft_path && !setups[s].auto_k)
            CHECKF(sum.accepted > sum.drafted / 4, "%s: %ld of %ld drafted tokens accepted",
                   setups[s].name, sum.accepted, sum.drafted);
        /* the repeating prompts are where lookup finds its n-grams; auto k
         * drafts only where that pays, which the prompt continuing its own
         * passage does */
        if (setups[s].draft != draft_path && !setups[s].auto_k)
            CHECKF(got[3].accepted > 0, "%s: nothing accepted on a repeating prompt", setups[s].name);
        /* with auto k, where lookup drafts on it follows the step times
         * measured on this machine: a loaded machine can keep auto plain,
         * or (CI's ASan run) have it draft mostly where the n-grams it
         * finds miss (the repeated passage ends within the 96 tokens, and
         * the text after it starts like the prompt's last line: 8 of 35
         * accepted once). Those decisions are tested on synthetic
         * times (test_spec_adapt, test_draft_window); here auto k is held
         * to what it guarantees whatever the clock: plain's tokens, its
         * probes, and the counts below */
        if (setups[s].draft != draft_path && !setups[s].auto_k)
            CHECKF(got[4].accepted > got[4].drafted / 4,
                   "%s: %ld of %ld drafted tokens accepted on the prompt repeating its passage",
                   setups[s].name, got[4].accepted, got[4].drafted);
        /* each verification emits its accepted drafts and one more */
        CHECKF(sum.emitted == sum.accepted + sum.steps, "%s: %ld emitted, %ld accepted, %ld steps",
               setups[s].name, sum.emitted, sum.accepted, sum.steps);
        for (int i = 0; i < N_PROMPTS; i++)
            CHECK(got[i].accepted <= got[i].drafted && got[i].steps <= sum.steps);
        printf("%s: %ld verifications, %ld drafted, %ld accepted\n", setups[s].name, sum.steps,
               sum.drafted, sum.accepted);
    }

    /* Batches of 8 rows: prompts go in chunks and k shrinks to what fits. */
    spec_setup tight = {draft_path, 8, false, 0, "draft k=8, batches of 8 rows"};
    config_for(&c, NULL, 8, 512);
    CHECK(run(&c, gp, N_PROMPTS, plain, NULL) == 0);
    config_for(&c, &tight, 8, 512);
    CHECK(run(&c, gp, N_PROMPTS, got, NULL) == 0);
    check_same(plain, got, N_PROMPTS, tight.name);

    /* A context that fills up: drafts stop at its end, the run stops with it. */
    spec_setup full = {draft_path, 8, false, 0, "draft k=8, context 64"};
    for (int i = 0; i < N_PROMPTS; i++)
        gp[i].max_tokens = 100;
    config_for(&c, NULL, 256, 64);
    CHECK(run(&c, gp, N_PROMPTS, plain, NULL) == 0);
    config_for(&c, &full, 256, 64);
    CHECK(run(&c, gp, N_PROMPTS, got, NULL) == 0);
    check_same(plain, got, N_PROMPTS, full.name);
    CHECKF(plain[0].n < 64, "context 64 let %d tokens through", plain[0].n);
}

/* ---- distribution at temperature 1 ---- */

#define N_SAMPLES 2000
#define MIN_EXPECT 8.0

/* Upper 1e-3 point of chi-square with df degrees of freedom
 * (Wilson-Hilferty; within 1% of tables for df >= 3). */
static double chi2_critical(int df)
{
    double z = 3.0902, a = 2.0 / (9.0 * df);
    double t = 1.0 - a + z * sqrt(a);
    return df * t * t * t;
}

typedef struct bins {
    int n;
    int32_t a[512], b[512]; /* (first, second) token; b = -1: any second token */
    double p[512];
} bins;

/* The prompt's ids as the pipeline feeds them. */
static int32_t g_prompt_ids[64];
static int g_n_prompt;

/* The exact probabilities of the first token and of (first, second) pairs
 * for the likely first tokens, from the model runner. */
static void target_bins(bins *out, sl_sampling sp)
{
    sl_err err;
    sl_lm *lm;
    CHECKF(sl_lm_open(&lm, target_path, 128, 64, &err) == 0, "%s", err.msg);
    int n_vocab = sl_lm_model(lm)->cfg.n_vocab;
    sl_sampler *smp = sl_sampler_new(&sp, n_vocab);
    float *row = malloc((size_t)n_vocab * sizeof *row), *p1 = malloc((size_t)n_vocab * sizeof *p1),
          *p2 = malloc((size_t)n_vocab * sizeof *p2), *probs = malloc((size_t)n_vocab * sizeof *probs);
    int32_t *ids = malloc((size_t)n_vocab * sizeof *ids);
    const float *logits;
    CHECK(sl_lm_eval(lm, g_prompt_ids, g_n_prompt, &logits, &err) == 0);
    memcpy(row, logits + (size_t)(g_n_prompt - 1) * n_vocab, (size_t)n_vocab * sizeof *row);
    sl_spec_dense_probs(smp, row, n_vocab, ids, probs, p1);
    out->n = 0;
    double rest = 1.0;
    for (int t1 = 0; t1 < n_vocab; t1++) {
        if (p1[t1] * N_SAMPLES < MIN_EXPECT)
            continue;
        /* split the first token by its second where that is likely enough */
        sl_lm_truncate(lm, g_n_prompt);
        CHECK(sl_lm_eval(lm, &t1, 1, &logits, &err) == 0);
        memcpy(row, logits, (size_t)n_vocab * sizeof *row);
        sl_spec_dense_probs(smp, row, n_vocab, ids, probs, p2);
        double other = p1[t1];
        for (int t2 = 0; t2 < n_vocab && out->n < 500; t2++) {
            double pj = (double)p1[t1] * p2[t2];
            if (pj * N_SAMPLES < MIN_EXPECT)
                continue;
            out->a[out->n] = t1;
            out->b[out->n] = t2;
            out->p[out->n++] = pj;
            other -= pj;
        }
        out->a[out->n] = t1;
        out->b[out->n] = -1;
        out->p[out->n++] = other;
        rest -= p1[t1];
    }
    out->a[out->n] = -1; /* every unlikely first token */
    out->b[out->n] = -1;
    out->p[out->n++] = rest;
    sl_sampler_free(smp);
    free(row);
    free(p1);
    free(p2);
    free(probs);
    free(ids);
    sl_lm_free(lm);
}

static int bin_of(const bins *b, int32_t t1, int32_t t2)
{
    int any_second = -1;
    for (int i = 0; i < b->n; i++) {
        if (b->a[i] == t1 && b->b[i] == t2)
            return i;
        if (b->a[i] == t1 && b->b[i] == -1)
            any_second = i;
    }
    return any_second >= 0 ? any_second : b->n - 1;
}

/* Filters on the distributions (the target's and the draft's alike). */
typedef struct filters {
    int top_k;
    float top_p, min_p;
} filters;

static void check_distribution(const spec_setup *s, const char *prompt, filters f)
{
    sl_sampling sp;
    sl_sampling_defaults(&sp);
    sp.temperature = 1.0f;
    sp.top_k = f.top_k;
    sp.top_p = f.top_p;
    sp.min_p = f.min_p;
    bins b;
    target_bins(&b, sp);
    sl_gen_params *gp = calloc(N_SAMPLES, sizeof *gp);
    result *res = calloc(N_SAMPLES, sizeof *res);
    for (int i = 0; i < N_SAMPLES; i++) {
        gp[i].prompt = prompt;
        gp[i].max_tokens = 2;
        gp[i].sampling = sp;
        gp[i].sampling.seed = 7000 + (uint64_t)i;
    }
    pl_config c;
    config_for(&c, s, 256, 128);
    c.limits.max_sequences = 16;
    /* greedy requests in the same batches: their q rows are one-hot */
    sl_gen_params *mixed = calloc(N_SAMPLES + N_SAMPLES / 10, sizeof *mixed);
    int n = 0;
    for (int i = 0; i < N_SAMPLES; i++) {
        mixed[n++] = gp[i];
        if (i % 10 == 0)
            mixed[n++] = greedy(PROMPTS[0], 8);
    }
    result *all = calloc((size_t)n, sizeof *all);
    sl_spec_summary sum;
    CHECKF(run(&c, mixed, n, all, &sum) == 0, "%s: the run did not finish", s->name);
    long *count = calloc((size_t)b.n, sizeof *count);
    int at = 0, greedy_first = -1;
    for (int i = 0; i < n; i++) {
        if (mixed[i].sampling.temperature == 0.0f) {
            CHECK(all[i].n == 8);
            if (greedy_first < 0)
                greedy_first = all[i].tok[0];
            CHECK(all[i].tok[0] == greedy_first);
            continue;
        }
        /* one token: the second was end of sequence (id 1), not emitted;
         * none: the first was (a synthetic target samples it now and then) */
        CHECKF((all[i].n == 2 || all[i].n == 1 || (all[i].n == 0 && g_drafts_may_fail)) && !all[i].failed,
               "%s: sample %d: %d tokens %s", s->name, at, all[i].n, all[i].error);
        count[bin_of(&b, all[i].n > 0 ? all[i].tok[0] : 1, all[i].n > 1 ? all[i].tok[1] : 1)]++;
        at++;
    }
    double stat = 0.0;
    int df = -1;
    for (int i = 0; i < b.n; i++) {
        if (b.p[i] <= 0.0) {
            CHECKF(count[i] == 0, "%s: %ld samples in a bin of probability 0", s->name, count[i]);
            continue;
        }
        double e = b.p[i] * at, d = (double)count[i] - e;
        stat += d * d / e;
        df++;
    }
    double crit = chi2_critical(df > 0 ? df : 1);
    CHECKF(df >= 3 && stat < crit, "%s: chi-square %.1f with %d df (critical %.1f at 1e-3)", s->name,
           stat, df, crit);
    /* a random assistant's deterministic drafts may all be rejected: then
     * the test holds the residual sampling to the target's distribution */
    CHECKF(sum.drafted > 0 && (sum.accepted > 0 || g_drafts_may_fail), "%s: %ld drafted, %ld accepted",
           s->name, sum.drafted, sum.accepted);
    printf("%s: chi-square %.1f with %d df (critical %.1f); %ld drafted, %ld accepted\n", s->name,
           stat, df, crit, sum.drafted, sum.accepted);
    free(count);
    free(all);
    free(mixed);
    free(res);
    free(gp);
}

static void distribution_for(const spec_setup *s, const char *prompt, filters f)
{
    /* the prompt's ids, as the pipeline feeds them */
    pl_config c;
    config_for(&c, NULL, 256, 128);
    sl_pipeline *p;
    sl_err err;
    CHECKF(sl_pipeline_open(&p, &c, NULL, &err) == 0, "%s", err.msg);
    sl_gen_params gp = greedy(prompt, 1);
    int32_t *ids;
    int n;
    CHECK(sl_pipeline_tokenize(p, &gp, &ids, &n, &err) == 0 && n <= 64);
    memcpy(g_prompt_ids, ids, (size_t)n * sizeof *ids);
    g_n_prompt = n;
    free(ids);
    sl_pipeline_close(p);

    check_distribution(s, prompt, f);
}

static void test_distribution(void)
{
    filters none = {0, 1.0f, 0.0f};
    spec_setup model = {draft_path, 3, false, 0, "draft k=3, temperature 1"};
    distribution_for(&model, "The", none);
    /* lookup drafts what followed the last match: on repeating text */
    spec_setup lookup = {"prompt-lookup", 3, false, 0, "prompt lookup k=3, temperature 1"};
    distribution_for(&lookup, "of the License, or of the License, or of the", none);
    /* filters leave the draft a support of a few tokens, sent sparse */
    spec_setup topk = {draft_path, 3, false, 0, "draft k=3, temperature 1, top-k 8, top-p 0.9"};
    distribution_for(&topk, "The", (filters){8, 0.9f, 0.0f});
    spec_setup minp = {draft_path, 3, false, 0, "draft k=3, temperature 1, min-p 0.02"};
    distribution_for(&minp, "The", (filters){0, 1.0f, 0.02f});
}

/* Gemma 4's assistant (an mtp stage after sample) on a synthetic gemma4
 * test target and its synthetic assistant: its drafts are deterministic
 * (q one-hot), and the first two tokens still follow the target's
 * distribution. */
static void test_distribution_mtp(void)
{
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char saved[1024], assistant[1100];
    snprintf(saved, sizeof saved, "%s", target_path);
    snprintf(target_path, sizeof target_path, "%s/spec-mtp-target-XXXXXX", tmp);
    snprintf(assistant, sizeof assistant, "%s/spec-mtp-assistant-XXXXXX", tmp);
    CHECK(test_synth("--arch gemma4 --size test --seed 5 --weight-scale 1", target_path) == 0 &&
          test_synth("--arch gemma4-assistant --size test", assistant) == 0);
    g_n_layer = 8;
    spec_setup mtp = {assistant, 3, false, 0, "gemma4 assistant k=3, temperature 1"};
    g_drafts_may_fail = true;
    distribution_for(&mtp, "The", (filters){0, 1.0f, 0.0f});
    g_drafts_may_fail = false;
    g_n_layer = 6;
    remove(target_path);
    remove(assistant);
    snprintf(target_path, sizeof target_path, "%s", saved);
}

/* ---- KV cache after a rejection ---- */

/* Embeds tokens at positions pos0.. of slot 0 and runs them through the
 * layers stage. */
static void feed(sl_stage *embed, sl_stage *layers, const int32_t *tok, int n, int pos0)
{
    uint64_t req[16];
    int32_t seq[16], pos[16];
    uint8_t flags[16];
    for (int i = 0; i < n; i++) {
        req[i] = 1;
        seq[i] = 0;
        pos[i] = pos0 + i;
        flags[i] = i == n - 1;
    }
    pl_msg m;
    sl_err err;
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_BATCH, 1, (uint32_t)n);
    CHECK(add_batch_rows(&m, (uint32_t)n, req, seq, pos, tok, flags, &err) == 0);
    catcher got = {0}, out = {0};
    sl_emit to_catch = {catch_msg, &got}, to_out = {catch_msg, &out};
    CHECK(embed->process(embed, &m, &to_catch, &err) == 0 && got.have);
    pl_msg_close(&m);
    CHECK(layers->process(layers, &got.msg, &to_out, &err) == 0 && out.have);
    CHECK(out.msg.hdr->kind == SLUICE__MSG_KIND__MSG_BATCH);
    pl_msg_close(&got.msg);
    pl_msg_close(&out.msg);
}

static void truncate_slot(sl_stage *layers, int length)
{
    pl_msg m;
    sl_err err;
    int32_t seq = 0;
    uint64_t id = 1;
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_TRUNCATE, 0, 0);
    m.hdr_store.n_seqs = 1;
    m.hdr_store.seqs = &seq;
    m.hdr_store.n_requests = 1;
    m.hdr_store.requests = &id;
    m.hdr_store.length = length;
    catcher out = {0};
    sl_emit to_out = {catch_msg, &out};
    CHECK(layers->process(layers, &m, &to_out, &err) == 0 && out.have);
    CHECK(out.msg.hdr->kind == SLUICE__MSG_KIND__MSG_TRUNCATE); /* passed on */
    pl_msg_close(&out.msg);
    pl_msg_close(&m);
}

static void test_kv_after_rejection(void)
{
    sl_stage_spec es = {.kind = PL_STAGE_EMBED, .model = target_path, .max_sequences = 1,
                        .context = 128, .max_batch_tokens = 16};
    sl_stage_spec ls = es;
    ls.kind = PL_STAGE_LAYERS;
    ls.l1 = 6;
    sl_stage *embed, *plain, *spec;
    sl_err err;
    CHECKF(sl_stage_create(&embed, &es, &err) == 0, "%s", err.msg);
    CHECKF(sl_stage_create(&plain, &ls, &err) == 0, "%s", err.msg);
    CHECKF(sl_stage_create(&spec, &ls, &err) == 0, "%s", err.msg);
    int32_t text[40];
    for (int i = 0; i < 40; i++)
        text[i] = 20 + (i * 37) % 900;
    /* plain: a prompt of 10, then one token a step */
    feed(embed, plain, text, 10, 0);
    for (int p = 10; p < 40; p++)
        feed(embed, plain, text + p, 1, p);
    /* speculative: the same prompt; then verifications of 1 + 4 rows whose
     * drafts go wrong after 2, 0 and 4 accepted tokens */
    feed(embed, spec, text, 10, 0);
    int p = 10;
    const int accepted[] = {2, 0, 4, 1, 3, 2};
    for (int s = 0; p < 40; s++) {
        int a = accepted[s % 6];
        int32_t rows[5];
        for (int j = 0; j < 5; j++)
            rows[j] = p + j < 40 ? text[p + j] : 5;
        if (a < 4)
            rows[1 + a] = 7 + s; /* the first wrong draft */
        for (int j = 2 + a; j < 5; j++)
            rows[j] = 11 + j; /* after it, anything */
        int n = p + 5 <= 40 ? 5 : 40 - p;
        feed(embed, spec, rows, n, p);
        int keep = p + 1 + (a < n - 1 ? a : n - 1); /* the verified row and the accepted drafts */
        truncate_slot(spec, keep);
        p = keep;
    }
    sl_kv *ka = sl_stage_kv(plain), *kb = sl_stage_kv(spec);
    CHECK(ka && kb && sl_kv_len(ka, 0) == 40 && sl_kv_len(kb, 0) == 40);
    for (int il = 0; il < 6; il++) {
        int64_t rows = sl_kv_slots(ka, il) < 40 ? sl_kv_slots(ka, il) : 40;
        size_t bytes = (size_t)(rows * sl_kv_row_bytes(ka, il));
        CHECKF(memcmp(sl_kv_k(ka, 0, il), sl_kv_k(kb, 0, il), bytes) == 0, "layer %d: K differs", il);
        CHECKF(memcmp(sl_kv_v(ka, 0, il), sl_kv_v(kb, 0, il), bytes) == 0, "layer %d: V differs", il);
    }

    /* A replay from position 0 into a slot that still holds another text
     * (its RELEASE lost with a dead peer) starts the slot afresh: the same
     * cache as the plain run's. */
    sl_stage *replay;
    CHECKF(sl_stage_create(&replay, &ls, &err) == 0, "%s", err.msg);
    int32_t other[12];
    for (int i = 0; i < 12; i++)
        other[i] = 900 - 13 * i;
    feed(embed, replay, other, 12, 0);
    feed(embed, replay, text, 10, 0);
    for (int q = 10; q < 40; q++)
        feed(embed, replay, text + q, 1, q);
    sl_kv *kr = sl_stage_kv(replay);
    CHECK(sl_kv_len(kr, 0) == 40);
    for (int il = 0; il < 6; il++) {
        int64_t rows = sl_kv_slots(ka, il) < 40 ? sl_kv_slots(ka, il) : 40;
        size_t bytes = (size_t)(rows * sl_kv_row_bytes(ka, il));
        CHECKF(memcmp(sl_kv_k(ka, 0, il), sl_kv_k(kr, 0, il), bytes) == 0, "replay layer %d: K differs", il);
    }
    sl_stage_destroy(replay);
    sl_stage_destroy(embed);
    sl_stage_destroy(plain);
    sl_stage_destroy(spec);
}

static void test_vocab_mismatch(void)
{
    char other[1100];
    snprintf(other, sizeof other, "%s/other-vocab-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    CHECK(test_synth("--arch gemma3 --size test --seed 3", other) == 0);
    pl_config c;
    spec_setup s = {other, 4, false, 0, "other vocabulary"};
    config_for(&c, &s, 256, 128);
    sl_pipeline *p = NULL;
    sl_err err;
    CHECK(sl_pipeline_open(&p, &c, NULL, &err) == -1);
    CHECKF(strstr(err.msg, other) && strstr(err.msg, target_path) && strstr(err.msg, "vocabulary"),
           "%s", err.msg);
    remove(other);
}

int main(void)
{
    const char *src = getenv("SLUICE_SRC");
    snprintf(target_path, sizeof target_path, "%s/models/tiny-gemma3.gguf", src ? src : ".");
    snprintf(draft_path, sizeof draft_path, "%s/models/tiny-gemma3-draft.gguf", src ? src : ".");
    test_greedy_identity();
    test_kv_after_rejection();
    test_distribution();
    test_distribution_mtp();
    test_vocab_mismatch();
    return test_finish("test_spec_pipeline");
}
