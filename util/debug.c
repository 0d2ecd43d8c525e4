#include "util/debug.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool sl_debug_on(void)
{
    const char *v = getenv("SLUICE_DEBUG");
    return v && *v && strcmp(v, "0") != 0;
}

void sl_debug_once(bool *once, const char *fmt, ...)
{
    if (*once || !sl_debug_on())
        return;
    *once = true;
    va_list ap;
    va_start(ap, fmt);
    fputs("sluice: debug: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}
