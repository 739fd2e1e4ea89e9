/*
 * WAL segments stored with their full-page images as slices of data pages (agent/wal-dedup.c),
 * through cs_tree_store() into a real repository: a data directory with a relation file and a
 * segment laid out byte by byte, restored and compared; and two such directories in one tree.
 * Only images equal to the page as it was stored are referred to: not one that differs in a
 * byte, not one of a missing file, and not one that equals what the live file holds after it
 * was stored. A segment the walk did not list is planned and dropped.
 */
#include "tests/unit/harness.h"
#include "tests/unit/test-repo.h"

#include "agent/wal-images.c"

#include "agent/wal-dedup.c"

#include <fcntl.h>
#include <sys/stat.h>

#include "chunkstore/read.h"
#include "chunkstore/tree.h"
#include "common/fs-util.h"
#include "tests/unit/agent/wal-builder.h"

#define PASSPHRASE "wal images"
#define REL        16384u
#define REL_PAGES  4
#define SEGMENT    "000000010000000000000001"

typedef struct Fixture {
    TestRepo t;
    char *root; /* the tree stored */
    AgentWalDedup *d;
    uint8_t pages[REL_PAGES][AGENT_WAL_PAGE_SIZE]; /* the relation file as stored */
    uint8_t changed[AGENT_WAL_PAGE_SIZE];         /* block 1 once the file was stored */
    uint8_t seg[SEG_BYTES];
} Fixture;

static bool is_page_file(const char *relpath, const struct stat *st, void *userdata)
{
    (void)st, (void)userdata;
    return strstr(relpath, "base/") != NULL;
}

/* The walk meets, in each data directory's pg_wal, a segment that was not there when the walk
 * listed the directory: the planner, started at the first segment, plans it too, and drops that
 * plan when the walk asks for the next one. */
static int store_file(CsWriter *w, const char *relpath, int dir_fd, int fd,
                      const struct stat *st, CsContentRef *ret, void *userdata)
{
    Fixture *f = userdata;
    size_t len = strlen(relpath);
    if (len >= 24 && strcmp(relpath + len - 24, SEGMENT) == 0) {
        int late = openat(dir_fd, "000000010000000000000000", O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        assert_true(late >= 0);
        ASSERT_OK(write_all(late, f->seg, sizeof(f->seg)));
        close(late);
    }
    return agent_wal_dedup_store_file(f->d, w, relpath, dir_fd, fd, st, ret);
}

/* As a live server may: block 1 changes right after the relation file was read. */
static void file_stored(const char *relpath, const CsDirEntry *e, void *userdata)
{
    Fixture *f = userdata;
    agent_wal_dedup_file_stored(f->d, relpath, e);
    size_t len = strlen(relpath);
    if (len < 12 || strcmp(relpath + len - 12, "base/5/16384") != 0)
        return;
    _cleanup_free_ char *path = path_join(f->root, relpath);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, f->changed, sizeof(f->changed), AGENT_WAL_PAGE_SIZE),
                     AGENT_WAL_PAGE_SIZE);
    close(fd);
}

static void write_file(const char *dir, const char *relpath, const void *p, size_t n)
{
    _cleanup_free_ char *path = path_join(dir, relpath);
    ASSERT_OK(write_file_atomic(path, p, n, 0600));
}

/* The page as the WAL has it: pd_lsn and pd_checksum not yet what the file will hold. */
static void as_logged(const uint8_t *page, uint8_t *out)
{
    memcpy(out, page, AGENT_WAL_PAGE_SIZE);
    memset(out, 0x55, PAGE_HEADER_SKIP);
}

/* The relation's pages and a segment with images of them: block 0 with a hole and block 2
 * whole (both equal from byte 10 on), block 3 with one byte off, block 1 as the live file has it
 * after the store, and a relation that is not in the directory. A filler makes the first image
 * cross a WAL page header. */
static void make_contents(Fixture *f)
{
    make_page(f->pages[0], 10, 100, 3000);
    for (unsigned k = 1; k < REL_PAGES; k++)
        make_page(f->pages[k], (unsigned)(10 + k), 0, 0);
    for (unsigned k = 0; k < REL_PAGES; k++)
        memset(f->pages[k], 0xA0 + k, PAGE_HEADER_SKIP);
    make_page(f->changed, 99, 0, 0);
    static uint8_t im0[AGENT_WAL_PAGE_SIZE], im1[AGENT_WAL_PAGE_SIZE], im2[AGENT_WAL_PAGE_SIZE],
        im3[AGENT_WAL_PAGE_SIZE];
    as_logged(f->pages[0], im0);
    as_logged(f->changed, im1);
    as_logged(f->pages[2], im2);
    as_logged(f->pages[3], im3);
    im3[5000] ^= 1;
    _cleanup_(buf_free) Buf s = BUF_INIT;
    put_filler(&s, 5000);
    BlockSpec b0[] = { { .id = 0, .rel = REL, .block = 0, .hole_offset = 100,
                         .hole_length = 3000, .data_len = 2, .page = im0 } };
    BlockSpec b1[] = { { .id = 0, .rel = REL, .block = 1, .page = im1 } };
    BlockSpec b2[] = { { .id = 0, .rel = REL, .block = 2, .page = im2 },
                       { .id = 1, .same_rel = true, .block = 3, .page = im3 } };
    BlockSpec b4[] = { { .id = 0, .rel = REL + 1, .block = 0, .page = im2 } };
    (void)put_record(&s, b0, 1, 7, false, false);
    (void)put_record(&s, b1, 1, 0, false, false);
    (void)put_record(&s, b2, 2, 0, false, false);
    (void)put_record(&s, b4, 1, 0, false, false);
    lay_out(&s, 0, f->seg);
}

static const char not_wal[] = "not WAL at all\n";

/* A data directory at `dir` (below the tree's root) with the relation and the segment. */
static void make_data_dir(Fixture *f, const char *dir)
{
    _cleanup_free_ char *top = path_join(f->root, dir);
    _cleanup_free_ char *db = path_join(top, "base/5");
    _cleanup_free_ char *wal = path_join(top, "pg_wal/archive_status");
    ASSERT_OK(mkdir_p(db, 0700));
    ASSERT_OK(mkdir_p(wal, 0700));
    write_file(top, "base/5/16384", f->pages, sizeof(f->pages));
    write_file(top, "pg_wal/" SEGMENT, f->seg, sizeof(f->seg));
    write_file(top, "pg_wal/000000010000000000000002", not_wal, sizeof(not_wal) - 1);
    write_file(top, "PG_VERSION", "15\n", 3);
}

/* What the walk stored for the data directory at `dir`: the segment's list names the relation's
 * run, and both restore byte for byte (the relation as it was read). */
static void check_data_dir(Fixture *f, CsReader *rd, const CsContentRef *root, const char *dir)
{
    _cleanup_free_ char *rel_path = path_join(dir, "base/5/16384");
    _cleanup_free_ char *seg_path = path_join(dir, "pg_wal/" SEGMENT);
    CsDirEntry rel_e, seg_e;
    CsContentRef rel_flat, seg_flat;
    ASSERT_OK(cs_tree_lookup(rd, root, rel_path, &rel_e));
    ASSERT_OK(cs_tree_lookup(rd, root, seg_path, &seg_e));
    ASSERT_OK(cs_reader_flatten(rd, &rel_e.content, &rel_flat));
    ASSERT_OK(cs_reader_flatten(rd, &seg_e.content, &seg_flat));
    assert_int_equal(rel_flat.count, 1);
    size_t naming = 0;
    for (size_t i = 0; i < seg_flat.count; i++)
        naming += memcmp(seg_flat.entries[i].id.bytes, rel_flat.entries[0].id.bytes,
                         CS_CHUNK_ID_SIZE) == 0;
    assert_true(naming >= 3); /* block 0 around its hole and across a header, block 2 */

    _cleanup_free_ char *out = path_join(f->t.base, "restored");
    _cleanup_free_ char *seg_out = path_join(out, seg_path);
    _cleanup_free_ char *rel_out = path_join(out, rel_path);
    _cleanup_free_ char *back = NULL;
    size_t back_n = 0;
    ASSERT_OK(read_file(seg_out, SEG_BYTES, &back, &back_n));
    assert_int_equal(back_n, SEG_BYTES);
    assert_memory_equal(back, f->seg, SEG_BYTES);
    free(back);
    back = NULL;
    ASSERT_OK(read_file(rel_out, sizeof(f->pages), &back, &back_n));
    assert_int_equal(back_n, sizeof(f->pages));
    assert_memory_equal(back, f->pages, sizeof(f->pages));
    cs_dir_entry_clear(&rel_e);
    cs_dir_entry_clear(&seg_e);
    cs_content_ref_free(&rel_flat);
    cs_content_ref_free(&seg_flat);
}

/* Store the tree with the hooks, as `pitr-snap store` does, and flush. */
static void store_tree(Fixture *f, CsContentRef *root)
{
    CsWriter *w = NULL;
    CsTreeParams tp = { .is_page_file = is_page_file,
                        .store_file = store_file,
                        .file_stored = file_stored,
                        .userdata = f };
    ASSERT_OK(cs_writer_new(f->t.repo, &(CsWriterParams){ .threads = 2 }, &w));
    ASSERT_OK(cs_tree_store(w, f->root, &tp, root, NULL));
    ASSERT_OK(cs_writer_flush(w));
    cs_writer_free(w);
}

/* Store the tree with the hooks, restore it to "restored", check every data directory in it. */
static void store_and_check(Fixture *f, const char *const *dirs, size_t n_dirs)
{
    CsContentRef root;
    store_tree(f, &root);

    /* Per data directory: two segments (the late one is not stored), five images, two of
     * them equal to pages as stored. */
    AgentWalDedupStats st;
    agent_wal_dedup_stats(f->d, &st);
    assert_int_equal(st.segments, 2 * n_dirs);
    assert_int_equal(st.images, 5 * n_dirs);
    assert_int_equal(st.images_referred, 2 * n_dirs);
    assert_int_equal(st.bytes_referred,
                     n_dirs * ((AGENT_WAL_PAGE_SIZE - 3000 - PAGE_HEADER_SKIP) +
                               (AGENT_WAL_PAGE_SIZE - PAGE_HEADER_SKIP)));
    assert_int_equal(st.rebuild_failures, 0);

    CsReader *rd = NULL;
    _cleanup_free_ char *out = path_join(f->t.base, "restored");
    ASSERT_OK(cs_reader_new(f->t.repo, &rd));
    ASSERT_OK(cs_tree_restore(rd, &root, out, &(CsRestoreParams){ .skip_owner = true }, NULL));
    for (size_t i = 0; i < n_dirs; i++)
        check_data_dir(f, rd, &root, dirs[i]);
    cs_content_ref_free(&root);
    cs_reader_free(rd);
}

static void test_segment_refers_to_stored_pages(void **state)
{
    Fixture *f = *state;
    make_contents(f);
    make_data_dir(f, "");
    store_and_check(f, (const char *const[]){ "" }, 1);
}

/* Two data directories in one tree: the second one's relation files are remembered after the
 * first one's pg_wal was planned (the planner is stopped, and a new one started), and its
 * pages become readable by a second flush. */
static void test_two_data_directories(void **state)
{
    Fixture *f = *state;
    make_contents(f);
    make_data_dir(f, "one");
    make_data_dir(f, "two");
    store_and_check(f, (const char *const[]){ "one", "two" }, 2);
}

/* A repository of format 2 names whole chunks only: segments are left to the tree, and the
 * directory stores and restores as ever. */
static void test_format2_repository(void **state)
{
    Fixture *f = *state;
    f->d = agent_wal_dedup_free(f->d);
    f->t.repo = cs_repo_close(f->t.repo);
    _cleanup_free_ char *v2 = path_join(f->t.base, "repo-v2");
    CsInitParams params = { .scrypt_n = 1024, .config = { .format_version = 2 } };
    ASSERT_OK(cs_repo_init(v2, &params, &f->t.key));
    ASSERT_OK(cs_repo_open(v2, NULL, &f->t.key, &f->t.repo));
    ASSERT_OK(agent_wal_dedup_new(f->t.repo, &f->d));
    make_contents(f);
    make_data_dir(f, "");
    CsContentRef root;
    store_tree(f, &root);
    AgentWalDedupStats st;
    agent_wal_dedup_stats(f->d, &st);
    assert_int_equal(st.segments, 0);
    CsReader *rd = NULL;
    _cleanup_free_ char *out = path_join(f->t.base, "restored");
    _cleanup_free_ char *seg_out = path_join(out, "pg_wal/" SEGMENT);
    _cleanup_free_ char *back = NULL;
    size_t back_n = 0;
    ASSERT_OK(cs_reader_new(f->t.repo, &rd));
    ASSERT_OK(cs_tree_restore(rd, &root, out, &(CsRestoreParams){ .skip_owner = true }, NULL));
    ASSERT_OK(read_file(seg_out, SEG_BYTES, &back, &back_n));
    assert_int_equal(back_n, SEG_BYTES);
    assert_memory_equal(back, f->seg, SEG_BYTES);
    cs_reader_free(rd);
    cs_content_ref_free(&root);
}

/* A planned segment is lent to the writer, not copied: freeing the matcher while the writer
 * still holds it leaves the segment's memory and what gives it back alive until the writer is
 * done with it (under AddressSanitizer and valgrind, a use after free fails this test). */
static void test_freed_while_lent(void **state)
{
    Fixture *f = *state;
    make_contents(f);
    make_data_dir(f, "");
    CsContentRef root, seg_ref;
    store_tree(f, &root);
    CsReader *rd = NULL;
    CsDirEntry rel_e;
    ASSERT_OK(cs_reader_new(f->t.repo, &rd));
    ASSERT_OK(cs_tree_lookup(rd, &root, "base/5/16384", &rel_e));

    AgentWalDedup *d = NULL;
    CsWriter *w = NULL;
    ASSERT_OK(agent_wal_dedup_new(f->t.repo, &d));
    agent_wal_dedup_file_stored(d, "base/5/16384", &rel_e);
    _cleanup_free_ char *wal = path_join(f->root, "pg_wal");
    int dir_fd = open(wal, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(dir_fd >= 0);
    int fd = openat(dir_fd, SEGMENT, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    ASSERT_OK(cs_writer_new(f->t.repo, &(CsWriterParams){ .threads = 2 }, &w));
    assert_int_equal(agent_wal_dedup_store_file(d, w, "pg_wal/" SEGMENT, dir_fd, fd, &st,
                                                &seg_ref),
                     1);
    assert_int_equal(d->plans_lent, 1);
    close(fd);
    close(dir_fd);
    agent_wal_dedup_free(d);
    ASSERT_OK(cs_writer_sync(w));
    ASSERT_OK(cs_writer_flush(w));
    cs_writer_free(w);

    Buf back = BUF_INIT;
    ASSERT_OK(cs_reader_refresh(rd));
    ASSERT_OK(cs_reader_read_all(rd, &seg_ref, SEG_BYTES, &back));
    assert_int_equal(back.size, SEG_BYTES);
    assert_memory_equal(back.data, f->seg, SEG_BYTES);
    buf_free(&back);
    cs_dir_entry_clear(&rel_e);
    cs_content_ref_free(&seg_ref);
    cs_content_ref_free(&root);
    cs_reader_free(rd);
}

/* Only names in pg_wal that are segments are taken; the rest is the tree's. */
static void test_segment_names(void **state)
{
    (void)state;
    assert_int_equal(segment_prefix_len("pg_wal/000000010000000000000001"), 0);
    assert_int_equal(segment_prefix_len("data/pg_wal/000000010000000000000001"), 5);
    assert_int_equal(segment_prefix_len("pg_wal/000000010000000000000001.partial"), -1);
    assert_int_equal(segment_prefix_len("pg_wal/00000001.history"), -1);
    assert_int_equal(segment_prefix_len("my_pg_wal/000000010000000000000001"), -1);
    assert_int_equal(segment_prefix_len("base/000000010000000000000001"), -1);
    assert_int_equal(segment_prefix_len("000000010000000000000001"), -1);
    assert_int_equal(segment_prefix_len("pg_wal/00000001000000000000000a"), -1);
}

static int setup(void **state)
{
    Fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    test_repo_create(&f->t, "wal-dedup", PASSPHRASE);
    f->root = path_join(f->t.base, "tree");
    ASSERT_OK(agent_wal_dedup_new(f->t.repo, &f->d));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    Fixture *f = *state;
    agent_wal_dedup_free(f->d);
    free(f->root);
    test_repo_destroy(&f->t);
    free(f);
    return 0;
}

RUN_TESTS(cmocka_unit_test(test_segment_names),
          cmocka_unit_test_setup_teardown(test_segment_refers_to_stored_pages, setup, teardown),
          cmocka_unit_test_setup_teardown(test_two_data_directories, setup, teardown),
          cmocka_unit_test_setup_teardown(test_freed_while_lent, setup, teardown),
          cmocka_unit_test_setup_teardown(test_format2_repository, setup, teardown))
