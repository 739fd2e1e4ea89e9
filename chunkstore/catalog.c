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

#define SNAPSHOT_MAX    (64u << 20)
#define SNAPSHOT_PREFIX "snapshots/"


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
    snprintf(out, 64, SNAPSHOT_PREFIX "%s", id);
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
        return log_debug_errno(r, "snapshot object \"%s\" does not open: %m", name);
    if ((r = snapshot_from_json((const char *)plain.data, ret)) < 0)
        return log_debug_errno(r, "snapshot object \"%s\" cannot be parsed: %m", name);
    /* Only a holder of the key can seal a record under another id, but then "the full id
     * finds exactly its own record" would not hold. */
    if (strcmp(ret->id, name + strlen(SNAPSHOT_PREFIX)) != 0) {
        log_debug("snapshot object \"%s\" holds snapshot %s", name, ret->id);
        cs_snapshot_clear(ret);
        return -EBADMSG;
    }
    return 0;
}

typedef struct ListCtx {
    CsRepo *repo;
    CsCatalog cat;
    size_t snaps_cap, problems_cap;
} ListCtx;

static int problem_add(ListCtx *ctx, const char *name, int error)
{
    if (GROW_ARRAY(ctx->cat.problems, ctx->problems_cap, ctx->cat.n_problems, 4) < 0)
        return -ENOMEM;
    CsCatalogProblem *p = &ctx->cat.problems[ctx->cat.n_problems];
    if (!(p->object = strdup(name)))
        return -ENOMEM;
    p->id = p->object + strlen(SNAPSHOT_PREFIX);
    p->error = error;
    ctx->cat.n_problems++;
    return 0;
}

static int list_visit(const char *name, uint64_t size, void *userdata)
{
    ListCtx *ctx = userdata;
    (void)size;
    if (GROW_ARRAY(ctx->cat.snaps, ctx->snaps_cap, ctx->cat.n_snaps, 16) < 0)
        return -ENOMEM;
    int r = snapshot_load(ctx->repo, name, &ctx->cat.snaps[ctx->cat.n_snaps]);
    if (r == -ENOENT)
        return 0; /* deleted while listing */
    if (r < 0)
        return problem_add(ctx, name, r); /* one bad record must not hide the others */
    ctx->cat.n_snaps++;
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

static int problem_cmp(const void *a, const void *b)
{
    return strcmp(((const CsCatalogProblem *)a)->object, ((const CsCatalogProblem *)b)->object);
}

void cs_catalog_clear(CsCatalog *c)
{
    cs_snapshots_free(c->snaps, c->n_snaps);
    for (size_t i = 0; c->problems && i < c->n_problems; i++)
        free(c->problems[i].object);
    free(c->problems);
    *c = (CsCatalog){ 0 };
}

int cs_catalog_load(CsRepo *repo, CsCatalog *ret)
{
    ListCtx ctx = { .repo = repo };
    int r = cs_backend_list(repo->backend, SNAPSHOT_PREFIX, list_visit, &ctx);
    if (r < 0) {
        cs_catalog_clear(&ctx.cat);
        return r;
    }
    if (ctx.cat.n_snaps)
        qsort(ctx.cat.snaps, ctx.cat.n_snaps, sizeof(*ctx.cat.snaps), snapshot_cmp);
    if (ctx.cat.n_problems)
        qsort(ctx.cat.problems, ctx.cat.n_problems, sizeof(*ctx.cat.problems), problem_cmp);
    *ret = ctx.cat;
    return 0;
}

bool cs_catalog_problem_is_damage(const CsCatalogProblem *p)
{
    return p->error == -EBADMSG;
}

const char *cs_catalog_problem_text(const CsCatalogProblem *p, char *buf, size_t n)
{
    if (cs_catalog_problem_is_damage(p))
        snprintf(buf, n, "is damaged");
    else if (p->error == -EPROTONOSUPPORT)
        snprintf(buf, n, "was written by a newer version of pitrfs");
    else
        snprintf(buf, n, "cannot be read: %s", strerror(-p->error));
    return buf;
}

int cs_catalog_problems_error(const CsCatalog *c)
{
    static const int by_precedence[] = { -EBADMSG, -EPROTONOSUPPORT };
    for (size_t k = 0; k < ARRAY_SIZE(by_precedence); k++)
        for (size_t i = 0; i < c->n_problems; i++)
            if (c->problems[i].error == by_precedence[k])
                return by_precedence[k];
    return c->n_problems ? c->problems[0].error : 0;
}

const char *cs_catalog_problems_hint(const CsCatalog *c)
{
    for (size_t i = 0; i < c->n_problems; i++)
        if (c->problems[i].error == -EACCES || c->problems[i].error == -EPERM)
            return "the repository is for its owner, root and the members of its group "
                   "(docs/OPERATIONS.md 8.3): run as one of them, or give the record back to "
                   "the owner; pitr-snap delete --force ID removes a record";
    return "the full id of a snapshot whose record reads still finds it; pitr-snap delete "
           "--force ID removes a record";
}

void cs_catalog_log_problems(const CsCatalog *c)
{
    for (size_t i = 0; i < c->n_problems; i++) {
        char text[128];
        log_error("snapshot record \"%s\" %s", c->problems[i].object,
                  cs_catalog_problem_text(&c->problems[i], text, sizeof(text)));
    }
}

int cs_catalog_list(CsRepo *repo, CsSnapshot **ret, size_t *ret_n)
{
    CsCatalog c;
    int r = cs_catalog_load(repo, &c);
    if (r < 0)
        return r;
    if (c.n_problems) {
        cs_catalog_log_problems(&c);
        r = cs_catalog_problems_error(&c);
        cs_catalog_clear(&c);
        return r;
    }
    *ret = c.snaps;
    *ret_n = c.n_snaps;
    c.snaps = NULL;
    cs_catalog_clear(&c);
    return 0;
}

int cs_catalog_resolve(const CsCatalog *c, const char *spec, size_t *ret_index,
                       const CsCatalogProblem **ret_problem)
{
    *ret_problem = NULL;
    for (size_t i = 0; i < c->n_snaps; i++)
        if (strcmp(c->snaps[i].id, spec) == 0) {
            *ret_index = i;
            return 0;
        }
    if (c->n_problems) {
        *ret_problem = &c->problems[0];
        for (size_t i = 0; i < c->n_problems; i++)
            if (strcmp(c->problems[i].id, spec) == 0)
                *ret_problem = &c->problems[i];
        return (*ret_problem)->error;
    }
    const CsSnapshot *v = c->snaps;
    size_t n = c->n_snaps;
    ssize_t found = -1;
    bool is_ambiguous = false;
    size_t spec_len = strlen(spec);
    if (strcmp(spec, "latest") == 0 && n > 0)
        found = (ssize_t)n - 1;
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
        return -ENOTUNIQ;
    if (found < 0)
        return -ENOENT;
    *ret_index = (size_t)found;
    return 0;
}

int cs_catalog_resolve_or_log(const CsCatalog *c, const char *spec, size_t *ret_index,
                              const CsCatalogProblem **ret_problem)
{
    int r = cs_catalog_resolve(c, spec, ret_index, ret_problem);
    const CsCatalogProblem *problem = *ret_problem;
    char text[128];
    if (r == 0)
        return 0;
    if (problem && strcmp(problem->id, spec) == 0)
        return log_error_errno(r, "snapshot record \"%s\" %s", problem->object,
                               cs_catalog_problem_text(problem, text, sizeof(text)));
    if (problem) {
        cs_catalog_log_problems(c);
        return log_error_errno(r,
                               "cannot tell which snapshot \"%s\" is while %zu snapshot record%s "
                               "cannot be read\nHINT: %s",
                               spec, c->n_problems, c->n_problems == 1 ? "" : "s",
                               cs_catalog_problems_hint(c));
    }
    if (r == -ENOENT)
        return log_error_errno(r, "no snapshot \"%s\"", spec);
    if (r == -ENOTUNIQ)
        return log_error_errno(-EINVAL,
                               "\"%s\" matches more than one snapshot; give more of its id", spec);
    return r;
}

static int find(CsRepo *repo, const char *spec, bool log, CsSnapshot *ret)
{
    CsCatalog c;
    int r = cs_catalog_load(repo, &c);
    if (r < 0)
        return log ? log_error_errno(r, "could not read the snapshot list: %m") : r;
    size_t i;
    const CsCatalogProblem *problem;
    r = log ? cs_catalog_resolve_or_log(&c, spec, &i, &problem)
            : cs_catalog_resolve(&c, spec, &i, &problem);
    if (r == 0) {
        *ret = c.snaps[i];
        c.snaps[i] = (CsSnapshot){ 0 };
    }
    cs_catalog_clear(&c);
    return r;
}

int cs_catalog_find(CsRepo *repo, const char *spec, CsSnapshot *ret)
{
    return find(repo, spec, false, ret);
}

int cs_catalog_find_or_log(CsRepo *repo, const char *spec, CsSnapshot *ret)
{
    return find(repo, spec, true, ret);
}

int cs_catalog_delete(CsRepo *repo, const char *id)
{
    char name[64];
    if (strlen(id) != 2 * CS_SNAP_ID_SIZE)
        return -EINVAL;
    snapshot_object_name(id, name);
    return cs_backend_delete(repo->backend, name);
}
