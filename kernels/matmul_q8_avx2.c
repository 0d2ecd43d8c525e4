/* The integer matmul path on AVX2 (maddubs + madd): see matmul_q8_impl.h. */
#include <string.h>

#define MMQ_VNNI 0
#define MMQ_NAME(x) x##_avx2
#include "kernels/matmul_q8_impl.h"

sl_mmq_fn sl_mmq_avx2(sl_type wtype) { return mmq_table(wtype); }
