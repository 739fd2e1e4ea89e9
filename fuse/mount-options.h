/*
 * mount.pitrfs's command line, as a person types it and as mount(8) runs its helper:
 *
 *   mount.pitrfs REPO MOUNTPOINT [-sfnv] [-o OPTIONS] [-t pitrfs]   (flags also after operands)
 *
 * The flags mean what mount(8) means by them:
 *   -f  fake: the options, the mount point and the repository are checked, nothing is mounted
 *       (staying in the foreground is -o foreground or --foreground);
 *   -n  no mtab: ignored, the kernel's mount table is the only one;
 *   -s  sloppy: an unknown -o option is ignored with a warning instead of refused;
 *   -v  verbose: debug messages, from the parsing of -o on (the log level is set here).
 * -o is split at commas outside double quotes, because libmount quotes a value that holds
 * commas (context="system_u:object_r:tmp_t:s0:c127,c456"); our own values lose the quotes.
 * The SELinux options (context=, fscontext=, defcontext=, rootcontext=, seclabel) go to the
 * kernel as given, quotes included, when SELinux is enabled; otherwise they are dropped, as
 * mount(8) drops them, since a kernel without SELinux refuses the mount with them.
 *
 * Parsing opens nothing; bad usage is logged with a one-line hint and returned as -EINVAL.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

typedef struct PfsMountOptions {
    const char *repo, *mountpoint;                          /* point into argv */
    char *passphrase_file, *keyfile, *index_dir, *log_path; /* malloc'd; NULL when not given */
    bool is_fake, foreground, debug, verbose, sloppy, allow_other, direct_io;
    size_t cache_bytes, readahead_bytes, kernel_readahead_bytes;
    unsigned threads, prefetch_threads;
    /* What libfuse's -o gets from the user, malloc'd or NULL: options separated by commas, a
     * comma or backslash inside an option escaped with a backslash (fuse_opt_parse() takes
     * them out again). */
    char *fuse_opts;
} PfsMountOptions;

typedef enum PfsMountAction {
    PFS_MOUNT_RUN,     /* mount, or with is_fake only check */
    PFS_MOUNT_HELP,    /* -h, --help */
    PFS_MOUNT_VERSION, /* -V, --version */
} PfsMountAction;

#define PFS_PASSPHRASE_MAX 4096 /* bytes in a passphrase file, as pitr-snap accepts */

/* Every option at its default. */
void pfs_mount_options_init(PfsMountOptions *o);
/* Parse argv[1..argc) into o (from pfs_mount_options_init()). With selinux_enabled the context
 * options are passed on (see pfs_selinux_is_enabled()). Returns a PfsMountAction, -EINVAL
 * (logged) or -ENOMEM. On failure o may hold some options: clear it all the same. */
int pfs_mount_options_parse(int argc, char *const *argv, bool selinux_enabled, PfsMountOptions *o);
/* Free what the options hold. */
void pfs_mount_options_clear(PfsMountOptions *o);

/* Whether SELinux is running: selinuxfs is mounted, the test libselinux's
 * is_selinux_enabled() makes for libmount. */
bool pfs_selinux_is_enabled(void);

/*
 * The passphrase in `path`: its first line, without the line end. Read once and to no further
 * than that line, so a pipe works (the /dev/fd/N of a shell's <(...), a FIFO): its size says
 * nothing, and it cannot be read a second time. Returns 0 with a malloc'd string in *ret (wipe
 * it before freeing), -EKEYREJECTED for an empty passphrase, -EFBIG beyond PFS_PASSPHRASE_MAX
 * bytes, or another -errno; logged.
 */
int pfs_passphrase_file_read(const char *path, char **ret);
