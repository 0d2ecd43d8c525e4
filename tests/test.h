/* Minimal assertions for the C test programs: a failed check prints where
 * and what, and the program exits non-zero at the end. */
#ifndef SLUICE_TEST_H
#define SLUICE_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
