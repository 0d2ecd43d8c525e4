/* sluice perplexity: llama.cpp's perplexity method. The text is tokenised
 * whole with BOS and cut into chunks of n_ctx tokens; each chunk starts
 * again with BOS in place of its first token and an empty cache, and only
 * the predictions of its second half are scored, so every scored token has
 * at least n_ctx/2 tokens of context. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "model/lm.h"
#include "util/cpus.h"
#include "util/pool.h"

static const char usage[] =
    "usage: sluice perplexity -m FILE -f TEXT [options]\n"
    "\n"
    "Measures perplexity the way llama.cpp's perplexity tool does: the text is\n"
    "tokenised with BOS and split into chunks of N tokens, each chunk's first\n"
    "token is replaced by BOS, and the tokens of the second half of each chunk\n"
    "are scored. Prints the running perplexity after each chunk and a final\n"
    "estimate with its standard error. Needs at least 2*N tokens of text.\n"
    "\n"
    "options:\n"
    "  -m, --model FILE     GGUF model\n"
    "  -f, --file TEXT      text file to score\n"
    "  -c, --ctx N          chunk (context) length (default 512)\n"
    "  -b, --batch N        tokens per forward batch (default: N of --ctx, at most 512)\n"
    "  --chunks K           score at most K chunks (default: all)\n"
    "  -t, --threads N      threads (default: the CPUs this process may use)\n"
    "  -h, --help           show this help\n";

typedef struct ppl_opts {
    const char *model, *text;
    int n_ctx, n_batch, max_chunks, threads;
} ppl_opts;

typedef struct ppl_acc {
    double nll, nll2;
    long count;
} ppl_acc;

static char *read_file(const char *path, size_t *len, sl_err *err)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return sl_fail(err, "%s: cannot open: %m", path), NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n + 65536 + 1 > cap) {
            cap = (n + 65536 + 1) * 2;
            char *grown = realloc(buf, cap);
            if (!grown) {
                free(buf);
                fclose(fp);
                return sl_fail(err, "%s: out of memory", path), NULL;
            }
            buf = grown;
        }
        size_t got = fread(buf + n, 1, 65536, fp);
        n += got;
        if (got < 65536)
            break;
    }
    bool bad = ferror(fp);
    fclose(fp);
    if (bad) {
        free(buf);
        return sl_fail(err, "%s: read error", path), NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

/* -log softmax(logits)[target], with the log-sum-exp taken in double. */
static double token_nll(const float *logits, int n_vocab, int32_t target)
{
    float max = logits[0];
    for (int i = 1; i < n_vocab; i++)
        if (logits[i] > max)
            max = logits[i];
    double sum = 0;
    for (int i = 0; i < n_vocab; i++)
        sum += exp((double)logits[i] - max);
    return log(sum) + max - logits[target];
}

/* Scores rows [lo, hi) of the current batch (absolute chunk positions
 * batch_start + row), predicting chunk[pos + 1]. */
static int score_rows(sl_lm *s, const int32_t *chunk, int batch_start, int lo, int hi, float *logits,
                      int group, ppl_acc *acc, sl_err *err)
{
    int n_vocab = s->model->cfg.n_vocab, d_model = s->model->cfg.d_model;
    for (int r = lo; r < hi; r += group) {
        int n = hi - r < group ? hi - r : group;
        if (sl_head(s->fwd, s->x + (size_t)r * (size_t)d_model, n, logits, err))
            return -1;
        for (int k = 0; k < n; k++) {
            double v = token_nll(logits + (size_t)k * (size_t)n_vocab, n_vocab, chunk[batch_start + r + k + 1]);
            acc->nll += v;
            acc->nll2 += v * v;
            acc->count++;
        }
    }
    return 0;
}

static int eval_chunk(sl_lm *s, const ppl_opts *o, const int32_t *chunk, int32_t bos, float *logits,
                      int group, ppl_acc *acc, sl_err *err)
{
    int n_ctx = o->n_ctx, first = n_ctx / 2;
    int32_t *input = malloc((size_t)o->n_batch * sizeof *input);
    if (!input)
        return sl_fail(err, "out of memory");
    sl_kv_clear(s->kv, 0);
    int rc = 0;
    for (int start = 0; start < n_ctx && rc == 0; start += o->n_batch) {
        int n = n_ctx - start < o->n_batch ? n_ctx - start : o->n_batch;
        memcpy(input, chunk + start, (size_t)n * sizeof *input);
        if (start == 0)
            input[0] = bos;
        rc = sl_lm_batch(s, input, n, start, err);
        /* positions first .. n_ctx-2 predict the next token of the chunk */
        int lo = first > start ? first - start : 0, hi = n_ctx - 1 - start < n ? n_ctx - 1 - start : n;
        if (rc == 0 && lo < hi)
            rc = score_rows(s, chunk, start, lo, hi, logits, group, acc, err);
    }
    free(input);
    return rc;
}

static int perplexity(const char *cmd, const ppl_opts *o)
{
    sl_err err = {{0}};
    sl_lm *s = NULL;
    size_t len = 0;
    char *text = read_file(o->text, &len, &err);
    if (!text)
        return cli_fail(cmd, "%s", err.msg);
    if (sl_lm_load(&s, o->model, &err)) {
        free(text);
        return cli_fail(cmd, "%s", err.msg);
    }
    int32_t *ids = NULL, *toks = NULL;
    float *logits = NULL;
    int n = 0, rc = CLI_FAIL;
    int rc_tok = sl_tok_encode(s->tok, text, len, &ids, &n, &err);
    free(text);
    if (rc_tok)
        goto fail;
    toks = malloc((size_t)(n + 1) * sizeof *toks);
    if (!toks) {
        sl_fail(&err, "out of memory");
        goto fail;
    }
    toks[0] = sl_tok_bos(s->tok);
    memcpy(toks + 1, ids, (size_t)n * sizeof *ids);
    n += 1;
    if (n < 2 * o->n_ctx) {
        sl_fail(&err, "%s: you need at least %d tokens to evaluate perplexity with a context of %d "
                "(the text has %d)", o->text, 2 * o->n_ctx, o->n_ctx, n);
        goto fail;
    }
    int n_chunk = n / o->n_ctx;
    if (o->max_chunks > 0 && o->max_chunks < n_chunk)
        n_chunk = o->max_chunks;
    int n_vocab = s->model->cfg.n_vocab;
    /* logits of a few rows at a time: about 32 MiB */
    int group = (int)(8 * 1024 * 1024 / n_vocab);
    group = group < 1 ? 1 : group > o->n_batch ? o->n_batch : group;
    logits = malloc((size_t)group * (size_t)n_vocab * sizeof *logits);
    sl_lm_size size = {.n_ctx = o->n_ctx, .max_tokens = o->n_batch, .kv_type = SL_TYPE_F32,
                       .window_rings = true};
    if (!logits || sl_lm_alloc(s, &size, &err)) {
        if (!logits)
            sl_fail(&err, "out of memory");
        goto fail;
    }
    fprintf(stderr, "perplexity: %d tokens, %d chunks, n_ctx=%d, batch_size=%d\n", n, n_chunk, o->n_ctx,
            o->n_batch);
    ppl_acc acc = {0};
    double t0 = cli_now();
    for (int i = 0; i < n_chunk; i++) {
        if (eval_chunk(s, o, toks + (size_t)i * (size_t)o->n_ctx, toks[0], logits, group, &acc, &err))
            goto fail;
        printf("[%d]%.4f,", i + 1, exp(acc.nll / (double)acc.count));
        fflush(stdout);
    }
    printf("\n");
    double nll = acc.nll / (double)acc.count, nll2 = acc.nll2 / (double)acc.count - nll * nll;
    double ppl = exp(nll);
    double sd = nll2 > 0 && acc.count > 1 ? sqrt(nll2 / (double)(acc.count - 1)) : 0.0;
    printf("Final estimate: PPL = %.4f +/- %.5f\n", ppl, sd * ppl);
    fprintf(stderr, "perplexity: %ld tokens scored in %.2f s\n", acc.count, cli_now() - t0);
    rc = CLI_OK;
    goto done;
fail:
    cli_fail(cmd, "%s", err.msg);
done:
    free(logits);
    free(toks);
    free(ids);
    sl_lm_free(s);
    return rc;
}

int cmd_perplexity(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"model", required_argument, NULL, 'm'},
        {"file", required_argument, NULL, 'f'},
        {"ctx", required_argument, NULL, 'c'},
        {"batch", required_argument, NULL, 'b'},
        {"chunks", required_argument, NULL, 'k'},
        {"threads", required_argument, NULL, 't'},
        {NULL, 0, NULL, 0},
    };
    ppl_opts o = {.n_ctx = 512};
    int c;
    while ((c = cli_getopt(argc, argv, ":hm:f:c:b:t:", longopts, usage)) != -1) {
        int bad = 0;
        switch (c) {
        case 'h': fputs(usage, stdout); return CLI_OK;
        case 'm': o.model = optarg; break;
        case 'f': o.text = optarg; break;
        case 'c': bad = cli_parse_int(optarg, 4, 1 << 20, &o.n_ctx); break;
        case 'b': bad = cli_parse_int(optarg, 1, 1 << 20, &o.n_batch); break;
        case 'k': bad = cli_parse_int(optarg, 1, 1 << 30, &o.max_chunks); break;
        case 't': bad = cli_parse_int(optarg, 1, 4096, &o.threads); break;
        default: return CLI_USAGE;
        }
        if (bad)
            return cli_usage(argv[0], usage, "bad value '%s' for --%s", optarg, cli_opt_name(longopts, c));
    }
    if (optind != argc)
        return cli_usage(argv[0], usage, "unexpected argument '%s'", argv[optind]);
    if (!o.model || !o.text)
        return cli_usage(argv[0], usage, "-m FILE and -f TEXT are required");
    if (o.n_batch == 0)
        o.n_batch = o.n_ctx < 512 ? o.n_ctx : 512;
    if (o.n_batch > o.n_ctx)
        o.n_batch = o.n_ctx;
    sl_pool_set_threads(sl_cpus_threads(o.threads)); /* the CPUs this process was given */
    return perplexity(argv[0], &o);
}
