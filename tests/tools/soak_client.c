/* Chaos soak client: R requests from C concurrent client threads through the
 * pipeline a config describes (one driver, fed from the main thread: the
 * client API is single-threaded), while a script outside breaks things.
 * Every request must end exactly once, with the greedy tokens of a solo
 * one-process run (DONE) or with an error naming the failed stage's node
 * (ERROR: then the tokens it streamed must be a prefix of the solo run's,
 * none of them twice). Prints counts, errors by cause and latency
 * percentiles; checks that the process's file descriptors and live heap
 * objects (jemalloc) come back to where they were.
 *
 * usage: soak_client -c CONFIG -f PROMPTS [-r REQUESTS] [-j CLIENTS] [-n TOKENS]
 *                    [--label NAME] [--deadline S] [--ready FILE]
 * Spawned workers run $SLUICE (the sluice binary).
 * --ready FILE is created once the pipeline is open (the script starts its
 * faults then). Exit status 0 when nothing was lost, duplicated or
 * different, every error named a node, and nothing leaked. */
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "model/config.h"
#include "model/gguf.h"
#include "pipeline/client.h"
#ifdef SLUICE_HAVE_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

#define MAX_PROMPTS 64
#define MAX_CAUSES 16

typedef struct record {
    int prompt;
    uint64_t id;            /* the pipeline's request id; 0 until submitted */
    int32_t *tokens;
    int n_tokens;
    int terminals;          /* DONE and ERROR events: exactly one */
    bool ended, ok, queued;
    char error[512];
    double t_submit, t_end;
} record;

typedef struct soak {
    int n_req, n_clients, n_gen;
    char *prompts[MAX_PROMPTS];
    int n_prompts;
    int32_t *ref[MAX_PROMPTS];   /* solo greedy tokens of each prompt */
    int n_ref[MAX_PROMPTS];
    record *rec;
    int *by_id;                  /* pipeline id -> record index */
    int n_by_id;
    /* client threads -> driver */
    pthread_mutex_t lock;
    pthread_cond_t changed;
    int *queue, n_queue;
    atomic_int next;
    bool stop;
    long stray_events;           /* events for ids never submitted or already ended */
} soak;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    if (!d)
        return -1;
    while (readdir(d))
        n++;
    closedir(d);
    return n - 3; /* ".", ".." and the directory's own descriptor */
}

/* Live heap objects (allocations not yet freed) over every arena; -1
 * without jemalloc. Threads that ended have flushed their caches; ours is
 * flushed here. */
static long live_objects(void)
{
#ifdef SLUICE_HAVE_JEMALLOC
    uint64_t epoch = 1;
    size_t sz = sizeof epoch;
    mallctl("thread.tcache.flush", NULL, NULL, NULL, 0);
    mallctl("epoch", &epoch, &sz, &epoch, sz);
    char name[96];
    long live = 0;
    static const char *const cls[] = {"small", "large"};
    for (int i = 0; i < 2; i++) {
        uint64_t nm = 0, nd = 0;
        size_t s = sizeof nm;
        snprintf(name, sizeof name, "stats.arenas.%u.%s.nmalloc", (unsigned)MALLCTL_ARENAS_ALL, cls[i]);
        if (mallctl(name, &nm, &s, NULL, 0))
            return -1;
        snprintf(name, sizeof name, "stats.arenas.%u.%s.ndalloc", (unsigned)MALLCTL_ARENAS_ALL, cls[i]);
        if (mallctl(name, &nd, &s, NULL, 0))
            return -1;
        live += (long)(nm - nd);
    }
    return live;
#else
    return -1;
#endif
}

static int read_prompts(soak *s, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        return -1;
    }
    char line[1024];
    while (s->n_prompts < MAX_PROMPTS && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        if (line[0])
            s->prompts[s->n_prompts++] = strdup(line);
    }
    fclose(f);
    return s->n_prompts ? 0 : -1;
}

static void gen_params(const soak *s, int prompt, sl_gen_params *gp)
{
    memset(gp, 0, sizeof *gp);
    gp->prompt = s->prompts[prompt];
    gp->max_tokens = s->n_gen;
    sl_sampling_defaults(&gp->sampling);
    gp->sampling.temperature = 0.0f; /* greedy: a replay must give the same text */
}

/* The oracle: each prompt alone through the one-process pipeline. */
static int solo_references(soak *s, const char *model, sl_err *err)
{
    gguf_file *f;
    sl_config mc;
    if (gguf_open(&f, model, err))
        return -1;
    int rc = sl_config_from_gguf(&mc, f, err);
    gguf_close(f);
    if (rc)
        return -1;
    pl_config cfg;
    pl_config_default(&cfg, model, mc.n_layer);
    cfg.limits.max_sequences = 1;
    sl_pipeline_opts o;
    sl_pipeline_opts_default(&o);
    o.quiet = true;
    o.threads = 1;
    if (getenv("SLUICE"))
        o.self_exe = getenv("SLUICE"); /* spawned workers run the sluice binary, not us */
    sl_pipeline *p;
    if (sl_pipeline_open(&p, &cfg, &o, err))
        return -1;
    for (int i = 0; i < s->n_prompts && rc == 0; i++) {
        sl_gen_params gp;
        gen_params(s, i, &gp);
        uint64_t id;
        s->ref[i] = malloc((size_t)s->n_gen * sizeof *s->ref[i]);
        if (!s->ref[i] || sl_pipeline_submit(p, &gp, &id, err)) {
            rc = -1;
            break;
        }
        sl_event ev;
        while ((rc = sl_pipeline_next(p, &ev, -1, err)) == 1) {
            if (ev.kind == SL_EV_TOKEN && s->n_ref[i] < s->n_gen)
                s->ref[i][s->n_ref[i]++] = ev.token;
            if (ev.kind == SL_EV_ERROR) {
                sl_fail(err, "solo run of prompt %d: %s", i, ev.error);
                rc = -1;
                break;
            }
            if (ev.kind == SL_EV_DONE) {
                rc = 0;
                break;
            }
        }
    }
    sl_pipeline_close(p);
    return rc ? -1 : 0;
}

static void *client_main(void *arg)
{
    soak *s = arg;
    for (;;) {
        int i = atomic_fetch_add(&s->next, 1);
        if (i >= s->n_req)
            break;
        record *r = &s->rec[i];
        pthread_mutex_lock(&s->lock);
        r->prompt = i % s->n_prompts;
        r->t_submit = now_s();
        r->queued = true;
        s->queue[s->n_queue++] = i;
        while (!r->ended && !s->stop)
            pthread_cond_wait(&s->changed, &s->lock);
        bool stop = s->stop;
        pthread_mutex_unlock(&s->lock);
        if (stop)
            break;
    }
    return NULL;
}

static record *record_of(soak *s, uint64_t id)
{
    if (id == 0 || id >= (uint64_t)s->n_by_id || s->by_id[id] < 0)
        return NULL;
    return &s->rec[s->by_id[id]];
}

static bool same_tokens(const soak *s, const record *r, bool whole)
{
    int n_ref = s->n_ref[r->prompt];
    if (r->n_tokens > n_ref || (whole && r->n_tokens != n_ref))
        return false;
    return memcmp(r->tokens, s->ref[r->prompt], (size_t)r->n_tokens * sizeof *r->tokens) == 0;
}

/* Under the lock. */
static void on_event(soak *s, const sl_event *ev)
{
    record *r = record_of(s, ev->request);
    if (!r || r->ended) {
        s->stray_events++;
        if (r)
            r->terminals += ev->kind != SL_EV_TOKEN;
        return;
    }
    if (ev->kind == SL_EV_TOKEN) {
        if (r->n_tokens < s->n_gen + 8)
            r->tokens[r->n_tokens++] = ev->token;
        return;
    }
    r->terminals++;
    r->ended = true;
    r->t_end = now_s();
    r->ok = ev->kind == SL_EV_DONE;
    if (!r->ok)
        snprintf(r->error, sizeof r->error, "%s", ev->error);
    pthread_cond_broadcast(&s->changed);
}

/* Submits what the clients queued; under the lock. */
static void submit_queued(soak *s, sl_pipeline *p)
{
    for (int k = 0; k < s->n_queue; k++) {
        record *r = &s->rec[s->queue[k]];
        sl_gen_params gp;
        gen_params(s, r->prompt, &gp);
        sl_err err = {{0}};
        uint64_t id;
        if (sl_pipeline_submit(p, &gp, &id, &err)) {
            snprintf(r->error, sizeof r->error, "submit: %.480s", err.msg);
            r->ended = true;
            r->terminals++;
            r->t_end = now_s();
            pthread_cond_broadcast(&s->changed);
            continue;
        }
        r->id = id;
        if (id < (uint64_t)s->n_by_id)
            s->by_id[id] = s->queue[k];
    }
    s->n_queue = 0;
}

/* The driver: the main thread, the only one to touch the pipeline. */
static int drive(soak *s, sl_pipeline *p, double deadline_s)
{
    double deadline = now_s() + deadline_s;
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        submit_queued(s, p);
        int ended = 0, waiting = 0;
        for (int i = 0; i < s->n_req; i++) {
            ended += s->rec[i].ended;
            waiting += s->rec[i].id && !s->rec[i].ended;
        }
        if (ended == s->n_req || now_s() > deadline)
            break;
        pthread_mutex_unlock(&s->lock);
        sl_event ev;
        sl_err err = {{0}};
        int got = 0;
        /* events may wait in the driver after its last request ended */
        if (waiting > 0) {
            got = sl_pipeline_next(p, &ev, 20, &err);
            if (got < 0 && sl_pipeline_active(p) > 0) {
                fprintf(stderr, "soak: the driver failed: %s\n", err.msg);
                rc = -1;
            }
        } else {
            usleep(2000);
        }
        pthread_mutex_lock(&s->lock);
        if (rc)
            break;
        if (got == 1)
            on_event(s, &ev);
    }
    s->stop = true;
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* A short name for what an error says went wrong. */
static const char *cause_of(const char *e)
{
    if (strstr(e, "already retried"))
        return "stage died again after its retry";
    if (strstr(e, "did not re-join"))
        return "worker did not re-join in time";
    if (strstr(e, "was killed by signal"))
        return "worker killed";
    if (strstr(e, "stopped by a signal"))
        return "worker stopped by a signal";
    if (strstr(e, "stopped answering"))
        return "worker silent (heartbeats lost)";
    if (strstr(e, "lost its stages"))
        return "worker restarted";
    if (strstr(e, "no answer from the pipeline"))
        return "batch timeout";
    if (strncmp(e, "submit:", 7) == 0)
        return "refused at submit";
    return "other";
}

static int report(soak *s, const char *label, int fds0, int fds1, long live0, long live1, long stray)
{
    int completed = 0, identical = 0, different = 0, errors = 0, unnamed = 0, lost = 0, dup = 0;
    int bad_prefix = 0, n_lat = 0;
    const char *cause[MAX_CAUSES];
    int n_cause[MAX_CAUSES], n_causes = 0;
    double *lat = malloc((size_t)s->n_req * sizeof *lat);
    for (int i = 0; i < s->n_req; i++) {
        record *r = &s->rec[i];
        if (!r->ended) {
            lost++;
            fprintf(stderr, "soak %s: LOST request %d (pipeline id %llu, %d tokens streamed)\n", label, i,
                    (unsigned long long)r->id, r->n_tokens);
            continue;
        }
        if (r->terminals > 1) {
            dup++;
            fprintf(stderr, "soak %s: DUPLICATED end of request %d (%d ends)\n", label, i, r->terminals);
        }
        if (lat)
            lat[n_lat++] = r->t_end - r->t_submit;
        if (r->ok) {
            completed++;
            if (same_tokens(s, r, true)) {
                identical++;
            } else {
                different++;
                fprintf(stderr, "soak %s: request %d (prompt %d) DIFFERS from the solo run: %d tokens vs %d\n",
                        label, i, r->prompt, r->n_tokens, s->n_ref[r->prompt]);
            }
            continue;
        }
        errors++;
        if (!strstr(r->error, "node '") && strncmp(r->error, "submit:", 7) != 0) {
            unnamed++;
            fprintf(stderr, "soak %s: request %d failed without naming a node: %s\n", label, i, r->error);
        }
        if (!same_tokens(s, r, false)) {
            bad_prefix++;
            fprintf(stderr, "soak %s: request %d failed after streaming tokens the solo run does not have\n",
                    label, i);
        }
        const char *c = cause_of(r->error);
        int k = 0;
        while (k < n_causes && strcmp(cause[k], c) != 0)
            k++;
        if (k == n_causes && n_causes < MAX_CAUSES) {
            cause[n_causes] = c;
            n_cause[n_causes++] = 0;
            fprintf(stderr, "soak %s: first '%s' error: %s\n", label, c, r->error);
        }
        if (k < n_causes)
            n_cause[k]++;
    }
    printf("soak %s: requests %d completed %d (identical %d, different %d) errors %d lost %d duplicated %d "
           "stray_events %ld\n", label, s->n_req, completed, identical, different, errors, lost, dup, stray);
    printf("soak %s: errors by cause:", label);
    for (int k = 0; k < n_causes; k++)
        printf(" %s: %d;", cause[k], n_cause[k]);
    printf("%s\n", n_causes ? "" : " none");
    if (lat && n_lat) {
        qsort(lat, (size_t)n_lat, sizeof *lat, cmp_double);
        int i50 = (n_lat - 1) / 2, i99 = (int)((n_lat - 1) * 0.99 + 0.5);
        printf("soak %s: latency p50 %.3f s p99 %.3f s max %.3f s\n", label, lat[i50], lat[i99], lat[n_lat - 1]);
    }
    free(lat);
    printf("soak %s: fds before %d after %d; live heap objects before %ld after %ld\n", label, fds0, fds1, live0,
           live1);
    fflush(stdout);
    int rc = 0;
    if (lost || dup || different || unnamed || bad_prefix || stray)
        rc = 1;
    if (fds1 > fds0) {
        fprintf(stderr, "soak %s: %d file descriptors leaked\n", label, fds1 - fds0);
        rc = 1;
    }
    /* a leak of one object a request shows as n_req or more */
    if (live0 >= 0 && live1 - live0 > s->n_req / 2) {
        fprintf(stderr, "soak %s: %ld heap objects more than before the run\n", label, live1 - live0);
        rc = 1;
    }
    return rc;
}

int main(int argc, char **argv)
{
    const char *config = NULL, *prompts = NULL, *label = "soak", *ready = NULL;
    double deadline = 150.0;
    soak s = {.n_req = 200, .n_clients = 8, .n_gen = 24};
    /* every option takes one value: step over both */
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            goto usage;
        if (strcmp(a, "-c") == 0) config = v;
        else if (strcmp(a, "-f") == 0) prompts = v;
        else if (strcmp(a, "-r") == 0) s.n_req = atoi(v);
        else if (strcmp(a, "-j") == 0) s.n_clients = atoi(v);
        else if (strcmp(a, "-n") == 0) s.n_gen = atoi(v);
        else if (strcmp(a, "--label") == 0) label = v;
        else if (strcmp(a, "--deadline") == 0) deadline = atof(v);
        else if (strcmp(a, "--ready") == 0) ready = v;
        else goto usage;
    }
    if (!config || !prompts || s.n_req < 1 || s.n_clients < 1 || s.n_gen < 1)
        goto usage;
    sl_err err = {{0}};
    pl_config cfg;
    if (read_prompts(&s, prompts) || pl_config_load(&cfg, config, &err)) {
        fprintf(stderr, "soak: %s\n", err.msg[0] ? err.msg : "no prompts");
        return 2;
    }
    if (solo_references(&s, cfg.model, &err)) {
        fprintf(stderr, "soak: solo reference runs: %s\n", err.msg);
        return 2;
    }
    s.rec = calloc((size_t)s.n_req, sizeof *s.rec);
    s.queue = calloc((size_t)s.n_req, sizeof *s.queue);
    s.n_by_id = s.n_req + 1;
    s.by_id = malloc((size_t)s.n_by_id * sizeof *s.by_id);
    for (int i = 0; i < s.n_by_id; i++)
        s.by_id[i] = -1;
    for (int i = 0; i < s.n_req; i++)
        s.rec[i].tokens = malloc((size_t)(s.n_gen + 8) * sizeof(int32_t));
    pthread_mutex_init(&s.lock, NULL);
    pthread_cond_init(&s.changed, NULL);
    atomic_init(&s.next, 0);
    pthread_t *th = calloc((size_t)s.n_clients, sizeof *th);
    /* everything of our own is allocated by now: what grows from here is the pipeline's */
    int fds0 = count_fds();
    long live0 = live_objects();
    sl_pipeline_opts o;
    sl_pipeline_opts_default(&o);
    o.quiet = true;
    o.threads = 1;
    if (getenv("SLUICE"))
        o.self_exe = getenv("SLUICE"); /* spawned workers run the sluice binary, not us */
    sl_pipeline *p;
    if (sl_pipeline_open(&p, &cfg, &o, &err)) {
        fprintf(stderr, "soak: %s\n", err.msg);
        return 2;
    }
    if (ready) {
        FILE *f = fopen(ready, "w");
        if (f)
            fclose(f);
    }
    for (int i = 0; i < s.n_clients; i++)
        pthread_create(&th[i], NULL, client_main, &s);
    int rc = drive(&s, p, deadline);
    for (int i = 0; i < s.n_clients; i++)
        pthread_join(th[i], NULL);
    sl_pipeline_close(p);
    int fds1 = count_fds();
    long live1 = live_objects();
    int bad = report(&s, label, fds0, fds1, live0, live1, s.stray_events);
    for (int i = 0; i < s.n_req; i++)
        free(s.rec[i].tokens);
    for (int i = 0; i < s.n_prompts; i++) {
        free(s.prompts[i]);
        free(s.ref[i]);
    }
    free(s.rec);
    free(s.queue);
    free(s.by_id);
    free(th);
    pthread_mutex_destroy(&s.lock);
    pthread_cond_destroy(&s.changed);
    return rc ? 2 : bad;
usage:
    fprintf(stderr, "usage: soak_client -c CONFIG -f PROMPTS [-r REQUESTS] [-j CLIENTS] [-n TOKENS] [--label NAME] "
                    "[--deadline S] [--ready FILE]\n");
    return 2;
}
