/*
 * Content-defined chunking (FastCDC 2020, normalized gear hash) and fixed-size block cutting.
 *
 * The gear table is 256 random 64-bit words. A repository derives its table from a secret key
 * (cs_gear_table_from_key), so the sequence of chunk lengths of a known file differs between
 * repositories and cannot be used to fingerprint content. cs_gear_table_reference() returns the
 * table published with FastCDC 2020, used only to check the algorithm against known answers.
 *
 * Contract, as casync's: the caller owns the pending data. cs_chunker_scan() is fed consecutive
 * pieces of one stream; it returns the number of bytes of `p` that complete the current chunk,
 * or SIZE_MAX when no cut was found in `p` (call again with more data). It may return 0: the
 * bytes pending from earlier calls alone are the chunk, and p[0] starts the next one. After a cut the chunker
 * is reset for the next chunk. At end of stream whatever is pending is the last chunk.
 * A chunk is never shorter than min_size (except the last one) nor longer than max_size.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

typedef struct CsGearTable {
    uint64_t gear[256];
    uint64_t gear_ls[256]; /* gear[i] << 1, the "rolling two bytes per step" table of FastCDC 2020 */
} CsGearTable;

typedef struct CsChunkerParams {
    uint32_t min_size;      /* default 16 KiB */
    uint32_t avg_size;      /* default 64 KiB, a power of two */
    uint32_t max_size;      /* default 256 KiB */
    uint32_t normalization; /* FastCDC normalization level, default 1 (0..3) */
} CsChunkerParams;

#define CS_CHUNKER_DEFAULT_MIN (16u * 1024)
#define CS_CHUNKER_DEFAULT_AVG (64u * 1024)
#define CS_CHUNKER_DEFAULT_MAX (256u * 1024)

typedef struct CsChunker {
    const CsGearTable *table; /* not owned: must outlive the chunker */
    uint32_t min_size, avg_size, max_size;
    uint64_t mask_s, mask_l, mask_s_ls, mask_l_ls;
    uint64_t hash;     /* rolling hash carried across scan() calls */
    uint64_t position; /* bytes of the current chunk seen so far */
} CsChunker;

/* The FastCDC 2020 published gear table (for known-answer tests only). */
const CsGearTable *cs_gear_table_reference(void);

/* Fill `ret` from a 32-byte key with a keyed PRF (HMAC-SHA-256 in counter mode). */
int cs_gear_table_from_key(const uint8_t key[32], CsGearTable *ret);

/* Validate parameters: min >= 64, avg a power of two, min <= avg <= max, max <= 16 MiB,
 * normalization <= 3. Returns 0 or -EINVAL. */
int cs_chunker_params_check(const CsChunkerParams *params);

/* Initialize a chunker; `params` must pass cs_chunker_params_check(). Returns 0 or -EINVAL. */
int cs_chunker_init(CsChunker *c, const CsGearTable *table, const CsChunkerParams *params);

/* Forget any partial chunk (start of a new stream). */
void cs_chunker_reset(CsChunker *c);

/* See the header comment: returns the cut offset within p (0..n) or SIZE_MAX. */
size_t cs_chunker_scan(CsChunker *c, const void *p, size_t n);
