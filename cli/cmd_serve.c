/* sluice serve: the pipeline of `sluice run`, loaded once, behind an
 * OpenAI-style HTTP API and a chat page (see cli/serve.h for the threads). */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/pipecfg.h"
#include "cli/serve.h"
#include "util/pool.h"

extern const char sv_page_html[];

static const char usage[] =
    "usage: sluice serve (-m FILE | -c CONFIG) [options]\n"
    "\n"
    "Loads the pipeline of `sluice run` once and serves it over HTTP until\n"
    "SIGINT or SIGTERM: POST /v1/chat/completions and /v1/completions (OpenAI's\n"
    "API, streamed as server-sent events with \"stream\": true), GET /v1/models,\n"
    "GET /health (503 while loading or while a worker is down), GET /metrics\n"
    "(Prometheus) and GET / (a chat page). Every open request is a sequence of\n"
    "the pipeline's continuous batching; a client that disconnects cancels its\n"
    "request.\n"
    "\n"
    "options:\n"
    "  -m, --model FILE        GGUF model, run as the one-process pipeline\n"
    "  -c, --config FILE       pipeline config (YAML; see configs/)\n"
    "  --host IP               IPv4 address to listen on (default 127.0.0.1)\n"
    "  --port N                port (default 8080; 0: any free port)\n"
    "  --api-key-file F        every endpoint but /health and the page / needs the\n"
    "                          header 'Authorization: Bearer KEY', KEY the file's\n"
    "                          first line\n"
    "  --chat-format NAME      turn format of chat requests (gemma, gemma4,\n"
    "                          gemma4-no-thinking); default: the model's\n"
    "                          tokenizer.chat_template, else its architecture's\n"
    "  --slots N               KV slots (sequences decoded together) of the -m\n"
    "                          pipeline (default 8; a config sets limits.max_sequences)\n"
    "  --queue N               requests that may wait past limits.max_requests in\n"
    "                          flight (default 64); more get 429 with Retry-After\n"
    "  --no-prefix-cache       do not reuse a finished request's KV for a new\n"
    "                          request with the same beginning\n"
    "  --prefix-cache MODE     on, off, or full: sliding-window layers keep every\n"
    "                          position too, so a prefix that ends far back in a\n"
    "                          slot (a shared system prompt) is reused (default:\n"
    "                          the config's limits.prefix_cache; on with -m)\n"
    "  -t, --threads N         most threads (default: the CPUs this process may use;\n"
    "                          fewer while other processes take cores)\n"
    "  --ctx N                 context length per sequence (default: the config's\n"
    "                          limits, or min(model's training context, 4096))\n"
    "  --kv-type T             KV cache type: f32, f16, bf16 or q8_0\n"
    "  --draft FILE            speculative decoding with this draft model (or a\n"
    "                          Gemma 4 assistant of a Gemma 4 target, or\n"
    "                          prompt-lookup)\n"
    "  --draft-k N|auto        tokens drafted a step (default auto)\n"
    "  --draft-threads N       the draft's own thread with N pool threads\n"
    "  -h, --help              show this help\n"
    "\n"
    "A request's sampling fields (temperature, top_p, top_k, min_p, seed,\n"
    "repeat_penalty, repeat_last_n) override the config's sampling section.\n";

typedef struct serve_opts {
    cli_pipe_opts pipe; /* -m/-c, -t, --ctx, --kv-type, --draft* */
    const char *host, *key_file, *chat_format;
    int port, queue;
    int prefix_mode; /* PREFIX_* */
    bool slots_set;
} serve_opts;

/* --prefix-cache: unset (the config's limits.prefix_cache), or one of these */
enum { PREFIX_CONFIG = -1, PREFIX_OFF, PREFIX_ON, PREFIX_FULL };

/* The options of serve's own; CLI_USAGE after a message. */
static int take_option(const char *cmd, int c, serve_opts *o, const struct option *longopts)
{
    int bad = 0;
    switch (c) {
    case 'H': o->host = optarg; break;
    case 'P': bad = cli_parse_int(optarg, 0, 65535, &o->port); break;
    case 'K': o->key_file = optarg; break;
    case 'F': o->chat_format = optarg; bad = !sv_chat_format_known(optarg); break;
    case 'S':
        bad = cli_parse_int(optarg, 1, 64, &o->pipe.max_sequences);
        o->slots_set = true;
        break;
    case 'Q': bad = cli_parse_int(optarg, 0, 1 << 20, &o->queue); break;
    case 'N': o->prefix_mode = PREFIX_OFF; break;
    case 'C':
        o->prefix_mode = strcmp(optarg, "off") == 0    ? PREFIX_OFF
                         : strcmp(optarg, "on") == 0   ? PREFIX_ON
                         : strcmp(optarg, "full") == 0 ? PREFIX_FULL : PREFIX_CONFIG;
        bad = o->prefix_mode == PREFIX_CONFIG;
        break;
    default: return CLI_USAGE;
    }
    if (bad)
        return cli_usage(cmd, usage, "%s: invalid value '%s'", cli_opt_name(longopts, c), optarg);
    return 0;
}

static int parse_args(int argc, char **argv, serve_opts *o)
{
    static const struct option longopts[] = {
        CLI_PIPE_LONGOPTS,
        {"host", required_argument, NULL, 'H'},         {"port", required_argument, NULL, 'P'},
        {"api-key-file", required_argument, NULL, 'K'}, {"chat-format", required_argument, NULL, 'F'},
        {"slots", required_argument, NULL, 'S'},        {"queue", required_argument, NULL, 'Q'},
        {"no-prefix-cache", no_argument, NULL, 'N'},    {"prefix-cache", required_argument, NULL, 'C'},
        {NULL, 0, NULL, 0},
    };
    const char *cmd = argv[0];
    int c;
    while ((c = cli_getopt(argc, argv, ":" CLI_PIPE_SHORTOPTS, longopts, usage)) != -1) {
        if (c == 'h') {
            fputs(usage, stdout);
            return -1;
        }
        int rc = cli_pipe_option(cmd, c, optarg, &o->pipe);
        if (rc == 1)
            rc = take_option(cmd, c, o, longopts);
        if (rc)
            return rc;
    }
    if (optind < argc)
        return cli_usage(cmd, usage, "unexpected argument '%s'", argv[optind]);
    if (o->slots_set && o->pipe.config)
        return cli_usage(cmd, usage, "--slots sets the -m pipeline's slots; a config sets limits.max_sequences");
    return cli_pipe_check(cmd, &o->pipe);
}

/* The key is the file's first line (surrounding blanks dropped). */
static int read_key(sv_server *s, const char *path, sl_err *err)
{
    FILE *fp = fopen(path, "r");
    if (!fp)
        return sl_fail(err, "--api-key-file %s: cannot open", path);
    char line[1024];
    bool got = fgets(line, sizeof line, fp) != NULL;
    fclose(fp);
    char *k = line;
    size_t n = got ? strlen(line) : 0;
    while (n && (k[n - 1] == '\n' || k[n - 1] == '\r' || k[n - 1] == ' ' || k[n - 1] == '\t'))
        k[--n] = 0;
    while (*k == ' ' || *k == '\t')
        k++, n--;
    if (n < 8)
        return sl_fail(err, "--api-key-file %s: the first line must hold a key of at least 8 characters", path);
    if (!(s->api_key = strdup(k)))
        return sl_fail(err, "out of memory");
    s->api_key_len = n;
    return 0;
}

/* The model's name (its file's, without .gguf). */
static void read_model_name(sv_server *s)
{
    const char *base = strrchr(s->cfg->model, '/');
    base = base ? base + 1 : s->cfg->model;
    snprintf(s->model_name, sizeof s->model_name, "%.200s", base);
    size_t n = strlen(s->model_name);
    if (n > 5 && strcmp(s->model_name + n - 5, ".gguf") == 0)
        s->model_name[n - 5] = 0;
}

static volatile sig_atomic_t stop_signal;
static void on_signal(int sig) { stop_signal = sig; }

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Waits for the driver to load the pipeline (or a signal); returns 0 when
 * it serves. */
static int wait_ready(sv_server *s, sl_err *err)
{
    while (s->state == SV_LOADING && !stop_signal)
        sleep_ms(20);
    if (s->state == SV_FAILED)
        return sl_fail(err, "%s", s->load_error);
    return stop_signal ? -1 : 0;
}

static int setup(sv_server *s, pl_config *cfg, const serve_opts *o, sl_err *err)
{
    if (cli_pipeline_config(cfg, &o->pipe, err))
        return -1;
    if (o->pipe.draft && cli_pipeline_add_draft(cfg, &o->pipe, err))
        return -1;
    if (o->prefix_mode != PREFIX_CONFIG) {
        cfg->limits.prefix_cache = o->prefix_mode != PREFIX_OFF;
        cfg->limits.prefix_full = o->prefix_mode == PREFIX_FULL;
    }
    s->cfg = cfg;
    s->max_running = cfg->limits.max_requests;
    s->max_queue = o->queue;
    s->page = sv_page_html;
    sl_pipeline_opts_default(&s->popts);
    s->popts.threads = o->pipe.threads;
    s->popts.chat_format = o->chat_format;
    read_model_name(s);
    return o->key_file && read_key(s, o->key_file, err) ? -1 : 0;
}

/* Loads, serves until a signal, shuts down in order: the driver fails what
 * is left (every client gets an answer), the HTTP threads end, then the
 * pipeline closes (no stage or worker left behind). */
static int serve(sv_server *s, const serve_opts *o, sl_err *err)
{
    const char *host = o->host ? o->host : "127.0.0.1";
    if (strncmp(host, "127.", 4) != 0 && !s->api_key)
        fprintf(stderr, "sluice serve: warning: listening on %s, beyond this machine, with no API key: anyone who "
                        "reaches the port can use the model (give --api-key-file)\n", host);
    void *daemon = NULL;
    if (sv_http_start(s, host, o->port, &daemon, err))
        return -1;
    pthread_t driver;
    if (pthread_create(&driver, NULL, sv_driver_main, s)) {
        sv_http_stop(daemon);
        return sl_fail(err, "cannot start the driver thread");
    }
    int rc = wait_ready(s, err);
    if (rc == 0) {
        printf("sluice serve: %s ready at http://%s:%d/ (%d stage%s, %d slots, context %d)\n", s->model_name, host,
               sv_http_port(daemon), s->cfg->n_stages, s->cfg->n_stages == 1 ? "" : "s",
               s->cfg->limits.max_sequences, s->cfg->limits.context);
        fflush(stdout);
        while (!stop_signal)
            sleep_ms(50);
        fprintf(stderr, "sluice serve: %s: shutting down\n", stop_signal == SIGTERM ? "SIGTERM" : "SIGINT");
    }
    sv_driver_stop(s);
    pthread_join(driver, NULL);
    sv_wait_answered(s, 5.0);
    sv_http_stop(daemon);
    sl_pipeline_close(s->pipe);
    s->pipe = NULL;
    return rc;
}

int cmd_serve(int argc, char **argv)
{
    serve_opts o = {.port = 8080, .queue = 64, .prefix_mode = PREFIX_CONFIG, .pipe.max_sequences = 8};
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc < 0 ? CLI_OK : rc;
    if (o.pipe.threads)
        sl_pool_set_threads(o.pipe.threads);
    sl_err err = {{0}};
    sv_server s;
    pl_config *cfg = calloc(1, sizeof *cfg);
    if (!cfg || sv_server_init(&s)) {
        free(cfg);
        return cli_fail(argv[0], "out of memory");
    }
    cli_on_stop_signals(on_signal);
    signal(SIGPIPE, SIG_IGN);
    rc = setup(&s, cfg, &o, &err) || serve(&s, &o, &err) ? CLI_FAIL : CLI_OK;
    if (rc == CLI_FAIL && err.msg[0])
        cli_fail(argv[0], "%s", err.msg);
    free(s.api_key);
    sv_server_destroy(&s);
    free(cfg);
    return rc;
}
