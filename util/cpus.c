#define _GNU_SOURCE /* sched_getaffinity, cpu_set_t */
#include "util/cpus.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int sl_cpuset_count(const sl_cpuset *s)
{
    int n = 0;
    for (int i = 0; i < SL_CPUS_MAX / 64; i++)
        n += __builtin_popcountll(s->bits[i]);
    return n;
}

sl_cpuset sl_cpuset_and(const sl_cpuset *a, const sl_cpuset *b)
{
    sl_cpuset r;
    for (int i = 0; i < SL_CPUS_MAX / 64; i++)
        r.bits[i] = a->bits[i] & b->bits[i];
    return r;
}

const char *sl_cpuset_format(const sl_cpuset *s, char *buf, int size)
{
    int len = 0;
    buf[0] = '\0';
    for (int c = 0; c < SL_CPUS_MAX && len < size; c++) {
        if (!sl_cpuset_has(s, c))
            continue;
        int e = c;
        while (e + 1 < SL_CPUS_MAX && sl_cpuset_has(s, e + 1))
            e++;
        len += e == c ? snprintf(buf + len, (size_t)(size - len), "%s%d", len ? "," : "", c)
                      : snprintf(buf + len, (size_t)(size - len), "%s%d-%d", len ? "," : "", c, e);
        c = e;
    }
    if (!buf[0])
        snprintf(buf, (size_t)size, "none");
    return buf;
}

/* A CPU number: digits only, below SL_CPUS_MAX; the end of it in *end. */
static int cpu_number(const char *p, const char **end)
{
    long v = 0;
    const char *q = p;
    while (*q >= '0' && *q <= '9' && v < SL_CPUS_MAX)
        v = v * 10 + (*q++ - '0');
    *end = q;
    return q == p || (*q >= '0' && *q <= '9') || v >= SL_CPUS_MAX ? -1 : (int)v;
}

int sl_cpuset_add_text(sl_cpuset *s, const char *text, sl_err *err)
{
    const char *end;
    int a = cpu_number(text, &end), b = a;
    if (a >= 0 && *end == '-')
        b = cpu_number(end + 1, &end);
    if (a < 0 || b < 0 || *end)
        return sl_fail(err, "'%.40s' is not a CPU number (0..%d) or a range A-B of them", text,
                       SL_CPUS_MAX - 1);
    if (b < a)
        return sl_fail(err, "range '%s' runs backwards", text);
    for (int c = a; c <= b; c++)
        sl_cpuset_add(s, c);
    return 0;
}

int sl_cpus_allowed(sl_cpuset *s, sl_err *err)
{
    cpu_set_t m;
    CPU_ZERO(&m);
    if (sched_getaffinity(0, sizeof m, &m))
        return sl_fail(err, "cannot read this process's CPU affinity: %s", strerror(errno));
    memset(s, 0, sizeof *s);
    for (int c = 0; c < SL_CPUS_MAX && c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &m))
            sl_cpuset_add(s, c);
    return 0;
}

int sl_cpus_bind(const sl_cpuset *s)
{
    /* the raw call: glibc's wrapper is not on the async-signal-safe list,
     * and a forked child calls this before exec */
    _Static_assert(sizeof(cpu_set_t) == sizeof(sl_cpuset), "cpu_set_t and sl_cpuset differ");
    return syscall(SYS_sched_setaffinity, 0, sizeof *s, s->bits) == 0 ? 0 : -1;
}

int sl_cpus_quota_v2(const char *cpu_max)
{
    char quota[32];
    long long period = 0;
    if (sscanf(cpu_max, "%31s %lld", quota, &period) != 2 || period <= 0 || strcmp(quota, "max") == 0)
        return 0;
    char *end;
    long long q = strtoll(quota, &end, 10);
    if (*end || q <= 0)
        return 0;
    long long cpus = (q + period - 1) / period;
    return cpus > INT_MAX ? INT_MAX : (int)cpus;
}

/* The tightest cpu.max quota on the way from this process's cgroup v2 up
 * to the root; 0: none (or no cgroup v2). */
static int cgroup_quota(void)
{
    FILE *fp = fopen("/proc/self/cgroup", "r");
    if (!fp)
        return 0;
    char line[4096], path[4096] = "";
    while (fgets(line, sizeof line, fp))
        if (strncmp(line, "0::", 3) == 0) {
            snprintf(path, sizeof path, "%s", line + 3);
            path[strcspn(path, "\n")] = '\0';
        }
    fclose(fp);
    int best = 0;
    for (;;) {
        char file[4200], text[128];
        snprintf(file, sizeof file, "/sys/fs/cgroup%s/cpu.max", path);
        FILE *f = fopen(file, "r");
        if (f) {
            int q = fgets(text, sizeof text, f) ? sl_cpus_quota_v2(text) : 0;
            fclose(f);
            if (q > 0 && (best == 0 || q < best))
                best = q;
        }
        char *slash = strrchr(path, '/');
        if (!slash || !path[0])
            break;
        *slash = '\0';
    }
    return best;
}

int sl_cpus_available(void)
{
    sl_cpuset s;
    int n = sl_cpus_allowed(&s, NULL) ? 1 : sl_cpuset_count(&s);
    int quota = cgroup_quota();
    if (quota > 0 && quota < n)
        n = quota;
    return n > 0 ? n : 1;
}

int sl_cpus_threads(int requested)
{
    if (requested > 0)
        return requested;
    const char *env = getenv("OMP_NUM_THREADS");
    char *end;
    long n = env ? strtol(env, &end, 10) : 0;
    if (env && end != env && *end == '\0' && n > 0 && n <= 4096)
        return (int)n;
    return sl_cpus_available();
}
