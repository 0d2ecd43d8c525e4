/* The attention spans of one layer's speculative verification against a
 * decode step's, on one thread in CPU time (readable on a busy machine):
 * Gemma 3 1B's shape (one KV head of 256 dims, 4 query heads, f32 rows), K
 * tokens at positions POS .. POS+K-1, each seeing a 512-key window (a local
 * layer) or every key (a global one), their spans grouped and called as
 * model/forward.c's attention does (the tokens of one block of keys and
 * first key in sl_attn_span_multi calls of up to sl_attn_multi_tokens, the
 * rest alone); the decode step is the token at POS alone. Best of R
 * repetitions of each, alternating; before each the keys and values are
 * pushed out of the caches (a 64 MB pass), as a forward pass's weights do
 * between layers.
 *
 * Not built by CMake; bench/attn_cost.sh builds and runs it:
 *   bench/attn_cost.sh [POS [K [R [COLD]]]]   (default 576 5 30 1; COLD 0:
 * no eviction, the keys and values in L2/L3, for a profile of the kernels) */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "kernels/attn.h"

static double cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

enum { HD = 256, NG = 4, WINDOW = 512, MAXK = 16 };

static float *evict;
static size_t evict_n = (size_t)16 << 20; /* floats: 64 MB */
static volatile float sink;

static void flush(void)
{
    float s = 0;
    for (size_t i = 0; i < evict_n; i += 16) {
        evict[i] += 1.0f;
        s += evict[i];
    }
    sink = s;
}

/* Every span of tokens pos[0 .. k-1] as forward.c runs them: block by block,
 * runs of tokens with one first key in sl_attn_span_multi calls. */
static void step(const sl_attn_q *base, const float *q, const int64_t *pos, int k, int window,
                 float *partmem)
{
    int most = sl_attn_multi_tokens(HD, NG);
    int64_t pf = sl_attn_part_floats(HD, NG), maxp = pos[k - 1];
    int used = 0;
    for (int64_t blk = 0; blk * SL_ATTN_SPAN <= maxp; blk++) {
        int64_t s0[MAXK], s1[MAXK];
        int has[MAXK];
        for (int t = 0; t < k; t++) {
            int64_t j0 = window > 0 && pos[t] - window + 1 > 0 ? pos[t] - window + 1 : 0;
            int64_t a = blk * SL_ATTN_SPAN > j0 ? blk * SL_ATTN_SPAN : j0;
            int64_t b = (blk + 1) * SL_ATTN_SPAN < pos[t] + 1 ? (blk + 1) * SL_ATTN_SPAN : pos[t] + 1;
            has[t] = a < b;
            s0[t] = a;
            s1[t] = b;
        }
        for (int t = 0; t < k;) {
            if (!has[t]) {
                t++;
                continue;
            }
            int n = 1;
            while (t + n < k && n < most && has[t + n] && s0[t + n] == s0[t])
                n++;
            const float *qt[MAXK];
            sl_attn_part part[MAXK];
            for (int i = 0; i < n; i++) {
                qt[i] = q + (t + i) * NG * HD;
                part[i] = sl_attn_part_at(partmem + (used++) * pf, NG);
            }
            sl_attn_q a = *base;
            a.q = qt[0];
            if (n == 1)
                sl_attn_span(&a, s0[t], s1[t], &part[0]);
            else
                sl_attn_span_multi(&a, qt, n, s0[t], s1 + t, part);
            t += n;
        }
    }
}

int main(int argc, char **argv)
{
    int64_t pos0 = argc > 1 ? atoll(argv[1]) : 576;
    int k = argc > 2 ? atoi(argv[2]) : 5, reps = argc > 3 ? atoi(argv[3]) : 30;
    int cold = argc > 4 ? atoi(argv[4]) : 1;
    if (pos0 < 1 || k < 2 || k > MAXK || reps < 1) {
        fprintf(stderr, "usage: attn_cost [POS [K (2..%d) [R [COLD]]]]\n", MAXK);
        return 2;
    }
    int64_t n_pos = pos0 + k;
    float *kv = malloc(sizeof(float) * (size_t)(2 * n_pos * HD));
    float *q = malloc(sizeof(float) * (size_t)(k * NG * HD));
    float *parts = malloc(sizeof(float) * (size_t)(k * (n_pos / SL_ATTN_SPAN + 2)) *
                          (size_t)sl_attn_part_floats(HD, NG));
    evict = malloc(sizeof(float) * evict_n);
    if (!kv || !q || !parts || !evict)
        return 1;
    unsigned s = 1;
    for (int64_t i = 0; i < 2 * n_pos * HD; i++) {
        s = s * 1664525u + 1013904223u;
        kv[i] = (float)(s >> 8) / 16777216.0f - 0.5f;
    }
    for (int i = 0; i < k * NG * HD; i++) {
        s = s * 1664525u + 1013904223u;
        q[i] = (float)(s >> 8) / 16777216.0f - 0.5f;
    }
    for (size_t i = 0; i < evict_n; i++)
        evict[i] = 0.0f;
    sl_attn_q base = {.q = q,
                      .q_stride = HD,
                      .k = kv,
                      .v = kv + n_pos * HD,
                      .pos0 = 0,
                      .row_bytes = HD * (int64_t)sizeof(float),
                      .kv_type = SL_TYPE_F32,
                      .head_dim = HD,
                      .n_group = NG,
                      .scale = 0.0625f,
                      .softcap = 0.0f};
    int64_t pos[MAXK];
    for (int t = 0; t < k; t++)
        pos[t] = pos0 + t;
    printf("attention spans, 1 KV head x %d dims, %d query heads, f32, 1 thread (CPU time), "
           "best of %d, %s\n", HD, NG, reps,
           cold ? "keys evicted before each" : "keys in cache");
    for (int w = 0; w < 2; w++) {
        int window = w == 0 ? WINDOW : 0;
        double best1 = 1e30, bestk = 1e30;
        for (int r = 0; r < reps; r++) {
            if (cold)
                flush();
            double t0 = cpu_s();
            step(&base, q, pos, 1, window, parts);
            double t1 = cpu_s() - t0;
            if (cold)
                flush();
            t0 = cpu_s();
            step(&base, q, pos, k, window, parts);
            double tk = cpu_s() - t0;
            best1 = t1 < best1 ? t1 : best1;
            bestk = tk < bestk ? tk : bestk;
        }
        printf("  %s layer at %lld: 1 token %7.1f us, %d tokens %7.1f us (%.2fx)\n",
               window ? "local " : "global", (long long)pos0, best1 * 1e6, k, bestk * 1e6,
               bestk / best1);
    }
    free(kv);
    free(q);
    free(parts);
    free(evict);
    return 0;
}
