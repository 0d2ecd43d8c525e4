/* Matrix multiplication with weights in any supported type.
 *
 * Weights are never expanded to floats in memory: each path dequantises a
 * block into registers inside its inner loop. OpenMP splits output rows
 * across the team.
 *
 * Determinism contract (what makes pipeline splits and batching bit-exact):
 * y[t][o] is bit-identical whatever n_tok is, whichever row t of the batch the
 * token sits in, and however many threads run. Each path fixes its own order
 * of accumulation per (t, o); paths may differ from each other (within the
 * tolerances the tests state). */
#ifndef SLUICE_MATMUL_H
#define SLUICE_MATMUL_H

#include "kernels/types.h"

/* y[t * ldy + o] = sum_i W[o][i] * x[t * n_in + i], t < n_tok, o < n_out.
 * W holds n_out rows of n_in elements of type wtype, each row
 * sl_row_bytes(wtype, n_in) bytes, back to back. n_in must be a multiple of
 * the type's block size. */
void sl_matmul(sl_type wtype, const void *w, int64_t n_out, int64_t n_in,
               const float *x, int64_t n_tok, float *y, int64_t ldy);

/* Same, computed by the scalar reference whatever path is active (tests). */
void sl_matmul_ref(sl_type wtype, const void *w, int64_t n_out, int64_t n_in,
                   const float *x, int64_t n_tok, float *y, int64_t ldy);

/* Name of the path sl_matmul takes for wtype now (for `sluice bench`). */
const char *sl_matmul_path_name(sl_type wtype);

#endif
