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
    SL_TYPE_Q8_0 = 8,
    SL_TYPE_Q4_K = 12,
    SL_TYPE_Q5_K = 13,
    SL_TYPE_Q6_K = 14,
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
    sl_f16 d;
    int8_t qs[SL_QK8_0];
} sl_block_q8_0;

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

_Static_assert(sizeof(sl_block_q4_0) == 18, "q4_0 layout");
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

/* Scalar conversions (exact round-to-nearest-even for the narrowing ones). */
float sl_f16_to_f32(sl_f16 h);
sl_f16 sl_f32_to_f16(float f);
float sl_bf16_to_f32(sl_bf16 h);
sl_bf16 sl_f32_to_bf16(float f);

#endif
