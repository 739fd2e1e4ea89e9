/*
 * Directories: lookup, opendir, readdir(plus), for the mount's own directories (/, /snapshots,
 * /streams, /wal and below it: fuse/wal-dir.h) and for the directories of tree snapshots (with
 * what fuse/pgdata.h adds to a cluster snapshot's data directories).
 *
 * A snapshot directory is decoded (one cs_dir_load of its object) the first time it is looked
 * into or listed, and kept while its node lives; nothing else of the snapshot is read, so
 * opening a snapshot of a million files costs one directory object per directory visited.
 *
 * Offsets: position 0 is ".", 1 is "..", 2 + i is the i-th entry (by name). Tree directories
 * never change; /snapshots and /streams are listed from the view their handle was opened with.
 * opendir of those two, and a lookup in them that misses, first look for new snapshots. The
 * directories of /wal are listed afresh at each opendir.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "fuse/pfs.h"

typedef struct PfsDirHandle {
    PfsNode *node;    /* reference */
    PfsView *view;    /* /snapshots and /streams: the listing this handle shows */
    PfsDirData *list; /* /wal and below: the listing this handle shows (owned) */
} PfsDirHandle;

typedef struct PfsDirent {
    const char *name;
    uint64_t ino;        /* readdir: the entry's inode number */
    mode_t type;         /* S_IFDIR etc. */
    const PfsAttr *attr; /* readdirplus: the node handed out (lookup counted); NULL for . and .. */
    off_t next;          /* offset of the entry after this one */
} PfsDirent;

/* Add one entry to the reply: 0 when added, 1 when the reply is full (the entry was not added;
 * for readdirplus its lookup is taken back). */
typedef int (*PfsDirFill)(void *ctx, const PfsDirent *d);

/* The decoded directory of a tree node (an entry of type directory), loaded on first use and
 * kept while the node lives. -EIO when it cannot be read (logged with its path). */
int pfs_dir_node_data(PfsFs *fs, PfsNode *n, const PfsDirData **ret);

/*
 * Look `name` up in directory `parent`. On success *ret describes the child and its kernel
 * lookup count was incremented. -ENOENT when there is no such entry: then ret->entry_timeout
 * says how long the kernel may cache that absence (0: not at all).
 */
int pfs_dir_lookup(PfsFs *fs, uint64_t parent, const char *name, PfsAttr *ret);
int pfs_dir_open(PfsFs *fs, uint64_t ino, PfsDirHandle **ret);
/* Emit entries from position `off` until fill reports the reply full or the end. */
int pfs_dir_read(PfsFs *fs, PfsDirHandle *dh, off_t off, bool plus, PfsDirFill fill, void *ctx);
void pfs_dir_release(PfsFs *fs, PfsDirHandle *dh);
