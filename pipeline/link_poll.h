/* The same-host link's fds in a zmq_poll set, for the loops that wait on
 * ZeroMQ sockets and a link together (a stage host, the driver). Apart from
 * link.h, which stays free of ZeroMQ. */
#ifndef SLUICE_LINK_POLL_H
#define SLUICE_LINK_POLL_H

#include <stdbool.h>
#include <zmq.h>

#include "pipeline/link.h"

/* Appends l's fds (the listener and each connection) to items[0, n), up to
 * max in all; returns the new count. */
static inline int pl_link_poll_add(const pl_link_in *l, zmq_pollitem_t *items, int n, int max)
{
    int fds[1 + PL_LINK_MAX_CONNS];
    int k = pl_link_in_fds(l, fds, 1 + PL_LINK_MAX_CONNS);
    for (int i = 0; i < k && n < max; i++)
        items[n++] = (zmq_pollitem_t){NULL, fds[i], ZMQ_POLLIN, 0};
    return n;
}

/* After the poll: tells l which of its fds, items[from, n), were readable
 * (pl_link_in_ready); true when one was. */
static inline bool pl_link_poll_seen(pl_link_in *l, const zmq_pollitem_t *items, int from, int n)
{
    bool any = false;
    for (int i = from; i < n; i++)
        if (items[i].revents & ZMQ_POLLIN) {
            pl_link_in_ready(l, items[i].fd);
            any = true;
        }
    return any;
}

#endif
