/*
 * Writing data into a repository: the backup pipeline.
 *
 *   caller thread: read input -> cut chunks (FastCDC or fixed page blocks) -> batches
 *   worker threads (one per core): chunk id (HMAC-SHA-256) -> dedup against the index and the
 *       chunks in flight -> new chunks gathered into groups -> zstd (raw if it does not shrink)
 *   pack thread: AES-256-GCM per record -> append to the current pack -> when full: trailer,
 *       fsync, publish, then one LMDB transaction indexes it
 *
 * Queues between stages are bounded, so memory does not grow with input size.
 *
 * Durability: data given to cs_writer_put_*() is durable and indexed only after
 * cs_writer_flush() returns 0. Anything referring to it (a snapshot record) must be written
 * after the flush. A crash before that leaves at most unreferenced packs, never a torn one.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chunkstore/repo.h"

typedef enum CsChunking {
    CS_CHUNKING_CDC,   /* content-defined: streams, ordinary files */
    CS_CHUNKING_PAGES, /* fixed page_size blocks: files updated in place page by page */
} CsChunking;

/*
 * The chunks of a file or stream. At level 0 `entries` are the data, in order: slices of chunks
 * (whole chunks before format version 3). At level L > 0 the concatenation of the entries'
 * bytes is a serialized list of level L-1 entries, which keeps every reference small however
 * large the content. With `has_slices` the entries of every level are serialized with their
 * offsets (40 bytes: id, offset, length), else as id and length (36 bytes, offset 0).
 */
typedef struct CsContentRef {
    uint64_t size;
    uint8_t level;
    bool has_slices;
    uint32_t count;
    CsChunkSlice *entries;
} CsContentRef;

void cs_content_ref_free(CsContentRef *ref);
/* Where each entry starts in the content, and the content's size after the last (count + 1
 * values, malloc'd; NULL when out of memory). Meant for a level-0 reference. */
uint64_t *cs_content_ref_offsets(const CsContentRef *ref);
/* The slice naming bytes [at, at + n) of a level-0 reference whose entry starts are `starts`
 * (cs_content_ref_offsets): false when they are not all inside one entry. */
bool cs_content_slice_at(const CsContentRef *ref, const uint64_t *starts, uint64_t at,
                         uint32_t n, CsChunkSlice *ret);
int cs_content_ref_copy(const CsContentRef *ref, CsContentRef *ret);
int cs_content_ref_encode(const CsContentRef *ref, Buf *out);
int cs_content_ref_decode(Cursor *c, CsContentRef *ret);

typedef struct CsWriter CsWriter;

typedef struct CsWriterParams {
    unsigned threads; /* worker threads; 0 = one per online CPU */
} CsWriterParams;

typedef struct CsWriterStats {
    uint64_t bytes_in;      /* bytes given to put */
    uint64_t chunks;        /* chunks cut */
    uint64_t new_chunks;    /* chunks not in the repository before (a run of pages is one) */
    uint64_t new_bytes;     /* their plaintext bytes */
    uint64_t delta_chunks;  /* new chunks compressed against their previous version */
    uint64_t stored_bytes;  /* bytes written to packs (compressed, encrypted, framed) */
    uint64_t packs;         /* packs published */
} CsWriterStats;

/* Takes the repository's shared lock for the writer's lifetime (so keep the writer until
 * whatever refers to its data is written) and sweeps spool files of dead writers. -EBUSY when
 * another process holds the lock exclusively. */
int cs_writer_new(CsRepo *repo, const CsWriterParams *params, CsWriter **ret);
/* Store everything readable from fd until end of file. */
int cs_writer_put_fd(CsWriter *w, int fd, CsChunking mode, CsContentRef *ret);
int cs_writer_put_buf(CsWriter *w, const void *p, size_t n, CsChunking mode, CsContentRef *ret);
/*
 * Like cs_writer_put_fd, but returns as soon as the input has been read: *ret is filled by the
 * next cs_writer_sync() (or any synchronous put or flush), so many files can share the
 * pipeline. `ret` must stay valid until then; fd may be closed as soon as this returns.
 */
int cs_writer_put_fd_async(CsWriter *w, int fd, CsChunking mode, CsContentRef *ret);

/* Sees every byte of an input as it is read, in order, on the caller's thread, before the
 * bytes are chunked: a place to verify content (page checksums) without reading it twice. */
typedef struct CsReadObserver {
    void (*fn)(const void *p, size_t n, uint64_t offset, void *userdata);
    void *userdata;
} CsReadObserver;

typedef struct CsPutOptions {
    const CsReadObserver *observer; /* NULL: none */
    /* Page files: the level-0 chunk list of the file's previous version (cs_reader_flatten).
     * A page that changed is compressed against the page at the same position there, so it
     * costs about the size of the change (a delta record, docs/FORMAT.md). The writer takes
     * ownership of the list, and frees it, whatever the result. NULL: none. */
    CsContentRef *previous;
} CsPutOptions;

/* cs_writer_put_fd_async() with options (NULL: none). */
int cs_writer_put_file(CsWriter *w, int fd, CsChunking mode, const CsPutOptions *opt,
                       CsContentRef *ret);
/*
 * Content made of p[0..n) with slices of chunks already stored inserted into it: the bytes of
 * splices[i].slice go where offset splices[i].at of p is (before p[at]; `at` == n: at the
 * end), so the content is n plus the slices' lengths long. p is cut by FastCDC as any file
 * and its new chunks stored; the slices are only referred to, not read (the caller vouches
 * that they name stored chunks, readable by the time whatever refers to this content is).
 * Splices in order of `at` (equal ones in the order given). Asynchronous as
 * cs_writer_put_fd_async(). Without a loan, p is copied and may be freed as soon as this
 * returns; with one, p is read where it is (no copy) and must stay unchanged until the loan's
 * release is called. -EINVAL for splices out of order or past n, an empty slice, or any splice
 * in a repository without slices (cs_writer_can_slice).
 */
typedef struct CsSplice {
    uint64_t at;
    CsChunkSlice slice;
} CsSplice;

/* Memory lent to a put. release(userdata) is called exactly once, whatever the put's result, on
 * the caller's thread: as soon as the writer has read the last of it, from within a later call
 * on the writer (at the latest cs_writer_sync or cs_writer_free), or before the put returns
 * when it fails at once. */
typedef struct CsLoan {
    void (*release)(void *userdata);
    void *userdata;
} CsLoan;

int cs_writer_put_spliced(CsWriter *w, const void *p, size_t n, const CsSplice *splices,
                          size_t n_splices, const CsLoan *loan, CsContentRef *ret);
/* Like cs_writer_put_buf with content-defined chunks, for directory objects and other metadata:
 * its new chunks are grouped into records apart from file data, so reading metadata never
 * decodes file data. */
int cs_writer_put_metadata(CsWriter *w, const void *p, size_t n, CsContentRef *ret);
/* Resolve every pending asynchronous put. */
int cs_writer_sync(CsWriter *w);
/* Make everything put so far durable and indexed. */
int cs_writer_flush(CsWriter *w);
void cs_writer_stats(CsWriter *w, CsWriterStats *ret);
CsRepo *cs_writer_repo(const CsWriter *w);
/* Whether this repository takes delta records (format version 2 and later): without them a
 * file's previous pages are of no use to the writer. */
bool cs_writer_can_delta(const CsWriter *w);
/* Whether content lists name slices of chunks (format version 3 and later): without them an
 * entry is a whole chunk, and cs_writer_put_spliced takes no splices. */
bool cs_writer_can_slice(const CsWriter *w);
/* Progress callback, called from the caller's thread at most a few times a second. */
void cs_writer_set_progress(CsWriter *w, void (*fn)(const CsWriterStats *s, void *userdata),
                            void *userdata);
/* Stops the threads and releases the lock; unflushed data is discarded (packs not yet
 * published are removed). */
CsWriter *cs_writer_free(CsWriter *w);
DEFINE_CLEANUP_FUNC(CsWriter *, cs_writer_free)
