/*
 * Local-directory backend. Objects are files under the root; "a/b" is the file root/a/b.
 * Publishing goes through root/tmp/ and link(2), which refuses to replace an existing name, so
 * immutability is enforced by the filesystem rather than by a check-then-act race.
 */
#include "chunkstore/backend.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fs-util.h"
#include "common/log.h"
#include "common/macro.h"

#define FD_CACHE_SLOTS 64

typedef struct FdSlot {
    char *name; /* NULL when free */
    int fd;
    unsigned refs;   /* readers using fd right now */
    bool is_evicted; /* close when refs drops to 0 */
    uint64_t last_use;
} FdSlot;

struct CsBackend {
    char *root;
    FileAccess access; /* who owns what this process makes, and with which modes */
    char *access_hint; /* made when first needed (user and group names cost lookups); fd_lock */
    pthread_mutex_t fd_lock;
    FdSlot fds[FD_CACHE_SLOTS]; /* protected by fd_lock */
    uint64_t clock;             /* protected by fd_lock */
};

struct CsSpool {
    CsBackend *b;
    char *tmp_path;
    int fd;
    uint64_t size;
    uint64_t written_back; /* bytes whose writeback has been started */
};

/* Start writeback every few MiB while a spool fills, so that the fsync before publishing waits
 * for little: a 32 MiB fsync would otherwise stall the whole pipeline behind it. */
#define SPOOL_WRITEBACK_STEP (8u << 20)

struct CsLock {
    int fd;
};

static char *object_path(const CsBackend *b, const char *name)
{
    return path_join(b->root, name);
}

static bool name_is_valid(const char *name)
{
    /* Names come from the layers above, but a ".." would escape the root: refuse it. */
    return name[0] && name[0] != '/' && !strstr(name, "..");
}

/* Every directory below the root is one that users of the repository add to, but keys/: it
 * holds what init wrote and nothing else. */
static FileKind dir_kind(const char *rel)
{
    return strcmp(rel, "keys") == 0 ? FILE_KIND_DIR : FILE_KIND_SHARED_DIR;
}

static int access_hint_format(const FileAccess *a, char **ret)
{
    char owner[64], group[64];
    user_name(a->uid, owner, sizeof(owner));
    group_name(a->gid, group, sizeof(group));
    if (a->is_group_shared)
        return asprintf(ret, "the repository belongs to %s:%s: run as %s, as root or as a "
                             "member of group %s (docs/OPERATIONS.md 8.3)",
                        owner, group, owner, group) < 0 ? -ENOMEM : 0;
    return asprintf(ret, "the repository belongs to %s and is shared with no group: run as %s "
                         "or as root, or share it with a group (docs/OPERATIONS.md 8.3)",
                    owner, owner) < 0 ? -ENOMEM : 0;
}

/* init --group: the root directory goes to the group, with the setgid bit that every directory
 * made below it inherits and that says the repository is shared. */
static int share_with_group(const char *path, gid_t gid)
{
    char group[64];
    group_name(gid, group, sizeof(group));
    if (chown(path, (uid_t)-1, gid) < 0)
        return log_error_errno(-errno, "could not give \"%s\" to group %s: %m\nHINT: the user "
                                       "running init must be root or a member of the group",
                               path, group);
    if (chmod(path, S_ISGID | 0750) < 0)
        return log_error_errno(-errno, "could not set the mode of \"%s\": %m", path);
    return 0;
}

/* The owner reads what other members of the group write only if it is a member itself. */
static void warn_owner_outside_group(const FileAccess *a)
{
    char scratch[4096];
    struct passwd pw, *found = NULL;
    if (!a->is_group_shared || a->uid == 0 ||
        getpwuid_r(a->uid, &pw, scratch, sizeof(scratch), &found) != 0 || !found ||
        found->pw_gid == a->gid)
        return;
    gid_t groups[256];
    int n = ARRAY_SIZE(groups);
    if (getgrouplist(found->pw_name, found->pw_gid, groups, &n) < 0)
        return;
    for (int i = 0; i < n; i++)
        if (groups[i] == a->gid)
            return;
    char group[64];
    group_name(a->gid, group, sizeof(group));
    log_warning("the repository's owner %s is not a member of its group %s: it cannot read "
                "what other members write\nHINT: usermod -aG %s %s",
                found->pw_name, group, group, found->pw_name);
}

static int local_open(const char *path, bool create, const gid_t *group, CsBackend **ret)
{
    struct stat st;
    int r;

    if (create) {
        if ((r = mkdir_p(path, 0700)) < 0)
            return r;
        if (group && (r = share_with_group(path, *group)) < 0)
            return r;
    }
    if (stat(path, &st) < 0)
        return -errno;
    if (!S_ISDIR(st.st_mode))
        return -ENOTDIR;

    _cleanup_free_ CsBackend *b = calloc(1, sizeof(*b));
    if (!b)
        return -ENOMEM;
    b->root = realpath(path, NULL);
    if (!b->root)
        return -errno;
    if ((r = file_access_of(b->root, &b->access)) < 0) {
        free(b->root);
        return r;
    }
    pthread_mutex_init(&b->fd_lock, NULL);
    for (size_t i = 0; i < FD_CACHE_SLOTS; i++)
        b->fds[i].fd = -1;
    if (create) {
        /* A shared repository also gets index/ and wal/ now: the root directory is the
         * owner's alone (2750), and any member may be the first to need them. */
        static const char *const dirs[] = { "packs", "snapshots", "keys", "locks", "tmp",
                                            "index", "wal" };
        size_t n_dirs = b->access.is_group_shared ? ARRAY_SIZE(dirs) : ARRAY_SIZE(dirs) - 2;
        for (size_t i = 0; i < n_dirs; i++) {
            _cleanup_free_ char *p = path_join(b->root, dirs[i]);
            if (!p)
                r = -ENOMEM;
            else
                r = mkdir_with_access(p, &b->access, dir_kind(dirs[i]));
            if (r < 0) {
                cs_backend_free(TAKE_PTR(b));
                return r;
            }
        }
        if ((r = fsync_dir(b->root)) < 0) {
            cs_backend_free(TAKE_PTR(b));
            return r;
        }
        warn_owner_outside_group(&b->access);
    }
    *ret = TAKE_PTR(b);
    return 0;
}

int cs_backend_local_open(const char *path, bool create, CsBackend **ret)
{
    return local_open(path, create, NULL, ret);
}

int cs_backend_create(const char *location, const gid_t *group, CsBackend **ret)
{
    if (strncmp(location, "s3://", 5) == 0)
        return cs_backend_open(location, true, ret);
    if (strncmp(location, "file://", 7) == 0)
        location += 7;
    return local_open(location, true, group, ret);
}

int cs_backend_open(const char *location, bool create, CsBackend **ret)
{
    if (strncmp(location, "s3://", 5) == 0) {
        log_error("object-store backends are not built into this version: \"%s\"", location);
        return -EPROTONOSUPPORT;
    }
    if (strncmp(location, "file://", 7) == 0)
        location += 7;
    return cs_backend_local_open(location, create, ret);
}

CsBackend *cs_backend_free(CsBackend *b)
{
    if (!b)
        return NULL;
    for (size_t i = 0; i < FD_CACHE_SLOTS; i++) {
        if (b->fds[i].name) {
            close(b->fds[i].fd);
            free(b->fds[i].name);
        }
    }
    pthread_mutex_destroy(&b->fd_lock);
    free(b->root);
    free(b->access_hint);
    free(b);
    return NULL;
}

const char *cs_backend_location(const CsBackend *b)
{
    return b->root;
}

const char *cs_backend_access_hint(CsBackend *b)
{
    pthread_mutex_lock(&b->fd_lock);
    if (!b->access_hint && access_hint_format(&b->access, &b->access_hint) < 0)
        b->access_hint = NULL;
    pthread_mutex_unlock(&b->fd_lock);
    return b->access_hint ? b->access_hint : "see docs/OPERATIONS.md 8.3";
}

/* A read or write refused for permissions: say which object, what it is and who may use the
 * repository, once, here where all of it is known. `subject` is what refused it: the object
 * itself, or (NULL) the directory it is in or goes into. */
static int log_denied(CsBackend *b, int r, const char *doing, const char *name,
                      const char *subject)
{
    char me[64], owner[64], group[64];
    _cleanup_free_ char *what = NULL;
    user_name(geteuid(), me, sizeof(me));
    _cleanup_free_ char *dir = NULL;
    if (!subject) {
        const char *slash = strrchr(name, '/');
        subject = dir = slash ? strndup(name, (size_t)(slash - name)) : strdup(".");
        if (!dir)
            return r;
    }
    /* An object that cannot be stat-ed either is behind a directory this user cannot enter:
     * describe that directory. */
    _cleanup_free_ char *path = path_join(b->root, subject);
    struct stat st;
    char *slash;
    size_t root_len = strlen(b->root);
    while (path && stat(path, &st) < 0 && errno == EACCES && (slash = strrchr(path, '/')) &&
           (size_t)(slash - path) >= root_len) {
        *slash = 0;
        subject = strlen(path) > root_len ? path + root_len + 1 : ".";
    }
    if (path && stat(path, &st) == 0) {
        user_name(st.st_uid, owner, sizeof(owner));
        group_name(st.st_gid, group, sizeof(group));
        bool is_root = strcmp(subject, ".") == 0;
        if (asprintf(&what, "%s%s%s is %s:%s, mode %04o; ", is_root ? "its directory" : "\"",
                     is_root ? "" : subject, is_root ? "" : "\"", owner, group,
                     (unsigned)(st.st_mode & 07777)) < 0)
            what = NULL;
    }
    return log_error_errno(r, "permission denied %s \"%s\" of repository \"%s\" (%sthis is user "
                              "%s)\nHINT: %s",
                           doing, name, b->root, what ? what : "", me,
                           cs_backend_access_hint(b));
}

int cs_backend_cache_dir(const CsBackend *b, char **ret)
{
    char *p = path_join(b->root, "index");
    if (!p)
        return -ENOMEM;
    *ret = p;
    return 0;
}

int cs_backend_put(CsBackend *b, const char *name, const void *p, size_t n, bool overwrite)
{
    if (!name_is_valid(name))
        return -EINVAL;
    _cleanup_free_ char *path = object_path(b, name);
    if (!path)
        return -ENOMEM;
    if (overwrite) {
        int r = write_file_atomic_with_access(path, p, n, &b->access, FILE_KIND_OBJECT);
        return r == -EACCES ? log_denied(b, r, "writing", name, NULL) : r;
    }

    CsSpool *s;
    int r = cs_backend_spool_new(b, &s);
    if (r < 0)
        return r;
    if ((r = cs_spool_write(s, p, n)) < 0) {
        cs_spool_abort(s);
        return r;
    }
    return cs_spool_publish(s, name);
}

static const char *file_type_name(mode_t mode)
{
    switch (mode & S_IFMT) {
    case S_IFDIR: return "a directory";
    case S_IFIFO: return "a FIFO";
    case S_IFSOCK: return "a socket";
    case S_IFCHR: return "a character device";
    case S_IFBLK: return "a block device";
    default: return "not a regular file";
    }
}

static int log_not_regular(const CsBackend *b, const char *name, mode_t mode)
{
    return log_error_errno(-EBADMSG, "object \"%s\" of repository \"%s\" is %s, not a regular "
                                     "file",
                           name, b->root, file_type_name(mode));
}

/* Objects are regular files. Anything else in an object's place (a FIFO, a device, a
 * directory) is damage: it is refused before a read can block on it. Symlinks are followed,
 * as they always were: what they point to is checked the same way. */
static int open_object(CsBackend *b, const char *name, struct stat *ret_st)
{
    _cleanup_free_ char *path = object_path(b, name);
    if (!path)
        return -ENOMEM;
    struct stat st;
    int fd = open_regular(AT_FDCWD, path, 0, &st);
    if (fd == -EISDIR || fd == -EBADFD)
        return log_not_regular(b, name, st.st_mode);
    if (fd == -EACCES)
        return log_denied(b, fd, "reading", name, name);
    if (fd >= 0 && ret_st)
        *ret_st = st;
    return fd;
}

int cs_backend_get(CsBackend *b, const char *name, size_t max, uint8_t **ret, size_t *ret_n)
{
    if (!name_is_valid(name))
        return -EINVAL;
    struct stat st = { 0 };
    _cleanup_close_ int fd = open_object(b, name, &st);
    if (fd < 0)
        return fd;
    if ((uint64_t)st.st_size > max)
        return -EFBIG;
    _cleanup_free_ uint8_t *data = malloc((size_t)st.st_size + 1);
    if (!data)
        return -ENOMEM;
    size_t n;
    int r = read_full(fd, data, (size_t)st.st_size, &n);
    if (r < 0)
        return r;
    data[n] = 0; /* text objects are parsed as strings */
    *ret = TAKE_PTR(data);
    if (ret_n)
        *ret_n = n;
    return 0;
}

/* Find or open the cached fd for `name` and pin it; returns the slot index or -errno. */
static int fd_cache_pin(CsBackend *b, const char *name)
{
    pthread_mutex_lock(&b->fd_lock);
    int victim = -1;
    b->clock++;
    for (int i = 0; i < FD_CACHE_SLOTS; i++) {
        FdSlot *s = &b->fds[i];
        if (s->name && !s->is_evicted && strcmp(s->name, name) == 0) {
            s->refs++;
            s->last_use = b->clock;
            pthread_mutex_unlock(&b->fd_lock);
            return i;
        }
        if (!s->name)
            victim = victim < 0 || b->fds[victim].name ? i : victim;
        else if (s->refs == 0 && (victim < 0 || (b->fds[victim].name &&
                                                 s->last_use < b->fds[victim].last_use)))
            victim = i;
    }
    pthread_mutex_unlock(&b->fd_lock);

    int fd = open_object(b, name, NULL);
    if (fd < 0)
        return fd;
    if (victim < 0)
        return FD_CACHE_SLOTS + fd; /* cache full of busy fds: caller owns this one */

    pthread_mutex_lock(&b->fd_lock);
    FdSlot *s = &b->fds[victim];
    if (s->name && s->refs > 0) { /* taken meanwhile: use the fd uncached */
        pthread_mutex_unlock(&b->fd_lock);
        return FD_CACHE_SLOTS + fd;
    }
    if (s->name) {
        close(s->fd);
        free(s->name);
    }
    s->name = strdup(name);
    if (!s->name) {
        pthread_mutex_unlock(&b->fd_lock);
        close(fd);
        return -ENOMEM;
    }
    s->fd = fd;
    s->refs = 1;
    s->is_evicted = false;
    s->last_use = b->clock;
    pthread_mutex_unlock(&b->fd_lock);
    return victim;
}

static void fd_cache_unpin(CsBackend *b, int slot)
{
    if (slot >= FD_CACHE_SLOTS) {
        close(slot - FD_CACHE_SLOTS);
        return;
    }
    pthread_mutex_lock(&b->fd_lock);
    b->fds[slot].refs--;
    pthread_mutex_unlock(&b->fd_lock);
}

int cs_backend_get_range(CsBackend *b, const char *name, uint64_t off, void *p, size_t n,
                         size_t *ret_n)
{
    if (!name_is_valid(name))
        return -EINVAL;
    int slot = fd_cache_pin(b, name);
    if (slot < 0)
        return slot;
    int fd = slot >= FD_CACHE_SLOTS ? slot - FD_CACHE_SLOTS : b->fds[slot].fd;
    int r = pread_full(fd, p, n, off, ret_n);
    fd_cache_unpin(b, slot);
    return r;
}

int cs_backend_stat(CsBackend *b, const char *name, uint64_t *ret_size)
{
    if (!name_is_valid(name))
        return -EINVAL;
    _cleanup_free_ char *path = object_path(b, name);
    if (!path)
        return -ENOMEM;
    struct stat st;
    if (stat(path, &st) < 0)
        return errno == EACCES ? log_denied(b, -errno, "reading", name, NULL) : -errno;
    if (!S_ISREG(st.st_mode))
        return log_not_regular(b, name, st.st_mode);
    if (ret_size)
        *ret_size = (uint64_t)st.st_size;
    return 0;
}

static int list_dir(CsBackend *b, const char *rel, CsBackendListFn fn, void *userdata)
{
    _cleanup_free_ char *path = object_path(b, rel);
    if (!path)
        return -ENOMEM;
    DIR *d = opendir(path);
    if (!d)
        return errno == ENOENT ? 0 : -errno;
    int r = 0;
    struct dirent *de;
    while (r == 0 && (de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        _cleanup_free_ char *child = NULL;
        if (asprintf(&child, "%s%s%s", rel, rel[strlen(rel) - 1] == '/' ? "" : "/",
                     de->d_name) < 0) {
            r = -ENOMEM;
            break;
        }
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            if (errno == ENOENT)
                continue; /* deleted while listing */
            r = -errno;
            break;
        }
        if (S_ISDIR(st.st_mode))
            r = list_dir(b, child, fn, userdata);
        else if (S_ISREG(st.st_mode) && !strstr(de->d_name, ".tmp"))
            r = fn(child, (uint64_t)st.st_size, userdata);
        else if (!S_ISLNK(st.st_mode) && !S_ISREG(st.st_mode) && !strstr(de->d_name, ".tmp"))
            r = fn(child, 0, userdata); /* a FIFO or a device: listed, so that its read
                                          * reports it as the damage it is */
    }
    closedir(d);
    return r;
}

int cs_backend_list(CsBackend *b, const char *prefix, CsBackendListFn fn, void *userdata)
{
    if (!name_is_valid(prefix))
        return -EINVAL;
    return list_dir(b, prefix, fn, userdata);
}

int cs_backend_delete(CsBackend *b, const char *name)
{
    if (!name_is_valid(name))
        return -EINVAL;
    _cleanup_free_ char *path = object_path(b, name);
    if (!path)
        return -ENOMEM;
    /* A cached reader fd would keep serving the unlinked file; drop it from the cache. */
    pthread_mutex_lock(&b->fd_lock);
    for (size_t i = 0; i < FD_CACHE_SLOTS; i++) {
        FdSlot *s = &b->fds[i];
        if (s->name && strcmp(s->name, name) == 0)
            s->is_evicted = true;
    }
    pthread_mutex_unlock(&b->fd_lock);
    if (unlink(path) < 0)
        return errno == EACCES ? log_denied(b, -errno, "removing", name, NULL) : -errno;
    return fsync_dir_of(path);
}

int cs_backend_spool_new(CsBackend *b, CsSpool **ret)
{
    _cleanup_free_ CsSpool *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    static unsigned counter;
    if (asprintf(&s->tmp_path, "%s/tmp/spool-%d-%u-%lx.tmp", b->root, (int)getpid(),
                 __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED), (unsigned long)random()) < 0)
        return -ENOMEM;
    s->fd = open(s->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (s->fd < 0) {
        int r = -errno;
        free(s->tmp_path);
        return r == -EACCES ? log_denied(b, r, "writing", "tmp/spool-*", NULL) : r;
    }
    /* Owner and mode now: link(2) publishes this very inode, so the object is the owner's
     * from the moment it has a name. */
    int r = file_access_apply_fd(&b->access, s->fd, FILE_KIND_OBJECT);
    if (r < 0) {
        log_error_errno(r, "could not give spool file \"%s\" its owner and mode: %m",
                        s->tmp_path);
        close(s->fd);
        unlink(s->tmp_path);
        free(s->tmp_path);
        return r;
    }
    s->b = b;
    *ret = TAKE_PTR(s);
    return 0;
}

int cs_spool_write(CsSpool *s, const void *p, size_t n)
{
    int r = write_all(s->fd, p, n);
    if (r < 0)
        return r;
    s->size += n;
    if (s->size - s->written_back >= SPOOL_WRITEBACK_STEP) {
        sync_file_range(s->fd, (off_t)s->written_back, (off_t)(s->size - s->written_back),
                        SYNC_FILE_RANGE_WRITE);
        s->written_back = s->size;
    }
    return 0;
}

uint64_t cs_spool_size(const CsSpool *s)
{
    return s->size;
}

void cs_spool_abort(CsSpool *s)
{
    if (!s)
        return;
    close(s->fd);
    unlink(s->tmp_path);
    free(s->tmp_path);
    free(s);
}

/* Make the missing levels of `dir` (below the root), each with the owner and mode of its kind. */
static int make_object_dirs(CsBackend *b, const char *dir)
{
    _cleanup_free_ char *p = strdup(dir);
    if (!p)
        return -ENOMEM;
    size_t root_len = strlen(b->root);
    if (strlen(p) <= root_len) /* the root itself: it exists */
        return 0;
    for (char *slash = p + root_len + 1;; slash++) {
        slash = strchr(slash, '/');
        if (slash)
            *slash = 0;
        int r = mkdir_with_access(p, &b->access, dir_kind(p + root_len + 1));
        if (r < 0)
            return r == -EACCES ? log_denied(b, r, "writing", p + root_len + 1, NULL) : r;
        if (!slash)
            return 0;
        *slash = '/';
    }
}

/* How many levels of `dir` (below the root) do not exist yet. */
static unsigned missing_levels(const char *root, const char *dir)
{
    _cleanup_free_ char *p = strdup(dir);
    size_t root_len = strlen(root);
    unsigned n = 0;
    while (p && strlen(p) > root_len && access(p, F_OK) < 0) {
        n++;
        *strrchr(p, '/') = 0;
    }
    return n;
}

int cs_spool_publish(CsSpool *s, const char *name)
{
    int r;
    if (!name_is_valid(name)) {
        cs_spool_abort(s);
        return -EINVAL;
    }
    _cleanup_free_ char *path = object_path(s->b, name);
    _cleanup_free_ char *dir = path ? strdup(path) : NULL;
    if (!dir) {
        cs_spool_abort(s);
        return -ENOMEM;
    }
    *strrchr(dir, '/') = 0;
    if (fsync(s->fd) < 0) {
        r = -errno;
        cs_spool_abort(s);
        return r;
    }
    /* Every directory level made now must itself reach the disk, or the object can vanish
     * with its directory after a power loss: count them before making them. */
    unsigned new_levels = missing_levels(s->b->root, dir);
    r = make_object_dirs(s->b, dir);
    if (r == 0 && link(s->tmp_path, path) < 0) {
        r = -errno;
        if (r == -EACCES)
            log_denied(s->b, r, "writing", name, NULL);
    }
    if (r < 0) {
        cs_spool_abort(s);
        return r;
    }
    cs_spool_abort(s); /* drops the temporary name; the published link stays */
    r = fsync_dir(dir);
    for (unsigned i = 0; r == 0 && i < new_levels; i++) {
        *strrchr(dir, '/') = 0; /* the parent holds the entry of the level made below it */
        r = fsync_dir(dir);
    }
    return r;
}

int cs_backend_sweep(CsBackend *b)
{
    _cleanup_free_ char *tmp = path_join(b->root, "tmp");
    if (!tmp)
        return -ENOMEM;
    DIR *d = opendir(tmp);
    if (!d)
        return errno == ENOENT ? 0 : -errno;
    struct dirent *de;
    while ((de = readdir(d))) {
        int pid;
        if (sscanf(de->d_name, "spool-%d-", &pid) != 1)
            continue;
        if (pid == getpid() || kill(pid, 0) == 0 || errno != ESRCH)
            continue;
        unlinkat(dirfd(d), de->d_name, 0);
    }
    closedir(d);
    return 0;
}

int cs_backend_lock(CsBackend *b, const char *name, CsLockMode mode, bool wait, CsLock **ret)
{
    _cleanup_free_ char *path = NULL;
    if (asprintf(&path, "%s/locks/%s", b->root, name) < 0)
        return -ENOMEM;
    _cleanup_free_ char *rel = NULL;
    if (asprintf(&rel, "locks/%s", name) < 0)
        return -ENOMEM;
    /* Made with its owner and mode before it has its name, as objects are. */
    int r = create_file_with_access(path, &b->access, FILE_KIND_SHARED_RW);
    if (r < 0)
        return r == -EACCES ? log_denied(b, r, "creating the lock", rel, NULL) : r;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    /* flock(2) needs no write access: a lock file that this user may only read still locks. */
    if (fd < 0 && errno == EACCES)
        fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == EACCES ? log_denied(b, -errno, "opening the lock", rel, rel) : -errno;
    /* What an older version left owned by root, and a repository shared since. */
    file_access_adopt(&b->access, path, FILE_KIND_SHARED_RW);
    int op = (mode == CS_LOCK_SHARED ? LOCK_SH : LOCK_EX) | (wait ? 0 : LOCK_NB);
    while (flock(fd, op) < 0) {
        if (errno == EINTR)
            continue;
        r = -errno;
        close(fd);
        return r;
    }
    CsLock *l = malloc(sizeof(*l));
    if (!l) {
        close(fd);
        return -ENOMEM;
    }
    l->fd = fd;
    *ret = l;
    return 0;
}

CsLock *cs_lock_release(CsLock *l)
{
    if (l) {
        close(l->fd);
        free(l);
    }
    return NULL;
}
