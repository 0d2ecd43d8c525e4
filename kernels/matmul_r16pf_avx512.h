/* The prefill tiles of the 16-row VNNI kernels (matmul_r16_avx512.c, which
 * includes this file after its helpers and one-group tiles), for the
 * many-token calls of a prefill batch; the one-group tiles keep decode and
 * small batches. Each lane runs the one-group tiles' per-block float steps
 * (scale = weight scale * activation scale, the block's exact integer dot
 * converted, one FMA into the accumulator), so a token's bits do not depend
 * on the tile it runs in; only the integer work, exact in any order, is
 * arranged differently.
 *
 * Two groups (32 rows) and T tokens at a time: each broadcast activation
 * dword feeds the dot products of both groups, halving the loads a dot
 * product costs (the 16-row tile issued a broadcast load for every
 * vpdpbusd, and the loads, not the multiply-adds, set its pace), and each
 * unpacked weight vector feeds 2 T of them. On Zen 5 vpdpbusd shares its two
 * pipes with the float multiplies and FMAs (the other vector ops run beside
 * them), so a block's float steps, fixed by the bits, cap a tile: Q4_0,
 * Q5_0 and Q8_0 at 8 of every 10 issue slots, Q4_K at 8 of 11, Q6_K at 4 of
 * 6; what the tiles are arranged for is to keep the integer chains many
 * (the instruction's latency is 8 issue slots) and the unpacking and other
 * vector work within the remaining pipes.
 *
 * No software prefetch: a prefill chunk's weights are read from memory on
 * the first pass of a token block and from L1/L2 on the others. */
#define PF2_TMAX 8

#include "kernels/matmul_r16_b32_avx512.h"

/* Q5_0 and Q5_1 in a prefill: a pair of groups' codes, fifth bits added,
 * unpacked once a call into the calling thread's stack (pf2_unpack), then
 * loaded by every token tile. Unpacking a column (two loads of fifth-bit
 * masks, a shift, two ands, two masked adds a group) cost the tile about a
 * fifth of its speed against Q4_0's; made once, it is spread over the
 * call's tiles (128 for a 512-token prefill). The integer sums are the
 * same whichever way the codes come, so the bits are too. Per block of 32,
 * PF2_U_BLOCK bytes: for k = 0..3 the low nibbles' codes of group 0, the
 * high ones', then group 1's. Rows up to PF2_U_MAX elements wide (Gemma 3
 * 1B's Q5_0 rows are 1152) take it; wider rows unpack in the tile. */
#define PF2_U_BLOCK 1024
#define PF2_U_MAX 2048

R16_INLINE void pf2_unpack(const int kind, const uint8_t *p0, size_t gbytes, int64_t nb, uint8_t *u)
{
    const r16_b32_fmt f = r16_b32_fmt_of(kind);
    const uint8_t *p1 = p0 + gbytes;
    const size_t qo = f.has_min ? 64 : 32;
    for (int64_t b = 0; b < nb; b++, p0 += f.bytes, p1 += f.bytes, u += PF2_U_BLOCK) {
        R16_UNROLL
        for (int k = 0; k < 4; k++) {
            __m512i l0, h0, l1, h1;
            r16_b32_unpack2(p0 + qo, p1 + qo, k, f.has_hi, &l0, &h0, &l1, &h1);
            _mm512_store_si512(u + 256 * k, l0);
            _mm512_store_si512(u + 256 * k + 64, h0);
            _mm512_store_si512(u + 256 * k + 128, l1);
            _mm512_store_si512(u + 256 * k + 192, h1);
        }
    }
}

/* Q4_0, Q4_1, Q5_0, Q5_1 (kind), tile_b32's steps: per block the 4 dword
 * columns k of both groups' nibbles (and fifth bits, added as 16 under a
 * byte mask) unpacked once for the T tokens, Q4_0's offset of 8 and Q5_0's
 * of 16 taken off through the lanes' start, and the mins (Q4_1, Q5_1) times
 * the activations' d * sum after the block's FMA. A lane sums its block in
 * two integer chains (low and high nibbles) when the registers allow
 * (split), so 4 T chains cover the latency. */
R16_INLINE void pf2_b32(const int kind, const uint8_t *p0, size_t gbytes, const uint8_t *u,
                        const sl_q8act *a, int64_t t0, float *y, int64_t ldy, const int T,
                        const int split)
{
    const r16_b32_fmt f = r16_b32_fmt_of(kind);
    const int has_min = f.has_min, has_hi = f.has_hi, off = f.off;
    const size_t bytes = f.bytes;
    __m512 acc0[PF2_TMAX], acc1[PF2_TMAX];
    r16_start(acc0, y, ldy, a, T);
    r16_start(acc1, y + 16, ldy, a, T);
    const int64_t nb = a->n_blocks, lb = a->ld_in / 32, nq = a->ld_in;
    const int8_t *q0 = a->q + t0 * nq;
    const int32_t *s0 = a->sum + t0 * lb;
    const float *d0 = a->d + t0 * lb, *ds0 = a->ds + t0 * lb;
    const uint8_t *p1 = p0 + gbytes;
    for (int64_t b = 0; b < nb; b++, p0 += bytes, p1 += bytes) {
        __m512i i0[PF2_TMAX], i1[PF2_TMAX], j0[PF2_TMAX], j1[PF2_TMAX];
        R16_UNROLL
        for (int t = 0; t < T; t++) {
            i0[t] = i1[t] = off ? _mm512_set1_epi32(-off * s0[t * lb + b]) : _mm512_setzero_si512();
            if (split)
                j0[t] = j1[t] = _mm512_setzero_si512();
        }
        const uint8_t *qs0 = p0 + (has_min ? 64 : 32), *qs1 = p1 + (has_min ? 64 : 32);
        R16_UNROLL
        for (int k = 0; k < 4; k++) {
            __m512i l0, h0, l1, h1;
            if (u) {
                const uint8_t *ub = u + PF2_U_BLOCK * b + 256 * k;
                l0 = _mm512_load_si512(ub);
                h0 = _mm512_load_si512(ub + 64);
                l1 = _mm512_load_si512(ub + 128);
                h1 = _mm512_load_si512(ub + 192);
            } else {
                r16_b32_unpack2(qs0, qs1, k, has_hi, &l0, &h0, &l1, &h1);
            }
            R16_UNROLL
            for (int t = 0; t < T; t++) {
                const int8_t *q = q0 + t * nq + 32 * b + 4 * k;
                __m512i bl = r16_bcast(q), bh = r16_bcast(q + 16);
                i0[t] = _mm512_dpbusd_epi32(i0[t], l0, bl);
                i1[t] = _mm512_dpbusd_epi32(i1[t], l1, bl);
                if (split) {
                    j0[t] = _mm512_dpbusd_epi32(j0[t], h0, bh);
                    j1[t] = _mm512_dpbusd_epi32(j1[t], h1, bh);
                } else {
                    i0[t] = _mm512_dpbusd_epi32(i0[t], h0, bh);
                    i1[t] = _mm512_dpbusd_epi32(i1[t], h1, bh);
                }
            }
        }
        __m512 dw0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p0));
        __m512 dw1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p1));
        R16_UNROLL
        for (int t = 0; t < T; t++) {
            __m512 da = _mm512_set1_ps(d0[t * lb + b]);
            if (split) {
                i0[t] = _mm512_add_epi32(i0[t], j0[t]);
                i1[t] = _mm512_add_epi32(i1[t], j1[t]);
            }
            acc0[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i0[t]), _mm512_mul_ps(dw0, da), acc0[t]);
            acc1[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i1[t]), _mm512_mul_ps(dw1, da), acc1[t]);
        }
        if (has_min) {
            __m512 mw0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p0 + 32)));
            __m512 mw1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p1 + 32)));
            R16_UNROLL
            for (int t = 0; t < T; t++) {
                __m512 ds = _mm512_set1_ps(ds0[t * lb + b]);
                acc0[t] = _mm512_fmadd_ps(mw0, ds, acc0[t]);
                acc1[t] = _mm512_fmadd_ps(mw1, ds, acc1[t]);
            }
        }
    }
    r16_store(y, acc0, ldy, T);
    r16_store(y + 16, acc1, ldy, T);
}

R16_INLINE void pf2_q4_0(const uint8_t *p0, size_t gbytes, const sl_q8act *a, int64_t t0,
                         float *y, int64_t ldy, const int T)
{
    pf2_b32(SL_TYPE_Q4_0, p0, gbytes, NULL, a, t0, y, ldy, T, 1);
}

R16_INLINE void pf2_q4_1(const uint8_t *p0, size_t gbytes, const sl_q8act *a, int64_t t0,
                         float *y, int64_t ldy, const int T)
{
    pf2_b32(SL_TYPE_Q4_1, p0, gbytes, NULL, a, t0, y, ldy, T, 1);
}

R16_INLINE void pf2_q5_0(const uint8_t *p0, size_t gbytes, const uint8_t *u, const sl_q8act *a,
                         int64_t t0, float *y, int64_t ldy, const int T)
{
    pf2_b32(SL_TYPE_Q5_0, p0, gbytes, u, a, t0, y, ldy, T, 1);
}

R16_INLINE void pf2_q5_1(const uint8_t *p0, size_t gbytes, const uint8_t *u, const sl_q8act *a,
                         int64_t t0, float *y, int64_t ldy, const int T)
{
    pf2_b32(SL_TYPE_Q5_1, p0, gbytes, u, a, t0, y, ldy, T, 0);
}

/* Q8_0: 8 dword columns of quants plus 128 (unsigned), each lane starting
 * at -128 times the activations' block sum; even and odd columns in two
 * chains. */
R16_INLINE void pf2_q8_0(const uint8_t *p0, size_t gbytes, const sl_q8act *a, int64_t t0,
                         float *y, int64_t ldy, const int T)
{
    __m512 acc0[PF2_TMAX], acc1[PF2_TMAX];
    r16_start(acc0, y, ldy, a, T);
    r16_start(acc1, y + 16, ldy, a, T);
    const int64_t nb = a->n_blocks, lb = a->ld_in / 32, nq = a->ld_in;
    const int8_t *q0 = a->q + t0 * nq;
    const int32_t *s0 = a->sum + t0 * lb;
    const float *d0 = a->d + t0 * lb;
    const uint8_t *p1 = p0 + gbytes;
    for (int64_t b = 0; b < nb; b++, p0 += SL_R16_Q8_0_BYTES, p1 += SL_R16_Q8_0_BYTES) {
        __m512i i0[PF2_TMAX], i1[PF2_TMAX], j0[PF2_TMAX], j1[PF2_TMAX];
        R16_UNROLL
        for (int t = 0; t < T; t++) {
            i0[t] = i1[t] = _mm512_set1_epi32(-128 * s0[t * lb + b]);
            j0[t] = j1[t] = _mm512_setzero_si512();
        }
        R16_UNROLL
        for (int k = 0; k < 8; k += 2) {
            __m512i w0 = _mm512_loadu_si512(p0 + 32 + 64 * k);
            __m512i w1 = _mm512_loadu_si512(p1 + 32 + 64 * k);
            __m512i x0 = _mm512_loadu_si512(p0 + 96 + 64 * k);
            __m512i x1 = _mm512_loadu_si512(p1 + 96 + 64 * k);
            R16_UNROLL
            for (int t = 0; t < T; t++) {
                const int8_t *q = q0 + t * nq + 32 * b + 4 * k;
                __m512i bq = r16_bcast(q), bq2 = r16_bcast(q + 4);
                i0[t] = _mm512_dpbusd_epi32(i0[t], w0, bq);
                i1[t] = _mm512_dpbusd_epi32(i1[t], w1, bq);
                j0[t] = _mm512_dpbusd_epi32(j0[t], x0, bq2);
                j1[t] = _mm512_dpbusd_epi32(j1[t], x1, bq2);
            }
        }
        __m512 dw0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p0));
        __m512 dw1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p1));
        R16_UNROLL
        for (int t = 0; t < T; t++) {
            __m512 da = _mm512_set1_ps(d0[t * lb + b]);
            acc0[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(i0[t], j0[t])),
                                      _mm512_mul_ps(dw0, da), acc0[t]);
            acc1[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(i1[t], j1[t])),
                                      _mm512_mul_ps(dw1, da), acc1[t]);
        }
    }
    r16_store(y, acc0, ldy, T);
    r16_store(y + 16, acc1, ldy, T);
}

/* Q4_K: per pair j of sub-blocks, the low nibbles (sub-block 2j) and the
 * high ones (2j + 1) of each dword column feed a lane's two integer sums;
 * then tile_q4_K's float steps in its order (scale, min for 2j, then for
 * 2j + 1), a group at a time. */
R16_INLINE void pf2_q4_K_acc(const uint8_t *p, const __m512i *lo, const __m512i *hi,
                             const float *d0, const float *ds0, int64_t lb, int s0, __m512 *acc,
                             const int T)
{
    __m512 dv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
    __m512 dm = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + 32)));
    __m512 sc0 = _mm512_mul_ps(dv, r16_u8_ps(p + 64 + 16 * s0));
    __m512 sc1 = _mm512_mul_ps(dv, r16_u8_ps(p + 64 + 16 * (s0 + 1)));
    __m512 mn0 = _mm512_mul_ps(dm, r16_u8_ps(p + 192 + 16 * s0));
    __m512 mn1 = _mm512_mul_ps(dm, r16_u8_ps(p + 192 + 16 * (s0 + 1)));
    R16_UNROLL
    for (int t = 0; t < T; t++) {
        const float *d = d0 + t * lb + s0, *ds = ds0 + t * lb + s0;
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(lo[t]), _mm512_mul_ps(sc0, _mm512_set1_ps(d[0])), acc[t]);
        acc[t] = _mm512_fnmadd_ps(mn0, _mm512_set1_ps(ds[0]), acc[t]);
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(hi[t]), _mm512_mul_ps(sc1, _mm512_set1_ps(d[1])), acc[t]);
        acc[t] = _mm512_fnmadd_ps(mn1, _mm512_set1_ps(ds[1]), acc[t]);
    }
}

R16_INLINE void pf2_q4_K(const uint8_t *p0, size_t gbytes, const sl_q8act *a, int64_t t0,
                         float *y, int64_t ldy, const int T)
{
    __m512 acc0[PF2_TMAX], acc1[PF2_TMAX];
    r16_start(acc0, y, ldy, a, T);
    r16_start(acc1, y + 16, ldy, a, T);
    const __m512i m4 = _mm512_set1_epi8(15);
    const int64_t nb = a->n_blocks, lb = a->ld_in / 32, nq = a->ld_in;
    const int8_t *q0 = a->q + t0 * nq;
    const float *d0 = a->d + t0 * lb, *ds0 = a->ds + t0 * lb;
    const uint8_t *p1 = p0 + gbytes;
    for (int64_t sb = 0; sb < nb / 8; sb++, p0 += SL_R16_Q4_K_BYTES, p1 += SL_R16_Q4_K_BYTES) {
        for (int j = 0; j < 4; j++) {
            __m512i lo0[PF2_TMAX], hi0[PF2_TMAX], lo1[PF2_TMAX], hi1[PF2_TMAX];
            R16_UNROLL
            for (int t = 0; t < T; t++)
                lo0[t] = hi0[t] = lo1[t] = hi1[t] = _mm512_setzero_si512();
            const uint8_t *qs0 = p0 + 320 + 512 * j, *qs1 = p1 + 320 + 512 * j;
            R16_UNROLL
            for (int k = 0; k < 8; k++) {
                __m512i v0 = _mm512_loadu_si512(qs0 + 64 * k);
                __m512i v1 = _mm512_loadu_si512(qs1 + 64 * k);
                __m512i l0 = _mm512_and_si512(v0, m4), h0 = _mm512_and_si512(_mm512_srli_epi16(v0, 4), m4);
                __m512i l1 = _mm512_and_si512(v1, m4), h1 = _mm512_and_si512(_mm512_srli_epi16(v1, 4), m4);
                R16_UNROLL
                for (int t = 0; t < T; t++) {
                    const int8_t *q = q0 + t * nq + 256 * sb + 64 * j + 4 * k;
                    __m512i bl = r16_bcast(q), bh = r16_bcast(q + 32);
                    lo0[t] = _mm512_dpbusd_epi32(lo0[t], l0, bl);
                    lo1[t] = _mm512_dpbusd_epi32(lo1[t], l1, bl);
                    hi0[t] = _mm512_dpbusd_epi32(hi0[t], h0, bh);
                    hi1[t] = _mm512_dpbusd_epi32(hi1[t], h1, bh);
                }
            }
            pf2_q4_K_acc(p0, lo0, hi0, d0 + 8 * sb, ds0 + 8 * sb, lb, 2 * j, acc0, T);
            pf2_q4_K_acc(p1, lo1, hi1, d0 + 8 * sb, ds0 + 8 * sb, lb, 2 * j, acc1, T);
        }
    }
    r16_store(y, acc0, ldy, T);
    r16_store(y + 16, acc1, ldy, T);
}

/* Q6_K's codes (0..63) of a pair of groups put together once a call
 * (r16_q6_quants) into u, for the tiles to load (u NULL: each tile puts
 * them together itself): per superblock PF2_Q6_U_SB bytes, for each dword
 * m = 0..63 group 0's 16 rows' 4 codes, then group 1's. Measured on Zen 5
 * (bench/prefill_cost.sh, 2 threads, 512 tokens), 6912 x 1152 went from
 * 925-955 to 1027-1048 GOP/s and 1152 x 6912 from 712-739 to 777-804. */
#define PF2_Q6_U_SB (64 * 128)

R16_INLINE void pf2_q6_unpack(const uint8_t *p0, size_t gbytes, int64_t n_sb, uint8_t *u)
{
    const uint8_t *p1 = p0 + gbytes;
    for (int64_t sb = 0; sb < n_sb; sb++, p0 += SL_R16_Q6_K_BYTES, p1 += SL_R16_Q6_K_BYTES) {
        R16_UNROLL
        for (int hq = 0; hq < 4; hq++)
            for (int m = 16 * hq; m < 16 * hq + 16; m++) {
                _mm512_store_si512(u + 128 * m, r16_q6_quants(p0 + 288, p0 + 288 + 2048, m, hq));
                _mm512_store_si512(u + 128 * m + 64, r16_q6_quants(p1 + 288, p1 + 288 + 2048, m, hq));
            }
        u += PF2_Q6_U_SB;
    }
}

/* Q6_K: runs 4 hq .. 4 hq + 3 of 16 elements of superblock sb, both
 * groups, with q6_K_runs's steps: each lane starts at -32 times the
 * activations' sum over its 16, four dot products, one FMA. A run's
 * unpacking (two loads, a shift or two and a ternary op per weight vector)
 * costs as much as its dot products, so it feeds many tokens. */
R16_INLINE void pf2_q6_K_runs(const uint8_t *p0, const uint8_t *p1, const uint8_t *u,
                              const sl_q8act *a, int64_t t0, int64_t sb, __m512 *acc0,
                              __m512 *acc1, const int hq, const int T)
{
    const int64_t lb = a->ld_in / 32, nq = a->ld_in, ns = a->ld_in / 16;
    __m512 dv0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p0));
    __m512 dv1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p1));
    for (int h = 4 * hq; h < 4 * hq + 4; h++) {
        __m512i w0[4], w1[4];
        R16_UNROLL
        for (int k = 0; k < 4; k++) {
            if (u) {
                w0[k] = _mm512_load_si512(u + PF2_Q6_U_SB * sb + 128 * (4 * h + k));
                w1[k] = _mm512_load_si512(u + PF2_Q6_U_SB * sb + 128 * (4 * h + k) + 64);
            } else {
                w0[k] = r16_q6_quants(p0 + 288, p0 + 288 + 2048, 4 * h + k, hq);
                w1[k] = r16_q6_quants(p1 + 288, p1 + 288 + 2048, 4 * h + k, hq);
            }
        }
        __m512 s0 = _mm512_mul_ps(dv0, r16_i8_ps(p0 + 32 + 16 * h));
        __m512 s1 = _mm512_mul_ps(dv1, r16_i8_ps(p1 + 32 + 16 * h));
        const int8_t *aq = a->q + t0 * nq + 256 * sb + 16 * h;
        const int32_t *as = a->s16 + t0 * ns + 16 * sb + h;
        const float *ad = a->d + t0 * lb + 8 * sb + h / 2;
        R16_UNROLL
        for (int t = 0; t < T; t++) {
            __m512i i0 = _mm512_set1_epi32(-32 * as[t * ns]), i1 = i0;
            R16_UNROLL
            for (int k = 0; k < 4; k++) {
                __m512i q = r16_bcast(aq + t * nq + 4 * k);
                i0 = _mm512_dpbusd_epi32(i0, w0[k], q);
                i1 = _mm512_dpbusd_epi32(i1, w1[k], q);
            }
            __m512 da = _mm512_set1_ps(ad[t * lb]);
            acc0[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i0), _mm512_mul_ps(s0, da), acc0[t]);
            acc1[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i1), _mm512_mul_ps(s1, da), acc1[t]);
        }
    }
}

R16_INLINE void pf2_q6_K(const uint8_t *p0, size_t gbytes, const uint8_t *u, const sl_q8act *a,
                         int64_t t0, float *y, int64_t ldy, const int T)
{
    __m512 acc0[PF2_TMAX], acc1[PF2_TMAX];
    r16_start(acc0, y, ldy, a, T);
    r16_start(acc1, y + 16, ldy, a, T);
    const uint8_t *p1 = p0 + gbytes;
    for (int64_t sb = 0; sb < a->n_blocks / 8; sb++, p0 += SL_R16_Q6_K_BYTES, p1 += SL_R16_Q6_K_BYTES) {
        pf2_q6_K_runs(p0, p1, u, a, t0, sb, acc0, acc1, 0, T);
        pf2_q6_K_runs(p0, p1, u, a, t0, sb, acc0, acc1, 1, T);
        pf2_q6_K_runs(p0, p1, u, a, t0, sb, acc0, acc1, 2, T);
        pf2_q6_K_runs(p0, p1, u, a, t0, sb, acc0, acc1, 3, T);
    }
    r16_store(y, acc0, ldy, T);
    r16_store(y + 16, acc1, ldy, T);
}
