#include "agent/wal-format.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/endian.h"
#include "common/macro.h"

/* ---- file names ---- */

/* n uppercase hex digits at s, as PostgreSQL writes them (IsXLogFileName accepts only those). */
static bool parse_hex(const char *s, size_t n, uint32_t *ret)
{
    uint32_t v = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'A' && c <= 'F')
            d = (unsigned)(c - 'A' + 10);
        else
            return false;
        v = (v << 4) | d;
    }
    *ret = v;
    return true;
}

int agent_wal_name_parse(const char *name, AgentWalName *ret)
{
    AgentWalName n = { 0 };
    size_t len = strlen(name);
    uint32_t offset;

    if (len >= sizeof(n.name))
        return -EINVAL;
    if (len == 16 && strcmp(name + 8, ".history") == 0) {
        if (!parse_hex(name, 8, &n.tli))
            return -EINVAL;
        n.kind = AGENT_WAL_HISTORY;
    } else if (len >= 24 && parse_hex(name, 8, &n.tli) && parse_hex(name + 8, 8, &n.log) &&
               parse_hex(name + 16, 8, &n.seg)) {
        const char *rest = name + 24;
        if (!*rest)
            n.kind = AGENT_WAL_SEGMENT;
        else if (strcmp(rest, ".partial") == 0)
            n.kind = AGENT_WAL_PARTIAL;
        else if (len == 40 && rest[0] == '.' && parse_hex(rest + 1, 8, &offset) &&
                 strcmp(rest + 9, ".backup") == 0)
            n.kind = AGENT_WAL_BACKUP;
        else
            return -EINVAL;
    } else
        return -EINVAL;
    if (n.tli == 0) /* timelines start at 1 */
        return -EINVAL;
    memcpy(n.name, name, len + 1);
    *ret = n;
    return 0;
}

const char *agent_wal_kind_to_string(AgentWalKind kind)
{
    switch (kind) {
    case AGENT_WAL_SEGMENT: return "segment";
    case AGENT_WAL_PARTIAL: return "partial segment";
    case AGENT_WAL_HISTORY: return "timeline history file";
    case AGENT_WAL_BACKUP: return "backup history file";
    default: return "unknown";
    }
}

static bool is_valid_seg_size(uint64_t s)
{
    return s >= AGENT_WAL_SEG_MIN && s <= AGENT_WAL_SEG_MAX && (s & (s - 1)) == 0;
}

int agent_wal_segno(const AgentWalName *n, uint64_t seg_size, uint64_t *ret)
{
    if (!is_valid_seg_size(seg_size) || n->kind == AGENT_WAL_HISTORY)
        return -EINVAL;
    uint64_t per_id = UINT64_C(0x100000000) / seg_size; /* XLogSegmentsPerXLogId */
    if (n->seg >= per_id)
        return -EINVAL;
    *ret = (uint64_t)n->log * per_id + n->seg;
    return 0;
}

void agent_wal_segment_name(uint32_t tli, uint64_t segno, uint64_t seg_size, char *out)
{
    uint64_t per_id = UINT64_C(0x100000000) / seg_size;
    snprintf(out, 25, "%08" PRIX32 "%08" PRIX32 "%08" PRIX32, tli, (uint32_t)(segno / per_id),
             (uint32_t)(segno % per_id));
}

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

int agent_wal_header_check(const AgentWalName *name, const void *p, size_t n,
                           uint64_t file_size, AgentWalHeader *ret, char *why, size_t why_n)
{
    AgentWalHeader h;
    if (why && why_n)
        why[0] = 0;
    if (!agent_wal_kind_has_header(name->kind))
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
    if (!is_valid_seg_size(h.seg_size))
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
    if (agent_wal_segno(name, h.seg_size, &segno) < 0)
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

/* ---- WAL object ---- */

void agent_wal_object_clear(AgentWalObject *o)
{
    cs_content_ref_free(&o->content);
    *o = (AgentWalObject){ 0 };
}

int agent_wal_object_encode(const AgentWalObject *o, Buf *out)
{
    AgentWalName n;
    size_t name_len = strlen(o->name);
    if (agent_wal_name_parse(o->name, &n) < 0 || n.kind != o->kind)
        return -EINVAL;
    uint8_t *h = buf_extend(out, AGENT_WAL_OBJECT_FIXED);
    if (!h)
        return -ENOMEM;
    put_le32(h + 0, AGENT_WAL_OBJECT_MAGIC);
    put_le32(h + 4, AGENT_WAL_OBJECT_VERSION);
    h[8] = (uint8_t)o->kind;
    h[9] = 0; /* flags */
    put_le16(h + 10, o->xlp_magic);
    put_le16(h + 12, (uint16_t)name_len);
    put_le16(h + 14, 0); /* reserved */
    put_le64(h + 16, o->size);
    put_le64(h + 24, o->sysid);
    put_le64(h + 32, (uint64_t)o->archived_at);
    memcpy(h + 40, o->sha256, 32);
    int r = buf_append(out, o->name, name_len);
    if (r < 0)
        return r;
    return cs_content_ref_encode(&o->content, out);
}

int agent_wal_object_decode(const void *p, size_t n, AgentWalObject *ret)
{
    const uint8_t *h = p;
    if (n < AGENT_WAL_OBJECT_FIXED || get_le32(h) != AGENT_WAL_OBJECT_MAGIC)
        return -EBADMSG;
    if (get_le32(h + 4) > AGENT_WAL_OBJECT_VERSION)
        return -EPROTONOSUPPORT;
    AgentWalObject o = {
        .kind = (AgentWalKind)h[8],
        .xlp_magic = get_le16(h + 10),
        .size = get_le64(h + 16),
        .sysid = get_le64(h + 24),
        .archived_at = (int64_t)get_le64(h + 32),
    };
    size_t name_len = get_le16(h + 12);
    if (get_le32(h + 4) == 0 || o.kind < AGENT_WAL_SEGMENT || o.kind >= _AGENT_WAL_KIND_MAX ||
        h[9] != 0 || name_len == 0 || name_len >= sizeof(o.name) ||
        n - AGENT_WAL_OBJECT_FIXED < name_len)
        return -EBADMSG;
    memcpy(o.sha256, h + 40, 32);
    memcpy(o.name, h + AGENT_WAL_OBJECT_FIXED, name_len);
    o.name[name_len] = 0;
    AgentWalName parsed;
    if (agent_wal_name_parse(o.name, &parsed) < 0 || parsed.kind != o.kind)
        return -EBADMSG;
    if (agent_wal_kind_has_header(o.kind) != (o.xlp_magic != 0))
        return -EBADMSG;
    Cursor c = cursor_make(h + AGENT_WAL_OBJECT_FIXED + name_len,
                           n - AGENT_WAL_OBJECT_FIXED - name_len);
    int r = cs_content_ref_decode(&c, &o.content);
    if (r < 0)
        return r;
    if (c.left != 0 || o.content.size != o.size) {
        cs_content_ref_free(&o.content);
        return -EBADMSG;
    }
    *ret = o;
    return 0;
}

/* ---- object names ---- */

bool agent_wal_node_is_valid(const char *node)
{
    size_t len = strlen(node);
    if (len == 0 || len > 64 || node[0] == '.' || node[0] == '-' || strstr(node, ".."))
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = node[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

int agent_wal_object_name(const char *node, const AgentWalName *name, char *out, size_t n)
{
    int len;
    if (name->kind == AGENT_WAL_HISTORY)
        len = snprintf(out, n, "wal/%s/history/%s", node, name->name);
    else
        len = snprintf(out, n, "wal/%s/%.8s/%s", node, name->name, name->name);
    if (len < 0 || (size_t)len >= n)
        return -ENAMETOOLONG;
    return 0;
}
