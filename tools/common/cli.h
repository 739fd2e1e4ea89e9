/*
 * What every command-line tool shares: stable exit codes, the key source from options,
 * environment or terminal, human-readable sizes, and progress lines on stderr.
 *
 * Exit codes (docs/man/pitr-snap.1 lists them):
 *   0 success, 1 failure, 2 wrong passphrase or key, 3 not a repository or unsupported format,
 *   4 damaged data found, 5 busy (a lock is held), 64 usage error.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chunkstore/repo.h"

enum {
    EXIT_OK = 0,
    EXIT_FAILURE_ = 1,
    EXIT_KEY = 2,
    EXIT_NOT_REPO = 3,
    EXIT_DAMAGED = 4,
    EXIT_BUSY = 5,
    EXIT_USAGE = 64,
};

/* Map a final -errno to an exit code. */
int cli_exit_code(int r);

typedef struct CliKeyOptions {
    const char *passphrase_file;
    const char *keyfile;
} CliKeyOptions;

/* "1.5 GiB" into buf. */
const char *cli_size(uint64_t bytes, char *buf, size_t n);

/* True when stderr is a terminal (progress lines redraw with \r only then). */
bool cli_is_tty(void);
