/* Builds the 16-row interleaved layouts of matmul_r16_avx512.c. */
#include <stdatomic.h>
#include <string.h>

#include "kernels/matmul_internal.h"
#include "kernels/quant_internal.h"
#include "util/pool.h"

/* Each pack_* lays out nb blocks (or superblocks) of a group of 16 rows,
 * rows[r * ld + b] being block b of row r: ld is the whole row's, nb the
 * blocks of the slice packed. */
static void pack_q4_0(const sl_block_q4_0 *rows, int64_t ld, int64_t nb, uint8_t *out)
{
    for (int64_t b = 0; b < nb; b++, out += SL_R16_Q4_0_BYTES) {
        for (int r = 0; r < 16; r++) {
            const sl_block_q4_0 *blk = &rows[r * ld + b];
            memcpy(out + 2 * r, &blk->d, 2);
            for (int k = 0; k < 4; k++)
                memcpy(out + 32 + 64 * k + 4 * r, blk->qs + 4 * k, 4);
        }
    }
}

/* Q4_1, Q5_0 and Q5_1 (kind): the Q4_0 nibble layout, the mins beside the
 * scales, and the fifth bits as one 64-bit byte mask per dword vector and
 * nibble half (bit 4r + j: element j of the dword of row r), so the kernel
 * adds 16 to exactly those bytes with one masked add. */
static void pack_b32(sl_type kind, const uint8_t *rows, size_t bb, int64_t ld, int64_t nb,
                     uint8_t *out)
{
    int has_min = kind != SL_TYPE_Q5_0, has_hi = kind != SL_TYPE_Q4_1;
    size_t bytes = sl_r16_group_bytes(kind, 32);
    for (int64_t b = 0; b < nb; b++, out += bytes) {
        uint8_t *qs_out = out + (has_min ? 64 : 32), *hi_out = qs_out + 256;
        memset(hi_out, 0, has_hi ? 64 : 0);
        for (int r = 0; r < 16; r++) {
            const uint8_t *blk = rows + (size_t)(r * ld + b) * bb;
            const uint8_t *qs = blk + bb - 16, *qh = blk + (has_min ? 4 : 2);
            memcpy(out + 2 * r, blk, 2);
            if (has_min)
                memcpy(out + 32 + 2 * r, blk + 2, 2);
            for (int k = 0; k < 4; k++)
                memcpy(qs_out + 64 * k + 4 * r, qs + 4 * k, 4);
            if (!has_hi)
                continue;
            uint32_t h;
            memcpy(&h, qh, 4);
            for (int k = 0; k < 4; k++)
                for (int j = 0; j < 4; j++) {
                    int bit = 4 * r + j;
                    hi_out[16 * k + bit / 8] |= (uint8_t)(((h >> (4 * k + j)) & 1) << (bit % 8));
                    hi_out[16 * k + 8 + bit / 8] |= (uint8_t)(((h >> (16 + 4 * k + j)) & 1) << (bit % 8));
                }
        }
    }
}

static void pack_q8_0(const sl_block_q8_0 *rows, int64_t ld, int64_t nb, uint8_t *out)
{
    for (int64_t b = 0; b < nb; b++, out += SL_R16_Q8_0_BYTES) {
        for (int r = 0; r < 16; r++) {
            const sl_block_q8_0 *blk = &rows[r * ld + b];
            memcpy(out + 2 * r, &blk->d, 2);
            for (int k = 0; k < 8; k++)
                for (int j = 0; j < 4; j++)
                    out[32 + 64 * k + 4 * r + j] = (uint8_t)(blk->qs[4 * k + j] ^ 0x80);
        }
    }
}

static void pack_q4_K(const sl_block_q4_K *rows, int64_t ld, int64_t nsb, uint8_t *out)
{
    for (int64_t sb = 0; sb < nsb; sb++, out += SL_R16_Q4_K_BYTES) {
        for (int r = 0; r < 16; r++) {
            const sl_block_q4_K *blk = &rows[r * ld + sb];
            uint8_t sc[8], m[8];
            sl_k_unpack_scales(blk->scales, sc, m);
            memcpy(out + 2 * r, &blk->d, 2);
            memcpy(out + 32 + 2 * r, &blk->dmin, 2);
            for (int s = 0; s < 8; s++) {
                out[64 + 16 * s + r] = sc[s];
                out[192 + 16 * s + r] = m[s];
            }
            for (int j = 0; j < 4; j++)
                for (int k = 0; k < 8; k++)
                    memcpy(out + 320 + (8 * j + k) * 64 + 4 * r, blk->qs + 32 * j + 4 * k, 4);
        }
    }
}

/* Q6_K's 6-bit quants of a superblock in element order (0..63). */
static void q6_K_quants(const sl_block_q6_K *b, uint8_t q[256])
{
    for (int n = 0; n < 2; n++)
        for (int l = 0; l < 32; l++) {
            const uint8_t *ql = b->ql + 64 * n, *qh = b->qh + 32 * n;
            q[128 * n + l] = (uint8_t)((ql[l] & 15) | ((qh[l] & 3) << 4));
            q[128 * n + l + 32] = (uint8_t)((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4));
            q[128 * n + l + 64] = (uint8_t)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4));
            q[128 * n + l + 96] = (uint8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4));
        }
}

static void pack_q6_K(const sl_block_q6_K *rows, int64_t ld, int64_t nsb, uint8_t *out)
{
    uint8_t q[256];
    for (int64_t sb = 0; sb < nsb; sb++, out += SL_R16_Q6_K_BYTES) {
        for (int r = 0; r < 16; r++) {
            const sl_block_q6_K *blk = &rows[r * ld + sb];
            memcpy(out + 2 * r, &blk->d, 2);
            for (int i = 0; i < 16; i++)
                out[32 + 16 * i + r] = (uint8_t)blk->scales[i];
            q6_K_quants(blk, q);
            /* dword m's low 4 bits beside dword m + 32's, as Q4_K's nibbles;
             * the high 2 bits of dwords m', m' + 16, m' + 32, m' + 48 in
             * one byte (bits 0-1, 2-3, 4-5, 6-7) */
            for (int m = 0; m < 32; m++)
                for (int j = 0; j < 4; j++)
                    out[288 + 64 * m + 4 * r + j] =
                        (uint8_t)((q[4 * m + j] & 15) | (q[4 * (m + 32) + j] & 15) << 4);
            for (int m = 0; m < 16; m++)
                for (int j = 0; j < 4; j++) {
                    uint8_t h = 0;
                    for (int c = 0; c < 4; c++)
                        h |= (uint8_t)((q[4 * (m + 16 * c) + j] >> 4) << (2 * c));
                    out[288 + 2048 + 64 * m + 4 * r + j] = h;
                }
        }
    }
}

static void pack_bf16(const sl_bf16 *rows, int64_t n_in, uint8_t *out)
{
    for (int64_t i = 0; i < n_in; i += 2, out += 64)
        for (int r = 0; r < 16; r++)
            memcpy(out + 4 * r, rows + r * n_in + i, 4);
}

size_t sl_r16_group_bytes(sl_type wtype, int64_t n_in)
{
    switch (wtype) {
    case SL_TYPE_BF16: return (size_t)n_in * 32;
    case SL_TYPE_Q4_0: return (size_t)(n_in / 32) * SL_R16_Q4_0_BYTES;
    case SL_TYPE_Q8_0: return (size_t)(n_in / 32) * SL_R16_Q8_0_BYTES;
    case SL_TYPE_Q4_K: return (size_t)(n_in / 256) * SL_R16_Q4_K_BYTES;
    case SL_TYPE_Q6_K: return (size_t)(n_in / 256) * SL_R16_Q6_K_BYTES;
    case SL_TYPE_Q4_1: return (size_t)(n_in / 32) * SL_R16_Q4_1_BYTES;
    case SL_TYPE_Q5_0: return (size_t)(n_in / 32) * SL_R16_Q5_0_BYTES;
    case SL_TYPE_Q5_1: return (size_t)(n_in / 32) * SL_R16_Q5_1_BYTES;
    default: return 0;
    }
}

/* Bytes of a group-slice a sliced copy aims at: SLUICE_R16_SLICE in KB
 * (read once) or sl_r16_set_slice_bytes for every type that may slice, 0
 * for none; by default 8 KB for Q4_0 and none for the others, which
 * measured no faster sliced (decode of synth Gemma 3 1B, see DESIGN.md).
 * A copy is sliced when its groups are more than 4 times that (by default
 * 32 KB: more than L1, 48 KB on Zen 5, holds beside a row's activations),
 * so 1152-wide rows are not. */
#define SLICE_BYTES_Q4_0 ((int64_t)8 << 10)
static _Atomic int64_t slice_state = -1; /* -2: the defaults */

void sl_r16_set_slice_bytes(int64_t bytes) { atomic_store(&slice_state, bytes < 0 ? -1 : bytes); }

static int64_t slice_bytes(sl_type wtype)
{
    int64_t b = atomic_load_explicit(&slice_state, memory_order_relaxed);
    if (b == -1) {
        b = sl_env_kb("SLUICE_R16_SLICE", -2);
        atomic_store_explicit(&slice_state, b, memory_order_relaxed);
    }
    if (b == -2)
        return wtype == SL_TYPE_Q4_0 ? SLICE_BYTES_Q4_0 : 0;
    return b;
}

int64_t sl_r16_slice_blocks(sl_type wtype, int64_t n_in)
{
    int64_t nb = n_in / 32;
    switch (wtype) {
    case SL_TYPE_Q4_0:
    case SL_TYPE_Q8_0:
    case SL_TYPE_Q5_0:
    case SL_TYPE_Q4_K:
    case SL_TYPE_Q6_K: break;
    default: return nb;
    }
    int64_t want = slice_bytes(wtype), gb = (int64_t)sl_r16_group_bytes(wtype, n_in);
    if (want <= 0 || gb <= 4 * want)
        return nb;
    int64_t n_slices = (gb + want - 1) / want;
    int64_t sb = ((nb + n_slices - 1) / n_slices + 7) / 8 * 8; /* whole superblocks */
    return sb < nb ? sb : nb;
}

typedef struct pack_args {
    sl_type wtype;
    const void *w;
    int64_t n_groups, n_in, slice; /* slice: blocks of 32 a slice */
    uint8_t *out;
} pack_args;

/* Groups [g0, g1) of the slice of blocks [b0, b1): the ordinary layout of
 * that slice's columns, its groups at out. */
static void pack_slice(const pack_args *a, int64_t g0, int64_t g1, int64_t b0, int64_t b1,
                       uint8_t *out)
{
    sl_type wtype = a->wtype;
    int64_t n_in = a->n_in, nb = n_in / 32, nsb = n_in / 256, n = b1 - b0;
    size_t gb = sl_r16_group_bytes(wtype, wtype == SL_TYPE_BF16 ? n_in : 32 * n);
    size_t rb = sl_row_bytes(wtype, n_in);
    /* the slice's first block of row 0 of group g */
    const uint8_t *w = (const uint8_t *)a->w + sl_row_bytes(wtype, 32 * b0);
    for (int64_t g = g0; g < g1; g++) {
        uint8_t *o = out + (size_t)g * gb;
        const uint8_t *wg = w + (size_t)g * 16 * rb;
        switch (wtype) {
        case SL_TYPE_Q4_0: pack_q4_0((const sl_block_q4_0 *)wg, nb, n, o); break;
        case SL_TYPE_Q8_0: pack_q8_0((const sl_block_q8_0 *)wg, nb, n, o); break;
        case SL_TYPE_Q4_K: pack_q4_K((const sl_block_q4_K *)wg, nsb, n / 8, o); break;
        case SL_TYPE_Q6_K: pack_q6_K((const sl_block_q6_K *)wg, nsb, n / 8, o); break;
        case SL_TYPE_Q4_1:
        case SL_TYPE_Q5_0:
        case SL_TYPE_Q5_1: pack_b32(wtype, wg, sl_type_block_bytes(wtype), nb, n, o); break;
        case SL_TYPE_BF16: pack_bf16((const sl_bf16 *)a->w + g * 16 * n_in, n_in, o); break;
        default: break;
        }
    }
}

static void pack_range(void *arg, int64_t g0, int64_t g1)
{
    const pack_args *a = arg;
    int64_t nb = a->n_in / 32;
    uint8_t *out = a->out;
    if (a->wtype == SL_TYPE_BF16) {
        pack_slice(a, g0, g1, 0, nb, out);
        return;
    }
    /* slice s: every group's blocks of [s * slice, ...), one after the other */
    for (int64_t b0 = 0; b0 < nb; b0 += a->slice) {
        int64_t b1 = b0 + a->slice < nb ? b0 + a->slice : nb;
        pack_slice(a, g0, g1, b0, b1, out);
        out += (size_t)a->n_groups * sl_r16_group_bytes(a->wtype, 32 * (b1 - b0));
    }
}

void sl_r16_pack(sl_type wtype, const void *w, int64_t n_groups, int64_t n_in, int64_t slice,
                 uint8_t *out)
{
    pack_args a = {wtype, w, n_groups, n_in, slice > 0 ? slice : n_in / 32, out};
    sl_pool_for(n_groups, 1, pack_range, &a);
}
