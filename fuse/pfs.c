#include "fuse/pfs.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/macro.h"
#include "fuse/dir.h"
#include "fuse/file.h"

#define READER_MAX_AGE_MS  10000u /* keep index snapshots fresh (see reader-pool.h) */
#define READER_MAX_IDLE_MS 5000u
#define HOUSEKEEPING_MS    2000u
#define PREFETCH_QUEUE     4096u

int pfs_fs_load_dir(PfsFs *fs, const CsContentRef *ref, PfsDirData *ret)
{
    PfsReader *rd;
    int r = pfs_reader_pool_get(fs->readers, &rd);
    if (r < 0)
        return r;
    r = cs_dir_load_own(rd->rd, ref, &ret->v, &ret->n, &ret->own);
    pfs_reader_pool_put(fs->readers, rd);
    return r;
}

int pfs_data_errno(int r)
{
    /* Damage (EBADMSG), a chunk missing from the index (ENOENT), EPROTO, EFBIG, I/O errors:
     * none of them means anything else to a program reading a file than "I/O error". */
    return r == 0 || r == -ENOMEM ? r : -EIO;
}

static unsigned default_prefetch_threads(void)
{
    /* One per CPU: decoding is CPU work, and a worker seldom waits for the index now that a
     * record's neighbours are found from its member list (measured with 2 CPUs, a cold 800 MB
     * sequential read: 2 workers beat 4 by a fifth, with a sixth less CPU). */
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return (unsigned)MIN(MAX(n, 2L), 16L);
}

int pfs_fs_new(CsRepo *repo, const PfsParams *params, PfsFs **ret)
{
    PfsFs *fs = calloc(1, sizeof(*fs));
    if (!fs)
        return -ENOMEM;
    fs->repo = repo;
    fs->params = *params;
    if (!fs->params.prefetch_threads)
        fs->params.prefetch_threads = default_prefetch_threads();
    clock_gettime(CLOCK_REALTIME, &fs->created);
    pthread_mutex_init(&fs->hk_lock, NULL);
    pthread_cond_init(&fs->hk_wake, NULL);
    pthread_mutex_init(&fs->bad_lock, NULL);
    atomic_init(&fs->n_reads, 0);
    atomic_init(&fs->read_bytes, 0);
    atomic_init(&fs->read_errors, 0);
    int r = pfs_inode_table_new(pfs_file_node_free, &fs->inodes);
    if (r == 0)
        r = pfs_chunk_cache_new(fs->params.cache_bytes, &fs->cache);
    if (r == 0)
        r = pfs_reader_pool_new(repo, &(CsBaseSource){ .get = pfs_file_base_get,
                                                       .put = pfs_file_base_put,
                                                       .userdata = fs },
                                READER_MAX_AGE_MS, READER_MAX_IDLE_MS, &fs->readers);
    if (r == 0 && (r = pfs_catalog_new(repo, fs->params.catalog_max_age_ms, &fs->catalog)) < 0)
        log_error_errno(r, "could not read the snapshots of the repository: %m");
    if (r < 0) {
        pfs_fs_free(fs);
        return r;
    }
    *ret = fs;
    return 0;
}

static void *housekeeper(void *arg)
{
    PfsFs *fs = arg;
    pthread_mutex_lock(&fs->hk_lock);
    while (!fs->hk_stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += HOUSEKEEPING_MS / 1000;
        pthread_cond_timedwait(&fs->hk_wake, &fs->hk_lock, &until);
        if (fs->hk_stop)
            break;
        pthread_mutex_unlock(&fs->hk_lock);
        pfs_reader_pool_trim(fs->readers);
        pthread_mutex_lock(&fs->hk_lock);
    }
    pthread_mutex_unlock(&fs->hk_lock);
    return NULL;
}

int pfs_fs_start(PfsFs *fs)
{
    int r = 0;
    if (!fs->prefetch && fs->params.readahead_bytes > 0)
        r = pfs_prefetch_new(fs->params.prefetch_threads, PREFETCH_QUEUE, pfs_file_prefetch_run,
                             pfs_file_prefetch_drop, fs, &fs->prefetch);
    if (r < 0)
        return r;
    if (!fs->has_housekeeper) {
        fs->hk_stop = false;
        int rc = pthread_create(&fs->housekeeper, NULL, housekeeper, fs);
        if (rc != 0)
            return log_error_errno(-rc, "could not start a thread: %m");
        fs->has_housekeeper = true;
    }
    return 0;
}

void pfs_fs_stop(PfsFs *fs)
{
    fs->prefetch = pfs_prefetch_free(fs->prefetch);
    if (fs->has_housekeeper) {
        pthread_mutex_lock(&fs->hk_lock);
        fs->hk_stop = true;
        pthread_cond_broadcast(&fs->hk_wake);
        pthread_mutex_unlock(&fs->hk_lock);
        pthread_join(fs->housekeeper, NULL);
        fs->has_housekeeper = false;
    }
}

PfsFs *pfs_fs_free(PfsFs *fs)
{
    if (!fs)
        return NULL;
    pfs_fs_stop(fs);
    /* Nodes first: they may hold file maps; then the readers, whose index snapshots must end
     * before the repository closes. */
    fs->inodes = pfs_inode_table_free(fs->inodes);
    fs->catalog = pfs_catalog_free(fs->catalog);
    fs->readers = pfs_reader_pool_free(fs->readers);
    fs->cache = pfs_chunk_cache_free(fs->cache);
    pthread_cond_destroy(&fs->hk_wake);
    pthread_mutex_destroy(&fs->hk_lock);
    pthread_mutex_destroy(&fs->bad_lock);
    free(fs);
    return NULL;
}

int pfs_fs_stats_json(PfsFs *fs, Buf *out)
{
    PfsChunkCacheStats s;
    pfs_chunk_cache_stats(fs->cache, &s);
    json_t *o = json_pack(
        "{s:I, s:I, s:I, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I}, s:I, s:b}", "reads",
        (json_int_t)atomic_load(&fs->n_reads), "read_bytes", (json_int_t)atomic_load(&fs->read_bytes),
        "read_errors", (json_int_t)atomic_load(&fs->read_errors), "chunk_cache", "hits",
        (json_int_t)s.hits, "misses", (json_int_t)s.misses, "waits", (json_int_t)s.waits,
        "evictions", (json_int_t)s.evictions, "entries", (json_int_t)s.entries, "bytes",
        (json_int_t)s.bytes, "limit", (json_int_t)fs->params.cache_bytes, "inodes",
        (json_int_t)pfs_inode_count(fs->inodes), "direct_io", (int)fs->params.direct_io);
    char *text = o ? json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    int r = text ? buf_printf(out, "%s\n", text) : -ENOMEM;
    free(text);
    return r;
}

void pfs_fs_log_stats(PfsFs *fs)
{
    PfsChunkCacheStats s;
    pfs_chunk_cache_stats(fs->cache, &s);
    log_debug("%llu reads, %llu bytes, %llu failed; chunk cache: %llu hits, %llu misses, "
              "%llu waits, %llu evictions, %llu entries, %llu bytes; %zu inodes",
              (unsigned long long)atomic_load(&fs->n_reads),
              (unsigned long long)atomic_load(&fs->read_bytes),
              (unsigned long long)atomic_load(&fs->read_errors), (unsigned long long)s.hits,
              (unsigned long long)s.misses, (unsigned long long)s.waits,
              (unsigned long long)s.evictions, (unsigned long long)s.entries,
              (unsigned long long)s.bytes, pfs_inode_count(fs->inodes));
}

static void set_time(struct stat *st, int64_t sec, uint32_t nsec)
{
    st->st_mtim.tv_sec = (time_t)sec;
    st->st_mtim.tv_nsec = (long)nsec;
    st->st_atim = st->st_mtim;
    st->st_ctim = st->st_mtim;
}

static void virtual_dir_attr(PfsFs *fs, const CsSnapshot *newest, nlink_t nlink, struct stat *st)
{
    st->st_mode = S_IFDIR | 0555;
    st->st_nlink = nlink;
    st->st_uid = fs->params.uid;
    st->st_gid = fs->params.gid;
    if (newest)
        set_time(st, newest->time, newest->time_nsec);
    else
        set_time(st, fs->created.tv_sec, (uint32_t)fs->created.tv_nsec);
}

mode_t pfs_entry_type(const CsDirEntry *e)
{
    switch (e->type) {
    case CS_ENTRY_FILE: return S_IFREG;
    case CS_ENTRY_DIR: return S_IFDIR;
    case CS_ENTRY_SYMLINK: return S_IFLNK;
    default: {
        mode_t t = e->mode & S_IFMT;
        return t == S_IFCHR || t == S_IFBLK || t == S_IFIFO ? t : S_IFIFO;
    }
    }
}

/* 512-byte blocks of the data between the holes, each run in whole 4 KiB blocks. */
static uint64_t sparse_blocks(const CsDirEntry *e)
{
    uint64_t blocks = 0, at = 0;
    for (uint32_t i = 0; i <= e->n_holes; i++) {
        uint64_t end = i < e->n_holes ? e->holes[i].offset : e->content.size;
        if (end > at)
            blocks += (end - at + 4095) / 4096 * 8;
        if (i < e->n_holes)
            at = e->holes[i].offset + e->holes[i].length;
    }
    return blocks;
}

void pfs_node_attr(PfsFs *fs, const PfsNode *n, PfsAttr *ret)
{
    PfsAttr a = { .ino = n->ino };
    struct stat *st = &a.st;
    st->st_ino = (ino_t)n->ino;
    st->st_blksize = fs->params.direct_io ? PFS_DIRECT_IO_BLKSIZE : PFS_BLKSIZE;
    a.attr_timeout = fs->params.volatile_timeout;
    a.entry_timeout = fs->params.timeout;
    switch (n->kind) {
    case PFS_NODE_ROOT: virtual_dir_attr(fs, NULL, 5, st); break;
    case PFS_NODE_STATS: { /* size 0 and direct_io (fs.c): its bytes are made at each open */
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        st->st_mode = S_IFREG | 0444;
        st->st_nlink = 1;
        st->st_uid = fs->params.uid;
        st->st_gid = fs->params.gid;
        set_time(st, now.tv_sec, (uint32_t)now.tv_nsec);
        a.attr_timeout = 0;
        break;
    }
    case PFS_NODE_WAL: /* changes as WAL is archived: looked at again after the short timeout */
        virtual_dir_attr(fs, NULL, 2, st);
        a.entry_timeout = fs->params.volatile_timeout;
        break;
    case PFS_NODE_SNAPSHOTS:
    case PFS_NODE_STREAMS: {
        PfsView *v;
        pfs_catalog_get(fs->catalog, false, &v);
        bool is_trees = n->kind == PFS_NODE_SNAPSHOTS;
        virtual_dir_attr(fs, is_trees ? v->newest_tree : v->newest_stream, 2, st);
        st->st_size = (off_t)(is_trees ? v->n_trees : v->n_streams);
        pfs_view_unref(v);
        break;
    }
    case PFS_NODE_ENTRY: {
        const CsDirEntry *e = n->e;
        st->st_mode = pfs_entry_type(e) | (e->mode & 07777);
        /* directories too, as btrfs: "unknown", so find does not count */
        st->st_nlink = n->link_scope ? e->nlink : 1;
        st->st_uid = e->uid;
        st->st_gid = e->gid;
        set_time(st, e->mtime_sec, e->mtime_nsec);
        if (e->type == CS_ENTRY_FILE)
            st->st_size = (off_t)e->content.size;
        else if (e->type == CS_ENTRY_DIR)
            st->st_size = (off_t)e->content.size; /* the stored directory object's size */
        else if (e->type == CS_ENTRY_SYMLINK)
            st->st_size = (off_t)(e->target ? strlen(e->target) : 0);
        else
            st->st_rdev = (dev_t)e->rdev;
        st->st_blocks = (blkcnt_t)((st->st_size + 511) / 512);
        if (e->type == CS_ENTRY_FILE && e->n_holes)
            st->st_blocks = (blkcnt_t)sparse_blocks(e);
        a.attr_timeout = fs->params.timeout;
        if (n->is_volatile)
            a.entry_timeout = fs->params.volatile_timeout;
        break;
    }
    }
    *ret = a;
}

int pfs_fs_getattr(PfsFs *fs, uint64_t ino, PfsAttr *ret)
{
    PfsNode *n;
    int r = pfs_inode_get(fs->inodes, ino, &n);
    if (r < 0)
        return r;
    pfs_node_attr(fs, n, ret);
    pfs_inode_unref(fs->inodes, n);
    return 0;
}

int pfs_fs_readlink(PfsFs *fs, uint64_t ino, char **ret)
{
    PfsNode *n;
    int r = pfs_inode_get(fs->inodes, ino, &n);
    if (r < 0)
        return r;
    if (n->kind != PFS_NODE_ENTRY || n->e->type != CS_ENTRY_SYMLINK || !n->e->target)
        r = -EINVAL;
    else if (!(*ret = strdup(n->e->target)))
        r = -ENOMEM;
    pfs_inode_unref(fs->inodes, n);
    return r;
}

int pfs_fs_statfs(PfsFs *fs, struct statvfs *ret)
{
    PfsView *v;
    pfs_catalog_get(fs->catalog, false, &v);
    *ret = (struct statvfs){
        .f_bsize = PFS_BLKSIZE,
        .f_frsize = 4096,
        .f_blocks = (fsblkcnt_t)(pfs_catalog_pack_bytes(fs->catalog) / 4096),
        .f_files = (fsfilcnt_t)v->n_snaps,
        .f_namemax = 255,
    };
    pfs_view_unref(v);
    return 0;
}

/* The attributes of a node (valid while it is referenced), or NULL: none. */
static int node_xattrs(PfsFs *fs, PfsNode *n, const CsXattrList **ret)
{
    *ret = NULL;
    if (n->kind != PFS_NODE_ENTRY)
        return 0;
    if (n->e->xattrs.n || n->e->type != CS_ENTRY_DIR || !n->parent ||
        n->parent->kind != PFS_NODE_SNAPSHOTS) {
        *ret = &n->e->xattrs;
        return 0;
    }
    /* A snapshot's root: the stored directory's own attributes are in its object. */
    const PfsDirData *dd;
    int r = pfs_dir_node_data(fs, n, &dd);
    if (r == 0)
        *ret = &dd->own;
    return r;
}

long pfs_fs_getxattr(PfsFs *fs, uint64_t ino, const char *name, void *buf, size_t size)
{
    PfsNode *n;
    int r = pfs_inode_get(fs->inodes, ino, &n);
    if (r < 0)
        return r;
    const CsXattrList *l;
    long got = node_xattrs(fs, n, &l);
    const CsXattr *x = got == 0 && l ? cs_xattr_find(l, name) : NULL;
    if (got == 0 && !x)
        got = -ENODATA;
    else if (got == 0 && size && size < x->size)
        got = -ERANGE;
    else if (got == 0) {
        if (size && x->size)
            memcpy(buf, x->value, x->size);
        got = (long)x->size;
    }
    pfs_inode_unref(fs->inodes, n);
    return got;
}

long pfs_fs_listxattr(PfsFs *fs, uint64_t ino, char *buf, size_t size)
{
    PfsNode *n;
    int r = pfs_inode_get(fs->inodes, ino, &n);
    if (r < 0)
        return r;
    const CsXattrList *l;
    long got = node_xattrs(fs, n, &l);
    size_t need = 0;
    for (uint32_t i = 0; got == 0 && l && i < l->n; i++)
        need += strlen(l->v[i].name) + 1;
    if (got == 0 && size && size < need)
        got = -ERANGE;
    else if (got == 0) {
        for (uint32_t i = 0, at = 0; size && l && i < l->n; i++) {
            size_t len = strlen(l->v[i].name) + 1;
            memcpy(buf + at, l->v[i].name, len);
            at += (uint32_t)len;
        }
        got = (long)need;
    }
    pfs_inode_unref(fs->inodes, n);
    return got;
}

void pfs_fs_forget(PfsFs *fs, uint64_t ino, uint64_t nlookup)
{
    pfs_inode_forget(fs->inodes, ino, nlookup);
}
