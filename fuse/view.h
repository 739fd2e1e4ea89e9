/*
 * What /snapshots and /streams show: an immutable, reference-counted view built from one catalog
 * listing, and the source that refreshes it.
 *
 * /snapshots holds, for every snapshot of kind "tree": a directory named by its id; a symlink
 * named by its name pointing at the id (several snapshots with one name: the newest wins); and
 * "latest", a symlink to the newest tree snapshot. /streams holds every snapshot of kind
 * "stream" as a regular file under its id and under its name (the same file). Other kinds are
 * not shown. A name is shown with leading slashes removed and other slashes turned into "_"
 * ("/srv/pg/data" -> "srv_pg_data"); names that would be empty, ".", "..", "latest", longer
 * than 255 bytes, or equal to a snapshot id in the same directory are not shown (the id is).
 *
 * A directory handle keeps the view it was opened with, so offsets stay valid while the catalog
 * changes. pfs_catalog_get() re-lists the backend's "snapshots/" names (cheap: a readdir), and
 * reloads the catalog only when that set changed.
 */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chunkstore/catalog.h"

typedef enum PfsViewKind {
    PFS_VIEW_TREE,   /* /snapshots/<id>: the tree's root directory */
    PFS_VIEW_LINK,   /* /snapshots/<name> or latest: symlink to the snapshot's id */
    PFS_VIEW_STREAM, /* /streams/<id> or /streams/<name>: the stream as a file */
} PfsViewKind;

typedef struct PfsViewEntry {
    const char *name; /* points into the view */
    PfsViewKind kind;
    const CsSnapshot *snap;
} PfsViewEntry;

typedef struct PfsView {
    atomic_uint refs;
    CsSnapshot *snaps; /* oldest first, owned */
    size_t n_snaps;
    PfsViewEntry *trees; /* /snapshots, sorted by name (strcmp) */
    size_t n_trees;
    PfsViewEntry *streams; /* /streams, sorted by name */
    size_t n_streams;
    char **names; /* owned strings the entries point to */
    size_t n_names;
    const CsSnapshot *newest_tree, *newest_stream; /* NULL if none */
} PfsView;

/* Build a view from a catalog listing (oldest first, as cs_catalog_list returns it); takes
 * ownership of snaps even on failure. The view starts with one reference. */
int pfs_view_build(CsSnapshot *snaps, size_t n, PfsView **ret);
PfsView *pfs_view_ref(PfsView *v);
void pfs_view_unref(PfsView *v);
const PfsViewEntry *pfs_view_find(const PfsViewEntry *v, size_t n, const char *name);
/* The directory name a snapshot name is shown under (malloc'd), or NULL if it is not shown
 * (errno is not set; memory exhaustion also gives NULL). */
char *pfs_view_display_name(const char *name);

typedef struct PfsCatalog PfsCatalog;

/* max_age_ms: how long a view is served without looking at the backend. */
int pfs_catalog_new(CsRepo *repo, unsigned max_age_ms, PfsCatalog **ret);
PfsCatalog *pfs_catalog_free(PfsCatalog *c);
/*
 * The current view, with a reference the caller drops. With `check`, or when the view is older
 * than max_age, the backend listing is compared first (and the catalog reloaded on a change).
 * A failed reload keeps the previous view (logged as a warning) and is not an error.
 */
int pfs_catalog_get(PfsCatalog *c, bool check, PfsView **ret);
/* Bytes of all pack files as of the last reload (for statfs). */
uint64_t pfs_catalog_pack_bytes(PfsCatalog *c);
