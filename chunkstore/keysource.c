#include "chunkstore/keysource.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "common/fs-util.h"
#include "common/log.h"
#include "common/macro.h"

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
    /* Echo off before the question: an answer typed right after it must not be flushed away. */
    tcsetattr(fd, TCSAFLUSH, &quiet);
    int _unused_ w = (int)write(fd, question, strlen(question));
    ssize_t got = read(fd, buf, n - 1);
    tcsetattr(fd, TCSANOW, &old);
    if (got <= 0)
        return -EIO;
    buf[got] = 0;
    buf[strcspn(buf, "\r\n")] = 0;
    return 0;
}

int cs_key_source_resolve(const char *passphrase_file, const char *keyfile, bool confirm,
                          CsKeySource *ret)
{
    *ret = (CsKeySource){ 0 };
    if (!keyfile && !passphrase_file)
        keyfile = getenv("PITR_KEY_FILE"); /* for archive_command, which passes no options */
    if (keyfile) {
        ret->keyfile_path = keyfile;
        return 0;
    }
    char *pass = NULL;
    if (passphrase_file) {
        size_t n;
        int r = read_file(passphrase_file, 4096, &pass, &n);
        if (r < 0)
            return log_error_errno(r, "could not read passphrase file \"%s\": %m",
                                   passphrase_file);
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

void cs_key_source_clear(CsKeySource *ks)
{
    if (ks->passphrase) {
        explicit_bzero((char *)(uintptr_t)ks->passphrase, ks->passphrase_len);
        free((char *)(uintptr_t)ks->passphrase);
    }
    *ks = (CsKeySource){ 0 };
}


int cs_repo_unlock(const char *location, const char *passphrase_file, const char *keyfile,
                   const CsOpenParams *params, CsRepo **ret)
{
    CsKeySource ks;
    int r = cs_repo_probe(location);
    if (r < 0 || (r = cs_key_source_resolve(passphrase_file, keyfile, false, &ks)) < 0)
        return r;
    r = cs_repo_open(location, params, &ks, ret);
    cs_key_source_clear(&ks);
    return r;
}
