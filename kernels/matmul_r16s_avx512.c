/* Small batches (2 to 8 tokens: a speculative verification step) on the
 * 16-row packed weights of matmul_r16_avx512.c, two groups of 16 rows at a
 * time. One broadcast of a token's 4 activation quants feeds the vpdpbusd
 * of both groups, and the token's per-block values (its scale, the sum
 * that takes off the weights' offset) are loaded once for 32 rows: per
 * block and token the one-group tile spends about as many instructions on
 * those as on its multiply-adds, which left 5 tokens compute-bound where 1
 * streams at the read bandwidth.
 *
 * Each (row, token) lane runs the one-group tile's float operations in its
 * order on the same values (the scales' products, the conversions, the
 * FMAs into the accumulator); only the integer sums are formed in another
 * order, and those are exact. So any mix of paired and single groups gives
 * the bits the one-group tiles give, whatever the thread count.
 *
 * Up to R16S_T tokens share a pass (accumulators and integer sums of both
 * groups stay in registers); 6 to 8 tokens run as two passes over the
 * pair's weights, the second from cache. */
#include <immintrin.h>
#include <string.h>

#include "kernels/matmul_internal.h"
#include "kernels/matmul_r16_b32_avx512.h"

#define R16S_INLINE static inline __attribute__((always_inline))
#define R16S_UNROLL _Pragma("GCC unroll 16")
#define R16S_T 5
/* Software prefetch into L2 this many bytes ahead of each of the two weight
 * streams. Tiles of several tokens spend longer on a block than a decode
 * step, so a distance in bytes is a longer time ahead than in the one-group
 * tiles (3 KB, matmul_r16_avx512.c's R16_PF_DIST); still, 3 KB left the
 * loads of a 5-token pass over Gemma 3 1B's head (262144 x 1152 Q4_0, 2
 * threads) waiting on memory: the pass took about the sum of its compute
 * and its reads (4.3-4.5 ms against 2.4-2.6 ms for one token), and 16 KB
 * ahead it takes 2.7-3.0 ms (12 KB 3.0-3.2, 24-32 KB as 16). Q4_K gains
 * alike (65536 rows, 5 tokens: 1.0-1.1 -> 0.7-0.8 ms), Q6_K is the same
 * either way, and Q8_0 (twice the bytes a block) was slower at 16 KB
 * (1.4-1.5 -> 1.9 ms), so it keeps 3 KB. */
#define R16S_PF_DIST 16384
#define R16S_PF_DIST_Q8_0 3072

R16S_INLINE void s_prefetch_at(const uint8_t *p, const int bytes, const int dist)
{
    R16S_UNROLL
    for (int i = 0; i < bytes; i += 64)
        _mm_prefetch((const char *)p + dist + i, _MM_HINT_T1);
}

R16S_INLINE void s_prefetch(const uint8_t *p, const int bytes)
{
    s_prefetch_at(p, bytes, R16S_PF_DIST);
}

R16S_INLINE __m512i s_bcast(const int8_t *q)
{
    int32_t v;
    memcpy(&v, q, 4);
    return _mm512_set1_epi32(v);
}

/* The lanes' start: 0, or y when a carries the slices before. */
R16S_INLINE void s_start(__m512 *acc, const float *y, int64_t ldy, const sl_q8act *a, int T)
{
    R16S_UNROLL
    for (int t = 0; t < T; t++)
        acc[t] = a->carry ? _mm512_loadu_ps(y + t * ldy) : _mm512_setzero_ps();
}

R16S_INLINE void s_store(float *y, const __m512 *acc, int64_t ldy, int T)
{
    R16S_UNROLL
    for (int t = 0; t < T; t++)
        _mm512_storeu_ps(y + t * ldy, acc[t]);
}

/* Q4_0, Q4_1, Q5_0, Q5_1: per block, the 4 dwords k of each row's nibbles
 * (and fifth bits) of both groups, unpacked in turn; each token's quants
 * broadcast once for both. */
R16S_INLINE void pair_b32(const int kind, const uint8_t *p0, const uint8_t *p1,
                          const sl_q8act *a, int64_t t0, float *y, int64_t ldy, const int T)
{
    const r16_b32_fmt f = r16_b32_fmt_of(kind);
    const int has_min = f.has_min, has_hi = f.has_hi, off = f.off;
    const size_t bytes = f.bytes;
    __m512 acc0[R16S_T], acc1[R16S_T];
    s_start(acc0, y, ldy, a, T);
    s_start(acc1, y + 16, ldy, a, T);
    for (int64_t b = 0; b < a->n_blocks; b++, p0 += bytes, p1 += bytes) {
        s_prefetch(p0, (int)bytes);
        s_prefetch(p1, (int)bytes);
        __m512i i0[R16S_T], i1[R16S_T];
        R16S_UNROLL
        for (int t = 0; t < T; t++)
            i0[t] = i1[t] = off ? _mm512_set1_epi32(-off * a->sum[(t0 + t) * (a->ld_in / 32) + b])
                                : _mm512_setzero_si512();
        const uint8_t *qs0 = p0 + (has_min ? 64 : 32), *qs1 = p1 + (has_min ? 64 : 32);
        R16S_UNROLL
        for (int k = 0; k < 4; k++) {
            __m512i l0, h0, l1, h1;
            r16_b32_unpack2(qs0, qs1, k, has_hi, &l0, &h0, &l1, &h1);
            R16S_UNROLL
            for (int t = 0; t < T; t++) {
                const int8_t *q = a->q + (t0 + t) * a->ld_in + 32 * b;
                __m512i ql = s_bcast(q + 4 * k), qh = s_bcast(q + 16 + 4 * k);
                i0[t] = _mm512_dpbusd_epi32(i0[t], l0, ql);
                i1[t] = _mm512_dpbusd_epi32(i1[t], l1, ql);
                i0[t] = _mm512_dpbusd_epi32(i0[t], h0, qh);
                i1[t] = _mm512_dpbusd_epi32(i1[t], h1, qh);
            }
        }
        __m512 dw0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p0));
        __m512 dw1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p1));
        R16S_UNROLL
        for (int t = 0; t < T; t++) {
            int64_t ab = (t0 + t) * (a->ld_in / 32) + b;
            __m512 da = _mm512_set1_ps(a->d[ab]);
            acc0[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i0[t]), _mm512_mul_ps(dw0, da), acc0[t]);
            acc1[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i1[t]), _mm512_mul_ps(dw1, da), acc1[t]);
        }
        if (has_min) {
            __m512 mw0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p0 + 32)));
            __m512 mw1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p1 + 32)));
            R16S_UNROLL
            for (int t = 0; t < T; t++) {
                __m512 ds = _mm512_set1_ps(a->ds[(t0 + t) * (a->ld_in / 32) + b]);
                acc0[t] = _mm512_fmadd_ps(mw0, ds, acc0[t]);
                acc1[t] = _mm512_fmadd_ps(mw1, ds, acc1[t]);
            }
        }
    }
    s_store(y, acc0, ldy, T);
    s_store(y + 16, acc1, ldy, T);
}

R16S_INLINE void pair_q8_0(const uint8_t *p0, const uint8_t *p1, const sl_q8act *a, int64_t t0,
                           float *y, int64_t ldy, const int T)
{
    __m512 acc0[R16S_T], acc1[R16S_T];
    s_start(acc0, y, ldy, a, T);
    s_start(acc1, y + 16, ldy, a, T);
    for (int64_t b = 0; b < a->n_blocks; b++, p0 += SL_R16_Q8_0_BYTES, p1 += SL_R16_Q8_0_BYTES) {
        s_prefetch_at(p0, SL_R16_Q8_0_BYTES, R16S_PF_DIST_Q8_0);
        s_prefetch_at(p1, SL_R16_Q8_0_BYTES, R16S_PF_DIST_Q8_0);
        __m512i i0[R16S_T], i1[R16S_T];
        R16S_UNROLL
        for (int t = 0; t < T; t++)
            i0[t] = i1[t] = _mm512_set1_epi32(-128 * a->sum[(t0 + t) * (a->ld_in / 32) + b]);
        R16S_UNROLL
        for (int k = 0; k < 8; k++) {
            __m512i w0 = _mm512_loadu_si512(p0 + 32 + 64 * k), w1 = _mm512_loadu_si512(p1 + 32 + 64 * k);
            R16S_UNROLL
            for (int t = 0; t < T; t++) {
                __m512i q = s_bcast(a->q + (t0 + t) * a->ld_in + 32 * b + 4 * k);
                i0[t] = _mm512_dpbusd_epi32(i0[t], w0, q);
                i1[t] = _mm512_dpbusd_epi32(i1[t], w1, q);
            }
        }
        __m512 dw0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p0));
        __m512 dw1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p1));
        R16S_UNROLL
        for (int t = 0; t < T; t++) {
            __m512 da = _mm512_set1_ps(a->d[(t0 + t) * (a->ld_in / 32) + b]);
            acc0[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i0[t]), _mm512_mul_ps(dw0, da), acc0[t]);
            acc1[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i1[t]), _mm512_mul_ps(dw1, da), acc1[t]);
        }
    }
    s_store(y, acc0, ldy, T);
    s_store(y + 16, acc1, ldy, T);
}

R16S_INLINE __m512 s_u8_ps(const uint8_t *p16)
{
    return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p16)));
}

R16S_INLINE __m512 s_i8_ps(const uint8_t *p16)
{
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p16)));
}

/* One sub-block s (32 elements, nibble half hi) of Q4_K superblock sb of
 * both groups into the token's integer sums. */
R16S_INLINE void q4_K_sub(const uint8_t *qs0, const uint8_t *qs1, const sl_q8act *a, int64_t t0,
                          int64_t sb, int j, const int hi, __m512i *i0, __m512i *i1, const int T)
{
    const __m512i m4 = _mm512_set1_epi8(15);
    R16S_UNROLL
    for (int t = 0; t < T; t++)
        i0[t] = i1[t] = _mm512_setzero_si512();
    R16S_UNROLL
    for (int k = 0; k < 8; k++) {
        __m512i v0 = _mm512_loadu_si512(qs0 + (8 * j + k) * 64);
        __m512i v1 = _mm512_loadu_si512(qs1 + (8 * j + k) * 64);
        if (hi) {
            v0 = _mm512_srli_epi16(v0, 4);
            v1 = _mm512_srli_epi16(v1, 4);
        }
        v0 = _mm512_and_si512(v0, m4);
        v1 = _mm512_and_si512(v1, m4);
        R16S_UNROLL
        for (int t = 0; t < T; t++) {
            __m512i q = s_bcast(a->q + (t0 + t) * a->ld_in + 256 * sb + 64 * j + 32 * hi + 4 * k);
            i0[t] = _mm512_dpbusd_epi32(i0[t], v0, q);
            i1[t] = _mm512_dpbusd_epi32(i1[t], v1, q);
        }
    }
}

/* Q4_K: the one-group tile's per-sub-block float steps (scale, then min)
 * for the low and then the high nibbles of each pair j. */
R16S_INLINE void pair_q4_K(const uint8_t *p0, const uint8_t *p1, const sl_q8act *a, int64_t t0,
                           float *y, int64_t ldy, const int T)
{
    __m512 acc0[R16S_T], acc1[R16S_T];
    s_start(acc0, y, ldy, a, T);
    s_start(acc1, y + 16, ldy, a, T);
    for (int64_t sb = 0; sb < a->n_blocks / 8; sb++, p0 += SL_R16_Q4_K_BYTES, p1 += SL_R16_Q4_K_BYTES) {
        for (int j = 0; j < 4; j++) {
            s_prefetch(p0 + j * (SL_R16_Q4_K_BYTES / 4), SL_R16_Q4_K_BYTES / 4);
            s_prefetch(p1 + j * (SL_R16_Q4_K_BYTES / 4), SL_R16_Q4_K_BYTES / 4);
            R16S_UNROLL
            for (int h = 0; h < 2; h++) {
                int s = 2 * j + h;
                __m512i i0[R16S_T], i1[R16S_T];
                q4_K_sub(p0 + 320, p1 + 320, a, t0, sb, j, h, i0, i1, T);
                __m512 dv0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p0));
                __m512 dv1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p1));
                __m512 dm0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p0 + 32)));
                __m512 dm1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p1 + 32)));
                __m512 sc0 = _mm512_mul_ps(dv0, s_u8_ps(p0 + 64 + 16 * s));
                __m512 sc1 = _mm512_mul_ps(dv1, s_u8_ps(p1 + 64 + 16 * s));
                __m512 mn0 = _mm512_mul_ps(dm0, s_u8_ps(p0 + 192 + 16 * s));
                __m512 mn1 = _mm512_mul_ps(dm1, s_u8_ps(p1 + 192 + 16 * s));
                R16S_UNROLL
                for (int t = 0; t < T; t++) {
                    int64_t ab = (t0 + t) * (a->ld_in / 32) + 8 * sb + s;
                    __m512 da = _mm512_set1_ps(a->d[ab]), ds = _mm512_set1_ps(a->ds[ab]);
                    acc0[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i0[t]), _mm512_mul_ps(sc0, da), acc0[t]);
                    acc0[t] = _mm512_fnmadd_ps(mn0, ds, acc0[t]);
                    acc1[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i1[t]), _mm512_mul_ps(sc1, da), acc1[t]);
                    acc1[t] = _mm512_fnmadd_ps(mn1, ds, acc1[t]);
                }
            }
        }
    }
    s_store(y, acc0, ldy, T);
    s_store(y + 16, acc1, ldy, T);
}

/* The 16 rows' quants (0..63) of Q6_K dword kk, as matmul_r16_avx512.c's
 * r16_q6_quants. */
R16S_INLINE __m512i s_q6_quants(const uint8_t *ql, const uint8_t *qh, int kk, const int hq)
{
    const __m512i m4 = _mm512_set1_epi8(15), m30 = _mm512_set1_epi8(0x30);
    __m512i v = _mm512_loadu_si512(ql + 64 * (kk % 32));
    __m512i lo = hq < 2 ? _mm512_and_si512(v, m4) : _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
    __m512i h = _mm512_loadu_si512(qh + 64 * (kk % 16));
    h = hq < 2 ? _mm512_slli_epi16(h, 4 - 2 * hq) : hq > 2 ? _mm512_srli_epi16(h, 2) : h;
    return _mm512_ternarylogic_epi32(h, m30, lo, 0xEA);
}

/* Runs 4 hq .. 4 hq + 3 of 16 elements of Q6_K superblock sb, both groups. */
R16S_INLINE void q6_K_runs2(const uint8_t *p0, const uint8_t *p1, const sl_q8act *a, int64_t t0,
                            int64_t sb, __m512 *acc0, __m512 *acc1, const int hq, const int T)
{
    __m512 dv0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p0));
    __m512 dv1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p1));
    for (int h = 4 * hq; h < 4 * hq + 4; h++) {
        s_prefetch(p0 + h * (SL_R16_Q6_K_BYTES / 16), SL_R16_Q6_K_BYTES / 16);
        s_prefetch(p1 + h * (SL_R16_Q6_K_BYTES / 16), SL_R16_Q6_K_BYTES / 16);
        __m512i w0[4], w1[4];
        R16S_UNROLL
        for (int k = 0; k < 4; k++) {
            w0[k] = s_q6_quants(p0 + 288, p0 + 288 + 2048, 4 * h + k, hq);
            w1[k] = s_q6_quants(p1 + 288, p1 + 288 + 2048, 4 * h + k, hq);
        }
        __m512 s0 = _mm512_mul_ps(dv0, s_i8_ps(p0 + 32 + 16 * h));
        __m512 s1 = _mm512_mul_ps(dv1, s_i8_ps(p1 + 32 + 16 * h));
        R16S_UNROLL
        for (int t = 0; t < T; t++) {
            const int8_t *aq = a->q + (t0 + t) * a->ld_in + 256 * sb + 16 * h;
            __m512i c = _mm512_set1_epi32(-32 * a->s16[(t0 + t) * (a->ld_in / 16) + 16 * sb + h]);
            __m512i i0 = c, i1 = c;
            R16S_UNROLL
            for (int k = 0; k < 4; k++) {
                __m512i q = s_bcast(aq + 4 * k);
                i0 = _mm512_dpbusd_epi32(i0, w0[k], q);
                i1 = _mm512_dpbusd_epi32(i1, w1[k], q);
            }
            __m512 da = _mm512_set1_ps(a->d[(t0 + t) * (a->ld_in / 32) + 8 * sb + h / 2]);
            acc0[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i0), _mm512_mul_ps(s0, da), acc0[t]);
            acc1[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i1), _mm512_mul_ps(s1, da), acc1[t]);
        }
    }
}

R16S_INLINE void pair_q6_K(const uint8_t *p0, const uint8_t *p1, const sl_q8act *a, int64_t t0,
                           float *y, int64_t ldy, const int T)
{
    __m512 acc0[R16S_T], acc1[R16S_T];
    s_start(acc0, y, ldy, a, T);
    s_start(acc1, y + 16, ldy, a, T);
    for (int64_t sb = 0; sb < a->n_blocks / 8; sb++, p0 += SL_R16_Q6_K_BYTES, p1 += SL_R16_Q6_K_BYTES) {
        q6_K_runs2(p0, p1, a, t0, sb, acc0, acc1, 0, T);
        q6_K_runs2(p0, p1, a, t0, sb, acc0, acc1, 1, T);
        q6_K_runs2(p0, p1, a, t0, sb, acc0, acc1, 2, T);
        q6_K_runs2(p0, p1, a, t0, sb, acc0, acc1, 3, T);
    }
    s_store(y, acc0, ldy, T);
    s_store(y + 16, acc1, ldy, T);
}

R16S_INLINE void pair_q4_0(const uint8_t *p0, const uint8_t *p1, const sl_q8act *a, int64_t t0,
                           float *y, int64_t ldy, const int T)
{
    pair_b32(SL_TYPE_Q4_0, p0, p1, a, t0, y, ldy, T);
}

R16S_INLINE void pair_q4_1(const uint8_t *p0, const uint8_t *p1, const sl_q8act *a, int64_t t0,
                           float *y, int64_t ldy, const int T)
{
    pair_b32(SL_TYPE_Q4_1, p0, p1, a, t0, y, ldy, T);
}

R16S_INLINE void pair_q5_0(const uint8_t *p0, const uint8_t *p1, const sl_q8act *a, int64_t t0,
                           float *y, int64_t ldy, const int T)
{
    pair_b32(SL_TYPE_Q5_0, p0, p1, a, t0, y, ldy, T);
}

R16S_INLINE void pair_q5_1(const uint8_t *p0, const uint8_t *p1, const sl_q8act *a, int64_t t0,
                           float *y, int64_t ldy, const int T)
{
    pair_b32(SL_TYPE_Q5_1, p0, p1, a, t0, y, ldy, T);
}

/* Tokens [t, t + n) of a pair, n = 1..R16S_T (a switch: T is a constant in
 * each tile, so the token loops unroll and the sums stay in registers). */
#define R16S_TILE(type, p0, p1, a, t, y, ldy, n)                                   \
    switch (n) {                                                                    \
    case 5: pair_##type(p0, p1, a, t, y, ldy, 5); break;                            \
    case 4: pair_##type(p0, p1, a, t, y, ldy, 4); break;                            \
    case 3: pair_##type(p0, p1, a, t, y, ldy, 3); break;                            \
    case 2: pair_##type(p0, p1, a, t, y, ldy, 2); break;                            \
    default: pair_##type(p0, p1, a, t, y, ldy, 1); break;                           \
    }

/* Groups [g0, g1) for 2..8 tokens: pairs of groups, the tokens in one pass
 * (up to 5) or two near-equal ones; an odd last group goes to the one-group
 * kernel (single). */
#define R16S_GROUPS(type, TYPE)                                                                 \
    static void pairs_##type(const uint8_t *packed, int64_t g0, int64_t g1, const sl_q8act *a,  \
                             float *y, int64_t ldy)                                             \
    {                                                                                           \
        size_t gb = sl_r16_group_bytes(SL_TYPE_##TYPE, a->n_in);                                \
        int64_t g = g0;                                                                         \
        for (; g + 2 <= g1; g += 2) {                                                           \
            const uint8_t *p0 = packed + (size_t)g * gb, *p1 = p0 + gb;                         \
            float *yg = y + 16 * g;                                                             \
            int64_t n = a->n_tok, first = n <= R16S_T ? n : (n + 1) / 2;                        \
            R16S_TILE(type, p0, p1, a, 0, yg, ldy, first)                                       \
            if (n > first)                                                                      \
                R16S_TILE(type, p0, p1, a, first, yg + first * ldy, ldy, n - first)             \
        }                                                                                       \
        if (g < g1)                                                                             \
            sl_r16_avx512(SL_TYPE_##TYPE)(packed, g, g1, a, y, ldy);                            \
    }

R16S_GROUPS(q4_0, Q4_0)
R16S_GROUPS(q4_1, Q4_1)
R16S_GROUPS(q5_0, Q5_0)
R16S_GROUPS(q5_1, Q5_1)
R16S_GROUPS(q8_0, Q8_0)
R16S_GROUPS(q4_K, Q4_K)
R16S_GROUPS(q6_K, Q6_K)

sl_r16_fn sl_r16_small_avx512(sl_type wtype)
{
    switch (wtype) {
    case SL_TYPE_Q4_0: return pairs_q4_0;
    case SL_TYPE_Q4_1: return pairs_q4_1;
    case SL_TYPE_Q5_0: return pairs_q5_0;
    case SL_TYPE_Q5_1: return pairs_q5_1;
    case SL_TYPE_Q8_0: return pairs_q8_0;
    case SL_TYPE_Q4_K: return pairs_q4_K;
    case SL_TYPE_Q6_K: return pairs_q6_K;
    default: return NULL;
    }
}
