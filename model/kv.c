#include "model/kv.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

#include "kernels/attn.h"

struct sl_kv {
    int l0, l1;
    int max_seqs;
    int n_ctx;
    sl_type type;
    int max_batch;       /* 0: no rings */
    int *len;            /* per sequence */
    int *ready;          /* per sequence: positions whose rows' pages are committed */
    bool *own;           /* per layer: holds rows (not a KV-sharing alias) */
    int64_t *row_bytes;  /* per layer of the range: bytes between slots */
    int64_t *head_bytes; /* per layer: bytes of one head's row */
    int64_t *slots;      /* per layer */
    size_t *layer_off;   /* per layer: byte offset of its K within a sequence */
    size_t seq_bytes;    /* bytes per sequence (K and V of every layer) */
    uint8_t *base;
    size_t map_bytes;
};

static int64_t slots_of(const sl_layer_cfg *L, int n_ctx, int max_batch)
{
    if (L->sliding_window <= 0 || max_batch <= 0)
        return n_ctx;
    int64_t ring = (int64_t)L->sliding_window + (max_batch > SL_KV_RING_SLACK ? max_batch : SL_KV_RING_SLACK);
    ring = (ring + SL_ATTN_SPAN - 1) / SL_ATTN_SPAN * SL_ATTN_SPAN;
    /* a ring as long as the context saves nothing: keep the plain layout */
    return ring < n_ctx ? ring : n_ctx;
}

static int check_type(sl_type type, const sl_config *c, int l0, int l1, sl_err *err)
{
    if (type != SL_TYPE_F32 && type != SL_TYPE_F16 && type != SL_TYPE_BF16 && type != SL_TYPE_Q8_0)
        return sl_fail(err, "KV cache: type %s is not one of f32, f16, bf16, q8_0", sl_type_name(type));
    for (int il = l0; il < l1; il++)
        if (c->layer[il].head_dim % sl_type_block_elems(type) != 0)
            return sl_fail(err, "KV cache: %s needs head_dim a multiple of %lld; layer %d has %d",
                           sl_type_name(type), (long long)sl_type_block_elems(type), il,
                           c->layer[il].head_dim);
    return 0;
}

static int kv_create(sl_kv **out, const sl_config *c, int l0, int l1, int max_seqs, int n_ctx,
                     sl_type type, int max_batch, sl_err *err)
{
    *out = NULL;
    if (l0 < 0 || l1 > c->n_layer || l0 > l1)
        return sl_fail(err, "KV cache: layer range [%d, %d) outside %d layers", l0, l1, c->n_layer);
    if (max_seqs < 1 || n_ctx < 1)
        return sl_fail(err, "KV cache: need at least one sequence and one position "
                       "(got %d sequences, context %d)", max_seqs, n_ctx);
    if (check_type(type, c, l0, l1, err))
        return -1;
    sl_kv *kv = calloc(1, sizeof *kv);
    int n = l1 - l0;
    if (!kv)
        return sl_fail(err, "KV cache: out of memory");
    kv->l0 = l0;
    kv->l1 = l1;
    kv->max_seqs = max_seqs;
    kv->n_ctx = n_ctx;
    kv->type = type;
    kv->max_batch = max_batch;
    size_t nl = (size_t)(n ? n : 1);
    kv->len = calloc((size_t)max_seqs, sizeof *kv->len);
    kv->ready = calloc((size_t)max_seqs, sizeof *kv->ready);
    kv->own = calloc(nl, sizeof *kv->own);
    kv->row_bytes = calloc(nl, sizeof *kv->row_bytes);
    kv->head_bytes = calloc(nl, sizeof *kv->head_bytes);
    kv->slots = calloc(nl, sizeof *kv->slots);
    kv->layer_off = calloc(nl, sizeof *kv->layer_off);
    if (!kv->len || !kv->ready || !kv->own || !kv->row_bytes || !kv->head_bytes || !kv->slots || !kv->layer_off) {
        sl_kv_free(kv);
        return sl_fail(err, "KV cache: out of memory");
    }
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        const sl_layer_cfg *L = &c->layer[l0 + i];
        if (L->kv_src >= 0) {
            /* Gemma 4's KV-sharing layers alias their source's rows (same
             * kind of layer, so the same heads, window and slots). */
            int s = L->kv_src - l0;
            if (L->kv_src < l0 || L->kv_src >= l0 + i) {
                sl_kv_free(kv);
                return sl_fail(err, "KV cache: layer %d reads the cache of layer %d, which is "
                               "outside this part's layers [%d, %d)", l0 + i, L->kv_src, l0, l1);
            }
            kv->head_bytes[i] = kv->head_bytes[s];
            kv->row_bytes[i] = kv->row_bytes[s];
            kv->slots[i] = kv->slots[s];
            kv->layer_off[i] = kv->layer_off[s];
            continue;
        }
        kv->own[i] = true;
        kv->head_bytes[i] = (int64_t)sl_row_bytes(type, L->head_dim);
        kv->row_bytes[i] = kv->head_bytes[i] * L->n_kv_head;
        kv->slots[i] = slots_of(L, n_ctx, max_batch);
        kv->layer_off[i] = off;
        off += 2 * (size_t)kv->row_bytes[i] * (size_t)kv->slots[i];
    }
    kv->seq_bytes = (off + 63) & ~(size_t)63;
    size_t bytes;
    if (sl_mul_size(kv->seq_bytes, (size_t)max_seqs, &bytes)) {
        sl_kv_free(kv);
        return sl_fail(err, "KV cache: size overflows (context %d, %d sequences)", n_ctx, max_seqs);
    }
    kv->map_bytes = bytes ? bytes : 4096;
    /* Reserve address space only: pages are committed when first written,
     * so a cache sized for many long sequences costs what is used. */
    void *p = mmap(NULL, kv->map_bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        kv->map_bytes = 0;
        sl_kv_free(kv);
        return sl_fail(err, "KV cache: cannot reserve %zu bytes", bytes);
    }
    kv->base = p;
    *out = kv;
    return 0;
}

int sl_kv_new_typed(sl_kv **out, const sl_config *c, int l0, int l1, int max_seqs, int n_ctx,
                    sl_type type, int max_batch, sl_err *err)
{
    if (max_batch < 1)
        return sl_fail(err, "KV cache: batch allowance must be at least 1 (got %d)", max_batch);
    return kv_create(out, c, l0, l1, max_seqs, n_ctx, type, max_batch, err);
}

int sl_kv_new_full(sl_kv **out, const sl_config *c, int l0, int l1, int max_seqs, int n_ctx, sl_type type,
                   sl_err *err)
{
    return kv_create(out, c, l0, l1, max_seqs, n_ctx, type, 0, err);
}

int sl_kv_new(sl_kv **out, const sl_config *c, int l0, int l1, int max_seqs, int n_ctx, sl_err *err)
{
    return kv_create(out, c, l0, l1, max_seqs, n_ctx, SL_TYPE_F32, 0, err);
}

int sl_kv_max_batch(const sl_kv *kv) { return kv->max_batch > 0 ? kv->max_batch : INT32_MAX; }

void sl_kv_free(sl_kv *kv)
{
    if (!kv)
        return;
    if (kv->base)
        munmap(kv->base, kv->map_bytes);
    free(kv->len);
    free(kv->ready);
    free(kv->own);
    free(kv->row_bytes);
    free(kv->head_bytes);
    free(kv->slots);
    free(kv->layer_off);
    free(kv);
}

int sl_kv_max_seqs(const sl_kv *kv) { return kv->max_seqs; }
int sl_kv_n_ctx(const sl_kv *kv) { return kv->n_ctx; }
sl_type sl_kv_type(const sl_kv *kv) { return kv->type; }
int sl_kv_len(const sl_kv *kv, int seq) { return kv->len[seq]; }

void sl_kv_truncate(sl_kv *kv, int seq, int len)
{
    if (len < kv->len[seq])
        kv->len[seq] = len < 0 ? 0 : len;
}

void sl_kv_clear(sl_kv *kv, int seq)
{
    kv->len[seq] = 0;
    kv->ready[seq] = 0;
    /* Give the pages back: a released sequence should not pin memory. */
    uint8_t *start = kv->base + (size_t)seq * kv->seq_bytes;
    size_t page = 4096;
    uintptr_t a = ((uintptr_t)start + page - 1) & ~(uintptr_t)(page - 1);
    uintptr_t b = ((uintptr_t)start + kv->seq_bytes) & ~(uintptr_t)(page - 1);
    if (b > a)
        madvise((void *)a, b - a, MADV_DONTNEED);
}

void sl_kv_set_len(sl_kv *kv, int seq, int len) { kv->len[seq] = len; }

/* Commits the pages of bytes [p, p + n) of the mapping (whole pages around
 * them: a page already committed stays as it is, contents untouched). */
static void populate(uint8_t *p, size_t n)
{
    const uintptr_t page = 4096;
    uintptr_t a = (uintptr_t)p & ~(page - 1);
    uintptr_t b = ((uintptr_t)p + n + page - 1) & ~(page - 1);
    /* an older kernel refuses the advice: the rows then fault in as written */
    (void)madvise((void *)a, b - a, MADV_POPULATE_WRITE);
}

/* Slots [s0, s1) of one layer's keys and values. */
static void populate_slots(sl_kv *kv, int seq, int i, int64_t s0, int64_t s1)
{
    uint8_t *k = kv->base + (size_t)seq * kv->seq_bytes + kv->layer_off[i];
    uint8_t *v = k + (size_t)kv->row_bytes[i] * (size_t)kv->slots[i];
    size_t rb = (size_t)kv->row_bytes[i];
    populate(k + (size_t)s0 * rb, (size_t)(s1 - s0) * rb);
    populate(v + (size_t)s0 * rb, (size_t)(s1 - s0) * rb);
}

void sl_kv_prefault(sl_kv *kv, int seq, int end)
{
    if (end <= kv->ready[seq])
        return;
    int n = kv->l1 - kv->l0;
    size_t pos_bytes = 0; /* keys and values of one position in every layer */
    for (int i = 0; i < n; i++)
        pos_bytes += kv->own[i] ? 2 * (size_t)kv->row_bytes[i] : 0;
    int64_t ahead = pos_bytes ? (int64_t)(SL_KV_PREFAULT_BYTES / pos_bytes) : 0;
    if (ahead < SL_KV_PREFAULT_MIN)
        ahead = SL_KV_PREFAULT_MIN;
    int64_t p0 = kv->ready[seq], p1 = (int64_t)end + ahead;
    if (p1 > kv->n_ctx)
        p1 = kv->n_ctx;
    for (int i = 0; i < n; i++) {
        int64_t slots = kv->slots[i];
        if (!kv->own[i] || p0 >= slots) /* a ring past its first lap: all committed */
            continue;
        populate_slots(kv, seq, i, p0, p1 < slots ? p1 : slots);
    }
    kv->ready[seq] = (int)p1;
}

void *sl_kv_k(sl_kv *kv, int seq, int il)
{
    return kv->base + (size_t)seq * kv->seq_bytes + kv->layer_off[il - kv->l0];
}

void *sl_kv_v(sl_kv *kv, int seq, int il)
{
    int i = il - kv->l0;
    return kv->base + (size_t)seq * kv->seq_bytes + kv->layer_off[i] +
           (size_t)kv->row_bytes[i] * (size_t)kv->slots[i];
}

int64_t sl_kv_row_bytes(const sl_kv *kv, int il) { return kv->row_bytes[il - kv->l0]; }
int64_t sl_kv_head_bytes(const sl_kv *kv, int il) { return kv->head_bytes[il - kv->l0]; }
int64_t sl_kv_slots(const sl_kv *kv, int il) { return kv->slots[il - kv->l0]; }

uint64_t sl_kv_bytes(const sl_kv *kv) { return (uint64_t)kv->seq_bytes * kv->max_seqs; }
