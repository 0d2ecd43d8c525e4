/* Element-wise and row operations of the forward pass. */
#ifndef SLUICE_OPS_H
#define SLUICE_OPS_H

#include <stdint.h>

/* y = x / rms(x) * w over n elements; w may be NULL (weight-free norm). y may
 * alias x. */
void sl_rmsnorm(float *y, const float *x, const float *w, int64_t n, float eps);

/* RoPE in place on n_heads heads of head_dim floats, rotating the first
 * rot_dim dimensions of each head. theta_i = pos * freq_scale * base^(-2i/rot_dim).
 * neox: pairs (i, i + rot_dim/2) (Gemma, GPT-NeoX); otherwise adjacent pairs
 * (2i, 2i+1) (llama as converted by llama.cpp). */
void sl_rope(float *x, int n_heads, int head_dim, int rot_dim, int32_t pos,
             float base, float freq_scale, int neox);

/* sl_rope in two steps, so the queries and keys of a token share the
 * angles: cs/sn hold rot_dim / 2 floats. */
void sl_rope_angles(float *cs, float *sn, int rot_dim, int32_t pos, float base, float freq_scale);
/* Same with rotation frequency i divided by factors[i] (ggml's freq_factors,
 * rot_dim/2 of them); a huge factor leaves its pair unrotated. */
void sl_rope_angles_ff(float *cs, float *sn, int rot_dim, int32_t pos, float base, float freq_scale,
                       const float *factors);
void sl_rope_apply(float *x, int n_heads, int head_dim, int rot_dim, const float *cs,
                   const float *sn, int neox);

/* gate[i] = act(gate[i]) * up[i]. */
void sl_gelu_tanh_mul(float *gate, const float *up, int64_t n);
void sl_silu_mul(float *gate, const float *up, int64_t n);
/* out[i] = act(gate[i]) * up[i]: the same bits as the in-place forms (out
 * may be gate). */
void sl_gelu_tanh_mul_to(float *out, const float *gate, const float *up, int64_t n);
void sl_silu_mul_to(float *out, const float *gate, const float *up, int64_t n);
float sl_gelu_tanh(float x);

/* x[i] = cap * tanh(x[i] / cap). */
void sl_softcap(float *x, int64_t n, float cap);
/* In-place softmax over n; returns nothing, handles -INFINITY entries. */
void sl_softmax(float *x, int64_t n);
void sl_scale(float *x, int64_t n, float s);
void sl_add(float *y, const float *x, int64_t n); /* y += x */
/* Index of the first largest element; NaNs are passed over (and a NaN at
 * index 0 is returned as is, as the plain loop "x[i] > x[best]" does). */
int64_t sl_argmax_f32(const float *x, int64_t n);

#endif
