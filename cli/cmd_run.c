/* sluice run: prefill a prompt in batches, then decode and stream tokens. */
#include <getopt.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/session.h"
#include "stages/sampler.h"

static const char usage[] =
    "usage: sluice run -m FILE -p PROMPT [options]\n"
    "\n"
    "Generates text from a prompt and streams it to stdout; timing goes to\n"
    "stderr. Decoding is greedy unless --temp is above 0, and sampling uses a\n"
    "fixed default seed, so repeated runs give the same text.\n"
    "\n"
    "options:\n"
    "  -m, --model FILE        GGUF model (its vocabulary is the tokenizer)\n"
    "  -p, --prompt TEXT       prompt\n"
    "  -n, --n-predict N       tokens to generate at most (default 128)\n"
    "  --temp T                temperature; 0 = greedy (default 0)\n"
    "  --top-k K               keep the K most likely tokens (default 0 = off)\n"
    "  --top-p P               nucleus: smallest set with probability >= P (default 1 = off)\n"
    "  --min-p P               keep tokens with p >= P * p_max (default 0 = off)\n"
    "  --repeat-penalty R      llama.cpp's repetition penalty (default 1 = off)\n"
    "  --repeat-last-n N       tokens the penalty looks back over (default 64)\n"
    "  --seed S                sampling seed (default 42)\n"
    "  --chat                  wrap the prompt in Gemma's turn format and stop at\n"
    "                          <end_of_turn>\n"
    "  -t, --threads N         OpenMP threads (default: OpenMP's choice)\n"
    "  --ctx N                 context length (default: prompt + N, at most the\n"
    "                          model's training context)\n"
    "  --no-bos                do not add the BOS token\n"
    "  -h, --help              show this help\n"
    "\n"
    "Filters apply in the order repetition penalty, top-k, temperature, top-p,\n"
    "min-p. Generation stops at EOS, after N tokens or when the context is full.\n";

#define PREFILL_CHUNK 512

typedef struct run_opts {
    const char *model, *prompt;
    int n_predict, threads, n_ctx;
    bool chat, no_bos, print_ids;
    sl_sampling sampling;
} run_opts;

static int parse_args(int argc, char **argv, run_opts *o)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"model", required_argument, NULL, 'm'},
        {"prompt", required_argument, NULL, 'p'},
        {"n-predict", required_argument, NULL, 'n'},
        {"threads", required_argument, NULL, 't'},
        {"temp", required_argument, NULL, 'T'},
        {"top-k", required_argument, NULL, 'K'},
        {"top-p", required_argument, NULL, 'P'},
        {"min-p", required_argument, NULL, 'M'},
        {"repeat-penalty", required_argument, NULL, 'R'},
        {"repeat-last-n", required_argument, NULL, 'L'},
        {"seed", required_argument, NULL, 's'},
        {"chat", no_argument, NULL, 'c'},
        {"ctx", required_argument, NULL, 'C'},
        {"no-bos", no_argument, NULL, 'B'},
        {"print-ids", no_argument, NULL, 'I'},
        {NULL, 0, NULL, 0},
    };
    const char *cmd = argv[0];
    sl_sampling *s = &o->sampling;
    int c;
    while ((c = cli_getopt(argc, argv, ":hm:p:n:t:", longopts, usage)) != -1) {
        int bad = 0;
        switch (c) {
        case 'h': fputs(usage, stdout); return -1;
        case 'm': o->model = optarg; break;
        case 'p': o->prompt = optarg; break;
        case 'n': bad = cli_parse_int(optarg, 1, 1 << 24, &o->n_predict); break;
        case 't': bad = cli_parse_int(optarg, 1, 4096, &o->threads); break;
        case 'T': bad = cli_parse_float(optarg, 0, 1e6, &s->temperature); break;
        case 'K': bad = cli_parse_int(optarg, 0, 1 << 30, &s->top_k); break;
        case 'P': bad = cli_parse_float(optarg, 0, 1, &s->top_p); break;
        case 'M': bad = cli_parse_float(optarg, 0, 1, &s->min_p); break;
        case 'R': bad = cli_parse_float(optarg, 1e-3, 1e3, &s->repeat_penalty); break;
        case 'L': bad = cli_parse_int(optarg, 0, 1 << 24, &s->repeat_last_n); break;
        case 's': bad = cli_parse_u64(optarg, &s->seed); break;
        case 'c': o->chat = true; break;
        case 'C': bad = cli_parse_int(optarg, 1, 1 << 24, &o->n_ctx); break;
        case 'B': o->no_bos = true; break;
        case 'I': o->print_ids = true; break;
        default: return CLI_USAGE;
        }
        if (bad)
            return cli_usage(cmd, usage, "bad value '%s' for --%s", optarg, cli_opt_name(longopts, c));
    }
    if (optind != argc)
        return cli_usage(cmd, usage, "unexpected argument '%s'", argv[optind]);
    if (!o->model || !o->prompt)
        return cli_usage(cmd, usage, "-m FILE and -p PROMPT are required");
    if (s->top_p <= 0.0f)
        return cli_usage(cmd, usage, "--top-p must be above 0");
    return 0;
}

/* The prompt as token ids, with BOS and the chat wrapping when asked. */
static int tokenize_prompt(const cli_session *s, const run_opts *o, int32_t **out, int *n_out, sl_err *err)
{
    char *text = NULL;
    const char *src = o->prompt;
    if (o->chat) {
        if (sl_tok_piece_id(s->tok, "<start_of_turn>") < 0 || sl_tok_piece_id(s->tok, "<end_of_turn>") < 0)
            return sl_fail(err, "%s: --chat needs <start_of_turn> and <end_of_turn> in the vocabulary", o->model);
        size_t len = strlen(o->prompt) + 96;
        text = malloc(len);
        if (!text)
            return sl_fail(err, "out of memory");
        snprintf(text, len, "<start_of_turn>user\n%s<end_of_turn>\n<start_of_turn>model\n", o->prompt);
        src = text;
    }
    int32_t *ids = NULL;
    int n = 0;
    int rc = sl_tok_encode(s->tok, src, strlen(src), &ids, &n, err);
    free(text);
    if (rc)
        return -1;
    int bos = o->no_bos ? 0 : 1;
    int32_t *all = malloc((size_t)(n + bos + 1) * sizeof *all);
    if (!all) {
        free(ids);
        return sl_fail(err, "out of memory");
    }
    if (bos)
        all[0] = sl_tok_bos(s->tok);
    if (n)
        memcpy(all + bos, ids, (size_t)n * sizeof *ids);
    free(ids);
    if (n + bos == 0) {
        free(all);
        return sl_fail(err, "the prompt is empty and --no-bos leaves nothing to evaluate");
    }
    *out = all;
    *n_out = n + bos;
    return 0;
}

static int choose_ctx(const cli_session *s, const run_opts *o, int n_prompt, int *n_ctx, sl_err *err)
{
    int train = s->model->cfg.n_ctx_train > 0 ? s->model->cfg.n_ctx_train : 1 << 24;
    long want = (long)n_prompt + o->n_predict;
    *n_ctx = o->n_ctx ? o->n_ctx : (int)(want < train ? want : train);
    if (*n_ctx > train)
        fprintf(stderr, "sluice run: warning: context %d is longer than the model's training context %d\n",
                *n_ctx, train);
    if (n_prompt > *n_ctx)
        return sl_fail(err, "the prompt has %d tokens, more than the context of %d (see --ctx)", n_prompt, *n_ctx);
    return 0;
}

/* Prefill in batches of up to PREFILL_CHUNK; logits of the last token only. */
static int prefill(cli_session *s, const int32_t *toks, int n, float *logits, sl_err *err)
{
    for (int start = 0; start < n; start += s->max_batch) {
        int len = n - start < s->max_batch ? n - start : s->max_batch;
        if (cli_session_batch(s, toks + start, len, start, err))
            return -1;
        if (start + len == n)
            return sl_head(s->fwd, s->x + (size_t)(len - 1) * (size_t)s->model->cfg.d_model, 1, logits, err);
    }
    return 0;
}

static void emit(const cli_session *s, int32_t id)
{
    char piece[256];
    int n = sl_tok_piece_bytes(s->tok, id, piece, (int)sizeof piece);
    if (n > 0)
        fwrite(piece, 1, (size_t)n, stdout);
    fflush(stdout);
}

typedef struct run_stats {
    int n_prompt, n_gen;
    double t_start, t_first, t_end;
    const char *stop;
} run_stats;

static int generate(cli_session *s, const run_opts *o, int32_t *toks, int n_prompt, run_stats *st, sl_err *err)
{
    const sl_config *c = &s->model->cfg;
    float *logits = malloc((size_t)c->n_vocab * sizeof *logits);
    sl_sampler *smp = sl_sampler_new(&o->sampling, c->n_vocab);
    int rc = -1;
    if (!logits || !smp) {
        sl_fail(err, "out of memory");
        goto done;
    }
    int32_t eos = sl_tok_eos(s->tok);
    int32_t eot = o->chat ? sl_tok_piece_id(s->tok, "<end_of_turn>") : -1;
    int n = n_prompt;
    st->t_start = cli_now();
    if (prefill(s, toks, n, logits, err))
        goto done;
    st->stop = "token limit";
    for (;;) {
        int32_t id = sl_sampler_pick(smp, logits, toks, n);
        if (st->n_gen == 0)
            st->t_first = cli_now();
        if (id == eos || id == eot) {
            st->stop = id == eos ? "end of sequence" : "end of turn";
            break;
        }
        emit(s, id);
        toks[n++] = id;
        if (++st->n_gen == o->n_predict)
            break;
        if (n >= s->n_ctx) {
            st->stop = "context full";
            break;
        }
        if (cli_session_batch(s, &toks[n - 1], 1, n - 1, err) ||
            sl_head(s->fwd, s->x, 1, logits, err))
            goto done;
    }
    st->t_end = cli_now();
    rc = 0;
done:
    sl_sampler_free(smp);
    free(logits);
    return rc;
}

static void print_stats(const run_stats *st)
{
    double prefill = st->t_first - st->t_start, decode = st->t_end - st->t_first;
    fprintf(stderr, "\n");
    fprintf(stderr, "prompt tokens      %d\n", st->n_prompt);
    fprintf(stderr, "prefill            %.1f tok/s\n", prefill > 0 ? st->n_prompt / prefill : 0.0);
    fprintf(stderr, "time to first      %.3f s\n", prefill);
    /* the first token comes out of the prefill; the rest are decode steps */
    fprintf(stderr, "decode             %.1f tok/s\n",
            decode > 0 && st->n_gen > 1 ? (st->n_gen - 1) / decode : 0.0);
    fprintf(stderr, "generated tokens   %d (stop: %s)\n", st->n_gen, st->stop);
}

int cmd_run(int argc, char **argv)
{
    run_opts o = {.n_predict = 128};
    sl_sampling_defaults(&o.sampling);
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc < 0 ? CLI_OK : rc;
    if (o.threads)
        omp_set_num_threads(o.threads);

    sl_err err = {{0}};
    cli_session s;
    if (cli_session_load(&s, o.model, &err))
        return cli_fail(argv[0], "%s", err.msg);
    int32_t *toks = NULL;
    int n_prompt = 0, n_ctx = 0, max_batch;
    run_stats st = {0};
    rc = CLI_FAIL;
    if (tokenize_prompt(&s, &o, &toks, &n_prompt, &err) || choose_ctx(&s, &o, n_prompt, &n_ctx, &err))
        goto fail;
    /* room for every token the run may hold */
    int32_t *grown = realloc(toks, (size_t)(n_ctx + 1) * sizeof *toks);
    if (!grown) {
        sl_fail(&err, "out of memory");
        goto fail;
    }
    toks = grown;
    max_batch = n_prompt < PREFILL_CHUNK ? n_prompt : PREFILL_CHUNK;
    if (cli_session_alloc(&s, n_ctx, max_batch, &err))
        goto fail;
    st.n_prompt = n_prompt;
    if (generate(&s, &o, toks, n_prompt, &st, &err))
        goto fail;
    fputc('\n', stdout);
    fflush(stdout);
    if (o.print_ids) {
        fprintf(stderr, "ids:");
        for (int i = n_prompt; i < n_prompt + st.n_gen; i++)
            fprintf(stderr, " %d", toks[i]);
        fputc('\n', stderr);
    }
    print_stats(&st);
    rc = CLI_OK;
    goto done;
fail:
    cli_fail(argv[0], "%s", err.msg);
done:
    free(toks);
    cli_session_free(&s);
    return rc;
}
