/*
 * Which files of a data directory or tablespace the base backup treats as relation files (page
 * checks, page deltas) and which it leaves out (agent/pgdata.c): database directories of the
 * data directory, of a tablespace location, and of an in-place tablespace (pg_tblspc/<oid>/,
 * the form a copy started from a mounted snapshot has).
 */
#include "tests/unit/harness.h"

#include <stdbool.h>
#include <sys/stat.h>

#include "agent/pgdata.h"
#include "common/macro.h"

static bool is_relation(bool is_tablespace, const char *relpath)
{
    AgentPgdataFilter f = { .root = "/nonexistent", .is_tablespace = is_tablespace };
    AgentRelFile rf;
    return agent_pgdata_relation(&f, relpath, &rf);
}

static void test_relation_files(void **state)
{
    (void)state;
    static const char *const in_pgdata[] = {
        "base/5/16385",
        "base/5/16385_fsm",
        "base/5/16385.2",
        "global/1262",
        "pg_tblspc/16384/PG_15_202209061/5/16385",
        "pg_tblspc/16384/PG_15_202209061/5/16385_vm",
    };
    for (size_t i = 0; i < ARRAY_SIZE(in_pgdata); i++) {
        print_message("%s\n", in_pgdata[i]);
        assert_true(is_relation(false, in_pgdata[i]));
    }
    static const char *const not_relations[] = {
        "16385",
        "base/16385",
        "base/5/PG_VERSION",
        "base/x5/16385",
        "base/5/6/16385",
        "global/pg_control",
        "pg_tblspc/16384",
        "pg_tblspc/16384/16385",
        "pg_tblspc/16384/PG_15_202209061/16385",
        "pg_tblspc/16384/PG_15_202209061/5/6/16385",
        "pg_tblspc/x/PG_15_202209061/5/16385",
        "pg_tblspc//PG_15_202209061/5/16385",
        "pg_tblspc/16384/global/1262",
        "pg_tblspc/16384/base/5/16385",
        "PG_15_202209061/5/16385", /* only in a tablespace location */
    };
    for (size_t i = 0; i < ARRAY_SIZE(not_relations); i++) {
        print_message("%s\n", not_relations[i]);
        assert_false(is_relation(false, not_relations[i]));
    }
    assert_true(is_relation(true, "PG_15_202209061/5/16385"));
    assert_false(is_relation(true, "base/5/16385"));
    assert_false(is_relation(true, "global/1262"));
    assert_false(is_relation(true, "pg_tblspc/16384/PG_15_202209061/5/16385"));
}

static void test_excluded(void **state)
{
    (void)state;
    AgentPgdataFilter f = { .root = "/nonexistent" };
    struct stat file = { .st_mode = S_IFREG | 0600 }, dir = { .st_mode = S_IFDIR | 0700 };
    /* temporary relations, in a database directory of either kind */
    assert_true(agent_pgdata_is_excluded(&f, "base/5/t3_16390", &file));
    assert_true(agent_pgdata_is_excluded(&f, "pg_tblspc/16384/PG_15_202209061/5/t3_16390", &file));
    assert_false(agent_pgdata_is_excluded(&f, "pg_tblspc/16384/PG_15_202209061/5/16390", &file));
    assert_false(agent_pgdata_is_excluded(&f, "pg_tblspc/16384", &dir));
    assert_true(agent_pgdata_is_excluded(&f, "pg_wal/000000010000000000000001", &file));
    assert_false(agent_pgdata_is_excluded(&f, "pg_wal/archive_status", &dir));
    assert_true(agent_pgdata_is_excluded(&f, "tablespace_map", &file));
    assert_true(agent_pgdata_is_excluded(&f, "base/5/pgsql_tmp", &dir));
}

RUN_TESTS(cmocka_unit_test(test_relation_files), cmocka_unit_test(test_excluded))
