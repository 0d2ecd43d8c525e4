/* The integer matmul path: 4-, 6- and 8-bit weights against activations
 * quantised to 8 bits (kernels/q8act.h). This file holds the scalar
 * reference of that path; the SIMD paths are in matmul_q8_impl.h.
 *
 * Per (row, token) the result is
 *   sum over weight blocks of (weight scale * activation scale) * integer dot
 * (minus the Q4_K mins term), each integer dot exact. */
#include <stdbool.h>
#include <string.h>

#include "kernels/matmul_internal.h"
#include "kernels/quant_internal.h"

bool sl_mmq_supports(sl_type wtype)
{
    return sl_mmq_ref(wtype) != NULL;
}

/* Weight code of element i (0..31) of a 32-element block of Q5_0/Q5_1:
 * the nibble plus the fifth bit from qh. */
static int q5_code(const uint8_t *qs, const uint8_t qh4[4], int i)
{
    uint32_t qh;
    memcpy(&qh, qh4, sizeof qh);
    int nib = i < 16 ? qs[i] & 15 : qs[i - 16] >> 4;
    return nib | (int)(((qh >> i) & 1) << 4);
}

/* Weight code of element i of a 32-element block of nibbles (Q4_0, Q4_1,
 * IQ4_NL, each IQ4_XS sub-block). */
static int nib_code(const uint8_t *qs, int i)
{
    return i < 16 ? qs[i] & 15 : qs[i - 16] >> 4;
}

static double dot_q4_0(const uint8_t *row, const sl_q8act *a, int64_t t)
{
    const sl_block_q4_0 *blk = (const void *)row;
    const int8_t *q = a->q + t * a->n_in;
    double acc = 0;
    for (int64_t b = 0; b < a->n_blocks; b++, q += 32) {
        int idot = 0;
        for (int i = 0; i < 16; i++)
            idot += ((blk[b].qs[i] & 15) - 8) * q[i] + ((blk[b].qs[i] >> 4) - 8) * q[i + 16];
        float scale = sl_f16_to_f32(blk[b].d) * a->d[t * a->n_blocks + b];
        acc += (double)scale * idot;
    }
    return acc;
}

static double dot_q8_0(const uint8_t *row, const sl_q8act *a, int64_t t)
{
    const sl_block_q8_0 *blk = (const void *)row;
    const int8_t *q = a->q + t * a->n_in;
    double acc = 0;
    for (int64_t b = 0; b < a->n_blocks; b++, q += 32) {
        int idot = 0;
        for (int i = 0; i < 32; i++)
            idot += blk[b].qs[i] * q[i];
        float scale = sl_f16_to_f32(blk[b].d) * a->d[t * a->n_blocks + b];
        acc += (double)scale * idot;
    }
    return acc;
}

static double dot_q4_K(const uint8_t *row, const sl_q8act *a, int64_t t)
{
    const sl_block_q4_K *blk = (const void *)row;
    const int8_t *q = a->q + t * a->n_in;
    const float *da = a->d + t * a->n_blocks, *ds = a->ds + t * a->n_blocks;
    double acc = 0;
    for (int64_t sb = 0; sb < a->n_blocks / 8; sb++, q += 256, da += 8, ds += 8) {
        float d = sl_f16_to_f32(blk[sb].d), dmin = sl_f16_to_f32(blk[sb].dmin);
        uint8_t sc[8], m[8];
        sl_k_unpack_scales(blk[sb].scales, sc, m);
        for (int j = 0; j < 8; j++) {
            const uint8_t *qs = blk[sb].qs + 32 * (j / 2);
            int shift = 4 * (j & 1), idot = 0;
            for (int i = 0; i < 32; i++)
                idot += ((qs[i] >> shift) & 15) * q[32 * j + i];
            acc += (double)(d * sc[j] * da[j]) * idot - (double)(dmin * m[j]) * ds[j];
        }
    }
    return acc;
}

static double dot_q6_K(const uint8_t *row, const sl_q8act *a, int64_t t)
{
    const sl_block_q6_K *blk = (const void *)row;
    const int8_t *q = a->q + t * a->n_in;
    const float *da = a->d + t * a->n_blocks;
    double acc = 0;
    for (int64_t sb = 0; sb < a->n_blocks / 8; sb++, q += 256, da += 8) {
        float d = sl_f16_to_f32(blk[sb].d);
        for (int g = 0; g < 8; g++) { /* 32-element group g: half n, quarter k */
            int n = g / 4, k = g % 4;
            const uint8_t *ql = blk[sb].ql + 64 * n + 32 * (k & 1);
            const uint8_t *qh = blk[sb].qh + 32 * n;
            for (int h = 0; h < 2; h++) {
                int idot = 0;
                for (int i = 16 * h; i < 16 * h + 16; i++) {
                    int v = ((ql[i] >> (4 * (k >> 1))) & 15) | (((qh[i] >> (2 * k)) & 3) << 4);
                    idot += (v - 32) * q[32 * g + i];
                }
                float s = d * blk[sb].scales[2 * g + h];
                acc += (double)(s * da[g]) * idot;
            }
        }
    }
    return acc;
}

/* Q4_1 and Q5_1: d * code + m, so the dot is d * da * (code . q) plus
 * m * (da * sum q), the second factor being q8act's ds. */
static double dot_q4_1(const uint8_t *row, const sl_q8act *a, int64_t t)
{
    const sl_block_q4_1 *blk = (const void *)row;
    const int8_t *q = a->q + t * a->n_in;
    double acc = 0;
    for (int64_t b = 0; b < a->n_blocks; b++, q += 32) {
        int idot = 0;
        for (int i = 0; i < 32; i++)
            idot += nib_code(blk[b].qs, i) * q[i];
        float scale = sl_f16_to_f32(blk[b].d) * a->d[t * a->n_blocks + b];
        acc += (double)scale * idot + (double)sl_f16_to_f32(blk[b].m) * a->ds[t * a->n_blocks + b];
    }
    return acc;
}

static double dot_q5_0(const uint8_t *row, const sl_q8act *a, int64_t t)
{
    const sl_block_q5_0 *blk = (const void *)row;
    const int8_t *q = a->q + t * a->n_in;
    double acc = 0;
    for (int64_t b = 0; b < a->n_blocks; b++, q += 32) {
        int idot = 0;
        for (int i = 0; i < 32; i++)
            idot += (q5_code(blk[b].qs, blk[b].qh, i) - 16) * q[i];
        float scale = sl_f16_to_f32(blk[b].d) * a->d[t * a->n_blocks + b];
        acc += (double)scale * idot;
    }
    return acc;
}

static double dot_q5_1(const uint8_t *row, const sl_q8act *a, int64_t t)
{
    const sl_block_q5_1 *blk = (const void *)row;
    const int8_t *q = a->q + t * a->n_in;
    double acc = 0;
    for (int64_t b = 0; b < a->n_blocks; b++, q += 32) {
        int idot = 0;
        for (int i = 0; i < 32; i++)
            idot += q5_code(blk[b].qs, blk[b].qh, i) * q[i];
        float scale = sl_f16_to_f32(blk[b].d) * a->d[t * a->n_blocks + b];
        acc += (double)scale * idot + (double)sl_f16_to_f32(blk[b].m) * a->ds[t * a->n_blocks + b];
    }
    return acc;
}

static double dot_iq4_nl(const uint8_t *row, const sl_q8act *a, int64_t t)
{
    const sl_block_iq4_nl *blk = (const void *)row;
    const int8_t *q = a->q + t * a->n_in;
    double acc = 0;
    for (int64_t b = 0; b < a->n_blocks; b++, q += 32) {
        int idot = 0;
        for (int i = 0; i < 32; i++)
            idot += sl_iq4nl_values[nib_code(blk[b].qs, i)] * q[i];
        float scale = sl_f16_to_f32(blk[b].d) * a->d[t * a->n_blocks + b];
        acc += (double)scale * idot;
    }
    return acc;
}

static double dot_iq4_xs(const uint8_t *row, const sl_q8act *a, int64_t t)
{
    const sl_block_iq4_xs *blk = (const void *)row;
    const int8_t *q = a->q + t * a->n_in;
    const float *da = a->d + t * a->n_blocks;
    double acc = 0;
    for (int64_t sb = 0; sb < a->n_blocks / 8; sb++) {
        float d = sl_f16_to_f32(blk[sb].d);
        for (int j = 0; j < 8; j++, q += 32) {
            int idot = 0;
            for (int i = 0; i < 32; i++)
                idot += sl_iq4nl_values[nib_code(blk[sb].qs + 16 * j, i)] * q[i];
            float dl = d * (float)sl_iq4xs_scale(blk[sb].scales_l, blk[sb].scales_h, j);
            acc += (double)(dl * da[8 * sb + j]) * idot;
        }
    }
    return acc;
}

static double dot_q5_K(const uint8_t *row, const sl_q8act *a, int64_t t)
{
    const sl_block_q5_K *blk = (const void *)row;
    const int8_t *q = a->q + t * a->n_in;
    const float *da = a->d + t * a->n_blocks, *ds = a->ds + t * a->n_blocks;
    double acc = 0;
    for (int64_t sb = 0; sb < a->n_blocks / 8; sb++, q += 256, da += 8, ds += 8) {
        float d = sl_f16_to_f32(blk[sb].d), dmin = sl_f16_to_f32(blk[sb].dmin);
        uint8_t sc[8], m[8];
        sl_k_unpack_scales(blk[sb].scales, sc, m);
        for (int j = 0; j < 8; j++) {
            const uint8_t *qs = blk[sb].qs + 32 * (j / 2);
            int shift = 4 * (j & 1), idot = 0;
            for (int i = 0; i < 32; i++)
                idot += (((qs[i] >> shift) & 15) | (((blk[sb].qh[i] >> j) & 1) << 4)) * q[32 * j + i];
            acc += (double)(d * sc[j] * da[j]) * idot - (double)(dmin * m[j]) * ds[j];
        }
    }
    return acc;
}

/* Q2_K and Q3_K: 32-element block j of a superblock takes bits 2 (j % 4)
 * of qs[32 (j / 4) + i]; its halves have their own scales (and for Q2_K
 * mins, against q8act's 16-element sums). */
static double dot_q2_K(const uint8_t *row, const sl_q8act *a, int64_t t)
{
    const sl_block_q2_K *blk = (const void *)row;
    const int8_t *q = a->q + t * a->n_in;
    const float *da = a->d + t * a->n_blocks;
    const int32_t *s16 = a->s16 + t * (a->n_in / 16);
    double acc = 0;
    for (int64_t sb = 0; sb < a->n_blocks / 8; sb++) {
        float d = sl_f16_to_f32(blk[sb].d), dmin = sl_f16_to_f32(blk[sb].dmin);
        for (int j = 0; j < 8; j++, q += 32) {
            const uint8_t *qs = blk[sb].qs + 32 * (j / 4);
            for (int h = 0; h < 2; h++) {
                int idot = 0, g = 2 * j + h;
                for (int i = 16 * h; i < 16 * h + 16; i++)
                    idot += ((qs[i] >> (2 * (j % 4))) & 3) * q[i];
                float dl = d * (float)(blk[sb].scales[g] & 0xf);
                float ml = dmin * (float)(blk[sb].scales[g] >> 4);
                float dab = da[8 * sb + j];
                acc += (double)(dl * dab) * idot - (double)(ml * dab) * s16[16 * sb + g];
            }
        }
    }
    return acc;
}

static double dot_q3_K(const uint8_t *row, const sl_q8act *a, int64_t t)
{
    const sl_block_q3_K *blk = (const void *)row;
    const int8_t *q = a->q + t * a->n_in;
    const float *da = a->d + t * a->n_blocks;
    double acc = 0;
    for (int64_t sb = 0; sb < a->n_blocks / 8; sb++) {
        float d = sl_f16_to_f32(blk[sb].d);
        int8_t sc[16];
        sl_q3k_scales(blk[sb].scales, sc);
        for (int j = 0; j < 8; j++, q += 32) {
            const uint8_t *qs = blk[sb].qs + 32 * (j / 4);
            for (int h = 0; h < 2; h++) {
                int idot = 0;
                for (int i = 16 * h; i < 16 * h + 16; i++) {
                    int low = (qs[i] >> (2 * (j % 4))) & 3, hb = (blk[sb].hmask[i] >> j) & 1;
                    idot += (low - (hb ? 0 : 4)) * q[i];
                }
                float dl = d * (float)sc[2 * j + h];
                acc += (double)(dl * da[8 * sb + j]) * idot;
            }
        }
    }
    return acc;
}

typedef double (*dot_fn)(const uint8_t *row, const sl_q8act *a, int64_t t);

static void ref_rows(dot_fn dot, const uint8_t *w, size_t row_bytes, int64_t o0, int64_t o1,
                     const sl_q8act *a, float *y, int64_t ldy)
{
    for (int64_t o = o0; o < o1; o++)
        for (int64_t t = 0; t < a->n_tok; t++)
            y[t * ldy + o] = (float)dot(w + (size_t)o * row_bytes, a, t);
}

#define REF_ROWS(type)                                                                        \
    static void rows_##type(const uint8_t *w, size_t rb, int64_t o0, int64_t o1,               \
                            const sl_q8act *a, float *y, int64_t ldy)                          \
    {                                                                                         \
        ref_rows(dot_##type, w, rb, o0, o1, a, y, ldy);                                       \
    }
REF_ROWS(q4_0)
REF_ROWS(q8_0)
REF_ROWS(q4_K)
REF_ROWS(q6_K)
REF_ROWS(q4_1)
REF_ROWS(q5_0)
REF_ROWS(q5_1)
REF_ROWS(iq4_nl)
REF_ROWS(iq4_xs)
REF_ROWS(q5_K)
REF_ROWS(q2_K)
REF_ROWS(q3_K)

sl_mmq_fn sl_mmq_ref(sl_type wtype)
{
    switch (wtype) {
    case SL_TYPE_Q4_0: return rows_q4_0;
    case SL_TYPE_Q8_0: return rows_q8_0;
    case SL_TYPE_Q4_K: return rows_q4_K;
    case SL_TYPE_Q6_K: return rows_q6_K;
    case SL_TYPE_Q4_1: return rows_q4_1;
    case SL_TYPE_Q5_0: return rows_q5_0;
    case SL_TYPE_Q5_1: return rows_q5_1;
    case SL_TYPE_IQ4_NL: return rows_iq4_nl;
    case SL_TYPE_IQ4_XS: return rows_iq4_xs;
    case SL_TYPE_Q5_K: return rows_q5_K;
    case SL_TYPE_Q2_K: return rows_q2_K;
    case SL_TYPE_Q3_K: return rows_q3_K;
    default: return NULL;
    }
}
