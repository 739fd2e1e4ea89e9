/*
 * transfer-workload: money transfers between the nodes of a sharded PostgreSQL cluster, with
 * two-phase commit under the plain commit barrier protocol (docs/BARRIER.md), and a checker
 * that says whether a cluster (typically one restored from a snapshot) holds a consistent cut.
 *
 *   transfer-workload setup CONNINFO...
 *       Node i gets accounts(id, balance): ids i*1000+1 .. i*1000+100, balance 1000 each, and
 *       an empty ledger(csn, xfer, account, delta). The first node is the coordinator: it also
 *       gets the schema pitr and the sequence pitr.csn. Fresh clusters only (not idempotent).
 *
 *   transfer-workload run --key K --log FILE [--windows FILE] [--seconds S] [--gap-ms G]
 *                         [--seed N] CONNINFO...
 *       Until S seconds passed (default: until SIGTERM or SIGINT, after which the transfer in
 *       flight is finished cleanly), moves 1..100 between random accounts of two different
 *       nodes A and B. Coordinator session (its own connection to the first node): BEGIN;
 *       pg_advisory_xact_lock_shared(K); nextval('pitr.csn') -> csn. On A and on B: BEGIN;
 *       UPDATE accounts; INSERT INTO ledger (csn, xfer = csn, account, delta); PREPARE
 *       TRANSACTION 'xfer_<csn>'. Then COMMIT PREPARED on A, a pause of G ms (default 20: it
 *       widens the window in which a cut by wall clock would split a transfer), COMMIT
 *       PREPARED on B, COMMIT on the coordinator session, and the line "csn A B" appended to
 *       FILE (flushed). With --windows, also "csn T1 T2" (flushed): the wall-clock times (seconds
 *       since the epoch) after COMMIT PREPARED on A returned and before it is sent to B; a
 *       recovery target time between them cuts that transfer in two. Any SQL error: reported
 *       with the node index, exit 1.
 *
 *   transfer-workload check [--csn N] [--log FILE] [--expect-total T] [--json] CONNINFO...
 *       On a quiet cluster (no workload running): (1) the balances add up to T (default
 *       100 * 1000 * number of nodes); (2) with --csn, no ledger row has csn > N; with --log,
 *       every logged transfer (with csn <= N when --csn is given) has both its rows, on the two
 *       nodes the log names; (3) every transfer has exactly two legs, on two different nodes,
 *       that cancel out, each on the node that holds its account: a transfer with one leg
 *       visible is a cut through a commit; (4) a prepared transaction 'xfer_<csn>' whose other
 *       leg is committed on another node is half-committed. One line per finding, then
 *       "consistent" or "INCONSISTENT: <n> problems". Exit 0 consistent, 1 inconsistent, 2 on
 *       connection or usage errors.
 *
 * Needs max_prepared_transactions > 0 on every server.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#define ACCOUNTS_PER_NODE 100
#define INITIAL_BALANCE   1000
#define EXIT_INCONSISTENT 1
#define EXIT_TROUBLE      2

static void die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void die(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("transfer-workload: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(code);
}

static const char *pq_msg(PGconn *conn, PGresult *res)
{
    static char buf[1024];
    const char *m =
            res && *PQresultErrorMessage(res) ? PQresultErrorMessage(res) : PQerrorMessage(conn);
    snprintf(buf, sizeof(buf), "%s", m);
    size_t n = strlen(buf);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        buf[--n] = 0;
    return buf;
}

/* Runs one statement on node `node`; any failure ends the program with `code`. */
static PGresult *exec_or_die(PGconn *conn, const char *node, const char *sql, int code)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType s = PQresultStatus(res);
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK)
        die(code, "%s: %s failed: %s", node, sql, pq_msg(conn, res));
    return res;
}

static void exec_cmd(PGconn *conn, const char *node, const char *sql, int code)
{
    PQclear(exec_or_die(conn, node, sql, code));
}

static PGconn *connect_or_die(const char *conninfo, size_t i)
{
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK)
        die(EXIT_TROUBLE, "node %zu: could not connect (%s): %s", i, conninfo, pq_msg(c, NULL));
    /* Quiet the NOTICEs of IF NOT EXISTS. */
    PQclear(PQexec(c, "SET client_min_messages = warning"));
    return c;
}

static PGconn **connect_all(char **conninfos, size_t n)
{
    PGconn **conns = calloc(n, sizeof(*conns));
    if (!conns)
        die(EXIT_TROUBLE, "out of memory");
    for (size_t i = 0; i < n; i++)
        conns[i] = connect_or_die(conninfos[i], i);
    return conns;
}

static void finish_all(PGconn **conns, size_t n)
{
    for (size_t i = 0; i < n; i++)
        PQfinish(conns[i]);
    free(conns);
}

static int64_t parse_int(const char *opt, const char *s, int64_t min)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno != 0 || v < min)
        die(EXIT_TROUBLE, "%s: bad number \"%s\"", opt, s);
    return v;
}

/* --- setup --- */

static int cmd_setup(int argc, char **argv)
{
    if (argc < 2)
        die(EXIT_TROUBLE, "usage: transfer-workload setup CONNINFO...");
    size_t n = (size_t)argc - 1;
    PGconn **conns = connect_all(argv + 1, n);
    for (size_t i = 0; i < n; i++) {
        char node[32], sql[512];
        snprintf(node, sizeof(node), "node %zu", i);
        PGresult *res = exec_or_die(conns[i], node, "SHOW max_prepared_transactions", EXIT_TROUBLE);
        if (atoi(PQgetvalue(res, 0, 0)) <= 0)
            die(EXIT_TROUBLE,
                "%s: max_prepared_transactions is 0: two-phase commit is off "
                "(set it in postgresql.conf and restart)",
                node);
        PQclear(res);
        if (i == 0) {
            exec_cmd(conns[i], node, "CREATE SCHEMA IF NOT EXISTS pitr", EXIT_TROUBLE);
            exec_cmd(conns[i], node, "CREATE SEQUENCE IF NOT EXISTS pitr.csn AS bigint CACHE 1",
                     EXIT_TROUBLE);
        }
        exec_cmd(conns[i], node,
                 "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL)",
                 EXIT_TROUBLE);
        exec_cmd(conns[i], node,
                 "CREATE TABLE ledger (csn bigint NOT NULL, xfer bigint NOT NULL, "
                 "account int NOT NULL, delta bigint NOT NULL)",
                 EXIT_TROUBLE);
        snprintf(sql, sizeof(sql),
                 "INSERT INTO accounts SELECT g, %d FROM generate_series(%zu, %zu) AS g",
                 INITIAL_BALANCE, i * 1000 + 1, i * 1000 + ACCOUNTS_PER_NODE);
        exec_cmd(conns[i], node, sql, EXIT_TROUBLE);
    }
    finish_all(conns, n);
    printf("set up %zu nodes: %d accounts of %d each per node\n", n, ACCOUNTS_PER_NODE,
           INITIAL_BALANCE);
    return 0;
}

/* --- run --- */

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Sleeps the whole time even when a signal arrives: the transfer in flight must finish. */
static void sleep_ms(int64_t ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* One leg: the account's update and its ledger row, prepared. */
static void leg_prepare(PGconn *conn, size_t node_i, int account, int64_t delta, int64_t csn)
{
    char node[32], sql[256];
    snprintf(node, sizeof(node), "node %zu", node_i);
    exec_cmd(conn, node, "BEGIN", EXIT_INCONSISTENT);
    snprintf(sql, sizeof(sql),
             "UPDATE accounts SET balance = balance + (%" PRId64 ") WHERE id = %d", delta, account);
    PGresult *res = exec_or_die(conn, node, sql, EXIT_INCONSISTENT);
    if (strcmp(PQcmdTuples(res), "1") != 0)
        die(EXIT_INCONSISTENT, "%s: account %d not found (was setup run?)", node, account);
    PQclear(res);
    snprintf(sql, sizeof(sql),
             "INSERT INTO ledger (csn, xfer, account, delta) VALUES (%" PRId64 ", %" PRId64
             ", %d, %" PRId64 ")",
             csn, csn, account, delta);
    exec_cmd(conn, node, sql, EXIT_INCONSISTENT);
    snprintf(sql, sizeof(sql), "PREPARE TRANSACTION 'xfer_%" PRId64 "'", csn);
    exec_cmd(conn, node, sql, EXIT_INCONSISTENT);
}

static void leg_commit(PGconn *conn, size_t node_i, int64_t csn)
{
    char node[32], sql[64];
    snprintf(node, sizeof(node), "node %zu", node_i);
    snprintf(sql, sizeof(sql), "COMMIT PREPARED 'xfer_%" PRId64 "'", csn);
    exec_cmd(conn, node, sql, EXIT_INCONSISTENT);
}

static int cmd_run(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "key", required_argument, NULL, 'k' },     { "log", required_argument, NULL, 'l' },
        { "seconds", required_argument, NULL, 's' }, { "gap-ms", required_argument, NULL, 'g' },
        { "seed", required_argument, NULL, 'r' },    { "windows", required_argument, NULL, 'w' },
        { NULL, 0, NULL, 0 },
    };
    int64_t key = 7419, seconds = -1, gap_ms = 20;
    uint64_t seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 16);
    bool have_key = false;
    const char *logpath = NULL, *windowspath = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'w': windowspath = optarg; break;
        case 'k':
            key = parse_int("--key", optarg, INT64_MIN);
            have_key = true;
            break;
        case 'l': logpath = optarg; break;
        case 's': seconds = parse_int("--seconds", optarg, 0); break;
        case 'g': gap_ms = parse_int("--gap-ms", optarg, 0); break;
        case 'r': seed = (uint64_t)parse_int("--seed", optarg, 0); break;
        default:
            die(EXIT_TROUBLE, "usage: transfer-workload run --key K --log FILE [--windows FILE] "
                              "[--seconds S] [--gap-ms G] [--seed N] CONNINFO...");
        }
    }
    size_t n = (size_t)(argc - optind);
    if (!have_key || !logpath || n < 2)
        die(EXIT_TROUBLE, "run needs --key, --log and at least two CONNINFOs");

    FILE *log = fopen(logpath, "ae");
    if (!log)
        die(EXIT_TROUBLE, "could not open log \"%s\": %s", logpath, strerror(errno));
    FILE *windows = windowspath ? fopen(windowspath, "ae") : NULL;
    if (windowspath && !windows)
        die(EXIT_TROUBLE, "could not open \"%s\": %s", windowspath, strerror(errno));
    PGconn **conns = connect_all(argv + optind, n);
    PGconn *coord = connect_or_die(argv[optind], 0);

    struct sigaction sa = { .sa_handler = on_signal }; /* no SA_RESTART; libpq retries EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    unsigned short xsubi[3] = { (unsigned short)seed, (unsigned short)(seed >> 16),
                                (unsigned short)(seed >> 32) };
    char lock_sql[64];
    snprintf(lock_sql, sizeof(lock_sql), "SELECT pg_advisory_xact_lock_shared(%" PRId64 ")", key);
    double t0 = now_s();
    uint64_t transfers = 0;
    while (!stop_requested && (seconds < 0 || now_s() - t0 < (double)seconds)) {
        size_t a = (size_t)nrand48(xsubi) % n, b = (size_t)nrand48(xsubi) % (n - 1);
        if (b >= a)
            b++;
        int acct_a = (int)(a * 1000 + 1 + (size_t)nrand48(xsubi) % ACCOUNTS_PER_NODE);
        int acct_b = (int)(b * 1000 + 1 + (size_t)nrand48(xsubi) % ACCOUNTS_PER_NODE);
        int64_t amount = 1 + nrand48(xsubi) % 100;

        /* Share the barrier before the CSN is drawn, and keep it until every leg committed. */
        exec_cmd(coord, "node 0 (coordinator session)", "BEGIN", EXIT_INCONSISTENT);
        exec_cmd(coord, "node 0 (coordinator session)", lock_sql, EXIT_INCONSISTENT);
        PGresult *res = exec_or_die(coord, "node 0 (coordinator session)",
                                    "SELECT nextval('pitr.csn')", EXIT_INCONSISTENT);
        int64_t csn = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        PQclear(res);

        leg_prepare(conns[a], a, acct_a, -amount, csn);
        leg_prepare(conns[b], b, acct_b, amount, csn);
        leg_commit(conns[a], a, csn);
        double t1 = wall_s();
        sleep_ms(gap_ms);
        double t2 = wall_s();
        leg_commit(conns[b], b, csn);
        if (windows && (fprintf(windows, "%" PRId64 " %.6f %.6f\n", csn, t1, t2) < 0 ||
                        fflush(windows) != 0))
            die(EXIT_TROUBLE, "could not write \"%s\": %s", windowspath, strerror(errno));
        exec_cmd(coord, "node 0 (coordinator session)", "COMMIT", EXIT_INCONSISTENT);

        if (fprintf(log, "%" PRId64 " %zu %zu\n", csn, a, b) < 0 || fflush(log) != 0)
            die(EXIT_TROUBLE, "could not write log \"%s\": %s", logpath, strerror(errno));
        transfers++;
    }
    double elapsed = now_s() - t0;
    PQfinish(coord);
    finish_all(conns, n);
    fclose(log);
    if (windows)
        fclose(windows);
    printf("%" PRIu64 " transfers in %.1f s (%.1f per second)%s\n", transfers, elapsed,
           elapsed > 0 ? (double)transfers / elapsed : 0.0,
           stop_requested ? ", stopped by signal" : "");
    return 0;
}

/* --- check --- */

typedef struct Row {
    int64_t csn, xfer, delta;
    int account;
    size_t node;
} Row;

#define MAX_PRINTED 100 /* findings printed in text mode; the count covers them all */

typedef struct Findings {
    json_t *problems, *notes; /* arrays of strings */
    bool json;
    size_t printed;
} Findings;

static void finding(Findings *f, bool problem, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static void finding(Findings *f, bool problem, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    json_array_append_new(problem ? f->problems : f->notes, json_string(buf));
    if (!f->json && f->printed++ < MAX_PRINTED)
        printf("%s%s\n", problem ? "" : "note: ", buf);
}

static int row_cmp(const void *pa, const void *pb)
{
    const Row *a = pa, *b = pb;
    if (a->xfer != b->xfer)
        return a->xfer < b->xfer ? -1 : 1;
    return a->node < b->node ? -1 : a->node > b->node;
}

/* The rows of transfer `xfer` in the sorted array, or NULL; *ret_n their count. */
static const Row *rows_of(const Row *rows, size_t n, int64_t xfer, size_t *ret_n)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (rows[mid].xfer < xfer)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t k = 0;
    while (lo + k < n && rows[lo + k].xfer == xfer)
        k++;
    *ret_n = k;
    return k ? &rows[lo] : NULL;
}

static bool has_leg_on(const Row *legs, size_t k, size_t node)
{
    for (size_t i = 0; i < k; i++)
        if (legs[i].node == node)
            return true;
    return false;
}

typedef struct Logged {
    int64_t csn;
    size_t a, b;
} Logged;

/* Reads the run's log ("csn A B" lines), checked against the n nodes given, before anything
 * else: a usage error must not come after a page of findings. */
static Logged *log_read(const char *path, size_t n, Findings *f, size_t *ret_n)
{
    FILE *lf = fopen(path, "re");
    if (!lf)
        die(EXIT_TROUBLE, "could not open log \"%s\": %s", path, strerror(errno));
    Logged *v = NULL;
    size_t count = 0, cap = 0;
    char line[256];
    unsigned lineno = 0;
    while (fgets(line, sizeof(line), lf)) {
        lineno++;
        Logged l;
        char nl;
        if (sscanf(line, "%" SCNd64 " %zu %zu%c", &l.csn, &l.a, &l.b, &nl) != 4 || nl != '\n') {
            /* A last line cut short by a kill is no news; anything else is. */
            if (!strchr(line, '\n') && feof(lf)) {
                finding(f, false, "log line %u is incomplete, ignored", lineno);
                break;
            }
            die(EXIT_TROUBLE, "log \"%s\" line %u: expected \"csn A B\"", path, lineno);
        }
        if (l.a >= n || l.b >= n)
            die(EXIT_TROUBLE, "log \"%s\" line %u: node index beyond the %zu nodes given", path,
                lineno, n);
        if (count == cap) {
            cap = cap ? 2 * cap : 1024;
            Logged *p = realloc(v, cap * sizeof(*v));
            if (!p)
                die(EXIT_TROUBLE, "out of memory");
            v = p;
        }
        v[count++] = l;
    }
    fclose(lf);
    *ret_n = count;
    return v;
}

static int cmd_check(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "csn", required_argument, NULL, 'c' },
        { "log", required_argument, NULL, 'l' },
        { "expect-total", required_argument, NULL, 't' },
        { "json", no_argument, NULL, 'j' },
        { NULL, 0, NULL, 0 },
    };
    int64_t cut = -1, expect_total = -1;
    const char *logpath = NULL;
    Findings f = { .problems = json_array(), .notes = json_array() };
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'c': cut = parse_int("--csn", optarg, 0); break;
        case 'l': logpath = optarg; break;
        case 't': expect_total = parse_int("--expect-total", optarg, INT64_MIN); break;
        case 'j': f.json = true; break;
        default:
            die(EXIT_TROUBLE, "usage: transfer-workload check [--csn N] [--log FILE] "
                              "[--expect-total T] [--json] CONNINFO...");
        }
    }
    size_t n = (size_t)(argc - optind);
    if (n < 1)
        die(EXIT_TROUBLE, "check needs at least one CONNINFO");
    if (expect_total < 0)
        expect_total = (int64_t)(ACCOUNTS_PER_NODE * INITIAL_BALANCE * n);
    size_t n_log = 0;
    Logged *log = logpath ? log_read(logpath, n, &f, &n_log) : NULL;
    PGconn **conns = connect_all(argv + optind, n);

    /* Everything is read first, then judged: the checks below are pure. */
    int64_t total = 0, max_csn = 0;
    Row *rows = NULL;
    size_t n_rows = 0;
    for (size_t i = 0; i < n; i++) {
        char node[32];
        snprintf(node, sizeof(node), "node %zu", i);
        PGresult *res = exec_or_die(conns[i], node,
                                    "SELECT coalesce(sum(balance), 0) FROM accounts", EXIT_TROUBLE);
        total += strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        PQclear(res);
        res = exec_or_die(conns[i], node, "SELECT csn, xfer, account, delta FROM ledger",
                          EXIT_TROUBLE);
        size_t k = (size_t)PQntuples(res);
        Row *p = realloc(rows, (n_rows + k + 1) * sizeof(*rows));
        if (!p)
            die(EXIT_TROUBLE, "out of memory");
        rows = p;
        for (size_t j = 0; j < k; j++) {
            Row *r = &rows[n_rows++];
            r->csn = strtoll(PQgetvalue(res, (int)j, 0), NULL, 10);
            r->xfer = strtoll(PQgetvalue(res, (int)j, 1), NULL, 10);
            r->account = atoi(PQgetvalue(res, (int)j, 2));
            r->delta = strtoll(PQgetvalue(res, (int)j, 3), NULL, 10);
            r->node = i;
            if (r->csn > max_csn)
                max_csn = r->csn;
        }
        PQclear(res);
    }
    qsort(rows, n_rows, sizeof(*rows), row_cmp);

    /* (1) money is neither made nor lost. */
    if (total != expect_total)
        finding(&f, true,
                "sum of balances is %" PRId64 ", expected %" PRId64 " (off by %" PRId64 ")", total,
                expect_total, total - expect_total);

    /* (2) and (3): each transfer, whole or not at all, and none after the cut. */
    size_t n_xfers = 0;
    for (size_t i = 0; i < n_rows;) {
        size_t k;
        const Row *legs = rows_of(rows, n_rows, rows[i].xfer, &k);
        int64_t xfer = rows[i].xfer, sum = 0;
        n_xfers++;
        for (size_t j = 0; j < k; j++) {
            sum += legs[j].delta;
            if (cut >= 0 && legs[j].csn > cut)
                finding(&f, true,
                        "transfer %" PRId64 ": row with csn %" PRId64 " on node %zu is "
                        "after the cut at csn %" PRId64,
                        xfer, legs[j].csn, legs[j].node, cut);
            if ((size_t)(legs[j].account / 1000) != legs[j].node)
                finding(&f, true,
                        "transfer %" PRId64 ": node %zu has a row for account %d, which "
                        "lives on node %d",
                        xfer, legs[j].node, legs[j].account, legs[j].account / 1000);
        }
        if (k == 1)
            finding(&f, true,
                    "transfer %" PRId64 " (csn %" PRId64 "): only one leg visible, on node "
                    "%zu (delta %" PRId64 "): the cut splits a commit",
                    xfer, legs[0].csn, legs[0].node, legs[0].delta);
        else if (k != 2 || legs[0].node == legs[1].node)
            finding(&f, true, "transfer %" PRId64 ": %zu rows (expected one on each of two nodes)",
                    xfer, k);
        else if (sum != 0)
            finding(&f, true,
                    "transfer %" PRId64 ": legs on nodes %zu and %zu do not cancel out "
                    "(sum %" PRId64 ")",
                    xfer, legs[0].node, legs[1].node, sum);
        i += k;
    }

    /* (2) with the log: what the workload saw committed is there. */
    size_t n_logged = 0;
    for (size_t i = 0; i < n_log; i++) {
        const Logged *l = &log[i];
        if (cut >= 0 && l->csn > cut)
            continue;
        n_logged++;
        size_t k;
        const Row *legs = rows_of(rows, n_rows, l->csn, &k);
        size_t ends[2] = { l->a, l->b };
        for (size_t e = 0; e < 2; e++)
            if (!has_leg_on(legs, k, ends[e]))
                finding(&f, true,
                        "transfer %" PRId64 " (node %zu -> node %zu) committed before the "
                        "cut but missing on node %zu",
                        l->csn, l->a, l->b, ends[e]);
    }
    free(log);

    /* (4) prepared transactions left behind: half-committed if the other leg committed. */
    for (size_t i = 0; i < n; i++) {
        char node[32];
        snprintf(node, sizeof(node), "node %zu", i);
        PGresult *res = exec_or_die(conns[i], node,
                                    "SELECT gid FROM pg_prepared_xacts WHERE gid LIKE 'xfer\\_%' "
                                    "AND database = current_database() ORDER BY gid",
                                    EXIT_TROUBLE);
        for (int j = 0; j < PQntuples(res); j++) {
            const char *gid = PQgetvalue(res, j, 0);
            int64_t csn = strtoll(gid + 5, NULL, 10);
            size_t k;
            const Row *legs = rows_of(rows, n_rows, csn, &k);
            bool elsewhere = false;
            for (size_t m = 0; m < k; m++)
                if (legs[m].node != i) {
                    finding(&f, true,
                            "node %zu: %s is still prepared but its other leg is committed "
                            "on node %zu (half-committed)",
                            i, gid, legs[m].node);
                    elsewhere = true;
                }
            if (!elsewhere)
                finding(&f, false, "node %zu: %s is prepared (in doubt), committed nowhere else", i,
                        gid);
        }
        PQclear(res);
    }
    finish_all(conns, n);
    free(rows);

    size_t n_problems = json_array_size(f.problems);
    if (f.json) {
        json_t *j =
                json_pack("{s:b, s:O, s:O, s:I, s:I, s:I, s:I, s:I}", "consistent", n_problems == 0,
                          "problems", f.problems, "notes", f.notes, "total", (json_int_t)total,
                          "transfers", (json_int_t)n_xfers, "logged_checked", (json_int_t)n_logged,
                          "max_csn", (json_int_t)max_csn, "nodes", (json_int_t)n);
        if (!j)
            die(EXIT_TROUBLE, "out of memory");
        json_dumpf(j, stdout, JSON_INDENT(2));
        putchar('\n');
        json_decref(j);
    } else {
        if (f.printed > MAX_PRINTED)
            printf("(%zu more findings not shown)\n", f.printed - MAX_PRINTED);
        printf("checked %zu nodes: %zu transfers (max csn %" PRId64 "), %zu logged transfers, "
               "total balance %" PRId64 "\n",
               n, n_xfers, max_csn, n_logged, total);
        if (n_problems == 0)
            printf("consistent\n");
        else
            printf("INCONSISTENT: %zu problems\n", n_problems);
    }
    json_decref(f.problems);
    json_decref(f.notes);
    return n_problems == 0 ? 0 : EXIT_INCONSISTENT;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2)
        die(EXIT_TROUBLE, "usage: transfer-workload setup|run|check ... (see the source's header)");
    const char *cmd = argv[1];
    /* Subcommand options start after the verb. */
    argc--;
    argv++;
    if (strcmp(cmd, "setup") == 0)
        return cmd_setup(argc, argv);
    if (strcmp(cmd, "run") == 0)
        return cmd_run(argc, argv);
    if (strcmp(cmd, "check") == 0)
        return cmd_check(argc, argv);
    die(EXIT_TROUBLE, "unknown command \"%s\" (expected setup, run or check)", cmd);
}
