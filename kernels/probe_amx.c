/* The int8 multiply-add peak of AMX: TDPBSSD on full tiles (16 x 64 bytes
 * times 16 x 64) into four independent C tiles, so the loop runs at the
 * matrix unit's issue rate. The prefill kernels (matmul_amx.c) use K = 32
 * per product and store every C tile, so they reach a fraction of it. */
#if defined(__x86_64__)
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "kernels/probe.h"

typedef struct probe_amx_cfg {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} probe_amx_cfg;

int64_t sl_probe_amx_loop(int64_t iters, uint32_t seed)
{
    probe_amx_cfg c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int t = 0; t < 8; t++) {
        c.rows[t] = 16;
        c.colsb[t] = 64;
    }
    /* the whole struct as the operand (see matmul_amx.c) */
    __asm__ volatile("ldtilecfg %0" : : "m"(c));
    uint32_t src[16 * 16];
    for (int i = 0; i < 16 * 16; i++)
        src[i] = seed * 2654435761u + (uint32_t)i * 40503u;
    _tile_loadd(0, src, 64);
    _tile_loadd(1, src, 64);
    _tile_loadd(2, src, 64);
    _tile_loadd(3, src, 64);
    _tile_zero(4);
    _tile_zero(5);
    _tile_zero(6);
    _tile_zero(7);
    for (int64_t i = 0; i < iters; i++) {
        _tile_dpbssd(4, 0, 2);
        _tile_dpbssd(5, 0, 3);
        _tile_dpbssd(6, 1, 2);
        _tile_dpbssd(7, 1, 3);
    }
    int32_t out[16 * 16];
    _tile_stored(4, out, 64);
    int64_t sum = 0;
    for (int i = 0; i < 16 * 16; i++)
        sum += out[i];
    _tile_release();
    return sum;
}
#endif
