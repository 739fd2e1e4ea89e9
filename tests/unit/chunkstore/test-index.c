/*
 * chunkstore/index: the LMDB chunk index. Publish and lookup, first location wins, dropping a
 * pack, statistics and iteration, persistence across close/reopen, the repository id guard and
 * read snapshots that see new packs only after a refresh.
 */
#include "tests/unit/harness.h"

#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "chunkstore/crypto.h"
#include "chunkstore/index.h"
#include "common/fs-util.h"
#include "common/macro.h"

/* --- helpers --- */

static void random_buf(void *p, size_t n)
{
    ASSERT_OK(cs_random_bytes(p, n));
}

typedef struct Fixture {
    char *base; /* temporary directory */
    char *dir;  /* index directory inside it */
    uint8_t repo_id[16];
    CsIndex *idx;
} Fixture;

static int setup(void **state)
{
    Fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->base = strdup("/tmp/pitrfs-test-index-XXXXXX");
    assert_non_null(mkdtemp(f->base));
    f->dir = path_join(f->base, "index");
    random_buf(f->repo_id, sizeof(f->repo_id));
    ASSERT_OK(cs_index_open(f->dir, f->repo_id, false, &f->idx));
    assert_non_null(f->idx);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    Fixture *f = *state;
    cs_index_close(f->idx);
    test_rm_rf(f->base);
    free(f->dir);
    free(f->base);
    free(f);
    return 0;
}

/* n entries of one pack with random ids and plausible locations. */
static CsPackEntry *make_entries(const CsPackId *pack, size_t n)
{
    CsPackEntry *e = calloc(n ? n : 1, sizeof(*e));
    assert_non_null(e);
    uint64_t off = 32;
    for (size_t i = 0; i < n; i++) {
        random_buf(e[i].id.bytes, CS_CHUNK_ID_SIZE);
        e[i].loc = (CsChunkLoc){ .pack = *pack,
                                 .record_off = off,
                                 .record_len = (uint32_t)(1000 + i),
                                 .member_off = (uint32_t)(i % 3) * 100,
                                 .length = (uint32_t)(100 + i) };
        off += 1000 + i;
    }
    return e;
}

static void assert_loc_equal(const CsChunkLoc *a, const CsChunkLoc *b)
{
    assert_memory_equal(a->pack.bytes, b->pack.bytes, CS_PACK_ID_SIZE);
    assert_true(a->record_off == b->record_off);
    assert_int_equal(a->record_len, b->record_len);
    assert_int_equal(a->member_off, b->member_off);
    assert_int_equal(a->length, b->length);
}

static void random_pack(CsPackId *p)
{
    random_buf(p->bytes, sizeof(p->bytes));
}

static uint64_t sum_lengths(const CsPackEntry *e, size_t n)
{
    uint64_t s = 0;
    for (size_t i = 0; i < n; i++)
        s += e[i].loc.length;
    return s;
}

typedef struct CountCtx {
    size_t chunks;
    size_t in_pack; /* chunks whose location is in `pack` */
    CsPackId pack;
    size_t packs;
    uint64_t pack_bytes;
} CountCtx;

static int count_chunk(const CsChunkId *id, const CsChunkLoc *loc, void *userdata)
{
    CountCtx *c = userdata;
    (void)id;
    c->chunks++;
    if (memcmp(loc->pack.bytes, c->pack.bytes, CS_PACK_ID_SIZE) == 0)
        c->in_pack++;
    return 0;
}

static int count_pack(const CsPackId *id, uint64_t size, void *userdata)
{
    CountCtx *c = userdata;
    (void)id;
    c->packs++;
    c->pack_bytes += size;
    return 0;
}

static int stop_at_three(const CsChunkId *id, const CsChunkLoc *loc, void *userdata)
{
    (void)id;
    (void)loc;
    int *n = userdata;
    return ++*n == 3 ? 42 : 0;
}

/* --- tests --- */

static void test_index_publish_lookup(void **state)
{
    Fixture *f = *state;
    CsPackId pack, other;
    random_pack(&pack);
    random_pack(&other);
    const size_t n = 1000;
    _cleanup_free_ CsPackEntry *e = make_entries(&pack, n);
    CsChunkLoc loc;

    /* Empty index. */
    ASSERT_ERR(ENOENT, cs_index_lookup(f->idx, &e[0].id, &loc));
    assert_int_equal(cs_index_has_pack(f->idx, &pack), 0);
    CsIndexStats st;
    memset(&st, 0xff, sizeof(st));
    ASSERT_OK(cs_index_stats(f->idx, &st));
    assert_true(st.chunks == 0 && st.chunk_bytes == 0 && st.packs == 0 && st.pack_bytes == 0);

    ASSERT_OK(cs_index_publish_pack(f->idx, &pack, 123456789, e, n));
    for (size_t i = 0; i < n; i++) {
        memset(&loc, 0, sizeof(loc));
        ASSERT_OK(cs_index_lookup(f->idx, &e[i].id, &loc));
        assert_loc_equal(&loc, &e[i].loc);
    }
    /* Lookups without a result pointer would be a misuse of the contract; a missing id: */
    CsChunkId missing;
    random_buf(missing.bytes, sizeof(missing.bytes));
    ASSERT_ERR(ENOENT, cs_index_lookup(f->idx, &missing, &loc));
    /* An id that differs from a present one in its last bit. */
    missing = e[0].id;
    missing.bytes[CS_CHUNK_ID_SIZE - 1] ^= 1;
    ASSERT_ERR(ENOENT, cs_index_lookup(f->idx, &missing, &loc));

    assert_int_equal(cs_index_has_pack(f->idx, &pack), 1);
    assert_int_equal(cs_index_has_pack(f->idx, &other), 0);

    ASSERT_OK(cs_index_stats(f->idx, &st));
    assert_int_equal(st.chunks, n);
    assert_int_equal(st.chunk_bytes, sum_lengths(e, n));
    assert_int_equal(st.packs, 1);
    assert_int_equal(st.pack_bytes, 123456789);

    /* Iteration visits every chunk and pack once; a non-zero return stops it. */
    CountCtx c = { .pack = pack };
    ASSERT_OK(cs_index_foreach_chunk(f->idx, count_chunk, &c));
    ASSERT_OK(cs_index_foreach_pack(f->idx, count_pack, &c));
    assert_int_equal(c.chunks, n);
    assert_int_equal(c.in_pack, n);
    assert_int_equal(c.packs, 1);
    assert_int_equal(c.pack_bytes, 123456789);
    int calls = 0;
    assert_int_equal(cs_index_foreach_chunk(f->idx, stop_at_three, &calls), 42);
    assert_int_equal(calls, 3);

    /* An empty pack is still a known pack. */
    ASSERT_OK(cs_index_publish_pack(f->idx, &other, 64, NULL, 0));
    assert_int_equal(cs_index_has_pack(f->idx, &other), 1);
    ASSERT_OK(cs_index_stats(f->idx, &st));
    assert_int_equal(st.chunks, n);
    assert_int_equal(st.packs, 2);
    assert_int_equal(st.pack_bytes, 123456789 + 64);
}

static void test_index_first_location_wins(void **state)
{
    Fixture *f = *state;
    CsPackId a, b;
    random_pack(&a);
    random_pack(&b);
    _cleanup_free_ CsPackEntry *ea = make_entries(&a, 100);
    _cleanup_free_ CsPackEntry *eb = make_entries(&b, 100);
    /* Half of b's chunks are copies of a's chunks. */
    for (size_t i = 0; i < 50; i++)
        eb[i].id = ea[2 * i].id;
    CsChunkLoc loc;

    ASSERT_OK(cs_index_publish_pack(f->idx, &a, 1000, ea, 100));
    ASSERT_OK(cs_index_publish_pack(f->idx, &b, 2000, eb, 100));
    for (size_t i = 0; i < 100; i++) {
        ASSERT_OK(cs_index_lookup(f->idx, &ea[i].id, &loc));
        assert_loc_equal(&loc, &ea[i].loc);
    }
    for (size_t i = 50; i < 100; i++) {
        ASSERT_OK(cs_index_lookup(f->idx, &eb[i].id, &loc));
        assert_loc_equal(&loc, &eb[i].loc);
    }

    /* Publishing the same pack again changes nothing. */
    ASSERT_OK(cs_index_publish_pack(f->idx, &a, 1000, ea, 100));
    CsIndexStats st;
    ASSERT_OK(cs_index_stats(f->idx, &st));
    assert_int_equal(st.chunks, 150);
    assert_int_equal(st.packs, 2);
    assert_int_equal(st.pack_bytes, 3000);
    assert_int_equal(st.chunk_bytes, sum_lengths(ea, 100) + sum_lengths(eb + 50, 50));

    /* A duplicate id inside one pack keeps its first entry too. */
    CsPackId c;
    random_pack(&c);
    _cleanup_free_ CsPackEntry *ec = make_entries(&c, 3);
    ec[2].id = ec[0].id;
    ASSERT_OK(cs_index_publish_pack(f->idx, &c, 10, ec, 3));
    ASSERT_OK(cs_index_lookup(f->idx, &ec[0].id, &loc));
    assert_loc_equal(&loc, &ec[0].loc);
}

/* Entries are inserted in key order, those past the index's last key appended: ids below and
 * above what the index holds, copies of ids it holds, and an id given twice (on either side of
 * the last key) all end where a plain insert in the order given would put them. Page aliases
 * too. */
static void test_index_sorted_publish(void **state)
{
    Fixture *f = *state;
    CsPackId a, b;
    random_pack(&a);
    random_pack(&b);
    _cleanup_free_ CsPackEntry *ea = make_entries(&a, 50);
    _cleanup_free_ CsPackEntry *eb = make_entries(&b, 40);
    for (size_t i = 0; i < 50; i++)
        ea[i].id.bytes[0] = (uint8_t)(0x40 + (ea[i].id.bytes[0] & 0x7f)); /* 0x40..0xbf */
    ASSERT_OK(cs_index_publish_pack(f->idx, &a, 1000, ea, 50));
    for (size_t i = 0; i < 10; i++) {
        eb[i].id.bytes[0] = 0x00;      /* below everything */
        eb[10 + i].id.bytes[0] = 0xff; /* past the last key: appended */
        eb[20 + i].id = ea[i].id;      /* already held: a's location stays */
    }
    eb[30].id = eb[12].id; /* twice, past the end: the first stays */
    eb[31].id = eb[3].id;  /* twice, below */
    eb[32].id = eb[25].id; /* held, and twice */
    ASSERT_OK(cs_index_publish_pack(f->idx, &b, 2000, eb, 40));

    CsChunkLoc loc;
    for (size_t i = 0; i < 50; i++) {
        ASSERT_OK(cs_index_lookup(f->idx, &ea[i].id, &loc));
        assert_loc_equal(&loc, &ea[i].loc);
    }
    for (size_t i = 0; i < 40; i++) {
        if (i >= 20 && i <= 32) /* copies: checked below */
            continue;
        ASSERT_OK(cs_index_lookup(f->idx, &eb[i].id, &loc));
        assert_loc_equal(&loc, &eb[i].loc);
    }
    ASSERT_OK(cs_index_lookup(f->idx, &eb[30].id, &loc));
    assert_loc_equal(&loc, &eb[12].loc);
    ASSERT_OK(cs_index_lookup(f->idx, &eb[31].id, &loc));
    assert_loc_equal(&loc, &eb[3].loc);
    ASSERT_OK(cs_index_lookup(f->idx, &eb[32].id, &loc));
    assert_loc_equal(&loc, &ea[5].loc);
    CsIndexStats st;
    ASSERT_OK(cs_index_stats(f->idx, &st));
    assert_int_equal(st.chunks, 50 + 40 - 10 - 3);

    /* Page aliases: a new table's first keys are all appended; then some below and above. */
    CsPackId c;
    random_pack(&c);
    CsPageAlias pages[6];
    for (size_t i = 0; i < 6; i++) {
        random_buf(pages[i].page.bytes, CS_CHUNK_ID_SIZE);
        random_buf(pages[i].tag, CS_PAGE_ROW_TAG_SIZE);
        pages[i].in = (CsChunkSlice){ .id = ea[i].id, .offset = (uint32_t)i * 8192, .length = 8192 };
    }
    pages[0].page.bytes[0] = 0x80;
    pages[1].page.bytes[0] = 0x10;
    pages[2].page = pages[0].page; /* twice: the first stays */
    ASSERT_OK(cs_index_publish_pack_pages(f->idx, &c, 10, NULL, 0, pages, 3));
    pages[3].page.bytes[0] = 0x05;
    pages[4].page.bytes[0] = 0xf0;
    pages[5].page = pages[1].page; /* held: stays */
    CsPackId d;
    random_pack(&d);
    ASSERT_OK(cs_index_publish_pack_pages(f->idx, &d, 10, NULL, 0, pages + 3, 3));
    CsIndexReader *rd = NULL;
    ASSERT_OK(cs_index_reader_begin(f->idx, &rd));
    const size_t want[6] = { 0, 1, 0, 3, 4, 1 };
    for (size_t i = 0; i < 6; i++) {
        CsPageAlias in;
        ASSERT_OK(cs_index_reader_lookup_page(rd, &pages[i].page, &in));
        assert_memory_equal(in.in.id.bytes, pages[want[i]].in.id.bytes, CS_CHUNK_ID_SIZE);
        assert_int_equal(in.in.offset, pages[want[i]].in.offset);
        assert_memory_equal(in.tag, pages[want[i]].tag, CS_PAGE_ROW_TAG_SIZE);
    }
    cs_index_reader_end(rd);
}

static void test_index_drop_pack(void **state)
{
    Fixture *f = *state;
    CsPackId a, b, c;
    random_pack(&a);
    random_pack(&b);
    random_pack(&c);
    /* Enough chunks that a's entries sit next to each other and to b's in the key order. */
    const size_t na = 3000, nb = 2000;
    _cleanup_free_ CsPackEntry *ea = make_entries(&a, na);
    _cleanup_free_ CsPackEntry *eb = make_entries(&b, nb);
    for (size_t i = 0; i < 10; i++)
        eb[i].id = ea[i].id; /* indexed at a's location */
    CsChunkLoc loc;

    ASSERT_OK(cs_index_publish_pack(f->idx, &a, 111, ea, na));
    ASSERT_OK(cs_index_publish_pack(f->idx, &b, 222, eb, nb));
    ASSERT_OK(cs_index_drop_pack(f->idx, &a));

    assert_int_equal(cs_index_has_pack(f->idx, &a), 0);
    assert_int_equal(cs_index_has_pack(f->idx, &b), 1);
    /* Every chunk located in a is gone, including those b also holds (their entry was a's). */
    size_t still = 0;
    for (size_t i = 0; i < na; i++)
        if (cs_index_lookup(f->idx, &ea[i].id, &loc) != -ENOENT)
            still++;
    if (still)
        fail_msg("%zu of %zu chunks of the dropped pack are still indexed", still, na);
    for (size_t i = 10; i < nb; i++) {
        ASSERT_OK(cs_index_lookup(f->idx, &eb[i].id, &loc));
        assert_loc_equal(&loc, &eb[i].loc);
    }
    CountCtx cc = { .pack = a };
    ASSERT_OK(cs_index_foreach_chunk(f->idx, count_chunk, &cc));
    assert_int_equal(cc.in_pack, 0);
    assert_int_equal(cc.chunks, nb - 10);

    CsIndexStats st;
    ASSERT_OK(cs_index_stats(f->idx, &st));
    assert_int_equal(st.chunks, nb - 10);
    assert_int_equal(st.chunk_bytes, sum_lengths(eb + 10, nb - 10));
    assert_int_equal(st.packs, 1);
    assert_int_equal(st.pack_bytes, 222);

    /* Dropping an unknown pack (or twice) is harmless. */
    ASSERT_OK(cs_index_drop_pack(f->idx, &c));
    ASSERT_OK(cs_index_drop_pack(f->idx, &a));
    ASSERT_OK(cs_index_stats(f->idx, &st));
    assert_int_equal(st.chunks, nb - 10);

    /* Re-publishing the dropped pack indexes all of its chunks again. */
    ASSERT_OK(cs_index_publish_pack(f->idx, &a, 111, ea, na));
    for (size_t i = 0; i < na; i++) {
        ASSERT_OK(cs_index_lookup(f->idx, &ea[i].id, &loc));
        assert_loc_equal(&loc, &ea[i].loc);
    }

    /* Dropping every pack empties the index. */
    ASSERT_OK(cs_index_drop_pack(f->idx, &a));
    ASSERT_OK(cs_index_drop_pack(f->idx, &b));
    ASSERT_OK(cs_index_stats(f->idx, &st));
    assert_true(st.chunks == 0 && st.chunk_bytes == 0 && st.packs == 0 && st.pack_bytes == 0);
}

static void test_index_reopen(void **state)
{
    Fixture *f = *state;
    CsPackId a;
    random_pack(&a);
    _cleanup_free_ CsPackEntry *e = make_entries(&a, 200);
    CsChunkLoc loc;
    ASSERT_OK(cs_index_publish_pack(f->idx, &a, 5555, e, 200));
    f->idx = cs_index_close(f->idx);
    assert_null(f->idx);

    /* Reopen: everything is still there. */
    ASSERT_OK(cs_index_open(f->dir, f->repo_id, false, &f->idx));
    for (size_t i = 0; i < 200; i++) {
        ASSERT_OK(cs_index_lookup(f->idx, &e[i].id, &loc));
        assert_loc_equal(&loc, &e[i].loc);
    }
    assert_int_equal(cs_index_has_pack(f->idx, &a), 1);
    CsIndexStats st;
    ASSERT_OK(cs_index_stats(f->idx, &st));
    assert_int_equal(st.chunks, 200);
    assert_int_equal(st.pack_bytes, 5555);
    f->idx = cs_index_close(f->idx);

    /* Read-only: lookups work, and the data is the same. */
    ASSERT_OK(cs_index_open(f->dir, f->repo_id, true, &f->idx));
    ASSERT_OK(cs_index_lookup(f->idx, &e[7].id, &loc));
    assert_loc_equal(&loc, &e[7].loc);
    CsPackId b;
    random_pack(&b);
    _cleanup_free_ CsPackEntry *eb = make_entries(&b, 2);
    assert_true(cs_index_publish_pack(f->idx, &b, 1, eb, 2) < 0);
    ASSERT_ERR(ENOENT, cs_index_lookup(f->idx, &eb[0].id, &loc));
    f->idx = cs_index_close(f->idx);

    /* Reopen once more read-write and add to it. */
    ASSERT_OK(cs_index_open(f->dir, f->repo_id, false, &f->idx));
    ASSERT_OK(cs_index_publish_pack(f->idx, &b, 1, eb, 2));
    ASSERT_OK(cs_index_lookup(f->idx, &eb[1].id, &loc));
    assert_loc_equal(&loc, &eb[1].loc);
    assert_null(cs_index_close(NULL));
}

/*
 * Run cs_index_open in a child process with default signal dispositions (cmocka's handlers
 * would otherwise catch a crash in the child and go on running the other tests there).
 * Returns 0 and the result in *ret, or -1 with a description in `why` when the child died.
 */
static int open_in_child(const char *dir, const uint8_t repo_id[16], bool read_only, int *ret,
                         char *why, size_t why_size)
{
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        static const int sigs[] = { SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGSYS, SIGABRT };
        for (size_t i = 0; i < ARRAY_SIZE(sigs); i++)
            signal(sigs[i], SIG_DFL);
        close(pfd[0]);
        CsIndex *idx = NULL;
        int r = cs_index_open(dir, repo_id, read_only, &idx);
        if (r == 0 && !idx)
            r = INT_MIN;
        if (write(pfd[1], &r, sizeof(r)) != sizeof(r))
            _exit(2);
        cs_index_close(idx);
        _exit(0);
    }
    close(pfd[1]);
    int r = INT_MIN, status;
    ssize_t got = read(pfd[0], &r, sizeof(r));
    close(pfd[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (WIFSIGNALED(status) || got != sizeof(r)) {
        snprintf(why, why_size, "crashed the process with signal %d (%s) %s returning",
                 WIFSIGNALED(status) ? WTERMSIG(status) : 0,
                 WIFSIGNALED(status) ? strsignal(WTERMSIG(status)) : "none",
                 got == sizeof(r) ? "after" : "before");
        return -1;
    }
    *ret = r;
    return 0;
}

static void test_index_other_repo(void **state)
{
    Fixture *f = *state;
    CsPackId a;
    random_pack(&a);
    /* On the stack: the forked children below must not inherit heap blocks they cannot free
     * (valgrind would report them as leaked when the children exit). */
    CsPackEntry e[5];
    CsPackEntry *heap = make_entries(&a, 5);
    memcpy(e, heap, sizeof(e));
    free(heap);
    ASSERT_OK(cs_index_publish_pack(f->idx, &a, 1, e, 5));
    f->idx = cs_index_close(f->idx);

    uint8_t other[16];
    memcpy(other, f->repo_id, sizeof(other));
    other[15] ^= 1;
    /* In a child process, so that a crash is reported as this test's failure instead of
     * ending the whole run. */
    char failure[512] = "";
    for (int ro = 0; ro <= 1; ro++) {
        int r = 0;
        char why[256];
        if (open_in_child(f->dir, other, ro, &r, why, sizeof(why)) < 0)
            snprintf(failure + strlen(failure), sizeof(failure) - strlen(failure),
                     "cs_index_open(read_only=%d) with another repository's id %s; ", ro, why);
        else if (r != -EXDEV)
            snprintf(failure + strlen(failure), sizeof(failure) - strlen(failure),
                     "cs_index_open(read_only=%d) with another repository's id returned %d, "
                     "expected -EXDEV; ",
                     ro, r);
    }

    /* The refusal changed nothing: the right id still opens it with its data. */
    CsChunkLoc loc;
    int r1 = cs_index_open(f->dir, f->repo_id, false, &f->idx);
    int r2 = r1 == 0 ? cs_index_lookup(f->idx, &e[4].id, &loc) : r1;
    bool same = r2 == 0 && memcmp(&loc.pack, &e[4].loc.pack, sizeof(loc.pack)) == 0 &&
                loc.record_off == e[4].loc.record_off && loc.length == e[4].loc.length;
    if (failure[0])
        fail_msg("%s", failure);
    ASSERT_OK(r1);
    ASSERT_OK(r2);
    assert_true(same);
}

static void test_index_reader_snapshot(void **state)
{
    Fixture *f = *state;
    CsPackId a, b;
    random_pack(&a);
    random_pack(&b);
    _cleanup_free_ CsPackEntry *ea = make_entries(&a, 10);
    _cleanup_free_ CsPackEntry *eb = make_entries(&b, 10);
    CsChunkLoc loc;
    CsIndexReader *rd = NULL;

    ASSERT_OK(cs_index_publish_pack(f->idx, &a, 1, ea, 10));
    ASSERT_OK(cs_index_reader_begin(f->idx, &rd));
    ASSERT_OK(cs_index_reader_lookup(rd, &ea[3].id, &loc));
    assert_loc_equal(&loc, &ea[3].loc);

    /* Published after the snapshot began: invisible to it, visible to a one-shot lookup. */
    ASSERT_OK(cs_index_publish_pack(f->idx, &b, 2, eb, 10));
    for (size_t i = 0; i < 10; i++)
        ASSERT_ERR(ENOENT, cs_index_reader_lookup(rd, &eb[i].id, &loc));
    ASSERT_OK(cs_index_lookup(f->idx, &eb[0].id, &loc));
    assert_loc_equal(&loc, &eb[0].loc);

    /* After a refresh the reader sees it. */
    ASSERT_OK(cs_index_reader_refresh(rd));
    for (size_t i = 0; i < 10; i++) {
        ASSERT_OK(cs_index_reader_lookup(rd, &eb[i].id, &loc));
        assert_loc_equal(&loc, &eb[i].loc);
        ASSERT_OK(cs_index_reader_lookup(rd, &ea[i].id, &loc));
        assert_loc_equal(&loc, &ea[i].loc);
    }

    /* Same for a drop: the snapshot keeps seeing the pack's chunks until refreshed. */
    ASSERT_OK(cs_index_drop_pack(f->idx, &a));
    ASSERT_OK(cs_index_reader_lookup(rd, &ea[0].id, &loc));
    ASSERT_ERR(ENOENT, cs_index_lookup(f->idx, &ea[0].id, &loc));
    ASSERT_OK(cs_index_reader_refresh(rd));
    ASSERT_ERR(ENOENT, cs_index_reader_lookup(rd, &ea[0].id, &loc));

    /* Refreshing with nothing new is fine, and repeatedly. */
    for (int i = 0; i < 100; i++)
        ASSERT_OK(cs_index_reader_refresh(rd));
    ASSERT_OK(cs_index_reader_lookup(rd, &eb[9].id, &loc));

    /* Several readers at once. */
    CsIndexReader *rd2 = NULL;
    ASSERT_OK(cs_index_reader_begin(f->idx, &rd2));
    ASSERT_OK(cs_index_reader_lookup(rd2, &eb[5].id, &loc));
    assert_null(cs_index_reader_end(rd2));
    assert_null(cs_index_reader_end(rd));
    assert_null(cs_index_reader_end(NULL));
}

/* A pack larger than one write transaction's rows (8,192): published in parts, the pack's row
 * with the last, every chunk and page findable; under a memory bound that releases the map
 * every few lookups, lookups still answer. A paused reader looks up again after a refresh and
 * then sees what was published meanwhile. */
static void test_index_large_pack(void **state)
{
    Fixture *f = *state;
    enum { N = 20000, N_PAGES = 9000 };
    CsPackId a, b;
    random_pack(&a);
    random_pack(&b);
    cs_index_bound_memory(f->idx, 7);
    _cleanup_free_ CsPackEntry *ea = make_entries(&a, N);
    _cleanup_free_ CsPageAlias *pages = calloc(N_PAGES, sizeof(*pages));
    assert_non_null(pages);
    for (size_t i = 0; i < N_PAGES; i++) {
        random_buf(pages[i].page.bytes, CS_CHUNK_ID_SIZE);
        pages[i].in = (CsChunkSlice){ .id = ea[i].id, .offset = (uint32_t)i, .length = 8192 };
    }
    CsIndexReader *rd = NULL;
    ASSERT_OK(cs_index_reader_begin(f->idx, &rd));
    cs_index_reader_pause(rd);
    cs_index_reader_pause(rd); /* twice is fine */
    ASSERT_OK(cs_index_publish_pack_pages(f->idx, &a, 12345, ea, N, pages, N_PAGES));
    uint64_t n_packs;
    ASSERT_OK(cs_index_pack_count(f->idx, &n_packs));
    assert_int_equal(n_packs, 1);
    assert_int_equal(cs_index_has_pack(f->idx, &a), 1);
    CsIndexStats st;
    ASSERT_OK(cs_index_stats(f->idx, &st));
    assert_int_equal(st.chunks, N);
    assert_true(st.pack_bytes == 12345);

    ASSERT_OK(cs_index_reader_refresh(rd));
    CsChunkLoc loc;
    for (size_t i = 0; i < N; i++) {
        ASSERT_OK(cs_index_reader_lookup(rd, &ea[i].id, &loc));
        assert_loc_equal(&loc, &ea[i].loc);
    }
    for (size_t i = 0; i < N_PAGES; i++) {
        CsPageAlias in;
        ASSERT_OK(cs_index_reader_lookup_page(rd, &pages[i].page, &in));
        assert_memory_equal(in.in.id.bytes, ea[i].id.bytes, CS_CHUNK_ID_SIZE);
        assert_int_equal(in.in.offset, i);
    }
    /* Pages only, more than one transaction of them, and no chunks. */
    ASSERT_OK(cs_index_publish_pack_pages(f->idx, &b, 1, NULL, 0, pages, N_PAGES));
    assert_int_equal(cs_index_has_pack(f->idx, &b), 1);
    cs_index_reader_pause(rd);
    assert_null(cs_index_reader_end(rd));
}

/* Bytes of data.mdb after 12 packs published while a reader exists, paused between its lookups
 * or not: a snapshot held meanwhile keeps LMDB from reusing the pages each publish frees. */
static off_t file_after_publishes(const char *dir, bool pause)
{
    uint8_t repo_id[16] = { 1 };
    CsIndex *idx = NULL;
    ASSERT_OK(cs_index_open(dir, repo_id, false, &idx));
    CsIndexReader *rd = NULL;
    ASSERT_OK(cs_index_reader_begin(idx, &rd));
    CsChunkLoc loc;
    for (int i = 0; i < 12; i++) {
        CsPackId p;
        random_pack(&p);
        _cleanup_free_ CsPackEntry *e = make_entries(&p, 3000);
        ASSERT_OK(cs_index_publish_pack(idx, &p, 1, e, 3000));
        CsChunkId absent = { { 0 } };
        ASSERT_ERR(ENOENT, cs_index_reader_lookup(rd, &absent, &loc)); /* a use */
        if (pause)
            cs_index_reader_pause(rd);
    }
    cs_index_reader_end(rd);
    cs_index_close(idx);
    _cleanup_free_ char *path = path_join(dir, "data.mdb");
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

static void test_index_paused_reader_lets_pages_be_reused(void **state)
{
    Fixture *f = *state;
    _cleanup_free_ char *held = path_join(f->base, "held"), *paused = path_join(f->base, "paused");
    off_t held_size = file_after_publishes(held, false);
    off_t paused_size = file_after_publishes(paused, true);
    print_message("data.mdb after 12 publishes: %lld bytes with a held reader, %lld paused\n",
                  (long long)held_size, (long long)paused_size);
    assert_true(paused_size * 3 < held_size * 2);
}

static void test_index_loc_extremes(void **state)
{
    Fixture *f = *state;
    CsPackId a;
    memset(a.bytes, 0xff, sizeof(a.bytes));
    CsPackEntry e[2];
    memset(e[0].id.bytes, 0, CS_CHUNK_ID_SIZE);
    memset(e[1].id.bytes, 0xff, CS_CHUNK_ID_SIZE);
    e[0].loc = (CsChunkLoc){ .pack = a };
    e[1].loc = (CsChunkLoc){ .pack = a,
                             .record_off = UINT64_MAX - 1,
                             .record_len = UINT32_MAX,
                             .member_off = UINT32_MAX - 1,
                             .length = UINT32_MAX };
    ASSERT_OK(cs_index_publish_pack(f->idx, &a, UINT64_MAX, e, 2));
    CsChunkLoc loc;
    ASSERT_OK(cs_index_lookup(f->idx, &e[0].id, &loc));
    assert_loc_equal(&loc, &e[0].loc);
    ASSERT_OK(cs_index_lookup(f->idx, &e[1].id, &loc));
    assert_loc_equal(&loc, &e[1].loc);
    CsIndexStats st;
    ASSERT_OK(cs_index_stats(f->idx, &st));
    assert_true(st.pack_bytes == UINT64_MAX);
    assert_true(st.chunk_bytes == UINT32_MAX);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
RUN_TESTS(T(test_index_publish_lookup), T(test_index_first_location_wins),
          T(test_index_sorted_publish),
          T(test_index_drop_pack), T(test_index_reopen), T(test_index_other_repo),
          T(test_index_reader_snapshot), T(test_index_large_pack),
          T(test_index_paused_reader_lets_pages_be_reused), T(test_index_loc_extremes))
