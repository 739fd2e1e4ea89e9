/*
 * index-tamper INDEX_DIR pages-offset DELTA
 * index-tamper INDEX_DIR chunks-record-off|chunks-record-len VALUE
 * Damage a local index the way a bad disk or a stray write could, for tests that show a
 * damaged index costs deduplication or gives a clear error, never wrong bytes or a crash.
 *
 * pages-offset: add DELTA (may be negative) to the run offset of every row of the `pages`
 * database (docs/FORMAT.md section 10) whose offset stays within 0..2^32-1, and leave the rest
 * of the row (run id, length, tag) as it was. chunks-record-off, chunks-record-len: set that
 * field of every location in `chunks` to VALUE. Prints the number of rows changed; exits 1 if
 * none was, 2 on usage or LMDB errors.
 */
#include <errno.h>
#include <stdbool.h>
#include <inttypes.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chunkstore/format.h"
#include "common/endian.h"

static int fail(const char *what, int rc)
{
    fprintf(stderr, "index-tamper: %s: %s\n", what, mdb_strerror(rc));
    return 2;
}

int main(int argc, char **argv)
{
    const char *what = argc == 4 ? argv[2] : "";
    bool is_pages = strcmp(what, "pages-offset") == 0;
    bool is_off = strcmp(what, "chunks-record-off") == 0;
    if (!is_pages && !is_off && strcmp(what, "chunks-record-len") != 0) {
        fprintf(stderr, "usage: index-tamper INDEX_DIR pages-offset DELTA\n"
                        "       index-tamper INDEX_DIR chunks-record-off|chunks-record-len VALUE\n");
        return 2;
    }
    long long delta = strtoll(argv[3], NULL, 10);
    unsigned long long value = strtoull(argv[3], NULL, 0);
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_cursor *cur;
    int rc = mdb_env_create(&env);
    if (rc || (rc = mdb_env_set_maxdbs(env, 16)) || (rc = mdb_env_set_mapsize(env, 1ull << 34)) ||
        (rc = mdb_env_open(env, argv[1], MDB_NOTLS, 0600)))
        return fail(argv[1], rc);
    const char *db = is_pages ? "pages" : "chunks";
    if ((rc = mdb_txn_begin(env, NULL, 0, &txn)) || (rc = mdb_dbi_open(txn, db, 0, &dbi)) ||
        (rc = mdb_cursor_open(txn, dbi, &cur)))
        return fail(db, rc);
    MDB_val k, v;
    unsigned long changed = 0;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        uint8_t row[128];
        if (v.mv_size < (is_pages ? CS_SLICE_SIZE : CS_LOC_SIZE) || v.mv_size > sizeof(row))
            continue;
        memcpy(row, v.mv_data, v.mv_size);
        if (is_pages) {
            long long off = (long long)get_le32(row + CS_CHUNK_ID_SIZE) + delta;
            if (off < 0 || off > UINT32_MAX)
                continue;
            put_le32(row + CS_CHUNK_ID_SIZE, (uint32_t)off);
        } else if (is_off) /* CS_LOC_SIZE: pack id[16], record_off u64, record_len u32, ... */
            put_le64(row + 16, value);
        else
            put_le32(row + 24, (uint32_t)value);
        MDB_val nv = { .mv_size = v.mv_size, .mv_data = row };
        if ((rc = mdb_cursor_put(cur, &k, &nv, MDB_CURRENT)))
            return fail("put", rc);
        changed++;
    }
    if (rc != MDB_NOTFOUND)
        return fail(db, rc);
    mdb_cursor_close(cur);
    if ((rc = mdb_txn_commit(txn)))
        return fail("commit", rc);
    mdb_env_close(env);
    printf("%lu\n", changed);
    return changed ? 0 : 1;
}
