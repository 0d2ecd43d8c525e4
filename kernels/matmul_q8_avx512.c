/* The integer matmul path with AVX-512 VNNI (vpdpbusd on 256-bit vectors,
 * which the 32-element blocks fill exactly): see matmul_q8_impl.h. */
#include <string.h>

#define MMQ_VNNI 1
#define MMQ_NAME(x) x##_avx512
#include "kernels/matmul_q8_impl.h"

sl_mmq_fn sl_mmq_avx512(sl_type wtype) { return mmq_table(wtype); }
