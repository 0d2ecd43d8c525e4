/* Attention of one query position against a range of cached keys: tiled,
 * with an online softmax (flash attention), for a group of query heads that
 * share one KV head (GQA), so each key and value row is read once for the
 * whole group.
 *
 * The keys [j0, j1) are cut into spans at fixed absolute positions (every
 * SL_ATTN_SPAN keys from position 0), each span reduced to a partial result
 * (running max, sum of exponentials, unnormalised output), and the partials
 * combined in span order. Spans can run on different threads; because
 * their bounds and the combining order depend only on the query's position
 * and window, a query's output has the same bits whatever its batch and
 * however many threads run. */
#ifndef SLUICE_ATTN_H
#define SLUICE_ATTN_H

#include <stdint.h>

#include "kernels/types.h"

#define SL_ATTN_SPAN 128 /* keys a span covers */
#define SL_ATTN_TILE 64  /* keys scored at once inside a span */

typedef struct sl_attn_q {
    const float *q;      /* n_group heads, q_stride floats apart */
    int64_t q_stride;
    const void *k, *v;   /* the KV head's row of position pos0 */
    int64_t pos0;        /* 0, or where a ring of slots starts over */
    int64_t row_bytes;   /* bytes between positions */
    sl_type kv_type;     /* F32, F16, BF16 or Q8_0 rows of head_dim */
    int head_dim, n_group;
    float scale;         /* applied to q.k */
    float softcap;       /* > 0: score = cap * tanh(score / cap) */
} sl_attn_q;

/* The same query with float keys and values, k and v at the first key of a
 * span (what the span kernels take). */
typedef struct sl_attn_f32 {
    const float *q;
    int64_t q_stride;
    const float *k, *v;
    int64_t kv_stride;   /* floats between positions */
    int head_dim, n_group;
    float scale, softcap;
} sl_attn_f32;

/* One span's partial result for every head of the group: m[g], l[g] and
 * o[g * head_dim ..] (o not yet divided by l). */
typedef struct sl_attn_part {
    float *m, *l, *o;
} sl_attn_part;

/* Spans touching [j0, j1): their count and the bounds of span s. */
int64_t sl_attn_n_spans(int64_t j0, int64_t j1);
void sl_attn_span_bounds(int64_t j0, int64_t j1, int64_t s, int64_t *s0, int64_t *s1);

/* Partial result over keys [s0, s1) (non-empty, inside one ring block):
 * float rows are read in place, other types decoded a span at a time. */
void sl_attn_span(const sl_attn_q *a, int64_t s0, int64_t s1, sl_attn_part *part);

/* Tokens sl_attn_span_multi takes at once for a group of n_group heads
 * (1: it runs the tokens one by one). */
int sl_attn_multi_tokens(int head_dim, int n_group);

/* Partial results of n_tok queries of one KV head (a's fields but q: token
 * t's heads at q[t], a->q_stride floats apart) over keys [s0, s1[t]): one
 * start for all, each its own end (non-empty, inside one ring block). Each
 * token's part[t] has the bits sl_attn_span gives that token alone, however
 * many tokens share the call: the tokens share the loads of key and value
 * rows, never arithmetic. */
void sl_attn_span_multi(const sl_attn_q *a, const float *const *q, int n_tok, int64_t s0,
                        const int64_t *s1, sl_attn_part *part);

/* out[g * out_stride ..] = the combination of n_parts partials, in order. */
void sl_attn_combine(const sl_attn_part *parts, int64_t n_parts, int head_dim, int n_group,
                     float *out, int64_t out_stride);

/* Floats one partial takes, and a partial laid out in mem. */
int64_t sl_attn_part_floats(int head_dim, int n_group);
sl_attn_part sl_attn_part_at(float *mem, int n_group);

/* Whole attention of one query over [j0, j1) on this thread: the same spans
 * and combination as a parallel split, so the same bits. work holds
 * sl_attn_n_spans(j0, j1) * sl_attn_part_floats(head_dim, n_group) floats. */
void sl_attn(const sl_attn_q *a, int64_t j0, int64_t j1, float *out, int64_t out_stride,
             float *work);

/* The plain definition (scores, softmax, weighted sum in double): the
 * oracle the tests hold the tiled paths to. */
void sl_attn_naive(const sl_attn_q *a, int64_t j0, int64_t j1, float *out, int64_t out_stride);

#endif
