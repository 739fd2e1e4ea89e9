/*
 * Writes the seed corpora of the fuzz targets: small valid inputs made by the library's own
 * encoders under the fixed keys of fuzz-common.h, so that every target starts from inputs
 * that reach its deepest checks. `make fuzz-seeds` runs it on tests/fuzz; the result is
 * committed. (wal-images/corpus holds WAL written by a real PostgreSQL 15 server instead:
 * see README.md.)
 *
 * Usage: make-seeds DIR   writes DIR/<target>/corpus/<seed> for each target below.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include "agent/wal-format.h"
#include "chunkstore/backend.h"
#include "chunkstore/catalog.h"
#include "chunkstore/crypto.h"
#include "chunkstore/format.h"
#include "chunkstore/pack.h"
#include "chunkstore/tree.h"
#include "chunkstore/wal-object.h"
#include "common/endian.h"
#include "common/fs-util.h"
#include "common/hex.h"
#include "common/macro.h"
#include "tests/fuzz/fuzz-common.h"

static const char *out_dir;

static void must(int r, const char *what)
{
    if (r < 0) {
        fprintf(stderr, "make-seeds: %s: %s\n", what, strerror(-r));
        exit(1);
    }
}

/* DIR/<target>/corpus/<name>: an optional mode byte, then the bytes. */
static void seed(const char *target, const char *name, int mode, const void *p, size_t n)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s/corpus/%s", out_dir, target, name);
    _cleanup_(buf_free) Buf b = BUF_INIT;
    uint8_t m = (uint8_t)mode;
    if (mode >= 0)
        must(buf_append(&b, &m, 1), "seed");
    must(buf_append(&b, p, n), "seed");
    must(fuzz_write_file(path, b.data, b.size), path);
}

static CsChunkId chunk_id(uint8_t tag)
{
    CsChunkId id;
    for (size_t i = 0; i < sizeof(id.bytes); i++)
        id.bytes[i] = (uint8_t)(tag * 29u + i);
    return id;
}

/* A chunk like a page: text and counters that compress, and differ a little by `version`. */
static void page_bytes(uint8_t *p, size_t n, unsigned seed_no, unsigned version)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)("pitrfs seed page "[i % 17] + (i / 256) * seed_no);
    for (size_t i = 0; i < version * 4 && i < n; i++)
        p[(i * 97) % n] ^= (uint8_t)(version + i);
}

/* ---- records ---- */

#define CHUNK 1024u

static void record_seed(const char *name, Buf *rec)
{
    /* The record target takes records with their payload in clear and seals them itself. */
    must(fuzz_record_unseal(fuzz_pack_key, rec->data, rec->size), name);
    seed("record", name, 0, rec->data, rec->size);
}

static void records(ZSTD_CCtx *cctx)
{
    uint8_t raw[3 * CHUNK];
    CsRecordMember m[3];
    for (unsigned i = 0; i < 3; i++) {
        m[i] = (CsRecordMember){ .id = chunk_id((uint8_t)(i + 1)), .length = CHUNK };
        page_bytes(raw + i * CHUNK, CHUNK, i + 1, 0);
    }
    _cleanup_(buf_free) Buf rec = BUF_INIT, z = BUF_INIT;

    /* Raw: a payload that zstd did not shrink is stored as it is. */
    must(cs_record_encode(fuzz_pack_key, m, 2, 0, 2 * CHUNK, raw, 2 * CHUNK, &rec), "raw");
    record_seed("raw-2-members", &rec);
    buf_clear(&rec);
    /* One sealed already: decoded as it is (mode bit 0). */
    must(cs_record_encode(fuzz_pack_key, m, 1, 0, CHUNK, raw, CHUNK, &rec), "sealed");
    seed("record", "sealed-raw", 1, rec.data, rec.size);
    buf_clear(&rec);

    int flags = cs_record_compress(cctx, 3, raw, sizeof(raw), &z);
    must(flags, "compress");
    must(cs_record_encode(fuzz_pack_key, m, 3, (uint8_t)flags, sizeof(raw), z.data, z.size, &rec),
         "zstd");
    record_seed("zstd-3-members", &rec);
    buf_clear(&rec);

    /* Delta records: each member a new version of its base, whose bytes are
     * fuzz_base_bytes() of the base slice (what the target takes them to be). */
    CsChunkSlice bases[2];
    uint8_t prefix[2 * CHUNK], changed[2 * CHUNK];
    for (unsigned sliced = 0; sliced < 2; sliced++) {
        for (unsigned i = 0; i < 2; i++) {
            bases[i] = (CsChunkSlice){ .id = chunk_id((uint8_t)(10 + i)),
                                       .offset = sliced ? i * CHUNK : 0,
                                       .length = CHUNK };
            fuzz_base_bytes(&bases[i], prefix + i * CHUNK);
        }
        memcpy(changed, prefix, sizeof(changed));
        for (unsigned i = 0; i < 40; i++)
            changed[(i * 211) % sizeof(changed)] ^= 0x5a;
        buf_clear(&z);
        flags = cs_record_compress_prefixed(cctx, 3, prefix, sizeof(prefix), changed,
                                            sizeof(changed), &z);
        must(flags, "compress prefixed");
        if (!(flags & CS_RECORD_FLAG_DELTA))
            must(-EINVAL, "a delta that shrinks");
        if (sliced)
            flags |= CS_RECORD_FLAG_SLICED_BASES;
        CsRecordBases b = { .v = bases, .n = 2, .depth = 1 };
        must(cs_record_encode_delta(fuzz_pack_key, m, 2, &b, (uint8_t)flags, sizeof(changed),
                                    z.data, z.size, &rec),
             "delta");
        record_seed(sliced ? "delta-sliced-bases" : "delta-whole-bases", &rec);
        buf_clear(&rec);
    }

    /* Framed (format version 4): one frame per member, each against its own base. */
    _cleanup_(buf_free) Buf payload = BUF_INIT, frame = BUF_INIT;
    uint8_t table[2 * CS_FRAME_LEN_SIZE];
    must(buf_append(&payload, table, sizeof(table)), "table");
    for (unsigned i = 0; i < 2; i++) {
        buf_clear(&frame);
        must(cs_frame_compress(cctx, 3, prefix + i * CHUNK, CHUNK, changed + i * CHUNK, CHUNK,
                               &frame),
             "frame");
        put_le32(payload.data + i * CS_FRAME_LEN_SIZE, (uint32_t)frame.size);
        must(buf_append(&payload, frame.data, frame.size), "frame");
    }
    CsRecordBases b = { .v = bases, .n = 2, .depth = 1 };
    must(cs_record_encode_delta(fuzz_pack_key, m, 2, &b, 0x0f, sizeof(changed), payload.data,
                                payload.size, &rec),
         "framed");
    record_seed("framed-delta", &rec);
}

/* ---- a pack ---- */

static void pack(ZSTD_CCtx *cctx)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/pack-seed", fuzz_scratch_dir());
    CsBackend *b;
    must(cs_backend_local_open(dir, true, &b), "backend");
    uint8_t master[CS_MASTER_SIZE];
    fuzz_master_key(master);
    CsPackWriter *w;
    must(cs_pack_writer_new(b, master, &w), "pack writer");
    uint8_t raw[3 * CHUNK];
    CsRecordMember m[3];
    for (unsigned i = 0; i < 3; i++) {
        m[i] = (CsRecordMember){ .id = chunk_id((uint8_t)(20 + i)), .length = CHUNK };
        page_bytes(raw + i * CHUNK, CHUNK, i + 4, 0);
    }
    _cleanup_(buf_free) Buf z = BUF_INIT, frame = BUF_INIT, payload = BUF_INIT;
    int flags = cs_record_compress(cctx, 3, raw, sizeof(raw), &z);
    must(flags, "compress");
    must(cs_pack_writer_add(w, m, 3, (uint8_t)flags, sizeof(raw), z.data, z.size), "add");
    must(cs_pack_writer_add(w, m, 1, 0, CHUNK, raw, CHUNK), "add raw");
    /* A framed delta record of one member against the first chunk's first half. */
    CsChunkSlice base = { .id = m[0].id, .offset = 0, .length = CHUNK / 2 };
    uint8_t changed[CHUNK / 2];
    memcpy(changed, raw, sizeof(changed));
    changed[7] ^= 1;
    must(cs_frame_compress(cctx, 3, raw, CHUNK / 2, changed, sizeof(changed), &frame), "frame");
    must(buf_append_le32(&payload, (uint32_t)frame.size), "frame");
    must(buf_append(&payload, frame.data, frame.size), "frame");
    CsRecordMember dm = { .id = chunk_id(30), .length = sizeof(changed) };
    must(cs_pack_writer_add_delta(w, &dm, 1, &(CsRecordBases){ .v = &base, .n = 1, .depth = 1 },
                                  0x0f, sizeof(changed), payload.data, payload.size),
         "add framed");
    CsPackId id;
    CsPackEntry *entries;
    size_t n;
    uint64_t size;
    must(cs_pack_writer_finish(w, &id, &entries, &n, &size), "finish");
    free(entries);
    char name[CS_PACK_NAME_MAX];
    cs_pack_name(&id, name);
    uint8_t *p;
    size_t len;
    must(cs_backend_get(b, name, SIZE_MAX, &p, &len), "read pack");
    seed("pack", "three-records", 0, p, len);
    free(p);
    cs_backend_free(b);
}

/* ---- content references, directory objects, WAL objects ---- */

static void content_ref(CsContentRef *ref, bool slices, uint8_t level, uint32_t count)
{
    *ref = (CsContentRef){ .level = level, .has_slices = slices, .count = count };
    ref->entries = calloc(count ? count : 1, sizeof(*ref->entries));
    if (!ref->entries)
        must(-ENOMEM, "content reference");
    for (uint32_t i = 0; i < count; i++) {
        ref->entries[i] = (CsChunkSlice){ .id = chunk_id((uint8_t)(40 + i)),
                                          .offset = slices ? i * 8192 : 0,
                                          .length = 8192 };
        ref->size += 8192;
    }
    if (level > 0)
        ref->size = 1u << 30; /* what the lists one level down add up to */
}

static void refs(void)
{
    static const struct {
        const char *name;
        bool slices;
        uint8_t level;
        uint32_t count;
    } kinds[] = {
        { "empty", false, 0, 0 },
        { "level0-slices", true, 0, 3 },
        { "level0-whole", false, 0, 2 },
        { "level1-slices", true, 1, 2 },
    };
    for (size_t i = 0; i < ARRAY_SIZE(kinds); i++) {
        CsContentRef ref;
        content_ref(&ref, kinds[i].slices, kinds[i].level, kinds[i].count);
        _cleanup_(buf_free) Buf b = BUF_INIT;
        must(cs_content_ref_encode(&ref, &b), "encode reference");
        seed("content-ref", kinds[i].name, -1, b.data, b.size);
        cs_content_ref_free(&ref);
    }
}

static void dirs(void)
{
    char base[] = "base", rel[] = "16384", fifo[] = "fifo", link[] = "pg_tblspc-link",
         target[] = "/srv/tablespace";
    CsDirEntry e[4] = {
        { .type = CS_ENTRY_DIR, .mode = 040700, .uid = 26, .gid = 26, .mtime_sec = 1700000000,
          .name = base },
        { .type = CS_ENTRY_FILE, .flags = CS_ENTRY_FLAG_PAGES, .mode = 0100600, .uid = 26,
          .gid = 26, .mtime_sec = 1700000001, .mtime_nsec = 5, .size = 3 * 8192, .name = rel },
        { .type = CS_ENTRY_SPECIAL, .mode = 010600, .name = fifo },
        { .type = CS_ENTRY_SYMLINK, .mode = 0120777, .size = 15, .name = link, .target = target },
    };
    content_ref(&e[0].content, true, 0, 1);
    e[0].size = 0;
    content_ref(&e[1].content, true, 0, 3);
    _cleanup_(buf_free) Buf b = BUF_INIT;
    must(cs_dir_encode(e, 4, &b), "encode directory");
    seed("dir", "four-kinds", -1, b.data, b.size);
    buf_clear(&b);
    must(cs_dir_encode(NULL, 0, &b), "encode empty directory");
    seed("dir", "empty", -1, b.data, b.size);
    cs_content_ref_free(&e[0].content);
    cs_content_ref_free(&e[1].content);
}

static void wal_objects(void)
{
    static const struct {
        const char *seed_name, *file;
        CsWalKind kind;
        uint64_t size;
    } files[] = {
        { "segment", "000000010000000000000002", CS_WAL_SEGMENT, 16u << 20 },
        { "partial", "000000020000000100000003.partial", CS_WAL_PARTIAL, 16u << 20 },
        { "history", "00000002.history", CS_WAL_HISTORY, 42 },
        { "backup", "000000010000000000000002.00000028.backup", CS_WAL_BACKUP, 300 },
    };
    for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
        CsWalObject o = { .kind = files[i].kind,
                          .xlp_magic = cs_wal_kind_has_header(files[i].kind) ? 0xD110 : 0,
                          .size = files[i].size,
                          .sysid = cs_wal_kind_has_header(files[i].kind) ? 7300000000000000001u
                                                                         : 0,
                          .archived_at = 1700000000 };
        memset(o.sha256, 0xab, sizeof(o.sha256));
        snprintf(o.name, sizeof(o.name), "%s", files[i].file);
        content_ref(&o.content, true, 0, o.size > 8192 ? 2 : 1);
        o.content.size = o.size;
        o.content.entries[0].length = (uint32_t)(o.content.count == 1 ? o.size : o.size / 2);
        if (o.content.count == 2)
            o.content.entries[1].length = (uint32_t)(o.size / 2);
        _cleanup_(buf_free) Buf b = BUF_INIT;
        must(cs_wal_object_encode(&o, &b), "encode WAL object");
        seed("wal-object", files[i].seed_name, -1, b.data, b.size);
        cs_wal_object_clear(&o);
    }
}

/* A long page header as PostgreSQL 15 writes it at the start of a segment. */
static void wal_headers(void)
{
    static const struct {
        const char *seed_name, *file;
        uint32_t tli;
        uint64_t pageaddr;
    } files[] = {
        { "segment", "000000010000000000000002", 1, 2u << 24 },
        { "partial-new-timeline", "000000020000000100000003.partial", 1,
          (UINT64_C(1) << 32) + (3u << 24) },
    };
    for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
        _cleanup_(buf_free) Buf b = BUF_INIT;
        must(buf_append_le32(&b, (16u << 20) >> 8), "size");
        must(buf_append(&b, files[i].file, strlen(files[i].file) + 1), "name");
        uint8_t h[AGENT_WAL_LONG_HEADER_SIZE] = { 0 };
        put_le16(h, 0xD110);
        put_le16(h + 2, AGENT_WAL_XLP_LONG_HEADER);
        put_le32(h + 4, files[i].tli);
        put_le64(h + 8, files[i].pageaddr);
        put_le64(h + 24, 7300000000000000001u);
        put_le32(h + 32, 16u << 20);
        put_le32(h + 36, 8192);
        must(buf_append(&b, h, sizeof(h)), "header");
        seed("wal-header", files[i].seed_name, -1, b.data, b.size);
    }
    static const char lsn[] = "16/B374D848";
    uint8_t b[4 + sizeof(lsn)] = { 0 };
    memcpy(b + 4, lsn, sizeof(lsn));
    seed("wal-header", "lsn", -1, b, sizeof(b));
}

/* ---- snapshot records and the texts of the fixed repository ---- */

static void snapshots(void)
{
    CsContentRef ref;
    content_ref(&ref, true, 0, 2);
    _cleanup_(buf_free) Buf b = BUF_INIT;
    must(cs_content_ref_encode(&ref, &b), "encode root");
    cs_content_ref_free(&ref);
    char hex[512];
    hex_encode(b.data, b.size, hex);
    static const char *const kinds[] = { "tree", "stream" };
    for (size_t i = 0; i < ARRAY_SIZE(kinds); i++) {
        char json[2048];
        int n = snprintf(json, sizeof(json),
                         "{\"format_version\":4,\"hostname\":\"seedhost\",\"id\":\"%s\","
                         "\"kind\":\"%s\",\"meta\":{\"stats\":{\"bytes_in\":16384,\"files\":1,"
                         "\"seconds\":0.5},\"root_attr\":{\"gid\":0,\"mode\":448,\"mtime\":"
                         "1700000000,\"mtime_nsec\":0,\"uid\":0}},\"name\":\"nightly\","
                         "\"root\":\"%s\",\"time\":1700000000,\"time_nsec\":125093811}",
                         FUZZ_SNAPSHOT_ID, kinds[i], hex);
        seed("snapshot", kinds[i], 0, json, (size_t)n);
        if (i > 0)
            continue;
        /* The same record sealed as a writer seals it (mode bit 0: taken as it is). */
        uint8_t master[CS_MASTER_SIZE], catalog_key[32];
        fuzz_master_key(master);
        must(cs_hkdf_sha256(master, 32, NULL, 0, CS_INFO_CATALOG_KEY,
                            strlen(CS_INFO_CATALOG_KEY), catalog_key, 32),
             "catalog key");
        _cleanup_(buf_free) Buf sealed = BUF_INIT;
        must(cs_sealed_encode(catalog_key, "snapshots/" FUZZ_SNAPSHOT_ID, json, (size_t)n,
                              &sealed),
             "seal");
        seed("snapshot", "sealed-tree", 1, sealed.data, sealed.size);
    }
}

static void texts(void)
{
    char *t = fuzz_config_text();
    seed("repo-config", "defaults", -1, t, strlen(t));
    free(t);
    t = fuzz_key_file_text();
    seed("key-file", "exported", -1, t, strlen(t));
    free(t);
    t = fuzz_key_object_text();
    seed("key-object", "scrypt-1024", -1, t, strlen(t));
    free(t);
    static const char yaml[] =
            "cluster: demo\n"
            "repository:\n"
            "  location: /var/lib/pitr/repo\n"
            "  key_file: /etc/pitr/repo.key\n"
            "barrier:\n"
            "  adapter: plain\n"
            "  lock_key: 7419\n"
            "  timeout: 500ms\n"
            "csn:\n"
            "  sequence: pitr.csn\n"
            "wal_timeout: 2m\n"
            "tls: { ca: ca.pem, cert: client.pem, key: client.key }\n"
            "nodes:\n"
            "  - name: coord\n"
            "    role: coordinator\n"
            "    conninfo: \"host=127.0.0.1 port=5432 dbname=app password=secret\"\n"
            "    agent: \"127.0.0.1:18080\"\n"
            "    pgdata: /srv/pg/coord\n"
            "  - name: w1\n"
            "    role: worker\n"
            "    conninfo: postgresql://app@[::1]:5433/app\n"
            "    agent: \"[::1]\"\n";
    seed("cluster-config", "two-nodes", -1, yaml, sizeof(yaml) - 1);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 64;
    }
    out_dir = argv[1];
    fuzz_quiet();
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    if (!cctx)
        must(-ENOMEM, "zstd");
    records(cctx);
    pack(cctx);
    refs();
    dirs();
    wal_objects();
    wal_headers();
    snapshots();
    texts();
    ZSTD_freeCCtx(cctx);
    return 0;
}
