/* Speculative decoding arithmetic: greedy acceptance, speculative sampling
 * reproducing the target distribution (chi-square), prompt lookup and the
 * choice of k.
 *
 * The chi-square checks use a fixed false-alarm rate of 1e-3: the critical
 * value is the 0.999 quantile of the chi-square distribution with
 * (categories - 1) degrees of freedom. Draws are seeded, so a run is
 * repeatable; with another seed a correct implementation fails one check
 * with probability 1e-3. */
#include <math.h>

#include "stages/spec.h"
#include "tests/test.h"

#define N_DRAWS 60000

/* 0.999 quantiles of chi-square by degrees of freedom (standard tables). */
static double chi2_critical_999(int df)
{
    static const double table[] = {0, 10.828, 13.816, 16.266, 18.467, 20.515, 22.458, 24.322};
    return df >= 1 && df <= 7 ? table[df] : -1.0;
}

/* Pearson statistic of counts against probabilities p (n categories);
 * categories with p == 0 must be empty (returns a huge value otherwise).
 * Stores the degrees of freedom. */
static double chi2_stat(const long *counts, const float *p, int n, long total, int *df)
{
    double stat = 0.0;
    int used = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] <= 0.0f) {
            if (counts[i])
                return 1e30;
            continue;
        }
        double expect = (double)total * p[i];
        double d = counts[i] - expect;
        stat += d * d / expect;
        used++;
    }
    *df = used - 1;
    return stat;
}

static void check_fits(const long *counts, const float *p, int n, long total, const char *what)
{
    int df = 0;
    double stat = chi2_stat(counts, p, n, total, &df);
    double crit = chi2_critical_999(df);
    CHECKF(crit > 0 && stat < crit, "%s: chi2 %.2f with %d df, critical %.2f", what, stat, df,
           crit);
}

static void test_greedy(void)
{
    int32_t out[5];
    int32_t target[] = {5, 6, 7, 8, 9};
    int32_t all[] = {5, 6, 7, 8};
    CHECK(sl_spec_accept_greedy(target, all, 4, out) == 5);
    CHECK(out[0] == 5 && out[3] == 8 && out[4] == 9); /* bonus token */

    int32_t miss[] = {5, 6, 1, 8};
    CHECK(sl_spec_accept_greedy(target, miss, 4, out) == 3);
    CHECK(out[0] == 5 && out[1] == 6 && out[2] == 7); /* target's correction */

    int32_t first[] = {4, 6, 7, 8};
    CHECK(sl_spec_accept_greedy(target, first, 4, out) == 1 && out[0] == 5);
    CHECK(sl_spec_accept_greedy(target, first, 0, out) == 1 && out[0] == 5);
}

/* Draws k drafted tokens from q, accepts against p, and counts the first
 * emitted token, and the second one when the first was accepted. */
static void draw_counts(const float *p, const float *q, int n, int k, uint64_t seed,
                        long *first, long *second, long *n_second)
{
    sl_rng rng;
    sl_rng_seed(&rng, seed);
    float resid[16];
    int32_t draft[4], out[5];
    memset(first, 0, (size_t)n * sizeof *first);
    memset(second, 0, (size_t)n * sizeof *second);
    *n_second = 0;
    for (int d = 0; d < N_DRAWS; d++) {
        for (int i = 0; i < k; i++)
            draft[i] = sl_spec_sample_dense(q + i * n, n, &rng);
        int got = sl_spec_accept_sampled(p, q, draft, k, n, &rng, resid, out);
        first[out[0]]++;
        if (got >= 2) {
            second[out[1]]++;
            (*n_second)++;
        }
    }
}

static void test_sampled_matches_target(void)
{
    enum { N = 6, K = 2 };
    /* rows are independent of the prefix, so the second emitted token must
     * follow p[1] whatever the first was; q differs from p in both
     * directions and puts mass where p has none */
    const float p[(K + 1) * N] = {
        0.40f, 0.25f, 0.15f, 0.10f, 0.10f, 0.00f,
        0.05f, 0.05f, 0.30f, 0.30f, 0.20f, 0.10f,
        0.10f, 0.20f, 0.30f, 0.20f, 0.10f, 0.10f,
    };
    const float q[K * N] = {
        0.10f, 0.40f, 0.10f, 0.10f, 0.10f, 0.20f,
        0.30f, 0.10f, 0.10f, 0.20f, 0.10f, 0.20f,
    };
    long first[N], second[N], n_second;
    draw_counts(p, q, N, K, 7, first, second, &n_second);
    check_fits(first, p, N, N_DRAWS, "first token vs p[0]");
    check_fits(second, p + N, N, n_second, "second token vs p[1]");
    CHECK(n_second > N_DRAWS / 4);

    /* the test has power: the draft's own tokens do not fit p */
    long from_q[N] = {0};
    sl_rng rng;
    sl_rng_seed(&rng, 11);
    for (int d = 0; d < N_DRAWS; d++)
        from_q[sl_spec_sample_dense(q, N, &rng)]++;
    int df = 0;
    CHECK(chi2_stat(from_q, p, N, N_DRAWS, &df) > chi2_critical_999(N - 2));
}

static void test_identical_distributions_accept_all(void)
{
    enum { N = 4, K = 3 };
    float p[(K + 1) * N], q[K * N];
    for (int i = 0; i < (K + 1) * N; i++)
        p[i] = 0.25f;
    memcpy(q, p, sizeof q);
    sl_rng rng;
    sl_rng_seed(&rng, 3);
    float resid[N];
    int32_t draft[K] = {0, 3, 2}, out[K + 1];
    for (int t = 0; t < 100; t++)
        CHECK(sl_spec_accept_sampled(p, q, draft, K, N, &rng, resid, out) == K + 1);
}

/* Temperature and top-k applied to both sides: every emitted token lies in
 * the target's transformed support and follows its distribution. */
static void test_transformed_distributions(void)
{
    enum { N = 8 };
    float target_logits[N] = {2.0f, 1.5f, 1.4f, 0.3f, 0.2f, -1.0f, 0.9f, -2.0f};
    float draft_logits[N] = {1.0f, 2.0f, 0.5f, 1.2f, 0.2f, -1.0f, 1.8f, -2.0f};
    sl_sampling sp;
    sl_sampling_defaults(&sp);
    sp.temperature = 0.8f;
    sp.top_k = 4;
    sl_sampler *s = sl_sampler_new(&sp, N);
    CHECK(s != NULL);
    if (!s)
        return;
    int32_t ids[N];
    float probs[N], p[2 * N], q[N];
    sl_spec_dense_probs(s, target_logits, N, ids, probs, p);
    memcpy(p + N, p, N * sizeof *p);
    sl_spec_dense_probs(s, draft_logits, N, ids, probs, q);
    int support = 0;
    for (int i = 0; i < N; i++)
        support += p[i] > 0.0f;
    CHECK(support == 4);

    long first[N], second[N], n_second;
    draw_counts(p, q, N, 1, 19, first, second, &n_second);
    check_fits(first, p, N, N_DRAWS, "transformed target");
    sl_sampler_free(s);
}

static void test_prompt_lookup(void)
{
    /* "a b c d a b" -> the bigram "a b" seen before, followed by "c d a b" */
    int32_t hist[] = {1, 2, 3, 4, 1, 2};
    int32_t out[8];
    int n = sl_prompt_lookup(hist, 6, 1, 3, 3, out);
    CHECK(n == 3 && out[0] == 3 && out[1] == 4 && out[2] == 1);
    /* fewer than k tokens follow the match */
    CHECK(sl_prompt_lookup(hist, 6, 1, 3, 8, out) == 4);
    /* no earlier occurrence */
    int32_t fresh[] = {1, 2, 3, 9};
    CHECK(sl_prompt_lookup(fresh, 4, 1, 3, 3, out) == 0);
    /* the latest match wins: "7" followed by 8 earlier, by 5 later */
    int32_t latest[] = {7, 8, 7, 5, 7};
    CHECK(sl_prompt_lookup(latest, 5, 1, 1, 2, out) == 2 && out[0] == 5 && out[1] == 7);
    /* the longest n-gram wins over a later shorter match */
    int32_t longest[] = {1, 2, 9, 3, 2, 4, 1, 2};
    CHECK(sl_prompt_lookup(longest, 8, 1, 2, 1, out) == 1 && out[0] == 9);
    CHECK(sl_prompt_lookup(hist, 6, 1, 3, 0, out) == 0);
}

static void test_expected_tokens(void)
{
    for (int k = 0; k <= 6; k++)
        CHECK_NEAR(sl_spec_expected_tokens(0.7, k), (1 - pow(0.7, k + 1)) / 0.3, 1e-9);
}

static void test_stats(void)
{
    sl_spec_stats st;
    sl_spec_stats_init(&st);
    sl_spec_stats_add(&st, 4, 4);
    sl_spec_stats_add(&st, 4, 1);
    CHECK_NEAR(sl_spec_acceptance(&st), 5.0 / 8.0, 1e-12);
    CHECK_NEAR(sl_spec_mean_emitted(&st), 7.0 / 2.0, 1e-12);
}

int main(void)
{
    test_greedy();
    test_sampled_matches_target();
    test_identical_distributions_accept_all();
    test_transformed_distributions();
    test_prompt_lookup();
    test_expected_tokens();
    test_stats();
    return test_finish("test_spec");
}
