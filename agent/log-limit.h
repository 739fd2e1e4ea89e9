/*
 * A budget for log lines that an outsider can provoke (refused connections, accept() failures
 * when file descriptors run out), so that a flood of them cannot fill the disk: a token
 * bucket that lets `burst` lines through at once and `per_second` lines a second after that.
 * The lines held back are counted, and the next line let through reports how many there were.
 * Not thread-safe: each limit belongs to one thread (the event loop's).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

typedef struct AgentLogLimit {
    double per_second; /* refill rate, > 0 */
    double burst;      /* most lines at once, >= 1 */
    double tokens;     /* set to `burst` by AGENT_LOG_LIMIT_INIT */
    double last;       /* time of the last refill, seconds on any monotonic clock */
    uint64_t held_back;
} AgentLogLimit;

#define AGENT_LOG_LIMIT_INIT(rate, max_burst)                                                      \
    ((AgentLogLimit){ .per_second = (rate), .burst = (max_burst), .tokens = (max_burst) })

/* Whether a line may be logged at `now` (seconds, monotonic). When it may, *ret_held_back is
 * the number of lines held back since the last one let through, and that count restarts;
 * when it may not, the line is counted as held back. */
bool agent_log_limit_pass(AgentLogLimit *l, double now, uint64_t *ret_held_back);
/* For a line that closes a series ("working again"): whether lines were held back and one
 * may be logged at `now`, which then takes its place in the budget. Never counts a line as
 * held back. */
bool agent_log_limit_flush(AgentLogLimit *l, double now, uint64_t *ret_held_back);
