/* Activations quantised to 8 bits per block of 32, for the integer matmul
 * paths of 4-, 6- and 8-bit weights.
 *
 * Per token and block of 32 floats x: d = max|x| / 127 and q = rint(x / d)
 * computed as rint(x * (1 / d)) in float, round-half-even (what rintf and
 * cvtps2dq do under the default rounding mode), so every path and the numpy
 * reference (tests/ref) quantise to the same bytes. A dot product with a
 * weight block is then an exact integer sum times two float scales. */
#ifndef SLUICE_Q8ACT_H
#define SLUICE_Q8ACT_H

#include <stddef.h>
#include <stdint.h>

#define SL_Q8A_BLOCK 32

typedef struct sl_q8act {
    int64_t n_tok, n_in, n_blocks; /* n_blocks = n_in / 32 per token */
    int8_t *q;    /* [n_tok][n_in] */
    int32_t *s4;  /* [n_tok][n_in / 4]: sum of each run of 4 quants */
    float *d;     /* [n_tok][n_blocks]: block scale */
    float *ds;    /* [n_tok][n_blocks]: d * sum of the block's quants */
    int32_t *sum; /* [n_tok][n_blocks]: sum of the block's quants */
    int32_t *s16; /* [n_tok][n_in / 16]: sum of each run of 16 quants */
    /* Columns from one token's row to the next's in the arrays above: n_in
     * for whole rows; wider in a view of some of the columns
     * (sl_q8act_cols), whose arrays start at its first block. */
    int64_t ld_in;
    /* The packed kernels start each lane from y instead of 0 (a later
     * slice of a sliced packed copy: the lanes' sums carried through y). */
    int carry;
} sl_q8act;

/* Bytes sl_q8act_init needs for n_tok tokens of n_in (a multiple of 32). */
size_t sl_q8act_bytes(int64_t n_tok, int64_t n_in);
/* Lays the arrays out in mem (64-byte aligned, sl_q8act_bytes long). */
void sl_q8act_init(sl_q8act *a, void *mem, int64_t n_tok, int64_t n_in);
/* Quantises token t of x (n_in floats) into a. */
void sl_q8act_quantize(sl_q8act *a, int64_t t, const float *x);
/* Blocks [b0, b1) of token t from x (their 32 * (b1 - b0) floats): the
 * same bytes as those blocks of a whole-row sl_q8act_quantize. */
void sl_q8act_quantize_blocks(sl_q8act *a, int64_t t, int64_t b0, int64_t b1, const float *x);
/* Tokens [t0, t1) of a, as a view of its own (no copy). */
sl_q8act sl_q8act_tokens(const sl_q8act *a, int64_t t0, int64_t t1);
/* Blocks [b0, b1) of every token of a, as a view of its own (no copy):
 * n_in and n_blocks are the view's, ld_in a's. */
sl_q8act sl_q8act_cols(const sl_q8act *a, int64_t b0, int64_t b1);

#endif
