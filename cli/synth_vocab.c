#include "cli/synth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SPACE "\xe2\x96\x81" /* U+2581, sentencepiece's visible space */

/* Frequent English words, used with a leading space piece so real text
 * tokenises into a mix of long and short pieces. */
static const char *const words[] = {
    "the", "of", "and", "to", "in", "is", "that", "it", "was", "for", "on", "are", "as",
    "with", "his", "they", "at", "be", "this", "have", "from", "or", "one", "had", "by",
    "word", "but", "not", "what", "all", "were", "we", "when", "your", "can", "said",
    "there", "use", "an", "each", "which", "she", "do", "how", "their", "if", "will", "up",
    "other", "about", "out", "many", "then", "them", "these", "so", "some", "her", "would",
    "make", "like", "him", "into", "time", "has", "look", "two", "more", "write", "go",
    "see", "number", "no", "way", "could", "people", "my", "than", "first", "water",
    "been", "call", "who", "its", "now", "find", "long", "down", "day", "did", "get",
    "come", "made", "may", "part", "The", "In", "It", "He", "She", "We", "They", "And",
};

/* Open-addressing set of the pieces added so far: keeps them unique. */
typedef struct piece_set {
    const char **slot;
    size_t cap;
} piece_set;

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

/* Returns true when s was new (and is now in the set). */
static bool set_insert(piece_set *set, const char *s)
{
    size_t i = hash_str(s) & (set->cap - 1);
    while (set->slot[i]) {
        if (strcmp(set->slot[i], s) == 0)
            return false;
        i = (i + 1) & (set->cap - 1);
    }
    set->slot[i] = s;
    return true;
}

typedef struct builder {
    synth_vocab *v;
    piece_set set;
    int n_normal; /* printable pieces so far, for decreasing scores */
    bool oom;
} builder;

static void add(builder *b, const char *piece, float score, int32_t type)
{
    synth_vocab *v = b->v;
    if (b->oom)
        return;
    char *copy = strdup(piece);
    if (!copy) {
        b->oom = true;
        return;
    }
    if (!set_insert(&b->set, copy)) {
        free(copy);
        return;
    }
    v->pieces[v->n] = copy;
    v->scores[v->n] = score;
    v->types[v->n] = type;
    v->n++;
}

static bool full(const builder *b, int n_vocab)
{
    return b->oom || b->v->n >= n_vocab;
}

static void add_normal(builder *b, const char *piece, int n_vocab)
{
    if (full(b, n_vocab))
        return;
    int before = b->v->n;
    add(b, piece, -1.0f - 0.001f * (float)b->n_normal, TOKTYPE_NORMAL);
    b->n_normal += b->v->n > before;
}

static void add_specials(builder *b, bool llama_style)
{
    synth_vocab *v = b->v;
    if (llama_style) {
        v->unk = 0, v->bos = 1, v->eos = 2, v->pad = -1;
        add(b, "<unk>", 0.0f, TOKTYPE_UNKNOWN);
        add(b, "<s>", 0.0f, TOKTYPE_CONTROL);
        add(b, "</s>", 0.0f, TOKTYPE_CONTROL);
        return;
    }
    v->pad = 0, v->eos = 1, v->bos = 2, v->unk = 3;
    add(b, "<pad>", 0.0f, TOKTYPE_CONTROL);
    add(b, "<eos>", 0.0f, TOKTYPE_CONTROL);
    add(b, "<bos>", 0.0f, TOKTYPE_CONTROL);
    add(b, "<unk>", 0.0f, TOKTYPE_UNKNOWN);
    add(b, "<start_of_turn>", 0.0f, TOKTYPE_USER_DEFINED);
    add(b, "<end_of_turn>", 0.0f, TOKTYPE_USER_DEFINED);
}

/* Letters-only filler: base-26 strings of length len, in order. */
static void add_filler(builder *b, int len, int n_vocab)
{
    char s[8];
    long total = 1;
    for (int i = 0; i < len; i++)
        total *= 26;
    for (long k = 0; k < total && !full(b, n_vocab); k++) {
        long x = k;
        for (int i = len - 1; i >= 0; i--, x /= 26)
            s[i] = (char)('a' + x % 26);
        s[len] = 0;
        add_normal(b, s, n_vocab);
    }
}

static void add_printable(builder *b, int n_vocab)
{
    char s[64];
    add_normal(b, SPACE, n_vocab);
    for (int ch = 33; ch < 127; ch++) {
        s[0] = (char)ch, s[1] = 0;
        add_normal(b, s, n_vocab);
    }
    /* Every prefix of a word is a piece too, with a higher score than the
     * letter pairs below: the tokenizer runs sentencepiece's BPE, which only
     * reaches a piece through a chain of merges that are all in the vocabulary. */
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        size_t len = strlen(words[i]);
        for (size_t k = 1; k <= len; k++) {
            snprintf(s, sizeof s, SPACE "%.*s", (int)k, words[i]);
            add_normal(b, s, n_vocab);
        }
    }
    for (int ch = 'a'; ch <= 'z'; ch++) {
        snprintf(s, sizeof s, SPACE "%c", ch);
        add_normal(b, s, n_vocab);
        snprintf(s, sizeof s, SPACE "%c", ch - 'a' + 'A');
        add_normal(b, s, n_vocab);
    }
    for (int len = 2; len <= 5 && !full(b, n_vocab); len++)
        add_filler(b, len, n_vocab);
}

int synth_vocab_build(synth_vocab *v, int n_vocab, bool llama_style, sl_err *err)
{
    int fixed = (llama_style ? 3 : 6) + 256;
    memset(v, 0, sizeof *v);
    if (n_vocab < fixed + 96)
        return sl_fail(err, "a vocabulary of %d is too small (needs at least %d: specials, "
                       "256 byte pieces and the printable characters)", n_vocab, fixed + 96);
    builder b = {.v = v};
    b.set.cap = 1;
    while (b.set.cap < (size_t)n_vocab * 2)
        b.set.cap <<= 1;
    b.set.slot = calloc(b.set.cap, sizeof *b.set.slot);
    v->pieces = calloc((size_t)n_vocab, sizeof *v->pieces);
    v->scores = calloc((size_t)n_vocab, sizeof *v->scores);
    v->types = calloc((size_t)n_vocab, sizeof *v->types);
    if (!b.set.slot || !v->pieces || !v->scores || !v->types)
        b.oom = true;
    if (!b.oom) {
        add_specials(&b, llama_style);
        for (int byte = 0; byte < 256; byte++) {
            char s[8];
            snprintf(s, sizeof s, "<0x%02X>", byte);
            add(&b, s, 0.0f, TOKTYPE_BYTE);
        }
        add_printable(&b, n_vocab);
    }
    free(b.set.slot);
    if (b.oom || v->n != n_vocab) {
        synth_vocab_free(v);
        return sl_fail(err, "cannot build a synthetic vocabulary of %d pieces%s", n_vocab,
                       b.oom ? " (out of memory)" : "");
    }
    return 0;
}

void synth_vocab_free(synth_vocab *v)
{
    if (v->pieces)
        for (int i = 0; i < v->n; i++)
            free(v->pieces[i]);
    free(v->pieces);
    free(v->scores);
    free(v->types);
    memset(v, 0, sizeof *v);
}
