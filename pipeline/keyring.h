/* The CURVE keys of one pipeline run, read from the files its config names:
 * the coordinator's own pair and every node's public key. Internal to
 * pipeline/. */
#ifndef SLUICE_KEYRING_H
#define SLUICE_KEYRING_H

#include "pipeline/config.h"
#include "pipeline/security.h"

typedef struct pl_keyring {
    sec_keys self;                          /* self.on: CURVE on every tcp:// socket */
    char pub[PL_MAX_NODES][SEC_KEY_TEXT];   /* node i's public key; "" when it has none */
} pl_keyring;

/* Checks the config's key fields (pl_config_check_security), then reads
 * the key files: nodes[0].key (refused when group or others can read it),
 * every public_key. A config with `insecure: true` and a tcp:// node gets one
 * warning line on stderr. Errors name the config, node and file. */
int pl_keyring_load(pl_keyring *k, const pl_config *c, sl_err *err);

/* The public key of the node that stage i runs on (i == n_stages: the
 * driver's return socket, on nodes[0]); "" without CURVE. */
const char *pl_keyring_stage_key(const pl_keyring *k, const pl_config *c, int i);

#endif
