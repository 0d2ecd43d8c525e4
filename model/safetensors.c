#include "model/safetensors.h"

#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/types.h"
#include "util/mapfile.h"

/* A header beyond this is not a checkpoint we should trust. */
#define ST_MAX_HEADER (100u << 20)

static size_t dtype_size(st_dtype t)
{
    return t == ST_I64 ? 8 : t == ST_F32 || t == ST_I32 ? 4 : 2;
}

const char *st_dtype_name(st_dtype t)
{
    switch (t) {
    case ST_F32: return "F32";
    case ST_F16: return "F16";
    case ST_BF16: return "BF16";
    case ST_I32: return "I32";
    case ST_I64: return "I64";
    }
    return "?";
}

static int parse_dtype(const char *s, st_dtype *out)
{
    if (strcmp(s, "F32") == 0) *out = ST_F32;
    else if (strcmp(s, "F16") == 0) *out = ST_F16;
    else if (strcmp(s, "BF16") == 0) *out = ST_BF16;
    else if (strcmp(s, "I32") == 0) *out = ST_I32;
    else if (strcmp(s, "I64") == 0) *out = ST_I64;
    else return -1;
    return 0;
}

static int get_u64(json_object *o, uint64_t *out)
{
    if (!json_object_is_type(o, json_type_int))
        return -1;
    int64_t v = json_object_get_int64(o);
    if (v < 0)
        return -1;
    /* json-c saturates at INT64_MAX: treat that as out of range too. */
    if (v == INT64_MAX)
        return -1;
    *out = (uint64_t)v;
    return 0;
}

static int parse_tensor(st_file *f, const char *name, json_object *desc, uint64_t data_size,
                        st_tensor *t, sl_err *err)
{
    json_object *dtype, *shape, *offsets;
    if (!json_object_is_type(desc, json_type_object) ||
        !json_object_object_get_ex(desc, "dtype", &dtype) ||
        !json_object_object_get_ex(desc, "shape", &shape) ||
        !json_object_object_get_ex(desc, "data_offsets", &offsets))
        return sl_fail(err, "%s: tensor '%s' lacks dtype, shape or data_offsets", f->path, name);
    if (!json_object_is_type(dtype, json_type_string) ||
        parse_dtype(json_object_get_string(dtype), &t->dtype))
        return sl_fail(err, "%s: tensor '%s' has unsupported dtype %s (F32, F16, BF16, I32, I64 only)",
                       f->path, name, json_object_to_json_string(dtype));
    if (!json_object_is_type(shape, json_type_array) || json_object_array_length(shape) > ST_MAX_DIMS)
        return sl_fail(err, "%s: tensor '%s': shape must be an array of at most %d sizes",
                       f->path, name, ST_MAX_DIMS);
    t->n_dims = (int)json_object_array_length(shape);
    uint64_t n = 1;
    for (int d = 0; d < t->n_dims; d++) {
        uint64_t v;
        if (get_u64(json_object_array_get_idx(shape, d), &v) || v > (1ull << 40) ||
            (v && n > (1ull << 40) / v))
            return sl_fail(err, "%s: tensor '%s': shape[%d] is not a sane size", f->path, name, d);
        t->shape[d] = (int64_t)v;
        n *= v;
    }
    t->n_elems = (int64_t)n;
    uint64_t begin, end;
    if (!json_object_is_type(offsets, json_type_array) || json_object_array_length(offsets) != 2 ||
        get_u64(json_object_array_get_idx(offsets, 0), &begin) ||
        get_u64(json_object_array_get_idx(offsets, 1), &end))
        return sl_fail(err, "%s: tensor '%s': data_offsets must be [begin, end]", f->path, name);
    if (begin > end || end > data_size)
        return sl_fail(err, "%s: tensor '%s': data_offsets [%llu, %llu] outside the %llu data bytes",
                       f->path, name, (unsigned long long)begin, (unsigned long long)end,
                       (unsigned long long)data_size);
    if (end - begin != n * dtype_size(t->dtype))
        return sl_fail(err, "%s: tensor '%s': %llu bytes for %llu elements of %s", f->path, name,
                       (unsigned long long)(end - begin), (unsigned long long)n,
                       st_dtype_name(t->dtype));
    t->size = end - begin;
    t->data = NULL; /* set by the caller from begin */
    t->name = strdup(name);
    if (!t->name)
        return sl_fail(err, "out of memory");
    t->data = (const void *)(uintptr_t)begin;
    return 0;
}

static int by_offset(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)((const st_tensor *)a)->data, y = (uintptr_t)((const st_tensor *)b)->data;
    return x < y ? -1 : x > y;
}

static int parse(st_file *f, sl_err *err)
{
    if (f->map_size < 8)
        return sl_fail(err, "%s: file of %zu bytes is too short for a safetensors header",
                       f->path, f->map_size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | f->map[i];
    if (hlen > ST_MAX_HEADER || hlen > f->map_size - 8)
        return sl_fail(err, "%s: header length %llu exceeds the file (%zu bytes)", f->path,
                       (unsigned long long)hlen, f->map_size);
    uint64_t data_size = f->map_size - 8 - hlen;
    json_tokener *tok = json_tokener_new_ex(64);
    if (!tok)
        return sl_fail(err, "out of memory");
    json_object *root = json_tokener_parse_ex(tok, (const char *)f->map + 8, (int)hlen);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t used = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (!root || jerr != json_tokener_success) {
        json_object_put(root);
        return sl_fail(err, "%s: header is not valid JSON (%s)", f->path,
                       json_tokener_error_desc(jerr == json_tokener_success ? json_tokener_continue : jerr));
    }
    /* Trailing bytes after the JSON object must be padding spaces. */
    for (size_t i = used; i < hlen; i++)
        if (f->map[8 + i] != ' ') {
            json_object_put(root);
            return sl_fail(err, "%s: junk after the JSON header at byte %zu", f->path, 8 + i);
        }
    if (!json_object_is_type(root, json_type_object)) {
        json_object_put(root);
        return sl_fail(err, "%s: header is not a JSON object", f->path);
    }
    int cap = json_object_object_length(root);
    f->tensors = calloc((size_t)(cap ? cap : 1), sizeof *f->tensors);
    if (!f->tensors) {
        json_object_put(root);
        return sl_fail(err, "out of memory");
    }
    int rc = 0;
    json_object_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0)
            continue;
        if (parse_tensor(f, key, val, data_size, &f->tensors[f->n_tensors], err)) {
            rc = -1;
            break;
        }
        f->n_tensors++;
    }
    json_object_put(root);
    if (rc)
        return -1;
    qsort(f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, by_offset);
    const uint8_t *data = f->map + 8 + hlen;
    for (int i = 0; i < f->n_tensors; i++) {
        uintptr_t begin = (uintptr_t)f->tensors[i].data;
        if (i > 0) {
            const st_tensor *p = &f->tensors[i - 1];
            uintptr_t prev_end = (uintptr_t)(p->data) - (uintptr_t)data + p->size;
            if (begin < prev_end)
                return sl_fail(err, "%s: tensors '%s' and '%s' overlap", f->path, p->name,
                               f->tensors[i].name);
        }
        f->tensors[i].data = data + begin;
    }
    return 0;
}

int st_open_mem(st_file **out, const void *buf, size_t size, const char *name, sl_err *err)
{
    *out = NULL;
    st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(name))) {
        free(f);
        return sl_fail(err, "out of memory");
    }
    f->map = buf;
    f->map_size = size;
    if (parse(f, err)) {
        st_close(f);
        return -1;
    }
    *out = f;
    return 0;
}

int st_open(st_file **out, const char *path, sl_err *err)
{
    *out = NULL;
    const void *map;
    size_t size;
    if (sl_map_file(path, &map, &size, err))
        return -1;
    if (st_open_mem(out, map, size, path, err)) {
        sl_unmap_file(map, size);
        return -1;
    }
    (*out)->owns_map = 1;
    return 0;
}

void st_close(st_file *f)
{
    if (!f)
        return;
    for (int i = 0; i < f->n_tensors; i++)
        free(f->tensors[i].name);
    free(f->tensors);
    if (f->owns_map)
        sl_unmap_file(f->map, f->map_size);
    free(f->path);
    free(f);
}

const st_tensor *st_find(const st_file *f, const char *name)
{
    for (int i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0)
            return &f->tensors[i];
    return NULL;
}

void st_read_f32(const st_tensor *t, int64_t i, int64_t n, float *out)
{
    const uint8_t *p = (const uint8_t *)t->data + (size_t)i * dtype_size(t->dtype);
    for (int64_t j = 0; j < n; j++) {
        if (t->dtype == ST_F32) {
            memcpy(&out[j], p + 4 * j, 4);
        } else if (t->dtype == ST_I32 || t->dtype == ST_I64) {
            int32_t v32;
            int64_t v64;
            if (t->dtype == ST_I32)
                memcpy(&v32, p + 4 * j, 4), v64 = v32;
            else
                memcpy(&v64, p + 8 * j, 8);
            out[j] = (float)v64;
        } else {
            uint16_t h;
            memcpy(&h, p + 2 * j, 2);
            out[j] = t->dtype == ST_F16 ? sl_f16_to_f32(h) : sl_bf16_to_f32(h);
        }
    }
}
