#include "kernels/ops.h"

#include <math.h>

#include "kernels/cpu.h"

/* ops_avx512.c */
void sl_gelu_tanh_mul_avx512(float *out, const float *gate, const float *up, int64_t n);
void sl_silu_mul_avx512(float *out, const float *gate, const float *up, int64_t n);
void sl_softcap_avx512(float *x, int64_t n, float cap);
int64_t sl_argmax_f32_avx512(const float *x, int64_t n);
void sl_rmsnorm_avx512(float *y, const float *x, const float *w, int64_t n, float eps);
void sl_rope_neox_avx512(float *x, int n_heads, int head_dim, int rot_dim, const float *cs,
                         const float *sn);

#if defined(__x86_64__)
#define USE_AVX512() (sl_path_active() == SL_PATH_AVX512)
#else
#define USE_AVX512() 0
#endif

void sl_rmsnorm(float *y, const float *x, const float *w, int64_t n, float eps)
{
    if (USE_AVX512()) {
        sl_rmsnorm_avx512(y, x, w, n, eps);
        return;
    }
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

void sl_rope_angles(float *cs, float *sn, int rot_dim, int32_t pos, float base, float freq_scale)
{
    for (int i = 0; i < rot_dim / 2; i++) {
        double inv_freq = pow((double)base, -2.0 * i / (double)rot_dim);
        double theta = (double)pos * (double)freq_scale * inv_freq;
        cs[i] = (float)cos(theta);
        sn[i] = (float)sin(theta);
    }
}

void sl_rope_angles_ff(float *cs, float *sn, int rot_dim, int32_t pos, float base, float freq_scale,
                       const float *factors)
{
    for (int i = 0; i < rot_dim / 2; i++) {
        double inv_freq = pow((double)base, -2.0 * i / (double)rot_dim);
        double theta = (double)pos * (double)freq_scale * inv_freq / (double)factors[i];
        cs[i] = (float)cos(theta);
        sn[i] = (float)sin(theta);
    }
}

void sl_rope(float *x, int n_heads, int head_dim, int rot_dim, int32_t pos, float base,
             float freq_scale, int neox)
{
    int half = rot_dim / 2;
    float cs[half > 0 ? half : 1], sn[half > 0 ? half : 1];
    /* The angles are shared by every head of the token: compute them once. */
    sl_rope_angles(cs, sn, rot_dim, pos, base, freq_scale);
    sl_rope_apply(x, n_heads, head_dim, rot_dim, cs, sn, neox);
}

void sl_rope_apply(float *x, int n_heads, int head_dim, int rot_dim, const float *cs,
                   const float *sn, int neox)
{
    if (neox && USE_AVX512()) {
        sl_rope_neox_avx512(x, n_heads, head_dim, rot_dim, cs, sn);
        return;
    }
    int half = rot_dim / 2;
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

void sl_gelu_tanh_mul_to(float *out, const float *gate, const float *up, int64_t n)
{
    if (USE_AVX512()) {
        sl_gelu_tanh_mul_avx512(out, gate, up, n);
        return;
    }
    for (int64_t i = 0; i < n; i++)
        out[i] = sl_gelu_tanh(gate[i]) * up[i];
}

void sl_silu_mul_to(float *out, const float *gate, const float *up, int64_t n)
{
    if (USE_AVX512()) {
        sl_silu_mul_avx512(out, gate, up, n);
        return;
    }
    for (int64_t i = 0; i < n; i++)
        out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

void sl_gelu_tanh_mul(float *gate, const float *up, int64_t n) { sl_gelu_tanh_mul_to(gate, gate, up, n); }

void sl_silu_mul(float *gate, const float *up, int64_t n) { sl_silu_mul_to(gate, gate, up, n); }

void sl_softcap(float *x, int64_t n, float cap)
{
    if (USE_AVX512()) {
        sl_softcap_avx512(x, n, cap);
        return;
    }
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

int64_t sl_argmax_f32(const float *x, int64_t n)
{
    if (USE_AVX512())
        return sl_argmax_f32_avx512(x, n);
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
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
