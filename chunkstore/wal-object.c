#include "chunkstore/wal-object.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "chunkstore/catalog.h"
#include "common/endian.h"
#include "common/log.h"
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

int cs_wal_name_parse(const char *name, CsWalName *ret)
{
    CsWalName n = { 0 };
    size_t len = strlen(name);
    uint32_t offset;

    if (len >= sizeof(n.name))
        return -EINVAL;
    if (len == 16 && strcmp(name + 8, ".history") == 0) {
        if (!parse_hex(name, 8, &n.tli))
            return -EINVAL;
        n.kind = CS_WAL_HISTORY;
    } else if (len >= 24 && parse_hex(name, 8, &n.tli) && parse_hex(name + 8, 8, &n.log) &&
               parse_hex(name + 16, 8, &n.seg)) {
        const char *rest = name + 24;
        if (!*rest)
            n.kind = CS_WAL_SEGMENT;
        else if (strcmp(rest, ".partial") == 0)
            n.kind = CS_WAL_PARTIAL;
        else if (len == 40 && rest[0] == '.' && parse_hex(rest + 1, 8, &offset) &&
                 strcmp(rest + 9, ".backup") == 0)
            n.kind = CS_WAL_BACKUP;
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

const char *cs_wal_kind_to_string(CsWalKind kind)
{
    switch (kind) {
    case CS_WAL_SEGMENT: return "segment";
    case CS_WAL_PARTIAL: return "partial segment";
    case CS_WAL_HISTORY: return "timeline history file";
    case CS_WAL_BACKUP: return "backup history file";
    default: return "unknown";
    }
}

bool cs_wal_seg_size_is_valid(uint64_t s)
{
    return s >= CS_WAL_SEG_MIN && s <= CS_WAL_SEG_MAX && (s & (s - 1)) == 0;
}

int cs_wal_segno(const CsWalName *n, uint64_t seg_size, uint64_t *ret)
{
    if (!cs_wal_seg_size_is_valid(seg_size) || n->kind == CS_WAL_HISTORY)
        return -EINVAL;
    uint64_t per_id = UINT64_C(0x100000000) / seg_size; /* XLogSegmentsPerXLogId */
    if (n->seg >= per_id)
        return -EINVAL;
    *ret = (uint64_t)n->log * per_id + n->seg;
    return 0;
}

/* 1 to 8 hex digits of either case (PostgreSQL prints uppercase, %X/%X), up to `end`. */
static const char *parse_lsn_half(const char *s, char end, uint32_t *ret)
{
    uint32_t v = 0;
    size_t n = 0;
    for (; *s && *s != end; s++, n++) {
        int d = isdigit((unsigned char)*s) ? *s - '0'
                : isxdigit((unsigned char)*s) ? tolower((unsigned char)*s) - 'a' + 10
                                               : -1;
        if (d < 0 || n == 8)
            return NULL;
        v = v << 4 | (uint32_t)d;
    }
    *ret = v;
    return n > 0 && *s == end ? s : NULL;
}

int cs_wal_lsn_parse(const char *s, uint64_t *ret)
{
    uint32_t hi, lo;
    const char *p = parse_lsn_half(s, '/', &hi);
    if (!p || !parse_lsn_half(p + 1, 0, &lo))
        return -EINVAL;
    *ret = (uint64_t)hi << 32 | lo;
    return 0;
}

void cs_wal_segment_name(uint32_t tli, uint64_t segno, uint64_t seg_size, char *out)
{
    uint64_t per_id = UINT64_C(0x100000000) / seg_size;
    snprintf(out, 25, "%08" PRIX32 "%08" PRIX32 "%08" PRIX32, tli, (uint32_t)(segno / per_id),
             (uint32_t)(segno % per_id));
}

/* ---- WAL object ---- */

void cs_wal_object_clear(CsWalObject *o)
{
    cs_content_ref_free(&o->content);
    *o = (CsWalObject){ 0 };
}

int cs_wal_object_encode(const CsWalObject *o, Buf *out)
{
    CsWalName n;
    size_t name_len = strlen(o->name);
    if (cs_wal_name_parse(o->name, &n) < 0 || n.kind != o->kind)
        return -EINVAL;
    uint8_t *h = buf_extend(out, CS_WAL_OBJECT_FIXED);
    if (!h)
        return -ENOMEM;
    put_le32(h + 0, CS_WAL_OBJECT_MAGIC);
    put_le32(h + 4, CS_WAL_OBJECT_VERSION);
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

int cs_wal_object_decode(const void *p, size_t n, CsWalObject *ret)
{
    const uint8_t *h = p;
    if (n < CS_WAL_OBJECT_FIXED || get_le32(h) != CS_WAL_OBJECT_MAGIC)
        return -EBADMSG;
    if (get_le32(h + 4) > CS_WAL_OBJECT_VERSION)
        return -EPROTONOSUPPORT;
    CsWalObject o = {
        .kind = (CsWalKind)h[8],
        .xlp_magic = get_le16(h + 10),
        .size = get_le64(h + 16),
        .sysid = get_le64(h + 24),
        .archived_at = (int64_t)get_le64(h + 32),
    };
    size_t name_len = get_le16(h + 12);
    if (get_le32(h + 4) == 0 || o.kind < CS_WAL_SEGMENT || o.kind >= _CS_WAL_KIND_MAX ||
        h[9] != 0 || name_len == 0 || name_len >= sizeof(o.name) ||
        n - CS_WAL_OBJECT_FIXED < name_len)
        return -EBADMSG;
    memcpy(o.sha256, h + 40, 32);
    memcpy(o.name, h + CS_WAL_OBJECT_FIXED, name_len);
    o.name[name_len] = 0;
    CsWalName parsed;
    if (cs_wal_name_parse(o.name, &parsed) < 0 || parsed.kind != o.kind)
        return -EBADMSG;
    if (cs_wal_kind_has_header(o.kind) != (o.xlp_magic != 0))
        return -EBADMSG;
    Cursor c = cursor_make(h + CS_WAL_OBJECT_FIXED + name_len,
                           n - CS_WAL_OBJECT_FIXED - name_len);
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

bool cs_wal_node_is_valid(const char *node)
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

const char *cs_wal_object_dir(CsWalKind kind, const char *name, char buf[CS_WAL_DIR_MAX])
{
    if (kind == CS_WAL_HISTORY)
        return "history";
    snprintf(buf, CS_WAL_DIR_MAX, "%.8s", name);
    return buf;
}

int cs_wal_object_name(const char *node, const CsWalName *name, char *out, size_t n)
{
    char dir[CS_WAL_DIR_MAX];
    int len = snprintf(out, n, "wal/%s/%s/%s", node, cs_wal_object_dir(name->kind, name->name, dir),
                       name->name);
    if (len < 0 || (size_t)len >= n)
        return -ENAMETOOLONG;
    return 0;
}

/* ---- reading objects ---- */

int cs_wal_object_load(CsRepo *repo, const char *objname, CsWalObject *ret)
{
    _cleanup_free_ uint8_t *data = NULL;
    _cleanup_(buf_free) Buf plain = BUF_INIT;
    size_t n;
    int r = cs_backend_get(repo->backend, objname, CS_WAL_OBJECT_MAX, &data, &n);
    if (r == -EFBIG)
        return -EBADMSG;
    if (r < 0)
        return r;
    if ((r = cs_sealed_decode(repo->catalog_key, objname, data, n, &plain)) < 0)
        return r == -EPROTONOSUPPORT ? r : -EBADMSG;
    CsWalObject o;
    if ((r = cs_wal_object_decode(plain.data, plain.size, &o)) < 0)
        return r;
    /* The directory and file name must be the ones the recorded file is archived under. */
    char tail[CS_WAL_NAME_MAX + CS_WAL_DIR_MAX + 2], dir[CS_WAL_DIR_MAX];
    snprintf(tail, sizeof(tail), "/%s/%s", cs_wal_object_dir(o.kind, o.name, dir), o.name);
    size_t len = strlen(objname), tail_len = strlen(tail);
    if (len <= tail_len || strcmp(objname + len - tail_len, tail) != 0) {
        cs_wal_object_clear(&o);
        return -EBADMSG;
    }
    *ret = o;
    return 0;
}

typedef struct ListCtx {
    size_t prefix_len; /* of "wal/<node>/" */
    CsWalListFn fn;
    void *userdata;
} ListCtx;

static int list_visit(const char *objname, uint64_t size, void *userdata)
{
    ListCtx *c = userdata;
    (void)size;
    const char *rel = objname + c->prefix_len;
    const char *slash = strchr(rel, '/');
    CsWalName n;
    bool ok = slash && !strchr(slash + 1, '/') && cs_wal_name_parse(slash + 1, &n) == 0;
    if (ok) {
        char buf[CS_WAL_DIR_MAX];
        const char *dir = cs_wal_object_dir(n.kind, n.name, buf);
        ok = strlen(dir) == (size_t)(slash - rel) && strncmp(rel, dir, strlen(dir)) == 0;
    }
    if (!ok) {
        log_warning("ignoring object \"%s\": not a WAL object name", objname);
        return 0;
    }
    return c->fn(objname, &n, c->userdata);
}

int cs_wal_list(CsRepo *repo, const char *node, const char *dir, CsWalListFn fn, void *userdata)
{
    if (!cs_wal_node_is_valid(node) || (dir && (strchr(dir, '/') || dir[0] == '.')))
        return -EINVAL;
    _cleanup_free_ char *prefix = NULL;
    if (asprintf(&prefix, "wal/%s/%s%s", node, dir ? dir : "", dir ? "/" : "") < 0)
        return -ENOMEM;
    ListCtx c = { .prefix_len = strlen("wal/") + strlen(node) + 1, .fn = fn, .userdata = userdata };
    return cs_backend_list(repo->backend, prefix, list_visit, &c);
}
