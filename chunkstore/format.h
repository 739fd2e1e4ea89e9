/*
 * On-disk format of a pitrfs repository, version 5. docs/FORMAT.md describes every byte; this
 * header holds the constants both the code and that document refer to. All integers are
 * little-endian. A reader refuses a repository whose format_version is newer than
 * CS_FORMAT_VERSION.
 */
#pragma once

#include <stdint.h>

#define CS_FORMAT_VERSION 5
/* Version 2 added delta records (CS_RECORD_FLAG_DELTA); a version 1 repository is read as it is
 * and gets no delta records, so that older builds can still read it. */
#define CS_FORMAT_VERSION_DELTA 2
/* Version 3 added runs: the new pages of a page file are stored together as one chunk, so a
 * page costs no id of its own in its record or its file's chunk list. Content lists and delta
 * bases then name slices of chunks (CS_REF_FLAG_SLICES, CS_RECORD_FLAG_SLICED_BASES). A version
 * 2 repository is written as version 2. */
#define CS_FORMAT_VERSION_RUNS 3
/* Version 4 added keyed delta records (CS_RECORD_FLAG_FRAMED): a changed page is a delta of a
 * page stored whole, never of another delta, each in a zstd frame of its own. Reading any
 * version of a page then decodes one small frame and one whole page, however long the history;
 * chained deltas (versions 2 and 3) made a read of the newest snapshot decode the records of
 * every earlier one. A version 3 repository is written as version 3. */
#define CS_FORMAT_VERSION_KEYED 4
/* Version 5 keeps trees whole: directory objects may carry records (CS_DIR_MAGIC_RECORDS) for
 * hard links, extended attributes and ACLs, and the holes of sparse files. A version 4
 * repository is written as version 4: its trees lose these, as they always did. */
#define CS_FORMAT_VERSION_TREES 5

/* Sizes of ids and keys. */
#define CS_CHUNK_ID_SIZE 32 /* HMAC-SHA-256 of the plaintext under the id key */
#define CS_PACK_ID_SIZE  16 /* random */
#define CS_SNAP_ID_SIZE  8  /* random; shown as 16 hex digits */

/* Master key material, wrapped in keys/ and exported in key files: three 32-byte keys. */
#define CS_MASTER_SIZE 96 /* enc_key || id_key || chunker_key */

/* Pack file: header, records, trailer entries, footer. */
#define CS_PACK_MAGIC       "PITRPACK" /* 8 bytes at offset 0 */
#define CS_PACK_HEADER_SIZE 32         /* magic[8] version u32 flags u32 pack_id[16] */
#define CS_PACK_FOOTER_MAGIC "PACKTAIL"
#define CS_PACK_FOOTER_SIZE 32 /* trailer_off u64, chunks u32, records u32, xxh3 u64, magic[8] */
/* Trailer: one entry per record. The chunk ids are in the record headers already; repeating
 * them here would cost 52 bytes per 8 KiB page, several percent of a compressed repository. */
#define CS_PACK_RECORD_REF_SIZE 12 /* record_off u64 record_len u32 */

/* Record: one AEAD envelope around a zstd frame (or raw bytes) holding 1..n chunks. */
#define CS_RECORD_MAGIC       0x31434552u /* "REC1" */
#define CS_RECORD_HEADER_SIZE 28 /* magic u32 flags u8 rsv u8 members u16 raw u32 payload u32 nonce[12] */
#define CS_RECORD_MEMBER_SIZE 36 /* id[32] length u32 */
#define CS_SLICE_SIZE 40         /* id[32] offset u32 length u32: bytes of a chunk (version 3) */
#define CS_RECORD_TRAILER_SIZE 24 /* tag[16] xxh3 u64 */
#define CS_RECORD_FLAG_ZSTD   0x01
/* The zstd frame was compressed with the record's base chunks as a reference prefix: pages that
 * changed since the previous backup cost the size of their change. Always with FLAG_ZSTD. */
#define CS_RECORD_FLAG_DELTA  0x02
/* The base list names slices (CS_SLICE_SIZE bytes each) instead of whole chunks (version 3).
 * Always with FLAG_DELTA. */
#define CS_RECORD_FLAG_SLICED_BASES 0x04
/* Version 4: base i is the base of member i alone (one base per member), and the payload is a
 * table of frame lengths followed by one zstd frame per member, each compressed against its own
 * base, so one member is decoded without the others or their bases. Depth is 1: the bases are
 * stored whole. Always with FLAG_ZSTD, FLAG_DELTA and FLAG_SLICED_BASES. */
#define CS_RECORD_FLAG_FRAMED 0x08
#define CS_FRAME_LEN_SIZE 4 /* u32 per member at the start of a framed record's plaintext */
#define CS_RECORD_MAX_MEMBERS 4096
#define CS_RECORD_MAX_BASES   4096
#define CS_RECORD_BASE_COUNT_SIZE 4 /* u32 after the member list of a delta record */
/* Writers of versions 2 and 3 kept delta chains short (depth = 1 + the deepest base's depth), so
 * reading a chunk normally decodes at most this many records below it. */
#define CS_DELTA_MAX_DEPTH 4
/* Version 4 writers store a changed page whole (a new key) instead of as a delta of its key when
 * the delta's frame would be larger than this fraction (in 1/16) of what the page costs whole,
 * judged by the compression of the key's record: deltas of a key grow as a page drifts from it,
 * and past this point a new key is cheaper over the next versions. */
#define CS_DELTA_REKEY_SIXTEENTHS 6
/* Readers follow bases through at most this many delta records, one inside the other: deeper is
 * a damaged or crafted repository (a cycle of bases, say), reported as damage. */
#define CS_DELTA_MAX_NESTING 16

/* Index value: where a chunk lives. */
#define CS_LOC_SIZE 36 /* pack_id[16] record_off u64 record_len u32 member_off u32 len u32 */

/* Sealed small objects (snapshot records). */
#define CS_SEALED_MAGIC       "PITRSEAL"
#define CS_SEALED_HEADER_SIZE 24 /* magic[8] version u32 nonce[12] */

/* Content reference (how a file or stream names its chunks). */
#define CS_REF_MAX_INLINE 32 /* more entries than this go into a list stream one level down */
#define CS_REF_MAX_LEVEL  4
/* Bit of the level byte: the entries, at every level, are slices (CS_SLICE_SIZE bytes). */
#define CS_REF_FLAG_SLICES 0x80
/* A run (version 3): up to this many new pages of one page file stored as one chunk, whose id
 * is an HMAC of their ids under the run key. */
#define CS_RUN_MAX_PAGES 64

/* Directory object. */
#define CS_DIR_MAGIC 0x31524944u /* "DIR1" */
/* Version 5: a directory object with records ("DIR2"). After the entry count, a u32 gives the
 * length of the records of the directory itself, which follow; every entry then ends with a u32
 * length and its own records. A directory that has no record is still written as DIR1. */
#define CS_DIR_MAGIC_RECORDS 0x32524944u /* "DIR2" */
#define CS_DIR_RECORD_HEADER_SIZE 5 /* kind u8, length u32 of what follows */
#define CS_DIR_RECORD_LINK  1 /* link id u64 (nonzero), link count u32 (>= 2) */
#define CS_DIR_RECORD_XATTR 2 /* name length u8 (>= 1), name, value (the rest) */
#define CS_DIR_RECORD_HOLES 3 /* offset u64, length u64 per hole; regular files only */
#define CS_DIR_LINK_SIZE 12
#define CS_DIR_HOLE_SIZE 16
#define CS_XATTR_NAME_MAX  255     /* XATTR_NAME_MAX */
#define CS_XATTR_VALUE_MAX 65536u  /* XATTR_SIZE_MAX */

/* HKDF "info" labels: changing one changes the format. */
#define CS_INFO_PACK_KEY    "pitrfs pack key v1"
#define CS_INFO_CATALOG_KEY "pitrfs catalog key v1"
#define CS_INFO_KEY_CHECK   "pitrfs key check v1"
#define CS_INFO_WRAP_KEY    "pitrfs wrap key v1"
#define CS_INFO_RUN_KEY     "pitrfs run id key v1"
#define CS_INFO_PAGE_ROW_KEY "pitrfs page row key v1"

/* Defaults (recorded in config at init, so changing them here never changes a repository). */
#define CS_DEFAULT_PAGE_SIZE  8192u
#define CS_DEFAULT_ZSTD_LEVEL 3
#define CS_DEFAULT_PACK_SIZE  (32u * 1024 * 1024)
#define CS_DEFAULT_GROUP_SIZE (512u * 1024) /* tests/helpers/bench-smallchunks measures why */
#define CS_MAX_GROUP_SIZE     (16u << 20)
/* The largest record a writer makes: a group is sealed once it reaches its size, so it holds
 * less than CS_MAX_GROUP_SIZE plus one chunk (at most 16 MiB, chunker.c). A reader refuses a
 * larger raw length, or a larger stored record, as damage before it allocates for one. */
#define CS_RECORD_MAX_RAW  (32u << 20)
#define CS_RECORD_MAX_SIZE (CS_RECORD_MAX_RAW + (1u << 20)) /* zstd's bound, header, bases */
#define CS_DEFAULT_SCRYPT_N   65536u
#define CS_DEFAULT_SCRYPT_R   8u
#define CS_DEFAULT_SCRYPT_P   1u
