#include "kernels/attn.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>

#include "kernels/cpu.h"
#include "kernels/quant.h"

/* AVX-512 span kernel (attn_avx512.c); head_dim must be a multiple of 16. */
void sl_attn_span_avx512(const sl_attn_f32 *a, int64_t n_keys, sl_attn_part *part);
int sl_attn_multi_tokens_avx512(int n_group);
void sl_attn_span_multi_avx512(const sl_attn_f32 *a, const float *const *q, const int64_t *n_keys,
                               int n_tok, sl_attn_part *part);
void sl_attn_combine_head_avx512(const float *const *po, const float *w, int64_t n_parts,
                                 int head_dim, float inv, float *o);

int64_t sl_attn_n_spans(int64_t j0, int64_t j1)
{
    if (j1 <= j0)
        return 0;
    return (j1 - 1) / SL_ATTN_SPAN - j0 / SL_ATTN_SPAN + 1;
}

void sl_attn_span_bounds(int64_t j0, int64_t j1, int64_t s, int64_t *s0, int64_t *s1)
{
    int64_t first = j0 / SL_ATTN_SPAN + s;
    int64_t lo = first * SL_ATTN_SPAN, hi = lo + SL_ATTN_SPAN;
    *s0 = lo > j0 ? lo : j0;
    *s1 = hi < j1 ? hi : j1;
}

static float score_of(const sl_attn_f32 *a, const float *q, const float *k)
{
    /* eight partial sums in a fixed order: vectorisable without -ffast-math */
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= a->head_dim; i += 8)
        for (int l = 0; l < 8; l++)
            acc[l] += q[i + l] * k[i + l];
    for (; i < a->head_dim; i++)
        acc[i & 7] += q[i] * k[i];
    float s = (((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))) *
              a->scale;
    return a->softcap > 0.0f ? a->softcap * tanhf(s / a->softcap) : s;
}

/* The scalar path: tiles of SL_ATTN_TILE keys, online softmax per head. */
static void span_scalar(const sl_attn_f32 *a, int64_t s1, sl_attn_part *p)
{
    const int64_t s0 = 0;
    int hd = a->head_dim;
    for (int g = 0; g < a->n_group; g++) {
        p->m[g] = -INFINITY;
        p->l[g] = 0.0f;
        for (int d = 0; d < hd; d++)
            p->o[g * hd + d] = 0.0f;
    }
    float sc[SL_ATTN_TILE];
    for (int64_t t0 = s0; t0 < s1; t0 += SL_ATTN_TILE) {
        int nt = (int)(s1 - t0 < SL_ATTN_TILE ? s1 - t0 : SL_ATTN_TILE);
        for (int g = 0; g < a->n_group; g++) {
            const float *q = a->q + g * a->q_stride;
            float mx = p->m[g];
            for (int j = 0; j < nt; j++) {
                sc[j] = score_of(a, q, a->k + (t0 + j) * a->kv_stride);
                mx = sc[j] > mx ? sc[j] : mx;
            }
            float corr = p->m[g] == -INFINITY ? 0.0f : expf(p->m[g] - mx);
            float *o = p->o + g * hd;
            float l = p->l[g] * corr;
            for (int d = 0; d < hd; d++)
                o[d] *= corr;
            for (int j = 0; j < nt; j++) {
                float e = expf(sc[j] - mx);
                l += e;
                const float *v = a->v + (t0 + j) * a->kv_stride;
                for (int d = 0; d < hd; d++)
                    o[d] += e * v[d];
            }
            p->m[g] = mx;
            p->l[g] = l;
        }
    }
}

static void span_f32(const sl_attn_f32 *f, int64_t n, sl_attn_part *part)
{
#if defined(__x86_64__)
    if (sl_path_active() == SL_PATH_AVX512 && f->head_dim % 16 == 0) {
        sl_attn_span_avx512(f, n, part);
        return;
    }
#endif
    span_scalar(f, n, part);
}

static const void *row_at(const void *base, const sl_attn_q *a, int64_t j)
{
    return (const uint8_t *)base + (j - a->pos0) * a->row_bytes;
}

int sl_attn_multi_tokens(int head_dim, int n_group)
{
#if defined(__x86_64__)
    if (sl_path_active() == SL_PATH_AVX512 && head_dim % 16 == 0 && head_dim <= 512)
        return sl_attn_multi_tokens_avx512(n_group);
#endif
    (void)head_dim;
    (void)n_group;
    return 1;
}

/* The float rows of keys [s0, s0 + n) in f: in place, or decoded into a
 * buffer (returned, for free) for other types. */
static float *span_rows(const sl_attn_q *a, int64_t s0, int64_t n, sl_attn_f32 *f)
{
    *f = (sl_attn_f32){a->q, a->q_stride, NULL, NULL, 0, a->head_dim, a->n_group, a->scale,
                       a->softcap};
    if (a->kv_type == SL_TYPE_F32) {
        f->k = row_at(a->k, a, s0);
        f->v = row_at(a->v, a, s0);
        f->kv_stride = a->row_bytes / (int64_t)sizeof(float);
        return NULL;
    }
    /* decode the span's rows once; SL_ATTN_SPAN rows of each fit in L2 */
    float *buf = malloc(sizeof(float) * (size_t)(2 * n * a->head_dim));
    if (!buf)
        abort(); /* a few hundred KB: nothing sensible is left to do */
    float *k = buf, *v = buf + n * a->head_dim;
    for (int64_t j = 0; j < n; j++) {
        sl_dequantize_row(a->kv_type, row_at(a->k, a, s0 + j), k + j * a->head_dim, a->head_dim);
        sl_dequantize_row(a->kv_type, row_at(a->v, a, s0 + j), v + j * a->head_dim, a->head_dim);
    }
    f->k = k;
    f->v = v;
    f->kv_stride = a->head_dim;
    return buf;
}

void sl_attn_span(const sl_attn_q *a, int64_t s0, int64_t s1, sl_attn_part *part)
{
    sl_attn_f32 f;
    float *buf = span_rows(a, s0, s1 - s0, &f);
    span_f32(&f, s1 - s0, part);
    free(buf);
}

void sl_attn_span_multi(const sl_attn_q *a, const float *const *q, int n_tok, int64_t s0,
                        const int64_t *s1, sl_attn_part *part)
{
    int64_t end = s0;
    for (int t = 0; t < n_tok; t++)
        end = s1[t] > end ? s1[t] : end;
    sl_attn_f32 f;
    float *buf = span_rows(a, s0, end - s0, &f);
    int t = 0;
#if defined(__x86_64__)
    int tn = sl_attn_multi_tokens(a->head_dim, a->n_group);
    /* calls of up to tn tokens; a last token alone takes the one-token
     * kernel below */
    if (tn > 1)
        while (n_tok - t >= 2) {
            int m = n_tok - t < tn ? n_tok - t : tn;
            int64_t n[32];
            for (int i = 0; i < m; i++)
                n[i] = s1[t + i] - s0;
            sl_attn_span_multi_avx512(&f, q + t, n, m, part + t);
            t += m;
        }
#endif
    for (; t < n_tok; t++) {
        f.q = q[t];
        span_f32(&f, s1[t] - s0, &part[t]);
    }
    free(buf);
}

void sl_attn_combine(const sl_attn_part *parts, int64_t n_parts, int head_dim, int n_group,
                     float *out, int64_t out_stride)
{
#if defined(__x86_64__)
    bool vec = sl_path_active() == SL_PATH_AVX512 && head_dim % 16 == 0 && n_parts <= 64;
#endif
    for (int g = 0; g < n_group; g++) {
        float mx = -INFINITY;
        for (int64_t s = 0; s < n_parts; s++)
            mx = parts[s].m[g] > mx ? parts[s].m[g] : mx;
        float *o = out + g * out_stride;
#if defined(__x86_64__)
        if (vec) {
            /* the loop below with the dims in vectors: the same operations */
            float w[64], l = 0.0f;
            const float *po[64];
            for (int64_t s = 0; s < n_parts; s++) {
                w[s] = parts[s].m[g] == -INFINITY ? 0.0f : expf(parts[s].m[g] - mx);
                l += parts[s].l[g] * w[s];
                po[s] = parts[s].o + (int64_t)g * head_dim;
            }
            sl_attn_combine_head_avx512(po, w, n_parts, head_dim, l > 0.0f ? 1.0f / l : 0.0f, o);
            continue;
        }
#endif
        for (int d = 0; d < head_dim; d++)
            o[d] = 0.0f;
        float l = 0.0f;
        for (int64_t s = 0; s < n_parts; s++) {
            float w = parts[s].m[g] == -INFINITY ? 0.0f : expf(parts[s].m[g] - mx);
            l += parts[s].l[g] * w;
            const float *po = parts[s].o + (int64_t)g * head_dim;
            for (int d = 0; d < head_dim; d++)
                o[d] += w * po[d];
        }
        float inv = l > 0.0f ? 1.0f / l : 0.0f;
        for (int d = 0; d < head_dim; d++)
            o[d] *= inv;
    }
}

int64_t sl_attn_part_floats(int head_dim, int n_group)
{
    return (int64_t)n_group * (head_dim + 2);
}

sl_attn_part sl_attn_part_at(float *mem, int n_group)
{
    return (sl_attn_part){mem, mem + n_group, mem + 2 * n_group};
}

void sl_attn(const sl_attn_q *a, int64_t j0, int64_t j1, float *out, int64_t out_stride,
             float *work)
{
    int64_t n = sl_attn_n_spans(j0, j1), pf = sl_attn_part_floats(a->head_dim, a->n_group);
    sl_attn_part parts[(j1 - j0) / SL_ATTN_SPAN + 2];
    for (int64_t s = 0; s < n; s++) {
        int64_t s0, s1;
        sl_attn_span_bounds(j0, j1, s, &s0, &s1);
        parts[s] = sl_attn_part_at(work + s * pf, a->n_group);
        sl_attn_span(a, s0, s1, &parts[s]);
    }
    sl_attn_combine(parts, n, a->head_dim, a->n_group, out, out_stride);
}

void sl_attn_naive(const sl_attn_q *a, int64_t j0, int64_t j1, float *out, int64_t out_stride)
{
    int64_t n = j1 - j0, hd = a->head_dim;
    double *p = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    float *kf = malloc(sizeof(float) * (size_t)((n > 0 ? n : 1) * hd));
    float *vf = malloc(sizeof(float) * (size_t)((n > 0 ? n : 1) * hd));
    for (int64_t j = 0; j < n; j++) {
        sl_dequantize_row(a->kv_type, row_at(a->k, a, j0 + j), kf + j * hd, hd);
        sl_dequantize_row(a->kv_type, row_at(a->v, a, j0 + j), vf + j * hd, hd);
    }
    for (int g = 0; g < a->n_group; g++) {
        const float *q = a->q + g * a->q_stride;
        double mx = -INFINITY;
        for (int64_t j = 0; j < n; j++) {
            const float *k = kf + j * hd;
            double s = 0;
            for (int d = 0; d < a->head_dim; d++)
                s += (double)q[d] * k[d];
            s *= a->scale;
            if (a->softcap > 0.0f)
                s = a->softcap * tanh(s / a->softcap);
            p[j] = s;
            mx = s > mx ? s : mx;
        }
        double sum = 0;
        for (int64_t j = 0; j < n; j++)
            sum += p[j] = exp(p[j] - mx);
        for (int d = 0; d < a->head_dim; d++) {
            double o = 0;
            for (int64_t j = 0; j < n; j++)
                o += p[j] * vf[j * hd + d];
            out[g * out_stride + d] = (float)(o / sum);
        }
    }
    free(p);
    free(kf);
    free(vf);
}
