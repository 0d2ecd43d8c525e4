/* The KV cache's layouts and types, through the forward pass of the shipped
 * tiny model (sliding window 128, head_dim 64):
 * - sliding-window layers keep a ring of slots: logits of a 700-token
 *   sequence fed in batches of 100 are bit-identical to a cache that keeps
 *   every position;
 * - F16, BF16 and Q8_0 caches: logits within the stated error of F32, and
 *   the same greedy choice wherever F32's top-2 margin is clear of it;
 * - a batch larger than the ring allows, and an unsupported type, are
 *   refused with their reasons;
 * - a layer that reads another layer's cache (Gemma 4's KV sharing) has
 *   its source's rows and no bytes of its own, and a part without the
 *   source is refused;
 * - sl_kv_prefault commits the pages of a sequence's rows up to the
 *   position asked for in every layer (mincore), keeps what the rows held,
 *   leaves other sequences' rows alone, and after sl_kv_clear commits them
 *   again. */
#include <stdbool.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kernels/quant.h"
#include "model/forward.h"
#include "model/kv.h"
#include "model/model.h"
#include "tests/test.h"

#define N_TOK 700
#define BATCH 100

typedef struct run {
    sl_model *m;
    sl_fwd *fwd;
    float *x, *logits; /* logits: N_TOK rows */
} run;

static uint64_t rng = 0x1234567887654321ull;

static int32_t rnd_token(int n_vocab)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return 7 + (int32_t)(rng % (uint64_t)(n_vocab - 7));
}

/* Logits of every position of tokens, fed BATCH at a time through kv. */
static int run_logits(run *r, sl_kv *kv, const int32_t *tokens, int n, sl_err *err)
{
    const sl_config *c = &r->m->cfg;
    int32_t seq[BATCH] = {0}, pos[BATCH];
    for (int start = 0; start < n; start += BATCH) {
        int nb = n - start < BATCH ? n - start : BATCH;
        for (int i = 0; i < nb; i++)
            pos[i] = start + i;
        sl_batch b = {.n_tokens = nb, .token = tokens + start, .seq = seq, .pos = pos};
        if (sl_embed(r->m, tokens + start, nb, r->x, err) ||
            sl_forward_layers(r->fwd, kv, &b, r->x, err) ||
            sl_head(r->fwd, r->x, nb, r->logits + (size_t)start * c->n_vocab, err))
            return -1;
    }
    return 0;
}

/* Whether the page holding p is resident. */
static bool resident(const void *p)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    unsigned char v = 0;
    CHECK(mincore((void *)((uintptr_t)p & ~(page - 1)), 1, &v) == 0);
    return v & 1;
}

/* Whether this kernel takes MADV_POPULATE_WRITE (Linux 5.14). */
static bool can_populate(void)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    void *p = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    bool ok = p != MAP_FAILED && madvise(p, page, 23 /* MADV_POPULATE_WRITE */) == 0;
    if (p != MAP_FAILED)
        munmap(p, page);
    return ok;
}

static void test_prefault(const sl_config *c)
{
    sl_err err = {{0}};
    sl_kv *kv;
    CHECK(sl_kv_new_typed(&kv, c, 0, c->n_layer, 2, N_TOK, SL_TYPE_F32, BATCH, &err) == 0);
    /* a row written before the prefault keeps its bytes */
    float *k0 = sl_kv_k(kv, 0, 0);
    for (int i = 0; i < 16; i++)
        k0[i] = (float)i + 0.5f;
    int end = 300; /* past the sliding layers' rings of 256 slots */
    sl_kv_prefault(kv, 0, end);
    for (int i = 0; i < 16; i++)
        CHECK(k0[i] == (float)i + 0.5f);
    if (!can_populate()) {
        fprintf(stderr, "test_kv: this kernel has no MADV_POPULATE_WRITE; residency not checked\n");
        sl_kv_free(kv);
        return;
    }
    for (int il = 0; il < c->n_layer; il++) {
        int64_t rb = sl_kv_row_bytes(kv, il), slots = sl_kv_slots(kv, il);
        int64_t last = (end < slots ? end : slots) - 1;
        for (int64_t s = 0; s <= last; s += 7) {
            CHECKF(resident((const uint8_t *)sl_kv_k(kv, 0, il) + s * rb), "layer %d K slot %lld",
                   il, (long long)s);
            CHECKF(resident((const uint8_t *)sl_kv_v(kv, 0, il) + s * rb), "layer %d V slot %lld",
                   il, (long long)s);
        }
        CHECK(resident((const uint8_t *)sl_kv_v(kv, 0, il) + last * rb + rb - 1));
    }
    /* the other sequence's rows stay uncommitted */
    int global = -1;
    for (int il = 0; il < c->n_layer; il++)
        global = sl_kv_slots(kv, il) == N_TOK ? il : global;
    CHECK(global >= 0);
    int64_t grb = sl_kv_row_bytes(kv, global);
    CHECK(!resident((const uint8_t *)sl_kv_k(kv, 1, global) + 200 * grb));
    /* cleared, the pages go back; a prefault commits them again */
    sl_kv_clear(kv, 0);
    CHECK(!resident((const uint8_t *)sl_kv_k(kv, 0, global) + 100 * grb));
    sl_kv_prefault(kv, 0, 101);
    CHECK(resident((const uint8_t *)sl_kv_k(kv, 0, global) + 100 * grb));
    sl_kv_free(kv);
}

static float *logits_with(run *r, sl_kv *kv, const int32_t *tokens, int n)
{
    sl_err err = {{0}};
    size_t bytes = sizeof(float) * (size_t)n * (size_t)r->m->cfg.n_vocab;
    float *out = malloc(bytes);
    int rc = run_logits(r, kv, tokens, n, &err);
    CHECKF(rc == 0, "%s", err.msg);
    memcpy(out, r->logits, bytes);
    return out;
}

int main(void)
{
    const char *src = getenv("SLUICE_SRC");
    char path[4096];
    snprintf(path, sizeof path, "%s/models/tiny-gemma3.gguf", src ? src : ".");
    sl_err err = {{0}};
    run r = {0};
    if (sl_model_load(&r.m, path, NULL, &err) || sl_fwd_new(&r.fwd, r.m, BATCH, &err)) {
        fprintf(stderr, "test_kv: %s\n", err.msg);
        return 1;
    }
    const sl_config *c = &r.m->cfg;
    int nv = c->n_vocab;
    r.x = malloc(sizeof(float) * BATCH * (size_t)c->d_model);
    r.logits = malloc(sizeof(float) * N_TOK * (size_t)nv);
    int32_t tokens[N_TOK];
    for (int i = 0; i < N_TOK; i++)
        tokens[i] = rnd_token(nv);

    /* every position kept */
    sl_kv *plain, *ring;
    CHECK(sl_kv_new(&plain, c, 0, c->n_layer, 1, N_TOK, &err) == 0);
    float *want = logits_with(&r, plain, tokens, N_TOK);

    /* rings on the sliding layers (window 128: 256 slots, wrapped twice) */
    CHECK(sl_kv_new_typed(&ring, c, 0, c->n_layer, 1, N_TOK, SL_TYPE_F32, BATCH, &err) == 0);
    int rings = 0;
    for (int il = 0; il < c->n_layer; il++)
        rings += sl_kv_slots(ring, il) < N_TOK;
    CHECK(rings == 5); /* 5 sliding layers, 1 global */
    CHECK(sl_kv_bytes(ring) < sl_kv_bytes(plain) / 2);
    float *got = logits_with(&r, ring, tokens, N_TOK);
    CHECKF(memcmp(got, want, sizeof(float) * N_TOK * (size_t)nv) == 0,
           "ring cache: logits differ from the full cache");
    free(got);
    sl_kv_free(ring);

    /* Stated bounds, max |logit - F32 logit| over the max |F32 logit|: the
     * cache rounds keys and values to 11 significant bits (F16: 2^-11
     * relative), 8 (BF16: 2^-8) or 1/127 of each 32-block's largest value
     * (Q8_0, about 2^-8 of it, plus an f16 scale); through 6 layers of
     * attention the logits move by a few times that. Measured on this
     * model: see the printed figures. */
    static const sl_type types[] = {SL_TYPE_F16, SL_TYPE_BF16, SL_TYPE_Q8_0};
    static const double bound[] = {4e-3, 3e-2, 3e-2};
    double scale = 0;
    for (size_t i = 0; i < (size_t)N_TOK * nv; i++)
        scale = fabs(want[i]) > scale ? fabs(want[i]) : scale;
    for (int t = 0; t < 3; t++) {
        sl_kv *kv;
        CHECK(sl_kv_new_typed(&kv, c, 0, c->n_layer, 1, N_TOK, types[t], BATCH, &err) == 0);
        got = logits_with(&r, kv, tokens, N_TOK);
        double worst = 0;
        int clear = 0, agree = 0;
        for (int p = 0; p < N_TOK; p++) {
            const float *a = got + (size_t)p * nv, *b = want + (size_t)p * nv;
            int ia = 0, ib = 0;
            float top1 = -INFINITY, top2 = -INFINITY;
            for (int i = 0; i < nv; i++) {
                double e = fabs(a[i] - b[i]) / scale;
                worst = e > worst ? e : worst;
                ia = a[i] > a[ia] ? i : ia;
                ib = b[i] > b[ib] ? i : ib;
                if (b[i] > top1) {
                    top2 = top1;
                    top1 = b[i];
                } else if (b[i] > top2) {
                    top2 = b[i];
                }
            }
            if (top1 - top2 > 2 * bound[t] * scale) {
                clear++;
                agree += ia == ib;
            }
        }
        fprintf(stderr, "kv %-5s max |logit - f32| / max|logit| = %.2e (bound %.0e), greedy "
                "agreement %d/%d clear positions\n", sl_type_name(types[t]), worst, bound[t],
                agree, clear);
        CHECKF(worst <= bound[t], "kv %s: error %.3g > %.3g", sl_type_name(types[t]), worst, bound[t]);
        CHECK(agree == clear && clear > 0);
        free(got);
        sl_kv_free(kv);
    }

    test_prefault(c);

    /* refusals */
    sl_kv *small;
    CHECK(sl_kv_new_typed(&small, c, 0, c->n_layer, 1, N_TOK, SL_TYPE_F32, BATCH / 2, &err) == 0);
    int32_t seq[BATCH] = {0}, pos[BATCH];
    for (int i = 0; i < BATCH; i++)
        pos[i] = i;
    sl_batch big = {.n_tokens = BATCH, .token = tokens, .seq = seq, .pos = pos};
    CHECK(sl_embed(r.m, tokens, BATCH, r.x, &err) == 0);
    CHECK(sl_forward_layers(r.fwd, small, &big, r.x, &err) == -1);
    CHECK_ERR_HAS(err, "sized for batches of at most 50");
    sl_kv_free(small);
    sl_kv *bad;
    CHECK(sl_kv_new_typed(&bad, c, 0, c->n_layer, 1, 64, SL_TYPE_Q4_0, 8, &err) == -1);
    CHECK_ERR_HAS(err, "not one of f32, f16, bf16, q8_0");

    /* KV sharing: layer 4 (sliding) reads layer 3's cache */
    sl_config *shared = malloc(sizeof *shared);
    *shared = *c;
    shared->layer[4].kv_src = 3;
    sl_kv *sh, *own;
    CHECK(sl_kv_new_typed(&sh, shared, 0, c->n_layer, 2, N_TOK, SL_TYPE_F16, BATCH, &err) == 0);
    CHECK(sl_kv_new_typed(&own, c, 0, c->n_layer, 2, N_TOK, SL_TYPE_F16, BATCH, &err) == 0);
    CHECK(sl_kv_k(sh, 1, 4) == sl_kv_k(sh, 1, 3) && sl_kv_v(sh, 1, 4) == sl_kv_v(sh, 1, 3));
    CHECK(sl_kv_k(sh, 1, 5) != sl_kv_k(sh, 1, 3));
    CHECK(sl_kv_slots(sh, 4) == sl_kv_slots(sh, 3) && sl_kv_row_bytes(sh, 4) == sl_kv_row_bytes(sh, 3));
    CHECK(sl_kv_bytes(sh) < sl_kv_bytes(own));
    sl_kv_free(sh);
    sl_kv_free(own);
    CHECK(sl_kv_new_typed(&sh, shared, 4, c->n_layer, 1, N_TOK, SL_TYPE_F32, BATCH, &err) == -1);
    CHECK_ERR_HAS(err, "layer 4 reads the cache of layer 3, which is outside this part's layers [4, 6)");
    free(shared);

    free(want);
    sl_kv_free(plain);
    free(r.x);
    free(r.logits);
    sl_fwd_free(r.fwd);
    sl_model_free(r.m);
    return test_finish("test_kv");
}
