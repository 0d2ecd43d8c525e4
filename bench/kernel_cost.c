/* One repacked matmul (the 16-row VNNI layouts) on one thread, timed in the
 * thread's CPU time (a shared, oversubscribed machine stretches wall time
 * but not that): 1, 2, 4, 5, 8 and 64 tokens against one n_out x 1152
 * matrix of a block type, best of 5, with the ratio to one token (a
 * speculative verification of k tokens against a decode step) and GOP/s.
 * SLUICE_REPACK=0 gives the row kernels for comparison.
 *
 * Not built by CMake; bench/kernel_cost.sh builds and runs it:
 *   bench/kernel_cost.sh [TYPE...]   (default: q4_0 q4_1 q5_0 q5_1 q8_0)
 * then kernel_cost TYPE [N_OUT [N_IN]] (default 65536 x 1152: about 40 MB of
 * Q4_0, out of cache as a decode's weights are; N_IN 6912 for a down
 * projection's rows). SLUICE_R16_ONE=0 sends one token to the one-group
 * kernel instead of the one-token kernel, for a paired comparison. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "kernels/matmul.h"
#include "kernels/quant.h"

static double cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: kernel_cost TYPE [N_OUT [N_IN]]\n");
        return 2;
    }
    sl_type type = sl_type_from_name(argv[1]);
    int n_out = argc > 2 ? atoi(argv[2]) : 65536, n_in = argc > 3 ? atoi(argv[3]) : 1152;
    if ((int)type < 0 || n_out < 16 || n_in < 32 || n_in % sl_type_block_elems(type)) {
        fprintf(stderr, "kernel_cost: bad type '%s', N_OUT or N_IN (whole blocks)\n", argv[1]);
        return 2;
    }
    omp_set_num_threads(1);
    size_t rb = sl_row_bytes(type, n_in);
    unsigned char *w = malloc(rb * (size_t)n_out);
    float *row = malloc(sizeof(float) * (size_t)n_in);
    float *x = malloc(sizeof(float) * (size_t)n_in * 64);
    float *y = malloc(sizeof(float) * (size_t)n_out * 64);
    if (!w || !row || !x || !y)
        return 1;
    unsigned s = 1;
    for (int o = 0; o < n_out; o++) {
        for (int i = 0; i < n_in; i++) {
            s = s * 1664525u + 1013904223u;
            row[i] = (float)(s >> 8) / 16777216.0f - 0.5f;
        }
        sl_quantize_row(type, row, w + (size_t)o * rb, n_in);
    }
    for (int i = 0; i < n_in * 64; i++)
        x[i] = (float)(i % 17) / 17.0f - 0.5f;
    void *packed = sl_pack(type, w, n_out, n_in);
    static const int toks[] = {1, 2, 4, 5, 8, 64};
    double one = 0;
    printf("%s %d x %d, %s, 1 thread (CPU time)\n", argv[1], n_out, n_in,
           packed ? "repacked x16" : "row layout");
    for (int k = 0; k < 6; k++) {
        double best = 1e30;
        for (int r = 0; r < 5; r++) {
            double t0 = cpu_s();
            sl_matmul_packed(type, w, packed, n_out, n_in, x, toks[k], y, n_out);
            double t = cpu_s() - t0;
            best = t < best ? t : best;
        }
        if (k == 0)
            one = best;
        printf("  %2d tokens: %8.3f ms  %5.2fx one token  %6.1f GOP/s  %5.1f GB/s of weights\n",
               toks[k], best * 1e3, best / one, 2.0 * n_out * (double)n_in * toks[k] / best / 1e9,
               (double)rb * n_out / best / 1e9);
    }
    sl_pack_free(packed);
    free(w);
    free(row);
    free(x);
    free(y);
    return 0;
}
