/* sluice keygen: write a CURVE key pair for a pipeline node. */
#include <getopt.h>
#include <stdio.h>

#include "cli/cli.h"
#include "pipeline/security.h"

static const char usage[] =
    "usage: sluice keygen -o NAME\n"
    "\n"
    "Writes a CURVE key pair: NAME.key (secret, mode 0600) and NAME.pub (public),\n"
    "creating NAME's directory (mode 0700) when missing, and prints the public key.\n"
    "Each file's first line names its kind; sluice refuses a .pub where the secret\n"
    "key goes and a .key where a public key goes. Refuses to overwrite existing\n"
    "files. The secret half stays on its host; the public half goes to the other\n"
    "side: a worker's into the coordinator's config (its node's public_key), the\n"
    "coordinator's to each worker (--allow). Written inline in YAML, a public key\n"
    "must be quoted (Z85 may start with a YAML character such as ! & * or @).\n"
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
    char pub[SEC_KEY_TEXT], path[4200];
    snprintf(path, sizeof path, "%s.pub", base);
    if (sec_load_public(path, pub, &err) != 0)
        return cli_fail("keygen", "%s", err.msg);
    printf("wrote %s.key (secret, mode 0600: keep it on this host)\n"
           "wrote %s.pub (public: give it to the other side)\n"
           "public key: %s\n"
           "(inline in YAML, quote it: public_key: \"%s\")\n",
           base, base, pub, pub);
    return CLI_OK;
}
