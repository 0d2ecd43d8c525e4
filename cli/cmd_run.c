/* sluice run: generate text through a pipeline. With -m FILE the pipeline is
 * the one-process default (embed, all layers, head, sample on threads);
 * with -c CONFIG it is whatever the config declares. Same runtime either way. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/batch.h"
#include "cli/cli.h"
#include "cli/pipecfg.h"
#include "pipeline/client.h"
#include "pipeline/config.h"
#include "pipeline/metrics_http.h"
#include "pipeline/security.h"
#include "pipeline/status.h"
#include "stages/sampler.h"
#include "stages/spec.h"
#include "util/pool.h"

static const char usage[] =
    "usage: sluice run (-m FILE | -c CONFIG) (-p PROMPT | --prompts FILE) [options]\n"
    "\n"
    "Generates text and streams it to stdout; timing goes to stderr. Decoding\n"
    "is greedy unless --temp is above 0, and sampling uses a fixed default seed,\n"
    "so repeated runs give the same text.\n"
    "\n"
    "options:\n"
    "  -m, --model FILE        GGUF model, run as the one-process pipeline\n"
    "  -c, --config FILE       pipeline config (YAML; see configs/)\n"
    "  -p, --prompt TEXT       prompt\n"
    "      --prompts FILE      one prompt a line, any number: at most max_requests\n"
    "                          in flight, each answer printed when complete as\n"
    "                          '[line N] TEXT' (N: its line in FILE; blank lines\n"
    "                          are skipped), progress on stderr, failures counted\n"
    "                          by cause\n"
    "      --jsonl             with --prompts: one JSON object a line per answer\n"
    "                          (id, line, prompt, text, tokens, stop, timings)\n"
    "  -n, --n-predict N       tokens to generate at most (default 128)\n"
    "  --temp T                temperature; 0 = greedy (default 0)\n"
    "  --top-k K               keep the K most likely tokens (default 0 = off)\n"
    "  --top-p P               nucleus: smallest set with probability >= P (default 1 = off)\n"
    "  --min-p P               keep tokens with p >= P * p_max (default 0 = off)\n"
    "  --repeat-penalty R      llama.cpp's repetition penalty (default 1 = off)\n"
    "  --repeat-last-n N       tokens the penalty looks back over (default 64)\n"
    "  --seed S                sampling seed (default 42)\n"
    "  --chat                  wrap the prompt in the model's turn format (its\n"
    "                          tokenizer.chat_template's, else its architecture's:\n"
    "                          Gemma's or Gemma 4's) and stop at its end of turn\n"
    "  -t, --threads N         most threads (default: the CPUs this process may use;\n"
    "                          fewer while other processes take cores)\n"
    "  --ctx N                 context length per sequence (default: the config's\n"
    "                          limits, or min(model's training context, 4096))\n"
    "  --kv-type T             KV cache type: f32 (default), f16, bf16 or q8_0;\n"
    "                          overrides the config's limits.kv_type\n"
    "  --no-bos                do not add the BOS token\n"
    "  --print-ids             print the generated token ids to stderr\n"
    "  --stats                 print per-stage statistics to stderr at the end:\n"
    "                          messages, rows, busy time, drops (foreign: of\n"
    "                          another run), and the kernel ops on the worker\n"
    "                          pool: how many, how many split over threads, the\n"
    "                          share of op time that ran split and the threads a\n"
    "                          split op used (mean, and the last one's)\n"
    "  --metrics-port [IP:]PORT  while running, serve the metrics of every stage\n"
    "                          (a worker's as it last reported them) and of the\n"
    "                          requests as Prometheus text at http://IP:PORT/metrics\n"
    "                          (plain HTTP, read-only; IP defaults to 127.0.0.1)\n"
    "  --status-listen ADDR    while running, answer `sluice status ADDR` with the\n"
    "                          stages of this process and those of its workers, as\n"
    "                          they last reported them (ipc://PATH, or\n"
    "                          tcp://IP:PORT with CURVE: the config's key serves\n"
    "                          it and is the only one admitted)\n"
    "  -h, --help              show this help\n"
    "\n"
    "speculative decoding:\n"
    "  --draft FILE            draft model (same vocabulary as the target) that\n"
    "                          proposes tokens the target verifies in one batch;\n"
    "                          a Gemma 4 assistant (gemma4-assistant GGUF) of a\n"
    "                          Gemma 4 target, drafting after sample from the\n"
    "                          target's hidden state and K/V rows;\n"
    "                          or prompt-lookup: n-gram matches in the text so far\n"
    "  --draft-k N|auto        tokens drafted a step (default auto: up to 8 while\n"
    "                          drafting measurably beats plain decoding, else none)\n"
    "  --draft-threads N       run the draft on its own thread with N pool\n"
    "                          threads, drafting the next block while the target\n"
    "                          verifies (default: in line with the target)\n"
    "  --spec-baseline[=last]  also run the same prompts without speculation (first,\n"
    "                          or with =last after the speculative run) and report\n"
    "                          the speed-up\n"
    "Greedy output is token for token what plain decoding gives; with --temp > 0\n"
    "the output follows exactly the target's distribution. A config's\n"
    "speculative: section does the same for -c.\n"
    "\n"
    "Ctrl-C (SIGINT) or SIGTERM stops a run in order: the requests in flight are\n"
    "cancelled, one line says what was interrupted, and the exit status is 130\n"
    "(SIGINT) or 143 (SIGTERM); a second signal ends it at once.\n"
    "\n"
    "Settings given here override the config's sampling section. Filters apply in\n"
    "the order repetition penalty, top-k, temperature, top-p, min-p. Generation\n"
    "stops at EOS, after N tokens or when the context is full.\n";

typedef struct run_opts {
    cli_pipe_opts pipe; /* -m/-c, -t, --ctx, --kv-type, --draft* */
    const char *prompt, *prompts_file;
    bool jsonl;
    int n_predict;
    bool chat, no_bos, print_ids, stats;
    const char *metrics, *status_listen;
    int spec_baseline;  /* 0 none, 1 plain decoding first, 2 last */
    sl_sampling sampling;
    bool sampling_set[8];
} run_opts;

enum { S_TEMP, S_TOPK, S_TOPP, S_MINP, S_PEN, S_LASTN, S_SEED };

static const struct option run_longopts[] = {
    CLI_PIPE_LONGOPTS,
    {"prompt", required_argument, NULL, 'p'},
    {"prompts", required_argument, NULL, 'F'},
    {"jsonl", no_argument, NULL, 'J'},
    {"n-predict", required_argument, NULL, 'n'},
    {"temp", required_argument, NULL, 'T'},
    {"top-k", required_argument, NULL, 'K'},
    {"top-p", required_argument, NULL, 'P'},
    {"min-p", required_argument, NULL, 'M'},
    {"repeat-penalty", required_argument, NULL, 'R'},
    {"repeat-last-n", required_argument, NULL, 'L'},
    {"seed", required_argument, NULL, 's'},
    {"chat", no_argument, NULL, 'C'},
    {"no-bos", no_argument, NULL, 'B'},
    {"print-ids", no_argument, NULL, 'I'},
    {"stats", no_argument, NULL, 'S'},
    {"spec-baseline", optional_argument, NULL, 'b'},
    CLI_LONGOPT_METRICS_PORT,
    {"status-listen", required_argument, NULL, 'Q'},
    {NULL, 0, NULL, 0},
};

/* The numeric options: their ranges (for the parser and its messages) and
 * which sampling setting, if any, they override. */
typedef struct num_opt {
    int c;
    double lo, hi;
    bool real;
    int sampling; /* S_* or -1 */
} num_opt;

static const num_opt run_nums[] = {
    {'n', 1, 1 << 24, false, -1},
    {'T', 0, 1e6, true, S_TEMP},        {'K', 0, 1 << 30, false, S_TOPK},
    {'P', 0, 1, true, S_TOPP},          {'M', 0, 1, true, S_MINP},
    {'R', 1e-3, 1e3, true, S_PEN},      {'L', 0, 1 << 24, false, S_LASTN},
};

static void *num_dest(run_opts *o, int c)
{
    sl_sampling *s = &o->sampling;
    switch (c) {
    case 'T': return &s->temperature;
    case 'K': return &s->top_k;
    case 'P': return &s->top_p;
    case 'M': return &s->min_p;
    case 'R': return &s->repeat_penalty;
    case 'L': return &s->repeat_last_n;
    default: return &o->n_predict;
    }
}

/* Returns 0 when c was a numeric option and its value was good, 1 when c is
 * not a numeric option, CLI_USAGE after a message. */
static int parse_number(const char *cmd, int c, run_opts *o)
{
    for (size_t i = 0; i < sizeof run_nums / sizeof run_nums[0]; i++) {
        const num_opt *n = &run_nums[i];
        if (n->c != c)
            continue;
        void *dst = num_dest(o, c);
        int bad = n->real ? cli_parse_float(optarg, n->lo, n->hi, dst)
                          : cli_parse_int(optarg, (int)n->lo, (int)n->hi, dst);
        if (bad)
            return cli_bad_number(cmd, cli_opt_name(run_longopts, c), optarg, n->lo, n->hi, n->real);
        if (n->sampling >= 0)
            o->sampling_set[n->sampling] = true;
        return 0;
    }
    return 1;
}

/* The options that take text or nothing; CLI_USAGE after a message. */
static int parse_other(const char *cmd, int c, run_opts *o)
{
    switch (c) {
    case 'p': o->prompt = optarg; return 0;
    case 'F': o->prompts_file = optarg; return 0;
    case 'J': o->jsonl = true; return 0;
    case 'C': o->chat = true; return 0;
    case 'B': o->no_bos = true; return 0;
    case 'I': o->print_ids = true; return 0;
    case 'S': o->stats = true; return 0;
    case 'b':
        if (optarg && strcmp(optarg, "first") != 0 && strcmp(optarg, "last") != 0)
            return cli_usage(cmd, NULL, "bad value '%s' for --spec-baseline: must be first or last", optarg);
        o->spec_baseline = optarg && strcmp(optarg, "last") == 0 ? 2 : 1;
        return 0;
    case 's':
        o->sampling_set[S_SEED] = true;
        if (cli_parse_u64(optarg, &o->sampling.seed))
            return cli_usage(cmd, NULL, "bad value '%s' for --seed: must be a whole number 0..%llu", optarg,
                             (unsigned long long)UINT64_MAX);
        return 0;
    case 'Q':
        if (strncmp(optarg, "tcp://", 6) != 0 && strncmp(optarg, "ipc://", 6) != 0)
            return cli_usage(cmd, NULL, "--status-listen: '%s' must start with tcp:// or ipc://", optarg);
        o->status_listen = optarg;
        return 0;
    case CLI_OPT_METRICS_PORT:
        o->metrics = optarg;
        return cli_check_metrics_port(cmd, optarg);
    default: return CLI_USAGE;
    }
}

/* The options each other need or exclude. */
static int check_args(const char *cmd, const run_opts *o)
{
    int rc = cli_pipe_check(cmd, &o->pipe);
    if (rc)
        return rc;
    if (!o->prompt == !o->prompts_file)
        return cli_usage(cmd, NULL, "give exactly one of -p PROMPT and --prompts FILE");
    if (o->jsonl && !o->prompts_file)
        return cli_usage(cmd, NULL, "--jsonl is an output format of --prompts FILE");
    if (o->sampling_set[S_TOPP] && o->sampling.top_p <= 0.0f)
        return cli_usage(cmd, NULL, "bad value for --top-p: must be above 0 (and at most 1)");
    return 0;
}

/* Returns 0, -1 after printing the help, or CLI_USAGE after a message. */
static int parse_args(int argc, char **argv, run_opts *o)
{
    const char *cmd = argv[0];
    int c;
    while ((c = cli_getopt(argc, argv, ":" CLI_PIPE_SHORTOPTS "p:n:", run_longopts, usage)) != -1) {
        if (c == 'h') {
            fputs(usage, stdout);
            return -1;
        }
        int rc = cli_pipe_option(cmd, c, optarg, &o->pipe);
        if (rc == 1)
            rc = parse_number(cmd, c, o);
        if (rc == 1)
            rc = parse_other(cmd, c, o);
        if (rc)
            return rc;
    }
    if (optind != argc)
        return cli_usage(cmd, NULL, "unexpected argument '%s'", argv[optind]);
    return check_args(cmd, o);
}

/* Command-line sampling settings override the config's. */
static void merge_sampling(sl_sampling *dst, const run_opts *o)
{
    const sl_sampling *s = &o->sampling;
    if (o->sampling_set[S_TEMP]) dst->temperature = s->temperature;
    if (o->sampling_set[S_TOPK]) dst->top_k = s->top_k;
    if (o->sampling_set[S_TOPP]) dst->top_p = s->top_p;
    if (o->sampling_set[S_MINP]) dst->min_p = s->min_p;
    if (o->sampling_set[S_PEN]) dst->repeat_penalty = s->repeat_penalty;
    if (o->sampling_set[S_LASTN]) dst->repeat_last_n = s->repeat_last_n;
    if (o->sampling_set[S_SEED]) dst->seed = s->seed;
}

static volatile sig_atomic_t stop_signal;

/* The first SIGINT or SIGTERM stops the run in order (in-flight requests
 * cancelled, what was done reported); a second one ends the process. */
static void on_stop(int sig)
{
    if (stop_signal)
        _exit(128 + sig);
    stop_signal = sig;
}

/* One prompt's timing: load, prefill and decode each on its own line, and
 * "n/a" where there is nothing to measure. With speculation the decode
 * rate is print_spec's "effective decode". */
static void print_summary(double load_s, const sl_event *d, bool spec)
{
    fprintf(stderr, "\n");
    fprintf(stderr, "load               %.3f s (model and pipeline)\n", load_s);
    fprintf(stderr, "prompt tokens      %d\n", d->n_prompt);
    if (d->prefill_s > 0)
        fprintf(stderr, "prefill            %.1f tok/s (%.3f s)\n", d->n_prompt / d->prefill_s, d->prefill_s);
    else
        fprintf(stderr, "prefill            n/a (not timed)\n");
    fprintf(stderr, "time to first      %.3f s\n", d->prefill_s);
    /* the first token comes out of the prefill; the rest are decode steps */
    if (spec)
        ;
    else if (d->n_generated > 1 && d->decode_s > 0)
        fprintf(stderr, "decode             %.1f tok/s (%d token%s in %.3f s)\n",
                (d->n_generated - 1) / d->decode_s, d->n_generated - 1, d->n_generated == 2 ? "" : "s",
                d->decode_s);
    else
        fprintf(stderr, "decode             n/a (%s)\n",
                d->n_generated <= 1 ? "one token, and it came out of the prefill" : "not timed");
    fprintf(stderr, "generated tokens   %d (stop: %s)\n", d->n_generated, d->stop ? d->stop : "?");
}

/* The metrics server's source (its own thread): every stage, workers' as last
 * reported, and the request counters. */
static char *prometheus_text(void *ctx) { return cli_pipeline_prometheus(ctx); }

/* The coordinator's status text: its own stages, then the workers' as they
 * last reported them (every half second), in pipeline order. */
static char *status_text(void *ctx)
{
    pl_stage_metrics *m;
    int n, n_own;
    if (sl_pipeline_metrics(ctx, &m, &n_own))
        return NULL;
    free(m);
    if (sl_pipeline_metrics_all(ctx, &m, &n))
        return NULL;
    char *body = pl_metrics_text(m, n);
    free(m);
    if (!body)
        return NULL;
    size_t len = strlen(body) + 160;
    char *text = malloc(len);
    if (text)
        snprintf(text, len, "coordinator (sluice run, pid %d): %d stage(s) in this process, %d on workers "
                 "(as last reported)\n%s", (int)getpid(), n_own, n - n_own, body);
    free(body);
    return text;
}

/* The status socket of a coordinator: CURVE with the config's own key on
 * tcp:// (the asker brings that key pair), plain for ipc:// or an insecure
 * config. */
static int start_status(pl_status_server **out, const pl_config *cfg, const char *addr, sl_pipeline *p,
                        sl_err *err)
{
    sec_keys keys = {0};
    if (strncmp(addr, "tcp://", 6) == 0 && !cfg->insecure) {
        if (!cfg->nodes[0].key[0])
            return sl_fail(err, "--status-listen %s: tcp:// needs the config's CURVE key (nodes[0].key), or a "
                           "config with insecure: true", addr);
        if (sec_keys_load(&keys, cfg->nodes[0].key, err))
            return -1;
    }
    return pl_status_server_start(out, addr, &keys, keys.public_, status_text, p, err);
}

/* Opens the pipeline of cfg, runs every prompt through it and reports
 * (report: answers on stdout and the stderr summary, else silent). */
static int run_pipeline(const pl_config *cfg, const run_opts *o, const cli_prompts *pr, bool report,
                        sl_spec_summary *spec, cli_batch_result *res, sl_err *err)
{
    sl_pipeline_opts popts;
    sl_pipeline_opts_default(&popts);
    popts.threads = o->pipe.threads;
    sl_pipeline *p = NULL;
    double t_load = cli_now();
    if (sl_pipeline_open(&p, cfg, &popts, err))
        return CLI_FAIL;
    t_load = cli_now() - t_load;
    int rc = CLI_FAIL;
    pl_metrics_http *http = NULL;
    /* a baseline run (report false) is not the one to watch */
    pl_status_server *status = NULL;
    if (o->metrics && report) {
        if (pl_metrics_http_start(&http, o->metrics, prometheus_text, p, err))
            goto out;
        fprintf(stderr, "metrics: serving %s\n", pl_metrics_http_url(http));
    }
    if (o->status_listen && report && start_status(&status, cfg, o->status_listen, p, err))
        goto out;
    sl_gen_params gp = {.max_tokens = o->n_predict, .chat = o->chat, .no_bos = o->no_bos};
    gp.sampling = cfg->sampling;
    merge_sampling(&gp.sampling, o);
    cli_batch_opts bo = {.gp = &gp, .max_in_flight = cfg->limits.max_requests, .report = report,
                         .jsonl = o->jsonl, .print_ids = o->print_ids, .stop_signal = &stop_signal};
    if (cli_batch_run(p, pr, &bo, res, err))
        goto out;
    rc = res->n_failed ? CLI_FAIL : CLI_OK;
    if (spec)
        sl_pipeline_spec_stats(p, spec);
    if (!report) {
        if (res->n_failed)
            sl_fail(err, "baseline request failed: %s", res->first_error);
        goto out;
    }
    if (pr->n == 1 && pr->line[0] == 0 && !res->n_failed)
        print_summary(t_load, &res->last, cfg->spec.on);
    else if (pr->n > 1 || pr->line[0] != 0)
        fprintf(stderr, "\nload %.3f s; %d requests, %ld tokens in %.3f s: %.1f tok/s aggregate\n", t_load,
                res->n_done, res->tokens, res->t_total, res->t_total > 0 ? res->tokens / res->t_total : 0.0);
    if (o->stats)
        sl_pipeline_print_stats(p, stderr);
out:
    pl_status_server_stop(status);
    pl_metrics_http_stop(http);
    sl_pipeline_close(p);
    return rc;
}

static void print_spec(const sl_spec_summary *s, double tok_s, double base_tok_s)
{
    fprintf(stderr, "speculative        %ld verifications, %ld drafted, %ld accepted\n", s->steps,
            s->drafted, s->accepted);
    fprintf(stderr, "acceptance rate    %.1f%%\n", s->drafted ? 100.0 * s->accepted / s->drafted : 0.0);
    fprintf(stderr, "mean accepted      %.2f tokens a verification (%.2f emitted)\n",
            s->steps ? (double)s->accepted / s->steps : 0.0,
            s->steps ? (double)s->emitted / s->steps : 0.0);
    fprintf(stderr, "effective decode   %.1f tok/s (drafting and verification included)\n", tok_s);
    if (base_tok_s > 0)
        fprintf(stderr, "plain decode       %.1f tok/s; speed-up %.2fx\n", base_tok_s, tok_s / base_tok_s);
    else
        fprintf(stderr, "speed-up           not measured (--spec-baseline runs plain decoding too)\n");
}

/* The config the run uses: loaded or the one-process default, with the
 * command line's overrides. */
static int prepare_config(pl_config *cfg, const run_opts *o, int n_prompts, sl_err *err)
{
    cli_pipe_opts po = o->pipe;
    po.max_sequences = n_prompts;
    if (cli_pipeline_config(cfg, &po, err))
        return -1;
    if (o->spec_baseline && !o->pipe.draft && !cfg->spec.on)
        return sl_fail(err, "--spec-baseline compares against speculative decoding: give --draft or a "
                            "config with a speculative section");
    return 0;
}

/* --spec-baseline: the same prompts without speculation first; its decode
 * rate in *tok_s. */
static int run_baseline(const pl_config *cfg, const run_opts *o, const cli_prompts *pr, double *tok_s,
                        sl_err *err)
{
    fprintf(stderr, "baseline: the same prompts without speculation ...\n");
    pl_config *plain = malloc(sizeof *plain);
    if (!plain)
        return sl_fail(err, "out of memory");
    *plain = *cfg;
    int at = pl_config_spec_stage(plain);
    if (at >= 0) { /* the draft stage (first) or the mtp stage (last) */
        memmove(plain->stages + at, plain->stages + at + 1,
                (size_t)(plain->n_stages - 1 - at) * sizeof plain->stages[0]);
        plain->n_stages--;
        plain->spec.on = false;
        plain->spec.mtp = false;
    }
    cli_batch_result res;
    int rc = run_pipeline(plain, o, pr, false, NULL, &res, err) == CLI_OK ? 0 : -1;
    *tok_s = res.decode_tok_s;
    free(plain);
    return rc;
}

/* A run stopped by SIGINT or SIGTERM says what it stopped and exits the
 * conventional 128 + the signal's number. */
static int interrupted(const cli_prompts *pr, const cli_batch_result *res)
{
    int sig = stop_signal;
    const char *name = sig == SIGINT ? "SIGINT (Ctrl-C)" : "SIGTERM";
    if (pr->n == 1 && pr->line[0] == 0)
        fprintf(stderr, "sluice run: interrupted by %s: generation stopped after %ld token%s\n", name,
                res->tokens, res->tokens == 1 ? "" : "s");
    else
        fprintf(stderr, "sluice run: interrupted by %s: %d of %d prompts answered, %d cancelled, %d not "
                "started\n", name, res->n_done - res->n_failed, pr->n, res->n_failed, res->n_unstarted);
    return 128 + sig;
}

int cmd_run(int argc, char **argv)
{
    run_opts o = {.n_predict = 128};
    sl_sampling_defaults(&o.sampling);
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc < 0 ? CLI_OK : rc;
    if (o.pipe.threads)
        sl_pool_set_threads(o.pipe.threads);
    cli_on_stop_signals(on_stop);
    sl_err err = {{0}};
    cli_prompts pr;
    if (o.prompts_file ? cli_prompts_read(&pr, o.prompts_file, &err) : cli_prompts_single(&pr, o.prompt, &err))
        return cli_fail(argv[0], "%s", err.msg);
    if (pr.n_blank)
        fprintf(stderr, "prompts: %d from %s (%d blank line%s skipped; answers keep the file's line numbers)\n",
                pr.n, o.prompts_file, pr.n_blank, pr.n_blank == 1 ? "" : "s");
    pl_config *cfg = calloc(1, sizeof *cfg);
    sl_spec_summary spec_sum = {0};
    cli_batch_result res = {0};
    double base_tok_s = 0.0;
    rc = CLI_FAIL;
    if (!cfg)
        sl_fail(&err, "out of memory");
    else if (prepare_config(cfg, &o, pr.n, &err) == 0 &&
             (o.spec_baseline != 1 || run_baseline(cfg, &o, &pr, &base_tok_s, &err) == 0) && !stop_signal &&
             (!o.pipe.draft || cli_pipeline_add_draft(cfg, &o.pipe, &err) == 0))
        rc = run_pipeline(cfg, &o, &pr, true, &spec_sum, &res, &err);
    /* the order alternates in bench/spec.sh: whichever runs second finds
     * the process warm (a plain run against a plain run: 1.026x) */
    if (rc == CLI_OK && o.spec_baseline == 2 && !stop_signal && run_baseline(cfg, &o, &pr, &base_tok_s, &err))
        rc = CLI_FAIL;
    if (stop_signal)
        rc = interrupted(&pr, &res);
    else if (rc == CLI_OK && cfg->spec.on)
        print_spec(&spec_sum, res.decode_tok_s, o.spec_baseline ? base_tok_s : 0.0);
    else if (rc == CLI_FAIL && err.msg[0])
        cli_fail(argv[0], "%s", err.msg);
    cli_prompts_free(&pr, o.prompts_file != NULL);
    free(cfg);
    return rc;
}
