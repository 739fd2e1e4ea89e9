/*
 * mount.pitrfs: option parsing and FUSE session setup; the filesystem is in libpitrfs.
 *
 *   mount.pitrfs REPO MOUNTPOINT [-f] [-d] [-o OPTIONS]
 *   mount -t pitrfs REPO MOUNTPOINT -o OPTIONS        (mount(8) runs this as its helper)
 *
 * Exit status as pitr-snap's: 0 mounted (or, with -f, unmounted cleanly), 1 failure, 2 wrong
 * passphrase or key, 3 not a repository, 4 damaged data, 5 busy, 64 usage error.
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
#include "common/parse.h"
#include "common/version.h"
#include "common/macro.h"
#include "fuse/daemon.h"
#include "fuse/fs.h"


typedef struct MountOptions {
    const char *repo, *mountpoint;
    char *passphrase_file, *keyfile, *index_dir, *log_path; /* malloc'd */
    bool foreground, debug, allow_other, direct_io;
    size_t cache_bytes, readahead_bytes, kernel_readahead_bytes;
    unsigned threads, prefetch_threads;
    char *fuse_opts; /* options handed to libfuse unchanged (comma-separated, malloc'd) */
} MountOptions;

static void usage(FILE *f)
{
    fprintf(f,
            "mount.pitrfs mounts a pitrfs repository read-only.\n\n"
            "Usage:\n"
            "  mount.pitrfs REPO MOUNTPOINT [-f] [-d] [-o OPTION[,OPTION]...]\n"
            "  mount -t pitrfs REPO MOUNTPOINT [-o OPTION[,OPTION]...]\n\n"
            "Layout: MOUNTPOINT/snapshots/<id>/... (tree snapshots), snapshots/<name> and\n"
            "snapshots/latest (symlinks), streams/<id> and streams/<name> (stream snapshots),\n"
            "wal/<node>/<timeline>/ (archived WAL), stats (the mount's counters, JSON).\n"
            "In a cluster snapshot, <id>/<node>/pgdata/ starts as it is copied: it recovers\n"
            "to the snapshot's restore point.\n\n"
            "Options:\n"
            "  -o passphrase_file=F  read the passphrase from F (else $PITR_PASSPHRASE, else a\n"
            "                        prompt on the terminal)\n"
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
            "  -o foreground, -f     stay in the foreground, log to stderr\n"
            "  -o debug, -d          log every FUSE request (implies -f)\n"
            "  -h, --help            this help\n"
            "  -V, --version         version\n\n"
            "Unmount with 'umount MOUNTPOINT' or 'fusermount3 -u MOUNTPOINT'.\n"
            "Exit status: 0 mounted, 1 failure, 2 wrong passphrase or key, 3 not a repository,\n"
            "4 damaged data, 64 usage error.\n");
}

/* "256M", "1G", "65536", "512KiB". */
static int parse_size(const char *key, const char *s, size_t *ret)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *s == '-')
        return log_error_errno(-EINVAL, "invalid size \"%s\" for %s", s, key);
    unsigned shift = 0;
    switch (*end) {
    case 'k':
    case 'K':
        shift = 10;
        end++;
        break;
    case 'm':
    case 'M':
        shift = 20;
        end++;
        break;
    case 'g':
    case 'G':
        shift = 30;
        end++;
        break;
    case 't':
    case 'T':
        shift = 40;
        end++;
        break;
    default: break;
    }
    if (shift && (strcmp(end, "iB") == 0 || strcmp(end, "B") == 0))
        end += strlen(end);
    if (*end || (shift && v > (ULLONG_MAX >> shift)) || (v << shift) > SIZE_MAX)
        return log_error_errno(-EINVAL, "invalid size \"%s\" for %s", s, key);
    *ret = (size_t)(v << shift);
    return 0;
}

static int parse_uint(const char *key, const char *s, unsigned max, unsigned *ret)
{
    unsigned long long v;
    if (parse_unsigned(s, 1, max, &v) < 0)
        return log_error_errno(-EINVAL, "invalid value \"%s\" for %s (1 to %u)", s, key, max);
    *ret = (unsigned)v;
    return 0;
}

static int set_string(char **dst, const char *value, const char *key)
{
    if (!*value)
        return log_error_errno(-EINVAL, "%s needs a value", key);
    free(*dst);
    return (*dst = strdup(value)) ? 0 : -ENOMEM;
}

static int add_fuse_opt(MountOptions *o, const char *opt)
{
    char *s;
    if (asprintf(&s, "%s%s%s", o->fuse_opts ? o->fuse_opts : "", o->fuse_opts ? "," : "", opt) < 0)
        return -ENOMEM;
    free(o->fuse_opts);
    o->fuse_opts = s;
    return 0;
}

/* Options that mount(8) and fstab use for themselves, or that mean nothing for a read-only
 * file system: accepted and ignored. ("rw" from "defaults" is ignored too: always read-only.) */
static bool is_ignored(const char *opt)
{
    static const char *const names[] = { "defaults", "auto", "noauto", "user", "users", "nouser",
                                         "owner", "group", "nofail", "_netdev", "ro", "rw",
                                         "default_permissions",
                                         /* nothing is written, so access times never change: */
                                         "atime", "noatime", "relatime", "norelatime",
                                         "strictatime", "nostrictatime", "diratime", "nodiratime",
                                         "lazytime", "nolazytime" };
    for (size_t i = 0; i < ARRAY_SIZE(names); i++)
        if (strcmp(opt, names[i]) == 0)
            return true;
    return strncmp(opt, "x-", 2) == 0 || strncmp(opt, "comment=", 8) == 0;
}

/* Mount flags libfuse passes to the kernel as they are. */
static bool is_passed(const char *opt)
{
    static const char *const names[] = { "allow_root", "auto_unmount", "dev",    "nodev",
                                         "suid",       "nosuid",       "exec",   "noexec",
                                         "sync",       "async",        "dirsync" };
    static const char *const prefixes[] = { "context=", "fscontext=", "defcontext=",
                                            "rootcontext=" };
    for (size_t i = 0; i < ARRAY_SIZE(names); i++)
        if (strcmp(opt, names[i]) == 0)
            return true;
    for (size_t i = 0; i < ARRAY_SIZE(prefixes); i++)
        if (strncmp(opt, prefixes[i], strlen(prefixes[i])) == 0)
            return true;
    return false;
}

static int parse_one(MountOptions *o, const char *opt)
{
    const char *eq = strchr(opt, '=');
    size_t klen = eq ? (size_t)(eq - opt) : strlen(opt);
    const char *val = eq ? eq + 1 : NULL;
#define IS(k) (klen == strlen(k) && strncmp(opt, k, klen) == 0)
    if (!*opt)
        return 0;
    if (val && IS("passphrase_file"))
        return set_string(&o->passphrase_file, val, "passphrase_file");
    if (val && (IS("keyfile") || IS("key_file")))
        return set_string(&o->keyfile, val, "keyfile");
    if (val && IS("index_dir"))
        return set_string(&o->index_dir, val, "index_dir");
    if (val && IS("logfile"))
        return set_string(&o->log_path, val, "logfile");
    if (val && IS("cache_size"))
        return parse_size("cache_size", val, &o->cache_bytes);
    if (val && IS("readahead"))
        return parse_size("readahead", val, &o->readahead_bytes);
    if (val && IS("kernel_readahead"))
        return parse_size("kernel_readahead", val, &o->kernel_readahead_bytes);
    if (val && IS("threads"))
        return parse_uint("threads", val, 1024, &o->threads);
    if (val && IS("prefetch_threads"))
        return parse_uint("prefetch_threads", val, 256, &o->prefetch_threads);
    if (!val && IS("allow_other")) {
        o->allow_other = true;
        return 0;
    }
    if (!val && IS("direct_io")) {
        o->direct_io = true;
        return 0;
    }
    if (!val && IS("foreground")) {
        o->foreground = true;
        return 0;
    }
    if (!val && IS("debug")) {
        o->debug = o->foreground = true;
        return 0;
    }
#undef IS
    if (is_ignored(opt))
        return 0;
    if (is_passed(opt))
        return add_fuse_opt(o, opt);
    return log_error_errno(-EINVAL, "unknown mount option \"%s\"\nHINT: see mount.pitrfs --help",
                           opt);
}

/* Split "a,b=\"x,y\",c" at commas outside double quotes (libmount's quoting); quotes go. */
static int parse_option_string(MountOptions *o, const char *s)
{
    _cleanup_free_ char *cur = malloc(strlen(s) + 1);
    if (!cur)
        return -ENOMEM;
    size_t n = 0;
    bool quoted = false;
    for (const char *p = s;; p++) {
        if (*p == '"') {
            quoted = !quoted;
            continue;
        }
        if (*p == 0 || (*p == ',' && !quoted)) {
            cur[n] = 0;
            int r = parse_one(o, cur);
            if (r < 0)
                return r;
            n = 0;
            if (*p == 0)
                break;
            continue;
        }
        cur[n++] = *p;
    }
    if (quoted)
        return log_error_errno(-EINVAL, "unbalanced quote in mount options \"%s\"", s);
    return 0;
}

/*
 * Parsed by hand rather than with getopt: mount(8) puts the flags after the operands
 * ("SPEC DIR -sfnv -o opts -t type"), and getopt would stop there under POSIXLY_CORRECT.
 * Returns 1 when --help or --version was handled.
 */
static int parse_args(int argc, char **argv, MountOptions *o)
{
    const char *pos[2];
    int n_pos = 0, r;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0) {
            usage(stdout);
            return 1;
        }
        if (strcmp(a, "--version") == 0) {
            printf("mount.pitrfs %s\n", PITR_VERSION);
            return 1;
        }
        if (strcmp(a, "--foreground") == 0) {
            o->foreground = true;
            continue;
        }
        if (strcmp(a, "--debug") == 0) {
            o->debug = o->foreground = true;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            for (i++; i < argc; i++) {
                if (n_pos == 2)
                    return log_error_errno(-EINVAL, "too many arguments\nHINT: see --help");
                pos[n_pos++] = argv[i];
            }
            break;
        }
        if (a[0] != '-' || a[1] == 0) {
            if (n_pos == 2)
                return log_error_errno(-EINVAL, "too many arguments\nHINT: see --help");
            pos[n_pos++] = a;
            continue;
        }
        for (const char *c = a + 1; *c; c++) {
            switch (*c) {
            case 'o':
            case 't':
            case 'N': {
                const char *val = c[1] ? c + 1 : (i + 1 < argc ? argv[++i] : NULL);
                if (!val)
                    return log_error_errno(-EINVAL, "option -%c needs a value", *c);
                if (*c == 'o' && (r = parse_option_string(o, val)) < 0)
                    return r;
                if (*c == 'N')
                    return log_error_errno(-EINVAL, "mounting in another namespace (-N) is not "
                                                    "supported");
                c += strlen(c) - 1; /* the rest of this argument was the value */
                break;
            }
            case 'f': o->foreground = true; break;
            case 'd': o->debug = o->foreground = true; break;
            case 's': /* mount(8): sloppy */
            case 'n': /* mount(8): no mtab */
            case 'v': /* mount(8): verbose */ break;
            case 'h': usage(stdout); return 1;
            case 'V': printf("mount.pitrfs %s\n", PITR_VERSION); return 1;
            default: return log_error_errno(-EINVAL, "unknown option -%c\nHINT: see --help", *c);
            }
        }
    }
    if (n_pos != 2)
        return log_error_errno(-EINVAL, "usage: mount.pitrfs REPO MOUNTPOINT [-o OPTIONS]");
    o->repo = pos[0];
    o->mountpoint = pos[1];
    return 0;
}

static void options_free(MountOptions *o)
{
    free(o->passphrase_file);
    free(o->keyfile);
    free(o->index_dir);
    free(o->log_path);
    free(o->fuse_opts);
}

DEFINE_CLEANUP_FUNC(PfsFs *, pfs_fs_free)

static int open_repo(const MountOptions *o, CsRepo **ret)
{
    return cs_repo_unlock(o->repo, o->passphrase_file, o->keyfile,
                          &(CsOpenParams){ .read_only = true, .index_dir = o->index_dir }, ret);
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

static int build_fuse_args(const MountOptions *o, const char *fsname, struct fuse_args *args)
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

static void log_mounted(PfsFs *fs, const MountOptions *o)
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
static int run(const MountOptions *o, int notify_fd)
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

    /* The mount point first: a typo should not cost a passphrase prompt. */
    if ((r = check_mountpoint(o->mountpoint)) < 0 || (r = open_repo(o, &repo)) < 0)
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

int main(int argc, char **argv)
{
    MountOptions o = { .cache_bytes = PFS_DEFAULT_CACHE_BYTES,
                       .readahead_bytes = PFS_DEFAULT_READAHEAD_BYTES,
                       .kernel_readahead_bytes = PFS_DEFAULT_KERNEL_READAHEAD,
                       .threads = 16 };
    log_set_program("mount.pitrfs");
    /* Cached chunks (up to 256 KiB each) come and go all the time: keep them in the heap,
     * where freed memory is reused, rather than in fresh mmaps that fault in zeroed pages on
     * every fill (measured: about 10% of a sequential read's CPU time). */
    mallopt(M_MMAP_THRESHOLD, 4 << 20);
    int r = parse_args(argc, argv, &o);
    if (r != 0) {
        options_free(&o);
        return r > 0 ? EXIT_OK : EXIT_USAGE;
    }
    if (o.debug)
        log_set_level(LOG_LEVEL_DEBUG);
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
    if (!o.foreground && (r = pfs_daemon_fork(&notify_fd)) < 0) {
        log_error_errno(r, "could not fork: %m");
        options_free(&o);
        return EXIT_FAIL;
    }
    int status = run(&o, notify_fd);
    options_free(&o);
    pfs_daemon_log_close();
    return status;
}
