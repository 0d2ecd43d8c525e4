/* The draft stage of speculative decoding. It runs first in the pipeline:
 * every BATCH passes through it, and where a request's last row is wanted
 * (the row whose logits give its next token) it appends k rows holding
 * drafted tokens at the following positions, each also wanted. The target
 * stages verify all k+1 positions in one pass and the sample stage accepts
 * a prefix (sample.c). A draft model's distributions travel with the rows
 * when the request samples (temperature > 0), so acceptance can follow
 * the min(1, p/q) rule; greedy requests and prompt lookup need none.
 *
 * The stage learns what was accepted from the next batch of the request:
 * its first row sits at position base + 1 + accepted, where base is the
 * row it extended. It keeps each request's accepted text (for prompt
 * lookup, and to bring the draft model's cache up to date lazily) and its
 * own KV cache slot per request, the slot the driver gave the request.
 *
 * Pipelined (its own thread, or node): once a block is sent, the stage
 * uses idle time to draft the block after it, assuming every drafted token
 * is accepted and the target's bonus token is the draft's own guess. When
 * the next batch proves that, the block is ready at once; otherwise the
 * work is dropped (its cache positions are truncated away). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/forward.h"
#include "model/kv.h"
#include "model/model.h"
#include "model/lm.h"
#include "msg/draftq.h"
#include "stages/reqtab.h"
#include "stages/sampler.h"
#include "stages/spec.h"
#include "stages/spec_adapt.h"
#include "stages/kinds.h"
#include "util/clock.h"
#include "util/mem.h"

#define LOOKUP_NGRAM_MIN 1
#define LOOKUP_NGRAM_MAX 4
/* A draft model's probe after a long run of plain steps (adaptive k, not
 * drafting) rebuilds the request's cache from the text's first token and
 * its last DRAFT_WINDOW - 1 instead of catching up on every step since
 * the last probe (stages/spec_adapt.h, spa_cache_offset): its prefill of
 * a token costs about a tenth of a target step on the tiny pair, which
 * the probes paid on every plain step however rare they were. */
#define DRAFT_WINDOW 32
/* Of the rows a probe's catch-up evaluates, the last SHADOW_ROWS (at most
 * half, and only those followed by generated tokens: a draft agrees with
 * the target's own text far more than with a prompt) also give logits:
 * whether the draft model would have proposed the token that followed is
 * its acceptance on greedy requests, measured without drafting
 * (spa_observe_alpha). One drafted token a probe could not tell a pair
 * accepting 40% from one accepting 80%. */
#define SHADOW_ROWS 16
/* Rows the stage runs through its draft model at start (at most
 * max_batch): a probe's catch-up, a window or a short prompt and the
 * plain steps before the first probe. */
#define WARM_ROWS (2 * DRAFT_WINDOW)

typedef struct dreq {
    sl_reqtab_key key;      /* first: the table's */
    bool broken;            /* lost track of the text: drafts nothing more */
    int seq;                /* KV slot (the driver's) */
    int kv_off;             /* the cache's rows 1.. hold text kv_off+1.. (row 0 text 0): a probe's window */
    int32_t *hist;          /* accepted text: positions 0..n_hist-1 */
    int n_hist, cap;
    float *hist_p;          /* per text position: the target's probability of the token
                             * where a plain step sampled it (PL_TOKEN_P), else -1 */
    int cap_p;
    int n_prompt;           /* text before its first generated token (0: not known yet) */
    sl_sampler *sampler;    /* the request's transforms (temperature, top-k, ...) */
    sl_rng rng;             /* draws of drafted tokens */
    bool sampled;           /* temperature > 0: q travels with the drafts */
    /* the block last sent: rows base+1..base+k hold drafted[] */
    int base, k;
    int32_t drafted[SL_SPEC_K_MAX];
    float *q;               /* k rows of n_vocab (sampled requests) */
    /* drafted ahead (pipelined): valid when the target emits guess after
     * accepting all of drafted[] */
    bool ahead;
    int32_t guess;
    int ahead_k;
    int32_t ahead_tok[SL_SPEC_K_MAX];
    float *ahead_q;
    bool ahead_tried;       /* this block's look-ahead is done (or not worth it) */
    /* adaptive k: the request's step runs from when its wanted row left
     * (less the drafting on the critical path before) with the tokens
     * the batch drafted (every request's) until its next batch; it is
     * comparable with others (one row of the request's own, not a
     * prefill) when observe */
    spa_ctl spa;
    spa_clock clock;
    bool observe;
    /* prompt lookup, adaptive k, a plain step: the token lookup would have
     * drafted, scored against the one the target gives (shadow acceptance) */
    bool has_shadow;
    int32_t shadow;
} dreq;

typedef struct draft_stage {
    sl_lm *lm;              /* the draft model; NULL with prompt lookup */
    sl_model *model;        /* lm's, or NULL */
    sl_fwd *fwd;
    sl_kv *kv;
    int n_vocab, d_model;
    int max_batch, context, max_seqs;
    int k_max;
    bool auto_k, lookup, pipelined;
    sl_reqtab reqs;         /* dreq by request id */
    struct dpark *parked;   /* per slot: text a parked request left (prefix cache); lazily made */
    /* forward scratch */
    float *x, *logits, *row;
    int32_t *tok, *seq, *pos, *ids;
    float *probs;
    /* the outgoing batch */
    uint64_t *o_req;
    int32_t *o_seq, *o_pos, *o_tok, *o_draft;
    uint8_t *o_flags;
    const float **o_qsrc;   /* per drafted row: its q row, NULL when one-hot */
    dreq **wanted;          /* requests whose output this batch asks for */
    /* time spent in the draft model; the part of it bringing a cache up
     * to date after plain steps, which adaptive k does not count as the
     * cost of drafting (it is paid once when drafting resumes) */
    double draft_s, catch_up_s;
    long draft_tokens;
    spa_ctl spa_prior;      /* what the latest step taught: a new request starts from it */
    /* statistics */
    long blocks, drafted_tokens, ahead_hits, ahead_misses;
    long q_bytes, q_dense_bytes; /* draft distributions sent, and as dense rows they would be */
} draft_stage;

/* ---- request table ---- */

static dreq *find_req(draft_stage *ds, uint64_t id, bool create)
{
    bool created;
    dreq *r = sl_reqtab_find(&ds->reqs, id, create, &created);
    if (created) {
        r->base = -1;
        r->seq = -1;
        spa_init_from(&r->spa, &ds->spa_prior);
    }
    return r;
}

static void free_req(void *entry)
{
    dreq *r = entry;
    sl_sampler_free(r->sampler);
    free(r->hist);
    free(r->hist_p);
    free(r->q);
    free(r->ahead_q);
}

static void drop_req(draft_stage *ds, uint64_t id)
{
    dreq *r = find_req(ds, id, false);
    if (r && ds->kv && r->seq >= 0)
        sl_kv_clear(ds->kv, r->seq);
    sl_reqtab_drop(&ds->reqs, id, free_req);
}

static int hist_push(dreq *r, const int32_t *tok, const float *tok_p, int n);

/* ---- the prefix cache ----
 * A request that ends with CANCEL (the driver parks its slot for reuse:
 * pipeline.c, "prefix cache") leaves its text here and its rows in the
 * draft model's cache. A request the driver starts in that slot at
 * position p > 0 shares the slot's first p tokens: it takes them as its
 * text, and the draft cache is cut to p (it has no rings: any cut is
 * exact; catch_up re-prefills whatever the cache lacks). Without a parked
 * text that long it drafts nothing (as a request whose text is lost), which
 * slows it but changes no token: verification decides. */
typedef struct dpark {
    int32_t *tok;
    int n, cap;
} dpark;

/* CANCEL: keeps r's text for its slot and its rows in the cache. The last
 * block's drafts are kept after the text: the driver parks the accepted
 * ones (the same tokens) with the text, and knows which. */
static void park_req(draft_stage *ds, uint64_t id)
{
    dreq *r = find_req(ds, id, false);
    if (!r || r->seq < 0 || r->seq >= ds->max_seqs || r->broken)
        return; /* drop_req clears its rows */
    if (!ds->parked && !(ds->parked = calloc((size_t)ds->max_seqs, sizeof *ds->parked)))
        return;
    if (ds->kv && r->kv_off > 0) { /* a probe's window is not the slot's prefix */
        sl_kv_clear(ds->kv, r->seq);
        r->kv_off = 0;
    }
    if (r->base >= 0 && r->n_hist == r->base + 1 && hist_push(r, r->drafted, NULL, r->k))
        return;
    dpark *pk = &ds->parked[r->seq];
    int32_t *old = pk->tok;
    int old_cap = pk->cap;
    pk->tok = r->hist;
    pk->cap = r->cap;
    pk->n = r->n_hist;
    r->hist = old; /* freed with r */
    r->cap = old_cap;
    r->n_hist = 0;
    r->seq = -1;   /* drop_req leaves the slot's rows */
}

/* A request's first rows are in slot seq from position pos. */
static void adopt_slot(draft_stage *ds, dreq *r, int seq, int pos)
{
    dpark *pk = ds->parked ? &ds->parked[seq] : NULL;
    bool reuse = pk && pos > 0 && pk->n >= pos && r->n_hist == 0 && hist_push(r, pk->tok, NULL, pos) == 0;
    if (pk)
        pk->n = 0;
    if (ds->kv && reuse)
        sl_kv_truncate(ds->kv, seq, pos);
    else if (ds->kv)
        sl_kv_truncate(ds->kv, seq, 0); /* stale; its pages kept for the new text */
    r->seq = seq;
    r->kv_off = 0;
}

static void forget_parked(draft_stage *ds, const pl_msg *in)
{
    for (size_t i = 0; ds->parked && i < in->hdr->n_seqs; i++)
        if (in->hdr->seqs[i] >= 0 && in->hdr->seqs[i] < ds->max_seqs)
            ds->parked[in->hdr->seqs[i]].n = 0;
}

/* Appends n tokens to r's text, with the target's probability of each
 * (tok_p; NULL: none known). */
static int hist_push(dreq *r, const int32_t *tok, const float *tok_p, int n)
{
    if (r->n_hist + n > r->cap_p) {
        int cap = r->cap_p ? r->cap_p : 64;
        while (cap < r->n_hist + n)
            cap *= 2;
        float *p = realloc(r->hist_p, (size_t)cap * sizeof *p);
        if (!p)
            return -1;
        r->hist_p = p;
        r->cap_p = cap;
    }
    for (int i = 0; i < n; i++)
        r->hist_p[r->n_hist + i] = tok_p && tok_p[i] > 0.0f && tok_p[i] <= 1.0f ? tok_p[i] : -1.0f;
    if (r->n_hist + n > r->cap) {
        int cap = r->cap ? r->cap : 64;
        while (cap < r->n_hist + n)
            cap *= 2;
        int32_t *h = realloc(r->hist, (size_t)cap * sizeof *h);
        if (!h)
            return -1;
        r->hist = h;
        r->cap = cap;
    }
    memcpy(r->hist + r->n_hist, tok, (size_t)n * sizeof *tok);
    r->n_hist += n;
    return 0;
}

/* Sampling settings arrive with a request's first batch. */
static int add_params(draft_stage *ds, const Sluice__ReqParams *p, sl_err *err)
{
    dreq *r = find_req(ds, p->request_id, true);
    if (!r)
        return sl_fail(err, "too many requests in flight (%d)", ds->reqs.cap);
    if (r->sampler)
        return 0;
    sl_sampling sp;
    sl_sampling_defaults(&sp);
    sp.temperature = p->temperature;
    sp.top_k = p->top_k;
    sp.top_p = p->top_p > 0.0f ? p->top_p : 1.0f;
    sp.min_p = p->min_p;
    sp.repeat_penalty = 1.0f; /* the draft's q may differ from p: acceptance corrects it */
    sp.seed = p->seed;
    r->sampled = sp.temperature > 0.0f;
    sl_rng_seed(&r->rng, p->seed ^ 0xD1B54A32D192ED03ull);
    if (!ds->lookup && !(r->sampler = sl_sampler_new(&sp, ds->n_vocab)))
        return sl_fail(err, "out of memory");
    if (r->sampled && !ds->lookup &&
        (!(r->q = malloc((size_t)ds->k_max * ds->n_vocab * sizeof(float))) ||
         !(r->ahead_q = malloc((size_t)ds->k_max * ds->n_vocab * sizeof(float)))))
        return sl_fail(err, "out of memory");
    return 0;
}

/* ---- the draft model ---- */

/* Runs rows through the draft model; the logits of the rows listed in
 * want (indices into the rows, ascending) go to ds->logits in that order. */
static int eval_rows(draft_stage *ds, int n, const int *want, int n_want, sl_err *err)
{
    double t0 = sl_now_s();
    sl_batch b = {.n_tokens = n, .token = ds->tok, .seq = ds->seq, .pos = ds->pos};
    if (sl_embed(ds->model, ds->tok, n, ds->x, err) ||
        sl_forward_layers(ds->fwd, ds->kv, &b, ds->x, err))
        return -1;
    for (int i = 0; i < n_want; i++)
        if (want[i] != i)
            memmove(ds->x + (size_t)i * ds->d_model, ds->x + (size_t)want[i] * ds->d_model,
                    (size_t)ds->d_model * sizeof(float));
    if (n_want && sl_head(ds->fwd, ds->x, n_want, ds->logits, err))
        return -1;
    ds->draft_s += sl_now_s() - t0;
    return 0;
}

/* Picks the drafted token from a row of draft logits (modified); with a
 * sampled request also writes the distribution it came from to q. */
static int32_t draft_pick(draft_stage *ds, dreq *r, float *logits, float *q)
{
    if (!r->sampled)
        return sl_argmax(logits, ds->n_vocab);
    sl_spec_dense_probs(r->sampler, logits, ds->n_vocab, ds->ids, ds->probs, q);
    return sl_spec_sample_dense(q, ds->n_vocab, &r->rng);
}

/* Tokens of r's text its cache holds: rows 0..len-1 hold text 0 and
 * kv_off+1..kv_off+len-1 (the offset is 0 whenever the cache is empty). */
static int cached_text(const draft_stage *ds, const dreq *r)
{
    int len = sl_kv_len(ds->kv, r->seq);
    return len > 0 ? len + r->kv_off : 0;
}

/* Cuts r's cache to its text's first n tokens; a window cut before its
 * first token empties the cache. */
static void cache_cut(draft_stage *ds, dreq *r, int n)
{
    if (r->kv_off > 0 && n - r->kv_off < 1) {
        sl_kv_truncate(ds->kv, r->seq, 0);
        r->kv_off = 0;
        return;
    }
    sl_kv_truncate(ds->kv, r->seq, n - r->kv_off);
}

/* Counts the rows of a catch-up whose logits (ds->logits, n_want rows,
 * the last the text's last token) predict the token the next row holds,
 * and leaves the last row's logits first in ds->logits. */
static int shadow_hits(draft_stage *ds, const int *want, int n_want)
{
    size_t v = (size_t)ds->n_vocab;
    int hits = 0;
    for (int i = 0; i + 1 < n_want; i++)
        hits += sl_argmax(ds->logits + (size_t)i * v, ds->n_vocab) == ds->tok[want[i] + 1];
    if (n_want > 1)
        memmove(ds->logits, ds->logits + (size_t)(n_want - 1) * v, v * sizeof(float));
    return hits;
}

/* shadow_hits for a sampled request: of the rows whose next token y the
 * target sampled on a plain step (its p(y) known), the sum of min(1,
 * q(y) / p(y)), q the draft's distribution there after the request's
 * filters; its expectation is the acceptance sum min(p, q) of a token
 * drafted there (spa_observe_alpha_sum). The rows are the last n_want of
 * the n just evaluated, the last the text's last token, whose logits are
 * left first in ds->logits. Returns the rows scored. */
static int shadow_expected(draft_stage *ds, dreq *r, const int *want, int n_want, int n, double *sum)
{
    size_t v = (size_t)ds->n_vocab;
    int scored = 0;
    *sum = 0.0;
    for (int i = 0; i + 1 < n_want; i++) {
        int at = r->n_hist - n + want[i] + 1; /* the next token's place in the text */
        int32_t y = ds->tok[want[i] + 1];
        if (at < 1 || at >= r->n_hist || r->hist[at] != y || !(r->hist_p[at] > 0.0f))
            continue;
        int m = sl_sampler_candidates(r->sampler, ds->logits + (size_t)i * v, ds->ids, ds->probs);
        double q = 0.0;
        for (int c = 0; c < m; c++)
            if (ds->ids[c] == y) {
                q = ds->probs[c];
                break;
            }
        *sum += q >= r->hist_p[at] ? 1.0 : q / r->hist_p[at];
        scored++;
    }
    if (n_want > 1)
        memmove(ds->logits, ds->logits + (size_t)(n_want - 1) * v, v * sizeof(float));
    return scored;
}

/* Brings a request's cache up to all of its text (or a probe's window of
 * it: spa_cache_offset) and leaves the last row's logits in ds->logits.
 * Long catch-ups (a prompt) go in chunks. A probe's long catch-up also
 * measures the draft's acceptance on the text (greedy requests: *seen
 * tokens scored) and tells the controller what a probe costs; *row_s
 * gets the seconds a row of it took. */
static int catch_up(draft_stage *ds, dreq *r, int *seen, double *row_s, sl_err *err)
{
    *seen = 0;
    *row_s = 0.0;
    bool probing = ds->auto_k && !r->spa.drafting;
    int off = spa_cache_offset(r->n_hist, cached_text(ds, r), r->kv_off, !probing, DRAFT_WINDOW);
    if (off != r->kv_off) { /* rebuilt (kept, not cleared: its pages are reused at once) */
        sl_kv_truncate(ds->kv, r->seq, 0);
        r->kv_off = off;
    }
    if (cached_text(ds, r) >= r->n_hist) /* nothing new: re-evaluate the last token */
        cache_cut(ds, r, r->n_hist - 1);
    int t = cached_text(ds, r); /* the next token of the text to evaluate */
    int todo = t == 0 && r->kv_off > 0 ? r->n_hist - r->kv_off : r->n_hist - t;
    /* a step's own catch-up is a token or two; more follows plain steps */
    double draft_before = ds->draft_s, score_s = 0.0;
    bool long_catch_up = todo > 2;
    /* the rows' logits give fair predictions where they have context: on
     * a cache holding the text before them (the prefill's window) all but
     * the last, on a rebuilt window its second half */
    int shadow = probing && long_catch_up ? (t > 0 ? todo - 1 : (todo - 1) / 2) : 0;
    if (shadow > SHADOW_ROWS)
        shadow = SHADOW_ROWS;
    if (shadow > r->n_hist - r->n_prompt)
        shadow = r->n_prompt > 0 ? r->n_hist - r->n_prompt : 0;
    while (t < r->n_hist) {
        int n = 0;
        for (; n < ds->max_batch && t < r->n_hist; n++) {
            ds->tok[n] = r->hist[t];
            ds->seq[n] = r->seq;
            ds->pos[n] = t == 0 ? 0 : t - r->kv_off;
            t = t == 0 && r->kv_off > 0 ? r->kv_off + 1 : t + 1;
        }
        int h = t < r->n_hist ? 0 : shadow < n - 1 ? shadow : n - 1;
        int want[SHADOW_ROWS + 1];
        for (int i = 0; i <= h; i++)
            want[i] = n - 1 - h + i;
        if (eval_rows(ds, n, want, h + 1, err))
            return -1;
        if (r->sampled) {
            /* the request's filters a row (on the tiny pair ~25 us, a
             * drafted token's pick as much): part of the probe's cost, as
             * the catch-up, not of drafting */
            double sum, t_s = sl_now_s();
            int scored = shadow_expected(ds, r, want, h + 1, n, &sum);
            score_s += sl_now_s() - t_s;
            spa_observe_alpha_sum(&r->spa, scored, sum);
            *seen += scored;
            continue;
        }
        int hits = shadow_hits(ds, want, h + 1);
        if (h > 0)
            spa_observe_alpha(&r->spa, h, hits);
        *seen += h;
    }
    if (todo > 0)
        *row_s = (ds->draft_s - draft_before) / todo;
    if (long_catch_up)
        ds->catch_up_s += ds->draft_s - draft_before + score_s;
    if (long_catch_up && probing) /* the next probe's: a window's worth */
        spa_observe_probe(&r->spa, (ds->draft_s - draft_before) / todo * DRAFT_WINDOW + score_s);
    return 0;
}

/* At prefill (adaptive k, not drafting, the cache empty): takes in the
 * part of the first probe's window the prompt holds, the text's first
 * token and its last DRAFT_WINDOW - SPA_WARM_PLAIN - 1 (all of a shorter
 * prompt), as one batch, so the first probe, SPA_WARM_PLAIN plain steps
 * later, catches up on those steps only. That catch-up (the prompt and
 * the plain steps, up to a window, 2.2 ms on the tiny pair: four plain
 * steps) was on the decode's critical path of every request, drafting
 * or not; here it is part of the time to the first token, where the
 * target's prefill of the same rows costs several times more. */
static int prefill_window(draft_stage *ds, dreq *r, sl_err *err)
{
    int keep = DRAFT_WINDOW - SPA_WARM_PLAIN;
    int off = r->n_hist > keep ? r->n_hist - keep : 0;
    double draft_before = ds->draft_s;
    sl_kv_truncate(ds->kv, r->seq, 0);
    r->kv_off = off;
    for (int t = 0; t < r->n_hist;) {
        int n = 0;
        for (; n < ds->max_batch && t < r->n_hist; n++) {
            ds->tok[n] = r->hist[t];
            ds->seq[n] = r->seq;
            ds->pos[n] = t == 0 ? 0 : t - off;
            t = t == 0 && off > 0 ? off + 1 : t + 1;
        }
        if (eval_rows(ds, n, NULL, 0, err))
            return -1;
    }
    ds->catch_up_s += ds->draft_s - draft_before;
    return 0;
}

/* Drafts k tokens after the request's text with the draft model: out and
 * (sampled) q get them; returns how many (a probe may draft more, up to
 * room: spa_probe_k once the catch-up has shown the draft's acceptance on
 * the text), or -1. The cache ends holding the text and all drafted
 * tokens but the last. */
static int draft_model_block(draft_stage *ds, dreq *r, int k, int room, int32_t *out, float *q, sl_err *err)
{
    bool probing = ds->auto_k && !r->spa.drafting;
    int seen;
    double row_s;
    if (catch_up(ds, r, &seen, &row_s, err))
        return -1;
    /* a probe drafts nothing where the acceptance its
     * catch-up just saw could not pay with a drafted token costing at
     * least a row of the draft model and the target's row verifying it
     * (spa_least_token_s: the catch-up's rows came in a batch, a drafted
     * one alone costs more) and, once probes have measured it, what a
     * drafted token cost them: the verification of a row that would most
     * likely be rejected is what a probe of a pair that never pays loses */
    if (probing && seen > 0 && !spa_worth_probe(&r->spa, spa_least_token_s(row_s))) {
        spa_decline(&r->spa);
        return 0;
    }
    /* a greedy request's probe drafts the run its catch-up says would be
     * kept (spa_probe_k); a sampled one's stays as asked: its verification
     * pays the request's filters a row in the sample stage and a drafted
     * token's pick here (~25 us each on the tiny pair), and a first probe
     * of two tokens there (1.27 ms against a 0.41 ms plain step, scored
     * at 0.82) priced a pair accepting 98% far from paying, so no probe
     * came in the rest of a 200-token run, 3 runs of 3 */
    if (probing && !r->sampled) {
        int more = spa_probe_k(&r->spa);
        if (more > k)
            k = more < room ? more : room;
    }
    size_t v = (size_t)ds->n_vocab;
    out[0] = draft_pick(ds, r, ds->logits, q);
    for (int j = 1; j < k; j++) {
        ds->tok[0] = out[j - 1];
        ds->seq[0] = r->seq;
        ds->pos[0] = r->n_hist + j - 1 - r->kv_off;
        int want = 0;
        if (eval_rows(ds, 1, &want, 1, err))
            return -1;
        out[j] = draft_pick(ds, r, ds->logits, q ? q + (size_t)j * v : NULL);
    }
    ds->draft_tokens += k;
    return k;
}

/* ---- choosing k ---- */

/* k for this step: fixed, or auto: the request's controller, which
 * drafts only while drafting beats plain decoding (stages/spec_adapt.h). */
static int choose_k(draft_stage *ds, dreq *r, int room)
{
    int k = ds->auto_k ? spa_next_k(&r->spa) : ds->k_max;
    return k < room ? k : room;
}

/* ---- following the verifications ---- */

/* Settles what the previous block of r became, now that its next batch
 * starts at position pos with token first. Returns true when the block
 * drafted ahead is valid (then the cache already holds it). */
static bool settle(draft_stage *ds, dreq *r, int pos, int32_t first, int n_rows)
{
    bool ahead_ok = false;
    spa_clock_stop(&r->clock, sl_now_s(), r->observe && r->n_hist == (r->base >= 0 ? r->base + 1 : pos),
                   &r->spa, &ds->spa_prior);
    if (r->has_shadow && r->base < 0 && r->n_hist == pos)
        spa_observe_alpha(&r->spa, 1, first == r->shadow);
    r->has_shadow = false;
    if (r->base >= 0) {
        int accepted = pos - r->base - 1;
        if (accepted < 0 || accepted > r->k || r->n_hist != r->base + 1) {
            r->broken = true; /* not a continuation of what we drafted */
        } else {
            hist_push(r, r->drafted, NULL, accepted);
            spa_observe_accept(&r->spa, r->k, accepted);
            ds->spa_prior = r->spa;
            ahead_ok = r->ahead && accepted == r->k && first == r->guess && n_rows == 1;
            if (r->ahead)
                ahead_ok ? ds->ahead_hits++ : ds->ahead_misses++;
        }
        r->base = -1;
    }
    r->ahead = false;
    if (!r->broken && r->n_hist != pos)
        r->broken = true;
    if (ds->kv && r->seq >= 0 && !ahead_ok && cached_text(ds, r) > pos)
        cache_cut(ds, r, pos);
    return ahead_ok;
}

/* Drafts up to k tokens for r (its text now ending with the row at
 * position base); returns how many. */
static int propose(draft_stage *ds, dreq *r, int k, int room, bool ahead_ok, sl_err *err)
{
    if (k <= 0 || r->broken)
        return 0;
    if (ds->lookup)
        return sl_prompt_lookup(r->hist, r->n_hist, LOOKUP_NGRAM_MIN, LOOKUP_NGRAM_MAX, k, r->drafted);
    if (ahead_ok && r->ahead_k > 0) {
        int n = r->ahead_k < k ? r->ahead_k : k;
        memcpy(r->drafted, r->ahead_tok, (size_t)n * sizeof *r->drafted);
        if (r->sampled)
            memcpy(r->q, r->ahead_q, (size_t)n * ds->n_vocab * sizeof(float));
        /* the cache holds the text and ahead_k - 1 drafted tokens */
        cache_cut(ds, r, r->n_hist + n - 1);
        return n;
    }
    return draft_model_block(ds, r, k, room, r->drafted, r->sampled ? r->q : NULL, err);
}

/* ---- the batch ---- */

/* A batch's rows: the rows every stage reads (and their limits), and the
 * tokens. */
typedef struct in_rows {
    sl_batch_rows b;
    const int32_t *tok;
    const float *tok_p;     /* the target's probability of each row's token, or NULL */
} in_rows;

static int read_in(sl_stage *s, const pl_msg *in, in_rows *r, sl_err *why)
{
    if (sl_stage_read_rows(s, in, &r->b, why))
        return -1;
    r->tok = pl_msg_i32(in, SLUICE__PAYLOAD_KIND__PL_TOKEN, r->b.n, why);
    r->tok_p = NULL;
    if (r->tok && pl_msg_has(in, SLUICE__PAYLOAD_KIND__PL_TOKEN_P) &&
        !(r->tok_p = pl_msg_f32_view(in, SLUICE__PAYLOAD_KIND__PL_TOKEN_P, r->b.n, 0, why)))
        return -1;
    return r->tok ? 0 : -1;
}

/* Checks a request's rows [i0, i1) (their slots and positions are within
 * the stage's limits already) and takes their slot. */
static int take_rows(draft_stage *ds, dreq *r, const in_rows *in, uint32_t i0, uint32_t i1, sl_err *why)
{
    int seq = in->b.seq[i0];
    for (uint32_t i = i0; i < i1; i++) {
        if (in->b.seq[i] != seq || in->b.pos[i] != in->b.pos[i0] + (int)(i - i0))
            return sl_fail(why, "rows %u..%u of request %llu are not consecutive positions of one slot",
                           i0, i1 - 1, (unsigned long long)r->key.id);
        if (in->tok[i] < 0 || in->tok[i] >= ds->n_vocab)
            return sl_fail(why, "row %u: token %d outside the vocabulary of %d", i, in->tok[i],
                           ds->n_vocab);
    }
    if (r->seq != seq)
        adopt_slot(ds, r, seq, in->b.pos[i0]);
    return 0;
}

/* The batch being built: ds->o_* rows so far. */
typedef struct out_rows {
    uint32_t n, n_q;     /* rows, drafted rows */
    bool any_q;          /* some drafted row has a draft distribution */
    int n_wanted;        /* requests in ds->wanted */
    double t_draft;      /* seconds drafting (on every wanted request's critical path) */
    uint32_t room;       /* rows still free within max_batch */
} out_rows;

static void put_row(draft_stage *ds, out_rows *o, uint64_t req, int32_t seq, int32_t pos, int32_t tok,
                    uint8_t flags, int32_t drafted)
{
    uint32_t j = o->n++;
    ds->o_req[j] = req;
    ds->o_seq[j] = seq;
    ds->o_pos[j] = pos;
    ds->o_tok[j] = tok;
    ds->o_flags[j] = flags;
    ds->o_draft[j] = drafted;
}

/* Rows [i0, i1) of one request into the outgoing batch, followed by the
 * tokens drafted after them when its last row is wanted. */
static int extend_request(draft_stage *ds, const in_rows *rows, uint32_t i0, uint32_t i1, out_rows *o,
                          sl_err *why)
{
    dreq *r = find_req(ds, rows->b.req[i0], true);
    if (!r)
        return sl_fail(why, "too many requests in flight");
    if (take_rows(ds, r, rows, i0, i1, why))
        return -1;
    bool ahead_ok = settle(ds, r, rows->b.pos[i0], rows->tok[i0], (int)(i1 - i0));
    if (!r->broken && hist_push(r, rows->tok + i0, rows->tok_p ? rows->tok_p + i0 : NULL, (int)(i1 - i0)))
        return sl_fail(why, "out of memory");
    bool wanted = rows->b.flags[i1 - 1] & 1;
    if (wanted && r->n_prompt == 0)
        r->n_prompt = r->n_hist;
    int k = 0, last_pos = rows->b.pos[i1 - 1];
    r->observe = false;
    if (wanted && !r->broken && (ds->lookup || r->sampler)) {
        int fit = ds->context - 1 - last_pos;
        if (fit > (int)o->room)
            fit = (int)o->room;
        double t0 = sl_now_s(), catch_up_before = ds->catch_up_s;
        int want_k = choose_k(ds, r, fit);
        if ((k = propose(ds, r, want_k, fit, ahead_ok, why)) < 0)
            return -1;
        /* what lookup would have drafted: one token, free to find */
        if (ds->lookup && ds->auto_k && want_k == 0 && fit > 0)
            r->has_shadow = sl_prompt_lookup(r->hist, r->n_hist, LOOKUP_NGRAM_MIN, LOOKUP_NGRAM_MAX, 1,
                                             &r->shadow) == 1;
        o->t_draft += sl_now_s() - t0 - (ds->catch_up_s - catch_up_before);
        r->observe = i1 - i0 == 1;
        if (k == 0 && ds->model && ds->auto_k && r->n_hist == r->n_prompt && cached_text(ds, r) == 0 &&
            prefill_window(ds, r, why))
            return -1;
    }
    for (uint32_t i = i0; i < i1; i++)
        put_row(ds, o, rows->b.req[i], rows->b.seq[i], rows->b.pos[i], rows->tok[i], rows->b.flags[i], -1);
    bool has_q = r->sampled && !ds->lookup;
    for (int j = 0; j < k; j++) {
        put_row(ds, o, rows->b.req[i0], rows->b.seq[i0], last_pos + 1 + j, r->drafted[j], 1, r->drafted[j]);
        ds->o_qsrc[o->n_q++] = has_q ? r->q + (size_t)j * ds->n_vocab : NULL;
        o->any_q |= has_q;
    }
    if (k > 0) {
        r->base = last_pos;
        r->k = k;
        r->ahead_tried = false;
        ds->blocks++;
        ds->drafted_tokens += k;
    }
    if (wanted)
        ds->wanted[o->n_wanted++] = r;
    o->room -= (uint32_t)k;
    return 0;
}

/* Support of a dense draft row: its non-zero entries. */
static int support(const float *row, int n_vocab)
{
    int n = 0;
    for (int t = 0; t < n_vocab; t++)
        n += row[t] > 0.0f;
    return n;
}

/* The draft distributions of the batch's drafted rows as msg/draftq.h
 * sends them: each row's support (the request's filters leave few
 * tokens), dense where that is smaller, nothing for one-hot rows. Copied:
 * the scratch is reused by the next batch before a socket may have sent
 * this one. */
typedef struct q_out {
    int32_t *count, *id;
    float *prob;
    uint64_t n_prob, n_id;
} q_out;

static int gather_q(const draft_stage *ds, const out_rows *o, q_out *g)
{
    memset(g, 0, sizeof *g);
    int v = ds->n_vocab;
    if (!(g->count = malloc((size_t)o->n_q * sizeof *g->count)))
        return -1;
    for (uint32_t j = 0; j < o->n_q; j++) {
        const float *row = ds->o_qsrc[j];
        g->count[j] = row ? pl_draftq_entries(support(row, v), v) : 0;
        g->n_prob += (uint64_t)g->count[j];
        g->n_id += g->count[j] == v ? 0 : (uint64_t)g->count[j];
    }
    g->prob = malloc((size_t)g->n_prob * sizeof *g->prob + 1);
    g->id = malloc((size_t)g->n_id * sizeof *g->id + 1);
    if (!g->prob || !g->id)
        return -1;
    uint64_t p = 0, i = 0;
    for (uint32_t j = 0; j < o->n_q; j++) {
        const float *row = ds->o_qsrc[j];
        if (g->count[j] == v) {
            memcpy(g->prob + p, row, (size_t)v * sizeof *row);
            p += (uint64_t)v;
            continue;
        }
        for (int t = 0; t < v && g->count[j] > 0; t++)
            if (row[t] > 0.0f) {
                g->prob[p++] = row[t];
                g->id[i++] = t;
            }
    }
    return 0;
}

static int add_q_payloads(pl_msg *m, draft_stage *ds, const out_rows *o, sl_err *err)
{
    q_out g;
    if (gather_q(ds, o, &g)) {
        free(g.count);
        free(g.prob);
        free(g.id);
        return sl_fail(err, "out of memory");
    }
    ds->q_bytes += (long)(o->n_q + g.n_prob + g.n_id) * 4;
    ds->q_dense_bytes += (long)o->n_q * ds->n_vocab * 4;
    if (!g.n_id) { /* no sparse row */
        free(g.id);
        g.id = NULL;
    }
    /* the message owns each payload once added; the rest are still ours */
    if (pl_msg_add(m, SLUICE__PAYLOAD_KIND__PL_DRAFT_Q_COUNT, SLUICE__DTYPE__DT_I32, o->n_q, 0, g.count,
                   sl_free_cb, NULL, err)) {
        free(g.count);
        g.count = NULL;
    } else if (pl_msg_add(m, SLUICE__PAYLOAD_KIND__PL_DRAFT_PROBS, SLUICE__DTYPE__DT_F32, g.n_prob, 0,
                          g.prob, sl_free_cb, NULL, err)) {
        g.count = NULL;
    } else if (g.id && pl_msg_add(m, SLUICE__PAYLOAD_KIND__PL_DRAFT_Q_ID, SLUICE__DTYPE__DT_I32, g.n_id, 0, g.id,
                          sl_free_cb, NULL, err)) {
        g.count = NULL;
        g.prob = NULL;
    } else {
        return 0;
    }
    free(g.count);
    free(g.prob);
    free(g.id);
    return -1;
}

static int add_draft_payloads(pl_msg *m, draft_stage *ds, const out_rows *o, sl_err *err)
{
    uint32_t n = o->n;
    if (pl_msg_add(m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, n, 0, ds->o_req, NULL, NULL, err) ||
        pl_msg_add(m, SLUICE__PAYLOAD_KIND__PL_SEQ, SLUICE__DTYPE__DT_I32, n, 0, ds->o_seq, NULL, NULL, err) ||
        pl_msg_add(m, SLUICE__PAYLOAD_KIND__PL_POS, SLUICE__DTYPE__DT_I32, n, 0, ds->o_pos, NULL, NULL, err) ||
        pl_msg_add(m, SLUICE__PAYLOAD_KIND__PL_TOKEN, SLUICE__DTYPE__DT_I32, n, 0, ds->o_tok, NULL, NULL, err) ||
        pl_msg_add(m, SLUICE__PAYLOAD_KIND__PL_FLAGS, SLUICE__DTYPE__DT_U8, n, 0, ds->o_flags, NULL, NULL, err))
        return -1;
    if (o->n_q && pl_msg_add(m, SLUICE__PAYLOAD_KIND__PL_DRAFT_TOKEN, SLUICE__DTYPE__DT_I32, n, 0,
                             ds->o_draft, NULL, NULL, err))
        return -1;
    if (!o->any_q)
        return 0;
    return add_q_payloads(m, ds, o, err);
}

/* Sends the extended batch; the round trips of its wanted requests start
 * now, with every drafted row of the batch. */
static int send_extended(sl_stage *s, const pl_msg *in, const out_rows *o, const sl_emit *out, sl_err *err)
{
    draft_stage *ds = s->impl;
    double t_now = sl_now_s();
    for (int i = 0; i < o->n_wanted; i++)
        spa_clock_start(&ds->wanted[i]->clock, t_now, o->t_draft, (int)o->n_q);
    pl_msg m;
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_BATCH, in->hdr->batch_id, o->n);
    pl_msg_copy_extras(&m, in);
    if (add_draft_payloads(&m, ds, o, err)) {
        pl_msg_close(&m);
        return -1;
    }
    return sl_stage_send(s, o->n, &m, out, err);
}

static int draft_process(sl_stage *s, pl_msg *in, const sl_emit *out, sl_err *err)
{
    draft_stage *ds = s->impl;
    int kind = in->hdr->kind;
    sl_err why;
    if (kind == SLUICE__MSG_KIND__MSG_RELEASE || kind == SLUICE__MSG_KIND__MSG_CANCEL) {
        if (kind == SLUICE__MSG_KIND__MSG_RELEASE)
            forget_parked(ds, in);
        for (size_t i = 0; i < in->hdr->n_requests; i++) {
            if (kind == SLUICE__MSG_KIND__MSG_CANCEL)
                park_req(ds, in->hdr->requests[i]);
            drop_req(ds, in->hdr->requests[i]);
        }
        return sl_stage_route_other(s, in, out, err);
    }
    if (kind != SLUICE__MSG_KIND__MSG_BATCH)
        return sl_stage_route_other(s, in, out, err); /* TRUNCATE: settled by position */
    in_rows rows;
    if (read_in(s, in, &rows, &why))
        return sl_stage_fail_batch(s, in, out, why.msg, err);
    for (size_t i = 0; i < in->hdr->n_params; i++)
        if (add_params(ds, in->hdr->params[i], &why))
            return sl_stage_fail_batch(s, in, out, why.msg, err);
    uint32_t n = rows.b.n;
    out_rows o = {.room = n < (uint32_t)ds->max_batch ? (uint32_t)ds->max_batch - n : 0};
    for (uint32_t i0 = 0; i0 < n;) {
        uint32_t i1 = i0 + 1;
        while (i1 < n && rows.b.req[i1] == rows.b.req[i0])
            i1++;
        if (extend_request(ds, &rows, i0, i1, &o, &why))
            return sl_stage_fail_batch(s, in, out, why.msg, err);
        i0 = i1;
    }
    return send_extended(s, in, &o, out, err);
}

/* Idle time of a pipelined draft: for one request whose block is out,
 * evaluate its last drafted token, guess the target's bonus token, and
 * draft the block after it. */
static int draft_idle(sl_stage *s)
{
    draft_stage *ds = s->impl;
    if (!ds->pipelined || ds->lookup)
        return 0;
    for (int i = 0; i < ds->reqs.cap; i++) {
        dreq *r = sl_reqtab_at(&ds->reqs, i);
        if (!r || r->base < 0 || r->ahead_tried || r->broken || !r->sampler)
            continue;
        r->ahead_tried = true;
        int k = r->k;
        if (r->base + 1 + k + k >= ds->context)
            return 1;
        /* the cache holds the text and drafted[0..k-1); as if all were
         * accepted, the text would end with drafted[k-1] at base + k */
        sl_err why;
        ds->tok[0] = r->drafted[k - 1];
        ds->seq[0] = r->seq;
        ds->pos[0] = r->base + k - r->kv_off;
        int want = 0;
        if (eval_rows(ds, 1, &want, 1, &why))
            return 1;
        float *gq = r->sampled ? r->ahead_q : NULL; /* scratch for the guess's q */
        r->guess = draft_pick(ds, r, ds->logits, gq);
        ds->tok[0] = r->guess;
        ds->pos[0] = r->base + k + 1 - r->kv_off;
        if (eval_rows(ds, 1, &want, 1, &why))
            return 1;
        size_t v = (size_t)ds->n_vocab;
        r->ahead_tok[0] = draft_pick(ds, r, ds->logits, gq);
        for (int j = 1; j < k; j++) {
            ds->tok[0] = r->ahead_tok[j - 1];
            ds->pos[0] = r->base + k + 1 + j - r->kv_off;
            if (eval_rows(ds, 1, &want, 1, &why))
                return 1;
            r->ahead_tok[j] = draft_pick(ds, r, ds->logits, gq ? gq + (size_t)j * v : NULL);
        }
        r->ahead_k = k;
        r->ahead = true;
        ds->draft_tokens += k + 1;
        return 1;
    }
    return 0;
}

static void draft_describe(const sl_stage *s, char *buf, size_t size)
{
    const draft_stage *ds = s->impl;
    snprintf(buf, size, "drafted %ld tokens in %ld blocks%s", ds->drafted_tokens, ds->blocks,
             ds->pipelined ? "" : " (not pipelined)");
    if (ds->q_dense_bytes) {
        size_t n = strlen(buf);
        snprintf(buf + n, size - n, "; draft distributions %ld bytes (%ld as dense rows)", ds->q_bytes,
                 ds->q_dense_bytes);
    }
    if (ds->pipelined) {
        size_t n = strlen(buf);
        snprintf(buf + n, size - n, "; drafted ahead: %ld used, %ld dropped", ds->ahead_hits,
                 ds->ahead_misses);
    }
}

static void destroy_draft_stage(sl_stage *s)
{
    draft_stage *ds = s->impl;
    if (ds) {
        sl_reqtab_free(&ds->reqs, free_req);
        for (int i = 0; ds->parked && i < ds->max_seqs; i++)
            free(ds->parked[i].tok);
        free(ds->parked);
        sl_lm_free(ds->lm);
        free(ds->x);
        free(ds->logits);
        free(ds->row);
        free(ds->tok);
        free(ds->seq);
        free(ds->pos);
        free(ds->ids);
        free(ds->probs);
        free(ds->o_req);
        free(ds->o_seq);
        free(ds->o_pos);
        free(ds->o_tok);
        free(ds->o_draft);
        free(ds->o_flags);
        free(ds->o_qsrc);
        free(ds->wanted);
        free(ds);
    }
    free(s);
}

int sl_draft_stage_new(sl_stage *s, const sl_stage_spec *spec, sl_err *err)
{
    draft_stage *ds = calloc(1, sizeof *ds);
    if (!ds)
        return sl_fail(err, "out of memory");
    s->impl = ds;
    s->destroy = destroy_draft_stage;
    s->process = draft_process;
    s->describe = draft_describe;
    ds->max_batch = spec->max_batch_tokens;
    ds->context = spec->context;
    ds->max_seqs = spec->max_sequences;
    ds->k_max = spec->spec_k;
    ds->auto_k = spec->spec_auto;
    ds->lookup = spec->spec_lookup;
    ds->pipelined = spec->spec_pipelined && !spec->spec_lookup;
    /* only a pipelined draft model works in idle time; an idle callback
     * costs its host one more poll after every message (host.c) */
    if (ds->pipelined)
        s->idle = draft_idle;
    if (ds->k_max < 0 || ds->k_max > SL_SPEC_K_MAX)
        return sl_fail(err, "speculative k = %d outside 0..%d", ds->k_max, SL_SPEC_K_MAX);
    spa_init(&ds->spa_prior, ds->k_max);
    ds->spa_prior.free_alpha = ds->lookup; /* lookup scores its drafts for free (extend_request) */
    if (!ds->lookup) {
        if (!spec->draft_model || !spec->draft_model[0])
            return sl_fail(err, "speculative decoding needs a draft model or prompt-lookup");
        if (sl_lm_load_weights(&ds->lm, spec->draft_model, err))
            return -1;
        ds->model = ds->lm->model;
    }
    if (sl_vocab_check(spec->model, ds->model ? ds->model->gguf : NULL, spec->draft_model,
                       &ds->n_vocab, err))
        return -1;
    if (ds->model) {
        /* a cache slot per request, without rings: rejected drafts roll back */
        sl_lm_size size = {.n_ctx = ds->context, .max_tokens = ds->max_batch,
                           .n_seqs = ds->max_seqs, .kv_type = SL_TYPE_F32};
        ds->d_model = ds->model->cfg.d_model;
        if (sl_lm_alloc(ds->lm, &size, err))
            return -1;
        ds->kv = ds->lm->kv;
        ds->fwd = ds->lm->fwd;
    }
    int no_table = sl_reqtab_init(&ds->reqs, sizeof(dreq), ds->max_seqs);
    size_t rows = (size_t)ds->max_batch + 1, v = (size_t)ds->n_vocab;
    ds->x = malloc(rows * (size_t)(ds->d_model + 1) * sizeof(float));
    ds->logits = malloc((SHADOW_ROWS + 1) * v * sizeof(float)); /* a probe's rows (catch_up) */
    ds->tok = malloc(rows * sizeof(int32_t));
    ds->seq = malloc(rows * sizeof(int32_t));
    ds->pos = malloc(rows * sizeof(int32_t));
    ds->ids = malloc(v * sizeof(int32_t));
    ds->probs = malloc(v * sizeof(float));
    ds->o_req = malloc(rows * sizeof(uint64_t));
    ds->o_seq = malloc(rows * sizeof(int32_t));
    ds->o_pos = malloc(rows * sizeof(int32_t));
    ds->o_tok = malloc(rows * sizeof(int32_t));
    ds->o_draft = malloc(rows * sizeof(int32_t));
    ds->o_flags = malloc(rows);
    ds->o_qsrc = malloc(rows * sizeof *ds->o_qsrc);
    ds->wanted = malloc(rows * sizeof *ds->wanted);
    if (no_table || !ds->x || !ds->logits || !ds->tok || !ds->seq || !ds->pos || !ds->ids ||
        !ds->probs || !ds->o_req || !ds->o_seq || !ds->o_pos || !ds->o_tok || !ds->o_draft ||
        !ds->o_flags || !ds->o_qsrc || !ds->wanted)
        return sl_fail(err, "out of memory");
    if (ds->model) {
        /* a probe's worth of rows through the draft model now: its first
         * use (page faults on the scratch and cache rows a catch-up of many
         * rows writes, cold caches: 2x the steady cost on the tiny pair)
         * is not a request's first probe, whose cost spaces the probes
         * after it and which every plain step pays. One row warmed only
         * one row's pages: the first probe (the prompt and 8 tokens, ~30
         * rows) still took 2.2-3.3 ms against 1.4-1.5 ms after this. */
        int n_warm = WARM_ROWS < ds->max_batch ? WARM_ROWS : ds->max_batch;
        if (n_warm > ds->context)
            n_warm = ds->context;
        for (int i = 0; i < n_warm; i++) {
            ds->tok[i] = 0;
            ds->seq[i] = 0;
            ds->pos[i] = i;
        }
        /* the logits of as many rows as a probe's catch-up scores
         * (SHADOW_ROWS + 1): their scratch pages and the head's many-row
         * path are first touched here, not in a request's first probe
         * (on a virtual machine a page's first touch costs ~10 us: that
         * probe's step took 21-44 page faults) */
        int n_want = SHADOW_ROWS + 1 < n_warm ? SHADOW_ROWS + 1 : n_warm;
        int want[SHADOW_ROWS + 1];
        for (int i = 0; i < n_want; i++)
            want[i] = n_warm - n_want + i;
        if (eval_rows(ds, n_warm, want, n_want, err))
            return -1;
        /* a sampled request's picks and its catch-up's scoring */
        memset(ds->ids, 0, (size_t)ds->n_vocab * sizeof *ds->ids);
        memset(ds->probs, 0, (size_t)ds->n_vocab * sizeof *ds->probs);
        sl_kv_truncate(ds->kv, 0, 0);
        ds->draft_s = 0.0;
    }
    return 0;
}
