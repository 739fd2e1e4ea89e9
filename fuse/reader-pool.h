/*
 * A pool of repository readers for the mount's threads. A CsReader (and a CsIndexReader) is
 * single-threaded, so a request takes one from the pool for its duration and puts it back;
 * the pool is a LIFO stack, so a busy thread tends to get back the reader whose record cache it
 * just warmed.
 *
 * Each reader pins an LMDB read snapshot of the index. A long-lived snapshot makes the index
 * file grow while other processes store, and hides packs published since (CsReader looks again
 * on a miss, the bare CsIndexReader does not). So a reader older than max_age is replaced when
 * taken, and pfs_reader_pool_trim() frees readers idle for longer than max_idle (call it
 * periodically). Thread-safe.
 */
#pragma once

#include <stdint.h>

#include "chunkstore/index.h"
#include "chunkstore/read.h"
#include "common/buf.h"

typedef struct PfsReader {
    CsReader *rd;
    CsIndexReader *ix; /* for record-neighbour lookups (file.c) */
    Buf members;       /* scratch for cs_reader_peek_members() (file.c) */
    uint64_t born_ms;  /* CLOCK_MONOTONIC */
    uint64_t idle_since_ms;
    struct PfsReader *next; /* pool's lock, while pooled */
} PfsReader;

typedef struct PfsReaderPool PfsReaderPool;

/* `bases` (may be NULL) is where the pool's readers get the bases of delta pages. */
int pfs_reader_pool_new(CsRepo *repo, const CsBaseSource *bases, unsigned max_age_ms,
                        unsigned max_idle_ms, PfsReaderPool **ret);
/* All readers must have been put back. Returns NULL. */
PfsReaderPool *pfs_reader_pool_free(PfsReaderPool *p);
int pfs_reader_pool_get(PfsReaderPool *p, PfsReader **ret);
void pfs_reader_pool_put(PfsReaderPool *p, PfsReader *r);
/* Free pooled readers idle longer than max_idle. */
void pfs_reader_pool_trim(PfsReaderPool *p);
/* Readers currently allocated (in use plus pooled), for tests and debug logs. */
unsigned pfs_reader_pool_count(PfsReaderPool *p);

uint64_t pfs_now_ms(void);
