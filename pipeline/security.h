/* CURVE key files: a key pair is NAME.key (secret, Z85, mode 0600) and
 * NAME.pub (public, Z85). A secret key that group or others can read is
 * refused, so a leaked-permission key never silently authenticates. */
#ifndef SLUICE_SECURITY_H
#define SLUICE_SECURITY_H

#include <stdbool.h>
#include <stdint.h>

#include "util/err.h"

/* Z85 text of a 32-byte CURVE key plus its terminator. */
enum { SEC_KEY_TEXT = 41 };

/* A key file's first line names its kind, so the two halves cannot be
 * mixed up: a public key given where the secret one goes (or the reverse)
 * is refused saying which file is which. Files without the line (from
 * before it existed) are read as before, their kind taken from the name's
 * .key or .pub. */
#define SEC_HEADER_SECRET "# sluice CURVE secret key"
#define SEC_HEADER_PUBLIC "# sluice CURVE public key"
enum { SEC_KIND_UNKNOWN, SEC_KIND_SECRET, SEC_KIND_PUBLIC };

/* Writes base.key (0600) and base.pub, creating base's missing directories
 * (0700); refuses to overwrite either file. */
int sec_keygen(const char *base, sl_err *err);

/* Reads a secret key file; fails naming the file and its mode when group
 * or others have any access. */
int sec_load_secret(const char *path, char out[SEC_KEY_TEXT], sl_err *err);

/* Reads a public key file (any mode). */
int sec_load_public(const char *path, char out[SEC_KEY_TEXT], sl_err *err);

/* True when text is a 40-character Z85 CURVE key. */
bool sec_is_key_text(const char *text);

/* Reads a public key given either inline (40 Z85 characters) or as a file. */
int sec_load_public_any(const char *text_or_path, char out[SEC_KEY_TEXT], sl_err *err);

/* A process's own CURVE identity. on == false: plain TCP (an explicit
 * insecure config) or no tcp:// at all. */
typedef struct sec_keys {
    bool on;
    char secret[SEC_KEY_TEXT];
    char public_[SEC_KEY_TEXT];
} sec_keys;

/* Loads a secret key file (see sec_load_secret) and derives its public half. */
int sec_keys_load(sec_keys *k, const char *secret_path, sl_err *err);

/* ---- sockets ----
 * Both only touch tcp:// endpoints: inproc:// never leaves the process and
 * ipc:// is guarded by its directory's permissions. Call before bind/connect. */

typedef struct sec_zap sec_zap;

/* The socket (which will bind addr) becomes a CURVE server: a peer must
 * complete a CURVE handshake with a client key the ZAP handler lists for
 * domain. zap is the handler running on the socket's context (required:
 * libzmq admits every key when no handler is there). */
int sec_server(void *sock, const sec_keys *k, const sec_zap *zap, const char *domain, const char *addr,
               sl_err *err);
/* The socket (which will connect to addr) becomes a CURVE client that only
 * talks to a server holding the secret half of server_public. */
int sec_client(void *sock, const sec_keys *k, const char *server_public, const char *addr,
               sl_err *err);

/* An ipc:// socket is as private as its directory: before one binds, its
 * directory is created (mode 0700) when missing, and otherwise must be a
 * real directory owned by this user that group and others cannot enter.
 * Abstract names (ipc://@name) have no directory and are refused. Other
 * schemes pass. */
int sec_ipc_dir(const char *addr, sl_err *err);

/* The file of an ipc:// socket this process bound. libzmq (4.3) leaves it
 * behind when the socket closes, so its binder removes it: note it after
 * the bind, remove it after zmq_close. Only the very file noted is removed
 * (same device and inode): a process that bound the path since keeps its
 * own. Other schemes are ignored. */
typedef struct sec_ipc_file {
    char path[128];
    uint64_t dev, ino;
    bool noted;
} sec_ipc_file;

void sec_ipc_file_note(sec_ipc_file *f, const char *addr);
void sec_ipc_file_remove(sec_ipc_file *f);

/* Fails at once, naming the cause, when addr is an ipc:// path that has no
 * socket file or whose socket nobody serves (a file left by a process that
 * ended); 0 otherwise (a listener may still not be sluice, and other
 * schemes are not probed: the caller's own timeout tells). */
int sec_probe_served(const char *addr, sl_err *err);

/* ---- the ZAP handler (ZeroMQ RFC 27) ----
 * One per ZeroMQ context, on a thread of its own: answers every CURVE
 * server's request to admit a client, admitting only public keys listed for
 * the socket's domain. Refusals are counted and logged on stderr with the
 * peer's address and key. It also watches sockets for handshakes that fail
 * before ZAP is asked (plain-text peers, replayed or corrupt handshakes). */
typedef struct sec_zap sec_zap;

/* who prefixes log lines ("sluice worker tcp://h:7100"). */
int sec_zap_start(sec_zap **out, void *zctx, const char *who, sl_err *err);
/* Admits the client key public_z85 on sockets of domain, under tag (0 for
 * keys kept for the process's life). */
int sec_zap_allow(sec_zap *z, const char *domain, const char *public_z85, int tag, sl_err *err);
/* Drops every key admitted under tag (a worker's assignment ends). */
void sec_zap_forget(sec_zap *z, int tag);
/* Reports handshake failures of sock, a socket of the handler's context
 * (label names it in the log). client: sock connects, and a server that
 * refuses this process's key is reported too. */
int sec_zap_watch(sec_zap *z, void *sock, const char *label, bool client, sl_err *err);
/* Connections refused so far (ZAP denials and failed handshakes). */
uint64_t sec_zap_refused(sec_zap *z);
/* Stops the thread; call before zmq_ctx_term of its context. */
void sec_zap_stop(sec_zap *z);

#endif
