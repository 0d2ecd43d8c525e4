#include "kernels/matmul.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "kernels/cpu.h"
#include "kernels/matmul_internal.h"
#include "kernels/quant.h"
#include "util/clock.h"
#include "util/mem.h"
#include "util/pool.h"

/* Rows a thread takes at a time: a multiple of every tile's row count, and
 * small enough that the weights of a chunk stay in L2 while a prefill batch
 * streams past them. */
#define ROW_CHUNK 16
/* Rows a prefill batch's chunk holds on the packed integer path: two groups
 * of 16, which its two-group tiles take together (a broadcast activation
 * feeds both). From PREFILL_TOKENS tokens in a call. */
#define PREFILL_CHUNK 32
#define PREFILL_TOKENS 16
/* Tokens the reference decodes a weight block for at once. */
#define REF_TOKENS 4

/* ---- scalar reference ---- */

/* Each (row, token) dot is summed in double, element by element in order, so
 * it does not depend on how tokens are grouped. */
static void ref_rows(sl_type wtype, const uint8_t *w, size_t row_bytes, int64_t o0, int64_t o1,
                     int64_t n_in, const float *x, int64_t n_tok, float *y, int64_t ldy)
{
    int64_t be = sl_type_block_elems(wtype);
    size_t bb = sl_type_block_bytes(wtype);
    int64_t step = be > 1 ? be : SL_QK_K; /* float types: dequantise a few at a time */
    float buf[SL_QK_K];
    for (int64_t o = o0; o < o1; o++) {
        const uint8_t *row = w + (size_t)o * row_bytes;
        for (int64_t t0 = 0; t0 < n_tok; t0 += REF_TOKENS) {
            int nt = n_tok - t0 < REF_TOKENS ? (int)(n_tok - t0) : REF_TOKENS;
            double acc[REF_TOKENS] = {0};
            for (int64_t i = 0; i < n_in; i += step) {
                int64_t cnt = n_in - i < step ? n_in - i : step;
                sl_dequantize_row(wtype, row + (size_t)(i / be) * bb, buf, cnt);
                for (int t = 0; t < nt; t++) {
                    const float *xt = x + (t0 + t) * n_in + i;
                    for (int64_t k = 0; k < cnt; k++)
                        acc[t] += (double)buf[k] * xt[k];
                }
            }
            for (int t = 0; t < nt; t++)
                y[(t0 + t) * ldy + o] = (float)acc[t];
        }
    }
}

/* ---- SIMD driver ---- */

static void simd_rows(const sl_mm_kernel *k, const uint8_t *w, size_t row_bytes, int64_t o0,
                      int64_t o1, int64_t n_in, const float *x, int64_t n_tok, float *y,
                      int64_t ldy)
{
    int64_t t = 0;
    for (; t + k->batch_toks <= n_tok; t += k->batch_toks) {
        const float *xt = x + t * n_in;
        float *yt = y + t * ldy;
        int64_t o = o0;
        for (; o + k->batch_rows <= o1; o += k->batch_rows)
            k->batch(w + (size_t)o * row_bytes, row_bytes, n_in, xt, yt + o, ldy);
        for (; o < o1; o++)
            k->batch_row(w + (size_t)o * row_bytes, row_bytes, n_in, xt, yt + o, ldy);
    }
    for (; t < n_tok; t++) {
        const float *xt = x + t * n_in;
        float *yt = y + t * ldy;
        int64_t o = o0;
        for (; o + k->single_rows <= o1; o += k->single_rows)
            k->single(w + (size_t)o * row_bytes, row_bytes, n_in, xt, yt + o, ldy);
        for (; o < o1; o++)
            k->one(w + (size_t)o * row_bytes, row_bytes, n_in, xt, yt + o, ldy);
    }
}

static const sl_mm_kernel *kernel_for(sl_path path, sl_type wtype)
{
#if defined(__x86_64__)
    if (path == SL_PATH_AVX512)
        return sl_mm_kernel_avx512(wtype);
    if (path == SL_PATH_AVX2)
        return sl_mm_kernel_avx2(wtype);
#else
    (void)path;
    (void)wtype;
#endif
    return NULL;
}

/* ---- the integer path: activations quantised to 8 bits ---- */

static sl_mmq_fn mmq_for(sl_path path, sl_type wtype)
{
    sl_mmq_fn fn = NULL;
#if defined(__x86_64__)
    if (path == SL_PATH_AVX512 && sl_cpu()->avx512vnni)
        fn = sl_mmq_avx512(wtype);
    else if (path >= SL_PATH_AVX2)
        fn = sl_mmq_avx2(wtype);
#else
    (void)path;
#endif
    /* a type the SIMD paths lack still takes the integer path, so every
     * path computes the same function of the same quantised activations */
    return fn ? fn : sl_mmq_ref(wtype);
}

static sl_r16_fn r16_for(sl_path path, sl_type wtype)
{
#if defined(__x86_64__)
    if (path == SL_PATH_AVX512 && sl_cpu()->avx512vnni) {
        sl_r16_fn amx = sl_r16_amx(wtype);
        return amx ? amx : sl_r16_avx512(wtype);
    }
#else
    (void)path;
    (void)wtype;
#endif
    return NULL;
}

/* The small-batch kernel where the VNNI one runs (the AMX kernel hands
 * batches under 16 tokens to the VNNI one whole). */
static sl_r16_fn r16_small_for(sl_path path, sl_type wtype, int64_t n_tok)
{
#if defined(__x86_64__)
    if (path == SL_PATH_AVX512 && sl_cpu()->avx512vnni && n_tok <= SL_R16_SMALL_MAX)
        return sl_r16_small_avx512(wtype);
#else
    (void)path;
    (void)wtype;
    (void)n_tok;
#endif
    return NULL;
}

/* SLUICE_R16_ONE=0 sends a decode step to the one-group tiles instead (the
 * same bits), to compare the two; read once. */
static atomic_int r16_one_state = -1;

/* The one-token kernel where the VNNI one runs. */
static sl_r16_fn r16_one_for(sl_path path, sl_type wtype)
{
#if defined(__x86_64__)
    int on = atomic_load_explicit(&r16_one_state, memory_order_relaxed);
    if (on < 0) {
        const char *env = getenv("SLUICE_R16_ONE");
        on = !(env && strcmp(env, "0") == 0);
        atomic_store_explicit(&r16_one_state, on, memory_order_relaxed);
    }
    if (path == SL_PATH_AVX512 && sl_cpu()->avx512vnni && on)
        return sl_r16_one_avx512(wtype);
#else
    (void)path;
    (void)wtype;
#endif
    return NULL;
}

static sl_r16f_fn r16f_for(sl_path path, sl_type wtype)
{
#if defined(__x86_64__)
    if (path == SL_PATH_AVX512)
        return sl_r16f_avx512(wtype);
#else
    (void)path;
    (void)wtype;
#endif
    return NULL;
}

static sl_r16b_fn r16b_for(sl_path path, sl_type wtype)
{
#if defined(__x86_64__)
    if (path == SL_PATH_AVX512 && sl_cpu()->avx512bf16)
        return sl_r16b_avx512(wtype);
#else
    (void)path;
    (void)wtype;
#endif
    return NULL;
}

/* Pool grain of a per-token pass over n_tok x n_in activations: serial
 * below 64K elements (a team costs more than it saves). */
static int64_t act_grain(int64_t n_tok, int64_t n_in)
{
    return n_tok * n_in >= (1 << 16) ? 1 : n_tok;
}

typedef struct bf16_args {
    const float *x;
    float *xb;
    uint32_t *pairs;
    int64_t n_in;
} bf16_args;

static void round_bf16_range(void *arg, int64_t t0, int64_t t1)
{
    const bf16_args *a = arg;
    const float *x = a->x;
    int64_t n_in = a->n_in;
    for (int64_t t = t0; t < t1; t++) {
        for (int64_t i = 0; i < n_in; i++)
            a->xb[t * n_in + i] = sl_bf16_to_f32(sl_f32_to_bf16(x[t * n_in + i]));
        if (a->pairs)
            for (int64_t i = 0; i + 1 < n_in; i += 2)
                a->pairs[t * (n_in / 2) + i / 2] = (uint32_t)sl_f32_to_bf16(x[t * n_in + i]) |
                                                   ((uint32_t)sl_f32_to_bf16(x[t * n_in + i + 1]) << 16);
    }
}

/* x rounded to bf16 (kept as floats), and as pairs of bf16 bits. */
static void round_bf16(const float *x, float *xb, uint32_t *pairs, int64_t n_tok, int64_t n_in)
{
    bf16_args a = {x, xb, pairs, n_in};
    sl_pool_for(n_tok, act_grain(n_tok, n_in), round_bf16_range, &a);
}

/* ---- the driver: one or more matrices that read the same x ---- */

/* How one job runs, resolved once per call. */
typedef struct plan {
    const sl_mm_job *job;
    size_t row_bytes;
    const sl_mm_kernel *simd; /* float activations: a SIMD kernel, or NULL for ref_rows */
    sl_mmq_fn rows;           /* integer path: NULL when the type has none */
    sl_r16_fn groups;         /* integer path on a packed copy */
    sl_r16_fn pairs;          /* the same two groups a call: 2..8 tokens, or 1 */
    sl_r16f_fn groups_f;      /* float activations on a packed copy */
    sl_r16b_fn groups_b;      /* bf16 activation pairs on a packed copy (AVX512-BF16) */
    const float *x;           /* the activations this job reads (x, or x rounded to bf16) */
    int64_t slice;            /* blocks a slice of a sliced packed copy, else 0 */
    int64_t chunk0;           /* first chunk of this job in the shared numbering */
    int64_t chunk_rows;       /* rows a chunk (ROW_CHUNK, or PREFILL_CHUNK) */
} plan;

#define MAX_JOBS 8

/* Groups [g0, g1) of a packed copy of n_groups groups through fn for the
 * tokens of v: at once, or slice by slice (slice blocks of 32 a slice, 0
 * when not sliced: each slice a packed matrix of its columns, the lanes'
 * sums carried through y). */
static void run_slices(sl_r16_fn fn, sl_type type, const uint8_t *p, int64_t slice,
                       int64_t n_groups, int64_t g0, int64_t g1, const sl_q8act *v, float *y,
                       int64_t ldy)
{
    if (!slice) {
        fn(p, g0, g1, v, y, ldy);
        return;
    }
    int64_t nb = v->n_blocks;
    for (int64_t b0 = 0; b0 < nb; b0 += slice) {
        int64_t b1 = b0 + slice < nb ? b0 + slice : nb;
        sl_q8act s = sl_q8act_cols(v, b0, b1);
        s.carry = b0 > 0;
        fn(p, g0, g1, &s, y, ldy);
        p += (size_t)n_groups * sl_r16_group_bytes(type, 32 * (b1 - b0));
    }
}

void sl_r16_run(sl_r16_fn fn, sl_type type, const void *packed, int64_t n_groups, int64_t g0,
                int64_t g1, const sl_q8act *a, float *y, int64_t ldy)
{
    int64_t slice = sl_pack_slice_blocks(packed);
    run_slices(fn, type, packed, slice < a->n_blocks ? slice : 0, n_groups, g0, g1, a, y, ldy);
}

static void run_groups(const plan *pl, sl_r16_fn fn, int64_t g0, int64_t g1, const sl_q8act *v,
                       float *y, int64_t ldy)
{
    const sl_mm_job *j = pl->job;
    run_slices(fn, j->type, j->packed, pl->slice, j->n_out / 16, g0, g1, v, y, ldy);
}

/* Rows of chunk c for tokens [t0, t1). */
static void run_chunk(const plan *pl, int64_t c, int64_t n_in, int64_t t0, int64_t t1,
                      const sl_q8act *a, const uint32_t *xpairs)
{
    const float *x = pl->x;
    const sl_mm_job *j = pl->job;
    int64_t o0 = (c - pl->chunk0) * pl->chunk_rows;
    int64_t o1 = o0 + pl->chunk_rows < j->n_out ? o0 + pl->chunk_rows : j->n_out;
    const uint8_t *w = j->w;
    float *y = j->y + t0 * j->ldy;
    if (pl->rows) {
        sl_q8act v = sl_q8act_tokens(a, t0, t1);
        /* the chunk's whole groups of 16 (chunks start on one) through the
         * packed copy, the rest of the last group row by row: which way a row
         * goes depends on n_out alone, never on the chunking */
        int64_t full = pl->groups ? (o1 - o0) / 16 * 16 : 0;
        if (full)
            run_groups(pl, pl->groups, o0 / 16, (o0 + full) / 16, &v, y, j->ldy);
        if (o0 + full < o1)
            pl->rows(w, pl->row_bytes, o0 + full, o1, &v, y, j->ldy);
    } else if (pl->groups_b && o1 - o0 == 16) {
        pl->groups_b(j->packed, o0 / 16, o0 / 16 + 1, xpairs + t0 * (n_in / 2), t1 - t0, n_in, y,
                     j->ldy);
    } else if (pl->groups_f && o1 - o0 == 16) {
        pl->groups_f(j->packed, o0 / 16, o0 / 16 + 1, x + t0 * n_in, t1 - t0, n_in, y, j->ldy);
    } else if (pl->simd) {
        simd_rows(pl->simd, w, pl->row_bytes, o0, o1, n_in, x + t0 * n_in, t1 - t0, y, j->ldy);
    } else {
        ref_rows(j->type, w, pl->row_bytes, o0, o1, n_in, x + t0 * n_in, t1 - t0, y, j->ldy);
    }
}

/* Tokens per pass over the weights: as many as keep their activations
 * (about 1.3 bytes a column quantised, 4 in float) within a budget of L2, so
 * each row chunk's weights meet them there instead of in memory. The
 * quantised budget is 2 MB, which takes a 512-token prefill of a 1152-wide
 * model (Q, K, V, gate, up) in one block: each chunk's weights are read once
 * and its tile runs 128 token steps a call instead of 56 and 16 (blocks of
 * 224, 224 and 64 at 512 KB); measured with bench/prefill_cost.sh on Zen 5,
 * two threads, 6912 x 1152 Q4_0 went from 924-1007 to 1017-1028 GOP/s, Q8_0
 * 898-957 to 957-1037, Q5_0 782-792 to 818-845, while 1152 x 6912 (151 tokens
 * a block instead of 36) stayed within the noise. Which block a token falls
 * in never changes its bits. */
static int64_t token_block(int64_t n_in, bool q8)
{
    int64_t per_tok = n_in * (q8 ? 2 : 4);
    int64_t budget = q8 ? (int64_t)2 << 20 : (int64_t)512 << 10;
    int64_t tb = budget / (per_tok > 0 ? per_tok : 1);
    tb = tb / 4 * 4; /* whole tiles */
    /* AMX tiles take 16 tokens and unpack a row chunk's weights once per
     * call: a few whole tiles a block, whatever the width (up to 1 MB) */
    if (q8 && tb < 128 && sl_matmul_amx_active())
        tb = 128;
    return tb < 4 ? 4 : tb;
}

/* What the jobs of one call need besides their plans. */
typedef struct needs {
    bool q8;      /* activations quantised to 8 bits */
    bool bf;      /* activations rounded to bf16 */
    bool pairs;   /* and packed as bf16 pairs */
    int64_t n_chunks, macs, bytes; /* bytes: of the weights read */
} needs;

/* Resolves how each job runs on path (the scalar reference when ref). */
static needs plan_jobs(plan *pl, const sl_mm_job *jobs, int n_jobs, int64_t n_in,
                       const float *x, int64_t n_tok, bool ref)
{
    sl_path path = ref ? SL_PATH_SCALAR : sl_path_active();
    bool act_q8 = sl_act_mode() == SL_ACTQ_Q8;
    needs nd = {false, false, false, 0, 0, 0};
    for (int i = 0; i < n_jobs; i++) {
        const sl_mm_job *j = &jobs[i];
        bool q8 = act_q8 && sl_mmq_supports(j->type);
        pl[i] = (plan){j, sl_row_bytes(j->type, n_in), NULL, NULL, NULL, NULL, NULL, NULL, x,
                       0, nd.n_chunks, ROW_CHUNK};
        if (q8) {
            pl[i].rows = ref ? sl_mmq_ref(j->type) : mmq_for(path, j->type);
            pl[i].groups = j->packed && !ref ? r16_for(path, j->type) : NULL;
            pl[i].pairs = pl[i].groups && n_tok >= 2 ? r16_small_for(path, j->type, n_tok) : NULL;
            /* a decode step: the one-token kernel, two groups a call */
            sl_r16_fn one = pl[i].groups && n_tok == 1 ? r16_one_for(path, j->type) : NULL;
            if (one)
                pl[i].groups = pl[i].pairs = one;
            if (pl[i].groups && n_tok >= PREFILL_TOKENS)
                pl[i].chunk_rows = PREFILL_CHUNK;
            if (pl[i].groups && sl_pack_slice_blocks(j->packed) < n_in / 32)
                pl[i].slice = sl_pack_slice_blocks(j->packed);
        } else if (!ref) {
            pl[i].simd = kernel_for(path, j->type);
            pl[i].groups_f = j->packed ? r16f_for(path, j->type) : NULL;
        }
        if (act_q8 && j->type == SL_TYPE_BF16) {
            /* reduced-precision activations for BF16 weights: rounded to
             * bf16, on every path (the dot of AVX512-BF16 takes them so) */
            nd.bf = true;
            if (!ref && j->packed && r16b_for(path, j->type)) {
                pl[i].groups_b = r16b_for(path, j->type);
                nd.pairs = true;
            }
        }
        nd.q8 |= q8;
        nd.n_chunks += (j->n_out + pl[i].chunk_rows - 1) / pl[i].chunk_rows;
        nd.macs += j->n_out * n_in * n_tok;
        nd.bytes += j->n_out * pl[i].row_bytes;
    }
    return nd;
}

/* The rows of a gated FFN's down projection, made from gate and up as the
 * activations are prepared (sl_matmul_glu); NULL for a plain x. */
typedef struct glu_rows {
    float *gate; /* the call's x */
    const float *up;
    sl_glu_fn fn;
    bool keep; /* a job reads the float rows: made into gate in place */
} glu_rows;

typedef struct q8_args {
    sl_q8act *a;
    const float *x;
    int64_t n_in;
    const glu_rows *glu;
} q8_args;

/* Floats of a row made at a time when only its quantised form is read:
 * whole blocks of 32, in L1 between the activation and the quantiser. */
#define GLU_PIECE 512
/* Floats ahead of the piece being made whose gate and up lines are
 * prefetched: two pieces. */
#define GLU_AHEAD 1024

/* The piece of token t's row from float i (up to GLU_PIECE floats) made
 * into a buffer on the stack and quantised from there, prefetching the
 * lines two pieces ahead while they are before end (a float offset in the
 * rows: the range the calling thread makes). */
static void glu_piece(const q8_args *q, int64_t t, int64_t i, int64_t end)
{
    const glu_rows *g = q->glu;
    int64_t n = q->n_in, len = n - i < GLU_PIECE ? n - i : GLU_PIECE;
    int64_t ahead = t * n + i + GLU_AHEAD;
    if (ahead + GLU_PIECE <= end)
        for (int64_t k = 0; k < GLU_PIECE; k += 16) {
            __builtin_prefetch(g->gate + ahead + k);
            __builtin_prefetch(g->up + ahead + k);
        }
    _Alignas(64) float buf[GLU_PIECE];
    g->fn(buf, g->gate + t * n + i, g->up + t * n + i, len);
    sl_q8act_quantize_blocks(q->a, t, i / SL_Q8A_BLOCK, (i + len) / SL_Q8A_BLOCK, buf);
}

/* Each token's row made (glu) and quantised, or only made (a NULL q->a).
 * When no job reads the float rows they are made a piece at a time into a
 * buffer on the stack and quantised from there: gate is left as it was,
 * and a prefill's pass writes nothing back to memory (a 512-token Gemma 3
 * 1B layer: 14 MB less written and read for ownership). The pass reads
 * gate and up from memory (28 MB a layer, just written by gate_up) with
 * enough arithmetic between the loads that the hardware prefetcher fell
 * behind; prefetching two pieces ahead took it from 1.4-1.6 to 0.9 ns a
 * float on one Zen 5 thread (sl_gelu_tanh_mul_to then quantising). */
static void quantize_range(void *arg, int64_t t0, int64_t t1)
{
    const q8_args *q = arg;
    const glu_rows *g = q->glu;
    int64_t n = q->n_in;
    for (int64_t t = t0; t < t1; t++) {
        if (g && (g->keep || !q->a)) {
            g->fn(g->gate + t * n, g->gate + t * n, g->up + t * n, n);
        } else if (g) {
            for (int64_t i = 0; i < n; i += GLU_PIECE)
                glu_piece(q, t, i, t1 * n);
            continue;
        }
        if (q->a)
            sl_q8act_quantize(q->a, t, q->x + t * n);
    }
}

/* Where piece u of a call's rows starts (float offset in x; rows are
 * contiguous, each cut into pieces of GLU_PIECE from its start). */
static int64_t glu_piece_at(int64_t u, int64_t per_row, int64_t n)
{
    return u / per_row * n + u % per_row * GLU_PIECE;
}

/* quantize_range's made-and-quantised rows, a piece at a time: units are
 * (token, piece), so a batch of a few tokens (a verification step's 5 rows
 * of 6912) splits evenly over the threads instead of a token a thread (5
 * tokens: 3 on one thread, 2 on the other) or, below act_grain's size, on
 * the caller alone. Each piece is made and quantised as quantize_range
 * makes it (the same piece bounds, blocks quantised independently), so the
 * same bits. */
static void glu_piece_range(void *arg, int64_t u0, int64_t u1)
{
    const q8_args *q = arg;
    int64_t n = q->n_in, per_row = (n + GLU_PIECE - 1) / GLU_PIECE;
    int64_t end = glu_piece_at(u1, per_row, n);
    for (int64_t u = u0; u < u1; u++)
        glu_piece(q, u / per_row, u % per_row * GLU_PIECE, end);
}

/* Batches below this many tokens make and quantise a down projection's
 * rows by pieces (glu_piece_range), larger ones by tokens. */
#define GLU_PIECE_TOKENS 16

/* The calling thread's buffer for quantised activations (sl_thread_scratch:
 * kept between calls, grown to the largest seen, ~7 MB for 512 tokens of
 * 6912). */
static void *q8_scratch_get(size_t bytes)
{
    void *mem = sl_thread_scratch(SL_SCRATCH_Q8ACT, bytes);
    if (!mem)
        abort(); /* a few KB per token: nothing sensible is left to do */
    return mem;
}

/* The activations' other forms, made once for all jobs (a token's bytes do
 * not depend on its batch): quantised into *a (the thread's scratch),
 * rounded to bf16 into *xb and *xpairs. Jobs of BF16 weights are pointed at
 * *xb. */
static _Thread_local double tls_quant_s;

double sl_matmul_quant_s(void) { return tls_quant_s; }

static void prepare_acts(const needs *nd, plan *pl, int n_jobs, int64_t n_in, const float *x,
                         int64_t n_tok, glu_rows *glu, sl_q8act *a, float **xb,
                         uint32_t **xpairs)
{
    double t0 = sl_now_s();
    if (glu) {
        glu->keep = !nd->q8 || nd->bf;
        for (int i = 0; i < n_jobs; i++)
            glu->keep |= !pl[i].rows; /* run_chunk reads pl->x */
    }
    if (nd->q8) {
        sl_q8act_init(a, q8_scratch_get(sl_q8act_bytes(n_tok, n_in)), n_tok, n_in);
        q8_args q = {a, x, n_in, glu};
        if (glu && !glu->keep && n_tok < GLU_PIECE_TOKENS && n_in % SL_Q8A_BLOCK == 0)
            sl_pool_for(n_tok * ((n_in + GLU_PIECE - 1) / GLU_PIECE), 1, glu_piece_range, &q);
        else
            sl_pool_for(n_tok, act_grain(n_tok, n_in), quantize_range, &q);
    } else if (glu) { /* the rows alone, before anything reads them */
        q8_args q = {NULL, x, n_in, glu};
        sl_pool_for(n_tok, act_grain(n_tok, n_in), quantize_range, &q);
    }
    tls_quant_s += sl_now_s() - t0;
    if (nd->bf) {
        *xb = malloc(sizeof(float) * (size_t)(n_tok * n_in));
        *xpairs = nd->pairs ? malloc(sizeof(uint32_t) * (size_t)(n_tok * (n_in / 2) + 1)) : NULL;
        if (!*xb || (nd->pairs && !*xpairs))
            abort();
        round_bf16(x, *xb, *xpairs, n_tok, n_in);
        for (int i = 0; i < n_jobs; i++)
            if (pl[i].job->type == SL_TYPE_BF16)
                pl[i].x = *xb;
    }
}

/* One call's units of work: (token block, row chunk) pairs, token block
 * major, so threads sweep one block of tokens before the next. */
typedef struct jobs_args {
    const plan *pl;
    int n_jobs;
    int64_t n_in, n_tok, tb, n_chunks;
    const sl_q8act *a;
    const uint32_t *xpairs;
} jobs_args;

static void jobs_range(void *arg, int64_t u0, int64_t u1)
{
    const jobs_args *j = arg;
    for (int64_t u = u0; u < u1; u++) {
        int64_t t0 = u / j->n_chunks * j->tb, c = u % j->n_chunks;
        int64_t t1 = t0 + j->tb < j->n_tok ? t0 + j->tb : j->n_tok;
        int i = 0;
        while (i + 1 < j->n_jobs && c >= j->pl[i + 1].chunk0)
            i++;
        const plan *pl = &j->pl[i];
        /* a small batch: this chunk and the next, two full groups of the
         * same job and token block, in one call; a sliced copy's: every
         * full group of the job and token block left in the range, so each
         * slice of them streams in one run */
        int64_t o0 = (c - pl->chunk0) * ROW_CHUNK;
        if (pl->pairs && u + 1 < u1 && c + 1 < j->n_chunks && o0 + 2 * ROW_CHUNK <= pl->job->n_out) {
            int64_t n = 2;
            if (pl->slice) {
                int64_t end_c = i + 1 < j->n_jobs ? j->pl[i + 1].chunk0 : j->n_chunks;
                n = (pl->job->n_out - o0) / ROW_CHUNK; /* full groups left in the job */
                n = n < end_c - c ? n : end_c - c;
                n = n < u1 - u ? n : u1 - u;
            }
            sl_q8act v = sl_q8act_tokens(j->a, t0, t1);
            run_groups(pl, pl->pairs, o0 / 16, o0 / 16 + n, &v, pl->job->y + t0 * pl->job->ldy,
                       pl->job->ldy);
            u += n - 1;
            continue;
        }
        run_chunk(pl, c, j->n_in, t0, t1, j->a, j->xpairs);
    }
}

/* Multiply-adds a thread claims at least at a time when the pool's units
 * are claimed one by one (about 15-20 us of a 2-thread prefill's tiles). */
#define CLAIM_MACS ((int64_t)4 << 20)

/* Units a claim of a call takes when they are claimed a few at a time,
 * or 0 for the pool's usual split (four claims a thread): a prefill's
 * call has hundreds of units of 30-80 us each, and with eight claims of
 * 2-4 ms on 2 threads the caller waited most of a claim at every barrier
 * (gate/up of a 512-token Gemma 3 1B prefill on Zen 5: 20% of its time).
 * Which thread runs a unit never changes its bits. */
static int64_t claim_units(int64_t units, int64_t macs)
{
    int64_t unit_macs = macs / (units > 0 ? units : 1);
    int64_t claim = (CLAIM_MACS + unit_macs - 1) / (unit_macs > 0 ? unit_macs : 1);
    return claim * 16 <= units ? claim : 0;
}

/* A decode step's split (one token on more than one thread): the chunks cut
 * into one contiguous part a thread, each thread streaming its own part
 * front to back in pieces, and a thread that runs out taking pieces off the
 * back of another's part. Each thread reads one long sequential stream, and
 * the threads still finish within a piece of each other. The pool's own
 * split (4 chunks a thread, claimed in turn) left the head of Gemma 3 1B
 * (262144 x 1152, 320 MB of Q8_0: chunks of 40 MB) with one thread
 * streaming alone for up to a chunk at its end whenever the threads' rates
 * differed by an eighth, and finer chunks interleaved the two streams in
 * small pieces, which read slower. */
#define STEAL_PARTS_MAX 8
/* Calls of up to this many tokens (a decode step, a speculative
 * verification) stream their weights and take this split; a prefill's
 * tiles are claimed a few units at a time instead (claim_units). */
#define STEAL_TOKENS_MAX 16
#define STEAL_PIECE_BYTES ((int64_t)512 << 10)

typedef struct steal_cursor {
    _Alignas(64) _Atomic uint64_t fb; /* next piece from the front << 32 | end of the back */
} steal_cursor;

typedef struct steal_args {
    jobs_args *ja;
    int parts;
    int64_t piece;                       /* chunks a piece */
    int64_t bound[STEAL_PARTS_MAX + 1];  /* part p: chunks [bound[p], bound[p + 1]) */
    steal_cursor cur[STEAL_PARTS_MAX];
} steal_args;

/* Claims a piece of part p from its front (owner) or back: its index, or -1
 * when the part is used up. */
static int64_t steal_claim(steal_cursor *c, bool front)
{
    uint64_t v = atomic_load_explicit(&c->fb, memory_order_relaxed);
    for (;;) {
        uint64_t f = v >> 32, b = v & 0xffffffffu;
        if (f >= b)
            return -1;
        uint64_t nv = front ? (f + 1) << 32 | b : f << 32 | (b - 1);
        if (atomic_compare_exchange_weak_explicit(&c->fb, &v, nv, memory_order_relaxed,
                                                  memory_order_relaxed))
            return (int64_t)(front ? f : b - 1);
    }
}

static void steal_piece(steal_args *s, int p, int64_t k)
{
    int64_t c0 = s->bound[p] + k * s->piece;
    int64_t c1 = c0 + s->piece < s->bound[p + 1] ? c0 + s->piece : s->bound[p + 1];
    jobs_range(s->ja, c0, c1);
}

/* The part of the calling thread's index (sl_pool_thread_index: the
 * caller 0, the workers 1 up) as its owner, then the others' pieces from
 * their backs. Which thread owns which part is known before the call, so a
 * thread can prefetch the start of its part of the next call
 * (sl_matmul_prefetch); a thread that runs it twice (its team's other
 * thread came late) finds its own part taken and steals the rest. */
static void steal_range(void *arg, int64_t i0, int64_t i1)
{
    (void)i0;
    (void)i1;
    steal_args *s = arg;
    int own = sl_pool_thread_index() % s->parts;
    for (int64_t k; (k = steal_claim(&s->cur[own], true)) >= 0;)
        steal_piece(s, own, k);
    for (int d = 1; d < s->parts; d++) {
        int p = (own + d) % s->parts;
        for (int64_t k; (k = steal_claim(&s->cur[p], false)) >= 0;)
            steal_piece(s, p, k);
    }
}

/* SLUICE_MM_STEAL=0 gives a decode step the pool's own split instead (the
 * same bits), to compare the two; read once, or set by
 * sl_matmul_set_steal. */
static atomic_int steal_state = -1;

void sl_matmul_set_steal(int on) { atomic_store(&steal_state, on < 0 ? -1 : on != 0); }

static bool steal_on(void)
{
    int on = atomic_load_explicit(&steal_state, memory_order_relaxed);
    if (on < 0) {
        const char *env = getenv("SLUICE_MM_STEAL");
        on = !(env && strcmp(env, "0") == 0);
        atomic_store_explicit(&steal_state, on, memory_order_relaxed);
    }
    return on;
}

/* The decode split of n chunks (bytes of weights in all) over parts
 * threads: the parts' bounds and the chunks a piece. */
static int64_t steal_split(int64_t n, int64_t bytes, int parts, int64_t *bound)
{
    int64_t chunk_bytes = bytes / (n > 0 ? n : 1) + 1;
    int64_t per_part = n / parts;
    int64_t piece = STEAL_PIECE_BYTES / chunk_bytes;
    if (piece > per_part / 4)
        piece = per_part / 4;
    if (piece < 1)
        piece = 1;
    for (int p = 0; p <= parts; p++)
        bound[p] = n * p / parts;
    return piece;
}

static int steal_parts(void)
{
    int parts = sl_pool_current_threads();
    return parts < 1 ? 1 : parts > STEAL_PARTS_MAX ? STEAL_PARTS_MAX : parts;
}

/* The chunks of ja (one token) over the calling thread's threads. */
static void run_steal(jobs_args *ja, int64_t bytes)
{
    steal_args s;
    s.ja = ja;
    s.parts = steal_parts();
    s.piece = steal_split(ja->n_chunks, bytes, s.parts, s.bound);
    for (int p = 0; p < s.parts; p++) {
        uint64_t pieces = (uint64_t)((s.bound[p + 1] - s.bound[p] + s.piece - 1) / s.piece);
        atomic_init(&s.cur[p].fb, pieces);
    }
    sl_pool_prefetch(NULL, 0); /* a hint for this call is spent */
    sl_pool_for(s.parts, 1, steal_range, &s);
}

/* A call below the pool's minimum work runs on this thread alone: a decode
 * step streams its weights, a batch's multiply-adds add to it. */
static bool is_team(const needs *nd)
{
    return nd->n_chunks > 1 && sl_pool_worth(sl_pool_work(nd->bytes, nd->macs));
}

static bool takes_steal(int64_t n_tok, int64_t tb)
{
    return n_tok <= STEAL_TOKENS_MAX && n_tok <= tb && steal_on();
}

/* Row chunks are independent and each (row, token) is computed whole by one
 * thread, so the thread count never changes a bit of y. All jobs share one
 * parallel call: one wake-up of the pool instead of one per matrix. */
static void run_jobs(const sl_mm_job *jobs, int n_jobs, int64_t n_in, const float *x,
                     int64_t n_tok, bool ref, glu_rows *glu)
{
    if (n_tok <= 0 || n_jobs <= 0)
        return;
    if (n_jobs > MAX_JOBS) {
        run_jobs(jobs, MAX_JOBS, n_in, x, n_tok, ref, glu);
        run_jobs(jobs + MAX_JOBS, n_jobs - MAX_JOBS, n_in, x, n_tok, ref, NULL);
        return;
    }
    plan pl[MAX_JOBS];
    needs nd = plan_jobs(pl, jobs, n_jobs, n_in, x, n_tok, ref);
    sl_q8act a = {0};
    float *xb = NULL;
    uint32_t *xpairs = NULL;
    prepare_acts(&nd, pl, n_jobs, n_in, x, n_tok, glu, &a, &xb, &xpairs);
    bool team = is_team(&nd);
    int64_t tb = token_block(n_in, nd.q8);
    /* Outputs of different units never overlap: a thread moves on to the
     * next block of tokens without waiting for the others. */
    jobs_args ja = {pl, n_jobs, n_in, n_tok, tb, nd.n_chunks, &a, xpairs};
    int64_t units = (n_tok + tb - 1) / tb * nd.n_chunks;
    int64_t claim = claim_units(units, nd.macs);
    if (team && takes_steal(n_tok, tb))
        run_steal(&ja, nd.bytes);
    else if (team && claim)
        sl_pool_for_each(units, claim, jobs_range, &ja);
    else
        sl_pool_for(units, team ? 1 : units, jobs_range, &ja);
    free(xb);
    free(xpairs);
}

void sl_matmul_jobs(const sl_mm_job *jobs, int n_jobs, int64_t n_in, const float *x,
                    int64_t n_tok)
{
    run_jobs(jobs, n_jobs, n_in, x, n_tok, false, NULL);
}

void sl_matmul(sl_type wtype, const void *w, int64_t n_out, int64_t n_in, const float *x,
               int64_t n_tok, float *y, int64_t ldy)
{
    sl_mm_job j = {wtype, w, NULL, n_out, y, ldy};
    run_jobs(&j, 1, n_in, x, n_tok, false, NULL);
}

void sl_matmul_ref(sl_type wtype, const void *w, int64_t n_out, int64_t n_in, const float *x,
                   int64_t n_tok, float *y, int64_t ldy)
{
    sl_mm_job j = {wtype, w, NULL, n_out, y, ldy};
    run_jobs(&j, 1, n_in, x, n_tok, true, NULL);
}

void sl_matmul_packed(sl_type wtype, const void *w, const void *packed, int64_t n_out,
                      int64_t n_in, const float *x, int64_t n_tok, float *y, int64_t ldy)
{
    sl_mm_job j = {wtype, w, packed, n_out, y, ldy};
    run_jobs(&j, 1, n_in, x, n_tok, false, NULL);
}

void sl_matmul_glu(sl_type wtype, const void *w, const void *packed, int64_t n_out, int64_t n_in,
                   float *gate, const float *up, sl_glu_fn glu, int64_t n_tok, float *y,
                   int64_t ldy)
{
    sl_mm_job j = {wtype, w, packed, n_out, y, ldy};
    glu_rows g = {gate, up, glu, true};
    run_jobs(&j, 1, n_in, gate, n_tok, false, &g);
}

/* ---- prefetching the next call's weights ---- */

/* Bytes of its part of the next call each thread prefetches
 * (SLUICE_MM_PREFETCH in KB, read once, or sl_matmul_set_prefetch); 0: off. */
#define PREFETCH_BYTES_DEFAULT ((int64_t)64 << 10)
static _Atomic int64_t prefetch_state = -1;

void sl_matmul_set_prefetch(int64_t bytes)
{
    atomic_store(&prefetch_state, bytes < 0 ? -1 : bytes);
}

int64_t sl_env_kb(const char *name, int64_t fallback)
{
    const char *env = getenv(name);
    if (env && *env) {
        char *end;
        long long kb = strtoll(env, &end, 10);
        if (*end == '\0' && kb >= 0)
            return (int64_t)kb << 10;
    }
    return fallback;
}

static int64_t prefetch_bytes(void)
{
    int64_t b = atomic_load_explicit(&prefetch_state, memory_order_relaxed);
    if (b < 0) {
        b = sl_env_kb("SLUICE_MM_PREFETCH", PREFETCH_BYTES_DEFAULT);
        atomic_store_explicit(&prefetch_state, b, memory_order_relaxed);
    }
    return b;
}

/* Where chunk c of the planned jobs starts reading, and how many bytes its
 * job has from there on. */
static const uint8_t *chunk_start(const plan *pl, int n_jobs, int64_t n_in, int64_t c,
                                  size_t *left)
{
    int i = 0;
    while (i + 1 < n_jobs && c >= pl[i + 1].chunk0)
        i++;
    const sl_mm_job *j = pl[i].job;
    int64_t o0 = (c - pl[i].chunk0) * pl[i].chunk_rows;
    bool packed = j->packed && (pl[i].groups || pl[i].groups_f || pl[i].groups_b) &&
                  o0 + 16 <= j->n_out;
    if (packed) {
        /* a sliced copy: the part's groups of the first slice */
        size_t gb = sl_r16_group_bytes(j->type, pl[i].slice ? 32 * pl[i].slice : n_in);
        *left = (size_t)(j->n_out / 16 - o0 / 16) * gb;
        return (const uint8_t *)j->packed + (size_t)(o0 / 16) * gb;
    }
    *left = (size_t)(j->n_out - o0) * pl[i].row_bytes;
    return (const uint8_t *)j->w + (size_t)o0 * pl[i].row_bytes;
}

void sl_matmul_prefetch(const sl_mm_job *jobs, int n_jobs, int64_t n_in, int64_t n_tok)
{
    int64_t want = prefetch_bytes();
    if (want <= 0 || n_jobs <= 0 || n_jobs > MAX_JOBS || n_tok <= 0)
        return;
    plan pl[MAX_JOBS];
    needs nd = plan_jobs(pl, jobs, n_jobs, n_in, NULL, n_tok, false);
    int parts = steal_parts();
    if (parts < 2 || !is_team(&nd) || !takes_steal(n_tok, token_block(n_in, nd.q8)))
        return; /* the call runs on one thread, or not by parts */
    int64_t bound[STEAL_PARTS_MAX + 1];
    steal_split(nd.n_chunks, nd.bytes, parts, bound);
    sl_pool_span spans[STEAL_PARTS_MAX];
    for (int p = 0; p < parts; p++) {
        size_t left;
        spans[p].p = chunk_start(pl, n_jobs, n_in, bound[p], &left);
        spans[p].bytes = left < (size_t)want ? left : (size_t)want;
    }
    sl_pool_prefetch(spans, parts);
}

/* ---- repacked weights ---- */

/* Packed copies are carved, in load order, out of slabs mapped on 2 MB
 * boundaries with transparent huge pages (MADV_HUGEPAGE): a decode step
 * streams every matrix, and a small matrix in a mapping of its own never
 * got a huge page (Q, K, V and O of a 1152-wide model are under 1 MB), so
 * each 4 KB page cost a page walk and stopped the hardware prefetcher; the
 * layers' matmuls ran ~13% slower than in huge pages. A slab is unmapped when
 * its last copy is freed; its untouched tail costs no memory. */
#define PACK_HEADER 64 /* keeps the packed data 64-byte aligned */
#define PACK_HUGE ((size_t)2 << 20)
#define PACK_SLAB ((size_t)64 << 20)

typedef struct pack_slab {
    size_t map_bytes, used; /* used: the bump pointer's offset */
    int64_t live;           /* copies not yet freed (under pack_lock) */
} pack_slab;

/* In front of each copy's data, within PACK_HEADER. */
typedef struct pack_head {
    pack_slab *slab;
    size_t bytes;  /* header and data */
    int64_t slice; /* blocks of 32 a slice (sl_r16_pack) */
} pack_head;

static pthread_mutex_t pack_lock = PTHREAD_MUTEX_INITIALIZER;
static pack_slab *pack_current; /* the slab new copies are cut from */

/* A mapping of at least bytes (rounded to 2 MB) starting on a 2 MB boundary. */
static pack_slab *slab_new(size_t bytes)
{
    size_t map_bytes = (bytes + PACK_HUGE - 1) / PACK_HUGE * PACK_HUGE;
    uint8_t *raw = mmap(NULL, map_bytes + PACK_HUGE, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED)
        return NULL;
    uint8_t *map = (uint8_t *)(((uintptr_t)raw + PACK_HUGE - 1) & ~(uintptr_t)(PACK_HUGE - 1));
    if (map > raw)
        munmap(raw, (size_t)(map - raw));
    size_t tail = (size_t)(raw + map_bytes + PACK_HUGE - (map + map_bytes));
    if (tail)
        munmap(map + map_bytes, tail);
    madvise(map, map_bytes, MADV_HUGEPAGE);
    pack_slab *sl = (pack_slab *)map;
    *sl = (pack_slab){map_bytes, PACK_HEADER, 0};
    return sl;
}

/* bytes (header included, a multiple of 64) from the current slab, or a new
 * one; NULL when out of memory. */
static pack_head *pack_alloc(size_t bytes)
{
    pthread_mutex_lock(&pack_lock);
    pack_slab *sl = pack_current;
    if (!sl || sl->map_bytes - sl->used < bytes) {
        size_t want = PACK_HEADER + bytes > PACK_SLAB ? PACK_HEADER + bytes : PACK_SLAB;
        sl = slab_new(want);
        /* a copy larger than a slab gets its own; smaller ones keep filling
         * the slab they started */
        if (sl && want == PACK_SLAB)
            pack_current = sl;
    }
    pack_head *h = NULL;
    if (sl) {
        h = (pack_head *)((uint8_t *)sl + sl->used);
        *h = (pack_head){sl, bytes, 0};
        sl->used += bytes;
        sl->live++;
    }
    pthread_mutex_unlock(&pack_lock);
    return h;
}

void *sl_pack(sl_type wtype, const void *w, int64_t n_out, int64_t n_in)
{
    const char *env = getenv("SLUICE_REPACK");
    sl_path path = sl_path_active();
    if ((env && strcmp(env, "0") == 0) || n_out < 16 || (wtype == SL_TYPE_BF16 && n_in % 2) ||
        (!r16_for(path, wtype) && !r16f_for(path, wtype)))
        return NULL;
    int64_t n_groups = n_out / 16;
    size_t bytes = (size_t)n_groups * sl_r16_group_bytes(wtype, n_in);
    pack_head *h = pack_alloc(PACK_HEADER + (bytes + 63) / 64 * 64);
    if (!h)
        return NULL; /* out of memory: the plain layout still works */
    uint8_t *data = (uint8_t *)h + PACK_HEADER;
    h->slice = wtype == SL_TYPE_BF16 ? 0 : sl_r16_slice_blocks(wtype, n_in);
    sl_r16_pack(wtype, w, n_groups, n_in, h->slice, data);
    return data;
}

void sl_pack_free(void *packed)
{
    if (!packed)
        return;
    pack_head *h = (pack_head *)((uint8_t *)packed - PACK_HEADER);
    pack_slab *sl = h->slab;
    pthread_mutex_lock(&pack_lock);
    if (--sl->live == 0) {
        if (sl == pack_current)
            pack_current = NULL;
        munmap(sl, sl->map_bytes);
    }
    pthread_mutex_unlock(&pack_lock);
}

int64_t sl_pack_slice_blocks(const void *packed)
{
    return ((const pack_head *)((const uint8_t *)packed - PACK_HEADER))->slice;
}

size_t sl_pack_bytes(const void *packed)
{
    if (!packed)
        return 0;
    return ((const pack_head *)((const uint8_t *)packed - PACK_HEADER))->bytes;
}

const char *sl_matmul_path_name(sl_type wtype)
{
    sl_path path = sl_path_active();
    if (sl_act_mode() == SL_ACTQ_Q8 && wtype == SL_TYPE_BF16)
        return path == SL_PATH_AVX512 ? (sl_cpu()->avx512bf16 ? "avx512-bf16/bf16" : "avx512/bf16")
               : path == SL_PATH_AVX2 ? "avx2/bf16" : "scalar/bf16";
    if (sl_act_mode() == SL_ACTQ_Q8 && sl_mmq_supports(wtype)) {
        if (path == SL_PATH_AVX512 && sl_cpu()->avx512vnni)
            return "avx512-vnni/q8";
        return path >= SL_PATH_AVX2 ? "avx2/q8" : "scalar/q8";
    }
    return kernel_for(path, wtype) ? sl_path_name(path) : sl_path_name(SL_PATH_SCALAR);
}
