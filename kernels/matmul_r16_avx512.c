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
 *         4k..4k+3 of that row plus 128 (as unsigned bytes). */
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

#define R16_TT 4

#define R16_GROUPS(type, bytes)                                                               \
    static void groups_##type(const uint8_t *packed, int64_t g0, int64_t g1, const sl_q8act *a, \
                              float *y, int64_t ldy)                                          \
    {                                                                                         \
        size_t group_bytes = (size_t)a->n_blocks * (bytes);                                   \
        for (int64_t g = g0; g < g1; g++) {                                                   \
            const uint8_t *p = packed + (size_t)g * group_bytes;                              \
            int64_t t = 0;                                                                    \
            for (; t + R16_TT <= a->n_tok; t += R16_TT)                                       \
                tile_##type(p, a, t, y + t * ldy + 16 * g, ldy, R16_TT);                      \
            for (; t < a->n_tok; t++)                                                         \
                tile_##type(p, a, t, y + t * ldy + 16 * g, ldy, 1);                           \
        }                                                                                     \
    }

R16_GROUPS(q4_0, SL_R16_Q4_0_BYTES)
R16_GROUPS(q8_0, SL_R16_Q8_0_BYTES)

sl_r16_fn sl_r16_avx512(sl_type wtype)
{
    switch (wtype) {
    case SL_TYPE_Q4_0: return groups_q4_0;
    case SL_TYPE_Q8_0: return groups_q8_0;
    default: return NULL;
    }
}
