/* GGUF reader and writer: round trips of every value and tensor type, a
 * hand-built v2 file, and one malformed file per validation rule, each of
 * whose errors must name the field at fault. */
#include "model/gguf.h"
#include "tests/test.h"

#include <float.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[64];

static const char *tmp_path(const char *name)
{
    static char buf[4][256];
    static int next;
    char *p = buf[next++ % 4];
    snprintf(p, 256, "%s/%s", tmpdir, name);
    return p;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng_next(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void fill_random(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)rng_next();
}

/* Block layouts from the GGUF/ggml spec, written out here rather than asked
 * of kernels/types.c so a wrong size there shows up as a failure. */
typedef struct tensor_case {
    const char *name;
    sl_type type;
    int64_t block_elems;
    size_t block_bytes;
    uint32_t n_dims;
    int64_t ne[4];
} tensor_case;

static const tensor_case tensor_cases[] = {
    {"f32.weight", SL_TYPE_F32, 1, 4, 2, {7, 3, 1, 1}},
    {"f16.weight", SL_TYPE_F16, 1, 2, 3, {5, 2, 3, 1}},
    {"bf16.weight", SL_TYPE_BF16, 1, 2, 1, {3, 1, 1, 1}},
    {"q8_0.weight", SL_TYPE_Q8_0, 32, 34, 2, {64, 3, 1, 1}},
    {"q4_0.weight", SL_TYPE_Q4_0, 32, 18, 3, {32, 2, 2, 1}},
    {"q4_K.weight", SL_TYPE_Q4_K, 256, 144, 2, {256, 2, 1, 1}},
    {"q5_K.weight", SL_TYPE_Q5_K, 256, 176, 1, {512, 1, 1, 1}},
    {"q6_K.weight", SL_TYPE_Q6_K, 256, 210, 4, {256, 1, 1, 2}},
};
#define N_TENSOR_CASES (sizeof tensor_cases / sizeof tensor_cases[0])

static size_t case_bytes(const tensor_case *c)
{
    return (size_t)(c->ne[0] / c->block_elems) * c->block_bytes * (size_t)(c->ne[1] * c->ne[2] * c->ne[3]);
}

/* ---- every value type ---- */

static const uint8_t arr_u8[] = {0, 1, 255};
static const int8_t arr_i8[] = {-128, 0, 127};
static const uint16_t arr_u16[] = {0, 65535, 1234};
static const int16_t arr_i16[] = {-32768, 32767, -1};
static const uint32_t arr_u32[] = {4000000000u, 7};
static const int32_t arr_i32[] = {-2000000000, 2000000000, 0, -5};
static const float arr_f32[] = {1.5f, -0.25f, 3e38f};
static const uint8_t arr_bool[] = {1, 0, 1, 1};
static const uint64_t arr_u64[] = {UINT64_MAX, 0, 1ull << 40};
static const int64_t arr_i64[] = {INT64_MIN, INT64_MAX};
static const double arr_f64[] = {1e300, -2.5, 0.1};
static const char *const arr_strs[] = {"alpha", "", "g\xc3\xa9mma", "<bos>"};

typedef struct arr_case {
    const char *key;
    gguf_vtype type;
    const void *data;
    uint64_t n;
    size_t elem_size;
} arr_case;

static const arr_case arr_cases[] = {
    {"arr.u8", GGUF_UINT8, arr_u8, 3, 1},     {"arr.i8", GGUF_INT8, arr_i8, 3, 1},
    {"arr.u16", GGUF_UINT16, arr_u16, 3, 2},  {"arr.i16", GGUF_INT16, arr_i16, 3, 2},
    {"arr.u32", GGUF_UINT32, arr_u32, 2, 4},  {"arr.i32", GGUF_INT32, arr_i32, 4, 4},
    {"arr.f32", GGUF_FLOAT32, arr_f32, 3, 4}, {"arr.bool", GGUF_BOOL, arr_bool, 4, 1},
    {"arr.u64", GGUF_UINT64, arr_u64, 3, 8},  {"arr.i64", GGUF_INT64, arr_i64, 2, 8},
    {"arr.f64", GGUF_FLOAT64, arr_f64, 3, 8}, {"arr.empty", GGUF_UINT32, NULL, 0, 4},
};
#define N_ARR_CASES (sizeof arr_cases / sizeof arr_cases[0])

static double elem_as_double(gguf_vtype t, const void *data, uint64_t i)
{
    switch (t) {
    case GGUF_UINT8: return ((const uint8_t *)data)[i];
    case GGUF_INT8: return ((const int8_t *)data)[i];
    case GGUF_UINT16: return ((const uint16_t *)data)[i];
    case GGUF_INT16: return ((const int16_t *)data)[i];
    case GGUF_UINT32: return ((const uint32_t *)data)[i];
    case GGUF_INT32: return ((const int32_t *)data)[i];
    case GGUF_FLOAT32: return ((const float *)data)[i];
    case GGUF_BOOL: return ((const uint8_t *)data)[i];
    case GGUF_UINT64: return (double)((const uint64_t *)data)[i];
    case GGUF_INT64: return (double)((const int64_t *)data)[i];
    case GGUF_FLOAT64: return ((const double *)data)[i];
    default: return NAN;
    }
}

static void set_all_values(gguf_writer *w)
{
    gguf_set_str(w, "replaced", "first value, replaced below");
    gguf_set_u8(w, "v.u8", 200);
    gguf_set_i8(w, "v.i8", -100);
    gguf_set_u16(w, "v.u16", 60000);
    gguf_set_i16(w, "v.i16", -30000);
    gguf_set_u32(w, "v.u32", 4000000000u);
    gguf_set_i32(w, "v.i32", -2000000000);
    gguf_set_f32(w, "v.f32", 3.25f);
    gguf_set_bool(w, "v.bool", true);
    gguf_set_bool(w, "v.bool_false", false);
    gguf_set_str(w, "v.str", "h\xc3\xa9llo, world");
    gguf_set_str(w, "v.str_empty", "");
    gguf_set_u64(w, "v.u64", (1ull << 63) + 5);
    gguf_set_i64(w, "v.i64", INT64_MIN + 7);
    gguf_set_f64(w, "v.f64", 1e300);
    for (size_t i = 0; i < N_ARR_CASES; i++)
        gguf_set_arr(w, arr_cases[i].key, arr_cases[i].type, arr_cases[i].data, arr_cases[i].n);
    gguf_set_arr_str(w, "arr.str", arr_strs, 4);
    gguf_set_u32(w, "replaced", 77);
}

static void check_scalar(const gguf_file *f, const char *key, gguf_vtype type)
{
    const gguf_kv *kv = gguf_find(f, key);
    CHECKF(kv != NULL, "key %s missing", key);
    if (kv)
        CHECKF(kv->type == type, "key %s has type %s, wrote %s", key, gguf_vtype_name(kv->type),
               gguf_vtype_name(type));
}

static void check_str_kv(const gguf_file *f, const char *key, const char *want)
{
    const gguf_kv *kv = gguf_find(f, key);
    CHECKF(kv && kv->type == GGUF_STRING, "key %s", key);
    if (kv && kv->type == GGUF_STRING)
        CHECK(kv->str.len == strlen(want) && memcmp(kv->str.ptr, want, kv->str.len) == 0);
    char *s = NULL;
    sl_err err = {{0}};
    CHECK(gguf_get_str(f, key, &s, &err) == 0);
    CHECK(s && strcmp(s, want) == 0);
    free(s);
}

static void check_all_values(const gguf_file *f)
{
    check_scalar(f, "v.u8", GGUF_UINT8);
    check_scalar(f, "v.i8", GGUF_INT8);
    check_scalar(f, "v.u16", GGUF_UINT16);
    check_scalar(f, "v.i16", GGUF_INT16);
    check_scalar(f, "v.u32", GGUF_UINT32);
    check_scalar(f, "v.i32", GGUF_INT32);
    check_scalar(f, "v.f32", GGUF_FLOAT32);
    check_scalar(f, "v.bool", GGUF_BOOL);
    check_scalar(f, "v.u64", GGUF_UINT64);
    check_scalar(f, "v.i64", GGUF_INT64);
    check_scalar(f, "v.f64", GGUF_FLOAT64);
    check_scalar(f, "replaced", GGUF_UINT32);
    CHECK(gguf_find(f, "v.u8")->v.u == 200);
    CHECK(gguf_find(f, "v.i8")->v.i == -100);
    CHECK(gguf_find(f, "v.u16")->v.u == 60000);
    CHECK(gguf_find(f, "v.i16")->v.i == -30000);
    CHECK(gguf_find(f, "v.u32")->v.u == 4000000000u);
    CHECK(gguf_find(f, "v.i32")->v.i == -2000000000);
    CHECK(gguf_find(f, "v.f32")->v.f == 3.25);
    CHECK(gguf_find(f, "v.bool")->v.u == 1);
    CHECK(gguf_find(f, "v.bool_false")->v.u == 0);
    CHECK(gguf_find(f, "v.u64")->v.u == (1ull << 63) + 5);
    CHECK(gguf_find(f, "v.i64")->v.i == INT64_MIN + 7);
    CHECK(gguf_find(f, "v.f64")->v.f == 1e300);
    CHECK(gguf_find(f, "replaced")->v.u == 77);
    check_str_kv(f, "v.str", "h\xc3\xa9llo, world");
    check_str_kv(f, "v.str_empty", "");

    for (size_t i = 0; i < N_ARR_CASES; i++) {
        const arr_case *c = &arr_cases[i];
        const gguf_kv *kv = gguf_find(f, c->key);
        CHECKF(kv && kv->type == GGUF_ARRAY, "%s", c->key);
        if (!kv || kv->type != GGUF_ARRAY)
            continue;
        CHECKF(kv->arr_type == c->type && kv->arr_n == c->n, "%s: %s x %llu", c->key,
               gguf_vtype_name(kv->arr_type), (unsigned long long)kv->arr_n);
        if (c->n)
            CHECKF(kv->arr_data && memcmp(kv->arr_data, c->data, c->n * c->elem_size) == 0,
                   "%s bytes", c->key);
        for (uint64_t j = 0; j < c->n && j < kv->arr_n; j++)
            CHECKF(gguf_arr_num(kv, j) == elem_as_double(c->type, c->data, j), "%s[%llu]", c->key,
                   (unsigned long long)j);
        CHECK(isnan(gguf_arr_num(kv, c->n)));
    }
    const gguf_kv *kv = gguf_find(f, "arr.str");
    CHECK(kv && kv->type == GGUF_ARRAY && kv->arr_type == GGUF_STRING && kv->arr_n == 4);
    if (kv && kv->arr_n == 4 && kv->arr_strs)
        for (int j = 0; j < 4; j++)
            CHECKF(kv->arr_strs[j].len == strlen(arr_strs[j]) &&
                   memcmp(kv->arr_strs[j].ptr, arr_strs[j], kv->arr_strs[j].len) == 0, "arr.str[%d]", j);
}

/* ---- round trip ---- */

static uint8_t *tensor_data[N_TENSOR_CASES];

static void add_all_tensors(gguf_writer *w)
{
    for (size_t i = 0; i < N_TENSOR_CASES; i++) {
        const tensor_case *c = &tensor_cases[i];
        size_t n = case_bytes(c);
        if (!tensor_data[i]) {
            tensor_data[i] = malloc(n);
            fill_random(tensor_data[i], n);
        }
        sl_err err = {{0}};
        int rc = gguf_add_tensor(w, c->name, c->type, c->n_dims, c->ne, tensor_data[i], n, &err);
        CHECKF(rc == 0, "add %s: %s", c->name, err.msg);
    }
}

static void check_all_tensors(const gguf_file *f, uint64_t alignment)
{
    CHECK(f->alignment == alignment);
    CHECK(f->data_offset % alignment == 0);
    CHECK(f->n_tensors == N_TENSOR_CASES);
    for (size_t i = 0; i < N_TENSOR_CASES && i < f->n_tensors; i++) {
        const tensor_case *c = &tensor_cases[i];
        const gguf_tensor *t = gguf_find_tensor(f, c->name);
        CHECKF(t == &f->tensors[i], "%s found in order", c->name);
        if (!t)
            continue;
        CHECK(t->type == c->type);
        CHECK(t->n_dims == c->n_dims);
        for (int d = 0; d < 4; d++)
            CHECKF(t->ne[d] == c->ne[d], "%s ne[%d] = %lld", c->name, d, (long long)t->ne[d]);
        CHECKF(t->size == case_bytes(c), "%s size %llu", c->name, (unsigned long long)t->size);
        CHECKF(t->offset % alignment == 0, "%s offset %llu", c->name, (unsigned long long)t->offset);
        CHECK((const uint8_t *)t->data == f->map + f->data_offset + t->offset);
        CHECK(f->data_offset + t->offset + t->size <= f->map_size);
        CHECKF(memcmp(t->data, tensor_data[i], case_bytes(c)) == 0, "%s data", c->name);
        if (i > 0)
            CHECK(f->tensors[i - 1].offset + f->tensors[i - 1].size <= t->offset);
    }
    CHECK(gguf_find_tensor(f, "no.such.tensor") == NULL);
}

static void test_round_trip(uint32_t alignment)
{
    const char *path = tmp_path(alignment ? "aligned.gguf" : "default.gguf");
    gguf_writer *w = gguf_writer_new();
    set_all_values(w);
    if (alignment)
        gguf_set_u32(w, "general.alignment", alignment);
    add_all_tensors(w);
    sl_err err = {{0}};
    CHECKF(gguf_write(w, path, &err) == 0, "write: %s", err.msg);
    gguf_writer_free(w);

    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK(access(tmp, F_OK) != 0);

    gguf_file *f = NULL;
    CHECKF(gguf_open(&f, path, &err) == 0, "open: %s", err.msg);
    if (!f)
        return;
    CHECK(f->version == 3);
    CHECK(f->owns_map);
    /* 15 scalars/strings, the array cases, arr.str, and general.alignment if set */
    CHECK(f->n_kv == 15 + N_ARR_CASES + 1 + (alignment ? 1 : 0));
    check_all_values(f);
    check_all_tensors(f, alignment ? alignment : GGUF_DEFAULT_ALIGNMENT);
    gguf_close(f);
}

/* Copying every kv into a new writer and writing again gives equal values. */
static void test_copy_kvs(void)
{
    sl_err err = {{0}};
    gguf_file *src = NULL;
    CHECKF(gguf_open(&src, tmp_path("aligned.gguf"), &err) == 0, "%s", err.msg);
    if (!src)
        return;
    gguf_writer *w = gguf_writer_new();
    gguf_copy_kvs(w, src);
    gguf_set_str(w, "extra.key", "added after the copy");
    CHECKF(gguf_write(w, tmp_path("copy.gguf"), &err) == 0, "%s", err.msg);
    gguf_writer_free(w);
    gguf_file *dst = NULL;
    CHECKF(gguf_open(&dst, tmp_path("copy.gguf"), &err) == 0, "%s", err.msg);
    if (dst) {
        CHECK(dst->n_kv == src->n_kv + 1);
        CHECK(dst->n_tensors == 0);
        CHECK(dst->alignment == src->alignment);
        check_all_values(dst);
        check_str_kv(dst, "extra.key", "added after the copy");
        for (uint64_t i = 0; i < src->n_kv && i < dst->n_kv; i++)
            CHECKF(strcmp(src->kv[i].key, dst->kv[i].key) == 0 && src->kv[i].type == dst->kv[i].type,
                   "kv %llu", (unsigned long long)i);
    }
    gguf_close(dst);
    gguf_close(src);
}

static void test_getters(void)
{
    sl_err err = {{0}};
    gguf_file *f = NULL;
    CHECKF(gguf_open(&f, tmp_path("default.gguf"), &err) == 0, "%s", err.msg);
    if (!f)
        return;
    uint32_t u32 = 123;
    int64_t i64 = 0;
    float f32 = 0;
    bool b = false;
    char *s = NULL;

    CHECK(gguf_get_u32(f, "missing.key", &u32, &err) == 1 && u32 == 123);
    CHECK(gguf_get_i64(f, "missing.key", &i64, &err) == 1 && i64 == 0);
    CHECK(gguf_get_f32(f, "missing.key", &f32, &err) == 1);
    CHECK(gguf_get_bool(f, "missing.key", &b, &err) == 1 && !b);
    CHECK(gguf_get_str(f, "missing.key", &s, &err) == 1 && s == NULL);

    CHECK(gguf_get_u32(f, "v.u8", &u32, &err) == 0 && u32 == 200);
    CHECK(gguf_get_u32(f, "v.u32", &u32, &err) == 0 && u32 == 4000000000u);
    CHECK(gguf_get_u32(f, "v.i8", &u32, &err) == -1);
    CHECK_ERR_HAS(err, "v.i8");
    CHECK_ERR_HAS(err, "uint32");
    CHECK(gguf_get_u32(f, "v.u64", &u32, &err) == -1);
    CHECK_ERR_HAS(err, "v.u64");
    CHECK(gguf_get_u32(f, "v.str", &u32, &err) == -1);
    CHECK_ERR_HAS(err, "'v.str' is string");
    CHECK_ERR_HAS(err, "default.gguf");
    CHECK(gguf_get_u32(f, "arr.u32", &u32, &err) == -1);
    CHECK_ERR_HAS(err, "array of uint32");

    CHECK(gguf_get_i64(f, "v.i64", &i64, &err) == 0 && i64 == INT64_MIN + 7);
    CHECK(gguf_get_i64(f, "v.i16", &i64, &err) == 0 && i64 == -30000);
    CHECK(gguf_get_i64(f, "v.u32", &i64, &err) == 0 && i64 == 4000000000ll);
    CHECK(gguf_get_i64(f, "v.u64", &i64, &err) == -1);
    CHECK_ERR_HAS(err, "int64");
    CHECK(gguf_get_i64(f, "v.f32", &i64, &err) == -1);
    CHECK_ERR_HAS(err, "'v.f32' is float32");

    CHECK(gguf_get_f32(f, "v.f32", &f32, &err) == 0 && f32 == 3.25f);
    CHECK(gguf_get_f32(f, "v.i16", &f32, &err) == 0 && f32 == -30000.0f);
    CHECK(gguf_get_f32(f, "v.f64", &f32, &err) == -1);
    CHECK_ERR_HAS(err, "v.f64");
    CHECK(gguf_get_f32(f, "v.bool", &f32, &err) == -1);
    CHECK_ERR_HAS(err, "'v.bool' is bool");

    CHECK(gguf_get_bool(f, "v.bool", &b, &err) == 0 && b);
    CHECK(gguf_get_bool(f, "v.bool_false", &b, &err) == 0 && !b);
    CHECK(gguf_get_bool(f, "v.u8", &b, &err) == -1);
    CHECK_ERR_HAS(err, "'v.u8' is uint8, expected bool");

    CHECK(gguf_get_str(f, "v.u8", &s, &err) == -1 && s == NULL);
    CHECK_ERR_HAS(err, "'v.u8' is uint8, expected string");

    CHECK(gguf_req_u32(f, "v.u16", &u32, &err) == 0 && u32 == 60000);
    CHECK(gguf_req_u32(f, "gemma.block_count", &u32, &err) == -1);
    CHECK_ERR_HAS(err, "gemma.block_count");
    CHECK_ERR_HAS(err, "missing");
    CHECK(isnan(gguf_arr_num(gguf_find(f, "arr.str"), 0)));
    CHECK(isnan(gguf_arr_num(gguf_find(f, "v.u8"), 0)));
    gguf_close(f);
}

static void test_writer_errors(void)
{
    sl_err err = {{0}};
    gguf_writer *w = gguf_writer_new();
    uint8_t data[4096] = {0};
    int64_t ne[4] = {32, 2, 1, 1};
    CHECK(gguf_add_tensor(w, "a", SL_TYPE_Q8_0, 2, ne, data, 68, &err) == 0);
    CHECK(gguf_add_tensor(w, "a", SL_TYPE_Q8_0, 2, ne, data, 68, &err) == -1);
    CHECK_ERR_HAS(err, "duplicate tensor name");
    CHECK(gguf_add_tensor(w, "b", SL_TYPE_Q8_0, 2, ne, data, 64, &err) == -1);
    CHECK_ERR_HAS(err, "'b': size 64");
    int64_t odd[1] = {33};
    CHECK(gguf_add_tensor(w, "c", SL_TYPE_Q8_0, 1, odd, data, 34, &err) == -1);
    CHECK_ERR_HAS(err, "ne[0] = 33");
    CHECK(gguf_add_tensor(w, "d", (sl_type)9, 1, ne, data, 32, &err) == -1);
    CHECK_ERR_HAS(err, "tensor type 9");
    CHECK(gguf_add_tensor(w, "e", SL_TYPE_F32, 0, ne, data, 4, &err) == -1);
    CHECK_ERR_HAS(err, "n_dims 0");
    int64_t neg[2] = {4, -1};
    CHECK(gguf_add_tensor(w, "f", SL_TYPE_F32, 2, neg, data, 16, &err) == -1);
    CHECK_ERR_HAS(err, "ne[1]");
    CHECK(gguf_add_tensor(w, "", SL_TYPE_F32, 1, ne, data, 128, &err) == -1);
    CHECK_ERR_HAS(err, "name");

    CHECK(gguf_write(w, "/nonexistent-dir/x.gguf", &err) == -1);
    CHECK_ERR_HAS(err, "/nonexistent-dir/x.gguf.tmp");
    CHECK_ERR_HAS(err, "No such file");

    gguf_set_u32(w, "general.alignment", 48);
    CHECK(gguf_write(w, tmp_path("bad_align.gguf"), &err) == -1);
    CHECK_ERR_HAS(err, "general.alignment");
    CHECK(access(tmp_path("bad_align.gguf"), F_OK) != 0);
    gguf_set_u32(w, "general.alignment", 64);
    CHECKF(gguf_write(w, tmp_path("align64.gguf"), &err) == 0, "%s", err.msg);

    gguf_set_arr(w, "bad.array", GGUF_STRING, data, 1);
    CHECK(gguf_write(w, tmp_path("bad_arr.gguf"), &err) == -1);
    CHECK_ERR_HAS(err, "bad.array");
    gguf_writer_free(w);

    gguf_file *f = NULL;
    CHECKF(gguf_open(&f, tmp_path("align64.gguf"), &err) == 0, "%s", err.msg);
    if (f) {
        CHECK(f->alignment == 64 && f->data_offset % 64 == 0 && f->n_tensors == 1);
        CHECK(f->tensors[0].size == 68);
    }
    gguf_close(f);
}

/* ---- hand-built files ---- */

typedef struct bb {
    uint8_t p[4096];
    size_t n;
} bb;

static void bb_put(bb *b, const void *p, size_t n)
{
    if (b->n + n > sizeof b->p) {
        fprintf(stderr, "test buffer overflow\n");
        exit(2);
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
}
static void bb_u32(bb *b, uint32_t v) { bb_put(b, &v, 4); }
static void bb_u64(bb *b, uint64_t v) { bb_put(b, &v, 8); }
static void bb_str(bb *b, const char *s) { bb_u64(b, strlen(s)); bb_put(b, s, strlen(s)); }
static void bb_pad(bb *b, size_t alignment) { while (b->n % alignment) b->p[b->n++] = 0; }
static void bb_zeros(bb *b, size_t n) { while (n--) b->p[b->n++] = 0; }

static void bb_header(bb *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
    bb_put(b, "GGUF", 4);
    bb_u32(b, version);
    bb_u64(b, n_tensors);
    bb_u64(b, n_kv);
}

static void bb_kv_u32(bb *b, const char *key, uint32_t v)
{
    bb_str(b, key);
    bb_u32(b, GGUF_UINT32);
    bb_u32(b, v);
}

static void bb_kv_str(bb *b, const char *key, const char *v)
{
    bb_str(b, key);
    bb_u32(b, GGUF_STRING);
    bb_str(b, v);
}

static void bb_tensor(bb *b, const char *name, uint32_t n_dims, const int64_t *ne, uint32_t type,
                      uint64_t offset)
{
    bb_str(b, name);
    bb_u32(b, n_dims);
    bb_put(b, ne, n_dims * sizeof *ne);
    bb_u32(b, type);
    bb_u64(b, offset);
}

static const int64_t ne_8[1] = {8};           /* f32: 32 bytes */
static const int64_t ne_32x2[2] = {32, 2};    /* q8_0: 68 bytes */

/* A valid file: two kvs, tensor 'w' f32 [8] at 0 and 'q' q8_0 [32, 2] at 32.
 * Records where each part starts so truncations can cut inside it. */
typedef struct base_marks {
    size_t kv0, tensor_infos, data;
} base_marks;

/* Long enough that a cut inside it still leaves room for the declared counts,
 * so the reader gets as far as the cut. */
static const char long_name[] =
    "tiny model whose name is long: 0123456789 0123456789 0123456789 0123456789 0123456789 "
    "0123456789 0123456789 01234567";

static void build_base(bb *b, uint32_t version, base_marks *m)
{
    bb_header(b, version, 2, 2);
    m->kv0 = b->n;
    bb_kv_str(b, "general.name", long_name);
    bb_kv_u32(b, "a.count", 7);
    m->tensor_infos = b->n;
    bb_tensor(b, "w", 1, ne_8, SL_TYPE_F32, 0);
    bb_tensor(b, "q", 2, ne_32x2, SL_TYPE_Q8_0, 32);
    bb_pad(b, 32);
    m->data = b->n;
    for (int i = 0; i < 32 + 68; i++)
        b->p[b->n++] = (uint8_t)(i * 7 + 1);
}

static void test_v2_and_base(void)
{
    for (uint32_t version = 2; version <= 3; version++) {
        bb b = {0};
        base_marks m;
        build_base(&b, version, &m);
        sl_err err = {{0}};
        gguf_file *f = NULL;
        CHECKF(gguf_open_mem(&f, b.p, b.n, "hand.gguf", &err) == 0, "v%u: %s", version, err.msg);
        if (!f)
            continue;
        CHECK(f->version == version);
        CHECK(!f->owns_map);
        CHECK(f->n_kv == 2 && f->n_tensors == 2);
        CHECK(f->data_offset == m.data);
        char *name = NULL;
        CHECK(gguf_get_str(f, "general.name", &name, &err) == 0 && name && strcmp(name, long_name) == 0);
        free(name);
        uint32_t count = 0;
        CHECK(gguf_req_u32(f, "a.count", &count, &err) == 0 && count == 7);
        const gguf_tensor *q = gguf_find_tensor(f, "q");
        CHECK(q && q->type == SL_TYPE_Q8_0 && q->n_dims == 2 && q->ne[0] == 32 && q->ne[1] == 2 &&
              q->ne[2] == 1 && q->size == 68 && q->offset == 32);
        if (q)
            CHECK((const uint8_t *)q->data == b.p + m.data + 32 && ((const uint8_t *)q->data)[0] == (uint8_t)(32 * 7 + 1));
        const gguf_tensor *w = gguf_find_tensor(f, "w");
        CHECK(w && w->type == SL_TYPE_F32 && w->size == 32 && w->n_dims == 1 && w->ne[1] == 1);
        gguf_close(f);
    }
}

static void expect_fail(const bb *b, const char *what, const char *frag1, const char *frag2)
{
    sl_err err = {{0}};
    gguf_file *f = NULL;
    int rc = gguf_open_mem(&f, b->p, b->n, "bad.gguf", &err);
    CHECKF(rc == -1 && f == NULL, "%s: opened a malformed file", what);
    if (rc == 0) {
        gguf_close(f);
        return;
    }
    if (getenv("TEST_VERBOSE"))
        fprintf(stderr, "%-32s %s\n", what, err.msg);
    CHECKF(strncmp(err.msg, "bad.gguf: ", 10) == 0, "%s: \"%s\" does not start with the name", what, err.msg);
    CHECKF(strstr(err.msg, frag1) != NULL, "%s: \"%s\" lacks \"%s\"", what, err.msg, frag1);
    if (frag2)
        CHECKF(strstr(err.msg, frag2) != NULL, "%s: \"%s\" lacks \"%s\"", what, err.msg, frag2);
}

static void test_truncated(void)
{
    bb full = {0};
    base_marks m;
    build_base(&full, 3, &m);
    struct { size_t cut; const char *frag1, *frag2; } cuts[] = {
        {0, "magic", NULL},
        {6, "version", NULL},
        {14, "n_tensors", NULL},
        {20, "n_kv", NULL},
        /* too short for the declared counts: reported there */
        {m.kv0 + 4, "n_kv 2", "truncated"},
        {m.kv0 + 8 + 12 + 2, "n_kv 2", "truncated"},
        {m.kv0 + 8 + 12 + 4 + 8 + 80, "kv 0 ('general.name')", "value: string length 116"},
        {m.tensor_infos - 2, "kv 1 ('a.count')", "value"},
        {m.tensor_infos + 9 + 2, "tensor 0 ('w')", "n_dims"},
        {m.tensor_infos + 9 + 4 + 3, "tensor 0 ('w')", "ne[0]"},
        {m.tensor_infos + 9 + 4 + 8 + 4 + 3, "tensor 0 ('w')", "offset"},
        {m.tensor_infos + 33 + 9 + 4 + 12, "tensor 1 ('q')", "ne[1]"},
        {m.data - 3, "tensor 0 ('w')", "past the end"}, /* inside the padding: data section gone */
        {m.data + 10, "tensor 0 ('w')", "runs past the end"},
        {m.data + 32 + 67, "tensor 1 ('q')", "data [" },
    };
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        bb b = full;
        b.n = cuts[i].cut;
        char what[64];
        snprintf(what, sizeof what, "cut at %zu", cuts[i].cut);
        expect_fail(&b, what, cuts[i].frag1, cuts[i].frag2);
    }
    /* Every cut short of the full length fails; none crashes. */
    for (size_t n = 0; n < full.n; n++) {
        sl_err err;
        gguf_file *f = NULL;
        CHECKF(gguf_open_mem(&f, full.p, n, "cut.gguf", &err) == -1, "cut at %zu opened", n);
        gguf_close(f);
    }
    /* Through gguf_open too: the mmap path reports the same error. */
    const char *path = tmp_path("truncated.gguf");
    FILE *fp = fopen(path, "wb");
    fwrite(full.p, 1, m.data + 40, fp);
    fclose(fp);
    sl_err err = {{0}};
    gguf_file *f = NULL;
    CHECK(gguf_open(&f, path, &err) == -1 && f == NULL);
    CHECK_ERR_HAS(err, path);
    CHECK_ERR_HAS(err, "tensor 1 ('q')");
    CHECK_ERR_HAS(err, "runs past the end of the file");
    CHECK(gguf_open(&f, tmp_path("does-not-exist.gguf"), &err) == -1);
    CHECK_ERR_HAS(err, "does-not-exist.gguf: cannot open");
    fp = fopen(tmp_path("empty.gguf"), "wb");
    fclose(fp);
    CHECK(gguf_open(&f, tmp_path("empty.gguf"), &err) == -1);
    CHECK_ERR_HAS(err, "empty");
}

static void test_bad_headers(void)
{
    bb b = {0};
    base_marks m;
    build_base(&b, 3, &m);
    bb bad = b;
    memcpy(bad.p, "GGUX", 4);
    expect_fail(&bad, "bad magic", "magic", NULL);
    bad = b;
    bad.p[4] = 1;
    expect_fail(&bad, "v1", "version 1", NULL);
    bad = b;
    bad.p[4] = 4;
    expect_fail(&bad, "v4", "version 4", NULL);
    bad = b;
    uint32_t be3 = 0x03000000u;
    memcpy(bad.p + 4, &be3, 4);
    expect_fail(&bad, "big-endian", "big-endian", NULL);

    bad = (bb){0};
    bb_header(&bad, 3, 0, 1ull << 40);
    bb_kv_u32(&bad, "a", 1);
    expect_fail(&bad, "absurd n_kv", "n_kv 1099511627776", "absurd");
    bad = (bb){0};
    bb_header(&bad, 3, UINT64_MAX, 1);
    bb_kv_u32(&bad, "a", 1);
    expect_fail(&bad, "absurd n_tensors", "n_tensors", "absurd");
    /* Counts that pass the bound still fail cleanly when the entries are missing. */
    bad = (bb){0};
    bb_header(&bad, 3, 0, 3);
    bb_kv_u32(&bad, "a", 1);
    bb_zeros(&bad, 40);
    expect_fail(&bad, "short of kvs", "kv 1", "key is empty");
}

static void test_bad_kvs(void)
{
    bb b = {0};
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "odd.type");
    bb_u32(&b, 13);
    bb_u32(&b, 0);
    expect_fail(&b, "unknown value type", "kv 0 ('odd.type')", "unknown value type 13");

    b = (bb){0};
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "odd.arr");
    bb_u32(&b, GGUF_ARRAY);
    bb_u32(&b, 42);
    bb_u64(&b, 1);
    bb_u32(&b, 0);
    expect_fail(&b, "unknown element type", "kv 0 ('odd.arr')", "array element type 42");

    b = (bb){0};
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "nested");
    bb_u32(&b, GGUF_ARRAY);
    bb_u32(&b, GGUF_ARRAY);
    bb_u64(&b, 1);
    bb_u32(&b, GGUF_UINT8);
    bb_u64(&b, 1);
    bb_u32(&b, 0);
    expect_fail(&b, "nested array", "kv 0 ('nested')", "nested arrays");

    const uint32_t elem_types[] = {GGUF_UINT8, GGUF_UINT64, GGUF_STRING};
    for (size_t i = 0; i < 3; i++) {
        b = (bb){0};
        bb_header(&b, 3, 0, 1);
        bb_str(&b, "big.arr");
        bb_u32(&b, GGUF_ARRAY);
        bb_u32(&b, elem_types[i]);
        bb_u64(&b, 1ull << 60);
        bb_zeros(&b, 64);
        expect_fail(&b, "absurd array count", "kv 0 ('big.arr')", "array count 1152921504606846976");
    }
    /* Just one element too many for the bytes present. */
    b = (bb){0};
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "tight.arr");
    bb_u32(&b, GGUF_ARRAY);
    bb_u32(&b, GGUF_UINT32);
    bb_u64(&b, 5);
    bb_zeros(&b, 16);
    expect_fail(&b, "array count one too many", "kv 0 ('tight.arr')", "array count 5");

    b = (bb){0};
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "long.str");
    bb_u32(&b, GGUF_STRING);
    bb_u64(&b, 1000);
    bb_put(&b, "short", 5);
    expect_fail(&b, "string past end", "kv 0 ('long.str')", "value: string length 1000");

    b = (bb){0};
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "strs");
    bb_u32(&b, GGUF_ARRAY);
    bb_u32(&b, GGUF_STRING);
    bb_u64(&b, 2);
    bb_str(&b, "ok");
    bb_u64(&b, 99);
    bb_put(&b, "no", 2);
    expect_fail(&b, "array string past end", "kv 0 ('strs')", "array element 1: string length 99");

    b = (bb){0};
    bb_header(&b, 3, 0, 1);
    bb_u64(&b, UINT64_MAX);
    bb_zeros(&b, 16);
    expect_fail(&b, "key length past end", "kv 0", "key: string length 18446744073709551615");

    b = (bb){0};
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "");
    bb_u32(&b, GGUF_UINT8);
    bb_zeros(&b, 8);
    expect_fail(&b, "empty key", "kv 0", "key is empty");

    b = (bb){0};
    bb_header(&b, 3, 0, 1);
    bb_u64(&b, 3);
    bb_put(&b, "a\0b", 3);
    bb_u32(&b, GGUF_UINT8);
    bb_zeros(&b, 1);
    expect_fail(&b, "NUL in key", "kv 0", "NUL");

    b = (bb){0};
    bb_header(&b, 3, 0, 3);
    bb_kv_u32(&b, "a.count", 1);
    bb_kv_str(&b, "other", "x");
    bb_kv_u32(&b, "a.count", 2);
    expect_fail(&b, "duplicate key", "kv 2: duplicate key 'a.count'", "kv 0");
}

static void test_bad_alignment(void)
{
    const uint32_t bad_values[] = {0, 48, 3};
    for (size_t i = 0; i < 3; i++) {
        bb b = {0};
        bb_header(&b, 3, 0, 1);
        bb_kv_u32(&b, "general.alignment", bad_values[i]);
        expect_fail(&b, "bad alignment", "general.alignment", "power of two");
    }
    bb b = {0};
    bb_header(&b, 3, 0, 1);
    bb_kv_str(&b, "general.alignment", "32");
    expect_fail(&b, "string alignment", "general.alignment is string", "uint32");

    /* A good non-default alignment moves the data section and the offset rule. */
    b = (bb){0};
    bb_header(&b, 3, 2, 1);
    bb_kv_u32(&b, "general.alignment", 64);
    bb_tensor(&b, "w", 1, ne_8, SL_TYPE_F32, 0);
    size_t x_offset_field = b.n + 33 - 8;
    bb_tensor(&b, "x", 1, ne_8, SL_TYPE_F32, 64);
    bb_pad(&b, 64);
    size_t data = b.n;
    bb_zeros(&b, 96);
    sl_err err = {{0}};
    gguf_file *f = NULL;
    CHECKF(gguf_open_mem(&f, b.p, b.n, "a64.gguf", &err) == 0, "%s", err.msg);
    if (f)
        CHECK(f->alignment == 64 && f->data_offset == data && f->tensors[1].offset == 64);
    gguf_close(f);
    bb bad = b;
    uint64_t off32 = 32;
    memcpy(bad.p + x_offset_field, &off32, 8);
    expect_fail(&bad, "offset 32 under alignment 64", "tensor 1 ('x')", "offset 32 is not a multiple of the alignment 64");
}

static void test_bad_tensors(void)
{
    struct {
        const char *what;
        uint32_t n_dims;
        int64_t ne[5];
        uint32_t type;
        uint64_t offset;
        const char *frag1, *frag2;
    } cases[] = {
        {"n_dims 0", 0, {8}, SL_TYPE_F32, 0, "tensor 0 ('t')", "n_dims 0"},
        {"n_dims 5", 5, {8, 1, 1, 1, 1}, SL_TYPE_F32, 0, "tensor 0 ('t')", "n_dims 5"},
        {"negative dim", 2, {8, -3}, SL_TYPE_F32, 0, "tensor 0 ('t')", "ne[1] is -3"},
        {"zero dim", 2, {0, 3}, SL_TYPE_F32, 0, "tensor 0 ('t')", "ne[0] is 0"},
        {"unknown type", 1, {8}, 99, 0, "tensor 0 ('t')", "tensor type 99"},
        {"unsupported ggml type", 1, {32}, 9 /* q8_1 */, 0, "tensor 0 ('t')", "tensor type 9"},
        {"huge type", 1, {8}, 0xffffffffu, 0, "tensor 0 ('t')", "tensor type 4294967295"},
        {"block multiple", 2, {33, 2}, SL_TYPE_Q8_0, 0, "tensor 0 ('t')", "ne[0] = 33"},
        {"k block multiple", 1, {128}, SL_TYPE_Q4_K, 0, "tensor 0 ('t')", "block size 256"},
        {"overflow", 3, {1ll << 40, 1ll << 40, 1ll << 40}, SL_TYPE_F32, 0, "tensor 0 ('t')", "overflows"},
        {"offset unaligned", 1, {8}, SL_TYPE_F32, 4, "tensor 0 ('t')", "offset 4 is not a multiple of the alignment 32"},
        {"offset past end", 1, {8}, SL_TYPE_F32, 1ull << 20, "tensor 0 ('t')", "offset 1048576"},
        {"offset huge", 1, {8}, SL_TYPE_F32, UINT64_MAX - 31, "tensor 0 ('t')", "past the end"},
        {"data past end", 1, {16}, SL_TYPE_F32, 0, "tensor 0 ('t')", "runs past the end of the file"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bb b = {0};
        bb_header(&b, 3, 1, 0);
        bb_tensor(&b, "t", cases[i].n_dims, cases[i].ne, cases[i].type, cases[i].offset);
        bb_pad(&b, 32);
        bb_zeros(&b, 32);
        expect_fail(&b, cases[i].what, cases[i].frag1, cases[i].frag2);
    }

    bb b = {0};
    bb_header(&b, 3, 2, 0);
    bb_tensor(&b, "first", 1, ne_8, SL_TYPE_F32, 0);
    bb_tensor(&b, "second", 2, ne_32x2, SL_TYPE_Q8_0, 0);
    bb_pad(&b, 32);
    bb_zeros(&b, 96);
    expect_fail(&b, "same offset", "overlaps", "'first'");

    b = (bb){0};
    bb_header(&b, 3, 3, 0);
    bb_tensor(&b, "c", 1, ne_8, SL_TYPE_F32, 128);
    bb_tensor(&b, "a", 2, ne_32x2, SL_TYPE_Q8_0, 0);  /* [0, 68) */
    bb_tensor(&b, "b", 1, ne_8, SL_TYPE_F32, 64);    /* [64, 96) */
    bb_pad(&b, 32);
    bb_zeros(&b, 160);
    expect_fail(&b, "partial overlap, out of order", "tensor 2 ('b') data [64, 96) overlaps tensor 1 ('a') data [0, 68)", NULL);

    b = (bb){0};
    bb_header(&b, 3, 2, 0);
    bb_tensor(&b, "w", 1, ne_8, SL_TYPE_F32, 0);
    bb_tensor(&b, "w", 1, ne_8, SL_TYPE_F32, 32);
    bb_pad(&b, 32);
    bb_zeros(&b, 64);
    expect_fail(&b, "duplicate tensor", "tensor 1: duplicate tensor name 'w'", NULL);

    b = (bb){0};
    bb_header(&b, 3, 1, 0);
    bb_str(&b, "");
    bb_zeros(&b, 40);
    expect_fail(&b, "empty name", "tensor 0", "name is empty");
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_gguf.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_round_trip(0);
    test_round_trip(128);
    test_copy_kvs();
    test_getters();
    test_writer_errors();
    test_v2_and_base();
    test_truncated();
    test_bad_headers();
    test_bad_kvs();
    test_bad_alignment();
    test_bad_tensors();
    for (size_t i = 0; i < N_TENSOR_CASES; i++)
        free(tensor_data[i]);
    const char *names[] = {"default.gguf", "aligned.gguf", "copy.gguf", "align64.gguf",
                           "truncated.gguf", "empty.gguf"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        unlink(tmp_path(names[i]));
    rmdir(tmpdir);
    return test_finish("test_gguf");
}
