/* The CPUs a process may use: its affinity mask and its cgroup's CPU quota,
 * never the machine's count (a process in a container, under taskset, or
 * sharing a host with the other processes of its pipeline gets fewer).
 * CPU sets as small value types, for configs (`cores: [0, 1]`) and for
 * binding spawned workers. */
#ifndef SLUICE_CPUS_H
#define SLUICE_CPUS_H

#include <stdbool.h>
#include <stdint.h>

#include "util/err.h"

#define SL_CPUS_MAX 1024 /* CPU numbers 0..1023, as glibc's cpu_set_t */

typedef struct sl_cpuset {
    uint64_t bits[SL_CPUS_MAX / 64];
} sl_cpuset;

static inline void sl_cpuset_add(sl_cpuset *s, int cpu) { s->bits[cpu / 64] |= 1ull << (cpu % 64); }
static inline bool sl_cpuset_has(const sl_cpuset *s, int cpu)
{
    return (s->bits[cpu / 64] >> (cpu % 64)) & 1;
}
int sl_cpuset_count(const sl_cpuset *s);
/* The CPUs in both a and b. */
sl_cpuset sl_cpuset_and(const sl_cpuset *a, const sl_cpuset *b);
/* "0-3,8" (the kernel's list format); "none" when empty. */
const char *sl_cpuset_format(const sl_cpuset *s, char *buf, int size);
/* Adds "N" or "A-B" (A <= B) to s; -1 with the reason otherwise. */
int sl_cpuset_add_text(sl_cpuset *s, const char *text, sl_err *err);

/* The calling thread's affinity mask. */
int sl_cpus_allowed(sl_cpuset *s, sl_err *err);
/* Sets the calling thread's affinity mask (threads it starts later inherit
 * it; a forked child too). Async-signal-safe: a raw system call. */
int sl_cpus_bind(const sl_cpuset *s);

/* cgroup v2 cpu.max text ("max 100000", "150000 100000"): the CPUs the
 * quota is worth, rounded up; 0 for no limit or text it does not know. */
int sl_cpus_quota_v2(const char *cpu_max);

/* How many threads this process should run by default: the CPUs in its
 * affinity mask, fewer when its cgroup's quota allows fewer; at least 1. */
int sl_cpus_available(void);

/* The thread count of a single-process command: `requested` when positive,
 * else OMP_NUM_THREADS when the user set it, else sl_cpus_available(). */
int sl_cpus_threads(int requested);

#endif
