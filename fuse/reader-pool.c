#include "fuse/reader-pool.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include <pthread.h>

#include "chunkstore/repo.h"
#include "common/macro.h"

struct PfsReaderPool {
    CsRepo *repo;
    CsBaseSource bases;
    uint64_t max_age_ms, max_idle_ms;
    pthread_mutex_t lock;
    PfsReader *free; /* lock: stack, most recently used first */
    unsigned count;  /* lock: allocated readers */
};

uint64_t pfs_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void reader_free(PfsReader *r)
{
    if (!r)
        return;
    cs_index_reader_end(r->ix);
    cs_reader_free(r->rd);
    buf_free(&r->members);
    free(r);
}

static int reader_new(CsRepo *repo, const CsBaseSource *bases, PfsReader **ret)
{
    PfsReader *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    int rc = cs_reader_new(repo, &r->rd);
    if (rc == 0) {
        cs_reader_set_base_source(r->rd, bases);
        rc = cs_index_reader_begin(repo->index, &r->ix);
    }
    if (rc < 0) {
        reader_free(r);
        return rc;
    }
    r->born_ms = pfs_now_ms();
    *ret = r;
    return 0;
}

int pfs_reader_pool_new(CsRepo *repo, const CsBaseSource *bases, unsigned max_age_ms,
                        unsigned max_idle_ms, PfsReaderPool **ret)
{
    PfsReaderPool *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->repo = repo;
    p->bases = bases ? *bases : (CsBaseSource){ 0 };
    p->max_age_ms = max_age_ms;
    p->max_idle_ms = max_idle_ms;
    pthread_mutex_init(&p->lock, NULL);
    *ret = p;
    return 0;
}

PfsReaderPool *pfs_reader_pool_free(PfsReaderPool *p)
{
    if (!p)
        return NULL;
    while (p->free) {
        PfsReader *r = p->free;
        p->free = r->next;
        reader_free(r);
    }
    pthread_mutex_destroy(&p->lock);
    free(p);
    return NULL;
}

int pfs_reader_pool_get(PfsReaderPool *p, PfsReader **ret)
{
    uint64_t now = pfs_now_ms();
    PfsReader *stale = NULL;
    pthread_mutex_lock(&p->lock);
    PfsReader *r = p->free;
    if (r) {
        p->free = r->next;
        r->next = NULL;
        if (now - r->born_ms > p->max_age_ms) {
            stale = r; /* replaced below, outside the lock */
            r = NULL;
            p->count--;
        }
    }
    if (!r)
        p->count++; /* reserve the slot for the reader made below */
    pthread_mutex_unlock(&p->lock);
    reader_free(stale);
    if (r) {
        *ret = r;
        return 0;
    }
    int rc = reader_new(p->repo, &p->bases, &r);
    if (rc < 0) {
        pthread_mutex_lock(&p->lock);
        p->count--;
        pthread_mutex_unlock(&p->lock);
        return rc;
    }
    *ret = r;
    return 0;
}

void pfs_reader_pool_put(PfsReaderPool *p, PfsReader *r)
{
    if (!r)
        return;
    r->idle_since_ms = pfs_now_ms();
    pthread_mutex_lock(&p->lock);
    r->next = p->free;
    p->free = r;
    pthread_mutex_unlock(&p->lock);
}

void pfs_reader_pool_trim(PfsReaderPool *p)
{
    uint64_t now = pfs_now_ms();
    PfsReader *dead = NULL;
    pthread_mutex_lock(&p->lock);
    /* The stack is ordered by last use: once one reader is idle long enough, so are the rest. */
    PfsReader **pp = &p->free;
    while (*pp && now - (*pp)->idle_since_ms <= p->max_idle_ms)
        pp = &(*pp)->next;
    dead = *pp;
    *pp = NULL;
    for (PfsReader *r = dead; r; r = r->next)
        p->count--;
    pthread_mutex_unlock(&p->lock);
    while (dead) {
        PfsReader *next = dead->next;
        reader_free(dead);
        dead = next;
    }
}

unsigned pfs_reader_pool_count(PfsReaderPool *p)
{
    pthread_mutex_lock(&p->lock);
    unsigned n = p->count;
    pthread_mutex_unlock(&p->lock);
    return n;
}
