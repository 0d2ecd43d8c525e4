/* sluice keygen: write a CURVE key pair for a pipeline node. */
#include <getopt.h>
#include <stdio.h>

#include "cli/cli.h"
#include "pipeline/security.h"

static const char usage[] =
    "usage: sluice keygen -o NAME\n"
    "\n"
    "Writes a CURVE key pair: NAME.key (secret, mode 0600) and NAME.pub (public).\n"
    "Refuses to overwrite existing files. The secret half stays on its host; the\n"
    "public half goes to the other side: a worker's into the coordinator's config\n"
    "(its node's public_key), the coordinator's to each worker (--allow).\n"
    "\n"
    "options:\n"
    "  -o, --output NAME       path of the pair without its extension\n"
    "  -h, --help              show this help\n";

int cmd_keygen(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"output", required_argument, NULL, 'o'},
        {NULL, 0, NULL, 0},
    };
    const char *base = NULL;
    int c;
    while ((c = cli_getopt(argc, argv, "ho:", longopts, usage)) != -1) {
        if (c == '?')
            return CLI_USAGE;
        if (c == 'h') {
            fputs(usage, stdout);
            return CLI_OK;
        }
        if (c == 'o')
            base = optarg;
    }
    if (optind < argc)
        return cli_usage("keygen", usage, "unexpected argument '%s'", argv[optind]);
    if (!base)
        return cli_usage("keygen", usage, "missing --output NAME");
    sl_err err;
    if (sec_keygen(base, &err) != 0)
        return cli_fail("keygen", "%s", err.msg);
    return CLI_OK;
}
