/*
 * chunkstore/files-cache and its use by the tree: a second store takes unchanged files from
 * the previous snapshot unread; a file rewritten with its old size and modification time put
 * back is read again (its change time moved); a file whose change time is too recent to trust
 * is not remembered; a page file is not taken for a content-chunked one; the records of files
 * that are gone are forgotten, other sources' kept; and an unchanged tree restores
 * byte-identical from a snapshot whose files were never read.
 */
#include "tests/unit/harness.h"
#include "tests/unit/test-repo.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The module under test, for its clock: a test cannot make a change time old. */
#include "chunkstore/files-cache.c"

#include "chunkstore/crypto.h"
#include "chunkstore/tree.h"
#include "common/fs-util.h"
#include "common/macro.h"

#define PASSPHRASE "files cache test passphrase"

/* Ten seconds ahead of the real clock: every change time so far is old enough to trust. */
static int64_t clock_ahead(void)
{
    return realtime_ns() + 10 * 1000000000ll;
}

typedef struct Fixture {
    TestRepo t;
    char *src, *dst;
} Fixture;

static int setup(void **state)
{
    Fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    test_repo_create(&f->t, "files-cache", PASSPHRASE);
    f->src = path_join(f->t.base, "src");
    f->dst = path_join(f->t.base, "dst");
    _cleanup_free_ char *sub = path_join(f->src, "sub");
    assert_int_equal(mkdir(f->src, 0755), 0);
    assert_int_equal(mkdir(sub, 0755), 0);
    files_cache_clock = clock_ahead;
    files_cache_flush_at = 2; /* records written while the walk goes on, between lookups */
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    Fixture *f = *state;
    files_cache_clock = realtime_ns;
    files_cache_flush_at = FLUSH_AT;
    test_repo_destroy(&f->t);
    free(f->src);
    free(f->dst);
    free(f);
    return 0;
}

static void write_at(const Fixture *f, const char *rel, const void *p, size_t n)
{
    _cleanup_free_ char *path = path_join(f->src, rel);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, p, n), (ssize_t)n);
    close(fd);
}

static void random_file(const Fixture *f, const char *rel, size_t n)
{
    _cleanup_free_ uint8_t *p = test_xmalloc(n);
    ASSERT_OK(cs_random_bytes(p, n));
    write_at(f, rel, p, n);
}

static bool big_is_pages(const char *relpath, const struct stat *st, void *userdata)
{
    (void)st;
    return userdata && strcmp(relpath, "sub/big") == 0;
}

/* Store the source, with `previous` as the last version, and return the root and stats. */
static void store(Fixture *f, const CsContentRef *previous, bool use_cache, bool pages,
                  CsContentRef *root, CsTreeStats *st)
{
    CsWriter *w = NULL;
    CsTreeParams tp = { .previous = previous,
                        .use_files_cache = use_cache,
                        .is_page_file = big_is_pages,
                        .userdata = pages ? f : NULL };
    ASSERT_OK(cs_writer_new(f->t.repo, &(CsWriterParams){ .threads = 2 }, &w));
    *st = (CsTreeStats){ 0 };
    ASSERT_OK(cs_tree_store(w, f->src, &tp, root, st));
    ASSERT_OK(cs_writer_flush(w));
    cs_writer_free(w);
}

static void assert_restores(Fixture *f, const CsContentRef *root)
{
    CsReader *rd = NULL;
    ASSERT_OK(cs_reader_new(f->t.repo, &rd));
    test_rm_rf(f->dst);
    ASSERT_OK(cs_tree_restore(rd, root, f->dst, &(CsRestoreParams){ .skip_owner = true }, NULL));
    cs_reader_free(rd);
    const char *files[] = { "a", "b", "sub/big", "sub/small" };
    for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
        _cleanup_free_ char *x = path_join(f->src, files[i]), *y = path_join(f->dst, files[i]);
        _cleanup_free_ char *p = NULL, *q = NULL;
        size_t np = 0, nq = 0;
        ASSERT_OK(read_file(x, 64 << 20, &p, &np));
        ASSERT_OK(read_file(y, 64 << 20, &q, &nq));
        assert_int_equal(np, nq);
        assert_memory_equal(p, q, np);
    }
}

static void make_source(Fixture *f)
{
    random_file(f, "a", 100000);
    random_file(f, "b", 3000);
    random_file(f, "sub/big", 1 << 20);
    random_file(f, "sub/small", 10);
}

static void test_unchanged_files_unread(void **state)
{
    Fixture *f = *state;
    make_source(f);
    CsContentRef r1, r2, r3;
    CsTreeStats s1, s2, s3;
    store(f, NULL, true, true, &r1, &s1);
    assert_int_equal(s1.files, 4);
    assert_int_equal(s1.files_cached, 0);

    store(f, &r1, true, true, &r2, &s2);
    assert_int_equal(s2.files, 4);
    assert_int_equal(s2.page_files, 1);
    assert_int_equal(s2.files_cached, 4);
    assert_int_equal(s2.bytes_cached, 100000 + 3000 + (1 << 20) + 10);
    assert_int_equal(s2.bytes, s1.bytes);
    /* The same tree: the same root. */
    assert_int_equal(r2.count, r1.count);
    assert_memory_equal(r2.entries, r1.entries, r1.count * sizeof(*r1.entries));
    assert_restores(f, &r2);

    /* Without the cache every file is read, and the tree is still the same. */
    store(f, &r2, false, true, &r3, &s3);
    assert_int_equal(s3.files_cached, 0);
    assert_memory_equal(r3.entries, r1.entries, r1.count * sizeof(*r1.entries));
    cs_content_ref_free(&r1);
    cs_content_ref_free(&r2);
    cs_content_ref_free(&r3);
}

static void test_rewritten_file_read_again(void **state)
{
    Fixture *f = *state;
    make_source(f);
    CsContentRef r1, r2, r3;
    CsTreeStats s1, s2, s3;
    store(f, NULL, true, true, &r1, &s1);

    /* New bytes, same size, and the old modification time put back: only ctime tells. */
    _cleanup_free_ char *a = path_join(f->src, "a");
    struct stat before, after;
    assert_int_equal(stat(a, &before), 0);
    struct timespec sleep_for = { .tv_nsec = 20 * 1000000 }; /* past a coarse clock tick */
    nanosleep(&sleep_for, NULL);
    random_file(f, "a", 100000);
    struct timespec times[2] = { before.st_atim, before.st_mtim };
    assert_int_equal(utimensat(AT_FDCWD, a, times, 0), 0);
    assert_int_equal(stat(a, &after), 0);
    assert_true(after.st_size == before.st_size);
    assert_true(after.st_mtim.tv_sec == before.st_mtim.tv_sec &&
                after.st_mtim.tv_nsec == before.st_mtim.tv_nsec);
    assert_true(after.st_ctim.tv_sec != before.st_ctim.tv_sec ||
                after.st_ctim.tv_nsec != before.st_ctim.tv_nsec);

    store(f, &r1, true, true, &r2, &s2);
    assert_int_equal(s2.files_cached, 3);
    assert_restores(f, &r2);

    /* A file replaced by another of the same size (a new inode) is read too. */
    _cleanup_free_ char *b = path_join(f->src, "b"), *tmp = path_join(f->src, "b.new");
    random_file(f, "b.new", 3000);
    assert_int_equal(rename(tmp, b), 0);
    store(f, &r2, true, true, &r3, &s3);
    assert_int_equal(s3.files_cached, 3);
    assert_restores(f, &r3);
    cs_content_ref_free(&r1);
    cs_content_ref_free(&r2);
    cs_content_ref_free(&r3);
}

static void test_recent_change_not_remembered(void **state)
{
    Fixture *f = *state;
    make_source(f);
    files_cache_clock = realtime_ns; /* the files were written a moment ago */
    CsContentRef r1, r2;
    CsTreeStats s1, s2;
    store(f, NULL, true, true, &r1, &s1);
    files_cache_clock = clock_ahead;
    store(f, &r1, true, true, &r2, &s2);
    assert_int_equal(s2.files_cached, 0);
    assert_restores(f, &r2);
    cs_content_ref_free(&r1);
    cs_content_ref_free(&r2);
}

static void test_chunking_must_match(void **state)
{
    Fixture *f = *state;
    make_source(f);
    CsContentRef r1, r2;
    CsTreeStats s1, s2;
    store(f, NULL, true, false, &r1, &s1); /* sub/big cut by content */
    store(f, &r1, true, true, &r2, &s2);   /* now a page file: read and cut in pages */
    assert_int_equal(s2.files_cached, 3);
    assert_int_equal(s2.page_files, 1);
    assert_restores(f, &r2);
    cs_content_ref_free(&r1);
    cs_content_ref_free(&r2);
}

/* The content must be the previous snapshot's: a record of another content is no match. */
static void test_content_must_match(void **state)
{
    Fixture *f = *state;
    make_source(f);
    CsContentRef r1, r2, r3;
    CsTreeStats s1, s2, s3;
    store(f, NULL, true, true, &r1, &s1);
    random_file(f, "b", 3000);
    store(f, &r1, true, true, &r2, &s2); /* remembers b's new content */
    assert_int_equal(s2.files_cached, 3);
    /* Back to the first snapshot as the parent: its b is not what the cache recorded. */
    store(f, &r1, true, true, &r3, &s3);
    assert_int_equal(s3.files_cached, 3);
    assert_restores(f, &r3);
    cs_content_ref_free(&r1);
    cs_content_ref_free(&r2);
    cs_content_ref_free(&r3);
}

static bool has_record(CsIndex *idx, const char *source, const char *relpath)
{
    CsFilesCache *fc = NULL;
    CsFileStamp stamp;
    ASSERT_OK(cs_files_cache_open(idx, source, &fc));
    CsFileKey key = file_key(fc, relpath);
    int r = lookup(fc, &key, &stamp);
    cs_files_cache_free(fc);
    assert_true(r == 0 || r == -ENOENT);
    return r == 0;
}

static void test_forget_gone_files(void **state)
{
    Fixture *f = *state;
    CsIndex *idx = f->t.repo->index;
    make_source(f);
    _cleanup_free_ char *source = realpath(f->src, NULL);
    assert_non_null(source);
    CsContentRef r1, r2;
    CsTreeStats s1, s2;
    store(f, NULL, true, true, &r1, &s1);
    assert_true(has_record(idx, source, "a") && has_record(idx, source, "b") &&
                has_record(idx, source, "sub/big") && has_record(idx, source, "sub/small"));
    assert_false(has_record(idx, source, "sub"));

    /* Another source's records stay when this one's are renewed. */
    CsFilesCache *other = NULL;
    ASSERT_OK(cs_files_cache_open(idx, "/another/source", &other));
    struct stat st;
    _cleanup_free_ char *a = path_join(f->src, "a");
    assert_int_equal(stat(a, &st), 0);
    CsContentRef content = { .size = (uint64_t)st.st_size }; /* as a remembered file's */
    ASSERT_OK(cs_files_cache_remember(other, "x", &st, &content));
    ASSERT_OK(cs_files_cache_commit(other));
    cs_files_cache_free(other);
    assert_true(has_record(idx, "/another/source", "x"));

    _cleanup_free_ char *b = path_join(f->src, "b");
    assert_int_equal(unlink(b), 0);
    store(f, &r1, true, true, &r2, &s2);
    assert_int_equal(s2.files_cached, 3);
    /* b forgotten, the others renewed, /another/source's x kept */
    assert_false(has_record(idx, source, "b"));
    assert_true(has_record(idx, source, "a") && has_record(idx, source, "sub/big"));
    assert_true(has_record(idx, "/another/source", "x"));

    /* What another source remembered is not taken for this one. */
    ASSERT_OK(cs_files_cache_open(idx, "/another/source", &other));
    assert_true(cs_files_cache_unchanged(other, "x", &st, &content));
    assert_false(cs_files_cache_unchanged(other, "a", &st, &content));
    cs_files_cache_free(other);
    ASSERT_OK(cs_files_cache_open(idx, "/a/third", &other));
    assert_false(cs_files_cache_unchanged(other, "x", &st, &content));
    cs_files_cache_free(other);
    cs_content_ref_free(&r1);
    cs_content_ref_free(&r2);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
RUN_TESTS(T(test_unchanged_files_unread), T(test_rewritten_file_read_again),
          T(test_recent_change_not_remembered), T(test_chunking_must_match),
          T(test_content_must_match), T(test_forget_gone_files))
