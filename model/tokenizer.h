/* Tokenizer: sentencepiece, from a .model file or from the vocabulary stored
 * in a GGUF (tokenizer.ggml.tokens / scores / token_type turned into a
 * sentencepiece ModelProto with protobuf-c and loaded from memory), so a
 * GGUF alone is enough. The sentencepiece C++ library is reached through
 * model/spm_shim.cc, the only C++ file. GGUF vocabularies of
 * tokenizer.ggml.model "gemma4" (merge-ranked BPE, tokenizer.ggml.merges)
 * are encoded by model/bpe_rank.c and decoded by sentencepiece. */
#ifndef SLUICE_TOKENIZER_H
#define SLUICE_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/gguf.h"
#include "util/err.h"

typedef struct sl_tokenizer sl_tokenizer;

int sl_tok_load_file(sl_tokenizer **out, const char *spm_model_path, sl_err *err);
int sl_tok_load_gguf(sl_tokenizer **out, const gguf_file *f, sl_err *err);
void sl_tok_free(sl_tokenizer *t);

/* Encodes text (no BOS added; callers add it). On success *ids is malloc'd
 * with *n ids. Control tokens written literally in the text ("<start_of_turn>")
 * are recognised as their ids when they are user-defined pieces. In a GGUF
 * vocabulary (where llama.cpp's converter types Gemma's <start_of_turn> and
 * <end_of_turn> as control) every control piece except bos, eos and pad is
 * recognised too, as llama.cpp does when it parses special tokens. */
int sl_tok_encode(const sl_tokenizer *t, const char *text, size_t len, int32_t **ids, int *n, sl_err *err);
/* A prompt's ids: BOS first when bos is asked for and the vocabulary adds
 * one (sl_tok_add_bos), then text (NUL-terminated) encoded as above. *ids
 * is malloc'd with room for one more id. */
int sl_tok_encode_prompt(const sl_tokenizer *t, const char *text, bool bos, int32_t **ids, int *n,
                         sl_err *err);
/* Decodes ids to a malloc'd NUL-terminated string. Control pieces decode to
 * nothing; an id outside the vocabulary is an error naming its position. */
int sl_tok_decode(const sl_tokenizer *t, const int32_t *ids, int n, char **text, sl_err *err);
/* Text of one token as it would appear in the output stream, byte-fallback
 * pieces as their byte; for streaming. Returns bytes written (<= cap).
 * "\u2581" becomes a space, "<0xXX>" that one byte, control pieces nothing,
 * the unknown piece sentencepiece's unk surface (" \u2047 "). A piece longer
 * than cap is cut at cap bytes; an id out of range writes nothing (0).
 * Unlike sl_tok_decode, the leading space of the first piece is kept (the
 * stream continues a prompt). */
int sl_tok_piece_bytes(const sl_tokenizer *t, int32_t id, char *buf, int cap);

int sl_tok_vocab_size(const sl_tokenizer *t);
int sl_tok_bos(const sl_tokenizer *t);
int sl_tok_eos(const sl_tokenizer *t);
/* Whether prompts start with BOS: tokenizer.ggml.add_bos_token (default
 * true), true for a .model file. */
bool sl_tok_add_bos(const sl_tokenizer *t);
/* Id of a piece (e.g. "<end_of_turn>"), or -1. */
int sl_tok_piece_id(const sl_tokenizer *t, const char *piece);

/* Builds the serialized sentencepiece ModelProto for a GGUF vocabulary
 * (exposed for tests and `sluice convert`). *out is malloc'd. */
int sl_tok_gguf_to_proto(const gguf_file *f, uint8_t **out, size_t *n, sl_err *err);

/* A sentencepiece vocabulary as GGUF stores it (tokenizer.ggml.*), for
 * `sluice convert`: read it from a .model, then put it on a gguf_writer.
 * Reading a GGUF back with sl_tok_load_gguf gives the .model's ids. */
typedef struct sl_tok_vocab {
    const char *model;        /* tokenizer.ggml.model: "llama" (BPE) or "t5" (unigram); static */
    int n;                    /* pieces */
    char **tokens;            /* n NUL-terminated pieces */
    float *scores;            /* n, bit-exact from the .model */
    int32_t *types;           /* n, GGUF token types: 1 normal, 2 unknown, 3 control,
                                 4 user-defined, 5 unused, 6 byte */
    int32_t bos_id, eos_id, unk_id, pad_id; /* -1 when the model has none */
    bool add_dummy_prefix;    /* -> tokenizer.ggml.add_space_prefix */
    bool remove_extra_whitespaces;
    uint8_t *charsmap;        /* normalizer's precompiled_charsmap, NULL when empty */
    size_t charsmap_len;
} sl_tok_vocab;

/* Reads a sentencepiece .model (a serialized ModelProto) into *v; frees
 * with sl_tok_vocab_free. Fails naming the file for unreadable or malformed
 * files and for model types GGUF cannot describe (word, char). */
int sl_tok_model_to_vocab(const char *spm_path, sl_tok_vocab *v, sl_err *err);
/* Same from serialized ModelProto bytes; name is used in messages. */
int sl_tok_proto_to_vocab(const uint8_t *bytes, size_t n, const char *name, sl_tok_vocab *v,
                          sl_err *err);
void sl_tok_vocab_free(sl_tok_vocab *v);
/* Sets tokenizer.ggml.{model,tokens,scores,token_type,bos/eos/unknown/
 * padding_token_id (those >= 0),add_bos_token (true),add_eos_token (false),
 * add_space_prefix,remove_extra_whitespaces,precompiled_charsmap (if any)}. */
void sl_tok_vocab_to_gguf(const sl_tok_vocab *v, gguf_writer *w);

#endif
