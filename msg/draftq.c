#include "msg/draftq.h"

#include <math.h>
#include <string.h>

/* A row's probabilities may sum to 1 only within rounding: float entries
 * normalised in double, then rounded one by one. */
#define DRAFTQ_SUM_TOL 1e-3

int pl_draftq_entries(int n, int n_vocab)
{
    /* a sparse entry is an id and a probability: 8 bytes against 4 */
    return 2 * (int64_t)n >= n_vocab ? n_vocab : n;
}

/* Checks the counts and fills the row offsets; returns the entries of
 * all rows and of the sparse rows. */
static int read_counts(pl_draftq *q, uint64_t *n_prob, uint64_t *n_id, sl_err *err)
{
    uint64_t p = 0, i = 0;
    for (uint32_t r = 0; r < q->n_rows; r++) {
        int32_t c = q->count[r];
        if (c < 0 || c > q->n_vocab)
            return sl_fail(err, "draft row %u: %d entries, outside 0..%d (the vocabulary)", r, c,
                           q->n_vocab);
        q->prob_at[r] = p;
        q->id_at[r] = i;
        p += (uint64_t)c;
        if (c != q->n_vocab)
            i += (uint64_t)c;
    }
    *n_prob = p;
    *n_id = i;
    return 0;
}

static int check_row(const pl_draftq *q, uint32_t r, sl_err *err)
{
    int32_t c = q->count[r];
    const float *p = q->prob + q->prob_at[r];
    /* a one-hot row (c 0) has no ids, and no row may have any: q->id NULL */
    const int32_t *id = c == q->n_vocab || c == 0 ? NULL : q->id + q->id_at[r];
    double sum = 0.0;
    for (int32_t j = 0; j < c; j++) {
        if (!isfinite(p[j]) || p[j] < 0.0f || p[j] > 1.0f)
            return sl_fail(err, "draft row %u, entry %d: probability %g outside [0, 1]", r, j,
                           (double)p[j]);
        sum += p[j];
        if (!id)
            continue;
        if (id[j] < 0 || id[j] >= q->n_vocab)
            return sl_fail(err, "draft row %u, entry %d: token %d outside the vocabulary of %d", r, j,
                           id[j], q->n_vocab);
        if (j > 0 && id[j] <= id[j - 1])
            return sl_fail(err, "draft row %u, entry %d: token %d after %d (ids must ascend, once each)",
                           r, j, id[j], id[j - 1]);
    }
    if (c > 0 && fabs(sum - 1.0) > DRAFTQ_SUM_TOL)
        return sl_fail(err, "draft row %u: probabilities sum to %g, not 1", r, sum);
    return 0;
}

int pl_draftq_view(const pl_msg *m, uint32_t n_drafted, int n_vocab, uint64_t *starts,
                   pl_draftq *q, sl_err *err)
{
    memset(q, 0, sizeof *q);
    q->n_vocab = n_vocab;
    if (!pl_msg_has(m, SLUICE__PAYLOAD_KIND__PL_DRAFT_Q_COUNT))
        return 0;
    sl_err why;
    q->count = pl_msg_i32(m, SLUICE__PAYLOAD_KIND__PL_DRAFT_Q_COUNT, n_drafted, &why);
    if (!q->count)
        return sl_fail(err, "draft distributions: %u counts expected, one a drafted row (%s)",
                       n_drafted, why.msg);
    q->n_rows = n_drafted;
    q->prob_at = starts;
    q->id_at = starts + n_drafted;
    uint64_t n_prob = 0, n_id = 0;
    if (read_counts(q, &n_prob, &n_id, err))
        return -1;
    q->prob = pl_msg_f32_view(m, SLUICE__PAYLOAD_KIND__PL_DRAFT_PROBS, n_prob, 0, &why);
    if (!q->prob)
        return sl_fail(err, "draft distributions: the counts say %llu probabilities (%s)",
                       (unsigned long long)n_prob, why.msg);
    bool has_id = pl_msg_has(m, SLUICE__PAYLOAD_KIND__PL_DRAFT_Q_ID);
    q->id = has_id ? pl_msg_i32(m, SLUICE__PAYLOAD_KIND__PL_DRAFT_Q_ID, n_id, &why) : NULL;
    if (n_id && !q->id)
        return sl_fail(err, "draft distributions: the counts say %llu token ids (%s)",
                       (unsigned long long)n_id, has_id ? why.msg : "none sent");
    if (!n_id && has_id && !q->id)
        return sl_fail(err, "draft distributions: token ids sent where no row is sparse (%s)", why.msg);
    for (uint32_t r = 0; r < q->n_rows; r++)
        if (check_row(q, r, err))
            return -1;
    return 0;
}

void pl_draftq_dense(const pl_draftq *q, uint32_t r, int32_t drafted, float *dense)
{
    int32_t c = r < q->n_rows ? q->count[r] : 0;
    if (c == q->n_vocab) {
        memcpy(dense, q->prob + q->prob_at[r], (size_t)c * sizeof *dense);
        return;
    }
    memset(dense, 0, (size_t)q->n_vocab * sizeof *dense);
    if (c == 0) {
        dense[drafted] = 1.0f;
        return;
    }
    const float *p = q->prob + q->prob_at[r];
    const int32_t *id = q->id + q->id_at[r];
    for (int32_t j = 0; j < c; j++)
        dense[id[j]] = p[j];
}

float pl_draftq_prob(const pl_draftq *q, uint32_t r, int32_t drafted, int32_t t)
{
    int32_t c = r < q->n_rows ? q->count[r] : 0;
    if (c == 0)
        return t == drafted ? 1.0f : 0.0f;
    const float *p = q->prob + q->prob_at[r];
    if (c == q->n_vocab)
        return p[t];
    const int32_t *id = q->id + q->id_at[r];
    int32_t lo = 0, hi = c; /* ids ascend: binary search */
    while (lo < hi) {
        int32_t mid = lo + (hi - lo) / 2;
        if (id[mid] < t)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < c && id[lo] == t ? p[lo] : 0.0f;
}
