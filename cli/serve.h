/* sluice serve: the pieces of the HTTP server (cli/serve*.c).
 *
 * Threads: libmicrohttpd runs one thread per connection; one driver thread
 * owns the sl_pipeline (it is used from one thread). A handler parses its
 * request into an sv_job and queues it; the driver submits queued jobs while
 * fewer than limits.max_requests are in flight, pulls the pipeline's events
 * and appends each job's text, waking the handler that waits on the job. */
#ifndef SLUICE_SERVE_H
#define SLUICE_SERVE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pipeline/client.h"
#include "pipeline/metrics.h"
#include "stages/sampler.h"

#define SV_BODY_MAX (1 << 20) /* request bodies larger than this are refused */
#define SV_MAX_STOP 4         /* stop strings a request may give (OpenAI's limit) */
#define SV_STOP_MAX_LEN 256

/* ---- requests (serve_request.c) ---- */

typedef enum sv_role { SV_ROLE_SYSTEM, SV_ROLE_USER, SV_ROLE_ASSISTANT } sv_role;

typedef struct sv_msg {
    sv_role role;
    char *content;
} sv_msg;

/* The generation parameters of one request body. */
typedef struct sv_params {
    bool chat;                 /* /v1/chat/completions (messages) or /v1/completions (prompt) */
    sv_msg *msgs;
    int n_msgs;
    char *prompt;
    int max_tokens;            /* 0: not given (up to the context) */
    sl_sampling sampling;
    bool stream, include_usage;
    char *stop[SV_MAX_STOP];
    int n_stop;
} sv_params;

/* An error as OpenAI's API returns it: {"error": {message, type, param, code}}. */
typedef struct sv_error {
    int status;                /* HTTP status */
    char message[512];
    const char *type;          /* "invalid_request_error", ... */
    char param[64];            /* the field at fault, "" for none */
    const char *code;          /* NULL for none */
} sv_error;

/* Parses a request body (chat: a chat completion, else a completion) into
 * *out, with defaults as the sampling settings for fields left out; a
 * max_tokens past context - 1 is refused. Returns 0, or -1 with *err
 * (status 400) naming the field. *out needs sv_params_free either way. */
int sv_parse_request(const char *body, size_t len, bool chat, const sl_sampling *defaults, int context,
                     sv_params *out, sv_error *err);
void sv_params_free(sv_params *p);

/* Fills *err and returns -1 (for `return sv_fail(...)`). */
int sv_fail(sv_error *err, int status, const char *type, const char *param, const char *code, const char *fmt,
            ...) __attribute__((format(printf, 6, 7)));
/* {"error": {...}} as a malloc'd string (NULL: out of memory). */
char *sv_error_json(const sv_error *err);

/* ---- chat formatting (serve_chat.c) ---- */

/* The prompt of a conversation in the turn format fmt: the pipeline's
 * (sl_pipeline_chat_format: --chat-format, else the GGUF's template or
 * architecture). fmt NULL: the model's template is not one sluice knows,
 * and the request fails with why_none (which names its first line). Fails
 * naming the message at fault otherwise. */
int sv_chat_prompt(const sl_chat_format *fmt, const char *why_none, const sv_msg *msgs, int n, char **out,
                   sv_error *err);
/* Whether a --chat-format name is known. */
bool sv_chat_format_known(const char *name);



/* ---- jobs and the driver (serve_driver.c) ---- */

typedef enum sv_state { SV_LOADING, SV_READY, SV_STOPPING, SV_FAILED } sv_state;

/* One generation request. Fields above `mu-guarded` are fixed once queued;
 * the rest change under the server's mutex. A job is shared by its handler
 * and the driver (refs), freed by the last to let go. */
typedef struct sv_job {
    sl_gen_params gp;
    char *prompt;              /* gp.prompt points here */
    char *stop[SV_MAX_STOP];
    int n_stop;
    bool chat, stream, include_usage;
    char id[48];               /* "chatcmpl-..." / "cmpl-..." */
    long created;              /* unix seconds */
    double t_arrive;
    pthread_cond_t cond;       /* signalled when the job changes */
    /* mu-guarded */
    int refs;
    bool queued, submitted, ended, abandoned, stop_hit, cancel_sent;
    uint64_t req;              /* the pipeline's request id once submitted */
    char *text;                /* generated text, cut at a stop string */
    size_t len, cap;
    int n_tokens;              /* tokens received */
    int n_prompt, n_cached;
    const char *finish;        /* "stop" or "length" once ended without error */
    sv_error error;            /* status != 0: ended with this error */
    double t_first;
    struct sv_job *next;
} sv_job;

/* Request counts by endpoint and status for /metrics. */
#define SV_N_ENDPOINTS 7
typedef struct sv_counts {
    uint64_t by[SV_N_ENDPOINTS][6]; /* status class: 2xx, 400, 401, 429, 5xx, other */
} sv_counts;

typedef struct sv_server {
    pthread_mutex_t mu;
    pthread_cond_t wake;       /* the driver waits here when idle */
    sv_job *queue_head, *queue_tail; /* waiting to be submitted */
    int n_queued, max_queue;
    sv_job *running;           /* submitted, not ended */
    int n_running, max_running;
    int n_answering;           /* queued jobs whose handler has not let go yet (answers being written) */
    _Atomic int state;
    bool stop;                 /* asked to shut down */
    sl_pipeline *pipe;
    pl_config *cfg;
    sl_pipeline_opts popts;
    char load_error[512];
    char model_name[256];
    const sl_chat_format *chat; /* the pipeline's turn format once loaded; NULL: chat_none says why */
    char chat_none[512];
    char *api_key;             /* --api-key-file's key, or NULL */
    size_t api_key_len;
    const char *page;          /* the chat page (HTML) */
    uint64_t next_job;
    /* metrics, mu-guarded */
    sv_counts counts;
    pl_hist ttft, tok_s;
    uint64_t tokens_out;
} sv_server;

int sv_server_init(sv_server *s);
void sv_server_destroy(sv_server *s);
/* The driver thread: opens the pipeline (state LOADING, then READY or
 * FAILED), serves jobs until sv_driver_stop, then fails what is left. */
void *sv_driver_main(void *arg);
void sv_driver_stop(sv_server *s);
/* After the driver ended: waits (up to timeout_s) until every handler has
 * written its answer, so shutting the HTTP server down cuts none off. */
void sv_wait_answered(sv_server *s, double timeout_s);
/* mu held: waits on cond for at most ms milliseconds (the clock is the
 * condition's default, CLOCK_REALTIME). */
void sv_cond_wait_ms(pthread_cond_t *cond, pthread_mutex_t *mu, int ms);

/* Queues a job (refs: the caller's and the driver's). Fails with 429 past
 * the queue's bound, 503 while loading or stopping. */
int sv_job_queue(sv_server *s, sv_job *j, sv_error *err);
/* The caller lets go of its job; an unfinished one is cancelled at once
 * (its slot is freed). Locks the server's mutex itself. */
void sv_job_release(sv_server *s, sv_job *j);
sv_job *sv_job_new(void);

/* Bytes of j->text a client may see now: not a tail that could still grow
 * into a stop string, nor an unfinished UTF-8 character (mu held). */
size_t sv_job_visible(const sv_job *j);

/* ---- HTTP (serve_http.c) ---- */

/* Starts libmicrohttpd on ip:port (one thread per connection). */
int sv_http_start(sv_server *s, const char *ip, int port, void **daemon, sl_err *err);
void sv_http_stop(void *daemon);
/* The port it listens on (--port 0 picks a free one). */
int sv_http_port(void *daemon);

/* ---- responses (serve_json.c) ---- */

/* The JSON of a finished job (chat.completion or text_completion). */
char *sv_json_final(const sv_server *s, const sv_job *j);
/* One SSE event `data: {...}\n\n` of a stream: a delta of text (role_first:
 * the first chunk of a chat stream carries the role), or the closing chunk
 * with finish_reason (finish != NULL), or the usage chunk (usage). */
char *sv_sse_chunk(const sv_server *s, const sv_job *j, const char *delta, size_t n, bool role_first,
                   const char *finish, bool usage);
char *sv_json_models(const sv_server *s);
/* Prometheus text: the pipeline's, then the server's own. */
char *sv_metrics_text(sv_server *s);

#endif
