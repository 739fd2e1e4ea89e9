#include "fuse/chunk-cache.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <pthread.h>

#include "common/macro.h"

#define SHARDS            16u
#define CACHE_MIN_BUCKETS 64u
/* The spent list holds at most this fraction of the cache. */
#define SPENT_FRACTION 8u

typedef enum EntryState {
    ENTRY_LOADING,
    ENTRY_READY,
    ENTRY_FAILED,
} EntryState;

struct PfsChunk {
    CsChunkId id;
    uint64_t hash;
    /* All below: the shard's lock. */
    PfsChunk *hnext;               /* hash chain, while is_hashed */
    PfsChunk *lru_prev, *lru_next; /* in an LRU list only when READY and unpinned */
    uint32_t pins;
    bool is_spent; /* on the spent list (see Shard) */
    EntryState state;
    bool is_hashed;
    int error; /* ENTRY_FAILED: the loader's -errno */
    size_t len;
    uint8_t *data; /* malloc'd; NULL until the loader provides it */
};

typedef struct Shard {
    pthread_mutex_t lock;
    pthread_cond_t done; /* broadcast when a load of this shard completes */
    PfsChunk **buckets;  /* lock */
    size_t n_buckets, n_hashed;
    PfsChunk lru;             /* sentinel: lru.lru_next is the most recently used; lock */
    size_t bytes, max_bytes;  /* lock; bytes counts every hashed entry (pinned ones too) */
    /* Chunks a sequential reader has had whole: the kernel's page cache holds those bytes
     * now, so they are kept on a short list of their own (a twin file in another snapshot,
     * read alongside, still finds them) and are the first to go. A long sequential read then
     * recycles a few megabytes of warm memory instead of pushing everything else out. */
    PfsChunk spent;           /* sentinel, as lru; lock */
    size_t spent_bytes, spent_max;
    PfsChunkCacheStats stats; /* lock */
} Shard;

struct PfsChunkCache {
    Shard shards[SHARDS];
};

static inline size_t entry_cost(const PfsChunk *ch)
{
    return sizeof(*ch) + ch->len;
}

static inline uint64_t id_hash(const CsChunkId *id)
{
    /* Chunk ids are HMAC outputs: any 8 bytes are uniformly distributed. */
    uint64_t h;
    memcpy(&h, id->bytes, sizeof(h));
    return h;
}

static inline Shard *shard_of(PfsChunkCache *c, uint64_t h)
{
    return &c->shards[h % SHARDS];
}

static inline size_t shard_bucket(const Shard *s, uint64_t h)
{
    return (size_t)(h / SHARDS) & (s->n_buckets - 1);
}

int pfs_chunk_cache_new(size_t max_bytes, PfsChunkCache **ret)
{
    PfsChunkCache *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    for (size_t i = 0; i < SHARDS; i++) {
        Shard *s = &c->shards[i];
        pthread_mutex_init(&s->lock, NULL);
        pthread_cond_init(&s->done, NULL);
        s->lru.lru_next = s->lru.lru_prev = &s->lru;
        s->spent.lru_next = s->spent.lru_prev = &s->spent;
        s->max_bytes = max_bytes / SHARDS;
        s->spent_max = s->max_bytes / SPENT_FRACTION;
        s->n_buckets = CACHE_MIN_BUCKETS;
        s->buckets = calloc(s->n_buckets, sizeof(*s->buckets));
        if (!s->buckets) {
            c->shards[i].n_buckets = 0;
            pfs_chunk_cache_free(c);
            return -ENOMEM;
        }
    }
    *ret = c;
    return 0;
}

/* Free entries chained through hnext. */
static void chunk_free_list(PfsChunk *ch)
{
    while (ch) {
        PfsChunk *next = ch->hnext;
        free(ch->data);
        free(ch);
        ch = next;
    }
}

PfsChunkCache *pfs_chunk_cache_free(PfsChunkCache *c)
{
    if (!c)
        return NULL;
    for (size_t i = 0; i < SHARDS; i++) {
        Shard *s = &c->shards[i];
        for (size_t b = 0; b < s->n_buckets; b++)
            chunk_free_list(s->buckets[b]);
        free(s->buckets);
        pthread_cond_destroy(&s->done);
        pthread_mutex_destroy(&s->lock);
    }
    free(c);
    return NULL;
}

static PfsChunk *shard_find(Shard *s, const CsChunkId *id, uint64_t h)
{
    for (PfsChunk *ch = s->buckets[shard_bucket(s, h)]; ch; ch = ch->hnext)
        if (ch->hash == h && memcmp(ch->id.bytes, id->bytes, CS_CHUNK_ID_SIZE) == 0)
            return ch;
    return NULL;
}

static void shard_grow(Shard *s)
{
    size_t n = s->n_buckets * 2;
    PfsChunk **nb = calloc(n, sizeof(*nb));
    if (!nb)
        return; /* longer chains, still correct */
    for (size_t b = 0; b < s->n_buckets; b++) {
        PfsChunk *ch = s->buckets[b];
        while (ch) {
            PfsChunk *next = ch->hnext;
            size_t k = (size_t)(ch->hash / SHARDS) & (n - 1);
            ch->hnext = nb[k];
            nb[k] = ch;
            ch = next;
        }
    }
    free(s->buckets);
    s->buckets = nb;
    s->n_buckets = n;
}

static void shard_insert(Shard *s, PfsChunk *ch)
{
    if (s->n_hashed >= s->n_buckets)
        shard_grow(s);
    size_t b = shard_bucket(s, ch->hash);
    ch->hnext = s->buckets[b];
    s->buckets[b] = ch;
    ch->is_hashed = true;
    s->n_hashed++;
    s->bytes += entry_cost(ch);
}

static void shard_remove(Shard *s, PfsChunk *ch)
{
    PfsChunk **pp = &s->buckets[shard_bucket(s, ch->hash)];
    while (*pp != ch)
        pp = &(*pp)->hnext;
    *pp = ch->hnext;
    ch->hnext = NULL;
    ch->is_hashed = false;
    s->n_hashed--;
    s->bytes -= entry_cost(ch);
}

static void lru_unlink(Shard *s, PfsChunk *ch)
{
    if (ch->lru_next) {
        ch->lru_prev->lru_next = ch->lru_next;
        ch->lru_next->lru_prev = ch->lru_prev;
        ch->lru_next = ch->lru_prev = NULL;
        if (ch->is_spent)
            s->spent_bytes -= entry_cost(ch);
        ch->is_spent = false;
    }
}

static void lru_push_front(Shard *s, PfsChunk *ch, bool is_spent)
{
    PfsChunk *head = is_spent ? &s->spent : &s->lru;
    ch->lru_next = head->lru_next;
    ch->lru_prev = head;
    head->lru_next->lru_prev = ch;
    head->lru_next = ch;
    ch->is_spent = is_spent;
    if (is_spent)
        s->spent_bytes += entry_cost(ch);
}

static void evict_one(Shard *s, PfsChunk *victim, PfsChunk **freelist)
{
    lru_unlink(s, victim);
    shard_remove(s, victim);
    victim->hnext = *freelist;
    *freelist = victim;
    s->stats.evictions++;
}

/* Evict unpinned entries from the cold end until the shard fits; they are chained on *freelist
 * (through hnext) to be freed after the lock is dropped. */
static void shard_evict(Shard *s, PfsChunk **freelist)
{
    while (s->spent.lru_prev != &s->spent &&
           (s->spent_bytes > s->spent_max || s->bytes > s->max_bytes))
        evict_one(s, s->spent.lru_prev, freelist);
    while (s->bytes > s->max_bytes && s->lru.lru_prev != &s->lru)
        evict_one(s, s->lru.lru_prev, freelist);
}

static int pin_existing(Shard *s, PfsChunk *ch, size_t len, PfsChunk **ret)
{
    if (ch->len != len)
        return -EBADMSG;
    if (ch->pins++ == 0)
        lru_unlink(s, ch);
    if (ch->state == ENTRY_READY) {
        s->stats.hits++;
        *ret = ch;
        return PFS_CHUNK_READY;
    }
    s->stats.waits++;
    *ret = ch;
    return PFS_CHUNK_LOADING;
}

int pfs_chunk_cache_acquire(PfsChunkCache *c, const CsChunkId *id, size_t len, PfsChunk **ret)
{
    uint64_t h = id_hash(id);
    Shard *s = shard_of(c, h);
    int r;

    pthread_mutex_lock(&s->lock);
    PfsChunk *ch = shard_find(s, id, h);
    if (ch) {
        r = pin_existing(s, ch, len, ret);
        pthread_mutex_unlock(&s->lock);
        return r;
    }
    pthread_mutex_unlock(&s->lock);

    /* Allocate outside the lock, then look again. The bytes come later, from the loader. */
    PfsChunk *fresh = malloc(sizeof(*fresh));
    if (!fresh)
        return -ENOMEM;
    *fresh = (PfsChunk){ .id = *id, .hash = h, .pins = 1, .state = ENTRY_LOADING, .len = len };

    pthread_mutex_lock(&s->lock);
    if ((ch = shard_find(s, id, h))) {
        r = pin_existing(s, ch, len, ret);
        pthread_mutex_unlock(&s->lock);
        free(fresh);
        return r;
    }
    shard_insert(s, fresh);
    s->stats.misses++;
    pthread_mutex_unlock(&s->lock);
    *ret = fresh;
    return PFS_CHUNK_RESERVED;
}

int pfs_chunk_cache_wait(PfsChunkCache *c, PfsChunk *ch)
{
    Shard *s = shard_of(c, ch->hash);
    pthread_mutex_lock(&s->lock);
    while (ch->state == ENTRY_LOADING)
        pthread_cond_wait(&s->done, &s->lock);
    int r = ch->state == ENTRY_READY ? 0 : ch->error;
    pthread_mutex_unlock(&s->lock);
    return r;
}

void pfs_chunk_cache_complete(PfsChunkCache *c, PfsChunk *ch, int r)
{
    Shard *s = shard_of(c, ch->hash);
    if (r == 0 && !ch->data)
        r = -EINVAL; /* a loader that provided no bytes: never hand out a NULL buffer */
    pthread_mutex_lock(&s->lock);
    if (r == 0)
        ch->state = ENTRY_READY;
    else {
        ch->state = ENTRY_FAILED;
        ch->error = r;
        shard_remove(s, ch); /* the next acquire of this id tries again */
        s->stats.failures++;
    }
    pthread_cond_broadcast(&s->done);
    pthread_mutex_unlock(&s->lock);
}

void pfs_chunk_cache_release(PfsChunkCache *c, PfsChunk *ch)
{
    pfs_chunk_cache_release_spent(c, ch, false);
}

void pfs_chunk_cache_release_spent(PfsChunkCache *c, PfsChunk *ch, bool is_spent)
{
    if (!ch)
        return;
    Shard *s = shard_of(c, ch->hash);
    PfsChunk *freelist = NULL;
    pthread_mutex_lock(&s->lock);
    if (--ch->pins == 0) {
        if (!ch->is_hashed) {
            ch->hnext = freelist; /* failed: nobody can shard_find it any more */
            freelist = ch;
        } else if (ch->state == ENTRY_READY) {
            lru_push_front(s, ch, is_spent);
            shard_evict(s, &freelist);
        }
        /* LOADING with no pins cannot happen: the loader holds one. */
    }
    pthread_mutex_unlock(&s->lock);
    chunk_free_list(freelist);
}

bool pfs_chunk_cache_contains(PfsChunkCache *c, const CsChunkId *id)
{
    uint64_t h = id_hash(id);
    Shard *s = shard_of(c, h);
    pthread_mutex_lock(&s->lock);
    bool found = shard_find(s, id, h) != NULL;
    pthread_mutex_unlock(&s->lock);
    return found;
}

void pfs_chunk_cache_stats(PfsChunkCache *c, PfsChunkCacheStats *ret)
{
    PfsChunkCacheStats t = { 0 };
    for (size_t i = 0; i < SHARDS; i++) {
        Shard *s = &c->shards[i];
        pthread_mutex_lock(&s->lock);
        t.hits += s->stats.hits;
        t.misses += s->stats.misses;
        t.waits += s->stats.waits;
        t.evictions += s->stats.evictions;
        t.failures += s->stats.failures;
        t.bytes += s->bytes;
        t.entries += s->n_hashed;
        pthread_mutex_unlock(&s->lock);
    }
    *ret = t;
}

uint8_t *pfs_chunk_cache_buffer(PfsChunk *ch)
{
    if (!ch->data)
        ch->data = malloc(ch->len ? ch->len : 1);
    return ch->data;
}

void pfs_chunk_cache_adopt(PfsChunk *ch, uint8_t *buf)
{
    free(ch->data);
    ch->data = buf;
}

uint8_t *pfs_chunk_data(PfsChunk *ch)
{
    return ch->data;
}

size_t pfs_chunk_size(const PfsChunk *ch)
{
    return ch->len;
}
