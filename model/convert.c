#include "model/convert.h"

#include <dirent.h>
#include <errno.h>
#include <json-c/json.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/quant.h"
#include "model/gguf.h"
#include "model/safetensors.h"
#include "model/tokenizer.h"
#include "util/pool.h"

#define MAX_SHARDS 256

/* What the converter needs to know of config.json. */
typedef struct hf_config {
    char arch[16];            /* GGUF architecture name */
    bool gemma;               /* norm weights shift by +1; NeoX RoPE (no permute) */
    int n_layer, d_model, d_ff, n_head, n_kv_head, head_dim, n_vocab, n_ctx;
    double norm_eps, rope_theta, rope_local_theta, rope_factor;
    double attn_softcap, final_softcap, query_pre_attn_scalar;
    int sliding_window;
    bool *layer_sliding;      /* n_layer flags, gemma2/3/4 */
    bool tied;
    bool norm_shift;          /* HF stores norm weights w of (1 + w): Gemma 1-3, not 4 */
    /* Gemma 4 (Gemma4ForCausalLM / the text part of Gemma4ForConditionalGeneration):
     * head_dim and n_kv_head above are the global layers', these the sliding ones' */
    bool gemma4;
    int head_dim_swa, n_kv_head_swa, n_kv_shared, n_embd_per_layer;
    bool double_wide_mlp;     /* the KV-sharing layers have 2 x d_ff */
    double rope_partial_full, rope_partial_swa;
} hf_config;

typedef struct converter {
    const char *dir;
    const char *prefix;       /* "model." or "model.language_model." (multimodal checkpoints) */
    char path[4096];
    hf_config cfg;
    st_file *shards[MAX_SHARDS];
    int n_shards;
    gguf_writer *w;
    void **buffers;           /* converted tensor data, alive until written */
    int n_buffers, cap_buffers;
    const sl_convert_opts *opts;
} converter;

static const char *in_dir(converter *cv, const char *name)
{
    snprintf(cv->path, sizeof cv->path, "%s/%s", cv->dir, name);
    return cv->path;
}

/* ---- config.json ---- */

static json_object *load_json(const char *path, sl_err *err)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        sl_fail(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    if (size < 0 || size > (64l << 20)) {
        fclose(fp);
        sl_fail(err, "%s: unreadable or larger than 64 MB", path);
        return NULL;
    }
    char *buf = malloc((size_t)size + 1);
    size_t got = buf ? fread(buf, 1, (size_t)size, fp) : 0;
    fclose(fp);
    if (!buf || got != (size_t)size) {
        free(buf);
        sl_fail(err, "%s: read failed", path);
        return NULL;
    }
    buf[size] = 0;
    json_tokener *tok = json_tokener_new();
    json_object *root = tok ? json_tokener_parse_ex(tok, buf, (int)size) : NULL;
    enum json_tokener_error jerr = tok ? json_tokener_get_error(tok) : json_tokener_error_parse_unexpected;
    if (tok)
        json_tokener_free(tok);
    free(buf);
    if (!root || jerr != json_tokener_success || !json_object_is_type(root, json_type_object)) {
        json_object_put(root);
        sl_fail(err, "%s: not a valid JSON object (%s)", path,
                jerr == json_tokener_success ? "not an object" : json_tokener_error_desc(jerr));
        return NULL;
    }
    return root;
}

/* Integer field; required fields fail naming the key, optional ones keep *out. */
static int jint(json_object *o, const char *key, bool required, int lo, int hi, int *out,
                const char *path, sl_err *err)
{
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null)) {
        if (required)
            return sl_fail(err, "%s: missing required field \"%s\"", path, key);
        return 0;
    }
    if (!json_object_is_type(v, json_type_int))
        return sl_fail(err, "%s: field \"%s\" must be an integer", path, key);
    int64_t x = json_object_get_int64(v);
    if (x < lo || x > hi)
        return sl_fail(err, "%s: field \"%s\" = %lld is out of range [%d, %d]", path, key,
                       (long long)x, lo, hi);
    *out = (int)x;
    return 0;
}

static int jnum(json_object *o, const char *key, double *out, const char *path, sl_err *err)
{
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
        return 0;
    if (!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double))
        return sl_fail(err, "%s: field \"%s\" must be a number", path, key);
    double x = json_object_get_double(v);
    if (!isfinite(x) || x < 0)
        return sl_fail(err, "%s: field \"%s\" = %g is not a finite non-negative number", path, key, x);
    *out = x;
    return 0;
}

static const char *model_type_to_arch(const char *mt, bool *gemma)
{
    static const struct { const char *hf, *gguf; bool gemma; } map[] = {
        {"gemma", "gemma", true},   {"gemma2", "gemma2", true}, {"gemma3", "gemma3", true},
        {"gemma3_text", "gemma3", true}, {"gemma4_text", "gemma4", true}, {"gemma4", "gemma4", true},
        {"llama", "llama", false},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(mt, map[i].hf) == 0) {
            *gemma = map[i].gemma;
            return map[i].gguf;
        }
    return NULL;
}

static int read_layer_types(hf_config *c, json_object *root, const char *path, sl_err *err)
{
    c->layer_sliding = calloc((size_t)c->n_layer, sizeof(bool));
    if (!c->layer_sliding)
        return sl_fail(err, "out of memory");
    json_object *lt;
    if (json_object_object_get_ex(root, "layer_types", &lt) && json_object_is_type(lt, json_type_array)) {
        if ((int)json_object_array_length(lt) != c->n_layer)
            return sl_fail(err, "%s: layer_types has %d entries for %d layers", path,
                           (int)json_object_array_length(lt), c->n_layer);
        for (int il = 0; il < c->n_layer; il++) {
            const char *s = json_object_get_string(json_object_array_get_idx(lt, il));
            if (!s || (strcmp(s, "sliding_attention") && strcmp(s, "full_attention")))
                return sl_fail(err, "%s: layer_types[%d] must be sliding_attention or full_attention",
                               path, il);
            c->layer_sliding[il] = strcmp(s, "sliding_attention") == 0;
        }
        return 0;
    }
    /* Older configs: Gemma 2 alternates (even layers local); Gemma 3 uses a
     * pattern where every Nth layer is global. */
    int pattern = strcmp(c->arch, "gemma3") == 0 ? 6 : 2;
    if (jint(root, "sliding_window_pattern", false, 1, 1 << 16, &pattern, path, err))
        return -1;
    for (int il = 0; il < c->n_layer; il++)
        c->layer_sliding[il] = il % pattern < pattern - 1;
    return 0;
}

static bool jbool(json_object *o, const char *key, bool dflt)
{
    json_object *v;
    if (json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_boolean))
        return json_object_get_boolean(v);
    return dflt;
}

/* rope_parameters.{full_attention, sliding_attention}: base and the share
 * of a head's dimensions that rotate. */
static int read_rope_params(json_object *text, const char *kind, double *theta, double *partial,
                            const char *path, sl_err *err)
{
    json_object *rp, *k;
    *partial = 1.0;
    if (!json_object_object_get_ex(text, "rope_parameters", &rp) ||
        !json_object_object_get_ex(rp, kind, &k) || !json_object_is_type(k, json_type_object))
        return sl_fail(err, "%s: missing rope_parameters.%s", path, kind);
    if (jnum(k, "rope_theta", theta, path, err) || jnum(k, "partial_rotary_factor", partial, path, err))
        return -1;
    if (*partial <= 0 || *partial > 1)
        return sl_fail(err, "%s: rope_parameters.%s.partial_rotary_factor %g is not in (0, 1]",
                       path, kind, *partial);
    return 0;
}

/* Gemma 4's keys (llama.cpp's convert_hf_to_gguf.py Gemma4Model reads the same). */
static int read_gemma4(hf_config *c, json_object *text, const char *path, sl_err *err)
{
    c->head_dim_swa = c->head_dim;
    c->n_kv_head_swa = c->n_kv_head;
    double swa_theta = 10000.0;
    if (jint(text, "global_head_dim", false, 1, 65536, &c->head_dim, path, err) ||
        jint(text, "num_global_key_value_heads", false, 1, c->n_head, &c->n_kv_head, path, err) ||
        jint(text, "num_kv_shared_layers", false, 0, c->n_layer - 1, &c->n_kv_shared, path, err) ||
        jint(text, "hidden_size_per_layer_input", false, 0, 1 << 20, &c->n_embd_per_layer, path, err) ||
        read_rope_params(text, "full_attention", &c->rope_theta, &c->rope_partial_full, path, err) ||
        read_rope_params(text, "sliding_attention", &swa_theta, &c->rope_partial_swa, path, err))
        return -1;
    c->rope_local_theta = swa_theta;
    c->double_wide_mlp = jbool(text, "use_double_wide_mlp", false);
    if (c->n_head % c->n_kv_head)
        return sl_fail(err, "%s: num_attention_heads %d is not a multiple of "
                       "num_global_key_value_heads %d", path, c->n_head, c->n_kv_head);
    if (!json_object_object_get_ex(text, "layer_types", NULL))
        return sl_fail(err, "%s: missing required field \"layer_types\"", path);
    return 0;
}

static int read_config(converter *cv, sl_err *err)
{
    hf_config *c = &cv->cfg;
    const char *path = in_dir(cv, "config.json");
    char cpath[4096];
    snprintf(cpath, sizeof cpath, "%s", path);
    json_object *root = load_json(cpath, err);
    if (!root)
        return -1;
    int rc = -1;
    json_object *v;
    /* Multimodal Gemma 3 nests the text model's settings. */
    json_object *text = root;
    if (json_object_object_get_ex(root, "text_config", &v) && json_object_is_type(v, json_type_object))
        text = v;
    const char *mt = NULL;
    if (json_object_object_get_ex(text, "model_type", &v) && json_object_is_type(v, json_type_string))
        mt = json_object_get_string(v);
    const char *arch = mt ? model_type_to_arch(mt, &c->gemma) : NULL;
    if (!arch) {
        sl_fail(err, "%s: model_type \"%s\" is not supported (gemma, gemma2, gemma3, gemma3_text, "
                "gemma4_text, llama)",
                cpath, mt ? mt : "(missing)");
        goto out;
    }
    snprintf(c->arch, sizeof c->arch, "%s", arch);
    c->n_ctx = 8192;
    if (jint(text, "num_hidden_layers", true, 1, 512, &c->n_layer, cpath, err) ||
        jint(text, "hidden_size", true, 1, 1 << 20, &c->d_model, cpath, err) ||
        jint(text, "intermediate_size", true, 1, 1 << 22, &c->d_ff, cpath, err) ||
        jint(text, "num_attention_heads", true, 1, 4096, &c->n_head, cpath, err) ||
        jint(text, "vocab_size", true, 1, 1 << 24, &c->n_vocab, cpath, err) ||
        jint(text, "max_position_embeddings", false, 1, 1 << 30, &c->n_ctx, cpath, err))
        goto out;
    c->n_kv_head = c->n_head;
    c->head_dim = c->d_model / c->n_head;
    c->norm_eps = 1e-6;
    c->rope_theta = 10000.0;
    c->tied = c->gemma;
    if (jint(text, "num_key_value_heads", false, 1, c->n_head, &c->n_kv_head, cpath, err) ||
        jint(text, "head_dim", false, 1, 65536, &c->head_dim, cpath, err) ||
        jint(text, "sliding_window", false, 0, 1 << 30, &c->sliding_window, cpath, err) ||
        jnum(text, "rms_norm_eps", &c->norm_eps, cpath, err) ||
        jnum(text, "rope_theta", &c->rope_theta, cpath, err) ||
        jnum(text, "rope_local_base_freq", &c->rope_local_theta, cpath, err) ||
        jnum(text, "attn_logit_softcapping", &c->attn_softcap, cpath, err) ||
        jnum(text, "final_logit_softcapping", &c->final_softcap, cpath, err) ||
        jnum(text, "query_pre_attn_scalar", &c->query_pre_attn_scalar, cpath, err))
        goto out;
    if (c->n_head % c->n_kv_head) {
        sl_fail(err, "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d",
                cpath, c->n_head, c->n_kv_head);
        goto out;
    }
    if (json_object_object_get_ex(text, "tie_word_embeddings", &v) && json_object_is_type(v, json_type_boolean))
        c->tied = json_object_get_boolean(v);
    if (json_object_object_get_ex(text, "rope_scaling", &v) && json_object_is_type(v, json_type_object)) {
        json_object *t, *fct;
        const char *rt = NULL;
        if ((json_object_object_get_ex(v, "rope_type", &t) || json_object_object_get_ex(v, "type", &t)))
            rt = json_object_get_string(t);
        if (!rt || strcmp(rt, "linear") != 0 || !json_object_object_get_ex(v, "factor", &fct)) {
            sl_fail(err, "%s: rope_scaling of type \"%s\" is not supported (linear only)", cpath,
                    rt ? rt : "?");
            goto out;
        }
        c->rope_factor = json_object_get_double(fct);
    }
    c->gemma4 = strcmp(c->arch, "gemma4") == 0;
    c->norm_shift = c->gemma && !c->gemma4;
    if (c->gemma4 && read_gemma4(c, text, cpath, err))
        goto out;
    if (strcmp(c->arch, "gemma2") == 0 || strcmp(c->arch, "gemma3") == 0 || c->gemma4)
        if (read_layer_types(c, text, cpath, err))
            goto out;
    rc = 0;
out:
    json_object_put(root);
    return rc;
}

/* ---- shards ---- */

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int open_shards(converter *cv, sl_err *err)
{
    DIR *d = opendir(cv->dir);
    if (!d)
        return sl_fail(err, "%s: cannot open directory: %s", cv->dir, strerror(errno));
    char *names[MAX_SHARDS];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < MAX_SHARDS)
        if (ends_with(e->d_name, ".safetensors"))
            names[n++] = strdup(e->d_name);
    closedir(d);
    if (n == 0)
        return sl_fail(err, "%s: no *.safetensors files", cv->dir);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    int rc = 0;
    for (int i = 0; i < n; i++) {
        if (!rc && st_open(&cv->shards[cv->n_shards], in_dir(cv, names[i]), err) == 0)
            cv->n_shards++;
        else
            rc = -1;
        free(names[i]);
    }
    return rc;
}

static const st_tensor *find_tensor(converter *cv, const char *name)
{
    for (int i = 0; i < cv->n_shards; i++) {
        const st_tensor *t = st_find(cv->shards[i], name);
        if (t)
            return t;
    }
    return NULL;
}

/* ---- tensors ---- */

static void *keep(converter *cv, size_t bytes)
{
    if (cv->n_buffers == cv->cap_buffers) {
        int cap = cv->cap_buffers ? 2 * cv->cap_buffers : 64;
        void **p = realloc(cv->buffers, (size_t)cap * sizeof *p);
        if (!p)
            return NULL;
        cv->buffers = p;
        cv->cap_buffers = cap;
    }
    void *b = malloc(bytes ? bytes : 1);
    if (b)
        cv->buffers[cv->n_buffers++] = b;
    return b;
}

/* llama.cpp stores llama's q/k rows with each head's two halves interleaved
 * (adjacent-pair RoPE), while Hugging Face keeps them split: interleave them. */
static void permute_rows(const float *src, float *dst, int64_t rows, int64_t cols, int n_heads)
{
    int64_t hd = rows / n_heads, half = hd / 2;
    for (int h = 0; h < n_heads; h++)
        for (int64_t i = 0; i < half; i++)
            for (int s = 0; s < 2; s++) {
                const float *from = src + ((int64_t)h * hd + s * half + i) * cols;
                float *to = dst + ((int64_t)h * hd + 2 * i + s) * cols;
                memcpy(to, from, (size_t)cols * sizeof(float));
            }
}

typedef enum { T_MATRIX, T_NORM, T_SCALAR } tensor_kind;

/* Adds HF tensor hf_name as GGUF tensor gguf_name, checking its shape. */
typedef struct quant_args {
    sl_type type;
    const float *f;
    int64_t cols;
    void *out;
} quant_args;

static void quantize_rows(void *arg, int64_t r0, int64_t r1)
{
    const quant_args *a = arg;
    size_t row_bytes = sl_row_bytes(a->type, a->cols);
    for (int64_t r = r0; r < r1; r++)
        sl_quantize_row(a->type, a->f + r * a->cols, (uint8_t *)a->out + (size_t)r * row_bytes,
                        a->cols);
}

static int add_tensor(converter *cv, const char *hf_name, const char *gguf_name, int64_t rows,
                      int64_t cols, tensor_kind kind, int permute_heads, sl_err *err)
{
    const st_tensor *t = find_tensor(cv, hf_name);
    if (!t)
        return sl_fail(err, "%s: missing tensor %s", cv->dir, hf_name);
    bool ok = kind == T_SCALAR ? (t->n_dims == 0 || (t->n_dims == 1 && t->shape[0] == 1))
              : kind == T_NORM ? (t->n_dims == 1 && t->shape[0] == cols)
                               : (t->n_dims == 2 && t->shape[0] == rows && t->shape[1] == cols);
    if (kind == T_SCALAR) {
        rows = 1;
        cols = 1;
    }
    if (!ok)
        return sl_fail(err, "%s: tensor %s has shape [%lld%s%lld], expected [%lld, %lld]", cv->dir,
                       hf_name, (long long)t->shape[0], t->n_dims > 1 ? ", " : " ",
                       (long long)(t->n_dims > 1 ? t->shape[1] : 0), (long long)rows, (long long)cols);
    size_t n = (size_t)rows * (size_t)cols;
    float *f = malloc(n * sizeof(float));
    if (!f)
        return sl_fail(err, "out of memory converting %s", hf_name);
    st_read_f32(t, 0, (int64_t)n, f);
    if (kind == T_NORM && cv->cfg.norm_shift)
        for (size_t i = 0; i < n; i++)
            f[i] += 1.0f; /* Gemma's norms scale by (1 + w); GGUF stores the sum */
    if (permute_heads) {
        float *g = malloc(n * sizeof(float));
        if (!g) {
            free(f);
            return sl_fail(err, "out of memory converting %s", hf_name);
        }
        permute_rows(f, g, rows, cols, permute_heads);
        free(f);
        f = g;
    }
    sl_type type = kind != T_MATRIX ? SL_TYPE_F32 : cv->opts->type;
    if (cols % sl_type_block_elems(type) != 0)
        type = SL_TYPE_F16; /* rows that don't fill whole blocks stay precise */
    size_t bytes = sl_row_bytes(type, cols) * (size_t)rows;
    void *out = keep(cv, bytes);
    if (!out) {
        free(f);
        return sl_fail(err, "out of memory converting %s", hf_name);
    }
    quant_args qa = {type, f, cols, out};
    sl_pool_for(rows, 16, quantize_rows, &qa);
    free(f);
    int64_t ne[2] = {cols, rows};
    return gguf_add_tensor(cv->w, gguf_name, type, kind == T_MATRIX ? 2 : 1, ne, out, bytes, err);
}

static bool layer_sliding(const hf_config *c, int il)
{
    return c->layer_sliding && c->layer_sliding[il];
}

static int g4_d_ff(const hf_config *c, int il)
{
    bool shared = il >= c->n_layer - c->n_kv_shared;
    return c->double_wide_mlp && shared ? 2 * c->d_ff : c->d_ff;
}

/* A Gemma 4 layer: llama.cpp's names (gguf-py's tensor_mapping for
 * gemma3n/gemma4). KV-sharing layers read an earlier layer's cache and get
 * no K/V; a global layer without v_proj has V = K. Norms are stored as they
 * scale (no 1 + w). */
static int add_layer_gemma4(converter *cv, int il, sl_err *err)
{
    const hf_config *c = &cv->cfg;
    bool sliding = layer_sliding(c, il), shared = il >= c->n_layer - c->n_kv_shared;
    int hd = sliding ? c->head_dim_swa : c->head_dim;
    int kvh = sliding ? c->n_kv_head_swa : c->n_kv_head;
    int64_t d = c->d_model, q = (int64_t)c->n_head * hd, kv = (int64_t)kvh * hd, ff = g4_d_ff(c, il);
    int64_t pl = c->n_embd_per_layer;
    char h[256], g[256];
#define HF(s) (snprintf(h, sizeof h, "%slayers.%d.%s", cv->prefix, il, s), h)
#define GG(s) (snprintf(g, sizeof g, "blk.%d.%s.weight", il, s), g)
    if (add_tensor(cv, HF("input_layernorm.weight"), GG("attn_norm"), 1, d, T_NORM, 0, err) ||
        add_tensor(cv, HF("self_attn.q_proj.weight"), GG("attn_q"), q, d, T_MATRIX, 0, err) ||
        add_tensor(cv, HF("self_attn.q_norm.weight"), GG("attn_q_norm"), 1, hd, T_NORM, 0, err) ||
        add_tensor(cv, HF("self_attn.o_proj.weight"), GG("attn_output"), d, q, T_MATRIX, 0, err))
        return -1;
    if (!shared) {
        if (add_tensor(cv, HF("self_attn.k_proj.weight"), GG("attn_k"), kv, d, T_MATRIX, 0, err) ||
            add_tensor(cv, HF("self_attn.k_norm.weight"), GG("attn_k_norm"), 1, hd, T_NORM, 0, err))
            return -1;
        if (find_tensor(cv, HF("self_attn.v_proj.weight")) &&
            add_tensor(cv, h, GG("attn_v"), kv, d, T_MATRIX, 0, err))
            return -1;
    }
    if (add_tensor(cv, HF("post_attention_layernorm.weight"), GG("post_attention_norm"), 1, d, T_NORM, 0, err) ||
        add_tensor(cv, HF("pre_feedforward_layernorm.weight"), GG("ffn_norm"), 1, d, T_NORM, 0, err) ||
        add_tensor(cv, HF("mlp.gate_proj.weight"), GG("ffn_gate"), ff, d, T_MATRIX, 0, err) ||
        add_tensor(cv, HF("mlp.up_proj.weight"), GG("ffn_up"), ff, d, T_MATRIX, 0, err) ||
        add_tensor(cv, HF("mlp.down_proj.weight"), GG("ffn_down"), d, ff, T_MATRIX, 0, err) ||
        add_tensor(cv, HF("post_feedforward_layernorm.weight"), GG("post_ffw_norm"), 1, d, T_NORM, 0, err))
        return -1;
    if (pl > 0 &&
        (add_tensor(cv, HF("per_layer_input_gate.weight"), GG("inp_gate"), pl, d, T_MATRIX, 0, err) ||
         add_tensor(cv, HF("per_layer_projection.weight"), GG("proj"), d, pl, T_MATRIX, 0, err) ||
         add_tensor(cv, HF("post_per_layer_input_norm.weight"), GG("post_norm"), 1, d, T_NORM, 0, err)))
        return -1;
    if (find_tensor(cv, HF("layer_scalar")) &&
        add_tensor(cv, h, GG("layer_output_scale"), 1, 1, T_SCALAR, 0, err))
        return -1;
#undef HF
#undef GG
    return 0;
}

/* Gemma 4's tensors outside the layers: the per-layer embedding table, its
 * projection and norm, and the global layers' RoPE frequency factors
 * ("proportional" RoPE: 1 for the pairs that rotate, 1e30 for the rest, as
 * llama.cpp generates them). */
static int add_gemma4_globals(converter *cv, sl_err *err)
{
    const hf_config *c = &cv->cfg;
    int64_t pl = c->n_embd_per_layer, all = (int64_t)c->n_layer * pl;
    char h[256];
#define HF(s) (snprintf(h, sizeof h, "%s%s.weight", cv->prefix, s), h)
    if (pl > 0 &&
        (add_tensor(cv, HF("embed_tokens_per_layer"), "per_layer_token_embd.weight", c->n_vocab, all,
                    T_MATRIX, 0, err) ||
         add_tensor(cv, HF("per_layer_model_projection"), "per_layer_model_proj.weight", all,
                    c->d_model, T_MATRIX, 0, err) ||
         add_tensor(cv, HF("per_layer_projection_norm"), "per_layer_proj_norm.weight", 1, pl, T_NORM,
                    0, err)))
        return -1;
#undef HF
    int pairs = c->head_dim / 2, rot = (int)(c->head_dim * c->rope_partial_full / 2);
    float *ff = keep(cv, (size_t)pairs * sizeof(float));
    if (!ff)
        return sl_fail(err, "out of memory");
    for (int i = 0; i < pairs; i++)
        ff[i] = i < rot ? 1.0f : 1e30f;
    int64_t ne[1] = {pairs};
    return gguf_add_tensor(cv->w, "rope_freqs.weight", SL_TYPE_F32, 1, ne, ff,
                           (size_t)pairs * sizeof(float), err);
}

static void set_gemma4_metadata(converter *cv)
{
    const hf_config *c = &cv->cfg;
    gguf_writer *w = cv->w;
    char k[128];
    int32_t kv_heads[512], d_ff[512];
    for (int il = 0; il < c->n_layer; il++) {
        kv_heads[il] = layer_sliding(c, il) ? c->n_kv_head_swa : c->n_kv_head;
        d_ff[il] = g4_d_ff(c, il);
    }
    uint64_t n = (uint64_t)c->n_layer;
#define K(s) (snprintf(k, sizeof k, "gemma4.%s", s), k)
    gguf_set_arr(w, K("attention.head_count_kv"), GGUF_INT32, kv_heads, n);
    gguf_set_arr(w, K("feed_forward_length"), GGUF_INT32, d_ff, n);
    gguf_set_u32(w, K("attention.key_length_swa"), (uint32_t)c->head_dim_swa);
    gguf_set_u32(w, K("attention.value_length_swa"), (uint32_t)c->head_dim_swa);
    gguf_set_u32(w, K("rope.dimension_count"), (uint32_t)c->head_dim);
    gguf_set_u32(w, K("rope.dimension_count_swa"), (uint32_t)(c->head_dim_swa * c->rope_partial_swa));
    gguf_set_u32(w, K("attention.shared_kv_layers"), (uint32_t)c->n_kv_shared);
    gguf_set_u32(w, K("embedding_length_per_layer_input"), (uint32_t)c->n_embd_per_layer);
#undef K
}

static int add_layer(converter *cv, int il, sl_err *err)
{
    const hf_config *c = &cv->cfg;
    bool gemma23 = strcmp(c->arch, "gemma2") == 0 || strcmp(c->arch, "gemma3") == 0;
    int64_t d = c->d_model, q = (int64_t)c->n_head * c->head_dim, kv = (int64_t)c->n_kv_head * c->head_dim;
    char h[256], g[256];
    int llama = !c->gemma;
#define HF(s) (snprintf(h, sizeof h, "%slayers.%d.%s.weight", cv->prefix, il, s), h)
#define GG(s) (snprintf(g, sizeof g, "blk.%d.%s.weight", il, s), g)
    if (c->gemma4)
        return add_layer_gemma4(cv, il, err);
    if (add_tensor(cv, HF("input_layernorm"), GG("attn_norm"), 1, d, T_NORM, 0, err) ||
        add_tensor(cv, HF("self_attn.q_proj"), GG("attn_q"), q, d, T_MATRIX, llama ? c->n_head : 0, err) ||
        add_tensor(cv, HF("self_attn.k_proj"), GG("attn_k"), kv, d, T_MATRIX, llama ? c->n_kv_head : 0, err) ||
        add_tensor(cv, HF("self_attn.v_proj"), GG("attn_v"), kv, d, T_MATRIX, 0, err) ||
        add_tensor(cv, HF("self_attn.o_proj"), GG("attn_output"), d, q, T_MATRIX, 0, err) ||
        add_tensor(cv, HF("mlp.gate_proj"), GG("ffn_gate"), c->d_ff, d, T_MATRIX, 0, err) ||
        add_tensor(cv, HF("mlp.up_proj"), GG("ffn_up"), c->d_ff, d, T_MATRIX, 0, err) ||
        add_tensor(cv, HF("mlp.down_proj"), GG("ffn_down"), d, c->d_ff, T_MATRIX, 0, err))
        return -1;
    if (gemma23) {
        if (add_tensor(cv, HF("post_attention_layernorm"), GG("post_attention_norm"), 1, d, T_NORM, 0, err) ||
            add_tensor(cv, HF("pre_feedforward_layernorm"), GG("ffn_norm"), 1, d, T_NORM, 0, err) ||
            add_tensor(cv, HF("post_feedforward_layernorm"), GG("post_ffw_norm"), 1, d, T_NORM, 0, err))
            return -1;
    } else if (add_tensor(cv, HF("post_attention_layernorm"), GG("ffn_norm"), 1, d, T_NORM, 0, err)) {
        return -1; /* in Gemma 1 and Llama this is the pre-FFN norm */
    }
    if (strcmp(c->arch, "gemma3") == 0 &&
        (add_tensor(cv, HF("self_attn.q_norm"), GG("attn_q_norm"), 1, c->head_dim, T_NORM, 0, err) ||
         add_tensor(cv, HF("self_attn.k_norm"), GG("attn_k_norm"), 1, c->head_dim, T_NORM, 0, err)))
        return -1;
#undef HF
#undef GG
    return 0;
}

/* ---- metadata ---- */

static void set_metadata(converter *cv)
{
    const hf_config *c = &cv->cfg;
    gguf_writer *w = cv->w;
    char k[128];
#define K(s) (snprintf(k, sizeof k, "%s.%s", c->arch, s), k)
    gguf_set_str(w, "general.architecture", c->arch);
    const char *slash = strrchr(cv->dir, '/');
    gguf_set_str(w, "general.name", slash && slash[1] ? slash + 1 : cv->dir);
    gguf_set_u32(w, "general.quantization_version", 2);
    gguf_set_u32(w, K("context_length"), (uint32_t)c->n_ctx);
    gguf_set_u32(w, K("embedding_length"), (uint32_t)c->d_model);
    gguf_set_u32(w, K("block_count"), (uint32_t)c->n_layer);
    gguf_set_u32(w, K("feed_forward_length"), (uint32_t)c->d_ff);
    gguf_set_u32(w, K("attention.head_count"), (uint32_t)c->n_head);
    gguf_set_u32(w, K("attention.head_count_kv"), (uint32_t)c->n_kv_head);
    gguf_set_u32(w, K("attention.key_length"), (uint32_t)c->head_dim);
    gguf_set_u32(w, K("attention.value_length"), (uint32_t)c->head_dim);
    gguf_set_f32(w, K("attention.layer_norm_rms_epsilon"), (float)c->norm_eps);
    gguf_set_f32(w, K("rope.freq_base"), (float)c->rope_theta);
    if (!c->gemma)
        gguf_set_u32(w, K("rope.dimension_count"), (uint32_t)c->head_dim);
    if (c->rope_factor > 0 && c->rope_factor != 1.0) {
        gguf_set_str(w, K("rope.scaling.type"), "linear");
        gguf_set_f32(w, K("rope.scaling.factor"), (float)c->rope_factor);
    }
    if (c->sliding_window > 0 && c->layer_sliding) {
        gguf_set_u32(w, K("attention.sliding_window"), (uint32_t)c->sliding_window);
        /* llama.cpp hard-codes Gemma 3's 5:1 layout; a per-layer list keeps
         * other layouts (e.g. a 2-layer draft) exact for loaders that read it. */
        uint8_t flags[512];
        for (int il = 0; il < c->n_layer; il++)
            flags[il] = c->layer_sliding[il];
        gguf_set_arr(w, K("attention.sliding_window_pattern"), GGUF_BOOL, flags, (uint64_t)c->n_layer);
    }
    if (c->rope_local_theta > 0)
        gguf_set_f32(w, K("rope.freq_base_swa"), (float)c->rope_local_theta);
    if (c->attn_softcap > 0)
        gguf_set_f32(w, K("attn_logit_softcapping"), (float)c->attn_softcap);
    if (c->final_softcap > 0)
        gguf_set_f32(w, K("final_logit_softcapping"), (float)c->final_softcap);
    if (c->query_pre_attn_scalar > 0)
        gguf_set_f32(w, K("attention.scale"), (float)(1.0 / sqrt(c->query_pre_attn_scalar)));
#undef K
    if (c->gemma4)
        set_gemma4_metadata(cv); /* per-layer arrays replace the scalars above */
}

/* Gemma 4's tokenizer.json (a Hugging Face BPE with a merge list), as
 * llama.cpp's converter writes it: tokenizer.ggml.model "gemma4", the
 * merges, added special tokens as control pieces (score -1000), the chat
 * markers the chat parser must see as user-defined, <0xXX> as byte pieces.
 * *merges gets the merge strings ("left right"); free both with
 * free_json_vocab. */
static const char *const g4_visible[] = {"<|channel>", "<channel|>", "<|tool_call>", "<tool_call|>",
                                         "<|tool_response>", "<tool_response|>", "<|\"|>"};

static int json_vocab_fail(json_object *root, sl_err *err, const char *path, const char *what)
{
    json_object_put(root);
    return sl_fail(err, "%s: %s", path, what);
}

/* model.vocab: every piece at its id, <0xXX> as byte pieces. Returns what
 * is wrong, or NULL. */
static const char *json_vocab_pieces(json_object *vocab, sl_tok_vocab *v)
{
    json_object_object_foreach(vocab, piece, idv) {
        int64_t id = json_object_get_int64(idv);
        if (!json_object_is_type(idv, json_type_int) || id < 0 || id >= v->n)
            return "model.vocab holds an id outside vocab_size";
        free(v->tokens[id]);
        v->tokens[id] = strdup(piece);
        v->types[id] = strncmp(piece, "<0x", 3) == 0 && strlen(piece) == 6 ? 6 : 1;
    }
    return NULL;
}

/* added_tokens: special ones as control pieces (score -1000) except the
 * markers the chat parser must see, the others user-defined. */
static const char *json_added_tokens(json_object *root, sl_tok_vocab *v)
{
    json_object *added;
    if (!json_object_object_get_ex(root, "added_tokens", &added) ||
        !json_object_is_type(added, json_type_array))
        return NULL;
    for (size_t i = 0; i < json_object_array_length(added); i++) {
        json_object *t = json_object_array_get_idx(added, i), *idv, *content, *special;
        if (!json_object_object_get_ex(t, "id", &idv) ||
            !json_object_object_get_ex(t, "content", &content))
            continue;
        int64_t id = json_object_get_int64(idv);
        if (id < 0 || id >= v->n)
            return "added_tokens holds an id outside vocab_size";
        const char *s = json_object_get_string(content);
        free(v->tokens[id]);
        v->tokens[id] = strdup(s);
        bool is_special = json_object_object_get_ex(t, "special", &special) &&
                          json_object_get_boolean(special);
        v->types[id] = is_special ? 3 : 4;
        v->scores[id] = is_special ? -1000.0f : 0.0f;
        for (size_t k = 0; k < sizeof g4_visible / sizeof g4_visible[0]; k++)
            if (strcmp(s, g4_visible[k]) == 0)
                v->types[id] = 4;
    }
    return NULL;
}

/* Names the rows past the tokenizer (unused) and finds the special ids. */
static const char *json_vocab_finish(sl_tok_vocab *v)
{
    v->bos_id = v->eos_id = v->unk_id = v->pad_id = -1;
    for (int i = 0; i < v->n; i++) {
        if (!v->tokens[i]) {
            char pad[32];
            snprintf(pad, sizeof pad, "<unused_pad_%d>", i);
            v->tokens[i] = strdup(pad);
            v->types[i] = 5;
        }
        if (!v->tokens[i])
            return "out of memory";
        const char *s = v->tokens[i];
        if (strcmp(s, "<bos>") == 0)
            v->bos_id = i;
        else if (strcmp(s, "<eos>") == 0)
            v->eos_id = i;
        else if (strcmp(s, "<pad>") == 0)
            v->pad_id = i;
        else if (strcmp(s, "<unk>") == 0) {
            v->unk_id = i;
            v->types[i] = 2;
        }
    }
    return NULL;
}

/* model.merges as "left right" strings, from either form tokenizer.json
 * writes them in. */
static const char *json_merges(json_object *mlist, char ***merges, int *n_merges)
{
    int nm = (int)json_object_array_length(mlist);
    *merges = calloc((size_t)nm + 1, sizeof **merges);
    if (!*merges)
        return "out of memory";
    *n_merges = nm;
    for (int i = 0; i < nm; i++) {
        json_object *m = json_object_array_get_idx(mlist, i);
        if (json_object_is_type(m, json_type_string))
            (*merges)[i] = strdup(json_object_get_string(m));
        else if (json_object_is_type(m, json_type_array) && json_object_array_length(m) == 2) {
            const char *a = json_object_get_string(json_object_array_get_idx(m, 0));
            const char *b = json_object_get_string(json_object_array_get_idx(m, 1));
            size_t len = strlen(a) + strlen(b) + 2;
            if (((*merges)[i] = malloc(len)))
                snprintf((*merges)[i], len, "%s %s", a, b);
        } else
            return "model.merges holds an entry that is neither \"left right\" nor [left, right]";
        if (!(*merges)[i])
            return "out of memory";
    }
    return NULL;
}

static int read_json_vocab(const char *path, int n_vocab, sl_tok_vocab *v, char ***merges,
                           int *n_merges, sl_err *err)
{
    memset(v, 0, sizeof *v);
    *merges = NULL;
    *n_merges = 0;
    json_object *root = load_json(path, err), *model, *vocab, *mlist;
    if (!root)
        return -1;
    if (!json_object_object_get_ex(root, "model", &model) ||
        !json_object_object_get_ex(model, "vocab", &vocab) ||
        !json_object_is_type(vocab, json_type_object) ||
        !json_object_object_get_ex(model, "merges", &mlist) ||
        !json_object_is_type(mlist, json_type_array))
        return json_vocab_fail(root, err, path, "not a BPE tokenizer (model.vocab and model.merges)");
    v->model = "gemma4";
    v->n = n_vocab;
    v->tokens = calloc((size_t)n_vocab, sizeof *v->tokens);
    v->scores = calloc((size_t)n_vocab, sizeof *v->scores);
    v->types = calloc((size_t)n_vocab, sizeof *v->types);
    const char *problem = !v->tokens || !v->scores || !v->types ? "out of memory" : NULL;
    if (!problem)
        problem = json_vocab_pieces(vocab, v);
    if (!problem)
        problem = json_added_tokens(root, v);
    if (!problem)
        problem = json_vocab_finish(v);
    if (!problem)
        problem = json_merges(mlist, merges, n_merges);
    if (problem)
        return json_vocab_fail(root, err, path, problem);
    json_object_put(root);
    return 0;
}

static void free_json_vocab(sl_tok_vocab *v, char **merges, int n_merges)
{
    for (int i = 0; merges && i < n_merges; i++)
        free(merges[i]);
    free(merges);
    v->model = NULL;
    sl_tok_vocab_free(v);
}

/* Gemma 4 checkpoints ship tokenizer.json; a tokenizer.model is used when
 * there is one. */
static int add_json_vocab(converter *cv, sl_err *err)
{
    sl_tok_vocab v;
    char **merges = NULL;
    int n_merges = 0;
    char path[4096];
    snprintf(path, sizeof path, "%s", in_dir(cv, "tokenizer.json"));
    int rc = read_json_vocab(path, cv->cfg.n_vocab, &v, &merges, &n_merges, err);
    if (rc == 0) {
        sl_tok_vocab_to_gguf(&v, cv->w);
        gguf_set_arr_str(cv->w, "tokenizer.ggml.merges", (const char *const *)merges,
                         (uint64_t)n_merges);
    }
    free_json_vocab(&v, merges, n_merges);
    return rc;
}

static int add_vocab(converter *cv, sl_err *err)
{
    sl_tok_vocab v;
    FILE *spm = fopen(in_dir(cv, "tokenizer.model"), "rb");
    if (spm)
        fclose(spm);
    else if (cv->cfg.gemma4)
        return add_json_vocab(cv, err);
    if (sl_tok_model_to_vocab(in_dir(cv, "tokenizer.model"), &v, err))
        return -1;
    int rc = 0;
    if (v.n > cv->cfg.n_vocab)
        rc = sl_fail(err, "%s: tokenizer.model has %d pieces but vocab_size is %d", cv->dir, v.n,
                     cv->cfg.n_vocab);
    else
        sl_tok_vocab_to_gguf(&v, cv->w);
    /* Checkpoints often pad the embedding beyond the tokenizer; the GGUF's
     * token list must still have one entry per row. */
    if (!rc && v.n < cv->cfg.n_vocab) {
        int n = cv->cfg.n_vocab;
        char **toks = calloc((size_t)n, sizeof *toks);
        float *scores = calloc((size_t)n, sizeof *scores);
        int32_t *types = calloc((size_t)n, sizeof *types);
        char (*pad)[32] = calloc((size_t)n, 32);
        if (!toks || !scores || !types || !pad) {
            rc = sl_fail(err, "out of memory");
        } else {
            for (int i = 0; i < n; i++) {
                if (i < v.n) {
                    toks[i] = v.tokens[i];
                    scores[i] = v.scores[i];
                    types[i] = v.types[i];
                } else {
                    snprintf(pad[i], 32, "<unused_pad_%d>", i);
                    toks[i] = pad[i];
                    types[i] = 5;
                }
            }
            gguf_set_arr_str(cv->w, "tokenizer.ggml.tokens", (const char *const *)toks, (uint64_t)n);
            gguf_set_arr(cv->w, "tokenizer.ggml.scores", GGUF_FLOAT32, scores, (uint64_t)n);
            gguf_set_arr(cv->w, "tokenizer.ggml.token_type", GGUF_INT32, types, (uint64_t)n);
        }
        free(toks);
        free(scores);
        free(types);
        free(pad);
    }
    sl_tok_vocab_free(&v);
    return rc;
}

static int convert(converter *cv, const char *out_path, sl_err *err)
{
    const hf_config *c = &cv->cfg;
    if (read_config(cv, err) || open_shards(cv, err))
        return -1;
    cv->w = gguf_writer_new();
    if (!cv->w)
        return sl_fail(err, "out of memory");
    set_metadata(cv);
    gguf_set_u32(cv->w, "general.file_type", (uint32_t)cv->opts->type);
    if (add_vocab(cv, err))
        return -1;
    cv->prefix = find_tensor(cv, "model.language_model.embed_tokens.weight") ? "model.language_model."
                                                                              : "model.";
    char name[256];
    snprintf(name, sizeof name, "%sembed_tokens.weight", cv->prefix);
    if (add_tensor(cv, name, "token_embd.weight", c->n_vocab, c->d_model, T_MATRIX, 0, err))
        return -1;
    if (c->gemma4 && add_gemma4_globals(cv, err))
        return -1;
    for (int il = 0; il < c->n_layer; il++) {
        if (add_layer(cv, il, err))
            return -1;
        if (cv->opts->verbose)
            fprintf(stderr, "\rconvert: layer %d/%d", il + 1, c->n_layer);
    }
    if (cv->opts->verbose)
        fputc('\n', stderr);
    snprintf(name, sizeof name, "%snorm.weight", cv->prefix);
    if (add_tensor(cv, name, "output_norm.weight", 1, c->d_model, T_NORM, 0, err))
        return -1;
    if (!c->tied || find_tensor(cv, "lm_head.weight"))
        if (add_tensor(cv, "lm_head.weight", "output.weight", c->n_vocab, c->d_model, T_MATRIX, 0, err))
            return -1;
    return gguf_write(cv->w, out_path, err);
}

/* ---- Gemma 4 assistant (Gemma4AssistantForCausalLM, the MTP drafter) ----
 * Written as llama.cpp's convert_hf_to_gguf.py Gemma4AssistantModel writes
 * it (architecture gemma4-assistant: the Gemma 4 keys with every layer
 * reading the target's cache, embedding_length_out = backbone_hidden_size,
 * nextn_predict_layers; pre/post_projection as nextn.pre/post_projection),
 * plus the centroid head that llama.cpp leaves out, under the names and keys
 * ik_llama.cpp looks up (mtp.centroids.weight, mtp.token_ordering.weight as
 * F32 token ids in Hugging Face's order, n_centroids, centroid_top_k). */

typedef struct hf_assistant {
    int d_backbone, n_centroids, top_k;
    bool ordered;             /* use_ordered_embeddings: the centroid head is used */
} hf_assistant;

static bool is_assistant_dir(converter *cv)
{
    sl_err ignored = {{0}};
    json_object *root = load_json(in_dir(cv, "config.json"), &ignored), *v;
    bool yes = root && json_object_object_get_ex(root, "model_type", &v) &&
               json_object_is_type(v, json_type_string) &&
               strcmp(json_object_get_string(v), "gemma4_assistant") == 0;
    json_object_put(root);
    return yes;
}

static int read_assistant_text(hf_config *c, json_object *text, const char *path, sl_err *err)
{
    c->n_ctx = 131072;
    c->norm_eps = 1e-6;
    if (jint(text, "num_hidden_layers", true, 1, 512, &c->n_layer, path, err) ||
        jint(text, "hidden_size", true, 1, 1 << 20, &c->d_model, path, err) ||
        jint(text, "intermediate_size", true, 1, 1 << 22, &c->d_ff, path, err) ||
        jint(text, "num_attention_heads", true, 1, 4096, &c->n_head, path, err) ||
        jint(text, "vocab_size", true, 1, 1 << 24, &c->n_vocab, path, err) ||
        jint(text, "max_position_embeddings", false, 1, 1 << 30, &c->n_ctx, path, err) ||
        jint(text, "num_key_value_heads", true, 1, c->n_head, &c->n_kv_head_swa, path, err) ||
        jint(text, "head_dim", true, 1, 65536, &c->head_dim_swa, path, err) ||
        jint(text, "sliding_window", true, 1, 1 << 30, &c->sliding_window, path, err) ||
        jnum(text, "rms_norm_eps", &c->norm_eps, path, err))
        return -1;
    c->head_dim = c->head_dim_swa;
    c->n_kv_head = c->n_kv_head_swa;
    double swa_theta = 10000.0;
    if (jint(text, "global_head_dim", false, 1, 65536, &c->head_dim, path, err) ||
        jint(text, "num_global_key_value_heads", false, 1, c->n_head, &c->n_kv_head, path, err) ||
        read_rope_params(text, "full_attention", &c->rope_theta, &c->rope_partial_full, path, err) ||
        read_rope_params(text, "sliding_attention", &swa_theta, &c->rope_partial_swa, path, err))
        return -1;
    c->rope_local_theta = swa_theta;
    if (c->n_head % c->n_kv_head || c->n_head % c->n_kv_head_swa)
        return sl_fail(err, "%s: num_attention_heads %d is not a multiple of the key/value heads",
                       path, c->n_head);
    if (!json_object_object_get_ex(text, "layer_types", NULL))
        return sl_fail(err, "%s: missing required field \"layer_types\"", path);
    return read_layer_types(c, text, path, err);
}

static int read_assistant_config(converter *cv, hf_assistant *a, sl_err *err)
{
    hf_config *c = &cv->cfg;
    char path[4096];
    snprintf(path, sizeof path, "%s", in_dir(cv, "config.json"));
    json_object *root = load_json(path, err), *text;
    if (!root)
        return -1;
    int rc = -1;
    if (!json_object_object_get_ex(root, "text_config", &text) ||
        !json_object_is_type(text, json_type_object)) {
        sl_fail(err, "%s: missing required field \"text_config\"", path);
        goto out;
    }
    snprintf(c->arch, sizeof c->arch, "gemma4"); /* the layers are Gemma 4's (vocab, names) */
    c->gemma = c->gemma4 = c->tied = true;
    a->n_centroids = 2048;
    a->top_k = 32;
    if (read_assistant_text(c, text, path, err) ||
        jint(root, "backbone_hidden_size", true, 1, 1 << 20, &a->d_backbone, path, err) ||
        jint(root, "num_centroids", false, 1, 1 << 24, &a->n_centroids, path, err) ||
        jint(root, "centroid_intermediate_top_k", false, 1, 1 << 24, &a->top_k, path, err))
        goto out;
    a->ordered = jbool(root, "use_ordered_embeddings", false);
    c->n_kv_shared = c->n_layer; /* every layer reads the target's cache */
    if (a->ordered && (c->n_vocab % a->n_centroids || a->top_k > a->n_centroids)) {
        sl_fail(err, "%s: num_centroids %d must divide vocab_size %d and be at least "
                "centroid_intermediate_top_k %d", path, a->n_centroids, c->n_vocab, a->top_k);
        goto out;
    }
    rc = 0;
out:
    json_object_put(root);
    return rc;
}

static void set_assistant_metadata(converter *cv, const hf_assistant *a)
{
    const hf_config *c = &cv->cfg;
    gguf_writer *w = cv->w;
    char k[128];
    int32_t kv_heads[512];
    uint8_t flags[512];
    for (int il = 0; il < c->n_layer; il++) {
        flags[il] = layer_sliding(c, il);
        kv_heads[il] = flags[il] ? c->n_kv_head_swa : c->n_kv_head;
    }
    uint64_t n = (uint64_t)c->n_layer;
#define K(s) (snprintf(k, sizeof k, "gemma4-assistant.%s", s), k)
    gguf_set_str(w, "general.architecture", "gemma4-assistant");
    const char *slash = strrchr(cv->dir, '/');
    gguf_set_str(w, "general.name", slash && slash[1] ? slash + 1 : cv->dir);
    gguf_set_u32(w, "general.quantization_version", 2);
    gguf_set_u32(w, "general.file_type", (uint32_t)cv->opts->type);
    gguf_set_u32(w, K("context_length"), (uint32_t)c->n_ctx);
    gguf_set_u32(w, K("embedding_length"), (uint32_t)c->d_model);
    gguf_set_u32(w, K("block_count"), (uint32_t)c->n_layer);
    gguf_set_u32(w, K("feed_forward_length"), (uint32_t)c->d_ff);
    gguf_set_u32(w, K("attention.head_count"), (uint32_t)c->n_head);
    gguf_set_arr(w, K("attention.head_count_kv"), GGUF_INT32, kv_heads, n);
    gguf_set_u32(w, K("attention.key_length"), (uint32_t)c->head_dim);
    gguf_set_u32(w, K("attention.value_length"), (uint32_t)c->head_dim);
    gguf_set_u32(w, K("attention.key_length_swa"), (uint32_t)c->head_dim_swa);
    gguf_set_u32(w, K("attention.value_length_swa"), (uint32_t)c->head_dim_swa);
    gguf_set_f32(w, K("attention.layer_norm_rms_epsilon"), (float)c->norm_eps);
    gguf_set_u32(w, K("attention.sliding_window"), (uint32_t)c->sliding_window);
    gguf_set_arr(w, K("attention.sliding_window_pattern"), GGUF_BOOL, flags, n);
    gguf_set_u32(w, K("attention.shared_kv_layers"), (uint32_t)c->n_layer);
    gguf_set_f32(w, K("rope.freq_base"), (float)c->rope_theta);
    gguf_set_f32(w, K("rope.freq_base_swa"), (float)c->rope_local_theta);
    gguf_set_u32(w, K("rope.dimension_count"), (uint32_t)c->head_dim);
    gguf_set_u32(w, K("rope.dimension_count_swa"), (uint32_t)(c->head_dim_swa * c->rope_partial_swa));
    gguf_set_u32(w, K("embedding_length_per_layer_input"), 0);
    gguf_set_u32(w, K("embedding_length_out"), (uint32_t)a->d_backbone);
    gguf_set_u32(w, K("nextn_predict_layers"), (uint32_t)c->n_layer);
    if (a->ordered) {
        gguf_set_u32(w, K("n_centroids"), (uint32_t)a->n_centroids);
        gguf_set_u32(w, K("centroid_top_k"), (uint32_t)a->top_k);
    }
#undef K
}

/* The tokenizer is optional here: the drafter shares its target's. */
static int add_assistant_vocab(converter *cv, sl_err *err)
{
    FILE *f = fopen(in_dir(cv, "tokenizer.model"), "rb");
    if (!f)
        f = fopen(in_dir(cv, "tokenizer.json"), "rb");
    if (!f)
        return 0;
    fclose(f);
    return add_vocab(cv, err);
}

static int convert_assistant(converter *cv, const char *out_path, sl_err *err)
{
    hf_assistant a = {0};
    const hf_config *c = &cv->cfg;
    if (read_assistant_config(cv, &a, err) || open_shards(cv, err))
        return -1;
    cv->w = gguf_writer_new();
    if (!cv->w)
        return sl_fail(err, "out of memory");
    cv->prefix = "model.";
    set_assistant_metadata(cv, &a);
    int64_t d = c->d_model, db = a.d_backbone;
    if (add_assistant_vocab(cv, err) ||
        add_tensor(cv, "model.embed_tokens.weight", "token_embd.weight", c->n_vocab, d, T_MATRIX, 0,
                   err) ||
        add_gemma4_globals(cv, err) ||
        add_tensor(cv, "pre_projection.weight", "nextn.pre_projection.weight", d, 2 * db, T_MATRIX,
                   0, err) ||
        add_tensor(cv, "post_projection.weight", "nextn.post_projection.weight", db, d, T_MATRIX, 0,
                   err))
        return -1;
    for (int il = 0; il < c->n_layer; il++)
        if (add_layer_gemma4(cv, il, err))
            return -1;
    if (add_tensor(cv, "model.norm.weight", "output_norm.weight", 1, d, T_NORM, 0, err))
        return -1;
    if (a.ordered &&
        (add_tensor(cv, "masked_embedding.centroids.weight", "mtp.centroids.weight", a.n_centroids,
                    d, T_MATRIX, 0, err) ||
         add_tensor(cv, "masked_embedding.token_ordering", "mtp.token_ordering.weight", 1,
                    c->n_vocab, T_NORM, 0, err)))
        return -1;
    return gguf_write(cv->w, out_path, err);
}

int sl_convert_hf(const char *dir, const char *out_path, const sl_convert_opts *opts, sl_err *err)
{
    converter cv = {.dir = dir, .opts = opts};
    if (!sl_type_supported(opts->type))
        return sl_fail(err, "convert: unsupported output type %d", (int)opts->type);
    int rc = is_assistant_dir(&cv) ? convert_assistant(&cv, out_path, err)
                                   : convert(&cv, out_path, err);
    for (int i = 0; i < cv.n_shards; i++)
        st_close(cv.shards[i]);
    for (int i = 0; i < cv.n_buffers; i++)
        free(cv.buffers[i]);
    free(cv.buffers);
    free(cv.cfg.layer_sliding);
    gguf_writer_free(cv.w);
    return rc;
}
