/* Run-time CPU feature detection and kernel path selection.
 *
 * The feature table is the only process-wide mutable state in sluice: it is
 * filled once (thread-safely) on first use. The environment variable
 * SLUICE_KERNEL=scalar|avx2|avx512 forces a path no better than the CPU has,
 * so tests can exercise every path the machine supports. */
#ifndef SLUICE_CPU_H
#define SLUICE_CPU_H

#include <stdbool.h>

typedef enum sl_path {
    SL_PATH_SCALAR = 0,
    SL_PATH_AVX2 = 1,   /* AVX2 + FMA + F16C */
    SL_PATH_AVX512 = 2, /* AVX-512 F/BW/VL/DQ */
    SL_PATH_COUNT_
} sl_path;

typedef struct sl_cpu_features {
    bool avx2, fma, f16c;
    bool avx512f, avx512bw, avx512vl, avx512dq, avx512vnni, avx512bf16, avx512fp16;
    bool amx_tile, amx_int8, amx_bf16;
    bool os_avx, os_avx512, os_amx; /* XCR0 says the OS saves the state (AMX: and
                                     * Linux granted the tile state on request) */
} sl_cpu_features;

const sl_cpu_features *sl_cpu(void);
/* Best path the CPU supports. */
sl_path sl_path_best(void);
/* Path in use: sl_path_best(), lowered by SLUICE_KERNEL or sl_path_force. */
sl_path sl_path_active(void);
/* Forces a path for this process (tests); returns -1 if the CPU lacks it. */
int sl_path_force(sl_path p);
const char *sl_path_name(sl_path p);

/* Activations of 4-, 6- and 8-bit matmuls: quantised to 8 bits per block of
 * 32 for the integer kernels (the default, as llama.cpp does), or kept in
 * float (SLUICE_ACT=f32), which the float reference tests compare against
 * exactly. */
typedef enum sl_actq { SL_ACTQ_Q8 = 0, SL_ACTQ_F32 = 1 } sl_actq;
sl_actq sl_act_mode(void);
/* Overrides SLUICE_ACT for this process (tests). */
void sl_act_force(sl_actq a);

#endif
