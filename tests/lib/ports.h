/* Loopback tcp ports for tests that nobody else can hold.
 *
 * A test that picks a port number itself (fixed, or pid- or
 * $RANDOM-derived) can meet another test running beside it on the same
 * port: then its bind fails, or worse, a connecting socket of the other
 * test's pipeline delivers its messages into this one (the wire carries no
 * pipeline identity: without CURVE keys a stage takes any well-formed
 * batch). So ports come from the kernel and stay reserved:
 *
 *  1. bind(2) to 127.0.0.1:0 hands out a port no socket on the machine
 *     holds; the next n-1 ports are bound explicitly, WITHOUT SO_REUSEADDR,
 *     which fails if any socket (bound, listening or connected) holds one
 *     of them; then the block starts over at another kernel-chosen port.
 *  2. Once all n are bound, each socket gets SO_REUSEADDR, and is never
 *     listened on. The program under test binds and listens on the port
 *     with SO_REUSEADDR (ZeroMQ's tcp listener, libmicrohttpd and
 *     pipeline/metrics_http.c all set it), which Linux allows beside a
 *     bound, non-listening SO_REUSEADDR socket.
 *  3. Everyone else stays out while the reserving sockets live: a bind
 *     without SO_REUSEADDR fails (EADDRINUSE); bind(2) to port 0 and the
 *     local port of connect(2) pass over ports with a bound socket; and
 *     no test binds a number it chose itself any more (tests in their own
 *     network namespace excepted). A connection to a reserved port that no
 *     one listens on yet is refused, as on a free port.
 *
 * The reservation lasts as long as the sockets: a C test keeps them open
 * until it exits; shell tests run tests/tools/port_hold.c (tests/lib/
 * ports.sh), which holds them until the script's exit kills it. */
#ifndef SLUICE_TEST_PORTS_H
#define SLUICE_TEST_PORTS_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

/* Reserves n (1..64) consecutive loopback ports; fds (n entries) get the
 * reserving sockets. Returns the first port, or -1 (no block found in 200
 * tries, or no sockets). */
static inline int test_reserve_ports(int n, int *fds)
{
    if (n < 1 || n > 64)
        return -1;
    for (int attempt = 0; attempt < 200; attempt++) {
        int got = 0, base = -1;
        for (; got < n; got++) {
            int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (fd < 0)
                break;
            struct sockaddr_in sa = {.sin_family = AF_INET,
                                     .sin_port = htons((uint16_t)(got ? base + got : 0))};
            sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            socklen_t len = sizeof sa;
            if ((got && base + got > 65535) || bind(fd, (struct sockaddr *)&sa, sizeof sa) ||
                (!got && getsockname(fd, (struct sockaddr *)&sa, &len))) {
                close(fd);
                break;
            }
            if (!got)
                base = ntohs(sa.sin_port);
            fds[got] = fd;
        }
        if (got == n) {
            int one = 1;
            for (int i = 0; i < n; i++)
                setsockopt(fds[i], SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
            return base;
        }
        for (int i = 0; i < got; i++)
            close(fds[i]);
    }
    return -1;
}

static inline void test_release_ports(int n, const int *fds)
{
    for (int i = 0; i < n; i++)
        close(fds[i]);
}

#endif
