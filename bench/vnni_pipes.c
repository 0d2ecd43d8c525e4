/* Which AVX-512 instructions take the pipes vpdpbusd issues on: a loop of
 * 12 independent vpdpbusd chains, alone and with 3 independent instances of
 * each other instruction added; an instruction that shares vpdpbusd's pipes
 * adds a quarter to the loop's time (15 slots instead of 12), one that runs
 * elsewhere adds nothing. What the prefill tiles' float steps cost
 * (docs/DESIGN.md, "How near the prefill tiles run to their cap") was
 * measured with it.
 *
 * Not built by CMake (x86-64 with AVX-512 VNNI only):
 *   gcc -O2 bench/vnni_pipes.c -o /tmp/vnni_pipes
 *   flock /tmp/sluice-bench.lock chrt -f 20 taskset -c 0 /tmp/vnni_pipes */
#include <stdio.h>
#include <time.h>

#define N 20000000L

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

#define DP(r) "vpdpbusd %%zmm30, %%zmm31, %%zmm" #r "\n"
#define DP12 DP(0) DP(1) DP(2) DP(3) DP(4) DP(5) DP(6) DP(7) DP(8) DP(9) DP(10) DP(11)
#define X3(op) op " %%zmm30, %%zmm31, %%zmm12\n" op " %%zmm30, %%zmm31, %%zmm13\n" op " %%zmm30, %%zmm31, %%zmm14\n"
#define U3(op) op " %%zmm30, %%zmm12\n" op " %%zmm30, %%zmm13\n" op " %%zmm30, %%zmm14\n"
#define LOOP(name, extra)                                                                     \
    static double name(void)                                                                  \
    {                                                                                         \
        double t0 = now();                                                                    \
        for (long n = 0; n < N; n++)                                                          \
            __asm__ volatile(DP12 extra ::: "eax", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4",    \
                             "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11",        \
                             "xmm12", "xmm13", "xmm14");                                      \
        return now() - t0;                                                                    \
    }

LOOP(base, "")
LOOP(mulps, X3("vmulps"))
LOOP(fmadd, X3("vfmadd231ps"))
LOOP(pmulld, X3("vpmulld"))
LOOP(pmaddwd, X3("vpmaddwd"))
LOOP(dpwssd, X3("vpdpwssd"))
LOOP(scalef, X3("vscalefps"))
LOOP(addps, X3("vaddps"))
LOOP(paddd, X3("vpaddd"))
LOOP(cvtdq2ps, U3("vcvtdq2ps"))
LOOP(getexp, U3("vgetexpps"))
LOOP(bcast_gpr, "movl $3, %%eax\n vpbroadcastd %%eax, %%zmm12\n vpbroadcastd %%eax, %%zmm13\n"
                "vpbroadcastd %%eax, %%zmm14\n")

int main(void)
{
    static const struct {
        const char *name;
        double (*fn)(void);
    } loops[] = {{"12 vpdpbusd", base},  {"+3 vmulps", mulps},     {"+3 vfmadd231ps", fmadd},
                 {"+3 vpmulld", pmulld}, {"+3 vpmaddwd", pmaddwd}, {"+3 vpdpwssd", dpwssd},
                 {"+3 vscalefps", scalef}, {"+3 vaddps", addps},  {"+3 vpaddd", paddd},
                 {"+3 vcvtdq2ps", cvtdq2ps}, {"+3 vgetexpps", getexp},
                 {"+3 vpbroadcastd r32", bcast_gpr}};
    int n = (int)(sizeof loops / sizeof loops[0]);
    double best[sizeof loops / sizeof loops[0]];
    for (int i = 0; i < n; i++)
        best[i] = 1e30;
    for (int r = 0; r < 3; r++)
        for (int i = 0; i < n; i++) {
            double t = loops[i].fn();
            best[i] = t < best[i] ? t : best[i];
        }
    printf("best of 3, ns a loop of 12 vpdpbusd plus the rest; ratio to the plain loop\n");
    for (int i = 0; i < n; i++)
        printf("  %-20s %6.3f  %.2f\n", loops[i].name, best[i] / N * 1e9, best[i] / best[0]);
    return 0;
}
