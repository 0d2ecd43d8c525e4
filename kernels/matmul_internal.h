/* What each SIMD matmul path hands the driver in matmul.c. */
#ifndef SLUICE_MATMUL_INTERNAL_H
#define SLUICE_MATMUL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <stdbool.h>

#include "kernels/q8act.h"
#include "kernels/types.h"

/* Computes y[t * ldy + r] = W[r] . x[t] for a fixed tile of rows r (rows are
 * row_bytes apart from w) and tokens t (n_in floats apart from x). Every tile
 * shape of a path runs the same per-(row, token) sequence of operations, so
 * the driver may group rows and tokens however it likes without changing a
 * single bit of y. */
typedef void (*sl_mm_tile_fn)(const uint8_t *w, size_t row_bytes, int64_t n_in,
                              const float *x, float *y, int64_t ldy);

typedef struct sl_mm_kernel {
    sl_mm_tile_fn batch;     /* batch_rows rows x batch_toks tokens */
    sl_mm_tile_fn batch_row; /* 1 row x batch_toks tokens */
    sl_mm_tile_fn single;    /* single_rows rows x 1 token */
    sl_mm_tile_fn one;       /* 1 row x 1 token */
    int batch_rows, batch_toks, single_rows;
} sl_mm_kernel;

/* NULL when the path has no kernel for wtype (or was not compiled in). */
const sl_mm_kernel *sl_mm_kernel_avx2(sl_type wtype);
const sl_mm_kernel *sl_mm_kernel_avx512(sl_type wtype);

/* The integer path (8-bit activations): rows [o0, o1) of W for every token
 * of a. Same contract as the tiles above: a (row, token) result does not
 * depend on which rows or tokens share the call. */
typedef void (*sl_mmq_fn)(const uint8_t *w, size_t row_bytes, int64_t o0, int64_t o1,
                          const sl_q8act *a, float *y, int64_t ldy);

/* Weight types the integer path takes. */
bool sl_mmq_supports(sl_type wtype);
sl_mmq_fn sl_mmq_ref(sl_type wtype);
/* AVX2 (maddubs) and AVX-512 VNNI (vpdpbusd on 256-bit vectors). */
sl_mmq_fn sl_mmq_avx2(sl_type wtype);
sl_mmq_fn sl_mmq_avx512(sl_type wtype);

/* Weights repacked 16 rows at a time (see matmul_r16_avx512.c for the
 * layout): bytes per group of 16 rows and block of 32. */
#define SL_R16_Q4_0_BYTES (16 * 2 + 16 * 16)
#define SL_R16_Q8_0_BYTES (16 * 2 + 16 * 32)
/* the Q4_0 layout plus 16 f16 mins (Q4_1, Q5_1) and 64 bytes of fifth bits
 * (Q5_0, Q5_1) */
#define SL_R16_Q4_1_BYTES (16 * 2 * 2 + 16 * 16)
#define SL_R16_Q5_0_BYTES (16 * 2 + 16 * 16 + 64)
#define SL_R16_Q5_1_BYTES (16 * 2 * 2 + 16 * 16 + 64)
/* per group of 16 rows and superblock of 256 */
#define SL_R16_Q4_K_BYTES (16 * 2 * 2 + 16 * 8 * 2 + 16 * 128)
#define SL_R16_Q6_K_BYTES (16 * 2 + 16 * 16 + 16 * 128 + 16 * 64) /* the file's 210 a row */
/* Bytes of one group of 16 rows of n_in columns in the packed layout. */
size_t sl_r16_group_bytes(sl_type wtype, int64_t n_in);
/* Groups [g0, g1) of 16 rows, every token of a; y points at row 0. */
typedef void (*sl_r16_fn)(const uint8_t *packed, int64_t g0, int64_t g1, const sl_q8act *a,
                          float *y, int64_t ldy);
sl_r16_fn sl_r16_avx512(sl_type wtype);
/* The same for 2 to 8 tokens (a verification batch), two groups at a time
 * (matmul_r16s_avx512.c), with the one-group kernel's bits; NULL for a type
 * it lacks. */
#define SL_R16_SMALL_MAX 8
sl_r16_fn sl_r16_small_avx512(sl_type wtype);
/* The same for one token (a decode step), with fewer instructions a byte
 * (matmul_r16d_avx512.c), with the one-group kernel's bits; NULL for a type
 * it lacks. */
sl_r16_fn sl_r16_one_avx512(sl_type wtype);
/* The same through AMX int8 for whole tiles of 16 tokens (matmul_amx.c),
 * with the VNNI kernel's bits; NULL when AMX is off or lacks the type. */
sl_r16_fn sl_r16_amx(sl_type wtype);
/* The same for weights that meet float activations (BF16). */
typedef void (*sl_r16f_fn)(const uint8_t *packed, int64_t g0, int64_t g1, const float *x,
                           int64_t n_tok, int64_t n_in, float *y, int64_t ldy);
sl_r16f_fn sl_r16f_avx512(sl_type wtype);
/* BF16 weights against activations rounded to bf16, as pairs of bf16 bits
 * per dword ([n_tok][n_in / 2]), with AVX512-BF16. */
typedef void (*sl_r16b_fn)(const uint8_t *packed, int64_t g0, int64_t g1, const uint32_t *xpairs,
                           int64_t n_tok, int64_t n_in, float *y, int64_t ldy);
sl_r16b_fn sl_r16b_avx512(sl_type wtype);
/* A decode step's split (matmul.c): 1 each thread streams a part of its own
 * and takes pieces off the back of another's when it runs out, 0 the
 * pool's chunks claimed in turn, -1 back to SLUICE_MM_STEAL (default 1).
 * For benchmarks and tests: the bits are the same either way. */
void sl_matmul_set_steal(int on);
/* A packed copy of rows wider than L1 can hold a group of (a 16-row group
 * of Gemma 3 1B's 6912-wide Q4_0 down projection is 62 KB) is sliced: its
 * columns cut into slices of `slice` blocks of 32 (the last may be
 * narrower), each slice laid out as a packed matrix of its own (every
 * group's blocks of that slice), the slices one after another. A kernel
 * runs on slice s as on a matrix of its columns, given
 * sl_q8act_cols's view of them with carry set after the first (the lanes'
 * sums carried through y: the same operations in the same order, so the
 * same bits). sl_r16_slice_blocks is the rule (blocks a slice, n_in / 32
 * for an unsliced copy: Q4_0 only by default); sl_r16_set_slice_bytes
 * sets the group-slice bytes it aims at for every type that may slice
 * (Q4_0, Q8_0, Q5_0, Q4_K, Q6_K; 0: none, -1: back to SLUICE_R16_SLICE, in
 * KB, or the defaults), for tests and benchmarks: it applies to copies
 * packed after it. */
int64_t sl_r16_slice_blocks(sl_type wtype, int64_t n_in);
/* The environment variable name as a count of KB, in bytes, or fallback
 * when it is unset, empty or not a whole number >= 0. */
int64_t sl_env_kb(const char *name, int64_t fallback);
void sl_r16_set_slice_bytes(int64_t bytes);
/* Packs n_groups groups of 16 rows of w into out, sliced every `slice`
 * blocks (n_in / 32 or 0: not sliced). */
void sl_r16_pack(sl_type wtype, const void *w, int64_t n_groups, int64_t n_in, int64_t slice,
                 uint8_t *out);
/* Blocks a slice of a copy from sl_pack (n_in / 32 when not sliced). */
int64_t sl_pack_slice_blocks(const void *packed);
/* fn over groups [g0, g1) of a copy from sl_pack of n_groups groups, for
 * the tokens of a (whole rows), slice by slice when it is sliced: what the
 * driver runs, for tests and benchmarks that call a kernel directly. */
void sl_r16_run(sl_r16_fn fn, sl_type type, const void *packed, int64_t n_groups, int64_t g0,
                int64_t g1, const sl_q8act *a, float *y, int64_t ldy);

#endif
