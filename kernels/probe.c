#include "kernels/probe.h"

#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/matmul.h"
#include "kernels/quant.h"

double sl_probe_read_bw(size_t bytes, int reps)
{
    size_t n = bytes / sizeof(uint64_t);
    uint64_t *buf = malloc(n * sizeof(uint64_t));
    if (!buf || n == 0) {
        free(buf);
        return 0;
    }
    /* each thread writes the part it will read: first touch puts the pages
     * on its own NUMA node */
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++)
        buf[i] = i;
    double best = 0;
    volatile uint64_t sink = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = omp_get_wtime();
        uint64_t total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total)
        for (size_t i = 0; i < n; i += 4)
            total += (buf[i] ^ buf[i + 1]) + (buf[i + 2] ^ buf[i + 3]);
        double dt = omp_get_wtime() - t0;
        sink += total;
        double bw = (double)(n * sizeof(uint64_t)) / dt;
        best = bw > best ? bw : best;
    }
    (void)sink;
    free(buf);
    return best;
}

double sl_probe_matmul(int n_out, int n_in, int n_tok, int reps)
{
    size_t rb = sl_row_bytes(SL_TYPE_Q4_0, n_in);
    uint8_t *w = malloc(rb * (size_t)n_out);
    float *row = malloc(sizeof(float) * (size_t)n_in);
    float *x = malloc(sizeof(float) * (size_t)n_in * (size_t)n_tok);
    float *y = malloc(sizeof(float) * (size_t)n_out * (size_t)n_tok);
    double best = 0;
    if (w && row && x && y) {
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
        void *packed = sl_pack(SL_TYPE_Q4_0, w, n_out, n_in);
        for (int r = 0; r < reps; r++) {
            double t0 = omp_get_wtime();
            sl_matmul_packed(SL_TYPE_Q4_0, w, packed, n_out, n_in, x, n_tok, y, n_out);
            double dt = omp_get_wtime() - t0;
            double flops = 2.0 * n_out * (double)n_in * n_tok / dt;
            best = flops > best ? flops : best;
        }
        sl_pack_free(packed);
    }
    free(w);
    free(row);
    free(x);
    free(y);
    return best;
}
