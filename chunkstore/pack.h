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

/* `length` bytes of chunk `id` from `offset`: what content lists and delta bases name. Before
 * format version 3 the offset is always 0 and the length the chunk's. */
typedef struct CsChunkSlice {
    CsChunkId id;
    uint32_t offset;
    uint32_t length;
} CsChunkSlice;

/* "packs/ab/ab01...ef.pack" for a pack id; out must hold CS_PACK_NAME_MAX bytes. */
#define CS_PACK_NAME_MAX 64
void cs_pack_name(const CsPackId *id, char out[CS_PACK_NAME_MAX]);
/* Parse a name made by cs_pack_name; -EINVAL for anything else. */
int cs_pack_name_parse(const char *name, CsPackId *ret);

void cs_loc_encode(const CsChunkLoc *loc, uint8_t out[CS_LOC_SIZE]);
int cs_loc_decode(const void *p, size_t n, CsChunkLoc *ret);

/* Per-pack AEAD key = HKDF(enc_key, salt = pack id, info = CS_INFO_PACK_KEY). */
int cs_pack_key(const uint8_t enc_key[32], const CsPackId *id, uint8_t ret[32]);

/* The bases of a delta record: their bytes, concatenated in this order, are the reference prefix
 * its zstd frame was compressed with. `depth` is 1 + the deepest base's. Written as slices
 * when the record's flags hold CS_RECORD_FLAG_SLICED_BASES, else as whole chunks (offset 0). */
typedef struct CsRecordBases {
    const CsChunkSlice *v;
    size_t n;
    uint8_t depth;
} CsRecordBases;

/* What a record's authenticated header says, after its framing and xxh3 were checked. */
typedef struct CsRecordInfo {
    uint8_t flags;
    uint8_t depth;            /* 0 unless CS_RECORD_FLAG_DELTA */
    uint32_t raw_len;
    size_t n_members;
    const uint8_t *members;   /* CS_RECORD_MEMBER_SIZE bytes each, pointing into the record */
    size_t n_bases;
    const uint8_t *bases;     /* NULL unless CS_RECORD_FLAG_DELTA; base_size bytes each */
    size_t base_size;         /* CS_SLICE_SIZE with CS_RECORD_FLAG_SLICED_BASES, else
                                 CS_RECORD_MEMBER_SIZE (offset 0) */
    uint64_t prefix_len;      /* sum of the base lengths */
} CsRecordInfo;

int cs_record_info(const void *rec, size_t len, CsRecordInfo *ret);

/*
 * Build a record into `out` (appended). `payload` is the zstd frame (flags has
 * CS_RECORD_FLAG_ZSTD) or the raw concatenated chunks; raw_len is the plaintext length.
 */
int cs_record_encode(const uint8_t pack_key[32], const CsRecordMember *members, size_t n_members,
                     uint8_t flags, uint32_t raw_len, const void *payload, size_t payload_len,
                     Buf *out);

/* cs_record_encode() of a delta record: flags must hold CS_RECORD_FLAG_ZSTD and
 * CS_RECORD_FLAG_DELTA, and the payload must have been made by cs_record_compress_prefixed(). */
int cs_record_encode_delta(const uint8_t pack_key[32], const CsRecordMember *members,
                           size_t n_members, const CsRecordBases *bases, uint8_t flags,
                           uint32_t raw_len, const void *payload, size_t payload_len, Buf *out);

/* Check the record's xxh3 and framing without a key. Returns 0, or -EBADMSG on damage. */
int cs_record_verify(const void *rec, size_t len);

/*
 * Authenticate, decrypt and decompress a record. On success `plain` holds raw_len bytes and
 * *ret_members points into `rec` (n members, CS_RECORD_MEMBER_SIZE bytes each).
 * -EBADMSG on any damage or authentication failure.
 */
int cs_record_decode(const uint8_t pack_key[32], const void *rec, size_t len, Buf *plain,
                     const uint8_t **ret_members, size_t *ret_n_members);

/* cs_record_decode() of any record: `prefix` must be the concatenated plaintexts of the bases
 * cs_record_info() lists (NULL and 0 for a record without bases). zstd_dctx, from
 * cs_zstd_dctx_new(), is reused from record to record (a fresh context per record costs 15%
 * of decompression speed on 512 KiB records); NULL makes one for this call. */
int cs_record_decode_prefixed(void *zstd_dctx, const uint8_t pack_key[32], const void *rec,
                              size_t len, const void *prefix, size_t prefix_len, Buf *plain,
                              const uint8_t **ret_members, size_t *ret_n_members);
/*
 * The two halves of cs_record_decode_prefixed(), for a reader that must not act on a record's
 * base list before the record is authenticated. cs_record_open() checks, authenticates and
 * decrypts: `payload` holds what was encrypted (still compressed) and *ret the header (members
 * and bases point into `rec`, which must outlive it). cs_record_expand() then decompresses it
 * against `prefix` (the bases' plaintexts, as for cs_record_decode_prefixed) into `plain`; it
 * may take payload's buffer. -EBADMSG on damage.
 */
int cs_record_open(const uint8_t pack_key[32], const void *rec, size_t len, Buf *payload,
                   CsRecordInfo *ret);
int cs_record_expand(void *zstd_dctx, const CsRecordInfo *in, Buf *payload, const void *prefix,
                     size_t prefix_len, Buf *plain);
/*
 * A framed record (CS_RECORD_FLAG_FRAMED, version 4) is read member by member: this checks,
 * authenticates and decrypts it, leaving in `payload` the frame-length table and the frames
 * (cs_frames_index finds them) and in *ret its header (members and one base per member point
 * into `rec`). -EBADMSG on damage or for a record that is not framed.
 */
int cs_record_open_framed(const uint8_t pack_key[32], const void *rec, size_t len, Buf *payload,
                          CsRecordInfo *ret);
/* Where the n frames of a framed payload start: offs[i] for frame i, offs[n] its end (n + 1
 * entries). -EBADMSG unless the table and the frames tile the payload exactly. */
int cs_frames_index(const uint8_t *payload, size_t len, size_t n, uint32_t *offs);
/* One member's frame: `raw` compressed at `level` against `base` alone. Negative errno on
 * failure. */
int cs_frame_compress(void *zstd_cctx, int level, const void *base, size_t base_len,
                      const void *raw, size_t n, Buf *out);
/* Decode one frame against its base into exactly out_len bytes, or -EBADMSG. */
int cs_frame_decode(void *zstd_dctx, const void *frame, size_t frame_len, const void *base,
                    size_t base_len, void *out, size_t out_len);
/* A zstd decompression context for cs_record_decode_prefixed() (NULL: out of memory). */
void *cs_zstd_dctx_new(void);
void cs_zstd_dctx_free(void *zstd_dctx);

/* Like cs_record_compress() with `prefix` as zstd's reference prefix: returns
 * CS_RECORD_FLAG_ZSTD | CS_RECORD_FLAG_DELTA, or 0 with raw copied when that does not shrink. */
int cs_record_compress_prefixed(void *zstd_cctx, int level, const void *prefix, size_t prefix_len,
                                const void *raw, size_t n, Buf *out);

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
/* The same for a delta record (bases non-NULL) or any record (bases NULL). */
int cs_pack_writer_add_delta(CsPackWriter *w, const CsRecordMember *members, size_t n_members,
                             const CsRecordBases *bases, uint8_t flags, uint32_t raw_len,
                             const void *payload, size_t payload_len);
uint64_t cs_pack_writer_size(const CsPackWriter *w);
size_t cs_pack_writer_entries(const CsPackWriter *w);
/* Write the trailer and durably publish the pack. *ret_entries (malloc'd, caller frees) lists
 * every chunk for the index. The writer is freed whether or not this succeeds. */
int cs_pack_writer_finish(CsPackWriter *w, CsPackId *ret_id, CsPackEntry **ret_entries,
                          size_t *ret_n, uint64_t *ret_size);
/* Discard an unfinished pack. */
void cs_pack_writer_abort(CsPackWriter *w);

/* A serialized member list (a record's members or a delta record's bases, n entries of
 * CS_RECORD_MEMBER_SIZE bytes): the sum of its lengths, and the index of the member that
 * starts at plaintext offset `off` (-1 when none does). */
uint64_t cs_member_lengths_sum(const uint8_t *list, size_t n);
long cs_member_at_offset(const uint8_t *list, size_t n, uint64_t off);
/* Base i of a record cs_record_info() described, as a slice. */
CsChunkSlice cs_record_base(const CsRecordInfo *in, size_t i);
/* Serialized slices, in base lists and content lists: id[32], offset u32 (only when
 * `with_offsets`: CS_SLICE_SIZE bytes in all, else CS_RECORD_MEMBER_SIZE), length u32. */
size_t cs_slice_size(bool with_offsets);
void cs_slices_encode(uint8_t *out, const CsChunkSlice *v, size_t n, bool with_offsets);
CsChunkSlice cs_slice_decode(const uint8_t *p, bool with_offsets);
/* The index of the last of `count` ascending offsets that is <= off (0 if none is). */
size_t cs_offsets_find(const uint64_t *starts, size_t count, uint64_t off);

/* The member list of the record at (off, len) of pack `name`, read without its payload and
 * without a key: n × CS_RECORD_MEMBER_SIZE bytes into `members` (replacing its contents).
 * Checks what can be checked before the payload: magic, flags, member count, that the
 * lengths add up to the record's length and the member lengths to raw_len. -EBADMSG. */
int cs_record_read_members(CsBackend *b, const char *name, uint64_t off, uint32_t len,
                           Buf *members);

/* Read and check a pack's trailer and, through it, every record header: the list of its
 * chunks. No key is needed. -EBADMSG if damaged or torn. */
int cs_pack_read_trailer(CsBackend *b, const char *name, CsPackId *ret_id,
                         CsPackEntry **ret_entries, size_t *ret_n);
