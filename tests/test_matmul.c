/* Matmul: every path this CPU has against a double-precision dot of the
 * dequantised weights and against the scalar reference, on odd shapes; and
 * the determinism contract of kernels/matmul.h (a token's outputs keep their
 * bits whatever batch it sits in and however many threads run). */
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kernels/cpu.h"
#include "kernels/matmul.h"
#include "kernels/matmul_internal.h"
#include "kernels/ops.h"
#include "kernels/probe.h"
#include "kernels/q8act.h"
#include "kernels/quant.h"
#include "tests/test.h"
#include "util/pool.h"

static const sl_type all_types[] = {SL_TYPE_F32,  SL_TYPE_F16,  SL_TYPE_BF16,   SL_TYPE_Q8_0,
                                    SL_TYPE_Q4_0, SL_TYPE_Q4_1, SL_TYPE_Q5_0,   SL_TYPE_Q5_1,
                                    SL_TYPE_Q2_K, SL_TYPE_Q3_K, SL_TYPE_Q4_K,   SL_TYPE_Q5_K,
                                    SL_TYPE_Q6_K, SL_TYPE_IQ4_NL, SL_TYPE_IQ4_XS};
#define N_TYPES (int)(sizeof all_types / sizeof all_types[0])
#define MAX_TOK 29

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static float rnd_sym(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((double)(rng_state >> 11) / 9007199254740992.0 * 2 - 1);
}

typedef struct problem {
    sl_type type;
    int64_t n_out, n_in;
    uint8_t *w;     /* quantised weights */
    float *wd;      /* the same, dequantised */
    float *x;       /* MAX_TOK tokens */
    double *dot;    /* exact-ish dot per (token, row), in double */
    double *absdot; /* sum |w x| per (token, row): scales the rounding bound */
    int q8;         /* the type takes the integer path: x is quantised first */
} problem;

/* 4-, 6- and 8-bit weights meet activations quantised to 8 bits per block of
 * 32 (kernels/q8act.h): d = max|x| / 127, q = rint(x * (1 / d)). The oracle
 * takes the same quantised activations, written here from that definition. */
static int takes_q8(sl_type t)
{
    return t != SL_TYPE_F32 && t != SL_TYPE_F16 && t != SL_TYPE_BF16;
}

static void quantize_acts(const float *x, double *xq, int64_t n)
{
    for (int64_t b = 0; b < n; b += 32) {
        float amax = 0;
        for (int i = 0; i < 32; i++)
            amax = fmaxf(amax, fabsf(x[b + i]));
        float d = amax / 127.0f, id = d > 0 ? 1.0f / d : 0.0f;
        for (int i = 0; i < 32; i++) {
            float q = rintf(x[b + i] * id);
            CHECK(fabsf(q) <= 127 && fabs((double)q * d - x[b + i]) <= (0.5 + 127 * 0x1p-23) * d); /* half a step, plus x * (1 / d)'s roundings */
            xq[b + i] = (double)q * d;
        }
    }
}

static void problem_make(problem *p, sl_type type, int64_t n_out, int64_t n_in)
{
    p->type = type;
    p->n_out = n_out;
    p->n_in = n_in;
    p->q8 = takes_q8(type) && sl_act_mode() == SL_ACTQ_Q8;
    /* BF16 weights meet activations rounded to bf16 in that mode */
    bool bf16_act = type == SL_TYPE_BF16 && sl_act_mode() == SL_ACTQ_Q8;
    size_t rb = sl_row_bytes(type, n_in);
    p->w = malloc(rb * (size_t)n_out);
    p->wd = malloc(sizeof(float) * (size_t)(n_out * n_in));
    p->x = malloc(sizeof(float) * (size_t)(MAX_TOK * n_in));
    p->dot = malloc(sizeof(double) * (size_t)(MAX_TOK * n_out));
    p->absdot = malloc(sizeof(double) * (size_t)(MAX_TOK * n_out));
    float *row = malloc(sizeof(float) * (size_t)n_in);
    for (int64_t o = 0; o < n_out; o++) {
        for (int64_t i = 0; i < n_in; i++)
            row[i] = rnd_sym();
        sl_quantize_row(type, row, p->w + (size_t)o * rb, n_in);
        sl_dequantize_row(type, p->w + (size_t)o * rb, p->wd + o * n_in, n_in);
    }
    free(row);
    for (int64_t i = 0; i < MAX_TOK * n_in; i++)
        p->x[i] = rnd_sym();
    double *xs = malloc(sizeof(double) * (size_t)(MAX_TOK * n_in));
    for (int t = 0; t < MAX_TOK; t++) {
        if (p->q8)
            quantize_acts(p->x + t * n_in, xs + t * n_in, n_in);
        else if (bf16_act)
            for (int64_t i = 0; i < n_in; i++)
                xs[t * n_in + i] = sl_bf16_to_f32(sl_f32_to_bf16(p->x[t * n_in + i]));
        else
            for (int64_t i = 0; i < n_in; i++)
                xs[t * n_in + i] = p->x[t * n_in + i];
    }
    for (int t = 0; t < MAX_TOK; t++) {
        for (int64_t o = 0; o < n_out; o++) {
            double s = 0, a = 0;
            for (int64_t i = 0; i < n_in; i++) {
                double prod = (double)p->wd[o * n_in + i] * xs[t * n_in + i];
                s += prod;
                a += fabs(prod);
            }
            p->dot[t * n_out + o] = s;
            p->absdot[t * n_out + o] = a;
        }
    }
    free(xs);
}

static void problem_free(problem *p)
{
    free(p->w);
    free(p->wd);
    free(p->x);
    free(p->dot);
    free(p->absdot);
}

/* The packed copy run() uses when set (test_packed). */
static const void *run_packed;

/* Runs the active path with ldy > n_out and checks the gap stays untouched. */
static float *run(const problem *p, const float *x, int64_t n_tok, int ref)
{
    int64_t ldy = p->n_out + 3;
    float *y = malloc(sizeof(float) * (size_t)(n_tok * ldy));
    for (int64_t i = 0; i < n_tok * ldy; i++)
        y[i] = -777.0f;
    if (ref)
        sl_matmul_ref(p->type, p->w, p->n_out, p->n_in, x, n_tok, y, ldy);
    else if (run_packed)
        sl_matmul_packed(p->type, p->w, run_packed, p->n_out, p->n_in, x, n_tok, y, ldy);
    else
        sl_matmul(p->type, p->w, p->n_out, p->n_in, x, n_tok, y, ldy);
    int touched = 0;
    for (int64_t t = 0; t < n_tok; t++)
        for (int64_t o = p->n_out; o < ldy; o++)
            touched += y[t * ldy + o] != -777.0f;
    CHECKF(touched == 0, "%s: wrote %d floats between output rows", sl_type_name(p->type), touched);
    /* Compact to ldy = n_out for the comparisons. */
    for (int64_t t = 0; t < n_tok; t++)
        memmove(y + t * p->n_out, y + t * ldy, sizeof(float) * (size_t)p->n_out);
    return y;
}

/* The reference sums in double: its error is the final rounding to float
 * plus a double-precision summation term; on the integer path each block's
 * scale is a float product (weight scale times activation scale, and for
 * Q4_K the mins term's d * sum), a rounding of 2^-24 of each term. */
static void check_ref(const problem *p, int64_t n_tok)
{
    float *y = run(p, p->x, n_tok, 1);
    int bad = 0;
    for (int64_t k = 0; k < n_tok * p->n_out; k++) {
        double tol = 0x1p-24 * fabs(p->dot[k]) + p->n_in * 0x1p-52 * p->absdot[k] + 1e-37;
        if (p->q8)
            tol += 2 * 0x1p-24 * p->absdot[k];
        bad += !(fabs(y[k] - p->dot[k]) <= tol);
    }
    CHECKF(bad == 0, "reference %s %lldx%lld n_tok %lld: %d outputs off the double dot",
           sl_type_name(p->type), (long long)p->n_out, (long long)p->n_in, (long long)n_tok, bad);
    free(y);
}

/* A SIMD path decodes the same weights and sums n_in products in float in
 * some order with FMAs: each step rounds once, so the error is at most
 * (n_in + reduction depth) * 2^-24 * sum |w x| (the classic recursive
 * summation bound, valid for any order). */
static void check_path(const problem *p, int64_t n_tok, sl_path path)
{
    float *y = run(p, p->x, n_tok, 0);
    float *yref = run(p, p->x, n_tok, 1);
    int bad_dot = 0, bad_ref = 0;
    for (int64_t k = 0; k < n_tok * p->n_out; k++) {
        double tol = (double)(p->n_in + 8) * 0x1p-24 * p->absdot[k] + 1e-37;
        bad_dot += !(fabs(y[k] - p->dot[k]) <= tol);
        bad_ref += !(fabs(y[k] - yref[k]) <= tol + 0x1p-24 * fabs(p->dot[k]));
    }
    if (path == SL_PATH_SCALAR) /* the scalar path is the reference */
        CHECK(memcmp(y, yref, sizeof(float) * (size_t)(n_tok * p->n_out)) == 0);
    CHECKF(bad_dot == 0 && bad_ref == 0, "%s path %s %lldx%lld n_tok %lld: %d off the dot, %d off the ref",
           sl_path_name(path), sl_type_name(p->type), (long long)p->n_out, (long long)p->n_in,
           (long long)n_tok, bad_dot, bad_ref);
    free(y);
    free(yref);
}

static int n_in_cases(sl_type type, int64_t *out)
{
    int64_t be = sl_type_block_elems(type);
    if (be == 1) {
        out[0] = 7;
        out[1] = 32;
        out[2] = 301;
        return 3;
    }
    out[0] = be;     /* a single block */
    out[1] = 3 * be; /* several */
    if (be == 32) {
        out[2] = 11 * be;
        return 3;
    }
    return 2;
}

static void test_against_oracles(void)
{
    static const int64_t n_outs[] = {1, 7, 33, 257};
    static const int64_t n_toks[] = {1, 2, 3, 5, 17};
    for (int ti = 0; ti < N_TYPES; ti++) {
        int64_t n_ins[3];
        int n_n_in = n_in_cases(all_types[ti], n_ins);
        for (size_t oi = 0; oi < sizeof n_outs / sizeof n_outs[0]; oi++) {
            for (int ii = 0; ii < n_n_in; ii++) {
                problem p;
                problem_make(&p, all_types[ti], n_outs[oi], n_ins[ii]);
                for (size_t k = 0; k < sizeof n_toks / sizeof n_toks[0]; k++) {
                    check_ref(&p, n_toks[k]);
                    for (int path = 0; path <= (int)sl_path_best(); path++) {
                        CHECK(sl_path_force((sl_path)path) == 0);
                        check_path(&p, n_toks[k], (sl_path)path);
                    }
                }
                problem_free(&p);
            }
        }
    }
}

/* Token t computed alone, or inside any window of the batch, has the same
 * bits as in the full batch. */
static void check_batch_invariance(const problem *p, sl_path path)
{
    static const int windows[][2] = {{0, 2}, {1, 3}, {3, 5}, {4, 4}, {8, 9}, {13, 4}, {2, 15}, {5, 7}, {1, 28}, {3, 21}};
    float *full = run(p, p->x, MAX_TOK, 0);
    int bad = 0;
    for (int t = 0; t < MAX_TOK; t++) {
        float *one = run(p, p->x + t * p->n_in, 1, 0);
        bad += memcmp(one, full + t * p->n_out, sizeof(float) * (size_t)p->n_out) != 0;
        free(one);
    }
    for (size_t w = 0; w < sizeof windows / sizeof windows[0]; w++) {
        int start = windows[w][0], len = windows[w][1];
        float *part = run(p, p->x + start * p->n_in, len, 0);
        bad += memcmp(part, full + start * p->n_out, sizeof(float) * (size_t)(len * p->n_out)) != 0;
        free(part);
    }
    CHECKF(bad == 0, "%s path %s %lldx%lld: %d batches change a token's bits", sl_path_name(path),
           sl_type_name(p->type), (long long)p->n_out, (long long)p->n_in, bad);
    free(full);
}

/* Big enough to run a team (see PARALLEL_MIN_MACS in matmul.c). */
static void check_thread_invariance(const problem *p, sl_path path)
{
    sl_pool_set_adaptive(false); /* exactly the count asked for */
    sl_pool_set_threads(1);
    float *y1 = run(p, p->x, MAX_TOK, 0);
    for (int threads = 2; threads <= 3; threads++) {
        sl_pool_set_threads(threads);
        CHECK(sl_pool_current_threads() == threads);
        float *yn = run(p, p->x, MAX_TOK, 0);
        float *ynb = run(p, p->x + 3 * p->n_in, 5, 0);
        CHECKF(memcmp(y1, yn, sizeof(float) * (size_t)(MAX_TOK * p->n_out)) == 0 &&
                   memcmp(ynb, y1 + 3 * p->n_out, sizeof(float) * (size_t)(5 * p->n_out)) == 0,
               "%s path %s: 1 and %d threads differ", sl_path_name(path), sl_type_name(p->type),
               threads);
        free(yn);
        free(ynb);
    }
    free(y1);
    sl_pool_set_adaptive(true);
}

static void test_determinism(void)
{
    for (int ti = 0; ti < N_TYPES; ti++) {
        int64_t be = sl_type_block_elems(all_types[ti]);
        problem small, big;
        problem_make(&small, all_types[ti], 33, be == 1 ? 301 : 3 * be);
        problem_make(&big, all_types[ti], 257, be == 256 ? 768 : 640);
        /* wide enough that the driver splits 29 tokens into blocks (it keeps
         * a block's activations within a budget: quantised, 2 MB at 2 bytes
         * a column, 12 tokens of 67584; in float, 512 KB, 4 tokens) */
        problem wide;
        problem_make(&wide, all_types[ti], 17, 264 * 256);
        for (int path = 0; path <= (int)sl_path_best(); path++) {
            CHECK(sl_path_force((sl_path)path) == 0);
            check_batch_invariance(&small, (sl_path)path);
            check_batch_invariance(&big, (sl_path)path);
            check_thread_invariance(&big, (sl_path)path);
            if (path != SL_PATH_SCALAR) { /* (the scalar path runs the same driver, slowly) */
                check_batch_invariance(&wide, (sl_path)path);
                check_thread_invariance(&wide, (sl_path)path);
            }
        }
        check_path(&wide, MAX_TOK, sl_path_best());
        problem_free(&small);
        problem_free(&big);
        problem_free(&wide);
    }
}

/* Repacked weights (sl_pack): the same oracles and invariances, on row
 * counts with and without a remainder of 16. */
static void test_packed(void)
{
    static const sl_type types[] = {SL_TYPE_Q4_0, SL_TYPE_Q8_0, SL_TYPE_Q4_K, SL_TYPE_Q6_K,
                                    SL_TYPE_Q4_1, SL_TYPE_Q5_0, SL_TYPE_Q5_1, SL_TYPE_BF16};
    const int n_types = (int)(sizeof types / sizeof types[0]);
    static const int64_t n_outs[] = {16, 33, 257};
    int built = 0;
    for (int ti = 0; ti < n_types; ti++) {
        int64_t be = sl_type_block_elems(types[ti]);
        for (int oi = 0; oi < 3; oi++) {
            problem p;
            problem_make(&p, types[ti], n_outs[oi], be == 256 ? 3 * 256 : 11 * 32);
            sl_path_force(sl_path_best());
            void *packed = sl_pack(p.type, p.w, p.n_out, p.n_in);
            built += packed != NULL;
            run_packed = packed;
            for (int path = 0; path <= (int)sl_path_best(); path++) {
                CHECK(sl_path_force((sl_path)path) == 0);
                /* every small batch (2..8 tokens: two groups a call, an odd
                 * group and the rows past the last group on their own) */
                for (int64_t n_tok = 1; n_tok <= 9; n_tok++)
                    check_path(&p, n_tok, (sl_path)path);
                check_batch_invariance(&p, (sl_path)path);
            }
            run_packed = NULL;
            sl_pack_free(packed);
            problem_free(&p);
        }
        problem big;
        problem_make(&big, types[ti], 257, be == 256 ? 768 : 640);
        sl_path_force(sl_path_best());
        run_packed = sl_pack(big.type, big.w, big.n_out, big.n_in);
        check_thread_invariance(&big, sl_path_best());
        sl_pack_free((void *)run_packed);
        run_packed = NULL;
        problem_free(&big);
        /* a prefill (29 tokens: the two-group tiles) of rows wider than
         * the tiles' unpacked copy of a pair of groups takes (PF2_U_MAX in
         * matmul_r16pf_avx512.h: Q5_0 and Q5_1 unpack in the tile there):
         * the oracles, and each token's bits alone and in the batch */
        problem wide;
        problem_make(&wide, types[ti], 33, be == 256 ? 9 * 256 : 67 * 32);
        sl_path_force(sl_path_best());
        run_packed = sl_pack(wide.type, wide.w, wide.n_out, wide.n_in);
        if (run_packed) {
            check_path(&wide, MAX_TOK, sl_path_best());
            check_batch_invariance(&wide, sl_path_best());
        }
        sl_pack_free((void *)run_packed);
        run_packed = NULL;
        problem_free(&wide);
    }
    const sl_cpu_features *f = sl_cpu();
    if (sl_path_best() == SL_PATH_AVX512 && f->avx512vnni)
        CHECK(built == 3 * n_types); /* this CPU has the packed kernels: they must have run */
    else if (sl_path_best() == SL_PATH_AVX512)
        CHECK(built == 3); /* BF16's needs only AVX-512F */
    else
        CHECK(built == 0);
    CHECK(sl_pack(SL_TYPE_Q5_K, NULL, 256, 256) == NULL); /* no layout for it */
}

/* The one-token kernels (matmul_r16d_avx512.c) called directly on a packed
 * copy, every type they take, on a few groups and several blocks: the bits
 * of the one-group kernel on the same groups (whichever groups a call
 * starts at), and the scalar reference's values within check_path's bound.
 * A type they do not take in this list fails here (the decode path of
 * llama.cpp's Q4_K_M mix: Q5_0 gate/up, Q4_K/Q6_K down). */
static void test_one_token(void)
{
#if defined(__x86_64__)
    if (sl_path_best() != SL_PATH_AVX512 || !sl_cpu()->avx512vnni) {
        fprintf(stderr, "test_one_token: skipped: no AVX-512 VNNI\n");
        return;
    }
    static const sl_type types[] = {SL_TYPE_Q4_0, SL_TYPE_Q8_0, SL_TYPE_Q5_0, SL_TYPE_Q4_K,
                                    SL_TYPE_Q6_K};
    CHECK(sl_path_force(SL_PATH_AVX512) == 0);
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        sl_type type = types[ti];
        sl_r16_fn one = sl_r16_one_avx512(type), tile = sl_r16_avx512(type);
        CHECKF(one && tile, "%s: no one-token kernel", sl_type_name(type));
        if (!one || !tile)
            continue;
        /* an odd and an even count of blocks, and (Q4_0's lean kernel keeps
         * 1024 blocks' lane starts) a row longer than that */
        static const int64_t widths32[] = {37 * 32, 36 * 32, 1029 * 32}, widths256[] = {5 * 256};
        bool k256 = sl_type_block_elems(type) == 256;
        int n_widths = k256 ? 1 : 3;
        for (int wi = 0; wi < n_widths; wi++) {
            int64_t n_in = k256 ? widths256[wi] : widths32[wi], n_out = 48;
            problem p;
            problem_make(&p, type, n_out, n_in);
            uint8_t *packed = sl_pack(type, p.w, n_out, n_in);
            void *mem = aligned_alloc(64, (sl_q8act_bytes(1, n_in) + 63) / 64 * 64);
            sl_q8act a;
            sl_q8act_init(&a, mem, 1, n_in);
            sl_q8act_quantize(&a, 0, p.x);
            float y_one[48], y_tile[48], y_part[48];
            sl_r16_run(one, type, packed, n_out / 16, 0, n_out / 16, &a, y_one, n_out);
            sl_r16_run(tile, type, packed, n_out / 16, 0, n_out / 16, &a, y_tile, n_out);
            memset(y_part, 0, sizeof y_part);
            sl_r16_run(one, type, packed, n_out / 16, 1, n_out / 16, &a, y_part, n_out);
            CHECKF(memcmp(y_one, y_tile, sizeof y_one) == 0 &&
                       memcmp(y_part + 16, y_tile + 16, sizeof(float) * 32) == 0,
                   "%s: the one-token kernel's bits differ from the one-group kernel's (%lld wide)",
                   sl_type_name(type), (long long)n_in);
            float *yref = run(&p, p.x, 1, 1);
            int bad = 0;
            for (int64_t o = 0; o < n_out; o++) {
                double tol = (double)(n_in + 8) * 0x1p-24 * p.absdot[o] + 1e-37;
                bad += !(fabs(y_one[o] - yref[o]) <= tol + 0x1p-24 * fabs(p.dot[o]));
            }
            CHECKF(bad == 0, "%s: %d one-token outputs off the reference (%lld wide)",
                   sl_type_name(type), bad, (long long)n_in);
            free(yref);
            free(mem);
            sl_pack_free(packed);
            problem_free(&p);
        }
    }
#endif
}

/* The split of a decode step or a verification (run_steal in matmul.c, up
 * to 16 tokens: a part a thread, pieces
 * taken off the back of another's part when a thread runs out), forced on
 * with no minimum work, against the pool's own split and one thread: every
 * row written (y starts as NaN), the same bits at 1, 2 and 3 threads, on row
 * counts with fewer chunks than threads, a remainder past the last group of
 * 16 and more pieces than a part's first claim; packed (the one-token
 * kernels) and row layouts. And the call did split. */
static void test_decode_split(void)
{
    static const sl_type types[] = {SL_TYPE_Q8_0, SL_TYPE_Q4_0, SL_TYPE_Q6_K, SL_TYPE_F32};
    static const int64_t n_outs[] = {7, 33, 1000, 4099};
    /* a decode step, a verification, the most tokens the split takes, and
     * one past it (the pool's claims again) */
    static const int64_t n_toks[] = {1, 5, 16, 17};
    sl_path_force(sl_path_best());
    sl_pool_set_adaptive(false);
    sl_pool_set_min_work(0);
    int bad = 0, split = 0, want_split = 0;
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        for (size_t oi = 0; oi < sizeof n_outs / sizeof n_outs[0]; oi++) {
            problem p;
            problem_make(&p, types[ti], n_outs[oi], sl_type_block_elems(types[ti]) == 256 ? 256 : 96);
            void *packed = sl_pack(p.type, p.w, p.n_out, p.n_in);
            for (size_t ki = 0; ki < sizeof n_toks / sizeof n_toks[0]; ki++) {
                int64_t nt = n_toks[ki];
                size_t yb = sizeof(float) * (size_t)(p.n_out * nt);
                float *y1 = malloc(yb), *y = malloc(yb);
                sl_pool_set_threads(1);
                sl_matmul_set_steal(0);
                sl_matmul_packed(p.type, p.w, packed, p.n_out, p.n_in, p.x, nt, y1, p.n_out);
                for (int threads = 1; threads <= 3; threads++)
                    for (int steal = 0; steal <= 2; steal++) {
                        sl_pool_set_threads(threads);
                        sl_matmul_set_steal(steal > 0);
                        for (int64_t o = 0; o < p.n_out * nt; o++)
                            y[o] = NAN;
                        if (steal == 2) {
                            /* a hint of this call (each thread prefetches the
                             * start of its part while it waits) changes nothing */
                            sl_mm_job j = {p.type, p.w, packed, p.n_out, y, p.n_out};
                            sl_matmul_prefetch(&j, 1, p.n_in, nt);
                        }
                        uint64_t calls = sl_pool_thread_counters().calls;
                        sl_matmul_packed(p.type, p.w, packed, p.n_out, p.n_in, p.x, nt, y, p.n_out);
                        /* (a call of one chunk of 16 rows runs on the caller) */
                        bool team = threads > 1 && steal && p.n_out > 16;
                        want_split += team;
                        split += team && sl_pool_thread_counters().calls > calls;
                        if (memcmp(y, y1, yb) != 0) {
                            bad++;
                            fprintf(stderr, "decode split: %s %lld rows, %lld tokens, %d threads, steal %d: bits differ\n",
                                    sl_type_name(p.type), (long long)p.n_out, (long long)nt, threads, steal);
                        }
                    }
                free(y1);
                free(y);
            }
            sl_pack_free(packed);
            problem_free(&p);
        }
    }
    CHECKF(bad == 0, "decode split: %d runs differ from one thread", bad);
    /* every steal run of more than a chunk on 2 or 3 threads was a parallel call */
    CHECK(want_split > 0 && split == want_split);
    sl_matmul_set_steal(-1);
    sl_pool_set_min_work(-1);
    sl_pool_set_adaptive(true);
    sl_pool_set_threads(1);
}

/* Sliced packed copies (rows cut into column slices, each laid out as a
 * packed matrix of its own, the slices one after another; the kernels run
 * slice by slice with the lanes' sums carried through y): the bits of the
 * unsliced copy, on every path that reads them (one token, a small batch,
 * prefill tiles), at 1 to 3 threads, decode split or not; widths that are
 * not a multiple of the slice, a few groups and a remainder of rows.
 * Small slices (sl_r16_set_slice_bytes) so that small matrices slice. */
static void test_sliced(void)
{
    static const sl_type types[] = {SL_TYPE_Q4_0, SL_TYPE_Q8_0, SL_TYPE_Q5_0, SL_TYPE_Q4_K,
                                    SL_TYPE_Q6_K};
    static const int64_t n_toks[] = {1, 2, 3, 5, 8, 16, 20};
    static const int64_t n_outs[] = {53, 96};
    sl_path_force(sl_path_best());
    sl_pool_set_adaptive(false);
    sl_pool_set_min_work(0);
    int bad = 0, sliced = 0;
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        sl_type type = types[ti];
        bool k256 = sl_type_block_elems(type) == 256;
        /* blocks of 32: 37 (slices 8, 8, 8, 8, 5), 70; superblocks: 5
         * (slices of 1), 9 (slices of 2 and a last of 1) */
        const int64_t widths[2] = {k256 ? 5 * 256 : 37 * 32, k256 ? 9 * 256 : 70 * 32};
        const int64_t slice_bytes[2] = {1024, k256 ? 4096 : 2048};
        for (int wi = 0; wi < 2; wi++)
            for (size_t oi = 0; oi < sizeof n_outs / sizeof n_outs[0]; oi++) {
                problem p;
                problem_make(&p, type, n_outs[oi], widths[wi]);
                sl_r16_set_slice_bytes(0);
                void *plain = sl_pack(type, p.w, p.n_out, p.n_in);
                sl_r16_set_slice_bytes(slice_bytes[wi]);
                void *cut = sl_pack(type, p.w, p.n_out, p.n_in);
                sl_r16_set_slice_bytes(-1);
                if (!plain || !cut) {
                    CHECKF(0, "%s: no packed copy", sl_type_name(type));
                    continue;
                }
                int64_t nb = p.n_in / 32, sb = sl_pack_slice_blocks(cut);
                CHECK(sl_pack_slice_blocks(plain) == nb);
                CHECKF(sb < nb && sb % 8 == 0 && ((k256 && wi == 0) || nb % sb != 0),
                       "%s %lld wide: slice of %lld blocks", sl_type_name(type),
                       (long long)p.n_in, (long long)sb);
                sliced += sb < nb;
                CHECK(sl_pack_bytes(cut) == sl_pack_bytes(plain));
                for (size_t ki = 0; ki < sizeof n_toks / sizeof n_toks[0]; ki++) {
                    int64_t nt = n_toks[ki];
                    size_t yb = sizeof(float) * (size_t)(p.n_out * nt);
                    float *y0 = malloc(yb), *y = malloc(yb);
                    sl_pool_set_threads(1);
                    sl_matmul_packed(type, p.w, plain, p.n_out, p.n_in, p.x, nt, y0, p.n_out);
                    for (int threads = 1; threads <= 3; threads++)
                        for (int steal = 0; steal <= 1; steal++) {
                            sl_pool_set_threads(threads);
                            sl_matmul_set_steal(steal);
                            for (int64_t o = 0; o < p.n_out * nt; o++)
                                y[o] = NAN;
                            sl_matmul_packed(type, p.w, cut, p.n_out, p.n_in, p.x, nt, y, p.n_out);
                            if (memcmp(y, y0, yb) != 0) {
                                bad++;
                                fprintf(stderr, "sliced: %s %lld x %lld, %lld tokens, %d threads, steal %d: bits differ\n",
                                        sl_type_name(type), (long long)p.n_out, (long long)p.n_in,
                                        (long long)nt, threads, steal);
                            }
                        }
                    free(y0);
                    free(y);
                }
                sl_pack_free(plain);
                sl_pack_free(cut);
                problem_free(&p);
            }
    }
    CHECKF(bad == 0, "sliced: %d runs differ from the unsliced copy", bad);
    CHECK(sliced == 20);
    /* Q4_1 is never sliced; 1152-wide Q8_0 (gate/up) not at the default */
    problem p;
    problem_make(&p, SL_TYPE_Q4_1, 16, 70 * 32);
    sl_r16_set_slice_bytes(1024);
    void *q41 = sl_pack(p.type, p.w, p.n_out, p.n_in);
    sl_r16_set_slice_bytes(-1);
    CHECK(!q41 || sl_pack_slice_blocks(q41) == 70);
    sl_pack_free(q41);
    problem_free(&p);
    /* the defaults: Gemma 3 1B's Q4_0 down projection sliced, its 1152-wide
     * rows not, the other types not */
    CHECK(sl_r16_slice_blocks(SL_TYPE_Q4_0, 6912) == 32);
    CHECK(sl_r16_slice_blocks(SL_TYPE_Q4_0, 1152) == 36);
    CHECK(sl_r16_slice_blocks(SL_TYPE_Q8_0, 6912) == 216);
    CHECK(sl_r16_slice_blocks(SL_TYPE_Q6_K, 6912) == 216);
    sl_matmul_set_steal(-1);
    sl_pool_set_min_work(-1);
    sl_pool_set_adaptive(true);
    sl_pool_set_threads(1);
}

typedef struct index_args {
    _Atomic int seen[4]; /* chunks run by each thread index */
} index_args;

static void index_range(void *arg, int64_t i0, int64_t i1)
{
    index_args *a = arg;
    int t = sl_pool_thread_index();
    atomic_fetch_add(&a->seen[t < 3 ? t : 3], (int)(i1 - i0));
}

typedef struct hint_args {
    index_args ia;
    int caller;
    const problem *p;
    const void *packed;
    float *y;
} hint_args;

/* Prefetch hints in a region (the workers take theirs while they wait for
 * the next op, the caller at its barriers) between decode-split matmuls:
 * the same bits as without. */
static void hint_region(void *arg)
{
    hint_args *h = arg;
    const problem *p = h->p;
    h->caller = sl_pool_thread_index();
    sl_mm_job j = {p->type, p->w, h->packed, p->n_out, h->y, p->n_out};
    for (int r = 0; r < 3; r++) {
        sl_matmul_prefetch(&j, 1, p->n_in, 1);
        sl_pool_for(64, 1, index_range, &h->ia); /* an op between */
        sl_matmul_packed(p->type, p->w, h->packed, p->n_out, p->n_in, p->x, 1,
                         h->y + (size_t)r * (size_t)p->n_out, p->n_out);
    }
    /* a span of another buffer than the call reads: still the same bits */
    sl_pool_span sp[2] = {{p->w, 4096}, {h->packed, 4096}};
    sl_pool_prefetch(sp, 2);
    sl_matmul_packed(p->type, p->w, h->packed, p->n_out, p->n_in, p->x, 1,
                     h->y + (size_t)3 * (size_t)p->n_out, p->n_out);
}

/* The thread indices a decode split hands its parts by (the caller 0, the
 * workers from 1), and prefetch hints leaving results alone. */
static void test_prefetch_hint(void)
{
    sl_path_force(sl_path_best());
    sl_pool_set_adaptive(false);
    sl_pool_set_min_work(0);
    sl_matmul_set_prefetch(64 << 10);
    CHECK(sl_pool_thread_index() == 0);
    problem p;
    problem_make(&p, SL_TYPE_Q4_0, 1000, 256);
    void *packed = sl_pack(p.type, p.w, p.n_out, p.n_in);
    size_t yb = sizeof(float) * (size_t)p.n_out;
    float *y1 = malloc(yb), *y = malloc(yb * 4);
    sl_pool_set_threads(1);
    sl_matmul_packed(p.type, p.w, packed, p.n_out, p.n_in, p.x, 1, y1, p.n_out);
    for (int threads = 2; threads <= 3; threads++) {
        sl_pool_set_threads(threads);
        hint_args h = {.p = &p, .packed = packed, .y = y, .caller = -1};
        for (int i = 0; i < 4; i++)
            atomic_init(&h.ia.seen[i], 0);
        for (int64_t o = 0; o < p.n_out * 4; o++)
            y[o] = NAN;
        sl_pool_region(hint_region, &h);
        CHECK(h.caller == 0);
        int total = 0;
        for (int i = 0; i < 4; i++)
            total += atomic_load(&h.ia.seen[i]);
        /* every chunk ran on an index of the team, none past it */
        CHECK(total == 3 * 64 && atomic_load(&h.ia.seen[3]) == 0);
        CHECK(threads == 3 || atomic_load(&h.ia.seen[2]) == 0);
        for (int r = 0; r < 4; r++)
            CHECKF(memcmp(y + (size_t)r * (size_t)p.n_out, y1, yb) == 0,
                   "prefetch hint: %d threads, call %d: bits differ", threads, r);
    }
    free(y1);
    free(y);
    sl_pack_free(packed);
    problem_free(&p);
    sl_matmul_set_prefetch(-1);
    sl_pool_set_min_work(-1);
    sl_pool_set_adaptive(true);
    sl_pool_set_threads(1);
}

/* y of p's first token through a packed copy. */
static void packed_y(const problem *p, const void *packed, float *y)
{
    sl_matmul_packed(p->type, p->w, packed, p->n_out, p->n_in, p->x, 1, y, p->n_out);
}

/* Packed copies share 2 MB-aligned slabs (kernels/matmul.c): copies do not
 * overlap, each is 64-byte aligned, freeing one leaves the others' bytes
 * alone, a freed place is not handed out while a neighbour lives on, and a
 * copy larger than a slab gets a slab of its own starting on 2 MB. */
static void test_pack_arena(void)
{
    sl_path_force(sl_path_best());
    problem p;
    problem_make(&p, SL_TYPE_Q4_0, 48, 11 * 32);
    void *a = sl_pack(p.type, p.w, p.n_out, p.n_in);
    if (!a) { /* no packed layout on this CPU */
        problem_free(&p);
        return;
    }
    void *b = sl_pack(p.type, p.w, p.n_out, p.n_in);
    void *c = sl_pack(p.type, p.w, p.n_out, p.n_in);
    size_t data = (size_t)p.n_out * sl_row_bytes(p.type, p.n_in); /* Q4_0 packs to its size */
    void *all[3] = {a, b, c};
    for (int i = 0; i < 3; i++) {
        CHECK(all[i] != NULL && (uintptr_t)all[i] % 64 == 0);
        CHECK(sl_pack_bytes(all[i]) >= data);
        for (int j = 0; j < 3; j++) {
            const uint8_t *u = all[i], *v = all[j];
            CHECK(i == j || u + data <= v || v + data <= u);
        }
    }
    float ya[48], yc[48], y2[48];
    packed_y(&p, a, ya);
    packed_y(&p, c, yc);
    CHECK(memcmp(ya, yc, sizeof ya) == 0);
    sl_pack_free(b);
    void *d = sl_pack(p.type, p.w, p.n_out, p.n_in);
    CHECK(d != NULL && d != a && d != c);
    packed_y(&p, a, y2);
    CHECK(memcmp(ya, y2, sizeof ya) == 0);
    packed_y(&p, d, y2);
    CHECK(memcmp(ya, y2, sizeof ya) == 0);
    sl_pack_free(a);
    packed_y(&p, c, y2);
    CHECK(memcmp(ya, y2, sizeof ya) == 0);
    sl_pack_free(c);
    sl_pack_free(d);
    problem_free(&p);

    /* 80 MB of Q8_0 zeros: more than a slab */
    int64_t n_in = 1024, n_out = 16 * 4096;
    size_t rb = sl_row_bytes(SL_TYPE_Q8_0, n_in);
    uint8_t *w = calloc((size_t)n_out, rb);
    float *x = calloc((size_t)n_in, sizeof *x), *y = malloc(sizeof(float) * (size_t)n_out);
    CHECK(w && x && y);
    void *big = sl_pack(SL_TYPE_Q8_0, w, n_out, n_in);
    void *small = sl_pack(SL_TYPE_Q8_0, w, 16, n_in);
    CHECK(big && small && (uintptr_t)big % 64 == 0);
    CHECK(((uintptr_t)big - 128) % ((uintptr_t)2 << 20) == 0); /* slab header, copy header */
    CHECK(sl_pack_bytes(big) >= (size_t)n_out * rb);
    x[0] = 1;
    sl_matmul_packed(SL_TYPE_Q8_0, w, big, n_out, n_in, x, 1, y, n_out);
    CHECK(y[0] == 0 && y[n_out - 1] == 0);
    sl_pack_free(big);
    sl_pack_free(small);
    free(w);
    free(x);
    free(y);
}

/* AMX (kernels/matmul_amx.c) against the VNNI kernels it must match bit for
 * bit, and both against the scalar reference within check_path's bound, on
 * token counts with and without a remainder of 16, more tokens than it parks
 * at once (128) and more blocks than it unpacks at once (64). */
static void check_amx_case(sl_type type, int64_t n_out, int64_t n_in, int64_t n_tok)
{
    problem p;
    problem_make(&p, type, n_out, n_in);
    float *x = malloc(sizeof(float) * (size_t)(n_tok * n_in));
    for (int64_t i = 0; i < n_tok * n_in; i++)
        x[i] = rnd_sym();
    size_t ybytes = sizeof(float) * (size_t)(n_tok * n_out);
    float *y_amx = malloc(ybytes), *y_vnni = malloc(ybytes), *y_ref = malloc(ybytes);
    void *packed = sl_pack(type, p.w, n_out, n_in);
    CHECK(packed != NULL);
    CHECK(sl_matmul_amx_force(true));
    sl_matmul_packed(type, p.w, packed, n_out, n_in, x, n_tok, y_amx, n_out);
    sl_matmul_amx_force(false);
    sl_matmul_packed(type, p.w, packed, n_out, n_in, x, n_tok, y_vnni, n_out);
    sl_matmul_ref(type, p.w, n_out, n_in, x, n_tok, y_ref, n_out);
    double *xq = malloc(sizeof(double) * (size_t)n_in);
    int bad = 0;
    for (int64_t t = 0; t < n_tok; t++) {
        quantize_acts(x + t * n_in, xq, n_in);
        for (int64_t o = 0; o < n_out; o++) {
            double dot = 0, absdot = 0;
            for (int64_t i = 0; i < n_in; i++) {
                double prod = (double)p.wd[o * n_in + i] * xq[i];
                dot += prod;
                absdot += fabs(prod);
            }
            double tol = (double)(n_in + 8) * 0x1p-24 * absdot + 1e-37 + 0x1p-24 * fabs(dot);
            bad += !(fabs(y_amx[t * n_out + o] - y_ref[t * n_out + o]) <= tol);
        }
    }
    CHECKF(memcmp(y_amx, y_vnni, ybytes) == 0 && bad == 0,
           "amx %s %lldx%lld n_tok %lld: %s the VNNI kernel's bits, %d off the ref",
           sl_type_name(type), (long long)n_out, (long long)n_in, (long long)n_tok,
           memcmp(y_amx, y_vnni, ybytes) == 0 ? "has" : "differs from", bad);
    /* threads split rows and token blocks only */
    CHECK(sl_matmul_amx_force(true));
    sl_pool_set_adaptive(false);
    for (int threads = 1; threads <= 3; threads++) {
        sl_pool_set_threads(threads);
        sl_matmul_packed(type, p.w, packed, n_out, n_in, x, n_tok, y_vnni, n_out);
        CHECKF(memcmp(y_amx, y_vnni, ybytes) == 0, "amx %s: %d threads change bits",
               sl_type_name(type), threads);
    }
    sl_pool_set_adaptive(true);
    sl_pack_free(packed);
    free(xq);
    free(x);
    free(y_amx);
    free(y_vnni);
    free(y_ref);
    problem_free(&p);
}

static void test_amx(void)
{
    CHECK(sl_path_force(sl_path_best()) == 0);
    if (!sl_matmul_amx_force(true)) {
        fprintf(stderr, "test_amx: skipped: this CPU or kernel offers no AMX int8 tiles\n");
        CHECK(!sl_matmul_amx_active());
        CHECK(sl_probe_amx_peak(1, 0.01) == 0);
        return;
    }
    static const sl_type types[] = {SL_TYPE_Q8_0, SL_TYPE_Q4_0, SL_TYPE_Q5_0,
                                    SL_TYPE_Q4_1, SL_TYPE_Q5_1, SL_TYPE_Q4_K};
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        bool k = sl_type_block_elems(types[ti]) == 256;
        check_amx_case(types[ti], 33, k ? 3 * 256 : 11 * 32, 16);
        check_amx_case(types[ti], 48, k ? 9 * 256 : 67 * 32, 37);
        check_amx_case(types[ti], 17, k ? 256 : 32, 150);
    }
    CHECK(sl_probe_amx_peak(2, 0.01) > 0); /* the calibration loop runs (its speed: bench) */
    /* an AVX2 run takes no AMX */
    CHECK(sl_path_force(SL_PATH_AVX2) == 0);
    CHECK(!sl_matmul_amx_active());
    CHECK(sl_path_force(sl_path_best()) == 0);
    CHECK(sl_matmul_amx_active());
}

/* The bandwidth probe's vector read loop folds every word (a word changed
 * anywhere changes its result as the scalar fold's would), and the probe
 * keeps one figure per timed pass, the fastest no slower than the median. */
static void test_bw_probe(void)
{
    size_t words = 4096 / 8 * 3;
    uint64_t *buf = aligned_alloc(64, words * 8);
    CHECK(buf != NULL);
    if (!buf)
        return;
    for (size_t i = 0; i < words; i++)
        buf[i] = (uint64_t)i * 0x9E3779B97F4A7C15ull;
    if (sl_cpu()->avx512f && sl_cpu()->os_avx512) {
        uint64_t lanes[8] = {0};
        for (size_t i = 0; i < words; i++)
            lanes[i % 8] ^= buf[i];
        uint64_t want = 0;
        for (int l = 0; l < 8; l++)
            want += lanes[l];
        CHECK(sl_probe_read_avx512(buf, words * 8) == want);
        buf[words - 1] ^= 1u << 20;
        CHECK(sl_probe_read_avx512(buf, words * 8) != want);
    }
    free(buf);
    sl_bw_probe *p = sl_bw_probe_open((size_t)4 << 20);
    CHECK(p != NULL);
    if (!p)
        return;
    CHECK(sl_bw_probe_passes(p) == 0 && sl_bw_probe_best(p) == 0);
    sl_bw_probe_run(p, 3);
    sl_bw_probe_run(p, 2);
    CHECK(sl_bw_probe_passes(p) == 5);
    CHECK(sl_bw_probe_median(p) > 0 && sl_bw_probe_best(p) >= sl_bw_probe_median(p));
    sl_bw_probe_close(p);
}

/* SLUICE_NO_AMX=1 (read once) turns AMX off; exit status: whether it is on. */
static int child_amx_active(const char *no_amx)
{
    pid_t pid = fork();
    if (pid == 0) {
        if (no_amx)
            setenv("SLUICE_NO_AMX", no_amx, 1);
        else
            unsetenv("SLUICE_NO_AMX");
        _exit(sl_matmul_amx_active() ? 1 : 0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Activation quantisation gives the same bytes on every path, including on
 * blocks of zeros, exact half steps, NaN and infinity. */
static void test_q8act_paths(void)
{
    enum { N_IN = 32 * 9 };
    float x[N_IN];
    for (int i = 0; i < N_IN; i++)
        x[i] = rnd_sym() * (i < 64 ? 1e-3f : 3.0f);
    for (int i = 64; i < 96; i++)
        x[i] = 0.0f;                               /* block 2: all zero */
    for (int i = 96; i < 128; i++)
        x[i] = (float)(i - 112) * 0.5f;            /* block 3: ties at .5 after scaling */
    x[96] = 127.0f * 0.5f;
    x[140] = NAN;                                  /* block 4 */
    x[200] = -INFINITY;                            /* block 6 */
    size_t bytes = sl_q8act_bytes(1, N_IN);
    void *m_ref = calloc(1, bytes), *m_got = calloc(1, bytes);
    sl_q8act ref, got;
    sl_q8act_init(&ref, m_ref, 1, N_IN);
    sl_q8act_init(&got, m_got, 1, N_IN);
    CHECK(sl_path_force(SL_PATH_SCALAR) == 0);
    sl_q8act_quantize(&ref, 0, x);
    CHECK(ref.q[64] == 0 && ref.d[2] == 0.0f);
    CHECK(isnan(ref.d[4]) && ref.q[140] == 0 && isnan(ref.d[6]));
    for (int path = 1; path <= (int)sl_path_best(); path++) {
        CHECK(sl_path_force((sl_path)path) == 0);
        memset(m_got, 0, bytes);
        sl_q8act_init(&got, m_got, 1, N_IN);
        sl_q8act_quantize(&got, 0, x);
        CHECKF(memcmp(got.q, ref.q, N_IN) == 0 && memcmp(got.s4, ref.s4, N_IN) == 0 &&
                   memcmp(got.s16, ref.s16, N_IN / 4) == 0 && memcmp(got.sum, ref.sum, 9 * 4) == 0 &&
                   memcmp(got.d, ref.d, 9 * 4) == 0 && memcmp(got.ds, ref.ds, 9 * 4) == 0,
               "activation quantisation on %s differs from scalar", sl_path_name((sl_path)path));
    }
    /* a row quantised in runs of blocks from their own floats: the same
     * bytes on every path */
    static const int cuts[] = {0, 2, 3, 8, 9};
    for (int path = 0; path <= (int)sl_path_best(); path++) {
        CHECK(sl_path_force((sl_path)path) == 0);
        memset(m_got, 0, bytes);
        sl_q8act_init(&got, m_got, 1, N_IN);
        for (int c = 0; c + 1 < (int)(sizeof cuts / sizeof cuts[0]); c++) {
            float piece[N_IN];
            memcpy(piece, x + 32 * cuts[c], sizeof(float) * 32 * (size_t)(cuts[c + 1] - cuts[c]));
            sl_q8act_quantize_blocks(&got, 0, cuts[c], cuts[c + 1], piece);
        }
        CHECKF(memcmp(got.q, ref.q, N_IN) == 0 && memcmp(got.s4, ref.s4, N_IN) == 0 &&
                   memcmp(got.s16, ref.s16, N_IN / 4) == 0 && memcmp(got.sum, ref.sum, 9 * 4) == 0 &&
                   memcmp(got.d, ref.d, 9 * 4) == 0 && memcmp(got.ds, ref.ds, 9 * 4) == 0,
               "activation quantisation in runs of blocks on %s differs", sl_path_name((sl_path)path));
    }
    sl_path_force(sl_path_best());
    free(m_ref);
    free(m_got);
}

static void test_path_control(void)
{
    sl_path best = sl_path_best();
    CHECK(sl_path_force(SL_PATH_SCALAR) == 0);
    CHECK(sl_path_active() == SL_PATH_SCALAR);
    CHECK(strcmp(sl_matmul_path_name(SL_TYPE_F32), "scalar") == 0);
    CHECK(strcmp(sl_matmul_path_name(SL_TYPE_Q4_K), "scalar/q8") == 0);
    sl_act_force(SL_ACTQ_F32);
    CHECK(strcmp(sl_matmul_path_name(SL_TYPE_Q4_K), "scalar") == 0);
    sl_act_force(SL_ACTQ_Q8);
    CHECK(sl_path_force(best) == 0);
    CHECK(sl_path_active() == best);
    CHECK(strcmp(sl_matmul_path_name(SL_TYPE_F16), sl_path_name(best)) == 0);
    if (best == SL_PATH_AVX512 && sl_cpu()->avx512bf16)
        CHECK(strcmp(sl_matmul_path_name(SL_TYPE_BF16), "avx512-bf16/bf16") == 0);
    if (best == SL_PATH_AVX512 && sl_cpu()->avx512vnni)
        CHECK(strcmp(sl_matmul_path_name(SL_TYPE_Q4_0), "avx512-vnni/q8") == 0);
    CHECK(sl_path_force(SL_PATH_COUNT_) == -1);
    if (best < SL_PATH_AVX512)
        CHECK(sl_path_force(SL_PATH_AVX512) == -1);
    const sl_cpu_features *f = sl_cpu();
    if (best == SL_PATH_AVX512)
        CHECK(f->avx512f && f->avx512bw && f->os_avx512 && f->avx2 && f->fma);
    if (best >= SL_PATH_AVX2)
        CHECK(f->avx2 && f->fma && f->f16c && f->os_avx);
    fprintf(stderr, "best path %s\n", sl_path_name(best));
}

/* SLUICE_KERNEL is read once per process, so each setting runs in a child
 * forked before this process looks at the CPU. Exit status: the active path. */
static int child_active_path(const char *env)
{
    pid_t pid = fork();
    if (pid == 0) {
        setenv("SLUICE_KERNEL", env, 1);
        if (!freopen("/dev/null", "w", stderr)) /* the warnings are expected */
            _exit(100);
        _exit((int)sl_path_active());
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void test_env_kernel(int *scalar, int *avx2, int *bogus)
{
    *scalar = child_active_path("scalar");
    *avx2 = child_active_path("avx2");
    *bogus = child_active_path("sse9");
}

/* sl_matmul_glu: the rows act(gate) * up made as the activations are
 * prepared give the bits of the activation on every row and then
 * sl_matmul_packed: packed integer types (made and quantised a piece at a
 * time, rows of more than one piece, gate left as it was), float types and
 * float activations (the rows made into gate in place), batches of 2 and 5
 * (made and quantised by (token, piece) units over the threads), 29 and a
 * prefill's 64 tokens (by tokens; the two-group tiles), 1 and 3 threads,
 * both activations, the scalar path and the best. */
static void test_glu(void)
{
    static const sl_type types[] = {SL_TYPE_Q4_0, SL_TYPE_Q8_0, SL_TYPE_Q5_0, SL_TYPE_Q4_K,
                                    SL_TYPE_Q6_K, SL_TYPE_F32, SL_TYPE_BF16};
    static const int64_t n_toks[] = {2, 5, 29, 64};
    const int64_t n_out = 48, n_tok_max = 64;
    sl_pool_set_adaptive(false);
    for (int pass = 0; pass < 3; pass++) {
        /* 0: the best path; 1: the scalar path; 2: float activations */
        sl_path_force(pass == 1 ? SL_PATH_SCALAR : sl_path_best());
        sl_act_force(pass == 2 ? SL_ACTQ_F32 : SL_ACTQ_Q8);
        for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
            /* 23 blocks of 32, 3 of 256: a 512-float piece and a shorter one */
            int64_t n_in = sl_type_block_elems(types[ti]) == 256 ? 3 * 256 : 23 * 32;
            bool int_path = pass != 2 && types[ti] != SL_TYPE_F32 && types[ti] != SL_TYPE_BF16;
            problem p;
            problem_make(&p, types[ti], n_out, n_in);
            void *packed = sl_pack(p.type, p.w, n_out, n_in);
            size_t xbytes = sizeof(float) * (size_t)(n_tok_max * n_in);
            size_t ybytes = sizeof(float) * (size_t)(n_tok_max * n_out);
            float *gate = malloc(xbytes), *up = malloc(xbytes), *rows = malloc(xbytes);
            float *y_want = malloc(ybytes), *y_got = malloc(ybytes), *g = malloc(xbytes);
            for (int64_t i = 0; i < n_tok_max * n_in; i++) {
                gate[i] = 3 * rnd_sym();
                up[i] = rnd_sym();
            }
            for (int act = 0; act < 2; act++) {
                sl_glu_fn glu = act ? sl_silu_mul_to : sl_gelu_tanh_mul_to;
                for (size_t k = 0; k < sizeof n_toks / sizeof n_toks[0]; k++) {
                    int64_t n_tok = n_toks[k];
                    size_t row_bytes = sizeof(float) * (size_t)(n_tok * n_in);
                    memcpy(rows, gate, xbytes);
                    for (int64_t t = 0; t < n_tok; t++)
                        (act ? sl_silu_mul : sl_gelu_tanh_mul)(rows + t * n_in, up + t * n_in,
                                                               n_in);
                    sl_pool_set_threads(1);
                    sl_matmul_packed(p.type, p.w, packed, n_out, n_in, rows, n_tok, y_want, n_out);
                    for (int threads = 1; threads <= 3; threads += 2) {
                        sl_pool_set_threads(threads);
                        memcpy(g, gate, xbytes);
                        memset(y_got, 0, ybytes);
                        sl_matmul_glu(p.type, p.w, packed, n_out, n_in, g, up, glu, n_tok, y_got,
                                      n_out);
                        bool g_ok = memcmp(g, int_path ? gate : rows, row_bytes) == 0;
                        bool y_ok = memcmp(y_got, y_want, sizeof(float) * (size_t)(n_tok * n_out)) == 0;
                        CHECKF(g_ok && y_ok, "glu pass %d %s act %d %lld tokens %d threads: %s differ",
                               pass, sl_type_name(p.type), act, (long long)n_tok, threads,
                               g_ok ? "outputs" : "gate's rows");
                    }
                }
            }
            free(gate);
            free(up);
            free(rows);
            free(y_want);
            free(y_got);
            free(g);
            sl_pack_free(packed);
            problem_free(&p);
        }
    }
    sl_act_force(SL_ACTQ_Q8);
    sl_path_force(sl_path_best());
    sl_pool_set_adaptive(true);
}

int main(void)
{
    int env_scalar, env_avx2, env_bogus;
    test_env_kernel(&env_scalar, &env_avx2, &env_bogus);
    sl_path best = sl_path_best();
    CHECK(env_scalar == SL_PATH_SCALAR);
    CHECK(env_avx2 == (best < SL_PATH_AVX2 ? (int)best : SL_PATH_AVX2));
    CHECK(env_bogus == (int)best);
    int amx_default = child_amx_active(NULL), amx_off = child_amx_active("1");
    CHECK(amx_off == 0);
    CHECK(amx_default == (sl_matmul_amx_force(true) ? 1 : 0));
    sl_matmul_amx_force(amx_default == 1);
    test_path_control();
    for (int act = SL_ACTQ_Q8; act <= SL_ACTQ_F32; act++) {
        sl_act_force((sl_actq)act);
        test_against_oracles();
        test_determinism();
    }
    sl_act_force(SL_ACTQ_Q8);
    test_packed();
    test_one_token();
    test_decode_split();
    test_sliced();
    test_prefetch_hint();
    test_glu();
    test_pack_arena();
    test_q8act_paths();
    test_amx();
    test_bw_probe();
    return test_finish("test_matmul");
}
