#include "stages/spec_greedy.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "stages/sampler.h"

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

/* Brings the draft's cache up to all of hist but its last token. */
static int draft_catch_up(sl_lm *draft, const int32_t *hist, int n_hist, sl_err *err)
{
    const float *unused;
    int row, len = sl_lm_len(draft);
    if (len < n_hist - 1)
        return eval_chunked(draft, hist + len, n_hist - 1 - len, &unused, &row, err);
    return 0;
}

/* Proposes k tokens greedily after hist's last token. */
static int draft_propose(sl_lm *draft, const int32_t *hist, int n_hist, int k, int32_t *drafted,
                         sl_err *err)
{
    if (draft_catch_up(draft, hist, n_hist, err) < 0)
        return -1;
    int n_vocab = draft->model->cfg.n_vocab;
    int32_t tok = hist[n_hist - 1];
    for (int i = 0; i < k; i++) {
        const float *logits;
        if (sl_lm_eval(draft, &tok, 1, &logits, err) < 0)
            return -1;
        tok = drafted[i] = sl_argmax(logits, n_vocab);
    }
    return 0;
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
    sl_spec_stats stats;
    double draft_seconds, target_seconds; /* for the cost ratio of auto k */
    long draft_tokens, target_steps;
    long step;
} spec_run;

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* k for this step: fixed, or the best for the running acceptance rate and
 * the measured draft/target cost ratio. A k of 0 stops measuring, so every
 * 8th step still drafts one token to notice when the text turns easy. */
static int step_k(const spec_run *r)
{
    int k_max = r->opts->k;
    if (!r->opts->auto_k || k_max <= 0)
        return k_max;
    double ratio = 0.0; /* prompt lookup drafts for free */
    if (!r->opts->prompt_lookup && r->draft_tokens > 0 && r->target_steps > 0)
        ratio = (r->draft_seconds / r->draft_tokens) / (r->target_seconds / r->target_steps);
    int k = sl_spec_best_k(r->stats.alpha_ewma, ratio, k_max);
    return k == 0 && r->step % 8 == 0 ? 1 : k;
}

/* Drafts up to k tokens into drafted; returns how many. */
static int propose(spec_run *r, const int32_t *hist, int n_hist, int k, int32_t *drafted,
                   sl_err *err)
{
    if (k == 0)
        return 0;
    if (r->opts->prompt_lookup)
        return sl_prompt_lookup(hist, n_hist, LOOKUP_NGRAM_MIN, LOOKUP_NGRAM_MAX, k, drafted);
    double t0 = now_seconds();
    if (draft_propose(r->draft, hist, n_hist, k, drafted, err) < 0)
        return -1;
    r->draft_seconds += now_seconds() - t0;
    r->draft_tokens += k;
    return k;
}

/* One verification: target runs hist's last token + the drafted ones and
 * emits accepted + 1 tokens into hist. Returns the count emitted. */
static int verify_step(spec_run *r, int32_t *hist, int n_hist, sl_err *err)
{
    int32_t batch[SPEC_K_MAX + 1], target_tok[SPEC_K_MAX + 1], emitted[SPEC_K_MAX + 1];
    int k = propose(r, hist, n_hist, step_k(r), batch + 1, err);
    if (k < 0)
        return -1;
    batch[0] = hist[n_hist - 1];
    const float *logits;
    double t0 = now_seconds();
    if (sl_lm_eval(r->target, batch, k + 1, &logits, err) < 0)
        return -1;
    r->target_seconds += now_seconds() - t0;
    r->target_steps++;
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
    r->step++;
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
    spec_run r = {.target = target, .draft = opts->prompt_lookup ? NULL : draft, .opts = opts};
    sl_spec_stats_init(&r.stats);
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
