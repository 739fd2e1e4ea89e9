#include "fuse/view.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <pthread.h>

#include "chunkstore/repo.h"
#include "common/fs-util.h"
#include "common/log.h"
#include "common/macro.h"
#include "fuse/reader-pool.h"

#define NAME_MAX_BYTES 255

/* ---- building a view ---- */

typedef struct Cand {
    char *name;
    PfsViewKind kind;
    const CsSnapshot *snap;
    size_t order; /* index in the listing: larger is newer */
    int prio;     /* ids beat names; "latest" is reserved */
} Cand;

enum { PRIO_NAME = 1, PRIO_ID = 2, PRIO_LATEST = 3 };

char *pfs_view_display_name(const char *name)
{
    while (*name == '/')
        name++;
    size_t n = strlen(name);
    while (n > 0 && name[n - 1] == '/')
        n--;
    if (n == 0 || n > NAME_MAX_BYTES)
        return NULL;
    char *d = strndup(name, n);
    if (!d)
        return NULL;
    for (char *p = d; *p; p++)
        if (*p == '/')
            *p = '_';
    if (strcmp(d, ".") == 0 || strcmp(d, "..") == 0 || strcmp(d, "latest") == 0) {
        free(d);
        return NULL;
    }
    return d;
}

static int cand_cmp(const void *a, const void *b)
{
    const Cand *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c)
        return c;
    if (x->prio != y->prio)
        return x->prio > y->prio ? -1 : 1; /* higher priority first */
    if (x->order != y->order)
        return x->order > y->order ? -1 : 1; /* newer first */
    return 0;
}

static int cand_add(Cand **v, size_t *n, size_t *cap, char *name, PfsViewKind kind,
                    const CsSnapshot *snap, size_t order, int prio)
{
    if (!name)
        return -ENOMEM;
    if (GROW_ARRAY(*v, *cap, *n, 16) < 0) {
        free(name);
        return -ENOMEM;
    }
    (*v)[(*n)++] = (Cand){ .name = name, .kind = kind, .snap = snap, .order = order, .prio = prio };
    return 0;
}

/* Sort candidates, keep the best of each name, move the kept names into the view. */
static int cands_finish(PfsView *v, Cand *c, size_t n, PfsViewEntry **ret, size_t *ret_n)
{
    if (n)
        qsort(c, n, sizeof(*c), cand_cmp);
    PfsViewEntry *e = calloc(n ? n : 1, sizeof(*e));
    char **names = realloc(v->names, (v->n_names + n + 1) * sizeof(*names));
    if (names)
        v->names = names;
    if (!e || !names) {
        free(e);
        for (size_t i = 0; i < n; i++)
            free(c[i].name);
        return -ENOMEM;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (k > 0 && strcmp(e[k - 1].name, c[i].name) == 0) {
            free(c[i].name);
            continue;
        }
        v->names[v->n_names++] = c[i].name;
        e[k++] = (PfsViewEntry){ .name = c[i].name, .kind = c[i].kind, .snap = c[i].snap };
    }
    *ret = e;
    *ret_n = k;
    return 0;
}

/* Kinds whose root is a directory: stored trees, a node's base backup ("pgbase": pgdata/ and
 * tablespaces/), and cluster snapshots (one directory per node). */
static bool has_tree_root(const char *kind)
{
    return strcmp(kind, "tree") == 0 || strcmp(kind, "pgbase") == 0 ||
           strcmp(kind, "cluster") == 0;
}

static int build_dir(PfsView *v, const char *kind, bool is_tree, PfsViewEntry **ret, size_t *ret_n)
{
    Cand *c = NULL;
    size_t n = 0, cap = 0;
    const CsSnapshot *newest = NULL;
    int r = 0;
    for (size_t i = 0; r == 0 && i < v->n_snaps; i++) {
        const CsSnapshot *s = &v->snaps[i];
        if (!s->kind || !(strcmp(s->kind, kind) == 0 || (is_tree && has_tree_root(s->kind))))
            continue;
        newest = s;
        r = cand_add(&c, &n, &cap, strdup(s->id), is_tree ? PFS_VIEW_TREE : PFS_VIEW_STREAM, s, i,
                     PRIO_ID);
        if (r == 0 && s->name) {
            char *d = pfs_view_display_name(s->name);
            if (d)
                r = cand_add(&c, &n, &cap, d, is_tree ? PFS_VIEW_LINK : PFS_VIEW_STREAM, s, i,
                             PRIO_NAME);
        }
    }
    if (r == 0 && is_tree && newest)
        r = cand_add(&c, &n, &cap, strdup("latest"), PFS_VIEW_LINK, newest, v->n_snaps,
                     PRIO_LATEST);
    if (r < 0) {
        for (size_t i = 0; i < n; i++)
            free(c[i].name);
        free(c);
        return r;
    }
    if (is_tree)
        v->newest_tree = newest;
    else
        v->newest_stream = newest;
    r = cands_finish(v, c, n, ret, ret_n);
    free(c);
    return r;
}

static void view_free(PfsView *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->n_names; i++)
        free(v->names[i]);
    free(v->names);
    free(v->trees);
    free(v->streams);
    cs_snapshots_free(v->snaps, v->n_snaps);
    free(v);
}

int pfs_view_build(CsSnapshot *snaps, size_t n, PfsView **ret)
{
    PfsView *v = calloc(1, sizeof(*v));
    if (!v) {
        cs_snapshots_free(snaps, n);
        return -ENOMEM;
    }
    atomic_init(&v->refs, 1);
    v->snaps = snaps;
    v->n_snaps = n;
    int r = build_dir(v, "tree", true, &v->trees, &v->n_trees);
    if (r == 0)
        r = build_dir(v, "stream", false, &v->streams, &v->n_streams);
    if (r < 0) {
        view_free(v);
        return r;
    }
    *ret = v;
    return 0;
}

PfsView *pfs_view_ref(PfsView *v)
{
    if (v)
        atomic_fetch_add(&v->refs, 1);
    return v;
}

void pfs_view_unref(PfsView *v)
{
    if (v && atomic_fetch_sub(&v->refs, 1) == 1)
        view_free(v);
}

static int view_entry_cmp(const void *key, const void *elem)
{
    return strcmp(key, ((const PfsViewEntry *)elem)->name);
}

const PfsViewEntry *pfs_view_find(const PfsViewEntry *v, size_t n, const char *name)
{
    return n ? bsearch(name, v, n, sizeof(*v), view_entry_cmp) : NULL;
}

/* ---- the refreshing source ---- */

struct PfsCatalog {
    CsRepo *repo;
    uint64_t max_age_ms;
    pthread_mutex_t lock; /* serializes refreshes; guards everything below */
    PfsView *view;
    StrList listing; /* sorted object names at the last reload */
    uint64_t checked_ms;
    atomic_uint_fast64_t pack_bytes;
};

static int listing_visit(const char *name, uint64_t size, void *userdata)
{
    (void)size;
    return str_list_add(userdata, name, strlen(name));
}

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool listing_equal(const StrList *a, const StrList *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->v[i], b->v[i]) != 0)
            return false;
    return true;
}

static int pack_visit(const char *name, uint64_t size, void *userdata)
{
    size_t n = strlen(name);
    if (n > 5 && strcmp(name + n - 5, ".pack") == 0)
        *(uint64_t *)userdata += size;
    return 0;
}

static void update_pack_bytes(PfsCatalog *c)
{
    uint64_t total = 0;
    if (cs_backend_list(c->repo->backend, "packs/", pack_visit, &total) == 0)
        atomic_store(&c->pack_bytes, total);
}

/* Called with c->lock held. */
static int refresh(PfsCatalog *c, bool is_first)
{
    StrList now = { 0 };
    int r = cs_backend_list(c->repo->backend, "snapshots/", listing_visit, &now);
    if (r < 0) {
        str_list_clear(&now);
        if (is_first)
            return r; /* at mount time the caller reports it, as the error it then is */
        return log_warning_errno(r, "could not list the snapshots of the repository: %m");
    }
    if (now.n)
        qsort(now.v, now.n, sizeof(*now.v), str_cmp);
    c->checked_ms = pfs_now_ms();
    if (!is_first && listing_equal(&now, &c->listing)) {
        str_list_clear(&now);
        return 0;
    }
    if (!is_first) {
        /* New snapshots may refer to packs copied in from elsewhere (rsync of a repository):
         * index what the index does not know, as every command does when it opens. */
        uint64_t indexed = 0;
        if (cs_repo_index_sync(c->repo, false, &indexed) == 0 && indexed > 0)
            log_info("indexed %llu new packs", (unsigned long long)indexed);
    }
    CsSnapshot *snaps;
    size_t n;
    if ((r = cs_catalog_list(c->repo, &snaps, &n)) < 0) {
        str_list_clear(&now);
        return is_first ? r : log_warning_errno(r, "could not read the snapshot catalog: %m");
    }
    PfsView *v;
    if ((r = pfs_view_build(snaps, n, &v)) < 0) {
        str_list_clear(&now);
        return r;
    }
    if (!is_first)
        log_debug("snapshot catalog changed: %zu snapshots", n);
    pfs_view_unref(c->view);
    c->view = v;
    str_list_clear(&c->listing);
    c->listing = now;
    update_pack_bytes(c);
    return 0;
}

int pfs_catalog_new(CsRepo *repo, unsigned max_age_ms, PfsCatalog **ret)
{
    PfsCatalog *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->repo = repo;
    c->max_age_ms = max_age_ms;
    pthread_mutex_init(&c->lock, NULL);
    atomic_init(&c->pack_bytes, 0);
    int r = refresh(c, true);
    if (r == 0 && !c->view)
        r = -EIO;
    if (r < 0) {
        pfs_catalog_free(c);
        return r;
    }
    *ret = c;
    return 0;
}

PfsCatalog *pfs_catalog_free(PfsCatalog *c)
{
    if (!c)
        return NULL;
    pfs_view_unref(c->view);
    str_list_clear(&c->listing);
    pthread_mutex_destroy(&c->lock);
    free(c);
    return NULL;
}

int pfs_catalog_get(PfsCatalog *c, bool check, PfsView **ret)
{
    pthread_mutex_lock(&c->lock);
    if (check || pfs_now_ms() - c->checked_ms >= c->max_age_ms)
        (void)refresh(c, false); /* on failure: the previous view, already logged */
    *ret = pfs_view_ref(c->view);
    pthread_mutex_unlock(&c->lock);
    return 0;
}

uint64_t pfs_catalog_pack_bytes(PfsCatalog *c)
{
    return atomic_load(&c->pack_bytes);
}
