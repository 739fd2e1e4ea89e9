#include "agent/log-limit.h"

static void refill(AgentLogLimit *l, double now)
{
    if (l->last == 0 || now < l->last) /* first use, or a clock that is not the one before */
        l->last = now;
    l->tokens += (now - l->last) * l->per_second;
    if (l->tokens > l->burst)
        l->tokens = l->burst;
    l->last = now;
}

bool agent_log_limit_flush(AgentLogLimit *l, double now, uint64_t *ret_held_back)
{
    refill(l, now);
    if (l->held_back == 0 || l->tokens < 1)
        return false;
    l->tokens -= 1;
    *ret_held_back = l->held_back;
    l->held_back = 0;
    return true;
}

bool agent_log_limit_pass(AgentLogLimit *l, double now, uint64_t *ret_held_back)
{
    refill(l, now);
    if (l->tokens < 1) {
        l->held_back++;
        return false;
    }
    l->tokens -= 1;
    *ret_held_back = l->held_back;
    l->held_back = 0;
    return true;
}
