/* Prefill-shaped matmuls on the repacked weights, one thread, timed in the
 * thread's CPU time (readable on a shared machine): 512 tokens against
 * Gemma 3 1B's FFN shapes, 6912 x 1152 (gate, up) and 1152 x 6912 (down),
 * best of R, in GOP/s (2 per multiply-add), the activations' quantisation
 * included as in a forward pass. With THREADS > 1, wall time on that many
 * pool threads (take the benchmark lock and chrt for that).
 *
 * Not built by CMake; bench/prefill_cost.sh builds and runs it:
 *   bench/prefill_cost.sh [TYPE...]   (default: q4_0 q8_0 q5_0 q4_K q6_K)
 * then prefill_cost TYPE [TOKENS [REPS [THREADS [N_OUT N_IN]]]] (one shape). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "kernels/matmul.h"
#include "kernels/quant.h"
#include "util/pool.h"

static int n_threads = 1;

/* The thread's CPU time on one thread; wall time on several. */
static double cpu_s(void)
{
    struct timespec t;
    clock_gettime(n_threads > 1 ? CLOCK_MONOTONIC : CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int run_shape(sl_type type, const char *name, int n_out, int n_in, int n_tok, int reps)
{
    size_t rb = sl_row_bytes(type, n_in);
    unsigned char *w = malloc(rb * (size_t)n_out);
    float *row = malloc(sizeof(float) * (size_t)n_in);
    float *x = malloc(sizeof(float) * (size_t)n_in * (size_t)n_tok);
    float *y = malloc(sizeof(float) * (size_t)n_out * (size_t)n_tok);
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
    for (size_t i = 0; i < (size_t)n_in * (size_t)n_tok; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)(s >> 8) / 16777216.0f - 0.5f;
    }
    void *packed = sl_pack(type, w, n_out, n_in);
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = cpu_s();
        sl_matmul_packed(type, w, packed, n_out, n_in, x, n_tok, y, n_out);
        double t = cpu_s() - t0;
        best = t < best ? t : best;
    }
    printf("  %-5s %5d x %-5d %3d tokens: %8.3f ms  %6.1f GOP/s%s\n", name, n_out, n_in, n_tok,
           best * 1e3, 2.0 * n_out * (double)n_in * n_tok / best / 1e9,
           packed ? "" : "  (row layout)");
    sl_pack_free(packed);
    free(w);
    free(row);
    free(x);
    free(y);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: prefill_cost TYPE [TOKENS [REPS [THREADS [N_OUT N_IN]]]]\n");
        return 2;
    }
    sl_type type = sl_type_from_name(argv[1]);
    int n_tok = argc > 2 ? atoi(argv[2]) : 512, reps = argc > 3 ? atoi(argv[3]) : 5;
    n_threads = argc > 4 ? atoi(argv[4]) : 1;
    if ((int)type < 0 || n_tok < 1 || reps < 1 || n_threads < 1) {
        fprintf(stderr, "prefill_cost: bad type '%s', TOKENS, REPS or THREADS\n", argv[1]);
        return 2;
    }
    sl_pool_set_threads(n_threads);
    if (n_threads > 1)
        sl_pool_set_adaptive(false);
    printf("%s, %d thread%s (%s), best of %d\n", argv[1], n_threads, n_threads > 1 ? "s" : "",
           n_threads > 1 ? "wall time" : "CPU time", reps);
    if (argc > 6)
        return run_shape(type, "shape", atoi(argv[5]), atoi(argv[6]), n_tok, reps);
    return run_shape(type, "up", 6912, 1152, n_tok, reps) ||
           run_shape(type, "down", 1152, 6912, n_tok, reps);
}
