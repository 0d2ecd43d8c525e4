/* The draft stage's probe window (stages/draft.c, DRAFT_WINDOW 32): with
 * adaptive k and nothing being drafted, a probe whose cache would have to
 * catch up on more than 32 tokens rebuilds it from the text's first token
 * and its last 31 instead, at cache positions 0..31; at prefill the stage
 * takes in the first probe's window as far as the prompt holds it (the
 * text's first token and the prompt's last 32 - 8 - 1). Driven by hand on
 * the shipped tiny draft model, a sampled request (its drafted token's
 * distribution q travels with the batch):
 * - the first probe after a 40-token prompt and the warm-up's plain steps
 *   sends the q of a whole-model run of the draft on exactly the prefill's
 *   window and the plain steps' tokens after it (any token or position
 *   mapped wrongly changes it), which differs from the q of the whole text
 *   (the window is in effect);
 * - after the probe's token is accepted (and what the stage drafted ahead
 *   in its idle time cut away or used), later drafts' q are those of the
 *   window kept and extended (a probe soon after: the controller is close
 *   to drafting), of a new one, or of the whole text (drafting);
 * - a fixed k (no probes) drafts from the whole text, as always. */
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "catch_msg.h"
#include "model/lm.h"
#include "msg/draftq.h"
#include "stages/sampler.h"
#include "stages/spec.h"
#include "stages/stage.h"
#include "test.h"
#include "util/clock.h"

#define WINDOW 32
/* the prompt's tokens the prefill takes in (WINDOW less SPA_WARM_PLAIN):
 * text[0] and text[PROMPT - PREFILL_KEEP + 1 .. PROMPT) */
#define PREFILL_KEEP 24
#define PROMPT 40
#define MAX_TEXT 256
/* A plain step as the stage sees it (the time from its answer to the next
 * batch); a step verifying a drafted token takes 1.85 times as long. The
 * first probe's token is accepted, the later ones rejected: after the
 * first, drafting is predicted at 0.97 of plain decoding (could pay with
 * every token accepted, close to paying now), so the stage probes again
 * 8 steps later, which catches up on 8 tokens of the window it keeps. */
#define STEP_US 40000

static char target_path[1024], draft_path[1024];
static int n_vocab;
static sl_lm *g_ref; /* the draft model, whole: the references */

typedef struct probe {
    int k;              /* drafted rows in the answer */
    int32_t tok[8];
    float *q;           /* k dense rows */
} probe;

/* The clock of this process (util/clock.h's sl_now_s, defined here, so the
 * linker takes it instead of util/clock.c's): it moves only when pace says
 * a step's time passed. The stage then measures exactly the steps above,
 * the machine's speed no part of them: paced by the real clock, a loaded
 * machine's slow drafting and catch-up added to or hid in the steps, the
 * controller went far from the 0.97 above, and no later probe came within
 * 120 steps (or one came after 67). Nothing here waits on the clock. */
static double g_clock = 1000.0;
static float g_temp = 1.0f; /* the request's temperature (0: greedy, no q) */
/* the target's probability of a plain step's sampled token (PL_TOKEN_P on
 * one-row batches, as the driver sends it); < 0: not sent */
static float g_tok_p = -1.0f;
double sl_now_s(void)
{
    return g_clock;
}

/* us microseconds pass (from the last answer to the next batch). */
static void pace(int us)
{
    g_clock += us * 1e-6;
}

/* Sends one batch of request 1 in slot 0: tok[0..n) at pos0.., the last
 * row wanted; the draft stage's answer's drafted rows go to out. */
static void send(sl_stage *st, const int32_t *tok, int n, int pos0, probe *out)
{
    uint64_t req[64];
    int32_t seq[64], pos[64];
    uint8_t flags[64];
    for (int i = 0; i < n; i++) {
        req[i] = 1;
        seq[i] = 0;
        pos[i] = pos0 + i;
        flags[i] = i == n - 1;
    }
    Sluice__ReqParams pr;
    sluice__req_params__init(&pr);
    pr.request_id = 1;
    pr.temperature = g_temp;
    pr.seed = 3;
    Sluice__ReqParams *prs = &pr;
    pl_msg m;
    sl_err err;
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_BATCH, 1, (uint32_t)n);
    pl_msg_set_params(&m, &prs, 1);
    CHECK(add_batch_rows(&m, (uint32_t)n, req, seq, pos, tok, flags, &err) == 0);
    float tok_p = g_tok_p;
    if (n == 1 && g_tok_p >= 0.0f)
        CHECK(pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_TOKEN_P, SLUICE__DTYPE__DT_F32, 1, 0, &tok_p, NULL, NULL,
                         &err) == 0);
    catcher c = {0};
    sl_emit to = {catch_msg, &c};
    CHECKF(st->process(st, &m, &to, &err) == 0, "%s", err.msg);
    pl_msg_close(&m);
    CHECK(c.have && c.msg.hdr->kind == SLUICE__MSG_KIND__MSG_BATCH);
    uint32_t rows = c.msg.hdr->n_rows;
    const int32_t *otok = pl_msg_i32(&c.msg, SLUICE__PAYLOAD_KIND__PL_TOKEN, rows, &err);
    CHECK(otok != NULL && rows >= (uint32_t)n);
    out->k = (int)rows - n;
    CHECK(out->k <= 8);
    for (int j = 0; j < out->k; j++)
        out->tok[j] = otok[n + j];
    if (out->k > 0 && g_temp > 0.0f) {
        uint64_t starts[16];
        pl_draftq q;
        CHECKF(pl_draftq_view(&c.msg, (uint32_t)out->k, n_vocab, starts, &q, &err) == 0, "%s", err.msg);
        CHECK(q.n_rows == (uint32_t)out->k);
        for (int j = 0; j < out->k; j++)
            pl_draftq_dense(&q, (uint32_t)j, out->tok[j], out->q + (size_t)j * n_vocab);
    }
    pl_msg_close(&c.msg);
}

/* The draft model's q after the given tokens (a fresh whole-model run at
 * positions 0..n-1), as the stage's request transforms it. */
static void ref_q(const int32_t *tok, int n, float *q)
{
    sl_err err;
    const float *logits;
    sl_lm_truncate(g_ref, 0);
    CHECKF(sl_lm_eval(g_ref, tok, n, &logits, &err) == 0, "%s", err.msg);
    sl_sampling sp;
    sl_sampling_defaults(&sp);
    sp.temperature = 1.0f;
    sp.repeat_penalty = 1.0f;
    sl_sampler *smp = sl_sampler_new(&sp, n_vocab);
    float *row = malloc((size_t)n_vocab * sizeof *row), *probs = malloc((size_t)n_vocab * sizeof *probs);
    int32_t *ids = malloc((size_t)n_vocab * sizeof *ids);
    memcpy(row, logits + (size_t)(n - 1) * n_vocab, (size_t)n_vocab * sizeof *row);
    sl_spec_dense_probs(smp, row, n_vocab, ids, probs, q);
    free(row);
    free(probs);
    free(ids);
    sl_sampler_free(smp);
}

static double max_diff(const float *a, const float *b)
{
    double d = 0.0;
    for (int t = 0; t < n_vocab; t++)
        d = fmax(d, fabs((double)a[t] - b[t]));
    return d;
}

static sl_stage *open_stage(bool auto_k, int k, bool pipelined)
{
    sl_stage_spec sp = {.kind = PL_STAGE_DRAFT, .model = target_path, .draft_model = draft_path,
                        .max_sequences = 2, .context = MAX_TEXT, .max_batch_tokens = 64, .spec_k = k,
                        .spec_auto = auto_k, .spec_pipelined = pipelined};
    sl_stage *st;
    sl_err err;
    CHECKF(sl_stage_create(&st, &sp, &err) == 0, "%s", err.msg);
    return st;
}

/* Sends the prompt, then plain steps (each the next token of text) until
 * the stage drafts; returns the text's length then (the drafts follow it). */
static int until_probe(sl_stage *st, int32_t *text, probe *pr)
{
    send(st, text, PROMPT, 0, pr);
    CHECK(pr->k == 0); /* nothing measured yet: plain first */
    int n = PROMPT;
    while (pr->k == 0 && n < 80) {
        pace(STEP_US);
        send(st, text + n, 1, n, pr);
        n++;
    }
    CHECKF(pr->k > 0, "no probe within %d plain steps", n - PROMPT);
    return n;
}

static void test_window(void)
{
    int32_t text[MAX_TEXT], win[MAX_TEXT];
    for (int i = 0; i < MAX_TEXT; i++) /* deterministic ids past the special tokens */
        text[i] = 10 + (int32_t)(((uint32_t)i * 2654435761u) >> 8) % (uint32_t)(n_vocab - 10);
    text[0] = 2; /* BOS */
    float *q = malloc(8 * (size_t)n_vocab * sizeof *q), *want = malloc((size_t)n_vocab * sizeof *want),
          *full = malloc((size_t)n_vocab * sizeof *full);
    probe pr = {.q = q};

    sl_stage *st = open_stage(true, 8, true);
    int n = until_probe(st, text, &pr);
    /* the probe drafted after the prefill's window (text[0] and the
     * prompt's last 23 tokens) and the plain steps' tokens */
    CHECKF(n > WINDOW && pr.k == 1, "probe at %d tokens drafted %d", n, pr.k);
    int off = PROMPT - PREFILL_KEEP, m0 = 0;
    float *first = malloc((size_t)n_vocab * sizeof *first);
    memcpy(first, q, (size_t)n_vocab * sizeof *q);

    /* accepted: the text goes on with the drafted token. Plain steps
     * follow, and the stage drafts ahead in its idle time after each probe
     * (pipelined), which the next batch cuts away again (or uses, when its
     * guess was right). Each later probe drafts from the window kept and
     * extended (when at most 32 tokens came since) or from a new one. */
    text[n] = pr.tok[0];
    CHECK(st->idle(st) == 1); /* drafted ahead */
    /* the probes' q, checked after the run (the checks' time would count
     * as the stage's step time) */
    int lens[16], n_probes = 0;
    float *later = malloc(16 * (size_t)n_vocab * sizeof *later);
    for (int at = n + 1; at < n + 120 && n_probes < 2; at++) {
        pace(pr.k > 0 ? STEP_US * 185 / 100 : STEP_US);
        send(st, text + at, 1, at, &pr);
        if (pr.k == 0)
            continue;
        int len = at + 1; /* text[0..len) precedes the draft */
        lens[n_probes] = len;
        memcpy(later + (size_t)n_probes++ * n_vocab, q, (size_t)n_vocab * sizeof *q);
        if (pr.tok[0] == text[len]) /* rejected too */
            text[len] = (text[len] + 1) % n_vocab;
        CHECK(st->idle(st) >= 0); /* drafts ahead, as if all were accepted */
    }
    win[m0++] = text[0];
    for (int t = off + 1; t < n; t++)
        win[m0++] = text[t];
    ref_q(win, m0, want);
    ref_q(text, n, full);
    double d = max_diff(first, want), d_full = max_diff(first, full);
    CHECKF(d < 1e-4, "the probe's q differs from the window's by %g", d);
    CHECKF(d_full > 1e-3, "the probe's q is the whole text's (differs by %g)", d_full);
    printf("probe at %d tokens: q within %.2g of the window's, %.2g from the whole text's\n", n, d, d_full);
    free(first);
    CHECKF(n_probes > 0, "no probe in 120 plain steps after the first");
    CHECKF(lens[0] - n <= WINDOW, "the second probe came %d tokens after the first", lens[0] - n);
    /* a probe keeps the window when it catches up on at most 32 tokens
     * (those since the last probe), else takes a new one; once drafting
     * pays, the cache holds the whole text */
    int prev = n;
    for (int i = 0; i < n_probes; i++) {
        int len = lens[i], m = 0;
        const float *got = later + (size_t)i * n_vocab;
        win[m++] = text[0];
        for (int t = off + 1; t < len; t++)
            win[m++] = text[t];
        ref_q(win, m, want);
        double d_kept = len - prev <= WINDOW ? max_diff(got, want) : 1.0;
        win[0] = text[0];
        memcpy(win + 1, text + len - (WINDOW - 1), (WINDOW - 1) * sizeof *win);
        ref_q(win, WINDOW, want);
        double d_new = max_diff(got, want);
        ref_q(text, len, full);
        double d_whole = max_diff(got, full);
        d = fmin(d_kept, fmin(d_new, d_whole));
        CHECKF(d < 1e-4, "the draft at %d tokens: q differs from the kept window's by %g, a new one's by %g, "
               "the whole text's by %g", len, d_kept, d_new, d_whole);
        const char *what = d == d_kept ? "the window kept" : d == d_new ? "a new window" : "the whole text";
        printf("draft at %d tokens: %s (q within %.2g)\n", len, what, d);
        off = d == d_kept ? off : d == d_new ? len - WINDOW : 0;
        prev = len;
    }
    free(later);
    sl_stage_destroy(st);

    /* fixed k: the whole text, whatever its length */
    st = open_stage(false, 1, false);
    send(st, text, PROMPT + 20, 0, &pr);
    CHECK(pr.k == 1);
    ref_q(text, PROMPT + 20, full);
    d = max_diff(q, full);
    CHECKF(d < 1e-4, "fixed k: q differs from the whole text's by %g", d);
    sl_stage_destroy(st);
    free(q);
    free(want);
    free(full);
}

/* Ids past the special tokens that the draft cannot predict. */
static void unpredictable_text(int32_t *text)
{
    for (int i = 0; i < MAX_TEXT; i++)
        text[i] = 10 + (int32_t)(((uint32_t)i * 2654435761u) >> 8) % (uint32_t)(n_vocab - 10);
    text[0] = 2;
}

/* The tokens a fresh stage drafts over the prompt and 130 plain steps of
 * text (a rejected draft: the text goes on as it was). */
static int drafted_in_130(const int32_t *text, probe *pr)
{
    sl_stage *st = open_stage(true, 8, false);
    send(st, text, PROMPT, 0, pr);
    int drafted = pr->k;
    for (int at = PROMPT; at < PROMPT + 130; at++) {
        pace(STEP_US);
        send(st, text + at, 1, at, pr);
        drafted += pr->k;
        if (pr->k > 0)
            pace(STEP_US * 85 / 100);
    }
    sl_stage_destroy(st);
    return drafted;
}

/* text past the prompt: the draft's own greedy continuation of it. */
static void own_continuation(int32_t *text)
{
    sl_err err;
    const float *logits;
    sl_lm_truncate(g_ref, 0);
    CHECKF(sl_lm_eval(g_ref, text, PROMPT, &logits, &err) == 0, "%s", err.msg);
    for (int i = PROMPT; i < MAX_TEXT; i++) {
        text[i] = sl_argmax(logits + (size_t)(i == PROMPT ? PROMPT - 1 : 0) * n_vocab, n_vocab);
        if (i + 1 < MAX_TEXT)
            CHECKF(sl_lm_eval(g_ref, text + i, 1, &logits, &err) == 0, "%s", err.msg);
    }
}

/* Up to 60 steps of a fresh stage along text from its first probe, a step
 * verifying k drafted tokens costing 0.1 k more; how many steps drafted
 * (*steps: how many ran). exact: every draft must be the text's own. */
static int drafting_steps(int32_t *text, probe *pr, bool exact, int *steps)
{
    sl_stage *st = open_stage(true, 8, false);
    int n = until_probe(st, text, pr);
    int drafting = 0;
    *steps = 0;
    while (n + 9 < MAX_TEXT - 8 && *steps < 60) {
        int a = 0;
        while (a < pr->k && pr->tok[a] == text[n + a])
            a++;
        if (exact)
            CHECK(a == pr->k);
        pace(STEP_US + STEP_US * pr->k / 10);
        n += a;
        send(st, text + n, 1, n, pr);
        n++;
        (*steps)++;
        drafting += pr->k > 0;
    }
    sl_stage_destroy(st);
    return drafting;
}

/* A greedy request's probes (stages/draft.c, spa_worth_probe): on text the
 * draft cannot predict (the ids above) each probe's catch-up scores the
 * draft at ~0 on the text (0 of the ~10 generated tokens at the first),
 * which could not pay even with drafted tokens nearly free (the catch-up's
 * rows take no time on this clock), so the probes draft nothing: no
 * drafted row in 130 steps (before, the first probe drafted after the
 * warm-up, and later ones every 16, 32, 64 steps). On the draft's own
 * greedy continuation the same stage drafts on most steps. */
static void test_greedy_decline(void)
{
    int32_t text[MAX_TEXT];
    unpredictable_text(text);
    g_temp = 0.0f;
    probe pr = {0};
    int drafted = drafted_in_130(text, &pr);
    CHECKF(drafted == 0, "%d tokens drafted in 130 steps of text the draft cannot predict", drafted);
    own_continuation(text);
    int steps, drafting = drafting_steps(text, &pr, true, &steps);
    CHECKF(drafting >= steps / 2, "drafted on %d of %d steps of the draft's own continuation", drafting, steps);
    g_temp = 1.0f;
}

/* A sampled request's probes (stages/draft.c, shadow_expected): each
 * plain step's token comes with the target's probability of it (0.5), and
 * a probe's catch-up scores min(1, q(y) / 0.5) against the draft's q of
 * each generated token, the expected acceptance of a token drafted there.
 * On text the draft cannot predict the scores are ~0 and the probes draft
 * nothing in 130 steps (before, a sampled request's probe had no estimate
 * and drafted at the first probe and every 16, 32, 64 steps after); on the
 * draft's own continuation (at temperature 0.1, so its q of the next token
 * is about 1) the same stage drafts on most steps. */
static void test_sampled_decline(void)
{
    int32_t text[MAX_TEXT];
    unpredictable_text(text);
    g_temp = 1.0f;
    g_tok_p = 0.5f;
    float *q = malloc(8 * (size_t)n_vocab * sizeof *q);
    probe pr = {.q = q};
    int drafted = drafted_in_130(text, &pr);
    CHECKF(drafted == 0, "%d tokens drafted in 130 sampled steps of text the draft cannot predict", drafted);
    own_continuation(text);
    g_temp = 0.1f;
    int steps, drafting = drafting_steps(text, &pr, false, &steps);
    CHECKF(drafting >= steps / 2, "drafted on %d of %d sampled steps of the draft's own continuation", drafting,
           steps);
    free(q);
    g_temp = 1.0f;
    g_tok_p = -1.0f;
}

int main(void)
{
    const char *src = getenv("SLUICE_SRC");
    snprintf(target_path, sizeof target_path, "%s/models/tiny-gemma3.gguf", src ? src : ".");
    snprintf(draft_path, sizeof draft_path, "%s/models/tiny-gemma3-draft.gguf", src ? src : ".");
    sl_err err;
    CHECKF(sl_lm_open(&g_ref, draft_path, MAX_TEXT, MAX_TEXT, &err) == 0, "%s", err.msg);
    n_vocab = sl_lm_model(g_ref)->cfg.n_vocab;
    test_window();
    test_greedy_decline();
    test_sampled_decline();
    sl_lm_free(g_ref);
    return test_finish("test_draft_window");
}
