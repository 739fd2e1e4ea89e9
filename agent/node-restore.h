/*
 * Restore of one node from a stored base backup: lays down a data directory and the recovery
 * settings, so that starting PostgreSQL replays the archived WAL (through `pitr-agent
 * restore-wal`) up to the chosen target and promotes.
 *
 * The target must be empty or absent, unless `delta`: then files whose content already
 * matches are left alone (compared chunk by chunk against the stored ids), others are
 * rewritten only where they differ, and files that are not in the backup are removed.
 * The restore writes recovery.signal, and appends to postgresql.auto.conf restore_command,
 * the recovery target and recovery_target_action = 'promote'. pg_wal/ is emptied (recovery
 * fetches every segment from the archive). Tablespaces go back to their original locations
 * unless mapped elsewhere, and pg_tblspc/ links follow.
 *
 * Errors are logged once and returned as -errno:
 *   -ENOENT     no such base backup for the node
 *   -ENOTEMPTY  the target (or a tablespace location) is not empty and delta is off
 *   -EBUSY      PostgreSQL is running in the target (postmaster.pid names a live process)
 *   -EBADMSG    damaged data in the repository (nothing is half-written over a running
 *               server; the target is left for a rerun)
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "chunkstore/repo.h"
#include "chunkstore/tree.h"

typedef enum AgentRecoveryTarget {
    AGENT_TARGET_LATEST,    /* replay all archived WAL */
    AGENT_TARGET_NAME,      /* recovery_target_name: a restore point */
    AGENT_TARGET_LSN,       /* recovery_target_lsn */
    AGENT_TARGET_TIME,      /* recovery_target_time */
    AGENT_TARGET_IMMEDIATE, /* end of the base backup: the earliest consistent state */
} AgentRecoveryTarget;

typedef struct AgentTablespaceMap {
    const char *oid; /* or the original location */
    const char *path;
} AgentTablespaceMap;

typedef struct AgentRestoreParams {
    const char *node;
    const char *backup;   /* base backup: snapshot id, unique prefix, or "latest" for the node */
    const char *target;   /* data directory to create or refresh */
    AgentRecoveryTarget target_kind;
    const char *target_value; /* name, LSN or time; NULL for LATEST and IMMEDIATE */
    /* recovery_target_timeline: the timeline the target lies on; 0: PostgreSQL's default,
     * "latest", which follows a later timeline that branched off before the target (after an
     * earlier restore) and then never finds it */
    uint32_t target_timeline;
    bool delta;
    /* restore_command written into postgresql.auto.conf; NULL: this pitr-agent with the
     * repository location and the key file given below */
    const char *restore_command;
    const char *repo_location; /* for the default restore_command */
    const char *keyfile;       /* for the default restore_command; NULL: $PITR_KEY_FILE */
    const AgentTablespaceMap *tablespace_map;
    size_t n_tablespace_map;
    unsigned threads;
} AgentRestoreParams;

typedef struct AgentRestoreResult {
    char snapshot_id[2 * CS_SNAP_ID_SIZE + 1];
    CsTreeStats tree;
    uint64_t bytes_written; /* delta: bytes actually rewritten */
    uint64_t files_unchanged, files_removed;
    double seconds;
} AgentRestoreResult;

int agent_node_restore(CsRepo *repo, const AgentRestoreParams *params, AgentRestoreResult *ret);
