/* Writes the fuzz seed corpus for fuzz_wire: messages of every kind as
 * pl_msg_send puts them on an inproc socket, captured frame by frame, plus
 * broken copies. Each file is in fuzz_wire's framing (frame count, shift
 * mask, u16 lengths, bytes).  Usage: wire_make_seeds DIR */
#include "pipeline/wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define MAX_CAPTURED 20

typedef struct captured {
    int n;
    uint8_t *frame[MAX_CAPTURED];
    size_t size[MAX_CAPTURED];
} captured;

static void *tx, *rx;

static int capture(pl_msg *m, captured *c)
{
    sl_err err;
    if (pl_msg_send(m, tx, 0, &err)) {
        fprintf(stderr, "wire_make_seeds: %s\n", err.msg);
        pl_msg_close(m);
        return -1;
    }
    pl_msg_close(m);
    memset(c, 0, sizeof *c);
    int more = 1;
    while (more && c->n < MAX_CAPTURED) {
        zmq_msg_t f;
        zmq_msg_init(&f);
        if (zmq_msg_recv(&f, rx, 0) < 0)
            return -1;
        c->size[c->n] = zmq_msg_size(&f);
        c->frame[c->n] = malloc(c->size[c->n] + 1);
        memcpy(c->frame[c->n], zmq_msg_data(&f), c->size[c->n]);
        c->n++;
        more = zmq_msg_more(&f);
        zmq_msg_close(&f);
    }
    return 0;
}

static int write_seed(const char *dir, const char *name, const captured *c, uint8_t shift_mask)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "wb");
    if (!fp)
        return -1;
    fputc(c->n, fp);
    fputc(shift_mask, fp);
    for (int i = 0; i < c->n; i++) {
        fputc((int)(c->size[i] & 0xff), fp);
        fputc((int)(c->size[i] >> 8), fp);
    }
    for (int i = 0; i < c->n; i++)
        fwrite(c->frame[i], 1, c->size[i], fp);
    return fclose(fp);
}

static void release(captured *c)
{
    for (int i = 0; i < c->n; i++)
        free(c->frame[i]);
}

static const uint64_t req[3] = {1, 2, 3};
static const int32_t seq[3] = {0, 1, 2}, pos[3] = {0, 1, 5}, tok[3] = {2, 10, 11};
static const uint8_t flags[3] = {0, 0, 1};
static const float act[3 * 4] = {1, 2, 3, 4, -1, -2, -3, -4, 0.5f, 0.25f, 0, 8};
static const uint16_t act_bf16[3 * 4] = {0x3F80, 0x4000, 0, 0xBF80, 0x3F00, 0, 0, 0, 0x4040, 0, 0, 0x7F80};

static void rows(pl_msg *m, uint64_t n)
{
    sl_err e;
    pl_msg_add(m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, n, 0, req, NULL, NULL, &e);
    pl_msg_add(m, SLUICE__PAYLOAD_KIND__PL_SEQ, SLUICE__DTYPE__DT_I32, n, 0, seq, NULL, NULL, &e);
    pl_msg_add(m, SLUICE__PAYLOAD_KIND__PL_POS, SLUICE__DTYPE__DT_I32, n, 0, pos, NULL, NULL, &e);
    pl_msg_add(m, SLUICE__PAYLOAD_KIND__PL_FLAGS, SLUICE__DTYPE__DT_U8, n, 0, flags, NULL, NULL, &e);
}

static int batches(const char *dir)
{
    sl_err e;
    pl_msg m;
    captured c;
    int rc = 0;
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_BATCH, 1, 3);
    rows(&m, 3);
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_TOKEN, SLUICE__DTYPE__DT_I32, 3, 0, tok, NULL, NULL, &e);
    if (capture(&m, &c))
        return -1;
    rc |= write_seed(dir, "batch-tokens", &c, 0);
    rc |= write_seed(dir, "batch-tokens-misaligned", &c, 0xff);
    /* broken: the version field (first header byte pair 08 01) set to 2 */
    if (c.size[0] > 2 && c.frame[0][0] == 0x08) {
        c.frame[0][1] = 2;
        rc |= write_seed(dir, "bad-version", &c, 0);
        c.frame[0][1] = 1;
    }
    c.size[3]--; /* POS one byte short */
    rc |= write_seed(dir, "bad-size", &c, 0);
    c.size[3]++;
    c.n--; /* a frame missing */
    rc |= write_seed(dir, "bad-frame-count", &c, 0);
    c.n++;
    memset(c.frame[0], 0xff, c.size[0]);
    rc |= write_seed(dir, "bad-garbage-header", &c, 0);
    release(&c);

    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_BATCH, 2, 3);
    rows(&m, 3);
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_ACTIVATION, SLUICE__DTYPE__DT_F32, 3, 4, act, NULL, NULL, &e);
    Sluice__ReqParams rp = SLUICE__REQ_PARAMS__INIT, *rpp = &rp;
    int32_t recent[2] = {5, 6};
    rp.request_id = 1;
    rp.temperature = 0.8f;
    rp.n_recent = 2;
    rp.recent = recent;
    m.hdr_store.n_params = 1;
    m.hdr_store.params = &rpp;
    if (capture(&m, &c))
        return -1;
    rc |= write_seed(dir, "batch-f32", &c, 0x0a);
    release(&c);

    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_BATCH, 3, 3);
    rows(&m, 3);
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_ACTIVATION, SLUICE__DTYPE__DT_BF16, 3, 4, act_bf16, NULL, NULL, &e);
    if (capture(&m, &c))
        return -1;
    rc |= write_seed(dir, "batch-bf16", &c, 0x20);
    /* broken: the FLAGS frame replaced by a second copy of POS */
    free(c.frame[4]);
    c.frame[4] = malloc(c.size[3] + 1);
    memcpy(c.frame[4], c.frame[3], c.size[3]);
    c.size[4] = c.size[3];
    rc |= write_seed(dir, "bad-flags-frame", &c, 0);
    release(&c);
    return rc;
}

static int data_answers(const char *dir)
{
    sl_err e;
    pl_msg m;
    captured c;
    int rc = 0;
    static const float logits[2 * 5] = {0, 1, 2, 3, 4, 4, 3, 2, 1, 0};
    static const int32_t ids[2 * 2] = {4, 3, 0, 1};
    static const float vals[2 * 2] = {4, 3, 4, 3};
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_LOGITS, 4, 2);
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, 2, 0, req, NULL, NULL, &e);
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_LOGITS, SLUICE__DTYPE__DT_F32, 2, 5, logits, NULL, NULL, &e);
    rc |= capture(&m, &c) || write_seed(dir, "logits", &c, 0);
    release(&c);
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_LOGITS, 5, 3);
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, 3, 0, req, NULL, NULL, &e);
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_TOPK_ID, SLUICE__DTYPE__DT_I32, 2, 2, ids, NULL, NULL, &e);
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_TOPK_VAL, SLUICE__DTYPE__DT_F32, 2, 2, vals, NULL, NULL, &e);
    rc |= capture(&m, &c) || write_seed(dir, "logits-topk", &c, 0x06);
    release(&c);
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_TOKENS, 6, 3);
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, 3, 0, req, NULL, NULL, &e);
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_TOKEN, SLUICE__DTYPE__DT_I32, 3, 0, tok, NULL, NULL, &e);
    rc |= capture(&m, &c) || write_seed(dir, "tokens", &c, 0);
    release(&c);
    /* speculative: a verified row and two drafted ones (vocabulary 64, as
     * fuzz_stage's model), with the draft's distributions */
    static float spec_logits[3 * 64], spec_q[2 + 64];
    static const int32_t drafted[3] = {-1, 5, 7}, spec_k[3] = {2, 2, 2};
    /* msg/draftq.h: row 0 sparse (tokens 5 and 9), row 1 dense */
    static const int32_t q_count[2] = {2, 64}, q_id[2] = {5, 9};
    for (int i = 0; i < 3 * 64; i++)
        spec_logits[i] = (float)((i * 7) % 13) * 0.25f;
    spec_q[0] = 0.75f;
    spec_q[1] = 0.25f;
    for (int i = 0; i < 64; i++)
        spec_q[2 + i] = 1.0f / 64;
    static const uint64_t one_req[3] = {1, 1, 1};
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_LOGITS, 8, 3);
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, 3, 0, one_req, NULL, NULL, &e);
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_LOGITS, SLUICE__DTYPE__DT_F32, 3, 64, spec_logits, NULL, NULL, &e);
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_DRAFT_TOKEN, SLUICE__DTYPE__DT_I32, 3, 0, drafted, NULL, NULL, &e);
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_DRAFT_PROBS, SLUICE__DTYPE__DT_F32, 2 + 64, 0, spec_q, NULL, NULL, &e);
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_DRAFT_Q_COUNT, SLUICE__DTYPE__DT_I32, 2, 0, q_count, NULL, NULL, &e);
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_DRAFT_Q_ID, SLUICE__DTYPE__DT_I32, 2, 0, q_id, NULL, NULL, &e);
    rc |= capture(&m, &c) || write_seed(dir, "logits-spec", &c, 0);
    release(&c);
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_TOKENS, 9, 3);
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, 3, 0, one_req, NULL, NULL, &e);
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_TOKEN, SLUICE__DTYPE__DT_I32, 3, 0, tok, NULL, NULL, &e);
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_SPEC, SLUICE__DTYPE__DT_I32, 3, 0, spec_k, NULL, NULL, &e);
    rc |= capture(&m, &c) || write_seed(dir, "tokens-spec", &c, 0);
    release(&c);
    static const int32_t b_seq[3] = {0, 0, 0}, b_pos[3] = {4, 5, 6}, b_tok[3] = {9, 5, 7};
    static const uint8_t b_flags[3] = {1, 1, 1};
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_BATCH, 10, 3);
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, 3, 0, one_req, NULL, NULL, &e);
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_SEQ, SLUICE__DTYPE__DT_I32, 3, 0, b_seq, NULL, NULL, &e);
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_POS, SLUICE__DTYPE__DT_I32, 3, 0, b_pos, NULL, NULL, &e);
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_FLAGS, SLUICE__DTYPE__DT_U8, 3, 0, b_flags, NULL, NULL, &e);
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_TOKEN, SLUICE__DTYPE__DT_I32, 3, 0, b_tok, NULL, NULL, &e);
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_DRAFT_TOKEN, SLUICE__DTYPE__DT_I32, 3, 0, drafted, NULL, NULL, &e);
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_DRAFT_PROBS, SLUICE__DTYPE__DT_F32, 2 + 64, 0, spec_q, NULL, NULL, &e);
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_DRAFT_Q_COUNT, SLUICE__DTYPE__DT_I32, 2, 0, q_count, NULL, NULL, &e);
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_DRAFT_Q_ID, SLUICE__DTYPE__DT_I32, 2, 0, q_id, NULL, NULL, &e);
    rc |= capture(&m, &c) || write_seed(dir, "batch-spec", &c, 0);
    release(&c);
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_ERROR, 7, 1);
    m.hdr_store.error = "out of KV slots";
    m.hdr_store.origin = "layers1";
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, 1, 0, req, NULL, NULL, &e);
    rc |= capture(&m, &c) || write_seed(dir, "error", &c, 0);
    release(&c);
    return rc;
}

static int control(const char *dir)
{
    pl_msg m;
    captured c;
    int rc = 0;
    int32_t seqs[2] = {1, 2};
    uint64_t reqs[2] = {7, 8};
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_RELEASE, 0, 0);
    m.hdr_store.n_seqs = 2;
    m.hdr_store.seqs = seqs;
    m.hdr_store.n_requests = 2;
    m.hdr_store.requests = reqs;
    rc |= capture(&m, &c) || write_seed(dir, "release", &c, 0);
    release(&c);
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_TRUNCATE, 0, 0);
    m.hdr_store.n_seqs = 1;
    m.hdr_store.seqs = seqs;
    m.hdr_store.length = 9;
    rc |= capture(&m, &c) || write_seed(dir, "truncate", &c, 0);
    release(&c);
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_CANCEL, 0, 0);
    m.hdr_store.n_requests = 1;
    m.hdr_store.requests = reqs;
    rc |= capture(&m, &c) || write_seed(dir, "cancel", &c, 0);
    release(&c);
    Sluice__StageAssign sa = SLUICE__STAGE_ASSIGN__INIT, *sap = &sa;
    sa.kind = 2;
    sa.l1 = 6;
    sa.model = "/m.gguf";
    sa.input = "tcp://*:7100";
    sa.output = "tcp://h:7101";
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_ASSIGN, 0, 0);
    m.hdr_store.n_assign = 1;
    m.hdr_store.assign = &sap;
    rc |= capture(&m, &c) || write_seed(dir, "assign", &c, 0);
    release(&c);
    static const int kinds[] = {SLUICE__MSG_KIND__MSG_HEARTBEAT, SLUICE__MSG_KIND__MSG_READY,
                                SLUICE__MSG_KIND__MSG_SHUTDOWN};
    static const char *const names[] = {"heartbeat", "ready", "shutdown"};
    for (int i = 0; i < 3; i++) {
        pl_msg_init(&m, kinds[i], 0, 0);
        m.hdr_store.sent_ns = 1234567;
        rc |= capture(&m, &c) || write_seed(dir, names[i], &c, 0);
        release(&c);
    }
    return rc;
}

/* The Gemma 4 assistant's payloads: a batch carrying K/V rows, LOGITS and
 * TOKENS carrying hidden states and them, TOKENS with drafts, and a K/V
 * payload whose (slot, position) frame went missing. */
static int mtp_payloads(const char *dir)
{
    static const float kv[3 * 8] = {1, 2, 3, 4, 5, 6, 7, 8, -1, -2, -3, -4, 0, 0, 0, 0, 9, 9, 9, 9, 1, 1, 1, 1};
    static const int32_t kv_rows[3 * 2] = {0, 0, 1, 1, 2, 5};
    static const int32_t next[1 * 3] = {7, 8, -1};
    sl_err e;
    pl_msg m;
    captured c;
    int rc = 0;
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_BATCH, 7, 3);
    rows(&m, 3);
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_ACTIVATION, SLUICE__DTYPE__DT_F32, 3, 4, act, NULL, NULL, &e);
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_MTP_KV, SLUICE__DTYPE__DT_F32, 3, 8, kv, NULL, NULL, &e);
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_MTP_ROW, SLUICE__DTYPE__DT_I32, 3, 2, kv_rows, NULL, NULL, &e);
    if (capture(&m, &c))
        return -1;
    rc |= write_seed(dir, "batch-mtp-kv", &c, 0);
    c.n--; /* MTP_ROW's frame missing */
    rc |= write_seed(dir, "bad-mtp-kv-alone", &c, 0);
    c.n++;
    release(&c);

    for (int kind = 0; kind < 2; kind++) {
        pl_msg_init(&m, kind ? SLUICE__MSG_KIND__MSG_TOKENS : SLUICE__MSG_KIND__MSG_LOGITS, 8, 1);
        pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, 1, 0, req + 2, NULL, NULL, &e);
        if (kind)
            pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_TOKEN, SLUICE__DTYPE__DT_I32, 1, 0, tok + 2, NULL, NULL, &e);
        else
            pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_LOGITS, SLUICE__DTYPE__DT_F32, 1, 4, act, NULL, NULL, &e);
        pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_SEQ, SLUICE__DTYPE__DT_I32, 1, 0, seq + 2, NULL, NULL, &e);
        pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_POS, SLUICE__DTYPE__DT_I32, 1, 0, pos + 2, NULL, NULL, &e);
        pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_HIDDEN, SLUICE__DTYPE__DT_F32, 1, 4, act + 8, NULL, NULL, &e);
        pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_MTP_KV, SLUICE__DTYPE__DT_F32, 3, 8, kv, NULL, NULL, &e);
        pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_MTP_ROW, SLUICE__DTYPE__DT_I32, 3, 2, kv_rows, NULL, NULL, &e);
        if (capture(&m, &c))
            return -1;
        rc |= write_seed(dir, kind ? "tokens-mtp-feed" : "logits-mtp-feed", &c, 0x14);
        release(&c);
    }

    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_TOKENS, 9, 1);
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, 1, 0, req, NULL, NULL, &e);
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_TOKEN, SLUICE__DTYPE__DT_I32, 1, 0, tok, NULL, NULL, &e);
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_NEXT_DRAFT, SLUICE__DTYPE__DT_I32, 1, 3, next, NULL, NULL, &e);
    if (capture(&m, &c))
        return -1;
    rc |= write_seed(dir, "tokens-next-draft", &c, 0);
    release(&c);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: wire_make_seeds DIR\n");
        return 2;
    }
    void *ctx = zmq_ctx_new();
    tx = zmq_socket(ctx, ZMQ_PUSH);
    rx = zmq_socket(ctx, ZMQ_PULL);
    if (zmq_bind(rx, "inproc://seeds") || zmq_connect(tx, "inproc://seeds"))
        return 1;
    int rc = batches(argv[1]) | data_answers(argv[1]) | control(argv[1]) | mtp_payloads(argv[1]);
    zmq_close(tx);
    zmq_close(rx);
    zmq_ctx_term(ctx);
    if (rc)
        fprintf(stderr, "wire_make_seeds: could not write every seed\n");
    return rc ? 1 : 0;
}
