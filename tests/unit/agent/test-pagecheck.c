/*
 * PostgreSQL data page verification (agent/pagecheck.c) against pages written by a real
 * PostgreSQL 15.18 cluster with data checksums (tests/data/pg15-pages, see its README): each
 * page's own pd_checksum is the known answer. Also: single-byte damage anywhere, new pages,
 * the header sanity rules, pages newer than the backup start, buffers of several pages with
 * one damaged page and ragged edges, and relation file names.
 */
#include "tests/unit/harness.h"

#include <stdbool.h>

#include "agent/pagecheck.h"
#include "common/macro.h"

#define PAGE AGENT_PAGE_SIZE

/* The real pages: file name, block number of the file's first page, pages in the file. */
#define HEAP_FILE "pg15-pages/rel-16384-blk0-3.pages" /* user table pc_items, blocks 0..3 */

typedef struct RealPage {
    const char *file;
    uint32_t blkno;
    uint16_t checksum; /* pd_checksum, written by PostgreSQL */
    uint64_t lsn;
} RealPage;

static const RealPage real_pages[] = {
    { HEAP_FILE, 0, 0x9a31, UINT64_C(0x1780260) },
    { HEAP_FILE, 1, 0xbc8d, UINT64_C(0x17822A8) },
    { HEAP_FILE, 2, 0x6e2d, UINT64_C(0x1784300) },
    { HEAP_FILE, 3, 0x956b, UINT64_C(0x1784BE8) },
    { "pg15-pages/rel-1249-blk37.page", 37, 0x4fd9, UINT64_C(0x150BA58) }, /* pg_attribute */
    { "pg15-pages/rel-1259-blk0.page", 0, 0xab54, UINT64_C(0x1791408) },   /* pg_class */
    { "pg15-pages/rel-16389-blk1.page", 1, 0xd890, UINT64_C(0x177C108) },  /* btree leaf */
};

/* A copy of real page i (malloc'd, so valgrind sees any read past its end). */
static uint8_t *load_real_page(size_t i)
{
    const RealPage *r = &real_pages[i];
    _cleanup_free_ uint8_t *file = NULL;
    uint8_t *page = test_xmalloc(PAGE);
    size_t len, at = 0;

    file = test_read_data_file(r->file, &len);
    assert_int_equal(len % PAGE, 0);
    if (strcmp(r->file, HEAP_FILE) == 0)
        at = (size_t)r->blkno * PAGE;
    assert_true(at + PAGE <= len);
    memcpy(page, file + at, PAGE);
    return page;
}

static uint16_t get16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static void set16(uint8_t *p, uint16_t v)
{
    memcpy(p, &v, sizeof(v));
}

/* Give a page the checksum it should have at blkno, as PostgreSQL does before writing it. */
static void stamp(uint8_t *page, uint32_t blkno)
{
    set16(page + 8, agent_page_checksum(page, blkno));
}

/* ---- checksum known answers ---- */

static void test_header_decode(void **state)
{
    (void)state;
    _cleanup_free_ uint8_t *heap = load_real_page(2);
    _cleanup_free_ uint8_t *pg_class = load_real_page(5);
    _cleanup_free_ uint8_t *btree = load_real_page(6);
    AgentPageHeader h;

    agent_page_header_parse(heap, &h);
    assert_true(h.lsn == UINT64_C(0x1784300));
    assert_int_equal(h.checksum, 0x6e2d);
    assert_int_equal(h.flags, 0x0004); /* PD_ALL_VISIBLE after VACUUM */
    assert_int_equal(h.lower, 504);
    assert_int_equal(h.upper, 560);
    assert_int_equal(h.special, 8192);
    assert_int_equal(h.pagesize_version, 0x2004); /* 8192 | layout version 4 */
    assert_int_equal(h.prune_xid, 0);
    assert_true(agent_page_lsn(heap) == UINT64_C(0x1784300));

    agent_page_header_parse(pg_class, &h);
    assert_true(h.lsn == UINT64_C(0x1791408));
    assert_int_equal(h.flags, 0x0001); /* PD_HAS_FREE_LINES */
    assert_int_equal(h.lower, 212);
    assert_int_equal(h.upper, 6880);
    assert_int_equal(h.prune_xid, 724);

    agent_page_header_parse(btree, &h);
    assert_int_equal(h.special, 8176); /* BTPageOpaqueData */

    /* pd_lsn is {xlogid, xrecoff}: the high half comes first. */
    uint8_t hdr[AGENT_PAGE_HEADER_SIZE] = { 0 };
    uint32_t hi = 0x12, lo = 0x3456789A;
    memcpy(hdr, &hi, 4);
    memcpy(hdr + 4, &lo, 4);
    assert_true(agent_page_lsn(hdr) == UINT64_C(0x123456789A));
}

static void test_real_pages_known_answers(void **state)
{
    (void)state;
    for (size_t i = 0; i < ARRAY_SIZE(real_pages); i++) {
        const RealPage *r = &real_pages[i];
        _cleanup_free_ uint8_t *page = load_real_page(i);
        AgentPageChecksums sums;

        assert_int_equal(get16(page + 8), r->checksum);
        assert_true(agent_page_lsn(page) == r->lsn);
        if (agent_page_checksum(page, r->blkno) != r->checksum)
            fail_msg("%s block %u: computed %04x, PostgreSQL wrote %04x", r->file, r->blkno,
                     agent_page_checksum(page, r->blkno), r->checksum);

        assert_int_equal(agent_page_verify(page, r->blkno, 0, &sums), AGENT_PAGE_OK);
        assert_int_equal(sums.computed, r->checksum);
        assert_int_equal(sums.stored, r->checksum);
        /* A backup that started after the page's last change checks it too. */
        assert_int_equal(agent_page_verify(page, r->blkno, r->lsn + 1, NULL), AGENT_PAGE_OK);

        /* The block number is in the checksum: the same bytes elsewhere are damage. (Below
         * 64, where it is sure to show: see test_checksum_block_mixing.) */
        static const uint32_t elsewhere[] = { 0, 1, 2, 3, 4, 5, 36, 37, 38, 63 };
        for (size_t j = 0; j < ARRAY_SIZE(elsewhere); j++) {
            if (elsewhere[j] == r->blkno)
                continue;
            assert_int_equal(agent_page_verify(page, elsewhere[j], 0, &sums),
                             AGENT_PAGE_CORRUPT_CHECKSUM);
            assert_int_equal(sums.stored, r->checksum);
            assert_int_not_equal(sums.computed, r->checksum);
            assert_int_equal(sums.computed, agent_page_checksum(page, elsewhere[j]));
        }
    }
}

/* The block number is xored into the 32-bit sum S before the reduction modulo 65535: for
 * b < 64, S ^ b and S ^ 2 differ by less than 64, so no other block of the first 64 can share
 * block 2's checksum. */
static void test_checksum_block_mixing(void **state)
{
    (void)state;
    _cleanup_free_ uint8_t *page = load_real_page(2);
    uint16_t at2 = agent_page_checksum(page, 2);

    assert_int_equal(at2, 0x6e2d);
    for (uint32_t b = 0; b < 64; b++)
        if (b != 2)
            assert_int_not_equal(agent_page_checksum(page, b), at2);
    /* But 2^16 is 1 modulo 65535, so bit 16 + k of the block number can stand in for bit k:
     * this page's sum has bit 1 and bit 17 clear, and reads the same at block 131072 (block
     * 0 of segment 1) as at block 2. PostgreSQL's checksum does the same; this pins the order
     * of xor and reduction, and the modulus. */
    assert_int_equal(agent_page_checksum(page, 131072), 0x6e2d);
    assert_int_equal(agent_page_verify(page, 131072, 0, NULL), AGENT_PAGE_OK);
    assert_int_not_equal(agent_page_checksum(page, 131074), 0x6e2d);

    /* The top of the block number range: 32-bit, never 0 (the result is 1 .. 65535). */
    for (uint32_t b = 0xFFFFFF00u; b != 0; b++)
        assert_int_not_equal(agent_page_checksum(page, b), 0);
}

static void test_alignment(void **state)
{
    (void)state;
    _cleanup_free_ uint8_t *page = load_real_page(4);
    _cleanup_free_ uint8_t *odd = test_xmalloc(PAGE + 3);

    for (size_t shift = 1; shift <= 3; shift++) {
        memcpy(odd + shift, page, PAGE);
        assert_int_equal(agent_page_checksum(odd + shift, 37), 0x4fd9);
        assert_int_equal(agent_page_verify(odd + shift, 37, 0, NULL), AGENT_PAGE_OK);
    }
    /* The page itself is not modified (pg_checksum_page() zeroes pd_checksum in place). */
    assert_int_equal(get16(page + 8), 0x4fd9);
}

/* ---- damage ---- */

static void test_flip_one_byte(void **state)
{
    (void)state;
    /* Header fields (LSN, checksum, flags, lower, upper, special, version, prune xid), the
     * line pointers, the middle (the 4 KiB boundary a torn write would leave) and the tail. */
    static const size_t positions[] = { 0, 3, 4, 7, 8, 9, 10, 12, 13, 14, 16, 17, 18, 20, 23,
                                        24, 100, 503, 2048, 4095, 4096, 6000, 8000, 8190, 8191 };
    static const uint8_t masks[] = { 0x01, 0x10, 0x80, 0xFF };

    for (size_t i = 0; i < ARRAY_SIZE(real_pages); i++) {
        const RealPage *r = &real_pages[i];
        _cleanup_free_ uint8_t *page = load_real_page(i);

        for (size_t p = 0; p < ARRAY_SIZE(positions); p++)
            for (size_t m = 0; m < ARRAY_SIZE(masks); m++) {
                AgentPageChecksums sums;
                AgentPageVerdict v;

                page[positions[p]] ^= masks[m];
                v = agent_page_verify(page, r->blkno, 0, &sums);
                if (v != AGENT_PAGE_CORRUPT_CHECKSUM)
                    fail_msg("%s block %u, byte %zu ^ 0x%02x: %s", r->file, r->blkno,
                             positions[p], masks[m], agent_page_verdict_to_string(v));
                assert_int_equal(sums.stored, get16(page + 8));
                assert_int_not_equal(sums.computed, sums.stored);
                page[positions[p]] ^= masks[m];
            }
        assert_int_equal(agent_page_verify(page, r->blkno, 0, NULL), AGENT_PAGE_OK);
    }
}

/* ---- new pages ---- */

static void test_new_page(void **state)
{
    (void)state;
    _cleanup_free_ uint8_t *zero = calloc(1, PAGE);
    _cleanup_free_ uint8_t *page = load_real_page(2);
    AgentPageChecksums sums = { .computed = 1, .stored = 1 };

    assert_non_null(zero);
    assert_int_equal(agent_page_verify(zero, 0, 0, &sums), AGENT_PAGE_NEW);
    assert_int_equal(sums.computed, 0); /* no checksum to compute */
    assert_int_equal(sums.stored, 0);
    assert_int_equal(agent_page_verify(zero, 12345, UINT64_C(0x1000000), NULL), AGENT_PAGE_NEW);
    assert_false(agent_page_verdict_is_bad(AGENT_PAGE_NEW));

    /* pd_upper 0 claims "new", but one byte anywhere says otherwise. */
    static const size_t positions[] = { 0, 8, 10, 12, 16, 24, 4096, 8191 };
    for (size_t i = 0; i < ARRAY_SIZE(positions); i++) {
        zero[positions[i]] = 0x01;
        assert_int_equal(agent_page_verify(zero, 0, 0, &sums), AGENT_PAGE_CORRUPT_HEADER);
        assert_int_equal(sums.computed, 0);
        /* Byte 0 is in the LSN's high half: 1/0 is after the start, so it is skipped. */
        assert_int_equal(agent_page_verify(zero, 0, UINT64_C(0x1000000), NULL),
                         positions[i] == 0 ? AGENT_PAGE_SKIPPED_NEWER
                                           : AGENT_PAGE_CORRUPT_HEADER);
        zero[positions[i]] = 0;
    }

    /* A real page whose pd_upper became 0, even with a checksum that matches. */
    set16(page + 14, 0);
    stamp(page, 2);
    assert_int_equal(agent_page_verify(page, 2, 0, NULL), AGENT_PAGE_CORRUPT_HEADER);
    /* ...unless it changed after the backup started, like any other page (pg_basebackup
     * skips every pd_upper 0 page). */
    assert_int_equal(agent_page_verify(page, 2, UINT64_C(0x1784300), NULL),
                     AGENT_PAGE_SKIPPED_NEWER);
}

/* ---- header sanity (checksum made right, so only the header is wrong) ---- */

typedef struct HeaderCase {
    size_t page;   /* index in real_pages */
    size_t offset; /* of the uint16 field */
    uint16_t value;
    AgentPageVerdict verdict;
} HeaderCase;

static void test_header_sanity(void **state)
{
    (void)state;
    /* heap block 2: lower 504, upper 560, special 8192; btree block 1: lower 1624, upper
     * 1776, special 8176. */
    static const HeaderCase cases[] = {
        { 2, 10, 0x0008, AGENT_PAGE_CORRUPT_HEADER }, /* flag outside PD_VALID_FLAG_BITS */
        { 2, 10, 0x8004, AGENT_PAGE_CORRUPT_HEADER },
        { 2, 10, 0x0007, AGENT_PAGE_OK },             /* all valid flags */
        { 2, 10, 0x0000, AGENT_PAGE_OK },
        { 2, 12, 0, AGENT_PAGE_CORRUPT_HEADER },      /* pd_lower inside the header */
        { 2, 12, 23, AGENT_PAGE_CORRUPT_HEADER },
        { 2, 12, 24, AGENT_PAGE_OK },                 /* SizeOfPageHeaderData: no items */
        { 2, 12, 561, AGENT_PAGE_CORRUPT_HEADER },    /* pd_lower > pd_upper */
        { 2, 12, 560, AGENT_PAGE_OK },                /* full page: lower == upper */
        { 2, 14, 503, AGENT_PAGE_CORRUPT_HEADER },    /* pd_upper < pd_lower */
        { 6, 14, 8184, AGENT_PAGE_CORRUPT_HEADER },   /* pd_upper > pd_special */
        { 6, 14, 8176, AGENT_PAGE_OK },               /* upper == special: no tuples */
        { 2, 16, 8200, AGENT_PAGE_CORRUPT_HEADER },   /* pd_special > BLCKSZ */
        { 2, 16, 0xFFF8, AGENT_PAGE_CORRUPT_HEADER },
        { 2, 16, 8188, AGENT_PAGE_CORRUPT_HEADER },   /* not MAXALIGNed */
        { 2, 16, 8180, AGENT_PAGE_CORRUPT_HEADER },
        { 2, 16, 8184, AGENT_PAGE_OK },               /* MAXALIGNed */
        { 6, 16, 8180, AGENT_PAGE_CORRUPT_HEADER },
        { 2, 18, 0x1004, AGENT_PAGE_OK },             /* pd_pagesize_version: not checked */
    };

    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        const HeaderCase *c = &cases[i];
        uint32_t blkno = real_pages[c->page].blkno;
        _cleanup_free_ uint8_t *page = load_real_page(c->page);
        AgentPageChecksums sums;
        AgentPageVerdict v;

        set16(page + c->offset, c->value);
        stamp(page, blkno);
        v = agent_page_verify(page, blkno, 0, &sums);
        if (v != c->verdict)
            fail_msg("case %zu (offset %zu = %u): %s, expected %s", i, c->offset, c->value,
                     agent_page_verdict_to_string(v), agent_page_verdict_to_string(c->verdict));
        assert_int_equal(sums.computed, sums.stored);
        /* Without the new checksum, the checksum is what fails first. */
        set16(page + 8, real_pages[c->page].checksum);
        assert_int_equal(agent_page_verify(page, blkno, 0, NULL), AGENT_PAGE_CORRUPT_CHECKSUM);
    }
}

/* ---- pages newer than the backup start ---- */

static void test_skipped_newer(void **state)
{
    (void)state;
    _cleanup_free_ uint8_t *page = load_real_page(2);
    const uint64_t lsn = UINT64_C(0x1784300);
    AgentPageChecksums sums;

    assert_int_equal(agent_page_verify(page, 2, lsn, &sums), AGENT_PAGE_SKIPPED_NEWER);
    assert_int_equal(sums.computed, 0);
    assert_int_equal(sums.stored, 0x6e2d);
    assert_int_equal(agent_page_verify(page, 2, lsn - 1, NULL), AGENT_PAGE_SKIPPED_NEWER);
    assert_int_equal(agent_page_verify(page, 2, 1, NULL), AGENT_PAGE_SKIPPED_NEWER);
    assert_int_equal(agent_page_verify(page, 2, lsn + 1, NULL), AGENT_PAGE_OK);
    assert_int_equal(agent_page_verify(page, 2, UINT64_MAX, NULL), AGENT_PAGE_OK);
    assert_int_equal(agent_page_verify(page, 2, 0, NULL), AGENT_PAGE_OK); /* 0: check all */

    /* Damage on a page written since the start is not looked at: replay rewrites it. */
    page[5000] ^= 0xFF;
    assert_int_equal(agent_page_verify(page, 2, lsn, NULL), AGENT_PAGE_SKIPPED_NEWER);
    assert_int_equal(agent_page_verify(page, 2, lsn + 1, NULL), AGENT_PAGE_CORRUPT_CHECKSUM);
    /* So is a bad header. */
    page[5000] ^= 0xFF;
    set16(page + 16, 8188);
    assert_int_equal(agent_page_verify(page, 2, lsn, NULL), AGENT_PAGE_SKIPPED_NEWER);
}

/* ---- buffers of pages ---- */

typedef struct BadLog {
    AgentPageBad bad[8];
    size_t n;
    AgentPageVerdict answer; /* what the callback returns; _AGENT_PAGE_VERDICT_MAX: as found */
} BadLog;

static AgentPageVerdict log_bad(const AgentPageBad *bad, void *userdata)
{
    BadLog *log = userdata;

    assert_true(log->n < ARRAY_SIZE(log->bad));
    log->bad[log->n++] = *bad;
    return log->answer == _AGENT_PAGE_VERDICT_MAX ? bad->verdict : log->answer;
}

static void assert_stats(const AgentPageCheckStats *s, uint64_t verified, uint64_t new_pages,
                         uint64_t skipped, uint64_t bad, uint64_t partial, uint64_t partial_bytes)
{
    assert_int_equal(s->verified, verified);
    assert_int_equal(s->new_pages, new_pages);
    assert_int_equal(s->skipped, skipped);
    assert_int_equal(s->bad, bad);
    assert_int_equal(s->partial, partial);
    assert_int_equal(s->partial_bytes, partial_bytes);
}

static void test_pages_verify_damaged(void **state)
{
    (void)state;
    _cleanup_free_ uint8_t *file = NULL;
    AgentPageCheckStats stats = { 0 };
    BadLog log = { .answer = _AGENT_PAGE_VERDICT_MAX };
    size_t len;

    file = test_read_data_file(HEAP_FILE, &len);
    assert_int_equal(len, 4 * PAGE);
    assert_int_equal(agent_pages_verify(file, len, 0, 0, 0, &stats, log_bad, &log), 0);
    assert_stats(&stats, 4, 0, 0, 0, 0, 0);
    assert_int_equal(log.n, 0);

    /* One byte of block 2's tuples. */
    file[2 * PAGE + 5000] ^= 0x04;
    stats = (AgentPageCheckStats){ 0 };
    assert_int_equal(agent_pages_verify(file, len, 0, 0, 0, &stats, log_bad, &log), 1);
    assert_stats(&stats, 3, 0, 0, 1, 0, 0);
    assert_int_equal(log.n, 1);
    assert_int_equal(log.bad[0].blkno, 2);
    assert_int_equal(log.bad[0].file_offset, 2 * PAGE);
    assert_int_equal(log.bad[0].verdict, AGENT_PAGE_CORRUPT_CHECKSUM);
    assert_int_equal(log.bad[0].sums.stored, 0x6e2d);
    assert_int_not_equal(log.bad[0].sums.computed, 0x6e2d);

    /* The caller read the page again and found it whole: it is counted as verified. */
    log = (BadLog){ .answer = AGENT_PAGE_OK };
    stats = (AgentPageCheckStats){ 0 };
    assert_int_equal(agent_pages_verify(file, len, 0, 0, 0, &stats, log_bad, &log), 0);
    assert_stats(&stats, 4, 0, 0, 0, 0, 0);
    assert_int_equal(log.n, 1);

    /* Without a callback the first verdict counts. */
    stats = (AgentPageCheckStats){ 0 };
    assert_int_equal(agent_pages_verify(file, len, 0, 0, 0, &stats, NULL, NULL), 1);
    assert_stats(&stats, 3, 0, 0, 1, 0, 0);

    /* Blocks 2..3 alone, read at their offset: block numbers come from the offset. */
    log = (BadLog){ .answer = _AGENT_PAGE_VERDICT_MAX };
    stats = (AgentPageCheckStats){ 0 };
    assert_int_equal(agent_pages_verify(file + 2 * PAGE, 2 * PAGE, 2 * PAGE, 0, 0, &stats,
                                        log_bad, &log),
                     1);
    assert_stats(&stats, 1, 0, 0, 1, 0, 0);
    assert_int_equal(log.bad[0].blkno, 2);
    assert_int_equal(log.bad[0].file_offset, 2 * PAGE);

    /* Stats add up across calls. */
    assert_int_equal(agent_pages_verify(file, 2 * PAGE, 0, 0, 0, &stats, NULL, NULL), 0);
    assert_stats(&stats, 3, 0, 0, 1, 0, 0);
}

static void test_pages_verify_mixed(void **state)
{
    (void)state;
    _cleanup_free_ uint8_t *file = NULL;
    AgentPageCheckStats stats = { 0 };
    BadLog log = { .answer = _AGENT_PAGE_VERDICT_MAX };
    size_t len;

    /* Block 0 fine, block 1 never written, block 2 damaged, block 3 changed since the start
     * (0/1784BE8 is block 3's LSN; block 2's is 0/1784300, before it). */
    file = test_read_data_file(HEAP_FILE, &len);
    memset(file + PAGE, 0, PAGE);
    file[2 * PAGE + 8191] ^= 0x80;
    file[3 * PAGE + 6000] ^= 0x80;
    assert_int_equal(agent_pages_verify(file, len, 0, 0, UINT64_C(0x1784BE8), &stats, log_bad,
                                        &log),
                     1);
    assert_stats(&stats, 1, 1, 1, 1, 0, 0);
    assert_int_equal(log.n, 1);
    assert_int_equal(log.bad[0].blkno, 2);
}

static void test_pages_verify_segment(void **state)
{
    (void)state;
    _cleanup_free_ uint8_t *file = NULL;
    AgentPageCheckStats stats = { 0 };
    BadLog log = { .answer = _AGENT_PAGE_VERDICT_MAX };
    AgentRelFile rf;
    size_t len;

    /* The same pages as the first four of segment 3: blocks 393216 .. 393219. */
    assert_true(agent_relfile_parse("16384.3", &rf));
    assert_int_equal(agent_relfile_first_block(&rf), 393216);
    file = test_read_data_file(HEAP_FILE, &len);
    assert_int_equal(agent_pages_verify(file, len, 0, agent_relfile_first_block(&rf), 0, &stats,
                                        log_bad, &log),
                     4);
    for (uint32_t i = 0; i < 4; i++) {
        assert_int_equal(log.bad[i].blkno, 393216 + i);
        stamp(file + (size_t)i * PAGE, 393216 + i);
    }
    file[PAGE + 30] ^= 0x01; /* a line pointer of block 393217 */
    log = (BadLog){ .answer = _AGENT_PAGE_VERDICT_MAX };
    stats = (AgentPageCheckStats){ 0 };
    assert_int_equal(agent_pages_verify(file, len, 0, agent_relfile_first_block(&rf), 0, &stats,
                                        log_bad, &log),
                     1);
    assert_stats(&stats, 3, 0, 0, 1, 0, 0);
    assert_int_equal(log.n, 1);
    assert_int_equal(log.bad[0].blkno, 393217);
    assert_int_equal(log.bad[0].file_offset, PAGE);
}

static void test_pages_verify_partial(void **state)
{
    (void)state;
    _cleanup_free_ uint8_t *file = NULL;
    _cleanup_free_ uint8_t *longer = NULL;
    AgentPageCheckStats stats = { 0 };
    size_t len;

    file = test_read_data_file(HEAP_FILE, &len);

    /* A trailing piece: the file grew by half a page while it was read. */
    longer = test_xmalloc(len + 100);
    memcpy(longer, file, len);
    memset(longer + len, 0xAB, 100);
    assert_int_equal(agent_pages_verify(longer, len + 100, 0, 0, 0, &stats, NULL, NULL), 0);
    assert_stats(&stats, 4, 0, 0, 0, 1, 100);

    /* Only part of one page. */
    stats = (AgentPageCheckStats){ 0 };
    assert_int_equal(agent_pages_verify(file, 4096, 0, 0, 0, &stats, NULL, NULL), 0);
    assert_stats(&stats, 0, 0, 0, 0, 1, 4096);
    stats = (AgentPageCheckStats){ 0 };
    assert_int_equal(agent_pages_verify(file, 0, 0, 0, 0, &stats, NULL, NULL), 0);
    assert_stats(&stats, 0, 0, 0, 0, 0, 0);

    /* A buffer that starts inside block 0: its tail is skipped, blocks 1..3 are verified. */
    stats = (AgentPageCheckStats){ 0 };
    assert_int_equal(agent_pages_verify(file + 100, len - 100, 100, 0, 0, &stats, NULL, NULL), 0);
    assert_stats(&stats, 3, 0, 0, 0, 1, PAGE - 100);
    /* ...and ends inside block 3. */
    stats = (AgentPageCheckStats){ 0 };
    assert_int_equal(agent_pages_verify(file + 100, len - 200, 100, 0, 0, &stats, NULL, NULL), 0);
    assert_stats(&stats, 2, 0, 0, 0, 2, PAGE - 100 + PAGE - 100);
    /* Entirely inside one page. */
    stats = (AgentPageCheckStats){ 0 };
    assert_int_equal(agent_pages_verify(file + 100, 50, 100, 0, 0, &stats, NULL, NULL), 0);
    assert_stats(&stats, 0, 0, 0, 0, 1, 50);
}

/* ---- relation file names ---- */

static void test_relfile_names(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        uint32_t relfilenode;
        AgentRelFork fork;
        uint32_t segno, first_block;
    } valid[] = {
        { "16384", 16384, AGENT_FORK_MAIN, 0, 0 },
        { "16384.2", 16384, AGENT_FORK_MAIN, 2, 262144 },
        { "16384_fsm", 16384, AGENT_FORK_FSM, 0, 0 },
        { "16384_vm.1", 16384, AGENT_FORK_VM, 1, 131072 },
        { "16384_init", 16384, AGENT_FORK_INIT, 0, 0 },
        { "1259", 1259, AGENT_FORK_MAIN, 0, 0 },
        { "1", 1, AGENT_FORK_MAIN, 0, 0 },
        { "4294967295", 4294967295u, AGENT_FORK_MAIN, 0, 0 },
        { "16384_init.10", 16384, AGENT_FORK_INIT, 10, 1310720 },
        { "16384.32767", 16384, AGENT_FORK_MAIN, 32767, 4294836224u },
    };
    static const char *const invalid[] = {
        "pg_filenode.map", "16384.0", "0", "16384_xx", "t3_16384", "PG_VERSION", "16384.", "1a",
        "", "pg_internal.init", "pg_control", "016384", "16384.01", "4294967296",
        "99999999999", "16384.32768", "16384_main", "16384_", "16384_fsm_vm", "16384.1.2",
        "16384_fsm.0", "16384_vmx", "16384.1_fsm", "+16384", "-1", " 16384", "16384 ",
        "t3_16384_fsm", "pgsql_tmp", "0.1", "_fsm",
    };

    for (size_t i = 0; i < ARRAY_SIZE(valid); i++) {
        AgentRelFile f = { 0 };

        if (!agent_relfile_parse(valid[i].name, &f))
            fail_msg("\"%s\" was refused", valid[i].name);
        assert_int_equal(f.relfilenode, valid[i].relfilenode);
        assert_int_equal(f.fork, valid[i].fork);
        assert_int_equal(f.segno, valid[i].segno);
        assert_int_equal(agent_relfile_first_block(&f), valid[i].first_block);
        assert_false(agent_relfile_is_temp(valid[i].name));
        char name[AGENT_RELFILE_NAME_MAX];
        agent_relfile_name(&f, name); /* and written back as it was read */
        assert_string_equal(name, valid[i].name);
    }
    for (size_t i = 0; i < ARRAY_SIZE(invalid); i++) {
        AgentRelFile f = { .relfilenode = 7, .fork = AGENT_FORK_VM, .segno = 7 };

        if (agent_relfile_parse(invalid[i], &f))
            fail_msg("\"%s\" was accepted", invalid[i]);
        assert_int_equal(f.relfilenode, 7); /* untouched */
        assert_int_equal(f.segno, 7);
    }
    assert_string_equal(agent_relfork_to_string(AGENT_FORK_MAIN), "main");
    assert_string_equal(agent_relfork_to_string(AGENT_FORK_FSM), "fsm");
    assert_string_equal(agent_relfork_to_string(AGENT_FORK_VM), "vm");
    assert_string_equal(agent_relfork_to_string(AGENT_FORK_INIT), "init");
}

static void test_relfile_temp(void **state)
{
    (void)state;
    /* looks_like_temp_rel_name()'s answers, including its leniency ("t1_2.0"). */
    static const char *const temp[] = {
        "t3_16384", "t3_16384_fsm", "t3_16384.2", "t3_16384_vm.1", "t12_16385_init", "t1_2.0",
    };
    static const char *const not_temp[] = {
        "16384", "t_16384", "t3", "t3_", "t3_16384_", "t3_16384_main", "t3_16384.", "t3_16384x",
        "x3_16384", "T3_16384", "t3_16384_fsm_vm", "t3_16384.1.2", "", "t", "pg_internal.init",
    };

    for (size_t i = 0; i < ARRAY_SIZE(temp); i++) {
        AgentRelFile f;
        if (!agent_relfile_is_temp(temp[i]))
            fail_msg("\"%s\" is temporary", temp[i]);
        assert_false(agent_relfile_parse(temp[i], &f));
    }
    for (size_t i = 0; i < ARRAY_SIZE(not_temp); i++)
        if (agent_relfile_is_temp(not_temp[i]))
            fail_msg("\"%s\" is not temporary", not_temp[i]);
}

static void test_verdict_strings(void **state)
{
    (void)state;
    assert_string_equal(agent_page_verdict_to_string(AGENT_PAGE_OK), "ok");
    assert_string_equal(agent_page_verdict_to_string(AGENT_PAGE_NEW), "new");
    assert_string_equal(agent_page_verdict_to_string(AGENT_PAGE_SKIPPED_NEWER),
                        "skipped (newer than backup start)");
    assert_string_equal(agent_page_verdict_to_string(AGENT_PAGE_CORRUPT_CHECKSUM),
                        "checksum mismatch");
    assert_string_equal(agent_page_verdict_to_string(AGENT_PAGE_CORRUPT_HEADER),
                        "invalid header");
    assert_string_equal(agent_page_verdict_to_string(_AGENT_PAGE_VERDICT_MAX), "unknown");
    assert_false(agent_page_verdict_is_bad(AGENT_PAGE_OK));
    assert_false(agent_page_verdict_is_bad(AGENT_PAGE_SKIPPED_NEWER));
    assert_true(agent_page_verdict_is_bad(AGENT_PAGE_CORRUPT_CHECKSUM));
    assert_true(agent_page_verdict_is_bad(AGENT_PAGE_CORRUPT_HEADER));
}

RUN_TESTS(cmocka_unit_test(test_header_decode), cmocka_unit_test(test_real_pages_known_answers),
          cmocka_unit_test(test_checksum_block_mixing), cmocka_unit_test(test_alignment),
          cmocka_unit_test(test_flip_one_byte), cmocka_unit_test(test_new_page),
          cmocka_unit_test(test_header_sanity), cmocka_unit_test(test_skipped_newer),
          cmocka_unit_test(test_pages_verify_damaged), cmocka_unit_test(test_pages_verify_mixed),
          cmocka_unit_test(test_pages_verify_segment), cmocka_unit_test(test_pages_verify_partial),
          cmocka_unit_test(test_relfile_names), cmocka_unit_test(test_relfile_temp),
          cmocka_unit_test(test_verdict_strings))
