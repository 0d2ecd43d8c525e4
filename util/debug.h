/* Debug-level log lines: printed only when SLUICE_DEBUG is set (to
 * anything but "0"), for events that are expected but worth seeing when
 * looking into a run (answers from before a stage's restart, ...). */
#ifndef SLUICE_DEBUG_H
#define SLUICE_DEBUG_H

#include <stdbool.h>

bool sl_debug_on(void);

/* Prints "sluice: debug: ..." to stderr when debugging is on, once per
 * *once flag (a caller's static or per-object bool). */
void sl_debug_once(bool *once, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
