/*
 * chunkstore/tree: the directory object codec (round trips, names that would escape their
 * directory, truncated and corrupted objects; the records of format version 5: hard links,
 * extended attributes, holes, and what is refused), and whole trees stored and restored
 * through a real repository (contents, modes, symlinks, fifos, mtimes, page files, exclusions;
 * hard links, attributes, ACLs and sparse files, also in a version 4 repository that keeps
 * none of them), path lookup and restore-target checks.
 */
#include "tests/unit/harness.h"
#include "tests/unit/test-repo.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "chunkstore/crypto.h"
#include "chunkstore/format.h"
#include "chunkstore/tree.h"
#include "common/buf.h"
#include "common/endian.h"
#include "common/fs-util.h"
#include "common/macro.h"

#define PASSPHRASE "tree test passphrase"

/* --- helpers --- */

static void entry_free(CsDirEntry *e)
{
    cs_dir_entry_clear(e);
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

/* --- the records of format version 5 --- */

static CsXattrList make_xattrs(const char *const *names, const char *const *values, uint32_t n)
{
    CsXattrList l = { .v = test_xmalloc(n * sizeof(CsXattr)), .n = n };
    for (uint32_t i = 0; i < n; i++) {
        size_t len = strlen(values[i]);
        l.v[i] = (CsXattr){ .name = strdup(names[i]), .value = test_xmalloc(len + 1),
                            .size = (uint32_t)len };
        memcpy(l.v[i].value, values[i], len + 1);
    }
    return l;
}

static CsExtent *make_holes(const CsExtent *v, uint32_t n)
{
    CsExtent *h = test_xmalloc(n * sizeof(*h));
    memcpy(h, v, n * sizeof(*h));
    return h;
}

static void assert_records_equal(const CsDirEntry *a, const CsDirEntry *b)
{
    assert_true(a->link_id == b->link_id);
    assert_int_equal(a->nlink, b->nlink);
    assert_int_equal(a->xattrs.n, b->xattrs.n);
    for (uint32_t i = 0; i < a->xattrs.n; i++) {
        assert_string_equal(a->xattrs.v[i].name, b->xattrs.v[i].name);
        assert_int_equal(a->xattrs.v[i].size, b->xattrs.v[i].size);
        if (a->xattrs.v[i].size)
            assert_memory_equal(a->xattrs.v[i].value, b->xattrs.v[i].value, a->xattrs.v[i].size);
    }
    assert_int_equal(a->n_holes, b->n_holes);
    if (a->n_holes)
        assert_memory_equal(a->holes, b->holes, a->n_holes * sizeof(*a->holes));
}

/* The sample entries with records: the file is one of two links and has attributes (one value
 * binary, one empty) and two holes; the symlink has an attribute; the device is a link too. */
static void sample_entries_with_records(CsDirEntry v[4], CsXattrList *own)
{
    sample_entries(v);
    static const char *const fnames[] = { "security.capability", "system.posix_acl_access",
                                          "trusted.t", "user.empty" };
    static const char *const fvalues[] = { "cap", "acl", "tv", "" };
    v[1].xattrs = make_xattrs(fnames, fvalues, 4);
    v[1].xattrs.v[1].value[1] = 0; /* a NUL inside a value is fine */
    v[1].link_id = UINT64_C(0xfedcba9876543210);
    v[1].nlink = 2;
    v[1].holes = make_holes((CsExtent[]){ { 0, 4096 }, { 8192, v[1].content.size - 8192 } }, 2);
    v[1].n_holes = 2;
    static const char *const lnames[] = { "trusted.link" };
    static const char *const lvalues[] = { "x" };
    v[2].xattrs = make_xattrs(lnames, lvalues, 1);
    v[3].link_id = 7;
    v[3].nlink = 3;
    static const char *const onames[] = { "system.posix_acl_default", "user.root" };
    static const char *const ovalues[] = { "dacl", "r" };
    *own = make_xattrs(onames, ovalues, 2);
}

static void test_dir_records_roundtrip(void **state)
{
    (void)state;
    CsDirEntry v[4];
    CsXattrList own;
    sample_entries_with_records(v, &own);
    _cleanup_(buf_free) Buf enc = BUF_INIT;
    ASSERT_OK(cs_dir_encode_own(v, 4, &own, &enc));
    assert_int_equal(get_le32(enc.data), CS_DIR_MAGIC_RECORDS);
    assert_int_equal(get_le32(enc.data + 4), 4);

    CsDirEntry *back = NULL;
    size_t n = 0;
    CsXattrList own_back;
    ASSERT_OK(cs_dir_decode_own(enc.data, enc.size, &back, &n, &own_back));
    assert_int_equal(n, 4);
    for (size_t i = 0; i < 4; i++) {
        assert_entry_equal(&v[i], &back[i]);
        assert_records_equal(&v[i], &back[i]);
    }
    CsDirEntry own_a = { .xattrs = own }, own_b = { .xattrs = own_back };
    assert_records_equal(&own_a, &own_b);
    assert_non_null(cs_xattr_find(&back[1].xattrs, "trusted.t"));
    assert_null(cs_xattr_find(&back[1].xattrs, "trusted.u"));
    cs_xattr_list_clear(&own_back);

    /* A deep copy owns everything it has. */
    CsDirEntry copy;
    ASSERT_OK(cs_dir_entry_copy(&back[1], &copy));
    cs_dir_entries_free(back, n);
    assert_entry_equal(&v[1], &copy);
    assert_records_equal(&v[1], &copy);
    cs_dir_entry_clear(&copy);

    /* Without the directory's own attributes wanted, the entries decode the same. */
    ASSERT_OK(cs_dir_decode(enc.data, enc.size, &back, &n));
    assert_records_equal(&v[1], &back[1]);
    cs_dir_entries_free(back, n);

    /* Only the directory's own attributes: still version 5. */
    CsDirEntry plain[4];
    sample_entries(plain);
    buf_clear(&enc);
    ASSERT_OK(cs_dir_encode_own(plain, 4, &own, &enc));
    assert_int_equal(get_le32(enc.data), CS_DIR_MAGIC_RECORDS);
    ASSERT_OK(cs_dir_decode_own(enc.data, enc.size, &back, &n, &own_back));
    assert_int_equal(own_back.n, 2);
    assert_int_equal(back[1].xattrs.n, 0);
    assert_int_equal(back[1].n_holes, 0);
    assert_true(back[1].link_id == 0);
    cs_xattr_list_clear(&own_back);
    cs_dir_entries_free(back, n);

    /* Nothing to record: the object is byte for byte what version 4 wrote, so directories
     * without any of this deduplicate with older snapshots. */
    _cleanup_(buf_free) Buf v4 = BUF_INIT, v5 = BUF_INIT;
    ASSERT_OK(cs_dir_encode(plain, 4, &v4));
    CsXattrList none = { 0 };
    ASSERT_OK(cs_dir_encode_own(plain, 4, &none, &v5));
    assert_int_equal(get_le32(v4.data), CS_DIR_MAGIC);
    assert_int_equal(v4.size, v5.size);
    assert_memory_equal(v4.data, v5.data, v4.size);
    ASSERT_OK(cs_dir_decode_own(v4.data, v4.size, &back, &n, &own_back));
    assert_int_equal(own_back.n, 0);
    for (size_t i = 0; i < 4; i++)
        assert_records_equal(&plain[i], &back[i]);
    cs_dir_entries_free(back, n);

    /* A record of a kind this version does not know is skipped: appended to the first entry's
     * records, the object decodes as before. The first entry (a directory) starts at 8 + 4 +
     * own records, and its record length sits after its name and content reference. */
    buf_clear(&enc);
    ASSERT_OK(cs_dir_encode_own(v, 4, NULL, &enc));
    size_t at = 8 + 4 + get_le32(enc.data + 8); /* own records: none */
    assert_int_equal(at, 12);
    size_t ref_len = 13 + (v[0].content.has_slices ? 40u : 36u) * v[0].content.count;
    size_t rec_len_at = at + 44 + strlen(v[0].name) + ref_len;
    assert_int_equal(get_le32(enc.data + rec_len_at), 0);
    _cleanup_(buf_free) Buf unknown = BUF_INIT;
    ASSERT_OK(buf_append(&unknown, enc.data, rec_len_at));
    ASSERT_OK(buf_append_le32(&unknown, 5 + 3));
    ASSERT_OK(buf_append(&unknown, "\x63\x03\x00\x00\x00xyz", 8));
    ASSERT_OK(buf_append(&unknown, enc.data + rec_len_at + 4, enc.size - rec_len_at - 4));
    ASSERT_OK(cs_dir_decode(unknown.data, unknown.size, &back, &n));
    for (size_t i = 0; i < 4; i++)
        assert_records_equal(&v[i], &back[i]);
    cs_dir_entries_free(back, n);

    cs_xattr_list_clear(&own);
    free_entries(v, 4);
    free_entries(plain, 4);
}

/* Encode the sample with one entry changed by `spoil` and expect the encoder to refuse it; then
 * patch the same change into a good encoding and expect the decoder to refuse that. */
static void expect_encode_refused(void (*spoil)(CsDirEntry *v), const char *what)
{
    CsDirEntry v[4];
    CsXattrList own;
    sample_entries_with_records(v, &own);
    spoil(v);
    _cleanup_(buf_free) Buf enc = BUF_INIT;
    int r = cs_dir_encode_own(v, 4, &own, &enc);
    if (r != -EINVAL)
        fail_msg("%s: encode returned %d, not -EINVAL", what, r);
    cs_xattr_list_clear(&own);
    free_entries(v, 4);
}

static void spoil_link_on_dir(CsDirEntry *v) { v[0].link_id = 1, v[0].nlink = 2; }
static void spoil_one_link(CsDirEntry *v) { v[3].nlink = 1; }
static void spoil_xattr_order(CsDirEntry *v)
{
    CsXattr t = v[1].xattrs.v[0];
    v[1].xattrs.v[0] = v[1].xattrs.v[1];
    v[1].xattrs.v[1] = t;
}
static void spoil_xattr_twice(CsDirEntry *v)
{
    free(v[1].xattrs.v[1].name);
    v[1].xattrs.v[1].name = strdup(v[1].xattrs.v[0].name);
}
static void spoil_xattr_big(CsDirEntry *v) { v[1].xattrs.v[0].size = CS_XATTR_VALUE_MAX + 1; }
static void spoil_holes_overlap(CsDirEntry *v) { v[1].holes[1].offset = 4096; }
static void spoil_holes_past_end(CsDirEntry *v) { v[1].holes[1].length++; }
static void spoil_holes_empty(CsDirEntry *v) { v[1].holes[0].length = 0; }
static void spoil_holes_on_link(CsDirEntry *v)
{
    v[2].holes = make_holes((CsExtent[]){ { 0, 1 } }, 1);
    v[2].n_holes = 1;
}

/* Replace bytes [at, at + n) of a copy of `enc` by `p` (m bytes) and expect -EBADMSG. */
static void expect_patched_rejected(const Buf *enc, size_t at, size_t n, const void *p, size_t m,
                                    const char *what)
{
    _cleanup_(buf_free) Buf bad = BUF_INIT;
    ASSERT_OK(buf_append(&bad, enc->data, at));
    ASSERT_OK(buf_append(&bad, p, m));
    ASSERT_OK(buf_append(&bad, enc->data + at + n, enc->size - at - n));
    CsDirEntry *back = NULL;
    size_t count = 0;
    int r = cs_dir_decode(bad.data, bad.size, &back, &count);
    if (r == 0) {
        cs_dir_entries_free(back, count);
        fail_msg("%s: decoded", what);
    }
    if (r != -EBADMSG)
        fail_msg("%s: decode returned %d, not -EBADMSG", what, r);
}

/* The offset of the first byte of `needle` in enc (it must be there). */
static size_t find_bytes(const Buf *enc, const void *needle, size_t n)
{
    for (size_t i = 0; i + n <= enc->size; i++)
        if (memcmp(enc->data + i, needle, n) == 0)
            return i;
    fail_msg("bytes not found in the encoding");
    return 0;
}

static void test_dir_records_rejects(void **state)
{
    (void)state;
    expect_encode_refused(spoil_link_on_dir, "a link record on a directory");
    expect_encode_refused(spoil_one_link, "a link count of 1");
    expect_encode_refused(spoil_xattr_order, "attributes out of order");
    expect_encode_refused(spoil_xattr_twice, "one attribute twice");
    expect_encode_refused(spoil_xattr_big, "a value over 64 KiB");
    expect_encode_refused(spoil_holes_overlap, "overlapping holes");
    expect_encode_refused(spoil_holes_past_end, "a hole past the end");
    expect_encode_refused(spoil_holes_empty, "an empty hole");
    expect_encode_refused(spoil_holes_on_link, "holes on a symlink");

    CsDirEntry v[4];
    CsXattrList own;
    sample_entries_with_records(v, &own);
    _cleanup_(buf_free) Buf enc = BUF_INIT;
    ASSERT_OK(cs_dir_encode_own(v, 4, &own, &enc));

    /* The file's link record: kind 1, length 12, id, count. */
    uint8_t link[5 + 12] = { CS_DIR_RECORD_LINK, 12, 0, 0, 0 };
    put_le64(link + 5, v[1].link_id);
    put_le32(link + 13, 2);
    size_t at = find_bytes(&enc, link, sizeof(link));
    uint8_t bad[sizeof(link)];
    memcpy(bad, link, sizeof(bad));
    put_le32(bad + 13, 1);
    expect_patched_rejected(&enc, at, sizeof(link), bad, sizeof(bad), "link count 1");
    memcpy(bad, link, sizeof(bad));
    put_le64(bad + 5, 0);
    expect_patched_rejected(&enc, at, sizeof(link), bad, sizeof(bad), "link id 0");
    memcpy(bad, link, sizeof(bad));
    bad[1] = 11;
    expect_patched_rejected(&enc, at, sizeof(link), bad, sizeof(bad), "a short link record");

    /* The file's first attribute record: kind 2, length, name length, name, value. */
    static const char name0[] = "security.capability";
    uint8_t xhead[5 + 1] = { CS_DIR_RECORD_XATTR, 0, 0, 0, 0, sizeof(name0) - 1 };
    put_le32(xhead + 1, 1 + (uint32_t)strlen(name0) + 3);
    at = find_bytes(&enc, xhead, sizeof(xhead));
    uint8_t x0[5 + 1];
    memcpy(x0, xhead, sizeof(x0));
    x0[5] = 0;
    expect_patched_rejected(&enc, at, sizeof(x0), x0, sizeof(x0), "an empty attribute name");
    x0[5] = 200; /* longer than its record */
    expect_patched_rejected(&enc, at, sizeof(x0), x0, sizeof(x0), "a name past its record");
    expect_patched_rejected(&enc, at + 6 + 2, 1, "\0", 1, "a NUL inside an attribute name");
    /* "security..." -> "user.e..." would sort after the next one. */
    expect_patched_rejected(&enc, at + 6, 1, "z", 1, "attributes out of order");

    /* The file's holes record: kind 3, 32 bytes. */
    uint8_t holes[5 + 32] = { CS_DIR_RECORD_HOLES, 32, 0, 0, 0 };
    put_le64(holes + 5, 0);
    put_le64(holes + 13, 4096);
    put_le64(holes + 21, 8192);
    put_le64(holes + 29, v[1].content.size - 8192);
    at = find_bytes(&enc, holes, sizeof(holes));
    uint8_t hb[sizeof(holes)];
    memcpy(hb, holes, sizeof(hb));
    put_le64(hb + 21, 4096); /* adjacent to the first: one hole written as two */
    put_le64(hb + 29, v[1].content.size - 4096);
    expect_patched_rejected(&enc, at, sizeof(holes), hb, sizeof(hb), "adjacent holes");
    memcpy(hb, holes, sizeof(hb));
    put_le64(hb + 29, v[1].content.size); /* past the end */
    expect_patched_rejected(&enc, at, sizeof(holes), hb, sizeof(hb), "a hole past the end");
    memcpy(hb, holes, sizeof(hb));
    put_le64(hb + 13, 0);
    expect_patched_rejected(&enc, at, sizeof(holes), hb, sizeof(hb), "an empty hole");
    memcpy(hb, holes, sizeof(hb));
    put_le64(hb + 21, UINT64_MAX - 10); /* offset + length wraps */
    put_le64(hb + 29, 20);
    expect_patched_rejected(&enc, at, sizeof(holes), hb, sizeof(hb), "a hole that wraps");
    memcpy(hb, holes, sizeof(hb));
    hb[1] = 31;
    expect_patched_rejected(&enc, at, sizeof(holes), hb, sizeof(hb) - 1, "a hole cut short");
    /* Records the directory itself cannot have: a link, holes. */
    uint8_t own_link[5 + 12] = { CS_DIR_RECORD_LINK, 12, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2 };
    uint8_t own_len[4];
    put_le32(own_len, get_le32(enc.data + 8) + sizeof(own_link));
    _cleanup_(buf_free) Buf own_bad = BUF_INIT;
    ASSERT_OK(buf_append(&own_bad, enc.data, 8));
    ASSERT_OK(buf_append(&own_bad, own_len, 4));
    ASSERT_OK(buf_append(&own_bad, own_link, sizeof(own_link)));
    ASSERT_OK(buf_append(&own_bad, enc.data + 12, enc.size - 12));
    CsDirEntry *back = NULL;
    size_t n = 0;
    ASSERT_ERR(EBADMSG, cs_dir_decode(own_bad.data, own_bad.size, &back, &n));
    /* The directory's record length past the object. */
    put_le32(own_len, (uint32_t)enc.size);
    expect_patched_rejected(&enc, 8, 4, own_len, 4, "own records past the end");

    /* Every truncation fails cleanly; every single corrupted byte decodes or fails cleanly,
     * and what decodes encodes again. */
    for (size_t len = 0; len < enc.size; len++) {
        _cleanup_free_ uint8_t *copy = test_xmalloc(len);
        memcpy(copy, enc.data, len);
        int r = cs_dir_decode(copy, len, &back, &n);
        if (r == 0)
            cs_dir_entries_free(back, n);
        if (r != -EBADMSG)
            fail_msg("version 5 directory truncated to %zu of %zu bytes: decode returned %d",
                     len, enc.size, r);
    }
    _cleanup_free_ uint8_t *copy = test_xmalloc(enc.size);
    size_t accepted = 0;
    for (size_t i = 0; i < enc.size; i++) {
        static const uint8_t masks[] = { 0x01, 0x80, 0xff };
        for (size_t k = 0; k < ARRAY_SIZE(masks); k++) {
            memcpy(copy, enc.data, enc.size);
            copy[i] ^= masks[k];
            CsXattrList o;
            int r = cs_dir_decode_own(copy, enc.size, &back, &n, &o);
            if (r != 0) {
                assert_int_equal(r, -EBADMSG);
                continue;
            }
            accepted++;
            _cleanup_(buf_free) Buf again = BUF_INIT;
            ASSERT_OK(cs_dir_encode_own(back, n, &o, &again));
            cs_dir_entries_free(back, n);
            cs_xattr_list_clear(&o);
        }
    }
    printf("version 5 directory: %zu of %zu single-byte corruptions still decode\n", accepted,
           enc.size * 3);
    cs_xattr_list_clear(&own);
    free_entries(v, 4);
}

static void test_entry_seek(void **state)
{
    (void)state;
    /* 100 bytes: data [0,10), hole [10,20), data [20,30), hole [30,100) to the end. */
    CsExtent holes[] = { { 10, 10 }, { 30, 70 } };
    CsDirEntry e = { .type = CS_ENTRY_FILE, .content = { .size = 100 }, .holes = holes,
                     .n_holes = 2 };
    assert_int_equal(cs_entry_data_bytes(&e), 20);
    static const struct {
        uint64_t off;
        int64_t data, hole;
    } cases[] = {
        { 0, 0, 10 },    { 9, 9, 10 },         { 10, 20, 10 },        { 19, 20, 19 },
        { 20, 20, 30 },  { 29, 29, 30 },       { 30, -ENXIO, 30 },    { 99, -ENXIO, 99 },
        { 100, -ENXIO, -ENXIO }, { 1000, -ENXIO, -ENXIO },
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        assert_true(cs_entry_seek(&e, cases[i].off, false) == cases[i].data);
        assert_true(cs_entry_seek(&e, cases[i].off, true) == cases[i].hole);
    }
    /* No holes recorded: data to the end, and the end is the only hole. */
    CsDirEntry plain = { .type = CS_ENTRY_FILE, .content = { .size = 100 } };
    assert_int_equal(cs_entry_data_bytes(&plain), 100);
    assert_true(cs_entry_seek(&plain, 50, false) == 50);
    assert_true(cs_entry_seek(&plain, 50, true) == 100);
    /* All hole. */
    CsExtent all[] = { { 0, 100 } };
    CsDirEntry empty = { .type = CS_ENTRY_FILE, .content = { .size = 100 }, .holes = all,
                         .n_holes = 1 };
    assert_int_equal(cs_entry_data_bytes(&empty), 0);
    assert_true(cs_entry_seek(&empty, 0, false) == -ENXIO);
    assert_true(cs_entry_seek(&empty, 0, true) == 0);
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

/* --- trees kept whole: hard links, attributes and ACLs, holes --- */

static void make_link(const char *root, const char *from, const char *to)
{
    _cleanup_free_ char *a = path_join(root, from), *b = path_join(root, to);
    assert_int_equal(link(a, b), 0);
}

static void set_xattr(const char *root, const char *rel, const char *name, const void *value,
                      size_t size)
{
    _cleanup_free_ char *path = rel ? path_join(root, rel) : strdup(root);
    if (lsetxattr(path, name, value, size, 0) < 0)
        fail_msg("setting %s on %s: %s", name, path, strerror(errno));
}

/* A POSIX ACL as the kernel encodes it in system.posix_acl_*: user::rwx user:65534:r--
 * group::r-x mask::r-x other::r-x. */
static size_t make_acl(uint8_t *p)
{
    static const struct {
        uint16_t tag, perm;
        uint32_t id;
    } acl[] = { { 0x01, 7, UINT32_MAX }, { 0x02, 4, 65534 }, { 0x04, 5, UINT32_MAX },
                { 0x10, 5, UINT32_MAX }, { 0x20, 5, UINT32_MAX } };
    put_le32(p, 2);
    for (size_t i = 0; i < ARRAY_SIZE(acl); i++) {
        put_le16(p + 4 + 8 * i, acl[i].tag);
        put_le16(p + 6 + 8 * i, acl[i].perm);
        put_le32(p + 8 + 8 * i, acl[i].id);
    }
    return 4 + 8 * ARRAY_SIZE(acl);
}

#define SPARSE_SIZE (4u << 20)
#define SPARSE_DATA_AT (1u << 20)

/* Three hard-link groups (one across three directories, a symlink pair, a fifo pair) and a
 * pair; attributes in every kept namespace, ACLs on a directory, attributes on the root; a
 * sparse file (hole, data, hole to the end) and one that is all hole. */
static void make_whole_tree(const char *src)
{
    assert_int_equal(mkdir(src, 0755), 0);
    make_dir(src, "a", 0755);
    make_dir(src, "a/c", 0755);
    make_dir(src, "b", 0755);
    write_file(src, "a/f", "shared content", 14, 0640);
    make_link(src, "a/f", "b/f2");
    make_link(src, "a/f", "a/c/f3");
    write_file(src, "b/g", "second", 6, 0600);
    make_link(src, "b/g", "g2");
    make_symlink(src, "s", "a/f");
    make_link(src, "s", "s2");
    _cleanup_free_ char *fifo = path_join(src, "p");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    make_link(src, "p", "p2");
    write_file(src, "alone", "one link", 8, 0644);
    set_xattr(src, "a/f", "user.color", "blue", 4);
    set_xattr(src, "a/f", "user.empty", "", 0);
    set_xattr(src, "b/g", "trusted.t", "tv", 2);
    set_xattr(src, "b/g", "security.s", "sv", 2);
    set_xattr(src, "s", "trusted.on-link", "l", 1);
    uint8_t acl[64];
    size_t acl_len = make_acl(acl);
    set_xattr(src, "a/c", "system.posix_acl_access", acl, acl_len);
    set_xattr(src, "b", "system.posix_acl_default", acl, acl_len);
    set_xattr(src, NULL, "user.root", "r", 1);

    _cleanup_free_ char *sparse = path_join(src, "sparse");
    int fd = open(sparse, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, SPARSE_SIZE), 0);
    uint8_t data[8192];
    ASSERT_OK(cs_random_bytes(data, sizeof(data)));
    ASSERT_OK(pwrite_all(fd, data, sizeof(data), SPARSE_DATA_AT));
    assert_int_equal(fsync(fd), 0);
    close(fd);
    _cleanup_free_ char *all = path_join(src, "all-hole");
    assert_int_equal(truncate(all, 0) == 0 || errno == ENOENT, 1);
    fd = open(all, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 1 << 20), 0);
    close(fd);
}

static void store_plain(CsRepo *repo, const char *src, const CsTreeParams *tp, CsContentRef *root,
                        CsTreeStats *st)
{
    CsWriter *w = NULL;
    ASSERT_OK(cs_writer_new(repo, &(CsWriterParams){ .threads = 2 }, &w));
    *st = (CsTreeStats){ 0 };
    ASSERT_OK(cs_tree_store(w, src, tp, root, st));
    ASSERT_OK(cs_writer_flush(w));
    cs_writer_free(w);
}

static void lstat_at(const char *root, const char *rel, struct stat *st)
{
    _cleanup_free_ char *path = path_join(root, rel);
    if (lstat(path, st) < 0)
        fail_msg("lstat %s: %s", path, strerror(errno));
}

/* The paths are one inode with `count` links (or each its own inode with one link). */
static void assert_linked(const char *root, const char *const *rels, size_t n, bool linked)
{
    struct stat first, st;
    lstat_at(root, rels[0], &first);
    for (size_t i = 0; i < n; i++) {
        lstat_at(root, rels[i], &st);
        if (linked && (st.st_ino != first.st_ino || st.st_nlink != n))
            fail_msg("%s/%s: inode %lu with %lu links, %s has inode %lu", root, rels[i],
                     (unsigned long)st.st_ino, (unsigned long)st.st_nlink, rels[0],
                     (unsigned long)first.st_ino);
        if (!linked && (i > 0 && st.st_ino == first.st_ino))
            fail_msg("%s/%s is a link to %s", root, rels[i], rels[0]);
    }
}

static bool name_in_list(const char *name, const char *list, ssize_t n)
{
    for (const char *p = list; p < list + n; p += strlen(p) + 1)
        if (strcmp(p, name) == 0)
            return true;
    return false;
}

/* The attributes of the two paths, all of them, are the same (in any order). */
static void assert_same_xattrs(const char *a, const char *b)
{
    char la[4096], lb[4096];
    ssize_t na = llistxattr(a, la, sizeof(la)), nb = llistxattr(b, lb, sizeof(lb));
    assert_true(na >= 0 && nb >= 0);
    bool is_same = na == nb;
    for (const char *name = la; is_same && name < la + na; name += strlen(name) + 1)
        is_same = name_in_list(name, lb, nb);
    if (!is_same) {
        for (ssize_t i = 0; i < na; i++)
            la[i] = la[i] ? la[i] : ',';
        for (ssize_t i = 0; i < nb; i++)
            lb[i] = lb[i] ? lb[i] : ',';
        fail_msg("attributes of %s: %.*s; of %s: %.*s", a, (int)na, la, b, (int)nb, lb);
    }
    for (const char *name = la; name < la + na; name += strlen(name) + 1) {
        char va[4096], vb[4096];
        ssize_t sa = lgetxattr(a, name, va, sizeof(va)), sb = lgetxattr(b, name, vb, sizeof(vb));
        if (sa < 0 || sa != sb || memcmp(va, vb, (size_t)sa) != 0)
            fail_msg("attribute %s of %s and %s differs", name, a, b);
    }
}

static void assert_same_xattrs_at(const char *src, const char *dst, const char *rel)
{
    _cleanup_free_ char *a = rel ? path_join(src, rel) : strdup(src);
    _cleanup_free_ char *b = rel ? path_join(dst, rel) : strdup(dst);
    assert_same_xattrs(a, b);
}

static int64_t seek_at(const char *root, const char *rel, uint64_t off, int whence)
{
    _cleanup_free_ char *path = path_join(root, rel);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    off_t r = lseek(fd, (off_t)off, whence);
    int err = errno;
    close(fd);
    return r < 0 ? -err : r;
}

static const char *const group_f[] = { "a/f", "b/f2", "a/c/f3" };
static const char *const group_g[] = { "b/g", "g2" };
static const char *const group_s[] = { "s", "s2" };
static const char *const group_p[] = { "p", "p2" };
static const char *const xattr_paths[] = { "a/f", "b/f2", "b/g", "g2", "s", "a/c", "b", "alone" };

static void test_tree_whole(void **state)
{
    Fixture *f = *state;
    make_whole_tree(f->src);
    CsContentRef root;
    CsTreeStats st;
    store_plain(f->t.repo, f->src, NULL, &root, &st);
    assert_int_equal(st.hardlinks, 2 + 1 + 1 + 1);
    assert_int_equal(st.sparse_files, 2);
    /* per entry: a/f, b/f2, a/c/f3 2 each; b/g, g2 2 each; s, s2; a/c; b; the root */
    assert_int_equal(st.xattrs, 3 * 2 + 2 * 2 + 2 + 1 + 1 + 1);

    CsReader *rd = NULL;
    ASSERT_OK(cs_reader_new(f->t.repo, &rd));
    CsDirEntry e1 = { 0 }, e2 = { 0 }, sp = { 0 }, alone = { 0 };
    ASSERT_OK(cs_tree_lookup(rd, &root, "a/c/f3", &e1));
    ASSERT_OK(cs_tree_lookup(rd, &root, "b/f2", &e2));
    ASSERT_OK(cs_tree_lookup(rd, &root, "sparse", &sp));
    ASSERT_OK(cs_tree_lookup(rd, &root, "alone", &alone));
    assert_true(e1.link_id != 0 && e1.link_id == e2.link_id);
    assert_int_equal(e1.nlink, 3);
    assert_int_equal(e1.content.size, 14);
    assert_int_equal(e1.xattrs.n, 2);
    assert_true(alone.link_id == 0);
    assert_int_equal(sp.n_holes, 2);
    assert_true(sp.holes[0].offset == 0 && sp.holes[0].length == SPARSE_DATA_AT);
    assert_true(sp.holes[1].offset == SPARSE_DATA_AT + 8192);
    assert_true(sp.holes[1].offset + sp.holes[1].length == SPARSE_SIZE);
    assert_int_equal(cs_entry_data_bytes(&sp), 8192);
    cs_dir_entry_clear(&e1);
    cs_dir_entry_clear(&e2);
    cs_dir_entry_clear(&sp);
    cs_dir_entry_clear(&alone);

    CsTreeStats rst = { 0 };
    ASSERT_OK(cs_tree_restore(rd, &root, f->dst, &(CsRestoreParams){ .threads = 3 }, &rst));
    compare_trees(f->src, f->dst, NULL);
    assert_int_equal(rst.hardlinks, 5);
    assert_int_equal(rst.xattrs_not_set, 0);
    assert_linked(f->dst, group_f, 3, true);
    assert_linked(f->dst, group_g, 2, true);
    assert_linked(f->dst, group_s, 2, true);
    assert_linked(f->dst, group_p, 2, true);
    for (size_t i = 0; i < ARRAY_SIZE(xattr_paths); i++)
        assert_same_xattrs_at(f->src, f->dst, xattr_paths[i]);
    assert_same_xattrs_at(f->src, f->dst, NULL); /* the stored directory's own */
    struct stat a, b;
    lstat_at(f->src, "sparse", &a);
    lstat_at(f->dst, "sparse", &b);
    assert_int_equal(b.st_blocks, a.st_blocks);
    assert_true(seek_at(f->dst, "sparse", 0, SEEK_DATA) == SPARSE_DATA_AT);
    assert_true(seek_at(f->dst, "sparse", 0, SEEK_HOLE) == 0);
    assert_true(seek_at(f->dst, "sparse", SPARSE_DATA_AT, SEEK_HOLE) == SPARSE_DATA_AT + 8192);
    assert_true(seek_at(f->dst, "all-hole", 0, SEEK_DATA) == -ENXIO);
    lstat_at(f->dst, "all-hole", &b);
    assert_int_equal(b.st_blocks, 0);

    /* Split across restore workers: a large sparse file keeps its holes too. */
    _cleanup_free_ char *big = path_join(f->src, "big-sparse");
    int fd = open(big, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 70u << 20), 0); /* split among workers: over 64 MiB */
    uint8_t data[65536];
    ASSERT_OK(cs_random_bytes(data, sizeof(data)));
    ASSERT_OK(pwrite_all(fd, data, sizeof(data), 33u << 20));
    close(fd);
    CsContentRef root2;
    store_plain(f->t.repo, f->src, NULL, &root2, &st);
    _cleanup_free_ char *dst2 = path_join(f->t.base, "dst2");
    ASSERT_OK(cs_tree_restore(rd, &root2, dst2, NULL, NULL));
    compare_trees(f->src, dst2, NULL);
    lstat_at(f->src, "big-sparse", &a);
    lstat_at(dst2, "big-sparse", &b);
    assert_int_equal(b.st_blocks, a.st_blocks);
    assert_linked(dst2, group_f, 3, true);
    cs_content_ref_free(&root2);

    cs_reader_free(rd);
    cs_content_ref_free(&root);
}

/* A file that gets data in a hole after the hole was found (here: from the store_file hook,
 * which runs between the two) keeps that data: only holes that read as zeros are recorded. */
static int write_into_hole(CsWriter *w, const char *relpath, int dir_fd, int fd,
                           const struct stat *st, CsContentRef *ret, void *userdata)
{
    (void)w, (void)fd, (void)st, (void)ret, (void)userdata;
    if (strcmp(relpath, "sparse") != 0)
        return 0;
    int wfd = openat(dir_fd, "sparse", O_WRONLY | O_CLOEXEC);
    assert_true(wfd >= 0);
    ASSERT_OK(pwrite_all(wfd, "late", 4, 5000)); /* in the first hole */
    close(wfd);
    return 0;
}

static void test_tree_hole_written_meanwhile(void **state)
{
    Fixture *f = *state;
    make_whole_tree(f->src);
    CsTreeParams tp = { .store_file = write_into_hole };
    CsContentRef root;
    CsTreeStats st;
    store_plain(f->t.repo, f->src, &tp, &root, &st);
    CsReader *rd = NULL;
    ASSERT_OK(cs_reader_new(f->t.repo, &rd));
    CsDirEntry sp = { 0 };
    ASSERT_OK(cs_tree_lookup(rd, &root, "sparse", &sp));
    assert_int_equal(sp.n_holes, 1); /* the one after the data; the first had "late" in it */
    assert_true(sp.holes[0].offset == SPARSE_DATA_AT + 8192);
    cs_dir_entry_clear(&sp);
    ASSERT_OK(cs_tree_restore(rd, &root, f->dst, NULL, NULL));
    _cleanup_free_ char *a = path_join(f->src, "sparse"), *b = path_join(f->dst, "sparse");
    char *pa = NULL, *pb = NULL;
    size_t na = 0, nb = 0;
    ASSERT_OK(read_file(a, SPARSE_SIZE, &pa, &na));
    ASSERT_OK(read_file(b, SPARSE_SIZE, &pb, &nb));
    assert_int_equal(na, nb);
    assert_memory_equal(pb + 5000, "late", 4);
    assert_memory_equal(pa, pb, na);
    free(pa);
    free(pb);
    cs_reader_free(rd);
    cs_content_ref_free(&root);
}

/* A version 4 repository is written as version 4 wrote it: no records (its readers could not
 * read them), so links come back as separate files and attributes are not kept. */
static void test_tree_whole_version4(void **state)
{
    Fixture *f = *state;
    make_whole_tree(f->src);
    TestRepo old;
    test_repo_create_version(&old, "tree-v4", PASSPHRASE, CS_FORMAT_VERSION_KEYED);
    CsContentRef root;
    CsTreeStats st;
    store_plain(old.repo, f->src, NULL, &root, &st);
    assert_int_equal(st.hardlinks, 0);
    assert_int_equal(st.xattrs, 0);
    assert_int_equal(st.sparse_files, 0);
    CsReader *rd = NULL;
    ASSERT_OK(cs_reader_new(old.repo, &rd));
    _cleanup_(buf_free) Buf obj = BUF_INIT;
    ASSERT_OK(cs_reader_read_all(rd, &root, 1 << 20, &obj));
    assert_int_equal(get_le32(obj.data), CS_DIR_MAGIC);
    CsDirEntry e = { 0 };
    ASSERT_OK(cs_tree_lookup(rd, &root, "b/f2", &e));
    assert_true(e.link_id == 0);
    assert_int_equal(e.xattrs.n, 0);
    cs_dir_entry_clear(&e);
    ASSERT_OK(cs_tree_restore(rd, &root, f->dst, NULL, NULL));
    compare_trees(f->src, f->dst, NULL);
    assert_linked(f->dst, group_f, 3, false);
    _cleanup_free_ char *af = path_join(f->dst, "a/f");
    assert_true(lgetxattr(af, "user.color", NULL, 0) < 0 && errno == ENODATA);

    /* Entries with records given to cs_dir_store (as the agent assembles a base backup's
     * root) lose them there too. */
    CsDirEntry v[4];
    CsXattrList own;
    sample_entries_with_records(v, &own);
    cs_xattr_list_clear(&own);
    CsWriter *w = NULL;
    ASSERT_OK(cs_writer_new(old.repo, NULL, &w));
    CsContentRef dir;
    ASSERT_OK(cs_dir_store(w, v, 4, &dir));
    ASSERT_OK(cs_writer_flush(w));
    cs_writer_free(w);
    buf_clear(&obj);
    ASSERT_OK(cs_reader_read_all(rd, &dir, 1 << 20, &obj));
    assert_int_equal(get_le32(obj.data), CS_DIR_MAGIC);
    CsDirEntry *back;
    size_t n;
    ASSERT_OK(cs_dir_decode(obj.data, obj.size, &back, &n));
    for (size_t i = 0; i < n; i++) {
        assert_true(back[i].link_id == 0);
        assert_int_equal(back[i].xattrs.n + back[i].n_holes, 0);
    }
    cs_dir_entries_free(back, n);
    free_entries(v, 4);
    cs_content_ref_free(&dir);
    cs_reader_free(rd);
    cs_content_ref_free(&root);
    test_repo_destroy(&old);
}

/* Delta restores over a copy whose links were made by an earlier restore: a file that is no
 * longer linked is rewritten apart from its old partner (never through it), and links come
 * back when the snapshot has them. */
static void test_tree_delta_links(void **state)
{
    Fixture *f = *state;
    assert_int_equal(mkdir(f->src, 0755), 0);
    write_file(f->src, "x", "linked", 6, 0644);
    make_link(f->src, "x", "y");
    CsContentRef linked, apart;
    CsTreeStats st;
    store_plain(f->t.repo, f->src, NULL, &linked, &st);
    _cleanup_free_ char *y = path_join(f->src, "y");
    assert_int_equal(unlink(y), 0);
    write_file(f->src, "x", "now x", 5, 0644);
    write_file(f->src, "y", "now y!", 6, 0644);
    store_plain(f->t.repo, f->src, NULL, &apart, &st);

    static const char *const xy[] = { "x", "y" };
    CsReader *rd = NULL;
    ASSERT_OK(cs_reader_new(f->t.repo, &rd));
    CsRestoreParams delta = { .is_delta = true };
    ASSERT_OK(cs_tree_restore(rd, &linked, f->dst, &delta, NULL));
    assert_linked(f->dst, xy, 2, true);
    ASSERT_OK(cs_tree_restore(rd, &apart, f->dst, &delta, NULL));
    assert_linked(f->dst, xy, 2, false);
    compare_trees(f->src, f->dst, NULL);
    ASSERT_OK(cs_tree_restore(rd, &linked, f->dst, &delta, NULL));
    assert_linked(f->dst, xy, 2, true);
    _cleanup_free_ char *p = NULL, *dy = path_join(f->dst, "y");
    size_t n = 0;
    ASSERT_OK(read_file(dy, 100, &p, &n));
    assert_int_equal(n, 6);
    assert_memory_equal(p, "linked", 6);
    /* Overwriting a non-delta restore too. */
    ASSERT_OK(cs_tree_restore(rd, &linked, f->dst,
                              &(CsRestoreParams){ .is_overwrite_allowed = true }, NULL));
    assert_linked(f->dst, xy, 2, true);
    cs_reader_free(rd);
    cs_content_ref_free(&linked);
    cs_content_ref_free(&apart);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
RUN_TESTS(T(test_tree_hooks), cmocka_unit_test(test_dir_roundtrip), cmocka_unit_test(test_dir_decode_rejects),
          cmocka_unit_test(test_dir_records_roundtrip), cmocka_unit_test(test_dir_records_rejects),
          cmocka_unit_test(test_entry_seek),
          T(test_tree_store_restore), T(test_tree_lookup), T(test_tree_restore_not_empty),
          T(test_tree_empty), T(test_tree_vanishing_entries), T(test_tree_restore_delta),
          T(test_tree_observer), T(test_tree_whole), T(test_tree_hole_written_meanwhile),
          T(test_tree_whole_version4), T(test_tree_delta_links))
