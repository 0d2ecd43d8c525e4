/* What each SIMD matmul path hands the driver in matmul.c. */
#ifndef SLUICE_MATMUL_INTERNAL_H
#define SLUICE_MATMUL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

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

#endif
