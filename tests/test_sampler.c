/* Sampler tests: the RNG and the sampler are deterministic per seed, greedy is
 * argmax, every filter emits only tokens of the set the test computes on its
 * own (in double precision, with its own sort), draws follow the
 * probabilities, and the repetition penalty follows llama.cpp's rule. */
#include "stages/sampler.h"
#include "tests/test.h"

#include <stdbool.h>
#include <stdint.h>

#define NV 64

static void random_logits(sl_rng *r, float *l, int n, float spread)
{
    for (int i = 0; i < n; i++)
        l[i] = (float)((sl_rng_uniform(r) * 2.0 - 1.0) * spread);
}

/* softmax(l / t) in double */
static void ref_probs(const float *l, int n, double t, double *p)
{
    double max = l[0];
    for (int i = 1; i < n; i++)
        if (l[i] > max)
            max = l[i];
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += p[i] = exp((l[i] - max) / t);
    for (int i = 0; i < n; i++)
        p[i] /= sum;
}

/* Indices sorted by value descending (insertion sort: independent of the
 * sampler's selection and qsort). */
static void ref_order(const double *v, int n, int *order)
{
    for (int i = 0; i < n; i++) {
        int j = i;
        while (j > 0 && v[order[j - 1]] < v[i]) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = i;
    }
}

/* The set of tokens the filters should keep, computed from the spec. */
static void ref_set(const float *l, int n, double t, int top_k, double top_p, double min_p, bool *in)
{
    double lv[NV], p[NV];
    int order[NV];
    for (int i = 0; i < n; i++)
        lv[i] = l[i];
    ref_order(lv, n, order);
    int keep = n;
    if (top_k > 0 && top_k < n)
        keep = top_k;
    /* softmax over the top-k survivors only */
    double max = lv[order[0]], sum = 0;
    for (int i = 0; i < n; i++)
        p[i] = 0;
    for (int r = 0; r < keep; r++)
        sum += p[order[r]] = exp((lv[order[r]] - max) / t);
    for (int r = 0; r < keep; r++)
        p[order[r]] /= sum;
    if (top_p < 1.0) {
        double cum = 0;
        for (int r = 0; r < keep; r++) {
            cum += p[order[r]];
            if (cum >= top_p) {
                keep = r + 1;
                break;
            }
        }
    }
    for (int i = 0; i < n; i++)
        in[i] = false;
    double pmax = p[order[0]];
    for (int r = 0; r < keep; r++)
        if (min_p <= 0 || p[order[r]] >= min_p * pmax)
            in[order[r]] = true;
}

static void test_rng(void)
{
    sl_rng a, b, c;
    sl_rng_seed(&a, 7);
    sl_rng_seed(&b, 7);
    sl_rng_seed(&c, 8);
    int same = 1, differs = 0, in_range = 1;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = sl_rng_next(&a), y = sl_rng_next(&b), z = sl_rng_next(&c);
        same &= x == y;
        differs += x != z;
        double u = sl_rng_uniform(&a);
        sl_rng_uniform(&b);
        in_range &= u >= 0.0 && u < 1.0;
    }
    CHECK(same);
    CHECK(differs > 990);
    CHECK(in_range);
    /* mean of uniforms near 1/2: 100000 draws, sd of the mean 0.0009 */
    double mean = 0;
    for (int i = 0; i < 100000; i++)
        mean += sl_rng_uniform(&c);
    CHECK_NEAR(mean / 100000, 0.5, 0.005);
}

static void draw_sequence(uint64_t seed, const float *logits, int32_t *out, int n)
{
    sl_sampling p;
    sl_sampling_defaults(&p);
    p.temperature = 1.0f;
    p.seed = seed;
    sl_sampler *s = sl_sampler_new(&p, NV);
    float l[NV];
    for (int i = 0; i < n; i++) {
        memcpy(l, logits, sizeof l);
        out[i] = sl_sampler_pick(s, l, NULL, 0);
    }
    sl_sampler_free(s);
}

static void test_seeded_determinism(void)
{
    sl_rng r;
    sl_rng_seed(&r, 1);
    float logits[NV];
    random_logits(&r, logits, NV, 2.0f);
    int32_t a[200], b[200], c[200];
    draw_sequence(42, logits, a, 200);
    draw_sequence(42, logits, b, 200);
    draw_sequence(43, logits, c, 200);
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK(memcmp(a, c, sizeof a) != 0);
}

static void test_greedy(void)
{
    sl_sampling p;
    sl_sampling_defaults(&p);
    CHECK(p.temperature <= 0.0f); /* greedy is the default */
    sl_sampler *s = sl_sampler_new(&p, NV);
    sl_rng r;
    sl_rng_seed(&r, 2);
    float l[NV];
    for (int trial = 0; trial < 200; trial++) {
        random_logits(&r, l, NV, 5.0f);
        int best = 0;
        for (int i = 0; i < NV; i++)
            if (l[i] > l[best])
                best = i;
        CHECK(sl_sampler_pick(s, l, NULL, 0) == best);
        CHECK(sl_argmax(l, NV) == best);
    }
    for (int i = 0; i < NV; i++)
        l[i] = 0.0f;
    l[9] = l[17] = l[40] = 3.0f;
    CHECK(sl_sampler_pick(s, l, NULL, 0) == 9);
    sl_sampler_free(s);
}

static void check_membership(int top_k, float top_p, float min_p, float temp, uint64_t seed)
{
    sl_sampling p;
    sl_sampling_defaults(&p);
    p.temperature = temp;
    p.top_k = top_k;
    p.top_p = top_p;
    p.min_p = min_p;
    p.seed = seed;
    sl_sampler *s = sl_sampler_new(&p, NV);
    sl_rng r;
    sl_rng_seed(&r, seed * 31 + 5);
    float logits[NV], l[NV];
    bool in[NV], seen[NV];
    int outside = 0, unseen = 0, cand_mismatch = 0;
    for (int trial = 0; trial < 10; trial++) {
        random_logits(&r, logits, NV, 4.0f);
        ref_set(logits, NV, temp, top_k, top_p, min_p, in);
        memset(seen, 0, sizeof seen);
        for (int d = 0; d < 3000; d++) {
            memcpy(l, logits, sizeof l);
            int32_t t = sl_sampler_pick(s, l, NULL, 0);
            if (t < 0 || t >= NV || !in[t])
                outside++;
            else
                seen[t] = true;
        }
        /* The candidate list is exactly the reference set. */
        int32_t ids[NV];
        float probs[NV];
        memcpy(l, logits, sizeof l);
        int n = sl_sampler_candidates(s, l, ids, probs);
        int n_in = 0;
        double psum = 0;
        for (int i = 0; i < NV; i++)
            n_in += in[i];
        for (int i = 0; i < n; i++) {
            cand_mismatch += !in[ids[i]];
            psum += probs[i];
        }
        cand_mismatch += n != n_in;
        CHECK_NEAR(psum, 1.0, 1e-5);
        /* members with a real chance are all emitted (over-filtering) */
        double pr[NV];
        ref_probs(logits, NV, temp, pr);
        double kept_mass = 0;
        for (int i = 0; i < NV; i++)
            kept_mass += in[i] ? pr[i] : 0;
        for (int i = 0; i < NV; i++)
            if (in[i] && pr[i] / kept_mass > 0.005 && !seen[i])
                unseen++;
    }
    CHECKF(outside == 0, "top_k %d top_p %g min_p %g: %d draws outside the set", top_k, top_p, min_p, outside);
    CHECKF(cand_mismatch == 0, "top_k %d top_p %g min_p %g: candidates differ from the reference set",
           top_k, top_p, min_p);
    CHECKF(unseen == 0, "top_k %d top_p %g min_p %g: %d likely members never drawn", top_k, top_p,
           min_p, unseen);
    sl_sampler_free(s);
}

static void test_filters(void)
{
    check_membership(5, 1.0f, 0.0f, 1.0f, 1);
    check_membership(1, 1.0f, 0.0f, 1.0f, 2);
    check_membership(0, 0.9f, 0.0f, 1.0f, 3);
    check_membership(0, 0.5f, 0.0f, 1.5f, 4);
    check_membership(0, 1.0f, 0.05f, 1.0f, 5);
    check_membership(0, 1.0f, 0.3f, 0.7f, 6);
    check_membership(20, 0.8f, 0.02f, 1.2f, 7);
    check_membership(10, 0.95f, 0.0f, 0.8f, 8);
}

/* Pearson chi-square of observed counts against expected probabilities. */
static double chi_square(const int *count, const double *prob, int n, int draws)
{
    double x2 = 0;
    for (int i = 0; i < n; i++) {
        double e = prob[i] * draws;
        x2 += (count[i] - e) * (count[i] - e) / e;
    }
    return x2;
}

static void test_frequencies(void)
{
    enum { N = 8, DRAWS = 40000 };
    sl_sampling p;
    sl_sampling_defaults(&p);
    const float base[N] = {1.0f, 0.5f, 0.0f, -0.5f, 2.0f, 1.5f, -1.0f, 0.2f};
    const float temps[2] = {1.0f, 0.6f};
    for (int ti = 0; ti < 2; ti++) {
        p.temperature = temps[ti];
        p.seed = 100 + (uint64_t)ti;
        sl_sampler *s = sl_sampler_new(&p, N);
        int count[N] = {0};
        float l[N];
        for (int d = 0; d < DRAWS; d++) {
            memcpy(l, base, sizeof l);
            count[sl_sampler_pick(s, l, NULL, 0)]++;
        }
        double prob[N];
        ref_probs(base, N, temps[ti], prob);
        /* 7 degrees of freedom, false-alarm rate 0.001: 24.32 */
        double x2 = chi_square(count, prob, N, DRAWS);
        CHECKF(x2 < 24.32, "temperature %g: chi-square %g", temps[ti], x2);
        sl_sampler_free(s);
    }
    /* top-k 3 renormalises over the three best: ids 4, 5, 0 */
    p.temperature = 1.0f;
    p.top_k = 3;
    sl_sampler *s = sl_sampler_new(&p, N);
    int count[N] = {0};
    float l[N];
    for (int d = 0; d < DRAWS; d++) {
        memcpy(l, base, sizeof l);
        count[sl_sampler_pick(s, l, NULL, 0)]++;
    }
    double z = exp(2.0) + exp(1.5) + exp(1.0);
    int obs[3] = {count[4], count[5], count[0]};
    double prob[3] = {exp(2.0) / z, exp(1.5) / z, exp(1.0) / z};
    double x2 = chi_square(obs, prob, 3, DRAWS);
    CHECKF(x2 < 13.82, "top-k 3: chi-square %g", x2); /* 2 df, rate 0.001 */
    CHECK(obs[0] + obs[1] + obs[2] == DRAWS);
    sl_sampler_free(s);
}

static void test_repeat_penalty(void)
{
    sl_sampling p;
    sl_sampling_defaults(&p);
    p.repeat_penalty = 2.0f;
    p.repeat_last_n = 3;
    sl_sampler *s = sl_sampler_new(&p, 8);
    float l[8] = {2.0f, -1.0f, 1.5f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    int32_t recent[2] = {0, 1};
    CHECK(sl_sampler_pick(s, l, recent, 2) == 2);
    CHECK(l[0] == 1.0f);  /* positive: divided */
    CHECK(l[1] == -2.0f); /* negative: multiplied */
    CHECK(l[2] == 1.5f);  /* not recent: unchanged */

    /* a token repeated in the window is penalised once */
    float l2[8] = {2.0f, 0, 0, 0, 0, 0, 0, 0};
    int32_t rep[3] = {0, 0, 0};
    sl_sampler_pick(s, l2, rep, 3);
    CHECK(l2[0] == 1.0f);

    /* only the last repeat_last_n tokens count */
    float l3[8] = {2.0f, 1.0f, 0, 0, 0, 0, 0, 0};
    int32_t old[4] = {0, 5, 6, 7};
    CHECK(sl_sampler_pick(s, l3, old, 4) == 0);
    CHECK(l3[0] == 2.0f);

    /* ids outside the vocabulary are ignored, not trusted */
    float l4[8] = {2.0f, 1.0f, 0, 0, 0, 0, 0, 0};
    int32_t bad[2] = {-3, 99};
    CHECK(sl_sampler_pick(s, l4, bad, 2) == 0);
    sl_sampler_free(s);

    /* with sampling, the penalty lowers a token's frequency */
    p.temperature = 1.0f;
    p.repeat_last_n = 64;
    int hits_plain = 0, hits_pen = 0;
    for (int pass = 0; pass < 2; pass++) {
        p.repeat_penalty = pass ? 3.0f : 1.0f;
        sl_sampler *t = sl_sampler_new(&p, 4);
        for (int d = 0; d < 5000; d++) {
            float q[4] = {1.0f, 0.8f, 0.5f, 0.2f};
            int32_t last[1] = {0};
            int hit = sl_sampler_pick(t, q, last, 1) == 0;
            if (pass)
                hits_pen += hit;
            else
                hits_plain += hit;
        }
        sl_sampler_free(t);
    }
    CHECKF(hits_pen < hits_plain * 0.7, "penalised %d vs plain %d", hits_pen, hits_plain);
}

/* sl_sampler_last_prob: the probability the picked token had in the
 * distribution it was drawn from (temperature, then top-k 10 renormalised
 * over the kept ten), the reference's; 1 for a greedy pick. */
static void test_last_prob(void)
{
    sl_rng r;
    sl_rng_seed(&r, 5);
    float logits[NV], work[NV];
    random_logits(&r, logits, NV, 2.0f);
    double p[NV];
    ref_probs(logits, NV, 0.7, p);
    int order[NV];
    ref_order(p, NV, order);
    double kept = 0.0;
    for (int i = 0; i < 10; i++)
        kept += p[order[i]];
    sl_sampling sp;
    sl_sampling_defaults(&sp);
    sp.temperature = 0.7f;
    sp.top_k = 10;
    sp.seed = 9;
    sl_sampler *s = sl_sampler_new(&sp, NV);
    for (int i = 0; i < 50; i++) {
        memcpy(work, logits, sizeof work);
        int32_t t = sl_sampler_pick(s, work, NULL, 0);
        CHECK_NEAR(sl_sampler_last_prob(s), p[t] / kept, 1e-5);
    }
    sl_sampler_free(s);
    sp.temperature = 0.0f;
    s = sl_sampler_new(&sp, NV);
    memcpy(work, logits, sizeof work);
    sl_sampler_pick(s, work, NULL, 0);
    CHECK(sl_sampler_last_prob(s) == 1.0f);
    sl_sampler_free(s);
}

int main(void)
{
    test_rng();
    test_seeded_determinism();
    test_greedy();
    test_filters();
    test_frequencies();
    test_repeat_penalty();
    test_last_prob();
    return test_finish("test_sampler");
}
