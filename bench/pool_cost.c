/* What a second thread gains on one decode-sized matmul, by its work: a
 * one-token matmul of n_out x n_in (bf16 as the tiny model's, q4_0 as synth
 * Gemma 3 1B's), run as an op of a pool region (the workers already in it,
 * as between the ops of a layer step) on 1 and on 2 threads, cycling
 * through enough matrices (48 MB) that their weights come from memory or
 * L3 as a decode step's do. Wall time, median and fastest of many ops, and
 * the 2-thread/1-thread ratio: the work where it crosses 1 is where
 * SL_POOL_MIN_WORK_DEFAULT (util/pool.h) belongs. usage: pool_cost [TYPE
 * [TOKENS]] (TOKENS 1: a decode step; more: a batch, where the
 * multiply-adds count too); the work column is sl_pool_work's.
 *
 * Not built by CMake; bench/pool_cost.sh builds and runs it. Run it under
 * `flock /tmp/sluice-bench.lock chrt -f 20` on a shared machine. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/matmul.h"
#include "kernels/quant.h"
#include "util/pool.h"

#define REPS 400
#define SET_BYTES (48u << 20)

typedef struct mats {
    sl_type type;
    int64_t n_out, n_in, tok;
    int n;
    void **w, **packed;
    float *x, *y;
    double t[REPS];
} mats;

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void region(void *arg)
{
    mats *m = arg;
    for (int r = 0; r < REPS; r++) {
        int i = r % m->n;
        uint64_t t0 = sl_pool_now_ns();
        sl_matmul_packed(m->type, m->w[i], m->packed[i], m->n_out, m->n_in, m->x, m->tok, m->y,
                         m->n_out);
        m->t[r] = (double)(sl_pool_now_ns() - t0) * 1e-3;
    }
}

/* median and fastest op, microseconds */
static void time_ops(mats *m, int threads, double *med, double *best)
{
    sl_pool_set_threads(threads);
    double all[4 * REPS];
    for (int k = 0; k < 4; k++) { /* regions as long as a few layer steps */
        sl_pool_region(region, m);
        memcpy(all + k * REPS, m->t, sizeof m->t);
    }
    qsort(all, 4 * REPS, sizeof(double), cmp);
    *med = all[2 * REPS];
    *best = all[0];
}

int main(int argc, char **argv)
{
    const char *types[] = {"bf16", "q4_0"};
    const int64_t n_ins[] = {256, 1152};
    sl_pool_set_adaptive(false);
    sl_pool_set_min_work(0); /* every op splits when there are threads */
    int only = argc > 1 ? (strcmp(argv[1], "q4_0") == 0) : -1;
    int64_t tok = argc > 2 ? atoi(argv[2]) : 1;
    if (tok < 1 || tok > 64) {
        fprintf(stderr, "pool_cost: TOKENS from 1 to 64\n");
        return 2;
    }
    printf("%lld token(s) a call\n", (long long)tok);
    printf("%-5s %8s %6s %10s  %9s %9s  %9s %9s  %6s %6s\n", "type", "n_out", "n_in", "work",
           "1t med", "1t best", "2t med", "2t best", "2t/1t", "best");
    for (int ti = 0; ti < 2; ti++) {
        if (only >= 0 && only != ti)
            continue;
        sl_type type = sl_type_from_name(types[ti]);
        int64_t n_in = n_ins[ti];
        size_t rb = sl_row_bytes(type, n_in);
        float *row = malloc(sizeof(float) * (size_t)n_in);
        for (int64_t n_out = 64; n_out * n_in * tok <= (int64_t)1 << 23; n_out *= 2) {
            mats m = {type, n_out, n_in, tok, (int)(SET_BYTES / (rb * (size_t)n_out)), 0, 0, 0, 0,
                      {0}};
            if (m.n < 1)
                m.n = 1;
            if (m.n > REPS)
                m.n = REPS;
            m.w = calloc((size_t)m.n, sizeof(void *));
            m.packed = calloc((size_t)m.n, sizeof(void *));
            m.x = malloc(sizeof(float) * (size_t)(n_in * tok));
            m.y = malloc(sizeof(float) * (size_t)(n_out * tok));
            unsigned s = 1;
            for (int i = 0; i < m.n; i++) {
                m.w[i] = malloc(rb * (size_t)n_out);
                for (int64_t o = 0; o < n_out; o++) {
                    for (int64_t c = 0; c < n_in; c++) {
                        s = s * 1664525u + 1013904223u;
                        row[c] = (float)(s >> 8) / 16777216.0f - 0.5f;
                    }
                    sl_quantize_row(type, row, (uint8_t *)m.w[i] + (size_t)o * rb, n_in);
                }
                m.packed[i] = sl_pack(type, m.w[i], n_out, n_in);
            }
            for (int64_t c = 0; c < n_in * tok; c++)
                m.x[c] = (float)(c % 17) / 17.0f - 0.5f;
            double m1, b1, m2, b2;
            time_ops(&m, 1, &m1, &b1);
            time_ops(&m, 2, &m2, &b2);
            printf("%-5s %8lld %6lld %10lld  %9.2f %9.2f  %9.2f %9.2f  %6.2f %6.2f\n", types[ti],
                   (long long)n_out, (long long)n_in,
                   (long long)sl_pool_work((int64_t)rb * n_out, n_out * n_in * tok), m1, b1, m2, b2,
                   m2 / m1, b2 / b1);
            for (int i = 0; i < m.n; i++) {
                sl_pack_free(m.packed[i]);
                free(m.w[i]);
            }
            free(m.w);
            free(m.packed);
            free(m.x);
            free(m.y);
        }
        free(row);
    }
    return 0;
}
