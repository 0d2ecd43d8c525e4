/* libFuzzer target: arbitrary frames handed to the stages of a pipeline.
 * The input uses fuzz_wire's framing (byte 0: frame count mod 20, byte 1:
 * a mask of frames placed one byte off alignment, then u16 lengths, then the
 * bytes), so corpus-wire seeds work here too. Every message the wire layer
 * accepts goes to an embed, a layers, a head and a sample stage of a tiny
 * gemma3 model built at start-up, and to two draft stages (that model
 * drafting for itself, and prompt lookup): each must answer (or refuse) it without
 * crashing, and whatever a stage emits must itself be a message the wire
 * layer accepts. The stages keep their state (KV caches, sampler states)
 * across inputs, as a long-running host would. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "kernels/quant.h"
#include "model/gguf.h"
#include "pipeline/wire.h"
#include "stages/stage.h"
#include "tests/fuzz/frames.h"

#define N_STAGES 6
static sl_stage *stages[N_STAGES];
static void *zctx, *tx, *rx;

static void require(int ok)
{
    if (!ok)
        __builtin_trap();
}

/* A tiny gemma3: d_model 32, 2 layers, vocab 64; random small weights. */
static void write_model(const char *path)
{
    enum { D = 32, L = 2, H = 2, KV = 1, HD = 16, FF = 64, V = 64 };
    gguf_writer *w = gguf_writer_new();
    gguf_set_str(w, "general.architecture", "gemma3");
    gguf_set_u32(w, "gemma3.block_count", L);
    gguf_set_u32(w, "gemma3.embedding_length", D);
    gguf_set_u32(w, "gemma3.feed_forward_length", FF);
    gguf_set_u32(w, "gemma3.attention.head_count", H);
    gguf_set_u32(w, "gemma3.attention.head_count_kv", KV);
    gguf_set_u32(w, "gemma3.attention.key_length", HD);
    gguf_set_u32(w, "gemma3.attention.value_length", HD);
    gguf_set_u32(w, "gemma3.attention.sliding_window", 4);
    gguf_set_u32(w, "gemma3.context_length", 64);
    static float store[1 << 16];
    size_t used = 0;
    uint32_t seed = 12345;
    struct { const char *name; int n_in, n_out; } mats[] = {
        {"token_embd.weight", D, V}, {"attn_q", D, H * HD}, {"attn_k", D, KV * HD},
        {"attn_v", D, KV * HD}, {"attn_output", H * HD, D}, {"ffn_gate", D, FF},
        {"ffn_up", D, FF}, {"ffn_down", FF, D},
    };
    const char *norms[] = {"attn_norm", "post_attention_norm", "ffn_norm", "post_ffw_norm"};
    char name[64];
    sl_err err;
    for (int il = -1; il < L; il++) {
        for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++) {
            if ((il < 0) != (i == 0))
                continue;
            int n = mats[i].n_in * mats[i].n_out;
            for (int k = 0; k < n; k++) {
                seed = seed * 1664525u + 1013904223u;
                store[used + k] = ((float)(seed >> 8) / (float)(1 << 24) - 0.5f) * 0.3f;
            }
            if (il >= 0)
                snprintf(name, sizeof name, "blk.%d.%s.weight", il, mats[i].name);
            else
                snprintf(name, sizeof name, "%s", mats[i].name);
            int64_t ne[2] = {mats[i].n_in, mats[i].n_out};
            require(gguf_add_tensor(w, name, SL_TYPE_F32, 2, ne, store + used, (size_t)n * 4, &err) == 0);
            used += (size_t)n;
        }
        int n_norms = il < 0 ? 1 : 6;
        for (int k = 0; k < n_norms; k++) {
            int n = il >= 0 && k >= 4 ? HD : D;
            for (int j = 0; j < n; j++)
                store[used + j] = 1.0f;
            if (il < 0)
                snprintf(name, sizeof name, "output_norm.weight");
            else if (k < 4)
                snprintf(name, sizeof name, "blk.%d.%s.weight", il, norms[k]);
            else
                snprintf(name, sizeof name, "blk.%d.attn_%c_norm.weight", il, k == 4 ? 'q' : 'k');
            int64_t ne[1] = {n};
            require(gguf_add_tensor(w, name, SL_TYPE_F32, 1, ne, store + used, (size_t)n * 4, &err) == 0);
            used += (size_t)n;
        }
    }
    require(gguf_write(w, path, &err) == 0);
    gguf_writer_free(w);
}

/* What a stage emits is sent over a real socket and must decode again. */
static int check_emit(void *ctx, pl_msg *m, sl_err *err)
{
    (void)ctx;
    int rc = pl_msg_send(m, tx, 0, err);
    pl_msg_close(m);
    require(rc == 0);
    pl_msg back;
    pl_wire_limits lim;
    pl_wire_limits_default(&lim);
    sl_err why;
    require(pl_msg_recv(&back, rx, &lim, &why) == 0);
    pl_msg_close(&back);
    return 0;
}

static void init(void)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/sluice-fuzz-stage-%d.gguf", (int)getpid());
    write_model(path);
    /* the draft stages: the model drafting for itself (pipelined, so its
     * idle work runs too), and prompt lookup */
    pl_stage_kind kinds[N_STAGES] = {PL_STAGE_EMBED, PL_STAGE_LAYERS, PL_STAGE_HEAD,
                                     PL_STAGE_SAMPLE, PL_STAGE_DRAFT, PL_STAGE_DRAFT};
    for (int i = 0; i < N_STAGES; i++) {
        sl_stage_spec spec = {.kind = kinds[i], .model = path, .l0 = 0, .l1 = 2, .max_sequences = 4,
                              .context = 64, .max_batch_tokens = 64, .index = i,
                              .draft_model = path, .spec_k = 3, .spec_auto = i == 5,
                              .spec_lookup = i == 5, .spec_pipelined = i == 4};
        sl_err err;
        if (sl_stage_create(&stages[i], &spec, &err)) {
            fprintf(stderr, "fuzz_stage: %s\n", err.msg);
            abort();
        }
    }
    unlink(path); /* the stages keep their maps */
    zctx = zmq_ctx_new();
    rx = zmq_socket(zctx, ZMQ_PULL);
    tx = zmq_socket(zctx, ZMQ_PUSH);
    require(zmq_bind(rx, "inproc://fuzz-stage") == 0 && zmq_connect(tx, "inproc://fuzz-stage") == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!zctx)
        init();
    fz_frames f;
    if (fz_split(&f, data, size, 1))
        return 0;
    pl_wire_limits lim;
    pl_wire_limits_default(&lim);
    sl_emit emit = {check_emit, NULL};
    for (int s = 0; s < N_STAGES; s++) {
        pl_msg m;
        sl_err err;
        if (pl_msg_decode(&m, f.frames, f.sizes, f.n, &lim, &err))
            break;
        /* A refusal is fine; only a crash or a bad emitted message is not. */
        (void)stages[s]->process(stages[s], &m, &emit, &err);
        pl_msg_close(&m);
        for (int k = 0; k < 4 && stages[s]->idle && stages[s]->idle(stages[s]) > 0; k++)
            ;
    }
    fz_free(&f);
    return 0;
}
