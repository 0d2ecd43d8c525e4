/* Quantisation and dequantisation of rows, scalar reference.
 *
 * These define the numbers: every SIMD kernel must agree with them. The
 * quantisers follow llama.cpp's reference (non-imatrix) quantisers, so a file
 * quantised here is what llama.cpp would produce from the same floats up to
 * rounding of ties. */
#ifndef SLUICE_QUANT_H
#define SLUICE_QUANT_H

#include "kernels/types.h"

/* n must be a multiple of sl_type_block_elems(type). */
void sl_dequantize_row(sl_type type, const void *src, float *dst, int64_t n);
void sl_quantize_row(sl_type type, const float *src, void *dst, int64_t n);

/* Dequantises element range [i0, i0 + n) of a row (for embedding lookups of a
 * whole row this is the same as sl_dequantize_row). i0 and n need not be
 * block-aligned. */
void sl_dequantize_range(sl_type type, const void *row, float *dst, int64_t i0, int64_t n);

#endif
