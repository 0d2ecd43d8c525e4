/* AMX int8 for prefill on the 16-row repacked weights (matmul_r16_avx512.c
 * has the layout). One TDPBSSD multiplies a tile of 16 tokens' activations
 * (16 rows of 32 int8) by a block of 32 weights of the group's 16 rows, laid
 * out as AMX's B tile wants: 8 rows of 64 bytes, each the 4 consecutive
 * weights of every output row, which is the repacked line format. The block
 * is first widened to signed bytes in a per-thread scratch (Q8_0's +128
 * taken off, Q4_0's nibbles minus 8, Q5_0's fifth bit added and 16 taken off,
 * Q4_K's sub-blocks split), so the tile product is exactly the integer the
 * VNNI kernel sums for that (row, token, block) with its offset folded in.
 * The epilogue then runs the VNNI kernel's float operations in the same
 * order (convert, weight scale times activation scale, FMA; the mins' FMA),
 * so every output has the VNNI path's bits: the determinism contract holds
 * across the AMX / VNNI boundary (batches of 16 tokens here, the rest of a
 * batch there) and across threads. */
#if defined(__x86_64__)
#include <immintrin.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu.h"
#include "kernels/matmul.h"
#include "kernels/matmul_internal.h"

#define AMX_INLINE static inline __attribute__((always_inline))
#define AMX_UNROLL _Pragma("GCC unroll 16")
/* Tokens per tile (the A and C tiles' rows). */
#define AMX_TOK 16
/* Blocks of 32 unpacked at once: 32 KB of scratch, L1-resident while every
 * token tile of the call passes over it. A multiple of Q4_K's 8. */
#define AMX_KCHUNK 64
/* Tokens whose float accumulators are parked while the next chunk of
 * blocks is unpacked. */
#define AMX_TCHUNK 128

/* The tile configuration (palette 1) of Intel's SDM, 64 bytes. */
typedef struct amx_cfg {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_cfg;

/* tmm0/1: activations (16 tokens x 32 bytes), tmm2/3: weights (8 x 64),
 * tmm4..7: the int32 products (16 tokens x 16 rows) of 4 blocks. */
static void amx_configure(void)
{
    amx_cfg c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int t = 0; t < 2; t++) {
        c.rows[t] = AMX_TOK;
        c.colsb[t] = 32;
        c.rows[2 + t] = 8;
        c.colsb[2 + t] = 64;
    }
    for (int t = 4; t < 8; t++) {
        c.rows[t] = AMX_TOK;
        c.colsb[t] = 64;
    }
    /* GCC 12's _tile_loadconfig tells the compiler it reads only 8 bytes,
     * so the rest of c was dropped as dead stores: the whole struct goes to
     * the instruction as its operand. */
    __asm__ volatile("ldtilecfg %0" : : "m"(c));
}

/* Per thread: the unpacked weights of one chunk (signed bytes, 512 per
 * block), their 16 weight scales and 16 min terms per block, and the
 * accumulators of the tokens in flight. */
typedef struct amx_scratch {
    int8_t w[AMX_KCHUNK][8][64];
    float dw[AMX_KCHUNK][16];
    float mw[AMX_KCHUNK][16];
    float acc[AMX_TCHUNK][16];
} amx_scratch;
static _Thread_local amx_scratch amx_tls __attribute__((aligned(64)));

/* ---- unpacking a chunk of blocks [b0, b0 + nb) of one group ---- */

static void unpack_q8_0(const uint8_t *p, int64_t b0, int nb, amx_scratch *s)
{
    p += (size_t)b0 * SL_R16_Q8_0_BYTES;
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    for (int b = 0; b < nb; b++, p += SL_R16_Q8_0_BYTES) {
        _mm512_store_ps(s->dw[b], _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)));
        AMX_UNROLL
        for (int k = 0; k < 8; k++)
            _mm512_store_si512(s->w[b][k], _mm512_xor_si512(_mm512_loadu_si512(p + 32 + 64 * k), flip));
    }
}

/* Q4_0, Q4_1, Q5_0, Q5_1 (kind): the nibbles of line k are elements 4k..
 * (low) and 16 + 4k.. (high) of each row, so B rows k and 4 + k. */
AMX_INLINE void unpack_b32(const int kind, const uint8_t *p, int64_t b0, int nb, amx_scratch *s)
{
    const int has_min = kind != SL_TYPE_Q5_0 && kind != SL_TYPE_Q4_0;
    const int has_hi = kind == SL_TYPE_Q5_0 || kind == SL_TYPE_Q5_1;
    const size_t bytes = kind == SL_TYPE_Q4_0 ? SL_R16_Q4_0_BYTES
                         : kind == SL_TYPE_Q4_1 ? SL_R16_Q4_1_BYTES
                         : kind == SL_TYPE_Q5_0 ? SL_R16_Q5_0_BYTES : SL_R16_Q5_1_BYTES;
    const int offset = kind == SL_TYPE_Q4_0 ? 8 : kind == SL_TYPE_Q5_0 ? 16 : 0;
    const __m512i m4 = _mm512_set1_epi8(15), b4 = _mm512_set1_epi8(16);
    const __m512i off = _mm512_set1_epi8((char)offset);
    p += (size_t)b0 * bytes;
    for (int b = 0; b < nb; b++, p += bytes) {
        _mm512_store_ps(s->dw[b], _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)));
        if (has_min)
            _mm512_store_ps(s->mw[b], _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + 32))));
        const uint8_t *qs = p + (has_min ? 64 : 32), *hb = qs + 256;
        AMX_UNROLL
        for (int k = 0; k < 4; k++) {
            __m512i v = _mm512_loadu_si512(qs + 64 * k);
            __m512i lo = _mm512_and_si512(v, m4);
            __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
            if (has_hi) {
                uint64_t ml, mh;
                memcpy(&ml, hb + 16 * k, 8);
                memcpy(&mh, hb + 16 * k + 8, 8);
                lo = _mm512_mask_add_epi8(lo, _cvtu64_mask64(ml), lo, b4);
                hi = _mm512_mask_add_epi8(hi, _cvtu64_mask64(mh), hi, b4);
            }
            _mm512_store_si512(s->w[b][k], _mm512_sub_epi8(lo, off));
            _mm512_store_si512(s->w[b][4 + k], _mm512_sub_epi8(hi, off));
        }
    }
}

static void unpack_q4_0(const uint8_t *p, int64_t b0, int nb, amx_scratch *s)
{
    unpack_b32(SL_TYPE_Q4_0, p, b0, nb, s);
}

static void unpack_q4_1(const uint8_t *p, int64_t b0, int nb, amx_scratch *s)
{
    unpack_b32(SL_TYPE_Q4_1, p, b0, nb, s);
}

static void unpack_q5_0(const uint8_t *p, int64_t b0, int nb, amx_scratch *s)
{
    unpack_b32(SL_TYPE_Q5_0, p, b0, nb, s);
}

static void unpack_q5_1(const uint8_t *p, int64_t b0, int nb, amx_scratch *s)
{
    unpack_b32(SL_TYPE_Q5_1, p, b0, nb, s);
}

AMX_INLINE __m512 amx_u8_ps(const uint8_t *p16)
{
    return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p16)));
}

/* Q4_K: superblock sb's pair j of sub-blocks sits in lines 8j..8j+7 (low
 * nibbles: sub-block 2j, high: 2j + 1). The scale and min products are the
 * VNNI kernel's (d times the 6-bit scale; the min negated, so its FNMADD
 * becomes an FMA of the same value). b0 and nb are multiples of 8. */
static void unpack_q4_K(const uint8_t *p, int64_t b0, int nb, amx_scratch *s)
{
    const __m512i m4 = _mm512_set1_epi8(15);
    p += (size_t)(b0 / 8) * SL_R16_Q4_K_BYTES;
    for (int sb = 0; sb < nb / 8; sb++, p += SL_R16_Q4_K_BYTES) {
        __m512 dv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
        __m512 dmv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + 32)));
        const uint8_t *sc = p + 64, *mn = p + 192, *qs = p + 320;
        for (int u = 0; u < 8; u++) {
            int b = 8 * sb + u;
            _mm512_store_ps(s->dw[b], _mm512_mul_ps(dv, amx_u8_ps(sc + 16 * u)));
            __m512 m = _mm512_mul_ps(dmv, amx_u8_ps(mn + 16 * u));
            _mm512_store_ps(s->mw[b], _mm512_xor_ps(m, _mm512_set1_ps(-0.0f))); /* -m, also of 0 */
        }
        for (int j = 0; j < 4; j++) {
            AMX_UNROLL
            for (int k = 0; k < 8; k++) {
                __m512i v = _mm512_loadu_si512(qs + (8 * j + k) * 64);
                _mm512_store_si512(s->w[8 * sb + 2 * j][k], _mm512_and_si512(v, m4));
                _mm512_store_si512(s->w[8 * sb + 2 * j + 1][k],
                                   _mm512_and_si512(_mm512_srli_epi16(v, 4), m4));
            }
        }
    }
}

/* ---- the tile loop ---- */

/* Products of one block (C in c, 16 tokens x 16 rows) into the tokens'
 * accumulators, as the VNNI kernel does it. */
AMX_INLINE void amx_epilogue(const int has_min, const int32_t *c, const amx_scratch *s, int u,
                             const sl_q8act *a, int64_t t, int64_t blk, __m512 *acc)
{
    __m512 dw = _mm512_load_ps(s->dw[u]);
    __m512 mw = has_min ? _mm512_load_ps(s->mw[u]) : _mm512_setzero_ps();
    AMX_UNROLL
    for (int i = 0; i < AMX_TOK; i++) {
        int64_t ab = (t + i) * (a->ld_in / 32) + blk;
        __m512 scale = _mm512_mul_ps(dw, _mm512_set1_ps(a->d[ab]));
        acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(c + 16 * i)), scale, acc[i]);
        if (has_min)
            acc[i] = _mm512_fmadd_ps(mw, _mm512_set1_ps(a->ds[ab]), acc[i]);
    }
}

/* One block's tile product into C tile c (A tile a, B tile b). Tile registers are not renamed: four C tiles in a row let the
 * matrix unit work on the next blocks while the last ones are stored. */
#define AMX_BLOCK(a_reg, b_reg, c_reg, u)                  \
    do {                                                   \
        _tile_loadd(a_reg, q + 32 * (u), a->ld_in);        \
        _tile_loadd(b_reg, s->w[u], 64);                   \
        _tile_zero(c_reg);                                 \
        _tile_dpbssd(c_reg, a_reg, b_reg);                 \
    } while (0)

/* Block u's products into C tile c_reg, stored into slot u % 8 of c, then
 * the epilogue of block u - 4, stored a while ago: the vector loads do not
 * wait for a tile store in flight, and the matrix unit works on the next
 * blocks while the vector units finish the earlier ones. */
#define AMX_STEP(a_reg, b_reg, c_reg, u)                                                     \
    do {                                                                                     \
        if ((u) < nb) {                                                                      \
            AMX_BLOCK(a_reg, b_reg, c_reg, u);                                               \
            _tile_stored(c_reg, c[(u) % 8], 64);                                             \
        }                                                                                    \
        if ((u) >= 4 && (u) - 4 < nb)                                                        \
            amx_epilogue(has_min, c[((u) - 4) % 8], s, (u) - 4, a, t, b0 + (u) - 4, acc);    \
    } while (0)

/* Tokens [t, t + 16) over the chunk's nb blocks starting at block b0. */
AMX_INLINE void amx_tokens(const int has_min, const amx_scratch *s, int64_t b0, int nb,
                           const sl_q8act *a, int64_t t, __m512 *acc)
{
    int32_t c[8][AMX_TOK * 16] __attribute__((aligned(64)));
    const int8_t *q = a->q + t * a->ld_in + 32 * b0;
    for (int u = 0; u < nb + 4; u += 4) {
        AMX_STEP(0, 2, 4, u);
        AMX_STEP(1, 3, 5, u + 1);
        AMX_STEP(0, 2, 6, u + 2);
        AMX_STEP(1, 3, 7, u + 3);
    }
}

typedef void (*amx_unpack_fn)(const uint8_t *p, int64_t b0, int nb, amx_scratch *s);

/* Tokens [t0, t1) (whole tiles) of the group at p; y points at the group's
 * row 0 of token t0. */
AMX_INLINE void amx_group(const int has_min, amx_unpack_fn unpack, const uint8_t *p,
                          const sl_q8act *a, int64_t t0, int64_t t1, float *y, int64_t ldy)
{
    amx_scratch *s = &amx_tls;
    for (int64_t b0 = 0; b0 < a->n_blocks; b0 += AMX_KCHUNK) {
        int nb = a->n_blocks - b0 < AMX_KCHUNK ? (int)(a->n_blocks - b0) : AMX_KCHUNK;
        int last = b0 + nb == a->n_blocks;
        unpack(p, b0, nb, s);
        for (int64_t t = t0; t < t1; t += AMX_TOK) {
            float (*park)[16] = s->acc + (t - t0);
            __m512 acc[AMX_TOK];
            AMX_UNROLL
            for (int i = 0; i < AMX_TOK; i++) {
                acc[i] = b0          ? _mm512_load_ps(park[i])
                         : a->carry ? _mm512_loadu_ps(y + (t - t0 + i) * ldy)
                                    : _mm512_setzero_ps();
                /* each output line is written once, by this tile, and
                 * missed the caches: a store that waits for it at the head
                 * of the store buffer holds up the tile stores behind it */
                if (last)
                    __builtin_prefetch(y + (t - t0 + i) * ldy, 1, 3);
            }
            amx_tokens(has_min, s, b0, nb, a, t, acc);
            AMX_UNROLL
            for (int i = 0; i < AMX_TOK; i++) {
                if (last)
                    _mm512_storeu_ps(y + (t - t0 + i) * ldy, acc[i]);
                else
                    _mm512_store_ps(park[i], acc[i]);
            }
        }
    }
}

/* Whole tiles of 16 tokens through AMX, the rest through the VNNI kernel
 * (the same bits either way). */
AMX_INLINE void amx_groups(sl_type type, const int has_min, amx_unpack_fn unpack,
                           const uint8_t *packed, int64_t g0, int64_t g1, const sl_q8act *a,
                           float *y, int64_t ldy)
{
    int64_t n16 = a->n_tok / AMX_TOK * AMX_TOK;
    if (n16 > 0) {
        amx_configure();
        size_t group_bytes = sl_r16_group_bytes(type, a->n_in);
        for (int64_t g = g0; g < g1; g++)
            for (int64_t t = 0; t < n16; t += AMX_TCHUNK)
                amx_group(has_min, unpack, packed + (size_t)g * group_bytes, a, t,
                          t + AMX_TCHUNK < n16 ? t + AMX_TCHUNK : n16, y + t * ldy + 16 * g, ldy);
        _tile_release();
    }
    if (n16 < a->n_tok) {
        sl_q8act rest = sl_q8act_tokens(a, n16, a->n_tok);
        sl_r16_avx512(type)(packed, g0, g1, &rest, y + n16 * ldy, ldy);
    }
}

#define AMX_GROUPS(name, TYPE, has_min)                                                        \
    static void groups_##name(const uint8_t *packed, int64_t g0, int64_t g1, const sl_q8act *a, \
                              float *y, int64_t ldy)                                          \
    {                                                                                         \
        amx_groups(TYPE, has_min, unpack_##name, packed, g0, g1, a, y, ldy);                  \
    }

AMX_GROUPS(q8_0, SL_TYPE_Q8_0, 0)
AMX_GROUPS(q4_0, SL_TYPE_Q4_0, 0)
AMX_GROUPS(q5_0, SL_TYPE_Q5_0, 0)
AMX_GROUPS(q4_1, SL_TYPE_Q4_1, 1)
AMX_GROUPS(q5_1, SL_TYPE_Q5_1, 1)
AMX_GROUPS(q4_K, SL_TYPE_Q4_K, 1)

/* ---- when AMX runs ---- */

/* -1: not decided yet; 0 off; 1 on. */
static atomic_int amx_state = -1;

static bool amx_usable(void)
{
    const sl_cpu_features *f = sl_cpu();
    return f->amx_tile && f->amx_int8 && f->os_amx && f->avx512vnni &&
           sl_path_best() == SL_PATH_AVX512;
}

bool sl_matmul_amx_active(void)
{
    int st = atomic_load_explicit(&amx_state, memory_order_relaxed);
    if (st < 0) {
        const char *off = getenv("SLUICE_NO_AMX");
        st = amx_usable() && !(off && *off && strcmp(off, "0") != 0);
        atomic_store_explicit(&amx_state, st, memory_order_relaxed);
    }
    return st && sl_path_active() == SL_PATH_AVX512;
}

bool sl_matmul_amx_force(bool on)
{
    bool ok = !on || amx_usable();
    atomic_store_explicit(&amx_state, on && ok, memory_order_relaxed);
    return ok;
}

sl_r16_fn sl_r16_amx(sl_type wtype)
{
    if (!sl_matmul_amx_active())
        return NULL;
    switch (wtype) {
    case SL_TYPE_Q8_0: return groups_q8_0;
    case SL_TYPE_Q4_0: return groups_q4_0;
    case SL_TYPE_Q5_0: return groups_q5_0;
    case SL_TYPE_Q4_1: return groups_q4_1;
    case SL_TYPE_Q5_1: return groups_q5_1;
    case SL_TYPE_Q4_K: return groups_q4_K;
    default: return NULL;
    }
}
#endif
