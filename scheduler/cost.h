/* What a model costs, layer by layer, for the placement solver: bytes of
 * weights a decode step reads, FLOPs per token, KV-cache bytes per position
 * (a sliding-window layer holds at most its window), the activation bytes a
 * token carries across a stage boundary, and the embedding and head. From a
 * GGUF file's tensor table (no weights are read), or from an architecture's
 * shapes and a weight type, for models that are not on this machine. */
#ifndef SLUICE_SCHED_COST_H
#define SLUICE_SCHED_COST_H

#include "kernels/types.h"
#include "model/config.h"
#include "model/ple.h"
#include "util/err.h"

typedef struct sl_layer_cost {
    double weight_bytes;     /* read once per decode step */
    double flops;            /* per token, matrices only */
    double kv_bytes_per_pos; /* keys + values of one position */
    int window;              /* 0: global */
    double attn_flops_per_pos; /* per token, per visible position */
    /* Gemma 4: this layer's rows of per_layer_model_proj, in weight_bytes and
     * flops above while the layer's stage gathers its own per-layer inputs */
    double ple_weight_bytes, ple_flops;
} sl_layer_cost;

typedef struct sl_model_cost {
    char desc[256];
    int n_layer, d_model;
    sl_layer_cost layer[SL_MAX_LAYERS];
    double embed_bytes;      /* the token table (held in memory) */
    double head_bytes;       /* the lm_head read per decode step (the table again when tied) */
    double head_flops;
    bool tied;               /* head and embedding share one table */
    double boundary_bytes;   /* per token crossing a stage boundary (f32 activations):
                              * without per-layer embeddings; else sl_cost_boundary_bytes */
    /* Gemma 4's per-layer embeddings: where they are gathered (sl_cost_set_ple;
     * PLE_AT_LAYERS after loading) and what the embed stage then does */
    int n_embd_per_layer;
    ple_mode ple;
    double embed_read_bytes, embed_flops; /* per token, at the embed stage */
    /* no_cut[k]: no stage may start at layer k, because a layer at or after k
     * reads the KV cache of a layer before k (Gemma 4's KV sharing) */
    bool no_cut[SL_MAX_LAYERS + 1];
    int no_cut_reader[SL_MAX_LAYERS + 1], no_cut_source[SL_MAX_LAYERS + 1]; /* why, for errors */
} sl_model_cost;

/* From a GGUF file; kv_type is the cache's element type. */
int sl_cost_from_gguf(sl_model_cost *mc, const char *path, sl_type kv_type, sl_err *err);

/* An architecture's shapes with every 2-D weight of type wtype (the
 * embedding too), every 6th layer global when window > 0 (Gemma 3's
 * pattern; gemma2: every 2nd). */
typedef struct sl_shape {
    const char *arch, *size;
    int n_layer, d_model, d_ff, n_head, n_kv_head, head_dim, n_vocab, window, swa_pattern;
    /* Gemma 4 (0 elsewhere): head_dim / n_kv_head above are the global
     * layers'; the sliding layers', the KV-sharing layers at the end and
     * their d_ff, and the per-layer embedding width */
    int head_dim_swa, n_kv_head_swa, n_kv_shared, d_ff_shared, n_embd_per_layer;
} sl_shape;
void sl_cost_from_shape(sl_model_cost *mc, const sl_shape *s, sl_type wtype, sl_type kv_type);
/* The known shapes ("gemma3", "12b"); NULL if unknown. */
const sl_shape *sl_shape_find(const char *arch, const char *size);
/* "gemma3 270m, 1b, 4b, 12b, 27b; gemma2 2b, 9b, 27b; ..." */
const char *sl_shape_list(void);

/* Moves the per-layer inputs' projection between the layers (PLE_AT_LAYERS)
 * and the embed stage (PLE_AT_EMBED), which changes what crosses each cut. */
void sl_cost_set_ple(sl_model_cost *mc, ple_mode mode);
/* Bytes per token crossing the boundary before layer cut (0: from the
 * embed stage to the first layers). */
double sl_cost_boundary_bytes(const sl_model_cost *mc, int cut);

/* KV bytes layers [l0, l1) hold for `sequences` sequences of `context`. */
double sl_cost_kv_bytes(const sl_model_cost *mc, int l0, int l1, int context, int sequences);
/* Bytes a decode step reads in layers [l0, l1) at position `context`:
 * weights plus the visible keys and values. */
double sl_cost_read_bytes(const sl_model_cost *mc, int l0, int l1, int context);
double sl_cost_weight_bytes(const sl_model_cost *mc, int l0, int l1);
double sl_cost_flops(const sl_model_cost *mc, int l0, int l1, int context);

#endif
