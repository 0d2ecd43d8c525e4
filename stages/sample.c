/* The sample stage: picks each wanted row's next token from its logits
 * with the request's sampling settings, and accepts a prefix of drafted
 * tokens (speculative decoding: greedy by equality, sampled by the
 * min(1, p/q) rule against the draft's distributions). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/config.h"
#include "model/gguf.h"
#include "msg/draftq.h"
#include "stages/kinds.h"
#include "stages/reqtab.h"
#include "stages/sampler.h"
#include "stages/spec.h"

typedef struct req_state {
    sl_reqtab_key key;    /* first: the table's */
    sl_sampler *sampler;
    sl_rng spec_rng;      /* speculative sampling's acceptance draws */
    int32_t *recent;      /* ring of the last repeat_last_n tokens, oldest first when unrolled */
    int n_recent, cap_recent;
} req_state;

typedef struct sample_stage {
    int n_vocab;
    sl_reqtab states;     /* req_state by request id */
    int32_t *recent_buf;  /* unrolled history for the sampler */
    float *row;           /* one row of logits, modified by the sampler */
    int32_t *tokens;      /* output rows */
    uint64_t *reqs;
    int32_t *spec;        /* output rows: drafted tokens their step verified */
    float *tok_p;         /* output rows: the target's probability of a token a plain
                           * step sampled (temperature > 0), else -1 (PL_TOKEN_P) */
    bool any_p;           /* some output row has one */
    /* speculative sampling scratch, made on first use: k+1 target and k
     * draft distributions, and per-vocabulary work rows */
    float *p_rows, *q_rows, *resid, *probs;
    int32_t *ids;
    uint32_t *src_row;    /* output rows: the LOGITS row that gave each (for the mtp stage) */
    uint64_t *q_starts;   /* row offsets of the draft distributions (2 a row) */
    uint32_t max_rows;    /* rows the scratch holds */
} sample_stage;

static req_state *find_state(sample_stage *ss, uint64_t id, bool create)
{
    return sl_reqtab_find(&ss->states, id, create, NULL);
}

static void free_state(void *entry)
{
    req_state *st = entry;
    sl_sampler_free(st->sampler);
    free(st->recent);
}

static void push_recent(req_state *st, int32_t tok)
{
    if (st->cap_recent == 0)
        return;
    if (st->n_recent == st->cap_recent) {
        memmove(st->recent, st->recent + 1, (size_t)(st->cap_recent - 1) * sizeof *st->recent);
        st->n_recent--;
    }
    st->recent[st->n_recent++] = tok;
}

static int add_params(sample_stage *ss, const Sluice__ReqParams *p, sl_err *err)
{
    req_state *st = find_state(ss, p->request_id, true);
    if (!st)
        return sl_fail(err, "too many requests in flight (%d)", ss->states.cap);
    if (st->sampler)
        return 0; /* already known (params repeat on each prefill chunk) */
    sl_sampling sp;
    sl_sampling_defaults(&sp);
    sp.temperature = p->temperature;
    sp.top_k = p->top_k;
    sp.top_p = p->top_p > 0.0f ? p->top_p : 1.0f;
    sp.min_p = p->min_p;
    sp.repeat_penalty = p->repeat_penalty > 0.0f ? p->repeat_penalty : 1.0f;
    sp.repeat_last_n = p->repeat_last_n > 0 ? p->repeat_last_n : 0;
    sp.seed = p->seed;
    st->sampler = sl_sampler_new(&sp, ss->n_vocab);
    sl_rng_seed(&st->spec_rng, sp.seed ^ 0x9E3779B97F4A7C15ull);
    st->cap_recent = sp.repeat_last_n;
    st->recent = st->cap_recent ? malloc((size_t)st->cap_recent * sizeof *st->recent) : NULL;
    if (!st->sampler || (st->cap_recent && !st->recent))
        return sl_fail(err, "out of memory");
    for (size_t i = 0; i < p->n_recent; i++)
        push_recent(st, p->recent[i]);
    return 0;
}

/* The speculative payloads of a LOGITS message, checked: which rows hold
 * drafted tokens, and the draft's distributions (msg/draftq.h; none sent:
 * one-hot). */
typedef struct spec_view {
    const int32_t *drafted;  /* per row: drafted token or -1; NULL: no speculation */
    pl_draftq q;             /* one row per drafted row, or q.n_rows 0 */
} spec_view;

static int read_spec_view(const sample_stage *ss, const pl_msg *in, uint32_t n, spec_view *sv,
                          sl_err *why)
{
    memset(sv, 0, sizeof *sv);
    if (!n || !pl_msg_has(in, SLUICE__PAYLOAD_KIND__PL_DRAFT_TOKEN))
        return 0;
    if (!(sv->drafted = pl_msg_i32(in, SLUICE__PAYLOAD_KIND__PL_DRAFT_TOKEN, n, why)))
        return -1;
    uint32_t n_drafted = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (sv->drafted[i] >= ss->n_vocab)
            return sl_fail(why, "row %u holds drafted token %d outside the vocabulary of %d", i,
                           sv->drafted[i], ss->n_vocab);
        n_drafted += sv->drafted[i] >= 0;
    }
    if (n_drafted > ss->max_rows)
        return sl_fail(why, "%u drafted rows, more than the %u a batch holds", n_drafted, ss->max_rows);
    if (pl_draftq_view(in, n_drafted, ss->n_vocab, ss->q_starts, &sv->q, why))
        return -1;
    /* a drafted token its own distribution could not give is no draw from it */
    for (uint32_t i = 0, r = 0; i < n && sv->q.n_rows; i++) {
        if (sv->drafted[i] < 0)
            continue;
        if (pl_draftq_prob(&sv->q, r, sv->drafted[i], sv->drafted[i]) <= 0.0f)
            return sl_fail(why, "row %u: drafted token %d has no probability in its draft distribution",
                           i, sv->drafted[i]);
        r++;
    }
    return 0;
}

/* How many drafted rows of the same request follow the verified row i. */
static int group_drafts(const spec_view *sv, const uint64_t *req, uint32_t n, uint32_t i)
{
    int k = 0;
    while (sv->drafted && i + 1 + (uint32_t)k < n && sv->drafted[i + 1 + k] >= 0 &&
           req[i + 1 + k] == req[i] && k < SL_SPEC_K_MAX)
        k++;
    return k;
}

static int spec_scratch(sample_stage *ss, sl_err *why)
{
    if (ss->p_rows)
        return 0;
    size_t v = (size_t)ss->n_vocab;
    ss->p_rows = malloc((SL_SPEC_K_MAX + 1) * v * sizeof(float));
    ss->q_rows = malloc(SL_SPEC_K_MAX * v * sizeof(float));
    ss->resid = malloc(v * sizeof(float));
    ss->probs = malloc(v * sizeof(float));
    ss->ids = malloc(v * sizeof(int32_t));
    if (!ss->p_rows || !ss->q_rows || !ss->resid || !ss->probs || !ss->ids)
        return sl_fail(why, "out of memory for speculative sampling");
    return 0;
}

/* Greedy verification: the target's pick at each row, accepted while it
 * equals the drafted token that follows; the first mismatch (or the bonus
 * after all k) is the last token emitted. */
static int verify_greedy(sample_stage *ss, req_state *st, const float *logits, const int32_t *draft,
                         int k, int32_t *emit)
{
    int n = 0;
    for (int j = 0; j <= k; j++) {
        memcpy(ss->row, logits + (size_t)j * ss->n_vocab, (size_t)ss->n_vocab * sizeof(float));
        int32_t tok = sl_sampler_pick(st->sampler, ss->row, st->recent, st->n_recent);
        push_recent(st, tok);
        emit[n++] = tok;
        if (j == k || tok != draft[j])
            break;
    }
    return n;
}

/* Speculative sampling: the target's distribution at each row (the same
 * transforms as plain sampling, the penalty seeing the drafted tokens
 * before it), accepted by the min(1, p/q) rule against the draft's: rows
 * q0.. of q (dense again here: the rule reads whole rows). */
static int verify_sampled(sample_stage *ss, req_state *st, const float *logits, const int32_t *draft,
                          int k, const pl_draftq *q, uint32_t q0, int32_t *emit, sl_err *why)
{
    if (spec_scratch(ss, why))
        return -1;
    size_t v = (size_t)ss->n_vocab;
    int saved_n = st->n_recent;
    int32_t saved[64];
    int32_t *keep = st->cap_recent <= 64 ? saved : malloc((size_t)st->cap_recent * sizeof *keep);
    if (!keep)
        return sl_fail(why, "out of memory");
    if (st->n_recent)
        memcpy(keep, st->recent, (size_t)st->n_recent * sizeof *keep);
    for (int j = 0; j <= k; j++) {
        memcpy(ss->row, logits + (size_t)j * v, v * sizeof(float));
        sl_sampler_penalize(st->sampler, ss->row, st->recent, st->n_recent);
        sl_spec_dense_probs(st->sampler, ss->row, ss->n_vocab, ss->ids, ss->probs,
                            ss->p_rows + (size_t)j * v);
        if (j < k)
            push_recent(st, draft[j]);
    }
    st->n_recent = saved_n;
    if (saved_n)
        memcpy(st->recent, keep, (size_t)saved_n * sizeof *keep);
    if (keep != saved)
        free(keep);
    for (int j = 0; j < k; j++) /* no row sent: a deterministic drafter, one-hot */
        pl_draftq_dense(q, q0 + (uint32_t)j, draft[j], ss->q_rows + (size_t)j * v);
    int n = sl_spec_accept_sampled(ss->p_rows, ss->q_rows, draft, k, ss->n_vocab, &st->spec_rng,
                                   ss->resid, emit);
    for (int j = 0; j < n; j++)
        push_recent(st, emit[j]);
    return n;
}

/* Samples the group of row i and its k drafted rows; returns the tokens
 * written to emit (1 to k+1). */
static int sample_group(sample_stage *ss, req_state *st, const float *all_logits, const spec_view *sv,
                        uint32_t i, int k, int32_t *emit, sl_err *why)
{
    const float *logits = all_logits + (size_t)i * ss->n_vocab;
    if (sv->drafted && sv->drafted[i] >= 0)
        return sl_fail(why, "row %u holds a drafted token but no verified row precedes it", i);
    if (k == 0) {
        /* The sampler rewrites its row: work on a copy, not the frame. */
        memcpy(ss->row, logits, (size_t)ss->n_vocab * sizeof(float));
        emit[0] = sl_sampler_pick(st->sampler, ss->row, st->recent, st->n_recent);
        push_recent(st, emit[0]);
        return 1;
    }
    const int32_t *draft = sv->drafted + i + 1;
    uint32_t before = 0; /* drafted rows ahead of this group */
    for (uint32_t r = 0; r <= i; r++)
        before += sv->drafted[r] >= 0;
    if (st->sampler && sl_sampler_greedy(st->sampler))
        return verify_greedy(ss, st, logits, draft, k, emit);
    return verify_sampled(ss, st, logits, draft, k, &sv->q, before, emit, why);
}

/* Samples every group of rows (a verified row and the drafted rows after
 * it) into ss->tokens/reqs/spec; returns the tokens, or -1 with why. */
static int sample_rows(sample_stage *ss, const uint64_t *req, uint32_t n, const float *logits,
                       const spec_view *sv, sl_err *why)
{
    uint32_t n_out = 0;
    ss->any_p = false;
    for (uint32_t i = 0; i < n;) {
        req_state *st = find_state(ss, req[i], false);
        if (!st || !st->sampler)
            return sl_fail(why, "request %llu has no sampling parameters", (unsigned long long)req[i]);
        int k = group_drafts(sv, req, n, i);
        int emitted = sample_group(ss, st, logits, sv, i, k, ss->tokens + n_out, why);
        if (emitted < 0)
            return -1;
        bool plain_sampled = k == 0 && !sl_sampler_greedy(st->sampler);
        for (int j = 0; j < emitted; j++) {
            ss->reqs[n_out + (uint32_t)j] = req[i];
            ss->spec[n_out + (uint32_t)j] = k;
            ss->src_row[n_out + (uint32_t)j] = i + (uint32_t)j;
            /* a draft model's catch-up scores its acceptance with it
             * (stages/draft.c); a token of a verification was not drawn
             * from p alone */
            ss->tok_p[n_out + (uint32_t)j] = plain_sampled ? sl_sampler_last_prob(st->sampler) : -1.0f;
        }
        ss->any_p |= plain_sampled;
        n_out += (uint32_t)emitted;
        i += (uint32_t)k + 1;
    }
    return (int)n_out;
}

/* A pipeline with an mtp stage: each token's slot, position and hidden
 * state (those of the row whose logits gave it), and the batch's K/V rows,
 * travel on to it. */
static int add_mtp_feed(const sample_stage *ss, pl_msg *m, const pl_msg *in, uint32_t n_out, sl_err *err)
{
    if (pl_msg_pass(m, in, SLUICE__PAYLOAD_KIND__PL_MTP_KV, err) ||
        pl_msg_pass(m, in, SLUICE__PAYLOAD_KIND__PL_MTP_ROW, err))
        return -1;
    if (!n_out || !pl_msg_has(in, SLUICE__PAYLOAD_KIND__PL_HIDDEN))
        return 0;
    uint32_t n = in->hdr->n_rows;
    uint64_t d = in->shape[SLUICE__PAYLOAD_KIND__PL_HIDDEN][1];
    const float *h = pl_msg_f32_view(in, SLUICE__PAYLOAD_KIND__PL_HIDDEN, n, d, err);
    const int32_t *seq = h ? pl_msg_i32(in, SLUICE__PAYLOAD_KIND__PL_SEQ, n, err) : NULL;
    const int32_t *pos = seq ? pl_msg_i32(in, SLUICE__PAYLOAD_KIND__PL_POS, n, err) : NULL;
    if (!pos)
        return -2;
    float *oh = malloc((size_t)n_out * d * sizeof(float));
    int32_t *os = malloc((size_t)n_out * sizeof(int32_t)), *op = malloc((size_t)n_out * sizeof(int32_t));
    if (oh && os && op)
        for (uint32_t j = 0; j < n_out; j++) {
            uint32_t i = ss->src_row[j];
            memcpy(oh + j * d, h + i * d, d * sizeof(float));
            os[j] = seq[i];
            op[j] = pos[i];
        }
    int rc = !oh || !os || !op ? sl_fail(err, "out of memory") : 0;
    if (!rc && !(rc = pl_msg_add(m, SLUICE__PAYLOAD_KIND__PL_HIDDEN, SLUICE__DTYPE__DT_F32, n_out, d, oh,
                                 sl_free_cb, NULL, err)))
        oh = NULL;
    if (!rc && !(rc = pl_msg_add(m, SLUICE__PAYLOAD_KIND__PL_SEQ, SLUICE__DTYPE__DT_I32, n_out, 0, os,
                                 sl_free_cb, NULL, err)))
        os = NULL;
    if (!rc && !(rc = pl_msg_add(m, SLUICE__PAYLOAD_KIND__PL_POS, SLUICE__DTYPE__DT_I32, n_out, 0, op,
                                 sl_free_cb, NULL, err)))
        op = NULL;
    free(oh);
    free(os);
    free(op);
    return rc;
}

/* The TOKENS message answering in: n_out tokens, and with speculation how
 * many drafted tokens each one's step verified. */
static int send_tokens(sl_stage *s, const pl_msg *in, uint32_t n_out, bool spec, const sl_emit *out,
                       sl_err *err)
{
    sample_stage *ss = s->impl;
    pl_msg m;
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_TOKENS, in->hdr->batch_id, n_out);
    pl_msg_set_sent_ns(&m, in->hdr->sent_ns);
    if (n_out && (pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, n_out, 0,
                             ss->reqs, NULL, NULL, err) ||
                  pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_TOKEN, SLUICE__DTYPE__DT_I32, n_out, 0,
                             ss->tokens, NULL, NULL, err) ||
                  (spec && pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_SPEC, SLUICE__DTYPE__DT_I32,
                                      n_out, 0, ss->spec, NULL, NULL, err)) ||
                  (ss->any_p && pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_TOKEN_P, SLUICE__DTYPE__DT_F32,
                                           n_out, 0, ss->tok_p, NULL, NULL, err)))) {
        pl_msg_close(&m);
        return -1;
    }
    sl_err why;
    int fed = add_mtp_feed(ss, &m, in, n_out, &why);
    if (fed == -2) {
        pl_msg_close(&m);
        return sl_stage_fail_batch(s, (pl_msg *)in, out, why.msg, err);
    }
    if (fed) {
        *err = why;
        pl_msg_close(&m);
        return -1;
    }
    return sl_stage_send(s, in->hdr->n_rows, &m, out, err);
}

static int sample_process(sl_stage *s, pl_msg *in, const sl_emit *out, sl_err *err)
{
    sample_stage *ss = s->impl;
    int kind = in->hdr->kind;
    sl_err why;
    if (kind == SLUICE__MSG_KIND__MSG_RELEASE || kind == SLUICE__MSG_KIND__MSG_CANCEL) {
        for (size_t i = 0; i < in->hdr->n_requests; i++)
            sl_reqtab_drop(&ss->states, in->hdr->requests[i], free_state);
        return 0; /* the end of the line for control messages */
    }
    if (kind == SLUICE__MSG_KIND__MSG_TRUNCATE)
        return 0;
    if (kind != SLUICE__MSG_KIND__MSG_LOGITS)
        return sl_stage_route_other(s, in, out, err); /* errors travel on to the driver */
    for (size_t i = 0; i < in->hdr->n_params; i++)
        if (add_params(ss, in->hdr->params[i], &why))
            return sl_stage_fail_batch(s, in, out, why.msg, err);
    uint32_t n = in->hdr->n_rows;
    const uint64_t *req = n ? pl_msg_u64(in, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, n, &why) : NULL;
    if (n && !req)
        return sl_stage_fail_batch(s, in, out, why.msg, err);
    sl_err ignore;
    const float *logits = n ? pl_msg_f32_view(in, SLUICE__PAYLOAD_KIND__PL_LOGITS, n, (uint64_t)ss->n_vocab,
                                              &ignore) : NULL;
    if (n && !logits) {
        snprintf(why.msg, sizeof why.msg, "logits payload is not f32 [%u, %d]", n, ss->n_vocab);
        return sl_stage_fail_batch(s, in, out, why.msg, err);
    }
    spec_view sv;
    if (read_spec_view(ss, in, n, &sv, &why))
        return sl_stage_fail_batch(s, in, out, why.msg, err);
    int n_out = sample_rows(ss, req, n, logits, &sv, &why);
    if (n_out < 0)
        return sl_stage_fail_batch(s, in, out, why.msg, err);
    return send_tokens(s, in, (uint32_t)n_out, sv.drafted != NULL, out, err);
}

static void destroy_sample_stage(sl_stage *s)
{
    sample_stage *ss = s->impl;
    if (ss) {
        sl_reqtab_free(&ss->states, free_state);
        free(ss->row);
        free(ss->tokens);
        free(ss->reqs);
        free(ss->spec);
        free(ss->tok_p);
        free(ss->p_rows);
        free(ss->q_rows);
        free(ss->resid);
        free(ss->probs);
        free(ss->ids);
        free(ss->src_row);
        free(ss->q_starts);
        free(ss);
    }
    free(s);
}

int sl_sample_stage_new(sl_stage *s, const sl_stage_spec *spec, sl_err *err)
{
    s->process = sample_process;
    sample_stage *ss = calloc(1, sizeof *ss);
    if (!ss)
        return sl_fail(err, "out of memory");
    s->impl = ss;
    s->destroy = destroy_sample_stage;
    /* The vocabulary size comes from the model's metadata only. */
    gguf_file *f;
    sl_config c;
    if (gguf_open(&f, spec->model, err))
        return -1;
    int rc = sl_config_from_gguf(&c, f, err);
    gguf_close(f);
    if (rc)
        return -1;
    ss->n_vocab = c.n_vocab;
    int no_table = sl_reqtab_init(&ss->states, sizeof(req_state), spec->max_sequences);
    ss->row = malloc((size_t)ss->n_vocab * sizeof *ss->row);
    ss->tokens = malloc((size_t)spec->max_batch_tokens * sizeof *ss->tokens + 1);
    ss->reqs = malloc((size_t)spec->max_batch_tokens * sizeof *ss->reqs + 1);
    ss->spec = malloc((size_t)spec->max_batch_tokens * sizeof *ss->spec + 1);
    ss->tok_p = malloc((size_t)spec->max_batch_tokens * sizeof *ss->tok_p + 1);
    ss->src_row = malloc((size_t)spec->max_batch_tokens * sizeof *ss->src_row + 1);
    ss->max_rows = (uint32_t)spec->max_batch_tokens;
    ss->q_starts = malloc(2 * (size_t)spec->max_batch_tokens * sizeof *ss->q_starts + 1);
    if (no_table || !ss->row || !ss->tokens || !ss->reqs || !ss->spec || !ss->tok_p || !ss->q_starts || !ss->src_row)
        return sl_fail(err, "out of memory");
    return 0;
}

