#include "chunkstore/store.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <zstd.h>

#include "chunkstore/crypto.h"
#include "chunkstore/read.h"
#include "common/endian.h"
#include "common/fs-util.h"
#include "common/log.h"
#include "common/macro.h"

#define INDEX_TOUCHES_PER_RELEASE 512 /* at most 32 MiB of the index mapped at once */
#define BATCH_DATA_SIZE (4u << 20) /* new input bytes per batch; a carried tail comes on top */
#define INFLIGHT_BUCKETS 65536u

typedef struct Cut {
    uint32_t off, len;
} Cut;

/* A slice of input: its chunks are hashed and deduplicated by one worker. */
typedef struct Batch {
    uint8_t *data; /* `own`, or memory lent to the put (CsLoan) */
    uint8_t *own;
    size_t len, cap;
    Cut *cuts;
    CsChunkId *ids;
    CsChunkSlice *refs; /* what the content list says for each cut, once processed */
    size_t n_cuts, cuts_cap;
    bool is_done;            /* protected by CsWriter.lock */
    struct Batch *next;      /* free list or, once submitted, the caller's order list */
    struct Batch *work_next; /* protected by CsWriter.lock: the workers' queue */
    size_t scan_pos;         /* CDC: bytes already scanned by the chunker */
    struct Put *owner;       /* the put whose content this is */
    uint64_t first_index;    /* index of the batch's first chunk in its put */
} Batch;

/* The content list being built for one put: level-0 entries in input order. */
typedef struct EntryList {
    CsChunkSlice *v;
    size_t n, cap;
    uint64_t size;
    int spill_fd;      /* > 0 once entries went to a temporary file */
    uint64_t n_spilled; /* entries in the spill file */
} EntryList;

/* Past this many entries a list goes to an unlinked temporary file, so memory does not grow
 * with the size of one file or stream (2 GiB of 8 KiB pages is 262144 entries, 9 MiB). */
#define LIST_SPILL_ENTRIES 8192

static void entry_list_free(EntryList *l);

/* One put whose batches may still be in the pipeline; resolved by cs_writer_sync(). */
typedef struct Put {
    EntryList l;
    CsContentRef *ret;
    bool is_meta; /* directory objects and chunk lists: grouped apart from file data */
    bool is_pages; /* cut into fixed pages */
    CsContentRef previous; /* level 0: the content's previous version, the bases of its deltas */
    uint64_t *previous_starts; /* offset of each entry of `previous`, and its size at the end */
    uint64_t chunks_cut;   /* chunks handed to batches so far */
    /* cs_writer_put_spliced: slices inserted into the content list at input offsets */
    CsSplice *splices;
    size_t n_splices, next_splice;
    uint64_t input_listed; /* input bytes whose entries are in the list so far */
    /* The memory the put reads is lent (cs_writer_put_spliced): given back once every batch
     * made of it is harvested. */
    CsLoan loan;
    size_t batches_out; /* submitted, not harvested yet */
    bool is_read;       /* every batch is submitted */
    struct Put *next;
} Put;

static void put_loan_end(Put *p)
{
    if (p->loan.release) {
        void (*release)(void *userdata) = p->loan.release;
        p->loan.release = NULL;
        release(p->loan.userdata);
    }
}

static void put_free(Put *p)
{
    put_loan_end(p);
    entry_list_free(&p->l);
    cs_content_ref_free(&p->previous);
    free(p->previous_starts);
    free(p->splices);
    free(p);
}

/* Chunks not yet indexed, so that two copies in one run are stored once. */
typedef struct InflightNode {
    CsChunkId id;
    struct InflightNode *next;
} InflightNode;

/* New chunks gathered for one record. */
typedef struct Group {
    Buf data;    /* the members' bytes; in a framed group, their frames */
    uint64_t raw_len; /* the members' lengths added up */
    Buf members; /* CsRecordMember array */
    size_t n_members;
    Buf pages;   /* CsPageAlias array: the pages of the runs among the members */
    /* delta group only: */
    Buf bases;   /* CsChunkSlice array: distinct bases, in prefix order; framed: one per member */
    size_t n_bases;
    Buf prefix;  /* their plaintexts, concatenated (not framed) */
    Buf frame_lens; /* framed (version 4): the length of each member's frame, u32 LE */
    uint8_t depth;
} Group;

/* Content-defined chunks (streams, ordinary files), new pages of page files, metadata
 * (directory objects, chunk lists) so that reading a directory does not decode half a megabyte
 * of file data, and changed pages compressed against their previous version. */
enum { GROUP_DATA, GROUP_PAGES, GROUP_META, GROUP_DELTA, GROUP_KINDS };
/* Content-defined chunks are gathered into records this many times group_size (at most
 * CS_MAX_GROUP_SIZE): WAL and other stream data compress better in larger frames (pg_wal of a
 * pgbench -s 60 load, zstd -3: 42.1 MB in 512 KiB frames, 41.1 MB in 2 MiB), while runs of
 * heap and index pages do not (40.8 MB at 512 KiB, 41.5 MB at 2 MiB), and a random read of a
 * page file should decode little. */
#define DATA_GROUP_FACTOR 4u

/* Recycled buffers: group data, record payloads and member arrays are large and allocated
 * once per record; reusing them keeps the allocator from fragmenting over a long backup.
 * Two pools, by role: a buffer grows to the largest use it gets, so if member lists shared a
 * pool with group data, every buffer would in time grow to a group's size, and peak memory
 * would creep up over a long backup instead of being reached in its first records. */
typedef struct BufPool {
    pthread_mutex_t lock;
    Buf *v; /* protected by lock */
    size_t n, cap;
    size_t touch; /* a new buffer is allocated and written to this size at once */
} BufPool;

static Buf pool_get(BufPool *p)
{
    Buf b = BUF_INIT;
    pthread_mutex_lock(&p->lock);
    if (p->n)
        b = p->v[--p->n];
    pthread_mutex_unlock(&p->lock);
    /* Sized (and its pages faulted in) for the largest use it may get, so that memory reaches
     * its peak in the first records of a backup rather than creeping towards it over hours as
     * each recycled buffer meets a larger group. A failure here shows at the caller's own
     * reserve. */
    if (!b.data && p->touch && buf_reserve(&b, p->touch) == 0)
        memset(b.data, 0, p->touch);
    b.size = 0;
    return b;
}

static void pool_put(BufPool *p, Buf *b)
{
    pthread_mutex_lock(&p->lock);
    if (b->data && p->n < p->cap) {
        p->v[p->n++] = *b;
        *b = (Buf)BUF_INIT;
    }
    pthread_mutex_unlock(&p->lock);
    buf_free(b);
}

static int pool_init(BufPool *p, size_t cap)
{
    pthread_mutex_init(&p->lock, NULL);
    p->v = calloc(cap, sizeof(*p->v));
    p->cap = cap;
    return p->v ? 0 : -ENOMEM;
}

static void pool_done(BufPool *p)
{
    for (size_t i = 0; i < p->n; i++)
        buf_free(&p->v[i]);
    free(p->v);
    pthread_mutex_destroy(&p->lock);
}

/* A compressed record waiting for the pack thread. A NULL payload asks for a flush. */
typedef struct PlainRecord {
    Buf members; /* CsRecordMember array */
    size_t n_members;
    Buf pages;   /* CsPageAlias array */
    Buf bases;   /* CsChunkSlice array, for a delta record */
    size_t n_bases;
    uint8_t depth;
    uint8_t flags;
    uint32_t raw_len;
    Buf payload;
    bool is_flush;
    struct PlainRecord *next;
} PlainRecord;

struct CsWriter {
    CsRepo *repo;
    CsLock *repo_lock; /* shared: nothing may delete packs while data is written */
    unsigned n_threads;
    pthread_t *workers;
    pthread_t pack_thread;
    bool has_pack_thread;

    pthread_mutex_t lock;
    pthread_cond_t cond; /* any state change below */
    Batch *free_batches;            /* protected by lock */
    Batch *work_head, *work_tail;   /* protected by lock: batches for workers */
    Batch *order_head, *order_tail; /* caller only: submitted batches in input order */
    PlainRecord *rec_head, *rec_tail; /* protected by lock: records for the pack thread */
    unsigned n_records;               /* protected by lock */
    unsigned max_records;
    size_t queued_bytes;              /* protected by lock: payloads of the queued records */
    size_t max_queued_bytes;
    unsigned flushes_done;            /* protected by lock */
    bool is_stopping;                 /* protected by lock */
    int error;                        /* protected by lock: first failure of any stage */

    pthread_mutex_t inflight_lock;
    InflightNode **inflight; /* protected by inflight_lock */

    pthread_mutex_t group_lock;
    Group groups[GROUP_KINDS]; /* protected by group_lock */
    size_t group_seal[GROUP_KINDS]; /* a group is sealed into a record at this size */
    bool can_delta;            /* the repository's format has delta records */
    bool can_run;              /* ... and runs and slices (version 3) */
    bool can_key;              /* ... and keyed deltas in framed records (version 4) */
    BufPool data_pool;   /* group data, prefixes and record payloads: up to a group's size */
    BufPool member_pool; /* member and base lists: up to CS_RECORD_MAX_* entries */

    struct Put *puts, *puts_tail; /* caller only: puts not resolved yet, in order */
    CsChunker chunker;
    CsWriterStats stats; /* updated with atomics */
    void (*progress)(const CsWriterStats *s, void *userdata);
    void *progress_userdata;
    struct timespec last_progress;
};

static void batch_free(Batch *b)
{
    if (!b)
        return;
    free(b->own);
    free(b->cuts);
    free(b->ids);
    free(b->refs);
    free(b);
}

static void set_error(CsWriter *w, int r)
{
    pthread_mutex_lock(&w->lock);
    if (!w->error)
        w->error = r;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

static int get_error(CsWriter *w)
{
    pthread_mutex_lock(&w->lock);
    int r = w->error;
    pthread_mutex_unlock(&w->lock);
    return r;
}

static size_t inflight_bucket(const CsChunkId *id)
{
    return (size_t)(get_le32(id->bytes) & (INFLIGHT_BUCKETS - 1));
}

/* Returns 1 if the id was already in flight, 0 if it was added, -ENOMEM. */
static int inflight_add(CsWriter *w, const CsChunkId *id)
{
    size_t b = inflight_bucket(id);
    pthread_mutex_lock(&w->inflight_lock);
    for (InflightNode *n = w->inflight[b]; n; n = n->next)
        if (memcmp(n->id.bytes, id->bytes, CS_CHUNK_ID_SIZE) == 0) {
            pthread_mutex_unlock(&w->inflight_lock);
            return 1;
        }
    InflightNode *n = malloc(sizeof(*n));
    if (!n) {
        pthread_mutex_unlock(&w->inflight_lock);
        return -ENOMEM;
    }
    n->id = *id;
    n->next = w->inflight[b];
    w->inflight[b] = n;
    pthread_mutex_unlock(&w->inflight_lock);
    return 0;
}

static void inflight_remove(CsWriter *w, const CsChunkId *id)
{
    size_t b = inflight_bucket(id);
    pthread_mutex_lock(&w->inflight_lock);
    for (InflightNode **p = &w->inflight[b]; *p; p = &(*p)->next)
        if (memcmp((*p)->id.bytes, id->bytes, CS_CHUNK_ID_SIZE) == 0) {
            InflightNode *n = *p;
            *p = n->next;
            free(n);
            break;
        }
    pthread_mutex_unlock(&w->inflight_lock);
}

static void record_free(CsWriter *w, PlainRecord *rec)
{
    if (!rec)
        return;
    pool_put(&w->member_pool, &rec->members);
    pool_put(&w->data_pool, &rec->payload);
    pool_put(&w->member_pool, &rec->bases);
    buf_free(&rec->pages);
    free(rec);
}

/* Hand a record to the pack thread, waiting while its queue is full (back-pressure). */
static int record_push(CsWriter *w, PlainRecord *rec)
{
    pthread_mutex_lock(&w->lock);
    /* Bounded in records and in bytes, so that larger records (content-defined chunks) do
     * not hold more memory in the queue; one record is always let in. */
    while (w->n_records > 0 &&
           (w->n_records >= w->max_records ||
            w->queued_bytes + rec->payload.size > w->max_queued_bytes) &&
           !w->error && !rec->is_flush)
        pthread_cond_wait(&w->cond, &w->lock);
    int r = w->error;
    if (r == 0) {
        rec->next = NULL;
        if (w->rec_tail)
            w->rec_tail->next = rec;
        else
            w->rec_head = rec;
        w->rec_tail = rec;
        w->n_records++;
        w->queued_bytes += rec->payload.size;
        pthread_cond_broadcast(&w->cond);
    }
    pthread_mutex_unlock(&w->lock);
    if (r)
        record_free(w, rec);
    return r;
}

/* Compress a full group into a record and queue it. Takes ownership of g's contents. */
static int group_seal(CsWriter *w, ZSTD_CCtx *cctx, Group *g)
{
    PlainRecord *rec = calloc(1, sizeof(*rec));
    if (!rec)
        return -ENOMEM;
    rec->members = g->members;
    g->members = (Buf)BUF_INIT;
    rec->n_members = g->n_members;
    rec->pages = g->pages;
    g->pages = (Buf)BUF_INIT;
    rec->raw_len = (uint32_t)g->raw_len;
    rec->payload = pool_get(&w->data_pool);
    int level = w->repo->config.zstd_level;
    bool is_framed = g->frame_lens.size != 0;
    int r;
    if (is_framed) {
        /* The frames are compressed already: the table of their lengths, then the frames. */
        buf_clear(&rec->payload);
        r = buf_append(&rec->payload, g->frame_lens.data, g->frame_lens.size);
        if (r == 0)
            r = buf_append(&rec->payload, g->data.data, g->data.size);
        if (r == 0)
            r = CS_RECORD_FLAG_ZSTD | CS_RECORD_FLAG_DELTA | CS_RECORD_FLAG_FRAMED;
    } else if (g->n_bases)
        r = cs_record_compress_prefixed(cctx, level, g->prefix.data, g->prefix.size, g->data.data,
                                        g->data.size, &rec->payload);
    else
        r = cs_record_compress(cctx, level, g->data.data, g->data.size, &rec->payload);
    if (r > 0 && (r & CS_RECORD_FLAG_DELTA)) {
        if (w->can_run)
            r |= CS_RECORD_FLAG_SLICED_BASES;
        rec->bases = g->bases;
        g->bases = (Buf)BUF_INIT;
        rec->n_bases = g->n_bases;
        rec->depth = g->depth;
    }
    pool_put(&w->data_pool, &g->data);
    pool_put(&w->data_pool, &g->prefix);
    pool_put(&w->member_pool, &g->bases);
    buf_free(&g->frame_lens);
    *g = (Group){ 0 };
    if (r < 0) {
        record_free(w, rec);
        return r;
    }
    rec->flags = (uint8_t)r;
    return record_push(w, rec);
}

/* The base of a chunk in a delta group: its bytes join the prefix once per group. In a framed
 * group (version 4) the chunk comes as its frame, compressed against this base alone. */
typedef struct Base {
    CsChunkSlice slice;
    const uint8_t *p; /* its bytes */
    uint8_t depth;
    const Buf *frame; /* framed only */
} Base;

static bool same_slice(const CsChunkSlice *a, const CsChunkSlice *b)
{
    return a->offset == b->offset && a->length == b->length &&
           memcmp(a->id.bytes, b->id.bytes, CS_CHUNK_ID_SIZE) == 0;
}

static int group_add_base(Group *g, const Base *base)
{
    if (base->frame) {
        CsChunkSlice *m = (CsChunkSlice *)(void *)g->bases.data;
        m[g->n_bases++] = base->slice;
        g->depth = 1;
        return buf_append_le32(&g->frame_lens, (uint32_t)base->frame->size);
    }
    const CsChunkSlice *b = (const CsChunkSlice *)(void *)g->bases.data;
    /* Repeated bases (an all-zero page, say) are usually adjacent: a short look back finds them. */
    for (size_t i = g->n_bases; i > 0 && i + 16 > g->n_bases; i--)
        if (same_slice(&b[i - 1], &base->slice))
            return 0;
    int r = buf_append(&g->prefix, base->p, base->slice.length);
    if (r < 0)
        return r;
    CsChunkSlice *m = (CsChunkSlice *)(void *)g->bases.data;
    m[g->n_bases++] = base->slice;
    g->depth = (uint8_t)MAX(g->depth, base->depth + 1);
    return 0;
}

/* A new chunk for a group: what the record stores of it in one or more parts (a run's pages; a
 * framed delta's frame), its length, its base when it is a delta, the page aliases when it is a
 * run. */
typedef struct NewChunk {
    const CsChunkId *id;
    const struct iovec *parts;
    size_t n_parts;
    uint32_t length;
    const Base *base;
    const CsPageAlias *pages;
    size_t n_pages;
} NewChunk;

/* Add a new chunk to its shared group; seal the group when it is full. */
static int group_add(CsWriter *w, ZSTD_CCtx *cctx, int kind, const NewChunk *c)
{
    const Base *base = c->base;
    Group full = { 0 };
    int r = 0;
    pthread_mutex_lock(&w->group_lock);
    Group *g = &w->groups[kind];
    if (!g->members.data) {
        g->members = pool_get(&w->member_pool);
        g->data = pool_get(&w->data_pool);
        r = buf_reserve(&g->members, CS_RECORD_MAX_MEMBERS * sizeof(CsRecordMember));
        if (r == 0 && base) {
            g->bases = pool_get(&w->member_pool);
            g->prefix = pool_get(&w->data_pool);
            r = buf_reserve(&g->bases, CS_RECORD_MAX_BASES * sizeof(CsChunkSlice));
        }
    }
    if (r == 0 && base)
        r = group_add_base(g, base);
    for (size_t i = 0; r == 0 && i < c->n_parts; i++)
        r = buf_append(&g->data, c->parts[i].iov_base, c->parts[i].iov_len);
    if (r == 0 && c->n_pages)
        r = buf_append(&g->pages, c->pages, c->n_pages * sizeof(*c->pages));
    if (r == 0) {
        CsRecordMember *m = (CsRecordMember *)(void *)g->members.data;
        m[g->n_members].id = *c->id;
        m[g->n_members].length = c->length;
        g->n_members++;
        g->raw_len += c->length;
        if (g->raw_len >= w->group_seal[kind] || g->n_members == CS_RECORD_MAX_MEMBERS ||
            g->n_bases == CS_RECORD_MAX_BASES) {
            full = *g;
            *g = (Group){ 0 };
        }
    }
    pthread_mutex_unlock(&w->group_lock);
    if (r == 0 && full.n_members)
        r = group_seal(w, cctx, &full);
    return r;
}

/* Version 4: page i of batch b (n bytes at p) as a frame compressed against the key of its
 * previous version `prev`, when that is small enough to be worth it: a page that drifted far
 * from its key is stored whole and becomes the next versions' key. */
static bool keyed_base_for(CsWriter *w, CsReader *reader, ZSTD_CCtx *cctx, const CsChunkSlice *prev,
                           const uint8_t *p, uint32_t n, Buf *frame, Base *ret)
{
    CsDeltaKey key;
    if (cs_reader_delta_key(reader, prev, &key) < 0 || key.slice.length != n)
        return false;
    int r = cs_frame_compress(cctx, w->repo->config.zstd_level, key.p, n, p, n, frame);
    if (r < 0 || (double)frame->size * 16.0 > CS_DELTA_REKEY_SIXTEENTHS * n * key.stored_ratio)
        return false;
    *ret = (Base){ .slice = key.slice, .p = key.p, .depth = 0, .frame = frame };
    return true;
}

/* The previous version of page i of batch b, when it can serve as a delta base: indexed,
 * readable, the same length, and not at the end of a long chain. */
static bool base_for(CsWriter *w, const Batch *b, size_t i, uint32_t n, CsIndexReader *ird,
                     CsReader **reader, ZSTD_CCtx *cctx, Buf *frame, Base *ret)
{
    const Put *put = b->owner;
    const CsContentRef *prev = &put->previous;
    if (!w->can_delta || !prev->count)
        return false;
    uint64_t at = (b->first_index + i) * (uint64_t)w->repo->config.page_size;
    CsChunkSlice slice;
    if (!cs_content_slice_at(prev, put->previous_starts, at, n, &slice))
        return false;
    if (cs_index_reader_lookup(ird, &slice.id, NULL) < 0)
        return false;
    if (!*reader && cs_reader_new(w->repo, reader) < 0)
        return false;
    if (w->can_key)
        return keyed_base_for(w, *reader, cctx, &slice, b->data + b->cuts[i].off, n, frame, ret);
    const uint8_t *p;
    size_t len;
    uint8_t depth;
    /* A base that cannot be read (damaged: the reader says so) only costs the delta. */
    if (cs_reader_chunk_depth(*reader, &slice.id, &p, &len, &depth) < 0 ||
        (uint64_t)slice.offset + n > len || depth >= CS_DELTA_MAX_DEPTH)
        return false;
    *ret = (Base){ .slice = slice, .p = p + slice.offset, .depth = depth };
    return true;
}

/* Counts of one batch, added to the writer's stats at its end. */
typedef struct BatchCounts {
    uint64_t new_chunks, new_bytes, delta_chunks;
} BatchCounts;

static CsChunkSlice whole(const CsChunkId *id, uint32_t n)
{
    return (CsChunkSlice){ .id = *id, .offset = 0, .length = n };
}

/* Store cut i of b as a chunk of its own (unless an identical one is in flight). */
static int store_single(CsWriter *w, ZSTD_CCtx *cctx, Batch *b, size_t i, int kind,
                        const Base *base, BatchCounts *cnt)
{
    uint32_t n = b->cuts[i].len;
    b->refs[i] = whole(&b->ids[i], n);
    int r = inflight_add(w, &b->ids[i]);
    if (r != 0)
        return r < 0 ? r : 0;
    struct iovec part = { .iov_base = b->data + b->cuts[i].off, .iov_len = n };
    if (base && base->frame)
        part = (struct iovec){ .iov_base = base->frame->data, .iov_len = base->frame->size };
    NewChunk c = { .id = &b->ids[i], .parts = &part, .n_parts = 1, .length = n, .base = base };
    if ((r = group_add(w, cctx, kind, &c)) < 0)
        return r;
    cnt->new_chunks++;
    cnt->new_bytes += n;
    cnt->delta_chunks += base != NULL;
    return 0;
}

/* Store the new pages cuts[pending[0..n)] of b as one run: a chunk of their bytes whose id
 * comes from theirs, each page indexed with its place in it. One page is stored on its own. */
static int store_run(CsWriter *w, ZSTD_CCtx *cctx, CsIndexReader *rd, Batch *b,
                     const size_t *pending, size_t n, BatchCounts *cnt)
{
    if (n == 0)
        return 0;
    if (n == 1)
        return store_single(w, cctx, b, pending[0], GROUP_PAGES, NULL, cnt);
    CsChunkId ids[CS_RUN_MAX_PAGES], run;
    struct iovec parts[CS_RUN_MAX_PAGES];
    CsPageAlias pages[CS_RUN_MAX_PAGES];
    uint32_t off = 0;
    for (size_t k = 0; k < n; k++)
        ids[k] = b->ids[pending[k]];
    int r = cs_run_id(w->repo, ids, n, &run);
    if (r < 0)
        return r;
    for (size_t k = 0; k < n; k++) {
        const Cut *cut = &b->cuts[pending[k]];
        parts[k] = (struct iovec){ .iov_base = b->data + cut->off, .iov_len = cut->len };
        pages[k] = (CsPageAlias){ .page = ids[k],
                                  .in = { .id = run, .offset = off, .length = cut->len } };
        if ((r = cs_page_row_tag(w->repo, &ids[k], &pages[k].in, pages[k].tag)) < 0)
            return r;
        b->refs[pending[k]] = pages[k].in;
        off += cut->len;
    }
    /* The same pages stored before (their aliases lost with a rebuilt index) or in flight. */
    if ((r = cs_index_reader_lookup(rd, &run, NULL)) != -ENOENT)
        return r;
    if ((r = inflight_add(w, &run)) != 0)
        return r < 0 ? r : 0;
    NewChunk c = { .id = &run, .parts = parts, .n_parts = n, .length = off, .pages = pages,
                   .n_pages = n };
    if ((r = group_add(w, cctx, GROUP_PAGES, &c)) < 0)
        return r;
    cnt->new_chunks++;
    cnt->new_bytes += off;
    return 0;
}

/* The pages of one batch bound for runs, by id: a page seen earlier in the batch (an all-zero
 * page, say) is stored once, as the earlier copy. Open addressing over the id's first bytes;
 * a batch has at most BATCH_DATA_SIZE / page_size + 1 pages, and the table is at most half
 * full for 8 KiB pages. */
#define SEEN_SLOTS 1024u
typedef struct SeenPages {
    int32_t slot[SEEN_SLOTS]; /* cut index + 1; 0 = free */
    size_t n;
} SeenPages;

/* The earlier cut of b with the same id as cut i, or -1 (and i is remembered). */
static long seen_before(SeenPages *seen, const Batch *b, size_t i)
{
    if (seen->n >= SEEN_SLOTS / 2)
        return -1; /* full enough: the rest of the batch goes without */
    size_t h = (size_t)get_le32(b->ids[i].bytes + 4) & (SEEN_SLOTS - 1);
    for (; seen->slot[h]; h = (h + 1) & (SEEN_SLOTS - 1)) {
        size_t j = (size_t)seen->slot[h] - 1;
        if (memcmp(b->ids[j].bytes, b->ids[i].bytes, CS_CHUNK_ID_SIZE) == 0)
            return (long)j;
    }
    seen->slot[h] = (int32_t)i + 1;
    seen->n++;
    return -1;
}

/* Where the page with this id already is, as a run's page (version 3): only while the run is
 * still indexed. */
/* Whether a run already holds page `id` (of `len` bytes), and where. The index row must carry
 * the tag only a writer with the keys can make (cs_page_row_tag), else a damaged row would
 * make this snapshot refer to other bytes for good. */
static bool page_in_run(const CsRepo *repo, CsIndexReader *rd, const CsChunkId *id,
                        uint32_t len, CsChunkSlice *ret)
{
    CsPageAlias at;
    uint8_t tag[CS_PAGE_ROW_TAG_SIZE];
    if (cs_index_reader_lookup_page(rd, id, &at) < 0 || at.in.length != len ||
        cs_page_row_tag(repo, id, &at.in, tag) < 0 || !cs_memeq(tag, at.tag, sizeof(tag)) ||
        cs_index_reader_lookup(rd, &at.in.id, NULL) < 0)
        return false;
    *ret = at.in;
    return true;
}

/* A cut named as an earlier cut of the same batch with the same bytes. */
typedef struct CopyOf {
    size_t cut, earlier;
} CopyOf;

static int batch_process(CsWriter *w, Batch *b, CsIndexReader *rd, CsReader **reader,
                         ZSTD_CCtx *cctx)
{
    const CsRepo *repo = w->repo;
    int r = cs_index_reader_refresh(rd);
    if (r == 0 && *reader)
        r = cs_reader_refresh(*reader);
    if (r < 0)
        return r;
    bool runs = w->can_run && b->owner->is_pages;
    int kind = b->owner->is_meta    ? GROUP_META
               : b->owner->is_pages ? GROUP_PAGES
                                    : GROUP_DATA;
    size_t pending[CS_RUN_MAX_PAGES] = { 0 }, n_pending = 0;
    BatchCounts cnt = { 0 };
    _cleanup_free_ SeenPages *seen = runs ? calloc(1, sizeof(*seen)) : NULL;
    _cleanup_free_ CopyOf *copies = runs ? malloc(b->n_cuts * sizeof(*copies)) : NULL;
    if (runs && (!seen || !copies))
        return -ENOMEM;
    size_t n_copies = 0; /* resolved once every run of the batch is stored */
    _cleanup_(buf_free) Buf frame = BUF_INIT; /* a delta page's frame (version 4) */
    for (size_t i = 0; i < b->n_cuts; i++) {
        const uint8_t *p = b->data + b->cuts[i].off;
        uint32_t n = b->cuts[i].len;
        if ((r = cs_chunk_id(repo, p, n, &b->ids[i])) < 0)
            return r;
        b->refs[i] = whole(&b->ids[i], n);
        r = cs_index_reader_lookup(rd, &b->ids[i], NULL);
        if (r == 0)
            continue;
        if (r != -ENOENT)
            return r;
        if (runs && page_in_run(repo, rd, &b->ids[i], n, &b->refs[i]))
            continue;
        Base base;
        if (b->owner->previous.count && base_for(w, b, i, n, rd, reader, cctx, &frame, &base)) {
            if ((r = store_single(w, cctx, b, i, GROUP_DELTA, &base, &cnt)) < 0)
                return r;
        } else if (runs) {
            long j = seen_before(seen, b, i);
            if (j >= 0) {
                copies[n_copies++] = (CopyOf){ .cut = i, .earlier = (size_t)j };
                continue;
            }
            /* Stored with the run, once its id is known. */
            pending[n_pending++] = i;
            if (n_pending == CS_RUN_MAX_PAGES) {
                if ((r = store_run(w, cctx, rd, b, pending, n_pending, &cnt)) < 0)
                    return r;
                n_pending = 0;
            }
        } else if ((r = store_single(w, cctx, b, i, kind, NULL, &cnt)) < 0)
            return r;
    }
    if ((r = store_run(w, cctx, rd, b, pending, n_pending, &cnt)) < 0)
        return r;
    for (size_t k = 0; k < n_copies; k++)
        b->refs[copies[k].cut] = b->refs[copies[k].earlier];
    __atomic_add_fetch(&w->stats.delta_chunks, cnt.delta_chunks, __ATOMIC_RELAXED);
    __atomic_add_fetch(&w->stats.new_chunks, cnt.new_chunks, __ATOMIC_RELAXED);
    __atomic_add_fetch(&w->stats.new_bytes, cnt.new_bytes, __ATOMIC_RELAXED);
    cs_index_release_memory(w->repo->index);
    return 0;
}

static void *worker_main(void *userdata)
{
    CsWriter *w = userdata;
    CsIndexReader *rd = NULL;
    CsReader *reader = NULL; /* for delta bases; opened when the first one is needed */
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    int r = cctx ? cs_index_reader_begin(w->repo->index, &rd) : -ENOMEM;
    if (r < 0)
        set_error(w, r);

    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (!w->work_head && !w->is_stopping)
            pthread_cond_wait(&w->cond, &w->lock);
        if (!w->work_head)
            break;
        Batch *b = w->work_head;
        w->work_head = b->work_next;
        if (!w->work_head)
            w->work_tail = NULL;
        bool failed = w->error != 0;
        pthread_mutex_unlock(&w->lock);
        if (!failed && (r = batch_process(w, b, rd, &reader, cctx)) < 0)
            set_error(w, r);
        /* batch_process() refreshes both; idle, they would pin the index's freed pages. */
        if (rd)
            cs_index_reader_pause(rd);
        if (reader)
            cs_reader_pause(reader);
        pthread_mutex_lock(&w->lock);
        b->is_done = true;
        pthread_cond_broadcast(&w->cond);
    }
    pthread_mutex_unlock(&w->lock);
    cs_reader_free(reader);
    cs_index_reader_end(rd);
    ZSTD_freeCCtx(cctx);
    return NULL;
}

/* Publish the current pack: durable first, then indexed (with the pages of its runs), then no
 * longer in flight. */
static int pack_finish(CsWriter *w, CsPackWriter **pw, Buf *pages)
{
    if (!*pw)
        return 0;
    CsPackId id;
    _cleanup_free_ CsPackEntry *entries = NULL;
    size_t n;
    uint64_t size;
    int r = cs_pack_writer_finish(TAKE_PTR(*pw), &id, &entries, &n, &size);
    if (r < 0)
        return log_error_errno(r, "could not write pack: %m");
    r = cs_index_publish_pack_pages(w->repo->index, &id, size, entries, n,
                                    (const CsPageAlias *)(void *)pages->data,
                                    pages->size / sizeof(CsPageAlias));
    buf_clear(pages);
    if (r < 0)
        return log_error_errno(r, "could not index pack: %m");
    for (size_t i = 0; i < n; i++)
        inflight_remove(w, &entries[i].id);
    __atomic_add_fetch(&w->stats.packs, 1, __ATOMIC_RELAXED);
    return 0;
}

static void *pack_main(void *userdata)
{
    CsWriter *w = userdata;
    CsPackWriter *pw = NULL;
    Buf pages = BUF_INIT; /* CsPageAlias array: the runs' pages in the current pack */
    int r = 0;

    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (!w->rec_head && !w->is_stopping)
            pthread_cond_wait(&w->cond, &w->lock);
        if (!w->rec_head)
            break;
        PlainRecord *rec = w->rec_head;
        w->rec_head = rec->next;
        if (!w->rec_head)
            w->rec_tail = NULL;
        w->n_records--;
        w->queued_bytes -= rec->payload.size;
        pthread_cond_broadcast(&w->cond);
        bool failed = w->error != 0;
        pthread_mutex_unlock(&w->lock);

        r = 0;
        if (failed) {
        } else if (rec->is_flush) {
            r = pack_finish(w, &pw, &pages);
        } else {
            if (!pw)
                r = cs_pack_writer_new(w->repo->backend, w->repo->keys.enc_key, &pw);
            uint64_t size_before = r == 0 ? cs_pack_writer_size(pw) : 0;
            if (r == 0) {
                CsRecordBases bases = { .v = (const CsChunkSlice *)(void *)rec->bases.data,
                                        .n = rec->n_bases,
                                        .depth = rec->depth };
                r = cs_pack_writer_add_delta(pw,
                                             (const CsRecordMember *)(void *)rec->members.data,
                                             rec->n_members, rec->n_bases ? &bases : NULL,
                                             rec->flags, rec->raw_len, rec->payload.data,
                                             rec->payload.size);
            }
            if (r == 0 && rec->pages.size)
                r = buf_append(&pages, rec->pages.data, rec->pages.size);
            if (r == 0) {
                __atomic_add_fetch(&w->stats.stored_bytes, cs_pack_writer_size(pw) - size_before,
                                   __ATOMIC_RELAXED);
                if (cs_pack_writer_size(pw) >= w->repo->config.pack_size ||
                    cs_pack_writer_entries(pw) > 500000)
                    r = pack_finish(w, &pw, &pages);
            } else
                log_error_errno(r, "could not append to pack: %m");
        }
        bool was_flush = rec->is_flush;
        record_free(w, rec);
        if (r < 0)
            set_error(w, r);
        pthread_mutex_lock(&w->lock);
        if (was_flush) {
            w->flushes_done++;
            pthread_cond_broadcast(&w->cond);
        }
    }
    pthread_mutex_unlock(&w->lock);
    cs_pack_writer_abort(pw);
    buf_free(&pages);
    return NULL;
}

int cs_writer_new(CsRepo *repo, const CsWriterParams *params, CsWriter **ret)
{
    if (repo->read_only)
        return -EROFS;
    CsLock *lock;
    int r = cs_backend_lock(repo->backend, "repository", CS_LOCK_SHARED, false, &lock);
    if (r == -EWOULDBLOCK)
        return log_error_errno(-EBUSY, "repository is locked exclusively by another process");
    if (r < 0)
        return log_error_errno(r, "could not lock repository \"%s\": %m",
                               cs_backend_location(repo->backend));
    /* Spool files of writers that died are only garbage now that we hold the lock. */
    cs_backend_sweep(repo->backend);
    /* Dedup looks up every page it stores: without a bound the backup's RSS would grow with
     * the index, that is with the repository's history. */
    cs_index_bound_memory(repo->index, INDEX_TOUCHES_PER_RELEASE);
    CsWriter *w = calloc(1, sizeof(*w));
    if (!w) {
        cs_lock_release(lock);
        return -ENOMEM;
    }
    w->repo = repo;
    w->repo_lock = lock;
    w->can_delta = repo->config.format_version >= CS_FORMAT_VERSION_DELTA;
    w->can_run = repo->config.format_version >= CS_FORMAT_VERSION_RUNS;
    w->can_key = repo->config.format_version >= CS_FORMAT_VERSION_KEYED;
    for (size_t k = 0; k < GROUP_KINDS; k++)
        w->group_seal[k] = repo->config.group_size;
    w->group_seal[GROUP_DATA] = MIN((size_t)repo->config.group_size * DATA_GROUP_FACTOR,
                                    (size_t)CS_MAX_GROUP_SIZE);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    w->n_threads = params && params->threads ? params->threads : (unsigned)MAX(cpus, 1);
    w->max_records = 2 * w->n_threads + 2;
    w->max_queued_bytes = (size_t)w->max_records * repo->config.group_size;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    pthread_mutex_init(&w->inflight_lock, NULL);
    pthread_mutex_init(&w->group_lock, NULL);
    w->inflight = calloc(INFLIGHT_BUCKETS, sizeof(*w->inflight));
    w->workers = calloc(w->n_threads, sizeof(*w->workers));
    /* Every queued record holds two buffers, every worker may be sealing a third set. */
    size_t pooled = 2 * (w->max_records + w->n_threads + 2);
    int pr = pool_init(&w->data_pool, pooled);
    /* A group's data: up to its seal size plus one chunk; a payload: zstd's bound of that. */
    size_t chunk_max = MAX((size_t)repo->config.chunker.max_size, (size_t)repo->config.page_size);
    w->data_pool.touch = ZSTD_compressBound(w->group_seal[GROUP_DATA] + chunk_max);
    /* Made now, the data buffers a busy pipeline holds at once: the open group, a group and
     * its payload in each worker, a queued record and the one being written. Memory is then
     * at its peak from the first record on, whatever the timing of a backup's busiest moment
     * (without this, a 200 MB store peaked 4-8 MB lower than a 2 GB one). */
    size_t n_prefill = MIN(2 * (size_t)w->n_threads + 3, pooled);
    Buf *prefill = pr == 0 ? calloc(n_prefill, sizeof(*prefill)) : NULL;
    for (size_t i = 0; prefill && i < n_prefill; i++)
        prefill[i] = pool_get(&w->data_pool);
    for (size_t i = 0; prefill && i < n_prefill; i++)
        pool_put(&w->data_pool, &prefill[i]);
    free(prefill);
    if (pr == 0)
        pr = pool_init(&w->member_pool, pooled);
    if (!w->inflight || !w->workers || pr < 0) {
        cs_writer_free(w);
        return -ENOMEM;
    }
    cs_chunker_init(&w->chunker, &repo->gear, &repo->config.chunker);

    /* Two batches per worker keeps every worker busy while the caller fills the next. */
    size_t carry = MAX(repo->config.chunker.max_size, repo->config.page_size);
    for (unsigned i = 0; i < 2 * w->n_threads + 1; i++) {
        Batch *b = calloc(1, sizeof(*b));
        if (!b || !(b->own = b->data = malloc(BATCH_DATA_SIZE + carry))) {
            batch_free(b);
            cs_writer_free(w);
            return -ENOMEM;
        }
        b->cap = BATCH_DATA_SIZE + carry;
        b->next = w->free_batches;
        w->free_batches = b;
    }
    if (pthread_create(&w->pack_thread, NULL, pack_main, w) != 0) {
        cs_writer_free(w);
        return -EAGAIN;
    }
    w->has_pack_thread = true;
    for (unsigned i = 0; i < w->n_threads; i++) {
        if (pthread_create(&w->workers[i], NULL, worker_main, w) != 0) {
            w->n_threads = i;
            cs_writer_free(w);
            return -EAGAIN;
        }
    }
    *ret = w;
    return 0;
}

CsWriter *cs_writer_free(CsWriter *w)
{
    if (!w)
        return NULL;
    pthread_mutex_lock(&w->lock);
    w->is_stopping = true;
    if (!w->error)
        w->error = -ECANCELED; /* unflushed records are dropped, not written */
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    for (unsigned i = 0; w->workers && i < w->n_threads; i++)
        pthread_join(w->workers[i], NULL);
    if (w->has_pack_thread)
        pthread_join(w->pack_thread, NULL);
    for (Batch *b = w->free_batches, *next; b; b = next) {
        next = b->next;
        batch_free(b);
    }
    for (Batch *b = w->order_head, *next; b; b = next) {
        next = b->next;
        batch_free(b);
    }
    for (struct Put *p = w->puts, *next; p; p = next) {
        next = p->next;
        put_free(p);
    }
    for (PlainRecord *r = w->rec_head, *next; r; r = next) {
        next = r->next;
        record_free(w, r);
    }
    for (size_t i = 0; w->inflight && i < INFLIGHT_BUCKETS; i++)
        for (InflightNode *n = w->inflight[i], *next; n; n = next) {
            next = n->next;
            free(n);
        }
    free(w->inflight);
    for (size_t i = 0; i < ARRAY_SIZE(w->groups); i++) {
        buf_free(&w->groups[i].members);
        buf_free(&w->groups[i].data);
        buf_free(&w->groups[i].bases);
        buf_free(&w->groups[i].prefix);
        buf_free(&w->groups[i].pages);
    }
    pool_done(&w->data_pool);
    pool_done(&w->member_pool);
    free(w->workers);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->inflight_lock);
    pthread_mutex_destroy(&w->group_lock);
    cs_lock_release(w->repo_lock);
    free(w);
    return NULL;
}

void cs_writer_stats(CsWriter *w, CsWriterStats *ret)
{
    ret->bytes_in = __atomic_load_n(&w->stats.bytes_in, __ATOMIC_RELAXED);
    ret->chunks = __atomic_load_n(&w->stats.chunks, __ATOMIC_RELAXED);
    ret->new_chunks = __atomic_load_n(&w->stats.new_chunks, __ATOMIC_RELAXED);
    ret->new_bytes = __atomic_load_n(&w->stats.new_bytes, __ATOMIC_RELAXED);
    ret->delta_chunks = __atomic_load_n(&w->stats.delta_chunks, __ATOMIC_RELAXED);
    ret->stored_bytes = __atomic_load_n(&w->stats.stored_bytes, __ATOMIC_RELAXED);
    ret->packs = __atomic_load_n(&w->stats.packs, __ATOMIC_RELAXED);
}

CsRepo *cs_writer_repo(const CsWriter *w)
{
    return w->repo;
}

bool cs_writer_can_delta(const CsWriter *w)
{
    return w->can_delta;
}

bool cs_writer_can_slice(const CsWriter *w)
{
    return w->can_run;
}

void cs_writer_set_progress(CsWriter *w, void (*fn)(const CsWriterStats *s, void *userdata),
                            void *userdata)
{
    w->progress = fn;
    w->progress_userdata = userdata;
}

static void progress_maybe(CsWriter *w)
{
    if (!w->progress)
        return;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t ms = (now.tv_sec - w->last_progress.tv_sec) * 1000 +
                 (now.tv_nsec - w->last_progress.tv_nsec) / 1000000;
    if (ms < 250)
        return;
    w->last_progress = now;
    CsWriterStats s;
    cs_writer_stats(w, &s);
    w->progress(&s, w->progress_userdata);
}

static int list_serialize(const CsChunkSlice *v, size_t n, bool has_slices, Buf *out);

static int entry_list_spill(EntryList *l, bool has_slices)
{
    if (l->spill_fd <= 0) {
        const char *dir = getenv("TMPDIR");
        int fd = open(dir ? dir : "/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        if (fd < 0)
            return log_error_errno(-errno, "could not create a temporary file: %m");
        l->spill_fd = fd;
    }
    _cleanup_(buf_free) Buf b = BUF_INIT;
    int r = list_serialize(l->v, l->n, has_slices, &b);
    if (r == 0)
        r = write_all(l->spill_fd, b.data, b.size);
    if (r < 0)
        return log_error_errno(r, "could not write a temporary file: %m");
    l->n_spilled += l->n;
    l->n = 0;
    return 0;
}

static void entry_list_free(EntryList *l)
{
    free(l->v);
    if (l->spill_fd > 0)
        close(l->spill_fd);
    *l = (EntryList){ 0 };
}

static int entry_list_add(EntryList *l, const CsChunkSlice *e, bool has_slices)
{
    CsChunkSlice *last = l->n ? &l->v[l->n - 1] : NULL;
    /* Consecutive pages of one run are one entry. */
    if (last && last->offset + (uint64_t)last->length == e->offset &&
        (uint64_t)last->length + e->length <= UINT32_MAX &&
        memcmp(last->id.bytes, e->id.bytes, CS_CHUNK_ID_SIZE) == 0) {
        last->length += e->length;
        l->size += e->length;
        return 0;
    }
    if (l->n == LIST_SPILL_ENTRIES) {
        int r = entry_list_spill(l, has_slices);
        if (r < 0)
            return r;
    }
    if (GROW_ARRAY(l->v, l->cap, l->n, 64) < 0)
        return -ENOMEM;
    l->v[l->n++] = *e;
    l->size += e->length;
    return 0;
}

/* Add the entry of the put's next input bytes to its list, with the splices that fall in
 * them: the entry is cut where a splice goes. */
static int put_list_add(CsWriter *w, Put *put, const CsChunkSlice *e)
{
    CsChunkSlice rest = *e;
    int r;
    while (put->next_splice < put->n_splices &&
           put->splices[put->next_splice].at < put->input_listed + rest.length) {
        const CsSplice *s = &put->splices[put->next_splice++];
        uint32_t head = (uint32_t)(s->at - put->input_listed);
        if (head) {
            CsChunkSlice h = rest;
            h.length = head;
            if ((r = entry_list_add(&put->l, &h, w->can_run)) < 0)
                return r;
            rest.offset += head;
            rest.length -= head;
            put->input_listed += head;
        }
        if ((r = entry_list_add(&put->l, &s->slice, w->can_run)) < 0)
            return r;
    }
    put->input_listed += rest.length;
    return rest.length ? entry_list_add(&put->l, &rest, w->can_run) : 0;
}

/* Wait for the oldest submitted batch, give its ids to its put, recycle it. */
static int harvest_one(CsWriter *w)
{
    Batch *b = w->order_head;
    pthread_mutex_lock(&w->lock);
    while (!b->is_done)
        pthread_cond_wait(&w->cond, &w->lock);
    int r = w->error;
    pthread_mutex_unlock(&w->lock);
    for (size_t i = 0; r == 0 && i < b->n_cuts; i++)
        r = put_list_add(w, b->owner, &b->refs[i]);
    if (--b->owner->batches_out == 0 && b->owner->is_read)
        put_loan_end(b->owner);
    w->order_head = b->next;
    if (!w->order_head)
        w->order_tail = NULL;
    pthread_mutex_lock(&w->lock);
    b->next = w->free_batches;
    w->free_batches = b;
    pthread_mutex_unlock(&w->lock);
    return r;
}

static int harvest_all(CsWriter *w)
{
    int r = 0;
    while (w->order_head) {
        int q = harvest_one(w);
        if (r == 0)
            r = q;
    }
    return r;
}

static int get_free_batch(CsWriter *w, Batch **ret)
{
    for (;;) {
        pthread_mutex_lock(&w->lock);
        Batch *b = w->free_batches;
        if (b)
            w->free_batches = b->next;
        pthread_mutex_unlock(&w->lock);
        if (b) {
            b->data = b->own;
            b->len = 0;
            b->n_cuts = 0;
            b->is_done = false;
            b->next = NULL;
            *ret = b;
            return 0;
        }
        int r = harvest_one(w);
        if (r < 0)
            return r;
    }
}

static int batch_add_cut(Batch *b, size_t off, size_t len)
{
    if (b->n_cuts == b->cuts_cap) {
        size_t cap = b->cuts_cap ? 2 * b->cuts_cap : 1024;
        Cut *c = realloc(b->cuts, cap * sizeof(*c));
        if (!c)
            return -ENOMEM;
        b->cuts = c;
        CsChunkId *ids = realloc(b->ids, cap * sizeof(*ids));
        if (!ids)
            return -ENOMEM;
        b->ids = ids;
        CsChunkSlice *refs = realloc(b->refs, cap * sizeof(*refs));
        if (!refs)
            return -ENOMEM;
        b->refs = refs;
        b->cuts_cap = cap;
    }
    b->cuts[b->n_cuts++] = (Cut){ (uint32_t)off, (uint32_t)len };
    return 0;
}

static void batch_submit(CsWriter *w, Batch *b)
{
    b->first_index = b->owner->chunks_cut;
    b->owner->chunks_cut += b->n_cuts;
    b->owner->batches_out++;
    if (w->order_tail)
        w->order_tail->next = b;
    else
        w->order_head = b;
    w->order_tail = b;
    pthread_mutex_lock(&w->lock);
    if (b->n_cuts == 0) {
        b->is_done = true;
    } else {
        b->work_next = NULL;
        if (w->work_tail)
            w->work_tail->work_next = b;
        else
            w->work_head = b;
        w->work_tail = b;
        pthread_cond_broadcast(&w->cond);
    }
    pthread_mutex_unlock(&w->lock);
}

/* Source of input for one put: an fd or a memory buffer, copied or lent. */
typedef struct Source {
    int fd;
    const uint8_t *p;
    size_t left;
    bool is_lent;
    const CsReadObserver *obs;
    uint64_t offset; /* bytes read so far, for the observer */
} Source;

static int source_read(Source *s, void *out, size_t n, size_t *ret_n)
{
    if (s->fd >= 0) {
        int r = read_full(s->fd, out, n, ret_n);
        if (r < 0)
            return r;
        if (s->obs && *ret_n)
            s->obs->fn(out, *ret_n, s->offset, s->obs->userdata);
        s->offset += *ret_n;
        return 0;
    }
    size_t k = MIN(n, s->left);
    if (s->is_lent)
        assert(out == s->p); /* the batch is the lent memory itself: nothing to copy */
    else if (k)
        memcpy(out, s->p, k);
    s->p += k;
    s->left -= k;
    *ret_n = k;
    return 0;
}

/* Cut the bytes of b not cut yet; *chunk_start moves to where the unfinished tail starts. */
static int batch_cut(CsWriter *w, Batch *b, CsChunking mode, size_t *chunk_start, bool is_eof)
{
    size_t start = *chunk_start;
    int r;
    if (mode == CS_CHUNKING_PAGES) {
        size_t page = w->repo->config.page_size;
        while (b->len - start >= page) {
            if ((r = batch_add_cut(b, start, page)) < 0)
                return r;
            start += page;
        }
    } else {
        size_t scan = b->scan_pos;
        while (scan < b->len) {
            size_t cut = cs_chunker_scan(&w->chunker, b->data + scan, b->len - scan);
            if (cut == SIZE_MAX) {
                scan = b->len;
                break;
            }
            scan += cut;
            if ((r = batch_add_cut(b, start, scan - start)) < 0)
                return r;
            start = scan;
        }
        b->scan_pos = scan;
    }
    if (is_eof && b->len > start) {
        if ((r = batch_add_cut(b, start, b->len - start)) < 0)
            return r;
        start = b->len;
    }
    *chunk_start = start;
    return 0;
}

/* Read the whole source into batches owned by `put`. Returns once every byte has been copied
 * into a batch; the ids arrive later, in harvest. */
static int put_level0(CsWriter *w, Source *src, CsChunking mode, Put *put)
{
    Batch *b = NULL;
    size_t chunk_start = 0;
    bool is_eof = false;
    int r;

    cs_chunker_reset(&w->chunker);
    if ((r = get_free_batch(w, &b)) < 0)
        return r;
    b->owner = put;
    b->scan_pos = 0;
    if (src->is_lent)
        b->data = (uint8_t *)(uintptr_t)src->p; /* lent memory is only ever read */
    while (!is_eof) {
        size_t got;
        if ((r = source_read(src, b->data + b->len, BATCH_DATA_SIZE, &got)) < 0)
            break;
        is_eof = got < BATCH_DATA_SIZE;
        b->len += got;
        __atomic_add_fetch(&w->stats.bytes_in, got, __ATOMIC_RELAXED);
        if ((r = batch_cut(w, b, mode, &chunk_start, is_eof)) < 0)
            break;
        __atomic_add_fetch(&w->stats.chunks, b->n_cuts, __ATOMIC_RELAXED);
        if (is_eof)
            break;
        /* Carry the unfinished chunk into the next batch. */
        Batch *next;
        if ((r = get_free_batch(w, &next)) < 0)
            break;
        size_t tail = b->len - chunk_start;
        if (src->is_lent)
            next->data = b->data + chunk_start;
        else
            memcpy(next->data, b->data + chunk_start, tail);
        next->len = tail;
        next->scan_pos = b->scan_pos - chunk_start;
        next->owner = put;
        batch_submit(w, b);
        b = next;
        chunk_start = 0;
        progress_maybe(w);
        if ((r = get_error(w)) < 0)
            break;
    }
    if (r < 0)
        b->n_cuts = 0;
    batch_submit(w, b);
    put->is_read = true;
    return r;
}

static int list_serialize(const CsChunkSlice *v, size_t n, bool has_slices, Buf *out)
{
    uint8_t *p = buf_extend(out, n * cs_slice_size(has_slices));
    if (!p && n)
        return -ENOMEM;
    for (size_t i = 0; !has_slices && i < n; i++)
        if (v[i].offset != 0)
            return -EINVAL; /* only a list of slices can say where in a chunk an entry starts */
    cs_slices_encode(p, v, n, has_slices);
    return 0;
}

/* Turn a harvested put into its reference, storing long lists one level down. */
static int put_resolve(CsWriter *w, Put *put)
{
    int r = 0;
    while (r == 0 && put->next_splice < put->n_splices)
        r = put->splices[put->next_splice].at == put->input_listed
                ? entry_list_add(&put->l, &put->splices[put->next_splice++].slice, w->can_run)
                : -EINVAL; /* beyond the input: the put was checked, so the input was short */
    if (r < 0)
        return r;
    EntryList l = put->l;
    uint64_t size = l.size;
    uint8_t level = 0;
    put->l = (EntryList){ 0 };
    while (l.n + l.n_spilled > CS_REF_MAX_INLINE) {
        _cleanup_(buf_free) Buf list = BUF_INIT;
        Source s = { .fd = -1 };
        if (level == CS_REF_MAX_LEVEL) {
            r = -E2BIG;
        } else if (l.spill_fd > 0) {
            /* Stream the spilled list back through the pipeline. */
            if ((r = entry_list_spill(&l, w->can_run)) == 0 && lseek(l.spill_fd, 0, SEEK_SET) < 0)
                r = -errno;
            s.fd = l.spill_fd;
        } else if ((r = list_serialize(l.v, l.n, w->can_run, &list)) == 0) {
            s.p = list.data;
            s.left = list.size;
        }
        if (r < 0) {
            entry_list_free(&l);
            return r;
        }
        Put down = { .is_meta = true };
        r = put_level0(w, &s, CS_CHUNKING_CDC, &down);
        int q = harvest_all(w);
        entry_list_free(&l);
        l = down.l;
        if (r < 0 || (r = q) < 0) {
            entry_list_free(&l);
            return r;
        }
        level++;
    }
    if (l.spill_fd > 0) /* at most CS_REF_MAX_INLINE entries were spilled: cannot happen */
        close(l.spill_fd);
    *put->ret = (CsContentRef){ .size = size, .level = level, .has_slices = w->can_run,
                                .count = (uint32_t)l.n, .entries = l.v };
    return 0;
}

int cs_writer_sync(CsWriter *w)
{
    int r = harvest_all(w);
    while (w->puts) {
        Put *put = w->puts;
        w->puts = put->next;
        if (!w->puts)
            w->puts_tail = NULL;
        if (r == 0)
            r = put_resolve(w, put);
        put_free(put);
    }
    return r;
}

/* A put not yet queued; takes ownership of `previous` whatever the result. */
static Put *put_new(CsWriter *w, CsChunking mode, bool is_meta, CsContentRef *previous,
                    CsContentRef *ret, int *ret_err)
{
    Put *put = (*ret_err = get_error(w)) < 0 ? NULL : calloc(1, sizeof(*put));
    if (!put && *ret_err == 0)
        *ret_err = -ENOMEM;
    if (put) {
        put->ret = ret;
        put->is_meta = is_meta;
        put->is_pages = mode == CS_CHUNKING_PAGES;
    }
    if (put && previous) {
        put->previous = *previous;
        *previous = (CsContentRef){ 0 };
        /* Where each previous entry starts, to find a page's previous version by its offset. */
        if (!(put->previous_starts = cs_content_ref_offsets(&put->previous))) {
            put_free(put);
            put = NULL;
            *ret_err = -ENOMEM;
        }
    }
    if (!put && previous)
        cs_content_ref_free(previous);
    return put;
}

static int put_start(CsWriter *w, Source *src, CsChunking mode, Put *put)
{
    if (w->puts_tail)
        w->puts_tail->next = put;
    else
        w->puts = put;
    w->puts_tail = put;
    int r = put_level0(w, src, mode, put);
    if (r < 0) {
        cs_writer_sync(w);
        return r;
    }
    progress_maybe(w); /* trees of many small files report too */
    return 0;
}

static int put_source(CsWriter *w, Source *src, CsChunking mode, bool is_meta,
                      CsContentRef *previous, CsContentRef *ret)
{
    int r;
    Put *put = put_new(w, mode, is_meta, previous, ret, &r);
    return put ? put_start(w, src, mode, put) : r;
}

int cs_writer_put_spliced(CsWriter *w, const void *p, size_t n, const CsSplice *splices,
                          size_t n_splices, const CsLoan *loan, CsContentRef *ret)
{
    const CsLoan no_loan = { 0 };
    if (!loan)
        loan = &no_loan;
    uint64_t spliced = 0;
    int r = 0;
    for (size_t i = 0; r == 0 && i < n_splices; i++) {
        if (splices[i].at > n || (i && splices[i].at < splices[i - 1].at) ||
            splices[i].slice.length == 0 || !w->can_run)
            r = -EINVAL;
        spliced += splices[i].slice.length;
    }
    Put *put = r < 0 ? NULL : put_new(w, CS_CHUNKING_CDC, false, NULL, ret, &r);
    if (!put) {
        if (loan->release)
            loan->release(loan->userdata);
        return r;
    }
    put->loan = *loan;
    if (n_splices && !(put->splices = malloc(n_splices * sizeof(*splices)))) {
        put_free(put);
        return -ENOMEM;
    }
    if (n_splices)
        memcpy(put->splices, splices, n_splices * sizeof(*splices));
    put->n_splices = n_splices;
    __atomic_add_fetch(&w->stats.bytes_in, spliced, __ATOMIC_RELAXED);
    Source s = { .fd = -1, .p = p, .left = n, .is_lent = loan->release != NULL };
    return put_start(w, &s, CS_CHUNKING_CDC, put);
}

int cs_writer_put_file(CsWriter *w, int fd, CsChunking mode, const CsPutOptions *opt,
                       CsContentRef *ret)
{
    Source s = { .fd = fd, .obs = opt ? opt->observer : NULL };
    CsContentRef *previous = opt && opt->previous && mode == CS_CHUNKING_PAGES ? opt->previous
                                                                                : NULL;
    if (opt && opt->previous && !previous)
        cs_content_ref_free(opt->previous);
    return put_source(w, &s, mode, false, previous, ret);
}

int cs_writer_put_fd_async(CsWriter *w, int fd, CsChunking mode, CsContentRef *ret)
{
    return cs_writer_put_file(w, fd, mode, NULL, ret);
}

int cs_writer_put_fd(CsWriter *w, int fd, CsChunking mode, CsContentRef *ret)
{
    int r = cs_writer_put_fd_async(w, fd, mode, ret);
    return r < 0 ? r : cs_writer_sync(w);
}

int cs_writer_put_buf(CsWriter *w, const void *p, size_t n, CsChunking mode, CsContentRef *ret)
{
    Source s = { .fd = -1, .p = p, .left = n };
    int r = put_source(w, &s, mode, false, NULL, ret);
    return r < 0 ? r : cs_writer_sync(w);
}

int cs_writer_put_metadata(CsWriter *w, const void *p, size_t n, CsContentRef *ret)
{
    Source s = { .fd = -1, .p = p, .left = n };
    int r = put_source(w, &s, CS_CHUNKING_CDC, true, NULL, ret);
    return r < 0 ? r : cs_writer_sync(w);
}

int cs_writer_flush(CsWriter *w)
{
    int r = cs_writer_sync(w);
    if (r < 0)
        return r;
    for (size_t i = 0; i < ARRAY_SIZE(w->groups); i++) {
        pthread_mutex_lock(&w->group_lock);
        Group g = w->groups[i];
        w->groups[i] = (Group){ 0 };
        pthread_mutex_unlock(&w->group_lock);
        if (g.n_members) {
            ZSTD_CCtx *cctx = ZSTD_createCCtx();
            r = cctx ? group_seal(w, cctx, &g) : -ENOMEM;
            ZSTD_freeCCtx(cctx);
            if (r < 0)
                return r;
        } else {
            pool_put(&w->member_pool, &g.members);
            pool_put(&w->data_pool, &g.data);
            pool_put(&w->member_pool, &g.bases);
            pool_put(&w->data_pool, &g.prefix);
            buf_free(&g.pages);
        }
    }
    PlainRecord *flush = calloc(1, sizeof(*flush));
    if (!flush)
        return -ENOMEM;
    flush->is_flush = true;
    pthread_mutex_lock(&w->lock);
    unsigned target = w->flushes_done + 1;
    pthread_mutex_unlock(&w->lock);
    if ((r = record_push(w, flush)) < 0)
        return r;
    pthread_mutex_lock(&w->lock);
    while (w->flushes_done < target && !w->error)
        pthread_cond_wait(&w->cond, &w->lock);
    r = w->error;
    pthread_mutex_unlock(&w->lock);
    return r;
}

int cs_content_ref_copy(const CsContentRef *ref, CsContentRef *ret)
{
    *ret = *ref;
    ret->entries = malloc(MAX(ref->count, 1u) * sizeof(*ref->entries));
    if (!ret->entries)
        return -ENOMEM;
    if (ref->count)
        memcpy(ret->entries, ref->entries, ref->count * sizeof(*ref->entries));
    return 0;
}

uint64_t *cs_content_ref_offsets(const CsContentRef *ref)
{
    uint64_t *v = malloc((ref->count + 1) * sizeof(*v)), at = 0;
    if (!v)
        return NULL;
    for (size_t i = 0; i < ref->count; i++) {
        v[i] = at;
        at += ref->entries[i].length;
    }
    v[ref->count] = at;
    return v;
}

bool cs_content_slice_at(const CsContentRef *ref, const uint64_t *starts, uint64_t at,
                         uint32_t n, CsChunkSlice *ret)
{
    if (!ref->count || at >= starts[ref->count])
        return false;
    size_t i = cs_offsets_find(starts, ref->count, at);
    const CsChunkSlice *e = &ref->entries[i];
    uint64_t within = at - starts[i];
    if (within + n > e->length)
        return false;
    *ret = (CsChunkSlice){ .id = e->id, .offset = e->offset + (uint32_t)within, .length = n };
    return true;
}

void cs_content_ref_free(CsContentRef *ref)
{
    free(ref->entries);
    *ref = (CsContentRef){ 0 };
}

int cs_content_ref_encode(const CsContentRef *ref, Buf *out)
{
    uint8_t level = ref->level | (ref->has_slices ? CS_REF_FLAG_SLICES : 0);
    int r;
    if ((r = buf_append_le64(out, ref->size)) < 0 || (r = buf_append(out, &level, 1)) < 0 ||
        (r = buf_append_le32(out, ref->count)) < 0)
        return r;
    return list_serialize(ref->entries, ref->count, ref->has_slices, out);
}

int cs_content_ref_decode(Cursor *c, CsContentRef *ret)
{
    CsContentRef ref = { 0 };
    int r;
    if ((r = cursor_le64(c, &ref.size)) < 0 || (r = cursor_u8(c, &ref.level)) < 0 ||
        (r = cursor_le32(c, &ref.count)) < 0)
        return r;
    ref.has_slices = ref.level & CS_REF_FLAG_SLICES;
    ref.level &= (uint8_t)~CS_REF_FLAG_SLICES;
    size_t size = cs_slice_size(ref.has_slices);
    if (ref.level > CS_REF_MAX_LEVEL || ref.count > c->left / size ||
        (ref.level > 0 && ref.count == 0))
        return -EBADMSG;
    ref.entries = calloc(ref.count ? ref.count : 1, sizeof(*ref.entries));
    if (!ref.entries)
        return -ENOMEM;
    for (uint32_t i = 0; i < ref.count; i++) {
        const uint8_t *e;
        if ((r = cursor_bytes(c, size, &e)) < 0) {
            free(ref.entries);
            return r;
        }
        ref.entries[i] = cs_slice_decode(e, ref.has_slices);
    }
    *ret = ref;
    return 0;
}
