/* Synthetic vocabulary for `sluice synth`: exactly n_vocab unique pieces
 * that sentencepiece accepts as a byte-fallback unigram model. */
#ifndef SLUICE_CLI_SYNTH_H
#define SLUICE_CLI_SYNTH_H

#include <stdbool.h>
#include <stdint.h>

#include "util/err.h"

/* llama.cpp's token types (tokenizer.ggml.token_type) */
enum {
    TOKTYPE_NORMAL = 1, TOKTYPE_UNKNOWN = 2, TOKTYPE_CONTROL = 3,
    TOKTYPE_USER_DEFINED = 4, TOKTYPE_UNUSED = 5, TOKTYPE_BYTE = 6
};

typedef struct synth_vocab {
    int n;
    char **pieces;
    float *scores;
    int32_t *types;
    int bos, eos, unk, pad; /* pad -1 when absent */
} synth_vocab;

/* Gemma layout: <pad> <eos> <bos> <unk>, <start_of_turn> <end_of_turn>,
 * <0x00>..<0xFF>, then printable pieces: U+2581 (the space piece), the
 * printable ASCII characters, frequent words after a space piece with all
 * their prefixes, space+letter, letter pairs, then letters-only filler of
 * length 3, 4, 5 until the size is reached; scores decrease in that order.
 * Llama layout (llama_style):
 * <unk> <s> </s>, <0x00>..<0xFF>, then printable pieces. */
int synth_vocab_build(synth_vocab *v, int n_vocab, bool llama_style, sl_err *err);
void synth_vocab_free(synth_vocab *v);

#endif
