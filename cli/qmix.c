/* Weight types for synth and quantize, including llama.cpp's K-quant mixes
 * (its llama_tensor_get_type for those file types, without the rules that
 * only apply to importance matrices, MoE or the IQ1-IQ3 types). */
#include "cli/cli.h"
#include "kernels/quant.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* general.file_type values (llama.cpp's llama_ftype) */
enum {
    FTYPE_F32 = 0, FTYPE_F16 = 1, FTYPE_Q4_0 = 2, FTYPE_Q4_1 = 3, FTYPE_Q8_0 = 7, FTYPE_Q5_0 = 8,
    FTYPE_Q5_1 = 9, FTYPE_Q2_K = 10, FTYPE_Q3_K_S = 11, FTYPE_Q3_K_M = 12, FTYPE_Q3_K_L = 13,
    FTYPE_Q4_K_S = 14, FTYPE_Q4_K_M = 15, FTYPE_Q5_K_S = 16, FTYPE_Q5_K_M = 17, FTYPE_Q6_K = 18,
    FTYPE_IQ4_NL = 25, FTYPE_IQ4_XS = 30, FTYPE_BF16 = 32
};

int cli_parse_qtype(const char *s, cli_qtype *out)
{
    static const struct {
        const char *name;
        sl_type type;
        bool mix;
        uint32_t ftype;
    } table[] = {
        {"f32", SL_TYPE_F32, false, FTYPE_F32},        {"f16", SL_TYPE_F16, false, FTYPE_F16},
        {"bf16", SL_TYPE_BF16, false, FTYPE_BF16},     {"q8_0", SL_TYPE_Q8_0, false, FTYPE_Q8_0},
        {"q4_0", SL_TYPE_Q4_0, false, FTYPE_Q4_0},     {"q4_1", SL_TYPE_Q4_1, false, FTYPE_Q4_1},
        {"q5_0", SL_TYPE_Q5_0, false, FTYPE_Q5_0},     {"q5_1", SL_TYPE_Q5_1, false, FTYPE_Q5_1},
        {"iq4_nl", SL_TYPE_IQ4_NL, false, FTYPE_IQ4_NL}, {"iq4_xs", SL_TYPE_IQ4_XS, false, FTYPE_IQ4_XS},
        {"q3_K", SL_TYPE_Q3_K, false, FTYPE_Q3_K_S},   {"q4_K", SL_TYPE_Q4_K, false, FTYPE_Q4_K_S},
        {"q5_K", SL_TYPE_Q5_K, false, FTYPE_Q5_K_S},   {"q6_K", SL_TYPE_Q6_K, true, FTYPE_Q6_K},
        {"q2_K", SL_TYPE_Q2_K, true, FTYPE_Q2_K},      {"q3_K_S", SL_TYPE_Q3_K, true, FTYPE_Q3_K_S},
        {"q3_K_M", SL_TYPE_Q3_K, true, FTYPE_Q3_K_M},  {"q3_K_L", SL_TYPE_Q3_K, true, FTYPE_Q3_K_L},
        {"q4_K_S", SL_TYPE_Q4_K, true, FTYPE_Q4_K_S},  {"q4_K_M", SL_TYPE_Q4_K, true, FTYPE_Q4_K_M},
        {"q5_K_S", SL_TYPE_Q5_K, true, FTYPE_Q5_K_S},  {"q5_K_M", SL_TYPE_Q5_K, true, FTYPE_Q5_K_M},
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

static sl_type attn_v_type(uint32_t ftype, sl_type base, int il, const cli_qmodel *m)
{
    switch (ftype) {
    case FTYPE_Q2_K: return m->n_gqa >= 4 ? SL_TYPE_Q4_K : SL_TYPE_Q3_K;
    case FTYPE_Q3_K_M: return il < 2 ? SL_TYPE_Q5_K : SL_TYPE_Q4_K;
    case FTYPE_Q3_K_L: return SL_TYPE_Q5_K;
    case FTYPE_Q4_K_M:
    case FTYPE_Q5_K_M: return use_more_bits(il, m->n_layer) ? SL_TYPE_Q6_K : base;
    case FTYPE_Q4_K_S: return il < 4 ? SL_TYPE_Q5_K : base;
    default: return base;
    }
}

static sl_type ffn_down_type(uint32_t ftype, sl_type base, int il, const cli_qmodel *m)
{
    switch (ftype) {
    case FTYPE_Q2_K: return SL_TYPE_Q3_K;
    case FTYPE_Q3_K_M: return il < m->n_layer / 16 ? SL_TYPE_Q5_K : SL_TYPE_Q4_K;
    case FTYPE_Q3_K_L: return SL_TYPE_Q5_K;
    case FTYPE_Q4_K_M:
    case FTYPE_Q5_K_M: return use_more_bits(il, m->n_layer) ? SL_TYPE_Q6_K : base;
    case FTYPE_Q4_K_S: return il < m->n_layer / 8 ? SL_TYPE_Q5_K : base;
    default: return base;
    }
}

static sl_type attn_output_type(uint32_t ftype, sl_type base)
{
    switch (ftype) {
    case FTYPE_Q2_K: return SL_TYPE_Q3_K;
    case FTYPE_Q3_K_M: return SL_TYPE_Q4_K;
    case FTYPE_Q3_K_L: return SL_TYPE_Q5_K;
    default: return base;
    }
}

static sl_type mix_type(const cli_qtype *q, const char *name, const cli_qmodel *m, int64_t n_in)
{
    if (!q->k_m_mix)
        return q->base;
    /* the output matrix (token_embd when tied): q6_K, q8_0 when its rows
     * are not whole 256-element blocks */
    if (strcmp(name, "output.weight") == 0 || (m->tied && strcmp(name, "token_embd.weight") == 0))
        return n_in % SL_QK_K ? SL_TYPE_Q8_0 : SL_TYPE_Q6_K;
    int il;
    if (sscanf(name, "blk.%d.", &il) != 1)
        return q->base;
    if (has_suffix(name, ".attn_v.weight"))
        return attn_v_type(q->ftype, q->base, il, m);
    if (has_suffix(name, ".ffn_down.weight"))
        return ffn_down_type(q->ftype, q->base, il, m);
    if (has_suffix(name, ".attn_output.weight"))
        return attn_output_type(q->ftype, q->base);
    return q->base;
}

/* llama.cpp's fallback for rows that are not whole 256-element blocks. */
static sl_type k_fallback(sl_type t)
{
    switch (t) {
    case SL_TYPE_Q2_K: case SL_TYPE_Q3_K: case SL_TYPE_IQ4_XS: return SL_TYPE_IQ4_NL;
    case SL_TYPE_Q4_K: return SL_TYPE_Q5_0;
    case SL_TYPE_Q5_K: return SL_TYPE_Q5_1;
    case SL_TYPE_Q6_K: return SL_TYPE_Q8_0;
    default: return t;
    }
}

sl_type cli_weight_type(const cli_qtype *q, const char *name, const cli_qmodel *m, int64_t n_in)
{
    sl_type t = mix_type(q, name, m, n_in);
    if (n_in % sl_type_block_elems(t) == 0)
        return t;
    t = k_fallback(t);
    if (n_in % sl_type_block_elems(t) == 0)
        return t;
    return SL_TYPE_F16; /* as llama.cpp, when even the fallback's block does not fit */
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
