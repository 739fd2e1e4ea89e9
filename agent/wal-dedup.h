/*
 * WAL segments stored with their full-page images as references to the data pages they copy
 * (docs/proposals/wal-page-images.md): hooks for cs_tree_store() when the tree is a PostgreSQL
 * data directory or holds one. The walk stores entries in name order, so the relation files
 * under "base" and "global" are stored before "pg_wal"; each segment found in a pg_wal
 * directory is parsed (agent/wal-images.h), and an image whose bytes, from byte 10 on, are
 * those of the page its record names, as that page was stored a moment ago, is stored as slices
 * of that page. The first ten bytes (pd_lsn and pd_checksum, which PostgreSQL sets on the page
 * after logging the image and when writing it out) stay with the rest of the segment.
 *
 * Nothing the parser says is trusted: a page is compared as stored (read back from the
 * repository, never from the live file), and the segment is rebuilt from what would be put
 * and compared with the bytes read before it is put. A segment that does not rebuild is stored
 * as it is, with a warning: a parser bug costs space, never data. Readers need nothing new:
 * the segment's content is an ordinary list of slices.
 *
 * The first segment of a pg_wal directory makes the writer flush (publish the pages' pack), so
 * that they can be read back; so a tree with WAL costs one extra, smaller pack. Then two
 * threads of its own read and match the directory's segments, up to two ahead of the walk,
 * which takes the plans in name order and only puts them: the walk's thread is the one that
 * feeds the writer's workers. A planned segment is lent to the writer (CsLoan), not copied: its memory
 * comes back to the planner once the writer has read it.
 */
#pragma once

#include <stdint.h>
#include <sys/stat.h>

#include "chunkstore/repo.h"
#include "chunkstore/store.h"
#include "chunkstore/tree.h"
#include "common/macro.h"

/* Segments larger than this (wal_segment_size can be up to 1 GiB) are stored as they are:
 * the segment, its residual and the compared bytes are held in memory at once. */
#define AGENT_WAL_DEDUP_SEG_MAX (64u << 20)

typedef struct AgentWalDedup AgentWalDedup;

typedef struct AgentWalDedupStats {
    uint64_t segments;       /* WAL segments seen in pg_wal directories */
    uint64_t images;         /* uncompressed full-page images found in them */
    uint64_t images_referred; /* of those, stored as slices of data pages */
    uint64_t bytes_referred; /* segment bytes stored as slices of data pages */
    uint64_t rebuild_failures; /* segments stored as they are because they did not rebuild */
} AgentWalDedupStats;

int agent_wal_dedup_new(CsRepo *repo, AgentWalDedup **ret);
/* Segments still lent to a writer keep what they need alive until it gives them back (its next
 * sync, or its free), so the two may be freed in either order. */
AgentWalDedup *agent_wal_dedup_free(AgentWalDedup *d);
DEFINE_CLEANUP_FUNC(AgentWalDedup *, agent_wal_dedup_free)

/* For CsTreeParams.store_file: takes the segments in pg_wal directories (returns 1), leaves
 * every other file to the tree (0). */
int agent_wal_dedup_store_file(AgentWalDedup *d, CsWriter *w, const char *relpath, int dir_fd,
                               int fd, const struct stat *st, CsContentRef *ret);
/* For CsTreeParams.file_stored: remembers page files (entries flagged CS_ENTRY_FLAG_PAGES) by
 * path, for the segments stored after them. */
void agent_wal_dedup_file_stored(AgentWalDedup *d, const char *relpath, const CsDirEntry *e);

void agent_wal_dedup_stats(const AgentWalDedup *d, AgentWalDedupStats *ret);
