/* A stranger at a worker's door, for the security tests.
 *
 *   sec_probe hello ADDR [--key FILE --server KEY] [--push]
 *       connects as a coordinator would (DEALER; --push: as an upstream
 *       stage would, PUSH) and sends a heartbeat: CURVE with the secret key
 *       FILE expecting the server's public KEY, or plain text without --key.
 *       Exit 0 when the worker answers within 3 s, 3 when it does not
 *       (--push: always 3, as nothing answers a PUSH; the worker's log tells).
 *   sec_probe plain ADDR
 *       a plain-text (NULL mechanism) ZMTP greeting by hand, kept open: exit
 *       0 when the server hangs up on it within 3 s.
 *   sec_probe replay ADDR --key FILE --server KEY [--capture OUT]
 *       records the bytes of one accepted session (through a relay on
 *       127.0.0.1 that it runs itself), then opens a raw TCP connection to
 *       ADDR and sends the recorded bytes again. Exit 0 when the first
 *       session was answered and the replay was not: the server closed the
 *       connection after sending less than it sent in the real session.
 *       Exit 4 when the replay got the same treatment as the real session.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "pipeline/security.h"
#include "pipeline/wire.h"

#define CAPTURE_MAX (1 << 20)

typedef struct bytes {
    unsigned char *data;
    size_t len;
} bytes;

static void append(bytes *b, const void *p, size_t n)
{
    if (b->len + n > CAPTURE_MAX)
        n = CAPTURE_MAX - b->len;
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static int parse_tcp(const char *addr, struct sockaddr_in *sa)
{
    memset(sa, 0, sizeof *sa);
    if (strncmp(addr, "tcp://", 6) != 0)
        return -1;
    char host[64];
    const char *colon = strrchr(addr + 6, ':');
    size_t len = colon ? (size_t)(colon - addr - 6) : 0;
    if (!colon || len >= sizeof host)
        return -1;
    memcpy(host, addr + 6, len);
    host[len] = '\0';
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)atoi(colon + 1));
    return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

static int tcp_connect(const struct sockaddr_in *sa)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (const struct sockaddr *)sa, sizeof *sa) != 0) {
        perror("sec_probe: connect");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* ---- the client side: a heartbeat, as a coordinator sends it ---- */

static int hello(const char *addr, const char *key_file, const char *server_key, bool push)
{
    void *zctx = zmq_ctx_new();
    void *s = zmq_socket(zctx, push ? ZMQ_PUSH : ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    sl_err err = {{0}};
    sec_keys k = {0};
    if (key_file && (sec_keys_load(&k, key_file, &err) || sec_client(s, &k, server_key, addr, &err))) {
        fprintf(stderr, "sec_probe: %s\n", err.msg);
        return 1;
    }
    zmq_connect(s, addr);
    pl_msg m;
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_HEARTBEAT, 0, 0);
    int rc = pl_msg_send(&m, s, 0, &err);
    pl_msg_close(&m);
    if (rc)
        fprintf(stderr, "sec_probe: send: %s\n", err.msg);
    zmq_pollitem_t item = {s, 0, ZMQ_POLLIN, 0};
    int answered = !push && zmq_poll(&item, 1, 3000) == 1;
    if (push)
        usleep(1000000); /* nothing answers a PUSH: give the handshake its time */
    printf("hello %s: %s\n", addr, answered ? "answered" : "no answer");
    zmq_close(s);
    zmq_ctx_term(zctx);
    return answered ? 0 : 3;
}

/* ---- the relay that records a session ---- */

typedef struct relay {
    int listen_fd;
    struct sockaddr_in target;
    bytes to_server, to_client;
} relay;

static void *relay_main(void *arg)
{
    relay *r = arg;
    int c = accept(r->listen_fd, NULL, NULL);
    int s = c >= 0 ? tcp_connect(&r->target) : -1;
    struct pollfd p[2] = {{c, POLLIN, 0}, {s, POLLIN, 0}};
    unsigned char buf[65536];
    while (c >= 0 && s >= 0 && poll(p, 2, 5000) > 0) {
        if (p[0].revents) {
            ssize_t n = read(c, buf, sizeof buf);
            if (n <= 0 || write(s, buf, (size_t)n) != n)
                break;
            append(&r->to_server, buf, (size_t)n);
        }
        if (p[1].revents) {
            ssize_t n = read(s, buf, sizeof buf);
            if (n <= 0 || write(c, buf, (size_t)n) != n)
                break;
            append(&r->to_client, buf, (size_t)n);
        }
    }
    if (c >= 0)
        close(c);
    if (s >= 0)
        close(s);
    return NULL;
}

/* ZMTP 3: a 64-byte greeting, then frames of a flags byte (bit 1: 8-byte
 * size) and a big-endian size. Returns the length of the frame at off, or
 * 0 when the buffer does not hold all of it. */
static size_t frame_len(const unsigned char *b, size_t len, size_t off)
{
    if (off + 2 > len)
        return 0;
    size_t head = (b[off] & 0x02) ? 9 : 2, size = 0;
    if (off + head > len)
        return 0;
    if (head == 2)
        size = b[off + 1];
    else
        for (int i = 1; i < 9; i++)
            size = size << 8 | b[off + (size_t)i];
    if (size > len || off + head + size > len)
        return 0;
    return head + size;
}

static void send_all(int fd, const unsigned char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

/* Reads from fd until `want` bytes have come in total (or the server closes
 * or 3 s pass); returns false once it has closed. */
static bool read_until(int fd, bytes *in, size_t want, bool *closed)
{
    struct pollfd p = {fd, POLLIN, 0};
    while (in->len < want && !*closed) {
        if (poll(&p, 1, 3000) <= 0)
            return false;
        unsigned char buf[65536];
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0)
            *closed = true;
        else
            append(in, buf, (size_t)n);
    }
    return !*closed;
}

/* Sends the recorded bytes on a fresh connection in the session's own
 * rhythm (greeting, then HELLO once the server has greeted, the rest once
 * its WELCOME is in), so the server judges the replayed INITIATE on its
 * cryptographic merits rather than on timing; counts what comes back until
 * the server closes (or 3 s pass). */
static int replay_raw(const struct sockaddr_in *target, const bytes *sent, size_t *got, bool *closed)
{
    int fd = tcp_connect(target);
    if (fd < 0)
        return -1;
    bytes in = {malloc(CAPTURE_MAX), 0};
    *closed = false;
    size_t hello_len = frame_len(sent->data, sent->len, 64);
    if (sent->len < 64 || !hello_len) {
        fprintf(stderr, "sec_probe: the capture holds no ZMTP greeting and HELLO\n");
        return -1;
    }
    send_all(fd, sent->data, 64);
    if (read_until(fd, &in, 64, closed)) {
        send_all(fd, sent->data + 64, hello_len);
        size_t welcome = 0;
        while (!*closed && !(welcome = frame_len(in.data, in.len, 64)))
            if (!read_until(fd, &in, in.len + 1, closed))
                break;
        if (welcome)
            send_all(fd, sent->data + 64 + hello_len, sent->len - 64 - hello_len);
    }
    struct pollfd p = {fd, POLLIN, 0};
    while (!*closed && poll(&p, 1, 3000) > 0) {
        unsigned char buf[65536];
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0)
            *closed = true;
        else
            append(&in, buf, (size_t)n);
    }
    *got = in.len;
    free(in.data);
    close(fd);
    return 0;
}

static int replay(const char *addr, const char *key_file, const char *server_key, const char *capture)
{
    relay r = {0};
    if (parse_tcp(addr, &r.target)) {
        fprintf(stderr, "sec_probe: replay needs tcp://IPV4:PORT, not %s\n", addr);
        return 1;
    }
    r.to_server.data = malloc(CAPTURE_MAX);
    r.to_client.data = malloc(CAPTURE_MAX);
    struct sockaddr_in local = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof local;
    r.listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    if (bind(r.listen_fd, (struct sockaddr *)&local, sizeof local) || listen(r.listen_fd, 1) ||
        getsockname(r.listen_fd, (struct sockaddr *)&local, &len)) {
        perror("sec_probe: relay");
        return 1;
    }
    pthread_t t;
    pthread_create(&t, NULL, relay_main, &r);
    char via[64];
    snprintf(via, sizeof via, "tcp://127.0.0.1:%d", ntohs(local.sin_port));
    int first = hello(via, key_file, server_key, false);
    pthread_join(t, NULL);
    close(r.listen_fd);
    if (capture) {
        FILE *f = fopen(capture, "wb");
        if (f) {
            fwrite(r.to_server.data, 1, r.to_server.len, f);
            fclose(f);
        }
    }
    size_t got = 0;
    bool closed = false;
    if (replay_raw(&r.target, &r.to_server, &got, &closed))
        return 1;
    printf("session: %zu bytes to the server, %zu back; replay: %zu bytes back, %s\n", r.to_server.len,
           r.to_client.len, got, closed ? "then closed by the server" : "connection left open");
    int refused = first == 0 && closed && got < r.to_client.len;
    free(r.to_server.data);
    free(r.to_client.data);
    if (first != 0)
        return 1;
    return refused ? 0 : 4;
}

/* A plain-text ZMTP 3.0 client, by hand: it sends a NULL-mechanism greeting
 * and waits, so the server (not a hasty client) is the one to notice the
 * mismatch. Exit 0 when the server closes the connection within 3 s. */
static int plain(const char *addr)
{
    struct sockaddr_in sa;
    if (parse_tcp(addr, &sa)) {
        fprintf(stderr, "sec_probe: plain needs tcp://IPV4:PORT, not %s\n", addr);
        return 1;
    }
    int fd = tcp_connect(&sa);
    if (fd < 0)
        return 1;
    unsigned char greeting[64] = {0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 3, 0, 'N', 'U', 'L', 'L'};
    send_all(fd, greeting, sizeof greeting);
    bytes in = {malloc(CAPTURE_MAX), 0};
    bool closed = false;
    read_until(fd, &in, CAPTURE_MAX, &closed);
    printf("plain %s: %zu bytes back, %s\n", addr, in.len, closed ? "then closed by the server" : "still open");
    free(in.data);
    close(fd);
    return closed ? 0 : 3;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: sec_probe hello|plain|replay tcp://IP:PORT [--key FILE --server KEY] [--push] "
                "[--capture OUT]\n");
        return 2;
    }
    const char *key = NULL, *server = NULL, *capture = NULL;
    bool push = false;
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--key") == 0 && i + 1 < argc)
            key = argv[++i];
        else if (strcmp(argv[i], "--server") == 0 && i + 1 < argc)
            server = argv[++i];
        else if (strcmp(argv[i], "--capture") == 0 && i + 1 < argc)
            capture = argv[++i];
        else if (strcmp(argv[i], "--push") == 0)
            push = true;
        else {
            fprintf(stderr, "sec_probe: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    char server_key[SEC_KEY_TEXT] = "";
    sl_err err = {{0}};
    if (server && sec_load_public_any(server, server_key, &err)) {
        fprintf(stderr, "sec_probe: %s\n", err.msg);
        return 1;
    }
    if (strcmp(argv[1], "plain") == 0)
        return plain(argv[2]);
    if (strcmp(argv[1], "hello") == 0)
        return hello(argv[2], key, server ? server_key : NULL, push);
    if (strcmp(argv[1], "replay") == 0 && key && server)
        return replay(argv[2], key, server_key, capture);
    fprintf(stderr, "sec_probe: unknown mode %s (replay needs --key and --server)\n", argv[1]);
    return 2;
}
