/*
 * Records, delta records and framed delta records (docs/FORMAT.md 6.2): cs_record_info,
 * cs_record_verify, cs_record_decode_prefixed, cs_record_open_framed, cs_frames_index and
 * cs_frame_decode.
 *
 * Input: one mode byte, then a record whose payload holds its *plaintext* (a zstd frame, raw
 * chunks, or a framed record's table and frames). Unless the mode's bit 0 is set, the target
 * seals it under a fixed pack key first, so the fuzzer explores what lies behind the tag;
 * with bit 0 it is decoded as it is (bit 1 then recomputes only its xxh3), which explores
 * the framing and the authentication failures. A delta record's bases read as
 * fuzz_base_bytes().
 *
 * Promises checked: no crash, leak or undefined behaviour; a decoded record's plaintext is
 * raw_len bytes that its members tile; a framed member decodes to exactly its length.
 */
#include <stdlib.h>
#include <string.h>

#include "chunkstore/format.h"
#include "chunkstore/pack.h"
#include "common/endian.h"
#include "common/macro.h"
#include "tests/fuzz/fuzz-common.h"

static void *dctx;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet();
    dctx = cs_zstd_dctx_new();
    return dctx ? 0 : -1;
}

/* The bases of a delta record, concatenated: the prefix its frame was compressed with. */
static uint8_t *prefix_of(const CsRecordInfo *in)
{
    uint8_t *prefix = malloc(in->prefix_len ? in->prefix_len : 1);
    if (!prefix)
        return NULL;
    uint64_t at = 0;
    for (size_t i = 0; i < in->n_bases; i++) {
        CsChunkSlice s = cs_record_base(in, i);
        fuzz_base_bytes(&s, prefix + at);
        at += s.length;
    }
    return prefix;
}

static void decode_framed(const uint8_t *rec, size_t len)
{
    _cleanup_(buf_free) Buf payload = BUF_INIT;
    CsRecordInfo in;
    if (cs_record_open_framed(fuzz_pack_key, rec, len, &payload, &in) < 0)
        return;
    FUZZ_CHECK(in.flags & CS_RECORD_FLAG_FRAMED);
    FUZZ_CHECK(in.n_bases == in.n_members);
    FUZZ_CHECK(cs_member_lengths_sum(in.members, in.n_members) == in.raw_len);
    _cleanup_free_ uint32_t *offs = malloc((in.n_members + 1) * sizeof(*offs));
    FUZZ_CHECK(offs);
    if (cs_frames_index(payload.data, payload.size, in.n_members, offs) < 0)
        return;
    FUZZ_CHECK(offs[in.n_members] == payload.size);
    for (size_t i = 0; i < in.n_members; i++) {
        CsChunkSlice base = cs_record_base(&in, i);
        uint32_t out_len = get_le32(in.members + i * CS_RECORD_MEMBER_SIZE + CS_CHUNK_ID_SIZE);
        FUZZ_CHECK(offs[i] <= offs[i + 1]);
        if (base.length > FUZZ_MAX_ALLOC || out_len > FUZZ_MAX_ALLOC)
            continue;
        _cleanup_free_ uint8_t *b = malloc(base.length ? base.length : 1);
        _cleanup_free_ uint8_t *out = malloc(out_len ? out_len : 1);
        FUZZ_CHECK(b && out);
        fuzz_base_bytes(&base, b);
        (void)cs_frame_decode(dctx, payload.data + offs[i], offs[i + 1] - offs[i], b,
                              base.length, out, out_len);
    }
}

static void decode_whole(const uint8_t *rec, size_t len, const CsRecordInfo *in)
{
    if (in->prefix_len > FUZZ_MAX_ALLOC)
        return;
    _cleanup_free_ uint8_t *prefix = NULL;
    if (in->flags & CS_RECORD_FLAG_DELTA) {
        prefix = prefix_of(in);
        FUZZ_CHECK(prefix);
    }
    _cleanup_(buf_free) Buf plain = BUF_INIT;
    const uint8_t *members;
    size_t n;
    if (cs_record_decode_prefixed(dctx, fuzz_pack_key, rec, len, prefix,
                                  prefix ? in->prefix_len : 0, &plain, &members, &n) < 0)
        return;
    FUZZ_CHECK(plain.size == in->raw_len);
    FUZZ_CHECK(n == in->n_members && n >= 1);
    FUZZ_CHECK(cs_member_lengths_sum(members, n) == plain.size);
    /* Every member's start is found where its predecessors end. */
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        long at = cs_member_at_offset(members, n, off);
        FUZZ_CHECK(at >= 0);
        off += get_le32(members + i * CS_RECORD_MEMBER_SIZE + CS_CHUNK_ID_SIZE);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    size_t len = size - 1;
    _cleanup_free_ uint8_t *rec = malloc(len ? len : 1);
    FUZZ_CHECK(rec);
    memcpy(rec, data + 1, len);
    if (!(mode & 1)) {
        /* A length that large is trusted once authenticated (see FUZZ_MAX_ALLOC). */
        if (len >= CS_RECORD_HEADER_SIZE && get_le32(rec + 8) > FUZZ_MAX_ALLOC)
            return 0;
        (void)fuzz_record_seal(fuzz_pack_key, rec, len);
    } else if (mode & 2 && fuzz_record_header_len(rec, len) >= 0) {
        fuzz_record_fix_xxh3(rec, len);
    }
    CsRecordInfo in;
    int r = cs_record_info(rec, len, &in);
    FUZZ_CHECK((r == 0) == (cs_record_verify(rec, len) == 0));
    if (r < 0)
        return 0;
    FUZZ_CHECK(in.n_members >= 1);
    FUZZ_CHECK(!(in.flags & CS_RECORD_FLAG_DELTA) || (in.n_bases >= 1 && in.bases));
    if (in.flags & CS_RECORD_FLAG_FRAMED)
        decode_framed(rec, len);
    else
        decode_whole(rec, len, &in);
    return 0;
}
