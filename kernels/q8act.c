#include "kernels/q8act.h"

#include <math.h>

#include "kernels/cpu.h"

static size_t round64(size_t n) { return (n + 63) & ~(size_t)63; }

size_t sl_q8act_bytes(int64_t n_tok, int64_t n_in)
{
    size_t nb = (size_t)(n_in / SL_Q8A_BLOCK) * (size_t)n_tok;
    return 64 + round64((size_t)(n_tok * n_in)) + round64((size_t)(n_tok * n_in)) +
           3 * round64(nb * sizeof(float)) + round64(2 * nb * sizeof(int32_t));
}

void sl_q8act_init(sl_q8act *a, void *mem, int64_t n_tok, int64_t n_in)
{
    uintptr_t p = ((uintptr_t)mem + 63) & ~(uintptr_t)63;
    a->n_tok = n_tok;
    a->n_in = n_in;
    a->n_blocks = n_in / SL_Q8A_BLOCK;
    a->ld_in = n_in;
    a->carry = 0;
    size_t nb = (size_t)(a->n_blocks * n_tok);
    a->q = (int8_t *)p;
    p += round64((size_t)(n_tok * n_in));
    a->s4 = (int32_t *)p; /* n_in / 4 int32 = n_in bytes per token */
    p += round64((size_t)(n_tok * n_in));
    a->d = (float *)p;
    p += round64(nb * sizeof(float));
    a->ds = (float *)p;
    p += round64(nb * sizeof(float));
    a->sum = (int32_t *)p;
    p += round64(nb * sizeof(float));
    a->s16 = (int32_t *)p;
}

void sl_q8act_quantize_avx512(sl_q8act *a, int64_t t, int64_t b0, int64_t b1, const float *x);

void sl_q8act_quantize(sl_q8act *a, int64_t t, const float *x)
{
    sl_q8act_quantize_blocks(a, t, 0, a->n_blocks, x);
}

void sl_q8act_quantize_blocks(sl_q8act *a, int64_t t, int64_t b0, int64_t b1, const float *x)
{
#if defined(__x86_64__)
    if (sl_path_active() == SL_PATH_AVX512) {
        sl_q8act_quantize_avx512(a, t, b0, b1, x);
        return;
    }
#endif
    int8_t *q = a->q + t * a->n_in;
    int32_t *s4 = a->s4 + t * (a->n_in / 4);
    for (int64_t b = b0; b < b1; b++) {
        const float *xb = x + (b - b0) * SL_Q8A_BLOCK;
        float amax = 0;
        int finite = 1;
        for (int i = 0; i < SL_Q8A_BLOCK; i++) {
            amax = fmaxf(amax, fabsf(xb[i]));
            finite &= isfinite(xb[i]);
        }
        /* A NaN or infinity poisons the block's scale, so it reaches the
         * output as the float path would carry it, and the quants stay 0. */
        float d = finite ? amax / 127.0f : NAN;
        float id = finite && d > 0 ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int i = 0; i < SL_Q8A_BLOCK; i++) {
            float v = finite ? rintf(xb[i] * id) : 0.0f;
            /* |x * id| <= 127 up to one rounding; the clamp only guards it */
            v = v > 127 ? 127 : v < -127 ? -127 : v;
            q[b * SL_Q8A_BLOCK + i] = (int8_t)v;
            sum += (int)v;
        }
        for (int g = 0; g < SL_Q8A_BLOCK / 4; g++) {
            const int8_t *qg = q + b * SL_Q8A_BLOCK + 4 * g;
            s4[b * 8 + g] = qg[0] + qg[1] + qg[2] + qg[3];
        }
        a->d[t * a->n_blocks + b] = d;
        a->ds[t * a->n_blocks + b] = d * (float)sum;
        a->sum[t * a->n_blocks + b] = sum;
        int32_t *s16 = a->s16 + t * (a->n_in / 16) + 2 * b;
        s16[0] = s4[b * 8] + s4[b * 8 + 1] + s4[b * 8 + 2] + s4[b * 8 + 3];
        s16[1] = s4[b * 8 + 4] + s4[b * 8 + 5] + s4[b * 8 + 6] + s4[b * 8 + 7];
    }
}

sl_q8act sl_q8act_tokens(const sl_q8act *a, int64_t t0, int64_t t1)
{
    sl_q8act v = *a;
    v.n_tok = t1 - t0;
    v.q += t0 * a->ld_in;
    v.s4 += t0 * (a->ld_in / 4);
    v.s16 += t0 * (a->ld_in / 16);
    v.d += t0 * (a->ld_in / SL_Q8A_BLOCK);
    v.ds += t0 * (a->ld_in / SL_Q8A_BLOCK);
    v.sum += t0 * (a->ld_in / SL_Q8A_BLOCK);
    return v;
}

sl_q8act sl_q8act_cols(const sl_q8act *a, int64_t b0, int64_t b1)
{
    sl_q8act v = *a;
    v.n_in = (b1 - b0) * SL_Q8A_BLOCK;
    v.n_blocks = b1 - b0;
    v.q += b0 * SL_Q8A_BLOCK;
    v.s4 += b0 * (SL_Q8A_BLOCK / 4);
    v.s16 += b0 * (SL_Q8A_BLOCK / 16);
    v.d += b0;
    v.ds += b0;
    v.sum += b0;
    return v;
}
