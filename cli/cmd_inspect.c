/* sluice inspect FILE: metadata, tensor table and parsed configuration. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli/cli.h"
#include "model/config.h"
#include "model/gguf.h"

static const char usage[] =
    "usage: sluice inspect [options] FILE\n"
    "\n"
    "Shows a GGUF file: every metadata key with its type and value (arrays as\n"
    "type[n] with their first elements), the tensor table (name, type, shape,\n"
    "offset in the data section, size), the architecture configuration sluice\n"
    "derives from it, the total parameter count and the file size.\n"
    "\n"
    "options:\n"
    "  --no-tensors   skip the tensor table\n"
    "  --all          print whole arrays instead of their first elements\n"
    "  -h, --help     show this help\n";

enum { ARRAY_PREVIEW = 6, STRING_PREVIEW = 96 };

static void print_str(const gguf_str *s, uint64_t cap)
{
    putchar('"');
    uint64_t n = s->len < cap ? s->len : cap;
    for (uint64_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s->ptr[i];
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20 || ch == 0x7f)
            printf("\\x%02x", ch);
        else
            putchar(ch);
    }
    putchar('"');
    if (n < s->len)
        printf("...(%" PRIu64 " bytes)", s->len);
}

static void print_scalar(gguf_vtype t, double num)
{
    if (t == GGUF_FLOAT32 || t == GGUF_FLOAT64)
        printf("%g", num);
    else if (t == GGUF_BOOL)
        printf("%s", num != 0 ? "true" : "false");
    else
        printf("%.0f", num);
}

static void print_kv(const gguf_kv *kv, bool all)
{
    if (kv->type == GGUF_ARRAY) {
        printf("  %-44s %s[%" PRIu64 "] = [", kv->key, gguf_vtype_name(kv->arr_type), kv->arr_n);
        uint64_t n = all || kv->arr_n < ARRAY_PREVIEW ? kv->arr_n : ARRAY_PREVIEW;
        for (uint64_t i = 0; i < n; i++) {
            if (i)
                printf(", ");
            if (kv->arr_type == GGUF_STRING)
                print_str(&kv->arr_strs[i], STRING_PREVIEW);
            else if (kv->arr_type != GGUF_ARRAY)
                print_scalar(kv->arr_type, gguf_arr_num(kv, i));
        }
        printf("%s]\n", n < kv->arr_n ? ", ..." : "");
        return;
    }
    printf("  %-44s %-7s = ", kv->key, gguf_vtype_name(kv->type));
    switch (kv->type) {
    case GGUF_STRING: print_str(&kv->str, all ? UINT64_MAX : 4 * STRING_PREVIEW); break;
    case GGUF_FLOAT32:
    case GGUF_FLOAT64: printf("%g", kv->v.f); break;
    case GGUF_BOOL: printf("%s", kv->v.u ? "true" : "false"); break;
    case GGUF_INT8:
    case GGUF_INT16:
    case GGUF_INT32:
    case GGUF_INT64: printf("%" PRId64, kv->v.i); break;
    default: printf("%" PRIu64, kv->v.u); break;
    }
    putchar('\n');
}

static void print_tensors(const gguf_file *f)
{
    printf("\ntensors (%" PRIu64 "):\n", f->n_tensors);
    printf("  %-36s %-5s %-22s %12s %12s\n", "name", "type", "shape", "offset", "bytes");
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        char shape[64];
        int len = 0;
        for (uint32_t d = 0; d < t->n_dims && len < (int)sizeof shape; d++)
            len += snprintf(shape + len, sizeof shape - (size_t)len, "%s%" PRId64, d ? " x " : "", t->ne[d]);
        printf("  %-36s %-5s %-22s %12" PRIu64 " %12" PRIu64 "\n", t->name, sl_type_name(t->type), shape,
               t->offset, t->size);
    }
}

static uint64_t count_params(const gguf_file *f)
{
    uint64_t total = 0;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        uint64_t n = 1;
        for (int d = 0; d < GGUF_MAX_DIMS; d++)
            n *= (uint64_t)f->tensors[i].ne[d];
        total += n;
    }
    return total;
}

int cmd_inspect(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"no-tensors", no_argument, NULL, 'T'},
        {"all", no_argument, NULL, 'a'},
        {NULL, 0, NULL, 0},
    };
    bool tensors = true, all = false;
    int c;
    while ((c = cli_getopt(argc, argv, ":h", longopts, usage)) != -1) {
        switch (c) {
        case 'h': fputs(usage, stdout); return CLI_OK;
        case 'T': tensors = false; break;
        case 'a': all = true; break;
        default: return CLI_USAGE;
        }
    }
    if (optind != argc - 1)
        return cli_usage(argv[0], usage, optind == argc ? "missing FILE" : "expected one FILE");
    const char *path = argv[optind];

    sl_err err = {{0}};
    gguf_file *f;
    if (gguf_open(&f, path, &err))
        return cli_fail(argv[0], "%s", err.msg);
    printf("%s: GGUF v%u, %" PRIu64 " metadata keys, %" PRIu64 " tensors, alignment %" PRIu64 "\n",
           path, f->version, f->n_kv, f->n_tensors, f->alignment);
    printf("\nmetadata:\n");
    for (uint64_t i = 0; i < f->n_kv; i++)
        print_kv(&f->kv[i], all);
    if (tensors)
        print_tensors(f);
    uint64_t params = count_params(f);
    printf("\nparameters     %" PRIu64 " (%.3f B)\n", params, (double)params * 1e-9);
    printf("file size      %zu bytes (%.2f MiB)\n", f->map_size, (double)f->map_size / (1024.0 * 1024.0));

    int rc = CLI_OK;
    sl_config *cfg = malloc(sizeof *cfg);
    if (!cfg) {
        rc = cli_fail(argv[0], "out of memory");
    } else if (sl_config_from_gguf(cfg, f, &err)) {
        rc = cli_fail(argv[0], "no usable configuration: %s", err.msg);
    } else {
        printf("\nconfiguration:\n");
        fflush(stdout);
        sl_config_print(cfg, stdout);
    }
    free(cfg);
    gguf_close(f);
    return rc;
}
