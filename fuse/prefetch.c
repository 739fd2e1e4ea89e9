#include "fuse/prefetch.h"

#include <errno.h>
#include <stdlib.h>

#include <pthread.h>

#include "common/log.h"
#include "common/macro.h"

struct PfsPrefetch {
    PfsPrefetchRun run;
    PfsPrefetchDrop drop;
    void *userdata;
    pthread_t *threads;
    unsigned n_threads;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    PfsPrefetchJob *ring; /* lock: ring buffer of cap jobs */
    size_t cap, head, count;
    bool is_stopping; /* lock */
};

static void *worker(void *arg)
{
    PfsPrefetch *p = arg;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->is_stopping && p->count == 0)
            pthread_cond_wait(&p->wake, &p->lock);
        if (p->is_stopping)
            break;
        PfsPrefetchJob job = p->ring[p->head];
        p->head = (p->head + 1) % p->cap;
        p->count--;
        pthread_mutex_unlock(&p->lock);
        p->run(&job, p->userdata);
        pthread_mutex_lock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

int pfs_prefetch_new(unsigned threads, size_t queue_max, PfsPrefetchRun run, PfsPrefetchDrop drop,
                     void *userdata, PfsPrefetch **ret)
{
    if (threads == 0 || queue_max == 0)
        return -EINVAL;
    PfsPrefetch *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->run = run;
    p->drop = drop;
    p->userdata = userdata;
    p->cap = queue_max;
    p->ring = calloc(queue_max, sizeof(*p->ring));
    p->threads = calloc(threads, sizeof(*p->threads));
    if (!p->ring || !p->threads) {
        free(p->ring);
        free(p->threads);
        free(p);
        return -ENOMEM;
    }
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    for (unsigned i = 0; i < threads; i++) {
        int rc = pthread_create(&p->threads[i], NULL, worker, p);
        if (rc != 0) {
            log_error_errno(-rc, "could not start a read-ahead thread: %m");
            pfs_prefetch_free(p);
            return -rc;
        }
        p->n_threads++;
    }
    *ret = p;
    return 0;
}

bool pfs_prefetch_push(PfsPrefetch *p, const PfsPrefetchJob *job)
{
    pthread_mutex_lock(&p->lock);
    bool ok = !p->is_stopping && p->count < p->cap;
    if (ok) {
        p->ring[(p->head + p->count) % p->cap] = *job;
        p->count++;
        pthread_cond_signal(&p->wake);
    }
    pthread_mutex_unlock(&p->lock);
    return ok;
}

PfsPrefetch *pfs_prefetch_free(PfsPrefetch *p)
{
    if (!p)
        return NULL;
    pthread_mutex_lock(&p->lock);
    p->is_stopping = true;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (unsigned i = 0; i < p->n_threads; i++)
        pthread_join(p->threads[i], NULL);
    while (p->count > 0) {
        PfsPrefetchJob job = p->ring[p->head];
        p->head = (p->head + 1) % p->cap;
        p->count--;
        if (p->drop)
            p->drop(&job, p->userdata);
    }
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->lock);
    free(p->ring);
    free(p->threads);
    free(p);
    return NULL;
}
