/* Fuzzes the GGUF vocabulary -> sentencepiece path with vocabularies built
 * straight from the input (the GGUF fuzzer covers file parsing; random bytes
 * would rarely get past it to reach this code).
 *
 * Input: one flag byte, then records "<type byte><piece bytes>\n". Pieces
 * score -index, and whatever loads then encodes and decodes the input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/gguf.h"
#include "model/tokenizer.h"

#define MAX_PIECES 4096

typedef struct fuzz_vocab {
    gguf_str strs[MAX_PIECES];
    float scores[MAX_PIECES];
    int32_t types[MAX_PIECES];
    uint32_t n;
} fuzz_vocab;

static void parse_pieces(const uint8_t *data, size_t size, fuzz_vocab *v)
{
    size_t i = 0;
    while (i < size && v->n < MAX_PIECES) {
        int32_t type = data[i++] % 8;
        size_t start = i;
        while (i < size && data[i] != '\n')
            i++;
        v->strs[v->n] = (gguf_str){(const char *)data + start, i - start};
        v->scores[v->n] = -(float)v->n;
        v->types[v->n] = type;
        v->n++;
        i++;
    }
}

static gguf_kv array_kv(char *key, gguf_vtype type, const void *data, uint64_t n)
{
    gguf_kv kv = {.key = key, .type = GGUF_ARRAY, .arr_type = type, .arr_n = n, .arr_data = data};
    return kv;
}

static gguf_kv scalar_kv(char *key, gguf_vtype type, uint64_t value)
{
    gguf_kv kv = {.key = key, .type = type};
    kv.v.u = value;
    return kv;
}

static void exercise(const sl_tokenizer *t, const uint8_t *data, size_t size)
{
    int32_t *ids = NULL;
    int n = 0;
    char *text = NULL;
    char piece[32];
    if (sl_tok_encode(t, (const char *)data, size, &ids, &n, NULL) == 0) {
        for (int i = 0; i < n; i++)
            sl_tok_piece_bytes(t, ids[i], piece, (int)sizeof piece);
        sl_tok_decode(t, ids, n, &text, NULL);
    }
    free(text);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t flags = data[0];
    fuzz_vocab *v = calloc(1, sizeof *v);
    parse_pieces(data + 1, size - 1, v);
    uint32_t n_scores = (flags & 1) ? v->n - (v->n > 0) : v->n;
    gguf_kv kvs[] = {
        {.key = "tokenizer.ggml.model", .type = GGUF_STRING,
         .str = {(flags & 2) ? "t5" : "llama", (flags & 2) ? 2 : 5}},
        array_kv("tokenizer.ggml.tokens", GGUF_STRING, NULL, v->n),
        array_kv("tokenizer.ggml.scores", GGUF_FLOAT32, v->scores, n_scores),
        array_kv("tokenizer.ggml.token_type", GGUF_INT32, v->types, v->n),
        scalar_kv("tokenizer.ggml.bos_token_id", GGUF_UINT32, (flags >> 2) & 7),
        scalar_kv("tokenizer.ggml.add_space_prefix", GGUF_BOOL, (flags >> 5) & 1),
        array_kv("tokenizer.ggml.precompiled_charsmap", GGUF_UINT8, data, (flags & 0x40) ? size : 0),
    };
    kvs[1].arr_strs = v->strs;
    gguf_file f = {.path = "fuzz.gguf", .n_kv = (flags & 0x40) ? 7 : 6, .kv = kvs};
    uint8_t *proto = NULL;
    size_t proto_len = 0;
    if (sl_tok_gguf_to_proto(&f, &proto, &proto_len, NULL) == 0)
        free(proto);
    sl_tokenizer *t = NULL;
    if (sl_tok_load_gguf(&t, &f, NULL) == 0) {
        exercise(t, data, size);
        sl_tok_free(t);
    }
    free(v);
    return 0;
}
