#include "stages/spec_greedy.h"

#include <stdlib.h>
#include <string.h>

#include "stages/sampler.h"
#include "util/clock.h"
#include "stages/spec_adapt.h"

/* Evaluates n tokens in batches the scratch holds (long prompts);
 * *logits then holds the rows of the last batch, *last_row the index of
 * the final token's row in it. */
static int eval_chunked(sl_lm *lm, const int32_t *tokens, int n, const float **logits,
                        int *last_row, sl_err *err)
{
    for (int at = 0; at < n; at += lm->max_tokens) {
        int len = n - at < lm->max_tokens ? n - at : lm->max_tokens;
        if (sl_lm_eval(lm, tokens + at, len, logits, err) < 0)
            return -1;
        *last_row = len - 1;
    }
    return 0;
}

/* Rows of a long catch-up whose logits also score the draft on the text
 * (its greedy pick against the token that followed; generated tokens only:
 * a draft agrees with the target's own text far more than with a prompt),
 * as the draft stage's probes do (stages/draft.c, SHADOW_ROWS). */
#define SHADOW_ROWS 16

/* What a long catch-up saw: of seen generated tokens, the draft's greedy
 * pick was hits; a row took row_s seconds. */
typedef struct catch_up_score {
    int seen, hits;
    double row_s;
} catch_up_score;

/* Brings the draft's cache up to all of hist but its last token; adds
 * the seconds of a long catch-up (after plain steps) to *long_s and
 * scores its last rows (tokens from n_prompt on) into *sc. */
static int draft_catch_up(sl_lm *draft, const int32_t *hist, int n_hist, int n_prompt, double *long_s,
                          catch_up_score *sc, sl_err *err)
{
    const float *logits;
    int row, len = sl_lm_len(draft), todo = n_hist - 1 - len;
    *sc = (catch_up_score){0};
    if (todo <= 0)
        return 0;
    double t0 = sl_now_s();
    if (eval_chunked(draft, hist + len, todo, &logits, &row, err) < 0)
        return -1;
    if (todo <= 2)
        return 0;
    double dt = sl_now_s() - t0;
    *long_s += dt;
    sc->row_s = dt / todo;
    /* the last chunk's rows hold hist[first..n_hist-1); row i predicts
     * hist[first + i + 1], the last row the token drafting starts from */
    int n_vocab = draft->model->cfg.n_vocab, first = len + (todo - 1) / draft->max_tokens * draft->max_tokens;
    for (int i = row; i >= 0 && sc->seen < SHADOW_ROWS; i--) {
        int next = first + i + 1;
        if (next < n_prompt)
            break;
        sc->seen++;
        sc->hits += sl_argmax(logits + (size_t)i * n_vocab, n_vocab) == hist[next];
    }
    return 0;
}

/* Proposes k tokens greedily after hist's last token; with adaptive k and
 * not drafting (a probe), none where the acceptance its catch-up saw could
 * not pay (spa_worth_probe, as the draft stage's probes: stages/draft.c).
 * Returns how many. */
static int draft_propose(sl_lm *draft, const int32_t *hist, int n_hist, int n_prompt, int k,
                         int32_t *drafted, double *long_s, spa_ctl *spa, sl_err *err)
{
    catch_up_score sc;
    if (draft_catch_up(draft, hist, n_hist, n_prompt, long_s, &sc, err) < 0)
        return -1;
    if (spa && !spa->drafting && sc.seen > 0) {
        spa_observe_alpha(spa, sc.seen, sc.hits);
        if (!spa_worth_probe(spa, spa_least_token_s(sc.row_s))) {
            spa_decline(spa);
            return 0;
        }
    }
    int n_vocab = draft->model->cfg.n_vocab;
    int32_t tok = hist[n_hist - 1];
    for (int i = 0; i < k; i++) {
        const float *logits;
        if (sl_lm_eval(draft, &tok, 1, &logits, err) < 0)
            return -1;
        tok = drafted[i] = sl_argmax(logits, n_vocab);
    }
    return k;
}

/* Prompt lookup sizes: bigram to 4-gram matches, as far back as the
 * history goes. */
#define LOOKUP_NGRAM_MIN 1
#define LOOKUP_NGRAM_MAX 4
#define SPEC_K_MAX SL_SPEC_K_MAX

/* State of one speculative generation. */
typedef struct spec_run {
    sl_lm *target, *draft;
    const sl_spec_opts *opts;
    int n_prompt;
    sl_spec_stats stats;
    spa_ctl spa;             /* auto k */
    double catch_up_s;       /* drafting after plain steps: not a step's cost */
} spec_run;

/* Drafts up to k tokens into drafted; returns how many. */
static int propose(spec_run *r, const int32_t *hist, int n_hist, int k, int32_t *drafted,
                   sl_err *err)
{
    if (k == 0)
        return 0;
    if (r->opts->prompt_lookup)
        return sl_prompt_lookup(hist, n_hist, LOOKUP_NGRAM_MIN, LOOKUP_NGRAM_MAX, k, drafted);
    return draft_propose(r->draft, hist, n_hist, r->n_prompt, k, drafted, &r->catch_up_s,
                         r->opts->auto_k ? &r->spa : NULL, err);
}

/* One verification: target runs hist's last token + the drafted ones and
 * emits accepted + 1 tokens into hist. Returns the count emitted. */
static int verify_step(spec_run *r, int32_t *hist, int n_hist, sl_err *err)
{
    int32_t batch[SPEC_K_MAX + 1], target_tok[SPEC_K_MAX + 1], emitted[SPEC_K_MAX + 1];
    double t0 = sl_now_s(), catch_up_before = r->catch_up_s;
    int want_k = r->opts->auto_k ? spa_next_k(&r->spa) : r->opts->k;
    int k = propose(r, hist, n_hist, want_k, batch + 1, err);
    if (k < 0)
        return -1;
    /* a plain step: what lookup would have drafted, scored for free */
    int32_t shadow;
    bool has_shadow = r->opts->prompt_lookup && r->opts->auto_k && want_k == 0 &&
                      sl_prompt_lookup(hist, n_hist, LOOKUP_NGRAM_MIN, LOOKUP_NGRAM_MAX, 1, &shadow) == 1;
    batch[0] = hist[n_hist - 1];
    const float *logits;
    if (sl_lm_eval(r->target, batch, k + 1, &logits, err) < 0)
        return -1;
    int n_vocab = r->target->model->cfg.n_vocab;
    for (int i = 0; i <= k; i++)
        target_tok[i] = sl_argmax(logits + (size_t)i * n_vocab, n_vocab);
    int n_emit = sl_spec_accept_greedy(target_tok, batch + 1, k, emitted);
    /* the cache keeps the last accepted token and the accepted drafts */
    int keep = n_hist + n_emit - 1;
    sl_lm_truncate(r->target, keep);
    if (r->draft && sl_lm_len(r->draft) > keep)
        sl_lm_truncate(r->draft, keep);
    if (k > 0)
        sl_spec_stats_add(&r->stats, k, n_emit - 1);
    spa_observe(&r->spa, k, n_emit - 1, sl_now_s() - t0 - (r->catch_up_s - catch_up_before));
    if (has_shadow)
        spa_observe_alpha(&r->spa, 1, emitted[0] == shadow);
    memcpy(hist + n_hist, emitted, (size_t)n_emit * sizeof *emitted);
    return n_emit;
}

int sl_spec_generate_greedy(sl_lm *target, sl_lm *draft, const sl_spec_opts *opts,
                            const int32_t *prompt, int n_prompt, int n_gen, int32_t *out,
                            sl_spec_stats *stats, sl_err *err)
{
    int k_max = target->max_tokens - 1 < SPEC_K_MAX ? target->max_tokens - 1 : SPEC_K_MAX;
    if (opts->k < 0 || opts->k > k_max)
        return sl_fail(err, "speculative k = %d outside 0..%d", opts->k, k_max);
    if (opts->k > 0 && !opts->prompt_lookup && !draft)
        return sl_fail(err, "speculative decoding with k = %d needs a draft model or prompt lookup",
                       opts->k);
    spec_run r = {.target = target, .draft = opts->prompt_lookup ? NULL : draft, .opts = opts,
                  .n_prompt = n_prompt};
    sl_spec_stats_init(&r.stats);
    spa_init(&r.spa, opts->k);
    r.spa.free_alpha = opts->prompt_lookup;
    int32_t *hist = malloc(((size_t)n_prompt + n_gen + k_max + 1) * sizeof *hist);
    if (!hist)
        return sl_fail(err, "out of memory for %d tokens", n_prompt + n_gen);
    memcpy(hist, prompt, (size_t)n_prompt * sizeof *hist);
    const float *logits;
    int row = 0, rc = eval_chunked(target, prompt, n_prompt, &logits, &row, err);
    int n_hist = n_prompt;
    if (rc == 0 && n_gen > 0) {
        int n_vocab = target->model->cfg.n_vocab;
        hist[n_hist++] = sl_argmax(logits + (size_t)row * n_vocab, n_vocab);
    }
    while (rc == 0 && n_hist < n_prompt + n_gen) {
        int n = verify_step(&r, hist, n_hist, err);
        if (n < 0)
            rc = -1;
        else
            n_hist += n;
    }
    if (rc == 0) {
        /* a last step may run past n_gen: drop the surplus */
        int keep = n_prompt + n_gen - 1;
        sl_lm_truncate(target, keep);
        if (r.draft && sl_lm_len(r.draft) > keep)
            sl_lm_truncate(r.draft, keep);
        memcpy(out, hist + n_prompt, (size_t)n_gen * sizeof *out);
    }
    if (stats)
        *stats = r.stats;
    free(hist);
    return rc;
}
