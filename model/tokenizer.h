/* Tokenizer: sentencepiece, from a .model file or from the vocabulary stored
 * in a GGUF (tokenizer.ggml.tokens / scores / token_type turned into a
 * sentencepiece ModelProto with protobuf-c and loaded from memory), so a
 * GGUF alone is enough. The sentencepiece C++ library is reached through
 * model/spm_shim.cc, the only C++ file. */
#ifndef SLUICE_TOKENIZER_H
#define SLUICE_TOKENIZER_H

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
 * are recognised as their ids when they are user-defined pieces. */
int sl_tok_encode(const sl_tokenizer *t, const char *text, size_t len, int32_t **ids, int *n, sl_err *err);
/* Decodes ids to a malloc'd NUL-terminated string. */
int sl_tok_decode(const sl_tokenizer *t, const int32_t *ids, int n, char **text, sl_err *err);
/* Text of one token as it would appear in the output stream, byte-fallback
 * pieces as their byte; for streaming. Returns bytes written (<= cap). */
int sl_tok_piece_bytes(const sl_tokenizer *t, int32_t id, char *buf, int cap);

int sl_tok_vocab_size(const sl_tokenizer *t);
int sl_tok_bos(const sl_tokenizer *t);
int sl_tok_eos(const sl_tokenizer *t);
/* Id of a piece (e.g. "<end_of_turn>"), or -1. */
int sl_tok_piece_id(const sl_tokenizer *t, const char *piece);

/* Builds the serialized sentencepiece ModelProto for a GGUF vocabulary
 * (exposed for tests and `sluice convert`). *out is malloc'd. */
int sl_tok_gguf_to_proto(const gguf_file *f, uint8_t **out, size_t *n, sl_err *err);

#endif
