#include "fuse/wal-dir.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "chunkstore/wal-object.h"
#include "common/fs-util.h"
#include "common/log.h"
#include "common/macro.h"

/* ---- entries ---- */

static CsDirEntry dir_entry(const PfsFs *fs, char *name)
{
    return (CsDirEntry){ .type = CS_ENTRY_DIR,
                         .mode = S_IFDIR | 0555,
                         .uid = fs->params.uid,
                         .gid = fs->params.gid,
                         .mtime_sec = fs->created.tv_sec,
                         .mtime_nsec = (uint32_t)fs->created.tv_nsec,
                         .name = name };
}

/* Takes the object's content reference. */
static int file_entry(const PfsFs *fs, CsWalObject *o, CsDirEntry *ret)
{
    char *name = strdup(o->name);
    if (!name)
        return -ENOMEM;
    *ret = (CsDirEntry){ .type = CS_ENTRY_FILE,
                         .mode = S_IFREG | 0400,
                         .uid = fs->params.uid,
                         .gid = fs->params.gid,
                         .mtime_sec = o->archived_at,
                         .name = name,
                         .content = o->content };
    o->content = (CsContentRef){ 0 };
    return 0;
}

/* The node a WAL directory belongs to, and the directory below it ("TTTTTTTT", "history"). */
static void wal_path(const PfsNode *dir, const char **node, const char **sub)
{
    *node = dir->src == PFS_SRC_WAL_NODE ? dir->e->name : dir->parent->e->name;
    *sub = dir->src == PFS_SRC_WAL_DIR ? dir->e->name : NULL;
}

/* A timeline directory name: 8 uppercase hex digits, not 0. */
static bool is_timeline_dir(const char *s)
{
    CsWalName n;
    char history[32];
    snprintf(history, sizeof(history), "%.8s.history", s);
    return strlen(s) == 8 && cs_wal_name_parse(history, &n) == 0;
}

/* ---- listing ---- */

/* Add a name once: a handful of nodes or timelines, each seen for many objects. */
static int add_distinct(StrList *l, const char *name)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i], name) == 0)
            return 0;
    return str_list_add(l, name, strlen(name));
}

/* "wal/<node>/..." -> <node>, for every node with a valid name. */
static int collect_node(const char *objname, uint64_t size, void *userdata)
{
    (void)size;
    const char *node = objname + strlen("wal/");
    const char *slash = strchr(node, '/');
    if (!slash)
        return 0;
    _cleanup_free_ char *copy = strndup(node, (size_t)(slash - node));
    if (!copy)
        return -ENOMEM;
    return cs_wal_node_is_valid(copy) ? add_distinct(userdata, copy) : 0;
}

/* The directory below "wal/<node>/" an object is in. */
static int collect_dir(const char *objname, const CsWalName *name, void *userdata)
{
    (void)objname;
    char buf[CS_WAL_DIR_MAX];
    return add_distinct(userdata, cs_wal_object_dir(name->kind, name->name, buf));
}

static int collect_file(const char *objname, const CsWalName *name, void *userdata)
{
    (void)name;
    return str_list_add(userdata, objname, strlen(objname));
}

static int list_files(PfsFs *fs, const StrList *objnames, PfsDirData *dd)
{
    if (!(dd->v = calloc(objnames->n ? objnames->n : 1, sizeof(*dd->v))))
        return -ENOMEM;
    for (size_t i = 0; i < objnames->n; i++) {
        CsWalObject o;
        int r = cs_wal_object_load(fs->repo, objnames->v[i], &o);
        if (r == -ENOMEM)
            return r;
        if (r == -ENOENT) /* pruned while listing */
            continue;
        if (r < 0) {
            log_error_errno(r, "WAL object \"%s\" cannot be read, it is not shown: %m",
                            objnames->v[i]);
            continue;
        }
        r = file_entry(fs, &o, &dd->v[dd->n]);
        cs_wal_object_clear(&o);
        if (r < 0)
            return r;
        dd->n++;
    }
    return 0;
}

int pfs_wal_dir_list(PfsFs *fs, const PfsNode *dir, PfsDirData **ret)
{
    PfsDirData *dd = calloc(1, sizeof(*dd));
    StrList names = { 0 }, objnames = { 0 };
    const char *node = NULL, *sub = NULL;
    int r = dd ? 0 : -ENOMEM;
    if (r == 0 && dir->kind == PFS_NODE_WAL)
        r = cs_backend_list(fs->repo->backend, "wal/", collect_node, &names);
    else if (r == 0) {
        wal_path(dir, &node, &sub);
        if (dir->src == PFS_SRC_WAL_NODE)
            r = cs_wal_list(fs->repo, node, NULL, collect_dir, &names);
        else if ((r = cs_wal_list(fs->repo, node, sub, collect_file, &objnames)) == 0)
            r = list_files(fs, &objnames, dd);
    }
    if (r == 0 && names.n && !(dd->v = calloc(names.n, sizeof(*dd->v))))
        r = -ENOMEM;
    for (size_t i = 0; r == 0 && i < names.n; i++) {
        dd->v[dd->n++] = dir_entry(fs, names.v[i]);
        names.v[i] = NULL;
    }
    str_list_clear(&names);
    str_list_clear(&objnames);
    if (r < 0) {
        pfs_dir_data_free(dd);
        log_error_errno(r, "could not list the archived WAL%s%s%s%s: %m", node ? " of node " : "",
                        node ? node : "", sub ? " in " : "", sub ? sub : "");
        return pfs_data_errno(r);
    }
    pfs_dir_data_sort(dd);
    *ret = dd;
    return 0;
}

/* ---- lookup ---- */

static int stop_at_first(const char *objname, const CsWalName *name, void *userdata)
{
    (void)objname;
    (void)name;
    *(bool *)userdata = true;
    return 1;
}

int pfs_wal_dir_lookup(PfsFs *fs, const PfsNode *dir, const char *name, CsDirEntry *ret)
{
    const char *node = name, *sub = NULL;
    if (dir->kind == PFS_NODE_WAL) {
        if (!cs_wal_node_is_valid(name))
            return -ENOENT;
    } else {
        wal_path(dir, &node, &sub);
        if (dir->src == PFS_SRC_WAL_NODE) {
            if (strcmp(name, "history") != 0 && !is_timeline_dir(name))
                return -ENOENT;
            sub = name;
        }
    }
    if (dir->kind == PFS_NODE_WAL || dir->src == PFS_SRC_WAL_NODE) {
        bool found = false; /* a directory is there while it holds an object */
        int r = cs_wal_list(fs->repo, node, sub, stop_at_first, &found);
        if (r < 0)
            return pfs_data_errno(r);
        if (!found)
            return -ENOENT;
        char *copy = strdup(name);
        if (!copy)
            return -ENOMEM;
        *ret = dir_entry(fs, copy);
        return 0;
    }
    CsWalName parsed;
    char objname[CS_WAL_OBJECT_NAME_MAX], here[CS_WAL_OBJECT_NAME_MAX];
    snprintf(here, sizeof(here), "wal/%s/%s/%s", node, sub, name);
    /* a file of another timeline is not in this directory */
    if (cs_wal_name_parse(name, &parsed) < 0 ||
        cs_wal_object_name(node, &parsed, objname, sizeof(objname)) < 0 ||
        strcmp(objname, here) != 0)
        return -ENOENT;
    CsWalObject o;
    int r = cs_wal_object_load(fs->repo, objname, &o);
    if (r == -ENOENT)
        return r;
    if (r < 0) {
        log_error_errno(r, "WAL object \"%s\" cannot be read: %m", objname);
        return pfs_data_errno(r);
    }
    r = file_entry(fs, &o, ret);
    cs_wal_object_clear(&o);
    return r;
}

PfsSource pfs_wal_dir_child_source(const PfsNode *dir)
{
    if (dir->kind == PFS_NODE_WAL)
        return PFS_SRC_WAL_NODE;
    return dir->src == PFS_SRC_WAL_NODE ? PFS_SRC_WAL_DIR : PFS_SRC_STORED;
}
