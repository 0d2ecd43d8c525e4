/* Writes the fuzz seed corpus for fuzz_gguf: small valid files from the
 * writer, plus truncated and corrupted copies.  Usage: gguf_make_seeds DIR */
#include "model/gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int write_bytes(const char *dir, const char *name, const void *p, size_t n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "wb");
    if (!fp || fwrite(p, 1, n, fp) != n || fclose(fp) != 0) {
        perror(path);
        return -1;
    }
    return 0;
}

static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    fseek(fp, 0, SEEK_END);
    *n = (size_t)ftell(fp);
    rewind(fp);
    uint8_t *p = malloc(*n);
    if (p && fread(p, 1, *n, fp) != *n) {
        free(p);
        p = NULL;
    }
    fclose(fp);
    return p;
}

static int make_valid(const char *dir, const char *name, int variant, sl_err *err)
{
    static uint8_t data[2 * 210];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)(i * 31 + 7);
    gguf_writer *w = gguf_writer_new();
    gguf_set_str(w, "general.architecture", "gemma3");
    gguf_set_u32(w, "gemma3.block_count", 2);
    gguf_set_f32(w, "gemma3.attention.layer_norm_rms_epsilon", 1e-6f);
    gguf_set_bool(w, "flag", true);
    gguf_set_i64(w, "big", -5);
    gguf_set_f64(w, "dbl", 0.5);
    const char *toks[] = {"<pad>", "<bos>", "a", ""};
    gguf_set_arr_str(w, "tokenizer.ggml.tokens", toks, 4);
    float scores[] = {0, -1, -2.5f, 3};
    gguf_set_arr(w, "tokenizer.ggml.scores", GGUF_FLOAT32, scores, 4);
    int32_t types[] = {3, 3, 1, 1};
    gguf_set_arr(w, "tokenizer.ggml.token_type", GGUF_INT32, types, 4);
    int64_t ne_f32[2] = {4, 2}, ne_q8[1] = {32}, ne_q6[2] = {256, 2};
    int rc = 0;
    if (variant == 1) {
        gguf_set_u32(w, "general.alignment", 64);
        rc = gguf_add_tensor(w, "q6.weight", SL_TYPE_Q6_K, 2, ne_q6, data, 420, err);
    }
    if (rc == 0)
        rc = gguf_add_tensor(w, "token_embd.weight", SL_TYPE_F32, 2, ne_f32, data, 32, err);
    if (rc == 0)
        rc = gguf_add_tensor(w, "blk.0.attn_q.weight", SL_TYPE_Q8_0, 1, ne_q8, data, 34, err);
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (rc == 0)
        rc = gguf_write(w, path, err);
    gguf_writer_free(w);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    sl_err err;
    if (make_valid(dir, "valid-a32.gguf", 0, &err) || make_valid(dir, "valid-a64.gguf", 1, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    char path[512];
    snprintf(path, sizeof path, "%s/valid-a32.gguf", dir);
    size_t n;
    uint8_t *p = slurp(path, &n);
    if (!p)
        return 1;
    int rc = write_bytes(dir, "truncated-infos.gguf", p, n / 2);
    uint8_t *bad = malloc(n);
    memcpy(bad, p, n);
    bad[4] = 1; /* version 1 */
    rc |= write_bytes(dir, "bad-version.gguf", bad, n);
    memcpy(bad, p, n);
    memset(bad + 16, 0xff, 8); /* absurd n_kv */
    rc |= write_bytes(dir, "absurd-nkv.gguf", bad, n);
    free(bad);
    free(p);
    return rc ? 1 : 0;
}
