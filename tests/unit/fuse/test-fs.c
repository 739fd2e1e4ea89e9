/*
 * The mount's logic without a mount (fuse/pfs, dir, file, inode, view, reader-pool, prefetch):
 * snapshot names in /snapshots and /streams, the inode table's numbers and lifetimes, and a real
 * repository served through lookup/readdir(plus)/open/read exactly as fs.c's adapters drive it:
 * contents and metadata equal to the source, concurrent random reads, EROFS for writes, lookup
 * counts that return to zero, a snapshot added while "mounted", and what the mount makes up:
 * a cluster snapshot's startable pgdata/ (pg_wal/, tablespaces in place, recovery settings) and
 * /wal. Trees kept whole: hard links are one node per snapshot (number, link count), stored
 * attributes and ACLs through getxattr/listxattr, and sparse files' blocks and SEEK_DATA/HOLE.
 */
#include "tests/unit/harness.h"
#include "tests/unit/test-wal-object.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "fuse/chunk-cache.c"
#include "fuse/dir.c"
#include "fuse/file.c"
#include "fuse/inode.c"
#include "fuse/pfs.c"
#include "fuse/pgdata.c"
#include "fuse/prefetch.c"
#include "fuse/reader-pool.c"
#include "fuse/view.c"
#include "fuse/wal-dir.c"

#include "chunkstore/catalog.h"
#include "chunkstore/store.h"
#include "chunkstore/tree.h"
#include "chunkstore/wal-object.h"
#include "common/fs-util.h"

#define PASSPHRASE "fuse test passphrase"

/* ---- view ---- */

static void test_display_names(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } cases[] = {
        { "nightly", "nightly" },   { "/srv/pg/data", "srv_pg_data" }, { "a/b/", "a_b" },
        { "latest", NULL },         { ".", NULL },                     { "..", NULL },
        { "", NULL },               { "///", NULL },                   { "/latest", NULL },
        { "x y", "x y" },
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        char *d = pfs_view_display_name(cases[i].in);
        if (!cases[i].out)
            assert_null(d);
        else
            assert_string_equal(d, cases[i].out);
        free(d);
    }
    char long_name[300];
    memset(long_name, 'x', sizeof(long_name) - 1);
    long_name[299] = 0;
    assert_null(pfs_view_display_name(long_name));
}

static CsSnapshot snap(const char *id, const char *name, const char *kind, int64_t t)
{
    CsSnapshot s = { .time = t };
    snprintf(s.id, sizeof(s.id), "%s", id);
    s.name = strdup(name);
    s.kind = strdup(kind);
    s.hostname = strdup("h");
    s.meta = json_object();
    return s;
}

static void test_view_build(void **state)
{
    (void)state;
    CsSnapshot *v = calloc(8, sizeof(*v));
    v[0] = snap("000000000000000a", "x", "tree", 1);
    v[1] = snap("000000000000000b", "/data/x", "tree", 2);
    v[2] = snap("000000000000000c", "x", "tree", 3); /* newest "x" wins */
    v[3] = snap("000000000000000d", "000000000000000a", "tree", 4); /* an id: not shown */
    v[4] = snap("000000000000000e", "dump", "stream", 5);
    v[5] = snap("000000000000000f", "dump", "stream", 6);
    v[6] = snap("0000000000000010", "c1", "cluster", 7); /* a directory root: shown */
    v[7] = snap("0000000000000011", "o1", "other", 8);   /* unknown kinds: not shown */
    PfsView *view;
    ASSERT_OK(pfs_view_build(v, 8, &view));
    /* ids a-d and 10, "x", "data_x", "c1", "latest" */
    assert_int_equal(view->n_trees, 9);
    const PfsViewEntry *e = pfs_view_find(view->trees, view->n_trees, "x");
    assert_non_null(e);
    assert_int_equal(e->kind, PFS_VIEW_LINK);
    assert_string_equal(e->snap->id, "000000000000000c");
    e = pfs_view_find(view->trees, view->n_trees, "data_x");
    assert_non_null(e);
    assert_string_equal(e->snap->id, "000000000000000b");
    e = pfs_view_find(view->trees, view->n_trees, "latest");
    assert_non_null(e);
    assert_string_equal(e->snap->id, "0000000000000010");
    e = pfs_view_find(view->trees, view->n_trees, "000000000000000a");
    assert_non_null(e);
    assert_int_equal(e->kind, PFS_VIEW_TREE);
    e = pfs_view_find(view->trees, view->n_trees, "c1");
    assert_non_null(e);
    assert_string_equal(e->snap->id, "0000000000000010");
    assert_null(pfs_view_find(view->trees, view->n_trees, "o1"));
    assert_null(pfs_view_find(view->trees, view->n_trees, "0000000000000011"));
    for (size_t i = 1; i < view->n_trees; i++)
        assert_true(strcmp(view->trees[i - 1].name, view->trees[i].name) < 0);
    /* ids e, f and "dump" (the newer) */
    assert_int_equal(view->n_streams, 3);
    e = pfs_view_find(view->streams, view->n_streams, "dump");
    assert_non_null(e);
    assert_string_equal(e->snap->id, "000000000000000f");
    assert_string_equal(view->newest_stream->id, "000000000000000f");
    assert_string_equal(view->newest_tree->id, "0000000000000010");
    pfs_view_unref(view);
}

/* ---- inode table ---- */

static CsDirEntry entry(const char *name, uint8_t type, const char *target)
{
    return (CsDirEntry){ .type = type,
                         .mode = type == CS_ENTRY_DIR ? S_IFDIR | 0755 : S_IFREG | 0644,
                         .name = (char *)(uintptr_t)name,
                         .target = (char *)(uintptr_t)target };
}

static void test_inode_numbers_and_lifetime(void **state)
{
    (void)state;
    PfsInodeTable *t;
    ASSERT_OK(pfs_inode_table_new(NULL, &t));
    const size_t fixed = 5; /* /, snapshots, streams, wal, stats */
    assert_int_equal(pfs_inode_count(t), fixed);
    PfsNode *snaps, *dir, *file, *again;
    ASSERT_OK(pfs_inode_get(t, PFS_INO_SNAPSHOTS, &snaps));
    CsDirEntry de = entry("0123456789abcdef", CS_ENTRY_DIR, NULL);
    ASSERT_OK(pfs_inode_child(t, snaps, &de, PFS_SRC_STORED, false, true, &dir));
    assert_true(dir->is_volatile);
    assert_true(dir->ino >= PFS_INO_FIRST_DYNAMIC);
    assert_int_equal(dir->ino, pfs_inode_number(snaps, &de, PFS_SRC_STORED));
    CsDirEntry fe = entry("file", CS_ENTRY_FILE, NULL);
    ASSERT_OK(pfs_inode_child(t, dir, &fe, PFS_SRC_STORED, false, true, &file));
    assert_false(file->is_volatile);
    uint64_t dir_ino = dir->ino, file_ino = file->ino;
    char *path = pfs_node_path(file);
    assert_string_equal(path, "/snapshots/0123456789abcdef/file");
    free(path);
    /* Looking up the same name gives the same node. */
    ASSERT_OK(pfs_inode_child(t, dir, &fe, PFS_SRC_STORED, false, true, &again));
    assert_ptr_equal(again, file);
    pfs_inode_unref(t, again);
    pfs_inode_unref(t, file);
    pfs_inode_unref(t, dir);
    assert_int_equal(pfs_inode_count(t), fixed + 2);
    /* The kernel forgets the directory first: the file keeps it alive. */
    pfs_inode_forget(t, dir_ino, 1);
    assert_int_equal(pfs_inode_count(t), fixed + 2);
    pfs_inode_forget(t, file_ino, 2);
    assert_int_equal(pfs_inode_count(t), fixed);
    PfsNode *gone;
    ASSERT_ERR(ESTALE, pfs_inode_get(t, file_ino, &gone));
    /* Looked up again later: the same numbers. */
    ASSERT_OK(pfs_inode_child(t, snaps, &de, PFS_SRC_STORED, false, true, &dir));
    ASSERT_OK(pfs_inode_child(t, dir, &fe, PFS_SRC_STORED, false, false, &file));
    assert_int_equal(dir->ino, dir_ino);
    assert_int_equal(file->ino, file_ino);
    /* Symlinks of one name and different targets are different nodes. */
    CsDirEntry l1 = entry("name", CS_ENTRY_SYMLINK, "aaaa");
    CsDirEntry l2 = entry("name", CS_ENTRY_SYMLINK, "bbbb");
    PfsNode *n1, *n2;
    ASSERT_OK(pfs_inode_child(t, snaps, &l1, PFS_SRC_STORED, false, true, &n1));
    ASSERT_OK(pfs_inode_child(t, snaps, &l2, PFS_SRC_STORED, false, true, &n2));
    assert_true(n1 != n2 && n1->ino != n2->ino);
    pfs_inode_unref(t, n1);
    pfs_inode_unref(t, n2);
    pfs_inode_unref(t, file); /* no lookup counted: gone with its last reference */
    assert_int_equal(pfs_inode_count(t), fixed + 3);
    pfs_inode_unref(t, dir);
    pfs_inode_unref(t, snaps);
    pfs_inode_table_free(t); /* frees what is left, children first */
}

/* ---- a real repository through the mount's entry points ---- */

typedef struct Fixture {
    char *base, *location, *src;
    CsKeySource key;
    CsRepo *repo;
    char tree_id[32], stream_id[32];
    uint8_t *stream;
    size_t stream_len;
    PfsFs *fs;
} Fixture;

static void write_random(const char *root, const char *rel, size_t n, mode_t mode)
{
    _cleanup_free_ char *path = path_join(root, rel);
    uint8_t *p = test_xmalloc(n);
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(rand() >> 7);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    ASSERT_OK(write_all(fd, p, n));
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
    free(p);
}

static void add_snapshot(Fixture *f, const char *kind, const char *name, const char *path,
                         char *ret_id)
{
    CsWriter *w;
    ASSERT_OK(cs_writer_new(f->repo, NULL, &w));
    CsSnapshot s = { .kind = strdup(kind), .name = strdup(name) };
    if (path) {
        CsTreeRootAttr ra;
        ASSERT_OK(cs_tree_root_attr(path, &ra));
        ASSERT_OK(cs_tree_store(w, path, NULL, &s.root, NULL));
        s.meta = json_pack("{s:{s:I, s:I, s:I, s:I, s:I}}", "root_attr", "mode",
                           (json_int_t)ra.mode, "uid", (json_int_t)ra.uid, "gid",
                           (json_int_t)ra.gid, "mtime", (json_int_t)ra.mtime_sec, "mtime_nsec",
                           (json_int_t)ra.mtime_nsec);
    } else {
        ASSERT_OK(cs_writer_put_buf(w, f->stream, f->stream_len, CS_CHUNKING_CDC, &s.root));
        s.meta = json_object();
    }
    ASSERT_OK(cs_writer_flush(w));
    cs_writer_free(w);
    ASSERT_OK(cs_catalog_add(f->repo, &s));
    strcpy(ret_id, s.id);
    cs_snapshot_clear(&s);
}

static int setup(void **state)
{
    Fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    srand(42);
    f->base = test_mkdtemp("fs");
    f->location = path_join(f->base, "repo");
    f->src = path_join(f->base, "src");
    f->key = (CsKeySource){ .passphrase = PASSPHRASE, .passphrase_len = strlen(PASSPHRASE) };
    CsInitParams params = { .scrypt_n = 1024 };
    ASSERT_OK(cs_repo_init(f->location, &params, &f->key));
    /* Writable: the test stores snapshots; the mount side only reads through it. */
    ASSERT_OK(cs_repo_open(f->location, NULL, &f->key, &f->repo));

    assert_int_equal(mkdir(f->src, 0750), 0);
    _cleanup_free_ char *sub = path_join(f->src, "sub");
    assert_int_equal(mkdir(sub, 0700), 0);
    write_random(f->src, "big", 3 * 1024 * 1024 + 17, 0640);
    write_random(f->src, "sub/small", 100, 0600);
    write_random(f->src, "empty", 0, 0644);
    _cleanup_free_ char *link = path_join(f->src, "link");
    assert_int_equal(symlink("sub/small", link), 0);
    f->stream_len = 700 * 1024 + 3;
    f->stream = malloc(f->stream_len);
    for (size_t i = 0; i < f->stream_len; i++)
        f->stream[i] = (uint8_t)(rand() >> 5);
    add_snapshot(f, "tree", "/my/tree", f->src, f->tree_id);
    add_snapshot(f, "stream", "dump", NULL, f->stream_id);

    PfsParams p = { .cache_bytes = 1 << 20, /* small: eviction on the way */
                    .readahead_bytes = 1 << 20,
                    .prefetch_threads = 2,
                    .uid = 1,
                    .gid = 2,
                    .timeout = 100,
                    .volatile_timeout = 1,
                    .catalog_max_age_ms = 60000 };
    ASSERT_OK(pfs_fs_new(f->repo, &p, &f->fs));
    ASSERT_OK(pfs_fs_start(f->fs));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    Fixture *f = *state;
    pfs_fs_free(f->fs);
    cs_repo_close(f->repo);
    test_rm_rf(f->base);
    free(f->stream);
    free(f->location);
    free(f->src);
    free(f->base);
    free(f);
    return 0;
}

/* Look a path up from the root, counting lookups; returns the attributes of the last part. */
static int walk(PfsFs *fs, const char *path, PfsAttr *ret)
{
    uint64_t ino = PFS_INO_ROOT;
    _cleanup_free_ char *copy = strdup(path);
    char *save = NULL;
    for (char *part = strtok_r(copy, "/", &save); part; part = strtok_r(NULL, "/", &save)) {
        int r = pfs_dir_lookup(fs, ino, part, ret);
        if (r < 0)
            return r;
        ino = ret->ino;
    }
    return 0;
}

static void read_all(PfsFs *fs, uint64_t ino, size_t chunk, uint8_t **ret, size_t *ret_n)
{
    PfsFile *file;
    ASSERT_OK(pfs_file_open(fs, ino, O_RDONLY, &file));
    size_t n = 0, cap = 1 << 20;
    uint8_t *out = malloc(cap);
    for (;;) {
        PfsReadReply rr;
        long got = pfs_file_read(fs, file, chunk, n, &rr);
        assert_true(got >= 0);
        if (got == 0)
            break;
        if (n + (size_t)got > cap)
            out = realloc(out, cap = 2 * (n + (size_t)got));
        for (size_t i = 0; i < rr.n; i++) {
            memcpy(out + n, rr.iov[i].iov_base, rr.iov[i].iov_len);
            n += rr.iov[i].iov_len;
        }
        assert_int_equal(rr.bytes, (size_t)got);
        pfs_read_reply_done(fs, &rr);
    }
    pfs_file_release(fs, file);
    *ret = out;
    *ret_n = n;
}

static void assert_same_as_file(PfsFs *fs, uint64_t ino, const char *path, size_t chunk)
{
    _cleanup_free_ char *want = NULL;
    size_t want_n;
    ASSERT_OK(read_file(path, 1 << 30, &want, &want_n));
    _cleanup_free_ uint8_t *got = NULL;
    size_t got_n;
    read_all(fs, ino, chunk, &got, &got_n);
    assert_int_equal(got_n, want_n);
    assert_memory_equal(got, want, want_n);
}

typedef struct Names {
    char names[16][64];
    uint64_t inos[16];
    int n, stop_after;
    bool plus;
} Names;

static int collect(void *ctx, const PfsDirent *d)
{
    Names *c = ctx;
    if (c->n == c->stop_after)
        return 1;
    snprintf(c->names[c->n], sizeof(c->names[0]), "%s", d->name);
    c->inos[c->n] = d->attr ? d->attr->ino : 0;
    assert_true(!c->plus || d->attr || d->name[0] == '.');
    c->n++;
    return 0;
}

static void test_tree_through_the_mount(void **state)
{
    Fixture *f = *state;
    PfsFs *fs = f->fs;
    PfsAttr a;
    char path[256];

    /* /snapshots/<name> is a symlink to the id; the id is the stored root directory. */
    ASSERT_OK(walk(fs, "snapshots/my_tree", &a));
    assert_true(S_ISLNK(a.st.st_mode));
    assert_int_equal(a.entry_timeout, 1);
    _cleanup_free_ char *target = NULL;
    ASSERT_OK(pfs_fs_readlink(fs, a.ino, &target));
    assert_string_equal(target, f->tree_id);
    snprintf(path, sizeof(path), "snapshots/%s", f->tree_id);
    ASSERT_OK(walk(fs, path, &a));
    struct stat st;
    assert_int_equal(lstat(f->src, &st), 0);
    assert_int_equal(a.st.st_mode, st.st_mode);
    assert_int_equal(a.st.st_mtim.tv_nsec, st.st_mtim.tv_nsec);
    ASSERT_OK(walk(fs, "snapshots/latest", &a));
    assert_true(S_ISLNK(a.st.st_mode));

    /* Files: metadata and bytes, read in several request sizes. */
    static const char *const files[] = { "big", "sub/small", "empty" };
    for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
        snprintf(path, sizeof(path), "snapshots/%s/%s", f->tree_id, files[i]);
        ASSERT_OK(walk(fs, path, &a));
        _cleanup_free_ char *src = path_join(f->src, files[i]);
        assert_int_equal(lstat(src, &st), 0);
        assert_int_equal(a.st.st_mode, st.st_mode);
        assert_int_equal(a.st.st_size, st.st_size);
        assert_int_equal(a.st.st_mtim.tv_sec, st.st_mtim.tv_sec);
        assert_int_equal(a.attr_timeout, 100);
        assert_same_as_file(fs, a.ino, src, 131072);
        assert_same_as_file(fs, a.ino, src, 1000003);
        assert_same_as_file(fs, a.ino, src, 4097);
    }
    snprintf(path, sizeof(path), "snapshots/%s/link", f->tree_id);
    ASSERT_OK(walk(fs, path, &a));
    _cleanup_free_ char *t2 = NULL;
    ASSERT_OK(pfs_fs_readlink(fs, a.ino, &t2));
    assert_string_equal(t2, "sub/small");
    PfsFile *file;
    ASSERT_ERR(EROFS, pfs_file_open(fs, a.ino, O_WRONLY, &file));
    snprintf(path, sizeof(path), "snapshots/%s/nope", f->tree_id);
    ASSERT_ERR(ENOENT, walk(fs, path, &a));
    assert_int_equal(a.entry_timeout, 100); /* absence in a snapshot may be cached */
    ASSERT_ERR(ENOENT, walk(fs, "snapshots/nope", &a));
    assert_int_equal(a.entry_timeout, 0); /* not in /snapshots: it may appear */

    /* Streams under id and name are one file. */
    PfsAttr s1, s2;
    ASSERT_OK(walk(fs, "streams/dump", &s1));
    snprintf(path, sizeof(path), "streams/%s", f->stream_id);
    ASSERT_OK(walk(fs, path, &s2));
    assert_int_equal(s1.ino, s2.ino);
    assert_int_equal(s1.st.st_mode, S_IFREG | 0400);
    assert_int_equal(s1.st.st_uid, 1);
    _cleanup_free_ uint8_t *got = NULL;
    size_t got_n;
    read_all(fs, s1.ino, 65536, &got, &got_n);
    assert_int_equal(got_n, f->stream_len);
    assert_memory_equal(got, f->stream, got_n);
}

static void test_readdir_and_lookup_counts(void **state)
{
    Fixture *f = *state;
    PfsFs *fs = f->fs;
    size_t base = pfs_inode_count(fs->inodes);
    PfsAttr a;
    char path[128];
    snprintf(path, sizeof(path), "snapshots/%s", f->tree_id);
    ASSERT_OK(walk(fs, path, &a)); /* counts /snapshots and the root dir once each */

    PfsDirHandle *dh;
    ASSERT_OK(pfs_dir_open(fs, a.ino, &dh));
    Names plain = { .stop_after = 16 };
    ASSERT_OK(pfs_dir_read(fs, dh, 0, false, collect, &plain));
    assert_int_equal(plain.n, 6);
    static const char *const want[] = { ".", "..", "big", "empty", "link", "sub" };
    for (int i = 0; i < 6; i++)
        assert_string_equal(plain.names[i], want[i]);
    /* readdirplus, two entries per reply: each entry handed out is counted once. */
    int pos = 0, total = 0;
    for (;;) {
        Names plus = { .stop_after = 2, .plus = true };
        ASSERT_OK(pfs_dir_read(fs, dh, pos, true, collect, &plus));
        if (plus.n == 0)
            break;
        for (int i = 0; i < plus.n; i++)
            if (plus.names[i][0] != '.') {
                pfs_fs_forget(fs, plus.inos[i], 1); /* what the kernel would do later */
                total++;
            }
        pos += plus.n;
    }
    assert_int_equal(total, 4);
    pfs_dir_release(fs, dh);

    /* /snapshots lists ids, names and latest; /streams ids and names. */
    ASSERT_OK(pfs_dir_open(fs, PFS_INO_SNAPSHOTS, &dh));
    Names snaps = { .stop_after = 16 };
    ASSERT_OK(pfs_dir_read(fs, dh, 2, false, collect, &snaps));
    assert_int_equal(snaps.n, 3);
    pfs_dir_release(fs, dh);

    /* Forget the walk: back to where we started. */
    pfs_fs_forget(fs, a.ino, 1);
    pfs_fs_forget(fs, PFS_INO_SNAPSHOTS, 1);
    assert_int_equal(pfs_inode_count(fs->inodes), base);
}

typedef struct RandomReads {
    Fixture *f;
    uint64_t ino;
    const uint8_t *want;
    size_t want_n;
    unsigned seed;
    int bad;
} RandomReads;

static void *random_reader(void *arg)
{
    RandomReads *rr = arg;
    PfsFs *fs = rr->f->fs;
    PfsFile *file;
    if (pfs_file_open(fs, rr->ino, O_RDONLY, &file) < 0) {
        rr->bad++;
        return NULL;
    }
    unsigned seed = rr->seed;
    for (int i = 0; i < 300; i++) {
        uint64_t off = (uint64_t)rand_r(&seed) % (rr->want_n + 4096);
        size_t n = 1 + (size_t)rand_r(&seed) % (1 << 18);
        PfsReadReply r;
        long got = pfs_file_read(fs, file, n, off, &r);
        size_t expect = off >= rr->want_n ? 0 : MIN(n, rr->want_n - off);
        if (got != (long)expect)
            rr->bad++;
        size_t at = 0;
        for (size_t k = 0; got > 0 && k < r.n; k++) {
            if (memcmp(r.iov[k].iov_base, rr->want + off + at, r.iov[k].iov_len) != 0)
                rr->bad++;
            at += r.iov[k].iov_len;
        }
        pfs_read_reply_done(fs, &r);
    }
    pfs_file_release(fs, file);
    return NULL;
}

static void test_concurrent_reads(void **state)
{
    Fixture *f = *state;
    PfsAttr a;
    char path[128];
    snprintf(path, sizeof(path), "snapshots/%s/big", f->tree_id);
    ASSERT_OK(walk(f->fs, path, &a));
    _cleanup_free_ char *src = path_join(f->src, "big");
    _cleanup_free_ char *want = NULL;
    size_t want_n;
    ASSERT_OK(read_file(src, 1 << 30, &want, &want_n));
    RandomReads r[6];
    pthread_t t[6];
    for (int i = 0; i < 6; i++) {
        r[i] = (RandomReads){ .f = f, .ino = a.ino, .want = (const uint8_t *)want,
                              .want_n = want_n, .seed = (unsigned)i + 1 };
        assert_int_equal(pthread_create(&t[i], NULL, random_reader, &r[i]), 0);
    }
    for (int i = 0; i < 6; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(r[i].bad, 0);
    }
    /* The bound holds once nothing is pinned: read-ahead still decoding pins its entries, so
     * let it finish (stopping the workers waits for the job in progress). */
    pfs_fs_stop(f->fs);
    PfsChunkCacheStats s;
    pfs_chunk_cache_stats(f->fs->cache, &s);
    assert_true(s.bytes <= (1 << 20) + (1 << 18));
}

/* Misses of the chunk cache while `fs` reads the file at `path` from start to end. */
static uint64_t misses_of_one_pass(PfsFs *fs, const char *path)
{
    PfsAttr a;
    ASSERT_OK(walk(fs, path, &a));
    PfsChunkCacheStats before, after;
    pfs_chunk_cache_stats(fs->cache, &before);
    _cleanup_free_ uint8_t *got = NULL;
    size_t got_n;
    read_all(fs, a.ino, 1 << 20, &got, &got_n);
    assert_int_equal(got_n, (size_t)a.st.st_size);
    pfs_chunk_cache_stats(fs->cache, &after);
    return after.misses - before.misses;
}

/* Through the page cache, a sequential reader's finished chunks are let go first (the kernel
 * has those bytes); under direct_io the chunk cache is the only cache and keeps them, so a file
 * smaller than the cache is read again without decoding. */
static void test_direct_io_keeps_read_chunks(void **state)
{
    Fixture *f = *state;
    char path[128];
    snprintf(path, sizeof(path), "snapshots/%s/big", f->tree_id);
    for (int direct = 0; direct <= 1; direct++) {
        PfsParams p = { .cache_bytes = 16 << 20, /* 5x the file; spent entries: 2 MiB of it */
                        .readahead_bytes = 1 << 20,
                        .prefetch_threads = 2,
                        .timeout = 100,
                        .volatile_timeout = 1,
                        .catalog_max_age_ms = 60000,
                        .direct_io = direct };
        PfsFs *fs;
        ASSERT_OK(pfs_fs_new(f->repo, &p, &fs));
        ASSERT_OK(pfs_fs_start(fs));
        PfsAttr a;
        ASSERT_OK(walk(fs, path, &a));
        assert_int_equal(a.st.st_blksize, direct ? PFS_DIRECT_IO_BLKSIZE : PFS_BLKSIZE);
        assert_true(misses_of_one_pass(fs, path) > 0);
        uint64_t again = misses_of_one_pass(fs, path);
        if (direct)
            assert_int_equal(again, 0);
        else
            assert_true(again > 0);
        pfs_fs_free(fs);
    }
}

/* /stats read in small pieces and parsed: its read_bytes counter. */
static json_int_t stats_read_bytes(PfsFs *fs)
{
    _cleanup_free_ uint8_t *text = NULL;
    size_t n;
    read_all(fs, PFS_INO_STATS, 100, &text, &n);
    assert_true(n > 0 && text[n - 1] == '\n');
    json_error_t err;
    json_t *o = json_loadb((const char *)text, n, 0, &err);
    assert_non_null(o);
    json_int_t bytes = -1, limit = -1;
    int is_direct = -1;
    assert_int_equal(json_unpack(o, "{s:I, s:{s:I}, s:b}", "read_bytes", &bytes, "chunk_cache",
                                 "limit", &limit, "direct_io", &is_direct),
                     0);
    json_decref(o);
    assert_int_equal(limit, 1 << 20);
    assert_false(is_direct);
    return bytes;
}

static void test_stats_file(void **state)
{
    Fixture *f = *state;
    PfsFs *fs = f->fs;
    PfsAttr a;
    ASSERT_OK(walk(fs, "stats", &a));
    assert_int_equal(a.ino, PFS_INO_STATS);
    assert_int_equal(a.st.st_mode, S_IFREG | 0444);
    assert_int_equal(a.st.st_size, 0);
    assert_int_equal(a.attr_timeout, 0);
    PfsDirHandle *dh;
    ASSERT_ERR(ENOTDIR, pfs_dir_open(fs, PFS_INO_STATS, &dh));
    ASSERT_ERR(ENOTDIR, pfs_dir_lookup(fs, PFS_INO_STATS, "x", &a));
    PfsFile *file;
    ASSERT_ERR(EROFS, pfs_file_open(fs, PFS_INO_STATS, O_WRONLY, &file));
    ASSERT_OK(pfs_dir_open(fs, PFS_INO_ROOT, &dh));
    Names names = { .stop_after = 16 };
    ASSERT_OK(pfs_dir_read(fs, dh, 2, false, collect, &names));
    pfs_dir_release(fs, dh);
    assert_int_equal(names.n, 4);
    assert_string_equal(names.names[3], "stats");

    /* The counters are the mount's own, as they are at each open. */
    json_int_t before = stats_read_bytes(fs);
    char path[128];
    snprintf(path, sizeof(path), "snapshots/%s/big", f->tree_id);
    ASSERT_OK(walk(fs, path, &a));
    _cleanup_free_ uint8_t *got = NULL;
    size_t got_n;
    read_all(fs, a.ino, 65536, &got, &got_n);
    assert_int_equal(stats_read_bytes(fs) - before, (json_int_t)got_n);
}

static void test_new_snapshot_appears(void **state)
{
    Fixture *f = *state;
    PfsAttr a;
    char id[32], path[128];
    /* The catalog is only re-read on request here (max age 60 s): a miss must look again. */
    add_snapshot(f, "tree", "second", f->src, id);
    snprintf(path, sizeof(path), "snapshots/%s/sub/small", id);
    ASSERT_OK(walk(f->fs, path, &a));
    ASSERT_OK(walk(f->fs, "snapshots/second", &a));
    PfsDirHandle *dh;
    ASSERT_OK(pfs_dir_open(f->fs, PFS_INO_SNAPSHOTS, &dh)); /* opendir looks too */
    Names n = { .stop_after = 16 };
    ASSERT_OK(pfs_dir_read(f->fs, dh, 2, false, collect, &n));
    assert_int_equal(n.n, 5); /* 2 ids, 2 names, latest */
    pfs_dir_release(f->fs, dh);
}

/* ---- a cluster snapshot's data directory, and /wal ---- */

#define SEG (1u << 20)

/* Store `n` bytes as archived WAL file `name` of node db1, keeping the bytes in *ret. */
static void archive(Fixture *f, const char *name, size_t n, uint8_t **ret)
{
    uint8_t *p = test_xmalloc(n);
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(rand() >> 3);
    CsWalObject o = { .archived_at = 1795269502, .size = n };
    CsWalName w;
    ASSERT_OK(cs_wal_name_parse(name, &w));
    o.kind = w.kind;
    o.xlp_magic = cs_wal_kind_has_header(w.kind) ? 0xD110 : 0;
    strcpy(o.name, name);
    CsWriter *wr;
    ASSERT_OK(cs_writer_new(f->repo, NULL, &wr));
    ASSERT_OK(cs_writer_put_buf(wr, p, n, CS_CHUNKING_CDC, &o.content));
    ASSERT_OK(cs_writer_flush(wr));
    cs_writer_free(wr);
    char objname[CS_WAL_OBJECT_NAME_MAX];
    ASSERT_OK(cs_wal_object_name("db1", &w, objname, sizeof(objname)));
    test_wal_object_put(f->repo, objname, &o);
    cs_wal_object_clear(&o);
    if (ret)
        *ret = p;
    else
        free(p);
}

static void list_dir(PfsFs *fs, const char *path, char *out, size_t n)
{
    PfsAttr a;
    PfsDirHandle *dh;
    ASSERT_OK(walk(fs, path, &a));
    ASSERT_OK(pfs_dir_open(fs, a.ino, &dh));
    Names names = { .stop_after = 16, .plus = true };
    ASSERT_OK(pfs_dir_read(fs, dh, 2, true, collect, &names));
    pfs_dir_release(fs, dh);
    out[0] = 0;
    for (int i = 0; i < names.n; i++) {
        pfs_fs_forget(fs, names.inos[i], 1);
        snprintf(out + strlen(out), n - strlen(out), "%s%s", i ? " " : "", names.names[i]);
    }
}

static void read_path(PfsFs *fs, const char *path, uint8_t **ret, size_t *ret_n)
{
    PfsAttr a;
    ASSERT_OK(walk(fs, path, &a));
    read_all(fs, a.ino, 4096, ret, ret_n);
    assert_int_equal(a.st.st_size, *ret_n);
}

/* Make each of `dirs` (paths below `root`, "" for root itself) with mode 0700. */
static void make_dirs(const char *root, const char *const *dirs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        _cleanup_free_ char *d = NULL;
        assert_true(asprintf(&d, "%s%s", root, dirs[i]) > 0);
        assert_int_equal(mkdir(d, 0700), 0);
    }
}

/* Store directory `cl` as a cluster snapshot whose meta says, as pitr-snap create records it,
 * that node db1 recovers to restore point pitr_csn_7 in segment 000000020000000000000005. */
static void add_cluster_snapshot(Fixture *f, const char *cl, char *ret_id)
{
    add_snapshot(f, "cluster", "cl", cl, ret_id);
    CsSnapshot s;
    ASSERT_OK(cs_catalog_find(f->repo, ret_id, &s));
    ASSERT_OK(cs_catalog_delete(f->repo, ret_id));
    json_object_set_new(s.meta, "restore_point", json_string("pitr_csn_7"));
    json_object_set_new(s.meta, "csn", json_integer(7));
    json_object_set_new(s.meta, "nodes",
                        json_pack("[{s:s, s:s, s:i, s:s}]", "name", "db1", "walfile",
                                  "000000020000000000000005", "timeline", 2, "backup_start_lsn",
                                  "0/200028"));
    s.id[0] = 0;
    ASSERT_OK(cs_catalog_add(f->repo, &s));
    strcpy(ret_id, s.id);
    cs_snapshot_clear(&s);
}

static void test_cluster_pgdata_and_wal(void **state)
{
    Fixture *f = *state;
    PfsFs *fs = f->fs;
    /* A node's stored tree, as a cluster snapshot holds it. */
    _cleanup_free_ char *cl = path_join(f->base, "cl");
    static const char *const dirs[] = { "", "/db1", "/db1/pgdata", "/db1/pgdata/base",
                                        "/db1/pgdata/pg_wal", "/db1/pgdata/pg_wal/archive_status" };
    make_dirs(cl, dirs, ARRAY_SIZE(dirs));
    static const char conf[] = "# Do not edit this file manually!\nwork_mem = '8MB'";
    _cleanup_free_ char *conf_path = path_join(cl, "db1/pgdata/postgresql.auto.conf");
    ASSERT_OK(write_file_atomic(conf_path, conf, strlen(conf), 0600));
    write_random(cl, "db1/pgdata/standby.signal", 0, 0600);
    write_random(cl, "db1/pgdata/backup_label", 200, 0600);
    write_random(cl, "db1/pgdata/base/1", 8192, 0600);

    /* Timeline 2 branched off in segment 4: 4 and 5 on timeline 2; 1/4 must not be used. */
    uint8_t *seg2_4, *history;
    archive(f, "000000010000000000000001", SEG, NULL);
    archive(f, "000000010000000000000002", SEG, NULL);
    archive(f, "000000010000000000000003", SEG, NULL);
    archive(f, "000000010000000000000004", SEG, NULL);
    archive(f, "000000020000000000000004", SEG, &seg2_4);
    archive(f, "000000020000000000000005", SEG, NULL);
    archive(f, "000000020000000000000006", SEG, NULL);
    archive(f, "00000002.history", 42, &history);
    archive(f, "000000010000000000000002.00000028.backup", 300, NULL);

    char id[32], bare_id[32], path[256], got[1024];
    add_cluster_snapshot(f, cl, id);
    add_snapshot(f, "cluster", "bare", cl, bare_id); /* says nothing: shown as stored */

    snprintf(path, sizeof(path), "snapshots/%s/db1/pgdata", id);
    list_dir(fs, path, got, sizeof(got));
    assert_string_equal(got, "backup_label base pg_wal postgresql.auto.conf recovery.signal");
    snprintf(path, sizeof(path), "snapshots/%s/db1/pgdata/pg_wal", id);
    list_dir(fs, path, got, sizeof(got));
    assert_string_equal(got, "000000010000000000000002 000000010000000000000003 "
                             "00000002.history 000000020000000000000004 "
                             "000000020000000000000005 archive_status");
    PfsAttr a;
    snprintf(path, sizeof(path), "snapshots/%s/db1/pgdata/pg_wal/000000020000000000000004", id);
    ASSERT_OK(walk(fs, path, &a));
    assert_int_equal(a.st.st_mode, S_IFREG | 0600);
    assert_int_equal(a.st.st_uid, getuid());
    assert_int_equal(a.st.st_mtime, 1795269502);
    uint8_t *data;
    size_t n;
    read_path(fs, path, &data, &n);
    assert_int_equal(n, SEG);
    assert_memory_equal(data, seg2_4, SEG);
    free(data);

    snprintf(path, sizeof(path), "snapshots/%s/db1/pgdata/postgresql.auto.conf", id);
    read_path(fs, path, &data, &n);
    static const char want[] =
            "# Do not edit this file manually!\nwork_mem = '8MB'\n"
            "# Recovery settings shown by mount.pitrfs: this data directory recovers to\n"
            "# cluster snapshot %s (CSN 7) and is promoted there.\n"
            "# pg_wal/ holds all the WAL it needs, so restore_command fetches nothing.\n"
            "restore_command = 'false'\nrecovery_target_name = 'pitr_csn_7'\n"
            "recovery_target_timeline = '2'\nrecovery_target_action = 'promote'\n";
    snprintf(got, sizeof(got), want, id);
    assert_int_equal(n, strlen(got));
    assert_memory_equal(data, got, n);
    free(data);
    snprintf(path, sizeof(path), "snapshots/%s/db1/pgdata/recovery.signal", id);
    read_path(fs, path, &data, &n);
    assert_int_equal(n, 0);
    free(data);

    snprintf(path, sizeof(path), "snapshots/%s/db1/pgdata", bare_id);
    list_dir(fs, path, got, sizeof(got));
    assert_string_equal(got, "backup_label base pg_wal postgresql.auto.conf standby.signal");
    snprintf(path, sizeof(path), "snapshots/%s/db1/pgdata/postgresql.auto.conf", bare_id);
    read_path(fs, path, &data, &n);
    assert_int_equal(n, strlen(conf));
    assert_memory_equal(data, conf, n);
    free(data);

    /* /wal, as archived. */
    list_dir(fs, "wal", got, sizeof(got));
    assert_string_equal(got, "db1");
    list_dir(fs, "wal/db1", got, sizeof(got));
    assert_string_equal(got, "00000001 00000002 history");
    list_dir(fs, "wal/db1/00000001", got, sizeof(got));
    assert_string_equal(got, "000000010000000000000001 000000010000000000000002 "
                             "000000010000000000000002.00000028.backup "
                             "000000010000000000000003 000000010000000000000004");
    ASSERT_OK(walk(fs, "wal/db1/00000002/000000020000000000000004", &a));
    assert_int_equal(a.st.st_mode, S_IFREG | 0400);
    assert_int_equal(a.st.st_uid, 1);
    assert_int_equal(a.st.st_size, SEG);
    ASSERT_ERR(ENOENT, walk(fs, "wal/db1/00000002/000000010000000000000004", &a));
    ASSERT_ERR(ENOENT, walk(fs, "wal/db1/00000003", &a));
    ASSERT_ERR(ENOENT, walk(fs, "wal/db1/0000000g", &a));
    ASSERT_ERR(ENOENT, walk(fs, "wal/db2", &a));
    ASSERT_ERR(ENOENT, walk(fs, "wal/..", &a));
    read_path(fs, "wal/db1/history/00000002.history", &data, &n);
    assert_int_equal(n, 42);
    assert_memory_equal(data, history, 42);
    free(data);
    /* Archived while mounted: the next listing has it. A damaged object is left out of the
     * listing and is an I/O error when looked up. */
    archive(f, "000000020000000000000007", SEG, NULL);
    ASSERT_OK(cs_backend_put(f->repo->backend, "wal/db1/00000002/000000020000000000000008",
                             "garbage", 7, false));
    list_dir(fs, "wal/db1/00000002", got, sizeof(got));
    assert_string_equal(got, "000000020000000000000004 000000020000000000000005 "
                             "000000020000000000000006 000000020000000000000007");
    ASSERT_ERR(EIO, walk(fs, "wal/db1/00000002/000000020000000000000008", &a));
    free(seg2_4);
    free(history);
}

/* A node with tablespaces: pgdata/pg_tblspc/ shows them as directories (in place), so that a
 * copy never writes to their original locations; tablespace_map, which would have recovery
 * link them back there, is not shown; the recovery settings allow in-place tablespaces. */
static void test_cluster_tablespaces_in_place(void **state)
{
    Fixture *f = *state;
    PfsFs *fs = f->fs;
    _cleanup_free_ char *cl = path_join(f->base, "cl");
    static const char *const dirs[] = { "",
                                        "/db1",
                                        "/db1/pgdata",
                                        "/db1/pgdata/pg_tblspc",
                                        "/db1/tablespaces",
                                        "/db1/tablespaces/16390",
                                        "/db1/tablespaces/16390/PG_15_202209061",
                                        "/db1/tablespaces/16390/PG_15_202209061/5" };
    make_dirs(cl, dirs, ARRAY_SIZE(dirs));
    static const char map[] = "16390 /srv/ts1\n16400 /srv/ts2\n";
    _cleanup_free_ char *map_path = path_join(cl, "db1/pgdata/tablespace_map");
    ASSERT_OK(write_file_atomic(map_path, map, strlen(map), 0600));
    write_random(cl, "db1/pgdata/backup_label", 200, 0600);
    write_random(cl, "db1/tablespaces/16390/PG_15_202209061/5/16391", 3 * 8192, 0600);
    /* 16390 is in the backup; 16400 is not (it stays a link, and is logged). */
    _cleanup_free_ char *link1 = path_join(cl, "db1/pgdata/pg_tblspc/16390");
    _cleanup_free_ char *link2 = path_join(cl, "db1/pgdata/pg_tblspc/16400");
    assert_int_equal(symlink("/srv/ts1", link1), 0);
    assert_int_equal(symlink("/srv/ts2", link2), 0);
    char id[32], path[256], got[1024];
    add_cluster_snapshot(f, cl, id);

    snprintf(path, sizeof(path), "snapshots/%s/db1/pgdata", id);
    list_dir(fs, path, got, sizeof(got));
    assert_string_equal(got, "backup_label pg_tblspc pg_wal postgresql.auto.conf recovery.signal");
    snprintf(path, sizeof(path), "snapshots/%s/db1/pgdata/pg_tblspc", id);
    list_dir(fs, path, got, sizeof(got));
    assert_string_equal(got, "16390 16400");
    PfsAttr a;
    snprintf(path, sizeof(path), "snapshots/%s/db1/pgdata/pg_tblspc/16390", id);
    ASSERT_OK(walk(fs, path, &a));
    assert_int_equal(a.st.st_mode, S_IFDIR | 0700);
    snprintf(path, sizeof(path), "snapshots/%s/db1/pgdata/pg_tblspc/16400", id);
    ASSERT_OK(walk(fs, path, &a));
    assert_int_equal(a.st.st_mode & S_IFMT, S_IFLNK);
    snprintf(path, sizeof(path), "snapshots/%s/db1/pgdata/pg_tblspc/16390/PG_15_202209061", id);
    list_dir(fs, path, got, sizeof(got));
    assert_string_equal(got, "5");

    uint8_t *data, *want;
    size_t n, want_n;
    snprintf(path, sizeof(path), "snapshots/%s/db1/pgdata/pg_tblspc/16390/PG_15_202209061/5/16391",
             id);
    read_path(fs, path, &data, &n);
    _cleanup_free_ char *stored = path_join(cl, "db1/tablespaces/16390/PG_15_202209061/5/16391");
    ASSERT_OK(read_file(stored, 1 << 20, (char **)&want, &want_n));
    assert_int_equal(n, want_n);
    assert_memory_equal(data, want, n);
    free(data);
    free(want);

    snprintf(path, sizeof(path), "snapshots/%s/db1/pgdata/postgresql.auto.conf", id);
    read_path(fs, path, &data, &n);
    /* A tablespaces/ that cannot be read as a directory (here: a file) fails the listing,
     * rather than leaving links to the original locations (and tablespace_map) in place. */
    _cleanup_free_ char *cl2 = path_join(f->base, "cl2");
    static const char *const dirs2[] = { "", "/db1", "/db1/pgdata", "/db1/pgdata/pg_tblspc" };
    make_dirs(cl2, dirs2, ARRAY_SIZE(dirs2));
    write_random(cl2, "db1/tablespaces", 10, 0600);
    _cleanup_free_ char *link3 = path_join(cl2, "db1/pgdata/pg_tblspc/16390");
    assert_int_equal(symlink("/srv/ts1", link3), 0);
    char id2[32];
    add_cluster_snapshot(f, cl2, id2);
    snprintf(path, sizeof(path), "snapshots/%s/db1/pgdata", id2);
    ASSERT_OK(walk(fs, path, &a));
    PfsAttr child;
    ASSERT_ERR(EIO, pfs_dir_lookup(fs, a.ino, "pg_tblspc", &child));

    static const char tail[] = "recovery_target_action = 'promote'\n"
                               "# Its tablespaces are directories in pg_tblspc/ (in place), which "
                               "recovery must allow.\nallow_in_place_tablespaces = 'on'\n";
    assert_true(n > strlen(tail));
    assert_memory_equal(data + n - strlen(tail), tail, strlen(tail));
    free(data);
}

/* A slice list that names bytes past its chunk's end (a damaged index or list) makes the map
 * expect the chunk that long, so that its read fails on the length check instead of running
 * off the chunk's buffer; a slice ending past 4 GiB is refused outright. */
static void test_file_map_slice_bounds(void **state)
{
    Fixture *f = *state;
    PfsFs *fs = f->fs;
    PfsAttr a;
    char path[256];
    snprintf(path, sizeof(path), "snapshots/%s/big", f->tree_id);
    ASSERT_OK(walk(fs, path, &a));
    PfsFile *file;
    ASSERT_OK(pfs_file_open(fs, a.ino, O_RDONLY, &file));
    CsChunkSlice chunk = file->map->chunks[0];
    uint32_t len = file->map->chunk_len[0];
    pfs_file_release(fs, file);
    assert_true(chunk.offset == 0 && chunk.length == len && len > 0);

    PfsReader *rd;
    ASSERT_OK(pfs_reader_pool_get(fs->readers, &rd));
    CsChunkSlice two[] = { { .id = chunk.id, .offset = 0, .length = len },
                           { .id = chunk.id, .offset = len, .length = len } };
    CsContentRef ref = { .size = 2 * (uint64_t)len, .has_slices = true, .count = 2,
                         .entries = two };
    PfsFileMap *m;
    ASSERT_OK(pfs_file_map_load(rd->rd, &ref, &m));
    for (size_t i = 0; i < m->count; i++)
        assert_true((uint64_t)m->chunks[i].offset + m->chunks[i].length <= m->chunk_len[i]);
    pfs_file_map_unref(m);

    CsChunkSlice wraps[] = { { .id = chunk.id, .offset = UINT32_MAX - 0xff, .length = 0x200 } };
    ref = (CsContentRef){ .size = 0x200, .has_slices = true, .count = 1, .entries = wraps };
    ASSERT_ERR(EBADMSG, pfs_file_map_load(rd->rd, &ref, &m));
    pfs_reader_pool_put(fs->readers, rd);
}

/* ---- trees kept whole ---- */

static void write_text(const char *root, const char *rel, const char *text)
{
    _cleanup_free_ char *path = path_join(root, rel);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    ASSERT_OK(write_all(fd, text, strlen(text)));
    close(fd);
}

static void link_at(const char *root, const char *from, const char *to)
{
    _cleanup_free_ char *a = path_join(root, from), *b = path_join(root, to);
    assert_int_equal(link(a, b), 0);
}

typedef struct Inos {
    const char *name;
    uint64_t ino;
    int found;
} Inos;

static int find_ino(void *ctx, const PfsDirent *d)
{
    Inos *c = ctx;
    if (strcmp(d->name, c->name) == 0) {
        c->ino = d->ino;
        c->found++;
    }
    return 0;
}

/* readdir's d_ino of `name` in directory `dir_ino` (what ls -i and find -inum see). */
static uint64_t readdir_ino(PfsFs *fs, uint64_t dir_ino, const char *name)
{
    PfsDirHandle *dh;
    ASSERT_OK(pfs_dir_open(fs, dir_ino, &dh));
    Inos c = { .name = name };
    ASSERT_OK(pfs_dir_read(fs, dh, 0, false, find_ino, &c));
    pfs_dir_release(fs, dh);
    assert_int_equal(c.found, 1);
    return c.ino;
}

static void test_whole_tree_through_the_mount(void **state)
{
    Fixture *f = *state;
    PfsFs *fs = f->fs;
    _cleanup_free_ char *src = path_join(f->base, "whole");
    assert_int_equal(mkdir(src, 0755), 0);
    _cleanup_free_ char *a = path_join(src, "a"), *b = path_join(src, "b");
    assert_int_equal(mkdir(a, 0755), 0);
    assert_int_equal(mkdir(b, 0755), 0);
    write_text(src, "a/f", "first version");
    link_at(src, "a/f", "b/f2");
    link_at(src, "a/f", "f3");
    write_text(src, "alone", "one link");
    _cleanup_free_ char *af = path_join(src, "a/f");
    assert_int_equal(lsetxattr(af, "user.color", "blue", 4, 0), 0);
    assert_int_equal(lsetxattr(af, "trusted.t", "t\0v", 3, 0), 0);
    assert_int_equal(lsetxattr(src, "user.root", "r", 1, 0), 0);
    _cleanup_free_ char *sparse = path_join(src, "sparse");
    int fd = open(sparse, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 3 << 20), 0);
    ASSERT_OK(pwrite_all(fd, "data", 4, 1 << 20));
    assert_int_equal(fsync(fd), 0);
    close(fd);
    struct stat sparse_st;
    assert_int_equal(stat(sparse, &sparse_st), 0);
    char id1[32], id2[32];
    add_snapshot(f, "tree", "whole", src, id1);
    write_text(src, "a/f", "second version!"); /* all three names see it */
    add_snapshot(f, "tree", "whole", src, id2);

    /* One node for the three names, with three links; another one in the other snapshot. */
    char path[256];
    PfsAttr l1, l2, l3, other, alone;
    snprintf(path, sizeof(path), "snapshots/%s/a/f", id1);
    ASSERT_OK(walk(fs, path, &l1));
    snprintf(path, sizeof(path), "snapshots/%s/b/f2", id1);
    ASSERT_OK(walk(fs, path, &l2));
    snprintf(path, sizeof(path), "snapshots/%s/f3", id1);
    ASSERT_OK(walk(fs, path, &l3));
    snprintf(path, sizeof(path), "snapshots/%s/alone", id1);
    ASSERT_OK(walk(fs, path, &alone));
    snprintf(path, sizeof(path), "snapshots/%s/b/f2", id2);
    ASSERT_OK(walk(fs, path, &other));
    assert_true(l1.ino == l2.ino && l2.ino == l3.ino);
    assert_int_equal(l1.st.st_nlink, 3);
    assert_int_equal(l2.st.st_nlink, 3);
    assert_int_equal(alone.st.st_nlink, 1);
    assert_true(other.ino != l1.ino);
    assert_int_equal(other.st.st_nlink, 3);
    _cleanup_free_ uint8_t *got = NULL;
    size_t got_n;
    read_all(fs, l2.ino, 4096, &got, &got_n);
    assert_int_equal(got_n, 13);
    assert_memory_equal(got, "first version", 13);
    free(got);
    read_all(fs, other.ino, 4096, &got, &got_n);
    assert_int_equal(got_n, 15);
    assert_memory_equal(got, "second version!", 15);
    /* readdir gives the numbers lookup gives. */
    PfsAttr dir_b, root1;
    snprintf(path, sizeof(path), "snapshots/%s", id1);
    ASSERT_OK(walk(fs, path, &root1));
    snprintf(path, sizeof(path), "snapshots/%s/b", id1);
    ASSERT_OK(walk(fs, path, &dir_b));
    assert_true(readdir_ino(fs, dir_b.ino, "f2") == l1.ino);
    assert_true(readdir_ino(fs, root1.ino, "f3") == l1.ino);
    assert_true(readdir_ino(fs, root1.ino, "alone") == alone.ino);
    /* The kernel forgets the names one by one: the node lives until the last. */
    pfs_fs_forget(fs, l1.ino, 2);
    PfsAttr again;
    ASSERT_OK(pfs_fs_getattr(fs, l1.ino, &again));
    pfs_fs_forget(fs, l1.ino, 1);
    PfsNode *gone;
    ASSERT_ERR(ESTALE, pfs_inode_get(fs->inodes, l1.ino, &gone));
    snprintf(path, sizeof(path), "snapshots/%s/f3", id1); /* and comes back the same */
    ASSERT_OK(walk(fs, path, &l3));
    assert_true(l3.ino == l1.ino);

    /* Attributes as stored: sizes, values, too small a buffer, none of that name. */
    char buf[256];
    assert_int_equal(pfs_fs_getxattr(fs, l3.ino, "user.color", NULL, 0), 4);
    assert_int_equal(pfs_fs_getxattr(fs, l3.ino, "user.color", buf, sizeof(buf)), 4);
    assert_memory_equal(buf, "blue", 4);
    assert_int_equal(pfs_fs_getxattr(fs, l3.ino, "trusted.t", buf, sizeof(buf)), 3);
    assert_memory_equal(buf, "t\0v", 3);
    assert_int_equal(pfs_fs_getxattr(fs, l3.ino, "user.color", buf, 3), -ERANGE);
    assert_int_equal(pfs_fs_getxattr(fs, l3.ino, "user.none", buf, sizeof(buf)), -ENODATA);
    assert_int_equal(pfs_fs_getxattr(fs, alone.ino, "user.color", buf, sizeof(buf)), -ENODATA);
    static const char names[] = "trusted.t\0user.color"; /* sorted by name */
    assert_int_equal(pfs_fs_listxattr(fs, l3.ino, NULL, 0), sizeof(names));
    assert_int_equal(pfs_fs_listxattr(fs, l3.ino, buf, sizeof(buf)), sizeof(names));
    assert_memory_equal(buf, names, sizeof(names));
    assert_int_equal(pfs_fs_listxattr(fs, l3.ino, buf, 5), -ERANGE);
    assert_int_equal(pfs_fs_listxattr(fs, alone.ino, buf, sizeof(buf)), 0);
    assert_int_equal(pfs_fs_listxattr(fs, PFS_INO_ROOT, buf, sizeof(buf)), 0);
    /* The snapshot's root has the stored directory's own. */
    assert_int_equal(pfs_fs_getxattr(fs, root1.ino, "user.root", buf, sizeof(buf)), 1);
    assert_int_equal(buf[0], 'r');
    assert_int_equal(pfs_fs_listxattr(fs, root1.ino, buf, sizeof(buf)), 10);

    /* A sparse file: its blocks are its data's, and seeking finds its holes. */
    PfsAttr sp;
    snprintf(path, sizeof(path), "snapshots/%s/sparse", id1);
    ASSERT_OK(walk(fs, path, &sp));
    assert_int_equal(sp.st.st_size, 3 << 20);
    assert_int_equal(sp.st.st_blocks, sparse_st.st_blocks);
    assert_int_equal(alone.st.st_blocks, 1); /* no holes: the size in 512-byte blocks */
    PfsFile *file;
    ASSERT_OK(pfs_file_open(fs, sp.ino, O_RDONLY, &file));
    assert_true(pfs_file_lseek(fs, file, 0, SEEK_DATA) == 1 << 20);
    assert_true(pfs_file_lseek(fs, file, 0, SEEK_HOLE) == 0);
    assert_true(pfs_file_lseek(fs, file, 1 << 20, SEEK_HOLE) == (1 << 20) + 4096);
    assert_true(pfs_file_lseek(fs, file, (1 << 20) + 4096, SEEK_DATA) == -ENXIO);
    assert_true(pfs_file_lseek(fs, file, 3 << 20, SEEK_HOLE) == -ENXIO);
    assert_true(pfs_file_lseek(fs, file, 0, SEEK_SET) == -EINVAL);
    pfs_file_release(fs, file);
    ASSERT_OK(pfs_file_open(fs, alone.ino, O_RDONLY, &file));
    assert_true(pfs_file_lseek(fs, file, 3, SEEK_DATA) == 3);
    assert_true(pfs_file_lseek(fs, file, 3, SEEK_HOLE) == 8);
    pfs_file_release(fs, file);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
RUN_TESTS(cmocka_unit_test(test_display_names), cmocka_unit_test(test_view_build),
          cmocka_unit_test(test_inode_numbers_and_lifetime), T(test_tree_through_the_mount),
          T(test_file_map_slice_bounds),
          T(test_readdir_and_lookup_counts), T(test_concurrent_reads),
          T(test_direct_io_keeps_read_chunks), T(test_stats_file),
          T(test_new_snapshot_appears), T(test_cluster_pgdata_and_wal),
          T(test_cluster_tablespaces_in_place), T(test_whole_tree_through_the_mount))
