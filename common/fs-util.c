#include "common/fs-util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
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

int write_file_atomic(const char *path, const void *p, size_t n, mode_t mode)
{
    _cleanup_free_ char *tmp = NULL;
    if (asprintf(&tmp, "%s.tmp.%d", path, (int)getpid()) < 0)
        return -ENOMEM;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return -errno;
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
