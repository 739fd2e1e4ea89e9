#include "fuse/mount-options.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "common/log.h"
#include "common/macro.h"
#include "common/parse.h"
#include "fuse/pfs.h"

#define SELINUXFS_PATH  "/sys/fs/selinux"
#define SELINUXFS_MAGIC 0xf97cff8cu /* linux/magic.h: SELINUX_MAGIC */

#define HINT_HELP "\nHINT: see mount.pitrfs --help"

void pfs_mount_options_init(PfsMountOptions *o)
{
    *o = (PfsMountOptions){
        .cache_bytes = PFS_DEFAULT_CACHE_BYTES,
        .readahead_bytes = PFS_DEFAULT_READAHEAD_BYTES,
        .kernel_readahead_bytes = PFS_DEFAULT_KERNEL_READAHEAD,
        .threads = 16,
    };
}

void pfs_mount_options_clear(PfsMountOptions *o)
{
    free(o->passphrase_file);
    free(o->keyfile);
    free(o->index_dir);
    free(o->log_path);
    free(o->fuse_opts);
    pfs_mount_options_init(o);
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

/* Append one option to fuse_opts, escaped so that libfuse does not split it at its commas. */
static int add_fuse_opt(PfsMountOptions *o, const char *opt)
{
    size_t have = o->fuse_opts ? strlen(o->fuse_opts) : 0, n = have;
    char *s = realloc(o->fuse_opts, have + 1 + 2 * strlen(opt) + 1);
    if (!s)
        return -ENOMEM;
    if (have)
        s[n++] = ',';
    for (const char *p = opt; *p; p++) {
        if (*p == ',' || *p == '\\')
            s[n++] = '\\';
        s[n++] = *p;
    }
    s[n] = 0;
    o->fuse_opts = s;
    return 0;
}

static bool is_one_of(const char *opt, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(opt, names[i]) == 0)
            return true;
    return false;
}

static bool has_prefix_of(const char *opt, const char *const *prefixes, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strncmp(opt, prefixes[i], strlen(prefixes[i])) == 0)
            return true;
    return false;
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
    static const char *const prefixes[] = { "x-", "comment=" };
    return is_one_of(opt, names, ARRAY_SIZE(names)) ||
           has_prefix_of(opt, prefixes, ARRAY_SIZE(prefixes));
}

/* Mount flags libfuse passes to the kernel as they are. */
static bool is_passed(const char *opt)
{
    static const char *const names[] = { "allow_root", "auto_unmount", "dev",    "nodev",
                                         "suid",       "nosuid",       "exec",   "noexec",
                                         "sync",       "async",        "dirsync" };
    return is_one_of(opt, names, ARRAY_SIZE(names));
}

/* The options of the SELinux security module (libmount's list), which the kernel takes out of
 * the mount data before the file system sees it. */
static bool is_selinux_option(const char *opt)
{
    static const char *const prefixes[] = { "context=", "fscontext=", "defcontext=",
                                            "rootcontext=" };
    return strcmp(opt, "seclabel") == 0 || has_prefix_of(opt, prefixes, ARRAY_SIZE(prefixes));
}

/* One option of -o: `raw` as given, `opt` without its double quotes. */
static int parse_one(PfsMountOptions *o, const char *raw, const char *opt, bool selinux_enabled)
{
    static const char *const needs_value[] = { "passphrase_file", "keyfile",   "key_file",
                                               "index_dir",       "logfile",   "cache_size",
                                               "readahead",       "kernel_readahead",
                                               "threads",         "prefetch_threads" };
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
    if (!val && is_one_of(opt, needs_value, ARRAY_SIZE(needs_value)))
        return log_error_errno(-EINVAL, "mount option %s needs a value" HINT_HELP, opt);
    if (is_ignored(opt))
        return 0;
    if (is_selinux_option(opt)) {
        if (selinux_enabled) /* the kernel's SELinux takes the quotes out */
            return add_fuse_opt(o, raw);
        log_debug("ignoring mount option %s: SELinux is not enabled", raw);
        return 0;
    }
    if (is_passed(opt))
        return add_fuse_opt(o, opt);
    if (o->sloppy) {
        log_warning("ignoring unknown mount option \"%s\" (-s)", raw);
        return 0;
    }
    return log_error_errno(-EINVAL, "unknown mount option \"%s\"" HINT_HELP, raw);
}

/* Split "a,b=\"x,y\",c" at the commas outside double quotes (libmount's quoting). */
static int parse_option_string(PfsMountOptions *o, const char *s, bool selinux_enabled)
{
    size_t len = strlen(s);
    _cleanup_free_ char *raw = malloc(len + 1), *opt = malloc(len + 1);
    if (!raw || !opt)
        return -ENOMEM;
    size_t n_raw = 0, n_opt = 0;
    bool is_quoted = false;
    for (const char *p = s;; p++) {
        if (*p == 0 || (*p == ',' && !is_quoted)) {
            if (*p == 0 && is_quoted)
                return log_error_errno(-EINVAL, "unbalanced quote in mount options \"%s\"", s);
            raw[n_raw] = opt[n_opt] = 0;
            int r = parse_one(o, raw, opt, selinux_enabled);
            if (r < 0)
                return r;
            if (*p == 0)
                return 0;
            n_raw = n_opt = 0;
            continue;
        }
        raw[n_raw++] = *p;
        if (*p == '"')
            is_quoted = !is_quoted;
        else
            opt[n_opt++] = *p;
    }
}

static int parse_type(const char *type)
{
    if (strcmp(type, "pitrfs") == 0 || strcmp(type, "fuse.pitrfs") == 0)
        return 0;
    return log_error_errno(-EINVAL,
                           "cannot mount file systems of type \"%s\"\n"
                           "HINT: mount.pitrfs mounts only type pitrfs",
                           type);
}

/* --name: returns a PfsMountAction or -EINVAL. */
static int parse_long(PfsMountOptions *o, const char *arg)
{
    if (strcmp(arg, "--help") == 0)
        return PFS_MOUNT_HELP;
    if (strcmp(arg, "--version") == 0)
        return PFS_MOUNT_VERSION;
    if (strcmp(arg, "--foreground") == 0) {
        o->foreground = true;
        return PFS_MOUNT_RUN;
    }
    if (strcmp(arg, "--debug") == 0) {
        o->debug = o->foreground = true;
        return PFS_MOUNT_RUN;
    }
    return log_error_errno(-EINVAL, "unknown option '%s'" HINT_HELP, arg);
}

static int add_operand(const char *operands[2], int *n, const char *arg)
{
    if (*n == 2)
        return log_error_errno(-EINVAL, "too many arguments: \"%s\"" HINT_HELP, arg);
    operands[(*n)++] = arg;
    return 0;
}

/*
 * Parsed by hand rather than with getopt: mount(8) puts the flags after the operands, where
 * getopt stops under POSIXLY_CORRECT. The -o strings are parsed after every flag is known,
 * since -s may come after them.
 */
int pfs_mount_options_parse(int argc, char *const *argv, bool selinux_enabled, PfsMountOptions *o)
{
    _cleanup_free_ const char **option_strings = calloc((size_t)MAX(argc, 1), sizeof(char *));
    const char *operands[2];
    size_t n_option_strings = 0;
    int n_operands = 0, r;
    bool is_past_options = false;
    if (!option_strings)
        return -ENOMEM;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (is_past_options || a[0] != '-' || a[1] == 0) {
            if ((r = add_operand(operands, &n_operands, a)) < 0)
                return r;
            continue;
        }
        if (a[1] == '-') {
            if (a[2] == 0)
                is_past_options = true;
            else if ((r = parse_long(o, a)) != PFS_MOUNT_RUN)
                return r;
            continue;
        }
        for (const char *c = a + 1; *c; c++) {
            switch (*c) {
            case 'o':
            case 't':
            case 'N': {
                const char *val = c[1] ? c + 1 : (i + 1 < argc ? argv[++i] : NULL);
                if (!val)
                    return log_error_errno(-EINVAL, "option '-%c' needs a value" HINT_HELP, *c);
                if (*c == 'o')
                    option_strings[n_option_strings++] = val;
                else if (*c == 't' && (r = parse_type(val)) < 0)
                    return r;
                else if (*c == 'N')
                    return log_error_errno(-EINVAL, "mounting in another namespace (-N) is not "
                                                    "supported");
                c += strlen(c) - 1; /* the rest of this argument was the value */
                break;
            }
            case 'f': o->is_fake = true; break;
            case 'd': o->debug = o->foreground = true; break;
            case 's': o->sloppy = true; break;
            case 'v': o->verbose = true; break;
            case 'n': break; /* no /etc/mtab to leave alone */
            case 'h': return PFS_MOUNT_HELP;
            case 'V': return PFS_MOUNT_VERSION;
            default: return log_error_errno(-EINVAL, "unknown option '-%c'" HINT_HELP, *c);
            }
        }
    }
    if (o->verbose || o->debug) /* from here on: -v shows what becomes of the -o options */
        log_set_level(LOG_LEVEL_DEBUG);
    for (size_t i = 0; i < n_option_strings; i++)
        if ((r = parse_option_string(o, option_strings[i], selinux_enabled)) < 0)
            return r;
    if (n_operands != 2)
        return log_error_errno(-EINVAL, "%s" HINT_HELP,
                               n_operands == 0 ? "no repository and mount point given"
                                               : "no mount point given");
    o->repo = operands[0];
    o->mountpoint = operands[1];
    return PFS_MOUNT_RUN;
}

bool pfs_selinux_is_enabled(void)
{
    struct statfs st;
    return statfs(SELINUXFS_PATH, &st) == 0 && (uint32_t)st.f_type == SELINUXFS_MAGIC;
}

int pfs_passphrase_file_read(const char *path, char **ret)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0)
        return log_error_errno(-errno, "could not read passphrase file \"%s\": %m", path);
    /* The same limit as pitr-snap's for a file; a pipe's size is known only once read. */
    if (S_ISREG(st.st_mode) && st.st_size > PFS_PASSPHRASE_MAX)
        return log_error_errno(-EFBIG, "could not read passphrase file \"%s\": %m", path);
    char *buf = malloc(PFS_PASSPHRASE_MAX + 1);
    if (!buf)
        return -ENOMEM;
    size_t n = 0;
    int r = 0;
    while (!memchr(buf, '\n', n)) {
        if (n == PFS_PASSPHRASE_MAX) {
            r = -EFBIG;
            break;
        }
        ssize_t got = read(fd, buf + n, PFS_PASSPHRASE_MAX - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            r = -errno;
        if (got <= 0)
            break;
        n += (size_t)got;
    }
    buf[n] = 0;
    size_t len = strcspn(buf, "\r\n");
    explicit_bzero(buf + len, n - len); /* what followed the first line goes too */
    if (r == 0 && len == 0)
        r = log_error_errno(-EKEYREJECTED, "the passphrase in \"%s\" is empty", path);
    else if (r < 0)
        log_error_errno(r, "could not read passphrase file \"%s\": %m", path);
    if (r < 0) {
        explicit_bzero(buf, PFS_PASSPHRASE_MAX + 1);
        free(buf);
        return r;
    }
    *ret = buf;
    return 0;
}
