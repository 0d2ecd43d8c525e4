/* The driver's prefix cache (pipeline.c) on the shipped tiny Gemma 3,
 * greedy, one process with two KV slots: a request whose prompt begins with
 * a finished request's prompt and answer prefills only the rest (n_cached)
 * and gives the tokens a pipeline without the cache gives; a short match
 * (the BOS) takes an empty slot rather than evict a long cache; a request
 * cancelled mid-answer leaves a cache the next request reuses, with the
 * same tokens as without. With limits.prefix_cache: full (one slot), a
 * shared beginning that ends far behind the slot's end (past what a
 * sliding-window ring keeps) is reused too, with the same tokens as without
 * the cache; the ring cache (prefix_cache: true) cannot reuse it. */
#include "pipeline/client.h"
#include "tests/test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct answer {
    int32_t tok[256];
    int n, n_prompt, n_cached;
    long spec_drafted;
    char text[2048];
    size_t len;
    bool done;
} answer;

/* Runs one request to its end; cancel_after > 0 cancels it after that many
 * tokens. */
static void ask(sl_pipeline *p, const char *prompt, int n, int cancel_after, answer *a)
{
    memset(a, 0, sizeof *a);
    sl_gen_params gp = {.prompt = prompt, .max_tokens = n};
    sl_sampling_defaults(&gp.sampling);
    gp.sampling.temperature = 0;
    uint64_t id;
    sl_err err;
    if (sl_pipeline_submit(p, &gp, &id, &err)) {
        CHECKF(0, "submit: %s", err.msg);
        return;
    }
    sl_event ev;
    while (sl_pipeline_next(p, &ev, 30000, &err) == 1) {
        if (ev.kind == SL_EV_TOKEN) {
            if (a->n < 256)
                a->tok[a->n++] = ev.token;
            if (a->len + (size_t)ev.text_len < sizeof a->text - 1) {
                memcpy(a->text + a->len, ev.text, (size_t)ev.text_len);
                a->len += (size_t)ev.text_len;
            }
            if (a->n == cancel_after)
                sl_pipeline_cancel(p, id);
            continue;
        }
        a->done = ev.kind == SL_EV_DONE;
        a->n_prompt = ev.n_prompt;
        a->n_cached = ev.n_cached;
        a->spec_drafted = ev.spec_drafted;
    }
}

static bool same_tokens(const answer *x, const answer *y)
{
    return x->n == y->n && memcmp(x->tok, y->tok, (size_t)x->n * sizeof x->tok[0]) == 0;
}

static const char *draft_model; /* set: speculative decoding with this draft */

static sl_pipeline *open_slots(const char *model, int slots, bool cache, bool full)
{
    pl_config c;
    pl_config_default(&c, model, 6);
    sl_err err;
    if (draft_model && pl_config_add_speculative(&c, draft_model, 4, false, 0, &err)) {
        fprintf(stderr, "speculative: %s\n", err.msg);
        return NULL;
    }
    c.limits.max_sequences = slots;
    c.limits.context = 512;
    c.limits.max_batch_tokens = 64;
    c.limits.prefix_cache = cache;
    c.limits.prefix_full = full;
    sl_pipeline *p;
    if (sl_pipeline_open(&p, &c, NULL, &err)) {
        fprintf(stderr, "open: %s\n", err.msg);
        return NULL;
    }
    return p;
}

static sl_pipeline *open_pipeline(const char *model, bool cache) { return open_slots(model, 2, cache, false); }

/* A system prompt shared by two conversations, each of them longer than
 * the tiny model's window (128) plus the ring's slack: the second reuses
 * the first's slot only with the full cache. */
static void test_full(const char *model)
{
    char sys[256], e_prompt[3400], f_prompt[3400], tail[3000] = "";
    snprintf(sys, sizeof sys, "You are a careful assistant. Answer briefly and cite the license text. ");
    for (int i = 0; i < 40; i++)
        strcat(tail, i % 2 ? " and distribute copies of the Software" : " permission to use, copy, modify");
    snprintf(e_prompt, sizeof e_prompt, "%sQuestion one:%s", sys, tail);
    snprintf(f_prompt, sizeof f_prompt, "%sSecond question, another text:%s", sys, tail + 10);
    sl_pipeline *full = open_slots(model, 1, true, true), *ring = open_slots(model, 1, true, false),
                *off = open_slots(model, 1, false, false);
    if (!full || !ring || !off) {
        CHECK(0);
        return;
    }
    answer e, f, f_ring, f_off;
    ask(full, e_prompt, 8, 0, &e);
    ask(full, f_prompt, 8, 0, &f);
    ask(ring, e_prompt, 8, 0, &e);
    ask(ring, f_prompt, 8, 0, &f_ring);
    ask(off, f_prompt, 8, 0, &f_off);
    CHECKF(e.n_prompt > 128 + 128, "the first conversation is past the ring (%d tokens)", e.n_prompt);
    CHECKF(f.n_cached >= 12 && f.n_cached < 40, "full: the system prompt is reused (%d cached)", f.n_cached);
    CHECKF(f_ring.n_cached == 0, "ring: too far back to reuse (%d cached)", f_ring.n_cached);
    CHECKF(same_tokens(&f, &f_off) && same_tokens(&f_ring, &f_off) && f.n == 8,
           "full: the same tokens as without the cache");
    sl_pipeline_close(full);
    sl_pipeline_close(ring);
    sl_pipeline_close(off);
}

/* With a draft stage: a reused request (the first's prompt and answer, then
 * more) is drafted for from its first token, and its tokens are those of
 * the same speculative pipeline without the cache. */
static void test_speculative(const char *model, const char *draft, const char *p1)
{
    draft_model = draft;
    sl_pipeline *on = open_slots(model, 2, true, false), *off = open_slots(model, 2, false, false);
    draft_model = NULL;
    if (!on || !off) {
        CHECK(0);
        return;
    }
    answer a, b, b_off;
    char b_prompt[2600];
    ask(on, p1, 16, 0, &a);
    snprintf(b_prompt, sizeof b_prompt, "%s%.*s and more", p1, (int)a.len, a.text);
    ask(on, b_prompt, 24, 0, &b);
    ask(off, b_prompt, 24, 0, &b_off);
    CHECKF(a.done && a.spec_drafted > 0, "speculation drafts (%ld)", a.spec_drafted);
    CHECKF(b.done && b.n_cached >= a.n_prompt, "speculative: b reuses a's cache (%d cached, a's prompt %d)",
           b.n_cached, a.n_prompt);
    CHECKF(b.spec_drafted > 0, "the draft stage drafts for the reused request (%ld drafted)", b.spec_drafted);
    CHECKF(same_tokens(&b, &b_off) && b.n > 0, "speculative: the same tokens with and without the cache");
    sl_pipeline_close(on);
    sl_pipeline_close(off);
}

int main(void)
{
    const char *src = getenv("SLUICE_SRC");
    if (!src) {
        fprintf(stderr, "SLUICE_SRC is not set\n");
        return 1;
    }
    char model[512], b_prompt[2600], d_prompt[512];
    snprintf(model, sizeof model, "%s/models/tiny-gemma3.gguf", src);
    const char *p1 = "Licensed under the Apache License, Version 2.0 (the";
    const char *p2 = "This program is free software; you can redistribute it";
    const char *p3 = "Permission is hereby granted, free of charge, to any person obtaining";
    sl_pipeline *on = open_pipeline(model, true), *off = open_pipeline(model, false);
    if (!on || !off)
        return 1;
    answer a, b, b_off, c, cut, d, d_off;
    ask(on, p1, 16, 0, &a);
    CHECKF(a.done && a.n == 16 && a.n_cached == 0, "first request: %d tokens, %d cached", a.n, a.n_cached);
    ask(on, p2, 8, 0, &c); /* shares only the BOS with a's slot: takes the empty one */
    CHECKF(c.done && c.n_cached == 0, "a BOS match does not evict a's cache (%d cached)", c.n_cached);
    snprintf(b_prompt, sizeof b_prompt, "%s%.*s and more", p1, (int)a.len, a.text);
    ask(on, b_prompt, 16, 0, &b);
    ask(off, b_prompt, 16, 0, &b_off);
    /* a's slot holds its prompt and 15 answer tokens (the 16th was never fed) */
    CHECKF(b.n_cached >= a.n_prompt && b.n_cached <= a.n_prompt + 15, "b reuses a's cache: %d cached of %d (a: %d)",
           b.n_cached, b.n_prompt, a.n_prompt);
    CHECKF(b_off.n_cached == 0, "no cache, nothing cached (%d)", b_off.n_cached);
    CHECKF(same_tokens(&b, &b_off), "b: same tokens with and without the cache");
    ask(on, p3, 200, 5, &cut); /* cancelled after 5 tokens */
    CHECKF(!cut.done && cut.n >= 5, "the cancelled request ended with an error after %d tokens", cut.n);
    snprintf(d_prompt, sizeof d_prompt, "%s, a copy", p3);
    ask(on, d_prompt, 16, 0, &d);
    ask(off, d_prompt, 16, 0, &d_off);
    CHECKF(d.n_cached >= cut.n_prompt - 1, "d reuses the cancelled request's cache: %d cached (its prompt: %d)",
           d.n_cached, cut.n_prompt);
    CHECKF(same_tokens(&d, &d_off), "d: same tokens with and without the cache");
    CHECK(sl_pipeline_active(on) == 0 && sl_pipeline_active(off) == 0);
    sl_pipeline_close(on);
    sl_pipeline_close(off);
    test_full(model);
    char draft[512];
    snprintf(draft, sizeof draft, "%s/models/tiny-gemma3-draft.gguf", src);
    test_speculative(model, draft, p1);
    return test_finish("test_prefix_cache");
}
