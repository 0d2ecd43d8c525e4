/* Gemma 4's drafter, the "MTP assistant" (GGUF architecture gemma4-assistant
 * as llama.cpp writes it, or ik_llama.cpp's gemma4_mtp): a few Gemma 4 layers
 * whose attention has queries only and reads the target's keys and values
 * of its last non-shared sliding layer and its last non-shared global layer.
 * Each step takes the target's (or the previous step's) hidden state and the
 * embedding of the last token, and gives the next token's logits and the
 * hidden state of the next step. docs/gemma4-assistant.md has the math and
 * where each fact comes from.
 *
 * The keys and values are plain arrays the caller owns (sl_mtp_kv): the
 * drafter needs no access to the target's cache, only a copy of the rows of
 * the two source layers, so it can run on any node. */
#ifndef SLUICE_MTP_H
#define SLUICE_MTP_H

#include <stdint.h>

#include "model/model.h"

typedef struct sl_mtp {
    sl_config cfg;             /* the assistant's own; cfg.d_backbone = target's d_model */
    gguf_file *gguf;
    sl_weight pre_proj;        /* [embedding ; hidden] (2 d_backbone) -> d_model */
    sl_weight post_proj;       /* d_model -> d_backbone: the next step's hidden state */
    sl_weight lm_head;         /* token_embd: n_vocab rows of d_model (tied head) */
    const float *output_norm;
    const float *rope_freqs;   /* global layers' frequency factors; NULL: the target's */
    sl_layer_weights *layer;   /* attn_norm, wq, q_norm, wo, post_attn_norm, ffn_norm,
                                * w_gate, w_up, w_down, post_ffn_norm, out_scale */
    /* Centroid-narrowed head (E2B/E4B): the centroid_top_k best of
     * n_centroids centroids select their tokens as the only candidates */
    sl_weight centroids;       /* n_centroids rows of d_model; no data: full vocabulary */
    int32_t *cluster;          /* [n_centroids][per_centroid] token ids */
    int per_centroid;          /* n_vocab / n_centroids */
    float *owned;
} sl_mtp;

/* Loads an assistant GGUF. Missing or misshapen tensors, a token ordering
 * that is neither a permutation of the vocabulary nor a token-to-centroid
 * map, and non-assistant files are errors naming the problem. */
int sl_mtp_load(sl_mtp **out, const char *path, sl_err *err);
/* Same from an opened file; takes ownership of f. */
int sl_mtp_from_gguf(sl_mtp **out, gguf_file *f, sl_err *err);
void sl_mtp_free(sl_mtp *m);

/* The target layers whose cache the assistant reads: src[0] the last
 * sliding layer with its own cache, src[1] the last global one (E2B: 13
 * and 14). Fails when the target lacks one or shapes disagree. */
int sl_mtp_source_layers(const sl_mtp *m, const sl_config *target, int src[2], sl_err *err);

/* The same from the target's config alone (what a layers stage sends the
 * assistant): fails when the target lacks a sliding or a global layer
 * with its own cache. */
int sl_mtp_target_sources(const sl_config *target, int src[2], sl_err *err);

/* Keys and values of one source layer as the caller keeps them: positions
 * [pos0, pos0 + n), each n_kv_head heads of head_dim elements of type (F32,
 * F16, BF16 or Q8_0, each head a whole row of blocks), rows row_bytes
 * apart. slots 0: position pos0 + i is row i. slots > 0: a ring (a sliding
 * layer's last positions), position p is row p % slots; slots is a multiple
 * of SL_ATTN_SPAN (kernels/attn.h) and at least n. */
typedef struct sl_mtp_kv {
    const void *k, *v;
    int64_t pos0, n;
    int64_t row_bytes;
    sl_type type;
    int64_t slots;
} sl_mtp_kv;

/* One step's result, pointing into the context (valid until its next step):
 * n_logits logits of tokens ids[] (ids NULL: the whole vocabulary, id =
 * index), and the hidden state that feeds the next step. */
typedef struct sl_mtp_out {
    const float *logits;
    const int32_t *ids;
    int n_logits;
    const float *h_next;       /* d_backbone */
} sl_mtp_out;

typedef struct sl_mtp_ctx sl_mtp_ctx;

/* Scratch for steps of m against target, whose token embedding (for the
 * input) must be bound: a whole model, or a part with the embedding or a
 * tied head. The target must outlive the context. */
int sl_mtp_ctx_new(sl_mtp_ctx **out, const sl_mtp *m, const sl_model *target, sl_err *err);
void sl_mtp_ctx_free(sl_mtp_ctx *c);
/* src[] of sl_mtp_source_layers for this pair. */
void sl_mtp_ctx_sources(const sl_mtp_ctx *c, int src[2]);

/* One step at position pos: h is the target's final hidden state after its
 * final norm (what its lm_head reads) or a previous step's h_next; token is
 * the token at pos (not yet in the target's cache). kv[0] and kv[1] hold
 * the sliding and global source layers' rows of positions [first, pos), first
 * = pos - window + 1 (sliding) or 0. */
int sl_mtp_step(sl_mtp_ctx *c, const float *h, int32_t token, int32_t pos, const sl_mtp_kv kv[2],
                sl_mtp_out *out, sl_err *err);

/* k greedy drafts after token at pos: each step's best token feeds the next,
 * with that step's h_next, at the same position pos (ik_llama.cpp's constant
 * draft positions: the target's cache does not grow while drafting). */
int sl_mtp_draft(sl_mtp_ctx *c, const float *h, int32_t token, int32_t pos, const sl_mtp_kv kv[2],
                 int k, int32_t *drafts, sl_err *err);

#endif
