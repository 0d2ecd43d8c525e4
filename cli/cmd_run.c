/* sluice run: generate text through a pipeline. With -m FILE the pipeline is
 * the one-process default (embed, all layers, head, sample on threads);
 * with -c CONFIG it is whatever the config declares. Same runtime either way. */
#include <getopt.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/pipecfg.h"
#include "pipeline/client.h"
#include "pipeline/config.h"
#include "pipeline/metrics_http.h"
#include "pipeline/security.h"
#include "pipeline/status.h"
#include "stages/sampler.h"
#include "stages/spec.h"

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
    "      --prompts FILE      one prompt a line, all in flight together; outputs\n"
    "                          are printed in order, one block per prompt\n"
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
    "  -t, --threads N         OpenMP threads (default: all cores)\n"
    "  --ctx N                 context length per sequence (default: the config's\n"
    "                          limits, or min(model's training context, 4096))\n"
    "  --kv-type T             KV cache type: f32 (default), f16, bf16 or q8_0;\n"
    "                          overrides the config's limits.kv_type\n"
    "  --no-bos                do not add the BOS token\n"
    "  --print-ids             print the generated token ids to stderr\n"
    "  --stats                 print per-stage statistics to stderr at the end\n"
    "  --metrics-port [IP:]PORT  while running, serve the metrics of this process's\n"
    "                          stages as Prometheus text at http://IP:PORT/metrics\n"
    "                          (plain HTTP, read-only; IP defaults to 127.0.0.1)\n"
    "  --status-listen ADDR    while running, answer `sluice status ADDR` with those\n"
    "                          stages (ipc://PATH, or tcp://IP:PORT with CURVE: the\n"
    "                          config's key serves it and is the only one admitted)\n"
    "  -h, --help              show this help\n"
    "\n"
    "speculative decoding:\n"
    "  --draft FILE            draft model (same vocabulary as the target) that\n"
    "                          proposes tokens the target verifies in one batch;\n"
    "                          or prompt-lookup: n-gram matches in the text so far\n"
    "  --draft-k N|auto        tokens drafted a step (default auto: follows the\n"
    "                          acceptance rate, at most 8)\n"
    "  --draft-threads N       run the draft on its own thread with N OpenMP\n"
    "                          threads, drafting the next block while the target\n"
    "                          verifies (default: in line with the target)\n"
    "  --spec-baseline         first run the same prompts without speculation and\n"
    "                          report the speed-up\n"
    "Greedy output is token for token what plain decoding gives; with --temp > 0\n"
    "the output follows exactly the target's distribution. A config's\n"
    "speculative: section does the same for -c.\n"
    "\n"
    "Settings given here override the config's sampling section. Filters apply in\n"
    "the order repetition penalty, top-k, temperature, top-p, min-p. Generation\n"
    "stops at EOS, after N tokens or when the context is full.\n";

typedef struct run_opts {
    const char *model, *config, *prompt, *prompts_file;
    int n_predict, threads, n_ctx;
    bool chat, no_bos, print_ids, stats;
    const char *metrics, *status_listen;
    int kv_type;
    bool kv_type_set;
    const char *draft;
    int draft_k, draft_threads;
    bool draft_auto, draft_k_set, spec_baseline;
    sl_sampling sampling;
    bool sampling_set[8];
} run_opts;

enum { S_TEMP, S_TOPK, S_TOPP, S_MINP, S_PEN, S_LASTN, S_SEED };

static int parse_args(int argc, char **argv, run_opts *o)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"model", required_argument, NULL, 'm'},
        {"config", required_argument, NULL, 'c'},
        {"prompt", required_argument, NULL, 'p'},
        {"prompts", required_argument, NULL, 'F'},
        {"n-predict", required_argument, NULL, 'n'},
        {"threads", required_argument, NULL, 't'},
        {"temp", required_argument, NULL, 'T'},
        {"top-k", required_argument, NULL, 'K'},
        {"top-p", required_argument, NULL, 'P'},
        {"min-p", required_argument, NULL, 'M'},
        {"repeat-penalty", required_argument, NULL, 'R'},
        {"repeat-last-n", required_argument, NULL, 'L'},
        {"seed", required_argument, NULL, 's'},
        {"chat", no_argument, NULL, 'C'},
        {"ctx", required_argument, NULL, 'X'},
        {"no-bos", no_argument, NULL, 'B'},
        {"print-ids", no_argument, NULL, 'I'},
        {"stats", no_argument, NULL, 'S'},
        {"kv-type", required_argument, NULL, 'V'},
        {"draft", required_argument, NULL, 'D'},
        {"draft-k", required_argument, NULL, 'k'},
        {"draft-threads", required_argument, NULL, 'd'},
        {"spec-baseline", no_argument, NULL, 'b'},
        {"metrics-port", required_argument, NULL, 'H'},
        {"status-listen", required_argument, NULL, 'Q'},
        {NULL, 0, NULL, 0},
    };
    const char *cmd = argv[0];
    sl_sampling *s = &o->sampling;
    int c;
    while ((c = cli_getopt(argc, argv, ":hm:c:p:n:t:", longopts, usage)) != -1) {
        int bad = 0;
        switch (c) {
        case 'h': fputs(usage, stdout); return -1;
        case 'm': o->model = optarg; break;
        case 'c': o->config = optarg; break;
        case 'p': o->prompt = optarg; break;
        case 'F': o->prompts_file = optarg; break;
        case 'n': bad = cli_parse_int(optarg, 1, 1 << 24, &o->n_predict); break;
        case 't': bad = cli_parse_int(optarg, 1, 4096, &o->threads); break;
        case 'T': bad = cli_parse_float(optarg, 0, 1e6, &s->temperature); o->sampling_set[S_TEMP] = 1; break;
        case 'K': bad = cli_parse_int(optarg, 0, 1 << 30, &s->top_k); o->sampling_set[S_TOPK] = 1; break;
        case 'P': bad = cli_parse_float(optarg, 0, 1, &s->top_p); o->sampling_set[S_TOPP] = 1; break;
        case 'M': bad = cli_parse_float(optarg, 0, 1, &s->min_p); o->sampling_set[S_MINP] = 1; break;
        case 'R': bad = cli_parse_float(optarg, 1e-3, 1e3, &s->repeat_penalty); o->sampling_set[S_PEN] = 1; break;
        case 'L': bad = cli_parse_int(optarg, 0, 1 << 24, &s->repeat_last_n); o->sampling_set[S_LASTN] = 1; break;
        case 's': bad = cli_parse_u64(optarg, &s->seed); o->sampling_set[S_SEED] = 1; break;
        case 'C': o->chat = true; break;
        case 'X': bad = cli_parse_int(optarg, 16, 1 << 24, &o->n_ctx); break;
        case 'B': o->no_bos = true; break;
        case 'I': o->print_ids = true; break;
        case 'S': o->stats = true; break;
        case 'V':
            o->kv_type = sl_type_from_name(optarg);
            bad = o->kv_type != SL_TYPE_F32 && o->kv_type != SL_TYPE_F16 &&
                  o->kv_type != SL_TYPE_BF16 && o->kv_type != SL_TYPE_Q8_0;
            o->kv_type_set = true;
            break;
        case 'D': o->draft = optarg; break;
        case 'k':
            o->draft_auto = strcmp(optarg, "auto") == 0;
            bad = !o->draft_auto && cli_parse_int(optarg, 0, SL_SPEC_K_MAX, &o->draft_k);
            o->draft_k_set = !o->draft_auto;
            break;
        case 'd': bad = cli_parse_int(optarg, 1, 4096, &o->draft_threads); break;
        case 'b': o->spec_baseline = true; break;
        case 'Q':
            if (strncmp(optarg, "tcp://", 6) != 0 && strncmp(optarg, "ipc://", 6) != 0)
                return cli_usage(cmd, usage, "--status-listen: '%s' must start with tcp:// or ipc://", optarg);
            o->status_listen = optarg;
            break;
        case 'H': {
            char ip[64];
            int port;
            sl_err err;
            if (pl_metrics_http_parse(optarg, ip, sizeof ip, &port, &err))
                return cli_usage(cmd, usage, "--metrics-port: %s", err.msg);
            o->metrics = optarg;
            break;
        }
        default: return CLI_USAGE;
        }
        if (bad)
            return cli_usage(cmd, usage, "bad value '%s' for --%s", optarg, cli_opt_name(longopts, c));
    }
    if (optind != argc)
        return cli_usage(cmd, usage, "unexpected argument '%s'", argv[optind]);
    if (!o->model == !o->config)
        return cli_usage(cmd, usage, "give exactly one of -m FILE and -c CONFIG");
    if (!o->prompt == !o->prompts_file)
        return cli_usage(cmd, usage, "give exactly one of -p PROMPT and --prompts FILE");
    if (!o->draft && (o->draft_k_set || o->draft_auto || o->draft_threads))
        return cli_usage(cmd, usage, "--draft-k and --draft-threads need --draft");
    if (o->sampling_set[S_TOPP] && s->top_p <= 0.0f)
        return cli_usage(cmd, usage, "--top-p must be above 0");
    return 0;
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

/* Reads one prompt a line (empty lines skipped). */
static char **read_prompts(const char *path, int *n, sl_err *err)
{
    FILE *fp = fopen(path, "r");
    if (!fp) {
        sl_fail(err, "%s: cannot open", path);
        return NULL;
    }
    char **list = NULL, *line = NULL;
    size_t cap_line = 0;
    int count = 0;
    ssize_t len;
    while ((len = getline(&line, &cap_line, fp)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = 0;
        if (len == 0)
            continue;
        char **grown = realloc(list, (size_t)(count + 1) * sizeof *list);
        if (!grown || !(grown[count] = strdup(line))) {
            free(grown ? grown : list);
            list = NULL;
            sl_fail(err, "out of memory");
            break;
        }
        list = grown;
        count++;
    }
    free(line);
    fclose(fp);
    if (list && count == 0) {
        free(list);
        list = NULL;
    }
    if (!list && !err->msg[0])
        sl_fail(err, "%s: no prompts", path);
    *n = count;
    return list;
}

typedef struct output {
    uint64_t id;
    char *text;
    size_t len, cap;
    int32_t *ids;
    int n_ids, cap_ids;
    bool done, failed;
    char error[512];
    sl_event last;
} output;

static void append(output *o, const sl_event *ev)
{
    if (o->len + (size_t)ev->text_len + 1 > o->cap) {
        size_t cap = (o->cap + (size_t)ev->text_len + 1) * 2;
        char *t = realloc(o->text, cap);
        if (!t)
            return;
        o->text = t;
        o->cap = cap;
    }
    memcpy(o->text + o->len, ev->text, (size_t)ev->text_len);
    o->len += (size_t)ev->text_len;
    o->text[o->len] = 0;
    if (o->n_ids == o->cap_ids) {
        int cap = o->cap_ids ? 2 * o->cap_ids : 64;
        int32_t *t = realloc(o->ids, (size_t)cap * sizeof *t);
        if (!t)
            return;
        o->ids = t;
        o->cap_ids = cap;
    }
    o->ids[o->n_ids++] = ev->token;
}

static volatile sig_atomic_t interrupted;
static void on_sigint(int sig) { (void)sig; interrupted = 1; }

static void print_ids(const output *o, int index, bool many)
{
    if (many)
        fprintf(stderr, "ids[%d]:", index);
    else
        fprintf(stderr, "ids:");
    for (int i = 0; i < o->n_ids; i++)
        fprintf(stderr, " %d", o->ids[i]);
    fputc('\n', stderr);
}

static void print_summary(const sl_event *d)
{
    fprintf(stderr, "\n");
    fprintf(stderr, "prompt tokens      %d\n", d->n_prompt);
    fprintf(stderr, "prefill            %.1f tok/s\n", d->prefill_s > 0 ? d->n_prompt / d->prefill_s : 0.0);
    fprintf(stderr, "time to first      %.3f s\n", d->prefill_s);
    /* the first token comes out of the prefill; the rest are decode steps */
    fprintf(stderr, "decode             %.1f tok/s\n",
            d->decode_s > 0 && d->n_generated > 1 ? (d->n_generated - 1) / d->decode_s : 0.0);
    fprintf(stderr, "generated tokens   %d (stop: %s)\n", d->n_generated, d->stop ? d->stop : "?");
}

/* Pulls events until every request ended; streams when there is one. */
static int drive(sl_pipeline *p, output *outs, int n, bool stream, double *t_total, sl_err *err)
{
    double t0 = cli_now();
    int left = n;
    while (left > 0) {
        if (interrupted) {
            for (int i = 0; i < n; i++)
                if (!outs[i].done)
                    sl_pipeline_cancel(p, outs[i].id);
            interrupted = 0;
        }
        sl_event ev;
        int rc = sl_pipeline_next(p, &ev, 200, err);
        if (rc < 0)
            return -1;
        if (rc == 0)
            continue;
        output *o = NULL;
        for (int i = 0; i < n; i++)
            if (outs[i].id == ev.request)
                o = &outs[i];
        if (!o)
            continue;
        if (ev.kind == SL_EV_TOKEN) {
            append(o, &ev);
            if (stream) {
                fwrite(ev.text, 1, (size_t)ev.text_len, stdout);
                fflush(stdout);
            }
        } else {
            o->done = true;
            o->failed = ev.kind == SL_EV_ERROR;
            snprintf(o->error, sizeof o->error, "%s", ev.error);
            o->last = ev;
            left--;
        }
    }
    *t_total = cli_now() - t0;
    return 0;
}

static void reset_outputs(output *outs, int n)
{
    for (int i = 0; outs && i < n; i++) {
        free(outs[i].text);
        free(outs[i].ids);
        memset(&outs[i], 0, sizeof outs[i]);
    }
}

/* Decode tok/s of a run: each request's tokens after its first, over its
 * decode time (one request), or all tokens over the wall time (several). */
static double decode_rate(const output *outs, int n, double t_total)
{
    if (n == 1) {
        const sl_event *d = &outs[0].last;
        return d->decode_s > 0 && d->n_generated > 1 ? (d->n_generated - 1) / d->decode_s : 0.0;
    }
    int tokens = 0;
    for (int i = 0; i < n; i++)
        tokens += outs[i].n_ids;
    return t_total > 0 ? tokens / t_total : 0.0;
}

/* The metrics server's source (its own thread): the stages of this process. */
static char *prometheus_text(void *ctx) { return cli_pipeline_prometheus(ctx); }

static char *status_text(void *ctx)
{
    pl_stage_metrics *m;
    int n;
    if (sl_pipeline_metrics(ctx, &m, &n))
        return NULL;
    char *body = pl_metrics_text(m, n);
    free(m);
    if (!body)
        return NULL;
    size_t len = strlen(body) + 128;
    char *text = malloc(len);
    if (text)
        snprintf(text, len, "coordinator (sluice run, pid %d): %d stage(s) in this process\n%s", (int)getpid(), n,
                 body);
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
 * (report: stdout text and the stderr summary, else silent). */
static int run_pipeline(const pl_config *cfg, const run_opts *o, char **prompts, const char **single,
                        int n_prompts, output *outs, bool report, sl_spec_summary *spec,
                        double *tok_s, sl_err *err)
{
    sl_pipeline_opts popts;
    sl_pipeline_opts_default(&popts);
    popts.threads = o->threads;
    sl_pipeline *p = NULL;
    if (sl_pipeline_open(&p, cfg, &popts, err))
        return CLI_FAIL;
    int rc = CLI_FAIL;
    pl_metrics_http *http = NULL;
    /* a baseline run (report false) is not the one to watch */
    pl_status_server *status = NULL;
    if (o->metrics && report && pl_metrics_http_start(&http, o->metrics, prometheus_text, p, err))
        goto out;
    if (o->status_listen && report && start_status(&status, cfg, o->status_listen, p, err))
        goto out;
    sl_gen_params gp = {.max_tokens = o->n_predict, .chat = o->chat, .no_bos = o->no_bos};
    gp.sampling = cfg->sampling;
    merge_sampling(&gp.sampling, o);
    for (int i = 0; i < n_prompts; i++) {
        gp.prompt = prompts ? prompts[i] : single[0];
        if (sl_pipeline_submit(p, &gp, &outs[i].id, err)) {
            sl_wrap(err, "prompt %d", i + 1);
            goto out;
        }
    }
    signal(SIGINT, on_sigint);
    double t_total = 0;
    bool stream = n_prompts == 1 && report;
    if (drive(p, outs, n_prompts, stream, &t_total, err))
        goto out;
    *tok_s = decode_rate(outs, n_prompts, t_total);
    rc = CLI_OK;
    if (spec)
        sl_pipeline_spec_stats(p, spec);
    if (!report) {
        for (int i = 0; i < n_prompts; i++)
            if (outs[i].failed) {
                sl_fail(err, "baseline request %d failed: %s", i + 1, outs[i].error);
                rc = CLI_FAIL;
            }
        goto out;
    }
    int total_tokens = 0;
    for (int i = 0; i < n_prompts; i++) {
        total_tokens += outs[i].n_ids;
        if (!stream)
            printf("%s\n", outs[i].text ? outs[i].text : "");
        else
            putchar('\n');
        if (o->print_ids)
            print_ids(&outs[i], i, !stream);
        if (outs[i].failed) {
            fprintf(stderr, "sluice run: request %d failed: %s\n", i + 1, outs[i].error);
            rc = CLI_FAIL;
        }
    }
    fflush(stdout);
    if (stream && !outs[0].failed)
        print_summary(&outs[0].last);
    else if (!stream)
        fprintf(stderr, "\n%d requests, %d tokens in %.3f s: %.1f tok/s aggregate\n", n_prompts,
                total_tokens, t_total, t_total > 0 ? total_tokens / t_total : 0.0);
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
    fprintf(stderr, "effective decode   %.1f tok/s\n", tok_s);
    if (base_tok_s > 0)
        fprintf(stderr, "plain decode       %.1f tok/s; speed-up %.2fx\n", base_tok_s, tok_s / base_tok_s);
    else
        fprintf(stderr, "speed-up           not measured (--spec-baseline runs plain decoding first)\n");
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
    char **prompts = NULL;
    int n_prompts = 1;
    const char *single[1] = {o.prompt};
    if (o.prompts_file && !(prompts = read_prompts(o.prompts_file, &n_prompts, &err)))
        return cli_fail(argv[0], "%s", err.msg);
    pl_config *cfg = calloc(1, sizeof *cfg);
    output *outs = calloc((size_t)n_prompts, sizeof *outs);
    sl_spec_summary spec_sum = {0};
    pl_config *plain = NULL;
    rc = CLI_FAIL;
    if (!cfg || !outs) {
        sl_fail(&err, "out of memory");
        goto done;
    }
    cli_pipe_opts po = {.model = o.model, .config = o.config, .max_sequences = n_prompts, .n_ctx = o.n_ctx,
                        .kv_type = o.kv_type, .kv_type_set = o.kv_type_set, .draft = o.draft};
    if (cli_pipeline_config(cfg, &po, &err))
        goto done;
    double base_tok_s = 0.0;
    if (o.spec_baseline && !o.draft && !cfg->spec.on) {
        sl_fail(&err, "--spec-baseline compares against speculative decoding: give --draft or a "
                      "config with a speculative section");
        goto done;
    }
    if (o.spec_baseline) {
        fprintf(stderr, "baseline: the same prompts without speculation ...\n");
        plain = malloc(sizeof *plain);
        if (!plain) {
            sl_fail(&err, "out of memory");
            goto done;
        }
        *plain = *cfg;
        if (plain->spec.on) { /* the draft stage is stages[0] */
            memmove(plain->stages, plain->stages + 1, (size_t)(plain->n_stages - 1) * sizeof plain->stages[0]);
            plain->n_stages--;
            plain->spec.on = false;
        }
        if (run_pipeline(plain, &o, prompts, single, n_prompts, outs, false, NULL, &base_tok_s, &err))
            goto done;
        reset_outputs(outs, n_prompts);
    }
    if (o.draft && cli_pipeline_add_draft(cfg, o.draft, o.draft_k, o.draft_k_set, o.draft_threads, &err))
        goto done;
    double tok_s = 0.0;
    rc = run_pipeline(cfg, &o, prompts, single, n_prompts, outs, true, &spec_sum, &tok_s, &err);
    if (rc == CLI_OK && cfg->spec.on)
        print_spec(&spec_sum, tok_s, o.spec_baseline ? base_tok_s : 0.0);
done:
    if (rc == CLI_FAIL && err.msg[0])
        cli_fail(argv[0], "%s", err.msg);
    reset_outputs(outs, n_prompts);
    for (int i = 0; i < n_prompts; i++) {
        free(prompts ? prompts[i] : NULL);
    }
    free(outs);
    free(prompts);
    free(cfg);
    free(plain);
    return rc;
}
