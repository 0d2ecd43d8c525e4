/* The C face of the sentencepiece C++ library: the one place where C++
 * meets the rest of sluice. Every function catches C++ exceptions; a
 * failure returns -1 and writes a message into msg (msg_cap bytes,
 * NUL-terminated). Only model/tokenizer.c calls these. */
#ifndef SLUICE_SPM_SHIM_H
#define SLUICE_SPM_SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct spm_shim spm_shim;

/* What kind of piece an id is, as sentencepiece classifies it. */
typedef enum spm_piece_kind {
    SPM_PIECE_NORMAL = 1,   /* also user-defined pieces: both decode as their text */
    SPM_PIECE_UNKNOWN = 2,
    SPM_PIECE_CONTROL = 3,
    SPM_PIECE_UNUSED = 5,
    SPM_PIECE_BYTE = 6
} spm_piece_kind;

/* NULL when memory runs out. */
spm_shim *spm_shim_new(void);
void spm_shim_free(spm_shim *s);

int spm_shim_load_file(spm_shim *s, const char *path, char *msg, size_t msg_cap);
int spm_shim_load_proto(spm_shim *s, const void *bytes, size_t n, char *msg, size_t msg_cap);

/* *ids is malloc'd (NULL when *n is 0). */
int spm_shim_encode(const spm_shim *s, const char *text, size_t len, int32_t **ids, int *n,
                    char *msg, size_t msg_cap);
/* Ids must already be in range. *text is malloc'd and NUL-terminated; *len
 * excludes the NUL (decoded text may hold NUL bytes from byte pieces). */
int spm_shim_decode(const spm_shim *s, const int32_t *ids, int n, char **text, size_t *len,
                    char *msg, size_t msg_cap);

int spm_shim_vocab_size(const spm_shim *s);
/* The piece's text, owned by the processor; NULL for an id out of range. */
const char *spm_shim_id_to_piece(const spm_shim *s, int id, size_t *len);
/* Id of the exact piece, or -1 (sentencepiece itself answers unk). */
int spm_shim_piece_to_id(const spm_shim *s, const char *piece, size_t len);
spm_piece_kind spm_shim_piece_kind(const spm_shim *s, int id);
/* -1 when the model defines none. */
int spm_shim_bos_id(const spm_shim *s);
int spm_shim_eos_id(const spm_shim *s);
int spm_shim_unk_id(const spm_shim *s);
int spm_shim_pad_id(const spm_shim *s);

#ifdef __cplusplus
}
#endif

#endif
