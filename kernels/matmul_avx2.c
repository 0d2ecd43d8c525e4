/* AVX2 + FMA + F16C matmul tiles (see matmul_tile_impl.h): weights are
 * decoded 32 at a time into four ymm registers; vectors 0 and 2 of each 32
 * go to a pair's first accumulator, 1 and 3 to its second. */
#include <immintrin.h>

#define SL_INLINE static inline __attribute__((always_inline))

typedef __m256 mmf_vf;
#define MMF_VECS 4
#define MMF_NAME(x) x##_avx2
/* 16 ymm registers: 8 accumulators leave room for a decoded unit. */
#define MMF_BATCH_ROWS 1

typedef struct {
    __m256 v[4];
} w32;

SL_INLINE __m256 mmf_zero(void) { return _mm256_setzero_ps(); }
SL_INLINE __m256 mmf_loadu(const float *p) { return _mm256_loadu_ps(p); }
SL_INLINE __m256 mmf_add(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }
SL_INLINE __m256 mmf_fmadd(__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }

SL_INLINE float mmf_hsum(__m256 v)
{
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
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
SL_INLINE __m256 unfused(__m256 v)
{
    __asm__("" : "+x"(v));
    return v;
}

/* Bytes 8i..8i+7 of v as eight floats (signed or unsigned bytes). */
SL_INLINE __m256 byte_group(__m256i v, int i, int is_signed)
{
    __m128i half = (i & 2) ? _mm256_extracti128_si256(v, 1) : _mm256_castsi256_si128(v);
    if (i & 1)
        half = _mm_srli_si128(half, 8);
    __m256i w = is_signed ? _mm256_cvtepi8_epi32(half) : _mm256_cvtepu8_epi32(half);
    return _mm256_cvtepi32_ps(w);
}

SL_INLINE __m256 affine(__m256 q, float d1, float m1)
{
    __m256 prod = unfused(_mm256_mul_ps(_mm256_set1_ps(d1), q));
    return _mm256_sub_ps(prod, _mm256_set1_ps(m1));
}

/* Vectors 0, 1 are the low nibbles of qs[0..16), 2, 3 the high ones;
 * widening straight from memory beats splitting nibbles in a register here. */
SL_INLINE w32 unit_q4_0(const row_state *st)
{
    const sl_block_q4_0 *b = (const void *)st->p;
    __m256 d = _mm256_set1_ps(f16_to_f32(b->d));
    w32 out;
    UNROLL for (int i = 0; i < 4; i++) {
        __m256i q = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(b->qs + 8 * (i & 1))));
        q = (i & 2) ? _mm256_srli_epi32(q, 4) : _mm256_and_si256(q, _mm256_set1_epi32(15));
        q = _mm256_sub_epi32(q, _mm256_set1_epi32(8));
        out.v[i] = _mm256_mul_ps(_mm256_cvtepi32_ps(q), d);
    }
    return out;
}

SL_INLINE w32 unit_q8_0(const row_state *st)
{
    const sl_block_q8_0 *b = (const void *)st->p;
    __m256 d = _mm256_set1_ps(f16_to_f32(b->d));
    w32 out;
    UNROLL for (int i = 0; i < 4; i++) {
        __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b->qs + 8 * i)));
        out.v[i] = _mm256_mul_ps(_mm256_cvtepi32_ps(q), d);
    }
    return out;
}

/* Sub-block u of a Q4_K superblock: 32 bytes of qs hold sub-blocks 2c (low
 * nibbles) and 2c+1 (high nibbles). */
SL_INLINE w32 unit_q4_K(const row_state *st, int u)
{
    const sl_block_q4_K *b = (const void *)st->p;
    __m256i q = nibbles32(_mm256_loadu_si256((const __m256i *)(b->qs + 32 * (u / 2))), u & 1);
    w32 out;
    UNROLL for (int i = 0; i < 4; i++)
        out.v[i] = affine(byte_group(q, i, 0), st->s[u], st->m[u]);
    return out;
}

/* Q5_K adds the fifth bit from bit u of qh. */
SL_INLINE w32 unit_q5_K(const row_state *st, int u)
{
    const sl_block_q5_K *b = (const void *)st->p;
    __m256i ql = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * (u / 2)));
    __m256i qh = _mm256_loadu_si256((const __m256i *)b->qh);
    __m256i q = _mm256_or_si256(nibbles32(ql, u & 1), high_bits32(qh, u, 1));
    w32 out;
    UNROLL for (int i = 0; i < 4; i++)
        out.v[i] = affine(byte_group(q, i, 0), st->s[u], st->m[u]);
    return out;
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
    const float *ds = st->s + 8 * n + 2 * k;
    w32 out;
    UNROLL for (int i = 0; i < 4; i++)
        out.v[i] = _mm256_mul_ps(_mm256_set1_ps(ds[i / 2]), byte_group(q, i, 1));
    return out;
}

SL_INLINE w32 mmf_codes(__m256i codes, int is_signed, float d_lo, float d_hi, float a_lo,
                        float a_hi, int add)
{
    w32 out;
    UNROLL for (int i = 0; i < 4; i++) {
        __m256 prod = unfused(_mm256_mul_ps(_mm256_set1_ps(i < 2 ? d_lo : d_hi),
                                            byte_group(codes, i, is_signed)));
        out.v[i] = add ? _mm256_add_ps(prod, _mm256_set1_ps(i < 2 ? a_lo : a_hi)) : prod;
    }
    return out;
}

SL_INLINE w32 unit(int kind, const row_state *st, int u)
{
    w32 out;
    switch (kind) {
    case SL_TYPE_F32:
        UNROLL for (int i = 0; i < 4; i++)
            out.v[i] = _mm256_loadu_ps((const float *)st->p + 8 * i);
        return out;
    case SL_TYPE_F16:
        UNROLL for (int i = 0; i < 4; i++)
            out.v[i] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(st->p + 16 * i)));
        return out;
    case SL_TYPE_BF16:
        UNROLL for (int i = 0; i < 4; i++) {
            __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(st->p + 16 * i)));
            out.v[i] = _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
        }
        return out;
    case SL_TYPE_Q4_0: return unit_q4_0(st);
    case SL_TYPE_Q8_0: return unit_q8_0(st);
    case SL_TYPE_Q4_K: return unit_q4_K(st, u);
    case SL_TYPE_Q5_K: return unit_q5_K(st, u);
    case SL_TYPE_Q6_K: return unit_q6_K(st, u);
    default: return unit_codes(kind, st, u);
    }
}
