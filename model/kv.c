#include "model/kv.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

struct sl_kv {
    int l0, l1;
    int max_seqs;
    int n_ctx;
    int *len;            /* per sequence */
    int64_t *stride;     /* per layer of the range: floats between positions */
    size_t *layer_off;   /* per layer: float offset of its K within a sequence */
    size_t seq_floats;   /* floats per sequence (K and V of every layer) */
    float *base;
    size_t map_bytes;
};

int sl_kv_new(sl_kv **out, const sl_config *c, int l0, int l1, int max_seqs, int n_ctx, sl_err *err)
{
    *out = NULL;
    if (l0 < 0 || l1 > c->n_layer || l0 > l1)
        return sl_fail(err, "KV cache: layer range [%d, %d) outside %d layers", l0, l1, c->n_layer);
    if (max_seqs < 1 || n_ctx < 1)
        return sl_fail(err, "KV cache: need at least one sequence and one position "
                       "(got %d sequences, context %d)", max_seqs, n_ctx);
    sl_kv *kv = calloc(1, sizeof *kv);
    int n = l1 - l0;
    if (!kv)
        return sl_fail(err, "KV cache: out of memory");
    kv->l0 = l0;
    kv->l1 = l1;
    kv->max_seqs = max_seqs;
    kv->n_ctx = n_ctx;
    kv->len = calloc((size_t)max_seqs, sizeof *kv->len);
    kv->stride = calloc((size_t)(n ? n : 1), sizeof *kv->stride);
    kv->layer_off = calloc((size_t)(n ? n : 1), sizeof *kv->layer_off);
    if (!kv->len || !kv->stride || !kv->layer_off) {
        sl_kv_free(kv);
        return sl_fail(err, "KV cache: out of memory");
    }
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        const sl_layer_cfg *L = &c->layer[l0 + i];
        kv->stride[i] = (int64_t)L->n_kv_head * L->head_dim;
        kv->layer_off[i] = off;
        off += 2 * (size_t)kv->stride[i] * (size_t)n_ctx;
    }
    kv->seq_floats = off;
    size_t bytes;
    if (sl_mul_size(off, (size_t)max_seqs * sizeof(float), &bytes)) {
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

void sl_kv_free(sl_kv *kv)
{
    if (!kv)
        return;
    if (kv->base)
        munmap(kv->base, kv->map_bytes);
    free(kv->len);
    free(kv->stride);
    free(kv->layer_off);
    free(kv);
}

int sl_kv_max_seqs(const sl_kv *kv) { return kv->max_seqs; }
int sl_kv_n_ctx(const sl_kv *kv) { return kv->n_ctx; }
int sl_kv_len(const sl_kv *kv, int seq) { return kv->len[seq]; }

void sl_kv_truncate(sl_kv *kv, int seq, int len)
{
    if (len < kv->len[seq])
        kv->len[seq] = len < 0 ? 0 : len;
}

void sl_kv_clear(sl_kv *kv, int seq)
{
    kv->len[seq] = 0;
    /* Give the pages back: a released sequence should not pin memory. */
    size_t bytes = kv->seq_floats * sizeof(float);
    char *start = (char *)(kv->base + (size_t)seq * kv->seq_floats);
    size_t page = 4096;
    uintptr_t a = ((uintptr_t)start + page - 1) & ~(uintptr_t)(page - 1);
    uintptr_t b = ((uintptr_t)start + bytes) & ~(uintptr_t)(page - 1);
    if (b > a)
        madvise((void *)a, b - a, MADV_DONTNEED);
}

void sl_kv_set_len(sl_kv *kv, int seq, int len) { kv->len[seq] = len; }

float *sl_kv_k(sl_kv *kv, int seq, int il)
{
    return kv->base + (size_t)seq * kv->seq_floats + kv->layer_off[il - kv->l0];
}

float *sl_kv_v(sl_kv *kv, int seq, int il)
{
    int i = il - kv->l0;
    return kv->base + (size_t)seq * kv->seq_floats + kv->layer_off[i] +
           (size_t)kv->stride[i] * (size_t)kv->n_ctx;
}

int64_t sl_kv_stride(const sl_kv *kv, int il) { return kv->stride[il - kv->l0]; }

uint64_t sl_kv_bytes(const sl_kv *kv) { return (uint64_t)kv->seq_floats * kv->max_seqs * sizeof(float); }
