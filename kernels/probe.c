#include "kernels/probe.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "kernels/cpu.h"
#include "kernels/matmul.h"
#include "kernels/quant.h"
#include "util/clock.h"
#include "util/pool.h"

typedef struct bw_args {
    uint64_t *buf;
    _Atomic uint64_t sink;
} bw_args;

static void touch_range(void *arg, int64_t i0, int64_t i1)
{
    bw_args *a = arg;
    for (int64_t i = i0; i < i1; i++)
        a->buf[i] = (uint64_t)i;
}

/* Reads groups [g0, g1) of 4 words. */
static void read_range(void *arg, int64_t g0, int64_t g1)
{
    bw_args *a = arg;
    const uint64_t *buf = a->buf;
    uint64_t part = 0;
    for (int64_t i = g0 * 4; i < g1 * 4; i += 4)
        part += (buf[i] ^ buf[i + 1]) + (buf[i + 2] ^ buf[i + 3]);
    atomic_fetch_add_explicit(&a->sink, part, memory_order_relaxed);
}

double sl_probe_read_bw(size_t bytes, int reps)
{
    size_t n = bytes / sizeof(uint64_t);
    /* mapped as the repacked weights are (huge pages where the kernel gives
     * them), so the figure is what the matmuls can stream */
    uint64_t *buf = n ? mmap(NULL, n * sizeof(uint64_t), PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                      : MAP_FAILED;
    if (buf == MAP_FAILED)
        return 0;
    madvise(buf, n * sizeof(uint64_t), MADV_HUGEPAGE);
    /* threads write parts they may read: first touch spreads the pages over
     * their NUMA nodes */
    bw_args a = {buf, 0};
    sl_pool_for((int64_t)n, 1 << 16, touch_range, &a);
    /* passes back to back: the pool's threads still spin from the last one,
     * as they do between the matmuls of a decode */
    double best = 0;
    for (int r = 0; r < reps + 1; r++) { /* pass 0 warms up */
        double t0 = sl_now_s();
        sl_pool_for((int64_t)(n / 4), 1 << 14, read_range, &a);
        double bw = (double)(n / 4 * 4 * sizeof(uint64_t)) / (sl_now_s() - t0);
        if (r > 0 && bw > best)
            best = bw;
    }
    munmap(buf, n * sizeof(uint64_t));
    return best;
}

/* Q4_0 matrices cycled through so the weights come from memory, not cache
 * (n_mats copies, at least 256 MB in all for GEMV), timed over a run of
 * back-to-back calls as a decode makes them. */
double sl_probe_matmul(int n_out, int n_in, int n_tok, int reps)
{
    size_t rb = sl_row_bytes(SL_TYPE_Q4_0, n_in), mat = rb * (size_t)n_out;
    int n_mats = n_tok == 1 ? (int)(((size_t)256 << 20) / mat) + 1 : 2;
    uint8_t *w = malloc(mat);
    float *row = malloc(sizeof(float) * (size_t)n_in);
    float *x = malloc(sizeof(float) * (size_t)n_in * (size_t)n_tok);
    float *y = malloc(sizeof(float) * (size_t)n_out * (size_t)n_tok);
    void **packed = calloc((size_t)n_mats, sizeof *packed);
    double best = 0;
    if (w && row && x && y && packed) {
        uint32_t s = 12345;
        for (int o = 0; o < n_out; o++) {
            for (int i = 0; i < n_in; i++) {
                s = s * 1664525u + 1013904223u;
                row[i] = (float)(s >> 8) / 16777216.0f - 0.5f;
            }
            sl_quantize_row(SL_TYPE_Q4_0, row, w + (size_t)o * rb, n_in);
        }
        for (size_t i = 0; i < (size_t)n_in * (size_t)n_tok; i++)
            x[i] = (float)(i % 17) / 17.0f - 0.5f;
        for (int k = 0; k < n_mats; k++)
            packed[k] = sl_pack(SL_TYPE_Q4_0, w, n_out, n_in); /* NULL: the plain layout */
        for (int r = 0; r < reps + 1; r++) { /* run 0 warms up */
            double t0 = sl_now_s();
            for (int k = 0; k < n_mats; k++)
                sl_matmul_packed(SL_TYPE_Q4_0, w, packed[k], n_out, n_in, x, n_tok, y, n_out);
            double flops = 2.0 * n_out * (double)n_in * n_tok * n_mats / (sl_now_s() - t0);
            if (r > 0 && flops > best)
                best = flops;
        }
        for (int k = 0; k < n_mats; k++)
            sl_pack_free(packed[k]);
    }
    free(packed);
    free(w);
    free(row);
    free(x);
    free(y);
    return best;
}

/* ---- VNNI int8 peak ---- */

typedef struct vnni_job {
    int64_t (*loop)(int64_t iters, uint32_t seed);
    int64_t iters;
    uint32_t seed;
    int64_t sink;
} vnni_job;

static void *vnni_thread(void *arg)
{
    vnni_job *j = arg;
    j->sink = j->loop(j->iters, j->seed);
    return NULL;
}

/* Wall time of every thread running iters iterations at once: plain
 * threads started together (the pool's split is for matmuls; this wants
 * every core busy for the same stretch). */
static double vnni_wall(int64_t (*loop)(int64_t, uint32_t), int threads, int64_t iters,
                        int64_t *sink)
{
    enum { MAX_THREADS = 256 };
    pthread_t tid[MAX_THREADS];
    vnni_job jobs[MAX_THREADS];
    if (threads > MAX_THREADS)
        threads = MAX_THREADS;
    double t0 = sl_now_s();
    int started = 1;
    for (int i = 0; i < threads; i++)
        jobs[i] = (vnni_job){loop, iters, 0x9e3779b9u * (uint32_t)(i + 1), 0};
    for (int i = 1; i < threads; i++)
        started += pthread_create(&tid[i], NULL, vnni_thread, &jobs[i]) == 0;
    vnni_thread(&jobs[0]);
    for (int i = 1; i < started; i++)
        pthread_join(tid[i], NULL);
    double t = sl_now_s() - t0;
    for (int i = 0; i < threads; i++)
        *sink += jobs[i].sink;
    return started == threads ? t : 0;
}

/* Ops a second of loop (macs multiply-adds an iteration) on threads at
 * once: the run grows until it takes a tenth of the budget, then 3 runs of
 * about a third each, the best kept. */
static double peak_of(int64_t (*loop)(int64_t, uint32_t), double macs, int threads, double secs)
{
    int64_t sink = 0, iters = 1 << 16;
    double t = vnni_wall(loop, 1, iters, &sink);
    while (t > 0 && t < secs / 10 && iters < ((int64_t)1 << 40)) {
        iters *= 2;
        t = vnni_wall(loop, 1, iters, &sink);
    }
    if (t <= 0)
        return 0;
    iters = (int64_t)((double)iters * (secs / 3) / t) + 1;
    double best = 0;
    for (int r = 0; r < 3; r++) {
        double w = vnni_wall(loop, threads, iters, &sink);
        double ops = 2.0 * macs * (double)iters * threads;
        if (w > 0 && ops / w > best)
            best = ops / w;
    }
    volatile int64_t keep = sink;
    (void)keep;
    return best;
}

double sl_probe_vnni_peak(int threads, double secs)
{
#if defined(__x86_64__)
    if (!sl_cpu()->avx512vnni || threads < 1)
        return 0;
    return peak_of(sl_probe_vnni_loop, SL_PROBE_VNNI_MACS_PER_ITER, threads, secs);
#else
    (void)threads;
    (void)secs;
    return 0;
#endif
}

double sl_probe_amx_peak(int threads, double secs)
{
#if defined(__x86_64__)
    const sl_cpu_features *f = sl_cpu();
    if (!f->amx_tile || !f->amx_int8 || !f->os_amx || threads < 1)
        return 0;
    return peak_of(sl_probe_amx_loop, SL_PROBE_AMX_MACS_PER_ITER, threads, secs);
#else
    (void)threads;
    (void)secs;
    return 0;
#endif
}
