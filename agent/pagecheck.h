/*
 * PostgreSQL data pages as a base backup reads them: the page checksum, the checks that decide
 * whether a page is damaged, and the relation file names whose pages carry checksums. Pure
 * functions: no I/O, no logging, no libpq, so every rule can be tested byte by byte against
 * pages written by a real server.
 *
 *  - Checksum: agent_page_checksum() computes what PostgreSQL's pg_checksum_page()
 *    (src/include/storage/checksum_impl.h) computes for BLCKSZ 8192, bit for bit.
 *  - Verdict: agent_page_verify() decides what PostgreSQL 15's base backup (sendFile() in
 *    src/backend/replication/basebackup.c) decides, plus the header checks of
 *    PageIsVerifiedExtended() (src/backend/storage/page/bufpage.c), in this order: an all-zero
 *    page is new and fine; a page whose LSN is at or after the backup's start LSN is skipped,
 *    because WAL replay rewrites it from a full-page image; any other page must carry its
 *    checksum and a sane header.
 *  - Names: "<relfilenode>[_fsm|_vm|_init][.<segno>]" as md.c names segment files, and the
 *    "t<backend>_<relfilenode>..." temporary relations that pg_basebackup leaves out.
 *
 * Pages are read in the host's byte order, as PostgreSQL writes them (little-endian on x86-64
 * and arm64): the agent verifies the files of a server on its own machine. A checksum only
 * means something when the cluster runs with data_checksums on (pg_controldata's "Data page
 * checksum version" is not 0); otherwise pd_checksum is 0 and every written page would fail,
 * so the caller asks the server first and does not call the verifiers at all.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AGENT_PAGE_SIZE        8192u   /* BLCKSZ: the only block size pitrfs supports */
#define AGENT_PAGE_HEADER_SIZE 24u     /* SizeOfPageHeaderData */
#define AGENT_RELSEG_BLOCKS    131072u /* RELSEG_SIZE: blocks in a 1 GiB segment file */
/* Highest segment number: block numbers stop at MaxBlockNumber (0xFFFFFFFE), in segment 32767. */
#define AGENT_RELSEG_MAX       32767u

/* ---- the page header (PageHeaderData) ---- */

typedef struct AgentPageHeader {
    uint64_t lsn;              /* offset 0:  pd_lsn, xlogid << 32 | xrecoff */
    uint16_t checksum;         /* offset 8:  pd_checksum */
    uint16_t flags;            /* offset 10: pd_flags */
    uint16_t lower;            /* offset 12: pd_lower, end of the line pointer array */
    uint16_t upper;            /* offset 14: pd_upper, start of the tuples; 0 on a new page */
    uint16_t special;          /* offset 16: pd_special, start of the access method's area */
    uint16_t pagesize_version; /* offset 18: pd_pagesize_version */
    uint32_t prune_xid;        /* offset 20: pd_prune_xid */
} AgentPageHeader;

/* Decode the first AGENT_PAGE_HEADER_SIZE bytes of a page. */
void agent_page_header_parse(const uint8_t *page, AgentPageHeader *ret);
/* The page's LSN: the WAL position of the last change to it. */
uint64_t agent_page_lsn(const uint8_t *page);

/* ---- checksum and verdict ---- */

/*
 * pg_checksum_page() of an AGENT_PAGE_SIZE page at block number blkno of its relation fork
 * (not of its segment file: see agent_relfile_first_block()). The stored pd_checksum is left
 * out of the sum, as if it were zero. Any alignment is fine. Never returns 0. Like
 * PostgreSQL's, the checksum of a page differs at most other block numbers, but not at all:
 * the block number is reduced modulo 65535 with the sum, so e.g. blocks 2 and 131072 may agree.
 */
uint16_t agent_page_checksum(const uint8_t *page, uint32_t blkno);

typedef enum AgentPageVerdict {
    AGENT_PAGE_OK = 0,               /* checksum and header verified */
    AGENT_PAGE_NEW = 1,              /* all zeros: extended but never written, no checksum */
    AGENT_PAGE_SKIPPED_NEWER = 2,    /* LSN >= the backup's start: replay rewrites it */
    AGENT_PAGE_CORRUPT_CHECKSUM = 3, /* pd_checksum differs from the computed checksum */
    AGENT_PAGE_CORRUPT_HEADER = 4,   /* checksum fine but the header is insane, or pd_upper
                                        is 0 ("new") on a page that is not all zeros */
    _AGENT_PAGE_VERDICT_MAX,
} AgentPageVerdict;

static inline bool agent_page_verdict_is_bad(AgentPageVerdict v)
{
    return v == AGENT_PAGE_CORRUPT_CHECKSUM || v == AGENT_PAGE_CORRUPT_HEADER;
}
/* "ok", "new", "skipped (newer than backup start)", "checksum mismatch", "invalid header". */
const char *agent_page_verdict_to_string(AgentPageVerdict v);

/* The two checksums of a verified page. PostgreSQL's warning "calculated %X but expected %X"
 * prints computed, then stored. */
typedef struct AgentPageChecksums {
    uint16_t computed; /* what the page's bytes sum to; 0 when the verdict did not need it */
    uint16_t stored;   /* pd_checksum, as found on the page */
} AgentPageChecksums;

/*
 * Verdict on one AGENT_PAGE_SIZE page at block number blkno. backup_start_lsn is the base
 * backup's start LSN (the checkpoint's redo pointer); 0 verifies every page, as
 * pg_checksums does on a stopped cluster. ret may be NULL.
 */
AgentPageVerdict agent_page_verify(const uint8_t *page, uint32_t blkno, uint64_t backup_start_lsn,
                                   AgentPageChecksums *ret);

/* ---- a buffer of pages read from a relation segment file ---- */

typedef struct AgentPageCheckStats {
    uint64_t verified; /* AGENT_PAGE_OK */
    uint64_t new_pages; /* AGENT_PAGE_NEW */
    uint64_t skipped;  /* AGENT_PAGE_SKIPPED_NEWER */
    uint64_t bad;      /* counted as corrupt (after on_bad's second look) */
    uint64_t partial;  /* pieces of pages at the buffer's edges, not verified */
    uint64_t partial_bytes;
} AgentPageCheckStats;

typedef struct AgentPageBad {
    uint32_t blkno;       /* block number in the relation fork, as mixed into the checksum */
    uint64_t file_offset; /* where the page starts in its segment file, to read it again */
    AgentPageVerdict verdict;
    AgentPageChecksums sums;
} AgentPageBad;

/*
 * Called for each page with a bad verdict. Returns the verdict to count: the callback may read
 * the page again and pass the fresh copy to agent_page_verify() (pg_basebackup retries once,
 * because a page read while the server writes it can be torn), or return bad->verdict.
 */
typedef AgentPageVerdict (*AgentPageBadFn)(const AgentPageBad *bad, void *userdata);

/*
 * Verify the whole pages in p[0..n), read from a segment file at file_offset. first_block is
 * the block number of the file's first page (agent_relfile_first_block()); start_lsn is as for
 * agent_page_verify(). Pages are those at multiples of AGENT_PAGE_SIZE in the file: a piece of
 * a page at either end of the buffer (a file offset that is not page-aligned, or a file whose
 * size is not a multiple of the page size) is counted in stats->partial and not verified, so
 * buffers should start page-aligned. stats is added to, not reset, so one AgentPageCheckStats
 * can cover a whole file. on_bad may be NULL. Returns how many pages were counted bad.
 */
size_t agent_pages_verify(const uint8_t *p, size_t n, uint64_t file_offset, uint32_t first_block,
                          uint64_t start_lsn, AgentPageCheckStats *stats, AgentPageBadFn on_bad,
                          void *userdata);

/* ---- relation file names ---- */

typedef enum AgentRelFork { /* PostgreSQL's ForkNumber */
    AGENT_FORK_MAIN = 0,
    AGENT_FORK_FSM = 1,
    AGENT_FORK_VM = 2,
    AGENT_FORK_INIT = 3,
    _AGENT_FORK_MAX,
} AgentRelFork;

typedef struct AgentRelFile {
    uint32_t relfilenode; /* > 0 */
    AgentRelFork fork;
    uint32_t segno;       /* 0 for the file without ".<segno>", else 1 .. AGENT_RELSEG_MAX */
} AgentRelFile;

/*
 * Parse a bare file name (no directory) of a permanent relation's segment file:
 * "<relfilenode>[_fsm|_vm|_init][.<segno>]", numbers in decimal as PostgreSQL prints them (no
 * sign, no leading zero), relfilenode 1 .. 4294967295 and segno 1 .. AGENT_RELSEG_MAX when
 * present. False for anything else, including temporary relations ("t3_16384"), "_main", and
 * the other files of a database directory (PG_VERSION, pg_filenode.map, pg_internal.init).
 * ret is only written on success.
 */
bool agent_relfile_parse(const char *name, AgentRelFile *ret);
/* Whether a bare file name is a temporary relation's file, "t<backend>_<relfilenode>" with an
 * optional fork and segment, exactly as PostgreSQL's looks_like_temp_rel_name() decides. */
bool agent_relfile_is_temp(const char *name);
/* The name agent_relfile_parse() reads back: "<relfilenode>[_fsm|_vm|_init][.<segno>]". */
#define AGENT_RELFILE_NAME_MAX 32
void agent_relfile_name(const AgentRelFile *f, char out[AGENT_RELFILE_NAME_MAX]);
/* Block number of the file's first page: segno * AGENT_RELSEG_BLOCKS. */
uint32_t agent_relfile_first_block(const AgentRelFile *f);
/* "main", "fsm", "vm", "init". */
const char *agent_relfork_to_string(AgentRelFork fork);
