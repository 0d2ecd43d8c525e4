#include "pipeline/security.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

static int write_new_file(const char *path, const char *text, mode_t mode, sl_err *err)
{
    /* O_EXCL: a keygen over an existing pair would strand every node that trusts it. */
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode);
    if (fd < 0)
        return sl_fail(err, "%s: cannot create: %s", path, strerror(errno));
    size_t len = strlen(text);
    ssize_t n = write(fd, text, len);
    int rc = (n == (ssize_t)len) ? 0 : -1;
    if (fchmod(fd, mode) != 0) /* umask may have narrowed or the caller widened nothing */
        rc = -1;
    if (close(fd) != 0)
        rc = -1;
    if (rc != 0)
        return sl_fail(err, "%s: write failed: %s", path, strerror(errno));
    return 0;
}

/* Creates the directories of path that are missing, each 0700: a key
 * directory is for this user alone. */
static int make_parent_dirs(const char *path, sl_err *err)
{
    char dir[4096];
    if (snprintf(dir, sizeof dir, "%s", path) >= (int)sizeof dir)
        return sl_fail(err, "%s: path too long", path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return 0;
    *slash = '\0';
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(dir, 0700) != 0 && errno != EEXIST)
            return sl_fail(err, "%s: cannot create directory %s: %s", path, dir, strerror(errno));
        *p = '/';
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return sl_fail(err, "%s: cannot create directory %s: %s", path, dir, strerror(errno));
    return 0;
}

int sec_keygen(const char *base, sl_err *err)
{
    char pub[SEC_KEY_TEXT], sec[SEC_KEY_TEXT];
    if (zmq_curve_keypair(pub, sec) != 0)
        return sl_fail(err, "cannot generate a CURVE key pair: %s", zmq_strerror(errno));
    char path_sec[4096], path_pub[4096];
    if (snprintf(path_sec, sizeof path_sec, "%s.key", base) >= (int)sizeof path_sec ||
        snprintf(path_pub, sizeof path_pub, "%s.pub", base) >= (int)sizeof path_pub)
        return sl_fail(err, "%s: key file name too long", base);
    if (make_parent_dirs(path_sec, err))
        return -1;
    char text_sec[4096 + 256], text_pub[256];
    snprintf(text_sec, sizeof text_sec, "%s (keep it on this host; its public half is %s)\n%s\n", SEC_HEADER_SECRET,
             path_pub, sec);
    snprintf(text_pub, sizeof text_pub, "%s\n%s\n", SEC_HEADER_PUBLIC, pub);
    if (write_new_file(path_sec, text_sec, 0600, err) != 0)
        return -1;
    if (write_new_file(path_pub, text_pub, 0644, err) != 0) {
        unlink(path_sec);
        return -1;
    }
    return 0;
}

/* A truncated or edited key must fail here, not later in a handshake; the
 * decoder also rejects 5-character groups past 2^32, which the alphabet alone
 * would let through. */
static int is_z85_key(const char *s)
{
    uint8_t raw[32];
    return strlen(s) == SEC_KEY_TEXT - 1 && zmq_z85_decode(raw, s) != NULL;
}

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* The kind a file says it is (its first line), or, for a file from before
 * the first line existed, the kind its name says (NAME.key or NAME.pub). */
static int key_kind(const char *path, const char *first_line)
{
    if (strncmp(first_line, SEC_HEADER_SECRET, strlen(SEC_HEADER_SECRET)) == 0)
        return SEC_KIND_SECRET;
    if (strncmp(first_line, SEC_HEADER_PUBLIC, strlen(SEC_HEADER_PUBLIC)) == 0)
        return SEC_KIND_PUBLIC;
    if (has_suffix(path, ".key"))
        return SEC_KIND_SECRET;
    if (has_suffix(path, ".pub"))
        return SEC_KIND_PUBLIC;
    return SEC_KIND_UNKNOWN;
}

static int wrong_kind(const char *path, int want, sl_err *err)
{
    if (want == SEC_KIND_SECRET)
        return sl_fail(err, "%s is a public key (NAME.pub); this wants the secret half, NAME.key (a node's own "
                       "key: `key:` in a config, a worker's --key, status --key)", path);
    return sl_fail(err, "%s is a secret key (NAME.key), which stays on its own host; this wants the public "
                   "half, NAME.pub (`public_key:` in a config, a worker's --allow, status --server-key)", path);
}

/* Today's files: a first line naming the kind, then the key; files from
 * before have the key alone. */
static int read_key(int fd, const char *path, int want, char out[SEC_KEY_TEXT], sl_err *err)
{
    char buf[512];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    if (n < 0)
        return sl_fail(err, "%s: read failed: %s", path, strerror(errno));
    buf[n] = '\0';
    if ((size_t)n != strlen(buf))
        return sl_fail(err, "%s: not a CURVE key file (binary data)", path);
    /* "# ": Z85 has '#' but no space, so a bare key starting with '#' is no header */
    bool header = buf[0] == '#' && buf[1] == ' ';
    char *key = buf;
    if (header) {
        char *nl = strchr(buf, '\n');
        if (!nl)
            return sl_fail(err, "%s: not a CURVE key (want a first line naming the kind, then 40 Z85 "
                           "characters)", path);
        *nl = '\0';
        key = nl + 1;
    }
    int kind = key_kind(path, header ? buf : "");
    if (header && kind == SEC_KIND_UNKNOWN)
        return sl_fail(err, "%s: not a sluice CURVE key file (its first line is '%.60s')", path, buf);
    if (kind != SEC_KIND_UNKNOWN && kind != want)
        return wrong_kind(path, want, err);
    size_t len = strlen(key);
    if (len > 0 && key[len - 1] == '\n')
        key[--len] = '\0';
    if (!is_z85_key(key))
        return sl_fail(err, "%s: not a CURVE key (want 40 Z85 characters on one line)", path);
    memcpy(out, key, SEC_KEY_TEXT);
    return 0;
}

static int load_key(const char *path, int secret, char out[SEC_KEY_TEXT], sl_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return sl_fail(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    int rc = 0;
    /* the kind first: a .pub given as a secret key must not be advised to be chmod'ed */
    if (fstat(fd, &st) != 0)
        rc = sl_fail(err, "%s: cannot stat: %s", path, strerror(errno));
    else if ((rc = read_key(fd, path, secret ? SEC_KIND_SECRET : SEC_KIND_PUBLIC, out, err)) != 0)
        ;
    else if (secret && (st.st_mode & 077))
        rc = sl_fail(err, "%s: secret key file has mode %04o; group and others must have no "
                     "access (chmod 600 %s)", path, (unsigned)(st.st_mode & 07777), path);
    close(fd);
    return rc;
}

int sec_load_secret(const char *path, char out[SEC_KEY_TEXT], sl_err *err)
{
    return load_key(path, 1, out, err);
}

int sec_load_public(const char *path, char out[SEC_KEY_TEXT], sl_err *err)
{
    return load_key(path, 0, out, err);
}

bool sec_is_key_text(const char *text)
{
    return is_z85_key(text);
}

int sec_load_public_any(const char *text_or_path, char out[SEC_KEY_TEXT], sl_err *err)
{
    if (is_z85_key(text_or_path)) {
        memcpy(out, text_or_path, SEC_KEY_TEXT);
        return 0;
    }
    return sec_load_public(text_or_path, out, err);
}

int sec_keys_load(sec_keys *k, const char *secret_path, sl_err *err)
{
    memset(k, 0, sizeof *k);
    if (sec_load_secret(secret_path, k->secret, err))
        return -1;
    if (zmq_curve_public(k->public_, k->secret) != 0)
        return sl_fail(err, "%s: cannot derive the public key: %s", secret_path, zmq_strerror(errno));
    k->on = true;
    return 0;
}

/* ---- sockets ---- */

static bool is_tcp(const char *addr)
{
    return strncmp(addr, "tcp://", 6) == 0;
}

/* ZMQ_ZAP_ENFORCE_DOMAIN is a draft option in libzmq 4.3: set when the
 * library has it, harmless (EINVAL) when not. */
#define SEC_ZAP_ENFORCE_DOMAIN 93

int sec_server(void *sock, const sec_keys *k, const sec_zap *zap, const char *domain, const char *addr,
               sl_err *err)
{
    if (!k || !k->on || !is_tcp(addr))
        return 0;
    /* a CURVE server in a context without a ZAP handler admits every key */
    if (!zap)
        return sl_fail(err, "%s: a CURVE server needs the ZAP handler running", addr);
    int one = 1;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one) ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, k->secret, SEC_KEY_TEXT) ||
        zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, domain, strlen(domain)))
        return sl_fail(err, "%s: cannot make the socket a CURVE server: %s", addr, zmq_strerror(zmq_errno()));
    zmq_setsockopt(sock, SEC_ZAP_ENFORCE_DOMAIN, &one, sizeof one);
    return 0;
}

int sec_client(void *sock, const sec_keys *k, const char *server_public, const char *addr, sl_err *err)
{
    if (!k || !k->on || !is_tcp(addr))
        return 0;
    if (!server_public || !is_z85_key(server_public))
        return sl_fail(err, "%s: no CURVE public key for the server at this address", addr);
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, server_public, SEC_KEY_TEXT) ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, k->public_, SEC_KEY_TEXT) ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, k->secret, SEC_KEY_TEXT))
        return sl_fail(err, "%s: cannot make the socket a CURVE client: %s", addr, zmq_strerror(zmq_errno()));
    return 0;
}

/* ---- ipc:// directories ---- */

int sec_ipc_dir(const char *addr, sl_err *err)
{
    if (strncmp(addr, "ipc://", 6) != 0)
        return 0;
    const char *path = addr + 6;
    if (path[0] == '@')
        return sl_fail(err, "%s: abstract ipc:// names have no directory to keep other users out; use a "
                       "path in a directory only you can enter", addr);
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else if ((size_t)(slash - path) >= sizeof dir)
        return sl_fail(err, "%s: path too long", addr);
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return sl_fail(err, "%s: cannot create its directory %s: %s", addr, dir, strerror(errno));
    struct stat st;
    if (lstat(dir, &st) != 0)
        return sl_fail(err, "%s: cannot inspect its directory %s: %s", addr, dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return sl_fail(err, "%s: %s is not a directory (a symbolic link?): ipc:// sockets must live in a real "
                       "directory only you can enter", addr, dir);
    if (st.st_uid != geteuid())
        return sl_fail(err, "%s: directory %s belongs to user %u, not to this user (%u): ipc:// sockets must "
                       "live in a directory only you can enter", addr, dir, (unsigned)st.st_uid,
                       (unsigned)geteuid());
    if (st.st_mode & 077)
        return sl_fail(err, "%s: directory %s has mode %04o, so other users can reach its sockets; ipc:// "
                       "sockets must live in a directory only you can enter (chmod 700 %s, or name a path "
                       "in a new directory, which sluice creates with mode 0700)", addr, dir,
                       (unsigned)(st.st_mode & 07777), dir);
    return 0;
}

void sec_ipc_file_note(sec_ipc_file *f, const char *addr)
{
    memset(f, 0, sizeof *f);
    struct stat st;
    if (strncmp(addr, "ipc://", 6) != 0 || addr[6] == '@' || strlen(addr + 6) >= sizeof f->path ||
        lstat(addr + 6, &st) != 0 || !S_ISSOCK(st.st_mode))
        return;
    snprintf(f->path, sizeof f->path, "%s", addr + 6);
    f->dev = (uint64_t)st.st_dev;
    f->ino = (uint64_t)st.st_ino;
    f->noted = true;
}

void sec_ipc_file_remove(sec_ipc_file *f)
{
    struct stat st;
    if (f->noted && lstat(f->path, &st) == 0 && S_ISSOCK(st.st_mode) && (uint64_t)st.st_dev == f->dev &&
        (uint64_t)st.st_ino == f->ino)
        unlink(f->path);
    f->noted = false;
}

static int probe_ipc(const char *addr, sl_err *err)
{
    const char *path = addr + 6;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (path[0] == '@' || strlen(path) >= sizeof sa.sun_path)
        return 0;
    struct stat st;
    if (lstat(path, &st) != 0)
        return sl_fail(err, "%s: no socket there (%s): is a sluice worker listening on it?", addr, strerror(errno));
    if (!S_ISSOCK(st.st_mode))
        return sl_fail(err, "%s: %s is not a socket", addr, path);
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    int e = errno;
    close(fd);
    if (rc != 0 && e == ECONNREFUSED)
        return sl_fail(err, "%s: nobody serves this socket (a file left by a process that ended?)", addr);
    return 0;
}

int sec_probe_served(const char *addr, sl_err *err)
{
    /* not tcp://: a probe there would reach a CURVE server as a failed
     * handshake, logged and counted as a refusal */
    if (strncmp(addr, "ipc://", 6) == 0)
        return probe_ipc(addr, err);
    return 0;
}

/* ---- the ZAP handler ---- */

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define ZAP_MAX_FRAMES 8
#define ZAP_DOMAIN_MAX 32
#define WATCH_LABEL_MAX 160
#define WATCH_MAX 256           /* sockets watched at once (each stage input is one) */

typedef struct allowed {
    char domain[ZAP_DOMAIN_MAX];
    uint8_t key[32];
    int tag;
} allowed;

#define WATCH_PEERS 32          /* connections of one socket whose peers we remember */
#define PEER_TEXT 64

/* A monitor event names the socket's own endpoint, not the peer's: the peer
 * comes from the accepted connection's fd (ACCEPTED), and a failed
 * handshake is logged when its DISCONNECTED names that fd (libzmq emits
 * the two back to back from the connection's I/O thread). */
typedef struct peer_fd {
    int fd;                 /* -1: free */
    char addr[PEER_TEXT];
} peer_fd;

typedef struct watch {
    void *pair;             /* receives the watched socket's monitor events */
    char label[WATCH_LABEL_MAX];
    bool client;
    /* the handler thread's alone: */
    peer_fd peers[WATCH_PEERS];
    int next_peer;
    char pending[192];      /* why the last handshake failed, until its DISCONNECTED */
    char pending_endpoint[128];
} watch;

struct sec_zap {
    void *zctx;
    void *rep;              /* the handler's socket; its thread's alone once started */
    pthread_t thread;
    atomic_bool quit;
    atomic_uint_fast64_t refused;
    pthread_mutex_t lock;   /* guards everything below */
    allowed *keys;
    int n_keys, cap_keys;
    watch **watches;        /* new ones are picked up by the thread on its next round;
                               only the handler thread frees them */
    int n_watches, cap_watches;
    unsigned next_watch;
    char who[128];
    /* the handler thread's alone: a peer retrying every 100 ms is logged once
     * in a while, with a count, not every time */
    char last_log[320];
    double last_log_s;
    unsigned repeats;
};

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#define LOG_REPEAT_S 10.0

__attribute__((format(printf, 2, 3)))
static void refusal(sec_zap *z, const char *fmt, ...)
{
    atomic_fetch_add(&z->refused, 1);
    char text[sizeof z->last_log];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    double t = mono_s();
    if (strcmp(text, z->last_log) == 0 && t - z->last_log_s < LOG_REPEAT_S) {
        z->repeats++;
        return;
    }
    if (z->repeats)
        fprintf(stderr, "%s: (the refusal before was repeated %u more times)\n", z->who, z->repeats);
    fprintf(stderr, "%s: %s\n", z->who, text);
    snprintf(z->last_log, sizeof z->last_log, "%s", text);
    z->last_log_s = t;
    z->repeats = 0;
}

static bool key_allowed(sec_zap *z, const char *domain, const uint8_t key[32])
{
    bool ok = false;
    pthread_mutex_lock(&z->lock);
    for (int i = 0; i < z->n_keys && !ok; i++)
        ok = strcmp(z->keys[i].domain, domain) == 0 && memcmp(z->keys[i].key, key, 32) == 0;
    pthread_mutex_unlock(&z->lock);
    return ok;
}

static void frame_text(zmq_msg_t *f, char *out, size_t size)
{
    size_t n = zmq_msg_size(f) < size - 1 ? zmq_msg_size(f) : size - 1;
    const unsigned char *s = zmq_msg_data(f);
    for (size_t i = 0; i < n; i++)
        out[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? (char)s[i] : '?';
    out[n] = '\0';
}

static void zap_reply(void *rep, zmq_msg_t *request_id, const char *code, const char *text)
{
    zmq_send(rep, "1.0", 3, ZMQ_SNDMORE);
    zmq_send(rep, zmq_msg_data(request_id), zmq_msg_size(request_id), ZMQ_SNDMORE);
    zmq_send(rep, code, strlen(code), ZMQ_SNDMORE);
    zmq_send(rep, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(rep, "", 0, ZMQ_SNDMORE); /* user id */
    zmq_send(rep, "", 0, 0);           /* metadata */
}

/* Request frames: version, request id, domain, address, routing id,
 * mechanism, credentials (CURVE: the client's 32-byte public key). */
static void zap_answer(sec_zap *z)
{
    zmq_msg_t f[ZAP_MAX_FRAMES];
    int n = 0;
    bool more = true;
    while (more) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, z->rep, 0) < 0) {
            zmq_msg_close(&part);
            break;
        }
        more = zmq_msg_more(&part);
        if (n < ZAP_MAX_FRAMES)
            f[n++] = part;
        else
            zmq_msg_close(&part);
    }
    if (n < 6) {
        /* not a ZAP request: a REP socket must still answer to go on */
        zmq_send(z->rep, "", 0, 0);
    } else {
        char version[8], domain[ZAP_DOMAIN_MAX], address[64], mech[16];
        frame_text(&f[0], version, sizeof version);
        frame_text(&f[2], domain, sizeof domain);
        frame_text(&f[3], address, sizeof address);
        frame_text(&f[5], mech, sizeof mech);
        bool curve = strcmp(mech, "CURVE") == 0 && n >= 7 && zmq_msg_size(&f[6]) == 32;
        char key_text[SEC_KEY_TEXT] = "(none)";
        if (curve)
            zmq_z85_encode(key_text, zmq_msg_data(&f[6]), 32);
        if (strcmp(version, "1.0") == 0 && curve && key_allowed(z, domain, zmq_msg_data(&f[6]))) {
            zap_reply(z->rep, &f[1], "200", "OK");
        } else {
            refusal(z, "refused a %s peer at %s on its %s sockets: public key %s is not listed", mech,
                    address, domain, key_text);
            zap_reply(z->rep, &f[1], "400", "public key not listed");
        }
    }
    for (int i = 0; i < n; i++)
        zmq_msg_close(&f[i]);
}

static const char *handshake_why(uint16_t event, uint32_t value, char *buf, size_t size)
{
    if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
        return "the server refused this process's public key (is it in the server's --allow list?)";
    if (event != ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) {
        snprintf(buf, size, "the peer hung up during the handshake (%s): a plain-text peer, or one that "
                 "expects another key here?", value ? strerror((int)value) : "no detail");
        return buf;
    }
    if (value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
        return "it does not speak CURVE (a plain-text peer?)";
    if (value == ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC)
        return "its handshake failed authentication (replayed, forged or for another key)";
    /* a replayed session breaks the CURVE handshake's sequence: the server's
     * WELCOME and cookie are new, so the old INITIATE cannot follow */
    snprintf(buf, size, "its CURVE handshake broke off (protocol error 0x%08x: replayed or corrupt bytes?)",
             (unsigned)value);
    return buf;
}

static void peer_remember(watch *w, int fd)
{
    peer_fd *slot = NULL;
    for (int i = 0; i < WATCH_PEERS && !slot; i++)
        if (w->peers[i].fd == fd)
            slot = &w->peers[i];
    if (!slot) {
        slot = &w->peers[w->next_peer];
        w->next_peer = (w->next_peer + 1) % WATCH_PEERS;
    }
    slot->fd = fd;
    slot->addr[0] = '\0';
    /* the fd may already be closed (a quick refusal): then the address stays
     * unknown (or, if the fd number was taken again that fast, is the next
     * connection's: best effort, for the log only) */
    struct sockaddr_storage sa;
    socklen_t len = sizeof sa;
    char host[INET6_ADDRSTRLEN] = "";
    if (getpeername(fd, (struct sockaddr *)&sa, &len) != 0)
        return;
    /* the host alone: a peer that retries comes from a new port each time,
     * and its refusals should read the same (and be counted, not repeated) */
    if (sa.ss_family == AF_INET &&
        inet_ntop(AF_INET, &((const struct sockaddr_in *)&sa)->sin_addr, host, sizeof host))
        snprintf(slot->addr, sizeof slot->addr, "%s", host);
    else if (sa.ss_family == AF_INET6 &&
             inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&sa)->sin6_addr, host, sizeof host))
        snprintf(slot->addr, sizeof slot->addr, "%s", host);
}

/* Takes the peer of fd out of the table (its address, or "" when unknown). */
static void peer_forget(watch *w, int fd, char out[PEER_TEXT])
{
    out[0] = '\0';
    for (int i = 0; i < WATCH_PEERS; i++)
        if (w->peers[i].fd == fd) {
            snprintf(out, PEER_TEXT, "%s", w->peers[i].addr);
            w->peers[i].fd = -1;
        }
}

static void flush_pending(sec_zap *z, watch *w, const char *peer)
{
    if (!w->pending[0])
        return;
    refusal(z, "refused a connection%s%s to its %s (%s): %s", peer[0] ? " from " : "", peer, w->label,
            w->pending_endpoint, w->pending);
    w->pending[0] = '\0';
}

static void server_event(sec_zap *z, watch *w, uint16_t event, uint32_t value, const char *endpoint)
{
    char peer[PEER_TEXT];
    if (event == ZMQ_EVENT_ACCEPTED) {
        peer_remember(w, (int)value);
    } else if (event == ZMQ_EVENT_DISCONNECTED) {
        peer_forget(w, (int)value, peer);
        flush_pending(z, w, peer);
    } else {
        flush_pending(z, w, ""); /* its DISCONNECTED never came */
        char why[128];
        snprintf(w->pending, sizeof w->pending, "%s", handshake_why(event, value, why, sizeof why));
        snprintf(w->pending_endpoint, sizeof w->pending_endpoint, "%s", endpoint);
    }
}

/* Returns false once the watched socket has closed. */
static bool watch_event(sec_zap *z, watch *w)
{
    zmq_msg_t head, where;
    zmq_msg_init(&head);
    zmq_msg_init(&where);
    bool alive = true;
    if (zmq_msg_recv(&head, w->pair, 0) >= 0 && zmq_msg_more(&head) && zmq_msg_recv(&where, w->pair, 0) >= 0 &&
        zmq_msg_size(&head) == 6) {
        uint16_t event;
        uint32_t value;
        memcpy(&event, zmq_msg_data(&head), 2);
        memcpy(&value, (char *)zmq_msg_data(&head) + 2, 4);
        char endpoint[128], why[128];
        frame_text(&where, endpoint, sizeof endpoint);
        if (event == ZMQ_EVENT_MONITOR_STOPPED) {
            flush_pending(z, w, "");
            alive = false;
        } else if (!w->client) {
            server_event(z, w, event, value, endpoint);
        } else {
            refusal(z, "could not connect to %s (%s): %s", w->label, endpoint,
                    event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL && value == ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC
                        ? "the server does not hold the secret half of the public key this process has for it"
                        : handshake_why(event, value, why, sizeof why));
        }
    }
    zmq_msg_close(&head);
    zmq_msg_close(&where);
    return alive;
}

static void drop_watch(sec_zap *z, watch *w)
{
    pthread_mutex_lock(&z->lock);
    for (int i = 0; i < z->n_watches; i++)
        if (z->watches[i] == w) {
            z->watches[i] = z->watches[--z->n_watches];
            break;
        }
    pthread_mutex_unlock(&z->lock);
    zmq_close(w->pair);
    free(w);
}

static void *zap_main(void *arg)
{
    sec_zap *z = arg;
    zmq_pollitem_t items[1 + WATCH_MAX];
    watch *ws[WATCH_MAX];
    while (!atomic_load(&z->quit)) {
        int n = 0;
        items[n++] = (zmq_pollitem_t){z->rep, 0, ZMQ_POLLIN, 0};
        pthread_mutex_lock(&z->lock);
        for (int i = 0; i < z->n_watches && i < WATCH_MAX; i++) {
            ws[i] = z->watches[i];
            items[n++] = (zmq_pollitem_t){ws[i]->pair, 0, ZMQ_POLLIN, 0};
        }
        pthread_mutex_unlock(&z->lock);
        if (zmq_poll(items, n, 100) <= 0)
            continue;
        if (items[0].revents & ZMQ_POLLIN)
            zap_answer(z);
        for (int k = 1; k < n; k++) {
            if (!(items[k].revents & ZMQ_POLLIN))
                continue;
            /* ws[k - 1] is still there: only this thread removes watches */
            if (!watch_event(z, ws[k - 1]))
                drop_watch(z, ws[k - 1]);
        }
    }
    return NULL;
}

int sec_zap_start(sec_zap **out, void *zctx, const char *who, sl_err *err)
{
    *out = NULL;
    sec_zap *z = calloc(1, sizeof *z);
    if (!z)
        return sl_fail(err, "out of memory");
    z->zctx = zctx;
    snprintf(z->who, sizeof z->who, "%s", who);
    pthread_mutex_init(&z->lock, NULL);
    atomic_init(&z->quit, false);
    atomic_init(&z->refused, 0);
    int linger = 0;
    if (!(z->rep = zmq_socket(zctx, ZMQ_REP)) || zmq_setsockopt(z->rep, ZMQ_LINGER, &linger, sizeof linger) ||
        zmq_bind(z->rep, ZAP_ENDPOINT)) {
        sl_fail(err, "cannot start the ZAP handler on %s: %s", ZAP_ENDPOINT, zmq_strerror(zmq_errno()));
        goto fail;
    }
    if (pthread_create(&z->thread, NULL, zap_main, z)) {
        sl_fail(err, "cannot start the ZAP handler thread");
        goto fail;
    }
    *out = z;
    return 0;
fail:
    if (z->rep)
        zmq_close(z->rep);
    pthread_mutex_destroy(&z->lock);
    free(z);
    return -1;
}

int sec_zap_allow(sec_zap *z, const char *domain, const char *public_z85, int tag, sl_err *err)
{
    if (!is_z85_key(public_z85))
        return sl_fail(err, "'%.48s' is not a CURVE public key (40 Z85 characters)", public_z85);
    if (strlen(domain) >= ZAP_DOMAIN_MAX)
        return sl_fail(err, "ZAP domain '%s' is too long", domain);
    allowed a = {.tag = tag};
    snprintf(a.domain, sizeof a.domain, "%s", domain);
    zmq_z85_decode(a.key, public_z85);
    pthread_mutex_lock(&z->lock);
    int rc = 0;
    if (z->n_keys == z->cap_keys) {
        int cap = z->cap_keys ? 2 * z->cap_keys : 16;
        allowed *keys = realloc(z->keys, (size_t)cap * sizeof *keys);
        if (keys) {
            z->keys = keys;
            z->cap_keys = cap;
        } else {
            rc = sl_fail(err, "out of memory");
        }
    }
    if (rc == 0)
        z->keys[z->n_keys++] = a;
    pthread_mutex_unlock(&z->lock);
    return rc;
}

void sec_zap_forget(sec_zap *z, int tag)
{
    pthread_mutex_lock(&z->lock);
    for (int i = 0; i < z->n_keys;)
        if (z->keys[i].tag == tag)
            z->keys[i] = z->keys[--z->n_keys];
        else
            i++;
    pthread_mutex_unlock(&z->lock);
}

int sec_zap_watch(sec_zap *z, void *sock, const char *label, bool client, sl_err *err)
{
    char endpoint[96];
    pthread_mutex_lock(&z->lock);
    unsigned id = z->next_watch++;
    bool full = z->n_watches >= WATCH_MAX;
    pthread_mutex_unlock(&z->lock);
    /* watching only explains refusals (CURVE refuses either way): past the
     * limit a socket goes unwatched rather than fail the pipeline */
    if (full)
        return 0;
    snprintf(endpoint, sizeof endpoint, "inproc://sluice-sec-watch-%p-%u", (void *)z, id);
    /* a server's ZAP denials are logged by the handler already; its
     * connections are followed to name the peer of a failed handshake */
    int events = ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                 ZMQ_EVENT_MONITOR_STOPPED |
                 (client ? ZMQ_EVENT_HANDSHAKE_FAILED_AUTH : ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED);
    if (zmq_socket_monitor(sock, endpoint, events))
        return sl_fail(err, "%s: cannot watch the socket: %s", label, zmq_strerror(zmq_errno()));
    void *pair = zmq_socket(z->zctx, ZMQ_PAIR);
    int linger = 0;
    if (!pair || zmq_setsockopt(pair, ZMQ_LINGER, &linger, sizeof linger) || zmq_connect(pair, endpoint)) {
        if (pair)
            zmq_close(pair);
        zmq_socket_monitor(sock, NULL, 0);
        return sl_fail(err, "%s: cannot watch the socket: %s", label, zmq_strerror(zmq_errno()));
    }
    int rc = 0;
    watch *w = calloc(1, sizeof *w);
    if (w) {
        w->pair = pair;
        snprintf(w->label, sizeof w->label, "%s", label);
        w->client = client;
        for (int i = 0; i < WATCH_PEERS; i++)
            w->peers[i].fd = -1;
    }
    pthread_mutex_lock(&z->lock);
    if (w && z->n_watches == z->cap_watches) {
        int cap = z->cap_watches ? 2 * z->cap_watches : 8;
        watch **ws = realloc(z->watches, (size_t)cap * sizeof *ws);
        if (ws) {
            z->watches = ws;
            z->cap_watches = cap;
        }
    }
    if (w && z->n_watches < z->cap_watches)
        z->watches[z->n_watches++] = w;
    else
        rc = sl_fail(err, "%s: out of memory", label);
    pthread_mutex_unlock(&z->lock);
    if (rc) {
        zmq_socket_monitor(sock, NULL, 0);
        zmq_close(pair);
        free(w);
    }
    return rc;
}

uint64_t sec_zap_refused(sec_zap *z)
{
    return z ? (uint64_t)atomic_load(&z->refused) : 0;
}

void sec_zap_stop(sec_zap *z)
{
    if (!z)
        return;
    atomic_store(&z->quit, true);
    pthread_join(z->thread, NULL);
    zmq_close(z->rep);
    for (int i = 0; i < z->n_watches; i++) {
        zmq_close(z->watches[i]->pair);
        free(z->watches[i]);
    }
    free(z->watches);
    free(z->keys);
    pthread_mutex_destroy(&z->lock);
    free(z);
}
