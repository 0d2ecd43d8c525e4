/* The part of the embed, layers and head stages that holds a slice of the
 * model: loading it, the forward state, and sending activations on. Those
 * kinds call it; it calls none of them. */
#ifndef SLUICE_STAGES_MODEL_STAGE_H
#define SLUICE_STAGES_MODEL_STAGE_H

#include <stdbool.h>
#include <stdint.h>

#include "model/forward.h"
#include "model/kv.h"
#include "model/model.h"
#include "stages/stage.h"

typedef struct sl_model_stage {
    sl_model *model;
    sl_fwd *fwd;
    sl_kv *kv;
    int max_batch;
    float *ple_proj;   /* embed stage gathering every layer's per-layer inputs: scratch */
    /* batches whose per-layer inputs this stage gathered, or took from upstream */
    uint64_t ple_gathered, ple_received;
    /* a pipeline with an mtp stage (spec->mtp_feed): the target's layers
     * whose new K/V rows it needs (-1: not in this part), and the rows this
     * batch sends on (PL_MTP_KV, PL_MTP_ROW), taken over by the emit */
    bool mtp_feed;
    int mtp_src[2];
    float *mtp_kv;
    int32_t *mtp_row;
    uint64_t mtp_cols, mtp_w[2]; /* a row's floats; K (or V) floats of each source layer */
} sl_model_stage;

/* Loads the part of spec's model for s (s->impl, s->destroy) and, with
 * fwd, a forward state for max_batch_tokens rows. */
int sl_model_stage_open(sl_stage *s, const sl_stage_spec *spec, const sl_model_part *part, bool fwd,
                        sl_err *err);

/* Per-layer inputs travelling down (limits.ple: embed): cols floats a row,
 * layer-major (proto/sluice.proto's PL_PLE); owned with free when own. */
typedef struct sl_ple_rows {
    float *data;
    uint64_t cols;
    bool own;
} sl_ple_rows;

/* Sends the batch on with the stage's new activations x (taken over), when
 * tok is not NULL the batch's token ids (models with per-layer embeddings:
 * each layer stage computes its layers' inputs from them), and when
 * ple->cols > 0 the per-layer inputs of the layers ahead. */
int sl_model_stage_emit(sl_stage *s, const pl_msg *in, const sl_batch_rows *r, float *x, const int32_t *tok,
                        const sl_ple_rows *ple, const sl_emit *out, sl_err *err);
/* The width of a PL_MTP_KV row of model m: keys and values of its two
 * source layers src[] (sl_mtp_target_sources). */
uint64_t sl_model_stage_mtp_cols(const sl_model *m, const int src[2]);
/* Passes in's PL_MTP_KV and PL_MTP_ROW on to m (the rows travel to the mtp
 * stage through stages that do not add to them). */
int sl_model_stage_pass_mtp(pl_msg *m, const pl_msg *in, sl_err *err);
/* A batch's activations in a fresh buffer (n x d floats), or NULL with why. */
float *sl_model_stage_activations(const pl_msg *in, uint32_t n, int d, sl_err *why);
/* Where a Gemma 4 stage's per-layer inputs came from, for --stats. */
void sl_model_stage_describe_ple(const sl_stage *s, char *buf, size_t size);

#endif
