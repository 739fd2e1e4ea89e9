#include "common/fs-util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libgen.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/macro.h"

/* The short-transfer and EINTR loops, once: `off` < 0 means the file position. */
static int write_loop(int fd, const void *p, size_t n, int64_t off)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = off < 0 ? write(fd, b, n) : pwrite(fd, b, n, (off_t)off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        b += w;
        n -= (size_t)w;
        if (off >= 0)
            off += w;
    }
    return 0;
}

static int read_loop(int fd, void *p, size_t n, int64_t off, size_t *ret_n)
{
    uint8_t *b = p;
    size_t done = 0;
    while (done < n) {
        ssize_t r = off < 0 ? read(fd, b + done, n - done)
                            : pread(fd, b + done, n - done, (off_t)(off + (int64_t)done));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            break;
        done += (size_t)r;
    }
    *ret_n = done;
    return 0;
}

int write_all(int fd, const void *p, size_t n)
{
    return write_loop(fd, p, n, -1);
}

int pwrite_all(int fd, const void *p, size_t n, uint64_t off)
{
    return off > INT64_MAX ? -EINVAL : write_loop(fd, p, n, (int64_t)off);
}

int read_full(int fd, void *p, size_t n, size_t *ret_n)
{
    return read_loop(fd, p, n, -1, ret_n);
}

int pread_full(int fd, void *p, size_t n, uint64_t off, size_t *ret_n)
{
    return off > INT64_MAX ? -EINVAL : read_loop(fd, p, n, (int64_t)off, ret_n);
}

int fsync_dir(const char *dir)
{
    _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (fsync(fd) < 0)
        return -errno;
    return 0;
}

int fsync_dir_of(const char *path)
{
    _cleanup_free_ char *copy = strdup(path);
    if (!copy)
        return -ENOMEM;
    return fsync_dir(dirname(copy));
}

/* Write n bytes to the new temporary file `fd` (named tmp), make them durable, and give them
 * the name `path` (which they replace); on failure tmp is removed. Closes fd. */
static int write_temp_then_rename(int fd, const char *tmp, const char *path, const void *p,
                                  size_t n)
{
    int r = write_all(fd, p, n);
    if (r == 0 && fsync(fd) < 0)
        r = -errno;
    if (close(fd) < 0 && r == 0)
        r = -errno;
    if (r == 0 && rename(tmp, path) < 0)
        r = -errno;
    if (r < 0) {
        unlink(tmp);
        return r;
    }
    return fsync_dir_of(path);
}

int write_file_atomic(const char *path, const void *p, size_t n, mode_t mode)
{
    _cleanup_free_ char *tmp = NULL;
    if (asprintf(&tmp, "%s.tmp.%d", path, (int)getpid()) < 0)
        return -ENOMEM;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return -errno;
    return write_temp_then_rename(fd, tmp, path, p, n);
}

int open_regular(int dir_fd, const char *path, int flags, struct stat *ret_st)
{
    _cleanup_close_ int fd = openat(dir_fd, path,
                                    O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC | flags);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (ret_st)
        *ret_st = st;
    if (S_ISDIR(st.st_mode))
        return -EISDIR;
    if (!S_ISREG(st.st_mode))
        return -EBADFD;
    /* Regular files ignore O_NONBLOCK today; a reader must never see EAGAIN should that change. */
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
        return -errno;
    return TAKE_FD(fd);
}

/* A pipe or FIFO (--passphrase-file <(...)) has no size: read it to its end, keeping at most
 * max bytes; one byte more is -EFBIG. */
static int read_stream(int fd, size_t max, char **ret, size_t *ret_n)
{
    _cleanup_free_ char *data = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            size_t want = cap ? cap * 2 : 4096;
            if (want > max)
                want = max == SIZE_MAX ? SIZE_MAX - 1 : max + 1; /* room to see one byte over */
            if (want <= cap)
                return -EFBIG;
            char *grown = realloc(data, want + 1);
            if (!grown)
                return -ENOMEM;
            data = grown;
            cap = want;
        }
        ssize_t got = read(fd, data + n, cap - n);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (got == 0)
            break;
        n += (size_t)got;
        if (n > max)
            return -EFBIG;
    }
    if (!data && !(data = malloc(1)))
        return -ENOMEM;
    data[n] = 0;
    *ret = TAKE_PTR(data);
    if (ret_n)
        *ret_n = n;
    return 0;
}

int read_file(const char *path, size_t max, char **ret, size_t *ret_n)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (!S_ISREG(st.st_mode))
        return read_stream(fd, max, ret, ret_n);
    if ((uint64_t)st.st_size > max)
        return -EFBIG;
    _cleanup_free_ char *data = malloc((size_t)st.st_size + 1);
    if (!data)
        return -ENOMEM;
    size_t n = 0;
    int r = read_full(fd, data, (size_t)st.st_size, &n);
    if (r < 0)
        return r;
    data[n] = 0;
    *ret = TAKE_PTR(data);
    if (ret_n)
        *ret_n = n;
    return 0;
}

int mkdir_p(const char *path, mode_t mode)
{
    _cleanup_free_ char *copy = strdup(path);
    if (!copy)
        return -ENOMEM;
    for (char *s = copy + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = 0;
        if (mkdir(copy, mode) < 0 && errno != EEXIST)
            return -errno;
        *s = '/';
    }
    if (mkdir(copy, mode) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

int file_access_of(const char *dir, FileAccess *ret)
{
    struct stat st;
    if (stat(dir, &st) < 0)
        return -errno;
    if (!S_ISDIR(st.st_mode))
        return -ENOTDIR;
    *ret = (FileAccess){ .uid = st.st_uid,
                         .gid = st.st_gid,
                         .is_group_shared = (st.st_mode & S_ISGID) != 0,
                         .is_chown_needed = geteuid() == 0 && st.st_uid != 0 };
    return 0;
}

mode_t file_access_mode(const FileAccess *a, FileKind kind)
{
    static const mode_t shared[] = { [FILE_KIND_OBJECT] = 0640,
                                     [FILE_KIND_SHARED_RW] = 0660,
                                     [FILE_KIND_DIR] = S_ISGID | 0750,
                                     [FILE_KIND_SHARED_DIR] = S_ISGID | 0770 };
    static const mode_t owner_only[] = { [FILE_KIND_OBJECT] = 0600,
                                         [FILE_KIND_SHARED_RW] = 0600,
                                         [FILE_KIND_DIR] = 0700,
                                         [FILE_KIND_SHARED_DIR] = 0700 };
    return a->is_group_shared ? shared[kind] : owner_only[kind];
}

int file_access_apply_fd(const FileAccess *a, int fd, FileKind kind)
{
    /* The owner first: root's fchmod works on a file it no longer owns, and the mode is then
     * the one asked for whatever chown cleared. */
    if (a->is_chown_needed && fchown(fd, a->uid, a->gid) < 0)
        return -errno;
    if (fchmod(fd, file_access_mode(a, kind)) < 0)
        return -errno;
    return 0;
}

int file_access_adopt(const FileAccess *a, const char *path, FileKind kind)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return -errno;
    if (S_ISLNK(st.st_mode))
        return 0;
    if (a->is_chown_needed && st.st_uid != a->uid) {
        if (lchown(path, a->uid, a->gid) < 0)
            return -errno;
        st.st_uid = a->uid;
    }
    mode_t want = file_access_mode(a, kind);
    if (a->is_group_shared && (st.st_mode & 07777) != want &&
        (geteuid() == 0 || st.st_uid == geteuid()) && chmod(path, want) < 0)
        return -errno;
    return 0;
}

/* "<dir>/.<name>.tmp-<pid>-<n>": beside `path`, hidden from listings, unique in this host. */
static char *temp_sibling(const char *path)
{
    static unsigned counter;
    const char *slash = strrchr(path, '/');
    int dir_len = slash ? (int)(slash - path + 1) : 0;
    char *tmp;
    if (asprintf(&tmp, "%.*s.%s.tmp-%d-%u", dir_len, path, slash ? slash + 1 : path,
                 (int)getpid(), __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED)) < 0)
        return NULL;
    return tmp;
}

int mkdir_with_access(const char *path, const FileAccess *a, FileKind kind)
{
    struct stat st;
    if (stat(path, &st) == 0)
        return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
    _cleanup_free_ char *tmp = temp_sibling(path);
    if (!tmp)
        return -ENOMEM;
    if (mkdir(tmp, 0700) < 0)
        return -errno;
    int r = 0;
    if ((a->is_chown_needed && lchown(tmp, a->uid, a->gid) < 0) ||
        chmod(tmp, file_access_mode(a, kind)) < 0)
        r = -errno;
    if (r == 0 && renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) < 0) {
        /* A file system without RENAME_NOREPLACE: rename(2) replaces only an empty directory,
         * which is as good as the one made here. */
        if (errno == EINVAL || errno == ENOSYS) {
            if (rename(tmp, path) < 0)
                r = -errno;
        } else
            r = -errno;
    }
    if (r < 0)
        rmdir(tmp);
    if (r == -EEXIST || r == -ENOTEMPTY) /* made meanwhile by another process */
        return stat(path, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : -EEXIST;
    return r;
}

/* A new file under a temporary name beside `path`, given its owner and mode; the fd, or -errno
 * (nothing left behind). */
static int open_temp_sibling(const char *path, const FileAccess *a, FileKind kind, char **ret_tmp)
{
    _cleanup_free_ char *tmp = temp_sibling(path);
    if (!tmp)
        return -ENOMEM;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    int r = file_access_apply_fd(a, fd, kind);
    if (r < 0) {
        close(fd);
        unlink(tmp);
        return r;
    }
    *ret_tmp = TAKE_PTR(tmp);
    return fd;
}

int create_file_with_access(const char *path, const FileAccess *a, FileKind kind)
{
    if (access(path, F_OK) == 0)
        return 0;
    _cleanup_free_ char *tmp = NULL;
    int fd = open_temp_sibling(path, a, kind, &tmp);
    if (fd < 0)
        return fd;
    close(fd);
    int r = link(tmp, path) < 0 && errno != EEXIST ? -errno : 0;
    unlink(tmp);
    return r;
}

int write_file_atomic_with_access(const char *path, const void *p, size_t n, const FileAccess *a,
                                  FileKind kind)
{
    _cleanup_free_ char *tmp = NULL;
    int fd = open_temp_sibling(path, a, kind, &tmp);
    if (fd < 0)
        return fd;
    return write_temp_then_rename(fd, tmp, path, p, n);
}

void user_name(uid_t uid, char *buf, size_t n)
{
    char scratch[4096];
    struct passwd pw, *found = NULL;
    if (getpwuid_r(uid, &pw, scratch, sizeof(scratch), &found) == 0 && found)
        snprintf(buf, n, "%s", found->pw_name);
    else
        snprintf(buf, n, "%u", (unsigned)uid);
}

void group_name(gid_t gid, char *buf, size_t n)
{
    char scratch[4096];
    struct group gr, *found = NULL;
    if (getgrgid_r(gid, &gr, scratch, sizeof(scratch), &found) == 0 && found)
        snprintf(buf, n, "%s", found->gr_name);
    else
        snprintf(buf, n, "%u", (unsigned)gid);
}

char *path_join(const char *a, const char *b)
{
    char *p;
    if (asprintf(&p, "%s/%s", a, b) < 0)
        return NULL;
    return p;
}

int rm_rf_at(int dir_fd, const char *name)
{
    if (unlinkat(dir_fd, name, 0) == 0 || errno == ENOENT)
        return 0;
    if (errno != EISDIR && errno != EPERM)
        return -errno;
    int fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return -errno;
    }
    int r = 0;
    struct dirent *de;
    while (r == 0 && (de = readdir(d)))
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            r = rm_rf_at(dirfd(d), de->d_name);
    closedir(d);
    if (r == 0 && unlinkat(dir_fd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
        r = -errno;
    return r;
}

void strv_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

int str_list_add(StrList *l, const char *s, size_t len)
{
    if (GROW_ARRAY(l->v, l->cap, l->n, 32) < 0 || !(l->v[l->n] = strndup(s, len)))
        return -ENOMEM;
    l->n++;
    return 0;
}

void str_list_clear(StrList *l)
{
    strv_free(l->v, l->n);
    *l = (StrList){ 0 };
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int read_dir_names(int dir_fd, bool (*keep)(const char *name), char ***ret, size_t *ret_n)
{
    int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd < 0 ? NULL : fdopendir(fd);
    if (!d) {
        int r = -errno;
        if (fd >= 0)
            close(fd);
        return r;
    }
    StrList names = { 0 };
    int r = 0;
    while (r == 0) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (!de) {
            r = -errno;
            break;
        }
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
            (keep && !keep(de->d_name)))
            continue;
        r = str_list_add(&names, de->d_name, strlen(de->d_name));
    }
    closedir(d);
    if (r < 0) {
        str_list_clear(&names);
        return r;
    }
    if (names.n)
        qsort(names.v, names.n, sizeof(*names.v), name_cmp);
    *ret = names.v;
    *ret_n = names.n;
    return 0;
}
