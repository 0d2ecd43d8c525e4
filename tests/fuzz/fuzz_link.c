/* libFuzzer target for the same-host link's receiver (pipeline/link.h): the
 * input after its first two bytes is written on a real unix stream to a
 * pl_link_in, in pieces of (byte 1 + 1) bytes with the receiver reading
 * between them (so prefixes and bodies arrive split anywhere), then the
 * stream is closed and the receiver drained. Byte 0 picks the limits (bit
 * 0: max_frame_bytes 4 KiB and max_message_bytes 8 KiB, else the defaults).
 *
 * Every result must be a decoded message with a header or an error with a
 * message; once the sender is gone the receiver must hold no connection; a
 * prefix the parser accepts must have sizes within the limits. Broken
 * invariants trap. */
#include "pipeline/link.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static void require(int ok)
{
    if (!ok)
        __builtin_trap();
}

static pl_link_in *rx[2];
static char addr[2][128];

static void check_prefix(const uint8_t *p, size_t len, const pl_wire_limits *lim)
{
    int n;
    uint64_t sizes[1 + PL_MAX_FRAMES];
    size_t need;
    sl_err err;
    if (pl_link_parse_prefix(p, len, lim, &n, sizes, &need, &err)) {
        require(err.msg[0] != '\0');
        return;
    }
    if (n == 0) {
        require(need > len);
        return;
    }
    require(n >= 1 && n <= 1 + PL_MAX_FRAMES && need == 8 + 8 * (size_t)n && need <= len);
    uint64_t total = 0;
    for (int i = 0; i < n; i++) {
        require(sizes[i] <= (i == 0 ? lim->max_header_bytes : lim->max_frame_bytes));
        total += sizes[i];
    }
    require(total <= lim->max_message_bytes);
}

/* Takes whatever has arrived; true while the receiver still has a sender. */
static int drain(pl_link_in *l)
{
    for (;;) {
        pl_msg m;
        sl_err err;
        err.msg[0] = '\0';
        int rc = pl_link_in_recv(l, &m, &err);
        if (rc == 0)
            break;
        if (rc > 0) {
            require(m.hdr != NULL);
            pl_msg_close(&m);
        } else {
            require(err.msg[0] != '\0');
        }
    }
    int fds[1 + PL_LINK_MAX_CONNS];
    return pl_link_in_fds(l, fds, 1 + PL_LINK_MAX_CONNS) > 1;
}

static int setup(void)
{
    static char dir[] = "/tmp/sluice-fuzz-link-XXXXXX";
    if (!mkdtemp(dir))
        return -1;
    pl_wire_limits small;
    pl_wire_limits_default(&small);
    small.max_frame_bytes = 4096;
    small.max_message_bytes = 8192;
    for (int i = 0; i < 2; i++) {
        sl_err err;
        snprintf(addr[i], sizeof addr[i], "ipc://%s/l%d", dir, i);
        if (pl_link_listen(&rx[i], addr[i], i ? &small : NULL, &err)) {
            fprintf(stderr, "fuzz_link: %s\n", err.msg);
            return -1;
        }
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready)
        ready = setup() == 0 ? 1 : -1;
    require(ready == 1);
    if (size < 2)
        return 0;
    int which = data[0] & 1;
    size_t piece = (size_t)data[1] + 1;
    data += 2;
    size -= 2;
    pl_wire_limits lim;
    pl_wire_limits_default(&lim);
    if (which) {
        lim.max_frame_bytes = 4096;
        lim.max_message_bytes = 8192;
    }
    check_prefix(data, size, &lim);

    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    sl_err err;
    require(pl_link_path(addr[which], sa.sun_path, sizeof sa.sun_path, &err) == 0);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
    require(fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    for (size_t off = 0; off < size;) {
        size_t k = size - off < piece ? size - off : piece;
        ssize_t w = send(fd, data + off, k, MSG_NOSIGNAL);
        if (w > 0)
            off += (size_t)w;
        else if (w < 0 && errno != EAGAIN && errno != EINTR)
            break; /* the receiver closed a stream out of step */
        drain(rx[which]);
    }
    close(fd);
    /* the receiver sees the end (or has closed the stream itself) */
    for (int i = 0; i < 1000 && drain(rx[which]); i++) {
    }
    require(!drain(rx[which]));
    return 0;
}
