#include "kernels/cpu.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#define SL_X86 1
#endif

/* The process-wide feature table: written once under pthread_once, read-only
 * afterwards. Only the forced path changes later (tests), atomically. */
static struct {
    sl_cpu_features feat;
    sl_path best;
    sl_path env_cap; /* SLUICE_KERNEL's ceiling, or the best path if unset */
    sl_actq env_act;  /* SLUICE_ACT */
} g_cpu;
static pthread_once_t g_cpu_once = PTHREAD_ONCE_INIT;
static atomic_int g_forced = -1;
static atomic_int g_act_forced = -1;

#ifdef SL_X86
static uint64_t read_xcr0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static bool bit(uint32_t reg, int n)
{
    return (reg >> n) & 1u;
}

static void detect_x86(sl_cpu_features *f)
{
    uint32_t a, b, c, d;
    if (!__get_cpuid_count(1, 0, &a, &b, &c, &d))
        return;
    bool osxsave = bit(c, 27);
    bool avx = bit(c, 28);
    f->fma = bit(c, 12);
    f->f16c = bit(c, 29);
    if (osxsave) {
        uint64_t xcr0 = read_xcr0();
        f->os_avx = avx && (xcr0 & 0x6) == 0x6;             /* SSE + YMM state */
        f->os_avx512 = f->os_avx && (xcr0 & 0xe0) == 0xe0;  /* opmask + ZMM halves */
        f->os_amx = (xcr0 & 0x60000) == 0x60000;            /* XTILECFG + XTILEDATA */
    }
    uint32_t max_leaf = __get_cpuid_max(0, NULL);
    if (max_leaf < 7)
        return;
    __get_cpuid_count(7, 0, &a, &b, &c, &d);
    uint32_t max_sub7 = a;
    f->avx2 = bit(b, 5);
    f->avx512f = bit(b, 16);
    f->avx512dq = bit(b, 17);
    f->avx512bw = bit(b, 30);
    f->avx512vl = bit(b, 31);
    f->avx512vnni = bit(c, 11);
    f->amx_bf16 = bit(d, 22);
    f->avx512fp16 = bit(d, 23);
    f->amx_tile = bit(d, 24);
    f->amx_int8 = bit(d, 25);
    if (max_sub7 >= 1) {
        __get_cpuid_count(7, 1, &a, &b, &c, &d);
        f->avx512bf16 = bit(a, 5);
    }
    /* Linux hands out the 8 KB tile state only on request: without it the
     * first tile instruction faults, so AMX counts as usable only once the
     * request succeeded. */
    if (f->amx_tile && f->os_amx && syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */,
                                            18 /* XFEATURE_XTILEDATA */) != 0)
        f->os_amx = false;
}
#endif

static sl_path best_path(const sl_cpu_features *f)
{
    bool avx2 = f->os_avx && f->avx2 && f->fma && f->f16c;
    bool avx512 = avx2 && f->os_avx512 && f->avx512f && f->avx512bw && f->avx512vl &&
                  f->avx512dq;
    return avx512 ? SL_PATH_AVX512 : avx2 ? SL_PATH_AVX2 : SL_PATH_SCALAR;
}

static sl_path env_ceiling(sl_path best)
{
    const char *want = getenv("SLUICE_KERNEL");
    if (!want || !*want)
        return best;
    for (int p = 0; p < SL_PATH_COUNT_; p++) {
        if (strcmp(want, sl_path_name((sl_path)p)) != 0)
            continue;
        if ((sl_path)p > best) {
            fprintf(stderr, "sluice: SLUICE_KERNEL=%s but this CPU supports at most %s; using %s\n",
                    want, sl_path_name(best), sl_path_name(best));
            return best;
        }
        return (sl_path)p;
    }
    fprintf(stderr, "sluice: SLUICE_KERNEL=%s is not one of scalar, avx2, avx512; using %s\n",
            want, sl_path_name(best));
    return best;
}

static sl_actq env_act(void)
{
    const char *want = getenv("SLUICE_ACT");
    if (!want || !*want || strcmp(want, "q8") == 0)
        return SL_ACTQ_Q8;
    if (strcmp(want, "f32") == 0)
        return SL_ACTQ_F32;
    fprintf(stderr, "sluice: SLUICE_ACT=%s is not one of q8, f32; using q8\n", want);
    return SL_ACTQ_Q8;
}

static void cpu_init(void)
{
    memset(&g_cpu.feat, 0, sizeof g_cpu.feat);
#ifdef SL_X86
    detect_x86(&g_cpu.feat);
#endif
    g_cpu.best = best_path(&g_cpu.feat);
    g_cpu.env_cap = env_ceiling(g_cpu.best);
    g_cpu.env_act = env_act();
}

const sl_cpu_features *sl_cpu(void)
{
    pthread_once(&g_cpu_once, cpu_init);
    return &g_cpu.feat;
}

sl_path sl_path_best(void)
{
    pthread_once(&g_cpu_once, cpu_init);
    return g_cpu.best;
}

sl_path sl_path_active(void)
{
    pthread_once(&g_cpu_once, cpu_init);
    int forced = atomic_load_explicit(&g_forced, memory_order_relaxed);
    return forced >= 0 ? (sl_path)forced : g_cpu.env_cap;
}

int sl_path_force(sl_path p)
{
    if ((int)p < 0 || p >= SL_PATH_COUNT_ || p > sl_path_best())
        return -1;
    atomic_store_explicit(&g_forced, (int)p, memory_order_relaxed);
    return 0;
}

sl_actq sl_act_mode(void)
{
    pthread_once(&g_cpu_once, cpu_init);
    int forced = atomic_load_explicit(&g_act_forced, memory_order_relaxed);
    return forced >= 0 ? (sl_actq)forced : g_cpu.env_act;
}

void sl_act_force(sl_actq a) { atomic_store_explicit(&g_act_forced, (int)a, memory_order_relaxed); }

const char *sl_path_name(sl_path p)
{
    switch (p) {
    case SL_PATH_SCALAR: return "scalar";
    case SL_PATH_AVX2: return "avx2";
    case SL_PATH_AVX512: return "avx512";
    default: return "?";
    }
}
