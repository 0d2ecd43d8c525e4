/* The mtp stage (Gemma 4's assistant after sample) fed by real stages: a
 * synthetic gemma4 test target and its synthetic assistant, the messages
 * handed from embed to layers to head to sample to mtp by hand.
 * - The drafts it sends after the prompt are those of sl_mtp_draft run on
 *   a whole-model forward pass of the same text (its hidden state after
 *   the final norm and its own KV cache): the K/V rows and hidden states
 *   the layers, head and sample stages send on are the right ones.
 * - After a verification that rejected drafts, its copy is cut to the
 *   accepted text: the next drafts again equal the reference's.
 * - With a context longer than its ring of sliding rows (128 on the test
 *   target's window of 8), the copy wraps: drafts at positions past the
 *   ring, after rejections there too, still equal the reference's, whose
 *   cache keeps every row.
 * - A new request on the slot that reuses a prefix of its text (the prefix
 *   cache sends only the rest, from the prefix's end) drafts as the
 *   reference does on the new text: the copy keeps the prefix's rows.
 * - Malformed payloads (a slot or position outside the limits, a gap in a
 *   slot's rows, a row of the wrong width, tokens without their slots)
 *   answer the batch with an ERROR naming the problem. */
#include <unistd.h>

#include "kernels/ops.h"
#include "model/forward.h"
#include "model/kv.h"
#include "model/mtp.h"
#include "catch_msg.h"
#include "stages/stage.h"
#include "test.h"

#define K 3
#define CTX 64
#define LONG_CTX 512

static char assistant_path[] = "/tmp/sluice-mtps-a-XXXXXX";
static char target_path[] = "/tmp/sluice-mtps-t-XXXXXX";

typedef struct chain {
    sl_stage *st[5]; /* embed, layers, head, sample, mtp */
} chain;

static void chain_open(chain *c, int context)
{
    static const pl_stage_kind kinds[5] = {PL_STAGE_EMBED, PL_STAGE_LAYERS, PL_STAGE_HEAD, PL_STAGE_SAMPLE,
                                           PL_STAGE_MTP};
    for (int i = 0; i < 5; i++) {
        sl_stage_spec sp = {.kind = kinds[i], .model = target_path, .l0 = 0, .l1 = 8, .max_sequences = 2,
                            .context = context, .max_batch_tokens = 16, .index = i, .draft_model = assistant_path,
                            .spec_k = K, .mtp_feed = kinds[i] == PL_STAGE_LAYERS || kinds[i] == PL_STAGE_HEAD};
        sl_err err;
        CHECKF(sl_stage_create(&c->st[i], &sp, &err) == 0, "%s", err.msg);
    }
}

/* The request the batches run_batch sends belong to. */
static uint64_t g_req = 1;

/* Sends a batch of n rows of slot 0 at pos0.. (the last `drafted` of them
 * drafted tokens, each wanted) through the chain; the mtp stage's answer
 * goes to out. */
static void run_batch(chain *c, const int32_t *tok, int n, int pos0, int drafted, catcher *out)
{
    uint64_t req[16];
    int32_t seq[16], pos[16], draft[16];
    uint8_t flags[16];
    for (int i = 0; i < n; i++) {
        req[i] = g_req;
        seq[i] = 0;
        pos[i] = pos0 + i;
        flags[i] = i >= n - 1 - drafted;
        draft[i] = i >= n - drafted ? tok[i] : -1;
    }
    Sluice__ReqParams pr;
    sluice__req_params__init(&pr);
    pr.request_id = g_req;
    Sluice__ReqParams *prs = &pr;
    pl_msg m;
    sl_err err;
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_BATCH, 1, (uint32_t)n);
    pl_msg_set_params(&m, &prs, 1);
    CHECK(add_batch_rows(&m, (uint32_t)n, req, seq, pos, tok, flags, &err) == 0 &&
          (!drafted || pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_DRAFT_TOKEN, SLUICE__DTYPE__DT_I32, n, 0, draft,
                                  NULL, NULL, &err) == 0));
    catcher hop[5] = {0};
    pl_msg *in = &m;
    for (int i = 0; i < 5; i++) {
        sl_emit to = {catch_msg, i == 4 ? (void *)out : (void *)&hop[i]};
        CHECKF(c->st[i]->process(c->st[i], in, &to, &err) == 0, "stage %d: %s", i, err.msg);
        CHECKF((i == 4 ? out : &hop[i])->have, "stage %d sent nothing", i);
        if (!(i == 4 ? out : &hop[i])->have)
            break;
        in = &hop[i].msg;
    }
    for (int i = 0; i < 4; i++)
        if (hop[i].have)
            pl_msg_close(&hop[i].msg);
    pl_msg_close(&m);
}

/* The whole-model reference: the target's cache over the text and the
 * final-normed hidden state of its last row. */
typedef struct ref {
    sl_model *m;
    sl_fwd *fwd;
    sl_kv *kv;
    sl_mtp *a;
    sl_mtp_ctx *ctx;
    float *x, h[256];
    int32_t next; /* the target's greedy pick after the last row fed */
} ref;

static void ref_feed(ref *r, const int32_t *tok, int n, int pos0)
{
    int32_t seq[16] = {0}, pos[16];
    for (int i = 0; i < n; i++)
        pos[i] = pos0 + i;
    sl_batch b = {.n_tokens = n, .token = tok, .seq = seq, .pos = pos};
    sl_err err;
    CHECK(sl_embed(r->m, tok, n, r->x, &err) == 0);
    CHECKF(sl_forward_layers(r->fwd, r->kv, &b, r->x, &err) == 0, "%s", err.msg);
    int d = r->m->cfg.d_model;
    sl_rmsnorm(r->h, r->x + (size_t)(n - 1) * d, r->m->output_norm, d, r->m->cfg.norm_eps);
    float logits[512];
    CHECK(r->m->cfg.n_vocab <= 512 && sl_head(r->fwd, r->x + (size_t)(n - 1) * d, 1, logits, &err) == 0);
    r->next = 0;
    for (int t = 1; t < r->m->cfg.n_vocab; t++)
        if (logits[t] > logits[r->next])
            r->next = t;
}

/* The reference's K drafts after token t0 at position p (its cache holds
 * [0, p), r->h the hidden state that gave t0). */
static void ref_drafts(ref *r, int32_t t0, int p, int32_t *out)
{
    int src[2];
    sl_mtp_ctx_sources(r->ctx, src);
    sl_mtp_kv kv[2];
    for (int k = 0; k < 2; k++)
        kv[k] = (sl_mtp_kv){sl_kv_k(r->kv, 0, src[k]), sl_kv_v(r->kv, 0, src[k]), 0, p,
                            sl_kv_row_bytes(r->kv, src[k]), SL_TYPE_F32, 0};
    sl_err err;
    CHECKF(sl_mtp_draft(r->ctx, r->h, t0, p, kv, K, out, &err) == 0, "%s", err.msg);
}

/* The TOKENS the mtp stage sent: n tokens and the drafts after the last. */
static int read_answer(const catcher *c, int32_t *tok, int32_t *drafts)
{
    const pl_msg *m = &c->msg;
    CHECKF(m->hdr->kind == SLUICE__MSG_KIND__MSG_TOKENS, "got %s: %s", pl_msg_kind_name(m->hdr->kind),
           m->hdr->error ? m->hdr->error : "");
    if (m->hdr->kind != SLUICE__MSG_KIND__MSG_TOKENS)
        return 0;
    uint32_t n = m->hdr->n_rows;
    sl_err err;
    const int32_t *t = pl_msg_i32(m, SLUICE__PAYLOAD_KIND__PL_TOKEN, n, &err);
    const int32_t *d = pl_msg_i32(m, SLUICE__PAYLOAD_KIND__PL_NEXT_DRAFT, n, &err);
    CHECK(t && d && m->shape[SLUICE__PAYLOAD_KIND__PL_NEXT_DRAFT][1] == K);
    CHECK(!pl_msg_has(m, SLUICE__PAYLOAD_KIND__PL_MTP_KV) && !pl_msg_has(m, SLUICE__PAYLOAD_KIND__PL_HIDDEN));
    if (!t || !d)
        return 0;
    memcpy(tok, t, n * sizeof *t);
    memcpy(drafts, d + (size_t)(n - 1) * K, K * sizeof *d);
    return (int)n;
}

/* Verifies t0 (at p) and K drafts of which the target accepts two, the
 * third a token it does not pick, on the stage and the reference; checks
 * the stage's next drafts against the reference's and returns the new t0's
 * position (its token in *t0). */
static int verify_two(chain *c, ref *r, int32_t *t0, int p)
{
    int32_t rows[1 + K] = {*t0}, tok[16], drafts[K], want[K];
    for (int i = 0; i < 2; i++) {
        ref_feed(r, &rows[i], 1, p + i);
        rows[i + 1] = r->next;
    }
    ref_feed(r, &rows[2], 1, p + 2);
    rows[3] = (r->next + 1) % r->m->cfg.n_vocab;
    sl_kv_truncate(r->kv, 0, p);
    catcher out = {0};
    run_batch(c, rows, 1 + K, p, K, &out);
    int n = read_answer(&out, tok, drafts);
    CHECKF(n == 3, "at %d: %d tokens emitted (2 drafts accepted, the third rejected: 3)", p, n);
    if (out.have)
        pl_msg_close(&out.msg);
    if (n < 1)
        return -1;
    int32_t text[1 + K] = {*t0};
    for (int i = 0; i < n - 1; i++)
        text[1 + i] = tok[i];
    ref_feed(r, text, n, p);
    ref_drafts(r, tok[n - 1], p + n, want);
    CHECKF(memcmp(drafts, want, sizeof want) == 0, "at %d: drafts %d %d %d, reference %d %d %d",
           p + n, drafts[0], drafts[1], drafts[2], want[0], want[1], want[2]);
    *t0 = tok[n - 1];
    return p + n;
}

/* Text fed 16 rows a batch up to past the ring's end, a verification with a
 * rejection there, more text, another: every draft equals the reference's. */
static void test_ring_wraps(chain *c, ref *r)
{
    uint32_t seed = 3;
    int32_t text[16], tok[16], drafts[K], want[K], t0 = 0;
    int p = 0, checked = 0;
    for (int round = 0; round < 2; round++) {
        for (int end = round ? 330 : 200; p + 16 <= end; p += 16) {
            for (int i = 0; i < 16; i++)
                text[i] = 2 + (int32_t)((seed = seed * 1664525u + 1013904223u) >> 8) % 500;
            catcher out = {0};
            run_batch(c, text, 16, p, 0, &out);
            ref_feed(r, text, 16, p);
            if (read_answer(&out, tok, drafts) == 1) {
                ref_drafts(r, tok[0], p + 16, want);
                CHECKF(memcmp(drafts, want, sizeof want) == 0, "after text to %d: drafts %d %d %d, "
                       "reference %d %d %d", p + 16, drafts[0], drafts[1], drafts[2], want[0], want[1],
                       want[2]);
                checked++;
            }
            t0 = tok[0];
            if (out.have)
                pl_msg_close(&out.msg);
        }
        p = verify_two(c, r, &t0, p);
        if (p < 0)
            return;
        checked++;
        /* the next text starts where the copy ends: t0's row is fed in it */
    }
    CHECK(p > 256);
    printf("mtp stage: drafts at %d points up to position %d (a ring of 128 sliding rows) match the "
           "reference\n", checked, p);
}

static void test_drafts_match(chain *c, ref *r)
{
    int32_t prompt[6] = {11, 57, 300, 42, 8, 199}, tok[16], drafts[K], want[K];
    catcher out = {0};
    run_batch(c, prompt, 6, 0, 0, &out);
    int n = read_answer(&out, tok, drafts);
    CHECK(n == 1);
    ref_feed(r, prompt, 6, 0);
    ref_drafts(r, tok[0], 6, want);
    CHECKF(memcmp(drafts, want, sizeof want) == 0, "after the prompt: drafts %d %d %d, reference %d %d %d",
           drafts[0], drafts[1], drafts[2], want[0], want[1], want[2]);
    CHECK(tok[0] == r->next);
    /* verify t0 and drafts of which the target accepts two (its own greedy
     * picks, then a token it does not pick): the stage's copy must keep
     * the accepted rows and drop the rejected one */
    int32_t rows[1 + K] = {tok[0]};
    for (int i = 0; i < 2; i++) {
        ref_feed(r, &rows[i], 1, 6 + i);
        rows[i + 1] = r->next;
    }
    ref_feed(r, &rows[2], 1, 8);
    rows[3] = (r->next + 1) % r->m->cfg.n_vocab;
    sl_kv_truncate(r->kv, 0, 6);
    run_batch(c, rows, 1 + K, 6, K, &out);
    int32_t tok2[16], drafts2[K];
    int n2 = read_answer(&out, tok2, drafts2);
    CHECKF(n2 == 3, "%d tokens emitted (2 drafts accepted, the third rejected: 3)", n2);
    if (n2 < 1)
        return;
    /* the reference's text: t0, then the accepted drafts (the emitted
     * tokens but the last) */
    int32_t text[1 + K] = {tok[0]};
    for (int i = 0; i < n2 - 1; i++)
        text[1 + i] = tok2[i];
    ref_feed(r, text, n2, 6);
    ref_drafts(r, tok2[n2 - 1], 6 + n2, want);
    CHECKF(memcmp(drafts2, want, sizeof want) == 0,
           "after a verification (%d emitted): drafts %d %d %d, reference %d %d %d", n2, drafts2[0],
           drafts2[1], drafts2[2], want[0], want[1], want[2]);
    printf("mtp stage: drafts %d %d %d then %d %d %d (%d of %d accepted) match the reference\n",
           drafts[0], drafts[1], drafts[2], drafts2[0], drafts2[1], drafts2[2], n2 - 1, K);
    pl_msg_close(&out.msg);
}

/* After test_drafts_match: a new request on slot 0 whose text shares the
 * slot's first P positions, as the prefix cache starts it (only its other
 * tokens sent, from position P, the layers stages cutting their caches
 * there): the mtp stage's copy keeps [0, P) and its drafts equal the
 * reference's on the new text. */
static void test_prefix_reuse(chain *c, ref *r)
{
    enum { P = 4 };
    int32_t rest[3] = {77, 5, 123}, tok[16], drafts[K], want[K];
    g_req = 2;
    catcher out = {0};
    run_batch(c, rest, 3, P, 0, &out);
    int n = read_answer(&out, tok, drafts);
    CHECKF(n == 1, "%d tokens after a reused prefix", n);
    if (n < 1)
        return;
    sl_kv_truncate(r->kv, 0, P);
    ref_feed(r, rest, 3, P);
    ref_drafts(r, tok[0], P + 3, want);
    CHECK(tok[0] == r->next);
    CHECKF(memcmp(drafts, want, sizeof want) == 0,
           "after a reused prefix of %d: drafts %d %d %d, reference %d %d %d", P, drafts[0], drafts[1],
           drafts[2], want[0], want[1], want[2]);
    pl_msg_close(&out.msg);
    g_req = 1;
}

/* A TOKENS message for the mtp stage alone: one token of slot seq at pos
 * with its hidden state, and one K/V row of width cols at (row_seq,
 * row_pos); with_slots false leaves out the token's slot and position. */
static void expect_refused(sl_stage *mtp, int seq, int pos, int row_seq, int row_pos, uint64_t cols,
                           bool with_slots, const char *frag)
{
    uint64_t req = 1;
    int32_t tok = 5, row[2] = {row_seq, row_pos};
    static float hidden[256], kv[4096];
    pl_msg m;
    sl_err err;
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_TOKENS, 9, 1);
    CHECK(pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, 1, 0, &req, NULL, NULL, &err) == 0 &&
          pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_TOKEN, SLUICE__DTYPE__DT_I32, 1, 0, &tok, NULL, NULL, &err) == 0 &&
          pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_HIDDEN, SLUICE__DTYPE__DT_F32, 1, 256, hidden, NULL, NULL, &err) == 0 &&
          pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_MTP_KV, SLUICE__DTYPE__DT_F32, 1, cols, kv, NULL, NULL, &err) == 0 &&
          pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_MTP_ROW, SLUICE__DTYPE__DT_I32, 1, 2, row, NULL, NULL, &err) == 0);
    int32_t s = seq, p = pos;
    if (with_slots)
        CHECK(pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_SEQ, SLUICE__DTYPE__DT_I32, 1, 0, &s, NULL, NULL, &err) == 0 &&
              pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_POS, SLUICE__DTYPE__DT_I32, 1, 0, &p, NULL, NULL, &err) == 0);
    catcher out = {0};
    sl_emit to = {catch_msg, &out};
    CHECK(mtp->process(mtp, &m, &to, &err) == 0 && out.have);
    if (out.have) {
        CHECKF(out.msg.hdr->kind == SLUICE__MSG_KIND__MSG_ERROR && strstr(out.msg.hdr->error, frag),
               "expected an ERROR with \"%s\", got %s \"%s\"", frag, pl_msg_kind_name(out.msg.hdr->kind),
               out.msg.hdr->error ? out.msg.hdr->error : "");
        pl_msg_close(&out.msg);
    }
    pl_msg_close(&m);
}

static void test_refusals(sl_stage *mtp)
{
    /* the test target's source layers: 2 kv heads x 64 (sliding), 1 x 128 */
    uint64_t cols = 2 * 128 + 2 * 128;
    expect_refused(mtp, 0, 3, 7, 0, cols, true, "slot 7 position 0, outside 2 slots");
    expect_refused(mtp, 0, 3, 1, CTX, cols, true, "outside 2 slots of 64 positions");
    expect_refused(mtp, 0, 3, 1, 40, cols, true, "the copy holds only positions before");
    expect_refused(mtp, 0, 3, 1, 0, cols - 4, true, "K/V rows are not f32 [1, 512]");
    expect_refused(mtp, 0, 3, 1, 0, cols, false, "without their slots and positions");
    expect_refused(mtp, 5, 3, 1, 0, cols, true, "slot 5 position 3 outside");
}

int main(void)
{
    if (test_synth("--arch gemma4 --size test --seed 5 --weight-scale 0.6", target_path) ||
        test_synth("--arch gemma4-assistant --size test", assistant_path)) {
        fprintf(stderr, "test_mtp_stage: sluice synth failed (SLUICE set?)\n");
        return 1;
    }
    for (int long_ctx = 0; long_ctx < 2; long_ctx++) {
        int context = long_ctx ? LONG_CTX : CTX;
        chain c;
        chain_open(&c, context);
        ref r = {0};
        sl_err err;
        CHECKF(sl_model_load(&r.m, target_path, NULL, &err) == 0 && sl_fwd_new(&r.fwd, r.m, 16, &err) == 0 &&
               sl_kv_new(&r.kv, &r.m->cfg, 0, 8, 1, context, &err) == 0 &&
               sl_mtp_load(&r.a, assistant_path, &err) == 0 && sl_mtp_ctx_new(&r.ctx, r.a, r.m, &err) == 0,
               "%s", err.msg);
        r.x = malloc(16 * (size_t)r.m->cfg.d_model * sizeof(float));
        if (c.st[4] && r.ctx && !long_ctx) {
            test_drafts_match(&c, &r);
            test_prefix_reuse(&c, &r);
            test_refusals(c.st[4]);
        } else if (c.st[4] && r.ctx) {
            test_ring_wraps(&c, &r);
        }
        for (int i = 0; i < 5; i++)
            sl_stage_destroy(c.st[i]);
        free(r.x);
        sl_mtp_ctx_free(r.ctx);
        sl_mtp_free(r.a);
        sl_kv_free(r.kv);
        sl_fwd_free(r.fwd);
        sl_model_free(r.m);
    }
    unlink(assistant_path);
    unlink(target_path);
    return test_finish("test_mtp_stage");
}
