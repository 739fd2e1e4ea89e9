/*
 * Content references and slices (docs/FORMAT.md 7), and the index value that locates a chunk
 * (FORMAT.md 10): cs_content_ref_decode, cs_content_ref_offsets, cs_content_slice_at,
 * cs_slice_decode and cs_loc_decode.
 *
 * Input: an encoded content reference, possibly followed by more bytes (a reference is read
 * from the middle of a directory object or a WAL object, so what follows it is not its own).
 *
 * Promises checked: no crash, leak or undefined behaviour; a decoded reference re-encodes to
 * exactly the bytes it was read from; the starts of a level-0 reference's entries rise to its
 * size when its lengths add up; a slice found at an offset lies inside the entry holding it.
 */
#include <stdlib.h>
#include <string.h>

#include "chunkstore/format.h"
#include "chunkstore/pack.h"
#include "chunkstore/store.h"
#include "common/endian.h"
#include "common/macro.h"
#include "tests/fuzz/fuzz-common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet();
    return 0;
}

static void check_offsets(const CsContentRef *ref, const uint8_t *data, size_t size)
{
    _cleanup_free_ uint64_t *starts = cs_content_ref_offsets(ref);
    FUZZ_CHECK(starts);
    for (uint32_t i = 0; i < ref->count; i++)
        FUZZ_CHECK(starts[i + 1] == starts[i] + ref->entries[i].length);
    if (starts[ref->count] != ref->size || ref->count == 0)
        return; /* a reader refuses such a list before it looks anything up in it */
    /* Positions to look up, taken from the input's last bytes. */
    for (size_t k = 0; k + 8 <= size && k < 64; k += 8) {
        uint64_t at = get_le64(data + size - 8 - k) % (ref->size + 1);
        uint32_t len = (uint32_t)(get_le64(data + k) % 9000);
        CsChunkSlice s;
        if (!cs_content_slice_at(ref, starts, at, len, &s))
            continue;
        size_t e = cs_offsets_find(starts, ref->count, at);
        FUZZ_CHECK(e < ref->count && starts[e] <= at && at + len <= starts[e + 1]);
        FUZZ_CHECK(memcmp(s.id.bytes, ref->entries[e].id.bytes, CS_CHUNK_ID_SIZE) == 0);
        FUZZ_CHECK(s.length == len);
        /* (An entry reaching past 4 GiB names no chunk's bytes: a reader refuses it.) */
        if ((uint64_t)ref->entries[e].offset + ref->entries[e].length <= UINT32_MAX)
            FUZZ_CHECK(s.offset == ref->entries[e].offset + (at - starts[e]));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size >= CS_SLICE_SIZE) {
        CsChunkSlice a = cs_slice_decode(data, true), b = cs_slice_decode(data, false);
        FUZZ_CHECK(b.offset == 0 && memcmp(a.id.bytes, b.id.bytes, CS_CHUNK_ID_SIZE) == 0);
    }
    CsChunkLoc loc;
    if (cs_loc_decode(data, size, &loc) == 0) {
        uint8_t again[CS_LOC_SIZE];
        cs_loc_encode(&loc, again);
        FUZZ_CHECK(size >= CS_LOC_SIZE && memcmp(again, data, CS_LOC_SIZE) == 0);
    }

    Cursor c = cursor_make(data, size);
    CsContentRef ref = { 0 };
    if (cs_content_ref_decode(&c, &ref) < 0)
        return 0;
    size_t used = size - c.left;
    _cleanup_(buf_free) Buf out = BUF_INIT;
    FUZZ_CHECK(cs_content_ref_encode(&ref, &out) == 0);
    FUZZ_CHECK(out.size == used && memcmp(out.data, data, used) == 0);
    if (ref.level == 0)
        check_offsets(&ref, data, size);
    CsContentRef copy;
    FUZZ_CHECK(cs_content_ref_copy(&ref, &copy) == 0);
    FUZZ_CHECK(copy.count == ref.count && copy.size == ref.size);
    cs_content_ref_free(&copy);
    cs_content_ref_free(&ref);
    return 0;
}
