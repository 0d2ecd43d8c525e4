#include "model/config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/kvshare.h"

/* Per-architecture defaults that llama.cpp hard-codes rather than stores in
 * the GGUF; everything else comes from metadata. */
typedef struct arch_traits {
    const char *name;
    sl_act act;
    bool gemma_family;  /* embedding scale, NeoX RoPE, GeGLU */
    bool post_norms;
    bool qk_norm;
    int swa_pattern;    /* layer il is sliding iff il % pattern < pattern - 1; 0: none */
    float swa_rope_base;/* RoPE base of sliding layers; 0: same as global */
    int big_layer_count;/* the 27B size scales queries by d_model/n_head instead of head_dim */
    /* Gemma 4: q.k is not scaled (the q/k norms do it), V gets a weight-free
     * RMSNorm, a layer without attn_v uses its K as V, global layers divide
     * their RoPE frequencies by rope_freqs.weight, and KV sharing and
     * per-layer embeddings are read from metadata.
     * Sources: llama.cpp's llama_model_gemma4 (load_arch_hparams,
     * load_arch_tensors) and its graph (src/models/gemma4-iswa.cpp), and
     * convert_hf_to_gguf.py's Gemma4Model (the keys; "proportional" RoPE
     * written as rope.dimension_count = global head_dim with factors 1 for
     * the rotated quarter of the pairs and 1e30 for the rest; norm weights
     * stored as used, no 1 + w). Assumptions: the KV-sharing source is
     * llama.cpp's (layer n_own-2 for sliding, n_own-1 for global readers);
     * Hugging Face takes the last non-shared layer of the same kind, which
     * is the same layer for E2B and E4B, and other layouts are refused
     * (kvshare.c). V = K wherever a layer with its own cache has no attn_v
     * (llama.cpp's rule; the 26B/31B global layers). Mixture-of-experts
     * layers are refused at load. */
    bool gemma4;
    /* Gemma 4's drafter ("MTP assistant"): Gemma 4 layers whose attention has
     * queries only and reads the target's cache, fed by a projection of the
     * target's hidden state and token embedding (model/mtp.h). llama.cpp
     * names it gemma4-assistant; ik_llama.cpp's own converter gemma4_mtp. */
    bool assistant;
} arch_traits;

static const arch_traits ARCHES[] = {
    {"llama", SL_ACT_SILU, false, false, false, 0, 0.0f, -1, false, false},
    {"gemma", SL_ACT_GELU_TANH, true, false, false, 0, 0.0f, -1, false, false},
    {"gemma2", SL_ACT_GELU_TANH, true, true, false, 2, 0.0f, 46, false, false},
    {"gemma3", SL_ACT_GELU_TANH, true, true, true, 6, 10000.0f, 62, false, false},
    {"gemma4", SL_ACT_GELU_TANH, true, true, true, 0, 0.0f, -1, true, false},
    {"gemma4-assistant", SL_ACT_GELU_TANH, true, true, true, 0, 0.0f, -1, true, true},
    {"gemma4_mtp", SL_ACT_GELU_TANH, true, true, true, 0, 0.0f, -1, true, true},
};

static const arch_traits *find_arch(const char *name)
{
    for (size_t i = 0; i < sizeof ARCHES / sizeof ARCHES[0]; i++)
        if (strcmp(ARCHES[i].name, name) == 0)
            return &ARCHES[i];
    return NULL;
}

/* "{arch}.suffix" */
static const char *akey(char *buf, size_t cap, const char *arch, const char *suffix)
{
    snprintf(buf, cap, "%s.%s", arch, suffix);
    return buf;
}

static int req_int(const gguf_file *f, const char *arch, const char *suffix, int lo, int hi,
                   int *out, sl_err *err)
{
    char k[160];
    uint32_t v;
    if (gguf_req_u32(f, akey(k, sizeof k, arch, suffix), &v, err))
        return -1;
    if ((int64_t)v < lo || (int64_t)v > hi)
        return sl_fail(err, "%s: metadata %s = %u is out of range [%d, %d]", f->path, k, v, lo, hi);
    *out = (int)v;
    return 0;
}

static int opt_int(const gguf_file *f, const char *arch, const char *suffix, int lo, int hi,
                   int *out, sl_err *err)
{
    char k[160];
    uint32_t v;
    int rc = gguf_get_u32(f, akey(k, sizeof k, arch, suffix), &v, err);
    if (rc != 0)
        return rc < 0 ? -1 : 0;
    if ((int64_t)v < lo || (int64_t)v > hi)
        return sl_fail(err, "%s: metadata %s = %u is out of range [%d, %d]", f->path, k, v, lo, hi);
    *out = (int)v;
    return 0;
}

static int opt_float(const gguf_file *f, const char *arch, const char *suffix, float lo, float hi,
                     float *out, sl_err *err)
{
    char k[160];
    float v;
    int rc = gguf_get_f32(f, akey(k, sizeof k, arch, suffix), &v, err);
    if (rc != 0)
        return rc < 0 ? -1 : 0;
    if (!(v >= lo && v <= hi))
        return sl_fail(err, "%s: metadata %s = %g is out of range [%g, %g]", f->path, k, v, lo, hi);
    *out = v;
    return 0;
}

/* {arch}.suffix as one integer for every layer or, as llama.cpp writes it
 * for Gemma 4 (head_count_kv, feed_forward_length), one per layer. Absent
 * and not required: out[] keeps what the caller put there. */
static int layer_ints(const gguf_file *f, const char *arch, const char *suffix, int n_layer,
                      int lo, int hi, bool required, int *out, sl_err *err)
{
    char k[160];
    const gguf_kv *kv = gguf_find(f, akey(k, sizeof k, arch, suffix));
    if (kv && kv->type == GGUF_ARRAY) {
        if (kv->arr_type == GGUF_STRING || kv->arr_type == GGUF_ARRAY ||
            kv->arr_n != (uint64_t)n_layer)
            return sl_fail(err, "%s: metadata %s must be one number or one per layer (%d)",
                           f->path, k, n_layer);
        for (int il = 0; il < n_layer; il++) {
            double v = gguf_arr_num(kv, (uint64_t)il);
            if (!(v >= lo && v <= hi) || v != (double)(int)v)
                return sl_fail(err, "%s: metadata %s[%d] = %g is out of range [%d, %d]", f->path,
                               k, il, v, lo, hi);
            out[il] = (int)v;
        }
        return 0;
    }
    int v = INT32_MIN;
    if (required ? req_int(f, arch, suffix, lo, hi, &v, err)
                 : opt_int(f, arch, suffix, lo, hi, &v, err))
        return -1;
    if (v != INT32_MIN)
        for (int il = 0; il < n_layer; il++)
            out[il] = v;
    return 0;
}

/* The vocabulary size: {arch}.vocab_size, else the tokenizer's token list,
 * else the embedding's row count. */
static int read_vocab(sl_config *c, const gguf_file *f, sl_err *err)
{
    int n = 0;
    if (opt_int(f, c->arch, "vocab_size", 1, 1 << 24, &n, err))
        return -1;
    if (n == 0) {
        const gguf_kv *toks = gguf_find(f, "tokenizer.ggml.tokens");
        if (toks && toks->type == GGUF_ARRAY && toks->arr_n > 0 && toks->arr_n <= (1u << 24))
            n = (int)toks->arr_n;
    }
    const gguf_tensor *emb = gguf_find_tensor(f, "token_embd.weight");
    if (n == 0 && emb && emb->n_dims == 2 && emb->ne[1] <= (1 << 24))
        n = (int)emb->ne[1];
    if (n == 0)
        return sl_fail(err, "%s: cannot tell the vocabulary size (no %s.vocab_size, "
                       "tokenizer.ggml.tokens or token_embd.weight)", f->path, c->arch);
    c->n_vocab = n;
    return 0;
}

static int read_rope_scaling(const gguf_file *f, const char *arch, float *freq_scale, sl_err *err)
{
    char k[160];
    char *type = NULL;
    *freq_scale = 1.0f;
    int rc = gguf_get_str(f, akey(k, sizeof k, arch, "rope.scaling.type"), &type, err);
    if (rc < 0)
        return -1;
    float factor = 1.0f;
    if (opt_float(f, arch, "rope.scaling.factor", 0.0f, 1e6f, &factor, err)) {
        free(type);
        return -1;
    }
    if (rc == 0 && strcmp(type, "none") != 0 && strcmp(type, "linear") != 0) {
        sl_fail(err, "%s: metadata %s = \"%s\" is not supported (only linear)", f->path, k, type);
        free(type);
        return -1;
    }
    bool linear = rc == 0 && strcmp(type, "linear") == 0;
    free(type);
    /* Older files carry only the factor (rope.scale_linear). */
    if (!linear && opt_float(f, arch, "rope.scale_linear", 0.0f, 1e6f, &factor, err))
        return -1;
    if (factor > 0.0f && factor != 1.0f)
        *freq_scale = 1.0f / factor;
    return 0;
}

/* Which layers slide: {arch}.attention.sliding_window_pattern is either a
 * period N (layer il slides iff il % N < N - 1) or, as llama.cpp writes it
 * for newer Gemmas, one flag per layer (true = sliding). */
static int read_swa_layout(const gguf_file *f, const sl_config *c, int *pattern,
                           const gguf_kv **layout, sl_err *err)
{
    char k[160];
    const gguf_kv *kv = gguf_find(f, akey(k, sizeof k, c->arch, "attention.sliding_window_pattern"));
    if (!kv)
        return 0;
    if (kv->type == GGUF_ARRAY) {
        if (kv->arr_type == GGUF_STRING || kv->arr_type == GGUF_ARRAY ||
            kv->arr_n != (uint64_t)c->n_layer)
            return sl_fail(err, "%s: %s must hold one flag per layer (%d)", f->path, k, c->n_layer);
        *layout = kv;
        return 0;
    }
    return opt_int(f, c->arch, "attention.sliding_window_pattern", 0, SL_MAX_LAYERS, pattern, err);
}

/* Head and RoPE sizes of one kind of layer (global, or sliding with the
 * _swa keys that Gemma 4 adds; without them sliding layers match global). */
typedef struct layer_kind {
    int head_dim, rope_dim;
} layer_kind;

static int read_kinds(const gguf_file *f, const sl_config *c, int n_head0, layer_kind *global,
                      layer_kind *swa, sl_err *err)
{
    global->head_dim = c->d_model / n_head0;
    if (opt_int(f, c->arch, "attention.key_length", 1, 65536, &global->head_dim, err))
        return -1;
    swa->head_dim = global->head_dim;
    if (opt_int(f, c->arch, "attention.key_length_swa", 1, 65536, &swa->head_dim, err))
        return -1;
    int v_dim = global->head_dim, v_dim_swa = swa->head_dim;
    if (opt_int(f, c->arch, "attention.value_length", 1, 65536, &v_dim, err) ||
        opt_int(f, c->arch, "attention.value_length_swa", 1, 65536, &v_dim_swa, err))
        return -1;
    if (v_dim != global->head_dim || v_dim_swa != swa->head_dim)
        return sl_fail(err, "%s: %s.attention.value_length%s %d differs from key_length%s %d "
                       "(not supported)", f->path, c->arch, v_dim != global->head_dim ? "" : "_swa",
                       v_dim != global->head_dim ? v_dim : v_dim_swa,
                       v_dim != global->head_dim ? "" : "_swa",
                       v_dim != global->head_dim ? global->head_dim : swa->head_dim);
    if (global->head_dim % 2 != 0 || swa->head_dim % 2 != 0)
        return sl_fail(err, "%s: head dimension %d is odd", f->path,
                       global->head_dim % 2 ? global->head_dim : swa->head_dim);
    global->rope_dim = global->head_dim;
    if (opt_int(f, c->arch, "rope.dimension_count", 2, global->head_dim, &global->rope_dim, err))
        return -1;
    swa->rope_dim = swa->head_dim == global->head_dim ? global->rope_dim : swa->head_dim;
    if (opt_int(f, c->arch, "rope.dimension_count_swa", 2, swa->head_dim, &swa->rope_dim, err))
        return -1;
    if (global->rope_dim % 2 != 0 || swa->rope_dim % 2 != 0)
        return sl_fail(err, "%s: %s.rope.dimension_count%s is odd", f->path, c->arch,
                       global->rope_dim % 2 ? "" : "_swa");
    return 0;
}

/* Gemma 4: which layers read another's cache, and which have no V. */
static int fill_kv_sharing(sl_config *c, const gguf_file *f, const arch_traits *t, sl_err *err)
{
    for (int il = 0; il < c->n_layer; il++)
        c->layer[il].kv_src = -1;
    if (!t->gemma4 || t->assistant) /* an assistant reads the target's cache: mtp.c */
        return 0;
    if (opt_int(f, c->arch, "attention.shared_kv_layers", 0, c->n_layer - 1, &c->n_kv_shared, err))
        return -1;
    bool is_swa[SL_MAX_LAYERS];
    int src[SL_MAX_LAYERS];
    for (int il = 0; il < c->n_layer; il++)
        is_swa[il] = c->layer[il].sliding_window > 0;
    if (kvshare_sources(c->n_layer, c->n_kv_shared, is_swa, src, err)) {
        char msg[sizeof err->msg];
        snprintf(msg, sizeof msg, "%s", err->msg);
        return sl_fail(err, "%s: %s.attention.shared_kv_layers: %s", f->path, c->arch, msg);
    }
    for (int il = 0; il < c->n_layer; il++) {
        sl_layer_cfg *L = &c->layer[il];
        L->kv_src = src[il];
        if (src[il] >= 0) {
            const sl_layer_cfg *S = &c->layer[src[il]];
            if (S->n_kv_head != L->n_kv_head || S->head_dim != L->head_dim)
                return sl_fail(err, "%s: layer %d (%d kv heads x %d) cannot read the KV cache of "
                               "layer %d (%d kv heads x %d)", f->path, il, L->n_kv_head,
                               L->head_dim, src[il], S->n_kv_head, S->head_dim);
            continue;
        }
        char name[64];
        snprintf(name, sizeof name, "blk.%d.attn_v.weight", il);
        L->v_is_k = gguf_find_tensor(f, name) == NULL;
    }
    return 0;
}

static int fill_layers(sl_config *c, const gguf_file *f, const arch_traits *t, sl_err *err)
{
    int n_head[SL_MAX_LAYERS], n_kv_head[SL_MAX_LAYERS], d_ff[SL_MAX_LAYERS];
    int window = 0, pattern = t->swa_pattern;
    float rope_base = 10000.0f, swa_base = t->swa_rope_base, freq_scale;
    float attn_scale = 0.0f;
    layer_kind global, swa;

    if (layer_ints(f, c->arch, "attention.head_count", c->n_layer, 1, 4096, true, n_head, err) ||
        layer_ints(f, c->arch, "feed_forward_length", c->n_layer, 1, 1 << 22, true, d_ff, err))
        return -1;
    memcpy(n_kv_head, n_head, sizeof(int) * (size_t)c->n_layer);
    if (layer_ints(f, c->arch, "attention.head_count_kv", c->n_layer, 1, 4096, false, n_kv_head,
                   err))
        return -1;
    for (int il = 0; il < c->n_layer; il++)
        if (n_kv_head[il] > n_head[il] || n_head[il] % n_kv_head[il] != 0)
            return sl_fail(err, "%s: layer %d: attention.head_count %d is not a multiple of "
                           "head_count_kv %d", f->path, il, n_head[il], n_kv_head[il]);
    if (read_kinds(f, c, n_head[0], &global, &swa, err))
        return -1;
    if (opt_float(f, c->arch, "rope.freq_base", 1.0f, 1e12f, &rope_base, err))
        return -1;
    if (read_rope_scaling(f, c->arch, &freq_scale, err))
        return -1;
    if (opt_int(f, c->arch, "attention.sliding_window", 0, 1 << 30, &window, err))
        return -1;
    const gguf_kv *layout = NULL;
    if (read_swa_layout(f, c, &pattern, &layout, err))
        return -1;
    if (opt_float(f, c->arch, "rope.freq_base_swa", 1.0f, 1e12f, &swa_base, err))
        return -1;
    if (opt_float(f, c->arch, "attention.scale", 0.0f, 1e6f, &attn_scale, err))
        return -1;
    bool freq_factors = t->gemma4 && gguf_find_tensor(f, "rope_freqs.weight") != NULL;

    for (int il = 0; il < c->n_layer; il++) {
        sl_layer_cfg *L = &c->layer[il];
        bool sliding = window > 0 && (layout ? gguf_arr_num(layout, (uint64_t)il) != 0
                                             : pattern > 0 && il % pattern < pattern - 1);
        const layer_kind *kind = sliding ? &swa : &global;
        L->n_head = n_head[il];
        L->n_kv_head = n_kv_head[il];
        L->d_ff = d_ff[il];
        L->head_dim = kind->head_dim;
        L->rope_dim = kind->rope_dim;
        L->sliding_window = sliding ? window : 0;
        /* Gemma 3's local layers keep their own base and ignore the scaling
         * of the long-context global layers. */
        L->rope_base = sliding && swa_base > 0.0f ? swa_base : rope_base;
        L->rope_freq_scale = sliding && swa_base > 0.0f ? 1.0f : freq_scale;
        L->rope_freq_factors = freq_factors && !sliding;
        if (attn_scale > 0.0f)
            L->attn_scale = attn_scale;
        else if (t->gemma4)
            L->attn_scale = 1.0f; /* llama.cpp: f_attention_scale = 1 (self.scaling = 1.0) */
        else
            L->attn_scale = c->n_layer == t->big_layer_count
                                ? 1.0f / sqrtf((float)(c->d_model / n_head[il]))
                                : 1.0f / sqrtf((float)L->head_dim);
        if (L->d_ff > c->d_ff)
            c->d_ff = L->d_ff;
    }
    return fill_kv_sharing(c, f, t, err);
}

/* Gemma 4's per-layer embeddings: the width, and the three scales that
 * llama.cpp's build_inp_per_layer / project_per_layer_inputs hard-code. */
static int read_ple(sl_config *c, const gguf_file *f, const arch_traits *t, sl_err *err)
{
    if (!t->gemma4)
        return 0;
    if (opt_int(f, c->arch, "embedding_length_per_layer_input", 0, 1 << 16, &c->n_embd_per_layer,
                err))
        return -1;
    c->ple_tok_scale = sqrtf((float)c->n_embd_per_layer);
    c->ple_proj_scale = 1.0f / sqrtf((float)c->d_model);
    c->ple_input_scale = 1.0f / sqrtf(2.0f);
    return 0;
}

/* The assistant's width of the target's hidden state and its centroid head
 * (llama.cpp: embedding_length_out, no centroids; ik_llama.cpp's gemma4_mtp:
 * backbone_embedding_length, centroid_count, centroid_top_k; ik reads
 * n_centroids and centroid_top_k for gemma4-assistant files). */
static int read_assistant(sl_config *c, const gguf_file *f, const arch_traits *t, sl_err *err)
{
    if (!t->assistant)
        return 0;
    if (opt_int(f, c->arch, "embedding_length_out", 1, 1 << 20, &c->d_backbone, err) ||
        opt_int(f, c->arch, "backbone_embedding_length", 1, 1 << 20, &c->d_backbone, err) ||
        opt_int(f, c->arch, "n_centroids", 0, 1 << 24, &c->n_centroids, err) ||
        opt_int(f, c->arch, "centroid_count", 0, 1 << 24, &c->n_centroids, err) ||
        opt_int(f, c->arch, "centroid_top_k", 0, 1 << 24, &c->centroid_top_k, err))
        return -1;
    if (c->d_backbone == 0)
        return sl_fail(err, "%s: missing required key %s.embedding_length_out (the target's hidden "
                       "size; ik_llama.cpp files: %s.backbone_embedding_length)", f->path, c->arch,
                       c->arch);
    if (c->n_centroids > 0 && (c->centroid_top_k < 1 || c->centroid_top_k > c->n_centroids))
        return sl_fail(err, "%s: %s.centroid_top_k = %d must be in [1, %d] (the centroid count)",
                       f->path, c->arch, c->centroid_top_k, c->n_centroids);
    return 0;
}

int sl_config_from_gguf(sl_config *c, const gguf_file *f, sl_err *err)
{
    memset(c, 0, sizeof *c);
    char *arch = NULL;
    int rc = gguf_get_str(f, "general.architecture", &arch, err);
    if (rc < 0)
        return -1;
    if (rc > 0)
        return sl_fail(err, "%s: missing required key general.architecture", f->path);
    const arch_traits *t = find_arch(arch);
    if (!t) {
        sl_fail(err, "%s: general.architecture \"%s\" is not supported "
                "(supported: llama, gemma, gemma2, gemma3, gemma4, gemma4-assistant, gemma4_mtp)",
                f->path, arch);
        free(arch);
        return -1;
    }
    snprintf(c->arch, sizeof c->arch, "%s", arch);
    free(arch);

    if (req_int(f, c->arch, "block_count", 1, SL_MAX_LAYERS, &c->n_layer, err) ||
        req_int(f, c->arch, "embedding_length", 1, 1 << 20, &c->d_model, err))
        return -1;
    c->n_ctx_train = 4096;
    if (opt_int(f, c->arch, "context_length", 1, 1 << 30, &c->n_ctx_train, err))
        return -1;
    c->norm_eps = 1e-6f;
    if (opt_float(f, c->arch, "attention.layer_norm_rms_epsilon", 0.0f, 1.0f, &c->norm_eps, err))
        return -1;
    if (read_vocab(c, f, err))
        return -1;

    c->act = t->act;
    c->rope_neox = t->gemma_family;
    c->embed_scale = t->gemma_family ? sqrtf((float)c->d_model) : 1.0f;
    c->post_attn_norm = t->post_norms;
    c->post_ffn_norm = t->post_norms;
    c->qk_norm = t->qk_norm;
    if (opt_float(f, c->arch, "attn_logit_softcapping", 0.0f, 1e6f, &c->attn_softcap, err) ||
        opt_float(f, c->arch, "final_logit_softcapping", 0.0f, 1e6f, &c->final_softcap, err))
        return -1;
    c->v_norm = t->gemma4;
    if (read_ple(c, f, t, err) || read_assistant(c, f, t, err))
        return -1;
    return fill_layers(c, f, t, err);
}

int sl_config_max_q_dim(const sl_config *c)
{
    int m = 0;
    for (int il = 0; il < c->n_layer; il++)
        if (c->layer[il].n_head * c->layer[il].head_dim > m)
            m = c->layer[il].n_head * c->layer[il].head_dim;
    return m;
}

int sl_config_max_kv_dim(const sl_config *c)
{
    int m = 0;
    for (int il = 0; il < c->n_layer; il++)
        if (c->layer[il].n_kv_head * c->layer[il].head_dim > m)
            m = c->layer[il].n_kv_head * c->layer[il].head_dim;
    return m;
}

int sl_config_max_d_ff(const sl_config *c)
{
    int m = 0;
    for (int il = 0; il < c->n_layer; il++)
        if (c->layer[il].d_ff > m)
            m = c->layer[il].d_ff;
    return m;
}

void sl_config_print(const sl_config *c, void *file)
{
    FILE *out = file;
    fprintf(out, "architecture   %s\n", c->arch);
    fprintf(out, "layers         %d\n", c->n_layer);
    fprintf(out, "d_model        %d\n", c->d_model);
    fprintf(out, "d_ff           %d\n", c->d_ff);
    fprintf(out, "vocab          %d\n", c->n_vocab);
    fprintf(out, "context        %d\n", c->n_ctx_train);
    fprintf(out, "norm eps       %g\n", c->norm_eps);
    fprintf(out, "embed scale    %g\n", c->embed_scale);
    fprintf(out, "activation     %s\n", c->act == SL_ACT_SILU ? "silu" : "gelu_tanh");
    fprintf(out, "rope           %s\n", c->rope_neox ? "neox" : "adjacent pairs");
    fprintf(out, "post norms     attn %s, ffn %s\n", c->post_attn_norm ? "yes" : "no",
            c->post_ffn_norm ? "yes" : "no");
    fprintf(out, "qk norm        %s\n", c->qk_norm ? "yes" : "no");
    fprintf(out, "softcap        attn %g, final %g\n", c->attn_softcap, c->final_softcap);
    int n_sliding = 0;
    for (int il = 0; il < c->n_layer; il++)
        n_sliding += c->layer[il].sliding_window > 0;
    const sl_layer_cfg *L0 = &c->layer[0];
    fprintf(out, "heads          %d q, %d kv, head_dim %d, rope_dim %d, scale %g\n",
            L0->n_head, L0->n_kv_head, L0->head_dim, L0->rope_dim, L0->attn_scale);
    fprintf(out, "layers         %d sliding, %d global\n", n_sliding, c->n_layer - n_sliding);
    if (c->n_kv_shared > 0)
        fprintf(out, "kv sharing     the last %d layers read earlier layers' caches\n",
                c->n_kv_shared);
    if (c->n_embd_per_layer > 0)
        fprintf(out, "per-layer emb  %d per layer\n", c->n_embd_per_layer);
    for (int il = 0; il < c->n_layer; il++) {
        const sl_layer_cfg *L = &c->layer[il];
        const sl_layer_cfg *P = &c->layer[il > 0 ? il - 1 : 0];
        if (il > 0 && L->sliding_window == P->sliding_window && L->rope_base == P->rope_base &&
            L->rope_freq_scale == P->rope_freq_scale && L->head_dim == P->head_dim &&
            L->n_kv_head == P->n_kv_head && L->d_ff == P->d_ff && L->kv_src == P->kv_src &&
            L->v_is_k == P->v_is_k)
            continue;
        fprintf(out, "  from layer %-3d window %d, rope base %g, freq scale %g", il,
                L->sliding_window, L->rope_base, L->rope_freq_scale);
        if (c->layer[il].head_dim != L0->head_dim || L->n_kv_head != L0->n_kv_head ||
            L->d_ff != c->d_ff || L->kv_src >= 0 || L->v_is_k || L->rope_freq_factors)
            fprintf(out, ", %d kv heads x %d, rope_dim %d%s, d_ff %d%s%s", L->n_kv_head,
                    L->head_dim, L->rope_dim, L->rope_freq_factors ? " (freq factors)" : "",
                    L->d_ff, L->v_is_k ? ", V = K" : "", L->kv_src >= 0 ? ", reads KV of" : "");
        if (L->kv_src >= 0)
            fprintf(out, " %d", L->kv_src);
        fprintf(out, "\n");
    }
}
