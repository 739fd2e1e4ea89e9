/*
 * The data directory of a node in a cluster snapshot, made startable as it is copied:
 *
 *   /snapshots/<cluster-id>/<node>/pgdata/    the node's base backup (with its backup_label)
 *     pg_wal/<segments>      the archived WAL from the segment the backup started in to the
 *                            one holding the restore point; each segment from the snapshot's
 *                            timeline or, where that has none, the latest earlier timeline that
 *                            has it (a backup taken before a promotion); plus the timeline's
 *                            history file
 *     pg_tblspc/<oid>/       each tablespace the backup holds (<node>/tablespaces/<oid>/), as
 *                            a directory in place of the link to its original location: a copy
 *                            holds its tablespaces and never writes where the node itself may
 *                            still run; tablespace_map, with which recovery would try to link
 *                            them back there (and fail), is then not shown
 *     recovery.signal        empty (a stored standby.signal is not shown)
 *     postgresql.auto.conf   the stored file, then restore_command = 'false' (pg_wal/ holds
 *                            all that recovery needs), recovery_target_name = the snapshot's
 *                            restore point, recovery_target_timeline and
 *                            recovery_target_action = 'promote'; allow_in_place_tablespaces
 *                            = 'on' when pg_tblspc/ holds directories (recovery stops at them
 *                            otherwise)
 *
 * so that `cp -a .../pgdata DIR && pg_ctl -D DIR start` recovers the node to the snapshot's CSN
 * and opens it. What the snapshot says about the node (restore point, its WAL file and
 * timeline, where the backup started) is read from the catalog (FORMAT.md 9.2); a snapshot
 * without it is shown as stored, with a warning. A segment that is not archived is logged and
 * left out: recovery then stops with PostgreSQL's own "could not find" error. A WAL object that
 * cannot be read fails the listing of pg_wal/ (EIO, logged with the object's name).
 */
#pragma once

#include "fuse/pfs.h"

/* Where a child of `dir` (a node of kind PFS_NODE_ENTRY) comes from. */
PfsSource pfs_pgdata_child_source(const PfsNode *dir, const CsDirEntry *e);
/* Complete the stored listing `dd` (sorted by name) of a PFS_SRC_PGDATA, PFS_SRC_PG_WAL or
 * PFS_SRC_PG_TBLSPC directory; it stays sorted. Other directories are left alone. 0 or -errno
 * (logged). */
int pfs_pgdata_amend(PfsFs *fs, const PfsNode *dir, PfsDirData *dd);
/* The bytes of a PFS_SRC_RECOVERY_CONF file: its parent's made_file. */
const Buf *pfs_pgdata_recovery_conf(const PfsNode *file);
