/* Safetensors reader (Hugging Face checkpoints), mmap'd and validated.
 *
 * Layout: u64 little-endian header length N, N bytes of JSON mapping tensor
 * names to {dtype, shape, data_offsets: [begin, end]} relative to the data
 * that follows the header (plus an optional "__metadata__" object). Every
 * offset, shape and size is checked against the file before use. */
#ifndef SLUICE_SAFETENSORS_H
#define SLUICE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

/* Integer tensors are buffers (Gemma 4 assistant's token_ordering); they
 * read as floats, exact below 2^24. */
typedef enum st_dtype { ST_F32, ST_F16, ST_BF16, ST_I32, ST_I64 } st_dtype;

#define ST_MAX_DIMS 8

typedef struct st_tensor {
    char *name;
    st_dtype dtype;
    int n_dims;
    int64_t shape[ST_MAX_DIMS];
    int64_t n_elems;
    const void *data;   /* in the map */
    uint64_t size;      /* bytes */
} st_tensor;

typedef struct st_file {
    char *path;
    const uint8_t *map;
    size_t map_size;
    int owns_map;
    int n_tensors;
    st_tensor *tensors;
} st_file;

int st_open(st_file **out, const char *path, sl_err *err);
/* Parses a buffer the caller keeps alive (fuzzing); name is for messages. */
int st_open_mem(st_file **out, const void *buf, size_t size, const char *name, sl_err *err);
void st_close(st_file *f);
const st_tensor *st_find(const st_file *f, const char *name);
const char *st_dtype_name(st_dtype t);
/* Converts element i..i+n of a tensor to f32. */
void st_read_f32(const st_tensor *t, int64_t i, int64_t n, float *out);

#endif
