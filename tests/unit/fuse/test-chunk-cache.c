/*
 * fuse/chunk-cache: hits and misses, the byte bound and LRU eviction, pinned entries surviving
 * eviction, failed loads not being cached, length mismatches, a disabled cache, and
 * single-flight loading under concurrency (every chunk decoded exactly once).
 */
#include "tests/unit/harness.h"

#include <pthread.h>
#include <stdatomic.h>

#include "fuse/chunk-cache.c"

static CsChunkId make_id(unsigned i)
{
    CsChunkId id;
    memset(&id, 0, sizeof(id));
    /* spread over shards and buckets like real (HMAC) ids */
    uint64_t h = (uint64_t)i * 0x9e3779b97f4a7c15ull + 1;
    memcpy(id.bytes, &h, sizeof(h));
    memcpy(id.bytes + 8, &i, sizeof(i));
    return id;
}

static PfsChunk *load(PfsChunkCache *c, unsigned i, size_t len, int want_state)
{
    CsChunkId id = make_id(i);
    PfsChunk *ch;
    int st = pfs_chunk_cache_acquire(c, &id, len, &ch);
    assert_int_equal(st, want_state);
    if (st == PFS_CHUNK_RESERVED) {
        memset(pfs_chunk_cache_buffer(ch), (int)(i & 0xff), len);
        pfs_chunk_cache_complete(c, ch, 0);
    }
    return ch;
}

static void test_hit_miss(void **state)
{
    (void)state;
    PfsChunkCache *c;
    ASSERT_OK(pfs_chunk_cache_new(1 << 20, &c));
    PfsChunk *ch = load(c, 1, 1000, PFS_CHUNK_RESERVED);
    assert_int_equal(pfs_chunk_size(ch), 1000);
    pfs_chunk_cache_release(c, ch);
    CsChunkId id = make_id(1);
    assert_true(pfs_chunk_cache_contains(c, &id));
    ch = load(c, 1, 1000, PFS_CHUNK_READY);
    assert_int_equal(pfs_chunk_data(ch)[999], 1);
    /* Same id, another length: the caller's metadata is wrong. */
    PfsChunk *other;
    ASSERT_ERR(EBADMSG, pfs_chunk_cache_acquire(c, &id, 999, &other));
    pfs_chunk_cache_release(c, ch);
    PfsChunkCacheStats s;
    pfs_chunk_cache_stats(c, &s);
    assert_int_equal(s.hits, 1);
    assert_int_equal(s.misses, 1);
    assert_int_equal(s.entries, 1);
    pfs_chunk_cache_free(c);
}

static void test_bound_and_pins(void **state)
{
    (void)state;
    PfsChunkCache *c;
    const size_t max = 16 * 64 * 1024; /* 64 KiB per shard */
    ASSERT_OK(pfs_chunk_cache_new(max, &c));
    PfsChunk *pinned = load(c, 0, 60000, PFS_CHUNK_RESERVED); /* stays pinned throughout */
    for (unsigned i = 1; i < 2000; i++)
        pfs_chunk_cache_release(c, load(c, i, 4000, PFS_CHUNK_RESERVED));
    PfsChunkCacheStats s;
    pfs_chunk_cache_stats(c, &s);
    assert_true(s.evictions > 0);
    assert_true(s.bytes <= max + 60000 + sizeof(PfsChunk));
    /* The pinned entry was never evicted and its bytes are intact. */
    CsChunkId id0 = make_id(0);
    assert_true(pfs_chunk_cache_contains(c, &id0));
    assert_int_equal(pfs_chunk_data(pinned)[59999], 0);
    pfs_chunk_cache_release(c, pinned);
    /* The most recently used entries are still there, the oldest are gone. */
    CsChunkId recent = make_id(1999), old = make_id(1);
    assert_true(pfs_chunk_cache_contains(c, &recent));
    assert_false(pfs_chunk_cache_contains(c, &old));
    pfs_chunk_cache_free(c);
}

static void test_failure_not_cached(void **state)
{
    (void)state;
    PfsChunkCache *c;
    ASSERT_OK(pfs_chunk_cache_new(1 << 20, &c));
    CsChunkId id = make_id(5);
    PfsChunk *a, *b;
    assert_int_equal(pfs_chunk_cache_acquire(c, &id, 100, &a), PFS_CHUNK_RESERVED);
    assert_int_equal(pfs_chunk_cache_acquire(c, &id, 100, &b), PFS_CHUNK_LOADING);
    pfs_chunk_cache_complete(c, a, -EBADMSG);
    ASSERT_ERR(EBADMSG, pfs_chunk_cache_wait(c, b));
    pfs_chunk_cache_release(c, b);
    pfs_chunk_cache_release(c, a);
    assert_false(pfs_chunk_cache_contains(c, &id));
    /* The next reader tries again. */
    pfs_chunk_cache_release(c, load(c, 5, 100, PFS_CHUNK_RESERVED));
    pfs_chunk_cache_free(c);
}

static void test_disabled(void **state)
{
    (void)state;
    PfsChunkCache *c;
    ASSERT_OK(pfs_chunk_cache_new(0, &c));
    pfs_chunk_cache_release(c, load(c, 3, 100, PFS_CHUNK_RESERVED));
    pfs_chunk_cache_release(c, load(c, 3, 100, PFS_CHUNK_RESERVED)); /* nothing kept */
    PfsChunkCacheStats s;
    pfs_chunk_cache_stats(c, &s);
    assert_int_equal(s.entries, 0);
    assert_int_equal(s.bytes, 0);
    pfs_chunk_cache_free(c);
}

#define IDS     64
#define THREADS 8

typedef struct Shared {
    PfsChunkCache *c;
    atomic_uint loads[IDS];
    atomic_uint bad;
} Shared;

static void *hammer(void *arg)
{
    Shared *sh = arg;
    for (unsigned round = 0; round < 50; round++) {
        for (unsigned i = 0; i < IDS; i++) {
            CsChunkId id = make_id(i);
            PfsChunk *ch;
            size_t len = 1000 + i;
            int st = pfs_chunk_cache_acquire(sh->c, &id, len, &ch);
            if (st == PFS_CHUNK_RESERVED) {
                atomic_fetch_add(&sh->loads[i], 1);
                memset(pfs_chunk_cache_buffer(ch), (int)i, len);
                pfs_chunk_cache_complete(sh->c, ch, 0);
            } else if (st == PFS_CHUNK_LOADING && pfs_chunk_cache_wait(sh->c, ch) < 0)
                atomic_fetch_add(&sh->bad, 1);
            if (st >= 0) {
                if (pfs_chunk_data(ch)[len - 1] != (uint8_t)i)
                    atomic_fetch_add(&sh->bad, 1);
                pfs_chunk_cache_release(sh->c, ch);
            }
        }
    }
    return NULL;
}

static void test_single_flight(void **state)
{
    (void)state;
    Shared sh = { 0 };
    ASSERT_OK(pfs_chunk_cache_new(16u << 20, &sh.c));
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer, &sh), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(atomic_load(&sh.bad), 0);
    for (unsigned i = 0; i < IDS; i++)
        assert_int_equal(atomic_load(&sh.loads[i]), 1);
    pfs_chunk_cache_free(sh.c);
}

/* Spent entries (a sequential reader had them whole) live on a short list of their own: a long
 * run of them recycles a little memory, leaves the ordinary entries alone, and is evicted first;
 * one that is asked for again is a hit and becomes ordinary. */
static void test_spent(void **state)
{
    (void)state;
    PfsChunkCache *c;
    const size_t max = 16 * 64 * 1024; /* 64 KiB per shard, 8 KiB of it for spent entries */
    ASSERT_OK(pfs_chunk_cache_new(max, &c));
    for (unsigned i = 0; i < 100; i++) /* 400 KB of ordinary entries: fits */
        pfs_chunk_cache_release(c, load(c, i, 4000, PFS_CHUNK_RESERVED));
    for (unsigned i = 1000; i < 5000; i++) /* 16 MB read once, sequentially */
        pfs_chunk_cache_release_spent(c, load(c, i, 4000, PFS_CHUNK_RESERVED), true);
    PfsChunkCacheStats s;
    pfs_chunk_cache_stats(c, &s);
    for (unsigned i = 0; i < 100; i++) {
        CsChunkId id = make_id(i);
        assert_true(pfs_chunk_cache_contains(c, &id));
    }
    /* At most an eighth of each shard is spent entries (each shard keeps at least one). */
    assert_true(s.bytes <= 100 * (4000 + sizeof(PfsChunk)) + max / 8 + 16 * (4000 + 64));
    CsChunkId last = make_id(4999), first = make_id(1000);
    assert_true(pfs_chunk_cache_contains(c, &last));
    assert_false(pfs_chunk_cache_contains(c, &first));

    /* A spent entry asked for again: a hit, then kept like any other. */
    PfsChunk *ch = load(c, 4999, 4000, PFS_CHUNK_READY);
    assert_int_equal(pfs_chunk_data(ch)[3999], (4999 & 0xff));
    pfs_chunk_cache_release(c, ch);
    for (unsigned i = 6000; i < 8000; i++)
        pfs_chunk_cache_release_spent(c, load(c, i, 4000, PFS_CHUNK_RESERVED), true);
    assert_true(pfs_chunk_cache_contains(c, &last));

    /* Spent entries go before ordinary ones when the whole cache is over its bound. */
    for (unsigned i = 10000; i < 10200; i++)
        pfs_chunk_cache_release(c, load(c, i, 4000, PFS_CHUNK_RESERVED));
    CsChunkId newest_spent = make_id(7999);
    assert_false(pfs_chunk_cache_contains(c, &newest_spent));
    pfs_chunk_cache_free(c);
}

/* A loader hands over a decoded buffer instead of copying into one; a loader that provides no
 * bytes at all fails the load rather than publish a NULL buffer. */
static void test_adopt(void **state)
{
    (void)state;
    PfsChunkCache *c;
    ASSERT_OK(pfs_chunk_cache_new(1 << 20, &c));
    CsChunkId id = make_id(7);
    PfsChunk *ch;
    assert_int_equal(pfs_chunk_cache_acquire(c, &id, 3000, &ch), PFS_CHUNK_RESERVED);
    uint8_t *buf = malloc(3000);
    assert_non_null(buf);
    memset(buf, 0x5a, 3000);
    pfs_chunk_cache_adopt(ch, buf);
    pfs_chunk_cache_complete(c, ch, 0);
    assert_ptr_equal(pfs_chunk_data(ch), buf);
    pfs_chunk_cache_release(c, ch);
    assert_int_equal(pfs_chunk_cache_acquire(c, &id, 3000, &ch), PFS_CHUNK_READY);
    assert_int_equal(pfs_chunk_data(ch)[2999], 0x5a);
    pfs_chunk_cache_release(c, ch);

    /* Adopting over an allocated buffer frees that one (ASan and valgrind would see a leak). */
    CsChunkId id2 = make_id(8);
    assert_int_equal(pfs_chunk_cache_acquire(c, &id2, 100, &ch), PFS_CHUNK_RESERVED);
    assert_non_null(pfs_chunk_cache_buffer(ch));
    uint8_t *other = calloc(1, 100);
    assert_non_null(other);
    pfs_chunk_cache_adopt(ch, other);
    pfs_chunk_cache_complete(c, ch, 0);
    pfs_chunk_cache_release(c, ch);

    CsChunkId id3 = make_id(9);
    assert_int_equal(pfs_chunk_cache_acquire(c, &id3, 100, &ch), PFS_CHUNK_RESERVED);
    pfs_chunk_cache_complete(c, ch, 0);
    ASSERT_ERR(EINVAL, pfs_chunk_cache_wait(c, ch));
    pfs_chunk_cache_release(c, ch);
    assert_false(pfs_chunk_cache_contains(c, &id3));
    pfs_chunk_cache_free(c);
}

RUN_TESTS(cmocka_unit_test(test_hit_miss), cmocka_unit_test(test_adopt), cmocka_unit_test(test_bound_and_pins),
          cmocka_unit_test(test_failure_not_cached), cmocka_unit_test(test_disabled),
          cmocka_unit_test(test_single_flight), cmocka_unit_test(test_spent))
