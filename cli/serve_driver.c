/* The driver thread of sluice serve: the only user of the sl_pipeline. It
 * submits queued jobs while fewer than limits.max_requests run, cancels
 * jobs whose client went away or whose text reached a stop string, and
 * turns the pipeline's events into each job's text (see serve.h). */
#define _GNU_SOURCE /* memmem */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/serve.h"

static const double ttft_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
static const double tok_s_bounds[] = {1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000};

int sv_server_init(sv_server *s)
{
    memset(s, 0, sizeof *s);
    if (pthread_mutex_init(&s->mu, NULL) || pthread_cond_init(&s->wake, NULL))
        return -1;
    pl_hist_init(&s->ttft, ttft_bounds, (int)(sizeof ttft_bounds / sizeof ttft_bounds[0]));
    pl_hist_init(&s->tok_s, tok_s_bounds, (int)(sizeof tok_s_bounds / sizeof tok_s_bounds[0]));
    s->state = SV_LOADING;
    return 0;
}

void sv_server_destroy(sv_server *s)
{
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->wake);
}

sv_job *sv_job_new(void)
{
    sv_job *j = calloc(1, sizeof *j);
    if (j && pthread_cond_init(&j->cond, NULL)) {
        free(j);
        return NULL;
    }
    return j;
}

static void job_free(sv_job *j)
{
    pthread_cond_destroy(&j->cond);
    free(j->prompt);
    for (int i = 0; i < j->n_stop; i++)
        free(j->stop[i]);
    free(j->text);
    free(j);
}

/* mu held */
static void job_unref(sv_job *j)
{
    if (--j->refs == 0)
        job_free(j);
}

int sv_job_queue(sv_server *s, sv_job *j, sv_error *err)
{
    pthread_mutex_lock(&s->mu);
    int state = s->state;
    int rc = 0;
    if (state != SV_READY || s->stop)
        rc = sv_fail(err, 503, "server_error", "", "unavailable", "%s",
                     state == SV_LOADING ? "the model is still loading" : "the server is shutting down");
    else if (s->n_queued + s->n_running >= s->max_running + s->max_queue)
        rc = sv_fail(err, 429, "rate_limit_error", "", "rate_limit_exceeded",
                     "the server is busy: %d requests run and %d wait (limits.max_requests %d, --queue %d); "
                     "retry later", s->n_running, s->n_queued, s->max_running, s->max_queue);
    if (rc == 0) {
        j->refs = 2;
        j->queued = true;
        s->n_answering++;
        j->next = NULL;
        if (s->queue_tail)
            s->queue_tail->next = j;
        else
            s->queue_head = j;
        s->queue_tail = j;
        s->n_queued++;
        pthread_cond_signal(&s->wake);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void sv_job_release(sv_server *s, sv_job *j)
{
    pthread_mutex_lock(&s->mu);
    j->abandoned = true;
    if (!j->ended)
        pthread_cond_signal(&s->wake);
    if (j->queued)
        s->n_answering--;
    job_unref(j);
    pthread_mutex_unlock(&s->mu);
}

size_t sv_job_visible(const sv_job *j)
{
    if (j->ended || j->stop_hit)
        return j->len;
    size_t hold = 0;
    for (int i = 0; i < j->n_stop; i++) {
        size_t n = strlen(j->stop[i]);
        for (size_t k = n - 1; k > hold; k--)
            if (k <= j->len && memcmp(j->text + j->len - k, j->stop[i], k) == 0) {
                hold = k;
                break;
            }
    }
    /* an unfinished UTF-8 character at the end waits for its other bytes */
    for (size_t back = 1; back <= 3 && back <= j->len; back++) {
        unsigned char c = (unsigned char)j->text[j->len - back];
        if ((c & 0xC0) == 0x80)
            continue;
        size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        if (need > back && back > hold)
            hold = back;
        break;
    }
    return j->len - hold;
}

/* Appends a token's bytes; cuts the text at the first stop string that
 * appears (mu held). */
static void job_append(sv_job *j, const char *bytes, int n)
{
    if (j->len + (size_t)n + 1 > j->cap) {
        size_t cap = (j->len + (size_t)n + 1) * 2;
        char *t = realloc(j->text, cap);
        if (!t)
            return;
        j->text = t;
        j->cap = cap;
    }
    size_t old = j->len;
    memcpy(j->text + j->len, bytes, (size_t)n);
    j->len += (size_t)n;
    j->text[j->len] = 0;
    size_t cut = j->len + 1;
    for (int i = 0; i < j->n_stop; i++) {
        size_t sl = strlen(j->stop[i]);
        size_t from = old + 1 > sl ? old + 1 - sl : 0;
        char *hit = j->len >= sl ? memmem(j->text + from, j->len - from, j->stop[i], sl) : NULL;
        if (hit && (size_t)(hit - j->text) < cut)
            cut = (size_t)(hit - j->text);
    }
    if (cut <= j->len) {
        j->len = cut;
        j->text[cut] = 0;
        j->stop_hit = true;
        j->finish = "stop";
    }
}

/* mu held: takes j off the running list */
static void unlink_running(sv_server *s, sv_job *j)
{
    sv_job **pp = &s->running;
    while (*pp && *pp != j)
        pp = &(*pp)->next;
    if (*pp) {
        *pp = j->next;
        s->n_running--;
    }
}

/* mu held: ends a job with an error (unless its client is gone anyway) */
static void end_with_error(sv_job *j, int status, const char *code, const char *msg)
{
    if (!j->stop_hit && !j->error.status)
        sv_fail(&j->error, status, status == 400 ? "invalid_request_error" : "server_error",
                status == 400 ? (j->chat ? "messages" : "prompt") : "", code, "%s", msg);
    j->ended = true;
    pthread_cond_broadcast(&j->cond);
}

/* Moves queued jobs to the pipeline while fewer than max_running run. */
static void submit_queued(sv_server *s)
{
    for (;;) {
        pthread_mutex_lock(&s->mu);
        sv_job *j = s->n_running < s->max_running ? s->queue_head : NULL;
        if (!j) {
            pthread_mutex_unlock(&s->mu);
            return;
        }
        if (!(s->queue_head = j->next))
            s->queue_tail = NULL;
        s->n_queued--;
        if (j->abandoned) {
            job_unref(j);
            pthread_mutex_unlock(&s->mu);
            continue;
        }
        j->next = s->running;
        s->running = j;
        s->n_running++;
        pthread_mutex_unlock(&s->mu);
        /* the job's parameters are fixed once queued: no lock needed */
        sl_err err = {{0}};
        uint64_t id = 0;
        int rc = sl_pipeline_submit(s->pipe, &j->gp, &id, &err);
        pthread_mutex_lock(&s->mu);
        if (rc) {
            unlink_running(s, j);
            bool too_long = strstr(err.msg, "the prompt has") != NULL;
            end_with_error(j, too_long ? 400 : 500, too_long ? "context_length_exceeded" : NULL, err.msg);
            job_unref(j);
        } else {
            j->req = id;
            j->submitted = true;
        }
        pthread_mutex_unlock(&s->mu);
    }
}

/* Cancels, in the pipeline, the jobs nobody waits for any more and those
 * whose text reached a stop string: their slots are freed at once. */
static void cancel_finished(sv_server *s)
{
    uint64_t ids[64];
    int n = 0;
    pthread_mutex_lock(&s->mu);
    for (sv_job *j = s->running; j && n < 64; j = j->next)
        if (j->submitted && !j->cancel_sent && (j->abandoned || j->stop_hit || s->stop)) {
            j->cancel_sent = true;
            ids[n++] = j->req;
        }
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < n; i++)
        sl_pipeline_cancel(s->pipe, ids[i]);
}

/* mu held: a job's last event */
static void job_ended(sv_server *s, sv_job *j, const sl_event *ev)
{
    j->n_prompt = ev->n_prompt;
    j->n_cached = ev->n_cached;
    if (ev->kind == SL_EV_DONE && !j->stop_hit) {
        bool cut = strcmp(ev->stop, "token limit") == 0 || strcmp(ev->stop, "context full") == 0;
        j->finish = cut ? "length" : "stop";
    }
    if (ev->kind == SL_EV_ERROR && !j->stop_hit)
        end_with_error(j, s->stop ? 503 : 500, s->stop ? "unavailable" : NULL,
                       s->stop && strcmp(ev->error, "cancelled") == 0 ? "the server is shutting down" : ev->error);
    double t = cli_now();
    if (j->n_tokens > 0) {
        pl_hist_observe(&s->ttft, j->t_first - j->t_arrive);
        if (j->n_tokens > 1 && t > j->t_first)
            pl_hist_observe(&s->tok_s, (j->n_tokens - 1) / (t - j->t_first));
    }
    j->ended = true;
    unlink_running(s, j);
    pthread_cond_broadcast(&j->cond);
    job_unref(j);
}

static void apply_event(sv_server *s, const sl_event *ev)
{
    pthread_mutex_lock(&s->mu);
    sv_job *j = s->running;
    while (j && !(j->submitted && j->req == ev->request))
        j = j->next;
    if (j && ev->kind == SL_EV_TOKEN) {
        if (!j->stop_hit) {
            if (j->n_tokens++ == 0)
                j->t_first = cli_now();
            s->tokens_out++;
            job_append(j, ev->text, ev->text_len);
            pthread_cond_broadcast(&j->cond);
        }
    } else if (j) {
        job_ended(s, j, ev);
    }
    pthread_mutex_unlock(&s->mu);
}

/* mu held: fails every queued and running job (shutdown, or a fatal error) */
static void fail_all(sv_server *s, int status, const char *why)
{
    while (s->queue_head) {
        sv_job *j = s->queue_head;
        s->queue_head = j->next;
        s->n_queued--;
        end_with_error(j, status, "unavailable", why);
        job_unref(j);
    }
    s->queue_tail = NULL;
    while (s->running) {
        sv_job *j = s->running;
        unlink_running(s, j);
        end_with_error(j, status, "unavailable", why);
        job_unref(j);
    }
}

/* Pulls the pipeline's events for up to a few milliseconds; returns -1 on
 * a fatal error of the pipeline. */
static int pump_events(sv_server *s, int timeout_ms, sl_err *err)
{
    sl_event ev;
    int rc = sl_pipeline_next(s->pipe, &ev, timeout_ms, err);
    while (rc == 1) {
        apply_event(s, &ev);
        rc = sl_pipeline_next(s->pipe, &ev, 0, err);
    }
    return rc < 0 && sl_pipeline_active(s->pipe) > 0 ? -1 : 0;
}

static void serve_loop(sv_server *s)
{
    for (;;) {
        submit_queued(s);
        cancel_finished(s);
        pthread_mutex_lock(&s->mu);
        bool stop = s->stop;
        if (!stop && sl_pipeline_active(s->pipe) == 0 && !s->queue_head)
            sv_cond_wait_ms(&s->wake, &s->mu, 100);
        pthread_mutex_unlock(&s->mu);
        if (stop)
            return;
        if (sl_pipeline_active(s->pipe) == 0)
            continue;
        sl_err err = {{0}};
        /* short: queued jobs and cancels wait at most this long */
        if (pump_events(s, 5, &err)) {
            fprintf(stderr, "sluice serve: the pipeline failed: %s\n", err.msg);
            pthread_mutex_lock(&s->mu);
            fail_all(s, 500, err.msg);
            pthread_mutex_unlock(&s->mu);
        }
    }
}

/* Shutdown: cancels what runs, lets the pipeline confirm it (bounded), and
 * fails every job left so each client gets an answer. */
static void drain(sv_server *s)
{
    cancel_finished(s);
    double until = cli_now() + 10.0;
    while (sl_pipeline_active(s->pipe) > 0 && cli_now() < until) {
        sl_err err = {{0}};
        if (pump_events(s, 50, &err))
            break;
    }
    pthread_mutex_lock(&s->mu);
    fail_all(s, 503, "the server is shutting down");
    pthread_mutex_unlock(&s->mu);
}

void *sv_driver_main(void *arg)
{
    sv_server *s = arg;
    sl_err err = {{0}};
    if (sl_pipeline_open(&s->pipe, s->cfg, &s->popts, &err)) {
        snprintf(s->load_error, sizeof s->load_error, "%s", err.msg);
        s->state = SV_FAILED;
        return NULL;
    }
    sl_err why = {{0}};
    s->chat = sl_pipeline_chat_format(s->pipe, &why);
    snprintf(s->chat_none, sizeof s->chat_none, "%s", why.msg);
    s->state = SV_READY;
    serve_loop(s);
    drain(s);
    return NULL;
}

void sv_driver_stop(sv_server *s)
{
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    if (s->state == SV_READY)
        s->state = SV_STOPPING;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->mu);
}

void sv_wait_answered(sv_server *s, double timeout_s)
{
    double until = cli_now() + timeout_s;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        int left = s->n_answering;
        pthread_mutex_unlock(&s->mu);
        if (left == 0 || cli_now() > until)
            return;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

void sv_cond_wait_ms(pthread_cond_t *cond, pthread_mutex_t *mu, int ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += (long)ms * 1000000L;
    until.tv_sec += until.tv_nsec / 1000000000L;
    until.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(cond, mu, &until);
}
