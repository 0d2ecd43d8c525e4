#include "kernels/probe.h"

#include <pthread.h>
#include <stdbool.h>
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
    bool vec;
    _Atomic uint64_t sink;
} bw_args;

/* Bytes a unit of the read pass: 4 KB, a multiple of the vector loop's 256. */
#define BW_UNIT 4096
#define BW_WORDS (BW_UNIT / sizeof(uint64_t))

static void touch_range(void *arg, int64_t i0, int64_t i1)
{
    bw_args *a = arg;
    for (int64_t i = i0 * (int64_t)BW_WORDS; i < i1 * (int64_t)BW_WORDS; i++)
        a->buf[i] = (uint64_t)i;
}

/* Reads units [u0, u1). */
static void read_range(void *arg, int64_t u0, int64_t u1)
{
    bw_args *a = arg;
    const uint64_t *buf = a->buf + u0 * (int64_t)BW_WORDS;
    size_t words = (size_t)(u1 - u0) * BW_WORDS;
    uint64_t part = 0;
#if defined(__x86_64__)
    if (a->vec)
        part = sl_probe_read_avx512(buf, words * sizeof(uint64_t));
#endif
    if (!a->vec) {
        for (size_t i = 0; i < words; i += 4)
            part += (buf[i] ^ buf[i + 1]) + (buf[i + 2] ^ buf[i + 3]);
    }
    atomic_fetch_add_explicit(&a->sink, part, memory_order_relaxed);
}

#define BW_MAX_PASSES 256

struct sl_bw_probe {
    bw_args a;
    size_t units;
    int n;
    double pass[BW_MAX_PASSES]; /* bytes/s, in order */
};

sl_bw_probe *sl_bw_probe_open(size_t bytes)
{
    size_t units = bytes / BW_UNIT;
    sl_bw_probe *p = units ? calloc(1, sizeof *p) : NULL;
    if (!p)
        return NULL;
    /* mapped as the repacked weights are (huge pages where the kernel gives
     * them), so the figure is what the matmuls can stream */
    void *buf = mmap(NULL, units * BW_UNIT, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) {
        free(p);
        return NULL;
    }
    madvise(buf, units * BW_UNIT, MADV_HUGEPAGE);
    const sl_cpu_features *f = sl_cpu();
    p->a.buf = buf;
#if defined(__x86_64__)
    p->a.vec = f->avx512f && f->os_avx512 && sl_path_active() >= SL_PATH_AVX512;
#else
    (void)f;
#endif
    p->units = units;
    p->n = -1; /* the first pass warms up */
    /* threads write parts they may read: first touch spreads the pages over
     * their NUMA nodes */
    sl_pool_for((int64_t)units, 16, touch_range, &p->a);
    return p;
}

void sl_bw_probe_run(sl_bw_probe *p, int passes)
{
    /* passes back to back: the pool's threads still spin from the last one,
     * as they do between the matmuls of a decode */
    int runs = passes + (p->n < 0);
    for (int r = 0; r < runs; r++) {
        double t0 = sl_now_s();
        sl_pool_for((int64_t)p->units, 64, read_range, &p->a); /* 256 KB chunks */
        double bw = (double)(p->units * BW_UNIT) / (sl_now_s() - t0);
        if (p->n < 0)
            p->n = 0;
        else if (p->n < BW_MAX_PASSES)
            p->pass[p->n++] = bw;
    }
}

double sl_bw_probe_best(const sl_bw_probe *p)
{
    double best = 0;
    for (int i = 0; i < p->n; i++)
        best = p->pass[i] > best ? p->pass[i] : best;
    return best;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double sl_bw_probe_median(const sl_bw_probe *p)
{
    if (p->n <= 0)
        return 0;
    double v[BW_MAX_PASSES];
    memcpy(v, p->pass, sizeof(double) * (size_t)p->n);
    qsort(v, (size_t)p->n, sizeof v[0], cmp_double);
    return p->n % 2 ? v[p->n / 2] : 0.5 * (v[p->n / 2 - 1] + v[p->n / 2]);
}

int sl_bw_probe_passes(const sl_bw_probe *p)
{
    return p->n > 0 ? p->n : 0;
}

void sl_bw_probe_close(sl_bw_probe *p)
{
    if (!p)
        return;
    munmap(p->a.buf, p->units * BW_UNIT);
    free(p);
}

double sl_probe_read_bw(size_t bytes, int reps)
{
    sl_bw_probe *p = sl_bw_probe_open(bytes);
    if (!p)
        return 0;
    sl_bw_probe_run(p, reps);
    double best = sl_bw_probe_best(p);
    sl_bw_probe_close(p);
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
