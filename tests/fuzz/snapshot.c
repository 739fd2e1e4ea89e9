/*
 * Snapshot objects (docs/FORMAT.md 9): the sealed envelope (cs_sealed_decode) and the JSON
 * record inside it, read the way `list`, `show` and `restore` read them: cs_catalog_list and
 * cs_catalog_find on a repository holding that one object.
 *
 * Input: one mode byte, then the JSON text of a snapshot record. Unless the mode's bit 0 is
 * set it is sealed under the repository's catalog key as "snapshots/" FUZZ_SNAPSHOT_ID, the
 * way a writer seals it; with bit 0 the input is the sealed object itself.
 *
 * Promises checked: no crash, leak or undefined behaviour; a record that does not load is
 * reported as damaged or as newer (or left out of the listing), never as anything else; a
 * listed snapshot has the id of its name and a kind, and is found by its id, by a prefix of it
 * and as "latest"; one that is not listed is not found.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chunkstore/catalog.h"
#include "common/macro.h"
#include "tests/fuzz/fuzz-common.h"

#define OBJECT "snapshots/" FUZZ_SNAPSHOT_ID

static CsRepo *repo;
static char object_path[PATH_MAX];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet();
    char *dir;
    if (fuzz_repo_open(&dir, &repo) < 0)
        return -1;
    snprintf(object_path, sizeof(object_path), "%s/%s", dir, OBJECT);
    free(dir);
    return 0;
}

static bool is_refusal(int r)
{
    return r == -ENOENT || r == -EBADMSG || r == -EPROTONOSUPPORT;
}

static void check_found(const char *spec, bool listed)
{
    CsSnapshot s = { 0 };
    int r = cs_catalog_find(repo, spec, &s);
    FUZZ_CHECK(listed ? r == 0 : is_refusal(r));
    if (r == 0)
        FUZZ_CHECK(strcmp(s.id, FUZZ_SNAPSHOT_ID) == 0);
    cs_snapshot_clear(&s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    _cleanup_(buf_free) Buf sealed = BUF_INIT;
    if (data[0] & 1)
        FUZZ_CHECK(buf_append(&sealed, data + 1, size - 1) == 0);
    else
        FUZZ_CHECK(cs_sealed_encode(repo->catalog_key, OBJECT, data + 1, size - 1, &sealed) ==
                   0);
    FUZZ_CHECK(fuzz_write_file(object_path, sealed.data, sealed.size) == 0);

    CsSnapshot *v = NULL;
    size_t n = 0;
    int r = cs_catalog_list(repo, &v, &n);
    FUZZ_CHECK(r == 0 || (is_refusal(r) && r != -ENOENT));
    FUZZ_CHECK(n <= 1);
    if (n == 1) {
        FUZZ_CHECK(strcmp(v[0].id, FUZZ_SNAPSHOT_ID) == 0);
        FUZZ_CHECK(v[0].kind && v[0].name && v[0].hostname && v[0].meta);
        FUZZ_CHECK(v[0].time_nsec <= 999999999);
    }
    check_found(FUZZ_SNAPSHOT_ID, n == 1);
    check_found("5eed5eed", n == 1);
    check_found("latest", n == 1);
    cs_snapshots_free(v, n);
    unlink(object_path);
    return 0;
}
