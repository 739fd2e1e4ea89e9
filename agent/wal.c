#include "agent/wal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "chunkstore/catalog.h"
#include "chunkstore/read.h"
#include "common/fs-util.h"
#include "common/hex.h"
#include "common/log.h"
#include "common/macro.h"

/* History and backup history files are a few lines of text; anything this big is not one. */
#define TEXT_FILE_MAX (16u << 20)

DEFINE_CLEANUP_FUNC(EVP_MD_CTX *, EVP_MD_CTX_free)

/* ---- helpers ---- */

/* The bytes of the file being archived, read once into memory. */
typedef struct FileBytes {
    uint8_t *p;
    size_t n;
} FileBytes;

static void file_bytes_clear(FileBytes *f)
{
    free(f->p);
    *f = (FileBytes){ 0 };
}

static int sha256_buf(const void *p, size_t n, uint8_t out[32])
{
    static const uint8_t empty;
    unsigned len = 0;
    if (!EVP_Digest(n ? p : &empty, n, out, &len, EVP_sha256(), NULL) || len != 32)
        return -EIO;
    return 0;
}

/* First 8 bytes of a digest in hex, for messages. */
static const char *short_hex(const uint8_t sha[32], char out[17])
{
    hex_encode(sha, 8, out);
    return out;
}

static int check_names(const char *node, const char *filename, CsWalName *ret_name,
                       char objname[CS_WAL_OBJECT_NAME_MAX])
{
    if (!cs_wal_node_is_valid(node))
        return log_error_errno(-EINVAL,
                               "invalid node name \"%s\"\nHINT: a node name is 1 to 64 letters, "
                               "digits, '.', '_' or '-', and does not start with '.' or '-'",
                               node);
    if (cs_wal_name_parse(filename, ret_name) < 0)
        return log_error_errno(-EINVAL,
                               "\"%s\" is not the name of a WAL segment, partial segment, "
                               "timeline history file or backup history file",
                               filename);
    int r = cs_wal_object_name(node, ret_name, objname, CS_WAL_OBJECT_NAME_MAX);
    if (r < 0)
        return log_error_errno(r, "object name for \"%s\" of node \"%s\" is too long", filename,
                               node);
    return 0;
}

static int log_object_error(int r, const char *objname)
{
    if (r == -EPROTONOSUPPORT)
        return log_error_errno(r, "WAL object \"%s\" has a newer format than this version of "
                                  "pitrfs supports\nHINT: upgrade pitrfs to read it",
                               objname);
    if (r == -EBADMSG)
        return log_error_errno(r, "WAL object \"%s\" is damaged", objname);
    return log_error_errno(r, "could not read WAL object \"%s\": %m", objname);
}

/* ---- archive ---- */

static bool same_version(const struct stat *a, const struct stat *b)
{
    return a->st_size == b->st_size && a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
           a->st_mtim.tv_nsec == b->st_mtim.tv_nsec && a->st_ctim.tv_sec == b->st_ctim.tv_sec &&
           a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/* Read the st->st_size bytes of fd. A file that changes meanwhile (truncated, rewritten) is
 * refused as damage: what was read may be neither the old nor the new contents. */
static int read_whole(int fd, const char *path, const struct stat *st, FileBytes *ret)
{
    size_t size = (size_t)st->st_size;
    if (size == 0)
        return 0;
    _cleanup_free_ uint8_t *p = malloc(size);
    if (!p)
        return log_error_errno(-ENOMEM, "out of memory for WAL file \"%s\" (%zu bytes)", path,
                               size);
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    size_t got;
    int r = pread_full(fd, p, size, 0, &got);
    if (r < 0)
        return log_error_errno(r, "could not read WAL file \"%s\": %m", path);
    struct stat after;
    if (fstat(fd, &after) < 0)
        return log_error_errno(-errno, "could not stat WAL file \"%s\": %m", path);
    if (got != size || !same_version(st, &after))
        return log_error_errno(-EBADMSG,
                               "WAL file \"%s\" changed while it was read (%zu bytes when "
                               "opened, %zu read, %" PRIu64 " now): not archived",
                               path, size, got, (uint64_t)after.st_size);
    *ret = (FileBytes){ .p = TAKE_PTR(p), .n = size };
    return 0;
}

/* An archived object exists for the file: same bytes is success, other bytes an error. */
static int compare_archived(const CsWalObject *old, uint64_t size, const uint8_t sha[32],
                            const char *node, AgentWalArchiveResult *ret)
{
    char a[17], b[17];
    if (old->size == size && memcmp(old->sha256, sha, 32) == 0) {
        ret->is_duplicate = true;
        log_debug("WAL file \"%s\" of node \"%s\" is already archived with the same contents",
                  old->name, node);
        return 0;
    }
    return log_error_errno(-EEXIST,
                           "WAL file \"%s\" is already archived for node \"%s\" with different "
                           "contents\nDETAIL: archived: %" PRIu64 " bytes, SHA-256 %s...; "
                           "this file: %" PRIu64 " bytes, SHA-256 %s...\nHINT: the archived "
                           "file is kept; check that no other cluster archives as node \"%s\"",
                           old->name, node, old->size, short_hex(old->sha256, a), size,
                           short_hex(sha, b), node);
}

/* Store the bytes, then the object naming them, both under the writer's repository lock. */
static int store_file(CsRepo *repo, const char *objname, const FileBytes *m, CsWalObject *o,
                      AgentWalArchiveResult *ret)
{
    _cleanup_(cs_writer_freep) CsWriter *w = NULL;
    int r = cs_writer_new(repo, &(CsWriterParams){ .threads = 1 }, &w);
    if (r < 0)
        return r == -EBUSY ? r : log_error_errno(r, "could not start the store pipeline: %m");
    static const uint8_t empty;
    /* (an empty file has no buffer; the pipeline wants a pointer even for 0 bytes) */
    if ((r = cs_writer_put_buf(w, m->p ? m->p : &empty, m->n, CS_CHUNKING_CDC, &o->content)) < 0 ||
        (r = cs_writer_flush(w)) < 0)
        return log_error_errno(r, "could not store WAL file \"%s\": %m", o->name);
    CsWriterStats st;
    cs_writer_stats(w, &st);
    ret->new_bytes = st.new_bytes;
    ret->stored_bytes = st.stored_bytes;

    /* The data is durable and indexed: now the object that makes it visible. */
    _cleanup_(buf_free) Buf plain = BUF_INIT;
    _cleanup_(buf_free) Buf sealed = BUF_INIT;
    if ((r = cs_wal_object_encode(o, &plain)) < 0 ||
        (r = cs_sealed_encode(repo->catalog_key, objname, plain.data, plain.size, &sealed)) < 0)
        return log_error_errno(r, "could not encode WAL object \"%s\": %m", objname);
    r = cs_backend_put(repo->backend, objname, sealed.data, sealed.size, false);
    if (r == -EEXIST)
        return r; /* archived by someone else meanwhile: the caller compares */
    if (r < 0)
        return log_error_errno(r, "could not write WAL object \"%s\": %m", objname);
    return 0;
}

int agent_wal_archive(CsRepo *repo, const char *node, const char *path, const char *filename,
                      AgentWalArchiveResult *ret)
{
    CsWalName name;
    char objname[CS_WAL_OBJECT_NAME_MAX];
    int r = check_names(node, filename, &name, objname);
    if (r < 0)
        return r;
    if (repo->read_only)
        return log_error_errno(-EROFS, "repository is open read-only");
    AgentWalArchiveResult res = { .kind = name.kind };

    struct stat st;
    _cleanup_close_ int fd = open_regular(AT_FDCWD, path, 0, &st);
    if (fd == -EISDIR || fd == -EBADFD)
        return log_error_errno(-EINVAL, "WAL file \"%s\" is not a regular file", path);
    if (fd < 0)
        return log_error_errno(fd, "could not open WAL file \"%s\": %m", path);
    uint64_t size = (uint64_t)st.st_size;
    bool has_header = cs_wal_kind_has_header(name.kind);
    if (has_header ? size > CS_WAL_SEG_MAX : size > TEXT_FILE_MAX)
        return log_error_errno(-EFBIG, "%s \"%s\" is too large (%" PRIu64 " bytes)",
                               cs_wal_kind_to_string(name.kind), path, size);

    /* One read of the file serves the header check, the digest and the store, so the digest
     * describes exactly the bytes stored. Read, never mapped: a mapped file that shrinks
     * under the reader kills it with SIGBUS. */
    _cleanup_(file_bytes_clear) FileBytes m = { 0 };
    if ((r = read_whole(fd, path, &st, &m)) < 0)
        return r;
    _cleanup_(cs_wal_object_clear) CsWalObject o = {
        .kind = name.kind, .size = size, .archived_at = (int64_t)time(NULL)
    };
    memcpy(o.name, name.name, sizeof(o.name));
    if (has_header) {
        AgentWalHeader h;
        char why[256];
        if ((r = agent_wal_header_check(&name, m.p, m.n, size, &h, why, sizeof(why))) < 0)
            return log_error_errno(r, "WAL file \"%s\" does not match its name \"%s\": %s", path,
                                   filename, why);
        o.xlp_magic = h.magic;
        o.sysid = h.sysid;
        res.pg_version = agent_wal_magic_to_version(h.magic);
        log_debug("\"%s\": PostgreSQL %d WAL (magic 0x%04X), system identifier %" PRIu64
                  ", %" PRIu32 "-byte segments",
                  filename, res.pg_version, h.magic, h.sysid, h.seg_size);
    }
    if ((r = sha256_buf(m.p, m.n, o.sha256)) < 0)
        return log_error_errno(r, "could not compute the SHA-256 of \"%s\": %m", path);
    res.size = size;

    _cleanup_(cs_wal_object_clear) CsWalObject old = { 0 };
    r = cs_wal_object_load(repo, objname, &old);
    if (r == 0) {
        if ((r = compare_archived(&old, size, o.sha256, node, &res)) == 0)
            *ret = res;
        return r;
    }
    if (r != -ENOENT)
        return log_object_error(r, objname);

    r = store_file(repo, objname, &m, &o, &res);
    if (r == -EEXIST) {
        /* Lost a race with another archiver of the same file: its bytes decide. */
        int q = cs_wal_object_load(repo, objname, &old);
        r = q < 0 ? log_object_error(q, objname)
                  : compare_archived(&old, size, o.sha256, node, &res);
    }
    if (r == 0) {
        log_debug("archived %s \"%s\" of node \"%s\": %" PRIu64 " bytes, %" PRIu64 " new",
                  cs_wal_kind_to_string(name.kind), filename, node, size, res.new_bytes);
        *ret = res;
    }
    return r;
}

/* ---- restore ---- */

/* Check the restored bytes in fd (size, SHA-256, page header, system identifier). */
static int verify_restored(int fd, const CsWalName *name, const CsWalObject *o,
                           const char *node)
{
    _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    _cleanup_free_ uint8_t *buf = malloc(1u << 20);
    uint8_t head[AGENT_WAL_LONG_HEADER_SIZE];
    size_t head_n = 0;
    uint64_t total = 0;
    if (!ctx || !buf)
        return log_error_errno(-ENOMEM, "out of memory");
    if (!EVP_DigestInit_ex(ctx, EVP_sha256(), NULL))
        return log_error_errno(-EIO, "could not compute a SHA-256");
    for (;;) {
        size_t n;
        int r = pread_full(fd, buf, 1u << 20, total, &n);
        if (r < 0)
            return log_error_errno(r, "could not read back WAL file \"%s\": %m", o->name);
        if (n == 0)
            break;
        if (head_n < sizeof(head)) {
            size_t k = MIN(sizeof(head) - head_n, n);
            memcpy(head + head_n, buf, k);
            head_n += k;
        }
        if (!EVP_DigestUpdate(ctx, buf, n))
            return log_error_errno(-EIO, "could not compute a SHA-256");
        total += n;
    }
    uint8_t sha[32];
    unsigned len = 0;
    if (!EVP_DigestFinal_ex(ctx, sha, &len) || len != 32)
        return log_error_errno(-EIO, "could not compute a SHA-256");
    if (total != o->size || memcmp(sha, o->sha256, 32) != 0)
        return log_error_errno(-EBADMSG,
                               "archived WAL file \"%s\" of node \"%s\" fails its size or "
                               "SHA-256 check (%" PRIu64 " bytes, %" PRIu64 " expected)",
                               o->name, node, total, o->size);
    if (!cs_wal_kind_has_header(name->kind))
        return 0;
    AgentWalHeader h;
    char why[256];
    int r = agent_wal_header_check(name, head, head_n, total, &h, why, sizeof(why));
    if (r < 0)
        return log_error_errno(r, "archived WAL file \"%s\" of node \"%s\" does not match its "
                                  "name: %s",
                               o->name, node, why);
    if (h.sysid != o->sysid || h.magic != o->xlp_magic)
        return log_error_errno(-EBADMSG,
                               "archived WAL file \"%s\" of node \"%s\" has system identifier "
                               "%" PRIu64 " (magic 0x%04X) but was archived with %" PRIu64
                               " (magic 0x%04X)",
                               o->name, node, h.sysid, h.magic, o->sysid, o->xlp_magic);
    return 0;
}

/* Write the archived content to fd, check it and make it durable. */
static int restore_into(CsRepo *repo, int fd, const CsWalName *name, const CsWalObject *o,
                        const char *node, const char *tmp)
{
    _cleanup_(cs_reader_freep) CsReader *rd = NULL;
    int r = cs_reader_new(repo, &rd);
    if (r < 0)
        return log_error_errno(r, "could not start reading the repository: %m");
    r = cs_reader_write_fd(rd, &o->content, fd, false);
    if (r == -EBADMSG)
        return log_error_errno(r, "archived WAL file \"%s\" of node \"%s\" is damaged: not "
                                  "restored",
                               o->name, node);
    if (r < 0)
        return log_error_errno(r, "could not restore WAL file \"%s\" of node \"%s\": %m",
                               o->name, node);
    if ((r = verify_restored(fd, name, o, node)) < 0)
        return r;
    if (fsync(fd) < 0)
        return log_error_errno(-errno, "could not fsync \"%s\": %m", tmp);
    return 0;
}

int agent_wal_restore(CsRepo *repo, const char *node, const char *filename, const char *target)
{
    CsWalName name;
    char objname[CS_WAL_OBJECT_NAME_MAX];
    int r = check_names(node, filename, &name, objname);
    if (r < 0)
        return r;
    _cleanup_(cs_wal_object_clear) CsWalObject o = { 0 };
    r = cs_wal_object_load(repo, objname, &o);
    if (r == -ENOENT) { /* the normal end of recovery: PostgreSQL asks until a file is missing */
        log_debug("WAL file \"%s\" of node \"%s\" is not archived", filename, node);
        return AGENT_WAL_NOT_ARCHIVED;
    }
    if (r < 0)
        return log_object_error(r, objname);
    if (o.kind != name.kind)
        return log_object_error(-EBADMSG, objname);

    _cleanup_free_ char *tmp = NULL;
    if (asprintf(&tmp, "%s.pitr-XXXXXX", target) < 0)
        return log_error_errno(-ENOMEM, "out of memory");
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0)
        return log_error_errno(-errno, "could not create a temporary file beside \"%s\": %m",
                               target);
    r = restore_into(repo, fd, &name, &o, node, tmp);
    if (close(fd) < 0 && r == 0)
        r = log_error_errno(-errno, "could not write \"%s\": %m", tmp);
    if (r == 0 && rename(tmp, target) < 0)
        r = log_error_errno(-errno, "could not rename \"%s\" to \"%s\": %m", tmp, target);
    if (r < 0)
        unlink(tmp);
    else if ((r = fsync_dir_of(target)) < 0)
        log_error_errno(r, "could not fsync the directory of \"%s\": %m", target);
    else
        log_debug("restored %s \"%s\" of node \"%s\" to \"%s\" (%" PRIu64 " bytes)",
                  cs_wal_kind_to_string(name.kind), filename, node, target, o.size);
    return r;
}

/* ---- check ---- */

typedef struct Found {
    CsWalName name;
    char *objname;
} Found;

typedef struct ListCtx {
    Found *v;
    size_t n, cap;
} ListCtx;

static int list_visit(const char *objname, const CsWalName *name, void *userdata)
{
    ListCtx *c = userdata;
    if (GROW_ARRAY(c->v, c->cap, c->n, 256) < 0)
        return -ENOMEM;
    char *copy = strdup(objname);
    if (!copy)
        return -ENOMEM;
    c->v[c->n++] = (Found){ .name = *name, .objname = copy };
    return 0;
}

AgentWalReport *agent_wal_report_free(AgentWalReport *r)
{
    if (!r)
        return NULL;
    for (size_t i = 0; i < r->n_timelines; i++)
        free(r->timelines[i].missing);
    free(r->timelines);
    strv_free(r->history, r->n_history);
    strv_free(r->backup, r->n_backup);
    strv_free(r->damaged, r->n_damaged);
    free(r->sysids);
    free(r->node);
    free(r);
    return NULL;
}

DEFINE_CLEANUP_FUNC(AgentWalReport *, agent_wal_report_free)

static int strv_push(char ***v, size_t *n, const char *s)
{
    char **nv = realloc(*v, (*n + 1) * sizeof(**v));
    if (!nv)
        return -ENOMEM;
    *v = nv;
    if (!(nv[*n] = strdup(s)))
        return -ENOMEM;
    (*n)++;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A segment or partial segment that opened, reduced to what the gap check needs. */
typedef struct Seg {
    uint32_t tli;
    uint64_t size;
    uint64_t segno; /* valid when size is a valid segment size */
    bool is_partial;
} Seg;

static int cmp_seg(const void *a, const void *b)
{
    const Seg *x = a, *y = b;
    if (x->tli != y->tli)
        return x->tli < y->tli ? -1 : 1;
    if (x->size != y->size)
        return x->size < y->size ? -1 : 1;
    if (x->segno != y->segno)
        return x->segno < y->segno ? -1 : 1;
    return (int)x->is_partial - (int)y->is_partial;
}

/* Fill one timeline from its segments s[0..n), sorted by (size, segno). */
static int timeline_fill(AgentWalTimeline *t, const Seg *s, size_t n)
{
    *t = (AgentWalTimeline){ .tli = s[0].tli, .seg_size = s[0].size };
    for (size_t i = 0; i < n; i++) {
        if (s[i].size != t->seg_size)
            t->has_mixed_sizes = true;
        if (s[i].is_partial)
            t->n_partial++;
    }
    if (t->has_mixed_sizes) {
        t->seg_size = 0;
        t->n_segments = n;
        return 0;
    }
    t->first = s[0].segno;
    t->last = s[n - 1].segno;
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && s[i].segno == s[i - 1].segno)
            continue; /* a segment archived whole and as .partial */
        t->n_segments++;
        if (i == 0)
            continue;
        for (uint64_t g = s[i - 1].segno + 1; g < s[i].segno; g++) {
            if (t->n_missing_kept < AGENT_WAL_MISSING_KEEP) {
                if (t->n_missing_kept % 256 == 0) {
                    uint64_t *m = realloc(t->missing, (t->n_missing_kept + 256) * sizeof(*m));
                    if (!m)
                        return -ENOMEM;
                    t->missing = m;
                }
                t->missing[t->n_missing_kept++] = g;
            }
            t->n_missing++;
            if (t->n_missing_kept == AGENT_WAL_MISSING_KEEP) {
                t->n_missing += s[i].segno - g - 1; /* count the rest of this gap at once */
                break;
            }
        }
    }
    return 0;
}

int agent_wal_check(CsRepo *repo, const char *node, AgentWalReport **ret)
{
    if (!cs_wal_node_is_valid(node))
        return log_error_errno(-EINVAL, "invalid node name \"%s\"", node);
    ListCtx c = { 0 };
    int r = cs_wal_list(repo, node, NULL, list_visit, &c);
    _cleanup_(agent_wal_report_freep) AgentWalReport *rep = calloc(1, sizeof(*rep));
    _cleanup_free_ Seg *segs = calloc(c.n ? c.n : 1, sizeof(*segs));
    size_t n_segs = 0;
    if (r == 0 && (!rep || !segs || !(rep->node = strdup(node))))
        r = -ENOMEM;
    for (size_t i = 0; r == 0 && i < c.n; i++) {
        const Found *f = &c.v[i];
        CsWalObject o;
        int q = cs_wal_object_load(repo, f->objname, &o);
        if (q == -ENOMEM)
            r = q;
        else if (q < 0) {
            log_debug_errno(q, "WAL object \"%s\" could not be read: %m", f->objname);
            r = strv_push(&rep->damaged, &rep->n_damaged, f->objname);
        } else if (o.kind == CS_WAL_HISTORY)
            r = strv_push(&rep->history, &rep->n_history, o.name);
        else if (o.kind == CS_WAL_BACKUP)
            r = strv_push(&rep->backup, &rep->n_backup, o.name);
        else {
            Seg s = { .tli = f->name.tli, .size = o.size,
                      .is_partial = o.kind == CS_WAL_PARTIAL };
            if (cs_wal_segno(&f->name, o.size, &s.segno) < 0)
                r = strv_push(&rep->damaged, &rep->n_damaged, f->objname);
            else {
                segs[n_segs++] = s;
                bool known = false;
                for (size_t k = 0; k < rep->n_sysids; k++)
                    known |= rep->sysids[k] == o.sysid;
                if (!known) {
                    uint64_t *v = realloc(rep->sysids, (rep->n_sysids + 1) * sizeof(*v));
                    if (!v)
                        r = -ENOMEM;
                    else {
                        rep->sysids = v;
                        rep->sysids[rep->n_sysids++] = o.sysid;
                    }
                }
            }
        }
        if (q == 0)
            cs_wal_object_clear(&o);
    }
    for (size_t i = 0; i < c.n; i++)
        free(c.v[i].objname);
    free(c.v);
    if (r < 0)
        return log_error_errno(r, "could not check the WAL of node \"%s\": %m", node);
    if (n_segs + rep->n_history + rep->n_backup + rep->n_damaged == 0)
        return log_error_errno(-ENOENT, "no WAL is archived for node \"%s\" in \"%s\"", node,
                               cs_backend_location(repo->backend));

    if (n_segs)
        qsort(segs, n_segs, sizeof(*segs), cmp_seg);
    for (size_t i = 0; i < n_segs;) {
        size_t j = i;
        while (j < n_segs && segs[j].tli == segs[i].tli)
            j++;
        AgentWalTimeline *tv = realloc(rep->timelines, (rep->n_timelines + 1) * sizeof(*tv));
        if (!tv)
            return log_error_errno(-ENOMEM, "out of memory");
        rep->timelines = tv;
        AgentWalTimeline *t = &tv[rep->n_timelines++];
        *t = (AgentWalTimeline){ 0 };
        if ((r = timeline_fill(t, segs + i, j - i)) < 0)
            return log_error_errno(r, "out of memory");
        rep->n_missing += t->n_missing;
        i = j;
    }
    if (rep->n_history)
        qsort(rep->history, rep->n_history, sizeof(char *), cmp_str);
    if (rep->n_backup)
        qsort(rep->backup, rep->n_backup, sizeof(char *), cmp_str);
    if (rep->n_damaged)
        qsort(rep->damaged, rep->n_damaged, sizeof(char *), cmp_str);
    *ret = TAKE_PTR(rep);
    return 0;
}

int agent_wal_report_status(const AgentWalReport *r)
{
    if (r->n_damaged)
        return -EBADMSG;
    bool mixed = r->n_sysids > 1;
    for (size_t i = 0; i < r->n_timelines; i++)
        mixed |= r->timelines[i].has_mixed_sizes;
    return r->n_missing || mixed ? -ENODATA : 0;
}

static json_t *report_json(const AgentWalReport *r)
{
    json_t *o = json_object(), *tls = json_array(), *ids = json_array();
    if (!o || !tls || !ids) {
        json_decref(o);
        json_decref(tls);
        json_decref(ids);
        return NULL;
    }
    json_object_set_new(o, "node", json_string(r->node));
    json_object_set_new(o, "ok", json_boolean(agent_wal_report_status(r) == 0));
    json_object_set_new(o, "missing_count", json_integer((json_int_t)r->n_missing));
    for (size_t i = 0; i < r->n_sysids; i++) {
        char s[24];
        snprintf(s, sizeof(s), "%" PRIu64, r->sysids[i]);
        json_array_append_new(ids, json_string(s));
    }
    json_object_set_new(o, "system_identifiers", ids);
    for (size_t i = 0; i < r->n_timelines; i++) {
        const AgentWalTimeline *t = &r->timelines[i];
        json_t *tj = json_object(), *missing = json_array();
        char a[25], b[25];
        json_object_set_new(tj, "timeline", json_integer(t->tli));
        json_object_set_new(tj, "segments", json_integer((json_int_t)t->n_segments));
        json_object_set_new(tj, "partial", json_integer((json_int_t)t->n_partial));
        json_object_set_new(tj, "mixed_segment_sizes", json_boolean(t->has_mixed_sizes));
        if (!t->has_mixed_sizes) {
            cs_wal_segment_name(t->tli, t->first, t->seg_size, a);
            cs_wal_segment_name(t->tli, t->last, t->seg_size, b);
            json_object_set_new(tj, "segment_size", json_integer((json_int_t)t->seg_size));
            json_object_set_new(tj, "first", json_string(a));
            json_object_set_new(tj, "last", json_string(b));
        }
        for (size_t k = 0; k < t->n_missing_kept; k++) {
            cs_wal_segment_name(t->tli, t->missing[k], t->seg_size, a);
            json_array_append_new(missing, json_string(a));
        }
        json_object_set_new(tj, "missing", missing);
        json_object_set_new(tj, "missing_count", json_integer((json_int_t)t->n_missing));
        json_array_append_new(tls, tj);
    }
    json_object_set_new(o, "timelines", tls);
    const struct {
        const char *key;
        char *const *v;
        size_t n;
    } lists[] = {
        { "history", r->history, r->n_history },
        { "backup", r->backup, r->n_backup },
        { "damaged", r->damaged, r->n_damaged },
    };
    for (size_t l = 0; l < ARRAY_SIZE(lists); l++) {
        json_t *a = json_array();
        for (size_t i = 0; i < lists[l].n; i++)
            json_array_append_new(a, json_string(lists[l].v[i]));
        json_object_set_new(o, lists[l].key, a);
    }
    return o;
}

static void print_size(uint64_t n, FILE *f)
{
    if (n >= (1u << 20) && n % (1u << 20) == 0)
        fprintf(f, "%" PRIu64 " MiB", n >> 20);
    else
        fprintf(f, "%" PRIu64 " bytes", n);
}

int agent_wal_report_print(const AgentWalReport *r, bool json, FILE *f)
{
    if (json) {
        _cleanup_(json_decrefp) json_t *o = report_json(r);
        if (!o || json_dumpf(o, f, JSON_INDENT(2) | JSON_SORT_KEYS) < 0)
            return -ENOMEM;
        fputc('\n', f);
        return 0;
    }
    fprintf(f, "node \"%s\": %zu timeline%s, %zu timeline history file%s, %zu backup history "
               "file%s\n",
            r->node, r->n_timelines, r->n_timelines == 1 ? "" : "s", r->n_history,
            r->n_history == 1 ? "" : "s", r->n_backup, r->n_backup == 1 ? "" : "s");
    for (size_t i = 0; i < r->n_sysids; i++)
        fprintf(f, "system identifier: %" PRIu64 "%s\n", r->sysids[i],
                r->n_sysids > 1 ? " (more than one cluster archives as this node)" : "");
    for (size_t i = 0; i < r->n_timelines; i++) {
        const AgentWalTimeline *t = &r->timelines[i];
        char a[25], b[25];
        fprintf(f, "timeline %" PRIu32 ": ", t->tli);
        if (t->has_mixed_sizes) {
            fprintf(f, "%" PRIu64 " segments of different sizes: not checked\n", t->n_segments);
            continue;
        }
        cs_wal_segment_name(t->tli, t->first, t->seg_size, a);
        cs_wal_segment_name(t->tli, t->last, t->seg_size, b);
        fprintf(f, "%s .. %s, %" PRIu64 " segment%s", a, b, t->n_segments,
                t->n_segments == 1 ? "" : "s");
        if (t->n_partial)
            fprintf(f, " (%" PRIu64 " partial)", t->n_partial);
        fprintf(f, " of ");
        print_size(t->seg_size, f);
        if (!t->n_missing) {
            fprintf(f, ", no gaps\n");
            continue;
        }
        fprintf(f, ", %" PRIu64 " missing:\n", t->n_missing);
        /* Runs of consecutive missing numbers as ranges. */
        for (size_t k = 0; k < t->n_missing_kept;) {
            size_t e = k;
            while (e + 1 < t->n_missing_kept && t->missing[e + 1] == t->missing[e] + 1)
                e++;
            cs_wal_segment_name(t->tli, t->missing[k], t->seg_size, a);
            if (e == k)
                fprintf(f, "  missing %s\n", a);
            else {
                cs_wal_segment_name(t->tli, t->missing[e], t->seg_size, b);
                fprintf(f, "  missing %s .. %s (%zu segments)\n", a, b, e - k + 1);
            }
            k = e + 1;
        }
        if (t->n_missing > t->n_missing_kept)
            fprintf(f, "  ... and %" PRIu64 " more\n", t->n_missing - t->n_missing_kept);
    }
    for (size_t i = 0; i < r->n_history; i++)
        fprintf(f, "timeline history file %s\n", r->history[i]);
    for (size_t i = 0; i < r->n_damaged; i++)
        fprintf(f, "damaged: WAL object \"%s\" cannot be read\n", r->damaged[i]);
    if (agent_wal_report_status(r) == 0)
        fprintf(f, "WAL of node \"%s\" is complete: no gaps\n", r->node);
    return 0;
}
