/* sluice bench: prefill and decode speed of one model in this process (no
 * pipeline, no sockets: the kernels and the forward pass alone), against
 * the machine's measured read bandwidth, with the time split by op class.
 * `--calibrate` measures the machine instead and prints a node description
 * for a cluster file. */
#include <getopt.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "kernels/cpu.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "kernels/probe.h"
#include "kernels/quant.h"
#include "model/lm.h"
#include "model/mtp.h"
#include "util/cpus.h"
#include "util/pool.h"

static const char usage[] =
    "usage: sluice bench -m FILE [options]\n"
    "       sluice bench --calibrate [-t THREADS]\n"
    "\n"
    "Measures prefill and decode speed of a GGUF model in this process (the\n"
    "kernels and forward pass, no pipeline): a prompt of P random tokens in\n"
    "one batch, then N greedy decode steps, best of R runs. Decode is set\n"
    "against the memory roofline: bytes read per token (weights and KV cache)\n"
    "times tok/s over the read bandwidth measured in the same run: the fastest\n"
    "of 8 (R + 1) passes over 256 MB, 8 before each run and after the last\n"
    "(the median pass is shown too). The time of each class of op is reported\n"
    "per token.\n"
    "\n"
    "options:\n"
    "  -m, --model FILE     GGUF model\n"
    "  -t, --threads N      threads (default: the CPUs this process may use)\n"
    "  -p, --prompt N       prompt tokens for the prefill measure (default 512)\n"
    "  -n, --gen N          decode steps (default 64)\n"
    "  -r, --repeat R       runs; the best counts (default 3)\n"
    "  --kv-type T          KV cache type: f32 (default), f16, bf16 or q8_0\n"
    "  --ctx N              position the decode starts at: the cache is filled\n"
    "                       up to there first, untimed (default: right after\n"
    "                       the prompt)\n"
    "  --verify K           also time forward passes of K tokens with logits for\n"
    "                       each (a speculative verification step) against one\n"
    "                       decode step, and the best step's time per op class\n"
    "                       (default 5; 0: skip)\n"
    "  --draft FILE         also time one step of this Gemma 4 assistant\n"
    "                       (gemma4-assistant GGUF of the model) against one\n"
    "                       decode step, and give the K/V bytes a token its\n"
    "                       mtp stage receives\n"
    "  --json               one JSON object on stdout instead of the table\n"
    "  --kernels            also print which kernel path each op takes\n"
    "  --profile            also break the best decode run down op by op: each\n"
    "                       op's time, the bytes it reads and its rate against\n"
    "                       the measured read bandwidth, its barriers, the\n"
    "                       caller's wait at them and its activation quantising;\n"
    "                       and the best prefill op by op (time, share, its\n"
    "                       matmuls' GOP/s, barriers, wait, quantising) and\n"
    "                       the best --verify step op by op as decode's\n"
    "  --calibrate          measure read bandwidth, matmul throughput and the\n"
    "                       AVX-512 VNNI and AMX int8 peaks and print a node\n"
    "                       description (YAML) for a cluster file\n"
    "  -h, --help           show this help\n";

/* Bandwidth passes before each run and after the last. */
#define BW_PASSES 8

typedef struct bench_opts {
    const char *model, *draft;
    int threads, n_prompt, n_gen, repeat, ctx, kv_type, verify;
    bool json, kernels, calibrate, profile;
} bench_opts;

/* Time per op class over a phase, seconds. */
typedef struct op_times {
    sl_fwd_times fwd;
    double embed, sampling, total;
} op_times;

typedef struct bench_result {
    double prefill_s, decode_s; /* best prefill time; best decode time per token */
    op_times prefill_ops, decode_ops;
    double weight_bytes, kv_bytes; /* read per decode token */
    double bw, bw_median;          /* read bandwidth, bytes/s: fastest and median pass */
    int bw_passes;
    double verify_s;               /* best time of one verification step */
    op_times verify_ops;           /* that step's time per op class */
    double draft_s;                /* best time of one assistant step (--draft) */
    int draft_logits;              /* logits a step scores (candidates, or the vocabulary) */
    double draft_kv_bytes;         /* K/V bytes a token the mtp stage receives */
    double prefill_ops_n;          /* int8/float ops of the prefill's matmuls */
    double vnni_peak;              /* ops/s, 0 without VNNI */
    double packed_bytes, head_packed_bytes; /* repacked copies beside the mapped file */
} bench_result;

static int32_t argmax(const float *x, int n)
{
    return (int32_t)sl_argmax_f32(x, n);
}

static double weight_bytes(const sl_weight *w)
{
    return w->data ? (double)sl_row_bytes(w->type, w->n_in) * (double)w->n_out : 0;
}

/* Memory of the repacked copies: all of them, and the head's (for a tied
 * head, a copy beside the mapped embedding table the lookups read). */
static void packed_memory(const sl_model *m, bench_result *r)
{
    r->head_packed_bytes = (double)sl_pack_bytes(m->output.packed);
    r->packed_bytes = r->head_packed_bytes + (double)sl_pack_bytes(m->ple_model_proj.packed);
    for (int il = 0; il < m->cfg.n_layer; il++) {
        const sl_layer_weights *L = &m->layer[il];
        const sl_weight *all[] = {&L->wq,     &L->wk,     &L->wv,       &L->wo,      &L->w_gate,
                                  &L->w_up,   &L->w_down, &L->ple_gate, &L->ple_proj};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            r->packed_bytes += (double)sl_pack_bytes(all[i]->packed);
    }
}

static double weight_elems(const sl_weight *w)
{
    return w->data ? (double)w->n_in * (double)w->n_out : 0;
}

/* Bytes a decode step reads: every layer matrix, the head, one embedding
 * row; and for the KV cache (f32) the keys and values each layer sees at
 * the step's position. */
static void bytes_per_token(const sl_model *m, sl_type kv_type, int first_pos, int n_gen,
                            bench_result *r)
{
    const sl_config *c = &m->cfg;
    double w = weight_bytes(&m->output) +
               (double)sl_row_bytes(m->tok_embd.type, c->d_model) +
               weight_bytes(&m->ple_model_proj); /* per-layer embeddings (Gemma 4) */
    if (m->ple_tok_embd.data)
        w += (double)sl_row_bytes(m->ple_tok_embd.type, m->ple_tok_embd.n_in);
    double kv = 0;
    for (int il = 0; il < c->n_layer; il++) {
        const sl_layer_weights *L = &m->layer[il];
        const sl_weight *all[] = {&L->wq,     &L->wk,     &L->wv,       &L->wo,      &L->w_gate,
                                  &L->w_up,   &L->w_down, &L->ple_gate, &L->ple_proj};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            w += weight_bytes(all[i]);
        const sl_layer_cfg *lc = &c->layer[il];
        for (int s = 0; s < n_gen; s++) {
            int64_t seen = first_pos + s + 1;
            if (lc->sliding_window > 0 && seen > lc->sliding_window)
                seen = lc->sliding_window;
            kv += 2.0 * (double)seen * lc->n_kv_head * (double)sl_row_bytes(kv_type, lc->head_dim);
        }
    }
    r->weight_bytes = w;
    r->kv_bytes = n_gen > 0 ? kv / n_gen : 0;
}

/* One run: prefill of n_prompt tokens at position 0, then decode steps
 * from position ctx (the cache is filled up to there). */
static int run_once(sl_lm *s, const bench_opts *o, const int32_t *prompt, float *logits,
                    op_times *pre, op_times *dec, sl_err *err)
{
    const sl_config *c = &s->model->cfg;
    memset(pre, 0, sizeof *pre);
    memset(dec, 0, sizeof *dec);
    /* cut the cache, keeping its pages, as a layers stage does for a new
     * prompt in a slot: sl_kv_clear gives them back, and the first write to
     * each page again was a page fault in the timed steps (~0.3 ms a decode
     * step of Gemma 3 1B with an f32 cache, 13 new pages a step) */
    sl_kv_truncate(s->kv, 0, 0);
    sl_batch b = {.n_tokens = o->n_prompt, .token = prompt, .seq = s->seq, .pos = s->pos};
    for (int i = 0; i < o->n_prompt; i++)
        s->pos[i] = i;
    sl_fwd_set_times(s->fwd, &pre->fwd);
    double t0 = cli_now();
    if (sl_embed(s->model, prompt, o->n_prompt, s->x, err))
        return -1;
    pre->embed = cli_now() - t0;
    if (sl_forward_layers(s->fwd, s->kv, &b, s->x, err) ||
        sl_head(s->fwd, s->x + (size_t)(o->n_prompt - 1) * c->d_model, 1, logits, err))
        return -1;
    double t1 = cli_now();
    int32_t tok = argmax(logits, c->n_vocab);
    pre->sampling = cli_now() - t1;
    pre->total = cli_now() - t0;
    /* decode from position ctx: the cache is filled up to there for real
     * (untimed), so attention reads memory, not never-touched zero pages */
    int pos = o->n_prompt;
    sl_fwd_set_times(s->fwd, NULL);
    while (pos < o->ctx) {
        int n = o->ctx - pos < o->n_prompt ? o->ctx - pos : o->n_prompt;
        for (int i = 0; i < n; i++)
            s->pos[i] = pos + i;
        sl_batch fill = {.n_tokens = n, .token = prompt, .seq = s->seq, .pos = s->pos};
        if (sl_embed(s->model, prompt, n, s->x, err) || sl_forward_layers(s->fwd, s->kv, &fill, s->x, err))
            return -1;
        pos += n;
    }
    sl_fwd_set_times(s->fwd, &dec->fwd);
    double d0 = cli_now();
    for (int step = 0; step < o->n_gen; step++, pos++) {
        s->pos[0] = pos;
        sl_batch one = {.n_tokens = 1, .token = &tok, .seq = s->seq, .pos = s->pos};
        double e0 = cli_now();
        if (sl_embed(s->model, &tok, 1, s->x, err))
            return -1;
        dec->embed += cli_now() - e0;
        if (sl_forward_layers(s->fwd, s->kv, &one, s->x, err) || sl_head(s->fwd, s->x, 1, logits, err))
            return -1;
        double a0 = cli_now();
        tok = argmax(logits, c->n_vocab);
        dec->sampling += cli_now() - a0;
    }
    dec->total = cli_now() - d0;
    sl_fwd_set_times(s->fwd, NULL);
    return 0;
}

/* Speculative verification steps: k tokens at positions pos.. with logits
 * for every row, then the cache cut back to pos (as after a rejection), so
 * each step sees the same context. Returns the best step time. */
static int run_verify(sl_lm *s, const bench_opts *o, int pos, const int32_t *toks, float *logits,
                      double *best, op_times *best_ops, sl_err *err)
{
    int k = o->verify, steps = o->n_gen / 4 > 4 ? o->n_gen / 4 : 4;
    for (int step = 0; step < steps; step++) {
        for (int i = 0; i < k; i++)
            s->pos[i] = pos + i;
        sl_batch b = {.n_tokens = k, .token = toks, .seq = s->seq, .pos = s->pos};
        op_times ops = {0};
        sl_fwd_set_times(s->fwd, &ops.fwd);
        double t0 = cli_now();
        int rc = sl_embed(s->model, toks, k, s->x, err);
        ops.embed = cli_now() - t0;
        rc = rc || sl_forward_layers(s->fwd, s->kv, &b, s->x, err) || sl_head(s->fwd, s->x, k, logits, err);
        ops.total = cli_now() - t0;
        sl_fwd_set_times(s->fwd, NULL);
        if (rc)
            return -1;
        sl_kv_set_len(s->kv, 0, pos);
        if (ops.total < *best) {
            *best = ops.total;
            *best_ops = ops;
        }
    }
    return 0;
}

/* --draft: the best of 8 x repeat steps of the assistant at the position the
 * decode ended at, reading the target's source layers from the cache (a
 * sliding layer's ring in place, its rows still held after the verify
 * steps overwrote the slots past the end). */
static int run_draft(sl_lm *s, const bench_opts *o, int pos, bench_result *r, sl_err *err)
{
    sl_mtp *a = NULL;
    sl_mtp_ctx *ctx = NULL;
    int rc = -1;
    if (sl_mtp_load(&a, o->draft, err) || sl_mtp_ctx_new(&ctx, a, s->model, err))
        goto done;
    int src[2], d = s->model->cfg.d_model;
    sl_mtp_ctx_sources(ctx, src);
    sl_mtp_kv kv[2];
    r->draft_kv_bytes = 0;
    for (int k = 0; k < 2; k++) {
        int64_t slots = sl_kv_slots(s->kv, src[k]), ring = slots < s->n_ctx ? slots : 0;
        int64_t pos0 = ring && pos - ring + o->verify + 1 > 0 ? pos - ring + o->verify + 1 : 0;
        kv[k] = (sl_mtp_kv){sl_kv_k(s->kv, 0, src[k]), sl_kv_v(s->kv, 0, src[k]), pos0, pos - pos0,
                            sl_kv_row_bytes(s->kv, src[k]), sl_kv_type(s->kv), ring};
        /* what a layers stage sends a token: K and V rows in f32 */
        const sl_layer_cfg *L = &s->model->cfg.layer[src[k]];
        r->draft_kv_bytes += 2.0 * L->n_kv_head * L->head_dim * sizeof(float);
    }
    sl_rmsnorm(s->x, s->x, s->model->output_norm, d, s->model->cfg.norm_eps);
    r->draft_s = 1e30;
    for (int i = 0; i < 8 * o->repeat; i++) {
        sl_mtp_out out;
        double t0 = cli_now();
        if (sl_mtp_step(ctx, s->x, 8, pos, kv, &out, err))
            goto done;
        double t = cli_now() - t0;
        r->draft_s = t < r->draft_s ? t : r->draft_s;
        r->draft_logits = out.n_logits;
    }
    rc = 0;
done:
    sl_mtp_ctx_free(ctx);
    sl_mtp_free(a);
    return rc;
}

/* Multiply-adds (times 2: ops) of the matmuls of one prefill: every layer
 * matrix per prompt token, the head for the last one. */
static double prefill_ops(const sl_model *m, int n_prompt)
{
    double layer = weight_elems(&m->ple_model_proj);
    for (int il = 0; il < m->cfg.n_layer; il++) {
        const sl_layer_weights *L = &m->layer[il];
        const sl_weight *all[] = {&L->wq,     &L->wk,     &L->wv,       &L->wo,      &L->w_gate,
                                  &L->w_up,   &L->w_down, &L->ple_gate, &L->ple_proj};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            layer += weight_elems(all[i]);
    }
    return 2.0 * (layer * n_prompt + weight_elems(&m->output));
}

static const char *matmul_paths(const sl_model *m, char *buf, size_t cap)
{
    /* one entry per distinct weight type of the layers and head */
    sl_type seen[16];
    bool seen_packed[16];
    int n = 0;
    buf[0] = 0;
    for (int il = -1; il < m->cfg.n_layer; il++) {
        const sl_layer_weights *L = il >= 0 ? &m->layer[il] : NULL;
        const sl_weight *all[] = {L ? &L->wq : &m->output, L ? &L->wk : NULL, L ? &L->wv : NULL,
                                  L ? &L->wo : NULL,      L ? &L->w_gate : NULL,
                                  L ? &L->w_up : NULL,    L ? &L->w_down : NULL};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
            if (!all[i] || !all[i]->data)
                continue;
            int k = 0;
            while (k < n && !(seen[k] == all[i]->type && seen_packed[k] == (all[i]->packed != NULL)))
                k++;
            if (k < n || n == 16)
                continue;
            seen[n] = all[i]->type;
            seen_packed[n++] = all[i]->packed != NULL;
            size_t len = strlen(buf);
            snprintf(buf + len, cap - len, "%s%s: %s%s", len ? ", " : "", sl_type_name(all[i]->type),
                     sl_matmul_path_name(all[i]->type), all[i]->packed ? " (repacked x16)" : "");
        }
    }
    return buf;
}

static const char *attention_path(const sl_model *m)
{
    for (int il = 0; il < m->cfg.n_layer; il++)
        if (m->cfg.layer[il].head_dim % 16 != 0)
            return sl_path_active() == SL_PATH_AVX512 ? "flash, avx512 (scalar for some layers)"
                                                      : "flash, scalar";
    return sl_path_active() == SL_PATH_AVX512 ? "flash, avx512" : "flash, scalar";
}

static const char *amx_state(void)
{
    const sl_cpu_features *f = sl_cpu();
    if (!f->amx_tile)
        return "not on this CPU";
    if (!f->os_amx)
        return "present, not granted by the OS";
    return sl_matmul_amx_active() ? "int8 tiles for prefill batches of 16+ tokens on repacked weights"
                                  : "present, off (SLUICE_NO_AMX or a lower path)";
}

typedef struct op_row {
    const char *name;
    double secs;
} op_row;

static int op_rows(const op_times *t, op_row *rows)
{
    double known = t->embed + t->fwd.norm + t->fwd.matmul + t->fwd.attention + t->fwd.elementwise +
                   t->fwd.ple + t->fwd.head + t->sampling;
    op_row r[] = {{"embed", t->embed},           {"norm", t->fwd.norm},
                  {"matmul", t->fwd.matmul},     {"attention", t->fwd.attention},
                  {"elementwise", t->fwd.elementwise}, {"ple", t->fwd.ple},
                  {"head", t->fwd.head},
                  {"sampling", t->sampling},     {"other", t->total > known ? t->total - known : 0}};
    memcpy(rows, r, sizeof r);
    return (int)(sizeof r / sizeof r[0]);
}

static json_object *ops_json(const op_times *t, double per)
{
    op_row rows[9];
    int n = op_rows(t, rows);
    json_object *o = json_object_new_object();
    for (int i = 0; i < n; i++) {
        char key[32];
        snprintf(key, sizeof key, "%s_ms", rows[i].name);
        json_object_object_add(o, key, json_object_new_double(rows[i].secs * 1e3 / per));
    }
    return o;
}

static void print_ops(const char *title, const op_times *t, double per)
{
    op_row rows[9];
    int n = op_rows(t, rows);
    printf("%s (ms per %s, share):\n", title, per == 1 ? "step" : "token");
    for (int i = 0; i < n; i++)
        printf("  %-12s %9.3f  %5.1f%%\n", rows[i].name, rows[i].secs * 1e3 / per,
               t->total > 0 ? 100 * rows[i].secs / t->total : 0);
}

/* --profile: the decode step op by op, per token. ideal is the op's bytes at
 * the measured read bandwidth; lost what the op took beyond that. */
static void print_profile(const char *title, const op_times *t, int n_gen, double bw)
{
    double per = n_gen, sum_s = 0, sum_b = 0, sum_calls = 0, sum_wait = 0, sum_quant = 0;
    printf("%s (per step; GB/s and %% of the %.1f GB/s probe on the op's bytes;\n"
           "  lost: time beyond the bytes at the probe's rate; wait: the caller's wait at the\n"
           "  barriers after its last chunk; quant: activation quantising, in the op's time;\n"
           "  busy: the threads' time in the op's parallel chunks over its wall time):\n",
           title, bw / 1e9);
    printf("  %-10s %8s %6s %8s %7s %6s %8s %7s %7s %7s %6s\n", "op", "ms", "share", "MB", "GB/s",
           "%roof", "lost ms", "calls", "wait ms", "quant ms", "busy");
    for (int i = 0; i < SL_OP_N; i++) {
        const sl_op_prof *p = &t->fwd.op[i];
        if (p->s == 0 && p->bytes == 0)
            continue;
        double ms = p->s * 1e3 / per, mb = p->bytes / 1e6 / per, ideal = bw > 0 ? p->bytes / bw : 0;
        double gbs = p->s > 0 ? p->bytes / p->s / 1e9 : 0;
        printf("  %-10s %8.3f %5.1f%% %8.2f %7.1f %5.0f%% %8.3f %7.1f %7.3f %7.3f %6.2f\n",
               sl_fwd_op_name((sl_fwd_op)i), ms, 100 * p->s / t->total, mb, gbs,
               bw > 0 && p->bytes > 0 ? 100 * gbs * 1e9 / bw : 0, (p->s - ideal) * 1e3 / per,
               p->calls / per, p->wait * 1e3 / per, p->quant * 1e3 / per,
               p->s > 0 ? p->busy / p->s : 0);
        sum_s += p->s;
        sum_b += p->bytes;
        sum_calls += p->calls;
        sum_wait += p->wait;
        sum_quant += p->quant;
    }
    double rest = t->total - sum_s;
    printf("  %-10s %8.3f %5.1f%%\n", "embed", t->embed * 1e3 / per, 100 * t->embed / t->total);
    printf("  %-10s %8.3f %5.1f%%\n", "sampling", t->sampling * 1e3 / per,
           100 * t->sampling / t->total);
    rest -= t->embed + t->sampling;
    printf("  %-10s %8.3f %5.1f%%   (region open/close, loop)\n", "other", rest * 1e3 / per,
           100 * rest / t->total);
    printf("  %-10s %8.3f %5.1f%% %8.2f %7.1f %5.0f%% %8.3f %7.1f %7.3f %7.3f\n", "total",
           t->total * 1e3 / per, 100.0, sum_b / 1e6 / per, sum_b / t->total / 1e9,
           bw > 0 ? 100 * sum_b / t->total / bw : 0, (t->total - (bw > 0 ? sum_b / bw : 0)) * 1e3 / per,
           sum_calls / per, sum_wait * 1e3 / per, sum_quant * 1e3 / per);
}

/* Weight elements an op's matmuls multiply a token by (q, k and v as one;
 * the head's once a step): 0 for an op without matmuls. */
static double op_weight_elems(const sl_model *m, sl_fwd_op op)
{
    if (op == SL_OP_HEAD)
        return weight_elems(&m->output);
    double e = 0;
    for (int il = 0; il < m->cfg.n_layer; il++) {
        const sl_layer_weights *L = &m->layer[il];
        if (op == SL_OP_QKV)
            e += weight_elems(&L->wq) + weight_elems(&L->wk) + weight_elems(&L->wv);
        else if (op == SL_OP_O)
            e += weight_elems(&L->wo);
        else if (op == SL_OP_GATE_UP)
            e += weight_elems(&L->w_gate) + weight_elems(&L->w_up);
        else if (op == SL_OP_DOWN)
            e += weight_elems(&L->w_down);
        else if (op == SL_OP_PLE_OUT)
            e += weight_elems(&L->ple_gate) + weight_elems(&L->ple_proj);
    }
    return e;
}

/* --profile: the prefill op by op over the whole prompt: each op's time and
 * share, its matmuls' rate in GOP/s (multiply-adds x 2 over the op's time,
 * its activation quantising included), barriers, wait, quantising, busy. */
static void print_prefill_profile(const sl_model *m, const op_times *t, int n_prompt)
{
    double sum_s = 0, sum_calls = 0, sum_wait = 0, sum_quant = 0;
    printf("prefill profile (%d tokens, ms over the prompt; GOP/s: the op's matmul work over its\n"
           "  time, quantising included; wait, quant, busy as in the decode profile):\n", n_prompt);
    printf("  %-10s %8s %6s %8s %7s %7s %7s %6s\n", "op", "ms", "share", "GOP/s", "calls",
           "wait ms", "quant ms", "busy");
    for (int i = 0; i < SL_OP_N; i++) {
        const sl_op_prof *p = &t->fwd.op[i];
        if (p->s == 0 && p->bytes == 0)
            continue;
        double toks = i == SL_OP_HEAD || i == SL_OP_HEAD_NORM || i == SL_OP_SOFTCAP ? 1 : n_prompt;
        double gops = 2.0 * op_weight_elems(m, (sl_fwd_op)i) * toks;
        printf("  %-10s %8.3f %5.1f%% %8.0f %7.0f %7.3f %7.3f %6.2f\n", sl_fwd_op_name((sl_fwd_op)i),
               p->s * 1e3, 100 * p->s / t->total, p->s > 0 ? gops / p->s / 1e9 : 0, p->calls,
               p->wait * 1e3, p->quant * 1e3, p->s > 0 ? p->busy / p->s : 0);
        sum_s += p->s;
        sum_calls += p->calls;
        sum_wait += p->wait;
        sum_quant += p->quant;
    }
    double rest = t->total - sum_s - t->embed - t->sampling;
    printf("  %-10s %8.3f %5.1f%%\n", "embed", t->embed * 1e3, 100 * t->embed / t->total);
    printf("  %-10s %8.3f %5.1f%%\n", "sampling", t->sampling * 1e3, 100 * t->sampling / t->total);
    printf("  %-10s %8.3f %5.1f%%   (region open/close, loop)\n", "other", rest * 1e3,
           100 * rest / t->total);
    printf("  %-10s %8.3f %5.1f%% %8s %7.0f %7.3f %7.3f\n", "total", t->total * 1e3, 100.0, "",
           sum_calls, sum_wait * 1e3, sum_quant * 1e3);
}

static json_object *profile_json(const op_times *t, int n_gen, double bw)
{
    json_object *o = json_object_new_object();
    for (int i = 0; i < SL_OP_N; i++) {
        const sl_op_prof *p = &t->fwd.op[i];
        if (p->s == 0 && p->bytes == 0)
            continue;
        json_object *r = json_object_new_object();
        json_object_object_add(r, "ms", json_object_new_double(p->s * 1e3 / n_gen));
        json_object_object_add(r, "mb", json_object_new_double(p->bytes / 1e6 / n_gen));
        json_object_object_add(r, "gb_s", json_object_new_double(p->s > 0 ? p->bytes / p->s / 1e9 : 0));
        json_object_object_add(r, "lost_ms",
                               json_object_new_double((p->s - (bw > 0 ? p->bytes / bw : 0)) * 1e3 / n_gen));
        json_object_object_add(r, "calls", json_object_new_double(p->calls / n_gen));
        json_object_object_add(r, "wait_ms", json_object_new_double(p->wait * 1e3 / n_gen));
        json_object_object_add(r, "quant_ms", json_object_new_double(p->quant * 1e3 / n_gen));
        json_object_object_add(o, sl_fwd_op_name((sl_fwd_op)i), r);
    }
    return o;
}

/* The speculative steps' fields: --verify, --draft. */
static void spec_json(json_object *j, const bench_opts *o, const bench_result *r)
{
    if (o->verify > 0) {
        json_object_object_add(j, "verify_rows", json_object_new_int(o->verify));
        json_object_object_add(j, "verify_ms", json_object_new_double(r->verify_s * 1e3));
        json_object_object_add(j, "verify_vs_decode", json_object_new_double(r->verify_s / r->decode_s));
    }
    if (o->draft) {
        json_object_object_add(j, "draft_ms", json_object_new_double(r->draft_s * 1e3));
        json_object_object_add(j, "draft_vs_decode", json_object_new_double(r->draft_s / r->decode_s));
        json_object_object_add(j, "draft_logits", json_object_new_int(r->draft_logits));
        json_object_object_add(j, "draft_kv_bytes_per_token", json_object_new_double(r->draft_kv_bytes));
    }
}

static void report(const bench_opts *o, const sl_lm *s, const bench_result *r)
{
    const sl_model *m = s->model;
    double pre_tps = o->n_prompt / r->prefill_s, dec_tps = 1.0 / r->decode_s;
    double bytes = r->weight_bytes + r->kv_bytes;
    double roof = r->bw > 0 ? 100.0 * bytes * dec_tps / r->bw : 0;
    double pre_gops = r->prefill_ops_n / r->prefill_s / 1e9;
    double compute = r->vnni_peak > 0 ? 100.0 * pre_gops * 1e9 / r->vnni_peak : 0;
    char paths[512];
    matmul_paths(m, paths, sizeof paths);
    if (o->json) {
        json_object *j = json_object_new_object();
        json_object_object_add(j, "model", json_object_new_string(o->model));
        json_object_object_add(j, "arch", json_object_new_string(m->cfg.arch));
        json_object_object_add(j, "threads", json_object_new_int(sl_pool_threads()));
        json_object_object_add(j, "prompt_tokens", json_object_new_int(o->n_prompt));
        json_object_object_add(j, "gen_tokens", json_object_new_int(o->n_gen));
        json_object_object_add(j, "prefill_tok_s", json_object_new_double(pre_tps));
        json_object_object_add(j, "ttft_s", json_object_new_double(r->prefill_s));
        json_object_object_add(j, "decode_tok_s", json_object_new_double(dec_tps));
        json_object_object_add(j, "bandwidth_gb_s", json_object_new_double(r->bw / 1e9));
        json_object_object_add(j, "bandwidth_median_gb_s", json_object_new_double(r->bw_median / 1e9));
        json_object_object_add(j, "bandwidth_passes", json_object_new_int(r->bw_passes));
        json_object_object_add(j, "bytes_per_token", json_object_new_double(bytes));
        json_object_object_add(j, "roofline_pct", json_object_new_double(roof));
        json_object_object_add(j, "prefill_gop_s", json_object_new_double(pre_gops));
        json_object_object_add(j, "repacked_mb", json_object_new_double(r->packed_bytes / 1e6));
        json_object_object_add(j, "repacked_head_mb", json_object_new_double(r->head_packed_bytes / 1e6));
        if (r->vnni_peak > 0) {
            json_object_object_add(j, "vnni_peak_gop_s", json_object_new_double(r->vnni_peak / 1e9));
            json_object_object_add(j, "prefill_compute_pct", json_object_new_double(compute));
        }
        spec_json(j, o, r);
        json_object *ops = json_object_new_object();
        json_object_object_add(ops, "prefill", ops_json(&r->prefill_ops, o->n_prompt));
        json_object_object_add(ops, "decode", ops_json(&r->decode_ops, o->n_gen));
        if (o->verify > 0)
            json_object_object_add(ops, "verify", ops_json(&r->verify_ops, 1));
        json_object_object_add(j, "ops", ops);
        if (o->profile)
            json_object_object_add(j, "decode_profile", profile_json(&r->decode_ops, o->n_gen, r->bw));
        json_object *k = json_object_new_object();
        json_object_object_add(k, "matmul", json_object_new_string(paths));
        json_object_object_add(k, "attention", json_object_new_string(attention_path(m)));
        json_object_object_add(k, "ops", json_object_new_string(sl_path_name(sl_path_active())));
        json_object_object_add(k, "activations",
                               json_object_new_string(sl_act_mode() == SL_ACTQ_Q8 ? "q8" : "f32"));
        json_object_object_add(k, "amx", json_object_new_string(amx_state()));
        json_object_object_add(j, "kernels", k);
        printf("%s\n", json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY));
        json_object_put(j);
        return;
    }
    printf("sluice bench: %s (%s, %d layers), %d threads, best of %d\n", o->model, m->cfg.arch,
           m->cfg.n_layer, sl_pool_threads(), o->repeat);
    if (o->kernels)
        printf("kernels: matmul %s; attention %s; element-wise ops %s; activations %s; AMX %s\n",
               paths, attention_path(m), sl_path_name(sl_path_active()),
               sl_act_mode() == SL_ACTQ_Q8 ? "8-bit for 4/6/8-bit weights" : "float", amx_state());
    printf("\n%-22s %10s %10s\n", "", "tok/s", "ms/token");
    printf("%-22s %10.1f %10.2f   (time to first token %.3f s)\n", "prefill", pre_tps,
           1e3 / pre_tps, r->prefill_s);
    printf("%-22s %10.1f %10.2f   roofline %.1f%%: %.1f MB/token (weights %.1f, KV %.1f) at %.1f GB/s\n",
           "decode", dec_tps, 1e3 / dec_tps, roof, bytes / 1e6, r->weight_bytes / 1e6,
           r->kv_bytes / 1e6, r->bw / 1e9);
    printf("%-22s %10s %10s   read bandwidth: fastest of %d passes of 256 MB spread over the runs (median %.1f GB/s)\n",
           "", "", "", r->bw_passes, r->bw_median / 1e9);
    if (r->vnni_peak > 0)
        printf("%-22s %10s %10s   compute %.1f%% of the VNNI int8 peak: %.0f of %.0f GOP/s (matmuls)\n",
               "", "", "", compute, pre_gops, r->vnni_peak / 1e9);
    printf("%-22s %10s %10s   repacked copies %.1f MB (head %.1f MB%s) beside the mapped file\n", "memory",
           "", "", r->packed_bytes / 1e6, r->head_packed_bytes / 1e6,
           m->tied_output && m->output.packed ? ", tied: the embedding lookups read the mapped table" : "");
    if (o->verify > 0)
        printf("%-22s %10s %10.2f   %.2fx the time of one decode step\n", "verify", "", r->verify_s * 1e3,
               r->verify_s / r->decode_s);
    if (o->draft)
        printf("%-22s %10s %10.2f   %.1f%% of one decode step (%d logits); its K/V rows %.0f B a token\n",
               "draft (assistant)", "", r->draft_s * 1e3, 100.0 * r->draft_s / r->decode_s,
               r->draft_logits, r->draft_kv_bytes);
    printf("\n");
    print_ops("prefill", &r->prefill_ops, o->n_prompt);
    print_ops("decode", &r->decode_ops, o->n_gen);
    if (o->profile) {
        print_prefill_profile(m, &r->prefill_ops, o->n_prompt);
        print_profile("decode profile", &r->decode_ops, o->n_gen, r->bw);
    }
    if (o->verify > 0) {
        char title[64];
        snprintf(title, sizeof title, "verify of %d tokens", o->verify);
        print_ops(title, &r->verify_ops, 1);
        if (o->profile) {
            snprintf(title, sizeof title, "verify profile (%d tokens)", o->verify);
            print_profile(title, &r->verify_ops, 1, r->bw);
        }
    }
}

static int bench(const char *cmd, bench_opts *o)
{
    sl_err err = {0};
    sl_lm *s = NULL;
    int rc = CLI_FAIL;
    float *logits = NULL;
    int32_t *prompt = NULL;
    sl_bw_probe *probe = NULL;
    if (sl_lm_load(&s, o->model, &err))
        goto fail;
    const sl_config *c = &s->model->cfg;
    int start = o->ctx > o->n_prompt ? o->ctx : o->n_prompt;
    int n_ctx = start + o->n_gen + o->verify + 1;
    int n_rows = o->verify > o->n_prompt ? o->verify : o->n_prompt; /* batch and prompt rows */
    logits = malloc(sizeof(float) * (size_t)c->n_vocab * (size_t)(o->verify > 1 ? o->verify : 1));
    prompt = malloc(sizeof(int32_t) * (size_t)n_rows);
    if (!logits || !prompt) {
        sl_fail(&err, "out of memory");
        goto fail;
    }
    sl_lm_size size = {.n_ctx = n_ctx, .max_tokens = n_rows, .kv_type = (sl_type)o->kv_type,
                       .window_rings = true};
    if (sl_lm_alloc(s, &size, &err))
        goto fail;
    uint32_t seed = 42;
    for (int i = 0; i < n_rows; i++) { /* ids past the control tokens */
        seed = seed * 1664525u + 1013904223u;
        prompt[i] = c->n_vocab > 16 ? 8 + (int32_t)(seed % (uint32_t)(c->n_vocab - 8)) : 0;
    }
    bench_result r = {0};
    /* the bandwidth passes are spread over the runs (BW_PASSES before each
     * and after the last), so the probe and the runs see the same machine */
    probe = sl_bw_probe_open((size_t)256 << 20);
    if (probe)
        sl_bw_probe_run(probe, BW_PASSES);
    bytes_per_token(s->model, (sl_type)o->kv_type, start, o->n_gen, &r);
    r.vnni_peak = sl_probe_vnni_peak(sl_pool_threads(), 0.3);
    r.prefill_ops_n = prefill_ops(s->model, o->n_prompt);
    packed_memory(s->model, &r);
    r.prefill_s = r.decode_s = r.verify_s = 1e30;
    for (int rep = 0; rep < o->repeat; rep++) {
        op_times pre, dec;
        if (run_once(s, o, prompt, logits, &pre, &dec, &err) ||
            (o->verify > 0 && run_verify(s, o, start + o->n_gen, prompt, logits, &r.verify_s, &r.verify_ops, &err)))
            goto fail;
        if (probe)
            sl_bw_probe_run(probe, BW_PASSES);
        if (!o->json)
            fprintf(stderr, "bench: run %d/%d: prefill %.1f tok/s, decode %.1f tok/s\n", rep + 1,
                    o->repeat, o->n_prompt / pre.total, o->n_gen / dec.total);
        if (pre.total < r.prefill_s) {
            r.prefill_s = pre.total;
            r.prefill_ops = pre;
        }
        if (dec.total / o->n_gen < r.decode_s) {
            r.decode_s = dec.total / o->n_gen;
            r.decode_ops = dec;
        }
    }
    if (probe) {
        r.bw = sl_bw_probe_best(probe);
        r.bw_median = sl_bw_probe_median(probe);
        r.bw_passes = sl_bw_probe_passes(probe);
    }
    if (o->draft && run_draft(s, o, start + o->n_gen, &r, &err))
        goto fail;
    report(o, s, &r);
    rc = CLI_OK;
    goto done;
fail:
    cli_fail(cmd, "%s", err.msg);
done:
    sl_bw_probe_close(probe);
    free(logits);
    free(prompt);
    sl_lm_free(s);
    return rc;
}

/* Node description for a cluster file (the scheduler's cost model reads
 * bandwidth and matmul throughput from it). */
static int calibrate(void)
{
    int threads = sl_pool_threads();
    fprintf(stderr, "calibrate: read bandwidth...\n");
    double bw = sl_probe_read_bw((size_t)512 << 20, 20);
    fprintf(stderr, "calibrate: GEMV (decode) and GEMM (prefill) on Q4_0 4096 x 4096...\n");
    double gemv = sl_probe_matmul(4096, 4096, 1, 5);
    double gemm = sl_probe_matmul(4096, 4096, 64, 3);
    fprintf(stderr, "calibrate: AVX-512 VNNI and AMX int8 peaks...\n");
    double vnni = sl_probe_vnni_peak(threads, 0.5);
    double amx = sl_probe_amx_peak(threads, 0.5);
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    char host[256] = "local";
    gethostname(host, sizeof host - 1);
    /* a one-node cluster file: `sluice plan --calibration FILE` reads it,
     * and its node entry pastes into a larger cluster file */
    printf("# sluice bench --calibrate, %d threads\n", threads);
    printf("nodes:\n");
    printf("  - name: %s\n", host);
    printf("    cores: %d\n", threads);
    printf("    memory_gb: %.1f\n", (double)pages * (double)page / 1073741824.0);
    printf("    bandwidth_gb_s: %.1f\n", bw / 1e9);
    printf("    gemv_gflop_s: %.1f\n", gemv / 1e9);
    printf("    matmul_gflop_s: %.1f\n", gemm / 1e9);
    if (vnni > 0) /* a comment: the cluster file's parser knows no such key */
        printf("    # vnni_int8_gop_s: %.1f (matmul at %.1f%% of it)\n", vnni / 1e9, 100 * gemm / vnni);
    if (amx > 0)
        printf("    # amx_int8_gop_s: %.1f (TDPBSSD on full tiles)\n", amx / 1e9);
    return CLI_OK;
}

int cmd_bench(int argc, char **argv)
{
    enum { OPT_CTX = 1000, OPT_JSON, OPT_KERNELS, OPT_CALIBRATE, OPT_KV, OPT_VERIFY, OPT_DRAFT,
           OPT_PROFILE };
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"model", required_argument, NULL, 'm'},
        {"threads", required_argument, NULL, 't'},
        {"prompt", required_argument, NULL, 'p'},
        {"gen", required_argument, NULL, 'n'},
        {"repeat", required_argument, NULL, 'r'},
        {"ctx", required_argument, NULL, OPT_CTX},
        {"json", no_argument, NULL, OPT_JSON},
        {"kernels", no_argument, NULL, OPT_KERNELS},
        {"calibrate", no_argument, NULL, OPT_CALIBRATE},
        {"kv-type", required_argument, NULL, OPT_KV},
        {"verify", required_argument, NULL, OPT_VERIFY},
        {"draft", required_argument, NULL, OPT_DRAFT},
        {"profile", no_argument, NULL, OPT_PROFILE},
        {NULL, 0, NULL, 0},
    };
    bench_opts o = {.n_prompt = 512, .n_gen = 64, .repeat = 3, .verify = 5};
    int c;
    while ((c = cli_getopt(argc, argv, ":hm:t:p:n:r:", longopts, usage)) != -1) {
        int bad = 0;
        switch (c) {
        case 'h': fputs(usage, stdout); return CLI_OK;
        case 'm': o.model = optarg; break;
        case 't': bad = cli_parse_int(optarg, 1, 4096, &o.threads); break;
        case 'p': bad = cli_parse_int(optarg, 1, 1 << 16, &o.n_prompt); break;
        case 'n': bad = cli_parse_int(optarg, 1, 1 << 16, &o.n_gen); break;
        case 'r': bad = cli_parse_int(optarg, 1, 1000, &o.repeat); break;
        case OPT_CTX: bad = cli_parse_int(optarg, 1, 1 << 22, &o.ctx); break;
        case OPT_VERIFY: bad = cli_parse_int(optarg, 0, 64, &o.verify); break;
        case OPT_DRAFT: o.draft = optarg; break;
        case OPT_JSON: o.json = true; break;
        case OPT_KERNELS: o.kernels = true; break;
        case OPT_PROFILE: o.profile = true; break;
        case OPT_CALIBRATE: o.calibrate = true; break;
        case OPT_KV:
            o.kv_type = cli_kv_type(optarg);
            bad = o.kv_type < 0;
            break;
        default: return CLI_USAGE;
        }
        if (bad)
            return cli_usage(argv[0], usage, "bad value '%s' for --%s", optarg, cli_opt_name(longopts, c));
    }
    if (optind != argc)
        return cli_usage(argv[0], usage, "unexpected argument '%s'", argv[optind]);
    sl_pool_set_threads(sl_cpus_threads(o.threads)); /* the CPUs this process was given */
    if (o.calibrate)
        return calibrate();
    if (!o.model)
        return cli_usage(argv[0], usage, "-m FILE is required");
    return bench(argv[0], &o);
}
