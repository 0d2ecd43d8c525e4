/* The integer matmul kernels, written once for two instruction sets: the
 * including file defines MMQ_VNNI (1: vpdpbusd, AVX-512 VNNI on 256-bit
 * vectors; 0: AVX2 maddubs + madd) and MMQ_NAME(x) for its symbol names.
 *
 * One 32-element block is one 256-bit vector of unsigned weight codes times
 * one vector of signed activation quants, giving 8 int32 lanes (4 products
 * each). A weight offset (8 for Q4_0, 32 for Q6_K, 128 for Q8_0 under VNNI)
 * is removed by starting the lanes at -offset * (sum of the lane's 4
 * activation quants), which q8act precomputes. Each lane is then scaled and
 * added into a float accumulator; the 8 lanes are summed once per row at the
 * end. Every (row, token) pair runs exactly this sequence whatever tile it
 * sits in, so the tiling never changes a bit of y. */
#include <immintrin.h>

#include "kernels/matmul_internal.h"
#include "kernels/quant_internal.h"

#define MMQ_INLINE static inline __attribute__((always_inline))
/* The tiles index small arrays of registers by r and t: fully unrolled they
 * stay in registers. */
#define MMQ_UNROLL _Pragma("GCC unroll 16")

MMQ_INLINE __m256i mmq_dot(__m256i acc, __m256i u8, __m256i s8)
{
#if MMQ_VNNI
    return _mm256_dpbusd_epi32(acc, u8, s8);
#else
    __m256i pairs = _mm256_maddubs_epi16(u8, s8);
    return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
#endif
}

MMQ_INLINE float mmq_hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

MMQ_INLINE float mmq_f16(sl_f16 h) { return _cvtsh_ss(h); }

/* -(offset) * the 4-quant sums of one block: the lanes' starting values. */
MMQ_INLINE __m256i mmq_neg_corr(const sl_q8act *a, int64_t t, int64_t blk, int shift)
{
    __m256i s4 = _mm256_loadu_si256((const __m256i *)(a->s4 + t * (a->n_in / 4) + 8 * blk));
    return _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(s4, shift));
}

MMQ_INLINE __m256i mmq_act(const sl_q8act *a, int64_t t, int64_t blk)
{
    return _mm256_loadu_si256((const __m256i *)(a->q + t * a->n_in + 32 * blk));
}

MMQ_INLINE __m256i mmq_nibbles(const uint8_t *qs16)
{
    __m128i x = _mm_loadu_si128((const __m128i *)qs16);
    __m256i v = _mm256_set_m128i(_mm_srli_epi16(x, 4), x);
    return _mm256_and_si256(v, _mm256_set1_epi8(15));
}

/* ---- Q4_0 ---- */

MMQ_INLINE void tile_q4_0(const uint8_t *w, size_t rb, const sl_q8act *a, int64_t t0, float *y,
                          int64_t ldy, const int R, const int T)
{
    __m256 acc[4][4];
    MMQ_UNROLL
    for (int r = 0; r < R; r++)
        MMQ_UNROLL
        for (int t = 0; t < T; t++)
            acc[r][t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < a->n_blocks; b++) {
        __m256i wq[4];
        float dw[4];
        MMQ_UNROLL
        for (int r = 0; r < R; r++) {
            const sl_block_q4_0 *blk = (const sl_block_q4_0 *)(w + (size_t)r * rb) + b;
            wq[r] = mmq_nibbles(blk->qs);
            dw[r] = mmq_f16(blk->d);
        }
        MMQ_UNROLL
        for (int t = 0; t < T; t++) {
            __m256i aq = mmq_act(a, t0 + t, b), corr = mmq_neg_corr(a, t0 + t, b, 3);
            float da = a->d[(t0 + t) * a->n_blocks + b];
            MMQ_UNROLL
            for (int r = 0; r < R; r++) {
                __m256 dot = _mm256_cvtepi32_ps(mmq_dot(corr, wq[r], aq));
                acc[r][t] = _mm256_fmadd_ps(dot, _mm256_set1_ps(dw[r] * da), acc[r][t]);
            }
        }
    }
    MMQ_UNROLL
    for (int r = 0; r < R; r++)
        MMQ_UNROLL
        for (int t = 0; t < T; t++)
            y[(t0 + t) * ldy + r] = mmq_hsum(acc[r][t]);
}

/* ---- Q8_0 ---- */

MMQ_INLINE void tile_q8_0(const uint8_t *w, size_t rb, const sl_q8act *a, int64_t t0, float *y,
                          int64_t ldy, const int R, const int T)
{
    __m256 acc[4][4];
    MMQ_UNROLL
    for (int r = 0; r < R; r++)
        MMQ_UNROLL
        for (int t = 0; t < T; t++)
            acc[r][t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < a->n_blocks; b++) {
        __m256i wq[4];
        float dw[4];
        MMQ_UNROLL
        for (int r = 0; r < R; r++) {
            const sl_block_q8_0 *blk = (const sl_block_q8_0 *)(w + (size_t)r * rb) + b;
            __m256i s = _mm256_loadu_si256((const __m256i *)blk->qs);
#if MMQ_VNNI
            wq[r] = _mm256_xor_si256(s, _mm256_set1_epi8((char)0x80)); /* w + 128 */
#else
            wq[r] = s; /* signs move onto the activations below */
#endif
            dw[r] = mmq_f16(blk->d);
        }
        MMQ_UNROLL
        for (int t = 0; t < T; t++) {
            __m256i aq = mmq_act(a, t0 + t, b);
            float da = a->d[(t0 + t) * a->n_blocks + b];
#if MMQ_VNNI
            __m256i corr = mmq_neg_corr(a, t0 + t, b, 7);
#endif
            MMQ_UNROLL
            for (int r = 0; r < R; r++) {
#if MMQ_VNNI
                __m256i idot = mmq_dot(corr, wq[r], aq);
#else
                /* |w| * (a * sign w): maddubs needs one unsigned operand, and
                 * 128 * 127 * 2 still fits its int16 pairs */
                __m256i idot = mmq_dot(_mm256_setzero_si256(), _mm256_sign_epi8(wq[r], wq[r]),
                                       _mm256_sign_epi8(aq, wq[r]));
#endif
                acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(idot), _mm256_set1_ps(dw[r] * da),
                                            acc[r][t]);
            }
        }
    }
    MMQ_UNROLL
    for (int r = 0; r < R; r++)
        MMQ_UNROLL
        for (int t = 0; t < T; t++)
            y[(t0 + t) * ldy + r] = mmq_hsum(acc[r][t]);
}

/* Codes of sub-blocks j (lo) and j + 1 (hi) of a Q4_K or Q5_K block. */
MMQ_INLINE void mmq_k45_codes(int kind, const sl_block_q4_K *blk, int j, __m256i *lo, __m256i *hi)
{
    const __m256i m4 = _mm256_set1_epi8(15);
    if (kind == SL_TYPE_Q4_K) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(blk->qs + 16 * j));
        *lo = _mm256_and_si256(v, m4);
        *hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
        return;
    }
    const sl_block_q5_K *b5 = (const sl_block_q5_K *)blk;
    __m256i v = _mm256_loadu_si256((const __m256i *)(b5->qs + 16 * j));
    __m256i h = _mm256_loadu_si256((const __m256i *)b5->qh), b4 = _mm256_set1_epi8(0x10);
    /* bits j and j + 1 of qh moved to bit 4 */
    __m256i h0 = _mm256_and_si256(_mm256_slli_epi16(_mm256_srl_epi16(h, _mm_cvtsi32_si128(j)), 4), b4);
    __m256i h1 = _mm256_and_si256(_mm256_slli_epi16(_mm256_srl_epi16(h, _mm_cvtsi32_si128(j + 1)), 4), b4);
    *lo = _mm256_or_si256(_mm256_and_si256(v, m4), h0);
    *hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4), h1);
}

/* ---- Q4_K and Q5_K (the same scales and mins; Q5_K's codes take a fifth
 * bit from qh) ---- */

MMQ_INLINE void tile_k45(int kind, const uint8_t *w, size_t rb, const sl_q8act *a, int64_t t0,
                         float *y, int64_t ldy, const int R, const int T)
{
    /* d, dmin and scales sit at the same offsets in both blocks */
    const size_t bb = kind == SL_TYPE_Q5_K ? sizeof(sl_block_q5_K) : sizeof(sl_block_q4_K);
    __m256 acc[4][4], macc[4][4];
    MMQ_UNROLL
    for (int r = 0; r < R; r++)
        MMQ_UNROLL
        for (int t = 0; t < T; t++)
            acc[r][t] = macc[r][t] = _mm256_setzero_ps();
    for (int64_t sb = 0; sb < a->n_blocks / 8; sb++) {
        const sl_block_q4_K *blk[4];
        float sc[4][8];
        __m256 mins[4];
        MMQ_UNROLL
        for (int r = 0; r < R; r++) {
            blk[r] = (const sl_block_q4_K *)(w + (size_t)r * rb + (size_t)sb * bb);
            uint8_t s8[8], m8[8];
            sl_k_unpack_scales(blk[r]->scales, s8, m8);
            float d = mmq_f16(blk[r]->d), dmin = mmq_f16(blk[r]->dmin);
            MMQ_UNROLL
            for (int j = 0; j < 8; j++)
                sc[r][j] = d * s8[j];
            uint64_t m64;
            memcpy(&m64, m8, 8);
            __m256 mf = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)m64)));
            mins[r] = _mm256_mul_ps(_mm256_set1_ps(dmin), mf);
        }
        MMQ_UNROLL
        for (int t = 0; t < T; t++) {
            __m256 ds = _mm256_loadu_ps(a->ds + (t0 + t) * a->n_blocks + 8 * sb);
            MMQ_UNROLL
            for (int r = 0; r < R; r++)
                macc[r][t] = _mm256_fmadd_ps(mins[r], ds, macc[r][t]);
        }
        MMQ_UNROLL
        for (int j = 0; j < 8; j += 2) {
            __m256i lo[4], hi[4];
            MMQ_UNROLL
            for (int r = 0; r < R; r++)
                mmq_k45_codes(kind, blk[r], j, &lo[r], &hi[r]);
            MMQ_UNROLL
            for (int t = 0; t < T; t++) {
                int64_t b = 8 * sb + j;
                __m256i a0 = mmq_act(a, t0 + t, b), a1 = mmq_act(a, t0 + t, b + 1);
                const float *da = a->d + (t0 + t) * a->n_blocks + b;
                MMQ_UNROLL
                for (int r = 0; r < R; r++) {
                    __m256i z = _mm256_setzero_si256();
                    __m256 d0 = _mm256_cvtepi32_ps(mmq_dot(z, lo[r], a0));
                    __m256 d1 = _mm256_cvtepi32_ps(mmq_dot(z, hi[r], a1));
                    acc[r][t] = _mm256_fmadd_ps(d0, _mm256_set1_ps(sc[r][j] * da[0]), acc[r][t]);
                    acc[r][t] = _mm256_fmadd_ps(d1, _mm256_set1_ps(sc[r][j + 1] * da[1]), acc[r][t]);
                }
            }
        }
    }
    MMQ_UNROLL
    for (int r = 0; r < R; r++)
        MMQ_UNROLL
        for (int t = 0; t < T; t++)
            y[(t0 + t) * ldy + r] = mmq_hsum(acc[r][t]) - mmq_hsum(macc[r][t]);
}

MMQ_INLINE void tile_q4_K(const uint8_t *w, size_t rb, const sl_q8act *a, int64_t t0, float *y,
                          int64_t ldy, const int R, const int T)
{
    tile_k45(SL_TYPE_Q4_K, w, rb, a, t0, y, ldy, R, T);
}

MMQ_INLINE void tile_q5_K(const uint8_t *w, size_t rb, const sl_q8act *a, int64_t t0, float *y,
                          int64_t ldy, const int R, const int T)
{
    tile_k45(SL_TYPE_Q5_K, w, rb, a, t0, y, ldy, R, T);
}

/* ---- Q6_K ---- */

MMQ_INLINE void tile_q6_K(const uint8_t *w, size_t rb, const sl_q8act *a, int64_t t0, float *y,
                          int64_t ldy, const int R, const int T)
{
    __m256 acc[4][4];
    MMQ_UNROLL
    for (int r = 0; r < R; r++)
        MMQ_UNROLL
        for (int t = 0; t < T; t++)
            acc[r][t] = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(15), m2 = _mm256_set1_epi8(3);
    for (int64_t sb = 0; sb < a->n_blocks / 8; sb++) {
        const sl_block_q6_K *blk[4];
        float s[4][16];
        MMQ_UNROLL
        for (int r = 0; r < R; r++) {
            blk[r] = (const sl_block_q6_K *)(w + (size_t)r * rb) + sb;
            float d = mmq_f16(blk[r]->d);
            MMQ_UNROLL
            for (int i = 0; i < 16; i++)
                s[r][i] = d * blk[r]->scales[i];
        }
        MMQ_UNROLL
        for (int g = 0; g < 8; g++) { /* 32-element group: half n, quarter k */
            int n = g / 4, k = g % 4;
            __m256i q[4];
            __m256 sv[4];
            MMQ_UNROLL
            for (int r = 0; r < R; r++) {
                __m256i l = _mm256_loadu_si256((const __m256i *)(blk[r]->ql + 64 * n + 32 * (k & 1)));
                __m256i h = _mm256_loadu_si256((const __m256i *)(blk[r]->qh + 32 * n));
                l = _mm256_and_si256(k >> 1 ? _mm256_srli_epi16(l, 4) : l, m4);
                h = _mm256_and_si256(_mm256_srl_epi16(h, _mm_cvtsi32_si128(2 * k)), m2);
                q[r] = _mm256_or_si256(l, _mm256_slli_epi16(h, 4));
                sv[r] = _mm256_set_m128(_mm_set1_ps(s[r][2 * g + 1]), _mm_set1_ps(s[r][2 * g]));
            }
            MMQ_UNROLL
            for (int t = 0; t < T; t++) {
                int64_t b = 8 * sb + g;
                __m256i aq = mmq_act(a, t0 + t, b), corr = mmq_neg_corr(a, t0 + t, b, 5);
                __m256 da = _mm256_set1_ps(a->d[(t0 + t) * a->n_blocks + b]);
                MMQ_UNROLL
                for (int r = 0; r < R; r++) {
                    __m256 dot = _mm256_cvtepi32_ps(mmq_dot(corr, q[r], aq));
                    acc[r][t] = _mm256_fmadd_ps(dot, _mm256_mul_ps(sv[r], da), acc[r][t]);
                }
            }
        }
    }
    MMQ_UNROLL
    for (int r = 0; r < R; r++)
        MMQ_UNROLL
        for (int t = 0; t < T; t++)
            y[(t0 + t) * ldy + r] = mmq_hsum(acc[r][t]);
}

/* ---- 32-element blocks: Q4_1, Q5_0, Q5_1, IQ4_NL ---- */

/* 0x10 in byte i where bit i of the 32 bits at qh4 is set (Q5_0/Q5_1's
 * fifth bits, in element order like mmq_nibbles' bytes). */
MMQ_INLINE __m256i mmq_q5_high(const uint8_t *qh4)
{
    uint32_t qh;
    memcpy(&qh, qh4, sizeof qh);
    const __m256i spread = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                             0x0101010101010101, 0x0000000000000000);
    __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), spread);
    /* byte i keeps bit i % 8 of its copy: all ones exactly when it is set */
    bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    bytes = _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1));
    return _mm256_and_si256(bytes, _mm256_set1_epi8(0x10));
}

/* IQ4 codes (bytes 0..15) to their signed grid values. */
MMQ_INLINE __m256i mmq_iq4_values(__m256i codes)
{
    const __m128i g = _mm_loadu_si128((const __m128i *)sl_iq4nl_values);
    return _mm256_shuffle_epi8(_mm256_set_m128i(g, g), codes);
}

/* Dot of signed weights (|w| <= 127) with the activations of block blk:
 * VNNI takes w + 128 and starts the lanes at -128 * the 4-sums; AVX2 moves
 * the signs onto the activations, as for Q8_0. */
MMQ_INLINE __m256i mmq_sdot(__m256i ws, __m256i aq, const sl_q8act *a, int64_t t, int64_t blk)
{
#if MMQ_VNNI
    return mmq_dot(mmq_neg_corr(a, t, blk, 7), _mm256_xor_si256(ws, _mm256_set1_epi8((char)0x80)), aq);
#else
    (void)a, (void)t, (void)blk;
    return mmq_dot(_mm256_setzero_si256(), _mm256_sign_epi8(ws, ws), _mm256_sign_epi8(aq, ws));
#endif
}

/* Codes of block b of row w (unsigned, or signed grid values for IQ4_NL),
 * its scale and its min (0 for the symmetric types). */
MMQ_INLINE __m256i mmq_b32_decode(int kind, const uint8_t *w, int64_t b, float *dw, float *mw)
{
    switch (kind) {
    case SL_TYPE_Q4_1: {
        const sl_block_q4_1 *blk = (const sl_block_q4_1 *)w + b;
        *dw = mmq_f16(blk->d), *mw = mmq_f16(blk->m);
        return mmq_nibbles(blk->qs);
    }
    case SL_TYPE_Q5_0: {
        const sl_block_q5_0 *blk = (const sl_block_q5_0 *)w + b;
        *dw = mmq_f16(blk->d), *mw = 0;
        return _mm256_or_si256(mmq_nibbles(blk->qs), mmq_q5_high(blk->qh));
    }
    case SL_TYPE_Q5_1: {
        const sl_block_q5_1 *blk = (const sl_block_q5_1 *)w + b;
        *dw = mmq_f16(blk->d), *mw = mmq_f16(blk->m);
        return _mm256_or_si256(mmq_nibbles(blk->qs), mmq_q5_high(blk->qh));
    }
    default: {
        const sl_block_iq4_nl *blk = (const sl_block_iq4_nl *)w + b;
        *dw = mmq_f16(blk->d), *mw = 0;
        return mmq_iq4_values(mmq_nibbles(blk->qs));
    }
    }
}

MMQ_INLINE void tile_b32(int kind, const uint8_t *w, size_t rb, const sl_q8act *a, int64_t t0,
                         float *y, int64_t ldy, const int R, const int T)
{
    const int has_min = kind == SL_TYPE_Q4_1 || kind == SL_TYPE_Q5_1;
    __m256 acc[4][4];
    float macc[4][4];
    MMQ_UNROLL
    for (int r = 0; r < R; r++)
        MMQ_UNROLL
        for (int t = 0; t < T; t++)
            acc[r][t] = _mm256_setzero_ps(), macc[r][t] = 0;
    for (int64_t b = 0; b < a->n_blocks; b++) {
        __m256i wq[4];
        float dw[4], mw[4];
        MMQ_UNROLL
        for (int r = 0; r < R; r++)
            wq[r] = mmq_b32_decode(kind, w + (size_t)r * rb, b, &dw[r], &mw[r]);
        MMQ_UNROLL
        for (int t = 0; t < T; t++) {
            __m256i aq = mmq_act(a, t0 + t, b);
            float da = a->d[(t0 + t) * a->n_blocks + b];
            float ds = a->ds[(t0 + t) * a->n_blocks + b];
            /* Q5_0's codes carry an offset of 16; the others none */
            __m256i corr = kind == SL_TYPE_Q5_0 ? mmq_neg_corr(a, t0 + t, b, 4) : _mm256_setzero_si256();
            MMQ_UNROLL
            for (int r = 0; r < R; r++) {
                __m256i idot = kind == SL_TYPE_IQ4_NL ? mmq_sdot(wq[r], aq, a, t0 + t, b)
                                                      : mmq_dot(corr, wq[r], aq);
                acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(idot), _mm256_set1_ps(dw[r] * da), acc[r][t]);
                if (has_min)
                    macc[r][t] += mw[r] * ds;
            }
        }
    }
    MMQ_UNROLL
    for (int r = 0; r < R; r++)
        MMQ_UNROLL
        for (int t = 0; t < T; t++)
            y[(t0 + t) * ldy + r] = mmq_hsum(acc[r][t]) + macc[r][t];
}

#define MMQ_B32(type, KIND)                                                                   \
    MMQ_INLINE void tile_##type(const uint8_t *w, size_t rb, const sl_q8act *a, int64_t t0,  \
                                float *y, int64_t ldy, const int R, const int T)              \
    {                                                                                         \
        tile_b32(KIND, w, rb, a, t0, y, ldy, R, T);                                           \
    }
MMQ_B32(q4_1, SL_TYPE_Q4_1)
MMQ_B32(q5_0, SL_TYPE_Q5_0)
MMQ_B32(q5_1, SL_TYPE_Q5_1)
MMQ_B32(iq4_nl, SL_TYPE_IQ4_NL)

/* ---- Q2_K, Q3_K, IQ4_XS: 32-element groups of a superblock, Q6_K's way
 * (Q2_K and Q3_K scale each half of a group on its own) ---- */

/* Codes of group g of superblock blk (Q3_K: low 2 bits plus 4 times the
 * hmask bit, offset 4; IQ4_XS: signed grid values) and the float scale of
 * its halves (hs[0], hs[1]) and for Q2_K their mins. */
MMQ_INLINE __m256i mmq_sb_decode(int kind, const void *blk, int g, const float *s, const float *mn,
                                 float hs[2], float hm[2])
{
    if (kind == SL_TYPE_IQ4_XS) {
        const sl_block_iq4_xs *x = blk;
        hs[0] = hs[1] = s[g];
        return mmq_iq4_values(mmq_nibbles(x->qs + 16 * g));
    }
    const uint8_t *qs = kind == SL_TYPE_Q2_K ? ((const sl_block_q2_K *)blk)->qs : ((const sl_block_q3_K *)blk)->qs;
    __m256i v = _mm256_loadu_si256((const __m256i *)(qs + 32 * (g / 4)));
    v = _mm256_and_si256(_mm256_srl_epi16(v, _mm_cvtsi32_si128(2 * (g % 4))), _mm256_set1_epi8(3));
    hs[0] = s[2 * g], hs[1] = s[2 * g + 1];
    if (kind == SL_TYPE_Q2_K) {
        hm[0] = mn[2 * g], hm[1] = mn[2 * g + 1];
        return v;
    }
    const sl_block_q3_K *x = blk;
    __m256i h = _mm256_loadu_si256((const __m256i *)x->hmask);
    h = _mm256_and_si256(_mm256_srl_epi16(h, _mm_cvtsi32_si128(g)), _mm256_set1_epi8(1));
    return _mm256_or_si256(v, _mm256_slli_epi16(h, 2));
}

/* Per-superblock float scales: s[16] for the halves (IQ4_XS: s[8] per
 * group) and Q2_K's mins mn[16]. */
MMQ_INLINE const void *mmq_sb_prep(int kind, const uint8_t *w, int64_t sb, float *s, float *mn)
{
    if (kind == SL_TYPE_IQ4_XS) {
        const sl_block_iq4_xs *x = (const sl_block_iq4_xs *)w + sb;
        float d = mmq_f16(x->d);
        for (int j = 0; j < 8; j++)
            s[j] = d * (float)sl_iq4xs_scale(x->scales_l, x->scales_h, j);
        return x;
    }
    if (kind == SL_TYPE_Q2_K) {
        const sl_block_q2_K *x = (const sl_block_q2_K *)w + sb;
        float d = mmq_f16(x->d), dmin = mmq_f16(x->dmin);
        for (int g = 0; g < 16; g++) {
            s[g] = d * (float)(x->scales[g] & 0xf);
            mn[g] = dmin * (float)(x->scales[g] >> 4);
        }
        return x;
    }
    const sl_block_q3_K *x = (const sl_block_q3_K *)w + sb;
    float d = mmq_f16(x->d);
    int8_t sc[16];
    sl_q3k_scales(x->scales, sc);
    for (int g = 0; g < 16; g++)
        s[g] = d * (float)sc[g];
    return x;
}

MMQ_INLINE void tile_sb(int kind, const uint8_t *w, size_t rb, const sl_q8act *a, int64_t t0,
                        float *y, int64_t ldy, const int R, const int T)
{
    __m256 acc[4][4];
    float macc[4][4];
    MMQ_UNROLL
    for (int r = 0; r < R; r++)
        MMQ_UNROLL
        for (int t = 0; t < T; t++)
            acc[r][t] = _mm256_setzero_ps(), macc[r][t] = 0;
    for (int64_t sb = 0; sb < a->n_blocks / 8; sb++) {
        const void *blk[4];
        float s[4][16], mn[4][16];
        MMQ_UNROLL
        for (int r = 0; r < R; r++)
            blk[r] = mmq_sb_prep(kind, w + (size_t)r * rb, sb, s[r], mn[r]);
        for (int g = 0; g < 8; g++) {
            __m256i q[4];
            __m256 sv[4];
            float hm[4][2];
            MMQ_UNROLL
            for (int r = 0; r < R; r++) {
                float hs[2];
                q[r] = mmq_sb_decode(kind, blk[r], g, s[r], mn[r], hs, hm[r]);
                sv[r] = _mm256_set_m128(_mm_set1_ps(hs[1]), _mm_set1_ps(hs[0]));
            }
            MMQ_UNROLL
            for (int t = 0; t < T; t++) {
                int64_t b = 8 * sb + g;
                __m256i aq = mmq_act(a, t0 + t, b);
                float dab = a->d[(t0 + t) * a->n_blocks + b];
                __m256 da = _mm256_set1_ps(dab);
                MMQ_UNROLL
                for (int r = 0; r < R; r++) {
                    __m256i idot;
                    if (kind == SL_TYPE_IQ4_XS)
                        idot = mmq_sdot(q[r], aq, a, t0 + t, b);
                    else if (kind == SL_TYPE_Q3_K)
                        idot = mmq_dot(mmq_neg_corr(a, t0 + t, b, 2), q[r], aq);
                    else
                        idot = mmq_dot(_mm256_setzero_si256(), q[r], aq);
                    acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(idot), _mm256_mul_ps(sv[r], da), acc[r][t]);
                    if (kind == SL_TYPE_Q2_K) {
                        const int32_t *s16 = a->s16 + (t0 + t) * (a->n_in / 16) + 2 * b;
                        macc[r][t] += (hm[r][0] * dab) * (float)s16[0] + (hm[r][1] * dab) * (float)s16[1];
                    }
                }
            }
        }
    }
    MMQ_UNROLL
    for (int r = 0; r < R; r++)
        MMQ_UNROLL
        for (int t = 0; t < T; t++)
            y[(t0 + t) * ldy + r] = mmq_hsum(acc[r][t]) - macc[r][t];
}

#define MMQ_SB(type, KIND)                                                                    \
    MMQ_INLINE void tile_##type(const uint8_t *w, size_t rb, const sl_q8act *a, int64_t t0,  \
                                float *y, int64_t ldy, const int R, const int T)              \
    {                                                                                         \
        tile_sb(KIND, w, rb, a, t0, y, ldy, R, T);                                            \
    }
MMQ_SB(q2_K, SL_TYPE_Q2_K)
MMQ_SB(q3_K, SL_TYPE_Q3_K)
MMQ_SB(iq4_xs, SL_TYPE_IQ4_XS)

/* ---- driver over a chunk of rows: tiles of RT rows x TT tokens, then the
 * edges with the same per-pair sequence ---- */

#define MMQ_RT 4
#define MMQ_TT 4

#define MMQ_ROWS(type)                                                                        \
    static void MMQ_NAME(rows_##type)(const uint8_t *w, size_t rb, int64_t o0, int64_t o1,     \
                                      const sl_q8act *a, float *y, int64_t ldy)                \
    {                                                                                         \
        int64_t t = 0;                                                                        \
        for (; t + MMQ_TT <= a->n_tok; t += MMQ_TT) {                                         \
            int64_t o = o0;                                                                   \
            for (; o + MMQ_RT <= o1; o += MMQ_RT)                                             \
                tile_##type(w + (size_t)o * rb, rb, a, t, y + o, ldy, MMQ_RT, MMQ_TT);        \
            for (; o < o1; o++)                                                               \
                tile_##type(w + (size_t)o * rb, rb, a, t, y + o, ldy, 1, MMQ_TT);             \
        }                                                                                     \
        for (; t < a->n_tok; t++) {                                                           \
            int64_t o = o0;                                                                   \
            for (; o + MMQ_RT <= o1; o += MMQ_RT)                                             \
                tile_##type(w + (size_t)o * rb, rb, a, t, y + o, ldy, MMQ_RT, 1);             \
            for (; o < o1; o++)                                                               \
                tile_##type(w + (size_t)o * rb, rb, a, t, y + o, ldy, 1, 1);                  \
        }                                                                                     \
    }

MMQ_ROWS(q4_0)
MMQ_ROWS(q8_0)
MMQ_ROWS(q4_K)
MMQ_ROWS(q6_K)
MMQ_ROWS(q4_1)
MMQ_ROWS(q5_0)
MMQ_ROWS(q5_1)
MMQ_ROWS(iq4_nl)
MMQ_ROWS(q5_K)
MMQ_ROWS(q2_K)
MMQ_ROWS(q3_K)
MMQ_ROWS(iq4_xs)

static sl_mmq_fn mmq_table(sl_type wtype)
{
    switch (wtype) {
    case SL_TYPE_Q4_0: return MMQ_NAME(rows_q4_0);
    case SL_TYPE_Q8_0: return MMQ_NAME(rows_q8_0);
    case SL_TYPE_Q4_K: return MMQ_NAME(rows_q4_K);
    case SL_TYPE_Q6_K: return MMQ_NAME(rows_q6_K);
    case SL_TYPE_Q4_1: return MMQ_NAME(rows_q4_1);
    case SL_TYPE_Q5_0: return MMQ_NAME(rows_q5_0);
    case SL_TYPE_Q5_1: return MMQ_NAME(rows_q5_1);
    case SL_TYPE_IQ4_NL: return MMQ_NAME(rows_iq4_nl);
    case SL_TYPE_Q5_K: return MMQ_NAME(rows_q5_K);
    case SL_TYPE_Q2_K: return MMQ_NAME(rows_q2_K);
    case SL_TYPE_Q3_K: return MMQ_NAME(rows_q3_K);
    case SL_TYPE_IQ4_XS: return MMQ_NAME(rows_iq4_xs);
    default: return NULL;
    }
}
