/* The same-host data link (see link.h). */
#define _GNU_SOURCE
#include "pipeline/link.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "pipeline/security.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the link's format assumes a little-endian host");

#define MAX_FRAMES_TOTAL (1 + PL_MAX_FRAMES)
#define PREFIX_MAX (8 + 8 * MAX_FRAMES_TOTAL)
/* bytes read ahead per connection: a decode message and the next's prefix
 * in one recv; larger bodies are read straight into their frames */
#define STAGE_BYTES (64u << 10)
/* frames sit at this alignment in a received message's block */
#define FRAME_ALIGN 64
/* a receiver never reached yet may be a worker still starting */
#define CONNECT_WAIT_MS 200
/* a receiver that reads nothing for this long is taken for stuck */
#define SEND_TIMEOUT_S 60

bool pl_link_wanted(const char *addr)
{
    struct sockaddr_un sa;
    if (strncmp(addr, "ipc://", 6) != 0 || addr[6] == '@' || addr[6] == '\0' ||
        strlen(addr + 6) + strlen(".link") >= sizeof sa.sun_path)
        return false; /* a path with no room for ".link" stays on ZeroMQ, on both ends */
    const char *e = getenv("SLUICE_IPC_LINK");
    return !e || strcmp(e, "zmq") != 0;
}

int pl_link_path(const char *addr, char *out, size_t size, sl_err *err)
{
    struct sockaddr_un sa;
    if (strncmp(addr, "ipc://", 6) != 0)
        return sl_fail(err, "link: %s is not an ipc:// address", addr);
    int len = snprintf(out, size, "%s.link", addr + 6);
    if (len < 0 || (size_t)len >= size || (size_t)len >= sizeof sa.sun_path)
        return sl_fail(err, "link: %s: the path is too long for a unix socket (%zu bytes at most)", addr,
                       sizeof sa.sun_path - 6);
    return 0;
}

static int unix_addr(const char *path, struct sockaddr_un *sa)
{
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    size_t len = strlen(path);
    if (len >= sizeof sa->sun_path)
        return -1;
    memcpy(sa->sun_path, path, len + 1);
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- the format ---- */

int pl_link_parse_prefix(const uint8_t *p, size_t have, const pl_wire_limits *lim, int *n, uint64_t *sizes,
                         size_t *need, sl_err *err)
{
    *n = 0;
    *need = 8;
    if (have < 8)
        return 0;
    uint32_t magic, count;
    memcpy(&magic, p, 4);
    memcpy(&count, p + 4, 4);
    if (magic != PL_LINK_MAGIC)
        return sl_fail(err, "link: stream out of step: 0x%08x where a message's magic 0x%08x belongs", magic,
                       PL_LINK_MAGIC);
    if (count == 0 || count > MAX_FRAMES_TOTAL)
        return sl_fail(err, "wire: message of %u frames (a header and at most PL_MAX_FRAMES = %d payloads)", count,
                       PL_MAX_FRAMES);
    *need = 8 + 8 * (size_t)count;
    if (have < *need)
        return 0;
    size_t total = 0;
    for (uint32_t i = 0; i < count; i++) {
        memcpy(&sizes[i], p + 8 + 8 * i, 8);
        size_t bytes = sizes[i] > SIZE_MAX ? SIZE_MAX : (size_t)sizes[i];
        if (sl_add_size(total, bytes, &total))
            total = SIZE_MAX;
        if (pl_msg_check_frame((int)i, bytes, total, lim, err))
            return -1;
    }
    *n = (int)count;
    return 0;
}

/* ---- receiving ---- */

typedef struct link_conn {
    int fd;
    uint8_t *stage; /* STAGE_BYTES read ahead: [off, len) not yet used */
    size_t off, len;
    /* the message being read: n > 0 once its prefix is in */
    int n;
    uint64_t sizes[MAX_FRAMES_TOTAL];
    size_t at[MAX_FRAMES_TOTAL]; /* frame i's offset in blk */
    uint8_t *blk;
    size_t body, got; /* its frames' bytes, and how many have arrived */
    /* in hinted mode (pl_link_in_ready): bytes may be waiting in the
     * socket; cleared by a read that drained it */
    bool ready;
} link_conn;

struct pl_link_in {
    int lfd;
    sec_ipc_file file;
    pl_wire_limits lim;
    link_conn conns[PL_LINK_MAX_CONNS];
    int n_conns;
    int next; /* the connection to read first, for fairness */
    /* adaptive busy-polling: after a spin that found nothing, the next
     * `skip` waits sleep at once; skip_next doubles with each such spin */
    int skip, skip_next;
    /* the caller reports what its polls saw (pl_link_in_ready): the
     * listener is accepted on and a connection read only when a poll said
     * so, or an earlier read did not drain it */
    bool hinted, listen_ready;
};

int pl_link_listen(pl_link_in **out, const char *addr, const pl_wire_limits *lim, sl_err *err)
{
    *out = NULL;
    char path[256];
    struct sockaddr_un sa;
    if (pl_link_path(addr, path, sizeof path, err) || sec_ipc_dir(addr, err))
        return -1;
    unix_addr(path, &sa);
    pl_link_in *l = calloc(1, sizeof *l);
    if (!l)
        return sl_fail(err, "link: out of memory");
    if (lim)
        l->lim = *lim;
    else
        pl_wire_limits_default(&l->lim);
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(path); /* a dead process's; ZeroMQ's ipc:// does the same */
    l->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (l->lfd < 0 || bind(l->lfd, (struct sockaddr *)&sa, sizeof sa) || listen(l->lfd, 8)) {
        sl_fail(err, "link: cannot listen on %s: %s", path, strerror(errno));
        if (l->lfd >= 0)
            close(l->lfd);
        free(l);
        return -1;
    }
    char note[300];
    snprintf(note, sizeof note, "ipc://%s", path);
    sec_ipc_file_note(&l->file, note);
    *out = l;
    return 0;
}

int pl_link_in_fds(const pl_link_in *l, int *fds, int max)
{
    int n = 0;
    if (n < max)
        fds[n++] = l->lfd;
    for (int i = 0; i < l->n_conns && n < max; i++)
        fds[n++] = l->conns[i].fd;
    return n;
}

void pl_link_in_ready(pl_link_in *l, int fd)
{
    l->hinted = true;
    if (fd == l->lfd) {
        l->listen_ready = true;
        return;
    }
    for (int i = 0; i < l->n_conns; i++)
        if (l->conns[i].fd == fd)
            l->conns[i].ready = true;
}

static void conn_close(pl_link_in *l, int i)
{
    link_conn *c = &l->conns[i];
    close(c->fd);
    free(c->stage);
    free(c->blk);
    l->conns[i] = l->conns[--l->n_conns];
    memset(&l->conns[l->n_conns], 0, sizeof l->conns[0]);
    if (l->next >= l->n_conns)
        l->next = 0;
}

/* Takes the senders that connected; -1 with err when one had to be turned
 * away (PL_LINK_MAX_CONNS already). */
static int accept_new(pl_link_in *l, sl_err *err)
{
    for (;;) {
        int fd = accept4(l->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return 0;
        uint8_t *stage = l->n_conns < PL_LINK_MAX_CONNS ? malloc(STAGE_BYTES) : NULL;
        if (!stage) {
            close(fd);
            return sl_fail(err, "link: turned a sender away: %d already connected (or out of memory)",
                           l->n_conns);
        }
        l->conns[l->n_conns++] = (link_conn){.fd = fd, .stage = stage, .ready = true};
    }
}

static void blk_free(void *p) { free(p); }

/* The message's prefix is in c->sizes: its block, frames at aligned offsets. */
static int start_body(link_conn *c, sl_err *err)
{
    size_t at = 0;
    for (int i = 0; i < c->n; i++) {
        c->at[i] = at;
        at += ((size_t)c->sizes[i] + FRAME_ALIGN - 1) / FRAME_ALIGN * FRAME_ALIGN;
    }
    c->body = 0;
    for (int i = 0; i < c->n; i++)
        c->body += (size_t)c->sizes[i];
    c->got = 0;
    c->blk = aligned_alloc(FRAME_ALIGN, at ? at : FRAME_ALIGN);
    if (!c->blk)
        return sl_fail(err, "link: out of memory for a message of %zu bytes", c->body);
    return 0;
}

/* Where body byte c->got goes, and how many bytes fit there in one piece. */
static uint8_t *body_dest(const link_conn *c, size_t *room)
{
    size_t off = c->got;
    for (int i = 0; i < c->n; i++) {
        if (off < c->sizes[i]) {
            *room = (size_t)c->sizes[i] - off;
            return c->blk + c->at[i] + off;
        }
        off -= (size_t)c->sizes[i];
    }
    *room = 0;
    return NULL;
}

static void body_take(link_conn *c, const uint8_t *src, size_t bytes)
{
    while (bytes > 0) {
        size_t room;
        uint8_t *dst = body_dest(c, &room);
        size_t k = bytes < room ? bytes : room;
        memcpy(dst, src, k);
        src += k;
        bytes -= k;
        c->got += k;
    }
}

/* The rest of a large body, read straight into its frames. */
static ssize_t recv_body(link_conn *c)
{
    struct iovec iov[MAX_FRAMES_TOTAL];
    int k = 0;
    size_t saved = c->got;
    while (c->got < c->body && k < MAX_FRAMES_TOTAL) {
        size_t room;
        iov[k].iov_base = body_dest(c, &room);
        iov[k++].iov_len = room;
        c->got += room;
    }
    c->got = saved;
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)k};
    ssize_t r = recvmsg(c->fd, &mh, MSG_DONTWAIT);
    if (r > 0)
        c->got += (size_t)r;
    if (r > 0 && c->got < c->body)
        c->ready = false; /* short: drained for now */
    return r;
}

/* More bytes into the read-ahead: >0 read, 0 the sender closed, -1 none
 * waiting (errno EAGAIN) or a failure. */
static ssize_t fill_stage(link_conn *c)
{
    if (c->off > 0) {
        memmove(c->stage, c->stage + c->off, c->len - c->off);
        c->len -= c->off;
        c->off = 0;
    }
    size_t room = STAGE_BYTES - c->len;
    ssize_t r;
    do
        r = recv(c->fd, c->stage + c->len, room, MSG_DONTWAIT);
    while (r < 0 && errno == EINTR);
    if (r > 0)
        c->len += (size_t)r;
    /* less than asked: the socket held no more just now (a later arrival
     * shows in the caller's next poll) */
    if (r > 0 && (size_t)r < room)
        c->ready = false;
    return r;
}

enum { STEP_NONE = 0, STEP_MSG = 1, STEP_DROPPED = -1, STEP_BROKEN = -2, STEP_GONE = -3 };

static int finish(pl_link_in *l, link_conn *c, pl_msg *m, sl_err *err)
{
    const void *frames[MAX_FRAMES_TOTAL];
    size_t sizes[MAX_FRAMES_TOTAL];
    for (int i = 0; i < c->n; i++) {
        frames[i] = c->blk + c->at[i];
        sizes[i] = (size_t)c->sizes[i];
    }
    uint8_t *blk = c->blk;
    int n = c->n;
    c->blk = NULL;
    c->n = 0;
    return pl_msg_decode_owned(m, frames, sizes, n, &l->lim, blk_free, blk, err) ? STEP_DROPPED : STEP_MSG;
}

/* Reads connection c as far as the next whole message. */
static int conn_step(pl_link_in *l, link_conn *c, pl_msg *m, sl_err *err)
{
    for (;;) {
        if (c->n == 0) {
            size_t need;
            if (pl_link_parse_prefix(c->stage + c->off, c->len - c->off, &l->lim, &c->n, c->sizes, &need, err))
                return STEP_BROKEN;
            if (c->n > 0) {
                c->off += need;
                if (start_body(c, err))
                    return STEP_BROKEN;
                continue;
            }
        } else {
            size_t avail = c->len - c->off, want = c->body - c->got;
            size_t k = avail < want ? avail : want;
            body_take(c, c->stage + c->off, k);
            c->off += k;
            if (c->got == c->body)
                return finish(l, c, m, err);
            if (c->body - c->got >= STAGE_BYTES / 2) {
                if (l->hinted && !c->ready)
                    return STEP_NONE;
                ssize_t r = recv_body(c);
                if (r > 0)
                    continue;
                if (r == 0)
                    return sl_fail(err, "link: the sender closed its stream in the middle of a message"),
                           STEP_BROKEN;
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    return c->ready = false, STEP_NONE;
                return sl_fail(err, "link: cannot receive: %s", strerror(errno)), STEP_BROKEN;
            }
        }
        if (l->hinted && !c->ready)
            return STEP_NONE; /* no poll saw bytes since a read drained it */
        ssize_t r = fill_stage(c);
        if (r > 0)
            continue;
        if (r == 0) {
            if (c->n > 0 || c->len > c->off)
                return sl_fail(err, "link: the sender closed its stream in the middle of a message"), STEP_BROKEN;
            return STEP_GONE;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return c->ready = false, STEP_NONE;
        if (errno == ECONNRESET)
            return STEP_GONE;
        return sl_fail(err, "link: cannot receive: %s", strerror(errno)), STEP_BROKEN;
    }
}

int pl_link_in_recv(pl_link_in *l, pl_msg *m, sl_err *err)
{
    memset(m, 0, sizeof *m);
    /* a failed accept4 costs some 5 us on a virtual machine: only when a
     * poll saw a sender knocking (or nothing is hinted) */
    if (!l->hinted || l->listen_ready) {
        l->listen_ready = false;
        if (accept_new(l, err))
            return -1;
    }
    for (int tried = 0; tried < l->n_conns;) {
        int i = (l->next + tried) % l->n_conns;
        int rc = conn_step(l, &l->conns[i], m, err);
        if (rc == STEP_NONE) {
            tried++;
            continue;
        }
        if (rc == STEP_GONE || rc == STEP_BROKEN) {
            conn_close(l, i);
            if (rc == STEP_BROKEN)
                return sl_wrap(err, "link: closed a sender's stream");
            continue; /* the connection now at i is one not yet tried */
        }
        l->next = i; /* the same sender again next: its stream may hold more */
        return rc == STEP_MSG ? 1 : -1;
    }
    return 0;
}

bool pl_link_in_spin(pl_link_in *l, int spin_us)
{
    if (spin_us <= 0 || l->n_conns == 0)
        return false;
    if (l->skip > 0) {
        l->skip--;
        return false;
    }
    double end = now_s() + spin_us * 1e-6;
    do {
        for (int i = 0; i < l->n_conns; i++) {
            uint8_t b;
            if (recv(l->conns[i].fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0) {
                l->conns[i].ready = true;
                l->skip_next = 0;
                return true;
            }
        }
        for (int k = 0; k < 32; k++)
            __builtin_ia32_pause();
    } while (now_s() < end);
    /* messages come further apart than the spin: stop paying for it, and
     * look again after 1, 2, 4, ... 64 waits */
    l->skip = l->skip_next;
    l->skip_next = l->skip_next ? (l->skip_next * 2 > 64 ? 64 : l->skip_next * 2) : 1;
    return false;
}

int pl_link_spin_us(void)
{
    const char *e = getenv("SLUICE_LINK_SPIN_US");
    if (!e)
        return 50;
    int v = atoi(e);
    return v < 0 ? 0 : v > 1000 ? 1000 : v;
}

void pl_link_in_close(pl_link_in *l)
{
    if (!l)
        return;
    while (l->n_conns > 0)
        conn_close(l, l->n_conns - 1);
    close(l->lfd);
    sec_ipc_file_remove(&l->file);
    free(l);
}

/* ---- sending ---- */

struct pl_link_out {
    int fd;
    bool reached; /* connected once: a later refusal means the receiver went away */
    char path[256];
};

int pl_link_out_open(pl_link_out **out, const char *addr, sl_err *err)
{
    *out = NULL;
    pl_link_out *o = calloc(1, sizeof *o);
    if (!o)
        return sl_fail(err, "link: out of memory");
    o->fd = -1;
    if (pl_link_path(addr, o->path, sizeof o->path, err)) {
        free(o);
        return -1;
    }
    *out = o;
    return 0;
}

static int try_connect(pl_link_out *o)
{
    struct sockaddr_un sa;
    if (unix_addr(o->path, &sa))
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa)) {
        close(fd);
        return -1;
    }
    struct timeval tv = {.tv_sec = SEND_TIMEOUT_S};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    o->fd = fd;
    o->reached = true;
    return 0;
}

/* Connects, waiting up to wait_ms for a receiver that is not there yet. */
static int connect_within(pl_link_out *o, int wait_ms, sl_err *err)
{
    double end = now_s() + wait_ms * 1e-3;
    for (;;) {
        if (try_connect(o) == 0)
            return 0;
        int e = errno;
        if (now_s() >= end)
            return sl_fail(err, "link: no receiver at %s (%s)%s", o->path, strerror(e),
                           o->reached ? ": its process has gone" : "");
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
}

/* Writes all of iov on the connection; 0, or -1 with errno. */
static int send_all(int fd, struct iovec *iov, int n)
{
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
    while (mh.msg_iovlen > 0) {
        ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        size_t left = (size_t)w;
        while (mh.msg_iovlen > 0 && left >= mh.msg_iov[0].iov_len) {
            left -= mh.msg_iov[0].iov_len;
            mh.msg_iov++;
            mh.msg_iovlen--;
        }
        if (mh.msg_iovlen > 0) {
            mh.msg_iov[0].iov_base = (uint8_t *)mh.msg_iov[0].iov_base + left;
            mh.msg_iov[0].iov_len -= left;
        }
    }
    return 0;
}

/* The message's iovec: prefix, header, payloads. */
static int build_iov(pl_msg *m, uint8_t *prefix, const uint8_t *hdr, size_t hb, struct iovec *iov)
{
    uint32_t magic = PL_LINK_MAGIC, count = (uint32_t)(1 + m->n_frames);
    memcpy(prefix, &magic, 4);
    memcpy(prefix + 4, &count, 4);
    uint64_t s = hb;
    memcpy(prefix + 8, &s, 8);
    iov[1] = (struct iovec){(void *)hdr, hb};
    for (int i = 0; i < m->n_frames; i++) {
        size_t bytes;
        const void *data = pl_msg_frame(m, i, &bytes, NULL);
        s = bytes;
        memcpy(prefix + 16 + 8 * i, &s, 8);
        iov[2 + i] = (struct iovec){(void *)data, bytes};
    }
    iov[0] = (struct iovec){prefix, 8 + 8 * (size_t)count};
    return 2 + m->n_frames;
}

int pl_link_send(pl_link_out *o, pl_msg *m, sl_err *err)
{
    if (pl_msg_seal(m, err))
        return -1;
    int kind = m->hdr->kind;
    unsigned long long batch = (unsigned long long)m->hdr->batch_id;
    size_t hb = pl_msg_header_size(m);
    uint8_t small[1024], *hdr = hb <= sizeof small ? small : malloc(hb);
    if (!hdr)
        return sl_fail(err, "link: out of memory");
    pl_msg_pack_header(m, hdr);
    uint8_t prefix[PREFIX_MAX];
    struct iovec iov[2 + PL_MAX_FRAMES], work[2 + PL_MAX_FRAMES];
    int n = build_iov(m, prefix, hdr, hb, iov);
    pl_msg_mark_sent(m); /* spent whatever happens; pl_msg_close frees its payloads */
    int rc = -1;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (o->fd < 0 && connect_within(o, o->reached ? 0 : CONNECT_WAIT_MS, err))
            break;
        memcpy(work, iov, sizeof iov[0] * (size_t)n);
        if (send_all(o->fd, work, n) == 0) {
            rc = 0;
            break;
        }
        int e = errno;
        close(o->fd); /* a stream cut mid-message is of no use to anyone */
        o->fd = -1;
        sl_fail(err, "link: cannot send to %s: %s", o->path,
                e == EAGAIN || e == EWOULDBLOCK ? "the receiver read nothing for a minute" : strerror(e));
        if (e != EPIPE && e != ECONNRESET && e != ENOTCONN)
            break;
    }
    if (hdr != small)
        free(hdr);
    if (rc)
        return sl_wrap(err, "%s message (batch %llu) dropped", pl_msg_kind_name(kind), batch);
    return 0;
}

void pl_link_out_close(pl_link_out *o)
{
    if (!o)
        return;
    if (o->fd >= 0)
        close(o->fd);
    free(o);
}
