/* Gemma 4 pipelines: per-layer embeddings gathered at the layers stages
 * (limits.ple: local) or once at the embed stage (limits.ple: embed) give
 * exactly the tokens of the one-stage run, split at every boundary the KV
 * sharing allows; a cut inside the KV-sharing layers is refused by name.
 * The embed stage's message carries the per-layer inputs of every layer and
 * no token ids (so the layers stages can only have used them), and each
 * layers stage passes on exactly the slices of the layers after it.
 *
 * The model is a synthetic gemma4 (`sluice synth --size test`, Q4_0: the
 * per-layer table is dequantised block by block); runs sample at
 * temperature 1 with fixed seeds, so any difference in the logits shows. */
#include "model/config.h"
#include "model/forward.h"
#include "model/gguf.h"
#include "model/model.h"
#include "pipeline/client.h"
#include "pipeline/wire.h"
#include "stages/stage.h"
#include "tests/lib/ports.h"
#include "tests/test.h"

#include <stdint.h>
#include <unistd.h>

#define N_PROMPTS 3
#define N_GEN 16

static const char *const PROMPTS[N_PROMPTS] = {
    "This program is free software",
    "Permission is hereby granted, free of charge, to any person obtaining a copy of this",
    "THE SOFTWARE IS PROVIDED AS IS",
};

static char model_path[512];
static char tmpdir[256];
static sl_config cfg;

typedef struct result {
    int32_t tok[64];
    int n;
    int errors;
    char error[512];
    bool done;
} result;

static void layout(pl_config *c, const int *cuts, int n_cuts, int ple)
{
    pl_config_default(c, model_path, cfg.n_layer);
    c->limits.max_sequences = 4;
    c->limits.context = 256;
    c->limits.ple = ple;
    pl_stage embed = c->stages[0], layers = c->stages[1], head = c->stages[2], sample = c->stages[3];
    int n = 0, l0 = 0;
    c->stages[n++] = embed;
    for (int i = 0; i <= n_cuts; i++) {
        layers.l0 = l0;
        layers.l1 = i < n_cuts ? cuts[i] : cfg.n_layer;
        c->stages[n++] = layers;
        l0 = layers.l1;
    }
    c->stages[n++] = head;
    c->stages[n++] = sample;
    c->n_stages = n;
}

/* Runs all prompts at once (batches mixing requests); -1 when the pipeline
 * does not open (err then says why) or hangs. */
static int run(const pl_config *c, const char *hops, result *res, sl_err *err)
{
    sl_pipeline_opts o;
    sl_pipeline_opts_default(&o);
    o.local_hops = hops;
    sl_pipeline *p;
    if (sl_pipeline_open(&p, c, &o, err))
        return -1;
    uint64_t ids[N_PROMPTS];
    for (int i = 0; i < N_PROMPTS; i++) {
        sl_gen_params gp = {.prompt = PROMPTS[i], .max_tokens = N_GEN};
        sl_sampling_defaults(&gp.sampling);
        gp.sampling.temperature = 1.0f;
        gp.sampling.seed = 7000 + (uint64_t)i;
        memset(&res[i], 0, sizeof res[i]);
        if (sl_pipeline_submit(p, &gp, &ids[i], err)) {
            sl_pipeline_close(p);
            return -1;
        }
    }
    sl_event ev;
    int rc;
    while ((rc = sl_pipeline_next(p, &ev, 20000, err)) == 1)
        for (int i = 0; i < N_PROMPTS; i++) {
            if (ids[i] != ev.request)
                continue;
            if (ev.kind == SL_EV_TOKEN && res[i].n < 64)
                res[i].tok[res[i].n++] = ev.token;
            else if (ev.kind == SL_EV_ERROR) {
                res[i].errors++;
                snprintf(res[i].error, sizeof res[i].error, "%s", ev.error);
            } else if (ev.kind == SL_EV_DONE)
                res[i].done = true;
        }
    sl_pipeline_close(p);
    if (rc == 0)
        sl_fail(err, "the pipeline hung");
    return rc == 0 ? -1 : 0;
}

static bool same_all(const result *a, const result *b)
{
    for (int i = 0; i < N_PROMPTS; i++)
        if (a[i].n != b[i].n || !a[i].done || a[i].errors ||
            memcmp(a[i].tok, b[i].tok, (size_t)a[i].n * sizeof a[i].tok[0]) != 0)
            return false;
    return true;
}

/* A stage may not start at layer k when a layer at or after k reads the KV
 * cache of a layer before k: from the model's config, not the runtime's. */
static bool cut_shares_kv(int k)
{
    for (int il = k; il < cfg.n_layer; il++)
        if (cfg.layer[il].kv_src >= 0 && cfg.layer[il].kv_src < k)
            return true;
    return false;
}

static void check_splits(const result *base)
{
    static const char *const mode_name[2] = {"local", "embed"};
    int n_ok = 0, n_refused = 0;
    for (int ple = 0; ple < 2; ple++) {
        result res[N_PROMPTS];
        pl_config c;
        sl_err err;
        /* one layers stage in either mode */
        layout(&c, NULL, 0, ple);
        CHECKF(run(&c, NULL, res, &err) == 0 && same_all(res, base), "ple %s, one layers stage",
               mode_name[ple]);
        for (int k = 1; k < cfg.n_layer; k++) {
            layout(&c, &k, 1, ple);
            int rc = run(&c, NULL, res, &err);
            if (cut_shares_kv(k)) {
                n_refused++;
                CHECKF(rc != 0 && strstr(err.msg, "outside this part's layers"),
                       "ple %s, cut at %d inside the KV sharing refused (%s)", mode_name[ple], k,
                       rc ? err.msg : "it ran");
            } else {
                n_ok++;
                CHECKF(rc == 0 && same_all(res, base), "ple %s, 2 stages cut at %d: %s",
                       mode_name[ple], k, rc ? err.msg : "tokens differ");
            }
        }
        /* every allowed boundary at once */
        int cuts[SL_MAX_LAYERS], n_cuts = 0;
        for (int k = 1; k < cfg.n_layer; k++)
            if (!cut_shares_kv(k))
                cuts[n_cuts++] = k;
        layout(&c, cuts, n_cuts, ple);
        CHECKF(run(&c, NULL, res, &err) == 0 && same_all(res, base), "ple %s, %d stages",
               mode_name[ple], n_cuts + 1);
        /* over a real socket: the per-layer rows cross the wire */
        char hops[64];
        int port_fds[8] = {0}; /* base+0 .. base+5: reserved for us (tests/lib/ports.h) */
        int port_base = test_reserve_ports(8, port_fds);
        CHECK(port_base > 0);
        snprintf(hops, sizeof hops, "tcp:%d", port_base);
        layout(&c, cuts, 1, ple);
        if (port_base > 0) {
            int rc = run(&c, hops, res, &err);
            CHECKF(rc == 0 && same_all(res, base), "ple %s, 2 stages over tcp: %s", mode_name[ple],
                   rc ? err.msg : "tokens differ");
            test_release_ports(8, port_fds);
        }
    }
    CHECKF(n_ok >= 4 && n_refused >= 4, "both kinds of cut were tried (%d allowed, %d refused)",
           n_ok, n_refused);
}

/* ---- the messages themselves ---- */

/* What a stage emitted (the header's strings point into the stage's
 * stack, so the error text is copied here). */
typedef struct captured {
    pl_msg m;
    bool have;
    char error[512];
} captured;

static int capture(void *ctx, pl_msg *m, sl_err *err)
{
    (void)err;
    captured *c = ctx;
    c->m = *m;
    c->m.hdr = &c->m.hdr_store;
    snprintf(c->error, sizeof c->error, "%s", m->hdr_store.error ? m->hdr_store.error : "");
    c->m.hdr_store.error = NULL;
    c->have = true;
    return 0;
}

static void check_messages(void)
{
    enum { N = 5 };
    int64_t pl = cfg.n_embd_per_layer;
    int nl = cfg.n_layer;
    sl_stage_spec spec = {.kind = PL_STAGE_EMBED, .model = model_path, .max_sequences = 2,
                          .context = 64, .max_batch_tokens = 8, .ple_at_embed = true};
    sl_stage *embed, *layers, *local_embed;
    sl_err err;
    CHECKF(sl_stage_create(&embed, &spec, &err) == 0, "embed stage: %s", err.msg);
    spec.ple_at_embed = false;
    CHECKF(sl_stage_create(&local_embed, &spec, &err) == 0, "local embed stage: %s", err.msg);
    spec = (sl_stage_spec){.kind = PL_STAGE_LAYERS, .model = model_path, .l0 = 0, .l1 = 2,
                           .max_sequences = 2, .context = 64, .max_batch_tokens = 8};
    CHECKF(sl_stage_create(&layers, &spec, &err) == 0, "layers stage: %s", err.msg);
    uint64_t req[N] = {1, 1, 1, 2, 2};
    int32_t seq[N] = {0, 0, 0, 1, 1}, pos[N] = {0, 1, 2, 0, 1}, tok[N] = {2, 17, 300, 2, 511};
    uint8_t flags[N] = {0, 0, 1, 0, 1};
    pl_msg in;
    pl_msg_init(&in, SLUICE__MSG_KIND__MSG_BATCH, 1, N);
    CHECK(pl_msg_add(&in, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, N, 0, req, NULL, NULL, &err) == 0 &&
          pl_msg_add(&in, SLUICE__PAYLOAD_KIND__PL_SEQ, SLUICE__DTYPE__DT_I32, N, 0, seq, NULL, NULL, &err) == 0 &&
          pl_msg_add(&in, SLUICE__PAYLOAD_KIND__PL_POS, SLUICE__DTYPE__DT_I32, N, 0, pos, NULL, NULL, &err) == 0 &&
          pl_msg_add(&in, SLUICE__PAYLOAD_KIND__PL_FLAGS, SLUICE__DTYPE__DT_U8, N, 0, flags, NULL, NULL, &err) == 0 &&
          pl_msg_add(&in, SLUICE__PAYLOAD_KIND__PL_TOKEN, SLUICE__DTYPE__DT_I32, N, 0, tok, NULL, NULL, &err) == 0);
    captured e = {0}, l = {0}, le = {0};
    sl_emit to_e = {capture, &e}, to_l = {capture, &l}, to_le = {capture, &le};
    CHECK(embed->process(embed, &in, &to_e, &err) == 0 && e.have);
    CHECK(local_embed->process(local_embed, &in, &to_le, &err) == 0 && le.have);
    const int kp = SLUICE__PAYLOAD_KIND__PL_PLE, kt = SLUICE__PAYLOAD_KIND__PL_TOKEN;
    CHECKF(e.m.hdr->kind == SLUICE__MSG_KIND__MSG_BATCH && e.m.data[kp] &&
           e.m.shape[kp][0] == N && e.m.shape[kp][1] == (uint64_t)(nl * pl) && !e.m.data[kt],
           "embed (ple: embed) sends f32 [%d, %lld] per-layer rows and no token ids", N,
           (long long)(nl * pl));
    CHECKF(le.have && !le.m.data[kp] && le.m.data[kt],
           "embed (ple: local) sends token ids and no per-layer rows");
    /* the rows are the per-layer inputs, layer-major: the local computation */
    gguf_file *f;
    sl_model *m;
    CHECK(gguf_open(&f, model_path, &err) == 0);
    sl_model_part part = {0, nl, false, false, false};
    CHECK(sl_model_from_gguf(&m, f, &part, &err) == 0);
    float *x0 = malloc(sizeof(float) * N * (size_t)cfg.d_model);
    float *want = malloc(sizeof(float) * N * (size_t)(nl * pl));
    CHECK(x0 && want && sl_embed(m, tok, N, x0, &err) == 0 &&
          sl_ple_inputs(m, tok, x0, N, want, want, nl * pl, pl, NULL, &err) == 0);
    const float *got = e.m.data[kp];
    bool same = true;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < nl; j++)
            same &= memcmp(got + ((size_t)j * N + (size_t)i) * pl,
                           want + (size_t)i * nl * pl + (size_t)j * pl, (size_t)pl * sizeof(float)) == 0;
    CHECKF(same, "per-layer rows equal (bit for bit) the layers' own computation, layer-major");
    /* a layers stage [0, 2) passes on the slices of layers 2.. */
    CHECK(layers->process(layers, &e.m, &to_l, &err) == 0 && l.have);
    CHECKF(l.m.hdr->kind == SLUICE__MSG_KIND__MSG_BATCH && l.m.data[kp] &&
           l.m.shape[kp][1] == (uint64_t)((nl - 2) * pl) &&
           memcmp(l.m.data[kp], got + (size_t)2 * N * pl, (size_t)(nl - 2) * N * pl * sizeof(float)) == 0,
           "layers [0, 2) passes on exactly the rows of layers 2 to %d", nl);
    pl_msg_close(&l.m);
    /* a wrong width is refused by name, not read past */
    captured bad = {0};
    sl_emit to_bad = {capture, &bad};
    e.m.shape[kp][1] = (uint64_t)((nl - 1) * pl);
    CHECK(layers->process(layers, &e.m, &to_bad, &err) == 0 && bad.have);
    CHECKF(bad.m.hdr->kind == SLUICE__MSG_KIND__MSG_ERROR &&
           strstr(bad.error, "per-layer inputs are not f32"),
           "a per-layer payload of the wrong width fails the batch (%s)", bad.error);
    e.m.shape[kp][1] = (uint64_t)(nl * pl);
    pl_msg_close(&bad.m);
    /* a batch continuing sequences a (restarted) stage holds nothing of is
     * answered with an ERROR that says so, naming the first such row */
    sl_stage *fresh;
    CHECK(sl_stage_create(&fresh, &spec, &err) == 0);
    int32_t *at = (int32_t *)e.m.data[SLUICE__PAYLOAD_KIND__PL_POS];
    const int32_t later[N] = {59, 60, 61, 7, 8};
    memcpy(at, later, sizeof later);
    captured stale = {0};
    sl_emit to_stale = {capture, &stale};
    CHECK(fresh->process(fresh, &e.m, &to_stale, &err) == 0 && stale.have);
    CHECKF(stale.m.hdr->kind == SLUICE__MSG_KIND__MSG_ERROR &&
           strstr(stale.error, "sequence 0 continues at position 59, but this stage holds no cache for it"),
           "a batch from before a restart fails as stale (%s)", stale.error);
    CHECKF(stale.m.hdr->n_rows == N, "the stale batch's ERROR names its %d rows' requests", N);
    pl_msg_close(&stale.m);
    sl_stage_destroy(fresh);
    pl_msg_close(&e.m);
    pl_msg_close(&le.m);
    pl_msg_close(&in);
    free(x0);
    free(want);
    sl_model_free(m);
    sl_stage_destroy(embed);
    sl_stage_destroy(local_embed);
    sl_stage_destroy(layers);
}

int main(void)
{
    const char *sluice = getenv("SLUICE");
    if (!sluice) {
        fprintf(stderr, "SLUICE (path of the sluice binary) is not set\n");
        return 1;
    }
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sluice-test-ple-%d", (int)getpid());
    snprintf(model_path, sizeof model_path, "%s/g4.gguf", tmpdir);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "mkdir -p -m 700 %s && %s synth --arch gemma4 --size test --type q4_0 "
             "--seed 5 --weight-scale 0.6 -o %s >/dev/null 2>&1", tmpdir, sluice, model_path);
    if (system(cmd) != 0) {
        fprintf(stderr, "synth failed\n");
        return 1;
    }
    gguf_file *f;
    sl_err err;
    if (gguf_open(&f, model_path, &err) || sl_config_from_gguf(&cfg, f, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    gguf_close(f);
    CHECKF(cfg.n_embd_per_layer > 0, "the test model has per-layer embeddings");
    result base[N_PROMPTS];
    pl_config c;
    layout(&c, NULL, 0, PLE_AT_LAYERS);
    CHECKF(run(&c, NULL, base, &err) == 0, "baseline: %s", err.msg);
    int distinct = 0;
    for (int k = 1; k < base[0].n; k++)
        distinct += base[0].tok[k] != base[0].tok[k - 1];
    CHECKF(base[0].n == N_GEN && distinct >= 4, "baseline tokens vary (%d changes)", distinct);
    check_messages();
    check_splits(base);
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup of %s failed\n", tmpdir);
    return test_finish("test_pipeline_ple");
}
