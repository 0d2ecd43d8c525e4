/* Speculative greedy decoding on the shipped tiny target and draft: the
 * tokens equal plain greedy decoding token for token for several k, the
 * target's KV cache after rollbacks equals the plain run's at the same
 * length, and a draft with another vocabulary is refused naming both. */
#include "model/lm.h"
#include "stages/spec_greedy.h"
#include "tests/test.h"
#include "util/clock.h"

#include <unistd.h>

#define N_GEN 24
#define N_CTX 128

static char target_path[1024], draft_path[1024];

/* The clock of this process (util/clock.h's sl_now_s, defined here, so the
 * linker takes it instead of util/clock.c's): each reading moves it one
 * millisecond. The loop's adaptive k reads it around its steps and its
 * draft's catch-ups, and the model reads it around each matmul
 * (kernels/matmul.c's activation pass), so a step's measured time is a
 * count of the matmuls it ran: a batch of rows costs what one row does, a
 * catch-up of n rows a row's share of one evaluation. The decisions the
 * tests below check then follow the code, not this machine's load (on
 * the real clock a loaded machine once made the target as its own draft
 * decline every probe: test_greedy_decline). */
static long g_ticks;
double sl_now_s(void)
{
    return 1e-3 * (double)__atomic_add_fetch(&g_ticks, 1, __ATOMIC_RELAXED);
}

static sl_lm *open_lm(const char *path)
{
    sl_err err = {{0}};
    sl_lm *lm = NULL;
    if (sl_lm_open(&lm, path, N_CTX, 16, &err) < 0)
        fprintf(stderr, "%s\n", err.msg);
    return lm;
}

/* Bitwise: the same positions went through the same per-row arithmetic. */
static int kv_equal(sl_lm *a, sl_lm *b, int len)
{
    const sl_model *m = sl_lm_model(a);
    for (int il = 0; il < m->cfg.n_layer; il++) {
        /* the runner's caches keep every position (no rings): slot = position */
        size_t n = (size_t)len * (size_t)sl_kv_row_bytes(sl_lm_kv(a), il);
        if (memcmp(sl_kv_k(sl_lm_kv(a), 0, il), sl_kv_k(sl_lm_kv(b), 0, il), n) ||
            memcmp(sl_kv_v(sl_lm_kv(a), 0, il), sl_kv_v(sl_lm_kv(b), 0, il), n))
            return 0;
    }
    return 1;
}

static void test_greedy_matches_plain(void)
{
    sl_lm *plain = open_lm(target_path), *target = open_lm(target_path);
    sl_lm *draft = open_lm(draft_path);
    CHECK(plain && target && draft);
    if (!plain || !target || !draft)
        goto done;
    const int32_t prompt[] = {2, 40, 41, 42, 43, 100, 200, 300, 41, 42};
    const int n_prompt = (int)(sizeof prompt / sizeof *prompt);
    int32_t want[N_GEN], got[N_GEN];
    sl_err err = {{0}};
    sl_spec_opts none = {0};
    CHECK(sl_spec_generate_greedy(plain, NULL, &none, prompt, n_prompt, N_GEN, want, NULL,
                                  &err) == 0);
    /* fixed k, auto k, and prompt lookup (the prompt repeats "41 42") */
    const sl_spec_opts cases[] = {{1, false, false}, {2, false, false}, {4, false, false},
                                  {8, false, false}, {8, true, false},  {4, false, true},
                                  {8, true, true}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        sl_lm_truncate(target, 0);
        sl_lm_truncate(draft, 0);
        sl_spec_stats st;
        sl_spec_stats_init(&st);
        int rc = sl_spec_generate_greedy(target, draft, &cases[i], prompt, n_prompt, N_GEN, got,
                                         &st, &err);
        CHECKF(rc == 0, "%s", err.msg);
        CHECKF(memcmp(want, got, sizeof want) == 0, "case %zu differs from plain greedy", i);
        CHECK(sl_lm_len(target) == n_prompt + N_GEN - 1);
        CHECKF(kv_equal(plain, target, n_prompt + N_GEN - 1), "case %zu: KV differs", i);
        /* adaptive k may decline every probe of a pair that does not pay
         * (its catch-ups score the draft: test_greedy_decline) */
        CHECK((st.steps > 0 || cases[i].auto_k) && st.drafted >= st.accepted);
        fprintf(stderr, "case %zu: acceptance %.3f mean emitted %.2f\n", i,
                sl_spec_acceptance(&st), sl_spec_mean_emitted(&st));
    }
done:
    sl_lm_free(plain);
    sl_lm_free(target);
    sl_lm_free(draft);
}

/* A synthetic model has a 512-token vocabulary, the tiny models 1536. */
static void test_vocab_mismatch(void)
{
    const char *sluice = getenv("SLUICE");
    CHECK(sluice != NULL);
    if (!sluice)
        return;
    char path[] = "/tmp/sluice-spec-vocab-XXXXXX", cmd[2048];
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    close(fd);
    snprintf(cmd, sizeof cmd, "%s synth --arch gemma3 --size test -o %s >/dev/null", sluice, path);
    CHECK(system(cmd) == 0);
    sl_lm *target = open_lm(target_path), *draft = open_lm(draft_path), *other = open_lm(path);
    CHECK(target && draft && other);
    if (target && draft && other) {
        sl_err err = {{0}};
        CHECK(sl_lm_check_vocab(target, target_path, draft, draft_path, &err) == 0);
        CHECK(sl_lm_check_vocab(target, target_path, other, path, &err) < 0);
        CHECK_ERR_HAS(err, path);
        CHECK_ERR_HAS(err, target_path);
    }
    sl_lm_free(target);
    sl_lm_free(draft);
    sl_lm_free(other);
    unlink(path);
}

/* The draft's greedy predictions of text[from..n) (each from the text
 * before it) that equal the text. */
static int agreement(sl_lm *draft, const int32_t *text, int from, int n)
{
    sl_err err = {{0}};
    int n_vocab = sl_lm_model(draft)->cfg.n_vocab, hits = 0;
    sl_lm_truncate(draft, 0);
    for (int at = 0; at < n - 1; at += 16) {
        int len = n - 1 - at < 16 ? n - 1 - at : 16;
        const float *logits;
        CHECKF(sl_lm_eval(draft, text + at, len, &logits, &err) == 0, "%s", err.msg);
        for (int i = 0; i < len; i++)
            hits += at + i + 1 >= from && sl_argmax(logits + (size_t)i * n_vocab, n_vocab) == text[at + i + 1];
    }
    sl_lm_truncate(draft, 0);
    return hits;
}

/* The loop's adaptive k declines a probe its catch-up says cannot pay, as
 * the draft stage's do (stages/spec_greedy.c, spa_worth_probe): a draft
 * with other random weights than its synthetic target predicts none of the
 * target's tokens (checked first), so no probe drafts a token in 160
 * (before, the first probe drafted after the warm-up's 8 plain steps, and
 * the later ones at gaps of 16, 32, 64); the target as its own draft
 * predicts all of them and its probes draft. Both give plain greedy's
 * tokens. */
static void test_greedy_decline(void)
{
    char tpath[] = "/tmp/sluice-spec-decline-t-XXXXXX", dpath[] = "/tmp/sluice-spec-decline-d-XXXXXX";
    CHECK(test_synth("--arch gemma3 --size test --seed 1 --weight-scale 0.3", tpath) == 0 &&
          test_synth("--arch gemma3 --size test --seed 4 --weight-scale 0.3", dpath) == 0);
    enum { N = 160 };
    const int32_t prompt[] = {2, 40, 41, 42, 43, 100, 200, 300, 41, 42};
    const int n_prompt = (int)(sizeof prompt / sizeof *prompt);
    sl_lm *plain_n = NULL, *target_n = NULL, *other_n = NULL, *self_n = NULL;
    sl_err err = {{0}};
    CHECK(sl_lm_open(&plain_n, tpath, 256, 16, &err) == 0 && sl_lm_open(&target_n, tpath, 256, 16, &err) == 0 &&
          sl_lm_open(&other_n, dpath, 256, 16, &err) == 0 && sl_lm_open(&self_n, tpath, 256, 16, &err) == 0);
    if (plain_n && target_n && other_n && self_n) {
        int32_t want[N], got[N];
        sl_spec_opts none = {0}, autok = {8, true, false};
        CHECK(sl_spec_generate_greedy(plain_n, NULL, &none, prompt, n_prompt, N, want, NULL, &err) == 0);
        int32_t text[N + 16];
        memcpy(text, prompt, sizeof prompt);
        memcpy(text + n_prompt, want, sizeof want);
        int hits = agreement(other_n, text, n_prompt, n_prompt + N);
        CHECKF(hits == 0, "the unrelated draft predicts %d of the target's %d tokens", hits, N);
        sl_spec_stats st;
        sl_spec_stats_init(&st);
        CHECKF(sl_spec_generate_greedy(target_n, other_n, &autok, prompt, n_prompt, N, got, &st, &err) == 0,
               "%s", err.msg);
        CHECK(memcmp(want, got, sizeof want) == 0);
        CHECKF(st.drafted == 0, "an unrelated draft: %ld tokens drafted in %ld steps (%ld accepted)", st.drafted,
               st.steps, st.accepted);
        sl_lm_truncate(target_n, 0);
        sl_spec_stats_init(&st);
        CHECKF(sl_spec_generate_greedy(target_n, self_n, &autok, prompt, n_prompt, N, got, &st, &err) == 0,
               "%s", err.msg);
        CHECK(memcmp(want, got, sizeof want) == 0);
        CHECKF(st.drafted > 0 && st.accepted == st.drafted, "the target as its own draft: %ld drafted, %ld accepted",
               st.drafted, st.accepted);
        fprintf(stderr, "the target as its own draft: %ld steps, %ld drafted, %ld accepted\n", st.steps, st.drafted,
                st.accepted);
    }
    sl_lm_free(plain_n);
    sl_lm_free(target_n);
    sl_lm_free(other_n);
    sl_lm_free(self_n);
    unlink(tpath);
    unlink(dpath);
}

int main(void)
{
    const char *src = getenv("SLUICE_SRC");
    if (!src)
        src = ".";
    snprintf(target_path, sizeof target_path, "%s/models/tiny-gemma3.gguf", src);
    snprintf(draft_path, sizeof draft_path, "%s/models/tiny-gemma3-draft.gguf", src);
    test_greedy_matches_plain();
    test_vocab_mismatch();
    test_greedy_decline();
    return test_finish("test_spec_models");
}
