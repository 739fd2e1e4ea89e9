/*
 * Directory trees. Each directory is one object (a stream of chunks, so unchanged directories
 * dedupe) listing its entries sorted by name; a subdirectory entry refers to the child's
 * object. A reader can therefore open one directory without loading the rest of the tree.
 *
 * Stored per entry: type, mode, uid, gid, mtime (ns), size, rdev, name, and a content reference
 * (regular files, directories) or link target (symlinks). Regular files are chunked with
 * FastCDC unless the caller marks them as page files, which are cut in page_size blocks.
 *
 * From format version 5 (docs/FORMAT.md 8) a tree is kept whole: entries that are one inode
 * (hard links) share a link id, extended attributes and POSIX ACLs are kept per entry, and the
 * holes of sparse files are recorded, so that restore and the mount give them back. A
 * repository of an older version is written as before (each link its own file, no attributes,
 * no holes), with one warning that says what was not kept. A directory that has none of these
 * is stored exactly as version 4 stored it, so it still deduplicates with older snapshots.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "chunkstore/read.h"
#include "chunkstore/store.h"

typedef enum CsEntryType {
    CS_ENTRY_FILE = 1,
    CS_ENTRY_DIR = 2,
    CS_ENTRY_SYMLINK = 3,
    CS_ENTRY_SPECIAL = 4, /* fifo, character or block device: metadata only */
} CsEntryType;

#define CS_ENTRY_FLAG_PAGES 0x01 /* content was cut in page blocks */

/* An extended attribute: user.*, trusted.*, security.*, or a POSIX ACL (system.posix_acl_access,
 * system.posix_acl_default) as the kernel encodes it in that attribute. */
typedef struct CsXattr {
    char *name;
    uint8_t *value;
    uint32_t size;
} CsXattr;

/* Sorted by name, names unique. */
typedef struct CsXattrList {
    CsXattr *v;
    uint32_t n;
} CsXattrList;

/* A byte range of a regular file: a hole reads as zeros and takes no space. */
typedef struct CsExtent {
    uint64_t offset, length;
} CsExtent;

typedef struct CsDirEntry {
    uint8_t type;
    uint8_t flags;
    uint32_t mode, uid, gid;
    int64_t mtime_sec;
    uint32_t mtime_nsec;
    uint64_t size;
    uint64_t rdev;
    char *name;
    char *target;       /* symlinks */
    CsContentRef content; /* files and directories */
    /* Format version 5; zero or empty in older directory objects. */
    uint64_t link_id; /* not a directory: nonzero when entries of the tree are one inode */
    uint32_t nlink;   /* with link_id: how many entries of the stored tree are that inode */
    CsXattrList xattrs;
    CsExtent *holes;  /* regular files: sorted, disjoint, non-empty, inside the content */
    uint32_t n_holes;
} CsDirEntry;

typedef struct CsTreeStats {
    uint64_t files, dirs, symlinks, specials;
    uint64_t bytes;      /* regular file bytes */
    uint64_t page_files; /* files cut in page blocks */
    uint64_t hardlinks;  /* entries that are an inode met before (store), links made (restore) */
    uint64_t xattrs;     /* extended attributes and ACLs stored, or set */
    uint64_t sparse_files; /* regular files with holes */
    /* restore only: attributes not set (each failure is a warning naming the file; trusted.*
     * and security.* are skipped when not running as root) */
    uint64_t xattrs_not_set;
    /* store only: files (and their bytes) taken from the previous version unread, because the
     * files cache says they have not changed (CsTreeParams.use_files_cache) */
    uint64_t files_cached, bytes_cached;
    /* restore only */
    uint64_t bytes_written;   /* file bytes written (less than `bytes` in a delta restore) */
    uint64_t files_unchanged; /* delta: files whose content already matched */
    uint64_t entries_removed; /* delta: entries in the target that the tree does not have */
} CsTreeStats;

typedef struct CsTreeParams {
    /* Decide whether a regular file is a page file; NULL: none are. relpath has no leading /. */
    bool (*is_page_file)(const char *relpath, const struct stat *st, void *userdata);
    void *userdata;
    /* Skip an entry entirely (pg_basebackup-style exclusions); NULL: keep all. A tree with
     * hard links is walked once more to count them: it is then asked twice per entry. */
    bool (*is_excluded)(const char *relpath, const struct stat *st, void *userdata);
    /* Watch the bytes of each page file as they are read, once, in order (see
     * CsReadObserver); NULL: none. */
    void (*observe_page_file)(const char *relpath, const void *p, size_t n, uint64_t offset,
                              void *userdata);
    /* The root directory of the tree's previous version in this repository (the last backup of
     * the same thing); NULL: none. Page files found at the same path there are stored as deltas
     * of their previous pages (CsPutOptions.previous). */
    const CsContentRef *previous;
    /* Take a regular file's content from `previous` without reading it when the files cache
     * (chunkstore/files-cache.h) says the file has not changed since a store read it; and
     * remember every file read, for the next store. The cache is kept per source path. */
    bool use_files_cache;
    /* Store a regular file that is not a page file by other means: return 1 once its content
     * is put into *ret (an asynchronous put is fine: the tree's next sync resolves it), 0 to
     * have it stored as usual (from offset 0, whatever was read), or -errno to fail the tree.
     * dir_fd is the file's directory, open until the directory is stored. NULL: none. */
    int (*store_file)(CsWriter *w, const char *relpath, int dir_fd, int fd,
                      const struct stat *st, CsContentRef *ret, void *userdata);
    /* Told of every regular file once its content reference is known, which is when the walk
     * has stored its whole directory. Entries are stored in name order, depth first. NULL:
     * none. */
    void (*file_stored)(const char *relpath, const CsDirEntry *e, void *userdata);
} CsTreeParams;

/* Store the tree at `path` and return the reference of its root directory object. The
 * extended attributes of `path` itself go into that object (cs_dir_load_own). */
int cs_tree_store(CsWriter *w, const char *path, const CsTreeParams *params, CsContentRef *ret,
                  CsTreeStats *stats);

/* Like cs_tree_store(), but return the root's entries (sorted by name) instead of storing the
 * root directory object, so the caller can add entries and store it with cs_dir_store(). The
 * attributes of `path` itself are not kept. */
int cs_tree_store_entries(CsWriter *w, const char *path, const CsTreeParams *params,
                          CsDirEntry **ret, size_t *ret_n, CsTreeStats *stats);
/* Store a directory object made of the given entries (sorted here; names must be unique). In a
 * repository older than version 5 what that version cannot hold is left out of the entries. */
int cs_dir_store(CsWriter *w, CsDirEntry *v, size_t n, CsContentRef *ret);

/* Mode, owner and times of the stored directory itself (it has no entry in any directory
 * object, so the caller keeps them with the snapshot). */
typedef struct CsTreeRootAttr {
    uint32_t mode, uid, gid;
    int64_t mtime_sec;
    uint32_t mtime_nsec;
} CsTreeRootAttr;

int cs_tree_root_attr(const char *path, CsTreeRootAttr *ret);

typedef struct CsRestoreParams {
    bool is_overwrite_allowed; /* target may exist and be non-empty */
    /* The target may hold an older copy of the tree: files are compared chunk by chunk with
     * the stored chunk ids and only differing chunks are written; entries the tree does not
     * have are removed. Implies is_overwrite_allowed. */
    bool is_delta;
    bool skip_owner;           /* do not chown (default: chown when running as root) */
    /* Return without waiting for the files to reach the disk (as pg_basebackup --no-sync):
     * faster, but a crash soon after can leave files incomplete. */
    bool no_sync;
    unsigned threads;          /* files restored at once; 0: twice the CPUs (I/O overlaps) */
    const CsTreeRootAttr *root_attr; /* applied to the target directory last; NULL: leave it */
} CsRestoreParams;

/* Recreate the tree under `target` (created if missing; must be empty unless allowed). Hard
 * links are made once every file is written; extended attributes and ACLs are set after the
 * owner (a failure is a warning naming the file, not an error), holes are left unwritten. The
 * attributes the root directory object holds of the stored directory go to `target`. */
int cs_tree_restore(CsReader *rd, const CsContentRef *root, const char *target,
                    const CsRestoreParams *params, CsTreeStats *stats);

/* Load and decode one directory object. */
int cs_dir_load(CsReader *rd, const CsContentRef *ref, CsDirEntry **ret, size_t *ret_n);
int cs_dir_decode(const void *p, size_t n, CsDirEntry **ret, size_t *ret_n);
/* Writes a version 4 object ("DIR1") when no entry has a link id, attributes or holes and
 * `own` is empty, else a version 5 one ("DIR2"). */
int cs_dir_encode(const CsDirEntry *v, size_t n, Buf *out);
/* The same with the attributes of the directory itself, which only the root directory object
 * of a stored tree holds (it has no entry anywhere). `own` may be NULL: none, or not wanted. */
int cs_dir_encode_own(const CsDirEntry *v, size_t n, const CsXattrList *own, Buf *out);
int cs_dir_decode_own(const void *p, size_t n, CsDirEntry **ret, size_t *ret_n,
                      CsXattrList *own);
int cs_dir_load_own(CsReader *rd, const CsContentRef *ref, CsDirEntry **ret, size_t *ret_n,
                    CsXattrList *own);
void cs_dir_entries_free(CsDirEntry *v, size_t n);
/* Free what one entry owns (name, target, content, attributes, holes) and zero it. */
void cs_dir_entry_clear(CsDirEntry *e);
/* A deep copy of an entry. */
int cs_dir_entry_copy(const CsDirEntry *src, CsDirEntry *ret);

void cs_xattr_list_clear(CsXattrList *l);
int cs_xattr_list_copy(const CsXattrList *src, CsXattrList *ret);
/* The attribute `name`, or NULL. */
const CsXattr *cs_xattr_find(const CsXattrList *l, const char *name);

/* Bytes of a regular file's content that are not in a hole. */
uint64_t cs_entry_data_bytes(const CsDirEntry *e);
/* lseek(2)'s SEEK_DATA (want_hole false) or SEEK_HOLE (true) from `off` in a regular file
 * whose holes the entry records (the end of the file counts as a hole): the offset found, or
 * -ENXIO at or past the end, or when no data follows. */
int64_t cs_entry_seek(const CsDirEntry *e, uint64_t off, bool want_hole);
/* Follow a path ("a/b/c", "" for the root) from a root reference. Returns a copy of the entry. */
int cs_tree_lookup(CsReader *rd, const CsContentRef *root, const char *path, CsDirEntry *ret);
