/*
 * Cluster-wide snapshots: the operations behind `pitr-snap create`, `restore` and `delete`.
 *
 * A cluster snapshot is a catalog record of kind "cluster" (chunkstore/catalog.h) whose root is
 * a directory with one entry per node, each holding that node's base backup tree (pgdata/ and
 * tablespaces/), so a mount shows /snapshots/<id>/<node>/pgdata. Its meta holds the CSN, the
 * restore point name, the barrier adapter and how long commits were blocked, and per node: the
 * base backup id, the restore point LSN, WAL file and timeline, and the system identifier.
 *
 * Create (one at a time per repository, see the cluster lock below):
 *   1. every agent backs up its node (at most `parallel` at once), unless restore_point_only,
 *      which uses each node's newest base backup that recovers along the timeline the node is
 *      on now (orchestrator/timeline.h; a newer one of an abandoned timeline does not), and
 *      logs which;
 *   2. the commit barrier (orchestrator/barrier.h) draws the CSN and makes the restore point
 *      "pitr_csn_<CSN>" on every node; no data is copied while it is held;
 *   3. pg_switch_wal() on every node, then a wait (config wal_timeout) until every node's
 *      archive holds the WAL segment with its restore point;
 *   4. only then the record is written: a listed snapshot is always restorable.
 * A failure at any step names the node and publishes nothing.
 *
 * Restore: the snapshot's nodes must be the configuration's (names and count) unless `force`.
 * In place: every agent stops its server, brings the data directory up to date (delta), writes
 * recovery_target_name = 'pitr_csn_<CSN>' with the restore point's timeline, and starts it;
 * the call waits until every node is promoted and reports the LSN each stopped at. With
 * target_dir, each node is laid down in <target_dir>/<node> on its own host, its tablespaces in
 * <target_dir>/<node>.tablespaces/<oid> (not their original locations), and nothing is
 * stopped or started. Nodes that fail are named; the others are left as they are, and running
 * the restore again finishes the job.
 *
 * The cluster lock: an exclusive repository lock named "cluster", taken without waiting. A
 * second create/restore/delete fails at once (-EBUSY) with a message naming the holder, which
 * is recorded in the object "locks/cluster.holder" (docs/FORMAT.md).
 *
 * Errors: a failure of a node (its server, its agent, its WAL archiving) returns -EREMOTEIO
 * whatever the node's own error was, which stays in the log and, for restore, in ret->nodes;
 * the commit barrier's errors are returned as they are (orchestrator/barrier.h; -ETIME: not
 * granted before its deadline); -EBUSY the cluster lock is held; -EINVAL the snapshot's nodes
 * do not match the configuration's; the repository's errors as they are.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "chunkstore/catalog.h"
#include "chunkstore/repo.h"
#include "orchestrator/config.h"

#define ORCH_SNAPSHOT_KIND "cluster"

typedef struct OrchCreateParams {
    const char *label;       /* NULL: none */
    unsigned parallel;       /* agents backing up at once; 0: all */
    bool restore_point_only; /* reuse each node's latest base backup */
    bool progress;           /* draw per-node progress on stderr */
} OrchCreateParams;

typedef struct OrchCreateResult {
    char snapshot_id[2 * CS_SNAP_ID_SIZE + 1];
    uint64_t csn;
    /* as OrchBarrierResult's (orchestrator/barrier.h): blocked = the longest a distributed
     * commit can have waited because of the barrier */
    double barrier_lock_wait_ms, barrier_held_ms, barrier_blocked_ms;
    unsigned barrier_attempts;
    double seconds;
} OrchCreateResult;

int orch_snapshot_create(const OrchConfig *cfg, CsRepo *repo, const OrchCreateParams *p,
                         OrchCreateResult *ret);

typedef struct OrchRestoreParams {
    bool force;             /* restore even if the snapshot's nodes differ from the config's */
    const char *target_dir; /* NULL: in place */
    unsigned parallel;      /* 0: all */
    bool progress;
} OrchRestoreParams;

typedef struct OrchNodeOutcome {
    char *node;
    int error;      /* 0 or -errno */
    char *message;  /* what failed, or NULL */
    char lsn[24];   /* in place: where recovery stopped (pg_last_wal_replay_lsn) */
} OrchNodeOutcome;

typedef struct OrchRestoreResult {
    char snapshot_id[2 * CS_SNAP_ID_SIZE + 1];
    uint64_t csn;
    OrchNodeOutcome *nodes;
    size_t n_nodes;
    double seconds;
} OrchRestoreResult;

int orch_snapshot_restore(const OrchConfig *cfg, CsRepo *repo, const char *spec,
                          const OrchRestoreParams *p, OrchRestoreResult *ret);
void orch_restore_result_done(OrchRestoreResult *r);

/* Delete a cluster snapshot's record under the cluster lock (its data stays until a prune). */
int orch_snapshot_delete(CsRepo *repo, const char *spec, char ret_id[2 * CS_SNAP_ID_SIZE + 1]);

/* Reach every node (libpq) and every agent (status); log one line per problem, naming the
 * node. Returns 0 when all are reachable and healthy, -EREMOTEIO otherwise. */
int orch_cluster_check(const OrchConfig *cfg, json_t **ret_report);
