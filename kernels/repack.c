/* Builds the 16-row interleaved layouts of matmul_r16_avx512.c. */
#include <string.h>

#include "kernels/matmul_internal.h"

static void pack_q4_0(const sl_block_q4_0 *rows, int64_t nb, uint8_t *out)
{
    /* rows[r * nb + b] is block b of row r of the group */
    for (int64_t b = 0; b < nb; b++, out += SL_R16_Q4_0_BYTES) {
        for (int r = 0; r < 16; r++) {
            const sl_block_q4_0 *blk = &rows[r * nb + b];
            memcpy(out + 2 * r, &blk->d, 2);
            for (int k = 0; k < 4; k++)
                memcpy(out + 32 + 64 * k + 4 * r, blk->qs + 4 * k, 4);
        }
    }
}

static void pack_q8_0(const sl_block_q8_0 *rows, int64_t nb, uint8_t *out)
{
    for (int64_t b = 0; b < nb; b++, out += SL_R16_Q8_0_BYTES) {
        for (int r = 0; r < 16; r++) {
            const sl_block_q8_0 *blk = &rows[r * nb + b];
            memcpy(out + 2 * r, &blk->d, 2);
            for (int k = 0; k < 8; k++)
                for (int j = 0; j < 4; j++)
                    out[32 + 64 * k + 4 * r + j] = (uint8_t)(blk->qs[4 * k + j] ^ 0x80);
        }
    }
}

void sl_r16_pack(sl_type wtype, const void *w, int64_t n_groups, int64_t n_in, uint8_t *out)
{
    int64_t nb = n_in / 32;
#pragma omp parallel for schedule(static)
    for (int64_t g = 0; g < n_groups; g++) {
        if (wtype == SL_TYPE_Q4_0)
            pack_q4_0((const sl_block_q4_0 *)w + g * 16 * nb, nb, out + g * nb * SL_R16_Q4_0_BYTES);
        else
            pack_q8_0((const sl_block_q8_0 *)w + g * 16 * nb, nb, out + g * nb * SL_R16_Q8_0_BYTES);
    }
}
