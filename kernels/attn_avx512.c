/* The span kernel of kernels/attn.h on AVX-512: head_dim a multiple of 16,
 * up to 512. Each key row is scored against every head of the group while
 * it is in L1, and each value row is added into every head's output the
 * same way; every head's output accumulates in two chains (even and odd
 * keys) summed when the tile ends, in a fixed order. */
#include <math.h>
#include <string.h>

#include "kernels/attn.h"
#include "kernels/vmath_avx512.h"

void sl_attn_span_avx512(const sl_attn_f32 *a, int64_t n_keys, sl_attn_part *p);
int sl_attn_multi_tokens_avx512(int n_group);
void sl_attn_span_multi_avx512(const sl_attn_f32 *a, const float *const *q, const int64_t *n_keys,
                               int n_tok, sl_attn_part *p);

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
 * order (lane sums, then across lanes). Always inlined: called out of line
 * (as gcc chose once it had five callers) the sums came out 1 ulp apart in
 * places, so the bits would depend on the compiler's inlining. */
static inline __attribute__((always_inline)) float tile_exp(float *sc, int nt, float mx)
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

/* The scalar loop's running max over a tile, mx = s[j] > mx ? s[j] : mx
 * from m, in vectors: the first of m, s[0], s[1], ... that has the largest
 * value. Equal floats have equal bits but for zeros, so a nonzero largest
 * value is the loop's; a zero one (-0 and +0 compare equal, and the loop
 * keeps whichever came first) runs the loop itself. vmaxps returns its
 * second operand when the first is a NaN, as the loop skips one. */
static inline __attribute__((always_inline)) float tile_max(const float *s, int nt, float m)
{
    __m512 acc = _mm512_set1_ps(-INFINITY);
    for (int j = 0; j < nt; j += 16) {
        __mmask16 mk = nt - j >= 16 ? 0xffff : (__mmask16)((1u << (nt - j)) - 1);
        acc = _mm512_mask_max_ps(acc, mk, _mm512_maskz_loadu_ps(mk, s + j), acc);
    }
    float v = _mm512_reduce_max_ps(acc), mx = v > m ? v : m;
    if (mx == 0.0f) {
        mx = m;
        for (int j = 0; j < nt; j++)
            mx = s[j] > mx ? s[j] : mx;
    }
    return mx;
}

/* tile_max for test_attn, which sets it against the loop. */
float sl_attn_tile_max_avx512(const float *s, int nt, float m);
float sl_attn_tile_max_avx512(const float *s, int nt, float m) { return tile_max(s, nt, m); }

/* Any group size: groups of up to 8 heads share the tiles. */
static void span_any(const sl_attn_f32 *a, int64_t n_keys, sl_attn_part *p)
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
                float *s = sc + g * SL_ATTN_TILE, mx = tile_max(s, nt, p->m[g0 + g]);
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

/* ---- group sizes 1, 2, 4 and 8: the same arithmetic, in registers ----
 * span_any keeps a head's accumulators in arrays indexed by a run-time
 * group size, so gcc keeps them on the stack: every multiply-add of the
 * weighted sum of values loaded and stored its accumulator and broadcast
 * its weight in a separate instruction. With the group size a constant the
 * accumulators stay in registers, a weight is broadcast inside the FMA from
 * memory, a key row is loaded once for all heads, and the heads' dot
 * products are reduced four at a time: each step of _mm512_reduce_add_ps
 * (gcc's order: halves, then quarters, then pairs) on four vectors at once.
 * Up to four heads, two keys share a score step and two runs of 16 dims a
 * value step (score_keys, values_dims), which halves the loads per FMA.
 * Every lane adds and multiplies what it did in span_any, in the same order,
 * so the result has the same bits (test_attn: groups of 1, 2, 4 and 8
 * against span_any's group of 11). */

#define AT_INLINE static inline __attribute__((always_inline))
#define AT_UNROLL _Pragma("GCC unroll 8")
/* arrays sized for the largest group (a size GN would make them VLAs, kept
 * in memory) */

/* acc + v * (*w broadcast): vfmadd231ps with an embedded broadcast (gcc
 * makes a separate vbroadcastss, which takes a vector pipe). */
AT_INLINE __m512 fma_bcast(__m512 acc, __m512 v, const float *w)
{
    __asm__("vfmadd231ps %[w]%{1to16%}, %[v], %[acc]" : [acc] "+v"(acc) : [v] "v"(v), [w] "m"(*w));
    return acc;
}

/* Software prefetch into L1 of what the next steps read, ahead of the
 * hardware prefetcher: key rows PF_KEYS ahead while keys are scored (a
 * decode step reads its keys and values from memory: the layers' weights
 * went through the caches since), the first 32 dims of each value row as
 * its key is scored, and the next strip of dims of each value row while a
 * strip is added (the value step reads a tile's rows in strips of 32 dims,
 * 1 KB apart, which the hardware prefetchers do not run ahead of). Without
 * them the kernel's reads and arithmetic took turns: one thread read the
 * keys and values of a 513-key query (Gemma 3 1B's shape, f32) at 14-20
 * GB/s where a plain read streams 35-46. Prefetches change no arithmetic. */
#define PF_KEYS 8

AT_INLINE void pf_lines(const float *p, int lines)
{
    for (int l = 0; l < lines; l++)
        _mm_prefetch((const char *)p + 64 * l, _MM_HINT_T0);
}

/* _mm512_reduce_add_ps of s0..s3 in lanes 0, 4, 8 and 12. */
AT_INLINE __m512 reduce4(__m512 s0, __m512 s1, __m512 s2, __m512 s3)
{
    /* halves: per vector, 128-bit chunks c0 + c2 and c1 + c3 */
    __m512 t01 = _mm512_add_ps(_mm512_shuffle_f32x4(s0, s1, 0x44), _mm512_shuffle_f32x4(s0, s1, 0xee));
    __m512 t23 = _mm512_add_ps(_mm512_shuffle_f32x4(s2, s3, 0x44), _mm512_shuffle_f32x4(s2, s3, 0xee));
    /* quarters: the two chunks of each vector's half-sum added */
    __m512 t6 = _mm512_add_ps(_mm512_shuffle_f32x4(t01, t23, 0x88), _mm512_shuffle_f32x4(t01, t23, 0xdd));
    /* then lanes 0 + 2 and 1 + 3, then those two */
    __m512 t8 = _mm512_add_ps(t6, _mm512_permute_ps(t6, 0x4e));
    return _mm512_add_ps(t8, _mm512_permute_ps(t8, 0xb1));
}

/* Dot products of NK consecutive keys (1 or 2, kr the first row) with GN
 * heads, scaled, into sc[g * SL_ATTN_TILE + n]: per key and head the two
 * chains over d (even and odd 16s) and the reduction of dot16n. Two keys
 * share each load of a head's q (one key: ten loads for eight FMAs a 32
 * dims with four heads, so the loads bound it; two keys: twelve for
 * sixteen). */
AT_INLINE void score_keys(const sl_attn_f32 *a, const float *kr, float *sc, const int GN,
                          const int NK)
{
    const int hd = a->head_dim;
    __m512 a0[2][8], a1[2][8];
    AT_UNROLL
    for (int n = 0; n < NK; n++)
        AT_UNROLL
        for (int g = 0; g < GN; g++)
            a0[n][g] = a1[n][g] = _mm512_setzero_ps();
    int d = 0;
    for (; d + 32 <= hd; d += 32) {
        __m512 k0[2], k1[2];
        AT_UNROLL
        for (int n = 0; n < NK; n++) {
            k0[n] = _mm512_loadu_ps(kr + n * a->kv_stride + d);
            k1[n] = _mm512_loadu_ps(kr + n * a->kv_stride + d + 16);
        }
        AT_UNROLL
        for (int g = 0; g < GN; g++) {
            const float *q = a->q + g * a->q_stride;
            __m512 q0 = _mm512_loadu_ps(q + d), q1 = _mm512_loadu_ps(q + d + 16);
            AT_UNROLL
            for (int n = 0; n < NK; n++) {
                a0[n][g] = _mm512_fmadd_ps(q0, k0[n], a0[n][g]);
                a1[n][g] = _mm512_fmadd_ps(q1, k1[n], a1[n][g]);
            }
        }
    }
    if (d < hd) {
        AT_UNROLL
        for (int g = 0; g < GN; g++) {
            __m512 q0 = _mm512_loadu_ps(a->q + g * a->q_stride + d);
            AT_UNROLL
            for (int n = 0; n < NK; n++)
                a0[n][g] = _mm512_fmadd_ps(q0, _mm512_loadu_ps(kr + n * a->kv_stride + d), a0[n][g]);
        }
    }
    const __m512 vs = _mm512_set1_ps(a->scale);
    AT_UNROLL
    for (int n = 0; n < NK; n++)
        AT_UNROLL
        for (int g0 = 0; g0 < GN; g0 += 4) {
            __m512 z = _mm512_setzero_ps(), s[4];
            AT_UNROLL
            for (int g = 0; g < 4; g++)
                s[g] = g0 + g < GN ? _mm512_add_ps(a0[n][g0 + g], a1[n][g0 + g]) : z;
            float r[16];
            _mm512_storeu_ps(r, _mm512_mul_ps(reduce4(s[0], s[1], s[2], s[3]), vs));
            AT_UNROLL
            for (int g = 0; g < 4; g++)
                if (g0 + g < GN)
                    sc[(g0 + g) * SL_ATTN_TILE + n] = r[4 * g];
        }
}

/* Scores of one tile for GN heads: sc[g * SL_ATTN_TILE + j], as dot16n;
 * two keys at a time up to four heads (eight would want 32 accumulators). */
AT_INLINE void tile_scores_gn(const sl_attn_f32 *a, int64_t t0, int nt, int64_t n_keys,
                              float *sc, const int GN)
{
    const int row_lines = (a->head_dim * (int)sizeof(float) + 63) / 64;
    const int v_lines = row_lines < 2 ? row_lines : 2;
    int j = 0;
    if (GN <= 4)
        for (; j + 2 <= nt; j += 2) {
            const float *k = a->k + (t0 + j) * a->kv_stride, *v = a->v + (t0 + j) * a->kv_stride;
            if (t0 + j + PF_KEYS + 1 < n_keys) {
                pf_lines(k + PF_KEYS * a->kv_stride, row_lines);
                pf_lines(k + (PF_KEYS + 1) * a->kv_stride, row_lines);
            }
            pf_lines(v, v_lines);
            pf_lines(v + a->kv_stride, v_lines);
            score_keys(a, k, sc + j, GN, 2);
        }
    for (; j < nt; j++) {
        const float *k = a->k + (t0 + j) * a->kv_stride;
        if (t0 + j + PF_KEYS < n_keys)
            pf_lines(k + PF_KEYS * a->kv_stride, row_lines);
        pf_lines(a->v + (t0 + j) * a->kv_stride, v_lines);
        score_keys(a, k, sc + j, GN, 1);
    }
    if (a->softcap > 0.0f) {
        __m512 cap = _mm512_set1_ps(a->softcap), inv = _mm512_set1_ps(1.0f / a->softcap);
        AT_UNROLL
        for (int g = 0; g < GN; g++)
            for (int j = 0; j < nt; j += 16) {
                __mmask16 mk = nt - j >= 16 ? 0xffff : (__mmask16)((1u << (nt - j)) - 1);
                float *s = sc + g * SL_ATTN_TILE + j;
                __m512 v = _mm512_maskz_loadu_ps(mk, s);
                _mm512_mask_storeu_ps(s, mk, _mm512_mul_ps(cap, sl_tanh512(_mm512_mul_ps(v, inv))));
            }
    }
}

/* The tile's weighted values added into each head's output (span_any's
 * loop over d with the group size GN), ND runs of 16 dims at once (1 or 2):
 * with two, a weight broadcast into a register feeds both runs' FMAs (one
 * run: a broadcast load for every FMA, ten loads for eight FMAs a key pair
 * with four heads; two: twelve for sixteen). Each lane's chains are the
 * same. */
AT_INLINE void values_dims(const sl_attn_f32 *a, int64_t t0, int nt, const float *sc,
                           const float *corr, float *o, int d, const int GN, const int ND)
{
    const int hd = a->head_dim;
    __m512 ev[2][8], od[2][8];
    AT_UNROLL
    for (int g = 0; g < GN; g++)
        AT_UNROLL
        for (int c = 0; c < ND; c++) {
            ev[c][g] = _mm512_mul_ps(_mm512_loadu_ps(o + g * hd + d + 16 * c), _mm512_set1_ps(corr[g]));
            od[c][g] = _mm512_setzero_ps();
        }
    const float *v = a->v + t0 * a->kv_stride + d;
    int j = 0;
    /* the next strip's runs of 16 dims inside the rows (never past a row) */
    const int pf_runs = (hd - d - 16 * ND) / 16;
    for (; j + 2 <= nt; j += 2, v += 2 * a->kv_stride) {
        AT_UNROLL
        for (int c = 0; c < ND; c++)
            if (c < pf_runs) {
                _mm_prefetch((const char *)(v + 16 * ND + 16 * c), _MM_HINT_T0);
                _mm_prefetch((const char *)(v + a->kv_stride + 16 * ND + 16 * c), _MM_HINT_T0);
            }
        __m512 v0[2], v1[2];
        AT_UNROLL
        for (int c = 0; c < ND; c++) {
            v0[c] = _mm512_loadu_ps(v + 16 * c);
            v1[c] = _mm512_loadu_ps(v + a->kv_stride + 16 * c);
        }
        AT_UNROLL
        for (int g = 0; g < GN; g++) {
            if (ND == 1) {
                ev[0][g] = fma_bcast(ev[0][g], v0[0], sc + g * SL_ATTN_TILE + j);
                od[0][g] = fma_bcast(od[0][g], v1[0], sc + g * SL_ATTN_TILE + j + 1);
            } else {
                __m512 w0 = _mm512_set1_ps(sc[g * SL_ATTN_TILE + j]);
                __m512 w1 = _mm512_set1_ps(sc[g * SL_ATTN_TILE + j + 1]);
                AT_UNROLL
                for (int c = 0; c < ND; c++) {
                    ev[c][g] = _mm512_fmadd_ps(w0, v0[c], ev[c][g]);
                    od[c][g] = _mm512_fmadd_ps(w1, v1[c], od[c][g]);
                }
            }
        }
    }
    if (j < nt) {
        AT_UNROLL
        for (int c = 0; c < ND; c++) {
            __m512 v0 = _mm512_loadu_ps(v + 16 * c);
            AT_UNROLL
            for (int g = 0; g < GN; g++)
                ev[c][g] = fma_bcast(ev[c][g], v0, sc + g * SL_ATTN_TILE + j);
        }
    }
    AT_UNROLL
    for (int g = 0; g < GN; g++)
        AT_UNROLL
        for (int c = 0; c < ND; c++)
            _mm512_storeu_ps(o + g * hd + d + 16 * c, _mm512_add_ps(ev[c][g], od[c][g]));
}

AT_INLINE void tile_values_gn(const sl_attn_f32 *a, int64_t t0, int nt, const float *sc,
                              const float *corr, float *o, const int GN)
{
    const int hd = a->head_dim;
    int d = 0;
    if (GN <= 4)
        for (; d + 32 <= hd; d += 32)
            values_dims(a, t0, nt, sc, corr, o, d, GN, 2);
    for (; d < hd; d += 16)
        values_dims(a, t0, nt, sc, corr, o, d, GN, 1);
}

AT_INLINE void span_gn(const sl_attn_f32 *a, int64_t n_keys, sl_attn_part *p, const int GN)
{
    int hd = a->head_dim;
    AT_UNROLL
    for (int g = 0; g < GN; g++) {
        p->m[g] = -INFINITY;
        p->l[g] = 0.0f;
        for (int d = 0; d < hd; d++)
            p->o[g * hd + d] = 0.0f;
    }
    float sc[8 * SL_ATTN_TILE];
    for (int64_t t0 = 0; t0 < n_keys; t0 += SL_ATTN_TILE) {
        int nt = (int)(n_keys - t0 < SL_ATTN_TILE ? n_keys - t0 : SL_ATTN_TILE);
        tile_scores_gn(a, t0, nt, n_keys, sc, GN);
        float corr[8];
        AT_UNROLL
        for (int g = 0; g < GN; g++) {
            float *s = sc + g * SL_ATTN_TILE, mx = tile_max(s, nt, p->m[g]);
            corr[g] = p->m[g] == -INFINITY ? 0.0f : expf(p->m[g] - mx);
            p->l[g] = p->l[g] * corr[g] + tile_exp(s, nt, mx);
            p->m[g] = mx;
        }
        tile_values_gn(a, t0, nt, sc, corr, p->o, GN);
    }
}

static void span_g1(const sl_attn_f32 *a, int64_t n, sl_attn_part *p) { span_gn(a, n, p, 1); }
static void span_g2(const sl_attn_f32 *a, int64_t n, sl_attn_part *p) { span_gn(a, n, p, 2); }
static void span_g4(const sl_attn_f32 *a, int64_t n, sl_attn_part *p) { span_gn(a, n, p, 4); }
static void span_g8(const sl_attn_f32 *a, int64_t n, sl_attn_part *p) { span_gn(a, n, p, 8); }

void sl_attn_span_avx512(const sl_attn_f32 *a, int64_t n_keys, sl_attn_part *p)
{
    switch (a->n_group) {
    case 1: span_g1(a, n_keys, p); break;
    case 2: span_g2(a, n_keys, p); break;
    case 4: span_g4(a, n_keys, p); break;
    case 8: span_g8(a, n_keys, p); break;
    default: span_any(a, n_keys, p); break;
    }
}

/* ---- several query tokens at once (sl_attn_span_multi) ----
 * T tokens of one KV head whose spans start at the same key (and so share
 * the tile bounds), each with its own end: every key row read once from
 * memory serves the T tokens' GN heads (Q = T * GN queries, up to 32, in
 * register chunks of 8), and each value row the same. Each query's operations are span_gn's, in the same order: its
 * dot products are dot16n's two chains (even and odd runs of 16 dims) and
 * reduction, its values its two chains (even and odd keys of the tile) and
 * their sum. The chains are independent, so one runs after the other here,
 * which leaves the registers to the queries: a key pair's step loads two
 * runs of keys for sixteen FMAs (the one-token kernel: two keys and eight
 * runs of q for sixteen), and the keys come from L1 once a chunk. */

/* Dot products of NK keys at kr with Q queries, scaled, into
 * sc[q * SL_ATTN_TILE + n]. */
AT_INLINE void mscore_keys(const float *const *qp, const float *kr, int64_t kv_stride, int hd,
                           float scale, float *sc, const int Q, const int NK)
{
    __m512 acc[2][8], a0[2][8];
    for (int c = 0; c < 2; c++) {
        AT_UNROLL
        for (int n = 0; n < NK; n++)
            AT_UNROLL
            for (int q = 0; q < Q; q++)
                acc[n][q] = _mm512_setzero_ps();
        /* chain c: the runs of 16 dims at 32 i + 16 c (dot16n's a0 takes a
         * last odd run) */
        for (int d = 16 * c; d + 16 <= hd; d += 32) {
            __m512 k[2];
            AT_UNROLL
            for (int n = 0; n < NK; n++)
                k[n] = _mm512_loadu_ps(kr + n * kv_stride + d);
            AT_UNROLL
            for (int q = 0; q < Q; q++) {
                __m512 qv = _mm512_loadu_ps(qp[q] + d);
                AT_UNROLL
                for (int n = 0; n < NK; n++)
                    acc[n][q] = _mm512_fmadd_ps(qv, k[n], acc[n][q]);
            }
        }
        if (c == 0) {
            AT_UNROLL
            for (int n = 0; n < NK; n++)
                AT_UNROLL
                for (int q = 0; q < Q; q++)
                    a0[n][q] = acc[n][q];
        }
    }
    const __m512 vs = _mm512_set1_ps(scale);
    AT_UNROLL
    for (int n = 0; n < NK; n++)
        AT_UNROLL
        for (int q0 = 0; q0 < Q; q0 += 4) {
            __m512 z = _mm512_setzero_ps(), s[4];
            AT_UNROLL
            for (int q = 0; q < 4; q++)
                s[q] = q0 + q < Q ? _mm512_add_ps(a0[n][q0 + q], acc[n][q0 + q]) : z;
            float r[16];
            _mm512_storeu_ps(r, _mm512_mul_ps(reduce4(s[0], s[1], s[2], s[3]), vs));
            AT_UNROLL
            for (int q = 0; q < 4; q++)
                if (q0 + q < Q)
                    sc[(q0 + q) * SL_ATTN_TILE + n] = r[4 * q];
        }
}

/* One chain (keys j0, j0 + 2, ... below each token's nt) of the weighted
 * values of runs d .. d + 16 ND into acc (Q queries). */
AT_INLINE void mvalues_chain(__m512 acc[2][8], const float *v, int64_t kv_stride, const float *sc,
                             const int *nt, int ntmin, int ntmax, int j0, int hd, int d, const int Q,
                             const int GN, const int ND)
{
    int j = j0;
    /* the next strip's runs of 16 dims inside the rows (never past a row) */
    const int pf_runs = (hd - d - 16 * ND) / 16;
    for (; j < ntmin; j += 2, v += 2 * kv_stride) {
        AT_UNROLL
        for (int c = 0; c < ND; c++)
            if (c < pf_runs)
                _mm_prefetch((const char *)(v + 16 * ND + 16 * c), _MM_HINT_T0);
        __m512 vv[2];
        AT_UNROLL
        for (int c = 0; c < ND; c++)
            vv[c] = _mm512_loadu_ps(v + 16 * c);
        AT_UNROLL
        for (int q = 0; q < Q; q++) {
            __m512 w = _mm512_set1_ps(sc[q * SL_ATTN_TILE + j]);
            AT_UNROLL
            for (int c = 0; c < ND; c++)
                acc[c][q] = _mm512_fmadd_ps(w, vv[c], acc[c][q]);
        }
    }
    for (; j < ntmax; j += 2, v += 2 * kv_stride)
        AT_UNROLL
        for (int q = 0; q < Q; q++)
            if (j < nt[q / GN]) {
                __m512 w = _mm512_set1_ps(sc[q * SL_ATTN_TILE + j]);
                AT_UNROLL
                for (int c = 0; c < ND; c++)
                    acc[c][q] = _mm512_fmadd_ps(w, _mm512_loadu_ps(v + 16 * c), acc[c][q]);
            }
}

/* The tile's values of runs d .. d + 16 ND for every query: o = (o * corr
 * + even keys) + odd keys, stored for the tokens with keys in the tile. */
AT_INLINE void mvalues_dims(const float *v, int64_t kv_stride, const float *sc, const float *corr,
                            float *const *o, const int *nt, int ntmin, int ntmax, int hd, int d,
                            const int Q, const int GN, const int ND)
{
    __m512 ev[2][8], od[2][8];
    AT_UNROLL
    for (int q = 0; q < Q; q++)
        AT_UNROLL
        for (int c = 0; c < ND; c++) {
            ev[c][q] = _mm512_mul_ps(_mm512_loadu_ps(o[q] + d + 16 * c), _mm512_set1_ps(corr[q]));
            od[c][q] = _mm512_setzero_ps();
        }
    mvalues_chain(ev, v + d, kv_stride, sc, nt, ntmin, ntmax, 0, hd, d, Q, GN, ND);
    mvalues_chain(od, v + kv_stride + d, kv_stride, sc, nt, ntmin, ntmax, 1, hd, d, Q, GN, ND);
    AT_UNROLL
    for (int q = 0; q < Q; q++)
        if (nt[q / GN] > 0)
            AT_UNROLL
            for (int c = 0; c < ND; c++)
                _mm512_storeu_ps(o[q] + d + 16 * c, _mm512_add_ps(ev[c][q], od[c][q]));
}

/* Queries a chunk of the scores' and values' steps holds in registers. */
enum { MCHUNK = 8, MQMAX = 32 };

/* mscore_keys for FC chunks of MCHUNK queries and QR left over, one chunk
 * after another (sc at the step's first key of query 0's scores). */
AT_INLINE void mscore_chunks(const float *const *qp, const float *kr, int64_t kv_stride, int hd,
                             float scale, float *sc, int FC, const int QR, const int NK)
{
    for (int c = 0; c < FC; c++)
        mscore_keys(qp + c * MCHUNK, kr, kv_stride, hd, scale, sc + c * MCHUNK * SL_ATTN_TILE,
                    MCHUNK, NK);
    if (QR)
        mscore_keys(qp + FC * MCHUNK, kr, kv_stride, hd, scale, sc + FC * MCHUNK * SL_ATTN_TILE,
                    QR, NK);
}

/* mvalues_dims for FC chunks of MCHUNK queries and QR left over, one chunk
 * after another. */
AT_INLINE void mvalues_chunks(const float *v, int64_t kv_stride, const float *sc, const float *corr,
                              float *const *o, const int *nt, int ntmin, int ntmax, int hd, int d,
                              int FC, const int QR, const int GN, const int ND)
{
    for (int c = 0; c < FC; c++)
        mvalues_dims(v, kv_stride, sc + c * MCHUNK * SL_ATTN_TILE, corr + c * MCHUNK,
                     o + c * MCHUNK, nt + c * MCHUNK / GN, ntmin, ntmax, hd, d, MCHUNK, GN, ND);
    if (QR)
        mvalues_dims(v, kv_stride, sc + FC * MCHUNK * SL_ATTN_TILE, corr + FC * MCHUNK,
                     o + FC * MCHUNK, nt + FC * MCHUNK / GN, ntmin, ntmax, hd, d, QR, GN, ND);
}

/* The tokens' queries are taken in chunks of MCHUNK (QR left over: T * GN
 * mod MCHUNK, a constant here): each key pair is scored and each strip of
 * a tile's values added for one chunk after another, the rows loaded again
 * from L1. */
AT_INLINE void span_multi_gn(const sl_attn_f32 *a, const float *const *qt, const int64_t *n_keys,
                             int T, sl_attn_part *p, const int GN, const int QR)
{
    const int Q = GN * T, hd = a->head_dim, FC = Q / MCHUNK;
    const float *qp[MQMAX];
    float *o[MQMAX];
    int64_t nmax = 0;
    for (int t = 0; t < T; t++) {
        nmax = n_keys[t] > nmax ? n_keys[t] : nmax;
        AT_UNROLL
        for (int g = 0; g < GN; g++) {
            qp[t * GN + g] = qt[t] + g * a->q_stride;
            o[t * GN + g] = p[t].o + g * hd;
            p[t].m[g] = -INFINITY;
            p[t].l[g] = 0.0f;
            memset(p[t].o + g * hd, 0, sizeof(float) * (size_t)hd);
        }
    }
    const int row_lines = (hd * (int)sizeof(float) + 63) / 64;
    const int v_lines = row_lines < 2 ? row_lines : 2;
    float sc[MQMAX * SL_ATTN_TILE];
    for (int64_t t0 = 0; t0 < nmax; t0 += SL_ATTN_TILE) {
        int nt[MQMAX], ntmin = SL_ATTN_TILE, ntmax = 0;
        for (int t = 0; t < T; t++) {
            int64_t r = n_keys[t] - t0;
            nt[t] = r <= 0 ? 0 : r < SL_ATTN_TILE ? (int)r : SL_ATTN_TILE;
            ntmin = nt[t] < ntmin ? nt[t] : ntmin;
            ntmax = nt[t] > ntmax ? nt[t] : ntmax;
        }
        const float *k = a->k + t0 * a->kv_stride, *v = a->v + t0 * a->kv_stride;
        int j = 0;
        /* the keys PF_KEYS ahead and the first lines of the values (as
         * tile_scores_gn: a verification's first call of a block reads
         * them from memory) */
        for (; j + 2 <= ntmax; j += 2) {
            if (t0 + j + PF_KEYS + 1 < nmax) {
                pf_lines(k + (j + PF_KEYS) * a->kv_stride, row_lines);
                pf_lines(k + (j + PF_KEYS + 1) * a->kv_stride, row_lines);
            }
            pf_lines(v + j * a->kv_stride, v_lines);
            pf_lines(v + (j + 1) * a->kv_stride, v_lines);
            mscore_chunks(qp, k + j * a->kv_stride, a->kv_stride, hd, a->scale, sc + j, FC, QR, 2);
        }
        if (j < ntmax) {
            pf_lines(v + j * a->kv_stride, v_lines);
            mscore_chunks(qp, k + j * a->kv_stride, a->kv_stride, hd, a->scale, sc + j, FC, QR, 1);
        }
        float corr[MQMAX];
        for (int t = 0; t < T; t++)
            AT_UNROLL
            for (int g = 0; g < GN; g++) {
                float *s = sc + (t * GN + g) * SL_ATTN_TILE;
                int n = nt[t];
                corr[t * GN + g] = 0.0f;
                if (n == 0)
                    continue;
                if (a->softcap > 0.0f) {
                    __m512 cap = _mm512_set1_ps(a->softcap), inv = _mm512_set1_ps(1.0f / a->softcap);
                    for (int jj = 0; jj < n; jj += 16) {
                        __mmask16 mk = n - jj >= 16 ? 0xffff : (__mmask16)((1u << (n - jj)) - 1);
                        __m512 x = _mm512_maskz_loadu_ps(mk, s + jj);
                        _mm512_mask_storeu_ps(s + jj, mk,
                                              _mm512_mul_ps(cap, sl_tanh512(_mm512_mul_ps(x, inv))));
                    }
                }
                float mx = tile_max(s, n, p[t].m[g]);
                corr[t * GN + g] = p[t].m[g] == -INFINITY ? 0.0f : expf(p[t].m[g] - mx);
                p[t].l[g] = p[t].l[g] * corr[t * GN + g] + tile_exp(s, n, mx);
                p[t].m[g] = mx;
            }
        /* a strip of the tile's value rows (8 KB at 256 dims) stays in L1
         * for every chunk; ntmin and ntmax only cut a chain's loop, each
         * query still adds its keys below its token's end in order */
        int d = 0;
        for (; d + 32 <= hd; d += 32) {
            mvalues_chunks(v, a->kv_stride, sc, corr, o, nt, ntmin, ntmax, hd, d, FC, QR, GN, 2);
        }
        for (; d < hd; d += 16) {
            mvalues_chunks(v, a->kv_stride, sc, corr, o, nt, ntmin, ntmax, hd, d, FC, QR, GN, 1);
        }
    }
}

/* One instance a remainder (T * GN mod MCHUNK): GN = 1 any of 0..7, GN = 2
 * 0, 2, 4 or 6, GN = 4 0 or 4. */
static void span_m1(const sl_attn_f32 *a, const float *const *q, const int64_t *n, int T,
                    sl_attn_part *p)
{
    switch (T % MCHUNK) {
    case 0: span_multi_gn(a, q, n, T, p, 1, 0); break;
    case 1: span_multi_gn(a, q, n, T, p, 1, 1); break;
    case 2: span_multi_gn(a, q, n, T, p, 1, 2); break;
    case 3: span_multi_gn(a, q, n, T, p, 1, 3); break;
    case 4: span_multi_gn(a, q, n, T, p, 1, 4); break;
    case 5: span_multi_gn(a, q, n, T, p, 1, 5); break;
    case 6: span_multi_gn(a, q, n, T, p, 1, 6); break;
    default: span_multi_gn(a, q, n, T, p, 1, 7); break;
    }
}
static void span_m2(const sl_attn_f32 *a, const float *const *q, const int64_t *n, int T,
                    sl_attn_part *p)
{
    switch (2 * T % MCHUNK) {
    case 0: span_multi_gn(a, q, n, T, p, 2, 0); break;
    case 2: span_multi_gn(a, q, n, T, p, 2, 2); break;
    case 4: span_multi_gn(a, q, n, T, p, 2, 4); break;
    default: span_multi_gn(a, q, n, T, p, 2, 6); break;
    }
}
static void span_m4(const sl_attn_f32 *a, const float *const *q, const int64_t *n, int T,
                    sl_attn_part *p)
{
    if (4 * T % MCHUNK)
        span_multi_gn(a, q, n, T, p, 4, 4);
    else
        span_multi_gn(a, q, n, T, p, 4, 0);
}

/* Up to MQMAX queries a call (the tokens of a verification of up to 8
 * with 4 heads a KV head see a block in one call, so its keys and values
 * come from memory once and from L1 for the other chunks). */
int sl_attn_multi_tokens_avx512(int n_group)
{
    return n_group == 1 || n_group == 2 || n_group == 4 ? MQMAX / n_group : 1;
}

void sl_attn_span_multi_avx512(const sl_attn_f32 *a, const float *const *q, const int64_t *n_keys,
                               int n_tok, sl_attn_part *p)
{
    switch (a->n_group) {
    case 1: span_m1(a, q, n_keys, n_tok, p); break;
    case 2: span_m2(a, q, n_keys, n_tok, p); break;
    default: span_m4(a, q, n_keys, n_tok, p); break;
    }
}

/* sl_attn_combine's weighted sum of one head's partials, 16 dims a vector:
 * each lane multiplies, rounds, adds, then scales as the scalar loop does
 * (attn.c is built for plain x86-64: no FMA), so the same bits. */
void sl_attn_combine_head_avx512(const float *const *po, const float *w, int64_t n_parts,
                                 int head_dim, float inv, float *o)
{
    const __m512 vi = _mm512_set1_ps(inv);
    for (int d = 0; d < head_dim; d += 16) {
        __m512 acc = _mm512_setzero_ps();
        for (int64_t s = 0; s < n_parts; s++) {
            __m512 x = _mm512_mul_ps(_mm512_set1_ps(w[s]), _mm512_loadu_ps(po[s] + d));
            __asm__("" : "+v"(x)); /* rounded before the add: no FMA contraction */
            acc = _mm512_add_ps(acc, x);
        }
        _mm512_storeu_ps(o + d, _mm512_mul_ps(acc, vi));
    }
}
