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
