/* The float-activation matmul tiles, written once for two instruction sets.
 *
 * The including file (matmul_avx2.c, matmul_avx512.c) first defines:
 *   MMF_NAME(x)      its symbol suffix (x##_avx2)
 *   mmf_vf           its float vector type, MMF_VECS of which hold 32 floats
 *   w32              struct { mmf_vf v[MMF_VECS]; }: one decoded unit of 32
 *   mmf_zero, mmf_loadu, mmf_fmadd, mmf_add, mmf_hsum   on mmf_vf
 *   MMF_BATCH_ROWS   rows of the prefill tile (its register budget)
 *   mmf_codes()      32 byte codes times scales (see unit_codes below)
 * then includes this file, then defines unit() (declared below), which
 * decodes unit u of a row's superblock into a w32 (unit_codes() serves the
 * types it leaves to this file).
 *
 * Every (row, token) pair owns two accumulators: vector i of a unit goes to
 * accumulator i & 1. Each pair has one final reduction, whatever tile it
 * runs in, so the tiling never changes a bit of y. Decoded weights equal the
 * scalar reference's dequantised values bit for bit. */
#include <string.h>

#include "kernels/matmul_internal.h"
#include "kernels/quant_internal.h"

#define UNROLL _Pragma("GCC unroll 16")

/* What a row needs while its superblock is decoded: the block and scales
 * worked out once per superblock. */
typedef struct {
    const uint8_t *p;
    float s[16];
    float m[16];
} row_state;

SL_INLINE float f16_to_f32(sl_f16 h)
{
    return _cvtsh_ss(h);
}

SL_INLINE int sb_elems(int kind)
{
    return kind == SL_TYPE_Q4_K || kind == SL_TYPE_Q5_K || kind == SL_TYPE_Q6_K ||
                   kind == SL_TYPE_Q2_K || kind == SL_TYPE_Q3_K || kind == SL_TYPE_IQ4_XS
               ? SL_QK_K
               : 32;
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
    case SL_TYPE_Q4_1: return sizeof(sl_block_q4_1);
    case SL_TYPE_Q5_0: return sizeof(sl_block_q5_0);
    case SL_TYPE_Q5_1: return sizeof(sl_block_q5_1);
    case SL_TYPE_IQ4_NL: return sizeof(sl_block_iq4_nl);
    case SL_TYPE_Q2_K: return sizeof(sl_block_q2_K);
    case SL_TYPE_Q3_K: return sizeof(sl_block_q3_K);
    case SL_TYPE_IQ4_XS: return sizeof(sl_block_iq4_xs);
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

/* Float scales of the 16-element groups (s) and Q2_K's mins (m), as the
 * scalar reference computes them; IQ4_XS: s[j] per 32-element sub-block. */
SL_INLINE void prep_small_scales(int kind, row_state *st)
{
    if (kind == SL_TYPE_Q2_K) {
        const sl_block_q2_K *b = (const void *)st->p;
        float d = f16_to_f32(b->d), dmin = f16_to_f32(b->dmin);
        for (int g = 0; g < 16; g++) {
            st->s[g] = d * (float)(b->scales[g] & 0xf);
            st->m[g] = dmin * (float)(b->scales[g] >> 4);
        }
    } else if (kind == SL_TYPE_Q3_K) {
        const sl_block_q3_K *b = (const void *)st->p;
        float d = f16_to_f32(b->d);
        int8_t sc[16];
        sl_q3k_scales(b->scales, sc);
        for (int g = 0; g < 16; g++)
            st->s[g] = d * (float)sc[g];
    } else {
        const sl_block_iq4_xs *b = (const void *)st->p;
        float d = f16_to_f32(b->d);
        for (int j = 0; j < 8; j++)
            st->s[j] = d * (float)sl_iq4xs_scale(b->scales_l, b->scales_h, j);
    }
}

SL_INLINE void prep(int kind, row_state *st, const uint8_t *row, int64_t sb)
{
    st->p = row + (size_t)sb * sb_bytes(kind);
    if (kind == SL_TYPE_Q2_K || kind == SL_TYPE_Q3_K || kind == SL_TYPE_IQ4_XS) {
        prep_small_scales(kind, st);
        return;
    }
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

/* 0x10 in byte i where bit i of the 32 bits at qh4 is set. */
SL_INLINE __m256i q5_high32(const uint8_t *qh4)
{
    uint32_t qh;
    memcpy(&qh, qh4, sizeof qh);
    const __m256i spread = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                             0x0101010101010101, 0x0000000000000000);
    __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), spread);
    bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    bytes = _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1));
    return _mm256_and_si256(bytes, _mm256_set1_epi8(0x10));
}

/* Low nibbles of 16 bytes, then their high nibbles: a block's 32 codes in
 * element order. */
SL_INLINE __m256i nibble_codes(const uint8_t *qs16)
{
    __m128i x = _mm_loadu_si128((const __m128i *)qs16);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(x, 4), x), _mm256_set1_epi8(15));
}

SL_INLINE __m256i iq4_grid(__m256i codes)
{
    const __m128i g = _mm_loadu_si128((const __m128i *)sl_iq4nl_values);
    return _mm256_shuffle_epi8(_mm256_set_m128i(g, g), codes);
}

/* Unit u of the types whose weights are d * code (+ a min): the codes as
 * 32 bytes, then mmf_codes(codes, signed, d of elements 0-15, of 16-31,
 * added term of each half, whether there is one), which forms d * code,
 * rounded, then the sum, rounded: the scalar reference's operations. */
SL_INLINE w32 unit_codes(int kind, const row_state *st, int u)
{
    switch (kind) {
    case SL_TYPE_Q4_1: {
        const sl_block_q4_1 *b = (const void *)st->p;
        float d = f16_to_f32(b->d), m = f16_to_f32(b->m);
        return mmf_codes(nibble_codes(b->qs), 0, d, d, m, m, 1);
    }
    case SL_TYPE_Q5_0: {
        const sl_block_q5_0 *b = (const void *)st->p;
        float d = f16_to_f32(b->d);
        __m256i q = _mm256_or_si256(nibble_codes(b->qs), q5_high32(b->qh));
        return mmf_codes(_mm256_sub_epi8(q, _mm256_set1_epi8(16)), 1, d, d, 0, 0, 0);
    }
    case SL_TYPE_Q5_1: {
        const sl_block_q5_1 *b = (const void *)st->p;
        float d = f16_to_f32(b->d), m = f16_to_f32(b->m);
        return mmf_codes(_mm256_or_si256(nibble_codes(b->qs), q5_high32(b->qh)), 0, d, d, m, m, 1);
    }
    case SL_TYPE_IQ4_NL: {
        const sl_block_iq4_nl *b = (const void *)st->p;
        float d = f16_to_f32(b->d);
        return mmf_codes(iq4_grid(nibble_codes(b->qs)), 1, d, d, 0, 0, 0);
    }
    case SL_TYPE_IQ4_XS: {
        const sl_block_iq4_xs *b = (const void *)st->p;
        return mmf_codes(iq4_grid(nibble_codes(b->qs + 16 * u)), 1, st->s[u], st->s[u], 0, 0, 0);
    }
    default: { /* Q2_K, Q3_K: unit u takes bits 2 (u % 4) of qs[32 (u / 4) + i] */
        const uint8_t *qs = kind == SL_TYPE_Q2_K ? ((const sl_block_q2_K *)st->p)->qs
                                                 : ((const sl_block_q3_K *)st->p)->qs;
        __m256i v = _mm256_loadu_si256((const __m256i *)(qs + 32 * (u / 4)));
        v = _mm256_and_si256(_mm256_srl_epi16(v, _mm_cvtsi32_si128(2 * (u % 4))), _mm256_set1_epi8(3));
        if (kind == SL_TYPE_Q2_K)
            return mmf_codes(v, 0, st->s[2 * u], st->s[2 * u + 1], -st->m[2 * u], -st->m[2 * u + 1], 1);
        /* Q3_K: a clear hmask bit u subtracts 4 */
        const sl_block_q3_K *b = (const void *)st->p;
        __m256i h = _mm256_loadu_si256((const __m256i *)b->hmask);
        h = _mm256_and_si256(_mm256_srl_epi16(h, _mm_cvtsi32_si128(u)), _mm256_set1_epi8(1));
        v = _mm256_sub_epi8(_mm256_or_si256(v, _mm256_slli_epi16(h, 2)), _mm256_set1_epi8(4));
        return mmf_codes(v, 1, st->s[2 * u], st->s[2 * u + 1], 0, 0, 0);
    }
    }
}

/* Decodes unit u (32 weights) of the superblock st was prepared for. */
SL_INLINE w32 unit(int kind, const row_state *st, int u);

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

SL_INLINE void fma_unit(mmf_vf acc[2], const w32 *wv, const float *xp)
{
    UNROLL for (int i = 0; i < MMF_VECS; i++)
        acc[i & 1] = mmf_fmadd(wv->v[i], mmf_loadu(xp + (32 / MMF_VECS) * i), acc[i & 1]);
}

/* The one tile body every shape instantiates: rows outside, tokens inside,
 * each (row, token) pair touching only its own accumulators. */
SL_INLINE void tile(int kind, const uint8_t *w, size_t row_bytes, int64_t n_in, const float *x,
                    float *y, int64_t ldy, const int RB, const int NT)
{
    const int sbe = sb_elems(kind), units = sbe / 32;
    mmf_vf acc[4][4][2];
    UNROLL for (int r = 0; r < RB; r++)
        UNROLL for (int t = 0; t < NT; t++)
            acc[r][t][0] = acc[r][t][1] = mmf_zero();
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
        float wt[32], xt[32];
        w32 wv;
        int64_t e0 = n_sb * sbe;
        for (int r = 0; r < RB; r++) {
            float_tail(kind, w + (size_t)r * row_bytes, e0, tail, wt);
            for (int i = 0; i < MMF_VECS; i++)
                wv.v[i] = mmf_loadu(wt + (32 / MMF_VECS) * i);
            for (int t = 0; t < NT; t++) {
                memset(xt, 0, sizeof xt);
                memcpy(xt, x + t * n_in + e0, (size_t)tail * sizeof(float));
                fma_unit(acc[r][t], &wv, xt);
            }
        }
    }
    UNROLL for (int r = 0; r < RB; r++)
        UNROLL for (int t = 0; t < NT; t++)
            y[t * ldy + r] = mmf_hsum(mmf_add(acc[r][t][0], acc[r][t][1]));
}

#define TILE(NAME, KIND, SHAPE, RB, NT)                                                       \
    static void tile_##NAME##_##SHAPE(const uint8_t *w, size_t row_bytes, int64_t n_in,       \
                                          const float *x, float *y, int64_t ldy)              \
    {                                                                                         \
        tile(KIND, w, row_bytes, n_in, x, y, ldy, RB, NT);                                    \
    }

/* The prefill tile (MMF_BATCH_ROWS x 4), the row-edge tile 1 x 4, the
 * decode tile 4 x 1 and the edge 1 x 1. */
#define KERNEL(NAME, KIND)                                                                    \
    TILE(NAME, KIND, batch, MMF_BATCH_ROWS, 4)                                                \
    TILE(NAME, KIND, 1x4, 1, 4)                                                               \
    TILE(NAME, KIND, 4x1, 4, 1)                                                               \
    TILE(NAME, KIND, 1x1, 1, 1)                                                               \
    static const sl_mm_kernel kernel_##NAME = {tile_##NAME##_batch, tile_##NAME##_1x4,        \
                                               tile_##NAME##_4x1,   tile_##NAME##_1x1,        \
                                               MMF_BATCH_ROWS,      4,                        \
                                               4};

KERNEL(f32, SL_TYPE_F32)
KERNEL(f16, SL_TYPE_F16)
KERNEL(bf16, SL_TYPE_BF16)
KERNEL(q4_0, SL_TYPE_Q4_0)
KERNEL(q8_0, SL_TYPE_Q8_0)
KERNEL(q4_K, SL_TYPE_Q4_K)
KERNEL(q5_K, SL_TYPE_Q5_K)
KERNEL(q6_K, SL_TYPE_Q6_K)
KERNEL(q4_1, SL_TYPE_Q4_1)
KERNEL(q5_0, SL_TYPE_Q5_0)
KERNEL(q5_1, SL_TYPE_Q5_1)
KERNEL(iq4_nl, SL_TYPE_IQ4_NL)
KERNEL(q2_K, SL_TYPE_Q2_K)
KERNEL(q3_K, SL_TYPE_Q3_K)
KERNEL(iq4_xs, SL_TYPE_IQ4_XS)

const sl_mm_kernel *MMF_NAME(sl_mm_kernel)(sl_type wtype)
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
    case SL_TYPE_Q4_1: return &kernel_q4_1;
    case SL_TYPE_Q5_0: return &kernel_q5_0;
    case SL_TYPE_Q5_1: return &kernel_q5_1;
    case SL_TYPE_IQ4_NL: return &kernel_iq4_nl;
    case SL_TYPE_Q2_K: return &kernel_q2_K;
    case SL_TYPE_Q3_K: return &kernel_q3_K;
    case SL_TYPE_IQ4_XS: return &kernel_iq4_xs;
    default: return NULL;
    }
}
