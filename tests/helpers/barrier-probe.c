/*
 * barrier-probe -c CONFIG [--adapter A] [--timeout D] [--count N] [--wait-ms W] [--sql setup|app]
 *
 * Drives orchestrator/barrier against the nodes of a pitr.yaml, for integration tests: connects
 * to every node's conninfo, runs orch_barrier_run() N times (default 1), and prints one JSON
 * object per run on its own line:
 *   {"adapter": "plain", "csn": 42, "name": "pitr_csn_42", "held_ms": 1.7,
 *    "nodes": [{"name": "coord", "lsn": "0/3000060", "walfile": "0000000100...03", "timeline": 1},
 * ...]}
 * --adapter and --timeout override the file's barrier settings; --wait-ms pauses between
 * connecting and the first barrier (a test can stop a backend meanwhile). --sql prints the setup
 * SQL or the application's example instead, and connects nowhere.
 *
 * Exit: 0 success; 1 the barrier failed (logged on stderr, and {"error": "EIO"} or the like on
 * stdout); 3 it failed with ETIMEDOUT (lock not granted in time, or watchdog); 2 usage,
 * configuration or connection errors.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "common/log.h"
#include "common/macro.h"
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
    return json_pack("{s:s, s:I, s:s, s:f, s:o}", "adapter",
                     orch_barrier_adapter_to_string(cfg->barrier_adapter), "csn",
                     (json_int_t)res->csn, "name", res->name, "held_ms", res->held_ms, "nodes",
                     nodes);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "config", required_argument, NULL, 'c' },
        { "adapter", required_argument, NULL, 'a' },
        { "timeout", required_argument, NULL, 't' },
        { "count", required_argument, NULL, 'n' },
        { "sql", required_argument, NULL, 's' },
        { "wait-ms", required_argument, NULL, 'w' },
        { NULL, 0, NULL, 0 },
    };
    const char *config = NULL, *adapter = NULL, *timeout = NULL, *sql = NULL;
    long count = 1, wait_ms = 0;
    int c;
    log_set_program("barrier-probe");
    while ((c = getopt_long(argc, argv, "c:", longopts, NULL)) != -1) {
        switch (c) {
        case 'c': config = optarg; break;
        case 'a': adapter = optarg; break;
        case 't': timeout = optarg; break;
        case 'n': count = strtol(optarg, NULL, 10); break;
        case 's': sql = optarg; break;
        case 'w': wait_ms = strtol(optarg, NULL, 10); break;
        default: return 2;
        }
    }
    if (!config || optind != argc || count < 1) {
        log_error("usage: barrier-probe -c CONFIG [--adapter A] [--timeout D] [--count N] "
                  "[--wait-ms W] [--sql setup|app]");
        return 2;
    }
    _cleanup_(orch_config_freep) OrchConfig *cfg = NULL;
    if (orch_config_load(config, &cfg) < 0)
        return 2;
    if (adapter && orch_barrier_adapter_from_string(adapter, &cfg->barrier_adapter) < 0) {
        log_error("unknown adapter \"%s\" (expected plain, citus or none)", adapter);
        return 2;
    }
    if (timeout && orch_duration_parse(timeout, &cfg->barrier_timeout_ms) < 0) {
        log_error("bad duration \"%s\"", timeout);
        return 2;
    }
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
            ret = r == -ETIMEDOUT ? 3 : 1;
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
