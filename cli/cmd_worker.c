/* sluice worker: serve the stages a coordinator assigns (see pipeline/worker.h). */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "pipeline/worker.h"

static const char usage[] =
    "usage: sluice worker --listen tcp://HOST:PORT --key FILE --allow FILE... [options]\n"
    "       sluice worker --listen ipc://PATH [options]\n"
    "\n"
    "Waits for a coordinator (`sluice run -c CONFIG` naming this worker's address\n"
    "as a node) to assign it stages, loads their layers from its own copy of the\n"
    "model (the path in the config), serves them, and drops them when the\n"
    "coordinator shuts down or falls silent. One coordinator at a time.\n"
    "\n"
    "On tcp:// every socket is authenticated and encrypted with CURVE: the worker\n"
    "serves with its own secret key (--key) and admits only the coordinators whose\n"
    "public keys are allowed (--allow); the peers that feed its stages are admitted\n"
    "by the public keys the coordinator's config names. Refused connections are\n"
    "logged with the peer's address. Make key pairs with `sluice keygen -o NAME`.\n"
    "\n"
    "options:\n"
    "  -l, --listen ADDR       control address: tcp://HOST:PORT or ipc://PATH; the\n"
    "                          stages listen on PORT+1+i (or PATH-si)\n"
    "  -k, --key FILE          this worker's CURVE secret key (NAME.key from keygen;\n"
    "                          refused when group or others can read it); its public\n"
    "                          half goes in the coordinator's config as public_key\n"
    "  -a, --allow KEY         a coordinator's public key: a .pub file or the 40\n"
    "                          characters; repeat for several coordinators\n"
    "  --insecure              plain TCP without keys: anyone who reaches the port\n"
    "                          may drive this worker (a warning says so)\n"
    "  --once                  exit when the first assignment ends\n"
    "  -t, --threads N         cores the stages share when the config does not say\n"
    "                          (default: all cores)\n"
    "  --silence S             drop the stages when the coordinator has been silent\n"
    "                          for S seconds (default 6)\n"
    "  --metrics-port [IP:]PORT  serve the stages' metrics as Prometheus text at\n"
    "                          http://IP:PORT/metrics (plain HTTP, read-only; IP\n"
    "                          defaults to 127.0.0.1: give one to let others scrape)\n"
    "  -q, --quiet             no progress lines\n"
    "  -h, --help              show this help\n";

#define MAX_ALLOW 64

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* Takes one option's value; CLI_USAGE after a message. */
static int take_option(const char *cmd, int c, pl_worker_opts *o)
{
    static const char *allow[MAX_ALLOW];
    float silence;
    switch (c) {
    case 'l': o->listen = optarg; return 0;
    case 'O': o->once = true; return 0;
    case 'k': o->key = optarg; return 0;
    case 'I': o->insecure = true; return 0;
    case 'q': o->quiet = true; return 0;
    case 'a':
        if (o->n_allow == MAX_ALLOW)
            return cli_usage(cmd, NULL, "--allow: at most %d keys", MAX_ALLOW);
        allow[o->n_allow++] = optarg;
        o->allow = allow;
        return 0;
    case CLI_OPT_METRICS_PORT:
        o->metrics = optarg;
        return cli_check_metrics_port(cmd, optarg);
    case 't':
        if (cli_parse_int(optarg, 1, 4096, &o->threads))
            return cli_bad_number(cmd, "threads", optarg, 1, 4096, false);
        return 0;
    case 'S':
        if (cli_parse_float(optarg, 0.1, 86400, &silence))
            return cli_bad_number(cmd, "silence", optarg, 0.1, 86400, true);
        o->silence_s = silence;
        return 0;
    case 'N':
        if (cli_parse_int(optarg, 0, 1 << 20, &o->notify_fd))
            return cli_usage(cmd, NULL, "--notify-fd: '%s' is not a file descriptor", optarg);
        return 0;
    default: return CLI_USAGE;
    }
}

/* The options each other need or exclude. */
static int check_args(const char *cmd, const pl_worker_opts *o)
{
    if (!o->listen)
        return cli_usage(cmd, NULL, "--listen ADDR is required");
    if (strncmp(o->listen, "tcp://", 6) != 0 && strncmp(o->listen, "ipc://", 6) != 0)
        return cli_usage(cmd, NULL, "--listen: '%s' must start with tcp:// or ipc://", o->listen);
    if (o->key && o->insecure)
        return cli_usage(cmd, NULL, "--key and --insecure exclude each other");
    if (o->n_allow && !o->key)
        return cli_usage(cmd, NULL, "--allow needs --key (this worker's own secret key)");
    if (o->key && !o->n_allow)
        return cli_usage(cmd, NULL, "--key needs at least one --allow (the coordinator's public key)");
    if (strncmp(o->listen, "tcp://", 6) == 0 && !o->key && !o->insecure)
        return cli_usage(cmd, NULL, "--listen %s needs --key FILE and --allow KEY (or --insecure for "
                         "plain TCP)", o->listen);
    return 0;
}

/* Returns 0, -1 after printing the help, or CLI_USAGE after a message. */
static int parse_args(int argc, char **argv, pl_worker_opts *o)
{
    static const struct option longopts[] = {
        CLI_LONGOPT_HELP,
        {"listen", required_argument, NULL, 'l'},
        {"once", no_argument, NULL, 'O'},
        CLI_LONGOPT_THREADS,
        {"silence", required_argument, NULL, 'S'},
        {"quiet", no_argument, NULL, 'q'},
        {"notify-fd", required_argument, NULL, 'N'}, /* for the coordinator that spawns us */
        {"key", required_argument, NULL, 'k'},
        {"allow", required_argument, NULL, 'a'},
        {"insecure", no_argument, NULL, 'I'},
        CLI_LONGOPT_METRICS_PORT,
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = cli_getopt(argc, argv, ":hl:t:qk:a:", longopts, usage)) != -1) {
        if (c == 'h') {
            fputs(usage, stdout);
            return -1;
        }
        int rc = take_option(argv[0], c, o);
        if (rc)
            return rc;
    }
    if (optind < argc)
        return cli_usage(argv[0], NULL, "unexpected argument '%s'", argv[optind]);
    return check_args(argv[0], o);
}

int cmd_worker(int argc, char **argv)
{
    pl_worker_opts o;
    pl_worker_opts_default(&o);
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc < 0 ? CLI_OK : rc;
    cli_on_stop_signals(on_signal);
    sl_err err = {{0}};
    if (pl_worker_run(&o, &stop_requested, &err))
        return cli_fail(argv[0], "%s", err.msg);
    return CLI_OK;
}
