/*
 * The snapshot catalog: one sealed object per snapshot, "snapshots/<16 hex digits>".
 * A snapshot names what was stored (a tree, a stream, or a higher layer's cluster snapshot) and
 * carries its root content reference plus free-form metadata for the layer that made it.
 *
 * A snapshot object is written only after the data it refers to is durable (cs_writer_flush), so
 * a listed snapshot always restores. Objects are sealed with AES-256-GCM under the catalog key;
 * the object name is the AAD, so records cannot be swapped between names.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "chunkstore/store.h"

typedef struct CsSnapshot {
    char id[2 * CS_SNAP_ID_SIZE + 1];
    char *name;
    char *kind;     /* "tree", "stream", or a layer's own kind */
    int64_t time;   /* seconds since the epoch, UTC */
    uint32_t time_nsec; /* so that snapshots made in the same second keep their order */
    char *hostname;
    CsContentRef root;
    json_t *meta;   /* object owned by the snapshot: stats and layer data */
} CsSnapshot;

void cs_snapshot_clear(CsSnapshot *s);
void cs_snapshots_free(CsSnapshot *v, size_t n);

/* Write a new snapshot; fills s->id (and s->time and s->hostname when unset). */
int cs_catalog_add(CsRepo *repo, CsSnapshot *s);

/*
 * A record under "snapshots/" that does not load. Its snapshot's name, kind and time are
 * unknown, so it may be the newest snapshot, or the one a name means: nothing that picks a
 * snapshot by name, "latest" or prefix picks past it.
 */
typedef struct CsCatalogProblem {
    char *object;   /* "snapshots/<id>" */
    const char *id; /* the object's name after "snapshots/": the id, if the name is well formed */
    /* -EBADMSG: damaged (fails authentication, does not parse, or names another id);
     * -EPROTONOSUPPORT: written by a newer format; any other -errno: the record could not be
     * read (-EACCES, -EIO, -ENOMEM, -EFBIG) and may be intact */
    int error;
} CsCatalogProblem;

typedef struct CsCatalog {
    CsSnapshot *snaps; /* the records that load, oldest first */
    size_t n_snaps;
    CsCatalogProblem *problems; /* the records that do not, by object name */
    size_t n_problems;
} CsCatalog;

/* Every record. A record that does not load is a problem, not a failure: this fails only when
 * the catalog cannot be listed, or for lack of memory. */
int cs_catalog_load(CsRepo *repo, CsCatalog *ret);
void cs_catalog_clear(CsCatalog *c);
bool cs_catalog_problem_is_damage(const CsCatalogProblem *p);
/* "is damaged", "was written by a newer version of pitrfs", "cannot be read: <strerror>". */
const char *cs_catalog_problem_text(const CsCatalogProblem *p, char *buf, size_t n);
/* The error that stands for all of c's problems: -EBADMSG when one is damage, else
 * -EPROTONOSUPPORT when one is of a newer format, else the first one's error; 0 when there are
 * none. */
int cs_catalog_problems_error(const CsCatalog *c);
/* What a user can do about c's problems, for a HINT line. */
const char *cs_catalog_problems_hint(const CsCatalog *c);
/* One error line per problem: 'snapshot record "snapshots/<id>" cannot be read: ...'. */
void cs_catalog_log_problems(const CsCatalog *c);

/*
 * Which of c->snaps `spec` means: a full id, a unique id prefix (at least 4 digits), a name
 * (the newest of that name), or "latest". -ENOENT when none, -ENOTUNIQ when a prefix is
 * ambiguous. While c has problems only the full id of a record that loads is resolved: for
 * anything else this returns the error of a problem and sets *ret_problem to it (to the record
 * itself when spec is its id), because that record might be the one meant.
 */
int cs_catalog_resolve(const CsCatalog *c, const char *spec, size_t *ret_index,
                       const CsCatalogProblem **ret_problem);

/* cs_catalog_resolve for commands: logs why nothing was resolved, naming the records in the
 * way (all of them when spec is not one's id). An ambiguous prefix is a usage error (-EINVAL),
 * like any other argument that names nothing in particular. */
int cs_catalog_resolve_or_log(const CsCatalog *c, const char *spec, size_t *ret_index,
                              const CsCatalogProblem **ret_problem);

/* All snapshots, oldest first; fails, after logging each problem record, unless every record
 * loads, since a caller picking from the list cannot know what the others hold. */
int cs_catalog_list(CsRepo *repo, CsSnapshot **ret, size_t *ret_n);
/* cs_catalog_resolve on a fresh cs_catalog_load. */
int cs_catalog_find(CsRepo *repo, const char *spec, CsSnapshot *ret);
/* cs_catalog_resolve_or_log on a fresh cs_catalog_load. */
int cs_catalog_find_or_log(CsRepo *repo, const char *spec, CsSnapshot *ret);
/* Deletes the record of snapshot `id` (a full id), whether or not it loads. */
int cs_catalog_delete(CsRepo *repo, const char *id);

/* Seal/open small objects under the catalog key (used for snapshot records). */
int cs_sealed_encode(const uint8_t key[32], const char *name, const void *p, size_t n, Buf *out);
int cs_sealed_decode(const uint8_t key[32], const char *name, const void *p, size_t n, Buf *out);
