/*
 * Reading data back. A CsReader belongs to one thread at a time; it keeps the most recently
 * decoded records so that reading the chunks of a group one after another decodes it once.
 * A chunk in a delta record is read through its record's bases, which the reader loads first
 * (each from a shallower record, so the recursion is bounded by the depth byte).
 *
 * Damage is never returned as data: a chunk whose record fails its checksum, its authentication
 * or its decompression gives -EBADMSG, and the reader logs the chunk id and pack name once.
 * A chunk missing from the index gives -ENOENT.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chunkstore/store.h"

typedef struct CsReader CsReader;

int cs_reader_new(CsRepo *repo, CsReader **ret);
CsReader *cs_reader_free(CsReader *rd);
DEFINE_CLEANUP_FUNC(CsReader *, cs_reader_free)
CsRepo *cs_reader_repo(const CsReader *rd);

/* The bytes of one chunk. *ret_p stays valid until the next call on this reader. */
int cs_reader_chunk(CsReader *rd, const CsChunkId *id, const uint8_t **ret_p, size_t *ret_n);

/* The bytes a content-list entry names (a slice of a chunk): e->length bytes at *ret_p, valid
 * until the next call on this reader. -EBADMSG when the chunk is shorter than the slice. */
int cs_reader_slice(CsReader *rd, const CsChunkSlice *e, const uint8_t **ret_p);
/* The length of chunk `id` as the index has it (no data is read). 0, or -ENOENT. */
int cs_reader_chunk_length(CsReader *rd, const CsChunkId *id, uint32_t *ret);
/* cs_reader_chunk(), but the bytes come in a malloc'd buffer that the caller owns (free()).
 * When the chunk is the whole of its record (a run of pages stored alone), the reader hands
 * over the buffer it decoded the record into and forgets the record: no copy. */
int cs_reader_chunk_take(CsReader *rd, const CsChunkId *id, uint8_t **ret, size_t *ret_n);
/* cs_reader_chunk(), also giving the delta depth of the record holding the chunk (0: not a
 * delta record). Writers use it to keep delta chains short. */
int cs_reader_chunk_depth(CsReader *rd, const CsChunkId *id, const uint8_t **ret_p, size_t *ret_n,
                          uint8_t *ret_depth);

/* The whole page a new version of a page may be stored as a delta of (format version 4): the
 * previous version itself when its chunk is stored whole, else, when the previous version is a
 * delta of such a page, that page. `p` (slice.length bytes) stays valid until the next call on
 * this reader; `stored_ratio` is the stored size of the key's record over its plaintext, what a
 * page like it costs whole. -EXDEV when there is no such page (a chained delta of version 2
 * or 3); -ENOENT or -EBADMSG when the version cannot be read. */
typedef struct CsDeltaKey {
    CsChunkSlice slice;
    const uint8_t *p;
    double stored_ratio;
} CsDeltaKey;
int cs_reader_delta_key(CsReader *rd, const CsChunkSlice *version, CsDeltaKey *ret);

/*
 * Where a reader gets the bases of framed delta members (format version 4), when not from its
 * own record cache: the mount gives its chunk cache, so that a page stored whole is decoded
 * once for every thread, whether it is read or serves as a key. get() gives the whole chunk
 * `id` (pinned until put(pin)) and returns 0, or 1 to let the reader decode it itself, or a
 * negative errno. It may call back into the reader it is given (to decode the chunk): the
 * member being decoded stays held meanwhile.
 */
typedef struct CsBaseSource {
    int (*get)(void *userdata, CsReader *rd, const CsChunkId *id, const uint8_t **ret_p,
               size_t *ret_n, void **ret_pin);
    void (*put)(void *userdata, void *pin);
    void *userdata;
} CsBaseSource;
void cs_reader_set_base_source(CsReader *rd, const CsBaseSource *src);

/*
 * The member list of the record at `loc` (CS_RECORD_MEMBER_SIZE bytes each, into *out), read
 * from the pack header without decoding the record; authenticated only when the record is
 * decoded in this reader already. Good for planning (which neighbours of a chunk share its
 * record), never as data. Also gives the index of the member at loc->member_off, or -EBADMSG.
 */
int cs_reader_peek_members(CsReader *rd, const CsChunkLoc *loc, Buf *out, size_t *ret_index);

/* Whether the record at `loc` is a framed delta record (format version 4), whose members fail
 * or succeed one by one: a member whose base is damaged says nothing of its neighbours. A plan
 * only, like cs_reader_peek_members(): false when the header cannot be read. */
bool cs_reader_record_is_framed(CsReader *rd, const CsChunkLoc *loc);

/* Let go of the index snapshot the reader holds (a long-lived reader keeps the index from
 * reusing space); the next lookup starts a fresh one. */
int cs_reader_refresh(CsReader *rd);
/* Let go of the index snapshot until the reader is used again (cs_index_reader_pause). */
void cs_reader_pause(CsReader *rd);

/* True when all n bytes are zero (such chunks are restored as holes). */
bool cs_chunk_is_zero(const void *p, size_t n);

/* Expand a reference of any level to its level-0 list (caller frees with cs_content_ref_free). */
int cs_reader_flatten(CsReader *rd, const CsContentRef *ref, CsContentRef *ret);

/* Read the content into a buffer (small objects: directories, lists). */
int cs_reader_read_all(CsReader *rd, const CsContentRef *ref, size_t max, Buf *out);

/*
 * Write the content to fd from its current offset. With `sparse`, all-zero chunks become holes
 * (fd must be a regular file; its size is set at the end). Returns 0 or -errno; on -EBADMSG the
 * output is incomplete.
 */
int cs_reader_write_fd(CsReader *rd, const CsContentRef *ref, int fd, bool sparse);

/* Read n bytes at `off` of level-0 content (random access, FUSE). Returns bytes read. */
typedef struct CsContentIndex CsContentIndex;
int cs_content_index_new(CsReader *rd, const CsContentRef *ref, CsContentIndex **ret);
CsContentIndex *cs_content_index_free(CsContentIndex *ci);
uint64_t cs_content_index_size(const CsContentIndex *ci);
long cs_content_pread(CsReader *rd, const CsContentIndex *ci, void *buf, size_t n, uint64_t off);
