#include "pipeline/keyring.h"

#include <stdio.h>
#include <string.h>

/* A node's public key: named in the config, or the public half of the
 * secret key the config hands a spawned node (both: they must agree). */
static int load_pub(pl_keyring *k, const pl_config *c, int i, sl_err *err)
{
    const pl_node *n = &c->nodes[i];
    char derived[SEC_KEY_TEXT] = "";
    if (n->key[0]) {
        sec_keys own;
        if (i == 0)
            own = k->self;
        else if (sec_keys_load(&own, n->key, err))
            return sl_wrap(err, "%s: node '%s': key", c->path, n->name);
        memcpy(derived, own.public_, SEC_KEY_TEXT);
    }
    if (n->public_key[0] && sec_load_public_any(n->public_key, k->pub[i], err))
        return sl_wrap(err, "%s: node '%s': public_key", c->path, n->name);
    if (derived[0] && k->pub[i][0] && strcmp(derived, k->pub[i]) != 0)
        return sl_fail(err, "%s: node '%s': public_key %s is not the public half of the secret key %s", c->path,
                       n->name, n->public_key, n->key);
    if (derived[0])
        memcpy(k->pub[i], derived, SEC_KEY_TEXT);
    return 0;
}

static bool any_tcp(const pl_config *c)
{
    for (int i = 0; i < c->n_nodes; i++)
        if (strncmp(c->nodes[i].address, "tcp://", 6) == 0)
            return true;
    return false;
}

int pl_keyring_load(pl_keyring *k, const pl_config *c, sl_err *err)
{
    memset(k, 0, sizeof *k);
    if (pl_config_check_security(c, err))
        return -1;
    if (!pl_config_secure(c)) {
        if (c->insecure && any_tcp(c))
            fprintf(stderr, "sluice: warning: %s says `insecure: true`: its tcp:// traffic is neither "
                    "authenticated nor encrypted\n", c->path);
        return 0;
    }
    const pl_node *n0 = &c->nodes[0];
    if (sec_keys_load(&k->self, n0->key, err))
        return sl_wrap(err, "%s: node '%s': key", c->path, n0->name);
    for (int i = 0; i < c->n_nodes; i++)
        if (load_pub(k, c, i, err))
            return -1;
    return 0;
}

const char *pl_keyring_stage_key(const pl_keyring *k, const pl_config *c, int i)
{
    if (!k->self.on)
        return "";
    int node = i < c->n_stages ? c->stages[i].node : 0;
    return k->pub[node];
}
