#include "orchestrator/barrier.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <pthread.h>

#include "agent/pq.h"
#include "common/log.h"
#include "common/macro.h"
#include "common/time-util.h"

/*
 * Every query goes out with PQsendQuery* and is collected by one poll() loop (calls_wait), so
 * the restore points of all nodes cost one round trip, and so the caller's wait is bounded by
 * a deadline of its own instead of by the server's good will. The watchdog thread is the other
 * half: at the deadline it sends cancel requests. It is a thread because PQcancel() blocks
 * until the server's postmaster closes the cancel connection, which a hung host never does;
 * the caller gives up GRACE_US after the deadline whatever the watchdog is stuck in.
 */

#define GRACE_US INT64_C(1000000) /* for a cancel request to take effect */

/* --- the watchdog thread --- */

typedef struct Watchdog {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* signalled on re-arm and on stop; waits on CLOCK_MONOTONIC */
    int64_t deadline_us; /* protected by lock */
    bool done;           /* protected by lock: the barrier is over, the thread exits */
    unsigned refs;       /* protected by lock: the caller and the thread; last one frees */
    atomic_bool fired;   /* set by the thread before it cancels anything */
    PGcancel **cancels;  /* one per node; used by the thread only once it fires */
    size_t n_cancels;
} Watchdog;

static void watchdog_unref(Watchdog *w)
{
    pthread_mutex_lock(&w->lock);
    bool last = --w->refs == 0;
    pthread_mutex_unlock(&w->lock);
    if (!last)
        return;
    for (size_t i = 0; i < w->n_cancels; i++)
        if (w->cancels[i])
            PQfreeCancel(w->cancels[i]);
    free(w->cancels);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

static void *watchdog_main(void *arg)
{
    Watchdog *w = arg;
    bool fire = false;
    pthread_mutex_lock(&w->lock);
    while (!w->done) {
        if (mono_now_us() >= w->deadline_us) {
            fire = true;
            break;
        }
        struct timespec ts = { .tv_sec = w->deadline_us / 1000000,
                               .tv_nsec = (long)(w->deadline_us % 1000000) * 1000 };
        pthread_cond_timedwait(&w->cond, &w->lock, &ts);
    }
    pthread_mutex_unlock(&w->lock);
    if (fire) {
        atomic_store(&w->fired, true);
        /* Every node: cancelling an idle session is harmless, and we do not know which of
         * them the caller is waiting for at this instant. */
        for (size_t i = 0; i < w->n_cancels; i++) {
            char err[256];
            if (w->cancels[i] && !PQcancel(w->cancels[i], err, sizeof(err)))
                log_debug("barrier watchdog: cancel request to node %zu failed: %s", i, err);
        }
    }
    watchdog_unref(w);
    return NULL;
}

static int watchdog_start(PGconn *const *conns, size_t n, int64_t deadline_us, Watchdog **ret)
{
    Watchdog *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->cancels = calloc(n, sizeof(*w->cancels));
    if (!w->cancels) {
        free(w);
        return -ENOMEM;
    }
    w->n_cancels = n;
    for (size_t i = 0; i < n; i++)
        w->cancels[i] = PQgetCancel(conns[i]); /* NULL only for a broken connection */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&w->lock, NULL);
    w->deadline_us = deadline_us;
    w->refs = 2;

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    int r = pthread_create(&t, &attr, watchdog_main, w);
    pthread_attr_destroy(&attr);
    if (r != 0) {
        w->refs = 1;
        watchdog_unref(w);
        return -r;
    }
    *ret = w;
    return 0;
}

static void watchdog_arm(Watchdog *w, int64_t deadline_us)
{
    pthread_mutex_lock(&w->lock);
    w->deadline_us = deadline_us;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

/* Between two attempts of the plain barrier nothing runs that could hang. */
static void watchdog_disarm(Watchdog *w)
{
    watchdog_arm(w, INT64_MAX);
}

/* Ends the caller's use; a thread stuck in PQcancel() finishes (and frees) on its own. */
static void watchdog_stop(Watchdog *w)
{
    pthread_mutex_lock(&w->lock);
    w->done = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    watchdog_unref(w);
}

/* --- queries on several nodes at once --- */

typedef struct Barrier {
    const OrchConfig *cfg;
    PGconn *const *conns;
    Watchdog *wd;
    int64_t deadline_us; /* the watchdog's, as last armed */
    bool timeout_logged;
    /* plain, while asking for the lock: lock_timeout (55P03) is an expected answer, returned
     * as -EAGAIN without a message */
    bool lock_timeout_expected;
} Barrier;

typedef struct Call {
    size_t node;
    PGresult *res; /* the first error result, else the last result */
    bool busy, lost;
} Call;

static bool res_failed(const PGresult *res)
{
    ExecStatusType s = PQresultStatus(res);
    return s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK;
}

static void call_keep(Call *c, PGresult *res)
{
    if (c->res && res_failed(c->res)) {
        PQclear(res);
        return;
    }
    PQclear(c->res);
    c->res = res;
}

/* Strips libpq's "ERROR:  " framing and the trailing newline into buf. */
static const char *pq_message(PGconn *conn, const PGresult *res, char *buf, size_t n)
{
    const char *m = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (!m || !*m)
        m = res && *PQresultErrorMessage(res) ? PQresultErrorMessage(res) : PQerrorMessage(conn);
    if (!m || !*m)
        m = "unknown error";
    snprintf(buf, n, "%.*s", pq_message_len(m), m);
    return buf;
}

static const char *res_sqlstate(const PGresult *res)
{
    const char *s = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return s ? s : "";
}

/* Collects every call's results until each connection is idle again, or until give_up_us:
 * then returns -ETIMEDOUT with the late calls still busy. */
static int calls_wait(Barrier *b, Call *calls, size_t n, int64_t give_up_us)
{
    _cleanup_free_ struct pollfd *fds = calloc(n ? n : 1, sizeof(*fds));
    if (!fds)
        return -ENOMEM;
    for (;;) {
        nfds_t nfds = 0;
        for (size_t i = 0; i < n; i++) {
            Call *c = &calls[i];
            if (!c->busy)
                continue;
            PGconn *conn = b->conns[c->node];
            if (!PQconsumeInput(conn)) {
                c->busy = false;
                c->lost = true;
                continue;
            }
            while (!PQisBusy(conn)) {
                PGresult *res = PQgetResult(conn);
                if (!res) {
                    c->busy = false;
                    break;
                }
                call_keep(c, res);
            }
            if (c->busy)
                fds[nfds++] = (struct pollfd){ .fd = PQsocket(conn), .events = POLLIN };
        }
        if (nfds == 0)
            return 0;
        int64_t left = give_up_us - mono_now_us();
        if (left <= 0)
            return -ETIMEDOUT;
        if (poll(fds, nfds, (int)((left + 999) / 1000)) < 0 && errno != EINTR)
            return -errno;
    }
}

/*
 * Sends `sql` (with one text parameter when param is not NULL; several statements are allowed
 * only without) to each of the nodes and waits for all of them. Each node's failure is logged,
 * naming the node and `what` failed; returns the first error. On success, hands the results
 * out through ret_res (n of them) when not NULL.
 */
static int run_on(Barrier *b, const size_t *nodes, size_t n, const char *sql, const char *param,
                  const char *what, PGresult **ret_res)
{
    const OrchConfig *cfg = b->cfg;
    _cleanup_free_ Call *calls = calloc(n ? n : 1, sizeof(*calls));
    int r = 0;
    if (!calls)
        return -ENOMEM;
    char msg[512];

    for (size_t i = 0; i < n; i++) {
        PGconn *conn = b->conns[nodes[i]];
        calls[i] = (Call){ .node = nodes[i] };
        int ok = param ? PQsendQueryParams(conn, sql, 1, NULL, &param, NULL, NULL, 0)
                       : PQsendQuery(conn, sql);
        if (!ok) {
            log_error("node %s: %s: %s", cfg->nodes[nodes[i]].name, what,
                      pq_message(conn, NULL, msg, sizeof(msg)));
            if (r == 0)
                r = PQstatus(conn) == CONNECTION_BAD ? -ECONNRESET : -EIO;
            continue;
        }
        calls[i].busy = true;
    }

    int w = calls_wait(b, calls, n, b->deadline_us + GRACE_US);
    bool fired = atomic_load(&b->wd->fired);
    if ((w == -ETIMEDOUT || fired) && !b->timeout_logged) {
        log_error("commit barrier: not done within the timeout (%" PRIu64 " ms): cancelled "
                  "and gave up",
                  cfg->barrier_timeout_ms);
        b->timeout_logged = true;
    }
    for (size_t i = 0; i < n; i++) {
        Call *c = &calls[i];
        const char *name = cfg->nodes[c->node].name;
        PGconn *conn = b->conns[c->node];
        int e = 0;
        if (c->busy) {
            log_error("node %s: %s: no answer, not even to the cancel request (is the server "
                      "hung?)",
                      name, what);
            e = -ETIMEDOUT;
        } else if (c->lost) {
            log_error("node %s: %s: connection lost: %s", name, what,
                      pq_message(conn, NULL, msg, sizeof(msg)));
            e = -ECONNRESET;
        } else if (c->res && res_failed(c->res)) {
            const char *state = res_sqlstate(c->res);
            if (b->lock_timeout_expected && !fired && strcmp(state, "55P03") == 0) {
                e = -EAGAIN;
            } else if (fired && strcmp(state, "57014") == 0) {
                log_error("node %s: %s: cancelled by the barrier watchdog", name, what);
                e = -ETIMEDOUT;
            } else {
                const char *hint = strcmp(state, "42P01") == 0
                                           ? "\nHINT: create the CSN sequence with the setup SQL "
                                             "of `pitr-snap barrier-sql`"
                                   : strcmp(state, "42883") == 0
                                           ? "\nHINT: is the function there (the citus adapter "
                                             "needs the Citus extension on the coordinator)?"
                                   : strcmp(state, "42501") == 0
                                           ? "\nHINT: the role in the conninfo needs the "
                                             "privileges `pitr-snap barrier-sql` lists"
                                           : "";
                log_error("node %s: %s: %s%s", name, what,
                          pq_message(conn, c->res, msg, sizeof(msg)), hint);
                /* 55P03: lock_timeout; 57014 without the watchdog: statement_timeout. */
                e = strcmp(state, "55P03") == 0 || strcmp(state, "57014") == 0 ? -ETIMEDOUT
                    : PQstatus(conn) == CONNECTION_BAD                         ? -ECONNRESET
                                                                               : -EIO;
            }
        }
        if (e < 0 && r == 0)
            r = e;
    }
    if (r == 0 && w < 0)
        r = w;
    /* Once the watchdog fired the barrier has failed, even if this step beat the cancel. */
    if (r == 0 && fired)
        r = -ETIMEDOUT;
    for (size_t i = 0; i < n; i++) {
        if (r == 0 && ret_res)
            ret_res[i] = TAKE_PTR(calls[i].res);
        PQclear(calls[i].res);
    }
    return r;
}

static int run_one(Barrier *b, size_t node, const char *sql, const char *param, const char *what,
                   PGresult **ret_res)
{
    return run_on(b, &node, 1, sql, param, what, ret_res);
}

/* --- the steps --- */

static int draw_csn(Barrier *b, uint64_t *ret)
{
    size_t coord = b->cfg->coordinator;
    _cleanup_(PQclearp) PGresult *res = NULL;
    int r = run_one(b, coord, "SELECT nextval($1::regclass)", b->cfg->csn_sequence,
                    "could not draw the CSN", &res);
    if (r < 0)
        return r;
    const char *v = PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : "";
    char *end = NULL;
    errno = 0;
    unsigned long long csn = strtoull(v, &end, 10);
    /* A sequence may be made to count down or from negative numbers; CSNs are positive. */
    if (!*v || *v == '-' || *end || errno != 0 || csn == 0)
        return log_error_errno(-EPROTO,
                               "node %s: the CSN sequence %s returned \"%s\" (expected "
                               "a positive number)",
                               b->cfg->nodes[coord].name, b->cfg->csn_sequence, v);
    *ret = csn;
    return 0;
}

/* Fills points[i] from a (lsn, walfile) row. */
static int restore_point_fill(const OrchConfig *cfg, size_t node, const PGresult *res,
                              OrchRestorePoint *p)
{
    if (PQntuples(res) != 1 || PQnfields(res) != 2)
        return log_error_errno(-EPROTO, "node %s: unexpected answer to the restore point query",
                               cfg->nodes[node].name);
    snprintf(p->lsn, sizeof(p->lsn), "%s", PQgetvalue(res, 0, 0));
    snprintf(p->walfile, sizeof(p->walfile), "%s", PQgetvalue(res, 0, 1));
    /* A WAL file name starts with the timeline, 8 hex digits. */
    char tli[9] = "";
    if (strlen(p->walfile) == 24) {
        memcpy(tli, p->walfile, 8);
        p->timeline = (uint32_t)strtoul(tli, NULL, 16);
    }
    return 0;
}

#define RESTORE_POINT_SQL(fn) "SELECT lsn::text, pg_walfile_name(lsn) FROM " fn "($1) AS lsn"

static int restore_points_all(Barrier *b, const char *name, OrchRestorePoint *points)
{
    const OrchConfig *cfg = b->cfg;
    _cleanup_free_ size_t *nodes = calloc(cfg->n_nodes, sizeof(*nodes));
    _cleanup_free_ PGresult **res = calloc(cfg->n_nodes, sizeof(*res));
    if (!nodes || !res)
        return -ENOMEM;
    for (size_t i = 0; i < cfg->n_nodes; i++)
        nodes[i] = i;
    int r = run_on(b, nodes, cfg->n_nodes, RESTORE_POINT_SQL("pg_create_restore_point"), name,
                   "could not create restore point", res);
    if (r < 0)
        return r;
    for (size_t i = 0; i < cfg->n_nodes; i++) {
        if (r == 0)
            r = restore_point_fill(cfg, i, res[i], &points[i]);
        PQclear(res[i]);
    }
    return r;
}

/* After a failure: end the barrier transaction if the session can still take a command, so
 * the lock goes now rather than at idle_in_transaction_session_timeout. */
static void rollback_quietly(Barrier *b)
{
    PGconn *conn = b->conns[b->cfg->coordinator];
    PGTransactionStatusType ts = PQtransactionStatus(conn);
    if (ts != PQTRANS_INTRANS && ts != PQTRANS_INERROR)
        return;
    if (!PQsendQuery(conn, "ROLLBACK"))
        return;
    Call c = { .node = b->cfg->coordinator, .busy = true };
    (void)calls_wait(b, &c, 1, mono_now_us() + GRACE_US);
    PQclear(c.res);
}

/* After attempt `attempt` (from 1) was not granted: a random pause in [b/2, b], where b is
 * lock_timeout doubled once per attempt, at most BACKOFF_MAX_US. Never shorter than
 * lock_timeout (while that is below BACKOFF_MAX_US / 2): commits get at least as much time to
 * run as an attempt made them wait. Random, so that two orchestrators or a periodic burst of
 * application commits do not stay in step with the attempts. */
#define BACKOFF_MAX_US INT64_C(1000000)

static int64_t backoff_us(const OrchConfig *cfg, unsigned attempt)
{
    int64_t b = (int64_t)cfg->barrier_lock_timeout_ms * 1000;
    for (unsigned i = 0; i < attempt && b < BACKOFF_MAX_US; i++)
        b *= 2;
    if (b > BACKOFF_MAX_US)
        b = BACKOFF_MAX_US;
    uint32_t half = (uint32_t)(b / 2);
    return b - half + (int64_t)arc4random_uniform(half + 1);
}

/*
 * One attempt: BEGIN, ask for the lock for at most lock_timeout, and if it comes, the CSN, the
 * restore points and COMMIT. Returns -EAGAIN, without a message, when the lock did not come in
 * time: the request has left the lock's queue (so have the transaction and its lock, rolled
 * back), nothing else was done. *ret_wait_us gets how long the lock was asked for, granted or
 * not; *ret_held_us how long it was held.
 */
static int plain_attempt(Barrier *b, OrchBarrierResult *res, int64_t *ret_wait_us,
                         int64_t *ret_held_us)
{
    const OrchConfig *cfg = b->cfg;
    size_t coord = cfg->coordinator;
    uint64_t t = cfg->barrier_timeout_ms, lt = cfg->barrier_lock_timeout_ms;
    char sql[512], key[32];

    /* The server's timeouts are the first line: lock_timeout bounds the wait for the lock (and
     * with it every commit queued behind the request), statement_timeout each statement, and
     * idle_in_transaction_session_timeout ends the session (and with it the lock) if this
     * process stalls or dies between statements. statement_timeout is a little longer than
     * both, so that a lock not granted in time says so (55P03) instead of a bare "statement
     * timeout"; while the lock is held the watchdog enforces the timeout itself. */
    snprintf(sql, sizeof(sql),
             "BEGIN; SET LOCAL lock_timeout = '%" PRIu64 "ms'; "
             "SET LOCAL statement_timeout = '%" PRIu64 "ms'; "
             "SET LOCAL idle_in_transaction_session_timeout = '%" PRIu64 "ms'",
             lt, (lt > t ? lt : t) + (uint64_t)(GRACE_US / 1000), t);
    snprintf(key, sizeof(key), "%" PRId64, cfg->barrier_lock_key);

    /* A server that does not answer in lock_timeout and a grace period is hung: the
     * watchdog cancels, and the barrier fails. */
    b->deadline_us = mono_now_us() + (int64_t)lt * 1000 + GRACE_US;
    watchdog_arm(b->wd, b->deadline_us);
    int r = run_one(b, coord, sql, NULL, "could not begin the barrier transaction", NULL);
    int64_t t_ask = mono_now_us(), t_lock = t_ask;
    if (r == 0) {
        b->lock_timeout_expected = true;
        r = run_one(b, coord, "SELECT pg_advisory_xact_lock($1::bigint)", key,
                    "could not take the commit barrier", NULL);
        b->lock_timeout_expected = false;
        t_lock = mono_now_us();
    }
    *ret_wait_us = t_lock - t_ask;
    *ret_held_us = 0;
    if (r < 0) {
        rollback_quietly(b);
        return r;
    }

    /* Held from here: the watchdog's deadline moves to the lock's time plus the timeout. */
    b->deadline_us = t_lock + (int64_t)t * 1000;
    watchdog_arm(b->wd, b->deadline_us);

    r = draw_csn(b, &res->csn);
    if (r == 0) {
        snprintf(res->name, sizeof(res->name), ORCH_RESTORE_POINT_PREFIX "%" PRIu64, res->csn);
        r = restore_points_all(b, res->name, res->points);
    }
    if (r == 0)
        r = run_one(b, coord, "COMMIT", NULL, "could not release the commit barrier", NULL);
    *ret_held_us = mono_now_us() - t_lock;
    if (r < 0)
        rollback_quietly(b);
    return r;
}

/*
 * The plain barrier. While the exclusive request waits, PostgreSQL queues every new shared
 * request behind it, so one slow distributed commit in flight would stall all the others for
 * as long as it lasts. Each attempt therefore asks for the lock for lock_timeout only; when it
 * does not come, the request leaves the queue, the commits queued behind it go on, and after a
 * pause (backoff_us) the next attempt starts, the last one ending at the deadline at the
 * latest.
 */
static int barrier_plain(Barrier *b, OrchBarrierResult *res)
{
    const OrchConfig *cfg = b->cfg;
    int64_t t0 = mono_now_us(), lt_us = (int64_t)cfg->barrier_lock_timeout_ms * 1000;
    int64_t give_up = t0 + (int64_t)cfg->barrier_deadline_ms * 1000;
    int64_t longest_refused_us = 0;
    for (unsigned attempt = 1;; attempt++) {
        int64_t wait_us, held_us;
        int r = plain_attempt(b, res, &wait_us, &held_us);
        res->attempts = attempt;
        if (r == 0) {
            res->lock_wait_ms = (double)wait_us / 1000.0;
            res->held_ms = (double)held_us / 1000.0;
            res->blocked_ms = (double)(wait_us + held_us > longest_refused_us
                                               ? wait_us + held_us
                                               : longest_refused_us) /
                              1000.0;
            return 0;
        }
        if (r != -EAGAIN)
            return r;
        if (wait_us > longest_refused_us)
            longest_refused_us = wait_us;

        int64_t pause = backoff_us(cfg, attempt), now = mono_now_us();
        int64_t room = give_up - lt_us - now; /* for one more attempt before the deadline */
        if (room <= 0) {
            char key[32];
            snprintf(key, sizeof(key), "%" PRId64, cfg->barrier_lock_key);
            log_error("commit barrier not granted in %u attempts over %.1f s (each waited at "
                      "most %" PRIu64 " ms for the lock, then let the commits waiting behind "
                      "it go on)\nHINT: application transactions held "
                      "pg_advisory_xact_lock_shared(%s) all that time: look for a distributed "
                      "commit that hangs, or raise barrier.deadline (--barrier-deadline)",
                      attempt, (double)(now - t0) / 1e6, cfg->barrier_lock_timeout_ms, key);
            return -ETIME;
        }
        if (pause > room)
            pause = room;
        log_debug("commit barrier: attempt %u not granted within %" PRIu64 " ms (asked for "
                  "%.1f ms); the commits queued behind it go on; next attempt in %.0f ms",
                  attempt, cfg->barrier_lock_timeout_ms, (double)wait_us / 1000.0,
                  (double)pause / 1000.0);
        watchdog_disarm(b->wd);
        sleep_ms((unsigned)((pause + 999) / 1000));
    }
}

/* Citus writes the workers' restore points without saying where. The WAL file current on a
 * worker just after holds its point or follows it: the snapshot waits until that file is
 * archived, which covers the point, and restores on its timeline. The LSN stays unknown. */
static int citus_worker_positions(Barrier *b, OrchBarrierResult *res)
{
    const OrchConfig *cfg = b->cfg;
    _cleanup_free_ size_t *nodes = calloc(cfg->n_nodes, sizeof(*nodes));
    _cleanup_free_ PGresult **pos = calloc(cfg->n_nodes, sizeof(*pos));
    if (!nodes || !pos)
        return -ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < cfg->n_nodes; i++)
        if (i != cfg->coordinator)
            nodes[n++] = i;
    int r = run_on(b, nodes, n, "SELECT '', pg_walfile_name(pg_current_wal_lsn())", NULL,
                   "could not read the WAL position after the Citus restore point", pos);
    if (r < 0)
        return r;
    for (size_t i = 0; i < n; i++) {
        if (r == 0)
            r = restore_point_fill(cfg, nodes[i], pos[i], &res->points[nodes[i]]);
        PQclear(pos[i]);
    }
    return r;
}

static int barrier_citus(Barrier *b, OrchBarrierResult *res)
{
    size_t coord = b->cfg->coordinator;
    int r = draw_csn(b, &res->csn);
    if (r < 0)
        return r;
    snprintf(res->name, sizeof(res->name), ORCH_RESTORE_POINT_PREFIX "%" PRIu64, res->csn);
    _cleanup_(PQclearp) PGresult *pr = NULL;
    int64_t t0 = mono_now_us();
    r = run_one(b, coord, RESTORE_POINT_SQL("citus_create_restore_point"), res->name,
                "could not create the Citus restore point", &pr);
    if (r < 0)
        return r;
    res->held_ms = res->blocked_ms = (double)(mono_now_us() - t0) / 1000.0;
    r = restore_point_fill(b->cfg, coord, pr, &res->points[coord]);
    if (r < 0)
        return r;
    return citus_worker_positions(b, res);
}

static int barrier_none(Barrier *b, OrchBarrierResult *res)
{
    int r = draw_csn(b, &res->csn);
    if (r < 0)
        return r;
    snprintf(res->name, sizeof(res->name), ORCH_RESTORE_POINT_PREFIX "%" PRIu64, res->csn);
    return restore_points_all(b, res->name, res->points);
}

int orch_barrier_run(const OrchConfig *cfg, PGconn *const *conns, OrchBarrierResult *ret)
{
    if (!cfg || !conns || !ret || cfg->n_nodes == 0 || cfg->barrier_adapter >= _ORCH_BARRIER_MAX)
        return -EINVAL;
    for (size_t i = 0; i < cfg->n_nodes; i++) {
        const char *why = !conns[i]                                       ? "no connection"
                          : PQstatus(conns[i]) != CONNECTION_OK           ? "connection is broken"
                          : PQtransactionStatus(conns[i]) != PQTRANS_IDLE ? "connection is not idle"
                          : PQisnonblocking(conns[i])                     ? "connection is in "
                                                                            "non-blocking mode"
                                                                          : NULL;
        if (why)
            return log_error_errno(-EINVAL, "node %s: %s", cfg->nodes[i].name, why);
    }
    /* lock_timeout 0 would be no timeout at all in PostgreSQL. */
    if (cfg->barrier_adapter == ORCH_BARRIER_PLAIN &&
        (cfg->barrier_lock_timeout_ms == 0 ||
         cfg->barrier_lock_timeout_ms > cfg->barrier_deadline_ms))
        return log_error_errno(-EINVAL,
                               "commit barrier: lock_timeout %" PRIu64 " ms must be at least "
                               "1 ms and at most the deadline (%" PRIu64 " ms)",
                               cfg->barrier_lock_timeout_ms, cfg->barrier_deadline_ms);

    OrchBarrierResult res = { .n_points = cfg->n_nodes, .attempts = 1 };
    res.points = calloc(cfg->n_nodes, sizeof(*res.points));
    if (!res.points)
        return -ENOMEM;

    int64_t t0 = mono_now_us(), t = (int64_t)cfg->barrier_timeout_ms * 1000;
    /* plain arms the watchdog for each attempt; the adapters without a lock are bounded by
     * the timeout as a whole. */
    Barrier b = { .cfg = cfg, .conns = conns, .deadline_us = t0 + t };
    int r = watchdog_start(conns, cfg->n_nodes, b.deadline_us, &b.wd);
    if (r < 0) {
        free(res.points);
        return log_error_errno(r, "could not start the barrier watchdog: %m");
    }
    switch (cfg->barrier_adapter) {
    case ORCH_BARRIER_PLAIN: r = barrier_plain(&b, &res); break;
    case ORCH_BARRIER_CITUS: r = barrier_citus(&b, &res); break;
    default: r = barrier_none(&b, &res); break;
    }
    watchdog_stop(b.wd);
    if (r < 0) {
        orch_barrier_result_done(&res);
        return r;
    }
    log_debug("commit barrier (%s): csn %" PRIu64 ", commits blocked %.1f ms at most (lock "
              "wait %.1f ms + held %.1f ms, attempt %u), %.1f ms in all",
              orch_barrier_adapter_to_string(cfg->barrier_adapter), res.csn, res.blocked_ms,
              res.lock_wait_ms, res.held_ms, res.attempts, (double)(mono_now_us() - t0) / 1000.0);
    *ret = res;
    return 0;
}

void orch_barrier_result_done(OrchBarrierResult *r)
{
    if (!r)
        return;
    free(r->points);
    *r = (OrchBarrierResult){ 0 };
}

/* --- SQL for people --- */

int orch_barrier_setup_sql(const OrchConfig *cfg, FILE *f)
{
    const char *seq = cfg->csn_sequence, *dot = strchr(seq, '.');
    fprintf(f,
            "-- pitr commit barrier setup for cluster \"%s\": run once on the coordinator, node "
            "\"%s\",\n"
            "-- in the database of its conninfo (the application's commit path must use the same "
            "database).\n",
            cfg->cluster, orch_config_coordinator(cfg)->name);
    if (dot)
        fprintf(f, "CREATE SCHEMA IF NOT EXISTS %.*s;\n", (int)(dot - seq), seq);
    fprintf(f,
            "-- CACHE 1 (the default) matters: with a cache, sessions draw from private ranges and "
            "CSNs\n"
            "-- no longer follow the order in which they were drawn.\n"
            "CREATE SEQUENCE IF NOT EXISTS %s AS bigint MINVALUE 1 NO CYCLE CACHE 1;\n"
            "-- The orchestrator's role needs, on every node: EXECUTE on pg_create_restore_point"
            "(text)\n"
            "-- (superuser, or GRANT EXECUTE ON FUNCTION pg_create_restore_point(text) TO <role>), "
            "and\n"
            "-- on the coordinator: USAGE on the schema and USAGE or UPDATE on the sequence.\n",
            seq);
    fflush(f);
    return ferror(f) ? -EIO : 0;
}

int orch_barrier_app_sql(const OrchConfig *cfg, FILE *f)
{
    int64_t key = cfg->barrier_lock_key;
    const char *seq = cfg->csn_sequence;
    fprintf(f,
            "-- The distributed commit path of an application under the plain commit barrier\n"
            "-- (cluster \"%s\", lock key %" PRId64 ", CSN sequence %s; docs/BARRIER.md explains "
            "why).\n"
            "--\n"
            "-- Sessions: C on the coordinator, in the database of its conninfo in the pitr "
            "configuration,\n"
            "-- and one session on each participant node (the coordinator can be a participant "
            "through a\n"
            "-- second session). <csn> stands for the number step 1 returns.\n"
            "\n"
            "-- 1. On C: share the barrier, then draw the CSN. From here to step 4 a snapshot "
            "waits.\n"
            "BEGIN;\n"
            "SELECT pg_advisory_xact_lock_shared(%" PRId64 ");\n"
            "SELECT nextval('%s') AS csn;\n"
            "\n"
            "-- 2. On each participant: the work, the CSN where you want it recorded, then "
            "prepare.\n"
            "BEGIN;\n"
            "UPDATE accounts SET balance = balance - 10 WHERE id = 1;     -- your statements\n"
            "INSERT INTO ledger (csn, account, delta) VALUES (<csn>, 1, -10);\n"
            "PREPARE TRANSACTION 'xfer_<csn>';\n"
            "--    If any participant fails to prepare: ROLLBACK PREPARED 'xfer_<csn>' on those "
            "that\n"
            "--    prepared, ROLLBACK on C, and stop.\n"
            "\n"
            "-- 3. On each participant: commit.\n"
            "COMMIT PREPARED 'xfer_<csn>';\n"
            "\n"
            "-- 4. On C, only after every COMMIT PREPARED returned: release the barrier.\n"
            "COMMIT;\n"
            "\n"
            "-- Never commit C before step 3 is complete: while C holds the shared lock, no "
            "restore point\n"
            "-- can fall between the commits of one transaction on two nodes. If the application "
            "dies in\n"
            "-- step 3, C's lock goes with it and a snapshot may hold the transaction prepared on "
            "some node:\n"
            "-- resolve it after a restore exactly as after a crash (COMMIT PREPARED where another "
            "node\n"
            "-- committed it).\n",
            cfg->cluster, key, seq, key, seq);
    fflush(f);
    return ferror(f) ? -EIO : 0;
}
