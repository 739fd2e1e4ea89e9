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
/* All snapshots, oldest first. */
int cs_catalog_list(CsRepo *repo, CsSnapshot **ret, size_t *ret_n);
/* Find by full id, unique id prefix (at least 4 digits), or name (the newest of that name), or
 * "latest". -ENOENT when none, -ENOTUNIQ when a prefix is ambiguous. */
int cs_catalog_find(CsRepo *repo, const char *spec, CsSnapshot *ret);
/* cs_catalog_find for commands: logs why nothing was found. An ambiguous prefix is a usage
 * error (-EINVAL), like any other argument that names nothing in particular. */
int cs_catalog_find_or_log(CsRepo *repo, const char *spec, CsSnapshot *ret);
int cs_catalog_delete(CsRepo *repo, const char *id);

/* Seal/open small objects under the catalog key (used for snapshot records). */
int cs_sealed_encode(const uint8_t key[32], const char *name, const void *p, size_t n, Buf *out);
int cs_sealed_decode(const uint8_t key[32], const char *name, const void *p, size_t n, Buf *out);
