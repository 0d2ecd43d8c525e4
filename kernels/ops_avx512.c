/* AVX-512 versions of the element-wise ops of kernels/ops.h, chosen at run
 * time by ops.c. They agree with the scalar code to a few float roundings
 * (tests/test_ops.c states the bounds); within a path every result depends
 * only on its own inputs. */
#include <immintrin.h>

#include "kernels/vmath_avx512.h"

void sl_gelu_tanh_mul_avx512(float *gate, const float *up, int64_t n);
void sl_silu_mul_avx512(float *gate, const float *up, int64_t n);
void sl_softcap_avx512(float *x, int64_t n, float cap);
void sl_rmsnorm_avx512(float *y, const float *x, const float *w, int64_t n, float eps);
int64_t sl_argmax_f32_avx512(const float *x, int64_t n);

static inline __mmask16 tail_mask(int64_t left)
{
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
}

/* 0.5 x (1 + tanh(u)) = x / (1 + e^{-2u}), u = sqrt(2/pi) (x + 0.044715 x^3):
 * one exp and one division, and no cancellation for large negative x. */
void sl_gelu_tanh_mul_avx512(float *gate, const float *up, int64_t n)
{
    const __m512 k2 = _mm512_set1_ps(-2.0f * 0.7978845608028654f), c = _mm512_set1_ps(0.044715f);
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 x = _mm512_maskz_loadu_ps(m, gate + i), u = _mm512_maskz_loadu_ps(m, up + i);
        __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
        __m512 e = sl_exp512(_mm512_mul_ps(k2, _mm512_fmadd_ps(c, x3, x)));
        __m512 g = _mm512_div_ps(x, _mm512_add_ps(one, e));
        _mm512_mask_storeu_ps(gate + i, m, _mm512_mul_ps(g, u));
    }
}

void sl_silu_mul_avx512(float *gate, const float *up, int64_t n)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 x = _mm512_maskz_loadu_ps(m, gate + i), u = _mm512_maskz_loadu_ps(m, up + i);
        __m512 e = sl_exp512(_mm512_sub_ps(_mm512_setzero_ps(), x));
        _mm512_mask_storeu_ps(gate + i, m, _mm512_mul_ps(_mm512_div_ps(x, _mm512_add_ps(one, e)), u));
    }
}

void sl_softcap_avx512(float *x, int64_t n, float cap)
{
    const __m512 vc = _mm512_set1_ps(cap), inv = _mm512_set1_ps(1.0f / cap);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(vc, sl_tanh512(_mm512_mul_ps(v, inv))));
    }
}

/* Sum of squares in double, as the scalar code, 8 lanes at a time. */
void sl_rmsnorm_avx512(float *y, const float *x, const float *w, int64_t n, float eps)
{
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    for (int64_t i = 0; i < n; i += 16) {
        __m512 v = _mm512_maskz_loadu_ps(tail_mask(n - i), x + i);
        __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
        __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
        s0 = _mm512_fmadd_pd(lo, lo, s0);
        s1 = _mm512_fmadd_pd(hi, hi, s1);
    }
    double ss = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
    __m512 inv = _mm512_set1_ps((float)(1.0 / __builtin_sqrt(ss / (double)n + (double)eps)));
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv);
        if (w)
            v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, w + i));
        _mm512_mask_storeu_ps(y + i, m, v);
    }
}

/* The largest value first (max passes over NaN: it returns its second
 * operand when either is NaN), then the first index holding it. */
int64_t sl_argmax_f32_avx512(const float *x, int64_t n)
{
    if (n <= 0 || x[0] != x[0])
        return 0;
    __m512 m = _mm512_set1_ps(-__builtin_inff());
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        m = _mm512_max_ps(_mm512_mask_loadu_ps(m, k, x + i), m);
    }
    float top = _mm512_reduce_max_ps(m);
    __m512 t = _mm512_set1_ps(top);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        __mmask16 eq = _mm512_mask_cmp_ps_mask(k, _mm512_maskz_loadu_ps(k, x + i), t, _CMP_EQ_OQ);
        if (eq)
            return i + __builtin_ctz(eq);
    }
    return 0;
}
