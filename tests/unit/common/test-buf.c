/*
 * common/buf (growable buffer, little-endian appends, bounded cursor), common/hex and the
 * whole-file helpers of common/fs-util (write_file_atomic, read_file), common/out-buf and common/parse.
 */
#include "tests/unit/harness.h"

#include <dirent.h>
#include <limits.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/fs-util.h"
#include "common/hex.h"
#include "common/macro.h"
#include "common/out-buf.h"
#include "common/parse.h"

/* --- helpers --- */

static size_t count_dir_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

/* --- Buf --- */

static void test_buf_init_and_free(void **state)
{
    (void)state;
    Buf b = BUF_INIT;
    assert_null(b.data);
    assert_int_equal(b.size, 0);
    assert_int_equal(b.capacity, 0);
    buf_free(&b); /* freeing an empty buffer is fine */
    assert_null(b.data);

    ASSERT_OK(buf_append(&b, NULL, 0)); /* nothing to append: no allocation needed */
    assert_int_equal(b.size, 0);
    ASSERT_OK(buf_append(&b, "x", 1));
    assert_non_null(b.data);
    buf_free(&b);
    assert_null(b.data);
    assert_int_equal(b.size, 0);
    assert_int_equal(b.capacity, 0);
    /* buf_free is usable as a cleanup function */
    {
        _cleanup_(buf_free) Buf c = BUF_INIT;
        ASSERT_OK(buf_append(&c, "abc", 3));
    }
}

static void test_buf_growth(void **state)
{
    (void)state;
    Buf b = BUF_INIT;
    size_t reallocs = 0;
    const uint8_t *last = NULL;

    /* Byte by byte: contents stay right across every reallocation. */
    for (size_t i = 0; i < 100000; i++) {
        uint8_t v = (uint8_t)(i * 7 + 3);
        ASSERT_OK(buf_append(&b, &v, 1));
        assert_int_equal(b.size, i + 1);
        assert_true(b.capacity >= b.size);
        if (b.data != last) {
            reallocs++;
            last = b.data;
        }
    }
    for (size_t i = 0; i < b.size; i++)
        if (b.data[i] != (uint8_t)(i * 7 + 3))
            fail_msg("byte %zu is %u", i, b.data[i]);
    /* Growth is geometric: far fewer reallocations than appends. */
    assert_true(reallocs < 64);

    /* Reserve makes room without changing the size. */
    size_t size = b.size;
    ASSERT_OK(buf_reserve(&b, 1 << 20));
    assert_int_equal(b.size, size);
    assert_true(b.capacity >= size + (1 << 20));
    uint8_t *before = b.data;
    ASSERT_OK(buf_reserve(&b, 10)); /* already there: no reallocation */
    assert_ptr_equal(b.data, before);
    ASSERT_OK(buf_reserve(&b, 0));

    /* An impossible reservation fails cleanly and leaves the buffer intact. */
    ASSERT_ERR(ENOMEM, buf_reserve(&b, SIZE_MAX));
    ASSERT_ERR(ENOMEM, buf_reserve(&b, SIZE_MAX - b.size + 1));
    assert_null(buf_extend(&b, SIZE_MAX));
    assert_int_equal(b.size, size);
    assert_int_equal(b.data[size - 1], (uint8_t)((size - 1) * 7 + 3));

    /* Clear keeps the allocation. */
    size_t cap = b.capacity;
    buf_clear(&b);
    assert_int_equal(b.size, 0);
    assert_int_equal(b.capacity, cap);
    ASSERT_OK(buf_append(&b, "hello", 5));
    assert_memory_equal(b.data, "hello", 5);
    buf_free(&b);
}

static void test_buf_extend_and_append(void **state)
{
    (void)state;
    _cleanup_(buf_free) Buf b = BUF_INIT;

    uint8_t *p = buf_extend(&b, 3);
    assert_non_null(p);
    assert_ptr_equal(p, b.data);
    memcpy(p, "abc", 3);
    p = buf_extend(&b, 0);
    assert_non_null(p);
    assert_ptr_equal(p, b.data + 3);
    assert_int_equal(b.size, 3);
    p = buf_extend(&b, 1000);
    assert_non_null(p);
    assert_ptr_equal(p, b.data + 3);
    assert_int_equal(b.size, 1003);
    memset(p, 'z', 1000);
    ASSERT_OK(buf_append(&b, "END", 3));
    assert_int_equal(b.size, 1006);
    assert_memory_equal(b.data, "abc", 3);
    assert_int_equal(b.data[3], 'z');
    assert_int_equal(b.data[1002], 'z');
    assert_memory_equal(b.data + 1003, "END", 3);

    /* A large single append. */
    size_t big = 3u << 20;
    uint8_t *src = malloc(big);
    assert_non_null(src);
    for (size_t i = 0; i < big; i++)
        src[i] = (uint8_t)(i >> 3);
    ASSERT_OK(buf_append(&b, src, big));
    assert_int_equal(b.size, 1006 + big);
    assert_memory_equal(b.data + 1006, src, big);
    free(src);
}

static void test_buf_le_encodings(void **state)
{
    (void)state;
    _cleanup_(buf_free) Buf b = BUF_INIT;

    ASSERT_OK(buf_append_le16(&b, 0x1234));
    ASSERT_OK(buf_append_le32(&b, 0x01020304u));
    ASSERT_OK(buf_append_le64(&b, UINT64_C(0x0a0b0c0d0e0f1011)));
    ASSERT_OK(buf_append_le16(&b, 0xffff));
    ASSERT_OK(buf_append_le32(&b, 0));
    ASSERT_OK(buf_append_le64(&b, UINT64_MAX));
    ASSERT_OK(buf_append_le64(&b, 1));
    static const uint8_t expect[] = {
        0x34, 0x12,                                     /* le16 */
        0x04, 0x03, 0x02, 0x01,                         /* le32 */
        0x11, 0x10, 0x0f, 0x0e, 0x0d, 0x0c, 0x0b, 0x0a, /* le64 */
        0xff, 0xff,                                     /* le16 max */
        0x00, 0x00, 0x00, 0x00,                         /* le32 zero */
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, /* le64 max */
        0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* le64 one */
    };
    assert_int_equal(b.size, sizeof(expect));
    assert_memory_equal(b.data, expect, sizeof(expect));

    /* ...and the cursor reads the same values back. */
    Cursor c = cursor_make(b.data, b.size);
    uint16_t v16;
    uint32_t v32;
    uint64_t v64;
    ASSERT_OK(cursor_le16(&c, &v16));
    assert_int_equal(v16, 0x1234);
    ASSERT_OK(cursor_le32(&c, &v32));
    assert_int_equal(v32, 0x01020304u);
    ASSERT_OK(cursor_le64(&c, &v64));
    assert_true(v64 == UINT64_C(0x0a0b0c0d0e0f1011));
    ASSERT_OK(cursor_le16(&c, &v16));
    assert_int_equal(v16, 0xffff);
    ASSERT_OK(cursor_le32(&c, &v32));
    assert_int_equal(v32, 0);
    ASSERT_OK(cursor_le64(&c, &v64));
    assert_true(v64 == UINT64_MAX);
    ASSERT_OK(cursor_le64(&c, &v64));
    assert_true(v64 == 1);
    assert_int_equal(c.left, 0);
    ASSERT_ERR(EBADMSG, cursor_le16(&c, &v16));
}

/* --- Cursor --- */

static void test_cursor_reads(void **state)
{
    (void)state;
    static const uint8_t data[] = { 0x7f, 0x01, 0x02, 'a', 'b', 'c', 'd', 0xaa, 0xbb };
    Cursor c = cursor_make(data, sizeof(data));
    uint8_t u8;
    const uint8_t *p;
    char out[4];

    ASSERT_OK(cursor_u8(&c, &u8));
    assert_int_equal(u8, 0x7f);
    assert_int_equal(c.left, sizeof(data) - 1);
    uint16_t v16;
    ASSERT_OK(cursor_le16(&c, &v16));
    assert_int_equal(v16, 0x0201);
    ASSERT_OK(cursor_bytes(&c, 2, &p));
    assert_ptr_equal(p, data + 3); /* no copy: points into the buffer */
    assert_memory_equal(p, "ab", 2);
    ASSERT_OK(cursor_copy(&c, out, 2));
    assert_memory_equal(out, "cd", 2);
    ASSERT_OK(cursor_bytes(&c, 0, &p)); /* empty reads always succeed */
    ASSERT_OK(cursor_copy(&c, out, 0));
    assert_int_equal(c.left, 2);
    ASSERT_OK(cursor_bytes(&c, 2, &p));
    assert_int_equal(p[0], 0xaa);
    assert_int_equal(c.left, 0);
    ASSERT_OK(cursor_bytes(&c, 0, &p));
}

/* Every read type, at every length shorter than it needs, returns -EBADMSG and consumes nothing,
 * so a smaller read afterwards still sees the same bytes. */
static void test_cursor_short_reads(void **state)
{
    (void)state;
    static const uint8_t data[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
    uint8_t u8;
    uint16_t v16;
    uint32_t v32;
    uint64_t v64;
    const uint8_t *p;
    uint8_t out[16];

    for (size_t avail = 0; avail <= 8; avail++) {
        Cursor c = cursor_make(data, avail);
        if (avail < 1)
            ASSERT_ERR(EBADMSG, cursor_u8(&c, &u8));
        if (avail < 2)
            ASSERT_ERR(EBADMSG, cursor_le16(&c, &v16));
        if (avail < 4)
            ASSERT_ERR(EBADMSG, cursor_le32(&c, &v32));
        if (avail < 8)
            ASSERT_ERR(EBADMSG, cursor_le64(&c, &v64));
        ASSERT_ERR(EBADMSG, cursor_bytes(&c, avail + 1, &p));
        ASSERT_ERR(EBADMSG, cursor_copy(&c, out, avail + 1));
        ASSERT_ERR(EBADMSG, cursor_bytes(&c, SIZE_MAX, &p));
        /* Nothing was consumed. */
        assert_int_equal(c.left, avail);
        assert_ptr_equal(c.p, data);
        if (avail > 0) {
            ASSERT_OK(cursor_u8(&c, &u8));
            assert_int_equal(u8, 1);
        }
    }

    /* A short read in the middle of a stream. */
    Cursor c = cursor_make(data, 7);
    ASSERT_OK(cursor_le32(&c, &v32));
    assert_int_equal(v32, 0x04030201);
    ASSERT_ERR(EBADMSG, cursor_le32(&c, &v32));
    assert_int_equal(c.left, 3);
    ASSERT_OK(cursor_le16(&c, &v16));
    assert_int_equal(v16, 0x0605);
    ASSERT_ERR(EBADMSG, cursor_le16(&c, &v16));
    ASSERT_OK(cursor_u8(&c, &u8));
    assert_int_equal(u8, 7);
    ASSERT_ERR(EBADMSG, cursor_u8(&c, &u8));

    /* A zero-length cursor over NULL. */
    Cursor e = cursor_make(NULL, 0);
    ASSERT_ERR(EBADMSG, cursor_u8(&e, &u8));
    ASSERT_OK(cursor_bytes(&e, 0, &p));
}

/* --- hex --- */

static void test_hex_encode(void **state)
{
    (void)state;
    char out[64];
    static const uint8_t v[] = { 0x00, 0x01, 0x7f, 0x80, 0xab, 0xcd, 0xef, 0xff };

    hex_encode(v, sizeof(v), out);
    assert_string_equal(out, "00017f80abcdefff");
    memset(out, 'x', sizeof(out));
    hex_encode(v, 0, out);
    assert_string_equal(out, "");
    memset(out, 'x', sizeof(out));
    hex_encode(v + 4, 1, out);
    assert_string_equal(out, "ab");
    assert_int_equal(out[3], 'x'); /* exactly 2*n + 1 bytes written */

    /* Every byte value round-trips. */
    uint8_t all[256], back[256];
    char hex[513];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    hex_encode(all, sizeof(all), hex);
    assert_int_equal(strlen(hex), 512);
    for (size_t i = 0; i < 512; i++)
        assert_true((hex[i] >= '0' && hex[i] <= '9') || (hex[i] >= 'a' && hex[i] <= 'f'));
    ASSERT_OK(hex_decode(hex, back, sizeof(back)));
    assert_memory_equal(back, all, sizeof(all));
}

static void test_hex_decode(void **state)
{
    (void)state;
    uint8_t out[8];

    ASSERT_OK(hex_decode("00017f80abcdefff", out, 8));
    static const uint8_t expect[] = { 0x00, 0x01, 0x7f, 0x80, 0xab, 0xcd, 0xef, 0xff };
    assert_memory_equal(out, expect, 8);
    ASSERT_OK(hex_decode("ABCDEF", out, 3)); /* upper case is hex too */
    assert_int_equal(out[0], 0xab);
    assert_int_equal(out[1], 0xcd);
    assert_int_equal(out[2], 0xef);
    ASSERT_OK(hex_decode("", out, 0));

    /* Wrong lengths: exactly 2*n digits are required. */
    ASSERT_ERR(EINVAL, hex_decode("abc", out, 2));
    ASSERT_ERR(EINVAL, hex_decode("abcdef", out, 2));
    ASSERT_ERR(EINVAL, hex_decode("ab", out, 2));
    ASSERT_ERR(EINVAL, hex_decode("", out, 1));
    ASSERT_ERR(EINVAL, hex_decode("a", out, 0));
    /* Non-hex characters anywhere. */
    static const char *const bad[] = { "0g", "g0", "zz", " 1", "1 ", "0x", "-1", "+1", "\t0",
                                       "1\n", ":0", "@A", "`a", "/0", "G0", "0G" };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
        if (hex_decode(bad[i], out, 1) != -EINVAL)
            fail_msg("hex_decode(\"%s\") accepted invalid input", bad[i]);
    ASSERT_ERR(EINVAL, hex_decode("0011223344556x77", out, 8));
    ASSERT_ERR(EINVAL, hex_decode("\xc3\xa9", out, 1));
}

/* --- fs-util --- */

static void test_write_read_file(void **state)
{
    (void)state;
    _cleanup_free_ char *dir = test_mkdtemp("buf");
    _cleanup_free_ char *path = path_join(dir, "file");
    assert_non_null(path);
    char *data = NULL;
    size_t n = 0;

    ASSERT_ERR(ENOENT, read_file(path, 1024, &data, &n));

    ASSERT_OK(write_file_atomic(path, "hello\0world", 11, 0600));
    ASSERT_OK(read_file(path, 1024, &data, &n));
    assert_int_equal(n, 11);
    assert_memory_equal(data, "hello\0world", 11);
    assert_int_equal(data[11], '\0'); /* NUL-terminated for convenience */
    free(data);
    data = NULL;
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(st.st_size, 11);

    /* Replacing keeps exactly the new contents (shorter than before). */
    ASSERT_OK(write_file_atomic(path, "bye", 3, 0600));
    ASSERT_OK(read_file(path, 1024, &data, &n));
    assert_int_equal(n, 3);
    assert_string_equal(data, "bye");
    free(data);
    data = NULL;

    /* ret_n is optional. */
    ASSERT_OK(read_file(path, 1024, &data, NULL));
    assert_string_equal(data, "bye");
    free(data);
    data = NULL;

    /* Empty files. */
    ASSERT_OK(write_file_atomic(path, "", 0, 0600));
    ASSERT_OK(read_file(path, 0, &data, &n));
    assert_int_equal(n, 0);
    assert_string_equal(data, "");
    free(data);
    data = NULL;

    /* The size limit: exactly max is fine, one more is -EFBIG. */
    ASSERT_OK(write_file_atomic(path, "0123456789", 10, 0600));
    ASSERT_OK(read_file(path, 10, &data, &n));
    assert_int_equal(n, 10);
    free(data);
    data = NULL;
    ASSERT_ERR(EFBIG, read_file(path, 9, &data, &n));
    assert_null(data);

    /* A large file. */
    size_t big = 5u << 20;
    uint8_t *src = malloc(big);
    assert_non_null(src);
    for (size_t i = 0; i < big; i++)
        src[i] = (uint8_t)(i * 31 >> 2);
    ASSERT_OK(write_file_atomic(path, src, big, 0644));
    ASSERT_OK(read_file(path, big, &data, &n));
    assert_int_equal(n, big);
    assert_memory_equal(data, src, big);
    free(data);
    data = NULL;
    free(src);

    /* No temporary files are left behind. */
    assert_int_equal(count_dir_entries(dir), 1);

    /* Reading a directory or writing into a missing one fails with an errno. */
    assert_true(read_file(dir, 1024, &data, &n) < 0);
    _cleanup_free_ char *missing = path_join(dir, "no/such/file");
    assert_non_null(missing);
    ASSERT_ERR(ENOENT, write_file_atomic(missing, "x", 1, 0600));
    assert_int_equal(count_dir_entries(dir), 1);

    test_rm_rf(dir);
}

static void test_write_file_atomic_mode(void **state)
{
    (void)state;
    _cleanup_free_ char *dir = test_mkdtemp("buf");
    _cleanup_free_ char *path = path_join(dir, "cfg");
    assert_non_null(path);
    struct stat st;

    mode_t old = umask(022);
    ASSERT_OK(write_file_atomic(path, "a", 1, 0640));
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0640);
    assert_true(S_ISREG(st.st_mode));
    umask(old);

    /* Replacing is atomic: the path is always a complete file (a new inode, not rewritten). */
    ino_t ino = st.st_ino;
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    ASSERT_OK(write_file_atomic(path, "bb", 2, 0600));
    char c[4] = { 0 };
    assert_int_equal(read(fd, c, sizeof(c)), 1); /* an open reader keeps the old contents */
    assert_int_equal(c[0], 'a');
    close(fd);
    assert_int_equal(stat(path, &st), 0);
    assert_int_not_equal(st.st_ino, ino);
    assert_int_equal(st.st_size, 2);
    assert_int_equal(count_dir_entries(dir), 1);

    test_rm_rf(dir);
}

/* --- OutBuf --- */

/* Pieces smaller and larger than the buffer, a large piece on an empty buffer (written
 * without a copy), holes, and a start offset: the file holds each piece at its place, holes
 * read as zeros and stay unallocated, and nothing is written twice. */
static void test_out_buf_positional(void **state)
{
    (void)state;
    _cleanup_free_ char *dir = test_mkdtemp("outbuf");
    _cleanup_free_ char *path = path_join(dir, "f");
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    enum { CAP = 4096, START = 100, TOTAL = START + (64 << 10) + (1 << 20) };
    uint8_t *want = calloc(1, TOTAL), *piece = malloc(3 * CAP);
    assert_non_null(want);
    assert_non_null(piece);
    OutBuf o;
    ASSERT_OK(out_buf_init(&o, fd, true, START, CAP));
    uint64_t off = START;
    size_t sizes[] = { 10, 1000, 3000, 3 * CAP, CAP / 4 + 100, 1, 0, 4095 };
    for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
        for (size_t k = 0; k < sizes[i]; k++)
            piece[k] = (uint8_t)(i * 31 + k);
        ASSERT_OK(out_buf_add(&o, piece, sizes[i]));
        memcpy(want + off, piece, sizes[i]);
        off += sizes[i];
        if (i == 2) {
            ASSERT_OK(out_buf_skip(&o, 1 << 20)); /* a hole of 1 MiB */
            off += 1 << 20;
        }
    }
    assert_int_equal(o.off + o.len, off);
    ASSERT_OK(out_buf_flush(&o));
    assert_int_equal(o.len, 0);
    out_buf_done(&o);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal(st.st_size, off);
    uint8_t *got = malloc(off);
    assert_non_null(got);
    assert_int_equal(pread(fd, got, off, 0), (ssize_t)off);
    assert_memory_equal(got, want, off);
    /* The hole is not allocated: the file uses less than its size. */
    assert_true((uint64_t)st.st_blocks * 512 < off);
    close(fd);
    free(got);
    free(want);
    free(piece);
    test_rm_rf(dir);
}

/* Stream mode appends with write(2), so it works on a pipe. */
static void test_out_buf_stream(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    OutBuf o;
    ASSERT_OK(out_buf_init(&o, p[1], false, 0, 8));
    ASSERT_OK(out_buf_add(&o, "hello ", 6));
    ASSERT_OK(out_buf_add(&o, "pipe", 4));     /* flushes "hello " first */
    ASSERT_OK(out_buf_add(&o, " and more", 9)); /* larger than the buffer */
    ASSERT_OK(out_buf_flush(&o));
    out_buf_done(&o);
    close(p[1]);
    char got[64] = { 0 };
    size_t n = 0;
    ASSERT_OK(read_full(p[0], got, sizeof(got), &n));
    close(p[0]);
    assert_int_equal(n, 19);
    assert_string_equal(got, "hello pipe and more");
}

/* --- parse_unsigned --- */

static void test_parse_unsigned(void **state)
{
    (void)state;
    unsigned long long v = 7;
    ASSERT_OK(parse_unsigned("0", 0, 10, &v));
    assert_int_equal(v, 0);
    ASSERT_OK(parse_unsigned("65535", 1, 65535, &v));
    assert_int_equal(v, 65535);
    ASSERT_OK(parse_unsigned("18446744073709551615", 0, ULLONG_MAX, &v));
    assert_true(v == ULLONG_MAX);
    v = 7;
    static const char *const bad[] = { "", " 1", "+1", "-1", "1 ", "1k", "0x10", "65536", "0",
                                       "18446744073709551616" };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
        ASSERT_ERR(EINVAL, parse_unsigned(bad[i], 1, 65535, &v));
    ASSERT_ERR(EINVAL, parse_unsigned("18446744073709551616", 0, ULLONG_MAX, &v));
    assert_int_equal(v, 7); /* untouched on failure */
}

RUN_TESTS(cmocka_unit_test(test_buf_init_and_free), cmocka_unit_test(test_buf_growth),
          cmocka_unit_test(test_buf_extend_and_append), cmocka_unit_test(test_buf_le_encodings),
          cmocka_unit_test(test_cursor_reads), cmocka_unit_test(test_cursor_short_reads),
          cmocka_unit_test(test_hex_encode), cmocka_unit_test(test_hex_decode),
          cmocka_unit_test(test_write_read_file), cmocka_unit_test(test_write_file_atomic_mode),
          cmocka_unit_test(test_out_buf_positional), cmocka_unit_test(test_out_buf_stream),
          cmocka_unit_test(test_parse_unsigned))
