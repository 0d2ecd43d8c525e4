#include "stages/spec.h"

#include <string.h>

int sl_spec_accept_greedy(const int32_t *target, const int32_t *draft, int k, int32_t *out)
{
    int i = 0;
    while (i < k && draft[i] == target[i]) {
        out[i] = draft[i];
        i++;
    }
    out[i] = target[i];
    return i + 1;
}

int32_t sl_spec_sample_dense(const float *probs, int n, sl_rng *rng)
{
    double total = 0.0;
    for (int i = 0; i < n; i++)
        total += probs[i];
    double u = sl_rng_uniform(rng) * total;
    double cum = 0.0;
    int32_t last = 0;
    for (int i = 0; i < n; i++) {
        if (probs[i] <= 0.0f)
            continue;
        cum += probs[i];
        last = i;
        if (u < cum)
            return i;
    }
    /* u fell in the rounding gap above the last cumulative sum */
    return last;
}

/* Fills resid with max(0, p - q); returns its total mass. */
static double residual(const float *p, const float *q, int n, float *resid)
{
    double total = 0.0;
    for (int i = 0; i < n; i++) {
        float d = p[i] - q[i];
        resid[i] = d > 0.0f ? d : 0.0f;
        total += resid[i];
    }
    return total;
}

int sl_spec_accept_sampled(const float *p, const float *q, const int32_t *draft, int k,
                           int n_vocab, sl_rng *rng, float *resid, int32_t *out)
{
    for (int i = 0; i < k; i++) {
        const float *pi = p + (size_t)i * n_vocab;
        const float *qi = q + (size_t)i * n_vocab;
        int32_t t = draft[i];
        double ratio = qi[t] > 0.0f ? (double)pi[t] / qi[t] : 0.0;
        if (sl_rng_uniform(rng) < ratio) {
            out[i] = t;
            continue;
        }
        /* p == q leaves no residual mass (only reachable through rounding):
         * sampling p itself is then the exact answer */
        if (residual(pi, qi, n_vocab, resid) <= 0.0)
            out[i] = sl_spec_sample_dense(pi, n_vocab, rng);
        else
            out[i] = sl_spec_sample_dense(resid, n_vocab, rng);
        return i + 1;
    }
    out[k] = sl_spec_sample_dense(p + (size_t)k * n_vocab, n_vocab, rng);
    return k + 1;
}

void sl_spec_dense_probs(sl_sampler *s, float *logits, int n_vocab, int32_t *ids,
                         float *probs, float *dense)
{
    memset(dense, 0, (size_t)n_vocab * sizeof *dense);
    int n = sl_sampler_candidates(s, logits, ids, probs);
    for (int i = 0; i < n; i++)
        dense[ids[i]] = probs[i];
}

/* Whether hist[a..a+n) equals hist[b..b+n). */
static int same_ngram(const int32_t *hist, int a, int b, int n)
{
    return memcmp(hist + a, hist + b, (size_t)n * sizeof *hist) == 0;
}

int sl_prompt_lookup(const int32_t *hist, int n_hist, int ngram_min, int ngram_max, int k,
                     int32_t *out)
{
    if (k <= 0 || ngram_min < 1)
        return 0;
    for (int n = ngram_max; n >= ngram_min; n--) {
        int tail = n_hist - n;
        if (tail < 1)
            continue;
        /* latest match first: recent text predicts the continuation best */
        for (int start = tail - 1; start >= 0; start--) {
            if (!same_ngram(hist, start, tail, n))
                continue;
            int from = start + n;
            int count = n_hist - from < k ? n_hist - from : k;
            memcpy(out, hist + from, (size_t)count * sizeof *out);
            return count;
        }
    }
    return 0;
}

double sl_spec_expected_tokens(double alpha, int k)
{
    /* 1 + alpha + ... + alpha^k: token i+1 is emitted when the first i
     * drafted tokens were all accepted */
    double sum = 0.0, term = 1.0;
    for (int i = 0; i <= k; i++) {
        sum += term;
        term *= alpha;
    }
    return sum;
}

void sl_spec_stats_init(sl_spec_stats *st)
{
    memset(st, 0, sizeof *st);
}

void sl_spec_stats_add(sl_spec_stats *st, int k, int n_accepted)
{
    st->steps++;
    st->drafted += k;
    st->accepted += n_accepted;
}

double sl_spec_acceptance(const sl_spec_stats *st)
{
    return st->drafted ? (double)st->accepted / st->drafted : 0.0;
}

double sl_spec_mean_emitted(const sl_spec_stats *st)
{
    return st->steps ? (double)(st->accepted + st->steps) / st->steps : 0.0;
}
