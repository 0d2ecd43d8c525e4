/* The same-host link (pipeline/link.h) between two real processes: messages
 * of every size arrive whole, in order, with the bytes sent (a prefill-sized
 * one too, read past the read-ahead); a stream out of step, a frame past a
 * limit, a header that does not decode and a stream cut mid-message each
 * give an error naming the problem, never a crash, and the listener keeps
 * serving; a receiver whose process died is reported by the sender, and one
 * restarted at the same address is reached again. A receiver that tells
 * the link what its polls saw (pl_link_in_ready, as the stage hosts do) gets
 * the same messages, and is not handed a new sender's bytes before a poll
 * saw the listener. */
#include "pipeline/link.h"
#include "tests/test.h"

#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define D_MODEL 1152

static char dir[64];

static void addr_of(char *out, size_t size, const char *name)
{
    snprintf(out, size, "ipc://%s/%s", dir, name);
}

/* Message i: rows i % 7 + 1 (the last one 256), activations a function of
 * (i, row, column) the receiver recomputes. */
static uint32_t rows_of(int i, int n) { return i == n - 1 ? 256u : (uint32_t)(i % 7 + 1); }
static float value(int i, uint32_t r, int c) { return (float)i * 1000.0f + (float)r + (float)c * 1e-3f; }

static int send_msg(pl_link_out *o, int i, int n, sl_err *err)
{
    uint32_t rows = rows_of(i, n);
    uint64_t *req = malloc(rows * sizeof *req);
    int32_t *pos = malloc(rows * sizeof *pos), *seq = calloc(rows, sizeof *seq), *tok = calloc(rows, sizeof *tok);
    uint8_t *flags = calloc(rows, 1);
    float *act = malloc((size_t)rows * D_MODEL * sizeof *act);
    for (uint32_t r = 0; r < rows; r++) {
        req[r] = 100 + r;
        pos[r] = i + (int32_t)r;
        for (int c = 0; c < D_MODEL; c++)
            act[(size_t)r * D_MODEL + c] = value(i, r, c);
    }
    pl_msg m;
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_BATCH, (uint64_t)i + 1, rows);
    int rc = pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, rows, 0, req, NULL, NULL, err) ||
             pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_SEQ, SLUICE__DTYPE__DT_I32, rows, 0, seq, NULL, NULL, err) ||
             pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_POS, SLUICE__DTYPE__DT_I32, rows, 0, pos, NULL, NULL, err) ||
             pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_TOKEN, SLUICE__DTYPE__DT_I32, rows, 0, tok, NULL, NULL, err) ||
             pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_FLAGS, SLUICE__DTYPE__DT_U8, rows, 0, flags, NULL, NULL, err) ||
             pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_ACTIVATION, SLUICE__DTYPE__DT_F32, rows, D_MODEL, act, NULL,
                        NULL, err) ||
             pl_link_send(o, &m, err);
    pl_msg_close(&m);
    free(req);
    free(pos);
    free(seq);
    free(tok);
    free(flags);
    free(act);
    return rc;
}

/* The next message or error, waiting up to 5 s: 1, 0 (timed out), -1;
 * hinted: telling the link which fds each poll found readable. */
static int await_as(pl_link_in *l, pl_msg *m, bool hinted, sl_err *err)
{
    for (int waited = 0; waited < 5000; waited += 10) {
        int rc = pl_link_in_recv(l, m, err);
        if (rc)
            return rc;
        int fds[1 + PL_LINK_MAX_CONNS];
        struct pollfd pf[1 + PL_LINK_MAX_CONNS];
        int n = pl_link_in_fds(l, fds, 1 + PL_LINK_MAX_CONNS);
        for (int i = 0; i < n; i++)
            pf[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
        poll(pf, (nfds_t)n, 10);
        for (int i = 0; hinted && i < n; i++)
            if (pf[i].revents)
                pl_link_in_ready(l, pf[i].fd);
    }
    return 0;
}

static int await(pl_link_in *l, pl_msg *m, sl_err *err) { return await_as(l, m, false, err); }

static bool msg_ok(const pl_msg *m, int i, int n)
{
    uint32_t rows = rows_of(i, n);
    sl_err err;
    if (m->hdr->batch_id != (uint64_t)i + 1 || m->hdr->n_rows != rows)
        return false;
    const uint64_t *req = pl_msg_u64(m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, rows, &err);
    const int32_t *pos = pl_msg_i32(m, SLUICE__PAYLOAD_KIND__PL_POS, rows, &err);
    float *act = malloc((size_t)rows * D_MODEL * sizeof *act);
    bool ok = req && pos && pl_msg_f32(m, SLUICE__PAYLOAD_KIND__PL_ACTIVATION, rows, D_MODEL, act, &err) == 0;
    for (uint32_t r = 0; ok && r < rows; r++) {
        ok = req[r] == 100 + r && pos[r] == i + (int32_t)r;
        for (int c = 0; ok && c < D_MODEL; c++)
            ok = act[(size_t)r * D_MODEL + c] == value(i, r, c);
    }
    free(act);
    return ok;
}

/* A raw connection to a link, for bytes no pl_link_out would send. */
static int raw_connect(const char *addr)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    sl_err err;
    if (pl_link_path(addr, sa.sun_path, sizeof sa.sun_path, &err))
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa)) {
        close(fd);
        return -1;
    }
    return fd;
}

static void test_messages_between_processes(bool hinted)
{
    char a[128];
    addr_of(a, sizeof a, hinted ? "in-hinted" : "in");
    pl_link_in *l;
    sl_err err;
    CHECK(pl_link_listen(&l, a, NULL, &err) == 0);
    enum { N = 40 };
    pid_t child = fork();
    if (child == 0) {
        pl_link_out *o;
        int rc = pl_link_out_open(&o, a, &err);
        for (int i = 0; rc == 0 && i < N; i++)
            rc = send_msg(o, i, N, &err);
        if (rc)
            fprintf(stderr, "sender: %s\n", err.msg);
        pl_link_out_close(o);
        _exit(rc ? 1 : 0);
    }
    int good = 0;
    for (int i = 0; i < N; i++) {
        pl_msg m;
        int rc = await_as(l, &m, hinted, &err);
        CHECKF(rc == 1, "%smessage %d: rc %d (%s)", hinted ? "hinted: " : "", i, rc,
               rc < 0 ? err.msg : "timed out");
        if (rc != 1)
            break;
        good += msg_ok(&m, i, N);
        pl_msg_close(&m);
    }
    CHECKF(good == N, "%d of %d messages arrived whole and in order", good, N);
    int status;
    waitpid(child, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    pl_link_in_close(l);
}

/* bytes written on a raw connection must give an error containing want,
 * and a good message on a new connection must still arrive */
static void expect_refused(const char *what, const void *bytes, size_t len, const char *want, bool limit)
{
    char a[128];
    addr_of(a, sizeof a, "bad");
    pl_wire_limits lim;
    pl_wire_limits_default(&lim);
    lim.max_frame_bytes = 1 << 20;
    pl_link_in *l;
    sl_err err;
    CHECK(pl_link_listen(&l, a, &lim, &err) == 0);
    int fd = raw_connect(a);
    CHECK(fd >= 0);
    CHECK(write(fd, bytes, len) == (ssize_t)len);
    close(fd); /* ends the stream: what it held must be judged as it is */
    pl_msg m;
    int rc = await(l, &m, &err);
    CHECKF(rc == -1, "%s: rc %d", what, rc);
    if (rc == -1) {
        CHECKF(strstr(err.msg, want) != NULL, "%s: error '%s' lacks '%s'", what, err.msg, want);
        CHECKF(pl_wire_err_is_limit(&err) == limit, "%s: '%s' counted as %s", what, err.msg,
               limit ? "malformed, not refused" : "refused, not malformed");
    }
    if (rc == 1)
        pl_msg_close(&m);
    pl_link_out *o;
    CHECK(pl_link_out_open(&o, a, &err) == 0 && send_msg(o, 3, 10, &err) == 0);
    rc = await(l, &m, &err);
    CHECKF(rc == 1 && msg_ok(&m, 3, 10), "%s: the next sender's message did not arrive (%d)", what, rc);
    if (rc == 1)
        pl_msg_close(&m);
    pl_link_out_close(o);
    pl_link_in_close(l);
}

static void test_bad_streams(void)
{
    const char garbage[] = "GET / HTTP/1.1\r\n\r\n";
    expect_refused("garbage", garbage, sizeof garbage - 1, "out of step", false);

    uint8_t p[8 + 16];
    uint32_t magic = PL_LINK_MAGIC, n = 2;
    uint64_t hdr = 16, huge = 1ull << 40;
    memcpy(p, &magic, 4);
    memcpy(p + 4, &n, 4);
    memcpy(p + 8, &hdr, 8);
    memcpy(p + 16, &huge, 8);
    expect_refused("a 1 TiB frame", p, sizeof p, "exceeds max_frame_bytes", true);

    n = 1000;
    memcpy(p + 4, &n, 4);
    expect_refused("1000 frames", p, 8, "1000 frames", false);

    /* a prefix announcing 16 header bytes of junk: the message is dropped */
    uint8_t q[8 + 8 + 16];
    n = 1;
    memcpy(q, &magic, 4);
    memcpy(q + 4, &n, 4);
    memcpy(q + 8, &hdr, 8);
    memset(q + 16, 0xff, 16);
    expect_refused("a junk header", q, sizeof q, "wire:", false);

    /* the sender gone after half a message */
    expect_refused("a cut stream", q, sizeof q - 5, "in the middle of a message", false);
}

/* A receiver process killed: the sender's next send fails naming it; a new
 * receiver at the address gets the one after. */
static void test_dead_peer(void)
{
    char a[128];
    addr_of(a, sizeof a, "peer");
    int ready[2];
    CHECK(pipe(ready) == 0);
    pid_t child = fork();
    if (child == 0) {
        pl_link_in *l;
        sl_err err;
        if (pl_link_listen(&l, a, NULL, &err))
            _exit(1);
        (void)!write(ready[1], "x", 1);
        for (;;) {
            pl_msg m;
            if (await(l, &m, &err) == 1)
                pl_msg_close(&m);
        }
    }
    char x;
    CHECK(read(ready[0], &x, 1) == 1);
    pl_link_out *o;
    sl_err err;
    CHECK(pl_link_out_open(&o, a, &err) == 0);
    CHECKF(send_msg(o, 0, 10, &err) == 0, "send to a live receiver: %s", err.msg);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    int rc = 0;
    for (int i = 1; i < 4 && rc == 0; i++) /* the first may still land in the dead socket's buffer */
        rc = send_msg(o, i, 10, &err);
    CHECK(rc != 0);
    CHECKF(strstr(err.msg, "gone") != NULL && strstr(err.msg, "dropped") != NULL, "dead receiver: '%s'", err.msg);

    pl_link_in *l;
    CHECK(pl_link_listen(&l, a, NULL, &err) == 0);
    CHECKF(send_msg(o, 5, 10, &err) == 0, "send to a restarted receiver: %s", err.msg);
    pl_msg m;
    rc = await(l, &m, &err);
    CHECKF(rc == 1 && msg_ok(&m, 5, 10), "restarted receiver: rc %d", rc);
    if (rc == 1)
        pl_msg_close(&m);
    pl_link_out_close(o);
    pl_link_in_close(l);
    close(ready[0]);
    close(ready[1]);
}

/* Hinted, the link accepts a sender only once a poll saw the listener
 * readable: before that its message stays in the socket, after it arrives. */
static void test_hinted_accept(void)
{
    char a[128];
    addr_of(a, sizeof a, "accept");
    pl_link_in *l;
    pl_link_out *o;
    sl_err err;
    CHECK(pl_link_listen(&l, a, NULL, &err) == 0);
    int fds[1 + PL_LINK_MAX_CONNS];
    CHECK(pl_link_in_fds(l, fds, 1 + PL_LINK_MAX_CONNS) == 1);
    int lfd = fds[0];
    pl_link_in_ready(l, -1); /* hinted from here on; -1 names no fd of its */
    CHECK(pl_link_out_open(&o, a, &err) == 0 && send_msg(o, 2, 10, &err) == 0);
    pl_msg m;
    int rc = pl_link_in_recv(l, &m, &err);
    CHECKF(rc == 0, "hinted: took a message no poll had seen (rc %d)", rc);
    CHECKF(pl_link_in_fds(l, fds, 1 + PL_LINK_MAX_CONNS) == 1, "hinted: accepted a sender no poll had seen");
    struct pollfd pf = {.fd = lfd, .events = POLLIN};
    CHECK(poll(&pf, 1, 5000) == 1);
    pl_link_in_ready(l, lfd);
    rc = pl_link_in_recv(l, &m, &err);
    CHECKF(rc == 1 && msg_ok(&m, 2, 10), "hinted: the message after the listener's poll: rc %d", rc);
    if (rc == 1)
        pl_msg_close(&m);
    rc = pl_link_in_recv(l, &m, &err);
    CHECKF(rc == 0, "hinted: a second message out of nothing (rc %d)", rc);
    pl_link_out_close(o);
    pl_link_in_close(l);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    snprintf(dir, sizeof dir, "/tmp/sluice-test-link-XXXXXX");
    if (!mkdtemp(dir))
        return 1;
    test_messages_between_processes(false);
    test_messages_between_processes(true);
    test_hinted_accept();
    test_bad_streams();
    test_dead_peer();
    rmdir(dir);
    return test_finish("test_link");
}
