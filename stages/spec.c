#include "stages/spec.h"

#include <string.h>

/* Weight of one drafted token's outcome in the running acceptance rate:
 * about the last 20 tokens dominate, so k follows a change of text within
 * a few steps without jumping on one rejection. */
#define SPEC_EWMA_WEIGHT 0.05

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

int sl_spec_best_k(double alpha, double cost_ratio, int k_max)
{
    int best = 0;
    double best_rate = 1.0; /* plain decoding: one token per unit cost */
    for (int k = 1; k <= k_max; k++) {
        double rate = sl_spec_expected_tokens(alpha, k) / (1.0 + k * cost_ratio);
        if (rate > best_rate) {
            best_rate = rate;
            best = k;
        }
    }
    return best;
}

int sl_spec_best_k_timed(double alpha, double verify_fixed, double verify_row, double draft_token,
                         int k_max)
{
    int best = 0;
    double plain = verify_fixed + verify_row;
    double best_rate = plain > 0.0 ? 1.0 / plain : 0.0;
    for (int k = 1; k <= k_max; k++) {
        double t = verify_fixed + verify_row * (k + 1) + draft_token * k;
        double rate = t > 0.0 ? sl_spec_expected_tokens(alpha, k) / t : 0.0;
        if (rate > best_rate) {
            best_rate = rate;
            best = k;
        }
    }
    return best;
}

void sl_cost_fit_add(sl_cost_fit *f, double rows, double seconds)
{
    const double keep = 0.95;
    f->n = keep * f->n + 1.0;
    f->sx = keep * f->sx + rows;
    f->sy = keep * f->sy + seconds;
    f->sxx = keep * f->sxx + rows * rows;
    f->sxy = keep * f->sxy + rows * seconds;
}

bool sl_cost_fit_get(const sl_cost_fit *f, double *fixed, double *per_row)
{
    double var = f->n * f->sxx - f->sx * f->sx; /* n^2 times the variance of rows */
    if (f->n < 4.0 || var < 0.25 * f->n * f->n)
        return false;
    double slope = (f->n * f->sxy - f->sx * f->sy) / var;
    if (slope < 0.0)
        slope = 0.0; /* noise: time does not fall with more rows */
    double icept = (f->sy - slope * f->sx) / f->n;
    *fixed = icept > 0.0 ? icept : 0.0;
    *per_row = slope;
    return true;
}

void sl_spec_stats_init(sl_spec_stats *st)
{
    memset(st, 0, sizeof *st);
    /* optimistic start, so the first steps draft and measure */
    st->alpha_ewma = 0.8;
}

void sl_spec_stats_add(sl_spec_stats *st, int k, int n_accepted)
{
    st->steps++;
    st->drafted += k;
    st->accepted += n_accepted;
    for (int i = 0; i < n_accepted; i++)
        st->alpha_ewma += SPEC_EWMA_WEIGHT * (1.0 - st->alpha_ewma);
    if (n_accepted < k)
        st->alpha_ewma -= SPEC_EWMA_WEIGHT * st->alpha_ewma;
}

double sl_spec_acceptance(const sl_spec_stats *st)
{
    return st->drafted ? (double)st->accepted / st->drafted : 0.0;
}

double sl_spec_mean_emitted(const sl_spec_stats *st)
{
    return st->steps ? (double)(st->accepted + st->steps) / st->steps : 0.0;
}
