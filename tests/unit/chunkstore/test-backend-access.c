/*
 * chunkstore/backend-local and the index: who owns what a process makes in a repository, and
 * with which modes (docs/FORMAT.md 2.1). Run as root in a repository directory owned by another
 * user, under umask 077: every directory, object, spool file, lock file, overwritten object and
 * index file is that user's, with the directory's group, and the mode of its kind: 0600/0700
 * without a group, 0640, 0660, 2750 and 2770 with one (the setgid bit). Nothing is left under a
 * temporary name. Root gives back index and lock files it finds owned by someone else.
 */
#include "tests/unit/harness.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chunkstore/backend.h"
#include "chunkstore/index.h"
#include "common/fs-util.h"
#include "common/macro.h"

#define OWNER_UID 4321
#define OWNER_GID 4322

/* A repository directory owned by OWNER_UID:OWNER_GID with `mode` (02750: shared). */
static char *repo_dir(mode_t mode)
{
    if (geteuid() != 0)
        fail_msg("this test gives files away: it must run as root");
    char *dir = test_mkdtemp("backend-access");
    assert_int_equal(chown(dir, OWNER_UID, OWNER_GID), 0);
    assert_int_equal(chmod(dir, mode), 0);
    return dir;
}

static void assert_entry(const char *dir, const char *rel, mode_t mode)
{
    _cleanup_free_ char *path = path_join(dir, rel);
    struct stat st;
    if (lstat(path, &st) < 0)
        fail_msg("%s: %s", rel, strerror(errno));
    if (st.st_uid != OWNER_UID || st.st_gid != OWNER_GID || (st.st_mode & 07777) != mode)
        fail_msg("%s is %u:%u mode %04o, expected %u:%u mode %04o", rel, (unsigned)st.st_uid,
                 (unsigned)st.st_gid, (unsigned)(st.st_mode & 07777), OWNER_UID, OWNER_GID,
                 (unsigned)mode);
}

/* No ".<name>.tmp-..." entry left in `rel`. */
static void assert_no_temporary(const char *dir, const char *rel)
{
    _cleanup_free_ char *path = path_join(dir, rel);
    DIR *d = opendir(path);
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d)))
        if (strstr(de->d_name, ".tmp-"))
            fail_msg("%s/%s left behind", rel, de->d_name);
    closedir(d);
}

/* What every writer of the repository does: objects, a new pack directory, a lock, an
 * overwritten object, the index. `round` makes the object names new. */
static void write_everything(const char *dir, int round)
{
    CsBackend *b;
    char name[128];
    ASSERT_OK(cs_backend_local_open(dir, true, &b));
    snprintf(name, sizeof(name), "snapshots/0123456789abcde%d", round);
    ASSERT_OK(cs_backend_put(b, name, "record", 6, false));
    CsSpool *s;
    ASSERT_OK(cs_backend_spool_new(b, &s));
    ASSERT_OK(cs_spool_write(s, "pack", 4));
    snprintf(name, sizeof(name), "packs/ab/ab0%d.pack", round);
    ASSERT_OK(cs_spool_publish(s, name));
    snprintf(name, sizeof(name), "wal/n1/00000001/00000001000000000000000%d", round);
    ASSERT_OK(cs_backend_put(b, name, "wal", 3, false));
    CsLock *l;
    ASSERT_OK(cs_backend_lock(b, "repository", CS_LOCK_SHARED, false, &l));
    cs_lock_release(l);
    ASSERT_OK(cs_backend_put(b, "locks/cluster.holder", "{}", 2, true));
    ASSERT_OK(cs_backend_put(b, "locks/cluster.holder", "{ }", 3, true));
    _cleanup_free_ char *index_dir = NULL;
    ASSERT_OK(cs_backend_cache_dir(b, &index_dir));
    CsIndex *idx;
    uint8_t repo_id[16] = { 1 };
    ASSERT_OK(cs_index_open(index_dir, repo_id, false, &idx));
    cs_index_close(idx);
    cs_backend_free(b);
}

static void test_shared_as_root(void **state)
{
    (void)state;
    _cleanup_free_ char *dir = repo_dir(S_ISGID | 0750);
    mode_t old_umask = umask(077); /* modes are set explicitly: the umask does not matter */
    write_everything(dir, 0);
    umask(old_umask);
    const char *const shared_dirs[] = { "packs", "packs/ab", "snapshots", "locks", "tmp", "index",
                                        "wal", "wal/n1", "wal/n1/00000001" };
    for (size_t i = 0; i < ARRAY_SIZE(shared_dirs); i++)
        assert_entry(dir, shared_dirs[i], S_ISGID | 0770);
    assert_entry(dir, "keys", S_ISGID | 0750);
    assert_entry(dir, "snapshots/0123456789abcde0", 0640);
    assert_entry(dir, "packs/ab/ab00.pack", 0640);
    assert_entry(dir, "wal/n1/00000001/000000010000000000000000", 0640);
    assert_entry(dir, "locks/cluster.holder", 0640);
    assert_entry(dir, "locks/repository", 0660);
    assert_entry(dir, "index/data.mdb", 0660);
    assert_entry(dir, "index/lock.mdb", 0660);
    const char *const dirs[] = { "packs", "locks", "index", "wal/n1", "tmp" };
    for (size_t i = 0; i < ARRAY_SIZE(dirs); i++)
        assert_no_temporary(dir, dirs[i]);
    test_rm_rf(dir);
}

static void test_owner_only_as_root(void **state)
{
    (void)state;
    _cleanup_free_ char *dir = repo_dir(0700);
    mode_t old_umask = umask(0);
    write_everything(dir, 0);
    umask(old_umask);
    const char *const dirs[] = { "packs", "packs/ab", "snapshots", "locks", "tmp", "index",
                                 "keys", "wal/n1/00000001" };
    for (size_t i = 0; i < ARRAY_SIZE(dirs); i++)
        assert_entry(dir, dirs[i], 0700);
    const char *const files[] = { "snapshots/0123456789abcde0", "packs/ab/ab00.pack",
                                  "locks/cluster.holder", "locks/repository", "index/data.mdb",
                                  "index/lock.mdb" };
    for (size_t i = 0; i < ARRAY_SIZE(files); i++)
        assert_entry(dir, files[i], 0600);
    test_rm_rf(dir);
}

/* What an earlier version left root's is given back the next time root opens it. */
static void test_root_gives_back(void **state)
{
    (void)state;
    _cleanup_free_ char *dir = repo_dir(S_ISGID | 0750);
    write_everything(dir, 0);
    const char *const left[] = { "index", "index/data.mdb", "index/lock.mdb", "locks/repository" };
    for (size_t i = 0; i < ARRAY_SIZE(left); i++) {
        _cleanup_free_ char *path = path_join(dir, left[i]);
        assert_int_equal(chown(path, 0, 0), 0);
        if (i > 0)
            assert_int_equal(chmod(path, 0600), 0);
    }
    write_everything(dir, 1);
    assert_entry(dir, "index", S_ISGID | 0770);
    for (size_t i = 1; i < ARRAY_SIZE(left); i++)
        assert_entry(dir, left[i], 0660);
    test_rm_rf(dir);
}

/* mkdir_with_access and create_file_with_access leave an existing entry as it is. */
static void test_existing_entries_kept(void **state)
{
    (void)state;
    _cleanup_free_ char *dir = repo_dir(S_ISGID | 0750);
    FileAccess a;
    ASSERT_OK(file_access_of(dir, &a));
    assert_true(a.is_group_shared && a.is_chown_needed);
    _cleanup_free_ char *sub = path_join(dir, "sub"), *file = path_join(dir, "file");
    assert_int_equal(mkdir(sub, 0755), 0);
    ASSERT_OK(mkdir_with_access(sub, &a, FILE_KIND_SHARED_DIR));
    struct stat st;
    assert_int_equal(stat(sub, &st), 0);
    assert_int_equal(st.st_uid, 0);
    int fd = creat(file, 0644);
    assert_true(fd >= 0);
    close(fd);
    ASSERT_OK(create_file_with_access(file, &a, FILE_KIND_OBJECT));
    assert_int_equal(stat(file, &st), 0);
    assert_int_equal(st.st_uid, 0);
    ASSERT_ERR(ENOTDIR, mkdir_with_access(file, &a, FILE_KIND_DIR));
    test_rm_rf(dir);
}

RUN_TESTS(cmocka_unit_test(test_shared_as_root), cmocka_unit_test(test_owner_only_as_root),
          cmocka_unit_test(test_root_gives_back), cmocka_unit_test(test_existing_entries_kept))
