/* The wire format over real ZeroMQ sockets (inproc, ipc, tcp on loopback):
 * every message kind goes through with its payloads; zero-copy payloads
 * are freed exactly once; every malformed message is dropped with an error
 * naming the problem while the socket keeps delivering the next good one;
 * bf16 activations convert; misaligned frames give aligned views. */
#include "pipeline/wire.h"
#include "tests/test.h"

#include <stdatomic.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define K_BATCH SLUICE__MSG_KIND__MSG_BATCH
#define P_REQ SLUICE__PAYLOAD_KIND__PL_REQUEST_ID
#define P_SEQ SLUICE__PAYLOAD_KIND__PL_SEQ
#define P_POS SLUICE__PAYLOAD_KIND__PL_POS
#define P_TOK SLUICE__PAYLOAD_KIND__PL_TOKEN
#define P_FLAGS SLUICE__PAYLOAD_KIND__PL_FLAGS
#define P_ACT SLUICE__PAYLOAD_KIND__PL_ACTIVATION
#define P_LOGITS SLUICE__PAYLOAD_KIND__PL_LOGITS
#define P_TOPK_ID SLUICE__PAYLOAD_KIND__PL_TOPK_ID
#define P_TOPK_VAL SLUICE__PAYLOAD_KIND__PL_TOPK_VAL
#define D_F32 SLUICE__DTYPE__DT_F32
#define D_BF16 SLUICE__DTYPE__DT_BF16
#define D_I32 SLUICE__DTYPE__DT_I32
#define D_U64 SLUICE__DTYPE__DT_U64
#define D_U8 SLUICE__DTYPE__DT_U8

static void *zctx;

/* ---- sockets ---- */

typedef struct pair {
    void *tx, *rx;
    char addr[256];
} pair;

static void set_int(void *s, int opt, int v) { zmq_setsockopt(s, opt, &v, sizeof v); }

static int open_pair(pair *p, const char *transport)
{
    static int serial;
    serial++;
    p->rx = zmq_socket(zctx, ZMQ_PULL);
    p->tx = zmq_socket(zctx, ZMQ_PUSH);
    set_int(p->rx, ZMQ_LINGER, 0);
    set_int(p->tx, ZMQ_LINGER, 0);
    set_int(p->rx, ZMQ_RCVTIMEO, 5000); /* a lost message fails the test instead of hanging it */
    char bind[256];
    if (strcmp(transport, "inproc") == 0)
        snprintf(bind, sizeof bind, "inproc://wire-%d", serial);
    else if (strcmp(transport, "ipc") == 0)
        snprintf(bind, sizeof bind, "ipc:///tmp/sluice-test-wire-%d-%d", (int)getpid(), serial);
    else
        snprintf(bind, sizeof bind, "tcp://127.0.0.1:*");
    if (zmq_bind(p->rx, bind))
        return -1;
    size_t len = sizeof p->addr;
    zmq_getsockopt(p->rx, ZMQ_LAST_ENDPOINT, p->addr, &len);
    return zmq_connect(p->tx, p->addr);
}

static void close_pair(pair *p)
{
    zmq_close(p->tx);
    zmq_close(p->rx);
    if (strncmp(p->addr, "ipc://", 6) == 0)
        unlink(p->addr + 6);
}

static int recv_ok(pair *p, pl_msg *m, const pl_wire_limits *lim)
{
    sl_err e = {{0}};
    int rc = pl_msg_recv(m, p->rx, lim, &e);
    CHECKF(rc == 0, "%s: receive failed: %s", p->addr, e.msg);
    return rc;
}

static int send_ok(pair *p, pl_msg *m)
{
    sl_err e = {{0}};
    int rc = pl_msg_send(m, p->tx, 0, &e);
    CHECKF(rc == 0, "%s: send failed: %s", p->addr, e.msg);
    pl_msg_close(m);
    return rc;
}

/* ---- round trip of every kind ---- */

static const uint64_t b_req[3] = {101, 102, 0xFFFFFFFFFFFFull};
static const int32_t b_seq[3] = {0, 1, 7};
static const int32_t b_pos[3] = {5, 0, 123456};
static const int32_t b_tok[3] = {2, 262143, 17};
static const uint8_t b_flags[3] = {1, 0, 1};
static const float b_act[3 * 5] = {0.5f, -1, 2, 3.25f, 1e-30f, 7, 8, 9, 10, 11, -0.0f, 1e30f, -5, 6, 0.125f};

static void add_rows(pl_msg *m, uint32_t n)
{
    sl_err e = {{0}};
    int rc = pl_msg_add(m, P_REQ, D_U64, n, 0, b_req, NULL, NULL, &e) ||
             pl_msg_add(m, P_SEQ, D_I32, n, 0, b_seq, NULL, NULL, &e) ||
             pl_msg_add(m, P_POS, D_I32, n, 0, b_pos, NULL, NULL, &e) ||
             pl_msg_add(m, P_FLAGS, D_U8, n, 0, b_flags, NULL, NULL, &e);
    CHECKF(rc == 0, "%s", e.msg);
}

static void send_batch(pair *p, uint64_t batch_id)
{
    pl_msg m;
    sl_err e = {{0}};
    pl_msg_init(&m, K_BATCH, batch_id, 3);
    add_rows(&m, 3);
    CHECKF(pl_msg_add(&m, P_TOK, D_I32, 3, 0, b_tok, NULL, NULL, &e) == 0, "%s", e.msg);
    CHECKF(pl_msg_add(&m, P_ACT, D_F32, 3, 5, b_act, NULL, NULL, &e) == 0, "%s", e.msg);
    int32_t recent[2] = {4, -9};
    Sluice__ReqParams rp = SLUICE__REQ_PARAMS__INIT, *rpp = &rp;
    rp.request_id = 101;
    rp.temperature = 0.75f;
    rp.top_k = 40;
    rp.seed = 99;
    rp.n_recent = 2;
    rp.recent = recent;
    m.hdr_store.n_params = 1;
    m.hdr_store.params = &rpp;
    m.hdr_store.sent_ns = 123456789;
    send_ok(p, &m);
}

/* The next message must be the batch send_batch sent. */
static void expect_batch(pair *p, uint64_t batch_id)
{
    pl_msg m;
    if (recv_ok(p, &m, NULL))
        return;
    sl_err e = {{0}};
    CHECK(m.hdr->kind == K_BATCH && m.hdr->version == PL_WIRE_VERSION);
    CHECKF(m.hdr->batch_id == batch_id, "batch %llu, expected %llu", (unsigned long long)m.hdr->batch_id,
           (unsigned long long)batch_id);
    CHECK(m.hdr->n_rows == 3 && m.n_frames == 6 && m.hdr->sent_ns == 123456789);
    const uint64_t *req = pl_msg_u64(&m, P_REQ, 3, &e);
    const int32_t *seq = pl_msg_i32(&m, P_SEQ, 3, &e), *pos = pl_msg_i32(&m, P_POS, 3, &e);
    const int32_t *tok = pl_msg_i32(&m, P_TOK, 3, &e);
    const uint8_t *flags = pl_msg_u8(&m, P_FLAGS, 3, &e);
    float act[15];
    CHECKF(req && seq && pos && tok && flags && pl_msg_f32(&m, P_ACT, 3, 5, act, &e) == 0, "%s", e.msg);
    if (req && seq && pos && tok && flags) {
        CHECK(memcmp(req, b_req, sizeof b_req) == 0 && memcmp(seq, b_seq, sizeof b_seq) == 0);
        CHECK(memcmp(pos, b_pos, sizeof b_pos) == 0 && memcmp(tok, b_tok, sizeof b_tok) == 0);
        CHECK(memcmp(flags, b_flags, sizeof b_flags) == 0 && memcmp(act, b_act, sizeof act) == 0);
    }
    CHECK(m.shape[P_ACT][0] == 3 && m.shape[P_ACT][1] == 5 && m.dtype[P_ACT] == D_F32);
    CHECK(m.hdr->n_params == 1);
    if (m.hdr->n_params == 1) {
        const Sluice__ReqParams *rp = m.hdr->params[0];
        CHECK(rp->request_id == 101 && rp->temperature == 0.75f && rp->top_k == 40 && rp->seed == 99);
        CHECK(rp->n_recent == 2 && rp->recent[0] == 4 && rp->recent[1] == -9);
    }
    pl_msg_close(&m);
    CHECK(m.hdr == NULL && m.n_frames == 0);
}

static void send_control(pair *p)
{
    sl_err e = {{0}};
    pl_msg m;
    static const float logits[2 * 7] = {1, 2, 3, 4, 5, 6, 7, -1, -2, -3, -4, -5, -6, -7};
    static const int32_t topk_id[2 * 3] = {9, 8, 7, 1, 2, 3};
    static const float topk_val[2 * 3] = {0.5f, 0.25f, 0.125f, 3, 2, 1};

    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_LOGITS, 11, 2);
    CHECKF(pl_msg_add(&m, P_REQ, D_U64, 2, 0, b_req, NULL, NULL, &e) == 0 &&
           pl_msg_add(&m, P_LOGITS, D_F32, 2, 7, logits, NULL, NULL, &e) == 0, "%s", e.msg);
    send_ok(p, &m);
    /* top-k rows fewer than n_rows: only the wanted rows answer */
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_LOGITS, 12, 3);
    CHECKF(pl_msg_add(&m, P_REQ, D_U64, 3, 0, b_req, NULL, NULL, &e) == 0 &&
           pl_msg_add(&m, P_TOPK_ID, D_I32, 2, 3, topk_id, NULL, NULL, &e) == 0 &&
           pl_msg_add(&m, P_TOPK_VAL, D_F32, 2, 3, topk_val, NULL, NULL, &e) == 0, "%s", e.msg);
    send_ok(p, &m);
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_TOKENS, 13, 2);
    CHECKF(pl_msg_add(&m, P_REQ, D_U64, 2, 0, b_req, NULL, NULL, &e) == 0 &&
           pl_msg_add(&m, P_TOK, D_I32, 2, 0, b_tok, NULL, NULL, &e) == 0, "%s", e.msg);
    send_ok(p, &m);
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_TOKENS, 14, 0); /* a batch with no wanted rows */
    send_ok(p, &m);
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_ERROR, 15, 1);
    m.hdr_store.error = "layer 3: NaN in activations";
    m.hdr_store.origin = "layers0";
    CHECKF(pl_msg_add(&m, P_REQ, D_U64, 1, 0, b_req, NULL, NULL, &e) == 0, "%s", e.msg);
    send_ok(p, &m);

    int32_t seqs[2] = {4, 5};
    uint64_t reqs[2] = {10, 11};
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_RELEASE, 0, 0);
    m.hdr_store.n_seqs = 2;
    m.hdr_store.seqs = seqs;
    m.hdr_store.n_requests = 2;
    m.hdr_store.requests = reqs;
    send_ok(p, &m);
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_TRUNCATE, 0, 0);
    m.hdr_store.n_seqs = 1;
    m.hdr_store.seqs = seqs;
    m.hdr_store.length = 17;
    send_ok(p, &m);
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_CANCEL, 0, 0);
    m.hdr_store.n_requests = 1;
    m.hdr_store.requests = reqs + 1;
    send_ok(p, &m);
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_HEARTBEAT, 0, 0);
    m.hdr_store.sent_ns = 42;
    send_ok(p, &m);
    Sluice__StageAssign sa = SLUICE__STAGE_ASSIGN__INIT, *sap = &sa;
    sa.kind = 2;
    sa.l0 = 3;
    sa.l1 = 6;
    sa.model = "/models/tiny.gguf";
    sa.input = "tcp://*:7100";
    sa.output = "tcp://10.0.0.3:7101";
    sa.threads = 4;
    sa.numa = -1;
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_ASSIGN, 0, 0);
    m.hdr_store.n_assign = 1;
    m.hdr_store.assign = &sap;
    send_ok(p, &m);
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_READY, 0, 0);
    m.hdr_store.origin = "worker-b";
    send_ok(p, &m);
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_SHUTDOWN, 0, 0);
    send_ok(p, &m);
}

static void expect_logits(pair *p)
{
    sl_err e = {{0}};
    pl_msg m;
    if (recv_ok(p, &m, NULL) == 0) {
        CHECK(m.hdr->kind == SLUICE__MSG_KIND__MSG_LOGITS && m.hdr->batch_id == 11 && m.hdr->n_rows == 2);
        float out[14];
        CHECKF(pl_msg_f32(&m, P_LOGITS, 2, 7, out, &e) == 0, "%s", e.msg);
        CHECK(out[0] == 1 && out[6] == 7 && out[7] == -1 && out[13] == -7);
        pl_msg_close(&m);
    }
    if (recv_ok(p, &m, NULL) == 0) {
        CHECK(m.hdr->kind == SLUICE__MSG_KIND__MSG_LOGITS && m.hdr->batch_id == 12 && m.hdr->n_rows == 3);
        const int32_t *id = pl_msg_i32(&m, P_TOPK_ID, 2, &e);
        CHECKF(id && m.shape[P_TOPK_ID][1] == 3, "%s", e.msg);
        if (id)
            CHECK(id[0] == 9 && id[2] == 7 && id[5] == 3);
        float val[6];
        CHECKF(pl_msg_f32(&m, P_TOPK_VAL, 2, 3, val, &e) == 0, "%s", e.msg);
        CHECK(val[0] == 0.5f && val[5] == 1);
        CHECK(m.dtype[P_LOGITS] == SLUICE__DTYPE__DT_NONE && m.data[P_LOGITS] == NULL);
        pl_msg_close(&m);
    }
}

static void expect_tokens_error(pair *p)
{
    sl_err e = {{0}};
    pl_msg m;
    if (recv_ok(p, &m, NULL) == 0) {
        CHECK(m.hdr->kind == SLUICE__MSG_KIND__MSG_TOKENS && m.hdr->batch_id == 13);
        const int32_t *tok = pl_msg_i32(&m, P_TOK, 2, &e);
        const uint64_t *req = pl_msg_u64(&m, P_REQ, 2, &e);
        CHECKF(tok && req, "%s", e.msg);
        if (tok && req)
            CHECK(tok[1] == 262143 && req[0] == 101);
        pl_msg_close(&m);
    }
    if (recv_ok(p, &m, NULL) == 0) {
        CHECK(m.hdr->kind == SLUICE__MSG_KIND__MSG_TOKENS && m.hdr->batch_id == 14 && m.n_frames == 0);
        pl_msg_close(&m);
    }
    if (recv_ok(p, &m, NULL) == 0) {
        CHECK(m.hdr->kind == SLUICE__MSG_KIND__MSG_ERROR && m.hdr->batch_id == 15);
        CHECK(strcmp(m.hdr->error, "layer 3: NaN in activations") == 0 && strcmp(m.hdr->origin, "layers0") == 0);
        const uint64_t *req = pl_msg_u64(&m, P_REQ, 1, &e);
        CHECK(req && req[0] == 101);
        pl_msg_close(&m);
    }
}

static void expect_control(pair *p)
{
    pl_msg m;
    if (recv_ok(p, &m, NULL) == 0) {
        CHECK(m.hdr->kind == SLUICE__MSG_KIND__MSG_RELEASE && m.hdr->n_seqs == 2 && m.hdr->n_requests == 2);
        CHECK(m.hdr->seqs[0] == 4 && m.hdr->seqs[1] == 5 && m.hdr->requests[0] == 10 && m.hdr->requests[1] == 11);
        pl_msg_close(&m);
    }
    if (recv_ok(p, &m, NULL) == 0) {
        CHECK(m.hdr->kind == SLUICE__MSG_KIND__MSG_TRUNCATE && m.hdr->n_seqs == 1 && m.hdr->seqs[0] == 4);
        CHECK(m.hdr->length == 17);
        pl_msg_close(&m);
    }
    if (recv_ok(p, &m, NULL) == 0) {
        CHECK(m.hdr->kind == SLUICE__MSG_KIND__MSG_CANCEL && m.hdr->n_requests == 1 && m.hdr->requests[0] == 11);
        pl_msg_close(&m);
    }
    if (recv_ok(p, &m, NULL) == 0) {
        CHECK(m.hdr->kind == SLUICE__MSG_KIND__MSG_HEARTBEAT && m.hdr->sent_ns == 42);
        pl_msg_close(&m);
    }
    if (recv_ok(p, &m, NULL) == 0) {
        CHECK(m.hdr->kind == SLUICE__MSG_KIND__MSG_ASSIGN && m.hdr->n_assign == 1);
        if (m.hdr->n_assign == 1) {
            const Sluice__StageAssign *sa = m.hdr->assign[0];
            CHECK(sa->kind == 2 && sa->l0 == 3 && sa->l1 == 6 && sa->threads == 4 && sa->numa == -1);
            CHECK(strcmp(sa->model, "/models/tiny.gguf") == 0 && strcmp(sa->output, "tcp://10.0.0.3:7101") == 0);
        }
        pl_msg_close(&m);
    }
    if (recv_ok(p, &m, NULL) == 0) {
        CHECK(m.hdr->kind == SLUICE__MSG_KIND__MSG_READY && strcmp(m.hdr->origin, "worker-b") == 0);
        pl_msg_close(&m);
    }
    if (recv_ok(p, &m, NULL) == 0) {
        CHECK(m.hdr->kind == SLUICE__MSG_KIND__MSG_SHUTDOWN && m.n_frames == 0);
        pl_msg_close(&m);
    }
}

static void test_round_trip(const char *transport)
{
    pair p;
    if (open_pair(&p, transport)) {
        CHECKF(0, "cannot open %s sockets: %s", transport, zmq_strerror(zmq_errno()));
        return;
    }
    send_batch(&p, 7);
    send_control(&p);
    expect_batch(&p, 7);
    expect_logits(&p);
    expect_tokens_error(&p);
    expect_control(&p);
    close_pair(&p);
}

/* ---- zero-copy ownership ---- */

static void count_free(void *data, void *hint)
{
    (void)data;
    atomic_fetch_add((atomic_int *)hint, 1);
}

static void free_and_count(void *data, void *hint)
{
    free(data);
    atomic_fetch_add((atomic_int *)hint, 1);
}

static void wait_count(atomic_int *n, int want)
{
    for (int i = 0; i < 200 && atomic_load(n) < want; i++)
        usleep(10000);
    usleep(20000); /* a second call would come about now */
}

static void test_zero_copy(void)
{
    pair p;
    CHECK(open_pair(&p, "inproc") == 0);
    sl_err e = {{0}};
    atomic_int freed = 0;
    float *act = malloc(3 * 4 * sizeof *act);
    for (int i = 0; i < 12; i++)
        act[i] = (float)i;
    pl_msg m;
    pl_msg_init(&m, K_BATCH, 1, 3);
    add_rows(&m, 3);
    CHECK(pl_msg_add(&m, P_ACT, D_F32, 3, 4, act, count_free, &freed, &e) == 0);
    CHECK(pl_msg_send(&m, p.tx, 0, &e) == 0);
    CHECK(m.hdr == NULL); /* spent */
    pl_msg_close(&m);
    CHECK(atomic_load(&freed) == 0); /* inproc hands the buffer itself to the receiver */
    pl_msg r;
    if (recv_ok(&p, &r, NULL) == 0) {
        CHECK(r.data[P_ACT] == act); /* not copied on either side */
        CHECK(atomic_load(&freed) == 0);
        pl_msg_close(&r);
    }
    CHECK(atomic_load(&freed) == 1);
    free(act);
    close_pair(&p);

    /* over tcp ZeroMQ's I/O thread frees it once it is written out */
    CHECK(open_pair(&p, "tcp") == 0);
    freed = 0;
    act = malloc(3 * 4 * sizeof *act);
    memcpy(act, b_act, 12 * sizeof *act);
    pl_msg_init(&m, K_BATCH, 2, 3);
    add_rows(&m, 3);
    CHECK(pl_msg_add(&m, P_ACT, D_F32, 3, 4, act, free_and_count, &freed, &e) == 0);
    act = NULL;
    send_ok(&p, &m);
    if (recv_ok(&p, &r, NULL) == 0) {
        float out[12];
        CHECK(pl_msg_f32(&r, P_ACT, 3, 4, out, &e) == 0 && memcmp(out, b_act, sizeof out) == 0);
        pl_msg_close(&r);
    }
    wait_count(&freed, 1);
    CHECK(atomic_load(&freed) == 1);
    close_pair(&p);
}

static void test_ownership_without_send(void)
{
    sl_err e = {{0}};
    atomic_int freed = 0;
    pl_msg m;
    /* closed unsent: freed by the close */
    pl_msg_init(&m, K_BATCH, 1, 2);
    CHECK(pl_msg_add(&m, P_TOK, D_I32, 2, 0, malloc(8), free_and_count, &freed, &e) == 0);
    pl_msg_close(&m);
    CHECK(atomic_load(&freed) == 1);
    pl_msg_close(&m); /* closing twice is harmless */
    CHECK(atomic_load(&freed) == 1);
    /* a refused add leaves the data with the caller */
    freed = 0;
    float *x = malloc(8);
    pl_msg_init(&m, K_BATCH, 1, 2);
    CHECK(pl_msg_add(&m, P_TOK, D_F32, 2, 0, x, free_and_count, &freed, &e) == -1);
    CHECK_ERR_HAS(e, "has dtype f32, expected i32");
    pl_msg_close(&m);
    CHECK(atomic_load(&freed) == 0);
    free(x);

    /* a PUSH socket with no peer would block: nothing sent, nothing freed,
     * the message can go once a peer is there */
    void *tx = zmq_socket(zctx, ZMQ_PUSH);
    set_int(tx, ZMQ_LINGER, 0);
    freed = 0;
    pl_msg_init(&m, K_BATCH, 5, 3);
    add_rows(&m, 3);
    float *act = malloc(3 * 2 * sizeof *act);
    for (int i = 0; i < 6; i++)
        act[i] = 0.5f * (float)i;
    CHECK(pl_msg_add(&m, P_ACT, D_F32, 3, 2, act, free_and_count, &freed, &e) == 0);
    CHECK(pl_msg_send(&m, tx, ZMQ_DONTWAIT, &e) == -1);
    CHECK_ERR_HAS(e, "would block");
    CHECK_ERR_HAS(e, "BATCH message (batch 5)");
    CHECK(atomic_load(&freed) == 0 && m.hdr != NULL);
    pair p = {.tx = tx};
    p.rx = zmq_socket(zctx, ZMQ_PULL);
    set_int(p.rx, ZMQ_LINGER, 0);
    set_int(p.rx, ZMQ_RCVTIMEO, 5000);
    CHECK(zmq_bind(p.rx, "inproc://wire-late") == 0 && zmq_connect(tx, "inproc://wire-late") == 0);
    snprintf(p.addr, sizeof p.addr, "inproc://wire-late");
    CHECKF(pl_msg_send(&m, tx, ZMQ_DONTWAIT, &e) == 0, "%s", e.msg);
    CHECK(pl_msg_send(&m, tx, 0, &e) == -1); /* spent: a second send is refused */
    CHECK_ERR_HAS(e, "once");
    pl_msg_close(&m);
    pl_msg r;
    if (recv_ok(&p, &r, NULL) == 0) {
        float out[6];
        CHECK(r.hdr->batch_id == 5 && pl_msg_f32(&r, P_ACT, 3, 2, out, &e) == 0 && out[5] == 2.5f);
        pl_msg_close(&r);
    }
    CHECK(atomic_load(&freed) == 1);
    /* unsent after a refusal: the close frees it */
    freed = 0;
    zmq_close(tx);
    tx = zmq_socket(zctx, ZMQ_PUSH);
    set_int(tx, ZMQ_LINGER, 0);
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_TOKENS, 6, 2);
    CHECK(pl_msg_add(&m, P_TOK, D_I32, 2, 0, malloc(8), free_and_count, &freed, &e) == 0);
    CHECK(pl_msg_add(&m, P_REQ, D_U64, 2, 0, b_req, NULL, NULL, &e) == 0);
    CHECK(pl_msg_send(&m, tx, ZMQ_DONTWAIT, &e) == -1);
    CHECK(atomic_load(&freed) == 0);
    pl_msg_close(&m);
    CHECK(atomic_load(&freed) == 1);
    zmq_close(tx);
    zmq_close(p.rx);
}

/* ---- malformed messages ---- */

#define RAW_MAX 24

/* A message put together by hand, so any field can be wrong. */
typedef struct raw_msg {
    Sluice__Header h;
    Sluice__Payload pay[RAW_MAX];
    Sluice__Payload *pay_ptr[RAW_MAX];
    uint64_t shape[RAW_MAX][3];
    const void *frame[RAW_MAX];
    size_t size[RAW_MAX];
    int n_frames; /* payload frames, independent of h.n_payloads */
    uint8_t head[4096];
    size_t head_size;
} raw_msg;

static void raw_init(raw_msg *r, int kind, uint64_t batch_id, uint32_t n_rows)
{
    memset(r, 0, sizeof *r);
    sluice__header__init(&r->h);
    r->h.version = PL_WIRE_VERSION;
    r->h.kind = kind;
    r->h.batch_id = batch_id;
    r->h.n_rows = n_rows;
    r->h.payloads = r->pay_ptr;
}

/* Adds a descriptor and its frame (bytes of data). */
static void raw_add(raw_msg *r, int kind, int dtype, uint64_t d0, uint64_t d1, const void *data, size_t bytes)
{
    int i = (int)r->h.n_payloads++;
    sluice__payload__init(&r->pay[i]);
    r->pay[i].kind = kind;
    r->pay[i].dtype = dtype;
    r->shape[i][0] = d0;
    r->shape[i][1] = d1;
    r->pay[i].shape = r->shape[i];
    r->pay[i].n_shape = d1 ? 2 : 1;
    r->pay_ptr[i] = &r->pay[i];
    r->frame[r->n_frames] = data;
    r->size[r->n_frames++] = bytes;
}

/* A valid 2-row BATCH with tokens. */
static void raw_batch(raw_msg *r, uint64_t batch_id)
{
    raw_init(r, K_BATCH, batch_id, 2);
    raw_add(r, P_REQ, D_U64, 2, 0, b_req, 16);
    raw_add(r, P_SEQ, D_I32, 2, 0, b_seq, 8);
    raw_add(r, P_POS, D_I32, 2, 0, b_pos, 8);
    raw_add(r, P_FLAGS, D_U8, 2, 0, b_flags, 2);
    raw_add(r, P_TOK, D_I32, 2, 0, b_tok, 8);
}

static void raw_pack(raw_msg *r)
{
    r->head_size = sluice__header__get_packed_size(&r->h);
    if (r->head_size > sizeof r->head) {
        fprintf(stderr, "raw header too big\n");
        exit(1);
    }
    sluice__header__pack(&r->h, r->head);
}

static void raw_send(void *tx, raw_msg *r)
{
    raw_pack(r);
    zmq_send(tx, r->head, r->head_size, r->n_frames ? ZMQ_SNDMORE : 0);
    for (int i = 0; i < r->n_frames; i++)
        zmq_send(tx, r->frame[i], r->size[i], i + 1 < r->n_frames ? ZMQ_SNDMORE : 0);
}

/* Sends the bad message then a good one: the bad one must fail naming
 * `frag`, leaving m empty, and the good one must come through intact. */
static void expect_rejected(pair *p, raw_msg *bad, const pl_wire_limits *lim, const char *frag, int line)
{
    static uint64_t next_good = 1000;
    uint64_t good = next_good++;
    raw_send(p->tx, bad);
    send_batch(p, good);
    pl_msg m;
    sl_err e = {{0}};
    int rc = pl_msg_recv(&m, p->rx, lim, &e);
    CHECKF(rc == -1, "line %d: malformed message accepted (%s)", line, p->addr);
    if (rc == 0)
        pl_msg_close(&m);
    else
        CHECK(m.hdr == NULL && m.n_frames == 0 && m.store == NULL);
    CHECKF(strstr(e.msg, frag) != NULL, "line %d: error \"%s\" lacks \"%s\"", line, e.msg, frag);
    expect_batch(p, good);
}

#define REJECT(p, r, lim, frag) expect_rejected((p), (r), (lim), (frag), __LINE__)

static void test_rejects_header(pair *p)
{
    raw_msg r;
    raw_batch(&r, 1);
    r.h.version = 2;
    REJECT(p, &r, NULL, "wrong version 2");
    raw_batch(&r, 1);
    r.h.kind = 99;
    REJECT(p, &r, NULL, "unknown message kind 99");
    raw_batch(&r, 1);
    r.h.kind = SLUICE__MSG_KIND__MSG_NONE;
    REJECT(p, &r, NULL, "unknown message kind 0");
    raw_batch(&r, 2);
    r.h.n_rows = 5;
    pl_wire_limits lim;
    pl_wire_limits_default(&lim);
    lim.max_rows = 4;
    REJECT(p, &r, &lim, "n_rows 5 exceeds the limit max_rows (4)");

    /* garbage and empty headers */
    static const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    zmq_send(p->tx, garbage, sizeof garbage, 0);
    send_batch(p, 2000);
    pl_msg m;
    sl_err e = {{0}};
    CHECK(pl_msg_recv(&m, p->rx, NULL, &e) == -1);
    CHECK_ERR_HAS(e, "is not a valid sluice.Header protobuf");
    expect_batch(p, 2000);
    zmq_send(p->tx, "", 0, 0);
    send_batch(p, 2001);
    CHECK(pl_msg_recv(&m, p->rx, NULL, &e) == -1);
    CHECK_ERR_HAS(e, "empty header frame");
    expect_batch(p, 2001);
}

static void test_rejects_payloads(pair *p)
{
    raw_msg r;
    raw_batch(&r, 3);
    r.n_frames--; /* the header lists TOKEN but its frame is missing */
    REJECT(p, &r, NULL, "frame count mismatch: the header lists 5 payloads but 4 payload frames follow");
    raw_batch(&r, 3);
    r.size[2] = 4;
    REJECT(p, &r, NULL, "payload 2 (POS): frame size mismatch: the frame holds 4 bytes, i32 x [2] needs 8");
    raw_batch(&r, 3);
    r.shape[1][0] = 3;
    r.size[1] = 12;
    REJECT(p, &r, NULL, "BATCH message (batch 3): payload 1 (SEQ) has 3 rows, but n_rows is 2");
    raw_batch(&r, 3);
    raw_add(&r, P_POS, D_I32, 2, 0, b_pos, 8);
    REJECT(p, &r, NULL, "payload 5 repeats payload kind POS (first at payload 2)");
    raw_batch(&r, 3);
    r.pay[3].kind = P_TOK; /* FLAGS replaced: TOKEN twice */
    r.pay[3].dtype = D_I32;
    r.size[3] = 8;
    r.frame[3] = b_tok;
    REJECT(p, &r, NULL, "repeats payload kind TOKEN");
    raw_init(&r, K_BATCH, 4, 2);
    raw_add(&r, P_REQ, D_U64, 2, 0, b_req, 16);
    raw_add(&r, P_SEQ, D_I32, 2, 0, b_seq, 8);
    raw_add(&r, P_POS, D_I32, 2, 0, b_pos, 8);
    raw_add(&r, P_TOK, D_I32, 2, 0, b_tok, 8);
    REJECT(p, &r, NULL, "missing required payload FLAGS");
    raw_init(&r, K_BATCH, 4, 2);
    raw_add(&r, P_REQ, D_U64, 2, 0, b_req, 16);
    raw_add(&r, P_SEQ, D_I32, 2, 0, b_seq, 8);
    raw_add(&r, P_POS, D_I32, 2, 0, b_pos, 8);
    raw_add(&r, P_FLAGS, D_U8, 2, 0, b_flags, 2);
    REJECT(p, &r, NULL, "missing required payload TOKEN or ACTIVATION");
    raw_batch(&r, 5);
    r.pay[4].kind = 42;
    REJECT(p, &r, NULL, "payload 4 has unknown kind 42");
    raw_batch(&r, 5);
    r.pay[4].dtype = 9;
    REJECT(p, &r, NULL, "payload 4 (TOKEN) has unknown dtype 9");
    raw_batch(&r, 5);
    r.pay[1].dtype = D_U64;
    r.size[1] = 16;
    r.frame[1] = b_req;
    REJECT(p, &r, NULL, "payload 1 (SEQ) has dtype u64, expected i32");
    raw_batch(&r, 5);
    r.pay[4].n_shape = 3;
    r.shape[4][1] = 1;
    r.shape[4][2] = 1;
    REJECT(p, &r, NULL, "payload 4 (TOKEN) has a 3-D shape, expected 1-D");
    raw_batch(&r, 5);
    static const float act[2 * 4] = {0};
    raw_add(&r, P_ACT, D_F32, 2, 1ull << 62, act, sizeof act);
    REJECT(p, &r, NULL, "payload 5 (ACTIVATION): f32 x [2, 4611686018427387904] overflows a size");
    raw_batch(&r, 5);
    raw_add(&r, P_ACT, D_F32, 2, 0, act, 8);
    REJECT(p, &r, NULL, "payload 5 (ACTIVATION) has a 1-D shape, expected 2-D");
}

static void test_rejects_kind_rules(pair *p)
{
    raw_msg r;
    raw_init(&r, SLUICE__MSG_KIND__MSG_ERROR, 6, 0);
    REJECT(p, &r, NULL, "ERROR message (batch 6): the error string is empty");
    raw_init(&r, SLUICE__MSG_KIND__MSG_RELEASE, 0, 0);
    REJECT(p, &r, NULL, "RELEASE message (batch 0): no seqs listed");
    int32_t seq = 1;
    raw_init(&r, SLUICE__MSG_KIND__MSG_TRUNCATE, 0, 0);
    r.h.n_seqs = 1;
    r.h.seqs = &seq;
    r.h.length = -1;
    REJECT(p, &r, NULL, "TRUNCATE message (batch 0): length -1 is negative");
    raw_init(&r, SLUICE__MSG_KIND__MSG_TOKENS, 7, 2);
    raw_add(&r, P_REQ, D_U64, 2, 0, b_req, 16);
    REJECT(p, &r, NULL, "TOKENS message (batch 7): missing required payload TOKEN");
    static const int32_t ids[6] = {0};
    static const float vals[6] = {0};
    raw_init(&r, SLUICE__MSG_KIND__MSG_LOGITS, 8, 2);
    raw_add(&r, P_REQ, D_U64, 2, 0, b_req, 16);
    raw_add(&r, P_TOPK_ID, D_I32, 2, 3, ids, 24);
    REJECT(p, &r, NULL, "missing required payload TOPK_VAL");
    raw_init(&r, SLUICE__MSG_KIND__MSG_LOGITS, 8, 2);
    raw_add(&r, P_REQ, D_U64, 2, 0, b_req, 16);
    raw_add(&r, P_TOPK_ID, D_I32, 2, 3, ids, 24);
    raw_add(&r, P_TOPK_VAL, D_F32, 1, 3, vals, 12);
    REJECT(p, &r, NULL, "TOPK_ID and TOPK_VAL shapes differ");
    raw_init(&r, SLUICE__MSG_KIND__MSG_LOGITS, 8, 2);
    raw_add(&r, P_REQ, D_U64, 2, 0, b_req, 16);
    raw_add(&r, P_LOGITS, D_F32, 3, 2, vals, 24);
    REJECT(p, &r, NULL, "payload 1 (LOGITS) has 3 rows, more than n_rows 2");
}

static void test_rejects_limits(pair *p)
{
    pl_wire_limits lim;
    pl_wire_limits_default(&lim);
    lim.max_frame_bytes = 64;
    static const float act[2 * 20] = {0};
    raw_msg r;
    /* the big frame comes first: the frames after it must be drained */
    raw_init(&r, K_BATCH, 9, 2);
    raw_add(&r, P_ACT, D_F32, 2, 20, act, sizeof act);
    raw_add(&r, P_REQ, D_U64, 2, 0, b_req, 16);
    raw_add(&r, P_SEQ, D_I32, 2, 0, b_seq, 8);
    raw_add(&r, P_POS, D_I32, 2, 0, b_pos, 8);
    raw_add(&r, P_FLAGS, D_U8, 2, 0, b_flags, 2);
    REJECT(p, &r, &lim, "payload frame 0 of 160 bytes exceeds max_frame_bytes (64)");
    pl_wire_limits_default(&lim);
    lim.max_header_bytes = 8;
    raw_batch(&r, 9);
    REJECT(p, &r, &lim, "exceeds max_header_bytes (8)");
    pl_wire_limits_default(&lim);
    lim.max_message_bytes = 100;
    raw_batch(&r, 9);
    raw_add(&r, P_ACT, D_F32, 2, 20, act, sizeof act);
    REJECT(p, &r, &lim, "exceeds max_message_bytes (100)");
    /* 20 payload frames */
    raw_batch(&r, 9);
    while (r.n_frames < 20)
        raw_add(&r, P_TOK, D_I32, 2, 0, b_tok, 8);
    REJECT(p, &r, NULL, "more than 17 frames");
}

static void test_rejects(const char *transport)
{
    pair p;
    if (open_pair(&p, transport)) {
        CHECKF(0, "cannot open %s sockets", transport);
        return;
    }
    test_rejects_header(&p);
    test_rejects_payloads(&p);
    test_rejects_kind_rules(&p);
    test_rejects_limits(&p);
    close_pair(&p);
}

/* ---- sender-side checks, typed views ---- */

static void test_send_refusals(void)
{
    pair p;
    CHECK(open_pair(&p, "inproc") == 0);
    sl_err e = {{0}};
    pl_msg m;
    pl_msg_init(&m, K_BATCH, 30, 3);
    CHECK(pl_msg_add(&m, P_REQ, D_U64, 3, 0, b_req, NULL, NULL, &e) == 0);
    CHECK(pl_msg_add(&m, P_TOK, D_I32, 3, 0, b_tok, NULL, NULL, &e) == 0);
    CHECK(pl_msg_send(&m, p.tx, 0, &e) == -1);
    CHECK_ERR_HAS(e, "refusing to send");
    CHECK_ERR_HAS(e, "missing required payload SEQ");
    CHECK(pl_msg_add(&m, P_TOK, D_I32, 3, 0, b_tok, NULL, NULL, &e) == -1);
    CHECK_ERR_HAS(e, "payload TOKEN added twice");
    CHECK(pl_msg_add(&m, P_ACT, D_F32, 3, 0, b_act, NULL, NULL, &e) == -1);
    CHECK_ERR_HAS(e, "has a 1-D shape, expected 2-D");
    CHECK(pl_msg_add(&m, P_SEQ, D_I32, 3, 0, NULL, NULL, NULL, &e) == -1);
    CHECK_ERR_HAS(e, "payload SEQ has 12 bytes but no data");
    CHECK(pl_msg_add(&m, P_ACT, D_F32, 3, UINT64_MAX / 2, b_act, NULL, NULL, &e) == -1);
    CHECK_ERR_HAS(e, "overflows");
    pl_msg_close(&m);
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_ERROR, 31, 0);
    CHECK(pl_msg_send(&m, p.tx, 0, &e) == -1);
    CHECK_ERR_HAS(e, "the error string is empty");
    pl_msg_close(&m);
    zmq_pollitem_t item = {p.rx, 0, ZMQ_POLLIN, 0};
    CHECK(zmq_poll(&item, 1, 50) == 0); /* nothing refused went out */
    close_pair(&p);
}

static void test_views(void)
{
    pair p;
    CHECK(open_pair(&p, "inproc") == 0);
    send_batch(&p, 40);
    pl_msg m;
    sl_err e = {{0}};
    if (recv_ok(&p, &m, NULL) == 0) {
        float out[15];
        CHECK(pl_msg_i32(&m, P_TOK, 4, &e) == NULL);
        CHECK_ERR_HAS(e, "BATCH message (batch 40): TOKEN payload has 3 rows, expected 4");
        CHECK(pl_msg_u64(&m, P_SEQ, 3, &e) == NULL);
        CHECK_ERR_HAS(e, "SEQ payload is i32, expected u64");
        CHECK(pl_msg_i32(&m, P_LOGITS, 3, &e) == NULL);
        CHECK_ERR_HAS(e, "has no LOGITS payload");
        CHECK(pl_msg_i32(&m, 77, 3, &e) == NULL);
        CHECK_ERR_HAS(e, "has no unknown payload");
        CHECK(pl_msg_f32(&m, P_ACT, 3, 4, out, &e) == -1);
        CHECK_ERR_HAS(e, "ACTIVATION payload has 5 columns, expected 4");
        CHECK(pl_msg_f32(&m, P_TOK, 3, 0, out, &e) == -1);
        CHECK_ERR_HAS(e, "TOKEN payload is i32, expected f32 or bf16");
        pl_msg_close(&m);
    }
    /* empty payloads are present (non-NULL) views */
    pl_msg_init(&m, K_BATCH, 41, 0);
    CHECK(pl_msg_add(&m, P_REQ, D_U64, 0, 0, NULL, NULL, NULL, &e) == 0);
    CHECK(pl_msg_add(&m, P_SEQ, D_I32, 0, 0, NULL, NULL, NULL, &e) == 0);
    CHECK(pl_msg_add(&m, P_POS, D_I32, 0, 0, NULL, NULL, NULL, &e) == 0);
    CHECK(pl_msg_add(&m, P_FLAGS, D_U8, 0, 0, NULL, NULL, NULL, &e) == 0);
    CHECK(pl_msg_add(&m, P_TOK, D_I32, 0, 0, NULL, NULL, NULL, &e) == 0);
    send_ok(&p, &m);
    if (recv_ok(&p, &m, NULL) == 0) {
        CHECK(m.hdr->n_rows == 0 && m.n_frames == 5);
        CHECK(pl_msg_i32(&m, P_TOK, 0, &e) != NULL && pl_msg_u8(&m, P_FLAGS, 0, &e) != NULL);
        CHECK(pl_msg_i32(&m, P_TOPK_ID, 0, &e) == NULL);
        pl_msg_close(&m);
    }
    close_pair(&p);
    CHECK(strcmp(pl_msg_kind_name(SLUICE__MSG_KIND__MSG_BATCH), "BATCH") == 0);
    CHECK(strcmp(pl_msg_kind_name(SLUICE__MSG_KIND__MSG_TRUNCATE), "TRUNCATE") == 0);
    CHECK(strcmp(pl_msg_kind_name(SLUICE__MSG_KIND__MSG_SHUTDOWN), "SHUTDOWN") == 0);
    CHECK(strcmp(pl_msg_kind_name(0), "NONE") == 0);
    CHECK(strcmp(pl_msg_kind_name(5), "unknown") == 0 && strcmp(pl_msg_kind_name(-1), "unknown") == 0);
}

/* ---- bf16 and alignment ---- */

static void test_bf16(const char *transport)
{
    /* bf16 is the top half of an f32: these bit patterns are written out by hand */
    static const uint16_t bits[2 * 3] = {0x3FC0, 0xC000, 0x3E00, 0x4049, 0x8000, 0x7F80};
    const float want[6] = {1.5f, -2.0f, 0.125f, 3.140625f, -0.0f, INFINITY};
    pair p;
    CHECK(open_pair(&p, transport) == 0);
    pl_msg m;
    sl_err e = {{0}};
    pl_msg_init(&m, K_BATCH, 50, 2);
    add_rows(&m, 2);
    CHECK(pl_msg_add(&m, P_ACT, D_BF16, 2, 3, bits, NULL, NULL, &e) == 0);
    send_ok(&p, &m);
    if (recv_ok(&p, &m, NULL) == 0) {
        float out[6];
        CHECK(m.dtype[P_ACT] == D_BF16 && m.size[P_ACT] == 12);
        CHECKF(pl_msg_f32(&m, P_ACT, 2, 3, out, &e) == 0, "%s", e.msg);
        CHECK(memcmp(out, want, sizeof out) == 0); /* bit-exact, -0 included */
        CHECK(pl_msg_f32(&m, P_ACT, 2, 2, out, &e) == -1);
        pl_msg_close(&m);
    }
    close_pair(&p);
}

static void test_misaligned_decode(void)
{
    raw_msg r;
    static const uint16_t bits[2 * 2] = {0x3F80, 0x4000, 0xBF80, 0x4040};
    raw_batch(&r, 60);
    raw_add(&r, P_ACT, D_BF16, 2, 2, bits, sizeof bits);
    raw_pack(&r);
    /* every frame at an odd address inside one buffer */
    _Alignas(16) uint8_t buf[512];
    const void *frames[RAW_MAX];
    size_t sizes[RAW_MAX];
    size_t off = 1;
    memcpy(buf + off, r.head, r.head_size);
    frames[0] = buf + off;
    sizes[0] = r.head_size;
    off += r.head_size + 1;
    for (int i = 0; i < r.n_frames; i++) {
        off |= 1;
        memcpy(buf + off, r.frame[i], r.size[i]);
        frames[i + 1] = buf + off;
        sizes[i + 1] = r.size[i];
        off += r.size[i];
    }
    pl_msg m;
    sl_err e = {{0}};
    CHECKF(pl_msg_decode(&m, frames, sizes, r.n_frames + 1, NULL, &e) == 0, "%s", e.msg);
    if (m.hdr) {
        const uint64_t *req = pl_msg_u64(&m, P_REQ, 2, &e);
        const int32_t *pos = pl_msg_i32(&m, P_POS, 2, &e);
        CHECK(req && (uintptr_t)req % 8 == 0 && req[0] == b_req[0] && req[1] == b_req[1]);
        CHECK(pos && (uintptr_t)pos % 4 == 0 && pos[1] == b_pos[1]);
        CHECK((const void *)req != frames[1]); /* a copy, since the frame could not be read in place */
        /* u8 needs no alignment: read in place */
        CHECK(m.data[P_FLAGS] == frames[4]);
        CHECK((uintptr_t)m.data[P_ACT] % 2 == 0);
        float out[4];
        CHECK(pl_msg_f32(&m, P_ACT, 2, 2, out, &e) == 0 && out[0] == 1 && out[1] == 2 && out[2] == -1 && out[3] == 3);
        pl_msg_close(&m);
    }
    /* aligned frames are read in place */
    const void *aligned[RAW_MAX];
    aligned[0] = r.head;
    for (int i = 0; i < r.n_frames; i++)
        aligned[i + 1] = r.frame[i];
    size_t asizes[RAW_MAX] = {r.head_size};
    memcpy(asizes + 1, r.size, (size_t)r.n_frames * sizeof *asizes);
    CHECKF(pl_msg_decode(&m, aligned, asizes, r.n_frames + 1, NULL, &e) == 0, "%s", e.msg);
    CHECK(m.data[P_REQ] == (const void *)b_req && m.data[P_ACT] == (const void *)bits);
    pl_msg_close(&m);
    CHECK(pl_msg_decode(&m, aligned, asizes, 0, NULL, &e) == -1);
    CHECK_ERR_HAS(e, "empty message (no header frame)");
    CHECK(m.hdr == NULL);
}

/* Over tcp, frames can land anywhere in ZeroMQ's receive buffer: the views
 * must still be aligned and correct. Odd-length frames push the later ones
 * off alignment when they share a buffer. */
static void test_misaligned_tcp(void)
{
    pair p;
    CHECK(open_pair(&p, "tcp") == 0);
    enum { N = 301 };
    static uint64_t req[N];
    static int32_t seq[N], pos[N];
    static uint8_t flags[N];
    static float act[N * 3];
    for (int i = 0; i < N; i++) {
        req[i] = 1000000007ull * (uint64_t)i;
        seq[i] = i % 7;
        pos[i] = -i;
        flags[i] = (uint8_t)(i & 1);
        for (int j = 0; j < 3; j++)
            act[i * 3 + j] = (float)i + 0.25f * (float)j;
    }
    sl_err e = {{0}};
    for (int round = 0; round < 4; round++) {
        pl_msg m;
        pl_msg_init(&m, K_BATCH, 70 + (uint64_t)round, N - (uint32_t)round);
        uint64_t n = N - (uint64_t)round;
        CHECK(pl_msg_add(&m, P_FLAGS, D_U8, n, 0, flags, NULL, NULL, &e) == 0 &&
              pl_msg_add(&m, P_REQ, D_U64, n, 0, req, NULL, NULL, &e) == 0 &&
              pl_msg_add(&m, P_SEQ, D_I32, n, 0, seq, NULL, NULL, &e) == 0 &&
              pl_msg_add(&m, P_POS, D_I32, n, 0, pos, NULL, NULL, &e) == 0 &&
              pl_msg_add(&m, P_ACT, D_F32, n, 3, act, NULL, NULL, &e) == 0);
        send_ok(&p, &m);
    }
    for (int round = 0; round < 4; round++) {
        pl_msg m;
        if (recv_ok(&p, &m, NULL))
            continue;
        uint64_t n = N - (uint64_t)round;
        const uint64_t *r = pl_msg_u64(&m, P_REQ, n, &e);
        const int32_t *s = pl_msg_i32(&m, P_SEQ, n, &e), *q = pl_msg_i32(&m, P_POS, n, &e);
        CHECKF(r && s && q, "%s", e.msg);
        if (r && s && q) {
            CHECK((uintptr_t)r % 8 == 0 && (uintptr_t)s % 4 == 0 && (uintptr_t)q % 4 == 0);
            CHECK((uintptr_t)m.data[P_ACT] % 4 == 0);
            CHECK(memcmp(r, req, n * 8) == 0 && memcmp(s, seq, n * 4) == 0 && memcmp(q, pos, n * 4) == 0);
            CHECK(memcmp(m.data[P_ACT], act, n * 12) == 0);
        }
        pl_msg_close(&m);
    }
    close_pair(&p);
}

int main(void)
{
    zctx = zmq_ctx_new();
    static const char *const transports[] = {"inproc", "ipc", "tcp"};
    for (int t = 0; t < 3; t++) {
        test_round_trip(transports[t]);
        test_rejects(transports[t]);
        test_bf16(transports[t]);
    }
    test_zero_copy();
    test_ownership_without_send();
    test_send_refusals();
    test_views();
    test_misaligned_decode();
    test_misaligned_tcp();
    zmq_ctx_term(zctx);
    return test_finish("test_wire");
}
