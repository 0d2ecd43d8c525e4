/* Stage kinds and a stage's settings, and the one codec between those
 * settings and the wire's StageAssign (proto/sluice.proto), which a
 * coordinator sends a worker for each stage it is to run. The pipeline
 * fills the settings from its config; a stage is created from them; a
 * worker gets them back from the assignment. */
#ifndef SLUICE_MSG_ASSIGN_H
#define SLUICE_MSG_ASSIGN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/sluice.pb-c.h"
#include "util/err.h"

typedef enum pl_stage_kind {
    /* 0 was "tokenize", a pass-through (the driver tokenizes prompts):
     * kept out of use so StageAssign.kind values on the wire stay */
    PL_STAGE_EMBED = 1,
    PL_STAGE_LAYERS,
    PL_STAGE_HEAD,
    PL_STAGE_SAMPLE,
    PL_STAGE_DRAFT,            /* made from `speculative:`, never listed in stages */
    PL_STAGE_MTP,              /* a Gemma 4 assistant drafting after sample (`speculative:`) */
    PL_STAGE_KIND_COUNT_
} pl_stage_kind;

/* "embed", "layers", ...; "unknown" for 0 and values past the kinds. */
const char *pl_stage_kind_name(pl_stage_kind k);

/* Tokens a draft stage may draft a step: rows a verification carries per
 * request past its own. */
#define PL_SPEC_K_MAX 32

/* What a stage is: its kind, model, layers and the limits it enforces. */
typedef struct sl_stage_spec {
    pl_stage_kind kind;
    const char *model;       /* GGUF path */
    int l0, l1;              /* layers stages */
    int max_sequences;
    int context;
    int max_batch_tokens;
    int index;               /* position in the pipeline, for names */
    int kv_type;             /* sl_type of the layers' KV cache (0: f32) */
    bool kv_full;            /* layers: sliding-window layers keep every position, not a ring
                              * (limits.prefix_cache: full) */
    bool ple_at_embed;       /* embed stage of a model with per-layer embeddings: gather
                              * every layer's inputs and send them down (limits.ple: embed) */
    /* draft stages */
    const char *draft_model; /* GGUF of the draft model (NULL with spec_lookup) */
    int spec_k;              /* tokens drafted a step (the most, with spec_auto) */
    bool spec_auto;          /* k follows the running acceptance rate */
    bool spec_lookup;        /* prompt lookup instead of a draft model */
    bool spec_pipelined;     /* draft the next block while the target verifies */
    bool mtp_feed;           /* the pipeline has an mtp stage: layers and head send it the
                              * target's K/V rows and hidden states (draft_model: the assistant) */
} sl_stage_spec;

/* Where and how a stage runs: the stage host's part of an assignment. */
typedef struct pl_stage_place {
    const char *input;       /* address the stage binds (PULL) */
    const char *output;      /* address it connects to (PUSH) */
    int threads;             /* 0: the worker chooses */
    int numa;                /* -1: no binding */
    const char *output_key;  /* CURVE public key (Z85) of the node output reaches; "" none */
    const char *input_peer_key; /* of the node that connects to input; "" none */
    uint64_t max_frame_bytes, max_message_bytes; /* the input's limits (0: the defaults) */
} pl_stage_place;

/* Fills sa (initialised here) from a stage's settings and placement. sa
 * points into spec and place, which must outlive it. */
void pl_assign_encode(Sluice__StageAssign *sa, const sl_stage_spec *spec, const pl_stage_place *place);
/* Reads assignment i back, checking every field (kind, paths, layer range,
 * limits, KV type, draft settings); spec and place point into sa. The
 * error names the assignment and the field. Key texts are the caller's to
 * check (they are CURVE's). */
int pl_assign_decode(const Sluice__StageAssign *sa, size_t i, sl_stage_spec *spec, pl_stage_place *place,
                     sl_err *err);

#endif
