/*
 * The write and read pipelines end to end in a real repository (chunkstore/repo, store, read):
 * round trips of many sizes in both chunking modes with one and two worker threads, random
 * access reads, deduplication (across puts, writers and reopen, and inside one put), all-zero
 * data, unflushed writers, content reference encoding, and the snapshot catalog including
 * damaged snapshot objects.
 */
#include "tests/unit/harness.h"
#include "tests/unit/test-repo.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "chunkstore/catalog.h"
#include "chunkstore/chunker.h"
#include "chunkstore/crypto.h"
#include "chunkstore/read.h"
#include "chunkstore/repo.h"
#include "chunkstore/store.h"
#include "common/buf.h"
#include "common/fs-util.h"
#include "common/macro.h"

#define PASSPHRASE "correct horse battery staple"
#define MiB        (1024u * 1024u)

/* --- helpers --- */

static uint64_t rng_state;

static uint64_t rng_next(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static void rng_seed(void)
{
    ASSERT_OK(cs_random_bytes(&rng_state, sizeof(rng_state)));
    rng_state |= 1;
}

/* Fast pseudo-random fill (cs_random_bytes would do, but tens of MiB add up under valgrind). */
static uint8_t *random_data(size_t n)
{
    uint8_t *p = test_xmalloc(n);
    for (size_t i = 0; i < n; i += 8) {
        uint64_t x = rng_next();
        for (size_t j = 0; j < 8 && i + j < n; j++)
            p[i + j] = (uint8_t)(x >> (8 * j));
    }
    return p;
}

static uint64_t rng_below(uint64_t n)
{
    return n ? rng_next() % n : 0;
}

/* Number of regular files under dir, recursively. */
static size_t count_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        _cleanup_free_ char *p = path_join(dir, de->d_name);
        struct stat st;
        assert_int_equal(lstat(p, &st), 0);
        n += S_ISDIR(st.st_mode) ? count_files(p) : 1;
    }
    closedir(d);
    return n;
}

typedef TestRepo Fixture;

static void fixture_open(Fixture *f)
{
    ASSERT_OK(cs_repo_open(f->location, NULL, &f->key, &f->repo));
    assert_non_null(f->repo);
}

static int setup(void **state)
{
    Fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    test_repo_create(f, "store", PASSPHRASE);
    rng_seed();
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    Fixture *f = *state;
    test_repo_destroy(f);
    free(f);
    return 0;
}

static void assert_ref_equal(const CsContentRef *a, const CsContentRef *b)
{
    assert_int_equal(a->size, b->size);
    assert_int_equal(a->level, b->level);
    assert_int_equal(a->has_slices, b->has_slices);
    assert_int_equal(a->count, b->count);
    for (uint32_t i = 0; i < a->count; i++) {
        assert_memory_equal(a->entries[i].id.bytes, b->entries[i].id.bytes, CS_CHUNK_ID_SIZE);
        assert_int_equal(a->entries[i].offset, b->entries[i].offset);
        assert_int_equal(a->entries[i].length, b->entries[i].length);
    }
}

/* pread through the content index and compare with the original. */
static void check_pread(CsReader *rd, const CsContentIndex *ci, const uint8_t *data, size_t n,
                        uint64_t off, size_t len, uint8_t *buf)
{
    memset(buf, 0xa5, len);
    long got = cs_content_pread(rd, ci, buf, len, off);
    size_t expect = off >= n ? 0 : (size_t)MIN((uint64_t)len, n - off);
    if (got < 0 || (size_t)got != expect)
        fail_msg("pread(off=%llu, len=%zu) of %zu bytes returned %ld, expected %zu",
                 (unsigned long long)off, len, n, got, expect);
    if (expect && memcmp(buf, data + off, expect) != 0)
        fail_msg("pread(off=%llu, len=%zu) of %zu bytes returned wrong data",
                 (unsigned long long)off, len, n);
}

static void check_reads(Fixture *f, CsReader *rd, const CsContentRef *ref, const uint8_t *data,
                        size_t n);

/* The content's chunk list fits its chunking mode, and it reads back as data every way. */
static void check_content(Fixture *f, CsReader *rd, const CsContentRef *ref, const uint8_t *data,
                          size_t n, CsChunking mode)
{
    assert_int_equal(ref->size, n);

    /* The flattened list: chunk sizes follow the chunking mode. */
    CsContentRef flat;
    ASSERT_OK(cs_reader_flatten(rd, ref, &flat));
    assert_int_equal(flat.level, 0);
    assert_int_equal(flat.size, n);
    uint64_t sum = 0;
    for (uint32_t i = 0; i < flat.count; i++) {
        uint32_t len = flat.entries[i].length;
        bool is_last = i + 1 == flat.count;
        sum += len;
        assert_true(len > 0);
        uint32_t page = f->repo->config.page_size;
        if (mode == CS_CHUNKING_PAGES && flat.has_slices) {
            /* Whole pages of runs (up to CS_RUN_MAX_PAGES), the file's tail at its end. */
            assert_int_equal(flat.entries[i].offset % page, 0);
            if (!is_last || n % page == 0)
                assert_int_equal(len % page, 0);
            assert_true(len <= CS_RUN_MAX_PAGES * page);
        } else if (mode == CS_CHUNKING_PAGES) {
            if (!is_last || n % page == 0)
                assert_int_equal(len, page);
            else
                assert_int_equal(len, n % page);
        } else {
            assert_true(len <= f->repo->config.chunker.max_size);
            if (!is_last)
                assert_true(len >= f->repo->config.chunker.min_size);
        }
    }
    assert_int_equal(sum, n);
    if (ref->level == 0)
        assert_ref_equal(ref, &flat);
    if (mode == CS_CHUNKING_CDC) {
        /* The pipeline cuts exactly where one chunker run over the whole input does, however
         * the input was split into batches. */
        CsChunker ch;
        ASSERT_OK(cs_chunker_init(&ch, &f->repo->gear, &f->repo->config.chunker));
        size_t pos = 0;
        for (uint32_t i = 0; i < flat.count; i++) {
            size_t cut = cs_chunker_scan(&ch, data + pos, n - pos);
            size_t expect = cut == SIZE_MAX ? n - pos : cut;
            if (flat.entries[i].length != expect)
                fail_msg("chunk %u of %zu-byte content: length %u, the chunker cuts at %zu", i,
                         n, flat.entries[i].length, expect);
            pos += expect;
        }
        assert_int_equal(pos, n);
    }
    cs_content_ref_free(&flat);
    check_reads(f, rd, ref, data, n);
}

/* Read the content back every way the reader offers (whole, to a file, at random offsets and
 * across every entry boundary) and compare with data. */
static void check_reads(Fixture *f, CsReader *rd, const CsContentRef *ref, const uint8_t *data,
                        size_t n)
{
    CsContentRef flat;
    ASSERT_OK(cs_reader_flatten(rd, ref, &flat));

    /* Whole-content read. */
    _cleanup_(buf_free) Buf out = BUF_INIT;
    ASSERT_OK(cs_reader_read_all(rd, ref, n, &out));
    assert_int_equal(out.size, n);
    if (n)
        assert_memory_equal(out.data, data, n);
    if (n)
        ASSERT_ERR(EFBIG, cs_reader_read_all(rd, ref, n - 1, &out));

    /* To a file, dense and sparse. */
    for (int sparse = 0; sparse <= 1; sparse++) {
        _cleanup_free_ char *path = path_join(f->base, "out");
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        ASSERT_OK(cs_reader_write_fd(rd, ref, fd, sparse));
        close(fd);
        _cleanup_free_ char *back = NULL;
        size_t back_n = 0;
        ASSERT_OK(read_file(path, n, &back, &back_n));
        assert_int_equal(back_n, n);
        if (n)
            assert_memory_equal(back, data, n);
        unlink(path);
    }

    /* Random access. */
    CsContentIndex *ci = NULL;
    ASSERT_OK(cs_content_index_new(rd, ref, &ci));
    assert_int_equal(cs_content_index_size(ci), n);
    size_t max_len = 600 * 1024;
    _cleanup_free_ uint8_t *buf = test_xmalloc(max_len);
    for (int i = 0; i < 100; i++) {
        uint64_t off = rng_below(n + 1);
        size_t len = (size_t)rng_below(i % 10 == 0 ? max_len : 20000) + 1;
        check_pread(rd, ci, data, n, off, len, buf);
    }
    /* Across every chunk boundary (a sample of them for long lists). */
    uint64_t off = 0;
    for (uint32_t i = 0; i < flat.count; i++) {
        off += flat.entries[i].length;
        if (flat.count > 64 && i % (flat.count / 32) != 0)
            continue;
        if (off >= 3)
            check_pread(rd, ci, data, n, off - 3, 7, buf);
        check_pread(rd, ci, data, n, off, 1, buf);
        if (off >= 1)
            check_pread(rd, ci, data, n, off - 1, 1, buf);
        /* two whole chunks and a bit */
        uint64_t start = off - flat.entries[i].length;
        check_pread(rd, ci, data, n, start, MIN(max_len, (size_t)2 * flat.entries[i].length + 1),
                    buf);
    }
    /* At and past the end. */
    check_pread(rd, ci, data, n, 0, max_len, buf);
    check_pread(rd, ci, data, n, n, 10, buf);
    check_pread(rd, ci, data, n, n + 1, 10, buf);
    check_pread(rd, ci, data, n, n + 123456789, 10, buf);
    check_pread(rd, ci, data, n, UINT64_MAX - 5, 10, buf);
    if (n >= 5)
        check_pread(rd, ci, data, n, n - 5, 100, buf);
    check_pread(rd, ci, data, n, 0, 0, buf);
    assert_int_equal(cs_content_pread(rd, ci, buf, 0, 0), 0);
    assert_null(cs_content_index_free(ci));
    cs_content_ref_free(&flat);
}

/* --- round trips --- */

static const size_t sizes[] = { 0, 1, 8191, 8192, 8193, 1 * MiB, 20 * MiB };

static void roundtrip(Fixture *f, unsigned threads)
{
    CsWriter *w = NULL;
    CsReader *rd_early = NULL, *rd = NULL;
    CsWriterParams params = { .threads = threads };
    static const CsChunking modes[] = { CS_CHUNKING_CDC, CS_CHUNKING_PAGES };
    uint8_t *data[ARRAY_SIZE(modes)][ARRAY_SIZE(sizes)];
    CsContentRef refs[ARRAY_SIZE(modes)][ARRAY_SIZE(sizes)];

    /* A reader made before anything is stored must see it once it is flushed. */
    ASSERT_OK(cs_reader_new(f->repo, &rd_early));
    ASSERT_OK(cs_writer_new(f->repo, &params, &w));
    uint64_t total = 0;
    for (size_t m = 0; m < ARRAY_SIZE(modes); m++)
        for (size_t s = 0; s < ARRAY_SIZE(sizes); s++) {
            data[m][s] = random_data(sizes[s]);
            ASSERT_OK(cs_writer_put_buf(w, data[m][s], sizes[s], modes[m], &refs[m][s]));
            assert_int_equal(refs[m][s].size, sizes[s]);
            total += sizes[s];
        }
    ASSERT_OK(cs_writer_flush(w));
    CsWriterStats st;
    cs_writer_stats(w, &st);
    assert_true(st.bytes_in >= total);
    assert_true(st.new_bytes >= total - 2 * 8193); /* random data: nearly all of it is new */
    assert_true(st.stored_bytes >= st.new_bytes);  /* incompressible plus framing */
    assert_true(st.packs >= 1);
    assert_true(st.new_chunks <= st.chunks);
    assert_null(cs_writer_free(w));

    ASSERT_OK(cs_reader_new(f->repo, &rd));
    for (size_t m = 0; m < ARRAY_SIZE(modes); m++)
        for (size_t s = 0; s < ARRAY_SIZE(sizes); s++) {
            const CsContentRef *ref = &refs[m][s];
            if (sizes[s] == 0)
                assert_int_equal(ref->count, 0);
            /* Large inputs are referenced through lists, and still read back. */
            bool runs = ref->has_slices && modes[m] == CS_CHUNKING_PAGES;
            if (sizes[s] >= 20 * MiB ||
                (modes[m] == CS_CHUNKING_PAGES && !runs && sizes[s] >= MiB))
                assert_true(ref->level >= 1);
            /* Pages are stored in runs: a run of up to 64 pages is one entry. */
            if (runs && sizes[s] <= MiB)
                assert_int_equal(ref->level, 0);
            assert_true(ref->count <= CS_REF_MAX_INLINE);
            check_content(f, rd, ref, data[m][s], sizes[s], modes[m]);
            if (s == 3 || s == 5)
                check_content(f, rd_early, ref, data[m][s], sizes[s], modes[m]);
        }
    for (size_t m = 0; m < ARRAY_SIZE(modes); m++)
        for (size_t s = 0; s < ARRAY_SIZE(sizes); s++) {
            cs_content_ref_free(&refs[m][s]);
            free(data[m][s]);
        }
    assert_null(cs_reader_free(rd));
    assert_null(cs_reader_free(rd_early));
}

static void test_roundtrip_threads1(void **state)
{
    roundtrip(*state, 1);
}

static void test_roundtrip_threads2(void **state)
{
    roundtrip(*state, 2);
}

/*
 * Small chunks, groups and packs: a put spans many packs published while it runs, and the
 * reference needs two list levels.
 */
static void test_small_params_multi_pack(void **state)
{
    Fixture *f = *state;
    Fixture g = { .base = f->base, .key = f->key };
    g.location = path_join(f->base, "repo-small");
    CsInitParams params = { .scrypt_n = 1024,
                            .config = { .chunker = { .min_size = 512,
                                                     .avg_size = 1024,
                                                     .max_size = 4096 },
                                        .page_size = 4096,
                                        .pack_size = 1u << 20,
                                        .group_size = 16384 } };
    ASSERT_OK(cs_repo_init(g.location, &params, &g.key));
    fixture_open(&g);
    assert_int_equal(g.repo->config.pack_size, 1u << 20);
    assert_int_equal(g.repo->config.chunker.avg_size, 1024);

    size_t n = 16 * MiB;
    _cleanup_free_ uint8_t *data = random_data(n);
    CsWriterParams wp = { .threads = 2 };
    CsWriter *w = NULL;
    CsContentRef ref, pages, again;
    CsWriterStats st;
    ASSERT_OK(cs_writer_new(g.repo, &wp, &w));
    ASSERT_OK(cs_writer_put_buf(w, data, n, CS_CHUNKING_CDC, &ref));
    ASSERT_OK(cs_writer_put_buf(w, data + 1, n / 4, CS_CHUNKING_PAGES, &pages));
    ASSERT_OK(cs_writer_flush(w));
    cs_writer_stats(w, &st);
    assert_true(st.packs >= 16);
    assert_true(ref.level >= 2);
    /* 1024 new 4 KiB pages, 16 runs of 64: one entry each (before version 3, a list of 1024). */
    assert_true(pages.has_slices);
    assert_int_equal(pages.level, 0);
    assert_int_equal(pages.count, 16);
    cs_writer_free(w);

    CsIndexStats ist;
    ASSERT_OK(cs_index_stats(g.repo->index, &ist));
    assert_int_equal(ist.packs, st.packs);
    assert_int_equal(ist.chunks, st.new_chunks);

    CsReader *rd = NULL;
    ASSERT_OK(cs_reader_new(g.repo, &rd));
    check_content(&g, rd, &ref, data, n, CS_CHUNKING_CDC);
    check_content(&g, rd, &pages, data + 1, n / 4, CS_CHUNKING_PAGES);
    cs_reader_free(rd);

    /* Without its index (deleted), the repository rebuilds it from the packs on open. */
    g.repo = cs_repo_close(g.repo);
    _cleanup_free_ char *index = path_join(g.location, "index");
    test_rm_rf(index);
    fixture_open(&g);
    ASSERT_OK(cs_index_stats(g.repo->index, &ist));
    assert_int_equal(ist.packs, st.packs);
    assert_int_equal(ist.chunks, st.new_chunks);
    ASSERT_OK(cs_writer_new(g.repo, &wp, &w));
    ASSERT_OK(cs_writer_put_buf(w, data, n, CS_CHUNKING_CDC, &again));
    ASSERT_OK(cs_writer_flush(w));
    cs_writer_stats(w, &st);
    assert_int_equal(st.new_bytes, 0);
    assert_ref_equal(&ref, &again);
    cs_writer_free(w);
    ASSERT_OK(cs_reader_new(g.repo, &rd));
    check_content(&g, rd, &ref, data, n, CS_CHUNKING_CDC);
    cs_reader_free(rd);

    cs_content_ref_free(&ref);
    cs_content_ref_free(&pages);
    cs_content_ref_free(&again);
    cs_repo_close(g.repo);
    free(g.location);
}

typedef struct PipeFeed {
    int fd;
    const uint8_t *p;
    size_t n;
    int r;
} PipeFeed;

static void *pipe_feed(void *userdata)
{
    PipeFeed *f = userdata;
    for (size_t off = 0; off < f->n && f->r == 0; off += 4093)
        f->r = write_all(f->fd, f->p + off, MIN(4093, f->n - off));
    close(f->fd);
    return NULL;
}

/* put_fd reads a file (and a pipe) to the same reference as put_buf. */
static void test_put_fd(void **state)
{
    Fixture *f = *state;
    CsWriter *w = NULL;
    CsWriterParams params = { .threads = 2 };
    size_t n = 5 * MiB + 17;
    _cleanup_free_ uint8_t *data = random_data(n);
    _cleanup_free_ char *path = path_join(f->base, "input");
    ASSERT_OK(write_file_atomic(path, data, n, 0600));
    CsContentRef a, b, c;

    ASSERT_OK(cs_writer_new(f->repo, &params, &w));
    ASSERT_OK(cs_writer_put_buf(w, data, n, CS_CHUNKING_CDC, &a));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    ASSERT_OK(cs_writer_put_fd(w, fd, CS_CHUNKING_CDC, &b));
    close(fd);
    /* A pipe delivers data in small pieces (fed by a thread: a forked child would show the
     * parent's heap as leaked under valgrind). */
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    PipeFeed feed = { .fd = pfd[1], .p = data, .n = n };
    pthread_t feeder;
    assert_int_equal(pthread_create(&feeder, NULL, pipe_feed, &feed), 0);
    ASSERT_OK(cs_writer_put_fd(w, pfd[0], CS_CHUNKING_CDC, &c));
    assert_int_equal(pthread_join(feeder, NULL), 0);
    close(pfd[0]);
    ASSERT_OK(feed.r);
    assert_ref_equal(&a, &b);
    assert_ref_equal(&a, &c);
    /* An unreadable input fails that put with its errno; the writer goes on working. */
    CsContentRef bad = { 0 };
    int dfd = open(f->base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(dfd >= 0);
    ASSERT_ERR(EISDIR, cs_writer_put_fd(w, dfd, CS_CHUNKING_CDC, &bad));
    close(dfd);
    cs_content_ref_free(&bad);
    ASSERT_OK(cs_writer_flush(w));
    cs_writer_free(w);

    CsReader *rd = NULL;
    ASSERT_OK(cs_reader_new(f->repo, &rd));
    _cleanup_(buf_free) Buf out = BUF_INIT;
    ASSERT_OK(cs_reader_read_all(rd, &c, n, &out));
    assert_int_equal(out.size, n);
    assert_memory_equal(out.data, data, n);
    cs_reader_free(rd);
    cs_content_ref_free(&a);
    cs_content_ref_free(&b);
    cs_content_ref_free(&c);
}

/* Asynchronous puts: several files in flight, references filled in by sync (or flush). */
static void test_put_fd_async(void **state)
{
    Fixture *f = *state;
    CsWriterParams params = { .threads = 2 };
    static const size_t lens[] = { 0, 1, 100000, 5 * MiB + 3, 8192 };
    uint8_t *data[ARRAY_SIZE(lens)];
    CsContentRef async_refs[ARRAY_SIZE(lens)], sync_refs[ARRAY_SIZE(lens)];
    CsWriter *w = NULL;
    ASSERT_OK(cs_writer_new(f->repo, &params, &w));
    for (size_t i = 0; i < ARRAY_SIZE(lens); i++) {
        data[i] = random_data(lens[i]);
        char name[32];
        snprintf(name, sizeof(name), "async-%zu", i);
        _cleanup_free_ char *path = path_join(f->base, name);
        ASSERT_OK(write_file_atomic(path, data[i], lens[i], 0600));
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        memset(&async_refs[i], 0xee, sizeof(async_refs[i]));
        ASSERT_OK(cs_writer_put_fd_async(w, fd, i % 2 ? CS_CHUNKING_PAGES : CS_CHUNKING_CDC,
                                         &async_refs[i]));
        close(fd); /* allowed as soon as the call returns */
        unlink(path);
    }
    ASSERT_OK(cs_writer_sync(w));
    ASSERT_OK(cs_writer_sync(w)); /* nothing pending: fine */
    for (size_t i = 0; i < ARRAY_SIZE(lens); i++) {
        ASSERT_OK(cs_writer_put_buf(w, data[i], lens[i],
                                    i % 2 ? CS_CHUNKING_PAGES : CS_CHUNKING_CDC, &sync_refs[i]));
        assert_ref_equal(&async_refs[i], &sync_refs[i]);
    }
    /* A flush resolves pending asynchronous puts too. */
    _cleanup_free_ char *path = path_join(f->base, "async-last");
    ASSERT_OK(write_file_atomic(path, data[3], lens[3], 0600));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    CsContentRef last;
    memset(&last, 0xee, sizeof(last));
    ASSERT_OK(cs_writer_put_fd_async(w, fd, CS_CHUNKING_PAGES, &last)); /* as file 3 */
    close(fd);
    ASSERT_OK(cs_writer_flush(w));
    assert_ref_equal(&async_refs[3], &last);
    cs_content_ref_free(&last);
    cs_writer_free(w);

    CsReader *rd = NULL;
    ASSERT_OK(cs_reader_new(f->repo, &rd));
    for (size_t i = 0; i < ARRAY_SIZE(lens); i++) {
        check_content(f, rd, &async_refs[i], data[i], lens[i],
                      i % 2 ? CS_CHUNKING_PAGES : CS_CHUNKING_CDC);
        cs_content_ref_free(&async_refs[i]);
        cs_content_ref_free(&sync_refs[i]);
        free(data[i]);
    }
    cs_reader_free(rd);
}

/* --- deduplication --- */

/* One put through a writer of its own (2 threads), flushed: the writer's stats. */
static CsWriterStats put_once(CsRepo *repo, const uint8_t *data, size_t n, CsChunking mode,
                              CsContentRef *ref)
{
    CsWriter *w = NULL;
    CsWriterStats st;
    ASSERT_OK(cs_writer_new(repo, &(CsWriterParams){ .threads = 2 }, &w));
    ASSERT_OK(cs_writer_put_buf(w, data, n, mode, ref));
    ASSERT_OK(cs_writer_flush(w));
    cs_writer_stats(w, &st);
    cs_writer_free(w);
    return st;
}

static CsWriterStats put_pages(CsRepo *repo, const uint8_t *data, size_t n, CsContentRef *ref)
{
    return put_once(repo, data, n, CS_CHUNKING_PAGES, ref);
}

static void test_dedup_same_data(void **state)
{
    Fixture *f = *state;
    CsWriterParams params = { .threads = 2 };
    size_t n = 1 * MiB + 12345;
    _cleanup_free_ uint8_t *data = random_data(n);
    CsContentRef r1, r2, r3, r4;
    CsWriterStats s1, s2, s3;
    CsWriter *w = NULL;

    ASSERT_OK(cs_writer_new(f->repo, &params, &w));
    ASSERT_OK(cs_writer_put_buf(w, data, n, CS_CHUNKING_CDC, &r1));
    ASSERT_OK(cs_writer_flush(w));
    cs_writer_stats(w, &s1);
    if (r1.level == 0) {
        assert_int_equal(s1.new_bytes, n);
        assert_int_equal(s1.new_chunks, r1.count); /* one entry per chunk */
    } else {
        assert_true(s1.new_bytes > n); /* and the list chunks */
    }

    /* Same writer, after the flush: identical reference, nothing new. */
    ASSERT_OK(cs_writer_put_buf(w, data, n, CS_CHUNKING_CDC, &r2));
    ASSERT_OK(cs_writer_flush(w));
    cs_writer_stats(w, &s2);
    assert_ref_equal(&r1, &r2);
    assert_int_equal(s2.new_bytes - s1.new_bytes, 0);
    assert_int_equal(s2.new_chunks - s1.new_chunks, 0);
    assert_int_equal(s2.stored_bytes - s1.stored_bytes, 0);
    assert_int_equal(s2.chunks - s1.chunks, s1.chunks);
    cs_writer_free(w);

    /* A fresh writer: new_bytes == 0. */
    s3 = put_once(f->repo, data, n, CS_CHUNKING_CDC, &r3);
    assert_ref_equal(&r1, &r3);
    assert_int_equal(s3.new_bytes, 0);
    assert_int_equal(s3.new_chunks, 0);
    assert_int_equal(s3.stored_bytes, 0);
    assert_int_equal(s3.packs, 0);

    /* After closing and reopening the repository, still known. */
    f->repo = cs_repo_close(f->repo);
    fixture_open(f);
    s3 = put_once(f->repo, data, n, CS_CHUNKING_CDC, &r4);
    assert_ref_equal(&r1, &r4);
    assert_int_equal(s3.new_bytes, 0);

    cs_content_ref_free(&r1);
    cs_content_ref_free(&r2);
    cs_content_ref_free(&r3);
    cs_content_ref_free(&r4);
}

/* Two puts of the same new data before any flush: the chunks in flight are stored once. */
static void test_dedup_in_flight(void **state)
{
    Fixture *f = *state;
    CsWriterParams params = { .threads = 2 };
    size_t n = 2 * MiB;
    _cleanup_free_ uint8_t *data = random_data(n);
    CsContentRef r1, r2;
    CsWriterStats st;
    CsWriter *w = NULL;

    ASSERT_OK(cs_writer_new(f->repo, &params, &w));
    ASSERT_OK(cs_writer_put_buf(w, data, n, CS_CHUNKING_PAGES, &r1));
    ASSERT_OK(cs_writer_put_buf(w, data, n, CS_CHUNKING_PAGES, &r2));
    assert_ref_equal(&r1, &r2);
    ASSERT_OK(cs_writer_flush(w));
    cs_writer_stats(w, &st);
    /* 256 pages, in 4 runs of 64, stored once: the second put finds them in flight. */
    assert_true(r1.has_slices);
    assert_int_equal(r1.count, 4);
    assert_int_equal(st.new_bytes, n);
    cs_writer_free(w);

    CsReader *rd = NULL;
    ASSERT_OK(cs_reader_new(f->repo, &rd));
    check_content(f, rd, &r2, data, n, CS_CHUNKING_PAGES);
    cs_reader_free(rd);
    cs_content_ref_free(&r1);
    cs_content_ref_free(&r2);
}

static void put_identical_pages(Fixture *f, const uint8_t *page, size_t pages,
                                CsWriterStats *st, CsContentRef *ref, uint8_t **ret_data)
{
    uint8_t *data = test_xmalloc(pages * 8192);
    for (size_t i = 0; i < pages; i++)
        memcpy(data + i * 8192, page, 8192);
    *st = put_pages(f->repo, data, pages * 8192, ref);
    *ret_data = data;
}

/*
 * The brief: "100 identical 8 KiB pages in one put are stored once (new_chunks == 1)". The page
 * is stored once; but 100 entries do not fit inline in a reference (CS_REF_MAX_INLINE = 32), so
 * store.h stores the entry list itself one level down, and that list is a new chunk too.
 */
static void test_identical_pages(void **state)
{
    Fixture *f = *state;
    CsWriterStats st;
    CsContentRef ref;
    uint8_t *data;
    CsReader *rd = NULL;
    _cleanup_free_ uint8_t *page = random_data(8192), *page2 = random_data(8192);
    ASSERT_OK(cs_reader_new(f->repo, &rd));

    /* 32 pages fit inline in the reference: exactly one chunk is new. */
    put_identical_pages(f, page, 32, &st, &ref, &data);
    assert_int_equal(ref.level, 0);
    assert_int_equal(ref.count, 32);
    assert_int_equal(st.chunks, 32);
    assert_int_equal(st.new_chunks, 1);
    assert_int_equal(st.new_bytes, 8192);
    for (uint32_t i = 1; i < ref.count; i++)
        assert_memory_equal(ref.entries[i].id.bytes, ref.entries[0].id.bytes, CS_CHUNK_ID_SIZE);
    check_content(f, rd, &ref, data, 32 * 8192, CS_CHUNKING_PAGES);
    cs_content_ref_free(&ref);
    free(data);

    /* 100 pages of the same page: the page is known, only the level-1 list is new. */
    put_identical_pages(f, page, 100, &st, &ref, &data);
    assert_int_equal(ref.level, 1);
    CsContentRef flat;
    ASSERT_OK(cs_reader_flatten(rd, &ref, &flat));
    assert_int_equal(flat.count, 100);
    for (uint32_t i = 1; i < flat.count; i++)
        assert_memory_equal(flat.entries[i].id.bytes, flat.entries[0].id.bytes,
                            CS_CHUNK_ID_SIZE);
    cs_content_ref_free(&flat);
    assert_int_equal(st.new_bytes, 100 * CS_SLICE_SIZE);
    assert_int_equal(st.new_chunks, 1);
    check_content(f, rd, &ref, data, 100 * 8192, CS_CHUNKING_PAGES);
    cs_content_ref_free(&ref);
    free(data);

    /* 100 copies of a page never seen before: the page once, plus the list chunk. */
    put_identical_pages(f, page2, 100, &st, &ref, &data);
    assert_int_equal(st.chunks, 100 + 1);
    assert_int_equal(st.new_bytes, 8192 + 100 * CS_SLICE_SIZE);
    assert_int_equal(st.new_chunks, 2);
    /* Stored once: far less than 100 pages' worth went into packs. */
    assert_true(st.stored_bytes < 3 * 8192);
    check_content(f, rd, &ref, data, 100 * 8192, CS_CHUNKING_PAGES);
    cs_content_ref_free(&ref);
    free(data);
    cs_reader_free(rd);
}

static void test_all_zero(void **state)
{
    Fixture *f = *state;
    CsWriterParams params = { .threads = 2 };
    size_t n = 5 * MiB + 100;
    _cleanup_free_ uint8_t *zero = calloc(1, n);
    assert_non_null(zero);
    CsContentRef cdc, pages;
    CsWriterStats st;
    CsWriter *w = NULL;

    ASSERT_OK(cs_writer_new(f->repo, &params, &w));
    ASSERT_OK(cs_writer_put_buf(w, zero, n, CS_CHUNKING_CDC, &cdc));
    ASSERT_OK(cs_writer_put_buf(w, zero, n, CS_CHUNKING_PAGES, &pages));
    ASSERT_OK(cs_writer_flush(w));
    cs_writer_stats(w, &st);
    /* Zeros dedupe and compress to almost nothing. */
    assert_true(st.new_chunks <= 8);
    assert_true(st.stored_bytes < 64 * 1024);
    cs_writer_free(w);

    CsReader *rd = NULL;
    ASSERT_OK(cs_reader_new(f->repo, &rd));
    check_content(f, rd, &cdc, zero, n, CS_CHUNKING_CDC);
    check_content(f, rd, &pages, zero, n, CS_CHUNKING_PAGES);

    /* A sparse restore of zeros writes holes but has the full size. */
    _cleanup_free_ char *path = path_join(f->base, "zero");
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    ASSERT_OK(cs_reader_write_fd(rd, &pages, fd, true));
    struct stat sst;
    assert_int_equal(fstat(fd, &sst), 0);
    assert_int_equal(sst.st_size, n);
    close(fd);
    cs_reader_free(rd);
    cs_content_ref_free(&cdc);
    cs_content_ref_free(&pages);
}

/* --- unflushed writers --- */

static void test_writer_free_without_flush(void **state)
{
    Fixture *f = *state;
    _cleanup_free_ char *packs = path_join(f->location, "packs");
    _cleanup_free_ char *tmp = path_join(f->location, "tmp");
    size_t n = 3 * MiB;
    _cleanup_free_ uint8_t *data = random_data(n);
    CsContentRef refs[2];

    for (unsigned threads = 1; threads <= 2; threads++) {
        CsWriterParams params = { .threads = threads };
        CsWriter *w = NULL;
        ASSERT_OK(cs_writer_new(f->repo, &params, &w));
        ASSERT_OK(cs_writer_put_buf(w, data, n, threads == 1 ? CS_CHUNKING_CDC
                                                             : CS_CHUNKING_PAGES,
                                    &refs[threads - 1]));
        assert_null(cs_writer_free(w));
        assert_int_equal(count_files(packs), 0);
        assert_int_equal(count_files(tmp), 0);
    }
    /* A writer that never got anything. */
    CsWriter *w = NULL;
    ASSERT_OK(cs_writer_new(f->repo, NULL, &w));
    cs_writer_free(w);
    assert_null(cs_writer_free(NULL));
    assert_int_equal(count_files(packs), 0);

    /* The repository still opens, and the unflushed data is not there. */
    f->repo = cs_repo_close(f->repo);
    fixture_open(f);
    CsReader *rd = NULL;
    ASSERT_OK(cs_reader_new(f->repo, &rd));
    _cleanup_(buf_free) Buf out = BUF_INIT;
    for (int i = 0; i < 2; i++) {
        ASSERT_ERR(ENOENT, cs_reader_read_all(rd, &refs[i], n, &out));
        cs_content_ref_free(&refs[i]);
    }
    cs_reader_free(rd);
    CsIndexStats ist;
    ASSERT_OK(cs_index_stats(f->repo->index, &ist));
    assert_int_equal(ist.chunks, 0);
    assert_int_equal(ist.packs, 0);
}

static void test_repo_open_errors(void **state)
{
    Fixture *f = *state;
    CsRepo *repo = NULL;
    f->repo = cs_repo_close(f->repo);

    CsKeySource wrong = { .passphrase = "wrong", .passphrase_len = 5 };
    ASSERT_ERR(EKEYREJECTED, cs_repo_open(f->location, NULL, &wrong, &repo));
    assert_null(repo);
    _cleanup_free_ char *nowhere = path_join(f->base, "nowhere");
    assert_true(cs_repo_open(nowhere, NULL, &f->key, &repo) < 0);
    assert_null(repo);
    /* init refuses an existing repository */
    CsInitParams params = { .scrypt_n = 1024 };
    ASSERT_ERR(EEXIST, cs_repo_init(f->location, &params, &f->key));

    /* Read-only: no writers. */
    CsOpenParams ro = { .read_only = true };
    ASSERT_OK(cs_repo_open(f->location, &ro, &f->key, &repo));
    CsWriter *w = NULL;
    ASSERT_ERR(EROFS, cs_writer_new(repo, NULL, &w));
    cs_repo_close(repo);
    fixture_open(f);
}

/*
 * read.h: "Damage is never returned as data". The index is an unauthenticated local cache; when
 * its location for a chunk disagrees with the record's authenticated member list, reading must
 * fail with -EBADMSG instead of returning another chunk's bytes. Here chunk A's entry points at
 * chunk B (longer), and chunk C's at chunk D (shorter), all four in one record.
 */
static void test_reader_index_disagrees(void **state)
{
    Fixture *f = *state;
    static const size_t sizes4[4] = { 1000, 3000, 3000, 1000 };
    uint8_t *d[4];
    CsContentRef r[4];
    CsPackEntry e[4];
    CsWriter *w = NULL;
    ASSERT_OK(cs_writer_new(f->repo, NULL, &w));
    for (int i = 0; i < 4; i++) {
        d[i] = random_data(sizes4[i]);
        ASSERT_OK(cs_writer_put_buf(w, d[i], sizes4[i], CS_CHUNKING_CDC, &r[i]));
        assert_int_equal(r[i].count, 1);
    }
    ASSERT_OK(cs_writer_flush(w));
    cs_writer_free(w);
    for (int i = 0; i < 4; i++) {
        e[i].id = r[i].entries[0].id;
        ASSERT_OK(cs_index_lookup(f->repo->index, &e[i].id, &e[i].loc));
        assert_true(e[i].loc.record_off == e[0].loc.record_off); /* one record holds all */
    }

    /* Re-index the pack with A located where B is, and C where D is. */
    CsPackId pack = e[0].loc.pack;
    ASSERT_OK(cs_index_drop_pack(f->repo->index, &pack));
    e[0].loc = e[1].loc;
    e[2].loc = e[3].loc;
    ASSERT_OK(cs_index_publish_pack(f->repo->index, &pack, 1, e, 4));

    CsReader *rd = NULL;
    ASSERT_OK(cs_reader_new(f->repo, &rd));
    const uint8_t *p = NULL;
    size_t n = 0;
    int ra = cs_reader_chunk(rd, &e[0].id, &p, &n);
    bool got_b = ra == 0 && n == 3000 && memcmp(p, d[1], 3000) == 0;
    _cleanup_(buf_free) Buf out = BUF_INIT;
    int ra_all = cs_reader_read_all(rd, &r[0], 1 << 20, &out);
    size_t out_size = out.size;
    /* Random access into C: its reference says 3000 bytes, the chunk read is 1000. */
    CsContentIndex *ci = NULL;
    ASSERT_OK(cs_content_index_new(rd, &r[2], &ci));
    uint8_t buf[1000];
    long rc = cs_content_pread(rd, ci, buf, sizeof(buf), 2000);
    cs_content_index_free(ci);
    cs_reader_free(rd);
    for (int i = 0; i < 4; i++) {
        cs_content_ref_free(&r[i]);
        free(d[i]);
    }
    if (ra != -EBADMSG || ra_all >= 0 || rc >= 0)
        fail_msg("chunk A read through an index entry that points at chunk B: "
                 "cs_reader_chunk returned %d%s, and cs_reader_read_all of A's 1000-byte "
                 "content returned %d with %zu bytes; cs_content_pread(off 2000, 1000 bytes) of "
                 "C (3000 bytes) located at D (1000 bytes) returned %ld (expected -EBADMSG "
                 "for all)",
                 ra, got_b ? " and B's 3000 bytes" : "", ra_all, out_size, rc);
}

/* --- content references --- */

static void test_content_ref_codec(void **state)
{
    (void)state;
    CsContentRef ref = { .size = 123456789012ull, .level = 2, .count = 5 };
    ref.entries = test_xmalloc(ref.count * sizeof(*ref.entries));
    for (uint32_t i = 0; i < ref.count; i++) {
        ASSERT_OK(cs_random_bytes(ref.entries[i].id.bytes, CS_CHUNK_ID_SIZE));
        ref.entries[i].offset = 0;
        ref.entries[i].length = 1000 * i + 7;
    }
    _cleanup_(buf_free) Buf enc = BUF_INIT;
    ASSERT_OK(cs_content_ref_encode(&ref, &enc));
    assert_int_equal(enc.size, 8 + 1 + 4 + ref.count * CS_RECORD_MEMBER_SIZE);

    /* An offset needs the slice encoding (version 3): 40-byte entries, flagged in the level. */
    ref.entries[3].offset = 8192;
    _cleanup_(buf_free) Buf wide = BUF_INIT;
    ASSERT_ERR(EINVAL, cs_content_ref_encode(&ref, &wide));
    ref.has_slices = true;
    buf_clear(&wide);
    ASSERT_OK(cs_content_ref_encode(&ref, &wide));
    assert_int_equal(wide.size, 8 + 1 + 4 + ref.count * CS_SLICE_SIZE);
    assert_int_equal(wide.data[8], 2 | CS_REF_FLAG_SLICES);
    CsContentRef sliced;
    Cursor cw = cursor_make(wide.data, wide.size);
    ASSERT_OK(cs_content_ref_decode(&cw, &sliced));
    assert_int_equal(cw.left, 0);
    assert_true(sliced.has_slices);
    assert_int_equal(sliced.level, 2);
    assert_ref_equal(&ref, &sliced);
    cs_content_ref_free(&sliced);
    ref.has_slices = false;
    ref.entries[3].offset = 0;

    CsContentRef back;
    Cursor c = cursor_make(enc.data, enc.size);
    ASSERT_OK(cs_content_ref_decode(&c, &back));
    assert_int_equal(c.left, 0);
    assert_ref_equal(&ref, &back);
    cs_content_ref_free(&back);
    assert_null(back.entries);

    /* Decoding from the middle of a larger buffer leaves the rest. */
    ASSERT_OK(buf_append(&enc, "tail", 4));
    c = cursor_make(enc.data, enc.size);
    ASSERT_OK(cs_content_ref_decode(&c, &back));
    assert_int_equal(c.left, 4);
    assert_memory_equal(c.p, "tail", 4);
    cs_content_ref_free(&back);
    enc.size -= 4;

    /* Every truncation is -EBADMSG. */
    for (size_t len = 0; len < enc.size; len++) {
        c = cursor_make(enc.data, len);
        int r = cs_content_ref_decode(&c, &back);
        if (r != -EBADMSG)
            fail_msg("content reference truncated to %zu of %zu bytes: decode returned %d", len,
                     enc.size, r);
    }
    /* A level beyond the maximum, or a list level without entries. */
    _cleanup_(buf_free) Buf bad = BUF_INIT;
    ASSERT_OK(buf_append(&bad, enc.data, enc.size));
    bad.data[8] = CS_REF_MAX_LEVEL + 1;
    c = cursor_make(bad.data, bad.size);
    ASSERT_ERR(EBADMSG, cs_content_ref_decode(&c, &back));
    CsContentRef empty_list = { .size = 10, .level = 1, .count = 0 };
    buf_clear(&bad);
    ASSERT_OK(cs_content_ref_encode(&empty_list, &bad));
    c = cursor_make(bad.data, bad.size);
    ASSERT_ERR(EBADMSG, cs_content_ref_decode(&c, &back));
    /* A count far larger than the data. */
    buf_clear(&bad);
    ASSERT_OK(buf_append(&bad, enc.data, enc.size));
    bad.data[9] = 0xff;
    bad.data[10] = 0xff;
    bad.data[11] = 0xff;
    bad.data[12] = 0x7f;
    c = cursor_make(bad.data, bad.size);
    ASSERT_ERR(EBADMSG, cs_content_ref_decode(&c, &back));

    /* The empty reference. */
    CsContentRef empty = { 0 };
    buf_clear(&enc);
    ASSERT_OK(cs_content_ref_encode(&empty, &enc));
    assert_int_equal(enc.size, 13);
    c = cursor_make(enc.data, enc.size);
    ASSERT_OK(cs_content_ref_decode(&c, &back));
    assert_int_equal(back.size, 0);
    assert_int_equal(back.count, 0);
    cs_content_ref_free(&back);
    cs_content_ref_free(&ref);
}

/* --- catalog --- */

static void snapshot_fill(CsSnapshot *s, const char *name, int64_t time, const CsContentRef *root)
{
    *s = (CsSnapshot){ 0 };
    s->name = strdup(name);
    s->kind = strdup("stream");
    s->time = time;
    s->root = *root;
    s->root.entries = test_xmalloc((root->count ? root->count : 1) * sizeof(*root->entries));
    memcpy(s->root.entries, root->entries, root->count * sizeof(*root->entries));
    s->meta = json_pack("{s:s, s:i}", "note", name, "time", (int)time);
    assert_non_null(s->meta);
}

static void assert_snapshot_equal(const CsSnapshot *a, const CsSnapshot *b)
{
    assert_string_equal(a->id, b->id);
    assert_string_equal(a->name, b->name);
    assert_string_equal(a->kind, b->kind);
    assert_int_equal(a->time, b->time);
    assert_string_equal(a->hostname, b->hostname);
    assert_ref_equal(&a->root, &b->root);
    assert_non_null(b->meta);
    assert_true(json_equal(a->meta, b->meta));
}

typedef struct Snaps {
    CsSnapshot s[3];
    CsContentRef roots[3];
} Snaps;

static void add_three(Fixture *f, Snaps *sn)
{
    CsWriter *w = NULL;
    ASSERT_OK(cs_writer_new(f->repo, NULL, &w));
    static const char *const names[3] = { "alpha", "beta", "alpha" };
    for (int i = 0; i < 3; i++) {
        _cleanup_free_ uint8_t *d = random_data(10000 + 1000 * (size_t)i);
        ASSERT_OK(cs_writer_put_buf(w, d, 10000 + 1000 * (size_t)i, CS_CHUNKING_CDC,
                                    &sn->roots[i]));
    }
    ASSERT_OK(cs_writer_flush(w));
    cs_writer_free(w);
    for (int i = 0; i < 3; i++) {
        snapshot_fill(&sn->s[i], names[i], 1000 * (i + 1), &sn->roots[i]);
        if (i != 1)
            sn->s[i].hostname = strdup("host-a");
        ASSERT_OK(cs_catalog_add(f->repo, &sn->s[i]));
        assert_int_equal(strlen(sn->s[i].id), 2 * CS_SNAP_ID_SIZE);
        assert_non_null(sn->s[i].hostname);
    }
    assert_string_not_equal(sn->s[0].id, sn->s[1].id);
    assert_string_not_equal(sn->s[1].id, sn->s[2].id);
}

static void free_three(Snaps *sn)
{
    for (int i = 0; i < 3; i++) {
        cs_snapshot_clear(&sn->s[i]);
        cs_content_ref_free(&sn->roots[i]);
    }
}

/* The shortest prefix (at least 4 digits) of s->id that no other id shares. */
static size_t unique_prefix(const Snaps *sn, int i)
{
    for (size_t len = 4; len <= 16; len++) {
        bool unique = true;
        for (int j = 0; j < 3; j++)
            if (j != i && strncmp(sn->s[i].id, sn->s[j].id, len) == 0)
                unique = false;
        if (unique)
            return len;
    }
    fail_msg("duplicate snapshot ids");
    return 0;
}

static void test_catalog(void **state)
{
    Fixture *f = *state;
    Snaps sn;
    CsSnapshot *v = NULL, found;
    size_t n = 0;

    ASSERT_OK(cs_catalog_list(f->repo, &v, &n));
    assert_int_equal(n, 0);
    cs_snapshots_free(v, n);
    ASSERT_ERR(ENOENT, cs_catalog_find(f->repo, "latest", &found));

    add_three(f, &sn);
    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    assert_string_equal(sn.s[1].hostname, host); /* filled in when unset */

    ASSERT_OK(cs_catalog_list(f->repo, &v, &n));
    assert_int_equal(n, 3);
    for (int i = 0; i < 3; i++) /* oldest first */
        assert_snapshot_equal(&sn.s[i], &v[i]);
    cs_snapshots_free(v, n);

    /* By full id. */
    for (int i = 0; i < 3; i++) {
        ASSERT_OK(cs_catalog_find(f->repo, sn.s[i].id, &found));
        assert_snapshot_equal(&sn.s[i], &found);
        cs_snapshot_clear(&found);
    }
    /* By unique prefix of 4 or more digits. */
    for (int i = 0; i < 3; i++) {
        char prefix[17];
        size_t len = unique_prefix(&sn, i);
        memcpy(prefix, sn.s[i].id, len);
        prefix[len] = 0;
        ASSERT_OK(cs_catalog_find(f->repo, prefix, &found));
        assert_string_equal(found.id, sn.s[i].id);
        cs_snapshot_clear(&found);
    }
    /* By name: the newest of that name. */
    ASSERT_OK(cs_catalog_find(f->repo, "alpha", &found));
    assert_snapshot_equal(&sn.s[2], &found);
    cs_snapshot_clear(&found);
    ASSERT_OK(cs_catalog_find(f->repo, "beta", &found));
    assert_snapshot_equal(&sn.s[1], &found);
    cs_snapshot_clear(&found);
    ASSERT_OK(cs_catalog_find(f->repo, "latest", &found));
    assert_snapshot_equal(&sn.s[2], &found);
    cs_snapshot_clear(&found);
    /* Not found: unknown names, too-short prefixes, an id of nothing. */
    ASSERT_ERR(ENOENT, cs_catalog_find(f->repo, "gamma", &found));
    char short_prefix[4];
    memcpy(short_prefix, sn.s[0].id, 3);
    short_prefix[3] = 0;
    ASSERT_ERR(ENOENT, cs_catalog_find(f->repo, short_prefix, &found));
    ASSERT_ERR(ENOENT, cs_catalog_find(f->repo, "", &found));
    char other_id[17];
    strcpy(other_id, sn.s[0].id);
    other_id[15] = other_id[15] == '0' ? '1' : '0';
    bool other_is_prefix_of_someone = false;
    for (int i = 0; i < 3; i++)
        other_is_prefix_of_someone |= strcmp(other_id, sn.s[i].id) == 0;
    if (!other_is_prefix_of_someone)
        ASSERT_ERR(ENOENT, cs_catalog_find(f->repo, other_id, &found));

    /* An ambiguous prefix: a copy of snapshot 0's record under an id sharing its first 4
     * digits (the record is re-sealed under its new name, as the catalog would). */
    char twin[17], name0[64], twin_name[64];
    strcpy(twin, sn.s[0].id);
    twin[4] = twin[4] == 'f' ? 'e' : 'f';
    snprintf(name0, sizeof(name0), "snapshots/%s", sn.s[0].id);
    snprintf(twin_name, sizeof(twin_name), "snapshots/%s", twin);
    uint8_t *obj = NULL;
    size_t obj_n = 0;
    ASSERT_OK(cs_backend_get(f->repo->backend, name0, 1 << 20, &obj, &obj_n));
    _cleanup_(buf_free) Buf plain = BUF_INIT, sealed = BUF_INIT;
    ASSERT_OK(cs_sealed_decode(f->repo->catalog_key, name0, obj, obj_n, &plain));
    free(obj);
    /* The sealed object's name is its AAD: under another name it does not open. */
    _cleanup_(buf_free) Buf junk = BUF_INIT;
    ASSERT_OK(cs_sealed_encode(f->repo->catalog_key, name0, plain.data, plain.size, &sealed));
    ASSERT_ERR(EBADMSG, cs_sealed_decode(f->repo->catalog_key, twin_name, sealed.data,
                                         sealed.size, &junk));
    buf_clear(&sealed);
    json_error_t jerr;
    json_t *o = json_loadb((const char *)plain.data, plain.size, 0, &jerr);
    assert_non_null(o);
    assert_int_equal(json_object_set_new(o, "id", json_string(twin)), 0);
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    assert_non_null(text);
    ASSERT_OK(cs_sealed_encode(f->repo->catalog_key, twin_name, text, strlen(text), &sealed));
    free(text);
    ASSERT_OK(cs_backend_put(f->repo->backend, twin_name, sealed.data, sealed.size, false));
    char prefix4[5];
    memcpy(prefix4, sn.s[0].id, 4);
    prefix4[4] = 0;
    ASSERT_ERR(ENOTUNIQ, cs_catalog_find(f->repo, prefix4, &found));
    /* Commands (show, restore, delete) call an ambiguous prefix a usage error. */
    ASSERT_ERR(EINVAL, cs_catalog_find_or_log(f->repo, prefix4, &found));
    ASSERT_ERR(ENOENT, cs_catalog_find_or_log(f->repo, "no-such-name", &found));
    ASSERT_OK(cs_catalog_find(f->repo, twin, &found)); /* the full id is still unique */
    assert_string_equal(found.id, twin);
    cs_snapshot_clear(&found);
    ASSERT_OK(cs_catalog_delete(f->repo, twin));

    /* Delete. */
    ASSERT_OK(cs_catalog_delete(f->repo, sn.s[1].id));
    ASSERT_OK(cs_catalog_list(f->repo, &v, &n));
    assert_int_equal(n, 2);
    assert_snapshot_equal(&sn.s[0], &v[0]);
    assert_snapshot_equal(&sn.s[2], &v[1]);
    cs_snapshots_free(v, n);
    ASSERT_ERR(ENOENT, cs_catalog_find(f->repo, sn.s[1].id, &found));
    ASSERT_ERR(ENOENT, cs_catalog_find(f->repo, "beta", &found));
    ASSERT_ERR(ENOENT, cs_catalog_delete(f->repo, sn.s[1].id));
    ASSERT_ERR(EINVAL, cs_catalog_delete(f->repo, "abc"));
    ASSERT_ERR(EINVAL, cs_catalog_delete(f->repo, "../../config"));
    ASSERT_OK(cs_catalog_delete(f->repo, sn.s[2].id));
    ASSERT_OK(cs_catalog_find(f->repo, "latest", &found));
    assert_string_equal(found.id, sn.s[0].id);
    cs_snapshot_clear(&found);

    /* The root reference of a snapshot still reads its data. */
    CsReader *rd = NULL;
    ASSERT_OK(cs_reader_new(f->repo, &rd));
    _cleanup_(buf_free) Buf out = BUF_INIT;
    ASSERT_OK(cs_catalog_find(f->repo, "alpha", &found));
    ASSERT_OK(cs_reader_read_all(rd, &found.root, 1 << 20, &out));
    assert_int_equal(out.size, 10000);
    cs_snapshot_clear(&found);
    cs_reader_free(rd);

    free_three(&sn);
}

static int cmp_strp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The loaded catalog holds exactly the snapshots `ids` (oldest first) and the problem records
 * `problem_ids` (by name), each damaged or newer; describes the first difference in `failure`. */
static void check_catalog(Fixture *f, const char *const *ids, size_t n_ids,
                          const char *const *problem_ids, size_t n_problem_ids, char *failure,
                          size_t failure_size, const char *what)
{
    CsCatalog cat;
    int r = cs_catalog_load(f->repo, &cat);
    if (r < 0) {
        snprintf(failure, failure_size, "%s: load failed with %d", what, r);
        return;
    }
    bool ok = cat.n_snaps == n_ids && cat.n_problems == n_problem_ids;
    for (size_t i = 0; ok && i < n_ids; i++)
        ok = strcmp(cat.snaps[i].id, ids[i]) == 0;
    for (size_t i = 0; ok && i < n_problem_ids; i++)
        ok = strcmp(cat.problems[i].id, problem_ids[i]) == 0 &&
             (cat.problems[i].error == -EBADMSG || cat.problems[i].error == -EPROTONOSUPPORT);
    if (!ok)
        snprintf(failure, failure_size,
                 "%s: %zu snapshots and %zu problem records, expected %zu and %zu", what,
                 cat.n_snaps, cat.n_problems, n_ids, n_problem_ids);
    cs_catalog_clear(&cat);
}

/* A snapshot object with any one byte flipped is a damaged record: load lists it as a problem
 * and the others as snapshots; list fails, and so does find by anything but the full id of an
 * intact record, because the damaged one might be what was meant. Also swapped, truncated and
 * foreign objects. */
static void test_catalog_damaged(void **state)
{
    Fixture *f = *state;
    Snaps sn;
    add_three(f, &sn);
    CsSnapshot *v = NULL, found;
    size_t n = 0;
    const char *intact[] = { sn.s[0].id, sn.s[2].id }, *damaged[] = { sn.s[1].id };

    _cleanup_free_ char *path = NULL;
    assert_true(asprintf(&path, "%s/snapshots/%s", f->location, sn.s[1].id) > 0);
    _cleanup_free_ char *orig = NULL;
    size_t orig_n = 0;
    ASSERT_OK(read_file(path, 1 << 20, &orig, &orig_n));

    /* Damaged objects are logged on stderr: silence the hundreds of expected messages. */
    fflush(stderr);
    int saved_stderr = dup(2);
    int devnull = open("/dev/null", O_WRONLY);
    assert_true(saved_stderr >= 0 && devnull >= 0);
    dup2(devnull, 2);
    close(devnull);
    char failure[512] = "";
    for (size_t i = 0; i < orig_n && !failure[0]; i++) {
        orig[i] ^= 0x04;
        int fd = open(path, O_WRONLY);
        if (fd < 0 || pwrite(fd, orig + i, 1, (off_t)i) != 1)
            snprintf(failure, sizeof(failure), "could not damage %s", path);
        char what[64];
        snprintf(what, sizeof(what), "flip at byte %zu of %zu", i, orig_n);
        check_catalog(f, intact, 2, damaged, 1, failure, sizeof(failure), what);
        int rl = cs_catalog_list(f->repo, &v, &n);
        if (rl >= 0) {
            snprintf(failure, sizeof(failure), "%s: list succeeded", what);
            cs_snapshots_free(v, n);
        }
        int rf = cs_catalog_find(f->repo, sn.s[1].id, &found);
        if (rf == 0) {
            snprintf(failure, sizeof(failure), "%s: find returned the snapshot", what);
            cs_snapshot_clear(&found);
        }
        if ((rf = cs_catalog_find(f->repo, sn.s[2].id, &found)) < 0)
            snprintf(failure, sizeof(failure), "%s: find by the full id of an intact record "
                     "failed with %d", what, rf);
        else
            cs_snapshot_clear(&found);
        orig[i] ^= 0x04;
        if (fd >= 0 && pwrite(fd, orig + i, 1, (off_t)i) != 1)
            snprintf(failure, sizeof(failure), "could not repair %s", path);
        if (fd >= 0)
            close(fd);
    }
    fflush(stderr);
    dup2(saved_stderr, 2);
    close(saved_stderr);
    if (failure[0])
        fail_msg("%s", failure);

    /* Repaired, it is listed again. */
    ASSERT_OK(cs_catalog_list(f->repo, &v, &n));
    assert_int_equal(n, 3);
    cs_snapshots_free(v, n);

    /* Truncated; then an object copied under another snapshot's name; then junk. */
    assert_int_equal(truncate(path, (off_t)orig_n / 2), 0);
    check_catalog(f, intact, 2, damaged, 1, failure, sizeof(failure), "truncated");
    if (failure[0])
        fail_msg("%s", failure);
    ASSERT_ERR(EBADMSG, cs_catalog_list(f->repo, &v, &n));
    assert_true(cs_catalog_find(f->repo, sn.s[1].id, &found) < 0);
    unlink(path);
    char swapped[64];
    snprintf(swapped, sizeof(swapped), "snapshots/%s", sn.s[1].id);
    _cleanup_free_ char *other = NULL;
    size_t other_n;
    _cleanup_free_ char *other_path = NULL;
    assert_true(asprintf(&other_path, "%s/snapshots/%s", f->location, sn.s[0].id) > 0);
    ASSERT_OK(read_file(other_path, 1 << 20, &other, &other_n));
    ASSERT_OK(cs_backend_put(f->repo->backend, swapped, other, other_n, false));
    ASSERT_OK(cs_backend_put(f->repo->backend, "snapshots/0123456789abcdef", "junk", 4, false));
    ASSERT_OK(cs_backend_put(f->repo->backend, "snapshots/empty", "", 0, false));
    const char *foreign[3] = { "0123456789abcdef", sn.s[1].id, "empty" };
    qsort(foreign, 3, sizeof(*foreign), cmp_strp);
    check_catalog(f, intact, 2, foreign, 3, failure, sizeof(failure), "swapped and foreign");
    if (failure[0])
        fail_msg("%s", failure);
    assert_true(cs_catalog_find(f->repo, sn.s[1].id, &found) < 0);
    ASSERT_ERR(EBADMSG, cs_catalog_find(f->repo, "latest", &found));
    ASSERT_OK(cs_catalog_find(f->repo, sn.s[2].id, &found));
    cs_snapshot_clear(&found);
    /* Deleted, they stand in the way no more. */
    for (size_t i = 0; i < 3; i++) {
        char name[64];
        snprintf(name, sizeof(name), "snapshots/%s", foreign[i]);
        ASSERT_OK(cs_backend_delete(f->repo->backend, name));
    }
    ASSERT_OK(cs_catalog_find(f->repo, "latest", &found));
    assert_string_equal(found.id, sn.s[2].id);
    cs_snapshot_clear(&found);

    free_three(&sn);
}

/* ---- runs (format version 3) ---- */

/*
 * New pages are stored in runs of up to 64: one chunk and one content entry per run, each page
 * indexed with its place in the run so that it deduplicates later, also on its own in another
 * file. An index rebuilt from the packs loses those page entries, not data: the same pages
 * make the same runs, found by the runs' ids.
 */
static void test_runs(void **state)
{
    Fixture *f = *state;
    enum { PAGES = 200 };
    size_t n = PAGES * 8192;
    _cleanup_free_ uint8_t *data = random_data(n);
    memcpy(data + 150 * 8192, data + 10 * 8192, 8192); /* a page repeated in the file */
    CsContentRef ref, again, one, rebuilt;

    CsWriterStats st = put_pages(f->repo, data, n, &ref);
    assert_true(ref.has_slices);
    assert_int_equal(ref.level, 0);
    /* Runs of pages 0..63, 64..127, and 128..199 less page 150 (64 + 7); page 150 is named as
     * page 10: entries split around it. */
    assert_int_equal(st.new_chunks, 4);
    assert_int_equal(st.new_bytes, (PAGES - 1) * 8192);
    assert_int_equal(ref.count, 6);
    assert_memory_equal(ref.entries[3].id.bytes, ref.entries[0].id.bytes, CS_CHUNK_ID_SIZE);
    assert_int_equal(ref.entries[3].offset, 10 * 8192);
    assert_int_equal(ref.entries[3].length, 8192);

    CsReader *rd = NULL;
    CsIndexReader *ix = NULL;
    ASSERT_OK(cs_reader_new(f->repo, &rd));
    check_content(f, rd, &ref, data, n, CS_CHUNKING_PAGES);
    /* Every page is indexed where its run holds it. */
    ASSERT_OK(cs_index_reader_begin(f->repo->index, &ix));
    for (size_t k = 0; k < PAGES; k += 7) {
        CsChunkId id;
        CsPageAlias at;
        uint8_t tag[CS_PAGE_ROW_TAG_SIZE];
        const uint8_t *p;
        ASSERT_OK(cs_chunk_id(f->repo, data + k * 8192, 8192, &id));
        ASSERT_OK(cs_index_reader_lookup_page(ix, &id, &at));
        assert_int_equal(at.in.length, 8192);
        ASSERT_OK(cs_page_row_tag(f->repo, &id, &at.in, tag));
        assert_memory_equal(tag, at.tag, sizeof(tag));
        ASSERT_OK(cs_reader_slice(rd, &at.in, &p));
        assert_memory_equal(p, data + k * 8192, 8192);
        ASSERT_ERR(ENOENT, cs_index_reader_lookup(ix, &id, NULL)); /* not a chunk of its own */
    }
    cs_index_reader_end(ix);
    /* A slice past its chunk's end is damage, not a short read. */
    CsChunkSlice past = ref.entries[0];
    past.offset = past.length - 8192;
    past.length = 2 * 8192;
    const uint8_t *p;
    ASSERT_ERR(EBADMSG, cs_reader_slice(rd, &past, &p));
    /* Taking a chunk: the same bytes as reading it, twice over (a run stored alone is handed
     * over with its record's buffer, so the second take decodes the record again), and the
     * reader serves other chunks afterwards. */
    for (int round = 0; round < 2; round++)
        for (size_t i = 0; i < ref.count; i++) {
            uint8_t *taken;
            size_t len;
            ASSERT_OK(cs_reader_chunk_take(rd, &ref.entries[i].id, &taken, &len));
            assert_true(len >= (size_t)ref.entries[i].offset + ref.entries[i].length);
            ASSERT_OK(cs_reader_slice(rd, &ref.entries[i], &p));
            assert_memory_equal(taken + ref.entries[i].offset, p, ref.entries[i].length);
            free(taken);
        }

    /* The same pages again: nothing new, the same list. */
    st = put_pages(f->repo, data, n, &again);
    assert_int_equal(st.new_bytes, 0);
    assert_ref_equal(&ref, &again);
    /* One page of them on its own: found inside its run. */
    st = put_pages(f->repo, data + 70 * 8192, 8192, &one);
    assert_int_equal(st.new_bytes, 0);
    assert_int_equal(one.count, 1);
    assert_int_equal(one.entries[0].offset, 6 * 8192);
    cs_reader_free(rd);

    /* A rebuilt index knows the runs, not their pages: the same input makes the same runs and
     * stores nothing, and everything reads. */
    f->repo = cs_repo_close(f->repo);
    _cleanup_free_ char *index = path_join(f->location, "index");
    test_rm_rf(index);
    fixture_open(f);
    st = put_pages(f->repo, data, n, &rebuilt);
    assert_int_equal(st.stored_bytes, 0);
    assert_ref_equal(&ref, &rebuilt);
    ASSERT_OK(cs_reader_new(f->repo, &rd));
    check_content(f, rd, &rebuilt, data, n, CS_CHUNKING_PAGES);
    check_content(f, rd, &one, data + 70 * 8192, 8192, CS_CHUNKING_PAGES);
    cs_reader_free(rd);
    cs_content_ref_free(&ref);
    cs_content_ref_free(&again);
    cs_content_ref_free(&one);
    cs_content_ref_free(&rebuilt);
}

/* Content made of new bytes with slices of stored pages spliced in reads back as the bytes
 * the slices name, in place; splices at the start, the end, side by side, and inside chunks. */
static void test_put_spliced(void **state)
{
    Fixture *f = *state;
    enum { PAGES = 150, SPLICES = 300 };
    size_t n_pages = PAGES * 8192, n = 3 * MiB + 17;
    _cleanup_free_ uint8_t *pages = random_data(n_pages);
    _cleanup_free_ uint8_t *plain = random_data(n);
    CsContentRef paged, spliced;
    put_pages(f->repo, pages, n_pages, &paged);
    assert_int_equal(paged.level, 0);
    _cleanup_free_ uint64_t *starts = cs_content_ref_offsets(&paged);
    assert_non_null(starts);

    CsSplice v[SPLICES];
    for (size_t i = 0; i < SPLICES; i++) {
        size_t k = (size_t)rng_below(paged.count);
        const CsChunkSlice *e = &paged.entries[k];
        uint32_t off = (uint32_t)rng_below(e->length);
        uint32_t len = (uint32_t)rng_below(MIN(e->length - off, 9000u)) + 1;
        v[i] = (CsSplice){ .at = i == 0 ? 0 : i == SPLICES - 1 ? n : rng_below(n + 1),
                           .slice = { .id = e->id, .offset = e->offset + off, .length = len } };
    }
    /* Sorted by position (a stable insertion sort keeps equal positions in order). */
    for (size_t i = 1; i < SPLICES; i++)
        for (size_t j = i; j > 0 && v[j - 1].at > v[j].at; j--) {
            CsSplice t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    v[3].at = v[2].at; /* two side by side */

    /* The content expected: plain with each slice's page bytes inserted before plain[at]. */
    Buf want = BUF_INIT;
    size_t pos = 0;
    for (size_t i = 0; i < SPLICES; i++) {
        ASSERT_OK(buf_append(&want, plain + pos, v[i].at - pos));
        pos = v[i].at;
        size_t k = 0;
        while (memcmp(paged.entries[k].id.bytes, v[i].slice.id.bytes, CS_CHUNK_ID_SIZE) != 0 ||
               v[i].slice.offset < paged.entries[k].offset ||
               v[i].slice.offset >= paged.entries[k].offset + paged.entries[k].length)
            k++;
        uint64_t in_file = starts[k] + (v[i].slice.offset - paged.entries[k].offset);
        ASSERT_OK(buf_append(&want, pages + in_file, v[i].slice.length));
    }
    ASSERT_OK(buf_append(&want, plain + pos, n - pos));

    CsWriter *w = NULL;
    CsWriterStats st;
    ASSERT_OK(cs_writer_new(f->repo, &(CsWriterParams){ .threads = 2 }, &w));
    ASSERT_OK(cs_writer_put_spliced(w, plain, n, v, SPLICES, NULL, &spliced));
    ASSERT_OK(cs_writer_flush(w));
    cs_writer_stats(w, &st);
    assert_true(st.bytes_in >= want.size); /* and the chunk list stored one level down */
    assert_true(st.new_bytes <= st.bytes_in - (want.size - n)); /* pages referred to, not stored */
    assert_int_equal(spliced.size, want.size);
    assert_true(spliced.level > 0); /* more entries than a reference holds inline */
    /* Out of order, past the end, empty: refused, nothing put. */
    CsSplice bad[2] = { v[5], v[4] };
    CsContentRef none = { 0 };
    if (bad[0].at > bad[1].at)
        ASSERT_ERR(EINVAL, cs_writer_put_spliced(w, plain, n, bad, 2, NULL, &none));
    bad[0].at = n + 1;
    ASSERT_ERR(EINVAL, cs_writer_put_spliced(w, plain, n, bad, 1, NULL, &none));
    bad[0] = v[0];
    bad[0].slice.length = 0;
    ASSERT_ERR(EINVAL, cs_writer_put_spliced(w, plain, n, bad, 1, NULL, &none));
    cs_writer_free(w);

    CsReader *rd = NULL;
    ASSERT_OK(cs_reader_new(f->repo, &rd));
    check_reads(f, rd, &spliced, want.data, want.size);
    cs_reader_free(rd);
    buf_free(&want);
    cs_content_ref_free(&paged);
    cs_content_ref_free(&spliced);
}

static void count_release(void *userdata)
{
    (*(int *)userdata)++;
}

/* Lent memory is read in place, across many batches, and given back exactly once: after the
 * writer's last read of it (bytes scribbled over then do not reach the repository), when the
 * put fails at once, and when the writer is freed before it is synced. */
static void test_put_lent(void **state)
{
    Fixture *f = *state;
    size_t n_pages = 40 * 8192, n = 21 * MiB + 5; /* more batches than the writer has */
    _cleanup_free_ uint8_t *pages = random_data(n_pages);
    _cleanup_free_ uint8_t *lent = random_data(n);
    _cleanup_free_ uint8_t *copy = malloc(n);
    assert_non_null(copy);
    memcpy(copy, lent, n);
    CsContentRef paged, plain, spliced, none = { 0 };
    put_pages(f->repo, pages, n_pages, &paged);
    _cleanup_free_ uint64_t *starts = cs_content_ref_offsets(&paged);
    assert_non_null(starts);
    /* Whole entries of the page file, at three places of the second put's 1 MiB. */
    size_t small = MiB, at[3] = { 0, 300001, small };
    CsSplice v[3];
    Buf want = BUF_INIT;
    for (size_t i = 0, pos = 0; i < 3; i++) {
        size_t k = i % paged.count;
        v[i] = (CsSplice){ .at = at[i], .slice = paged.entries[k] };
        ASSERT_OK(buf_append(&want, copy + pos, at[i] - pos));
        ASSERT_OK(buf_append(&want, pages + starts[k], paged.entries[k].length));
        pos = at[i];
    }

    int released = 0, released_small = 0;
    CsWriter *w = NULL;
    ASSERT_OK(cs_writer_new(f->repo, &(CsWriterParams){ .threads = 2 }, &w));
    ASSERT_OK(cs_writer_put_spliced(w, lent, n, NULL, 0,
                                    &(CsLoan){ .release = count_release, .userdata = &released },
                                    &plain));
    ASSERT_OK(cs_writer_put_spliced(w, lent, small, v, 3,
                                    &(CsLoan){ .release = count_release,
                                               .userdata = &released_small },
                                    &spliced));
    assert_true(released <= 1 && released_small == 0);
    ASSERT_OK(cs_writer_sync(w));
    assert_int_equal(released, 1);
    assert_int_equal(released_small, 1);
    memset(lent, 0xa5, n);
    ASSERT_OK(cs_writer_flush(w));

    /* Refused at once: given back before the put returns. */
    CsSplice bad = v[1];
    bad.at = small + 1;
    released = 0;
    ASSERT_ERR(EINVAL, cs_writer_put_spliced(w, lent, small, &bad, 1,
                                             &(CsLoan){ .release = count_release,
                                                        .userdata = &released },
                                             &none));
    assert_int_equal(released, 1);
    /* Never synced: the writer's end gives it back. */
    released = 0;
    ASSERT_OK(cs_writer_put_spliced(w, lent, n, NULL, 0,
                                    &(CsLoan){ .release = count_release, .userdata = &released },
                                    &none));
    cs_writer_free(w);
    assert_int_equal(released, 1);

    CsReader *rd = NULL;
    ASSERT_OK(cs_reader_new(f->repo, &rd));
    check_reads(f, rd, &plain, copy, n);
    check_reads(f, rd, &spliced, want.data, want.size);
    cs_reader_free(rd);
    buf_free(&want);
    cs_content_ref_free(&paged);
    cs_content_ref_free(&plain);
    cs_content_ref_free(&spliced);
}

/* A version 2 repository is written as version 2: a page per chunk and per entry, no slices. */
static void test_version2_repository(void **state)
{
    Fixture *f = *state;
    Fixture g = { .base = f->base, .key = f->key };
    g.location = path_join(f->base, "repo-v2");
    CsInitParams params = { .scrypt_n = 1024, .config = { .format_version = 2 } };
    ASSERT_OK(cs_repo_init(g.location, &params, &g.key));
    fixture_open(&g);
    assert_int_equal(g.repo->config.format_version, 2);
    size_t n = 100 * 8192;
    _cleanup_free_ uint8_t *data = random_data(n);
    CsContentRef ref, flat;
    CsWriterStats st = put_pages(g.repo, data, n, &ref);
    assert_false(ref.has_slices);
    assert_int_equal(st.new_chunks, 101); /* 100 pages and one list chunk */
    _cleanup_(buf_free) Buf enc = BUF_INIT;
    ASSERT_OK(cs_content_ref_encode(&ref, &enc));
    assert_int_equal(enc.data[8], ref.level); /* no slice flag */
    CsReader *rd = NULL;
    ASSERT_OK(cs_reader_new(g.repo, &rd));
    ASSERT_OK(cs_reader_flatten(rd, &ref, &flat));
    assert_int_equal(flat.count, 100);
    for (uint32_t i = 0; i < flat.count; i++)
        assert_int_equal(flat.entries[i].offset, 0);
    check_content(&g, rd, &ref, data, n, CS_CHUNKING_PAGES);
    cs_reader_free(rd);
    /* Lists of whole chunks cannot say a part of one: no splices. */
    CsWriter *w = NULL;
    CsContentRef plain = { 0 };
    ASSERT_OK(cs_writer_new(g.repo, &(CsWriterParams){ .threads = 1 }, &w));
    assert_false(cs_writer_can_slice(w));
    CsSplice whole = { .at = 0, .slice = flat.entries[0] };
    ASSERT_ERR(EINVAL, cs_writer_put_spliced(w, data, 100, &whole, 1, NULL, &plain));
    ASSERT_OK(cs_writer_put_spliced(w, data, 100, NULL, 0, NULL, &plain));
    ASSERT_OK(cs_writer_flush(w));
    assert_int_equal(plain.size, 100);
    cs_writer_free(w);
    cs_content_ref_free(&plain);
    cs_content_ref_free(&flat);
    cs_content_ref_free(&ref);
    g.repo = cs_repo_close(g.repo);
    free(g.location);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
/* A record's member list read from the pack (peek) and from a decoded record agree, give the
 * index of the chunk asked about, and refuse an offset that starts no member. */
static void test_peek_members(void **state)
{
    Fixture *f = *state;
    CsWriterParams params = { .threads = 1 };
    size_t n = 2 * MiB;
    _cleanup_free_ uint8_t *data = random_data(n);
    CsContentRef ref, flat;
    CsWriter *w = NULL;
    ASSERT_OK(cs_writer_new(f->repo, &params, &w));
    /* Content-defined chunks: pages of a page file would be one run, one member. */
    ASSERT_OK(cs_writer_put_buf(w, data, n, CS_CHUNKING_CDC, &ref));
    ASSERT_OK(cs_writer_flush(w));
    cs_writer_free(w);

    CsReader *rd;
    CsIndexReader *ix;
    ASSERT_OK(cs_reader_new(f->repo, &rd));
    ASSERT_OK(cs_index_reader_begin(f->repo->index, &ix));
    ASSERT_OK(cs_reader_flatten(rd, &ref, &flat));
    assert_true(flat.count >= 16);
    Buf members = BUF_INIT;
    for (int pass = 0; pass < 2; pass++) { /* from the pack, then from the decoded record */
        for (size_t k = 0; k < flat.count; k += 5) {
            CsChunkLoc loc;
            size_t at;
            ASSERT_OK(cs_index_reader_lookup(ix, &flat.entries[k].id, &loc));
            ASSERT_OK(cs_reader_peek_members(rd, &loc, &members, &at));
            assert_true(at < members.size / CS_RECORD_MEMBER_SIZE);
            assert_memory_equal(members.data + at * CS_RECORD_MEMBER_SIZE,
                                flat.entries[k].id.bytes, CS_CHUNK_ID_SIZE);
            loc.member_off += 1; /* inside a member, not at its start */
            ASSERT_ERR(EBADMSG, cs_reader_peek_members(rd, &loc, &members, &at));
        }
        const uint8_t *p;
        size_t len;
        ASSERT_OK(cs_reader_chunk(rd, &flat.entries[0].id, &p, &len));
    }
    buf_free(&members);
    cs_content_ref_free(&flat);
    cs_content_ref_free(&ref);
    cs_index_reader_end(ix);
    cs_reader_free(rd);
}

/* Records of the chunks of `ref`, as (pack, record offset) changes along its flat list. */
static size_t count_records(CsRepo *repo, const CsContentRef *ref)
{
    CsReader *rd;
    CsIndexReader *ix;
    CsContentRef flat;
    ASSERT_OK(cs_reader_new(repo, &rd));
    ASSERT_OK(cs_index_reader_begin(repo->index, &ix));
    ASSERT_OK(cs_reader_flatten(rd, ref, &flat));
    size_t n = 0;
    CsChunkLoc prev = { 0 };
    for (size_t i = 0; i < flat.count; i++) {
        CsChunkLoc loc;
        ASSERT_OK(cs_index_reader_lookup(ix, &flat.entries[i].id, &loc));
        if (n == 0 || loc.record_off != prev.record_off ||
            memcmp(loc.pack.bytes, prev.pack.bytes, CS_PACK_ID_SIZE) != 0)
            n++;
        prev = loc;
    }
    cs_content_ref_free(&flat);
    cs_index_reader_end(ix);
    cs_reader_free(rd);
    return n;
}

/* New content-defined chunks are gathered into records of four times group_size (2 MiB by
 * default), new pages into records of group_size: 3 MiB of each give 2 and 6 records. */
static void test_group_sizes(void **state)
{
    Fixture *f = *state;
    size_t n = 3 * MiB;
    _cleanup_free_ uint8_t *data = random_data(n);
    _cleanup_free_ uint8_t *pages = random_data(n);
    CsContentRef cdc, paged;
    assert_int_equal(f->repo->config.group_size, 512 * 1024);
    put_once(f->repo, data, n, CS_CHUNKING_CDC, &cdc);
    assert_int_equal(count_records(f->repo, &cdc), 2);
    put_pages(f->repo, pages, n, &paged);
    assert_int_equal(count_records(f->repo, &paged), 6);
    cs_content_ref_free(&cdc);
    cs_content_ref_free(&paged);
}

RUN_TESTS(T(test_roundtrip_threads1), T(test_group_sizes), T(test_peek_members), T(test_roundtrip_threads2),
          T(test_small_params_multi_pack), T(test_put_fd), T(test_put_fd_async),
          T(test_dedup_same_data), T(test_dedup_in_flight), T(test_identical_pages),
          T(test_all_zero), T(test_writer_free_without_flush), T(test_repo_open_errors),
          T(test_reader_index_disagrees), T(test_runs), T(test_put_spliced), T(test_put_lent),
          T(test_version2_repository),
          cmocka_unit_test(test_content_ref_codec), T(test_catalog), T(test_catalog_damaged))
