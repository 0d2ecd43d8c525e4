/* GGUF v2/v3: an mmap reader that validates everything before use, and a
 * writer.
 *
 * The reader never trusts the file: every count, length, offset and size is
 * checked against the bytes that exist, and a malformed file gives an error
 * that names the field (e.g. "model.gguf: tensor 'blk.0.attn_q.weight':
 * offset 1234 + size 4096 runs past the end of the file (5000 bytes)").
 *
 * What the reader rejects beyond the obvious: GGUF v1 and big-endian files,
 * nested arrays (arrays of arrays), keys and tensor names that are empty or
 * contain a NUL byte, dimensions below 1 (empty tensors), duplicate keys and
 * tensor names, overlapping tensor data, and a general.alignment that is not
 * a uint32 power of two. Bool values other than 0 are read as 1. */
#ifndef SLUICE_GGUF_H
#define SLUICE_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/types.h"
#include "util/err.h"

#define GGUF_MAX_DIMS 4
#define GGUF_DEFAULT_ALIGNMENT 32

typedef enum gguf_vtype {
    GGUF_UINT8 = 0, GGUF_INT8 = 1, GGUF_UINT16 = 2, GGUF_INT16 = 3,
    GGUF_UINT32 = 4, GGUF_INT32 = 5, GGUF_FLOAT32 = 6, GGUF_BOOL = 7,
    GGUF_STRING = 8, GGUF_ARRAY = 9, GGUF_UINT64 = 10, GGUF_INT64 = 11,
    GGUF_FLOAT64 = 12,
    GGUF_VTYPE_COUNT_
} gguf_vtype;

/* A string inside the mapped file: not NUL-terminated. */
typedef struct gguf_str {
    const char *ptr;
    uint64_t len;
} gguf_str;

typedef struct gguf_kv {
    char *key;            /* NUL-terminated copy */
    gguf_vtype type;
    /* scalars, widened; for bool, u is 0 or 1 */
    union {
        uint64_t u;
        int64_t i;
        double f;
    } v;
    gguf_str str;         /* type == GGUF_STRING */
    /* type == GGUF_ARRAY */
    gguf_vtype arr_type;
    uint64_t arr_n;
    const void *arr_data; /* packed little-endian elements in the map (numeric arrays) */
    gguf_str *arr_strs;   /* arr_n entries when arr_type == GGUF_STRING */
} gguf_kv;

typedef struct gguf_tensor {
    char *name;           /* NUL-terminated copy */
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS]; /* ne[0] innermost; unused dims are 1 */
    sl_type type;
    uint64_t offset;      /* relative to the data section */
    uint64_t size;        /* bytes */
    const void *data;     /* in the map */
} gguf_tensor;

typedef struct gguf_file {
    char *path;
    const uint8_t *map;
    size_t map_size;
    bool owns_map;        /* false for gguf_open_mem */
    uint32_t version;
    uint64_t n_kv;
    gguf_kv *kv;
    uint64_t n_tensors;
    gguf_tensor *tensors;
    uint64_t alignment;
    uint64_t data_offset; /* start of the tensor data section in the file */
} gguf_file;

/* Maps and validates path. */
int gguf_open(gguf_file **out, const char *path, sl_err *err);
/* Validates a buffer the caller keeps alive (fuzzing, tests); name is used in
 * messages. */
int gguf_open_mem(gguf_file **out, const void *buf, size_t size, const char *name, sl_err *err);
void gguf_close(gguf_file *f);

const gguf_kv *gguf_find(const gguf_file *f, const char *key);
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name);

/* Typed getters. Integer getters accept any integer type whose value fits;
 * float getters accept float32/float64 and integers. A missing key returns
 * 1 and leaves *out untouched (so callers keep defaults); a present key of
 * the wrong type or range fails with an error naming it. */
int gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out, sl_err *err);
int gguf_get_i64(const gguf_file *f, const char *key, int64_t *out, sl_err *err);
int gguf_get_f32(const gguf_file *f, const char *key, float *out, sl_err *err);
int gguf_get_bool(const gguf_file *f, const char *key, bool *out, sl_err *err);
/* Returns a malloc'd NUL-terminated copy in *out. */
int gguf_get_str(const gguf_file *f, const char *key, char **out, sl_err *err);
/* Array element i as a number (any numeric element type); NAN when kv is
 * not a numeric array or i is out of range (string elements: kv->arr_strs). */
double gguf_arr_num(const gguf_kv *kv, uint64_t i);
/* Required-key forms: missing is an error naming the key. */
int gguf_req_u32(const gguf_file *f, const char *key, uint32_t *out, sl_err *err);

const char *gguf_vtype_name(gguf_vtype t);
/* Any of the eight integer types, signed or not. */
bool gguf_vtype_is_int(gguf_vtype t);

/* ---- writer ---- */

typedef struct gguf_writer gguf_writer;

gguf_writer *gguf_writer_new(void);
void gguf_writer_free(gguf_writer *w);
/* Setters replace an existing key of the same name (keeping its position).
 * Strings are copied. Setters cannot fail: an invalid argument or an
 * allocation failure is remembered and reported by gguf_write. */
void gguf_set_u32(gguf_writer *w, const char *key, uint32_t v);
void gguf_set_i32(gguf_writer *w, const char *key, int32_t v);
void gguf_set_u64(gguf_writer *w, const char *key, uint64_t v);
void gguf_set_f32(gguf_writer *w, const char *key, float v);
void gguf_set_bool(gguf_writer *w, const char *key, bool v);
void gguf_set_str(gguf_writer *w, const char *key, const char *v);
/* The remaining scalar types (so every GGUF value type can be written). */
void gguf_set_u8(gguf_writer *w, const char *key, uint8_t v);
void gguf_set_i8(gguf_writer *w, const char *key, int8_t v);
void gguf_set_u16(gguf_writer *w, const char *key, uint16_t v);
void gguf_set_i16(gguf_writer *w, const char *key, int16_t v);
void gguf_set_i64(gguf_writer *w, const char *key, int64_t v);
void gguf_set_f64(gguf_writer *w, const char *key, double v);
/* Numeric arrays: elem_type is the GGUF element type, data holds n packed
 * elements of it (copied). */
void gguf_set_arr(gguf_writer *w, const char *key, gguf_vtype elem_type, const void *data, uint64_t n);
void gguf_set_arr_str(gguf_writer *w, const char *key, const char *const *strs, uint64_t n);
/* Copies every key of f (e.g. quantize keeps the metadata). */
void gguf_copy_kvs(gguf_writer *w, const gguf_file *f);
/* Adds a tensor (name 1..63 bytes, llama.cpp's limit); data (size bytes,
 * must equal the size implied by type and ne) is referenced, not copied: it
 * must stay valid until gguf_write. */
int gguf_add_tensor(gguf_writer *w, const char *name, sl_type type, uint32_t n_dims,
                    const int64_t *ne, const void *data, size_t size, sl_err *err);
/* Writes a GGUF v3 file (alignment from general.alignment, default 32) to
 * path.tmp, then renames it over path; tensors are laid out in the order
 * added, each padded with zeros to the alignment. */
int gguf_write(gguf_writer *w, const char *path, sl_err *err);

#endif
