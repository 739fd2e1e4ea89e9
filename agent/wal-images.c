#include "agent/wal-images.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "agent/wal-format.h"
#include "common/endian.h"
#include "common/macro.h"

/* ---- CRC-32C ---- */

static uint32_t crc_table[256];

static void crc_table_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[i] = c;
    }
}

static uint32_t crc_by_table(uint32_t c, const uint8_t *p, size_t n)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, crc_table_init);
    while (n--)
        c = crc_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c;
}

/* Every record is checked, 16 MiB per segment: the CPU's instruction where there is one. */
__attribute__((target("sse4.2"))) static uint32_t crc_by_instruction(uint32_t c, const uint8_t *p,
                                                                     size_t n)
{
    uint64_t c64 = c;
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c64 = __builtin_ia32_crc32di(c64, v);
    }
    c = (uint32_t)c64;
    for (; n; p++, n--)
        c = __builtin_ia32_crc32qi(c, *p);
    return c;
}

uint32_t agent_crc32c(uint32_t crc, const void *p, size_t n)
{
    uint32_t c = ~crc;
    c = __builtin_cpu_supports("sse4.2") ? crc_by_instruction(c, p, n) : crc_by_table(c, p, n);
    return ~c;
}

/* ---- the bytes after the page headers ---- */

#define SHORT_HEADER          24u
#define FIRST_PAYLOAD         (AGENT_WAL_PAGE_SIZE - AGENT_WAL_LONG_HEADER_SIZE)
#define PAYLOAD               (AGENT_WAL_PAGE_SIZE - SHORT_HEADER)
#define RECORD_HEADER         24u /* SizeOfXLogRecord */
#define ALIGN8(x)             (((x) + 7) & ~(uint64_t)7) /* MAXALIGN */
#define RECORD_CRC_AT         20u /* offsetof(XLogRecord, xl_crc) */
#define MAX_BLOCK_ID          32u
#define BLOCK_ID_DATA_SHORT   255u
#define BLOCK_ID_DATA_LONG    254u
#define BLOCK_ID_ORIGIN       253u
#define BLOCK_ID_TOPLEVEL_XID 252u
#define BKPBLOCK_FORK_MASK    0x0F
#define BKPBLOCK_HAS_IMAGE    0x10
#define BKPBLOCK_HAS_DATA     0x20
#define BKPBLOCK_SAME_REL     0x80
#define BKPIMAGE_HAS_HOLE     0x01
#define BKPIMAGE_COMPRESSED   (0x04 | 0x08 | 0x10) /* pglz, lz4, zstd */

/* Records are a stream of "logical" bytes: the segment without its page headers. Only the
 * first page has the long header, so a logical offset maps to the segment by arithmetic. */
static size_t physical(uint64_t l)
{
    if (l < FIRST_PAYLOAD)
        return AGENT_WAL_LONG_HEADER_SIZE + (size_t)l;
    l -= FIRST_PAYLOAD;
    return (size_t)(l / PAYLOAD + 1) * AGENT_WAL_PAGE_SIZE + SHORT_HEADER + (size_t)(l % PAYLOAD);
}

/* The first piece of n logical bytes from l: where it is in the segment (*ret_at) and how
 * long, up to the end of its WAL page. */
static size_t piece_at(uint64_t l, size_t n, size_t *ret_at)
{
    *ret_at = physical(l);
    return MIN(n, AGENT_WAL_PAGE_SIZE - *ret_at % AGENT_WAL_PAGE_SIZE);
}

static void copy_logical(const uint8_t *seg, uint64_t l, size_t n, uint8_t *out)
{
    for (size_t at, k; n > 0; out += k, l += k, n -= k) {
        k = piece_at(l, n, &at);
        memcpy(out, seg + at, k);
    }
}

static uint32_t crc_logical(uint32_t crc, const uint8_t *seg, uint64_t l, size_t n)
{
    for (size_t at, k; n > 0; l += k, n -= k) {
        k = piece_at(l, n, &at);
        crc = agent_crc32c(crc, seg + at, k);
    }
    return crc;
}

/* Logical bytes of the pages that belong to the segment: it ends at the first page whose
 * header has another magic or another address (older WAL in a recycled file). */
static uint64_t logical_size(const uint8_t *seg, size_t n)
{
    uint64_t first_addr = get_le64(seg + 8);
    uint64_t size = 0;
    for (size_t i = 0; (i + 1) * AGENT_WAL_PAGE_SIZE <= n; i++) {
        const uint8_t *h = seg + i * AGENT_WAL_PAGE_SIZE;
        bool is_first = i == 0;
        if (get_le16(h) != AGENT_WAL_PG15_MAGIC ||
            get_le64(h + 8) != first_addr + i * AGENT_WAL_PAGE_SIZE ||
            !(get_le16(h + 2) & AGENT_WAL_XLP_LONG_HEADER) != !is_first)
            break;
        size += is_first ? FIRST_PAYLOAD : PAYLOAD;
    }
    return size;
}

/* ---- records ---- */

typedef struct Block {
    bool has_image, is_compressed;
    uint16_t image_len, hole_offset, hole_length, data_len;
    uint32_t spc, db, rel, block;
    uint8_t fork;
} Block;

/* The most header bytes a record can have: XLogRecord, 33 block headers of 27 bytes (with
 * image, hole length and RelFileNode), origin, top-level xid and main data length. */
#define RECORD_HEADERS_MAX 1024u

/* Decode the block headers of a record of tot bytes, whose first `avail` bytes are r; false when
 * they are not well formed (the checks PostgreSQL's DecodeXLogRecord makes). *ret_data is where
 * the blocks' data begins. */
static bool decode_blocks(const uint8_t *r, size_t avail, size_t tot, Block *blocks,
                          size_t *ret_n, size_t *ret_data)
{
    size_t q = RECORD_HEADER, datatotal = 0, n = 0;
    int last_id = -1;
    const Block *rel_of = NULL;
#define NEED(k) \
    if (q + (k) > avail) \
    return false
    while (tot - q > datatotal) {
        NEED(1);
        unsigned id = r[q];
        if (id == BLOCK_ID_DATA_SHORT) {
            NEED(2);
            datatotal += r[q + 1];
            q += 2;
            break;
        }
        if (id == BLOCK_ID_DATA_LONG) {
            NEED(5);
            datatotal += get_le32(r + q + 1);
            q += 5;
            break;
        }
        if (id == BLOCK_ID_ORIGIN || id == BLOCK_ID_TOPLEVEL_XID) {
            size_t k = id == BLOCK_ID_ORIGIN ? 3 : 5;
            NEED(k);
            q += k;
            continue;
        }
        if (id > MAX_BLOCK_ID || (int)id <= last_id)
            return false;
        last_id = (int)id;
        Block *b = &blocks[n++];
        *b = (Block){ 0 };
        NEED(4);
        uint8_t flags = r[q + 1];
        b->fork = flags & BKPBLOCK_FORK_MASK;
        b->data_len = get_le16(r + q + 2);
        q += 4;
        if (!(flags & BKPBLOCK_HAS_DATA) != !b->data_len)
            return false;
        datatotal += b->data_len;
        if (flags & BKPBLOCK_HAS_IMAGE) {
            NEED(5);
            b->has_image = true;
            b->image_len = get_le16(r + q);
            b->hole_offset = get_le16(r + q + 2);
            uint8_t info = r[q + 4];
            q += 5;
            b->is_compressed = info & BKPIMAGE_COMPRESSED;
            if ((info & BKPIMAGE_HAS_HOLE) && b->is_compressed) {
                NEED(2);
                b->hole_length = get_le16(r + q);
                q += 2;
            } else if (info & BKPIMAGE_HAS_HOLE) {
                if (b->image_len >= AGENT_WAL_PAGE_SIZE)
                    return false;
                b->hole_length = (uint16_t)(AGENT_WAL_PAGE_SIZE - b->image_len);
            }
            bool hole_ok = (info & BKPIMAGE_HAS_HOLE)
                               ? b->hole_offset > 0 && b->hole_length > 0
                               : b->hole_offset == 0 && b->hole_length == 0;
            bool len_ok = b->is_compressed ? b->image_len < AGENT_WAL_PAGE_SIZE
                                           : b->image_len + b->hole_length == AGENT_WAL_PAGE_SIZE;
            if (!hole_ok || !len_ok || b->hole_offset + b->hole_length > AGENT_WAL_PAGE_SIZE)
                return false;
            datatotal += b->image_len;
        }
        if (!(flags & BKPBLOCK_SAME_REL)) {
            NEED(12);
            b->spc = get_le32(r + q), b->db = get_le32(r + q + 4), b->rel = get_le32(r + q + 8);
            q += 12;
            rel_of = b;
        } else if (rel_of) {
            b->spc = rel_of->spc, b->db = rel_of->db, b->rel = rel_of->rel;
        } else
            return false;
        NEED(4);
        b->block = get_le32(r + q);
        q += 4;
    }
#undef NEED
    if (q > tot || tot - q != datatotal)
        return false;
    *ret_n = n;
    *ret_data = q;
    return true;
}

static void pieces_of(uint64_t l, size_t len, AgentWalImage *im)
{
    im->n_pieces = 0;
    for (size_t at, k; len > 0; l += k, len -= k) {
        k = piece_at(l, len, &at);
        im->pieces[im->n_pieces++] = (AgentWalPiece){ .off = (uint32_t)at, .len = (uint32_t)k };
    }
}

int agent_wal_images_find(const uint8_t *seg, size_t n, AgentWalImage **ret, size_t *ret_n)
{
    *ret = NULL;
    *ret_n = 0;
    if (n < AGENT_WAL_PAGE_SIZE || n > UINT32_MAX)
        return -EBADMSG;
    AgentWalHeader h;
    int r = agent_wal_header_parse(seg, n, &h);
    if (r < 0)
        return r;
    if (h.magic != AGENT_WAL_PG15_MAGIC)
        return -EPROTONOSUPPORT;
    if (!(h.info & AGENT_WAL_XLP_LONG_HEADER))
        return -EBADMSG;
    if (h.blcksz != AGENT_WAL_PAGE_SIZE)
        return -EPROTONOSUPPORT;
    uint64_t size = logical_size(seg, n), first_addr = h.pageaddr;
    uint64_t pos = (h.info & AGENT_WAL_XLP_FIRST_IS_CONTREC) ? h.rem_len : 0;
    AgentWalImage *images = NULL;
    size_t count = 0, cap = 0;
    for (pos = ALIGN8(pos); size - MIN(size, pos) >= RECORD_HEADER; pos = ALIGN8(pos)) {
        /* Only the headers are copied out of the pages; the CRC is taken where the bytes are. */
        uint8_t head[RECORD_HEADERS_MAX];
        copy_logical(seg, pos, RECORD_HEADER, head);
        uint32_t tot = get_le32(head);
        if (tot < RECORD_HEADER || tot > size - pos)
            break; /* the end of the WAL, or a record continued in the next segment */
        size_t avail = MIN(tot, RECORD_HEADERS_MAX);
        copy_logical(seg, pos, avail, head);
        Block blocks[MAX_BLOCK_ID + 1];
        size_t n_blocks, at;
        if (!decode_blocks(head, avail, tot, blocks, &n_blocks, &at))
            break;
        /* The CRC is taken of the records that have an image to report. The others are only
         * walked over (most of the bytes: heap inserts), and a caller compares every byte it
         * uses anyway. */
        bool reports = false;
        for (size_t i = 0; i < n_blocks; i++)
            reports |= blocks[i].has_image && !blocks[i].is_compressed;
        uint32_t crc = reports ? crc_logical(0, seg, pos + RECORD_HEADER, tot - RECORD_HEADER) : 0;
        if (reports && agent_crc32c(crc, head, RECORD_CRC_AT) != get_le32(head + RECORD_CRC_AT))
            break;
        for (size_t i = 0; i < n_blocks; i++) {
            const Block *b = &blocks[i];
            if (b->has_image && !b->is_compressed) {
                if (count == cap) {
                    size_t c = cap ? 2 * cap : 64;
                    AgentWalImage *bigger = realloc(images, c * sizeof(*images));
                    if (!bigger) {
                        r = -ENOMEM;
                        goto out;
                    }
                    images = bigger, cap = c;
                }
                AgentWalImage *im = &images[count++];
                *im = (AgentWalImage){ .spc = b->spc,
                                       .db = b->db,
                                       .rel = b->rel,
                                       .fork = b->fork,
                                       .block = b->block,
                                       .hole_offset = b->hole_offset,
                                       .hole_length = b->hole_length,
                                       .lsn = first_addr + physical(pos) };
                pieces_of(pos + at, b->image_len, im);
            }
            at += b->has_image ? b->image_len : 0;
            at += b->data_len;
        }
        pos += tot;
    }
out:
    if (r < 0) {
        free(images);
        return r;
    }
    *ret = images;
    *ret_n = count;
    return 0;
}

void agent_wal_image_page(const uint8_t *seg, const AgentWalImage *im,
                          uint8_t page[AGENT_WAL_PAGE_SIZE])
{
    uint8_t image[AGENT_WAL_PAGE_SIZE];
    size_t len = 0;
    for (size_t i = 0; i < im->n_pieces; i++) {
        memcpy(image + len, seg + im->pieces[i].off, im->pieces[i].len);
        len += im->pieces[i].len;
    }
    memcpy(page, image, im->hole_offset);
    memset(page + im->hole_offset, 0, im->hole_length);
    memcpy(page + im->hole_offset + im->hole_length, image + im->hole_offset,
           len - im->hole_offset);
}
