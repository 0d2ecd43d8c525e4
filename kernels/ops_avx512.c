/* AVX-512 versions of the element-wise ops of kernels/ops.h, chosen at run
 * time by ops.c. They agree with the scalar code to a few float roundings
 * (tests/test_ops.c states the bounds); within a path every result depends
 * only on its own inputs. */
#include <immintrin.h>
#include <stdint.h>

#include "kernels/vmath_avx512.h"

void sl_gelu_tanh_mul_avx512(float *out, const float *gate, const float *up, int64_t n);
void sl_silu_mul_avx512(float *out, const float *gate, const float *up, int64_t n);
void sl_softcap_avx512(float *x, int64_t n, float cap);
void sl_rmsnorm_avx512(float *y, const float *x, const float *w, int64_t n, float eps);
int64_t sl_argmax_f32_avx512(const float *x, int64_t n);
void sl_rope_neox_avx512(float *x, int n_heads, int head_dim, int rot_dim, const float *cs,
                         const float *sn);

static inline __mmask16 tail_mask(int64_t left)
{
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
}

/* 0.5 x (1 + tanh(u)) = x / (1 + e^{-2u}), u = sqrt(2/pi) (x + 0.044715 x^3):
 * one exp and one division, and no cancellation for large negative x. */
void sl_gelu_tanh_mul_avx512(float *out, const float *gate, const float *up, int64_t n)
{
    const __m512 k2 = _mm512_set1_ps(-2.0f * 0.7978845608028654f), c = _mm512_set1_ps(0.044715f);
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 x = _mm512_maskz_loadu_ps(m, gate + i), u = _mm512_maskz_loadu_ps(m, up + i);
        __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
        __m512 e = sl_exp512(_mm512_mul_ps(k2, _mm512_fmadd_ps(c, x3, x)));
        __m512 g = _mm512_div_ps(x, _mm512_add_ps(one, e));
        _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(g, u));
    }
}

void sl_silu_mul_avx512(float *out, const float *gate, const float *up, int64_t n)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 x = _mm512_maskz_loadu_ps(m, gate + i), u = _mm512_maskz_loadu_ps(m, up + i);
        __m512 e = sl_exp512(_mm512_sub_ps(_mm512_setzero_ps(), x));
        _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(_mm512_div_ps(x, _mm512_add_ps(one, e)), u));
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

/* a * b rounded on its own: the rounding-mode form is a builtin GCC does
 * not contract into a neighbouring add (its mode must be a constant
 * expression for clang, hence a macro) */
#define mul_apart(a, b) _mm512_mul_round_ps((a), (b), _MM_FROUND_CUR_DIRECTION)

/* NeoX rotation (pairs i and i + rot_dim / 2): the scalar code's products
 * and sums, each rounded on its own (no fused multiply-add), so the same
 * bits, 16 pairs at a time. The scalar loop (pairs chosen per element)
 * stayed scalar: about a third of a prefill's q/k preparation. */
void sl_rope_neox_avx512(float *x, int n_heads, int head_dim, int rot_dim, const float *cs,
                         const float *sn)
{
    int half = rot_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (int64_t)h * head_dim;
        for (int i = 0; i < half; i += 16) {
            __mmask16 m = tail_mask(half - i);
            __m512 x0 = _mm512_maskz_loadu_ps(m, v + i), x1 = _mm512_maskz_loadu_ps(m, v + i + half);
            __m512 c = _mm512_maskz_loadu_ps(m, cs + i), s = _mm512_maskz_loadu_ps(m, sn + i);
            __m512 a = _mm512_sub_ps(mul_apart(x0, c), mul_apart(x1, s));
            __m512 b = _mm512_add_ps(mul_apart(x0, s), mul_apart(x1, c));
            _mm512_mask_storeu_ps(v + i, m, a);
            _mm512_mask_storeu_ps(v + i + half, m, b);
        }
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

/* The first index holding the largest value (NaNs passed over), in one
 * pass: each lane keeps its largest value and where it first saw it (a
 * strictly greater value moves both), four chains of lanes so the compares
 * do not wait on each other; then, of the lanes holding the largest value,
 * the least index. A pass over Gemma 3's 262144 logits took 0.11 ms as a
 * running max then a search (one chain of dependent max operations). */
int64_t sl_argmax_f32_avx512(const float *x, int64_t n)
{
    if (n <= 0 || x[0] != x[0])
        return 0;
    if (n > INT32_MAX - 64) { /* indices held as 32 bits */
        int64_t best = 0;
        for (int64_t i = 1; i < n; i++)
            best = x[i] > x[best] ? i : best;
        return best;
    }
    __m512 m[4];
    __m512i at[4], idx[4];
    const __m512i step = _mm512_set1_epi32(64);
    for (int c = 0; c < 4; c++) {
        m[c] = _mm512_set1_ps(-__builtin_inff());
        at[c] = _mm512_setzero_si512();
        idx[c] = _mm512_add_epi32(_mm512_set1_epi32(16 * c),
                                  _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    }
    int64_t i = 0;
    for (; i + 64 <= n; i += 64)
        for (int c = 0; c < 4; c++) {
            __m512 v = _mm512_loadu_ps(x + i + 16 * c);
            __mmask16 gt = _mm512_cmp_ps_mask(v, m[c], _CMP_GT_OQ);
            m[c] = _mm512_mask_mov_ps(m[c], gt, v);
            at[c] = _mm512_mask_mov_epi32(at[c], gt, idx[c]);
            idx[c] = _mm512_add_epi32(idx[c], step);
        }
    /* the tail, 16 at a time, into chain 0 (its lanes' indices only grow) */
    __m512i idx0 = _mm512_add_epi32(_mm512_set1_epi32((int)i),
                                    _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    for (; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        __m512 v = _mm512_maskz_loadu_ps(k, x + i);
        __mmask16 gt = _mm512_mask_cmp_ps_mask(k, v, m[0], _CMP_GT_OQ);
        m[0] = _mm512_mask_mov_ps(m[0], gt, v);
        at[0] = _mm512_mask_mov_epi32(at[0], gt, idx0);
        idx0 = _mm512_add_epi32(idx0, _mm512_set1_epi32(16));
    }
    __m512 all = _mm512_max_ps(_mm512_max_ps(m[0], m[1]), _mm512_max_ps(m[2], m[3]));
    __m512 top = _mm512_set1_ps(_mm512_reduce_max_ps(all));
    int32_t best = INT32_MAX;
    for (int c = 0; c < 4; c++) {
        __mmask16 eq = _mm512_cmp_ps_mask(m[c], top, _CMP_EQ_OQ);
        if (eq) {
            int32_t b = _mm512_mask_reduce_min_epi32(eq, at[c]);
            best = b < best ? b : best;
        }
    }
    return best;
}
