/* Architecture configuration: every difference between gemma, gemma2,
 * gemma3, gemma4 and llama is a number or flag here, read from GGUF metadata with
 * llama.cpp's keys. The forward pass reads only this struct, never the
 * architecture name. */
#ifndef SLUICE_CONFIG_H
#define SLUICE_CONFIG_H

#include <stdbool.h>

#include "model/gguf.h"
#include "util/err.h"

#define SL_MAX_LAYERS 512

typedef enum sl_act { SL_ACT_GELU_TANH = 0, SL_ACT_SILU = 1 } sl_act;

typedef struct sl_layer_cfg {
    int n_head;
    int n_kv_head;
    int head_dim;          /* of queries, keys and values */
    int d_ff;              /* FFN width (Gemma 4 E2B doubles it in the KV-sharing layers) */
    int sliding_window;    /* 0: global attention; else keys within the last N positions */
    float rope_base;
    float rope_freq_scale; /* 1/linear scaling factor */
    int rope_dim;          /* rotated dimensions per head (<= head_dim) */
    bool rope_freq_factors;/* divide rotation frequency i by rope_freqs.weight[i] (Gemma 4
                            * global layers: 1e30 switches a pair off, "proportional" RoPE) */
    float attn_scale;      /* multiplies q.k before soft-capping */
    int kv_src;            /* -1: computes and caches its own K/V; else the earlier layer
                            * whose cache it reads (Gemma 4: the last n_kv_shared layers) */
    bool v_is_k;           /* no V projection: V is this layer's K projection (before k norm) */
} sl_layer_cfg;

typedef struct sl_config {
    char arch[32];          /* general.architecture */
    int n_layer;
    int d_model;
    int d_ff;
    int n_vocab;
    int n_ctx_train;
    float norm_eps;
    float embed_scale;      /* sqrt(d_model) for Gemma, 1 for llama */
    sl_act act;
    bool rope_neox;         /* half-split rotation (Gemma) vs adjacent pairs (llama) */
    bool post_attn_norm;    /* Gemma 2/3: norm on the attention output before the residual */
    bool post_ffn_norm;     /* Gemma 2/3: norm on the FFN output before the residual */
    bool qk_norm;           /* Gemma 3: RMSNorm over head_dim of q and k before RoPE */
    float attn_softcap;     /* 0: none (Gemma 2: 50) */
    float final_softcap;    /* 0: none (Gemma 2: 30) */
    bool v_norm;            /* Gemma 4: weight-free RMSNorm over head_dim of V */
    int n_kv_shared;        /* the last n_kv_shared layers read an earlier layer's cache */
    /* Per-layer embeddings (Gemma 4): a second table of n_layer x n_embd_per_layer
     * columns gathered by token and scaled by ple_tok_scale, plus a projection of
     * the scaled main embedding (times ple_proj_scale, RMSNorm per layer slice);
     * their sum times ple_input_scale feeds each layer's gated per-layer path. */
    int n_embd_per_layer;   /* 0: none */
    float ple_tok_scale;
    float ple_proj_scale;
    float ple_input_scale;
    /* Gemma 4 assistant (drafter, model/mtp.h): the target's hidden size it
     * reads (0: not an assistant) and its centroid-narrowed head (0: none) */
    int d_backbone;
    int n_centroids, centroid_top_k;
    sl_layer_cfg layer[SL_MAX_LAYERS];
} sl_config;

/* Fills c from a GGUF's metadata (and tensor shapes where metadata is
 * optional, e.g. the vocabulary size from token_embd.weight). Missing
 * required keys and values out of range are errors naming the key. */
int sl_config_from_gguf(sl_config *c, const gguf_file *f, sl_err *err);

/* The largest per-layer sizes, for sizing buffers. */
int sl_config_max_q_dim(const sl_config *c);  /* n_head * head_dim */
int sl_config_max_kv_dim(const sl_config *c); /* n_kv_head * head_dim */
int sl_config_max_d_ff(const sl_config *c);

/* Prints a human-readable summary (for `sluice inspect` and -v). */
void sl_config_print(const sl_config *c, void *file /* FILE* */);

#endif
