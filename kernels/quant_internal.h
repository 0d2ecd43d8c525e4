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

/* Dequantises one block (sl_type_block_elems(type) elements). */
void sl_dequantize_block(sl_type type, const void *block, float *y);

#endif
