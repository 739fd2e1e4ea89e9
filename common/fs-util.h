/*
 * File helpers that retry short reads/writes and EINTR, and the durable-publish idiom
 * (write to a temp file, fsync, rename, fsync the directory). All return 0 or -errno.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

int write_all(int fd, const void *p, size_t n);
int pwrite_all(int fd, const void *p, size_t n, uint64_t off);
/* Reads up to n bytes; *ret_n < n only at end of file. */
int read_full(int fd, void *p, size_t n, size_t *ret_n);
int pread_full(int fd, void *p, size_t n, uint64_t off, size_t *ret_n);
int fsync_dir_of(const char *path);
int fsync_dir(const char *dir);
/* Create `path` with contents p[0..n) so that after a crash it is either absent/old or complete. */
int write_file_atomic(const char *path, const void *p, size_t n, mode_t mode);
/* Open an existing file read-only for its contents, never blocking on what it turns out to be:
 * O_NONBLOCK at open (a FIFO without a writer, a device), cleared once the file is known to be
 * regular. `flags` adds open flags (O_NOFOLLOW). *ret_st (may be NULL) describes the file,
 * also one that is refused.
 * Returns the fd, -EISDIR for a directory, -EBADFD for anything else that is not a regular
 * file (FIFO, socket, device), or the -errno of open/fstat. */
int open_regular(int dir_fd, const char *path, int flags, struct stat *ret_st);
/* Read a whole (small) file of at most `max` bytes (-EFBIG if longer); *ret is NUL-terminated
 * for convenience and must be freed. A pipe or FIFO (a process substitution, <(...)) is read to
 * its end, with the same bound. */
int read_file(const char *path, size_t max, char **ret, size_t *ret_n);
/* mkdir -p with the given mode; existing directories are fine. */
int mkdir_p(const char *path, mode_t mode);
/* Remove a file, symlink or whole directory tree below dir_fd, never following symlinks.
 * An absent name is fine. */
int rm_rf_at(int dir_fd, const char *name);
/* The names in a directory, but "." and "..", sorted by strcmp; with `keep`, only those it keeps.
 * *ret is malloc'd (free with strv_free), NULL when there are none. */
int read_dir_names(int dir_fd, bool (*keep)(const char *name), char ***ret, size_t *ret_n);
void strv_free(char **v, size_t n);

/* A growing array of owned strings, as read_dir_names() builds and object listings collect. */
typedef struct StrList {
    char **v;
    size_t n, cap;
} StrList;
/* Append a copy of the first len bytes of s (NUL-terminated). 0 or -ENOMEM. */
int str_list_add(StrList *l, const char *s, size_t len);
/* Free the strings and the array; the list is empty again. */
void str_list_clear(StrList *l);
/*
 * Files shared by several OS users (a repository written by the PostgreSQL user and by root):
 * what a process makes in such a tree belongs to the owner of the tree's top directory, and
 * the setgid bit on that directory shares it with the directory's group (docs/FORMAT.md 2.1).
 * Without the bit only the owner may read: files 0600, directories 0700. With it, the group
 * reads everything (files 0640, directories 2750) and writes what every user of the tree must
 * write (FILE_KIND_SHARED_RW 0660, FILE_KIND_SHARED_DIR 2770). Modes are set explicitly, so the
 * umask does not matter. Root making something for another owner hands it over before it has
 * its final name: nobody ever sees it owned by root.
 */
typedef struct FileAccess {
    uid_t uid;            /* the owner of the top directory */
    gid_t gid;            /* its group */
    bool is_group_shared; /* the top directory has the setgid bit */
    bool is_chown_needed; /* this process is root and the owner is not */
} FileAccess;

typedef enum FileKind {
    FILE_KIND_OBJECT,     /* written once by one user, read by all: 0640 / 0600 */
    FILE_KIND_SHARED_RW,  /* opened for writing by every user (locks, the index): 0660 / 0600 */
    FILE_KIND_DIR,        /* read by all, written by the owner: 2750 / 0700 */
    FILE_KIND_SHARED_DIR, /* every user adds to it: 2770 / 0700 */
} FileKind;

/* The access of the tree whose top directory is `dir` (stat(2) follows a symlink). */
int file_access_of(const char *dir, FileAccess *ret);
mode_t file_access_mode(const FileAccess *a, FileKind kind);
/* Give a file this process just made its owner (when root) and its mode. */
int file_access_apply_fd(const FileAccess *a, int fd, FileKind kind);
/* Repair an existing file or directory: root hands it to the owner if someone else owns it
 * (what an older version left), and a shared tree gets its group bits; otherwise nothing. */
int file_access_adopt(const FileAccess *a, const char *path, FileKind kind);
/* Make directory `path` (its parent exists) with the owner and mode of `kind`, atomically: it
 * is made under a hidden temporary name beside it and renamed into place. One that exists is
 * fine (0). */
int mkdir_with_access(const char *path, const FileAccess *a, FileKind kind);
/* Create the empty file `path` if it does not exist, atomically as above (temporary name, then
 * link(2)). 0 also when it exists. */
int create_file_with_access(const char *path, const FileAccess *a, FileKind kind);
/* write_file_atomic(), the temporary file given its owner and mode before the rename. */
int write_file_atomic_with_access(const char *path, const void *p, size_t n, const FileAccess *a,
                                  FileKind kind);
/* "postgres", or the number when the user or group has no name. */
void user_name(uid_t uid, char *buf, size_t n);
void group_name(gid_t gid, char *buf, size_t n);

/* Make a path with printf-style formatting; returns NULL on ENOMEM. */
char *path_join(const char *a, const char *b);
