#include "pipeline/security.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
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

int sec_keygen(const char *base, sl_err *err)
{
    char pub[SEC_KEY_TEXT], sec[SEC_KEY_TEXT];
    if (zmq_curve_keypair(pub, sec) != 0)
        return sl_fail(err, "cannot generate a CURVE key pair: %s", zmq_strerror(errno));
    char path_sec[4096], path_pub[4096];
    if (snprintf(path_sec, sizeof path_sec, "%s.key", base) >= (int)sizeof path_sec ||
        snprintf(path_pub, sizeof path_pub, "%s.pub", base) >= (int)sizeof path_pub)
        return sl_fail(err, "%s: key file name too long", base);
    char line_sec[SEC_KEY_TEXT + 1], line_pub[SEC_KEY_TEXT + 1];
    snprintf(line_sec, sizeof line_sec, "%s\n", sec);
    snprintf(line_pub, sizeof line_pub, "%s\n", pub);
    if (write_new_file(path_sec, line_sec, 0600, err) != 0)
        return -1;
    if (write_new_file(path_pub, line_pub, 0644, err) != 0) {
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

static int read_key(int fd, const char *path, char out[SEC_KEY_TEXT], sl_err *err)
{
    char buf[SEC_KEY_TEXT + 2];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    if (n < 0)
        return sl_fail(err, "%s: read failed: %s", path, strerror(errno));
    buf[n] = '\0';
    if (n > 0 && buf[n - 1] == '\n')
        buf[--n] = '\0';
    if (!is_z85_key(buf))
        return sl_fail(err, "%s: not a CURVE key (want 40 Z85 characters on one line)", path);
    memcpy(out, buf, SEC_KEY_TEXT);
    return 0;
}

static int load_key(const char *path, int secret, char out[SEC_KEY_TEXT], sl_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return sl_fail(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0)
        rc = sl_fail(err, "%s: cannot stat: %s", path, strerror(errno));
    else if (secret && (st.st_mode & 077))
        rc = sl_fail(err, "%s: secret key file has mode %04o; group and others must have no "
                     "access (chmod 600 %s)", path, (unsigned)(st.st_mode & 07777), path);
    else
        rc = read_key(fd, path, out, err);
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
