#include "cli/cli.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pipeline/metrics_http.h"

int cli_usage(const char *cmd, const char *usage, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "sluice %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    /* the whole usage would bury the one line that says what was wrong */
    (void)usage;
    fprintf(stderr, "\ntry 'sluice %s --help'\n", cmd);
    return CLI_USAGE;
}

int cli_bad_number(const char *cmd, const char *opt, const char *value, double lo, double hi, bool real)
{
    if (real)
        return cli_usage(cmd, NULL, "bad value '%s' for --%s: must be a number %.10g..%.10g", value, opt, lo, hi);
    return cli_usage(cmd, NULL, "bad value '%s' for --%s: must be a whole number %.0f..%.0f", value, opt, lo,
                     hi);
}

int cli_fail(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "sluice %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return CLI_FAIL;
}

int cli_parse_long(const char *s, long lo, long hi, long *out)
{
    if (!s || !*s)
        return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int cli_parse_int(const char *s, int lo, int hi, int *out)
{
    long v;
    if (cli_parse_long(s, lo, hi, &v))
        return -1;
    *out = (int)v;
    return 0;
}

int cli_parse_u64(const char *s, uint64_t *out)
{
    /* strtoull would accept "-1" as a huge number */
    if (!s || *s < '0' || *s > '9')
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

int cli_parse_float(const char *s, double lo, double hi, float *out)
{
    if (!s || !*s)
        return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || end == s || !isfinite(v) || v < lo || v > hi)
        return -1;
    *out = (float)v;
    return 0;
}

int cli_getopt(int argc, char **argv, const char *shortopts, const struct option *longopts,
               const char *usage)
{
    opterr = 0;
    int c = getopt_long(argc, argv, shortopts, longopts, NULL);
    if (c == '?') {
        if (optopt && optopt < 256)
            cli_usage(argv[0], usage, "unknown option '-%c'", optopt);
        else
            cli_usage(argv[0], usage, "unknown option '%s'", argv[optind - 1]);
        return '?';
    }
    if (c == ':') {
        cli_usage(argv[0], usage, "option '%s' needs a value", argv[optind - 1]);
        return '?';
    }
    return c;
}

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

const char *cli_opt_name(const struct option *longopts, int c)
{
    for (const struct option *o = longopts; o->name; o++)
        if (o->val == c)
            return o->name;
    return "?";
}

int cli_check_metrics_port(const char *cmd, const char *arg)
{
    char ip[64];
    int port;
    sl_err err;
    if (pl_metrics_http_parse(arg, ip, sizeof ip, &port, &err))
        return cli_usage(cmd, NULL, "--metrics-port: %s", err.msg);
    return 0;
}

int cli_kv_type(const char *s)
{
    int t = sl_type_from_name(s);
    return t == SL_TYPE_F32 || t == SL_TYPE_F16 || t == SL_TYPE_BF16 || t == SL_TYPE_Q8_0 ? t : -1;
}

void cli_on_stop_signals(void (*handler)(int))
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}
