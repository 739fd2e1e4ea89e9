/*
 * Key files (docs/FORMAT.md 3.3), read by cs_repo_open with --key-file: the text is parsed,
 * its repo id compared and its master key checked against the repository's key check.
 *
 * Input: the text of a key file, written to a file that unlocks the fixed repository of
 * fuzz-common.h when it is that repository's key file.
 *
 * Promises checked: no crash, leak or undefined behaviour; the open fails with one of the
 * errors docs/errors.md gives for key material, or succeeds with exactly the repository's
 * master key.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chunkstore/repo.h"
#include "common/macro.h"
#include "tests/fuzz/fuzz-common.h"

static char repo_dir[PATH_MAX], key_path[PATH_MAX];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet();
    snprintf(repo_dir, sizeof(repo_dir), "%s/repo", fuzz_scratch_dir());
    snprintf(key_path, sizeof(key_path), "%s/key", fuzz_scratch_dir());
    return fuzz_repo_create(repo_dir) < 0 ? -1 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FUZZ_CHECK(fuzz_write_file(key_path, data, size) == 0);
    CsRepo *repo = NULL;
    int r = cs_repo_open(repo_dir, &(CsOpenParams){ .read_only = true },
                         &(CsKeySource){ .keyfile_path = key_path }, &repo);
    FUZZ_CHECK(r == 0 || r == -EKEYREJECTED || r == -EPROTONOSUPPORT || r == -EFBIG);
    if (r == 0) {
        uint8_t master[CS_MASTER_SIZE];
        fuzz_master_key(master);
        FUZZ_CHECK(memcmp(&repo->keys, master, sizeof(master)) == 0);
        cs_repo_close(repo);
    }
    return 0;
}
