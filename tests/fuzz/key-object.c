/*
 * The wrapped master key, keys/passphrase (docs/FORMAT.md 3.2), read by cs_repo_open with a
 * passphrase: the text is parsed, the scrypt parameters bounded, the wrap key derived and the
 * master key unwrapped and checked against the repository's key check.
 *
 * Input: the text of the keys/passphrase object of the fixed repository of fuzz-common.h,
 * which FUZZ_PASSPHRASE unlocks when the object is that repository's.
 *
 * scrypt's cost is N * r * p: the reader accepts up to N = 2^22, r = 32, p = 16 (16 GiB of
 * memory, minutes of work per unlock). Inputs whose parameters, wherever they stand in the
 * text, could cost more than N * r * p = 2^16 are not unlocked here: they measure scrypt,
 * not the parser, and would stop the fuzzer on memory or time.
 *
 * Promises checked: no crash, leak or undefined behaviour; the open fails with one of the
 * errors docs/errors.md gives for key material or a damaged key object, or succeeds with
 * exactly the repository's master key.
 */
#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chunkstore/repo.h"
#include "common/macro.h"
#include "tests/fuzz/fuzz-common.h"

#define FUZZ_MAX_SCRYPT_COST (1u << 16)

static char repo_dir[PATH_MAX], key_object[PATH_MAX];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet();
    snprintf(repo_dir, sizeof(repo_dir), "%s/repo", fuzz_scratch_dir());
    snprintf(key_object, sizeof(key_object), "%s/keys/passphrase", repo_dir);
    return fuzz_repo_create(repo_dir) < 0 ? -1 : 0;
}

/* The largest value any "name = digits" in the text gives `name` (1 when none does): never
 * less than what the reader, which takes the first such line, will use. */
static unsigned long long largest_value(const char *text, const char *name)
{
    unsigned long long most = 1;
    size_t len = strlen(name);
    for (const char *p = strstr(text, name); p; p = strstr(p + 1, name)) {
        const char *v = p + len;
        while (*v == ' ')
            v++;
        if (*v++ != '=')
            continue;
        while (*v == ' ')
            v++;
        if (!isdigit((unsigned char)*v))
            continue;
        errno = 0;
        unsigned long long x = strtoull(v, NULL, 10);
        if (errno == ERANGE)
            x = ULLONG_MAX;
        most = x > most ? x : most;
    }
    return most;
}

static bool is_cheap(const char *text)
{
    unsigned long long n = largest_value(text, "scrypt_n"), r = largest_value(text, "scrypt_r"),
                       p = largest_value(text, "scrypt_p");
    return n <= FUZZ_MAX_SCRYPT_COST && r <= FUZZ_MAX_SCRYPT_COST &&
           p <= FUZZ_MAX_SCRYPT_COST && n * r * p <= FUZZ_MAX_SCRYPT_COST;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    _cleanup_free_ char *text = strndup((const char *)data, size);
    FUZZ_CHECK(text);
    if (!is_cheap(text))
        return 0;
    FUZZ_CHECK(fuzz_write_file(key_object, data, size) == 0);
    CsRepo *repo = NULL;
    int r = cs_repo_open(repo_dir, &(CsOpenParams){ .read_only = true },
                         &(CsKeySource){ .passphrase = FUZZ_PASSPHRASE,
                                         .passphrase_len = strlen(FUZZ_PASSPHRASE) },
                         &repo);
    FUZZ_CHECK(r == 0 || r == -EKEYREJECTED || r == -EBADMSG || r == -EFBIG);
    if (r == 0) {
        uint8_t master[CS_MASTER_SIZE];
        fuzz_master_key(master);
        FUZZ_CHECK(memcmp(&repo->keys, master, sizeof(master)) == 0);
        cs_repo_close(repo);
    }
    return 0;
}
