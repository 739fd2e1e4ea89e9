/*
 * WAL page headers byte by byte (agent/wal-format.c), and archive /
 * restore / check against a real repository (agent/wal.c) with synthetic 1 MiB segments:
 * round trips, "same bytes again" and "other bytes under an archived name", a missing file,
 * gaps, and objects forged with the repository key (a name whose header does not match, a
 * wrong system identifier, a wrong digest) that restore must refuse without touching the
 * target.
 */
#include "tests/unit/harness.h"
#include "tests/unit/test-wal-object.h"
#include "tests/unit/test-repo.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/wal-format.c"
#include "agent/wal.c"

#include "chunkstore/catalog.h"
#include "chunkstore/repo.h"
#include "common/endian.h"
#include "common/fs-util.h"

#define PASSPHRASE "wal test passphrase"
#define SEG_SIZE   (1u << 20)
#define SYSID      UINT64_C(7301234567890123456)

/* ---- page header ---- */

static void put_header(uint8_t *p, uint16_t magic, uint16_t info, uint32_t tli, uint64_t addr,
                       uint64_t sysid, uint32_t seg_size, uint32_t blcksz)
{
    memset(p, 0, AGENT_WAL_LONG_HEADER_SIZE);
    put_le16(p + 0, magic);
    put_le16(p + 2, info);
    put_le32(p + 4, tli);
    put_le64(p + 8, addr);
    put_le32(p + 16, 0);
    put_le64(p + 24, sysid);
    put_le32(p + 32, seg_size);
    put_le32(p + 36, blcksz);
}

static void test_header(void **state)
{
    (void)state;
    uint8_t h[AGENT_WAL_LONG_HEADER_SIZE];
    CsWalName n;
    AgentWalHeader hd;
    char why[256];
    const uint64_t seg16 = 16u << 20;
    ASSERT_OK(cs_wal_name_parse("000000030000000100000002", &n));
    const uint64_t start = (1 * 256 + 2) * seg16;

    put_header(h, 0xD110, 0x0002, 3, start, SYSID, (uint32_t)seg16, 8192);
    ASSERT_OK(agent_wal_header_check(&n, h, sizeof(h), seg16, &hd, why, sizeof(why)));
    assert_int_equal(hd.sysid, SYSID);
    assert_int_equal(hd.seg_size, seg16);
    assert_int_equal(agent_wal_magic_to_version(hd.magic), 15);
    /* A record continued from the previous segment sets XLP_FIRST_IS_CONTRECORD too. */
    put_le16(h + 2, 0x0003);
    ASSERT_OK(agent_wal_header_check(&n, h, sizeof(h), seg16, NULL, why, sizeof(why)));
    /* Pages copied from the parent timeline at the start of a new one. */
    put_header(h, 0xD110, 0x0002, 1, start, SYSID, (uint32_t)seg16, 8192);
    ASSERT_OK(agent_wal_header_check(&n, h, sizeof(h), seg16, NULL, why, sizeof(why)));

    static const struct {
        uint16_t magic, info;
        uint32_t tli;
        uint64_t addr, file_size;
        uint32_t seg_size, blcksz;
        const char *why;
    } bad[] = {
        { 0xD0FF, 2, 3, 0, 0, 0, 8192, "page magic 0xD0FF is not that of any known" },
        { 0xD110, 0, 3, 0, 0, 0, 8192, "page flags 0x0000" },
        { 0xD110, 0x0012, 3, 0, 0, 0, 8192, "page flags 0x0012" },
        { 0xD110, 2, 4, 0, 0, 0, 8192, "header is for timeline 4 but the name is for timeline 3" },
        { 0xD110, 2, 0, 0, 0, 0, 8192, "header is for timeline 0" },
        { 0xD110, 2, 3, 1, 0, 0, 8192, "header is for LSN 1/03000000 but the name is for LSN 1/02000000" },
        { 0xD110, 2, 3, 0, 8u << 20, 0, 8192, "file is 8388608 bytes but its header says segments are 16777216" },
        { 0xD110, 2, 3, 0, 0, 3u << 20, 8192, "segment size 3145728 in the header is not a power of two" },
        { 0xD110, 2, 3, 0, 0, 2u << 30, 8192, "segment size 2147483648" },
        { 0xD110, 2, 3, 0, 0, 512u << 10, 8192, "segment size 524288" },
        { 0xD110, 2, 3, 0, 0, 0, 3000, "WAL block size 3000" },
        { 0xD110, 2, 3, 0, 0, 0, 128u << 10, "WAL block size 131072" },
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        uint32_t seg_size = bad[i].seg_size ? bad[i].seg_size : (uint32_t)seg16;
        uint64_t file_size = bad[i].file_size ? bad[i].file_size : seg_size;
        uint64_t addr = start + bad[i].addr * seg16;
        put_header(h, bad[i].magic, bad[i].info, bad[i].tli, addr, SYSID, seg_size, bad[i].blcksz);
        ASSERT_ERR(EBADMSG, agent_wal_header_check(&n, h, sizeof(h), file_size, NULL, why,
                                                   sizeof(why)));
        if (!strstr(why, bad[i].why))
            fail_msg("case %zu: \"%s\" does not contain \"%s\"", i, why, bad[i].why);
    }
    /* With 1 GiB segments (4 per log id) the same name is another LSN. */
    put_header(h, 0xD110, 2, 3, start, SYSID, 1u << 30, 8192);
    ASSERT_ERR(EBADMSG, agent_wal_header_check(&n, h, sizeof(h), 1u << 30, NULL, why, sizeof(why)));
    put_header(h, 0xD110, 2, 3, start, SYSID, (uint32_t)seg16, 8192);
    ASSERT_ERR(EBADMSG, agent_wal_header_check(&n, h, 39, seg16, NULL, why, sizeof(why)));
    assert_non_null(strstr(why, "too short"));
    ASSERT_OK(cs_wal_name_parse("00000002.history", &n));
    ASSERT_ERR(EINVAL, agent_wal_header_check(&n, h, sizeof(h), seg16, NULL, why, sizeof(why)));

    static const struct {
        uint16_t magic;
        int version;
    } versions[] = { { 0xD106, 13 }, { 0xD10D, 14 }, { 0xD110, 15 }, { 0xD113, 16 },
                     { 0xD116, 17 }, { 0xD118, 18 }, { 0xD101, 0 },  { 0, 0 } };
    for (size_t i = 0; i < ARRAY_SIZE(versions); i++)
        assert_int_equal(agent_wal_magic_to_version(versions[i].magic), versions[i].version);
}

/* ---- against a repository ---- */

typedef TestRepo Fixture;

static int setup(void **state)
{
    Fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    test_repo_create(f, "wal", PASSPHRASE);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    Fixture *f = *state;
    test_repo_destroy(f);
    free(f);
    return 0;
}

/* A 1 MiB segment of timeline 1 with a valid long header and pseudo-random body; returns its
 * path (caller frees). `salt` varies the body. */
static char *write_segment(const Fixture *f, uint64_t segno, uint32_t salt)
{
    char *path = NULL;
    assert_true(asprintf(&path, "%s/seg-%llu-%u", f->base, (unsigned long long)segno, salt) > 0);
    uint8_t *b = test_xmalloc(SEG_SIZE);
    uint64_t x = segno * 0x9E3779B97F4A7C15u + salt + 1;
    for (size_t i = 0; i < SEG_SIZE; i += 8) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        memcpy(b + i, &x, 8);
    }
    put_header(b, 0xD110, 0x0002, 1, segno * SEG_SIZE, SYSID, SEG_SIZE, 8192);
    ASSERT_OK(write_file_atomic(path, b, SEG_SIZE, 0600));
    free(b);
    return path;
}

static char *seg_name(uint64_t segno)
{
    char *s = test_xmalloc(25);
    cs_wal_segment_name(1, segno, SEG_SIZE, s);
    return s;
}

static void assert_same_file(const char *a, const char *b)
{
    char *x, *y;
    size_t nx, ny;
    ASSERT_OK(read_file(a, 1u << 30, &x, &nx));
    ASSERT_OK(read_file(b, 1u << 30, &y, &ny));
    assert_int_equal(nx, ny);
    assert_memory_equal(x, y, nx);
    free(x);
    free(y);
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        n += de->d_name[0] != '.';
    closedir(d);
    return n;
}

static void test_archive_restore(void **state)
{
    Fixture *f = *state;
    AgentWalArchiveResult res;
    _cleanup_free_ char *s1 = write_segment(f, 1, 0), *s1b = write_segment(f, 1, 1);
    _cleanup_free_ char *n1 = seg_name(1), *n2 = seg_name(2);
    _cleanup_free_ char *out = path_join(f->base, "out"), *outdir = path_join(f->base, "outdir");

    ASSERT_OK(agent_wal_archive(f->repo, "n", s1, n1, &res));
    assert_false(res.is_duplicate);
    assert_int_equal(res.pg_version, 15);
    assert_int_equal(res.size, SEG_SIZE);
    assert_true(res.new_bytes == SEG_SIZE);
    ASSERT_OK(agent_wal_restore(f->repo, "n", n1, out));
    assert_same_file(s1, out);

    /* Same bytes again: success, nothing written. Other bytes: -EEXIST, object unchanged. */
    uint64_t size_before;
    ASSERT_OK(cs_backend_stat(f->repo->backend, "wal/n/00000001/000000010000000000000001",
                              &size_before));
    ASSERT_OK(agent_wal_archive(f->repo, "n", s1, n1, &res));
    assert_true(res.is_duplicate);
    ASSERT_ERR(EEXIST, agent_wal_archive(f->repo, "n", s1b, n1, &res));
    ASSERT_OK(agent_wal_restore(f->repo, "n", n1, out));
    assert_same_file(s1, out);
    /* Misnamed: the header is for segment 1. */
    ASSERT_ERR(EBADMSG, agent_wal_archive(f->repo, "n", s1, n2, &res));
    assert_int_equal(agent_wal_restore(f->repo, "n", n2, out), AGENT_WAL_NOT_ARCHIVED);
    assert_int_equal(agent_wal_restore(f->repo, "other", n1, out), AGENT_WAL_NOT_ARCHIVED);
    ASSERT_ERR(EINVAL, agent_wal_restore(f->repo, "n", "RECOVERYXLOG", out));
    ASSERT_ERR(EINVAL, agent_wal_archive(f->repo, "n/x", s1, n1, &res));

    /* Text files and an empty one. */
    _cleanup_free_ char *hist = path_join(f->base, "00000002.history");
    static const char text[] = "1\t0/3000000\tno recovery target specified\n";
    ASSERT_OK(write_file_atomic(hist, text, strlen(text), 0600));
    ASSERT_OK(agent_wal_archive(f->repo, "n", hist, "00000002.history", &res));
    ASSERT_OK(agent_wal_restore(f->repo, "n", "00000002.history", out));
    assert_same_file(hist, out);
    ASSERT_OK(write_file_atomic(hist, "", 0, 0600));
    ASSERT_OK(agent_wal_archive(f->repo, "n", hist, "000000010000000000000001.00000028.backup",
                                &res));
    ASSERT_OK(agent_wal_restore(f->repo, "n", "000000010000000000000001.00000028.backup", out));
    assert_same_file(hist, out);

    /* A read-only open restores. */
    CsRepo *ro;
    ASSERT_OK(cs_repo_open(f->location, &(CsOpenParams){ .read_only = true }, &f->key, &ro));
    ASSERT_OK(agent_wal_restore(ro, "n", n1, out));
    assert_same_file(s1, out);
    ASSERT_ERR(EROFS, agent_wal_archive(ro, "n", s1, n1, &res));
    cs_repo_close(ro);

    /* Restores into a directory leave only the target. */
    assert_int_equal(mkdir(outdir, 0700), 0);
    _cleanup_free_ char *target = path_join(outdir, "RECOVERYXLOG");
    ASSERT_OK(agent_wal_restore(f->repo, "n", n1, target));
    assert_int_equal(agent_wal_restore(f->repo, "n", n2, target), AGENT_WAL_NOT_ARCHIVED);
    assert_int_equal(count_entries(outdir), 1);
    /* A failure that is not a missing file stays an error, whatever its errno. */
    _cleanup_free_ char *no_dir = path_join(outdir, "missing/RECOVERYXLOG");
    ASSERT_ERR(ENOENT, agent_wal_restore(f->repo, "n", n1, no_dir));
}

/* Write a sealed WAL object for `filename` of `node` as a writer with the key could. */
static void forge(Fixture *f, const char *node, const char *filename, const CsWalObject *like,
                  uint64_t sysid, uint8_t sha_xor)
{
    CsWalName n;
    char objname[CS_WAL_OBJECT_NAME_MAX];
    ASSERT_OK(cs_wal_name_parse(filename, &n));
    ASSERT_OK(cs_wal_object_name(node, &n, objname, sizeof(objname)));
    CsWalObject o = *like;
    strcpy(o.name, filename);
    o.sysid = sysid;
    o.sha256[0] ^= sha_xor;
    test_wal_object_put(f->repo, objname, &o);
}

static void test_restore_refuses_forged(void **state)
{
    Fixture *f = *state;
    AgentWalArchiveResult res;
    _cleanup_free_ char *s1 = write_segment(f, 1, 0);
    _cleanup_free_ char *n1 = seg_name(1), *n2 = seg_name(2), *n3 = seg_name(3);
    _cleanup_free_ char *dir = path_join(f->base, "pg_wal");
    _cleanup_free_ char *target = path_join(dir, "RECOVERYXLOG");
    ASSERT_OK(agent_wal_archive(f->repo, "n", s1, n1, &res));
    CsWalObject o = { 0 };
    ASSERT_OK(cs_wal_object_load(f->repo, "wal/n/00000001/000000010000000000000001", &o));
    assert_int_equal(o.sysid, SYSID);

    assert_int_equal(mkdir(dir, 0700), 0);
    ASSERT_OK(write_file_atomic(target, "old", 3, 0600));
    /* Segment 1's bytes under the name of segment 2: the header does not match. */
    forge(f, "n", n2, &o, SYSID, 0);
    ASSERT_ERR(EBADMSG, agent_wal_restore(f->repo, "n", n2, target));
    /* The right bytes with another system identifier recorded. */
    forge(f, "sys", n1, &o, SYSID + 1, 0);
    ASSERT_ERR(EBADMSG, agent_wal_restore(f->repo, "sys", n1, target));
    /* A digest that does not match. */
    forge(f, "sha", n1, &o, SYSID, 1);
    ASSERT_ERR(EBADMSG, agent_wal_restore(f->repo, "sha", n1, target));
    /* An object copied to another name does not open: the name is its AAD. */
    uint8_t *data;
    size_t n;
    ASSERT_OK(cs_backend_get(f->repo->backend, "wal/n/00000001/000000010000000000000001", 1 << 20,
                             &data, &n));
    ASSERT_OK(cs_backend_put(f->repo->backend, "wal/n/00000001/000000010000000000000003", data, n,
                             false));
    free(data);
    ASSERT_ERR(EBADMSG, agent_wal_restore(f->repo, "n", n3, target));
    /* Nothing was written: the old target is there and alone. */
    char *text;
    ASSERT_OK(read_file(target, 100, &text, &n));
    assert_string_equal(text, "old");
    free(text);
    assert_int_equal(count_entries(dir), 1);
    cs_wal_object_clear(&o);
}

static void test_check(void **state)
{
    Fixture *f = *state;
    AgentWalArchiveResult res;
    static const uint64_t have[] = { 5, 6, 7, 9, 4095, 4096, 4100 };
    for (size_t i = 0; i < ARRAY_SIZE(have); i++) {
        _cleanup_free_ char *s = write_segment(f, have[i], 0), *name = seg_name(have[i]);
        ASSERT_OK(agent_wal_archive(f->repo, "c", s, name, &res));
    }
    _cleanup_free_ char *hist = path_join(f->base, "00000002.history");
    ASSERT_OK(write_file_atomic(hist, "x\n", 2, 0600));
    ASSERT_OK(agent_wal_archive(f->repo, "c", hist, "00000002.history", &res));

    AgentWalReport *r;
    ASSERT_ERR(ENOENT, agent_wal_check(f->repo, "nobody", &r));
    ASSERT_OK(agent_wal_check(f->repo, "c", &r));
    assert_int_equal(r->n_timelines, 1);
    const AgentWalTimeline *t = &r->timelines[0];
    assert_int_equal(t->first, 5);
    assert_int_equal(t->last, 4100);
    assert_int_equal(t->n_segments, 7);
    /* 8, 10..4094, 4097..4099 */
    assert_int_equal(t->n_missing, 1 + (4094 - 10 + 1) + 3);
    assert_int_equal(t->missing[0], 8);
    assert_int_equal(t->missing[1], 10);
    assert_int_equal(t->missing[t->n_missing_kept - 1], 4099);
    assert_int_equal(r->n_history, 1);
    assert_string_equal(r->history[0], "00000002.history");
    assert_int_equal(r->n_sysids, 1);
    ASSERT_ERR(ENODATA, agent_wal_report_status(r));
    FILE *devnull = fopen("/dev/null", "w");
    ASSERT_OK(agent_wal_report_print(r, false, devnull));
    ASSERT_OK(agent_wal_report_print(r, true, devnull));
    fclose(devnull);
    agent_wal_report_free(r);

    /* A damaged object is reported, not fatal. */
    ASSERT_OK(cs_backend_put(f->repo->backend, "wal/c/00000001/000000010000000000000008", "junk",
                             4, false));
    ASSERT_OK(agent_wal_check(f->repo, "c", &r));
    assert_int_equal(r->n_damaged, 1);
    assert_string_equal(r->damaged[0], "wal/c/00000001/000000010000000000000008");
    ASSERT_ERR(EBADMSG, agent_wal_report_status(r));
    agent_wal_report_free(r);

    /* A complete chain. */
    for (uint64_t s = 1; s <= 3; s++) {
        _cleanup_free_ char *p = write_segment(f, s, 0), *name = seg_name(s);
        ASSERT_OK(agent_wal_archive(f->repo, "ok", p, name, &res));
    }
    ASSERT_OK(agent_wal_check(f->repo, "ok", &r));
    ASSERT_OK(agent_wal_report_status(r));
    assert_int_equal(r->timelines[0].n_segments, 3);
    agent_wal_report_free(r);
}

RUN_TESTS(cmocka_unit_test(test_header),
          cmocka_unit_test_setup_teardown(test_archive_restore, setup, teardown),
          cmocka_unit_test_setup_teardown(test_restore_refuses_forged, setup, teardown),
          cmocka_unit_test_setup_teardown(test_check, setup, teardown))
