/*
 * orchestrator/timeline: history files as PostgreSQL writes them, and which base backups
 * recover along a timeline: the current one, an ancestor's before its switch point, never an
 * abandoned timeline nor an ancestor's stretch after the switch.
 */
#include <stdbool.h>

#include "orchestrator/timeline.h"
#include "tests/unit/harness.h"

#define LSN(hi, lo) (((uint64_t)(hi) << 32) | (uint64_t)(lo))

/* Timeline 4 of a node restored three times: 1 -> 2 at 0/3000000, 2 -> 4 at 0/5000100
 * (timeline 3 was another branch of 2, abandoned). As pg_wal/00000004.history reads. */
static const char HISTORY_4[] = "1\t0/3000000\tno recovery target specified\n"
                                "\n"
                                "2\t0/5000100\tat restore point \"fork\"\n";

static void test_parse(void **state)
{
    (void)state;
    OrchTimelineHistory h;
    ASSERT_OK(orch_timeline_history_parse(4, HISTORY_4, &h, NULL));
    assert_int_equal(h.tli, 4);
    assert_int_equal(h.n_ancestors, 2);
    assert_int_equal(h.ancestors[0].tli, 1);
    assert_true(h.ancestors[0].end == LSN(0, 0x3000000));
    assert_int_equal(h.ancestors[1].tli, 2);
    assert_true(h.ancestors[1].end == LSN(0, 0x5000100));
    orch_timeline_history_done(&h);

    /* Timeline 1 has no file; comments, blanks and spaces instead of tabs are read as
     * PostgreSQL reads them. */
    ASSERT_OK(orch_timeline_history_parse(1, NULL, &h, NULL));
    assert_int_equal(h.n_ancestors, 0);
    orch_timeline_history_done(&h);
    ASSERT_OK(orch_timeline_history_parse(3, "# made by hand\n  1 1/0 reason\n\n", &h, NULL));
    assert_int_equal(h.n_ancestors, 1);
    assert_true(h.ancestors[0].end == LSN(1, 0));
    orch_timeline_history_done(&h);
}

static void test_parse_bad(void **state)
{
    (void)state;
    OrchTimelineHistory h;
    unsigned line = 0;
    static const struct {
        uint32_t tli;
        const char *text;
        unsigned line;
    } bad[] = {
        { 2, "1\n", 1 },                          /* no switch point */
        { 2, "1\tnot-an-lsn\tx\n", 1 },           /* bad LSN */
        { 2, "x\t0/3000000\n", 1 },               /* bad timeline */
        { 2, "0\t0/3000000\n", 1 },               /* timeline 0 does not exist */
        { 2, "2\t0/3000000\n", 1 },               /* not an ancestor of itself */
        { 4, "1\t0/3000000\n1\t0/4000000\n", 2 }, /* timelines must increase */
        { 4, "1\t0/5000000\n2\t0/4000000\n", 2 }, /* a child cannot begin before its parent */
        { 0, "", 0 },                             /* no timeline 0 */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        line = 0;
        ASSERT_ERR(EINVAL, orch_timeline_history_parse(bad[i].tli, bad[i].text, &h, &line));
        assert_int_equal(line, bad[i].line);
    }
}

static void test_has_backup(void **state)
{
    (void)state;
    OrchTimelineHistory h;
    ASSERT_OK(orch_timeline_history_parse(4, HISTORY_4, &h, NULL));

    /* The current timeline: any backup of it. */
    assert_true(orch_timeline_history_has_backup(&h, 4, LSN(0, 0x6000028), LSN(0, 0x6000100)));
    /* Ancestors, before their switch points; a backup that ends exactly at the switch has all
     * the WAL it needs on the ancestor. */
    assert_true(orch_timeline_history_has_backup(&h, 1, LSN(0, 0x2000028), LSN(0, 0x2000100)));
    assert_true(orch_timeline_history_has_backup(&h, 2, LSN(0, 0x4000028), LSN(0, 0x5000100)));
    /* Stop not known: the start decides. */
    assert_true(orch_timeline_history_has_backup(&h, 2, LSN(0, 0x4000028), 0));
    /* An ancestor's stretch after its switch point was abandoned: a backup that began there,
     * or that was still running when the timeline switched. */
    assert_false(orch_timeline_history_has_backup(&h, 1, LSN(0, 0x3000028), LSN(0, 0x3000100)));
    assert_false(orch_timeline_history_has_backup(&h, 1, LSN(0, 0x3000000), 0));
    assert_false(orch_timeline_history_has_backup(&h, 1, LSN(0, 0x2000028), LSN(0, 0x3000100)));
    /* Timelines that are no ancestors: an abandoned sibling, a later one. */
    assert_false(orch_timeline_history_has_backup(&h, 3, LSN(0, 0x4000028), LSN(0, 0x4000100)));
    assert_false(orch_timeline_history_has_backup(&h, 5, LSN(0, 0x7000028), LSN(0, 0x7000100)));

    uint64_t end = 0;
    assert_true(orch_timeline_history_find(&h, 2, &end));
    assert_true(end == LSN(0, 0x5000100));
    assert_true(orch_timeline_history_find(&h, 4, &end));
    assert_true(end == UINT64_MAX);
    assert_false(orch_timeline_history_find(&h, 3, &end));
    assert_true(end == UINT64_MAX); /* untouched */
    orch_timeline_history_done(&h);

    /* Timeline 1: only its own backups. */
    ASSERT_OK(orch_timeline_history_parse(1, "", &h, NULL));
    assert_true(orch_timeline_history_has_backup(&h, 1, LSN(5, 0), LSN(5, 0x100)));
    assert_false(orch_timeline_history_has_backup(&h, 2, LSN(0, 0x2000028), 0));
    orch_timeline_history_done(&h);
}

RUN_TESTS(cmocka_unit_test(test_parse), cmocka_unit_test(test_parse_bad),
          cmocka_unit_test(test_has_backup))
