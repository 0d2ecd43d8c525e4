#include "stages/sampler.h"

#include "kernels/ops.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* One candidate token: its id and, depending on the step, its logit or its
 * probability. */
typedef struct cand {
    float v;
    int32_t id;
} cand;

struct sl_sampler {
    sl_sampling p;
    int n_vocab;
    sl_rng rng;
    cand *c;          /* n_vocab candidates */
    uint8_t *penalized; /* n_vocab marks: token already penalised this call */
    float last_p;     /* the probability the last pick had */
};

void sl_sampling_defaults(sl_sampling *s)
{
    s->temperature = 0.0f;
    s->top_k = 0;
    s->top_p = 1.0f;
    s->min_p = 0.0f;
    s->repeat_penalty = 1.0f;
    s->repeat_last_n = 64;
    s->seed = 42;
}

/* ---- RNG ---- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

void sl_rng_seed(sl_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
}

uint64_t sl_rng_next(sl_rng *r)
{
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

double sl_rng_uniform(sl_rng *r)
{
    return (double)(sl_rng_next(r) >> 11) * 0x1.0p-53;
}

/* ---- sampler ---- */

sl_sampler *sl_sampler_new(const sl_sampling *p, int n_vocab)
{
    if (n_vocab <= 0)
        return NULL;
    sl_sampler *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->p = *p;
    s->n_vocab = n_vocab;
    s->c = malloc((size_t)n_vocab * sizeof *s->c);
    s->penalized = calloc((size_t)n_vocab, 1);
    if (!s->c || !s->penalized) {
        sl_sampler_free(s);
        return NULL;
    }
    sl_rng_seed(&s->rng, p->seed);
    return s;
}

void sl_sampler_free(sl_sampler *s)
{
    if (!s)
        return;
    free(s->c);
    free(s->penalized);
    free(s);
}

int32_t sl_argmax(const float *logits, int n)
{
    return (int32_t)sl_argmax_f32(logits, n);
}

/* llama.cpp's rule: each distinct token of the window is penalised once,
 * dividing positive logits and multiplying the others, so the penalty always
 * lowers the token's chance. */
static void apply_repeat_penalty(sl_sampler *s, float *logits, const int32_t *recent, int n_recent)
{
    float penalty = s->p.repeat_penalty;
    if (penalty == 1.0f || !recent || n_recent <= 0 || s->p.repeat_last_n == 0)
        return;
    int window = s->p.repeat_last_n < 0 || s->p.repeat_last_n > n_recent ? n_recent : s->p.repeat_last_n;
    const int32_t *w = recent + (n_recent - window);
    for (int i = 0; i < window; i++) {
        int32_t id = w[i];
        if (id < 0 || id >= s->n_vocab || s->penalized[id])
            continue;
        s->penalized[id] = 1;
        logits[id] = logits[id] > 0.0f ? logits[id] / penalty : logits[id] * penalty;
    }
    for (int i = 0; i < window; i++)
        if (w[i] >= 0 && w[i] < s->n_vocab)
            s->penalized[w[i]] = 0;
}

/* Total order: larger value first, lower id on ties, so selections and sorts
 * are deterministic. */
static bool cand_before(const cand *a, const cand *b)
{
    return a->v > b->v || (a->v == b->v && a->id < b->id);
}

static int cand_cmp(const void *pa, const void *pb)
{
    const cand *a = pa, *b = pb;
    return cand_before(a, b) ? -1 : cand_before(b, a) ? 1 : 0;
}

static void cand_swap(cand *a, cand *b)
{
    cand t = *a;
    *a = *b;
    *b = t;
}

/* Moves the k best candidates of c[0..n) to the front (unordered). */
static void select_top_k(cand *c, int n, int k)
{
    int lo = 0, hi = n - 1;
    uint64_t state = 0x2545f4914f6cdd1dULL; /* fixed pivots keep it deterministic */
    while (lo < hi) {
        int piv = lo + (int)(splitmix64(&state) % (uint64_t)(hi - lo + 1));
        cand_swap(&c[piv], &c[hi]);
        int store = lo;
        for (int i = lo; i < hi; i++)
            if (cand_before(&c[i], &c[hi]))
                cand_swap(&c[i], &c[store++]);
        cand_swap(&c[store], &c[hi]);
        if (store == k - 1 || store == k)
            return;
        if (store < k)
            lo = store + 1;
        else
            hi = store - 1;
    }
}

/* Sorts enough of c[0..n) (probabilities) for a nucleus of mass top_p: the
 * tokens with p >= t, for a threshold t, are the head of the sorted order, so
 * when their mass reaches top_p the nucleus lies inside them and the long
 * tail of a 256K vocabulary need not be sorted. Returns the sorted length;
 * the candidates after it are in no particular order. */
static int n_sorted_prefix(cand *c, int n, float top_p)
{
    float pmax = 0.0f;
    for (int i = 0; i < n; i++)
        if (c[i].v > pmax)
            pmax = c[i].v;
    for (float rel = 1e-3f; rel >= 1e-6f; rel *= 1e-3f) {
        float t = pmax * rel;
        int head = 0;
        double mass = 0.0;
        for (int i = 0; i < n; i++) {
            if (c[i].v >= t) {
                mass += c[i].v;
                cand_swap(&c[i], &c[head++]);
            }
        }
        if (mass >= top_p) {
            qsort(c, (size_t)head, sizeof *c, cand_cmp);
            return head;
        }
    }
    qsort(c, (size_t)n, sizeof *c, cand_cmp);
    return n;
}

/* Runs top-k, temperature, softmax, top-p and min-p over the logits; leaves
 * the kept candidates with probabilities renormalised to sum 1 in s->c and
 * returns how many. */
static int filter(sl_sampler *s, const float *logits)
{
    const sl_sampling *p = &s->p;
    cand *c = s->c;
    int n = s->n_vocab;
    for (int i = 0; i < n; i++)
        c[i] = (cand){logits[i], i};
    bool sorted = false;
    if (p->top_k > 0 && p->top_k < n) {
        select_top_k(c, n, p->top_k);
        n = p->top_k;
        qsort(c, (size_t)n, sizeof *c, cand_cmp);
        sorted = true;
    }
    float max = c[0].v;
    for (int i = 1; i < n; i++)
        if (c[i].v > max)
            max = c[i].v;
    /* softmax(l / T) computed as exp((l - max) / T) */
    float inv_t = 1.0f / p->temperature;
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        c[i].v = expf((c[i].v - max) * inv_t);
        sum += c[i].v;
    }
    for (int i = 0; i < n; i++)
        c[i].v = (float)(c[i].v / sum);
    if (p->top_p < 1.0f) {
        int n_sorted = sorted ? n : n_sorted_prefix(c, n, p->top_p);
        double cum = 0.0;
        int keep = n_sorted;
        for (int i = 0; i < n_sorted; i++) {
            cum += c[i].v;
            if (cum >= p->top_p) {
                keep = i + 1;
                break;
            }
        }
        n = keep;
    }
    if (p->min_p > 0.0f) {
        float pmax = c[0].v;
        for (int i = 1; i < n; i++)
            if (c[i].v > pmax)
                pmax = c[i].v;
        float threshold = p->min_p * pmax;
        int kept = 0;
        for (int i = 0; i < n; i++)
            if (c[i].v >= threshold)
                c[kept++] = c[i];
        n = kept;
    }
    sum = 0.0;
    for (int i = 0; i < n; i++)
        sum += c[i].v;
    for (int i = 0; i < n; i++)
        c[i].v = (float)(c[i].v / sum);
    return n;
}

int sl_sampler_candidates(sl_sampler *s, float *logits, int32_t *ids, float *probs)
{
    if (s->p.temperature <= 0.0f) {
        ids[0] = sl_argmax(logits, s->n_vocab);
        probs[0] = 1.0f;
        return 1;
    }
    int n = filter(s, logits);
    for (int i = 0; i < n; i++) {
        ids[i] = s->c[i].id;
        probs[i] = s->c[i].v;
    }
    return n;
}

bool sl_sampler_greedy(const sl_sampler *s) { return s->p.temperature <= 0.0f; }

void sl_sampler_penalize(sl_sampler *s, float *logits, const int32_t *recent, int n_recent)
{
    apply_repeat_penalty(s, logits, recent, n_recent);
}

int32_t sl_sampler_pick(sl_sampler *s, float *logits, const int32_t *recent, int n_recent)
{
    apply_repeat_penalty(s, logits, recent, n_recent);
    s->last_p = 1.0f;
    if (s->p.temperature <= 0.0f)
        return sl_argmax(logits, s->n_vocab);
    int n = filter(s, logits);
    double u = sl_rng_uniform(&s->rng);
    double cum = 0.0;
    for (int i = 0; i < n; i++) {
        cum += s->c[i].v;
        if (u < cum) {
            s->last_p = s->c[i].v;
            return s->c[i].id;
        }
    }
    /* u fell in the rounding gap above the last cumulative sum */
    s->last_p = s->c[n - 1].v;
    return s->c[n - 1].id;
}

float sl_sampler_last_prob(const sl_sampler *s) { return s->last_p; }
