/* The Gemma 4 assistant's loader and step refuse malformed input with a
 * clear error: a synthetic assistant (`sluice synth --arch gemma4-assistant
 * --size test`) is opened, one thing in its parsed GGUF is broken in memory
 * (a tensor renamed away, a shape changed, the token ordering corrupted),
 * and sl_mtp_from_gguf must fail naming it. Then pairing with a target that
 * does not fit, K/V rows that do not cover the step, and loading the
 * assistant as a model of its own. The numbers the forward pass computes
 * are held to the numpy reference in test_mtp_ref.py. */
#include <unistd.h>

#include "model/forward.h"
#include "model/mtp.h"
#include "test.h"

static char assistant_path[] = "/tmp/sluice-mtp-a-XXXXXX";
static char target_path[] = "/tmp/sluice-mtp-t-XXXXXX";
static char other_path[] = "/tmp/sluice-mtp-o-XXXXXX";

static gguf_tensor *tensor(gguf_file *f, const char *name)
{
    return (gguf_tensor *)gguf_find_tensor(f, name);
}

/* Opens the assistant, lets edit break it, and expects the load to fail
 * with an error containing frag. */
static void expect_load_error(void (*edit)(gguf_file *), const char *frag)
{
    gguf_file *f;
    sl_err err = {{0}};
    CHECK(gguf_open(&f, assistant_path, &err) == 0);
    if (!f)
        return;
    edit(f);
    sl_mtp *m = NULL;
    CHECKF(sl_mtp_from_gguf(&m, f, &err) < 0, "expected an error containing \"%s\"", frag);
    CHECK(m == NULL);
    CHECK_ERR_HAS(err, frag);
    sl_mtp_free(m);
}

static void rename_to(gguf_file *f, const char *from, const char *to)
{
    gguf_tensor *t = tensor(f, from);
    CHECK(t != NULL);
    if (t) {
        free(t->name);
        t->name = strdup(to);
    }
}

static void drop_q(gguf_file *f) { rename_to(f, "blk.1.attn_q.weight", "blk.1.attn_q.gone"); }
static void drop_pre(gguf_file *f)
{
    rename_to(f, "nextn.pre_projection.weight", "nextn.pre_projection.gone");
}
static void drop_order(gguf_file *f)
{
    rename_to(f, "mtp.token_ordering.weight", "mtp.token_ordering.gone");
}
static void add_k(gguf_file *f) { rename_to(f, "blk.0.ffn_gate.weight", "blk.0.attn_k.weight"); }
static void swap_post(gguf_file *f)
{
    gguf_tensor *t = tensor(f, "nextn.post_projection.weight");
    int64_t a = t->ne[0];
    t->ne[0] = t->ne[1];
    t->ne[1] = a;
}
static void short_norm(gguf_file *f) { tensor(f, "blk.2.attn_q_norm.weight")->ne[0] -= 32; }

/* The ordering's values, editable: a copy the test keeps alive. */
static float order_copy[512];
static float *own_order(gguf_file *f)
{
    gguf_tensor *t = tensor(f, "mtp.token_ordering.weight");
    memcpy(order_copy, t->data, sizeof order_copy);
    t->data = order_copy;
    return order_copy;
}
static void repeat_token(gguf_file *f)
{
    float *o = own_order(f);
    o[1] = o[0];
}
static void fractional_id(gguf_file *f) { own_order(f)[7] = 3.5f; }
static void id_out_of_range(gguf_file *f) { own_order(f)[9] = 512.0f; }
/* token -> centroid with 40 tokens in centroid 0 (16 per centroid) */
static void crowded_centroid(gguf_file *f)
{
    float *o = own_order(f);
    for (int i = 0; i < 512; i++)
        o[i] = (float)(i < 40 ? 0 : i % 32);
}
static void not_assistant(gguf_file *f)
{
    gguf_kv *kv = (gguf_kv *)gguf_find(f, "gemma4-assistant.embedding_length_out");
    free(kv->key);
    kv->key = strdup("gemma4-assistant.embedding_length_gone");
}

static void test_malformed(void)
{
    expect_load_error(drop_q, "missing tensor blk.1.attn_q.weight");
    expect_load_error(drop_pre, "missing tensor nextn.pre_projection.weight");
    expect_load_error(drop_order, "missing tensor mtp.token_ordering.weight");
    expect_load_error(add_k, "queries only");
    expect_load_error(swap_post, "nextn.post_projection.weight has shape");
    expect_load_error(short_norm, "blk.2.attn_q_norm.weight has 32 elements, expected 64");
    expect_load_error(repeat_token, "not a permutation");
    expect_load_error(fractional_id, "[7] = 3.5 is not a token id");
    expect_load_error(id_out_of_range, "[9] = 512 is not a token id");
    expect_load_error(crowded_centroid, "gives centroid 0 more than 16 tokens");
    expect_load_error(not_assistant, "embedding_length_out");
}

/* ik_llama.cpp's token -> centroid map loads as the same clusters (in id
 * order) as the permutation it was made from. */
static void test_centroid_map(void)
{
    sl_err err = {{0}};
    sl_mtp *perm = NULL, *map = NULL;
    gguf_file *f;
    CHECK(sl_mtp_load(&perm, assistant_path, &err) == 0);
    CHECK(gguf_open(&f, assistant_path, &err) == 0);
    if (!perm || !f)
        return;
    float *o = own_order(f);
    for (int i = 0; i < 512; i++)
        o[perm->cluster[i]] = (float)(i / perm->per_centroid);
    CHECK(sl_mtp_from_gguf(&map, f, &err) == 0);
    if (map)
        for (int c = 0; c < 32; c++) {
            int n_same = 0;
            for (int i = 0; i < 16; i++)
                for (int j = 0; j < 16; j++)
                    n_same += map->cluster[c * 16 + i] == perm->cluster[c * 16 + j];
            CHECKF(n_same == 16, "centroid %d: %d of 16 tokens agree", c, n_same);
            for (int i = 1; i < 16; i++)
                CHECK(map->cluster[c * 16 + i] > map->cluster[c * 16 + i - 1]);
        }
    sl_mtp_free(perm);
    sl_mtp_free(map);
}

/* ik_llama.cpp's own spelling (gemma4_mtp: mtp_pre_proj, mtp_post_proj,
 * backbone_embedding_length, centroid_count, the token -> centroid map) loads
 * as the same drafter as the gemma4-assistant file it was written beside
 * (the fuzz seeds: same weights, the map made from the permutation). */
static void test_ik_spelling(void)
{
    const char *src = getenv("SLUICE_SRC");
    CHECK(src != NULL);
    if (!src)
        return;
    char pa[1024], pb[1024];
    snprintf(pa, sizeof pa, "%s/tests/fuzz/corpus-mtp/assistant.gguf", src);
    snprintf(pb, sizeof pb, "%s/tests/fuzz/corpus-mtp/gemma4_mtp.gguf", src);
    sl_err err = {{0}};
    sl_mtp *a = NULL, *b = NULL;
    CHECKF(sl_mtp_load(&a, pa, &err) == 0, "%s", err.msg);
    CHECKF(sl_mtp_load(&b, pb, &err) == 0, "%s", err.msg);
    if (a && b) {
        CHECK(strcmp(b->cfg.arch, "gemma4_mtp") == 0 && b->cfg.d_backbone == 16);
        CHECK(b->cfg.n_centroids == 8 && b->cfg.centroid_top_k == 2 && b->per_centroid == 8);
        CHECK(b->pre_proj.n_in == 32 && b->post_proj.n_out == 16);
        for (int c = 0; c < 8; c++) {
            int n_same = 0;
            for (int i = 0; i < 8; i++)
                for (int j = 0; j < 8; j++)
                    n_same += a->cluster[c * 8 + i] == b->cluster[c * 8 + j];
            CHECKF(n_same == 8, "centroid %d: %d of 8 tokens agree", c, n_same);
        }
    }
    sl_mtp_free(a);
    sl_mtp_free(b);
}

static void test_pairing(void)
{
    sl_err err = {{0}};
    sl_mtp *a = NULL;
    sl_model *t = NULL, *other = NULL, *as_model = NULL;
    sl_mtp_ctx *ctx = NULL;
    CHECK(sl_mtp_load(&a, assistant_path, &err) == 0);
    CHECK(sl_model_load(&t, target_path, NULL, &err) == 0);
    CHECK(sl_model_load(&other, other_path, NULL, &err) == 0);
    CHECK(sl_model_load(&as_model, assistant_path, NULL, &err) < 0);
    CHECK_ERR_HAS(err, "drafter");
    if (!a || !t || !other)
        goto done;
    /* gemma3 test: same width and vocabulary, other head shapes */
    CHECK(sl_mtp_ctx_new(&ctx, a, other, &err) < 0);
    CHECK_ERR_HAS(err, "does not match target layer");
    CHECK(sl_mtp_ctx_new(&ctx, a, t, &err) == 0);
    if (!ctx)
        goto done;
    int src[2];
    sl_mtp_ctx_sources(ctx, src);
    CHECK(src[0] == 2 && src[1] == 3); /* the last own-cache sliding / global layers */
    int64_t rb[2] = {2 * 64 * 4, 1 * 128 * 4};
    float *rows = calloc(16 * 256, sizeof(float)), *h = calloc(256, sizeof(float));
    sl_mtp_kv kv[2] = {{rows, rows, 0, 10, rb[0], SL_TYPE_F32, 0},
                       {rows, rows, 0, 10, rb[1], SL_TYPE_F32, 0}};
    sl_mtp_out out;
    CHECK(sl_mtp_step(ctx, h, 5, 10, kv, &out, &err) == 0);
    CHECK(out.n_logits == 4 * 16 && out.ids != NULL);
    CHECK(sl_mtp_step(ctx, h, 5, 11, kv, &out, &err) < 0); /* row 10 is missing */
    CHECK_ERR_HAS(err, "rows of positions [0, 10) given, the step needs [4, 11)");
    CHECK(sl_mtp_step(ctx, h, 5, 0, kv, &out, &err) < 0);
    CHECK_ERR_HAS(err, "no keys before it");
    CHECK(sl_mtp_step(ctx, h, 512, 5, kv, &out, &err) < 0);
    CHECK_ERR_HAS(err, "outside the vocabulary");
    kv[1].row_bytes = 100;
    CHECK(sl_mtp_step(ctx, h, 5, 5, kv, &out, &err) < 0);
    CHECK_ERR_HAS(err, "cannot hold 1 heads of 128");
    free(rows);
    free(h);
done:
    sl_mtp_ctx_free(ctx);
    sl_mtp_free(a);
    sl_model_free(t);
    sl_model_free(other);
    sl_model_free(as_model);
}

/* A source layer's rows kept as a ring (slots a multiple of the attention
 * span, position p at row p % slots) give the step the same bits as the
 * plain array; a ring that is not a multiple of the span, or holds more
 * positions than rows, is refused. */
static void test_ring(void)
{
    sl_err err = {{0}};
    sl_mtp *a = NULL;
    sl_model *t = NULL;
    sl_mtp_ctx *ctx = NULL;
    CHECK(sl_mtp_load(&a, assistant_path, &err) == 0);
    CHECK(sl_model_load(&t, target_path, NULL, &err) == 0);
    if (!a || !t || sl_mtp_ctx_new(&ctx, a, t, &err)) {
        CHECK(0);
        goto done;
    }
    enum { P = 300, SLOTS = 128 };
    int64_t w[2] = {2 * 64, 1 * 128}; /* floats a row: sliding, global source layer */
    float *plain[2][2], *ring[2][2], *h = malloc(256 * sizeof(float));
    uint32_t seed = 7;
    for (int l = 0; l < 2; l++)
        for (int kv = 0; kv < 2; kv++) {
            plain[l][kv] = malloc((size_t)(P * w[l]) * sizeof(float));
            ring[l][kv] = calloc((size_t)(SLOTS * 3 * w[l]), sizeof(float));
            for (int64_t i = 0; i < P * w[l]; i++)
                plain[l][kv][i] = (float)((seed = seed * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
        }
    for (int i = 0; i < 256; i++)
        h[i] = (float)((seed = seed * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
    /* the sliding layer's last 128 positions in a ring of 128; the global
     * layer's 300 in a ring of 384 (it never wraps: the same rows) */
    int64_t slots[2] = {SLOTS, 3 * SLOTS}, lo[2] = {P - SLOTS, 0};
    for (int l = 0; l < 2; l++)
        for (int kv = 0; kv < 2; kv++)
            for (int64_t p = lo[l]; p < P; p++)
                memcpy(ring[l][kv] + (p % slots[l]) * w[l], plain[l][kv] + p * w[l],
                       (size_t)w[l] * sizeof(float));
    sl_mtp_kv kp[2], kr[2];
    for (int l = 0; l < 2; l++) {
        kp[l] = (sl_mtp_kv){plain[l][0], plain[l][1], 0, P, w[l] * 4, SL_TYPE_F32, 0};
        kr[l] = (sl_mtp_kv){ring[l][0], ring[l][1], lo[l], P - lo[l], w[l] * 4, SL_TYPE_F32, slots[l]};
    }
    sl_mtp_out out;
    int n = 0;
    float *want = NULL;
    if (sl_mtp_step(ctx, h, 5, P, kp, &out, &err) == 0) {
        n = out.n_logits;
        want = malloc((size_t)n * sizeof(float));
        memcpy(want, out.logits, (size_t)n * sizeof(float));
    } else
        CHECKF(0, "%s", err.msg);
    CHECKF(sl_mtp_step(ctx, h, 5, P, kr, &out, &err) == 0, "%s", err.msg);
    CHECK(want && out.n_logits == n && memcmp(want, out.logits, (size_t)n * sizeof(float)) == 0);
    kr[0].slots = 100;
    CHECK(sl_mtp_step(ctx, h, 5, P, kr, &out, &err) < 0);
    CHECK_ERR_HAS(err, "a ring of 100 rows holding 128 positions");
    kr[0].slots = SLOTS;
    kr[0].n = SLOTS + 1, kr[0].pos0 = P - SLOTS - 1;
    CHECK(sl_mtp_step(ctx, h, 5, P, kr, &out, &err) < 0);
    CHECK_ERR_HAS(err, "a ring of 128 rows holding 129 positions");
    free(want);
    free(h);
    for (int l = 0; l < 2; l++)
        for (int kv = 0; kv < 2; kv++)
            free(plain[l][kv]), free(ring[l][kv]);
done:
    sl_mtp_ctx_free(ctx);
    sl_mtp_free(a);
    sl_model_free(t);
}

int main(void)
{
    CHECK(test_synth("--arch gemma4-assistant --size test", assistant_path) == 0);
    CHECK(test_synth("--arch gemma4 --size test", target_path) == 0);
    CHECK(test_synth("--arch gemma3 --size test", other_path) == 0);
    test_malformed();
    test_centroid_map();
    test_ik_spelling();
    test_pairing();
    test_ring();
    unlink(assistant_path);
    unlink(target_path);
    unlink(other_path);
    return test_finish("test_mtp");
}
