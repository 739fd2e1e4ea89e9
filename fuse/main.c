/*
 * mount.pitrfs: the checks before mounting and the FUSE session; the command line is parsed by
 * fuse/mount-options.c, the filesystem is in libpitrfs.
 *
 *   mount.pitrfs REPO MOUNTPOINT [-sfnv] [-d] [-o OPTIONS]
 *   mount -t pitrfs REPO MOUNTPOINT -o OPTIONS        (mount(8) runs this as its helper)
 *
 * Exit status as pitr-snap's: 0 mounted (with -o foreground: mounted and unmounted cleanly;
 * with -f: checked, not mounted), 1 failure, 2 wrong passphrase or key, 3 not a repository,
 * 4 damaged data, 5 busy, 64 usage error.
 */
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chunkstore/keysource.h"
#include "chunkstore/repo.h"
#include "common/exit-code.h"
#include "common/log.h"
#include "common/version.h"
#include "common/macro.h"
#include "fuse/daemon.h"
#include "fuse/fs.h"
#include "fuse/mount-options.h"

static void usage(FILE *f)
{
    fprintf(f,
            "mount.pitrfs mounts a pitrfs repository read-only.\n\n"
            "Usage:\n"
            "  mount.pitrfs REPO MOUNTPOINT [-sfnv] [-d] [-o OPTION[,OPTION]...]\n"
            "  mount -t pitrfs REPO MOUNTPOINT [-o OPTION[,OPTION]...]\n\n"
            "Layout: MOUNTPOINT/snapshots/<id>/... (tree snapshots), snapshots/<name> and\n"
            "snapshots/latest (symlinks), streams/<id> and streams/<name> (stream snapshots),\n"
            "wal/<node>/<timeline>/ (archived WAL), stats (the mount's counters, JSON).\n"
            "In a cluster snapshot, <id>/<node>/pgdata/ starts as it is copied: it recovers\n"
            "to the snapshot's restore point.\n\n"
            "Options:\n"
            "  -o passphrase_file=F  read the passphrase from F, a file or a pipe such as\n"
            "                        <(...) (else $PITR_PASSPHRASE, else a prompt on the\n"
            "                        terminal)\n"
            "  -o keyfile=F          unlock with a key file made by 'pitr-snap key export'\n"
            "  -o allow_other        let other users in (as the stored permissions allow)\n"
            "  -o cache_size=SIZE    decompressed-chunk cache (default 256M; K, M, G suffixes)\n"
            "  -o readahead=SIZE     decode this far ahead of sequential readers (default 8M;\n"
            "                        0 disables)\n"
            "  -o kernel_readahead=SIZE\n"
            "                        the kernel's read-ahead window, the size of its read\n"
            "                        requests (default 1M; needs root, else the kernel's 128K\n"
            "                        stays; 0 leaves it alone)\n"
            "  -o direct_io          reads skip the kernel's page cache: faster for one pass\n"
            "                        over large files (cat, cp, dd bs=1M), slower for small\n"
            "                        reads and re-reads; no shared mmap (MAP_PRIVATE works)\n"
            "  -o threads=N          FUSE worker threads (default 16)\n"
            "  -o logfile=F          in the background, log to F instead of syslog\n"
            "  -o index_dir=D        index location (default REPO/index)\n"
            "  -o foreground, --foreground\n"
            "                        stay in the foreground, log to stderr\n"
            "  -o debug, -d, --debug log every FUSE request (implies foreground)\n"
            "  -o context=\"CTX\"      SELinux contexts (also fscontext=, defcontext=,\n"
            "                        rootcontext=, seclabel): passed to the kernel; dropped\n"
            "                        when SELinux is not enabled, as mount(8) does\n"
            "  -f                    fake: check the options, the mount point and the\n"
            "                        repository, mount nothing (as for mount(8))\n"
            "  -s                    sloppy: ignore unknown -o options, with a warning\n"
            "  -v                    verbose: debug messages\n"
            "  -n                    no mtab (mount(8) passes it): ignored\n"
            "  -h, --help            this help\n"
            "  -V, --version         version\n\n"
            "Unmount with 'umount MOUNTPOINT' or 'fusermount3 -u MOUNTPOINT'.\n"
            "Exit status: 0 mounted, 1 failure, 2 wrong passphrase or key, 3 not a repository,\n"
            "4 damaged data, 64 usage error.\n");
}

DEFINE_CLEANUP_FUNC(PfsFs *, pfs_fs_free)

/* `passphrase`: what passphrase_file= held (read before the fork), or NULL for the other key
 * sources in their usual order (keyfile=, $PITR_KEY_FILE, $PITR_PASSPHRASE, a prompt). */
static int open_repo(const PfsMountOptions *o, const char *passphrase, CsRepo **ret)
{
    CsOpenParams params = { .read_only = true, .index_dir = o->index_dir };
    if (!passphrase)
        return cs_repo_unlock(o->repo, NULL, o->keyfile, &params, ret);
    int r = cs_repo_probe(o->repo);
    if (r < 0)
        return r;
    CsKeySource key = { .passphrase = passphrase, .passphrase_len = strlen(passphrase) };
    return cs_repo_open(o->repo, &params, &key, ret);
}

static int check_mountpoint(const char *path)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return log_error_errno(-errno, "mount point \"%s\": %m", path);
    if (!S_ISDIR(st.st_mode))
        return log_error_errno(-ENOTDIR, "mount point \"%s\" is not a directory", path);
    return 0;
}

static int build_fuse_args(const PfsMountOptions *o, const char *fsname, struct fuse_args *args)
{
    char *opts = NULL;
    _cleanup_free_ char *fsname_opt = NULL;
    if (asprintf(&fsname_opt, "fsname=%s", fsname) < 0)
        return -ENOMEM;
    int bad = fuse_opt_add_opt(&opts, "ro") || fuse_opt_add_opt(&opts, "default_permissions") ||
              fuse_opt_add_opt_escaped(&opts, fsname_opt) ||
              fuse_opt_add_opt(&opts, "subtype=pitrfs") ||
              (o->allow_other && fuse_opt_add_opt(&opts, "allow_other")) ||
              (o->fuse_opts && fuse_opt_add_opt(&opts, o->fuse_opts));
    bad = bad || fuse_opt_add_arg(args, "mount.pitrfs") || fuse_opt_add_arg(args, "-o") ||
          fuse_opt_add_arg(args, opts) || (o->debug && fuse_opt_add_arg(args, "-d"));
    free(opts);
    return bad ? -ENOMEM : 0;
}

static void log_mounted(PfsFs *fs, const PfsMountOptions *o)
{
    PfsView *v;
    size_t trees = 0, streams = 0;
    pfs_catalog_get(fs->catalog, false, &v);
    for (size_t i = 0; i < v->n_snaps; i++) {
        trees += strcmp(v->snaps[i].kind, "tree") == 0;
        streams += strcmp(v->snaps[i].kind, "stream") == 0;
    }
    pfs_view_unref(v);
    log_info("mounted \"%s\" on \"%s\": %zu tree and %zu stream snapshots", o->repo, o->mountpoint,
             trees, streams);
}

/* Everything after option parsing. notify_fd >= 0: we are the forked child of a background
 * mount and must report to the parent. Returns the exit status. */
static int run(const PfsMountOptions *o, const char *passphrase, int notify_fd)
{
    _cleanup_(cs_repo_closep) CsRepo *repo = NULL;
    _cleanup_(pfs_fs_freep) PfsFs *fs = NULL;
    _cleanup_free_ char *abs_repo = realpath(o->repo, NULL);
    /* Absolute: the daemon leaves its working directory, and unmounts by this name at the end. */
    _cleanup_free_ char *abs_mnt = realpath(o->mountpoint, NULL);
    struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
    struct fuse_session *se = NULL;
    struct fuse_loop_config *cfg = NULL;
    bool is_mounted = false, has_handlers = false;
    int r, status;

    if ((r = open_repo(o, passphrase, &repo)) < 0)
        goto fail;
    if (!abs_mnt) {
        r = log_error_errno(-errno, "mount point \"%s\": %m", o->mountpoint);
        goto fail;
    }
    PfsParams params = {
        .cache_bytes = o->cache_bytes,
        .readahead_bytes = o->readahead_bytes,
        .prefetch_threads = o->prefetch_threads,
        .uid = (uint32_t)getuid(),
        .gid = (uint32_t)getgid(),
        .timeout = PFS_DEFAULT_TIMEOUT,
        .volatile_timeout = PFS_DEFAULT_VOLATILE_TIMEOUT,
        .catalog_max_age_ms = PFS_DEFAULT_CATALOG_AGE_MS,
        .mountpoint = abs_mnt,
        .kernel_readahead_bytes = o->kernel_readahead_bytes,
        .direct_io = o->direct_io,
    };
    if ((r = pfs_fs_new(repo, &params, &fs)) < 0)
        goto fail;
    if ((r = build_fuse_args(o, abs_repo ? abs_repo : o->repo, &args)) < 0)
        goto fail;
    r = -EIO; /* libfuse has printed why */
    if (!(se = fuse_session_new(&args, &pfs_ll_ops, sizeof(pfs_ll_ops), fs)))
        goto fail;
    if (fuse_set_signal_handlers(se) != 0)
        goto fail;
    has_handlers = true;
    if (fuse_session_mount(se, abs_mnt) != 0) {
        log_error("could not mount \"%s\" on \"%s\"", o->repo, o->mountpoint);
        goto fail;
    }
    is_mounted = true;
    if (notify_fd >= 0) {
        if ((r = pfs_daemon_detach(notify_fd, o->log_path)) < 0)
            goto fail;
        notify_fd = -1; /* the parent has exited 0: from here on, only the log hears of us */
    }
    log_mounted(fs, o);
    if ((r = pfs_fs_start(fs)) < 0)
        goto fail;

    if (!(cfg = fuse_loop_cfg_create())) {
        r = -ENOMEM;
        goto fail;
    }
    fuse_loop_cfg_set_max_threads(cfg, o->threads);
    fuse_loop_cfg_set_idle_threads(cfg, o->threads);
    r = fuse_session_loop_mt(se, cfg);
    /* 0: unmounted; > 0: the number of the signal that ended it (then we unmount below) */
    status = r >= 0 ? EXIT_OK : EXIT_FAIL;
    if (r < 0)
        log_error_errno(r, "the FUSE session failed: %m");
    else if (r > 0)
        log_info("unmounting \"%s\" on signal %d", o->mountpoint, r);
    else
        log_info("unmounted \"%s\"", o->mountpoint);
    goto out;

fail:
    status = exit_code_from_errno(r);
out:
    if (fs)
        pfs_fs_stop(fs);
    if (cfg)
        fuse_loop_cfg_destroy(cfg);
    if (is_mounted)
        fuse_session_unmount(se);
    if (has_handlers)
        fuse_remove_signal_handlers(se);
    if (se)
        fuse_session_destroy(se);
    fuse_opt_free_args(&args);
    if (notify_fd >= 0)
        pfs_daemon_fail(notify_fd, status); /* only now: nothing is mounted any more */
    return status;
}

/*
 * What can be checked without mounting, before the fork: the mount point (a typo should not
 * cost a passphrase prompt), the repository without its keys, the key file, and
 * passphrase_file=, read here and only here, since a pipe gives its bytes once. A fake mount
 * (-f) stops after this.
 */
static int check_before_mount(const PfsMountOptions *o, char **ret_passphrase)
{
    int r;
    if ((r = check_mountpoint(o->mountpoint)) < 0 || (r = cs_repo_probe(o->repo)) < 0)
        return r;
    if (o->keyfile) { /* a key file wins over passphrase_file=, as in every program */
        if (access(o->keyfile, R_OK) < 0)
            return log_error_errno(-errno, "could not read key file \"%s\": %m", o->keyfile);
        return 0;
    }
    if (o->passphrase_file)
        return pfs_passphrase_file_read(o->passphrase_file, ret_passphrase);
    return 0;
}

int main(int argc, char **argv)
{
    PfsMountOptions o;
    char *passphrase = NULL;
    int status;
    pfs_mount_options_init(&o);
    log_set_program("mount.pitrfs");
    /* Cached chunks (up to 256 KiB each) come and go all the time: keep them in the heap,
     * where freed memory is reused, rather than in fresh mmaps that fault in zeroed pages on
     * every fill (measured: about 10% of a sequential read's CPU time). */
    mallopt(M_MMAP_THRESHOLD, 4 << 20);
    int r = pfs_mount_options_parse(argc, argv, pfs_selinux_is_enabled(), &o);
    if (r == PFS_MOUNT_HELP)
        usage(stdout);
    else if (r == PFS_MOUNT_VERSION)
        printf("mount.pitrfs %s\n", PITR_VERSION);
    if (r != PFS_MOUNT_RUN) {
        pfs_mount_options_clear(&o);
        return r < 0 ? exit_code_from_errno(r) : EXIT_OK;
    }
    /* The cache may hold cache_size bytes anyway: memory freed below that is not handed back
     * to the kernel only to fault it in again on the next fill (measured on a cold 1 GiB read:
     * half the page faults, about 7% less CPU). */
    mallopt(M_TRIM_THRESHOLD, (int)MIN(o.cache_bytes, (size_t)INT_MAX));
    /* One arena: chunks are decoded by one thread and freed by another, and with an arena per
     * thread each kept its own high-water mark on top of the cache (reading the newest of 7
     * days of a 256 MiB file: 355 MiB peak RSS with the default 256 MiB cache, 300 MiB with one
     * arena, at the same speed). */
    mallopt(M_ARENA_MAX, 1);
    int notify_fd = -1;
    if ((r = check_before_mount(&o, &passphrase)) < 0)
        status = exit_code_from_errno(r);
    else if (o.is_fake) {
        log_debug("fake mount (-f): \"%s\" is not mounted on \"%s\"", o.repo, o.mountpoint);
        status = EXIT_OK;
    } else if (!o.foreground && (r = pfs_daemon_fork(&notify_fd)) < 0) {
        log_error_errno(r, "could not fork: %m");
        status = EXIT_FAIL;
    } else
        status = run(&o, passphrase, notify_fd);
    if (passphrase) {
        explicit_bzero(passphrase, strlen(passphrase));
        free(passphrase);
    }
    pfs_mount_options_clear(&o);
    pfs_daemon_log_close();
    return status;
}
