#include "chunkstore/index.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <lmdb.h>

#include "common/endian.h"
#include "common/fs-util.h"
#include "common/log.h"
#include "common/macro.h"

/* Address space, not disk: the file grows only as data is added. 16 GiB holds about 150 million
 * chunks (a petabyte of 8 KiB pages) and still fits the address space valgrind gives a process. */
#define INDEX_MAP_SIZE (16ull << 30)
/* Free space under which a failed write of the index is put down to a full file system. */
#define INDEX_FULL_BELOW (1ull << 20)

struct CsIndex {
    MDB_env *env;
    MDB_dbi chunks; /* chunk id -> CS_LOC_SIZE bytes */
    MDB_dbi packs;  /* pack id -> size u64, entries u32 */
    MDB_dbi meta;   /* "repo_id" -> 16 bytes */
    MDB_dbi pages;  /* page id -> CS_SLICE_SIZE bytes: where in a run the page is */
    MDB_dbi files;  /* CsFileKey -> FILE_STAMP_SIZE bytes: the files cache */
    bool has_pages; /* false only in an index opened read-only before it had the database */
    bool has_files; /* likewise */
    bool read_only;
    void *map_addr; /* LMDB's mapping of data.mdb, found in /proc/self/maps; NULL if unknown */
    size_t map_len;
    unsigned release_every; /* cs_index_bound_memory(); 0: never */
    unsigned long touches;  /* lookups and inserts so far (atomic) */
};

#define PAGE_ROW_SIZE (CS_SLICE_SIZE + CS_PAGE_ROW_TAG_SIZE) /* version 4; 40 bytes before */

struct CsIndexReader {
    CsIndex *idx;
    MDB_txn *txn;
    bool is_paused; /* txn reset: holds no snapshot until the next refresh */
};

DEFINE_CLEANUP_FUNC(MDB_txn *, mdb_txn_abort)

static int errno_from_mdb(int rc)
{
    switch (rc) {
    case 0: return 0;
    case MDB_NOTFOUND: return -ENOENT;
    case MDB_KEYEXIST: return -EEXIST;
    case MDB_MAP_FULL:
        log_error("the index is full (%llu GiB)", INDEX_MAP_SIZE >> 30);
        return -ENOSPC;
    case MDB_READERS_FULL: return -EAGAIN;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
        log_debug("lmdb: %s", mdb_strerror(rc));
        return -EBADMSG;
    default:
        if (rc > 0)
            return -rc;
        log_debug("lmdb: %s", mdb_strerror(rc));
        return -EIO;
    }
}

static MDB_val mdb_val(const void *p, size_t n)
{
    return (MDB_val){ .mv_size = n, .mv_data = (void *)(uintptr_t)p };
}

/* Start a transaction, adopting a map size grown by another process. */
static int txn_begin(CsIndex *idx, unsigned flags, MDB_txn **ret)
{
    int rc = mdb_txn_begin(idx->env, NULL, flags, ret);
    if (rc == MDB_MAP_RESIZED) {
        mdb_env_set_mapsize(idx->env, 0);
        rc = mdb_txn_begin(idx->env, NULL, flags, ret);
    }
    return errno_from_mdb(rc);
}

/* Commit a write transaction. LMDB reports a short write of its pages as EIO ("short write,
 * filesystem full?" in mdb_page_flush): when the index's file system has no room left, that
 * is what happened, and the caller is told so. */
static int txn_commit(CsIndex *idx, MDB_txn *txn)
{
    int r = errno_from_mdb(mdb_txn_commit(txn));
    int fd;
    struct statvfs sv;
    if (r == -EIO && mdb_env_get_fd(idx->env, &fd) == 0 && fstatvfs(fd, &sv) == 0 &&
        (uint64_t)sv.f_bavail * sv.f_frsize < INDEX_FULL_BELOW)
        r = -ENOSPC;
    return r;
}

/* LMDB does not say where it mapped the file (me_mapaddr is only set with MDB_FIXEDMAP), so
 * look for the mapping of data.mdb among this process's mappings. */
static void find_map(CsIndex *idx, const char *dir)
{
    _cleanup_free_ char *real = realpath(dir, NULL);
    _cleanup_free_ char *want = real ? path_join(real, "data.mdb") : NULL;
    FILE *f = want ? fopen("/proc/self/maps", "re") : NULL;
    if (!f)
        return;
    char line[4096];
    while (fgets(line, sizeof(line), f)) {
        unsigned long start, end;
        int path_at = 0;
        line[strcspn(line, "\n")] = 0;
        if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %n", &start, &end, &path_at) < 2 || !path_at)
            continue;
        if (strcmp(line + path_at, want) == 0) {
            idx->map_addr = (void *)start;
            idx->map_len = end - start;
            break;
        }
    }
    fclose(f);
}

/* LMDB maps the file and follows page numbers up to the last one its meta page names: a file
 * cut shorter than that (a full disk, a bad copy) would kill the process with SIGBUS at the
 * first read past the end. Refuse it as damage instead. */
static int check_file_size(CsIndex *idx)
{
    MDB_envinfo info;
    MDB_stat st;
    int fd;
    struct stat sb;
    int rc = mdb_env_info(idx->env, &info);
    if (rc || (rc = mdb_env_stat(idx->env, &st)) || (rc = mdb_env_get_fd(idx->env, &fd)))
        return errno_from_mdb(rc);
    if (fstat(fd, &sb) < 0)
        return -errno;
    uint64_t need = ((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
    if ((uint64_t)sb.st_size < need) {
        log_debug("index: data.mdb has %lld bytes, its meta page needs %llu", (long long)sb.st_size,
                  (unsigned long long)need);
        return -EBADMSG;
    }
    return 0;
}

/* The files LMDB keeps in an index directory (and nothing else the directory may hold). */
static const char *const lmdb_files[] = { "data.mdb", "lock.mdb" };

/* The index directory belongs to whoever owns the directory it is in (the repository's
 * owner), and its files to the owner of the index directory: made by root, they are handed over
 * before they have their names, so that the owner can always open them. Every user of a shared
 * repository writes them (LMDB readers too write lock.mdb), hence FILE_KIND_SHARED_*. */
static int index_files_prepare(const char *dir, bool read_only, mode_t *ret_mode)
{
    FileAccess parent, a;
    _cleanup_free_ char *copy = strdup(dir);
    if (!copy)
        return -ENOMEM;
    const char *parent_dir = dirname(copy);
    int r;
    if (!read_only && access(dir, F_OK) < 0) {
        if ((r = mkdir_p(parent_dir, 0700)) < 0 || (r = file_access_of(parent_dir, &parent)) < 0 ||
            (r = mkdir_with_access(dir, &parent, FILE_KIND_SHARED_DIR)) < 0)
            return r;
    } else if (!read_only && file_access_of(parent_dir, &parent) == 0)
        file_access_adopt(&parent, dir, FILE_KIND_SHARED_DIR); /* left by an older version */
    if ((r = file_access_of(dir, &a)) < 0)
        return r;
    *ret_mode = file_access_mode(&a, FILE_KIND_SHARED_RW);
    if (read_only)
        return 0;
    for (size_t i = 0; i < ARRAY_SIZE(lmdb_files); i++) {
        _cleanup_free_ char *path = path_join(dir, lmdb_files[i]);
        if (!path)
            return -ENOMEM;
        if ((r = create_file_with_access(path, &a, FILE_KIND_SHARED_RW)) < 0)
            return r;
        file_access_adopt(&a, path, FILE_KIND_SHARED_RW);
    }
    return 0;
}

/* LMDB opens its files as they are: a FIFO or a directory in their place would block or fail
 * every command with a strange error. It is damage (and the index is rebuilt). */
static int check_regular_files(const char *dir)
{
    for (size_t i = 0; i < ARRAY_SIZE(lmdb_files); i++) {
        _cleanup_free_ char *path = path_join(dir, lmdb_files[i]);
        struct stat st;
        if (!path)
            return -ENOMEM;
        if (lstat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
            log_debug("index: %s is not a regular file", path);
            return -EBADMSG;
        }
    }
    return 0;
}

int cs_index_drop_files(const char *dir)
{
    _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    for (size_t i = 0; i < ARRAY_SIZE(lmdb_files); i++)
        if (unlinkat(fd, lmdb_files[i], 0) < 0 && errno != ENOENT)
            return -errno;
    return 0;
}

int cs_index_open(const char *dir, const uint8_t repo_id[16], bool read_only, CsIndex **ret)
{
    int r;
    mode_t mode;
    if ((r = check_regular_files(dir)) < 0 || (r = index_files_prepare(dir, read_only, &mode)) < 0)
        return r;
    _cleanup_free_ CsIndex *idx = calloc(1, sizeof(*idx));
    if (!idx)
        return -ENOMEM;
    idx->read_only = read_only;
    int rc = mdb_env_create(&idx->env);
    if (rc)
        return errno_from_mdb(rc);
    mdb_env_set_maxdbs(idx->env, 5);
    mdb_env_set_maxreaders(idx->env, 512);
    mdb_env_set_mapsize(idx->env, INDEX_MAP_SIZE);
    /* NOTLS: read transactions are handed between threads of the pipeline and FUSE. */
    rc = mdb_env_open(idx->env, dir, MDB_NOTLS | (read_only ? MDB_RDONLY : 0), mode);
    if (rc) {
        mdb_env_close(idx->env);
        return errno_from_mdb(rc);
    }
    if ((r = check_file_size(idx)) < 0) {
        mdb_env_close(idx->env);
        return r;
    }
    int dead;
    mdb_reader_check(idx->env, &dead);
    find_map(idx, dir);

    _cleanup_(mdb_txn_abortp) MDB_txn *txn = NULL;
    if ((r = txn_begin(idx, read_only ? MDB_RDONLY : 0, &txn)) < 0)
        goto fail;
    unsigned create = read_only ? 0 : MDB_CREATE;
    if ((rc = mdb_dbi_open(txn, "chunks", create, &idx->chunks)) ||
        (rc = mdb_dbi_open(txn, "packs", create, &idx->packs)) ||
        (rc = mdb_dbi_open(txn, "meta", create, &idx->meta))) {
        r = errno_from_mdb(rc);
        goto fail;
    }
    rc = mdb_dbi_open(txn, "pages", create, &idx->pages);
    if (rc && rc != MDB_NOTFOUND) {
        r = errno_from_mdb(rc);
        goto fail;
    }
    idx->has_pages = rc == 0;
    rc = mdb_dbi_open(txn, "files", create, &idx->files);
    if (rc && rc != MDB_NOTFOUND) {
        r = errno_from_mdb(rc);
        goto fail;
    }
    idx->has_files = rc == 0;
    MDB_val k = mdb_val("repo_id", 7), v;
    rc = mdb_get(txn, idx->meta, &k, &v);
    if (rc == 0 && (v.mv_size != 16 || memcmp(v.mv_data, repo_id, 16) != 0)) {
        r = -EXDEV;
        goto fail;
    }
    if (rc == MDB_NOTFOUND && !read_only) {
        MDB_val nv = mdb_val(repo_id, 16);
        if ((rc = mdb_put(txn, idx->meta, &k, &nv, 0))) {
            r = errno_from_mdb(rc);
            goto fail;
        }
    }
    if ((r = txn_commit(idx, TAKE_PTR(txn))) < 0)
        goto fail;
    *ret = TAKE_PTR(idx);
    return 0;
fail:
    if (txn)
        mdb_txn_abort(TAKE_PTR(txn)); /* before the environment it belongs to is closed */
    mdb_env_close(idx->env);
    return r;
}

CsIndex *cs_index_close(CsIndex *idx)
{
    if (idx) {
        mdb_env_close(idx->env);
        free(idx);
    }
    return NULL;
}

/* One lookup or insert: it maps a leaf page, and the kernel's fault-around maps its
 * neighbours with it (64 KiB). */
static void touched(CsIndex *idx)
{
    if (idx->release_every &&
        __atomic_add_fetch(&idx->touches, 1, __ATOMIC_RELAXED) % idx->release_every == 0)
        cs_index_release_memory(idx);
}

void cs_index_bound_memory(CsIndex *idx, unsigned release_every)
{
    idx->release_every = release_every;
}

static int lookup_in(CsIndex *idx, MDB_txn *txn, MDB_dbi dbi, const CsChunkId *id,
                     CsChunkLoc *ret)
{
    touched(idx);
    MDB_val k = mdb_val(id->bytes, CS_CHUNK_ID_SIZE), v;
    int rc = mdb_get(txn, dbi, &k, &v);
    if (rc)
        return errno_from_mdb(rc);
    return ret ? cs_loc_decode(v.mv_data, v.mv_size, ret) : 0;
}

int cs_index_lookup(CsIndex *idx, const CsChunkId *id, CsChunkLoc *ret)
{
    _cleanup_(mdb_txn_abortp) MDB_txn *txn = NULL;
    int r = txn_begin(idx, MDB_RDONLY, &txn);
    if (r < 0)
        return r;
    return lookup_in(idx, txn, idx->chunks, id, ret);
}

int cs_index_reader_begin(CsIndex *idx, CsIndexReader **ret)
{
    _cleanup_free_ CsIndexReader *rd = calloc(1, sizeof(*rd));
    if (!rd)
        return -ENOMEM;
    int r = txn_begin(idx, MDB_RDONLY, &rd->txn);
    if (r < 0)
        return r;
    rd->idx = idx;
    *ret = TAKE_PTR(rd);
    return 0;
}

/* A paused reader takes a fresh snapshot when it is used again. */
static int reader_resume(CsIndexReader *rd)
{
    return rd->is_paused ? cs_index_reader_refresh(rd) : 0;
}

int cs_index_reader_lookup(CsIndexReader *rd, const CsChunkId *id, CsChunkLoc *ret)
{
    int r = reader_resume(rd);
    if (r < 0)
        return r;
    return lookup_in(rd->idx, rd->txn, rd->idx->chunks, id, ret);
}

void cs_index_reader_pause(CsIndexReader *rd)
{
    if (!rd->is_paused && rd->txn)
        mdb_txn_reset(rd->txn);
    rd->is_paused = true;
}

int cs_index_reader_refresh(CsIndexReader *rd)
{
    cs_index_reader_pause(rd);
    int rc = rd->txn ? mdb_txn_renew(rd->txn) : MDB_MAP_RESIZED;
    if (rc == MDB_MAP_RESIZED) {
        if (rd->txn)
            mdb_txn_abort(rd->txn);
        rd->txn = NULL;
        int r = txn_begin(rd->idx, MDB_RDONLY, &rd->txn);
        rd->is_paused = r < 0;
        return r;
    }
    rd->is_paused = rc != 0;
    return errno_from_mdb(rc);
}

CsIndexReader *cs_index_reader_end(CsIndexReader *rd)
{
    if (rd) {
        if (rd->txn)
            mdb_txn_abort(rd->txn);
        free(rd);
    }
    return NULL;
}

int cs_index_reader_lookup_page(CsIndexReader *rd, const CsChunkId *id, CsPageAlias *ret)
{
    if (!rd->idx->has_pages)
        return -ENOENT;
    int r = reader_resume(rd);
    if (r < 0)
        return r;
    touched(rd->idx);
    MDB_val k = mdb_val(id->bytes, CS_CHUNK_ID_SIZE), v;
    int rc = mdb_get(rd->txn, rd->idx->pages, &k, &v);
    if (rc)
        return errno_from_mdb(rc);
    if (v.mv_size != PAGE_ROW_SIZE)
        return -ENOENT;
    ret->page = *id;
    ret->in = cs_slice_decode(v.mv_data, true);
    memcpy(ret->tag, (const uint8_t *)v.mv_data + CS_SLICE_SIZE, CS_PAGE_ROW_TAG_SIZE);
    return 0;
}

#define FILE_STAMP_SIZE 56

static void file_stamp_encode(const CsFileStamp *s, uint8_t out[FILE_STAMP_SIZE])
{
    put_le64(out, s->generation);
    put_le64(out + 8, s->ino);
    put_le64(out + 16, (uint64_t)s->ctime_sec);
    put_le32(out + 24, s->ctime_nsec);
    put_le64(out + 28, (uint64_t)s->mtime_sec);
    put_le32(out + 36, s->mtime_nsec);
    put_le64(out + 40, s->size);
    put_le64(out + 48, s->content_hash);
}

int cs_index_reader_lookup_file(CsIndexReader *rd, const CsFileKey *key, CsFileStamp *ret)
{
    if (!rd->idx->has_files)
        return -ENOENT;
    int r = reader_resume(rd);
    if (r < 0)
        return r;
    MDB_val k = mdb_val(key->bytes, sizeof(key->bytes)), v;
    int rc = mdb_get(rd->txn, rd->idx->files, &k, &v);
    if (rc)
        return errno_from_mdb(rc);
    if (v.mv_size != FILE_STAMP_SIZE)
        return -ENOENT; /* not a record this build wrote: a cache miss */
    const uint8_t *p = v.mv_data;
    *ret = (CsFileStamp){ .generation = get_le64(p),
                          .ino = get_le64(p + 8),
                          .ctime_sec = (int64_t)get_le64(p + 16),
                          .ctime_nsec = get_le32(p + 24),
                          .mtime_sec = (int64_t)get_le64(p + 28),
                          .mtime_nsec = get_le32(p + 36),
                          .size = get_le64(p + 40),
                          .content_hash = get_le64(p + 48) };
    return 0;
}

int cs_index_put_files(CsIndex *idx, const CsFileKey *keys, const CsFileStamp *stamps, size_t n)
{
    if (idx->read_only)
        return -EROFS;
    _cleanup_(mdb_txn_abortp) MDB_txn *txn = NULL;
    int r = txn_begin(idx, 0, &txn);
    if (r < 0)
        return r;
    for (size_t i = 0; i < n; i++) {
        uint8_t val[FILE_STAMP_SIZE];
        file_stamp_encode(&stamps[i], val);
        MDB_val k = mdb_val(keys[i].bytes, sizeof(keys[i].bytes)), v = mdb_val(val, sizeof(val));
        int rc = mdb_put(txn, idx->files, &k, &v, 0);
        if (rc)
            return errno_from_mdb(rc);
    }
    return txn_commit(idx, TAKE_PTR(txn));
}

int cs_index_forget_files(CsIndex *idx, const uint8_t source[8], uint64_t keep)
{
    if (idx->read_only)
        return -EROFS;
    _cleanup_(mdb_txn_abortp) MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    int r = txn_begin(idx, 0, &txn);
    if (r < 0)
        return r;
    int rc = mdb_cursor_open(txn, idx->files, &cur);
    if (rc)
        return errno_from_mdb(rc);
    uint8_t first[sizeof(((CsFileKey *)0)->bytes)] = { 0 };
    memcpy(first, source, 8);
    MDB_val k = mdb_val(first, sizeof(first)), v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
         rc == 0 && k.mv_size >= 8 && memcmp(k.mv_data, source, 8) == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (v.mv_size == FILE_STAMP_SIZE && get_le64(v.mv_data) == keep)
            continue;
        if ((rc = mdb_cursor_del(cur, 0)))
            break;
    }
    mdb_cursor_close(cur);
    if (rc && rc != MDB_NOTFOUND)
        return errno_from_mdb(rc);
    return txn_commit(idx, TAKE_PTR(txn));
}

/* One key of a batch of inserts: its first 8 bytes as a big-endian number, which orders ids
 * as memcmp does but compares in one instruction, and its place in the caller's array. */
typedef struct SortedKey {
    uint64_t prefix;
    const uint8_t *key; /* CS_CHUNK_ID_SIZE bytes */
    size_t i;
} SortedKey;

/* By key, then by position: of two entries for one id, the first given is inserted first, and
 * so is the one kept. */
static int sorted_key_cmp(const void *a, const void *b)
{
    const SortedKey *x = a, *y = b;
    if (x->prefix != y->prefix)
        return x->prefix < y->prefix ? -1 : 1;
    int c = memcmp(x->key, y->key, CS_CHUNK_ID_SIZE);
    return c ? c : (x->i > y->i) - (x->i < y->i);
}

/*
 * Insert n keys, keeping what the database already holds for a key (MDB_NOOVERWRITE). Ids are
 * random, so inserting in the order given touches the tree's pages at random; in key order each
 * insert lands next to the one before, and the keys past the database's last one (all of them,
 * in a new repository) are appended without a search. value(i, out) encodes the value of key i
 * into out (value_len bytes).
 */
static int put_all_sorted(CsIndex *idx, MDB_txn *txn, MDB_dbi dbi, const uint8_t *first_key, size_t stride,
                          size_t n, size_t value_len,
                          void (*value)(const void *ctx, size_t i, uint8_t *out),
                          const void *ctx)
{
    if (n == 0)
        return 0;
    _cleanup_free_ SortedKey *v = malloc(n * sizeof(*v));
    if (!v)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *key = first_key + i * stride;
        v[i] = (SortedKey){ .prefix = get_be64(key), .key = key, .i = i };
    }
    qsort(v, n, sizeof(*v), sorted_key_cmp);

    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc)
        return errno_from_mdb(rc);
    uint8_t last[CS_CHUNK_ID_SIZE];
    MDB_val k, d;
    rc = mdb_cursor_get(cur, &k, &d, MDB_LAST);
    bool is_empty = rc == MDB_NOTFOUND;
    if (rc == 0 && k.mv_size == CS_CHUNK_ID_SIZE)
        memcpy(last, k.mv_data, CS_CHUNK_ID_SIZE);
    else if (rc == 0)
        memset(last, 0xff, sizeof(last)); /* not an id: never append */
    else if (!is_empty) {
        mdb_cursor_close(cur);
        return errno_from_mdb(rc);
    }
    uint8_t val[64];
    assert(value_len <= sizeof(val));
    for (size_t j = 0; j < n; j++) {
        touched(idx);
        value(ctx, v[j].i, val);
        k = mdb_val(v[j].key, CS_CHUNK_ID_SIZE);
        d = mdb_val(val, value_len);
        bool is_past_end = is_empty || memcmp(v[j].key, last, CS_CHUNK_ID_SIZE) > 0;
        rc = mdb_cursor_put(cur, &k, &d, is_past_end ? MDB_APPEND : MDB_NOOVERWRITE);
        if (rc == MDB_KEYEXIST) { /* also MDB_APPEND: the same key twice in a row */
            /* A row of an earlier layout (an untagged page row) gives way. */
            MDB_val held;
            rc = mdb_get(txn, dbi, &k, &held);
            if (rc == 0 && held.mv_size != value_len) {
                d = mdb_val(val, value_len);
                rc = mdb_put(txn, dbi, &k, &d, 0);
            }
        }
        if (rc)
            break;
    }
    mdb_cursor_close(cur);
    return errno_from_mdb(rc);
}

static void page_value(const void *ctx, size_t i, uint8_t *out)
{
    const CsPageAlias *a = &((const CsPageAlias *)ctx)[i];
    cs_slices_encode(out, &a->in, 1, true);
    memcpy(out + CS_SLICE_SIZE, a->tag, CS_PAGE_ROW_TAG_SIZE);
}

static void loc_value(const void *ctx, size_t i, uint8_t *out)
{
    cs_loc_encode(&((const CsPackEntry *)ctx)[i].loc, out);
}

/* Rows written per write transaction when a pack is published. Ids are random, so every row
 * lands on its own leaf page once the index is large, and LMDB holds each page a transaction
 * changes in memory until the commit: one transaction for a pack of 100,000 pages made a
 * backup's memory grow with the index (the whole chunks table was dirty at once). Smaller
 * transactions write some leaf pages more than once; the bound keeps memory flat. */
#define PUBLISH_ROWS_PER_TXN 8192

/* The pages' rows [*page_i, ...) then the chunks' rows [*chunk_i, ...), at most
 * PUBLISH_ROWS_PER_TXN of them in one transaction, and the pack's row in the transaction that
 * writes the last: until it is there the pack counts as not indexed, and a sync after a crash
 * indexes it again. */
static int publish_part(CsIndex *idx, const CsPackId *pack, uint64_t pack_size,
                        const CsPackEntry *entries, size_t n, size_t *chunk_i,
                        const CsPageAlias *pages, size_t n_pages, size_t *page_i)
{
    _cleanup_(mdb_txn_abortp) MDB_txn *txn = NULL;
    int r = txn_begin(idx, 0, &txn);
    if (r < 0)
        return r;
    size_t room = PUBLISH_ROWS_PER_TXN;
    size_t k = MIN(room, n_pages - *page_i);
    if (k && (r = put_all_sorted(idx, txn, idx->pages, pages[*page_i].page.bytes, sizeof(*pages),
                                 k, PAGE_ROW_SIZE, page_value, pages + *page_i)) < 0)
        return r;
    *page_i += k;
    room -= k;
    k = MIN(room, n - *chunk_i);
    if (k && (r = put_all_sorted(idx, txn, idx->chunks, entries[*chunk_i].id.bytes,
                                 sizeof(*entries), k, CS_LOC_SIZE, loc_value,
                                 entries + *chunk_i)) < 0)
        return r;
    *chunk_i += k;
    if (*page_i == n_pages && *chunk_i == n) {
        uint8_t pv[12];
        put_le64(pv, pack_size);
        put_le32(pv + 8, (uint32_t)n);
        MDB_val key = mdb_val(pack->bytes, CS_PACK_ID_SIZE), v = mdb_val(pv, sizeof(pv));
        int rc = mdb_put(txn, idx->packs, &key, &v, 0);
        if (rc)
            return errno_from_mdb(rc);
    }
    if ((r = txn_commit(idx, TAKE_PTR(txn))) < 0)
        return r;
    cs_index_release_memory(idx);
    return 0;
}

int cs_index_publish_pack(CsIndex *idx, const CsPackId *pack, uint64_t pack_size,
                          const CsPackEntry *entries, size_t n)
{
    return cs_index_publish_pack_pages(idx, pack, pack_size, entries, n, NULL, 0);
}

int cs_index_publish_pack_pages(CsIndex *idx, const CsPackId *pack, uint64_t pack_size,
                                const CsPackEntry *entries, size_t n, const CsPageAlias *pages,
                                size_t n_pages)
{
    if (idx->read_only)
        return -EROFS;
    size_t chunk_i = 0, page_i = 0;
    do {
        int r = publish_part(idx, pack, pack_size, entries, n, &chunk_i, pages, n_pages, &page_i);
        if (r < 0)
            return r;
    } while (chunk_i < n || page_i < n_pages);
    return 0;
}

void cs_index_release_memory(CsIndex *idx)
{
    MDB_envinfo info;
    if (!idx->map_addr || mdb_env_info(idx->env, &info) != 0)
        return;
    /* The map is a read-only shared file mapping: dropping pages from this process loses
     * nothing, the next access faults them back in from the page cache. */
    size_t used = (size_t)(info.me_last_pgno + 1) * (size_t)sysconf(_SC_PAGESIZE);
    madvise(idx->map_addr, MIN(used, idx->map_len), MADV_DONTNEED);
}

int cs_index_pack_count(CsIndex *idx, uint64_t *ret)
{
    _cleanup_(mdb_txn_abortp) MDB_txn *txn = NULL;
    MDB_stat st;
    int r = txn_begin(idx, MDB_RDONLY, &txn);
    if (r < 0)
        return r;
    if ((r = errno_from_mdb(mdb_stat(txn, idx->packs, &st))) < 0)
        return r;
    *ret = st.ms_entries;
    return 0;
}

int cs_index_has_pack(CsIndex *idx, const CsPackId *pack)
{
    _cleanup_(mdb_txn_abortp) MDB_txn *txn = NULL;
    int r = txn_begin(idx, MDB_RDONLY, &txn);
    if (r < 0)
        return r;
    MDB_val k = mdb_val(pack->bytes, CS_PACK_ID_SIZE), v;
    int rc = mdb_get(txn, idx->packs, &k, &v);
    if (rc == MDB_NOTFOUND)
        return 0;
    return rc ? errno_from_mdb(rc) : 1;
}

int cs_index_drop_pack(CsIndex *idx, const CsPackId *pack)
{
    _cleanup_(mdb_txn_abortp) MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    int r = txn_begin(idx, 0, &txn);
    if (r < 0)
        return r;
    int rc = mdb_cursor_open(txn, idx->chunks, &cur);
    if (rc)
        return errno_from_mdb(rc);
    MDB_val k, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (v.mv_size == CS_LOC_SIZE && memcmp(v.mv_data, pack->bytes, CS_PACK_ID_SIZE) == 0)
            if ((rc = mdb_cursor_del(cur, 0)))
                break;
    }
    mdb_cursor_close(cur);
    if (rc && rc != MDB_NOTFOUND)
        return errno_from_mdb(rc);
    k = mdb_val(pack->bytes, CS_PACK_ID_SIZE);
    rc = mdb_del(txn, idx->packs, &k, NULL);
    if (rc && rc != MDB_NOTFOUND)
        return errno_from_mdb(rc);
    return txn_commit(idx, TAKE_PTR(txn));
}

static int foreach(CsIndex *idx, MDB_dbi dbi, int (*fn)(const MDB_val *, const MDB_val *, void *),
                   void *userdata)
{
    _cleanup_(mdb_txn_abortp) MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    int r = txn_begin(idx, MDB_RDONLY, &txn);
    if (r < 0)
        return r;
    int rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc)
        return errno_from_mdb(rc);
    MDB_val k, v;
    r = 0;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && r == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
        r = fn(&k, &v, userdata);
    mdb_cursor_close(cur);
    if (r)
        return r;
    return rc == MDB_NOTFOUND ? 0 : errno_from_mdb(rc);
}

typedef struct ForeachCtx {
    CsIndexChunkFn chunk_fn;
    CsIndexPackFn pack_fn;
    void *userdata;
    CsIndexStats *stats;
} ForeachCtx;

static int chunk_visit(const MDB_val *k, const MDB_val *v, void *userdata)
{
    ForeachCtx *ctx = userdata;
    CsChunkId id;
    CsChunkLoc loc;
    if (k->mv_size != CS_CHUNK_ID_SIZE || cs_loc_decode(v->mv_data, v->mv_size, &loc) < 0)
        return -EBADMSG;
    memcpy(id.bytes, k->mv_data, CS_CHUNK_ID_SIZE);
    if (ctx->stats) {
        ctx->stats->chunks++;
        ctx->stats->chunk_bytes += loc.length;
        return 0;
    }
    return ctx->chunk_fn(&id, &loc, ctx->userdata);
}

static int pack_visit(const MDB_val *k, const MDB_val *v, void *userdata)
{
    ForeachCtx *ctx = userdata;
    CsPackId id;
    if (k->mv_size != CS_PACK_ID_SIZE || v->mv_size != 12)
        return -EBADMSG;
    memcpy(id.bytes, k->mv_data, CS_PACK_ID_SIZE);
    uint64_t size = get_le64(v->mv_data);
    if (ctx->stats) {
        ctx->stats->packs++;
        ctx->stats->pack_bytes += size;
        return 0;
    }
    return ctx->pack_fn(&id, size, ctx->userdata);
}

int cs_index_foreach_chunk(CsIndex *idx, CsIndexChunkFn fn, void *userdata)
{
    ForeachCtx ctx = { .chunk_fn = fn, .userdata = userdata };
    return foreach(idx, idx->chunks, chunk_visit, &ctx);
}

int cs_index_foreach_pack(CsIndex *idx, CsIndexPackFn fn, void *userdata)
{
    ForeachCtx ctx = { .pack_fn = fn, .userdata = userdata };
    return foreach(idx, idx->packs, pack_visit, &ctx);
}

int cs_index_stats(CsIndex *idx, CsIndexStats *ret)
{
    CsIndexStats s = { 0 };
    ForeachCtx ctx = { .stats = &s };
    int r = foreach(idx, idx->chunks, chunk_visit, &ctx);
    if (r == 0)
        r = foreach(idx, idx->packs, pack_visit, &ctx);
    if (r == 0)
        *ret = s;
    return r;
}
