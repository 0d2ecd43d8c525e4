/* Merge-ranked BPE over UTF-8 characters: the tokenizer GGUF files name
 * tokenizer.ggml.model = "gemma4" (Gemma 4). As llama.cpp reads such a
 * vocabulary (its LLAMA_VOCAB_PRE_TYPE_GEMMA4): the text is split only into
 * runs of newlines and runs of everything else; spaces become U+2581; the
 * symbols are whole UTF-8 characters (no GPT-2 byte alphabet), and the
 * adjacent pair with the lowest rank in tokenizer.ggml.merges merges first
 * (the leftmost among equals); a symbol left without a token falls back to
 * its bytes' <0xXX> tokens. A newline run that is itself a token stays
 * whole. Pieces typed control (but bos, eos, pad) or user-defined that are
 * written in the text are matched as themselves, longest first.
 *
 * Unlike sentencepiece's BPE, the order comes from the merge list, not from
 * piece scores, which is why this is not left to sentencepiece. */
#ifndef SLUICE_BPE_RANK_H
#define SLUICE_BPE_RANK_H

#include <stdbool.h>
#include <stdint.h>

#include "model/gguf.h"
#include "util/err.h"

typedef struct sl_rbpe sl_rbpe;

/* tokens: the string array of the vocabulary; merges: tokenizer.ggml.merges
 * ("left right" strings, rank = index); special[i]: piece i is matched
 * literally in text; unk: the unknown piece (kept for callers; a byte
 * without a <0xXX> token is dropped, as llama.cpp drops it). path names the
 * file in errors. Copies what it keeps. */
int sl_rbpe_new(sl_rbpe **out, const gguf_kv *tokens, const gguf_kv *merges, const bool *special,
                int unk, const char *path, sl_err *err);
void sl_rbpe_free(sl_rbpe *b);
/* *ids is malloc'd (NULL when *n is 0). */
int sl_rbpe_encode(const sl_rbpe *b, const char *text, size_t len, int32_t **ids, int *n,
                   sl_err *err);

#endif
