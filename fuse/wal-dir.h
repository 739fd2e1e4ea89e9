/*
 * /wal: the archived WAL of every node, laid out as the repository keeps it:
 *
 *   /wal/<node>/<TTTTTTTT>/<file>        segments, partial segments and backup history files
 *                                        of timeline TTTTTTTT
 *   /wal/<node>/history/<TTTTTTTT.history>
 *
 * so that a restore_command can copy from it. Files are read-only (0400, the mount's owner),
 * with the time they were archived as mtime; directories are 0555.
 *
 * WAL is archived while the repository is mounted, so nothing here is cached in the node: each
 * opendir lists the repository again (the listing lives in the directory handle), and a lookup
 * reads the one object it names. An object that cannot be read is left out of a listing, with
 * a log line naming it; looked up by name it is an I/O error.
 */
#pragma once

#include "fuse/pfs.h"

/* The listing of /wal (kind PFS_NODE_WAL) or of a directory below it (PFS_SRC_WAL_NODE,
 * PFS_SRC_WAL_DIR), sorted by name. The caller frees it with pfs_dir_data_free(). */
int pfs_wal_dir_list(PfsFs *fs, const PfsNode *dir, PfsDirData **ret);
/* The entry `name` of such a directory (deep, owned: pfs_dir_entry_clear()), or -ENOENT. */
int pfs_wal_dir_lookup(PfsFs *fs, const PfsNode *dir, const char *name, CsDirEntry *ret);
/* Where the children of such a directory come from. */
PfsSource pfs_wal_dir_child_source(const PfsNode *dir);
