/*
 * fuse/mount-options: mount.pitrfs's command line as mount(8) passes it to a helper (flags after
 * the operands, -f fake, -s sloppy, -n, -v, -t), the double-quoted values of -o with commas
 * inside (SELinux contexts passed on escaped for libfuse, or dropped without SELinux), unknown
 * options named in one line with a hint, and passphrase files read once from a regular file
 * or a pipe.
 */
#include "tests/unit/harness.h"

#include <fcntl.h>

#include "fuse/mount-options.c"

#include "common/fs-util.h"

#define CONTEXT_WITH_COMMA "context=\"system_u:object_r:tmp_t:s0:c127,c456\""

/* Parses the NULL-terminated arguments after argv[0] into *o, with stderr captured in *ret_log
 * (malloc'd, "" when nothing was said). Returns what pfs_mount_options_parse() returned. */
static int parse_logged(bool selinux_enabled, PfsMountOptions *o, char **ret_log, ...)
{
    const char *argv[32] = { "mount.pitrfs" };
    int argc = 1;
    va_list ap;
    va_start(ap, ret_log);
    for (const char *a; (a = va_arg(ap, const char *));)
        argv[argc++] = a;
    va_end(ap);
    assert_true(argc < (int)ARRAY_SIZE(argv));

    char logpath[] = "/tmp/test-mount-options.XXXXXX";
    int fd = mkstemp(logpath);
    assert_true(fd >= 0);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0 && dup2(fd, STDERR_FILENO) >= 0);
    log_set_level(LOG_LEVEL_INFO); /* -v of an earlier case raised it */
    pfs_mount_options_init(o);
    int r = pfs_mount_options_parse(argc, (char *const *)(uintptr_t)argv, selinux_enabled, o);
    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);
    close(fd);
    ASSERT_OK(read_file(logpath, 1 << 16, ret_log, NULL));
    unlink(logpath);
    if (**ret_log) /* in the output of a failing case */
        fprintf(stderr, "--- the parser said:\n%s", *ret_log);
    return r;
}

#define PARSE(selinux, o, ...)                                                                     \
    ({                                                                                             \
        _cleanup_free_ char *_log_ = NULL;                                                         \
        parse_logged((selinux), (o), &_log_, __VA_ARGS__, NULL);                                   \
    })

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static void test_mount8_helper_arguments(void **state)
{
    (void)state;
    PfsMountOptions o;
    /* What mount(8) runs for "mount -fnsv -t pitrfs /r /m -o ...": flags after the operands. */
    assert_int_equal(PARSE(false, &o, "/r", "/m", "-s", "-f", "-n", "-v", "-o",
                           "passphrase_file=/p,cache_size=64M,noauto", "-t", "pitrfs"),
                     PFS_MOUNT_RUN);
    assert_string_equal(o.repo, "/r");
    assert_string_equal(o.mountpoint, "/m");
    assert_true(o.is_fake && o.sloppy && o.verbose);
    assert_false(o.foreground);
    assert_string_equal(o.passphrase_file, "/p");
    assert_int_equal(o.cache_bytes, 64u << 20);
    assert_null(o.fuse_opts);
    pfs_mount_options_clear(&o);

    /* The same flags in one argument, values attached. */
    assert_int_equal(PARSE(false, &o, "-sfnv", "/r", "-ocache_size=1M", "/m", "-tfuse.pitrfs"),
                     PFS_MOUNT_RUN);
    assert_true(o.is_fake && o.sloppy && o.verbose);
    assert_int_equal(o.cache_bytes, 1u << 20);
    pfs_mount_options_clear(&o);

    /* Without -f a mount is real. */
    assert_int_equal(PARSE(false, &o, "/r", "/m", "-n", "-o", "ro"), PFS_MOUNT_RUN);
    assert_false(o.is_fake);
    assert_false(o.foreground);
    pfs_mount_options_clear(&o);
}

static void test_fake_is_not_foreground(void **state)
{
    (void)state;
    PfsMountOptions o;
    assert_int_equal(PARSE(false, &o, "/r", "/m", "-f"), PFS_MOUNT_RUN);
    assert_true(o.is_fake);
    assert_false(o.foreground);
    pfs_mount_options_clear(&o);

    static const struct {
        const char *arg, *value;
        bool is_debug;
    } foreground_ways[] = {
        { "--foreground", NULL, false }, { "-o", "foreground", false }, { "-d", NULL, true },
        { "--debug", NULL, true },       { "-o", "debug", true },
    };
    for (size_t i = 0; i < ARRAY_SIZE(foreground_ways); i++) {
        const char *arg = foreground_ways[i].arg, *value = foreground_ways[i].value;
        int r = value ? PARSE(false, &o, "/r", "/m", arg, value)
                      : PARSE(false, &o, "/r", "/m", arg);
        assert_int_equal(r, PFS_MOUNT_RUN);
        assert_true(o.foreground);
        assert_false(o.is_fake);
        assert_int_equal(o.debug, foreground_ways[i].is_debug);
        pfs_mount_options_clear(&o);
    }
}

static void test_quoted_context_with_selinux(void **state)
{
    (void)state;
    PfsMountOptions o;
    assert_int_equal(PARSE(true, &o, "/r", "/m", "-o",
                           "cache_size=2M," CONTEXT_WITH_COMMA ",allow_root,threads=3"),
                     PFS_MOUNT_RUN);
    /* One option for libfuse, its comma escaped; the quotes stay for the kernel's SELinux. */
    assert_string_equal(o.fuse_opts,
                        "context=\"system_u:object_r:tmp_t:s0:c127\\,c456\",allow_root");
    assert_int_equal(o.cache_bytes, 2u << 20);
    assert_int_equal(o.threads, 3);
    pfs_mount_options_clear(&o);

    assert_int_equal(PARSE(true, &o, "/r", "/m", "-o",
                           "fscontext=u:r:t:s0,defcontext=\"u:r:t:s0:c1,c2\",rootcontext=u:r:t:s0,"
                           "seclabel"),
                     PFS_MOUNT_RUN);
    assert_string_equal(o.fuse_opts, "fscontext=u:r:t:s0,defcontext=\"u:r:t:s0:c1\\,c2\","
                                     "rootcontext=u:r:t:s0,seclabel");
    pfs_mount_options_clear(&o);
}

static void test_quoted_context_without_selinux(void **state)
{
    (void)state;
    PfsMountOptions o;
    char *log = NULL;
    assert_int_equal(parse_logged(false, &o, &log, "/r", "/m", "-o",
                                  CONTEXT_WITH_COMMA ",nodev,seclabel,threads=5", NULL),
                     PFS_MOUNT_RUN);
    assert_string_equal(o.fuse_opts, "nodev"); /* dropped as mount(8) drops them */
    assert_int_equal(o.threads, 5);
    assert_string_equal(log, "");
    free(log);
    pfs_mount_options_clear(&o);

    /* -v says so. */
    assert_int_equal(parse_logged(false, &o, &log, "/r", "/m", "-v", "-o", CONTEXT_WITH_COMMA,
                                  NULL),
                     PFS_MOUNT_RUN);
    assert_non_null(strstr(log, "ignoring mount option " CONTEXT_WITH_COMMA
                                ": SELinux is not enabled"));
    assert_null(o.fuse_opts);
    free(log);
    pfs_mount_options_clear(&o);
}

static void test_quoted_values(void **state)
{
    (void)state;
    PfsMountOptions o;
    assert_int_equal(PARSE(false, &o, "/r", "/m", "-o",
                           "passphrase_file=\"/tmp/a,b\",index_dir=\"/x\",logfile=/l\"o\"g"),
                     PFS_MOUNT_RUN);
    assert_string_equal(o.passphrase_file, "/tmp/a,b");
    assert_string_equal(o.index_dir, "/x");
    assert_string_equal(o.log_path, "/log");
    pfs_mount_options_clear(&o);

    char *log = NULL;
    assert_int_equal(parse_logged(false, &o, &log, "/r", "/m", "-o", "context=\"a,b", NULL),
                     -EINVAL);
    assert_non_null(strstr(log, "unbalanced quote"));
    free(log);
    pfs_mount_options_clear(&o);

    /* A backslash is escaped for libfuse as well as a comma. */
    assert_int_equal(PARSE(true, &o, "/r", "/m", "-o", "context=a\\b"), PFS_MOUNT_RUN);
    assert_string_equal(o.fuse_opts, "context=a\\\\b");
    pfs_mount_options_clear(&o);
}

static void test_unknown_options_named(void **state)
{
    (void)state;
    static const struct {
        const char *arg, *message;
    } cases[] = {
        { "--bogus", "unknown option '--bogus'" },
        { "--foreground=yes", "unknown option '--foreground=yes'" },
        { "-x", "unknown option '-x'" },
        { "-fx", "unknown option '-x'" },
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        PfsMountOptions o;
        char *log = NULL;
        assert_int_equal(parse_logged(false, &o, &log, "/r", "/m", cases[i].arg, NULL), -EINVAL);
        assert_non_null(strstr(log, cases[i].message));
        /* The error and a one-line hint, not the whole help. */
        assert_non_null(strstr(log, "HINT: see mount.pitrfs --help"));
        assert_int_equal(count_lines(log), 2);
        free(log);
        pfs_mount_options_clear(&o);
    }
}

static void test_sloppy(void **state)
{
    (void)state;
    PfsMountOptions o;
    char *log = NULL;
    assert_int_equal(parse_logged(false, &o, &log, "/r", "/m", "-o", "nope,cache_size=1M", NULL),
                     -EINVAL);
    assert_non_null(strstr(log, "unknown mount option \"nope\""));
    assert_int_equal(count_lines(log), 2);
    free(log);
    pfs_mount_options_clear(&o);

    /* -s before or after -o: the option is ignored with a warning, the others still count. */
    for (int after = 0; after < 2; after++) {
        int r = after ? parse_logged(false, &o, &log, "/r", "/m", "-o", "nope,cache_size=1M", "-s",
                                     NULL)
                      : parse_logged(false, &o, &log, "/r", "/m", "-s", "-o", "nope,cache_size=1M",
                                     NULL);
        assert_int_equal(r, PFS_MOUNT_RUN);
        assert_non_null(strstr(log, "warning: ignoring unknown mount option \"nope\""));
        assert_int_equal(o.cache_bytes, 1u << 20);
        free(log);
        pfs_mount_options_clear(&o);
    }
    /* Sloppy is about unknown names, not bad values. */
    assert_int_equal(PARSE(false, &o, "/r", "/m", "-s", "-o", "cache_size=lots"), -EINVAL);
    pfs_mount_options_clear(&o);
}

static void test_ignored_and_passed(void **state)
{
    (void)state;
    PfsMountOptions o;
    assert_int_equal(PARSE(false, &o, "/r", "/m", "-o",
                           "defaults,noauto,nofail,x-systemd.automount,comment=x,ro,rw,noatime,"
                           "nodev,auto_unmount,allow_other,direct_io"),
                     PFS_MOUNT_RUN);
    assert_string_equal(o.fuse_opts, "nodev,auto_unmount");
    assert_true(o.allow_other && o.direct_io);
    pfs_mount_options_clear(&o);

    /* Several -o add up; an empty one is nothing. */
    assert_int_equal(PARSE(false, &o, "/r", "/m", "-o", "nosuid", "-o", "", "-o", "keyfile=/k"),
                     PFS_MOUNT_RUN);
    assert_string_equal(o.fuse_opts, "nosuid");
    assert_string_equal(o.keyfile, "/k");
    pfs_mount_options_clear(&o);
}

static void test_bad_values(void **state)
{
    (void)state;
    static const char *const bad[] = { "cache_size",   "cache_size=lots", "kernel_readahead=-1",
                                       "threads=0",    "threads=1025",    "passphrase_file=",
                                       "allow_other=1" };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        PfsMountOptions o;
        assert_int_equal(PARSE(false, &o, "/r", "/m", "-o", bad[i]), -EINVAL);
        pfs_mount_options_clear(&o);
    }
}

static void test_type_operands_help(void **state)
{
    (void)state;
    PfsMountOptions o;
    assert_int_equal(PARSE(false, &o, "/r", "/m", "-t", "ext4"), -EINVAL);
    pfs_mount_options_clear(&o);
    assert_int_equal(PARSE(false, &o, "/r", "/m", "-N", "/proc/1/ns/mnt"), -EINVAL);
    pfs_mount_options_clear(&o);
    assert_int_equal(PARSE(false, &o, "/r", "/m", "-o"), -EINVAL);
    pfs_mount_options_clear(&o);
    assert_int_equal(PARSE(false, &o, "/r"), -EINVAL);
    pfs_mount_options_clear(&o);
    assert_int_equal(PARSE(false, &o, "/r", "/m", "/x"), -EINVAL);
    pfs_mount_options_clear(&o);
    /* After "--" everything is an operand. */
    assert_int_equal(PARSE(false, &o, "--", "-r", "-m"), PFS_MOUNT_RUN);
    assert_string_equal(o.repo, "-r");
    assert_string_equal(o.mountpoint, "-m");
    pfs_mount_options_clear(&o);

    assert_int_equal(PARSE(false, &o, "--help"), PFS_MOUNT_HELP);
    pfs_mount_options_clear(&o);
    assert_int_equal(PARSE(false, &o, "/r", "/m", "-h"), PFS_MOUNT_HELP);
    pfs_mount_options_clear(&o);
    assert_int_equal(PARSE(false, &o, "--version"), PFS_MOUNT_VERSION);
    pfs_mount_options_clear(&o);
    assert_int_equal(PARSE(false, &o, "-V"), PFS_MOUNT_VERSION);
    pfs_mount_options_clear(&o);
}

/* ---- passphrase files ---- */

static char *tmp_file(const char *data, size_t n)
{
    char *path = strdup("/tmp/test-mount-options-pass.XXXXXX");
    assert_non_null(path);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    ASSERT_OK(write_all(fd, data, n));
    close(fd);
    return path;
}

static void test_passphrase_regular_file(void **state)
{
    (void)state;
    char *pass = NULL;
    _cleanup_free_ char *path = tmp_file("secret words\r\nsecond line\n", 27);
    ASSERT_OK(pfs_passphrase_file_read(path, &pass));
    assert_string_equal(pass, "secret words");
    free(pass);
    unlink(path);

    _cleanup_free_ char *no_newline = tmp_file("x", 1);
    ASSERT_OK(pfs_passphrase_file_read(no_newline, &pass));
    assert_string_equal(pass, "x");
    free(pass);
    unlink(no_newline);

    _cleanup_free_ char *empty = tmp_file("", 0), *blank = tmp_file("\nsecret\n", 8);
    ASSERT_ERR(EKEYREJECTED, pfs_passphrase_file_read(empty, &pass));
    ASSERT_ERR(EKEYREJECTED, pfs_passphrase_file_read(blank, &pass));
    unlink(empty);
    unlink(blank);

    char big[PFS_PASSPHRASE_MAX + 1];
    memset(big, 'a', sizeof(big));
    big[10] = '\n'; /* the first line is short, the file too large all the same */
    _cleanup_free_ char *large = tmp_file(big, sizeof(big));
    ASSERT_ERR(EFBIG, pfs_passphrase_file_read(large, &pass));
    unlink(large);
    ASSERT_ERR(ENOENT, pfs_passphrase_file_read("/nonexistent/passphrase", &pass));
}

/* What a shell's <(echo ...) gives: /dev/fd/N, a pipe with no size. */
static void test_passphrase_pipe(void **state)
{
    (void)state;
    char path[64], *pass = NULL;
    int p[2];

    assert_true(pipe(p) == 0);
    ASSERT_OK(write_all(p[1], "piped secret\n", 13));
    close(p[1]);
    snprintf(path, sizeof(path), "/dev/fd/%d", p[0]);
    ASSERT_OK(pfs_passphrase_file_read(path, &pass));
    assert_string_equal(pass, "piped secret");
    free(pass);
    close(p[0]);

    /* A writer that keeps the pipe open: the first line is enough, no end of file is awaited. */
    assert_true(pipe(p) == 0);
    ASSERT_OK(write_all(p[1], "open", 4));
    ASSERT_OK(write_all(p[1], "-ended\nmore", 11));
    snprintf(path, sizeof(path), "/dev/fd/%d", p[0]);
    ASSERT_OK(pfs_passphrase_file_read(path, &pass));
    assert_string_equal(pass, "open-ended");
    free(pass);
    close(p[0]);
    close(p[1]);

    /* An empty pipe is an empty passphrase; an endless line is too large. */
    assert_true(pipe(p) == 0);
    close(p[1]);
    snprintf(path, sizeof(path), "/dev/fd/%d", p[0]);
    ASSERT_ERR(EKEYREJECTED, pfs_passphrase_file_read(path, &pass));
    close(p[0]);

    char big[PFS_PASSPHRASE_MAX + 100];
    memset(big, 'a', sizeof(big));
    assert_true(pipe(p) == 0);
    ASSERT_OK(write_all(p[1], big, sizeof(big)));
    snprintf(path, sizeof(path), "/dev/fd/%d", p[0]);
    ASSERT_ERR(EFBIG, pfs_passphrase_file_read(path, &pass));
    close(p[0]);
    close(p[1]);
}

RUN_TESTS(cmocka_unit_test(test_mount8_helper_arguments),
          cmocka_unit_test(test_fake_is_not_foreground),
          cmocka_unit_test(test_quoted_context_with_selinux),
          cmocka_unit_test(test_quoted_context_without_selinux),
          cmocka_unit_test(test_quoted_values), cmocka_unit_test(test_unknown_options_named),
          cmocka_unit_test(test_sloppy), cmocka_unit_test(test_ignored_and_passed),
          cmocka_unit_test(test_bad_values), cmocka_unit_test(test_type_operands_help),
          cmocka_unit_test(test_passphrase_regular_file), cmocka_unit_test(test_passphrase_pipe))
