#include "model/forward.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/attn.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "kernels/quant.h"
#include "kernels/types.h"
#include "util/clock.h"
#include "util/pool.h"

/* RoPE angles of one rotation (base, scale, dims, frequency factors) at
 * every position of the batch, made by the first layer that rotates so and
 * read by the others: a token's angles cost a pow, a cos and a sin per pair
 * of dims (~19 us a layer for Gemma 3's 256), the same in every layer of
 * one rotation. Gemma 3 has two (local and global layers). */
#define ROPE_SETS 4
typedef struct rope_set {
    float base, scale;
    int dim;
    const float *factors;
    bool ready;   /* holds this batch's angles */
    float *cs;    /* [T][dim / 2] cosines, then as many sines */
    int64_t cap;  /* floats */
} rope_set;

struct sl_fwd {
    const sl_model *m;
    int max_tokens;
    /* activations of the batch, rows of the widest size each step needs */
    float *xn;      /* [T][d_model] normed input of a block */
    float *q;       /* [T][q_dim] */
    float *k;       /* [T][kv_dim] */
    float *v;       /* [T][kv_dim] */
    float *attn;    /* [T][q_dim] attention output */
    float *o;       /* [T][d_model] block output */
    float *gate;    /* [T][d_ff] */
    float *up;      /* [T][d_ff] */
    /* per-layer embeddings (Gemma 4); NULL without */
    float *ple;     /* [T][part layers][n_embd_per_layer] inputs of the part's layers */
    float *ple_g;   /* [T][n_embd_per_layer] gate of the per-layer path */
    const float *ple_in;  /* this batch's per-layer inputs: ple, or the batch's own */
    int64_t ple_stride;   /* floats between rows (tokens) of ple_in */
    int64_t ple_layer_stride; /* floats between layers' slices of ple_in */
    /* attention: one partial result per (token, KV head, span), and the
     * list of those units; grown to the largest batch x context seen */
    float *parts;
    int64_t parts_cap;   /* floats */
    int64_t *units;      /* pair offsets, then the units' run order, then counts */
    int64_t units_cap;
    rope_set rope[ROPE_SETS];
    /* per-op times, added to when set (sl_fwd_set_times) */
    sl_fwd_times *times;
    /* xn already holds this layer's normed input: the previous layer's
     * residual made it (residual_norm) */
    bool xn_ready;
    /* per-sequence next position, for batch validation */
    int *next_pos;
    int next_pos_cap;
};

static float *alloc_rows(int rows, int64_t cols)
{
    size_t bytes = (size_t)rows * (size_t)cols * sizeof(float);
    return aligned_alloc(64, (bytes + 63) & ~(size_t)63);
}

int sl_fwd_new(sl_fwd **out, const sl_model *m, int max_tokens, sl_err *err)
{
    *out = NULL;
    if (max_tokens < 1)
        return sl_fail(err, "forward: batch capacity must be at least 1 (got %d)", max_tokens);
    const sl_config *c = &m->cfg;
    sl_fwd *f = calloc(1, sizeof *f);
    if (!f)
        return sl_fail(err, "forward: out of memory");
    f->m = m;
    f->max_tokens = max_tokens;
    int64_t q_dim = sl_config_max_q_dim(c), kv_dim = sl_config_max_kv_dim(c);
    f->xn = alloc_rows(max_tokens, c->d_model);
    f->q = alloc_rows(max_tokens, q_dim);
    f->k = alloc_rows(max_tokens, kv_dim);
    f->v = alloc_rows(max_tokens, kv_dim);
    f->attn = alloc_rows(max_tokens, q_dim);
    f->o = alloc_rows(max_tokens, c->d_model);
    f->gate = alloc_rows(max_tokens, c->d_ff);
    f->up = alloc_rows(max_tokens, c->d_ff);
    int64_t ple_cols = (int64_t)(m->part.l1 - m->part.l0) * c->n_embd_per_layer;
    if (ple_cols > 0) {
        f->ple = alloc_rows(max_tokens, ple_cols);
        f->ple_g = alloc_rows(max_tokens, c->n_embd_per_layer);
    }
    if (!f->xn || !f->q || !f->k || !f->v || !f->attn || !f->o || !f->gate || !f->up ||
        (ple_cols > 0 && (!f->ple || !f->ple_g))) {
        sl_fwd_free(f);
        return sl_fail(err, "forward: out of memory for a batch of %d tokens", max_tokens);
    }
    *out = f;
    return 0;
}

void sl_fwd_free(sl_fwd *f)
{
    if (!f)
        return;
    free(f->xn);
    free(f->q);
    free(f->k);
    free(f->v);
    free(f->attn);
    free(f->o);
    free(f->gate);
    free(f->up);
    free(f->ple);
    free(f->ple_g);
    free(f->parts);
    free(f->units);
    free(f->next_pos);
    for (int i = 0; i < ROPE_SETS; i++)
        free(f->rope[i].cs);
    free(f);
}

int sl_fwd_max_tokens(const sl_fwd *f) { return f->max_tokens; }

void sl_fwd_set_times(sl_fwd *f, sl_fwd_times *t) { f->times = t; }

/* Pool grain of a loop worth splitting only above min_n items. */
static int64_t above(int64_t n, int64_t min_n) { return n > min_n ? 1 : n; }

/* The pool's work of a pass over n rows of floats, reading `reads` rows of
 * `width` each a row (util/pool.h: bytes read; these ops multiply little):
 * below the pool's minimum, such a pass runs on the calling thread. */
static int64_t rows_work(int64_t n, int64_t width, int reads)
{
    return sl_pool_work(n * width * (int64_t)sizeof(float) * reads, 0);
}

/* A snapshot of the counters an op's profile is the difference of. */
typedef struct op_mark {
    double t, quant;
    sl_pool_counters pool;
} op_mark;

static op_mark op_mark_now(void)
{
    return (op_mark){sl_now_s(), sl_matmul_quant_s(), sl_pool_thread_counters()};
}

/* Adds what happened since m to op's profile and its wall time to *cls. */
static void op_add(sl_fwd_times *t, double *cls, sl_fwd_op op, double bytes, const op_mark *m)
{
    op_mark e = op_mark_now();
    sl_op_prof *p = &t->op[op];
    *cls += e.t - m->t;
    p->s += e.t - m->t;
    p->bytes += bytes;
    p->calls += (double)(e.pool.calls - m->pool.calls);
    p->wait += (double)(e.pool.wait_ns - m->pool.wait_ns) * 1e-9;
    p->busy += (double)(e.pool.busy_ns - m->pool.busy_ns) * 1e-9;
    p->quant += e.quant - m->quant;
}

/* Runs stmt, adding its wall time to times->field and its profile to
 * times->op[op] (bytes: what it reads) when profiling. */
#define TIMED_OP(f, field, op, bytes, stmt)                                                   \
    do {                                                                                      \
        op_mark m_ = (f)->times ? op_mark_now() : (op_mark){0};                               \
        stmt;                                                                                 \
        if ((f)->times)                                                                       \
            op_add((f)->times, &(f)->times->field, op, (bytes), &m_);                         \
    } while (0)

static const char *const op_names[SL_OP_N] = {
    "attn_norm", "qkv", "qk_prep", "attention", "o", "attn_res", "ffn_norm", "gate_up",
    "act", "down", "ffn_res", "ple_out", "head_norm", "head", "softcap"};

const char *sl_fwd_op_name(sl_fwd_op op)
{
    return op >= 0 && op < SL_OP_N ? op_names[op] : "?";
}

static double w_bytes(const sl_weight *w)
{
    return w->data ? (double)sl_row_bytes(w->type, w->n_in) * (double)w->n_out : 0;
}

typedef struct embed_args {
    const sl_model *m;
    const int32_t *tokens;
    float *x;
} embed_args;

static void embed_range(void *arg, int64_t i0, int64_t i1)
{
    const embed_args *a = arg;
    const sl_config *c = &a->m->cfg;
    size_t row_bytes = sl_row_bytes(a->m->tok_embd.type, c->d_model);
    const uint8_t *base = a->m->tok_embd.data;
    for (int64_t i = i0; i < i1; i++) {
        float *row = a->x + (size_t)i * c->d_model;
        sl_dequantize_row(a->m->tok_embd.type, base + (size_t)a->tokens[i] * row_bytes, row,
                          c->d_model);
        if (c->embed_scale != 1.0f)
            sl_scale(row, c->d_model, c->embed_scale);
    }
}

int sl_embed(const sl_model *m, const int32_t *tokens, int n, float *x, sl_err *err)
{
    const sl_config *c = &m->cfg;
    if (!m->tok_embd.data)
        return sl_fail(err, "embed: this model part has no token embedding");
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->n_vocab)
            return sl_fail(err, "embed: token id %d at batch row %d is outside the vocabulary "
                           "of %d", tokens[i], i, c->n_vocab);
    embed_args a = {m, tokens, x};
    sl_pool_for_work(n, 1, rows_work(n, c->d_model, 1), embed_range, &a);
    return 0;
}

/* Positions of each sequence must continue its cache without gaps, in order. */
static int check_batch(sl_fwd *f, sl_kv *kv, const sl_batch *b, sl_err *err)
{
    int max_seqs = sl_kv_max_seqs(kv);
    if (b->n_tokens < 1 || b->n_tokens > f->max_tokens)
        return sl_fail(err, "forward: batch of %d tokens (capacity %d)", b->n_tokens, f->max_tokens);
    /* a ring of slots holds its window plus one batch: more tokens of one
     * sequence would overwrite keys earlier tokens of the batch still need */
    if (b->n_tokens > sl_kv_max_batch(kv))
        return sl_fail(err, "forward: batch of %d tokens, but the KV cache was sized for batches "
                       "of at most %d", b->n_tokens, sl_kv_max_batch(kv));
    if (f->next_pos_cap < max_seqs) {
        int *p = realloc(f->next_pos, (size_t)max_seqs * sizeof *p);
        if (!p)
            return sl_fail(err, "forward: out of memory");
        f->next_pos = p;
        f->next_pos_cap = max_seqs;
    }
    for (int i = 0; i < b->n_tokens; i++) {
        int s = b->seq[i];
        if (s < 0 || s >= max_seqs)
            return sl_fail(err, "forward: batch row %d names sequence %d (cache holds %d)", i, s,
                           max_seqs);
        f->next_pos[s] = sl_kv_len(kv, s);
    }
    for (int i = 0; i < b->n_tokens; i++) {
        int s = b->seq[i];
        if (b->pos[i] != f->next_pos[s])
            return sl_fail(err, "forward: batch row %d: sequence %d position %d, expected %d",
                           i, s, b->pos[i], f->next_pos[s]);
        if (b->pos[i] >= sl_kv_n_ctx(kv))
            return sl_fail(err, "forward: sequence %d position %d exceeds the context of %d",
                           s, b->pos[i], sl_kv_n_ctx(kv));
        f->next_pos[s]++;
    }
    return 0;
}

static int grow(void **buf, int64_t *cap, int64_t need, size_t elem, sl_err *err)
{
    if (*cap >= need)
        return 0;
    int64_t n = need + need / 4;
    void *p = realloc(*buf, (size_t)n * elem);
    if (!p)
        return sl_fail(err, "forward: out of memory for attention work (%lld bytes)",
                       (long long)((size_t)n * elem));
    *buf = p;
    *cap = n;
    return 0;
}

typedef struct norm_args {
    float *y;
    const float *x, *w;
    int64_t d;
    float eps;
} norm_args;

static void norm_range(void *arg, int64_t i0, int64_t i1)
{
    const norm_args *a = arg;
    for (int64_t i = i0; i < i1; i++)
        sl_rmsnorm(a->y + (size_t)i * a->d, a->x + (size_t)i * a->d, a->w, a->d, a->eps);
}

static void norm_rows(float *y, const float *x, const float *w, int n, int64_t d, float eps)
{
    norm_args a = {y, x, w, d, eps};
    sl_pool_for_work(n, 1, rows_work(n, d, 1), norm_range, &a);
}

static sl_mm_job job_w(const sl_weight *w, float *y)
{
    return (sl_mm_job){w->type, w->data, w->packed, w->n_out, y, w->n_out};
}

/* Matrices reading the same rows x (all with n_in columns) in one call. */
static void matmul_same_x(const sl_mm_job *jobs, int n_jobs, const float *x, int n, int64_t n_in)
{
    sl_matmul_jobs(jobs, n_jobs, n_in, x, n);
}

static void matmul_w(const sl_weight *w, const float *x, int n, float *y)
{
    sl_matmul_packed(w->type, w->data, w->packed, w->n_out, w->n_in, x, n, y, w->n_out);
}

/* Tells the matmul layer which weights the next matmul call reads, before
 * the ops between (sl_matmul_prefetch: in a decode step each thread then
 * prefetches the start of its part while it would wait). The outputs are
 * not touched. */
static void prefetch_w(const sl_weight *w, int n)
{
    if (!w->data)
        return;
    sl_mm_job j = job_w(w, NULL);
    sl_matmul_prefetch(&j, 1, w->n_in, n);
}

/* The q/k/v call of layer il (the jobs layer_step makes). */
static int qkv_jobs(const sl_layer_weights *w, sl_fwd *f, sl_mm_job *jobs)
{
    jobs[0] = job_w(&w->wq, f->q);
    jobs[1] = job_w(&w->wk, f->k);
    jobs[2] = job_w(&w->wv, f->v);
    return w->wk.data ? (w->wv.data ? 3 : 2) : 1;
}

/* The call that follows layer il's FFN in this part: the next layer's q/k/v,
 * or the head after the last layer. */
static void prefetch_after_layer(sl_fwd *f, int il, int n)
{
    const sl_model *m = f->m;
    if (il + 1 < m->part.l1) {
        sl_mm_job jobs[3];
        int n_jobs = qkv_jobs(&m->layer[il + 1], f, jobs);
        sl_matmul_prefetch(jobs, n_jobs, m->cfg.d_model, n);
    } else if (m->part.head) {
        prefetch_w(&m->output, n);
    }
}

/* Keys and values of one token into the position's slot, in the cache's type. */
static void kv_store(sl_kv *kv, const sl_layer_cfg *L, int il, int seq, int32_t pos, const float *k,
                     const float *v)
{
    int64_t slot = pos % sl_kv_slots(kv, il), kv_dim = (int64_t)L->n_kv_head * L->head_dim;
    int64_t rb = sl_kv_row_bytes(kv, il), hb = sl_kv_head_bytes(kv, il);
    uint8_t *kd = (uint8_t *)sl_kv_k(kv, seq, il) + slot * rb;
    uint8_t *vd = (uint8_t *)sl_kv_v(kv, seq, il) + slot * rb;
    if (sl_kv_type(kv) == SL_TYPE_F32) {
        memcpy(kd, k, (size_t)kv_dim * sizeof(float));
        memcpy(vd, v, (size_t)kv_dim * sizeof(float));
    } else {
        for (int h = 0; h < L->n_kv_head; h++) {
            sl_quantize_row(sl_kv_type(kv), k + (int64_t)h * L->head_dim, kd + h * hb, L->head_dim);
            sl_quantize_row(sl_kv_type(kv), v + (int64_t)h * L->head_dim, vd + h * hb, L->head_dim);
        }
    }
}

/* q/k (and Gemma 4's v) norms and RoPE per token, then keys and values into
 * the cache; a layer reading another layer's cache only prepares q. */
typedef struct qk_args {
    sl_fwd *f;
    sl_kv *kv;
    const sl_batch *b;
    int il;
    const rope_set *rs; /* the layer's angles, or NULL: each token makes its own */
    bool fill;          /* rs is this batch's first use: each token writes its row */
} qk_args;

/* Token i's angles: from the batch's set, or made into it (fill), or made
 * into cs/sn when there is no set. */
static void rope_angles(const qk_args *a, int64_t i, float *cs, float *sn, const float **c_out,
                        const float **s_out)
{
    const sl_layer_cfg *L = &a->f->m->cfg.layer[a->il];
    int half = L->rope_dim / 2;
    if (a->rs) {
        cs = a->rs->cs + i * 2 * half;
        sn = cs + half;
    }
    *c_out = cs;
    *s_out = sn;
    if (a->rs && !a->fill)
        return;
    if (L->rope_freq_factors)
        sl_rope_angles_ff(cs, sn, L->rope_dim, a->b->pos[i], L->rope_base, L->rope_freq_scale,
                          a->f->m->rope_freqs);
    else
        sl_rope_angles(cs, sn, L->rope_dim, a->b->pos[i], L->rope_base, L->rope_freq_scale);
}

static void qk_range(void *arg, int64_t i0, int64_t i1)
{
    const qk_args *a = arg;
    sl_fwd *f = a->f;
    sl_kv *kv = a->kv;
    const sl_batch *b = a->b;
    int il = a->il;
    const sl_config *c = &f->m->cfg;
    const sl_layer_cfg *L = &c->layer[il];
    const sl_layer_weights *w = &f->m->layer[il];
    int hd = L->head_dim;
    bool own_kv = L->kv_src < 0;
    int64_t q_dim = (int64_t)L->n_head * hd, kv_dim = (int64_t)L->n_kv_head * hd;
    for (int64_t i = i0; i < i1; i++) {
        float *q = f->q + (size_t)i * q_dim, *k = f->k + (size_t)i * kv_dim;
        float *v = f->v + (size_t)i * kv_dim;
        if (own_kv && L->v_is_k)
            memcpy(v, k, (size_t)kv_dim * sizeof(float));
        if (w->q_norm)
            for (int h = 0; h < L->n_head; h++)
                sl_rmsnorm(q + (int64_t)h * hd, q + (int64_t)h * hd, w->q_norm, hd, c->norm_eps);
        if (w->k_norm)
            for (int h = 0; h < L->n_kv_head; h++)
                sl_rmsnorm(k + (int64_t)h * hd, k + (int64_t)h * hd, w->k_norm, hd, c->norm_eps);
        if (own_kv && c->v_norm)
            for (int h = 0; h < L->n_kv_head; h++)
                sl_rmsnorm(v + (int64_t)h * hd, v + (int64_t)h * hd, NULL, hd, c->norm_eps);
        float cs_own[L->rope_dim / 2 + 1], sn_own[L->rope_dim / 2 + 1];
        const float *cs, *sn;
        rope_angles(a, i, cs_own, sn_own, &cs, &sn);
        sl_rope_apply(q, L->n_head, hd, L->rope_dim, cs, sn, c->rope_neox);
        if (!own_kv)
            continue;
        sl_rope_apply(k, L->n_kv_head, hd, L->rope_dim, cs, sn, c->rope_neox);
        kv_store(kv, L, il, b->seq[i], b->pos[i], k, v);
    }
}

/* The set holding layer L's rotation for n tokens: made this batch, or
 * claimed (one not made this batch) and sized; NULL when none is free or
 * memory is short (the tokens then make their own angles). Runs between a
 * region's ops, on its calling thread. */
static rope_set *rope_set_for(sl_fwd *f, const sl_layer_cfg *L, int n)
{
    const float *factors = L->rope_freq_factors ? f->m->rope_freqs : NULL;
    rope_set *free_set = NULL;
    for (int i = 0; i < ROPE_SETS; i++) {
        rope_set *r = &f->rope[i];
        if (r->ready && r->base == L->rope_base && r->scale == L->rope_freq_scale &&
            r->dim == L->rope_dim && r->factors == factors)
            return r;
        if (!r->ready && !free_set)
            free_set = r;
    }
    int64_t need = (int64_t)n * (L->rope_dim / 2) * 2;
    if (!free_set || L->rope_dim < 2 || grow((void **)&free_set->cs, &free_set->cap, need,
                                            sizeof(float), NULL))
        return NULL;
    *free_set = (rope_set){L->rope_base, L->rope_freq_scale, L->rope_dim, factors, false,
                           free_set->cs, free_set->cap};
    return free_set;
}

static void qk_prepare(sl_fwd *f, sl_kv *kv, const sl_batch *b, int il)
{
    rope_set *rs = rope_set_for(f, &f->m->cfg.layer[il], b->n_tokens);
    qk_args a = {f, kv, b, il, rs, rs && !rs->ready};
    const sl_layer_cfg *L = &f->m->cfg.layer[il];
    sl_pool_for_work(b->n_tokens, 1,
                     rows_work(b->n_tokens, (int64_t)(L->n_head + L->n_kv_head) * L->head_dim, 1),
                     qk_range, &a);
    if (rs)
        rs->ready = true;
}

/* Keys a token at pos sees in layer L: [j0, pos + 1). */
static int64_t first_key(const sl_layer_cfg *L, int64_t pos)
{
    return L->sliding_window > 0 && pos - L->sliding_window + 1 > 0 ? pos - L->sliding_window + 1
                                                                    : 0;
}

typedef struct attn_args {
    sl_fwd *f;
    sl_kv *kv;
    const sl_batch *b;
    int il;
    int64_t pairs, total;
    const int64_t *claim; /* block_claims: claim c is groups claim[c] .. claim[c+1]-1 */
} attn_args;

/* The span sp of pair pr: its token, KV head and keys. */
static void unit_keys(const attn_args *A, int64_t pr, int64_t sp, int *i, int *kvh, int64_t *s0,
                      int64_t *s1)
{
    const sl_layer_cfg *L = &A->f->m->cfg.layer[A->il];
    *i = (int)(pr / L->n_kv_head);
    *kvh = (int)(pr % L->n_kv_head);
    int64_t pos = A->b->pos[*i];
    sl_attn_span_bounds(first_key(L, pos), pos + 1, sp, s0, s1);
}

/* Groups [g0, g1) of the batch's run order (order[u] = pair << 20 | span
 * of the pair; the units of pair p keep their partials at first[p] ..
 * first[p+1]-1; group g is units group[g] .. group[g+1]-1: one block of
 * keys, KV head, sequence and first key, taken in one sl_attn_span_multi
 * call). */
static void span_range(void *arg, int64_t g0, int64_t g1)
{
    const attn_args *A = arg;
    sl_fwd *f = A->f;
    const sl_batch *b = A->b;
    const sl_config *c = &f->m->cfg;
    const sl_layer_cfg *L = &c->layer[A->il];
    int hd = L->head_dim, group = L->n_head / L->n_kv_head;
    int64_t q_dim = (int64_t)L->n_head * hd, slots = sl_kv_slots(A->kv, A->il);
    int64_t rb = sl_kv_row_bytes(A->kv, A->il), hb = sl_kv_head_bytes(A->kv, A->il);
    int64_t pf = sl_attn_part_floats(hd, group);
    const int64_t *first = f->units, *order = f->units + A->pairs + 1;
    const int64_t *grp = order + A->total;
    for (int64_t g = g0; g < g1; g++) {
        enum { MAX_TOK = 16 };
        const float *q[MAX_TOK];
        int64_t s0 = 0, s1[MAX_TOK];
        sl_attn_part part[MAX_TOK];
        int n = (int)(grp[g + 1] - grp[g]), i = 0, kvh = 0;
        for (int t = 0; t < n; t++) {
            int64_t pr = order[grp[g] + t] >> 20, sp = order[grp[g] + t] & ((1 << 20) - 1);
            unit_keys(A, pr, sp, &i, &kvh, &s0, &s1[t]);
            q[t] = f->q + (size_t)i * q_dim + (int64_t)kvh * group * hd;
            part[t] = sl_attn_part_at(f->parts + (first[pr] + sp) * pf, group);
        }
        /* spans never cross a multiple of the slot count (a multiple
         * of the span), so a span's keys sit in one run of slots */
        sl_attn_q a = {.q = q[0],
                       .q_stride = hd,
                       .k = (const uint8_t *)sl_kv_k(A->kv, b->seq[i], A->il) + kvh * hb,
                       .v = (const uint8_t *)sl_kv_v(A->kv, b->seq[i], A->il) + kvh * hb,
                       .pos0 = s0 - s0 % slots,
                       .row_bytes = rb,
                       .kv_type = sl_kv_type(A->kv),
                       .head_dim = hd,
                       .n_group = group,
                       .scale = L->attn_scale,
                       .softcap = c->attn_softcap};
        if (n == 1)
            sl_attn_span(&a, s0, s1[0], &part[0]);
        else
            sl_attn_span_multi(&a, q, n, s0, s1, part);
    }
}

/* Cuts the run order into groups (grp[0 .. count], returned): runs of up
 * to `most` units in a row of one block of keys, KV head, sequence and
 * first key (the tokens of a prefill or verification that see that block
 * from its start). Which tokens share a group changes no bits. */
static int64_t group_units(const attn_args *A, int most, int64_t *grp)
{
    const int64_t *order = A->f->units + A->pairs + 1;
    int64_t count = 0, s0p = -1, s1, s0;
    int ip = -1, kvhp = -1, i, kvh;
    for (int64_t u = 0; u < A->total; u++) {
        unit_keys(A, order[u] >> 20, order[u] & ((1 << 20) - 1), &i, &kvh, &s0, &s1);
        bool join = count > 0 && u - grp[count - 1] < most && s0 == s0p && kvh == kvhp &&
                    A->b->seq[i] == A->b->seq[ip];
        if (!join)
            grp[count++] = u;
        s0p = s0;
        ip = i;
        kvhp = kvh;
    }
    grp[count] = A->total;
    return count;
}

/* Cuts the groups into claims (cl[0 .. count], returned): the runs of
 * groups of one block of keys, KV head and sequence, so one thread takes
 * all of a few tokens' units of a block and reads its keys and values from
 * memory once, the other tokens' from its own L2. Claimed a group at a
 * time, the two threads of a 5-token verification each took a pair of
 * tokens of the same block and both read it from memory (Gemma 3 1B at
 * 576 positions, f32 cache: 3.2x a decode step's attention). */
static int64_t block_claims(const attn_args *A, const int64_t *grp, int64_t n_groups, int64_t *cl)
{
    const int64_t *order = A->f->units + A->pairs + 1;
    int64_t count = 0, blk_p = -1, s0, s1;
    int ip = -1, kvhp = -1, i, kvh;
    for (int64_t g = 0; g < n_groups; g++) {
        int64_t u = grp[g];
        unit_keys(A, order[u] >> 20, order[u] & ((1 << 20) - 1), &i, &kvh, &s0, &s1);
        int64_t blk = s0 / SL_ATTN_SPAN;
        if (!(count > 0 && blk == blk_p && kvh == kvhp && A->b->seq[i] == A->b->seq[ip]))
            cl[count++] = g;
        blk_p = blk;
        ip = i;
        kvhp = kvh;
    }
    cl[count] = n_groups;
    return count;
}

static void claim_range(void *arg, int64_t c0, int64_t c1)
{
    const attn_args *A = arg;
    for (int64_t c = c0; c < c1; c++)
        span_range(arg, A->claim[c], A->claim[c + 1]);
}

/* Batches of up to this many tokens claim their attention by blocks
 * (block_claims) when there are as many blocks as threads; larger ones (a
 * prefill: many groups a block) a group at a time. With a single block
 * (5 tokens at position 80) the block claim left the other thread idle:
 * attention 0.61-0.68 -> 0.69-0.80 ms a step; at 256 (three blocks)
 * 1.62-1.66 -> 1.40-1.43. */
#define ATTN_BLOCK_CLAIM_TOKENS 16

/* Each (token, KV head) pair's partials combined in span order. */
static void combine_range(void *arg, int64_t p0, int64_t p1)
{
    const attn_args *A = arg;
    sl_fwd *f = A->f;
    const sl_layer_cfg *L = &f->m->cfg.layer[A->il];
    int hd = L->head_dim, group = L->n_head / L->n_kv_head;
    int64_t q_dim = (int64_t)L->n_head * hd, pf = sl_attn_part_floats(hd, group);
    const int64_t *first = f->units;
    for (int64_t p = p0; p < p1; p++) {
        int i = (int)(p / L->n_kv_head), kvh = (int)(p % L->n_kv_head);
        int64_t ns = first[p + 1] - first[p];
        sl_attn_part parts[ns > 0 ? ns : 1];
        for (int64_t s = 0; s < ns; s++)
            parts[s] = sl_attn_part_at(f->parts + (first[p] + s) * pf, group);
        sl_attn_combine(parts, ns, hd, group,
                        f->attn + (size_t)i * q_dim + (int64_t)kvh * group * hd, hd);
    }
}

/* Bytes of keys and values the batch's attention in layer il reads (each
 * token's keys; tokens of one block share reads, counted once each here). */
static double kv_bytes_seen(const sl_fwd *f, sl_kv *kv, const sl_batch *b, int il)
{
    const sl_layer_cfg *L = &f->m->cfg.layer[il];
    double keys = 0;
    for (int i = 0; i < b->n_tokens; i++)
        keys += (double)(b->pos[i] + 1 - first_key(L, b->pos[i]));
    return 2.0 * keys * (double)sl_kv_row_bytes(kv, il);
}

/* Flash attention over the cache (kernels/attn.h): every (token, KV head)
 * pair is cut into spans of keys at fixed positions; all spans of the batch
 * run in parallel, then each pair's partials are combined in span order.
 * Bounds and order depend only on each token's position, so the result is
 * the same whatever the batch and thread count.
 *
 * The spans run ordered by their block of keys (absolute position / span,
 * then KV head; stable, so in batch order within one): the tokens of a
 * verification step (or a prefill) that see one block take it one after
 * another, mostly on one thread, and read its keys and values from memory
 * once, then from cache. In the pairs' order each token streamed the whole
 * context again (a 5-token step of Gemma 3 1B at 576 positions spent 2.6x a
 * decode step's attention). Only when each unit runs changes, not what it
 * computes. */
static int attention(sl_fwd *f, sl_kv *kv, const sl_batch *b, int il, sl_err *err)
{
    const sl_layer_cfg *L = &f->m->cfg.layer[il];
    int n = b->n_tokens, group = L->n_head / L->n_kv_head, nkv = L->n_kv_head;
    int64_t pairs = (int64_t)n * nkv, pf = sl_attn_part_floats(L->head_dim, group);
    int64_t total = 0, max_pos = 0, keys_seen = 0;
    for (int i = 0; i < n; i++)
        max_pos = b->pos[i] > max_pos ? b->pos[i] : max_pos;
    for (int i = 0; i < n; i++) {
        total += sl_attn_n_spans(first_key(L, b->pos[i]), b->pos[i] + 1) * nkv;
        keys_seen += b->pos[i] + 1 - first_key(L, b->pos[i]);
    }
    /* run-order keys: block of keys, then KV head */
    int64_t keys = (max_pos / SL_ATTN_SPAN + 1) * nkv;
    /* pair offsets, run order, counts of run-order keys (then, reused,
     * the groups: at most one a unit, plus the end), the groups' claims
     * (block_claims: at most one a group, plus the end) */
    int64_t cnt_len = keys + 1 > total + 1 ? keys + 1 : total + 1;
    if (grow((void **)&f->units, &f->units_cap, pairs + 1 + total + cnt_len + total + 1,
             sizeof(int64_t), err))
        return -1;
    int64_t *first = f->units, *order = first + pairs + 1, *count = order + total;
    for (int64_t k = 0; k <= keys; k++)
        count[k] = 0;
    total = 0;
    for (int64_t p = 0; p < pairs; p++) {
        int64_t pos = b->pos[p / nkv], j0 = first_key(L, pos), ns = sl_attn_n_spans(j0, pos + 1);
        first[p] = total; /* first partial of pair p */
        total += ns;
        for (int64_t sp = 0; sp < ns; sp++)
            count[(j0 / SL_ATTN_SPAN + sp) * nkv + p % nkv + 1]++;
    }
    first[pairs] = total;
    for (int64_t k = 0; k < keys; k++) /* count[k]: where key k's units start */
        count[k + 1] += count[k];
    for (int64_t p = 0; p < pairs; p++) {
        int64_t pos = b->pos[p / nkv], j0 = first_key(L, pos), ns = first[p + 1] - first[p];
        for (int64_t sp = 0; sp < ns; sp++)
            order[count[(j0 / SL_ATTN_SPAN + sp) * nkv + p % nkv]++] = p << 20 | sp;
    }
    if (grow((void **)&f->parts, &f->parts_cap, total * pf, sizeof(float), err))
        return -1;
    attn_args a = {f, kv, b, il, pairs, total, NULL};
    /* a verification's tokens (up to ATTN_BLOCK_CLAIM_TOKENS) see a block
     * in one call where the kernel takes them; a prefill's calls keep 8
     * queries (many groups a block already, and units of that size) */
    int most = sl_attn_multi_tokens(L->head_dim, group);
    if (n > ATTN_BLOCK_CLAIM_TOKENS && most > 8 / group)
        most = 8 / group > 1 ? 8 / group : 1;
    int64_t n_groups = group_units(&a, most < 16 ? most : 16, order + total);
    int64_t *claims = order + total + cnt_len, n_claims = 0;
    if (n <= ATTN_BLOCK_CLAIM_TOKENS) {
        n_claims = block_claims(&a, order + total, n_groups, claims);
        /* fewer blocks than threads (a short context): the groups, so
         * every thread has some */
        a.claim = n_claims >= sl_pool_current_threads() ? claims : NULL;
    }
    /* the keys and values read, and each query head's multiply-adds with
     * them; the combination goes with the spans (a small fraction of their
     * work, and where they ran its partials are in cache) */
    int64_t kv_bytes = keys_seen * nkv * 2 * sl_kv_head_bytes(kv, il);
    int64_t work = sl_pool_work(kv_bytes, keys_seen * L->n_head * L->head_dim * 2);
    bool split = total > 1 && sl_pool_worth(work);
    if (split && a.claim)
        sl_pool_for_each(n_claims, 1, claim_range, &a);
    else if (split)
        sl_pool_for_each(n_groups, 1, span_range, &a);
    else
        sl_pool_for(n_groups, n_groups, span_range, &a);
    sl_pool_for(pairs, split ? 1 : pairs, combine_range, &a);
    return 0;
}

typedef struct rows_args {
    sl_fwd *f;
    float *x;
    const float *w;
    int64_t d;
    bool norm;          /* residual_norm: also xn = RMSNorm(x) with nw */
    const float *nw;
} rows_args;

static void residual_range(void *arg, int64_t i0, int64_t i1)
{
    const rows_args *a = arg;
    const sl_config *c = &a->f->m->cfg;
    int64_t d = c->d_model;
    for (int64_t i = i0; i < i1; i++) {
        float *o = a->f->o + (size_t)i * d, *x = a->x + (size_t)i * d;
        if (a->w)
            sl_rmsnorm(o, o, a->w, d, c->norm_eps);
        sl_add(x, o, d);
        if (a->norm)
            sl_rmsnorm(a->f->xn + (size_t)i * d, x, a->nw, d, c->norm_eps);
    }
}

static void residual(sl_fwd *f, float *x, const float *post_norm, int n)
{
    rows_args a = {f, x, post_norm, 0, false, NULL};
    sl_pool_for_work(n, 1, rows_work(n, f->m->cfg.d_model, 2), residual_range, &a);
}

/* x += RMSNorm(o), then xn = RMSNorm(x) with the next block's norm, row by
 * row in one pass: the ops of residual and norm_rows in their order, so
 * the same bits, and one pass (and, where a pass is split, one barrier)
 * fewer between the blocks. */
static void residual_norm(sl_fwd *f, float *x, const float *post_norm, const float *next_norm,
                          int n)
{
    rows_args a = {f, x, post_norm, 0, true, next_norm};
    sl_pool_for_work(n, 1, rows_work(n, f->m->cfg.d_model, 3), residual_range, &a);
}

/* gate = act(gate) * up, a token per thread, rows of d_ff */
static void activation_range(void *arg, int64_t i0, int64_t i1)
{
    const rows_args *a = arg;
    const sl_config *c = &a->f->m->cfg;
    int64_t d_ff = a->d;
    for (int64_t i = i0; i < i1; i++) {
        float *g = a->f->gate + (size_t)i * d_ff;
        const float *u = a->f->up + (size_t)i * d_ff;
        if (c->act == SL_ACT_GELU_TANH)
            sl_gelu_tanh_mul(g, u, d_ff);
        else
            sl_silu_mul(g, u, d_ff);
    }
}

static void activation(sl_fwd *f, int n, int64_t d_ff)
{
    rows_args a = {f, NULL, NULL, d_ff, false, NULL};
    sl_pool_for_work(n, 1, rows_work(n, d_ff, 2), activation_range, &a);
}

/* The FFN block of layer il, its input normed into xn already (the
 * attention block's residual_norm). */
static void ffn(sl_fwd *f, int il, float *x, int n)
{
    const sl_config *c = &f->m->cfg;
    const sl_model *m = f->m;
    const sl_layer_weights *w = &m->layer[il];
    sl_mm_job gate_up[2] = {job_w(&w->w_gate, f->gate), job_w(&w->w_up, f->up)};
    TIMED_OP(f, matmul, SL_OP_GATE_UP, w_bytes(&w->w_gate) + w_bytes(&w->w_up),
             matmul_same_x(gate_up, 2, f->xn, n, c->d_model));
    if (n == 1) { /* a decode step: the rows apart (a token is one pool task) */
        prefetch_w(&w->w_down, n);
        TIMED_OP(f, elementwise, SL_OP_ACT, 0, activation(f, n, c->layer[il].d_ff));
        TIMED_OP(f, matmul, SL_OP_DOWN, w_bytes(&w->w_down),
                 matmul_w(&w->w_down, f->gate, n, f->o));
    } else {
        /* act(gate) * up made token by token as the down projection
         * quantises its activations: the same bits, one pass and one
         * barrier fewer (timed as the down matmul) */
        const sl_weight *wd = &w->w_down;
        sl_glu_fn glu = c->act == SL_ACT_GELU_TANH ? sl_gelu_tanh_mul_to : sl_silu_mul_to;
        /* a verification step's threads wait at the end of its rows'
         * pass: each prefetches the start of its part (a larger batch's
         * call does not split by parts and ignores it) */
        prefetch_w(wd, n);
        TIMED_OP(f, matmul, SL_OP_DOWN, w_bytes(wd),
                 sl_matmul_glu(wd->type, wd->data, wd->packed, wd->n_out, wd->n_in, f->gate,
                               f->up, glu, n, f->o, wd->n_out));
    }
    /* the next layer's input norm goes with the residual when nothing
     * else (Gemma 4's per-layer path, an output scale) changes x between */
    bool next = il + 1 < m->part.l1 && !w->ple_gate.data && !w->out_scale;
    prefetch_after_layer(f, il, n);
    if (next)
        TIMED_OP(f, elementwise, SL_OP_FFN_RES, 0,
                 residual_norm(f, x, w->post_ffn_norm, m->layer[il + 1].attn_norm, n));
    else
        TIMED_OP(f, elementwise, SL_OP_FFN_RES, 0, residual(f, x, w->post_ffn_norm, n));
    f->xn_ready = next;
}

#define PLE_CHUNK 256 /* floats dequantised at a time: whole blocks of every type */

/* out = (out + tok * ts) * is over n elements (restrict lets the compiler
 * vectorise it; the same arithmetic in every placement keeps the result
 * bit-identical). */
static void ple_combine(float *restrict out, const float *restrict tok, int64_t n, float ts,
                        float is)
{
    for (int64_t e = 0; e < n; e++)
        out[e] = (out[e] + tok[e] * ts) * is;
}

typedef struct ple_args {
    const sl_model *m;
    const int32_t *tokens;
    float *proj, *out;
    int64_t row_stride, layer_stride;
} ple_args;

/* (token, layer) slices [u0, u1). */
static void ple_range(void *arg, int64_t u0, int64_t u1)
{
    const ple_args *a = arg;
    const sl_model *m = a->m;
    const sl_config *c = &m->cfg;
    int nl = m->ple_l1 - m->ple_l0;
    int64_t pl = c->n_embd_per_layer, cols = (int64_t)nl * pl;
    const sl_weight *t = &m->ple_tok_embd;
    size_t row_bytes = sl_row_bytes(t->type, t->n_in);
    size_t col0 = sl_row_bytes(t->type, (int64_t)m->ple_l0 * pl);
    size_t slice_bytes = sl_row_bytes(t->type, pl);
    int64_t chunk = PLE_CHUNK;
    size_t chunk_bytes = sl_row_bytes(t->type, chunk);
    const int32_t *tokens = a->tokens;
    float *proj = a->proj, *out = a->out;
    int64_t row_stride = a->row_stride, layer_stride = a->layer_stride;
    for (int64_t u = u0; u < u1; u++) {
        int i = (int)(u / nl), j = (int)(u % nl);
        float *y = proj + (size_t)i * cols + (int64_t)j * pl;
        float *o = out + (size_t)i * row_stride + (size_t)j * layer_stride;
        const uint8_t *src = (const uint8_t *)t->data + (size_t)tokens[i] * row_bytes + col0 +
                             (size_t)j * slice_bytes;
        float tok[PLE_CHUNK];
        sl_scale(y, pl, c->ple_proj_scale);
        sl_rmsnorm(o, y, m->ple_proj_norm, pl, c->norm_eps);
        for (int64_t e = 0; e < pl; e += chunk) {
            int64_t len = pl - e < chunk ? pl - e : chunk;
            sl_dequantize_row(t->type, src + (size_t)(e / chunk) * chunk_bytes, tok, len);
            ple_combine(o + e, tok, len, c->ple_tok_scale, c->ple_input_scale);
        }
    }
}

/* Gemma 4's per-layer inputs: (RMSNorm(proj . x0 * proj_scale) +
 * ple_tok_embd[token] * tok_scale) * input_scale per layer slice, x0 the
 * scaled main embedding. One unit of work is a (token, layer) slice, so a
 * single decode token spreads over the threads too; the table's slice is
 * dequantised a chunk at a time on the stack (no allocation per batch). */
int sl_ple_inputs(const sl_model *m, const int32_t *tokens, const float *x0, int n, float *proj,
                  float *out, int64_t row_stride, int64_t layer_stride, sl_fwd_times *times,
                  sl_err *err)
{
    const sl_config *c = &m->cfg;
    int nl = m->ple_l1 - m->ple_l0;
    if (!m->ple_tok_embd.data || nl <= 0)
        return sl_fail(err, "per-layer inputs: this model part holds no per-layer embeddings");
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->n_vocab)
            return sl_fail(err, "per-layer inputs: token id %d at batch row %d is outside the "
                           "vocabulary of %d", tokens[i], i, c->n_vocab);
    double t0 = times ? sl_now_s() : 0;
    matmul_w(&m->ple_model_proj, x0, n, proj);
    int64_t units = (int64_t)n * nl;
    ple_args a = {m, tokens, proj, out, row_stride, layer_stride};
    sl_pool_for(units, above(units, 4), ple_range, &a);
    if (times)
        times->ple += sl_now_s() - t0;
    return 0;
}

/* The per-layer inputs of the part's layers: from upstream when the batch
 * carries them, else computed here from the batch's tokens (then only the
 * residual row and the id cross a stage boundary). */
static int ple_inputs(sl_fwd *f, const sl_batch *b, sl_err *err)
{
    const sl_model *m = f->m;
    const sl_config *c = &m->cfg;
    int n = b->n_tokens;
    int64_t cols = (int64_t)(m->part.l1 - m->part.l0) * c->n_embd_per_layer;
    if (b->ple) {
        (void)cols; /* the stage checked the payload's size against the part */
        f->ple_in = b->ple;
        f->ple_stride = b->ple_stride;
        f->ple_layer_stride = b->ple_layer_stride;
        return 0;
    }
    if (!b->token)
        return sl_fail(err, "forward: %s layers need the batch's token ids (per-layer "
                       "embeddings)", c->arch);
    double t0 = f->times ? sl_now_s() : 0;
    int rc = sl_embed(m, b->token, n, f->xn, err);
    if (f->times)
        f->times->ple += sl_now_s() - t0;
    if (rc || sl_ple_inputs(m, b->token, f->xn, n, f->ple, f->ple, cols, c->n_embd_per_layer,
                            f->times, err))
        return -1;
    f->ple_in = f->ple;
    f->ple_stride = cols;
    f->ple_layer_stride = c->n_embd_per_layer;
    return 0;
}

/* g[i] = gelu(g[i]) * in[i] over n rows of pl (in's rows are in_stride apart) */
typedef struct gate_args {
    float *g;
    const float *in;
    int64_t pl, in_stride;
    float s;
} gate_args;

static void gate_range(void *arg, int64_t i0, int64_t i1)
{
    const gate_args *a = arg;
    for (int64_t i = i0; i < i1; i++)
        sl_gelu_tanh_mul(a->g + (size_t)i * a->pl, a->in + (size_t)i * a->in_stride, a->pl);
}

static void gate_rows(float *g, const float *in, int n, int64_t pl, int64_t in_stride)
{
    gate_args a = {g, in, pl, in_stride, 0};
    sl_pool_for_work(n, 1, rows_work(n, pl, 2), gate_range, &a);
}

static void scale_range(void *arg, int64_t i0, int64_t i1)
{
    const gate_args *a = arg;
    for (int64_t i = i0; i < i1; i++)
        sl_scale(a->g + (size_t)i * a->pl, a->pl, a->s);
}

static void scale_rows(float *x, int n, int64_t d, float s)
{
    gate_args a = {x, NULL, d, 0, s};
    sl_pool_for_work(n, 1, rows_work(n, d, 1), scale_range, &a);
}

/* Gemma 4's per-layer path after the FFN: x += RMSNorm(proj . (gelu(gate . x)
 * * this layer's input)); then x *= the layer's output scale. */
static void per_layer_out(sl_fwd *f, int il, float *x, int n)
{
    const sl_model *m = f->m;
    const sl_config *c = &m->cfg;
    const sl_layer_weights *w = &m->layer[il];
    if (w->ple_gate.data) {
        int64_t pl = c->n_embd_per_layer;
        int j = il - m->part.l0;
        TIMED_OP(f, matmul, SL_OP_PLE_OUT, w_bytes(&w->ple_gate),
                 matmul_w(&w->ple_gate, x, n, f->ple_g));
        TIMED_OP(f, elementwise, SL_OP_PLE_OUT, 0,
                 gate_rows(f->ple_g, f->ple_in + (int64_t)j * f->ple_layer_stride, n, pl,
                           f->ple_stride));
        TIMED_OP(f, matmul, SL_OP_PLE_OUT, w_bytes(&w->ple_proj),
                 matmul_w(&w->ple_proj, f->ple_g, n, f->o));
        TIMED_OP(f, elementwise, SL_OP_PLE_OUT, 0, residual(f, x, w->ple_post_norm, n));
    }
    if (w->out_scale) {
        float s = *w->out_scale;
        TIMED_OP(f, elementwise, SL_OP_PLE_OUT, 0, scale_rows(x, n, c->d_model, s));
    }
}

/* A decode step's keys and values of layer il read by attention, at most
 * this many bytes, are prefetched into L2 before its q/k/v (below). */
#define ATTN_PREFETCH_MAX ((int64_t)256 << 10)

/* At a short context a decode step's attention runs on the calling thread
 * alone, and the rows it reads were written steps ago and evicted since by
 * the weights' stream: it waited on them a line at a time (9 us a layer,
 * 10 GB/s, Gemma 3 1B at 16-80 positions). So the caller asks for them
 * before the q/k/v call, whose stream they then join. The rows of earlier
 * positions only (this token's are written after q/k/v); nothing is read. */
static void prefetch_keys(sl_fwd *f, sl_kv *kv, const sl_batch *b, int il)
{
    if (b->n_tokens != 1)
        return;
    const sl_layer_cfg *L = &f->m->cfg.layer[il];
    int64_t pos = b->pos[0], j0 = first_key(L, pos);
    int64_t rb = sl_kv_row_bytes(kv, il), slots = sl_kv_slots(kv, il);
    if (pos <= j0 || (pos - j0) * rb * 2 > ATTN_PREFETCH_MAX)
        return;
    const uint8_t *k = sl_kv_k(kv, b->seq[0], il), *v = sl_kv_v(kv, b->seq[0], il);
    for (int64_t j = j0; j < pos; j++) {
        int64_t at = j % slots * rb;
        for (int64_t o = 0; o < rb; o += 64) {
            __builtin_prefetch(k + at + o, 0, 2);
            __builtin_prefetch(v + at + o, 0, 2);
        }
    }
}

/* One layer of the batch: its ops, each split over the pool. */
static int layer_step(sl_fwd *f, sl_kv *kv, const sl_batch *b, float *x, int il, sl_err *err)
{
    const sl_config *c = &f->m->cfg;
    const sl_layer_weights *w = &f->m->layer[il];
    int n = b->n_tokens;
    if (!f->xn_ready)
        TIMED_OP(f, norm, SL_OP_ATTN_NORM, 0,
                 norm_rows(f->xn, x, w->attn_norm, n, c->d_model, c->norm_eps));
    f->xn_ready = false;
    prefetch_keys(f, kv, b, il);
    /* q always; k and v unless the layer reads another's cache or V = K */
    sl_mm_job qkv[3];
    int n_jobs = qkv_jobs(w, f, qkv);
    double qkv_bytes = 0;
    for (int i = 0; i < n_jobs; i++)
        qkv_bytes += w_bytes(i == 0 ? &w->wq : i == 1 ? &w->wk : &w->wv);
    TIMED_OP(f, matmul, SL_OP_QKV, qkv_bytes, matmul_same_x(qkv, n_jobs, f->xn, n, c->d_model));
    int rc = 0;
    prefetch_w(&w->wo, n);
    TIMED_OP(f, attention, SL_OP_QK_PREP, 0, qk_prepare(f, kv, b, il));
    TIMED_OP(f, attention, SL_OP_ATTN, f->times ? kv_bytes_seen(f, kv, b, il) : 0,
             rc = attention(f, kv, b, il, err));
    if (rc)
        return -1;
    TIMED_OP(f, matmul, SL_OP_O, w_bytes(&w->wo), matmul_w(&w->wo, f->attn, n, f->o));
    sl_mm_job gate_up[2] = {job_w(&w->w_gate, f->gate), job_w(&w->w_up, f->up)};
    sl_matmul_prefetch(gate_up, 2, c->d_model, n);
    TIMED_OP(f, elementwise, SL_OP_ATTN_RES, 0,
             residual_norm(f, x, w->post_attn_norm, w->ffn_norm, n));
    ffn(f, il, x, n);
    if (w->ple_gate.data || w->out_scale)
        per_layer_out(f, il, x, n);
    return 0;
}

typedef struct step_args {
    sl_fwd *f;
    sl_kv *kv;
    const sl_batch *b;
    float *x;
    int il, rc;
    sl_err *err;
} step_args;

static void layer_region(void *arg)
{
    step_args *a = arg;
    a->rc = layer_step(a->f, a->kv, a->b, a->x, a->il, a->err);
}

int sl_forward_layers(sl_fwd *f, sl_kv *kv, const sl_batch *b, float *x, sl_err *err)
{
    const sl_model *m = f->m;
    if (check_batch(f, kv, b, err))
        return -1;
    int n = b->n_tokens;
    if (f->ple && ple_inputs(f, b, err))
        return -1;
    /* the rows the batch writes, and some ahead, committed in a few system
     * calls rather than as page faults inside the layer steps */
    for (int i = 0; i < n; i++)
        if (i + 1 == n || b->seq[i + 1] != b->seq[i])
            sl_kv_prefault(kv, b->seq[i], b->pos[i] + 1);
    for (int i = 0; i < ROPE_SETS; i++)
        f->rope[i].ready = false; /* a new batch: new positions */
    f->xn_ready = false;
    /* a layer step holds the pool: its ops cost a barrier each, not a
     * wake-up of the workers each */
    for (int il = m->part.l0; il < m->part.l1; il++) {
        step_args a = {f, kv, b, x, il, 0, err};
        sl_pool_region(layer_region, &a);
        if (a.rc)
            return -1;
    }
    /* The cache now holds every position of the batch. */
    for (int i = 0; i < n; i++)
        if (b->pos[i] + 1 > sl_kv_len(kv, b->seq[i]))
            sl_kv_set_len(kv, b->seq[i], b->pos[i] + 1);
    return 0;
}

int sl_head(sl_fwd *f, const float *x, int n, float *logits, sl_err *err)
{
    const sl_model *m = f->m;
    const sl_config *c = &m->cfg;
    if (!m->part.head)
        return sl_fail(err, "head: this model part has no output head");
    if (n < 1 || n > f->max_tokens)
        return sl_fail(err, "head: %d rows (capacity %d)", n, f->max_tokens);
    TIMED_OP(f, head, SL_OP_HEAD_NORM, 0,
             norm_rows(f->xn, x, m->output_norm, n, c->d_model, c->norm_eps));
    TIMED_OP(f, head, SL_OP_HEAD, w_bytes(&m->output),
             sl_matmul_packed(m->output.type, m->output.data, m->output.packed, m->output.n_out,
                              m->output.n_in, f->xn, n, logits, c->n_vocab));
    /* sampling and the next step's embedding come before its first layer's
     * q/k/v: prefetch those (a decode step's next one is of one token) */
    if (m->part.l0 < m->part.l1) {
        sl_mm_job jobs[3];
        int n_jobs = qkv_jobs(&m->layer[m->part.l0], f, jobs);
        sl_matmul_prefetch(jobs, n_jobs, c->d_model, n);
    }
    if (c->final_softcap > 0.0f)
        TIMED_OP(f, head, SL_OP_SOFTCAP, 0,
                 sl_softcap(logits, (int64_t)n * c->n_vocab, c->final_softcap));
    return 0;
}
