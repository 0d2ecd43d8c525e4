/* Tokenizer: sentencepiece through model/spm_shim.cc, loaded from a .model
 * or from a ModelProto rebuilt from a GGUF's tokenizer.ggml.* keys.
 *
 * Why BPE for tokenizer.ggml.model = "llama": llama.cpp does not store the
 * sentencepiece model type; its "llama" (SPM) tokenizer merges adjacent
 * symbols by piece score, which is sentencepiece's BPE algorithm, and the
 * Gemma and Llama .model files are BPE models. Scores are carried over
 * bit-exactly because the merge order is decided by them. "t5" (llama.cpp's
 * unigram tokenizer) maps to sentencepiece's unigram model. "gemma4" (Gemma
 * 4) is BPE ordered by a merge list (tokenizer.ggml.merges), not by scores:
 * model/bpe_rank.c encodes it, sentencepiece (given the same pieces as a BPE
 * model) still decodes. */
#include "model/tokenizer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/bpe_rank.h"
#include "model/spm_shim.h"
#include "proto/sentencepiece_model.pb-c.h"

#define KEY_MODEL "tokenizer.ggml.model"
#define KEY_TOKENS "tokenizer.ggml.tokens"
#define KEY_SCORES "tokenizer.ggml.scores"
#define KEY_TYPES "tokenizer.ggml.token_type"
#define KEY_BOS "tokenizer.ggml.bos_token_id"
#define KEY_EOS "tokenizer.ggml.eos_token_id"
#define KEY_UNK "tokenizer.ggml.unknown_token_id"
#define KEY_PAD "tokenizer.ggml.padding_token_id"
#define KEY_ADD_BOS "tokenizer.ggml.add_bos_token"
#define KEY_ADD_EOS "tokenizer.ggml.add_eos_token"
#define KEY_SPACE_PREFIX "tokenizer.ggml.add_space_prefix"
#define KEY_EXTRA_WS "tokenizer.ggml.remove_extra_whitespaces"
#define KEY_CHARSMAP "tokenizer.ggml.precompiled_charsmap"
#define KEY_MERGES "tokenizer.ggml.merges"

/* GGUF token types (llama.cpp's llama_token_type); 1..6 equal sentencepiece's
 * SentencePiece.Type. */
enum { TT_UNDEFINED = 0, TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3,
       TT_USER_DEFINED = 4, TT_UNUSED = 5, TT_BYTE = 6 };

#define SPACE_SYMBOL "\xE2\x96\x81" /* U+2581, sentencepiece's escaped space */
#define UNK_SURFACE " \xE2\x81\x87 "

struct sl_tokenizer {
    spm_shim *spm;
    int n_vocab;
    int bos, eos;
    bool add_bos;
    /* Loaded from a GGUF: n_vocab flags, set for the pieces the GGUF types
     * as control (see promote_control); NULL for a .model. */
    uint8_t *control;
    sl_rbpe *rbpe;  /* "gemma4": merge-ranked BPE encodes; NULL otherwise */
};

/* ---- loading ---- */

static int tok_new(sl_tokenizer **out, sl_err *err)
{
    sl_tokenizer *t = calloc(1, sizeof *t);
    if (t)
        t->spm = spm_shim_new();
    if (!t || !t->spm) {
        free(t);
        return sl_fail(err, "tokenizer: out of memory");
    }
    *out = t;
    return 0;
}

int sl_tok_load_file(sl_tokenizer **out, const char *spm_model_path, sl_err *err)
{
    sl_tokenizer *t = NULL;
    if (tok_new(&t, err))
        return -1;
    sl_err shim;
    if (spm_shim_load_file(t->spm, spm_model_path, shim.msg, sizeof shim.msg)) {
        sl_tok_free(t);
        return sl_fail(err, "%s: %s", spm_model_path, shim.msg);
    }
    t->n_vocab = spm_shim_vocab_size(t->spm);
    t->bos = spm_shim_bos_id(t->spm);
    t->eos = spm_shim_eos_id(t->spm);
    t->add_bos = true;
    *out = t;
    return 0;
}

void sl_tok_free(sl_tokenizer *t)
{
    if (!t)
        return;
    spm_shim_free(t->spm);
    sl_rbpe_free(t->rbpe);
    free(t->control);
    free(t);
}

/* ---- reading the GGUF vocabulary ---- */

/* The tokenizer.ggml.* keys of one file, validated; arrays stay in the map. */
typedef struct gguf_vocab {
    const char *path;
    int model_type;           /* SENTENCEPIECE__TRAINER_SPEC__MODEL_TYPE__* */
    bool ranked;              /* "gemma4": merges by tokenizer.ggml.merges rank */
    const gguf_kv *merges;    /* with ranked */
    const gguf_kv *tokens, *scores, *types;
    int n;
    int32_t bos, eos, unk, pad; /* -1 when absent */
    bool unk_given;           /* unknown_token_id was in the file */
    bool add_bos, add_space_prefix, remove_extra_ws;
    const uint8_t *charsmap;
    size_t charsmap_len;
} gguf_vocab;

static int read_model_name(const gguf_file *f, gguf_vocab *v, sl_err *err)
{
    char *name = NULL;
    int rc = gguf_get_str(f, KEY_MODEL, &name, err);
    if (rc < 0)
        return -1;
    if (rc > 0)
        return sl_fail(err, "%s: %s is missing, so the tokenizer type is unknown", f->path, KEY_MODEL);
    if (strcmp(name, "llama") == 0) {
        v->model_type = SENTENCEPIECE__TRAINER_SPEC__MODEL_TYPE__BPE;
    } else if (strcmp(name, "t5") == 0) {
        v->model_type = SENTENCEPIECE__TRAINER_SPEC__MODEL_TYPE__UNIGRAM;
    } else if (strcmp(name, "gemma4") == 0) {
        v->model_type = SENTENCEPIECE__TRAINER_SPEC__MODEL_TYPE__BPE;
        v->ranked = true;
    } else {
        sl_fail(err, "%s: %s is \"%s\"; only sentencepiece-style vocabularies (\"llama\", \"t5\", "
                "\"gemma4\") are supported",
                f->path, KEY_MODEL, name);
        free(name);
        return -1;
    }
    free(name);
    return 0;
}

/* The array under key, required, with n_expect entries (0: any) of an
 * element type ok_type accepts. */
static int find_array(const gguf_file *f, const char *key, bool (*ok_type)(gguf_vtype),
                      const char *type_desc, uint64_t n_expect, const gguf_kv **out, sl_err *err)
{
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv)
        return sl_fail(err, "%s: %s is missing", f->path, key);
    if (kv->type != GGUF_ARRAY)
        return sl_fail(err, "%s: %s is a %s, expected an array of %s", f->path, key,
                       gguf_vtype_name(kv->type), type_desc);
    if (!ok_type(kv->arr_type))
        return sl_fail(err, "%s: %s is an array of %s, expected %s", f->path, key,
                       gguf_vtype_name(kv->arr_type), type_desc);
    if (n_expect && kv->arr_n != n_expect)
        return sl_fail(err, "%s: %s has %llu entries but %s has %llu", f->path, key,
                       (unsigned long long)kv->arr_n, KEY_TOKENS, (unsigned long long)n_expect);
    *out = kv;
    return 0;
}

static bool is_string(gguf_vtype t) { return t == GGUF_STRING; }
static bool is_float(gguf_vtype t) { return t == GGUF_FLOAT32 || t == GGUF_FLOAT64; }
static bool is_byte(gguf_vtype t) { return t == GGUF_UINT8 || t == GGUF_INT8; }

static float score_at(const gguf_kv *scores, uint64_t i)
{
    if (scores->arr_type == GGUF_FLOAT32) {
        float s;
        memcpy(&s, (const uint8_t *)scores->arr_data + i * sizeof s, sizeof s);
        return s;
    }
    return (float)gguf_arr_num(scores, i);
}

static int check_tokens(const gguf_file *f, const gguf_kv *tokens, sl_err *err)
{
    if (tokens->arr_n == 0)
        return sl_fail(err, "%s: %s is empty", f->path, KEY_TOKENS);
    if (tokens->arr_n > INT32_MAX)
        return sl_fail(err, "%s: %s has %llu entries, more than token ids can hold", f->path,
                       KEY_TOKENS, (unsigned long long)tokens->arr_n);
    for (uint64_t i = 0; i < tokens->arr_n; i++) {
        const gguf_str *s = &tokens->arr_strs[i];
        if (s->len == 0)
            return sl_fail(err, "%s: %s[%llu] is empty; sentencepiece needs non-empty pieces",
                           f->path, KEY_TOKENS, (unsigned long long)i);
        if (memchr(s->ptr, '\0', s->len))
            return sl_fail(err, "%s: %s[%llu] contains a NUL byte", f->path, KEY_TOKENS,
                           (unsigned long long)i);
    }
    return 0;
}

static int check_types(const gguf_file *f, const gguf_kv *types, sl_err *err)
{
    for (uint64_t i = 0; i < types->arr_n; i++) {
        double t = gguf_arr_num(types, i);
        if (!(t >= TT_UNDEFINED && t <= TT_BYTE) || t != (double)(int)t)
            return sl_fail(err, "%s: %s[%llu] is %g, not a token type (0..6)", f->path, KEY_TYPES,
                           (unsigned long long)i, t);
    }
    return 0;
}

/* A token id key: missing keeps *id (the default), present must be < n. */
static int read_id(const gguf_file *f, const char *key, int n, int32_t *id, bool *given, sl_err *err)
{
    uint32_t v;
    int rc = gguf_get_u32(f, key, &v, err);
    if (rc < 0)
        return -1;
    if (rc > 0) {
        if (*id >= n)
            *id = -1;
        return 0;
    }
    if (v >= (uint32_t)n)
        return sl_fail(err, "%s: %s is %u, outside the vocabulary of %d tokens", f->path, key, v, n);
    *id = (int32_t)v;
    if (given)
        *given = true;
    return 0;
}

static int read_flag(const gguf_file *f, const char *key, bool *flag, sl_err *err)
{
    return gguf_get_bool(f, key, flag, err) < 0 ? -1 : 0;
}

static int read_charsmap(const gguf_file *f, gguf_vocab *v, sl_err *err)
{
    if (!gguf_find(f, KEY_CHARSMAP))
        return 0;
    const gguf_kv *kv;
    if (find_array(f, KEY_CHARSMAP, is_byte, "uint8", 0, &kv, err))
        return -1;
    v->charsmap = kv->arr_data;
    v->charsmap_len = (size_t)kv->arr_n;
    return 0;
}

static int read_gguf_vocab(const gguf_file *f, gguf_vocab *v, sl_err *err)
{
    memset(v, 0, sizeof *v);
    v->path = f->path;
    if (read_model_name(f, v, err))
        return -1;
    if (find_array(f, KEY_TOKENS, is_string, "string", 0, &v->tokens, err) ||
        check_tokens(f, v->tokens, err))
        return -1;
    uint64_t n = v->tokens->arr_n;
    v->n = (int)n;
    if (find_array(f, KEY_SCORES, is_float, "float32", n, &v->scores, err) ||
        find_array(f, KEY_TYPES, gguf_vtype_is_int, "int32", n, &v->types, err) ||
        check_types(f, v->types, err))
        return -1;
    /* llama.cpp's defaults for sentencepiece vocabularies. */
    v->bos = 1, v->eos = 2, v->unk = 0, v->pad = -1;
    v->add_bos = true;
    /* llama.cpp: no space prefix for its BPE tokenizers ("gemma4") */
    v->add_space_prefix = !v->ranked;
    v->remove_extra_ws = false;
    if (read_id(f, KEY_BOS, v->n, &v->bos, NULL, err) ||
        read_id(f, KEY_EOS, v->n, &v->eos, NULL, err) ||
        read_id(f, KEY_UNK, v->n, &v->unk, &v->unk_given, err) ||
        read_id(f, KEY_PAD, v->n, &v->pad, NULL, err) ||
        read_flag(f, KEY_ADD_BOS, &v->add_bos, err) ||
        read_flag(f, KEY_SPACE_PREFIX, &v->add_space_prefix, err) ||
        read_flag(f, KEY_EXTRA_WS, &v->remove_extra_ws, err) ||
        read_charsmap(f, v, err))
        return -1;
    if (v->ranked) {
        if (find_array(f, KEY_MERGES, is_string, "string", 0, &v->merges, err))
            return -1;
        v->add_bos = true; /* llama.cpp adds BOS for gemma4 whatever the key says */
    }
    return 0;
}

/* ---- GGUF vocabulary -> ModelProto ---- */

/* Everything a packed ModelProto points into, freed together. */
typedef struct proto_build {
    Sentencepiece__ModelProto model;
    Sentencepiece__TrainerSpec trainer;
    Sentencepiece__NormalizerSpec normalizer;
    Sentencepiece__ModelProto__SentencePiece *pieces;
    Sentencepiece__ModelProto__SentencePiece **piece_ptrs;
    char *text;               /* every piece, NUL-terminated, back to back */
} proto_build;

static void proto_build_free(proto_build *b)
{
    free(b->pieces);
    free(b->piece_ptrs);
    free(b->text);
}

static int token_type_at(const gguf_vocab *v, int i)
{
    int t = (int)gguf_arr_num(v->types, (uint64_t)i);
    return t == TT_UNDEFINED ? TT_NORMAL : t;
}

static int copy_pieces(const gguf_vocab *v, proto_build *b, sl_err *err)
{
    size_t text_size = 0;
    for (int i = 0; i < v->n; i++)
        if (sl_add_size(text_size, (size_t)v->tokens->arr_strs[i].len + 1, &text_size))
            return sl_fail(err, "%s: %s is too large", v->path, KEY_TOKENS);
    b->pieces = calloc((size_t)v->n, sizeof *b->pieces);
    b->piece_ptrs = calloc((size_t)v->n, sizeof *b->piece_ptrs);
    b->text = malloc(text_size);
    if (!b->pieces || !b->piece_ptrs || !b->text)
        return sl_fail(err, "%s: out of memory for %d tokens", v->path, v->n);
    char *at = b->text;
    for (int i = 0; i < v->n; i++) {
        const gguf_str *s = &v->tokens->arr_strs[i];
        Sentencepiece__ModelProto__SentencePiece *p = &b->pieces[i];
        sentencepiece__model_proto__sentence_piece__init(p);
        memcpy(at, s->ptr, s->len);
        at[s->len] = '\0';
        p->piece = at;
        at += s->len + 1;
        p->has_score = 1;
        p->score = score_at(v->scores, (uint64_t)i);
        p->has_type = 1;
        p->type = (Sentencepiece__ModelProto__SentencePiece__Type)token_type_at(v, i);
        b->piece_ptrs[i] = p;
    }
    return 0;
}

/* llama.cpp's converter types as control every piece Hugging Face calls
 * special, among them pieces the original .model had as user-defined
 * (Gemma's <start_of_turn>, <end_of_turn>), and llama.cpp matches control
 * pieces written in prompt text. sentencepiece matches only user-defined
 * pieces in text, so every control piece except bos, eos and pad (which
 * sentencepiece must see as control) becomes user-defined here. Decoding
 * still drops them (sl_tokenizer.control). */
static void promote_control(const gguf_vocab *v, proto_build *b)
{
    for (int i = 0; i < v->n; i++)
        if (b->pieces[i].type == SENTENCEPIECE__MODEL_PROTO__SENTENCE_PIECE__TYPE__CONTROL &&
            i != v->bos && i != v->eos && i != v->pad)
            b->pieces[i].type = SENTENCEPIECE__MODEL_PROTO__SENTENCE_PIECE__TYPE__USER_DEFINED;
}

/* sentencepiece insists on exactly one unknown piece; a file that marks none
 * but names unknown_token_id gets that piece marked. */
static int settle_unknown(const gguf_vocab *v, proto_build *b, sl_err *err)
{
    for (int i = 0; i < v->n; i++)
        if (b->pieces[i].type == SENTENCEPIECE__MODEL_PROTO__SENTENCE_PIECE__TYPE__UNKNOWN)
            return 0;
    if (!v->unk_given)
        return sl_fail(err, "%s: %s marks no token as unknown (type 2) and %s is absent; "
                       "sentencepiece needs an unknown piece", v->path, KEY_TYPES, KEY_UNK);
    b->pieces[v->unk].type = SENTENCEPIECE__MODEL_PROTO__SENTENCE_PIECE__TYPE__UNKNOWN;
    return 0;
}

static bool has_byte_pieces(const proto_build *b, int n)
{
    for (int i = 0; i < n; i++)
        if (b->pieces[i].type == SENTENCEPIECE__MODEL_PROTO__SENTENCE_PIECE__TYPE__BYTE)
            return true;
    return false;
}

static void fill_trainer(const gguf_vocab *v, proto_build *b)
{
    Sentencepiece__TrainerSpec *ts = &b->trainer;
    sentencepiece__trainer_spec__init(ts);
    ts->has_model_type = 1;
    ts->model_type = (Sentencepiece__TrainerSpec__ModelType)v->model_type;
    ts->has_vocab_size = 1;
    ts->vocab_size = v->n;
    ts->has_byte_fallback = 1;
    ts->byte_fallback = has_byte_pieces(b, v->n);
    /* sentencepiece finds bos/eos/pad by piece name, not by id. */
    int32_t *ids[] = {&ts->unk_id, &ts->bos_id, &ts->eos_id, &ts->pad_id};
    protobuf_c_boolean *has[] = {&ts->has_unk_id, &ts->has_bos_id, &ts->has_eos_id, &ts->has_pad_id};
    char **names[] = {&ts->unk_piece, &ts->bos_piece, &ts->eos_piece, &ts->pad_piece};
    int32_t given[] = {v->unk, v->bos, v->eos, v->pad};
    for (int k = 0; k < 4; k++) {
        *has[k] = 1;
        *ids[k] = given[k];
        if (given[k] >= 0)
            *names[k] = b->pieces[given[k]].piece;
    }
}

static void fill_normalizer(const gguf_vocab *v, proto_build *b)
{
    Sentencepiece__NormalizerSpec *ns = &b->normalizer;
    sentencepiece__normalizer_spec__init(ns);
    ns->name = v->charsmap_len ? "precompiled" : "identity";
    if (v->charsmap_len) {
        ns->has_precompiled_charsmap = 1;
        ns->precompiled_charsmap.data = (uint8_t *)v->charsmap;
        ns->precompiled_charsmap.len = v->charsmap_len;
    }
    ns->has_add_dummy_prefix = 1;
    ns->add_dummy_prefix = v->add_space_prefix;
    ns->has_remove_extra_whitespaces = 1;
    ns->remove_extra_whitespaces = v->remove_extra_ws;
    ns->has_escape_whitespaces = 1;
    ns->escape_whitespaces = 1;
}

static int pack_model(const gguf_vocab *v, proto_build *b, uint8_t **out, size_t *n, sl_err *err)
{
    Sentencepiece__ModelProto *m = &b->model;
    sentencepiece__model_proto__init(m);
    m->n_pieces = (size_t)v->n;
    m->pieces = b->piece_ptrs;
    m->trainer_spec = &b->trainer;
    m->normalizer_spec = &b->normalizer;
    size_t size = sentencepiece__model_proto__get_packed_size(m);
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return sl_fail(err, "%s: out of memory for a %zu-byte tokenizer model", v->path, size);
    sentencepiece__model_proto__pack(m, buf);
    *out = buf;
    *n = size;
    return 0;
}

static int vocab_to_proto(const gguf_vocab *v, uint8_t **out, size_t *n, sl_err *err)
{
    proto_build b = {0};
    int rc = -1;
    if (copy_pieces(v, &b, err) == 0 && settle_unknown(v, &b, err) == 0) {
        promote_control(v, &b);
        fill_trainer(v, &b);
        fill_normalizer(v, &b);
        rc = pack_model(v, &b, out, n, err);
    }
    proto_build_free(&b);
    return rc;
}

int sl_tok_gguf_to_proto(const gguf_file *f, uint8_t **out, size_t *n, sl_err *err)
{
    gguf_vocab v;
    if (read_gguf_vocab(f, &v, err))
        return -1;
    return vocab_to_proto(&v, out, n, err);
}

/* The pieces a "gemma4" encoder matches in text: control ones but bos, eos
 * and pad (as promote_control), and user-defined ones. */
static int ranked_encoder(sl_tokenizer *t, const gguf_vocab *v, sl_err *err)
{
    bool *special = calloc((size_t)v->n + 1, sizeof *special);
    if (!special)
        return sl_fail(err, "%s: out of memory", v->path);
    for (int i = 0; i < v->n; i++) {
        int type = token_type_at(v, i);
        special[i] = type == TT_USER_DEFINED ||
                     (type == TT_CONTROL && i != v->bos && i != v->eos && i != v->pad);
    }
    int rc = sl_rbpe_new(&t->rbpe, v->tokens, v->merges, special, v->unk, v->path, err);
    free(special);
    return rc;
}

int sl_tok_load_gguf(sl_tokenizer **out, const gguf_file *f, sl_err *err)
{
    gguf_vocab v;
    uint8_t *proto = NULL;
    size_t proto_len = 0;
    if (read_gguf_vocab(f, &v, err) || vocab_to_proto(&v, &proto, &proto_len, err))
        return -1;
    sl_tokenizer *t = NULL;
    if (tok_new(&t, err)) {
        free(proto);
        return -1;
    }
    sl_err shim;
    int rc = spm_shim_load_proto(t->spm, proto, proto_len, shim.msg, sizeof shim.msg);
    free(proto);
    if (rc) {
        sl_tok_free(t);
        return sl_fail(err, "%s: the vocabulary in tokenizer.ggml.*: %s", f->path, shim.msg);
    }
    t->n_vocab = spm_shim_vocab_size(t->spm);
    t->control = calloc((size_t)v.n, 1);
    if (!t->control) {
        sl_tok_free(t);
        return sl_fail(err, "%s: out of memory", f->path);
    }
    for (int i = 0; i < v.n; i++)
        t->control[i] = token_type_at(&v, i) == TT_CONTROL;
    /* The GGUF's ids rule, as in llama.cpp, even where the piece is not a
     * control piece. */
    t->bos = v.bos;
    t->eos = v.eos;
    t->add_bos = v.add_bos;
    if (v.ranked && ranked_encoder(t, &v, err)) {
        sl_tok_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

/* ---- encoding and decoding ---- */

int sl_tok_encode(const sl_tokenizer *t, const char *text, size_t len, int32_t **ids, int *n, sl_err *err)
{
    *ids = NULL;
    *n = 0;
    if (len == 0)
        return 0;
    if (t->rbpe)
        return sl_rbpe_encode(t->rbpe, text, len, ids, n, err);
    sl_err shim;
    if (spm_shim_encode(t->spm, text, len, ids, n, shim.msg, sizeof shim.msg))
        return sl_fail(err, "tokenizer: %s", shim.msg);
    return 0;
}

int sl_tok_encode_prompt(const sl_tokenizer *t, const char *text, bool bos, int32_t **ids, int *n,
                         sl_err *err)
{
    int32_t *body = NULL;
    int n_body = 0;
    *ids = NULL;
    *n = 0;
    if (sl_tok_encode(t, text, strlen(text), &body, &n_body, err))
        return -1;
    int lead = bos && t->add_bos ? 1 : 0;
    int32_t *all = malloc((size_t)(n_body + lead + 1) * sizeof *all);
    if (!all) {
        free(body);
        return sl_fail(err, "tokenizer: out of memory for a prompt of %d tokens", n_body + lead);
    }
    if (lead)
        all[0] = t->bos;
    if (n_body)
        memcpy(all + lead, body, (size_t)n_body * sizeof *body);
    free(body);
    *ids = all;
    *n = n_body + lead;
    return 0;
}

int sl_tok_decode(const sl_tokenizer *t, const int32_t *ids, int n, char **text, sl_err *err)
{
    *text = NULL;
    if (n < 0)
        return sl_fail(err, "tokenizer: decode of %d ids", n);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= t->n_vocab)
            return sl_fail(err, "tokenizer: id %d at position %d is outside the vocabulary of %d tokens",
                           (int)ids[i], i, t->n_vocab);
    int32_t *kept = NULL;
    if (t->control) {
        kept = malloc((size_t)(n ? n : 1) * sizeof *kept);
        if (!kept)
            return sl_fail(err, "tokenizer: out of memory decoding %d ids", n);
        int n_kept = 0;
        for (int i = 0; i < n; i++)
            if (!t->control[ids[i]])
                kept[n_kept++] = ids[i];
        ids = kept;
        n = n_kept;
    }
    sl_err shim;
    size_t len;
    int rc = spm_shim_decode(t->spm, ids, n, text, &len, shim.msg, sizeof shim.msg);
    free(kept);
    return rc ? sl_fail(err, "tokenizer: %s", shim.msg) : 0;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* "<0xXX>" -> the byte, or -1. */
static int byte_piece_value(const char *piece, size_t len)
{
    if (len != 6 || memcmp(piece, "<0x", 3) != 0 || piece[5] != '>')
        return -1;
    int hi = hex_digit(piece[3]), lo = hex_digit(piece[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

static int put_bytes(char *buf, int cap, int at, const char *src, size_t n)
{
    size_t room = (size_t)(cap - at);
    size_t take = n < room ? n : room;
    memcpy(buf + at, src, take);
    return at + (int)take;
}

int sl_tok_piece_bytes(const sl_tokenizer *t, int32_t id, char *buf, int cap)
{
    size_t len;
    const char *piece = spm_shim_id_to_piece(t->spm, id, &len);
    if (!piece || cap <= 0 || (t->control && t->control[id]))
        return 0;
    switch (spm_shim_piece_kind(t->spm, id)) {
    case SPM_PIECE_CONTROL:
        return 0;
    case SPM_PIECE_UNKNOWN:
        return put_bytes(buf, cap, 0, UNK_SURFACE, strlen(UNK_SURFACE));
    case SPM_PIECE_BYTE: {
        int byte = byte_piece_value(piece, len);
        if (byte < 0)
            return 0;
        buf[0] = (char)byte;
        return 1;
    }
    default:
        break;
    }
    const size_t sym = strlen(SPACE_SYMBOL);
    int at = 0;
    for (size_t i = 0; i < len && at < cap;) {
        if (len - i >= sym && memcmp(piece + i, SPACE_SYMBOL, sym) == 0) {
            at = put_bytes(buf, cap, at, " ", 1);
            i += sym;
        } else {
            at = put_bytes(buf, cap, at, piece + i, 1);
            i++;
        }
    }
    return at;
}

/* ---- vocabulary facts ---- */

int sl_tok_vocab_size(const sl_tokenizer *t) { return t->n_vocab; }
int sl_tok_bos(const sl_tokenizer *t) { return t->bos; }
int sl_tok_eos(const sl_tokenizer *t) { return t->eos; }
bool sl_tok_add_bos(const sl_tokenizer *t) { return t->add_bos; }

int sl_tok_piece_id(const sl_tokenizer *t, const char *piece)
{
    return spm_shim_piece_to_id(t->spm, piece, strlen(piece));
}

/* ---- .model -> GGUF vocabulary (for sluice convert) ---- */

static int read_whole_file(const char *path, uint8_t **out, size_t *n, sl_err *err)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return sl_fail(err, "%s: cannot open: %s", path, strerror(errno));
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            size_t new_cap = cap ? cap * 2 : 1 << 16;
            uint8_t *grown = realloc(buf, new_cap);
            if (!grown) {
                free(buf);
                fclose(fp);
                return sl_fail(err, "%s: out of memory", path);
            }
            buf = grown;
            cap = new_cap;
        }
        size_t got = fread(buf + len, 1, cap - len, fp);
        len += got;
        if (got == 0)
            break;
    }
    int bad = ferror(fp);
    fclose(fp);
    if (bad) {
        free(buf);
        return sl_fail(err, "%s: read error", path);
    }
    *out = buf;
    *n = len;
    return 0;
}

static const char *gguf_model_name(const Sentencepiece__ModelProto *m)
{
    int type = m->trainer_spec && m->trainer_spec->has_model_type
                   ? (int)m->trainer_spec->model_type
                   : SENTENCEPIECE__TRAINER_SPEC__MODEL_TYPE__UNIGRAM;
    if (type == SENTENCEPIECE__TRAINER_SPEC__MODEL_TYPE__BPE)
        return "llama";
    if (type == SENTENCEPIECE__TRAINER_SPEC__MODEL_TYPE__UNIGRAM)
        return "t5";
    return NULL;
}

static int copy_proto_pieces(const Sentencepiece__ModelProto *m, const char *name, sl_tok_vocab *v,
                             sl_err *err)
{
    v->n = (int)m->n_pieces;
    v->tokens = calloc(m->n_pieces, sizeof *v->tokens);
    v->scores = calloc(m->n_pieces, sizeof *v->scores);
    v->types = calloc(m->n_pieces, sizeof *v->types);
    if (!v->tokens || !v->scores || !v->types)
        return sl_fail(err, "%s: out of memory for %d pieces", name, v->n);
    for (int i = 0; i < v->n; i++) {
        const Sentencepiece__ModelProto__SentencePiece *p = m->pieces[i];
        int type = p->has_type ? (int)p->type : TT_NORMAL;
        if (type < TT_NORMAL || type > TT_BYTE)
            return sl_fail(err, "%s: piece %d has type %d, not a sentencepiece piece type", name, i, type);
        v->tokens[i] = strdup(p->piece ? p->piece : "");
        if (!v->tokens[i])
            return sl_fail(err, "%s: out of memory", name);
        v->scores[i] = p->has_score ? p->score : 0.0f;
        v->types[i] = type;
    }
    return 0;
}

static int copy_normalizer(const Sentencepiece__ModelProto *m, const char *name, sl_tok_vocab *v,
                           sl_err *err)
{
    const Sentencepiece__NormalizerSpec *ns = m->normalizer_spec;
    /* An absent spec or field means sentencepiece's defaults (true). */
    v->add_dummy_prefix = !ns || !ns->has_add_dummy_prefix || ns->add_dummy_prefix;
    v->remove_extra_whitespaces = !ns || !ns->has_remove_extra_whitespaces || ns->remove_extra_whitespaces;
    if (ns && ns->has_escape_whitespaces && !ns->escape_whitespaces)
        return sl_fail(err, "%s: normalizer_spec.escape_whitespaces is false, which GGUF cannot record", name);
    if (ns && ns->has_precompiled_charsmap && ns->precompiled_charsmap.len) {
        v->charsmap = malloc(ns->precompiled_charsmap.len);
        if (!v->charsmap)
            return sl_fail(err, "%s: out of memory", name);
        memcpy(v->charsmap, ns->precompiled_charsmap.data, ns->precompiled_charsmap.len);
        v->charsmap_len = ns->precompiled_charsmap.len;
    }
    return 0;
}

/* Special ids as sentencepiece itself resolves them (by piece name and
 * type), so a GGUF written from them names the same tokens. */
static int resolve_special_ids(const uint8_t *bytes, size_t n, const char *name, sl_tok_vocab *v,
                               sl_err *err)
{
    spm_shim *s = spm_shim_new();
    if (!s)
        return sl_fail(err, "%s: out of memory", name);
    sl_err shim;
    int rc = spm_shim_load_proto(s, bytes, n, shim.msg, sizeof shim.msg);
    if (rc == 0) {
        v->bos_id = spm_shim_bos_id(s);
        v->eos_id = spm_shim_eos_id(s);
        v->unk_id = spm_shim_unk_id(s);
        v->pad_id = spm_shim_pad_id(s);
    }
    spm_shim_free(s);
    return rc ? sl_fail(err, "%s: %s", name, shim.msg) : 0;
}

int sl_tok_proto_to_vocab(const uint8_t *bytes, size_t n, const char *name, sl_tok_vocab *v, sl_err *err)
{
    memset(v, 0, sizeof *v);
    v->bos_id = v->eos_id = v->unk_id = v->pad_id = -1;
    Sentencepiece__ModelProto *m = sentencepiece__model_proto__unpack(NULL, n, bytes);
    if (!m)
        return sl_fail(err, "%s: not a sentencepiece model (the ModelProto does not parse)", name);
    int rc = -1;
    v->model = gguf_model_name(m);
    if (!v->model)
        sl_fail(err, "%s: trainer_spec.model_type %d is neither BPE nor unigram", name,
                (int)m->trainer_spec->model_type);
    else if (m->n_pieces == 0 || m->n_pieces > INT32_MAX)
        sl_fail(err, "%s: the model has %zu pieces", name, m->n_pieces);
    else if (copy_proto_pieces(m, name, v, err) == 0 && copy_normalizer(m, name, v, err) == 0)
        rc = resolve_special_ids(bytes, n, name, v, err);
    sentencepiece__model_proto__free_unpacked(m, NULL);
    if (rc)
        sl_tok_vocab_free(v);
    return rc;
}

int sl_tok_model_to_vocab(const char *spm_path, sl_tok_vocab *v, sl_err *err)
{
    uint8_t *bytes = NULL;
    size_t n = 0;
    memset(v, 0, sizeof *v);
    if (read_whole_file(spm_path, &bytes, &n, err))
        return -1;
    int rc = sl_tok_proto_to_vocab(bytes, n, spm_path, v, err);
    free(bytes);
    return rc;
}

void sl_tok_vocab_free(sl_tok_vocab *v)
{
    if (!v)
        return;
    if (v->tokens)
        for (int i = 0; i < v->n; i++)
            free(v->tokens[i]);
    free(v->tokens);
    free(v->scores);
    free(v->types);
    free(v->charsmap);
    memset(v, 0, sizeof *v);
}

void sl_tok_vocab_to_gguf(const sl_tok_vocab *v, gguf_writer *w)
{
    gguf_set_str(w, KEY_MODEL, v->model);
    gguf_set_arr_str(w, KEY_TOKENS, (const char *const *)v->tokens, (uint64_t)v->n);
    gguf_set_arr(w, KEY_SCORES, GGUF_FLOAT32, v->scores, (uint64_t)v->n);
    gguf_set_arr(w, KEY_TYPES, GGUF_INT32, v->types, (uint64_t)v->n);
    const char *id_keys[] = {KEY_BOS, KEY_EOS, KEY_UNK, KEY_PAD};
    int32_t ids[] = {v->bos_id, v->eos_id, v->unk_id, v->pad_id};
    for (int k = 0; k < 4; k++)
        if (ids[k] >= 0)
            gguf_set_u32(w, id_keys[k], (uint32_t)ids[k]);
    gguf_set_bool(w, KEY_ADD_BOS, true);
    gguf_set_bool(w, KEY_ADD_EOS, false);
    gguf_set_bool(w, KEY_SPACE_PREFIX, v->add_dummy_prefix);
    gguf_set_bool(w, KEY_EXTRA_WS, v->remove_extra_whitespaces);
    if (v->charsmap_len)
        gguf_set_arr(w, KEY_CHARSMAP, GGUF_UINT8, v->charsmap, (uint64_t)v->charsmap_len);
}
