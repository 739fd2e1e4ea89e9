/*
 * A repository in a new temporary directory, for unit tests that need one: created with a
 * cheap scrypt cost and opened; test_repo_destroy() closes it and removes the directory.
 */
#pragma once

#include <string.h>

#include "chunkstore/repo.h"
#include "common/fs-util.h"
#include "tests/unit/harness.h"

typedef struct TestRepo {
    char *base;     /* temporary directory */
    char *location; /* the repository inside it */
    CsKeySource key;
    CsRepo *repo; /* open */
} TestRepo;

/* `what` names the temporary directory; `passphrase` must outlive the TestRepo. A repository
 * of an older format (`version`, 0 for the newest) is written as that version. */
static inline void test_repo_create_version(TestRepo *t, const char *what, const char *passphrase,
                                            uint32_t version)
{
    t->base = test_mkdtemp(what);
    t->location = path_join(t->base, "repo");
    assert_non_null(t->location);
    t->key = (CsKeySource){ .passphrase = passphrase, .passphrase_len = strlen(passphrase) };
    CsInitParams params = { .scrypt_n = 1024, .config = { .format_version = version } };
    ASSERT_OK(cs_repo_init(t->location, &params, &t->key));
    ASSERT_OK(cs_repo_open(t->location, NULL, &t->key, &t->repo));
    if (version)
        assert_int_equal(t->repo->config.format_version, version);
}

static inline void test_repo_create(TestRepo *t, const char *what, const char *passphrase)
{
    test_repo_create_version(t, what, passphrase, 0);
}

static inline void test_repo_destroy(TestRepo *t)
{
    cs_repo_close(t->repo);
    test_rm_rf(t->base);
    free(t->location);
    free(t->base);
}
