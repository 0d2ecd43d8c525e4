/* The prefill tiles of the 16-row VNNI kernels (matmul_r16_avx512.c, which
 * includes this file after its helpers and one-group tiles), for the
 * many-token calls of a prefill batch; the one-group tiles keep decode and
 * small batches. Each lane runs the one-group tiles' per-block float steps
 * (scale = weight scale * activation scale, the block's exact integer dot
 * converted, one FMA into the accumulator), so a token's bits do not depend
 * on the tile it runs in; only the integer work, exact in any order, is
 * arranged differently. */

/* Two groups (32 rows) and PF2_T tokens at a time: each broadcast activation
 * dword feeds the dot products of both groups, halving the loads a dot
 * product costs (the 16-row tile issued a broadcast load for every
 * vpdpbusd, and the loads, not the multiply-adds, set its pace). Weights
 * are unpacked one dword column k at a time; each (group, token) lane sums
 * its block in one integer chain. */
#define PF2_T 4

R16_INLINE void pf2_q4_0(const uint8_t *p0, size_t gbytes, const sl_q8act *a, int64_t t0,
                         float *y, int64_t ldy)
{
    __m512 acc0[PF2_T], acc1[PF2_T];
    R16_UNROLL
    for (int t = 0; t < PF2_T; t++)
        acc0[t] = acc1[t] = _mm512_setzero_ps();
    const __m512i m4 = _mm512_set1_epi8(15);
    const int8_t *q0 = a->q + t0 * a->n_in;
    const int32_t *s0 = a->sum + t0 * a->n_blocks;
    const float *d0 = a->d + t0 * a->n_blocks;
    const uint8_t *p1 = p0 + gbytes;
    for (int64_t b = 0; b < a->n_blocks; b++, p0 += SL_R16_Q4_0_BYTES, p1 += SL_R16_Q4_0_BYTES) {
        r16_prefetch(p0, SL_R16_Q4_0_BYTES, PF2_T);
        r16_prefetch(p1, SL_R16_Q4_0_BYTES, PF2_T);
        __m512i i0[PF2_T], i1[PF2_T];
        R16_UNROLL
        for (int t = 0; t < PF2_T; t++)
            i0[t] = i1[t] = _mm512_set1_epi32(-8 * s0[t * a->n_blocks + b]);
        R16_UNROLL
        for (int k = 0; k < 4; k++) {
            __m512i v0 = _mm512_loadu_si512(p0 + 32 + 64 * k);
            __m512i v1 = _mm512_loadu_si512(p1 + 32 + 64 * k);
            __m512i l0 = _mm512_and_si512(v0, m4), h0 = _mm512_and_si512(_mm512_srli_epi16(v0, 4), m4);
            __m512i l1 = _mm512_and_si512(v1, m4), h1 = _mm512_and_si512(_mm512_srli_epi16(v1, 4), m4);
            R16_UNROLL
            for (int t = 0; t < PF2_T; t++) {
                const int8_t *q = q0 + t * a->n_in + 32 * b + 4 * k;
                __m512i bl = r16_bcast(q), bh = r16_bcast(q + 16);
                i0[t] = _mm512_dpbusd_epi32(i0[t], l0, bl);
                i1[t] = _mm512_dpbusd_epi32(i1[t], l1, bl);
                i0[t] = _mm512_dpbusd_epi32(i0[t], h0, bh);
                i1[t] = _mm512_dpbusd_epi32(i1[t], h1, bh);
            }
        }
        __m512 dw0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p0));
        __m512 dw1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p1));
        R16_UNROLL
        for (int t = 0; t < PF2_T; t++) {
            __m512 da = _mm512_set1_ps(d0[t * a->n_blocks + b]);
            acc0[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i0[t]), _mm512_mul_ps(dw0, da), acc0[t]);
            acc1[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i1[t]), _mm512_mul_ps(dw1, da), acc1[t]);
        }
    }
    r16_store(y, acc0, ldy, PF2_T);
    r16_store(y + 16, acc1, ldy, PF2_T);
}

/* Q4_1, Q5_0, Q5_1 (kind) the same way, with tile_b32's steps: the fifth
 * bits added as 16 under a byte mask when the dword is unpacked (once for
 * the 4 tokens), Q5_0's offset of 16 through the lanes' start, and the
 * mins (Q4_1, Q5_1) times the activations' d * sum after the block's FMA. */
R16_INLINE void pf2_b32(const int kind, const uint8_t *p0, size_t gbytes, const sl_q8act *a,
                        int64_t t0, float *y, int64_t ldy)
{
    const int has_min = kind != SL_TYPE_Q5_0, has_hi = kind != SL_TYPE_Q4_1;
    const size_t bytes = has_min ? (has_hi ? SL_R16_Q5_1_BYTES : SL_R16_Q4_1_BYTES) : SL_R16_Q5_0_BYTES;
    __m512 acc0[PF2_T], acc1[PF2_T];
    R16_UNROLL
    for (int t = 0; t < PF2_T; t++)
        acc0[t] = acc1[t] = _mm512_setzero_ps();
    const __m512i m4 = _mm512_set1_epi8(15), b4 = _mm512_set1_epi8(16);
    const int8_t *q0 = a->q + t0 * a->n_in;
    const int32_t *s0 = a->sum + t0 * a->n_blocks;
    const float *d0 = a->d + t0 * a->n_blocks, *ds0 = a->ds + t0 * a->n_blocks;
    const uint8_t *p1 = p0 + gbytes;
    for (int64_t b = 0; b < a->n_blocks; b++, p0 += bytes, p1 += bytes) {
        r16_prefetch(p0, (int)bytes, PF2_T);
        r16_prefetch(p1, (int)bytes, PF2_T);
        __m512i i0[PF2_T], i1[PF2_T];
        R16_UNROLL
        for (int t = 0; t < PF2_T; t++)
            i0[t] = i1[t] = kind == SL_TYPE_Q5_0 ? _mm512_set1_epi32(-16 * s0[t * a->n_blocks + b])
                                                 : _mm512_setzero_si512();
        const uint8_t *qs0 = p0 + (has_min ? 64 : 32), *qs1 = p1 + (has_min ? 64 : 32);
        R16_UNROLL
        for (int k = 0; k < 4; k++) {
            __m512i v0 = _mm512_loadu_si512(qs0 + 64 * k);
            __m512i v1 = _mm512_loadu_si512(qs1 + 64 * k);
            __m512i l0 = _mm512_and_si512(v0, m4), h0 = _mm512_and_si512(_mm512_srli_epi16(v0, 4), m4);
            __m512i l1 = _mm512_and_si512(v1, m4), h1 = _mm512_and_si512(_mm512_srli_epi16(v1, 4), m4);
            if (has_hi) {
                uint64_t ml, mh;
                memcpy(&ml, qs0 + 256 + 16 * k, 8);
                memcpy(&mh, qs0 + 256 + 16 * k + 8, 8);
                l0 = _mm512_mask_add_epi8(l0, _cvtu64_mask64(ml), l0, b4);
                h0 = _mm512_mask_add_epi8(h0, _cvtu64_mask64(mh), h0, b4);
                memcpy(&ml, qs1 + 256 + 16 * k, 8);
                memcpy(&mh, qs1 + 256 + 16 * k + 8, 8);
                l1 = _mm512_mask_add_epi8(l1, _cvtu64_mask64(ml), l1, b4);
                h1 = _mm512_mask_add_epi8(h1, _cvtu64_mask64(mh), h1, b4);
            }
            R16_UNROLL
            for (int t = 0; t < PF2_T; t++) {
                const int8_t *q = q0 + t * a->n_in + 32 * b + 4 * k;
                __m512i bl = r16_bcast(q), bh = r16_bcast(q + 16);
                i0[t] = _mm512_dpbusd_epi32(i0[t], l0, bl);
                i1[t] = _mm512_dpbusd_epi32(i1[t], l1, bl);
                i0[t] = _mm512_dpbusd_epi32(i0[t], h0, bh);
                i1[t] = _mm512_dpbusd_epi32(i1[t], h1, bh);
            }
        }
        __m512 dw0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p0));
        __m512 dw1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p1));
        R16_UNROLL
        for (int t = 0; t < PF2_T; t++) {
            __m512 da = _mm512_set1_ps(d0[t * a->n_blocks + b]);
            acc0[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i0[t]), _mm512_mul_ps(dw0, da), acc0[t]);
            acc1[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i1[t]), _mm512_mul_ps(dw1, da), acc1[t]);
        }
        if (has_min) {
            __m512 mw0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p0 + 32)));
            __m512 mw1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p1 + 32)));
            R16_UNROLL
            for (int t = 0; t < PF2_T; t++) {
                __m512 ds = _mm512_set1_ps(ds0[t * a->n_blocks + b]);
                acc0[t] = _mm512_fmadd_ps(mw0, ds, acc0[t]);
                acc1[t] = _mm512_fmadd_ps(mw1, ds, acc1[t]);
            }
        }
    }
    r16_store(y, acc0, ldy, PF2_T);
    r16_store(y + 16, acc1, ldy, PF2_T);
}

R16_INLINE void pf2_q4_1(const uint8_t *p0, size_t gbytes, const sl_q8act *a, int64_t t0,
                         float *y, int64_t ldy)
{
    pf2_b32(SL_TYPE_Q4_1, p0, gbytes, a, t0, y, ldy);
}

R16_INLINE void pf2_q5_0(const uint8_t *p0, size_t gbytes, const sl_q8act *a, int64_t t0,
                         float *y, int64_t ldy)
{
    pf2_b32(SL_TYPE_Q5_0, p0, gbytes, a, t0, y, ldy);
}

R16_INLINE void pf2_q5_1(const uint8_t *p0, size_t gbytes, const sl_q8act *a, int64_t t0,
                         float *y, int64_t ldy)
{
    pf2_b32(SL_TYPE_Q5_1, p0, gbytes, a, t0, y, ldy);
}

/* Q8_0 the same way: 8 dword columns of quants plus 128 (unsigned), each
 * lane starting at -128 times the activations' block sum. */
R16_INLINE void pf2_q8_0(const uint8_t *p0, size_t gbytes, const sl_q8act *a, int64_t t0,
                         float *y, int64_t ldy)
{
    __m512 acc0[PF2_T], acc1[PF2_T];
    R16_UNROLL
    for (int t = 0; t < PF2_T; t++)
        acc0[t] = acc1[t] = _mm512_setzero_ps();
    const int8_t *q0 = a->q + t0 * a->n_in;
    const int32_t *s0 = a->sum + t0 * a->n_blocks;
    const float *d0 = a->d + t0 * a->n_blocks;
    const uint8_t *p1 = p0 + gbytes;
    for (int64_t b = 0; b < a->n_blocks; b++, p0 += SL_R16_Q8_0_BYTES, p1 += SL_R16_Q8_0_BYTES) {
        r16_prefetch(p0, SL_R16_Q8_0_BYTES, PF2_T);
        r16_prefetch(p1, SL_R16_Q8_0_BYTES, PF2_T);
        __m512i i0[PF2_T], i1[PF2_T];
        R16_UNROLL
        for (int t = 0; t < PF2_T; t++)
            i0[t] = i1[t] = _mm512_set1_epi32(-128 * s0[t * a->n_blocks + b]);
        R16_UNROLL
        for (int k = 0; k < 8; k++) {
            __m512i w0 = _mm512_loadu_si512(p0 + 32 + 64 * k);
            __m512i w1 = _mm512_loadu_si512(p1 + 32 + 64 * k);
            R16_UNROLL
            for (int t = 0; t < PF2_T; t++) {
                __m512i bq = r16_bcast(q0 + t * a->n_in + 32 * b + 4 * k);
                i0[t] = _mm512_dpbusd_epi32(i0[t], w0, bq);
                i1[t] = _mm512_dpbusd_epi32(i1[t], w1, bq);
            }
        }
        __m512 dw0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p0));
        __m512 dw1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p1));
        R16_UNROLL
        for (int t = 0; t < PF2_T; t++) {
            __m512 da = _mm512_set1_ps(d0[t * a->n_blocks + b]);
            acc0[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i0[t]), _mm512_mul_ps(dw0, da), acc0[t]);
            acc1[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i1[t]), _mm512_mul_ps(dw1, da), acc1[t]);
        }
    }
    r16_store(y, acc0, ldy, PF2_T);
    r16_store(y + 16, acc1, ldy, PF2_T);
}

/* Q4_K: per pair j of sub-blocks, the low nibbles (sub-block 2j) and the
 * high ones (2j + 1) of each dword column feed a lane's two integer sums;
 * then tile_q4_K's float steps in its order (scale, min for 2j, then for
 * 2j + 1). */
R16_INLINE void pf2_q4_K(const uint8_t *p0, size_t gbytes, const sl_q8act *a, int64_t t0,
                         float *y, int64_t ldy)
{
    __m512 acc0[PF2_T], acc1[PF2_T];
    R16_UNROLL
    for (int t = 0; t < PF2_T; t++)
        acc0[t] = acc1[t] = _mm512_setzero_ps();
    const __m512i m4 = _mm512_set1_epi8(15);
    const int8_t *q0 = a->q + t0 * a->n_in;
    const float *d0 = a->d + t0 * a->n_blocks, *ds0 = a->ds + t0 * a->n_blocks;
    const uint8_t *p1 = p0 + gbytes;
    for (int64_t sb = 0; sb < a->n_blocks / 8; sb++, p0 += SL_R16_Q4_K_BYTES, p1 += SL_R16_Q4_K_BYTES) {
        for (int j = 0; j < 4; j++) {
            r16_prefetch(p0 + j * (SL_R16_Q4_K_BYTES / 4), SL_R16_Q4_K_BYTES / 4, PF2_T);
            r16_prefetch(p1 + j * (SL_R16_Q4_K_BYTES / 4), SL_R16_Q4_K_BYTES / 4, PF2_T);
            __m512i lo0[PF2_T], hi0[PF2_T], lo1[PF2_T], hi1[PF2_T];
            R16_UNROLL
            for (int t = 0; t < PF2_T; t++)
                lo0[t] = hi0[t] = lo1[t] = hi1[t] = _mm512_setzero_si512();
            const uint8_t *qs0 = p0 + 320 + 512 * j, *qs1 = p1 + 320 + 512 * j;
            R16_UNROLL
            for (int k = 0; k < 8; k++) {
                __m512i v0 = _mm512_loadu_si512(qs0 + 64 * k);
                __m512i v1 = _mm512_loadu_si512(qs1 + 64 * k);
                __m512i l0 = _mm512_and_si512(v0, m4), h0 = _mm512_and_si512(_mm512_srli_epi16(v0, 4), m4);
                __m512i l1 = _mm512_and_si512(v1, m4), h1 = _mm512_and_si512(_mm512_srli_epi16(v1, 4), m4);
                R16_UNROLL
                for (int t = 0; t < PF2_T; t++) {
                    const int8_t *q = q0 + t * a->n_in + 256 * sb + 64 * j + 4 * k;
                    __m512i bl = r16_bcast(q), bh = r16_bcast(q + 32);
                    lo0[t] = _mm512_dpbusd_epi32(lo0[t], l0, bl);
                    lo1[t] = _mm512_dpbusd_epi32(lo1[t], l1, bl);
                    hi0[t] = _mm512_dpbusd_epi32(hi0[t], h0, bh);
                    hi1[t] = _mm512_dpbusd_epi32(hi1[t], h1, bh);
                }
            }
            int s0 = 2 * j, s1 = 2 * j + 1;
            __m512 dv0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p0));
            __m512 dv1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p1));
            __m512 dm0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p0 + 32)));
            __m512 dm1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p1 + 32)));
            __m512 sc00 = _mm512_mul_ps(dv0, r16_u8_ps(p0 + 64 + 16 * s0));
            __m512 sc01 = _mm512_mul_ps(dv0, r16_u8_ps(p0 + 64 + 16 * s1));
            __m512 sc10 = _mm512_mul_ps(dv1, r16_u8_ps(p1 + 64 + 16 * s0));
            __m512 sc11 = _mm512_mul_ps(dv1, r16_u8_ps(p1 + 64 + 16 * s1));
            __m512 mn00 = _mm512_mul_ps(dm0, r16_u8_ps(p0 + 192 + 16 * s0));
            __m512 mn01 = _mm512_mul_ps(dm0, r16_u8_ps(p0 + 192 + 16 * s1));
            __m512 mn10 = _mm512_mul_ps(dm1, r16_u8_ps(p1 + 192 + 16 * s0));
            __m512 mn11 = _mm512_mul_ps(dm1, r16_u8_ps(p1 + 192 + 16 * s1));
            R16_UNROLL
            for (int t = 0; t < PF2_T; t++) {
                int64_t ab = t * a->n_blocks + 8 * sb;
                __m512 da0 = _mm512_set1_ps(d0[ab + s0]), da1 = _mm512_set1_ps(d0[ab + s1]);
                __m512 dsa0 = _mm512_set1_ps(ds0[ab + s0]), dsa1 = _mm512_set1_ps(ds0[ab + s1]);
                acc0[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(lo0[t]), _mm512_mul_ps(sc00, da0), acc0[t]);
                acc0[t] = _mm512_fnmadd_ps(mn00, dsa0, acc0[t]);
                acc0[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(hi0[t]), _mm512_mul_ps(sc01, da1), acc0[t]);
                acc0[t] = _mm512_fnmadd_ps(mn01, dsa1, acc0[t]);
                acc1[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(lo1[t]), _mm512_mul_ps(sc10, da0), acc1[t]);
                acc1[t] = _mm512_fnmadd_ps(mn10, dsa0, acc1[t]);
                acc1[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(hi1[t]), _mm512_mul_ps(sc11, da1), acc1[t]);
                acc1[t] = _mm512_fnmadd_ps(mn11, dsa1, acc1[t]);
            }
        }
    }
    r16_store(y, acc0, ldy, PF2_T);
    r16_store(y + 16, acc1, ldy, PF2_T);
}

/* Q6_K: runs 4 hq .. 4 hq + 3 of 16 elements of superblock sb, both
 * groups, with q6_K_runs's steps (each lane starts at -32 times the
 * activations' sum over its 16, four dot products, one FMA). */
R16_INLINE void pf2_q6_K_runs(const uint8_t *p0, const uint8_t *p1, const sl_q8act *a, int64_t t0,
                              int64_t sb, __m512 *acc0, __m512 *acc1, const int hq)
{
    __m512 dv0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p0));
    __m512 dv1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p1));
    for (int h = 4 * hq; h < 4 * hq + 4; h++) {
        r16_prefetch(p0 + h * (SL_R16_Q6_K_BYTES / 16), SL_R16_Q6_K_BYTES / 16, PF2_T);
        r16_prefetch(p1 + h * (SL_R16_Q6_K_BYTES / 16), SL_R16_Q6_K_BYTES / 16, PF2_T);
        __m512i w0[4], w1[4];
        R16_UNROLL
        for (int k = 0; k < 4; k++) {
            w0[k] = r16_q6_quants(p0 + 288, p0 + 288 + 2048, 4 * h + k, hq);
            w1[k] = r16_q6_quants(p1 + 288, p1 + 288 + 2048, 4 * h + k, hq);
        }
        __m512 s0 = _mm512_mul_ps(dv0, r16_i8_ps(p0 + 32 + 16 * h));
        __m512 s1 = _mm512_mul_ps(dv1, r16_i8_ps(p1 + 32 + 16 * h));
        R16_UNROLL
        for (int t = 0; t < PF2_T; t++) {
            const int8_t *aq = a->q + (t0 + t) * a->n_in + 256 * sb + 16 * h;
            __m512i i0 = r16_q6_corr(a, t0 + t, 256 * sb + 16 * h), i1 = i0;
            R16_UNROLL
            for (int k = 0; k < 4; k++) {
                __m512i q = r16_bcast(aq + 4 * k);
                i0 = _mm512_dpbusd_epi32(i0, w0[k], q);
                i1 = _mm512_dpbusd_epi32(i1, w1[k], q);
            }
            __m512 da = _mm512_set1_ps(a->d[(t0 + t) * a->n_blocks + 8 * sb + h / 2]);
            acc0[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i0), _mm512_mul_ps(s0, da), acc0[t]);
            acc1[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i1), _mm512_mul_ps(s1, da), acc1[t]);
        }
    }
}

R16_INLINE void pf2_q6_K(const uint8_t *p0, size_t gbytes, const sl_q8act *a, int64_t t0,
                         float *y, int64_t ldy)
{
    __m512 acc0[PF2_T], acc1[PF2_T];
    R16_UNROLL
    for (int t = 0; t < PF2_T; t++)
        acc0[t] = acc1[t] = _mm512_setzero_ps();
    const uint8_t *p1 = p0 + gbytes;
    for (int64_t sb = 0; sb < a->n_blocks / 8; sb++, p0 += SL_R16_Q6_K_BYTES, p1 += SL_R16_Q6_K_BYTES) {
        pf2_q6_K_runs(p0, p1, a, t0, sb, acc0, acc1, 0);
        pf2_q6_K_runs(p0, p1, a, t0, sb, acc0, acc1, 1);
        pf2_q6_K_runs(p0, p1, a, t0, sb, acc0, acc1, 2);
        pf2_q6_K_runs(p0, p1, a, t0, sb, acc0, acc1, 3);
    }
    r16_store(y, acc0, ldy, PF2_T);
    r16_store(y + 16, acc1, ldy, PF2_T);
}
