#include "kernels/ops.h"

#include <math.h>

void sl_rmsnorm(float *y, const float *x, const float *w, int64_t n, float eps)
{
    /* Double accumulation: the sum of squares of a few thousand activations
     * loses digits in f32, and this costs nothing next to a matmul. */
    double ss = 0.0;
    for (int64_t i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    float inv = (float)(1.0 / sqrt(ss / (double)n + (double)eps));
    if (w) {
        for (int64_t i = 0; i < n; i++)
            y[i] = x[i] * inv * w[i];
    } else {
        for (int64_t i = 0; i < n; i++)
            y[i] = x[i] * inv;
    }
}

void sl_rope(float *x, int n_heads, int head_dim, int rot_dim, int32_t pos, float base,
             float freq_scale, int neox)
{
    int half = rot_dim / 2;
    float cs[half > 0 ? half : 1], sn[half > 0 ? half : 1];
    /* The angles are shared by every head of the token: compute them once. */
    for (int i = 0; i < half; i++) {
        double inv_freq = pow((double)base, -2.0 * i / (double)rot_dim);
        double theta = (double)pos * (double)freq_scale * inv_freq;
        cs[i] = (float)cos(theta);
        sn[i] = (float)sin(theta);
    }
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (int64_t)h * head_dim;
        for (int i = 0; i < half; i++) {
            int a = neox ? i : 2 * i;
            int b = neox ? i + half : 2 * i + 1;
            float x0 = v[a], x1 = v[b];
            v[a] = x0 * cs[i] - x1 * sn[i];
            v[b] = x0 * sn[i] + x1 * cs[i];
        }
    }
}

float sl_gelu_tanh(float x)
{
    const float k = 0.7978845608028654f; /* sqrt(2/pi) */
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

void sl_gelu_tanh_mul(float *gate, const float *up, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        gate[i] = sl_gelu_tanh(gate[i]) * up[i];
}

void sl_silu_mul(float *gate, const float *up, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        gate[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

void sl_softcap(float *x, int64_t n, float cap)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = cap * tanhf(x[i] / cap);
}

void sl_softmax(float *x, int64_t n)
{
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        if (x[i] > mx)
            mx = x[i];
    if (mx == -INFINITY) {
        for (int64_t i = 0; i < n; i++)
            x[i] = 1.0f / (float)n;
        return;
    }
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++)
        x[i] *= inv;
}

void sl_scale(float *x, int64_t n, float s)
{
    for (int64_t i = 0; i < n; i++)
        x[i] *= s;
}

void sl_add(float *y, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] += x[i];
}

/* Dot product with eight independent partial sums: the compiler vectorises
 * it without -ffast-math, and the order is fixed. */
static float dot8(const float *a, const float *b, int n)
{
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++)
            acc[l] += a[i + l] * b[i + l];
    for (; i < n; i++)
        acc[i & 7] += a[i] * b[i];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

void sl_attn_head(const float *q, const float *k, const float *v, int64_t kv_stride, int64_t j0,
                  int64_t j1, int head_dim, float scale, float softcap, float *out, float *scratch)
{
    int64_t n = j1 - j0;
    for (int64_t j = 0; j < n; j++) {
        float s = dot8(q, k + (j0 + j) * kv_stride, head_dim) * scale;
        if (softcap > 0.0f)
            s = softcap * tanhf(s / softcap);
        scratch[j] = s;
    }
    sl_softmax(scratch, n);
    for (int d = 0; d < head_dim; d++)
        out[d] = 0.0f;
    for (int64_t j = 0; j < n; j++) {
        const float *vj = v + (j0 + j) * kv_stride;
        float p = scratch[j];
        for (int d = 0; d < head_dim; d++)
            out[d] += p * vj[d];
    }
}
