/*
 * The page header that starts a WAL segment and the names of WAL files (docs/FORMAT.md 15.1,
 * 15.4): agent_wal_header_parse, agent_wal_header_check, cs_wal_name_parse, cs_wal_segno,
 * cs_wal_segment_name and cs_wal_lsn_parse, which archive-wal and restore-wal apply to what
 * PostgreSQL and the repository hand them.
 *
 * Input: 4 bytes of file size (u32 little-endian, scaled to up to 1 GiB), a file name ending
 * at the first NUL byte, then the file's first bytes. The rest of the name doubles as an LSN.
 *
 * Promises checked: no crash or undefined behaviour; a header that passes the check matches
 * the name and the size; a parsed name and LSN print back as themselves.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/wal-format.h"
#include "chunkstore/wal-object.h"
#include "common/endian.h"
#include "tests/fuzz/fuzz-common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 5)
        return 0;
    uint64_t file_size = (uint64_t)get_le32(data) << 8;
    const char *name_start = (const char *)data + 4;
    const void *nul = memchr(name_start, 0, size - 4);
    size_t name_len = nul ? (size_t)((const char *)nul - name_start) : size - 4;
    char text[128];
    if (name_len >= sizeof(text))
        return 0;
    memcpy(text, name_start, name_len);
    text[name_len] = 0;
    const uint8_t *page = nul ? (const uint8_t *)nul + 1 : data + size;
    size_t n = (size_t)(data + size - page);

    uint64_t lsn;
    if (cs_wal_lsn_parse(text, &lsn) == 0) {
        char back[64];
        snprintf(back, sizeof(back), "%X/%X", (unsigned)(lsn >> 32), (unsigned)lsn);
        uint64_t again;
        FUZZ_CHECK(cs_wal_lsn_parse(back, &again) == 0 && again == lsn);
    }

    AgentWalHeader h;
    if (agent_wal_header_parse(page, n, &h) == 0)
        FUZZ_CHECK(n >= AGENT_WAL_LONG_HEADER_SIZE);
    (void)agent_wal_magic_to_version(n >= 2 ? get_le16(page) : 0);

    CsWalName wal;
    if (cs_wal_name_parse(text, &wal) < 0)
        return 0;
    FUZZ_CHECK(wal.kind > 0 && wal.kind < _CS_WAL_KIND_MAX && wal.tli != 0);
    FUZZ_CHECK(strcmp(wal.name, text) == 0);
    (void)cs_wal_kind_to_string(wal.kind);
    char dir[CS_WAL_DIR_MAX];
    FUZZ_CHECK(cs_wal_object_dir(wal.kind, wal.name, dir) != NULL);

    uint64_t segno;
    if (cs_wal_kind_has_header(wal.kind) && cs_wal_seg_size_is_valid(file_size) &&
        cs_wal_segno(&wal, file_size, &segno) == 0) {
        char again[25];
        cs_wal_segment_name(wal.tli, segno, file_size, again);
        FUZZ_CHECK(strncmp(again, wal.name, 24) == 0);
    }
    char why[256] = "";
    if (cs_wal_kind_has_header(wal.kind) &&
        agent_wal_header_check(&wal, page, n, file_size, &h, why, sizeof(why)) == 0) {
        FUZZ_CHECK(h.seg_size == file_size && cs_wal_seg_size_is_valid(file_size));
        FUZZ_CHECK(h.tli >= 1 && h.tli <= wal.tli);
        FUZZ_CHECK(cs_wal_segno(&wal, file_size, &segno) == 0 && h.pageaddr == segno * file_size);
    }
    return 0;
}
