/* sl_q8act_quantize on AVX-512: the same bytes as the scalar code in
 * q8act.c (cvtps2dq rounds half to even under the default rounding mode, as
 * rintf does; max and abs are exact). */
#include <immintrin.h>
#include <math.h>

#include "kernels/q8act.h"

void sl_q8act_quantize_avx512(sl_q8act *a, int64_t t, int64_t b0, int64_t b1, const float *x);

void sl_q8act_quantize_avx512(sl_q8act *a, int64_t t, int64_t b0, int64_t b1, const float *x)
{
    int8_t *q = a->q + t * a->n_in;
    int32_t *s4 = a->s4 + t * (a->n_in / 4);
    int32_t *s16 = a->s16 + t * (a->n_in / 16);
    const __m512 inf = _mm512_set1_ps(INFINITY);
    for (int64_t b = b0; b < b1; b++) {
        const float *xb = x + 32 * (b - b0);
        __m512 x0 = _mm512_loadu_ps(xb), x1 = _mm512_loadu_ps(xb + 16);
        __m512 a0 = _mm512_abs_ps(x0), a1 = _mm512_abs_ps(x1);
        /* ordered and below infinity: false for NaN and +-inf */
        __mmask16 f0 = _mm512_cmp_ps_mask(a0, inf, _CMP_LT_OQ);
        __mmask16 f1 = _mm512_cmp_ps_mask(a1, inf, _CMP_LT_OQ);
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(a0, a1));
        int finite = f0 == 0xffff && f1 == 0xffff;
        float d = finite ? amax / 127.0f : NAN;
        float id = finite && d > 0 ? 1.0f / d : 0.0f;
        __m512 vid = _mm512_set1_ps(id);
        __m512i i0 = _mm512_cvtps_epi32(_mm512_mul_ps(x0, vid));
        __m512i i1 = _mm512_cvtps_epi32(_mm512_mul_ps(x1, vid));
        if (!finite)
            i0 = i1 = _mm512_setzero_si512();
        _mm_storeu_si128((__m128i *)(q + 32 * b), _mm512_cvtsepi32_epi8(i0));
        _mm_storeu_si128((__m128i *)(q + 32 * b + 16), _mm512_cvtsepi32_epi8(i1));
        /* sums of 4: add neighbours, then pairs of neighbours */
        __m512i p0 = _mm512_add_epi32(i0, _mm512_srli_epi64(i0, 32));
        __m512i p1 = _mm512_add_epi32(i1, _mm512_srli_epi64(i1, 32));
        const __m512i take = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 2, 6, 10, 14, 18, 22, 26, 30);
        __m512i even = _mm512_permutex2var_epi32(p0, take, p1); /* pair sums 0,2,4.. then 1,3,.. */
        __m256i g4 = _mm256_add_epi32(_mm512_castsi512_si256(even), _mm512_extracti64x4_epi64(even, 1));
        _mm256_storeu_si256((__m256i *)(s4 + 8 * b), g4);
        int32_t g[8];
        _mm256_storeu_si256((__m256i *)g, g4);
        s16[2 * b] = g[0] + g[1] + g[2] + g[3];
        s16[2 * b + 1] = g[4] + g[5] + g[6] + g[7];
        int sum = s16[2 * b] + s16[2 * b + 1];
        a->d[t * a->n_blocks + b] = d;
        a->ds[t * a->n_blocks + b] = d * (float)sum;
        a->sum[t * a->n_blocks + b] = sum;
    }
}
