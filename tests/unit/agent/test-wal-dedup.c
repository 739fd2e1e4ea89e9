/*
 * WAL segments stored with their full-page images as slices of data pages (agent/wal-dedup.c),
 * through cs_tree_store() into a real repository: a data directory with a relation file and a
 * segment laid out byte by byte, restored and compared. Only images equal to the page as it was
 * stored are referred to: not one that differs in a byte, not one of a missing file, and not
 * one that equals what the live file holds after it was stored.
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
    char *pgdata;
    AgentWalDedup *d;
    uint8_t pages[REL_PAGES][AGENT_WAL_PAGE_SIZE]; /* the relation file as stored */
    uint8_t changed[AGENT_WAL_PAGE_SIZE];         /* block 1 once the file was stored */
} Fixture;

static bool is_page_file(const char *relpath, const struct stat *st, void *userdata)
{
    (void)st, (void)userdata;
    return strncmp(relpath, "base/", 5) == 0;
}

static int store_file(CsWriter *w, const char *relpath, int fd, const struct stat *st,
                      CsContentRef *ret, void *userdata)
{
    Fixture *f = userdata;
    return agent_wal_dedup_store_file(f->d, w, relpath, fd, st, ret);
}

/* As a live server may: block 1 changes right after the relation file was read. */
static void file_stored(const char *relpath, const CsDirEntry *e, void *userdata)
{
    Fixture *f = userdata;
    agent_wal_dedup_file_stored(f->d, relpath, e);
    if (strcmp(relpath, "base/5/16384") != 0)
        return;
    _cleanup_free_ char *path = path_join(f->pgdata, relpath);
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

static void test_segment_refers_to_stored_pages(void **state)
{
    Fixture *f = *state;
    /* The relation: four pages with zeros in the holes the images leave out. */
    make_page(f->pages[0], 10, 100, 3000);
    for (unsigned k = 1; k < REL_PAGES; k++)
        make_page(f->pages[k], (unsigned)(10 + k), 0, 0);
    for (unsigned k = 0; k < REL_PAGES; k++)
        memset(f->pages[k], 0xA0 + k, PAGE_HEADER_SKIP);
    make_page(f->changed, 99, 0, 0);

    /* Images: block 0 with a hole and block 2 whole (both equal from byte 10 on), block 3 with
     * one byte off, block 1 as the live file has it after the store, and a relation that is not
     * in the directory. Fillers make the first one cross a WAL page header. */
    static uint8_t im0[AGENT_WAL_PAGE_SIZE], im1[AGENT_WAL_PAGE_SIZE], im2[AGENT_WAL_PAGE_SIZE],
        im3[AGENT_WAL_PAGE_SIZE], seg[SEG_BYTES];
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
    lay_out(&s, 0, seg);

    uint8_t relation[REL_PAGES * AGENT_WAL_PAGE_SIZE];
    memcpy(relation, f->pages, sizeof(relation));
    static const char text[] = "not WAL at all\n";
    assert_int_equal(mkdir_p(f->pgdata, 0700), 0);
    _cleanup_free_ char *db = path_join(f->pgdata, "base/5");
    _cleanup_free_ char *wal = path_join(f->pgdata, "pg_wal/archive_status");
    ASSERT_OK(mkdir_p(db, 0700));
    ASSERT_OK(mkdir_p(wal, 0700));
    write_file(f->pgdata, "base/5/16384", relation, sizeof(relation));
    write_file(f->pgdata, "pg_wal/" SEGMENT, seg, sizeof(seg));
    write_file(f->pgdata, "pg_wal/000000010000000000000002", text, sizeof(text) - 1);
    write_file(f->pgdata, "PG_VERSION", "15\n", 3);

    CsWriter *w = NULL;
    CsContentRef root;
    CsTreeStats ts;
    CsTreeParams tp = { .is_page_file = is_page_file,
                        .store_file = store_file,
                        .file_stored = file_stored,
                        .userdata = f };
    ASSERT_OK(cs_writer_new(f->t.repo, &(CsWriterParams){ .threads = 2 }, &w));
    ASSERT_OK(cs_tree_store(w, f->pgdata, &tp, &root, &ts));
    ASSERT_OK(cs_writer_flush(w));
    cs_writer_free(w);

    AgentWalDedupStats st;
    agent_wal_dedup_stats(f->d, &st);
    assert_int_equal(st.segments, 2);
    assert_int_equal(st.images, 5);
    assert_int_equal(st.images_referred, 2);
    assert_int_equal(st.bytes_referred,
                     (AGENT_WAL_PAGE_SIZE - 3000 - PAGE_HEADER_SKIP) +
                         (AGENT_WAL_PAGE_SIZE - PAGE_HEADER_SKIP));
    assert_int_equal(st.rebuild_failures, 0);

    /* The segment's list names the relation's run. */
    CsReader *rd = NULL;
    CsDirEntry rel_e, seg_e;
    CsContentRef rel_flat, seg_flat;
    ASSERT_OK(cs_reader_new(f->t.repo, &rd));
    ASSERT_OK(cs_tree_lookup(rd, &root, "base/5/16384", &rel_e));
    ASSERT_OK(cs_tree_lookup(rd, &root, "pg_wal/" SEGMENT, &seg_e));
    ASSERT_OK(cs_reader_flatten(rd, &rel_e.content, &rel_flat));
    ASSERT_OK(cs_reader_flatten(rd, &seg_e.content, &seg_flat));
    assert_int_equal(rel_flat.count, 1);
    size_t naming = 0;
    for (size_t i = 0; i < seg_flat.count; i++)
        naming += memcmp(seg_flat.entries[i].id.bytes, rel_flat.entries[0].id.bytes,
                         CS_CHUNK_ID_SIZE) == 0;
    assert_true(naming >= 3); /* block 0 around its hole and across a header, block 2 */

    /* Restored: the segment byte for byte, the relation as it was read. */
    _cleanup_free_ char *out = path_join(f->t.base, "restored");
    ASSERT_OK(cs_tree_restore(rd, &root, out, &(CsRestoreParams){ .skip_owner = true }, NULL));
    _cleanup_free_ char *seg_path = path_join(out, "pg_wal/" SEGMENT);
    _cleanup_free_ char *rel_path = path_join(out, "base/5/16384");
    _cleanup_free_ char *back = NULL;
    size_t back_n = 0;
    ASSERT_OK(read_file(seg_path, SEG_BYTES, &back, &back_n));
    assert_int_equal(back_n, SEG_BYTES);
    assert_memory_equal(back, seg, SEG_BYTES);
    free(back);
    back = NULL;
    ASSERT_OK(read_file(rel_path, sizeof(relation), &back, &back_n));
    assert_int_equal(back_n, sizeof(relation));
    assert_memory_equal(back, relation, sizeof(relation));

    cs_dir_entry_clear(&rel_e);
    cs_dir_entry_clear(&seg_e);
    cs_content_ref_free(&rel_flat);
    cs_content_ref_free(&seg_flat);
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
    f->pgdata = path_join(f->t.base, "pgdata");
    ASSERT_OK(agent_wal_dedup_new(f->t.repo, &f->d));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    Fixture *f = *state;
    agent_wal_dedup_free(f->d);
    free(f->pgdata);
    test_repo_destroy(&f->t);
    free(f);
    return 0;
}

RUN_TESTS(cmocka_unit_test(test_segment_names),
          cmocka_unit_test_setup_teardown(test_segment_refers_to_stored_pages, setup, teardown))
