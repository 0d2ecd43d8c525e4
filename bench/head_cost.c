/* The output head of a GGUF model (its one-token matmul, as a decode step
 * runs it) timed against the same kernel on static halves, on the pool's
 * threads, and against a fresh copy of its packed weights: where the head
 * loses to a lone matrix of its type; the matmul's decode split
 * (sl_matmul_set_steal) both ways. Wall time, GB/s of weights, best and
 * median of R rounds, the variants interleaved round by round.
 *
 * Not built by CMake; bench/head_cost.sh builds and runs it:
 *   bench/head_cost.sh MODEL [THREADS [ROUNDS]]   (default 2 threads, 15 rounds) */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "kernels/cpu.h"
#include "kernels/matmul.h"
#include "kernels/matmul_internal.h"
#include "kernels/probe.h"
#include "kernels/q8act.h"
#include "model/lm.h"
#include "util/pool.h"

typedef struct halves {
    sl_r16_fn one;
    const uint8_t *packed;
    int64_t n_groups, parts;
    const sl_q8act *a;
    float *y;
} halves;

/* Part i of parts equal row ranges, whole groups of 16. */
static void halves_range(void *arg, int64_t i0, int64_t i1)
{
    const halves *h = arg;
    for (int64_t i = i0; i < i1; i++) {
        int64_t g0 = h->n_groups * i / h->parts, g1 = h->n_groups * (i + 1) / h->parts;
        h->one(h->packed, g0, g1, h->a, h->y, 1);
    }
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct reads {
    const uint8_t *p;
    size_t bytes;
    uint64_t sink;
} reads;

/* A plain vector read of the packed weights' halves (the probe's loop). */
static void read_range(void *arg, int64_t i0, int64_t i1)
{
    reads *r = arg;
    for (int64_t i = i0; i < i1; i++) {
        size_t b0 = r->bytes / 256 * (size_t)i / 2 * 256, b1 = r->bytes / 256 * (size_t)(i + 1) / 2 * 256;
        r->sink ^= sl_probe_read_avx512(r->p + b0, b1 - b0);
    }
}

enum { V_POOL, V_STEAL, V_HALVES, V_PARTS8, V_COPY, V_READ, V_N };
static const char *const names[V_N] = {"matmul, pool's chunks", "matmul, parts + stealing",
                                       "kernel on static halves", "kernel on 8 equal parts",
                                       "halves, fresh copy", "plain read, halves"};

/* One variant's head on x into y (the bench's shared state in hc). */
typedef struct hc {
    const sl_weight *w;
    sl_r16_fn one;
    const uint8_t *copy;
    size_t pbytes;
    sl_q8act a;
    float *y, *y2;
} hc;

static double run_variant(hc *h, int v, const float *x)
{
    const sl_weight *w = h->w;
    int64_t n_out = w->n_out, n_in = w->n_in;
    halves hv = {h->one, v == V_COPY ? h->copy : w->packed, n_out / 16, v == V_PARTS8 ? 8 : 2,
                 &h->a, h->y2};
    reads rd = {w->packed, h->pbytes, 0};
    uint64_t t0 = sl_pool_now_ns();
    if (v == V_READ) {
        sl_pool_for(2, 1, read_range, &rd);
    } else if (v == V_POOL || v == V_STEAL) {
        sl_matmul_set_steal(v == V_STEAL);
        sl_matmul_packed(w->type, w->data, w->packed, n_out, n_in, x, 1, h->y, n_out);
    } else {
        sl_q8act_quantize(&h->a, 0, x);
        sl_pool_for(hv.parts, 1, halves_range, &hv);
    }
    return (double)(sl_pool_now_ns() - t0) * 1e-9;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: head_cost MODEL [THREADS [ROUNDS [decode]]]\n");
        return 2;
    }
    int threads = argc > 2 ? atoi(argv[2]) : 2, rounds = argc > 3 ? atoi(argv[3]) : 15;
    bool decode = argc > 4 && strcmp(argv[4], "decode") == 0;
    sl_pool_set_threads(threads);
    sl_lm *lm;
    sl_err err = {0};
    int n_ctx = rounds * V_N + 8;
    if (sl_lm_open(&lm, argv[1], n_ctx, 1, &err)) {
        fprintf(stderr, "head_cost: %s\n", err.msg);
        return 1;
    }
    const sl_weight *w = &lm->model->output;
    int64_t n_out = w->n_out, n_in = w->n_in;
    hc h = {w, sl_r16_one_avx512(w->type), NULL, 0, {0}, NULL, NULL};
    if (!w->packed || !h.one || n_out % 16) {
        fprintf(stderr, "head_cost: the head (%s) has no packed one-token path\n",
                sl_type_name(w->type));
        return 1;
    }
    double bytes = (double)sl_row_bytes(w->type, n_in) * (double)n_out;
    h.pbytes = sl_r16_group_bytes(w->type, n_in) * (size_t)(n_out / 16);
    uint8_t *copy = mmap(NULL, h.pbytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (copy == MAP_FAILED)
        return 1;
    madvise(copy, h.pbytes, MADV_HUGEPAGE);
    memcpy(copy, w->packed, h.pbytes);
    h.copy = copy;
    float *x = malloc(sizeof(float) * (size_t)n_in);
    h.y = malloc(sizeof(float) * (size_t)n_out);
    h.y2 = malloc(sizeof(float) * (size_t)n_out);
    float *ref = malloc(sizeof(float) * (size_t)n_out);
    void *qmem = aligned_alloc(64, (sl_q8act_bytes(1, n_in) + 63) / 64 * 64);
    if (!x || !h.y || !h.y2 || !ref || !qmem)
        return 1;
    unsigned s = 7;
    for (int64_t i = 0; i < n_in; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)(s >> 8) / 16777216.0f - 0.5f;
    }
    sl_q8act_init(&h.a, qmem, 1, n_in);
    double *t[V_N];
    for (int v = 0; v < V_N; v++)
        t[v] = calloc((size_t)rounds, sizeof(double));
    int32_t tok = 2;
    for (int r = 0; r < rounds; r++)
        for (int v = 0; v < V_N; v++) {
            /* decode: a layer step before each head, as a decode step has */
            if (decode && sl_lm_batch(lm, &tok, 1, r * V_N + v, &err)) {
                fprintf(stderr, "head_cost: %s\n", err.msg);
                return 1;
            }
            t[v][r] = run_variant(&h, v, decode ? lm->x : x);
            /* the same bits every way (not checked after layer steps: each
             * variant sees another token's x) */
            const float *out = v == V_POOL || v == V_STEAL ? h.y : h.y2;
            if (v == V_POOL)
                memcpy(ref, h.y, sizeof(float) * (size_t)n_out);
            else if (v != V_READ && !decode && memcmp(ref, out, sizeof(float) * (size_t)n_out)) {
                fprintf(stderr, "head_cost: %s gave other bits than the pool's split\n",
                        names[v]);
                return 1;
            }
        }
    printf("%s: head %s %lld x %lld (%.1f MB), %d threads, %d rounds%s, path %s\n", argv[1],
           sl_type_name(w->type), (long long)n_out, (long long)n_in, bytes / 1e6, threads,
           rounds, decode ? " each after a layer step" : "", sl_matmul_path_name(w->type));
    for (int v = 0; v < V_N; v++) {
        qsort(t[v], (size_t)rounds, sizeof(double), cmp_d);
        double best = t[v][0], med = t[v][rounds / 2];
        printf("  %-32s best %6.3f ms %6.1f GB/s   median %6.3f ms %6.1f GB/s\n", names[v],
               best * 1e3, bytes / best / 1e9, med * 1e3, bytes / med / 1e9);
    }
    return 0;
}
