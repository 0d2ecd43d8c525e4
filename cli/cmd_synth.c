/* sluice synth: a model with random weights and the real shapes of a named
 * size, written as a GGUF that sluice and llama.cpp both load. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/synth.h"
#include "model/config.h"
#include "model/forward.h"
#include "model/gguf.h"
#include "model/model.h"
#include "stages/sampler.h"
#include "util/pool.h"

static const char usage[] =
    "usage: sluice synth --arch ARCH --size SIZE -o FILE [options]\n"
    "\n"
    "Writes a GGUF model with seeded Gaussian weights and the shapes of a real\n"
    "model, with llama.cpp's metadata keys and a synthetic sentencepiece\n"
    "vocabulary of exactly the model's vocabulary size.\n"
    "\n"
    "options:\n"
    "  --arch ARCH          gemma, gemma2, gemma3, gemma4, gemma4-assistant or llama\n"
    "  --size SIZE          gemma4, gemma4-assistant: e2b, e4b; gemma3: 270m, 1b, 4b;\n"
    "                       gemma2: 2b; gemma: 2b;\n"
    "                       llama: tiny;\n"
    "                       every arch: test (d_model 256, 6 layers, 4 heads x 64,\n"
    "                       2 kv heads (gemma: 1), d_ff 512, vocab 512, context 512;\n"
    "                       gemma4: see below)\n"
    "  --type TYPE          type of the 2-D weights (default f32): " CLI_QTYPE_NAMES "\n"
    "                       norms stay f32\n"
    "  -o, --output FILE    file to write\n"
    "  --seed N             seed of the weights (default 1)\n"
    "  --weight-scale X     weights have std X/sqrt(fan_in) (default 1); a larger X\n"
    "                       makes the top logit stand clearer of the rest\n"
    "  --no-centroids       gemma4-assistant: leave out the centroid head, as\n"
    "                       llama.cpp's converter does (drafts score the whole\n"
    "                       vocabulary, as ik_llama.cpp's graph always does)\n"
    "  --echo-of TARGET     gemma4-assistant: make the head favour the token the\n"
    "                       step is fed (drafts repeat the last token), from the\n"
    "                       f32 embedding of TARGET: a drafter that is accepted\n"
    "                       on repetitive text, for benchmarks and cross-checks\n"
    "  -h, --help           show this help\n"
    "\n"
    "llama tiny: 8 layers, d_model 512, d_ff 1536, 8 heads x 64, 4 kv heads,\n"
    "vocab 32000, context 2048, untied output. gemma2 test: sliding window 8,\n"
    "soft-caps 50/30. gemma3 test: sliding window 8 (every 6th layer global),\n"
    "rope base 1e6 with linear scaling 8 globally, 10000 locally. gemma4 test:\n"
    "8 layers, every 4th global (4 heads x 128, 1 kv head, V = K, 1/4 of the\n"
    "pairs rotated by RoPE frequency factors) and the rest sliding (window 8,\n"
    "4 heads x 64, 2 kv heads, 32 of 64 dims rotated), the last 4 layers reading\n"
    "layers 2 and 3's KV caches with d_ff 1024, 64 per-layer-embedding columns\n"
    "per layer, final soft-cap 30.\n"
    "gemma4-assistant: the drafter of the gemma4 model of the same size, as\n"
    "llama.cpp writes it (4 query-only layers, the last global, with the target's\n"
    "head shapes; e2b/e4b: d_model 256, d_ff 2048, 2048 centroids of which the\n"
    "best 32 give the candidate tokens; test: d_model 128, d_ff 256, 32\n"
    "centroids, best 4).\n";

typedef struct shape {
    const char *arch, *size;
    int n_layer, d_model, d_ff, n_head, n_kv_head, head_dim, n_vocab, n_ctx;
    int window;          /* 0: no sliding-window layers */
    float rope_base;
    float rope_scale;    /* linear scaling factor; 0: none */
    float attn_softcap, final_softcap;
    float norm_eps;
} shape;

/* gemma4's further shape: head_dim, n_kv_head and rope_base of its shape
 * entry are the global layers'; the sliding layers' are here */
typedef struct g4_shape {
    const char *size;
    int head_dim_swa, n_kv_head_swa, rope_dim_swa;
    int swa_period;      /* layer il is global iff il % swa_period == swa_period - 1 */
    int n_kv_shared;     /* the last layers read the caches of earlier ones */
    int n_embd_per_layer;
    int d_ff_shared;     /* d_ff of the KV-sharing layers (E2B's double-wide MLP); 0: d_ff */
    float rope_base_swa;
    float rope_partial;  /* share of the global layers' pairs that rotate (rope_freqs) */
    bool global_v_is_k;  /* global layers have no attn_v (V = K) */
} g4_shape;

static const shape shapes[] = {
    {"gemma3", "270m", 18, 640, 2048, 4, 1, 256, 262144, 32768, 512, 1e6f, 0, 0, 0, 1e-6f},
    {"gemma3", "1b", 26, 1152, 6912, 4, 1, 256, 262144, 32768, 512, 1e6f, 0, 0, 0, 1e-6f},
    {"gemma3", "4b", 34, 2560, 10240, 8, 4, 256, 262208, 131072, 1024, 1e6f, 8, 0, 0, 1e-6f},
    {"gemma3", "test", 6, 256, 512, 4, 2, 64, 512, 512, 8, 1e6f, 8, 0, 0, 1e-6f},
    {"gemma2", "2b", 26, 2304, 9216, 8, 4, 256, 256000, 8192, 4096, 1e4f, 0, 50, 30, 1e-6f},
    {"gemma2", "test", 6, 256, 512, 4, 2, 64, 512, 512, 8, 1e4f, 0, 50, 30, 1e-6f},
    {"gemma", "2b", 18, 2048, 16384, 8, 1, 256, 256000, 8192, 0, 1e4f, 0, 0, 0, 1e-6f},
    {"gemma", "test", 6, 256, 512, 4, 1, 64, 512, 512, 0, 1e4f, 0, 0, 0, 1e-6f},
    {"llama", "tiny", 8, 512, 1536, 8, 4, 64, 32000, 2048, 0, 1e4f, 0, 0, 0, 1e-5f},
    {"llama", "test", 6, 256, 512, 4, 2, 64, 512, 512, 0, 1e4f, 0, 0, 0, 1e-5f},
    /* Gemma 4 E2B / E4B text shapes from the published Hugging Face configs
     * (hidden_size, num_hidden_layers, global_head_dim / head_dim,
     * num_kv_shared_layers, hidden_size_per_layer_input, use_double_wide_mlp,
     * layer_types, partial_rotary_factor 0.25 of the global layers) */
    {"gemma4", "e2b", 35, 1536, 6144, 8, 1, 512, 262144, 131072, 512, 1e6f, 0, 0, 30, 1e-6f},
    {"gemma4", "e4b", 42, 2560, 10240, 8, 2, 512, 262144, 131072, 512, 1e6f, 0, 0, 30, 1e-6f},
    {"gemma4", "test", 8, 256, 512, 4, 1, 128, 512, 512, 8, 1e6f, 0, 0, 30, 1e-6f},
    /* Gemma 4 assistants (google/gemma-4-E2B-it-assistant's config: hidden_size
     * 256, 4 layers sliding x3 + full, 4 heads, the target's head dims and kv
     * heads, intermediate_size 2048; E4B's assumed alike). n_kv_head,
     * head_dim: the global layer's, as the target's entry. */
    {"gemma4-assistant", "e2b", 4, 256, 2048, 4, 1, 512, 262144, 131072, 512, 1e6f, 0, 0, 0,
     1e-6f},
    {"gemma4-assistant", "e4b", 4, 256, 2048, 4, 2, 512, 262144, 131072, 512, 1e6f, 0, 0, 0,
     1e-6f},
    {"gemma4-assistant", "test", 4, 128, 256, 4, 1, 128, 512, 512, 8, 1e6f, 0, 0, 0, 1e-6f},
};

/* An assistant's centroid head and the width of its target's hidden state */
typedef struct g4a_shape {
    const char *size;
    int d_backbone, n_centroids, centroid_top_k;
} g4a_shape;

static const g4a_shape g4a_shapes[] = {
    {"e2b", 1536, 2048, 32},
    {"e4b", 2560, 2048, 32},
    {"test", 256, 32, 4},
};

static const g4_shape g4_shapes[] = {
    {"e2b", 256, 1, 256, 5, 20, 256, 12288, 1e4f, 0.25f, false},
    {"e4b", 256, 2, 256, 6, 18, 256, 0, 1e4f, 0.25f, false},
    {"test", 64, 2, 32, 4, 4, 64, 1024, 1e4f, 0.25f, true},
};

static const g4a_shape *g4a_of(const shape *s)
{
    for (size_t i = 0; i < sizeof g4a_shapes / sizeof g4a_shapes[0]; i++)
        if (strcmp(g4a_shapes[i].size, s->size) == 0)
            return &g4a_shapes[i];
    return &g4a_shapes[0];
}

static const g4_shape *g4_of(const shape *s)
{
    for (size_t i = 0; i < sizeof g4_shapes / sizeof g4_shapes[0]; i++)
        if (strcmp(g4_shapes[i].size, s->size) == 0)
            return &g4_shapes[i];
    return &g4_shapes[0];
}

typedef struct tensor_spec {
    char name[64];
    int n_dims;
    int64_t ne[2];  /* ne[0] = row length (fan-in), ne[1] = rows */
    bool norm;
    int64_t type_n_in; /* row length that decides the type (0: ne[0]) */
    int n_rot_pairs;   /* > 0: rope_freqs, 1 for that many pairs then 1e30 */
    float norm_mean;   /* norms: mean of the weights (0: 1) */
    bool permutation;  /* one row: a seeded permutation of 0 .. ne[0]-1 (token ordering) */
    float first_half_gain; /* > 0: the first ne[0]/2 weights of a row scaled by it */
} tensor_spec;

typedef struct synth_opts {
    const shape *shape;
    cli_qtype qtype;
    const char *out;
    uint64_t seed;
    float weight_scale;
    bool no_centroids; /* assistant: llama.cpp's layout, no mtp.* head */
    const char *echo_of; /* assistant: target whose embedding the head echoes */
} synth_opts;

static bool is_gemma(const shape *s)
{
    return strncmp(s->arch, "gemma", 5) == 0;
}

static void spec_add(tensor_spec *t, int *n, const char *name, int64_t n_in, int64_t n_out, bool norm)
{
    tensor_spec *s = &t[(*n)++];
    snprintf(s->name, sizeof s->name, "%s", name);
    s->n_dims = n_out > 0 ? 2 : 1;
    s->ne[0] = n_in;
    s->ne[1] = n_out > 0 ? n_out : 1;
    s->norm = norm;
    s->type_n_in = 0;
    s->n_rot_pairs = 0;
    s->norm_mean = 0.0f;
    s->permutation = false;
    s->first_half_gain = 0.0f;
}

static bool is_gemma4(const shape *s) { return strcmp(s->arch, "gemma4") == 0; }
static bool is_assistant(const shape *s) { return strcmp(s->arch, "gemma4-assistant") == 0; }

static bool g4_sliding(const shape *s, int il)
{
    const g4_shape *g = g4_of(s);
    return s->window > 0 && g->swa_period > 0 && il % g->swa_period != g->swa_period - 1;
}

static int g4_head_dim(const shape *s, int il)
{
    return g4_sliding(s, il) ? g4_of(s)->head_dim_swa : s->head_dim;
}

static int g4_kv_heads(const shape *s, int il)
{
    return g4_sliding(s, il) ? g4_of(s)->n_kv_head_swa : s->n_kv_head;
}

static bool g4_shared(const shape *s, int il) { return il >= s->n_layer - g4_of(s)->n_kv_shared; }

static int g4_d_ff(const shape *s, int il)
{
    const g4_shape *g = g4_of(s);
    return g4_shared(s, il) && g->d_ff_shared > 0 ? g->d_ff_shared : s->d_ff;
}

/* llama.cpp's gemma4 tensors: per-layer embeddings, the global layers' RoPE
 * frequency factors, no K/V in the KV-sharing layers, no V where V = K. */
static int list_tensors_gemma4(const shape *s, tensor_spec *t)
{
    int n = 0;
    char name[64];
    const g4_shape *g = g4_of(s);
    int64_t d = s->d_model, pl = g->n_embd_per_layer, all = (int64_t)s->n_layer * pl;
    spec_add(t, &n, "token_embd.weight", d, s->n_vocab, false);
    spec_add(t, &n, "per_layer_token_embd.weight", all, s->n_vocab, false);
    t[n - 1].type_n_in = pl; /* gathered a layer's slice at a time */
    spec_add(t, &n, "per_layer_model_proj.weight", d, all, false);
    spec_add(t, &n, "per_layer_proj_norm.weight", pl, 0, true);
    spec_add(t, &n, "rope_freqs.weight", s->head_dim / 2, 0, true);
    t[n - 1].n_rot_pairs = (int)(s->head_dim / 2 * g->rope_partial);
    for (int il = 0; il < s->n_layer; il++) {
        int64_t hd = g4_head_dim(s, il), q_dim = (int64_t)s->n_head * hd;
        int64_t kv_dim = (int64_t)g4_kv_heads(s, il) * hd, ff = g4_d_ff(s, il);
        bool own = !g4_shared(s, il), v = own && !(g->global_v_is_k && !g4_sliding(s, il));
#define LAYER(suffix, n_in, n_out, norm) \
        (snprintf(name, sizeof name, "blk.%d." suffix, il), spec_add(t, &n, name, n_in, n_out, norm))
        LAYER("attn_norm.weight", d, 0, true);
        LAYER("attn_q.weight", d, q_dim, false);
        if (own)
            LAYER("attn_k.weight", d, kv_dim, false);
        if (v)
            LAYER("attn_v.weight", d, kv_dim, false);
        /* Gemma 4 does not scale q.k: its trained q/k norms do. Random norms
         * near 1 would make every attention row one-hot, so these carry
         * head_dim^-1/4 each, as soft as the usual 1/sqrt(head_dim). */
        float qk_mean = powf((float)hd, -0.25f);
        LAYER("attn_q_norm.weight", hd, 0, true);
        t[n - 1].norm_mean = qk_mean;
        if (own) {
            LAYER("attn_k_norm.weight", hd, 0, true);
            t[n - 1].norm_mean = qk_mean;
        }
        LAYER("attn_output.weight", q_dim, d, false);
        LAYER("post_attention_norm.weight", d, 0, true);
        LAYER("ffn_norm.weight", d, 0, true);
        LAYER("ffn_gate.weight", d, ff, false);
        LAYER("ffn_up.weight", d, ff, false);
        LAYER("ffn_down.weight", ff, d, false);
        LAYER("post_ffw_norm.weight", d, 0, true);
        LAYER("inp_gate.weight", d, pl, false);
        LAYER("proj.weight", pl, d, false);
        LAYER("post_norm.weight", d, 0, true);
        LAYER("layer_output_scale.weight", 1, 0, true);
#undef LAYER
    }
    spec_add(t, &n, "output_norm.weight", d, 0, true);
    return n;
}

/* --echo-of: how much the embedding half of the pre-projection outweighs the
 * hidden-state half, so that the embedding's direction survives the four
 * layers' residual additions (each of RMS about 1) to the head. */
#define ECHO_GAIN 4.0f

/* An assistant's layer il: sliding but the last, with the target's head
 * shapes of that kind. */
static bool g4a_sliding(const shape *s, int il) { return il < s->n_layer - 1; }
static int g4a_head_dim(const shape *s, int il)
{
    return g4a_sliding(s, il) ? g4_of(s)->head_dim_swa : s->head_dim;
}

/* llama.cpp's gemma4-assistant tensors (nextn.* projections, query-only
 * layers) plus the centroid head ik_llama.cpp looks up (mtp.*), which
 * llama.cpp's converter leaves out. */
static int list_tensors_assistant(const shape *s, bool no_centroids, bool echo, tensor_spec *t)
{
    int n = 0;
    char name[64];
    const g4a_shape *a = g4a_of(s);
    int64_t d = s->d_model;
    spec_add(t, &n, "token_embd.weight", d, s->n_vocab, false);
    spec_add(t, &n, "rope_freqs.weight", s->head_dim / 2, 0, true);
    t[n - 1].n_rot_pairs = (int)(s->head_dim / 2 * g4_of(s)->rope_partial);
    spec_add(t, &n, "nextn.pre_projection.weight", 2 * (int64_t)a->d_backbone, d, false);
    t[n - 1].first_half_gain = echo ? ECHO_GAIN : 0.0f;
    spec_add(t, &n, "nextn.post_projection.weight", d, a->d_backbone, false);
    for (int il = 0; il < s->n_layer; il++) {
        int64_t hd = g4a_head_dim(s, il), q_dim = (int64_t)s->n_head * hd;
#define LAYER(suffix, n_in, n_out, norm) \
        (snprintf(name, sizeof name, "blk.%d." suffix, il), spec_add(t, &n, name, n_in, n_out, norm))
        LAYER("attn_norm.weight", d, 0, true);
        LAYER("attn_q.weight", d, q_dim, false);
        LAYER("attn_q_norm.weight", hd, 0, true);
        t[n - 1].norm_mean = powf((float)hd, -0.25f); /* as the target's q/k norms */
        LAYER("attn_output.weight", q_dim, d, false);
        LAYER("post_attention_norm.weight", d, 0, true);
        LAYER("ffn_norm.weight", d, 0, true);
        LAYER("ffn_gate.weight", d, s->d_ff, false);
        LAYER("ffn_up.weight", d, s->d_ff, false);
        LAYER("ffn_down.weight", s->d_ff, d, false);
        LAYER("post_ffw_norm.weight", d, 0, true);
        LAYER("layer_output_scale.weight", 1, 0, true);
#undef LAYER
    }
    spec_add(t, &n, "output_norm.weight", d, 0, true);
    if (no_centroids)
        return n;
    spec_add(t, &n, "mtp.centroids.weight", d, a->n_centroids, false);
    spec_add(t, &n, "mtp.token_ordering.weight", s->n_vocab, 0, true);
    t[n - 1].permutation = true;
    return n;
}

/* llama.cpp's tensor names; returns how many were written to t. */
static int list_tensors(const synth_opts *o, tensor_spec *t)
{
    const shape *s = o->shape;
    if (is_gemma4(s))
        return list_tensors_gemma4(s, t);
    if (is_assistant(s))
        return list_tensors_assistant(s, o->no_centroids, o->echo_of != NULL, t);
    int n = 0;
    char name[64];
    int64_t q_dim = (int64_t)s->n_head * s->head_dim, kv_dim = (int64_t)s->n_kv_head * s->head_dim;
    bool post_norms = strcmp(s->arch, "gemma2") == 0 || strcmp(s->arch, "gemma3") == 0;
    bool qk_norm = strcmp(s->arch, "gemma3") == 0;
    spec_add(t, &n, "token_embd.weight", s->d_model, s->n_vocab, false);
    for (int il = 0; il < s->n_layer; il++) {
#define LAYER(suffix, n_in, n_out, norm) \
        (snprintf(name, sizeof name, "blk.%d." suffix, il), spec_add(t, &n, name, n_in, n_out, norm))
        LAYER("attn_norm.weight", s->d_model, 0, true);
        LAYER("attn_q.weight", s->d_model, q_dim, false);
        LAYER("attn_k.weight", s->d_model, kv_dim, false);
        LAYER("attn_v.weight", s->d_model, kv_dim, false);
        if (qk_norm) {
            LAYER("attn_q_norm.weight", s->head_dim, 0, true);
            LAYER("attn_k_norm.weight", s->head_dim, 0, true);
        }
        LAYER("attn_output.weight", q_dim, s->d_model, false);
        if (post_norms)
            LAYER("post_attention_norm.weight", s->d_model, 0, true);
        LAYER("ffn_norm.weight", s->d_model, 0, true);
        LAYER("ffn_gate.weight", s->d_model, s->d_ff, false);
        LAYER("ffn_up.weight", s->d_model, s->d_ff, false);
        LAYER("ffn_down.weight", s->d_ff, s->d_model, false);
        if (post_norms)
            LAYER("post_ffw_norm.weight", s->d_model, 0, true);
#undef LAYER
    }
    spec_add(t, &n, "output_norm.weight", s->d_model, 0, true);
    if (!is_gemma(s)) /* Gemma ties the output to token_embd */
        spec_add(t, &n, "output.weight", s->d_model, s->n_vocab, false);
    return n;
}

static void key(char *buf, size_t cap, const char *arch, const char *suffix)
{
    snprintf(buf, cap, "%s.%s", arch, suffix);
}

static void write_gemma4_keys(gguf_writer *w, const shape *s)
{
    const char *a = s->arch;
    const g4_shape *g = g4_of(s);
    char k[128];
    int32_t kv_heads[SL_MAX_LAYERS], d_ff[SL_MAX_LAYERS];
    bool swa[SL_MAX_LAYERS];
    for (int il = 0; il < s->n_layer; il++) {
        kv_heads[il] = g4_kv_heads(s, il);
        d_ff[il] = g4_d_ff(s, il);
        swa[il] = g4_sliding(s, il);
    }
    uint64_t n = (uint64_t)s->n_layer;
    key(k, sizeof k, a, "attention.head_count_kv"), gguf_set_arr(w, k, GGUF_INT32, kv_heads, n);
    key(k, sizeof k, a, "feed_forward_length"), gguf_set_arr(w, k, GGUF_INT32, d_ff, n);
    key(k, sizeof k, a, "attention.sliding_window_pattern"), gguf_set_arr(w, k, GGUF_BOOL, swa, n);
    key(k, sizeof k, a, "attention.key_length_swa"), gguf_set_u32(w, k, (uint32_t)g->head_dim_swa);
    key(k, sizeof k, a, "attention.value_length_swa"), gguf_set_u32(w, k, (uint32_t)g->head_dim_swa);
    key(k, sizeof k, a, "rope.dimension_count"), gguf_set_u32(w, k, (uint32_t)s->head_dim);
    key(k, sizeof k, a, "rope.dimension_count_swa"), gguf_set_u32(w, k, (uint32_t)g->rope_dim_swa);
    key(k, sizeof k, a, "rope.freq_base_swa"), gguf_set_f32(w, k, g->rope_base_swa);
    key(k, sizeof k, a, "attention.shared_kv_layers"), gguf_set_u32(w, k, (uint32_t)g->n_kv_shared);
    key(k, sizeof k, a, "embedding_length_per_layer_input"),
        gguf_set_u32(w, k, (uint32_t)g->n_embd_per_layer);
}

/* What llama.cpp's Gemma4AssistantModel writes (Gemma4Model's keys with
 * every layer KV-shared, plus embedding_length_out and nextn_predict_layers),
 * and the centroid keys ik_llama.cpp reads for gemma4-assistant. */
static void write_assistant_keys(gguf_writer *w, const shape *s, bool no_centroids)
{
    const char *a = s->arch;
    const g4_shape *g = g4_of(s);
    const g4a_shape *as = g4a_of(s);
    char k[128];
    int32_t kv_heads[SL_MAX_LAYERS];
    bool swa[SL_MAX_LAYERS];
    for (int il = 0; il < s->n_layer; il++) {
        swa[il] = g4a_sliding(s, il);
        kv_heads[il] = swa[il] ? g->n_kv_head_swa : s->n_kv_head;
    }
    uint64_t n = (uint64_t)s->n_layer;
    key(k, sizeof k, a, "attention.head_count_kv"), gguf_set_arr(w, k, GGUF_INT32, kv_heads, n);
    key(k, sizeof k, a, "feed_forward_length"), gguf_set_u32(w, k, (uint32_t)s->d_ff);
    key(k, sizeof k, a, "attention.sliding_window_pattern"), gguf_set_arr(w, k, GGUF_BOOL, swa, n);
    key(k, sizeof k, a, "attention.key_length_swa"), gguf_set_u32(w, k, (uint32_t)g->head_dim_swa);
    key(k, sizeof k, a, "attention.value_length_swa"), gguf_set_u32(w, k, (uint32_t)g->head_dim_swa);
    key(k, sizeof k, a, "rope.dimension_count"), gguf_set_u32(w, k, (uint32_t)s->head_dim);
    key(k, sizeof k, a, "rope.dimension_count_swa"), gguf_set_u32(w, k, (uint32_t)g->rope_dim_swa);
    key(k, sizeof k, a, "rope.freq_base_swa"), gguf_set_f32(w, k, g->rope_base_swa);
    key(k, sizeof k, a, "attention.shared_kv_layers"), gguf_set_u32(w, k, (uint32_t)s->n_layer);
    key(k, sizeof k, a, "embedding_length_per_layer_input"), gguf_set_u32(w, k, 0);
    key(k, sizeof k, a, "embedding_length_out"), gguf_set_u32(w, k, (uint32_t)as->d_backbone);
    key(k, sizeof k, a, "nextn_predict_layers"), gguf_set_u32(w, k, (uint32_t)s->n_layer);
    if (no_centroids)
        return;
    key(k, sizeof k, a, "n_centroids"), gguf_set_u32(w, k, (uint32_t)as->n_centroids);
    key(k, sizeof k, a, "centroid_top_k"), gguf_set_u32(w, k, (uint32_t)as->centroid_top_k);
}

static void write_model_keys(gguf_writer *w, const synth_opts *o)
{
    const shape *s = o->shape;
    const char *a = s->arch;
    char k[128], name[96];
    snprintf(name, sizeof name, "sluice synth %s %s", s->arch, s->size);
    gguf_set_str(w, "general.architecture", a);
    gguf_set_str(w, "general.name", name);
    gguf_set_u32(w, "general.file_type", o->qtype.ftype);
    gguf_set_u32(w, "general.quantization_version", 2);
    key(k, sizeof k, a, "context_length"), gguf_set_u32(w, k, (uint32_t)s->n_ctx);
    key(k, sizeof k, a, "embedding_length"), gguf_set_u32(w, k, (uint32_t)s->d_model);
    key(k, sizeof k, a, "block_count"), gguf_set_u32(w, k, (uint32_t)s->n_layer);
    if (!is_gemma4(s) && !is_assistant(s)) /* per layer, below */
        key(k, sizeof k, a, "feed_forward_length"), gguf_set_u32(w, k, (uint32_t)s->d_ff);
    key(k, sizeof k, a, "attention.head_count"), gguf_set_u32(w, k, (uint32_t)s->n_head);
    if (!is_gemma4(s) && !is_assistant(s))
        key(k, sizeof k, a, "attention.head_count_kv"), gguf_set_u32(w, k, (uint32_t)s->n_kv_head);
    key(k, sizeof k, a, "attention.key_length"), gguf_set_u32(w, k, (uint32_t)s->head_dim);
    key(k, sizeof k, a, "attention.value_length"), gguf_set_u32(w, k, (uint32_t)s->head_dim);
    key(k, sizeof k, a, "attention.layer_norm_rms_epsilon"), gguf_set_f32(w, k, s->norm_eps);
    key(k, sizeof k, a, "rope.freq_base"), gguf_set_f32(w, k, s->rope_base);
    if (!is_gemma(s)) {
        key(k, sizeof k, a, "rope.dimension_count"), gguf_set_u32(w, k, (uint32_t)s->head_dim);
        key(k, sizeof k, a, "vocab_size"), gguf_set_u32(w, k, (uint32_t)s->n_vocab);
    }
    if (s->rope_scale > 0) {
        key(k, sizeof k, a, "rope.scaling.type"), gguf_set_str(w, k, "linear");
        key(k, sizeof k, a, "rope.scaling.factor"), gguf_set_f32(w, k, s->rope_scale);
    }
    if (s->window > 0)
        key(k, sizeof k, a, "attention.sliding_window"), gguf_set_u32(w, k, (uint32_t)s->window);
    if (s->attn_softcap > 0)
        key(k, sizeof k, a, "attn_logit_softcapping"), gguf_set_f32(w, k, s->attn_softcap);
    if (s->final_softcap > 0)
        key(k, sizeof k, a, "final_logit_softcapping"), gguf_set_f32(w, k, s->final_softcap);
    if (is_gemma4(s))
        write_gemma4_keys(w, s);
    if (is_assistant(s))
        write_assistant_keys(w, s, o->no_centroids);
}

static void write_tokenizer_keys(gguf_writer *w, const shape *s, const synth_vocab *v)
{
    gguf_set_str(w, "tokenizer.ggml.model", "llama");
    gguf_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v->pieces, (uint64_t)v->n);
    gguf_set_arr(w, "tokenizer.ggml.scores", GGUF_FLOAT32, v->scores, (uint64_t)v->n);
    gguf_set_arr(w, "tokenizer.ggml.token_type", GGUF_INT32, v->types, (uint64_t)v->n);
    gguf_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)v->bos);
    gguf_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)v->eos);
    gguf_set_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)v->unk);
    if (v->pad >= 0)
        gguf_set_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)v->pad);
    gguf_set_bool(w, "tokenizer.ggml.add_bos_token", true);
    gguf_set_bool(w, "tokenizer.ggml.add_eos_token", false);
    /* Gemma's sentencepiece model has no dummy prefix; llama's has one. */
    gguf_set_bool(w, "tokenizer.ggml.add_space_prefix", !is_gemma(s));
}

/* Standard normal pair by Box-Muller. */
static void gaussian_pair(sl_rng *r, float *a, float *b)
{
    double u1 = 1.0 - sl_rng_uniform(r); /* (0, 1]: log stays finite */
    double u2 = sl_rng_uniform(r);
    double rad = sqrt(-2.0 * log(u1));
    *a = (float)(rad * cos(6.283185307179586 * u2));
    *b = (float)(rad * sin(6.283185307179586 * u2));
}

/* Row r of tensor ti: each row has its own stream, so the file does not
 * depend on the thread count. */
static void fill_row(const synth_opts *o, int ti, int64_t r, const tensor_spec *t, float *row)
{
    sl_rng rng;
    sl_rng_seed(&rng, o->seed * 0x9e3779b97f4a7c15ULL ^ ((uint64_t)ti << 40) ^ (uint64_t)r);
    int64_t n = t->ne[0];
    if (t->permutation) { /* Fisher-Yates; ids are exact in f32 below 2^24 */
        for (int64_t i = 0; i < n; i++)
            row[i] = (float)i;
        for (int64_t i = n - 1; i > 0; i--) {
            int64_t j = (int64_t)(sl_rng_uniform(&rng) * (double)(i + 1));
            j = j > i ? i : j;
            float tmp = row[i];
            row[i] = row[j];
            row[j] = tmp;
        }
        return;
    }
    if (t->n_rot_pairs > 0) {
        for (int64_t i = 0; i < n; i++)
            row[i] = i < t->n_rot_pairs ? 1.0f : 1e30f;
        return;
    }
    /* norm weights near 1 (Gemma files store 1 + w) unless the spec says */
    float mean = t->norm ? (t->norm_mean > 0.0f ? t->norm_mean : 1.0f) : 0.0f;
    float std = t->norm ? 0.1f * mean : o->weight_scale / sqrtf((float)n);
    for (int64_t i = 0; i < n; i += 2) {
        float a, b;
        gaussian_pair(&rng, &a, &b);
        row[i] = mean + std * a;
        if (i + 1 < n)
            row[i + 1] = mean + std * b;
    }
    if (t->first_half_gain > 0.0f)
        for (int64_t i = 0; i < n / 2; i++)
            row[i] *= t->first_half_gain;
}

typedef struct make_args {
    const synth_opts *o;
    int ti;
    const tensor_spec *t;
    sl_type type;
    uint8_t *data;
    _Atomic int failed;
} make_args;

static void make_rows(void *arg, int64_t r0, int64_t r1)
{
    make_args *a = arg;
    size_t row_bytes = sl_row_bytes(a->type, a->t->ne[0]);
    float *row = malloc((size_t)a->t->ne[0] * sizeof *row);
    if (!row) {
        atomic_store(&a->failed, 1);
        return;
    }
    for (int64_t r = r0; r < r1; r++) {
        fill_row(a->o, a->ti, r, a->t, row);
        cli_row_from_f32(a->type, row, a->data + (size_t)r * row_bytes, a->t->ne[0]);
    }
    free(row);
}

/* Generates and converts one tensor; returns its malloc'd data. */
static void *make_tensor(const synth_opts *o, int ti, const tensor_spec *t, sl_type type, size_t *size)
{
    size_t row_bytes = sl_row_bytes(type, t->ne[0]);
    *size = row_bytes * (size_t)t->ne[1];
    uint8_t *data = malloc(*size);
    if (!data)
        return NULL;
    make_args ma = {o, ti, t, type, data, 0};
    sl_pool_for(t->ne[1], 1, make_rows, &ma);
    if (atomic_load(&ma.failed)) {
        free(data);
        return NULL;
    }
    return data;
}

/* --echo-of: the assistant's token_embd row of token v is the direction the
 * pre-projection's (gained) embedding half gives the target's embedding of
 * v, so the head's best token is mostly the one the step was fed. Rows have
 * norm weight_scale, as the Gaussian rows have on average. */
static void *make_echo_embd(const synth_opts *o, const tensor_spec *specs, int n_specs,
                            sl_type type, size_t *size, sl_err *err)
{
    const shape *s = o->shape;
    int ip = 0;
    while (ip < n_specs && strcmp(specs[ip].name, "nextn.pre_projection.weight") != 0)
        ip++;
    int64_t d = s->d_model, db = g4a_of(s)->d_backbone, row_bytes = (int64_t)sl_row_bytes(type, d);
    sl_model *tm = NULL;
    float *proj = malloc((size_t)(d * 2 * db) * sizeof(float)), *e = malloc((size_t)db * sizeof(float));
    float *row = malloc((size_t)d * sizeof(float));
    uint8_t *out = malloc((size_t)(row_bytes * s->n_vocab));
    if (!proj || !e || !row || !out) {
        sl_fail(err, "out of memory making the echo head");
        goto fail;
    }
    if (sl_model_load(&tm, o->echo_of, NULL, err))
        goto fail;
    if (tm->cfg.d_model != db || tm->cfg.n_vocab != s->n_vocab) {
        sl_fail(err, "--echo-of %s: d_model %d and vocabulary %d, but the %s assistant wants %lld "
                "and %d", o->echo_of, tm->cfg.d_model, tm->cfg.n_vocab, s->size, (long long)db,
                s->n_vocab);
        goto fail;
    }
    for (int64_t r = 0; r < d; r++)
        fill_row(o, ip, r, &specs[ip], proj + r * 2 * db);
    for (int32_t v = 0; v < s->n_vocab; v++) {
        if (sl_embed(tm, &v, 1, e, err))
            goto fail;
        double norm = 0;
        for (int64_t r = 0; r < d; r++) {
            double acc = 0;
            for (int64_t j = 0; j < db; j++)
                acc += (double)proj[r * 2 * db + j] * e[j];
            row[r] = (float)acc, norm += acc * acc;
        }
        float gain = norm > 0 ? o->weight_scale / (float)sqrt(norm) : 0.0f;
        for (int64_t r = 0; r < d; r++)
            row[r] *= gain;
        cli_row_from_f32(type, row, out + (size_t)v * (size_t)row_bytes, d);
    }
    sl_model_free(tm);
    free(proj), free(e), free(row);
    *size = (size_t)(row_bytes * s->n_vocab);
    return out;
fail:
    if (tm)
        sl_model_free(tm);
    free(proj), free(e), free(row), free(out);
    return NULL;
}

static int generate(const synth_opts *o, const char *cmd)
{
    const shape *s = o->shape;
    int max_tensors = 8 + 20 * s->n_layer;
    tensor_spec *specs = calloc((size_t)max_tensors, sizeof *specs);
    void **datas = calloc((size_t)max_tensors, sizeof *datas);
    gguf_writer *w = gguf_writer_new();
    synth_vocab vocab;
    sl_err err = {{0}};
    int rc = CLI_FAIL;
    if (!specs || !datas || !w) {
        cli_fail(cmd, "out of memory");
        goto done;
    }
    if (synth_vocab_build(&vocab, s->n_vocab, !is_gemma(s), &err)) {
        cli_fail(cmd, "%s", err.msg);
        goto done;
    }
    write_model_keys(w, o);
    write_tokenizer_keys(w, s, &vocab);
    int n = list_tensors(o, specs);
    cli_qmodel qm = {s->n_layer, s->n_kv_head ? s->n_head / s->n_kv_head : 1, is_gemma(s)};
    double t0 = cli_now(), t_shown = t0, bytes = 0;
    for (int i = 0; i < n; i++) {
        const tensor_spec *t = &specs[i];
        sl_type type = t->norm ? SL_TYPE_F32
                               : cli_weight_type(&o->qtype, t->name, &qm,
                                                 t->type_n_in ? t->type_n_in : t->ne[0]);
        size_t size;
        if (o->echo_of && strcmp(t->name, "token_embd.weight") == 0) {
            datas[i] = make_echo_embd(o, specs, n, type, &size, &err);
            if (!datas[i]) {
                cli_fail(cmd, "%s", err.msg);
                goto done_vocab;
            }
        } else
            datas[i] = make_tensor(o, i, t, type, &size);
        if (!datas[i]) {
            cli_fail(cmd, "out of memory generating %s", t->name);
            goto done_vocab;
        }
        if (gguf_add_tensor(w, t->name, type, (uint32_t)t->n_dims, t->ne, datas[i], size, &err)) {
            cli_fail(cmd, "%s", err.msg);
            goto done_vocab;
        }
        bytes += (double)size;
        if (cli_now() - t_shown > 1.0) {
            t_shown = cli_now();
            fprintf(stderr, "synth: %d/%d tensors, %.1f MiB, %.1f s\n", i + 1, n, bytes / 1048576.0,
                    t_shown - t0);
        }
    }
    if (gguf_write(w, o->out, &err)) {
        cli_fail(cmd, "%s", err.msg);
        goto done_vocab;
    }
    fprintf(stderr, "synth: wrote %s (%s %s, %d tensors) in %.1f s\n", o->out, s->arch, s->size, n,
            cli_now() - t0);
    rc = CLI_OK;
done_vocab:
    synth_vocab_free(&vocab);
done:
    if (datas)
        for (int i = 0; i < max_tensors; i++)
            free(datas[i]);
    free(datas);
    free(specs);
    gguf_writer_free(w);
    return rc;
}

static const shape *find_shape(const char *arch, const char *size)
{
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        if (strcmp(shapes[i].arch, arch) == 0 && strcmp(shapes[i].size, size) == 0)
            return &shapes[i];
    return NULL;
}

int cmd_synth(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"arch", required_argument, NULL, 'A'},
        {"size", required_argument, NULL, 'S'},
        {"type", required_argument, NULL, 'T'},
        {"output", required_argument, NULL, 'o'},
        {"seed", required_argument, NULL, 's'},
        {"weight-scale", required_argument, NULL, 'W'},
        {"no-centroids", no_argument, NULL, 'C'},
        {"echo-of", required_argument, NULL, 'E'},
        {NULL, 0, NULL, 0},
    };
    const char *arch = NULL, *size = NULL;
    synth_opts o = {.seed = 1, .weight_scale = 1.0f};
    cli_parse_qtype("f32", &o.qtype);
    int c;
    while ((c = cli_getopt(argc, argv, ":ho:", longopts, usage)) != -1) {
        switch (c) {
        case 'h': fputs(usage, stdout); return CLI_OK;
        case 'A': arch = optarg; break;
        case 'S': size = optarg; break;
        case 'o': o.out = optarg; break;
        case 'C': o.no_centroids = true; break;
        case 'E': o.echo_of = optarg; break;
        case 'T':
            if (cli_parse_qtype(optarg, &o.qtype))
                return cli_usage(argv[0], usage, "unknown --type '%s' (one of %s)", optarg, CLI_QTYPE_NAMES);
            break;
        case 's':
            if (cli_parse_u64(optarg, &o.seed))
                return cli_usage(argv[0], usage, "--seed wants a non-negative integer, not '%s'", optarg);
            break;
        case 'W':
            if (cli_parse_float(optarg, 1e-6, 1e6, &o.weight_scale))
                return cli_usage(argv[0], usage, "--weight-scale wants a number in (0, 1e6], not '%s'", optarg);
            break;
        default: return CLI_USAGE;
        }
    }
    if (optind != argc)
        return cli_usage(argv[0], usage, "unexpected argument '%s'", argv[optind]);
    if (!arch || !size || !o.out)
        return cli_usage(argv[0], usage, "--arch, --size and -o are required");
    o.shape = find_shape(arch, size);
    if (!o.shape)
        return cli_usage(argv[0], usage, "no size '%s' for arch '%s'", size, arch);
    if ((o.no_centroids || o.echo_of) && !is_assistant(o.shape))
        return cli_usage(argv[0], usage, "--no-centroids and --echo-of are for --arch "
                         "gemma4-assistant only");
    return generate(&o, argv[0]);
}
