#include "chunkstore/files-cache.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>
#include <xxhash.h>

#include "common/buf.h"
#include "common/endian.h"
#include "common/log.h"

/* Records written to the index in one transaction. */
#define FLUSH_AT 8192
/* How much older than the store's start a change time must be to be trusted: more than the
 * coarsest timestamps of a common file system (FAT's two seconds). */
#define RACY_MARGIN_NS 2000000000ll

struct CsFilesCache {
    CsIndex *idx;
    CsIndexReader *rd; /* NULL until the first lookup; paused between lookups */
    uint8_t source[8];
    uint64_t generation;
    int64_t started_ns; /* CLOCK_REALTIME at open */
    CsFileKey *keys;
    CsFileStamp *stamps;
    size_t n, cap;
};

static int64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

/* Replaced by the unit tests, which cannot make a change time old, and want batches small. */
static int64_t (*files_cache_clock)(void) = realtime_ns;
static size_t files_cache_flush_at = FLUSH_AT;

int cs_files_cache_open(CsIndex *idx, const char *source, CsFilesCache **ret)
{
    CsFilesCache *fc = calloc(1, sizeof(*fc));
    if (!fc)
        return -ENOMEM;
    fc->idx = idx;
    put_be64(fc->source, XXH3_64bits(source, strlen(source)));
    if (RAND_bytes((unsigned char *)&fc->generation, sizeof(fc->generation)) != 1) {
        free(fc);
        return -EIO;
    }
    fc->started_ns = files_cache_clock();
    *ret = fc;
    return 0;
}

CsFilesCache *cs_files_cache_free(CsFilesCache *fc)
{
    if (fc) {
        cs_index_reader_end(fc->rd);
        free(fc->keys);
        free(fc->stamps);
        free(fc);
    }
    return NULL;
}

static CsFileKey file_key(const CsFilesCache *fc, const char *relpath)
{
    CsFileKey k;
    memcpy(k.bytes, fc->source, 8);
    put_be64(k.bytes + 8, XXH3_64bits(relpath, strlen(relpath)));
    return k;
}

static int content_hash(const CsContentRef *content, uint64_t *ret)
{
    _cleanup_(buf_free) Buf b = BUF_INIT;
    int r = cs_content_ref_encode(content, &b);
    if (r < 0)
        return r;
    *ret = XXH3_64bits(b.data, b.size);
    return 0;
}

static CsFileStamp file_stamp(const struct stat *st)
{
    return (CsFileStamp){ .ino = (uint64_t)st->st_ino,
                          .ctime_sec = st->st_ctim.tv_sec,
                          .ctime_nsec = (uint32_t)st->st_ctim.tv_nsec,
                          .mtime_sec = st->st_mtim.tv_sec,
                          .mtime_nsec = (uint32_t)st->st_mtim.tv_nsec,
                          .size = (uint64_t)st->st_size };
}

static bool same_file(const CsFileStamp *a, const CsFileStamp *b)
{
    return a->ino == b->ino && a->ctime_sec == b->ctime_sec && a->ctime_nsec == b->ctime_nsec &&
           a->mtime_sec == b->mtime_sec && a->mtime_nsec == b->mtime_nsec && a->size == b->size;
}

static int lookup(CsFilesCache *fc, const CsFileKey *key, CsFileStamp *ret)
{
    int r = fc->rd ? 0 : cs_index_reader_begin(fc->idx, &fc->rd);
    if (r < 0) {
        fc->rd = cs_index_reader_end(fc->rd);
        return r;
    }
    /* A fresh snapshot for every lookup, let go of at once: files are read between lookups,
     * for seconds, and a snapshot held meanwhile keeps the index from reusing freed pages. */
    r = cs_index_reader_lookup_file(fc->rd, key, ret);
    cs_index_reader_pause(fc->rd);
    return r;
}

bool cs_files_cache_unchanged(CsFilesCache *fc, const char *relpath, const struct stat *st,
                              const CsContentRef *content)
{
    CsFileKey key = file_key(fc, relpath);
    CsFileStamp was, now = file_stamp(st);
    uint64_t hash;
    if (!S_ISREG(st->st_mode) || content->size != now.size || lookup(fc, &key, &was) < 0 ||
        !same_file(&was, &now) || content_hash(content, &hash) < 0)
        return false;
    return hash == was.content_hash;
}

static int flush(CsFilesCache *fc)
{
    /* The write transaction should not find this thread's own old snapshot pinning pages. */
    fc->rd = cs_index_reader_end(fc->rd);
    int r = fc->n ? cs_index_put_files(fc->idx, fc->keys, fc->stamps, fc->n) : 0;
    fc->n = 0;
    return r;
}

int cs_files_cache_remember(CsFilesCache *fc, const char *relpath, const struct stat *st,
                            const CsContentRef *content)
{
    int64_t ctime_ns = (int64_t)st->st_ctim.tv_sec * 1000000000ll + st->st_ctim.tv_nsec;
    if (ctime_ns > fc->started_ns - RACY_MARGIN_NS || content->size != (uint64_t)st->st_size)
        return 0; /* too recent to trust, or it changed while it was read */
    if (fc->n == fc->cap) {
        size_t cap = fc->cap ? fc->cap * 2 : 256;
        CsFileKey *k = realloc(fc->keys, cap * sizeof(*k));
        if (k)
            fc->keys = k;
        CsFileStamp *s = k ? realloc(fc->stamps, cap * sizeof(*s)) : NULL;
        if (!s)
            return -ENOMEM;
        fc->stamps = s;
        fc->cap = cap;
    }
    CsFileStamp stamp = file_stamp(st);
    stamp.generation = fc->generation;
    int r = content_hash(content, &stamp.content_hash);
    if (r < 0)
        return r;
    fc->keys[fc->n] = file_key(fc, relpath);
    fc->stamps[fc->n++] = stamp;
    return fc->n >= files_cache_flush_at ? flush(fc) : 0;
}

int cs_files_cache_commit(CsFilesCache *fc)
{
    int r = flush(fc);
    return r < 0 ? r : cs_index_forget_files(fc->idx, fc->source, fc->generation);
}
