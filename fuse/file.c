#include "fuse/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chunkstore/format.h"
#include "chunkstore/index.h"
#include "common/endian.h"
#include "common/hex.h"
#include "common/log.h"
#include "common/macro.h"
#include "fuse/pgdata.h"

/* A read within this distance of the highest offset read so far continues a sequential run
 * (the kernel's asynchronous read-ahead sends requests slightly out of order). */
#define SEQ_SLACK (4u * 1024 * 1024)
/* At most this many read-ahead jobs are queued per read request. */
#define MAX_QUEUE_PER_READ 512u
/* Chunks of one record reserved and filled together (a record holds at most 4096). */
#define MAX_SIBLINGS 256u

/* ---- chunk maps ---- */

int pfs_file_map_load(CsReader *rd, const CsContentRef *ref, PfsFileMap **ret)
{
    CsContentRef flat;
    int r = cs_reader_flatten(rd, ref, &flat);
    if (r < 0)
        return r;
    PfsFileMap *m = calloc(1, sizeof(*m));
    uint64_t *offsets = cs_content_ref_offsets(&flat);
    uint32_t *chunk_len = malloc((flat.count ? flat.count : 1) * sizeof(*chunk_len));
    if (!m || !offsets || !chunk_len)
        r = -ENOMEM;
    for (size_t i = 0; i < flat.count && r == 0; i++) {
        const CsChunkSlice *e = &flat.entries[i];
        uint64_t need = (uint64_t)e->offset + e->length;
        /* The cache holds whole chunks, so a slice needs its chunk's length: the index has it
         * (a chunk it lacks fails when read, with the reader's message). */
        chunk_len[i] = e->length;
        if (!flat.has_slices)
            continue;
        if (need > UINT32_MAX) {
            char hex[2 * CS_CHUNK_ID_SIZE + 1];
            hex_encode(e->id.bytes, CS_CHUNK_ID_SIZE, hex);
            r = log_error_errno(-EBADMSG, "a slice of chunk %s ends past 4 GiB", hex);
            break;
        }
        if (i > 0 && memcmp(e->id.bytes, flat.entries[i - 1].id.bytes, CS_CHUNK_ID_SIZE) == 0)
            chunk_len[i] = chunk_len[i - 1];
        else if (cs_reader_chunk_length(rd, &e->id, &chunk_len[i]) < 0)
            chunk_len[i] = (uint32_t)need;
        /* A slice past its chunk's end (a damaged index or list): expecting a chunk that long
         * makes its read fail on the length check, where reading the slice would run off the
         * chunk's buffer. */
        if (need > chunk_len[i])
            chunk_len[i] = (uint32_t)need;
    }
    if (r < 0) {
        free(m);
        free(offsets);
        free(chunk_len);
        cs_content_ref_free(&flat);
        return r;
    }
    atomic_init(&m->refs, 1);
    m->count = flat.count;
    m->size = offsets[flat.count];
    m->chunks = flat.entries; /* taken over from flat */
    m->chunk_len = chunk_len;
    m->offsets = offsets;
    *ret = m;
    return 0;
}

PfsFileMap *pfs_file_map_ref(PfsFileMap *m)
{
    if (m)
        atomic_fetch_add(&m->refs, 1);
    return m;
}

void pfs_file_map_unref(PfsFileMap *m)
{
    if (m && atomic_fetch_sub(&m->refs, 1) == 1) {
        free(m->chunks);
        free(m->chunk_len);
        free(m->offsets);
        free(m);
    }
}

size_t pfs_file_map_find(const PfsFileMap *m, uint64_t off)
{
    return cs_offsets_find(m->offsets, m->count, off);
}

void pfs_file_node_free(PfsNode *n)
{
    pfs_file_map_unref(n->map);
    n->map = NULL;
}

/* ---- open and release ---- */

int pfs_file_open(PfsFs *fs, uint64_t ino, int flags, PfsFile **ret)
{
    if ((flags & O_ACCMODE) != O_RDONLY || (flags & (O_TRUNC | O_CREAT)))
        return -EROFS;
    PfsNode *n;
    int r = pfs_inode_get(fs->inodes, ino, &n);
    if (r < 0)
        return r;
    bool is_stats = n->kind == PFS_NODE_STATS;
    if (!is_stats && (n->kind != PFS_NODE_ENTRY || n->e->type == CS_ENTRY_DIR))
        r = -EISDIR;
    else if (!is_stats && n->e->type != CS_ENTRY_FILE)
        r = -EINVAL;
    PfsFile *f = r == 0 ? calloc(1, sizeof(*f)) : NULL;
    if (r == 0 && !f)
        r = -ENOMEM;
    if (r == 0 && is_stats && (r = pfs_fs_stats_json(fs, &f->own)) < 0)
        free(f);
    if (r < 0) {
        pfs_inode_unref(fs->inodes, n);
        return r;
    }

    /* A file the mount made up: its bytes are at hand, no chunk list. */
    f->made = is_stats                           ? &f->own
              : n->src == PFS_SRC_RECOVERY_CONF ? pfs_pgdata_recovery_conf(n)
                                                : NULL;
    if (f->made) {
        f->node = n;
        pthread_mutex_init(&f->lock, NULL);
        *ret = f;
        return 0;
    }
    pthread_mutex_lock(&n->lock);
    if (!n->map) {
        PfsReader *rd;
        if ((r = pfs_reader_pool_get(fs->readers, &rd)) == 0) {
            r = pfs_file_map_load(rd->rd, &n->e->content, &n->map);
            pfs_reader_pool_put(fs->readers, rd);
        }
        if (r == 0 && n->map->size != n->e->content.size)
            r = -EBADMSG; /* flatten checks this already; keep the promise local */
        if (r < 0) {
            _cleanup_free_ char *path = pfs_node_path(n);
            log_error_errno(r, "could not read the chunk list of \"%s\": %m", path ? path : "?");
            pfs_file_map_unref(n->map);
            n->map = NULL;
        }
    }
    if (r == 0) {
        n->n_open++;
        f->map = pfs_file_map_ref(n->map);
    }
    pthread_mutex_unlock(&n->lock);
    if (r < 0) {
        free(f);
        pfs_inode_unref(fs->inodes, n);
        return pfs_data_errno(r);
    }
    f->node = n;
    pthread_mutex_init(&f->lock, NULL);
    *ret = f;
    return 0;
}

void pfs_file_release(PfsFs *fs, PfsFile *f)
{
    if (!f)
        return;
    PfsNode *n = f->node;
    if (f->map) {
        pthread_mutex_lock(&n->lock);
        if (--n->n_open == 0) {
            pfs_file_map_unref(n->map);
            n->map = NULL;
        }
        pthread_mutex_unlock(&n->lock);
        pfs_file_map_unref(f->map);
    }
    pthread_mutex_destroy(&f->lock);
    buf_free(&f->own);
    free(f);
    pfs_inode_unref(fs->inodes, n);
}

int64_t pfs_file_lseek(PfsFs *fs, PfsFile *f, uint64_t off, int whence)
{
    (void)fs;
    if (whence != SEEK_DATA && whence != SEEK_HOLE)
        return -EINVAL;
    if (!f->made)
        return cs_entry_seek(f->node->e, off, whence == SEEK_HOLE);
    uint64_t size = f->made->size;
    if (off >= size)
        return -ENXIO;
    return (int64_t)(whence == SEEK_DATA ? off : size);
}

/* ---- decoding chunks into the cache ---- */

static int fill(PfsReader *rd, const CsChunkId *id, PfsChunk *ch)
{
    uint8_t *p;
    size_t n;
    /* A run stored alone is its record: the decoded buffer itself goes into the cache. */
    int r = cs_reader_chunk_take(rd->rd, id, &p, &n); /* logs the chunk and pack on damage */
    if (r < 0)
        return r;
    if (n != pfs_chunk_size(ch)) {
        free(p);
        char hex[2 * CS_CHUNK_ID_SIZE + 1];
        hex_encode(id->bytes, CS_CHUNK_ID_SIZE, hex);
        return log_error_errno(-EBADMSG, "chunk %s has %zu bytes where its file lists %zu", hex, n,
                               pfs_chunk_size(ch));
    }
    pfs_chunk_cache_adopt(ch, p);
    return 0;
}

static bool same_record_id(const PfsBadRecord *b, const CsChunkLoc *loc)
{
    return b->record_off == loc->record_off &&
           memcmp(b->pack.bytes, loc->pack.bytes, CS_PACK_ID_SIZE) == 0;
}

static bool is_bad_record(PfsFs *fs, const CsChunkLoc *loc)
{
    uint64_t now = pfs_now_ms();
    bool found = false;
    pthread_mutex_lock(&fs->bad_lock);
    for (size_t i = 0; i < PFS_BAD_RECORDS && !found; i++)
        found = fs->bad[i].until_ms > now && same_record_id(&fs->bad[i], loc);
    pthread_mutex_unlock(&fs->bad_lock);
    return found;
}

static void note_bad_record(PfsFs *fs, const CsChunkLoc *loc)
{
    uint64_t now = pfs_now_ms();
    pthread_mutex_lock(&fs->bad_lock);
    PfsBadRecord *slot = &fs->bad[0];
    for (size_t i = 0; i < PFS_BAD_RECORDS; i++)
        if (fs->bad[i].until_ms < slot->until_ms)
            slot = &fs->bad[i]; /* free or oldest */
    *slot = (PfsBadRecord){ .pack = loc->pack,
                            .record_off = loc->record_off,
                            .until_ms = now + PFS_BAD_RECORD_MS };
    pthread_mutex_unlock(&fs->bad_lock);
}

int pfs_file_base_get(void *userdata, CsReader *rd, const CsChunkId *id, const uint8_t **ret_p,
                      size_t *ret_n, void **ret_pin)
{
    PfsFs *fs = userdata;
    uint32_t len;
    int r = cs_reader_chunk_length(rd, id, &len);
    if (r < 0)
        return 1; /* the reader says what is missing */
    PfsChunk *ch;
    int st = pfs_chunk_cache_acquire(fs->cache, id, len, &ch);
    if (st < 0)
        return st == -ENOMEM ? 1 : st;
    if (st == PFS_CHUNK_LOADING) {
        /* Waiting here, with this thread's own entries reserved, could deadlock on a repository
         * whose bases loop; decoding it again costs only time. */
        pfs_chunk_cache_release(fs->cache, ch);
        return 1;
    }
    if (st == PFS_CHUNK_RESERVED) {
        uint8_t *p;
        size_t n;
        r = cs_reader_chunk_take(rd, id, &p, &n);
        if (r == 0 && n != len) {
            free(p);
            r = -EBADMSG;
        }
        if (r == 0)
            pfs_chunk_cache_adopt(ch, p);
        pfs_chunk_cache_complete(fs->cache, ch, r);
        if (r < 0) {
            pfs_chunk_cache_release(fs->cache, ch);
            return r;
        }
    }
    *ret_p = pfs_chunk_data(ch);
    *ret_n = pfs_chunk_size(ch);
    *ret_pin = ch;
    return 0;
}

void pfs_file_base_put(void *userdata, void *pin)
{
    PfsFs *fs = userdata;
    pfs_chunk_cache_release(fs->cache, pin);
}

/* Whether chunk j of m is member `at` of the record whose member list is `members`. */
static bool is_member_at(const Buf *members, size_t at, const PfsFileMap *m, size_t j)
{
    if (at >= members->size / CS_RECORD_MEMBER_SIZE)
        return false;
    const uint8_t *e = members->data + at * CS_RECORD_MEMBER_SIZE;
    return memcmp(e, m->chunks[j].id.bytes, CS_CHUNK_ID_SIZE) == 0 &&
           get_le32(e + CS_CHUNK_ID_SIZE) == m->chunk_len[j];
}

/*
 * Fill the RESERVED entry ch (chunk k of m), and the following chunks of m that live in the same
 * record and are not cached yet: the record is decoded once (the reader keeps it) and each
 * member is copied out. The neighbours are reserved before the record is decoded, so that
 * read-ahead on other threads does not decode it again; the record's member list (peeked at, a
 * plan only: the data comes through the authenticated path) names them without an index lookup
 * each. Returns chunk k's result; ch stays pinned.
 */
static int load_group(PfsFs *fs, PfsReader *rd, const PfsFileMap *m, size_t k, PfsChunk *ch)
{
    PfsChunk *sib[MAX_SIBLINGS];
    size_t sib_index[MAX_SIBLINGS], ns = 0, at;
    CsChunkLoc lk;
    bool has_loc = cs_index_reader_lookup(rd->ix, &m->chunks[k].id, &lk) == 0;
    if (has_loc && is_bad_record(fs, &lk)) {
        pfs_chunk_cache_complete(fs->cache, ch, -EBADMSG); /* logged when it was found */
        return -EBADMSG;
    }
    if (has_loc && cs_reader_peek_members(rd->rd, &lk, &rd->members, &at) == 0) {
        for (size_t j = k + 1, prev = k; j < m->count && ns < MAX_SIBLINGS; j++) {
            /* Another slice of the chunk just planned (pages of one run) comes with it. */
            if (memcmp(m->chunks[j].id.bytes, m->chunks[prev].id.bytes, CS_CHUNK_ID_SIZE) == 0)
                continue;
            if (!is_member_at(&rd->members, ++at, m, j))
                break;
            prev = j;
            PfsChunk *c;
            int st = pfs_chunk_cache_acquire(fs->cache, &m->chunks[j].id, m->chunk_len[j], &c);
            if (st < 0)
                break;
            if (st == PFS_CHUNK_RESERVED) {
                sib[ns] = c;
                sib_index[ns++] = j;
            } else
                pfs_chunk_cache_release(fs->cache, c); /* cached, or someone else is on it */
        }
    }
    int r = fill(rd, &m->chunks[k].id, ch);
    /* Same record: if chunk k failed, so do they (and one log line is enough); but the members
     * of a framed delta record fail one by one, when their own base is damaged. */
    bool is_record_bad = r < 0 && !(has_loc && cs_reader_record_is_framed(rd->rd, &lk));
    if (r == -EBADMSG && is_record_bad)
        note_bad_record(fs, &lk);
    pfs_chunk_cache_complete(fs->cache, ch, r);
    for (size_t i = 0; i < ns; i++) {
        int rs = is_record_bad ? r : fill(rd, &m->chunks[sib_index[i]].id, sib[i]);
        pfs_chunk_cache_complete(fs->cache, sib[i], rs);
        pfs_chunk_cache_release(fs->cache, sib[i]);
    }
    return r;
}

/* Chunk k of m, pinned, from the cache or decoded now. *rd is taken from the pool when first
 * needed and kept for the caller's next chunks. */
static int get_chunk(PfsFs *fs, const PfsFileMap *m, size_t k, PfsReader **rd, PfsChunk **ret)
{
    PfsChunk *ch;
    int st = pfs_chunk_cache_acquire(fs->cache, &m->chunks[k].id, m->chunk_len[k], &ch);
    if (st < 0)
        return st;
    int r = 0;
    if (st == PFS_CHUNK_LOADING)
        r = pfs_chunk_cache_wait(fs->cache, ch);
    else if (st == PFS_CHUNK_RESERVED) {
        if (!*rd && (r = pfs_reader_pool_get(fs->readers, rd)) < 0)
            pfs_chunk_cache_complete(fs->cache, ch, r);
        else
            r = load_group(fs, *rd, m, k, ch);
    }
    if (r < 0) {
        pfs_chunk_cache_release(fs->cache, ch);
        return r;
    }
    *ret = ch;
    return 0;
}

/* ---- read-ahead ---- */

static bool queue_chunk(PfsFs *fs, PfsFileMap *m, size_t k)
{
    if (pfs_chunk_cache_contains(fs->cache, &m->chunks[k].id))
        return true;
    PfsPrefetchJob job = { .ptr = pfs_file_map_ref(m), .index = k };
    if (pfs_prefetch_push(fs->prefetch, &job))
        return true;
    pfs_file_map_unref(m);
    return false;
}

void pfs_file_prefetch_run(const PfsPrefetchJob *job, void *userdata)
{
    PfsFs *fs = userdata;
    PfsFileMap *m = job->ptr;
    PfsChunk *ch;
    int st = pfs_chunk_cache_acquire(fs->cache, &m->chunks[job->index].id,
                                     m->chunk_len[job->index], &ch);
    if (st == PFS_CHUNK_RESERVED) {
        PfsReader *rd;
        int r = pfs_reader_pool_get(fs->readers, &rd);
        if (r < 0)
            pfs_chunk_cache_complete(fs->cache, ch, r);
        else {
            (void)load_group(fs, rd, m, job->index, ch); /* a failure is logged; a read retries */
            pfs_reader_pool_put(fs->readers, rd);
        }
    }
    if (st >= 0)
        pfs_chunk_cache_release(fs->cache, ch);
    pfs_file_map_unref(m);
}

void pfs_file_prefetch_drop(const PfsPrefetchJob *job, void *userdata)
{
    (void)userdata;
    pfs_file_map_unref(job->ptr);
}

/* Queue read-ahead; returns whether the request continues a sequential run. */
static bool schedule(PfsFs *fs, PfsFile *f, uint64_t off, uint64_t end, size_t first, size_t last)
{
    PfsFileMap *m = f->map;
    if (!fs->prefetch)
        return false;
    /* Decode the later chunks of this request in parallel with the first. */
    for (size_t k = first + 1; k <= last; k++)
        if (!queue_chunk(fs, m, k))
            break;

    pthread_mutex_lock(&f->lock);
    bool is_sequential = off <= f->frontier + SEQ_SLACK && end + SEQ_SLACK >= f->frontier;
    if (!is_sequential) {
        f->frontier = end;
        f->ra_next = last + 1;
    } else if (fs->params.readahead_bytes > 0) {
        f->frontier = MAX(f->frontier, end);
        uint64_t limit = f->frontier + fs->params.readahead_bytes;
        size_t k = MAX(f->ra_next, last + 1);
        for (unsigned queued = 0; k < m->count && m->offsets[k] < limit; k++, queued++)
            if (queued >= MAX_QUEUE_PER_READ || !queue_chunk(fs, m, k))
                break;
        f->ra_next = k;
    }
    pthread_mutex_unlock(&f->lock);
    return is_sequential;
}

/* ---- read ---- */

void pfs_read_reply_done(PfsFs *fs, PfsReadReply *rr)
{
    for (size_t i = 0; i < rr->n; i++)
        if (rr->pins[i])
            pfs_chunk_cache_release_spent(fs->cache, rr->pins[i], rr->is_spent[i]);
    free(rr->iov);
    free(rr->pins);
    free(rr->is_spent);
    *rr = (PfsReadReply){ 0 };
}

/* A file the mount made up: one iovec into its bytes, nothing pinned. */
static long read_made(const PfsFile *f, size_t size, uint64_t off, PfsReadReply *ret)
{
    if (off >= f->made->size || size == 0)
        return 0;
    size_t n = (size_t)MIN((uint64_t)size, f->made->size - off);
    PfsReadReply rr = { .iov = calloc(1, sizeof(*rr.iov)),
                        .pins = calloc(1, sizeof(*rr.pins)),
                        .is_spent = calloc(1, sizeof(*rr.is_spent)),
                        .n = 1,
                        .bytes = n };
    if (!rr.iov || !rr.pins || !rr.is_spent) {
        free(rr.iov);
        free(rr.pins);
        free(rr.is_spent);
        return -ENOMEM;
    }
    rr.iov[0] = (struct iovec){ .iov_base = f->made->data + off, .iov_len = n };
    *ret = rr;
    return (long)n;
}

long pfs_file_read(PfsFs *fs, PfsFile *f, size_t size, uint64_t off, PfsReadReply *ret)
{
    PfsFileMap *m = f->map;
    *ret = (PfsReadReply){ 0 };
    atomic_fetch_add(&fs->n_reads, 1);
    if (f->made)
        return read_made(f, size, off, ret);
    if (off >= m->size || size == 0)
        return 0;
    uint64_t end = off + MIN((uint64_t)size, m->size - off);
    size_t first = pfs_file_map_find(m, off), last = pfs_file_map_find(m, end - 1);
    size_t n = last - first + 1;
    PfsReadReply rr = { .iov = calloc(n, sizeof(*rr.iov)),
                        .pins = calloc(n, sizeof(*rr.pins)),
                        .is_spent = calloc(n, sizeof(*rr.is_spent)) };
    if (!rr.iov || !rr.pins || !rr.is_spent) {
        pfs_read_reply_done(fs, &rr);
        return -ENOMEM;
    }
    bool is_sequential = schedule(fs, f, off, end, first, last);

    PfsReader *rd = NULL;
    int r = 0;
    for (size_t k = first; k <= last; k++) {
        PfsChunk *ch;
        if ((r = get_chunk(fs, m, k, &rd, &ch)) < 0)
            break;
        uint64_t from = MAX(off, m->offsets[k]), to = MIN(end, m->offsets[k + 1]);
        rr.pins[rr.n] = ch;
        rr.iov[rr.n].iov_base = pfs_chunk_data(ch) + m->chunks[k].offset + (from - m->offsets[k]);
        rr.iov[rr.n].iov_len = (size_t)(to - from);
        /* A sequential reader that has a chunk's last byte is done with it, whether it took
         * the chunk in one request or, for a run of pages, in several: the kernel's page cache
         * has the bytes now. Under direct_io it has nothing, and the cache is all there is. */
        rr.is_spent[rr.n] = is_sequential && !fs->params.direct_io && to == m->offsets[k + 1] &&
                            m->chunks[k].offset + m->chunks[k].length == m->chunk_len[k];
        rr.n++;
    }
    pfs_reader_pool_put(fs->readers, rd);
    if (r < 0) {
        pfs_read_reply_done(fs, &rr);
        atomic_fetch_add(&fs->read_errors, 1);
        _cleanup_free_ char *path = pfs_node_path(f->node);
        log_error_errno(r, "could not read \"%s\" at offset %llu: %m", path ? path : "?",
                        (unsigned long long)off);
        return pfs_data_errno(r);
    }
    rr.bytes = (size_t)(end - off);
    atomic_fetch_add(&fs->read_bytes, rr.bytes);
    *ret = rr;
    return (long)rr.bytes;
}
