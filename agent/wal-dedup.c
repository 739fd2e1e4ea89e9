#include "agent/wal-dedup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/pagecheck.h"
#include "agent/wal-format.h"
#include "agent/wal-images.h"
#include "chunkstore/read.h"
#include "common/buf.h"
#include "common/fs-util.h"
#include "common/log.h"
#include "common/macro.h"

#define DEFAULT_TABLESPACE_OID 1663u /* base/ */
#define GLOBAL_TABLESPACE_OID 1664u  /* global/ */
/* The bytes of a page that may differ from its image: pd_lsn and pd_checksum. */
#define PAGE_HEADER_SKIP 10u
/* What remembering page files may cost: past it, later files are not remembered (their
 * images are stored as they are). A reference is small, a list of up to 32 slices at most. */
#define REMEMBERED_MAX (64u << 20)
/* Threads planning segments: a segment whose images are all index pages built at once costs
 * the planner far more (every page is read back) than the walk and the workers, and such
 * segments come in runs; two planners keep the machine busy through them. */
#define PLANNER_THREADS 2
/* Segments planned ahead of the walk, ready or being planned (each holds a segment and its
 * residual), besides the one being put. */
#define PLANS_AHEAD 2
/* Planned segments lent to the writer at once, at most; past it a segment is copied into the
 * writer's batches, so memory stays bounded whatever the writer's pace. */
#define PLANS_LENT_MAX 2

typedef struct PageFile {
    char *relpath;
    CsContentRef ref;
    bool is_readable; /* stored before the writer's last flush */
} PageFile;

/* What reading stored pages takes, one per thread. */
typedef struct Matcher {
    CsReader *rd;
    /* The level-0 list of the file last looked into, and where each entry starts. */
    const PageFile *flat_of;
    CsContentRef flat;
    uint64_t *starts;
} Matcher;

/* One segment, read and matched. */
typedef struct Plan {
    char name[32];
    size_t index; /* of the name in the planner's list */
    int error; /* reading or planning it failed (-errno): the walk's thread plans it again */
    bool fits; /* at most AGENT_WAL_DEDUP_SEG_MAX bytes */
    Buf seg, residual;
    CsSplice *splices; /* `at` is the segment offset until the residual is cut */
    size_t n_splices, cap_splices;
    uint64_t spliced;         /* bytes the splices name */
    AgentWalDedupStats stats; /* what this segment adds */
    struct AgentWalDedup *lender; /* while lent to the writer */
    struct Plan *next;
} Plan;

typedef struct Planner Planner;

typedef struct PlannerThread {
    Planner *pl;
    pthread_t thread;
    bool is_running;
    Matcher m;
    size_t planning; /* protected by the planner's lock: index being planned, or SIZE_MAX */
} PlannerThread;

/*
 * Reads and matches the segments of one pg_wal directory in name order, the order the walk
 * stores them in, ahead of it, so that the walk's thread only puts what is planned. Its threads
 * take the names in turn; plans are handed out in name order. Page files are not remembered
 * while it runs (agent_wal_dedup_file_stored stops it first), so it reads the array of them
 * without a lock.
 */
struct Planner {
    AgentWalDedup *d;
    PlannerThread threads[PLANNER_THREADS];
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int dir_fd;
    char *dir;    /* the directory's path in the tree */
    char *prefix; /* what comes before pg_wal in it */
    char **names;
    size_t n_names;
    /* protected by lock: */
    size_t next_name;
    Plan *ready, *spare; /* ready: by index */
    size_t n_ready, n_exited;
    bool stop;
};

struct AgentWalDedup {
    CsRepo *repo;
    PageFile *files;
    size_t n_files, cap_files, remembered;
    bool is_sorted, is_full;
    Matcher own;      /* the walk's thread's, when it plans a segment itself */
    Plan own_plan;
    Planner *planner; /* NULL: none running */
    AgentWalDedupStats stats;
    size_t plans_lent;
    bool is_freed; /* by agent_wal_dedup_free while plans were lent: the last one back frees */
};

int agent_wal_dedup_new(CsRepo *repo, AgentWalDedup **ret)
{
    AgentWalDedup *d = calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    d->repo = repo;
    d->own_plan.seg = d->own_plan.residual = (Buf)BUF_INIT;
    *ret = d;
    return 0;
}

static void flat_forget(Matcher *m)
{
    cs_content_ref_free(&m->flat);
    free(m->starts);
    m->starts = NULL;
    m->flat_of = NULL;
}

static void matcher_clear(Matcher *m)
{
    flat_forget(m);
    m->rd = cs_reader_free(m->rd);
}

static void plan_clear(Plan *p)
{
    buf_free(&p->seg);
    buf_free(&p->residual);
    free(p->splices);
    *p = (Plan){ 0 };
}

static void plans_free(Plan *p)
{
    for (Plan *next; p; p = next) {
        next = p->next;
        plan_clear(p);
        free(p);
    }
}

static void planner_stop(AgentWalDedup *d);

static void dedup_free(AgentWalDedup *d);

AgentWalDedup *agent_wal_dedup_free(AgentWalDedup *d)
{
    if (!d)
        return NULL;
    planner_stop(d);
    if (d->plans_lent)
        d->is_freed = true;
    else
        dedup_free(d);
    return NULL;
}

static void dedup_free(AgentWalDedup *d)
{
    for (size_t i = 0; i < d->n_files; i++) {
        free(d->files[i].relpath);
        cs_content_ref_free(&d->files[i].ref);
    }
    free(d->files);
    matcher_clear(&d->own);
    plan_clear(&d->own_plan);
    free(d);
}

void agent_wal_dedup_stats(const AgentWalDedup *d, AgentWalDedupStats *ret)
{
    *ret = d->stats;
}

void agent_wal_dedup_file_stored(AgentWalDedup *d, const char *relpath, const CsDirEntry *e)
{
    if (!(e->flags & CS_ENTRY_FLAG_PAGES) || d->is_full)
        return;
    planner_stop(d); /* it reads the array */
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
    flat_forget(&d->own); /* it may point into the array */
    d->files[d->n_files++] = f;
    d->remembered += cost;
    d->is_sorted = false;
}

static int file_cmp(const void *a, const void *b)
{
    return strcmp(((const PageFile *)a)->relpath, ((const PageFile *)b)->relpath);
}

/* On the walk's thread, before a planner starts and before its own lookups. */
static void files_sort(AgentWalDedup *d)
{
    if (d->is_sorted)
        return;
    flat_forget(&d->own);
    qsort(d->files, d->n_files, sizeof(*d->files), file_cmp);
    d->is_sorted = true;
}

static const PageFile *file_find(const AgentWalDedup *d, const char *relpath)
{
    PageFile key = { .relpath = (char *)(uintptr_t)relpath };
    return d->n_files ? bsearch(&key, d->files, d->n_files, sizeof(*d->files), file_cmp) : NULL;
}

/* The data file an image's record names, below `prefix` (where pg_wal's parent is). */
static bool image_relpath(const char *prefix, const AgentWalImage *im, char *out, size_t n)
{
    if (im->fork >= _AGENT_FORK_MAX)
        return false;
    /* A server built with other than 1 GiB segments only loses the sharing: its pages are not
     * where this looks, and do not compare equal. */
    AgentRelFile rf = { .relfilenode = im->rel,
                        .fork = (AgentRelFork)im->fork,
                        .segno = im->block / AGENT_RELSEG_BLOCKS };
    char name[AGENT_RELFILE_NAME_MAX];
    agent_relfile_name(&rf, name);
    int k;
    if (im->spc == DEFAULT_TABLESPACE_OID)
        k = snprintf(out, n, "%sbase/%u/%s", prefix, im->db, name);
    else if (im->spc == GLOBAL_TABLESPACE_OID)
        k = snprintf(out, n, "%sglobal/%s", prefix, name);
    else
        return false; /* other tablespaces are stored as trees of their own */
    return k > 0 && (size_t)k < n;
}

/* Make the pages of every file remembered so far readable: publish what the writer holds. On
 * the walk's thread (the writer is not shared), with no planner running. */
static int make_readable(AgentWalDedup *d, CsWriter *w)
{
    bool all = true;
    for (size_t i = 0; i < d->n_files && all; i++)
        all = d->files[i].is_readable;
    if (all)
        return 0;
    int r = cs_writer_flush(w);
    if (r < 0)
        return r;
    for (size_t i = 0; i < d->n_files; i++)
        d->files[i].is_readable = true;
    return 0;
}

/*
 * The page an image stands for, as stored: *ret_p (AGENT_WAL_PAGE_SIZE bytes, valid until the
 * matcher reads again) and the slice naming it. 1 when found, 0 when there is no such stored
 * page, it is not readable yet, or it cannot be read: the image is then stored as it is.
 */
static int stored_page(const AgentWalDedup *d, Matcher *m, const char *prefix,
                       const AgentWalImage *im, const uint8_t **ret_p, CsChunkSlice *ret_slice)
{
    char relpath[PATH_MAX];
    if (!image_relpath(prefix, im, relpath, sizeof(relpath)))
        return 0;
    const PageFile *f = file_find(d, relpath);
    if (!f || !f->is_readable)
        return 0;
    if (m->flat_of != f) {
        flat_forget(m);
        /* A list that cannot be read is kept as an empty one: the file's other images are not
         * tried again. */
        if (cs_reader_flatten(m->rd, &f->ref, &m->flat) < 0)
            m->flat = (CsContentRef){ 0 };
        if (!(m->starts = cs_content_ref_offsets(&m->flat))) {
            cs_content_ref_free(&m->flat);
            return -ENOMEM;
        }
        m->flat_of = f;
    }
    uint64_t pos = (uint64_t)(im->block % AGENT_RELSEG_BLOCKS) * AGENT_WAL_PAGE_SIZE;
    if (!cs_content_slice_at(&m->flat, m->starts, pos, AGENT_WAL_PAGE_SIZE, ret_slice))
        return 0; /* past the end, or across two entries: not a page file as written */
    return cs_reader_slice(m->rd, ret_slice, ret_p) < 0 ? 0 : 1;
}

static int splice_add(Plan *p, uint64_t seg_off, const CsChunkSlice *page,
                      uint32_t page_off, uint32_t len)
{
    if (GROW_ARRAY(p->splices, p->cap_splices, p->n_splices, 1024) < 0)
        return -ENOMEM;
    p->spliced += len;
    p->splices[p->n_splices++] = (CsSplice){
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
static int image_splices(Plan *p, const uint8_t *seg, const AgentWalImage *im,
                         const uint8_t *page, const CsChunkSlice *page_slice)
{
    size_t mark = p->n_splices;
    uint64_t mark_bytes = p->spliced;
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
                (r = splice_add(p, seg_off, page_slice, page_off, b - a)) < 0) {
                p->n_splices = mark;
                p->spliced = mark_bytes;
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
static int cut_residual(Plan *p, const uint8_t *seg, size_t n)
{
    p->residual.size = 0;
    uint64_t pos = 0;
    for (size_t i = 0; i < p->n_splices; i++) {
        CsSplice *s = &p->splices[i];
        if (s->at < pos || s->at + s->slice.length > n)
            return -EINVAL;
        if (buf_append(&p->residual, seg + pos, s->at - pos) < 0)
            return -ENOMEM;
        pos = s->at + s->slice.length;
        s->at = p->residual.size;
    }
    return buf_append(&p->residual, seg + pos, n - pos) < 0 ? -ENOMEM : 0;
}

/* Whether the residual, with the splices' lengths put back where they say, is the segment:
 * every residual byte where the segment has it, the splices (each made for bytes equal to the
 * segment's, image_splices) filling exactly the rest. */
static bool rebuilds(const Plan *p, const uint8_t *seg, size_t n)
{
    const uint8_t *res = p->residual.data;
    uint64_t at = 0, in_seg = 0, spliced = 0;
    for (size_t i = 0; i <= p->n_splices; i++) {
        uint64_t to = i < p->n_splices ? p->splices[i].at : p->residual.size;
        if (to < at || in_seg + (to - at) > n || memcmp(res + at, seg + in_seg, to - at) != 0)
            return false;
        in_seg += to - at;
        at = to;
        if (i < p->n_splices) {
            in_seg += p->splices[i].slice.length;
            spliced += p->splices[i].slice.length;
        }
    }
    return in_seg == n && spliced == p->spliced && p->residual.size + spliced == n;
}

/* Find the segment's images, match them and cut the residual: p->splices and p->residual, or
 * no splices when nothing is shared. Only running out of memory is an error. */
static int plan_segment(const AgentWalDedup *d, Matcher *m, Plan *p, const char *relpath,
                        const char *prefix)
{
    const uint8_t *seg = p->seg.data;
    size_t n = p->seg.size;
    p->n_splices = 0;
    p->spliced = 0;
    p->stats = (AgentWalDedupStats){ .segments = 1 };
    _cleanup_free_ AgentWalImage *v = NULL;
    size_t nv = 0;
    int r = agent_wal_images_find(seg, n, &v, &nv);
    if (r == -ENOMEM)
        return r;
    if (r < 0 || nv == 0)
        return 0; /* not a PostgreSQL 15 segment, or no images: stored as it is */
    p->stats.images = nv;
    /* A fresh index snapshot per segment: one held for the whole tree would keep the index
     * from reusing its space while the writer indexes pack after pack. */
    r = m->rd ? cs_reader_refresh(m->rd) : cs_reader_new(d->repo, &m->rd);
    if (r < 0)
        return r == -ENOMEM ? r : 0;
    size_t referred = 0;
    for (size_t i = 0; i < nv; i++) {
        const uint8_t *page;
        CsChunkSlice slice;
        if ((r = stored_page(d, m, prefix, &v[i], &page, &slice)) < 0)
            return r;
        if (r == 0)
            continue;
        if ((r = image_splices(p, seg, &v[i], page, &slice)) < 0)
            return r;
        referred += (size_t)r;
    }
    if (p->n_splices == 0)
        return 0;
    if ((r = cut_residual(p, seg, n)) < 0 && r != -EINVAL)
        return r;
    if (r < 0 || !rebuilds(p, seg, n)) {
        log_warning("WAL segment \"%s\" does not rebuild from its full-page images as matched: "
                    "stored as it is",
                    relpath);
        p->stats.rebuild_failures++;
        p->n_splices = 0;
        return 0;
    }
    p->stats.images_referred = referred;
    p->stats.bytes_referred = p->spliced;
    return 0;
}

static bool is_segment_name(const char *name)
{
    CsWalName n;
    return cs_wal_name_parse(name, &n) == 0 && n.kind == CS_WAL_SEGMENT;
}

/* "pg_wal/000000010000000000000001" or ".../pg_wal/<24 hex digits>": the length of what comes
 * before pg_wal (the data directory's path in the tree, with its slash), or -1. */
static ssize_t segment_prefix_len(const char *relpath)
{
    const char *name = strrchr(relpath, '/');
    if (!name || !is_segment_name(name + 1))
        return -1;
    size_t dir_len = (size_t)(name - relpath);
    if (dir_len < 6 || memcmp(name - 6, "pg_wal", 6) != 0 ||
        (dir_len > 6 && name[-7] != '/'))
        return -1;
    return (ssize_t)(dir_len - 6);
}

/* Read all of fd into p->seg; p->fits false when it is longer than a segment may be. */
static int read_segment(Plan *p, int fd)
{
    p->seg.size = 0;
    p->fits = false;
    if (!buf_extend(&p->seg, AGENT_WAL_DEDUP_SEG_MAX + 1))
        return -ENOMEM;
    size_t got;
    int r = read_full(fd, p->seg.data, AGENT_WAL_DEDUP_SEG_MAX + 1, &got);
    if (r < 0)
        return r;
    if (got > AGENT_WAL_DEDUP_SEG_MAX)
        return 0;
    p->seg.size = got;
    p->fits = true;
    return 0;
}

/* ---- the planner ---- */

/* Plan one segment of the planner's directory, read by name. */
static int planner_plan(Planner *pl, Matcher *m, Plan *p, const char *name)
{
    snprintf(p->name, sizeof(p->name), "%s", name);
    p->error = 0;
    p->n_splices = 0;
    p->stats = (AgentWalDedupStats){ 0 };
    int fd = openat(pl->dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        p->error = -errno;
        return 0;
    }
    int r = read_segment(p, fd);
    close(fd);
    if (r < 0 && r != -ENOMEM) {
        p->error = r;
        return 0;
    }
    if (r < 0 || !p->fits)
        return r;
    _cleanup_free_ char *relpath = NULL;
    if (asprintf(&relpath, "%s/%s", pl->dir, name) < 0)
        return -ENOMEM;
    return plan_segment(pl->d, m, p, relpath, pl->prefix);
}

static void ready_insert(Planner *pl, Plan *p)
{
    Plan **at = &pl->ready;
    while (*at && (*at)->index < p->index)
        at = &(*at)->next;
    p->next = *at;
    *at = p;
    pl->n_ready++;
}

/* How many names are being planned, and the lowest of them (SIZE_MAX: none). */
static size_t planning(const Planner *pl, size_t *ret_low)
{
    size_t n = 0, low = SIZE_MAX;
    for (size_t i = 0; i < PLANNER_THREADS; i++) {
        n += pl->threads[i].planning != SIZE_MAX;
        low = MIN(low, pl->threads[i].planning);
    }
    if (ret_low)
        *ret_low = low;
    return n;
}

static size_t planning_low(const Planner *pl)
{
    size_t low;
    planning(pl, &low);
    return low;
}

static void *planner_main(void *userdata)
{
    PlannerThread *t = userdata;
    Planner *pl = t->pl;
    pthread_mutex_lock(&pl->lock);
    while (!pl->stop && pl->next_name < pl->n_names) {
        if (pl->n_ready + planning(pl, NULL) >= PLANS_AHEAD) {
            pthread_cond_wait(&pl->cond, &pl->lock);
            continue;
        }
        Plan *p = pl->spare;
        if (p)
            pl->spare = p->next;
        size_t index = pl->next_name++;
        t->planning = index;
        pthread_mutex_unlock(&pl->lock);
        int r = p ? 0 : -ENOMEM;
        if (!p && (p = calloc(1, sizeof(*p))))
            r = 0;
        if (r == 0)
            r = planner_plan(pl, &t->m, p, pl->names[index]);
        if (r < 0 && p)
            p->error = r; /* the walk's thread plans it again, and reports what it meets */
        pthread_mutex_lock(&pl->lock);
        t->planning = SIZE_MAX;
        pthread_cond_broadcast(&pl->cond);
        if (!p)
            break; /* the walk plans this name itself: nothing waits for it */
        p->index = index;
        ready_insert(pl, p);
    }
    pl->n_exited++;
    pthread_cond_broadcast(&pl->cond);
    pthread_mutex_unlock(&pl->lock);
    return NULL;
}

/* What a planner holds, once its thread is gone or was never started. */
static void planner_free(Planner *pl)
{
    pthread_mutex_destroy(&pl->lock);
    pthread_cond_destroy(&pl->cond);
    plans_free(pl->ready);
    plans_free(pl->spare);
    for (size_t i = 0; i < PLANNER_THREADS; i++)
        matcher_clear(&pl->threads[i].m);
    strv_free(pl->names, pl->n_names);
    if (pl->dir_fd >= 0)
        close(pl->dir_fd);
    free(pl->dir);
    free(pl->prefix);
    free(pl);
}

static void planner_stop(AgentWalDedup *d)
{
    Planner *pl = d->planner;
    if (!pl)
        return;
    pthread_mutex_lock(&pl->lock);
    pl->stop = true;
    pthread_cond_broadcast(&pl->cond);
    pthread_mutex_unlock(&pl->lock);
    for (size_t i = 0; i < PLANNER_THREADS; i++)
        if (pl->threads[i].is_running)
            pthread_join(pl->threads[i].thread, NULL);
    planner_free(pl);
    d->planner = NULL;
}

/* Start planning the segments of directory `dir` (its path in the tree), from `first` on: the
 * walk has passed the names before it (unchanged segments the tree took from the previous
 * snapshot). Failing to start only means the walk's thread plans each segment itself. */
static void planner_start(AgentWalDedup *d, int dir_fd, const char *dir, const char *prefix,
                          const char *first)
{
    Planner *pl = calloc(1, sizeof(*pl));
    if (!pl)
        return;
    pthread_mutex_init(&pl->lock, NULL);
    pthread_cond_init(&pl->cond, NULL);
    pl->d = d;
    pl->dir_fd = fcntl(dir_fd, F_DUPFD_CLOEXEC, 3);
    pl->dir = strdup(dir);
    pl->prefix = strdup(prefix);
    if (pl->dir_fd < 0 || !pl->dir || !pl->prefix ||
        read_dir_names(pl->dir_fd, is_segment_name, &pl->names, &pl->n_names) < 0) {
        planner_free(pl);
        return;
    }
    while (pl->next_name < pl->n_names && strcmp(pl->names[pl->next_name], first) < 0)
        pl->next_name++;
    files_sort(d);
    for (size_t i = 0; i < PLANNER_THREADS; i++)
        pl->threads[i] = (PlannerThread){ .pl = pl, .planning = SIZE_MAX };
    d->planner = pl;
    size_t started = 0;
    for (size_t i = 0; i < PLANNER_THREADS; i++) {
        PlannerThread *t = &pl->threads[i];
        t->is_running = pthread_create(&t->thread, NULL, planner_main, t) == 0;
        started += t->is_running;
    }
    if (!started) { /* no thread: the walk's thread plans every segment */
        planner_stop(d);
        return;
    }
    pthread_mutex_lock(&pl->lock);
    pl->n_exited += PLANNER_THREADS - started;
    pthread_cond_broadcast(&pl->cond);
    pthread_mutex_unlock(&pl->lock);
}

/* The planner's plan of segment `name`, or NULL when it has none (a segment it did not list,
 * or could not read: the walk's thread plans it). Plans of segments the walk did not store
 * (gone meanwhile) are dropped. */
static Plan *planner_take(Planner *pl, const char *name)
{
    Plan *p = NULL;
    pthread_mutex_lock(&pl->lock);
    for (;;) {
        /* The first ready plan is the next one only once no earlier name is being planned. */
        while ((!pl->ready && pl->n_exited < PLANNER_THREADS) ||
               (pl->ready && pl->ready->index > planning_low(pl)))
            pthread_cond_wait(&pl->cond, &pl->lock);
        if (!pl->ready)
            break;
        int c = strcmp(pl->ready->name, name);
        if (c > 0)
            break;
        p = pl->ready;
        pl->ready = p->next;
        pl->n_ready--;
        pthread_cond_broadcast(&pl->cond);
        if (c == 0 && p->error == 0)
            break;
        p->next = pl->spare;
        pl->spare = p;
        p = NULL;
        if (c == 0)
            break;
    }
    pthread_mutex_unlock(&pl->lock);
    return p;
}

static void planner_give_back(Planner *pl, Plan *p)
{
    pthread_mutex_lock(&pl->lock);
    p->next = pl->spare;
    pl->spare = p;
    pthread_mutex_unlock(&pl->lock);
}

/* CsLoan.release of a planned segment: the writer has read it. */
static void plan_returned(void *userdata)
{
    Plan *p = userdata;
    AgentWalDedup *d = p->lender;
    p->lender = NULL;
    d->plans_lent--;
    if (d->planner) {
        planner_give_back(d->planner, p);
    } else {
        plan_clear(p);
        free(p);
    }
    if (d->is_freed && d->plans_lent == 0)
        dedup_free(d);
}

static void stats_add(AgentWalDedupStats *a, const AgentWalDedupStats *b)
{
    a->segments += b->segments;
    a->images += b->images;
    a->images_referred += b->images_referred;
    a->bytes_referred += b->bytes_referred;
    a->rebuild_failures += b->rebuild_failures;
}

int agent_wal_dedup_store_file(AgentWalDedup *d, CsWriter *w, const char *relpath, int dir_fd,
                               int fd, const struct stat *st, CsContentRef *ret)
{
    ssize_t prefix_len = segment_prefix_len(relpath);
    if (prefix_len < 0 || st->st_size > AGENT_WAL_DEDUP_SEG_MAX || !cs_writer_can_slice(w))
        return 0; /* a repository of format 2 names whole chunks only */
    const char *name = strrchr(relpath, '/') + 1;
    _cleanup_free_ char *prefix = strndup(relpath, (size_t)prefix_len);
    _cleanup_free_ char *dir = strndup(relpath, (size_t)(name - 1 - relpath));
    if (!prefix || !dir)
        return -ENOMEM;
    if (d->planner && strcmp(d->planner->dir, dir) != 0)
        planner_stop(d);
    int r;
    if (!d->planner) {
        /* The pages the segments refer to must be readable before anyone reads them. */
        if ((r = make_readable(d, w)) < 0)
            return r;
        planner_start(d, dir_fd, dir, prefix, name);
    }
    Plan *p = d->planner ? planner_take(d->planner, name) : NULL;
    if (!p) {
        p = &d->own_plan;
        if ((r = read_segment(p, fd)) < 0)
            return log_error_errno(r, "could not read \"%s\": %m", relpath);
        if (p->fits) {
            files_sort(d);
            if ((r = plan_segment(d, &d->own, p, relpath, prefix)) < 0)
                return r;
        }
    }
    /* A segment that grew past a segment's size while read is left to the tree. */
    bool fits = p->fits;
    r = 0;
    if (fits) {
        stats_add(&d->stats, &p->stats);
        const Buf *data = p->n_splices ? &p->residual : &p->seg;
        if (p != &d->own_plan && d->plans_lent < PLANS_LENT_MAX) {
            p->lender = d;
            d->plans_lent++;
            r = cs_writer_put_spliced(w, data->data, data->size, p->splices, p->n_splices,
                                      &(CsLoan){ .release = plan_returned, .userdata = p }, ret);
            return r < 0 ? r : 1;
        }
        r = cs_writer_put_spliced(w, data->data, data->size, p->splices, p->n_splices, NULL, ret);
    }
    if (p != &d->own_plan)
        planner_give_back(d->planner, p);
    return r < 0 ? r : fits ? 1 : 0;
}
