/* Stages: the units of a pipeline. A stage consumes one message at a time
 * and emits zero or more messages downstream; it knows nothing of sockets,
 * threads or processes (the stage host in pipeline/ does).
 *
 * Every BATCH a stage receives produces exactly one message downstream (the
 * transformed batch, or an ERROR naming its requests), so the driver at the
 * end of the ring sees one answer per batch it sent, in order. Control
 * messages (RELEASE, TRUNCATE) are applied and passed on. */
#ifndef SLUICE_STAGE_H
#define SLUICE_STAGE_H

#include "pipeline/config.h"
#include "pipeline/wire.h"
#include "util/err.h"

typedef struct sl_stage sl_stage;

/* Where a stage's output goes; the host provides it. The callee takes over
 * m (it is sent or closed). */
typedef struct sl_emit {
    int (*send)(void *ctx, pl_msg *m, sl_err *err);
    void *ctx;
} sl_emit;

typedef struct sl_stage_spec {
    pl_stage_kind kind;
    const char *model;       /* GGUF path */
    int l0, l1;              /* layers stages */
    int max_sequences;
    int context;
    int max_batch_tokens;
    int index;               /* position in the pipeline, for names */
    int kv_type;             /* sl_type of the layers' KV cache (0: f32) */
} sl_stage_spec;

struct sl_stage {
    char name[64];           /* e.g. "layers[0,3)" */
    pl_stage_kind kind;
    /* Handles one received message. Returns -1 only for failures that make
     * the stage unusable; a bad batch becomes an ERROR message instead. */
    int (*process)(sl_stage *s, pl_msg *in, const sl_emit *out, sl_err *err);
    void (*destroy)(sl_stage *s);
    void *impl;
    /* counters (read by the host for status) */
    uint64_t n_batches, n_rows, n_errors;
};

/* Loads what the stage needs (only its own tensors) and returns it. */
int sl_stage_create(sl_stage **out, const sl_stage_spec *spec, sl_err *err);
void sl_stage_destroy(sl_stage *s);

/* Builds an ERROR message for the requests of a batch (exposed for hosts
 * that fail a batch themselves). */
int sl_stage_error_msg(pl_msg *out, uint64_t batch_id, const uint64_t *requests, uint32_t n,
                       const char *origin, const char *text, sl_err *err);

#endif
