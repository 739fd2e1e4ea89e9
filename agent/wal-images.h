/*
 * The full-page images in a PostgreSQL 15 WAL segment: where each image's bytes are in the
 * segment, and which relation block it is a copy of. Groundwork for storing an image as a
 * reference to the data page it equals (docs/proposals/wal-page-images.md); nothing stores
 * segments that way yet.
 *
 * Pure functions: no I/O, no logging.
 *
 * Only records that start and end in the segment are read: the tail of a record begun in the
 * previous segment is skipped, and a record continued in the next one ends the parse. So does
 * anything that is not a well-formed record (the end of the WAL written so far, a torn write,
 * older WAL left in a recycled segment's tail), and a record with an image to report whose
 * CRC-32C is wrong: what comes before stays found. Records without such an image are not
 * checked by CRC (they are most of the bytes, and nothing is taken from them). Images
 * compressed by wal_compression are not reported.
 *
 * The layout read (PostgreSQL's src/include/access/xlogrecord.h and xlog_internal.h, XLOG
 * page magic 0xD110): every XLOG_BLCKSZ page begins with a page header (40 bytes on the
 * segment's first page, 24 on the others), records follow each other at 8-byte alignment in
 * the bytes after the headers, and a record is a 24-byte XLogRecord, block headers, then
 * each block's image and data, then the main data.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define AGENT_WAL_PG15_MAGIC 0xD110
#define AGENT_WAL_PAGE_SIZE  8192u /* XLOG_BLCKSZ and BLCKSZ: the only sizes read */

/* An image is at most one page long, and a WAL page holds at least 8152 bytes of records, so
 * its bytes lie in at most three pieces, split by WAL page headers. */
#define AGENT_WAL_IMAGE_PIECES 3

typedef struct AgentWalPiece {
    uint32_t off, len; /* in the segment */
} AgentWalPiece;

typedef struct AgentWalImage {
    uint32_t spc, db, rel; /* RelFileNode: tablespace, database and relfilenode */
    uint8_t fork;          /* 0 main, 1 free space map, 2 visibility map, 3 init */
    uint32_t block;
    uint16_t hole_offset, hole_length; /* the page's bytes not in the WAL (zeros) */
    uint64_t lsn;                      /* of the record holding the image */
    uint8_t n_pieces;
    AgentWalPiece pieces[AGENT_WAL_IMAGE_PIECES]; /* in order; lengths add up to the image's */
} AgentWalImage;

/*
 * Find the uncompressed full-page images of seg[0..n). *ret is malloc'd (NULL when none are
 * found). -EPROTONOSUPPORT for a segment of another PostgreSQL version or page size, -EBADMSG
 * when the first page header is not one, -ENOMEM.
 */
int agent_wal_images_find(const uint8_t *seg, size_t n, AgentWalImage **ret, size_t *ret_n);
/* The page an image stands for: its bytes from the segment, zeros in its hole. */
void agent_wal_image_page(const uint8_t *seg, const AgentWalImage *im,
                          uint8_t page[AGENT_WAL_PAGE_SIZE]);
/* CRC-32C (Castagnoli) of p[0..n), continuing from crc (start with 0). */
uint32_t agent_crc32c(uint32_t crc, const void *p, size_t n);
