#include "kernels/probe.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

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
