/* Weights repacked 16 rows at a time (kernels/matmul.h, sl_pack) for AVX-512
 * VNNI: one vpdpbusd multiplies 4 consecutive weights of each of 16 rows by
 * the same 4 activation quants (a broadcast dword), so the 16 int32 lanes are
 * the 16 rows' partial dots and a block costs a handful of instructions for
 * all 16 rows, with one scale vector (16 weight scales times the activation
 * scale) and one FMA. Lane r follows the same sequence of operations for
 * every batch and tile, so the determinism contract holds.
 *
 * Layout per group of 16 rows and block of 32 (groups outermost, then
 * blocks, so a group streams through memory; a sliced copy of wide rows,
 * matmul_internal.h, is this layout once for each slice of columns, the
 * slices one after another, and the kernels run on one slice at a time
 * with the lanes' sums carried through y, sl_q8act's carry):
 *   Q4_0: 16 f16 scales, then for k = 0..3 and each row the 4 bytes
 *         qs[4k..4k+3] of that row (low nibbles: elements 4k.., high: 16+4k..)
 *   Q4_1, Q5_0, Q5_1: Q4_0's, with 16 f16 mins after the scales (Q4_1,
 *         Q5_1) and after the nibbles (Q5_0, Q5_1) the fifth bits: for
 *         k = 0..3 two 64-bit masks (low then high nibbles), bit 4r + j
 *         set when element j of row r's dword k has its fifth bit
 *   Q8_0: 16 f16 scales, then for k = 0..7 and each row the 4 quants
 *         4k..4k+3 of that row plus 128 (as unsigned bytes).
 * and per group and superblock of 256:
 *   Q4_K: 16 f16 d, 16 f16 dmin, the 6-bit scales and mins unpacked to
 *         bytes [sub-block][row], then for each pair j of sub-blocks and
 *         k = 0..7 each row's bytes qs[32j + 4k ..] (low nibbles: sub-block
 *         2j, high: 2j + 1)
 *   Q6_K: 16 f16 d, the 16 int8 scales as [scale][row], then for each
 *         dword m = 0..31 each row's 4 bytes with the low 4 bits of dword
 *         m's quants in their low nibbles and dword m + 32's in the high
 *         ones, then for m = 0..15 each row's 4 bytes holding the high 2
 *         bits of dwords m, m + 16, m + 32, m + 48 (bits 0-1 .. 6-7): the
 *         file's 210 bytes a row. */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/matmul_internal.h"
#include "util/mem.h"

#define R16_INLINE static inline __attribute__((always_inline))
#define R16_UNROLL _Pragma("GCC unroll 16")
/* Most tokens one pass over a group's weights serves: a verification batch
 * of a few draft tokens (up to 8) reads and unpacks the weights once. */
#define R16_TMAX 8
/* Software prefetch this many bytes ahead of the weights in use, into L2,
 * for tiles of 2 tokens and more: the hardware streamer alone leaves such a
 * pass short of the read bandwidth (the scheduler fills with the block's
 * multiply-adds waiting on their loads, so loads further on issue late).
 * 3 KB streamed Q4_0 ~5% faster than 2 KB at 2 threads (1 KB and 4 KB
 * slower); Q8_0 and Q4_K the same at 2 and 3 KB.
 * Tiles of one token skip this one. A decode step of Q4_0, Q8_0, Q5_0,
 * Q4_K or Q6_K does not come here but goes to the one-token kernels
 * (matmul_r16d_avx512.c), which prefetch into L1 as far ahead as their
 * type measured best (8 KB; Q8_0 none): see R16D_PF_* there. Here one
 * token comes only for Q4_1 and Q5_1 and under SLUICE_R16_ONE=0. What
 * set one token apart, measured before the one-token kernels existed: this
 * L2 prefetch 3 KB ahead slowed one-token passes (2-vCPU Zen 5, synth
 * Gemma 3 1B at 2 threads, decode paired with and without it, Q8_0
 * 42.4-43.6 -> 46.4-47.2 tok/s without, Q4_0 68.5-73.1 -> 70.9-74.6,
 * Q4_K_M 53.0-55.4 -> 53.8-55.1; a plain read of 256 MB streamed 71 GB/s
 * without prefetches and 48 GB/s with them 3 KB ahead into L2). It is not
 * that one token does best without any prefetch: 8 KB ahead into L1 is
 * what the one-token kernels gained from. */
#define R16_PF_DIST 3072

/* Asks for the cache lines of [p + R16_PF_DIST, + bytes) ahead of use, in
 * a tile of T tokens. */
R16_INLINE void r16_prefetch(const uint8_t *p, const int bytes, const int T)
{
    if (T == 1)
        return;
    R16_UNROLL
    for (int i = 0; i < bytes; i += 64)
        _mm_prefetch((const char *)p + R16_PF_DIST + i, _MM_HINT_T1);
}

R16_INLINE __m512i r16_bcast(const int8_t *q)
{
    int32_t v;
    memcpy(&v, q, 4);
    return _mm512_set1_epi32(v);
}

/* The lanes' start: 0, or what y holds when a carries the sums of the
 * slices before (a sliced packed copy, sl_q8act's carry). */
R16_INLINE void r16_start(__m512 *acc, const float *y, int64_t ldy, const sl_q8act *a, int T)
{
    R16_UNROLL
    for (int t = 0; t < T; t++)
        acc[t] = a->carry ? _mm512_loadu_ps(y + t * ldy) : _mm512_setzero_ps();
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
    __m512 acc[R16_TMAX];
    r16_start(acc, y, ldy, a, T);
    const __m512i m4 = _mm512_set1_epi8(15);
    for (int64_t b = 0; b < a->n_blocks; b++, p += SL_R16_Q4_0_BYTES) {
        r16_prefetch(p, SL_R16_Q4_0_BYTES, T);
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
            int64_t ab = (t0 + t) * (a->ld_in / 32) + b;
            const int8_t *q = a->q + (t0 + t) * a->ld_in + 32 * b;
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

/* Q4_1, Q5_0, Q5_1 (kind): Q4_0's nibbles, the fifth bits added as 16 under
 * a byte mask, Q5_0's offset of 16 taken off through the lanes' start like
 * Q4_0's 8, and the mins (Q4_1, Q5_1) times the activations' d * sum. */
R16_INLINE void tile_b32(const int kind, const uint8_t *p, const sl_q8act *a, int64_t t0,
                         float *y, int64_t ldy, const int T)
{
    const int has_min = kind != SL_TYPE_Q5_0, has_hi = kind != SL_TYPE_Q4_1;
    const size_t bytes = has_min ? (has_hi ? SL_R16_Q5_1_BYTES : SL_R16_Q4_1_BYTES) : SL_R16_Q5_0_BYTES;
    __m512 acc[R16_TMAX];
    r16_start(acc, y, ldy, a, T);
    const __m512i m4 = _mm512_set1_epi8(15), b4 = _mm512_set1_epi8(16);
    for (int64_t b = 0; b < a->n_blocks; b++, p += bytes) {
        r16_prefetch(p, (int)bytes, T);
        __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
        __m512 mw = has_min ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + 32)))
                            : _mm512_setzero_ps();
        const uint8_t *qs = p + (has_min ? 64 : 32), *hb = qs + 256;
        __m512i lo[4], hi[4];
        R16_UNROLL
        for (int k = 0; k < 4; k++) {
            __m512i v = _mm512_loadu_si512(qs + 64 * k);
            lo[k] = _mm512_and_si512(v, m4);
            hi[k] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
            if (has_hi) {
                uint64_t ml, mh;
                memcpy(&ml, hb + 16 * k, 8);
                memcpy(&mh, hb + 16 * k + 8, 8);
                lo[k] = _mm512_mask_add_epi8(lo[k], _cvtu64_mask64(ml), lo[k], b4);
                hi[k] = _mm512_mask_add_epi8(hi[k], _cvtu64_mask64(mh), hi[k], b4);
            }
        }
        R16_UNROLL
        for (int t = 0; t < T; t++) {
            int64_t ab = (t0 + t) * (a->ld_in / 32) + b;
            const int8_t *q = a->q + (t0 + t) * a->ld_in + 32 * b;
            __m512i i0 = kind == SL_TYPE_Q5_0 ? _mm512_set1_epi32(-16 * a->sum[ab]) : _mm512_setzero_si512();
            __m512i i1 = _mm512_setzero_si512();
            R16_UNROLL
            for (int k = 0; k < 4; k++) {
                i0 = _mm512_dpbusd_epi32(i0, lo[k], r16_bcast(q + 4 * k));
                i1 = _mm512_dpbusd_epi32(i1, hi[k], r16_bcast(q + 16 + 4 * k));
            }
            __m512 scale = _mm512_mul_ps(dw, _mm512_set1_ps(a->d[ab]));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(i0, i1)), scale, acc[t]);
            if (has_min)
                acc[t] = _mm512_fmadd_ps(mw, _mm512_set1_ps(a->ds[ab]), acc[t]);
        }
    }
    r16_store(y, acc, ldy, T);
}

R16_INLINE void tile_q4_1(const uint8_t *p, const sl_q8act *a, int64_t t0, float *y,
                          int64_t ldy, const int T)
{
    tile_b32(SL_TYPE_Q4_1, p, a, t0, y, ldy, T);
}

R16_INLINE void tile_q5_0(const uint8_t *p, const sl_q8act *a, int64_t t0, float *y,
                          int64_t ldy, const int T)
{
    tile_b32(SL_TYPE_Q5_0, p, a, t0, y, ldy, T);
}

R16_INLINE void tile_q5_1(const uint8_t *p, const sl_q8act *a, int64_t t0, float *y,
                          int64_t ldy, const int T)
{
    tile_b32(SL_TYPE_Q5_1, p, a, t0, y, ldy, T);
}

R16_INLINE void tile_q8_0(const uint8_t *p, const sl_q8act *a, int64_t t0, float *y,
                          int64_t ldy, const int T)
{
    __m512 acc[R16_TMAX];
    r16_start(acc, y, ldy, a, T);
    for (int64_t b = 0; b < a->n_blocks; b++, p += SL_R16_Q8_0_BYTES) {
        r16_prefetch(p, SL_R16_Q8_0_BYTES, T);
        __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
        __m512i wq[8];
        R16_UNROLL
        for (int k = 0; k < 8; k++)
            wq[k] = _mm512_loadu_si512(p + 32 + 64 * k);
        R16_UNROLL
        for (int t = 0; t < T; t++) {
            int64_t ab = (t0 + t) * (a->ld_in / 32) + b;
            const int8_t *q = a->q + (t0 + t) * a->ld_in + 32 * b;
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
    __m512 acc[R16_TMAX];
    r16_start(acc, y, ldy, a, T);
    const __m512i m4 = _mm512_set1_epi8(15);
    for (int64_t sb = 0; sb < a->n_blocks / 8; sb++, p += SL_R16_Q4_K_BYTES) {
        __m512 dv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
        __m512 dmv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + 32)));
        const uint8_t *sc = p + 64, *mn = p + 192, *qs = p + 320;
        for (int j = 0; j < 4; j++) {
            r16_prefetch(p + j * (SL_R16_Q4_K_BYTES / 4), SL_R16_Q4_K_BYTES / 4, T);
            __m512i lo[R16_TMAX], hi[R16_TMAX];
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
                    const int8_t *q = a->q + (t0 + t) * a->ld_in + 256 * sb + 64 * j;
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
                int64_t ab = (t0 + t) * (a->ld_in / 32) + 8 * sb;
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
    return _mm512_set1_epi32(-32 * a->s16[t * (a->ld_in / 16) + elem / 16]);
}

/* The 16 rows' quants (0..63, a byte each) of dword kk of a superblock
 * whose 4-bit parts start at ql and 2-bit parts at qh; hq = kk / 16. */
R16_INLINE __m512i r16_q6_quants(const uint8_t *ql, const uint8_t *qh, int kk, const int hq)
{
    const __m512i m4 = _mm512_set1_epi8(15), m30 = _mm512_set1_epi8(0x30);
    __m512i v = _mm512_loadu_si512(ql + 64 * (kk % 32));
    __m512i lo = hq < 2 ? _mm512_and_si512(v, m4) : _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
    __m512i h = _mm512_loadu_si512(qh + 64 * (kk % 16));
    /* bits 2 hq, 2 hq + 1 of each byte to bits 4, 5 (16-bit shifts: what
     * crosses a byte is masked off) */
    h = hq < 2 ? _mm512_slli_epi16(h, 4 - 2 * hq) : hq > 2 ? _mm512_srli_epi16(h, 2) : h;
    return _mm512_ternarylogic_epi32(h, m30, lo, 0xEA); /* (h & 0x30) | lo */
}

/* Runs 4 hq .. 4 hq + 3 of 16 elements of Q6_K superblock sb (p at its
 * group data): each run's scale covers 4 dwords; the lane starts at -32
 * times the activations' sum over those 16, then four dot products. */
R16_INLINE void q6_K_runs(const uint8_t *p, const sl_q8act *a, int64_t t0, int64_t sb,
                          __m512 *acc, const int hq, const int T)
{
    __m512 dv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
    const uint8_t *sc = p + 32, *ql = p + 288, *qh = p + 288 + 2048;
    for (int h = 4 * hq; h < 4 * hq + 4; h++) { /* 16-element run h: scale h, block h / 2 */
        r16_prefetch(p + h * (SL_R16_Q6_K_BYTES / 16), SL_R16_Q6_K_BYTES / 16, T);
        __m512i w[4];
        R16_UNROLL
        for (int k = 0; k < 4; k++)
            w[k] = r16_q6_quants(ql, qh, 4 * h + k, hq);
        __m512 s = _mm512_mul_ps(dv, r16_i8_ps(sc + 16 * h));
        R16_UNROLL
        for (int t = 0; t < T; t++) {
            const int8_t *aq = a->q + (t0 + t) * a->ld_in + 256 * sb + 16 * h;
            __m512i i0 = r16_q6_corr(a, t0 + t, 256 * sb + 16 * h), i1 = _mm512_setzero_si512();
            i0 = _mm512_dpbusd_epi32(i0, w[0], r16_bcast(aq));
            i1 = _mm512_dpbusd_epi32(i1, w[1], r16_bcast(aq + 4));
            i0 = _mm512_dpbusd_epi32(i0, w[2], r16_bcast(aq + 8));
            i1 = _mm512_dpbusd_epi32(i1, w[3], r16_bcast(aq + 12));
            __m512 da = _mm512_set1_ps(a->d[(t0 + t) * (a->ld_in / 32) + 8 * sb + h / 2]);
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(i0, i1)),
                                     _mm512_mul_ps(s, da), acc[t]);
        }
    }
}

/* Q6_K at the file's density, its quants put together per dword in
 * registers (r16_q6_quants), the runs in order (the float sums' order). */
R16_INLINE void tile_q6_K(const uint8_t *p, const sl_q8act *a, int64_t t0, float *y,
                          int64_t ldy, const int T)
{
    __m512 acc[R16_TMAX];
    r16_start(acc, y, ldy, a, T);
    for (int64_t sb = 0; sb < a->n_blocks / 8; sb++, p += SL_R16_Q6_K_BYTES) {
        q6_K_runs(p, a, t0, sb, acc, 0, T);
        q6_K_runs(p, a, t0, sb, acc, 1, T);
        q6_K_runs(p, a, t0, sb, acc, 2, T);
        q6_K_runs(p, a, t0, sb, acc, 3, T);
    }
    r16_store(y, acc, ldy, T);
}

#include "kernels/matmul_r16pf_avx512.h"

#define R16_TT 4

/* Tokens [t, n_tok) of group p in tiles of R16_TMAX, then one tile of the
 * rest: every token runs the same per-lane sequence in any tile width. */
#define R16_GROUPS(type)                                                                      \
    static void groups_##type(const uint8_t *packed, int64_t g0, int64_t g1, const sl_q8act *a, \
                              float *y, int64_t ldy)                                          \
    {                                                                                         \
        size_t group_bytes = sl_r16_group_bytes(SL_TYPE_##type, a->n_in);                     \
        for (int64_t g = g0; g < g1; g++) {                                                   \
            const uint8_t *p = packed + (size_t)g * group_bytes;                              \
            float *yg = y + 16 * g;                                                           \
            int64_t t = 0;                                                                    \
            for (; t + R16_TMAX <= a->n_tok; t += R16_TMAX)                                   \
                tile_##type(p, a, t, yg + t * ldy, ldy, R16_TMAX);                            \
            switch (a->n_tok - t) {                                                           \
            case 7: tile_##type(p, a, t, yg + t * ldy, ldy, 7); break;                        \
            case 6: tile_##type(p, a, t, yg + t * ldy, ldy, 6); break;                        \
            case 5: tile_##type(p, a, t, yg + t * ldy, ldy, 5); break;                        \
            case 4: tile_##type(p, a, t, yg + t * ldy, ldy, 4); break;                        \
            case 3: tile_##type(p, a, t, yg + t * ldy, ldy, 3); break;                        \
            case 2: tile_##type(p, a, t, yg + t * ldy, ldy, 2); break;                        \
            case 1: tile_##type(p, a, t, yg + t * ldy, ldy, 1); break;                        \
            default: break;                                                                   \
            }                                                                                 \
        }                                                                                     \
    }

#define SL_TYPE_q4_0 SL_TYPE_Q4_0
#define SL_TYPE_q8_0 SL_TYPE_Q8_0
#define SL_TYPE_q4_K SL_TYPE_Q4_K
#define SL_TYPE_q6_K SL_TYPE_Q6_K
#define SL_TYPE_q4_1 SL_TYPE_Q4_1
#define SL_TYPE_q5_0 SL_TYPE_Q5_0
#define SL_TYPE_q5_1 SL_TYPE_Q5_1
R16_GROUPS(q4_0)
R16_GROUPS(q8_0)
R16_GROUPS(q4_K)
R16_GROUPS(q6_K)
R16_GROUPS(q4_1)
R16_GROUPS(q5_0)
R16_GROUPS(q5_1)

/* Pairs of groups through the two-group prefill tile, TB tokens a tile
 * (then 4 while 4 are left, for TB > 4); an odd group and the tokens after
 * the last whole tile take the one-group path. PF2_ARGS(p) passes a pair's
 * weights (and for Q5_0 and Q5_1 its codes unpacked, PF2_PRE(p)). */
#define PF2_GROUPS_WITH(type, TB, PF2_PRE, PF2_ARGS)                                          \
    static void groups2_##type(const uint8_t *packed, int64_t g0, int64_t g1, const sl_q8act *a, \
                               float *y, int64_t ldy)                                         \
    {                                                                                         \
        const int kind = SL_TYPE_##type;                                                      \
        size_t gbytes = sl_r16_group_bytes(kind, a->n_in);                                    \
        int64_t n_big = a->n_tok / (TB) * (TB);                                               \
        int64_t n_full = n_big + (a->n_tok - n_big) / 4 * 4, g = g0;                          \
        for (; n_full > 0 && g + 2 <= g1; g += 2) {                                           \
            const uint8_t *p = packed + (size_t)g * gbytes;                                   \
            PF2_PRE(p);                                                                       \
            int64_t t = 0;                                                                    \
            for (; t < n_big; t += (TB))                                                      \
                pf2_##type(PF2_ARGS(p), a, t, y + 16 * g + t * ldy, ldy, TB);                 \
            for (; t < n_full; t += 4)                                                        \
                pf2_##type(PF2_ARGS(p), a, t, y + 16 * g + t * ldy, ldy, 4);                  \
            if (n_full < a->n_tok) {                                                          \
                sl_q8act rest = sl_q8act_tokens(a, n_full, a->n_tok);                         \
                groups_##type(packed, g, g + 2, &rest, y + n_full * ldy, ldy);                \
            }                                                                                 \
        }                                                                                     \
        if (g < g1)                                                                           \
            groups_##type(packed, g, g1, a, y, ldy);                                          \
    }
#define PF2_NO_PRE(p) (void)0
#define PF2_PLAIN(p) p, gbytes
#define PF2_GROUPS(type, TB) PF2_GROUPS_WITH(type, TB, PF2_NO_PRE, PF2_PLAIN)
/* the unpacked codes when the row fits (PF2_U_MAX), else NULL */
#define PF2_UNPACK(p)                                                                         \
    _Alignas(64) uint8_t u_codes[PF2_U_MAX / 32 * PF2_U_BLOCK];                               \
    const uint8_t *u = a->n_in <= PF2_U_MAX ? u_codes : NULL;                                 \
    if (u)                                                                                    \
        pf2_unpack(kind, p, gbytes, a->n_blocks, u_codes)
#define PF2_WITH_U(p) p, gbytes, u
PF2_GROUPS(q4_0, 4)
PF2_GROUPS(q8_0, 4)
PF2_GROUPS(q4_1, 4)
PF2_GROUPS_WITH(q5_0, 4, PF2_UNPACK, PF2_WITH_U)
PF2_GROUPS_WITH(q5_1, 4, PF2_UNPACK, PF2_WITH_U)
PF2_GROUPS(q4_K, 4)
/* The calling thread's buffer for a pair of Q6_K groups' codes, kept
 * between calls and grown to the widest row seen (216 KB at 6912); NULL
 * if it cannot be had (the tiles then unpack for themselves). */
static uint8_t *q6u_get(size_t bytes)
{
    return sl_thread_scratch(SL_SCRATCH_Q6UNPACK, bytes);
}

#define PF2_Q6_UNPACK(p)                                                                      \
    uint8_t *u = q6u_get((size_t)(a->n_blocks / 8) * PF2_Q6_U_SB);                            \
    if (u)                                                                                    \
        pf2_q6_unpack(p, gbytes, a->n_blocks / 8, u)
PF2_GROUPS_WITH(q6_K, 8, PF2_Q6_UNPACK, PF2_WITH_U)

sl_r16_fn sl_r16_avx512(sl_type wtype)
{
    switch (wtype) {
    case SL_TYPE_Q4_0: return groups2_q4_0;
    case SL_TYPE_Q8_0: return groups2_q8_0;
    case SL_TYPE_Q4_K: return groups2_q4_K;
    case SL_TYPE_Q6_K: return groups2_q6_K;
    case SL_TYPE_Q4_1: return groups2_q4_1;
    case SL_TYPE_Q5_0: return groups2_q5_0;
    case SL_TYPE_Q5_1: return groups2_q5_1;
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

/* ---- BF16 weights, activations rounded to bf16 (AVX512-BF16) ----
 * The same layout; vdpbf16ps multiplies each row's pair of weights by the
 * token's pair of activations (one broadcast dword) and adds both products
 * into the row's lane: one instruction per 32 multiply-adds. Two chains per
 * lane (even and odd pairs), summed at the end. */

R16_INLINE void tile_bf16dp(const uint8_t *p, int64_t n_pairs, const uint32_t *xp, float *y,
                            int64_t ldy, const int T)
{
    __m512 ev[4], od[4];
    R16_UNROLL
    for (int t = 0; t < T; t++)
        ev[t] = od[t] = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 2 <= n_pairs; i += 2, p += 128) {
        __m512bh w0 = (__m512bh)_mm512_loadu_si512(p), w1 = (__m512bh)_mm512_loadu_si512(p + 64);
        R16_UNROLL
        for (int t = 0; t < T; t++) {
            ev[t] = _mm512_dpbf16_ps(ev[t], w0, (__m512bh)_mm512_set1_epi32((int)xp[t * n_pairs + i]));
            od[t] = _mm512_dpbf16_ps(od[t], w1, (__m512bh)_mm512_set1_epi32((int)xp[t * n_pairs + i + 1]));
        }
    }
    if (i < n_pairs) {
        __m512bh w0 = (__m512bh)_mm512_loadu_si512(p);
        R16_UNROLL
        for (int t = 0; t < T; t++)
            ev[t] = _mm512_dpbf16_ps(ev[t], w0, (__m512bh)_mm512_set1_epi32((int)xp[t * n_pairs + i]));
    }
    R16_UNROLL
    for (int t = 0; t < T; t++)
        _mm512_storeu_ps(y + t * ldy, _mm512_add_ps(ev[t], od[t]));
}

static void groups_bf16dp(const uint8_t *packed, int64_t g0, int64_t g1, const uint32_t *xp,
                          int64_t n_tok, int64_t n_in, float *y, int64_t ldy)
{
    size_t group_bytes = (size_t)n_in * 32;
    int64_t n_pairs = n_in / 2;
    for (int64_t g = g0; g < g1; g++) {
        const uint8_t *p = packed + (size_t)g * group_bytes;
        int64_t t = 0;
        for (; t + R16_TT <= n_tok; t += R16_TT)
            tile_bf16dp(p, n_pairs, xp + t * n_pairs, y + t * ldy + 16 * g, ldy, R16_TT);
        for (; t < n_tok; t++)
            tile_bf16dp(p, n_pairs, xp + t * n_pairs, y + t * ldy + 16 * g, ldy, 1);
    }
}

sl_r16b_fn sl_r16b_avx512(sl_type wtype)
{
    return wtype == SL_TYPE_BF16 ? groups_bf16dp : NULL;
}
