/* Per-sequence KV cache of a layer range, sized up front.
 *
 * Sequences are slots 0..max_seqs-1. Each slot holds, for every layer of the
 * range, keys and values of positions 0..n_ctx-1 ([pos][kv_head][head_dim]
 * f32). The whole cache is one anonymous mapping, so untouched slots cost no
 * memory. Truncation (speculative rollback) only moves the length. */
#ifndef SLUICE_KV_H
#define SLUICE_KV_H

#include <stdint.h>

#include "model/config.h"
#include "util/err.h"

typedef struct sl_kv sl_kv;

int sl_kv_new(sl_kv **out, const sl_config *c, int l0, int l1, int max_seqs, int n_ctx, sl_err *err);
void sl_kv_free(sl_kv *kv);

int sl_kv_max_seqs(const sl_kv *kv);
int sl_kv_n_ctx(const sl_kv *kv);
/* Positions stored for seq. */
int sl_kv_len(const sl_kv *kv, int seq);
/* Keeps the first len positions (len <= current length). */
void sl_kv_truncate(sl_kv *kv, int seq, int len);
void sl_kv_clear(sl_kv *kv, int seq);
/* Marks positions [0, len) as filled (the forward pass calls this). */
void sl_kv_set_len(sl_kv *kv, int seq, int len);
/* Keys / values of position 0 of layer il (absolute id) of seq; positions
 * are sl_kv_stride(kv, il) floats apart. */
float *sl_kv_k(sl_kv *kv, int seq, int il);
float *sl_kv_v(sl_kv *kv, int seq, int il);
int64_t sl_kv_stride(const sl_kv *kv, int il);
/* Bytes reserved in all (for reports and the scheduler). */
uint64_t sl_kv_bytes(const sl_kv *kv);

#endif
