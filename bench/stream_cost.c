/* The one-token (decode) kernels streaming a matrix from memory on two
 * threads, called directly: each thread (pinned to CPU 0 and 1) runs its
 * half of the 16-row groups of one repacked n_out x n_in matrix of a type
 * (the calling thread one of them), both released together; the time is the later thread's end. Several
 * builds of kernels/matmul_r16d_avx512.c (settings such as the prefetch
 * distance, -D at compile time) and a plain 64-byte vector read of the same
 * bytes run paired: round by round, each setting once a round, best and
 * median of the rounds, GB/s of weights.
 *
 * Not built by CMake; bench/stream_cost.sh builds the settings and this
 * file and runs it:
 *   bench/stream_cost.sh TYPE N_IN 'NAME=FLAGS' ...
 * The settings' kernels come from the table stream_variants the script
 * writes. */
#define _GNU_SOURCE
#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/matmul.h"
#include "kernels/matmul_internal.h"
#include "kernels/quant.h"
#include "util/clock.h"

typedef struct stream_variant {
    const char *name;
    sl_r16_fn (*get)(sl_type);
} stream_variant;
extern const stream_variant stream_variants[];
extern const int n_stream_variants;

typedef struct shared {
    const uint8_t *packed;
    size_t group_bytes;
    int64_t n_groups;
    const sl_q8act *a;
    float *y;
    _Atomic int go;     /* round number released */
    _Atomic int done;   /* threads finished this round */
    int variant;        /* -1: plain read */
    double t_end[2];
} shared;

static shared S;
static sl_type g_type;
static uint64_t sink[2];

/* A plain read of [p, p + bytes) in 64-byte vectors, four chains. */
static uint64_t plain_read(const uint8_t *p, size_t bytes)
{
    __m512i x0 = _mm512_setzero_si512(), x1 = x0, x2 = x0, x3 = x0;
    for (size_t i = 0; i + 256 <= bytes; i += 256) {
        x0 = _mm512_xor_si512(x0, _mm512_load_si512(p + i));
        x1 = _mm512_xor_si512(x1, _mm512_load_si512(p + i + 64));
        x2 = _mm512_xor_si512(x2, _mm512_load_si512(p + i + 128));
        x3 = _mm512_xor_si512(x3, _mm512_load_si512(p + i + 192));
    }
    x0 = _mm512_xor_si512(_mm512_xor_si512(x0, x1), _mm512_xor_si512(x2, x3));
    return (uint64_t)_mm512_reduce_add_epi64(x0);
}

/* Thread t's half read plainly: from its first group's start, rounded
 * down to 256 bytes (the packed copy is 64-byte aligned). */
static uint64_t read_half(int t)
{
    int64_t g0 = t * S.n_groups / 2, g1 = (t + 1) * S.n_groups / 2;
    size_t b0 = ((size_t)g0 * S.group_bytes) & ~(size_t)255;
    size_t b1 = ((size_t)g1 * S.group_bytes) & ~(size_t)255;
    return plain_read(S.packed + b0, b1 - b0);
}

static void pin(int cpu)
{
    cpu_set_t cs;
    CPU_ZERO(&cs);
    CPU_SET(cpu, &cs);
    pthread_setaffinity_np(pthread_self(), sizeof cs, &cs);
}

/* Thread t's half of the current setting. */
static void run_half(int t)
{
    if (S.variant < 0) {
        sink[t] += read_half(t);
    } else {
        int64_t g0 = t * S.n_groups / 2, g1 = (t + 1) * S.n_groups / 2;
        sl_r16_fn fn = stream_variants[S.variant].get(g_type);
        sl_r16_run(fn, g_type, S.packed, S.n_groups, g0, g1, S.a, S.y, 0);
    }
    S.t_end[t] = sl_now_s();
    atomic_fetch_add_explicit(&S.done, 1, memory_order_acq_rel);
}

/* The second thread: waits for each round and runs its half. */
static void *worker(void *arg)
{
    (void)arg;
    for (int round = 1;; round++) {
        while (atomic_load_explicit(&S.go, memory_order_acquire) < round)
            _mm_pause();
        if (S.variant == -2)
            return NULL;
        run_half(1);
    }
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: stream_cost TYPE N_IN [MB [ROUNDS]]\n");
        return 2;
    }
    g_type = sl_type_from_name(argv[1]);
    int n_in = atoi(argv[2]);
    double mb = argc > 3 ? atof(argv[3]) : 96;
    int rounds = argc > 4 ? atoi(argv[4]) : 15;
    if ((int)g_type < 0 || n_in < 32 || n_in % sl_type_block_elems(g_type) || rounds < 1 || mb < 1) {
        fprintf(stderr, "stream_cost: bad type, N_IN (whole blocks), MB or ROUNDS\n");
        return 2;
    }
    for (int v = 0; v < n_stream_variants; v++)
        if (!stream_variants[v].get(g_type)) {
            fprintf(stderr, "stream_cost: no one-token kernel for %s in %s\n", argv[1],
                    stream_variants[v].name);
            return 2;
        }
    size_t gb = sl_r16_group_bytes(g_type, n_in);
    int64_t n_groups = (int64_t)(mb * 1048576.0 / (double)gb) & ~(int64_t)1;
    int64_t n_out = 16 * n_groups;
    /* 256 distinct quantised rows, repeated: the values do not change the
     * speed, and quantising 100 MB of rows would take longer than the runs */
    size_t rb = sl_row_bytes(g_type, n_in);
    uint8_t *w = malloc(rb * (size_t)n_out);
    float *row = malloc(sizeof(float) * (size_t)n_in), *x = malloc(sizeof(float) * (size_t)n_in);
    float *y = aligned_alloc(64, sizeof(float) * (size_t)n_out);
    if (!w || !row || !x || !y)
        return 1;
    unsigned s = 1;
    for (int o = 0; o < 256; o++) {
        for (int i = 0; i < n_in; i++) {
            s = s * 1664525u + 1013904223u;
            row[i] = (float)(s >> 8) / 16777216.0f - 0.5f;
        }
        sl_quantize_row(g_type, row, w + (size_t)o * rb, n_in);
    }
    for (int64_t o = 256; o < n_out; o++)
        memcpy(w + (size_t)o * rb, w + (size_t)(o % 256) * rb, rb);
    for (int i = 0; i < n_in; i++)
        x[i] = (float)(i % 17) / 17.0f - 0.5f;
    const uint8_t *packed = sl_pack(g_type, w, n_out, n_in);
    if (!packed) {
        fprintf(stderr, "stream_cost: %s does not repack\n", argv[1]);
        return 2;
    }
    free(w);
    sl_q8act a;
    void *amem = aligned_alloc(64, (sl_q8act_bytes(1, n_in) + 63) / 64 * 64);
    sl_q8act_init(&a, amem, 1, n_in);
    sl_q8act_quantize(&a, 0, x);
    S = (shared){.packed = packed, .group_bytes = gb, .n_groups = n_groups, .a = &a, .y = y};
    /* the second thread starts on CPU 1: under chrt -f a thread started on
     * the caller's CPU would wait there behind the caller's spin */
    pthread_attr_t attr;
    cpu_set_t cs1;
    CPU_ZERO(&cs1);
    CPU_SET(1, &cs1);
    pthread_attr_init(&attr);
    pthread_attr_setaffinity_np(&attr, sizeof cs1, &cs1);
    pthread_t th;
    if (pthread_create(&th, &attr, worker, NULL) != 0) {
        fprintf(stderr, "stream_cost: cannot start the second thread on CPU 1\n");
        return 1;
    }
    pthread_attr_destroy(&attr);
    pin(0);
    int nv = n_stream_variants + 1; /* the plain read last */
    double *times = calloc((size_t)nv * (size_t)(rounds + 1), sizeof(double));
    int round = 0;
    for (int r = -1; r < rounds; r++) { /* round -1 warms up */
        for (int v = 0; v < nv; v++) {
            S.variant = v < n_stream_variants ? v : -1;
            atomic_store(&S.done, 0);
            double t0 = sl_now_s();
            atomic_store_explicit(&S.go, ++round, memory_order_release);
            run_half(0);
            while (atomic_load_explicit(&S.done, memory_order_acquire) < 2)
                _mm_pause();
            double t1 = S.t_end[0] > S.t_end[1] ? S.t_end[0] : S.t_end[1];
            if (r >= 0)
                times[v * rounds + r] = t1 - t0;
        }
    }
    S.variant = -2;
    atomic_store_explicit(&S.go, ++round, memory_order_release);
    pthread_join(th, NULL);
    double bytes = (double)gb * (double)n_groups;
    printf("%s %lld x %d (%.1f MB repacked), 2 threads, %d paired rounds, GB/s of weights best / median\n",
           argv[1], (long long)n_out, n_in, bytes / 1048576.0, rounds);
    for (int v = 0; v < nv; v++) {
        double *t = times + v * rounds;
        qsort(t, (size_t)rounds, sizeof(double), cmp_d);
        printf("  %-24s %6.1f  %6.1f\n", v < n_stream_variants ? stream_variants[v].name : "plain read",
               bytes / t[0] / 1e9, bytes / t[rounds / 2] / 1e9);
    }
    fprintf(stderr, "\n(sink %llu %g)\n", (unsigned long long)(sink[0] ^ sink[1]), (double)y[0]);
    return 0;
}
