/*
 * PostgreSQL WAL files as the agent sees them, and the repository object that records one.
 * Pure functions: no I/O, no logging, so the rules can be tested byte by byte.
 *
 *  - Names: a segment is 24 uppercase hex digits TTTTTTTTXXXXXXXXYYYYYYYY (timeline, log id,
 *    segment within the log id); "<segment>.partial" is the unfinished last segment of a
 *    timeline; "TTTTTTTT.history" a timeline history file; "<segment>.XXXXXXXX.backup" a
 *    backup history file. Anything else is refused with -EINVAL.
 *  - Page header: the long page header (XLogLongPageHeaderData, PostgreSQL's
 *    src/include/access/xlog_internal.h) that starts every segment. agent_wal_header_check()
 *    compares it with the file name and size and explains a mismatch in words.
 *  - The WAL object: the sealed plaintext stored at "wal/<node>/..." for every archived file
 *    (docs/FORMAT.md, "WAL objects"). Encoding is little-endian through common/endian.h.
 *
 * Return values follow the project rule: 0 or a negative errno; -EBADMSG means "these bytes
 * are not what they claim to be".
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chunkstore/store.h"
#include "common/buf.h"

/* ---- file names ---- */

typedef enum AgentWalKind {
    AGENT_WAL_SEGMENT = 1, /* 000000010000000000000002 */
    AGENT_WAL_PARTIAL = 2, /* 000000010000000000000002.partial */
    AGENT_WAL_HISTORY = 3, /* 00000002.history */
    AGENT_WAL_BACKUP = 4,  /* 000000010000000000000002.00000028.backup */
    _AGENT_WAL_KIND_MAX,
} AgentWalKind;

#define AGENT_WAL_NAME_MAX 64 /* PostgreSQL's MAXFNAMELEN; longest valid name is 40 */

typedef struct AgentWalName {
    AgentWalKind kind;
    uint32_t tli; /* timeline, from the first 8 digits */
    uint32_t log; /* log id and segment: 0 for history files */
    uint32_t seg;
    char name[AGENT_WAL_NAME_MAX];
} AgentWalName;

/* Parse a bare file name (no directory). -EINVAL when it is none of the four kinds, has
 * lowercase hex, or timeline 0. */
int agent_wal_name_parse(const char *name, AgentWalName *ret);
/* "segment", "partial segment", "timeline history file", "backup history file". */
const char *agent_wal_kind_to_string(AgentWalKind kind);
/* Whether files of this kind start with a WAL page header. */
static inline bool agent_wal_kind_has_header(AgentWalKind kind)
{
    return kind == AGENT_WAL_SEGMENT || kind == AGENT_WAL_PARTIAL;
}
/* Segment number (log * segments-per-log-id + seg) for a segment size; -EINVAL when the
 * size is not a valid wal_segment_size or seg is out of range for it. */
int agent_wal_segno(const AgentWalName *n, uint64_t seg_size, uint64_t *ret);
/* The 24-digit segment name of (tli, segno) for a segment size; out must hold 25 bytes. */
void agent_wal_segment_name(uint32_t tli, uint64_t segno, uint64_t seg_size, char *out);

/* ---- the long page header at offset 0 of a segment ---- */

#define AGENT_WAL_LONG_HEADER_SIZE 40 /* SizeOfXLogLongPHD on every 64-bit platform */
#define AGENT_WAL_XLP_FIRST_IS_CONTREC 0x0001 /* the page starts inside a record */
#define AGENT_WAL_XLP_LONG_HEADER  0x0002
#define AGENT_WAL_XLP_ALL_FLAGS    0x0007
#define AGENT_WAL_SEG_MIN          (1u << 20) /* WalSegMinSize */
#define AGENT_WAL_SEG_MAX          (1u << 30) /* WalSegMaxSize */

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
int agent_wal_header_check(const AgentWalName *name, const void *p, size_t n,
                           uint64_t file_size, AgentWalHeader *ret, char *why, size_t why_n);

/* ---- the WAL object (sealed plaintext), format version 1 ---- */

#define AGENT_WAL_OBJECT_MAGIC   0x314C4157u /* bytes 57 41 4C 31, "WAL1" */
#define AGENT_WAL_OBJECT_VERSION 1u
#define AGENT_WAL_OBJECT_FIXED   72 /* bytes before the name */
#define AGENT_WAL_OBJECT_MAX     (64u * 1024) /* readers refuse larger sealed objects */

typedef struct AgentWalObject {
    AgentWalKind kind;
    uint16_t xlp_magic;   /* 0 for files without a page header */
    uint64_t size;        /* bytes of the file */
    uint64_t sysid;       /* xlp_sysid; 0 for files without a page header */
    int64_t archived_at;  /* seconds since the epoch, UTC */
    uint8_t sha256[32];   /* of the file's bytes */
    char name[AGENT_WAL_NAME_MAX];
    CsContentRef content; /* owned: agent_wal_object_clear() frees it */
} AgentWalObject;

void agent_wal_object_clear(AgentWalObject *o);
/* Append the encoding to out. -EINVAL for a name that does not parse as o->kind. */
int agent_wal_object_encode(const AgentWalObject *o, Buf *out);
/* Decode p[0..n). -EBADMSG for anything malformed (including trailing bytes, a name that is
 * not a valid WAL file name of the stored kind, or a content size different from `size`);
 * -EPROTONOSUPPORT for a newer version. */
int agent_wal_object_decode(const void *p, size_t n, AgentWalObject *ret);

/* ---- object names ---- */

/* 1..64 characters of [A-Za-z0-9._-], not starting with '.' or '-', without "..". */
bool agent_wal_node_is_valid(const char *node);
/* Room for any object name of a valid node and file name. */
#define AGENT_WAL_OBJECT_NAME_MAX 256
/* "wal/<node>/<TTTTTTTT>/<file>" or "wal/<node>/history/<file>"; out holds `n` bytes.
 * -ENAMETOOLONG when it does not fit. */
int agent_wal_object_name(const char *node, const AgentWalName *name, char *out, size_t n);
