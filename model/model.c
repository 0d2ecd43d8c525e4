#include "model/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kernels/matmul.h"
#include "kernels/quant.h"

/* Checks a tensor's type and shape: a matrix of n_out rows of n_in. */
static int bind_matrix(const gguf_file *f, const char *name, int64_t n_in, int64_t n_out,
                       bool required, sl_weight *w, sl_err *err)
{
    const gguf_tensor *t = gguf_find_tensor(f, name);
    memset(w, 0, sizeof *w);
    if (!t) {
        if (!required)
            return 0;
        return sl_fail(err, "%s: missing tensor %s", f->path, name);
    }
    if (t->n_dims != 2 || t->ne[0] != n_in || t->ne[1] != n_out)
        return sl_fail(err, "%s: tensor %s has shape [%lld, %lld] (%u dims), expected [%lld, %lld]",
                       f->path, name, (long long)t->ne[0], (long long)t->ne[1], t->n_dims,
                       (long long)n_in, (long long)n_out);
    if (!sl_type_supported(t->type))
        return sl_fail(err, "%s: tensor %s has unsupported type %s", f->path, name,
                       sl_type_name(t->type));
    int64_t bad = sl_find_bad_block(t->type, t->data, t->size);
    if (bad >= 0)
        return sl_fail(err, "%s: tensor %s: block %lld has an infinite or NaN scale (corrupt file?)",
                       f->path, name, (long long)bad);
    w->type = t->type;
    w->n_in = n_in;
    w->n_out = n_out;
    w->data = t->data;
    return 0;
}

/* Norm weights are small; dequantise them once into the model's f32 store. */
static int bind_vector(const gguf_file *f, const char *name, int64_t n, bool required,
                       float **cursor, const float **out, sl_err *err)
{
    const gguf_tensor *t = gguf_find_tensor(f, name);
    *out = NULL;
    if (!t) {
        if (!required)
            return 0;
        return sl_fail(err, "%s: missing tensor %s", f->path, name);
    }
    int64_t count = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
    if (count != n)
        return sl_fail(err, "%s: tensor %s has %lld elements, expected %lld", f->path, name,
                       (long long)count, (long long)n);
    if (!sl_type_supported(t->type) || n % sl_type_block_elems(t->type) != 0)
        return sl_fail(err, "%s: tensor %s has unsupported type %s for a norm", f->path, name,
                       sl_type_name(t->type));
    sl_dequantize_row(t->type, t->data, *cursor, n);
    *out = *cursor;
    *cursor += n;
    return 0;
}

static int check_row_blocks(const gguf_file *f, const char *name, const sl_weight *w, sl_err *err);

static int bind_layer(sl_model *m, int il, float **cursor, sl_err *err)
{
    const sl_config *c = &m->cfg;
    const sl_layer_cfg *L = &c->layer[il];
    const gguf_file *f = m->gguf;
    sl_layer_weights *w = &m->layer[il];
    int64_t d = c->d_model, q_dim = (int64_t)L->n_head * L->head_dim;
    int64_t kv_dim = (int64_t)L->n_kv_head * L->head_dim, pl = c->n_embd_per_layer;
    bool own_kv = L->kv_src < 0, ple = pl > 0;
    char n[128];
#define NAME(s) (snprintf(n, sizeof n, "blk.%d.%s.weight", il, s), n)
    if (bind_vector(f, NAME("attn_norm"), d, true, cursor, &w->attn_norm, err) ||
        bind_matrix(f, NAME("attn_q"), d, q_dim, true, &w->wq, err) ||
        (own_kv && bind_matrix(f, NAME("attn_k"), d, kv_dim, true, &w->wk, err)) ||
        (own_kv && !L->v_is_k && bind_matrix(f, NAME("attn_v"), d, kv_dim, true, &w->wv, err)) ||
        bind_matrix(f, NAME("attn_output"), q_dim, d, true, &w->wo, err) ||
        bind_vector(f, NAME("attn_q_norm"), L->head_dim, c->qk_norm, cursor, &w->q_norm, err) ||
        (own_kv && bind_vector(f, NAME("attn_k_norm"), L->head_dim, c->qk_norm, cursor,
                               &w->k_norm, err)) ||
        bind_vector(f, NAME("post_attention_norm"), d, c->post_attn_norm, cursor,
                    &w->post_attn_norm, err) ||
        bind_vector(f, NAME("ffn_norm"), d, true, cursor, &w->ffn_norm, err) ||
        bind_matrix(f, NAME("ffn_gate"), d, L->d_ff, true, &w->w_gate, err) ||
        bind_matrix(f, NAME("ffn_up"), d, L->d_ff, true, &w->w_up, err) ||
        bind_matrix(f, NAME("ffn_down"), L->d_ff, d, true, &w->w_down, err) ||
        bind_vector(f, NAME("post_ffw_norm"), d, c->post_ffn_norm, cursor, &w->post_ffn_norm, err) ||
        (ple && bind_matrix(f, NAME("inp_gate"), d, pl, true, &w->ple_gate, err)) ||
        (ple && bind_matrix(f, NAME("proj"), pl, d, true, &w->ple_proj, err)) ||
        (ple && bind_vector(f, NAME("post_norm"), d, true, cursor, &w->ple_post_norm, err)) ||
        bind_vector(f, NAME("layer_output_scale"), 1, false, cursor, &w->out_scale, err))
        return -1;
    /* Gemma 4 26B-A4B's experts: a dense forward pass would silently drop them */
    if (gguf_find_tensor(f, NAME("ffn_gate_inp")))
        return sl_fail(err, "%s: tensor %s: mixture-of-experts layers are not supported", f->path, n);
    sl_weight *mats[] = {&w->wq, &w->wk, &w->wv, &w->wo, &w->w_gate, &w->w_up, &w->w_down,
                         &w->ple_gate, &w->ple_proj};
    for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++)
        if (mats[i]->data && mats[i]->n_in % sl_type_block_elems(mats[i]->type) != 0)
            return sl_fail(err, "%s: layer %d: row length %lld not a multiple of the %s block",
                           f->path, il, (long long)mats[i]->n_in, sl_type_name(mats[i]->type));
#undef NAME
    return 0;
}

/* Gemma 4: the frequency factors of the global layers' RoPE, and the
 * per-layer-embedding tables restricted to the part's layers. */
static int bind_gemma4_extras(sl_model *m, float **cursor, sl_err *err)
{
    const sl_config *c = &m->cfg;
    const gguf_file *f = m->gguf;
    const sl_model_part *p = &m->part;
    int ff_dim = 0;
    for (int il = p->l0; il < p->l1; il++) {
        if (!c->layer[il].rope_freq_factors)
            continue;
        if (!m->rope_freqs) {
            ff_dim = c->layer[il].rope_dim;
            if (bind_vector(f, "rope_freqs.weight", ff_dim / 2, true, cursor, &m->rope_freqs, err))
                return -1;
        }
        if (c->layer[il].rope_dim != ff_dim)
            return sl_fail(err, "%s: rope_freqs.weight serves layers of %d rotated dimensions, "
                           "but layer %d rotates %d", f->path, ff_dim, il, c->layer[il].rope_dim);
    }
    int64_t pl = c->n_embd_per_layer, all = (int64_t)c->n_layer * pl;
    int l0 = p->l0, l1 = p->l1;
    if (p->embed && p->ple) {
        l0 = 0;
        l1 = c->n_layer;
    }
    if (pl == 0 || l0 == l1)
        return 0;
    if (bind_matrix(f, "per_layer_token_embd.weight", all, c->n_vocab, true, &m->ple_tok_embd,
                    err) ||
        bind_matrix(f, "per_layer_model_proj.weight", c->d_model, all, true, &m->ple_model_proj,
                    err) ||
        bind_vector(f, "per_layer_proj_norm.weight", pl, true, cursor, &m->ple_proj_norm, err) ||
        check_row_blocks(f, "per_layer_model_proj.weight", &m->ple_model_proj, err))
        return -1;
    if (((int64_t)l0 * pl) % sl_type_block_elems(m->ple_tok_embd.type) != 0 ||
        pl % sl_type_block_elems(m->ple_tok_embd.type) != 0)
        return sl_fail(err, "%s: per_layer_token_embd.weight: a layer's %lld columns do not "
                       "fill whole %s blocks", f->path, (long long)pl,
                       sl_type_name(m->ple_tok_embd.type));
    /* The part reads only its layers' rows of the projection. */
    sl_weight *w = &m->ple_model_proj;
    w->data = (const uint8_t *)w->data + sl_row_bytes(w->type, w->n_in) * (size_t)(l0 * pl);
    w->n_out = (int64_t)(l1 - l0) * pl;
    m->ple_l0 = l0;
    m->ple_l1 = l1;
    return 0;
}

/* Upper bound of f32 norm storage the part needs. */
static size_t norm_floats(const sl_config *c, const sl_model_part *p)
{
    size_t n = (size_t)c->d_model; /* output_norm */
    for (int il = p->l0; il < p->l1; il++)
        n += 5 * (size_t)c->d_model + 2 * (size_t)c->layer[il].head_dim + 1 +
             (size_t)c->layer[il].rope_dim / 2;
    return n + (size_t)c->n_embd_per_layer;
}

static int check_row_blocks(const gguf_file *f, const char *name, const sl_weight *w, sl_err *err)
{
    if (w->data && w->n_in % sl_type_block_elems(w->type) != 0)
        return sl_fail(err, "%s: tensor %s: row length %lld is not a multiple of the %s block",
                       f->path, name, (long long)w->n_in, sl_type_name(w->type));
    return 0;
}

/* Repacks a matrix for the fast kernel and lets the kernel drop the mapped
 * pages it read for that (they fault back in if a lower path is forced). */
static void pack_weight(sl_weight *w)
{
    w->packed = sl_pack(w->type, w->data, w->n_out, w->n_in);
    if (!w->packed)
        return;
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)w->data + (uintptr_t)page - 1) & ~(uintptr_t)(page - 1);
    uintptr_t b = ((uintptr_t)w->data + sl_row_bytes(w->type, w->n_in) * (size_t)w->n_out) &
                  ~(uintptr_t)(page - 1);
    if (b > a)
        madvise((void *)a, b - a, MADV_DONTNEED);
}

static void for_each_matrix(sl_model *m, void (*fn)(sl_weight *))
{
    for (int il = m->part.l0; il < m->part.l1; il++) {
        sl_layer_weights *w = &m->layer[il];
        sl_weight *all[] = {&w->wq,     &w->wk,   &w->wv,       &w->wo,      &w->w_gate,
                            &w->w_up,   &w->w_down, &w->ple_gate, &w->ple_proj};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            if (all[i]->data)
                fn(all[i]);
    }
    if (m->part.head && m->output.data)
        fn(&m->output); /* tok_embd is only gathered from: it stays as mapped */
    if (m->ple_model_proj.data)
        fn(&m->ple_model_proj);
}

static void unpack_weight(sl_weight *w)
{
    sl_pack_free(w->packed);
    w->packed = NULL;
}

int sl_model_config(gguf_file *f, sl_config *c, bool assistant, sl_err *err)
{
    if (sl_config_from_gguf(c, f, err))
        return -1;
    if (assistant && c->d_backbone == 0)
        return sl_fail(err, "%s: general.architecture \"%s\" is not a Gemma 4 assistant "
                       "(gemma4-assistant or gemma4_mtp)", f->path, c->arch);
    if (!assistant && c->d_backbone > 0)
        return sl_fail(err, "%s: is a %s drafter of a Gemma 4 model, not a model of its own (use "
                       "it as the draft: model/mtp.h)", f->path, c->arch);
    return 0;
}

int sl_model_from_gguf(sl_model **out, gguf_file *f, const sl_model_part *part, sl_err *err)
{
    *out = NULL;
    sl_model *m = calloc(1, sizeof *m);
    if (!m) {
        gguf_close(f);
        return sl_fail(err, "out of memory loading %s", f->path);
    }
    m->gguf = f;
    if (sl_model_config(f, &m->cfg, false, err))
        goto fail;
    const sl_config *c = &m->cfg;
    m->part = part ? *part : (sl_model_part){0, c->n_layer, true, true, false};
    if (m->part.l0 < 0 || m->part.l1 > c->n_layer || m->part.l0 > m->part.l1) {
        sl_fail(err, "%s: layer range [%d, %d) is outside the model's %d layers", f->path,
                m->part.l0, m->part.l1, c->n_layer);
        goto fail;
    }
    m->layer = calloc((size_t)c->n_layer, sizeof *m->layer);
    m->owned = malloc(norm_floats(c, &m->part) * sizeof(float));
    if (!m->layer || !m->owned) {
        sl_fail(err, "out of memory loading %s", f->path);
        goto fail;
    }
    float *cursor = m->owned;

    /* A layer part of a model with per-layer embeddings gathers the main
     * embedding too: its per-layer inputs project it. */
    bool need_embd = m->part.embed || m->part.head ||
                     (c->n_embd_per_layer > 0 && m->part.l1 > m->part.l0);
    if (need_embd && bind_matrix(f, "token_embd.weight", c->d_model, c->n_vocab, true,
                                 &m->tok_embd, err))
        goto fail;
    if (check_row_blocks(f, "token_embd.weight", &m->tok_embd, err))
        goto fail;
    if (m->part.head) {
        if (bind_vector(f, "output_norm.weight", c->d_model, true, &cursor, &m->output_norm, err) ||
            bind_matrix(f, "output.weight", c->d_model, c->n_vocab, false, &m->output, err) ||
            check_row_blocks(f, "output.weight", &m->output, err))
            goto fail;
        if (!m->output.data) {
            m->output = m->tok_embd;
            m->tied_output = true;
        }
    }
    for (int il = m->part.l0; il < m->part.l1; il++)
        if (bind_layer(m, il, &cursor, err))
            goto fail;
    if (bind_gemma4_extras(m, &cursor, err))
        goto fail;
    for_each_matrix(m, pack_weight);
    *out = m;
    return 0;
fail:
    sl_model_free(m);
    return -1;
}

int sl_model_load(sl_model **out, const char *path, const sl_model_part *part, sl_err *err)
{
    gguf_file *f;
    *out = NULL;
    if (gguf_open(&f, path, err))
        return -1;
    return sl_model_from_gguf(out, f, part, err);
}

void sl_model_free(sl_model *m)
{
    if (!m)
        return;
    if (m->layer)
        for_each_matrix(m, unpack_weight);
    gguf_close(m->gguf);
    free(m->layer);
    free(m->owned);
    free(m);
}

/* For other loaders of the same tensors (model/mtp.c). */
int sl_model_bind_matrix(const gguf_file *f, const char *name, int64_t n_in, int64_t n_out,
                         bool required, sl_weight *w, sl_err *err)
{
    return bind_matrix(f, name, n_in, n_out, required, w, err) ||
                   check_row_blocks(f, name, w, err)
               ? -1
               : 0;
}

int sl_model_bind_vector(const gguf_file *f, const char *name, int64_t n, bool required,
                         float **cursor, const float **out, sl_err *err)
{
    return bind_vector(f, name, n, required, cursor, out, err);
}

void sl_weight_pack(sl_weight *w) { pack_weight(w); }
