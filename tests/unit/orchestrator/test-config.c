/*
 * orchestrator/config: pitr.yaml loading. A full file and one with defaults, relative path
 * resolution, agent addresses and durations, the JSON view (passwords masked), and every kind
 * of problem: each must be reported with its file:line:column, and all problems of a file in
 * one run.
 */
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <unistd.h>

#include "common/fs-util.h"
#include "common/macro.h"
#include "orchestrator/config.h"
#include "tests/unit/harness.h"

/* --- helpers --- */

static char *tmpdir;

static int setup(void **state)
{
    (void)state;
    tmpdir = test_mkdtemp("config");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    test_rm_rf(tmpdir);
    free(tmpdir);
    tmpdir = NULL;
    return 0;
}

/* Writes `text` to tmpdir/name; returns the path (freed by the caller). */
static char *write_yaml(const char *name, const char *text)
{
    char *path = NULL;
    assert_true(asprintf(&path, "%s/%s", tmpdir, name) > 0);
    ASSERT_OK(write_file_atomic(path, text, strlen(text), 0644));
    return path;
}

/* Loads `path` with stderr captured: returns what orch_config_load returned, the config in
 * *ret (or NULL), and everything logged in *ret_log (freed by the caller). */
static int load_capture(const char *path, OrchConfig **ret, char **ret_log)
{
    char *logpath = NULL;
    assert_true(asprintf(&logpath, "%s/stderr.log", tmpdir) > 0);
    int fd = open(logpath, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fd, STDERR_FILENO) >= 0);
    *ret = NULL;
    int r = orch_config_load(path, ret);
    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);
    close(fd);
    size_t n = 0;
    ASSERT_OK(read_file(logpath, 1 << 20, ret_log, &n));
    unlink(logpath);
    free(logpath);
    /* Shown when a test fails, to see what the loader said. */
    if (n)
        fprintf(stderr, "--- %s said:\n%s", path, *ret_log);
    return r;
}

/* Loads text that must fail with -EINVAL; returns the log. */
static char *load_bad(const char *text)
{
    _cleanup_free_ char *path = write_yaml("pitr.yaml", text);
    OrchConfig *cfg = NULL;
    char *log = NULL;
    int r = load_capture(path, &cfg, &log);
    assert_int_equal(r, -EINVAL);
    assert_null(cfg);
    return log;
}

static void assert_logged(const char *log, const char *what)
{
    if (!strstr(log, what))
        fail_msg("expected in the log: %s\nlog was:\n%s", what, log);
}

static void assert_not_logged(const char *log, const char *what)
{
    if (strstr(log, what))
        fail_msg("not expected in the log: %s\nlog was:\n%s", what, log);
}

static unsigned count_lines(const char *log, const char *what)
{
    unsigned n = 0;
    for (const char *p = log; (p = strstr(p, what)); p++)
        n++;
    return n;
}

#define NODES_OK                                                   \
    "nodes:\n"                                                     \
    "  - name: coord\n"                                            \
    "    role: coordinator\n"                                      \
    "    conninfo: \"host=127.0.0.1 port=5432 dbname=postgres\"\n" \
    "    agent: \"127.0.0.1:18080\"\n"                             \
    "  - name: w1\n"                                               \
    "    role: worker\n"                                           \
    "    conninfo: \"host=127.0.0.1 port=5433 dbname=postgres\"\n" \
    "    agent: w1.example\n"

/* --- valid files --- */

static void test_full(void **state)
{
    (void)state;
    _cleanup_free_ char *path = write_yaml(
            "full.yaml",
            "# a complete configuration\n"
            "cluster: demo-1.prod_x\n"
            "repository:\n"
            "  location: /var/lib/pitr/repo\n"
            "  key_file: /etc/pitr/repo.key\n"
            "barrier:\n"
            "  adapter: citus\n"
            "  lock_key: -9223372036854775808\n"
            "  timeout: 500ms\n"
            "csn:\n"
            "  sequence: myschema.my_csn\n"
            "wal_timeout: 2m\n"
            "tls:\n"
            "  ca: /etc/pitr/ca.crt\n"
            "  cert: /etc/pitr/orchestrator.crt\n"
            "  key: /etc/pitr/orchestrator.key\n"
            "nodes:\n"
            "  - name: w1\n"
            "    role: worker\n"
            "    conninfo: \"host=10.0.0.2 port=5432 user=postgres dbname=app\"\n"
            "    agent: \"10.0.0.2\"\n"
            "    pgdata: /srv/pg/w1\n"
            "  - {name: coord, role: coordinator, conninfo: 'postgresql://u@h:5433/app',\n"
            "     agent: 'coord.example:9000', pgdata: /srv/pg/coord}\n"
            "  - name: w2\n"
            "    role: worker\n"
            "    conninfo: host=10.0.0.3\n"
            "    agent: \"[fe80::1]:18081\"\n");
    OrchConfig *cfg = NULL;
    _cleanup_free_ char *log = NULL;
    ASSERT_OK(load_capture(path, &cfg, &log));
    assert_string_equal(log, "");

    _cleanup_free_ char *expect_path = NULL;
    char real[PATH_MAX];
    assert_non_null(realpath(tmpdir, real));
    assert_true(asprintf(&expect_path, "%s/full.yaml", real) > 0);
    assert_string_equal(cfg->path, expect_path);
    assert_string_equal(cfg->cluster, "demo-1.prod_x");
    assert_string_equal(cfg->repo_location, "/var/lib/pitr/repo");
    assert_string_equal(cfg->repo_key_file, "/etc/pitr/repo.key");
    assert_null(cfg->repo_passphrase_file);
    assert_int_equal(cfg->barrier_adapter, ORCH_BARRIER_CITUS);
    assert_true(cfg->barrier_lock_key == INT64_MIN);
    assert_int_equal(cfg->barrier_timeout_ms, 500);
    assert_string_equal(cfg->csn_sequence, "myschema.my_csn");
    assert_int_equal(cfg->wal_timeout_ms, 120000);
    assert_string_equal(cfg->tls_ca, "/etc/pitr/ca.crt");
    assert_string_equal(cfg->tls_cert, "/etc/pitr/orchestrator.crt");
    assert_string_equal(cfg->tls_key, "/etc/pitr/orchestrator.key");

    assert_int_equal(cfg->n_nodes, 3);
    assert_int_equal(cfg->coordinator, 1);
    const OrchNode *w1 = &cfg->nodes[0], *coord = &cfg->nodes[1], *w2 = &cfg->nodes[2];
    assert_string_equal(w1->name, "w1");
    assert_int_equal(w1->role, ORCH_ROLE_WORKER);
    assert_string_equal(w1->conninfo, "host=10.0.0.2 port=5432 user=postgres dbname=app");
    assert_string_equal(w1->agent, "10.0.0.2:18080");
    assert_string_equal(w1->agent_host, "10.0.0.2");
    assert_int_equal(w1->agent_port, ORCH_AGENT_DEFAULT_PORT);
    assert_string_equal(w1->pgdata, "/srv/pg/w1");
    assert_string_equal(coord->name, "coord");
    assert_int_equal(coord->role, ORCH_ROLE_COORDINATOR);
    assert_string_equal(coord->conninfo, "postgresql://u@h:5433/app");
    assert_string_equal(coord->agent, "coord.example:9000");
    assert_int_equal(coord->agent_port, 9000);
    assert_string_equal(coord->pgdata, "/srv/pg/coord");
    assert_string_equal(w2->agent, "[fe80::1]:18081");
    assert_string_equal(w2->agent_host, "fe80::1");
    assert_int_equal(w2->agent_port, 18081);
    assert_null(w2->pgdata);

    assert_ptr_equal(orch_config_coordinator(cfg), coord);
    assert_ptr_equal(orch_config_find_node(cfg, "w2"), w2);
    assert_ptr_equal(orch_config_find_node(cfg, "w1"), w1);
    assert_null(orch_config_find_node(cfg, "w3"));
    assert_null(orch_config_find_node(cfg, ""));
    assert_null(orch_config_free(cfg));
}

static void test_defaults(void **state)
{
    (void)state;
    _cleanup_free_ char *path = write_yaml("min.yaml", "cluster: c\n"
                                                       "repository: {location: /r}\n" NODES_OK);
    _cleanup_(orch_config_freep) OrchConfig *cfg = NULL;
    _cleanup_free_ char *log = NULL;
    ASSERT_OK(load_capture(path, &cfg, &log));
    assert_int_equal(cfg->barrier_adapter, ORCH_BARRIER_PLAIN);
    assert_true(cfg->barrier_lock_key == 7419);
    assert_int_equal(cfg->barrier_timeout_ms, 5000);
    assert_int_equal(cfg->barrier_lock_timeout_ms, 50);
    assert_int_equal(cfg->barrier_deadline_ms, 10000);
    assert_string_equal(cfg->csn_sequence, "pitr.csn");
    assert_int_equal(cfg->wal_timeout_ms, 60000);
    assert_null(cfg->repo_key_file);
    assert_null(cfg->repo_passphrase_file);
    assert_null(cfg->tls_ca);
    assert_null(cfg->tls_cert);
    assert_null(cfg->tls_key);
    assert_int_equal(cfg->n_nodes, 2);
    assert_int_equal(cfg->coordinator, 0);
    assert_string_equal(cfg->nodes[1].agent, "w1.example:18080");

    /* Optional keys with no value, or ~ / null, read as absent; empty sections are fine. */
    _cleanup_free_ char *path2 = write_yaml("nulls.yaml", "cluster: c\n"
                                                          "repository:\n"
                                                          "  location: /r\n"
                                                          "  key_file:\n"
                                                          "  passphrase_file: ~\n"
                                                          "barrier:\n"
                                                          "  timeout: null\n"
                                                          "tls:\n"
                                                          "csn: {}\n" NODES_OK);
    _cleanup_(orch_config_freep) OrchConfig *cfg2 = NULL;
    _cleanup_free_ char *log2 = NULL;
    ASSERT_OK(load_capture(path2, &cfg2, &log2));
    assert_null(cfg2->repo_key_file);
    assert_null(cfg2->repo_passphrase_file);
    assert_int_equal(cfg2->barrier_timeout_ms, 5000);
    assert_string_equal(cfg2->csn_sequence, "pitr.csn");

    /* A quoted "~" is a string, not null: a file name that happens to be "~". */
    _cleanup_free_ char *path3 = write_yaml("q.yaml", "cluster: c\n"
                                                      "repository:\n"
                                                      "  location: /r\n"
                                                      "  passphrase_file: \"~\"\n" NODES_OK);
    _cleanup_(orch_config_freep) OrchConfig *cfg3 = NULL;
    _cleanup_free_ char *log3 = NULL;
    ASSERT_OK(load_capture(path3, &cfg3, &log3));
    assert_non_null(cfg3->repo_passphrase_file);
    char real[PATH_MAX];
    assert_non_null(realpath(tmpdir, real));
    _cleanup_free_ char *tilde = NULL;
    assert_true(asprintf(&tilde, "%s/~", real) > 0);
    assert_string_equal(cfg3->repo_passphrase_file, tilde);
}

static void test_relative_paths(void **state)
{
    (void)state;
    _cleanup_free_ char *sub = NULL;
    assert_true(asprintf(&sub, "%s/etc", tmpdir) > 0);
    ASSERT_OK(mkdir_p(sub, 0755));
    _cleanup_free_ char *path = write_yaml("etc/pitr.yaml", "cluster: c\n"
                                                            "repository:\n"
                                                            "  location: ../repo\n"
                                                            "  passphrase_file: keys/pass\n"
                                                            "tls:\n"
                                                            "  ca: ca.crt\n"
                                                            "  cert: /abs/orch.crt\n"
                                                            "  key: ./orch.key\n" NODES_OK);
    char real[PATH_MAX];
    assert_non_null(realpath(tmpdir, real));
    _cleanup_free_ char *d = NULL, *p1 = NULL, *p2 = NULL, *p3 = NULL, *p4 = NULL, *pf = NULL;
    assert_true(asprintf(&d, "%s/etc", real) > 0);
    assert_true(asprintf(&p1, "%s/../repo", d) > 0);
    assert_true(asprintf(&p2, "%s/keys/pass", d) > 0);
    assert_true(asprintf(&p3, "%s/ca.crt", d) > 0);
    assert_true(asprintf(&p4, "%s/./orch.key", d) > 0);
    assert_true(asprintf(&pf, "%s/pitr.yaml", d) > 0);

    /* From an absolute path to the file. */
    _cleanup_(orch_config_freep) OrchConfig *cfg = NULL;
    _cleanup_free_ char *log = NULL;
    ASSERT_OK(load_capture(path, &cfg, &log));
    assert_string_equal(cfg->path, pf);
    assert_string_equal(cfg->repo_location, p1);
    assert_string_equal(cfg->repo_passphrase_file, p2);
    assert_string_equal(cfg->tls_ca, p3);
    assert_string_equal(cfg->tls_cert, "/abs/orch.crt");
    assert_string_equal(cfg->tls_key, p4);

    /* From a path relative to the working directory: the same absolute results. */
    char cwd[PATH_MAX];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(chdir(tmpdir), 0);
    _cleanup_(orch_config_freep) OrchConfig *cfg2 = NULL;
    _cleanup_free_ char *log2 = NULL;
    int r = load_capture("etc/pitr.yaml", &cfg2, &log2);
    assert_int_equal(chdir(cwd), 0);
    ASSERT_OK(r);
    assert_string_equal(cfg2->path, pf);
    assert_string_equal(cfg2->repo_location, p1);
    assert_string_equal(cfg2->tls_ca, p3);

    /* A URL is not a path. */
    _cleanup_free_ char *path3 =
            write_yaml("url.yaml", "cluster: c\n"
                                   "repository:\n"
                                   "  location: s3://bucket/prefix\n" NODES_OK);
    _cleanup_(orch_config_freep) OrchConfig *cfg3 = NULL;
    _cleanup_free_ char *log3 = NULL;
    ASSERT_OK(load_capture(path3, &cfg3, &log3));
    assert_string_equal(cfg3->repo_location, "s3://bucket/prefix");
}

static void test_durations(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        uint64_t ms;
    } good[] = {
        { "5s", 5000 },    { "500ms", 500 },   { "2m", 120000 },    { "1h", 3600000 },
        { "7", 7000 },     { "2.5", 2500 },    { "0.25s", 250 },    { "1ms", 1 },
        { "1.5m", 90000 }, { "3min", 180000 }, { "24h", 86400000 }, { "0.001", 1 },
    };
    for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
        uint64_t ms = 0;
        if (orch_duration_parse(good[i].s, &ms) < 0)
            fail_msg("\"%s\" should parse", good[i].s);
        if (ms != good[i].ms)
            fail_msg("\"%s\" gave %llu ms, expected %llu", good[i].s, (unsigned long long)ms,
                     (unsigned long long)good[i].ms);
    }
    static const char *const bad[] = {
        "",
        "s",
        "5 s",
        " 5s",
        "5sec",
        "-1s",
        "+5",
        "1e3",
        "inf",
        "nan",
        "0x10",
        "5s ",
        "0",
        "0ms",
        "0.0001s",
        "1.2.3",
        ".",
        "25h",
        "99999999999999999999h",
        "5S",
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        uint64_t ms = 42;
        if (orch_duration_parse(bad[i], &ms) != -EINVAL)
            fail_msg("\"%s\" should not parse", bad[i]);
        assert_int_equal(ms, 42); /* untouched on error */
    }
}

static void test_agent_addresses(void **state)
{
    (void)state;
    _cleanup_free_ char *path = write_yaml("agents.yaml", "cluster: c\n"
                                                          "repository: {location: /r}\n"
                                                          "nodes:\n"
                                                          "  - name: a\n"
                                                          "    role: coordinator\n"
                                                          "    conninfo: ''\n"
                                                          "    agent: h:1\n"
                                                          "  - name: b\n"
                                                          "    role: worker\n"
                                                          "    conninfo: ''\n"
                                                          "    agent: '[::1]'\n"
                                                          "  - name: c\n"
                                                          "    role: worker\n"
                                                          "    conninfo: ''\n"
                                                          "    agent: host.example:65535\n");
    /* conninfo '' is empty: not allowed (it is a required value). */
    char *log = NULL;
    OrchConfig *cfg = NULL;
    assert_int_equal(load_capture(path, &cfg, &log), -EINVAL);
    assert_int_equal(count_lines(log, "nodes[0].conninfo must not be empty"), 1);
    assert_int_equal(count_lines(log, "must not be empty"), 3);
    free(log);
    log = NULL;

    free(path);
    path = write_yaml("agents.yaml", "cluster: c\n"
                                     "repository: {location: /r}\n"
                                     "nodes:\n"
                                     "  - name: a\n"
                                     "    role: coordinator\n"
                                     "    conninfo: 'dbname=x'\n"
                                     "    agent: h:1\n"
                                     "  - name: b\n"
                                     "    role: worker\n"
                                     "    conninfo: 'dbname=x'\n"
                                     "    agent: '[::1]'\n"
                                     "  - name: c\n"
                                     "    role: worker\n"
                                     "    conninfo: 'dbname=x'\n"
                                     "    agent: host.example:65535\n");
    ASSERT_OK(load_capture(path, &cfg, &log));
    assert_string_equal(cfg->nodes[0].agent, "h:1");
    assert_int_equal(cfg->nodes[0].agent_port, 1);
    assert_string_equal(cfg->nodes[1].agent, "[::1]:18080");
    assert_string_equal(cfg->nodes[1].agent_host, "::1");
    assert_string_equal(cfg->nodes[2].agent, "host.example:65535");
    cfg = orch_config_free(cfg);
    free(log);
    log = NULL;

    static const char *const bad[] = { "h:0",   "h:65536", "h:",   ":80",  "::1",    "[::1",
                                       "[]:80", "[::1]80", "h:8x", "h:-1", "a b:80", "h:+80" };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        char text[512];
        snprintf(text, sizeof(text),
                 "cluster: c\n"
                 "repository: {location: /r}\n"
                 "nodes:\n"
                 "  - name: a\n"
                 "    role: coordinator\n"
                 "    conninfo: dbname=x\n"
                 "    agent: '%s'\n",
                 bad[i]);
        _cleanup_free_ char *l = load_bad(text);
        char expect[128];
        snprintf(expect, sizeof(expect), "pitr.yaml:7:12: nodes[0].agent: bad agent address \"%s\"",
                 bad[i]);
        assert_logged(l, expect);
        assert_logged(l, "1 problem found");
    }
}

/* The client takes the same addresses as the configuration (one parser for both). */
static void test_agent_address_parse(void **state)
{
    (void)state;
    static const struct {
        const char *in, *host, *normalized;
        uint16_t port;
    } good[] = {
        { "h", "h", "h:18080", ORCH_AGENT_DEFAULT_PORT },
        { "10.0.0.2:9", "10.0.0.2", "10.0.0.2:9", 9 },
        { "[::1]", "::1", "[::1]:18080", ORCH_AGENT_DEFAULT_PORT },
        { "[fe80::1]:65535", "fe80::1", "[fe80::1]:65535", 65535 },
    };
    for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
        OrchAgentAddress a;
        assert_int_equal(orch_agent_address_parse(good[i].in, &a), 0);
        assert_string_equal(a.host, good[i].host);
        assert_string_equal(a.normalized, good[i].normalized);
        assert_int_equal(a.port, good[i].port);
        orch_agent_address_done(&a);
    }
    static const char *const bad[] = { "", "::1", "user@h", "h/x", "h?x", "h#x", "[h]x",
                                       "[::1]:0", "h:99999", "a b", "h\n", "h:80\r" };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        OrchAgentAddress a;
        assert_int_equal(orch_agent_address_parse(bad[i], &a), -EINVAL);
        assert_null(a.host);
        assert_null(a.normalized);
    }
}

/* --- problems --- */

static void test_unknown_key(void **state)
{
    (void)state;
    _cleanup_free_ char *log = load_bad("cluster: c\n"       /* 1 */
                                        "repository:\n"      /* 2 */
                                        "  location: /r\n"   /* 3 */
                                        "  keyfile: /k\n"    /* 4 */
                                        "barrier:\n"         /* 5 */
                                        "  adapter: plain\n" /* 6 */
                                        "  lock-key: 1\n"    /* 7 */
                                        NODES_OK             /* 8-16 */
                                        "    pg_data: /x\n"  /* 17 */
                                        "nodse: []\n");      /* 18 */
    assert_logged(log, "pitr.yaml:4:3: unknown key \"keyfile\" in repository (expected location, "
                       "key_file, passphrase_file)");
    assert_logged(log, "pitr.yaml:7:3: unknown key \"lock-key\" in barrier (expected adapter, "
                       "lock_key, timeout, lock_timeout, deadline)");
    assert_logged(log, "pitr.yaml:17:5: unknown key \"pg_data\" in nodes[1] (expected name, role, "
                       "conninfo, agent, pgdata)");
    assert_logged(log, "pitr.yaml:18:1: unknown key \"nodse\" in the top level (expected cluster, "
                       "repository, barrier, csn, wal_timeout, tls, nodes)");
    assert_logged(log, "pitr.yaml: 4 problems found");
}

/* One attempt must fit in the deadline, whether both come from the file or one from the
 * command line (orch_config_check_barrier). */
static void test_lock_timeout_past_deadline(void **state)
{
    (void)state;
    _cleanup_free_ char *log = load_bad("cluster: c\n"                 /* 1 */
                                        "repository: {location: /r}\n" /* 2 */
                                        "barrier:\n"                   /* 3 */
                                        "  lock_timeout: 2s\n"         /* 4 */
                                        "  deadline: 1500ms\n"         /* 5 */
                                        NODES_OK);
    assert_logged(log, "pitr.yaml:4:3: barrier: lock_timeout (2000 ms) is longer than deadline "
                       "(1500 ms)");
    _cleanup_free_ char *log2 = load_bad("cluster: c\n"
                                         "repository: {location: /r}\n"
                                         "barrier: {lock_timeout: 11s}\n" NODES_OK);
    assert_logged(log2, "lock_timeout (11000 ms) is longer than deadline (10000 ms)");

    _cleanup_free_ char *path = write_yaml("ok.yaml", "cluster: c\n"
                                                      "repository: {location: /r}\n"
                                                      "barrier: {lock_timeout: 1s, deadline: 1s}\n"
                                                      NODES_OK);
    _cleanup_(orch_config_freep) OrchConfig *cfg = NULL;
    _cleanup_free_ char *log3 = NULL;
    ASSERT_OK(load_capture(path, &cfg, &log3));
    ASSERT_OK(orch_config_check_barrier(cfg, "--lock-timeout", "barrier.deadline"));
    cfg->barrier_lock_timeout_ms = 1001;
    ASSERT_ERR(EINVAL, orch_config_check_barrier(cfg, "--lock-timeout", "barrier.deadline"));
}

static void test_duplicate_key(void **state)
{
    (void)state;
    _cleanup_free_ char *log = load_bad("cluster: c\n"
                                        "repository: {location: /r}\n"
                                        "cluster: d\n" NODES_OK);
    assert_logged(log,
                  "pitr.yaml:3:1: duplicate key \"cluster\" in the top level (first at line 1)");
    assert_logged(log, "1 problem found");
}

static void test_duplicate_node(void **state)
{
    (void)state;
    _cleanup_free_ char *log = load_bad("cluster: c\n"
                                        "repository: {location: /r}\n"
                                        "nodes:\n"
                                        "  - name: coord\n" /* 4 */
                                        "    role: coordinator\n"
                                        "    conninfo: dbname=x\n"
                                        "    agent: a\n"
                                        "  - name: w\n" /* 8 */
                                        "    role: worker\n"
                                        "    conninfo: dbname=x\n"
                                        "    agent: b\n"
                                        "  - role: worker\n" /* 12 */
                                        "    name: w\n"      /* 13 */
                                        "    conninfo: dbname=x\n"
                                        "    agent: c\n");
    assert_logged(log, "pitr.yaml:13:11: duplicate node name \"w\" (first at line 8; names must be "
                       "unique)");
    assert_logged(log, "1 problem found");
}

static void test_two_coordinators(void **state)
{
    (void)state;
    _cleanup_free_ char *log = load_bad("cluster: c\n"
                                        "repository: {location: /r}\n"
                                        "nodes:\n"
                                        "  - name: a\n"
                                        "    role: coordinator\n" /* 5 */
                                        "    conninfo: dbname=x\n"
                                        "    agent: a\n"
                                        "  - name: b\n"
                                        "    role: coordinator\n" /* 9 */
                                        "    conninfo: dbname=x\n"
                                        "    agent: b\n"
                                        "  - name: c\n"
                                        "    role: coordinator\n" /* 13 */
                                        "    conninfo: dbname=x\n"
                                        "    agent: c\n");
    assert_logged(log, "pitr.yaml:9:11: a second coordinator (the first is at line 5; exactly one "
                       "node has role: coordinator)");
    assert_logged(log, "pitr.yaml:13:11: a second coordinator (the first is at line 5");
    assert_logged(log, "2 problems found");
}

static void test_no_coordinator(void **state)
{
    (void)state;
    _cleanup_free_ char *log = load_bad("cluster: c\n"
                                        "repository: {location: /r}\n"
                                        "nodes:\n"
                                        "  - name: a\n" /* 4, the list at column 3 */
                                        "    role: worker\n"
                                        "    conninfo: dbname=x\n"
                                        "    agent: a\n");
    assert_logged(log,
                  "pitr.yaml:4:3: no coordinator among the nodes (exactly one node needs role: "
                  "coordinator)");
    assert_logged(log, "1 problem found");

    /* A node whose role is wrong might have been meant as the coordinator: only its own
     * problem is reported. */
    _cleanup_free_ char *log2 = load_bad("cluster: c\n"
                                         "repository: {location: /r}\n"
                                         "nodes:\n"
                                         "  - name: a\n"
                                         "    role: coordinater\n"
                                         "    conninfo: dbname=x\n"
                                         "    agent: a\n");
    assert_logged(log2, "pitr.yaml:5:11: nodes[0].role: unknown role \"coordinater\" (expected "
                        "coordinator or worker)");
    assert_not_logged(log2, "no coordinator");
    assert_logged(log2, "1 problem found");
}

static void test_bad_adapter(void **state)
{
    (void)state;
    _cleanup_free_ char *log = load_bad("cluster: c\n"
                                        "repository: {location: /r}\n"
                                        "barrier:\n"
                                        "  adapter: PLAIN\n" NODES_OK);
    assert_logged(log,
                  "pitr.yaml:4:12: barrier.adapter: unknown adapter \"PLAIN\" (expected plain, "
                  "citus or none)");
    OrchBarrierAdapter a = _ORCH_BARRIER_MAX;
    ASSERT_OK(orch_barrier_adapter_from_string("none", &a));
    assert_int_equal(a, ORCH_BARRIER_NONE);
    assert_string_equal(orch_barrier_adapter_to_string(ORCH_BARRIER_CITUS), "citus");
    ASSERT_ERR(EINVAL, orch_barrier_adapter_from_string("", &a));
}

static void test_bad_duration(void **state)
{
    (void)state;
    _cleanup_free_ char *log = load_bad("cluster: c\n"
                                        "repository: {location: /r}\n"
                                        "barrier:\n"
                                        "  timeout: 5 sec\n"
                                        "wal_timeout: -1\n" NODES_OK);
    assert_logged(log, "pitr.yaml:4:12: barrier.timeout: bad duration \"5 sec\" (expected a number "
                       "with an optional unit ms, s, m or h");
    assert_logged(log, "pitr.yaml:5:14: wal_timeout: bad duration \"-1\"");
    assert_logged(log, "2 problems found");
}

static void test_missing(void **state)
{
    (void)state;
    /* No nodes at all, no cluster. */
    _cleanup_free_ char *log = load_bad("repository:\n"
                                        "  location: /r\n");
    assert_logged(log, "pitr.yaml:1:1: missing required key \"cluster\" in the top level");
    assert_logged(log, "pitr.yaml:1:1: missing required key \"nodes\" in the top level");
    assert_logged(log, "2 problems found");

    /* nodes with no value, an empty list, and a node missing its fields. */
    _cleanup_free_ char *log2 = load_bad("cluster: c\n"
                                         "repository:\n"
                                         "  key_file: k\n"
                                         "nodes:\n");
    assert_logged(log2, "pitr.yaml:3:3: missing required key \"location\" in repository");
    assert_logged(log2, "pitr.yaml:4:1: nodes needs a value");
    assert_logged(log2, "2 problems found");

    _cleanup_free_ char *log3 = load_bad("cluster: c\n"
                                         "repository: {location: /r}\n"
                                         "nodes: []\n");
    assert_logged(log3, "pitr.yaml:3:8: nodes must list at least one node");

    _cleanup_free_ char *log4 = load_bad("cluster: c\n"
                                         "repository: {location: /r}\n"
                                         "nodes:\n"
                                         "  - name: a\n");
    assert_logged(log4, "pitr.yaml:4:5: missing required key \"role\" in nodes[0]");
    assert_logged(log4, "pitr.yaml:4:5: missing required key \"conninfo\" in nodes[0]");
    assert_logged(log4, "pitr.yaml:4:5: missing required key \"agent\" in nodes[0]");
    assert_not_logged(log4, "no coordinator");
    assert_logged(log4, "3 problems found");
}

static void test_wrong_types(void **state)
{
    (void)state;
    _cleanup_free_ char *log = load_bad("cluster: [a, b]\n"    /* 1 */
                                        "repository:\n"        /* 2 */
                                        "  - location: /r\n"   /* 3 */
                                        "barrier: plain\n"     /* 4 */
                                        "csn:\n"               /* 5 */
                                        "  sequence: {a: b}\n" /* 6 */
                                        "nodes:\n"             /* 7 */
                                        "  name: a\n");        /* 8 */
    assert_logged(log, "pitr.yaml:1:10: cluster must be a scalar, found a sequence");
    assert_logged(log, "pitr.yaml:3:3: repository must be a mapping, found a sequence");
    assert_logged(log, "pitr.yaml:4:10: barrier must be a mapping, found a scalar");
    assert_logged(log, "pitr.yaml:6:13: csn.sequence must be a scalar, found a mapping");
    assert_logged(log, "pitr.yaml:8:3: nodes must be a sequence of nodes, found a mapping");
    assert_logged(log, "5 problems found");

    _cleanup_free_ char *log2 = load_bad("- cluster: c\n");
    assert_logged(log2, "pitr.yaml:1:1: the file must be a mapping, found a sequence");

    _cleanup_free_ char *log3 = load_bad("cluster: c\n"
                                         "repository: {location: /r}\n"
                                         "nodes:\n"
                                         "  - coord\n"
                                         "  - [x]\n");
    assert_logged(log3, "pitr.yaml:4:5: nodes[0] must be a mapping, found a scalar");
    assert_logged(log3, "pitr.yaml:5:5: nodes[1] must be a mapping, found a sequence");

    _cleanup_free_ char *log4 = load_bad("cluster: c\n"
                                         "repository: {location: /r}\n"
                                         "? [complex, key]\n"
                                         ": 1\n" NODES_OK);
    assert_logged(log4, "pitr.yaml:3:3: keys in the top level must be scalars, found a sequence");
}

static void test_bad_values(void **state)
{
    (void)state;
    _cleanup_free_ char *log = load_bad("cluster: 'my cluster'\n"                 /* 1 */
                                        "repository:\n"                           /* 2 */
                                        "  location: /r\n"                        /* 3 */
                                        "  key_file: /k\n"                        /* 4 */
                                        "  passphrase_file: /p\n"                 /* 5 */
                                        "barrier:\n"                              /* 6 */
                                        "  lock_key: 12x\n"                       /* 7 */
                                        "csn:\n"                                  /* 8 */
                                        "  sequence: \"x'); DROP TABLE t; --\"\n" /* 9 */
                                        "tls:\n"                                  /* 10 */
                                        "  cert: c.crt\n"                         /* 11 */
                                        "nodes:\n"                                /* 12 */
                                        "  - name: ..\n"                          /* 13 */
                                        "    role: coordinator\n"                 /* 14 */
                                        "    conninfo: \"host=x port\"\n"         /* 15 */
                                        "    agent: a\n"                          /* 16 */
                                        "    pgdata: srv/pg\n");                  /* 17 */
    assert_logged(log, "pitr.yaml:1:10: cluster: bad name \"my cluster\"");
    assert_logged(log,
                  "pitr.yaml:3:3: repository: key_file and passphrase_file exclude each other");
    assert_logged(log, "pitr.yaml:7:13: barrier.lock_key: bad integer \"12x\"");
    assert_logged(log, "pitr.yaml:9:13: csn.sequence: bad sequence name");
    assert_logged(log, "pitr.yaml:11:3: tls: cert and key go together");
    assert_logged(log, "pitr.yaml:13:11: nodes[0].name: bad name \"..\"");
    assert_logged(log, "pitr.yaml:15:15: nodes[0].conninfo: bad libpq connection string: ");
    assert_logged(log, "pitr.yaml:17:13: nodes[0].pgdata: \"srv/pg\" is not an absolute path");
    assert_logged(log, "8 problems found");

    /* Out of range integers, and the edges that are fine. */
    _cleanup_free_ char *log2 = load_bad("cluster: c\n"
                                         "repository: {location: /r}\n"
                                         "barrier: {lock_key: 9223372036854775808}\n" NODES_OK);
    assert_logged(log2, "barrier.lock_key: bad integer \"9223372036854775808\"");
}

static void test_syntax_error(void **state)
{
    (void)state;
    _cleanup_free_ char *log = load_bad("cluster: c\n"
                                        "repository:\n"
                                        "  location: /r\n"
                                        "  key_file: [unclosed\n"
                                        "nodes:\n");
    assert_logged(log, "pitr.yaml:5:6: YAML syntax error: ");
    assert_not_logged(log, "problems found");

    _cleanup_free_ char *log2 = load_bad("cluster: c\n"
                                         "  bad: indentation\n");
    assert_logged(log2, "pitr.yaml:2:6: YAML syntax error: mapping values are not allowed in this "
                        "context");

    _cleanup_free_ char *log3 = load_bad("cluster: c\tx\n"
                                         "nodes: \"abc\n");
    assert_logged(log3, "YAML syntax error: found unexpected end of stream");

    /* Not UTF-8: libyaml knows the byte only. */
    _cleanup_free_ char *log4 = load_bad("cluster: \xff\xfe\n");
    assert_logged(log4, "pitr.yaml: byte 9: invalid leading UTF-8 octet");

    /* Two documents: the second starts at its "---", line 12. */
    _cleanup_free_ char *log5 = load_bad("cluster: c\n"
                                         "repository: {location: /r}\n" NODES_OK "---\n"
                                         "cluster: d\n");
    assert_logged(log5, "pitr.yaml:12:1: a second YAML document (expected one document only)");

    /* Empty file, and one with only comments. */
    _cleanup_free_ char *log6 = load_bad("");
    assert_logged(log6, "pitr.yaml:1:1: empty configuration");
    _cleanup_free_ char *log7 = load_bad("# nothing\n\n");
    assert_logged(log7, "pitr.yaml:1:1: empty configuration");
}

static void test_no_file(void **state)
{
    (void)state;
    _cleanup_free_ char *path = NULL;
    assert_true(asprintf(&path, "%s/nonexistent.yaml", tmpdir) > 0);
    OrchConfig *cfg = NULL;
    _cleanup_free_ char *log = NULL;
    assert_int_equal(load_capture(path, &cfg, &log), -ENOENT);
    assert_null(cfg);
    assert_logged(log, "could not open configuration");
    assert_logged(log, "nonexistent.yaml");

    /* A directory is not a configuration either. */
    OrchConfig *cfg2 = NULL;
    _cleanup_free_ char *log2 = NULL;
    assert_int_equal(load_capture(tmpdir, &cfg2, &log2), -EISDIR);
    assert_null(cfg2);
    assert_logged(log2, "is a directory");
}

static void test_json(void **state)
{
    (void)state;
    _cleanup_free_ char *path =
            write_yaml("j.yaml", "cluster: c\n"
                                 "repository: {location: /r, key_file: /k}\n"
                                 "barrier: {adapter: none, lock_key: 42, timeout: 1.5, "
                                 "lock_timeout: 20ms, deadline: 3s}\n"
                                 "nodes:\n"
                                 "  - name: coord\n"
                                 "    role: coordinator\n"
                                 "    conninfo: \"host=h user=u password='s3 cr\\\\et' dbname=d\"\n"
                                 "    agent: h\n"
                                 "    pgdata: /pg\n"
                                 "  - name: w\n"
                                 "    role: worker\n"
                                 "    conninfo: postgresql://u:hunter2@h2:5433/d\n"
                                 "    agent: h2:1\n");
    _cleanup_(orch_config_freep) OrchConfig *cfg = NULL;
    _cleanup_free_ char *log = NULL;
    ASSERT_OK(load_capture(path, &cfg, &log));
    json_t *j = orch_config_to_json(cfg);
    assert_non_null(j);
    char *text = json_dumps(j, JSON_SORT_KEYS);
    assert_non_null(text);
    assert_null(strstr(text, "s3 cr"));
    assert_null(strstr(text, "hunter2"));

    assert_string_equal(json_string_value(json_object_get(j, "cluster")), "c");
    assert_string_equal(json_string_value(json_object_get(j, "coordinator")), "coord");
    assert_string_equal(json_string_value(json_object_get(j, "path")), cfg->path);
    json_t *repo = json_object_get(j, "repository");
    assert_string_equal(json_string_value(json_object_get(repo, "location")), "/r");
    assert_string_equal(json_string_value(json_object_get(repo, "key_file")), "/k");
    assert_true(json_is_null(json_object_get(repo, "passphrase_file")));
    json_t *bar = json_object_get(j, "barrier");
    assert_string_equal(json_string_value(json_object_get(bar, "adapter")), "none");
    assert_int_equal(json_integer_value(json_object_get(bar, "lock_key")), 42);
    assert_int_equal(json_integer_value(json_object_get(bar, "timeout_ms")), 1500);
    assert_int_equal(json_integer_value(json_object_get(bar, "lock_timeout_ms")), 20);
    assert_int_equal(json_integer_value(json_object_get(bar, "deadline_ms")), 3000);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "csn"), "sequence")),
                        "pitr.csn");
    assert_int_equal(json_integer_value(json_object_get(j, "wal_timeout_ms")), 60000);
    assert_true(json_is_null(json_object_get(json_object_get(j, "tls"), "ca")));

    json_t *nodes = json_object_get(j, "nodes");
    assert_int_equal(json_array_size(nodes), 2);
    json_t *n0 = json_array_get(nodes, 0), *n1 = json_array_get(nodes, 1);
    assert_string_equal(json_string_value(json_object_get(n0, "name")), "coord");
    assert_string_equal(json_string_value(json_object_get(n0, "role")), "coordinator");
    assert_string_equal(json_string_value(json_object_get(n0, "agent")), "h:18080");
    assert_int_equal(json_integer_value(json_object_get(n0, "agent_port")), 18080);
    assert_string_equal(json_string_value(json_object_get(n0, "pgdata")), "/pg");
    assert_string_equal(json_string_value(json_object_get(n0, "conninfo")),
                        "user=u password=******** dbname=d host=h");
    assert_string_equal(json_string_value(json_object_get(n1, "role")), "worker");
    assert_true(json_is_null(json_object_get(n1, "pgdata")));
    assert_string_equal(json_string_value(json_object_get(n1, "conninfo")),
                        "user=u password=******** dbname=d host=h2 port=5433");
    free(text);
    json_decref(j);
}

RUN_TESTS(cmocka_unit_test_setup_teardown(test_full, setup, teardown),
          cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
          cmocka_unit_test_setup_teardown(test_relative_paths, setup, teardown),
          cmocka_unit_test(test_durations),
          cmocka_unit_test_setup_teardown(test_agent_addresses, setup, teardown),
          cmocka_unit_test(test_agent_address_parse),
          cmocka_unit_test_setup_teardown(test_unknown_key, setup, teardown),
          cmocka_unit_test_setup_teardown(test_lock_timeout_past_deadline, setup, teardown),
          cmocka_unit_test_setup_teardown(test_duplicate_key, setup, teardown),
          cmocka_unit_test_setup_teardown(test_duplicate_node, setup, teardown),
          cmocka_unit_test_setup_teardown(test_two_coordinators, setup, teardown),
          cmocka_unit_test_setup_teardown(test_no_coordinator, setup, teardown),
          cmocka_unit_test_setup_teardown(test_bad_adapter, setup, teardown),
          cmocka_unit_test_setup_teardown(test_bad_duration, setup, teardown),
          cmocka_unit_test_setup_teardown(test_missing, setup, teardown),
          cmocka_unit_test_setup_teardown(test_wrong_types, setup, teardown),
          cmocka_unit_test_setup_teardown(test_bad_values, setup, teardown),
          cmocka_unit_test_setup_teardown(test_syntax_error, setup, teardown),
          cmocka_unit_test_setup_teardown(test_no_file, setup, teardown),
          cmocka_unit_test_setup_teardown(test_json, setup, teardown))
