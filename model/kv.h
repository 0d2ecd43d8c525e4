/* Per-sequence KV cache of a layer range, sized up front.
 *
 * Sequences are slots 0..max_seqs-1. Each holds, for every layer of the
 * range, keys and values as rows of [kv_head][head_dim] in the cache's type
 * (F32 by default; F16, BF16 or Q8_0 to halve or quarter what attention
 * reads). A global layer keeps n_ctx positions; a sliding-window layer keeps
 * only a ring of slots: its window plus room for one batch of max_batch
 * tokens (at least SL_KV_RING_SLACK), so neither the later tokens of a batch
 * nor a speculative rollback overwrite a position a query still needs,
 * rounded up to a multiple of SL_ATTN_SPAN so attention spans never wrap.
 * Position p lives in slot p % sl_kv_slots(). A layer that reads an earlier
 * layer's cache (sl_layer_cfg.kv_src, Gemma 4) has no rows of its own: its
 * K/V pointers are its source's, which must lie in the same range. The whole cache is one
 * anonymous mapping, so
 * untouched slots cost no memory. Truncation (speculative rollback) only
 * moves the length. */
#ifndef SLUICE_KV_H
#define SLUICE_KV_H

#include <stdint.h>

#include "kernels/types.h"
#include "model/config.h"
#include "util/err.h"

#define SL_KV_RING_SLACK 128

typedef struct sl_kv sl_kv;

/* An F32 cache keeping every position of every layer (no rings). */
int sl_kv_new(sl_kv **out, const sl_config *c, int l0, int l1, int max_seqs, int n_ctx, sl_err *err);
/* type: F32, F16, BF16 or Q8_0 (Q8_0 needs head_dim a multiple of 32);
 * max_batch: the most tokens of one sequence a batch will hold (the forward
 * pass refuses more). */
int sl_kv_new_typed(sl_kv **out, const sl_config *c, int l0, int l1, int max_seqs, int n_ctx,
                    sl_type type, int max_batch, sl_err *err);
/* As sl_kv_new_typed, but every layer keeps every position (no rings):
 * a sliding-window layer's old positions stay, so the cache can be cut
 * back anywhere (limits.prefix_cache: full), at the memory of a global
 * layer for each. */
int sl_kv_new_full(sl_kv **out, const sl_config *c, int l0, int l1, int max_seqs, int n_ctx, sl_type type,
                   sl_err *err);
/* Tokens of one sequence a batch may hold (INT32_MAX without rings). */
int sl_kv_max_batch(const sl_kv *kv);
void sl_kv_free(sl_kv *kv);
int sl_kv_max_seqs(const sl_kv *kv);
int sl_kv_n_ctx(const sl_kv *kv);
sl_type sl_kv_type(const sl_kv *kv);
/* Positions stored for seq. */
int sl_kv_len(const sl_kv *kv, int seq);
/* Keeps the first len positions (len <= current length). */
void sl_kv_truncate(sl_kv *kv, int seq, int len);
void sl_kv_clear(sl_kv *kv, int seq);
/* Marks positions [0, len) as filled (the forward pass calls this). */
void sl_kv_set_len(sl_kv *kv, int seq, int len);
/* Commits the pages of seq's rows up to position end, and some way ahead
 * (SL_KV_PREFAULT_BYTES of rows over all layers, at least
 * SL_KV_PREFAULT_MIN positions, within the context), in one system call a
 * layer's keys or values (MADV_POPULATE_WRITE) instead of a page fault as a
 * decode step first writes each page: positions already committed cost
 * nothing. sl_kv_clear gives the pages back (and the count); a truncation
 * keeps them. The forward pass calls this for each batch. */
#define SL_KV_PREFAULT_BYTES ((size_t)2 << 20)
#define SL_KV_PREFAULT_MIN 16
void sl_kv_prefault(sl_kv *kv, int seq, int end);
/* Keys / values of slot 0 of layer il (absolute id) of seq. Slots are
 * sl_kv_row_bytes(kv, il) apart; a head's row is sl_kv_head_bytes(kv, il)
 * bytes at offset head * that within a slot. */
void *sl_kv_k(sl_kv *kv, int seq, int il);
void *sl_kv_v(sl_kv *kv, int seq, int il);
int64_t sl_kv_row_bytes(const sl_kv *kv, int il);
int64_t sl_kv_head_bytes(const sl_kv *kv, int il);
/* Slots of layer il: n_ctx, or the ring of a sliding-window layer. */
int64_t sl_kv_slots(const sl_kv *kv, int il);
/* Bytes reserved in all (for reports and the scheduler). */
uint64_t sl_kv_bytes(const sl_kv *kv);

#endif
