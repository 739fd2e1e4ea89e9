#include "agent/basebackup.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent/pagecheck.h"
#include "agent/pq.h"
#include "agent/pgdata.h"
#include "chunkstore/catalog.h"
#include "chunkstore/wal-object.h"
#include "common/fs-util.h"
#include "common/log.h"
#include "common/macro.h"
#include "common/time-util.h"

typedef struct Tablespace {
    char *oid;
    char *location;
    CsTreeRootAttr attr;
    CsContentRef root;
} Tablespace;

typedef struct Backup {
    const AgentBackupParams *params;
    AgentBackupResult *res;
    PGconn *conn;
    char *pgdata;
    Tablespace *ts;
    size_t n_ts;
    uint64_t start_lsn; /* pages at or after it are left to WAL replay */
    uint64_t bytes_total;
    double t0;            /* mono_now() at the start */
    bool is_archiving;    /* archive_mode is not off */

    /* page verification, on the reading thread */
    const AgentPgdataFilter *filter; /* of the tree being stored */
    const char *cur_relpath;
    bool cur_is_relation;
    AgentRelFile cur_rel;
    AgentPageCheckStats pages;
} Backup;

/* Server notices ("all required WAL segments have been archived") are debug output. */
static void log_notice(void *userdata, const char *msg)
{
    (void)userdata;
    log_debug("%.*s", pq_message_len(msg), msg);
}

/* Tell apart what a user must fix: a server that is not there, or credentials it refuses. */
static int connect_error(const AgentBackupParams *p, PGconn *conn)
{
    const char *msg = conn ? PQerrorMessage(conn) : "out of memory";
    bool is_auth = (conn && PQconnectionNeedsPassword(conn)) ||
                   strstr(msg, "authentication failed") || strstr(msg, "pg_hba.conf") ||
                   strstr(msg, "does not exist") || strstr(msg, "permission denied");
    return log_error_errno(is_auth ? -EACCES : -ECONNREFUSED,
                           "node %s: could not connect to PostgreSQL: %.*s", p->node,
                           pq_message_len(msg), msg);
}

/* Run a query that must return one row; logs and returns -EIO on failure. */
static int query_row(Backup *b, PGresult **ret, const char *what, const char *sql, int n_params,
                     const char *const *values)
{
    PGresult *res = PQexecParams(b->conn, sql, n_params, NULL, values, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        int r = log_error_errno(-EIO, "node %s: could not %s: %s", b->params->node, what,
                                PQresultErrorMessage(res));
        PQclear(res);
        return r;
    }
    *ret = res;
    return 0;
}

/* The first 8 bytes of global/pg_control are the system identifier. */
static int read_pgdata_sysid(const char *pgdata, uint64_t *ret)
{
    _cleanup_free_ char *path = path_join(pgdata, "global/pg_control");
    if (!path)
        return -ENOMEM;
    /* (a FIFO in its place must fail the backup, not hang it) */
    _cleanup_close_ int fd = open_regular(AT_FDCWD, path, 0, NULL);
    uint64_t v;
    size_t n;
    if (fd < 0)
        return fd;
    int r = read_full(fd, &v, sizeof(v), &n);
    if (r < 0)
        return r;
    if (n != sizeof(v))
        return -EBADMSG;
    *ret = v; /* host byte order, as PostgreSQL writes it */
    return 0;
}

static int check_server(Backup *b)
{
    const AgentBackupParams *p = b->params;
    AgentBackupResult *res = b->res;
    res->server_version = PQserverVersion(b->conn);
    if (res->server_version < 150000)
        return log_error_errno(-EINVAL,
                               "node %s: PostgreSQL %d.%d is too old: base backups need 15 or "
                               "later (pg_backup_start)",
                               p->node, res->server_version / 10000,
                               res->server_version % 10000 / 100);
    _cleanup_(PQclearp) PGresult *q = NULL;
    int r = query_row(b, &q, "read the server settings",
                      "SELECT pg_is_in_recovery(), current_setting('data_directory'), "
                      "current_setting('data_checksums'), system_identifier, "
                      "current_setting('archive_mode') "
                      "FROM pg_control_system()",
                      0, NULL);
    if (r < 0)
        return r;
    if (strcmp(PQgetvalue(q, 0, 0), "t") == 0)
        return log_error_errno(-EINVAL, "node %s: the server is a standby; back up its primary",
                               p->node);
    const char *server_dir = PQgetvalue(q, 0, 1);
    const char *dir = p->pgdata ? p->pgdata : server_dir;
    if (!(b->pgdata = realpath(dir, NULL)))
        return log_error_errno(errno == EACCES ? -EACCES : -errno,
                               "node %s: cannot open the data directory \"%s\": %m", p->node,
                               dir);
    /* A copy of the same cluster has the same system identifier: where the server's own
     * directory is visible here, it must be the one given. */
    struct stat mine, servers;
    if (p->pgdata && stat(b->pgdata, &mine) == 0 && stat(server_dir, &servers) == 0 &&
        (mine.st_dev != servers.st_dev || mine.st_ino != servers.st_ino))
        return log_error_errno(-EINVAL,
                               "node %s: \"%s\" is not the data directory of the server, which "
                               "uses \"%s\"",
                               p->node, b->pgdata, server_dir);
    res->data_checksums = strcmp(PQgetvalue(q, 0, 2), "on") == 0;
    b->is_archiving = strcmp(PQgetvalue(q, 0, 4), "off") != 0;
    res->system_identifier = strtoull(PQgetvalue(q, 0, 3), NULL, 10);
    uint64_t sysid = 0;
    if ((r = read_pgdata_sysid(b->pgdata, &sysid)) < 0)
        return log_error_errno(r == -EACCES ? -EACCES : r,
                               "node %s: cannot read \"%s/global/pg_control\": %m", p->node,
                               b->pgdata);
    if (sysid != res->system_identifier)
        return log_error_errno(-EINVAL,
                               "node %s: \"%s\" belongs to another cluster (system identifier "
                               "%" PRIu64 ", the server's is %" PRIu64 ")",
                               p->node, b->pgdata, sysid, res->system_identifier);
    return 0;
}

static int list_tablespaces(Backup *b)
{
    _cleanup_(PQclearp) PGresult *q =
        PQexec(b->conn, "SELECT oid::text, pg_tablespace_location(oid) FROM pg_tablespace "
                        "WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY oid");
    if (PQresultStatus(q) != PGRES_TUPLES_OK)
        return log_error_errno(-EIO, "node %s: could not list tablespaces: %s", b->params->node,
                               PQresultErrorMessage(q));
    int n = PQntuples(q);
    b->ts = calloc((size_t)n + 1, sizeof(*b->ts));
    if (!b->ts)
        return -ENOMEM;
    for (int i = 0; i < n; i++) {
        /* An in-place tablespace (a directory pg_tblspc/<oid>, as in a copy started from a
         * mounted snapshot) has a relative location: it is stored with the data directory. */
        if (PQgetvalue(q, i, 1)[0] != '/') {
            log_info("node %s: tablespace %s is in place (%s): stored with the data directory",
                     b->params->node, PQgetvalue(q, i, 0), PQgetvalue(q, i, 1));
            continue;
        }
        Tablespace *t = &b->ts[b->n_ts++];
        t->oid = strdup(PQgetvalue(q, i, 0));
        t->location = strdup(PQgetvalue(q, i, 1));
        if (!t->oid || !t->location)
            return -ENOMEM;
        int r = cs_tree_root_attr(t->location, &t->attr);
        if (r < 0)
            return log_error_errno(r, "node %s: cannot open tablespace %s at \"%s\": %m",
                                   b->params->node, t->oid, t->location);
    }
    return 0;
}

/* ---- the tree walk ---- */

static __thread uint64_t walk_bytes;

static int add_size(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)path;
    (void)ftw;
    if (flag == FTW_F && S_ISREG(st->st_mode))
        walk_bytes += (uint64_t)st->st_size;
    return 0;
}

/* A quick walk for the progress display's total; vanishing files are fine. */
static uint64_t estimate_bytes(Backup *b)
{
    walk_bytes = 0;
    nftw(b->pgdata, add_size, 32, FTW_PHYS);
    for (size_t i = 0; i < b->n_ts; i++)
        nftw(b->ts[i].location, add_size, 32, FTW_PHYS);
    return walk_bytes;
}

static bool tree_is_excluded(const char *relpath, const struct stat *st, void *userdata)
{
    Backup *b = userdata;
    return agent_pgdata_is_excluded(b->filter, relpath, st);
}

static bool tree_is_page_file(const char *relpath, const struct stat *st, void *userdata)
{
    (void)st;
    Backup *b = userdata;
    AgentRelFile rf;
    return agent_pgdata_relation(b->filter, relpath, &rf);
}

static void record_failure(Backup *b, uint32_t blkno)
{
    AgentBackupResult *res = b->res;
    res->n_checksum_failures++;
    if (res->n_checksum_failures_kept >= AGENT_CHECKSUM_FAILURES_KEEP)
        return;
    AgentChecksumFailure *v = realloc(res->checksum_failures,
                                      (res->n_checksum_failures_kept + 1) * sizeof(*v));
    if (!v)
        return;
    res->checksum_failures = v;
    char *file = strdup(b->cur_relpath);
    if (file)
        v[res->n_checksum_failures_kept++] = (AgentChecksumFailure){ .file = file,
                                                                     .block = blkno };
}

/* A page failed: read it once more, since the server may have been writing it as we read. */
static AgentPageVerdict recheck_page(const AgentPageBad *bad, void *userdata)
{
    Backup *b = userdata;
    AgentPageVerdict v = bad->verdict;
    AgentPageChecksums sums = bad->sums;
    _cleanup_free_ char *path = path_join(b->filter->root, b->cur_relpath);
    _cleanup_close_ int fd = path ? open_regular(AT_FDCWD, path, 0, NULL) : -1;
    uint8_t page[AGENT_PAGE_SIZE];
    size_t n;
    if (fd >= 0 && pread_full(fd, page, sizeof(page), bad->file_offset, &n) == 0) {
        /* Gone or shorter now: the relation was truncated while we read it, which WAL replay
         * repeats, as pg_basebackup concludes too. */
        if (n < sizeof(page))
            return AGENT_PAGE_SKIPPED_NEWER;
        v = agent_page_verify(page, bad->blkno, b->start_lsn, &sums);
    }
    if (!agent_page_verdict_is_bad(v))
        return v;
    const char *where = b->filter->is_tablespace ? "tablespace " : "";
    if (v == AGENT_PAGE_CORRUPT_CHECKSUM)
        log_warning("node %s: checksum failure in %s%s block %u: calculated %04X but the page "
                    "holds %04X",
                    b->params->node, where, b->cur_relpath, bad->blkno, sums.computed,
                    sums.stored);
    else
        log_warning("node %s: damaged page header in %s%s block %u", b->params->node, where,
                    b->cur_relpath, bad->blkno);
    record_failure(b, bad->blkno);
    return v;
}

static void observe_pages(const char *relpath, const void *p, size_t n, uint64_t offset,
                          void *userdata)
{
    Backup *b = userdata;
    if (!b->res->data_checksums)
        return;
    if (offset == 0) { /* a new file: every file's first piece comes at offset 0 */
        b->cur_relpath = relpath;
        b->cur_is_relation = agent_pgdata_relation(b->filter, relpath, &b->cur_rel);
    }
    if (!b->cur_is_relation)
        return;
    agent_pages_verify(p, n, offset, agent_relfile_first_block(&b->cur_rel), b->start_lsn,
                       &b->pages, recheck_page, b);
}

static void writer_progress(const CsWriterStats *s, void *userdata)
{
    Backup *b = userdata;
    b->params->progress(&(AgentBackupProgress){ .bytes_done = s->bytes_in,
                                                .bytes_total = b->bytes_total,
                                                .new_bytes = s->new_bytes,
                                                .seconds = mono_now() - b->t0 },
                        b->params->userdata);
}

static int add_file_entry(CsWriter *w, CsDirEntry **v, size_t *n, const char *name,
                          const char *text, const CsTreeRootAttr *owner)
{
    CsDirEntry *nv = realloc(*v, (*n + 1) * sizeof(**v));
    if (!nv)
        return -ENOMEM;
    *v = nv;
    CsDirEntry *e = &nv[*n];
    *e = (CsDirEntry){ .type = CS_ENTRY_FILE,
                       .mode = S_IFREG | 0600,
                       .uid = owner->uid,
                       .gid = owner->gid,
                       .mtime_sec = time(NULL),
                       .size = strlen(text) };
    if (!(e->name = strdup(name)))
        return -ENOMEM;
    (*n)++;
    return cs_writer_put_buf(w, text, strlen(text), CS_CHUNKING_CDC, &e->content);
}

static CsDirEntry dir_entry(const char *name, const CsTreeRootAttr *a, CsContentRef ref)
{
    return (CsDirEntry){ .type = CS_ENTRY_DIR,
                         .mode = a->mode,
                         .uid = a->uid,
                         .gid = a->gid,
                         .mtime_sec = a->mtime_sec,
                         .mtime_nsec = a->mtime_nsec,
                         .name = strdup(name),
                         .content = ref };
}

/*
 * The stored layout: a directory with "pgdata" (PGDATA with backup_label and tablespace_map
 * added) and, when there are tablespaces, "tablespaces/<oid>". Each directory reference moves
 * into the entry that holds it.
 */
static int store_layout(Backup *b, CsWriter *w, CsDirEntry *pg_v, size_t pg_n,
                        const CsTreeRootAttr *pg_attr, const char *label, const char *spcmap,
                        CsContentRef *ret)
{
    int r = add_file_entry(w, &pg_v, &pg_n, "backup_label", label, pg_attr);
    if (r == 0 && spcmap && *spcmap)
        r = add_file_entry(w, &pg_v, &pg_n, "tablespace_map", spcmap, pg_attr);
    CsContentRef pg_ref = { 0 };
    if (r == 0)
        r = cs_dir_store(w, pg_v, pg_n, &pg_ref);
    cs_dir_entries_free(pg_v, pg_n);
    if (r < 0)
        return r;
    CsDirEntry *top = calloc(2, sizeof(*top));
    if (!top) {
        cs_content_ref_free(&pg_ref);
        return -ENOMEM;
    }
    size_t n_top = 0;
    top[n_top++] = dir_entry("pgdata", pg_attr, pg_ref);
    if (b->n_ts) {
        CsDirEntry *ts = calloc(b->n_ts, sizeof(*ts));
        if (!ts) {
            cs_dir_entries_free(top, n_top);
            return -ENOMEM;
        }
        for (size_t i = 0; i < b->n_ts; i++) {
            ts[i] = dir_entry(b->ts[i].oid, &b->ts[i].attr, b->ts[i].root);
            b->ts[i].root = (CsContentRef){ 0 };
            if (!ts[i].name)
                r = -ENOMEM;
        }
        CsContentRef ts_ref = { 0 };
        if (r == 0)
            r = cs_dir_store(w, ts, b->n_ts, &ts_ref);
        cs_dir_entries_free(ts, b->n_ts);
        top[n_top++] = dir_entry("tablespaces", pg_attr, ts_ref);
    }
    for (size_t i = 0; r == 0 && i < n_top; i++)
        if (!top[i].name)
            r = -ENOMEM;
    if (r == 0)
        r = cs_dir_store(w, top, n_top, ret);
    cs_dir_entries_free(top, n_top);
    return r;
}

/* The node's previous base backup: a page that changed since is stored as a delta of its
 * version there. Returns the directory at `path` of it ("pgdata", "tablespaces/<oid>"), or
 * NULL when there is none (a first backup, a new tablespace). */
typedef struct Previous {
    CsSnapshot snap; /* kind NULL: none */
    CsReader *rd;
    CsDirEntry dir;
} Previous;

static const CsContentRef *previous_dir(Previous *prev, const char *path)
{
    cs_dir_entry_clear(&prev->dir);
    if (!prev->snap.kind || cs_tree_lookup(prev->rd, &prev->snap.root, path, &prev->dir) < 0 ||
        prev->dir.type != CS_ENTRY_DIR)
        return NULL;
    return &prev->dir.content;
}

static void previous_clear(Previous *prev)
{
    cs_dir_entry_clear(&prev->dir);
    cs_reader_free(prev->rd);
    cs_snapshot_clear(&prev->snap);
}

/* PostgreSQL's own test (XLogArchiveIsBusy): .done means archived, .ready means waiting, and a
 * segment with neither that is gone was archived and recycled. */
static int wal_is_archived(const char *pgdata, const char *walname, bool *ret)
{
    static const struct {
        const char *dir, *suffix;
        bool is_archived; /* when this file exists */
    } tries[] = { { "pg_wal/archive_status/", ".done", true },
                  { "pg_wal/archive_status/", ".ready", false },
                  { "pg_wal/archive_status/", ".done", true }, /* the archiver just finished */
                  { "pg_wal/", "", false } };
    for (size_t i = 0; i < ARRAY_SIZE(tries); i++) {
        _cleanup_free_ char *path = NULL;
        if (asprintf(&path, "%s/%s%s%s", pgdata, tries[i].dir, walname, tries[i].suffix) < 0)
            return -ENOMEM;
        struct stat st;
        if (stat(path, &st) == 0) {
            *ret = tries[i].is_archived;
            return 0;
        }
        if (errno != ENOENT)
            return -errno;
    }
    *ret = true; /* neither status file nor segment: archived and removed */
    return 0;
}

/*
 * Wait until the last WAL segment of the backup is archived; the archiver works in order, so
 * every earlier one is too. pg_backup_stop(true) would wait the same way, but it looks once a
 * second (a third of the time of a small backup) and never gives up.
 */
static int wait_archived(Backup *b, const char *walname)
{
    const AgentBackupParams *p = b->params;
    unsigned timeout = p->archive_timeout_s ? p->archive_timeout_s : AGENT_ARCHIVE_TIMEOUT_DEFAULT;
    double start = mono_now(), next_note = start + 10;
    unsigned delay_ms = 5;
    for (;;) {
        bool done;
        int r = wal_is_archived(b->pgdata, walname, &done);
        if (r < 0)
            return log_error_errno(r, "node %s: cannot see whether WAL segment %s is archived: %m",
                                   p->node, walname);
        if (done)
            return 0;
        double now = mono_now();
        if (now - start >= timeout)
            return log_error_errno(-ETIMEDOUT,
                                   "node %s: WAL segment %s was not archived within %u s, so the "
                                   "backup cannot be restored and is not recorded\n"
                                   "HINT: check archive_command and pg_stat_archiver on the "
                                   "server, or allow longer with --archive-timeout",
                                   p->node, walname, timeout);
        if (now >= next_note) {
            log_info("node %s: waiting for WAL segment %s to be archived (%.0f s)", p->node,
                     walname, now - start);
            next_note += 10;
        }
        sleep_ms(delay_ms);
        delay_ms = MIN(delay_ms * 2, 100u);
    }
}

static int copy_files(Backup *b, CsWriter *w, CsContentRef *ret, const char *label_sql,
                      char **ret_label, char **ret_spcmap)
{
    const AgentBackupParams *p = b->params;
    CsTreeRootAttr pg_attr;
    int r = cs_tree_root_attr(b->pgdata, &pg_attr);
    if (r < 0)
        return log_error_errno(r, "node %s: cannot open \"%s\": %m", p->node, b->pgdata);
    AgentPgdataFilter filter = { .root = b->pgdata };
    CsTreeParams tp = { .is_excluded = tree_is_excluded,
                        .is_page_file = tree_is_page_file,
                        .observe_page_file = observe_pages,
                        .userdata = b };
    b->filter = &filter;
    _cleanup_(previous_clear) Previous prev = { 0 };
    if (agent_backup_find_latest(cs_writer_repo(w), p->node, &prev.snap) == 0 &&
        cs_reader_new(cs_writer_repo(w), &prev.rd) < 0)
        cs_snapshot_clear(&prev.snap);
    if (prev.snap.kind) {
        snprintf(b->res->parent_id, sizeof(b->res->parent_id), "%s", prev.snap.id);
        log_info("node %s: changed pages are stored as deltas of backup %s", p->node,
                 prev.snap.id);
    }
    CsDirEntry *pg_v = NULL;
    size_t pg_n = 0;
    tp.previous = previous_dir(&prev, "pgdata");
    r = cs_tree_store_entries(w, b->pgdata, &tp, &pg_v, &pg_n, &b->res->tree);
    if (r < 0)
        return log_error_errno(r == -EACCES ? -EACCES : r,
                               "node %s: could not back up \"%s\": %m", p->node, b->pgdata);
    for (size_t i = 0; r == 0 && i < b->n_ts; i++) {
        AgentPgdataFilter tf = { .root = b->ts[i].location, .is_tablespace = true };
        b->filter = &tf;
        b->cur_relpath = NULL;
        _cleanup_free_ char *ts_path = NULL;
        if (asprintf(&ts_path, "tablespaces/%s", b->ts[i].oid) < 0) {
            r = -ENOMEM;
            break;
        }
        tp.previous = previous_dir(&prev, ts_path);
        r = cs_tree_store(w, b->ts[i].location, &tp, &b->ts[i].root, &b->res->tree);
        if (r < 0)
            log_error_errno(r, "node %s: could not back up tablespace %s at \"%s\": %m",
                            p->node, b->ts[i].oid, b->ts[i].location);
    }
    b->filter = NULL;
    if (r < 0) {
        cs_dir_entries_free(pg_v, pg_n);
        return r;
    }

    /* Stop the backup, then wait until the WAL up to the stop LSN is archived, so that the
     * backup is restorable from the archive alone once it is recorded. */
    _cleanup_(PQclearp) PGresult *q = NULL;
    if ((r = query_row(b, &q, "stop the backup (pg_backup_stop)", label_sql, 0, NULL)) < 0) {
        cs_dir_entries_free(pg_v, pg_n);
        return r;
    }
    if (!b->is_archiving)
        log_warning("node %s: WAL archiving is off (archive_mode); restoring this backup needs "
                    "the WAL up to %s from elsewhere",
                    p->node, PQgetvalue(q, 0, 0));
    else if ((r = wait_archived(b, PQgetvalue(q, 0, 3))) < 0) {
        cs_dir_entries_free(pg_v, pg_n);
        return r;
    }
    snprintf(b->res->stop_lsn, sizeof(b->res->stop_lsn), "%s", PQgetvalue(q, 0, 0));
    *ret_label = strdup(PQgetvalue(q, 0, 1));
    *ret_spcmap = strdup(PQgetvalue(q, 0, 2));
    if (!*ret_label || !*ret_spcmap) {
        cs_dir_entries_free(pg_v, pg_n);
        return -ENOMEM;
    }
    return store_layout(b, w, pg_v, pg_n, &pg_attr, *ret_label, *ret_spcmap, ret);
}

static json_t *result_meta(const Backup *b, const char *label)
{
    const AgentBackupResult *res = b->res;
    char sysid[24];
    snprintf(sysid, sizeof(sysid), "%" PRIu64, res->system_identifier);
    json_t *fails = json_array(), *ts = json_array();
    for (size_t i = 0; fails && i < res->n_checksum_failures_kept; i++)
        json_array_append_new(fails, json_pack("{s:s,s:I}", "file",
                                               res->checksum_failures[i].file, "block",
                                               (json_int_t)res->checksum_failures[i].block));
    for (size_t i = 0; ts && i < b->n_ts; i++)
        json_array_append_new(ts, json_pack("{s:s,s:s}", "oid", b->ts[i].oid, "location",
                                            b->ts[i].location));
    return json_pack("{s:s,s:s,s:s,s:i,s:s,s:s,s:s,s:i,s:b,s:s,s:o,s:{s:I,s:I,s:o},"
                     "s:{s:I,s:I,s:I,s:I,s:I,s:f}}",
                     "node", b->params->node, "pgdata", b->pgdata, "system_identifier", sysid,
                     "timeline", (int)res->timeline, "start_lsn", res->start_lsn, "stop_lsn",
                     res->stop_lsn, "start_wal", res->start_wal, "server_version",
                     res->server_version, "data_checksums", res->data_checksums, "label",
                     label, "tablespaces", ts, "pages", "checked",
                     (json_int_t)res->pages_checked, "checksum_failures",
                     (json_int_t)res->n_checksum_failures, "failures", fails, "stats", "files",
                     (json_int_t)res->tree.files, "bytes", (json_int_t)res->tree.bytes,
                     "new_bytes", (json_int_t)res->writer.new_bytes, "stored_bytes",
                     (json_int_t)res->writer.stored_bytes, "page_files",
                     (json_int_t)res->tree.page_files, "seconds", res->seconds);
}

static int run_backup(Backup *b, CsRepo *repo)
{
    const AgentBackupParams *p = b->params;
    AgentBackupResult *res = b->res;
    int r;
    if ((r = check_server(b)) < 0 || (r = list_tablespaces(b)) < 0)
        return r;

    /* The writer first: a busy repository fails before the server starts a checkpoint. */
    _cleanup_(cs_writer_freep) CsWriter *w = NULL;
    if ((r = cs_writer_new(repo, &(CsWriterParams){ .threads = p->threads }, &w)) < 0)
        return log_error_errno(r, "node %s: could not write to the repository: %m", p->node);
    if (p->progress) {
        b->bytes_total = estimate_bytes(b);
        cs_writer_set_progress(w, writer_progress, b);
    }

    char label_buf[256];
    const char *label = p->label;
    if (!label) {
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        char ts[32];
        strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
        snprintf(label_buf, sizeof(label_buf), "pitrfs %s %s", p->node, ts);
        label = label_buf;
    }
    _cleanup_(PQclearp) PGresult *q = NULL;
    const char *values[] = { label };
    if ((r = query_row(b, &q, "start the backup (pg_backup_start)",
                       "SELECT lsn::text, pg_walfile_name(lsn), "
                       "(SELECT timeline_id FROM pg_control_checkpoint()) "
                       "FROM pg_backup_start($1, true) AS lsn",
                       1, values)) < 0)
        return r;
    snprintf(res->start_lsn, sizeof(res->start_lsn), "%s", PQgetvalue(q, 0, 0));
    snprintf(res->start_wal, sizeof(res->start_wal), "%s", PQgetvalue(q, 0, 1));
    res->timeline = (uint32_t)strtoul(PQgetvalue(q, 0, 2), NULL, 10);
    cs_wal_lsn_parse(res->start_lsn, &b->start_lsn);
    log_info("node %s: backup started at %s (%s), timeline %u", p->node, res->start_lsn,
             res->start_wal, res->timeline);

    CsSnapshot snap = { 0 };
    _cleanup_free_ char *backup_label = NULL, *spcmap = NULL;
    r = copy_files(b, w, &snap.root, "SELECT lsn::text, labelfile, spcmapfile, "
                                      "pg_walfile_name(lsn) FROM pg_backup_stop(false)",
                   &backup_label, &spcmap);
    /* A failure before pg_backup_stop leaves the backup open in this session: closing the
     * connection aborts it, which is all PostgreSQL needs. */
    if (r == 0 && (r = cs_writer_flush(w)) < 0)
        log_error_errno(r, "node %s: could not make the backup durable: %m", p->node);
    if (r < 0) {
        cs_content_ref_free(&snap.root);
        return r;
    }
    cs_writer_stats(w, &res->writer);
    res->pages_checked = b->pages.verified;
    res->n_tablespaces = (unsigned)b->n_ts;
    res->seconds = mono_now() - b->t0;
    snap.name = strdup(p->node);
    snap.kind = strdup(AGENT_BASEBACKUP_KIND);
    snap.meta = result_meta(b, label);
    /* The data directory's own mode and owner, as `store` records a tree's: a cluster
     * snapshot's directory for this node takes them, so its owner can enter it in the mount. */
    CsTreeRootAttr ra;
    if (snap.meta && cs_tree_root_attr(b->pgdata, &ra) == 0)
        json_object_set_new(snap.meta, "root_attr",
                            json_pack("{s:I, s:I, s:I, s:I, s:I}", "mode", (json_int_t)ra.mode,
                                      "uid", (json_int_t)ra.uid, "gid", (json_int_t)ra.gid,
                                      "mtime", (json_int_t)ra.mtime_sec, "mtime_nsec",
                                      (json_int_t)ra.mtime_nsec));
    r = !snap.name || !snap.kind || !snap.meta ? -ENOMEM : cs_catalog_add(repo, &snap);
    if (r == 0)
        memcpy(res->snapshot_id, snap.id, sizeof(res->snapshot_id));
    else
        log_error_errno(r, "node %s: could not record the base backup: %m", p->node);
    cs_snapshot_clear(&snap);
    return r;
}

int agent_backup(CsRepo *repo, const AgentBackupParams *params, AgentBackupResult *ret)
{
    *ret = (AgentBackupResult){ 0 };
    Backup b = { .params = params, .res = ret };
    b.t0 = mono_now();
    /* A server that accepts the connection and then hangs must not hang the backup: a
     * connect_timeout in the caller's string still wins, since it comes later. */
    const char *const keys[] = { "connect_timeout", "dbname", NULL };
    const char *const values[] = { "30", params->conninfo ? params->conninfo : "", NULL };
    b.conn = PQconnectdbParams(keys, values, 1);
    if (b.conn)
        PQsetNoticeProcessor(b.conn, log_notice, NULL);
    int r;
    if (!b.conn || PQstatus(b.conn) != CONNECTION_OK)
        r = connect_error(params, b.conn);
    else
        r = run_backup(&b, repo);
    PQfinish(b.conn);
    free(b.pgdata);
    for (size_t i = 0; i < b.n_ts; i++) {
        free(b.ts[i].oid);
        free(b.ts[i].location);
        cs_content_ref_free(&b.ts[i].root);
    }
    free(b.ts);
    if (r == 0 && ret->n_checksum_failures) {
        log_error("node %s: %" PRIu64 " pages failed their checksum (base backup %s is stored "
                  "and lists them)",
                  params->node, ret->n_checksum_failures, ret->snapshot_id);
        r = -EIO;
    }
    return r;
}

json_t *agent_backup_result_json(const AgentBackupResult *res, const char *node,
                                 size_t max_failures)
{
    char sysid[24];
    snprintf(sysid, sizeof(sysid), "%" PRIu64, res->system_identifier);
    json_t *fails = json_array();
    for (size_t i = 0; fails && i < res->n_checksum_failures_kept && i < max_failures; i++)
        json_array_append_new(fails, json_pack("{s:s,s:I}", "file",
                                               res->checksum_failures[i].file, "block",
                                               (json_int_t)res->checksum_failures[i].block));
    return json_pack(
        "{s:s,s:s,s:s,s:i,s:s,s:s,s:s,s:i,s:b,s:I,s:I,s:o*,s:I,s:I,s:I,s:I,s:s*,s:I,s:i,s:f}",
        "snapshot_id", res->snapshot_id, "node", node, "system_identifier", sysid, "timeline",
        (int)res->timeline, "start_lsn", res->start_lsn, "stop_lsn", res->stop_lsn, "start_wal",
        res->start_wal, "server_version", res->server_version, "data_checksums",
        res->data_checksums, "pages_checked", (json_int_t)res->pages_checked,
        "checksum_failures_total", (json_int_t)res->n_checksum_failures, "checksum_failures",
        fails, "files", (json_int_t)res->tree.files, "bytes", (json_int_t)res->tree.bytes,
        "new_bytes", (json_int_t)res->writer.new_bytes, "delta_pages",
        (json_int_t)res->writer.delta_chunks, "parent", res->parent_id[0] ? res->parent_id : NULL,
        "stored_bytes", (json_int_t)res->writer.stored_bytes, "tablespaces",
        (int)res->n_tablespaces, "seconds", res->seconds);
}

int agent_backup_find_latest(CsRepo *repo, const char *node, CsSnapshot *ret)
{
    CsSnapshot *v;
    size_t n;
    int r = cs_catalog_list(repo, &v, &n);
    if (r < 0)
        return log_error_errno(r, "could not list snapshots: %m");
    r = -ENOENT;
    for (size_t i = n; r == -ENOENT && i-- > 0;) /* oldest first: search from the end */
        if (strcmp(v[i].kind, AGENT_BASEBACKUP_KIND) == 0 && strcmp(v[i].name, node) == 0) {
            *ret = v[i];
            v[i] = (CsSnapshot){ 0 };
            r = 0;
        }
    cs_snapshots_free(v, n);
    return r;
}

void agent_backup_result_clear(AgentBackupResult *r)
{
    for (size_t i = 0; i < r->n_checksum_failures_kept; i++)
        free(r->checksum_failures[i].file);
    free(r->checksum_failures);
    *r = (AgentBackupResult){ 0 };
}
