/* AVX2 + FMA + F16C matmul tiles. Weights are decoded 32 at a time into four
 * ymm registers; every (row, token) pair owns two accumulators (vectors 0 and
 * 2 of each 32 go to the first, 1 and 3 to the second) and one final
 * reduction, whatever tile it runs in. Decoded weights equal the scalar
 * reference's dequantised values bit for bit. */
#include <immintrin.h>
#include <string.h>

#include "kernels/matmul_internal.h"
#include "kernels/quant_internal.h"

#define SL_INLINE static inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 16")

typedef struct {
    __m256 v[4];
} w32;

typedef struct {
    const uint8_t *p;
    float s[16];
    float m[8];
} row_state;

/* Keeps d * q and the following subtraction as two roundings, as in the
 * scalar reference, instead of letting the compiler fuse them. */
SL_INLINE __m256 unfused(__m256 v)
{
    __asm__("" : "+x"(v));
    return v;
}

SL_INLINE float f16_to_f32(sl_f16 h)
{
    return _cvtsh_ss(h);
}

SL_INLINE int sb_elems(int kind)
{
    return kind == SL_TYPE_Q4_K || kind == SL_TYPE_Q5_K || kind == SL_TYPE_Q6_K ? SL_QK_K : 32;
}

SL_INLINE int is_float(int kind)
{
    return kind == SL_TYPE_F32 || kind == SL_TYPE_F16 || kind == SL_TYPE_BF16;
}

SL_INLINE size_t sb_bytes(int kind)
{
    switch (kind) {
    case SL_TYPE_F32: return 32 * sizeof(float);
    case SL_TYPE_F16: case SL_TYPE_BF16: return 32 * sizeof(uint16_t);
    case SL_TYPE_Q4_0: return sizeof(sl_block_q4_0);
    case SL_TYPE_Q8_0: return sizeof(sl_block_q8_0);
    case SL_TYPE_Q4_K: return sizeof(sl_block_q4_K);
    case SL_TYPE_Q5_K: return sizeof(sl_block_q5_K);
    default: return sizeof(sl_block_q6_K);
    }
}

/* d * sc and dmin * m for all eight sub-blocks, eight lanes at a time (the
 * products round exactly as the scalar reference's). */
SL_INLINE void k_prep(row_state *st, const uint8_t *scales, sl_f16 d16, sl_f16 dmin16)
{
    uint8_t sc[8], m[8];
    uint64_t sc64, m64;
    sl_k_unpack_scales(scales, sc, m);
    memcpy(&sc64, sc, 8);
    memcpy(&m64, m, 8);
    __m256 scf = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)sc64)));
    __m256 mf = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)m64)));
    _mm256_storeu_ps(st->s, _mm256_mul_ps(_mm256_set1_ps(f16_to_f32(d16)), scf));
    _mm256_storeu_ps(st->m, _mm256_mul_ps(_mm256_set1_ps(f16_to_f32(dmin16)), mf));
}

SL_INLINE void prep(int kind, row_state *st, const uint8_t *row, int64_t sb)
{
    st->p = row + (size_t)sb * sb_bytes(kind);
    if (kind == SL_TYPE_Q4_K) {
        const sl_block_q4_K *b = (const void *)st->p;
        k_prep(st, b->scales, b->d, b->dmin);
    } else if (kind == SL_TYPE_Q5_K) {
        const sl_block_q5_K *b = (const void *)st->p;
        k_prep(st, b->scales, b->d, b->dmin);
    } else if (kind == SL_TYPE_Q6_K) {
        const sl_block_q6_K *b = (const void *)st->p;
        __m256 d = _mm256_set1_ps(f16_to_f32(b->d));
        __m128i sc = _mm_loadu_si128((const __m128i *)b->scales);
        _mm256_storeu_ps(st->s, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc))));
        _mm256_storeu_ps(st->s + 8,
                         _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(sc, 8)))));
    }
}

/* Byte-wise low (hi = 0) or high (hi = 1) nibbles of 32 bytes. */
SL_INLINE __m256i nibbles32(__m256i v, int hi)
{
    if (hi)
        v = _mm256_srli_epi16(v, 4);
    return _mm256_and_si256(v, _mm256_set1_epi8(15));
}

/* Bits [shift, shift + width) of each of 32 bytes, moved up to bit 4. */
SL_INLINE __m256i high_bits32(__m256i v, int shift, int width)
{
    v = _mm256_and_si256(_mm256_srli_epi16(v, shift), _mm256_set1_epi8((char)((1 << width) - 1)));
    return _mm256_slli_epi16(v, 4); /* at most 0x30 per byte: no carry across bytes */
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
    default: return unit_q6_K(st, u);
    }
}

/* Float types allow any n_in: the last n_in % 32 elements go through
 * zero-padded buffers with the same arithmetic. */
SL_INLINE void float_tail(int kind, const uint8_t *row, int64_t e0, int n, float *out)
{
    memset(out, 0, 32 * sizeof(float));
    for (int i = 0; i < n; i++) {
        if (kind == SL_TYPE_F32)
            memcpy(&out[i], row + (size_t)(e0 + i) * 4, 4);
        else if (kind == SL_TYPE_F16)
            out[i] = f16_to_f32(((const sl_f16 *)row)[e0 + i]);
        else
            out[i] = sl_bf16_to_f32(((const sl_bf16 *)row)[e0 + i]);
    }
}

SL_INLINE void fma_unit(__m256 acc[2], const w32 *wv, const float *xp)
{
    UNROLL for (int i = 0; i < 4; i++)
        acc[i & 1] = _mm256_fmadd_ps(wv->v[i], _mm256_loadu_ps(xp + 8 * i), acc[i & 1]);
}

SL_INLINE float hsum(__m256 v)
{
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
    return _mm_cvtss_f32(s4);
}

/* The one tile body every shape instantiates: rows outside, tokens inside,
 * each (row, token) pair touching only its own accumulators. */
SL_INLINE void tile(int kind, const uint8_t *w, size_t row_bytes, int64_t n_in, const float *x,
                    float *y, int64_t ldy, const int RB, const int NT)
{
    const int sbe = sb_elems(kind), units = sbe / 32;
    __m256 acc[4][4][2];
    UNROLL for (int r = 0; r < RB; r++)
        UNROLL for (int t = 0; t < NT; t++)
            acc[r][t][0] = acc[r][t][1] = _mm256_setzero_ps();
    int64_t n_sb = n_in / sbe;
    for (int64_t sb = 0; sb < n_sb; sb++) {
        row_state st[4];
        UNROLL for (int r = 0; r < RB; r++)
            prep(kind, &st[r], w + (size_t)r * row_bytes, sb);
        UNROLL for (int u = 0; u < units; u++) {
            UNROLL for (int r = 0; r < RB; r++) {
                w32 wv = unit(kind, &st[r], u);
                UNROLL for (int t = 0; t < NT; t++)
                    fma_unit(acc[r][t], &wv, x + t * n_in + sb * sbe + u * 32);
            }
        }
    }
    int tail = (int)(n_in - n_sb * sbe);
    if (is_float(kind) && tail) {
        float xt[32];
        w32 wv;
        int64_t e0 = n_sb * sbe;
        for (int r = 0; r < RB; r++) {
            float wt[32];
            float_tail(kind, w + (size_t)r * row_bytes, e0, tail, wt);
            for (int i = 0; i < 4; i++)
                wv.v[i] = _mm256_loadu_ps(wt + 8 * i);
            for (int t = 0; t < NT; t++) {
                memset(xt, 0, sizeof xt);
                memcpy(xt, x + t * n_in + e0, (size_t)tail * sizeof(float));
                fma_unit(acc[r][t], &wv, xt);
            }
        }
    }
    UNROLL for (int r = 0; r < RB; r++)
        UNROLL for (int t = 0; t < NT; t++)
            y[t * ldy + r] = hsum(_mm256_add_ps(acc[r][t][0], acc[r][t][1]));
}

#define TILE(NAME, KIND, RB, NT)                                                              \
    static void tile_##NAME##_##RB##x##NT(const uint8_t *w, size_t row_bytes, int64_t n_in,   \
                                          const float *x, float *y, int64_t ldy)              \
    {                                                                                         \
        tile(KIND, w, row_bytes, n_in, x, y, ldy, RB, NT);                                    \
    }

/* 16 ymm registers: 8 accumulators leave room for a decoded unit. */
#define KERNEL(NAME, KIND)                                                                    \
    TILE(NAME, KIND, 1, 4)                                                                    \
    TILE(NAME, KIND, 4, 1)                                                                    \
    TILE(NAME, KIND, 1, 1)                                                                    \
    static const sl_mm_kernel kernel_##NAME = {tile_##NAME##_1x4, tile_##NAME##_1x4,          \
                                               tile_##NAME##_4x1, tile_##NAME##_1x1, 1, 4, 4};

KERNEL(f32, SL_TYPE_F32)
KERNEL(f16, SL_TYPE_F16)
KERNEL(bf16, SL_TYPE_BF16)
KERNEL(q4_0, SL_TYPE_Q4_0)
KERNEL(q8_0, SL_TYPE_Q8_0)
KERNEL(q4_K, SL_TYPE_Q4_K)
KERNEL(q5_K, SL_TYPE_Q5_K)
KERNEL(q6_K, SL_TYPE_Q6_K)

const sl_mm_kernel *sl_mm_kernel_avx2(sl_type wtype)
{
    switch (wtype) {
    case SL_TYPE_F32: return &kernel_f32;
    case SL_TYPE_F16: return &kernel_f16;
    case SL_TYPE_BF16: return &kernel_bf16;
    case SL_TYPE_Q4_0: return &kernel_q4_0;
    case SL_TYPE_Q8_0: return &kernel_q8_0;
    case SL_TYPE_Q4_K: return &kernel_q4_K;
    case SL_TYPE_Q5_K: return &kernel_q5_K;
    case SL_TYPE_Q6_K: return &kernel_q6_K;
    default: return NULL;
    }
}
