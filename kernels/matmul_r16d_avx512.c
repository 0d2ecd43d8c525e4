/* One token (a decode step) on the 16-row packed weights of
 * matmul_r16_avx512.c, in fewer instructions a byte than the one-group tile
 * of any token count:
 * - the token's 4 activation quants reach vpdpbusd as an embedded broadcast
 *   of its memory operand ({1to16}, inline assembly: gcc 12 issues a
 *   vpbroadcastd for every one);
 * - Q4_0's high nibbles are taken as they lie (v & 0xF0, 16 times the
 *   nibble) into a chain of their own, shifted down once a block (exact:
 *   every term is a multiple of 16), instead of a shift and a mask each.
 * Each lane's float operations are the one-group tile's, in its order and
 * on the same values (scale = weight scale * activation scale, the block's
 * exact integer dot converted, one FMA into the accumulator); only the
 * integer sums are formed in another order, and those are exact. So the
 * bits are the other tiles' at any split, thread count and batch.
 *
 * What it bought, measured on the 2-vCPU AMD EPYC (Zen 5) machine, one
 * thread calling the kernels directly on 1152-wide Q4_0 (no hardware
 * counters there: speed only): in L2 about the same (81-82 GB/s against
 * 82-83), from memory (256 MB in huge pages) 27.5-28.5 GB/s against
 * 26.7-27.6, where a plain 64-byte vector read streamed 31-33; two
 * threads each streaming half of 256 MB, Q4_0 53.2 GB/s against 51.7
 * (plain read 61.1), Q8_0 77.4 against 75.1 (plain 76.5); sluice bench
 * decode, synth Gemma 3 1B at 2 threads, paired runs: Q8_0 45.1-45.7
 * tok/s against 42.9-44.4, Q4_0 within the noise (71.7-78.8 against
 * 71.7-78.5). So the instruction count a cache line is not what holds a
 * decode step's streaming back, and Q8_0's kernel already streams at the
 * plain read's rate at 2 threads. Two groups side by side (one broadcast feeding both, half
 * the loop overhead) ran faster in L2 (94 GB/s) but streamed slower from
 * memory (16.4 GB/s: two streams 10 KB apart), so the groups go one after
 * another, one sequential stream.
 *
 * Q5_0, Q4_K and Q6_K (llama.cpp's Q4_K_M mix: Q5_0 for the 1152-wide
 * rows, Q4_K/Q6_K for the 6912-wide down rows) have kernels of their own on
 * the same plan: Q5_0 as Q4_0 with the fifth bits' masked adds; Q4_K's high
 * nibbles unshifted as Q4_0's; Q6_K's 16 run sums of a superblock held in
 * registers at once, so each 2-bit vector and each nibble vector is loaded
 * and split once for the 4 dwords it serves (the one-group tile reloads the
 * 2-bit vector for each), with the float steps then run by run in the
 * tile's order. All but Q8_0 ask for their weights 8 KB ahead into L1
 * (R16D_PF_*, measured there). Q4_0 and Q5_0 run in a lean form
 * (R16D_LEAN): the lanes' starts made once a call, stepped pointers, two
 * blocks a step; the same operations on the same values. */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "kernels/matmul_internal.h"

#define R16D_INLINE static inline __attribute__((always_inline))
#define R16D_UNROLL _Pragma("GCC unroll 16")

/* How far ahead (bytes) each type's one-token kernel asks for its weights,
 * 0 for not at all, and into which cache (R16D_PF_HINT_*: _MM_HINT_T0 for
 * L1, _MM_HINT_T1 for L2). Each can be set from outside (-D) for a sweep
 * (bench/stream_cost.sh builds this file once per setting and runs the
 * settings paired); the values here are what that sweep chose.
 *
 * Measured on the 2-vCPU AMD EPYC (Zen 5), two threads each streaming half
 * of a 96 MB matrix (Q4_0, Q8_0, Q5_0 1152 wide; Q4_K, Q6_K 6912 wide), the
 * kernels called directly, 61-101 paired rounds, GB/s of weights best /
 * median, none -> 8 KB ahead into L1 (plain read of the same bytes), on a
 * quiet machine: Q4_0 80 / 64 -> 93 / 74 (100 / 77; 12 KB 102 / 79, and
 * in a second sweep 72 / 60 -> 87 / 64, 12-16 KB 81-83 / 65), Q8_0 86 / 66
 * -> 94 / 69 (96 / 73; a second sweep 57 / 51 -> 61 / 51, 2-16 KB level
 * with none), Q5_0 60 / 49 -> 79 / 63 (86 / 71), Q4_K 70 / 63 -> 94 / 83
 * (85 / 75), Q6_K 29 / 28 -> 65 / 42 (64 / 45): without it the kernels
 * stay 10-30% (Q6_K: half) short of the plain read, with it they reach
 * it. 1-4 KB gained less, 12-24 KB about as much; into L2 (4-16 KB)
 * gained less than into L1 for every type. With the host's memory busy
 * (a plain read at 31-70 GB/s) every kernel streamed at the read's rate
 * with or without it, Q6_K excepted (24 -> 34), and Q4_0 and Q8_0 lost
 * 3-6% of their median with it. Q8_0 (the fewest instructions a byte)
 * gained the least and lost in the busy run, so it stays without. */
#ifndef R16D_PF_Q4_0
#define R16D_PF_Q4_0 8192
#endif
#ifndef R16D_PF_Q8_0
#define R16D_PF_Q8_0 0
#endif
#ifndef R16D_PF_Q5_0
#define R16D_PF_Q5_0 8192
#endif
#ifndef R16D_PF_Q4_K
#define R16D_PF_Q4_K 8192
#endif
#ifndef R16D_PF_Q6_K
#define R16D_PF_Q6_K 8192
#endif
#ifndef R16D_PF_HINT_Q4_0
#define R16D_PF_HINT_Q4_0 _MM_HINT_T0
#endif
#ifndef R16D_PF_HINT_Q8_0
#define R16D_PF_HINT_Q8_0 _MM_HINT_T0
#endif
#ifndef R16D_PF_HINT_Q5_0
#define R16D_PF_HINT_Q5_0 _MM_HINT_T0
#endif
#ifndef R16D_PF_HINT_Q4_K
#define R16D_PF_HINT_Q4_K _MM_HINT_T0
#endif
#ifndef R16D_PF_HINT_Q6_K
#define R16D_PF_HINT_Q6_K _MM_HINT_T0
#endif

/* Asks for the lines of [p + dist, + bytes) into the cache of hint; nothing
 * when dist is 0. */
#define d_prefetch(p, bytes, dist, hint)                                                      \
    do {                                                                                      \
        if ((dist) > 0) {                                                                     \
            R16D_UNROLL                                                                       \
            for (int i_ = 0; i_ < (bytes); i_ += 64)                                          \
                _mm_prefetch((const char *)(p) + (dist) + i_, (hint));                        \
        }                                                                                     \
    } while (0)

/* acc + the dot of each lane's 4 unsigned weight bytes in w with the 4
 * signed activation quants at q, broadcast from memory. */
R16D_INLINE __m512i d_dp(__m512i acc, __m512i w, const int8_t *q)
{
    __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*(const int8_t(*)[4])q));
    return acc;
}

/* The lanes' start: 0, or y when a carries the sums of the slices before
 * (a sliced packed copy). */
R16D_INLINE __m512 d_start(const sl_q8act *a, const float *y)
{
    return a->carry ? _mm512_loadu_ps(y) : _mm512_setzero_ps();
}

/* The 16 rows' f16 scales at p times the activation scale at da, the
 * product the one-group tiles form. */
R16D_INLINE __m512 d_scale(const uint8_t *p, const float *da)
{
    return _mm512_mul_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)), _mm512_set1_ps(*da));
}

/* One Q4_0 block at p against the activation quants q, scale d and lane
 * start st (-8 times the block's activation sum): the low nibbles masked,
 * the high ones as 16 times their value (no shift) in a chain of their
 * own. */
R16D_INLINE __m512 q4_0_lean_block(const uint8_t *p, const int8_t *q, const float *d,
                                   const int32_t *st, __m512 acc)
{
    const __m512i m4 = _mm512_set1_epi8(15), m4h = _mm512_set1_epi8((char)0xF0);
    __m512 sc = d_scale(p, d);
    __m512i lo = _mm512_set1_epi32(*st), hi = _mm512_setzero_si512();
    R16D_UNROLL
    for (int k = 0; k < 4; k++) {
        __m512i v = _mm512_loadu_si512(p + 32 + 64 * k);
        lo = d_dp(lo, _mm512_and_si512(v, m4), q + 4 * k);
        hi = d_dp(hi, _mm512_and_si512(v, m4h), q + 16 + 4 * k);
    }
    __m512i i = _mm512_add_epi32(lo, _mm512_srai_epi32(hi, 4));
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), sc, acc);
}

/* The plain Q4_0 kernel: a block at a time, its lane start made as it
 * goes (the lean form's blocks: the same operations). */
R16D_INLINE void one_q4_0(const uint8_t *p, const sl_q8act *a, float *y)
{
    __m512 acc = d_start(a, y);
    for (int64_t b = 0; b < a->n_blocks; b++, p += SL_R16_Q4_0_BYTES) {
        d_prefetch(p, SL_R16_Q4_0_BYTES, R16D_PF_Q4_0, R16D_PF_HINT_Q4_0);
        int32_t st = -8 * a->sum[b];
        acc = q4_0_lean_block(p, a->q + 32 * b, a->d + b, &st, acc);
    }
    _mm512_storeu_ps(y, acc);
}

/* Q8_0: quants plus 128 as unsigned bytes, 128 times the activations' sum
 * taken off once a block. */
R16D_INLINE void one_q8_0(const uint8_t *p, const sl_q8act *a, float *y)
{
    __m512 acc = d_start(a, y);
    for (int64_t b = 0; b < a->n_blocks; b++, p += SL_R16_Q8_0_BYTES) {
        d_prefetch(p, SL_R16_Q8_0_BYTES, R16D_PF_Q8_0, R16D_PF_HINT_Q8_0);
        const int8_t *q = a->q + 32 * b;
        __m512 sc = d_scale(p, a->d + b);
        __m512i i0 = _mm512_set1_epi32(-128 * a->sum[b]), i1 = _mm512_setzero_si512();
        R16D_UNROLL
        for (int k = 0; k < 8; k += 2) {
            i0 = d_dp(i0, _mm512_loadu_si512(p + 32 + 64 * k), q + 4 * k);
            i1 = d_dp(i1, _mm512_loadu_si512(p + 32 + 64 * k + 64), q + 4 * k + 4);
        }
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(i0, i1)), sc, acc);
    }
    _mm512_storeu_ps(y, acc);
}

/* One Q5_0 block: Q4_0's nibbles with the fifth bits added as 16 under
 * the byte masks after them (the one-group tile's bytes); the lane start
 * st is -16 times the activations' block sum. */
R16D_INLINE __m512 q5_0_lean_block(const uint8_t *p, const int8_t *q, const float *d,
                                   const int32_t *st, __m512 acc)
{
    const __m512i m4 = _mm512_set1_epi8(15), b4 = _mm512_set1_epi8(16);
    const uint8_t *qs = p + 32, *hb = qs + 256;
    __m512 sc = d_scale(p, d);
    __m512i lo = _mm512_set1_epi32(*st), hi = _mm512_setzero_si512();
    R16D_UNROLL
    for (int k = 0; k < 4; k++) {
        __m512i v = _mm512_loadu_si512(qs + 64 * k);
        uint64_t ml, mh;
        memcpy(&ml, hb + 16 * k, 8);
        memcpy(&mh, hb + 16 * k + 8, 8);
        __m512i l = _mm512_and_si512(v, m4);
        __m512i h = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
        l = _mm512_mask_add_epi8(l, _cvtu64_mask64(ml), l, b4);
        h = _mm512_mask_add_epi8(h, _cvtu64_mask64(mh), h, b4);
        lo = d_dp(lo, l, q + 4 * k);
        hi = d_dp(hi, h, q + 16 + 4 * k);
    }
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(lo, hi)), sc, acc);
}

/* The plain Q5_0 kernel, as one_q4_0. */
R16D_INLINE void one_q5_0(const uint8_t *p, const sl_q8act *a, float *y)
{
    __m512 acc = d_start(a, y);
    for (int64_t b = 0; b < a->n_blocks; b++, p += SL_R16_Q5_0_BYTES) {
        d_prefetch(p, SL_R16_Q5_0_BYTES, R16D_PF_Q5_0, R16D_PF_HINT_Q5_0);
        int32_t st = -16 * a->sum[b];
        acc = q5_0_lean_block(p, a->q + 32 * b, a->d + b, &st, acc);
    }
    _mm512_storeu_ps(y, acc);
}

/* The lean form of a one-token kernel of 32-weight blocks (Q4_0, Q5_0):
 * the lanes' starts (the offset times each block's activation sum)
 * made once a call into st and loaded as a broadcast, where the plain
 * kernels form each with a scalar load, multiply and move into a vector;
 * pointers stepped instead of indexed; two blocks a step, with one prefetch
 * a line. The same operations on the same values, so the same bits; the
 * fewer instructions a block streamed faster from memory (see
 * R16D_LEAN). */
#define R16D_LEAN_ROW(type, TYPE)                                                             \
    R16D_INLINE void one_##type##_lean(const uint8_t *p, const sl_q8act *a, const int32_t *st, \
                                       float *y)                                              \
    {                                                                                         \
        __m512 acc = d_start(a, y);                                                     \
        const int8_t *q = a->q;                                                               \
        const float *d = a->d;                                                                \
        const int32_t *end = st + (a->n_blocks & ~(int64_t)1);                                \
        for (; st < end; st += 2, q += 64, d += 2, p += 2 * SL_R16_##TYPE##_BYTES) {          \
            d_prefetch(p, 2 * SL_R16_##TYPE##_BYTES, R16D_PF_##TYPE, R16D_PF_HINT_##TYPE);    \
            acc = type##_lean_block(p, q, d, st, acc);                                        \
            acc = type##_lean_block(p + SL_R16_##TYPE##_BYTES, q + 32, d + 1, st + 1, acc);   \
        }                                                                                     \
        if (a->n_blocks & 1) {                                                                \
            d_prefetch(p, SL_R16_##TYPE##_BYTES, R16D_PF_##TYPE, R16D_PF_HINT_##TYPE);        \
            acc = type##_lean_block(p, q, d, st, acc);                                        \
        }                                                                                     \
        _mm512_storeu_ps(y, acc);                                                             \
    }

/* R16D_LEAN 0 keeps the plain kernels (for a sweep). Measured on the
 * 2-vCPU AMD EPYC (Zen 5), bench/stream_cost.sh, two threads each streaming
 * half of a 256 MB matrix, two paired settings each, GB/s median plain ->
 * lean (plain read): Q4_0 1152 wide 55.8 / 55.6 -> 56.9 / 57.5 (64.4),
 * 6912 wide 46.5 / 46.6 -> 47.7 / 48.5 (65.5), Q8_0 90.9 / 91.6 -> 92.6 /
 * 93.1 (95.7), Q5_0 80.4 / 82.8 -> 87.5 / 85.4 (96.1); in L2 (1 MB) Q4_0
 * the same 163 GB/s (its limit there is its loads, below). sluice bench
 * decode of synth Gemma 3 1B at 2 threads, paired with the plain kernels
 * in one invocation (pairs of best of 3): Q4_0 +0.2-11%, 7 of 7 pairs,
 * llama.cpp's Q4_K_M mix (Q5_0 gate/up) +0.6-6.4%, 7 of 7 pairs (with Q8_0
 * lean as well). Q8_0's lean form streamed 2% faster alone but its decode
 * lost 6 of 10 pairs (-4% to +2.5%), so Q8_0 keeps its plain kernel (it
 * had the fewest instructions a block already).
 *
 * Tried and not kept: loading each nibble vector once into a register
 * (gcc folds the load into both masks, two vpandd with the same memory
 * operand) ran Q4_0 39% faster in L2 (163 -> 227 GB/s; Q5_0 +17%, Q4_K
 * +18%, Q6_K +26%) but the same from memory, and decode of Q4_0 lost to
 * the folded loads in 10 of 10 paired runs (3-10%): the separate loads are
 * more instructions a block, and from memory what counts is how many
 * blocks the core keeps in flight, not its load slots. */
#ifndef R16D_LEAN
#define R16D_LEAN 1
#endif
/* Blocks a row the lean kernels take (their lanes' starts on the stack);
 * a longer row goes through the plain kernel. */
#define R16D_LEAN_BLOCKS 1024

/* Groups [g0, g1) for the one token of a, lean where the row allows. */
#define R16D_LEAN_GROUPS(type, TYPE, offset)                                                  \
    R16D_LEAN_ROW(type, TYPE)                                                                 \
    static void one_groups_##type(const uint8_t *packed, int64_t g0, int64_t g1,              \
                                  const sl_q8act *a, float *y, int64_t ldy)                   \
    {                                                                                         \
        (void)ldy;                                                                            \
        size_t gb = sl_r16_group_bytes(SL_TYPE_##TYPE, a->n_in);                              \
        if (!R16D_LEAN || a->n_blocks > R16D_LEAN_BLOCKS) {                                   \
            for (int64_t g = g0; g < g1; g++)                                                 \
                one_##type(packed + (size_t)g * gb, a, y + 16 * g);                           \
            return;                                                                           \
        }                                                                                     \
        int32_t st[R16D_LEAN_BLOCKS];                                                         \
        for (int64_t b = 0; b < a->n_blocks; b++)                                             \
            st[b] = (offset) * a->sum[b];                                                     \
        for (int64_t g = g0; g < g1; g++)                                                     \
            one_##type##_lean(packed + (size_t)g * gb, a, st, y + 16 * g);                    \
    }

/* The 16 rows' scales or mins (bytes at p) as floats. */
R16D_INLINE __m512 d_u8_ps(const uint8_t *p)
{
    return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p)));
}

R16D_INLINE __m512 d_i8_ps(const uint8_t *p)
{
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
}

/* Q4_K: each pair of sub-blocks as Q4_0's two chains (the high nibbles as
 * 16 times their value, shifted down once), then the one-group tile's float
 * steps in its order: scale, min, scale, min. */
R16D_INLINE void one_q4_K(const uint8_t *p, const sl_q8act *a, float *y)
{
    __m512 acc = d_start(a, y);
    const __m512i m4 = _mm512_set1_epi8(15), m4h = _mm512_set1_epi8((char)0xF0);
    for (int64_t sb = 0; sb < a->n_blocks / 8; sb++, p += SL_R16_Q4_K_BYTES) {
        __m512 dv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
        __m512 dmv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + 32)));
        const uint8_t *sc = p + 64, *mn = p + 192, *qs = p + 320;
        const float *d = a->d + 8 * sb, *ds = a->ds + 8 * sb;
        for (int j = 0; j < 4; j++) {
            d_prefetch(p + j * (SL_R16_Q4_K_BYTES / 4), SL_R16_Q4_K_BYTES / 4, R16D_PF_Q4_K, R16D_PF_HINT_Q4_K);
            const int8_t *q = a->q + 256 * sb + 64 * j;
            __m512i lo = _mm512_setzero_si512(), hi = _mm512_setzero_si512();
            R16D_UNROLL
            for (int k = 0; k < 8; k++) {
                __m512i v = _mm512_loadu_si512(qs + (8 * j + k) * 64);
                lo = d_dp(lo, _mm512_and_si512(v, m4), q + 4 * k);
                hi = d_dp(hi, _mm512_and_si512(v, m4h), q + 32 + 4 * k);
            }
            hi = _mm512_srai_epi32(hi, 4);
            int s0 = 2 * j, s1 = 2 * j + 1;
            __m512 sc0 = _mm512_mul_ps(dv, d_u8_ps(sc + 16 * s0));
            __m512 sc1 = _mm512_mul_ps(dv, d_u8_ps(sc + 16 * s1));
            __m512 mn0 = _mm512_mul_ps(dmv, d_u8_ps(mn + 16 * s0));
            __m512 mn1 = _mm512_mul_ps(dmv, d_u8_ps(mn + 16 * s1));
            acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(lo), _mm512_mul_ps(sc0, _mm512_set1_ps(d[s0])), acc);
            acc = _mm512_fnmadd_ps(mn0, _mm512_set1_ps(ds[s0]), acc);
            acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(hi), _mm512_mul_ps(sc1, _mm512_set1_ps(d[s1])), acc);
            acc = _mm512_fnmadd_ps(mn1, _mm512_set1_ps(ds[s1]), acc);
        }
    }
    _mm512_storeu_ps(y, acc);
}

/* Q6_K: the 16 runs' integer sums of a superblock held at once, so each
 * 2-bit byte vector and each nibble vector is loaded and split once (for
 * dwords m, m + 16, m + 32, m + 48), then the one-group tile's float steps
 * run by run in its order. */
R16D_INLINE void one_q6_K(const uint8_t *p, const sl_q8act *a, float *y)
{
    __m512 acc = d_start(a, y);
    const __m512i m4 = _mm512_set1_epi8(15), m30 = _mm512_set1_epi8(0x30);
    for (int64_t sb = 0; sb < a->n_blocks / 8; sb++, p += SL_R16_Q6_K_BYTES) {
        const uint8_t *ql = p + 288, *qh = p + 288 + 2048;
        const int8_t *q = a->q + 256 * sb;
        const int32_t *s16 = a->s16 + 16 * sb;
        __m512i s[16];
        R16D_UNROLL
        for (int h = 0; h < 16; h++)
            s[h] = _mm512_set1_epi32(-32 * s16[h]);
        R16D_UNROLL
        for (int m = 0; m < 16; m++) {
            d_prefetch(p + 210 * m, 256, R16D_PF_Q6_K, R16D_PF_HINT_Q6_K);
            __m512i h = _mm512_loadu_si512(qh + 64 * m);
            __m512i v0 = _mm512_loadu_si512(ql + 64 * m), v1 = _mm512_loadu_si512(ql + 64 * (m + 16));
            /* (h & 0x30) | nibble, the 2 bits moved to bits 4-5 */
            __m512i w0 = _mm512_ternarylogic_epi32(_mm512_slli_epi16(h, 4), m30, _mm512_and_si512(v0, m4), 0xEA);
            __m512i w1 = _mm512_ternarylogic_epi32(_mm512_slli_epi16(h, 2), m30, _mm512_and_si512(v1, m4), 0xEA);
            __m512i w2 = _mm512_ternarylogic_epi32(h, m30, _mm512_and_si512(_mm512_srli_epi16(v0, 4), m4), 0xEA);
            __m512i w3 = _mm512_ternarylogic_epi32(_mm512_srli_epi16(h, 2), m30,
                                                   _mm512_and_si512(_mm512_srli_epi16(v1, 4), m4), 0xEA);
            s[m / 4] = d_dp(s[m / 4], w0, q + 4 * m);
            s[m / 4 + 4] = d_dp(s[m / 4 + 4], w1, q + 4 * (m + 16));
            s[m / 4 + 8] = d_dp(s[m / 4 + 8], w2, q + 4 * (m + 32));
            s[m / 4 + 12] = d_dp(s[m / 4 + 12], w3, q + 4 * (m + 48));
        }
        __m512 dv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
        const uint8_t *sc = p + 32;
        const float *d = a->d + 8 * sb;
        R16D_UNROLL
        for (int h = 0; h < 16; h++) {
            __m512 sh = _mm512_mul_ps(dv, d_i8_ps(sc + 16 * h));
            acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[h]), _mm512_mul_ps(sh, _mm512_set1_ps(d[h / 2])), acc);
        }
    }
    _mm512_storeu_ps(y, acc);
}

/* Groups [g0, g1) for the one token of a, one after the other. */
#define R16D_GROUPS(type, TYPE)                                                               \
    static void one_groups_##type(const uint8_t *packed, int64_t g0, int64_t g1,              \
                                  const sl_q8act *a, float *y, int64_t ldy)                   \
    {                                                                                         \
        (void)ldy;                                                                            \
        size_t gb = sl_r16_group_bytes(SL_TYPE_##TYPE, a->n_in);                              \
        for (int64_t g = g0; g < g1; g++)                                                     \
            one_##type(packed + (size_t)g * gb, a, y + 16 * g);                               \
    }

R16D_LEAN_GROUPS(q4_0, Q4_0, -8)
R16D_LEAN_GROUPS(q5_0, Q5_0, -16)
R16D_GROUPS(q8_0, Q8_0)
R16D_GROUPS(q4_K, Q4_K)
R16D_GROUPS(q6_K, Q6_K)

sl_r16_fn sl_r16_one_avx512(sl_type wtype)
{
    switch (wtype) {
    case SL_TYPE_Q4_0: return one_groups_q4_0;
    case SL_TYPE_Q8_0: return one_groups_q8_0;
    case SL_TYPE_Q5_0: return one_groups_q5_0;
    case SL_TYPE_Q4_K: return one_groups_q4_K;
    case SL_TYPE_Q6_K: return one_groups_q6_K;
    default: return NULL;
    }
}
