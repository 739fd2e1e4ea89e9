#include "chunkstore/catalog.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "chunkstore/crypto.h"
#include "common/endian.h"
#include "common/hex.h"
#include "common/log.h"
#include "common/macro.h"

#define SNAPSHOT_MAX (64u << 20)


void cs_snapshot_clear(CsSnapshot *s)
{
    free(s->name);
    free(s->kind);
    free(s->hostname);
    cs_content_ref_free(&s->root);
    if (s->meta)
        json_decref(s->meta);
    *s = (CsSnapshot){ 0 };
}

void cs_snapshots_free(CsSnapshot *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        cs_snapshot_clear(&v[i]);
    free(v);
}

/* The AAD of a sealed object: its name and, from version 4 on, the magic and version before
 * it, so that a changed version byte fails the tag instead of passing for an older object. */
static int sealed_aad(const uint8_t *h, const char *name, Buf *aad)
{
    if (get_le32(h + 8) >= CS_FORMAT_VERSION_KEYED && buf_append(aad, h, 12) < 0)
        return -ENOMEM;
    return buf_append(aad, name, strlen(name));
}

int cs_sealed_encode(const uint8_t key[32], const char *name, const void *p, size_t n, Buf *out)
{
    size_t at = out->size;
    if (!buf_extend(out, CS_SEALED_HEADER_SIZE + n + CS_TAG_SIZE))
        return -ENOMEM;
    uint8_t *h = out->data + at;
    memcpy(h, CS_SEALED_MAGIC, 8);
    put_le32(h + 8, CS_FORMAT_VERSION);
    int r = cs_random_bytes(h + 12, CS_NONCE_SIZE);
    _cleanup_(buf_free) Buf aad = BUF_INIT;
    if (r < 0 || (r = sealed_aad(h, name, &aad)) < 0)
        return r;
    uint8_t *ct = h + CS_SEALED_HEADER_SIZE;
    return cs_aead_seal(key, h + 12, aad.data, aad.size, p, n, ct, ct + n);
}

int cs_sealed_decode(const uint8_t key[32], const char *name, const void *p, size_t n, Buf *out)
{
    const uint8_t *h = p;
    if (n < CS_SEALED_HEADER_SIZE + CS_TAG_SIZE || memcmp(h, CS_SEALED_MAGIC, 8) != 0)
        return -EBADMSG;
    if (get_le32(h + 8) > CS_FORMAT_VERSION)
        return -EPROTONOSUPPORT;
    size_t len = n - CS_SEALED_HEADER_SIZE - CS_TAG_SIZE;
    uint8_t *dst = buf_extend(out, len + 1);
    if (!dst)
        return -ENOMEM;
    out->size--;
    _cleanup_(buf_free) Buf aad = BUF_INIT;
    int r = sealed_aad(h, name, &aad);
    if (r < 0)
        return r;
    const uint8_t *ct = h + CS_SEALED_HEADER_SIZE;
    r = cs_aead_open(key, h + 12, aad.data, aad.size, ct, len, dst, ct + len);
    dst[len] = 0;
    return r;
}

static int snapshot_to_json(const CsSnapshot *s, char **ret)
{
    _cleanup_(buf_free) Buf ref = BUF_INIT;
    int r = cs_content_ref_encode(&s->root, &ref);
    if (r < 0)
        return r;
    _cleanup_free_ char *ref_hex = malloc(2 * ref.size + 1);
    if (!ref_hex)
        return -ENOMEM;
    hex_encode(ref.data, ref.size, ref_hex);
    _cleanup_(json_decrefp) json_t *o = json_pack(
            "{s:i, s:s, s:s, s:s, s:I, s:I, s:s, s:s, s:O?}", "format_version", CS_FORMAT_VERSION,
            "id", s->id, "name", s->name ? s->name : "", "kind", s->kind, "time",
            (json_int_t)s->time, "time_nsec", (json_int_t)s->time_nsec, "hostname",
            s->hostname ? s->hostname : "", "root", ref_hex, "meta", s->meta);
    if (!o)
        return -ENOMEM;
    char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    if (!text)
        return -ENOMEM;
    *ret = text;
    return 0;
}

static int snapshot_from_json(const char *text, CsSnapshot *ret)
{
    json_error_t err;
    _cleanup_(json_decrefp) json_t *o = json_loads(text, 0, &err);
    int version;
    const char *id, *name, *kind, *host, *ref_hex;
    json_int_t t, t_nsec = 0;
    json_t *meta = NULL;
    if (!o || json_unpack(o, "{s:i, s:s, s:s, s:s, s:I, s?I, s:s, s:s, s?o}", "format_version",
                          &version, "id", &id, "name", &name, "kind", &kind, "time", &t,
                          "time_nsec", &t_nsec, "hostname", &host, "root", &ref_hex, "meta",
                          &meta) < 0)
        return -EBADMSG;
    if (t_nsec < 0 || t_nsec > 999999999)
        return -EBADMSG;
    if (version > CS_FORMAT_VERSION)
        return -EPROTONOSUPPORT;
    size_t hex_len = strlen(ref_hex);
    if (strlen(id) != 2 * CS_SNAP_ID_SIZE || hex_len % 2)
        return -EBADMSG;
    _cleanup_free_ uint8_t *ref = malloc(hex_len / 2 + 1);
    if (!ref)
        return -ENOMEM;
    if (hex_decode(ref_hex, ref, hex_len / 2) < 0)
        return -EBADMSG;
    CsSnapshot s = { 0 };
    Cursor c = cursor_make(ref, hex_len / 2);
    int r = cs_content_ref_decode(&c, &s.root);
    if (r < 0)
        return r;
    memcpy(s.id, id, sizeof(s.id));
    s.name = strdup(name);
    s.kind = strdup(kind);
    s.hostname = strdup(host);
    s.time = t;
    s.time_nsec = (uint32_t)t_nsec;
    s.meta = meta ? json_incref(meta) : json_object();
    if (!s.name || !s.kind || !s.hostname || !s.meta) {
        cs_snapshot_clear(&s);
        return -ENOMEM;
    }
    *ret = s;
    return 0;
}

static void snapshot_object_name(const char *id, char out[64])
{
    snprintf(out, 64, "snapshots/%s", id);
}

int cs_catalog_add(CsRepo *repo, CsSnapshot *s)
{
    uint8_t raw[CS_SNAP_ID_SIZE];
    int r = cs_random_bytes(raw, sizeof(raw));
    if (r < 0)
        return r;
    hex_encode(raw, sizeof(raw), s->id);
    if (!s->time) {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        s->time = (int64_t)now.tv_sec;
        s->time_nsec = (uint32_t)now.tv_nsec;
    }
    if (!s->hostname) {
        char host[256] = "";
        gethostname(host, sizeof(host) - 1);
        if (!(s->hostname = strdup(host)))
            return -ENOMEM;
    }
    _cleanup_free_ char *text = NULL;
    if ((r = snapshot_to_json(s, &text)) < 0)
        return r;
    char name[64];
    snapshot_object_name(s->id, name);
    _cleanup_(buf_free) Buf sealed = BUF_INIT;
    if ((r = cs_sealed_encode(repo->catalog_key, name, text, strlen(text), &sealed)) < 0)
        return r;
    r = cs_backend_put(repo->backend, name, sealed.data, sealed.size, false);
    if (r < 0)
        return log_error_errno(r, "could not write snapshot \"%s\": %m", name);
    return 0;
}

static int snapshot_load(CsRepo *repo, const char *name, CsSnapshot *ret)
{
    _cleanup_free_ uint8_t *data = NULL;
    size_t n;
    int r = cs_backend_get(repo->backend, name, SNAPSHOT_MAX, &data, &n);
    if (r < 0)
        return r;
    _cleanup_(buf_free) Buf plain = BUF_INIT;
    if ((r = cs_sealed_decode(repo->catalog_key, name, data, n, &plain)) < 0)
        return log_error_errno(r, "snapshot object \"%s\" is damaged", name);
    r = snapshot_from_json((const char *)plain.data, ret);
    if (r < 0)
        return log_error_errno(r, "snapshot object \"%s\" cannot be parsed", name);
    return 0;
}

typedef struct ListCtx {
    CsRepo *repo;
    CsSnapshot *v;
    size_t n, cap;
    int damaged;
} ListCtx;

static int list_visit(const char *name, uint64_t size, void *userdata)
{
    ListCtx *ctx = userdata;
    (void)size;
    if (GROW_ARRAY(ctx->v, ctx->cap, ctx->n, 16) < 0)
        return -ENOMEM;
    int r = snapshot_load(ctx->repo, name, &ctx->v[ctx->n]);
    if (r == -ENOENT)
        return 0; /* deleted while listing */
    if (r < 0) {
        ctx->damaged++;
        return 0; /* one damaged record must not hide the others */
    }
    ctx->n++;
    return 0;
}

static int snapshot_cmp(const void *a, const void *b)
{
    const CsSnapshot *x = a, *y = b;
    if (x->time != y->time)
        return x->time < y->time ? -1 : 1;
    if (x->time_nsec != y->time_nsec)
        return x->time_nsec < y->time_nsec ? -1 : 1;
    return strcmp(x->id, y->id);
}

int cs_catalog_list(CsRepo *repo, CsSnapshot **ret, size_t *ret_n)
{
    ListCtx ctx = { .repo = repo };
    int r = cs_backend_list(repo->backend, "snapshots/", list_visit, &ctx);
    if (r < 0) {
        cs_snapshots_free(ctx.v, ctx.n);
        return r;
    }
    if (ctx.n)
        qsort(ctx.v, ctx.n, sizeof(*ctx.v), snapshot_cmp);
    *ret = ctx.v;
    *ret_n = ctx.n;
    return 0;
}

int cs_catalog_find(CsRepo *repo, const char *spec, CsSnapshot *ret)
{
    CsSnapshot *v;
    size_t n;
    int r = cs_catalog_list(repo, &v, &n);
    if (r < 0)
        return r;
    ssize_t found = -1;
    bool is_ambiguous = false;
    size_t spec_len = strlen(spec);
    if (strcmp(spec, "latest") == 0 && n > 0)
        found = (ssize_t)n - 1;
    for (size_t i = 0; found < 0 && i < n; i++)
        if (strcmp(v[i].id, spec) == 0)
            found = (ssize_t)i;
    for (size_t i = n; found < 0 && i > 0; i--)
        if (strcmp(v[i - 1].name, spec) == 0)
            found = (ssize_t)i - 1;
    if (found < 0 && spec_len >= 4) {
        for (size_t i = 0; i < n; i++)
            if (strncmp(v[i].id, spec, spec_len) == 0) {
                is_ambiguous = found >= 0;
                found = (ssize_t)i;
            }
    }
    if (is_ambiguous)
        r = -ENOTUNIQ;
    else if (found < 0)
        r = -ENOENT;
    else {
        *ret = v[found];
        v[found] = (CsSnapshot){ 0 };
    }
    cs_snapshots_free(v, n);
    return r;
}

int cs_catalog_find_or_log(CsRepo *repo, const char *spec, CsSnapshot *ret)
{
    int r = cs_catalog_find(repo, spec, ret);
    if (r == -ENOENT)
        return log_error_errno(r, "no snapshot \"%s\"", spec);
    if (r == -ENOTUNIQ)
        return log_error_errno(-EINVAL, "\"%s\" matches more than one snapshot; give more of its id",
                               spec);
    if (r < 0)
        return log_error_errno(r, "could not read the snapshot list: %m");
    return 0;
}

int cs_catalog_delete(CsRepo *repo, const char *id)
{
    char name[64];
    if (strlen(id) != 2 * CS_SNAP_ID_SIZE)
        return -EINVAL;
    snapshot_object_name(id, name);
    return cs_backend_delete(repo->backend, name);
}
