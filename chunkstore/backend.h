/*
 * Storage backend: a flat namespace of immutable objects plus advisory locks. Everything above
 * this interface names objects ("packs/ab/ab12....pack", "snapshots/<id>") and never assumes a
 * local path, so an S3-compatible backend can stand in for the local directory.
 *
 * Promises every backend keeps:
 *  - put/spool publish are atomic and durable: after they return 0 the object is complete and
 *    survives a crash; before, it is absent. A crash never leaves a partial object visible.
 *  - objects are immutable; put of an existing name fails with -EEXIST unless overwrite is set
 *    (only small mutable metadata such as "config" uses overwrite).
 *  - readers are never blocked by writers.
 * All functions return 0 or a negative errno (-ENOENT for a missing object).
 *
 * An object is a regular file: reading or stat-ing a name that is something else (a FIFO, a
 * device, a directory) fails at once with -EBADMSG, logged with the name, and never blocks.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct CsBackend CsBackend;
typedef struct CsSpool CsSpool;
typedef struct CsLock CsLock;

typedef enum CsLockMode {
    CS_LOCK_SHARED,    /* writers adding data: many at once */
    CS_LOCK_EXCLUSIVE, /* deleting data (prune, gc, repair): alone */
} CsLockMode;

typedef int (*CsBackendListFn)(const char *name, uint64_t size, void *userdata);

/* Open a local-directory backend; with `create`, make the directory (it must be absent or
 * empty).
 *
 * Who may use a local repository (docs/FORMAT.md 2.1): it belongs to the owner of its
 * directory, and the setgid bit on the directory shares it with the directory's group. What a
 * process makes in it (objects, directories, spool and lock files) is given that owner when the
 * process is root, before it has its final name, and modes that let the group read it (and
 * write where every user must: spool, lock, pack, snapshot and WAL directories, lock files);
 * without the bit, only the owner (and root) can. A read or write refused for permissions fails
 * with -EACCES, logged with the object's name and who the repository belongs to. */
int cs_backend_local_open(const char *path, bool create, CsBackend **ret);
/* Open by location string: a path today; "s3://" is reserved for the object-store backend. */
int cs_backend_open(const char *location, bool create, CsBackend **ret);
/* Create a repository's backend as cs_backend_open(location, true) does. With `group` (a gid,
 * or NULL), the directory is given to that group with the setgid bit, mode 2750, first:
 * -EPERM (logged) when this user may not (it must be root or a member of the group). */
int cs_backend_create(const char *location, const gid_t *group, CsBackend **ret);
CsBackend *cs_backend_free(CsBackend *b);

/* Human-readable location for messages. */
const char *cs_backend_location(const CsBackend *b);
/* Who the repository belongs to and who may use it, for a HINT line: "the repository belongs to
 * postgres:pitr: run as postgres, as root or as a member of group pitr (docs/OPERATIONS.md
 * 8.3)". */
const char *cs_backend_access_hint(CsBackend *b);
/* Default directory for the local LMDB cache of this backend (caller frees). */
int cs_backend_cache_dir(const CsBackend *b, char **ret);

int cs_backend_put(CsBackend *b, const char *name, const void *p, size_t n, bool overwrite);
/* Read a whole object of at most `max` bytes into a malloc'd buffer. */
int cs_backend_get(CsBackend *b, const char *name, size_t max, uint8_t **ret, size_t *ret_n);
/* Read up to n bytes at off; *ret_n < n only when the object ends first. Thread-safe. */
int cs_backend_get_range(CsBackend *b, const char *name, uint64_t off, void *p, size_t n,
                         size_t *ret_n);
int cs_backend_stat(CsBackend *b, const char *name, uint64_t *ret_size);
/* Call fn for every object whose name starts with `prefix` (a directory such as "packs/").
 * A non-zero return from fn stops the walk and is returned. Order is unspecified.
 * Something in an object's place that cannot be one (a FIFO, a device) is listed too, with
 * size 0, so that reading it fails as damage (-EBADMSG) where the caller can say so, instead
 * of hiding it; symlinks are not listed. */
int cs_backend_list(CsBackend *b, const char *prefix, CsBackendListFn fn, void *userdata);
int cs_backend_delete(CsBackend *b, const char *name);

/* A spool is an object under construction (a pack being filled). Only publish makes it
 * visible; abort or a crash leaves nothing behind that a listing shows (temporary spool files
 * are swept by cs_backend_sweep). */
int cs_backend_spool_new(CsBackend *b, CsSpool **ret);
int cs_spool_write(CsSpool *s, const void *p, size_t n);
uint64_t cs_spool_size(const CsSpool *s);
/* Durably publish under `name`, then free the spool. On error the spool is aborted. */
int cs_spool_publish(CsSpool *s, const char *name);
void cs_spool_abort(CsSpool *s);
/* Remove spool leftovers of dead processes. */
int cs_backend_sweep(CsBackend *b);

/* Advisory lock named `name`. With wait=false a conflict returns -EWOULDBLOCK at once.
 * The lock dies with the process. */
int cs_backend_lock(CsBackend *b, const char *name, CsLockMode mode, bool wait, CsLock **ret);
CsLock *cs_lock_release(CsLock *l);
