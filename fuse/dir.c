#include "fuse/dir.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/macro.h"
#include "fuse/pgdata.h"
#include "fuse/wal-dir.h"

/* Entries of the mount's top directory. */
static const struct {
    const char *name;
    uint64_t ino;
    mode_t type;
} top_entries[] = {
    { "snapshots", PFS_INO_SNAPSHOTS, S_IFDIR },
    { "streams", PFS_INO_STREAMS, S_IFDIR },
    { "wal", PFS_INO_WAL, S_IFDIR },
    { "stats", PFS_INO_STATS, S_IFREG },
};

/* ---- entries made from the catalog ---- */

static char *unconst(const char *s)
{
    return (char *)(uintptr_t)s; /* CsDirEntry has no const; these entries are only read */
}

static bool root_attr(const CsSnapshot *s, CsDirEntry *e)
{
    json_t *o = json_object_get(s->meta, "root_attr");
    json_int_t mode, uid, gid, mtime, nsec;
    if (!o || json_unpack(o, "{s:I, s:I, s:I, s:I, s:I}", "mode", &mode, "uid", &uid, "gid", &gid,
                          "mtime", &mtime, "mtime_nsec", &nsec) < 0)
        return false;
    e->mode = (uint32_t)mode;
    e->uid = (uint32_t)uid;
    e->gid = (uint32_t)gid;
    e->mtime_sec = (int64_t)mtime;
    e->mtime_nsec = (uint32_t)nsec;
    return true;
}

/* The entry a view entry stands for; it borrows from the view (pfs_inode_child copies it). */
static void view_entry(PfsFs *fs, const PfsViewEntry *ve, CsDirEntry *e)
{
    const CsSnapshot *s = ve->snap;
    *e = (CsDirEntry){ .uid = fs->params.uid,
                       .gid = fs->params.gid,
                       .mtime_sec = s->time,
                       .mtime_nsec = s->time_nsec };
    switch (ve->kind) {
    case PFS_VIEW_TREE:
        e->type = CS_ENTRY_DIR;
        e->name = unconst(s->id);
        e->content = s->root;
        if (!root_attr(s, e))
            e->mode = S_IFDIR | 0555;
        break;
    case PFS_VIEW_LINK:
        e->type = CS_ENTRY_SYMLINK;
        e->name = unconst(ve->name);
        e->target = unconst(s->id);
        e->mode = S_IFLNK | 0777;
        e->size = strlen(s->id);
        break;
    case PFS_VIEW_STREAM:
        e->type = CS_ENTRY_FILE;
        e->name = unconst(s->id); /* /streams/<name> is the same file as /streams/<id> */
        e->content = s->root;
        e->mode = S_IFREG | 0400;
        e->size = s->root.size;
        break;
    }
}

/* Cluster snapshots get their nodes' data directories made startable (fuse/pgdata.h). */
static PfsSource view_source(const PfsViewEntry *ve)
{
    return ve->kind == PFS_VIEW_TREE && strcmp(ve->snap->kind, "cluster") == 0 ? PFS_SRC_CLUSTER
                                                                                : PFS_SRC_STORED;
}

static void view_dir(const PfsView *v, const PfsNode *n, const PfsViewEntry **ret, size_t *ret_n)
{
    bool is_trees = n->kind == PFS_NODE_SNAPSHOTS;
    *ret = is_trees ? v->trees : v->streams;
    *ret_n = is_trees ? v->n_trees : v->n_streams;
}

/* ---- snapshot directories ---- */

int pfs_dir_node_data(PfsFs *fs, PfsNode *n, const PfsDirData **ret)
{
    int r = 0;
    pthread_mutex_lock(&n->lock);
    if (!n->dir) {
        PfsDirData *dd = calloc(1, sizeof(*dd));
        if (!dd)
            r = -ENOMEM;
        /* no content: a directory the mount made up (pg_wal/ when the backup has none) */
        else if (n->e->content.count > 0)
            r = pfs_fs_load_dir(fs, &n->e->content, dd);
        if (r == 0)
            r = pfs_pgdata_amend(fs, n, dd);
        if (r < 0) {
            pfs_dir_data_free(dd);
            _cleanup_free_ char *path = pfs_node_path(n);
            log_error_errno(r, "could not read directory \"%s\": %m", path ? path : "?");
            r = pfs_data_errno(r);
        } else
            n->dir = dd;
    }
    *ret = n->dir;
    pthread_mutex_unlock(&n->lock);
    return r;
}

static int dirent_name_cmp(const void *key, const void *elem)
{
    return strcmp(key, ((const CsDirEntry *)elem)->name);
}

/* ---- lookup ---- */

static int lookup_top(PfsFs *fs, const char *name, PfsAttr *ret)
{
    for (size_t i = 0; i < ARRAY_SIZE(top_entries); i++) {
        if (strcmp(name, top_entries[i].name) != 0)
            continue;
        PfsNode *n;
        int r = pfs_inode_get(fs->inodes, top_entries[i].ino, &n);
        if (r < 0)
            return r;
        pfs_inode_add_lookup(fs->inodes, n);
        pfs_node_attr(fs, n, ret);
        pfs_inode_unref(fs->inodes, n);
        return 0;
    }
    ret->entry_timeout = fs->params.timeout; /* the top directory never changes */
    return -ENOENT;
}

static int lookup_view(PfsFs *fs, PfsNode *parent, const char *name, PfsAttr *ret)
{
    const PfsViewEntry *found = NULL;
    PfsView *v = NULL;
    for (int pass = 0; pass < 2 && !found; pass++) {
        /* A miss may be a snapshot stored since the last look: look again, once. */
        pfs_view_unref(v);
        pfs_catalog_get(fs->catalog, pass > 0, &v);
        const PfsViewEntry *entries;
        size_t n;
        view_dir(v, parent, &entries, &n);
        found = pfs_view_find(entries, n, name);
    }
    int r = -ENOENT;
    if (found) {
        CsDirEntry e;
        PfsNode *child;
        view_entry(fs, found, &e);
        if ((r = pfs_inode_child(fs->inodes, parent, &e, view_source(found), false, true,
                                 &child)) == 0) {
            pfs_node_attr(fs, child, ret);
            pfs_inode_unref(fs->inodes, child);
        }
    }
    pfs_view_unref(v);
    return r; /* a miss is not cached: the name may appear any time */
}

static int lookup_tree(PfsFs *fs, PfsNode *parent, const char *name, PfsAttr *ret)
{
    if (parent->e->type != CS_ENTRY_DIR)
        return -ENOTDIR;
    const PfsDirData *dd;
    int r = pfs_dir_node_data(fs, parent, &dd);
    if (r < 0)
        return r;
    const CsDirEntry *e =
            dd->n ? bsearch(name, dd->v, dd->n, sizeof(*dd->v), dirent_name_cmp) : NULL;
    if (!e) {
        ret->entry_timeout = fs->params.timeout; /* snapshots never change */
        return -ENOENT;
    }
    PfsNode *child;
    if ((r = pfs_inode_child(fs->inodes, parent, e, pfs_pgdata_child_source(parent, e), true,
                             true, &child)) < 0)
        return r;
    pfs_node_attr(fs, child, ret);
    pfs_inode_unref(fs->inodes, child);
    return 0;
}

static int lookup_wal(PfsFs *fs, PfsNode *parent, const char *name, PfsAttr *ret)
{
    CsDirEntry e;
    int r = pfs_wal_dir_lookup(fs, parent, name, &e);
    if (r < 0)
        return r; /* a miss is not cached: WAL is archived all the time */
    PfsNode *child;
    r = pfs_inode_child(fs->inodes, parent, &e, pfs_wal_dir_child_source(parent), false, true,
                        &child);
    pfs_dir_entry_clear(&e);
    if (r < 0)
        return r;
    pfs_node_attr(fs, child, ret);
    pfs_inode_unref(fs->inodes, child);
    return 0;
}

int pfs_dir_lookup(PfsFs *fs, uint64_t parent_ino, const char *name, PfsAttr *ret)
{
    *ret = (PfsAttr){ 0 };
    PfsNode *parent;
    int r = pfs_inode_get(fs->inodes, parent_ino, &parent);
    if (r < 0)
        return r;
    switch (parent->kind) {
    case PFS_NODE_ROOT: r = lookup_top(fs, name, ret); break;
    case PFS_NODE_SNAPSHOTS:
    case PFS_NODE_STREAMS: r = lookup_view(fs, parent, name, ret); break;
    case PFS_NODE_WAL: r = lookup_wal(fs, parent, name, ret); break;
    case PFS_NODE_STATS: r = -ENOTDIR; break;
    case PFS_NODE_ENTRY:
        r = pfs_node_is_wal_dir(parent) ? lookup_wal(fs, parent, name, ret)
                                        : lookup_tree(fs, parent, name, ret);
        break;
    }
    pfs_inode_unref(fs->inodes, parent);
    return r;
}

/* ---- listing ---- */

int pfs_dir_open(PfsFs *fs, uint64_t ino, PfsDirHandle **ret)
{
    PfsNode *n;
    int r = pfs_inode_get(fs->inodes, ino, &n);
    if (r < 0)
        return r;
    PfsDirHandle *dh = calloc(1, sizeof(*dh));
    if (!dh)
        r = -ENOMEM;
    else if (n->kind == PFS_NODE_STATS)
        r = -ENOTDIR;
    else if (n->kind == PFS_NODE_SNAPSHOTS || n->kind == PFS_NODE_STREAMS)
        pfs_catalog_get(fs->catalog, true, &dh->view);
    else if (pfs_node_is_wal_dir(n))
        r = pfs_wal_dir_list(fs, n, &dh->list);
    else if (n->kind == PFS_NODE_ENTRY) {
        const PfsDirData *dd;
        if (n->e->type != CS_ENTRY_DIR)
            r = -ENOTDIR;
        else
            r = pfs_dir_node_data(fs, n, &dd); /* report damage at opendir */
    }
    if (r < 0) {
        free(dh);
        pfs_inode_unref(fs->inodes, n);
        return r;
    }
    dh->node = n;
    *ret = dh;
    return 0;
}

void pfs_dir_release(PfsFs *fs, PfsDirHandle *dh)
{
    if (!dh)
        return;
    pfs_view_unref(dh->view);
    pfs_dir_data_free(dh->list);
    pfs_inode_unref(fs->inodes, dh->node);
    free(dh);
}

static uint64_t parent_ino(const PfsNode *n)
{
    return n->kind == PFS_NODE_ENTRY && n->parent ? n->parent->ino : PFS_INO_ROOT;
}

int pfs_dir_read(PfsFs *fs, PfsDirHandle *dh, off_t off, bool plus, PfsDirFill fill, void *ctx)
{
    PfsNode *n = dh->node;
    const PfsDirData *dd = NULL;
    const PfsViewEntry *ventries = NULL;
    size_t count = 0;
    int r = 0;
    switch (n->kind) {
    case PFS_NODE_ROOT: count = ARRAY_SIZE(top_entries); break;
    case PFS_NODE_STATS: return -ENOTDIR;
    case PFS_NODE_SNAPSHOTS:
    case PFS_NODE_STREAMS: view_dir(dh->view, n, &ventries, &count); break;
    case PFS_NODE_WAL:
    case PFS_NODE_ENTRY:
        if (dh->list)
            dd = dh->list;
        else if ((r = pfs_dir_node_data(fs, n, &dd)) < 0)
            return r;
        count = dd->n;
        break;
    }
    if (off < 0)
        return -EINVAL;
    for (uint64_t pos = (uint64_t)off; pos < count + 2; pos++) {
        PfsDirent d = { .next = (off_t)(pos + 1), .type = S_IFDIR };
        PfsAttr attr;
        PfsNode *child = NULL;
        if (pos < 2) {
            d.name = pos == 0 ? "." : "..";
            d.ino = pos == 0 ? n->ino : parent_ino(n);
        } else {
            size_t i = (size_t)(pos - 2);
            CsDirEntry tmp;
            const CsDirEntry *e = NULL;
            if (n->kind == PFS_NODE_ROOT) {
                d.name = top_entries[i].name;
                d.ino = top_entries[i].ino;
                d.type = top_entries[i].type;
                if (plus && (r = pfs_inode_get(fs->inodes, d.ino, &child)) == 0)
                    pfs_inode_add_lookup(fs->inodes, child);
            } else if (dh->list) { /* the handle's listing: children copy their entry */
                e = &dd->v[i];
                d.name = e->name;
                if (plus)
                    r = pfs_inode_child(fs->inodes, n, e, pfs_wal_dir_child_source(n), false,
                                        true, &child);
            } else if (n->kind == PFS_NODE_ENTRY) {
                e = &dd->v[i];
                d.name = e->name;
                if (plus)
                    r = pfs_inode_child(fs->inodes, n, e, pfs_pgdata_child_source(n, e), true,
                                        true, &child);
            } else {
                view_entry(fs, &ventries[i], &tmp);
                e = &tmp;
                d.name = ventries[i].name;
                if (plus)
                    r = pfs_inode_child(fs->inodes, n, e, view_source(&ventries[i]), false,
                                        true, &child);
            }
            if (r < 0)
                return r;
            if (child) {
                pfs_node_attr(fs, child, &attr);
                d.attr = &attr;
                d.ino = attr.ino;
                d.type = attr.st.st_mode & S_IFMT;
            } else if (e) {
                d.ino = pfs_inode_number(n, e, pfs_pgdata_child_source(n, e));
                d.type = pfs_entry_type(e);
            }
        }
        int full = fill(ctx, &d);
        if (child) {
            if (full)
                pfs_inode_forget(fs->inodes, child->ino, 1);
            pfs_inode_unref(fs->inodes, child);
        }
        if (full)
            break;
    }
    return 0;
}
