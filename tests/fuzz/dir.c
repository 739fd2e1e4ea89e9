/*
 * Directory objects (docs/FORMAT.md 8) through cs_dir_decode, and back through cs_dir_encode.
 *
 * Input: the bytes of a directory object (what the stream of a directory's content holds,
 * after its chunks are read).
 *
 * Promises checked: no crash, leak or undefined behaviour; a decoded name is never empty,
 * ".", ".." nor holds a '/' (it must not escape its directory); what decodes encodes, and
 * that encoding decodes to the same bytes again.
 */
#include <stdlib.h>
#include <string.h>

#include "chunkstore/tree.h"
#include "common/macro.h"
#include "tests/fuzz/fuzz-common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    CsDirEntry *v = NULL, *again = NULL;
    size_t n = 0, n_again = 0;
    if (cs_dir_decode(data, size, &v, &n) < 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        const char *name = v[i].name;
        FUZZ_CHECK(name && *name && !strchr(name, '/') && strcmp(name, ".") != 0 &&
                   strcmp(name, "..") != 0);
        FUZZ_CHECK(v[i].type != CS_ENTRY_SYMLINK || v[i].target);
    }
    _cleanup_(buf_free) Buf first = BUF_INIT, second = BUF_INIT;
    FUZZ_CHECK(cs_dir_encode(v, n, &first) == 0);
    FUZZ_CHECK(cs_dir_decode(first.data, first.size, &again, &n_again) == 0);
    FUZZ_CHECK(n_again == n);
    FUZZ_CHECK(cs_dir_encode(again, n_again, &second) == 0);
    FUZZ_CHECK(first.size == second.size && memcmp(first.data, second.data, first.size) == 0);
    cs_dir_entries_free(v, n);
    cs_dir_entries_free(again, n_again);
    return 0;
}
