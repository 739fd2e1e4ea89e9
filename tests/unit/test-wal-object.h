/*
 * Writing a WAL object straight into a repository, as an archiver holding the key would: for
 * tests that need archived WAL (or forged objects) without running pitr-agent archive-wal.
 */
#pragma once

#include "chunkstore/catalog.h"
#include "chunkstore/wal-object.h"
#include "tests/unit/harness.h"

/* Encode o, seal it under the catalog key with objname as AAD, and put it as objname. */
static inline void test_wal_object_put(CsRepo *repo, const char *objname, const CsWalObject *o)
{
    _cleanup_(buf_free) Buf plain = BUF_INIT;
    _cleanup_(buf_free) Buf sealed = BUF_INIT;
    ASSERT_OK(cs_wal_object_encode(o, &plain));
    ASSERT_OK(cs_sealed_encode(repo->catalog_key, objname, plain.data, plain.size, &sealed));
    ASSERT_OK(cs_backend_put(repo->backend, objname, sealed.data, sealed.size, false));
}
