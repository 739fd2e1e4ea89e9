/*
 * The mounted filesystem as an object, without libfuse: everything fs.c's adapters call, so the
 * logic can be driven by unit tests without a mount.
 *
 *   /                      directory made by the mount (owner: params.uid/gid, 0555)
 *   /snapshots/<id>/...    each tree snapshot, with modes, owners, sizes, times as stored
 *   /snapshots/<name>      symlink to <id> (newest of that name); latest -> the newest
 *   /streams/<id>, <name>  each stream snapshot as a regular file (0400, params.uid/gid)
 *
 * Functions return 0 (or a byte count) or a negative errno meant for the kernel: damaged or
 * missing data is -EIO (logged with the path; the chunkstore logs the chunk and pack), writes
 * are -EROFS. Thread-safe: any number of FUSE worker threads may call in at once.
 *
 * Ownership: a PfsFs borrows the repository, which must outlive it. Threads (read-ahead,
 * housekeeping) only run between pfs_fs_start() and pfs_fs_stop(), so a PfsFs can be created
 * before a fork.
 */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <pthread.h>

#include "chunkstore/repo.h"
#include "fuse/chunk-cache.h"
#include "fuse/inode.h"
#include "fuse/prefetch.h"
#include "fuse/reader-pool.h"
#include "fuse/view.h"

typedef struct PfsParams {
    size_t cache_bytes;          /* decompressed-chunk cache bound */
    size_t readahead_bytes;      /* decode this far ahead of a sequential reader; 0: off */
    unsigned prefetch_threads;   /* read-ahead workers; 0: one per CPU, 2 to 16 */
    uint32_t uid, gid;           /* owner of the mount's own directories and of streams */
    double timeout;              /* entry/attribute timeout for snapshot contents (immutable) */
    double volatile_timeout;     /* for /, /snapshots, /streams and the names in them */
    unsigned catalog_max_age_ms; /* re-list the catalog at most this often (lookups that miss
                                  * and opendir of /snapshots or /streams always look) */
    const char *mountpoint;      /* absolute; for the kernel read-ahead window */
    size_t kernel_readahead_bytes; /* 0: leave the kernel's window (kernel-readahead.h) */
    bool direct_io;                /* files bypass the kernel's page cache (FOPEN_DIRECT_IO) */
} PfsParams;

#define PFS_DEFAULT_CACHE_BYTES      (256u * 1024 * 1024)
#define PFS_DEFAULT_READAHEAD_BYTES  (8u * 1024 * 1024)
#define PFS_DEFAULT_KERNEL_READAHEAD (1024u * 1024)
#define PFS_DEFAULT_TIMEOUT          86400.0
#define PFS_DEFAULT_VOLATILE_TIMEOUT 1.0
#define PFS_DEFAULT_CATALOG_AGE_MS   1000u
#define PFS_BLKSIZE                  (128u * 1024) /* st_blksize: cp and cat read this much */
/* Under direct_io every read(2) is a round trip to the daemon: ask for the largest request
 * libfuse takes (its buffer, 1 MiB), not the page-cache-friendly size above. */
#define PFS_DIRECT_IO_BLKSIZE        (1024u * 1024)

/* A record that failed to decode recently: reads of its chunks fail at once for a while instead
 * of decoding (and logging) the same damage again for every chunk and every read. */
typedef struct PfsBadRecord {
    CsPackId pack;
    uint64_t record_off;
    uint64_t until_ms; /* 0: free slot */
} PfsBadRecord;
#define PFS_BAD_RECORDS   16
#define PFS_BAD_RECORD_MS 10000u

/* Attributes of a node as the kernel gets them (lookup, getattr, readdirplus). */
typedef struct PfsAttr {
    uint64_t ino;
    struct stat st;
    double attr_timeout, entry_timeout;
} PfsAttr;

typedef struct PfsFs {
    CsRepo *repo;
    PfsParams params;
    PfsInodeTable *inodes;
    PfsChunkCache *cache;
    PfsReaderPool *readers;
    PfsCatalog *catalog;
    PfsPrefetch *prefetch;   /* NULL unless started */
    struct timespec created; /* CLOCK_REALTIME: times of the mount's own directories */

    pthread_mutex_t hk_lock;
    pthread_cond_t hk_wake;
    bool hk_stop, has_housekeeper; /* hk_lock */
    pthread_t housekeeper;

    pthread_mutex_t bad_lock;
    PfsBadRecord bad[PFS_BAD_RECORDS]; /* bad_lock */

    atomic_uint_fast64_t n_reads, read_bytes, read_errors;
} PfsFs;

/* Opens the catalog (an unreadable catalog fails here, before anything is mounted). */
int pfs_fs_new(CsRepo *repo, const PfsParams *params, PfsFs **ret);
int pfs_fs_start(PfsFs *fs);
void pfs_fs_stop(PfsFs *fs);
/* Stops first if needed. Returns NULL. */
PfsFs *pfs_fs_free(PfsFs *fs);
void pfs_fs_log_stats(PfsFs *fs);
/* The counters of pfs_fs_log_stats() and the cache's bound, as one JSON object and a newline,
 * appended to out: the bytes of /stats. */
int pfs_fs_stats_json(PfsFs *fs, Buf *out);

/* st_nlink is the link count of a hard link (the entries of its snapshot that are the node);
 * st_blocks counts what the holes of a sparse file leave (as a file system with 4 KiB blocks
 * would), else the size in 512-byte blocks. */
void pfs_node_attr(PfsFs *fs, const PfsNode *n, PfsAttr *ret);
/* S_IFREG, S_IFDIR, ... for a stored entry. */
mode_t pfs_entry_type(const CsDirEntry *e);
int pfs_fs_getattr(PfsFs *fs, uint64_t ino, PfsAttr *ret);
/* The target of a symlink, malloc'd in *ret. -EINVAL for anything else. */
int pfs_fs_readlink(PfsFs *fs, uint64_t ino, char **ret);
int pfs_fs_statfs(PfsFs *fs, struct statvfs *ret);
/*
 * Extended attributes and ACLs as stored (a snapshot's root directory has those of the stored
 * directory itself). getxattr: the value's size, copied into buf when size > 0; -ERANGE when
 * size is too small, -ENODATA when there is no such attribute. listxattr: the names, each
 * NUL-terminated, likewise. The mount's own nodes have none.
 */
long pfs_fs_getxattr(PfsFs *fs, uint64_t ino, const char *name, void *buf, size_t size);
long pfs_fs_listxattr(PfsFs *fs, uint64_t ino, char *buf, size_t size);
void pfs_fs_forget(PfsFs *fs, uint64_t ino, uint64_t nlookup);

/* Decode the stored directory `ref` into ret->v/ret->n (sorted by name) and ret->own (its
 * own attributes) with a pooled reader. */
int pfs_fs_load_dir(PfsFs *fs, const CsContentRef *ref, PfsDirData *ret);

/* An error reading repository data as the kernel should see it: -ENOMEM stays, anything else
 * (damage, a chunk missing from the index, I/O errors) is -EIO. */
int pfs_data_errno(int r);
