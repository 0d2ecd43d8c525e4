#include "scheduler/cost.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/gguf.h"

static double visible(const sl_layer_cost *l, int context)
{
    return l->window > 0 && l->window < context ? l->window : context;
}

double sl_cost_kv_bytes(const sl_model_cost *mc, int l0, int l1, int context, int sequences)
{
    double b = 0;
    for (int i = l0; i < l1; i++)
        b += mc->layer[i].kv_bytes_per_pos * visible(&mc->layer[i], context);
    return b * sequences;
}

double sl_cost_weight_bytes(const sl_model_cost *mc, int l0, int l1)
{
    double b = 0;
    for (int i = l0; i < l1; i++)
        b += mc->layer[i].weight_bytes;
    return b;
}

double sl_cost_read_bytes(const sl_model_cost *mc, int l0, int l1, int context)
{
    return sl_cost_weight_bytes(mc, l0, l1) + sl_cost_kv_bytes(mc, l0, l1, context, 1);
}

double sl_cost_flops(const sl_model_cost *mc, int l0, int l1, int context)
{
    double f = 0;
    for (int i = l0; i < l1; i++)
        f += mc->layer[i].flops + mc->layer[i].attn_flops_per_pos * visible(&mc->layer[i], context);
    return f;
}

static void layer_attention(sl_layer_cost *l, const sl_layer_cfg *L, sl_type kv_type)
{
    l->kv_bytes_per_pos = 2.0 * L->n_kv_head * (double)sl_row_bytes(kv_type, L->head_dim);
    l->window = L->sliding_window;
    /* q.k and p.v: 2 multiply-adds per head dimension per position */
    l->attn_flops_per_pos = 4.0 * L->n_head * L->head_dim;
}

/* blk.N.xxx -> N, else -1 */
static int layer_of(const char *name)
{
    int n = -1, used = 0;
    if (sscanf(name, "blk.%d.%n", &n, &used) == 1 && used > 0)
        return n;
    return -1;
}

/* Gemma 4: a layer reading layer src's cache holds none itself, and no
 * stage boundary may fall between the two. */
static void kv_sharing(sl_model_cost *mc, const sl_config *c)
{
    for (int il = 0; il < c->n_layer; il++) {
        int src = c->layer[il].kv_src;
        if (src < 0)
            continue;
        mc->layer[il].kv_bytes_per_pos = 0;
        for (int k = src + 1; k <= il; k++) {
            if (mc->no_cut[k])
                continue;
            mc->no_cut[k] = true;
            mc->no_cut_reader[k] = il;
            mc->no_cut_source[k] = src;
        }
    }
}

int sl_cost_from_gguf(sl_model_cost *mc, const char *path, sl_type kv_type, sl_err *err)
{
    memset(mc, 0, sizeof *mc);
    gguf_file *f;
    if (gguf_open(&f, path, err))
        return -1;
    sl_config c;
    if (sl_config_from_gguf(&c, f, err)) {
        gguf_close(f);
        return -1;
    }
    mc->n_layer = c.n_layer;
    mc->d_model = c.d_model;
    mc->boundary_bytes = 4.0 * c.d_model;
    snprintf(mc->desc, sizeof mc->desc, "%s (%s, %d layers)", path, c.arch, c.n_layer);
    bool has_output = false;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        int il = layer_of(t->name);
        double elems = 1;
        for (uint32_t d = 0; d < t->n_dims; d++)
            elems *= (double)t->ne[d];
        bool matrix = t->n_dims >= 2;
        if (il >= 0 && il < c.n_layer) {
            mc->layer[il].weight_bytes += (double)t->size;
            if (matrix)
                mc->layer[il].flops += 2.0 * elems;
        } else if (strcmp(t->name, "token_embd.weight") == 0) {
            mc->embed_bytes = (double)t->size;
            if (!has_output) {
                mc->head_bytes = (double)t->size;
                mc->head_flops = 2.0 * elems;
            }
        } else if (strcmp(t->name, "output.weight") == 0) {
            has_output = true;
            mc->head_bytes = (double)t->size;
            mc->head_flops = 2.0 * elems;
        } else if (strcmp(t->name, "per_layer_model_proj.weight") == 0) {
            /* Gemma 4: each layer stage projects its own layers' rows */
            for (int l = 0; l < c.n_layer; l++) {
                mc->layer[l].ple_weight_bytes = (double)t->size / c.n_layer;
                mc->layer[l].ple_flops = 2.0 * elems / c.n_layer;
                mc->layer[l].weight_bytes += mc->layer[l].ple_weight_bytes;
                mc->layer[l].flops += mc->layer[l].ple_flops;
            }
        } else if (strcmp(t->name, "per_layer_token_embd.weight") == 0) {
            mc->embed_bytes += (double)t->size; /* a table gathered from, like token_embd */
        }
    }
    mc->tied = !has_output;
    mc->n_embd_per_layer = c.n_embd_per_layer;
    if (c.n_embd_per_layer > 0)
        mc->boundary_bytes += 4.0; /* the token id travels with the activations */
    for (int il = 0; il < c.n_layer; il++)
        layer_attention(&mc->layer[il], &c.layer[il], kv_type);
    kv_sharing(mc, &c);
    gguf_close(f);
    return 0;
}

/* Real models' shapes (public configs); the synth command has the smaller
 * ones too. */
static const sl_shape shapes[] = {
    {"gemma3", "270m", 18, 640, 2048, 4, 1, 256, 262144, 512, 6, 0, 0, 0, 0, 0},
    {"gemma3", "1b", 26, 1152, 6912, 4, 1, 256, 262144, 512, 6, 0, 0, 0, 0, 0},
    {"gemma3", "4b", 34, 2560, 10240, 8, 4, 256, 262208, 1024, 6, 0, 0, 0, 0, 0},
    {"gemma3", "12b", 48, 3840, 15360, 16, 8, 256, 262208, 1024, 6, 0, 0, 0, 0, 0},
    {"gemma3", "27b", 62, 5376, 21504, 32, 16, 128, 262208, 1024, 6, 0, 0, 0, 0, 0},
    {"gemma2", "2b", 26, 2304, 9216, 8, 4, 256, 256000, 4096, 2, 0, 0, 0, 0, 0},
    {"gemma2", "9b", 42, 3584, 14336, 16, 8, 256, 256000, 4096, 2, 0, 0, 0, 0, 0},
    {"gemma2", "27b", 46, 4608, 36864, 32, 16, 128, 256000, 4096, 2, 0, 0, 0, 0, 0},
    {"gemma", "2b", 18, 2048, 16384, 8, 1, 256, 256000, 0, 0, 0, 0, 0, 0, 0},
    {"gemma", "7b", 28, 3072, 24576, 16, 16, 256, 256000, 0, 0, 0, 0, 0, 0, 0},
    /* Gemma 4 E2B / E4B (published configs; see cli/cmd_synth.c) */
    {"gemma4", "e2b", 35, 1536, 6144, 8, 1, 512, 262144, 512, 5, 256, 1, 20, 12288, 256},
    {"gemma4", "e4b", 42, 2560, 10240, 8, 2, 512, 262144, 512, 6, 256, 2, 18, 0, 256},
};

const sl_shape *sl_shape_find(const char *arch, const char *size)
{
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        if (strcmp(shapes[i].arch, arch) == 0 && strcmp(shapes[i].size, size) == 0)
            return &shapes[i];
    return NULL;
}

const char *sl_shape_list(void)
{
    return "gemma4 e2b, e4b; gemma3 270m, 1b, 4b, 12b, 27b; gemma2 2b, 9b, 27b; gemma 2b, 7b";
}

/* One layer's matrices: rows x row bytes of q, k, v, o, gate, up, down
 * (k and v absent in a layer reading another's cache), and FLOPs. */
static void shape_layer(sl_layer_cost *l, double d, double q, double kv, double d_ff, int head_dim,
                        sl_type wtype)
{
    double bytes = q * sl_row_bytes(wtype, (int64_t)d) + 2 * kv * sl_row_bytes(wtype, (int64_t)d) +
                   d * sl_row_bytes(wtype, (int64_t)q) + 2.0 * d_ff * sl_row_bytes(wtype, (int64_t)d) +
                   d * sl_row_bytes(wtype, (int64_t)d_ff);
    double norms = 4.0 * (4 * d + 2 * head_dim);
    l->weight_bytes = bytes + norms;
    l->flops = 2.0 * (d * (q + 2 * kv) + q * d + 3.0 * d * d_ff);
}

void sl_cost_from_shape(sl_model_cost *mc, const sl_shape *s, sl_type wtype, sl_type kv_type)
{
    memset(mc, 0, sizeof *mc);
    mc->n_layer = s->n_layer;
    mc->d_model = s->d_model;
    mc->boundary_bytes = 4.0 * s->d_model;
    snprintf(mc->desc, sizeof mc->desc, "%s %s shapes, %s weights", s->arch, s->size,
             sl_type_name(wtype));
    double d = s->d_model, pl = s->n_embd_per_layer;
    sl_config c; /* just enough of one for kv_sharing() */
    c.n_layer = s->n_layer;
    int n_own = s->n_layer - s->n_kv_shared;
    for (int il = 0; il < s->n_layer; il++) {
        sl_layer_cost *l = &mc->layer[il];
        bool global = s->window == 0 || (il + 1) % s->swa_pattern == 0;
        int hd = !global && s->head_dim_swa > 0 ? s->head_dim_swa : s->head_dim;
        int kvh = !global && s->n_kv_head_swa > 0 ? s->n_kv_head_swa : s->n_kv_head;
        bool shared = il >= n_own;
        double d_ff = shared && s->d_ff_shared > 0 ? s->d_ff_shared : s->d_ff;
        double q = (double)s->n_head * hd, kv = shared ? 0 : (double)kvh * hd;
        shape_layer(l, d, q, kv, d_ff, hd, wtype);
        if (pl > 0) { /* inp_gate, proj and this layer's rows of per_layer_model_proj */
            l->ple_weight_bytes = pl * sl_row_bytes(wtype, (int64_t)d);
            l->ple_flops = 2.0 * d * pl;
            l->weight_bytes += pl * sl_row_bytes(wtype, (int64_t)d) +
                               d * sl_row_bytes(wtype, (int64_t)pl) + l->ple_weight_bytes;
            l->flops += 2.0 * 2 * d * pl + l->ple_flops;
        }
        sl_layer_cfg L = {.n_head = s->n_head, .n_kv_head = kvh, .head_dim = hd};
        L.sliding_window = global ? 0 : s->window;
        layer_attention(l, &L, kv_type);
        /* llama.cpp's sources: the last own sliding layer is n_own-2, the
         * last own global one n_own-1 */
        c.layer[il].kv_src = shared ? n_own - (global ? 1 : 2) : -1;
    }
    kv_sharing(mc, &c);
    mc->embed_bytes = (double)s->n_vocab * sl_row_bytes(wtype, s->d_model);
    mc->head_bytes = mc->embed_bytes;
    mc->head_flops = 2.0 * s->n_vocab * d;
    mc->tied = true;
    mc->n_embd_per_layer = s->n_embd_per_layer;
    if (pl > 0) {
        mc->embed_bytes += (double)s->n_vocab * sl_row_bytes(wtype, (int64_t)(pl * s->n_layer));
        mc->boundary_bytes += 4.0;
    }
}

void sl_cost_set_ple(sl_model_cost *mc, ple_mode mode)
{
    if (mc->n_embd_per_layer == 0 || mode == mc->ple)
        return;
    double sign = mode == PLE_AT_EMBED ? -1.0 : 1.0;
    for (int il = 0; il < mc->n_layer; il++) {
        sl_layer_cost *l = &mc->layer[il];
        l->weight_bytes += sign * l->ple_weight_bytes;
        l->flops += sign * l->ple_flops;
        mc->embed_read_bytes -= sign * l->ple_weight_bytes;
        mc->embed_flops -= sign * l->ple_flops;
    }
    if (mode == PLE_AT_LAYERS)
        mc->embed_read_bytes = mc->embed_flops = 0; /* exactly, not a rounding residue */
    mc->ple = mode;
}

double sl_cost_boundary_bytes(const sl_model_cost *mc, int cut)
{
    if (mc->n_embd_per_layer == 0)
        return mc->boundary_bytes;
    return (double)ple_boundary_bytes(mc->ple, mc->n_layer, mc->d_model, mc->n_embd_per_layer,
                                      cut, 4);
}
