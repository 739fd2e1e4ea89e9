/*
 * The inode table: FUSE inode number -> node, with the kernel's lookup counts.
 *
 * Numbers are stable for the life of the mount, without remembering every entry ever seen: a
 * node's number is a 64-bit hash of (parent's number, name) (for symlinks also the target), so
 * the same path gets the same number after the kernel has forgotten it and looks it up again.
 * Hard links are one node: a stored entry with a link id (chunkstore/tree.h) gets a hash of
 * (its snapshot's number, link id), and whichever of its paths is looked up first is the
 * node's parent and entry; the other paths find that node (link ids are only unique within a
 * snapshot, so two snapshots of one tree never share a node).
 * Numbers 1..15 are reserved (1 = FUSE_ROOT_ID). If a hash collides with a live node of another
 * identity, the next free number is taken (then that one node's number depends on the order of
 * lookups; with 64-bit hashes this does not happen in practice).
 *
 * Lifetime: a node lives while the kernel holds lookups on it (nlookup > 0, dropped by forget)
 * or the mount holds references (refs > 0: requests in progress, open files and directories,
 * and each live child, which keeps its parent so that its entry - which may point into the
 * parent's decoded directory - and its path stay valid). The table lock guards the hash chains,
 * nlookup and refs; a node's own lock guards its lazily loaded data (see dir.c and file.c).
 * A node's identity and attributes never change after creation.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <pthread.h>

#include "chunkstore/tree.h"
#include "common/buf.h"

#define PFS_INO_ROOT          1u
#define PFS_INO_SNAPSHOTS     2u
#define PFS_INO_STREAMS       3u
#define PFS_INO_WAL           4u
#define PFS_INO_STATS         5u
#define PFS_INO_FIRST_DYNAMIC 16u

typedef enum PfsNodeKind {
    PFS_NODE_ROOT,      /* the mount's top directory */
    PFS_NODE_SNAPSHOTS, /* /snapshots (changes with the catalog) */
    PFS_NODE_STREAMS,   /* /streams (changes with the catalog) */
    PFS_NODE_WAL,       /* /wal (changes as WAL is archived) */
    PFS_NODE_STATS,     /* /stats: the mount's counters, written out at each open */
    PFS_NODE_ENTRY,     /* everything else: described by a CsDirEntry */
} PfsNodeKind;

/* Where an entry node's directory listing or file bytes come from. Stored is the rule; the
 * others are what the mount makes up around stored data (fuse/pgdata.h, fuse/wal-dir.h). */
typedef enum PfsSource {
    PFS_SRC_STORED,        /* a stored directory or file, shown as it is */
    PFS_SRC_CLUSTER,       /* root of a cluster snapshot: one stored directory per node */
    PFS_SRC_MEMBER,        /* /snapshots/<cluster>/<node>: its base backup's tree */
    PFS_SRC_PGDATA,        /* <node>/pgdata of a cluster snapshot: startable as it is copied */
    PFS_SRC_PG_WAL,        /* its pg_wal/: plus the archived WAL up to the restore point */
    PFS_SRC_PG_TBLSPC,     /* its pg_tblspc/: the node's tablespaces in place of the links */
    PFS_SRC_RECOVERY_CONF, /* its postgresql.auto.conf: plus the recovery settings */
    PFS_SRC_WAL_NODE,      /* /wal/<node>: timeline directories and "history" */
    PFS_SRC_WAL_DIR,       /* /wal/<node>/<timeline> or history: the archived files */
} PfsSource;

typedef struct PfsFileMap PfsFileMap;

/* A directory object, decoded once when first needed. */
typedef struct PfsDirData {
    CsDirEntry *v; /* sorted by name, as stored */
    size_t n;
    CsXattrList own; /* attributes of the directory itself (a snapshot's root holds them) */
    Buf made_file; /* bytes of a file the mount made up here (PFS_SRC_RECOVERY_CONF) */
} PfsDirData;

typedef struct PfsNode {
    uint64_t ino;
    PfsNodeKind kind;
    PfsSource src;          /* PFS_NODE_ENTRY */
    struct PfsNode *parent; /* holds a reference; NULL for the fixed nodes */
    const CsDirEntry *e;    /* PFS_NODE_ENTRY: in the parent's PfsDirData, or &own */
    CsDirEntry own;         /* entries made up by the mount (snapshot roots, streams, links) */
    bool is_own;
    uint64_t link_scope;    /* a hard link: the number of its snapshot's root; else 0 */
    bool is_volatile; /* its name may go away or change target: short entry timeout */

    /* table lock */
    uint64_t nlookup;
    uint32_t refs;
    struct PfsNode *hnext;

    pthread_mutex_t lock;
    PfsDirData *dir; /* lock: directories, once loaded */
    PfsFileMap *map; /* lock: regular files, while open */
    unsigned n_open; /* lock */
} PfsNode;

/* /wal and the directories below it: listed afresh at each opendir, their names volatile. */
static inline bool pfs_node_is_wal_dir(const PfsNode *n)
{
    return n->kind == PFS_NODE_WAL ||
           (n->kind == PFS_NODE_ENTRY &&
            (n->src == PFS_SRC_WAL_NODE || n->src == PFS_SRC_WAL_DIR));
}

typedef struct PfsInodeTable PfsInodeTable;

/* free_data is called for every node freed, to release what other modules hang on it (the
 * file map); the table itself frees the directory data and the node. May be NULL. */
typedef void (*PfsNodeFreeFn)(PfsNode *n);
int pfs_inode_table_new(PfsNodeFreeFn free_data, PfsInodeTable **ret);
/* Frees every node, whatever its counts (the session is over). Returns NULL. */
PfsInodeTable *pfs_inode_table_free(PfsInodeTable *t);

/* The node for `ino` with a reference taken, or -ESTALE for a number not in the table. */
int pfs_inode_get(PfsInodeTable *t, uint64_t ino, PfsNode **ret);
PfsNode *pfs_inode_ref(PfsInodeTable *t, PfsNode *n);
void pfs_inode_unref(PfsInodeTable *t, PfsNode *n);

/*
 * Find or create the child of `parent` that `e` describes (e->name is its name), whose data
 * comes from `src`. With `borrow` the node points at *e, which must live as long as the
 * parent's directory data; otherwise e is deep-copied. With `count` the kernel's lookup count
 * is incremented (a lookup or readdirplus reply will hand the node out). Children of
 * /snapshots, /streams and everything below /wal are volatile. Returns the node with a
 * reference the caller drops.
 */
int pfs_inode_child(PfsInodeTable *t, PfsNode *parent, const CsDirEntry *e, PfsSource src,
                    bool borrow, bool count, PfsNode **ret);
/* Count one kernel lookup of a node the caller holds (the fixed directories). */
void pfs_inode_add_lookup(PfsInodeTable *t, PfsNode *n);
/* Drop n kernel lookups (FUSE forget). Unknown numbers are ignored. */
void pfs_inode_forget(PfsInodeTable *t, uint64_t ino, uint64_t n);

/* The number pfs_inode_child() gives a child when there is no collision (readdir's d_ino). */
uint64_t pfs_inode_number(const PfsNode *parent, const CsDirEntry *e, PfsSource src);
/* Nodes alive, for tests and debug logs. */
size_t pfs_inode_count(PfsInodeTable *t);

/* The node's path below the mount ("/snapshots/<id>/a/b"), malloc'd; NULL on -ENOMEM. */
char *pfs_node_path(const PfsNode *n);

/* Sort the entries by name (strcmp), as stored directories are. */
void pfs_dir_data_sort(PfsDirData *dd);
/* Frees the entries, the made-up file and the PfsDirData itself. Returns NULL. */
PfsDirData *pfs_dir_data_free(PfsDirData *dd);

/* Deep copies and frees of a CsDirEntry (name, target, content list, attributes, holes). */
int pfs_dir_entry_copy(const CsDirEntry *src, CsDirEntry *ret);
void pfs_dir_entry_clear(CsDirEntry *e);
