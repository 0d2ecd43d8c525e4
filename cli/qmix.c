/* Weight types for synth and quantize, including llama.cpp's Q4_K_M mix. */
#include "cli/cli.h"
#include "kernels/quant.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* general.file_type values (llama.cpp's llama_ftype) */
enum {
    FTYPE_F32 = 0, FTYPE_F16 = 1, FTYPE_Q4_0 = 2, FTYPE_Q8_0 = 7, FTYPE_Q4_K_S = 14,
    FTYPE_Q4_K_M = 15, FTYPE_Q5_K_S = 16, FTYPE_Q6_K = 18, FTYPE_BF16 = 32
};

int cli_parse_qtype(const char *s, cli_qtype *out)
{
    static const struct {
        const char *name;
        sl_type type;
        bool mix;
        uint32_t ftype;
    } table[] = {
        {"f32", SL_TYPE_F32, false, FTYPE_F32},    {"f16", SL_TYPE_F16, false, FTYPE_F16},
        {"bf16", SL_TYPE_BF16, false, FTYPE_BF16}, {"q8_0", SL_TYPE_Q8_0, false, FTYPE_Q8_0},
        {"q4_0", SL_TYPE_Q4_0, false, FTYPE_Q4_0}, {"q4_K", SL_TYPE_Q4_K, false, FTYPE_Q4_K_S},
        {"q5_K", SL_TYPE_Q5_K, false, FTYPE_Q5_K_S}, {"q6_K", SL_TYPE_Q6_K, false, FTYPE_Q6_K},
        {"q4_K_M", SL_TYPE_Q4_K, true, FTYPE_Q4_K_M},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        if (strcasecmp(s, table[i].name) == 0) {
            *out = (cli_qtype){table[i].type, table[i].mix, table[i].ftype};
            return 0;
        }
    }
    return -1;
}

/* llama.cpp's choice of layers that get more bits: the first and last
 * eighth, and every third layer in between. */
static bool use_more_bits(int i_layer, int n_layer)
{
    return i_layer < n_layer / 8 || i_layer >= 7 * n_layer / 8 || (i_layer - n_layer / 8) % 3 == 2;
}

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static sl_type mix_type(const cli_qtype *q, const char *name, int n_layer, bool tied)
{
    if (!q->k_m_mix)
        return q->base;
    if (strcmp(name, "output.weight") == 0 || (tied && strcmp(name, "token_embd.weight") == 0))
        return SL_TYPE_Q6_K;
    int il;
    if (sscanf(name, "blk.%d.", &il) == 1 &&
        (has_suffix(name, ".attn_v.weight") || has_suffix(name, ".ffn_down.weight")) &&
        use_more_bits(il, n_layer))
        return SL_TYPE_Q6_K;
    return q->base;
}

sl_type cli_weight_type(const cli_qtype *q, const char *name, int n_layer, int64_t n_in, bool tied)
{
    sl_type t = mix_type(q, name, n_layer, tied);
    if (n_in % sl_type_block_elems(t) == 0)
        return t;
    /* llama.cpp falls back to q5_0/q5_1/q8_0 for K-quants; of those we have
     * q8_0, which keeps more bits rather than fewer. */
    if (n_in % sl_type_block_elems(SL_TYPE_Q8_0) == 0)
        return SL_TYPE_Q8_0;
    return SL_TYPE_F32;
}

/* The float types are handled here so that synth and quantize need nothing
 * more from the kernels than the block quantisers. */
void cli_row_from_f32(sl_type type, const float *src, void *dst, int64_t n)
{
    switch (type) {
    case SL_TYPE_F32: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    case SL_TYPE_F16:
        for (int64_t i = 0; i < n; i++)
            ((sl_f16 *)dst)[i] = sl_f32_to_f16(src[i]);
        break;
    case SL_TYPE_BF16:
        for (int64_t i = 0; i < n; i++)
            ((sl_bf16 *)dst)[i] = sl_f32_to_bf16(src[i]);
        break;
    default: sl_quantize_row(type, src, dst, n); break;
    }
}

void cli_row_to_f32(sl_type type, const void *src, float *dst, int64_t n)
{
    switch (type) {
    case SL_TYPE_F32: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    case SL_TYPE_F16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = sl_f16_to_f32(((const sl_f16 *)src)[i]);
        break;
    case SL_TYPE_BF16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = sl_bf16_to_f32(((const sl_bf16 *)src)[i]);
        break;
    default: sl_dequantize_row(type, src, dst, n); break;
    }
}
