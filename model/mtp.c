#include "model/mtp.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/attn.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "kernels/quant.h"
#include "model/forward.h"
#include "util/pool.h"

/* ---- loading ---------------------------------------------------------- */

/* A query-only Gemma 4 layer: no K/V projections (the target's cache
 * stands in), everything else as in the target's layers. */
static int bind_layer(sl_mtp *m, int il, float **cursor, sl_err *err)
{
    const sl_config *c = &m->cfg;
    const sl_layer_cfg *L = &c->layer[il];
    const gguf_file *f = m->gguf;
    sl_layer_weights *w = &m->layer[il];
    int64_t d = c->d_model, q_dim = (int64_t)L->n_head * L->head_dim;
    char n[128];
#define NAME(s) (snprintf(n, sizeof n, "blk.%d.%s.weight", il, s), n)
    if (gguf_find_tensor(f, NAME("attn_k")))
        return sl_fail(err, "%s: tensor %s: an assistant's layers have queries only (they read "
                       "the target's keys and values)", f->path, n);
    if (sl_model_bind_vector(f, NAME("attn_norm"), d, true, cursor, &w->attn_norm, err) ||
        sl_model_bind_matrix(f, NAME("attn_q"), d, q_dim, true, &w->wq, err) ||
        sl_model_bind_vector(f, NAME("attn_q_norm"), L->head_dim, true, cursor, &w->q_norm, err) ||
        sl_model_bind_matrix(f, NAME("attn_output"), q_dim, d, true, &w->wo, err) ||
        sl_model_bind_vector(f, NAME("post_attention_norm"), d, true, cursor, &w->post_attn_norm,
                             err) ||
        sl_model_bind_vector(f, NAME("ffn_norm"), d, true, cursor, &w->ffn_norm, err) ||
        sl_model_bind_matrix(f, NAME("ffn_gate"), d, L->d_ff, true, &w->w_gate, err) ||
        sl_model_bind_matrix(f, NAME("ffn_up"), d, L->d_ff, true, &w->w_up, err) ||
        sl_model_bind_matrix(f, NAME("ffn_down"), L->d_ff, d, true, &w->w_down, err) ||
        sl_model_bind_vector(f, NAME("post_ffw_norm"), d, true, cursor, &w->post_ffn_norm, err) ||
        sl_model_bind_vector(f, NAME("layer_output_scale"), 1, false, cursor, &w->out_scale, err))
        return -1;
#undef NAME
    return 0;
}

/* b (ik_llama.cpp's gemma4_mtp spelling) when the file has it, else a
 * (llama.cpp's gemma4-assistant one, named in errors). */
static const char *either(const gguf_file *f, const char *a, const char *b)
{
    return gguf_find_tensor(f, b) ? b : a;
}

/* Cluster c's tokens from the ordering tensor, which is either Hugging
 * Face's token_ordering (a permutation of the vocabulary: cluster c holds
 * entries [c * per, (c + 1) * per)) or ik_llama.cpp's gemma4_mtp map (token
 * -> its cluster; members in ascending id). Values are stored as F32. */
static int read_clusters(sl_mtp *m, const gguf_tensor *t, sl_err *err)
{
    const sl_config *c = &m->cfg;
    int64_t V = c->n_vocab, per = m->per_centroid, nc = c->n_centroids;
    if (t->type != SL_TYPE_F32 || t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3] != V)
        return sl_fail(err, "%s: tensor %s must hold %lld F32 token ids (has type %s)",
                       m->gguf->path, t->name, (long long)V, sl_type_name(t->type));
    const float *val = t->data;
    float top = 0.0f;
    for (int64_t i = 0; i < V; i++) {
        if (!(val[i] >= 0.0f && val[i] < (float)V) || val[i] != floorf(val[i]))
            return sl_fail(err, "%s: tensor %s[%lld] = %g is not a token id", m->gguf->path,
                           t->name, (long long)i, val[i]);
        top = val[i] > top ? val[i] : top;
    }
    int64_t *fill = calloc((size_t)nc, sizeof *fill);
    char *seen = calloc((size_t)V, 1);
    int rc = 0;
    if (!fill || !seen) {
        rc = sl_fail(err, "out of memory loading %s", m->gguf->path);
    } else if (top >= (float)nc) { /* a permutation */
        for (int64_t i = 0; i < V && rc == 0; i++) {
            int64_t tok = (int64_t)val[i];
            if (seen[tok]++)
                rc = sl_fail(err, "%s: tensor %s repeats token %lld (not a permutation of the "
                             "vocabulary)", m->gguf->path, t->name, (long long)tok);
            m->cluster[i] = (int32_t)tok;
        }
    } else { /* token -> cluster */
        for (int64_t tok = 0; tok < V && rc == 0; tok++) {
            int64_t cl = (int64_t)val[tok];
            if (fill[cl] == per)
                rc = sl_fail(err, "%s: tensor %s gives centroid %lld more than %lld tokens",
                             m->gguf->path, t->name, (long long)cl, (long long)per);
            else
                m->cluster[cl * per + fill[cl]++] = (int32_t)tok;
        }
    }
    free(fill);
    free(seen);
    return rc;
}

static int load_centroids(sl_mtp *m, sl_err *err)
{
    sl_config *c = &m->cfg;
    const gguf_file *f = m->gguf;
    const char *cname = either(f, "mtp.centroids.weight", "mtp_centroids.weight");
    const char *oname = either(f, "mtp.token_ordering.weight", "mtp_token_ordering.weight");
    const gguf_tensor *ct = gguf_find_tensor(f, cname), *ot = gguf_find_tensor(f, oname);
    if (!ct && !ot)
        return 0; /* llama.cpp drops them: logits over the whole vocabulary */
    if (!ct || !ot)
        return sl_fail(err, "%s: missing tensor %s (the centroid head needs both %s and %s)",
                       f->path, ct ? oname : cname, cname, oname);
    if (c->n_centroids < 1 || c->n_centroids >= c->n_vocab || c->n_vocab % c->n_centroids != 0)
        return sl_fail(err, "%s: %s.n_centroids = %d must divide the vocabulary (%d) into "
                       "clusters of at least 2 tokens", f->path, c->arch, c->n_centroids,
                       c->n_vocab);
    m->per_centroid = c->n_vocab / c->n_centroids;
    m->cluster = malloc((size_t)c->n_vocab * sizeof *m->cluster);
    if (!m->cluster)
        return sl_fail(err, "out of memory loading %s", f->path);
    if (sl_model_bind_matrix(f, cname, c->d_model, c->n_centroids, true, &m->centroids, err))
        return -1;
    return read_clusters(m, ot, err);
}

static int load_globals(sl_mtp *m, float **cursor, sl_err *err)
{
    const sl_config *c = &m->cfg;
    const gguf_file *f = m->gguf;
    int64_t d = c->d_model, db = c->d_backbone;
    if (sl_model_bind_matrix(f, "token_embd.weight", d, c->n_vocab, true, &m->lm_head, err) ||
        sl_model_bind_vector(f, "output_norm.weight", d, true, cursor, &m->output_norm, err) ||
        sl_model_bind_matrix(f, either(f, "nextn.pre_projection.weight", "mtp_pre_proj.weight"),
                             2 * db, d, true, &m->pre_proj, err) ||
        sl_model_bind_matrix(f, either(f, "nextn.post_projection.weight", "mtp_post_proj.weight"),
                             d, db, true, &m->post_proj, err))
        return -1;
    for (int il = 0; il < c->n_layer; il++) {
        const sl_layer_cfg *L = &c->layer[il];
        if (!L->rope_freq_factors)
            continue;
        if (!m->rope_freqs &&
            sl_model_bind_vector(f, "rope_freqs.weight", L->rope_dim / 2, true, cursor,
                                 &m->rope_freqs, err))
            return -1;
    }
    return 0;
}

static void pack_all(sl_mtp *m, bool pack)
{
    sl_weight *g[] = {&m->pre_proj, &m->post_proj, &m->centroids, &m->lm_head};
    int n_g = m->centroids.data ? 3 : 4; /* a gathered lm_head stays as mapped */
    for (int i = 0; i < n_g; i++)
        if (g[i]->data) {
            if (pack)
                sl_weight_pack(g[i]);
            else
                sl_pack_free(g[i]->packed);
        }
    for (int il = 0; il < m->cfg.n_layer && m->layer; il++) {
        sl_layer_weights *w = &m->layer[il];
        sl_weight *all[] = {&w->wq, &w->wo, &w->w_gate, &w->w_up, &w->w_down};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            if (all[i]->data) {
                if (pack)
                    sl_weight_pack(all[i]);
                else
                    sl_pack_free(all[i]->packed);
            }
    }
}

int sl_mtp_from_gguf(sl_mtp **out, gguf_file *f, sl_err *err)
{
    *out = NULL;
    sl_mtp *m = calloc(1, sizeof *m);
    if (!m) {
        gguf_close(f);
        return sl_fail(err, "out of memory loading %s", f->path);
    }
    m->gguf = f;
    if (sl_model_config(f, &m->cfg, true, err))
        goto fail;
    const sl_config *c = &m->cfg;
    size_t floats = 2 * (size_t)c->d_model;
    for (int il = 0; il < c->n_layer; il++)
        floats += 4 * (size_t)c->d_model + 2 * (size_t)c->layer[il].head_dim + 1 +
                  (size_t)c->layer[il].rope_dim;
    m->layer = calloc((size_t)c->n_layer, sizeof *m->layer);
    m->owned = malloc(floats * sizeof(float));
    if (!m->layer || !m->owned) {
        sl_fail(err, "out of memory loading %s", f->path);
        goto fail;
    }
    float *cursor = m->owned;
    if (load_globals(m, &cursor, err))
        goto fail;
    for (int il = 0; il < c->n_layer; il++)
        if (bind_layer(m, il, &cursor, err))
            goto fail;
    if (load_centroids(m, err))
        goto fail;
    pack_all(m, true);
    *out = m;
    return 0;
fail:
    sl_mtp_free(m);
    return -1;
}

int sl_mtp_load(sl_mtp **out, const char *path, sl_err *err)
{
    gguf_file *f;
    *out = NULL;
    if (gguf_open(&f, path, err))
        return -1;
    return sl_mtp_from_gguf(out, f, err);
}

void sl_mtp_free(sl_mtp *m)
{
    if (!m)
        return;
    pack_all(m, false);
    gguf_close(m->gguf);
    free(m->layer);
    free(m->cluster);
    free(m->owned);
    free(m);
}

/* ---- binding to a target ---------------------------------------------- */

int sl_mtp_target_sources(const sl_config *t, int src[2], sl_err *err)
{
    src[0] = src[1] = -1;
    for (int il = 0; il < t->n_layer; il++)
        if (t->layer[il].kv_src < 0)
            src[t->layer[il].sliding_window > 0 ? 0 : 1] = il;
    if (src[0] < 0 || src[1] < 0)
        return sl_fail(err, "draft: the target has no %s layer with its own cache for the assistant "
                       "to read", src[0] < 0 ? "sliding" : "global");
    return 0;
}

int sl_mtp_source_layers(const sl_mtp *m, const sl_config *t, int src[2], sl_err *err)
{
    const sl_config *c = &m->cfg;
    if (t->d_model != c->d_backbone)
        return sl_fail(err, "draft: the assistant reads hidden states of width %d, the target's "
                       "is %d", c->d_backbone, t->d_model);
    if (t->n_vocab != c->n_vocab)
        return sl_fail(err, "draft: the assistant's vocabulary has %d tokens, the target's %d",
                       c->n_vocab, t->n_vocab);
    src[0] = src[1] = -1;
    for (int il = 0; il < t->n_layer; il++)
        if (t->layer[il].kv_src < 0)
            src[t->layer[il].sliding_window > 0 ? 0 : 1] = il;
    for (int il = 0; il < c->n_layer; il++) {
        const sl_layer_cfg *A = &c->layer[il];
        int kind = A->sliding_window > 0 ? 0 : 1;
        if (src[kind] < 0)
            return sl_fail(err, "draft: assistant layer %d attends like a %s layer, and the target "
                           "has none with its own cache", il, kind ? "global" : "sliding");
        const sl_layer_cfg *S = &t->layer[src[kind]];
        if (A->head_dim != S->head_dim || A->n_kv_head != S->n_kv_head ||
            A->rope_dim != S->rope_dim || A->rope_base != S->rope_base)
            return sl_fail(err, "draft: assistant layer %d (%d kv heads x %d, rope %d dims base %g) "
                           "does not match target layer %d (%d kv heads x %d, rope %d dims base "
                           "%g)", il, A->n_kv_head, A->head_dim, A->rope_dim, A->rope_base,
                           src[kind], S->n_kv_head, S->head_dim, S->rope_dim, S->rope_base);
    }
    return 0;
}

struct sl_mtp_ctx {
    const sl_mtp *m;
    const sl_model *target;
    int src[2];
    const float *rope_freqs;
    float *in;       /* [embedding ; hidden], 2 d_backbone */
    float *h;        /* d_backbone: the hidden state a draft loop feeds back */
    float *x, *xn, *o;
    float *q, *attn;
    float *gate, *up;
    float *work;     /* attention partials */
    int64_t work_cap;
    float *logits;   /* n_vocab, or the candidates */
    int32_t *ids;    /* candidates; NULL with the whole vocabulary */
    float *cscore;   /* n_centroids */
    int *ctop;       /* centroid_top_k chosen */
    float *h_next;
};

void sl_mtp_ctx_free(sl_mtp_ctx *c)
{
    if (!c)
        return;
    void *bufs[] = {c->in, c->h, c->x, c->xn, c->o, c->q, c->attn, c->gate,
                    c->up, c->work, c->logits, c->ids, c->cscore, c->ctop, c->h_next};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(bufs[i]);
    free(c);
}

int sl_mtp_ctx_new(sl_mtp_ctx **out, const sl_mtp *m, const sl_model *target, sl_err *err)
{
    *out = NULL;
    const sl_config *a = &m->cfg;
    if (!target->tok_embd.data)
        return sl_fail(err, "draft: the target part has no token embedding (the assistant's "
                       "input embeds tokens with it)");
    sl_mtp_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return sl_fail(err, "draft: out of memory");
    c->m = m;
    c->target = target;
    if (sl_mtp_source_layers(m, &target->cfg, c->src, err)) {
        free(c);
        return -1;
    }
    c->rope_freqs = m->rope_freqs ? m->rope_freqs : target->rope_freqs;
    for (int il = 0; il < a->n_layer; il++)
        if (a->layer[il].sliding_window == 0 && target->cfg.layer[c->src[1]].rope_freq_factors &&
            !c->rope_freqs) {
            free(c);
            return sl_fail(err, "draft: the global layers' RoPE frequency factors are in neither "
                           "the assistant nor the loaded target part");
        }
    int64_t d = a->d_model, db = a->d_backbone, q = sl_config_max_q_dim(a);
    int64_t ff = sl_config_max_d_ff(a);
    int64_t n_out = m->centroids.data ? (int64_t)a->centroid_top_k * m->per_centroid : a->n_vocab;
    c->in = malloc((size_t)(2 * db) * sizeof(float));
    c->h = malloc((size_t)db * sizeof(float));
    c->h_next = malloc((size_t)db * sizeof(float));
    c->x = malloc((size_t)d * sizeof(float));
    c->xn = malloc((size_t)d * sizeof(float));
    c->o = malloc((size_t)d * sizeof(float));
    c->q = malloc((size_t)q * sizeof(float));
    c->attn = malloc((size_t)q * sizeof(float));
    c->gate = malloc((size_t)ff * sizeof(float));
    c->up = malloc((size_t)ff * sizeof(float));
    c->logits = malloc((size_t)n_out * sizeof(float));
    bool cen = m->centroids.data != NULL;
    if (cen) {
        c->ids = malloc((size_t)n_out * sizeof(int32_t));
        c->cscore = malloc((size_t)a->n_centroids * sizeof(float));
        c->ctop = malloc((size_t)a->centroid_top_k * sizeof(int));
    }
    if (!c->in || !c->h || !c->h_next || !c->x || !c->xn || !c->o || !c->q || !c->attn ||
        !c->gate || !c->up || !c->logits || (cen && (!c->ids || !c->cscore || !c->ctop))) {
        sl_mtp_ctx_free(c);
        return sl_fail(err, "draft: out of memory");
    }
    *out = c;
    return 0;
}

void sl_mtp_ctx_sources(const sl_mtp_ctx *c, int src[2])
{
    src[0] = c->src[0];
    src[1] = c->src[1];
}

/* ---- one step ----------------------------------------------------------- */

static void matvec(const sl_weight *w, const float *x, float *y)
{
    sl_matmul_packed(w->type, w->data, w->packed, w->n_out, w->n_in, x, 1, y, w->n_out);
}

static int check_kv(const sl_mtp_kv *kv, const sl_layer_cfg *S, int src, int64_t j0, int64_t j1,
                    sl_err *err)
{
    if (kv->type != SL_TYPE_F32 && kv->type != SL_TYPE_F16 && kv->type != SL_TYPE_BF16 &&
        kv->type != SL_TYPE_Q8_0)
        return sl_fail(err, "draft: keys of target layer %d in type %s (F32, F16, BF16 or Q8_0)",
                       src, sl_type_name(kv->type));
    if (S->head_dim % sl_type_block_elems(kv->type) != 0 ||
        kv->row_bytes < (int64_t)S->n_kv_head * (int64_t)sl_row_bytes(kv->type, S->head_dim))
        return sl_fail(err, "draft: rows of target layer %d: %lld bytes cannot hold %d heads of "
                       "%d %s", src, (long long)kv->row_bytes, S->n_kv_head, S->head_dim,
                       sl_type_name(kv->type));
    if (kv->slots < 0 || kv->slots % SL_ATTN_SPAN != 0 || (kv->slots > 0 && kv->n > kv->slots))
        return sl_fail(err, "draft: target layer %d: a ring of %lld rows holding %lld positions "
                       "(a multiple of %d, at least the positions)", src, (long long)kv->slots,
                       (long long)kv->n, SL_ATTN_SPAN);
    if (!kv->k || !kv->v || kv->pos0 > j0 || kv->pos0 + kv->n < j1)
        return sl_fail(err, "draft: target layer %d: rows of positions [%lld, %lld) given, the "
                       "step needs [%lld, %lld)", src, (long long)kv->pos0,
                       (long long)(kv->pos0 + kv->n), (long long)j0, (long long)j1);
    return 0;
}

typedef struct attend_args {
    sl_mtp_ctx *c;
    const sl_mtp_kv *kv;
    const sl_layer_cfg *L;
    int64_t j0;
    int32_t pos;
    int64_t per_head;
} attend_args;

/* KV heads [h0, h1) of one step's attention. */
static void attend_range(void *arg, int64_t h0, int64_t h1)
{
    const attend_args *A = arg;
    sl_mtp_ctx *c = A->c;
    const sl_mtp_kv *kv = A->kv;
    const sl_layer_cfg *L = A->L;
    int hd = L->head_dim, group = L->n_head / L->n_kv_head;
    size_t head_bytes = sl_row_bytes(kv->type, hd);
    int64_t n_spans = sl_attn_n_spans(A->j0, A->pos), pf = sl_attn_part_floats(hd, group);
    for (int64_t kvh = h0; kvh < h1; kvh++) {
        sl_attn_q q = {.q = c->q + (int64_t)kvh * group * hd,
                       .q_stride = hd,
                       .k = (const uint8_t *)kv->k + kvh * head_bytes,
                       .v = (const uint8_t *)kv->v + kvh * head_bytes,
                       .pos0 = kv->pos0,
                       .row_bytes = kv->row_bytes,
                       .kv_type = kv->type,
                       .head_dim = hd,
                       .n_group = group,
                       .scale = L->attn_scale,
                       .softcap = c->target->cfg.attn_softcap};
        /* sl_attn's spans and order (so the same bits), each span's rows
         * found in a ring as the target's own rings are: spans never cross
         * a multiple of the slot count */
        float *work = c->work + kvh * A->per_head;
        sl_attn_part parts[n_spans];
        for (int64_t s = 0; s < n_spans; s++) {
            int64_t s0, s1;
            sl_attn_span_bounds(A->j0, A->pos, s, &s0, &s1);
            if (kv->slots > 0)
                q.pos0 = s0 - s0 % kv->slots;
            parts[s] = sl_attn_part_at(work + s * pf, group);
            sl_attn_span(&q, s0, s1, &parts[s]);
        }
        sl_attn_combine(parts, n_spans, hd, group, c->attn + (int64_t)kvh * group * hd, hd);
    }
}

/* Queries of layer il (norm, projection, q norm, RoPE at pos) against the
 * source layer's keys [j0, pos), one KV head's group per thread. */
static int attend(sl_mtp_ctx *c, int il, int32_t pos, const sl_mtp_kv kv[2], sl_err *err)
{
    const sl_mtp *m = c->m;
    const sl_config *a = &m->cfg;
    const sl_layer_cfg *L = &a->layer[il];
    const sl_layer_weights *w = &m->layer[il];
    int kind = L->sliding_window > 0 ? 0 : 1, hd = L->head_dim, group = L->n_head / L->n_kv_head;
    const sl_layer_cfg *S = &c->target->cfg.layer[c->src[kind]];
    int64_t j0 = S->sliding_window > 0 && pos - S->sliding_window + 1 > 0
                     ? pos - S->sliding_window + 1 : 0;
    if (pos < 1)
        return sl_fail(err, "draft: position %d: the target has no keys before it", pos);
    if (check_kv(&kv[kind], S, c->src[kind], j0, pos, err))
        return -1;
    sl_rmsnorm(c->xn, c->x, w->attn_norm, a->d_model, a->norm_eps);
    matvec(&w->wq, c->xn, c->q);
    for (int h = 0; h < L->n_head; h++)
        sl_rmsnorm(c->q + (int64_t)h * hd, c->q + (int64_t)h * hd, w->q_norm, hd, a->norm_eps);
    float cs[L->rope_dim / 2 + 1], sn[L->rope_dim / 2 + 1];
    if (L->sliding_window == 0 && S->rope_freq_factors)
        sl_rope_angles_ff(cs, sn, L->rope_dim, pos, L->rope_base, L->rope_freq_scale,
                          c->rope_freqs);
    else
        sl_rope_angles(cs, sn, L->rope_dim, pos, L->rope_base, L->rope_freq_scale);
    sl_rope_apply(c->q, L->n_head, hd, L->rope_dim, cs, sn, a->rope_neox);
    int64_t pf = sl_attn_part_floats(hd, group), per_head = sl_attn_n_spans(j0, pos) * pf;
    int64_t need = per_head * L->n_kv_head;
    if (c->work_cap < need) {
        float *p = realloc(c->work, (size_t)need * sizeof(float));
        if (!p)
            return sl_fail(err, "draft: out of memory for attention work");
        c->work = p;
        c->work_cap = need;
    }
    attend_args aa = {c, &kv[kind], L, j0, pos, per_head};
    sl_pool_for(L->n_kv_head, 1, attend_range, &aa);
    return 0;
}

/* x += RMSNorm(o, post) */
static void add_normed(sl_mtp_ctx *c, const float *post)
{
    const sl_config *a = &c->m->cfg;
    sl_rmsnorm(c->o, c->o, post, a->d_model, a->norm_eps);
    sl_add(c->x, c->o, a->d_model);
}

static int run_layer(sl_mtp_ctx *c, int il, int32_t pos, const sl_mtp_kv kv[2], sl_err *err)
{
    const sl_config *a = &c->m->cfg;
    const sl_layer_weights *w = &c->m->layer[il];
    if (attend(c, il, pos, kv, err))
        return -1;
    matvec(&w->wo, c->attn, c->o);
    add_normed(c, w->post_attn_norm);
    sl_rmsnorm(c->xn, c->x, w->ffn_norm, a->d_model, a->norm_eps);
    sl_mm_job gate_up[2] = {{w->w_gate.type, w->w_gate.data, w->w_gate.packed, w->w_gate.n_out,
                             c->gate, w->w_gate.n_out},
                            {w->w_up.type, w->w_up.data, w->w_up.packed, w->w_up.n_out, c->up,
                             w->w_up.n_out}};
    sl_matmul_jobs(gate_up, 2, a->d_model, c->xn, 1);
    sl_gelu_tanh_mul(c->gate, c->up, a->layer[il].d_ff);
    matvec(&w->w_down, c->gate, c->o);
    add_normed(c, w->post_ffn_norm);
    if (w->out_scale)
        sl_scale(c->x, a->d_model, *w->out_scale);
    return 0;
}

/* Logits of candidates [i0, i1): each a whole dot product of one thread. */
static void candidate_range(void *arg, int64_t i0, int64_t i1)
{
    sl_mtp_ctx *c = arg;
    const sl_weight *e = &c->m->lm_head;
    size_t row_bytes = sl_row_bytes(e->type, e->n_in);
    int64_t d = c->m->cfg.d_model, chunk = 256;
    size_t chunk_bytes = sl_row_bytes(e->type, chunk);
    for (int64_t i = i0; i < i1; i++) {
        const uint8_t *row = (const uint8_t *)e->data + (size_t)c->ids[i] * row_bytes;
        float buf[256], sum = 0.0f;
        for (int64_t j = 0; j < d; j += chunk) {
            int64_t len = d - j < chunk ? d - j : chunk;
            sl_dequantize_row(e->type, row + (size_t)(j / chunk) * chunk_bytes, buf, len);
            for (int64_t t = 0; t < len; t++)
                sum += buf[t] * c->xn[j + t];
        }
        c->logits[i] = sum;
    }
}

/* Logits of the tokens of the centroid_top_k best centroids (in the order
 * of their scores, each cluster in its stored order): each candidate's
 * lm_head row dequantised a chunk at a time and dotted with xn. */
static int narrowed_logits(sl_mtp_ctx *c)
{
    const sl_mtp *m = c->m;
    const sl_config *a = &m->cfg;
    int nc = a->n_centroids, k = a->centroid_top_k, per = m->per_centroid;
    matvec(&m->centroids, c->xn, c->cscore);
    for (int r = 0; r < k; r++) { /* selection: k is small */
        int best = -1;
        for (int i = 0; i < nc; i++)
            if (!isnan(c->cscore[i]) && (best < 0 || c->cscore[i] > c->cscore[best]))
                best = i;
        if (best < 0)
            best = r; /* all NaN: any cluster, the logits are NaN anyway */
        c->ctop[r] = best;
        c->cscore[best] = NAN;
    }
    for (int r = 0; r < k; r++)
        memcpy(c->ids + (int64_t)r * per, m->cluster + (int64_t)c->ctop[r] * per,
               (size_t)per * sizeof(int32_t));
    int64_t n = (int64_t)k * per;
    sl_pool_for(n, n > 256 ? 1 : n, candidate_range, c);
    return (int)n;
}

int sl_mtp_step(sl_mtp_ctx *c, const float *h, int32_t token, int32_t pos, const sl_mtp_kv kv[2],
                sl_mtp_out *out, sl_err *err)
{
    const sl_mtp *m = c->m;
    const sl_config *a = &m->cfg;
    int64_t db = a->d_backbone;
    /* the target's scaled embedding, then the hidden state */
    if (sl_embed(c->target, &token, 1, c->in, err))
        return -1;
    memmove(c->in + db, h, (size_t)db * sizeof(float));
    matvec(&m->pre_proj, c->in, c->x);
    for (int il = 0; il < a->n_layer; il++)
        if (run_layer(c, il, pos, kv, err))
            return -1;
    sl_rmsnorm(c->xn, c->x, m->output_norm, a->d_model, a->norm_eps);
    matvec(&m->post_proj, c->xn, c->h_next);
    if (m->centroids.data) {
        out->n_logits = narrowed_logits(c);
        out->ids = c->ids;
    } else {
        matvec(&m->lm_head, c->xn, c->logits);
        out->n_logits = a->n_vocab;
        out->ids = NULL;
    }
    out->logits = c->logits;
    out->h_next = c->h_next;
    return 0;
}

int sl_mtp_draft(sl_mtp_ctx *c, const float *h, int32_t token, int32_t pos, const sl_mtp_kv kv[2],
                 int k, int32_t *drafts, sl_err *err)
{
    int64_t db = c->m->cfg.d_backbone;
    memcpy(c->h, h, (size_t)db * sizeof(float));
    for (int i = 0; i < k; i++) {
        sl_mtp_out o;
        if (sl_mtp_step(c, c->h, token, pos, kv, &o, err))
            return -1;
        int64_t best = sl_argmax_f32(o.logits, o.n_logits);
        token = o.ids ? o.ids[best] : (int32_t)best;
        drafts[i] = token;
        memcpy(c->h, o.h_next, (size_t)db * sizeof(float));
    }
    return 0;
}
