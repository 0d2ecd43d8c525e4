/* The int8 multiply-add peak of AVX-512 VNNI: independent vpdpbusd chains,
 * enough of them to cover the instruction's latency on any core that has
 * it, so the loop runs at the issue rate (the compute roofline of the
 * integer matmul kernels). The chains are named variables, each tied to a
 * register by the empty asm every iteration: kept in an array, gcc 12 stored
 * all 16 to the stack each iteration and the loop ran at the store rate,
 * half the issue rate of a Zen 5 core (the matmul kernels measured 162% of
 * that "peak"). */
#include <immintrin.h>
#include <stdint.h>

#include "kernels/probe.h"

#define DP(a) a = _mm512_dpbusd_epi32(a, u, s)

int64_t sl_probe_vnni_loop(int64_t iters, uint32_t seed)
{
    __m512i a0 = _mm512_set1_epi32((int)seed), a1 = _mm512_set1_epi32((int)(seed + 1)),
            a2 = _mm512_set1_epi32((int)(seed + 2)), a3 = _mm512_set1_epi32((int)(seed + 3)),
            a4 = _mm512_set1_epi32((int)(seed + 4)), a5 = _mm512_set1_epi32((int)(seed + 5)),
            a6 = _mm512_set1_epi32((int)(seed + 6)), a7 = _mm512_set1_epi32((int)(seed + 7)),
            a8 = _mm512_set1_epi32((int)(seed + 8)), a9 = _mm512_set1_epi32((int)(seed + 9)),
            a10 = _mm512_set1_epi32((int)(seed + 10)), a11 = _mm512_set1_epi32((int)(seed + 11)),
            a12 = _mm512_set1_epi32((int)(seed + 12)), a13 = _mm512_set1_epi32((int)(seed + 13)),
            a14 = _mm512_set1_epi32((int)(seed + 14)), a15 = _mm512_set1_epi32((int)(seed + 15));
    /* operands the compiler cannot see as constants */
    const __m512i u = _mm512_set1_epi32((int)(seed | 0x01010101u));
    const __m512i s = _mm512_set1_epi32((int)(seed ^ 0x7f7f7f7fu));
    for (int64_t i = 0; i < iters; i++) {
        DP(a0), DP(a1), DP(a2), DP(a3), DP(a4), DP(a5), DP(a6), DP(a7);
        DP(a8), DP(a9), DP(a10), DP(a11), DP(a12), DP(a13), DP(a14), DP(a15);
        __asm__ volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5),
                         "+v"(a6), "+v"(a7));
        __asm__ volatile("" : "+v"(a8), "+v"(a9), "+v"(a10), "+v"(a11), "+v"(a12), "+v"(a13),
                         "+v"(a14), "+v"(a15));
    }
    __m512i sum = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3)),
                                   _mm512_add_epi32(_mm512_add_epi32(a4, a5), _mm512_add_epi32(a6, a7)));
    sum = _mm512_add_epi32(sum, _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a8, a9), _mm512_add_epi32(a10, a11)),
                                                 _mm512_add_epi32(_mm512_add_epi32(a12, a13), _mm512_add_epi32(a14, a15))));
    /* the caller folds this into a sink: the chains stay live (summed as
     * unsigned lanes: the wrapped chains overflow a signed reduction) */
    uint32_t lanes[16];
    _mm512_storeu_si512(lanes, sum);
    uint64_t total = 0;
    for (int l = 0; l < 16; l++)
        total += lanes[l];
    return (int64_t)total;
}

uint64_t sl_probe_read_avx512(const void *p, size_t bytes)
{
    /* four independent chains of one load and one xor a 64-byte line: the
     * core's out-of-order window reaches far ahead, as in a plain stream */
    const uint8_t *b = p;
    __m512i x0 = _mm512_setzero_si512(), x1 = x0, x2 = x0, x3 = x0;
    for (size_t i = 0; i < bytes; i += 256) {
        x0 = _mm512_xor_si512(x0, _mm512_load_si512(b + i));
        x1 = _mm512_xor_si512(x1, _mm512_load_si512(b + i + 64));
        x2 = _mm512_xor_si512(x2, _mm512_load_si512(b + i + 128));
        x3 = _mm512_xor_si512(x3, _mm512_load_si512(b + i + 192));
    }
    __m512i x = _mm512_xor_si512(_mm512_xor_si512(x0, x1), _mm512_xor_si512(x2, x3));
    return (uint64_t)_mm512_reduce_add_epi64(x);
}
