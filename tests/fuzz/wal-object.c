/*
 * WAL objects (docs/FORMAT.md 15.3): cs_wal_object_decode, and cs_wal_object_encode back.
 *
 * Input: the plaintext of a WAL object (what its sealed envelope holds; the envelope itself
 * is the sealed object of snapshot.c).
 *
 * Promises checked: no crash, leak or undefined behaviour; a decoded object names a file of
 * its kind whose content is `size` bytes long; it encodes again, to bytes that decode to the
 * same object and encode to themselves.
 */
#include <stdlib.h>
#include <string.h>

#include "chunkstore/wal-object.h"
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
    CsWalObject o = { 0 }, again = { 0 };
    if (cs_wal_object_decode(data, size, &o) < 0)
        return 0;
    CsWalName name;
    FUZZ_CHECK(cs_wal_name_parse(o.name, &name) == 0 && name.kind == o.kind);
    FUZZ_CHECK(o.content.size == o.size);
    FUZZ_CHECK(cs_wal_kind_has_header(o.kind) == (o.xlp_magic != 0));
    _cleanup_(buf_free) Buf first = BUF_INIT, second = BUF_INIT;
    FUZZ_CHECK(cs_wal_object_encode(&o, &first) == 0);
    FUZZ_CHECK(first.size == size);
    FUZZ_CHECK(cs_wal_object_decode(first.data, first.size, &again) == 0);
    FUZZ_CHECK(again.kind == o.kind && again.size == o.size && again.sysid == o.sysid &&
               strcmp(again.name, o.name) == 0 && again.content.count == o.content.count);
    FUZZ_CHECK(cs_wal_object_encode(&again, &second) == 0);
    FUZZ_CHECK(second.size == first.size && memcmp(second.data, first.data, first.size) == 0);
    char objname[CS_WAL_OBJECT_NAME_MAX];
    FUZZ_CHECK(cs_wal_object_name("node", &name, objname, sizeof(objname)) == 0);
    cs_wal_object_clear(&o);
    cs_wal_object_clear(&again);
    return 0;
}
