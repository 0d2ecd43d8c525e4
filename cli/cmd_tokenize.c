/* sluice tokenize: a prompt's tokens as `run` feeds them, from the GGUF's
 * vocabulary alone (the file is mapped, no weights are loaded). */
#include <getopt.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "model/gguf.h"
#include "model/tokenizer.h"

static const char usage[] =
    "usage: sluice tokenize -m FILE (-p TEXT | -f FILE) [--ids] [--no-bos] [--json]\n"
    "\n"
    "Prints the tokens `sluice run` feeds for a prompt: BOS (when the model adds\n"
    "it) and the text's tokens, one a line as ID 'PIECE' (the piece as the\n"
    "vocabulary writes it, non-printing bytes escaped). Only the GGUF's\n"
    "vocabulary is read; no weights are loaded.\n"
    "\n"
    "options:\n"
    "  -m, --model FILE        GGUF model (its tokenizer.ggml.* vocabulary)\n"
    "  -p, --prompt TEXT       text to tokenize\n"
    "  -f, --file FILE         tokenize the whole of FILE instead\n"
    "      --ids               only the ids, as one list: [2, 651, ...]\n"
    "      --no-bos            do not add the BOS token (as run --no-bos)\n"
    "      --json              JSON: [{\"id\": 2, \"piece\": \"<bos>\"}, ...] (with --ids:\n"
    "                          a list of ids)\n"
    "  -h, --help              show this help\n";

typedef struct tok_opts {
    const char *model, *prompt, *file;
    bool ids, no_bos, json;
} tok_opts;

static int parse_args(int argc, char **argv, tok_opts *o)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},      {"model", required_argument, NULL, 'm'},
        {"prompt", required_argument, NULL, 'p'}, {"file", required_argument, NULL, 'f'},
        {"ids", no_argument, NULL, 'I'},       {"no-bos", no_argument, NULL, 'B'},
        {"json", no_argument, NULL, 'J'},      {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = cli_getopt(argc, argv, ":hm:p:f:", longopts, usage)) != -1) {
        switch (c) {
        case 'h': fputs(usage, stdout); return -1;
        case 'm': o->model = optarg; break;
        case 'p': o->prompt = optarg; break;
        case 'f': o->file = optarg; break;
        case 'I': o->ids = true; break;
        case 'B': o->no_bos = true; break;
        case 'J': o->json = true; break;
        default: return CLI_USAGE;
        }
    }
    if (optind < argc)
        return cli_usage(argv[0], NULL, "unexpected argument '%s'", argv[optind]);
    if (!o->model)
        return cli_usage(argv[0], NULL, "missing -m FILE");
    if (!o->prompt == !o->file)
        return cli_usage(argv[0], NULL, "give exactly one of -p TEXT and -f FILE");
    return 0;
}

static char *read_text(const char *path, size_t *len, sl_err *err)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        sl_fail(err, "%s: cannot open", path);
        return NULL;
    }
    char *text = NULL;
    size_t cap = 0, n = 0, got;
    do {
        if (n + 65536 + 1 > cap) {
            char *t = realloc(text, cap = n + 65536 + 1);
            if (!t) {
                free(text);
                fclose(fp);
                sl_fail(err, "out of memory");
                return NULL;
            }
            text = t;
        }
        got = fread(text + n, 1, 65536, fp);
        n += got;
    } while (got > 0);
    bool bad = ferror(fp);
    fclose(fp);
    if (bad) {
        free(text);
        sl_fail(err, "%s: read failed", path);
        return NULL;
    }
    text[n] = '\0';
    *len = n;
    return text;
}

/* The prompt's ids as run's pipeline makes them (sl_pipeline_tokenize):
 * BOS when the vocabulary asks for it, then the encoded text. */
static int encode(const sl_tokenizer *tok, const char *text, size_t len, bool no_bos, int32_t **ids, int *n,
                  sl_err *err)
{
    int32_t *body = NULL;
    int n_body = 0;
    if (sl_tok_encode(tok, text, len, &body, &n_body, err))
        return -1;
    int bos = !no_bos && sl_tok_add_bos(tok) ? 1 : 0;
    int32_t *all = malloc((size_t)(n_body + bos + 1) * sizeof *all);
    if (!all) {
        free(body);
        return sl_fail(err, "out of memory");
    }
    if (bos)
        all[0] = sl_tok_bos(tok);
    if (n_body)
        memcpy(all + bos, body, (size_t)n_body * sizeof *body);
    free(body);
    *ids = all;
    *n = n_body + bos;
    return 0;
}

/* The piece as the vocabulary writes it, printable: quotes, backslashes and
 * control bytes escaped. */
static void print_piece(const gguf_str *s)
{
    putchar('\'');
    for (uint64_t i = 0; i < s->len; i++) {
        unsigned char ch = (unsigned char)s->ptr[i];
        if (ch == '\'' || ch == '\\')
            printf("\\%c", ch);
        else if (ch == '\n')
            fputs("\\n", stdout);
        else if (ch == '\t')
            fputs("\\t", stdout);
        else if (ch < 0x20 || ch == 0x7f)
            printf("\\x%02x", ch);
        else
            putchar(ch);
    }
    putchar('\'');
}

static void print_tokens(const tok_opts *o, const gguf_kv *vocab, const int32_t *ids, int n)
{
    if (o->json) {
        json_object *a = json_object_new_array();
        for (int i = 0; i < n; i++) {
            if (o->ids) {
                json_object_array_add(a, json_object_new_int(ids[i]));
                continue;
            }
            const gguf_str *s = &vocab->arr_strs[ids[i]];
            json_object *t = json_object_new_object();
            json_object_object_add(t, "id", json_object_new_int(ids[i]));
            json_object_object_add(t, "piece", json_object_new_string_len(s->ptr, (int)s->len));
            json_object_array_add(a, t);
        }
        printf("%s\n", json_object_to_json_string_ext(a, JSON_C_TO_STRING_PLAIN));
        json_object_put(a);
    } else if (o->ids) {
        putchar('[');
        for (int i = 0; i < n; i++)
            printf("%s%d", i ? ", " : "", ids[i]);
        puts("]");
    } else {
        for (int i = 0; i < n; i++) {
            printf("%6d  ", ids[i]);
            print_piece(&vocab->arr_strs[ids[i]]);
            putchar('\n');
        }
    }
}

static int tokenize(const tok_opts *o, const char *text, size_t len, sl_err *err)
{
    gguf_file *f = NULL;
    sl_tokenizer *tok = NULL;
    int32_t *ids = NULL;
    int n = 0, rc = -1;
    if (gguf_open(&f, o->model, err) || sl_tok_load_gguf(&tok, f, err))
        goto out;
    const gguf_kv *vocab = gguf_find(f, "tokenizer.ggml.tokens");
    if (!vocab || vocab->type != GGUF_ARRAY || vocab->arr_type != GGUF_STRING) {
        sl_fail(err, "%s: no tokenizer.ggml.tokens string array", o->model);
        goto out;
    }
    if (encode(tok, text, len, o->no_bos, &ids, &n, err))
        goto out;
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || (uint64_t)ids[i] >= vocab->arr_n) {
            sl_fail(err, "token %d: id %d is outside the vocabulary of %llu pieces", i, ids[i],
                    (unsigned long long)vocab->arr_n);
            goto out;
        }
    print_tokens(o, vocab, ids, n);
    rc = 0;
out:
    free(ids);
    if (tok)
        sl_tok_free(tok);
    if (f)
        gguf_close(f);
    return rc;
}

int cmd_tokenize(int argc, char **argv)
{
    tok_opts o = {0};
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc < 0 ? CLI_OK : rc;
    sl_err err = {{0}};
    size_t len = o.prompt ? strlen(o.prompt) : 0;
    char *owned = o.file ? read_text(o.file, &len, &err) : NULL;
    if (o.file && !owned)
        return cli_fail(argv[0], "%s", err.msg);
    rc = tokenize(&o, o.prompt ? o.prompt : owned, len, &err) ? cli_fail(argv[0], "%s", err.msg) : CLI_OK;
    free(owned);
    return rc;
}
