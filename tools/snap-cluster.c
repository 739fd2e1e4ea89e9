/*
 * pitr-snap's cluster verbs: create, restore of a cluster snapshot, config check/show and
 * barrier-sql. They read the configuration (-c, $PITR_CONFIG) and call orchestrator/.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "chunkstore/catalog.h"
#include "common/log.h"
#include "common/macro.h"
#include "orchestrator/barrier.h"
#include "orchestrator/cluster.h"
#include "tools/pitr-snap.h"

int load_config(void)
{
    if (!opt.config_path || opt.config)
        return 0;
    int r = orch_config_load(opt.config_path, &opt.config);
    if (r < 0)
        return r;
    /* The command line wins over the file. */
    if (!opt.repo)
        opt.repo = opt.config->repo_location;
    if (!opt.key.keyfile && !opt.key.passphrase_file) {
        opt.key.keyfile = opt.config->repo_key_file;
        opt.key.passphrase_file = opt.config->repo_passphrase_file;
    }
    return 0;
}

static int need_config(const char *verb)
{
    if (!opt.config)
        return log_error_errno(-EINVAL,
                               "%s needs the cluster configuration\nHINT: give -c pitr.yaml or "
                               "set PITR_CONFIG",
                               verb);
    return 0;
}

int cmd_create(int argc, char **argv)
{
    (void)argv;
    if (argc != 1)
        return log_error_errno(-EINVAL, "usage: pitr-snap -c CONFIG create [--label L]");
    int r = need_config("create");
    if (r < 0)
        return r;
    /* The command line wins over the file. */
    if (opt.lock_timeout &&
        orch_duration_parse(opt.lock_timeout, &opt.config->barrier_lock_timeout_ms) < 0)
        return log_error_errno(-EINVAL,
                               "invalid --lock-timeout \"%s\" (expected a duration such as "
                               "50ms or 2s, at least 1ms)",
                               opt.lock_timeout);
    if (opt.barrier_deadline &&
        orch_duration_parse(opt.barrier_deadline, &opt.config->barrier_deadline_ms) < 0)
        return log_error_errno(-EINVAL,
                               "invalid --barrier-deadline \"%s\" (expected a duration such as "
                               "10s or 2m, at least 1ms)",
                               opt.barrier_deadline);
    if ((r = orch_config_check_barrier(
                 opt.config, opt.lock_timeout ? "--lock-timeout" : "barrier.lock_timeout",
                 opt.barrier_deadline ? "--barrier-deadline" : "barrier.deadline")) < 0)
        return r;
    _cleanup_(cs_repo_closep) CsRepo *repo = NULL;
    if ((r = open_repo(false, &repo)) < 0)
        return r;
    OrchCreateResult res;
    r = orch_snapshot_create(opt.config, repo,
                             &(OrchCreateParams){ .label = opt.label,
                                                  .parallel = opt.parallel,
                                                  .restore_point_only = opt.restore_point_only,
                                                  .progress = cli_is_tty() && !opt.json },
                             &res);
    if (r < 0)
        return log_error_errno(r, "no snapshot was created");
    if (opt.json) {
        json_t *o = json_pack("{s:s,s:I,s:f,s:f,s:f,s:i,s:f}", "id", res.snapshot_id, "csn",
                              (json_int_t)res.csn, "barrier_blocked_ms", res.barrier_blocked_ms,
                              "barrier_lock_wait_ms", res.barrier_lock_wait_ms,
                              "barrier_held_ms", res.barrier_held_ms, "barrier_attempts",
                              (int)res.barrier_attempts, "seconds", res.seconds);
        cli_print_json(o);
        json_decref(o);
    } else
        printf("snapshot %s: CSN %" PRIu64 ", restore point " ORCH_RESTORE_POINT_PREFIX
               "%" PRIu64 " on %zu nodes, commits blocked %.1f ms at most (waited %.1f ms for "
               "the lock, held it %.1f ms; attempt %u), %.1f s in all\n",
               res.snapshot_id, res.csn, res.csn, opt.config->n_nodes, res.barrier_blocked_ms,
               res.barrier_lock_wait_ms, res.barrier_held_ms, res.barrier_attempts,
               res.seconds);
    return 0;
}

int cmd_cluster_restore(const char *spec)
{
    int r = need_config("restoring a cluster snapshot");
    if (r < 0)
        return r;
    _cleanup_(cs_repo_closep) CsRepo *repo = NULL;
    if ((r = open_repo(true, &repo)) < 0)
        return r;
    OrchRestoreResult res;
    r = orch_snapshot_restore(opt.config, repo, spec,
                              &(OrchRestoreParams){ .force = opt.force,
                                                    .target_dir = opt.target_dir,
                                                    .parallel = opt.parallel,
                                                    .progress = cli_is_tty() && !opt.json },
                              &res);
    if (opt.json) {
        json_t *nodes = json_array();
        for (size_t i = 0; i < res.n_nodes; i++)
            json_array_append_new(nodes, json_pack("{s:s,s:b,s:s*,s:s}", "node",
                                                    res.nodes[i].node, "ok",
                                                    res.nodes[i].error == 0, "error",
                                                    res.nodes[i].message, "stopped_at_lsn",
                                                    res.nodes[i].lsn));
        json_t *o = json_pack("{s:s,s:I,s:o,s:f}", "id", res.snapshot_id, "csn",
                              (json_int_t)res.csn, "nodes", nodes, "seconds", res.seconds);
        cli_print_json(o);
        json_decref(o);
    } else if (res.n_nodes) {
        printf("snapshot %s (CSN %" PRIu64 ")%s%s:\n", res.snapshot_id, res.csn,
               opt.target_dir ? " laid down under " : " restored in place",
               opt.target_dir ? opt.target_dir : "");
        for (size_t i = 0; i < res.n_nodes; i++) {
            const OrchNodeOutcome *o = &res.nodes[i];
            if (o->error)
                printf("  %-16s FAILED: %s\n", o->node, o->message ? o->message : "");
            else if (opt.target_dir)
                printf("  %-16s ready in %s/%s\n", o->node, opt.target_dir, o->node);
            else
                printf("  %-16s promoted, recovery stopped at %s\n", o->node, o->lsn);
        }
        if (r < 0)
            printf("run the same restore again to finish the failed nodes\n");
    }
    orch_restore_result_done(&res);
    return r;
}

int cluster_delete(const char *spec)
{
    _cleanup_(cs_repo_closep) CsRepo *repo = NULL;
    int r = open_repo(false, &repo);
    char id[2 * CS_SNAP_ID_SIZE + 1];
    if (r < 0 || (r = orch_snapshot_delete(repo, spec, id)) < 0)
        return r;
    log_info("deleted snapshot %s; its data goes at the next prune", id);
    return 0;
}

int cmd_config(int argc, char **argv)
{
    if (argc != 2 || (strcmp(argv[1], "check") != 0 && strcmp(argv[1], "show") != 0))
        return log_error_errno(-EINVAL, "usage: pitr-snap -c CONFIG config check|show");
    int r = need_config("config");
    if (r < 0)
        return r;
    if (strcmp(argv[1], "show") == 0) {
        json_t *o = orch_config_to_json(opt.config);
        if (!o)
            return -ENOMEM;
        cli_print_json(o);
        json_decref(o);
        return 0;
    }
    json_t *report = NULL;
    r = orch_cluster_check(opt.config, &report);
    if (opt.json)
        cli_print_json(report);
    else {
        size_t i;
        json_t *o;
        json_array_foreach(report, i, o) {
            const char *err = json_string_value(json_object_get(o, "error"));
            printf("%-16s postgres %-11s agent %-11s %s\n",
                   json_string_value(json_object_get(o, "node")),
                   json_is_true(json_object_get(o, "postgres_reachable")) ? "reachable"
                                                                          : "UNREACHABLE",
                   json_is_true(json_object_get(o, "agent_reachable")) ? "reachable"
                                                                       : "UNREACHABLE",
                   err ? err : "ok");
        }
    }
    json_decref(report);
    if (r == 0 && !opt.json)
        printf("configuration %s: %zu nodes, all reachable\n", opt.config->path,
               opt.config->n_nodes);
    return r;
}

int cmd_barrier_sql(int argc, char **argv)
{
    (void)argv;
    if (argc != 1)
        return log_error_errno(-EINVAL, "usage: pitr-snap -c CONFIG barrier-sql");
    int r = need_config("barrier-sql");
    if (r < 0)
        return r;
    printf("-- once, on the coordinator:\n");
    if ((r = orch_barrier_setup_sql(opt.config, stdout)) < 0)
        return r;
    printf("\n");
    return orch_barrier_app_sql(opt.config, stdout);
}

void print_cluster_list_line(const CsSnapshot *s)
{
    json_t *nodes = json_object_get(s->meta, "nodes");
    json_int_t csn = json_integer_value(json_object_get(s->meta, "csn"));
    printf("    CSN %" JSON_INTEGER_FORMAT ":", csn);
    size_t i;
    json_t *o;
    json_array_foreach(nodes, i, o)
        printf(" %s %s@%d", json_string_value(json_object_get(o, "name")),
               json_string_value(json_object_get(o, "restore_point_lsn")),
               (int)json_integer_value(json_object_get(o, "timeline")));
    printf("\n");
}

void print_cluster_show(const CsSnapshot *s)
{
    json_t *m = s->meta, *b = json_object_get(m, "barrier");
    /* Snapshots made before blocked_ms was recorded have the hold only. */
    json_t *blocked = json_object_get(b, "blocked_ms");
    printf("csn:      %" JSON_INTEGER_FORMAT "\nrestore:  %s\nbarrier:  %s, commits "
           "blocked %.1f ms%s\n",
           json_integer_value(json_object_get(m, "csn")),
           json_string_value(json_object_get(m, "restore_point")),
           json_string_value(json_object_get(b, "adapter")),
           json_number_value(blocked ? blocked : json_object_get(b, "held_ms")),
           blocked ? " at most" : " (lock held)");
    printf("%-16s %-11s %-16s %-18s %-8s %s\n", "NODE", "ROLE", "BASE BACKUP", "RESTORE POINT LSN",
           "TIMELINE", "SYSTEM IDENTIFIER");
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(m, "nodes"), i, o)
        printf("%-16s %-11s %-16s %-18s %-8d %s\n", json_string_value(json_object_get(o, "name")),
               json_string_value(json_object_get(o, "role")),
               json_string_value(json_object_get(o, "base_backup")),
               json_string_value(json_object_get(o, "restore_point_lsn")),
               (int)json_integer_value(json_object_get(o, "timeline")),
               json_string_value(json_object_get(o, "system_identifier")));
}
