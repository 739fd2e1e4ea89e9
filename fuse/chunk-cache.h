/*
 * The decompressed-chunk cache of the mount: chunk id -> plaintext, shared by every thread and
 * bounded in bytes (cache_size=). Decrypting and decompressing a record is the expensive part of
 * a read; the kernel page cache keeps file pages, this cache keeps chunks, so a chunk shared by
 * several files or snapshots (deduplicated data) and a chunk straddling two kernel read requests
 * are decoded once.
 *
 * Contract:
 *  - An entry handed out is pinned until pfs_chunk_cache_release(); pinned bytes are never freed
 *    or evicted (a reply's iovec points into them). Only pinned entries may push the cache over
 *    its bound, and only while pinned.
 *  - Loads are single-flight: the first thread to ask for a missing id gets it RESERVED, fills
 *    it outside any lock (see pfs_chunk_cache_buffer()) and calls pfs_chunk_cache_complete();
 *    threads asking for the same id meanwhile get it LOADING and block in
 *    pfs_chunk_cache_wait(). A failed load is removed from the cache (waiters get the error;
 *    the next acquire tries again), so damage is never cached and never turned into data.
 *  - A thread holding a RESERVED entry must complete it before it waits for any other entry
 *    (that is the only rule needed to rule out deadlocks).
 *  - Entries released as spent (a sequential reader has read to their end; the kernel page cache
 *    keeps those bytes) are kept on a short list, at most an eighth of the cache, and evicted
 *    before any other: a long sequential read recycles a little warm memory and does not push
 *    the rest of the cache out.
 * Thread-safe; 16 shards, each with its own lock and LRU lists.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chunkstore/pack.h"

typedef struct PfsChunkCache PfsChunkCache;
typedef struct PfsChunk PfsChunk;

typedef enum PfsChunkState {
    PFS_CHUNK_READY = 0,    /* data valid */
    PFS_CHUNK_LOADING = 1,  /* another thread is filling it: pfs_chunk_cache_wait() */
    PFS_CHUNK_RESERVED = 2, /* the caller fills it and calls pfs_chunk_cache_complete() */
} PfsChunkState;

typedef struct PfsChunkCacheStats {
    uint64_t hits, misses, waits, evictions, failures;
    uint64_t bytes, entries; /* current, including pinned and loading entries */
} PfsChunkCacheStats;

/* max_bytes 0 disables caching (entries live only while pinned). */
int pfs_chunk_cache_new(size_t max_bytes, PfsChunkCache **ret);
/* Every entry must have been released. Returns NULL. */
PfsChunkCache *pfs_chunk_cache_free(PfsChunkCache *c);

/*
 * Find `id` (a chunk of `len` bytes) or reserve a new entry for it. Always returns a pinned entry
 * in *ret and its state (>= 0), or -ENOMEM, or -EBADMSG when a cached entry of that id has
 * another length (the caller's chunk list contradicts the cache: damaged metadata).
 */
int pfs_chunk_cache_acquire(PfsChunkCache *c, const CsChunkId *id, size_t len, PfsChunk **ret);
/* Wait until a LOADING entry is complete: 0 when its data is valid, else the loader's -errno
 * (the entry stays pinned either way; release it). */
int pfs_chunk_cache_wait(PfsChunkCache *c, PfsChunk *ch);
/* Publish a RESERVED entry: r == 0 makes it READY, r < 0 drops it and wakes waiters with r.
 * The caller's pin stays. */
void pfs_chunk_cache_complete(PfsChunkCache *c, PfsChunk *ch, int r);
void pfs_chunk_cache_release(PfsChunkCache *c, PfsChunk *ch);
/* Release, telling whether the caller is done with the chunk for good (a sequential reader
 * had all of it): such entries go to a short list of their own and are evicted first. */
void pfs_chunk_cache_release_spent(PfsChunkCache *c, PfsChunk *ch, bool is_spent);
/* True if id is cached or being loaded (a hint for prefetching; no pin is taken). */
bool pfs_chunk_cache_contains(PfsChunkCache *c, const CsChunkId *id);
void pfs_chunk_cache_stats(PfsChunkCache *c, PfsChunkCacheStats *ret);

/* The loader of a RESERVED entry provides its bytes in one of two ways before completing it:
 * pfs_chunk_cache_buffer() allocates them (NULL: out of memory) for the loader to write, or
 * pfs_chunk_cache_adopt() takes over a malloc'd buffer of pfs_chunk_size() bytes (a decoded
 * record, without copying it). Completing with 0 before either fails the load (-EINVAL). */
uint8_t *pfs_chunk_cache_buffer(PfsChunk *ch);
void pfs_chunk_cache_adopt(PfsChunk *ch, uint8_t *buf);
/* The entry's bytes: valid to read when READY. */
uint8_t *pfs_chunk_data(PfsChunk *ch);
size_t pfs_chunk_size(const PfsChunk *ch);
