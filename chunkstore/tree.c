#include "chunkstore/tree.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <xxhash.h>

#include "chunkstore/files-cache.h"
#include "chunkstore/format.h"
#include "common/endian.h"
#include "common/fs-util.h"
#include "common/log.h"
#include "common/macro.h"
#include "common/out-buf.h"

#define DIR_OBJECT_MAX (1u << 30)

void cs_xattr_list_clear(CsXattrList *l)
{
    for (uint32_t i = 0; l->v && i < l->n; i++) {
        free(l->v[i].name);
        free(l->v[i].value);
    }
    free(l->v);
    *l = (CsXattrList){ 0 };
}

int cs_xattr_list_copy(const CsXattrList *src, CsXattrList *ret)
{
    *ret = (CsXattrList){ 0 };
    if (!src->n)
        return 0;
    if (!(ret->v = calloc(src->n, sizeof(*ret->v))))
        return -ENOMEM;
    for (uint32_t i = 0; i < src->n; i++) {
        const CsXattr *x = &src->v[i];
        ret->n = i + 1;
        ret->v[i].name = strdup(x->name);
        ret->v[i].value = malloc(x->size ? x->size : 1);
        if (!ret->v[i].name || !ret->v[i].value) {
            cs_xattr_list_clear(ret);
            return -ENOMEM;
        }
        if (x->size)
            memcpy(ret->v[i].value, x->value, x->size);
        ret->v[i].size = x->size;
    }
    return 0;
}

static int xattr_name_cmp(const void *key, const void *elem)
{
    return strcmp(key, ((const CsXattr *)elem)->name);
}

const CsXattr *cs_xattr_find(const CsXattrList *l, const char *name)
{
    return l->n ? bsearch(name, l->v, l->n, sizeof(*l->v), xattr_name_cmp) : NULL;
}

static void entry_clear(CsDirEntry *e)
{
    free(e->name);
    free(e->target);
    cs_content_ref_free(&e->content);
    cs_xattr_list_clear(&e->xattrs);
    free(e->holes);
    *e = (CsDirEntry){ 0 };
}

void cs_dir_entry_clear(CsDirEntry *e)
{
    entry_clear(e);
}

void cs_dir_entries_free(CsDirEntry *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        entry_clear(&v[i]);
    free(v);
}

int cs_dir_entry_copy(const CsDirEntry *src, CsDirEntry *ret)
{
    CsDirEntry e = *src;
    e.name = e.target = NULL;
    e.content = (CsContentRef){ 0 };
    e.xattrs = (CsXattrList){ 0 };
    e.holes = NULL;
    e.n_holes = 0;
    int r = (e.name = strdup(src->name)) ? 0 : -ENOMEM;
    if (r == 0 && src->target && !(e.target = strdup(src->target)))
        r = -ENOMEM;
    if (r == 0 && src->content.count)
        r = cs_content_ref_copy(&src->content, &e.content);
    else
        e.content = (CsContentRef){ .size = src->content.size,
                                    .level = src->content.level,
                                    .has_slices = src->content.has_slices };
    if (r == 0)
        r = cs_xattr_list_copy(&src->xattrs, &e.xattrs);
    if (r == 0 && src->n_holes) {
        if ((e.holes = malloc(src->n_holes * sizeof(*e.holes)))) {
            memcpy(e.holes, src->holes, src->n_holes * sizeof(*e.holes));
            e.n_holes = src->n_holes;
        } else
            r = -ENOMEM;
    }
    if (r < 0) {
        entry_clear(&e);
        return r;
    }
    *ret = e;
    return 0;
}

uint64_t cs_entry_data_bytes(const CsDirEntry *e)
{
    uint64_t holes = 0;
    for (uint32_t i = 0; i < e->n_holes; i++)
        holes += e->holes[i].length;
    return e->content.size - MIN(holes, e->content.size);
}

int64_t cs_entry_seek(const CsDirEntry *e, uint64_t off, bool want_hole)
{
    uint64_t size = e->content.size;
    if (off >= size || off > INT64_MAX)
        return -ENXIO;
    /* The first hole that ends after off; holes are sorted, disjoint and never adjacent. */
    uint32_t lo = 0, hi = e->n_holes;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (e->holes[mid].offset + e->holes[mid].length <= off)
            lo = mid + 1;
        else
            hi = mid;
    }
    const CsExtent *h = lo < e->n_holes ? &e->holes[lo] : NULL;
    bool is_in_hole = h && h->offset <= off;
    if (want_hole)
        return (int64_t)(is_in_hole ? off : h ? h->offset : size);
    if (!is_in_hole)
        return (int64_t)off;
    uint64_t end = h->offset + h->length;
    return end >= size ? -ENXIO : (int64_t)end;
}

/* ---- the directory object codec ---- */

static bool entry_has_records(const CsDirEntry *e)
{
    return e->link_id || e->xattrs.n || e->n_holes;
}

static int record_header(Buf *out, uint8_t kind, size_t len)
{
    if (len > UINT32_MAX)
        return -EFBIG;
    uint8_t *p = buf_extend(out, CS_DIR_RECORD_HEADER_SIZE);
    if (!p)
        return -ENOMEM;
    p[0] = kind;
    put_le32(p + 1, (uint32_t)len);
    return 0;
}

static int encode_xattrs(const CsXattrList *l, Buf *out)
{
    int r;
    for (uint32_t i = 0; i < l->n; i++) {
        const CsXattr *x = &l->v[i];
        size_t name_len = strlen(x->name);
        if (name_len == 0 || name_len > CS_XATTR_NAME_MAX || x->size > CS_XATTR_VALUE_MAX ||
            (i > 0 && strcmp(l->v[i - 1].name, x->name) >= 0))
            return -EINVAL;
        if ((r = record_header(out, CS_DIR_RECORD_XATTR, 1 + name_len + x->size)) < 0)
            return r;
        uint8_t *p = buf_extend(out, 1 + name_len + x->size);
        if (!p)
            return -ENOMEM;
        p[0] = (uint8_t)name_len;
        memcpy(p + 1, x->name, name_len);
        if (x->size)
            memcpy(p + 1 + name_len, x->value, x->size);
    }
    return 0;
}

static bool holes_are_valid(const CsExtent *v, uint32_t n, uint64_t size)
{
    uint64_t end = 0;
    for (uint32_t i = 0; i < n; i++) {
        /* Never adjacent: two holes in a row are one hole, and seeking relies on that. */
        if (v[i].length == 0 || (i > 0 && v[i].offset <= end) || v[i].offset > size ||
            v[i].length > size - v[i].offset)
            return false;
        end = v[i].offset + v[i].length;
    }
    return true;
}

static int encode_records(const CsDirEntry *e, Buf *out)
{
    size_t at = out->size;
    int r = buf_append_le32(out, 0);
    if (r == 0 && e->link_id) {
        if (e->type == CS_ENTRY_DIR || e->nlink < 2)
            return -EINVAL;
        if ((r = record_header(out, CS_DIR_RECORD_LINK, CS_DIR_LINK_SIZE)) == 0 &&
            (r = buf_append_le64(out, e->link_id)) == 0)
            r = buf_append_le32(out, e->nlink);
    }
    if (r == 0)
        r = encode_xattrs(&e->xattrs, out);
    if (r == 0 && e->n_holes) {
        if (e->type != CS_ENTRY_FILE || !holes_are_valid(e->holes, e->n_holes, e->content.size))
            return -EINVAL;
        r = record_header(out, CS_DIR_RECORD_HOLES, (size_t)e->n_holes * CS_DIR_HOLE_SIZE);
        for (uint32_t i = 0; r == 0 && i < e->n_holes; i++)
            if ((r = buf_append_le64(out, e->holes[i].offset)) == 0)
                r = buf_append_le64(out, e->holes[i].length);
    }
    if (r < 0)
        return r;
    size_t len = out->size - at - 4;
    if (len > UINT32_MAX)
        return -EFBIG;
    put_le32(out->data + at, (uint32_t)len);
    return 0;
}

int cs_dir_encode_own(const CsDirEntry *v, size_t n, const CsXattrList *own, Buf *out)
{
    bool has_records = own && own->n;
    for (size_t i = 0; i < n && !has_records; i++)
        has_records = entry_has_records(&v[i]);
    int r;
    if ((r = buf_append_le32(out, has_records ? CS_DIR_MAGIC_RECORDS : CS_DIR_MAGIC)) < 0 ||
        (r = buf_append_le32(out, (uint32_t)n)) < 0)
        return r;
    if (has_records) {
        size_t at = out->size;
        if ((r = buf_append_le32(out, 0)) < 0 ||
            (own && (r = encode_xattrs(own, out)) < 0))
            return r;
        if (out->size - at - 4 > UINT32_MAX)
            return -EFBIG;
        put_le32(out->data + at, (uint32_t)(out->size - at - 4));
    }
    for (size_t i = 0; i < n; i++) {
        const CsDirEntry *e = &v[i];
        size_t name_len = strlen(e->name);
        if (name_len > UINT16_MAX)
            return -ENAMETOOLONG;
        uint8_t *p = buf_extend(out, 44);
        if (!p)
            return -ENOMEM;
        p[0] = e->type;
        p[1] = e->flags;
        put_le16(p + 2, (uint16_t)name_len);
        put_le32(p + 4, e->mode);
        put_le32(p + 8, e->uid);
        put_le32(p + 12, e->gid);
        put_le64(p + 16, (uint64_t)e->mtime_sec);
        put_le32(p + 24, e->mtime_nsec);
        put_le64(p + 28, e->size);
        put_le64(p + 36, e->rdev);
        if ((r = buf_append(out, e->name, name_len)) < 0)
            return r;
        if (e->type == CS_ENTRY_FILE || e->type == CS_ENTRY_DIR) {
            if ((r = cs_content_ref_encode(&e->content, out)) < 0)
                return r;
        } else if (e->type == CS_ENTRY_SYMLINK) {
            size_t tl = strlen(e->target);
            if (tl > UINT16_MAX)
                return -ENAMETOOLONG;
            if ((r = buf_append_le16(out, (uint16_t)tl)) < 0 ||
                (r = buf_append(out, e->target, tl)) < 0)
                return r;
        }
        if (has_records && (r = encode_records(e, out)) < 0)
            return r;
    }
    return 0;
}

int cs_dir_encode(const CsDirEntry *v, size_t n, Buf *out)
{
    return cs_dir_encode_own(v, n, NULL, out);
}

static int copy_string(Cursor *c, size_t len, char **ret)
{
    const uint8_t *p;
    int r = cursor_bytes(c, len, &p);
    if (r < 0)
        return r;
    if (memchr(p, 0, len))
        return -EBADMSG;
    char *s = strndup((const char *)p, len);
    if (!s)
        return -ENOMEM;
    *ret = s;
    return 0;
}

static int decode_xattr(const uint8_t *p, uint32_t len, CsXattrList *l)
{
    uint8_t name_len = len ? p[0] : 0;
    if (name_len == 0 || 1u + name_len > len || len - 1 - name_len > CS_XATTR_VALUE_MAX ||
        memchr(p + 1, 0, name_len))
        return -EBADMSG;
    CsXattr x = { .size = len - 1 - name_len };
    if (!(x.name = strndup((const char *)p + 1, name_len)))
        return -ENOMEM;
    /* Sorted and unique, as written: a lookup is a binary search, and nothing is set twice. */
    if (l->n && strcmp(l->v[l->n - 1].name, x.name) >= 0) {
        free(x.name);
        return -EBADMSG;
    }
    CsXattr *nv = realloc(l->v, (l->n + 1) * sizeof(*nv));
    if (nv)
        l->v = nv;
    if (!nv || !(x.value = malloc(x.size ? x.size : 1))) {
        free(x.name);
        return -ENOMEM;
    }
    if (x.size)
        memcpy(x.value, p + 1 + name_len, x.size);
    l->v[l->n++] = x;
    return 0;
}

static int decode_holes(const uint8_t *p, uint32_t len, CsDirEntry *e)
{
    if (e->type != CS_ENTRY_FILE || e->n_holes || len == 0 || len % CS_DIR_HOLE_SIZE)
        return -EBADMSG;
    uint32_t n = len / CS_DIR_HOLE_SIZE;
    if (!(e->holes = malloc(n * sizeof(*e->holes))))
        return -ENOMEM;
    for (uint32_t i = 0; i < n; i++)
        e->holes[i] = (CsExtent){ .offset = get_le64(p + i * CS_DIR_HOLE_SIZE),
                                  .length = get_le64(p + i * CS_DIR_HOLE_SIZE + 8) };
    e->n_holes = n;
    return holes_are_valid(e->holes, n, e->content.size) ? 0 : -EBADMSG;
}

/* The records of an entry (e) or of the directory itself (e NULL: attributes only). Kinds this
 * version does not know are skipped. */
static int decode_records(Cursor *c, CsDirEntry *e, CsXattrList *xattrs)
{
    uint32_t len;
    const uint8_t *p;
    int r;
    if ((r = cursor_le32(c, &len)) < 0 || (r = cursor_bytes(c, len, &p)) < 0)
        return -EBADMSG;
    Cursor rc = cursor_make(p, len);
    while (rc.left) {
        uint8_t kind;
        uint32_t rlen;
        const uint8_t *q;
        if (cursor_u8(&rc, &kind) < 0 || cursor_le32(&rc, &rlen) < 0 ||
            cursor_bytes(&rc, rlen, &q) < 0)
            return -EBADMSG;
        switch (kind) {
        case CS_DIR_RECORD_LINK:
            if (!e || e->type == CS_ENTRY_DIR || e->link_id || rlen != CS_DIR_LINK_SIZE)
                return -EBADMSG;
            e->link_id = get_le64(q);
            e->nlink = get_le32(q + 8);
            if (!e->link_id || e->nlink < 2)
                return -EBADMSG;
            break;
        case CS_DIR_RECORD_XATTR:
            if ((r = decode_xattr(q, rlen, xattrs)) < 0)
                return r;
            break;
        case CS_DIR_RECORD_HOLES:
            if (!e)
                return -EBADMSG;
            if ((r = decode_holes(q, rlen, e)) < 0)
                return r;
            break;
        default: break;
        }
    }
    return 0;
}

int cs_dir_decode_own(const void *p, size_t n, CsDirEntry **ret, size_t *ret_n,
                      CsXattrList *own)
{
    Cursor c = cursor_make(p, n);
    uint32_t magic, count;
    CsXattrList own_attrs = { 0 };
    int r;
    if ((r = cursor_le32(&c, &magic)) < 0 || (r = cursor_le32(&c, &count)) < 0)
        return -EBADMSG;
    bool has_records = magic == CS_DIR_MAGIC_RECORDS;
    if ((magic != CS_DIR_MAGIC && !has_records) || count > n / 44)
        return -EBADMSG;
    if (has_records && (r = decode_records(&c, NULL, &own_attrs)) < 0) {
        cs_xattr_list_clear(&own_attrs);
        return r == -ENOMEM ? r : -EBADMSG;
    }
    CsDirEntry *v = calloc(count ? count : 1, sizeof(*v));
    if (!v) {
        cs_xattr_list_clear(&own_attrs);
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < count; i++) {
        CsDirEntry *e = &v[i];
        const uint8_t *h;
        if ((r = cursor_bytes(&c, 44, &h)) < 0)
            goto fail;
        e->type = h[0];
        e->flags = h[1];
        uint16_t name_len = get_le16(h + 2);
        e->mode = get_le32(h + 4);
        e->uid = get_le32(h + 8);
        e->gid = get_le32(h + 12);
        e->mtime_sec = (int64_t)get_le64(h + 16);
        e->mtime_nsec = get_le32(h + 24);
        e->size = get_le64(h + 28);
        e->rdev = get_le64(h + 36);
        if (name_len == 0 || (r = copy_string(&c, name_len, &e->name)) < 0 ||
            strchr(e->name, '/') || strcmp(e->name, ".") == 0 || strcmp(e->name, "..") == 0) {
            r = r < 0 ? r : -EBADMSG; /* a stored name must never escape its directory */
            goto fail;
        }
        if (e->type == CS_ENTRY_FILE || e->type == CS_ENTRY_DIR) {
            if ((r = cs_content_ref_decode(&c, &e->content)) < 0)
                goto fail;
        } else if (e->type == CS_ENTRY_SYMLINK) {
            uint16_t tl;
            if ((r = cursor_le16(&c, &tl)) < 0 || (r = copy_string(&c, tl, &e->target)) < 0)
                goto fail;
        } else if (e->type != CS_ENTRY_SPECIAL) {
            r = -EBADMSG;
            goto fail;
        }
        if (has_records && (r = decode_records(&c, e, &e->xattrs)) < 0)
            goto fail;
    }
    if (c.left) {
        r = -EBADMSG;
        goto fail;
    }
    *ret = v;
    *ret_n = count;
    if (own)
        *own = own_attrs;
    else
        cs_xattr_list_clear(&own_attrs);
    return 0;
fail:
    cs_dir_entries_free(v, count);
    cs_xattr_list_clear(&own_attrs);
    return r == -ENOMEM ? r : -EBADMSG;
}

int cs_dir_decode(const void *p, size_t n, CsDirEntry **ret, size_t *ret_n)
{
    return cs_dir_decode_own(p, n, ret, ret_n, NULL);
}

int cs_dir_load_own(CsReader *rd, const CsContentRef *ref, CsDirEntry **ret, size_t *ret_n,
                    CsXattrList *own)
{
    _cleanup_(buf_free) Buf data = BUF_INIT;
    int r = cs_reader_read_all(rd, ref, DIR_OBJECT_MAX, &data);
    if (r < 0)
        return r;
    r = cs_dir_decode_own(data.data, data.size, ret, ret_n, own);
    if (r == -EBADMSG)
        log_error("directory object is damaged");
    return r;
}

int cs_dir_load(CsReader *rd, const CsContentRef *ref, CsDirEntry **ret, size_t *ret_n)
{
    return cs_dir_load_own(rd, ref, ret, ret_n, NULL);
}

/* The entries of a directory's previous version (sorted by name; none when it had none). */
typedef struct PrevDir {
    CsDirEntry *v;
    size_t n;
} PrevDir;

/* Several entries of the tree that are one inode (hard links). Every entry of a group carries
 * the whole content reference, so that any one of them reads without the others; the inode's
 * content is read once, by the first entry the walk meets. */
typedef struct LinkGroup {
    uint64_t dev, ino;
    uint32_t count; /* entries of the tree that are this inode, as the census found them */
    uint64_t id;
    CsDirEntry *first; /* the first regular file of the group while its content is pending */
    bool has_content;
    uint8_t flags;
    CsContentRef content;
    CsExtent *holes;
    uint32_t n_holes;
} LinkGroup;

typedef struct StoreCtx {
    CsWriter *w;
    const CsTreeParams *params;
    CsReader *prev_reader; /* reads the previous version; NULL: there is none */
    bool can_delta;        /* the previous version's pages may be delta bases */
    bool can_keep;         /* the format keeps links, attributes and holes (version 5) */
    CsFilesCache *files;   /* NULL: not used, or given up after an error */
    CsTreeStats *stats;
    char *path; /* absolute path buffer, grown as needed */
    size_t root_len;
    /* Hard links: every inode with more than one entry in the tree, sorted by (dev, ino). The
     * census that finds them walks the tree once more, only when the walk meets a link. */
    bool has_census;
    LinkGroup *links;
    size_t n_links;
    uint64_t link_seed;
    /* An older repository: what its format could not keep, for one warning at the end. */
    uint64_t lost_links, lost_xattrs, lost_holes;
} StoreCtx;

static int entry_cmp(const void *a, const void *b)
{
    return strcmp(((const CsDirEntry *)a)->name, ((const CsDirEntry *)b)->name);
}

static int store_dir(StoreCtx *ctx, int dir_fd, const PrevDir *prev, const CsXattrList *own,
                     CsContentRef *ret);

static const CsDirEntry *prev_find(const PrevDir *prev, const char *name, uint8_t type)
{
    CsDirEntry key = { .name = (char *)(uintptr_t)name };
    const CsDirEntry *e = prev->n ? bsearch(&key, prev->v, prev->n, sizeof(*prev->v), entry_cmp)
                                  : NULL;
    return e && e->type == type ? e : NULL;
}

/* The previous version of a directory. Losing it (damaged) only loses the deltas below it. */
static void prev_load(StoreCtx *ctx, const CsDirEntry *e, PrevDir *ret)
{
    *ret = (PrevDir){ 0 };
    if (e && cs_dir_load(ctx->prev_reader, &e->content, &ret->v, &ret->n) < 0) {
        log_warning("the previous version of \"%s\" cannot be read: its files are stored whole",
                    ctx->path);
        *ret = (PrevDir){ 0 };
    }
    /* Between uses the reader holds no index snapshot (which would keep the packs published
     * meanwhile from reusing index pages). */
    if (ctx->prev_reader)
        cs_reader_pause(ctx->prev_reader);
}

/* The chunk list of a page file's previous version, for the writer's deltas. */
static CsContentRef *prev_pages(StoreCtx *ctx, const CsDirEntry *e, CsContentRef *flat)
{
    if (!e || !(e->flags & CS_ENTRY_FLAG_PAGES))
        return NULL;
    int r = cs_reader_flatten(ctx->prev_reader, &e->content, flat);
    cs_reader_pause(ctx->prev_reader);
    return r < 0 ? NULL : flat;
}

typedef struct PageObserver {
    const CsTreeParams *params;
    const char *relpath;
} PageObserver;

static void page_observe(const void *p, size_t n, uint64_t offset, void *userdata)
{
    PageObserver *po = userdata;
    po->params->observe_page_file(po->relpath, p, n, offset, po->params->userdata);
}

/* Removed between readdir and reading it: normal in a live data directory, so a warning. */
static int entry_vanished(StoreCtx *ctx, const char *name, bool *skip)
{
    log_warning("\"%s/%s\" vanished while being stored, skipped", ctx->path, name);
    *skip = true;
    return 0;
}

/* "a/b/name" for an entry of the directory being stored (malloc'd; NULL: out of memory). */
static char *entry_relpath(const StoreCtx *ctx, const char *name)
{
    const char *rel = ctx->path + ctx->root_len + (ctx->path[ctx->root_len] == '/');
    char *relpath;
    return asprintf(&relpath, "%s%s%s", rel, *rel ? "/" : "", name) < 0 ? NULL : relpath;
}

/* The caller's hook, when it has one, may store the file its own way. */
static int store_file_by_hook(StoreCtx *ctx, const char *relpath, int dir_fd, int fd,
                              const struct stat *st, CsContentRef *ret, bool *handled)
{
    const CsTreeParams *p = ctx->params;
    *handled = false;
    if (!p || !p->store_file)
        return 0;
    int r = p->store_file(ctx->w, relpath, dir_fd, fd, st, ret, p->userdata);
    if (r < 0)
        return r;
    *handled = r > 0;
    return !*handled && lseek(fd, 0, SEEK_SET) < 0 ? -errno : 0;
}

/* The files cache is only an optimisation: when the index cannot take its records, the store
 * goes on without it. */
static void files_cache_failed(StoreCtx *ctx, int r)
{
    log_warning("the files cache could not be written (%s): every file will be read next time",
                strerror(-r));
    ctx->files = cs_files_cache_free(ctx->files);
}

/* The previous version's content of a file the files cache says is unchanged: 1, 0 when it
 * has to be read, or -errno. */
static int take_unchanged(StoreCtx *ctx, const CsDirEntry *was, const char *relpath,
                          const struct stat *st, bool is_pages, CsDirEntry *e)
{
    if (!ctx->files || !was || !(was->flags & CS_ENTRY_FLAG_PAGES) != !is_pages ||
        !cs_files_cache_unchanged(ctx->files, relpath, st, &was->content))
        return 0;
    int r = cs_content_ref_copy(&was->content, &e->content);
    if (r < 0)
        return r;
    /* The holes found when it was read; a file stored before holes were kept has none. */
    if (ctx->can_keep && was->n_holes) {
        if (!(e->holes = malloc(was->n_holes * sizeof(*e->holes))))
            return -ENOMEM;
        memcpy(e->holes, was->holes, was->n_holes * sizeof(*e->holes));
        e->n_holes = was->n_holes;
    }
    ctx->stats->files_cached++;
    ctx->stats->bytes_cached += was->content.size;
    return 1;
}

/* ---- extended attributes ---- */

static bool xattr_is_kept(const char *name)
{
    return strncmp(name, "user.", 5) == 0 || strncmp(name, "trusted.", 8) == 0 ||
           strncmp(name, "security.", 9) == 0 || strcmp(name, "system.posix_acl_access") == 0 ||
           strcmp(name, "system.posix_acl_default") == 0;
}

static int xattr_cmp(const void *a, const void *b)
{
    return strcmp(((const CsXattr *)a)->name, ((const CsXattr *)b)->name);
}

/* llistxattr into a buffer sized by asking first (the list may grow in between). */
static ssize_t list_xattrs(const char *path, char **ret)
{
    *ret = NULL;
    for (int tries = 0; tries < 8; tries++) {
        ssize_t len = llistxattr(path, NULL, 0);
        if (len <= 0)
            return len;
        char *names = malloc((size_t)len);
        if (!names)
            return errno = ENOMEM, -1;
        ssize_t got = llistxattr(path, names, (size_t)len);
        if (got >= 0) {
            *ret = names;
            return got;
        }
        free(names);
        if (errno != ERANGE)
            return -1;
    }
    return errno = ERANGE, -1;
}

/* One attribute's value (malloc'd): its size, or -1 with errno set. */
static ssize_t get_xattr(const char *path, const char *name, uint8_t **ret)
{
    *ret = NULL;
    for (int tries = 0; tries < 8; tries++) {
        ssize_t len = lgetxattr(path, name, NULL, 0);
        if (len < 0)
            return -1;
        uint8_t *value = malloc(len ? (size_t)len : 1);
        if (!value)
            return errno = ENOMEM, -1;
        ssize_t got = lgetxattr(path, name, value, (size_t)len);
        if (got >= 0) {
            *ret = value;
            return got;
        }
        free(value);
        if (errno != ERANGE)
            return -1;
    }
    return errno = ERANGE, -1;
}

/* The attributes of `path` (a symlink's own, never its target's) this format keeps. One that
 * cannot be read is a warning and is left out; only memory exhaustion fails. */
static int read_xattrs(const char *path, CsXattrList *ret)
{
    *ret = (CsXattrList){ 0 };
    _cleanup_free_ char *names = NULL;
    ssize_t len = list_xattrs(path, &names);
    if (len < 0) {
        if (errno == ENOMEM)
            return -ENOMEM;
        /* gone meanwhile (the walk says so), or a file system without attributes */
        if (errno != ENOENT && errno != ENOTSUP)
            log_warning_errno(-errno, "could not list the extended attributes of \"%s\": %m",
                              path);
        return 0;
    }
    for (const char *name = names; names && name < names + len; name += strlen(name) + 1) {
        if (!xattr_is_kept(name)) {
            log_debug("extended attribute \"%s\" of \"%s\" is not kept", name, path);
            continue;
        }
        uint8_t *value;
        ssize_t size = get_xattr(path, name, &value);
        if (size < 0 && errno == ENOMEM) {
            cs_xattr_list_clear(ret);
            return -ENOMEM;
        }
        if (size < 0) {
            if (errno != ENODATA) /* removed since it was listed */
                log_warning_errno(-errno, "could not read extended attribute \"%s\" of \"%s\", "
                                          "stored without it: %m", name, path);
            continue;
        }
        if (strlen(name) > CS_XATTR_NAME_MAX || (size_t)size > CS_XATTR_VALUE_MAX) {
            log_warning("extended attribute \"%s\" of \"%s\" is too large to be stored", name,
                        path);
            free(value);
            continue;
        }
        CsXattr *nv = realloc(ret->v, (ret->n + 1) * sizeof(*nv));
        char *copy = nv ? strdup(name) : NULL;
        if (nv)
            ret->v = nv;
        if (!copy) {
            free(value);
            cs_xattr_list_clear(ret);
            return -ENOMEM;
        }
        ret->v[ret->n++] = (CsXattr){ .name = copy, .value = value, .size = (uint32_t)size };
    }
    if (ret->n > 1)
        qsort(ret->v, ret->n, sizeof(*ret->v), xattr_cmp);
    return 0;
}

/* The attributes of the entry `name` of the directory being stored, into e (a newer format),
 * or counted as lost (an older one). */
static int store_xattrs(StoreCtx *ctx, const char *name, CsDirEntry *e)
{
    _cleanup_free_ char *path = NULL;
    if (asprintf(&path, "%s/%s", ctx->path, name) < 0)
        return -ENOMEM;
    if (!ctx->can_keep) {
        ctx->lost_xattrs += llistxattr(path, NULL, 0) > 0;
        return 0;
    }
    int r = read_xattrs(path, &e->xattrs);
    ctx->stats->xattrs += e->xattrs.n;
    return r;
}

/* ---- holes ---- */

/* The holes of an open regular file as the file system reports them (SEEK_HOLE), within its
 * size. A file system that cannot tell has none. The file offset is back at 0 after. */
static int find_holes(int fd, uint64_t size, CsExtent **ret, uint32_t *ret_n)
{
    CsExtent *v = NULL;
    size_t n = 0, cap = 0;
    uint64_t pos = 0;
    int r = 0;
    while (pos < size && n < UINT32_MAX / CS_DIR_HOLE_SIZE) {
        off_t hole = lseek(fd, (off_t)pos, SEEK_HOLE);
        if (hole < 0 || (uint64_t)hole >= size)
            break;
        off_t data = lseek(fd, hole, SEEK_DATA);
        uint64_t end = data < 0 ? size : MIN((uint64_t)data, size);
        if (end <= (uint64_t)hole)
            break;
        if (GROW_ARRAY(v, cap, n, 8) < 0) {
            r = -ENOMEM;
            break;
        }
        v[n++] = (CsExtent){ .offset = (uint64_t)hole, .length = end - (uint64_t)hole };
        pos = end;
    }
    if (r == 0 && lseek(fd, 0, SEEK_SET) < 0)
        r = -errno;
    if (r < 0) {
        free(v);
        return r;
    }
    *ret = v;
    *ret_n = (uint32_t)n;
    return 0;
}

/* Sees the bytes of a file with holes as they are read: a hole is only recorded when every
 * byte read there is zero, so a file written while it is stored never loses data to a hole
 * found before. Passes the bytes on to the caller's page observer. */
typedef struct HoleCheck {
    CsExtent *holes;
    bool *has_data;
    uint32_t n, next;
    uint64_t seen; /* bytes read */
    const CsReadObserver *chain;
} HoleCheck;

static void hole_check_observe(const void *p, size_t n, uint64_t offset, void *userdata)
{
    HoleCheck *hc = userdata;
    if (hc->chain)
        hc->chain->fn(p, n, offset, hc->chain->userdata);
    uint64_t end = offset + n;
    hc->seen = MAX(hc->seen, end);
    for (uint32_t i = hc->next; i < hc->n && hc->holes[i].offset < end; i++) {
        const CsExtent *h = &hc->holes[i];
        uint64_t a = MAX(h->offset, offset), b = MIN(h->offset + h->length, end);
        if (a < b && !hc->has_data[i] && !cs_chunk_is_zero((const uint8_t *)p + (a - offset), b - a))
            hc->has_data[i] = true;
        if (h->offset + h->length <= end && i == hc->next)
            hc->next = i + 1;
    }
}

/* The holes that held only zeros, inside what was read, into e. */
static void hole_check_finish(HoleCheck *hc, CsDirEntry *e)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < hc->n; i++) {
        CsExtent h = hc->holes[i];
        if (hc->has_data[i] || h.offset >= hc->seen)
            continue;
        h.length = MIN(h.length, hc->seen - h.offset);
        hc->holes[k++] = h;
    }
    free(hc->has_data);
    hc->has_data = NULL;
    if (k == 0) {
        free(hc->holes);
        hc->holes = NULL;
    }
    e->holes = hc->holes;
    e->n_holes = k;
    hc->holes = NULL;
}

/* ---- hard links ---- */

static int link_group_cmp(const void *a, const void *b)
{
    const LinkGroup *x = a, *y = b;
    if (x->dev != y->dev)
        return x->dev < y->dev ? -1 : 1;
    return x->ino < y->ino ? -1 : x->ino > y->ino;
}

typedef struct Census {
    LinkGroup *v; /* one per entry met, merged later */
    size_t n, cap;
} Census;

static bool census_keeps(const StoreCtx *ctx, const char *relpath, const struct stat *st)
{
    const CsTreeParams *p = ctx->params;
    return !S_ISSOCK(st->st_mode) && !(p && p->is_excluded && p->is_excluded(relpath, st, p->userdata));
}

/* Every non-directory with more than one link below dir_fd, as the store's walk will meet
 * them (same exclusions). Errors are left to the walk, which reports them. */
static int census_dir(const StoreCtx *ctx, int dir_fd, const char *rel, Census *c, int depth)
{
    char **names = NULL;
    size_t n_names = 0;
    if (depth > 4096 || read_dir_names(dir_fd, NULL, &names, &n_names) < 0)
        return 0;
    int r = 0;
    for (size_t i = 0; r == 0 && i < n_names; i++) {
        struct stat st;
        if (fstatat(dir_fd, names[i], &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        _cleanup_free_ char *relpath = NULL;
        if (asprintf(&relpath, "%s%s%s", rel, *rel ? "/" : "", names[i]) < 0) {
            r = -ENOMEM;
            break;
        }
        if (!census_keeps(ctx, relpath, &st))
            continue;
        if (S_ISDIR(st.st_mode)) {
            int fd = openat(dir_fd, names[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
            if (fd >= 0) {
                r = census_dir(ctx, fd, relpath, c, depth + 1);
                close(fd);
            }
        } else if (st.st_nlink > 1) {
            if (GROW_ARRAY(c->v, c->cap, c->n, 64) < 0)
                r = -ENOMEM;
            else
                c->v[c->n++] = (LinkGroup){ .dev = st.st_dev, .ino = st.st_ino, .count = 1 };
        }
    }
    strv_free(names, n_names);
    return r;
}

/* A link id that names the inode within this tree and differs between trees that may end up in
 * one snapshot (a data directory and its tablespaces; the nodes of a cluster), while a second
 * store of the same tree gives the same ids, so its unchanged directories deduplicate. */
static uint64_t link_id(const StoreCtx *ctx, const LinkGroup *g)
{
    uint64_t key[2] = { g->dev, g->ino };
    uint64_t id = XXH3_64bits_withSeed(key, sizeof(key), ctx->link_seed);
    return id ? id : 1;
}

static int census(StoreCtx *ctx)
{
    ctx->has_census = true;
    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    ctx->link_seed = XXH3_64bits(ctx->path, ctx->root_len) ^
                     XXH3_64bits_withSeed(host, strlen(host), 1);
    _cleanup_free_ char *root = strndup(ctx->path, ctx->root_len);
    if (!root)
        return -ENOMEM;
    int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    Census c = { 0 };
    int r = census_dir(ctx, fd, "", &c, 0);
    close(fd);
    if (r < 0) {
        free(c.v);
        return r;
    }
    if (c.n > 1)
        qsort(c.v, c.n, sizeof(*c.v), link_group_cmp);
    size_t k = 0;
    for (size_t i = 0; i < c.n; i++) {
        if (k > 0 && link_group_cmp(&c.v[k - 1], &c.v[i]) == 0)
            c.v[k - 1].count++;
        else
            c.v[k++] = c.v[i];
    }
    size_t kept = 0;
    for (size_t i = 0; i < k; i++)
        if (c.v[i].count > 1) {
            c.v[kept] = c.v[i];
            c.v[kept].id = link_id(ctx, &c.v[i]);
            kept++;
        }
    ctx->links = c.v;
    ctx->n_links = kept;
    log_debug("%zu inodes of \"%s\" have more than one entry", kept, root);
    return 0;
}

/* The group of an entry that has more than one link, or NULL when the tree holds only this
 * one of them (the others are outside it, excluded, or came after the census). */
static int link_find(StoreCtx *ctx, const struct stat *st, LinkGroup **ret)
{
    *ret = NULL;
    if (S_ISDIR(st->st_mode) || st->st_nlink < 2)
        return 0;
    if (!ctx->can_keep) {
        ctx->lost_links++;
        return 0;
    }
    int r = ctx->has_census ? 0 : census(ctx);
    if (r < 0)
        return r;
    LinkGroup key = { .dev = st->st_dev, .ino = st->st_ino };
    *ret = ctx->n_links ? bsearch(&key, ctx->links, ctx->n_links, sizeof(key), link_group_cmp)
                        : NULL;
    return 0;
}

/* Keep a copy of the group's content, from its first entry once that is resolved. */
static int link_capture(LinkGroup *g, const CsDirEntry *first)
{
    int r = cs_content_ref_copy(&first->content, &g->content);
    if (r == 0 && first->n_holes) {
        if (!(g->holes = malloc(first->n_holes * sizeof(*g->holes))))
            r = -ENOMEM;
        else {
            memcpy(g->holes, first->holes, first->n_holes * sizeof(*g->holes));
            g->n_holes = first->n_holes;
        }
    }
    if (r < 0) {
        cs_content_ref_free(&g->content);
        return r;
    }
    g->flags = first->flags;
    g->has_content = true;
    g->first = NULL;
    return 0;
}

/* A later entry of a group: the inode's content, as its first entry stored it. */
static int link_take_content(StoreCtx *ctx, LinkGroup *g, CsDirEntry *e)
{
    int r;
    if (!g->has_content) {
        /* The first entry's content is still in the pipeline. */
        if ((r = cs_writer_sync(ctx->w)) < 0 || (r = link_capture(g, g->first)) < 0)
            return r;
    }
    CsDirEntry src = { .content = g->content, .holes = g->holes, .n_holes = g->n_holes };
    if ((r = cs_content_ref_copy(&src.content, &e->content)) < 0)
        return r;
    if (g->n_holes) {
        if (!(e->holes = malloc(g->n_holes * sizeof(*e->holes))))
            return -ENOMEM;
        memcpy(e->holes, g->holes, g->n_holes * sizeof(*e->holes));
        e->n_holes = g->n_holes;
    }
    e->flags = g->flags;
    return 0;
}

static void links_free(StoreCtx *ctx)
{
    for (size_t i = 0; i < ctx->n_links; i++) {
        cs_content_ref_free(&ctx->links[i].content);
        free(ctx->links[i].holes);
    }
    free(ctx->links);
    ctx->links = NULL;
    ctx->n_links = 0;
}

/* Read and store a regular file's bytes (asynchronously: e->content is resolved by the next
 * sync), with its holes. */
static int store_file_content(StoreCtx *ctx, int dir_fd, const char *name, const char *relpath,
                              const struct stat *st, bool is_pages, const CsDirEntry *was,
                              CsDirEntry *e, bool *skip)
{
    int fd = openat(dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && errno == ENOENT)
        return entry_vanished(ctx, name, skip);
    if (fd < 0)
        return log_error_errno(-errno, "could not open \"%s/%s\": %m", ctx->path, name);
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    /* Fewer blocks than the size needs: there may be holes. */
    bool may_have_holes = (uint64_t)st->st_blocks * 512 < (uint64_t)st->st_size;
    HoleCheck hc = { 0 };
    int r = 0;
    if (may_have_holes && !ctx->can_keep)
        ctx->lost_holes++;
    else if (may_have_holes && (r = find_holes(fd, (uint64_t)st->st_size, &hc.holes, &hc.n)) == 0 &&
             hc.n && !(hc.has_data = calloc(hc.n, sizeof(*hc.has_data))))
        r = -ENOMEM;
    /* Asynchronous: the reference is filled in by the sync before the directory object is
     * written, so the pipeline stays full across the files of a directory. */
    PageObserver po = { .params = ctx->params, .relpath = relpath };
    CsReadObserver obs = { .fn = page_observe, .userdata = &po };
    const CsReadObserver *page_obs = is_pages && ctx->params->observe_page_file ? &obs : NULL;
    hc.chain = page_obs;
    CsReadObserver hole_obs = { .fn = hole_check_observe, .userdata = &hc };
    CsContentRef flat;
    CsPutOptions opt = {
        .observer = hc.n ? &hole_obs : page_obs,
        .previous = is_pages && ctx->can_delta ? prev_pages(ctx, was, &flat) : NULL,
    };
    bool handled = false;
    if (r == 0 && !is_pages)
        r = store_file_by_hook(ctx, relpath, dir_fd, fd, st, &e->content, &handled);
    if (r == 0 && !handled)
        r = cs_writer_put_file(ctx->w, fd, is_pages ? CS_CHUNKING_PAGES : CS_CHUNKING_CDC, &opt,
                               &e->content);
    else if (opt.previous)
        cs_content_ref_free(opt.previous);
    close(fd);
    /* The put read the whole file: the holes are known now. A file the hook stored keeps
     * none: its bytes were not seen here. */
    if (r == 0 && hc.n && !handled)
        hole_check_finish(&hc, e);
    free(hc.holes);
    free(hc.has_data);
    if (r < 0)
        return log_error_errno(r, "could not store \"%s/%s\": %m", ctx->path, name);
    ctx->stats->sparse_files += e->n_holes > 0;
    return 0;
}

/* *st is the entry's stat from before it was read. */
static int store_entry(StoreCtx *ctx, int dir_fd, const PrevDir *prev, const char *name,
                       CsDirEntry *e, struct stat *ret_st, bool *skip)
{
    struct stat st;
    int r;
    if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno == ENOENT)
            return entry_vanished(ctx, name, skip);
        return log_error_errno(-errno, "could not stat \"%s/%s\": %m", ctx->path, name);
    }
    _cleanup_free_ char *relpath = entry_relpath(ctx, name);
    if (!relpath)
        return -ENOMEM;
    if (ctx->params && ctx->params->is_excluded &&
        ctx->params->is_excluded(relpath, &st, ctx->params->userdata)) {
        *skip = true;
        return 0;
    }
    if (S_ISSOCK(st.st_mode)) {
        *skip = true;
        return 0;
    }
    *e = (CsDirEntry){ .mode = st.st_mode,
                       .uid = st.st_uid,
                       .gid = st.st_gid,
                       .mtime_sec = st.st_mtim.tv_sec,
                       .mtime_nsec = (uint32_t)st.st_mtim.tv_nsec };
    if (!(e->name = strdup(name)))
        return -ENOMEM;
    *ret_st = st;
    LinkGroup *group;
    if ((r = store_xattrs(ctx, name, e)) < 0 || (r = link_find(ctx, &st, &group)) < 0)
        return r;
    /* A later entry of an inode met before: its content is that entry's. */
    bool is_later_link = group && (group->has_content || group->first);
    if (group) {
        e->link_id = group->id;
        e->nlink = group->count;
        ctx->stats->hardlinks += is_later_link;
    }
    if (S_ISREG(st.st_mode)) {
        e->type = CS_ENTRY_FILE;
        if (is_later_link) {
            ctx->stats->files++;
            return link_take_content(ctx, group, e);
        }
        bool is_pages = ctx->params && ctx->params->is_page_file &&
                        ctx->params->is_page_file(relpath, &st, ctx->params->userdata);
        e->flags = is_pages ? CS_ENTRY_FLAG_PAGES : 0;
        const CsDirEntry *was = prev_find(prev, name, CS_ENTRY_FILE);
        if ((r = take_unchanged(ctx, was, relpath, &st, is_pages, e)) != 0) {
            ctx->stats->files += r > 0;
            ctx->stats->page_files += r > 0 && is_pages;
            ctx->stats->sparse_files += r > 0 && e->n_holes > 0;
            if (r > 0 && group && (r = link_capture(group, e)) < 0)
                return r;
            return r < 0 ? r : 0;
        }
        if ((r = store_file_content(ctx, dir_fd, name, relpath, &st, is_pages, was, e, skip)) < 0 ||
            *skip)
            return r;
        if (group)
            group->first = e; /* its content comes with the next sync */
        ctx->stats->files++;
        ctx->stats->page_files += is_pages;
    } else if (S_ISDIR(st.st_mode)) {
        e->type = CS_ENTRY_DIR;
        int fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0 && errno == ENOENT)
            return entry_vanished(ctx, name, skip);
        if (fd < 0)
            return log_error_errno(-errno, "could not open directory \"%s/%s\": %m", ctx->path,
                                   name);
        size_t old_len = strlen(ctx->path);
        char *np = realloc(ctx->path, old_len + strlen(name) + 2);
        if (!np) {
            close(fd);
            return -ENOMEM;
        }
        ctx->path = np;
        sprintf(ctx->path + old_len, "/%s", name);
        PrevDir child;
        prev_load(ctx, prev_find(prev, name, CS_ENTRY_DIR), &child);
        r = store_dir(ctx, fd, &child, NULL, &e->content);
        cs_dir_entries_free(child.v, child.n);
        ctx->path[old_len] = 0;
        close(fd);
        if (r < 0)
            return r;
        ctx->stats->dirs++;
    } else if (S_ISLNK(st.st_mode)) {
        e->type = CS_ENTRY_SYMLINK;
        char target[PATH_MAX + 1];
        ssize_t n = readlinkat(dir_fd, name, target, PATH_MAX);
        if (n < 0 && errno == ENOENT)
            return entry_vanished(ctx, name, skip);
        if (n < 0)
            return log_error_errno(-errno, "could not read link \"%s/%s\": %m", ctx->path, name);
        target[n] = 0;
        if (!(e->target = strdup(target)))
            return -ENOMEM;
        e->size = (uint64_t)n;
        ctx->stats->symlinks++;
    } else {
        e->type = CS_ENTRY_SPECIAL;
        e->rdev = st.st_rdev;
        ctx->stats->specials++;
    }
    if (group && !is_later_link && e->type != CS_ENTRY_FILE)
        group->has_content = true; /* nothing to wait for: later entries are links to it */
    return 0;
}

/* Store everything below the directory and return its entries, sorted by name. They are
 * stored in that order too, so a hook that looks at entries stored before (CsTreeParams) finds
 * "base" and "global" done when "pg_wal" comes. */
static int store_dir_entries(StoreCtx *ctx, int dir_fd, const PrevDir *prev, CsDirEntry **ret,
                             size_t *ret_n)
{
    char **names = NULL;
    size_t n_names = 0;
    int r = read_dir_names(dir_fd, NULL, &names, &n_names);
    if (r < 0)
        return log_error_errno(r, "could not read directory \"%s\": %m", ctx->path);
    /* Entries live at stable addresses: pending asynchronous puts write into them. */
    CsDirEntry **pv = calloc(n_names ? n_names : 1, sizeof(*pv));
    _cleanup_free_ struct stat *sts = calloc(n_names ? n_names : 1, sizeof(*sts));
    size_t n = 0;
    if (!pv || !sts)
        r = -ENOMEM;
    for (size_t i = 0; r == 0 && i < n_names; i++) {
        CsDirEntry *e = calloc(1, sizeof(*e));
        if (!e) {
            r = -ENOMEM;
            break;
        }
        bool skip = false;
        r = store_entry(ctx, dir_fd, prev, names[i], e, &sts[n], &skip);
        if (r == 0 && !skip)
            pv[n++] = e;
        else {
            entry_clear(e);
            free(e);
        }
    }
    strv_free(names, n_names);
    int q = cs_writer_sync(ctx->w);
    if (r == 0)
        r = q;
    /* The first entries of hard-link groups have their content now: later entries (in other
     * directories) take it from the group, as these entries are about to move. */
    for (size_t i = 0; r == 0 && i < n; i++) {
        LinkGroup *g = NULL;
        if (pv[i]->link_id && pv[i]->type == CS_ENTRY_FILE && (r = link_find(ctx, &sts[i], &g)) == 0 &&
            g && g->first == pv[i])
            r = link_capture(g, pv[i]);
    }
    CsDirEntry *v = calloc(n ? n : 1, sizeof(*v));
    if (!v && r == 0)
        r = -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (v)
            v[i] = *pv[i];
        else
            entry_clear(pv[i]);
        free(pv[i]);
    }
    free(pv);
    if (r < 0) {
        cs_dir_entries_free(v, v ? n : 0);
        return r;
    }
    const CsTreeParams *p = ctx->params;
    bool is_hooked = p && p->file_stored;
    for (size_t i = 0; r == 0 && i < n; i++)
        if (v[i].type == CS_ENTRY_FILE) {
            v[i].size = v[i].content.size; /* what was read, even if the file changed */
            ctx->stats->bytes += v[i].size;
            if (!is_hooked && !ctx->files)
                continue;
            _cleanup_free_ char *relpath = entry_relpath(ctx, v[i].name);
            if (!relpath) {
                r = -ENOMEM;
                break;
            }
            if (is_hooked)
                p->file_stored(relpath, &v[i], p->userdata);
            int fr = ctx->files ? cs_files_cache_remember(ctx->files, relpath, &sts[i],
                                                          &v[i].content)
                                : 0;
            if (fr < 0)
                files_cache_failed(ctx, fr);
        }
    if (r < 0) {
        cs_dir_entries_free(v, n);
        return r;
    }
    *ret = v; /* in name order already: stored in the order of read_dir_names */
    *ret_n = n;
    return 0;
}

static bool writer_can_keep(const CsWriter *w)
{
    return cs_writer_repo(w)->config.format_version >= CS_FORMAT_VERSION_TREES;
}

static int dir_store_own(CsWriter *w, CsDirEntry *v, size_t n, const CsXattrList *own,
                         CsContentRef *ret)
{
    qsort(v, n, sizeof(*v), entry_cmp);
    for (size_t i = 1; i < n; i++)
        if (strcmp(v[i - 1].name, v[i].name) == 0)
            return -EEXIST;
    /* An older repository is written as its version wrote it: readers of that version could
     * not read the records. */
    if (!writer_can_keep(w)) {
        own = NULL;
        for (size_t i = 0; i < n; i++) {
            v[i].link_id = 0;
            v[i].nlink = 0;
            cs_xattr_list_clear(&v[i].xattrs);
            free(v[i].holes);
            v[i].holes = NULL;
            v[i].n_holes = 0;
        }
    }
    _cleanup_(buf_free) Buf obj = BUF_INIT;
    int r = cs_dir_encode_own(v, n, own, &obj);
    return r < 0 ? r : cs_writer_put_metadata(w, obj.data, obj.size, ret);
}

int cs_dir_store(CsWriter *w, CsDirEntry *v, size_t n, CsContentRef *ret)
{
    return dir_store_own(w, v, n, NULL, ret);
}

static int store_dir(StoreCtx *ctx, int dir_fd, const PrevDir *prev, const CsXattrList *own,
                     CsContentRef *ret)
{
    CsDirEntry *v;
    size_t n;
    int r = store_dir_entries(ctx, dir_fd, prev, &v, &n);
    if (r < 0)
        return r;
    r = dir_store_own(ctx->w, v, n, own, ret);
    cs_dir_entries_free(v, n);
    return r;
}

int cs_tree_root_attr(const char *path, CsTreeRootAttr *ret)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return -errno;
    *ret = (CsTreeRootAttr){ .mode = st.st_mode,
                             .uid = st.st_uid,
                             .gid = st.st_gid,
                             .mtime_sec = st.st_mtim.tv_sec,
                             .mtime_nsec = (uint32_t)st.st_mtim.tv_nsec };
    return 0;
}

/* Once per store into an older repository: what its format could not keep. */
static void warn_lost(const StoreCtx *ctx)
{
    if (!ctx->lost_links && !ctx->lost_xattrs && !ctx->lost_holes)
        return;
    log_warning("repository format version %u keeps no hard links, extended attributes, ACLs or "
                "holes: %" PRIu64 " entries with hard links were stored as separate files, %" PRIu64
                " entries without their extended attributes, %" PRIu64
                " sparse files without their holes\nHINT: a repository made by \"init\" of this "
                "version (format %d) keeps them",
                cs_writer_repo(ctx->w)->config.format_version, ctx->lost_links, ctx->lost_xattrs,
                ctx->lost_holes, CS_FORMAT_VERSION_TREES);
}

static int tree_store(CsWriter *w, const char *path, const CsTreeParams *params,
                      CsTreeStats *stats, CsContentRef *ret, CsDirEntry **ret_v, size_t *ret_n)
{
    CsTreeStats local = { 0 };
    StoreCtx ctx = { .w = w, .params = params, .stats = stats ? stats : &local,
                     .can_keep = writer_can_keep(w) };
    ctx.path = realpath(path, NULL);
    if (!ctx.path)
        return log_error_errno(-errno, "could not open \"%s\": %m", path);
    ctx.root_len = strlen(ctx.path);
    /* The stored directory itself has no entry: its attributes go into its own object. */
    CsXattrList own = { 0 };
    int r = 0;
    if (ret && ctx.can_keep && (r = read_xattrs(ctx.path, &own)) == 0)
        ctx.stats->xattrs += own.n;
    else if (ret && !ctx.can_keep)
        ctx.lost_xattrs += llistxattr(ctx.path, NULL, 0) > 0;
    if (r < 0) {
        free(ctx.path);
        return r;
    }
    PrevDir prev = { 0 };
    ctx.can_delta = cs_writer_can_delta(w);
    if (params && params->use_files_cache) {
        int q = cs_files_cache_open(cs_writer_repo(w)->index, ctx.path, &ctx.files);
        if (q < 0)
            log_warning("the files cache cannot be used (%s): every file is read",
                        strerror(-q));
    }
    if (params && params->previous && (ctx.can_delta || ctx.files)) {
        if (cs_reader_new(cs_writer_repo(w), &ctx.prev_reader) == 0) {
            CsDirEntry root = { .type = CS_ENTRY_DIR, .content = *params->previous };
            prev_load(&ctx, &root, &prev);
        }
    }
    int fd = open(ctx.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    r = fd < 0 ? log_error_errno(-errno, "could not open directory \"%s\": %m", path)
        : ret  ? store_dir(&ctx, fd, &prev, &own, ret)
               : store_dir_entries(&ctx, fd, &prev, ret_v, ret_n);
    if (fd >= 0)
        close(fd);
    cs_xattr_list_clear(&own);
    links_free(&ctx);
    if (r == 0)
        warn_lost(&ctx);
    if (r == 0 && ctx.files) {
        int q = cs_files_cache_commit(ctx.files);
        if (q < 0)
            files_cache_failed(&ctx, q);
    }
    cs_files_cache_free(ctx.files);
    cs_dir_entries_free(prev.v, prev.n);
    cs_reader_free(ctx.prev_reader);
    free(ctx.path);
    return r;
}

int cs_tree_store(CsWriter *w, const char *path, const CsTreeParams *params, CsContentRef *ret,
                  CsTreeStats *stats)
{
    return tree_store(w, path, params, stats, ret, NULL, NULL);
}

int cs_tree_store_entries(CsWriter *w, const char *path, const CsTreeParams *params,
                          CsDirEntry **ret, size_t *ret_n, CsTreeStats *stats)
{
    return tree_store(w, path, params, stats, NULL, ret, ret_n);
}

/* A regular file to write, handed to a restore worker. */
/* A large file restored by several workers at once, each writing a range of its chunks. The
 * walker creates and sizes the file; the range that finishes last closes it and sets its
 * metadata. */
typedef struct SplitFile {
    int fd;
    int dir_fd; /* owned */
    char *path;
    CsDirEntry e;
    CsContentRef flat;     /* level-0 chunk list */
    unsigned ranges_left;  /* protected by RestoreCtx.lock */
    int error;             /* protected by RestoreCtx.lock: first failure of a range */
} SplitFile;

/* Files at least this large are split; ranges hold about RESTORE_RANGE bytes of chunks. */
#define RESTORE_SPLIT_MIN (64ull << 20)
#define RESTORE_RANGE     (16ull << 20)

typedef struct FileJob {
    int dir_fd; /* owned; -1 for a range of a split file */
    char *path; /* for messages */
    CsDirEntry e;
    SplitFile *split; /* set for a range: chunks [first, end) written from `offset` on */
    size_t first, end;
    uint64_t offset;
    uint64_t written;  /* result: bytes written */
    bool is_changed;   /* result: content or size had to change */
    struct FileJob *next;
} FileJob;

/* A directory whose mode and times are set after everything inside it is written. */
typedef struct DirMeta {
    int parent_fd; /* owned */
    char *path;    /* for messages */
    CsDirEntry e;
} DirMeta;

/* Link id -> the path the group's first entry was restored at (open addressing; ids are never
 * 0, which marks a free slot). */
typedef struct LinkMap {
    uint64_t *ids;
    char **paths;
    size_t n, cap;
} LinkMap;

/* A hard link made once every file is written. */
typedef struct DeferredLink {
    const char *to;   /* in the LinkMap */
    char *path;
} DeferredLink;

#define RESTORE_QUEUE_MAX 64

typedef struct RestoreCtx {
    CsReader *rd; /* the walker's reader */
    CsRepo *repo;
    const CsRestoreParams *params;
    CsTreeStats *stats;
    bool do_chown;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    FileJob *head, *tail; /* protected by lock */
    unsigned queued;      /* protected by lock */
    bool is_closed;       /* protected by lock: no more jobs */
    int error;            /* protected by lock: first failure */
    uint64_t files, bytes; /* protected by lock */
    uint64_t bytes_written, files_unchanged; /* protected by lock */

    DirMeta *dirs; /* walker only */
    size_t n_dirs, cap_dirs;
    LinkMap links;          /* walker only */
    DeferredLink *deferred; /* walker only */
    size_t n_deferred, cap_deferred;
    CsXattrList root_own;   /* the stored directory's own attributes, for the target */

    bool can_set_privileged; /* trusted.* and security.* need CAP_SYS_ADMIN: root */
    uint64_t xattrs_set, xattrs_failed, xattrs_skipped; /* atomic */
    char *first_skipped; /* lock: the first file whose trusted.* or security.* was skipped */
} RestoreCtx;

static uint64_t link_slot(const LinkMap *m, uint64_t id)
{
    return (id ^ (id >> 29)) & (m->cap - 1);
}

static const char *link_map_find(const LinkMap *m, uint64_t id)
{
    for (size_t i = m->cap ? link_slot(m, id) : 0; m->cap && m->ids[i]; i = (i + 1) & (m->cap - 1))
        if (m->ids[i] == id)
            return m->paths[i];
    return NULL;
}

static int link_map_add(LinkMap *m, uint64_t id, const char *path)
{
    if (2 * (m->n + 1) > m->cap) {
        LinkMap bigger = { .cap = m->cap ? 2 * m->cap : 64, .n = m->n };
        bigger.ids = calloc(bigger.cap, sizeof(*bigger.ids));
        bigger.paths = calloc(bigger.cap, sizeof(*bigger.paths));
        if (!bigger.ids || !bigger.paths) {
            free(bigger.ids);
            free(bigger.paths);
            return -ENOMEM;
        }
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->ids[i])
                continue;
            size_t k = link_slot(&bigger, m->ids[i]);
            while (bigger.ids[k])
                k = (k + 1) & (bigger.cap - 1);
            bigger.ids[k] = m->ids[i];
            bigger.paths[k] = m->paths[i];
        }
        free(m->ids);
        free(m->paths);
        *m = bigger;
    }
    char *copy = strdup(path);
    if (!copy)
        return -ENOMEM;
    size_t k = link_slot(m, id);
    while (m->ids[k])
        k = (k + 1) & (m->cap - 1);
    m->ids[k] = id;
    m->paths[k] = copy;
    m->n++;
    return 0;
}

static void link_map_free(LinkMap *m)
{
    for (size_t i = 0; i < m->cap; i++)
        free(m->paths[i]);
    free(m->ids);
    free(m->paths);
    *m = (LinkMap){ 0 };
}

static bool xattr_is_privileged(const char *name)
{
    return strncmp(name, "trusted.", 8) == 0 || strncmp(name, "security.", 9) == 0;
}

/* Delta: attributes the target has and the stored entry does not are removed (security.*
 * stays: the system sets labels of its own on every file it creates). */
static void remove_extra_xattrs(const char *proc_path, const CsDirEntry *e, const char *path)
{
    _cleanup_free_ char *names = NULL;
    ssize_t len = list_xattrs(proc_path, &names);
    for (const char *name = names; len > 0 && name < names + len; name += strlen(name) + 1)
        if (xattr_is_kept(name) && strncmp(name, "security.", 9) != 0 &&
            !cs_xattr_find(&e->xattrs, name) && lremovexattr(proc_path, name) < 0 &&
            errno != ENODATA)
            log_warning_errno(-errno, "could not remove extended attribute \"%s\" of \"%s\": %m",
                              name, path);
}

/* Set the stored attributes and ACLs of the entry `name` of dir_fd. Never fails the restore: an
 * attribute that cannot be set is a warning naming the file. */
static void restore_xattrs(RestoreCtx *ctx, int dir_fd, const char *name, const CsXattrList *l,
                           const CsDirEntry *e, const char *path)
{
    if (!l->n && !ctx->params->is_delta)
        return;
    /* The *xattr calls have no form relative to a directory descriptor; this path names the
     * entry itself (a symlink is not followed). */
    char proc_path[64 + NAME_MAX];
    int len = name ? snprintf(proc_path, sizeof(proc_path), "/proc/self/fd/%d/%s", dir_fd, name)
                   : snprintf(proc_path, sizeof(proc_path), "/proc/self/fd/%d", dir_fd);
    if (len < 0 || (size_t)len >= sizeof(proc_path))
        return; /* not a name this file system took: the entry was never made */
    if (ctx->params->is_delta && e)
        remove_extra_xattrs(proc_path, e, path);
    for (uint32_t i = 0; i < l->n; i++) {
        const CsXattr *x = &l->v[i];
        if (!xattr_is_kept(x->name)) { /* no writer stores it: a repository made elsewhere */
            log_warning("extended attribute \"%s\" of \"%s\" is not restored: pitrfs keeps only "
                        "user.*, trusted.*, security.* and POSIX ACLs", x->name, path);
            __atomic_fetch_add(&ctx->xattrs_failed, 1, __ATOMIC_RELAXED);
            continue;
        }
        if (xattr_is_privileged(x->name) && !ctx->can_set_privileged) {
            if (__atomic_fetch_add(&ctx->xattrs_skipped, 1, __ATOMIC_RELAXED) == 0) {
                pthread_mutex_lock(&ctx->lock);
                if (!ctx->first_skipped)
                    ctx->first_skipped = strdup(path);
                pthread_mutex_unlock(&ctx->lock);
            }
            continue;
        }
        int rc = name ? lsetxattr(proc_path, x->name, x->value, x->size, 0)
                      : fsetxattr(dir_fd, x->name, x->value, x->size, 0);
        if (rc < 0) {
            log_warning_errno(-errno, "could not set extended attribute \"%s\" of \"%s\": %m",
                              x->name, path);
            __atomic_fetch_add(&ctx->xattrs_failed, 1, __ATOMIC_RELAXED);
        } else
            __atomic_fetch_add(&ctx->xattrs_set, 1, __ATOMIC_RELAXED);
    }
}

/* Owner, then attributes and ACLs (a change of owner would drop security.capability; and
 * user.* needs write access, which the final mode may not give), then mode and times. */
static int restore_meta(RestoreCtx *ctx, int dir_fd, const CsDirEntry *e, const char *path)
{
    int flags = e->type == CS_ENTRY_SYMLINK ? AT_SYMLINK_NOFOLLOW : 0;
    if (ctx->do_chown && fchownat(dir_fd, e->name, e->uid, e->gid, flags) < 0)
        return log_error_errno(-errno, "could not set owner of \"%s\": %m", e->name);
    restore_xattrs(ctx, dir_fd, e->name, &e->xattrs, e, path);
    if (e->type != CS_ENTRY_SYMLINK && fchmodat(dir_fd, e->name, e->mode & 07777, 0) < 0)
        return log_error_errno(-errno, "could not set mode of \"%s\": %m", e->name);
    struct timespec ts[2] = { { .tv_nsec = UTIME_OMIT },
                              { .tv_sec = e->mtime_sec, .tv_nsec = e->mtime_nsec } };
    if (utimensat(dir_fd, e->name, ts, flags) < 0)
        return log_error_errno(-errno, "could not set times of \"%s\": %m", e->name);
    return 0;
}

static void restore_fail(RestoreCtx *ctx, int r)
{
    pthread_mutex_lock(&ctx->lock);
    if (!ctx->error)
        ctx->error = r;
    pthread_cond_broadcast(&ctx->cond);
    pthread_mutex_unlock(&ctx->lock);
}

static void job_free(FileJob *j)
{
    if (j->dir_fd >= 0)
        close(j->dir_fd);
    free(j->path);
    entry_clear(&j->e);
    free(j);
}

static void split_free(SplitFile *sf)
{
    if (sf->fd >= 0)
        close(sf->fd);
    close(sf->dir_fd);
    free(sf->path);
    entry_clear(&sf->e);
    cs_content_ref_free(&sf->flat);
    free(sf);
}

/* The index of the first hole of e that ends after `off` (e->n_holes when none does). */
static uint32_t hole_after(const CsDirEntry *e, uint64_t off)
{
    uint32_t lo = 0, hi = e->n_holes;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (e->holes[mid].offset + e->holes[mid].length <= off)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Whether [a, b) lies inside one hole of e. */
static bool is_in_hole(const CsDirEntry *e, uint64_t a, uint64_t b)
{
    uint32_t h = hole_after(e, a);
    return h < e->n_holes && e->holes[h].offset <= a && e->holes[h].offset + e->holes[h].length >= b;
}

/* Write level-0 entries [first, end) of e's content (flat), the first at offset `off`. The
 * recorded holes stay unwritten and their chunks are not even read; every other byte is written,
 * so the file takes the blocks its source took. A file stored without holes (a snapshot older
 * than them) has its all-zero chunks left as holes instead. */
static int write_chunks(CsReader *rd, const CsContentRef *flat, size_t first, size_t end,
                        uint64_t off, const CsDirEntry *e, int fd, bool no_sync)
{
    OutBuf out;
    uint64_t start = off;
    int r = out_buf_init(&out, fd, true, off, OUT_BUF_WRITE_SIZE);
    uint32_t h = e->n_holes ? hole_after(e, off) : 0;
    for (size_t i = first; r == 0 && i < end; i++) {
        const CsChunkSlice *c = &flat->entries[i];
        const uint8_t *p = NULL;
        uint64_t chunk_end = off + c->length;
        if (!e->n_holes) {
            if ((r = cs_reader_slice(rd, c, &p)) == 0)
                r = cs_chunk_is_zero(p, c->length) ? out_buf_skip(&out, c->length)
                                                   : out_buf_add(&out, p, c->length);
            off = chunk_end;
            continue;
        }
        while (r == 0 && off < chunk_end) {
            while (h < e->n_holes && e->holes[h].offset + e->holes[h].length <= off)
                h++;
            bool is_hole = h < e->n_holes && e->holes[h].offset <= off;
            uint64_t until = is_hole ? e->holes[h].offset + e->holes[h].length
                             : h < e->n_holes ? e->holes[h].offset
                                              : UINT64_MAX;
            uint64_t n = MIN(until, chunk_end) - off;
            if (is_hole)
                r = out_buf_skip(&out, n);
            else if (p || (r = cs_reader_slice(rd, c, &p)) == 0)
                r = out_buf_add(&out, p + (off + c->length - chunk_end), (size_t)n);
            off += n;
        }
    }
    if (r == 0 && (r = out_buf_flush(&out)) == 0 && !no_sync)
        sync_file_range(fd, (off_t)start, (off_t)(out.off - start), SYNC_FILE_RANGE_WRITE);
    out_buf_done(&out);
    return r;
}

/* Write chunks [first, end) of a split file at their offsets. */
static int restore_range(CsReader *rd, FileJob *j, bool no_sync)
{
    return write_chunks(rd, &j->split->flat, j->first, j->end, j->offset, &j->split->e,
                        j->split->fd, no_sync);
}

static uint64_t range_bytes(const FileJob *j)
{
    uint64_t n = 0;
    for (size_t i = j->first; i < j->end; i++)
        n += j->split->flat.entries[i].length;
    return n;
}

/* One range of a split file is done (r: its result). The last one finishes the file: returns
 * 1 when it did so, 0 when other ranges remain, or a negative errno. */
static int split_range_done(RestoreCtx *ctx, SplitFile *sf, int r)
{
    pthread_mutex_lock(&ctx->lock);
    if (r < 0 && !sf->error)
        sf->error = r;
    bool is_last = --sf->ranges_left == 0;
    pthread_mutex_unlock(&ctx->lock);
    if (!is_last)
        return r;
    r = sf->error;
    if (close(sf->fd) < 0 && r == 0)
        r = -errno;
    sf->fd = -1;
    if (r < 0)
        log_error_errno(r, "could not restore \"%s\": %m", sf->path);
    else if ((r = restore_meta(ctx, sf->dir_fd, &sf->e, sf->path)) == 0)
        r = 1;
    split_free(sf);
    return r;
}

static int restore_file(RestoreCtx *ctx, CsReader *rd, FileJob *j)
{
    int fd = openat(j->dir_fd, j->e.name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
                    0600);
    if (fd < 0)
        return log_error_errno(-errno, "could not create \"%s\": %m", j->path);
    int r;
    if (j->e.n_holes) {
        CsContentRef flat;
        if ((r = cs_reader_flatten(rd, &j->e.content, &flat)) == 0) {
            r = write_chunks(rd, &flat, 0, flat.count, 0, &j->e, fd, ctx->params->no_sync);
            if (r == 0 && ftruncate(fd, (off_t)flat.size) < 0) /* a hole at the end */
                r = -errno;
            cs_content_ref_free(&flat);
        }
    } else {
        r = cs_reader_write_fd(rd, &j->e.content, fd, true);
        /* Start writeback now, without waiting: the disk works while later files are decoded,
         * and the syncfs at the end has little left to wait for. */
        if (r == 0 && !ctx->params->no_sync)
            sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    }
    if (close(fd) < 0 && r == 0)
        r = -errno;
    if (r < 0)
        return log_error_errno(r, "could not restore \"%s\": %m", j->path);
    return restore_meta(ctx, j->dir_fd, &j->e, j->path);
}

/* Make [off, off + len) of an existing file a hole; where the file system cannot, zeros. */
static int punch_hole(int fd, uint64_t off, uint64_t len)
{
    if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) == 0)
        return 0;
    if (errno != EOPNOTSUPP && errno != ENOSYS)
        return -errno;
    static const uint8_t zeros[65536];
    for (uint64_t at = 0; at < len; at += sizeof(zeros)) {
        int r = pwrite_all(fd, zeros, (size_t)MIN(sizeof(zeros), len - at), off + at);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Bring an existing file up to date: read each stored entry's range, keep it if it matches
 * (its id, for a whole chunk; its bytes, for a slice of a run), write the stored bytes
 * otherwise. */
static int restore_file_delta(RestoreCtx *ctx, CsReader *rd, FileJob *j)
{
    const int flags = O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW;
    int fd = openat(j->dir_fd, j->e.name, flags | O_EXCL, 0600);
    bool is_new = fd >= 0;
    if (fd < 0 && errno == EEXIST)
        fd = openat(j->dir_fd, j->e.name, flags, 0600);
    if (fd < 0)
        return log_error_errno(-errno, "could not open \"%s\": %m", j->path);
    struct stat st;
    CsContentRef flat = { 0 };
    uint8_t *old = NULL;
    int r = fstat(fd, &st) < 0 ? -errno : cs_reader_flatten(rd, &j->e.content, &flat);
    size_t max = 0;
    for (size_t i = 0; r == 0 && i < flat.count; i++)
        max = MAX(max, (size_t)flat.entries[i].length);
    if (r == 0 && !(old = malloc(max ? max : 1)))
        r = -ENOMEM;
    uint64_t off = 0, have = r == 0 ? (uint64_t)st.st_size : 0;
    size_t block = cs_reader_repo(rd)->config.page_size;
    for (size_t i = 0; r == 0 && i < flat.count; i++) {
        const CsChunkSlice *e = &flat.entries[i];
        size_t n = e->length, got = 0;
        bool has_old = false;
        if (off + n <= have && (r = pread_full(fd, old, n, off, &got)) == 0 && got == n) {
            has_old = true;
            /* A whole chunk that matches is known by its id, without decoding it. A run's id is
             * not a hash of its bytes, so a slice is only ever compared byte by byte. */
            uint32_t len;
            bool is_whole = e->offset == 0 &&
                            (!flat.has_slices ||
                             (cs_reader_chunk_length(rd, &e->id, &len) == 0 && len == n));
            CsChunkId id;
            if (is_whole && (r = cs_chunk_id(cs_reader_repo(rd), old, n, &id)) < 0)
                break;
            if (is_whole && memcmp(id.bytes, e->id.bytes, sizeof(id.bytes)) == 0) {
                off += n;
                continue;
            }
        }
        if (r < 0)
            break;
        const uint8_t *p;
        if ((r = cs_reader_slice(rd, e, &p)) < 0)
            break;
        /* Block by block, so that one changed page of a run rewrites that page only. */
        for (size_t at = 0; r == 0 && at < n; at += block) {
            size_t k = MIN(block, n - at);
            if (j->e.n_holes && is_in_hole(&j->e, off + at, off + at + k)) {
                /* punched below; old data there is a change */
                if (has_old && !cs_chunk_is_zero(old + at, k))
                    j->written += k;
                continue;
            }
            if (has_old && memcmp(p + at, old + at, k) == 0)
                continue;
            if (off + at >= have && cs_chunk_is_zero(p + at, k))
                continue; /* past the old end, zeros stay a hole */
            r = pwrite_all(fd, p + at, k, off + at);
            j->written += k;
        }
        off += n;
    }
    if (r == 0 && have != flat.size && ftruncate(fd, (off_t)flat.size) < 0)
        r = -errno;
    for (uint32_t h = 0; r == 0 && h < j->e.n_holes && j->e.holes[h].offset < have; h++)
        r = punch_hole(fd, j->e.holes[h].offset, MIN(j->e.holes[h].length, have - j->e.holes[h].offset));
    j->is_changed = is_new || j->written || have != flat.size;
    if (r == 0 && j->written && !ctx->params->no_sync)
        sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    if (close(fd) < 0 && r == 0)
        r = -errno;
    free(old);
    cs_content_ref_free(&flat);
    if (r < 0)
        return log_error_errno(r, "could not restore \"%s\": %m", j->path);
    return restore_meta(ctx, j->dir_fd, &j->e, j->path);
}

static void *restore_worker(void *userdata)
{
    RestoreCtx *ctx = userdata;
    CsReader *rd = NULL;
    int r = cs_reader_new(ctx->repo, &rd);
    if (r < 0)
        restore_fail(ctx, r);
    pthread_mutex_lock(&ctx->lock);
    for (;;) {
        while (!ctx->head && !ctx->is_closed)
            pthread_cond_wait(&ctx->cond, &ctx->lock);
        FileJob *j = ctx->head;
        if (!j)
            break;
        ctx->head = j->next;
        if (!ctx->head)
            ctx->tail = NULL;
        ctx->queued--;
        pthread_cond_broadcast(&ctx->cond);
        bool skip = ctx->error != 0;
        pthread_mutex_unlock(&ctx->lock);
        uint64_t size = j->split ? j->split->e.size : j->e.size;
        bool is_file_done = false;
        if (j->split) {
            /* Every range reports, even after a failure, so the last one frees the file. */
            r = skip || !rd ? -ECANCELED : restore_range(rd, j, ctx->params->no_sync);
            if (r == 0)
                j->written = range_bytes(j);
            r = split_range_done(ctx, j->split, r);
            is_file_done = r == 1;
            if (r == -ECANCELED)
                r = 0;
        } else {
            r = skip || !rd               ? 0
                : ctx->params->is_delta ? restore_file_delta(ctx, rd, j)
                                        : restore_file(ctx, rd, j);
            is_file_done = r == 0 && !skip && rd;
            if (!ctx->params->is_delta)
                j->written = size;
        }
        uint64_t written = j->written;
        bool is_changed = j->is_changed || !ctx->params->is_delta;
        job_free(j);
        if (r < 0)
            restore_fail(ctx, r);
        pthread_mutex_lock(&ctx->lock);
        if (is_file_done) {
            ctx->files++;
            ctx->bytes += size;
            ctx->bytes_written += written;
            ctx->files_unchanged += !is_changed;
        }
    }
    pthread_mutex_unlock(&ctx->lock);
    cs_reader_free(rd);
    return NULL;
}

/* Queue a file for the workers; takes ownership of *e's contents. */
static int queue_job(RestoreCtx *ctx, FileJob *j)
{
    pthread_mutex_lock(&ctx->lock);
    while (ctx->queued >= RESTORE_QUEUE_MAX && !ctx->error)
        pthread_cond_wait(&ctx->cond, &ctx->lock);
    int r = ctx->error;
    if (r == 0) {
        if (ctx->tail)
            ctx->tail->next = j;
        else
            ctx->head = j;
        ctx->tail = j;
        ctx->queued++;
        pthread_cond_broadcast(&ctx->cond);
    }
    pthread_mutex_unlock(&ctx->lock);
    if (r)
        job_free(j);
    return r;
}

/* Split a large file into ranges for several workers. Takes ownership of *e's contents. */
static int queue_split_file(RestoreCtx *ctx, int dir_fd, const char *path, CsDirEntry *e)
{
    SplitFile *sf = calloc(1, sizeof(*sf));
    if (!sf)
        return -ENOMEM;
    sf->fd = -1;
    sf->dir_fd = fcntl(dir_fd, F_DUPFD_CLOEXEC, 3);
    sf->path = strdup(path);
    sf->e = *e;
    *e = (CsDirEntry){ 0 };
    int r = sf->dir_fd < 0 || !sf->path ? -ENOMEM
                                        : cs_reader_flatten(ctx->rd, &sf->e.content, &sf->flat);
    if (r == 0) {
        sf->fd = openat(dir_fd, sf->e.name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
                        0600);
        if (sf->fd < 0 || ftruncate(sf->fd, (off_t)sf->flat.size) < 0)
            r = log_error_errno(-errno, "could not create \"%s\": %m", path);
    }
    if (r < 0) {
        split_free(sf);
        return r;
    }
    /* Count the ranges first: a range that finishes early must not see the count reach 0. */
    for (size_t i = 0; i < sf->flat.count; sf->ranges_left++) {
        uint64_t bytes = 0;
        while (i < sf->flat.count && bytes < RESTORE_RANGE)
            bytes += sf->flat.entries[i++].length;
    }
    unsigned total = sf->ranges_left, queued = 0;
    uint64_t off = 0;
    for (size_t i = 0; i < sf->flat.count; queued++) {
        FileJob *j = calloc(1, sizeof(*j));
        if (!j) {
            r = -ENOMEM;
            break;
        }
        j->dir_fd = -1;
        j->split = sf;
        j->first = i;
        j->offset = off;
        uint64_t bytes = 0;
        while (i < sf->flat.count && bytes < RESTORE_RANGE)
            bytes += sf->flat.entries[i++].length;
        j->end = i;
        off += bytes;
        if ((r = queue_job(ctx, j)) < 0)
            break;
    }
    /* Ranges never queued report in as failed, so that the last report frees the file. sf may
     * be gone after the final call. */
    for (unsigned k = queued; k < total; k++)
        split_range_done(ctx, sf, r < 0 ? r : -ECANCELED);
    return r;
}

static int queue_file(RestoreCtx *ctx, int dir_fd, const char *path, CsDirEntry *e)
{
    if (e->content.size >= RESTORE_SPLIT_MIN && !ctx->params->is_delta)
        return queue_split_file(ctx, dir_fd, path, e);
    FileJob *j = calloc(1, sizeof(*j));
    if (!j)
        return -ENOMEM;
    j->dir_fd = fcntl(dir_fd, F_DUPFD_CLOEXEC, 3);
    j->path = strdup(path);
    j->e = *e;
    *e = (CsDirEntry){ 0 };
    if (j->dir_fd < 0 || !j->path) {
        job_free(j);
        return -ENOMEM;
    }
    return queue_job(ctx, j);
}

static int remember_dir(RestoreCtx *ctx, int parent_fd, CsDirEntry *e, const char *path)
{
    if (GROW_ARRAY(ctx->dirs, ctx->cap_dirs, ctx->n_dirs, 64) < 0)
        return -ENOMEM;
    char *copy = strdup(path);
    if (!copy)
        return -ENOMEM;
    int fd = fcntl(parent_fd, F_DUPFD_CLOEXEC, 3);
    if (fd < 0) {
        free(copy);
        return -errno;
    }
    /* Only metadata is needed later: drop the content reference now. */
    cs_content_ref_free(&e->content);
    ctx->dirs[ctx->n_dirs++] = (DirMeta){ .parent_fd = fd, .path = copy, .e = *e };
    *e = (CsDirEntry){ 0 };
    return 0;
}

/* A later entry of a hard-link group: linked to the first once every file is written (the
 * first may still be in a worker's queue). */
static int defer_link(RestoreCtx *ctx, int dir_fd, const CsDirEntry *e, const char *to,
                      const char *path)
{
    if (ctx->params->is_delta || ctx->params->is_overwrite_allowed) {
        int r = rm_rf_at(dir_fd, e->name);
        if (r < 0)
            return log_error_errno(r, "could not replace \"%s\": %m", path);
    }
    if (GROW_ARRAY(ctx->deferred, ctx->cap_deferred, ctx->n_deferred, 64) < 0)
        return -ENOMEM;
    char *copy = strdup(path);
    if (!copy)
        return -ENOMEM;
    ctx->deferred[ctx->n_deferred++] = (DeferredLink){ .to = to, .path = copy };
    return 0;
}

static int make_deferred_links(RestoreCtx *ctx)
{
    int r = 0;
    for (size_t i = 0; i < ctx->n_deferred; i++) {
        DeferredLink *d = &ctx->deferred[i];
        if (r == 0 && linkat(AT_FDCWD, d->to, AT_FDCWD, d->path, 0) < 0)
            r = log_error_errno(-errno, "could not link \"%s\" to \"%s\": %m", d->path, d->to);
        else if (r == 0)
            ctx->stats->hardlinks++;
        free(d->path);
    }
    free(ctx->deferred);
    ctx->deferred = NULL;
    ctx->n_deferred = 0;
    return r;
}

/* Delta: remove what the stored directory v[0..n) (sorted by name) does not have. */
static int delta_remove_extra(RestoreCtx *ctx, int dir_fd, const CsDirEntry *v, size_t n,
                              const char *path)
{
    int fd = dup(dir_fd);
    DIR *d = fd < 0 ? NULL : fdopendir(fd);
    if (!d) {
        if (fd >= 0)
            close(fd);
        return log_error_errno(-errno, "could not read directory \"%s\": %m", path);
    }
    int r = 0;
    struct dirent *de;
    while (r == 0 && (de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        CsDirEntry key = { .name = de->d_name };
        if (bsearch(&key, v, n, sizeof(*v), entry_cmp))
            continue;
        if ((r = rm_rf_at(dir_fd, de->d_name)) < 0)
            log_error_errno(r, "could not remove \"%s/%s\": %m", path, de->d_name);
        ctx->stats->entries_removed++;
    }
    closedir(d);
    return r;
}

/* Delta: may the existing entry stay (a file or directory is updated in place, a symlink that
 * already points the same way is kept)? Otherwise it is removed. */
static int delta_prepare_entry(int dir_fd, const CsDirEntry *e, bool *keep)
{
    struct stat st;
    *keep = false;
    if (fstatat(dir_fd, e->name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT ? 0 : -errno;
    /* Updated in place by the worker; unless other names share the inode (a link an earlier
     * restore made), which the update would change too. */
    if (e->type == CS_ENTRY_FILE && S_ISREG(st.st_mode) && st.st_nlink == 1)
        return 0;
    if (e->type == CS_ENTRY_DIR && S_ISDIR(st.st_mode))
        return 0;
    if (e->type == CS_ENTRY_SYMLINK && S_ISLNK(st.st_mode)) {
        char target[PATH_MAX + 1];
        ssize_t k = readlinkat(dir_fd, e->name, target, PATH_MAX);
        if (k >= 0 && (size_t)k == strlen(e->target) && memcmp(target, e->target, (size_t)k) == 0) {
            *keep = true;
            return 0;
        }
    }
    return rm_rf_at(dir_fd, e->name);
}

/* own: where the attributes of the directory itself go (the root); NULL: not wanted. */
static int restore_dir(RestoreCtx *ctx, int dir_fd, const CsContentRef *ref, const char *path,
                       CsXattrList *own)
{
    CsDirEntry *v;
    size_t n;
    int r = cs_dir_load_own(ctx->rd, ref, &v, &n, own);
    if (r < 0)
        return log_error_errno(r, "could not read directory \"%s\" from the repository: %m",
                               path);
    if (ctx->params->is_delta)
        r = delta_remove_extra(ctx, dir_fd, v, n, path);
    for (size_t i = 0; r == 0 && i < n; i++) {
        CsDirEntry *e = &v[i];
        _cleanup_free_ char *child = NULL;
        if (asprintf(&child, "%s/%s", path, e->name) < 0) {
            r = -ENOMEM;
            break;
        }
        if (e->link_id && e->type != CS_ENTRY_DIR) {
            const char *to = link_map_find(&ctx->links, e->link_id);
            if (to) {
                r = defer_link(ctx, dir_fd, e, to, child);
                continue;
            }
            if ((r = link_map_add(&ctx->links, e->link_id, child)) < 0)
                break;
        }
        if (ctx->params->is_delta) {
            bool keep;
            if ((r = delta_prepare_entry(dir_fd, e, &keep)) < 0) {
                log_error_errno(r, "could not replace \"%s\": %m", child);
                break;
            }
            if (keep) {
                ctx->stats->symlinks++;
                r = restore_meta(ctx, dir_fd, e, child);
                continue;
            }
        } else if (ctx->params->is_overwrite_allowed && e->type != CS_ENTRY_DIR)
            unlinkat(dir_fd, e->name, 0);
        switch (e->type) {
        case CS_ENTRY_FILE:
            r = queue_file(ctx, dir_fd, child, e);
            continue; /* the worker sets the file's metadata */
        case CS_ENTRY_DIR: {
            if (mkdirat(dir_fd, e->name, 0700) < 0 &&
                !(errno == EEXIST &&
                  (ctx->params->is_overwrite_allowed || ctx->params->is_delta))) {
                r = log_error_errno(-errno, "could not create directory \"%s\": %m", child);
                break;
            }
            int fd = openat(dir_fd, e->name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
            if (fd < 0) {
                r = log_error_errno(-errno, "could not open directory \"%s\": %m", child);
                break;
            }
            r = restore_dir(ctx, fd, &e->content, child, NULL);
            close(fd);
            ctx->stats->dirs++;
            if (r == 0)
                r = remember_dir(ctx, dir_fd, e, child);
            continue; /* mode and times are set once its files are written */
        }
        case CS_ENTRY_SYMLINK:
            if (symlinkat(e->target, dir_fd, e->name) < 0)
                r = log_error_errno(-errno, "could not create symlink \"%s\": %m", child);
            ctx->stats->symlinks++;
            break;
        default:
            if (mknodat(dir_fd, e->name, e->mode, (dev_t)e->rdev) < 0)
                r = log_error_errno(-errno, "could not create special file \"%s\": %m", child);
            ctx->stats->specials++;
            break;
        }
        if (r == 0)
            r = restore_meta(ctx, dir_fd, e, child);
    }
    cs_dir_entries_free(v, n);
    return r;
}

int cs_tree_restore(CsReader *rd, const CsContentRef *root, const char *target,
                    const CsRestoreParams *params, CsTreeStats *stats)
{
    static const CsRestoreParams defaults = { 0 };
    CsTreeStats local = { 0 };
    RestoreCtx ctx = { .rd = rd, .repo = cs_reader_repo(rd),
                       .params = params ? params : &defaults,
                       .stats = stats ? stats : &local };
    ctx.do_chown = geteuid() == 0 && !ctx.params->skip_owner;
    ctx.can_set_privileged = geteuid() == 0;
    int r = mkdir_p(target, 0700);
    if (r < 0)
        return log_error_errno(r, "could not create \"%s\": %m", target);
    _cleanup_close_ int fd = open(target, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return log_error_errno(-errno, "could not open \"%s\": %m", target);
    if (!ctx.params->is_overwrite_allowed && !ctx.params->is_delta) {
        DIR *d = opendir(target);
        struct dirent *de;
        bool is_empty = true;
        while (d && (de = readdir(d)))
            if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
                is_empty = false;
        if (d)
            closedir(d);
        if (!is_empty)
            return log_error_errno(-ENOTEMPTY, "target directory \"%s\" is not empty", target);
    }

    pthread_mutex_init(&ctx.lock, NULL);
    pthread_cond_init(&ctx.cond, NULL);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned n_threads = params && params->threads ? params->threads
                                                   : (unsigned)MAX(2, MIN(cpus * 2, 16));
    pthread_t *threads = calloc(n_threads, sizeof(*threads));
    unsigned started = 0;
    for (; threads && started < n_threads; started++)
        if (pthread_create(&threads[started], NULL, restore_worker, &ctx) != 0)
            break;
    r = started ? restore_dir(&ctx, fd, root, target, &ctx.root_own) : -EAGAIN;

    pthread_mutex_lock(&ctx.lock);
    ctx.is_closed = true;
    pthread_cond_broadcast(&ctx.cond);
    pthread_mutex_unlock(&ctx.lock);
    for (unsigned i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    free(threads);
    if (r == 0)
        r = ctx.error;
    ctx.stats->files += ctx.files;
    ctx.stats->bytes += ctx.bytes;
    ctx.stats->bytes_written += ctx.bytes_written;
    ctx.stats->files_unchanged += ctx.files_unchanged;

    /* Every file is written: links to them can be made, before the directories get their
     * times. */
    int q = make_deferred_links(&ctx);
    if (r == 0)
        r = q;
    link_map_free(&ctx.links);
    /* Children were remembered before their parents: this order sets a directory's times only
     * after nothing more is created inside it. */
    for (size_t i = 0; i < ctx.n_dirs; i++) {
        if (r == 0)
            r = restore_meta(&ctx, ctx.dirs[i].parent_fd, &ctx.dirs[i].e, ctx.dirs[i].path);
        close(ctx.dirs[i].parent_fd);
        free(ctx.dirs[i].path);
        entry_clear(&ctx.dirs[i].e);
    }
    free(ctx.dirs);
    const CsTreeRootAttr *ra = ctx.params->root_attr;
    if (r == 0 && ra && ctx.do_chown && fchown(fd, ra->uid, ra->gid) < 0)
        r = log_error_errno(-errno, "could not set attributes of \"%s\": %m", target);
    if (r == 0)
        restore_xattrs(&ctx, fd, NULL, &ctx.root_own, NULL, target);
    if (r == 0 && ra) {
        struct timespec ts[2] = { { .tv_nsec = UTIME_OMIT },
                                  { .tv_sec = ra->mtime_sec, .tv_nsec = ra->mtime_nsec } };
        if (fchmod(fd, ra->mode & 07777) < 0 || futimens(fd, ts) < 0)
            r = log_error_errno(-errno, "could not set attributes of \"%s\": %m", target);
    }
    cs_xattr_list_clear(&ctx.root_own);
    pthread_mutex_destroy(&ctx.lock);
    pthread_cond_destroy(&ctx.cond);
    ctx.stats->xattrs += ctx.xattrs_set;
    ctx.stats->xattrs_not_set += ctx.xattrs_failed + ctx.xattrs_skipped;
    if (ctx.xattrs_skipped)
        log_warning("%" PRIu64 " extended attributes in the trusted. and security. namespaces "
                    "were not restored, the first of \"%s\": only root may set them",
                    ctx.xattrs_skipped, ctx.first_skipped ? ctx.first_skipped : target);
    free(ctx.first_skipped);
    /* One filesystem sync instead of one fsync per file. */
    if (r == 0 && !ctx.params->no_sync && syncfs(fd) < 0)
        r = log_error_errno(-errno, "could not sync \"%s\": %m", target);
    return r;
}

int cs_tree_lookup(CsReader *rd, const CsContentRef *root, const char *path, CsDirEntry *ret)
{
    CsDirEntry cur = { .type = CS_ENTRY_DIR, .mode = S_IFDIR | 0755 };
    /* Work on a copy of the root reference so every step owns what it frees. */
    int r = cs_content_ref_copy(root, &cur.content);
    if (r < 0)
        return r;

    _cleanup_free_ char *copy = strdup(path);
    if (!copy) {
        entry_clear(&cur);
        return -ENOMEM;
    }
    char *save = NULL;
    for (char *part = strtok_r(copy, "/", &save); part; part = strtok_r(NULL, "/", &save)) {
        if (cur.type != CS_ENTRY_DIR) {
            r = -ENOTDIR;
            goto fail;
        }
        CsDirEntry *v;
        size_t n;
        if ((r = cs_dir_load(rd, &cur.content, &v, &n)) < 0)
            goto fail;
        CsDirEntry key = { .name = part };
        CsDirEntry *found = bsearch(&key, v, n, sizeof(*v), entry_cmp);
        if (!found) {
            cs_dir_entries_free(v, n);
            r = -ENOENT;
            goto fail;
        }
        entry_clear(&cur);
        cur = *found;
        *found = (CsDirEntry){ 0 };
        cs_dir_entries_free(v, n);
    }
    *ret = cur;
    return 0;
fail:
    entry_clear(&cur);
    return r;
}
