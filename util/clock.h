/* Monotonic time in seconds, for deadlines and durations (never for wall
 * clock dates: it does not jump when the system clock is set). */
#ifndef SLUICE_CLOCK_H
#define SLUICE_CLOCK_H

double sl_now_s(void);

#endif
