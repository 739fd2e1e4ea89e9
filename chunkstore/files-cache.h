/*
 * The files cache: a second store of a tree does not read the files that have not changed
 * since the first. It is how borg and restic make a repeated backup of a large tree cost
 * about as much as listing it.
 *
 * A file counts as unchanged when its inode number, change time (ctime), modification time
 * and size are what they were when an earlier store read it, and the earlier snapshot's entry
 * for the same path has the content that store gave it. The change time is what makes this
 * safe: no program can set it, every write and every metadata change moves it, so a file
 * rewritten with its old size and modification time put back is still read again.
 *
 * A change time is only trusted when it is older than the start of the store by more than two
 * seconds (FAT keeps times in steps of two): a file written in the same clock tick as it was
 * read, after the read, would keep a change time equal to the one recorded, so such a file is
 * not remembered and is read again next time (the "racy" case git describes for its index).
 *
 * The records live in the local index (the database `files`, docs/FORMAT.md 10). Like the rest
 * of the index they are a cache: without them every file is read.
 */
#pragma once

#include <stdbool.h>
#include <sys/stat.h>

#include "chunkstore/index.h"
#include "chunkstore/store.h"

typedef struct CsFilesCache CsFilesCache;

/* The cache of the tree at `source` (an absolute path). The store's start, which decides which
 * change times are too recent to trust, is taken now. */
int cs_files_cache_open(CsIndex *idx, const char *source, CsFilesCache **ret);
/* Records not yet committed are dropped. */
CsFilesCache *cs_files_cache_free(CsFilesCache *fc);
DEFINE_CLEANUP_FUNC(CsFilesCache *, cs_files_cache_free)

/* True when the file at `relpath`, which `st` describes now, was read by an earlier store
 * exactly as it is and stored as `content` (the earlier snapshot's content of that path). */
bool cs_files_cache_unchanged(CsFilesCache *fc, const char *relpath, const struct stat *st,
                              const CsContentRef *content);
/* Remember that the file at `relpath`, as `st` described it before it was read, was stored as
 * `content`. Files whose change time is too recent are left out (see above). */
int cs_files_cache_remember(CsFilesCache *fc, const char *relpath, const struct stat *st,
                            const CsContentRef *content);
/* Write what was remembered, and forget the files of this source that this store did not
 * remember. Call once, after the whole tree was stored. */
int cs_files_cache_commit(CsFilesCache *fc);
