/* Flash attention (kernels/attn.h) on every kernel path against the plain
 * definition computed in double: odd head sizes, GQA groups of 1 to 11
 * heads, key ranges that start and end inside spans and tiles, windows,
 * soft-capping. And the split contract: spans computed in any order and
 * combined give the bits of one sl_attn call. */
#include <stdint.h>

#include "kernels/attn.h"
#include "kernels/cpu.h"
#include "tests/test.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static float rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 * 2 - 1);
}

typedef struct setup {
    int hd, ng;
    int64_t n_pos;
    float *q, *k, *v;
    sl_attn_q a;
} setup;

static void setup_make(setup *s, int hd, int ng, int64_t n_pos, float qscale, float softcap)
{
    s->hd = hd;
    s->ng = ng;
    s->n_pos = n_pos;
    int64_t stride = hd + 3; /* positions further apart than a head, as in a cache of several heads */
    s->q = malloc(sizeof(float) * (size_t)(ng * (hd + 5)));
    s->k = malloc(sizeof(float) * (size_t)(n_pos * stride));
    s->v = malloc(sizeof(float) * (size_t)(n_pos * stride));
    for (int i = 0; i < ng * (hd + 5); i++)
        s->q[i] = rnd() * qscale;
    for (int64_t i = 0; i < n_pos * stride; i++) {
        s->k[i] = rnd();
        s->v[i] = rnd();
    }
    s->a = (sl_attn_q){s->q, hd + 5, s->k, s->v, stride, hd, ng, 1.0f / sqrtf((float)hd), softcap};
}

static void setup_free(setup *s)
{
    free(s->q);
    free(s->k);
    free(s->v);
}

/* Bound: the outputs are convex combinations of values in [-1, 1]. A float
 * score is off by at most head_dim roundings of 2^-24 times sum |q k| times
 * the scale (worst case), which moves each probability by that factor
 * relatively: twice that on the output. The sums over n keys add n
 * roundings and the vector exp 2e-7 relative; 16x those. A dropped key, a
 * missed rescale or a wrong tile edge costs 1e-2 and more here. */
static double bound(const setup *s, int64_t n_keys, float qscale)
{
    double score_err = s->hd * 0x1p-24 * qscale * s->hd / sqrt((double)s->hd);
    return 2 * score_err + 16 * ((n_keys + 8) * 0x1p-24 + 2e-7);
}

static void check_case(int hd, int ng, int64_t j0, int64_t j1, float qscale, float softcap)
{
    setup s;
    setup_make(&s, hd, ng, j1, qscale, softcap);
    int64_t ostride = hd + 1;
    float *want = malloc(sizeof(float) * (size_t)(ng * ostride));
    float *got = malloc(sizeof(float) * (size_t)(ng * ostride));
    float *again = malloc(sizeof(float) * (size_t)(ng * ostride));
    int64_t n_spans = sl_attn_n_spans(j0, j1), pf = sl_attn_part_floats(hd, ng);
    float *work = malloc(sizeof(float) * (size_t)(n_spans * pf));
    sl_attn_naive(&s.a, j0, j1, want, ostride);
    double tol = bound(&s, j1 - j0, qscale);
    for (int path = 0; path <= (int)sl_path_best(); path++) {
        CHECK(sl_path_force((sl_path)path) == 0);
        sl_attn(&s.a, j0, j1, got, ostride, work);
        double worst = 0;
        for (int g = 0; g < ng; g++)
            for (int d = 0; d < hd; d++) {
                double e = fabs(got[g * ostride + d] - want[g * ostride + d]);
                worst = e > worst || isnan(e) ? e : worst;
            }
        CHECKF(worst <= tol, "%s hd %d group %d keys [%lld, %lld) cap %g: error %.3g > %.3g",
               sl_path_name((sl_path)path), hd, ng, (long long)j0, (long long)j1, softcap, worst, tol);
        /* spans in reverse order, each into its own partial, then combined */
        sl_attn_part parts[64];
        for (int64_t sp = n_spans - 1; sp >= 0; sp--) {
            int64_t s0, s1;
            sl_attn_span_bounds(j0, j1, sp, &s0, &s1);
            CHECK(s0 < s1 && s0 >= j0 && s1 <= j1);
            parts[sp] = sl_attn_part_at(work + sp * pf, ng);
            sl_attn_span(&s.a, s0, s1, &parts[sp]);
        }
        sl_attn_combine(parts, n_spans, hd, ng, again, ostride);
        int same = 1;
        for (int g = 0; g < ng; g++)
            same &= memcmp(again + g * ostride, got + g * ostride, sizeof(float) * (size_t)hd) == 0;
        CHECKF(same, "%s: spans combined differ from sl_attn", sl_path_name((sl_path)path));
    }
    free(want);
    free(got);
    free(again);
    free(work);
    setup_free(&s);
}

static void test_spans(void)
{
    CHECK(sl_attn_n_spans(0, 1) == 1);
    CHECK(sl_attn_n_spans(0, SL_ATTN_SPAN) == 1);
    CHECK(sl_attn_n_spans(0, SL_ATTN_SPAN + 1) == 2);
    CHECK(sl_attn_n_spans(SL_ATTN_SPAN - 1, SL_ATTN_SPAN + 1) == 2);
    CHECK(sl_attn_n_spans(5, 5) == 0);
    int64_t s0, s1;
    sl_attn_span_bounds(700, 1700, 1, &s0, &s1);
    CHECK(s0 == 1024 && s1 == 1536);
    sl_attn_span_bounds(700, 1700, 2, &s0, &s1);
    CHECK(s0 == 1536 && s1 == 1700);
}

int main(void)
{
    test_spans();
    static const int hds[] = {16, 64, 80, 256, 24};
    static const int groups[] = {1, 2, 4, 11};
    static const int64_t ranges[][2] = {{0, 1}, {0, 63}, {0, 65}, {3, 200}, {500, 1100}, {0, 1500}};
    for (size_t h = 0; h < sizeof hds / sizeof hds[0]; h++)
        for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++)
            for (size_t r = 0; r < sizeof ranges / sizeof ranges[0]; r++) {
                if (hds[h] == 256 && ranges[r][1] > 1000 && groups[g] > 2)
                    continue; /* keeps the double-precision oracle quick */
                check_case(hds[h], groups[g], ranges[r][0], ranges[r][1], 1.0f, 0.0f);
            }
    /* peaked scores (large q) stress the running max; soft-capping as gemma2 */
    check_case(64, 4, 10, 900, 8.0f, 0.0f);
    check_case(64, 2, 0, 700, 8.0f, 50.0f);
    check_case(128, 3, 100, 600, 30.0f, 50.0f);
    return test_finish("test_attn");
}
