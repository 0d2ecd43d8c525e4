/* Chat turn formats: exact prompt text of every format, Gemma's system
 * folding, the order rules, template recognition (and refusal of an
 * unknown template naming its first line), the choice from a GGUF's
 * template, architecture and vocabulary, and that `run --chat` feeds the
 * shipped model the ids it always did. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/chat.h"
#include "test.h"

static const sl_chat_format *named(const char *name)
{
    const sl_chat_format *f = NULL;
    sl_err err = {{0}};
    CHECKF(sl_chat_by_name(&f, name, &err) == 0, "%s", err.msg);
    return f;
}

static void expect_text(const char *fmt_name, const sl_chat_msg *m, int n, bool gen, const char *want)
{
    char *got = NULL;
    sl_err err = {{0}};
    const sl_chat_format *f = named(fmt_name);
    if (!f)
        return;
    CHECKF(sl_chat_apply(f, m, n, gen, &got, &err) == 0, "%s: %s", fmt_name, err.msg);
    CHECKF(got && strcmp(got, want) == 0, "%s:\n got  [%s]\n want [%s]", fmt_name, got ? got : "(null)",
           want);
    free(got);
}

static void expect_refused(const char *fmt_name, const sl_chat_msg *m, int n, const char *frag)
{
    char *got = (char *)"unset";
    sl_err err = {{0}};
    CHECK(sl_chat_apply(named(fmt_name), m, n, true, &got, &err) == -1);
    CHECK(got == NULL);
    CHECK_ERR_HAS(err, frag);
}

static const sl_chat_msg CONVO[] = {
    {SL_CHAT_SYSTEM, "Be brief."},
    {SL_CHAT_USER, "  Hi there \n"},
    {SL_CHAT_ASSISTANT, "Hello!\n"},
    {SL_CHAT_USER, "Bye"},
};

static void test_gemma(void)
{
    const sl_chat_msg one[] = {{SL_CHAT_USER, "hello"}};
    expect_text("gemma", one, 1, true, "<start_of_turn>user\nhello<end_of_turn>\n<start_of_turn>model\n");
    expect_text("gemma", one, 1, false, "<start_of_turn>user\nhello<end_of_turn>\n");
    /* the system text prefixes the first user turn, untrimmed, then a blank line */
    expect_text("gemma", CONVO, 4, true,
                "<start_of_turn>user\nBe brief.\n\nHi there<end_of_turn>\n"
                "<start_of_turn>model\nHello!<end_of_turn>\n"
                "<start_of_turn>user\nBye<end_of_turn>\n"
                "<start_of_turn>model\n");
    const sl_chat_msg sys_ws[] = {{SL_CHAT_SYSTEM, " Rules \n"}, {SL_CHAT_USER, "Go"}};
    expect_text("gemma", sys_ws, 2, false, "<start_of_turn>user\n Rules \n\n\nGo<end_of_turn>\n");

    const sl_chat_msg late_sys[] = {{SL_CHAT_USER, "a"}, {SL_CHAT_ASSISTANT, "b"}, {SL_CHAT_SYSTEM, "c"}};
    expect_refused("gemma", late_sys, 3, "message 2: a system message may only come first");
    const sl_chat_msg two_users[] = {{SL_CHAT_USER, "a"}, {SL_CHAT_USER, "b"}};
    expect_refused("gemma", two_users, 2, "message 1 is user: roles must alternate user/assistant");
    const sl_chat_msg model_first[] = {{SL_CHAT_SYSTEM, "s"}, {SL_CHAT_ASSISTANT, "b"}};
    expect_refused("gemma", model_first, 2, "message 1 is assistant: roles must alternate");
    expect_refused("gemma", CONVO, 1, "a system message needs a user message after it");
    expect_refused("gemma", CONVO, 0, "at least one message");
    const sl_chat_msg bad_role[] = {{(sl_chat_role)7, "x"}};
    expect_refused("gemma", bad_role, 1, "message 0: unknown role 7");
}

static void test_gemma4(void)
{
    expect_text("gemma4", CONVO, 4, true,
                "<|turn>system\nBe brief.<turn|>\n"
                "<|turn>user\nHi there<turn|>\n"
                "<|turn>model\nHello!<turn|>\n"
                "<|turn>user\nBye<turn|>\n"
                "<|turn>model\n");
    expect_text("gemma4", CONVO, 2, false, "<|turn>system\nBe brief.<turn|>\n<|turn>user\nHi there<turn|>\n");
    /* Gemma 4 has a system role of its own and no alternation rule */
    expect_text("gemma4", CONVO, 1, false, "<|turn>system\nBe brief.<turn|>\n");
    const sl_chat_msg two_users[] = {{SL_CHAT_USER, "a"}, {SL_CHAT_USER, "b"}};
    expect_text("gemma4", two_users, 2, true, "<|turn>user\na<turn|>\n<|turn>user\nb<turn|>\n<|turn>model\n");
    expect_text("gemma4-no-thinking", CONVO + 3, 1, true,
                "<|turn>user\nBye<turn|>\n<|turn>model\n<|channel>thought\n<channel|>");
    expect_text("gemma4-no-thinking", CONVO + 3, 1, false, "<|turn>user\nBye<turn|>\n");
}

static void test_names_and_roles(void)
{
    static const char *const names[] = {"gemma", "gemma4", "gemma4-no-thinking"};
    static const char *const ends[] = {"<end_of_turn>", "<turn|>", "<turn|>"};
    for (int i = 0; i < 3; i++) {
        const sl_chat_format *f = named(names[i]);
        CHECK(f && strcmp(sl_chat_name(f), names[i]) == 0 && strcmp(sl_chat_end_of_turn(f), ends[i]) == 0);
    }
    const sl_chat_format *f = NULL;
    sl_err err = {{0}};
    CHECK(sl_chat_by_name(&f, "chatml", &err) == -1 && f == NULL);
    CHECK_ERR_HAS(err, "unknown chat format 'chatml' (known: gemma, gemma4, gemma4-no-thinking)");
    sl_chat_role r = SL_CHAT_USER;
    CHECK(sl_chat_role_parse("system", &r, &err) == 0 && r == SL_CHAT_SYSTEM);
    CHECK(sl_chat_role_parse("assistant", &r, &err) == 0 && r == SL_CHAT_ASSISTANT);
    CHECK(sl_chat_role_parse("user", &r, &err) == 0 && r == SL_CHAT_USER);
    CHECK(sl_chat_role_parse("model", &r, &err) == -1);
    CHECK_ERR_HAS(err, "unknown chat role 'model' (expected system, user or assistant)");
}

/* Abridged from the shipped templates: the parts the recogniser reads. */
static const char GEMMA3_TMPL[] =
    "{{ bos_token }}\n{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}\n"
    "{%- endif -%}\n{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "{%- if add_generation_prompt -%}{{'<start_of_turn>model\\n'}}{%- endif -%}\n";
static const char GEMMA4_SMALL_TMPL[] =
    "{{- bos_token -}}\n{{- '<|channel>thought\\n' + thinking_text + '\\n<channel|>' -}}\n"
    "{{- '<|turn>' + role + '\\n' -}}{{- '<turn|>\\n' -}}\n"
    "{%- if add_generation_prompt -%}{{- '<|turn>model\\n' -}}{%- endif -%}\n";
static const char GEMMA4_LARGE_TMPL[] =
    "{{- bos_token -}}\n{{- '<|turn>' + role + '\\n' -}}\n"
    "{%- if add_generation_prompt -%}{{- '<|turn>model\\n' -}}\n"
    "{%- if not enable_thinking | default(false) -%}{{- '<|channel>thought\\n<channel|>' -}}{%- endif -%}\n"
    "{%- endif -%}\n";
static const char CHATML_TMPL[] =
    "\n  {% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content']}}\n"
    "{% endfor %}\n";

static const char *recognised(const char *tmpl, sl_err *err)
{
    const sl_chat_format *f = NULL;
    return sl_chat_from_template(&f, tmpl, err) == 0 && f ? sl_chat_name(f) : NULL;
}

static void test_templates(void)
{
    sl_err err = {{0}};
    const char *name = recognised(GEMMA3_TMPL, &err);
    CHECKF(name && strcmp(name, "gemma") == 0, "%s", name ? name : err.msg);
    name = recognised(GEMMA4_SMALL_TMPL, &err);
    CHECKF(name && strcmp(name, "gemma4") == 0, "%s", name ? name : err.msg);
    name = recognised(GEMMA4_LARGE_TMPL, &err);
    CHECKF(name && strcmp(name, "gemma4-no-thinking") == 0, "%s", name ? name : err.msg);
    CHECK(recognised(CHATML_TMPL, &err) == NULL);
    CHECK_ERR_HAS(err, "unknown chat template (first line: '{% for message in messages %}{{'<|im_start|>'");
    CHECK(recognised("", &err) == NULL);
    CHECK_ERR_HAS(err, "unknown chat template (first line: '')");
    /* a long first line is cut, not overflowed */
    char long_line[600];
    memset(long_line, 'x', sizeof long_line - 1);
    long_line[sizeof long_line - 1] = '\0';
    CHECK(recognised(long_line, &err) == NULL);
    CHECK_ERR_HAS(err, "first line: 'xxxxxxxx");
}

/* ---- from a GGUF ---- */

static char tmp_dir[256];

/* A vocabulary with the given turn markers (user-defined pieces), an
 * architecture and maybe a template, written and reopened. */
static gguf_file *small_model(const char *name, const char *arch, const char *open, const char *close,
                              const char *tmpl)
{
    const char *tokens[] = {"<unk>", "<s>", "</s>", open, close, "\xe2\x96\x81", "a", "b"};
    float scores[] = {0, 0, 0, 0, 0, -1, -2, -3};
    int32_t types[] = {2, 3, 3, 4, 4, 1, 1, 1};
    gguf_writer *w = gguf_writer_new();
    gguf_set_str(w, "general.architecture", arch);
    gguf_set_str(w, "tokenizer.ggml.model", "llama");
    gguf_set_arr_str(w, "tokenizer.ggml.tokens", tokens, 8);
    gguf_set_arr(w, "tokenizer.ggml.scores", GGUF_FLOAT32, scores, 8);
    gguf_set_arr(w, "tokenizer.ggml.token_type", GGUF_INT32, types, 8);
    gguf_set_u32(w, "tokenizer.ggml.bos_token_id", 1);
    gguf_set_u32(w, "tokenizer.ggml.eos_token_id", 2);
    if (tmpl)
        gguf_set_str(w, "tokenizer.chat_template", tmpl);
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmp_dir, name);
    sl_err err = {{0}};
    gguf_file *f = NULL;
    int rc = gguf_write(w, path, &err);
    gguf_writer_free(w);
    CHECKF(rc == 0 && gguf_open(&f, path, &err) == 0, "%s: %s", name, err.msg);
    return f;
}

/* The format chosen for a small model, NULL on failure (err filled);
 * *end_id gets the end-of-turn id when the vocabulary holds the markers. */
static const char *chosen(gguf_file *f, int32_t *end_id, sl_err *err)
{
    sl_tokenizer *tok = NULL;
    const sl_chat_format *fmt = NULL;
    const char *name = NULL;
    *end_id = -1;
    if (f && sl_tok_load_gguf(&tok, f, err) == 0 && sl_chat_from_gguf(&fmt, f, tok, err) == 0) {
        name = sl_chat_name(fmt);
        sl_err vocab_err = {{0}};
        if (sl_chat_check_vocab(fmt, tok, end_id, &vocab_err))
            *err = vocab_err;
    }
    sl_tok_free(tok);
    if (f)
        gguf_close(f);
    return name;
}

static void test_from_gguf(void)
{
    sl_err err = {{0}};
    int32_t end_id;
    const char *name = chosen(small_model("g3.gguf", "gemma3", "<start_of_turn>", "<end_of_turn>", NULL),
                              &end_id, &err);
    CHECKF(name && strcmp(name, "gemma") == 0 && end_id == 4, "%s %d", name ? name : err.msg, end_id);
    name = chosen(small_model("g4.gguf", "gemma4", "<|turn>", "<turn|>", NULL), &end_id, &err);
    CHECKF(name && strcmp(name, "gemma4") == 0 && end_id == 4, "%s %d", name ? name : err.msg, end_id);
    /* a gemma4 file with Gemma's markers (what `sluice synth` writes) */
    name = chosen(small_model("g4old.gguf", "gemma4", "<start_of_turn>", "<end_of_turn>", NULL), &end_id, &err);
    CHECKF(name && strcmp(name, "gemma") == 0 && end_id == 4, "%s", name ? name : err.msg);
    /* the architecture's format when the vocabulary holds neither: check_vocab says what is missing */
    name = chosen(small_model("g4none.gguf", "gemma4", "<x>", "<y>", NULL), &end_id, &err);
    CHECKF(name && strcmp(name, "gemma4") == 0 && end_id == -1, "%s", name ? name : err.msg);
    CHECK_ERR_HAS(err, "chat mode needs <|turn>/<turn|> in the vocabulary (chat format gemma4)");
    name = chosen(small_model("llama.gguf", "llama", "<x>", "<y>", NULL), &end_id, &err);
    CHECKF(name && strcmp(name, "gemma") == 0 && end_id == -1, "%s", name ? name : err.msg);
    CHECK_ERR_HAS(err, "chat mode needs <start_of_turn>/<end_of_turn> in the vocabulary");
    /* a template wins over the architecture */
    name = chosen(small_model("g3t.gguf", "gemma3", "<|turn>", "<turn|>", GEMMA4_LARGE_TMPL), &end_id, &err);
    CHECKF(name && strcmp(name, "gemma4-no-thinking") == 0 && end_id == 4, "%s", name ? name : err.msg);
    name = chosen(small_model("chatml.gguf", "gemma3", "<start_of_turn>", "<end_of_turn>", CHATML_TMPL),
                  &end_id, &err);
    CHECK(name == NULL);
    CHECK_ERR_HAS(err, "chatml.gguf: unknown chat template (first line: '{% for message");
}

/* `run --chat` on the shipped model: BOS, then the text the driver always
 * wrapped the prompt in, encoded as one string. */
static void test_shipped_model_ids(void)
{
    const char *src = getenv("SLUICE_SRC");
    char path[4096];
    snprintf(path, sizeof path, "%s/models/tiny-gemma3.gguf", src ? src : ".");
    sl_err err = {{0}};
    gguf_file *f = NULL;
    sl_tokenizer *tok = NULL;
    const sl_chat_format *fmt = NULL;
    if (gguf_open(&f, path, &err) || sl_tok_load_gguf(&tok, f, &err) || sl_chat_from_gguf(&fmt, f, tok, &err)) {
        CHECKF(0, "%s", err.msg);
        goto done;
    }
    CHECK(strcmp(sl_chat_name(fmt), "gemma") == 0);
    const char *prompt = "Licensed under the Apache License";
    const char *old = "<start_of_turn>user\nLicensed under the Apache License<end_of_turn>\n<start_of_turn>model\n";
    int32_t *want = NULL, *got = NULL;
    int n_want = 0, n_got = 0;
    char *text = NULL;
    sl_chat_msg turn = {SL_CHAT_USER, prompt};
    CHECK(sl_tok_encode(tok, old, strlen(old), &want, &n_want, &err) == 0);
    CHECK(sl_chat_apply(fmt, &turn, 1, true, &text, &err) == 0);
    CHECK(text && sl_tok_encode_prompt(tok, text, true, &got, &n_got, &err) == 0);
    CHECKF(n_got == n_want + 1 && n_got == 22, "%d ids, %d before", n_got, n_want + 1);
    CHECK(got && got[0] == sl_tok_bos(tok) && want && memcmp(got + 1, want, (size_t)n_want * sizeof *want) == 0);
    int32_t end_id = -1;
    CHECK(sl_chat_check_vocab(fmt, tok, &end_id, &err) == 0 && end_id == sl_tok_piece_id(tok, "<end_of_turn>"));
    free(want);
    free(got);
    free(text);
    /* no BOS asked for: the text alone */
    CHECK(sl_tok_encode_prompt(tok, "", false, &got, &n_got, &err) == 0 && n_got == 0);
    free(got);
done:
    sl_tok_free(tok);
    if (f)
        gguf_close(f);
}

int main(void)
{
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/sluice_test_chat_XXXXXX");
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_gemma();
    test_gemma4();
    test_names_and_roles();
    test_templates();
    test_from_gguf();
    test_shipped_model_ids();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "test_chat: could not remove %s\n", tmp_dir);
    return test_finish("test_chat");
}
