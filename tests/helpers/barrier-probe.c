/*
 * barrier-probe -c CONFIG [--adapter A] [--timeout D] [--lock-timeout D] [--deadline D]
 *               [--count N] [--wait-ms W] [--sql setup|app]
 * barrier-probe -c CONFIG --app LOG [--workers N] [--seconds S] [--gap-ms G]
 *
 * Drives orchestrator/barrier against the nodes of a pitr.yaml, for integration tests: connects
 * to every node's conninfo, runs orch_barrier_run() N times (default 1), and prints one JSON
 * object per run on its own line:
 *   {"adapter": "plain", "csn": 42, "name": "pitr_csn_42", "lock_wait_ms": 0.4, "held_ms": 1.7,
 *    "blocked_ms": 2.1, "attempts": 1,
 *    "nodes": [{"name": "coord", "lsn": "0/3000060", "walfile": "0000000100...03", "timeline": 1},
 * ...]}
 * --adapter, --timeout, --lock-timeout and --deadline override the file's barrier settings;
 * --wait-ms pauses between connecting and the first barrier (a test can stop a backend
 * meanwhile). --sql prints the setup SQL or the application's example instead, and connects
 * nowhere.
 *
 * --app plays the application instead: N workers (default 1), each with a session C on the
 * coordinator and one on a participant (the first worker node; the coordinator when there is
 * none), commit distributed transactions one after the other along the path of docs/BARRIER.md
 * (BEGIN and pg_advisory_xact_lock_shared(lock_key) on C, nextval() of the CSN sequence; BEGIN,
 * PREPARE TRANSACTION on the participant; a pause of G ms (default 0); COMMIT PREPARED; COMMIT on
 * C) until S seconds passed (default 60) or SIGTERM. One line per transaction is appended to
 * LOG: "<start> <wait_ms> <total_ms>", start in seconds since the epoch (the wall clock, to
 * compare with other processes' times), wait_ms how long pg_advisory_xact_lock_shared took
 * (what the barrier costs a commit), total_ms the whole transaction, both measured here, on the
 * client.
 *
 * Exit: 0 success; 1 the barrier failed (logged on stderr, and {"error": "EIO"} or the like on
 * stdout) or an application transaction failed; 3 it failed with ETIMEDOUT (a server did not
 * answer, or watchdog); 4 it failed with ETIME (not granted before the deadline); 2 usage,
 * configuration or connection errors.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "common/log.h"
#include "common/macro.h"
#include "common/time-util.h"
#include "orchestrator/barrier.h"
#include "orchestrator/config.h"

static json_t *result_json(const OrchConfig *cfg, const OrchBarrierResult *res)
{
    json_t *nodes = json_array();
    for (size_t i = 0; i < res->n_points; i++)
        json_array_append_new(nodes,
                              json_pack("{s:s, s:s, s:s, s:I}", "name", cfg->nodes[i].name, "lsn",
                                        res->points[i].lsn, "walfile", res->points[i].walfile,
                                        "timeline", (json_int_t)res->points[i].timeline));
    return json_pack("{s:s, s:I, s:s, s:f, s:f, s:f, s:i, s:o}", "adapter",
                     orch_barrier_adapter_to_string(cfg->barrier_adapter), "csn",
                     (json_int_t)res->csn, "name", res->name, "lock_wait_ms", res->lock_wait_ms,
                     "held_ms", res->held_ms, "blocked_ms", res->blocked_ms, "attempts",
                     (int)res->attempts, "nodes", nodes);
}

/* --- the application --- */

static atomic_bool stop_app;

static void on_term(int sig)
{
    (void)sig;
    atomic_store(&stop_app, true);
}

typedef struct App {
    const OrchConfig *cfg;
    FILE *log;
    pthread_mutex_t log_lock;
    double until; /* mono_now() */
    unsigned gap_ms;
    atomic_int failed;
} App;

typedef struct Worker {
    App *app;
    unsigned index;
} Worker;

static bool app_exec(PGconn *conn, const char *sql, const char *param, const char *node)
{
    PGresult *res = param ? PQexecParams(conn, sql, 1, NULL, &param, NULL, NULL, 0)
                          : PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok)
        log_error("app: node %s: %s: %s", node, sql, PQresultErrorMessage(res));
    PQclear(res);
    return ok;
}

static void *worker_main(void *arg)
{
    Worker *w = arg;
    App *app = w->app;
    const OrchConfig *cfg = app->cfg;
    const OrchNode *coord = orch_config_coordinator(cfg), *part = coord;
    for (size_t i = 0; i < cfg->n_nodes; i++)
        if (i != cfg->coordinator) {
            part = &cfg->nodes[i];
            break;
        }
    PGconn *c = PQconnectdb(coord->conninfo), *p = PQconnectdb(part->conninfo);
    if (PQstatus(c) != CONNECTION_OK || PQstatus(p) != CONNECTION_OK) {
        log_error("app: could not connect: %s%s", PQerrorMessage(c), PQerrorMessage(p));
        atomic_store(&app->failed, 1);
        goto out;
    }
    char key[32], gid[64];
    snprintf(key, sizeof(key), "%" PRId64, cfg->barrier_lock_key);
    for (unsigned long k = 0; !atomic_load(&stop_app) && mono_now() < app->until; k++) {
        struct timespec start;
        clock_gettime(CLOCK_REALTIME, &start);
        double t0 = mono_now();
        if (!app_exec(c, "BEGIN", NULL, coord->name))
            break;
        bool ok = app_exec(c, "SELECT pg_advisory_xact_lock_shared($1::bigint)", key, coord->name);
        double t_lock = mono_now();
        snprintf(gid, sizeof(gid), "barrier_probe_%d_%u_%lu", (int)getpid(), w->index, k);
        /* PREPARE TRANSACTION and COMMIT PREPARED take no parameters: the gid goes in the text. */
        char prepare[128], commit[128];
        snprintf(prepare, sizeof(prepare), "PREPARE TRANSACTION '%s'", gid);
        snprintf(commit, sizeof(commit), "COMMIT PREPARED '%s'", gid);
        ok = ok && app_exec(c, "SELECT nextval($1::regclass)", cfg->csn_sequence, coord->name) &&
             app_exec(p, "BEGIN", NULL, part->name) &&
             app_exec(p, "SELECT txid_current()", NULL, part->name) &&
             app_exec(p, prepare, NULL, part->name);
        if (ok && app->gap_ms)
            sleep_ms(app->gap_ms);
        ok = ok && app_exec(p, commit, NULL, part->name) &&
             app_exec(c, "COMMIT", NULL, coord->name);
        if (!ok) {
            atomic_store(&app->failed, 1);
            break;
        }
        double t1 = mono_now();
        pthread_mutex_lock(&app->log_lock);
        fprintf(app->log, "%lld.%06ld %.3f %.3f\n", (long long)start.tv_sec, start.tv_nsec / 1000,
                (t_lock - t0) * 1000.0, (t1 - t0) * 1000.0);
        fflush(app->log);
        pthread_mutex_unlock(&app->log_lock);
    }
out:
    PQfinish(c);
    PQfinish(p);
    return NULL;
}

static int run_app(const OrchConfig *cfg, const char *log_path, unsigned workers, double seconds,
                   unsigned gap_ms)
{
    App app = { .cfg = cfg, .until = mono_now() + seconds, .gap_ms = gap_ms };
    app.log = fopen(log_path, "ae");
    if (!app.log) {
        log_error("cannot open %s: %m", log_path);
        return 2;
    }
    pthread_mutex_init(&app.log_lock, NULL);
    struct sigaction sa = { .sa_handler = on_term };
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    Worker *w = calloc(workers, sizeof(*w));
    pthread_t *t = calloc(workers, sizeof(*t));
    if (!w || !t)
        return 2;
    for (unsigned i = 0; i < workers; i++) {
        w[i] = (Worker){ .app = &app, .index = i };
        if (pthread_create(&t[i], NULL, worker_main, &w[i]) != 0)
            return 2;
    }
    for (unsigned i = 0; i < workers; i++)
        pthread_join(t[i], NULL);
    free(w);
    free(t);
    fclose(app.log);
    return atomic_load(&app.failed) ? 1 : 0;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "config", required_argument, NULL, 'c' },
        { "adapter", required_argument, NULL, 'a' },
        { "timeout", required_argument, NULL, 't' },
        { "lock-timeout", required_argument, NULL, 'l' },
        { "deadline", required_argument, NULL, 'd' },
        { "count", required_argument, NULL, 'n' },
        { "sql", required_argument, NULL, 's' },
        { "wait-ms", required_argument, NULL, 'w' },
        { "app", required_argument, NULL, 'A' },
        { "workers", required_argument, NULL, 'W' },
        { "seconds", required_argument, NULL, 'S' },
        { "gap-ms", required_argument, NULL, 'g' },
        { NULL, 0, NULL, 0 },
    };
    const char *config = NULL, *adapter = NULL, *timeout = NULL, *sql = NULL, *app_log = NULL;
    const char *lock_timeout = NULL, *deadline = NULL;
    long count = 1, wait_ms = 0, workers = 1, gap_ms = 0;
    double seconds = 60;
    int c;
    log_set_program("barrier-probe");
    while ((c = getopt_long(argc, argv, "c:", longopts, NULL)) != -1) {
        switch (c) {
        case 'c': config = optarg; break;
        case 'a': adapter = optarg; break;
        case 't': timeout = optarg; break;
        case 'l': lock_timeout = optarg; break;
        case 'd': deadline = optarg; break;
        case 'n': count = strtol(optarg, NULL, 10); break;
        case 's': sql = optarg; break;
        case 'w': wait_ms = strtol(optarg, NULL, 10); break;
        case 'A': app_log = optarg; break;
        case 'W': workers = strtol(optarg, NULL, 10); break;
        case 'S': seconds = strtod(optarg, NULL); break;
        case 'g': gap_ms = strtol(optarg, NULL, 10); break;
        default: return 2;
        }
    }
    if (!config || optind != argc || count < 1 || workers < 1 || workers > 64 || gap_ms < 0 ||
        !(seconds > 0)) {
        log_error("usage: barrier-probe -c CONFIG [--adapter A] [--timeout D] [--lock-timeout D] "
                  "[--deadline D] [--count N] [--wait-ms W] [--sql setup|app]\n"
                  "       barrier-probe -c CONFIG --app LOG [--workers N] [--seconds S] "
                  "[--gap-ms G]");
        return 2;
    }
    _cleanup_(orch_config_freep) OrchConfig *cfg = NULL;
    if (orch_config_load(config, &cfg) < 0)
        return 2;
    if (adapter && orch_barrier_adapter_from_string(adapter, &cfg->barrier_adapter) < 0) {
        log_error("unknown adapter \"%s\" (expected plain, citus or none)", adapter);
        return 2;
    }
    if ((timeout && orch_duration_parse(timeout, &cfg->barrier_timeout_ms) < 0) ||
        (lock_timeout && orch_duration_parse(lock_timeout, &cfg->barrier_lock_timeout_ms) < 0) ||
        (deadline && orch_duration_parse(deadline, &cfg->barrier_deadline_ms) < 0)) {
        log_error("bad duration");
        return 2;
    }
    if (app_log)
        return run_app(cfg, app_log, (unsigned)workers, seconds, (unsigned)gap_ms);
    if (sql) {
        if (strcmp(sql, "setup") == 0)
            return orch_barrier_setup_sql(cfg, stdout) < 0;
        if (strcmp(sql, "app") == 0)
            return orch_barrier_app_sql(cfg, stdout) < 0;
        log_error("--sql takes setup or app");
        return 2;
    }

    PGconn **conns = calloc(cfg->n_nodes, sizeof(*conns));
    if (!conns)
        return 2;
    int ret = 0;
    for (size_t i = 0; i < cfg->n_nodes && ret == 0; i++) {
        conns[i] = PQconnectdb(cfg->nodes[i].conninfo);
        if (PQstatus(conns[i]) != CONNECTION_OK) {
            log_error("node %s: could not connect: %s", cfg->nodes[i].name,
                      PQerrorMessage(conns[i]));
            ret = 2;
        }
    }
    /* Time for a test to tamper with the sessions (find and stop a backend, say). */
    if (ret == 0 && wait_ms > 0)
        usleep((useconds_t)wait_ms * 1000);
    for (long k = 0; k < count && ret == 0; k++) {
        OrchBarrierResult res = { 0 };
        int r = orch_barrier_run(cfg, conns, &res);
        if (r < 0) {
            printf("{\"error\": \"%s\"}\n", strerrorname_np(-r));
            ret = r == -ETIMEDOUT ? 3 : r == -ETIME ? 4 : 1;
            break;
        }
        json_t *j = result_json(cfg, &res);
        if (j) {
            json_dumpf(j, stdout, JSON_COMPACT | JSON_REAL_PRECISION(6));
            putchar('\n');
            fflush(stdout);
            json_decref(j);
        }
        orch_barrier_result_done(&res);
    }
    for (size_t i = 0; i < cfg->n_nodes; i++)
        if (conns[i])
            PQfinish(conns[i]);
    free(conns);
    return ret;
}
