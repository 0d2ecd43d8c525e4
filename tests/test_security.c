/* CURVE key files: keygen writes a pair whose public half is the one the
 * secret implies; a secret key readable by group or others is refused with
 * the file and mode named; malformed key text is refused. */
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

int main(void)
{
    char dir[] = "/tmp/sl_sec.XXXXXX";
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    umask(022);
    test_keygen_pair(dir);
    test_bad_text(dir);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "cleanup of %s failed\n", dir);
    return test_finish("test_security");
}
