/* Tensor element types and their block layouts.
 *
 * The numeric values are GGML's type ids as stored in GGUF tensor infos, and
 * every block struct is byte-for-byte llama.cpp's layout, so quantised GGUF
 * files written by llama.cpp load unchanged and ours load there. */
#ifndef SLUICE_TYPES_H
#define SLUICE_TYPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum sl_type {
    SL_TYPE_F32 = 0,
    SL_TYPE_F16 = 1,
    SL_TYPE_Q4_0 = 2,
    SL_TYPE_Q4_1 = 3,
    SL_TYPE_Q5_0 = 6,
    SL_TYPE_Q5_1 = 7,
    SL_TYPE_Q8_0 = 8,
    SL_TYPE_Q2_K = 10,
    SL_TYPE_Q3_K = 11,
    SL_TYPE_Q4_K = 12,
    SL_TYPE_Q5_K = 13,
    SL_TYPE_Q6_K = 14,
    SL_TYPE_IQ4_NL = 20,
    SL_TYPE_IQ4_XS = 23,
    SL_TYPE_BF16 = 30,
    SL_TYPE_COUNT_ = 40 /* one past the largest GGML id we may be shown */
} sl_type;

#define SL_QK4_0 32
#define SL_QK8_0 32
#define SL_QK_K 256
#define SL_K_SCALE_SIZE 12

typedef uint16_t sl_f16;  /* IEEE half, stored bits */
typedef uint16_t sl_bf16; /* bfloat16, stored bits */

typedef struct {
    sl_f16 d;                 /* scale */
    uint8_t qs[SL_QK4_0 / 2]; /* element j in low nibble of qs[j], element j+16 in high nibble */
} sl_block_q4_0;

typedef struct {
    sl_f16 d;                 /* scale */
    sl_f16 m;                 /* min: element = d * q + m */
    uint8_t qs[SL_QK4_0 / 2]; /* nibbles as in Q4_0 */
} sl_block_q4_1;

typedef struct {
    sl_f16 d;
    uint8_t qh[4];            /* fifth bit of element j in bit j (little-endian u32) */
    uint8_t qs[SL_QK4_0 / 2]; /* low 4 bits, as Q4_0's nibbles; element = d * (q - 16) */
} sl_block_q5_0;

typedef struct {
    sl_f16 d;
    sl_f16 m;                 /* element = d * q + m */
    uint8_t qh[4];
    uint8_t qs[SL_QK4_0 / 2];
} sl_block_q5_1;

typedef struct {
    sl_f16 d;
    int8_t qs[SL_QK8_0];
} sl_block_q8_0;

typedef struct {
    uint8_t scales[SL_QK_K / 16];      /* per 16 elements: scale in low nibble, min in high */
    uint8_t qs[SL_QK_K / 4];           /* 2-bit quants */
    sl_f16 d;                          /* super-block scale for the scales */
    sl_f16 dmin;                       /* super-block scale for the mins */
} sl_block_q2_K;

typedef struct {
    uint8_t hmask[SL_QK_K / 8];        /* third bit of each quant (set: no -4) */
    uint8_t qs[SL_QK_K / 4];           /* low 2 bits */
    uint8_t scales[12];                /* 16 6-bit scales, offset by 32 */
    sl_f16 d;
} sl_block_q3_K;

typedef struct {
    sl_f16 d;                          /* super-block scale for the 6-bit scales */
    sl_f16 dmin;                       /* super-block scale for the 6-bit mins */
    uint8_t scales[SL_K_SCALE_SIZE];   /* 8 scales + 8 mins, 6 bits each */
    uint8_t qs[SL_QK_K / 2];           /* 4-bit quants */
} sl_block_q4_K;

typedef struct {
    sl_f16 d;
    sl_f16 dmin;
    uint8_t scales[SL_K_SCALE_SIZE];
    uint8_t qh[SL_QK_K / 8];           /* fifth bit of each quant */
    uint8_t qs[SL_QK_K / 2];           /* low 4 bits */
} sl_block_q5_K;

typedef struct {
    uint8_t ql[SL_QK_K / 2];           /* low 4 bits */
    uint8_t qh[SL_QK_K / 4];           /* high 2 bits */
    int8_t scales[SL_QK_K / 16];       /* 8-bit scales of 16-element groups */
    sl_f16 d;
} sl_block_q6_K;

/* The non-linear 4-bit grid of IQ4_NL and IQ4_XS (llama.cpp's kvalues_iq4nl). */
extern const int8_t sl_iq4nl_values[16];

typedef struct {
    sl_f16 d;
    uint8_t qs[SL_QK4_0 / 2]; /* indices into sl_iq4nl_values, nibbles as in Q4_0 */
} sl_block_iq4_nl;

typedef struct {
    sl_f16 d;
    uint16_t scales_h;        /* top 2 bits of the eight 6-bit sub-block scales */
    uint8_t scales_l[SL_QK_K / 64]; /* low 4 bits, two sub-blocks a byte */
    uint8_t qs[SL_QK_K / 2];  /* per 32: nibbles as in IQ4_NL */
} sl_block_iq4_xs;

_Static_assert(sizeof(sl_block_q4_0) == 18, "q4_0 layout");
_Static_assert(sizeof(sl_block_q4_1) == 20, "q4_1 layout");
_Static_assert(sizeof(sl_block_q5_0) == 22, "q5_0 layout");
_Static_assert(sizeof(sl_block_q5_1) == 24, "q5_1 layout");
_Static_assert(sizeof(sl_block_q2_K) == 84, "q2_K layout");
_Static_assert(sizeof(sl_block_q3_K) == 110, "q3_K layout");
_Static_assert(sizeof(sl_block_iq4_nl) == 18, "iq4_nl layout");
_Static_assert(sizeof(sl_block_iq4_xs) == 136, "iq4_xs layout");
_Static_assert(sizeof(sl_block_q8_0) == 34, "q8_0 layout");
_Static_assert(sizeof(sl_block_q4_K) == 144, "q4_K layout");
_Static_assert(sizeof(sl_block_q5_K) == 176, "q5_K layout");
_Static_assert(sizeof(sl_block_q6_K) == 210, "q6_K layout");

/* True for the types this engine can load and compute with. */
bool sl_type_supported(int type);
/* Lower-case name ("q4_0", "bf16", "q4_K"); "?" for unknown ids. */
const char *sl_type_name(int type);
/* Parses a name case-insensitively ("Q4_K", "q8_0", "f32"); -1 if unknown. */
int sl_type_from_name(const char *name);
/* Elements per block (1 for F32/F16/BF16). */
int64_t sl_type_block_elems(sl_type type);
/* Bytes per block. */
size_t sl_type_block_bytes(sl_type type);
/* Bytes of a row of n elements; n must be a multiple of the block size. */
size_t sl_row_bytes(sl_type type, int64_t n);

/* Checks the fp16 scales of the whole blocks in bytes of data: returns the
 * index of the first block with a scale that is infinite or NaN (a corrupt
 * file: no quantiser writes one), or -1. Float types have none to check. */
int64_t sl_find_bad_block(sl_type type, const void *data, size_t bytes);

/* Scalar conversions (exact round-to-nearest-even for the narrowing ones). */
float sl_f16_to_f32(sl_f16 h);
sl_f16 sl_f32_to_f16(float f);
float sl_bf16_to_f32(sl_bf16 h);
sl_bf16 sl_f32_to_bf16(float f);

#endif
