/* dump_mtp: runs a prompt through a Gemma 4 target, then one step and a
 * k-token greedy draft of its assistant (model/mtp.h), and writes what the
 * numpy reference needs to recompute the assistant (tests/test_mtp.py).
 *
 *   dump_mtp -m TARGET -a ASSISTANT -p IDS -k K -o OUT [--kv-type TYPE]
 *
 * The target evaluates IDS (comma-separated) in one batch; its next token
 * (greedy) is the assistant's input token at position len(IDS), with the
 * target's final hidden state of the last prompt position after its final
 * norm. The source layers' K/V rows are copied out of the cache into plain
 * arrays (as a drafting stage would keep them) in F32, or with --kv-type in
 * the cache's type (f16, bf16, q8_0).
 *
 * OUT is text: "src S0 S1", "token T", "pos P", then lines "h", "k0", "v0",
 * "k1", "v1" (F32 K/V of positions 0..P-1, rows concatenated; the cache's
 * values decoded), "logits", "ids" (absent: whole vocabulary), "h_next" and
 * "drafts", each a name followed by its values. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"
#include "kernels/quant.h"
#include "kernels/types.h"
#include "model/forward.h"
#include "model/kv.h"
#include "model/mtp.h"

static int parse_ids(const char *s, int32_t *out, int cap)
{
    int n = 0;
    while (*s && n < cap) {
        char *end;
        out[n++] = (int32_t)strtol(s, &end, 10);
        s = *end == ',' ? end + 1 : end;
        if (end == s && *s)
            return -1;
    }
    return n;
}

static void put(FILE *f, const char *name, const float *v, int64_t n)
{
    fprintf(f, "%s", name);
    for (int64_t i = 0; i < n; i++)
        fprintf(f, " %.9g", v[i]);
    fprintf(f, "\n");
}

static void put_ids(FILE *f, const char *name, const int32_t *v, int64_t n)
{
    fprintf(f, "%s", name);
    for (int64_t i = 0; i < n; i++)
        fprintf(f, " %d", v[i]);
    fprintf(f, "\n");
}

/* Rows [0, n) of layer il out of the cache's ring into a plain array. */
static uint8_t *copy_rows(sl_kv *kv, int il, bool values, int n)
{
    int64_t rb = sl_kv_row_bytes(kv, il), slots = sl_kv_slots(kv, il);
    uint8_t *dst = malloc((size_t)(rb * (n > 0 ? n : 1)));
    const uint8_t *src = values ? sl_kv_v(kv, 0, il) : sl_kv_k(kv, 0, il);
    for (int p = 0; dst && p < n; p++)
        memcpy(dst + (size_t)p * rb, src + (p % slots) * rb, (size_t)rb);
    return dst;
}

static void put_rows(FILE *f, const char *name, const uint8_t *rows, sl_type type, int n,
                     const sl_layer_cfg *L, int64_t rb)
{
    int64_t kvd = (int64_t)L->n_kv_head * L->head_dim;
    float *row = malloc((size_t)kvd * sizeof(float));
    fprintf(f, "%s", name);
    for (int p = 0; row && p < n; p++) {
        for (int h = 0; h < L->n_kv_head; h++)
            sl_dequantize_row(type, rows + p * rb + h * sl_row_bytes(type, L->head_dim),
                              row + (int64_t)h * L->head_dim, L->head_dim);
        for (int64_t i = 0; i < kvd; i++)
            fprintf(f, " %.9g", row[i]);
    }
    fprintf(f, "\n");
    free(row);
}

int main(int argc, char **argv)
{
    const char *tpath = NULL, *apath = NULL, *out = NULL, *ids = NULL;
    int k = 4;
    sl_type kv_type = SL_TYPE_F32;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-m")) tpath = argv[i + 1];
        else if (!strcmp(argv[i], "-a")) apath = argv[i + 1];
        else if (!strcmp(argv[i], "-o")) out = argv[i + 1];
        else if (!strcmp(argv[i], "-p")) ids = argv[i + 1];
        else if (!strcmp(argv[i], "-k")) k = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--kv-type"))
            kv_type = !strcmp(argv[i + 1], "f16") ? SL_TYPE_F16
                      : !strcmp(argv[i + 1], "bf16") ? SL_TYPE_BF16
                      : !strcmp(argv[i + 1], "q8_0") ? SL_TYPE_Q8_0 : SL_TYPE_F32;
    }
    int32_t prompt[512];
    int n = ids ? parse_ids(ids, prompt, 512) : -1;
    if (!tpath || !apath || !out || n < 1 || k < 1 || k > 64) {
        fprintf(stderr, "usage: dump_mtp -m TARGET -a ASSISTANT -p IDS -k K -o OUT "
                        "[--kv-type f16|bf16|q8_0]\n");
        return 2;
    }
    sl_err err = {{0}};
    sl_model *t = NULL;
    sl_mtp *a = NULL;
    sl_fwd *fwd = NULL;
    sl_kv *kv = NULL;
    sl_mtp_ctx *ctx = NULL;
    if (sl_model_load(&t, tpath, NULL, &err) || sl_mtp_load(&a, apath, &err) ||
        sl_fwd_new(&fwd, t, n, &err) ||
        sl_kv_new_typed(&kv, &t->cfg, 0, t->cfg.n_layer, 1, n + 8, kv_type, n, &err) ||
        sl_mtp_ctx_new(&ctx, a, t, &err)) {
        fprintf(stderr, "dump_mtp: %s\n", err.msg);
        return 1;
    }
    int d = t->cfg.d_model, V = t->cfg.n_vocab;
    int32_t seq[512], pos[512];
    for (int i = 0; i < n; i++)
        seq[i] = 0, pos[i] = i;
    float *x = malloc((size_t)n * d * sizeof(float)), *logits = malloc((size_t)V * sizeof(float));
    float *h = malloc((size_t)d * sizeof(float));
    sl_batch b = {.n_tokens = n, .token = prompt, .seq = seq, .pos = pos};
    if (sl_embed(t, prompt, n, x, &err) || sl_forward_layers(fwd, kv, &b, x, &err) ||
        sl_head(fwd, x + (size_t)(n - 1) * d, 1, logits, &err)) {
        fprintf(stderr, "dump_mtp: %s\n", err.msg);
        return 1;
    }
    sl_rmsnorm(h, x + (size_t)(n - 1) * d, t->output_norm, d, t->cfg.norm_eps);
    int32_t token = (int32_t)sl_argmax_f32(logits, V);
    int src[2];
    sl_mtp_ctx_sources(ctx, src);
    sl_mtp_kv rows[2];
    uint8_t *kr[2], *vr[2];
    for (int s = 0; s < 2; s++) {
        kr[s] = copy_rows(kv, src[s], false, n);
        vr[s] = copy_rows(kv, src[s], true, n);
        rows[s] = (sl_mtp_kv){kr[s], vr[s], 0, n, sl_kv_row_bytes(kv, src[s]), kv_type, 0};
    }
    sl_mtp_out o;
    int32_t drafts[64];
    FILE *f = fopen(out, "w");
    if (!f || sl_mtp_step(ctx, h, token, n, rows, &o, &err)) {
        fprintf(stderr, "dump_mtp: %s\n", f ? err.msg : "cannot write the output");
        return 1;
    }
    fprintf(f, "src %d %d\ntoken %d\npos %d\n", src[0], src[1], token, n);
    put(f, "h", h, d);
    const char *names[2][2] = {{"k0", "v0"}, {"k1", "v1"}};
    for (int s = 0; s < 2; s++) {
        put_rows(f, names[s][0], kr[s], kv_type, n, &t->cfg.layer[src[s]], rows[s].row_bytes);
        put_rows(f, names[s][1], vr[s], kv_type, n, &t->cfg.layer[src[s]], rows[s].row_bytes);
    }
    put(f, "logits", o.logits, o.n_logits);
    if (o.ids)
        put_ids(f, "ids", o.ids, o.n_logits);
    put(f, "h_next", o.h_next, a->cfg.d_backbone);
    if (sl_mtp_draft(ctx, h, token, n, rows, k, drafts, &err)) {
        fprintf(stderr, "dump_mtp: %s\n", err.msg);
        return 1;
    }
    put_ids(f, "drafts", drafts, k);
    fclose(f);
    for (int s = 0; s < 2; s++)
        free(kr[s]), free(vr[s]);
    free(x), free(logits), free(h);
    sl_mtp_ctx_free(ctx);
    sl_kv_free(kv);
    sl_fwd_free(fwd);
    sl_mtp_free(a);
    sl_model_free(t);
    return 0;
}
