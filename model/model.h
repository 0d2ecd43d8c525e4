/* Weights of a model part: the embedding, a contiguous layer range
 * [l0, l1) and/or the head, pointing into the mmap'd GGUF. Only the tensors
 * of the part are looked up (and so paged in). */
#ifndef SLUICE_MODEL_H
#define SLUICE_MODEL_H

#include "model/config.h"
#include "model/gguf.h"

/* A weight matrix of n_out rows of n_in elements (GGUF ne[0] = n_in). */
typedef struct sl_weight {
    sl_type type;
    int64_t n_in;
    int64_t n_out;
    const void *data;
    /* A copy laid out for the fastest kernel of this CPU (sl_pack in
     * kernels/matmul.h), made at load; NULL when none applies. */
    void *packed;
} sl_weight;

typedef struct sl_layer_weights {
    /* norm weights dequantised to f32 at load (small); NULL when absent */
    const float *attn_norm, *q_norm, *k_norm, *post_attn_norm, *ffn_norm, *post_ffn_norm;
    sl_weight wq, wk, wv, wo;     /* wk, wv: no data in a KV-sharing layer; wv none when V = K */
    sl_weight w_gate, w_up, w_down;
    /* Gemma 4: the gated per-layer-embedding path and the output scale */
    sl_weight ple_gate;           /* inp_gate: d_model -> n_embd_per_layer */
    sl_weight ple_proj;           /* proj: n_embd_per_layer -> d_model */
    const float *ple_post_norm;   /* post_norm */
    const float *out_scale;       /* layer_output_scale: one float, NULL when absent */
} sl_layer_weights;

typedef struct sl_model_part {
    int l0, l1;      /* layer range; l0 == l1 for none */
    bool embed;      /* token_embd */
    bool head;       /* output_norm + output (or tied token_embd) */
    bool ple;        /* with embed: the per-layer-embedding tables of all layers
                      * (the embed stage gathers every layer's inputs) */
} sl_model_part;

typedef struct sl_model {
    sl_config cfg;
    gguf_file *gguf;
    sl_model_part part;
    sl_weight tok_embd;      /* n_out = n_vocab rows of d_model; set when embed or tied head */
    const float *output_norm;
    sl_weight output;        /* lm_head; equals tok_embd when tied */
    bool tied_output;
    const float *rope_freqs;  /* Gemma 4 global layers' frequency factors (rope_dim/2) */
    /* Per-layer embeddings of layers [ple_l0, ple_l1): a layer part's own, or
     * all of them for an embed part with part.ple (tok_embd is bound too,
     * for the scaled main embedding they project) */
    sl_weight ple_tok_embd;   /* per_layer_token_embd: n_vocab rows of n_layer*n_embd_per_layer */
    sl_weight ple_model_proj; /* per_layer_model_proj, only the rows of layers [ple_l0, ple_l1) */
    const float *ple_proj_norm;
    int ple_l0, ple_l1;       /* the layers whose per-layer inputs this part can compute */
    sl_layer_weights *layer; /* indexed by absolute layer id; only [l0, l1) filled */
    float *owned;            /* storage of the f32 norm weights */
} sl_model;

/* Loads path; part NULL means the whole model. Missing tensors and shapes
 * that disagree with the config are errors naming the tensor. */
int sl_model_load(sl_model **out, const char *path, const sl_model_part *part, sl_err *err);
/* Same from an already opened file; the model takes ownership of f. */
int sl_model_from_gguf(sl_model **out, gguf_file *f, const sl_model_part *part, sl_err *err);
void sl_model_free(sl_model *m);

/* f's configuration into c, checked to be what the loader takes: a Gemma 4
 * assistant (model/mtp.c) or a model of its own (assistant false). */
int sl_model_config(gguf_file *f, sl_config *c, bool assistant, sl_err *err);
/* The checks sl_model_load makes, for loaders of other tensor sets
 * (model/mtp.c): a matrix of n_out rows of n_in in a supported type whose
 * rows fill whole blocks; a vector of n elements dequantised to f32 at
 * *cursor (advanced by n). Absent and not required: zeroed / NULL, 0. */
int sl_model_bind_matrix(const gguf_file *f, const char *name, int64_t n_in, int64_t n_out,
                         bool required, sl_weight *w, sl_err *err);
int sl_model_bind_vector(const gguf_file *f, const char *name, int64_t n, bool required,
                         float **cursor, const float **out, sl_err *err);
/* Repacks w for this CPU's fastest kernel (w->packed; sl_pack_free it). */
void sl_weight_pack(sl_weight *w);

#endif
