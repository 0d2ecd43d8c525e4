/* CURVE key files: keygen writes a pair whose public half is the one the
 * secret implies; a secret key readable by group or others is refused with
 * the file and mode named; malformed key text is refused. CURVE sockets: a
 * server admits a client whose key the ZAP handler lists and refuses (and
 * counts) an unknown key, a plain-text peer and a client that expects
 * another server key. ipc:// sockets bind only in a directory private to
 * the user. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "pipeline/security.h"
#include "tests/test.h"

static void write_text(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    if (!f) { perror(path); exit(1); }
    fputs(text, f);
    fclose(f);
    chmod(path, mode);
}

static void test_keygen_pair(const char *dir)
{
    char base[512], key[520], pub[520];
    snprintf(base, sizeof base, "%s/node", dir);
    snprintf(key, sizeof key, "%s.key", base);
    snprintf(pub, sizeof pub, "%s.pub", base);
    sl_err err = {{0}};
    CHECKF(sec_keygen(base, &err) == 0, "%s", err.msg);
    struct stat st;
    CHECK(stat(key, &st) == 0 && (st.st_mode & 0777) == 0600);
    char sec_text[SEC_KEY_TEXT], pub_text[SEC_KEY_TEXT], derived[SEC_KEY_TEXT];
    CHECKF(sec_load_secret(key, sec_text, &err) == 0, "%s", err.msg);
    CHECKF(sec_load_public(pub, pub_text, &err) == 0, "%s", err.msg);
    CHECK(zmq_curve_public(derived, sec_text) == 0);
    CHECK(strcmp(derived, pub_text) == 0);
    CHECK(strcmp(sec_text, pub_text) != 0);
    /* a second keygen must not replace a pair nodes already trust */
    CHECK(sec_keygen(base, &err) == -1);
    CHECK_ERR_HAS(err, "node.key");
    char again[SEC_KEY_TEXT];
    CHECK(sec_load_secret(key, again, &err) == 0 && strcmp(again, sec_text) == 0);

    chmod(key, 0640);
    CHECK(sec_load_secret(key, again, &err) == -1);
    CHECK_ERR_HAS(err, key);
    CHECK_ERR_HAS(err, "0640");
    chmod(key, 0604);
    CHECK(sec_load_secret(key, again, &err) == -1);
    CHECK_ERR_HAS(err, "0604");
    /* a public key may be world-readable */
    CHECK(sec_load_public(pub, again, &err) == 0);
}

static void test_bad_text(const char *dir)
{
    char path[512];
    char out[SEC_KEY_TEXT];
    sl_err err = {{0}};
    snprintf(path, sizeof path, "%s/short.key", dir);
    write_text(path, "abc\n", 0600);
    CHECK(sec_load_secret(path, out, &err) == -1);
    CHECK_ERR_HAS(err, "not a CURVE key");
    snprintf(path, sizeof path, "%s/badchar.key", dir);
    write_text(path, "0123456789012345678901234567890123456 ~,\n", 0600);
    CHECK(sec_load_secret(path, out, &err) == -1);
    CHECK_ERR_HAS(err, "badchar.key");
    snprintf(path, sizeof path, "%s/long.key", dir);
    write_text(path, "01234567890123456789012345678901234567890\n", 0600);
    CHECK(sec_load_secret(path, out, &err) == -1);
    /* every character is Z85, but each 5-character group exceeds 2^32 */
    snprintf(path, sizeof path, "%s/overflow.key", dir);
    write_text(path, "########################################\n", 0600);
    CHECK(sec_load_secret(path, out, &err) == -1);
    CHECK_ERR_HAS(err, "not a CURVE key");
    snprintf(path, sizeof path, "%s/missing.key", dir);
    CHECK(sec_load_secret(path, out, &err) == -1);
    CHECK_ERR_HAS(err, "missing.key");
}

static void make_keys(sec_keys *k)
{
    memset(k, 0, sizeof *k);
    CHECK(zmq_curve_keypair(k->public_, k->secret) == 0);
    k->on = true;
}

/* Sends one message from a fresh PUSH socket (CURVE with ck when given,
 * expecting server_pub) and reports whether the server's PULL got it. */
static int delivered(void *zctx, void *server, const char *addr, const sec_keys *ck, const char *server_pub)
{
    void *push = zmq_socket(zctx, ZMQ_PUSH);
    int linger = 0;
    zmq_setsockopt(push, ZMQ_LINGER, &linger, sizeof linger);
    sl_err err = {{0}};
    if (ck)
        CHECKF(sec_client(push, ck, server_pub, addr, &err) == 0, "%s", err.msg);
    CHECK(zmq_connect(push, addr) == 0);
    zmq_send(push, "hello", 5, ZMQ_DONTWAIT);
    zmq_pollitem_t item = {server, 0, ZMQ_POLLIN, 0};
    /* an admitted message comes at once; a refused one never (1.5 s to be sure on a busy machine) */
    int got = zmq_poll(&item, 1, 1500) == 1;
    if (got) {
        char buf[16];
        CHECK(zmq_recv(server, buf, sizeof buf, 0) == 5 && memcmp(buf, "hello", 5) == 0);
    }
    zmq_close(push);
    return got;
}

static void test_curve_sockets(void)
{
    void *zctx = zmq_ctx_new();
    sec_keys server_k, good, stranger;
    make_keys(&server_k);
    make_keys(&good);
    make_keys(&stranger);
    sl_err err = {{0}};
    void *pull = zmq_socket(zctx, ZMQ_PULL);
    int linger = 0;
    zmq_setsockopt(pull, ZMQ_LINGER, &linger, sizeof linger);
    /* no handler, no server: libzmq would admit every key */
    CHECK(sec_server(pull, &server_k, NULL, "data", "tcp://127.0.0.1:1", &err) == -1);
    CHECK_ERR_HAS(err, "ZAP handler");
    sec_zap *zap;
    CHECKF(sec_zap_start(&zap, zctx, "test", &err) == 0, "%s", err.msg);
    CHECK(sec_zap_allow(zap, "data", "not a key", 0, &err) == -1);
    CHECK_ERR_HAS(err, "not a CURVE public key");
    CHECKF(sec_zap_allow(zap, "data", good.public_, 0, &err) == 0, "%s", err.msg);
    CHECKF(sec_zap_allow(zap, "control", stranger.public_, 0, &err) == 0, "%s", err.msg);
    CHECKF(sec_server(pull, &server_k, zap, "data", "tcp://127.0.0.1:0", &err) == 0, "%s", err.msg);
    CHECKF(sec_zap_watch(zap, pull, "test socket", false, &err) == 0, "%s", err.msg);
    CHECK(zmq_bind(pull, "tcp://127.0.0.1:*") == 0);
    char addr[128];
    size_t len = sizeof addr;
    CHECK(zmq_getsockopt(pull, ZMQ_LAST_ENDPOINT, addr, &len) == 0);

    CHECK(delivered(zctx, pull, addr, &good, server_k.public_));
    uint64_t before = sec_zap_refused(zap);
    /* listed for another domain only */
    CHECK(!delivered(zctx, pull, addr, &stranger, server_k.public_));
    CHECK(sec_zap_refused(zap) > before);
    before = sec_zap_refused(zap);
    CHECK(!delivered(zctx, pull, addr, NULL, NULL)); /* plain text */
    usleep(100000); /* the monitor event may trail the refusal */
    CHECK(sec_zap_refused(zap) > before);
    /* a listed client that expects another server's key never gets through */
    CHECK(!delivered(zctx, pull, addr, &good, stranger.public_));
    /* a key forgotten with its tag is refused again */
    CHECKF(sec_zap_allow(zap, "data", stranger.public_, 7, &err) == 0, "%s", err.msg);
    CHECK(delivered(zctx, pull, addr, &stranger, server_k.public_));
    sec_zap_forget(zap, 7);
    CHECK(!delivered(zctx, pull, addr, &stranger, server_k.public_));
    CHECK(delivered(zctx, pull, addr, &good, server_k.public_));

    void *push = zmq_socket(zctx, ZMQ_PUSH);
    CHECK(sec_client(push, &good, "short", "tcp://127.0.0.1:5", &err) == -1);
    CHECK_ERR_HAS(err, "tcp://127.0.0.1:5");
    /* ipc:// and inproc:// stay plain */
    CHECK(sec_client(push, &good, NULL, "ipc:///tmp/x", &err) == 0);
    zmq_close(push);
    zmq_close(pull);
    sec_zap_stop(zap);
    zmq_ctx_term(zctx);
}

static void test_ipc_dir(const char *dir)
{
    char addr[700], sub[560];
    sl_err err = {{0}};
    /* a missing directory is made private */
    snprintf(sub, sizeof sub, "%s/sockets", dir);
    snprintf(addr, sizeof addr, "ipc://%s/p1", sub);
    CHECKF(sec_ipc_dir(addr, &err) == 0, "%s", err.msg);
    struct stat st;
    CHECK(stat(sub, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 0777) == 0700);
    CHECKF(sec_ipc_dir(addr, &err) == 0, "%s", err.msg); /* and found fine the second time */
    /* one other users may enter is refused, naming it and its mode */
    chmod(sub, 0711);
    CHECK(sec_ipc_dir(addr, &err) == -1);
    CHECK_ERR_HAS(err, sub);
    CHECK_ERR_HAS(err, "0711");
    chmod(sub, 0700);
    CHECK(sec_ipc_dir("ipc:///tmp/x", &err) == -1); /* /tmp: mode 1777 */
    CHECK_ERR_HAS(err, "1777");
    char link[600];
    snprintf(link, sizeof link, "%s/link", dir);
    CHECK(symlink(sub, link) == 0);
    snprintf(addr, sizeof addr, "ipc://%s/p1", link);
    CHECK(sec_ipc_dir(addr, &err) == -1);
    CHECK_ERR_HAS(err, "not a directory");
    CHECK(sec_ipc_dir("ipc://@abstract", &err) == -1);
    CHECK_ERR_HAS(err, "abstract");
    CHECK(sec_ipc_dir("tcp://127.0.0.1:1", &err) == 0);
    CHECK(sec_ipc_dir("inproc://x", &err) == 0);
}

int main(void)
{
    char dir[] = "/tmp/sl_sec.XXXXXX";
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    umask(022);
    test_keygen_pair(dir);
    test_bad_text(dir);
    test_curve_sockets();
    test_ipc_dir(dir);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "cleanup of %s failed\n", dir);
    return test_finish("test_security");
}
