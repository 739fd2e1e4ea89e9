/*
 * Full-page images in WAL segments (agent/wal-images.c), on segments laid out here byte by
 * byte as PostgreSQL 15 writes them: images with and without a hole, split by page headers,
 * a second block of the same relation, a compressed image (not reported), a record continued
 * from the previous segment, a record with a wrong CRC and one continued in the next segment
 * (both end the parse; a record without images is not checked by CRC). CRC-32C against its
 * published check value, by table and instruction.
 */
#include "tests/unit/harness.h"

#include "agent/wal-images.c"

#include "tests/unit/agent/wal-builder.h"


static void test_crc32c(void **state)
{
    (void)state;
    static const char check[] = "123456789";
    assert_int_equal(agent_crc32c(0, check, 9), 0xE3069283u);
    assert_int_equal(~crc_by_table(~0u, (const uint8_t *)check, 9), 0xE3069283u);
    /* In two parts, as records are checked (data first, then the header). */
    assert_int_equal(agent_crc32c(agent_crc32c(0, check, 4), check + 4, 5), 0xE3069283u);
}

static void assert_image(const uint8_t *seg, const AgentWalImage *im, uint32_t rel,
                         uint32_t block, const uint8_t *page, uint16_t hole_offset,
                         uint16_t hole_length)
{
    assert_int_equal(im->spc, 1663);
    assert_int_equal(im->db, 5);
    assert_int_equal(im->rel, rel);
    assert_int_equal(im->fork, 0);
    assert_int_equal(im->block, block);
    assert_int_equal(im->hole_offset, hole_offset);
    assert_int_equal(im->hole_length, hole_length);
    size_t len = 0;
    for (size_t i = 0; i < im->n_pieces; i++) {
        assert_true(im->pieces[i].off % AGENT_WAL_PAGE_SIZE >= SHORT_HEADER);
        len += im->pieces[i].len;
    }
    assert_int_equal(len, AGENT_WAL_PAGE_SIZE - hole_length);
    uint8_t got[AGENT_WAL_PAGE_SIZE];
    agent_wal_image_page(seg, im, got);
    assert_memory_equal(got, page, AGENT_WAL_PAGE_SIZE);
}

static void test_images(void **state)
{
    (void)state;
    _cleanup_(buf_free) Buf s = BUF_INIT;
    static uint8_t seg[SEG_BYTES];
    static uint8_t p1[AGENT_WAL_PAGE_SIZE], p2[AGENT_WAL_PAGE_SIZE], p3[AGENT_WAL_PAGE_SIZE],
        p4[AGENT_WAL_PAGE_SIZE], p5[AGENT_WAL_PAGE_SIZE];
    /* 100 bytes continuing a record of the previous segment: skipped. */
    for (int i = 0; i < 100; i++)
        put8(&s, 0xAB);
    /* A record whose image (with a hole) starts near the end of the first page. */
    put_filler(&s, 7000);
    make_page(p1, 1, 200, 1000);
    BlockSpec b1[] = { { .id = 0, .rel = 16404, .block = 9, .hole_offset = 200,
                         .hole_length = 1000, .data_len = 3, .page = p1 } };
    size_t r1 = put_record(&s, b1, 1, 5, false, false);
    /* Two blocks of one relation, the second with a compressed image; an origin header. */
    make_page(p2, 2, 0, 0);
    make_page(p3, 3, 0, 0);
    BlockSpec b2[] = { { .id = 0, .rel = 16396, .block = 4, .page = p2 },
                       { .id = 3, .same_rel = true, .compressed = true, .block = 5,
                         .page = p3 } };
    size_t r2 = put_record(&s, b2, 2, 0, true, false);
    /* An image without a hole starting 7 bytes before a page header: three pieces. The
     * record's headers before the image take 49 bytes. */
    put_filler(&s, FIRST_PAYLOAD + 2 * PAYLOAD - 7 - 49);
    make_page(p4, 4, 0, 0);
    BlockSpec b4[] = { { .id = 1, .rel = 16404, .block = 77, .page = p4 } };
    (void)put_record(&s, b4, 1, 0, false, false);
    /* A record with a wrong CRC ends the parse: the one after it is not read. */
    make_page(p5, 5, 100, 50);
    BlockSpec b5[] = { { .id = 0, .rel = 16404, .block = 1, .hole_offset = 100,
                         .hole_length = 50, .page = p5 } };
    size_t bad = put_record(&s, b5, 1, 0, false, true);
    (void)put_record(&s, b5, 1, 0, false, false);
    lay_out(&s, 100, seg);

    _cleanup_free_ AgentWalImage *im = NULL;
    size_t n;
    ASSERT_OK(agent_wal_images_find(seg, SEG_BYTES, &im, &n));
    assert_int_equal(n, 3);
    assert_image(seg, &im[0], 16404, 9, p1, 200, 1000);
    assert_int_equal(im[0].lsn, FIRST_LSN + physical(r1));
    assert_int_equal(im[0].n_pieces, 2);
    assert_image(seg, &im[1], 16396, 4, p2, 0, 0);
    assert_int_equal(im[1].lsn, FIRST_LSN + physical(r2));
    assert_image(seg, &im[2], 16404, 77, p4, 0, 0);
    assert_int_equal(im[2].n_pieces, 3);

    free(im);
    im = NULL;

    /* With its CRC mended the fourth record is read, and the fifth after it. */
    uint8_t *crc_at = seg + physical(bad + RECORD_CRC_AT);
    put_le32(crc_at, get_le32(crc_at) ^ 1);
    ASSERT_OK(agent_wal_images_find(seg, SEG_BYTES, &im, &n));
    assert_int_equal(n, 5);
    assert_image(seg, &im[3], 16404, 1, p5, 100, 50);
    assert_image(seg, &im[4], 16404, 1, p5, 100, 50);
}

static void test_ends(void **state)
{
    (void)state;
    _cleanup_(buf_free) Buf s = BUF_INIT;
    static uint8_t seg[SEG_BYTES];
    static uint8_t p[AGENT_WAL_PAGE_SIZE];
    make_page(p, 9, 300, 700);
    BlockSpec b[] = { { .id = 0, .rel = 1259, .block = 2, .hole_offset = 300,
                        .hole_length = 700, .page = p } };
    (void)put_record(&s, b, 1, 0, false, false);
    (void)put_record(&s, b, 1, 0, false, false);
    /* A record that does not end in this segment: its length runs past the last page. */
    size_t last = put_record(&s, b, 1, 0, false, false);
    lay_out(&s, 0, seg);
    _cleanup_free_ AgentWalImage *im = NULL;
    size_t n;
    ASSERT_OK(agent_wal_images_find(seg, SEG_BYTES, &im, &n));
    assert_int_equal(n, 3);
    free(im);
    im = NULL;
    uint8_t *len_at = seg + physical(last);
    put_le32(len_at, SEG_BYTES);
    ASSERT_OK(agent_wal_images_find(seg, SEG_BYTES, &im, &n));
    assert_int_equal(n, 2);
    free(im);
    im = NULL;
    /* A page from an older cycle of a recycled file ends the segment's records there. */
    put_le32(len_at, get_le32(s.data + last));
    put_le64(seg + AGENT_WAL_PAGE_SIZE + 8, FIRST_LSN - SEG_BYTES + AGENT_WAL_PAGE_SIZE);
    ASSERT_OK(agent_wal_images_find(seg, SEG_BYTES, &im, &n));
    assert_int_equal(n, 1); /* the first record lies in the first page */
    free(im);
    im = NULL;
    /* Another version's WAL, another page size, not a segment. */
    put_le16(seg, 0xD113);
    ASSERT_ERR(EPROTONOSUPPORT, agent_wal_images_find(seg, SEG_BYTES, &im, &n));
    put_le16(seg, AGENT_WAL_PG15_MAGIC);
    put_le32(seg + 36, 16384);
    ASSERT_ERR(EPROTONOSUPPORT, agent_wal_images_find(seg, SEG_BYTES, &im, &n));
    put_le32(seg + 36, AGENT_WAL_PAGE_SIZE);
    put_le16(seg + 2, 0);
    ASSERT_ERR(EBADMSG, agent_wal_images_find(seg, SEG_BYTES, &im, &n));
    ASSERT_ERR(EBADMSG, agent_wal_images_find(seg, 100, &im, &n));
    assert_null(im);
}

/* Only records with an image to report are checked by CRC: one without blocks whose CRC is wrong
 * is walked over, and the image after it found. */
static void test_crc_of_reported_records(void **state)
{
    (void)state;
    _cleanup_(buf_free) Buf s = BUF_INIT;
    static uint8_t seg[SEG_BYTES], page[AGENT_WAL_PAGE_SIZE];
    (void)put_record(&s, NULL, 0, 300, false, true);
    make_page(page, 6, 0, 0);
    BlockSpec b[] = { { .id = 0, .rel = 16404, .block = 3, .page = page } };
    (void)put_record(&s, b, 1, 0, false, false);
    lay_out(&s, 0, seg);
    _cleanup_free_ AgentWalImage *im = NULL;
    size_t n;
    ASSERT_OK(agent_wal_images_find(seg, SEG_BYTES, &im, &n));
    assert_int_equal(n, 1);
    assert_image(seg, &im[0], 16404, 3, page, 0, 0);
}

RUN_TESTS(cmocka_unit_test(test_crc32c), cmocka_unit_test(test_images), cmocka_unit_test(test_ends),
          cmocka_unit_test(test_crc_of_reported_records))
