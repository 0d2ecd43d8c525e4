/* libFuzzer target: any byte string either fails pl_config_parse with a
 * message naming the file, or yields a config whose every field is inside
 * the schema's ranges, whose layer check terminates cleanly for several
 * model sizes, and which pl_config_write / pl_config_load give back
 * unchanged, and whose key check ends cleanly. Broken invariants trap so the fuzzer sees them. */
#include "pipeline/config.h"

#include "kernels/types.h"
#include "pipeline/security.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void require(int ok)
{
    if (!ok)
        __builtin_trap();
}

static void require_message(const sl_err *err, const char *prefix)
{
    require(memchr(err->msg, '\0', sizeof err->msg) != NULL);
    require(strncmp(err->msg, prefix, strlen(prefix)) == 0);
}

static int is_remote(const char *address)
{
    return strncmp(address, "ipc://", 6) == 0 || strncmp(address, "tcp://", 6) == 0;
}

static void check_nodes(const pl_config *c)
{
    require(c->n_nodes >= 1 && c->n_nodes <= PL_MAX_NODES);
    for (int i = 0; i < c->n_nodes; i++) {
        const pl_node *n = &c->nodes[i];
        require(memchr(n->name, '\0', sizeof n->name) && n->name[0]);
        require(memchr(n->address, '\0', sizeof n->address) != NULL);
        require(!n->spawn || is_remote(n->address));
        for (int j = 0; j < i; j++)
            require(strcmp(c->nodes[j].name, n->name) != 0);
    }
}

static void check_stages(const pl_config *c)
{
    require(c->n_stages >= 4 && c->n_stages <= PL_MAX_STAGES);
    require(!c->spec.on || (c->spec.k >= 0 && c->spec.k <= 32 && (c->spec.prompt_lookup || c->draft[0])));
    /* sample ends the stages, or an assistant's mtp stage right after it */
    require(c->stages[c->n_stages - 1 - c->spec.mtp].kind == PL_STAGE_SAMPLE);
    require(!c->spec.mtp || (c->spec.on && c->stages[c->n_stages - 1].kind == PL_STAGE_MTP));
    int embeds = 0, heads = 0, layers = 0;
    for (int i = 0; i < c->n_stages; i++) {
        const pl_stage *s = &c->stages[i];
        require(s->kind >= 0 && s->kind < PL_STAGE_KIND_COUNT_);
        require(s->node >= 0 && s->node < c->n_nodes);
        require(s->numa >= -1 && s->threads >= 0 && s->threads <= 1024);
        /* a draft stage exactly when speculative: asks for one, and first */
        require((s->kind == PL_STAGE_DRAFT) == (i == 0 && c->spec.on && !c->spec.mtp));
        require((s->kind == PL_STAGE_MTP) == (i == c->n_stages - 1 && c->spec.mtp));
        if (s->kind == PL_STAGE_LAYERS && !s->layers_auto)
            require(s->l0 >= 0 && s->l0 < s->l1);
        else
            require(s->l0 == 0 && s->l1 == 0);
        embeds += s->kind == PL_STAGE_EMBED;
        heads += s->kind == PL_STAGE_HEAD;
        layers += s->kind == PL_STAGE_LAYERS;
    }
    require(embeds == 1 && heads == 1 && layers >= 1);
}

static void check_values(const pl_config *c)
{
    const sl_sampling *s = &c->sampling;
    require(s->temperature >= 0 && s->top_k >= 0 && s->top_p > 0 && s->top_p <= 1);
    require(s->min_p >= 0 && s->min_p < 1 && s->repeat_penalty > 0 && s->repeat_last_n >= 0);
    const pl_limits *l = &c->limits;
    require(l->max_sequences >= 1 && l->max_sequences <= 4096);
    require(l->context >= 16 && l->context <= (1 << 20));
    require(l->max_batch_tokens >= 1 && l->max_batch_tokens <= 65536);
    require(l->kv_type == SL_TYPE_F32 || l->kv_type == SL_TYPE_F16 || l->kv_type == SL_TYPE_BF16 ||
            l->kv_type == SL_TYPE_Q8_0);
    require(c->model[0] && memchr(c->model, '\0', sizeof c->model) && memchr(c->draft, '\0', sizeof c->draft));
}

static int same(const pl_config *a, const pl_config *b)
{
    if (strcmp(a->model, b->model) || strcmp(a->draft, b->draft) || a->n_nodes != b->n_nodes ||
        a->n_stages != b->n_stages || memcmp(&a->sampling, &b->sampling, sizeof a->sampling) ||
        memcmp(&a->limits, &b->limits, sizeof a->limits) || a->spec.on != b->spec.on ||
        a->spec.k != b->spec.k || a->spec.auto_k != b->spec.auto_k ||
        a->spec.prompt_lookup != b->spec.prompt_lookup || a->spec.pipelined != b->spec.pipelined ||
        a->spec.placed != b->spec.placed)
        return 0;
    for (int i = 0; i < a->n_nodes; i++)
        if (strcmp(a->nodes[i].name, b->nodes[i].name) || strcmp(a->nodes[i].address, b->nodes[i].address) ||
            a->nodes[i].spawn != b->nodes[i].spawn || strcmp(a->nodes[i].public_key, b->nodes[i].public_key) ||
            strcmp(a->nodes[i].key, b->nodes[i].key))
            return 0;
    if (a->insecure != b->insecure)
        return 0;
    for (int i = 0; i < a->n_stages; i++) {
        const pl_stage *s = &a->stages[i], *t = &b->stages[i];
        if (s->kind != t->kind || s->node != t->node || s->l0 != t->l0 || s->l1 != t->l1 ||
            s->layers_auto != t->layers_auto || s->numa != t->numa || s->threads != t->threads)
            return 0;
    }
    return 1;
}

/* Relative paths would be rewritten against the working directory on the
 * way out (and could outgrow PL_PATH_MAX), so the round trip uses absolute
 * ones; everything else goes through as parsed. */
static void round_trip(const pl_config *parsed)
{
    static pl_config copy, back;
    copy = *parsed;
    if (copy.model[0] != '/')
        strcpy(copy.model, "/m.gguf");
    if (copy.draft[0] && copy.draft[0] != '/')
        strcpy(copy.draft, "/d.gguf");
    for (int i = 0; i < copy.n_nodes; i++) {
        pl_node *n = &copy.nodes[i];
        if (n->key[0] && n->key[0] != '/')
            strcpy(n->key, "/k.key");
        if (n->public_key[0] && n->public_key[0] != '/' && !sec_is_key_text(n->public_key))
            strcpy(n->public_key, "/k.pub");
    }
    char path[64];
    snprintf(path, sizeof path, "/tmp/fuzz_config_%d.yaml", (int)getpid());
    sl_err err;
    require(pl_config_write(&copy, path, &err) == 0);
    int rc = pl_config_load(&back, path, &err);
    unlink(path);
    if (rc != 0)
        fprintf(stderr, "round trip failed: %s\n", err.msg);
    require(rc == 0);
    require(same(&copy, &back));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static pl_config c;
    sl_err err;
    int rc = pl_config_parse(&c, (const char *)data, size, "fuzz.yaml", &err);
    require(rc == 0 || rc == -1);
    if (rc != 0) {
        require_message(&err, "fuzz.yaml");
        return 0;
    }
    check_nodes(&c);
    check_stages(&c);
    check_values(&c);
    static const int n_layers[] = {1, 6, 26, 1 << 20};
    for (int i = 0; i < 4; i++) {
        int ok = pl_config_check_layers(&c, n_layers[i], &err);
        require(ok == 0 || ok == -1);
        if (ok != 0)
            require_message(&err, "fuzz.yaml");
    }
    int sec = pl_config_check_security(&c, &err);
    require(sec == 0 || sec == -1);
    if (sec != 0)
        require_message(&err, "fuzz.yaml");
    round_trip(&c);
    return 0;
}
