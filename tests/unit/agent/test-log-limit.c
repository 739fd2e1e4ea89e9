/*
 * The log budget of agent/log-limit.h on an explicit clock: a burst goes through, then one
 * line per 1/rate seconds, each reporting the lines held back before it; a flush reports a
 * series that ended without costing a held-back count; a clock that goes back does not mint
 * lines. And the connection cap of agent/service-conn.h against the open-file limit.
 */
#include "tests/unit/harness.h"

#include "agent/log-limit.h"
#include "agent/service-conn.h"

/* How many of `n` lines offered at `now` pass; *held is the count the last passing one
 * reported. */
static unsigned offer(AgentLogLimit *l, double now, unsigned n, uint64_t *held)
{
    unsigned passed = 0;
    for (unsigned i = 0; i < n; i++) {
        uint64_t h;
        if (agent_log_limit_pass(l, now, &h)) {
            passed++;
            *held = h;
        }
    }
    return passed;
}

static void test_once_a_second(void **state)
{
    (void)state;
    AgentLogLimit l = AGENT_LOG_LIMIT_INIT(1, 1);
    uint64_t held = 99;
    /* A busy loop's worth of failures in the first second: one line. */
    assert_int_equal(offer(&l, 100.0, 1000000, &held), 1);
    assert_int_equal(held, 0);
    assert_int_equal(offer(&l, 100.5, 1000, &held), 0);
    /* A second later: one line, which counts everything held back since the first. */
    assert_int_equal(offer(&l, 101.0, 1, &held), 1);
    assert_int_equal(held, 999999 + 1000);
    /* Ten seconds of it: about ten lines, never more. */
    unsigned lines = 0;
    for (int ms = 0; ms < 10000; ms++)
        lines += offer(&l, 101.0 + ms / 1000.0, 50, &held);
    assert_in_range(lines, 9, 10);
    assert_in_range(held, 1, 50 * 1000);
}

static void test_burst(void **state)
{
    (void)state;
    AgentLogLimit l = AGENT_LOG_LIMIT_INIT(2, 20);
    uint64_t held = 0;
    assert_int_equal(offer(&l, 5.0, 61, &held), 20);
    /* Half a second refills one line; it reports the 41 held back. */
    assert_int_equal(offer(&l, 5.5, 1, &held), 1);
    assert_int_equal(held, 41);
    /* A long quiet spell refills the burst, not more. */
    assert_int_equal(offer(&l, 1000.0, 100, &held), 20);
}

static void test_flush(void **state)
{
    (void)state;
    AgentLogLimit l = AGENT_LOG_LIMIT_INIT(1, 1);
    uint64_t held = 0, flushed = 0;
    /* Nothing held back: nothing to say. */
    assert_false(agent_log_limit_flush(&l, 10.0, &flushed));
    assert_int_equal(offer(&l, 10.0, 5, &held), 1);
    /* Held back, but the budget is spent: no line, and the count stays as it is. */
    assert_false(agent_log_limit_flush(&l, 10.2, &flushed));
    assert_false(agent_log_limit_flush(&l, 10.4, &flushed));
    assert_int_equal(l.held_back, 4);
    assert_true(agent_log_limit_flush(&l, 11.0, &flushed));
    assert_int_equal(flushed, 4);
    assert_int_equal(l.held_back, 0);
    /* The flush took the second's line. */
    assert_int_equal(offer(&l, 11.0, 1, &held), 0);
}

static void test_clock_going_back(void **state)
{
    (void)state;
    AgentLogLimit l = AGENT_LOG_LIMIT_INIT(1, 1);
    uint64_t held = 0;
    assert_int_equal(offer(&l, 50.0, 1, &held), 1);
    /* Earlier than the last reading: no refill, and nothing negative either. */
    assert_int_equal(offer(&l, 40.0, 3, &held), 0);
    assert_int_equal(offer(&l, 40.5, 1, &held), 0);
    assert_int_equal(offer(&l, 41.0, 1, &held), 1);
    assert_int_equal(held, 4);
}

static void test_conn_max(void **state)
{
    (void)state;
    bool over;
    /* Default: 64, or half the open-file limit when that is less. */
    assert_int_equal(agent_conn_max(0, 1024, &over), AGENT_CONN_DEFAULT_MAX);
    assert_false(over);
    assert_int_equal(agent_conn_max(0, 64, &over), 32);
    assert_false(over);
    assert_int_equal(agent_conn_max(0, 1, &over), 1);
    assert_int_equal(agent_conn_max(0, UINT64_MAX, &over), AGENT_CONN_DEFAULT_MAX);
    /* Asked for: kept, with a word when it is more than half the limit. */
    assert_int_equal(agent_conn_max(500, 64, &over), 500);
    assert_true(over);
    assert_int_equal(agent_conn_max(32, 64, &over), 32);
    assert_false(over);
    assert_int_equal(agent_conn_max(200, 1024, &over), 200);
    assert_false(over);
}

RUN_TESTS(cmocka_unit_test(test_once_a_second), cmocka_unit_test(test_burst),
          cmocka_unit_test(test_flush), cmocka_unit_test(test_clock_going_back),
          cmocka_unit_test(test_conn_max))
