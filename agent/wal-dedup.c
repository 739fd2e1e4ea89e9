#include "agent/wal-dedup.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/wal-images.h"
#include "chunkstore/read.h"
#include "common/buf.h"
#include "common/log.h"
#include "common/macro.h"

/* PostgreSQL's RELSEG_SIZE with its default 1 GiB segments of 8 KiB blocks: block b of a
 * relation is block b % RELSEG_BLOCKS of file "<relfilenode>.<b / RELSEG_BLOCKS>". A server
 * built otherwise only loses the sharing (its pages do not compare equal). */
#define RELSEG_BLOCKS 131072u
#define DEFAULT_TABLESPACE_OID 1663u /* base/ */
#define GLOBAL_TABLESPACE_OID 1664u  /* global/ */
/* The bytes of a page that may differ from its image: pd_lsn and pd_checksum. */
#define PAGE_HEADER_SKIP 10u
/* What remembering page files may cost: past it, later files are not remembered (their
 * images are stored as they are). A reference is small, a list of up to 32 slices at most. */
#define REMEMBERED_MAX (64u << 20)

typedef struct PageFile {
    char *relpath;
    CsContentRef ref;
    bool is_readable; /* stored before the writer's last flush */
} PageFile;

struct AgentWalDedup {
    CsRepo *repo;
    PageFile *files;
    size_t n_files, cap_files, remembered;
    bool is_sorted, is_full;
    CsReader *rd; /* created at the first flush */
    /* The level-0 list of the file last looked into, and where each entry starts. */
    const PageFile *flat_of;
    CsContentRef flat;
    uint64_t *starts;
    /* One segment's work, reused. */
    Buf seg, residual;
    uint64_t spliced; /* bytes the splices name */
    CsSplice *splices; /* `at` is the segment offset until the residual is cut */
    size_t n_splices, cap_splices;
    AgentWalDedupStats stats;
};

int agent_wal_dedup_new(CsRepo *repo, AgentWalDedup **ret)
{
    AgentWalDedup *d = calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    d->repo = repo;
    d->seg = d->residual = (Buf)BUF_INIT;
    *ret = d;
    return 0;
}

static void flat_forget(AgentWalDedup *d)
{
    cs_content_ref_free(&d->flat);
    free(d->starts);
    d->starts = NULL;
    d->flat_of = NULL;
}

AgentWalDedup *agent_wal_dedup_free(AgentWalDedup *d)
{
    if (!d)
        return NULL;
    for (size_t i = 0; i < d->n_files; i++) {
        free(d->files[i].relpath);
        cs_content_ref_free(&d->files[i].ref);
    }
    free(d->files);
    flat_forget(d);
    cs_reader_free(d->rd);
    buf_free(&d->seg);
    buf_free(&d->residual);
    free(d->splices);
    free(d);
    return NULL;
}

void agent_wal_dedup_stats(const AgentWalDedup *d, AgentWalDedupStats *ret)
{
    *ret = d->stats;
}

void agent_wal_dedup_file_stored(AgentWalDedup *d, const char *relpath, const CsDirEntry *e)
{
    if (!(e->flags & CS_ENTRY_FLAG_PAGES) || d->is_full)
        return;
    size_t cost = sizeof(PageFile) + strlen(relpath) + 1 +
                  (size_t)e->content.count * sizeof(CsChunkSlice);
    if (d->remembered + cost > REMEMBERED_MAX) {
        log_info("more page files than WAL images are matched against: the images of files "
                 "after \"%s\" are stored as they are",
                 relpath);
        d->is_full = true;
        return;
    }
    PageFile f = { .relpath = strdup(relpath) };
    if (!f.relpath || cs_content_ref_copy(&e->content, &f.ref) < 0 ||
        GROW_ARRAY(d->files, d->cap_files, d->n_files, 256) < 0) {
        /* Out of memory here only costs sharing; the store itself reports it soon enough. */
        free(f.relpath);
        cs_content_ref_free(&f.ref);
        return;
    }
    d->files[d->n_files++] = f;
    d->remembered += cost;
    d->is_sorted = false;
}

static int file_cmp(const void *a, const void *b)
{
    return strcmp(((const PageFile *)a)->relpath, ((const PageFile *)b)->relpath);
}

static PageFile *file_find(AgentWalDedup *d, const char *relpath)
{
    if (!d->is_sorted) {
        flat_forget(d); /* it points into the array */
        qsort(d->files, d->n_files, sizeof(*d->files), file_cmp);
        d->is_sorted = true;
    }
    PageFile key = { .relpath = (char *)(uintptr_t)relpath };
    return d->n_files ? bsearch(&key, d->files, d->n_files, sizeof(*d->files), file_cmp) : NULL;
}

/* The data file an image's record names, below `prefix` (where pg_wal's parent is). */
static bool image_relpath(const char *prefix, const AgentWalImage *im, char *out, size_t n)
{
    static const char *const forks[] = { "", "_fsm", "_vm", "_init" };
    if (im->fork >= ARRAY_SIZE(forks))
        return false;
    char segno[16] = "";
    if (im->block >= RELSEG_BLOCKS)
        snprintf(segno, sizeof(segno), ".%u", im->block / RELSEG_BLOCKS);
    int k;
    if (im->spc == DEFAULT_TABLESPACE_OID)
        k = snprintf(out, n, "%sbase/%u/%u%s%s", prefix, im->db, im->rel, forks[im->fork], segno);
    else if (im->spc == GLOBAL_TABLESPACE_OID)
        k = snprintf(out, n, "%sglobal/%u%s%s", prefix, im->rel, forks[im->fork], segno);
    else
        return false; /* other tablespaces are stored as trees of their own */
    return k > 0 && (size_t)k < n;
}

/* Make the pages of every file remembered so far readable: publish what the writer holds. */
static int make_readable(AgentWalDedup *d, CsWriter *w)
{
    int r = cs_writer_flush(w);
    if (r < 0)
        return r;
    for (size_t i = 0; i < d->n_files; i++)
        d->files[i].is_readable = true;
    if (d->rd)
        return cs_reader_refresh(d->rd);
    return cs_reader_new(d->repo, &d->rd);
}

/*
 * The page an image stands for, as stored: *ret_p (AGENT_WAL_PAGE_SIZE bytes, valid until the
 * next read) and the slice naming it. 1 when found, 0 when there is no such stored page (or it
 * cannot be read: the image is then stored as it is), -errno when the writer fails.
 */
static int stored_page(AgentWalDedup *d, CsWriter *w, const char *prefix, const AgentWalImage *im,
                       const uint8_t **ret_p, CsChunkSlice *ret_slice)
{
    char relpath[PATH_MAX];
    if (!image_relpath(prefix, im, relpath, sizeof(relpath)))
        return 0;
    PageFile *f = file_find(d, relpath);
    if (!f)
        return 0;
    int r;
    if (!f->is_readable && (r = make_readable(d, w)) < 0)
        return r;
    if (d->flat_of != f) {
        flat_forget(d);
        if (cs_reader_flatten(d->rd, &f->ref, &d->flat) < 0)
            return 0;
        if (!(d->starts = cs_content_ref_offsets(&d->flat))) {
            cs_content_ref_free(&d->flat);
            return -ENOMEM;
        }
        d->flat_of = f;
    }
    uint64_t pos = (uint64_t)(im->block % RELSEG_BLOCKS) * AGENT_WAL_PAGE_SIZE;
    size_t lo = 0, hi = d->flat.count; /* the entry holding pos: starts[lo] <= pos < starts[lo+1] */
    if (hi == 0 || pos + AGENT_WAL_PAGE_SIZE > d->starts[hi])
        return 0;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (d->starts[mid] <= pos)
            lo = mid;
        else
            hi = mid;
    }
    if (pos + AGENT_WAL_PAGE_SIZE > d->starts[lo + 1])
        return 0; /* the page spans two entries: not a page file as written */
    const CsChunkSlice *e = &d->flat.entries[lo];
    *ret_slice = (CsChunkSlice){ .id = e->id,
                                 .offset = e->offset + (uint32_t)(pos - d->starts[lo]),
                                 .length = AGENT_WAL_PAGE_SIZE };
    return cs_reader_slice(d->rd, ret_slice, ret_p) < 0 ? 0 : 1;
}

static int splice_add(AgentWalDedup *d, uint64_t seg_off, const CsChunkSlice *page,
                      uint32_t page_off, uint32_t len)
{
    if (GROW_ARRAY(d->splices, d->cap_splices, d->n_splices, 1024) < 0)
        return -ENOMEM;
    d->spliced += len;
    d->splices[d->n_splices++] = (CsSplice){
        .at = seg_off,
        .slice = { .id = page->id, .offset = page->offset + page_off, .length = len },
    };
    return 0;
}

/*
 * The splices that put the stored page's bytes where the image has them: the image's logical
 * bytes [10, page size - hole), which are page bytes at the same offset before the hole and
 * `hole_length` further on after it, cut where the image's pieces are cut by WAL page headers.
 * The bytes each splice names are compared with the segment bytes it stands for as it is made,
 * so a splice is only ever made for bytes known equal. 1 when all matched (splices added), 0
 * when any differs (none added), -ENOMEM.
 */
static int image_splices(AgentWalDedup *d, const uint8_t *seg, const AgentWalImage *im,
                         const uint8_t *page, const CsChunkSlice *page_slice)
{
    size_t mark = d->n_splices;
    uint64_t mark_bytes = d->spliced;
    uint32_t logical = 0; /* of the piece, in the image without its hole */
    for (size_t i = 0; i < im->n_pieces; i++) {
        const AgentWalPiece *pc = &im->pieces[i];
        uint32_t a = MAX(logical, PAGE_HEADER_SKIP), end = logical + pc->len;
        while (a < end) {
            /* up to the hole, or from it on */
            bool before_hole = a < im->hole_offset;
            uint32_t b = before_hole ? MIN(end, (uint32_t)im->hole_offset) : end;
            uint32_t page_off = before_hole ? a : a + im->hole_length;
            uint64_t seg_off = pc->off + (a - logical);
            int r = 0;
            if (page_off + (uint64_t)(b - a) > AGENT_WAL_PAGE_SIZE ||
                memcmp(seg + seg_off, page + page_off, b - a) != 0 ||
                (r = splice_add(d, seg_off, page_slice, page_off, b - a)) < 0) {
                d->n_splices = mark;
                d->spliced = mark_bytes;
                return r;
            }
            a = b;
        }
        logical = end;
    }
    return 1;
}

/* Cut the residual (the segment without the spliced bytes) and turn the splices' segment
 * offsets into residual offsets. */
static int cut_residual(AgentWalDedup *d, const uint8_t *seg, size_t n)
{
    d->residual.size = 0;
    uint64_t pos = 0;
    for (size_t i = 0; i < d->n_splices; i++) {
        CsSplice *s = &d->splices[i];
        if (s->at < pos || s->at + s->slice.length > n)
            return -EINVAL;
        if (buf_append(&d->residual, seg + pos, s->at - pos) < 0)
            return -ENOMEM;
        pos = s->at + s->slice.length;
        s->at = d->residual.size;
    }
    return buf_append(&d->residual, seg + pos, n - pos) < 0 ? -ENOMEM : 0;
}

/* Whether the residual, with the splices' lengths put back where they say, is the segment:
 * every residual byte where the segment has it, the splices (each made for bytes equal to the
 * segment's, image_splices) filling exactly the rest. */
static bool rebuilds(const AgentWalDedup *d, const uint8_t *seg, size_t n)
{
    const uint8_t *res = d->residual.data;
    uint64_t at = 0, in_seg = 0, spliced = 0;
    for (size_t i = 0; i <= d->n_splices; i++) {
        uint64_t to = i < d->n_splices ? d->splices[i].at : d->residual.size;
        if (to < at || in_seg + (to - at) > n || memcmp(res + at, seg + in_seg, to - at) != 0)
            return false;
        in_seg += to - at;
        at = to;
        if (i < d->n_splices) {
            in_seg += d->splices[i].slice.length;
            spliced += d->splices[i].slice.length;
        }
    }
    return in_seg == n && spliced == d->spliced && d->residual.size + spliced == n;
}

/* Find the segment's images, match them and cut the residual: d->splices and d->residual, or no
 * splices when nothing is shared. */
static int plan_segment(AgentWalDedup *d, CsWriter *w, const char *relpath, const char *prefix,
                        const uint8_t *seg, size_t n)
{
    d->n_splices = 0;
    d->spliced = 0;
    _cleanup_free_ AgentWalImage *v = NULL;
    size_t nv = 0;
    int r = agent_wal_images_find(seg, n, &v, &nv);
    if (r == -ENOMEM)
        return r;
    if (r < 0)
        return 0; /* not a PostgreSQL 15 segment: stored as it is */
    d->stats.images += nv;
    /* A reader holding one index snapshot for the whole tree would keep the index from reusing
     * its space while the writer indexes pack after pack. */
    if (nv && d->rd && (r = cs_reader_refresh(d->rd)) < 0)
        return r;
    size_t referred = 0;
    for (size_t i = 0; i < nv; i++) {
        const uint8_t *page;
        CsChunkSlice slice;
        if ((r = stored_page(d, w, prefix, &v[i], &page, &slice)) < 0)
            return r;
        if (r == 0)
            continue;
        if ((r = image_splices(d, seg, &v[i], page, &slice)) < 0)
            return r;
        referred += (size_t)r;
    }
    if (d->n_splices == 0)
        return 0;
    if ((r = cut_residual(d, seg, n)) < 0 && r != -EINVAL)
        return r;
    if (r < 0 || !rebuilds(d, seg, n)) {
        log_warning("WAL segment \"%s\" does not rebuild from its full-page images as matched: "
                    "stored as it is",
                    relpath);
        d->stats.rebuild_failures++;
        d->n_splices = 0;
        return 0;
    }
    d->stats.images_referred += referred;
    d->stats.bytes_referred += d->spliced;
    return 0;
}

/* "pg_wal/000000010000000000000001" or ".../pg_wal/<24 hex digits>": the length of what comes
 * before pg_wal (the data directory's path in the tree, with its slash), or -1. */
static ssize_t segment_prefix_len(const char *relpath)
{
    const char *name = strrchr(relpath, '/');
    if (!name || strlen(name + 1) != 24 || strspn(name + 1, "0123456789ABCDEF") != 24)
        return -1;
    size_t dir_len = (size_t)(name - relpath);
    if (dir_len < 6 || memcmp(name - 6, "pg_wal", 6) != 0 ||
        (dir_len > 6 && name[-7] != '/'))
        return -1;
    return (ssize_t)(dir_len - 6);
}

/* Read all of fd into d->seg; false when it is longer than a segment may be. */
static int read_segment(AgentWalDedup *d, int fd, bool *ret_fits)
{
    d->seg.size = 0;
    *ret_fits = false;
    if (!buf_extend(&d->seg, AGENT_WAL_DEDUP_SEG_MAX + 1))
        return -ENOMEM;
    size_t got = 0;
    for (;;) {
        ssize_t k = read(fd, d->seg.data + got, AGENT_WAL_DEDUP_SEG_MAX + 1 - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -errno;
        if (k == 0)
            break;
        got += (size_t)k;
        if (got > AGENT_WAL_DEDUP_SEG_MAX)
            return 0;
    }
    d->seg.size = got;
    *ret_fits = true;
    return 0;
}

int agent_wal_dedup_store_file(AgentWalDedup *d, CsWriter *w, const char *relpath, int fd,
                               const struct stat *st, CsContentRef *ret)
{
    ssize_t prefix_len = segment_prefix_len(relpath);
    if (prefix_len < 0 || st->st_size > AGENT_WAL_DEDUP_SEG_MAX)
        return 0;
    bool fits;
    int r = read_segment(d, fd, &fits);
    if (r < 0)
        return log_error_errno(r, "could not read \"%s\": %m", relpath);
    if (!fits)
        return 0; /* grew past a segment's size while read: the tree stores it from the start */
    _cleanup_free_ char *prefix = strndup(relpath, (size_t)prefix_len);
    if (!prefix)
        return -ENOMEM;
    d->stats.segments++;
    const uint8_t *seg = d->seg.data;
    size_t n = d->seg.size;
    if ((r = plan_segment(d, w, relpath, prefix, seg, n)) < 0)
        return r;
    r = d->n_splices ? cs_writer_put_spliced(w, d->residual.data, d->residual.size, d->splices,
                                             d->n_splices, ret)
                     : cs_writer_put_spliced(w, seg, n, NULL, 0, ret);
    return r < 0 ? r : 1;
}
