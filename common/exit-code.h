/*
 * Process exit codes shared by every program of the project, and the one mapping from a final
 * negative errno to them (docs/errors.md lists what triggers each):
 *   0 success, 1 failure, 2 wrong passphrase or key, 3 not a repository or unsupported format,
 *   4 damaged data found, 5 busy (a lock is held), 6 a cluster operation failed on one or
 *   more nodes, 64 usage error, 75 the commit barrier was not granted in time (try again).
 */
#pragma once

enum {
    EXIT_OK = 0,
    EXIT_FAIL = 1,
    EXIT_KEY = 2,
    EXIT_NOT_REPO = 3,
    EXIT_DAMAGED = 4,
    EXIT_BUSY = 5,
    EXIT_NODES = 6,
    EXIT_USAGE = 64,
    EXIT_TEMPFAIL = 75, /* sysexits.h EX_TEMPFAIL */
};

int exit_code_from_errno(int r);
