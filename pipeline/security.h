/* CURVE key files: a key pair is NAME.key (secret, Z85, mode 0600) and
 * NAME.pub (public, Z85). A secret key that group or others can read is
 * refused, so a leaked-permission key never silently authenticates. */
#ifndef SLUICE_SECURITY_H
#define SLUICE_SECURITY_H

#include "util/err.h"

/* Z85 text of a 32-byte CURVE key plus its terminator. */
enum { SEC_KEY_TEXT = 41 };

/* Writes base.key (0600) and base.pub; refuses to overwrite either. */
int sec_keygen(const char *base, sl_err *err);

/* Reads a secret key file; fails naming the file and its mode when group
 * or others have any access. */
int sec_load_secret(const char *path, char out[SEC_KEY_TEXT], sl_err *err);

/* Reads a public key file (any mode). */
int sec_load_public(const char *path, char out[SEC_KEY_TEXT], sl_err *err);

#endif
