/* Tokenizer tests. Trains two small sentencepiece BPE models with spm_train
 * on license texts every Debian machine has (one with Gemma's settings, one
 * with Llama's, which brings NFKC normalization and a precompiled charsmap),
 * stores each vocabulary in a GGUF the way `sluice convert` does, and checks
 * that the GGUF-built tokenizer gives the .model's ids on varied text; a
 * third, unigram model covers GGUF "t5" vocabularies. Then
 * malformed vocabulary metadata must fail with errors naming the key. */
#include "tests/test.h"

#include <stdint.h>
#include <unistd.h>

#include "model/gguf.h"
#include "model/tokenizer.h"
#include "proto/sentencepiece_model.pb-c.h"

#define LICENSES "/usr/share/common-licenses/GPL-3,/usr/share/common-licenses/Apache-2.0"

static char tmp_dir[] = "/tmp/sl_tok_test_XXXXXX";

static const char *texts[] = {
    "The quick brown fox jumps over the lazy dog.",
    "This program is free software: you can redistribute it and/or modify it under the terms "
    "of the GNU General Public License as published by the Free Software Foundation.",
    "  two leading spaces, trailing three   ",
    "tabs\tand\ttabs\nnewlines\n\n\nand    runs     of spaces\r\n",
    "\xC3\x9Cn\xC3\xAF" "c\xC3\xB6" "d\xC3\xA9 acc\xC3\xA9nts: caf\xC3\xA9, na\xC3\xAFve, Z\xC3\xBCrich",
    "\xE4\xB8\xAD\xE6\x96\x87\xE5\xAD\x97\xE7\xAC\xA6 \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E",
    "emoji \xF0\x9F\xA6\x8A\xF0\x9F\x9A\x80 and \xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD!",
    "<start_of_turn>user\nWhat is a license?<end_of_turn>\n<start_of_turn>model\n",
    "a<start_of_turn>b<end_of_turn><start_of_turn>",
    "literal control text: <bos> <eos> <pad> <unk> <s> </s>",
    "full width \xEF\xBC\xA1\xEF\xBC\xA2\xEF\xBC\xA3\xEF\xBC\x91\xEF\xBC\x92 and \xEF\xAC\x81 ligature",
    "\x01\x02 low bytes \x7f and digits 0123456789 and symbols ~!@#$%^&*()_+{}|:\"<>?",
    " ",
    "\n",
    "x",
};
#define N_TEXTS (int)(sizeof texts / sizeof texts[0])

static char *path_in_tmp(const char *name)
{
    static char buf[4][512];
    static int next;
    char *p = buf[next++ % 4];
    snprintf(p, sizeof buf[0], "%s/%s", tmp_dir, name);
    return p;
}

static int train(const char *prefix, const char *settings)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "spm_train --input=%s --model_prefix=%s/%s --vocab_size=1000 "
             "--byte_fallback=true --num_threads=1 --minloglevel=2 %s >%s/%s.log 2>&1",
             LICENSES, tmp_dir, prefix, settings, tmp_dir, prefix);
    return system(cmd);
}

static uint8_t *read_file(const char *path, size_t *n)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)size + 1);
    *n = fread(buf, 1, (size_t)size, fp);
    fclose(fp);
    return buf;
}

/* ---- the vocabulary carried into the GGUF and the rebuilt proto ---- */

/* The proto sl_tok_gguf_to_proto builds must hold the .model's pieces,
 * scores (bit for bit: BPE merges by them) and types. */
static void check_proto_matches_model(const gguf_file *f, const char *model_path, bool gemma_like,
                                      bool unigram)
{
    size_t model_len = 0, built_len = 0;
    uint8_t *model_bytes = read_file(model_path, &model_len);
    uint8_t *built_bytes = NULL;
    sl_err err = {{0}};
    CHECK(model_bytes != NULL);
    CHECKF(sl_tok_gguf_to_proto(f, &built_bytes, &built_len, &err) == 0, "%s", err.msg);
    Sentencepiece__ModelProto *want = sentencepiece__model_proto__unpack(NULL, model_len, model_bytes);
    Sentencepiece__ModelProto *got = sentencepiece__model_proto__unpack(NULL, built_len, built_bytes);
    CHECK(want && got);
    if (want && got) {
        CHECK(got->n_pieces == want->n_pieces);
        int bad = 0;
        for (size_t i = 0; i < got->n_pieces && i < want->n_pieces; i++) {
            const Sentencepiece__ModelProto__SentencePiece *g = got->pieces[i], *w = want->pieces[i];
            float ws = w->has_score ? w->score : 0.0f;
            int wt = w->has_type ? (int)w->type : 1;
            if (strcmp(g->piece, w->piece) != 0 || memcmp(&g->score, &ws, sizeof ws) != 0 ||
                (int)g->type != wt)
                bad++;
        }
        CHECKF(bad == 0, "%d pieces differ from %s", bad, model_path);
        CHECK(got->trainer_spec->model_type == (unigram ? SENTENCEPIECE__TRAINER_SPEC__MODEL_TYPE__UNIGRAM
                                                        : SENTENCEPIECE__TRAINER_SPEC__MODEL_TYPE__BPE));
        CHECK(got->trainer_spec->byte_fallback);
        CHECK(got->normalizer_spec->add_dummy_prefix == !gemma_like);
        CHECK(got->normalizer_spec->remove_extra_whitespaces == !gemma_like);
        CHECK(got->normalizer_spec->escape_whitespaces);
        const ProtobufCBinaryData *wc = &want->normalizer_spec->precompiled_charsmap;
        const ProtobufCBinaryData *gc = &got->normalizer_spec->precompiled_charsmap;
        CHECK(gc->len == wc->len && (wc->len == 0 || memcmp(gc->data, wc->data, wc->len) == 0));
        CHECK(gemma_like ? wc->len == 0 : wc->len > 0);
    }
    if (want)
        sentencepiece__model_proto__free_unpacked(want, NULL);
    if (got)
        sentencepiece__model_proto__free_unpacked(got, NULL);
    free(model_bytes);
    free(built_bytes);
}

static int ids_equal(const int32_t *a, int na, const int32_t *b, int nb)
{
    return na == nb && (na == 0 || memcmp(a, b, (size_t)na * sizeof *a) == 0);
}

/* Concatenated streaming bytes of ids must equal the decoded text. */
static void check_stream_matches_decode(const sl_tokenizer *t, const int32_t *ids, int n, const char *decoded)
{
    size_t total = 0, cap = 64 * (size_t)n + 1;
    char *stream = malloc(cap);
    for (int i = 0; i < n; i++)
        total += (size_t)sl_tok_piece_bytes(t, ids[i], stream + total, 64);
    CHECKF(total == strlen(decoded) && memcmp(stream, decoded, total) == 0,
           "streamed %zu bytes, decode gave \"%s\"", total, decoded);
    free(stream);
}

static void compare_on_text(const sl_tokenizer *from_file, const sl_tokenizer *from_gguf,
                            const char *text, bool gemma_like)
{
    sl_err err = {{0}};
    int32_t *a = NULL, *b = NULL;
    int na = -1, nb = -1;
    size_t len = strlen(text);
    CHECKF(sl_tok_encode(from_file, text, len, &a, &na, &err) == 0, "%s", err.msg);
    CHECKF(sl_tok_encode(from_gguf, text, len, &b, &nb, &err) == 0, "%s", err.msg);
    CHECKF(ids_equal(a, na, b, nb), "ids differ on \"%s\" (%d vs %d ids)", text, na, nb);
    char *da = NULL, *db = NULL;
    CHECKF(sl_tok_decode(from_file, a, na, &da, &err) == 0, "%s", err.msg);
    CHECKF(sl_tok_decode(from_gguf, b, nb, &db, &err) == 0, "%s", err.msg);
    if (da && db) {
        CHECKF(strcmp(da, db) == 0, "decodes differ: \"%s\" vs \"%s\"", da, db);
        /* Identity normalization keeps every byte, so the text comes back. */
        if (gemma_like) {
            CHECKF(strcmp(db, text) == 0, "round trip gave \"%s\" for \"%s\"", db, text);
            check_stream_matches_decode(from_gguf, b, nb, db);
        }
    }
    free(da);
    free(db);
    free(a);
    free(b);
}

/* With a dummy prefix (Llama) every encoding starts with the piece for the
 * added space; skip it. */
static void check_specials(const sl_tokenizer *t, const sl_tokenizer *file_tok, bool gemma_like)
{
    int skip = gemma_like ? 0 : 1;
    sl_err err = {{0}};
    CHECK(sl_tok_bos(t) == sl_tok_bos(file_tok));
    CHECK(sl_tok_eos(t) == sl_tok_eos(file_tok));
    CHECK(sl_tok_vocab_size(t) == sl_tok_vocab_size(file_tok));
    int sot = sl_tok_piece_id(t, "<start_of_turn>");
    CHECK(sot >= 0 && sot == sl_tok_piece_id(file_tok, "<start_of_turn>"));
    CHECK(sl_tok_piece_id(t, "no such piece at all") == -1);
    int32_t *ids = NULL;
    int n = 0;
    CHECKF(sl_tok_encode(t, "<start_of_turn>", 15, &ids, &n, &err) == 0, "%s", err.msg);
    CHECK(n == 1 + skip && ids && ids[skip] == sot);
    if (!gemma_like)
        CHECK(ids && ids[0] == sl_tok_piece_id(t, "\xE2\x96\x81"));
    free(ids);
    /* The emoji is not in a 1000-piece vocabulary: byte fallback spells it. */
    CHECKF(sl_tok_encode(t, "\xF0\x9F\xA6\x8A", 4, &ids, &n, &err) == 0, "%s", err.msg);
    CHECK(n == 4 + skip && ids && ids[skip] == sl_tok_piece_id(t, "<0xF0>") &&
          ids[skip + 3] == sl_tok_piece_id(t, "<0x8A>"));
    free(ids);
}

static void check_piece_bytes(const sl_tokenizer *t)
{
    char buf[64];
    CHECK(sl_tok_piece_bytes(t, sl_tok_bos(t), buf, sizeof buf) == 0);
    CHECK(sl_tok_piece_bytes(t, sl_tok_eos(t), buf, sizeof buf) == 0);
    int id = sl_tok_piece_id(t, "<0x41>");
    CHECK(id >= 0 && sl_tok_piece_bytes(t, id, buf, sizeof buf) == 1 && buf[0] == 'A');
    id = sl_tok_piece_id(t, "\xE2\x96\x81the");
    CHECK(id >= 0 && sl_tok_piece_bytes(t, id, buf, sizeof buf) == 4 && memcmp(buf, " the", 4) == 0);
    CHECK(id >= 0 && sl_tok_piece_bytes(t, id, buf, 2) == 2 && memcmp(buf, " t", 2) == 0);
    id = sl_tok_piece_id(t, "<start_of_turn>");
    CHECK(sl_tok_piece_bytes(t, id, buf, sizeof buf) == 15 && memcmp(buf, "<start_of_turn>", 15) == 0);
    CHECK(sl_tok_piece_bytes(t, sl_tok_vocab_size(t), buf, sizeof buf) == 0);
    CHECK(sl_tok_piece_bytes(t, -1, buf, sizeof buf) == 0);
}

static void check_decode_rejects_bad_ids(const sl_tokenizer *t)
{
    sl_err err = {{0}};
    int32_t ids[] = {5, sl_tok_vocab_size(t)};
    char *text = NULL;
    CHECK(sl_tok_decode(t, ids, 2, &text, &err) == -1 && text == NULL);
    CHECK_ERR_HAS(err, "position 1");
}

static void check_model(const char *prefix, const char *settings, bool gemma_like, bool unigram)
{
    char model_path[512], gguf_path[512];
    snprintf(model_path, sizeof model_path, "%s/%s.model", tmp_dir, prefix);
    snprintf(gguf_path, sizeof gguf_path, "%s/%s.gguf", tmp_dir, prefix);
    int rc = train(prefix, settings);
    CHECKF(rc == 0, "spm_train failed (%d); see %s/%s.log", rc, tmp_dir, prefix);
    if (rc)
        return;
    sl_err err = {{0}};
    sl_tokenizer *from_file = NULL, *from_gguf = NULL;
    sl_tok_vocab vocab;
    gguf_file *f = NULL;
    CHECKF(sl_tok_load_file(&from_file, model_path, &err) == 0, "%s", err.msg);
    CHECKF(sl_tok_model_to_vocab(model_path, &vocab, &err) == 0, "%s", err.msg);
    if (!from_file || !vocab.tokens)
        return;
    CHECK(vocab.n == sl_tok_vocab_size(from_file));
    CHECK(strcmp(vocab.model, unigram ? "t5" : "llama") == 0);
    CHECK(vocab.add_dummy_prefix == !gemma_like);
    gguf_writer *w = gguf_writer_new();
    gguf_set_str(w, "general.architecture", "llama");
    sl_tok_vocab_to_gguf(&vocab, w);
    CHECKF(gguf_write(w, gguf_path, &err) == 0, "%s", err.msg);
    gguf_writer_free(w);
    sl_tok_vocab_free(&vocab);
    CHECKF(gguf_open(&f, gguf_path, &err) == 0, "%s", err.msg);
    if (f)
        CHECKF(sl_tok_load_gguf(&from_gguf, f, &err) == 0, "%s", err.msg);
    if (from_gguf) {
        check_proto_matches_model(f, model_path, gemma_like, unigram);
        for (int i = 0; i < N_TEXTS; i++)
            compare_on_text(from_file, from_gguf, texts[i], gemma_like);
        size_t corpus_len = 0;
        uint8_t *corpus = read_file("/usr/share/common-licenses/GPL-3", &corpus_len);
        if (corpus) {
            corpus[corpus_len < 6000 ? corpus_len : 6000] = '\0';
            compare_on_text(from_file, from_gguf, (const char *)corpus, gemma_like);
            free(corpus);
        }
        check_specials(from_gguf, from_file, gemma_like);
        check_decode_rejects_bad_ids(from_gguf);
        CHECK(sl_tok_add_bos(from_gguf));
        if (gemma_like) {
            check_piece_bytes(from_gguf);
            CHECK(sl_tok_bos(from_gguf) == 2 && sl_tok_eos(from_gguf) == 1);
        } else {
            CHECK(sl_tok_bos(from_gguf) == 1 && sl_tok_eos(from_gguf) == 2);
        }
    }
    sl_tok_free(from_gguf);
    sl_tok_free(from_file);
    gguf_close(f);
}

/* ---- malformed vocabulary metadata ---- */

/* A hand-made vocabulary: specials, a few merges, and the 256 byte pieces
 * byte fallback needs (sentencepiece insists on all of them). */
#define SMALL_WORDS 9
#define SMALL_N (SMALL_WORDS + 256)
static const char *small_words[SMALL_WORDS] = {
    "<unk>", "<s>", "</s>", "\xE2\x96\x81", "a", "b", "\xE2\x96\x81\x61" /* "\u2581a" */, "ab",
    "<start_of_turn>",
};
static const float small_word_scores[SMALL_WORDS] = {0, 0, 0, -1, -2, -3, -4, -5, 0};
/* <start_of_turn> is control, as llama.cpp's converter writes it for Gemma. */
static const int32_t small_word_types[SMALL_WORDS] = {2, 3, 3, 1, 1, 1, 1, 1, 3};
static char small_byte_names[256][8];
static const char *small_tokens[SMALL_N];
static float small_scores[SMALL_N];
static int32_t small_types[SMALL_N];

static void init_small_vocab(void)
{
    for (int i = 0; i < SMALL_WORDS; i++) {
        small_tokens[i] = small_words[i];
        small_scores[i] = small_word_scores[i];
        small_types[i] = small_word_types[i];
    }
    for (int b = 0; b < 256; b++) {
        snprintf(small_byte_names[b], sizeof small_byte_names[b], "<0x%02X>", b);
        small_tokens[SMALL_WORDS + b] = small_byte_names[b];
        small_scores[SMALL_WORDS + b] = 0;
        small_types[SMALL_WORDS + b] = 6;
    }
}

enum { OMIT_NONE, OMIT_TOKENS, OMIT_SCORES, OMIT_TYPES, OMIT_MODEL };

static gguf_writer *small_vocab(int omit)
{
    gguf_writer *w = gguf_writer_new();
    if (omit != OMIT_MODEL)
        gguf_set_str(w, "tokenizer.ggml.model", "llama");
    if (omit != OMIT_TOKENS)
        gguf_set_arr_str(w, "tokenizer.ggml.tokens", small_tokens, SMALL_N);
    if (omit != OMIT_SCORES)
        gguf_set_arr(w, "tokenizer.ggml.scores", GGUF_FLOAT32, small_scores, SMALL_N);
    if (omit != OMIT_TYPES)
        gguf_set_arr(w, "tokenizer.ggml.token_type", GGUF_INT32, small_types, SMALL_N);
    gguf_set_u32(w, "tokenizer.ggml.bos_token_id", 1);
    gguf_set_u32(w, "tokenizer.ggml.eos_token_id", 2);
    gguf_set_bool(w, "tokenizer.ggml.add_space_prefix", false);
    return w;
}

/* Writes w, reopens it, and returns the tokenizer built from it (NULL on
 * failure, with err filled). Also checks gguf_to_proto agrees. */
static sl_tokenizer *load_written(gguf_writer *w, const char *name, sl_err *err)
{
    char *path = path_in_tmp(name);
    gguf_file *f = NULL;
    sl_tokenizer *t = NULL;
    int rc = gguf_write(w, path, err);
    gguf_writer_free(w);
    CHECKF(rc == 0, "%s", err->msg);
    if (rc || gguf_open(&f, path, err)) {
        CHECKF(0, "cannot reopen %s: %s", path, err->msg);
        return NULL;
    }
    sl_err proto_err = {{0}};
    uint8_t *proto = NULL;
    size_t n = 0;
    int proto_rc = sl_tok_gguf_to_proto(f, &proto, &n, &proto_err);
    free(proto);
    if (sl_tok_load_gguf(&t, f, err))
        t = NULL;
    /* A failure in the metadata shows in both; sentencepiece's own checks
     * only in the load. */
    if (proto_rc)
        CHECKF(t == NULL && strcmp(proto_err.msg, err->msg) == 0, "%s vs %s", proto_err.msg, err->msg);
    gguf_close(f);
    return t;
}

static void expect_failure(gguf_writer *w, const char *name, const char *key)
{
    sl_err err = {{0}};
    sl_tokenizer *t = load_written(w, name, &err);
    CHECKF(t == NULL, "%s: loaded although %s is bad", name, key);
    CHECK_ERR_HAS(err, key);
    sl_tok_free(t);
}

static void check_small_vocab_works(void)
{
    sl_err err = {{0}};
    sl_tokenizer *t = load_written(small_vocab(OMIT_NONE), "small.gguf", &err);
    CHECKF(t != NULL, "%s", err.msg);
    if (!t)
        return;
    int32_t *ids = NULL;
    int n = 0;
    /* No dummy prefix: "ab" merges, " a" is one piece, "z" falls back to its
     * byte piece. */
    CHECKF(sl_tok_encode(t, "ab az", 5, &ids, &n, &err) == 0, "%s", err.msg);
    int32_t want[] = {7, 6, SMALL_WORDS + 'z'};
    CHECKF(ids_equal(ids, n, want, 3), "got %d ids", n);
    free(ids);
    CHECK(sl_tok_bos(t) == 1 && sl_tok_eos(t) == 2 && sl_tok_vocab_size(t) == SMALL_N);

    /* A control piece written in the text is recognised; bos and eos are
     * not (they stay sentencepiece control pieces). Decoding and streaming
     * drop control pieces. */
    const char *chat = "<start_of_turn>ab<s>";
    CHECKF(sl_tok_encode(t, chat, strlen(chat), &ids, &n, &err) == 0, "%s", err.msg);
    CHECK(n >= 3 && ids[0] == 8 && ids[1] == 7 && ids[2] != 1);
    free(ids);
    int32_t seq[] = {1, 8, 7, 6, 2};
    char *text = NULL, buf[32];
    CHECKF(sl_tok_decode(t, seq, 5, &text, &err) == 0, "%s", err.msg);
    CHECKF(text && strcmp(text, "ab a") == 0, "decoded \"%s\"", text ? text : "(null)");
    free(text);
    CHECK(sl_tok_piece_bytes(t, 8, buf, sizeof buf) == 0);
    CHECK(sl_tok_piece_id(t, "<start_of_turn>") == 8);
    sl_tok_free(t);
}

static void check_malformed(void)
{
    init_small_vocab();
    check_small_vocab_works();
    expect_failure(small_vocab(OMIT_TOKENS), "no_tokens.gguf", "tokenizer.ggml.tokens");
    expect_failure(small_vocab(OMIT_SCORES), "no_scores.gguf", "tokenizer.ggml.scores");
    expect_failure(small_vocab(OMIT_TYPES), "no_types.gguf", "tokenizer.ggml.token_type");
    expect_failure(small_vocab(OMIT_MODEL), "no_model.gguf", "tokenizer.ggml.model");

    gguf_writer *w = small_vocab(OMIT_NONE);
    gguf_set_arr(w, "tokenizer.ggml.scores", GGUF_FLOAT32, small_scores, SMALL_N - 1);
    expect_failure(w, "short_scores.gguf", "tokenizer.ggml.scores");

    w = small_vocab(OMIT_NONE);
    gguf_set_arr(w, "tokenizer.ggml.token_type", GGUF_INT32, small_types, SMALL_N - 2);
    expect_failure(w, "short_types.gguf", "tokenizer.ggml.token_type");

    w = small_vocab(OMIT_NONE);
    gguf_set_arr(w, "tokenizer.ggml.tokens", GGUF_INT32, small_types, SMALL_N);
    expect_failure(w, "int_tokens.gguf", "tokenizer.ggml.tokens");

    w = small_vocab(OMIT_NONE);
    gguf_set_str(w, "tokenizer.ggml.scores", "not an array");
    expect_failure(w, "string_scores.gguf", "tokenizer.ggml.scores");

    w = small_vocab(OMIT_NONE);
    gguf_set_arr(w, "tokenizer.ggml.token_type", GGUF_FLOAT32, small_scores, SMALL_N);
    expect_failure(w, "float_types.gguf", "tokenizer.ggml.token_type");

    w = small_vocab(OMIT_NONE);
    int32_t bad_types[SMALL_N];
    memcpy(bad_types, small_types, sizeof bad_types);
    bad_types[4] = 9;
    gguf_set_arr(w, "tokenizer.ggml.token_type", GGUF_INT32, bad_types, SMALL_N);
    expect_failure(w, "type_nine.gguf", "tokenizer.ggml.token_type[4]");

    w = small_vocab(OMIT_NONE);
    gguf_set_u32(w, "tokenizer.ggml.bos_token_id", SMALL_N);
    expect_failure(w, "bos_range.gguf", "tokenizer.ggml.bos_token_id");

    w = small_vocab(OMIT_NONE);
    gguf_set_str(w, "tokenizer.ggml.eos_token_id", "two");
    expect_failure(w, "eos_string.gguf", "tokenizer.ggml.eos_token_id");

    w = small_vocab(OMIT_NONE);
    gguf_set_str(w, "tokenizer.ggml.add_space_prefix", "no");
    expect_failure(w, "prefix_string.gguf", "tokenizer.ggml.add_space_prefix");

    w = small_vocab(OMIT_NONE);
    gguf_set_str(w, "tokenizer.ggml.model", "gpt2");
    expect_failure(w, "gpt2.gguf", "tokenizer.ggml.model");

    w = small_vocab(OMIT_NONE);
    gguf_set_arr(w, "tokenizer.ggml.precompiled_charsmap", GGUF_FLOAT32, small_scores, SMALL_N);
    expect_failure(w, "float_charsmap.gguf", "tokenizer.ggml.precompiled_charsmap");

    w = small_vocab(OMIT_NONE);
    const char *empty_piece[SMALL_N];
    memcpy(empty_piece, small_tokens, sizeof empty_piece);
    empty_piece[5] = "";
    gguf_set_arr_str(w, "tokenizer.ggml.tokens", empty_piece, SMALL_N);
    expect_failure(w, "empty_piece.gguf", "tokenizer.ggml.tokens[5]");

    w = small_vocab(OMIT_NONE);
    int32_t no_unk[SMALL_N];
    memcpy(no_unk, small_types, sizeof no_unk);
    no_unk[0] = 3;
    gguf_set_arr(w, "tokenizer.ggml.token_type", GGUF_INT32, no_unk, SMALL_N);
    expect_failure(w, "no_unk.gguf", "tokenizer.ggml.token_type");

    /* Duplicate pieces pass the metadata checks; sentencepiece refuses
     * them, and the message still says where the vocabulary came from. */
    w = small_vocab(OMIT_NONE);
    const char *dup[SMALL_N];
    memcpy(dup, small_tokens, sizeof dup);
    dup[5] = "a";
    gguf_set_arr_str(w, "tokenizer.ggml.tokens", dup, SMALL_N);
    expect_failure(w, "dup.gguf", "tokenizer.ggml");
}

static void check_model_file_errors(void)
{
    sl_err err = {{0}};
    sl_tokenizer *t = NULL;
    sl_tok_vocab v;
    CHECK(sl_tok_load_file(&t, path_in_tmp("missing.model"), &err) == -1);
    CHECK_ERR_HAS(err, "missing.model");
    CHECK(sl_tok_model_to_vocab(path_in_tmp("missing.model"), &v, &err) == -1);
    CHECK_ERR_HAS(err, "missing.model");
    const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x01};
    CHECK(sl_tok_proto_to_vocab(junk, sizeof junk, "junk", &v, &err) == -1);
    CHECK_ERR_HAS(err, "junk");
}

/* ---- "gemma4": BPE ordered by tokenizer.ggml.merges ---- */

#define G4_WORDS 15
#define G4_N (G4_WORDS + 256)

/* A vocabulary where merge order and piece scores disagree: scores favour
 * "ab" (as sentencepiece's BPE would take it), the merge list "b c". */
static gguf_writer *gemma4_vocab(bool with_merges)
{
    static const char *const words[G4_WORDS] = {
        "<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "a", "b", "c", "ab", "bc",
        "\xE2\x96\x81", ("\xE2\x96\x81" "a"), "\n", "\n\n", "<tool>"};
    static const int32_t word_types[G4_WORDS] = {3, 3, 3, 2, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 4};
    static char byte_names[256][8];
    static const char *tokens[G4_N];
    static float scores[G4_N];
    static int32_t types[G4_N];
    for (int i = 0; i < G4_WORDS; i++) {
        tokens[i] = words[i];
        types[i] = word_types[i];
        scores[i] = i == 8 ? 0.0f : -1.0f - (float)i;
    }
    for (int b = 0; b < 256; b++) {
        snprintf(byte_names[b], sizeof byte_names[b], "<0x%02X>", b);
        tokens[G4_WORDS + b] = byte_names[b];
        scores[G4_WORDS + b] = 0;
        types[G4_WORDS + b] = 6;
    }
    static const char *const merges[] = {"b c", "a b", "\xE2\x96\x81 a", "\n \n"};
    gguf_writer *w = gguf_writer_new();
    gguf_set_str(w, "tokenizer.ggml.model", "gemma4");
    gguf_set_arr_str(w, "tokenizer.ggml.tokens", tokens, G4_N);
    gguf_set_arr(w, "tokenizer.ggml.scores", GGUF_FLOAT32, scores, G4_N);
    gguf_set_arr(w, "tokenizer.ggml.token_type", GGUF_INT32, types, G4_N);
    if (with_merges)
        gguf_set_arr_str(w, "tokenizer.ggml.merges", merges, 4);
    gguf_set_u32(w, "tokenizer.ggml.bos_token_id", 2);
    gguf_set_u32(w, "tokenizer.ggml.eos_token_id", 1);
    gguf_set_u32(w, "tokenizer.ggml.unknown_token_id", 3);
    gguf_set_u32(w, "tokenizer.ggml.padding_token_id", 0);
    gguf_set_bool(w, "tokenizer.ggml.add_bos_token", false);
    return w;
}

static void expect_ids(const sl_tokenizer *t, const char *text, const int32_t *want, int n_want)
{
    int32_t *ids = NULL;
    int n = 0;
    sl_err err = {{0}};
    CHECKF(sl_tok_encode(t, text, strlen(text), &ids, &n, &err) == 0, "%s", err.msg);
    char got[256] = "";
    for (int i = 0; i < n && strlen(got) < 200; i++)
        snprintf(got + strlen(got), sizeof got - strlen(got), " %d", ids[i]);
    CHECKF(ids_equal(ids, n, want, n_want), "gemma4 \"%s\": got%s", text, got);
    free(ids);
}

static void check_gemma4(void)
{
    sl_err err = {{0}};
    sl_tokenizer *t = load_written(gemma4_vocab(true), "gemma4.gguf", &err);
    CHECKF(t != NULL, "tokenizer.ggml.model = \"gemma4\" loads: %s", err.msg);
    if (!t)
        return;
    /* merge rank decides, not score: "b c" (rank 0) before "a b" */
    expect_ids(t, "abc", (const int32_t[]){5, 9}, 2);
    /* spaces become U+2581 without a prefix; "a b" (1) before "▁ a" (2) */
    expect_ids(t, " ab", (const int32_t[]){10, 8}, 2);
    expect_ids(t, "a", (const int32_t[]){5}, 1);
    /* a newline run that is a token stays whole, else it is merged; newline
     * runs never merge with their neighbours */
    expect_ids(t, "\n\n", (const int32_t[]){13}, 1);
    expect_ids(t, "c\n\n\nc", (const int32_t[]){7, 13, 12, 7}, 4);
    /* specials written in the text (control and user-defined, not bos);
     * a character without a piece falls back to its bytes */
    expect_ids(t, "a<start_of_turn><tool>\xC3\xA9", (const int32_t[]){5, 4, 14, G4_WORDS + 0xC3,
                                                                  G4_WORDS + 0xA9}, 5);
    int32_t *ids = NULL;
    int n = 0;
    CHECK(sl_tok_encode(t, "<bos>", 5, &ids, &n, &err) == 0 && n > 1 && ids[0] != 2);
    free(ids);
    CHECK(sl_tok_add_bos(t) && sl_tok_bos(t) == 2 && sl_tok_eos(t) == 1);
    char *text = NULL;
    int32_t seq[] = {2, 10, 8, 13, 12, 7, 4, G4_WORDS + 0xC3, G4_WORDS + 0xA9};
    CHECKF(sl_tok_decode(t, seq, 9, &text, &err) == 0, "%s", err.msg);
    CHECKF(text && strcmp(text, " ab\n\n\nc\xC3\xA9") == 0, "gemma4 decoded \"%s\"",
           text ? text : "(null)");
    free(text);
    sl_tok_free(t);
    expect_failure(gemma4_vocab(false), "gemma4-nomerges.gguf", "tokenizer.ggml.merges");
}

int main(void)
{
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        return 1;
    }
    check_model("gemma_like",
                "--model_type=bpe --pad_id=0 --eos_id=1 --bos_id=2 --unk_id=3 '--bos_piece=<bos>' '--eos_piece=<eos>' "
                "'--user_defined_symbols=<start_of_turn>,<end_of_turn>' --add_dummy_prefix=false "
                "--remove_extra_whitespaces=false --normalization_rule_name=identity "
                "--allow_whitespace_only_pieces=true",
                true, false);
    check_model("llama_like", "--model_type=bpe '--user_defined_symbols=<start_of_turn>,<end_of_turn>'",
                false, false);
    /* GGUF "t5" vocabularies are unigram models. */
    check_model("unigram", "--model_type=unigram '--user_defined_symbols=<start_of_turn>,<end_of_turn>'",
                false, true);
    check_malformed();
    check_gemma4();
    check_model_file_errors();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
    if (t_failures == 0 && system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmp_dir);
    return test_finish("test_tokenizer");
}
