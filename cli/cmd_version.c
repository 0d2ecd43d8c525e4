/* sluice version (and sluice --version): what was built, and which kernels
 * this CPU runs. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli/cli.h"
#include "kernels/cpu.h"
#include "cli/sluice_version.h"

static const char usage[] =
    "usage: sluice version\n"
    "\n"
    "Prints the source version sluice was built from (git describe at build\n"
    "time) and the kernel path this CPU gets (SLUICE_KERNEL=scalar|avx2|avx512\n"
    "can lower it).\n";

int cmd_version(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = cli_getopt(argc, argv, "h", longopts, usage)) != -1) {
        if (c == '?')
            return CLI_USAGE;
        fputs(usage, stdout);
        return CLI_OK;
    }
    if (optind < argc)
        return cli_usage("version", usage, "unexpected argument '%s'", argv[optind]);
    sl_path active = sl_path_active(), best = sl_path_best();
    printf("sluice %s\n", SLUICE_GIT_DESCRIBE);
    if (active == best)
        printf("kernels: %s (the best this CPU supports)\n", sl_path_name(active));
    else
        printf("kernels: %s (this CPU supports %s; SLUICE_KERNEL=%s lowers it)\n", sl_path_name(active),
               sl_path_name(best), getenv("SLUICE_KERNEL") ? getenv("SLUICE_KERNEL") : "");
    return CLI_OK;
}
