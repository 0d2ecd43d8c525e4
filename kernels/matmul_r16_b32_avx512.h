/* What the two-group tiles of 32-element block types (Q4_0, Q4_1, Q5_0,
 * Q5_1) on the 16-row repacked layout share, whatever their token count:
 * the block's layout facts and the unpacking of one dword column k of both
 * groups' nibbles (and fifth bits). Integer work only, so the tiles' float
 * steps, and with them their bits, are their own. Included by the
 * AVX-512 kernel files (matmul_r16s_avx512.c, matmul_r16pf_avx512.h). */
#ifndef SLUICE_KERNELS_MATMUL_R16_B32_AVX512_H
#define SLUICE_KERNELS_MATMUL_R16_B32_AVX512_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "kernels/matmul_internal.h"

typedef struct {
    int has_min; /* Q4_1, Q5_1: a min per block, quants after 64 bytes of scales */
    int has_hi;  /* Q5_0, Q5_1: a fifth bit per quant, 256 bytes into the quants */
    int off;     /* the offset taken off every quant: Q4_0 8, Q5_0 16 */
    size_t bytes; /* one block of the 16-row group */
} r16_b32_fmt;

static inline __attribute__((always_inline)) r16_b32_fmt r16_b32_fmt_of(int kind)
{
    r16_b32_fmt f;
    f.has_min = kind == SL_TYPE_Q4_1 || kind == SL_TYPE_Q5_1;
    f.has_hi = kind == SL_TYPE_Q5_0 || kind == SL_TYPE_Q5_1;
    f.bytes = kind == SL_TYPE_Q4_0   ? SL_R16_Q4_0_BYTES
              : kind == SL_TYPE_Q4_1 ? SL_R16_Q4_1_BYTES
              : kind == SL_TYPE_Q5_0 ? SL_R16_Q5_0_BYTES
                                     : SL_R16_Q5_1_BYTES;
    f.off = kind == SL_TYPE_Q4_0 ? 8 : kind == SL_TYPE_Q5_0 ? 16 : 0;
    return f;
}

/* Dword column k of both groups' quants (qs0, qs1: each group's quants of
 * the block): low and high nibbles as bytes, the fifth bit added when
 * has_hi. */
static inline __attribute__((always_inline)) void
r16_b32_unpack2(const uint8_t *qs0, const uint8_t *qs1, int k, int has_hi, __m512i *l0, __m512i *h0,
                __m512i *l1, __m512i *h1)
{
    const __m512i m4 = _mm512_set1_epi8(15), b4 = _mm512_set1_epi8(16);
    __m512i v0 = _mm512_loadu_si512(qs0 + 64 * k), v1 = _mm512_loadu_si512(qs1 + 64 * k);
    *l0 = _mm512_and_si512(v0, m4);
    *h0 = _mm512_and_si512(_mm512_srli_epi16(v0, 4), m4);
    *l1 = _mm512_and_si512(v1, m4);
    *h1 = _mm512_and_si512(_mm512_srli_epi16(v1, 4), m4);
    if (has_hi) {
        uint64_t ml, mh;
        memcpy(&ml, qs0 + 256 + 16 * k, 8);
        memcpy(&mh, qs0 + 256 + 16 * k + 8, 8);
        *l0 = _mm512_mask_add_epi8(*l0, _cvtu64_mask64(ml), *l0, b4);
        *h0 = _mm512_mask_add_epi8(*h0, _cvtu64_mask64(mh), *h0, b4);
        memcpy(&ml, qs1 + 256 + 16 * k, 8);
        memcpy(&mh, qs1 + 256 + 16 * k + 8, 8);
        *l1 = _mm512_mask_add_epi8(*l1, _cvtu64_mask64(ml), *l1, b4);
        *h1 = _mm512_mask_add_epi8(*h1, _cvtu64_mask64(mh), *h1, b4);
    }
}

#endif
