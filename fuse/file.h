/*
 * Regular files: open, read, release, and read-ahead.
 *
 * A file's chunk list (its content reference flattened to level 0, with the offset of every
 * chunk) is loaded on the first open and shared by all opens of the node; it is dropped on the
 * last release. Reads find the chunks covering [off, off + size) by binary search and take each
 * from the chunk cache, decoding missing ones; the reply is an iovec straight into the pinned
 * cache entries (no copy), released by pfs_read_reply_done() once the kernel has it.
 *
 * Decoding is record-aware: small chunks are compressed together in records, so when a chunk is
 * decoded, the chunks that follow it in the file and sit in the same record are reserved and
 * filled from the same decoded record. A sequential reader (reads near the highest offset read
 * so far) has the chunks up to readahead_bytes ahead queued for the read-ahead workers, and a
 * read spanning several chunks hands the later ones to the workers while it decodes the first.
 *
 * Never wrong bytes: a chunk that cannot be read fails the whole request (-EIO), because a short
 * read would be taken by the kernel as the end of the file.
 */
#pragma once

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include <pthread.h>

#include "fuse/pfs.h"

struct PfsFileMap {
    atomic_uint refs;
    size_t count;
    uint64_t size;
    CsChunkSlice *chunks; /* the file's bytes, in order: slices of chunks */
    uint32_t *chunk_len;  /* chunk_len[i]: length of the whole chunk chunks[i] is a slice of */
    uint64_t *offsets;    /* offsets[i]: start of chunks[i] in the file; offsets[count] == size */
};

typedef struct PfsFile {
    PfsNode *node;          /* reference */
    PfsFileMap *map;        /* NULL for a file the mount made up: */
    const Buf *made;        /* its bytes: kept by the node's parent (fuse/pgdata.h) or own */
    Buf own;                /* /stats: its bytes as they were at open */
    pthread_mutex_t lock;
    uint64_t frontier; /* lock: highest end offset of the current sequential run */
    size_t ra_next;    /* lock: first chunk not yet queued for read-ahead */
} PfsFile;

typedef struct PfsReadReply {
    struct iovec *iov;
    PfsChunk **pins; /* one per iovec */
    bool *is_spent;  /* one per iovec: a sequential reader got the chunk's last byte */
    size_t n;
    size_t bytes;
} PfsReadReply;

/* Build a chunk map from a content reference (any level). */
int pfs_file_map_load(CsReader *rd, const CsContentRef *ref, PfsFileMap **ret);
PfsFileMap *pfs_file_map_ref(PfsFileMap *m);
void pfs_file_map_unref(PfsFileMap *m);
/* Index of the chunk holding byte `off` (off < m->size). */
size_t pfs_file_map_find(const PfsFileMap *m, uint64_t off);

/* -EROFS for any write access or O_TRUNC, -EISDIR for directories, -EINVAL for other types. */
int pfs_file_open(PfsFs *fs, uint64_t ino, int flags, PfsFile **ret);
void pfs_file_release(PfsFs *fs, PfsFile *f);
/* Fills *ret (possibly with 0 bytes at or past the end) and returns the byte count, or -errno. */
long pfs_file_read(PfsFs *fs, PfsFile *f, size_t size, uint64_t off, PfsReadReply *ret);
void pfs_read_reply_done(PfsFs *fs, PfsReadReply *rr);
/* lseek's SEEK_DATA and SEEK_HOLE, from the holes stored with the file (a file stored without
 * holes is data to its end): the offset found, -ENXIO at or past the end or when no data
 * follows, -EINVAL for any other whence (the kernel does those itself). */
int64_t pfs_file_lseek(PfsFs *fs, PfsFile *f, uint64_t off, int whence);

/* For the inode table: drop a node's file map when the node is freed. */
void pfs_file_node_free(PfsNode *n);
/* Read-ahead jobs (PfsPrefetchJob: ptr = a PfsFileMap reference, index = chunk). */
void pfs_file_prefetch_run(const PfsPrefetchJob *job, void *fs);
void pfs_file_prefetch_drop(const PfsPrefetchJob *job, void *fs);
/* The readers' base source (CsBaseSource, userdata = the PfsFs): the keys of delta pages come
 * from the chunk cache, decoded into it when missing, so a page run stored whole is decoded
 * once whether it is read or serves as the key of deltas, by any thread. An entry another
 * thread is loading is not waited for (the reader decodes it itself). */
int pfs_file_base_get(void *fs, CsReader *rd, const CsChunkId *id, const uint8_t **ret_p,
                      size_t *ret_n, void **ret_pin);
void pfs_file_base_put(void *fs, void *pin);
