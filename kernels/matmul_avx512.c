/* AVX-512 matmul tiles (see matmul_tile_impl.h): weights are decoded 32 at a
 * time into two zmm registers, elements 0-15 going to a pair's first
 * accumulator and 16-31 to its second.
 *
 * 4-bit types decode through a 16-entry table of already-scaled floats and
 * vpermps, so a weight costs one permute and the decoded values equal the
 * scalar reference's d * q (or d1 * q - m1) bit for bit. */
#include <immintrin.h>

#define SL_INLINE static inline __attribute__((always_inline))

typedef __m512 mmf_vf;
#define MMF_VECS 2
#define MMF_NAME(x) x##_avx512
#define MMF_BATCH_ROWS 2

typedef struct {
    __m512 v[2];
} w32;

SL_INLINE __m512 mmf_zero(void) { return _mm512_setzero_ps(); }
SL_INLINE __m512 mmf_loadu(const float *p) { return _mm512_loadu_ps(p); }
SL_INLINE __m512 mmf_add(__m512 a, __m512 b) { return _mm512_add_ps(a, b); }
SL_INLINE __m512 mmf_fmadd(__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); }

SL_INLINE float mmf_hsum(__m512 v)
{
    __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
    return _mm_cvtss_f32(s4);
}

/* 32 byte codes (signed or not) as floats times d_lo (elements 0-15) or
 * d_hi, each product rounded, then plus a_lo / a_hi when add is set. */
static inline __attribute__((always_inline)) w32 mmf_codes(__m256i codes, int is_signed, float d_lo,
                                                           float d_hi, float a_lo, float a_hi, int add);

#include "kernels/matmul_tile_impl.h"

/* Keeps d * q and the following subtraction as two roundings, as in the
 * scalar reference, instead of letting the compiler fuse them. */
SL_INLINE __m512 unfused(__m512 v)
{
    __asm__("" : "+v"(v));
    return v;
}

SL_INLINE __m512i bytes16(const uint8_t *p)
{
    return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p));
}

SL_INLINE __m512 iota16(void)
{
    return _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
}

/* Table of d1 * (k + base) - m1 for k = 0..15. */
SL_INLINE __m512 affine_table(float d1, float m1, float base)
{
    __m512 k = _mm512_add_ps(iota16(), _mm512_set1_ps(base));
    return _mm512_sub_ps(unfused(_mm512_mul_ps(_mm512_set1_ps(d1), k)), _mm512_set1_ps(m1));
}

SL_INLINE w32 unit_q4_0(const row_state *st)
{
    const sl_block_q4_0 *b = (const void *)st->p;
    __m512 table = _mm512_mul_ps(_mm512_set1_ps(f16_to_f32(b->d)),
                                 _mm512_sub_ps(iota16(), _mm512_set1_ps(8)));
    __m512i q = bytes16(b->qs); /* vpermps reads only the low nibble of each index */
    return (w32){{_mm512_permutexvar_ps(q, table),
                  _mm512_permutexvar_ps(_mm512_srli_epi32(q, 4), table)}};
}

SL_INLINE w32 unit_q8_0(const row_state *st)
{
    const sl_block_q8_0 *b = (const void *)st->p;
    __m512 d = _mm512_set1_ps(f16_to_f32(b->d));
    __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)b->qs)));
    __m512 hi = _mm512_cvtepi32_ps(
        _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b->qs + 16))));
    return (w32){{_mm512_mul_ps(lo, d), _mm512_mul_ps(hi, d)}};
}

/* Sub-block u of a Q4_K superblock: 32 bytes of qs hold sub-blocks 2c (low
 * nibbles) and 2c+1 (high nibbles). */
SL_INLINE w32 unit_q4_K(const row_state *st, int u)
{
    const sl_block_q4_K *b = (const void *)st->p;
    const uint8_t *q = b->qs + 32 * (u / 2);
    __m512 table = affine_table(st->s[u], st->m[u], 0);
    __m512i lo = bytes16(q), hi = bytes16(q + 16);
    if (u & 1) {
        lo = _mm512_srli_epi32(lo, 4);
        hi = _mm512_srli_epi32(hi, 4);
    }
    return (w32){{_mm512_permutexvar_ps(lo, table), _mm512_permutexvar_ps(hi, table)}};
}

/* Q5_K adds the fifth bit from bit u of qh: a 32-entry table over two zmm. */
SL_INLINE w32 unit_q5_K(const row_state *st, int u)
{
    const sl_block_q5_K *b = (const void *)st->p;
    __m256i ql = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * (u / 2)));
    __m256i qh = _mm256_loadu_si256((const __m256i *)b->qh);
    __m256i idx = _mm256_or_si256(nibbles32(ql, u & 1), high_bits32(qh, u, 1));
    __m512 t_lo = affine_table(st->s[u], st->m[u], 0);
    __m512 t_hi = affine_table(st->s[u], st->m[u], 16);
    __m512i i_lo = _mm512_cvtepu8_epi32(_mm256_castsi256_si128(idx));
    __m512i i_hi = _mm512_cvtepu8_epi32(_mm256_extracti128_si256(idx, 1));
    return (w32){{_mm512_permutex2var_ps(t_lo, i_lo, t_hi), _mm512_permutex2var_ps(t_lo, i_hi, t_hi)}};
}

/* Q6_K: unit u is quadrant k = u % 4 of half n = u / 4; quadrants 0/1 take
 * the low nibbles of ql[0..32) / ql[32..64), 2/3 the high nibbles, and bits
 * 2k..2k+1 of qh. Elements 0-15 and 16-31 have their own int8 scales. */
SL_INLINE w32 unit_q6_K(const row_state *st, int u)
{
    const sl_block_q6_K *b = (const void *)st->p;
    int n = u / 4, k = u % 4;
    __m256i ql = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * n + 32 * (k & 1)));
    __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * n));
    __m256i q = _mm256_or_si256(nibbles32(ql, k >> 1), high_bits32(qh, 2 * k, 2));
    q = _mm256_sub_epi8(q, _mm256_set1_epi8(32));
    __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(q)));
    __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(q, 1)));
    const float *ds = st->s + 8 * n + 2 * k;
    return (w32){{_mm512_mul_ps(_mm512_set1_ps(ds[0]), lo), _mm512_mul_ps(_mm512_set1_ps(ds[1]), hi)}};
}

SL_INLINE __m512 bf16x16(const uint8_t *p)
{
    __m512i h = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(h, 16));
}

SL_INLINE w32 mmf_codes(__m256i codes, int is_signed, float d_lo, float d_hi, float a_lo,
                        float a_hi, int add)
{
    __m128i lo8 = _mm256_castsi256_si128(codes), hi8 = _mm256_extracti128_si256(codes, 1);
    __m512i lo = is_signed ? _mm512_cvtepi8_epi32(lo8) : _mm512_cvtepu8_epi32(lo8);
    __m512i hi = is_signed ? _mm512_cvtepi8_epi32(hi8) : _mm512_cvtepu8_epi32(hi8);
    __m512 plo = unfused(_mm512_mul_ps(_mm512_set1_ps(d_lo), _mm512_cvtepi32_ps(lo)));
    __m512 phi = unfused(_mm512_mul_ps(_mm512_set1_ps(d_hi), _mm512_cvtepi32_ps(hi)));
    if (add) {
        plo = _mm512_add_ps(plo, _mm512_set1_ps(a_lo));
        phi = _mm512_add_ps(phi, _mm512_set1_ps(a_hi));
    }
    return (w32){{plo, phi}};
}

SL_INLINE w32 unit(int kind, const row_state *st, int u)
{
    switch (kind) {
    case SL_TYPE_F32:
        return (w32){{_mm512_loadu_ps((const float *)st->p), _mm512_loadu_ps((const float *)st->p + 16)}};
    case SL_TYPE_F16:
        return (w32){{_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)st->p)),
                      _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(st->p + 32)))}};
    case SL_TYPE_BF16: return (w32){{bf16x16(st->p), bf16x16(st->p + 32)}};
    case SL_TYPE_Q4_0: return unit_q4_0(st);
    case SL_TYPE_Q8_0: return unit_q8_0(st);
    case SL_TYPE_Q4_K: return unit_q4_K(st, u);
    case SL_TYPE_Q5_K: return unit_q5_K(st, u);
    case SL_TYPE_Q6_K: return unit_q6_K(st, u);
    default: return unit_codes(kind, st, u);
    }
}
