/*
 * PostgreSQL 15 WAL segments laid out byte by byte, for tests: records with full-page images
 * (with or without a hole, compressed or not), fillers that put the next record where a test
 * wants it, and the page headers. Include after agent/wal-images.c, whose constants it uses.
 */
#pragma once

#include "common/buf.h"
#include "common/endian.h"
#include "tests/unit/harness.h"

#define SEG_PAGES 8
#define SEG_BYTES (SEG_PAGES * AGENT_WAL_PAGE_SIZE)
#define FIRST_LSN UINT64_C(0x2A000000)

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
        put_le16(h + 2, i == 0 ? AGENT_WAL_XLP_LONG_HEADER | (rem_len ? AGENT_WAL_XLP_FIRST_IS_CONTREC : 0) : 0);
        put_le32(h + 4, 1);
        put_le64(h + 8, FIRST_LSN + i * AGENT_WAL_PAGE_SIZE);
        size_t header = SHORT_HEADER;
        if (i == 0) {
            put_le32(h + 16, rem_len);
            put_le64(h + 24, UINT64_C(7301234567890123456));
            put_le32(h + 32, SEG_BYTES);
            put_le32(h + 36, AGENT_WAL_PAGE_SIZE);
            header = AGENT_WAL_LONG_HEADER_SIZE;
        }
        size_t k = MIN(AGENT_WAL_PAGE_SIZE - header, s->size - MIN(s->size, l));
        memcpy(h + header, s->data + l, k);
        l += k;
    }
    assert_true(l == s->size); /* every record built fits in the segment */
}

