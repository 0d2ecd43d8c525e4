/* sluice status: a worker's stages and their metrics (see pipeline/status.h). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "pipeline/status.h"

static const char usage[] =
    "usage: sluice status tcp://HOST:PORT --key FILE --server-key KEY [options]\n"
    "       sluice status ipc://PATH [options]\n"
    "\n"
    "Asks a `sluice worker` (ADDR is its --listen address) for the stages it\n"
    "serves and their metrics: messages, tokens, errors, refused and dropped\n"
    "messages, busy time, step time (mean, p50, p99) and queue depth. Asked at a\n"
    "coordinator's --status-listen address (`sluice run`), it lists the\n"
    "coordinator's stages and its workers' as they last reported them.\n"
    "\n"
    "On tcp:// the worker admits only the keys it allows (--allow): bring one of\n"
    "them (its coordinator's secret key) and the worker's public key.\n"
    "\n"
    "options:\n"
    "  -k, --key FILE          a secret key the worker allows (NAME.key from keygen)\n"
    "  -s, --server-key KEY    the worker's public key: a .pub file or the 40 characters\n"
    "  --insecure              plain TCP (a worker run with --insecure)\n"
    "  --timeout S             give up after S seconds without an answer (default 5)\n"
    "  -h, --help              show this help\n";

int cmd_status(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"key", required_argument, NULL, 'k'},
        {"server-key", required_argument, NULL, 's'},
        {"insecure", no_argument, NULL, 'I'},
        {"timeout", required_argument, NULL, 'T'},
        {NULL, 0, NULL, 0},
    };
    pl_status_opts o = {.timeout_s = 5.0};
    float timeout;
    int c;
    while ((c = cli_getopt(argc, argv, ":hk:s:", longopts, usage)) != -1) {
        switch (c) {
        case 'h':
            fputs(usage, stdout);
            return CLI_OK;
        case 'k':
            o.key = optarg;
            break;
        case 's':
            o.server_key = optarg;
            break;
        case 'I':
            o.insecure = true;
            break;
        case 'T':
            if (cli_parse_float(optarg, 0.1f, 3600, &timeout))
                return cli_usage(argv[0], usage, "--timeout: '%s' is not a number of seconds in [0.1, 3600]",
                                 optarg);
            o.timeout_s = timeout;
            break;
        default:
            return CLI_USAGE;
        }
    }
    if (optind != argc - 1)
        return cli_usage(argv[0], usage, optind < argc ? "one address only" : "missing the address (ADDR)");
    o.addr = argv[optind];
    if (strncmp(o.addr, "tcp://", 6) != 0 && strncmp(o.addr, "ipc://", 6) != 0)
        return cli_usage(argv[0], usage, "'%s' must start with tcp:// or ipc://", o.addr);
    bool tcp = strncmp(o.addr, "tcp://", 6) == 0;
    if (o.insecure && (o.key || o.server_key))
        return cli_usage(argv[0], usage, "--insecure excludes --key and --server-key");
    if (tcp && !o.insecure && (!o.key || !o.server_key))
        return cli_usage(argv[0], usage, "%s needs --key FILE and --server-key KEY (or --insecure)", o.addr);
    char *text;
    sl_err err = {{0}};
    if (pl_status_query(&o, &text, &err))
        return cli_fail(argv[0], "%s", err.msg);
    fputs(text, stdout);
    free(text);
    return CLI_OK;
}
