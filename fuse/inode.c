#include "fuse/inode.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "common/macro.h"

#define TABLE_MIN_BUCKETS 1024u

struct PfsInodeTable {
    pthread_mutex_t lock;
    PfsNode **buckets; /* lock */
    size_t n_buckets, n_nodes;
    PfsNodeFreeFn free_data;
};

/* ---- entries ---- */

static int entry_name_cmp(const void *a, const void *b)
{
    return strcmp(((const CsDirEntry *)a)->name, ((const CsDirEntry *)b)->name);
}

void pfs_dir_data_sort(PfsDirData *dd)
{
    if (dd->n > 1)
        qsort(dd->v, dd->n, sizeof(*dd->v), entry_name_cmp);
}

PfsDirData *pfs_dir_data_free(PfsDirData *dd)
{
    if (dd) {
        cs_dir_entries_free(dd->v, dd->n);
        cs_xattr_list_clear(&dd->own);
        buf_free(&dd->made_file);
        free(dd);
    }
    return NULL;
}

void pfs_dir_entry_clear(CsDirEntry *e)
{
    cs_dir_entry_clear(e);
}

int pfs_dir_entry_copy(const CsDirEntry *src, CsDirEntry *ret)
{
    return cs_dir_entry_copy(src, ret);
}

/* ---- numbers ---- */

/* The snapshot a stored entry below `parent` belongs to (the number of /snapshots/<id>), when
 * the entry is a hard link shown as stored; else 0: it is a node of its own. */
static uint64_t link_scope(const PfsNode *parent, const CsDirEntry *e, PfsSource src)
{
    if (!e->link_id || e->type == CS_ENTRY_DIR || src != PFS_SRC_STORED ||
        parent->kind != PFS_NODE_ENTRY)
        return 0;
    const PfsNode *p = parent;
    while (p->parent && p->parent->kind == PFS_NODE_ENTRY)
        p = p->parent;
    return p->parent && p->parent->kind == PFS_NODE_SNAPSHOTS ? p->ino : 0;
}

static uint64_t usable_number(uint64_t h)
{
    return h < PFS_INO_FIRST_DYNAMIC ? h + PFS_INO_FIRST_DYNAMIC : h;
}

static uint64_t number_of(uint64_t parent_ino, const CsDirEntry *e, uint64_t scope)
{
    if (scope)
        return usable_number(XXH3_64bits_withSeed(&e->link_id, sizeof(e->link_id),
                                                  scope ^ 0x6c696e6bull /* "link" */));
    uint64_t h = XXH3_64bits_withSeed(e->name, strlen(e->name), parent_ino);
    if (e->type == CS_ENTRY_SYMLINK && e->target)
        h ^= XXH3_64bits(e->target, strlen(e->target)) * 0x9e3779b97f4a7c15ull;
    return usable_number(h);
}

uint64_t pfs_inode_number(const PfsNode *parent, const CsDirEntry *e, PfsSource src)
{
    return number_of(parent->ino, e, link_scope(parent, e, src));
}

static size_t table_bucket(const PfsInodeTable *t, uint64_t ino)
{
    /* Dynamic numbers are hashes already; the fixed ones are small. */
    return (size_t)(ino ^ (ino >> 32)) & (t->n_buckets - 1);
}

static PfsNode *table_find(const PfsInodeTable *t, uint64_t ino)
{
    for (PfsNode *n = t->buckets[table_bucket(t, ino)]; n; n = n->hnext)
        if (n->ino == ino)
            return n;
    return NULL;
}

static void table_grow(PfsInodeTable *t)
{
    size_t nb_count = t->n_buckets * 2;
    PfsNode **nb = calloc(nb_count, sizeof(*nb));
    if (!nb)
        return; /* longer chains, still correct */
    PfsNode **old = t->buckets;
    size_t old_count = t->n_buckets;
    t->buckets = nb;
    t->n_buckets = nb_count;
    for (size_t b = 0; b < old_count; b++) {
        PfsNode *n = old[b];
        while (n) {
            PfsNode *next = n->hnext;
            size_t k = table_bucket(t, n->ino);
            n->hnext = nb[k];
            nb[k] = n;
            n = next;
        }
    }
    free(old);
}

static void table_insert(PfsInodeTable *t, PfsNode *n)
{
    if (t->n_nodes >= t->n_buckets)
        table_grow(t);
    size_t b = table_bucket(t, n->ino);
    n->hnext = t->buckets[b];
    t->buckets[b] = n;
    t->n_nodes++;
}

static void table_unhash(PfsInodeTable *t, PfsNode *n)
{
    PfsNode **pp = &t->buckets[table_bucket(t, n->ino)];
    while (*pp != n)
        pp = &(*pp)->hnext;
    *pp = n->hnext;
    n->hnext = NULL;
    t->n_nodes--;
}

/* ---- nodes ---- */

static PfsNode *node_alloc(void)
{
    PfsNode *n = calloc(1, sizeof(*n));
    if (n)
        pthread_mutex_init(&n->lock, NULL);
    return n;
}

static void node_destroy(PfsInodeTable *t, PfsNode *n)
{
    if (t->free_data)
        t->free_data(n);
    pfs_dir_data_free(n->dir);
    if (n->is_own)
        pfs_dir_entry_clear(&n->own);
    pthread_mutex_destroy(&n->lock);
    free(n);
}

static int add_fixed(PfsInodeTable *t, uint64_t ino, PfsNodeKind kind)
{
    PfsNode *n = node_alloc();
    if (!n)
        return -ENOMEM;
    n->ino = ino;
    n->kind = kind;
    n->refs = 1; /* never freed before the table */
    table_insert(t, n);
    return 0;
}

int pfs_inode_table_new(PfsNodeFreeFn free_data, PfsInodeTable **ret)
{
    PfsInodeTable *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    pthread_mutex_init(&t->lock, NULL);
    t->free_data = free_data;
    t->n_buckets = TABLE_MIN_BUCKETS;
    t->buckets = calloc(t->n_buckets, sizeof(*t->buckets));
    int r = t->buckets ? 0 : -ENOMEM;
    if (r == 0)
        r = add_fixed(t, PFS_INO_ROOT, PFS_NODE_ROOT);
    if (r == 0)
        r = add_fixed(t, PFS_INO_SNAPSHOTS, PFS_NODE_SNAPSHOTS);
    if (r == 0)
        r = add_fixed(t, PFS_INO_STREAMS, PFS_NODE_STREAMS);
    if (r == 0)
        r = add_fixed(t, PFS_INO_WAL, PFS_NODE_WAL);
    if (r == 0)
        r = add_fixed(t, PFS_INO_STATS, PFS_NODE_STATS);
    if (r < 0) {
        pfs_inode_table_free(t);
        return r;
    }
    *ret = t;
    return 0;
}

PfsInodeTable *pfs_inode_table_free(PfsInodeTable *t)
{
    if (!t)
        return NULL;
    /* Children before parents: a borrowed entry points into its parent's directory data. Count
     * each node's children in refs (the session is over, other references no longer matter),
     * then free the leaves, and each parent once its last child is gone. */
    PfsNode **stack = malloc((t->n_nodes ? t->n_nodes : 1) * sizeof(*stack));
    size_t top = 0;
    for (size_t b = 0; b < t->n_buckets; b++)
        for (PfsNode *n = t->buckets[b]; n; n = n->hnext)
            n->refs = 0;
    for (size_t b = 0; b < t->n_buckets; b++)
        for (PfsNode *n = t->buckets[b]; n; n = n->hnext)
            if (n->parent)
                n->parent->refs++;
    for (size_t b = 0; stack && b < t->n_buckets; b++)
        for (PfsNode *n = t->buckets[b]; n; n = n->hnext)
            if (n->refs == 0)
                stack[top++] = n;
    while (top > 0) {
        PfsNode *n = stack[--top];
        PfsNode *parent = n->parent;
        node_destroy(t, n);
        if (parent && --parent->refs == 0)
            stack[top++] = parent;
    }
    free(stack); /* without it (no memory) the nodes are leaked, never freed in a wrong order */
    free(t->buckets);
    pthread_mutex_destroy(&t->lock);
    free(t);
    return NULL;
}

int pfs_inode_get(PfsInodeTable *t, uint64_t ino, PfsNode **ret)
{
    pthread_mutex_lock(&t->lock);
    PfsNode *n = table_find(t, ino);
    if (n)
        n->refs++;
    pthread_mutex_unlock(&t->lock);
    if (!n)
        return -ESTALE;
    *ret = n;
    return 0;
}

PfsNode *pfs_inode_ref(PfsInodeTable *t, PfsNode *n)
{
    pthread_mutex_lock(&t->lock);
    n->refs++;
    pthread_mutex_unlock(&t->lock);
    return n;
}

/* With the lock held: table_unhash n and its parents as they become unused; they are chained
 * through hnext on *dead, to be destroyed without the lock. */
static void maybe_release(PfsInodeTable *t, PfsNode *n, PfsNode **dead)
{
    while (n && n->refs == 0 && n->nlookup == 0) {
        PfsNode *parent = n->parent;
        table_unhash(t, n);
        n->hnext = *dead;
        *dead = n;
        if (parent)
            parent->refs--;
        n = parent;
    }
}

static void destroy_list(PfsInodeTable *t, PfsNode *dead)
{
    /* Children come first in the list (each was released before its parent). */
    while (dead) {
        PfsNode *next = dead->hnext;
        node_destroy(t, dead);
        dead = next;
    }
}

void pfs_inode_unref(PfsInodeTable *t, PfsNode *n)
{
    if (!n)
        return;
    PfsNode *dead = NULL;
    pthread_mutex_lock(&t->lock);
    n->refs--;
    maybe_release(t, n, &dead);
    pthread_mutex_unlock(&t->lock);
    destroy_list(t, dead);
}

void pfs_inode_add_lookup(PfsInodeTable *t, PfsNode *n)
{
    pthread_mutex_lock(&t->lock);
    n->nlookup++;
    pthread_mutex_unlock(&t->lock);
}

void pfs_inode_forget(PfsInodeTable *t, uint64_t ino, uint64_t count)
{
    PfsNode *dead = NULL;
    pthread_mutex_lock(&t->lock);
    PfsNode *n = table_find(t, ino);
    if (n) {
        n->nlookup -= MIN(count, n->nlookup);
        maybe_release(t, n, &dead);
    }
    pthread_mutex_unlock(&t->lock);
    destroy_list(t, dead);
}

static bool same_identity(const PfsNode *n, const PfsNode *parent, const CsDirEntry *e,
                          uint64_t scope)
{
    if (n->kind != PFS_NODE_ENTRY || n->link_scope != scope)
        return false;
    if (scope) /* any path of the inode */
        return n->e->link_id == e->link_id && n->e->type == e->type;
    if (n->parent != parent || n->e->type != e->type || strcmp(n->e->name, e->name) != 0)
        return false;
    if (e->type == CS_ENTRY_SYMLINK)
        return strcmp(n->e->target ? n->e->target : "", e->target ? e->target : "") == 0;
    return true;
}

int pfs_inode_child(PfsInodeTable *t, PfsNode *parent, const CsDirEntry *e, PfsSource src,
                    bool borrow, bool count, PfsNode **ret)
{
    uint64_t scope = link_scope(parent, e, src);
    uint64_t ino = number_of(parent->ino, e, scope);
    PfsNode *fresh = NULL;
    for (;;) {
        pthread_mutex_lock(&t->lock);
        uint64_t probe = ino;
        PfsNode *n;
        while ((n = table_find(t, probe)) && !same_identity(n, parent, e, scope)) {
            probe++;
            if (probe < PFS_INO_FIRST_DYNAMIC)
                probe = PFS_INO_FIRST_DYNAMIC;
        }
        if (n) {
            n->refs++;
            if (count)
                n->nlookup++;
            pthread_mutex_unlock(&t->lock);
            if (fresh)
                node_destroy(t, fresh);
            *ret = n;
            return 0;
        }
        if (fresh) {
            fresh->ino = probe;
            fresh->parent = parent;
            parent->refs++;
            fresh->refs = 1;
            fresh->nlookup = count ? 1 : 0;
            table_insert(t, fresh);
            pthread_mutex_unlock(&t->lock);
            *ret = fresh;
            return 0;
        }
        pthread_mutex_unlock(&t->lock);

        /* Not there: build it without the lock, then look again (another thread may have won). */
        if (!(fresh = node_alloc()))
            return -ENOMEM;
        fresh->kind = PFS_NODE_ENTRY;
        fresh->src = src;
        fresh->link_scope = scope;
        fresh->is_volatile = parent->kind == PFS_NODE_SNAPSHOTS ||
                             parent->kind == PFS_NODE_STREAMS || pfs_node_is_wal_dir(parent);
        if (borrow)
            fresh->e = e;
        else {
            int r = pfs_dir_entry_copy(e, &fresh->own);
            if (r < 0) {
                node_destroy(t, fresh);
                return r;
            }
            fresh->is_own = true;
            fresh->e = &fresh->own;
        }
    }
}

size_t pfs_inode_count(PfsInodeTable *t)
{
    pthread_mutex_lock(&t->lock);
    size_t n = t->n_nodes;
    pthread_mutex_unlock(&t->lock);
    return n;
}

char *pfs_node_path(const PfsNode *n)
{
    const char *parts[256];
    size_t k = 0, len = 0;
    for (const PfsNode *p = n; p && k < ARRAY_SIZE(parts); p = p->parent) {
        const char *name = p->kind == PFS_NODE_SNAPSHOTS ? "snapshots"
                           : p->kind == PFS_NODE_STREAMS ? "streams"
                           : p->kind == PFS_NODE_WAL     ? "wal"
                           : p->kind == PFS_NODE_STATS   ? "stats"
                           : p->kind == PFS_NODE_ENTRY   ? p->e->name
                                                         : NULL;
        if (!name)
            break;
        parts[k++] = name;
        len += strlen(name) + 1;
        if (p->kind == PFS_NODE_ENTRY && !p->parent)
            break;
    }
    /* Entries directly below /snapshots, /streams or /wal have the fixed node as parent, so the
     * walk ends at the root; deeper than 256 levels only the last 256 are shown. */
    char *s = malloc(len + 2);
    if (!s)
        return NULL;
    char *p = s;
    if (k == 0)
        *p++ = '/';
    while (k > 0) {
        size_t l = strlen(parts[--k]);
        *p++ = '/';
        memcpy(p, parts[k], l);
        p += l;
    }
    *p = 0;
    return s;
}
