#include "kernels/quant.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "kernels/quant_internal.h"

#define GROUP_MAX_EPS 1e-15f

/* ---- dequantisation, one block at a time ---- */

static void dequant_q4_0(const sl_block_q4_0 *b, float *y)
{
    float d = sl_f16_to_f32(b->d);
    for (int j = 0; j < SL_QK4_0 / 2; j++) {
        y[j] = (float)((b->qs[j] & 0xf) - 8) * d;
        y[j + SL_QK4_0 / 2] = (float)((b->qs[j] >> 4) - 8) * d;
    }
}

static void dequant_q4_1(const sl_block_q4_1 *b, float *y)
{
    float d = sl_f16_to_f32(b->d), m = sl_f16_to_f32(b->m);
    for (int j = 0; j < 16; j++) {
        y[j] = (float)(b->qs[j] & 0xf) * d + m;
        y[j + 16] = (float)(b->qs[j] >> 4) * d + m;
    }
}

/* Bits j and j + 16 of a Q5_0/Q5_1 block's qh, as the fifth bits of
 * elements j and j + 16. */
static uint32_t q5_high(const uint8_t qh[4])
{
    uint32_t h;
    memcpy(&h, qh, sizeof h);
    return h;
}

static void dequant_q5_0(const sl_block_q5_0 *b, float *y)
{
    float d = sl_f16_to_f32(b->d);
    uint32_t qh = q5_high(b->qh);
    for (int j = 0; j < 16; j++) {
        int q0 = (int)((b->qs[j] & 0xf) | (((qh >> j) & 1) << 4)) - 16;
        int q1 = (int)((b->qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - 16;
        y[j] = (float)q0 * d;
        y[j + 16] = (float)q1 * d;
    }
}

static void dequant_q5_1(const sl_block_q5_1 *b, float *y)
{
    float d = sl_f16_to_f32(b->d), m = sl_f16_to_f32(b->m);
    uint32_t qh = q5_high(b->qh);
    for (int j = 0; j < 16; j++) {
        int q0 = (int)((b->qs[j] & 0xf) | (((qh >> j) & 1) << 4));
        int q1 = (int)((b->qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4));
        y[j] = (float)q0 * d + m;
        y[j + 16] = (float)q1 * d + m;
    }
}

/* Q2_K: each 128 elements take 32 bytes of qs; the 16-element group g of
 * them (g = 0..7) holds bits 2 (g / 2) of bytes 16 (g % 2) .. +16. */
static void dequant_q2_K(const sl_block_q2_K *b, float *y)
{
    float d = sl_f16_to_f32(b->d), dmin = sl_f16_to_f32(b->dmin);
    for (int g = 0; g < 16; g++, y += 16) {
        const uint8_t *q = b->qs + 32 * (g / 8) + 16 * (g % 2);
        int shift = 2 * ((g % 8) / 2);
        float dl = d * (float)(b->scales[g] & 0xf), ml = dmin * (float)(b->scales[g] >> 4);
        for (int l = 0; l < 16; l++)
            y[l] = dl * (float)((q[l] >> shift) & 3) - ml;
    }
}

/* Q3_K: the 2 low bits as Q2_K's; hmask bit (g / 2) + 4 (g / 8) of byte
 * 16 (g % 2) + l, when clear, subtracts 4. */
static void dequant_q3_K(const sl_block_q3_K *b, float *y)
{
    float d = sl_f16_to_f32(b->d);
    int8_t sc[16];
    sl_q3k_scales(b->scales, sc);
    for (int g = 0; g < 16; g++, y += 16) {
        const uint8_t *q = b->qs + 32 * (g / 8) + 16 * (g % 2);
        const uint8_t *hm = b->hmask + 16 * (g % 2);
        int shift = 2 * ((g % 8) / 2), bit = g / 2;
        float dl = d * (float)sc[g];
        for (int l = 0; l < 16; l++) {
            int v = ((q[l] >> shift) & 3) - ((hm[l] >> bit) & 1 ? 0 : 4);
            y[l] = dl * (float)v;
        }
    }
}

static void dequant_iq4_nl(const sl_block_iq4_nl *b, float *y)
{
    float d = sl_f16_to_f32(b->d);
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)sl_iq4nl_values[b->qs[j] & 0xf];
        y[j + 16] = d * (float)sl_iq4nl_values[b->qs[j] >> 4];
    }
}

static void dequant_iq4_xs(const sl_block_iq4_xs *b, float *y)
{
    float d = sl_f16_to_f32(b->d);
    for (int j = 0; j < 8; j++, y += 32) {
        float dl = d * (float)sl_iq4xs_scale(b->scales_l, b->scales_h, j);
        const uint8_t *qs = b->qs + 16 * j;
        for (int l = 0; l < 16; l++) {
            y[l] = dl * (float)sl_iq4nl_values[qs[l] & 0xf];
            y[l + 16] = dl * (float)sl_iq4nl_values[qs[l] >> 4];
        }
    }
}

static void dequant_q8_0(const sl_block_q8_0 *b, float *y)
{
    float d = sl_f16_to_f32(b->d);
    for (int j = 0; j < SL_QK8_0; j++)
        y[j] = (float)b->qs[j] * d;
}

static void dequant_q4_K(const sl_block_q4_K *b, float *y)
{
    float d = sl_f16_to_f32(b->d);
    float dmin = sl_f16_to_f32(b->dmin);
    const uint8_t *q = b->qs;
    for (int j = 0; j < 8; j += 2, q += 32, y += 64) {
        uint8_t sc, m;
        sl_k_scale_min(j, b->scales, &sc, &m);
        float d1 = d * sc, m1 = dmin * m;
        sl_k_scale_min(j + 1, b->scales, &sc, &m);
        float d2 = d * sc, m2 = dmin * m;
        for (int l = 0; l < 32; l++) {
            y[l] = d1 * (q[l] & 0xf) - m1;
            y[l + 32] = d2 * (q[l] >> 4) - m2;
        }
    }
}

static void dequant_q5_K(const sl_block_q5_K *b, float *y)
{
    float d = sl_f16_to_f32(b->d);
    float dmin = sl_f16_to_f32(b->dmin);
    const uint8_t *ql = b->qs;
    for (int j = 0; j < 8; j += 2, ql += 32, y += 64) {
        uint8_t sc, m;
        sl_k_scale_min(j, b->scales, &sc, &m);
        float d1 = d * sc, m1 = dmin * m;
        sl_k_scale_min(j + 1, b->scales, &sc, &m);
        float d2 = d * sc, m2 = dmin * m;
        /* Sub-block j takes its fifth bit from bit j of qh. */
        for (int l = 0; l < 32; l++) {
            int q1 = (ql[l] & 0xf) | (((b->qh[l] >> j) & 1) << 4);
            int q2 = (ql[l] >> 4) | (((b->qh[l] >> (j + 1)) & 1) << 4);
            y[l] = d1 * q1 - m1;
            y[l + 32] = d2 * q2 - m2;
        }
    }
}

static void dequant_q6_K(const sl_block_q6_K *b, float *y)
{
    float d = sl_f16_to_f32(b->d);
    const uint8_t *ql = b->ql;
    const uint8_t *qh = b->qh;
    const int8_t *sc = b->scales;
    for (int n = 0; n < SL_QK_K; n += 128, ql += 64, qh += 32, sc += 8, y += 128) {
        for (int l = 0; l < 32; l++) {
            int is = l / 16;
            int q1 = ((ql[l] & 0xf) | (((qh[l] >> 0) & 3) << 4)) - 32;
            int q2 = ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32;
            int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l] = d * sc[is] * q1;
            y[l + 32] = d * sc[is + 2] * q2;
            y[l + 64] = d * sc[is + 4] * q3;
            y[l + 96] = d * sc[is + 6] * q4;
        }
    }
}

void sl_dequantize_block(sl_type type, const void *block, float *y)
{
    switch (type) {
    case SL_TYPE_F32: memcpy(y, block, sizeof(float)); break;
    case SL_TYPE_F16: *y = sl_f16_to_f32(*(const sl_f16 *)block); break;
    case SL_TYPE_BF16: *y = sl_bf16_to_f32(*(const sl_bf16 *)block); break;
    case SL_TYPE_Q4_0: dequant_q4_0(block, y); break;
    case SL_TYPE_Q4_1: dequant_q4_1(block, y); break;
    case SL_TYPE_Q5_0: dequant_q5_0(block, y); break;
    case SL_TYPE_Q5_1: dequant_q5_1(block, y); break;
    case SL_TYPE_Q8_0: dequant_q8_0(block, y); break;
    case SL_TYPE_Q2_K: dequant_q2_K(block, y); break;
    case SL_TYPE_Q3_K: dequant_q3_K(block, y); break;
    case SL_TYPE_IQ4_NL: dequant_iq4_nl(block, y); break;
    case SL_TYPE_IQ4_XS: dequant_iq4_xs(block, y); break;
    case SL_TYPE_Q4_K: dequant_q4_K(block, y); break;
    case SL_TYPE_Q5_K: dequant_q5_K(block, y); break;
    case SL_TYPE_Q6_K: dequant_q6_K(block, y); break;
    default: break;
    }
}

void sl_dequantize_row(sl_type type, const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    if (type == SL_TYPE_F32) {
        memcpy(dst, src, (size_t)n * sizeof(float));
        return;
    }
    int64_t be = sl_type_block_elems(type);
    size_t bb = sl_type_block_bytes(type);
    for (int64_t i = 0; i < n; i += be, p += bb)
        sl_dequantize_block(type, p, dst + i);
}

void sl_dequantize_range(sl_type type, const void *row, float *dst, int64_t i0, int64_t n)
{
    int64_t be = sl_type_block_elems(type);
    size_t bb = sl_type_block_bytes(type);
    if (be <= 0 || n <= 0)
        return;
    const uint8_t *base = row;
    float buf[SL_QK_K];
    int64_t i = i0, end = i0 + n;
    while (i < end) {
        int64_t blk = i / be, off = i % be;
        int64_t take = be - off < end - i ? be - off : end - i;
        const uint8_t *b = base + (size_t)blk * bb;
        if (off == 0 && take == be) {
            sl_dequantize_block(type, b, dst);
        } else {
            sl_dequantize_block(type, b, buf);
            memcpy(dst, buf + off, (size_t)take * sizeof(float));
        }
        dst += take;
        i += take;
    }
}

/* ---- quantisation (llama.cpp's reference, non-imatrix quantisers) ---- */

static int nearest_int(float v)
{
    return (int)lrintf(v); /* round half to even, as llama.cpp's magic-number trick */
}

static int clamp_int(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

static void quant_q4_0(const float *x, sl_block_q4_0 *b)
{
    float amax = 0, max = 0;
    for (int j = 0; j < SL_QK4_0; j++) {
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    /* The signed extreme maps to -8 so the full range [-8, 7] is used. */
    float d = max / -8;
    float id = d != 0 ? 1.0f / d : 0.0f;
    b->d = sl_f32_to_f16(d);
    for (int j = 0; j < SL_QK4_0 / 2; j++) {
        int lo = (int8_t)(x[j] * id + 8.5f);
        int hi = (int8_t)(x[j + SL_QK4_0 / 2] * id + 8.5f);
        lo = lo < 15 ? lo : 15;
        hi = hi < 15 ? hi : 15;
        b->qs[j] = (uint8_t)(lo | (hi << 4));
    }
}

static void quant_q8_0(const float *x, sl_block_q8_0 *b)
{
    float amax = 0;
    for (int j = 0; j < SL_QK8_0; j++)
        amax = fmaxf(amax, fabsf(x[j]));
    float d = amax / 127;
    float id = d != 0 ? 1.0f / d : 0.0f;
    b->d = sl_f32_to_f16(d);
    for (int j = 0; j < SL_QK8_0; j++)
        b->qs[j] = (int8_t)roundf(x[j] * id);
}

static void quant_q4_1(const float *x, sl_block_q4_1 *b)
{
    float min = x[0], max = x[0];
    for (int j = 1; j < 32; j++) {
        min = fminf(min, x[j]);
        max = fmaxf(max, x[j]);
    }
    float d = (max - min) / 15;
    float id = d != 0 ? 1.0f / d : 0.0f;
    b->d = sl_f32_to_f16(d);
    b->m = sl_f32_to_f16(min);
    for (int j = 0; j < 16; j++) {
        int lo = (int8_t)((x[j] - min) * id + 0.5f);
        int hi = (int8_t)((x[j + 16] - min) * id + 0.5f);
        b->qs[j] = (uint8_t)((lo < 15 ? lo : 15) | ((hi < 15 ? hi : 15) << 4));
    }
}

/* Q5_0/Q5_1: low nibbles as Q4_0's, the fifth bits of elements j and
 * j + 16 into bits j and j + 16 of qh. */
static void pack_q5(const int *q, uint8_t qs[16], uint8_t qh[4])
{
    uint32_t h = 0;
    for (int j = 0; j < 16; j++) {
        qs[j] = (uint8_t)((q[j] & 0xf) | ((q[j + 16] & 0xf) << 4));
        h |= (uint32_t)((q[j] >> 4) & 1) << j;
        h |= (uint32_t)((q[j + 16] >> 4) & 1) << (j + 16);
    }
    memcpy(qh, &h, sizeof h);
}

static void quant_q5_0(const float *x, sl_block_q5_0 *b)
{
    float amax = 0, max = 0;
    for (int j = 0; j < 32; j++) {
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    /* As Q4_0: the signed extreme maps to -16. */
    float d = max / -16;
    float id = d != 0 ? 1.0f / d : 0.0f;
    b->d = sl_f32_to_f16(d);
    int q[32];
    for (int j = 0; j < 32; j++) {
        int v = (int8_t)(x[j] * id + 16.5f);
        q[j] = v < 31 ? v : 31;
    }
    pack_q5(q, b->qs, b->qh);
}

static void quant_q5_1(const float *x, sl_block_q5_1 *b)
{
    float min = x[0], max = x[0];
    for (int j = 1; j < 32; j++) {
        min = fminf(min, x[j]);
        max = fmaxf(max, x[j]);
    }
    float d = (max - min) / 31;
    float id = d != 0 ? 1.0f / d : 0.0f;
    b->d = sl_f32_to_f16(d);
    b->m = sl_f32_to_f16(min);
    int q[32];
    for (int j = 0; j < 32; j++)
        q[j] = (uint8_t)((x[j] - min) * id + 0.5f);
    pack_q5(q, b->qs, b->qh);
}

/* Fits x ~ scale * L - min_out with L in [0, nmax], minimising the weighted
 * squared error over a small grid of candidate scales (llama.cpp's
 * make_qkx2_quants). Returns the scale; *min_out is the (non-negative) min. */
static float fit_scale_min(int n, int nmax, const float *x, const float *w, uint8_t *L,
                           float *min_out, float rmin, float rdelta, int nstep, bool use_mad)
{
    uint8_t laux[32];
    float min = x[0], max = x[0];
    float sum_w = w[0], sum_x = w[0] * x[0];
    for (int i = 1; i < n; i++) {
        min = fminf(min, x[i]);
        max = fmaxf(max, x[i]);
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0)
        min = 0;
    if (max == min) {
        memset(L, 0, (size_t)n);
        *min_out = -min;
        return 0;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_err = 0;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)clamp_int(nearest_int(iscale * (x[i] - min)), 0, nmax);
        float diff = scale * L[i] + min - x[i];
        best_err += w[i] * (use_mad ? fabsf(diff) : diff * diff);
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = clamp_int(nearest_int(iscale * (x[i] - min)), 0, nmax);
            laux[i] = (uint8_t)l;
            sum_l += w[i] * l;
            sum_l2 += w[i] * l * l;
            sum_xl += w[i] * l * x[i];
        }
        float det = sum_w * sum_l2 - sum_l * sum_l;
        if (det <= 0)
            continue;
        float this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
        float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
        if (this_min > 0) {
            this_min = 0;
            this_scale = sum_xl / sum_l2;
        }
        float err = 0;
        for (int i = 0; i < n; i++) {
            float diff = this_scale * laux[i] + this_min - x[i];
            err += w[i] * (use_mad ? fabsf(diff) : diff * diff);
        }
        if (err < best_err) {
            memcpy(L, laux, (size_t)n);
            best_err = err;
            scale = this_scale;
            min = this_min;
        }
    }
    *min_out = -min;
    return scale;
}

/* Packs 6-bit scale ls and min lm of sub-block j the way sl_k_scale_min reads them. */
static void pack_scale_min(uint8_t *scales, int j, int ls, int lm)
{
    if (j < 4) {
        scales[j] = (uint8_t)ls;
        scales[j + 4] = (uint8_t)lm;
    } else {
        scales[j + 4] = (uint8_t)((ls & 0xf) | ((lm & 0xf) << 4));
        scales[j - 4] |= (uint8_t)((ls >> 4) << 6);
        scales[j] |= (uint8_t)((lm >> 4) << 6);
    }
}

/* Shared by Q4_K and Q5_K: per-sub-block fits, 6-bit scales and mins, then
 * the levels L recomputed against the rounded scales. */
static void quant_k_scales(const float *x, int nmax, float rmin, int nstep, uint8_t *L,
                           sl_f16 *d_out, sl_f16 *dmin_out, uint8_t *scales)
{
    float sub_scale[8], sub_min[8], weights[32];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; j++) {
        const float *xs = x + 32 * j;
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++)
            sum_x2 += xs[l] * xs[l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++)
            weights[l] = av_x + fabsf(xs[l]);
        sub_scale[j] = fit_scale_min(32, nmax, xs, weights, L + 32 * j, &sub_min[j], rmin,
                                     0.1f, nstep, false);
        max_scale = fmaxf(max_scale, sub_scale[j]);
        max_min = fmaxf(max_min, sub_min[j]);
    }
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    memset(scales, 0, SL_K_SCALE_SIZE);
    for (int j = 0; j < 8; j++) {
        int ls = nearest_int(inv_scale * sub_scale[j]);
        int lm = nearest_int(inv_min * sub_min[j]);
        pack_scale_min(scales, j, ls < 63 ? ls : 63, lm < 63 ? lm : 63);
    }
    *d_out = sl_f32_to_f16(max_scale / 63.f);
    *dmin_out = sl_f32_to_f16(max_min / 63.f);
    float d = sl_f16_to_f32(*d_out), dmin = sl_f16_to_f32(*dmin_out);
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        sl_k_scale_min(j, scales, &sc, &m);
        float dj = d * sc;
        if (dj == 0)
            continue;
        float dm = dmin * m;
        for (int l = 0; l < 32; l++) {
            int q = nearest_int((x[32 * j + l] + dm) / dj);
            L[32 * j + l] = (uint8_t)clamp_int(q, 0, nmax);
        }
    }
}

static void quant_q4_K(const float *x, sl_block_q4_K *b)
{
    uint8_t L[SL_QK_K];
    quant_k_scales(x, 15, -1.f, 20, L, &b->d, &b->dmin, b->scales);
    uint8_t *q = b->qs;
    for (int j = 0; j < SL_QK_K; j += 64, q += 32)
        for (int l = 0; l < 32; l++)
            q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
}

static void quant_q5_K(const float *x, sl_block_q5_K *b)
{
    uint8_t L[SL_QK_K];
    quant_k_scales(x, 31, -0.5f, 15, L, &b->d, &b->dmin, b->scales);
    memset(b->qh, 0, sizeof b->qh);
    uint8_t *ql = b->qs;
    for (int n = 0, j = 0; n < SL_QK_K; n += 64, j += 2, ql += 32) {
        for (int l = 0; l < 32; l++) {
            int l1 = L[n + l], l2 = L[n + l + 32];
            b->qh[l] |= (uint8_t)(((l1 >> 4) << j) | ((l2 >> 4) << (j + 1)));
            ql[l] = (uint8_t)((l1 & 0xf) | ((l2 & 0xf) << 4));
        }
    }
}

/* Symmetric fit x ~ scale * (L - nmax), L in [0, 2 nmax), weights x^2, with a
 * search over nearby scales (llama.cpp's make_qx_quants, rmse_type 1). */
static float fit_scale_sym(int n, int nmax, const float *x, uint8_t *L)
{
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0;
    }
    float iscale = -nmax / max;
    float sum_lx = 0, sum_l2 = 0;
    for (int i = 0; i < n; i++) {
        int l = clamp_int(nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (uint8_t)(l + nmax);
        float w = x[i] * x[i];
        sum_lx += w * x[i] * l;
        sum_l2 += w * l * l;
    }
    float scale = sum_l2 != 0 ? sum_lx / sum_l2 : 0;
    float best = scale * sum_lx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0)
            continue;
        iscale = -(nmax + 0.1f * is) / max;
        sum_lx = sum_l2 = 0;
        for (int i = 0; i < n; i++) {
            int l = clamp_int(nearest_int(iscale * x[i]), -nmax, nmax - 1);
            float w = x[i] * x[i];
            sum_lx += w * x[i] * l;
            sum_l2 += w * l * l;
        }
        if (sum_l2 > 0 && sum_lx * sum_lx > best * sum_l2) {
            for (int i = 0; i < n; i++) {
                int l = clamp_int(nearest_int(iscale * x[i]), -nmax, nmax - 1);
                L[i] = (uint8_t)(l + nmax);
            }
            scale = sum_lx / sum_l2;
            best = scale * sum_lx;
        }
    }
    return scale;
}

static void quant_q6_K(const float *x, sl_block_q6_K *b)
{
    uint8_t L[SL_QK_K];
    float group_scale[16];
    float max_scale = 0, max_abs_scale = 0;
    for (int g = 0; g < 16; g++) {
        group_scale[g] = fit_scale_sym(16, 32, x + 16 * g, L + 16 * g);
        if (fabsf(group_scale[g]) > max_abs_scale) {
            max_abs_scale = fabsf(group_scale[g]);
            max_scale = group_scale[g];
        }
    }
    if (max_abs_scale < GROUP_MAX_EPS) {
        memset(b, 0, sizeof *b);
        return;
    }
    /* The largest scale maps to -128 so int8 scales keep full precision. */
    float iscale = -128.f / max_scale;
    b->d = sl_f32_to_f16(1 / iscale);
    for (int g = 0; g < 16; g++) {
        int s = nearest_int(iscale * group_scale[g]);
        b->scales[g] = (int8_t)(s < 127 ? s : 127);
    }
    float d = sl_f16_to_f32(b->d);
    for (int g = 0; g < 16; g++) {
        float dg = d * b->scales[g];
        if (dg == 0)
            continue;
        for (int l = 0; l < 16; l++) {
            int q = clamp_int(nearest_int(x[16 * g + l] / dg), -32, 31);
            L[16 * g + l] = (uint8_t)(q + 32);
        }
    }
    uint8_t *ql = b->ql, *qh = b->qh;
    for (int j = 0; j < SL_QK_K; j += 128, ql += 64, qh += 32) {
        for (int l = 0; l < 32; l++) {
            int q1 = L[j + l], q2 = L[j + l + 32], q3 = L[j + l + 64], q4 = L[j + l + 96];
            ql[l] = (uint8_t)((q1 & 0xf) | ((q3 & 0xf) << 4));
            ql[l + 32] = (uint8_t)((q2 & 0xf) | ((q4 & 0xf) << 4));
            qh[l] = (uint8_t)((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
        }
    }
}

/* Packs four 2-bit levels per byte: each 128 elements fill 32 bytes, level
 * l + 32 k into bits 2k of byte l (Q2_K and Q3_K). */
static void pack_2bit(const uint8_t *L, uint8_t *qs)
{
    for (int j = 0; j < SL_QK_K; j += 128, qs += 32)
        for (int l = 0; l < 32; l++)
            qs[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) |
                              (L[j + l + 96] << 6));
}

static void quant_q2_K(const float *x, sl_block_q2_K *b)
{
    uint8_t L[SL_QK_K];
    float weights[16], mins[16], scales[16], max_scale = 0, max_min = 0;
    for (int j = 0; j < 16; j++) {
        for (int l = 0; l < 16; l++)
            weights[l] = fabsf(x[16 * j + l]);
        scales[j] = fit_scale_min(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], -0.5f, 0.1f, 15,
                                  true);
        max_scale = fmaxf(max_scale, scales[j]);
        max_min = fmaxf(max_min, mins[j]);
    }
    memset(b->scales, 0, sizeof b->scales);
    b->d = b->dmin = 0;
    if (max_scale > 0) {
        float iscale = 15.f / max_scale;
        for (int j = 0; j < 16; j++)
            b->scales[j] = (uint8_t)nearest_int(iscale * scales[j]);
        b->d = sl_f32_to_f16(max_scale / 15.f);
    }
    if (max_min > 0) {
        float iscale = 15.f / max_min;
        for (int j = 0; j < 16; j++)
            b->scales[j] |= (uint8_t)(nearest_int(iscale * mins[j]) << 4);
        b->dmin = sl_f32_to_f16(max_min / 15.f);
    }
    for (int j = 0; j < 16; j++) {
        float d = sl_f16_to_f32(b->d) * (b->scales[j] & 0xf);
        if (d == 0)
            continue;
        float dm = sl_f16_to_f32(b->dmin) * (b->scales[j] >> 4);
        for (int l = 0; l < 16; l++)
            L[16 * j + l] = (uint8_t)clamp_int(nearest_int((x[16 * j + l] + dm) / d), 0, 3);
    }
    pack_2bit(L, b->qs);
}

/* Symmetric levels in [-nmax, nmax) with x^2 weights, refined one level at
 * a time while the weighted fit improves (llama.cpp's make_q3_quants with
 * do_rmse). L gets level + nmax; returns the scale. */
static float fit_q3(int n, int nmax, const float *x, int8_t *L)
{
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0;
    }
    float iscale = -nmax / max, sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = clamp_int(nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)l;
        float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    for (int itry = 0; itry < 5; itry++) {
        int changed = 0;
        for (int i = 0; i < n; i++) {
            float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * L[i];
            if (slx <= 0)
                continue;
            float sl2 = suml2 - w * L[i] * L[i];
            int nl = clamp_int(nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1);
            if (nl == L[i])
                continue;
            slx += w * x[i] * nl;
            sl2 += w * nl * nl;
            if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                L[i] = (int8_t)nl;
                sumlx = slx;
                suml2 = sl2;
                changed++;
            }
        }
        if (!changed)
            break;
    }
    for (int i = 0; i < n; i++)
        L[i] = (int8_t)(L[i] + nmax);
    return sumlx / suml2;
}

static void quant_q3_K(const float *x, sl_block_q3_K *b)
{
    int8_t L[SL_QK_K];
    float scales[16], max_scale = 0, amax = 0;
    for (int j = 0; j < 16; j++) {
        scales[j] = fit_q3(16, 4, x + 16 * j, L + 16 * j);
        if (fabsf(scales[j]) > amax) {
            amax = fabsf(scales[j]);
            max_scale = scales[j];
        }
    }
    memset(b->scales, 0, sizeof b->scales);
    b->d = 0;
    if (max_scale != 0) {
        float iscale = -32.f / max_scale;
        for (int j = 0; j < 16; j++) {
            int l = clamp_int(nearest_int(iscale * scales[j]), -32, 31) + 32;
            if (j < 8)
                b->scales[j] = (uint8_t)(l & 0xf);
            else
                b->scales[j - 8] |= (uint8_t)((l & 0xf) << 4);
            b->scales[j % 4 + 8] |= (uint8_t)((l >> 4) << (2 * (j / 4)));
        }
        b->d = sl_f32_to_f16(1 / iscale);
    }
    int8_t sc[16];
    sl_q3k_scales(b->scales, sc);
    for (int j = 0; j < 16; j++) {
        float d = sl_f16_to_f32(b->d) * sc[j];
        if (d == 0)
            continue;
        for (int l = 0; l < 16; l++)
            L[16 * j + l] = (int8_t)(clamp_int(nearest_int(x[16 * j + l] / d), -4, 3) + 4);
    }
    /* The third bit of element i goes to bit i / 32 of hmask[i % 32]. */
    uint8_t low[SL_QK_K];
    memset(b->hmask, 0, sizeof b->hmask);
    for (int i = 0; i < SL_QK_K; i++) {
        if (L[i] > 3)
            b->hmask[i % 32] |= (uint8_t)(1u << (i / 32));
        low[i] = (uint8_t)(L[i] & 3);
    }
    pack_2bit(low, b->qs);
}

/* Index of the grid value nearest v (the upper one on a tie). */
static int iq4_index(float v)
{
    const int8_t *g = sl_iq4nl_values;
    if (v <= g[0])
        return 0;
    if (v >= g[15])
        return 15;
    int lo = 0, hi = 15;
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (v < g[mid])
            hi = mid;
        else
            lo = mid;
    }
    return v - g[hi - 1] < g[hi] - v ? hi - 1 : hi;
}

/* Best scale of 32 elements on the IQ4 grid, weights x^2, trying 15 grid
 * stretches around the one that maps the extreme to the grid's end
 * (llama.cpp's quantize_row_iq4_nl_impl without an importance matrix). */
static float iq4_block_scale(const float *x)
{
    float amax = 0, max = 0;
    for (int j = 0; j < 32; j++) {
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    if (amax < GROUP_MAX_EPS)
        return 0;
    const int8_t *g = sl_iq4nl_values;
    float d = -max / g[0], id = 1 / d, sumqx = 0, sumq2 = 0;
    for (int j = 0; j < 32; j++) {
        float q = g[iq4_index(id * x[j])], w = x[j] * x[j];
        sumqx += w * q * x[j];
        sumq2 += w * q * q;
    }
    d = sumqx / sumq2;
    float best = d * sumqx;
    for (int itry = -7; itry <= 7; itry++) {
        id = (itry + g[0]) / max;
        sumqx = sumq2 = 0;
        for (int j = 0; j < 32; j++) {
            float q = g[iq4_index(id * x[j])], w = x[j] * x[j];
            sumqx += w * q * x[j];
            sumq2 += w * q * q;
        }
        if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    return d;
}

static void iq4_pack(const float *x, float d, uint8_t qs[16])
{
    float id = d != 0 ? 1 / d : 0.f;
    for (int j = 0; j < 16; j++)
        qs[j] = (uint8_t)(iq4_index(id * x[j]) | (iq4_index(id * x[j + 16]) << 4));
}

static void quant_iq4_nl(const float *x, sl_block_iq4_nl *b)
{
    float d = iq4_block_scale(x);
    b->d = sl_f32_to_f16(d);
    iq4_pack(x, d, b->qs);
}

static void quant_iq4_xs(const float *x, sl_block_iq4_xs *b)
{
    float scales[8], max_scale = 0, amax_scale = 0;
    for (int j = 0; j < 8; j++) {
        scales[j] = iq4_block_scale(x + 32 * j);
        if (fabsf(scales[j]) > amax_scale) {
            amax_scale = fabsf(scales[j]);
            max_scale = scales[j];
        }
    }
    float d = -max_scale / 32, id = d != 0 ? 1 / d : 0.f;
    b->d = sl_f32_to_f16(d);
    b->scales_h = 0;
    memset(b->scales_l, 0, sizeof b->scales_l);
    for (int j = 0; j < 8; j++) {
        int l = clamp_int(nearest_int(id * scales[j]), -32, 31);
        iq4_pack(x + 32 * j, d * l, b->qs + 16 * j);
        l += 32;
        b->scales_l[j / 2] |= (uint8_t)((l & 0xf) << (4 * (j % 2)));
        b->scales_h |= (uint16_t)((l >> 4) << (2 * j));
    }
}

void sl_quantize_row(sl_type type, const float *src, void *dst, int64_t n)
{
    int64_t be = sl_type_block_elems(type);
    size_t bb = sl_type_block_bytes(type);
    uint8_t *p = dst;
    for (int64_t i = 0; i < n; i += be, p += bb) {
        const float *x = src + i;
        switch (type) {
        case SL_TYPE_F32: memcpy(p, x, sizeof(float)); break;
        case SL_TYPE_F16: *(sl_f16 *)p = sl_f32_to_f16(*x); break;
        case SL_TYPE_BF16: *(sl_bf16 *)p = sl_f32_to_bf16(*x); break;
        case SL_TYPE_Q4_0: quant_q4_0(x, (sl_block_q4_0 *)p); break;
        case SL_TYPE_Q8_0: quant_q8_0(x, (sl_block_q8_0 *)p); break;
        case SL_TYPE_Q4_1: quant_q4_1(x, (sl_block_q4_1 *)p); break;
        case SL_TYPE_Q5_0: quant_q5_0(x, (sl_block_q5_0 *)p); break;
        case SL_TYPE_Q5_1: quant_q5_1(x, (sl_block_q5_1 *)p); break;
        case SL_TYPE_Q2_K: quant_q2_K(x, (sl_block_q2_K *)p); break;
        case SL_TYPE_Q3_K: quant_q3_K(x, (sl_block_q3_K *)p); break;
        case SL_TYPE_IQ4_NL: quant_iq4_nl(x, (sl_block_iq4_nl *)p); break;
        case SL_TYPE_IQ4_XS: quant_iq4_xs(x, (sl_block_iq4_xs *)p); break;
        case SL_TYPE_Q4_K: quant_q4_K(x, (sl_block_q4_K *)p); break;
        case SL_TYPE_Q5_K: quant_q5_K(x, (sl_block_q5_K *)p); break;
        case SL_TYPE_Q6_K: quant_q6_K(x, (sl_block_q6_K *)p); break;
        default: return;
        }
    }
}
