/* Stages: the units of a pipeline. A stage consumes one message at a time
 * and emits zero or more messages downstream; it knows nothing of sockets,
 * threads or processes (the stage host in pipeline/ does).
 *
 * Every BATCH a stage receives produces exactly one message downstream (the
 * transformed batch, or an ERROR naming its requests), so the driver at the
 * end of the ring sees one answer per batch it sent, in order. Control
 * messages (RELEASE, TRUNCATE) are applied and passed on.
 *
 * Each kind lives in its own file (embed.c, layers.c, head.c, sample.c,
 * draft.c) and is made through the table in stage.c; the
 * helpers below (common.c) serve every kind and call none of them. */
#ifndef SLUICE_STAGE_H
#define SLUICE_STAGE_H

#include <stdbool.h>
#include <stddef.h>

#include "model/kv.h"
#include "msg/assign.h"
#include "msg/msg.h"
#include "util/err.h"

typedef struct sl_stage sl_stage;

/* Where a stage's output goes; the host provides it. The callee takes over
 * m (it is sent or closed). */
typedef struct sl_emit {
    int (*send)(void *ctx, pl_msg *m, sl_err *err);
    void *ctx;
} sl_emit;

struct sl_stage {
    char name[64];           /* e.g. "layers[0,3)" */
    pl_stage_kind kind;
    /* Handles one received message. Returns -1 only for failures that make
     * the stage unusable; a bad batch becomes an ERROR message instead. */
    int (*process)(sl_stage *s, pl_msg *in, const sl_emit *out, sl_err *err);
    void (*destroy)(sl_stage *s);
    /* Optional: work to do while no message waits (a draft stage drafting
     * ahead). Returns 1 when it has more such work, 0 when idle. */
    int (*idle)(sl_stage *s);
    /* Optional: a line of stage-specific statistics for status output. */
    void (*describe)(const sl_stage *s, char *buf, size_t size);
    void *impl;
    sl_kv *kv;               /* a layers stage's KV cache (owned by impl), else NULL */
    /* counters (read by the host for status): n_errors counts batches
     * answered with an ERROR, n_refused those of them refused for going
     * past a limit (max_batch_tokens, max_sequences, context) */
    uint64_t n_batches, n_rows, n_errors, n_refused;
    int index;               /* position in the pipeline */
    int max_sequences, context, max_batch_tokens; /* the limits it enforces */
};

/* Loads what the stage needs (only its own tensors) and returns it. */
int sl_stage_create(sl_stage **out, const sl_stage_spec *spec, sl_err *err);
void sl_stage_destroy(sl_stage *s);

/* A layers stage's KV cache (NULL for other kinds); for tests and status. */
sl_kv *sl_stage_kv(sl_stage *s);

/* ---- shared by the stage kinds (common.c) ---- */

/* The row arrays every BATCH carries, checked. */
typedef struct sl_batch_rows {
    uint32_t n;
    const uint64_t *req;
    const int32_t *seq, *pos;
    const uint8_t *flags;
} sl_batch_rows;

/* Reads a BATCH's rows and refuses one past the stage's limits (see
 * sl_stage_check_limits); -1 with why. */
int sl_stage_read_rows(sl_stage *s, const pl_msg *in, sl_batch_rows *r, sl_err *why);
/* Refuses a BATCH past the stage's limits: more rows than
 * max_batch_tokens, a slot outside [0, max_sequences), a position outside
 * [0, context). Returns 0 when within them; else 1 with why naming the limit
 * ("refused: ... limit max_sequences (8)"), the batch counted as refused. */
int sl_stage_check_limits(sl_stage *s, uint32_t n, const int32_t *seq, const int32_t *pos, sl_err *why);
/* Answers a batch with an ERROR naming its requests. */
int sl_stage_fail_batch(sl_stage *s, pl_msg *in, const sl_emit *out, const char *text, sl_err *err);
/* The ERROR for a batch continuing sequence seq at position pos > 0 where
 * this stage's cache of it is empty (sent before a restart): logged at debug
 * level only. */
int sl_stage_fail_stale(sl_stage *s, pl_msg *in, const sl_emit *out, int seq, int pos, sl_err *err);
/* Messages a stage does not transform: control and error messages are
 * passed on, others dropped and counted. */
int sl_stage_route_other(sl_stage *s, pl_msg *in, const sl_emit *out, sl_err *err);
/* Re-sends a control or error message unchanged. */
int sl_stage_forward_control(pl_msg *in, const sl_emit *out, sl_err *err);
/* Starts the outgoing BATCH with in's rows, extras and speculative
 * payloads (drafted tokens and their distributions travel on unchanged). */
int sl_stage_begin_batch(pl_msg *m, const pl_msg *in, const sl_batch_rows *r, sl_err *err);
/* Counts a batch of rows as done and sends m. */
int sl_stage_send(sl_stage *s, uint32_t rows, pl_msg *m, const sl_emit *out, sl_err *err);

/* Builds an ERROR message for the requests of a batch (exposed for hosts
 * that fail a batch themselves). */
int sl_stage_error_msg(pl_msg *out, uint64_t batch_id, const uint64_t *requests, uint32_t n,
                       const char *origin, const char *text, sl_err *err);

#endif
