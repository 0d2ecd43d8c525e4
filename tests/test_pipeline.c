/* The pipeline runtime in one process: the tokens of a run do not depend on
 * how the layers are split into stages, on the transport between them, or
 * on what else is in flight; bad messages injected into a stage fail only
 * the request they name; cancel and slot exhaustion behave.
 *
 * The model is a synthetic gemma3 (`sluice synth --size test`); runs sample
 * at temperature 1 with fixed seeds, which makes varied token streams that
 * any difference in the logits would change. */
#include "pipeline/client.h"
#include "pipeline/wire.h"
#include "tests/lib/ports.h"
#include "tests/test.h"
#include "tests/lib/open.h"

#include <stdint.h>
#include <unistd.h>
#include <zmq.h>

#define N_PROMPTS 4
#define N_GEN 24

static const char *const PROMPTS[N_PROMPTS] = {
    "This program is free software",
    "you may not use this file except in compliance",
    "THE SOFTWARE IS PROVIDED AS IS",
    "Permission is hereby granted, free of charge, to any person obtaining a copy of this",
};

static char model_path[512];
static char tmpdir[256];

typedef struct result {
    int32_t tok[256];
    int n;
    int errors;
    char error[512];
    bool done;
} result;

static sl_gen_params params_for(int i, int n_gen)
{
    sl_gen_params gp = {.prompt = PROMPTS[i], .max_tokens = n_gen};
    sl_sampling_defaults(&gp.sampling);
    gp.sampling.temperature = 1.0f;
    gp.sampling.seed = 1000 + (uint64_t)i;
    return gp;
}

static void layout(pl_config *c, const int *cuts, int n_cuts)
{
    pl_config_default(c, model_path, 6);
    c->limits.max_sequences = 4;
    c->limits.context = 256;
    /* embed, layers..., head, sample */
    pl_stage embed = c->stages[0], layers = c->stages[1], head = c->stages[2], sample = c->stages[3];
    int n = 0, l0 = 0;
    c->stages[n++] = embed;
    for (int i = 0; i <= n_cuts; i++) {
        int l1 = i < n_cuts ? cuts[i] : 6;
        layers.l0 = l0;
        layers.l1 = l1;
        c->stages[n++] = layers;
        l0 = l1;
    }
    c->stages[n++] = head;
    c->stages[n++] = sample;
    c->n_stages = n;
}

/* Runs the listed prompts concurrently; results indexed like PROMPTS. */
static int run(const pl_config *c, const char *hops, const int *which, int n_which, result *res)
{
    sl_pipeline *p = test_open_on_hops(c, hops);
    if (!p)
        return -1;
    sl_err err;
    uint64_t ids[N_PROMPTS];
    for (int k = 0; k < n_which; k++) {
        sl_gen_params gp = params_for(which[k], N_GEN);
        memset(&res[which[k]], 0, sizeof res[0]);
        if (sl_pipeline_submit(p, &gp, &ids[k], &err)) {
            fprintf(stderr, "submit: %s\n", err.msg);
            sl_pipeline_close(p);
            return -1;
        }
    }
    sl_event ev;
    int rc;
    while ((rc = sl_pipeline_next(p, &ev, 10000, &err)) == 1) {
        for (int k = 0; k < n_which; k++) {
            if (ids[k] != ev.request)
                continue;
            result *r = &res[which[k]];
            if (ev.kind == SL_EV_TOKEN && r->n < 256)
                r->tok[r->n++] = ev.token;
            else if (ev.kind == SL_EV_ERROR) {
                r->errors++;
                snprintf(r->error, sizeof r->error, "%s", ev.error);
            } else if (ev.kind == SL_EV_DONE)
                r->done = true;
        }
    }
    sl_pipeline_close(p);
    return rc == 0 ? -1 : 0; /* 0 from next means a timeout: the pipeline hung */
}

static bool same(const result *a, const result *b)
{
    return a->n == b->n && memcmp(a->tok, b->tok, (size_t)a->n * sizeof a->tok[0]) == 0;
}

static void check_layouts(const result *base)
{
    static const int cuts2[] = {3}, cuts4[] = {1, 3, 5};
    struct { const int *cuts; int n; const char *hops; const char *name; } layouts[] = {
        {cuts2, 1, NULL, "2 stages inproc"},
        {cuts4, 3, NULL, "4 stages inproc"},
        {cuts4, 3, "ipc", "4 stages ipc"},
        {cuts2, 1, "tcp", "2 stages tcp"},
    };
    const int all[N_PROMPTS] = {0, 1, 2, 3};
    /* the tcp hops bind base+0 .. base+n_stages: ports reserved for this
     * process (tests/lib/ports.h), never numbers another test may hold */
    int port_fds[8] = {0};
    int tcp_base = test_reserve_ports(8, port_fds);
    CHECK(tcp_base > 0);
    for (size_t l = 0; l < sizeof layouts / sizeof layouts[0]; l++) {
        if (layouts[l].hops && strcmp(layouts[l].hops, "tcp") == 0 && tcp_base < 0)
            continue;
        pl_config c;
        layout(&c, layouts[l].cuts, layouts[l].n);
        char hops[300] = {0};
        if (layouts[l].hops && strcmp(layouts[l].hops, "ipc") == 0)
            snprintf(hops, sizeof hops, "ipc:%s", tmpdir);
        else if (layouts[l].hops)
            snprintf(hops, sizeof hops, "tcp:%d", tcp_base);
        result res[N_PROMPTS];
        /* each prompt alone, then all together */
        for (int i = 0; i < N_PROMPTS; i++) {
            CHECK(run(&c, hops[0] ? hops : NULL, &i, 1, res) == 0);
            CHECKF(same(&res[i], &base[i]) && res[i].done, "%s, prompt %d alone: %d tokens vs %d",
                   layouts[l].name, i, res[i].n, base[i].n);
        }
        CHECK(run(&c, hops[0] ? hops : NULL, all, N_PROMPTS, res) == 0);
        for (int i = 0; i < N_PROMPTS; i++)
            CHECKF(same(&res[i], &base[i]) && res[i].done && !res[i].errors,
                   "%s, prompt %d among %d in flight", layouts[l].name, i, N_PROMPTS);
    }
    if (tcp_base > 0)
        test_release_ports(8, port_fds);
}

/* Fewer KV slots than requests: the rest wait and still give their tokens. */
static void check_slot_queue(const result *base)
{
    pl_config c;
    layout(&c, (const int[]){2}, 1);
    c.limits.max_sequences = 1;
    const int all[N_PROMPTS] = {0, 1, 2, 3};
    result res[N_PROMPTS];
    CHECK(run(&c, NULL, all, N_PROMPTS, res) == 0);
    for (int i = 0; i < N_PROMPTS; i++)
        CHECKF(same(&res[i], &base[i]) && res[i].done, "one slot, prompt %d", i);
}

/* ---- injection ---- */

/* The bad messages claim the pipeline's run (a stage of it gone wrong):
 * they reach the stage's own checks, which a message of another run never
 * does (check_foreign). */
static void send_bad(void *sock, int variant, uint64_t real_req, uint64_t run_id)
{
    pl_msg m;
    sl_err err;
    uint64_t req[2] = {real_req ? real_req : 999999, 999998};
    int32_t seq[2] = {variant == 2 ? 77 : 0, 0}, pos[2] = {0, 1};
    uint8_t flags[2] = {1, 1};
    float act[2 * 256] = {0};
    if (variant == 0) {
        zmq_send(sock, "garbage", 7, ZMQ_SNDMORE);
        zmq_send(sock, "\x01\x02\x03", 3, 0);
        return;
    }
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_BATCH, 4242 + (uint64_t)variant, 2);
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, 2, 0, req, NULL, NULL, &err);
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_SEQ, SLUICE__DTYPE__DT_I32, 2, 0, seq, NULL, NULL, &err);
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_POS, SLUICE__DTYPE__DT_I32, 2, 0, pos, NULL, NULL, &err);
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_FLAGS, SLUICE__DTYPE__DT_U8, 2, 0, flags, NULL, NULL, &err);
    /* variants 1 and 3: activations 128 wide where the model has 256;
     * variant 2: the right width but a KV slot the stage does not have */
    pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_ACTIVATION, SLUICE__DTYPE__DT_F32, 2,
               variant == 2 ? 256 : 128, act, NULL, NULL, &err);
    pl_msg_set_run_id(&m, run_id);
    CHECK(pl_msg_send(&m, sock, 0, &err) == 0);
    pl_msg_close(&m);
}

static void check_injection(const result *base)
{
    pl_config c;
    layout(&c, (const int[]){3}, 1);
    char hops[300];
    snprintf(hops, sizeof hops, "ipc:%s", tmpdir);
    sl_pipeline *p = test_open_on_hops(&c, hops);
    if (!p)
        return;
    sl_err err;
    void *zctx = zmq_ctx_new();
    void *sock = zmq_socket(zctx, ZMQ_PUSH);
    char addr[400];
    snprintf(addr, sizeof addr, "ipc://%s/s2", tmpdir); /* the second layers stage */
    CHECK(zmq_connect(sock, addr) == 0);
    uint64_t id_keep, id_victim;
    sl_gen_params g0 = params_for(0, N_GEN), g1 = params_for(1, 200);
    CHECK(sl_pipeline_submit(p, &g0, &id_keep, &err) == 0);
    CHECK(sl_pipeline_submit(p, &g1, &id_victim, &err) == 0);
    result keep = {0}, victim = {0};
    sl_event ev;
    int sent = 0, rc;
    while ((rc = sl_pipeline_next(p, &ev, 10000, &err)) == 1) {
        result *r = ev.request == id_keep ? &keep : &victim;
        if (ev.kind == SL_EV_TOKEN)
            r->n < 256 ? (void)(r->tok[r->n++] = ev.token) : (void)0;
        else if (ev.kind == SL_EV_ERROR) {
            r->errors++;
            snprintf(r->error, sizeof r->error, "%s", ev.error);
        } else
            r->done = true;
        /* After a few tokens: garbage, a wrong shape for an unknown request,
         * an out-of-range slot, then a wrong shape naming the victim. */
        if (ev.kind == SL_EV_TOKEN && ev.request == id_keep && keep.n == 3 && sent == 0) {
            for (int v = 0; v < 3; v++)
                send_bad(sock, v, 0, sl_pipeline_run_id(p));
            send_bad(sock, 3, id_victim, sl_pipeline_run_id(p));
            sent = 1;
        }
    }
    CHECK(rc == -1); /* nothing pending: every request ended */
    CHECKF(same(&keep, &base[0]) && keep.done && !keep.errors,
           "the untouched request completes with its tokens (%d vs %d, errors %d: %s)", keep.n,
           base[0].n, keep.errors, keep.error);
    CHECKF(victim.errors == 1 && !victim.done && strstr(victim.error, "layers[3,6)"),
           "the request a bad message names fails with the stage's error (%s)", victim.error);
    /* the pipeline still serves */
    uint64_t id;
    sl_gen_params g2 = params_for(2, N_GEN);
    result after = {0};
    CHECK(sl_pipeline_submit(p, &g2, &id, &err) == 0);
    while (sl_pipeline_next(p, &ev, 10000, &err) == 1)
        if (ev.kind == SL_EV_TOKEN)
            after.tok[after.n++] = ev.token;
    CHECKF(same(&after, &base[2]), "a request after the injection gives its tokens");
    zmq_close(sock);
    zmq_ctx_term(zctx);
    sl_pipeline_close(p);
}

/* A well-formed batch for slot 0 at position 0 (the stage would cut the
 * slot there, rewinding the request that holds it), from run run_id (0:
 * none, as a sender that knows nothing of runs sends). */
static void send_foreign_batch(void *sock, uint64_t run_id, uint64_t batch_id)
{
    pl_msg m;
    sl_err err;
    uint64_t req = 1;
    int32_t seq = 0, pos = 0;
    uint8_t flags = 1;
    static float act[256];
    for (int i = 0; i < 256; i++)
        act[i] = 0.01f * (float)(i % 7);
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_BATCH, batch_id, 1);
    CHECK(pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, 1, 0, &req, NULL, NULL, &err) == 0);
    CHECK(pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_SEQ, SLUICE__DTYPE__DT_I32, 1, 0, &seq, NULL, NULL, &err) == 0);
    CHECK(pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_POS, SLUICE__DTYPE__DT_I32, 1, 0, &pos, NULL, NULL, &err) == 0);
    CHECK(pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_FLAGS, SLUICE__DTYPE__DT_U8, 1, 0, &flags, NULL, NULL, &err) == 0);
    CHECK(pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_ACTIVATION, SLUICE__DTYPE__DT_F32, 1, 256, act, NULL, NULL,
                     &err) == 0);
    pl_msg_set_run_id(&m, run_id);
    CHECKF(pl_msg_send(&m, sock, 0, &err) == 0, "%s", err.msg);
    pl_msg_close(&m);
}

/* An ERROR naming the live request, as the last stage of another run
 * would send it to its driver. */
static void send_foreign_error(void *sock, uint64_t run_id, uint64_t request)
{
    pl_msg m;
    sl_err err;
    pl_msg_init(&m, SLUICE__MSG_KIND__MSG_ERROR, 7, 1);
    CHECK(pl_msg_add(&m, SLUICE__PAYLOAD_KIND__PL_REQUEST_ID, SLUICE__DTYPE__DT_U64, 1, 0, &request, NULL, NULL,
                     &err) == 0);
    pl_msg_set_error(&m, "a stranger's error", "stranger");
    pl_msg_set_run_id(&m, run_id);
    CHECKF(pl_msg_send(&m, sock, 0, &err) == 0, "%s", err.msg);
    pl_msg_close(&m);
}

/* The wire has no identity of its own: without CURVE any sender that
 * reaches a tcp:// input can deliver a well-formed message. Batches and an
 * ERROR of another run (and of none) reach a plain-tcp pipeline's stages
 * and driver mid-request; they are dropped and counted, and the live
 * request gives exactly the tokens of an undisturbed run. */
static void check_foreign(const result *base)
{
    int port_fds[8] = {0};
    int tcp_base = test_reserve_ports(8, port_fds);
    CHECK(tcp_base > 0);
    if (tcp_base <= 0)
        return;
    pl_config c;
    layout(&c, (const int[]){3}, 1); /* embed s0, layers s1 s2, head s3, sample s4, driver 5 */
    char hops[64];
    snprintf(hops, sizeof hops, "tcp:%d", tcp_base);
    sl_pipeline *p = test_open_on_hops(&c, hops);
    if (!p) {
        test_release_ports(8, port_fds);
        return;
    }
    sl_err err;
    uint64_t run = sl_pipeline_run_id(p), other = run ^ 0x5a5a5a5a5a5a5a5aull;
    CHECK(run != 0);
    void *zctx = zmq_ctx_new();
    void *to_layers[2], *to_driver = zmq_socket(zctx, ZMQ_PUSH);
    char addr[64];
    for (int k = 0; k < 2; k++) {
        to_layers[k] = zmq_socket(zctx, ZMQ_PUSH);
        snprintf(addr, sizeof addr, "tcp://127.0.0.1:%d", tcp_base + 1 + k);
        CHECK(zmq_connect(to_layers[k], addr) == 0);
    }
    snprintf(addr, sizeof addr, "tcp://127.0.0.1:%d", tcp_base + 5);
    CHECK(zmq_connect(to_driver, addr) == 0);
    uint64_t id;
    sl_gen_params g0 = params_for(0, N_GEN);
    CHECK(sl_pipeline_submit(p, &g0, &id, &err) == 0);
    result live = {0};
    sl_event ev;
    bool sent = false;
    int rc;
    while ((rc = sl_pipeline_next(p, &ev, 10000, &err)) == 1) {
        if (ev.kind == SL_EV_TOKEN && live.n < 256)
            live.tok[live.n++] = ev.token;
        else if (ev.kind == SL_EV_ERROR) {
            live.errors++;
            snprintf(live.error, sizeof live.error, "%s", ev.error);
        } else if (ev.kind == SL_EV_DONE)
            live.done = true;
        if (ev.kind == SL_EV_TOKEN && live.n == 2 && !sent) {
            for (int k = 0; k < 2; k++) {
                send_foreign_batch(to_layers[k], 0, 1);
                send_foreign_batch(to_layers[k], other, 2);
            }
            send_foreign_error(to_driver, other, id);
            sent = true;
        }
    }
    CHECK(rc == -1);
    CHECKF(sent && same(&live, &base[0]) && live.done && !live.errors,
           "the live request gives its undisturbed tokens (%d vs %d, errors %d: %s)", live.n, base[0].n,
           live.errors, live.error);
    /* each layers stage dropped both of its batches as foreign, and the
     * driver the ERROR; the batches may still be on their way when the
     * request ends, so the counts are awaited */
    uint64_t foreign[2] = {0, 0};
    for (int tries = 0; tries < 1000 && (foreign[0] < 2 || foreign[1] < 2); tries++) {
        pl_stage_metrics *m = NULL;
        int n = 0;
        CHECK(sl_pipeline_metrics(p, &m, &n) == 0);
        for (int i = 0; i < n; i++) {
            if (strcmp(m[i].name, "layers[0,3)") == 0)
                foreign[0] = m[i].foreign;
            else if (strcmp(m[i].name, "layers[3,6)") == 0)
                foreign[1] = m[i].foreign;
        }
        free(m);
        if (foreign[0] < 2 || foreign[1] < 2)
            usleep(10000);
    }
    CHECKF(foreign[0] == 2 && foreign[1] == 2, "foreign batches counted: layers[0,3) %llu, layers[3,6) %llu",
           (unsigned long long)foreign[0], (unsigned long long)foreign[1]);
    CHECKF(sl_pipeline_foreign(p) == 1, "the driver dropped the foreign ERROR (%llu)",
           (unsigned long long)sl_pipeline_foreign(p));
    pl_client_metrics cm;
    sl_pipeline_client_metrics(p, &cm);
    CHECKF(cm.foreign == 1, "the driver's foreign count in its client metrics (%llu)",
           (unsigned long long)cm.foreign);
    /* and a request after them still gives its tokens */
    uint64_t id2;
    sl_gen_params g2 = params_for(2, N_GEN);
    result after = {0};
    CHECK(sl_pipeline_submit(p, &g2, &id2, &err) == 0);
    while (sl_pipeline_next(p, &ev, 10000, &err) == 1)
        if (ev.kind == SL_EV_TOKEN && after.n < 256)
            after.tok[after.n++] = ev.token;
    CHECKF(same(&after, &base[2]), "a request after the foreign messages gives its tokens");
    for (int k = 0; k < 2; k++)
        zmq_close(to_layers[k]);
    zmq_close(to_driver);
    zmq_ctx_term(zctx);
    sl_pipeline_close(p);
    test_release_ports(8, port_fds);
}

static void check_cancel(const result *base)
{
    pl_config c;
    layout(&c, (const int[]){3}, 1);
    sl_pipeline *p;
    sl_err err;
    if (sl_pipeline_open(&p, &c, NULL, &err)) {
        CHECK(0);
        return;
    }
    uint64_t a, b;
    sl_gen_params g0 = params_for(0, N_GEN), g1 = params_for(1, 200);
    CHECK(sl_pipeline_submit(p, &g0, &a, &err) == 0);
    CHECK(sl_pipeline_submit(p, &g1, &b, &err) == 0);
    result ra = {0};
    int b_tokens = 0, b_errors = 0, b_done = 0;
    char b_error[512] = "";
    sl_event ev;
    while (sl_pipeline_next(p, &ev, 10000, &err) == 1) {
        if (ev.request == a) {
            if (ev.kind == SL_EV_TOKEN)
                ra.tok[ra.n++] = ev.token;
            continue;
        }
        if (ev.kind == SL_EV_TOKEN && ++b_tokens == 5)
            CHECK(sl_pipeline_cancel(p, b) == 0);
        b_errors += ev.kind == SL_EV_ERROR;
        b_done += ev.kind == SL_EV_DONE;
        if (ev.kind == SL_EV_ERROR)
            snprintf(b_error, sizeof b_error, "%s", ev.error);
    }
    CHECKF(b_errors == 1 && b_done == 0 && strstr(b_error, "cancelled") && b_tokens <= 6,
           "cancel ends the request with one error (%d tokens, %s)", b_tokens, b_error);
    CHECK(same(&ra, &base[0]));
    CHECK(sl_pipeline_active(p) == 0);
    sl_pipeline_close(p);
}

int main(void)
{
    const char *sluice = getenv("SLUICE");
    if (!sluice) {
        fprintf(stderr, "SLUICE (path of the sluice binary) is not set\n");
        return 1;
    }
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sluice-test-pipeline-%d", (int)getpid());
    snprintf(model_path, sizeof model_path, "%s/m.gguf", tmpdir);
    char cmd[1024];
    /* private: its ipc:// hops must live in a directory only we can enter */
    snprintf(cmd, sizeof cmd, "mkdir -p -m 700 %s && %s synth --arch gemma3 --size test --type q8_0 --seed 5 "
             "--weight-scale 0.6 -o %s 2>/dev/null", tmpdir, sluice, model_path);
    if (system(cmd) != 0) {
        fprintf(stderr, "synth failed\n");
        return 1;
    }
    result base[N_PROMPTS];
    pl_config c;
    layout(&c, NULL, 0);
    for (int i = 0; i < N_PROMPTS; i++) {
        CHECK(run(&c, NULL, &i, 1, base) == 0);
        CHECKF(base[i].n == N_GEN && base[i].done, "baseline prompt %d: %d tokens", i, base[i].n);
    }
    /* the runs must be able to tell wrong logits apart: varied tokens */
    int distinct = 0;
    for (int k = 1; k < base[0].n; k++)
        distinct += base[0].tok[k] != base[0].tok[k - 1];
    CHECKF(distinct >= 5, "sampled tokens vary (%d changes)", distinct);
    check_layouts(base);
    check_slot_queue(base);
    check_injection(base);
    check_foreign(base);
    check_cancel(base);
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup of %s failed\n", tmpdir);
    return test_finish("test_pipeline");
}
