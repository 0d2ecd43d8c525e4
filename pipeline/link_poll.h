/* The same-host link's fds in a poll(2) set, for the loops that wait on a
 * link beside other fds (a stage host, the driver). They poll plain fds
 * only, a ZeroMQ socket by its ZMQ_FD (pl_zmq_pending), since zmq_poll
 * costs some six system calls a wait (a first pass with no timeout, and
 * the socket's own checks before and after). Apart from link.h, which
 * stays free of ZeroMQ. */
#ifndef SLUICE_LINK_POLL_H
#define SLUICE_LINK_POLL_H

#include <poll.h>
#include <stdbool.h>
#include <zmq.h>

#include "pipeline/link.h"

/* Appends l's fds (the listener and each connection) to items[0, n), up to
 * max in all; returns the new count. */
static inline int pl_link_poll_add(const pl_link_in *l, struct pollfd *items, int n, int max)
{
    int fds[1 + PL_LINK_MAX_CONNS];
    int k = pl_link_in_fds(l, fds, 1 + PL_LINK_MAX_CONNS);
    for (int i = 0; i < k && n < max; i++)
        items[n++] = (struct pollfd){.fd = fds[i], .events = POLLIN};
    return n;
}

/* After the poll: tells l which of its fds, items[from, n), were readable
 * (pl_link_in_ready); true when one was. */
static inline bool pl_link_poll_seen(pl_link_in *l, const struct pollfd *items, int from, int n)
{
    bool any = false;
    for (int i = from; i < n; i++)
        if (items[i].revents & (POLLIN | POLLHUP | POLLERR)) {
            pl_link_in_ready(l, items[i].fd);
            any = true;
        }
    return any;
}

/* A ZeroMQ socket's ZMQ_FD, to poll beside plain fds: it turns readable
 * when commands reach the socket (messages having arrived among them), and
 * only then; so a waiter looks at the socket (pl_zmq_pending) after the fd
 * turned readable, and takes every message before it sleeps again. */
static inline int pl_zmq_fd(void *sock)
{
    int fd = -1;
    size_t len = sizeof fd;
    return zmq_getsockopt(sock, ZMQ_FD, &fd, &len) ? -1 : fd;
}

/* Whether sock holds a message to take now (ZMQ_EVENTS, which also
 * handles the commands that made its fd readable). */
static inline bool pl_zmq_pending(void *sock)
{
    int events = 0;
    size_t len = sizeof events;
    return zmq_getsockopt(sock, ZMQ_EVENTS, &events, &len) == 0 && (events & ZMQ_POLLIN);
}

#endif
