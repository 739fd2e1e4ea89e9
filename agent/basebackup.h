/*
 * Base backup of one PostgreSQL node into a repository.
 *
 * One libpq session holds the non-exclusive low-level backup open (pg_backup_start ...
 * pg_backup_stop, PostgreSQL 15 and later) while the data directory is read and stored with
 * the exclusions pg_basebackup uses (agent/pgdata.h). Relation files are cut in page blocks,
 * and when the cluster has data checksums every page is verified as it is read; a page that
 * fails is read again before it is reported (it may have been written at that moment), and
 * pages newer than the backup start are left to WAL replay, as pg_basebackup does.
 *
 * The stored tree is a directory "pgdata" (with backup_label and tablespace_map from
 * pg_backup_stop) and, when the node has tablespaces, "tablespaces/<oid>" with each one's
 * contents. The snapshot record, kind "pgbase", is written only once everything it refers to
 * is durable and the WAL up to the stop LSN is archived (pg_backup_stop waits for it), so a
 * listed base backup always restores. Its meta holds the fields of AgentBackupResult.
 *
 * Errors are logged once, naming the node, and returned as -errno:
 *   -ECONNREFUSED  the server cannot be reached (node down)
 *   -EACCES        authentication failed, or PGDATA cannot be read
 *   -EINVAL        the server is not PostgreSQL 15 or later, or is a standby, or PGDATA does not
 *                  belong to it (system identifier differs)
 *   -EBUSY         the repository is locked exclusively
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "chunkstore/catalog.h"
#include "chunkstore/repo.h"
#include "chunkstore/store.h"
#include "chunkstore/tree.h"

#define AGENT_BASEBACKUP_KIND "pgbase"
#define AGENT_LSN_STR_MAX 24 /* "XXXXXXXX/XXXXXXXX" */

typedef struct AgentBackupProgress {
    uint64_t bytes_done;  /* bytes read from PGDATA so far */
    uint64_t bytes_total; /* estimate: sizes seen by a walk before the copy */
    uint64_t new_bytes;   /* of those, not in the repository before */
    double seconds;
} AgentBackupProgress;

#define AGENT_ARCHIVE_TIMEOUT_DEFAULT 60 /* seconds, as pgBackRest's archive-timeout */

typedef struct AgentBackupParams {
    const char *node;     /* node name: the snapshot's name */
    const char *conninfo; /* libpq connection string (a superuser or a role with backup rights) */
    const char *pgdata;   /* data directory; NULL: ask the server (it must be on this machine) */
    const char *label;    /* backup label; NULL: "pitrfs <node> <time>" */
    unsigned threads;     /* pipeline workers; 0: one per CPU */
    /* How long the last WAL segment may take to be archived before the backup fails (it is
     * not restorable without it); 0: AGENT_ARCHIVE_TIMEOUT_DEFAULT. */
    unsigned archive_timeout_s;
    void (*progress)(const AgentBackupProgress *p, void *userdata);
    void *userdata;
} AgentBackupParams;

typedef struct AgentChecksumFailure {
    char *file;     /* relative to PGDATA, e.g. "base/5/16384.1" */
    uint32_t block; /* block number in the relation (segment offset included) */
} AgentChecksumFailure;

typedef struct AgentBackupResult {
    char snapshot_id[2 * CS_SNAP_ID_SIZE + 1];
    char parent_id[2 * CS_SNAP_ID_SIZE + 1]; /* the backup whose pages the deltas refer to; "" none */
    uint64_t system_identifier;
    uint32_t timeline;
    int server_version; /* e.g. 150008 */
    char start_lsn[AGENT_LSN_STR_MAX], stop_lsn[AGENT_LSN_STR_MAX];
    char start_wal[25];  /* WAL file holding the start LSN */
    bool data_checksums;
    uint64_t pages_checked;
    AgentChecksumFailure *checksum_failures; /* first AGENT_CHECKSUM_FAILURES_KEEP of them */
    uint64_t n_checksum_failures;
    size_t n_checksum_failures_kept;
    unsigned n_tablespaces;
    CsTreeStats tree;
    CsWriterStats writer;
    double seconds;
} AgentBackupResult;

#define AGENT_CHECKSUM_FAILURES_KEEP 1000

/* Back up the node. Checksum failures do not stop the backup: they are logged, recorded in
 * the snapshot meta and in *ret, and the function returns -EIO after publishing it (the
 * caller decides; the CLI exits 4). */
int agent_backup(CsRepo *repo, const AgentBackupParams *params, AgentBackupResult *ret);
void agent_backup_result_clear(AgentBackupResult *r);
/* The result as JSON (pitr-agent backup --json, the service's job result): snapshot_id, node,
 * system identifier (a string), timeline, LSNs, version, page and tree counts, and the first
 * `max_failures` checksum failures. NULL when out of memory. */
json_t *agent_backup_result_json(const AgentBackupResult *r, const char *node,
                                 size_t max_failures);

/* The newest base backup of `node` into *ret. -ENOENT, not logged, when the node has none;
 * a failure to list the catalog is logged. */
int agent_backup_find_latest(CsRepo *repo, const char *node, CsSnapshot *ret);
