/* Flash attention (kernels/attn.h) on every kernel path against the plain
 * definition computed in double: odd head sizes, GQA groups of 1 to 11
 * heads, key ranges that start and end inside spans and tiles, windows,
 * soft-capping. And the split contract: spans computed in any order and
 * combined give the bits of one sl_attn call. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels/attn.h"
#include "kernels/cpu.h"
#include "kernels/quant.h"
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
    s->a = (sl_attn_q){.q = s->q,
                       .q_stride = hd + 5,
                       .k = s->k,
                       .v = s->v,
                       .pos0 = 0,
                       .row_bytes = stride * (int64_t)sizeof(float),
                       .kv_type = SL_TYPE_F32,
                       .head_dim = hd,
                       .n_group = ng,
                       .scale = 1.0f / sqrtf((float)hd),
                       .softcap = softcap};
}

/* Re-stores the keys and values as rows of type t (the oracle decodes the
 * same rows, so only the kernels' arithmetic is under test). */
static void setup_retype(setup *s, sl_type t, void **kbuf, void **vbuf)
{
    size_t rb = sl_row_bytes(t, s->hd);
    uint8_t *kb = malloc(rb * (size_t)s->n_pos), *vb = malloc(rb * (size_t)s->n_pos);
    int64_t stride = s->hd + 3;
    for (int64_t j = 0; j < s->n_pos; j++) {
        sl_quantize_row(t, s->k + j * stride, kb + (size_t)j * rb, s->hd);
        sl_quantize_row(t, s->v + j * stride, vb + (size_t)j * rb, s->hd);
    }
    s->a.k = kb;
    s->a.v = vb;
    s->a.row_bytes = (int64_t)rb;
    s->a.kv_type = t;
    *kbuf = kb;
    *vbuf = vb;
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

static void check_case_typed(int hd, int ng, int64_t j0, int64_t j1, float qscale, float softcap,
                             sl_type kv_type)
{
    setup s;
    setup_make(&s, hd, ng, j1, qscale, softcap);
    void *kbuf = NULL, *vbuf = NULL;
    if (kv_type != SL_TYPE_F32)
        setup_retype(&s, kv_type, &kbuf, &vbuf);
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
        CHECKF(worst <= tol, "%s %s hd %d group %d keys [%lld, %lld) cap %g: error %.3g > %.3g",
               sl_path_name((sl_path)path), sl_type_name(kv_type), hd, ng, (long long)j0,
               (long long)j1, softcap, worst, tol);
        /* spans in reverse order, each into its own partial, then combined */
        sl_attn_part parts[64]; /* up to 1500 keys: 13 spans */
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
        /* the combination has the scalar loop's bits on every path */
        CHECK(sl_path_force((sl_path)0) == 0);
        sl_attn_combine(parts, n_spans, hd, ng, got, ostride);
        CHECK(sl_path_force((sl_path)path) == 0);
        same = 1;
        for (int g = 0; g < ng; g++)
            same &= memcmp(again + g * ostride, got + g * ostride, sizeof(float) * (size_t)hd) == 0;
        CHECKF(same, "%s: spans combined differ from the scalar combination",
               sl_path_name((sl_path)path));
    }
    free(want);
    free(got);
    free(again);
    free(work);
    free(kbuf);
    free(vbuf);
    setup_free(&s);
}

static void check_case(int hd, int ng, int64_t j0, int64_t j1, float qscale, float softcap)
{
    check_case_typed(hd, ng, j0, j1, qscale, softcap, SL_TYPE_F32);
}

static void test_spans(void)
{
    CHECK(sl_attn_n_spans(0, 1) == 1);
    CHECK(sl_attn_n_spans(0, SL_ATTN_SPAN) == 1);
    CHECK(sl_attn_n_spans(0, SL_ATTN_SPAN + 1) == 2);
    CHECK(sl_attn_n_spans(SL_ATTN_SPAN - 1, SL_ATTN_SPAN + 1) == 2);
    CHECK(sl_attn_n_spans(5, 5) == 0);
    int64_t s0, s1;
    /* spans start at multiples of SL_ATTN_SPAN, clipped to the range */
    int64_t j0 = 5 * SL_ATTN_SPAN + 60, j1 = 8 * SL_ATTN_SPAN + 7;
    CHECK(sl_attn_n_spans(j0, j1) == 4);
    sl_attn_span_bounds(j0, j1, 0, &s0, &s1);
    CHECK(s0 == j0 && s1 == 6 * SL_ATTN_SPAN);
    sl_attn_span_bounds(j0, j1, 1, &s0, &s1);
    CHECK(s0 == 6 * SL_ATTN_SPAN && s1 == 7 * SL_ATTN_SPAN);
    sl_attn_span_bounds(j0, j1, 3, &s0, &s1);
    CHECK(s0 == 8 * SL_ATTN_SPAN && s1 == j1);
}

/* The group sizes with kernels of their own (1, 2, 4, 8 on AVX-512: two
 * keys a score step, two runs of 16 dims a value step up to four heads)
 * give each head the bits it gets in a group the general kernel takes (11
 * heads: subgroups of 8 and 3), on every path: a head's arithmetic never
 * depends on the other heads of its group. Odd key counts end tiles on a
 * single key; head sizes of 80 and 48 end on a single run of 16 dims. */
static void check_groups(int hd, int64_t j0, int64_t j1, float softcap)
{
    setup s;
    setup_make(&s, hd, 11, j1, 2.0f, softcap);
    int64_t ostride = hd + 1;
    float *all = malloc(sizeof(float) * (size_t)(11 * ostride));
    float *got = malloc(sizeof(float) * (size_t)(8 * ostride));
    float *work = malloc(sizeof(float) * (size_t)(sl_attn_n_spans(j0, j1) *
                                                   sl_attn_part_floats(hd, 11)));
    static const int sizes[] = {1, 2, 4, 8};
    for (int path = 0; path <= (int)sl_path_best(); path++) {
        CHECK(sl_path_force((sl_path)path) == 0);
        sl_attn(&s.a, j0, j1, all, ostride, work);
        for (int k = 0; k < 4; k++) {
            for (int h0 = 0; h0 + sizes[k] <= 11; h0 += sizes[k]) {
                sl_attn_q a = s.a;
                a.n_group = sizes[k];
                a.q = s.q + h0 * a.q_stride;
                sl_attn(&a, j0, j1, got, ostride, work);
                int same = 1;
                for (int g = 0; g < sizes[k]; g++)
                    same &= memcmp(got + g * ostride, all + (h0 + g) * ostride,
                                   sizeof(float) * (size_t)hd) == 0;
                CHECKF(same, "%s hd %d keys [%lld, %lld) cap %g: heads %d..%d in a group of %d "
                       "differ from a group of 11", sl_path_name((sl_path)path), hd,
                       (long long)j0, (long long)j1, softcap, h0, h0 + sizes[k] - 1, sizes[k]);
            }
        }
    }
    free(all);
    free(got);
    free(work);
    setup_free(&s);
}

#if defined(__x86_64__)
float sl_attn_tile_max_avx512(const float *s, int nt, float m);

/* The AVX-512 kernels' tile max against the scalar loop it stands for
 * (mx = s[j] > mx ? s[j] : mx from m), bit for bit: ties of the largest
 * value, -0 and +0 (the loop keeps the first), NaNs (skipped), -inf, every
 * tile length. */
static void check_tile_max(void)
{
    if (sl_path_best() < SL_PATH_AVX512)
        return;
    float s[SL_ATTN_TILE];
    static const float picks[] = {0.0f, -0.0f, 1.5f, -2.0f, NAN, -INFINITY, 3.0f, -0.0f};
    static const float inits[] = {-INFINITY, 0.0f, -0.0f, 1.5f, 3.0f, -5.0f};
    int bad = 0;
    for (int round = 0; round < 400; round++)
        for (int nt = 1; nt <= SL_ATTN_TILE; nt++) {
            for (int j = 0; j < nt; j++) {
                float r = rnd();
                /* mostly a few values (ties, zeros), sometimes any */
                s[j] = round % 4 == 3 ? r * 4.0f : picks[(int)((r + 1.0f) * 4.0f) & 7];
                if (round % 4 == 2 && s[j] > 0.0f)
                    s[j] = -s[j]; /* no positive value: zeros are the largest */
            }
            float m = inits[round % 6], want = m;
            for (int j = 0; j < nt; j++)
                want = s[j] > want ? s[j] : want;
            float got = sl_attn_tile_max_avx512(s, nt, m);
            bad += memcmp(&got, &want, sizeof got) != 0;
        }
    CHECKF(bad == 0, "tile max differs from the scalar loop in %d cases", bad);
}
#endif

/* sl_attn_span_multi: each token's partial (m, l and o) has the bits of
 * sl_attn_span for that token alone, on every path, whatever tokens share
 * the call: one start (a span's first key or a window's start inside it),
 * ends scattered over the span so tokens leave it in different tiles, on a
 * tile's last key or one past it, and batches of every size from 1 to 17
 * (the AVX-512 kernel's chunks of 8 queries, the queries left over, its
 * 32 queries a call and the tokens after them). One token's query is zero
 * (its scores all zero: the tile max's zero case). */
static void check_multi(int hd, int ng, int64_t s0, float softcap, sl_type kv_type)
{
    enum { NT = 17 };
    int64_t blk = s0 - s0 % SL_ATTN_SPAN, end = blk + SL_ATTN_SPAN;
    setup s;
    setup_make(&s, hd, ng, end + 1, 2.0f, softcap);
    void *kbuf = NULL, *vbuf = NULL;
    if (kv_type != SL_TYPE_F32)
        setup_retype(&s, kv_type, &kbuf, &vbuf);
    float *q = malloc(sizeof(float) * (size_t)(NT * ng * hd));
    for (int i = 0; i < NT * ng * hd; i++)
        q[i] = i / (ng * hd) == 5 ? 0.0f : rnd() * 2.0f;
    const float *qt[NT];
    int64_t s1[NT];
    /* ends: one key, both sides of the tile edge, the span's last keys */
    static const int64_t ends[NT] = {65, 64, 1, 128, 66, 63, 127, 2, 100, 64, 33, 128, 70, 5, 64, 96, 127};
    for (int t = 0; t < NT; t++) {
        qt[t] = q + t * ng * hd;
        int64_t e = blk + ends[t];
        s1[t] = e <= s0 ? s0 + 1 : e;
    }
    int64_t pf = sl_attn_part_floats(hd, ng);
    float *want = malloc(sizeof(float) * (size_t)(NT * pf));
    float *got = malloc(sizeof(float) * (size_t)(NT * pf));
    sl_attn_part pw[NT], pg[NT];
    for (int path = 0; path <= (int)sl_path_best(); path++) {
        CHECK(sl_path_force((sl_path)path) == 0);
        for (int t = 0; t < NT; t++) {
            sl_attn_q a = s.a;
            a.q = qt[t];
            a.q_stride = hd;
            pw[t] = sl_attn_part_at(want + t * pf, ng);
            sl_attn_span(&a, s0, s1[t], &pw[t]);
        }
        for (int n = 1; n <= NT; n++)
            for (int t0 = 0; t0 + n <= NT; t0 += n) {
                sl_attn_q a = s.a;
                a.q_stride = hd;
                for (int i = 0; i < pf * NT; i++)
                    got[i] = -7.0f;
                for (int t = 0; t < n; t++)
                    pg[t] = sl_attn_part_at(got + (t0 + t) * pf, ng);
                sl_attn_span_multi(&a, qt + t0, n, s0, s1 + t0, pg);
                int same = 1;
                for (int t = t0; t < t0 + n; t++)
                    same &= memcmp(got + t * pf, want + t * pf, sizeof(float) * (size_t)pf) == 0;
                CHECKF(same, "%s %s hd %d group %d start %lld cap %g: tokens %d..%d together "
                       "differ from each alone", sl_path_name((sl_path)path),
                       sl_type_name(kv_type), hd, ng, (long long)s0, softcap, t0, t0 + n - 1);
            }
    }
    free(q);
    free(want);
    free(got);
    free(kbuf);
    free(vbuf);
    setup_free(&s);
}

int main(void)
{
    test_spans();
#if defined(__x86_64__)
    check_tile_max();
#endif
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
    check_groups(256, 0, 301, 0.0f);
    check_groups(80, 3, 200, 0.0f);
    check_groups(48, 0, 67, 30.0f);
    check_groups(64, 100, 357, 0.0f);
    /* Gemma 3 1B's decode shape (a KV head of 256 dims, 4 query heads, a
     * 512-key window at position 512): the prefetching four-head kernel
     * against the oracle, in spans out of order, and against the group of 11 */
    check_case(256, 4, 1, 513, 1.0f, 0.0f);
    check_groups(256, 1, 513, 0.0f);
    /* keys and values stored as F16, BF16 and Q8_0 rows */
    static const sl_type kv_types[] = {SL_TYPE_F16, SL_TYPE_BF16, SL_TYPE_Q8_0};
    for (int t = 0; t < 3; t++) {
        check_case_typed(64, 4, 0, 300, 1.0f, 0.0f, kv_types[t]);
        check_case_typed(256, 2, 130, 700, 2.0f, 0.0f, kv_types[t]);
        check_case_typed(32, 1, 5, 77, 1.0f, 30.0f, kv_types[t]);
    }
    /* several tokens a call (prefill, verification) against one at a time */
    static const int mhds[] = {64, 128, 256, 80, 48, 24};
    static const int mgroups[] = {1, 2, 4, 8, 3};
    for (size_t h = 0; h < sizeof mhds / sizeof mhds[0]; h++)
        for (size_t g = 0; g < sizeof mgroups / sizeof mgroups[0]; g++) {
            check_multi(mhds[h], mgroups[g], 0, 0.0f, SL_TYPE_F32);
            check_multi(mhds[h], mgroups[g], SL_ATTN_SPAN + 37, 30.0f, SL_TYPE_F32);
        }
    check_multi(256, 4, 2 * SL_ATTN_SPAN, 0.0f, SL_TYPE_F16);
    check_multi(64, 2, 70, 0.0f, SL_TYPE_Q8_0);
    return test_finish("test_attn");
}
