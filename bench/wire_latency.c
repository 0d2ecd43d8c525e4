/* Round-trip latency of a 1-row BATCH (1152 f32 activations, Gemma 3 1B's
 * d_model) through pl_msg_send/pl_msg_recv and an echo thread, over inproc,
 * ipc and tcp loopback, and to an echo *process* over ipc (a hop between
 * two stages' processes on one host), and over the same-host link
 * (pipeline/link.h: what the stages' ipc:// hops use unless
 * SLUICE_IPC_LINK=zmq) to an echo process ("link-proc"; its "spin" is the
 * hosts' own busy-poll, pl_link_in_spin, for SPIN_US). Each side waits as a stage host does,
 * sleeping in zmq_poll at once ("block"), or, to see whether busy-polling
 * before sleeping would pay on this machine, looking at the socket's queue
 * for SPIN_US first ("spin"). Prints p50/p99/max of the round trip and the
 * one-way hop (half of it) in microseconds.
 *
 * Not built by CMake; from the repository root, after building the core
 * library in build-DIR:
 *   cc -O2 -std=gnu17 -I. -Ibuild-DIR bench/wire_latency.c build-DIR/libsluice_core.a \
 *      $(pkg-config --libs libzmq libprotobuf-c) -lm -lpthread -o /tmp/wire_latency
 *   /tmp/wire_latency [iterations] [rounds]
 * (take `flock /tmp/sluice-bench.lock` and `chrt -f 20` on a shared machine)
 * Each case is run `rounds` times (default 3), interleaved; the best p50
 * of the rounds is printed with that round's p99.
 */
#include "pipeline/link_poll.h"
#include "pipeline/wire.h"

#include <poll.h>

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#define D_MODEL 1152
#define SPIN_US 40

typedef struct echo {
    void *ctx;
    char in[256], out[256];
    int iterations;
    bool spin;
} echo;

static double now_us(void);

/* Waits for a message on sock as a stage host does; spin: first looks at
 * its queue (ZMQ_EVENTS, no poll(2) per look) for SPIN_US, yielding the
 * core between looks (the I/O thread bringing the message may need it). */
static int await_msg(void *sock, bool spin)
{
    zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
    for (double t0 = now_us(); spin && now_us() - t0 < SPIN_US;) {
        int ev = 0;
        size_t len = sizeof ev;
        if (zmq_getsockopt(sock, ZMQ_EVENTS, &ev, &len) == 0 && (ev & ZMQ_POLLIN))
            return 1;
        sched_yield();
    }
    return zmq_poll(&item, 1, -1);
}

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The row arrays and activations of one batch, sent by copy (the common
 * case in the stages: they forward arrays they do not own). */
static int send_batch(void *sock, uint64_t id, const uint64_t *req, const int32_t *seq, const int32_t *pos,
                      const int32_t *tok, const uint8_t *flags, const float *act, sl_err *err)
{
    pl_msg m;
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_BATCH, id, 1);
    int rc = pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, 1, 0, req, NULL, NULL, err) ||
             pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_SEQ, SLUICE__DTYPE__DT_I32, 1, 0, seq, NULL, NULL, err) ||
             pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_POS, SLUICE__DTYPE__DT_I32, 1, 0, pos, NULL, NULL, err) ||
             pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_TOKEN, SLUICE__DTYPE__DT_I32, 1, 0, tok, NULL, NULL, err) ||
             pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_FLAGS, SLUICE__DTYPE__DT_U8, 1, 0, flags, NULL, NULL, err) ||
             pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_ACTIVATION, SLUICE__DTYPE__DT_F32, 1, D_MODEL, act, NULL,
                        NULL, err) ||
             pl_msg_send(&m, sock, 0, err);
    pl_msg_close(&m);
    return rc ? -1 : 0;
}

/* Receives each batch, reads it through the typed views, sends it back. */
static void *echo_main(void *arg)
{
    echo *e = arg;
    void *in = zmq_socket(e->ctx, ZMQ_PULL), *out = zmq_socket(e->ctx, ZMQ_PUSH);
    zmq_connect(in, e->in);
    zmq_connect(out, e->out);
    static float act[D_MODEL];
    for (int i = 0; i < e->iterations; i++) {
        pl_msg m;
        sl_err err;
        if (await_msg(in, e->spin) < 0 || pl_msg_recv(&m, in, NULL, &err)) {
            fprintf(stderr, "echo: %s\n", err.msg);
            break;
        }
        const uint64_t *req = pl_msg_u64(&m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, 1, &err);
        const int32_t *seq = pl_msg_i32(&m, SLUICE__PAYLOAD_KIND__PL_SEQ, 1, &err);
        const int32_t *pos = pl_msg_i32(&m, SLUICE__PAYLOAD_KIND__PL_POS, 1, &err);
        const int32_t *tok = pl_msg_i32(&m, SLUICE__PAYLOAD_KIND__PL_TOKEN, 1, &err);
        const uint8_t *flags = pl_msg_u8(&m, SLUICE__PAYLOAD_KIND__PL_FLAGS, 1, &err);
        if (!req || !seq || !pos || !tok || !flags ||
            pl_msg_f32(&m, SLUICE__PAYLOAD_KIND__PL_ACTIVATION, 1, D_MODEL, act, &err) ||
            send_batch(out, m.hdr->batch_id, req, seq, pos, tok, flags, act, &err)) {
            fprintf(stderr, "echo: %s\n", err.msg);
            pl_msg_close(&m);
            break;
        }
        pl_msg_close(&m);
    }
    zmq_close(in);
    zmq_close(out);
    return NULL;
}

typedef struct result {
    double p50, p99, max;
    int done;
} result;

/* ---- the same-host link ---- */

/* Waits for the next message on l as a stage host does (spin: busy-polls
 * first, pl_link_in_spin), telling the link what each poll saw. */
static int link_await(pl_link_in *l, pl_msg *m, bool spin, sl_err *err)
{
    for (;;) {
        int rc = pl_link_in_recv(l, m, err);
        if (rc)
            return rc > 0 ? 0 : -1;
        if (spin && pl_link_in_spin(l, SPIN_US))
            continue;
        struct pollfd pf[1 + PL_LINK_MAX_CONNS];
        int n = pl_link_poll_add(l, pf, 0, 1 + PL_LINK_MAX_CONNS);
        if (poll(pf, (nfds_t)n, -1) < 0)
            return sl_fail(err, "poll failed");
        pl_link_poll_seen(l, pf, 0, n);
    }
}

static int link_send_batch(pl_link_out *o, uint64_t id, const uint64_t *req, const int32_t *seq,
                           const int32_t *pos, const int32_t *tok, const uint8_t *flags, const float *act,
                           sl_err *err)
{
    pl_msg m;
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_BATCH, id, 1);
    int rc = pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, 1, 0, req, NULL, NULL, err) ||
             pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_SEQ, SLUICE__DTYPE__DT_I32, 1, 0, seq, NULL, NULL, err) ||
             pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_POS, SLUICE__DTYPE__DT_I32, 1, 0, pos, NULL, NULL, err) ||
             pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_TOKEN, SLUICE__DTYPE__DT_I32, 1, 0, tok, NULL, NULL, err) ||
             pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_FLAGS, SLUICE__DTYPE__DT_U8, 1, 0, flags, NULL, NULL, err) ||
             pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_ACTIVATION, SLUICE__DTYPE__DT_F32, 1, D_MODEL, act, NULL,
                        NULL, err) ||
             pl_link_send(o, &m, err);
    pl_msg_close(&m);
    return rc ? -1 : 0;
}

/* The echo process of the link case: reads through the typed views, sends back. */
static void link_echo(const char *in_addr, const char *out_addr, int iterations, bool spin)
{
    pl_link_in *in;
    pl_link_out *out;
    sl_err err;
    if (pl_link_listen(&in, in_addr, NULL, &err) || pl_link_out_open(&out, out_addr, &err)) {
        fprintf(stderr, "link echo: %s\n", err.msg);
        return;
    }
    static float act[D_MODEL];
    for (int i = 0; i < iterations; i++) {
        pl_msg m;
        if (link_await(in, &m, spin, &err)) {
            fprintf(stderr, "link echo: %s\n", err.msg);
            break;
        }
        const uint64_t *req = pl_msg_u64(&m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, 1, &err);
        const int32_t *seq = pl_msg_i32(&m, SLUICE__PAYLOAD_KIND__PL_SEQ, 1, &err);
        const int32_t *pos = pl_msg_i32(&m, SLUICE__PAYLOAD_KIND__PL_POS, 1, &err);
        const int32_t *tok = pl_msg_i32(&m, SLUICE__PAYLOAD_KIND__PL_TOKEN, 1, &err);
        const uint8_t *flags = pl_msg_u8(&m, SLUICE__PAYLOAD_KIND__PL_FLAGS, 1, &err);
        int bad = !req || !seq || !pos || !tok || !flags ||
                  pl_msg_f32(&m, SLUICE__PAYLOAD_KIND__PL_ACTIVATION, 1, D_MODEL, act, &err) ||
                  link_send_batch(out, m.hdr->batch_id, req, seq, pos, tok, flags, act, &err);
        pl_msg_close(&m);
        if (bad) {
            fprintf(stderr, "link echo: %s\n", err.msg);
            break;
        }
    }
    pl_link_out_close(out);
    pl_link_in_close(in);
}

static result run_link(bool spin, int iterations)
{
    result r = {0, 0, 0, 0};
    char dir[] = "/tmp/sluice-bench-link-XXXXXX", a[256], b[256];
    if (!mkdtemp(dir))
        return r;
    snprintf(a, sizeof a, "ipc://%s/a", dir);
    snprintf(b, sizeof b, "ipc://%s/b", dir);
    pl_link_in *from;
    pl_link_out *to;
    sl_err err;
    if (pl_link_listen(&from, b, NULL, &err) || pl_link_out_open(&to, a, &err)) {
        fprintf(stderr, "link: %s\n", err.msg);
        return r;
    }
    pid_t child = fork();
    if (child == 0) {
        link_echo(a, b, iterations, spin);
        _exit(0);
    }
    static float act[D_MODEL];
    for (int i = 0; i < D_MODEL; i++)
        act[i] = (float)i * 0.001f;
    uint64_t req = 1;
    int32_t seq = 0, pos = 0, tok = 2;
    uint8_t flags = 1;
    double *lat = malloc((size_t)iterations * sizeof *lat);
    int done = 0;
    for (int i = 0; i < iterations; i++, done++) {
        double t0 = now_us();
        pl_msg m;
        if (link_send_batch(to, (uint64_t)i, &req, &seq, &pos, &tok, &flags, act, &err) ||
            link_await(from, &m, spin, &err)) {
            fprintf(stderr, "link: %s\n", err.msg);
            break;
        }
        lat[i] = now_us() - t0;
        pl_msg_close(&m);
    }
    if (done < iterations)
        kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    qsort(lat, (size_t)done, sizeof *lat, cmp_double);
    r.done = done;
    if (done) {
        r.p50 = lat[done / 2];
        r.p99 = lat[(size_t)(done * 0.99)];
        r.max = lat[done - 1];
    }
    free(lat);
    pl_link_out_close(to);
    pl_link_in_close(from);
    rmdir(dir);
    return r;
}

static result run(void *ctx, const char *transport, bool spin, bool process, int iterations)
{
    char a[256], b[256];
    void *to = zmq_socket(ctx, ZMQ_PUSH), *from = zmq_socket(ctx, ZMQ_PULL);
    if (strcmp(transport, "tcp") == 0) {
        zmq_bind(to, "tcp://127.0.0.1:*");
        zmq_bind(from, "tcp://127.0.0.1:*");
    } else if (strcmp(transport, "ipc") == 0) {
        snprintf(a, sizeof a, "ipc:///tmp/sluice-bench-wire-%d-a", (int)getpid());
        snprintf(b, sizeof b, "ipc:///tmp/sluice-bench-wire-%d-b", (int)getpid());
        zmq_bind(to, a);
        zmq_bind(from, b);
    } else {
        static int n_inproc; /* a closed socket's name may stay taken a while */
        snprintf(a, sizeof a, "inproc://bench-a%d", n_inproc);
        snprintf(b, sizeof b, "inproc://bench-b%d", n_inproc++);
        zmq_bind(to, a);
        zmq_bind(from, b);
    }
    echo e = {.ctx = ctx, .iterations = iterations, .spin = spin};
    size_t len = sizeof e.in;
    zmq_getsockopt(to, ZMQ_LAST_ENDPOINT, e.in, &len);
    len = sizeof e.out;
    zmq_getsockopt(from, ZMQ_LAST_ENDPOINT, e.out, &len);
    pthread_t th;
    pid_t child = -1;
    if (process) {
        child = fork();
        if (child == 0) { /* the echo stage's own process, with its own context */
            e.ctx = zmq_ctx_new();
            echo_main(&e);
            zmq_ctx_term(e.ctx);
            _exit(0);
        }
    } else {
        pthread_create(&th, NULL, echo_main, &e);
    }

    static float act[D_MODEL];
    for (int i = 0; i < D_MODEL; i++)
        act[i] = (float)i * 0.001f;
    uint64_t req = 1;
    int32_t seq = 0, pos = 0, tok = 2;
    uint8_t flags = 1;
    double *lat = malloc((size_t)iterations * sizeof *lat);
    sl_err err;
    int done = 0;
    for (int i = 0; i < iterations; i++, done++) {
        double t0 = now_us();
        pl_msg m;
        if (send_batch(to, (uint64_t)i, &req, &seq, &pos, &tok, &flags, act, &err) ||
            await_msg(from, spin) < 0 || pl_msg_recv(&m, from, NULL, &err)) {
            fprintf(stderr, "%s: %s\n", transport, err.msg);
            break;
        }
        lat[i] = now_us() - t0;
        pl_msg_close(&m);
    }
    if (process) {
        if (done < iterations)
            kill(child, SIGKILL);
        waitpid(child, NULL, 0);
    } else {
        pthread_join(th, NULL);
    }
    qsort(lat, (size_t)done, sizeof *lat, cmp_double);
    result r = {0, 0, 0, done};
    if (done) {
        r.p50 = lat[done / 2];
        r.p99 = lat[(size_t)(done * 0.99)];
        r.max = lat[done - 1];
    }
    free(lat);
    zmq_close(to);
    zmq_close(from);
    if (strcmp(transport, "ipc") == 0) {
        unlink(a + 6);
        unlink(b + 6);
    }
    return r;
}

int main(int argc, char **argv)
{
    int iterations = argc > 1 ? atoi(argv[1]) : 10000;
    int rounds = argc > 2 ? atoi(argv[2]) : 3;
    static const struct {
        const char *name, *transport;
        bool process;
    } cases[] = {{"inproc", "inproc", false}, {"ipc", "ipc", false}, {"tcp", "tcp", false},
                 {"ipc-proc", "ipc", true}, {"link-proc", "link", true}};
    enum { N_CASES = 5 };
    result best[N_CASES][2];
    memset(best, 0, sizeof best);
    void *ctx = zmq_ctx_new();
    for (int r = 0; r < rounds; r++)
        for (int c = 0; c < N_CASES; c++)
            for (int spin = 0; spin < 2; spin++) {
                result x = strcmp(cases[c].transport, "link") == 0
                               ? run_link(spin, iterations)
                               : run(ctx, cases[c].transport, spin, cases[c].process, iterations);
                if (x.done && (!best[c][spin].done || x.p50 < best[c][spin].p50))
                    best[c][spin] = x;
            }
    zmq_ctx_term(ctx);
    printf("best of %d rounds of %d round trips; one way = half a round trip (us)\n", rounds, iterations);
    for (int c = 0; c < N_CASES; c++)
        for (int spin = 0; spin < 2; spin++) {
            const result *x = &best[c][spin];
            printf("%-8s %-5s round trip p50 %7.1f p99 %7.1f max %8.1f   one way p50 %6.1f p99 %6.1f\n",
                   cases[c].name, spin ? "spin" : "block", x->p50, x->p99, x->max, x->p50 / 2, x->p99 / 2);
        }
    return 0;
}
