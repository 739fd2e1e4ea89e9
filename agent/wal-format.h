/*
 * The long page header (XLogLongPageHeaderData, PostgreSQL's src/include/access/xlog_internal.h)
 * that starts every WAL segment. agent_wal_header_check() compares it with the file name and
 * size and explains a mismatch in words. Pure functions: no I/O, no logging, so the rules can
 * be tested byte by byte. File names and the repository's WAL object: chunkstore/wal-object.h.
 *
 * Return values follow the project rule: 0 or a negative errno; -EBADMSG means "these bytes
 * are not what they claim to be".
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chunkstore/wal-object.h"

/* ---- the long page header at offset 0 of a segment ---- */

#define AGENT_WAL_LONG_HEADER_SIZE 40 /* SizeOfXLogLongPHD on every 64-bit platform */
#define AGENT_WAL_XLP_FIRST_IS_CONTREC 0x0001 /* the page starts inside a record */
#define AGENT_WAL_XLP_LONG_HEADER  0x0002
#define AGENT_WAL_XLP_ALL_FLAGS    0x0007
#define CS_WAL_SEG_MIN          (1u << 20) /* WalSegMinSize */
#define CS_WAL_SEG_MAX          (1u << 30) /* WalSegMaxSize */

typedef struct AgentWalHeader {
    uint16_t magic;     /* offset 0:  xlp_magic, the WAL format of one major version */
    uint16_t info;      /* offset 2:  xlp_info flags */
    uint32_t tli;       /* offset 4:  xlp_tli, timeline of the first record on the page */
    uint64_t pageaddr;  /* offset 8:  xlp_pageaddr, LSN of the page */
    uint32_t rem_len;   /* offset 16: xlp_rem_len (4 bytes of padding follow) */
    uint64_t sysid;     /* offset 24: xlp_sysid, the cluster's system identifier */
    uint32_t seg_size;  /* offset 32: xlp_seg_size, wal_segment_size */
    uint32_t blcksz;    /* offset 36: xlp_xlog_blcksz, XLOG_BLCKSZ */
} AgentWalHeader;

/* Decode the first AGENT_WAL_LONG_HEADER_SIZE bytes; -EBADMSG when n is shorter. */
int agent_wal_header_parse(const void *p, size_t n, AgentWalHeader *ret);
/* PostgreSQL major version whose WAL has this xlp_magic (13 .. 18), or 0 if unknown. */
int agent_wal_magic_to_version(uint16_t magic);
/*
 * Check a segment's header against its name and the file's size: known magic, long-header
 * flag and no unknown flag, xlp_seg_size a power of two in 1 MiB .. 1 GiB and equal to
 * file_size, xlp_pageaddr equal to the segment's start LSN, and a timeline between 1 and the
 * file name's. (The first segment of a new timeline begins with pages copied from its parent
 * timeline, whose headers keep the parent's, lower, timeline.) xlp_xlog_blcksz must be a
 * power of two of 1 to 64 KiB that divides the segment size.
 * Returns 0, or -EBADMSG with the first mismatch described in why[0..why_n) (lowercase, no
 * final period). The header is decoded into *ret when ret is not NULL, even on mismatch.
 */
int agent_wal_header_check(const CsWalName *name, const void *p, size_t n,
                           uint64_t file_size, AgentWalHeader *ret, char *why, size_t why_n);
