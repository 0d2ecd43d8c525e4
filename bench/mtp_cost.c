/* Cost of one drafted token of a Gemma 4 assistant (model/mtp.h: one
 * sl_mtp_step) against one decode step of its target (sl_forward_layers on
 * one token + sl_head), after a prompt of P tokens, best of R runs each,
 * timed in the same process. Prints both in ms and their ratio, and the K/V
 * bytes per token a drafting stage would receive (the two source layers'
 * rows in the cache's type).
 *
 * Not built by CMake; bench/mtp.sh builds and runs it:
 *   bench/mtp.sh [SIZE=e2b] [TYPE=q4_0] [PROMPT=128] [REPEAT=20]
 * (it links with the libraries of build/sluice: see the script), then
 *   mtp_cost TARGET.gguf ASSISTANT.gguf [P] [R]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"
#include "model/forward.h"
#include "model/kv.h"
#include "model/mtp.h"
#include "util/clock.h"
#include "util/pool.h"

static void die(const sl_err *err)
{
    fprintf(stderr, "mtp_cost: %s\n", err->msg);
    exit(1);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: mtp_cost TARGET.gguf ASSISTANT.gguf [PROMPT=128] [REPEAT=20]\n");
        return 2;
    }
    int P = argc > 3 ? atoi(argv[3]) : 128, R = argc > 4 ? atoi(argv[4]) : 20;
    sl_err err = {{0}};
    sl_model *t;
    sl_mtp *a;
    sl_fwd *fwd;
    sl_kv *kv;
    sl_mtp_ctx *ctx;
    if (sl_model_load(&t, argv[1], NULL, &err) || sl_mtp_load(&a, argv[2], &err) ||
        sl_fwd_new(&fwd, t, P, &err) ||
        sl_kv_new_typed(&kv, &t->cfg, 0, t->cfg.n_layer, 1, P + R + 8, SL_TYPE_F32, P, &err) ||
        sl_mtp_ctx_new(&ctx, a, t, &err))
        die(&err);
    int d = t->cfg.d_model, V = t->cfg.n_vocab;
    int32_t *tok = malloc((size_t)P * sizeof *tok), *seq = calloc((size_t)P, sizeof *seq);
    int32_t *pos = malloc((size_t)P * sizeof *pos);
    float *x = malloc((size_t)P * d * sizeof(float)), *logits = malloc((size_t)V * sizeof(float));
    float *h = malloc((size_t)d * sizeof(float));
    for (int i = 0; i < P; i++)
        tok[i] = 2 + (i * 7919) % (V - 2), pos[i] = i;
    sl_batch b = {.n_tokens = P, .token = tok, .seq = seq, .pos = pos};
    if (sl_embed(t, tok, P, x, &err) || sl_forward_layers(fwd, kv, &b, x, &err))
        die(&err);
    sl_rmsnorm(h, x + (size_t)(P - 1) * d, t->output_norm, d, t->cfg.norm_eps);
    int src[2];
    sl_mtp_ctx_sources(ctx, src);
    sl_mtp_kv rows[2];
    int64_t kv_bytes = 0;
    for (int s = 0; s < 2; s++) {
        /* a sliding layer's ring is read in place, as the stage reads its own */
        int64_t rb = sl_kv_row_bytes(kv, src[s]), slots = sl_kv_slots(kv, src[s]);
        int64_t ring = slots < P + R + 8 ? slots : 0, pos0 = ring && P > ring ? P - ring : 0;
        rows[s] = (sl_mtp_kv){sl_kv_k(kv, 0, src[s]), sl_kv_v(kv, 0, src[s]), pos0, P - pos0, rb,
                              SL_TYPE_F32, ring};
        kv_bytes += 2 * rb;
    }
    double best_draft = 1e30, best_target = 1e30;
    sl_mtp_out o;
    for (int r = 0; r < R; r++) {
        double t0 = sl_now_s();
        if (sl_mtp_step(ctx, h, tok[P - 1], P, rows, &o, &err))
            die(&err);
        double t1 = sl_now_s();
        best_draft = t1 - t0 < best_draft ? t1 - t0 : best_draft;
        /* the target's step at position P, cut back so every run sees P keys */
        int32_t one_tok = tok[r % P], one_seq = 0, one_pos = P;
        sl_batch one = {.n_tokens = 1, .token = &one_tok, .seq = &one_seq, .pos = &one_pos};
        t0 = sl_now_s();
        if (sl_embed(t, &one_tok, 1, x, &err) || sl_forward_layers(fwd, kv, &one, x, &err) ||
            sl_head(fwd, x, 1, logits, &err))
            die(&err);
        t1 = sl_now_s();
        sl_kv_truncate(kv, 0, P);
        best_target = t1 - t0 < best_target ? t1 - t0 : best_target;
    }
    printf("threads %d, prompt %d, best of %d\n", sl_pool_threads(), P, R);
    printf("target decode step   %8.3f ms\n", best_target * 1e3);
    printf("assistant draft step %8.3f ms  (%d candidate logits)\n", best_draft * 1e3, o.n_logits);
    printf("ratio draft/target   %8.3f\n", best_draft / best_target);
    printf("K/V bytes per token  %lld (f32 rows of target layers %d and %d)\n", (long long)kv_bytes,
           src[0], src[1]);
    return 0;
}
