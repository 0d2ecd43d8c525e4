/* Weights repacked 16 rows at a time (kernels/matmul.h, sl_pack) for AVX-512
 * VNNI: one vpdpbusd multiplies 4 consecutive weights of each of 16 rows by
 * the same 4 activation quants (a broadcast dword), so the 16 int32 lanes are
 * the 16 rows' partial dots and a block costs a handful of instructions for
 * all 16 rows, with one scale vector (16 weight scales times the activation
 * scale) and one FMA. Lane r follows the same sequence of operations for
 * every batch and tile, so the determinism contract holds.
 *
 * Layout per group of 16 rows and block of 32 (groups outermost, then
 * blocks, so a group streams through memory):
 *   Q4_0: 16 f16 scales, then for k = 0..3 and each row the 4 bytes
 *         qs[4k..4k+3] of that row (low nibbles: elements 4k.., high: 16+4k..)
 *   Q8_0: 16 f16 scales, then for k = 0..7 and each row the 4 quants
 *         4k..4k+3 of that row plus 128 (as unsigned bytes).
 * and per group and superblock of 256:
 *   Q4_K: 16 f16 d, 16 f16 dmin, the 6-bit scales and mins unpacked to
 *         bytes [sub-block][row], then for each pair j of sub-blocks and
 *         k = 0..7 each row's bytes qs[32j + 4k ..] (low nibbles: sub-block
 *         2j, high: 2j + 1)
 *   Q6_K: 16 f16 d, the 16 int8 scales as [scale][row], then each row's
 *         ql bytes 64n + 32h + 4k .. for (n, h, k), then its qh bytes
 *         32n + 4k .. for (n, k): the same bits as the row's block, dealt
 *         out so that one 64-byte load holds a dword of every row. */
#include <immintrin.h>
#include <string.h>

#include "kernels/matmul_internal.h"

#define R16_INLINE static inline __attribute__((always_inline))
#define R16_UNROLL _Pragma("GCC unroll 16")

R16_INLINE __m512i r16_bcast(const int8_t *q)
{
    int32_t v;
    memcpy(&v, q, 4);
    return _mm512_set1_epi32(v);
}

R16_INLINE void r16_store(float *y, const __m512 *acc, int64_t ldy, int T)
{
    R16_UNROLL
    for (int t = 0; t < T; t++)
        _mm512_storeu_ps(y + t * ldy, acc[t]);
}

R16_INLINE void tile_q4_0(const uint8_t *p, const sl_q8act *a, int64_t t0, float *y,
                          int64_t ldy, const int T)
{
    __m512 acc[4];
    R16_UNROLL
    for (int t = 0; t < T; t++)
        acc[t] = _mm512_setzero_ps();
    const __m512i m4 = _mm512_set1_epi8(15);
    for (int64_t b = 0; b < a->n_blocks; b++, p += SL_R16_Q4_0_BYTES) {
        __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
        __m512i lo[4], hi[4];
        R16_UNROLL
        for (int k = 0; k < 4; k++) {
            __m512i v = _mm512_loadu_si512(p + 32 + 64 * k);
            lo[k] = _mm512_and_si512(v, m4);
            hi[k] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
        }
        R16_UNROLL
        for (int t = 0; t < T; t++) {
            int64_t ab = (t0 + t) * a->n_blocks + b;
            const int8_t *q = a->q + (t0 + t) * a->n_in + 32 * b;
            __m512i i0 = _mm512_set1_epi32(-8 * a->sum[ab]), i1 = _mm512_setzero_si512();
            R16_UNROLL
            for (int k = 0; k < 4; k++) {
                i0 = _mm512_dpbusd_epi32(i0, lo[k], r16_bcast(q + 4 * k));
                i1 = _mm512_dpbusd_epi32(i1, hi[k], r16_bcast(q + 16 + 4 * k));
            }
            __m512 scale = _mm512_mul_ps(dw, _mm512_set1_ps(a->d[ab]));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(i0, i1)), scale, acc[t]);
        }
    }
    r16_store(y, acc, ldy, T);
}

R16_INLINE void tile_q8_0(const uint8_t *p, const sl_q8act *a, int64_t t0, float *y,
                          int64_t ldy, const int T)
{
    __m512 acc[4];
    R16_UNROLL
    for (int t = 0; t < T; t++)
        acc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < a->n_blocks; b++, p += SL_R16_Q8_0_BYTES) {
        __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
        __m512i wq[8];
        R16_UNROLL
        for (int k = 0; k < 8; k++)
            wq[k] = _mm512_loadu_si512(p + 32 + 64 * k);
        R16_UNROLL
        for (int t = 0; t < T; t++) {
            int64_t ab = (t0 + t) * a->n_blocks + b;
            const int8_t *q = a->q + (t0 + t) * a->n_in + 32 * b;
            __m512i i0 = _mm512_set1_epi32(-128 * a->sum[ab]), i1 = _mm512_setzero_si512();
            R16_UNROLL
            for (int k = 0; k < 8; k += 2) {
                i0 = _mm512_dpbusd_epi32(i0, wq[k], r16_bcast(q + 4 * k));
                i1 = _mm512_dpbusd_epi32(i1, wq[k + 1], r16_bcast(q + 4 * k + 4));
            }
            __m512 scale = _mm512_mul_ps(dw, _mm512_set1_ps(a->d[ab]));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(i0, i1)), scale, acc[t]);
        }
    }
    r16_store(y, acc, ldy, T);
}

R16_INLINE __m512 r16_u8_ps(const uint8_t *p16)
{
    return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p16)));
}

R16_INLINE __m512 r16_i8_ps(const uint8_t *p16)
{
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p16)));
}

R16_INLINE void tile_q4_K(const uint8_t *p, const sl_q8act *a, int64_t t0, float *y,
                          int64_t ldy, const int T)
{
    __m512 acc[4];
    R16_UNROLL
    for (int t = 0; t < T; t++)
        acc[t] = _mm512_setzero_ps();
    const __m512i m4 = _mm512_set1_epi8(15);
    for (int64_t sb = 0; sb < a->n_blocks / 8; sb++, p += SL_R16_Q4_K_BYTES) {
        __m512 dv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
        __m512 dmv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + 32)));
        const uint8_t *sc = p + 64, *mn = p + 192, *qs = p + 320;
        for (int j = 0; j < 4; j++) {
            __m512i lo[4], hi[4];
            R16_UNROLL
            for (int t = 0; t < T; t++)
                lo[t] = hi[t] = _mm512_setzero_si512();
            R16_UNROLL
            for (int k = 0; k < 8; k++) {
                __m512i v = _mm512_loadu_si512(qs + (8 * j + k) * 64);
                __m512i l = _mm512_and_si512(v, m4);
                __m512i h = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
                R16_UNROLL
                for (int t = 0; t < T; t++) {
                    const int8_t *q = a->q + (t0 + t) * a->n_in + 256 * sb + 64 * j;
                    lo[t] = _mm512_dpbusd_epi32(lo[t], l, r16_bcast(q + 4 * k));
                    hi[t] = _mm512_dpbusd_epi32(hi[t], h, r16_bcast(q + 32 + 4 * k));
                }
            }
            int s0 = 2 * j, s1 = 2 * j + 1;
            __m512 sc0 = _mm512_mul_ps(dv, r16_u8_ps(sc + 16 * s0));
            __m512 sc1 = _mm512_mul_ps(dv, r16_u8_ps(sc + 16 * s1));
            __m512 mn0 = _mm512_mul_ps(dmv, r16_u8_ps(mn + 16 * s0));
            __m512 mn1 = _mm512_mul_ps(dmv, r16_u8_ps(mn + 16 * s1));
            R16_UNROLL
            for (int t = 0; t < T; t++) {
                int64_t ab = (t0 + t) * a->n_blocks + 8 * sb;
                __m512 da0 = _mm512_set1_ps(a->d[ab + s0]), da1 = _mm512_set1_ps(a->d[ab + s1]);
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(lo[t]), _mm512_mul_ps(sc0, da0), acc[t]);
                acc[t] = _mm512_fnmadd_ps(mn0, _mm512_set1_ps(a->ds[ab + s0]), acc[t]);
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(hi[t]), _mm512_mul_ps(sc1, da1), acc[t]);
                acc[t] = _mm512_fnmadd_ps(mn1, _mm512_set1_ps(a->ds[ab + s1]), acc[t]);
            }
        }
    }
    r16_store(y, acc, ldy, T);
}

/* -32 times the sum of the 16 quants a 16-element Q6_K scale covers. */
R16_INLINE __m512i r16_q6_corr(const sl_q8act *a, int64_t t, int64_t elem)
{
    return _mm512_set1_epi32(-32 * a->s16[t * (a->n_in / 16) + elem / 16]);
}

/* Q6_K: all four 32-element groups of a half superblock at once, so each
 * qh dword (which carries 2 bits for each of the four) is loaded once. */
R16_INLINE void tile_q6_K(const uint8_t *p, const sl_q8act *a, int64_t t0, float *y,
                          int64_t ldy, const int T)
{
    __m512 acc[2];
    R16_UNROLL
    for (int t = 0; t < T; t++)
        acc[t] = _mm512_setzero_ps();
    const __m512i m4 = _mm512_set1_epi8(15);
    for (int64_t sb = 0; sb < a->n_blocks / 8; sb++, p += SL_R16_Q6_K_BYTES) {
        __m512 dv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
        const uint8_t *sc = p + 32, *ql = p + 288, *qh = p + 288 + 2048;
        for (int n = 0; n < 2; n++) {
            /* quarter x of this half is group 4n + x: low nibbles of ql
             * chunk x & 1 for x < 2, high nibbles for x >= 2; qh bits 2x */
            __m512i ia[2][4][2]; /* [token][quarter][half of 16] */
            R16_UNROLL
            for (int t = 0; t < T; t++)
                R16_UNROLL
                for (int x = 0; x < 4; x++)
                    R16_UNROLL
                    for (int half = 0; half < 2; half++)
                        ia[t][x][half] = r16_q6_corr(a, t0 + t, 256 * sb + 128 * n + 32 * x + 16 * half);
            R16_UNROLL
            for (int k = 0; k < 8; k++) {
                __m512i vh = _mm512_loadu_si512(qh + (n * 8 + k) * 64);
                __m512i q[4];
                /* the two high bits of quarter x sit at bits 2x of each qh
                 * byte; moved to bits 4-5 they join the nibble with one
                 * ternary-logic op: (nibble & 15) | high */
                const __m512i m30 = _mm512_set1_epi8(0x30);
                __m512i hb[4] = {_mm512_and_si512(_mm512_slli_epi16(vh, 4), m30),
                                 _mm512_and_si512(_mm512_slli_epi16(vh, 2), m30),
                                 _mm512_and_si512(vh, m30),
                                 _mm512_and_si512(_mm512_srli_epi16(vh, 2), m30)};
                R16_UNROLL
                for (int c = 0; c < 2; c++) {
                    __m512i vl = _mm512_loadu_si512(ql + ((2 * n + c) * 8 + k) * 64);
                    q[c] = _mm512_ternarylogic_epi32(vl, hb[c], m4, 0xEC);
                    q[c + 2] = _mm512_ternarylogic_epi32(_mm512_srli_epi16(vl, 4), hb[c + 2], m4, 0xEC);
                }
                R16_UNROLL
                for (int t = 0; t < T; t++) {
                    const int8_t *aq = a->q + (t0 + t) * a->n_in + 256 * sb + 128 * n + 4 * k;
                    R16_UNROLL
                    for (int x = 0; x < 4; x++)
                        ia[t][x][k >> 2] = _mm512_dpbusd_epi32(ia[t][x][k >> 2], q[x],
                                                               r16_bcast(aq + 32 * x));
                }
            }
            R16_UNROLL
            for (int x = 0; x < 4; x++) {
                int g = 4 * n + x;
                __m512 s0 = _mm512_mul_ps(dv, r16_i8_ps(sc + 16 * (2 * g)));
                __m512 s1 = _mm512_mul_ps(dv, r16_i8_ps(sc + 16 * (2 * g + 1)));
                R16_UNROLL
                for (int t = 0; t < T; t++) {
                    __m512 da = _mm512_set1_ps(a->d[(t0 + t) * a->n_blocks + 8 * sb + g]);
                    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia[t][x][0]), _mm512_mul_ps(s0, da), acc[t]);
                    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia[t][x][1]), _mm512_mul_ps(s1, da), acc[t]);
                }
            }
        }
    }
    r16_store(y, acc, ldy, T);
}

#define R16_TT 4

#define R16_GROUPS(type, tt)                                                                  \
    static void groups_##type(const uint8_t *packed, int64_t g0, int64_t g1, const sl_q8act *a, \
                              float *y, int64_t ldy)                                          \
    {                                                                                         \
        size_t group_bytes = sl_r16_group_bytes(SL_TYPE_##type, a->n_in);                     \
        for (int64_t g = g0; g < g1; g++) {                                                   \
            const uint8_t *p = packed + (size_t)g * group_bytes;                              \
            int64_t t = 0;                                                                    \
            for (; t + (tt) <= a->n_tok; t += (tt))                                           \
                tile_##type(p, a, t, y + t * ldy + 16 * g, ldy, (tt));                        \
            for (; t < a->n_tok; t++)                                                         \
                tile_##type(p, a, t, y + t * ldy + 16 * g, ldy, 1);                           \
        }                                                                                     \
    }

#define SL_TYPE_q4_0 SL_TYPE_Q4_0
#define SL_TYPE_q8_0 SL_TYPE_Q8_0
#define SL_TYPE_q4_K SL_TYPE_Q4_K
#define SL_TYPE_q6_K SL_TYPE_Q6_K
R16_GROUPS(q4_0, R16_TT)
R16_GROUPS(q8_0, R16_TT)
R16_GROUPS(q4_K, R16_TT)
R16_GROUPS(q6_K, 2)

sl_r16_fn sl_r16_avx512(sl_type wtype)
{
    switch (wtype) {
    case SL_TYPE_Q4_0: return groups_q4_0;
    case SL_TYPE_Q8_0: return groups_q8_0;
    case SL_TYPE_Q4_K: return groups_q4_K;
    case SL_TYPE_Q6_K: return groups_q6_K;
    default: return NULL;
    }
}

/* ---- BF16 weights, float activations ----
 * Layout per group of 16 rows: for each pair of columns (2i, 2i+1), each
 * row's two bf16 values (a dword), 64 bytes a pair. A bf16 moved into the
 * top half of a dword is the float of the same value, so the weights widen
 * with one shift or mask, and each lane runs two FMA chains (even and odd
 * columns) summed at the end: the float path's exactness, at streaming
 * speed. */

R16_INLINE void tile_bf16(const uint8_t *p, int64_t n_in, const float *x, float *y, int64_t ldy,
                          const int T)
{
    __m512 ev[4], od[4];
    R16_UNROLL
    for (int t = 0; t < T; t++)
        ev[t] = od[t] = _mm512_setzero_ps();
    const __m512i hi_mask = _mm512_set1_epi32((int)0xffff0000u);
    for (int64_t i = 0; i < n_in; i += 2, p += 64) {
        __m512i w = _mm512_loadu_si512(p);
        __m512 we = _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
        __m512 wo = _mm512_castsi512_ps(_mm512_and_si512(w, hi_mask));
        R16_UNROLL
        for (int t = 0; t < T; t++) {
            ev[t] = _mm512_fmadd_ps(we, _mm512_set1_ps(x[t * n_in + i]), ev[t]);
            od[t] = _mm512_fmadd_ps(wo, _mm512_set1_ps(x[t * n_in + i + 1]), od[t]);
        }
    }
    R16_UNROLL
    for (int t = 0; t < T; t++)
        _mm512_storeu_ps(y + t * ldy, _mm512_add_ps(ev[t], od[t]));
}

static void groups_bf16(const uint8_t *packed, int64_t g0, int64_t g1, const float *x,
                        int64_t n_tok, int64_t n_in, float *y, int64_t ldy)
{
    size_t group_bytes = (size_t)n_in * 32;
    for (int64_t g = g0; g < g1; g++) {
        const uint8_t *p = packed + (size_t)g * group_bytes;
        int64_t t = 0;
        for (; t + R16_TT <= n_tok; t += R16_TT)
            tile_bf16(p, n_in, x + t * n_in, y + t * ldy + 16 * g, ldy, R16_TT);
        for (; t < n_tok; t++)
            tile_bf16(p, n_in, x + t * n_in, y + t * ldy + 16 * g, ldy, 1);
    }
}

sl_r16f_fn sl_r16f_avx512(sl_type wtype)
{
    return wtype == SL_TYPE_BF16 ? groups_bf16 : NULL;
}
