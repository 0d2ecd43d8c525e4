/* The int8 multiply-add peak of AVX-512 VNNI: independent vpdpbusd chains,
 * enough of them to cover the instruction's latency on any core that has
 * it, so the loop runs at the issue rate (the compute roofline of the
 * integer matmul kernels). */
#include <immintrin.h>
#include <stdint.h>

#include "kernels/probe.h"

#define VNNI_CHAINS 16

int64_t sl_probe_vnni_loop(int64_t iters, uint32_t seed)
{
    __m512i acc[VNNI_CHAINS];
    for (int c = 0; c < VNNI_CHAINS; c++)
        acc[c] = _mm512_set1_epi32((int)(seed + (uint32_t)c));
    /* operands the compiler cannot see as constants */
    const __m512i u = _mm512_set1_epi32((int)(seed | 0x01010101u));
    const __m512i s = _mm512_set1_epi32((int)(seed ^ 0x7f7f7f7fu));
    for (int64_t i = 0; i < iters; i++) {
        _Pragma("GCC unroll 16")
        for (int c = 0; c < VNNI_CHAINS; c++)
            acc[c] = _mm512_dpbusd_epi32(acc[c], u, s);
        __asm__ volatile("" : "+v"(acc[0]), "+v"(acc[1]), "+v"(acc[2]), "+v"(acc[3]));
    }
    __m512i sum = acc[0];
    for (int c = 1; c < VNNI_CHAINS; c++)
        sum = _mm512_add_epi32(sum, acc[c]);
    /* the caller folds this into a sink: the chains stay live (summed as
     * unsigned lanes: the wrapped chains overflow a signed reduction) */
    uint32_t lanes[16];
    _mm512_storeu_si512(lanes, sum);
    uint64_t total = 0;
    for (int l = 0; l < 16; l++)
        total += lanes[l];
    return (int64_t)total;
}
