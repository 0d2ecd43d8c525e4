/* Round-trip latency of a 1-row BATCH (1152 f32 activations, Gemma 3 1B's
 * d_model) through pl_msg_send/pl_msg_recv and an echo thread, over inproc,
 * ipc and tcp loopback. Prints p50/p99/max in microseconds.
 *
 * Not built by CMake; from the repository root, after building the core
 * library in build-DIR:
 *   cc -O2 -std=gnu17 -I. -Ibuild-DIR bench/wire_latency.c build-DIR/libsluice_core.a \
 *      $(pkg-config --libs libzmq libprotobuf-c) -fopenmp -lm -lpthread -o /tmp/wire_latency
 *   /tmp/wire_latency [iterations]
 */
#include "pipeline/wire.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define D_MODEL 1152

typedef struct echo {
    void *ctx;
    char in[256], out[256];
    int iterations;
} echo;

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
        if (pl_msg_recv(&m, in, NULL, &err)) {
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

static void run(void *ctx, const char *transport, int iterations)
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
        zmq_bind(to, "inproc://bench-a");
        zmq_bind(from, "inproc://bench-b");
    }
    echo e = {.ctx = ctx, .iterations = iterations};
    size_t len = sizeof e.in;
    zmq_getsockopt(to, ZMQ_LAST_ENDPOINT, e.in, &len);
    len = sizeof e.out;
    zmq_getsockopt(from, ZMQ_LAST_ENDPOINT, e.out, &len);
    pthread_t th;
    pthread_create(&th, NULL, echo_main, &e);

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
            pl_msg_recv(&m, from, NULL, &err)) {
            fprintf(stderr, "%s: %s\n", transport, err.msg);
            break;
        }
        lat[i] = now_us() - t0;
        pl_msg_close(&m);
    }
    pthread_join(th, NULL);
    qsort(lat, (size_t)done, sizeof *lat, cmp_double);
    if (done)
        printf("%-7s %6d round trips  p50 %7.1f us  p99 %7.1f us  max %8.1f us\n", transport, done,
               lat[done / 2], lat[(size_t)(done * 0.99)], lat[done - 1]);
    free(lat);
    zmq_close(to);
    zmq_close(from);
    if (strcmp(transport, "ipc") == 0) {
        unlink(a + 6);
        unlink(b + 6);
    }
}

int main(int argc, char **argv)
{
    int iterations = argc > 1 ? atoi(argv[1]) : 10000;
    void *ctx = zmq_ctx_new();
    run(ctx, "inproc", iterations);
    run(ctx, "ipc", iterations);
    run(ctx, "tcp", iterations);
    zmq_ctx_term(ctx);
    return 0;
}
