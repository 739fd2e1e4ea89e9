#include "agent/wal-format.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/endian.h"
#include "common/macro.h"

/* ---- page header ---- */

int agent_wal_header_parse(const void *p, size_t n, AgentWalHeader *ret)
{
    const uint8_t *b = p;
    if (n < AGENT_WAL_LONG_HEADER_SIZE)
        return -EBADMSG;
    *ret = (AgentWalHeader){
        .magic = get_le16(b + 0),
        .info = get_le16(b + 2),
        .tli = get_le32(b + 4),
        .pageaddr = get_le64(b + 8),
        .rem_len = get_le32(b + 16),
        .sysid = get_le64(b + 24),
        .seg_size = get_le32(b + 32),
        .blcksz = get_le32(b + 36),
    };
    return 0;
}

/* XLOG_PAGE_MAGIC of each major version. It changes whenever the WAL format does, at most once
 * per major version, so it tells which server wrote a segment. */
static const struct {
    uint16_t magic;
    int version;
} magics[] = {
    { 0xD106, 13 }, { 0xD10D, 14 }, { 0xD110, 15 }, { 0xD113, 16 }, { 0xD116, 17 }, { 0xD118, 18 },
};

int agent_wal_magic_to_version(uint16_t magic)
{
    for (size_t i = 0; i < ARRAY_SIZE(magics); i++)
        if (magics[i].magic == magic)
            return magics[i].version;
    return 0;
}

_printf_(3, 4) static int mismatch(char *why, size_t n, const char *fmt, ...)
{
    if (why && n) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, n, fmt, ap);
        va_end(ap);
    }
    return -EBADMSG;
}

int agent_wal_header_check(const CsWalName *name, const void *p, size_t n,
                           uint64_t file_size, AgentWalHeader *ret, char *why, size_t why_n)
{
    AgentWalHeader h;
    if (why && why_n)
        why[0] = 0;
    if (!cs_wal_kind_has_header(name->kind))
        return -EINVAL;
    if (agent_wal_header_parse(p, n, &h) < 0)
        return mismatch(why, why_n, "file is %" PRIu64 " bytes, too short for a WAL page header",
                        file_size);
    if (ret)
        *ret = h;
    if (!agent_wal_magic_to_version(h.magic))
        return mismatch(why, why_n,
                        "page magic 0x%04X is not that of any known PostgreSQL version", h.magic);
    if (!(h.info & AGENT_WAL_XLP_LONG_HEADER) || (h.info & ~AGENT_WAL_XLP_ALL_FLAGS))
        return mismatch(why, why_n, "page flags 0x%04X are not those of a segment's first page",
                        h.info);
    if (!cs_wal_seg_size_is_valid(h.seg_size))
        return mismatch(why, why_n,
                        "segment size %" PRIu32 " in the header is not a power of two between "
                        "1 MiB and 1 GiB",
                        h.seg_size);
    if (h.seg_size != file_size)
        return mismatch(why, why_n,
                        "file is %" PRIu64 " bytes but its header says segments are %" PRIu32,
                        file_size, h.seg_size);
    if (h.blcksz < 1024 || h.blcksz > 65536 || (h.blcksz & (h.blcksz - 1)) ||
        h.seg_size % h.blcksz)
        return mismatch(why, why_n, "WAL block size %" PRIu32 " in the header is not valid",
                        h.blcksz);
    uint64_t segno;
    if (cs_wal_segno(name, h.seg_size, &segno) < 0)
        return mismatch(why, why_n,
                        "segment number %08" PRIX32 " in the name is out of range for %" PRIu32
                        "-byte segments",
                        name->seg, h.seg_size);
    uint64_t start = segno * h.seg_size;
    if (h.pageaddr != start)
        return mismatch(why, why_n,
                        "header is for LSN %" PRIX32 "/%08" PRIX32 " but the name is for LSN "
                        "%" PRIX32 "/%08" PRIX32,
                        (uint32_t)(h.pageaddr >> 32), (uint32_t)h.pageaddr,
                        (uint32_t)(start >> 32), (uint32_t)start);
    if (h.tli == 0 || h.tli > name->tli)
        return mismatch(why, why_n,
                        "header is for timeline %" PRIu32 " but the name is for timeline %" PRIu32,
                        h.tli, name->tli);
    return 0;
}
