#include "agent/pgdata.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/macro.h"

static const char *const excluded_dir_contents[] = {
    "pg_wal", "pg_stat_tmp", "pg_replslot", "pg_dynshmem", "pg_notify", "pg_serial",
    "pg_snapshots", "pg_subtrans",
};

/* Compared in any directory, like pg_basebackup (it only ever finds them at the top). */
static const char *const excluded_files[] = {
    "postmaster.pid", "postmaster.opts", "backup_label", "tablespace_map", "backup_manifest",
    "postgresql.auto.conf.tmp", "current_logfiles.tmp",
};

static const char *base_name(const char *relpath)
{
    const char *slash = strrchr(relpath, '/');
    return slash ? slash + 1 : relpath;
}

#define IN_PLACE_PREFIX "pg_tblspc/"

/* Is the directory part of relpath (up to the last slash) a database directory: "base/<db>",
 * "global", or "<PG_version dir>/<db>" in a tablespace, which for an in-place tablespace is
 * pg_tblspc/<oid>/ in the data directory? */
static bool in_database_dir(const AgentPgdataFilter *f, const char *relpath)
{
    const char *name = base_name(relpath), *dir = relpath;
    bool is_tablespace = f->is_tablespace;
    if (!is_tablespace && strncmp(dir, IN_PLACE_PREFIX, strlen(IN_PLACE_PREFIX)) == 0) {
        const char *oid = dir + strlen(IN_PLACE_PREFIX);
        size_t digits = strspn(oid, "0123456789");
        if (digits == 0 || oid[digits] != '/')
            return false;
        dir = oid + digits + 1;
        is_tablespace = true;
    }
    if (name <= dir)
        return false;
    size_t dir_len = (size_t)(name - dir) - 1;
    if (!is_tablespace && dir_len == 6 && memcmp(dir, "global", 6) == 0)
        return true;
    const char *prefix_end = memchr(dir, '/', dir_len);
    if (!prefix_end)
        return false;
    size_t first_len = (size_t)(prefix_end - dir);
    if (is_tablespace ? strncmp(dir, "PG_", 3) != 0
                      : !(first_len == 4 && memcmp(dir, "base", 4) == 0))
        return false;
    /* exactly one more component of digits */
    const char *db = prefix_end + 1;
    const char *db_end = dir + dir_len;
    if (db >= db_end)
        return false;
    for (const char *p = db; p < db_end; p++)
        if (*p < '0' || *p > '9')
            return false;
    return true;
}

/* An unlogged relation's forks other than _init: recovery recreates them from the init fork. */
static bool is_unlogged_fork(const AgentPgdataFilter *f, const char *relpath,
                             const AgentRelFile *rf)
{
    if (rf->fork == AGENT_FORK_INIT)
        return false;
    char *path = NULL;
    const char *name = base_name(relpath);
    if (asprintf(&path, "%s/%.*s%u_init", f->root, (int)(name - relpath), relpath,
                 rf->relfilenode) < 0)
        return false;
    bool has_init = access(path, F_OK) == 0;
    free(path);
    return has_init;
}

bool agent_pgdata_relation(const AgentPgdataFilter *f, const char *relpath, AgentRelFile *ret)
{
    return in_database_dir(f, relpath) && agent_relfile_parse(base_name(relpath), ret);
}

bool agent_pgdata_is_excluded(const AgentPgdataFilter *f, const char *relpath,
                              const struct stat *st)
{
    const char *name = base_name(relpath);
    if (strncmp(name, "pgsql_tmp", 9) == 0)
        return true;
    if (!f->is_tablespace) {
        const char *slash = strchr(relpath, '/');
        if (slash) {
            size_t top_len = (size_t)(slash - relpath);
            for (size_t i = 0; i < ARRAY_SIZE(excluded_dir_contents); i++)
                if (strlen(excluded_dir_contents[i]) == top_len &&
                    memcmp(relpath, excluded_dir_contents[i], top_len) == 0)
                    /* keep pg_wal/archive_status itself, as pg_basebackup does */
                    return !(S_ISDIR(st->st_mode) && strcmp(relpath, "pg_wal/archive_status") == 0);
        }
    }
    if (S_ISDIR(st->st_mode))
        return false;
    for (size_t i = 0; i < ARRAY_SIZE(excluded_files); i++)
        if (strcmp(name, excluded_files[i]) == 0)
            return true;
    if (strncmp(name, "pg_internal.init", 16) == 0)
        return true;
    if (!in_database_dir(f, relpath))
        return false;
    if (agent_relfile_is_temp(name))
        return true;
    AgentRelFile rf;
    return agent_relfile_parse(name, &rf) && is_unlogged_fork(f, relpath, &rf);
}
