/* The span kernel of kernels/attn.h on AVX-512: head_dim a multiple of 16,
 * up to 512. Each key row is scored against every head of the group while
 * it is in L1, and each value row is added into every head's output the
 * same way; every head's output accumulates in two chains (even and odd
 * keys) summed when the tile ends, in a fixed order. */
#include <math.h>

#include "kernels/attn.h"
#include "kernels/vmath_avx512.h"

void sl_attn_span_avx512(const sl_attn_f32 *a, int64_t n_keys, sl_attn_part *p);

static float dot16n(const float *q, const float *k, int hd)
{
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int d = 0;
    for (; d + 32 <= hd; d += 32) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + d), _mm512_loadu_ps(k + d), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(q + d + 16), _mm512_loadu_ps(k + d + 16), a1);
    }
    if (d < hd)
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + d), _mm512_loadu_ps(k + d), a0);
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

/* Scores of one tile for every head: sc[g * SL_ATTN_TILE + j]. */
static void tile_scores(const sl_attn_f32 *a, int64_t t0, int nt, float *sc)
{
    for (int j = 0; j < nt; j++) {
        const float *k = a->k + (t0 + j) * a->kv_stride;
        for (int g = 0; g < a->n_group; g++)
            sc[g * SL_ATTN_TILE + j] = dot16n(a->q + g * a->q_stride, k, a->head_dim) * a->scale;
    }
    if (a->softcap > 0.0f) {
        __m512 cap = _mm512_set1_ps(a->softcap), inv = _mm512_set1_ps(1.0f / a->softcap);
        for (int g = 0; g < a->n_group; g++)
            for (int j = 0; j < nt; j += 16) {
                __mmask16 mk = nt - j >= 16 ? 0xffff : (__mmask16)((1u << (nt - j)) - 1);
                float *s = sc + g * SL_ATTN_TILE + j;
                __m512 v = _mm512_maskz_loadu_ps(mk, s);
                _mm512_mask_storeu_ps(s, mk, _mm512_mul_ps(cap, sl_tanh512(_mm512_mul_ps(v, inv))));
            }
    }
}

/* e[j] = exp(sc[j] - mx) for the tile; returns their sum, added in a fixed
 * order (lane sums, then across lanes). */
static float tile_exp(float *sc, int nt, float mx)
{
    __m512 sum = _mm512_setzero_ps(), vmx = _mm512_set1_ps(mx);
    for (int j = 0; j < nt; j += 16) {
        __mmask16 mk = nt - j >= 16 ? 0xffff : (__mmask16)((1u << (nt - j)) - 1);
        __m512 e = sl_exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, sc + j), vmx));
        e = _mm512_maskz_mov_ps(mk, e);
        _mm512_mask_storeu_ps(sc + j, mk, e);
        sum = _mm512_add_ps(sum, e);
    }
    return _mm512_reduce_add_ps(sum);
}

void sl_attn_span_avx512(const sl_attn_f32 *a, int64_t n_keys, sl_attn_part *p)
{
    const int64_t s0 = 0, s1 = n_keys;
    int hd = a->head_dim, ng = a->n_group;
    for (int g = 0; g < ng; g++) {
        p->m[g] = -INFINITY;
        p->l[g] = 0.0f;
        for (int d = 0; d < hd; d++)
            p->o[g * hd + d] = 0.0f;
    }
    float sc[8 * SL_ATTN_TILE];
    for (int g0 = 0; g0 < ng; g0 += 8) { /* groups of up to 8 heads share the tiles */
        int gn = ng - g0 < 8 ? ng - g0 : 8;
        sl_attn_f32 sub = *a;
        sub.q = a->q + g0 * a->q_stride;
        sub.n_group = gn;
        for (int64_t t0 = s0; t0 < s1; t0 += SL_ATTN_TILE) {
            int nt = (int)(s1 - t0 < SL_ATTN_TILE ? s1 - t0 : SL_ATTN_TILE);
            tile_scores(&sub, t0, nt, sc);
            float corr[8];
            for (int g = 0; g < gn; g++) {
                float *s = sc + g * SL_ATTN_TILE, mx = p->m[g0 + g];
                for (int j = 0; j < nt; j++)
                    mx = s[j] > mx ? s[j] : mx;
                corr[g] = p->m[g0 + g] == -INFINITY ? 0.0f : expf(p->m[g0 + g] - mx);
                p->l[g0 + g] = p->l[g0 + g] * corr[g] + tile_exp(s, nt, mx);
                p->m[g0 + g] = mx;
            }
            for (int d = 0; d < hd; d += 16) {
                __m512 ev[8], od[8];
                for (int g = 0; g < gn; g++) {
                    ev[g] = _mm512_mul_ps(_mm512_loadu_ps(p->o + (g0 + g) * hd + d), _mm512_set1_ps(corr[g]));
                    od[g] = _mm512_setzero_ps();
                }
                int j = 0;
                for (; j + 2 <= nt; j += 2) {
                    __m512 v0 = _mm512_loadu_ps(a->v + (t0 + j) * a->kv_stride + d);
                    __m512 v1 = _mm512_loadu_ps(a->v + (t0 + j + 1) * a->kv_stride + d);
                    for (int g = 0; g < gn; g++) {
                        ev[g] = _mm512_fmadd_ps(_mm512_set1_ps(sc[g * SL_ATTN_TILE + j]), v0, ev[g]);
                        od[g] = _mm512_fmadd_ps(_mm512_set1_ps(sc[g * SL_ATTN_TILE + j + 1]), v1, od[g]);
                    }
                }
                if (j < nt) {
                    __m512 v0 = _mm512_loadu_ps(a->v + (t0 + j) * a->kv_stride + d);
                    for (int g = 0; g < gn; g++)
                        ev[g] = _mm512_fmadd_ps(_mm512_set1_ps(sc[g * SL_ATTN_TILE + j]), v0, ev[g]);
                }
                for (int g = 0; g < gn; g++)
                    _mm512_storeu_ps(p->o + (g0 + g) * hd + d, _mm512_add_ps(ev[g], od[g]));
            }
        }
    }
}
