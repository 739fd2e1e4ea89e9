/*
 * What a base backup reads from a PostgreSQL data directory and from each tablespace: the
 * exclusions pg_basebackup makes (PostgreSQL 15, src/backend/backup/basebackup.c), and which
 * files are relation files (cut in page blocks, with page checksums to verify).
 *
 * Excluded, as pg_basebackup does:
 *   - the contents (not the directory) of pg_wal, pg_stat_tmp, pg_replslot, pg_dynshmem,
 *     pg_notify, pg_serial, pg_snapshots, pg_subtrans; pg_wal/archive_status is kept, empty
 *   - postmaster.pid, postmaster.opts, backup_label, tablespace_map, backup_manifest,
 *     postgresql.auto.conf.tmp, current_logfiles.tmp, pg_internal.init*
 *   - temporary files and directories (pgsql_tmp*) anywhere, temporary relations (t<n>_<oid>)
 *   - unlogged relations: every fork but the init fork of a relation that has one
 */
#pragma once

#include <stdbool.h>
#include <sys/stat.h>

#include "agent/pagecheck.h"

typedef struct AgentPgdataFilter {
    const char *root;   /* absolute path of the directory being stored */
    bool is_tablespace; /* root is a tablespace location (holds PG_<ver>_<catver>/<db>/) */
} AgentPgdataFilter;

/* relpath is relative to f->root, without a leading slash. */
bool agent_pgdata_is_excluded(const AgentPgdataFilter *f, const char *relpath,
                              const struct stat *st);
/* A relation data file (base/<db>/, global/, or a tablespace's PG_<version>/<db>/, which for an
 * in-place tablespace is under pg_tblspc/<oid>/ in the data directory): fills *ret. */
bool agent_pgdata_relation(const AgentPgdataFilter *f, const char *relpath, AgentRelFile *ret);
