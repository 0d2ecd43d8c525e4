/* Minimal assertions for the C test programs: a failed check prints where
 * and what, and the program exits non-zero at the end. */
#ifndef SLUICE_TEST_H
#define SLUICE_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int t_failures;
static int t_checks;

#define CHECK(cond) do { t_checks++; if (!(cond)) { t_failures++; \
    fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); } } while (0)
#define CHECKF(cond, ...) do { t_checks++; if (!(cond)) { t_failures++; \
    fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
    fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)
#define CHECK_NEAR(a, b, tol) do { double a_ = (a), b_ = (b); t_checks++; \
    if (!(fabs(a_ - b_) <= (tol))) { t_failures++; \
    fprintf(stderr, "%s:%d: %s = %g, %s = %g, differ by more than %g\n", \
            __FILE__, __LINE__, #a, a_, #b, b_, (double)(tol)); } } while (0)
/* Checks that an error message contains a fragment. */
#define CHECK_ERR_HAS(err, frag) do { t_checks++; if (!strstr((err).msg, (frag))) { t_failures++; \
    fprintf(stderr, "%s:%d: error \"%s\" lacks \"%s\"\n", __FILE__, __LINE__, (err).msg, (frag)); } } while (0)

/* Writes a synthetic model with `$SLUICE synth ARGS -o PATH`, PATH made by
 * mkstemp from path (a template ending in XXXXXX, rewritten in place to the
 * file's name). 0 on success, -1 when SLUICE is unset or either step fails. */
static inline int test_synth(const char *args, char *path)
{
    const char *sluice = getenv("SLUICE");
    int fd = mkstemp(path);
    if (!sluice || fd < 0)
        return -1;
    close(fd);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s synth %s -o %s 2>/dev/null", sluice, args, path);
    return system(cmd) == 0 ? 0 : -1;
}

static inline int test_finish(const char *name)
{
    if (t_checks == 0) {
        fprintf(stderr, "%s: no checks ran\n", name);
        return 1;
    }
    fprintf(stderr, "%s: %d checks, %d failed\n", name, t_checks, t_failures);
    return t_failures ? 1 : 0;
}

#endif
