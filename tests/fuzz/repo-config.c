/*
 * The repository's `config` object (docs/FORMAT.md 3.1) through cs_config_parse: the
 * first thing every command reads, before any key.
 *
 * Input: the text of a config object (a NUL ends it, as it ends the object read from disk).
 *
 * Promises checked: no crash or undefined behaviour; a config that parses is within the
 * bounds FORMAT.md gives, and its format version is not newer than this build's.
 */
#include <stdlib.h>
#include <string.h>

#include "chunkstore/format.h"
#include "chunkstore/repo.h"
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
    _cleanup_free_ char *text = strndup((const char *)data, size);
    FUZZ_CHECK(text);
    CsRepoConfig c;
    uint8_t key_check[32];
    int r = cs_config_parse(text, &c, key_check);
    FUZZ_CHECK(r == 0 || r == -EBADMSG || r == -ENOMEDIUM || r == -EPROTONOSUPPORT);
    if (r < 0)
        return 0;
    FUZZ_CHECK(c.format_version <= CS_FORMAT_VERSION);
    FUZZ_CHECK(c.page_size >= 512 && c.page_size <= (1u << 20));
    FUZZ_CHECK(c.zstd_level >= 1 && c.zstd_level <= 19);
    FUZZ_CHECK(c.pack_size >= (1u << 20) && c.group_size <= CS_MAX_GROUP_SIZE);
    FUZZ_CHECK(cs_chunker_params_check(&c.chunker) == 0);
    FUZZ_CHECK(c.chunker.min_size <= c.chunker.avg_size &&
               c.chunker.avg_size <= c.chunker.max_size);
    return 0;
}
