/* GGUF reader (mmap, validate everything) and writer. */
#include "model/gguf.h"

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/mapfile.h"

/* Fields are copied out of the map with memcpy and used as host integers. */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c assumes a little-endian host"
#endif

#define GGUF_KEY_ALIGNMENT "general.alignment"
#define KEY_MAX_LEN 65535u   /* the spec's limit on key length */
#define NAME_MAX_LEN 63u     /* llama.cpp's GGML_MAX_NAME - 1: longer names do not load there */
#define SHOW_MAX 80          /* longest name or key quoted in a message */
#define NO_INDEX UINT64_MAX

/* Smallest encodings, used to reject absurd counts before allocating:
 * a kv is key length + 1 key byte + value type + a 1-byte value; a tensor
 * info is name length + 1 byte + n_dims + one dim + type + offset. */
#define MIN_KV_BYTES (8u + 1u + 4u + 1u)
#define MIN_TENSOR_INFO_BYTES (8u + 1u + 4u + 8u + 4u + 8u)

static const uint8_t vtype_size[GGUF_VTYPE_COUNT_] = {
    [GGUF_UINT8] = 1, [GGUF_INT8] = 1, [GGUF_UINT16] = 2, [GGUF_INT16] = 2,
    [GGUF_UINT32] = 4, [GGUF_INT32] = 4, [GGUF_FLOAT32] = 4, [GGUF_BOOL] = 1,
    [GGUF_STRING] = 0, [GGUF_ARRAY] = 0, [GGUF_UINT64] = 8, [GGUF_INT64] = 8,
    [GGUF_FLOAT64] = 8,
};

const char *gguf_vtype_name(gguf_vtype t)
{
    static const char *const names[GGUF_VTYPE_COUNT_] = {
        "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool",
        "string", "array", "uint64", "int64", "float64",
    };
    return (unsigned)t < GGUF_VTYPE_COUNT_ ? names[t] : "unknown";
}

bool gguf_vtype_is_int(gguf_vtype t)
{
    switch (t) {
    case GGUF_UINT8: case GGUF_INT8: case GGUF_UINT16: case GGUF_INT16:
    case GGUF_UINT32: case GGUF_INT32: case GGUF_UINT64: case GGUF_INT64:
        return true;
    default:
        return false;
    }
}

static bool vtype_is_signed(gguf_vtype t)
{
    return t == GGUF_INT8 || t == GGUF_INT16 || t == GGUF_INT32 || t == GGUF_INT64;
}

static bool vtype_is_float(gguf_vtype t)
{
    return t == GGUF_FLOAT32 || t == GGUF_FLOAT64;
}

/* Names and keys come from untrusted files: quote them printable and short. */
static const char *shown(const char *s, uint64_t len, char buf[SHOW_MAX + 4])
{
    size_t n = len < SHOW_MAX ? (size_t)len : SHOW_MAX;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        buf[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    strcpy(buf + n, len > SHOW_MAX ? "..." : "");
    return buf;
}

static char *copy_cstr(const char *s, uint64_t len)
{
    char *out = malloc((size_t)len + 1);
    if (out) {
        memcpy(out, s, (size_t)len);
        out[len] = '\0';
    }
    return out;
}

static uint64_t align_up(uint64_t x, uint64_t alignment)
{
    return (x + alignment - 1) / alignment * alignment;
}

/* ---- tensor shapes (shared by reader and writer) ---- */

typedef enum shape_status { SHAPE_OK, SHAPE_BLOCK, SHAPE_OVERFLOW } shape_status;

static shape_status shape_bytes(sl_type type, const int64_t ne[GGUF_MAX_DIMS], uint64_t *size)
{
    int64_t block_elems = sl_type_block_elems(type);
    if (block_elems <= 0 || ne[0] % block_elems != 0)
        return SHAPE_BLOCK;
    uint64_t elems = 1, bytes = (uint64_t)(ne[0] / block_elems);
    if (__builtin_mul_overflow(bytes, (uint64_t)sl_type_block_bytes(type), &bytes))
        return SHAPE_OVERFLOW;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
        if (__builtin_mul_overflow(elems, (uint64_t)ne[d], &elems))
            return SHAPE_OVERFLOW;
        if (d > 0 && __builtin_mul_overflow(bytes, (uint64_t)ne[d], &bytes))
            return SHAPE_OVERFLOW;
    }
    if (elems > INT64_MAX || bytes > INT64_MAX)
        return SHAPE_OVERFLOW;
    *size = bytes;
    return SHAPE_OK;
}

static const char *shape_text(uint32_t n_dims, const int64_t *ne, char *buf, size_t cap)
{
    size_t used = (size_t)snprintf(buf, cap, "[");
    for (uint32_t d = 0; d < n_dims && used < cap; d++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%" PRId64, d ? ", " : "", ne[d]);
    if (used < cap)
        snprintf(buf + used, cap - used, "]");
    return buf;
}

/* ---- reader ---- */

typedef struct reader {
    const uint8_t *buf;
    size_t size;
    size_t pos;
    const char *path;
    sl_err *err;
    char where[SHOW_MAX + 48]; /* the kv or tensor being read, for messages */
} reader;

static int rd_fail(const reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int rd_fail(const reader *r, const char *fmt, ...)
{
    char what[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (r->where[0])
        return sl_fail(r->err, "%s: %s: %s", r->path, r->where, what);
    return sl_fail(r->err, "%s: %s", r->path, what);
}

static size_t rd_left(const reader *r)
{
    return r->size - r->pos;
}

static int rd_bytes(reader *r, void *out, size_t n, const char *field)
{
    if (n > rd_left(r))
        return rd_fail(r, "%s: needs %zu bytes at offset %zu but the file ends at %zu (truncated?)",
                       field, n, r->pos, r->size);
    memcpy(out, r->buf + r->pos, n);
    r->pos += n;
    return 0;
}

static int rd_u32(reader *r, uint32_t *out, const char *field)
{
    return rd_bytes(r, out, sizeof *out, field);
}

static int rd_u64(reader *r, uint64_t *out, const char *field)
{
    return rd_bytes(r, out, sizeof *out, field);
}

/* field, or "field index" when index is not NO_INDEX (array elements). */
static int rd_str(reader *r, gguf_str *out, const char *field, uint64_t index)
{
    char name[64];
    if (index == NO_INDEX)
        snprintf(name, sizeof name, "%s", field);
    else
        snprintf(name, sizeof name, "%s %" PRIu64, field, index);
    uint64_t len;
    char len_field[80];
    if (rd_left(r) < sizeof len) {
        snprintf(len_field, sizeof len_field, "%s length", name);
        return rd_u64(r, &len, len_field);
    }
    rd_u64(r, &len, "");
    if (len > rd_left(r))
        return rd_fail(r, "%s: string length %" PRIu64 " runs past the end of the file "
                       "(%zu bytes left at offset %zu)", name, len, rd_left(r), r->pos);
    out->ptr = (const char *)r->buf + r->pos;
    out->len = len;
    r->pos += (size_t)len;
    return 0;
}

/* The counts go to *n_tensors and *n_kv; f's own counts stay 0 until the
 * arrays they describe exist, so gguf_close can run at any point. */
static int read_header(reader *r, gguf_file *f, uint64_t *n_tensors, uint64_t *n_kv)
{
    uint8_t magic[4];
    if (rd_bytes(r, magic, sizeof magic, "magic"))
        return -1;
    if (memcmp(magic, "GGUF", 4) != 0)
        return rd_fail(r, "bad magic %02x %02x %02x %02x: not a GGUF file (expected \"GGUF\")",
                       magic[0], magic[1], magic[2], magic[3]);
    if (rd_u32(r, &f->version, "version"))
        return -1;
    uint32_t swapped = __builtin_bswap32(f->version);
    if (f->version == 1)
        return rd_fail(r, "GGUF version 1 is not supported (it used 32-bit counts); "
                       "convert the file to version 3");
    if ((f->version & 0xffffu) == 0 && swapped >= 1 && swapped <= 3)
        return rd_fail(r, "version field reads 0x%08" PRIx32 ": this is a big-endian GGUF file, "
                       "and only little-endian files are supported", f->version);
    if (f->version != 2 && f->version != 3)
        return rd_fail(r, "unsupported version %" PRIu32 " (this reader knows versions 2 and 3)",
                       f->version);
    return rd_u64(r, n_tensors, "n_tensors") || rd_u64(r, n_kv, "n_kv") ? -1 : 0;
}

/* Both counts must fit the bytes that follow before anything is allocated. */
static int check_counts(const reader *r, uint64_t n_kv, uint64_t n_tensors)
{
    size_t left = rd_left(r);
    if (n_kv > left / MIN_KV_BYTES)
        return rd_fail(r, "n_kv %" PRIu64 " is absurd: the %zu bytes after the header hold at "
                       "most %zu key-value pairs (truncated or corrupt file)", n_kv, left,
                       left / MIN_KV_BYTES);
    left -= (size_t)n_kv * MIN_KV_BYTES;
    if (n_tensors > left / MIN_TENSOR_INFO_BYTES)
        return rd_fail(r, "n_tensors %" PRIu64 " is absurd: the %zu bytes after the header and "
                       "key-value pairs hold at most %zu tensor infos (truncated or corrupt file)", n_tensors, left,
                       left / MIN_TENSOR_INFO_BYTES);
    return 0;
}

static int read_scalar(reader *r, gguf_vtype type, gguf_kv *kv)
{
    union { uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32;
            float f32; uint64_t u64; int64_t i64; double f64; } raw;
    if (rd_bytes(r, &raw, vtype_size[type], "value"))
        return -1;
    switch (type) {
    case GGUF_UINT8: kv->v.u = raw.u8; break;
    case GGUF_INT8: kv->v.i = raw.i8; break;
    case GGUF_UINT16: kv->v.u = raw.u16; break;
    case GGUF_INT16: kv->v.i = raw.i16; break;
    case GGUF_UINT32: kv->v.u = raw.u32; break;
    case GGUF_INT32: kv->v.i = raw.i32; break;
    case GGUF_FLOAT32: kv->v.f = raw.f32; break;
    case GGUF_BOOL: kv->v.u = raw.u8 != 0; break;
    case GGUF_UINT64: kv->v.u = raw.u64; break;
    case GGUF_INT64: kv->v.i = raw.i64; break;
    case GGUF_FLOAT64: kv->v.f = raw.f64; break;
    default: return rd_fail(r, "internal error: %s is not a scalar type", gguf_vtype_name(type));
    }
    return 0;
}

/* Nested arrays (arrays of arrays) are rejected: no key we read uses them. */
static int read_array(reader *r, gguf_kv *kv)
{
    uint32_t elem_type = 0;
    uint64_t n = 0;
    if (rd_u32(r, &elem_type, "array element type"))
        return -1;
    if (elem_type >= GGUF_VTYPE_COUNT_)
        return rd_fail(r, "unknown array element type %" PRIu32, elem_type);
    if (elem_type == GGUF_ARRAY)
        return rd_fail(r, "array element type is array: nested arrays are not supported");
    if (rd_u64(r, &n, "array count"))
        return -1;
    size_t elem_min = elem_type == GGUF_STRING ? sizeof(uint64_t) : vtype_size[elem_type];
    if (n > rd_left(r) / elem_min)
        return rd_fail(r, "array count %" PRIu64 " of %s is absurd: the %zu bytes left hold at "
                       "most %zu", n, gguf_vtype_name(elem_type), rd_left(r), rd_left(r) / elem_min);
    kv->arr_type = (gguf_vtype)elem_type;
    kv->arr_n = n;
    if (elem_type != GGUF_STRING) {
        kv->arr_data = r->buf + r->pos;
        r->pos += (size_t)n * elem_min;
        return 0;
    }
    if (n == 0)
        return 0;
    kv->arr_strs = calloc((size_t)n, sizeof *kv->arr_strs);
    if (!kv->arr_strs)
        return rd_fail(r, "out of memory for %" PRIu64 " array strings", n);
    for (uint64_t i = 0; i < n; i++)
        if (rd_str(r, &kv->arr_strs[i], "array element", i))
            return -1;
    return 0;
}

static int read_kv(reader *r, uint64_t index, gguf_kv *kv)
{
    char buf[SHOW_MAX + 4];
    gguf_str key;
    snprintf(r->where, sizeof r->where, "kv %" PRIu64, index);
    if (rd_str(r, &key, "key", NO_INDEX))
        return -1;
    if (key.len == 0)
        return rd_fail(r, "key is empty");
    if (key.len > KEY_MAX_LEN)
        return rd_fail(r, "key length %" PRIu64 " exceeds %u", key.len, KEY_MAX_LEN);
    if (memchr(key.ptr, '\0', (size_t)key.len))
        return rd_fail(r, "key '%s' contains a NUL byte", shown(key.ptr, key.len, buf));
    kv->key = copy_cstr(key.ptr, key.len);
    if (!kv->key)
        return rd_fail(r, "out of memory");
    snprintf(r->where, sizeof r->where, "kv %" PRIu64 " ('%s')", index,
             shown(key.ptr, key.len, buf));
    uint32_t type = 0;
    if (rd_u32(r, &type, "value type"))
        return -1;
    if (type >= GGUF_VTYPE_COUNT_)
        return rd_fail(r, "unknown value type %" PRIu32, type);
    kv->type = (gguf_vtype)type;
    if (type == GGUF_STRING)
        return rd_str(r, &kv->str, "value", NO_INDEX);
    if (type == GGUF_ARRAY)
        return read_array(r, kv);
    return read_scalar(r, kv->type, kv);
}

static int cmp_kv_key(const void *a, const void *b)
{
    return strcmp((*(const gguf_kv *const *)a)->key, (*(const gguf_kv *const *)b)->key);
}

static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp((*(const gguf_tensor *const *)a)->name, (*(const gguf_tensor *const *)b)->name);
}

static int cmp_tensor_offset(const void *a, const void *b)
{
    uint64_t x = (*(const gguf_tensor *const *)a)->offset, y = (*(const gguf_tensor *const *)b)->offset;
    return (x > y) - (x < y);
}

/* Sorted views find duplicates and overlaps in n log n: fuzzed files can
 * carry hundreds of thousands of entries. */
static void **sorted_view(void *items, uint64_t n, size_t item_size,
                          int (*cmp)(const void *, const void *))
{
    void **view = malloc((n ? (size_t)n : 1) * sizeof *view);
    if (!view)
        return NULL;
    for (uint64_t i = 0; i < n; i++)
        view[i] = (uint8_t *)items + i * item_size;
    qsort(view, (size_t)n, sizeof *view, cmp);
    return view;
}

static int check_unique_keys(const gguf_file *f, sl_err *err)
{
    const gguf_kv **view = (const gguf_kv **)sorted_view(f->kv, f->n_kv, sizeof *f->kv, cmp_kv_key);
    if (!view)
        return sl_fail(err, "%s: out of memory", f->path);
    int rc = 0;
    for (uint64_t i = 1; i < f->n_kv && rc == 0; i++) {
        if (strcmp(view[i - 1]->key, view[i]->key) != 0)
            continue;
        char buf[SHOW_MAX + 4];
        const gguf_kv *a = view[i - 1], *b = view[i];
        if (a > b) {
            const gguf_kv *t = a;
            a = b;
            b = t;
        }
        rc = sl_fail(err, "%s: kv %td: duplicate key '%s' (first at kv %td)", f->path,
                     b - f->kv, shown(b->key, strlen(b->key), buf), a - f->kv);
    }
    free(view);
    return rc;
}

static int read_alignment(gguf_file *f, sl_err *err)
{
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    const gguf_kv *kv = gguf_find(f, GGUF_KEY_ALIGNMENT);
    if (!kv)
        return 0;
    if (kv->type != GGUF_UINT32)
        return sl_fail(err, "%s: %s is %s, expected uint32", f->path, GGUF_KEY_ALIGNMENT,
                       gguf_vtype_name(kv->type));
    if (kv->v.u == 0 || (kv->v.u & (kv->v.u - 1)) != 0)
        return sl_fail(err, "%s: %s = %" PRIu64 " is not a nonzero power of two", f->path,
                       GGUF_KEY_ALIGNMENT, kv->v.u);
    f->alignment = kv->v.u;
    return 0;
}

static int read_tensor_shape(reader *r, gguf_tensor *t)
{
    if (rd_u32(r, &t->n_dims, "n_dims"))
        return -1;
    if (t->n_dims == 0 || t->n_dims > GGUF_MAX_DIMS)
        return rd_fail(r, "n_dims %" PRIu32 " is outside 1..%d", t->n_dims, GGUF_MAX_DIMS);
    for (int d = 0; d < GGUF_MAX_DIMS; d++)
        t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        char field[16];
        snprintf(field, sizeof field, "ne[%" PRIu32 "]", d);
        if (rd_bytes(r, &t->ne[d], sizeof t->ne[d], field))
            return -1;
        /* Zero-sized weights mean a broken file, and later code divides by dims. */
        if (t->ne[d] <= 0)
            return rd_fail(r, "%s is %" PRId64 ": every dimension must be at least 1", field, t->ne[d]);
    }
    return 0;
}

static const char *supported_types(char *buf, size_t cap)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int t = 0; t < SL_TYPE_COUNT_ && used < cap; t++)
        if (sl_type_supported(t))
            used += (size_t)snprintf(buf + used, cap - used, "%s%s", used ? ", " : "", sl_type_name(t));
    return buf;
}

static int read_tensor_type(reader *r, gguf_tensor *t)
{
    uint32_t type = 0;
    if (rd_u32(r, &type, "type"))
        return -1;
    if (type >= SL_TYPE_COUNT_ || !sl_type_supported((int)type)) {
        char known[160];
        return rd_fail(r, "tensor type %" PRIu32 " is unknown or not supported (this engine "
                       "loads %s)", type, supported_types(known, sizeof known));
    }
    t->type = (sl_type)type;
    char shape[128];
    switch (shape_bytes(t->type, t->ne, &t->size)) {
    case SHAPE_OK:
        return 0;
    case SHAPE_BLOCK:
        return rd_fail(r, "ne[0] = %" PRId64 " is not a multiple of the %s block size %" PRId64,
                       t->ne[0], sl_type_name(t->type), sl_type_block_elems(t->type));
    default:
        return rd_fail(r, "shape %s of %s overflows 64 bits",
                       shape_text(t->n_dims, t->ne, shape, sizeof shape), sl_type_name(t->type));
    }
}

static int read_tensor_info(reader *r, uint64_t index, gguf_tensor *t)
{
    char buf[SHOW_MAX + 4];
    gguf_str name;
    snprintf(r->where, sizeof r->where, "tensor %" PRIu64, index);
    if (rd_str(r, &name, "name", NO_INDEX))
        return -1;
    if (name.len == 0)
        return rd_fail(r, "name is empty");
    if (memchr(name.ptr, '\0', (size_t)name.len))
        return rd_fail(r, "name '%s' contains a NUL byte", shown(name.ptr, name.len, buf));
    t->name = copy_cstr(name.ptr, name.len);
    if (!t->name)
        return rd_fail(r, "out of memory");
    snprintf(r->where, sizeof r->where, "tensor %" PRIu64 " ('%s')", index,
             shown(name.ptr, name.len, buf));
    if (read_tensor_shape(r, t) || read_tensor_type(r, t))
        return -1;
    return rd_u64(r, &t->offset, "offset");
}

static int place_tensor(const gguf_file *f, uint64_t index, gguf_tensor *t, sl_err *err)
{
    char buf[SHOW_MAX + 4];
    const char *name = shown(t->name, strlen(t->name), buf);
    if (t->offset % f->alignment != 0)
        return sl_fail(err, "%s: tensor %" PRIu64 " ('%s'): offset %" PRIu64 " is not a multiple "
                       "of the alignment %" PRIu64, f->path, index, name, t->offset, f->alignment);
    uint64_t end_of_file = f->map_size;
    if (f->data_offset > end_of_file || t->offset >= end_of_file - f->data_offset)
        return sl_fail(err, "%s: tensor %" PRIu64 " ('%s'): offset %" PRIu64 " (after the data "
                       "section start %" PRIu64 ") lies past the end of the file (%" PRIu64
                       " bytes)", f->path, index, name, t->offset, f->data_offset, end_of_file);
    uint64_t start = f->data_offset + t->offset;
    if (t->size > end_of_file - start)
        return sl_fail(err, "%s: tensor %" PRIu64 " ('%s'): data [%" PRIu64 ", %" PRIu64 ") "
                       "runs past the end of the file (%" PRIu64 " bytes)", f->path, index,
                       name, start, start + t->size, end_of_file);
    t->data = f->map + start;
    return 0;
}

static int check_unique_names(const gguf_file *f, sl_err *err)
{
    const gguf_tensor **view = (const gguf_tensor **)sorted_view(
        f->tensors, f->n_tensors, sizeof *f->tensors, cmp_tensor_name);
    if (!view)
        return sl_fail(err, "%s: out of memory", f->path);
    int rc = 0;
    for (uint64_t i = 1; i < f->n_tensors && rc == 0; i++) {
        if (strcmp(view[i - 1]->name, view[i]->name) != 0)
            continue;
        char buf[SHOW_MAX + 4];
        const gguf_tensor *a = view[i - 1], *b = view[i];
        if (a > b) {
            const gguf_tensor *t = a;
            a = b;
            b = t;
        }
        rc = sl_fail(err, "%s: tensor %td: duplicate tensor name '%s' (first at tensor %td)",
                     f->path, b - f->tensors, shown(b->name, strlen(b->name), buf), a - f->tensors);
    }
    free(view);
    return rc;
}

static int check_no_overlap(const gguf_file *f, sl_err *err)
{
    const gguf_tensor **view = (const gguf_tensor **)sorted_view(
        f->tensors, f->n_tensors, sizeof *f->tensors, cmp_tensor_offset);
    if (!view)
        return sl_fail(err, "%s: out of memory", f->path);
    int rc = 0;
    for (uint64_t i = 1; i < f->n_tensors && rc == 0; i++) {
        const gguf_tensor *a = view[i - 1], *b = view[i];
        if (a->offset + a->size <= b->offset)
            continue;
        char buf_a[SHOW_MAX + 4], buf_b[SHOW_MAX + 4];
        rc = sl_fail(err, "%s: tensor %td ('%s') data [%" PRIu64 ", %" PRIu64 ") overlaps tensor "
                     "%td ('%s') data [%" PRIu64 ", %" PRIu64 ") (offsets in the data section)",
                     f->path, b - f->tensors, shown(b->name, strlen(b->name), buf_b), b->offset,
                     b->offset + b->size, a - f->tensors, shown(a->name, strlen(a->name), buf_a),
                     a->offset, a->offset + a->size);
    }
    free(view);
    return rc;
}

static int read_kvs(reader *r, gguf_file *f, uint64_t n)
{
    if (n == 0)
        return 0;
    f->kv = calloc((size_t)n, sizeof *f->kv);
    if (!f->kv)
        return rd_fail(r, "out of memory for %" PRIu64 " key-value pairs", n);
    f->n_kv = n;
    for (uint64_t i = 0; i < n; i++)
        if (read_kv(r, i, &f->kv[i]))
            return -1;
    r->where[0] = '\0';
    return 0;
}

static int read_tensor_infos(reader *r, gguf_file *f, uint64_t n)
{
    if (n == 0)
        return 0;
    f->tensors = calloc((size_t)n, sizeof *f->tensors);
    if (!f->tensors)
        return rd_fail(r, "out of memory for %" PRIu64 " tensor infos", n);
    f->n_tensors = n;
    for (uint64_t i = 0; i < n; i++)
        if (read_tensor_info(r, i, &f->tensors[i]))
            return -1;
    r->where[0] = '\0';
    return 0;
}

static int parse(gguf_file *f, sl_err *err)
{
    reader r = { .buf = f->map, .size = f->map_size, .path = f->path, .err = err };
    uint64_t n_tensors = 0, n_kv = 0;
    if (read_header(&r, f, &n_tensors, &n_kv) || check_counts(&r, n_kv, n_tensors))
        return -1;
    if (read_kvs(&r, f, n_kv) || check_unique_keys(f, err) || read_alignment(f, err))
        return -1;
    if (read_tensor_infos(&r, f, n_tensors))
        return -1;
    f->data_offset = align_up(r.pos, f->alignment);
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (place_tensor(f, i, &f->tensors[i], err))
            return -1;
    return check_unique_names(f, err) || check_no_overlap(f, err) ? -1 : 0;
}

static gguf_file *file_new(const char *name, const void *map, size_t size, bool owns_map)
{
    gguf_file *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->path = strdup(name ? name : "(buffer)");
    if (!f->path) {
        free(f);
        return NULL;
    }
    f->map = map;
    f->map_size = size;
    f->owns_map = owns_map;
    return f;
}

int gguf_open_mem(gguf_file **out, const void *buf, size_t size, const char *name, sl_err *err)
{
    *out = NULL;
    gguf_file *f = file_new(name, buf, size, false);
    if (!f)
        return sl_fail(err, "%s: out of memory", name ? name : "(buffer)");
    if (parse(f, err)) {
        gguf_close(f);
        return -1;
    }
    *out = f;
    return 0;
}

int gguf_open(gguf_file **out, const char *path, sl_err *err)
{
    *out = NULL;
    const void *map;
    size_t size;
    if (sl_map_file(path, &map, &size, err))
        return -1;
    if (size == 0)
        return sl_fail(err, "%s: file is empty (a GGUF file starts with a 24-byte header)", path);
    gguf_file *f = file_new(path, map, size, true);
    if (!f) {
        sl_unmap_file(map, size);
        return sl_fail(err, "%s: out of memory", path);
    }
    if (parse(f, err)) {
        gguf_close(f);
        return -1;
    }
    *out = f;
    return 0;
}

void gguf_close(gguf_file *f)
{
    if (!f)
        return;
    for (uint64_t i = 0; i < f->n_kv; i++) {
        free(f->kv[i].key);
        free(f->kv[i].arr_strs);
    }
    free(f->kv);
    for (uint64_t i = 0; i < f->n_tensors; i++)
        free(f->tensors[i].name);
    free(f->tensors);
    if (f->owns_map)
        sl_unmap_file(f->map, f->map_size);
    free(f->path);
    free(f);
}

const gguf_kv *gguf_find(const gguf_file *f, const char *key)
{
    if (!f || !key)
        return NULL;
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (f->kv[i].key && strcmp(f->kv[i].key, key) == 0)
            return &f->kv[i];
    return NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name)
{
    if (!f || !name)
        return NULL;
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (f->tensors[i].name && strcmp(f->tensors[i].name, name) == 0)
            return &f->tensors[i];
    return NULL;
}

/* ---- getters ---- */

static int wrong_type(const gguf_file *f, const gguf_kv *kv, const char *expected, sl_err *err)
{
    const char *type = gguf_vtype_name(kv->type);
    if (kv->type == GGUF_ARRAY)
        return sl_fail(err, "%s: key '%s' is an array of %s, expected %s", f->path, kv->key,
                       gguf_vtype_name(kv->arr_type), expected);
    return sl_fail(err, "%s: key '%s' is %s, expected %s", f->path, kv->key, type, expected);
}

static const char *int_text(const gguf_kv *kv, char *buf, size_t cap)
{
    if (vtype_is_signed(kv->type))
        snprintf(buf, cap, "%" PRId64, kv->v.i);
    else
        snprintf(buf, cap, "%" PRIu64, kv->v.u);
    return buf;
}

int gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out, sl_err *err)
{
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv)
        return 1;
    if (!gguf_vtype_is_int(kv->type))
        return wrong_type(f, kv, "an integer (read as uint32)", err);
    bool fits = vtype_is_signed(kv->type) ? kv->v.i >= 0 && kv->v.i <= (int64_t)UINT32_MAX
                                          : kv->v.u <= UINT32_MAX;
    char buf[32];
    if (!fits)
        return sl_fail(err, "%s: key '%s' = %s (%s) does not fit uint32", f->path, key,
                       int_text(kv, buf, sizeof buf), gguf_vtype_name(kv->type));
    *out = vtype_is_signed(kv->type) ? (uint32_t)kv->v.i : (uint32_t)kv->v.u;
    return 0;
}

int gguf_get_i64(const gguf_file *f, const char *key, int64_t *out, sl_err *err)
{
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv)
        return 1;
    if (!gguf_vtype_is_int(kv->type))
        return wrong_type(f, kv, "an integer (read as int64)", err);
    if (!vtype_is_signed(kv->type) && kv->v.u > INT64_MAX)
        return sl_fail(err, "%s: key '%s' = %" PRIu64 " (uint64) does not fit int64", f->path,
                       key, kv->v.u);
    *out = vtype_is_signed(kv->type) ? kv->v.i : (int64_t)kv->v.u;
    return 0;
}

int gguf_get_f32(const gguf_file *f, const char *key, float *out, sl_err *err)
{
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv)
        return 1;
    double v;
    if (vtype_is_float(kv->type))
        v = kv->v.f;
    else if (gguf_vtype_is_int(kv->type))
        v = vtype_is_signed(kv->type) ? (double)kv->v.i : (double)kv->v.u;
    else
        return wrong_type(f, kv, "a number (read as float32)", err);
    if (isfinite(v) && fabs(v) > FLT_MAX)
        return sl_fail(err, "%s: key '%s' = %g (%s) does not fit float32", f->path, key, v,
                       gguf_vtype_name(kv->type));
    *out = (float)v;
    return 0;
}

int gguf_get_bool(const gguf_file *f, const char *key, bool *out, sl_err *err)
{
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv)
        return 1;
    if (kv->type != GGUF_BOOL)
        return wrong_type(f, kv, "bool", err);
    *out = kv->v.u != 0;
    return 0;
}

int gguf_get_str(const gguf_file *f, const char *key, char **out, sl_err *err)
{
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv)
        return 1;
    if (kv->type != GGUF_STRING)
        return wrong_type(f, kv, "string", err);
    char *copy = copy_cstr(kv->str.ptr, kv->str.len);
    if (!copy)
        return sl_fail(err, "%s: key '%s': out of memory for a %" PRIu64 "-byte string", f->path,
                       key, kv->str.len);
    *out = copy;
    return 0;
}

int gguf_req_u32(const gguf_file *f, const char *key, uint32_t *out, sl_err *err)
{
    int rc = gguf_get_u32(f, key, out, err);
    if (rc == 1)
        return sl_fail(err, "%s: required key '%s' is missing", f ? f->path : "(null)", key);
    return rc;
}

double gguf_arr_num(const gguf_kv *kv, uint64_t i)
{
    if (!kv || kv->type != GGUF_ARRAY || i >= kv->arr_n || !kv->arr_data)
        return NAN;
    const uint8_t *p = (const uint8_t *)kv->arr_data + i * vtype_size[kv->arr_type];
    union { uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32;
            float f32; uint64_t u64; int64_t i64; double f64; } e;
    memcpy(&e, p, vtype_size[kv->arr_type]);
    switch (kv->arr_type) {
    case GGUF_UINT8: return e.u8;
    case GGUF_INT8: return e.i8;
    case GGUF_UINT16: return e.u16;
    case GGUF_INT16: return e.i16;
    case GGUF_UINT32: return e.u32;
    case GGUF_INT32: return e.i32;
    case GGUF_FLOAT32: return e.f32;
    case GGUF_BOOL: return e.u8 != 0;
    case GGUF_UINT64: return (double)e.u64;
    case GGUF_INT64: return (double)e.i64;
    case GGUF_FLOAT64: return e.f64;
    default: return NAN;
    }
}

/* ---- writer ---- */

typedef struct wstr {
    char *ptr;
    uint64_t len;
} wstr;

typedef struct wkv {
    char *key;
    gguf_vtype type;
    uint8_t scalar[8];  /* packed little-endian value */
    wstr str;
    gguf_vtype arr_type;
    uint64_t arr_n;
    void *arr_data;     /* packed elements (numeric arrays) */
    wstr *arr_strs;
} wkv;

typedef struct wtensor {
    char *name;
    sl_type type;
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    const void *data;
    uint64_t size;
    uint64_t offset;
} wtensor;

struct gguf_writer {
    wkv *kv;
    size_t n_kv, cap_kv;
    wtensor *tensors;
    size_t n_tensors, cap_tensors;
    /* Setters cannot fail; the first problem is kept for gguf_write. */
    char deferred[sizeof(((sl_err *)0)->msg) - 64];
};

gguf_writer *gguf_writer_new(void)
{
    return calloc(1, sizeof(gguf_writer));
}

static void wkv_clear_value(wkv *kv)
{
    free(kv->str.ptr);
    free(kv->arr_data);
    if (kv->arr_strs)
        for (uint64_t i = 0; i < kv->arr_n; i++)
            free(kv->arr_strs[i].ptr);
    free(kv->arr_strs);
    char *key = kv->key;
    memset(kv, 0, sizeof *kv);
    kv->key = key;
}

void gguf_writer_free(gguf_writer *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n_kv; i++) {
        wkv_clear_value(&w->kv[i]);
        free(w->kv[i].key);
    }
    free(w->kv);
    for (size_t i = 0; i < w->n_tensors; i++)
        free(w->tensors[i].name);
    free(w->tensors);
    free(w);
}

static void defer_fail(gguf_writer *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void defer_fail(gguf_writer *w, const char *fmt, ...)
{
    if (w->deferred[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->deferred, sizeof w->deferred, fmt, ap);
    va_end(ap);
}

static bool grow(void **items, size_t *cap, size_t need, size_t item_size)
{
    if (need <= *cap)
        return true;
    size_t new_cap = *cap ? *cap * 2 : 16;
    void *p = realloc(*items, new_cap * item_size);
    if (!p)
        return false;
    *items = p;
    *cap = new_cap;
    return true;
}

/* The entry for key, emptied of any previous value; NULL after a deferred error. */
static wkv *kv_slot(gguf_writer *w, const char *key)
{
    if (!w)
        return NULL;
    if (!key || !key[0] || strlen(key) > KEY_MAX_LEN) {
        defer_fail(w, "invalid key (empty or longer than %u bytes)", KEY_MAX_LEN);
        return NULL;
    }
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, key) == 0) {
            wkv_clear_value(&w->kv[i]);
            return &w->kv[i];
        }
    }
    if (!grow((void **)&w->kv, &w->cap_kv, w->n_kv + 1, sizeof *w->kv)) {
        defer_fail(w, "out of memory adding key '%s'", key);
        return NULL;
    }
    wkv *kv = &w->kv[w->n_kv];
    memset(kv, 0, sizeof *kv);
    kv->key = strdup(key);
    if (!kv->key) {
        defer_fail(w, "out of memory adding key '%s'", key);
        return NULL;
    }
    w->n_kv++;
    return kv;
}

static void set_scalar(gguf_writer *w, const char *key, gguf_vtype type, const void *value)
{
    wkv *kv = kv_slot(w, key);
    if (!kv)
        return;
    kv->type = type;
    memcpy(kv->scalar, value, vtype_size[type]);
}

void gguf_set_u8(gguf_writer *w, const char *key, uint8_t v) { set_scalar(w, key, GGUF_UINT8, &v); }
void gguf_set_i8(gguf_writer *w, const char *key, int8_t v) { set_scalar(w, key, GGUF_INT8, &v); }
void gguf_set_u16(gguf_writer *w, const char *key, uint16_t v) { set_scalar(w, key, GGUF_UINT16, &v); }
void gguf_set_i16(gguf_writer *w, const char *key, int16_t v) { set_scalar(w, key, GGUF_INT16, &v); }
void gguf_set_u32(gguf_writer *w, const char *key, uint32_t v) { set_scalar(w, key, GGUF_UINT32, &v); }
void gguf_set_i32(gguf_writer *w, const char *key, int32_t v) { set_scalar(w, key, GGUF_INT32, &v); }
void gguf_set_u64(gguf_writer *w, const char *key, uint64_t v) { set_scalar(w, key, GGUF_UINT64, &v); }
void gguf_set_i64(gguf_writer *w, const char *key, int64_t v) { set_scalar(w, key, GGUF_INT64, &v); }
void gguf_set_f32(gguf_writer *w, const char *key, float v) { set_scalar(w, key, GGUF_FLOAT32, &v); }
void gguf_set_f64(gguf_writer *w, const char *key, double v) { set_scalar(w, key, GGUF_FLOAT64, &v); }

void gguf_set_bool(gguf_writer *w, const char *key, bool v)
{
    uint8_t byte = v ? 1 : 0;
    set_scalar(w, key, GGUF_BOOL, &byte);
}

static bool wstr_copy(wstr *dst, const char *s, uint64_t len)
{
    dst->ptr = copy_cstr(s, len);
    dst->len = len;
    return dst->ptr != NULL;
}

static void set_str_n(gguf_writer *w, const char *key, const char *s, uint64_t len)
{
    wkv *kv = kv_slot(w, key);
    if (!kv)
        return;
    kv->type = GGUF_STRING;
    if (!wstr_copy(&kv->str, s ? s : "", s ? len : 0))
        defer_fail(w, "out of memory for the value of '%s'", key);
}

void gguf_set_str(gguf_writer *w, const char *key, const char *v)
{
    set_str_n(w, key, v, v ? strlen(v) : 0);
}

void gguf_set_arr(gguf_writer *w, const char *key, gguf_vtype elem_type, const void *data, uint64_t n)
{
    if (w && ((unsigned)elem_type >= GGUF_VTYPE_COUNT_ || elem_type == GGUF_STRING ||
              elem_type == GGUF_ARRAY)) {
        defer_fail(w, "key '%s': gguf_set_arr takes numeric element types, not %s", key ? key : "",
                   gguf_vtype_name(elem_type));
        return;
    }
    wkv *kv = kv_slot(w, key);
    if (!kv)
        return;
    kv->type = GGUF_ARRAY;
    kv->arr_type = elem_type;
    size_t bytes;
    if (n > SIZE_MAX || sl_mul_size((size_t)n, vtype_size[elem_type], &bytes)) {
        defer_fail(w, "key '%s': array of %" PRIu64 " elements is too large", key, n);
        return;
    }
    if (bytes) {
        kv->arr_data = malloc(bytes);
        if (!kv->arr_data || !data) {
            defer_fail(w, "key '%s': %s", key, data ? "out of memory" : "array data is NULL");
            return;
        }
        memcpy(kv->arr_data, data, bytes);
    }
    kv->arr_n = n;
}

/* A string array of n empty slots, or NULL after a deferred error. */
static wstr *begin_str_array(gguf_writer *w, const char *key, uint64_t n)
{
    wkv *kv = kv_slot(w, key);
    if (!kv)
        return NULL;
    kv->type = GGUF_ARRAY;
    kv->arr_type = GGUF_STRING;
    if (n == 0)
        return NULL;
    kv->arr_strs = n <= SIZE_MAX / sizeof(wstr) ? calloc((size_t)n, sizeof(wstr)) : NULL;
    if (!kv->arr_strs) {
        defer_fail(w, "key '%s': out of memory for %" PRIu64 " strings", key, n);
        return NULL;
    }
    kv->arr_n = n;
    return kv->arr_strs;
}

void gguf_set_arr_str(gguf_writer *w, const char *key, const char *const *strs, uint64_t n)
{
    wstr *slots = begin_str_array(w, key, n);
    for (uint64_t i = 0; slots && i < n; i++) {
        const char *s = strs[i] ? strs[i] : "";
        if (!wstr_copy(&slots[i], s, strlen(s))) {
            defer_fail(w, "key '%s': out of memory for string %" PRIu64, key, i);
            return;
        }
    }
}

static void copy_scalar(gguf_writer *w, const gguf_kv *kv)
{
    switch (kv->type) {
    case GGUF_UINT8: gguf_set_u8(w, kv->key, (uint8_t)kv->v.u); break;
    case GGUF_INT8: gguf_set_i8(w, kv->key, (int8_t)kv->v.i); break;
    case GGUF_UINT16: gguf_set_u16(w, kv->key, (uint16_t)kv->v.u); break;
    case GGUF_INT16: gguf_set_i16(w, kv->key, (int16_t)kv->v.i); break;
    case GGUF_UINT32: gguf_set_u32(w, kv->key, (uint32_t)kv->v.u); break;
    case GGUF_INT32: gguf_set_i32(w, kv->key, (int32_t)kv->v.i); break;
    case GGUF_FLOAT32: gguf_set_f32(w, kv->key, (float)kv->v.f); break;
    case GGUF_BOOL: gguf_set_bool(w, kv->key, kv->v.u != 0); break;
    case GGUF_UINT64: gguf_set_u64(w, kv->key, kv->v.u); break;
    case GGUF_INT64: gguf_set_i64(w, kv->key, kv->v.i); break;
    case GGUF_FLOAT64: gguf_set_f64(w, kv->key, kv->v.f); break;
    default: defer_fail(w, "key '%s': cannot copy a %s", kv->key, gguf_vtype_name(kv->type));
    }
}

void gguf_copy_kvs(gguf_writer *w, const gguf_file *f)
{
    if (!w || !f)
        return;
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const gguf_kv *kv = &f->kv[i];
        if (kv->type == GGUF_STRING) {
            set_str_n(w, kv->key, kv->str.ptr, kv->str.len);
        } else if (kv->type == GGUF_ARRAY && kv->arr_type == GGUF_STRING) {
            wstr *slots = begin_str_array(w, kv->key, kv->arr_n);
            for (uint64_t j = 0; slots && j < kv->arr_n; j++)
                if (!wstr_copy(&slots[j], kv->arr_strs[j].ptr, kv->arr_strs[j].len)) {
                    defer_fail(w, "key '%s': out of memory for string %" PRIu64, kv->key, j);
                    break;
                }
        } else if (kv->type == GGUF_ARRAY) {
            gguf_set_arr(w, kv->key, kv->arr_type, kv->arr_data, kv->arr_n);
        } else {
            copy_scalar(w, kv);
        }
    }
}

static int check_new_tensor(const gguf_writer *w, const char *name, sl_type type,
                            uint32_t n_dims, const int64_t *ne, sl_err *err)
{
    if (!name || !name[0] || strlen(name) > NAME_MAX_LEN)
        return sl_fail(err, "tensor '%s': name must be 1..%u bytes (llama.cpp's limit)",
                       name ? name : "", NAME_MAX_LEN);
    for (size_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0)
            return sl_fail(err, "tensor '%s': duplicate tensor name", name);
    if (n_dims == 0 || n_dims > GGUF_MAX_DIMS)
        return sl_fail(err, "tensor '%s': n_dims %" PRIu32 " is outside 1..%d", name, n_dims,
                       GGUF_MAX_DIMS);
    for (uint32_t d = 0; d < n_dims; d++)
        if (ne[d] <= 0)
            return sl_fail(err, "tensor '%s': ne[%" PRIu32 "] is %" PRId64 ": every dimension must "
                           "be at least 1", name, d, ne[d]);
    if ((unsigned)type >= SL_TYPE_COUNT_ || !sl_type_supported((int)type))
        return sl_fail(err, "tensor '%s': tensor type %d (%s) is not supported", name, (int)type,
                       sl_type_name((int)type));
    return 0;
}

int gguf_add_tensor(gguf_writer *w, const char *name, sl_type type, uint32_t n_dims,
                    const int64_t *ne, const void *data, size_t size, sl_err *err)
{
    if (check_new_tensor(w, name, type, n_dims, ne, err))
        return -1;
    wtensor t = { .type = type, .n_dims = n_dims, .data = data };
    for (int d = 0; d < GGUF_MAX_DIMS; d++)
        t.ne[d] = (uint32_t)d < n_dims ? ne[d] : 1;
    char shape[128];
    switch (shape_bytes(type, t.ne, &t.size)) {
    case SHAPE_OK:
        break;
    case SHAPE_BLOCK:
        return sl_fail(err, "tensor '%s': ne[0] = %" PRId64 " is not a multiple of the %s block "
                       "size %" PRId64, name, ne[0], sl_type_name(type), sl_type_block_elems(type));
    default:
        return sl_fail(err, "tensor '%s': shape %s overflows 64 bits", name,
                       shape_text(n_dims, ne, shape, sizeof shape));
    }
    if (t.size != size)
        return sl_fail(err, "tensor '%s': size %zu does not match %" PRIu64 " bytes for %s %s",
                       name, size, t.size, sl_type_name(type),
                       shape_text(n_dims, ne, shape, sizeof shape));
    if (!data)
        return sl_fail(err, "tensor '%s': data is NULL", name);
    if (!grow((void **)&w->tensors, &w->cap_tensors, w->n_tensors + 1, sizeof *w->tensors) ||
        !(t.name = strdup(name)))
        return sl_fail(err, "tensor '%s': out of memory", name);
    w->tensors[w->n_tensors++] = t;
    return 0;
}

/* Output with one error check at the end: the first failure's errno is kept. */
typedef struct out {
    FILE *fp;
    uint64_t pos;
    int error;
} out;

static void out_bytes(out *o, const void *p, size_t n)
{
    if (!o->error && n && fwrite(p, 1, n, o->fp) != n)
        o->error = errno ? errno : EIO;
    o->pos += n;
}

static void out_u32(out *o, uint32_t v) { out_bytes(o, &v, sizeof v); }
static void out_u64(out *o, uint64_t v) { out_bytes(o, &v, sizeof v); }

static void out_str(out *o, const char *s, uint64_t len)
{
    out_u64(o, len);
    out_bytes(o, s, (size_t)len);
}

static void out_pad(out *o, uint64_t alignment)
{
    static const uint8_t zeros[256];
    uint64_t n = align_up(o->pos, alignment) - o->pos;
    while (n > 0) {
        size_t chunk = n < sizeof zeros ? (size_t)n : sizeof zeros;
        out_bytes(o, zeros, chunk);
        n -= chunk;
    }
}

static void out_kv(out *o, const wkv *kv)
{
    out_str(o, kv->key, strlen(kv->key));
    out_u32(o, (uint32_t)kv->type);
    if (kv->type == GGUF_STRING) {
        out_str(o, kv->str.ptr, kv->str.len);
    } else if (kv->type == GGUF_ARRAY) {
        out_u32(o, (uint32_t)kv->arr_type);
        out_u64(o, kv->arr_n);
        if (kv->arr_type == GGUF_STRING)
            for (uint64_t i = 0; i < kv->arr_n; i++)
                out_str(o, kv->arr_strs[i].ptr, kv->arr_strs[i].len);
        else
            out_bytes(o, kv->arr_data, (size_t)kv->arr_n * vtype_size[kv->arr_type]);
    } else {
        out_bytes(o, kv->scalar, vtype_size[kv->type]);
    }
}

static void out_tensor_info(out *o, const wtensor *t)
{
    out_str(o, t->name, strlen(t->name));
    out_u32(o, t->n_dims);
    for (uint32_t d = 0; d < t->n_dims; d++)
        out_bytes(o, &t->ne[d], sizeof t->ne[d]);
    out_u32(o, (uint32_t)t->type);
    out_u64(o, t->offset);
}

static int writer_alignment(const gguf_writer *w, const char *path, uint64_t *alignment, sl_err *err)
{
    *alignment = GGUF_DEFAULT_ALIGNMENT;
    for (size_t i = 0; i < w->n_kv; i++) {
        const wkv *kv = &w->kv[i];
        if (strcmp(kv->key, GGUF_KEY_ALIGNMENT) != 0)
            continue;
        if (kv->type != GGUF_UINT32)
            return sl_fail(err, "%s: %s is %s, expected uint32", path, GGUF_KEY_ALIGNMENT,
                           gguf_vtype_name(kv->type));
        uint32_t v;
        memcpy(&v, kv->scalar, sizeof v);
        if (v == 0 || (v & (v - 1)) != 0)
            return sl_fail(err, "%s: %s = %" PRIu32 " is not a nonzero power of two", path,
                           GGUF_KEY_ALIGNMENT, v);
        *alignment = v;
    }
    return 0;
}

static void write_all(out *o, gguf_writer *w, uint64_t alignment)
{
    out_bytes(o, "GGUF", 4);
    out_u32(o, 3);
    out_u64(o, w->n_tensors);
    out_u64(o, w->n_kv);
    for (size_t i = 0; i < w->n_kv; i++)
        out_kv(o, &w->kv[i]);
    uint64_t offset = 0;
    for (size_t i = 0; i < w->n_tensors; i++) {
        w->tensors[i].offset = offset;
        offset = align_up(offset + w->tensors[i].size, alignment);
        out_tensor_info(o, &w->tensors[i]);
    }
    out_pad(o, alignment);
    for (size_t i = 0; i < w->n_tensors; i++) {
        out_bytes(o, w->tensors[i].data, (size_t)w->tensors[i].size);
        out_pad(o, alignment);
    }
}

/* Writes path.tmp and renames it, so readers never see a half-written file. */
int gguf_write(gguf_writer *w, const char *path, sl_err *err)
{
    if (w->deferred[0])
        return sl_fail(err, "%s: not written: %s", path, w->deferred);
    uint64_t alignment;
    if (writer_alignment(w, path, &alignment, err))
        return -1;
    size_t tmp_len = strlen(path) + 5;
    char *tmp = malloc(tmp_len);
    if (!tmp)
        return sl_fail(err, "%s: out of memory", path);
    snprintf(tmp, tmp_len, "%s.tmp", path);
    out o = { .fp = fopen(tmp, "wb") };
    if (!o.fp) {
        int e = errno;
        sl_fail(err, "%s: cannot create: %s", tmp, strerror(e));
        free(tmp);
        return -1;
    }
    write_all(&o, w, alignment);
    if (!o.error && fflush(o.fp) != 0)
        o.error = errno;
    if (!o.error && fsync(fileno(o.fp)) != 0)
        o.error = errno;
    if (fclose(o.fp) != 0 && !o.error)
        o.error = errno;
    if (!o.error && rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        sl_fail(err, "%s: cannot rename %s to it: %s", path, tmp, strerror(e));
        free(tmp);
        return -1;
    }
    if (o.error) {
        unlink(tmp);
        sl_fail(err, "%s: write failed: %s", tmp, strerror(o.error));
        free(tmp);
        return -1;
    }
    free(tmp);
    return 0;
}
