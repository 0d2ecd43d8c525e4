/* sluice quantize IN OUT --type T: requantise every 2-D weight, keep the
 * metadata. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "model/gguf.h"
#include "util/pool.h"

static const char usage[] =
    "usage: sluice quantize IN OUT --type TYPE\n"
    "\n"
    "Rewrites a GGUF model with its 2-D weights converted to TYPE (each row\n"
    "dequantised to f32, then quantised); 1-D tensors (norms) and the metadata\n"
    "are kept, general.file_type is updated. A weight already of its target type\n"
    "is copied unchanged. As in llama.cpp, rows whose length is not a multiple of\n"
    "256 fall back from q2_K/q3_K/iq4_xs to iq4_nl, q4_K to q5_0, q5_K to q5_1\n"
    "and q6_K to q8_0 (f16 when even that block does not fit).\n"
    "\n"
    "options:\n"
    "  --type TYPE     " CLI_QTYPE_NAMES "\n"
    "                  the plain types convert every weight; q2_K, q3_K_S/M/L,\n"
    "                  q4_K_S/M, q5_K_S/M and q6_K are llama.cpp's mixes (its\n"
    "                  llama-quantize types of those names): the output matrix\n"
    "                  (token_embd when tied) gets q6_K, and attn_v, ffn_down and\n"
    "                  attn_output get more bits in the layers llama.cpp picks\n"
    "                  (for q4_K_M: q6_K in the first and last eighth of the layers\n"
    "                  and every third layer between)\n"
    "  -h, --help      show this help\n";

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static bool is_matrix(const gguf_tensor *t)
{
    return t->n_dims == 2 && t->ne[1] > 1 && has_suffix(t->name, ".weight") && !strstr(t->name, "norm");
}

/* Layer count from {arch}.block_count, else from the tensor names. */
static int layer_count(const gguf_file *f)
{
    char *arch = NULL;
    sl_err err;
    uint32_t n = 0;
    if (gguf_get_str(f, "general.architecture", &arch, &err) == 0) {
        char key[96];
        snprintf(key, sizeof key, "%s.block_count", arch);
        if (gguf_get_u32(f, key, &n, &err) != 0)
            n = 0;
        free(arch);
    }
    if (n > 0)
        return (int)n;
    int max = -1, il;
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (sscanf(f->tensors[i].name, "blk.%d.", &il) == 1 && il > max)
            max = il;
    return max + 1;
}

/* {arch}.KEY as a u32, 0 when absent (or an array: per-layer values). */
static uint32_t arch_u32(const gguf_file *f, const char *key)
{
    char *arch = NULL, full[128];
    sl_err err;
    uint32_t v = 0;
    if (gguf_get_str(f, "general.architecture", &arch, &err) != 0)
        return 0;
    snprintf(full, sizeof full, "%s.%s", arch, key);
    if (gguf_get_u32(f, full, &v, &err) != 0)
        v = 0;
    free(arch);
    return v;
}

/* Tensors and bytes written per type, for the summary. */
typedef struct type_tally {
    int count[SL_TYPE_COUNT_];
    double bytes[SL_TYPE_COUNT_];
} type_tally;

static void print_tally(const type_tally *tl)
{
    fprintf(stderr, "quantize: types:");
    for (int t = 0; t < SL_TYPE_COUNT_; t++)
        if (tl->count[t])
            fprintf(stderr, " %s %d (%.1f MiB)", sl_type_name(t), tl->count[t], tl->bytes[t] / 1048576.0);
    fputc('\n', stderr);
}

typedef struct convert_args {
    const gguf_tensor *t;
    sl_type to;
    uint8_t *out;
    _Atomic int failed;
} convert_args;

static void convert_rows(void *arg, int64_t r0, int64_t r1)
{
    convert_args *a = arg;
    int64_t n_in = a->t->ne[0];
    size_t in_row = sl_row_bytes(a->t->type, n_in), out_row = sl_row_bytes(a->to, n_in);
    float *row = malloc((size_t)n_in * sizeof *row);
    if (!row) {
        atomic_store(&a->failed, 1);
        return;
    }
    for (int64_t r = r0; r < r1; r++) {
        cli_row_to_f32(a->t->type, (const uint8_t *)a->t->data + (size_t)r * in_row, row, n_in);
        cli_row_from_f32(a->to, row, a->out + (size_t)r * out_row, n_in);
    }
    free(row);
}

static void *convert(const gguf_tensor *t, sl_type to, size_t *size)
{
    int64_t n_in = t->ne[0], n_rows = t->size / sl_row_bytes(t->type, n_in);
    size_t out_row = sl_row_bytes(to, n_in);
    *size = out_row * (size_t)n_rows;
    uint8_t *out = malloc(*size);
    if (!out)
        return NULL;
    convert_args ca = {t, to, out, 0};
    sl_pool_for(n_rows, 1, convert_rows, &ca);
    if (atomic_load(&ca.failed)) {
        free(out);
        return NULL;
    }
    return out;
}

/* The row length that decides a matrix's type: Gemma 4's per-layer token
 * embedding is gathered one layer's slice at a time, so its blocks must
 * fit a slice (llama.cpp's {arch}.embedding_length_per_layer_input). */
static int64_t type_row_length(const gguf_file *f, const gguf_tensor *t)
{
    if (strcmp(t->name, "per_layer_token_embd.weight") != 0)
        return t->ne[0];
    char *arch = NULL;
    sl_err err;
    uint32_t pl = 0;
    if (gguf_get_str(f, "general.architecture", &arch, &err) == 0) {
        char key[128];
        snprintf(key, sizeof key, "%s.embedding_length_per_layer_input", arch);
        if (gguf_get_u32(f, key, &pl, &err) != 0)
            pl = 0;
        free(arch);
    }
    return pl > 0 ? (int64_t)pl : t->ne[0];
}

static int quantize(const char *cmd, const char *in, const char *out, const cli_qtype *q)
{
    sl_err err = {{0}};
    gguf_file *f;
    if (gguf_open(&f, in, &err))
        return cli_fail(cmd, "%s", err.msg);
    gguf_writer *w = gguf_writer_new();
    void **owned = calloc(f->n_tensors + 1, sizeof *owned);
    int rc = CLI_FAIL;
    if (!w || !owned) {
        cli_fail(cmd, "out of memory");
        goto done;
    }
    gguf_copy_kvs(w, f);
    gguf_set_u32(w, "general.file_type", q->ftype);
    gguf_set_u32(w, "general.quantization_version", 2);
    uint32_t n_head = arch_u32(f, "attention.head_count"), n_kv = arch_u32(f, "attention.head_count_kv");
    cli_qmodel qm = {layer_count(f), n_head && n_kv ? (int)(n_head / n_kv) : 1,
                     gguf_find_tensor(f, "output.weight") == NULL};
    type_tally tally = {{0}, {0}};
    double t0 = cli_now(), t_shown = t0, bytes_in = 0, bytes_out = 0;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        const void *data = t->data;
        size_t size = t->size;
        sl_type to = t->type;
        if (is_matrix(t)) {
            to = cli_weight_type(q, t->name, &qm, type_row_length(f, t));
            if (to != t->type && !sl_type_supported(t->type)) {
                cli_fail(cmd, "%s: tensor '%s' has type %s, which sluice cannot read", in, t->name,
                         sl_type_name(t->type));
                goto done;
            }
        }
        int64_t bad = sl_find_bad_block(t->type, t->data, t->size);
        if (to != t->type && bad >= 0) {
            cli_fail(cmd, "%s: tensor '%s': block %lld has an infinite or NaN scale (corrupt file?)",
                     in, t->name, (long long)bad);
            goto done;
        }
        if (to != t->type) {
            data = owned[i] = convert(t, to, &size);
            if (!data) {
                cli_fail(cmd, "out of memory converting %s", t->name);
                goto done;
            }
        }
        if (gguf_add_tensor(w, t->name, to, t->n_dims, t->ne, data, size, &err)) {
            cli_fail(cmd, "%s", err.msg);
            goto done;
        }
        bytes_in += (double)t->size, bytes_out += (double)size;
        tally.count[to]++, tally.bytes[to] += (double)size;
        if (cli_now() - t_shown > 1.0 || i + 1 == f->n_tensors) {
            t_shown = cli_now();
            fprintf(stderr, "quantize: %llu/%llu tensors, %.1f -> %.1f MiB, %.1f s\n",
                    (unsigned long long)i + 1, (unsigned long long)f->n_tensors, bytes_in / 1048576.0,
                    bytes_out / 1048576.0, t_shown - t0);
        }
    }
    if (gguf_write(w, out, &err)) {
        cli_fail(cmd, "%s", err.msg);
        goto done;
    }
    print_tally(&tally);
    fprintf(stderr, "quantize: wrote %s in %.1f s\n", out, cli_now() - t0);
    rc = CLI_OK;
done:
    if (owned)
        for (uint64_t i = 0; i < f->n_tensors; i++)
            free(owned[i]);
    free(owned);
    gguf_writer_free(w);
    gguf_close(f);
    return rc;
}

static bool same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

int cmd_quantize(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"type", required_argument, NULL, 'T'},
        {NULL, 0, NULL, 0},
    };
    cli_qtype q;
    bool have_type = false;
    int c;
    while ((c = cli_getopt(argc, argv, ":h", longopts, usage)) != -1) {
        switch (c) {
        case 'h': fputs(usage, stdout); return CLI_OK;
        case 'T':
            if (cli_parse_qtype(optarg, &q))
                return cli_usage(argv[0], usage, "unknown --type '%s' (one of %s)", optarg, CLI_QTYPE_NAMES);
            have_type = true;
            break;
        default: return CLI_USAGE;
        }
    }
    if (argc - optind != 2)
        return cli_usage(argv[0], usage, "expected IN and OUT files");
    if (!have_type)
        return cli_usage(argv[0], usage, "--type is required");
    const char *in = argv[optind], *out = argv[optind + 1];
    if (same_file(in, out))
        return cli_usage(argv[0], usage, "OUT must differ from IN (the input is read while writing)");
    return quantize(argv[0], in, out, &q);
}
