/* The fence against stale batches: after a stage is lost the driver's new
 * messages carry a fence (the last batch id sent before the loss), every
 * stage host passes it on, and a host drops any batch at or below the
 * highest fence it has seen, however late a cut-off stage flushes it.
 * Real hosts on real inproc ZeroMQ sockets: a chain of two recording stages
 * (one thread) feeding a single-stage host, feeding a sink. */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "catch_msg.h"
#include "msg/msg.h"
#include "pipeline/host.h"
#include "pipeline/wire.h"
#include "stages/stage.h"
#include "test.h"

#define MAX_SEEN 32

typedef struct {
    uint64_t seen[MAX_SEEN];
    atomic_int n;
} record;

static record rec[3];

/* A one-row batch as the driver sends it (its payloads point at static
 * rows: no free function). */
static const uint64_t row_req = 1;
static const int32_t row_seq = 0, row_pos = 3, row_tok = 7;
static const uint8_t row_flags = 0;

static void init_batch(pl_msg *m, uint64_t id)
{
    sl_err err;
    pl_msg_init(m, SLUICE__MSG_KIND__MSG_BATCH, id, 1);
    CHECKF(add_batch_rows(m, 1, &row_req, &row_seq, &row_pos, &row_tok, &row_flags, &err) == 0, "building batch %llu: %s", (unsigned long long)id, err.msg);
}

/* Records the batch id, then sends a fresh batch with the same id on (as a
 * real stage builds its output: a new header, not the one it received). */
static int record_process(sl_stage *s, pl_msg *in, const sl_emit *out, sl_err *err)
{
    record *r = s->impl;
    int n = atomic_load(&r->n);
    if (n < MAX_SEEN) {
        r->seen[n] = in->hdr->batch_id;
        atomic_store(&r->n, n + 1);
    }
    pl_msg m;
    init_batch(&m, in->hdr->batch_id);
    return out->send(out->ctx, &m, err);
}

static void record_destroy(sl_stage *s) { (void)s; }

static sl_stage stages[3];

static void make_stage(int i)
{
    memset(&stages[i], 0, sizeof stages[i]);
    snprintf(stages[i].name, sizeof stages[i].name, "record%d", i);
    stages[i].process = record_process;
    stages[i].destroy = record_destroy;
    stages[i].impl = &rec[i];
    stages[i].index = i;
}

static void send_batch(void *push, uint64_t id, uint64_t fence)
{
    pl_msg m;
    sl_err err;
    init_batch(&m, id);
    pl_msg_raise_fence(&m, fence);
    CHECKF(pl_msg_send(&m, push, 0, &err) == 0, "send batch %llu: %s", (unsigned long long)id, err.msg);
    pl_msg_close(&m);
}

/* The next batch at the sink (its id and fence), or 0 after 5 s. */
static uint64_t sink_next(void *pull, uint64_t *fence)
{
    pl_wire_limits lim;
    pl_wire_limits_default(&lim);
    zmq_pollitem_t it = {pull, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, 5000) <= 0)
        return 0;
    pl_msg m;
    sl_err err;
    if (pl_msg_recv(&m, pull, &lim, &err))
        return 0;
    uint64_t id = m.hdr->batch_id;
    *fence = m.hdr->fence;
    pl_msg_close(&m);
    return id;
}

static void expect_seen(int i, const uint64_t *want, int n)
{
    int got = atomic_load(&rec[i].n);
    bool same = got == n;
    for (int k = 0; same && k < n; k++)
        same = rec[i].seen[k] == want[k];
    char text[256] = "";
    for (int k = 0; k < got && k < MAX_SEEN; k++)
        snprintf(text + strlen(text), sizeof text - strlen(text), " %llu", (unsigned long long)rec[i].seen[k]);
    CHECKF(same, "stage %d computed batches%s", i, text);
}

int main(void)
{
    void *zctx = zmq_ctx_new();
    for (int i = 0; i < 3; i++)
        make_stage(i);
    void *sink = zmq_socket(zctx, ZMQ_PULL);
    CHECK(zmq_bind(sink, "inproc://fence-sink") == 0);
    pl_host *chain[2] = {NULL, NULL}, *single = NULL;
    sl_err err;
    sl_stage *two[2] = {&stages[0], &stages[1]};
    CHECKF(pl_host_start(&single, zctx, &stages[2], "inproc://fence-b", "inproc://fence-sink", 1, &err) == 0,
           "start host b: %s", err.msg);
    CHECKF(pl_host_start_chain(chain, 2, zctx, two, "inproc://fence-a", "inproc://fence-b", 1, -1, NULL, &err) == 0,
           "start chain a: %s", err.msg);
    void *to_a = zmq_socket(zctx, ZMQ_PUSH);
    void *to_b = zmq_socket(zctx, ZMQ_PUSH); /* a cut-off stage flushing into b */
    CHECK(zmq_connect(to_a, "inproc://fence-a") == 0);
    CHECK(zmq_connect(to_b, "inproc://fence-b") == 0);

    /* before any loss: 1 and 2 go through */
    send_batch(to_a, 1, 0);
    send_batch(to_a, 2, 0);
    for (uint64_t want = 1; want <= 2; want++) {
        uint64_t f = 99, id = sink_next(sink, &f);
        CHECKF(id == want && f == 0, "sink: batch %llu (fence %llu), expected %llu (0)", (unsigned long long)id,
               (unsigned long long)f, (unsigned long long)want);
    }
    /* the driver lost a stage after batch 4 and sends 5 with fence 4; 3
     * and 4 come late from upstream, then 6 (a stage after the lost one may
     * drop any batch at or below the fence: the driver has forgotten them) */
    const uint64_t ids[] = {5, 3, 4, 6};
    const uint64_t fences[] = {4, 0, 0, 4};
    for (int i = 0; i < 4; i++)
        send_batch(to_a, ids[i], fences[i]);
    for (uint64_t want = 5; want <= 6; want++) {
        uint64_t f = 99, id = sink_next(sink, &f);
        /* the fence travels on: b (and anything after it) learns it from a's output */
        CHECKF(id == want && f == 4, "sink: batch %llu (fence %llu), expected %llu (4)", (unsigned long long)id,
               (unsigned long long)f, (unsigned long long)want);
    }
    /* a stale batch reaching b straight from a cut-off stage (no fence on
     * it): b has seen fence 4 and drops it; batch 7 still flows */
    send_batch(to_b, 4, 0);
    send_batch(to_a, 7, 0);
    uint64_t f = 0, id = sink_next(sink, &f);
    CHECKF(id == 7 && f == 4, "sink: after a stale batch into b, got batch %llu (fence %llu), expected 7 (4)",
           (unsigned long long)id, (unsigned long long)f);
    const uint64_t want_all[] = {1, 2, 5, 6, 7};
    expect_seen(0, want_all, 5);
    expect_seen(1, want_all, 5);
    expect_seen(2, want_all, 5);
    pl_host_stats st;
    pl_host_stats_get(single, &st);
    CHECKF(st.dropped == 1, "host b counted %llu dropped, expected 1", (unsigned long long)st.dropped);
    pl_host_stats_get(chain[0], &st);
    CHECKF(st.dropped == 2, "chain a counted %llu dropped, expected 2", (unsigned long long)st.dropped);

    zmq_close(to_a);
    zmq_close(to_b);
    pl_host_stop(chain[0]);
    pl_host_stop(chain[1]);
    pl_host_stop(single);
    zmq_close(sink);
    zmq_ctx_term(zctx);
    return test_finish("test_host_fence");
}
