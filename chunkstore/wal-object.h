/*
 * Archived PostgreSQL WAL in the repository: the file names PostgreSQL gives WAL files, and the
 * small sealed object "wal/<node>/<TTTTTTTT>/<file>" (history files: "wal/<node>/history/<file>")
 * that records one archived file and names its content (docs/FORMAT.md, "WAL objects").
 * The agent writes these objects and restores from them; the mount shows them.
 *
 *  - Names: a segment is 24 uppercase hex digits TTTTTTTTXXXXXXXXYYYYYYYY (timeline, log id,
 *    segment within the log id); "<segment>.partial" is the unfinished last segment of a
 *    timeline; "TTTTTTTT.history" a timeline history file; "<segment>.XXXXXXXX.backup" a
 *    backup history file. Anything else is refused with -EINVAL.
 *  - The object's encoding is little-endian through common/endian.h; encode and decode are
 *    pure functions (no I/O, no logging), so the format can be tested byte by byte.
 *
 * Return values follow the project rule: 0 or a negative errno; -EBADMSG means "these bytes
 * are not what they claim to be".
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chunkstore/repo.h"
#include "chunkstore/store.h"
#include "common/buf.h"

/* ---- file names ---- */

typedef enum CsWalKind {
    CS_WAL_SEGMENT = 1, /* 000000010000000000000002 */
    CS_WAL_PARTIAL = 2, /* 000000010000000000000002.partial */
    CS_WAL_HISTORY = 3, /* 00000002.history */
    CS_WAL_BACKUP = 4,  /* 000000010000000000000002.00000028.backup */
    _CS_WAL_KIND_MAX,
} CsWalKind;

#define CS_WAL_NAME_MAX 64 /* PostgreSQL's MAXFNAMELEN; longest valid name is 40 */

typedef struct CsWalName {
    CsWalKind kind;
    uint32_t tli; /* timeline, from the first 8 digits */
    uint32_t log; /* log id and segment: 0 for history files */
    uint32_t seg;
    char name[CS_WAL_NAME_MAX];
} CsWalName;

/* Parse a bare file name (no directory). -EINVAL when it is none of the four kinds, has
 * lowercase hex, or timeline 0. */
int cs_wal_name_parse(const char *name, CsWalName *ret);
/* "segment", "partial segment", "timeline history file", "backup history file". */
const char *cs_wal_kind_to_string(CsWalKind kind);
/* Whether files of this kind start with a WAL page header. */
static inline bool cs_wal_kind_has_header(CsWalKind kind)
{
    return kind == CS_WAL_SEGMENT || kind == CS_WAL_PARTIAL;
}
#define CS_WAL_SEG_MIN (1u << 20) /* PostgreSQL's WalSegMinSize */
#define CS_WAL_SEG_MAX (1u << 30) /* WalSegMaxSize */

/* A power of two between CS_WAL_SEG_MIN and CS_WAL_SEG_MAX. */
bool cs_wal_seg_size_is_valid(uint64_t size);
/* Segment number (log * segments-per-log-id + seg) for a segment size; -EINVAL when the
 * size is not a valid wal_segment_size or seg is out of range for it. */
int cs_wal_segno(const CsWalName *n, uint64_t seg_size, uint64_t *ret);
/* An LSN as PostgreSQL prints it ("16/B374D848"). -EINVAL for anything else. */
int cs_wal_lsn_parse(const char *s, uint64_t *ret);
/* The 24-digit segment name of (tli, segno) for a segment size; out must hold 25 bytes. */
void cs_wal_segment_name(uint32_t tli, uint64_t segno, uint64_t seg_size, char *out);

/* ---- the WAL object (sealed plaintext), format version 1 ---- */

#define CS_WAL_OBJECT_MAGIC   0x314C4157u /* bytes 57 41 4C 31, "WAL1" */
#define CS_WAL_OBJECT_VERSION 1u
#define CS_WAL_OBJECT_FIXED   72 /* bytes before the name */
#define CS_WAL_OBJECT_MAX     (64u * 1024) /* readers refuse larger sealed objects */

typedef struct CsWalObject {
    CsWalKind kind;
    uint16_t xlp_magic;   /* 0 for files without a page header */
    uint64_t size;        /* bytes of the file */
    uint64_t sysid;       /* xlp_sysid; 0 for files without a page header */
    int64_t archived_at;  /* seconds since the epoch, UTC */
    uint8_t sha256[32];   /* of the file's bytes */
    char name[CS_WAL_NAME_MAX];
    CsContentRef content; /* owned: cs_wal_object_clear() frees it */
} CsWalObject;

void cs_wal_object_clear(CsWalObject *o);
/* Append the encoding to out. -EINVAL for a name that does not parse as o->kind. */
int cs_wal_object_encode(const CsWalObject *o, Buf *out);
/* Decode p[0..n). -EBADMSG for anything malformed (including trailing bytes, a name that is
 * not a valid WAL file name of the stored kind, or a content size different from `size`);
 * -EPROTONOSUPPORT for a newer version. */
int cs_wal_object_decode(const void *p, size_t n, CsWalObject *ret);

/* ---- object names ---- */

/* 1..64 characters of [A-Za-z0-9._-], not starting with '.' or '-', without "..". */
bool cs_wal_node_is_valid(const char *node);
/* The directory below "wal/<node>/" that holds a file of this kind and name: "history" for
 * timeline history files, else the file's timeline, its first 8 digits (written into buf). */
#define CS_WAL_DIR_MAX 9
const char *cs_wal_object_dir(CsWalKind kind, const char *name, char buf[CS_WAL_DIR_MAX]);
/* Room for any object name of a valid node and file name. */
#define CS_WAL_OBJECT_NAME_MAX 256
/* "wal/<node>/<TTTTTTTT>/<file>" or "wal/<node>/history/<file>"; out holds `n` bytes.
 * -ENAMETOOLONG when it does not fit. */
int cs_wal_object_name(const char *node, const CsWalName *name, char *out, size_t n);

/* ---- reading objects ---- */

/* Read and open the object `objname`. Does not log: -ENOENT (absent), -EBADMSG (damaged: it
 * does not open under the catalog key, does not parse, or records another file than its name
 * and directory say), -EPROTONOSUPPORT (newer format), -errno. */
int cs_wal_object_load(CsRepo *repo, const char *objname, CsWalObject *ret);

/* Called for each object with its parsed file name; a non-zero return stops the walk. */
typedef int (*CsWalListFn)(const char *objname, const CsWalName *name, void *userdata);
/*
 * Every WAL object of `node` whose directory is `dir` ("TTTTTTTT" or "history"), or of all its
 * directories when dir is NULL; in no particular order. Objects whose names are not those of a
 * WAL object are skipped with a warning. 0 when the node has none.
 */
int cs_wal_list(CsRepo *repo, const char *node, const char *dir, CsWalListFn fn, void *userdata);
