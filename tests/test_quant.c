/* Type traits, f16/bf16 conversions, and every block format: hand-built
 * blocks decode to values worked out here from the documented layout, and
 * quantise-then-dequantise stays within error bounds that follow from each
 * format's step size. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels/quant.h"
#include "kernels/types.h"
#include "tests/test.h"

static const sl_type all_types[] = {SL_TYPE_F32,  SL_TYPE_F16,  SL_TYPE_BF16,   SL_TYPE_Q8_0,
                                    SL_TYPE_Q4_0, SL_TYPE_Q4_1, SL_TYPE_Q5_0,   SL_TYPE_Q5_1,
                                    SL_TYPE_Q2_K, SL_TYPE_Q3_K, SL_TYPE_Q4_K,   SL_TYPE_Q5_K,
                                    SL_TYPE_Q6_K, SL_TYPE_IQ4_NL, SL_TYPE_IQ4_XS};
#define N_TYPES (int)(sizeof all_types / sizeof all_types[0])

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd_u32(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

static double rnd_unit(void)
{
    return (rnd_u32() + 0.5) / 4294967296.0;
}

static float rnd_normal(void)
{
    return (float)(sqrt(-2 * log(rnd_unit())) * cos(2 * M_PI * rnd_unit()));
}

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---- traits ---- */

static void test_traits(void)
{
    CHECK(sl_type_block_elems(SL_TYPE_Q4_0) == 32 && sl_type_block_bytes(SL_TYPE_Q4_0) == 18);
    CHECK(sl_type_block_elems(SL_TYPE_Q8_0) == 32 && sl_type_block_bytes(SL_TYPE_Q8_0) == 34);
    CHECK(sl_type_block_elems(SL_TYPE_Q4_K) == 256 && sl_type_block_bytes(SL_TYPE_Q4_K) == 144);
    CHECK(sl_type_block_elems(SL_TYPE_Q5_K) == 256 && sl_type_block_bytes(SL_TYPE_Q5_K) == 176);
    CHECK(sl_type_block_elems(SL_TYPE_Q6_K) == 256 && sl_type_block_bytes(SL_TYPE_Q6_K) == 210);
    CHECK(sl_type_block_elems(SL_TYPE_BF16) == 1 && sl_type_block_bytes(SL_TYPE_BF16) == 2);
    CHECK(sl_row_bytes(SL_TYPE_F32, 7) == 28);
    CHECK(sl_row_bytes(SL_TYPE_Q4_K, 1024) == 4 * 144);
    CHECK(sl_row_bytes(SL_TYPE_Q4_0, 1152) == 36 * 18);
    CHECK(strcmp(sl_type_name(SL_TYPE_Q4_K), "q4_K") == 0);
    CHECK(strcmp(sl_type_name(SL_TYPE_BF16), "bf16") == 0);
    CHECK(sl_type_block_elems(SL_TYPE_Q4_1) == 32 && sl_type_block_bytes(SL_TYPE_Q4_1) == 20);
    CHECK(sl_type_block_elems(SL_TYPE_Q5_0) == 32 && sl_type_block_bytes(SL_TYPE_Q5_0) == 22);
    CHECK(sl_type_block_elems(SL_TYPE_Q5_1) == 32 && sl_type_block_bytes(SL_TYPE_Q5_1) == 24);
    CHECK(sl_type_block_elems(SL_TYPE_Q2_K) == 256 && sl_type_block_bytes(SL_TYPE_Q2_K) == 84);
    CHECK(sl_type_block_elems(SL_TYPE_Q3_K) == 256 && sl_type_block_bytes(SL_TYPE_Q3_K) == 110);
    CHECK(sl_type_block_elems(SL_TYPE_IQ4_NL) == 32 && sl_type_block_bytes(SL_TYPE_IQ4_NL) == 18);
    CHECK(sl_type_block_elems(SL_TYPE_IQ4_XS) == 256 && sl_type_block_bytes(SL_TYPE_IQ4_XS) == 136);
    CHECK(SL_TYPE_Q4_1 == 3 && SL_TYPE_Q5_0 == 6 && SL_TYPE_Q5_1 == 7 && SL_TYPE_Q2_K == 10 &&
          SL_TYPE_Q3_K == 11 && SL_TYPE_IQ4_NL == 20 && SL_TYPE_IQ4_XS == 23);
    CHECK(strcmp(sl_type_name(SL_TYPE_IQ4_XS), "iq4_xs") == 0);
    /* ids GGML has but this engine does not (Q8_1, IQ2_XXS) */
    CHECK(strcmp(sl_type_name(9), "?") == 0);
    CHECK(!sl_type_supported(9) && !sl_type_supported(16));
    CHECK(sl_type_from_name("Q4_K") == SL_TYPE_Q4_K);
    CHECK(sl_type_from_name("q8_0") == SL_TYPE_Q8_0);
    CHECK(sl_type_from_name("F32") == SL_TYPE_F32);
    CHECK(sl_type_from_name("q4_1") == SL_TYPE_Q4_1);
    CHECK(sl_type_from_name("IQ4_NL") == SL_TYPE_IQ4_NL);
    CHECK(sl_type_from_name("q8_1") == -1);
    CHECK(sl_type_from_name(NULL) == -1);
    CHECK(!sl_type_supported(-1) && !sl_type_supported(39));
    for (int i = 0; i < N_TYPES; i++) {
        CHECK(sl_type_supported(all_types[i]));
        CHECK(sl_type_from_name(sl_type_name(all_types[i])) == (int)all_types[i]);
    }
}

/* ---- f16 ---- */

/* Value of a finite half from its fields, computed independently in double. */
static double half_value(uint16_t h)
{
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e ? ldexp(1024 + m, e - 25) : ldexp(m, -24);
    return (h & 0x8000) ? -v : v;
}

static void test_f16_known(void)
{
    CHECK(sl_f16_to_f32(0x3c00) == 1.0f);
    CHECK(sl_f16_to_f32(0xc000) == -2.0f);
    CHECK(sl_f16_to_f32(0x7bff) == 65504.0f);
    CHECK(sl_f16_to_f32(0x0001) == 0x1p-24f);
    CHECK(sl_f16_to_f32(0x03ff) == 1023 * 0x1p-24f);
    CHECK(sl_f16_to_f32(0x0400) == 0x1p-14f);
    CHECK(isinf(sl_f16_to_f32(0x7c00)) && sl_f16_to_f32(0x7c00) > 0);
    CHECK(isinf(sl_f16_to_f32(0xfc00)) && sl_f16_to_f32(0xfc00) < 0);
    CHECK(isnan(sl_f16_to_f32(0x7e00)) && isnan(sl_f16_to_f32(0xfc01)));
    CHECK(sl_f16_to_f32(0x8000) == 0 && signbit(sl_f16_to_f32(0x8000)));

    CHECK(sl_f32_to_f16(1.0f) == 0x3c00);
    CHECK(sl_f32_to_f16(-0.0f) == 0x8000);
    CHECK(sl_f32_to_f16(1.0f + 0x1p-11f) == 0x3c00);     /* tie to even (down) */
    CHECK(sl_f32_to_f16(1.0f + 3 * 0x1p-11f) == 0x3c02); /* tie to even (up) */
    CHECK(sl_f32_to_f16(65519.0f) == 0x7bff);
    CHECK(sl_f32_to_f16(65520.0f) == 0x7c00);            /* tie past the max goes to Inf */
    CHECK(sl_f32_to_f16(-1e10f) == 0xfc00);
    CHECK(sl_f32_to_f16(INFINITY) == 0x7c00);
    CHECK(sl_f32_to_f16(0x1p-25f) == 0x0000);            /* tie with zero: even */
    CHECK(sl_f32_to_f16(nextafterf(0x1p-25f, 1)) == 0x0001);
    CHECK(sl_f32_to_f16(3 * 0x1p-25f) == 0x0002);
    CHECK(sl_f32_to_f16(0x1p-14f - 0x1p-25f) == 0x0400); /* subnormal rounds up to normal */
    CHECK(sl_f32_to_f16(1e-10f) == 0x0000);
    CHECK(sl_f32_to_f16(-1e-10f) == 0x8000);
    uint16_t nan = sl_f32_to_f16(NAN);
    CHECK((nan & 0x7c00) == 0x7c00 && (nan & 0x3ff) != 0);
    uint16_t nan2 = sl_f32_to_f16(float_of(0xff800001u)); /* payload only in low bits */
    CHECK((nan2 & 0x7c00) == 0x7c00 && (nan2 & 0x3ff) != 0 && (nan2 & 0x8000));
}

/* Every finite half: decodes to its value, round-trips, and the floats
 * just around each midpoint to the next half round the right way. */
static void test_f16_exhaustive(void)
{
    int bad_value = 0, bad_round = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00)
            continue;
        float f = sl_f16_to_f32((uint16_t)h);
        if ((double)f != half_value((uint16_t)h) || sl_f32_to_f16(f) != h)
            bad_value++;
        if ((h & 0x7fff) == 0x7bff)
            continue;
        double mid = (half_value((uint16_t)h) + half_value((uint16_t)(h + 1))) / 2;
        float midf = (float)mid; /* halves have 11 significant bits: exact */
        uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
        if (sl_f32_to_f16(midf) != even)
            bad_round++;
        float toward_next = nextafterf(midf, (h & 0x8000) ? -INFINITY : INFINITY);
        float toward_this = nextafterf(midf, 0);
        if (sl_f32_to_f16(toward_next) != h + 1 || sl_f32_to_f16(toward_this) != h)
            bad_round++;
    }
    CHECKF(bad_value == 0, "%d halves decode or round-trip wrong", bad_value);
    CHECKF(bad_round == 0, "%d midpoints round wrong", bad_round);
}

/* ---- bf16 ---- */

static void test_bf16(void)
{
    CHECK(sl_bf16_to_f32(0x3f80) == 1.0f);
    CHECK(sl_bf16_to_f32(0xc040) == -3.0f);
    CHECK(sl_f32_to_bf16(1.0f) == 0x3f80);
    CHECK(sl_f32_to_bf16(float_of(0x3f808000u)) == 0x3f80); /* tie to even (down) */
    CHECK(sl_f32_to_bf16(float_of(0x3f818000u)) == 0x3f82); /* tie to even (up) */
    CHECK(sl_f32_to_bf16(float_of(0x3f808001u)) == 0x3f81);
    CHECK(sl_f32_to_bf16(float_of(0x7f7fffffu)) == 0x7f80); /* FLT_MAX rounds to Inf */
    CHECK(sl_f32_to_bf16(float_of(0x00000001u)) == 0x0000); /* tiny subnormal */
    CHECK(sl_f32_to_bf16(float_of(0x00018000u)) == 0x0002); /* subnormal tie up to even */
    CHECK(sl_f32_to_bf16(-INFINITY) == 0xff80);
    uint16_t nan = sl_f32_to_bf16(float_of(0x7f800001u)); /* payload would round away */
    CHECK((nan & 0x7f80) == 0x7f80 && (nan & 0x7f) != 0);
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7f80) == 0x7f80)
            continue;
        float f = sl_bf16_to_f32((uint16_t)h);
        if (bits_of(f) != h << 16 || sl_f32_to_bf16(f) != h)
            bad++;
        uint32_t mid = (h << 16) | 0x8000u; /* halfway to the next bf16 */
        uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
        if (sl_f32_to_bf16(float_of(mid)) != even || sl_f32_to_bf16(float_of(mid + 1)) != h + 1 ||
            sl_f32_to_bf16(float_of(mid - 1)) != h)
            bad++;
    }
    CHECKF(bad == 0, "%d bf16 patterns convert wrong", bad);
}

/* ---- hand-built blocks ---- */

static void check_decodes(sl_type type, const void *block, const double *expect, int n,
                          const char *what)
{
    float got[256];
    sl_dequantize_row(type, block, got, n);
    int bad = 0;
    for (int i = 0; i < n; i++) {
        if ((double)got[i] != expect[i]) {
            if (bad++ < 4)
                fprintf(stderr, "%s: element %d = %g, want %g\n", what, i, got[i], expect[i]);
        }
    }
    CHECKF(bad == 0, "%s: %d elements wrong", what, bad);
}

static void test_q4_0_block(void)
{
    sl_block_q4_0 b;
    b.d = 0x3800; /* 0.5 */
    double want[32];
    for (int j = 0; j < 16; j++) {
        int lo = j, hi = 15 - j;
        b.qs[j] = (uint8_t)(lo | hi << 4);
        want[j] = 0.5 * (lo - 8);
        want[j + 16] = 0.5 * (hi - 8);
    }
    check_decodes(SL_TYPE_Q4_0, &b, want, 32, "q4_0 block");
}

static void test_q8_0_block(void)
{
    sl_block_q8_0 b;
    b.d = 0xb400; /* -0.25 */
    double want[32];
    for (int j = 0; j < 32; j++) {
        b.qs[j] = (int8_t)(j * 8 - 128);
        want[j] = -0.25 * (j * 8 - 128);
    }
    check_decodes(SL_TYPE_Q8_0, &b, want, 32, "q8_0 block");
}

/* 6-bit scales and mins chosen to exercise both halves of the 12-byte
 * packing, including their top two bits. */
static const int k_sc[8] = {1, 7, 63, 0, 33, 17, 48, 62};
static const int k_mn[8] = {0, 3, 10, 63, 21, 40, 2, 55};

/* Bytes 0-3: scales 0-3 (low 6 bits) and top 2 bits of scales 4-7;
 * bytes 4-7: mins 0-3 and top 2 bits of mins 4-7; bytes 8-11: low nibble
 * scale j+4, high nibble min j+4. */
static void pack_k_scales(uint8_t out[12])
{
    for (int j = 0; j < 4; j++) {
        out[j] = (uint8_t)(k_sc[j] | (k_sc[j + 4] >> 4) << 6);
        out[j + 4] = (uint8_t)(k_mn[j] | (k_mn[j + 4] >> 4) << 6);
        out[j + 8] = (uint8_t)((k_sc[j + 4] & 15) | (k_mn[j + 4] & 15) << 4);
    }
}

static void test_q4_K_block(void)
{
    sl_block_q4_K b;
    memset(&b, 0, sizeof b);
    b.d = 0x4000;    /* 2.0 */
    b.dmin = 0x3800; /* 0.5 */
    pack_k_scales(b.scales);
    double want[256];
    for (int e = 0; e < 256; e++) {
        int sub = e / 32, l = e % 32, q = (e * 7 + 3) % 16;
        /* 64-element chunk sub/2: first 32 in low nibbles, next 32 in high. */
        uint8_t *byte = &b.qs[32 * (sub / 2) + l];
        *byte |= (uint8_t)((sub & 1) ? q << 4 : q);
        want[e] = 2.0 * k_sc[sub] * q - 0.5 * k_mn[sub];
    }
    check_decodes(SL_TYPE_Q4_K, &b, want, 256, "q4_K block");
}

static void test_q5_K_block(void)
{
    sl_block_q5_K b;
    memset(&b, 0, sizeof b);
    b.d = 0x3c00;    /* 1.0 */
    b.dmin = 0x4400; /* 4.0 */
    pack_k_scales(b.scales);
    double want[256];
    for (int e = 0; e < 256; e++) {
        int sub = e / 32, l = e % 32, q = (e * 13 + 5) % 32;
        uint8_t *byte = &b.qs[32 * (sub / 2) + l];
        *byte |= (uint8_t)((sub & 1) ? (q & 15) << 4 : (q & 15));
        b.qh[l] |= (uint8_t)((q >> 4) << sub); /* fifth bit: bit `sub` of qh[l] */
        want[e] = 1.0 * k_sc[sub] * q - 4.0 * k_mn[sub];
    }
    check_decodes(SL_TYPE_Q5_K, &b, want, 256, "q5_K block");
}

static void test_q6_K_block(void)
{
    sl_block_q6_K b;
    memset(&b, 0, sizeof b);
    b.d = 0x3400; /* 0.25 */
    static const int sc[16] = {1, -1, 127, -128, 5, 0, 64, -7, 33, 2, -100, 9, 11, -3, 50, 77};
    for (int g = 0; g < 16; g++)
        b.scales[g] = (int8_t)sc[g];
    double want[256];
    for (int e = 0; e < 256; e++) {
        /* Element e: 128-element half n, quadrant k of 32, position l.
         * Quadrants 0,1 in low nibbles of ql[l], ql[l+32]; 2,3 in the high
         * nibbles; the top two bits in bits 2k..2k+1 of qh[l]; scale index
         * 8n + 2k + l/16. */
        int n = e / 128, k = (e % 128) / 32, l = e % 32;
        int q = (e * 11 + 7) % 64;
        uint8_t *lo = &b.ql[64 * n + l + 32 * (k & 1)];
        *lo |= (uint8_t)((k >> 1) ? (q & 15) << 4 : (q & 15));
        b.qh[32 * n + l] |= (uint8_t)((q >> 4) << (2 * k));
        want[e] = 0.25 * sc[8 * n + 2 * k + l / 16] * (q - 32);
    }
    check_decodes(SL_TYPE_Q6_K, &b, want, 256, "q6_K block");
}

/* Q4_1 / Q5_0 / Q5_1 / IQ4_NL: element j of 0..15 is the low nibble of
 * qs[j], element j + 16 the high one; Q5_* take a fifth bit from bit j of
 * the little-endian 32 bits of qh. */
static void test_q4_1_q5_blocks(void)
{
    double want[32];
    sl_block_q4_1 b41;
    b41.d = 0x3800;  /* 0.5 */
    b41.m = 0xbc00;  /* -1.0 */
    for (int j = 0; j < 16; j++) {
        b41.qs[j] = (uint8_t)(j | (15 - j) << 4);
        want[j] = 0.5 * j - 1.0;
        want[j + 16] = 0.5 * (15 - j) - 1.0;
    }
    check_decodes(SL_TYPE_Q4_1, &b41, want, 32, "q4_1 block");

    /* fifth bits: elements 0, 3, 17, 31 (bits 0, 3, 17, 31 of qh) */
    static const uint8_t qh[4] = {0x09, 0x00, 0x02, 0x80};
    sl_block_q5_0 b50;
    sl_block_q5_1 b51;
    b50.d = b51.d = 0x4000; /* 2.0 */
    b51.m = 0x3c00;         /* 1.0 */
    memcpy(b50.qh, qh, 4);
    memcpy(b51.qh, qh, 4);
    double want1[32];
    for (int j = 0; j < 16; j++) {
        b50.qs[j] = b51.qs[j] = (uint8_t)((j * 5 % 16) | (j * 3 % 16) << 4);
        int e0 = j, e1 = j + 16;
        int q0 = j * 5 % 16 + ((e0 == 0 || e0 == 3) ? 16 : 0);
        int q1 = j * 3 % 16 + ((e1 == 17 || e1 == 31) ? 16 : 0);
        want[e0] = 2.0 * (q0 - 16), want[e1] = 2.0 * (q1 - 16);
        want1[e0] = 2.0 * q0 + 1.0, want1[e1] = 2.0 * q1 + 1.0;
    }
    check_decodes(SL_TYPE_Q5_0, &b50, want, 32, "q5_0 block");
    check_decodes(SL_TYPE_Q5_1, &b51, want1, 32, "q5_1 block");
}

static const int k_iq4[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

static void test_iq4_blocks(void)
{
    sl_block_iq4_nl nl;
    nl.d = 0x3400; /* 0.25 */
    double want[256];
    for (int j = 0; j < 16; j++) {
        nl.qs[j] = (uint8_t)(j | (15 - j) << 4);
        want[j] = 0.25 * k_iq4[j];
        want[j + 16] = 0.25 * k_iq4[15 - j];
    }
    check_decodes(SL_TYPE_IQ4_NL, &nl, want, 32, "iq4_nl block");

    /* six-bit scales 0, 63, 32, 1, 40, 17, 31, 50: low nibbles two a byte
     * in scales_l, top two bits at bits 2j of scales_h */
    static const int ls[8] = {0, 63, 32, 1, 40, 17, 31, 50};
    sl_block_iq4_xs xs;
    memset(&xs, 0, sizeof xs);
    xs.d = 0x3800; /* 0.5 */
    for (int j = 0; j < 8; j++) {
        xs.scales_l[j / 2] |= (uint8_t)((ls[j] & 15) << (4 * (j % 2)));
        xs.scales_h |= (uint16_t)((ls[j] >> 4) << (2 * j));
        for (int l = 0; l < 16; l++) {
            int lo = (l + j) % 16, hi = (3 * l + j) % 16;
            xs.qs[16 * j + l] = (uint8_t)(lo | hi << 4);
            want[32 * j + l] = 0.5 * (ls[j] - 32) * k_iq4[lo];
            want[32 * j + l + 16] = 0.5 * (ls[j] - 32) * k_iq4[hi];
        }
    }
    check_decodes(SL_TYPE_IQ4_XS, &xs, want, 256, "iq4_xs block");
}

/* Q2_K and Q3_K: element e = 128 h + 32 k + l (l < 32) keeps its 2 low
 * bits at bits 2k of qs[32 h + l]; its 16-element group e / 16 has a
 * scale. Q3_K's third bit is bit e / 32 of hmask[e % 32], and a clear bit
 * subtracts 4. */
static void test_q2_q3_K_blocks(void)
{
    sl_block_q2_K b2;
    sl_block_q3_K b3;
    memset(&b2, 0, sizeof b2);
    memset(&b3, 0, sizeof b3);
    b2.d = 0x4000;    /* 2.0 */
    b2.dmin = 0x3800; /* 0.5 */
    b3.d = 0xb800;    /* -0.5 */
    static const int sc3[16] = {0, 63, 32, 31, 1, 47, 16, 33, 5, 60, 12, 40, 20, 7, 55, 34};
    for (int g = 0; g < 16; g++) {
        b2.scales[g] = (uint8_t)((g * 7 % 16) | ((15 - g) << 4));
        /* Q3_K: low 4 bits in nibbles of bytes 0-7, top 2 at bits 2 (g / 4) of byte 8 + g % 4 */
        b3.scales[g % 8] |= (uint8_t)((sc3[g] & 15) << (4 * (g / 8)));
        b3.scales[8 + g % 4] |= (uint8_t)((sc3[g] >> 4) << (2 * (g / 4)));
    }
    double want2[256], want3[256];
    for (int e = 0; e < 256; e++) {
        int h = e / 128, k = (e % 128) / 32, l = e % 32, g = e / 16;
        int q = (e * 5 + 1) % 4, hb = (e * 7 / 3) % 2;
        b2.qs[32 * h + l] |= (uint8_t)(q << (2 * k));
        b3.qs[32 * h + l] |= (uint8_t)(q << (2 * k));
        b3.hmask[e % 32] |= (uint8_t)(hb << (e / 32));
        want2[e] = 2.0 * (g * 7 % 16) * q - 0.5 * (15 - g);
        want3[e] = -0.5 * (sc3[g] - 32) * (q - (hb ? 0 : 4));
    }
    check_decodes(SL_TYPE_Q2_K, &b2, want2, 256, "q2_K block");
    check_decodes(SL_TYPE_Q3_K, &b3, want3, 256, "q3_K block");
}

/* ---- round trips ---- */

static void fill_row(float *x, int64_t n)
{
    /* Normal data with a scale that varies between blocks, as weights do. */
    for (int64_t i = 0; i < n; i += 32) {
        float s = (float)exp(2 * rnd_unit() - 1);
        for (int64_t j = i; j < i + 32 && j < n; j++)
            x[j] = s * rnd_normal();
    }
}

static double rms_rel_err(const float *x, const float *y, int64_t n)
{
    double se = 0, sx = 0;
    for (int64_t i = 0; i < n; i++) {
        se += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
        sx += (double)x[i] * x[i];
    }
    return sqrt(se / sx);
}

/* Per-block maximum error for the round-to-nearest formats with a known
 * step: Q8_0 uses d = amax/127 and rounds, so |err| <= d/2 plus the f16
 * rounding of d (|q| <= 127 times 2^-11 relative); Q4_0 uses d = amax/8
 * and rounds except that the value at +8 d clips to 7, so |err| <= d, again
 * plus 8 * 2^-11 d for the f16 scale. */
static void check_block_max_err(sl_type type, const float *x, const float *y, int64_t n)
{
    int bad = 0;
    for (int64_t i = 0; i < n; i += 32) {
        double amax = 0, emax = 0;
        for (int j = 0; j < 32; j++) {
            amax = fmax(amax, fabs(x[i + j]));
            emax = fmax(emax, fabs((double)x[i + j] - y[i + j]));
        }
        double bound = type == SL_TYPE_Q8_0 ? amax / 127 * (0.5 + 127 * 0x1p-11)
                                            : amax / 8 * (1 + 8 * 0x1p-11);
        if (emax > bound * (1 + 1e-6))
            bad++;
    }
    CHECKF(bad == 0, "%s: %d blocks exceed the max-error bound", sl_type_name(type), bad);
}

/* RMS relative error bounds for N(0, s^2) data in 32-element blocks.
 * Rounding with step D gives RMS error D/sqrt(12); with 32 normal samples the
 * absolute max is about 2.4 s and the range about 4.1 s, so:
 *   Q8_0: D = 2.4 s/127           -> 0.0055  (bound 0.008)
 *   Q4_0: D = 2.4 s/8             -> 0.087   (bound 0.11)
 *   Q4_K: D = 4.1 s/15 (fit)      -> 0.079, the weighted fit and 6-bit
 *         sub-scales land near 0.07 (bound 0.09)
 *   Q5_K: D = 4.1 s/31            -> 0.038   (bound 0.05)
 *   Q6_K: D = 2.2 s/32 on 16 elems-> 0.020, fitting the scale helps (0.025)
 *   Q4_1: D = 4.1 s/15            -> 0.079   (bound 0.10)
 *   Q5_0: D = 2.4 s/16            -> 0.043   (bound 0.055)
 *   Q5_1: D = 4.1 s/31            -> 0.038   (bound 0.05)
 *   IQ4_NL / IQ4_XS: a 16-level grid denser near 0, fitted: about 4-bit
 *         uniform's error, ~0.08 (bound 0.10)
 *   Q3_K: D = 2 * 2.0 s/8 on 16 elems (max of 16 normals ~2.0 s)
 *                                 -> 0.144   (bound 0.20)
 *   Q2_K: D = 3.5 s/3 on 16 elems -> 0.34, the fitted min and scale
 *         bring it lower (bound 0.40)
 *   F16 / BF16: relative rounding 2^-11 / 2^-8 at most, RMS about a third. */
static double rms_bound(sl_type type)
{
    switch (type) {
    case SL_TYPE_F32: return 0;
    case SL_TYPE_F16: return 0x1p-11;
    case SL_TYPE_BF16: return 0x1p-8;
    case SL_TYPE_Q8_0: return 0.008;
    case SL_TYPE_Q4_0: return 0.11;
    case SL_TYPE_Q4_K: return 0.09;
    case SL_TYPE_Q5_K: return 0.05;
    case SL_TYPE_Q6_K: return 0.025;
    case SL_TYPE_Q4_1: return 0.10;
    case SL_TYPE_Q5_0: return 0.055;
    case SL_TYPE_Q5_1: return 0.05;
    case SL_TYPE_IQ4_NL: return 0.10;
    case SL_TYPE_IQ4_XS: return 0.10;
    case SL_TYPE_Q3_K: return 0.20;
    case SL_TYPE_Q2_K: return 0.40;
    default: return 0;
    }
}

static void test_round_trips(void)
{
    enum { N = 256 * 32 };
    static float x[N], y[N];
    static uint8_t q[N * 4];
    for (int ti = 0; ti < N_TYPES; ti++) {
        sl_type type = all_types[ti];
        fill_row(x, N);
        sl_quantize_row(type, x, q, N);
        sl_dequantize_row(type, q, y, N);
        double err = rms_rel_err(x, y, N);
        fprintf(stderr, "%-5s rms relative error %.5f (bound %.5f)\n", sl_type_name(type), err,
                rms_bound(type));
        CHECKF(err <= rms_bound(type), "%s: rms relative error %g > %g", sl_type_name(type), err,
               rms_bound(type));
        if (type == SL_TYPE_Q8_0 || type == SL_TYPE_Q4_0)
            check_block_max_err(type, x, y, N);
        if (type == SL_TYPE_F16 || type == SL_TYPE_BF16) {
            double rel = type == SL_TYPE_F16 ? 0x1p-11 : 0x1p-8;
            int bad = 0;
            for (int i = 0; i < N; i++)
                bad += fabs((double)x[i] - y[i]) > rel * fabs(x[i]);
            CHECKF(bad == 0, "%s: %d elements beyond half an ulp", sl_type_name(type), bad);
        }
        /* Zero input stays exactly zero; a constant block is close. */
        memset(x, 0, sizeof x);
        sl_quantize_row(type, x, q, 256);
        sl_dequantize_row(type, q, y, 256);
        int nonzero = 0;
        for (int i = 0; i < 256; i++)
            nonzero += y[i] != 0;
        CHECKF(nonzero == 0, "%s: zeros decode to %d non-zeros", sl_type_name(type), nonzero);
        for (int i = 0; i < 256; i++)
            x[i] = 0.75f;
        sl_quantize_row(type, x, q, 256);
        sl_dequantize_row(type, q, y, 256);
        CHECKF(rms_rel_err(x, y, 256) <= 0.01, "%s: constant row error %g", sl_type_name(type),
               rms_rel_err(x, y, 256));
    }
}

/* A block quantised by us decodes to what it encodes: requantising its own
 * output is stable for the symmetric formats (a fixed point up to scale
 * rounding), which catches quantisers and dequantisers disagreeing on
 * layout. */
static void test_requantise_stable(void)
{
    static const sl_type types[] = {SL_TYPE_Q8_0, SL_TYPE_Q4_0, SL_TYPE_Q4_K, SL_TYPE_Q5_K,
                                    SL_TYPE_Q6_K, SL_TYPE_Q5_0, SL_TYPE_Q4_1, SL_TYPE_Q5_1,
                                    SL_TYPE_IQ4_NL};
    enum { N = 256 * 4 };
    static float x[N], y1[N], y2[N];
    static uint8_t q[N * 2];
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        fill_row(x, N);
        sl_quantize_row(types[ti], x, q, N);
        sl_dequantize_row(types[ti], q, y1, N);
        sl_quantize_row(types[ti], y1, q, N);
        sl_dequantize_row(types[ti], q, y2, N);
        double drift = rms_rel_err(y1, y2, N);
        CHECKF(drift < rms_bound(types[ti]) / 4, "%s: requantising drifts by %g",
               sl_type_name(types[ti]), drift);
    }
}

/* ---- ranges ---- */

static void test_ranges(void)
{
    enum { N = 256 * 3 };
    static float x[N], full[N], part[N + 1];
    static uint8_t q[N * 4];
    static const int64_t spans[][2] = {{0, N},  {0, 1},   {5, 27},  {31, 2},  {100, 300},
                                       {255, 2}, {256, 256}, {700, 68}, {767, 1}, {1, 766}};
    for (int ti = 0; ti < N_TYPES; ti++) {
        sl_type type = all_types[ti];
        fill_row(x, N);
        sl_quantize_row(type, x, q, N);
        sl_dequantize_row(type, q, full, N);
        for (size_t s = 0; s < sizeof spans / sizeof spans[0]; s++) {
            int64_t i0 = spans[s][0], n = spans[s][1];
            part[n] = 12345.0f; /* guard: nothing past n is written */
            sl_dequantize_range(type, q, part, i0, n);
            CHECKF(memcmp(part, full + i0, (size_t)n * sizeof(float)) == 0 && part[n] == 12345.0f,
                   "%s: range [%lld, +%lld) differs from the full row", sl_type_name(type),
                   (long long)i0, (long long)n);
        }
    }
}

/* ---- corrupt scales ---- */

static void test_bad_blocks(void)
{
    static const sl_type types[] = {SL_TYPE_Q4_0, SL_TYPE_Q4_1, SL_TYPE_Q5_0, SL_TYPE_Q5_1,
                                    SL_TYPE_Q8_0, SL_TYPE_Q2_K, SL_TYPE_Q3_K, SL_TYPE_Q4_K,
                                    SL_TYPE_Q5_K, SL_TYPE_Q6_K, SL_TYPE_IQ4_NL, SL_TYPE_IQ4_XS};
    enum { N = 256 * 4 };
    static float x[N];
    static uint8_t q[N * 2];
    fill_row(x, N);
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        sl_type t = types[ti];
        size_t bytes = sl_row_bytes(t, N), bb = sl_type_block_bytes(t);
        sl_quantize_row(t, x, q, N);
        CHECKF(sl_find_bad_block(t, q, bytes) == -1, "%s: a quantised row has a bad scale",
               sl_type_name(t));
        /* every byte of a block, set to an Inf/NaN half in turn: found
         * exactly when it is (part of) a scale, at that block */
        int64_t last = (int64_t)(bytes / bb) - 1;
        int found = 0;
        for (size_t i = 0; i + 1 < bb; i++) {
            uint8_t save[2] = {q[last * bb + i], q[last * bb + i + 1]};
            q[last * bb + i] = 0x00, q[last * bb + i + 1] = 0x7c; /* +Inf */
            int64_t bad = sl_find_bad_block(t, q, bytes);
            CHECK(bad == -1 || bad == last);
            found += bad == last;
            q[last * bb + i] = save[0], q[last * bb + i + 1] = save[1];
        }
        CHECKF(found >= 1, "%s: an infinite scale goes unnoticed", sl_type_name(t));
        /* a scale field shifted by one byte still lands on a scale for the
         * types with two adjacent halves; never more than four offsets */
        CHECKF(found <= 4, "%s: %d byte offsets count as scales", sl_type_name(t), found);
    }
    CHECK(sl_find_bad_block(SL_TYPE_F16, q, 64) == -1);
}

int main(void)
{
    test_traits();
    test_f16_known();
    test_f16_exhaustive();
    test_bf16();
    test_q4_0_block();
    test_q8_0_block();
    test_q4_K_block();
    test_q5_K_block();
    test_q6_K_block();
    test_q4_1_q5_blocks();
    test_iq4_blocks();
    test_q2_q3_K_blocks();
    test_round_trips();
    test_requantise_stable();
    test_ranges();
    test_bad_blocks();
    return test_finish("test_quant");
}
