/*
 * Read-ahead workers: a small pool of threads working through a bounded FIFO queue of jobs
 * (in the mount: "decode chunk i of file map M into the chunk cache"). Pushing never blocks: when
 * the queue is full the job is refused and the caller drops it, because read-ahead is only a
 * hint and a reader must never wait for it.
 *
 * Jobs are opaque; `run` does the work and `drop` releases a job that will not run (refused at
 * shutdown or still queued then). Both are called without the pool's lock. Thread-safe.
 * Threads are started by pfs_prefetch_new(), so create the pool after any fork.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

typedef struct PfsPrefetch PfsPrefetch;

typedef struct PfsPrefetchJob {
    void *ptr;
    size_t index;
} PfsPrefetchJob;

typedef void (*PfsPrefetchRun)(const PfsPrefetchJob *job, void *userdata);
typedef void (*PfsPrefetchDrop)(const PfsPrefetchJob *job, void *userdata);

int pfs_prefetch_new(unsigned threads, size_t queue_max, PfsPrefetchRun run, PfsPrefetchDrop drop,
                     void *userdata, PfsPrefetch **ret);
/* Queue a job; false if the queue is full or the pool is stopping (the caller keeps the job). */
bool pfs_prefetch_push(PfsPrefetch *p, const PfsPrefetchJob *job);
/* Stop the workers (a job in progress finishes), drop what is queued, join. Returns NULL. */
PfsPrefetch *pfs_prefetch_free(PfsPrefetch *p);
