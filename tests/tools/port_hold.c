/* port_hold N: reserves N consecutive loopback tcp ports (tests/lib/ports.h),
 * prints the first one and holds them until it is killed or its parent (the
 * test script) exits. tests/lib/ports.sh runs it. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "../lib/ports.h"

int main(int argc, char **argv)
{
    int n = argc == 2 ? atoi(argv[1]) : 0;
    if (n < 1 || n > 64) {
        fprintf(stderr, "usage: port_hold N (1..64)\n");
        return 2;
    }
    /* a script killed by ctest's timeout takes its reservation with it */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() == 1)
        return 1;
    int fds[64];
    int base = test_reserve_ports(n, fds);
    if (base < 0) {
        fprintf(stderr, "port_hold: no %d free consecutive ports\n", n);
        return 1;
    }
    printf("%d\n", base);
    fflush(stdout);
    for (;;)
        pause();
}
