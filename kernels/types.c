#include "kernels/types.h"

#include <string.h>
#include <strings.h>

typedef struct type_traits {
    const char *name;
    int64_t block_elems;
    size_t block_bytes;
} type_traits;

const int8_t sl_iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                    1,    13,   25,  38,  53,  69,  89,  113};

static const type_traits *traits_of(int type)
{
    static const type_traits f32 = {"f32", 1, 4};
    static const type_traits f16 = {"f16", 1, 2};
    static const type_traits bf16 = {"bf16", 1, 2};
    static const type_traits q4_0 = {"q4_0", SL_QK4_0, sizeof(sl_block_q4_0)};
    static const type_traits q4_1 = {"q4_1", SL_QK4_0, sizeof(sl_block_q4_1)};
    static const type_traits q5_0 = {"q5_0", SL_QK4_0, sizeof(sl_block_q5_0)};
    static const type_traits q5_1 = {"q5_1", SL_QK4_0, sizeof(sl_block_q5_1)};
    static const type_traits q8_0 = {"q8_0", SL_QK8_0, sizeof(sl_block_q8_0)};
    static const type_traits q2_k = {"q2_K", SL_QK_K, sizeof(sl_block_q2_K)};
    static const type_traits q3_k = {"q3_K", SL_QK_K, sizeof(sl_block_q3_K)};
    static const type_traits iq4_nl = {"iq4_nl", SL_QK4_0, sizeof(sl_block_iq4_nl)};
    static const type_traits iq4_xs = {"iq4_xs", SL_QK_K, sizeof(sl_block_iq4_xs)};
    static const type_traits q4_k = {"q4_K", SL_QK_K, sizeof(sl_block_q4_K)};
    static const type_traits q5_k = {"q5_K", SL_QK_K, sizeof(sl_block_q5_K)};
    static const type_traits q6_k = {"q6_K", SL_QK_K, sizeof(sl_block_q6_K)};
    switch (type) {
    case SL_TYPE_F32: return &f32;
    case SL_TYPE_F16: return &f16;
    case SL_TYPE_BF16: return &bf16;
    case SL_TYPE_Q4_0: return &q4_0;
    case SL_TYPE_Q4_1: return &q4_1;
    case SL_TYPE_Q5_0: return &q5_0;
    case SL_TYPE_Q5_1: return &q5_1;
    case SL_TYPE_Q8_0: return &q8_0;
    case SL_TYPE_Q2_K: return &q2_k;
    case SL_TYPE_Q3_K: return &q3_k;
    case SL_TYPE_IQ4_NL: return &iq4_nl;
    case SL_TYPE_IQ4_XS: return &iq4_xs;
    case SL_TYPE_Q4_K: return &q4_k;
    case SL_TYPE_Q5_K: return &q5_k;
    case SL_TYPE_Q6_K: return &q6_k;
    default: return NULL;
    }
}

bool sl_type_supported(int type)
{
    return traits_of(type) != NULL;
}

const char *sl_type_name(int type)
{
    const type_traits *tt = traits_of(type);
    return tt ? tt->name : "?";
}

int sl_type_from_name(const char *name)
{
    if (!name)
        return -1;
    for (int t = 0; t < SL_TYPE_COUNT_; t++) {
        const type_traits *tt = traits_of(t);
        if (tt && strcasecmp(tt->name, name) == 0)
            return t;
    }
    return -1;
}

int64_t sl_type_block_elems(sl_type type)
{
    const type_traits *tt = traits_of(type);
    return tt ? tt->block_elems : 0;
}

size_t sl_type_block_bytes(sl_type type)
{
    const type_traits *tt = traits_of(type);
    return tt ? tt->block_bytes : 0;
}

size_t sl_row_bytes(sl_type type, int64_t n)
{
    const type_traits *tt = traits_of(type);
    if (!tt || n < 0)
        return 0;
    return (size_t)(n / tt->block_elems) * tt->block_bytes;
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float sl_f16_to_f32(sl_f16 h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0) {
        /* Zero or subnormal: mant * 2^-24 is exact in float. */
        float mag = (float)mant * 0x1p-24f;
        return bits_f32(sign | f32_bits(mag));
    }
    if (exp == 31)
        return bits_f32(sign | 0x7f800000u | (mant << 13));
    return bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

/* Rounds m >> shift to nearest, ties to even. */
static uint32_t shift_round_even(uint32_t m, unsigned shift)
{
    uint32_t q = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1)))
        q++;
    return q;
}

sl_f16 sl_f32_to_f16(float f)
{
    uint32_t x = f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) /* NaN: keep it quiet and keep the top payload bits */
        return (sl_f16)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
    if (ax >= 0x477ff000u) /* >= 65520 (halfway past 65504) rounds to infinity */
        return (sl_f16)(sign | 0x7c00u);
    if (ax >= 0x38800000u) /* normal half: rebias exponent 127 -> 15 */
        return (sl_f16)(sign | shift_round_even(ax - 0x38000000u, 13));
    if (ax < 0x33000000u) /* below 2^-25 (half the smallest subnormal) */
        return (sl_f16)sign;
    /* Subnormal half in units of 2^-24; rounding up may reach the smallest
     * normal, whose bits follow on naturally. */
    uint32_t exp = ax >> 23;
    uint32_t mant = (ax & 0x7fffffu) | 0x800000u;
    return (sl_f16)(sign | shift_round_even(mant, 126 - exp));
}

float sl_bf16_to_f32(sl_bf16 h)
{
    return bits_f32((uint32_t)h << 16);
}

sl_bf16 sl_f32_to_bf16(float f)
{
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (sl_bf16)((x >> 16) | 0x40u); /* quiet NaN, never rounds to Inf */
    return (sl_bf16)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

/* Byte offsets of a block's fp16 scale fields; n of them. */
static int scale_fields(int type, size_t off[2])
{
    switch (type) {
    case SL_TYPE_Q4_0: case SL_TYPE_Q5_0: case SL_TYPE_Q8_0: case SL_TYPE_IQ4_NL: case SL_TYPE_IQ4_XS:
        off[0] = 0;
        return 1;
    case SL_TYPE_Q4_1: case SL_TYPE_Q5_1: case SL_TYPE_Q4_K: case SL_TYPE_Q5_K:
        off[0] = 0, off[1] = 2;
        return 2;
    case SL_TYPE_Q2_K:
        off[0] = offsetof(sl_block_q2_K, d), off[1] = offsetof(sl_block_q2_K, dmin);
        return 2;
    case SL_TYPE_Q3_K: off[0] = offsetof(sl_block_q3_K, d); return 1;
    case SL_TYPE_Q6_K: off[0] = offsetof(sl_block_q6_K, d); return 1;
    default: return 0;
    }
}

int64_t sl_find_bad_block(sl_type type, const void *data, size_t bytes)
{
    size_t off[2], bb = sl_type_block_bytes(type);
    int n = scale_fields(type, off);
    if (n == 0 || bb == 0)
        return -1;
    const uint8_t *p = data;
    size_t n_blocks = bytes / bb;
    for (size_t b = 0; b < n_blocks; b++, p += bb) {
        for (int i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + off[i], sizeof h);
            if ((h & 0x7c00u) == 0x7c00u) /* all-ones exponent: Inf or NaN */
                return (int64_t)b;
        }
    }
    return -1;
}
