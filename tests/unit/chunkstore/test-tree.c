/*
 * chunkstore/tree: the directory object codec (round trips, names that would escape their
 * directory, truncated and corrupted objects), and whole trees stored and restored through a
 * real repository (contents, modes, symlinks, fifos, mtimes, page files, exclusions), path
 * lookup and restore-target checks.
 */
#include "tests/unit/harness.h"
#include "tests/unit/test-repo.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chunkstore/crypto.h"
#include "chunkstore/tree.h"
#include "common/buf.h"
#include "common/endian.h"
#include "common/fs-util.h"
#include "common/macro.h"

#define PASSPHRASE "tree test passphrase"

/* --- helpers --- */

static void entry_free(CsDirEntry *e)
{
    free(e->name);
    free(e->target);
    cs_content_ref_free(&e->content);
    *e = (CsDirEntry){ 0 };
}

static CsContentRef make_ref(uint32_t count, uint8_t level)
{
    CsContentRef r = { .level = level, .count = count };
    r.entries = test_xmalloc(count * sizeof(*r.entries));
    for (uint32_t i = 0; i < count; i++) {
        ASSERT_OK(cs_random_bytes(r.entries[i].id.bytes, CS_CHUNK_ID_SIZE));
        r.entries[i].offset = 0;
        r.entries[i].length = 4096 + i;
        r.size += r.entries[i].length;
    }
    return r;
}

static void assert_entry_equal(const CsDirEntry *a, const CsDirEntry *b)
{
    assert_int_equal(a->type, b->type);
    assert_int_equal(a->flags, b->flags);
    assert_int_equal(a->mode, b->mode);
    assert_int_equal(a->uid, b->uid);
    assert_int_equal(a->gid, b->gid);
    assert_true(a->mtime_sec == b->mtime_sec);
    assert_int_equal(a->mtime_nsec, b->mtime_nsec);
    assert_int_equal(a->size, b->size);
    assert_int_equal(a->rdev, b->rdev);
    assert_string_equal(a->name, b->name);
    if (a->type == CS_ENTRY_SYMLINK)
        assert_string_equal(a->target, b->target);
    if (a->type == CS_ENTRY_FILE || a->type == CS_ENTRY_DIR) {
        assert_int_equal(a->content.size, b->content.size);
        assert_int_equal(a->content.level, b->content.level);
        assert_int_equal(a->content.count, b->content.count);
        for (uint32_t i = 0; i < a->content.count; i++) {
            assert_memory_equal(a->content.entries[i].id.bytes, b->content.entries[i].id.bytes,
                                CS_CHUNK_ID_SIZE);
            assert_int_equal(a->content.entries[i].length, b->content.entries[i].length);
        }
    }
}

/* Four entries of every type, sorted by name. */
static void sample_entries(CsDirEntry v[4])
{
    v[0] = (CsDirEntry){ .type = CS_ENTRY_DIR,
                         .mode = S_IFDIR | 0750,
                         .uid = 1000,
                         .gid = 100,
                         .mtime_sec = -5, /* before the epoch */
                         .mtime_nsec = 999999999,
                         .name = strdup("dir"),
                         .content = make_ref(2, 0) };
    v[1] = (CsDirEntry){ .type = CS_ENTRY_FILE,
                         .flags = CS_ENTRY_FLAG_PAGES,
                         .mode = S_IFREG | 04755,
                         .uid = UINT32_MAX,
                         .gid = 0,
                         .mtime_sec = INT64_MAX,
                         .mtime_nsec = 1,
                         .size = 8193,
                         .name = strdup("file \xc3\xa9 with spaces"),
                         .content = make_ref(3, 1) };
    v[2] = (CsDirEntry){ .type = CS_ENTRY_SYMLINK,
                         .mode = S_IFLNK | 0777,
                         .mtime_sec = 1700000000,
                         .size = 4,
                         .name = strdup("link"),
                         .target = strdup("../x") };
    v[3] = (CsDirEntry){ .type = CS_ENTRY_SPECIAL,
                         .mode = S_IFCHR | 0600,
                         .rdev = UINT64_C(0x0123456789abcdef),
                         .name = strdup("zz-device") };
}

static void free_entries(CsDirEntry *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        entry_free(&v[i]);
}

/* --- the directory codec --- */

static void test_dir_roundtrip(void **state)
{
    (void)state;
    CsDirEntry v[4];
    sample_entries(v);
    _cleanup_(buf_free) Buf enc = BUF_INIT;
    ASSERT_OK(cs_dir_encode(v, 4, &enc));
    assert_int_equal(get_le32(enc.data), CS_DIR_MAGIC);
    assert_int_equal(get_le32(enc.data + 4), 4);

    CsDirEntry *back = NULL;
    size_t n = 0;
    ASSERT_OK(cs_dir_decode(enc.data, enc.size, &back, &n));
    assert_int_equal(n, 4);
    for (size_t i = 0; i < 4; i++)
        assert_entry_equal(&v[i], &back[i]);
    cs_dir_entries_free(back, n);

    /* Encoding appends. */
    _cleanup_(buf_free) Buf two = BUF_INIT;
    ASSERT_OK(buf_append(&two, "xy", 2));
    ASSERT_OK(cs_dir_encode(v, 4, &two));
    assert_int_equal(two.size, enc.size + 2);
    assert_memory_equal(two.data + 2, enc.data, enc.size);

    /* An empty directory. */
    buf_clear(&enc);
    ASSERT_OK(cs_dir_encode(NULL, 0, &enc));
    ASSERT_OK(cs_dir_decode(enc.data, enc.size, &back, &n));
    assert_int_equal(n, 0);
    cs_dir_entries_free(back, n);
    cs_dir_entries_free(NULL, 0);

    /* Long names and targets. */
    char name[256], target[4000];
    memset(name, 'n', sizeof(name) - 1);
    name[sizeof(name) - 1] = 0;
    memset(target, 't', sizeof(target) - 1);
    target[sizeof(target) - 1] = 0;
    CsDirEntry l = { .type = CS_ENTRY_SYMLINK, .name = name, .target = target };
    buf_clear(&enc);
    ASSERT_OK(cs_dir_encode(&l, 1, &enc));
    ASSERT_OK(cs_dir_decode(enc.data, enc.size, &back, &n));
    assert_int_equal(n, 1);
    assert_string_equal(back[0].name, name);
    assert_string_equal(back[0].target, target);
    cs_dir_entries_free(back, n);

    free_entries(v, 4);
}

/* Encode one entry named `name` of `type` and expect the decoder to refuse it. */
static void expect_rejected(const char *name, uint8_t type)
{
    CsDirEntry e = { .type = type, .mode = 0644, .name = (char *)(uintptr_t)name };
    if (type == CS_ENTRY_SYMLINK)
        e.target = (char *)(uintptr_t) "t";
    _cleanup_(buf_free) Buf enc = BUF_INIT;
    ASSERT_OK(cs_dir_encode(&e, 1, &enc));
    CsDirEntry *back = NULL;
    size_t n = 0;
    int r = cs_dir_decode(enc.data, enc.size, &back, &n);
    if (r == 0) {
        cs_dir_entries_free(back, n);
        fail_msg("directory entry \"%s\" of type %u was accepted", name, type);
    }
    assert_int_equal(r, -EBADMSG);
}

static void test_dir_decode_rejects(void **state)
{
    (void)state;
    /* Names that would escape the directory or are not names at all. */
    static const char *const bad_names[] = { "a/b", "/", "/etc", "..", ".", "", "a/", "../x" };
    for (size_t i = 0; i < ARRAY_SIZE(bad_names); i++) {
        expect_rejected(bad_names[i], CS_ENTRY_SPECIAL);
        expect_rejected(bad_names[i], CS_ENTRY_SYMLINK);
    }
    /* Unknown types. */
    static const uint8_t bad_types[] = { 0, 5, 6, 0x80, 0xff };
    for (size_t i = 0; i < ARRAY_SIZE(bad_types); i++)
        expect_rejected("ok", bad_types[i]);

    /* Names that are fine. */
    static const char *const good[] = { "...", ".hidden", "a..b", "..a", "-", " " };
    for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
        CsDirEntry e = { .type = CS_ENTRY_SPECIAL, .name = (char *)(uintptr_t)good[i] };
        _cleanup_(buf_free) Buf enc = BUF_INIT;
        ASSERT_OK(cs_dir_encode(&e, 1, &enc));
        CsDirEntry *back = NULL;
        size_t n = 0;
        ASSERT_OK(cs_dir_decode(enc.data, enc.size, &back, &n));
        assert_string_equal(back[0].name, good[i]);
        cs_dir_entries_free(back, n);
    }

    CsDirEntry v[4];
    sample_entries(v);
    _cleanup_(buf_free) Buf enc = BUF_INIT, bad = BUF_INIT;
    ASSERT_OK(cs_dir_encode(v, 4, &enc));
    CsDirEntry *back = NULL;
    size_t n = 0;

    /* A NUL inside a name ("dir" -> "d\0r"): offset 8 (header) + 44 (fixed fields) + 1. */
    ASSERT_OK(buf_append(&bad, enc.data, enc.size));
    assert_memory_equal(bad.data + 8 + 44, "dir", 3);
    bad.data[8 + 44 + 1] = 0;
    ASSERT_ERR(EBADMSG, cs_dir_decode(bad.data, bad.size, &back, &n));
    /* A '/' patched into a name. */
    bad.data[8 + 44 + 1] = '/';
    ASSERT_ERR(EBADMSG, cs_dir_decode(bad.data, bad.size, &back, &n));
    /* Wrong magic. */
    buf_clear(&bad);
    ASSERT_OK(buf_append(&bad, enc.data, enc.size));
    bad.data[0] ^= 1;
    ASSERT_ERR(EBADMSG, cs_dir_decode(bad.data, bad.size, &back, &n));
    /* More entries announced than present, or fewer. */
    buf_clear(&bad);
    ASSERT_OK(buf_append(&bad, enc.data, enc.size));
    put_le32(bad.data + 4, 5);
    ASSERT_ERR(EBADMSG, cs_dir_decode(bad.data, bad.size, &back, &n));
    put_le32(bad.data + 4, 3);
    ASSERT_ERR(EBADMSG, cs_dir_decode(bad.data, bad.size, &back, &n));
    put_le32(bad.data + 4, UINT32_MAX);
    ASSERT_ERR(EBADMSG, cs_dir_decode(bad.data, bad.size, &back, &n));
    /* Trailing bytes. */
    buf_clear(&bad);
    ASSERT_OK(buf_append(&bad, enc.data, enc.size));
    ASSERT_OK(buf_append(&bad, "", 1));
    ASSERT_ERR(EBADMSG, cs_dir_decode(bad.data, bad.size, &back, &n));
    /* Nothing at all. */
    ASSERT_ERR(EBADMSG, cs_dir_decode(NULL, 0, &back, &n));

    /* Every truncation fails cleanly. */
    for (size_t len = 0; len < enc.size; len++) {
        _cleanup_free_ uint8_t *copy = test_xmalloc(len); /* exact size: overreads are caught */
        memcpy(copy, enc.data, len);
        int r = cs_dir_decode(copy, len, &back, &n);
        if (r == 0)
            cs_dir_entries_free(back, n);
        if (r != -EBADMSG)
            fail_msg("directory truncated to %zu of %zu bytes: decode returned %d", len,
                     enc.size, r);
    }

    /* Any single corrupted byte either decodes to something or fails cleanly. */
    size_t accepted = 0;
    _cleanup_free_ uint8_t *copy = test_xmalloc(enc.size);
    for (size_t i = 0; i < enc.size; i++) {
        static const uint8_t masks[] = { 0x01, 0x4b /* 'd' -> '/' */, 0x80, 0xff };
        for (size_t k = 0; k < ARRAY_SIZE(masks); k++) {
            memcpy(copy, enc.data, enc.size);
            copy[i] ^= masks[k];
            int r = cs_dir_decode(copy, enc.size, &back, &n);
            if (r == 0) {
                accepted++;
                for (size_t j = 0; j < n; j++) {
                    assert_non_null(back[j].name);
                    assert_true(back[j].name[0] != 0);
                    assert_null(strchr(back[j].name, '/'));
                    assert_true(strcmp(back[j].name, "..") != 0);
                    assert_true(strcmp(back[j].name, ".") != 0);
                }
                cs_dir_entries_free(back, n);
            } else {
                assert_int_equal(r, -EBADMSG);
            }
        }
    }
    printf("directory codec: %zu of %zu single-byte corruptions still decode (field values)\n",
           accepted, enc.size * 4);
    free_entries(v, 4);
}

/* --- whole trees --- */

typedef struct Fixture {
    TestRepo t;
    char *src;
    char *dst;
} Fixture;

static int setup(void **state)
{
    Fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    test_repo_create(&f->t, "tree", PASSPHRASE);
    f->src = path_join(f->t.base, "src");
    f->dst = path_join(f->t.base, "dst");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    Fixture *f = *state;
    test_repo_destroy(&f->t);
    free(f->src);
    free(f->dst);
    free(f);
    return 0;
}

static void write_file(const char *root, const char *rel, const void *p, size_t n, mode_t mode)
{
    _cleanup_free_ char *path = path_join(root, rel);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    ASSERT_OK(write_all(fd, p, n));
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

static void make_dir(const char *root, const char *rel, mode_t mode)
{
    _cleanup_free_ char *path = path_join(root, rel);
    assert_int_equal(mkdir(path, 0700), 0);
    assert_int_equal(chmod(path, mode), 0);
}

static void make_symlink(const char *root, const char *rel, const char *target)
{
    _cleanup_free_ char *path = path_join(root, rel);
    assert_int_equal(symlink(target, path), 0);
}

static size_t big_size = 300 * 1024 + 7;
static long mtime_counter;

static int set_mtime(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    if (ftw->level == 0)
        return 0;
    mtime_counter++;
    struct timespec ts[2] = { { .tv_sec = 1500000000, .tv_nsec = 0 },
                              { .tv_sec = 1600000000 + mtime_counter,
                                .tv_nsec = mtime_counter * 1000 + 123 } };
    return utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW);
}

/* The source tree. Directories get modes after their contents exist; mtimes last, deepest
 * first. Directory modes include ones without write permission. */
static void make_tree(const char *src)
{
    assert_int_equal(mkdir(src, 0755), 0);
    make_dir(src, "a", 0700);
    make_dir(src, "a/b", 0700);
    write_file(src, "a/b/file", "hello", 5, 0640);
    uint8_t *big = test_xmalloc(big_size);
    ASSERT_OK(cs_random_bytes(big, big_size));
    write_file(src, "a/big", big, big_size, 0600);
    free(big);
    write_file(src, "empty", "", 0, 0444);
    write_file(src, "exec", "#!/bin/sh\nexit 0\n", 17, 0755);
    write_file(src, "name with spaces \xc3\xa9", "x", 1, 0604);
    uint8_t *zero = calloc(1, 100000);
    assert_non_null(zero);
    write_file(src, "zeros", zero, 100000, 0644);
    free(zero);
    write_file(src, "excluded", "secret", 6, 0600);
    make_symlink(src, "link", "a/b/file");
    make_symlink(src, "dangling", "does/not/exist");
    make_symlink(src, "a/b/up", "../..");
    _cleanup_free_ char *fifo = path_join(src, "fifo");
    assert_int_equal(mkfifo(fifo, 0620), 0);
    assert_int_equal(chmod(fifo, 0620), 0);
    make_dir(src, "d1", 0755);
    make_dir(src, "d1/d2", 0755);
    make_dir(src, "d1/d2/d3", 0755);
    write_file(src, "d1/d2/d3/leaf", "leaf\n", 5, 0644);
    make_dir(src, "many", 0755);
    for (int i = 0; i < 150; i++) {
        char rel[64], content[64];
        snprintf(rel, sizeof(rel), "many/f%03d", i);
        int len = snprintf(content, sizeof(content), "file number %d\n", i);
        write_file(src, rel, content, (size_t)len, 0644);
    }
    make_dir(src, "emptydir", 0700);
    /* Modes without write permission, set once the contents exist. */
    _cleanup_free_ char *a = path_join(src, "a"), *ro = path_join(src, "emptydir");
    assert_int_equal(chmod(a, 0750), 0);
    assert_int_equal(chmod(ro, 0555), 0);
    mtime_counter = 0;
    assert_int_equal(nftw(src, set_mtime, 16, FTW_DEPTH | FTW_PHYS), 0);
}

/* Compare the trees under two roots, both ways. */
static const char *cmp_other_root;
static const char *cmp_this_root;
static bool cmp_full; /* compare everything, not just existence */
static const char *cmp_skip; /* relative path expected to be absent from the other tree */

static int compare_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)flag;
    if (ftw->level == 0)
        return 0;
    const char *rel = path + strlen(cmp_this_root) + 1;
    _cleanup_free_ char *other = path_join(cmp_other_root, rel);
    struct stat ost;
    if (cmp_skip && strcmp(rel, cmp_skip) == 0) {
        if (lstat(other, &ost) == 0)
            fail_msg("\"%s\" was excluded but exists in the copy", rel);
        return 0;
    }
    if (lstat(other, &ost) < 0)
        fail_msg("\"%s\" is missing from %s: %s", rel, cmp_other_root, strerror(errno));
    if (!cmp_full)
        return 0;
    if ((st->st_mode & S_IFMT) != (ost.st_mode & S_IFMT))
        fail_msg("\"%s\": type 0%o, restored 0%o", rel, st->st_mode & S_IFMT,
                 ost.st_mode & S_IFMT);
    if (!S_ISLNK(st->st_mode) && (st->st_mode & 07777) != (ost.st_mode & 07777))
        fail_msg("\"%s\": mode 0%o, restored 0%o", rel, st->st_mode & 07777,
                 ost.st_mode & 07777);
    if (st->st_mtim.tv_sec != ost.st_mtim.tv_sec || st->st_mtim.tv_nsec != ost.st_mtim.tv_nsec)
        fail_msg("\"%s\": mtime %lld.%09ld, restored %lld.%09ld", rel,
                 (long long)st->st_mtim.tv_sec, st->st_mtim.tv_nsec,
                 (long long)ost.st_mtim.tv_sec, ost.st_mtim.tv_nsec);
    if (st->st_uid != ost.st_uid || st->st_gid != ost.st_gid)
        fail_msg("\"%s\": owner %u:%u, restored %u:%u", rel, st->st_uid, st->st_gid,
                 ost.st_uid, ost.st_gid);
    if (S_ISLNK(st->st_mode)) {
        char a[PATH_MAX], b[PATH_MAX];
        ssize_t na = readlink(path, a, sizeof(a) - 1), nb = readlink(other, b, sizeof(b) - 1);
        assert_true(na >= 0 && nb >= 0);
        a[na] = 0;
        b[nb] = 0;
        if (strcmp(a, b) != 0)
            fail_msg("\"%s\": link to \"%s\", restored to \"%s\"", rel, a, b);
    }
    if (S_ISREG(st->st_mode)) {
        if (st->st_size != ost.st_size)
            fail_msg("\"%s\": size %lld, restored %lld", rel, (long long)st->st_size,
                     (long long)ost.st_size);
        char *a = NULL, *b = NULL;
        ASSERT_OK(read_file(path, 1 << 30, &a, NULL));
        ASSERT_OK(read_file(other, 1 << 30, &b, NULL));
        if (memcmp(a, b, (size_t)st->st_size) != 0)
            fail_msg("\"%s\": contents differ", rel);
        free(a);
        free(b);
    }
    return 0;
}

static void compare_trees(const char *src, const char *dst, const char *excluded)
{
    cmp_this_root = src;
    cmp_other_root = dst;
    cmp_full = true;
    cmp_skip = excluded;
    assert_int_equal(nftw(src, compare_one, 16, FTW_PHYS), 0);
    /* Nothing extra in the copy. */
    cmp_this_root = dst;
    cmp_other_root = src;
    cmp_full = false;
    cmp_skip = NULL;
    assert_int_equal(nftw(dst, compare_one, 16, FTW_PHYS), 0);
}

static bool page_file_cb(const char *relpath, const struct stat *st, void *userdata)
{
    (void)st;
    (*(int *)userdata)++;
    return strcmp(relpath, "a/big") == 0;
}

static bool exclude_cb(const char *relpath, const struct stat *st, void *userdata)
{
    (void)st;
    (void)userdata;
    return strcmp(relpath, "excluded") == 0;
}

static void store_tree(Fixture *f, CsContentRef *root, CsTreeStats *st, int *calls)
{
    CsWriter *w = NULL;
    CsWriterParams wp = { .threads = 2 };
    CsTreeParams tp = { .is_page_file = page_file_cb, .userdata = calls,
                        .is_excluded = exclude_cb };
    ASSERT_OK(cs_writer_new(f->t.repo, &wp, &w));
    *st = (CsTreeStats){ 0 };
    ASSERT_OK(cs_tree_store(w, f->src, &tp, root, st));
    ASSERT_OK(cs_writer_flush(w));
    cs_writer_free(w);
}

static void test_tree_store_restore(void **state)
{
    Fixture *f = *state;
    make_tree(f->src);
    CsContentRef root;
    CsTreeStats st;
    int page_calls = 0;
    store_tree(f, &root, &st, &page_calls);
    assert_int_equal(st.files, 157); /* file big empty exec spaces zeros leaf + 150 */
    assert_int_equal(page_calls, 157);
    assert_int_equal(st.page_files, 1);
    assert_int_equal(st.symlinks, 3);
    assert_int_equal(st.specials, 1);
    assert_true(st.dirs == 7 || st.dirs == 8); /* a a/b d1 d1/d2 d1/d2/d3 many emptydir (+root) */
    uint64_t many_bytes = 0;
    for (int i = 0; i < 150; i++)
        many_bytes += (uint64_t)snprintf(NULL, 0, "file number %d\n", i);
    assert_int_equal(st.bytes, 5 + big_size + 0 + 17 + 1 + 100000 + 5 + many_bytes);

    CsReader *rd = NULL;
    ASSERT_OK(cs_reader_new(f->t.repo, &rd));
    CsTreeStats rst = { 0 };
    CsRestoreParams rp = { 0 };
    ASSERT_OK(cs_tree_restore(rd, &root, f->dst, &rp, &rst));
    assert_int_equal(rst.files, st.files);
    assert_int_equal(rst.symlinks, st.symlinks);
    assert_int_equal(rst.specials, st.specials);
    assert_int_equal(rst.bytes, st.bytes);
    compare_trees(f->src, f->dst, "excluded");

    /* Same tree stored again: identical root reference (directories dedupe). */
    CsContentRef root2;
    CsTreeStats st2;
    store_tree(f, &root2, &st2, &page_calls);
    assert_int_equal(root2.size, root.size);
    assert_int_equal(root2.count, root.count);
    assert_memory_equal(root2.entries, root.entries, root.count * sizeof(*root.entries));
    cs_content_ref_free(&root2);

    /* Restore with overwrite allowed over the existing copy. */
    rp.is_overwrite_allowed = true;
    ASSERT_OK(cs_tree_restore(rd, &root, f->dst, &rp, NULL));
    compare_trees(f->src, f->dst, "excluded");

    /* Restore into a new, nested directory that does not exist yet. */
    _cleanup_free_ char *nested = path_join(f->t.base, "new/nested/dst");
    ASSERT_OK(cs_tree_restore(rd, &root, nested, NULL, NULL));
    compare_trees(f->src, nested, "excluded");

    /* One restore worker, and many; and the stored directory's own attributes. */
    _cleanup_free_ char *src_root = strdup(f->src);
    assert_int_equal(chmod(src_root, 0751), 0);
    struct timespec root_ts[2] = { { .tv_nsec = UTIME_OMIT },
                                   { .tv_sec = 1234567890, .tv_nsec = 987654321 } };
    assert_int_equal(utimensat(AT_FDCWD, src_root, root_ts, 0), 0);
    CsTreeRootAttr ra;
    ASSERT_OK(cs_tree_root_attr(f->src, &ra));
    assert_int_equal(ra.mode & 07777, 0751);
    assert_true(ra.mtime_sec == 1234567890);
    assert_int_equal(ra.mtime_nsec, 987654321);
    for (unsigned threads = 1; threads <= 9; threads += 8) {
        char rel[32];
        snprintf(rel, sizeof(rel), "dst-threads-%u", threads);
        _cleanup_free_ char *dst = path_join(f->t.base, rel);
        CsRestoreParams tp = { .threads = threads, .root_attr = threads == 1 ? &ra : NULL };
        memset(&rst, 0, sizeof(rst));
        ASSERT_OK(cs_tree_restore(rd, &root, dst, &tp, &rst));
        assert_int_equal(rst.files, st.files);
        assert_int_equal(rst.bytes, st.bytes);
        compare_trees(f->src, dst, "excluded");
        struct stat rs;
        assert_int_equal(stat(dst, &rs), 0);
        if (tp.root_attr) {
            assert_int_equal(rs.st_mode & 07777, 0751);
            assert_true(rs.st_mtim.tv_sec == 1234567890);
            assert_int_equal(rs.st_mtim.tv_nsec, 987654321);
        }
    }

    cs_reader_free(rd);
    cs_content_ref_free(&root);
}

static void test_tree_lookup(void **state)
{
    Fixture *f = *state;
    make_tree(f->src);
    CsContentRef root;
    CsTreeStats st;
    int calls = 0;
    store_tree(f, &root, &st, &calls);
    CsReader *rd = NULL;
    ASSERT_OK(cs_reader_new(f->t.repo, &rd));
    CsDirEntry e = { 0 };
    struct stat sst;
    _cleanup_free_ char *file_path = path_join(f->src, "a/b/file");
    assert_int_equal(lstat(file_path, &sst), 0);

    ASSERT_OK(cs_tree_lookup(rd, &root, "a/b/file", &e));
    assert_int_equal(e.type, CS_ENTRY_FILE);
    assert_string_equal(e.name, "file");
    assert_int_equal(e.size, 5);
    assert_int_equal(e.mode, sst.st_mode);
    assert_int_equal(e.uid, sst.st_uid);
    assert_true(e.mtime_sec == sst.st_mtim.tv_sec);
    assert_int_equal(e.mtime_nsec, sst.st_mtim.tv_nsec);
    assert_int_equal(e.flags, 0);
    _cleanup_(buf_free) Buf out = BUF_INIT;
    ASSERT_OK(cs_reader_read_all(rd, &e.content, 100, &out));
    assert_int_equal(out.size, 5);
    assert_memory_equal(out.data, "hello", 5);
    entry_free(&e);

    /* Slashes are separators, repeated or trailing ones included. */
    ASSERT_OK(cs_tree_lookup(rd, &root, "a//b/file/", &e));
    assert_string_equal(e.name, "file");
    entry_free(&e);

    ASSERT_OK(cs_tree_lookup(rd, &root, "a/big", &e));
    assert_int_equal(e.type, CS_ENTRY_FILE);
    assert_int_equal(e.flags, CS_ENTRY_FLAG_PAGES);
    assert_int_equal(e.size, big_size);
    CsContentRef flat;
    ASSERT_OK(cs_reader_flatten(rd, &e.content, &flat));
    /* Page blocks, stored in runs: every entry but the last is whole pages. */
    assert_true(flat.has_slices);
    for (uint32_t i = 0; i + 1 < flat.count; i++)
        assert_int_equal(flat.entries[i].length % f->t.repo->config.page_size, 0);
    cs_content_ref_free(&flat);
    entry_free(&e);

    ASSERT_OK(cs_tree_lookup(rd, &root, "a", &e));
    assert_int_equal(e.type, CS_ENTRY_DIR);
    assert_int_equal(e.mode & 07777, 0750);
    CsDirEntry *v = NULL;
    size_t n = 0;
    ASSERT_OK(cs_dir_load(rd, &e.content, &v, &n));
    assert_int_equal(n, 2);
    assert_string_equal(v[0].name, "b"); /* sorted by name */
    assert_string_equal(v[1].name, "big");
    cs_dir_entries_free(v, n);
    entry_free(&e);

    ASSERT_OK(cs_tree_lookup(rd, &root, "", &e));
    assert_int_equal(e.type, CS_ENTRY_DIR);
    ASSERT_OK(cs_dir_load(rd, &e.content, &v, &n));
    assert_int_equal(n, 11); /* 12 entries; "excluded" is not stored */
    for (size_t i = 1; i < n; i++)
        assert_true(strcmp(v[i - 1].name, v[i].name) < 0);
    cs_dir_entries_free(v, n);
    entry_free(&e);

    ASSERT_OK(cs_tree_lookup(rd, &root, "link", &e));
    assert_int_equal(e.type, CS_ENTRY_SYMLINK);
    assert_string_equal(e.target, "a/b/file");
    entry_free(&e);
    ASSERT_OK(cs_tree_lookup(rd, &root, "fifo", &e));
    assert_int_equal(e.type, CS_ENTRY_SPECIAL);
    assert_true(S_ISFIFO(e.mode));
    entry_free(&e);
    ASSERT_OK(cs_tree_lookup(rd, &root, "many/f149", &e));
    ASSERT_OK(cs_reader_read_all(rd, &e.content, 100, &out));
    entry_free(&e);
    ASSERT_OK(cs_tree_lookup(rd, &root, "d1/d2/d3/leaf", &e));
    entry_free(&e);

    ASSERT_ERR(ENOENT, cs_tree_lookup(rd, &root, "a/missing", &e));
    ASSERT_ERR(ENOENT, cs_tree_lookup(rd, &root, "missing/file", &e));
    ASSERT_ERR(ENOENT, cs_tree_lookup(rd, &root, "excluded", &e));
    ASSERT_ERR(ENOENT, cs_tree_lookup(rd, &root, "a/b/fil", &e));
    ASSERT_ERR(ENOTDIR, cs_tree_lookup(rd, &root, "a/b/file/x", &e));
    ASSERT_ERR(ENOTDIR, cs_tree_lookup(rd, &root, "link/x", &e));
    ASSERT_ERR(ENOTDIR, cs_tree_lookup(rd, &root, "fifo/x", &e));
    ASSERT_ERR(ENOTDIR, cs_tree_lookup(rd, &root, "empty/x/y", &e));

    cs_reader_free(rd);
    cs_content_ref_free(&root);
}

static void test_tree_restore_not_empty(void **state)
{
    Fixture *f = *state;
    assert_int_equal(mkdir(f->src, 0755), 0);
    write_file(f->src, "only", "1", 1, 0644);
    CsContentRef root;
    CsTreeStats st;
    int calls = 0;
    store_tree(f, &root, &st, &calls);
    CsReader *rd = NULL;
    ASSERT_OK(cs_reader_new(f->t.repo, &rd));

    /* A target holding anything, even a hidden file or an empty directory, is refused. */
    assert_int_equal(mkdir(f->dst, 0755), 0);
    write_file(f->dst, ".hidden", "x", 1, 0644);
    ASSERT_ERR(ENOTEMPTY, cs_tree_restore(rd, &root, f->dst, NULL, NULL));
    _cleanup_free_ char *hidden = path_join(f->dst, ".hidden");
    assert_int_equal(unlink(hidden), 0);
    make_dir(f->dst, "sub", 0755);
    ASSERT_ERR(ENOTEMPTY, cs_tree_restore(rd, &root, f->dst, NULL, NULL));
    /* ...and left untouched. */
    _cleanup_free_ char *only = path_join(f->dst, "only"), *sub = path_join(f->dst, "sub");
    struct stat sst;
    assert_int_equal(lstat(only, &sst), -1);
    assert_int_equal(rmdir(sub), 0);

    /* Empty: fine. */
    ASSERT_OK(cs_tree_restore(rd, &root, f->dst, NULL, NULL));
    compare_trees(f->src, f->dst, NULL);
    /* Now it is not empty. */
    ASSERT_ERR(ENOTEMPTY, cs_tree_restore(rd, &root, f->dst, NULL, NULL));

    /* A target that is a file. */
    _cleanup_free_ char *file_target = path_join(f->t.base, "a-file");
    write_file(f->t.base, "a-file", "x", 1, 0644);
    assert_true(cs_tree_restore(rd, &root, file_target, NULL, NULL) < 0);

    cs_reader_free(rd);
    cs_content_ref_free(&root);
}

/* Removes the entry it is asked about, after the walk has seen it but before it is opened or
 * read: the window in which a live directory (a PostgreSQL data directory with temporary files
 * and temporary directories) changes under the walk. */
static bool vanish_cb(const char *relpath, const struct stat *st, void *userdata)
{
    (void)st;
    const char *src = userdata;
    if (strncmp(relpath, "gone-", 5) != 0)
        return false;
    _cleanup_free_ char *path = path_join(src, relpath);
    if (strcmp(relpath, "gone-dir") == 0)
        assert_int_equal(rmdir(path), 0);
    else
        assert_int_equal(unlink(path), 0);
    return false;
}

static void store_with_vanishing(Fixture *f, int *ret, CsContentRef *root)
{
    CsWriter *w = NULL;
    CsTreeParams tp = { .is_excluded = vanish_cb, .userdata = f->src };
    ASSERT_OK(cs_writer_new(f->t.repo, NULL, &w));
    *root = (CsContentRef){ 0 };
    *ret = cs_tree_store(w, f->src, &tp, root, NULL);
    if (*ret == 0)
        ASSERT_OK(cs_writer_flush(w));
    cs_writer_free(w);
}

/*
 * docs/OPERATIONS.md: "A file that vanishes while the tree is read is skipped with a warning".
 * A regular file removed between the walk's stat and its open is skipped. A directory or a
 * symbolic link removed in the same window should be skipped the same way rather than fail the
 * whole store (PostgreSQL creates and removes temporary directories while it runs).
 */
static void test_tree_vanishing_entries(void **state)
{
    Fixture *f = *state;
    char failure[512] = "";
    static const char *const kinds[] = { "file", "dir", "link" };
    for (size_t k = 0; k < ARRAY_SIZE(kinds); k++) {
        test_rm_rf(f->src);
        assert_int_equal(mkdir(f->src, 0755), 0);
        write_file(f->src, "keep", "kept", 4, 0644);
        if (k == 0)
            write_file(f->src, "gone-file", "x", 1, 0644);
        else if (k == 1)
            make_dir(f->src, "gone-dir", 0755);
        else
            make_symlink(f->src, "gone-link", "keep");
        int r;
        CsContentRef root;
        store_with_vanishing(f, &r, &root);
        if (r < 0) {
            snprintf(failure + strlen(failure), sizeof(failure) - strlen(failure),
                     "a %s that vanished during the walk made cs_tree_store fail with %d (%s); ",
                     kinds[k], r, strerror(-r));
            continue;
        }
        CsReader *rd = NULL;
        ASSERT_OK(cs_reader_new(f->t.repo, &rd));
        CsDirEntry *v = NULL;
        size_t n = 0;
        ASSERT_OK(cs_dir_load(rd, &root, &v, &n));
        assert_int_equal(n, 1);
        assert_string_equal(v[0].name, "keep");
        cs_dir_entries_free(v, n);
        cs_reader_free(rd);
        cs_content_ref_free(&root);
    }
    if (failure[0])
        fail_msg("%s", failure);
}

/* An empty source directory round-trips to an empty directory. */
static void test_tree_empty(void **state)
{
    Fixture *f = *state;
    assert_int_equal(mkdir(f->src, 0755), 0);
    CsContentRef root;
    CsTreeStats st;
    int calls = 0;
    store_tree(f, &root, &st, &calls);
    assert_int_equal(st.files, 0);
    CsReader *rd = NULL;
    ASSERT_OK(cs_reader_new(f->t.repo, &rd));
    CsDirEntry *v = NULL;
    size_t n = 99;
    ASSERT_OK(cs_dir_load(rd, &root, &v, &n));
    assert_int_equal(n, 0);
    cs_dir_entries_free(v, n);
    ASSERT_OK(cs_tree_restore(rd, &root, f->dst, NULL, NULL));
    compare_trees(f->src, f->dst, NULL);
    CsDirEntry e;
    ASSERT_ERR(ENOENT, cs_tree_lookup(rd, &root, "x", &e));
    cs_reader_free(rd);
    cs_content_ref_free(&root);

    /* A path that is not a directory cannot be stored as a tree. */
    CsWriter *w = NULL;
    ASSERT_OK(cs_writer_new(f->t.repo, NULL, &w));
    _cleanup_free_ char *missing = path_join(f->t.base, "missing");
    assert_true(cs_tree_store(w, missing, NULL, &root, NULL) < 0);
    cs_writer_free(w);
}


/* Delta restore over a copy that drifted: changed bytes inside a file, a truncated and an
 * extended file, an extra file and an extra directory tree, a file replaced by a directory, a
 * symlink pointing elsewhere, a removed file. Afterwards the copy equals the source, and
 * only the chunks that differed were written. */
static void test_tree_restore_delta(void **state)
{
    Fixture *f = *state;
    make_tree(f->src);
    CsContentRef root;
    CsTreeStats st;
    int calls = 0;
    store_tree(f, &root, &st, &calls);
    CsReader *rd = NULL;
    ASSERT_OK(cs_reader_new(f->t.repo, &rd));
    CsRestoreParams rp = { .threads = 3 };
    ASSERT_OK(cs_tree_restore(rd, &root, f->dst, &rp, NULL));

    /* Unchanged copy: nothing is written. */
    CsRestoreParams delta = { .is_delta = true, .threads = 3 };
    CsTreeStats ds = { 0 };
    ASSERT_OK(cs_tree_restore(rd, &root, f->dst, &delta, &ds));
    assert_int_equal(ds.bytes_written, 0);
    assert_int_equal(ds.files_unchanged, ds.files);
    assert_int_equal(ds.entries_removed, 0);
    compare_trees(f->src, f->dst, "excluded");

    /* Drift. a/ and emptydir are read-only directories: open them up first. */
    _cleanup_free_ char *a = path_join(f->dst, "a"), *ro = path_join(f->dst, "emptydir");
    assert_int_equal(chmod(a, 0700), 0);
    assert_int_equal(chmod(ro, 0700), 0);
    _cleanup_free_ char *big = path_join(f->dst, "a/big");
    int fd = open(big, O_WRONLY);
    assert_true(fd >= 0);
    ASSERT_OK(pwrite_all(fd, "XYZ", 3, 8192 * 5 + 100)); /* inside the sixth page */
    close(fd);
    _cleanup_free_ char *leaf = path_join(f->dst, "d1/d2/d3/leaf");
    assert_int_equal(truncate(leaf, 2), 0);
    _cleanup_free_ char *exec = path_join(f->dst, "exec");
    assert_int_equal(truncate(exec, 4096), 0);
    write_file(f->dst, "extra-file", "extra", 5, 0644);
    make_dir(f->dst, "extra-dir", 0755);
    make_dir(f->dst, "extra-dir/sub", 0755);
    write_file(f->dst, "extra-dir/sub/x", "x", 1, 0644);
    _cleanup_free_ char *many0 = path_join(f->dst, "many/f000");
    assert_int_equal(unlink(many0), 0);
    make_dir(f->dst, "many/f000", 0755); /* a directory where a file belongs */
    _cleanup_free_ char *link = path_join(f->dst, "link");
    assert_int_equal(unlink(link), 0);
    make_symlink(f->dst, "link", "elsewhere");
    _cleanup_free_ char *many1 = path_join(f->dst, "many/f001");
    assert_int_equal(unlink(many1), 0);

    ds = (CsTreeStats){ 0 };
    ASSERT_OK(cs_tree_restore(rd, &root, f->dst, &delta, &ds));
    compare_trees(f->src, f->dst, "excluded");
    assert_int_equal(ds.entries_removed, 2); /* extra-file, extra-dir */
    /* big: one 8 KiB page rewritten; leaf 5, f000 and f001 14 each; exec's 17 bytes still
     * match (it only grew): it is truncated back, nothing written. */
    assert_int_equal(ds.bytes_written, 8192 + 5 + 14 + 14);
    assert_int_equal(ds.files_unchanged, ds.files - 5);

    /* Delta into an empty or missing target is a plain restore. */
    _cleanup_free_ char *fresh = path_join(f->t.base, "fresh");
    ds = (CsTreeStats){ 0 };
    ASSERT_OK(cs_tree_restore(rd, &root, fresh, &delta, &ds));
    compare_trees(f->src, fresh, "excluded");
    assert_int_equal(ds.files_unchanged, 0);
    assert_int_equal(ds.bytes_written, st.bytes - 100000); /* the zeros stay a hole */
    cs_reader_free(rd);
    cs_content_ref_free(&root);
}

/* The page-file observer sees every byte of every page file once, in order. */
typedef struct ObserveCount {
    uint64_t bytes, next_offset;
    int files_seen;
    bool in_order;
} ObserveCount;

static void observe_cb(const char *relpath, const void *p, size_t n, uint64_t offset,
                       void *userdata)
{
    (void)p;
    ObserveCount *c = userdata;
    assert_string_equal(relpath, "a/big");
    if (offset == 0) {
        c->files_seen++;
        c->next_offset = 0;
    }
    c->in_order &= offset == c->next_offset;
    c->next_offset = offset + n;
    c->bytes += n;
}

static bool page_file_big(const char *relpath, const struct stat *st, void *userdata)
{
    (void)st;
    (void)userdata;
    return strcmp(relpath, "a/big") == 0;
}

static void test_tree_observer(void **state)
{
    Fixture *f = *state;
    make_tree(f->src);
    ObserveCount c = { .in_order = true };
    CsTreeParams tp = { .is_page_file = page_file_big, .observe_page_file = observe_cb,
                        .userdata = &c };
    CsWriter *w = NULL;
    ASSERT_OK(cs_writer_new(f->t.repo, &(CsWriterParams){ .threads = 2 }, &w));
    CsContentRef root;
    ASSERT_OK(cs_tree_store(w, f->src, &tp, &root, NULL));
    cs_writer_free(w);
    assert_int_equal(c.files_seen, 1);
    assert_true(c.in_order);
    assert_int_equal(c.bytes, big_size);
    cs_content_ref_free(&root);
}

/* The store_file and file_stored hooks: a file the hook takes is stored as the hook puts it; one
 * it declines after reading part of it is stored whole from its start; files are reported once
 * their references are known, in name order, depth first. */
typedef struct HookLog {
    char order[2048];
    int taken, declined;
} HookLog;

static int store_file_cb(CsWriter *w, const char *relpath, int dir_fd, int fd,
                         const struct stat *st, CsContentRef *ret, void *userdata)
{
    HookLog *log = userdata;
    (void)st, (void)dir_fd;
    char head[4];
    if (strcmp(relpath, "exec") == 0) { /* read a little, then leave it to the tree */
        assert_int_equal(read(fd, head, sizeof(head)), sizeof(head));
        log->declined++;
        return 0;
    }
    if (strcmp(relpath, "a/b/file") != 0)
        return 0;
    log->taken++;
    static const char other[] = "stored by the hook";
    return cs_writer_put_spliced(w, other, sizeof(other) - 1, NULL, 0, NULL, ret) < 0 ? -EIO : 1;
}

static void file_stored_cb(const char *relpath, const CsDirEntry *e, void *userdata)
{
    HookLog *log = userdata;
    assert_int_equal(e->type, CS_ENTRY_FILE);
    assert_int_equal(e->size, e->content.size); /* known by now */
    size_t at = strlen(log->order);
    snprintf(log->order + at, sizeof(log->order) - at, "%s%s", at ? "," : "", relpath);
}

static void test_tree_hooks(void **state)
{
    Fixture *f = *state;
    make_tree(f->src);
    HookLog log = { 0 };
    CsTreeParams tp = { .store_file = store_file_cb, .file_stored = file_stored_cb,
                        .userdata = &log };
    CsWriter *w = NULL;
    CsContentRef root;
    ASSERT_OK(cs_writer_new(f->t.repo, &(CsWriterParams){ .threads = 2 }, &w));
    ASSERT_OK(cs_tree_store(w, f->src, &tp, &root, NULL));
    ASSERT_OK(cs_writer_flush(w));
    cs_writer_free(w);
    assert_int_equal(log.taken, 1);
    assert_int_equal(log.declined, 1);
    /* A directory's files once the directory is done: subdirectories' files come first. */
    char want[sizeof(log.order)] = "a/b/file,a/big,d1/d2/d3/leaf";
    for (int i = 0; i < 150; i++)
        snprintf(want + strlen(want), sizeof(want) - strlen(want), ",many/f%03d", i);
    snprintf(want + strlen(want), sizeof(want) - strlen(want), "%s",
             ",empty,excluded,exec,name with spaces \xc3\xa9,zeros");
    assert_string_equal(log.order, want);

    CsReader *rd = NULL;
    ASSERT_OK(cs_reader_new(f->t.repo, &rd));
    ASSERT_OK(cs_tree_restore(rd, &root, f->dst, &(CsRestoreParams){ .skip_owner = true }, NULL));
    cs_reader_free(rd);
    _cleanup_free_ char *taken = path_join(f->dst, "a/b/file");
    _cleanup_free_ char *declined = path_join(f->dst, "exec");
    _cleanup_free_ char *p = NULL;
    size_t n = 0;
    ASSERT_OK(read_file(taken, 100, &p, &n));
    assert_int_equal(n, 18);
    assert_memory_equal(p, "stored by the hook", 18);
    free(p);
    p = NULL;
    ASSERT_OK(read_file(declined, 100, &p, &n));
    assert_int_equal(n, 17);
    assert_memory_equal(p, "#!/bin/sh\nexit 0\n", 17);
    cs_content_ref_free(&root);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
RUN_TESTS(T(test_tree_hooks), cmocka_unit_test(test_dir_roundtrip), cmocka_unit_test(test_dir_decode_rejects),
          T(test_tree_store_restore), T(test_tree_lookup), T(test_tree_restore_not_empty),
          T(test_tree_empty), T(test_tree_vanishing_entries), T(test_tree_restore_delta),
          T(test_tree_observer))
