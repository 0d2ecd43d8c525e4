/* Draft distributions on the wire (msg/draftq.h): sparse, dense and
 * one-hot rows read back as the dense rows they stand for, and every
 * malformed payload refused with an error naming the row and entry. */
#include <math.h>

#include "msg/draftq.h"
#include "tests/test.h"

#define V 16

typedef struct qmsg {
    pl_msg m;
    uint64_t starts[16];
    pl_draftq q;
    sl_err err;
} qmsg;

/* A message with the three payloads (n_id < 0: no ids payload). */
static int view(qmsg *t, const int32_t *count, int n_rows, const float *prob, int n_prob,
                const int32_t *id, int n_id)
{
    pl_msg_init(&t->m, SLUICE__MSG_KIND__MSG_LOGITS, 1, 8);
    sl_err e;
    CHECK(pl_msg_add(&t->m, SLUICE__PAYLOAD_KIND__PL_DRAFT_Q_COUNT, SLUICE__DTYPE__DT_I32,
                     (uint64_t)n_rows, 0, count, NULL, NULL, &e) == 0);
    CHECK(pl_msg_add(&t->m, SLUICE__PAYLOAD_KIND__PL_DRAFT_PROBS, SLUICE__DTYPE__DT_F32,
                     (uint64_t)n_prob, 0, prob, NULL, NULL, &e) == 0);
    if (n_id >= 0)
        CHECK(pl_msg_add(&t->m, SLUICE__PAYLOAD_KIND__PL_DRAFT_Q_ID, SLUICE__DTYPE__DT_I32,
                         (uint64_t)n_id, 0, id, NULL, NULL, &e) == 0);
    int rc = pl_draftq_view(&t->m, (uint32_t)n_rows, V, t->starts, &t->q, &t->err);
    return rc;
}

static void test_rows(void)
{
    /* row 0 sparse {3: .5, 7: .25, 12: .25}; row 1 one-hot; row 2 dense */
    int32_t count[3] = {3, 0, V}, id[3] = {3, 7, 12};
    float prob[3 + V] = {0.5f, 0.25f, 0.25f};
    for (int t = 0; t < V; t++)
        prob[3 + t] = 1.0f / V;
    qmsg t;
    CHECKF(view(&t, count, 3, prob, 3 + V, id, 3) == 0, "%s", t.err.msg);
    float dense[V];
    pl_draftq_dense(&t.q, 0, 3, dense);
    for (int i = 0; i < V; i++)
        CHECK(dense[i] == (i == 3 ? 0.5f : i == 7 || i == 12 ? 0.25f : 0.0f));
    CHECK(pl_draftq_prob(&t.q, 0, 3, 12) == 0.25f && pl_draftq_prob(&t.q, 0, 3, 8) == 0.0f);
    pl_draftq_dense(&t.q, 1, 9, dense);
    for (int i = 0; i < V; i++)
        CHECK(dense[i] == (i == 9 ? 1.0f : 0.0f));
    CHECK(pl_draftq_prob(&t.q, 1, 9, 9) == 1.0f && pl_draftq_prob(&t.q, 1, 9, 3) == 0.0f);
    pl_draftq_dense(&t.q, 2, 0, dense);
    for (int i = 0; i < V; i++)
        CHECK(dense[i] == 1.0f / V);
    pl_msg_close(&t.m);

    /* no payloads at all: every row one-hot */
    pl_msg m;
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_LOGITS, 1, 8);
    pl_draftq q;
    uint64_t starts[4];
    sl_err err;
    CHECK(pl_draftq_view(&m, 2, V, starts, &q, &err) == 0 && q.n_rows == 0);
    CHECK(pl_draftq_prob(&q, 1, 5, 5) == 1.0f);
    pl_msg_close(&m);

    /* a support of half the vocabulary or more goes dense: never more bytes */
    CHECK(pl_draftq_entries(3, V) == 3 && pl_draftq_entries(7, V) == 7);
    CHECK(pl_draftq_entries(8, V) == V && pl_draftq_entries(V, V) == V);
    CHECK(pl_draftq_entries(40, 262144) == 40);
}

/* One malformed case: the view must fail with an error holding frag. */
static void refused(const int32_t *count, int n_rows, const float *prob, int n_prob, const int32_t *id,
                    int n_id, const char *frag)
{
    qmsg t;
    CHECKF(view(&t, count, n_rows, prob, n_prob, id, n_id) == -1, "accepted, expected '%s'", frag);
    CHECK_ERR_HAS(t.err, frag);
    pl_msg_close(&t.m);
}

static void test_refused(void)
{
    float p2[2] = {0.5f, 0.5f};
    int32_t two[1] = {2};
    refused(two, 1, p2, 2, (int32_t[]){4, 4}, 2, "ids must ascend");
    refused(two, 1, p2, 2, (int32_t[]){5, 4}, 2, "token 4 after 5");
    refused(two, 1, p2, 2, (int32_t[]){4, V}, 2, "outside the vocabulary");
    refused(two, 1, p2, 2, (int32_t[]){-1, 4}, 2, "outside the vocabulary");
    refused(two, 1, (float[]){0.5f, NAN}, 2, (int32_t[]){1, 4}, 2, "probability nan");
    refused(two, 1, (float[]){0.5f, 0.4f}, 2, (int32_t[]){1, 4}, 2, "sum to 0.9");
    refused(two, 1, (float[]){1.5f, -0.5f}, 2, (int32_t[]){1, 4}, 2, "outside [0, 1]");
    refused((int32_t[]){V + 1}, 1, p2, 2, NULL, -1, "outside 0..16");
    refused((int32_t[]){-2}, 1, p2, 2, NULL, -1, "outside 0..16");
    /* sizes: the counts decide how many probabilities and ids there are */
    refused(two, 1, (float[]){0.5f, 0.25f, 0.25f}, 3, (int32_t[]){1, 4}, 2, "say 2 probabilities");
    refused(two, 1, p2, 2, (int32_t[]){1, 4, 6}, 3, "say 2 token ids");
    refused(two, 1, p2, 2, NULL, -1, "none sent");
    /* a count for every drafted row */
    qmsg t;
    int32_t counts[2] = {2, 0};
    pl_msg_init(&t.m, SLUICE__MSG_KIND__MSG_LOGITS, 1, 8);
    CHECK(pl_msg_add(&t.m, SLUICE__PAYLOAD_KIND__PL_DRAFT_Q_COUNT, SLUICE__DTYPE__DT_I32, 2, 0, counts,
                     NULL, NULL, &t.err) == 0);
    CHECK(pl_draftq_view(&t.m, 3, V, t.starts, &t.q, &t.err) == -1);
    CHECK_ERR_HAS(t.err, "3 counts expected");
    pl_msg_close(&t.m);
}

int main(void)
{
    test_rows();
    test_refused();
    return test_finish("test_draftq");
}
