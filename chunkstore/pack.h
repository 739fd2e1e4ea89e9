/*
 * Pack files and the records inside them (byte layout in docs/FORMAT.md).
 *
 * A record holds one or more chunks compressed together as one zstd frame (or stored raw when
 * compression does not shrink them) inside one AES-256-GCM envelope keyed per pack. Its member
 * list (chunk ids and lengths) is authenticated as AAD, so a record cannot be passed off as
 * holding other chunks. An xxh3-64 over the whole record finds damage without any key.
 *
 * A pack is written append-only to a backend spool and published only when complete (trailer,
 * fsync, link): a torn pack is never visible. The trailer lists every chunk, so an index can be
 * rebuilt from packs alone.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chunkstore/backend.h"
#include "chunkstore/format.h"
#include "common/buf.h"

typedef struct CsChunkId {
    uint8_t bytes[CS_CHUNK_ID_SIZE];
} CsChunkId;

typedef struct CsPackId {
    uint8_t bytes[CS_PACK_ID_SIZE];
} CsPackId;

/* Where a chunk lives; the value stored in the index. */
typedef struct CsChunkLoc {
    CsPackId pack;
    uint64_t record_off;
    uint32_t record_len;
    uint32_t member_off; /* offset of the chunk inside the record's plaintext */
    uint32_t length;     /* chunk length */
} CsChunkLoc;

typedef struct CsPackEntry {
    CsChunkId id;
    CsChunkLoc loc;
} CsPackEntry;

typedef struct CsRecordMember {
    CsChunkId id;
    uint32_t length;
} CsRecordMember;

/* "packs/ab/ab01...ef.pack" for a pack id; out must hold CS_PACK_NAME_MAX bytes. */
#define CS_PACK_NAME_MAX 64
void cs_pack_name(const CsPackId *id, char out[CS_PACK_NAME_MAX]);
/* Parse a name made by cs_pack_name; -EINVAL for anything else. */
int cs_pack_name_parse(const char *name, CsPackId *ret);

void cs_loc_encode(const CsChunkLoc *loc, uint8_t out[CS_LOC_SIZE]);
int cs_loc_decode(const void *p, size_t n, CsChunkLoc *ret);

/* Per-pack AEAD key = HKDF(enc_key, salt = pack id, info = CS_INFO_PACK_KEY). */
int cs_pack_key(const uint8_t enc_key[32], const CsPackId *id, uint8_t ret[32]);

/*
 * Build a record into `out` (appended). `payload` is the zstd frame (flags has
 * CS_RECORD_FLAG_ZSTD) or the raw concatenated chunks; raw_len is the plaintext length.
 */
int cs_record_encode(const uint8_t pack_key[32], const CsRecordMember *members, size_t n_members,
                     uint8_t flags, uint32_t raw_len, const void *payload, size_t payload_len,
                     Buf *out);

/* Check the record's xxh3 and framing without a key. Returns 0, or -EBADMSG on damage. */
int cs_record_verify(const void *rec, size_t len);

/*
 * Authenticate, decrypt and decompress a record. On success `plain` holds raw_len bytes and
 * *ret_members points into `rec` (n members, CS_RECORD_MEMBER_SIZE bytes each).
 * -EBADMSG on any damage or authentication failure.
 */
int cs_record_decode(const uint8_t pack_key[32], const void *rec, size_t len, Buf *plain,
                     const uint8_t **ret_members, size_t *ret_n_members);

/* Compress `raw` at `level`; stores the zstd frame in out and returns CS_RECORD_FLAG_ZSTD, or
 * copies raw and returns 0 when compression does not shrink it. Negative errno on failure. */
int cs_record_compress(void *zstd_cctx, int level, const void *raw, size_t n, Buf *out);

/* ---- pack writer: single-threaded, owned by the pipeline's pack stage ---- */
typedef struct CsPackWriter CsPackWriter;

int cs_pack_writer_new(CsBackend *b, const uint8_t enc_key[32], CsPackWriter **ret);
/* Encrypt and append one record. Fills loc for every member (entries are kept for the trailer
 * and returned by finish). */
int cs_pack_writer_add(CsPackWriter *w, const CsRecordMember *members, size_t n_members,
                       uint8_t flags, uint32_t raw_len, const void *payload, size_t payload_len);
uint64_t cs_pack_writer_size(const CsPackWriter *w);
size_t cs_pack_writer_entries(const CsPackWriter *w);
/* Write the trailer and durably publish the pack. *ret_entries (malloc'd, caller frees) lists
 * every chunk for the index. The writer is freed whether or not this succeeds. */
int cs_pack_writer_finish(CsPackWriter *w, CsPackId *ret_id, CsPackEntry **ret_entries,
                          size_t *ret_n, uint64_t *ret_size);
/* Discard an unfinished pack. */
void cs_pack_writer_abort(CsPackWriter *w);

/* Read and check a pack's trailer and, through it, every record header: the list of its
 * chunks. No key is needed. -EBADMSG if damaged or torn. */
int cs_pack_read_trailer(CsBackend *b, const char *name, CsPackId *ret_id,
                         CsPackEntry **ret_entries, size_t *ret_n);
