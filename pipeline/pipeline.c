/* A pipeline as the client sees it: the stages the config asks for, and the
 * driver that feeds them (see client.h). */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "model/chat.h"
#include "model/config.h"
#include "model/gguf.h"
#include "model/tokenizer.h"
#include "pipeline/client.h"
#include "pipeline/coord.h"
#include "pipeline/cores.h"
#include "pipeline/host.h"
#include "pipeline/link_poll.h"
#include "pipeline/keyring.h"
#include "pipeline/wire.h"
#include "util/debug.h"
#include "scheduler/bind.h"
#include "stages/spec.h"
#include "util/clock.h"
#include "util/cpus.h"

#define ADDR_MAX 300

typedef enum req_state {
    RQ_WAIT_SLOT,   /* no KV slot free yet */
    RQ_FEED,        /* has rows to send (prefill or the next token) */
    RQ_WAIT_TOKEN,  /* its wanted row is in flight */
    RQ_FINISHED,
} req_state;

typedef struct request {
    uint64_t id;
    req_state state;
    int slot;
    int32_t *tokens;        /* prompt, then generated tokens */
    int n_tokens, cap;
    int n_prompt;
    int n_fed;              /* positions sent down the pipeline */
    int n_cached;           /* prompt positions the slot's cache held already (prefix cache) */
    int max_new, n_gen;
    bool params_sent, cancelled;
    bool clean_end;         /* ended with every batch answered: its slot's cache is whole */
    int retries;            /* replays after a stage died (failure.retries at most) */
    int32_t stop_a, stop_b; /* eos, and end-of-turn in chat mode */
    sl_sampling sampling;
    double t_submit, t_first, t_last;
    long spec_steps, spec_drafted, spec_accepted; /* speculative verifications */
    /* drafted by an mtp stage after the last token, for the next batch */
    int32_t next_draft[SL_SPEC_K_MAX];
    int n_next_draft;
    /* the target's probability of the last token where a plain step
     * sampled it (PL_TOKEN_P), else -1: sent with its row to a draft
     * stage, whose catch-up estimates the acceptance of a sampled request
     * with it (stages/draft.c) */
    float last_p;
    struct request *next;
} request;

/* A free slot's cache as its last request left it (the prefix cache): the
 * tokens at positions [0, n) of every layers stage. */
typedef struct parked {
    int32_t *tokens;
    int n, cap;
    uint64_t last_used;     /* the driver's clock of slot hand-outs (LRU) */
} parked;

typedef struct inflight {
    uint64_t batch_id;
    double t_sent;
    int n_req;
    uint64_t *req;          /* requests with rows in the batch */
} inflight;

typedef struct event_ring {
    sl_event *ev;
    int head, n, cap;
} event_ring;

struct sl_pipeline {
    pl_config cfg;
    sl_cpuset cpus_before;  /* the coordinator thread's CPUs before the config's (pl_cores_apply) */
    bool cpus_bound;
    sl_pipeline_opts opts;
    sl_config model_cfg;
    sl_tokenizer *tok;
    const sl_chat_format *chat; /* NULL: chat_err says why there is none */
    sl_err chat_err;
    void *zctx;
    void *to_first;         /* PUSH to stage 0 */
    void *from_last;        /* PULL from the last stage */
    sec_ipc_file from_last_file; /* its socket file, removed when it closes */
    /* the same-host link (pipeline/link.h): beside from_last when it is
     * ipc://, instead of to_first when stage 0 is behind ipc:// */
    pl_link_in *link_in;
    pl_link_out *link_out;
    bool link_more;         /* link_in may hold answers not yet taken */
    bool from_more;         /* from_last may: look (ZMQ_EVENTS) before sleeping */
    int link_spin_us;       /* pl_link_spin_us */
    pl_host **hosts;        /* in-process stages (NULL for remote ones) */
    int n_hosts;
    pl_coord *coord;
    pl_keyring keys;        /* CURVE on every tcp:// socket when keys.self.on */
    sec_zap *zap;           /* admits the config's nodes to our tcp:// sockets */
    pl_wire_limits limits;
    _Atomic uint64_t n_refused;   /* requests submit refused (max_requests) */
    _Atomic uint64_t n_submitted; /* requests submit accepted */
    /* driver */
    request *reqs;          /* linked list, submission order */
    _Atomic int n_active;   /* atomic: metrics servers read it from their threads */
    uint64_t next_req_id, next_batch_id;
    bool *slot_used;
    parked *parked;         /* per slot (prefix cache; NULL when off) */
    uint64_t slot_clock;
    int depth;              /* batches in flight at most */
    inflight *fly;          /* FIFO ring of depth entries */
    int fly_head, fly_n;
    event_ring events;
    /* failure handling (see on_stage_death) */
    uint64_t seen_deaths;   /* the coordinator's deaths already handled */
    bool down;              /* a worker is dead: nothing is sent until it re-joins */
    double down_since;
    uint64_t stale_below;   /* answers to batches up to this id predate a death */
    uint64_t run_id;        /* this run's (Header.run_id): random, nonzero, chosen at open */
    _Atomic uint64_t n_foreign; /* answers of another run dropped */
    uint64_t *dirty;        /* per slot: the request that held it when a stage died, 0: clean */
    sl_spec_summary spec;   /* over the pipeline's life */
    /* batch building scratch, sized for max_batch_tokens */
    uint64_t *b_req;
    int32_t *b_seq, *b_pos, *b_tok, *b_draft;
    float *b_tok_p;
    uint8_t *b_flags;
    Sluice__ReqParams *b_params;
    Sluice__ReqParams **b_param_ptrs;
    int32_t *b_recent;
};

void sl_pipeline_opts_default(sl_pipeline_opts *o)
{
    memset(o, 0, sizeof *o);
    o->batch_timeout_s = 60.0;
    o->peer_timeout_s = 2.0;
    o->self_exe = "/proc/self/exe";
}

/* ---- addresses ---- */

/* The address stage i binds (i == n_stages: the driver's return socket).
 * Consecutive parts on one node talk over inproc://; a hop between nodes
 * uses the receiving node's transport, each stage on its own port or path. */
static int stage_address(const pl_config *c, const char *local_hops, int i, uint64_t tag,
                         char *out, sl_err *err)
{
    int node = i < c->n_stages ? c->stages[i].node : 0;
    int prev = i == 0 ? 0 : c->stages[i - 1].node;
    if (node == prev) {
        if (local_hops && strncmp(local_hops, "ipc:", 4) == 0)
            snprintf(out, ADDR_MAX, "ipc://%s/s%d", local_hops + 4, i);
        else if (local_hops && strncmp(local_hops, "tcp:", 4) == 0)
            snprintf(out, ADDR_MAX, "tcp://127.0.0.1:%ld", strtol(local_hops + 4, NULL, 10) + i);
        else if (local_hops)
            return sl_fail(err, "local hop transport '%s' is neither ipc:DIR nor tcp:PORT", local_hops);
        else
            snprintf(out, ADDR_MAX, "inproc://sluice-%llx-%d", (unsigned long long)tag, i);
        return 0;
    }
    const pl_node *n = &c->nodes[node];
    const char *a = n->address;
    if (strncmp(a, "tcp://", 6) == 0) {
        const char *colon = strrchr(a, ':');
        long port = colon ? strtol(colon + 1, NULL, 10) : 0;
        if (port <= 0 || port + 1 + i > 65535)
            return sl_fail(err, "%s: node '%s': address %s has no usable port", c->path, n->name, a);
        snprintf(out, ADDR_MAX, "%.*s:%ld", (int)(colon - a), a, port + 1 + i);
        return 0;
    }
    if (strncmp(a, "ipc://", 6) == 0) {
        snprintf(out, ADDR_MAX, "%s-s%d", a, i);
        return 0;
    }
    return sl_fail(err, "%s: node '%s' needs a tcp:// or ipc:// address: stage %d on node '%s' "
                   "sends to it", c->path, n->name, i - 1, c->nodes[prev].name);
}

/* ---- events ---- */

static sl_event *push_event(sl_pipeline *p, sl_event_kind kind, uint64_t req)
{
    event_ring *r = &p->events;
    if (r->n == r->cap) {
        int cap = r->cap ? 2 * r->cap : 64;
        sl_event *ev = malloc((size_t)cap * sizeof *ev);
        if (!ev)
            return NULL;
        for (int i = 0; i < r->n; i++)
            ev[i] = r->ev[(r->head + i) % r->cap];
        free(r->ev);
        r->ev = ev;
        r->head = 0;
        r->cap = cap;
    }
    sl_event *e = &r->ev[(r->head + r->n++) % r->cap];
    memset(e, 0, sizeof *e);
    e->kind = kind;
    e->request = req;
    return e;
}

/* ---- requests ---- */

static request *find_req(sl_pipeline *p, uint64_t id)
{
    for (request *r = p->reqs; r; r = r->next)
        if (r->id == id)
            return r;
    return NULL;
}

/* Sends m to stage 0 (over the link when there is one). */
static int send_first(sl_pipeline *p, pl_msg *m, sl_err *err)
{
    pl_msg_set_run_id(m, p->run_id);
    return p->link_out ? pl_link_send(p->link_out, m, err) : pl_msg_send(m, p->to_first, 0, err);
}

/* An in-band control message about one request's slot (RELEASE, or
 * TRUNCATE to length positions): it reaches every stage after the
 * request's batches sent before it and before those sent after. */
static void send_slot_control(sl_pipeline *p, const request *r, Sluice__MsgKind kind, int length)
{
    pl_msg m;
    sl_err err;
    pl_msg_init(&m, kind, 0, 0);
    int32_t seq = r->slot;
    uint64_t id = r->id;
    pl_msg_set_slots(&m, &seq, 1, &id, 1, length);
    pl_msg_raise_fence(&m, p->stale_below);
    if (send_first(p, &m, &err))
        fprintf(stderr, "sluice: cannot send %s of request %llu: %s\n", pl_msg_kind_name(kind),
                (unsigned long long)id, err.msg);
    pl_msg_close(&m);
}

static void send_release(sl_pipeline *p, request *r)
{
    if (r->slot < 0)
        return;
    send_slot_control(p, r, SLUICE__MSG_KIND__MSG_RELEASE, 0);
    p->slot_used[r->slot] = false;
    r->slot = -1;
}

/* ---- prefix cache ----
 * A request that ends cleanly (done, or cancelled with every batch it sent
 * still answered in order) leaves its slot's KV in every layers stage: the
 * slot is free, and remembers the tokens at positions [0, n_fed). A new
 * request takes the free slot whose tokens share the longest prefix with
 * its prompt and feeds only the rest, from that position: positions are
 * authoritative in the layers stages, which cut the slot's cache there
 * first (stages.c, rewind_slots). They cut back by at most max_batch_tokens
 * positions; further, a sliding-window layer's ring (window plus at least
 * max_batch_tokens slots) has overwritten positions the window still needs,
 * so a prefix that far back is not reused (the request starts at 0, which
 * clears the slot). A match that would throw away more of a slot's cache
 * than it keeps waits for no empty slot; slots with nothing to offer go
 * least recently used first. Off with limits.prefix_cache: false. With
 * speculation the draft stage keeps the parked slot's text and its own
 * cache rows too (draft.c, "prefix cache"), so it drafts for a reused
 * request from its first token. With limits.prefix_cache: full the
 * layers stages keep every position of sliding-window layers too (no ring),
 * so any prefix is reusable however far back it ends: a system prompt
 * shared by conversations longer than the window. */

/* Usable prefix of a parked slot for r: at most all of its prompt but the
 * last token (that one's logits are needed), 0 when too far back. */
static int pc_usable(const sl_pipeline *p, const parked *c, const request *r)
{
    int n = c->n < r->n_prompt - 1 ? c->n : r->n_prompt - 1;
    int k = 0;
    while (k < n && c->tokens[k] == r->tokens[k])
        k++;
    return p->cfg.limits.prefix_full || c->n - k <= p->cfg.limits.max_batch_tokens ? k : 0;
}

/* The free slot r gets (-1: none): the longest usable prefix, else an
 * empty slot, else the least recently used one. Sets where r starts. */
static int pc_pick_slot(sl_pipeline *p, request *r)
{
    int best = -1, best_len = 0, empty = -1, lru = -1;
    for (int s = 0; s < p->cfg.limits.max_sequences; s++) {
        if (p->slot_used[s])
            continue;
        if (!p->parked)
            return s;
        const parked *c = &p->parked[s];
        if (c->n == 0) {
            empty = empty < 0 ? s : empty;
            continue;
        }
        int k = pc_usable(p, c, r);
        if (k > best_len) {
            best = s;
            best_len = k;
        }
        if (lru < 0 || c->last_used < p->parked[lru].last_used)
            lru = s;
    }
    /* a short match (the BOS alone, say) does not evict a long cache while
     * an empty slot is there */
    if (best >= 0 && empty >= 0 && p->parked[best].n - best_len > best_len)
        best = -1;
    int s = best >= 0 ? best : empty >= 0 ? empty : lru;
    if (best >= 0) {
        r->n_fed = best_len;
        r->n_cached = best_len;
    }
    if (s >= 0 && p->parked)
        p->parked[s].n = 0; /* the request owns it now; its tokens are parked when it ends */
    return s;
}

/* Parks r's slot; false when it is to be released instead. */
static bool pc_park(sl_pipeline *p, request *r)
{
    if (!p->parked || r->slot < 0 || !r->clean_end || r->n_fed <= 0)
        return false;
    parked *c = &p->parked[r->slot];
    if (c->cap < r->n_fed) {
        int32_t *t = realloc(c->tokens, (size_t)r->n_fed * sizeof *t);
        if (!t)
            return false;
        c->tokens = t;
        c->cap = r->n_fed;
    }
    memcpy(c->tokens, r->tokens, (size_t)r->n_fed * sizeof *c->tokens);
    c->n = r->n_fed;
    /* CANCEL, not RELEASE: the sampler forgets the request, the layers
     * stages keep the slot's cache */
    send_slot_control(p, r, SLUICE__MSG_KIND__MSG_CANCEL, 0);
    c->last_used = ++p->slot_clock;
    p->slot_used[r->slot] = false;
    r->slot = -1;
    return true;
}

/* A stage died: the caches it held are gone (and the survivors' may hold
 * what its last batches left). Nothing parked is trusted. */
static void pc_forget_all(sl_pipeline *p)
{
    for (int s = 0; p->parked && s < p->cfg.limits.max_sequences; s++)
        p->parked[s].n = 0;
}

static void pc_free(sl_pipeline *p)
{
    for (int s = 0; p->parked && s < p->cfg.limits.max_sequences; s++)
        free(p->parked[s].tokens);
    free(p->parked);
}

/* Ends a request: frees its slot in every stage, removes it. */
static void finish(sl_pipeline *p, request *r)
{
    if (!pc_park(p, r))
        send_release(p, r);
    r->state = RQ_FINISHED;
    p->n_active--;
    request **pp = &p->reqs;
    while (*pp != r)
        pp = &(*pp)->next;
    *pp = r->next;
    free(r->tokens);
    free(r);
}

/* Ends a request with an ERROR event saying why (cut to the event's size). */
static void fail_req(sl_pipeline *p, request *r, const char *why)
{
    sl_event *e = push_event(p, SL_EV_ERROR, r->id);
    if (e) {
        e->n_prompt = r->n_prompt;
        e->n_generated = r->n_gen;
        e->n_cached = r->n_cached;
        size_t len = strnlen(why, sizeof e->error - 1);
        memcpy(e->error, why, len);
        e->error[len] = '\0';
    }
    finish(p, r);
}

static void done_req(sl_pipeline *p, request *r, const char *stop)
{
    r->clean_end = true;
    sl_event *e = push_event(p, SL_EV_DONE, r->id);
    if (e) {
        e->n_prompt = r->n_prompt;
        e->n_generated = r->n_gen;
        e->n_cached = r->n_cached;
        e->prefill_s = r->t_first - r->t_submit;
        e->decode_s = r->t_last - r->t_first;
        e->stop = stop;
        e->spec_steps = r->spec_steps;
        e->spec_drafted = r->spec_drafted;
        e->spec_accepted = r->spec_accepted;
    }
    finish(p, r);
}

const sl_chat_format *sl_pipeline_chat_format(const sl_pipeline *p, sl_err *why)
{
    if (!p->chat && why)
        *why = p->chat_err;
    return p->chat;
}

int sl_pipeline_tokenize(sl_pipeline *p, const sl_gen_params *gp, int32_t **ids, int *n, sl_err *err)
{
    const char *text = gp->prompt ? gp->prompt : "";
    char *chat_text = NULL;
    if (gp->chat && !gp->formatted) {
        if (!p->chat)
            return sl_fail(err, "%s", p->chat_err.msg);
        sl_chat_msg turn = {SL_CHAT_USER, text};
        if (sl_chat_apply(p->chat, &turn, 1, true, &chat_text, err))
            return -1;
        text = chat_text;
    }
    int rc = sl_tok_encode_prompt(p->tok, text, !gp->no_bos, ids, n, err);
    free(chat_text);
    return rc;
}

int sl_pipeline_submit(sl_pipeline *p, const sl_gen_params *gp, uint64_t *id, sl_err *err)
{
    int ctx = p->cfg.limits.context;
    if (p->n_active >= p->cfg.limits.max_requests) {
        p->n_refused++;
        return sl_fail(err, "refused: %d requests are in flight, the limit max_requests (%d); wait for one "
                       "to finish", (int)p->n_active, p->cfg.limits.max_requests);
    }
    if (gp->max_tokens < 1)
        return sl_fail(err, "a request must ask for at least one token");
    int32_t end_of_turn = -1;
    if (gp->chat && (!p->chat ? sl_fail(err, "%s", p->chat_err.msg)
                              : sl_chat_check_vocab(p->chat, p->tok, &end_of_turn, err)))
        return -1;
    request *r = calloc(1, sizeof *r);
    if (!r)
        return sl_fail(err, "out of memory");
    if (sl_pipeline_tokenize(p, gp, &r->tokens, &r->n_tokens, err)) {
        free(r);
        return -1;
    }
    if (r->n_tokens == 0 || r->n_tokens >= ctx) {
        sl_fail(err, "the prompt has %d tokens; it must have between 1 and %d (the context)",
                r->n_tokens, ctx - 1);
        free(r->tokens);
        free(r);
        return -1;
    }
    r->cap = r->n_tokens + 1;
    r->n_prompt = r->n_tokens;
    r->max_new = gp->max_tokens;
    r->sampling = gp->sampling;
    r->slot = -1;
    r->last_p = -1.0f; /* the prompt's last token was not sampled */
    r->stop_a = sl_tok_eos(p->tok);
    r->stop_b = end_of_turn;
    r->id = ++p->next_req_id;
    r->t_submit = sl_now_s();
    r->state = RQ_WAIT_SLOT;
    request **pp = &p->reqs;
    while (*pp)
        pp = &(*pp)->next;
    *pp = r;
    p->n_active++;
    p->n_submitted++;
    *id = r->id;
    return 0;
}

int sl_pipeline_cancel(sl_pipeline *p, uint64_t id)
{
    request *r = find_req(p, id);
    if (!r)
        return -1;
    if (r->state == RQ_WAIT_TOKEN) {
        r->cancelled = true; /* its token is on the way; drop it on arrival */
        return 0;
    }
    r->clean_end = true; /* what it sent is still answered in order: its cache stays whole */
    fail_req(p, r, "cancelled");
    return 0;
}

int sl_pipeline_active(const sl_pipeline *p) { return p->n_active; }

bool sl_pipeline_down(sl_pipeline *p)
{
    if (!p->coord)
        return false;
    pl_coord_status st;
    pl_coord_status_get(p->coord, &st);
    return st.n_down > 0;
}

/* ---- batches ---- */

static void assign_slots(sl_pipeline *p)
{
    for (request *r = p->reqs; r; r = r->next) {
        if (r->state != RQ_WAIT_SLOT)
            continue;
        int s = pc_pick_slot(p, r);
        if (s < 0)
            return;
        p->slot_used[s] = true;
        r->slot = s;
        r->state = RQ_FEED;
    }
}

static void add_params(sl_pipeline *p, request *r, int *n_params, int *n_recent)
{
    Sluice__ReqParams *pr = &p->b_params[*n_params];
    sluice__req_params__init(pr);
    pr->request_id = r->id;
    pr->temperature = r->sampling.temperature;
    pr->top_k = r->sampling.top_k;
    pr->top_p = r->sampling.top_p;
    pr->min_p = r->sampling.min_p;
    pr->repeat_penalty = r->sampling.repeat_penalty;
    pr->repeat_last_n = r->sampling.repeat_last_n;
    pr->seed = r->sampling.seed;
    int last_n = r->sampling.repeat_last_n > 0 && r->sampling.repeat_penalty != 1.0f
                     ? r->sampling.repeat_last_n : 0;
    /* the prompt's tail, and on a replay the tokens sampled since: the
     * sampler's window as it was when the stage died */
    int from = r->n_tokens > last_n ? r->n_tokens - last_n : 0;
    pr->n_recent = (size_t)(r->n_tokens - from);
    pr->recent = r->tokens + from;
    (void)n_recent;
    p->b_param_ptrs[*n_params] = pr;
    (*n_params)++;
}

/* An mtp stage's drafts after a request's last token (its row just put at
 * row - 1): rows after it, each wanted, as the draft stage would add them;
 * returns how many fit. */
static int append_drafts(sl_pipeline *p, request *r, int row, int max_rows, int *n_drafted)
{
    int k = r->n_next_draft, pos = r->n_tokens; /* the first drafted token's */
    r->n_next_draft = 0;
    if (r->state != RQ_WAIT_TOKEN || r->n_fed != r->n_tokens)
        return 0;
    if (k > max_rows - row)
        k = max_rows - row;
    if (k > p->cfg.limits.context - pos)
        k = p->cfg.limits.context - pos;
    /* a verification emits at most k + 1 tokens: drafts past the request's
     * budget would be verified and then dropped */
    if (k > r->max_new - r->n_gen - 1)
        k = r->max_new - r->n_gen - 1;
    for (int j = 0; j < k; j++) {
        p->b_req[row + j] = r->id;
        p->b_seq[row + j] = r->slot;
        p->b_pos[row + j] = pos + j;
        p->b_tok[row + j] = r->next_draft[j];
        p->b_flags[row + j] = 1;
        p->b_draft[row + j] = r->next_draft[j];
        p->b_tok_p[row + j] = -1.0f;
    }
    *n_drafted += k > 0 ? k : 0;
    return k > 0 ? k : 0;
}

/* Builds and sends one micro-batch from the requests that have rows to
 * feed; returns 0 when nothing was ready. Decoding requests are spread over
 * one batch per layer stage so every stage of a P-stage pipeline has work. */
static int send_batch(sl_pipeline *p, sl_err *err)
{
    int max_rows = p->cfg.limits.max_batch_tokens;
    int n_decoding = 0;
    for (request *r = p->reqs; r; r = r->next)
        n_decoding += r->state == RQ_FEED || r->state == RQ_WAIT_TOKEN;
    /* One group per layer stage keeps every stage busy; more groups than
     * stages would only make each stage read its weights more often. */
    int groups = p->depth > 1 ? p->depth - 1 : 1;
    int decode_cap = (n_decoding + groups - 1) / groups;
    if (decode_cap < 1)
        decode_cap = 1;
    int rows = 0, n_params = 0, n_recent = 0, n_req = 0, n_decode_rows = 0, n_drafted = 0, n_tok_p = 0;
    inflight *f = &p->fly[(p->fly_head + p->fly_n) % p->depth];
    for (request *r = p->reqs; r && rows < max_rows; r = r->next) {
        if (r->state != RQ_FEED)
            continue;
        bool prefill = r->n_fed < r->n_prompt;
        if (!prefill && n_decode_rows >= decode_cap)
            continue;
        int want = r->n_tokens - r->n_fed; /* prefill: the rest of the prompt; decode: 1 */
        int take = want < max_rows - rows ? want : max_rows - rows;
        if (!r->params_sent) {
            add_params(p, r, &n_params, &n_recent);
            r->params_sent = true;
        }
        for (int k = 0; k < take; k++) {
            int pos = r->n_fed + k;
            p->b_req[rows] = r->id;
            p->b_seq[rows] = r->slot;
            p->b_pos[rows] = pos;
            p->b_tok[rows] = r->tokens[pos];
            p->b_flags[rows] = pos == r->n_tokens - 1;
            p->b_draft[rows] = -1;
            p->b_tok_p[rows] = pos == r->n_tokens - 1 ? r->last_p : -1.0f;
            n_tok_p += p->b_tok_p[rows] >= 0.0f;
            rows++;
        }
        r->n_fed += take;
        if (r->n_fed == r->n_tokens)
            r->state = RQ_WAIT_TOKEN;
        rows += append_drafts(p, r, rows, max_rows, &n_drafted);
        if (!prefill)
            n_decode_rows++;
        f->req[n_req++] = r->id;
    }
    if (rows == 0)
        return 0;
    pl_msg m;
    uint64_t bid = ++p->next_batch_id;
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_BATCH, bid, (uint32_t)rows);
    pl_msg_set_params(&m, p->b_param_ptrs, (size_t)n_params);
    pl_msg_set_sent_ns(&m, (uint64_t)(sl_now_s() * 1e9));
    pl_msg_raise_fence(&m, p->stale_below);
    int rc = pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, rows, 0, p->b_req, NULL, NULL, err) ||
             pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_SEQ, SLUICE__DTYPE__DT_I32, rows, 0, p->b_seq, NULL, NULL, err) ||
             pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_POS, SLUICE__DTYPE__DT_I32, rows, 0, p->b_pos, NULL, NULL, err) ||
             pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_TOKEN, SLUICE__DTYPE__DT_I32, rows, 0, p->b_tok, NULL, NULL, err) ||
             pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_FLAGS, SLUICE__DTYPE__DT_U8, rows, 0, p->b_flags, NULL, NULL, err) ||
             (n_drafted && pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_DRAFT_TOKEN, SLUICE__DTYPE__DT_I32, rows, 0,
                                      p->b_draft, NULL, NULL, err)) ||
             /* only a draft model reads it (its first stage) */
             (n_tok_p && p->cfg.spec.on && !p->cfg.spec.mtp && !p->cfg.spec.prompt_lookup &&
              pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_TOKEN_P, SLUICE__DTYPE__DT_F32, rows, 0, p->b_tok_p, NULL,
                         NULL, err)) ||
             send_first(p, &m, err);
    pl_msg_close(&m);
    if (rc)
        return -1;
    f->batch_id = bid;
    f->t_sent = sl_now_s();
    f->n_req = n_req;
    p->fly_n++;
    return 1;
}

/* ---- answers ---- */

static void fail_batch_reqs(sl_pipeline *p, inflight *f, const char *why)
{
    for (int i = 0; i < f->n_req; i++) {
        request *r = find_req(p, f->req[i]);
        if (r)
            fail_req(p, r, why);
    }
}

/* Pops the in-flight record of batch bid; batches sent before it that never
 * came back were lost on the way (stages answer every batch, in order). */
static inflight *pop_inflight(sl_pipeline *p, uint64_t bid)
{
    while (p->fly_n > 0) {
        inflight *f = &p->fly[p->fly_head];
        p->fly_head = (p->fly_head + 1) % p->depth;
        p->fly_n--;
        if (f->batch_id == bid)
            return f;
        char why[128];
        snprintf(why, sizeof why, "batch %llu was lost in the pipeline (a stage dropped it)",
                 (unsigned long long)f->batch_id);
        fail_batch_reqs(p, f, why);
    }
    return NULL;
}

static bool is_inflight(const sl_pipeline *p, uint64_t bid)
{
    for (int i = 0; i < p->fly_n; i++)
        if (p->fly[(p->fly_head + i) % p->depth].batch_id == bid)
            return true;
    return false;
}

/* "stage: message" of an ERROR, as its requests' clients see it. */
static void error_text(const pl_msg *m, char *why, size_t size)
{
    snprintf(why, size, "%s: %s", m->hdr->origin && *m->hdr->origin ? m->hdr->origin : "pipeline",
             m->hdr->error ? m->hdr->error : "error");
}

/* Fails the requests an ERROR message names in its REQUEST_ID payload. */
static void fail_named(sl_pipeline *p, const pl_msg *m)
{
    sl_err err;
    uint32_t n = m->hdr->n_rows;
    const uint64_t *req = n ? pl_msg_u64(m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, n, &err) : NULL;
    char why[600];
    error_text(m, why, sizeof why);
    for (uint32_t i = 0; req && i < n; i++) {
        request *r = find_req(p, req[i]);
        if (r)
            fail_req(p, r, why);
    }
}

/* Takes one sampled token; returns false when that ended the request. */
static bool take_token(sl_pipeline *p, request *r, int32_t tok, double t)
{
    if (r->cancelled) {
        r->clean_end = true;
        fail_req(p, r, "cancelled");
        return false;
    }
    if (r->n_gen == 0)
        r->t_first = t;
    r->t_last = t;
    if (tok == r->stop_a || tok == r->stop_b) {
        done_req(p, r, tok == r->stop_a ? "end of sequence" : "end of turn");
        return false;
    }
    r->n_gen++;
    if (r->n_tokens == r->cap) {
        int cap = 2 * r->cap;
        int32_t *t2 = realloc(r->tokens, (size_t)cap * sizeof *t2);
        if (!t2) {
            fail_req(p, r, "out of memory");
            return false;
        }
        r->tokens = t2;
        r->cap = cap;
    }
    r->tokens[r->n_tokens++] = tok;
    sl_event *e = push_event(p, SL_EV_TOKEN, r->id);
    if (e) {
        e->token = tok;
        e->text_len = sl_tok_piece_bytes(p->tok, tok, e->text, (int)sizeof e->text);
    }
    if (r->n_gen >= r->max_new) {
        done_req(p, r, "token limit");
        return false;
    }
    if (r->n_tokens >= p->cfg.limits.context) {
        done_req(p, r, "context full");
        return false;
    }
    r->state = RQ_FEED;
    return true;
}

/* Keeps the first length positions of a request's slot in every stage (a
 * speculative step's rejected drafts); in band, so it lands before the
 * request's next batch. */
static void send_truncate(sl_pipeline *p, request *r, int length)
{
    send_slot_control(p, r, SLUICE__MSG_KIND__MSG_TRUNCATE, length);
}

/* The tokens one verification emitted for a request: n of them, after k
 * drafted ones were checked (k = 0: plain decoding, n = 1). The accepted
 * drafts are already in every stage's cache; the last token is fed next. */
static void take_tokens(sl_pipeline *p, request *r, const int32_t *tok, const float *tok_p, int n, int k,
                        double t)
{
    r->last_p = tok_p && tok_p[n - 1] >= 0.0f && tok_p[n - 1] <= 1.0f ? tok_p[n - 1] : -1.0f;
    if (k > 0) {
        int accepted = n - 1;
        r->spec_steps++;
        r->spec_drafted += k;
        r->spec_accepted += accepted;
        p->spec.steps++;
        p->spec.drafted += k;
        p->spec.accepted += accepted;
        p->spec.emitted += n;
    }
    int fed = r->n_fed, accepted = n - 1;
    for (int i = 0; i < n; i++) {
        /* should r end at token i, its slot's caches hold its text up to
         * the drafts accepted before it: what the prefix cache parks */
        r->n_fed = fed + (i < accepted ? i : accepted);
        if (!take_token(p, r, tok[i], t))
            return; /* ended: its slot is released, the rest is surplus */
    }
    r->n_fed = r->n_tokens - 1;
    if (k > 0 && n - 1 < k)
        send_truncate(p, r, r->n_fed);
}

/* An mtp stage's drafts on a TOKENS message: i32 [n, k] with k within
 * the speculative limit, or NULL (none, or malformed: logged, and the
 * tokens still count). */
static const int32_t *next_drafts(const pl_msg *m, uint32_t n)
{
    if (!pl_msg_has(m, SLUICE__PAYLOAD_KIND__PL_NEXT_DRAFT))
        return NULL;
    sl_err err;
    const int32_t *next = pl_msg_i32(m, SLUICE__PAYLOAD_KIND__PL_NEXT_DRAFT, n, &err);
    uint64_t k = m->shape[SLUICE__PAYLOAD_KIND__PL_NEXT_DRAFT][1];
    if (!next || k > SL_SPEC_K_MAX) {
        fprintf(stderr, "sluice: driver: drafts of batch %llu ignored: %s\n",
                (unsigned long long)m->hdr->batch_id, next ? "more than the speculative limit a row" : err.msg);
        return NULL;
    }
    return next;
}

/* The drafts after a request's last token (row of k, -1 ends them), for
 * its next batch; tokens outside the vocabulary end them too. */
static void keep_drafts(sl_pipeline *p, request *r, const int32_t *row, int k)
{
    int n = 0;
    while (n < k && row[n] >= 0 && row[n] < p->model_cfg.n_vocab)
        n++;
    memcpy(r->next_draft, row, (size_t)n * sizeof *row);
    r->n_next_draft = n;
}

static void handle_answer(sl_pipeline *p, pl_msg *m)
{
    sl_err err;
    int kind = m->hdr->kind;
    if (m->hdr->run_id != p->run_id) {
        /* another pipeline's answer (or a stranger's): its batch ids and
         * request ids mean nothing here, and an ERROR must not fail ours */
        if (p->n_foreign++ == 0)
            fprintf(stderr, "sluice: driver: dropping answers of another pipeline run (the first: %s for batch "
                    "%llu, run id %016llx, from %s; this run's is %016llx)\n", pl_msg_kind_name(kind),
                    (unsigned long long)m->hdr->batch_id, (unsigned long long)m->hdr->run_id,
                    m->peer[0] ? m->peer : "a peer of unknown address", (unsigned long long)p->run_id);
        return;
    }
    if (kind != SLUICE__MSG_KIND__MSG_TOKENS && kind != SLUICE__MSG_KIND__MSG_ERROR) {
        fprintf(stderr, "sluice: driver: unexpected %s message ignored\n", pl_msg_kind_name(kind));
        return;
    }
    if (!is_inflight(p, m->hdr->batch_id)) {
        /* a batch sent before a stage died may still come back (from the
         * stages that survived, or queued for the restarted one): its
         * requests are being replayed, so it is expected, not an error */
        if (m->hdr->batch_id <= p->stale_below) {
            static bool logged;
            sl_debug_once(&logged, "driver: dropping answers to batches sent before a stage was lost "
                          "(the first: %s for batch %llu); their requests are replayed",
                          pl_msg_kind_name(kind), (unsigned long long)m->hdr->batch_id);
            return;
        }
        /* Not a batch we sent (a stray or forged message): it must not
         * disturb the batches in flight. An error still fails the requests
         * it names. */
        fprintf(stderr, "sluice: driver: %s for unknown batch %llu\n", pl_msg_kind_name(kind),
                (unsigned long long)m->hdr->batch_id);
        if (kind == SLUICE__MSG_KIND__MSG_ERROR)
            fail_named(p, m);
        return;
    }
    inflight *f = pop_inflight(p, m->hdr->batch_id);
    if (kind == SLUICE__MSG_KIND__MSG_ERROR) {
        char why[600];
        error_text(m, why, sizeof why);
        fail_batch_reqs(p, f, why);
        return;
    }
    uint32_t n = m->hdr->n_rows;
    const uint64_t *req = n ? pl_msg_u64(m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, n, &err) : NULL;
    const int32_t *tok = req ? pl_msg_i32(m, SLUICE__PAYLOAD_KIND__PL_TOKEN, n, &err) : NULL;
    if (n && !tok) {
        fail_batch_reqs(p, f, err.msg);
        return;
    }
    const int32_t *spec = n && m->data[SLUICE__PAYLOAD_KIND__PL_SPEC]
                              ? pl_msg_i32(m, SLUICE__PAYLOAD_KIND__PL_SPEC, n, &err) : NULL;
    const int32_t *next = n ? next_drafts(m, n) : NULL;
    sl_err ignore; /* malformed: the tokens still count, without it */
    const float *tok_p = n && pl_msg_has(m, SLUICE__PAYLOAD_KIND__PL_TOKEN_P)
                             ? pl_msg_f32_view(m, SLUICE__PAYLOAD_KIND__PL_TOKEN_P, n, 0, &ignore) : NULL;
    double t = sl_now_s();
    for (uint32_t i = 0; i < n;) {
        uint32_t j = i + 1; /* a request's tokens are consecutive rows */
        while (j < n && req[j] == req[i])
            j++;
        int k = spec ? spec[i] : 0;
        if (k < 0 || k > SL_SPEC_K_MAX || (int)(j - i) > k + 1) {
            fprintf(stderr, "sluice: driver: request %llu got %u tokens for %d drafted; ignored\n",
                    (unsigned long long)req[i], j - i, k);
        } else {
            request *r = find_req(p, req[i]);
            if (r && r->state == RQ_WAIT_TOKEN) {
                take_tokens(p, r, tok + i, tok_p ? tok_p + i : NULL, (int)(j - i), k, t);
                r = next ? find_req(p, req[i]) : NULL; /* NULL too when that ended it */
            } else {
                r = NULL;
            }
            if (r && r->state == RQ_FEED)
                keep_drafts(p, r, next + (size_t)(j - 1) * m->shape[SLUICE__PAYLOAD_KIND__PL_NEXT_DRAFT][1],
                            (int)m->shape[SLUICE__PAYLOAD_KIND__PL_NEXT_DRAFT][1]);
        }
        i = j;
    }
}

void sl_pipeline_spec_stats(const sl_pipeline *p, sl_spec_summary *out) { *out = p->spec; }

/* Fails everything in flight (a dead stage or a stalled pipeline). */
static void fail_all_inflight(sl_pipeline *p, const char *why)
{
    while (p->fly_n > 0) {
        inflight *f = &p->fly[p->fly_head];
        p->fly_head = (p->fly_head + 1) % p->depth;
        p->fly_n--;
        fail_batch_reqs(p, f, why);
    }
}

/* A stage died (the coordinator says which and how): every request that
 * has a KV slot lost its cache there. One the config allows a retry goes
 * back to wait for a slot, to be replayed from its prompt plus the tokens
 * already streamed (prefill rebuilds the cache; the client sees only the
 * tokens after those) once the worker re-joins; any other fails naming the
 * stage and node. Batches in flight are forgotten: their answers, if any
 * come, are stale. */
static void on_stage_death(sl_pipeline *p, const char *failure)
{
    pc_forget_all(p);
    p->stale_below = p->next_batch_id;
    p->fly_n = 0;
    p->fly_head = 0;
    char why[640];
    for (request *r = p->reqs, *next; r; r = next) {
        next = r->next;
        if (r->slot < 0)
            continue;
        /* Its slot is released once the worker is back (release_dirty):
         * a RELEASE sent now could die with the stage, or be overtaken by
         * stale batches a cut-off worker still flushes downstream. */
        p->dirty[r->slot] = r->id;
        r->slot = -1;
        if (r->cancelled) {
            fail_req(p, r, "cancelled");
        } else if (r->retries < p->cfg.failure.retries) {
            r->retries++;
            r->state = RQ_WAIT_SLOT;
            r->n_fed = 0;
            r->params_sent = false;
        } else {
            if (p->cfg.failure.retries > 0)
                snprintf(why, sizeof why, "%.500s (the request was already retried %d time%s)", failure,
                         r->retries, r->retries == 1 ? "" : "s");
            else
                snprintf(why, sizeof why, "%.500s", failure);
            fail_req(p, r, why);
        }
    }
}

/* Releases, in every stage, the slots held when a stage died, before any
 * replay: the re-joined stage has empty caches, the others may hold what
 * the dead one's last batches left. */
static void release_dirty(sl_pipeline *p)
{
    for (int s = 0; s < p->cfg.limits.max_sequences; s++) {
        if (!p->dirty[s])
            continue;
        request tmp = {.id = p->dirty[s], .slot = s};
        send_release(p, &tmp);
        p->dirty[s] = 0;
    }
}

/* Follows the coordinator: deaths, re-joins, and a worker that does not
 * come back in failure.rejoin_timeout, which fails every request (new ones
 * too, until it is back). Returns true while a worker is down. */
static bool watch_workers(sl_pipeline *p)
{
    pl_coord_status st;
    pl_coord_status_get(p->coord, &st);
    double t = sl_now_s();
    if (st.deaths > p->seen_deaths) {
        p->seen_deaths = st.deaths;
        on_stage_death(p, st.failure);
        if (!p->down)
            p->down_since = t;
        p->down = true;
    }
    if (st.n_down == 0) {
        if (p->down)
            release_dirty(p);
        p->down = false;
        return false;
    }
    if (!p->down)
        p->down_since = t;
    p->down = true;
    if (t - p->down_since >= p->cfg.failure.rejoin_timeout_s && p->reqs) {
        char why[700];
        if (p->cfg.failure.rejoin_timeout_s > 0)
            snprintf(why, sizeof why, "%.500s, and did not re-join within %.0f s", st.failure,
                     (double)p->cfg.failure.rejoin_timeout_s);
        else
            snprintf(why, sizeof why, "%.500s", st.failure);
        for (request *r = p->reqs; r; r = p->reqs)
            fail_req(p, r, why);
    }
    return true;
}

/* Hands out free slots and sends batches while the credits allow. */
static int feed(sl_pipeline *p, sl_err *err)
{
    assign_slots(p);
    while (p->fly_n < p->depth) {
        int rc = send_batch(p, err);
        if (rc <= 0)
            return rc;
    }
    return 0;
}

#ifdef SLUICE_TEST_DELAYS
/* Test builds only (-DSLUICE_TEST_DELAYS): once per process, when the
 * driver has had nothing back for three polls in a row with batches in
 * flight (a stage died), it naps SLUICE_TEST_DRIVER_NAP_MS before it polls
 * again, as a thread descheduled on a loaded machine would;
 * tests/test_chaos_netns.sh uses it to make the replay race of a re-joining
 * worker likely. Counted across calls: callers poll with short timeouts. */
static int test_stalls;

static void test_nap_after_stall(void)
{
    static bool napped;
    const char *ms = getenv("SLUICE_TEST_DRIVER_NAP_MS");
    if (napped || test_stalls < 3 || !ms || atoi(ms) <= 0)
        return;
    napped = true;
    usleep((useconds_t)atoi(ms) * 1000u);
}
#endif

/* What the driver waits on: the return socket's ZMQ_FD and the link's fds
 * (pipeline/link_poll.h says why not zmq_poll). */
static int answer_items(sl_pipeline *p, struct pollfd *items, int max)
{
    items[0] = (struct pollfd){.fd = pl_zmq_fd(p->from_last), .events = POLLIN};
    return p->link_in ? pl_link_poll_add(p->link_in, items, 1, max) : 1;
}

/* One answer from whichever source has one: 1 with m, 0 none, -1 one was
 * dropped (why says why). */
static int take_answer(sl_pipeline *p, const struct pollfd *items, int n_items, pl_msg *m, sl_err *why)
{
    bool ready = p->link_in && (pl_link_poll_seen(p->link_in, items, 1, n_items) || p->link_more);
    /* the socket's fd turns readable only on news: once it has, take its
     * messages (one a call) until it holds none before sleeping again */
    if (p->from_more || items[0].revents) {
        p->from_more = pl_zmq_pending(p->from_last);
        if (p->from_more)
            return pl_msg_recv(m, p->from_last, &p->limits, why) == 0 ? 1 : -1;
    }
    if (!ready)
        return 0;
    int rc = pl_link_in_recv(p->link_in, m, why);
    p->link_more = rc != 0;
    return rc;
}

int sl_pipeline_next(sl_pipeline *p, sl_event *ev, int timeout_ms, sl_err *err)
{
    double deadline = timeout_ms < 0 ? -1.0 : sl_now_s() + timeout_ms / 1000.0;
    for (;;) {
        /* the rows that follow leave before the caller handles the events:
         * the stages compute the next token while it streams this one */
        if (p->events.n > 0 && !p->down && feed(p, err) < 0)
            return -1;
        if (p->events.n > 0) {
            *ev = p->events.ev[p->events.head];
            p->events.head = (p->events.head + 1) % p->events.cap;
            p->events.n--;
            return 1;
        }
        if (p->n_active == 0)
            return -1;
        bool down = p->coord && watch_workers(p);
        if (p->events.n > 0 || p->n_active == 0)
            continue;
        /* not while down: a second death would count against them */
        if (!down && feed(p, err) < 0)
            return -1;
        int wait = 100;
        if (deadline >= 0) {
            double left = deadline - sl_now_s();
            if (left <= 0)
                return 0;
            if (left * 1000 < wait)
                wait = (int)(left * 1000) + 1;
        }
        struct pollfd items[2 + PL_LINK_MAX_CONNS];
        int n_items = answer_items(p, items, (int)(sizeof items / sizeof items[0]));
        if (items[0].fd < 0)
            return sl_fail(err, "driver: cannot poll the return socket: %s", zmq_strerror(zmq_errno()));
#ifdef SLUICE_TEST_DELAYS
        test_nap_after_stall();
#endif
        /* an answer that comes within the spin costs no wake-up */
        bool now = p->link_more || p->from_more || (p->link_in && pl_link_in_spin(p->link_in, p->link_spin_us));
        int rc = poll(items, (nfds_t)n_items, now ? 0 : wait);
#ifdef SLUICE_TEST_DELAYS
        test_stalls = rc == 0 && p->fly_n > 0 ? test_stalls + 1 : 0;
#endif
        if (rc < 0 && errno != EINTR)
            return sl_fail(err, "driver: poll failed: %s", strerror(errno));
        pl_msg m;
        sl_err why;
        int got = rc > 0 || p->link_more || p->from_more ? take_answer(p, items, n_items, &m, &why) : 0;
        if (got != 0) {
            if (got > 0) {
                /* The coordinator counts a death before it re-assigns the
                 * stage, and a re-assigned stage answers only after that:
                 * reading its state again here, after the answer came, makes
                 * every answer from a restarted stage (an ERROR for a batch
                 * sent before the death, say) land on the stale side of
                 * stale_below, however long this thread slept since its last
                 * look. */
                if (p->coord)
                    watch_workers(p);
                handle_answer(p, &m);
                pl_msg_close(&m);
            } else {
                fprintf(stderr, "sluice: driver: dropped a malformed answer: %s\n", why.msg);
            }
        } else if (p->fly_n > 0 && sl_now_s() - p->fly[p->fly_head].t_sent > p->opts.batch_timeout_s) {
            char why[160];
            snprintf(why, sizeof why, "no answer from the pipeline for %.0f s (batch %llu)",
                     p->opts.batch_timeout_s, (unsigned long long)p->fly[p->fly_head].batch_id);
            fail_all_inflight(p, why);
        }
    }
}

/* ---- open / close ---- */

static int load_tokenizer(sl_pipeline *p, sl_err *err)
{
    gguf_file *f;
    if (gguf_open(&f, p->cfg.model, err))
        return -1;
    int rc = sl_config_from_gguf(&p->model_cfg, f, err) || sl_tok_load_gguf(&p->tok, f, err);
    /* a chat format the model does not name is an error only for chat requests */
    if (rc == 0 && p->opts.chat_format)
        rc = sl_chat_by_name(&p->chat, p->opts.chat_format, err);
    else if (rc == 0 && sl_chat_from_gguf(&p->chat, f, p->tok, &p->chat_err))
        p->chat = NULL;
    gguf_close(f);
    return rc ? -1 : 0;
}

static int chain_end(const sl_pipeline *p, int i);

/* Layer stages that compute at the same time: this process's chains count
 * once (stages of a chain run one after another on its thread; chains share
 * the pool, so overlapping them would only split the batch), a layers
 * stage in another process once each (a worker runs each on a thread),
 * except in a worker this one spawns without `cores:`: it shares this
 * CPUs (pl_cores_share) with the other such workers and, unless this
 * process has `cores:`, with this one: overlapping them would only split
 * the batch, so they count once together (nothing more when this
 * process's chains hold layers and share with them). */
static int concurrent_layer_stages(const sl_pipeline *p)
{
    const pl_config *c = &p->cfg;
    int n = 0;
    bool local = false, sharing = false;
    /* this process's chains share its pool and cores, except those bound to
     * distinct NUMA nodes: one unit per binding */
    bool numa_seen[PL_MAX_STAGES + 1] = {false};
    for (int i = 0; i < c->n_stages;) {
        int node = c->stages[i].node;
        int e = node == 0 ? chain_end(p, i) : i + 1;
        bool layers = false;
        for (int k = i; k < e; k++)
            layers |= c->stages[k].kind == PL_STAGE_LAYERS;
        int numa = c->stages[i].numa + 1;
        if (node == 0 && layers && numa >= 0 && numa <= PL_MAX_STAGES) {
            n += !numa_seen[numa];
            numa_seen[numa] = true;
        } else if (node != 0 && c->nodes[node].spawn && !sl_cpuset_count(&c->nodes[node].cores)) {
            sharing |= layers;
        } else {
            n += layers;
        }
        local |= node == 0 && layers;
        i = e;
    }
    /* with `cores:` of its own this process does not share the rest */
    if (sl_cpuset_count(&c->nodes[0].cores))
        local = false;
    return n + (sharing && !local);
}

static int alloc_driver(sl_pipeline *p, sl_err *err)
{
    int rows = p->cfg.limits.max_batch_tokens, seqs = p->cfg.limits.max_sequences;
    /* one micro-batch per layer stage that can overlap the others: more
     * would only split the batch and read the weights more often */
    p->depth = concurrent_layer_stages(p) + 1;
    p->slot_used = calloc((size_t)seqs, sizeof *p->slot_used);
    if (p->cfg.limits.prefix_cache && !(p->parked = calloc((size_t)seqs, sizeof *p->parked)))
        return sl_fail(err, "out of memory");
    p->dirty = calloc((size_t)seqs, sizeof *p->dirty);
    p->fly = calloc((size_t)p->depth, sizeof *p->fly);
    p->b_req = malloc((size_t)rows * sizeof *p->b_req);
    p->b_seq = malloc((size_t)rows * sizeof *p->b_seq);
    p->b_pos = malloc((size_t)rows * sizeof *p->b_pos);
    p->b_tok = malloc((size_t)rows * sizeof *p->b_tok);
    p->b_flags = malloc((size_t)rows);
    p->b_draft = malloc((size_t)rows * sizeof *p->b_draft);
    p->b_tok_p = malloc((size_t)rows * sizeof *p->b_tok_p);
    p->b_params = malloc((size_t)rows * sizeof *p->b_params);
    p->b_param_ptrs = malloc((size_t)rows * sizeof *p->b_param_ptrs);
    if (!p->slot_used || !p->dirty || !p->fly || !p->b_req || !p->b_seq || !p->b_pos || !p->b_tok ||
        !p->b_flags || !p->b_draft || !p->b_tok_p || !p->b_params || !p->b_param_ptrs)
        return sl_fail(err, "out of memory");
    for (int i = 0; i < p->depth; i++)
        if (!(p->fly[i].req = malloc((size_t)rows * sizeof(uint64_t))))
            return sl_fail(err, "out of memory");
    return 0;
}

/* Consecutive stages of this process with the same binding run as one
 * chain on one thread (pl_host_start_chain): for one token they run one
 * after the other anyway, and one thread with one pool share saves a
 * hand-off and a team wake-up per hop. A stage pinned to another NUMA node
 * or team size starts a new chain, and so does every stage when the caller
 * asked for real sockets between local stages (local_hops). Returns the
 * end of the chain starting at i. */
static int chain_end(const sl_pipeline *p, int i)
{
    const pl_config *c = &p->cfg;
    int j = i + 1;
    if (p->opts.local_hops)
        return j;
    /* a pipelined draft drafts ahead on its own thread while the target
     * verifies; in a chain it would only wait its turn */
    if (c->stages[i].kind == PL_STAGE_DRAFT && c->spec.pipelined)
        return j;
    while (j < c->n_stages && c->stages[j].node == 0 && c->stages[j].numa == c->stages[i].numa &&
           c->stages[j].threads == c->stages[i].threads)
        j++;
    return j;
}

/* Pool threads of a chain: its stages' setting, or every core of the
 * process: chains with layers take turns with one micro-batch in flight
 * (concurrent_layer_stages), so the one at work has the whole pool (a
 * share each left it half while the other idled: two layers stages on
 * their own threads ran the 1b model at 0.8x one stage). */
static int chain_threads(const sl_pipeline *p, int i0, int i1)
{
    const pl_config *c = &p->cfg;
    (void)i1;
    if (c->stages[i0].threads > 0)
        return c->stages[i0].threads;
    if (c->stages[i0].numa >= 0)
        return 0; /* the host sizes the team to the node's cores */
    return p->opts.threads > 0 ? p->opts.threads : sl_cpus_available();
}

static int start_stages(sl_pipeline *p, char (*addr)[ADDR_MAX], sl_err *err)
{
    const pl_config *c = &p->cfg;
    p->hosts = calloc((size_t)c->n_stages, sizeof *p->hosts);
    if (!p->hosts)
        return sl_fail(err, "out of memory");
    p->n_hosts = c->n_stages;
    int starts[PL_MAX_STAGES], n_chains = 0;
    for (int i = 0; i < c->n_stages;) {
        if (c->stages[i].node != 0) {
            i++;
            continue;
        }
        starts[n_chains++] = i;
        i = chain_end(p, i);
    }
    /* Start from the end so each chain's downstream is listening. */
    for (int k = n_chains - 1; k >= 0; k--) {
        int i0 = starts[k], i1 = chain_end(p, i0);
        sl_stage *stages[PL_MAX_STAGES];
        int numa = c->stages[i0].numa;
        /* loading on the stage's node puts the pages it first touches
         * (repacked weights) in that node's memory */
        if (numa >= 0 && sl_bind_numa(numa, NULL, err))
            return sl_wrap(err, "stage %d (%s)", i0, pl_stage_kind_name(c->stages[i0].kind));
        for (int i = i0; i < i1; i++) {
            sl_stage_spec spec;
            pl_config_stage_spec(c, i, &spec);
            if (sl_stage_create(&stages[i - i0], &spec, err)) {
                for (int j = i0; j < i; j++)
                    sl_stage_destroy(stages[j - i0]);
                if (numa >= 0)
                    sl_bind_reset();
                return -1;
            }
        }
        if (numa >= 0)
            sl_bind_reset();
        pl_host_sec sec = {&p->keys.self, pl_keyring_stage_key(&p->keys, c, i1), p->zap, &p->limits,
                           p->run_id};
        if (pl_host_start_chain(&p->hosts[i0], i1 - i0, p->zctx, stages, addr[i0], addr[i1],
                                chain_threads(p, i0, i1), numa, &sec, err))
            return -1;
    }
    return 0;
}

/* The run's id: random, so a message of another run (an earlier one at
 * the same addresses, a neighbour's, a stranger's) is told apart even
 * without CURVE; never 0, which a message without one carries. */
static int pick_run_id(uint64_t *id, sl_err *err)
{
    do {
        ssize_t got = getrandom(id, sizeof *id, 0);
        if (got != (ssize_t)sizeof *id)
            return sl_fail(err, "cannot pick the pipeline's run id: getrandom: %s",
                           got < 0 ? strerror(errno) : "short read");
    } while (*id == 0);
    return 0;
}

/* Our tcp:// sockets admit the nodes of the config (ourselves included:
 * local hops over tcp://). */
static int start_zap(sl_pipeline *p, sl_err *err)
{
    if (sec_zap_start(&p->zap, p->zctx, "sluice", err))
        return -1;
    for (int i = 0; i < p->cfg.n_nodes; i++)
        if (p->keys.pub[i][0] && sec_zap_allow(p->zap, "data", p->keys.pub[i], 0, err))
            return -1;
    return 0;
}

/* A full batch's activations must fit the frame limit, or every long
 * prefill would be refused on its first hop. */
static int check_size_limits(const sl_pipeline *p, sl_err *err)
{
    const pl_limits *l = &p->cfg.limits;
    size_t batch = (size_t)l->max_batch_tokens * (size_t)p->model_cfg.d_model * sizeof(float);
    if (batch > (size_t)l->max_frame_bytes)
        return sl_fail(err, "%s: limits.max_frame_bytes (%d) is below the activations of a full batch "
                       "(max_batch_tokens %d x d_model %d x 4 bytes = %zu): raise it or lower max_batch_tokens",
                       p->cfg.path[0] ? p->cfg.path : "<config>", l->max_frame_bytes, l->max_batch_tokens,
                       p->model_cfg.d_model, batch);
    if (l->max_message_bytes < l->max_frame_bytes)
        return sl_fail(err, "%s: limits.max_message_bytes (%d) is below max_frame_bytes (%d)",
                       p->cfg.path[0] ? p->cfg.path : "<config>", l->max_message_bytes, l->max_frame_bytes);
    return 0;
}

int sl_pipeline_open(sl_pipeline **out, const pl_config *cfg, const sl_pipeline_opts *opts, sl_err *err)
{
    *out = NULL;
    sl_pipeline *p = calloc(1, sizeof *p);
    if (!p)
        return sl_fail(err, "out of memory");
    p->cfg = *cfg;
    if (opts)
        p->opts = *opts;
    else
        sl_pipeline_opts_default(&p->opts);
    pl_wire_limits_from_config(&p->limits, &cfg->limits);
    char (*addr)[ADDR_MAX] = calloc((size_t)cfg->n_stages + 1, ADDR_MAX);
    const char **in = calloc((size_t)cfg->n_stages + 1, sizeof *in);
    int linger = 0;
    bool remote = false;
    if (!addr || !in) {
        sl_fail(err, "out of memory");
        goto fail;
    }
    if (pl_keyring_load(&p->keys, &p->cfg, err) || load_tokenizer(p, err) ||
        pl_config_check_layers(&p->cfg, p->model_cfg.n_layer, err) || check_size_limits(p, err) ||
        alloc_driver(p, err))
        goto fail;
    if (pick_run_id(&p->run_id, err))
        goto fail;
    uint64_t tag = ((uint64_t)getpid() << 20) ^ (uint64_t)(uintptr_t)p;
    for (int i = 0; i <= cfg->n_stages; i++) {
        if (stage_address(cfg, p->opts.local_hops, i, tag, addr[i], err))
            goto fail;
        in[i] = addr[i];
        remote |= i < cfg->n_stages && cfg->stages[i].node != 0;
    }
    if (!(p->zctx = zmq_ctx_new())) {
        sl_fail(err, "cannot create a ZeroMQ context");
        goto fail;
    }
    if (p->keys.self.on && start_zap(p, err))
        goto fail;
    p->from_last = zmq_socket(p->zctx, ZMQ_PULL);
    p->to_first = zmq_socket(p->zctx, ZMQ_PUSH);
    if (p->keys.self.on &&
        (sec_server(p->from_last, &p->keys.self, p->zap, "data", addr[cfg->n_stages], err) ||
         sec_client(p->to_first, &p->keys.self, pl_keyring_stage_key(&p->keys, cfg, 0), addr[0], err) ||
         (strncmp(addr[cfg->n_stages], "tcp://", 6) == 0 &&
          sec_zap_watch(p->zap, p->from_last, "return socket", false, err))))
        goto fail;
    zmq_setsockopt(p->from_last, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(p->to_first, ZMQ_LINGER, &linger, sizeof linger);
    int64_t max_msg = (int64_t)p->limits.max_message_bytes;
    zmq_setsockopt(p->from_last, ZMQ_MAXMSGSIZE, &max_msg, sizeof max_msg);
    char ret_addr[512];
    if (pl_bind_address(addr[cfg->n_stages], ret_addr, sizeof ret_addr, err))
        goto fail;
    if (zmq_bind(p->from_last, ret_addr)) {
        sl_fail(err, "driver: cannot listen on %s: %s", addr[cfg->n_stages], zmq_strerror(zmq_errno()));
        goto fail;
    }
    sec_ipc_file_note(&p->from_last_file, ret_addr);
    if ((pl_link_wanted(ret_addr) && pl_link_listen(&p->link_in, ret_addr, &p->limits, err)) ||
        (pl_link_wanted(addr[0]) && pl_link_out_open(&p->link_out, addr[0], err))) {
        sl_wrap(err, "driver");
        goto fail;
    }
    p->link_spin_us = pl_link_spin_us();
    p->from_more = true; /* look at the return socket before the first sleep */
    if (pl_cores_apply(&p->cfg, &p->cpus_before, &p->cpus_bound, err) || start_stages(p, addr, err))
        goto fail;
    if (remote && pl_coord_start(&p->coord, p->zctx, &p->cfg, in, in + 1, p->opts.self_exe,
                                 p->opts.peer_timeout_s, &p->keys, p->zap, p->run_id, err))
        goto fail;
    if (zmq_connect(p->to_first, addr[0])) {
        sl_fail(err, "driver: cannot connect to %s: %s", addr[0], zmq_strerror(zmq_errno()));
        goto fail;
    }
    free(addr);
    free(in);
    *out = p;
    return 0;
fail:
    free(addr);
    free(in);
    sl_pipeline_close(p);
    return -1;
}

void sl_pipeline_close(sl_pipeline *p)
{
    if (!p)
        return;
    if (p->coord)
        pl_coord_stop(p->coord);
    for (int i = 0; i < p->n_hosts; i++)
        pl_host_stop(p->hosts[i]);
    free(p->hosts);
    pl_cores_restore(&p->cpus_before, p->cpus_bound);
    if (p->to_first)
        zmq_close(p->to_first);
    if (p->from_last)
        zmq_close(p->from_last);
    sec_ipc_file_remove(&p->from_last_file);
    pl_link_in_close(p->link_in);
    pl_link_out_close(p->link_out);
    sec_zap_stop(p->zap);
    if (p->zctx)
        zmq_ctx_term(p->zctx);
    while (p->reqs) {
        request *r = p->reqs;
        p->reqs = r->next;
        free(r->tokens);
        free(r);
    }
    if (p->fly)
        for (int i = 0; i < p->depth; i++)
            free(p->fly[i].req);
    free(p->fly);
    free(p->slot_used);
    pc_free(p);
    free(p->dirty);
    free(p->b_req);
    free(p->b_seq);
    free(p->b_pos);
    free(p->b_tok);
    free(p->b_flags);
    free(p->b_draft);
    free(p->b_tok_p);
    free(p->b_params);
    free(p->b_param_ptrs);
    free(p->events.ev);
    sl_tok_free(p->tok);
    free(p);
}

static int by_index(const void *a, const void *b)
{
    return ((const pl_stage_metrics *)a)->index - ((const pl_stage_metrics *)b)->index;
}

static int snapshot(sl_pipeline *p, bool remote, pl_stage_metrics **out, int *n)
{
    *out = NULL;
    *n = 0;
    pl_stage_metrics *m = calloc((size_t)p->n_hosts + 1, sizeof *m);
    if (!m)
        return -1;
    for (int i = 0; i < p->n_hosts; i++)
        if (p->hosts[i])
            pl_host_metrics_get(p->hosts[i], &m[(*n)++]);
    /* the stages on worker nodes, as their workers last told the coordinator */
    if (remote && p->coord)
        *n += pl_coord_metrics(p->coord, m + *n, p->n_hosts - *n);
    qsort(m, (size_t)*n, sizeof *m, by_index);
    *out = m;
    return 0;
}

int sl_pipeline_metrics(sl_pipeline *p, pl_stage_metrics **out, int *n) { return snapshot(p, false, out, n); }

int sl_pipeline_metrics_all(sl_pipeline *p, pl_stage_metrics **out, int *n) { return snapshot(p, true, out, n); }

uint64_t sl_pipeline_refused(const sl_pipeline *p) { return p->n_refused; }
uint64_t sl_pipeline_run_id(const sl_pipeline *p) { return p->run_id; }
uint64_t sl_pipeline_foreign(const sl_pipeline *p) { return p->n_foreign; }

void sl_pipeline_client_metrics(const sl_pipeline *p, pl_client_metrics *out)
{
    out->in_flight = (uint64_t)p->n_active;
    out->submitted = p->n_submitted;
    out->refused = p->n_refused;
    out->max_requests = (uint64_t)p->cfg.limits.max_requests;
    out->foreign = p->n_foreign;
}

void sl_pipeline_print_stats(sl_pipeline *p, void *file)
{
    FILE *out = file;
    fprintf(out, "micro-batches in flight: at most %d\n", p->depth);
    fprintf(out, "driver: dropped %llu answers of another run (foreign)\n", (unsigned long long)p->n_foreign);
    for (int i = 0; i < p->n_hosts; i++) {
        if (!p->hosts[i])
            continue;
        pl_host_stats st;
        pl_host_stats_get(p->hosts[i], &st);
        fprintf(out, "stage %-14s messages %-8llu rows %-8llu busy %.3f s, dropped %llu (foreign %llu), errors %llu",
                pl_host_name(p->hosts[i]), (unsigned long long)st.messages,
                (unsigned long long)st.rows, st.busy_seconds, (unsigned long long)st.dropped,
                (unsigned long long)st.foreign, (unsigned long long)st.errors);
        if (st.pool_calls) {
            char pool[160];
            pl_pool_text(pool, sizeof pool, st.pool_calls, st.pool_split_calls, st.pool_thread_sum,
                         st.pool_threads, st.pool_op_seconds, st.pool_split_seconds);
            fprintf(out, ", %s, barrier wait %.3f s", pool, st.pool_wait_seconds);
        }
        fputc('\n', out);
        char extra[256];
        pl_host_describe(p->hosts[i], extra, sizeof extra);
        if (extra[0])
            fprintf(out, "stage %-14s %s\n", pl_host_name(p->hosts[i]), extra);
    }
}
