#include "kernels/probe.h"

#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "kernels/matmul.h"
#include "kernels/quant.h"

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
    /* each thread writes the part it will read: first touch puts the pages
     * on its own NUMA node */
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++)
        buf[i] = i;
    /* All passes inside one parallel region: a team that sleeps between
     * passes pays a wake-up (milliseconds for an idle virtual CPU) that a
     * streaming decode never sees. */
    double best = 0;
    volatile uint64_t sink = 0;
#pragma omp parallel
    {
        for (int r = 0; r < reps + 1; r++) { /* pass 0 warms up */
#pragma omp barrier
            double t0 = omp_get_wtime();
            uint64_t part = 0;
#pragma omp for schedule(static)
            for (size_t i = 0; i < n; i += 4)
                part += (buf[i] ^ buf[i + 1]) + (buf[i + 2] ^ buf[i + 3]);
            /* the implicit barrier of the loop: every thread has finished */
#pragma omp master
            {
                double bw = (double)(n * sizeof(uint64_t)) / (omp_get_wtime() - t0);
                if (r > 0 && bw > best)
                    best = bw;
            }
#pragma omp atomic
            sink += part;
        }
    }
    (void)sink;
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
            double t0 = omp_get_wtime();
            for (int k = 0; k < n_mats; k++)
                sl_matmul_packed(SL_TYPE_Q4_0, w, packed[k], n_out, n_in, x, n_tok, y, n_out);
            double flops = 2.0 * n_out * (double)n_in * n_tok * n_mats / (omp_get_wtime() - t0);
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
