/*
 * WAL archiving into a repository: what PostgreSQL's archive_command and restore_command run,
 * and the check of a node's archived chain.
 *
 * Each archived file becomes two things: its bytes, stored through the normal pipeline
 * (content-defined chunks, deduplicated, compressed, encrypted), and one small sealed object
 * "wal/<node>/<timeline>/<file>" (history files: "wal/<node>/history/<file>") that names the
 * content and records size, SHA-256, system identifier and WAL magic (chunkstore/wal-object.h).
 * The object is written only after the data is durable, and never overwritten, so an object
 * that exists always restores, and a file once archived keeps its bytes.
 *
 * These functions are the command layer: they log failures once, with the file and node
 * names, and return a negative errno (exit code via common/exit-code.h):
 *   -EINVAL      not a WAL file name, bad node name, not a regular file
 *   -EBADMSG     header does not match the name or size (archive), fetched bytes fail their
 *                header, SHA-256 or system identifier check, or the object is damaged
 *   -EEXIST      archive: already archived with different bytes (nothing changed)
 *   -ENOENT      restore: not archived. Logged at debug level only: for restore_command this
 *                is the normal end of recovery.
 *   -EBUSY       the repository is locked exclusively (archive)
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "agent/wal-format.h"
#include "chunkstore/repo.h"

typedef struct AgentWalArchiveResult {
    CsWalKind kind;
    bool is_duplicate;   /* already archived with the same bytes: nothing was written */
    int pg_version;      /* major version from the page magic; 0 for files without header */
    uint64_t size;
    uint64_t new_bytes;  /* plaintext bytes not in the repository before */
    uint64_t stored_bytes;
} AgentWalArchiveResult;

/*
 * Archive the file at `path` as `filename` of `node` (archive_command's %p and %f). The
 * repository must be open writable. Segments and partial segments must pass
 * agent_wal_header_check(). Archiving a file that is already archived with the same SHA-256
 * and size succeeds without writing anything (ret->is_duplicate); two processes archiving
 * the same file at once both succeed, and both fail if their bytes differ.
 */
int agent_wal_archive(CsRepo *repo, const char *node, const char *path, const char *filename,
                      AgentWalArchiveResult *ret);

/*
 * Write the archived file `filename` of `node` to `target` (restore_command's %f and %p):
 * into a temporary file beside the target, checked (size, SHA-256, page header against the
 * name, system identifier against the archived one), fsynced, renamed over the target, and
 * the directory fsynced. On any failure the target is left as it was and no temporary file
 * remains. The repository may be open read-only. Returns AGENT_WAL_NOT_ARCHIVED when the node
 * has no such file, the normal end of recovery, and keeps negative errnos for failures, which
 * must stop recovery instead.
 */
#define AGENT_WAL_NOT_ARCHIVED 1
int agent_wal_restore(CsRepo *repo, const char *node, const char *filename, const char *target);

/* ---- the archived chain of one node ---- */

typedef struct AgentWalTimeline {
    uint32_t tli;
    uint64_t seg_size;         /* 0 if the timeline has no segments */
    uint64_t first, last;      /* segment numbers, valid when n_segments > 0 */
    uint64_t n_segments;       /* distinct segment numbers archived (whole or partial) */
    uint64_t n_partial;
    uint64_t *missing;         /* segment numbers absent between first and last, ascending */
    uint64_t n_missing;        /* may exceed the entries kept (AGENT_WAL_MISSING_KEEP) */
    size_t n_missing_kept;
    bool has_mixed_sizes;      /* segments of different sizes: no gap check was possible */
} AgentWalTimeline;

#define AGENT_WAL_MISSING_KEEP 100000

typedef struct AgentWalReport {
    char *node;
    AgentWalTimeline *timelines; /* ascending by timeline */
    size_t n_timelines;
    char **history;              /* names of timeline history files, sorted */
    size_t n_history;
    char **backup;               /* names of backup history files, sorted */
    size_t n_backup;
    char **damaged;              /* object names that could not be opened or decoded */
    size_t n_damaged;
    uint64_t *sysids;            /* distinct system identifiers of the segments */
    size_t n_sysids;
    uint64_t n_missing;          /* over all timelines */
} AgentWalReport;

/*
 * Read every WAL object of `node` and build the report: per timeline the range of archived
 * segments and the segment numbers missing inside it (like PGHoard's archive_sync). Returns
 * 0 (problems are in the report, see agent_wal_report_status()), -ENOENT (logged) when the
 * node has no archived WAL, or another -errno.
 */
int agent_wal_check(CsRepo *repo, const char *node, AgentWalReport **ret);
AgentWalReport *agent_wal_report_free(AgentWalReport *r);
/* 0: complete chains; -EBADMSG: damaged objects; -ENODATA: gaps, mixed segment sizes in a
 * timeline, or more than one system identifier. */
int agent_wal_report_status(const AgentWalReport *r);
/* Print the report for people (to f) or as one JSON document. Returns 0 or -ENOMEM. */
int agent_wal_report_print(const AgentWalReport *r, bool json, FILE *f);
