/*
 * Pack files (docs/FORMAT.md 6): the header, the footer and trailer entries, and every record
 * header they lead to, through cs_pack_read_trailer and cs_record_read_members, the way an
 * index rebuild reads a pack; then each listed record is decoded under the pack's key.
 *
 * Input: one mode byte, then the pack file. The object is named after the pack id in its
 * header (so the name check passes). Unless the mode's bit 0 is set, the footer's xxh3 of the
 * trailer entries is recomputed when the footer's counts fit the file, so the fuzzer gets past
 * it to the record headers. Record payloads stay sealed: tests/fuzz/record.c explores them.
 *
 * Promises checked: no crash, leak or undefined behaviour; every chunk read from a trailer
 * lies inside a record that lies between the header and the trailer, its record's member list
 * places it, and a record that decodes holds exactly the chunks the trailer read gave it.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <xxhash.h>

#include "chunkstore/backend.h"
#include "chunkstore/format.h"
#include "chunkstore/pack.h"
#include "common/endian.h"
#include "common/macro.h"
#include "tests/fuzz/fuzz-common.h"

static CsBackend *backend;
static uint8_t enc_key[32];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet();
    uint8_t master[CS_MASTER_SIZE];
    fuzz_master_key(master);
    memcpy(enc_key, master, sizeof(enc_key));
    return cs_backend_local_open(fuzz_scratch_dir(), false, &backend) < 0 ? -1 : 0;
}

static void fix_trailer_xxh3(uint8_t *p, size_t n)
{
    if (n < CS_PACK_HEADER_SIZE + CS_PACK_FOOTER_SIZE)
        return;
    uint8_t *footer = p + n - CS_PACK_FOOTER_SIZE;
    uint64_t records = get_le32(footer + 12);
    uint64_t t_len = records * CS_PACK_RECORD_REF_SIZE;
    if (t_len > n - CS_PACK_HEADER_SIZE - CS_PACK_FOOTER_SIZE)
        return;
    uint64_t trailer_off = n - CS_PACK_FOOTER_SIZE - t_len;
    put_le64(footer + 16, XXH3_64bits(p + trailer_off, t_len));
}

/* The record at `loc` decodes to chunks that are exactly the entries found for it. */
static void check_record(const uint8_t *p, size_t n, const CsPackId *id, const CsPackEntry *e,
                         size_t count)
{
    const CsChunkLoc *loc = &e[0].loc;
    FUZZ_CHECK(loc->record_off >= CS_PACK_HEADER_SIZE && loc->record_off <= n &&
               loc->record_len <= n - loc->record_off);
    uint8_t key[32];
    FUZZ_CHECK(cs_pack_key(enc_key, id, key) == 0);
    _cleanup_(buf_free) Buf plain = BUF_INIT;
    const uint8_t *members;
    size_t n_members;
    if (cs_record_decode(key, p + loc->record_off, loc->record_len, &plain, &members,
                         &n_members) < 0)
        return;
    FUZZ_CHECK(n_members == count);
    for (size_t i = 0; i < count; i++) {
        FUZZ_CHECK(memcmp(members + i * CS_RECORD_MEMBER_SIZE, e[i].id.bytes,
                          CS_CHUNK_ID_SIZE) == 0);
        FUZZ_CHECK((uint64_t)e[i].loc.member_off + e[i].loc.length <= plain.size);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    size_t n = size - 1;
    _cleanup_free_ uint8_t *p = malloc(n ? n : 1);
    FUZZ_CHECK(p);
    memcpy(p, data + 1, n);
    if (!(mode & 1))
        fix_trailer_xxh3(p, n);

    CsPackId named = { { 0 } };
    if (n >= CS_PACK_HEADER_SIZE)
        memcpy(named.bytes, p + 16, CS_PACK_ID_SIZE);
    char name[CS_PACK_NAME_MAX], path[PATH_MAX];
    cs_pack_name(&named, name);
    snprintf(path, sizeof(path), "%s/%s", fuzz_scratch_dir(), name);
    FUZZ_CHECK(fuzz_write_file(path, p, n) == 0);

    CsPackId id;
    _cleanup_free_ CsPackEntry *entries = NULL;
    size_t count = 0;
    int r = cs_pack_read_trailer(backend, name, &id, &entries, &count);
    if (r == 0) {
        FUZZ_CHECK(memcmp(id.bytes, named.bytes, CS_PACK_ID_SIZE) == 0);
        _cleanup_(buf_free) Buf m = BUF_INIT;
        for (size_t first = 0; first < count;) {
            const CsChunkLoc *loc = &entries[first].loc;
            FUZZ_CHECK(loc->member_off == 0);
            /* The members read again on their own say the same as the trailer read. */
            FUZZ_CHECK(cs_record_read_members(backend, name, loc->record_off, loc->record_len,
                                              &m) == 0);
            size_t in_record = m.size / CS_RECORD_MEMBER_SIZE;
            FUZZ_CHECK(in_record >= 1 && in_record <= count - first);
            for (size_t i = first; i < first + in_record; i++) {
                const CsChunkLoc *l = &entries[i].loc;
                FUZZ_CHECK(memcmp(l->pack.bytes, id.bytes, CS_PACK_ID_SIZE) == 0);
                FUZZ_CHECK(l->record_off == loc->record_off && l->record_len == loc->record_len);
                FUZZ_CHECK(l->record_off >= CS_PACK_HEADER_SIZE &&
                           l->record_off + l->record_len <= n - CS_PACK_FOOTER_SIZE);
                FUZZ_CHECK(memcmp(m.data + (i - first) * CS_RECORD_MEMBER_SIZE,
                                  entries[i].id.bytes, CS_CHUNK_ID_SIZE) == 0);
            }
            check_record(p, n, &id, entries + first, in_record);
            first += in_record;
        }
    }
    unlink(path);
    return 0;
}
