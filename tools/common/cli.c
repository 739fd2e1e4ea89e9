#include "tools/common/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "common/fs-util.h"
#include "common/log.h"
#include "common/macro.h"

int cli_exit_code(int r)
{
    switch (r) {
    case 0: return EXIT_OK;
    case -EKEYREJECTED: return EXIT_KEY;
    case -ENOMEDIUM:
    case -EPROTONOSUPPORT:
    case -EXDEV: return EXIT_NOT_REPO;
    case -EBADMSG: return EXIT_DAMAGED;
    case -EBUSY: return EXIT_BUSY;
    case -EINVAL: return EXIT_USAGE;
    default: return EXIT_FAILURE_;
    }
}

static int prompt(const char *question, char *buf, size_t n)
{
    _cleanup_close_ int fd = open("/dev/tty", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return -ENOTTY;
    struct termios old, quiet;
    if (tcgetattr(fd, &old) < 0)
        return -errno;
    quiet = old;
    quiet.c_lflag &= ~(tcflag_t)ECHO;
    quiet.c_lflag |= ECHONL;
    int _unused_ w = (int)write(fd, question, strlen(question));
    tcsetattr(fd, TCSAFLUSH, &quiet);
    ssize_t got = read(fd, buf, n - 1);
    tcsetattr(fd, TCSAFLUSH, &old);
    if (got <= 0)
        return -EIO;
    buf[got] = 0;
    buf[strcspn(buf, "\r\n")] = 0;
    return 0;
}

int cli_key_source(const CliKeyOptions *o, bool confirm, CsKeySource *ret)
{
    *ret = (CsKeySource){ 0 };
    if (o->keyfile) {
        ret->keyfile_path = o->keyfile;
        return 0;
    }
    char *pass = NULL;
    if (o->passphrase_file) {
        size_t n;
        int r = read_file(o->passphrase_file, 4096, &pass, &n);
        if (r < 0)
            return log_error_errno(r, "could not read passphrase file \"%s\": %m",
                                   o->passphrase_file);
        pass[strcspn(pass, "\r\n")] = 0;
    } else if (getenv("PITR_PASSPHRASE")) {
        pass = strdup(getenv("PITR_PASSPHRASE"));
        if (!pass)
            return -ENOMEM;
    } else {
        char a[1024], b[1024];
        int r = prompt("Passphrase: ", a, sizeof(a));
        if (r < 0)
            return log_error_errno(-EKEYREJECTED,
                                   "no passphrase given\nHINT: use --passphrase-file, "
                                   "--key-file or PITR_PASSPHRASE, or run on a terminal");
        if (confirm) {
            if ((r = prompt("Repeat passphrase: ", b, sizeof(b))) < 0)
                return -EKEYREJECTED;
            if (strcmp(a, b) != 0)
                return log_error_errno(-EINVAL, "the passphrases do not match");
        }
        pass = strdup(a);
        explicit_bzero(a, sizeof(a));
        explicit_bzero(b, sizeof(b));
        if (!pass)
            return -ENOMEM;
    }
    if (!*pass) {
        free(pass);
        return log_error_errno(-EKEYREJECTED, "the passphrase is empty");
    }
    ret->passphrase = pass;
    ret->passphrase_len = strlen(pass);
    return 0;
}

void cli_key_source_clear(CsKeySource *ks)
{
    if (ks->passphrase) {
        explicit_bzero((char *)(uintptr_t)ks->passphrase, ks->passphrase_len);
        free((char *)(uintptr_t)ks->passphrase);
    }
    *ks = (CsKeySource){ 0 };
}

const char *cli_size(uint64_t bytes, char *buf, size_t n)
{
    static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
    double v = (double)bytes;
    size_t u = 0;
    while (v >= 1024 && u + 1 < ARRAY_SIZE(units)) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, n, "%llu B", (unsigned long long)bytes);
    else
        snprintf(buf, n, "%.1f %s", v, units[u]);
    return buf;
}

bool cli_is_tty(void)
{
    return isatty(STDERR_FILENO);
}
