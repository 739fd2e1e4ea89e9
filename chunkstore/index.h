/*
 * The LMDB index: chunk id -> location, the set of indexed packs, and a little metadata.
 * It is a cache of what the packs say: cs_index_rebuild() recreates it from the backend.
 *
 * One CsIndex per repository per process (LMDB forbids opening one environment twice in a
 * process). Any number of processes may use it at once: LMDB serializes writers, and readers
 * never block. Lookups are thread-safe. A pack's chunks are published only after the pack
 * itself is durable, in bounded write transactions; the pack's own row comes with the last, so
 * a pack that is listed has all its chunks indexed, and one cut short by a crash is not listed
 * and is indexed again by the next sync.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chunkstore/pack.h"

typedef struct CsIndex CsIndex;
typedef struct CsIndexReader CsIndexReader;

/* Open (creating if needed unless read_only) the index in directory `dir`. The repository id
 * is recorded on first use; opening with another repository's id returns -EXDEV. */
int cs_index_open(const char *dir, const uint8_t repo_id[16], bool read_only, CsIndex **ret);
CsIndex *cs_index_close(CsIndex *idx);
/* Remove LMDB's files from index directory `dir` (a damaged index, to be rebuilt), and nothing
 * else the directory holds. The index must not be open in this process. */
int cs_index_drop_files(const char *dir);

/* One-shot lookup. Returns 0 and fills *ret, or -ENOENT. */
int cs_index_lookup(CsIndex *idx, const CsChunkId *id, CsChunkLoc *ret);

/* A read snapshot for many lookups (a worker's batch). Not shared between threads at once. */
int cs_index_reader_begin(CsIndex *idx, CsIndexReader **ret);
int cs_index_reader_lookup(CsIndexReader *rd, const CsChunkId *id, CsChunkLoc *ret);
/* Refresh to see commits made since begin (cheap: LMDB txn reset/renew). */
int cs_index_reader_refresh(CsIndexReader *rd);
/* Let go of the read snapshot; the next lookup (or refresh) takes a fresh one. A snapshot held
 * while its owner idles keeps LMDB from reusing the pages later commits free, so the file
 * grows with every commit made meanwhile. */
void cs_index_reader_pause(CsIndexReader *rd);
CsIndexReader *cs_index_reader_end(CsIndexReader *rd);

/* Publish a durable pack's chunks (see above). Chunks already indexed keep their older location
 * (the newer copy is garbage for gc). */
int cs_index_publish_pack(CsIndex *idx, const CsPackId *pack, uint64_t pack_size,
                          const CsPackEntry *entries, size_t n);
/*
 * Pages of runs (format version 3): a run stores many new pages of a page file as one chunk, so
 * the pages' own ids are not in any pack. For deduplication the writer indexes each page id
 * with its place in the run. Only a writer that knows the pages can say this: an index rebuilt
 * from the packs (without the key) lacks these entries, which costs deduplication, not data.
 */
#define CS_PAGE_ROW_TAG_SIZE 16
typedef struct CsPageAlias {
    CsChunkId page;
    CsChunkSlice in; /* the run's id, the page's offset in it, its length */
    uint8_t tag[CS_PAGE_ROW_TAG_SIZE]; /* cs_page_row_tag(): the index stores, never checks */
} CsPageAlias;
/* cs_index_publish_pack(), with the page aliases of the runs in the pack. */
int cs_index_publish_pack_pages(CsIndex *idx, const CsPackId *pack, uint64_t pack_size,
                                const CsPackEntry *entries, size_t n, const CsPageAlias *pages,
                                size_t n_pages);
/* Where page `id` is, when a run holds it: 0, or -ENOENT (also for a row of another size: the
 * untagged rows of earlier versions are not trusted). The caller checks ret->tag, and the run
 * itself may be gone from the index since (a dropped pack): look it up before relying on it. */
int cs_index_reader_lookup_page(CsIndexReader *rd, const CsChunkId *id, CsPageAlias *ret);
/*
 * The files cache (database `files`, docs/FORMAT.md 10): how a regular file of a stored tree
 * looked when it was read, and which content it was stored as, so that the next store of the
 * same tree can take an unchanged file's content from the previous snapshot without reading it
 * (chunkstore/files-cache.h). Keyed by the tree's source and the file's path in it.
 */
typedef struct CsFileKey {
    uint8_t bytes[16]; /* xxh3-64 of the source's absolute path, then of the relative path */
} CsFileKey;

typedef struct CsFileStamp {
    uint64_t generation; /* the store that wrote it: random, one per tree store */
    uint64_t ino;
    int64_t ctime_sec;
    uint32_t ctime_nsec;
    int64_t mtime_sec;
    uint32_t mtime_nsec;
    uint64_t size;
    uint64_t content_hash; /* xxh3-64 of the encoded content reference (FORMAT.md 7) */
} CsFileStamp;

/* 0 and *ret, or -ENOENT (also when the index predates the database). */
int cs_index_reader_lookup_file(CsIndexReader *rd, const CsFileKey *key, CsFileStamp *ret);
/* Write n records in one transaction, replacing what the keys held. */
int cs_index_put_files(CsIndex *idx, const CsFileKey *keys, const CsFileStamp *stamps, size_t n);
/* Delete the records of source `source` (the first 8 bytes of its keys) written by another
 * generation than `keep`: files the last store of the source did not see. */
int cs_index_forget_files(CsIndex *idx, const uint8_t source[8], uint64_t keep);

/* Number of packs indexed. */
int cs_index_pack_count(CsIndex *idx, uint64_t *ret);
/* 1 if the pack is indexed, 0 if not. */
int cs_index_has_pack(CsIndex *idx, const CsPackId *pack);
/* Remove a pack and every chunk whose location is in it. */
int cs_index_drop_pack(CsIndex *idx, const CsPackId *pack);

/* Drop the index pages this process has touched from its resident set (they stay in the page
 * cache). Dedup lookups touch the whole index; without this a long backup's RSS would grow with
 * the repository. */
void cs_index_release_memory(CsIndex *idx);
/* Release (as above) after every `release_every` lookups and inserts, so that a process's RSS
 * stays bounded however large the index grows (each one maps up to 64 KiB of it); 0 turns it
 * off. Set once, before other threads use the index. */
void cs_index_bound_memory(CsIndex *idx, unsigned release_every);

typedef struct CsIndexStats {
    uint64_t chunks;
    uint64_t chunk_bytes; /* sum of chunk lengths (plaintext) */
    uint64_t packs;
    uint64_t pack_bytes;
} CsIndexStats;
int cs_index_stats(CsIndex *idx, CsIndexStats *ret);

typedef int (*CsIndexChunkFn)(const CsChunkId *id, const CsChunkLoc *loc, void *userdata);
typedef int (*CsIndexPackFn)(const CsPackId *id, uint64_t size, void *userdata);
int cs_index_foreach_chunk(CsIndex *idx, CsIndexChunkFn fn, void *userdata);
int cs_index_foreach_pack(CsIndex *idx, CsIndexPackFn fn, void *userdata);
