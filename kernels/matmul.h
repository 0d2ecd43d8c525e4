/* Matrix multiplication with weights in any supported type.
 *
 * Weights are never expanded to floats in memory: each path dequantises a
 * block into registers inside its inner loop. The worker pool (util/pool.h)
 * splits output rows across threads.
 *
 * Determinism contract (what makes pipeline splits and batching bit-exact):
 * y[t][o] is bit-identical whatever n_tok is, whichever row t of the batch the
 * token sits in, and however many threads run. Each path fixes its own order
 * of accumulation per (t, o); paths may differ from each other (within the
 * tolerances the tests state). */
#ifndef SLUICE_MATMUL_H
#define SLUICE_MATMUL_H

#include <stdbool.h>

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

/* Repacking: a copy of W laid out for the fastest kernel this CPU has (16
 * rows interleaved for AVX-512 VNNI; Q4_0 and Q8_0), built once at load;
 * the mapped GGUF stays untouched. NULL when no layout applies to wtype on
 * this CPU, when n_out < 16, or when SLUICE_REPACK=0. */
void *sl_pack(sl_type wtype, const void *w, int64_t n_out, int64_t n_in);
void sl_pack_free(void *packed);
/* Bytes of memory a packed copy holds (0 for NULL), for memory reports. */
size_t sl_pack_bytes(const void *packed);
/* sl_matmul, taking the rows packed holds from it (all but n_out % 16) when
 * the active path is the one it was built for; packed may be NULL. The
 * result follows the determinism contract like every path. */
void sl_matmul_packed(sl_type wtype, const void *w, const void *packed, int64_t n_out,
                      int64_t n_in, const float *x, int64_t n_tok, float *y, int64_t ldy);

/* Several matrices that read the same x (Q, K and V; gate and up): x is
 * quantised once and all rows share one parallel region. Each job's result
 * has the same bits as its own sl_matmul_packed call. */
typedef struct sl_mm_job {
    sl_type type;
    const void *w;
    const void *packed; /* sl_pack copy or NULL */
    int64_t n_out;
    float *y;
    int64_t ldy;
} sl_mm_job;
void sl_matmul_jobs(const sl_mm_job *jobs, int n_jobs, int64_t n_in, const float *x,
                    int64_t n_tok);

/* A gated FFN's down projection: y = W . rows as sl_matmul_packed, the rows
 * made from gate and up by glu(out, gate row, up row, n_in) = act(gate) * up
 * (sl_gelu_tanh_mul_to, sl_silu_mul_to). The same bits as glu on every row
 * and then sl_matmul_packed. On the integer path one thread makes a token's
 * row and quantises it in one pass, a piece at a time in a buffer of its own,
 * and gate is left as it was; where a job reads the rows as floats (float
 * and BF16 weights, float activations) they are made into gate in place
 * first. Either way no separate pass (and barrier) runs. */
typedef void (*sl_glu_fn)(float *out, const float *gate, const float *up, int64_t n);
void sl_matmul_glu(sl_type wtype, const void *w, const void *packed, int64_t n_out, int64_t n_in,
                   float *gate, const float *up, sl_glu_fn glu, int64_t n_tok, float *y,
                   int64_t ldy);

/* A hint that the calling thread's next matmul call will be these jobs
 * (as sl_matmul_jobs would take them): where that call splits a thread's
 * part ahead (a decode step or a verification on more than one thread,
 * see kernels/matmul.c), each thread prefetches the start of its part into
 * L2 (util/pool.h, sl_pool_prefetch) while it waits or runs the serial
 * ops between, instead of waiting for those first lines at the call's
 * start. Calls it does not apply to are left alone; results never change.
 * sl_matmul_set_prefetch sets the bytes a thread takes (0: off; < 0: back
 * to SLUICE_MM_PREFETCH in KB, or the default). */
void sl_matmul_prefetch(const sl_mm_job *jobs, int n_jobs, int64_t n_in, int64_t n_tok);
void sl_matmul_set_prefetch(int64_t bytes);

/* AMX int8 for batches of 16 tokens and more on packed 4-, 5- and 8-bit
 * weights, where the CPU has it and Linux granted the tile state; the
 * results keep the AVX-512 VNNI kernels' bits. SLUICE_NO_AMX=1 turns it off
 * (read once). sl_matmul_amx_force switches it for this process (tests;
 * false when on was asked and the CPU cannot). */
bool sl_matmul_amx_active(void);
bool sl_matmul_amx_force(bool on);

/* Name of the path sl_matmul takes for wtype now (for `sluice bench`). */
const char *sl_matmul_path_name(sl_type wtype);

/* Seconds the calling thread has spent quantising activations for its
 * matmul calls (a running total, for profiles). */
double sl_matmul_quant_s(void);

#endif
