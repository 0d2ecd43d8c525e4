/* Chat requests through the driver, on the shipped tiny model: the prompt
 * ids are BOS and the Gemma turn text the driver always built, a format
 * forced by name replaces the model's (and is checked against the
 * vocabulary), and an unknown name fails the open naming it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/gguf.h"
#include "model/tokenizer.h"
#include "pipeline/client.h"
#include "tests/test.h"

static char model_path[4096];

static sl_pipeline *open_with(const char *chat_format, sl_err *err)
{
    pl_config c;
    pl_config_default(&c, model_path, 6);
    sl_pipeline_opts o;
    sl_pipeline_opts_default(&o);
    o.chat_format = chat_format;
    sl_pipeline *p = NULL;
    return sl_pipeline_open(&p, &c, &o, err) == 0 ? p : NULL;
}

/* The ids of BOS + text by the tokenizer alone. */
static int32_t *expected_ids(const char *text, int *n)
{
    sl_err err = {{0}};
    gguf_file *f = NULL;
    sl_tokenizer *t = NULL;
    int32_t *body = NULL, *all = NULL;
    int n_body = 0;
    if (gguf_open(&f, model_path, &err) == 0 && sl_tok_load_gguf(&t, f, &err) == 0 &&
        sl_tok_encode(t, text, strlen(text), &body, &n_body, &err) == 0 &&
        (all = malloc((size_t)(n_body + 1) * sizeof *all))) {
        all[0] = sl_tok_bos(t);
        memcpy(all + 1, body, (size_t)n_body * sizeof *body);
        *n = n_body + 1;
    }
    CHECKF(all != NULL, "%s", err.msg);
    free(body);
    if (t)
        sl_tok_free(t);
    if (f)
        gguf_close(f);
    return all;
}

static void check_default_format(void)
{
    sl_err err = {{0}};
    sl_pipeline *p = open_with(NULL, &err);
    CHECKF(p != NULL, "%s", err.msg);
    if (!p)
        return;
    sl_gen_params gp = {.prompt = "Licensed under the Apache License", .max_tokens = 4, .chat = true};
    sl_sampling_defaults(&gp.sampling);
    int32_t *got = NULL, *want;
    int n_got = 0, n_want = 0;
    CHECKF(sl_pipeline_tokenize(p, &gp, &got, &n_got, &err) == 0, "%s", err.msg);
    want = expected_ids("<start_of_turn>user\nLicensed under the Apache License<end_of_turn>\n"
                        "<start_of_turn>model\n", &n_want);
    CHECK(got && want && n_got == n_want && memcmp(got, want, (size_t)n_want * sizeof *want) == 0);
    free(got);
    free(want);
    gp.no_bos = true;
    CHECK(sl_pipeline_tokenize(p, &gp, &got, &n_got, &err) == 0 && n_got == n_want - 1);
    free(got);
    uint64_t id;
    CHECKF(sl_pipeline_submit(p, &gp, &id, &err) == 0, "%s", err.msg);
    sl_event ev;
    int done = 0;
    while (sl_pipeline_next(p, &ev, 10000, &err) == 1)
        done += ev.kind == SL_EV_DONE;
    CHECK(done == 1);
    sl_pipeline_close(p);
}

static void check_forced_format(void)
{
    sl_err err = {{0}};
    sl_pipeline *p = open_with("gemma4", &err);
    CHECKF(p != NULL, "%s", err.msg);
    if (p) {
        sl_gen_params gp = {.prompt = "hello", .max_tokens = 4, .chat = true};
        sl_sampling_defaults(&gp.sampling);
        uint64_t id;
        CHECK(sl_pipeline_submit(p, &gp, &id, &err) == -1);
        CHECK_ERR_HAS(err, "chat mode needs <|turn>/<turn|> in the vocabulary (chat format gemma4)");
        /* plain requests do not care */
        gp.chat = false;
        CHECKF(sl_pipeline_submit(p, &gp, &id, &err) == 0, "%s", err.msg);
        sl_event ev;
        while (sl_pipeline_next(p, &ev, 10000, &err) == 1)
            ;
        sl_pipeline_close(p);
    }
    CHECK(open_with("chatml", &err) == NULL);
    CHECK_ERR_HAS(err, "unknown chat format 'chatml'");
}

int main(void)
{
    const char *src = getenv("SLUICE_SRC");
    snprintf(model_path, sizeof model_path, "%s/models/tiny-gemma3.gguf", src ? src : ".");
    check_default_format();
    check_forced_format();
    return test_finish("test_pipeline_chat");
}
