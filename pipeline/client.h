/* The client API of a pipeline: open a pipeline from a config, submit
 * prompts (many may be in flight at once), and pull events (tokens as they
 * are sampled, completion, errors).
 *
 * The driver (the request scheduler at the head of the pipeline) runs inside
 * sl_pipeline_next: it tokenizes prompts, hands out KV slots, builds
 * micro-batches from every active sequence (prefill chunks and next tokens;
 * continuous batching), keeps at most `depth` batches in flight (credits,
 * so memory in every stage stays bounded), and turns answers into events.
 * Every request ends with exactly one DONE or ERROR event. Use from one
 * thread.
 *
 * Failures: when a worker dies, the requests whose KV slots it held fail
 * with an error naming the stage, node and cause, or, when the config's
 * failure.retries allows, are replayed once (prompt plus the tokens already
 * streamed, no token emitted twice) after the worker re-joins. While a
 * worker is down nothing is sent; requests wait failure.rejoin_timeout for
 * it, then fail. */
#ifndef SLUICE_CLIENT_H
#define SLUICE_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include "pipeline/config.h"
#include "pipeline/metrics.h"
#include "stages/sampler.h"
#include "util/err.h"

typedef struct sl_pipeline sl_pipeline;

typedef struct sl_pipeline_opts {
    int threads;             /* pool threads per in-process stage group; 0: all cores */
    double batch_timeout_s;  /* a batch unanswered this long fails its requests (default 60) */
    double peer_timeout_s;   /* a worker silent this long is dead (default 2) */
    bool quiet;              /* no progress lines on stderr */
    const char *self_exe;    /* path of the sluice binary, for spawned workers (default /proc/self/exe) */
    /* Transport of hops between stages on the same node: NULL for inproc://
     * (the default), "ipc:DIR" for ipc://DIR/sN, "tcp:PORT" for
     * tcp://127.0.0.1:PORT+N (benchmarks of per-hop cost; tests that reach
     * a stage's input from outside). */
    const char *local_hops;
    /* Chat turn format by name (model/chat.h); NULL: the model's own. */
    const char *chat_format;
} sl_pipeline_opts;

void sl_pipeline_opts_default(sl_pipeline_opts *o);

/* Starts the stages the config asks for: in-process ones on threads,
 * `spawn: true` nodes as `sluice worker` child processes, remote nodes by
 * connecting to their workers and assigning them their stages. Fails naming
 * the node or stage at fault (address in use, unreachable node, model
 * missing on a worker). */
int sl_pipeline_open(sl_pipeline **out, const pl_config *cfg, const sl_pipeline_opts *opts, sl_err *err);
/* Shuts every stage and worker down (no orphans). */
void sl_pipeline_close(sl_pipeline *p);

typedef struct sl_gen_params {
    const char *prompt;
    int max_tokens;          /* new tokens at most */
    sl_sampling sampling;
    bool chat;               /* the model's turn format (model/chat.h), stop at its end of turn */
    bool formatted;          /* chat: the prompt is in the turn format already (a
                              * whole conversation); only stop at the end of turn */
    bool no_bos;
} sl_gen_params;

/* Queues a request; its id is returned in *id. Fails for an empty or
 * over-long prompt, and refuses a request past limits.max_requests in
 * flight (the error names the limit; sl_pipeline_refused counts them). */
int sl_pipeline_submit(sl_pipeline *p, const sl_gen_params *gp, uint64_t *id, sl_err *err);
/* Cancels a request; it ends with an ERROR event "cancelled". */
int sl_pipeline_cancel(sl_pipeline *p, uint64_t id);

typedef enum sl_event_kind {
    SL_EV_TOKEN = 1,
    SL_EV_DONE = 2,
    SL_EV_ERROR = 3,
} sl_event_kind;

typedef struct sl_event {
    sl_event_kind kind;
    uint64_t request;
    int32_t token;           /* SL_EV_TOKEN */
    char text[64];           /* its bytes (not NUL-terminated; text_len of them) */
    int text_len;
    /* SL_EV_DONE (n_prompt, n_generated and n_cached on SL_EV_ERROR too) */
    int n_prompt, n_generated;
    int n_cached;            /* prompt tokens whose KV a finished request left (prefix cache) */
    double prefill_s;        /* submit to first token */
    double decode_s;         /* first to last token */
    const char *stop;        /* "end of sequence", "token limit", ... */
    long spec_steps;         /* speculative verifications (0 without speculation) */
    long spec_drafted, spec_accepted; /* drafted tokens, and how many were accepted */
    char error[512];         /* SL_EV_ERROR */
} sl_event;

/* Runs the pipeline until an event is ready or timeout_ms passes (-1:
 * wait). Returns 1 with *ev filled, 0 on timeout, -1 when nothing is
 * pending (no requests) or on a fatal error (err). */
int sl_pipeline_next(sl_pipeline *p, sl_event *ev, int timeout_ms, sl_err *err);
/* Requests still running. */
int sl_pipeline_active(const sl_pipeline *p);
/* Whether a worker is dead and not yet re-joined (nothing is sent while
 * one is). Safe from any thread while the pipeline is open. */
bool sl_pipeline_down(sl_pipeline *p);

/* The turn format chat requests get (opts.chat_format, else the model's
 * template or architecture: model/chat.h), or NULL with *why (when not
 * NULL) saying why there is none, naming the template's first line. Fixed
 * once open: safe from any thread while the pipeline is open. */
typedef struct sl_chat_format sl_chat_format;
const sl_chat_format *sl_pipeline_chat_format(const sl_pipeline *p, sl_err *why);

/* Token ids of a prompt as the pipeline would feed them (tests). */
int sl_pipeline_tokenize(sl_pipeline *p, const sl_gen_params *gp, int32_t **ids, int *n, sl_err *err);

/* Speculative decoding over the pipeline's life. */
typedef struct sl_spec_summary {
    long steps;              /* verifications with at least one drafted token */
    long drafted, accepted;  /* drafted tokens, accepted ones */
    long emitted;            /* tokens those verifications produced (accepted + 1 each) */
} sl_spec_summary;
void sl_pipeline_spec_stats(const sl_pipeline *p, sl_spec_summary *out);

/* The run's id (Header.run_id), random and nonzero: every message of the
 * run carries it, and the stages and the driver drop messages without it
 * (tests that speak for the pipeline stamp it with pl_msg_set_run_id). */
uint64_t sl_pipeline_run_id(const sl_pipeline *p);
/* Answers of another run the driver dropped. */
uint64_t sl_pipeline_foreign(const sl_pipeline *p);
/* Requests sl_pipeline_submit refused for going past max_requests. */
uint64_t sl_pipeline_refused(const sl_pipeline *p);
/* A snapshot of the metrics of the stages in this process, in pipeline
 * order: *out (malloc'd, the caller frees it) gets *n of them. Safe to call
 * from another thread than the driver's while the pipeline is open.
 * Returns 0, or -1 when out of memory. */
int sl_pipeline_metrics(sl_pipeline *p, pl_stage_metrics **out, int *n);
/* The same with the stages on worker nodes too, as their workers last
 * reported them to the coordinator (every PL_COORD_METRICS_EVERY_S; none
 * while a worker is down): /metrics and the chat page show every stage. */
int sl_pipeline_metrics_all(sl_pipeline *p, pl_stage_metrics **out, int *n);

/* The client's request counters (safe from any thread while open). */
void sl_pipeline_client_metrics(const sl_pipeline *p, pl_client_metrics *out);

/* Per-stage statistics as text (one line a stage). */
void sl_pipeline_print_stats(sl_pipeline *p, void *file);

#endif
