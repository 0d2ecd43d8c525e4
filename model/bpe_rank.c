#include "model/bpe_rank.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SPACE_SYMBOL "\xE2\x96\x81" /* U+2581 */

/* Open-addressed table from byte strings (in the arena) to a value. */
typedef struct str_map {
    uint32_t *slot;   /* entry index + 1; 0 empty */
    uint32_t mask;
} str_map;

typedef struct entry {
    uint64_t off;     /* into arena */
    uint32_t len;
    int32_t value;
} entry;

struct sl_rbpe {
    char *arena;
    entry *tok, *merge;
    int n_tok, n_merge;
    str_map tok_map, merge_map;
    int32_t byte_id[256];
    int unk;
    int32_t *special;  /* ids matched in text, longest piece first */
    int n_special;
};

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 0x100000001b3ull;
    return h;
}

static int map_init(str_map *m, int n)
{
    uint32_t cap = 16;
    while (cap < 2u * (uint32_t)n + 16)
        cap *= 2;
    m->slot = calloc(cap, sizeof *m->slot);
    m->mask = cap - 1;
    return m->slot ? 0 : -1;
}

/* The entry index of s, or -1; with insert, the slot s would take. */
static int64_t map_find(const sl_rbpe *b, const str_map *m, const entry *es, const char *s,
                        size_t n, uint32_t *free_slot)
{
    for (uint32_t i = (uint32_t)hash_bytes(s, n) & m->mask;; i = (i + 1) & m->mask) {
        uint32_t e = m->slot[i];
        if (e == 0) {
            if (free_slot)
                *free_slot = i;
            return -1;
        }
        const entry *x = &es[e - 1];
        if (x->len == n && memcmp(b->arena + x->off, s, n) == 0)
            return e - 1;
    }
}

/* Inserts entry idx; with keep_first an existing key keeps its value. */
static void map_put(sl_rbpe *b, str_map *m, entry *es, uint32_t idx, bool keep_first)
{
    uint32_t at;
    int64_t old = map_find(b, m, es, b->arena + es[idx].off, es[idx].len, &at);
    if (old < 0)
        m->slot[at] = idx + 1;
    else if (!keep_first)
        es[old].value = es[idx].value;
}

static int32_t token_id(const sl_rbpe *b, const char *s, size_t n)
{
    int64_t e = map_find(b, &b->tok_map, b->tok, s, n, NULL);
    return e < 0 ? -1 : b->tok[e].value;
}

void sl_rbpe_free(sl_rbpe *b)
{
    if (!b)
        return;
    free(b->arena);
    free(b->tok);
    free(b->merge);
    free(b->tok_map.slot);
    free(b->merge_map.slot);
    free(b->special);
    free(b);
}

int sl_rbpe_new(sl_rbpe **out, const gguf_kv *tokens, const gguf_kv *merges, const bool *special,
                int unk, const char *path, sl_err *err)
{
    *out = NULL;
    sl_rbpe *b = calloc(1, sizeof *b);
    if (!b)
        return sl_fail(err, "%s: out of memory for the tokenizer", path);
    b->n_tok = (int)tokens->arr_n;
    b->n_merge = (int)merges->arr_n;
    b->unk = unk;
    uint64_t bytes = 1;
    for (int i = 0; i < b->n_tok; i++)
        bytes += tokens->arr_strs[i].len;
    for (int i = 0; i < b->n_merge; i++)
        bytes += merges->arr_strs[i].len;
    b->arena = malloc(bytes);
    b->tok = calloc((size_t)b->n_tok + 1, sizeof *b->tok);
    b->merge = calloc((size_t)b->n_merge + 1, sizeof *b->merge);
    b->special = malloc(((size_t)b->n_tok + 1) * sizeof *b->special);
    if (!b->arena || !b->tok || !b->merge || !b->special || map_init(&b->tok_map, b->n_tok) ||
        map_init(&b->merge_map, b->n_merge)) {
        sl_rbpe_free(b);
        return sl_fail(err, "%s: out of memory for %d tokens and %d merges", path, b->n_tok,
                       b->n_merge);
    }
    uint64_t at = 0;
    const gguf_kv *src[2] = {tokens, merges};
    entry *dst[2] = {b->tok, b->merge};
    str_map *maps[2] = {&b->tok_map, &b->merge_map};
    int count[2] = {b->n_tok, b->n_merge};
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < count[k]; i++) {
            const gguf_str *s = &src[k]->arr_strs[i];
            memcpy(b->arena + at, s->ptr, s->len);
            dst[k][i] = (entry){at, (uint32_t)s->len, i};
            at += s->len;
            /* llama.cpp: a repeated piece maps to its last id, a repeated
             * merge keeps its first rank */
            map_put(b, maps[k], dst[k], (uint32_t)i, k == 1);
        }
    for (int v = 0; v < 256; v++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", v);
        b->byte_id[v] = token_id(b, name, 6);
    }
    for (int i = 0; i < b->n_tok; i++)
        if (special[i] && b->tok[i].len > 0)
            b->special[b->n_special++] = i;
    /* longest first (few pieces: insertion sort, stable) */
    for (int i = 1; i < b->n_special; i++)
        for (int j = i; j > 0 && b->tok[b->special[j]].len > b->tok[b->special[j - 1]].len; j--) {
            int32_t t = b->special[j];
            b->special[j] = b->special[j - 1];
            b->special[j - 1] = t;
        }
    *out = b;
    return 0;
}

/* ---- encoding ---- */

typedef struct out_ids {
    int32_t *ids;
    int n, cap;
} out_ids;

static int push(out_ids *o, int32_t id)
{
    if (o->n == o->cap) {
        int cap = o->cap ? 2 * o->cap : 64;
        int32_t *p = realloc(o->ids, (size_t)cap * sizeof *p);
        if (!p)
            return -1;
        o->ids = p;
        o->cap = cap;
    }
    o->ids[o->n++] = id;
    return 0;
}

static size_t utf8_len(uint8_t c)
{
    return c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
}

typedef struct symbol {
    size_t off, len;
    int prev, next;
    int rank;          /* of the pair (this, next); -1: no such merge */
} symbol;

static int pair_rank(const sl_rbpe *b, const char *s, const symbol *l, const symbol *r, char *key)
{
    memcpy(key, s + l->off, l->len);
    key[l->len] = ' ';
    memcpy(key + l->len + 1, s + r->off, r->len);
    int64_t e = map_find(b, &b->merge_map, b->merge, key, l->len + 1 + r->len, NULL);
    return e < 0 ? -1 : b->merge[e].value;
}

/* Emits a symbol's token, or its bytes' tokens. */
static int emit_symbol(const sl_rbpe *b, const char *s, size_t len, out_ids *o)
{
    int32_t id = token_id(b, s, len);
    if (id >= 0)
        return push(o, id);
    for (size_t i = 0; i < len; i++) {
        int32_t byte = b->byte_id[(uint8_t)s[i]]; /* none: dropped, as llama.cpp does */
        if (byte >= 0 && push(o, byte))
            return -1;
    }
    return 0;
}

/* BPE over the characters of s[0, n). */
static int merge_run(const sl_rbpe *b, const char *s, size_t n, out_ids *o)
{
    int n_sym = 0;
    symbol *sym = malloc((n + 1) * sizeof *sym);
    char *key = malloc(2 * n + 2);
    if (!sym || !key) {
        free(sym);
        free(key);
        return -1;
    }
    for (size_t at = 0; at < n; n_sym++) {
        size_t len = utf8_len((uint8_t)s[at]);
        if (len > n - at)
            len = n - at;
        sym[n_sym] = (symbol){at, len, n_sym - 1, n_sym + 1, -1};
        at += len;
    }
    if (n_sym)
        sym[n_sym - 1].next = -1;
    for (int i = 0; i + 1 < n_sym; i++)
        sym[i].rank = pair_rank(b, s, &sym[i], &sym[i + 1], key);
    for (;;) {
        int best = -1;
        for (int i = 0; i >= 0 && n_sym; i = sym[i].next)
            if (sym[i].rank >= 0 && (best < 0 || sym[i].rank < sym[best].rank))
                best = i;
        if (best < 0)
            break;
        symbol *l = &sym[best], *r = &sym[l->next];
        l->len += r->len;
        l->next = r->next;
        if (r->next >= 0)
            sym[r->next].prev = best;
        l->rank = l->next >= 0 ? pair_rank(b, s, l, &sym[l->next], key) : -1;
        if (l->prev >= 0)
            sym[l->prev].rank = pair_rank(b, s, &sym[l->prev], l, key);
    }
    int rc = 0;
    for (int i = 0; i >= 0 && n_sym && rc == 0; i = sym[i].next)
        rc = emit_symbol(b, s + sym[i].off, sym[i].len, o);
    free(sym);
    free(key);
    return rc;
}

/* A run of newlines, or of other characters with spaces escaped. */
static int encode_run(const sl_rbpe *b, const char *s, size_t n, bool newlines, out_ids *o)
{
    if (newlines) {
        int32_t id = token_id(b, s, n);
        return id >= 0 ? push(o, id) : merge_run(b, s, n, o);
    }
    size_t spaces = 0;
    for (size_t i = 0; i < n; i++)
        spaces += s[i] == ' ';
    char *esc = malloc(n + 2 * spaces + 1);
    if (!esc)
        return -1;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') {
            memcpy(esc + m, SPACE_SYMBOL, 3);
            m += 3;
        } else
            esc[m++] = s[i];
    }
    int rc = merge_run(b, esc, m, o);
    free(esc);
    return rc;
}

/* Text without special pieces: runs of newlines and of the rest. */
static int encode_plain(const sl_rbpe *b, const char *s, size_t n, out_ids *o)
{
    size_t at = 0;
    while (at < n) {
        bool nl = s[at] == '\n';
        size_t end = at;
        while (end < n && (s[end] == '\n') == nl)
            end++;
        if (encode_run(b, s + at, end - at, nl, o))
            return -1;
        at = end;
    }
    return 0;
}

/* The longest special piece at s[at...], or -1. */
static int32_t special_at(const sl_rbpe *b, const char *s, size_t n, size_t at)
{
    for (int k = 0; k < b->n_special; k++) {
        const entry *e = &b->tok[b->special[k]];
        if (e->len <= n - at && memcmp(s + at, b->arena + e->off, e->len) == 0)
            return b->special[k];
    }
    return -1;
}

int sl_rbpe_encode(const sl_rbpe *b, const char *text, size_t len, int32_t **ids, int *n,
                   sl_err *err)
{
    out_ids o = {0};
    size_t start = 0, at = 0;
    int rc = 0;
    while (at < len && rc == 0) {
        int32_t sp = b->n_special ? special_at(b, text, len, at) : -1;
        if (sp < 0) {
            at++;
            continue;
        }
        rc = encode_plain(b, text + start, at - start, &o) || push(&o, sp) ? -1 : 0;
        at += b->tok[sp].len;
        start = at;
    }
    if (rc == 0)
        rc = encode_plain(b, text + start, len - start, &o);
    if (rc) {
        free(o.ids);
        *ids = NULL;
        *n = 0;
        return sl_fail(err, "tokenizer: out of memory encoding %zu bytes", len);
    }
    *ids = o.ids;
    *n = o.n;
    return 0;
}
