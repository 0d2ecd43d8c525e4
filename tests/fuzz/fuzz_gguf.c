/* libFuzzer target: any byte string either fails gguf_open_mem cleanly or
 * yields a file whose every kv, array element and tensor can be read, with
 * all pointers inside the buffer. Invariant breaks trap so the fuzzer sees them. */
#include "model/gguf.h"
#include "kernels/quant.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* gguf_find is linear: bound the getter calls so a file with many keys does
 * not turn each run quadratic. */
#define MAX_GETTER_KEYS 256
#define MAX_ARRAY_ELEMS 4096

static void require(int ok)
{
    if (!ok)
        __builtin_trap();
}

static int inside(const uint8_t *buf, size_t size, const void *p, uint64_t n)
{
    const uint8_t *q = p;
    return q >= buf && q <= buf + size && n <= (uint64_t)(buf + size - q);
}

static volatile uint64_t sink;

static void touch(const void *p, uint64_t n)
{
    if (n == 0)
        return;
    const uint8_t *q = p;
    sink += q[0] + q[n - 1];
}

static void read_getters(const gguf_file *f, const gguf_kv *kv)
{
    sl_err err;
    uint32_t u32;
    int64_t i64;
    float f32;
    bool b;
    char *s = NULL;
    require(gguf_get_u32(f, kv->key, &u32, &err) != 1);
    require(gguf_get_i64(f, kv->key, &i64, &err) != 1);
    require(gguf_get_f32(f, kv->key, &f32, &err) != 1);
    require(gguf_get_bool(f, kv->key, &b, &err) != 1);
    if (gguf_get_str(f, kv->key, &s, &err) == 0) {
        require(kv->type == GGUF_STRING && strlen(s) <= kv->str.len);
        free(s);
    }
    require(gguf_req_u32(f, kv->key, &u32, &err) != 1);
    require(gguf_find(f, kv->key) == kv);
}

static void walk_kv(const gguf_file *f, const uint8_t *buf, size_t size, const gguf_kv *kv)
{
    require(kv->key && kv->key[0]);
    require((unsigned)kv->type < GGUF_VTYPE_COUNT_);
    if (kv->type == GGUF_STRING) {
        require(inside(buf, size, kv->str.ptr, kv->str.len));
        touch(kv->str.ptr, kv->str.len);
    }
    if (kv->type != GGUF_ARRAY)
        return;
    require(kv->arr_type < GGUF_VTYPE_COUNT_ && kv->arr_type != GGUF_ARRAY);
    if (kv->arr_type == GGUF_STRING) {
        require(kv->arr_n == 0 || kv->arr_strs);
        for (uint64_t i = 0; i < kv->arr_n; i++) {
            require(inside(buf, size, kv->arr_strs[i].ptr, kv->arr_strs[i].len));
            touch(kv->arr_strs[i].ptr, kv->arr_strs[i].len);
        }
        return;
    }
    for (uint64_t i = 0; i < kv->arr_n && i < MAX_ARRAY_ELEMS; i++)
        sink += (uint64_t)gguf_arr_num(kv, i);
    if (kv->arr_n)
        sink += (uint64_t)gguf_arr_num(kv, kv->arr_n - 1);
    (void)f;
}

static void walk_tensor(const gguf_file *f, const uint8_t *buf, size_t size, const gguf_tensor *t)
{
    require(t->name && t->name[0]);
    require(t->n_dims >= 1 && t->n_dims <= GGUF_MAX_DIMS);
    require(sl_type_supported((int)t->type));
    for (int d = 0; d < GGUF_MAX_DIMS; d++)
        require(t->ne[d] >= 1 && (d < (int)t->n_dims || t->ne[d] == 1));
    require(t->size > 0 && t->offset % f->alignment == 0);
    require((const uint8_t *)t->data == buf + f->data_offset + t->offset);
    require(inside(buf, size, t->data, t->size));
    touch(t->data, t->size);
    /* the scale check and the dequantisation of the first elements take
     * any bytes of the tensor's type */
    int64_t bad = sl_find_bad_block(t->type, t->data, t->size);
    require(bad >= -1 && (bad < 0 || (uint64_t)bad < t->size / sl_type_block_bytes(t->type)));
    float out[SL_QK_K];
    /* ne[0] is a whole number of blocks (the reader checks), so is n */
    int64_t n = t->ne[0] < SL_QK_K ? t->ne[0] : SL_QK_K;
    sl_dequantize_row(t->type, t->data, out, n);
    sink += (uint64_t)(out[0] != out[0]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gguf_file *f = NULL;
    sl_err err;
    if (gguf_open_mem(&f, data, size, "fuzz.gguf", &err) != 0) {
        require(f == NULL && strncmp(err.msg, "fuzz.gguf: ", 11) == 0);
        return 0;
    }
    require(f->version == 2 || f->version == 3);
    require(f->alignment && (f->alignment & (f->alignment - 1)) == 0);
    for (uint64_t i = 0; i < f->n_kv; i++) {
        walk_kv(f, data, size, &f->kv[i]);
        if (i < MAX_GETTER_KEYS)
            read_getters(f, &f->kv[i]);
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        walk_tensor(f, data, size, &f->tensors[i]);
        if (i < MAX_GETTER_KEYS)
            require(gguf_find_tensor(f, f->tensors[i].name) == &f->tensors[i]);
    }
    gguf_close(f);
    return 0;
}
