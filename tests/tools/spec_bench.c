/* Measures one-process greedy speculative decoding against plain decoding
 * in the same run: acceptance rate, mean tokens per verification and
 * speed-up, for fixed k, auto k, and prompt lookup.
 * usage: spec_bench TARGET DRAFT PROMPT N_GEN */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/lm.h"
#include "model/tokenizer.h"
#include "stages/spec_greedy.h"

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int encode(sl_lm *lm, const char *text, int32_t **ids, int *n, sl_err *err)
{
    sl_tokenizer *tok = NULL;
    if (sl_tok_load_gguf(&tok, sl_lm_model(lm)->gguf, err) < 0)
        return -1;
    int rc = sl_tok_encode(tok, text, strlen(text), ids, n, err);
    sl_tok_free(tok);
    return rc;
}

/* Runs one configuration; returns seconds or -1. */
static double run(sl_lm *target, sl_lm *draft, const sl_spec_opts *o, const int32_t *prompt,
                  int n_prompt, int n_gen, int32_t *out, sl_spec_stats *st)
{
    sl_err err = {{0}};
    sl_lm_truncate(target, 0);
    if (draft)
        sl_lm_truncate(draft, 0);
    double t0 = now_seconds();
    if (sl_spec_generate_greedy(target, draft, o, prompt, n_prompt, n_gen, out, st, &err) < 0) {
        fprintf(stderr, "spec_bench: %s\n", err.msg);
        return -1;
    }
    return now_seconds() - t0;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: spec_bench TARGET DRAFT PROMPT N_GEN\n");
        return 2;
    }
    int n_gen = atoi(argv[4]);
    sl_err err = {{0}};
    sl_lm *target = NULL, *draft = NULL;
    if (sl_lm_open(&target, argv[1], 1024, 40, &err) < 0 ||
        sl_lm_open(&draft, argv[2], 1024, 40, &err) < 0 ||
        sl_lm_check_vocab(target, argv[1], draft, argv[2], &err) < 0) {
        fprintf(stderr, "spec_bench: %s\n", err.msg);
        return 1;
    }
    int32_t *prompt = NULL;
    int n_prompt = 0;
    if (encode(target, argv[3], &prompt, &n_prompt, &err) < 0) {
        fprintf(stderr, "spec_bench: %s\n", err.msg);
        return 1;
    }
    int32_t *want = malloc((size_t)n_gen * sizeof *want), *got = malloc((size_t)n_gen * sizeof *got);
    sl_spec_opts plain_o = {0};
    sl_spec_stats st;
    double plain = run(target, NULL, &plain_o, prompt, n_prompt, n_gen, want, &st);
    printf("plain: %d prompt tokens, %d generated, %.1f tok/s\n", n_prompt, n_gen, n_gen / plain);
    const struct { const char *name; sl_spec_opts o; } cases[] = {
        {"draft k=2", {2, false, false}},   {"draft k=4", {4, false, false}},
        {"draft k=8", {8, false, false}},   {"draft auto(<=8)", {8, true, false}},
        {"lookup k=4", {4, false, true}},   {"lookup k=8", {8, false, true}},
        {"lookup auto(<=8)", {8, true, true}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        double s = run(target, draft, &cases[i].o, prompt, n_prompt, n_gen, got, &st);
        printf("%-17s acceptance %.3f  mean tokens/verify %.2f  %.1f tok/s  speed-up %.2fx  %s\n",
               cases[i].name, sl_spec_acceptance(&st), sl_spec_mean_emitted(&st), n_gen / s,
               plain / s, memcmp(want, got, (size_t)n_gen * sizeof *got) ? "DIFFERS" : "same");
    }
    free(want);
    free(got);
    free(prompt);
    sl_lm_free(target);
    sl_lm_free(draft);
    return 0;
}
