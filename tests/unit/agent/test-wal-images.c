/*
 * Full-page images in WAL segments (agent/wal-images.c), on segments laid out here byte by
 * byte as PostgreSQL 15 writes them: images with and without a hole, split by page headers,
 * a second block of the same relation, a compressed image (not reported), a record continued
 * from the previous segment, a record with a wrong CRC and one continued in the next segment
 * (both end the parse). CRC-32C against its published check value, by table and instruction.
 */
#include "tests/unit/harness.h"

#include "agent/wal-images.c"

#include "common/buf.h"

#define SEG_PAGES 8
#define SEG_BYTES (SEG_PAGES * AGENT_WAL_PAGE_SIZE)
#define FIRST_LSN UINT64_C(0x2A000000)

static void test_crc32c(void **state)
{
    (void)state;
    static const char check[] = "123456789";
    assert_int_equal(agent_crc32c(0, check, 9), 0xE3069283u);
    assert_int_equal(~crc_by_table(~0u, (const uint8_t *)check, 9), 0xE3069283u);
    /* In two parts, as records are checked (data first, then the header). */
    assert_int_equal(agent_crc32c(agent_crc32c(0, check, 4), check + 4, 5), 0xE3069283u);
}

/* ---- building a segment ---- */

/* The records of a segment are built in a Buf (without page headers), then laid out. */
static void put8(Buf *s, uint8_t v) { ASSERT_OK(buf_append(s, &v, 1)); }

/* Zeros up to the next 8-byte boundary, where records start. */
static void align8(Buf *s)
{
    static const uint8_t zeros[8];
    ASSERT_OK(buf_append(s, zeros, ((s->size + 7) & ~(size_t)7) - s->size));
}

/* A page whose every byte tells where it is, and zeros in its hole. */
static void make_page(uint8_t *page, unsigned seed, uint16_t hole_offset, uint16_t hole_length)
{
    for (size_t i = 0; i < AGENT_WAL_PAGE_SIZE; i++)
        page[i] = (uint8_t)(i * 7 + seed);
    memset(page + hole_offset, 0, hole_length);
}

typedef struct BlockSpec {
    uint8_t id;
    bool same_rel, compressed;
    uint32_t rel, block;
    uint16_t hole_offset, hole_length; /* hole_length 0: no hole */
    uint16_t data_len;
    const uint8_t *page;
} BlockSpec;

/* Append one record (header, block headers, images and data, main data) at 8-byte alignment;
 * returns its logical offset. */
static size_t put_record(Buf *s, const BlockSpec *blocks, size_t n, uint32_t main_len,
                         bool origin, bool bad_crc)
{
    align8(s);
    size_t start = s->size;
    assert_non_null(buf_extend(s, RECORD_HEADER)); /* filled in at the end */
    if (origin) {
        put8(s, BLOCK_ID_ORIGIN);
        ASSERT_OK(buf_append_le16(s, 7));
    }
    for (size_t i = 0; i < n; i++) {
        const BlockSpec *b = &blocks[i];
        bool hole = b->hole_length > 0;
        uint16_t image_len = b->compressed ? 100 : (uint16_t)(AGENT_WAL_PAGE_SIZE - b->hole_length);
        put8(s, b->id);
        put8(s, BKPBLOCK_HAS_IMAGE | (b->data_len ? BKPBLOCK_HAS_DATA : 0) |
                    (b->same_rel ? BKPBLOCK_SAME_REL : 0));
        ASSERT_OK(buf_append_le16(s, b->data_len));
        ASSERT_OK(buf_append_le16(s, image_len));
        ASSERT_OK(buf_append_le16(s, hole ? b->hole_offset : 0));
        put8(s, (hole ? BKPIMAGE_HAS_HOLE : 0) | (b->compressed ? 0x08 : 0));
        if (hole && b->compressed)
            ASSERT_OK(buf_append_le16(s, b->hole_length));
        if (!b->same_rel) {
            ASSERT_OK(buf_append_le32(s, 1663));
            ASSERT_OK(buf_append_le32(s, 5));
            ASSERT_OK(buf_append_le32(s, b->rel));
        }
        ASSERT_OK(buf_append_le32(s, b->block));
    }
    if (main_len > 255) {
        put8(s, BLOCK_ID_DATA_LONG);
        ASSERT_OK(buf_append_le32(s, main_len));
    } else if (main_len) {
        put8(s, BLOCK_ID_DATA_SHORT);
        put8(s, (uint8_t)main_len);
    }
    for (size_t i = 0; i < n; i++) {
        const BlockSpec *b = &blocks[i];
        if (b->compressed) {
            ASSERT_OK(buf_append(s, b->page, 100));
        } else {
            ASSERT_OK(buf_append(s, b->page, b->hole_offset));
            ASSERT_OK(buf_append(s, b->page + b->hole_offset + b->hole_length,
                                 AGENT_WAL_PAGE_SIZE - b->hole_offset - b->hole_length));
        }
        for (size_t k = 0; k < b->data_len; k++)
            put8(s, (uint8_t)k);
    }
    for (size_t k = 0; k < main_len; k++)
        put8(s, 0xEE);
    uint8_t *r = s->data + start;
    uint32_t tot = (uint32_t)(s->size - start);
    memset(r, 0, RECORD_HEADER);
    put_le32(r, tot);
    r[17] = 0; /* xl_rmid: XLOG */
    uint32_t crc = agent_crc32c(0, r + RECORD_HEADER, tot - RECORD_HEADER);
    put_le32(r + RECORD_CRC_AT, agent_crc32c(crc, r, RECORD_CRC_AT) ^ (bad_crc ? 1 : 0));
    return start;
}

/* A record without blocks whose length makes the next one start at logical offset `next`. */
static void put_filler(Buf *s, size_t next)
{
    size_t start = (s->size + 7) & ~(size_t)7;
    assert_true(next % 8 == 0 && next >= start + RECORD_HEADER + 5 + 256);
    (void)put_record(s, NULL, 0, (uint32_t)(next - start - RECORD_HEADER - 5), false, false);
    assert_int_equal((s->size + 7) & ~(size_t)7, next);
}

/* Lay the stream out in pages behind their headers, as the server writes them. */
static void lay_out(const Buf *s, uint32_t rem_len, uint8_t *seg)
{
    memset(seg, 0, SEG_BYTES);
    size_t l = 0;
    for (size_t i = 0; i < SEG_PAGES; i++) {
        uint8_t *h = seg + i * AGENT_WAL_PAGE_SIZE;
        put_le16(h, AGENT_WAL_PG15_MAGIC);
        put_le16(h + 2, i == 0 ? XLP_LONG_HEADER | (rem_len ? XLP_FIRST_IS_CONTREC : 0) : 0);
        put_le32(h + 4, 1);
        put_le64(h + 8, FIRST_LSN + i * AGENT_WAL_PAGE_SIZE);
        size_t header = SHORT_HEADER;
        if (i == 0) {
            put_le32(h + 16, rem_len);
            put_le64(h + 24, UINT64_C(7301234567890123456));
            put_le32(h + 32, SEG_BYTES);
            put_le32(h + 36, AGENT_WAL_PAGE_SIZE);
            header = LONG_HEADER;
        }
        size_t k = MIN(AGENT_WAL_PAGE_SIZE - header, s->size - MIN(s->size, l));
        memcpy(h + header, s->data + l, k);
        l += k;
    }
    assert_true(l == s->size); /* every record built fits in the segment */
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

RUN_TESTS(cmocka_unit_test(test_crc32c), cmocka_unit_test(test_images), cmocka_unit_test(test_ends))
