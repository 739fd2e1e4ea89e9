/*
 * WAL file names and the repository's WAL object byte by byte (chunkstore/wal-object.c), and
 * cs_wal_list against a real repository: names in the wrong directory are skipped.
 */
#include "tests/unit/harness.h"
#include "tests/unit/test-wal-object.h"
#include "tests/unit/test-repo.h"

#include "chunkstore/catalog.h"
#include "chunkstore/wal-object.h"
#include "common/endian.h"

#define SYSID UINT64_C(7301234567890123456)

/* ---- names ---- */

static void test_names(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int kind; /* 0: refused */
        uint32_t tli, log, seg;
    } cases[] = {
        { "000000010000000000000001", CS_WAL_SEGMENT, 1, 0, 1 },
        { "0000000A00000003000000FF", CS_WAL_SEGMENT, 10, 3, 255 },
        { "FFFFFFFFFFFFFFFFFFFFFFFF", CS_WAL_SEGMENT, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF },
        { "000000020000000000000005.partial", CS_WAL_PARTIAL, 2, 0, 5 },
        { "00000002.history", CS_WAL_HISTORY, 2, 0, 0 },
        { "000000010000000000000002.00000028.backup", CS_WAL_BACKUP, 1, 0, 2 },
        { "00000001000000000000000a", 0 },     /* lowercase: PostgreSQL never writes it */
        { "00000001000000000000001", 0 },      /* 23 digits */
        { "0000000100000000000000012", 0 },    /* 25 digits */
        { "000000000000000000000001", 0 },     /* timeline 0 */
        { "00000000.history", 0 },
        { "0000001.history", 0 },
        { "00000002.History", 0 },
        { "000000010000000000000001.part", 0 },
        { "000000010000000000000001.partial.x", 0 },
        { "000000010000000000000002.0000028.backup", 0 },
        { "000000010000000000000002.00000028.backups", 0 },
        { "000000010000000000000002.0000002G.backup", 0 },
        { "RECOVERYXLOG", 0 },
        { "", 0 },
        { "../000000010000000000000001", 0 },
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        CsWalName n;
        int r = cs_wal_name_parse(cases[i].name, &n);
        if (!cases[i].kind) {
            if (r != -EINVAL)
                fail_msg("\"%s\" was accepted", cases[i].name);
            continue;
        }
        if (r < 0)
            fail_msg("\"%s\" was refused", cases[i].name);
        assert_int_equal(n.kind, cases[i].kind);
        assert_int_equal(n.tli, cases[i].tli);
        assert_int_equal(n.log, cases[i].log);
        assert_int_equal(n.seg, cases[i].seg);
        assert_string_equal(n.name, cases[i].name);
    }
}

static void test_segno(void **state)
{
    (void)state;
    CsWalName n;
    uint64_t segno = 0;
    char out[25];
    ASSERT_OK(cs_wal_name_parse("0000000100000003000000FF", &n));
    ASSERT_OK(cs_wal_segno(&n, 16u << 20, &segno)); /* 256 segments per log id */
    assert_int_equal(segno, 3 * 256 + 255);
    cs_wal_segment_name(1, segno, 16u << 20, out);
    assert_string_equal(out, "0000000100000003000000FF");
    ASSERT_ERR(EINVAL, cs_wal_segno(&n, 1u << 30, &segno)); /* only 4 per log id */
    ASSERT_ERR(EINVAL, cs_wal_segno(&n, 3u << 20, &segno)); /* not a power of two */
    ASSERT_ERR(EINVAL, cs_wal_segno(&n, 512u << 10, &segno));
    ASSERT_OK(cs_wal_segno(&n, 1u << 20, &segno));
    assert_int_equal(segno, 3 * 4096 + 255);
    cs_wal_segment_name(1, 4096, 1u << 20, out);
    assert_string_equal(out, "000000010000000100000000");
    ASSERT_OK(cs_wal_name_parse("00000002.history", &n));
    ASSERT_ERR(EINVAL, cs_wal_segno(&n, 16u << 20, &segno));

    uint64_t lsn;
    ASSERT_OK(cs_wal_lsn_parse("16/B374D848", &lsn));
    assert_int_equal(lsn, UINT64_C(0x16B374D848));
    ASSERT_OK(cs_wal_lsn_parse("0/0", &lsn));
    assert_int_equal(lsn, 0);
    static const char *const bad[] = { "", "16", "16/", "/1", "1/2x", " 1/2", "-1/2", "1/-2",
                                       "123456789/0", "g/1" };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
        if (cs_wal_lsn_parse(bad[i], &lsn) != -EINVAL)
            fail_msg("LSN \"%s\" was accepted", bad[i]);
}

/* ---- WAL object ---- */

static void make_object(CsWalObject *o, const char *name, CsWalKind kind, uint32_t count)
{
    *o = (CsWalObject){ .kind = kind, .xlp_magic = cs_wal_kind_has_header(kind) ? 0xD110 : 0,
                        .sysid = cs_wal_kind_has_header(kind) ? SYSID : 0,
                        .archived_at = 1795269502 };
    strcpy(o->name, name);
    for (int i = 0; i < 32; i++)
        o->sha256[i] = (uint8_t)(i * 7);
    o->content.count = count;
    o->content.entries = calloc(count ? count : 1, sizeof(*o->content.entries));
    assert_non_null(o->content.entries);
    for (uint32_t i = 0; i < count; i++) {
        memset(o->content.entries[i].id.bytes, (int)i + 1, CS_CHUNK_ID_SIZE);
        o->content.entries[i].length = 1000 + i;
        o->content.size += 1000 + i;
    }
    o->size = o->content.size;
}

static void test_object(void **state)
{
    (void)state;
    CsWalObject o, d;
    _cleanup_(buf_free) Buf b = BUF_INIT;
    make_object(&o, "000000010000000000000002.partial", CS_WAL_PARTIAL, 3);
    ASSERT_OK(cs_wal_object_encode(&o, &b));
    assert_int_equal(b.size, CS_WAL_OBJECT_FIXED + 32 + 13 + 3 * 36);
    /* The fixed part, byte by byte (docs/FORMAT.md). */
    static const uint8_t head[16] = { 0x57, 0x41, 0x4C, 0x31, 1, 0,  0, 0,
                                      2,    0,    0x10, 0xD1, 32, 0, 0, 0 };
    assert_memory_equal(b.data, head, sizeof(head));
    assert_int_equal(get_le64(b.data + 16), o.size);
    assert_int_equal(get_le64(b.data + 24), SYSID);
    assert_int_equal(get_le64(b.data + 32), 1795269502);
    assert_memory_equal(b.data + 40, o.sha256, 32);
    assert_memory_equal(b.data + 72, o.name, 32);
    assert_int_equal(get_le64(b.data + 104), o.size); /* content reference: size, level, count */
    assert_int_equal(b.data[112], 0);
    assert_int_equal(get_le32(b.data + 113), 3);

    ASSERT_OK(cs_wal_object_decode(b.data, b.size, &d));
    assert_int_equal(d.kind, o.kind);
    assert_int_equal(d.xlp_magic, 0xD110);
    assert_int_equal(d.size, o.size);
    assert_int_equal(d.sysid, SYSID);
    assert_int_equal(d.archived_at, 1795269502);
    assert_memory_equal(d.sha256, o.sha256, 32);
    assert_string_equal(d.name, o.name);
    assert_int_equal(d.content.count, 3);
    assert_memory_equal(d.content.entries, o.content.entries, 3 * sizeof(*d.content.entries));
    cs_wal_object_clear(&d);

    /* Every truncation, a trailing byte, and each checked field. */
    for (size_t n = 0; n < b.size; n++)
        ASSERT_ERR(EBADMSG, cs_wal_object_decode(b.data, n, &d));
    ASSERT_OK(buf_append(&b, "", 1));
    ASSERT_ERR(EBADMSG, cs_wal_object_decode(b.data, b.size, &d));
    b.size--;
    static const struct {
        size_t off;
        uint8_t value;
        int err;
    } flips[] = {
        { 0, 0x58, EBADMSG }, { 4, 2, EPROTONOSUPPORT }, { 4, 0, EBADMSG }, { 8, 1, EBADMSG },
        { 8, 5, EBADMSG },    { 9, 1, EBADMSG },         { 12, 31, EBADMSG },
        { 12, 0, EBADMSG },   { 16, 0, EBADMSG },        { 72, 'x', EBADMSG }, { 112, 5, EBADMSG },
    };
    for (size_t i = 0; i < ARRAY_SIZE(flips); i++) {
        uint8_t saved = b.data[flips[i].off];
        b.data[flips[i].off] = flips[i].value;
        int r = cs_wal_object_decode(b.data, b.size, &d);
        if (r != -flips[i].err)
            fail_msg("byte %zu = %u: got %d", flips[i].off, flips[i].value, r);
        b.data[flips[i].off] = saved;
    }
    put_le16(b.data + 10, 0); /* a partial segment without its header's magic */
    ASSERT_ERR(EBADMSG, cs_wal_object_decode(b.data, b.size, &d));
    cs_wal_object_clear(&o);

    /* History files carry no header fields; a name of another kind is refused. */
    buf_clear(&b);
    make_object(&o, "00000002.history", CS_WAL_HISTORY, 1);
    ASSERT_OK(cs_wal_object_encode(&o, &b));
    ASSERT_OK(cs_wal_object_decode(b.data, b.size, &d));
    assert_int_equal(d.xlp_magic, 0);
    cs_wal_object_clear(&d);
    o.kind = CS_WAL_SEGMENT;
    ASSERT_ERR(EINVAL, cs_wal_object_encode(&o, &b));
    cs_wal_object_clear(&o);
}

static void test_node_and_object_names(void **state)
{
    (void)state;
    static const struct {
        const char *node;
        bool ok;
    } nodes[] = {
        { "db1", true },  { "db-1.example.com", true }, { "A_b", true },  { "", false },
        { ".x", false },  { "-x", false },              { "a..b", false }, { "a/b", false },
        { "a b", false }, { "x\n", false },
        { "12345678901234567890123456789012345678901234567890123456789012345", false },
    };
    for (size_t i = 0; i < ARRAY_SIZE(nodes); i++)
        if (cs_wal_node_is_valid(nodes[i].node) != nodes[i].ok)
            fail_msg("node \"%s\"", nodes[i].node);
    CsWalName n;
    char out[CS_WAL_OBJECT_NAME_MAX];
    ASSERT_OK(cs_wal_name_parse("0000000200000000000000A1.partial", &n));
    ASSERT_OK(cs_wal_object_name("db1", &n, out, sizeof(out)));
    assert_string_equal(out, "wal/db1/00000002/0000000200000000000000A1.partial");
    ASSERT_OK(cs_wal_name_parse("00000002.history", &n));
    ASSERT_OK(cs_wal_object_name("db1", &n, out, sizeof(out)));
    assert_string_equal(out, "wal/db1/history/00000002.history");
    ASSERT_ERR(ENAMETOOLONG, cs_wal_object_name("db1", &n, out, 20));
}

/* ---- in a repository ---- */

static void put_object(TestRepo *t, const char *objname, const char *filename, CsWalKind kind)
{
    CsWalObject o;
    make_object(&o, filename, kind, 1);
    test_wal_object_put(t->repo, objname, &o);
    cs_wal_object_clear(&o);
}

typedef struct Listed {
    char names[8][CS_WAL_OBJECT_NAME_MAX];
    size_t n;
} Listed;

static int listed_add(const char *objname, const CsWalName *name, void *userdata)
{
    Listed *l = userdata;
    assert_true(l->n < ARRAY_SIZE(l->names));
    assert_non_null(strstr(objname, name->name));
    strcpy(l->names[l->n++], objname);
    return 0;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void test_list_and_load(void **state)
{
    (void)state;
    TestRepo t;
    test_repo_create(&t, "wal-object", "wal object passphrase");
    static const char *const seg = "000000010000000000000003";
    put_object(&t, "wal/db1/00000001/000000010000000000000003", seg, CS_WAL_SEGMENT);
    put_object(&t, "wal/db1/00000002/000000020000000000000004", "000000020000000000000004",
               CS_WAL_SEGMENT);
    put_object(&t, "wal/db1/history/00000002.history", "00000002.history", CS_WAL_HISTORY);
    put_object(&t, "wal/db2/00000001/000000010000000000000001", "000000010000000000000001",
               CS_WAL_SEGMENT);
    /* Names in the wrong directory are not WAL objects of this layout. */
    put_object(&t, "wal/db1/00000002/000000010000000000000005", "000000010000000000000005",
               CS_WAL_SEGMENT);
    put_object(&t, "wal/db1/00000001/00000003.history", "00000003.history", CS_WAL_HISTORY);

    Listed all = { 0 }, one = { 0 };
    ASSERT_OK(cs_wal_list(t.repo, "db1", NULL, listed_add, &all));
    qsort(all.names, all.n, sizeof(all.names[0]), cmp_name);
    assert_int_equal(all.n, 3);
    assert_string_equal(all.names[0], "wal/db1/00000001/000000010000000000000003");
    assert_string_equal(all.names[1], "wal/db1/00000002/000000020000000000000004");
    assert_string_equal(all.names[2], "wal/db1/history/00000002.history");
    ASSERT_OK(cs_wal_list(t.repo, "db1", "00000002", listed_add, &one));
    assert_int_equal(one.n, 1);
    assert_string_equal(one.names[0], "wal/db1/00000002/000000020000000000000004");
    Listed none = { 0 };
    ASSERT_OK(cs_wal_list(t.repo, "db3", NULL, listed_add, &none));
    assert_int_equal(none.n, 0);
    ASSERT_ERR(EINVAL, cs_wal_list(t.repo, "../x", NULL, listed_add, &none));
    ASSERT_ERR(EINVAL, cs_wal_list(t.repo, "db1", "../db2", listed_add, &none));

    CsWalObject o;
    ASSERT_OK(cs_wal_object_load(t.repo, "wal/db1/00000001/000000010000000000000003", &o));
    assert_string_equal(o.name, seg);
    assert_int_equal(o.kind, CS_WAL_SEGMENT);
    assert_int_equal(o.size, 1000);
    cs_wal_object_clear(&o);
    ASSERT_ERR(ENOENT, cs_wal_object_load(t.repo, "wal/db1/00000001/000000010000000000000009", &o));
    /* An object that records another file than its name says, and one sealed under another
     * name, are both damage. */
    ASSERT_ERR(EBADMSG,
               cs_wal_object_load(t.repo, "wal/db1/00000002/000000010000000000000005", &o));
    uint8_t *data;
    size_t n;
    ASSERT_OK(cs_backend_get(t.repo->backend, "wal/db2/00000001/000000010000000000000001", 4096,
                             &data, &n));
    ASSERT_OK(cs_backend_put(t.repo->backend, "wal/db2/00000001/000000010000000000000002", data,
                             n, false));
    free(data);
    ASSERT_ERR(EBADMSG,
               cs_wal_object_load(t.repo, "wal/db2/00000001/000000010000000000000002", &o));
    test_repo_destroy(&t);
}

RUN_TESTS(cmocka_unit_test(test_names), cmocka_unit_test(test_segno),
          cmocka_unit_test(test_object), cmocka_unit_test(test_node_and_object_names),
          cmocka_unit_test(test_list_and_load))
