/* Block-level helpers shared by quant.c and the matmul paths. */
#ifndef SLUICE_QUANT_INTERNAL_H
#define SLUICE_QUANT_INTERNAL_H

#include <string.h>

#include "kernels/types.h"

/* 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K block, read as
 * llama.cpp's get_scale_min_k4 reads them. */
static inline void sl_k_scale_min(int j, const uint8_t *scales, uint8_t *sc, uint8_t *m)
{
    /* Sub-blocks 0-3 keep their 6 bits in the low bits of bytes 0-7; 4-7 put
     * their low 4 bits in bytes 8-11 and their top 2 bits in the spare top
     * bits of bytes 0-7. */
    if (j < 4) {
        *sc = scales[j] & 63;
        *m = scales[j + 4] & 63;
    } else {
        *sc = (uint8_t)((scales[j + 4] & 0xf) | ((scales[j - 4] >> 6) << 4));
        *m = (uint8_t)((scales[j + 4] >> 4) | ((scales[j] >> 6) << 4));
    }
}

/* All eight scales and mins of a Q4_K/Q5_K block at once (same values as
 * sl_k_scale_min), four bytes at a time. */
static inline void sl_k_unpack_scales(const uint8_t *scales, uint8_t sc[8], uint8_t m[8])
{
    uint32_t a[3], lo_sc, lo_m, hi_sc, hi_m;
    memcpy(a, scales, sizeof a);
    lo_sc = a[0] & 0x3f3f3f3fu;
    lo_m = a[1] & 0x3f3f3f3fu;
    hi_sc = (a[2] & 0x0f0f0f0fu) | (((a[0] >> 6) & 0x03030303u) << 4);
    hi_m = ((a[2] >> 4) & 0x0f0f0f0fu) | (((a[1] >> 6) & 0x03030303u) << 4);
    memcpy(sc, &lo_sc, 4);
    memcpy(sc + 4, &hi_sc, 4);
    memcpy(m, &lo_m, 4);
    memcpy(m + 4, &hi_m, 4);
}

/* The sixteen scales of a Q3_K block, minus their offset of 32: scale j
 * keeps its low 4 bits in the low nibble of byte j (j < 8) or the high
 * nibble of byte j - 8, and its top 2 bits at bit 2 (j / 4) of byte
 * 8 + j % 4. */
static inline void sl_q3k_scales(const uint8_t *scales, int8_t out[16])
{
    uint32_t a[3], w[4];
    memcpy(a, scales, sizeof a);
    w[0] = (a[0] & 0x0f0f0f0fu) | ((a[2] & 0x03030303u) << 4);
    w[1] = (a[1] & 0x0f0f0f0fu) | (((a[2] >> 2) & 0x03030303u) << 4);
    w[2] = ((a[0] >> 4) & 0x0f0f0f0fu) | (((a[2] >> 4) & 0x03030303u) << 4);
    w[3] = ((a[1] >> 4) & 0x0f0f0f0fu) | (((a[2] >> 6) & 0x03030303u) << 4);
    uint8_t u[16];
    memcpy(u, w, sizeof u);
    for (int j = 0; j < 16; j++)
        out[j] = (int8_t)(u[j] - 32);
}

/* The 6-bit scale of sub-block j (0..7) of an IQ4_XS block, minus 32. */
static inline int sl_iq4xs_scale(const uint8_t *scales_l, uint16_t scales_h, int j)
{
    int ls = ((scales_l[j / 2] >> (4 * (j % 2))) & 0xf) | (((scales_h >> (2 * j)) & 3) << 4);
    return ls - 32;
}

/* Dequantises one block (sl_type_block_elems(type) elements). */
void sl_dequantize_block(sl_type type, const void *block, float *y);

#endif
