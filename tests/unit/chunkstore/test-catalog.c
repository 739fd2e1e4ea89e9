/*
 * Snapshot records that do not load (chunkstore/catalog): a record that cannot be read is told
 * apart from a damaged one, listed as a problem with its errno, and nothing that picks a
 * snapshot by "latest", name or prefix picks past it; the full id of a record that loads still
 * finds it. The record that cannot be read has mode 0000 and is read without the capabilities
 * that let root read any file; another is over the size a record may have.
 */
#include "tests/unit/harness.h"
#include "tests/unit/test-repo.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <jansson.h>

#include "chunkstore/catalog.h"
#include "chunkstore/store.h"
#include "common/macro.h"

#define PASSPHRASE "correct horse battery staple"

typedef struct Fixture {
    TestRepo t;
    CsSnapshot s[3]; /* "db", "other", "db", oldest first */
} Fixture;

static int setup(void **state)
{
    Fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    test_repo_create(&f->t, "catalog", PASSPHRASE);
    CsWriter *w = NULL;
    CsContentRef root = { 0 };
    ASSERT_OK(cs_writer_new(f->t.repo, NULL, &w));
    ASSERT_OK(cs_writer_put_buf(w, "some bytes", 10, CS_CHUNKING_CDC, &root));
    ASSERT_OK(cs_writer_flush(w));
    cs_writer_free(w);
    static const char *const names[3] = { "db", "other", "db" };
    for (int i = 0; i < 3; i++) {
        CsSnapshot *s = &f->s[i];
        s->name = strdup(names[i]);
        s->kind = strdup("stream");
        s->time = 1000 * (i + 1);
        s->meta = json_object();
        assert_true(s->name && s->kind && s->meta);
        ASSERT_OK(cs_content_ref_copy(&root, &s->root));
        ASSERT_OK(cs_catalog_add(f->t.repo, s));
    }
    cs_content_ref_free(&root);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    Fixture *f = *state;
    for (int i = 0; i < 3; i++)
        cs_snapshot_clear(&f->s[i]);
    test_repo_destroy(&f->t);
    free(f);
    return 0;
}

static char *record_path(const Fixture *f, const char *id)
{
    char *p = NULL;
    assert_true(asprintf(&p, "%s/snapshots/%s", f->t.location, id) > 0);
    return p;
}

/* What every command sees while snapshot f->s[victim] does not load with `error`: the others
 * listed, the victim a problem, and a spec resolved only when it is the full id of another. */
static void check_victim(Fixture *f, int victim, int error)
{
    CsCatalog cat;
    ASSERT_OK(cs_catalog_load(f->t.repo, &cat));
    assert_int_equal(cat.n_snaps, 2);
    assert_int_equal(cat.n_problems, 1);
    const CsCatalogProblem *p = &cat.problems[0];
    assert_string_equal(p->id, f->s[victim].id);
    _cleanup_free_ char *object = NULL;
    assert_true(asprintf(&object, "snapshots/%s", f->s[victim].id) > 0);
    assert_string_equal(p->object, object);
    assert_int_equal(p->error, error);
    assert_int_equal(cs_catalog_problem_is_damage(p), error == -EBADMSG);
    assert_int_equal(cs_catalog_problems_error(&cat), error);

    size_t index = SIZE_MAX;
    const CsCatalogProblem *in_the_way;
    for (int i = 0; i < 3; i++) {
        int r = cs_catalog_resolve(&cat, f->s[i].id, &index, &in_the_way);
        if (i == victim) {
            assert_int_equal(r, error);
            assert_ptr_equal(in_the_way, p);
        } else {
            ASSERT_OK(r);
            assert_null(in_the_way);
            assert_string_equal(cat.snaps[index].id, f->s[i].id);
        }
    }
    /* The victim may be what these mean: the newest, the newest "db", the one with that prefix
     * or name. */
    char prefix[5];
    memcpy(prefix, f->s[victim == 0 ? 1 : 0].id, 4);
    prefix[4] = 0;
    const char *const guesses[] = { "latest", "db", "other", prefix, "no-such-name" };
    for (size_t i = 0; i < ARRAY_SIZE(guesses); i++) {
        in_the_way = NULL;
        assert_int_equal(cs_catalog_resolve(&cat, guesses[i], &index, &in_the_way), error);
        assert_ptr_equal(in_the_way, p);
    }
    cs_catalog_clear(&cat);

    CsSnapshot *v = NULL, found;
    size_t n = 0;
    assert_int_equal(cs_catalog_list(f->t.repo, &v, &n), error);
    assert_int_equal(cs_catalog_find(f->t.repo, "latest", &found), error);
    assert_int_equal(cs_catalog_find_or_log(f->t.repo, "db", &found), error);
    assert_int_equal(cs_catalog_find_or_log(f->t.repo, f->s[victim].id, &found), error);
    int other = victim == 2 ? 1 : 2;
    ASSERT_OK(cs_catalog_find_or_log(f->t.repo, f->s[other].id, &found));
    assert_string_equal(found.id, f->s[other].id);
    cs_snapshot_clear(&found);
}

/* Every record loads: names, "latest" and prefixes resolve as they always did. */
static void test_all_readable(void **state)
{
    Fixture *f = *state;
    CsCatalog cat;
    ASSERT_OK(cs_catalog_load(f->t.repo, &cat));
    assert_int_equal(cat.n_snaps, 3);
    assert_int_equal(cat.n_problems, 0);
    assert_int_equal(cs_catalog_problems_error(&cat), 0);
    size_t index;
    const CsCatalogProblem *p;
    ASSERT_OK(cs_catalog_resolve(&cat, "latest", &index, &p));
    assert_string_equal(cat.snaps[index].id, f->s[2].id);
    ASSERT_OK(cs_catalog_resolve(&cat, "db", &index, &p));
    assert_string_equal(cat.snaps[index].id, f->s[2].id);
    ASSERT_OK(cs_catalog_resolve(&cat, "other", &index, &p));
    assert_string_equal(cat.snaps[index].id, f->s[1].id);
    ASSERT_ERR(ENOENT, cs_catalog_resolve(&cat, "no-such-name", &index, &p));
    assert_null(p);
    cs_catalog_clear(&cat);
}

/* The effective capabilities that let root read any file: saved, dropped and given back, so
 * that a file's mode applies to root as to anyone. */
static const uint32_t DAC_CAPS = 1u << CAP_DAC_OVERRIDE | 1u << CAP_DAC_READ_SEARCH;

static uint32_t dac_caps_drop(void)
{
    struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
    struct __user_cap_data_struct d[2];
    assert_int_equal(syscall(SYS_capget, &h, d), 0);
    uint32_t had = d[0].effective & DAC_CAPS;
    d[0].effective &= ~DAC_CAPS;
    assert_int_equal(syscall(SYS_capset, &h, d), 0);
    return had;
}

static void dac_caps_restore(uint32_t had)
{
    struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
    struct __user_cap_data_struct d[2];
    assert_int_equal(syscall(SYS_capget, &h, d), 0);
    d[0].effective |= had;
    assert_int_equal(syscall(SYS_capset, &h, d), 0);
}

/* A record of the newest snapshot that this user cannot read (mode 0000 without the capability
 * to override it) is a problem with EACCES, not damage. */
static void test_unreadable_record(void **state)
{
    Fixture *f = *state;
    _cleanup_free_ char *victim = record_path(f, f->s[2].id);
    assert_int_equal(chmod(victim, 0), 0);
    uint32_t had = dac_caps_drop();
    int fd = open(victim, O_RDONLY);
    if (fd >= 0) {
        close(fd);
        dac_caps_restore(had);
        fail_msg("sanity: %s opens with mode 0000", victim);
    }
    CsCatalog cat;
    int r = cs_catalog_load(f->t.repo, &cat);
    dac_caps_restore(had);
    ASSERT_OK(r);
    assert_int_equal(cat.n_problems, 1);
    assert_int_equal(cat.problems[0].error, -EACCES);
    char text[128];
    assert_string_equal(cs_catalog_problem_text(&cat.problems[0], text, sizeof(text)),
                        "cannot be read: Permission denied");
    cs_catalog_clear(&cat);
    /* The same checks as for the other problems, with the capabilities dropped throughout (a
     * failed check leaves them dropped: the tests after it run as a user without them). */
    dac_caps_drop();
    check_victim(f, 2, -EACCES);
    dac_caps_restore(had);
    /* Root with the capability reads it. */
    test_all_readable(state);
}

/* A record over the size a record may have is not read at all: a problem (EFBIG), not damage. */
static void test_oversized_record(void **state)
{
    Fixture *f = *state;
    _cleanup_free_ char *victim = record_path(f, f->s[0].id);
    assert_int_equal(truncate(victim, 65 << 20), 0);
    check_victim(f, 0, -EFBIG);
}

/* A damaged record, a record sealed under another snapshot's name and one that is sealed
 * properly but names another id are damage (EBADMSG). */
static void test_damaged_records(void **state)
{
    Fixture *f = *state;
    _cleanup_free_ char *victim = record_path(f, f->s[1].id);
    _cleanup_free_ char *orig = NULL;
    size_t orig_n;
    ASSERT_OK(read_file(victim, 1 << 20, &orig, &orig_n));
    orig[orig_n - 1] ^= 1;
    ASSERT_OK(write_file_atomic(victim, orig, orig_n, 0600));
    check_victim(f, 1, -EBADMSG);

    /* Sealed under its own name, holding another snapshot's record. */
    char name0[64], name1[64];
    snprintf(name0, sizeof(name0), "snapshots/%s", f->s[0].id);
    snprintf(name1, sizeof(name1), "snapshots/%s", f->s[1].id);
    uint8_t *sealed0 = NULL;
    size_t sealed0_n;
    ASSERT_OK(cs_backend_get(f->t.repo->backend, name0, 1 << 20, &sealed0, &sealed0_n));
    _cleanup_(buf_free) Buf plain = BUF_INIT, resealed = BUF_INIT;
    ASSERT_OK(cs_sealed_decode(f->t.repo->catalog_key, name0, sealed0, sealed0_n, &plain));
    free(sealed0);
    ASSERT_OK(cs_sealed_encode(f->t.repo->catalog_key, name1, plain.data, plain.size, &resealed));
    ASSERT_OK(cs_backend_delete(f->t.repo->backend, name1));
    ASSERT_OK(cs_backend_put(f->t.repo->backend, name1, resealed.data, resealed.size, false));
    check_victim(f, 1, -EBADMSG);

    /* Deleted by its full id although it does not load; then nothing is in the way. */
    ASSERT_OK(cs_catalog_delete(f->t.repo, f->s[1].id));
    CsSnapshot found;
    ASSERT_OK(cs_catalog_find(f->t.repo, "latest", &found));
    assert_string_equal(found.id, f->s[2].id);
    cs_snapshot_clear(&found);
}

RUN_TESTS(cmocka_unit_test_setup_teardown(test_all_readable, setup, teardown),
          cmocka_unit_test_setup_teardown(test_unreadable_record, setup, teardown),
          cmocka_unit_test_setup_teardown(test_oversized_record, setup, teardown),
          cmocka_unit_test_setup_teardown(test_damaged_records, setup, teardown))
