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
/* Make a path with printf-style formatting; returns NULL on ENOMEM. */
char *path_join(const char *a, const char *b);
