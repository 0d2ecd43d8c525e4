/* Declarative pipeline configs: YAML text → pl_config, and back.
 *
 * Two passes over the text: an event pass that rejects what the schema never
 * needs (anchors, aliases, several documents, deep nesting) and reports syntax
 * errors, then libyaml's document loader, whose tree is walked against the
 * schema. Aliases are refused outright so a "billion laughs" file cannot make
 * the walk (or anyone reading the config later) expand shared nodes. */
#include "pipeline/config.h"

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "kernels/types.h"
#include "model/gguf.h"
#include "pipeline/security.h"

#define CFG_MAX_BYTES (1 << 20)
#define CFG_MAX_DEPTH 32
#define CFG_MAX_LAYER (1 << 20) /* far beyond any model; keeps l0/l1 arithmetic in int */
#define CFG_SHOW_MAX 48         /* longest user text quoted back in a message */

typedef struct cfg_ctx {
    yaml_document_t *doc;
    const char *name;          /* the config's name, first in every message */
    char dir[PL_PATH_MAX];     /* prefix for relative paths, with its '/'; "" for none */
    sl_err *err;
} cfg_ctx;

void pl_config_stage_spec(const pl_config *c, int i, sl_stage_spec *spec)
{
    const pl_stage *st = &c->stages[i];
    *spec = (sl_stage_spec){
        .kind = st->kind, .model = c->model, .l0 = st->l0, .l1 = st->l1,
        .max_sequences = c->limits.max_sequences, .context = c->limits.context,
        .max_batch_tokens = c->limits.max_batch_tokens, .index = i,
        .kv_type = c->limits.kv_type, .kv_full = c->limits.prefix_cache && c->limits.prefix_full,
        .ple_at_embed = c->limits.ple == PLE_AT_EMBED,
        .draft_model = c->draft[0] ? c->draft : NULL, .spec_k = c->spec.k,
        .spec_auto = c->spec.auto_k, .spec_lookup = c->spec.prompt_lookup,
        .spec_pipelined = c->spec.pipelined,
        .mtp_feed = c->spec.mtp && (st->kind == PL_STAGE_LAYERS || st->kind == PL_STAGE_HEAD),
    };
}

int pl_config_spec_stage(const pl_config *c)
{
    if (!c->spec.on || c->n_stages < 1)
        return -1;
    return c->spec.mtp ? c->n_stages - 1 : 0;
}

/* ---- messages ---- */

__attribute__((format(printf, 4, 5)))
static int fail_at(const cfg_ctx *x, int line, const char *field, const char *fmt, ...)
{
    char msg[sizeof x->err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char where[PL_PATH_MAX + 16];
    /* Configs built in code (pl_config_default, a plan) have no lines. */
    if (line > 0)
        snprintf(where, sizeof where, "%s:%d", x->name, line);
    else
        snprintf(where, sizeof where, "%s", x->name);
    if (field && field[0])
        return sl_fail(x->err, "%s: %s: %s", where, field, msg);
    return sl_fail(x->err, "%s: %s", where, msg);
}

static int node_line(const yaml_node_t *n)
{
    return (int)n->start_mark.line + 1;
}

/* User text quoted back in a message: printable ASCII only, bounded, so a
 * hostile file cannot fill the message or the terminal with junk. */
static const char *show(const void *text, size_t len, char out[CFG_SHOW_MAX + 4])
{
    const unsigned char *s = text;
    size_t n = 0;
    for (size_t i = 0; i < len && n < CFG_SHOW_MAX; i++)
        out[n++] = (s[i] >= 0x20 && s[i] < 0x7f) ? (char)s[i] : '?';
    if (len > CFG_SHOW_MAX)
        memcpy(out + n, "...", 3), n += 3;
    out[n] = '\0';
    return out;
}

static const char *show_scalar(const yaml_node_t *n, char out[CFG_SHOW_MAX + 4])
{
    return show(n->data.scalar.value, n->data.scalar.length, out);
}

static bool scalar_is(const yaml_node_t *n, const char *word)
{
    size_t len = strlen(word);
    return n->type == YAML_SCALAR_NODE && n->data.scalar.length == len &&
           memcmp(n->data.scalar.value, word, len) == 0;
}

/* YAML's null spellings, taken as "no value" only when unquoted. */
static bool is_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    return scalar_is(n, "") || scalar_is(n, "~") || scalar_is(n, "null") ||
           scalar_is(n, "Null") || scalar_is(n, "NULL");
}

static const char *node_kind(const yaml_node_t *n)
{
    if (n->type == YAML_MAPPING_NODE)
        return "a mapping";
    if (n->type == YAML_SEQUENCE_NODE)
        return "a sequence";
    return is_null(n) ? "an empty value" : "a scalar";
}

static int expect_type(const cfg_ctx *x, const yaml_node_t *n, yaml_node_type_t want,
                       const char *field)
{
    if (n->type == want)
        return 0;
    const char *what = want == YAML_MAPPING_NODE ? "a mapping"
                     : want == YAML_SEQUENCE_NODE ? "a sequence" : "a scalar";
    return fail_at(x, node_line(n), field, "expected %s, got %s", what, node_kind(n));
}

/* ---- mappings against a key table ---- */

/* Fills values[k] with the value of keys[k] (NULL when absent). Unknown and
 * duplicate keys are errors: a misspelt key must not be silently ignored. */
static int read_map(const cfg_ctx *x, yaml_node_t *map, const char *field,
                    const char *const *keys, int n_keys, yaml_node_t **values)
{
    int key_line[16] = {0};
    for (int k = 0; k < n_keys; k++)
        values[k] = NULL;
    char shown[CFG_SHOW_MAX + 4];
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *key = yaml_document_get_node(x->doc, p->key);
        yaml_node_t *value = yaml_document_get_node(x->doc, p->value);
        if (key->type != YAML_SCALAR_NODE)
            return fail_at(x, node_line(key), field, "keys must be plain words, got %s", node_kind(key));
        int k = 0;
        while (k < n_keys && !scalar_is(key, keys[k]))
            k++;
        if (k == n_keys) {
            char expected[256] = "";
            for (int j = 0; j < n_keys; j++) {
                strcat(expected, j ? ", " : "");
                strcat(expected, keys[j]);
            }
            return fail_at(x, node_line(key), field, "unknown key '%s' (expected %s)",
                           show_scalar(key, shown), expected);
        }
        if (values[k])
            return fail_at(x, node_line(key), field, "duplicate key '%s' (first at line %d)",
                           keys[k], key_line[k]);
        values[k] = value;
        key_line[k] = node_line(key);
    }
    return 0;
}

/* ---- scalars ---- */

static int read_string(const cfg_ctx *x, const yaml_node_t *n, const char *field,
                       char *dst, size_t cap)
{
    if (expect_type(x, n, YAML_SCALAR_NODE, field))
        return -1;
    size_t len = n->data.scalar.length;
    if (is_null(n) || len == 0)
        return fail_at(x, node_line(n), field, "must not be empty");
    if (memchr(n->data.scalar.value, '\0', len))
        return fail_at(x, node_line(n), field, "contains a NUL byte");
    if (len >= cap)
        return fail_at(x, node_line(n), field, "is too long (%zu bytes, at most %zu)", len, cap - 1);
    memcpy(dst, n->data.scalar.value, len);
    dst[len] = '\0';
    return 0;
}

/* Numbers and booleans must be unquoted: "5" in quotes is a string in YAML,
 * and a config that means a number should say so. */
static int expect_plain(const cfg_ctx *x, const yaml_node_t *n, const char *field, const char *what)
{
    if (expect_type(x, n, YAML_SCALAR_NODE, field))
        return -1;
    char shown[CFG_SHOW_MAX + 4];
    if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return fail_at(x, node_line(n), field, "expected %s, got the quoted string '%s'",
                       what, show_scalar(n, shown));
    if (n->data.scalar.length == 0)
        return fail_at(x, node_line(n), field, "expected %s, got an empty value", what);
    return 0;
}

/* Decimal digits only, optionally signed; no spaces, no trailing junk. */
static int read_int(const cfg_ctx *x, const yaml_node_t *n, const char *field,
                    long long lo, long long hi, long long *out)
{
    if (expect_plain(x, n, field, "an integer"))
        return -1;
    const char *s = (const char *)n->data.scalar.value;
    size_t len = n->data.scalar.length, i = 0;
    bool negative = false;
    if (s[0] == '-' || s[0] == '+')
        negative = s[i++] == '-';
    long long v = 0;
    bool overflow = false;
    char shown[CFG_SHOW_MAX + 4];
    if (i == len)
        return fail_at(x, node_line(n), field, "expected an integer, got '%s'", show_scalar(n, shown));
    for (; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return fail_at(x, node_line(n), field, "expected an integer, got '%s'", show_scalar(n, shown));
        if (v > (LLONG_MAX - 9) / 10)
            overflow = true;
        else
            v = v * 10 + (s[i] - '0');
    }
    if (negative)
        v = -v;
    if (overflow || v < lo || v > hi) {
        if (hi == INT_MAX)
            return fail_at(x, node_line(n), field, "%s is out of range (must be >= %lld)",
                           show_scalar(n, shown), lo);
        return fail_at(x, node_line(n), field, "%s is out of range (%lld..%lld)",
                       show_scalar(n, shown), lo, hi);
    }
    *out = v;
    return 0;
}

static int read_u64(const cfg_ctx *x, const yaml_node_t *n, const char *field, uint64_t *out)
{
    if (expect_plain(x, n, field, "an unsigned integer"))
        return -1;
    const unsigned char *s = n->data.scalar.value;
    size_t len = n->data.scalar.length;
    uint64_t v = 0;
    char shown[CFG_SHOW_MAX + 4];
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return fail_at(x, node_line(n), field, "expected an unsigned integer, got '%s'",
                           show_scalar(n, shown));
        unsigned digit = s[i] - '0';
        if (v > (UINT64_MAX - digit) / 10)
            return fail_at(x, node_line(n), field, "%s does not fit in 64 bits", show_scalar(n, shown));
        v = v * 10 + digit;
    }
    *out = v;
    return 0;
}

/* A finite decimal number that also fits a float (the sampler's type). */
static int read_float(const cfg_ctx *x, const yaml_node_t *n, const char *field, float *out)
{
    if (expect_plain(x, n, field, "a number"))
        return -1;
    const char *s = (const char *)n->data.scalar.value;
    size_t len = n->data.scalar.length;
    bool has_digit = false;
    char shown[CFG_SHOW_MAX + 4];
    /* strtod alone would also take hex, inf, nan and leading spaces. */
    for (size_t i = 0; i < len; i++) {
        if (s[i] >= '0' && s[i] <= '9')
            has_digit = true;
        else if (!strchr("+-.eE", s[i]) || s[i] == '\0')
            return fail_at(x, node_line(n), field, "expected a number, got '%s'", show_scalar(n, shown));
    }
    char *end = NULL;
    errno = 0;
    double v = has_digit ? strtod(s, &end) : 0.0;
    if (!has_digit || end != s + len)
        return fail_at(x, node_line(n), field, "expected a number, got '%s'", show_scalar(n, shown));
    if (!isfinite(v) || fabs(v) > FLT_MAX)
        return fail_at(x, node_line(n), field, "%s is too large", show_scalar(n, shown));
    *out = (float)v;
    return 0;
}

static int read_bool(const cfg_ctx *x, const yaml_node_t *n, const char *field, bool *out)
{
    if (expect_plain(x, n, field, "true or false"))
        return -1;
    if (scalar_is(n, "true") || scalar_is(n, "yes")) {
        *out = true;
        return 0;
    }
    if (scalar_is(n, "false") || scalar_is(n, "no")) {
        *out = false;
        return 0;
    }
    char shown[CFG_SHOW_MAX + 4];
    return fail_at(x, node_line(n), field, "expected true, false, yes or no, got '%s'",
                   show_scalar(n, shown));
}

static int read_int_field(const cfg_ctx *x, const yaml_node_t *n, const char *field,
                          long long lo, long long hi, int *out)
{
    long long v;
    if (!n)
        return 0;
    if (read_int(x, n, field, lo, hi, &v))
        return -1;
    *out = (int)v;
    return 0;
}

/* ---- paths ---- */

static int read_path(const cfg_ctx *x, const yaml_node_t *n, const char *field, char dst[PL_PATH_MAX])
{
    char raw[PL_PATH_MAX];
    if (read_string(x, n, field, raw, sizeof raw))
        return -1;
    const char *prefix = raw[0] == '/' ? "" : x->dir;
    size_t need = strlen(prefix) + strlen(raw);
    if (need >= PL_PATH_MAX)
        return fail_at(x, node_line(n), field, "the resolved path is too long (%zu bytes, at most %d)",
                       need, PL_PATH_MAX - 1);
    memcpy(dst, prefix, strlen(prefix));
    memcpy(dst + strlen(prefix), raw, strlen(raw) + 1);
    return 0;
}

/* ---- cores ---- */

/* `cores: [0, 1, '4-7']`: CPU numbers or ranges, none twice. */
static int read_cores(const cfg_ctx *x, const yaml_node_t *seq, const char *field, sl_cpuset *out)
{
    if (expect_type(x, seq, YAML_SEQUENCE_NODE, field))
        return -1;
    long n = seq->data.sequence.items.top - seq->data.sequence.items.start;
    if (n == 0)
        return fail_at(x, node_line(seq), field, "lists no CPU (leave `cores` out to let sluice choose)");
    memset(out, 0, sizeof *out);
    for (long i = 0; i < n; i++) {
        char sub[128], text[32], shown[CFG_SHOW_MAX + 4];
        snprintf(sub, sizeof sub, "%.80s[%d]", field, (int)i);
        yaml_node_t *item = yaml_document_get_node(x->doc, seq->data.sequence.items.start[i]);
        if (expect_type(x, item, YAML_SCALAR_NODE, sub))
            return -1;
        size_t len = item->data.scalar.length;
        if (len == 0 || len >= sizeof text)
            return fail_at(x, node_line(item), sub, "'%s' is not a CPU number or a range A-B",
                           show_scalar(item, shown));
        memcpy(text, item->data.scalar.value, len);
        text[len] = '\0';
        sl_cpuset one = {0};
        sl_err why;
        if (sl_cpuset_add_text(&one, text, &why))
            return fail_at(x, node_line(item), sub, "%s", why.msg);
        sl_cpuset twice = sl_cpuset_and(out, &one);
        char list[64];
        if (sl_cpuset_count(&twice))
            return fail_at(x, node_line(item), sub, "CPU %s is listed twice",
                           sl_cpuset_format(&twice, list, sizeof list));
        for (int w = 0; w < SL_CPUS_MAX / 64; w++)
            out->bits[w] |= one.bits[w];
    }
    return 0;
}

/* The threads a node's computing stages (layers, draft) ask for together. */
static int node_threads(const pl_config *c, int node, char *parts, size_t cap)
{
    int sum = 0;
    size_t len = 0;
    parts[0] = '\0';
    for (int i = 0; i < c->n_stages; i++) {
        const pl_stage *st = &c->stages[i];
        if (st->node != node || st->threads <= 0 ||
            (st->kind != PL_STAGE_LAYERS && st->kind != PL_STAGE_DRAFT))
            continue;
        sum += st->threads;
        if (len < cap)
            len += (size_t)snprintf(parts + len, cap - len, "%s%s %d", len ? ", " : "",
                                    pl_stage_kind_name(st->kind), st->threads);
    }
    return sum;
}

/* Oversubscription a config states outright: two processes of this host on
 * the same CPUs, or a node's stages asking more threads than its cores. */
static int check_cores(const cfg_ctx *x, const pl_config *c)
{
    char field[64], a[256], b[256];
    for (int i = 0; i < c->n_nodes; i++) {
        const pl_node *n = &c->nodes[i];
        int have = sl_cpuset_count(&n->cores);
        if (!have)
            continue;
        snprintf(field, sizeof field, "nodes[%d].cores", i);
        char parts[256];
        int want = node_threads(c, i, parts, sizeof parts);
        if (want > have)
            return fail_at(x, n->line, field, "node '%s' has %d core(s) (%s) but its stages ask for %d "
                           "threads (%s): give it more cores or its stages fewer threads", n->name, have,
                           sl_cpuset_format(&n->cores, a, sizeof a), want, parts);
        if (!pl_node_on_this_host(c, i))
            continue;
        for (int j = 0; j < i; j++) {
            sl_cpuset both = sl_cpuset_and(&c->nodes[j].cores, &n->cores);
            if (pl_node_on_this_host(c, j) && sl_cpuset_count(&both))
                return fail_at(x, n->line, field, "nodes '%s' and '%s' both run on this host and share "
                               "CPU %s (%s has %s): give each process its own cores", c->nodes[j].name,
                               n->name, sl_cpuset_format(&both, a, sizeof a), c->nodes[j].name,
                               sl_cpuset_format(&c->nodes[j].cores, b, sizeof b));
        }
    }
    return 0;
}

bool pl_node_on_this_host(const pl_config *c, int node)
{
    const pl_node *n = &c->nodes[node];
    return node == 0 || n->spawn || !n->address[0] || strncmp(n->address, "ipc://", 6) == 0 ||
           strncmp(n->address, "inproc://", 9) == 0;
}

/* ---- nodes ---- */

static bool name_char_ok(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '_' || ch == '.' || ch == '-';
}

static int check_tcp(const cfg_ctx *x, int line, const char *field, const char *hostport)
{
    const char *colon = strrchr(hostport, ':');
    char shown[CFG_SHOW_MAX + 4];
    if (!colon || colon == hostport)
        return fail_at(x, line, field, "tcp address 'tcp://%s' needs host:port",
                       show(hostport, strlen(hostport), shown));
    const char *port = colon + 1;
    size_t digits = strlen(port);
    long value = 0;
    bool numeric = digits >= 1 && digits <= 5;
    for (size_t i = 0; numeric && i < digits; i++) {
        numeric = port[i] >= '0' && port[i] <= '9';
        value = value * 10 + (port[i] - '0');
    }
    if (!numeric || value < 1 || value > 65535)
        return fail_at(x, line, field, "tcp port '%s' must be a number in 1..65535",
                       show(port, digits, shown));
    return 0;
}

static int check_address(const cfg_ctx *x, const yaml_node_t *n, const char *field, const char *addr)
{
    char shown[CFG_SHOW_MAX + 4];
    for (const char *p = addr; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return fail_at(x, node_line(n), field, "address '%s' contains spaces or control characters",
                           show(addr, strlen(addr), shown));
    static const char *const schemes[] = {"inproc://", "ipc://", "tcp://"};
    for (int s = 0; s < 3; s++) {
        size_t len = strlen(schemes[s]);
        if (strncmp(addr, schemes[s], len) != 0)
            continue;
        if (addr[len] == '\0')
            return fail_at(x, node_line(n), field, "address '%s' names no endpoint", addr);
        return s == 2 ? check_tcp(x, node_line(n), field, addr + len) : 0;
    }
    return fail_at(x, node_line(n), field, "address '%s' must start with inproc://, ipc:// or tcp://",
                   show(addr, strlen(addr), shown));
}

enum { N_NAME, N_ADDRESS, N_SPAWN, N_PUBLIC_KEY, N_KEY, N_CORES, N_KEYS };
static const char *const node_keys[N_KEYS] = {"name", "address", "spawn", "public_key", "key", "cores"};

/* 40 Z85 characters stay as they are; anything else is a file path. */
/* Z85 keys may start with a character YAML reads as syntax (! & * @ % ...). */
#define QUOTE_KEY_HINT "; a public key written inline must be quoted: public_key: \"KEY\""

static int read_public_key(const cfg_ctx *x, const yaml_node_t *n, const char *field, char dst[PL_PATH_MAX])
{
    /* an unquoted key starting with '!' is read as a tag, one with '&' as an anchor */
    if (n->type == YAML_SCALAR_NODE && n->tag && strcmp((const char *)n->tag, YAML_STR_TAG) != 0)
        return fail_at(x, (int)n->start_mark.line + 1, field, "YAML read '%s' as a tag, not a key" QUOTE_KEY_HINT,
                       (const char *)n->tag);
    char raw[PL_PATH_MAX];
    if (read_string(x, n, field, raw, sizeof raw))
        return -1;
    if (sec_is_key_text(raw)) {
        memcpy(dst, raw, strlen(raw) + 1);
        return 0;
    }
    return read_path(x, n, field, dst);
}

static int parse_node(const cfg_ctx *x, pl_config *c, yaml_node_t *item, int i)
{
    char field[64], sub[80];
    snprintf(field, sizeof field, "nodes[%d]", i);
    yaml_node_t *v[N_KEYS];
    if (expect_type(x, item, YAML_MAPPING_NODE, field) ||
        read_map(x, item, field, node_keys, N_KEYS, v))
        return -1;
    pl_node *node = &c->nodes[i];
    node->line = node_line(item);
    if (!v[N_NAME])
        return fail_at(x, node->line, field, "missing 'name'");
    snprintf(sub, sizeof sub, "%s.name", field);
    if (read_string(x, v[N_NAME], sub, node->name, sizeof node->name))
        return -1;
    char shown[CFG_SHOW_MAX + 4];
    for (const char *p = node->name; *p; p++)
        if (!name_char_ok(*p))
            return fail_at(x, node_line(v[N_NAME]), sub,
                           "node name '%s' may hold only letters, digits, '_', '.' and '-'",
                           show(node->name, strlen(node->name), shown));
    for (int j = 0; j < i; j++)
        if (strcmp(c->nodes[j].name, node->name) == 0)
            return fail_at(x, node_line(v[N_NAME]), sub, "duplicate node name '%s' (first at line %d)",
                           node->name, c->nodes[j].line);
    if (v[N_ADDRESS]) {
        snprintf(sub, sizeof sub, "%s.address", field);
        if (read_string(x, v[N_ADDRESS], sub, node->address, sizeof node->address) ||
            check_address(x, v[N_ADDRESS], sub, node->address))
            return -1;
    }
    if (v[N_SPAWN]) {
        snprintf(sub, sizeof sub, "%s.spawn", field);
        if (read_bool(x, v[N_SPAWN], sub, &node->spawn))
            return -1;
        bool remote = strncmp(node->address, "ipc://", 6) == 0 || strncmp(node->address, "tcp://", 6) == 0;
        if (node->spawn && !remote)
            return fail_at(x, node_line(v[N_SPAWN]), sub,
                           "spawn needs an ipc:// or tcp:// address (node '%s' has %s)", node->name,
                           node->address[0] ? "an inproc:// one" : "none");
        if (node->spawn && i == 0)
            return fail_at(x, node_line(v[N_SPAWN]), sub,
                           "nodes[0] ('%s') is this process, the coordinator; it cannot be spawned "
                           "(list the spawned workers after it)", node->name);
    }
    if (v[N_PUBLIC_KEY]) {
        snprintf(sub, sizeof sub, "%s.public_key", field);
        if (read_public_key(x, v[N_PUBLIC_KEY], sub, node->public_key))
            return -1;
    }
    if (v[N_KEY]) {
        snprintf(sub, sizeof sub, "%s.key", field);
        if (read_path(x, v[N_KEY], sub, node->key))
            return -1;
    }
    snprintf(sub, sizeof sub, "%s.cores", field);
    return v[N_CORES] ? read_cores(x, v[N_CORES], sub, &node->cores) : 0;
}

static int parse_nodes(const cfg_ctx *x, pl_config *c, yaml_node_t *seq)
{
    if (expect_type(x, seq, YAML_SEQUENCE_NODE, "nodes"))
        return -1;
    long n = seq->data.sequence.items.top - seq->data.sequence.items.start;
    if (n == 0)
        return fail_at(x, node_line(seq), "nodes", "must list at least one node (or be left out)");
    if (n > PL_MAX_NODES)
        return fail_at(x, node_line(seq), "nodes", "too many nodes (%ld, at most %d)", n, PL_MAX_NODES);
    for (int i = 0; i < n; i++) {
        c->n_nodes = i;
        yaml_node_t *item = yaml_document_get_node(x->doc, seq->data.sequence.items.start[i]);
        if (parse_node(x, c, item, i))
            return -1;
    }
    c->n_nodes = (int)n;
    return 0;
}

static void set_local_node(pl_config *c)
{
    memset(&c->nodes[0], 0, sizeof c->nodes[0]);
    strcpy(c->nodes[0].name, "local");
    c->n_nodes = 1;
}

/* ---- stages ---- */

enum { S_KIND, S_NODE, S_LAYERS, S_NUMA, S_THREADS, S_KEYS };
static const char *const stage_keys[S_KEYS] = {"kind", "node", "layers", "numa", "threads"};

static int parse_kind(const cfg_ctx *x, const yaml_node_t *n, const char *field, pl_stage_kind *kind)
{
    if (expect_type(x, n, YAML_SCALAR_NODE, field))
        return -1;
    for (int k = PL_STAGE_EMBED; k < PL_STAGE_KIND_COUNT_; k++)
        if (scalar_is(n, pl_stage_kind_name(k))) {
            *kind = (pl_stage_kind)k;
            if (k == PL_STAGE_DRAFT || k == PL_STAGE_MTP)
                break;
            return 0;
        }
    char shown[CFG_SHOW_MAX + 4];
    if (*kind == PL_STAGE_DRAFT || *kind == PL_STAGE_MTP)
        return fail_at(x, node_line(n), field,
                       "a %s stage is not listed in stages: configure it under 'speculative:'",
                       pl_stage_kind_name(*kind));
    if (scalar_is(n, "tokenize"))
        return fail_at(x, node_line(n), field,
                       "'tokenize' is not a stage: the driver tokenizes prompts (remove it)");
    return fail_at(x, node_line(n), field,
                   "unknown stage kind '%s' (expected embed, layers, head, sample)",
                   show_scalar(n, shown));
}

static int find_node(const cfg_ctx *x, const pl_config *c, const yaml_node_t *n, const char *field)
{
    char name[PL_NAME_MAX];
    if (read_string(x, n, field, name, sizeof name))
        return -1;
    for (int i = 0; i < c->n_nodes; i++)
        if (strcmp(c->nodes[i].name, name) == 0)
            return i;
    char known[320] = "";
    size_t used = 0;
    int listed = 0;
    for (; listed < c->n_nodes && used + PL_NAME_MAX + 8 < sizeof known; listed++)
        used += (size_t)snprintf(known + used, sizeof known - used, "%s%s", listed ? ", " : "",
                                 c->nodes[listed].name);
    if (listed < c->n_nodes)
        strcat(known, ", ...");
    char shown[CFG_SHOW_MAX + 4];
    fail_at(x, node_line(n), field, "node '%s' does not exist (nodes: %s)",
            show(name, strlen(name), shown), known);
    return -1;
}

static int parse_layers(const cfg_ctx *x, pl_stage *st, const yaml_node_t *n, const char *field)
{
    char shown[CFG_SHOW_MAX + 4];
    if (n->type == YAML_SCALAR_NODE) {
        if (scalar_is(n, "auto")) {
            st->layers_auto = true;
            return 0;
        }
        return fail_at(x, node_line(n), field, "expected [l0, l1] or auto, got '%s'", show_scalar(n, shown));
    }
    if (n->type != YAML_SEQUENCE_NODE)
        return fail_at(x, node_line(n), field, "expected [l0, l1] or auto, got %s", node_kind(n));
    long count = n->data.sequence.items.top - n->data.sequence.items.start;
    if (count != 2)
        return fail_at(x, node_line(n), field, "expected [l0, l1] (two numbers), got %ld items", count);
    int bounds[2];
    for (int k = 0; k < 2; k++) {
        char sub[100];
        snprintf(sub, sizeof sub, "%s[%d]", field, k);
        yaml_node_t *item = yaml_document_get_node(x->doc, n->data.sequence.items.start[k]);
        if (read_int_field(x, item, sub, 0, CFG_MAX_LAYER, &bounds[k]))
            return -1;
    }
    if (bounds[0] >= bounds[1])
        return fail_at(x, node_line(n), field, "l0 must be < l1 (got [%d, %d))", bounds[0], bounds[1]);
    st->l0 = bounds[0];
    st->l1 = bounds[1];
    return 0;
}

static int parse_stage(const cfg_ctx *x, pl_config *c, yaml_node_t *item, int i)
{
    char field[64], sub[80];
    snprintf(field, sizeof field, "stages[%d]", i);
    yaml_node_t *v[S_KEYS];
    if (expect_type(x, item, YAML_MAPPING_NODE, field) ||
        read_map(x, item, field, stage_keys, S_KEYS, v))
        return -1;
    pl_stage *st = &c->stages[i];
    memset(st, 0, sizeof *st);
    st->numa = -1;
    st->line = node_line(item);
    if (!v[S_KIND])
        return fail_at(x, st->line, field, "missing 'kind'");
    snprintf(sub, sizeof sub, "%s.kind", field);
    if (parse_kind(x, v[S_KIND], sub, &st->kind))
        return -1;
    if (v[S_NODE]) {
        snprintf(sub, sizeof sub, "%s.node", field);
        if ((st->node = find_node(x, c, v[S_NODE], sub)) < 0)
            return -1;
    }
    snprintf(sub, sizeof sub, "%s.layers", field);
    if (st->kind == PL_STAGE_LAYERS && !v[S_LAYERS])
        return fail_at(x, st->line, field, "a layers stage needs 'layers: [l0, l1]' or 'layers: auto'");
    if (st->kind != PL_STAGE_LAYERS && v[S_LAYERS])
        return fail_at(x, node_line(v[S_LAYERS]), sub, "only a layers stage has layers (this is a '%s' stage)",
                       pl_stage_kind_name(st->kind));
    if (v[S_LAYERS] && parse_layers(x, st, v[S_LAYERS], sub))
        return -1;
    snprintf(sub, sizeof sub, "%s.numa", field);
    if (read_int_field(x, v[S_NUMA], sub, 0, INT_MAX, &st->numa))
        return -1;
    snprintf(sub, sizeof sub, "%s.threads", field);
    return read_int_field(x, v[S_THREADS], sub, 1, 1024, &st->threads);
}

static int parse_stages(const cfg_ctx *x, pl_config *c, yaml_node_t *seq)
{
    if (expect_type(x, seq, YAML_SEQUENCE_NODE, "stages"))
        return -1;
    long n = seq->data.sequence.items.top - seq->data.sequence.items.start;
    if (n == 0)
        return fail_at(x, node_line(seq), "stages", "must list at least one stage");
    if (n > PL_MAX_STAGES)
        return fail_at(x, node_line(seq), "stages", "too many stages (%ld, at most %d)", n, PL_MAX_STAGES);
    for (int i = 0; i < n; i++) {
        yaml_node_t *item = yaml_document_get_node(x->doc, seq->data.sequence.items.start[i]);
        if (parse_stage(x, c, item, i))
            return -1;
    }
    c->n_stages = (int)n;
    return 0;
}

/* What may come next in a pipeline, given the kind of the stage before
 * (PL_STAGE_KIND_COUNT_ standing for "nothing yet"). */
static bool may_follow(int prev, pl_stage_kind next)
{
    switch (prev) {
    case PL_STAGE_KIND_COUNT_: return next == PL_STAGE_EMBED;
    case PL_STAGE_EMBED: return next == PL_STAGE_LAYERS;
    case PL_STAGE_LAYERS: return next == PL_STAGE_LAYERS || next == PL_STAGE_HEAD;
    case PL_STAGE_HEAD: return next == PL_STAGE_SAMPLE;
    default: return false;
    }
}

static const char *expected_after(int prev)
{
    switch (prev) {
    case PL_STAGE_EMBED: return "layers";
    case PL_STAGE_LAYERS: return "layers or head";
    case PL_STAGE_HEAD: return "sample";
    default: return "nothing: sample is the last stage";
    }
}

static const char *still_needed(int last)
{
    switch (last) {
    case PL_STAGE_EMBED: return "layers, head and sample";
    case PL_STAGE_LAYERS: return "head and sample";
    default: return "sample";
    }
}

static int check_order(const cfg_ctx *x, const pl_config *c)
{
    int first_of[PL_STAGE_KIND_COUNT_];
    for (int k = 0; k < PL_STAGE_KIND_COUNT_; k++)
        first_of[k] = -1;
    int prev = PL_STAGE_KIND_COUNT_;
    char field[64];
    for (int i = 0; i < c->n_stages; i++) {
        const pl_stage *st = &c->stages[i];
        snprintf(field, sizeof field, "stages[%d]", i);
        const char *name = pl_stage_kind_name(st->kind);
        if (st->kind != PL_STAGE_LAYERS && first_of[st->kind] >= 0)
            return fail_at(x, st->line, field,
                           "a second '%s' stage (the first is stages[%d]); a pipeline has exactly one",
                           name, first_of[st->kind]);
        if (!may_follow(prev, st->kind)) {
            if (prev == PL_STAGE_KIND_COUNT_)
                return fail_at(x, st->line, field, "a pipeline starts with embed, not '%s'", name);
            return fail_at(x, st->line, field, "'%s' cannot follow '%s' (expected %s)", name,
                           pl_stage_kind_name(prev), expected_after(prev));
        }
        if (first_of[st->kind] < 0)
            first_of[st->kind] = i;
        prev = st->kind;
    }
    if (prev != PL_STAGE_SAMPLE) {
        const pl_stage *last = &c->stages[c->n_stages - 1];
        return fail_at(x, last->line, "stages", "the pipeline ends with '%s' (stages[%d]) but still needs %s",
                       pl_stage_kind_name(prev), c->n_stages - 1, still_needed(prev));
    }
    return 0;
}

/* Logits over the full vocabulary (256K entries for Gemma) must never cross
 * the network, so the stage that makes them and the one that samples them
 * share a node. */
static int check_head_sample(const cfg_ctx *x, const pl_config *c)
{
    int head = -1, sample = -1;
    for (int i = 0; i < c->n_stages; i++) {
        if (c->stages[i].kind == PL_STAGE_HEAD)
            head = i;
        else if (c->stages[i].kind == PL_STAGE_SAMPLE)
            sample = i;
    }
    if (head < 0 || sample < 0 || c->stages[head].node == c->stages[sample].node)
        return 0;
    char field[64];
    snprintf(field, sizeof field, "stages[%d].node", sample);
    return fail_at(x, c->stages[sample].line, field,
                   "sample runs on node '%s' but head (stages[%d]) on node '%s'; they must share a node "
                   "(logits over the full vocabulary never cross the network)",
                   c->nodes[c->stages[sample].node].name, head, c->nodes[c->stages[head].node].name);
}

/* ---- sampling and limits ---- */

enum { P_TEMP, P_TOP_K, P_TOP_P, P_MIN_P, P_REPEAT, P_REPEAT_N, P_SEED, P_KEYS };
static const char *const sampling_keys[P_KEYS] = {
    "temperature", "top_k", "top_p", "min_p", "repeat_penalty", "repeat_last_n", "seed",
};

static int read_prob(const cfg_ctx *x, const yaml_node_t *n, const char *field, float *out,
                     bool (*ok)(float), const char *rule)
{
    float v;
    if (!n)
        return 0;
    if (read_float(x, n, field, &v))
        return -1;
    char shown[CFG_SHOW_MAX + 4];
    if (!ok(v))
        return fail_at(x, node_line(n), field, "%s is out of range (must be %s)", show_scalar(n, shown), rule);
    *out = v;
    return 0;
}

static bool non_negative(float v) { return v >= 0.0f; }
static bool positive(float v) { return v > 0.0f; }
static bool top_p_ok(float v) { return v > 0.0f && v <= 1.0f; }
static bool min_p_ok(float v) { return v >= 0.0f && v < 1.0f; }
static bool rejoin_ok(float v) { return v >= 0.0f && v <= 3600.0f; }

static int parse_sampling(const cfg_ctx *x, sl_sampling *s, yaml_node_t *map)
{
    yaml_node_t *v[P_KEYS];
    if (expect_type(x, map, YAML_MAPPING_NODE, "sampling") ||
        read_map(x, map, "sampling", sampling_keys, P_KEYS, v))
        return -1;
    if (read_prob(x, v[P_TEMP], "sampling.temperature", &s->temperature, non_negative, ">= 0") ||
        read_int_field(x, v[P_TOP_K], "sampling.top_k", 0, INT_MAX, &s->top_k) ||
        read_prob(x, v[P_TOP_P], "sampling.top_p", &s->top_p, top_p_ok, "in (0, 1]") ||
        read_prob(x, v[P_MIN_P], "sampling.min_p", &s->min_p, min_p_ok, "in [0, 1)") ||
        read_prob(x, v[P_REPEAT], "sampling.repeat_penalty", &s->repeat_penalty, positive, "> 0") ||
        read_int_field(x, v[P_REPEAT_N], "sampling.repeat_last_n", 0, 1 << 20, &s->repeat_last_n))
        return -1;
    return v[P_SEED] ? read_u64(x, v[P_SEED], "sampling.seed", &s->seed) : 0;
}

enum { L_SEQS, L_CONTEXT, L_BATCH, L_KV_TYPE, L_FRAME, L_MESSAGE, L_REQUESTS, L_PLE, L_PREFIX, L_KEYS };
static const char *const limit_keys[L_KEYS] = {"max_sequences", "context", "max_batch_tokens",
                                               "kv_type", "max_frame_bytes", "max_message_bytes",
                                               "max_requests", "ple", "prefix_cache"};

void pl_limits_default(pl_limits *l)
{
    l->max_sequences = 8;
    l->context = 2048;
    l->max_batch_tokens = 512;
    l->kv_type = SL_TYPE_F32;
    l->max_frame_bytes = 256 << 20;
    l->max_message_bytes = 512 << 20;
    l->max_requests = 4096;
    l->ple = PLE_AT_LAYERS;
    l->prefix_cache = true;
}

static int read_ple(const cfg_ctx *x, const yaml_node_t *n, int *out)
{
    char name[16];
    if (!n)
        return 0;
    if (read_string(x, n, "limits.ple", name, sizeof name))
        return -1;
    if (strcmp(name, "local") == 0)
        *out = PLE_AT_LAYERS;
    else if (strcmp(name, "embed") == 0)
        *out = PLE_AT_EMBED;
    else
        return fail_at(x, node_line(n), "limits.ple", "'%s' is not one of local, embed", name);
    return 0;
}

static int read_kv_type(const cfg_ctx *x, const yaml_node_t *n, int *out)
{
    char name[16];
    if (!n)
        return 0;
    if (read_string(x, n, "limits.kv_type", name, sizeof name))
        return -1;
    int t = sl_type_from_name(name);
    if (t != SL_TYPE_F32 && t != SL_TYPE_F16 && t != SL_TYPE_BF16 && t != SL_TYPE_Q8_0)
        return fail_at(x, node_line(n), "limits.kv_type", "'%s' is not one of f32, f16, bf16, q8_0",
                       name);
    *out = t;
    return 0;
}

/* true, false, or full (a cache of every position for sliding-window
 * layers too) */
static int read_prefix_cache(const cfg_ctx *x, const yaml_node_t *n, pl_limits *l)
{
    if (!n)
        return 0;
    if (expect_plain(x, n, "limits.prefix_cache", "true, false or full"))
        return -1;
    l->prefix_full = scalar_is(n, "full");
    if (l->prefix_full || scalar_is(n, "true") || scalar_is(n, "yes")) {
        l->prefix_cache = true;
        return 0;
    }
    if (scalar_is(n, "false") || scalar_is(n, "no")) {
        l->prefix_cache = false;
        return 0;
    }
    char shown[CFG_SHOW_MAX + 4];
    return fail_at(x, node_line(n), "limits.prefix_cache", "expected true, false or full, got '%s'",
                   show_scalar(n, shown));
}

static int parse_limits(const cfg_ctx *x, pl_limits *l, yaml_node_t *map)
{
    yaml_node_t *v[L_KEYS];
    if (expect_type(x, map, YAML_MAPPING_NODE, "limits") ||
        read_map(x, map, "limits", limit_keys, L_KEYS, v))
        return -1;
    return read_int_field(x, v[L_SEQS], "limits.max_sequences", 1, 4096, &l->max_sequences) ||
           read_int_field(x, v[L_CONTEXT], "limits.context", 16, 1 << 20, &l->context) ||
           read_int_field(x, v[L_BATCH], "limits.max_batch_tokens", 1, 65536, &l->max_batch_tokens) ||
           read_kv_type(x, v[L_KV_TYPE], &l->kv_type) ||
           read_int_field(x, v[L_FRAME], "limits.max_frame_bytes", 1024, 1 << 30, &l->max_frame_bytes) ||
           read_int_field(x, v[L_MESSAGE], "limits.max_message_bytes", 1024, 1 << 30, &l->max_message_bytes) ||
           read_int_field(x, v[L_REQUESTS], "limits.max_requests", 1, 1 << 20, &l->max_requests) ||
           read_ple(x, v[L_PLE], &l->ple) ||
           read_prefix_cache(x, v[L_PREFIX], l) ? -1 : 0;
}

/* ---- failure handling ---- */

enum { F_RETRIES, F_REJOIN, F_KEYS };
static const char *const failure_keys[F_KEYS] = {"retries", "rejoin_timeout"};

static void failure_defaults(pl_failure *f)
{
    f->retries = 0;
    f->rejoin_timeout_s = 0.0f;
}

static int parse_failure(const cfg_ctx *x, pl_failure *f, yaml_node_t *map)
{
    yaml_node_t *v[F_KEYS];
    if (expect_type(x, map, YAML_MAPPING_NODE, "failure") ||
        read_map(x, map, "failure", failure_keys, F_KEYS, v) ||
        read_int_field(x, v[F_RETRIES], "failure.retries", 0, 1, &f->retries) ||
        read_prob(x, v[F_REJOIN], "failure.rejoin_timeout", &f->rejoin_timeout_s, rejoin_ok, "in [0, 3600] s"))
        return -1;
    /* a retry waits for the worker to come back: give it a moment unless told */
    if (f->retries && !v[F_REJOIN])
        f->rejoin_timeout_s = PL_REJOIN_DEFAULT_S;
    return 0;
}

/* ---- speculative decoding ---- */

enum { SP_DRAFT, SP_K, SP_K_MAX, SP_PLACEMENT, SP_PIPELINED, SP_KEYS };
static const char *const spec_keys[SP_KEYS] = {"draft", "k", "k_max", "placement", "pipelined"};
enum { PM_NODE, PM_NUMA, PM_THREADS, PM_KEYS };
static const char *const placement_keys[PM_KEYS] = {"node", "numa", "threads"};

#define SPEC_K_DEFAULT 4
#define SPEC_K_AUTO_MAX 8
#define SPEC_K_LIMIT 32 /* SL_SPEC_K_MAX */

static int parse_placement(const cfg_ctx *x, pl_config *c, pl_stage *st, yaml_node_t *map)
{
    yaml_node_t *v[PM_KEYS];
    if (expect_type(x, map, YAML_MAPPING_NODE, "speculative.placement") ||
        read_map(x, map, "speculative.placement", placement_keys, PM_KEYS, v))
        return -1;
    if (v[PM_NODE] && (st->node = find_node(x, c, v[PM_NODE], "speculative.placement.node")) < 0)
        return -1;
    return read_int_field(x, v[PM_NUMA], "speculative.placement.numa", 0, INT_MAX, &st->numa) ||
           read_int_field(x, v[PM_THREADS], "speculative.placement.threads", 1, 1024, &st->threads)
               ? -1 : 0;
}

/* Whether a draft file is a Gemma 4 assistant, by its GGUF architecture. A
 * file this process cannot read is taken for a draft model: its stage,
 * wherever it runs, says what is wrong with it. */
static bool draft_is_assistant(const char *path)
{
    gguf_file *f;
    sl_err ignore;
    if (gguf_open(&f, path, &ignore))
        return false;
    char *arch = NULL;
    bool yes = gguf_get_str(f, "general.architecture", &arch, &ignore) == 0 &&
               (strcmp(arch, "gemma4-assistant") == 0 || strcmp(arch, "gemma4_mtp") == 0);
    free(arch);
    gguf_close(f);
    return yes;
}

/* The stage speculative decoding adds (c has room): a draft stage in front
 * of the others on the first stage's node, or an assistant's mtp stage
 * after sample on sample's node. */
static pl_stage *add_spec_stage(pl_config *c)
{
    pl_stage *st;
    if (c->spec.mtp) {
        st = &c->stages[c->n_stages];
        memset(st, 0, sizeof *st);
        st->node = c->n_stages > 0 ? c->stages[c->n_stages - 1].node : 0;
        st->kind = PL_STAGE_MTP;
    } else {
        memmove(c->stages + 1, c->stages, (size_t)c->n_stages * sizeof c->stages[0]);
        st = &c->stages[0];
        memset(st, 0, sizeof *st);
        st->node = c->n_stages > 0 ? c->stages[1].node : 0;
        st->kind = PL_STAGE_DRAFT;
    }
    c->n_stages++;
    st->numa = -1;
    return st;
}

/* Reads `speculative:` and puts its draft stage in front of the others. */
static int parse_speculative(const cfg_ctx *x, pl_config *c, yaml_node_t *map)
{
    yaml_node_t *v[SP_KEYS];
    if (expect_type(x, map, YAML_MAPPING_NODE, "speculative") ||
        read_map(x, map, "speculative", spec_keys, SP_KEYS, v))
        return -1;
    pl_spec *sp = &c->spec;
    sp->on = true;
    sp->line = node_line(map);
    sp->k = SPEC_K_DEFAULT;
    if (!v[SP_DRAFT])
        return fail_at(x, sp->line, "speculative", "missing 'draft' (a draft model file, or prompt-lookup)");
    if (v[SP_DRAFT]->type == YAML_SCALAR_NODE && scalar_is(v[SP_DRAFT], "prompt-lookup"))
        sp->prompt_lookup = true;
    else if (read_path(x, v[SP_DRAFT], "speculative.draft", c->draft))
        return -1;
    int k_max = SPEC_K_AUTO_MAX;
    if (read_int_field(x, v[SP_K_MAX], "speculative.k_max", 1, SPEC_K_LIMIT, &k_max))
        return -1;
    if (v[SP_K] && v[SP_K]->type == YAML_SCALAR_NODE && scalar_is(v[SP_K], "auto")) {
        sp->auto_k = true;
        sp->k = k_max;
    } else if (v[SP_K_MAX]) {
        return fail_at(x, node_line(v[SP_K_MAX]), "speculative.k_max", "k_max applies only with 'k: auto'");
    } else if (read_int_field(x, v[SP_K], "speculative.k", 0, SPEC_K_LIMIT, &sp->k)) {
        return -1;
    }
    if (c->n_stages >= PL_MAX_STAGES)
        return fail_at(x, sp->line, "speculative", "no room for a draft stage (at most %d stages)",
                       PL_MAX_STAGES);
    sp->mtp = !sp->prompt_lookup && draft_is_assistant(c->draft);
    pl_stage *st = add_spec_stage(c);
    st->line = sp->line;
    if (v[SP_PLACEMENT]) {
        if (parse_placement(x, c, st, v[SP_PLACEMENT]))
            return -1;
        sp->placed = true;
    }
    sp->pipelined = sp->placed && !sp->prompt_lookup && !sp->mtp;
    if (v[SP_PIPELINED] && read_bool(x, v[SP_PIPELINED], "speculative.pipelined", &sp->pipelined))
        return -1;
    if (sp->pipelined && sp->mtp)
        return fail_at(x, node_line(v[SP_PIPELINED]), "speculative.pipelined",
                       "a Gemma 4 assistant drafts after each verification; it does not draft ahead");
    if (sp->pipelined && sp->prompt_lookup)
        return fail_at(x, node_line(v[SP_PIPELINED]), "speculative.pipelined",
                       "prompt lookup drafts for free; there is nothing to pipeline");
    return 0;
}

int pl_config_add_speculative(pl_config *c, const char *draft, int k, bool auto_k, int threads,
                              sl_err *err)
{
    if (c->spec.on)
        return sl_fail(err, "%s: already has a speculative section", c->path[0] ? c->path : "config");
    if (c->n_stages >= PL_MAX_STAGES)
        return sl_fail(err, "no room for a draft stage (at most %d stages)", PL_MAX_STAGES);
    if (k < 0 || k > SPEC_K_LIMIT)
        return sl_fail(err, "speculative k = %d outside 0..%d", k, SPEC_K_LIMIT);
    pl_spec *sp = &c->spec;
    memset(sp, 0, sizeof *sp);
    sp->on = true;
    sp->prompt_lookup = strcmp(draft, "prompt-lookup") == 0;
    if (!sp->prompt_lookup)
        snprintf(c->draft, sizeof c->draft, "%s", draft);
    sp->k = k;
    sp->auto_k = auto_k;
    sp->placed = threads > 0;
    sp->mtp = !sp->prompt_lookup && draft_is_assistant(c->draft);
    sp->pipelined = sp->placed && !sp->prompt_lookup && !sp->mtp;
    pl_stage *st = add_spec_stage(c);
    st->threads = threads;
    return 0;
}

/* ---- the document ---- */

enum { T_MODEL, T_NODES, T_STAGES, T_SAMPLING, T_LIMITS, T_SPEC, T_INSECURE, T_FAILURE, T_KEYS };
static const char *const top_keys[T_KEYS] = {"model", "nodes", "stages", "sampling", "limits",
                                             "speculative", "insecure", "failure"};

static int parse_root(const cfg_ctx *x, pl_config *c, yaml_node_t *root)
{
    if (!root)
        return fail_at(x, 1, NULL, "empty config (expected a mapping with model and stages)");
    if (root->type != YAML_MAPPING_NODE)
        return fail_at(x, node_line(root), NULL, "expected a mapping with model and stages, got %s",
                       node_kind(root));
    yaml_node_t *v[T_KEYS];
    if (read_map(x, root, NULL, top_keys, T_KEYS, v))
        return -1;
    if (!v[T_MODEL])
        return fail_at(x, node_line(root), NULL, "missing required key 'model'");
    if (!v[T_STAGES])
        return fail_at(x, node_line(root), NULL, "missing required key 'stages'");
    if (read_path(x, v[T_MODEL], "model", c->model))
        return -1;
    if (v[T_NODES]) {
        if (parse_nodes(x, c, v[T_NODES]))
            return -1;
    } else {
        set_local_node(c);
    }
    if (parse_stages(x, c, v[T_STAGES]) || check_order(x, c) || check_head_sample(x, c))
        return -1;
    sl_sampling_defaults(&c->sampling);
    pl_limits_default(&c->limits);
    if (v[T_SAMPLING] && parse_sampling(x, &c->sampling, v[T_SAMPLING]))
        return -1;
    if (v[T_INSECURE] && read_bool(x, v[T_INSECURE], "insecure", &c->insecure))
        return -1;
    if (v[T_LIMITS] && parse_limits(x, &c->limits, v[T_LIMITS]))
        return -1;
    failure_defaults(&c->failure);
    if (v[T_FAILURE] && parse_failure(x, &c->failure, v[T_FAILURE]))
        return -1;
    if (v[T_SPEC] && parse_speculative(x, c, v[T_SPEC]))
        return -1;
    return check_cores(x, c);
}

static int line_of_offset(const char *text, size_t len, size_t offset)
{
    int line = 1;
    for (size_t i = 0; i < offset && i < len; i++)
        line += text[i] == '\n';
    return line;
}

/* True when line (1-based) of text holds a public_key field. */
static bool line_has_public_key(const char *text, size_t len, int line)
{
    size_t i = 0;
    for (int l = 1; l < line && i < len; i++)
        l += text[i] == '\n';
    size_t end = i;
    while (end < len && text[end] != '\n')
        end++;
    for (; i + 10 <= end; i++)
        if (memcmp(text + i, "public_key", 10) == 0)
            return true;
    return false;
}

static int yaml_failure(const cfg_ctx *x, const yaml_parser_t *p, const char *text, size_t len)
{
    const char *problem = p->problem ? p->problem : "unreadable YAML";
    if (p->error == YAML_READER_ERROR)
        return fail_at(x, line_of_offset(text, len, p->problem_offset), NULL, "YAML error: %s", problem);
    int line = (int)p->problem_mark.line + 1;
    const char *hint = line_has_public_key(text, len, line) ||
                               (p->context && line_has_public_key(text, len, (int)p->context_mark.line + 1))
                           ? QUOTE_KEY_HINT
                           : "";
    if (p->context)
        return fail_at(x, line, NULL, "YAML syntax error: %s (%s at line %d)%s", problem, p->context,
                       (int)p->context_mark.line + 1, hint);
    return fail_at(x, line, NULL, "YAML syntax error: %s%s", problem, hint);
}

static const yaml_char_t *event_anchor(const yaml_event_t *ev)
{
    switch (ev->type) {
    case YAML_SCALAR_EVENT: return ev->data.scalar.anchor;
    case YAML_SEQUENCE_START_EVENT: return ev->data.sequence_start.anchor;
    case YAML_MAPPING_START_EVENT: return ev->data.mapping_start.anchor;
    default: return NULL;
    }
}

/* Rejects, before any tree is built, what the schema never needs and what
 * could make a small file expensive. */
static int screen_events(const cfg_ctx *x, const char *text, size_t len)
{
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p))
        return sl_fail(x->err, "%s: out of memory starting the YAML parser", x->name);
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    int rc = 0, depth = 0, documents = 0;
    char shown[CFG_SHOW_MAX + 4];
    for (bool done = false; !done && rc == 0;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            rc = yaml_failure(x, &p, text, len);
            break;
        }
        int line = (int)ev.start_mark.line + 1;
        const yaml_char_t *anchor = event_anchor(&ev);
        const char *hint = line_has_public_key(text, len, line) ? QUOTE_KEY_HINT : "";
        if (ev.type == YAML_ALIAS_EVENT)
            rc = fail_at(x, line, NULL, "YAML aliases (*%s) are not supported in configs%s",
                         show(ev.data.alias.anchor, strlen((char *)ev.data.alias.anchor), shown), hint);
        else if (anchor)
            rc = fail_at(x, line, NULL, "YAML anchors (&%s) are not supported in configs%s",
                         show(anchor, strlen((const char *)anchor), shown), hint);
        else if (ev.type == YAML_DOCUMENT_START_EVENT && ++documents > 1)
            rc = fail_at(x, line, NULL, "a config is one YAML document; found a second one");
        else if ((ev.type == YAML_SEQUENCE_START_EVENT || ev.type == YAML_MAPPING_START_EVENT) &&
                 ++depth > CFG_MAX_DEPTH)
            rc = fail_at(x, line, NULL, "nested more than %d levels deep", CFG_MAX_DEPTH);
        else if (ev.type == YAML_SEQUENCE_END_EVENT || ev.type == YAML_MAPPING_END_EVENT)
            depth--;
        done = ev.type == YAML_STREAM_END_EVENT;
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    return rc;
}

static int set_dir(cfg_ctx *x, const char *name)
{
    const char *slash = name ? strrchr(name, '/') : NULL;
    size_t n = slash ? (size_t)(slash - name) + 1 : 0;
    if (n >= sizeof x->dir)
        return sl_fail(x->err, "%s: the config's directory name is too long", x->name);
    if (n)
        memcpy(x->dir, name, n);
    x->dir[n] = '\0';
    return 0;
}

int pl_config_parse(pl_config *c, const char *text, size_t len, const char *name, sl_err *err)
{
    cfg_ctx x = {.name = name ? name : "<config>", .err = err};
    memset(c, 0, sizeof *c);
    snprintf(c->path, sizeof c->path, "%s", x.name);
    if (len > CFG_MAX_BYTES)
        return sl_fail(err, "%s: config is too large (%zu bytes, at most %d)", x.name, len, CFG_MAX_BYTES);
    if (set_dir(&x, name) || screen_events(&x, text, len))
        return -1;
    yaml_parser_t p;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&p))
        return sl_fail(err, "%s: out of memory starting the YAML parser", x.name);
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    int rc;
    if (!yaml_parser_load(&p, &doc)) {
        rc = yaml_failure(&x, &p, text, len);
    } else {
        x.doc = &doc;
        rc = parse_root(&x, c, yaml_document_get_root_node(&doc));
        yaml_document_delete(&doc);
    }
    yaml_parser_delete(&p);
    return rc;
}

int pl_config_load(pl_config *c, const char *path, sl_err *err)
{
    memset(c, 0, sizeof *c);
    FILE *f = fopen(path, "rb");
    if (!f)
        return sl_fail(err, "%s: cannot open config: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return sl_fail(err, "%s: not a regular file", path);
    }
    if (st.st_size > CFG_MAX_BYTES) {
        fclose(f);
        return sl_fail(err, "%s: config is too large (%lld bytes, at most %d)", path,
                       (long long)st.st_size, CFG_MAX_BYTES);
    }
    char *text = malloc((size_t)st.st_size + 1);
    if (!text) {
        fclose(f);
        return sl_fail(err, "%s: out of memory reading the config", path);
    }
    size_t len = fread(text, 1, (size_t)st.st_size, f);
    int read_failed = ferror(f);
    fclose(f);
    int rc = read_failed ? sl_fail(err, "%s: cannot read config", path)
                         : pl_config_parse(c, text, len, path, err);
    free(text);
    return rc;
}

/* ---- layer ranges ---- */

int pl_config_check_layers(const pl_config *c, int n_layer, sl_err *err)
{
    const char *name = c->path[0] ? c->path : "<config>";
    cfg_ctx x = {.name = name, .err = err};
    if (n_layer <= 0)
        return sl_fail(err, "%s: the model has no layers (n_layer = %d)", name, n_layer);
    bool any_auto = false;
    for (int i = 0; i < c->n_stages; i++)
        any_auto |= c->stages[i].kind == PL_STAGE_LAYERS && c->stages[i].layers_auto;
    int covered = 0, prev = -1, last_line = 1;
    char field[64];
    for (int i = 0; i < c->n_stages; i++) {
        const pl_stage *st = &c->stages[i];
        if (st->kind != PL_STAGE_LAYERS || st->layers_auto)
            continue;
        snprintf(field, sizeof field, "stages[%d].layers", i);
        last_line = st->line;
        if (st->l0 < 0 || st->l0 >= st->l1)
            return fail_at(&x, st->line, field, "l0 must be < l1 and l0 >= 0 (got [%d, %d))", st->l0, st->l1);
        if (st->l1 > n_layer)
            return fail_at(&x, st->line, field, "[%d, %d) is past the model's %d layers", st->l0, st->l1,
                           n_layer);
        if (prev >= 0 && st->l0 < covered)
            return fail_at(&x, st->line, field, "[%d, %d) overlaps stages[%d].layers [%d, %d)", st->l0,
                           st->l1, prev, c->stages[prev].l0, c->stages[prev].l1);
        if (!any_auto && st->l0 > covered)
            return fail_at(&x, st->line, NULL, "layers [%d, %d) are not covered by any stage", covered, st->l0);
        covered = st->l1;
        prev = i;
    }
    if (!any_auto && covered < n_layer)
        return fail_at(&x, last_line, NULL, "layers [%d, %d) are not covered by any stage", covered, n_layer);
    return 0;
}

/* ---- keys ---- */

static bool is_tcp(const char *address)
{
    return strncmp(address, "tcp://", 6) == 0;
}

static int first_tcp_node(const pl_config *c)
{
    for (int i = 0; i < c->n_nodes; i++)
        if (is_tcp(c->nodes[i].address))
            return i;
    return -1;
}

bool pl_config_secure(const pl_config *c)
{
    return !c->insecure && first_tcp_node(c) >= 0;
}

static int check_insecure(const cfg_ctx *x, const pl_config *c)
{
    char field[64];
    for (int i = 0; i < c->n_nodes; i++) {
        const pl_node *n = &c->nodes[i];
        if (!n->key[0] && !n->public_key[0])
            continue;
        snprintf(field, sizeof field, "nodes[%d].%s", i, n->key[0] ? "key" : "public_key");
        return fail_at(x, n->line, field, "the config says `insecure: true` but names keys for node '%s': "
                       "drop the keys for plain TCP, or `insecure` for CURVE", n->name);
    }
    return 0;
}

int pl_config_check_security(const pl_config *c, sl_err *err)
{
    cfg_ctx x = {.name = c->path[0] ? c->path : "<config>", .err = err};
    char field[64];
    if (c->insecure)
        return check_insecure(&x, c);
    int tcp = first_tcp_node(c);
    if (tcp < 0)
        return 0;
    const pl_node *n0 = &c->nodes[0];
    if (!n0->key[0])
        return fail_at(&x, n0->line, "nodes[0]",
                       "node '%s' (the coordinator) needs its CURVE secret key, `key: FILE` from `sluice "
                       "keygen`, because node '%s' uses tcp:// (or set `insecure: true` for plain TCP)",
                       n0->name, c->nodes[tcp].name);
    for (int i = 1; i < c->n_nodes; i++) {
        const pl_node *n = &c->nodes[i];
        snprintf(field, sizeof field, "nodes[%d]", i);
        if (n->key[0] && !n->spawn)
            return fail_at(&x, n->line, field, "only the coordinator and spawned nodes name a secret `key` "
                           "here; node '%s' gets its own with `sluice worker --key`", n->name);
        if (!is_tcp(n->address))
            continue;
        /* a spawned node's public key follows from the secret one we hand it */
        if (n->spawn && !n->key[0])
            return fail_at(&x, n->line, field, "node '%s' is spawned on tcp:// and needs its secret `key: "
                           "FILE` for the worker the coordinator starts", n->name);
        if (!n->spawn && !n->public_key[0])
            return fail_at(&x, n->line, field, "node '%s' (%s) needs `public_key:` (its .pub file from "
                           "`sluice keygen`, or the 40 characters inline), or set `insecure: true` for "
                           "plain TCP", n->name, n->address);
    }
    /* a spawned ipc:// node whose stage sends to a tcp:// node is a CURVE
     * client there: it needs keys too */
    for (int i = 0; i < c->n_stages; i++) {
        int from = c->stages[i].node, to = i + 1 < c->n_stages ? c->stages[i + 1].node : 0;
        const pl_node *n = &c->nodes[from];
        if (from == to || from == 0 || !n->spawn || n->key[0] || !is_tcp(c->nodes[to].address))
            continue;
        snprintf(field, sizeof field, "nodes[%d]", from);
        return fail_at(&x, n->line, field, "node '%s' is spawned and its stage %d sends to tcp:// node '%s': it "
                       "needs its secret `key: FILE` too", n->name, i, c->nodes[to].name);
    }
    return 0;
}

/* ---- the default pipeline ---- */

void pl_config_default(pl_config *c, const char *model, int n_layer)
{
    memset(c, 0, sizeof *c);
    snprintf(c->model, sizeof c->model, "%s", model);
    set_local_node(c);
    static const pl_stage_kind kinds[] = {PL_STAGE_EMBED, PL_STAGE_LAYERS, PL_STAGE_HEAD, PL_STAGE_SAMPLE};
    for (int i = 0; i < 4; i++) {
        pl_stage *st = &c->stages[i];
        st->kind = kinds[i];
        st->numa = -1;
        if (st->kind == PL_STAGE_LAYERS)
            st->l1 = n_layer;
    }
    c->n_stages = 4;
    sl_sampling_defaults(&c->sampling);
    pl_limits_default(&c->limits);
    failure_defaults(&c->failure);
}

/* ---- writing ---- */

static int emit(yaml_emitter_t *e, yaml_event_t *ev)
{
    return yaml_emitter_emit(e, ev) ? 0 : -1;
}

/* Plain when the reader would take the text back unchanged, quoted otherwise
 * (a name "null", a path with ": " or a leading '-'). */
static bool plain_safe(const char *s)
{
    static const char *const words[] = {"~", "null", "Null", "NULL"};
    if (!s[0])
        return false;
    for (int i = 0; i < 4; i++)
        if (strcmp(s, words[i]) == 0)
            return false;
    if (!(name_char_ok(s[0]) || s[0] == '/') || s[0] == '-')
        return false;
    for (const char *p = s; *p; p++)
        if (!(name_char_ok(*p) || *p == '/' || *p == ':' || *p == '+'))
            return false;
    return true;
}

static int emit_scalar(yaml_emitter_t *e, const char *s, yaml_scalar_style_t style)
{
    yaml_event_t ev;
    if (!yaml_scalar_event_initialize(&ev, NULL, NULL, (const yaml_char_t *)s, (int)strlen(s), 1, 1, style))
        return -1;
    return emit(e, &ev);
}

static int emit_string(yaml_emitter_t *e, const char *s)
{
    return emit_scalar(e, s, plain_safe(s) ? YAML_PLAIN_SCALAR_STYLE : YAML_DOUBLE_QUOTED_SCALAR_STYLE);
}

__attribute__((format(printf, 3, 4)))
static int emit_pair(yaml_emitter_t *e, const char *key, const char *fmt, ...)
{
    char value[64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(value, sizeof value, fmt, ap);
    va_end(ap);
    return emit_scalar(e, key, YAML_PLAIN_SCALAR_STYLE) || emit_scalar(e, value, YAML_PLAIN_SCALAR_STYLE);
}

static int emit_string_pair(yaml_emitter_t *e, const char *key, const char *value)
{
    return emit_scalar(e, key, YAML_PLAIN_SCALAR_STYLE) || emit_string(e, value);
}

static int emit_map_start(yaml_emitter_t *e, yaml_mapping_style_t style)
{
    yaml_event_t ev;
    return yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, style) ? emit(e, &ev) : -1;
}

static int emit_map_end(yaml_emitter_t *e)
{
    yaml_event_t ev;
    return yaml_mapping_end_event_initialize(&ev) ? emit(e, &ev) : -1;
}

static int emit_seq_start(yaml_emitter_t *e, yaml_sequence_style_t style)
{
    yaml_event_t ev;
    return yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1, style) ? emit(e, &ev) : -1;
}

static int emit_seq_end(yaml_emitter_t *e)
{
    yaml_event_t ev;
    return yaml_sequence_end_event_initialize(&ev) ? emit(e, &ev) : -1;
}

/* A stored path is relative to the working directory; the reader resolves
 * it against the written file's directory, so it goes out absolute unless
 * the two are the same. */
static int path_for(const char *stored, const char *out_path, char dst[PL_PATH_MAX * 2])
{
    if (stored[0] == '/' || !strchr(out_path, '/')) {
        snprintf(dst, PL_PATH_MAX * 2, "%s", stored);
        return 0;
    }
    char cwd[PL_PATH_MAX];
    if (!getcwd(cwd, sizeof cwd))
        return -1;
    snprintf(dst, PL_PATH_MAX * 2, "%s/%s", cwd, stored);
    return 0;
}

/* `cores: [0, '2-3']`: the kernel's list format, one item per run */
static int emit_cores(yaml_emitter_t *e, const sl_cpuset *cores)
{
    char list[4096];
    sl_cpuset_format(cores, list, sizeof list);
    if (emit_scalar(e, "cores", YAML_PLAIN_SCALAR_STYLE) || emit_seq_start(e, YAML_FLOW_SEQUENCE_STYLE))
        return -1;
    char *rest = NULL;
    for (char *item = strtok_r(list, ",", &rest); item; item = strtok_r(NULL, ",", &rest))
        if (emit_scalar(e, item, strchr(item, '-') ? YAML_SINGLE_QUOTED_SCALAR_STYLE : YAML_PLAIN_SCALAR_STYLE))
            return -1;
    return emit_seq_end(e);
}

static int emit_node(yaml_emitter_t *e, const pl_node *n, const char *out_path)
{
    char path[PL_PATH_MAX * 2];
    if (emit_map_start(e, YAML_BLOCK_MAPPING_STYLE) || emit_string_pair(e, "name", n->name))
        return -1;
    if (n->address[0] && emit_string_pair(e, "address", n->address))
        return -1;
    if (n->spawn && emit_pair(e, "spawn", "true"))
        return -1;
    if (n->public_key[0]) {
        /* inline keys go out inline: Z85 has ':', '#' and quotes, so always quoted */
        if (sec_is_key_text(n->public_key)
                ? emit_scalar(e, "public_key", YAML_PLAIN_SCALAR_STYLE) ||
                      emit_scalar(e, n->public_key, YAML_DOUBLE_QUOTED_SCALAR_STYLE)
                : path_for(n->public_key, out_path, path) || emit_string_pair(e, "public_key", path))
            return -1;
    }
    if (n->key[0] && (path_for(n->key, out_path, path) || emit_string_pair(e, "key", path)))
        return -1;
    if (sl_cpuset_count(&n->cores) && emit_cores(e, &n->cores))
        return -1;
    return emit_map_end(e);
}

static int emit_int(yaml_emitter_t *e, long long v)
{
    char text[32];
    snprintf(text, sizeof text, "%lld", v);
    return emit_scalar(e, text, YAML_PLAIN_SCALAR_STYLE);
}

static int emit_layers(yaml_emitter_t *e, const pl_stage *st)
{
    if (st->layers_auto)
        return emit_pair(e, "layers", "auto");
    return emit_scalar(e, "layers", YAML_PLAIN_SCALAR_STYLE) || emit_seq_start(e, YAML_FLOW_SEQUENCE_STYLE) ||
           emit_int(e, st->l0) || emit_int(e, st->l1) || emit_seq_end(e) ? -1 : 0;
}

static int emit_stage(yaml_emitter_t *e, const pl_config *c, const pl_stage *st)
{
    if (emit_map_start(e, YAML_BLOCK_MAPPING_STYLE) ||
        emit_string_pair(e, "kind", pl_stage_kind_name(st->kind)))
        return -1;
    if (st->node >= 0 && st->node < c->n_nodes && emit_string_pair(e, "node", c->nodes[st->node].name))
        return -1;
    if (st->kind == PL_STAGE_LAYERS && emit_layers(e, st))
        return -1;
    if (st->numa >= 0 && emit_pair(e, "numa", "%d", st->numa))
        return -1;
    if (st->threads > 0 && emit_pair(e, "threads", "%d", st->threads))
        return -1;
    return emit_map_end(e);
}

/* Floats with 9 significant digits read back to the same float. */
static int emit_sampling(yaml_emitter_t *e, const sl_sampling *s)
{
    return emit_scalar(e, "sampling", YAML_PLAIN_SCALAR_STYLE) || emit_map_start(e, YAML_BLOCK_MAPPING_STYLE) ||
           emit_pair(e, "temperature", "%.9g", (double)s->temperature) ||
           emit_pair(e, "top_k", "%d", s->top_k) ||
           emit_pair(e, "top_p", "%.9g", (double)s->top_p) ||
           emit_pair(e, "min_p", "%.9g", (double)s->min_p) ||
           emit_pair(e, "repeat_penalty", "%.9g", (double)s->repeat_penalty) ||
           emit_pair(e, "repeat_last_n", "%d", s->repeat_last_n) ||
           emit_pair(e, "seed", "%" PRIu64, s->seed) || emit_map_end(e) ? -1 : 0;
}

static int emit_limits(yaml_emitter_t *e, const pl_limits *l)
{
    return emit_scalar(e, "limits", YAML_PLAIN_SCALAR_STYLE) || emit_map_start(e, YAML_BLOCK_MAPPING_STYLE) ||
           emit_pair(e, "max_sequences", "%d", l->max_sequences) ||
           emit_pair(e, "context", "%d", l->context) ||
           emit_pair(e, "max_batch_tokens", "%d", l->max_batch_tokens) ||
           emit_pair(e, "kv_type", "%s", sl_type_name((sl_type)l->kv_type)) ||
           emit_pair(e, "max_frame_bytes", "%d", l->max_frame_bytes) ||
           emit_pair(e, "max_message_bytes", "%d", l->max_message_bytes) ||
           emit_pair(e, "max_requests", "%d", l->max_requests) ||
           emit_pair(e, "ple", "%s", l->ple == PLE_AT_EMBED ? "embed" : "local") ||
           (!l->prefix_cache && emit_pair(e, "prefix_cache", "%s", "false")) ||
           (l->prefix_cache && l->prefix_full && emit_pair(e, "prefix_cache", "%s", "full")) ||
           emit_map_end(e) ? -1 : 0;
}

static int emit_failure(yaml_emitter_t *e, const pl_failure *f)
{
    if (f->retries == 0 && f->rejoin_timeout_s == 0.0f)
        return 0;
    return emit_scalar(e, "failure", YAML_PLAIN_SCALAR_STYLE) || emit_map_start(e, YAML_BLOCK_MAPPING_STYLE) ||
           emit_pair(e, "retries", "%d", f->retries) ||
           emit_pair(e, "rejoin_timeout", "%.9g", (double)f->rejoin_timeout_s) || emit_map_end(e) ? -1 : 0;
}

static int emit_speculative(yaml_emitter_t *e, const pl_config *c, const char *out_path)
{
    const pl_spec *sp = &c->spec;
    if (!sp->on)
        return 0;
    char path[PL_PATH_MAX * 2];
    if (emit_scalar(e, "speculative", YAML_PLAIN_SCALAR_STYLE) || emit_map_start(e, YAML_BLOCK_MAPPING_STYLE))
        return -1;
    if (sp->prompt_lookup ? emit_string_pair(e, "draft", "prompt-lookup")
                          : path_for(c->draft, out_path, path) || emit_string_pair(e, "draft", path))
        return -1;
    if (sp->auto_k ? emit_string_pair(e, "k", "auto") || emit_pair(e, "k_max", "%d", sp->k)
                   : emit_pair(e, "k", "%d", sp->k))
        return -1;
    const pl_stage *st = &c->stages[pl_config_spec_stage(c)];
    if (sp->placed) {
        if (emit_scalar(e, "placement", YAML_PLAIN_SCALAR_STYLE) || emit_map_start(e, YAML_FLOW_MAPPING_STYLE) ||
            emit_string_pair(e, "node", c->nodes[st->node].name) ||
            (st->numa >= 0 && emit_pair(e, "numa", "%d", st->numa)) ||
            (st->threads > 0 && emit_pair(e, "threads", "%d", st->threads)) || emit_map_end(e))
            return -1;
    }
    if (emit_pair(e, "pipelined", "%s", sp->pipelined ? "true" : "false"))
        return -1;
    return emit_map_end(e);
}

static int emit_config(yaml_emitter_t *e, const pl_config *c, const char *out_path)
{
    yaml_event_t ev;
    char path[PL_PATH_MAX * 2];
    if (!yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING) || emit(e, &ev) ||
        !yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1) || emit(e, &ev) ||
        emit_map_start(e, YAML_BLOCK_MAPPING_STYLE))
        return -1;
    if (path_for(c->model, out_path, path) || emit_string_pair(e, "model", path))
        return -1;
    if (emit_scalar(e, "nodes", YAML_PLAIN_SCALAR_STYLE) || emit_seq_start(e, YAML_BLOCK_SEQUENCE_STYLE))
        return -1;
    for (int i = 0; i < c->n_nodes; i++)
        if (emit_node(e, &c->nodes[i], out_path))
            return -1;
    if (emit_seq_end(e) ||
        emit_scalar(e, "stages", YAML_PLAIN_SCALAR_STYLE) || emit_seq_start(e, YAML_BLOCK_SEQUENCE_STYLE))
        return -1;
    for (int i = 0; i < c->n_stages; i++)
        if (c->stages[i].kind != PL_STAGE_DRAFT && c->stages[i].kind != PL_STAGE_MTP &&
            emit_stage(e, c, &c->stages[i]))
            return -1;
    if (emit_seq_end(e) || emit_sampling(e, &c->sampling) || emit_limits(e, &c->limits) ||
        emit_failure(e, &c->failure) || emit_speculative(e, c, out_path))
        return -1;
    if (c->insecure && emit_pair(e, "insecure", "true"))
        return -1;
    if (emit_map_end(e))
        return -1;
    if (!yaml_document_end_event_initialize(&ev, 1) || emit(e, &ev) ||
        !yaml_stream_end_event_initialize(&ev) || emit(e, &ev))
        return -1;
    return yaml_emitter_flush(e) ? 0 : -1;
}

int pl_config_write(const pl_config *c, const char *path, sl_err *err)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return sl_fail(err, "%s: cannot write config: %s", path, strerror(errno));
    yaml_emitter_t e;
    if (!yaml_emitter_initialize(&e)) {
        fclose(f);
        return sl_fail(err, "%s: out of memory starting the YAML writer", path);
    }
    yaml_emitter_set_output_file(&e, f);
    yaml_emitter_set_unicode(&e, 1);
    yaml_emitter_set_width(&e, -1);
    int rc = emit_config(&e, c, path);
    if (rc)
        sl_fail(err, "%s: cannot write config: %s", path, e.problem ? e.problem : strerror(errno));
    yaml_emitter_delete(&e);
    if (fclose(f) != 0 && rc == 0)
        rc = sl_fail(err, "%s: cannot write config: %s", path, strerror(errno));
    return rc;
}
