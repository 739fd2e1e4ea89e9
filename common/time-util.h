/*
 * Durations and waits: one monotonic clock (never jumps with the wall clock) for every layer.
 */
#pragma once

#include <errno.h>
#include <stdint.h>
#include <time.h>

/* Seconds on the monotonic clock: subtract two readings for a duration. */
static inline double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Microseconds on the same clock, for deadlines kept as integers. */
static inline int64_t mono_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Sleep the whole interval, even when a signal interrupts it. */
static inline void sleep_ms(unsigned ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}
