/*
 * Unit-test harness on top of cmocka. A test file defines static test functions and ends with
 * RUN_TESTS(...). Helpers here compare errno-style returns and locate shared test data.
 */
#pragma once

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#define ASSERT_OK(expr)                                                                            \
    do {                                                                                           \
        long _r_ = (long)(expr);                                                                   \
        if (_r_ < 0)                                                                               \
            fail_msg("%s failed: %s", #expr, strerror((int)-_r_));                                 \
    } while (0)

#define ASSERT_ERR(err, expr)                                                                      \
    do {                                                                                           \
        long _r_ = (long)(expr);                                                                   \
        if (_r_ != -(long)(err))                                                                   \
            fail_msg("%s returned %ld, expected -%s", #expr, _r_, #err);                           \
    } while (0)

#define RUN_TESTS(...)                                                                             \
    int main(void)                                                                                 \
    {                                                                                              \
        const struct CMUnitTest tests[] = { __VA_ARGS__ };                                         \
        return cmocka_run_group_tests(tests, NULL, NULL);                                          \
    }

/* Directory holding the project's test data (tests/data), from $PITR_TEST_DATA or the source
 * tree relative to the working directory `make check` runs in. */
static inline const char *test_data_dir(void)
{
    const char *d = getenv("PITR_TEST_DATA");
    return d ? d : "tests/data";
}

static inline void *test_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    assert_non_null(p);
    return p;
}

/* The whole file `name` from the test data directory (malloc'd, never empty); fails the test
 * when it cannot be read. */
static inline uint8_t *test_read_data_file(const char *name, size_t *ret_len)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", test_data_dir(), name);
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("could not open \"%s\": %s", path, strerror(errno));
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long len = ftell(f);
    assert_true(len > 0);
    assert_int_equal(fseek(f, 0, SEEK_SET), 0);
    uint8_t *b = test_xmalloc((size_t)len);
    assert_int_equal(fread(b, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *ret_len = (size_t)len;
    return b;
}

/* A new empty directory /tmp/pitrfs-test-<what>-XXXXXX; the caller frees the string. */
static inline char *test_mkdtemp(const char *what)
{
    char *d = NULL;
    assert_true(asprintf(&d, "/tmp/pitrfs-test-%s-XXXXXX", what) > 0);
    assert_non_null(mkdtemp(d));
    return d;
}

static inline int test_rm_entry(const char *path, const struct stat *st, int flag,
                                struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* rm -rf, for cleaning up what a test made. */
static inline void test_rm_rf(const char *path)
{
    nftw(path, test_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}
