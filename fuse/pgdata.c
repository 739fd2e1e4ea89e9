#include "fuse/pgdata.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "chunkstore/read.h"
#include "chunkstore/wal-object.h"
#include "common/conf-setting.h"
#include "common/log.h"
#include "common/macro.h"

#define AUTO_CONF       "postgresql.auto.conf"
#define TABLESPACE_MAP  "tablespace_map"
#define AUTO_CONF_MAX   (4u << 20) /* ALTER SYSTEM's file: a few lines */
#define SEGMENTS_MAX    (1u << 20) /* 16 TiB of 16 MiB segments: a damaged catalog entry */

PfsSource pfs_pgdata_child_source(const PfsNode *dir, const CsDirEntry *e)
{
    bool is_dir = e->type == CS_ENTRY_DIR;
    switch (dir->src) {
    case PFS_SRC_CLUSTER: return is_dir ? PFS_SRC_MEMBER : PFS_SRC_STORED;
    case PFS_SRC_MEMBER:
        return is_dir && strcmp(e->name, "pgdata") == 0 ? PFS_SRC_PGDATA : PFS_SRC_STORED;
    case PFS_SRC_PGDATA:
        if (is_dir && strcmp(e->name, "pg_wal") == 0)
            return PFS_SRC_PG_WAL;
        if (is_dir && strcmp(e->name, "pg_tblspc") == 0)
            return PFS_SRC_PG_TBLSPC;
        /* unless the snapshot did not say how to recover (then nothing was made up) */
        if (e->type == CS_ENTRY_FILE && strcmp(e->name, AUTO_CONF) == 0 && dir->dir &&
            dir->dir->made_file.size)
            return PFS_SRC_RECOVERY_CONF;
        return PFS_SRC_STORED;
    default: return PFS_SRC_STORED;
    }
}

const Buf *pfs_pgdata_recovery_conf(const PfsNode *file)
{
    return &file->parent->dir->made_file;
}

/* ---- what the cluster snapshot says about the node ---- */

typedef struct Member {
    char snapshot_id[2 * CS_SNAP_ID_SIZE + 1];
    const char *node; /* the member directory's name */
    char restore_point[64];
    uint64_t csn;
    uint32_t tli;
    char walfile[CS_WAL_NAME_MAX]; /* "" when the snapshot does not know it (citus workers) */
    uint64_t start_lsn;
} Member;

static int member_from_meta(const json_t *meta, const char *node, Member *m)
{
    const char *rp = json_string_value(json_object_get(meta, "restore_point"));
    json_t *nodes = json_object_get(meta, "nodes");
    size_t i;
    json_t *o;
    json_array_foreach (nodes, i, o) {
        const char *name = json_string_value(json_object_get(o, "name"));
        if (!name || strcmp(name, node) != 0)
            continue;
        const char *walfile = json_string_value(json_object_get(o, "walfile"));
        const char *start = json_string_value(json_object_get(o, "backup_start_lsn"));
        json_int_t tli = json_integer_value(json_object_get(o, "timeline"));
        CsWalName w;
        if (!rp || strlen(rp) >= sizeof(m->restore_point) || !start ||
            cs_wal_lsn_parse(start, &m->start_lsn) < 0 || tli < 1 || tli > UINT32_MAX ||
            (walfile && walfile[0] &&
             (cs_wal_name_parse(walfile, &w) < 0 || w.kind != CS_WAL_SEGMENT)))
            return -EBADMSG;
        strcpy(m->restore_point, rp);
        snprintf(m->walfile, sizeof(m->walfile), "%s", walfile ? walfile : "");
        m->tli = (uint32_t)tli;
        m->csn = (uint64_t)json_integer_value(json_object_get(meta, "csn"));
        return 0;
    }
    return -ENOENT;
}

/* `pgdata` is /snapshots/<cluster-id>/<node>/pgdata. */
static int member_of(PfsFs *fs, const PfsNode *pgdata, Member *ret)
{
    const PfsNode *member = pgdata->parent, *root = member->parent;
    *ret = (Member){ .node = member->e->name };
    snprintf(ret->snapshot_id, sizeof(ret->snapshot_id), "%s", root->e->name);
    int r = -ENOENT;
    for (int pass = 0; pass < 2 && r == -ENOENT; pass++) {
        PfsView *v;
        pfs_catalog_get(fs->catalog, pass > 0, &v);
        const PfsViewEntry *ve = pfs_view_find(v->trees, v->n_trees, ret->snapshot_id);
        if (ve)
            r = member_from_meta(ve->snap->meta, ret->node, ret);
        pfs_view_unref(v);
    }
    return r;
}

/* ---- entries ---- */

static CsDirEntry *entry_find_in(PfsDirData *dd, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(dd->v[i].name, name) == 0)
            return &dd->v[i];
    return NULL;
}

static CsDirEntry *entry_find(PfsDirData *dd, const char *name)
{
    return entry_find_in(dd, dd->n, name);
}

/* Append an entry (its name is strdup'ed; the content is taken). Sort afterwards. */
static int entry_add(PfsDirData *dd, const CsDirEntry *like, const char *name, CsDirEntry **ret)
{
    CsDirEntry *v = realloc(dd->v, (dd->n + 1) * sizeof(*v));
    if (!v)
        return -ENOMEM;
    dd->v = v;
    char *copy = strdup(name);
    if (!copy)
        return -ENOMEM;
    v[dd->n] = *like;
    v[dd->n].name = copy;
    *ret = &v[dd->n++];
    return 0;
}

/* A file or directory the mount adds, owned like the directory it is in. */
static CsDirEntry made_entry(const CsDirEntry *dir, uint8_t type, uint32_t mode)
{
    return (CsDirEntry){ .type = type,
                         .mode = mode,
                         .uid = dir->uid,
                         .gid = dir->gid,
                         .mtime_sec = dir->mtime_sec,
                         .mtime_nsec = dir->mtime_nsec };
}

/* ---- pgdata/pg_tblspc/ ---- */

static bool is_oid_name(const char *name)
{
    size_t n = strlen(name);
    return n > 0 && n <= 10 && strspn(name, "0123456789") == n;
}

/* The stored listing of the node's tablespaces/ (empty when it has none). A directory that
 * cannot be read is an error, never taken for an absent one: a copy would then reach the
 * original locations. */
static int stored_tablespaces(PfsFs *fs, const PfsNode *member, PfsDirData *ret)
{
    PfsDirData root = { 0 };
    int r = pfs_fs_load_dir(fs, &member->e->content, &root);
    if (r == 0) {
        CsDirEntry *ts = entry_find(&root, "tablespaces");
        if (ts && ts->type != CS_ENTRY_DIR)
            r = -EBADMSG;
        else if (ts)
            r = pfs_fs_load_dir(fs, &ts->content, ret);
    }
    cs_dir_entries_free(root.v, root.n);
    cs_xattr_list_clear(&root.own);
    return r;
}

/*
 * Replace each link of `dd` (a stored pg_tblspc/ listing) to a tablespace that the node's backup
 * holds by that tablespace's stored directory, <node>/tablespaces/<oid>/, as PostgreSQL's
 * in-place tablespaces are. A copy of pgdata/ then holds its tablespaces and never reaches their
 * original locations, where the node itself may still run. A link to a tablespace the backup
 * lacks stays (logged when `log_missing`). Returns the number of directories dd then holds, or
 * -errno.
 */
static int tablespaces_in_place(PfsFs *fs, const PfsNode *member, PfsDirData *dd,
                                bool log_missing)
{
    PfsDirData stored = { 0 };
    int r = stored_tablespaces(fs, member, &stored), n_dirs = 0;
    for (size_t i = 0; r == 0 && i < dd->n; i++) {
        CsDirEntry *e = &dd->v[i], *ts;
        if (e->type == CS_ENTRY_SYMLINK && is_oid_name(e->name)) {
            if (!(ts = entry_find(&stored, e->name))) {
                if (log_missing)
                    log_warning("tablespace %s of node \"%s\" is not in its backup: "
                                "pg_tblspc/%s is shown as stored, a link to \"%s\"",
                                e->name, member->e->name, e->name, e->target);
            } else if (ts->type != CS_ENTRY_DIR)
                r = -EBADMSG;
            else { /* the stored directory's entry under the link's name; its content moves */
                char *name = e->name;
                e->name = NULL;
                pfs_dir_entry_clear(e);
                *e = *ts;
                e->name = name;
                ts->content = (CsContentRef){ 0 };
                ts->xattrs = (CsXattrList){ 0 };
                ts->holes = NULL;
                ts->n_holes = 0;
            }
        }
        n_dirs += e->type == CS_ENTRY_DIR;
    }
    cs_dir_entries_free(stored.v, stored.n);
    cs_xattr_list_clear(&stored.own);
    return r < 0 ? r : n_dirs;
}

/* How many directories pgdata/pg_tblspc/ (`e`, NULL when there is none) shows. */
static int dir_tablespaces(PfsFs *fs, const PfsNode *member, const CsDirEntry *e)
{
    if (!e || e->type != CS_ENTRY_DIR || e->content.count == 0)
        return 0;
    PfsDirData dd = { 0 };
    int r = pfs_fs_load_dir(fs, &e->content, &dd);
    if (r == 0)
        r = tablespaces_in_place(fs, member, &dd, false);
    cs_dir_entries_free(dd.v, dd.n);
    cs_xattr_list_clear(&dd.own);
    return r;
}

/* ---- pgdata/ ---- */

static int recovery_conf(PfsFs *fs, const Member *m, const CsDirEntry *stored,
                         bool has_dir_tablespaces, Buf *out)
{
    int r = 0;
    if (stored) {
        PfsReader *rd;
        if ((r = pfs_reader_pool_get(fs->readers, &rd)) < 0)
            return r;
        _cleanup_(buf_free) Buf old = BUF_INIT;
        r = cs_reader_read_all(rd->rd, &stored->content, AUTO_CONF_MAX, &old);
        pfs_reader_pool_put(fs->readers, rd);
        if (r < 0)
            return r;
        r = conf_append_without_recovery(out, (const char *)old.data, old.size);
    }
    char tli[16];
    snprintf(tli, sizeof(tli), "%" PRIu32, m->tli);
    if (r == 0)
        r = buf_printf(out,
                       "# Recovery settings shown by mount.pitrfs: this data directory recovers "
                       "to\n# cluster snapshot %s (CSN %" PRIu64 ") and is promoted there.\n"
                       "# pg_wal/ holds all the WAL it needs, so restore_command fetches "
                       "nothing.\n",
                       m->snapshot_id, m->csn);
    if (r == 0)
        r = conf_append_setting(out, "restore_command", "false");
    if (r == 0)
        r = conf_append_setting(out, "recovery_target_name", m->restore_point);
    if (r == 0)
        r = conf_append_setting(out, "recovery_target_timeline", tli);
    if (r == 0)
        r = conf_append_setting(out, "recovery_target_action", "promote");
    /* Recovery PANICs at a directory in pg_tblspc/ unless this is on (a WARNING then). */
    if (r == 0 && has_dir_tablespaces)
        r = buf_printf(out, "# Its tablespaces are directories in pg_tblspc/ (in place), which "
                            "recovery must allow.\n");
    if (r == 0 && has_dir_tablespaces)
        r = conf_append_setting(out, "allow_in_place_tablespaces", "on");
    return r;
}

static void entry_remove(PfsDirData *dd, CsDirEntry *e)
{
    size_t i = (size_t)(e - dd->v);
    pfs_dir_entry_clear(e);
    memmove(e, e + 1, (dd->n - i - 1) * sizeof(*e));
    dd->n--;
}

static int amend_pgdata(PfsFs *fs, const PfsNode *dir, const Member *m, PfsDirData *dd)
{
    CsDirEntry *conf = entry_find(dd, AUTO_CONF);
    if (conf && conf->type != CS_ENTRY_FILE)
        return -EBADMSG;
    int r = dir_tablespaces(fs, dir->parent, entry_find(dd, "pg_tblspc"));
    if (r < 0)
        return r;
    bool has_dir_tablespaces = r > 0;
    r = recovery_conf(fs, m, conf, has_dir_tablespaces, &dd->made_file);
    CsDirEntry *e;
    if (r == 0 && !conf) {
        CsDirEntry like = made_entry(dir->e, CS_ENTRY_FILE, S_IFREG | 0600);
        r = entry_add(dd, &like, AUTO_CONF, &conf);
    }
    if (r < 0)
        return r;
    cs_content_ref_free(&conf->content); /* read from made_file */
    conf->content = (CsContentRef){ .size = dd->made_file.size };
    free(conf->holes); /* the stored file's, not this one's */
    conf->holes = NULL;
    conf->n_holes = 0;
    conf->size = dd->made_file.size;

    if (!entry_find(dd, "recovery.signal")) {
        CsDirEntry like = made_entry(dir->e, CS_ENTRY_FILE, S_IFREG | 0600);
        if ((r = entry_add(dd, &like, "recovery.signal", &e)) < 0)
            return r;
    }
    if (!entry_find(dd, "pg_wal")) { /* a backup that left it out */
        CsDirEntry like = made_entry(dir->e, CS_ENTRY_DIR, S_IFDIR | 0700);
        if ((r = entry_add(dd, &like, "pg_wal", &e)) < 0)
            return r;
    }
    if ((e = entry_find(dd, "standby.signal"))) /* would ask for a standby instead */
        entry_remove(dd, e);
    /* Recovery would try to replace pg_tblspc/'s directories by links to the original
     * locations, and fail to start (they are not empty). */
    if (has_dir_tablespaces && (e = entry_find(dd, TABLESPACE_MAP)))
        entry_remove(dd, e);
    pfs_dir_data_sort(dd);
    return 0;
}

/* ---- pgdata/pg_wal/ ---- */

/* Add the archived file `name` of the node, if there is one: 1 when added, 0 when it is not
 * archived, or -errno. */
static int add_archived(PfsFs *fs, const Member *m, const CsDirEntry *dir, const char *name,
                        PfsDirData *dd)
{
    CsWalName w;
    char objname[CS_WAL_OBJECT_NAME_MAX];
    int r = cs_wal_name_parse(name, &w);
    if (r == 0)
        r = cs_wal_object_name(m->node, &w, objname, sizeof(objname));
    if (r < 0)
        return r;
    CsWalObject o;
    if ((r = cs_wal_object_load(fs->repo, objname, &o)) == -ENOENT)
        return 0;
    if (r < 0)
        return log_error_errno(r, "WAL object \"%s\" cannot be read: %m", objname);
    CsDirEntry like = made_entry(dir, CS_ENTRY_FILE, S_IFREG | 0600), *e;
    like.mtime_sec = o.archived_at;
    like.mtime_nsec = 0;
    like.size = o.size;
    if ((r = entry_add(dd, &like, name, &e)) == 0) {
        e->content = o.content;
        o.content = (CsContentRef){ 0 };
    }
    cs_wal_object_clear(&o);
    return r < 0 ? r : 1;
}

typedef struct Latest {
    char name[CS_WAL_NAME_MAX];
} Latest;

static int latest_segment(const char *objname, const CsWalName *name, void *userdata)
{
    (void)objname;
    Latest *l = userdata;
    if (name->kind == CS_WAL_SEGMENT && strcmp(name->name, l->name) > 0)
        strcpy(l->name, name->name);
    return 0;
}

/* The last segment recovery needs: the restore point's, or (not known) the last archived on
 * the timeline, since recovery stops at the restore point wherever it is. */
static int last_segment(PfsFs *fs, const Member *m, CsWalName *ret, uint64_t *ret_seg_size)
{
    Latest l = { "" };
    int r = 0;
    if (m->walfile[0])
        strcpy(l.name, m->walfile);
    else {
        char tli[16];
        snprintf(tli, sizeof(tli), "%08" PRIX32, m->tli);
        if ((r = cs_wal_list(fs->repo, m->node, tli, latest_segment, &l)) < 0)
            return r;
        if (!l.name[0])
            return -ENOENT;
    }
    char objname[CS_WAL_OBJECT_NAME_MAX];
    CsWalObject o;
    if ((r = cs_wal_name_parse(l.name, ret)) < 0 ||
        (r = cs_wal_object_name(m->node, ret, objname, sizeof(objname))) < 0 ||
        (r = cs_wal_object_load(fs->repo, objname, &o)) < 0)
        return r;
    *ret_seg_size = o.size;
    cs_wal_object_clear(&o);
    return cs_wal_seg_size_is_valid(*ret_seg_size) ? 0 : -EBADMSG;
}

static int amend_pg_wal(PfsFs *fs, const PfsNode *dir, const Member *m, PfsDirData *dd)
{
    CsWalName last;
    uint64_t seg_size, end;
    int r = last_segment(fs, m, &last, &seg_size);
    if (r == 0)
        r = cs_wal_segno(&last, seg_size, &end);
    if (r < 0)
        return log_error_errno(r, "the WAL segment holding the restore point of node \"%s\" "
                                  "(%s) cannot be read: %m",
                               m->node, m->walfile[0] ? m->walfile : "the last archived");
    uint64_t start = m->start_lsn / seg_size;
    if (start > end || end - start >= SEGMENTS_MAX)
        return log_error_errno(-EBADMSG, "the WAL range of node \"%s\" in snapshot %s makes no "
                                         "sense (segments %" PRIu64 " to %" PRIu64 ")",
                               m->node, m->snapshot_id, start, end);
    size_t n_stored = dd->n; /* what the backup holds (archive_status/): no segments */
    uint64_t missing = 0;
    char first_missing[CS_WAL_NAME_MAX] = "";
    for (uint64_t segno = start; segno <= end; segno++) {
        r = 0;
        /* Newest timeline first, as recovery looks for it. */
        for (uint32_t tli = last.tli; r == 0 && tli >= 1; tli--) {
            char name[CS_WAL_NAME_MAX];
            cs_wal_segment_name(tli, segno, seg_size, name);
            if (!entry_find_in(dd, n_stored, name))
                r = add_archived(fs, m, dir->e, name, dd);
            else
                r = 1;
        }
        if (r < 0)
            return r;
        if (r == 0 && missing++ == 0)
            cs_wal_segment_name(last.tli, segno, seg_size, first_missing);
    }
    if (missing)
        log_error("%" PRIu64 " WAL segment(s) of node \"%s\" needed by snapshot %s are not "
                  "archived, the first %s: recovery from its pgdata/ will stop there",
                  missing, m->node, m->snapshot_id, first_missing);
    if (last.tli > 1) {
        char history[CS_WAL_NAME_MAX];
        snprintf(history, sizeof(history), "%08" PRIX32 ".history", last.tli);
        if (!entry_find(dd, history) && (r = add_archived(fs, m, dir->e, history, dd)) < 0)
            return r;
    }
    pfs_dir_data_sort(dd);
    return 0;
}

int pfs_pgdata_amend(PfsFs *fs, const PfsNode *dir, PfsDirData *dd)
{
    if (dir->src != PFS_SRC_PGDATA && dir->src != PFS_SRC_PG_WAL &&
        dir->src != PFS_SRC_PG_TBLSPC)
        return 0;
    const PfsNode *pgdata = dir->src == PFS_SRC_PGDATA ? dir : dir->parent;
    Member m;
    int r = member_of(fs, pgdata, &m);
    if (r < 0) {
        log_warning("snapshot %s does not say where node \"%s\" recovers to: its pgdata/ is "
                    "shown as stored",
                    m.snapshot_id, m.node);
        return 0;
    }
    switch (dir->src) {
    case PFS_SRC_PGDATA: r = amend_pgdata(fs, dir, &m, dd); break;
    case PFS_SRC_PG_WAL: r = amend_pg_wal(fs, dir, &m, dd); break;
    default: r = tablespaces_in_place(fs, pgdata->parent, dd, true); break;
    }
    if (r < 0)
        return log_error_errno(r, "could not make the data directory of node \"%s\" in "
                                  "snapshot %s startable: %m",
                               m.node, m.snapshot_id);
    return 0;
}
