#include "chunkstore/tree.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "chunkstore/files-cache.h"
#include "common/endian.h"
#include "common/fs-util.h"
#include "common/log.h"
#include "common/macro.h"
#include "common/out-buf.h"

#define DIR_OBJECT_MAX (1u << 30)

static void entry_clear(CsDirEntry *e)
{
    free(e->name);
    free(e->target);
    cs_content_ref_free(&e->content);
    *e = (CsDirEntry){ 0 };
}

void cs_dir_entry_clear(CsDirEntry *e)
{
    entry_clear(e);
}

void cs_dir_entries_free(CsDirEntry *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        entry_clear(&v[i]);
    free(v);
}

int cs_dir_encode(const CsDirEntry *v, size_t n, Buf *out)
{
    int r;
    if ((r = buf_append_le32(out, CS_DIR_MAGIC)) < 0 || (r = buf_append_le32(out, (uint32_t)n)) < 0)
        return r;
    for (size_t i = 0; i < n; i++) {
        const CsDirEntry *e = &v[i];
        size_t name_len = strlen(e->name);
        if (name_len > UINT16_MAX)
            return -ENAMETOOLONG;
        uint8_t *p = buf_extend(out, 44);
        if (!p)
            return -ENOMEM;
        p[0] = e->type;
        p[1] = e->flags;
        put_le16(p + 2, (uint16_t)name_len);
        put_le32(p + 4, e->mode);
        put_le32(p + 8, e->uid);
        put_le32(p + 12, e->gid);
        put_le64(p + 16, (uint64_t)e->mtime_sec);
        put_le32(p + 24, e->mtime_nsec);
        put_le64(p + 28, e->size);
        put_le64(p + 36, e->rdev);
        if ((r = buf_append(out, e->name, name_len)) < 0)
            return r;
        if (e->type == CS_ENTRY_FILE || e->type == CS_ENTRY_DIR) {
            if ((r = cs_content_ref_encode(&e->content, out)) < 0)
                return r;
        } else if (e->type == CS_ENTRY_SYMLINK) {
            size_t tl = strlen(e->target);
            if (tl > UINT16_MAX)
                return -ENAMETOOLONG;
            if ((r = buf_append_le16(out, (uint16_t)tl)) < 0 ||
                (r = buf_append(out, e->target, tl)) < 0)
                return r;
        }
    }
    return 0;
}

static int copy_string(Cursor *c, size_t len, char **ret)
{
    const uint8_t *p;
    int r = cursor_bytes(c, len, &p);
    if (r < 0)
        return r;
    if (memchr(p, 0, len))
        return -EBADMSG;
    char *s = strndup((const char *)p, len);
    if (!s)
        return -ENOMEM;
    *ret = s;
    return 0;
}

int cs_dir_decode(const void *p, size_t n, CsDirEntry **ret, size_t *ret_n)
{
    Cursor c = cursor_make(p, n);
    uint32_t magic, count;
    int r;
    if ((r = cursor_le32(&c, &magic)) < 0 || (r = cursor_le32(&c, &count)) < 0)
        return -EBADMSG;
    if (magic != CS_DIR_MAGIC || count > n / 44)
        return -EBADMSG;
    CsDirEntry *v = calloc(count ? count : 1, sizeof(*v));
    if (!v)
        return -ENOMEM;
    for (uint32_t i = 0; i < count; i++) {
        CsDirEntry *e = &v[i];
        const uint8_t *h;
        if ((r = cursor_bytes(&c, 44, &h)) < 0)
            goto fail;
        e->type = h[0];
        e->flags = h[1];
        uint16_t name_len = get_le16(h + 2);
        e->mode = get_le32(h + 4);
        e->uid = get_le32(h + 8);
        e->gid = get_le32(h + 12);
        e->mtime_sec = (int64_t)get_le64(h + 16);
        e->mtime_nsec = get_le32(h + 24);
        e->size = get_le64(h + 28);
        e->rdev = get_le64(h + 36);
        if (name_len == 0 || (r = copy_string(&c, name_len, &e->name)) < 0 ||
            strchr(e->name, '/') || strcmp(e->name, ".") == 0 || strcmp(e->name, "..") == 0) {
            r = r < 0 ? r : -EBADMSG; /* a stored name must never escape its directory */
            goto fail;
        }
        if (e->type == CS_ENTRY_FILE || e->type == CS_ENTRY_DIR) {
            if ((r = cs_content_ref_decode(&c, &e->content)) < 0)
                goto fail;
        } else if (e->type == CS_ENTRY_SYMLINK) {
            uint16_t tl;
            if ((r = cursor_le16(&c, &tl)) < 0 || (r = copy_string(&c, tl, &e->target)) < 0)
                goto fail;
        } else if (e->type != CS_ENTRY_SPECIAL) {
            r = -EBADMSG;
            goto fail;
        }
    }
    if (c.left) {
        r = -EBADMSG;
        goto fail;
    }
    *ret = v;
    *ret_n = count;
    return 0;
fail:
    cs_dir_entries_free(v, count);
    return r == -ENOMEM ? r : -EBADMSG;
}

int cs_dir_load(CsReader *rd, const CsContentRef *ref, CsDirEntry **ret, size_t *ret_n)
{
    _cleanup_(buf_free) Buf data = BUF_INIT;
    int r = cs_reader_read_all(rd, ref, DIR_OBJECT_MAX, &data);
    if (r < 0)
        return r;
    r = cs_dir_decode(data.data, data.size, ret, ret_n);
    if (r == -EBADMSG)
        log_error("directory object is damaged");
    return r;
}

/* The entries of a directory's previous version (sorted by name; none when it had none). */
typedef struct PrevDir {
    CsDirEntry *v;
    size_t n;
} PrevDir;

typedef struct StoreCtx {
    CsWriter *w;
    const CsTreeParams *params;
    CsReader *prev_reader; /* reads the previous version; NULL: there is none */
    bool can_delta;        /* the previous version's pages may be delta bases */
    CsFilesCache *files;   /* NULL: not used, or given up after an error */
    CsTreeStats *stats;
    char *path; /* absolute path buffer, grown as needed */
    size_t root_len;
} StoreCtx;

static int entry_cmp(const void *a, const void *b)
{
    return strcmp(((const CsDirEntry *)a)->name, ((const CsDirEntry *)b)->name);
}

static int store_dir(StoreCtx *ctx, int dir_fd, const PrevDir *prev, CsContentRef *ret);

static const CsDirEntry *prev_find(const PrevDir *prev, const char *name, uint8_t type)
{
    CsDirEntry key = { .name = (char *)(uintptr_t)name };
    const CsDirEntry *e = prev->n ? bsearch(&key, prev->v, prev->n, sizeof(*prev->v), entry_cmp)
                                  : NULL;
    return e && e->type == type ? e : NULL;
}

/* The previous version of a directory. Losing it (damaged) only loses the deltas below it. */
static void prev_load(StoreCtx *ctx, const CsDirEntry *e, PrevDir *ret)
{
    *ret = (PrevDir){ 0 };
    if (e && cs_dir_load(ctx->prev_reader, &e->content, &ret->v, &ret->n) < 0) {
        log_warning("the previous version of \"%s\" cannot be read: its files are stored whole",
                    ctx->path);
        *ret = (PrevDir){ 0 };
    }
    /* Between uses the reader holds no index snapshot (which would keep the packs published
     * meanwhile from reusing index pages). */
    if (ctx->prev_reader)
        cs_reader_pause(ctx->prev_reader);
}

/* The chunk list of a page file's previous version, for the writer's deltas. */
static CsContentRef *prev_pages(StoreCtx *ctx, const CsDirEntry *e, CsContentRef *flat)
{
    if (!e || !(e->flags & CS_ENTRY_FLAG_PAGES))
        return NULL;
    int r = cs_reader_flatten(ctx->prev_reader, &e->content, flat);
    cs_reader_pause(ctx->prev_reader);
    return r < 0 ? NULL : flat;
}

typedef struct PageObserver {
    const CsTreeParams *params;
    const char *relpath;
} PageObserver;

static void page_observe(const void *p, size_t n, uint64_t offset, void *userdata)
{
    PageObserver *po = userdata;
    po->params->observe_page_file(po->relpath, p, n, offset, po->params->userdata);
}

/* Removed between readdir and reading it: normal in a live data directory, so a warning. */
static int entry_vanished(StoreCtx *ctx, const char *name, bool *skip)
{
    log_warning("\"%s/%s\" vanished while being stored, skipped", ctx->path, name);
    *skip = true;
    return 0;
}

/* "a/b/name" for an entry of the directory being stored (malloc'd; NULL: out of memory). */
static char *entry_relpath(const StoreCtx *ctx, const char *name)
{
    const char *rel = ctx->path + ctx->root_len + (ctx->path[ctx->root_len] == '/');
    char *relpath;
    return asprintf(&relpath, "%s%s%s", rel, *rel ? "/" : "", name) < 0 ? NULL : relpath;
}

/* The caller's hook, when it has one, may store the file its own way. */
static int store_file_by_hook(StoreCtx *ctx, const char *relpath, int dir_fd, int fd,
                              const struct stat *st, CsContentRef *ret, bool *handled)
{
    const CsTreeParams *p = ctx->params;
    *handled = false;
    if (!p || !p->store_file)
        return 0;
    int r = p->store_file(ctx->w, relpath, dir_fd, fd, st, ret, p->userdata);
    if (r < 0)
        return r;
    *handled = r > 0;
    return !*handled && lseek(fd, 0, SEEK_SET) < 0 ? -errno : 0;
}

/* The files cache is only an optimisation: when the index cannot take its records, the store
 * goes on without it. */
static void files_cache_failed(StoreCtx *ctx, int r)
{
    log_warning("the files cache could not be written (%s): every file will be read next time",
                strerror(-r));
    ctx->files = cs_files_cache_free(ctx->files);
}

/* The previous version's content of a file the files cache says is unchanged: 1, 0 when it
 * has to be read, or -errno. */
static int take_unchanged(StoreCtx *ctx, const CsDirEntry *was, const char *relpath,
                          const struct stat *st, bool is_pages, CsDirEntry *e)
{
    if (!ctx->files || !was || !(was->flags & CS_ENTRY_FLAG_PAGES) != !is_pages ||
        !cs_files_cache_unchanged(ctx->files, relpath, st, &was->content))
        return 0;
    int r = cs_content_ref_copy(&was->content, &e->content);
    if (r < 0)
        return r;
    ctx->stats->files_cached++;
    ctx->stats->bytes_cached += was->content.size;
    return 1;
}

/* *st is the entry's stat from before it was read. */
static int store_entry(StoreCtx *ctx, int dir_fd, const PrevDir *prev, const char *name,
                       CsDirEntry *e, struct stat *ret_st, bool *skip)
{
    struct stat st;
    int r;
    if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno == ENOENT)
            return entry_vanished(ctx, name, skip);
        return log_error_errno(-errno, "could not stat \"%s/%s\": %m", ctx->path, name);
    }
    _cleanup_free_ char *relpath = entry_relpath(ctx, name);
    if (!relpath)
        return -ENOMEM;
    if (ctx->params && ctx->params->is_excluded &&
        ctx->params->is_excluded(relpath, &st, ctx->params->userdata)) {
        *skip = true;
        return 0;
    }
    if (S_ISSOCK(st.st_mode)) {
        *skip = true;
        return 0;
    }
    *e = (CsDirEntry){ .mode = st.st_mode,
                       .uid = st.st_uid,
                       .gid = st.st_gid,
                       .mtime_sec = st.st_mtim.tv_sec,
                       .mtime_nsec = (uint32_t)st.st_mtim.tv_nsec };
    if (!(e->name = strdup(name)))
        return -ENOMEM;
    *ret_st = st;
    if (S_ISREG(st.st_mode)) {
        e->type = CS_ENTRY_FILE;
        bool is_pages = ctx->params && ctx->params->is_page_file &&
                        ctx->params->is_page_file(relpath, &st, ctx->params->userdata);
        e->flags = is_pages ? CS_ENTRY_FLAG_PAGES : 0;
        const CsDirEntry *was = prev_find(prev, name, CS_ENTRY_FILE);
        if ((r = take_unchanged(ctx, was, relpath, &st, is_pages, e)) != 0) {
            ctx->stats->files += r > 0;
            ctx->stats->page_files += r > 0 && is_pages;
            return r < 0 ? r : 0;
        }
        int fd = openat(dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0 && errno == ENOENT)
            return entry_vanished(ctx, name, skip);
        if (fd < 0)
            return log_error_errno(-errno, "could not open \"%s/%s\": %m", ctx->path, name);
        posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
        /* Asynchronous: the reference is filled in by the sync before the directory object is
         * written, so the pipeline stays full across the files of a directory. */
        PageObserver po = { .params = ctx->params, .relpath = relpath };
        CsReadObserver obs = { .fn = page_observe, .userdata = &po };
        CsContentRef flat;
        CsPutOptions opt = {
            .observer = is_pages && ctx->params->observe_page_file ? &obs : NULL,
            .previous = is_pages && ctx->can_delta ? prev_pages(ctx, was, &flat) : NULL,
        };
        bool handled = false;
        r = is_pages ? 0
                     : store_file_by_hook(ctx, relpath, dir_fd, fd, &st, &e->content, &handled);
        if (r == 0 && !handled)
            r = cs_writer_put_file(ctx->w, fd, is_pages ? CS_CHUNKING_PAGES : CS_CHUNKING_CDC,
                                   &opt, &e->content);
        close(fd);
        if (r < 0)
            return log_error_errno(r, "could not store \"%s/%s\": %m", ctx->path, name);
        ctx->stats->files++;
        ctx->stats->page_files += is_pages;
    } else if (S_ISDIR(st.st_mode)) {
        e->type = CS_ENTRY_DIR;
        int fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0 && errno == ENOENT)
            return entry_vanished(ctx, name, skip);
        if (fd < 0)
            return log_error_errno(-errno, "could not open directory \"%s/%s\": %m", ctx->path,
                                   name);
        size_t old_len = strlen(ctx->path);
        char *np = realloc(ctx->path, old_len + strlen(name) + 2);
        if (!np) {
            close(fd);
            return -ENOMEM;
        }
        ctx->path = np;
        sprintf(ctx->path + old_len, "/%s", name);
        PrevDir child;
        prev_load(ctx, prev_find(prev, name, CS_ENTRY_DIR), &child);
        r = store_dir(ctx, fd, &child, &e->content);
        cs_dir_entries_free(child.v, child.n);
        ctx->path[old_len] = 0;
        close(fd);
        if (r < 0)
            return r;
        ctx->stats->dirs++;
    } else if (S_ISLNK(st.st_mode)) {
        e->type = CS_ENTRY_SYMLINK;
        char target[PATH_MAX + 1];
        ssize_t n = readlinkat(dir_fd, name, target, PATH_MAX);
        if (n < 0 && errno == ENOENT)
            return entry_vanished(ctx, name, skip);
        if (n < 0)
            return log_error_errno(-errno, "could not read link \"%s/%s\": %m", ctx->path, name);
        target[n] = 0;
        if (!(e->target = strdup(target)))
            return -ENOMEM;
        e->size = (uint64_t)n;
        ctx->stats->symlinks++;
    } else {
        e->type = CS_ENTRY_SPECIAL;
        e->rdev = st.st_rdev;
        ctx->stats->specials++;
    }
    return 0;
}

/* Store everything below the directory and return its entries, sorted by name. They are
 * stored in that order too, so a hook that looks at entries stored before (CsTreeParams) finds
 * "base" and "global" done when "pg_wal" comes. */
static int store_dir_entries(StoreCtx *ctx, int dir_fd, const PrevDir *prev, CsDirEntry **ret,
                             size_t *ret_n)
{
    char **names = NULL;
    size_t n_names = 0;
    int r = read_dir_names(dir_fd, NULL, &names, &n_names);
    if (r < 0)
        return log_error_errno(r, "could not read directory \"%s\": %m", ctx->path);
    /* Entries live at stable addresses: pending asynchronous puts write into them. */
    CsDirEntry **pv = calloc(n_names ? n_names : 1, sizeof(*pv));
    _cleanup_free_ struct stat *sts = calloc(n_names ? n_names : 1, sizeof(*sts));
    size_t n = 0;
    if (!pv || !sts)
        r = -ENOMEM;
    for (size_t i = 0; r == 0 && i < n_names; i++) {
        CsDirEntry *e = calloc(1, sizeof(*e));
        if (!e) {
            r = -ENOMEM;
            break;
        }
        bool skip = false;
        r = store_entry(ctx, dir_fd, prev, names[i], e, &sts[n], &skip);
        if (r == 0 && !skip)
            pv[n++] = e;
        else {
            entry_clear(e);
            free(e);
        }
    }
    strv_free(names, n_names);
    int q = cs_writer_sync(ctx->w);
    if (r == 0)
        r = q;
    CsDirEntry *v = calloc(n ? n : 1, sizeof(*v));
    if (!v && r == 0)
        r = -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (v)
            v[i] = *pv[i];
        else
            entry_clear(pv[i]);
        free(pv[i]);
    }
    free(pv);
    if (r < 0) {
        cs_dir_entries_free(v, v ? n : 0);
        return r;
    }
    const CsTreeParams *p = ctx->params;
    bool is_hooked = p && p->file_stored;
    for (size_t i = 0; r == 0 && i < n; i++)
        if (v[i].type == CS_ENTRY_FILE) {
            v[i].size = v[i].content.size; /* what was read, even if the file changed */
            ctx->stats->bytes += v[i].size;
            if (!is_hooked && !ctx->files)
                continue;
            _cleanup_free_ char *relpath = entry_relpath(ctx, v[i].name);
            if (!relpath) {
                r = -ENOMEM;
                break;
            }
            if (is_hooked)
                p->file_stored(relpath, &v[i], p->userdata);
            int fr = ctx->files ? cs_files_cache_remember(ctx->files, relpath, &sts[i],
                                                          &v[i].content)
                                : 0;
            if (fr < 0)
                files_cache_failed(ctx, fr);
        }
    if (r < 0) {
        cs_dir_entries_free(v, n);
        return r;
    }
    *ret = v; /* in name order already: stored in the order of read_dir_names */
    *ret_n = n;
    return 0;
}

int cs_dir_store(CsWriter *w, CsDirEntry *v, size_t n, CsContentRef *ret)
{
    qsort(v, n, sizeof(*v), entry_cmp);
    for (size_t i = 1; i < n; i++)
        if (strcmp(v[i - 1].name, v[i].name) == 0)
            return -EEXIST;
    _cleanup_(buf_free) Buf obj = BUF_INIT;
    int r = cs_dir_encode(v, n, &obj);
    return r < 0 ? r : cs_writer_put_metadata(w, obj.data, obj.size, ret);
}

static int store_dir(StoreCtx *ctx, int dir_fd, const PrevDir *prev, CsContentRef *ret)
{
    CsDirEntry *v;
    size_t n;
    int r = store_dir_entries(ctx, dir_fd, prev, &v, &n);
    if (r < 0)
        return r;
    r = cs_dir_store(ctx->w, v, n, ret);
    cs_dir_entries_free(v, n);
    return r;
}

int cs_tree_root_attr(const char *path, CsTreeRootAttr *ret)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return -errno;
    *ret = (CsTreeRootAttr){ .mode = st.st_mode,
                             .uid = st.st_uid,
                             .gid = st.st_gid,
                             .mtime_sec = st.st_mtim.tv_sec,
                             .mtime_nsec = (uint32_t)st.st_mtim.tv_nsec };
    return 0;
}

static int tree_store(CsWriter *w, const char *path, const CsTreeParams *params,
                      CsTreeStats *stats, CsContentRef *ret, CsDirEntry **ret_v, size_t *ret_n)
{
    CsTreeStats local = { 0 };
    StoreCtx ctx = { .w = w, .params = params, .stats = stats ? stats : &local };
    ctx.path = realpath(path, NULL);
    if (!ctx.path)
        return log_error_errno(-errno, "could not open \"%s\": %m", path);
    ctx.root_len = strlen(ctx.path);
    PrevDir prev = { 0 };
    ctx.can_delta = cs_writer_can_delta(w);
    if (params && params->use_files_cache) {
        int q = cs_files_cache_open(cs_writer_repo(w)->index, ctx.path, &ctx.files);
        if (q < 0)
            log_warning("the files cache cannot be used (%s): every file is read",
                        strerror(-q));
    }
    if (params && params->previous && (ctx.can_delta || ctx.files)) {
        if (cs_reader_new(cs_writer_repo(w), &ctx.prev_reader) == 0) {
            CsDirEntry root = { .type = CS_ENTRY_DIR, .content = *params->previous };
            prev_load(&ctx, &root, &prev);
        }
    }
    int fd = open(ctx.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int r = fd < 0 ? log_error_errno(-errno, "could not open directory \"%s\": %m", path)
            : ret  ? store_dir(&ctx, fd, &prev, ret)
                   : store_dir_entries(&ctx, fd, &prev, ret_v, ret_n);
    if (fd >= 0)
        close(fd);
    if (r == 0 && ctx.files) {
        int q = cs_files_cache_commit(ctx.files);
        if (q < 0)
            files_cache_failed(&ctx, q);
    }
    cs_files_cache_free(ctx.files);
    cs_dir_entries_free(prev.v, prev.n);
    cs_reader_free(ctx.prev_reader);
    free(ctx.path);
    return r;
}

int cs_tree_store(CsWriter *w, const char *path, const CsTreeParams *params, CsContentRef *ret,
                  CsTreeStats *stats)
{
    return tree_store(w, path, params, stats, ret, NULL, NULL);
}

int cs_tree_store_entries(CsWriter *w, const char *path, const CsTreeParams *params,
                          CsDirEntry **ret, size_t *ret_n, CsTreeStats *stats)
{
    return tree_store(w, path, params, stats, NULL, ret, ret_n);
}

/* A regular file to write, handed to a restore worker. */
/* A large file restored by several workers at once, each writing a range of its chunks. The
 * walker creates and sizes the file; the range that finishes last closes it and sets its
 * metadata. */
typedef struct SplitFile {
    int fd;
    int dir_fd; /* owned */
    char *path;
    CsDirEntry e;
    CsContentRef flat;     /* level-0 chunk list */
    unsigned ranges_left;  /* protected by RestoreCtx.lock */
    int error;             /* protected by RestoreCtx.lock: first failure of a range */
} SplitFile;

/* Files at least this large are split; ranges hold about RESTORE_RANGE bytes of chunks. */
#define RESTORE_SPLIT_MIN (64ull << 20)
#define RESTORE_RANGE     (16ull << 20)

typedef struct FileJob {
    int dir_fd; /* owned; -1 for a range of a split file */
    char *path; /* for messages */
    CsDirEntry e;
    SplitFile *split; /* set for a range: chunks [first, end) written from `offset` on */
    size_t first, end;
    uint64_t offset;
    uint64_t written;  /* result: bytes written */
    bool is_changed;   /* result: content or size had to change */
    struct FileJob *next;
} FileJob;

/* A directory whose mode and times are set after everything inside it is written. */
typedef struct DirMeta {
    int parent_fd; /* owned */
    CsDirEntry e;
} DirMeta;

#define RESTORE_QUEUE_MAX 64

typedef struct RestoreCtx {
    CsReader *rd; /* the walker's reader */
    CsRepo *repo;
    const CsRestoreParams *params;
    CsTreeStats *stats;
    bool do_chown;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    FileJob *head, *tail; /* protected by lock */
    unsigned queued;      /* protected by lock */
    bool is_closed;       /* protected by lock: no more jobs */
    int error;            /* protected by lock: first failure */
    uint64_t files, bytes; /* protected by lock */
    uint64_t bytes_written, files_unchanged; /* protected by lock */

    DirMeta *dirs; /* walker only */
    size_t n_dirs, cap_dirs;
} RestoreCtx;

static int restore_meta(RestoreCtx *ctx, int dir_fd, const CsDirEntry *e)
{
    int flags = e->type == CS_ENTRY_SYMLINK ? AT_SYMLINK_NOFOLLOW : 0;
    if (ctx->do_chown && fchownat(dir_fd, e->name, e->uid, e->gid, flags) < 0)
        return log_error_errno(-errno, "could not set owner of \"%s\": %m", e->name);
    if (e->type != CS_ENTRY_SYMLINK && fchmodat(dir_fd, e->name, e->mode & 07777, 0) < 0)
        return log_error_errno(-errno, "could not set mode of \"%s\": %m", e->name);
    struct timespec ts[2] = { { .tv_nsec = UTIME_OMIT },
                              { .tv_sec = e->mtime_sec, .tv_nsec = e->mtime_nsec } };
    if (utimensat(dir_fd, e->name, ts, flags) < 0)
        return log_error_errno(-errno, "could not set times of \"%s\": %m", e->name);
    return 0;
}

static void restore_fail(RestoreCtx *ctx, int r)
{
    pthread_mutex_lock(&ctx->lock);
    if (!ctx->error)
        ctx->error = r;
    pthread_cond_broadcast(&ctx->cond);
    pthread_mutex_unlock(&ctx->lock);
}

static void job_free(FileJob *j)
{
    if (j->dir_fd >= 0)
        close(j->dir_fd);
    free(j->path);
    entry_clear(&j->e);
    free(j);
}

static void split_free(SplitFile *sf)
{
    if (sf->fd >= 0)
        close(sf->fd);
    close(sf->dir_fd);
    free(sf->path);
    entry_clear(&sf->e);
    cs_content_ref_free(&sf->flat);
    free(sf);
}

/* Write chunks [first, end) of a split file at their offsets; zero chunks stay holes. */
static int restore_range(CsReader *rd, FileJob *j, bool no_sync)
{
    OutBuf out;
    int r = out_buf_init(&out, j->split->fd, true, j->offset, OUT_BUF_WRITE_SIZE);
    for (size_t i = j->first; r == 0 && i < j->end; i++) {
        const uint8_t *p;
        size_t n = j->split->flat.entries[i].length;
        if ((r = cs_reader_slice(rd, &j->split->flat.entries[i], &p)) < 0)
            break;
        r = cs_chunk_is_zero(p, n) ? out_buf_skip(&out, n) : out_buf_add(&out, p, n);
    }
    if (r == 0 && (r = out_buf_flush(&out)) == 0 && !no_sync)
        sync_file_range(j->split->fd, (off_t)j->offset, (off_t)(out.off - j->offset),
                        SYNC_FILE_RANGE_WRITE);
    out_buf_done(&out);
    return r;
}

static uint64_t range_bytes(const FileJob *j)
{
    uint64_t n = 0;
    for (size_t i = j->first; i < j->end; i++)
        n += j->split->flat.entries[i].length;
    return n;
}

/* One range of a split file is done (r: its result). The last one finishes the file: returns
 * 1 when it did so, 0 when other ranges remain, or a negative errno. */
static int split_range_done(RestoreCtx *ctx, SplitFile *sf, int r)
{
    pthread_mutex_lock(&ctx->lock);
    if (r < 0 && !sf->error)
        sf->error = r;
    bool is_last = --sf->ranges_left == 0;
    pthread_mutex_unlock(&ctx->lock);
    if (!is_last)
        return r;
    r = sf->error;
    if (close(sf->fd) < 0 && r == 0)
        r = -errno;
    sf->fd = -1;
    if (r < 0)
        log_error_errno(r, "could not restore \"%s\": %m", sf->path);
    else if ((r = restore_meta(ctx, sf->dir_fd, &sf->e)) == 0)
        r = 1;
    split_free(sf);
    return r;
}

static int restore_file(RestoreCtx *ctx, CsReader *rd, FileJob *j)
{
    int fd = openat(j->dir_fd, j->e.name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
                    0600);
    if (fd < 0)
        return log_error_errno(-errno, "could not create \"%s\": %m", j->path);
    int r = cs_reader_write_fd(rd, &j->e.content, fd, true);
    /* Start writeback now, without waiting: the disk works while later files are decoded, and
     * the syncfs at the end has little left to wait for. */
    if (r == 0 && !ctx->params->no_sync)
        sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    if (close(fd) < 0 && r == 0)
        r = -errno;
    if (r < 0)
        return log_error_errno(r, "could not restore \"%s\": %m", j->path);
    return restore_meta(ctx, j->dir_fd, &j->e);
}

/* Bring an existing file up to date: read each stored entry's range, keep it if it matches
 * (its id, for a whole chunk; its bytes, for a slice of a run), write the stored bytes
 * otherwise. */
static int restore_file_delta(RestoreCtx *ctx, CsReader *rd, FileJob *j)
{
    const int flags = O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW;
    int fd = openat(j->dir_fd, j->e.name, flags | O_EXCL, 0600);
    bool is_new = fd >= 0;
    if (fd < 0 && errno == EEXIST)
        fd = openat(j->dir_fd, j->e.name, flags, 0600);
    if (fd < 0)
        return log_error_errno(-errno, "could not open \"%s\": %m", j->path);
    struct stat st;
    CsContentRef flat = { 0 };
    uint8_t *old = NULL;
    int r = fstat(fd, &st) < 0 ? -errno : cs_reader_flatten(rd, &j->e.content, &flat);
    size_t max = 0;
    for (size_t i = 0; r == 0 && i < flat.count; i++)
        max = MAX(max, (size_t)flat.entries[i].length);
    if (r == 0 && !(old = malloc(max ? max : 1)))
        r = -ENOMEM;
    uint64_t off = 0, have = r == 0 ? (uint64_t)st.st_size : 0;
    size_t block = cs_reader_repo(rd)->config.page_size;
    for (size_t i = 0; r == 0 && i < flat.count; i++) {
        const CsChunkSlice *e = &flat.entries[i];
        size_t n = e->length, got = 0;
        bool has_old = false;
        if (off + n <= have && (r = pread_full(fd, old, n, off, &got)) == 0 && got == n) {
            has_old = true;
            /* A whole chunk that matches is known by its id, without decoding it. A run's id is
             * not a hash of its bytes, so a slice is only ever compared byte by byte. */
            uint32_t len;
            bool is_whole = e->offset == 0 &&
                            (!flat.has_slices ||
                             (cs_reader_chunk_length(rd, &e->id, &len) == 0 && len == n));
            CsChunkId id;
            if (is_whole && (r = cs_chunk_id(cs_reader_repo(rd), old, n, &id)) < 0)
                break;
            if (is_whole && memcmp(id.bytes, e->id.bytes, sizeof(id.bytes)) == 0) {
                off += n;
                continue;
            }
        }
        if (r < 0)
            break;
        const uint8_t *p;
        if ((r = cs_reader_slice(rd, e, &p)) < 0)
            break;
        /* Block by block, so that one changed page of a run rewrites that page only. */
        for (size_t at = 0; r == 0 && at < n; at += block) {
            size_t k = MIN(block, n - at);
            if (has_old && memcmp(p + at, old + at, k) == 0)
                continue;
            if (off + at >= have && cs_chunk_is_zero(p + at, k))
                continue; /* past the old end, zeros stay a hole */
            r = pwrite_all(fd, p + at, k, off + at);
            j->written += k;
        }
        off += n;
    }
    if (r == 0 && have != flat.size && ftruncate(fd, (off_t)flat.size) < 0)
        r = -errno;
    j->is_changed = is_new || j->written || have != flat.size;
    if (r == 0 && j->written && !ctx->params->no_sync)
        sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    if (close(fd) < 0 && r == 0)
        r = -errno;
    free(old);
    cs_content_ref_free(&flat);
    if (r < 0)
        return log_error_errno(r, "could not restore \"%s\": %m", j->path);
    return restore_meta(ctx, j->dir_fd, &j->e);
}

static void *restore_worker(void *userdata)
{
    RestoreCtx *ctx = userdata;
    CsReader *rd = NULL;
    int r = cs_reader_new(ctx->repo, &rd);
    if (r < 0)
        restore_fail(ctx, r);
    pthread_mutex_lock(&ctx->lock);
    for (;;) {
        while (!ctx->head && !ctx->is_closed)
            pthread_cond_wait(&ctx->cond, &ctx->lock);
        FileJob *j = ctx->head;
        if (!j)
            break;
        ctx->head = j->next;
        if (!ctx->head)
            ctx->tail = NULL;
        ctx->queued--;
        pthread_cond_broadcast(&ctx->cond);
        bool skip = ctx->error != 0;
        pthread_mutex_unlock(&ctx->lock);
        uint64_t size = j->split ? j->split->e.size : j->e.size;
        bool is_file_done = false;
        if (j->split) {
            /* Every range reports, even after a failure, so the last one frees the file. */
            r = skip || !rd ? -ECANCELED : restore_range(rd, j, ctx->params->no_sync);
            if (r == 0)
                j->written = range_bytes(j);
            r = split_range_done(ctx, j->split, r);
            is_file_done = r == 1;
            if (r == -ECANCELED)
                r = 0;
        } else {
            r = skip || !rd               ? 0
                : ctx->params->is_delta ? restore_file_delta(ctx, rd, j)
                                        : restore_file(ctx, rd, j);
            is_file_done = r == 0 && !skip && rd;
            if (!ctx->params->is_delta)
                j->written = size;
        }
        uint64_t written = j->written;
        bool is_changed = j->is_changed || !ctx->params->is_delta;
        job_free(j);
        if (r < 0)
            restore_fail(ctx, r);
        pthread_mutex_lock(&ctx->lock);
        if (is_file_done) {
            ctx->files++;
            ctx->bytes += size;
            ctx->bytes_written += written;
            ctx->files_unchanged += !is_changed;
        }
    }
    pthread_mutex_unlock(&ctx->lock);
    cs_reader_free(rd);
    return NULL;
}

/* Queue a file for the workers; takes ownership of *e's contents. */
static int queue_job(RestoreCtx *ctx, FileJob *j)
{
    pthread_mutex_lock(&ctx->lock);
    while (ctx->queued >= RESTORE_QUEUE_MAX && !ctx->error)
        pthread_cond_wait(&ctx->cond, &ctx->lock);
    int r = ctx->error;
    if (r == 0) {
        if (ctx->tail)
            ctx->tail->next = j;
        else
            ctx->head = j;
        ctx->tail = j;
        ctx->queued++;
        pthread_cond_broadcast(&ctx->cond);
    }
    pthread_mutex_unlock(&ctx->lock);
    if (r)
        job_free(j);
    return r;
}

/* Split a large file into ranges for several workers. Takes ownership of *e's contents. */
static int queue_split_file(RestoreCtx *ctx, int dir_fd, const char *path, CsDirEntry *e)
{
    SplitFile *sf = calloc(1, sizeof(*sf));
    if (!sf)
        return -ENOMEM;
    sf->fd = -1;
    sf->dir_fd = fcntl(dir_fd, F_DUPFD_CLOEXEC, 3);
    sf->path = strdup(path);
    sf->e = *e;
    *e = (CsDirEntry){ 0 };
    int r = sf->dir_fd < 0 || !sf->path ? -ENOMEM
                                        : cs_reader_flatten(ctx->rd, &sf->e.content, &sf->flat);
    if (r == 0) {
        sf->fd = openat(dir_fd, sf->e.name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
                        0600);
        if (sf->fd < 0 || ftruncate(sf->fd, (off_t)sf->flat.size) < 0)
            r = log_error_errno(-errno, "could not create \"%s\": %m", path);
    }
    if (r < 0) {
        split_free(sf);
        return r;
    }
    /* Count the ranges first: a range that finishes early must not see the count reach 0. */
    for (size_t i = 0; i < sf->flat.count; sf->ranges_left++) {
        uint64_t bytes = 0;
        while (i < sf->flat.count && bytes < RESTORE_RANGE)
            bytes += sf->flat.entries[i++].length;
    }
    unsigned total = sf->ranges_left, queued = 0;
    uint64_t off = 0;
    for (size_t i = 0; i < sf->flat.count; queued++) {
        FileJob *j = calloc(1, sizeof(*j));
        if (!j) {
            r = -ENOMEM;
            break;
        }
        j->dir_fd = -1;
        j->split = sf;
        j->first = i;
        j->offset = off;
        uint64_t bytes = 0;
        while (i < sf->flat.count && bytes < RESTORE_RANGE)
            bytes += sf->flat.entries[i++].length;
        j->end = i;
        off += bytes;
        if ((r = queue_job(ctx, j)) < 0)
            break;
    }
    /* Ranges never queued report in as failed, so that the last report frees the file. sf may
     * be gone after the final call. */
    for (unsigned k = queued; k < total; k++)
        split_range_done(ctx, sf, r < 0 ? r : -ECANCELED);
    return r;
}

static int queue_file(RestoreCtx *ctx, int dir_fd, const char *path, CsDirEntry *e)
{
    if (e->content.size >= RESTORE_SPLIT_MIN && !ctx->params->is_delta)
        return queue_split_file(ctx, dir_fd, path, e);
    FileJob *j = calloc(1, sizeof(*j));
    if (!j)
        return -ENOMEM;
    j->dir_fd = fcntl(dir_fd, F_DUPFD_CLOEXEC, 3);
    j->path = strdup(path);
    j->e = *e;
    *e = (CsDirEntry){ 0 };
    if (j->dir_fd < 0 || !j->path) {
        job_free(j);
        return -ENOMEM;
    }
    return queue_job(ctx, j);
}

static int remember_dir(RestoreCtx *ctx, int parent_fd, CsDirEntry *e)
{
    if (GROW_ARRAY(ctx->dirs, ctx->cap_dirs, ctx->n_dirs, 64) < 0)
        return -ENOMEM;
    int fd = fcntl(parent_fd, F_DUPFD_CLOEXEC, 3);
    if (fd < 0)
        return -errno;
    /* Only metadata is needed later: drop the content reference now. */
    cs_content_ref_free(&e->content);
    ctx->dirs[ctx->n_dirs++] = (DirMeta){ .parent_fd = fd, .e = *e };
    *e = (CsDirEntry){ 0 };
    return 0;
}

/* Delta: remove what the stored directory v[0..n) (sorted by name) does not have. */
static int delta_remove_extra(RestoreCtx *ctx, int dir_fd, const CsDirEntry *v, size_t n,
                              const char *path)
{
    int fd = dup(dir_fd);
    DIR *d = fd < 0 ? NULL : fdopendir(fd);
    if (!d) {
        if (fd >= 0)
            close(fd);
        return log_error_errno(-errno, "could not read directory \"%s\": %m", path);
    }
    int r = 0;
    struct dirent *de;
    while (r == 0 && (de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        CsDirEntry key = { .name = de->d_name };
        if (bsearch(&key, v, n, sizeof(*v), entry_cmp))
            continue;
        if ((r = rm_rf_at(dir_fd, de->d_name)) < 0)
            log_error_errno(r, "could not remove \"%s/%s\": %m", path, de->d_name);
        ctx->stats->entries_removed++;
    }
    closedir(d);
    return r;
}

/* Delta: may the existing entry stay (a file or directory is updated in place, a symlink that
 * already points the same way is kept)? Otherwise it is removed. */
static int delta_prepare_entry(int dir_fd, const CsDirEntry *e, bool *keep)
{
    struct stat st;
    *keep = false;
    if (fstatat(dir_fd, e->name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT ? 0 : -errno;
    if (e->type == CS_ENTRY_FILE && S_ISREG(st.st_mode))
        return 0; /* updated in place by the worker */
    if (e->type == CS_ENTRY_DIR && S_ISDIR(st.st_mode))
        return 0;
    if (e->type == CS_ENTRY_SYMLINK && S_ISLNK(st.st_mode)) {
        char target[PATH_MAX + 1];
        ssize_t k = readlinkat(dir_fd, e->name, target, PATH_MAX);
        if (k >= 0 && (size_t)k == strlen(e->target) && memcmp(target, e->target, (size_t)k) == 0) {
            *keep = true;
            return 0;
        }
    }
    return rm_rf_at(dir_fd, e->name);
}

static int restore_dir(RestoreCtx *ctx, int dir_fd, const CsContentRef *ref, const char *path)
{
    CsDirEntry *v;
    size_t n;
    int r = cs_dir_load(ctx->rd, ref, &v, &n);
    if (r < 0)
        return log_error_errno(r, "could not read directory \"%s\" from the repository: %m",
                               path);
    if (ctx->params->is_delta)
        r = delta_remove_extra(ctx, dir_fd, v, n, path);
    for (size_t i = 0; r == 0 && i < n; i++) {
        CsDirEntry *e = &v[i];
        _cleanup_free_ char *child = NULL;
        if (asprintf(&child, "%s/%s", path, e->name) < 0) {
            r = -ENOMEM;
            break;
        }
        if (ctx->params->is_delta) {
            bool keep;
            if ((r = delta_prepare_entry(dir_fd, e, &keep)) < 0) {
                log_error_errno(r, "could not replace \"%s\": %m", child);
                break;
            }
            if (keep) {
                ctx->stats->symlinks++;
                r = restore_meta(ctx, dir_fd, e);
                continue;
            }
        } else if (ctx->params->is_overwrite_allowed && e->type != CS_ENTRY_DIR)
            unlinkat(dir_fd, e->name, 0);
        switch (e->type) {
        case CS_ENTRY_FILE:
            r = queue_file(ctx, dir_fd, child, e);
            continue; /* the worker sets the file's metadata */
        case CS_ENTRY_DIR: {
            if (mkdirat(dir_fd, e->name, 0700) < 0 &&
                !(errno == EEXIST &&
                  (ctx->params->is_overwrite_allowed || ctx->params->is_delta))) {
                r = log_error_errno(-errno, "could not create directory \"%s\": %m", child);
                break;
            }
            int fd = openat(dir_fd, e->name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
            if (fd < 0) {
                r = log_error_errno(-errno, "could not open directory \"%s\": %m", child);
                break;
            }
            r = restore_dir(ctx, fd, &e->content, child);
            close(fd);
            ctx->stats->dirs++;
            if (r == 0)
                r = remember_dir(ctx, dir_fd, e);
            continue; /* mode and times are set once its files are written */
        }
        case CS_ENTRY_SYMLINK:
            if (symlinkat(e->target, dir_fd, e->name) < 0)
                r = log_error_errno(-errno, "could not create symlink \"%s\": %m", child);
            ctx->stats->symlinks++;
            break;
        default:
            if (mknodat(dir_fd, e->name, e->mode, (dev_t)e->rdev) < 0)
                r = log_error_errno(-errno, "could not create special file \"%s\": %m", child);
            ctx->stats->specials++;
            break;
        }
        if (r == 0)
            r = restore_meta(ctx, dir_fd, e);
    }
    cs_dir_entries_free(v, n);
    return r;
}

int cs_tree_restore(CsReader *rd, const CsContentRef *root, const char *target,
                    const CsRestoreParams *params, CsTreeStats *stats)
{
    static const CsRestoreParams defaults = { 0 };
    CsTreeStats local = { 0 };
    RestoreCtx ctx = { .rd = rd, .repo = cs_reader_repo(rd),
                       .params = params ? params : &defaults,
                       .stats = stats ? stats : &local };
    ctx.do_chown = geteuid() == 0 && !ctx.params->skip_owner;
    int r = mkdir_p(target, 0700);
    if (r < 0)
        return log_error_errno(r, "could not create \"%s\": %m", target);
    _cleanup_close_ int fd = open(target, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return log_error_errno(-errno, "could not open \"%s\": %m", target);
    if (!ctx.params->is_overwrite_allowed && !ctx.params->is_delta) {
        DIR *d = opendir(target);
        struct dirent *de;
        bool is_empty = true;
        while (d && (de = readdir(d)))
            if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
                is_empty = false;
        if (d)
            closedir(d);
        if (!is_empty)
            return log_error_errno(-ENOTEMPTY, "target directory \"%s\" is not empty", target);
    }

    pthread_mutex_init(&ctx.lock, NULL);
    pthread_cond_init(&ctx.cond, NULL);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned n_threads = params && params->threads ? params->threads
                                                   : (unsigned)MAX(2, MIN(cpus * 2, 16));
    pthread_t *threads = calloc(n_threads, sizeof(*threads));
    unsigned started = 0;
    for (; threads && started < n_threads; started++)
        if (pthread_create(&threads[started], NULL, restore_worker, &ctx) != 0)
            break;
    r = started ? restore_dir(&ctx, fd, root, target) : -EAGAIN;

    pthread_mutex_lock(&ctx.lock);
    ctx.is_closed = true;
    pthread_cond_broadcast(&ctx.cond);
    pthread_mutex_unlock(&ctx.lock);
    for (unsigned i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    free(threads);
    if (r == 0)
        r = ctx.error;
    ctx.stats->files += ctx.files;
    ctx.stats->bytes += ctx.bytes;
    ctx.stats->bytes_written += ctx.bytes_written;
    ctx.stats->files_unchanged += ctx.files_unchanged;

    /* Children were remembered before their parents: this order sets a directory's times only
     * after nothing more is created inside it. */
    for (size_t i = 0; i < ctx.n_dirs; i++) {
        if (r == 0)
            r = restore_meta(&ctx, ctx.dirs[i].parent_fd, &ctx.dirs[i].e);
        close(ctx.dirs[i].parent_fd);
        entry_clear(&ctx.dirs[i].e);
    }
    free(ctx.dirs);
    pthread_mutex_destroy(&ctx.lock);
    pthread_cond_destroy(&ctx.cond);
    const CsTreeRootAttr *ra = ctx.params->root_attr;
    if (r == 0 && ra) {
        struct timespec ts[2] = { { .tv_nsec = UTIME_OMIT },
                                  { .tv_sec = ra->mtime_sec, .tv_nsec = ra->mtime_nsec } };
        if ((ctx.do_chown && fchown(fd, ra->uid, ra->gid) < 0) ||
            fchmod(fd, ra->mode & 07777) < 0 || futimens(fd, ts) < 0)
            r = log_error_errno(-errno, "could not set attributes of \"%s\": %m", target);
    }
    /* One filesystem sync instead of one fsync per file. */
    if (r == 0 && !ctx.params->no_sync && syncfs(fd) < 0)
        r = log_error_errno(-errno, "could not sync \"%s\": %m", target);
    return r;
}

int cs_tree_lookup(CsReader *rd, const CsContentRef *root, const char *path, CsDirEntry *ret)
{
    CsDirEntry cur = { .type = CS_ENTRY_DIR, .mode = S_IFDIR | 0755 };
    /* Work on a copy of the root reference so every step owns what it frees. */
    int r = cs_content_ref_copy(root, &cur.content);
    if (r < 0)
        return r;

    _cleanup_free_ char *copy = strdup(path);
    if (!copy) {
        entry_clear(&cur);
        return -ENOMEM;
    }
    char *save = NULL;
    for (char *part = strtok_r(copy, "/", &save); part; part = strtok_r(NULL, "/", &save)) {
        if (cur.type != CS_ENTRY_DIR) {
            r = -ENOTDIR;
            goto fail;
        }
        CsDirEntry *v;
        size_t n;
        if ((r = cs_dir_load(rd, &cur.content, &v, &n)) < 0)
            goto fail;
        CsDirEntry key = { .name = part };
        CsDirEntry *found = bsearch(&key, v, n, sizeof(*v), entry_cmp);
        if (!found) {
            cs_dir_entries_free(v, n);
            r = -ENOENT;
            goto fail;
        }
        entry_clear(&cur);
        cur = *found;
        *found = (CsDirEntry){ 0 };
        cs_dir_entries_free(v, n);
    }
    *ret = cur;
    return 0;
fail:
    entry_clear(&cur);
    return r;
}
