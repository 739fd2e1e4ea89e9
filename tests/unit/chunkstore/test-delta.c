/*
 * Delta records: pages that changed since the previous backup, compressed against an earlier
 * version. The record codecs (a reference prefix made of the bases, versions 2 and 3; one frame
 * per member against its own base, version 4), the pack trailer of a pack holding delta
 * records, and whole generations of a page file stored through the pipeline with a previous
 * tree: every generation restores byte for byte; version 3 chains stop at CS_DELTA_MAX_DEPTH;
 * version 4 deltas are made against a page stored whole (the key), whatever the history, and a
 * page that drifted from its key becomes a new one; a damaged base fails the pages made
 * against it (never wrong bytes), not their neighbours nor new backups; and records whose bases
 * form a cycle are reported as damaged.
 */
#include "tests/unit/harness.h"
#include "tests/unit/test-repo.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>
#include <zstd.h>

#include "chunkstore/crypto.h"
#include "chunkstore/index.h"
#include "chunkstore/pack.h"
#include "chunkstore/read.h"
#include "chunkstore/tree.h"
#include "common/buf.h"
#include "common/endian.h"
#include "common/fs-util.h"
#include "common/macro.h"

#define PASSPHRASE "delta test passphrase"
#define PAGE 8192
#define PAGES 200 /* several records of 64 pages */
#define CHANGED 10

/* A page that compresses like a table page: numbered rows of text. */
static void fill_page(uint8_t *p, uint32_t page_no)
{
    size_t off = 0;
    for (uint32_t row = 0; off < PAGE; row++) {
        char line[64];
        int n = snprintf(line, sizeof(line), "aid %08u bid %u abalance %d filler          \n",
                         page_no * 100 + row, row % 7, 0);
        size_t k = MIN((size_t)n, PAGE - off);
        memcpy(p + off, line, k);
        off += k;
    }
}

/* A page that compresses like a table of real rows (about 2:1): numbered rows of hex text. */
static void fill_page_hex(uint8_t *p, uint32_t page_no)
{
    uint64_t x = 0x9e3779b97f4a7c15ull * (page_no + 1);
    for (size_t off = 0; off < PAGE; off += 32) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        char line[64];
        snprintf(line, sizeof(line), "%04u %016llx bal %06u\n", page_no % 10000,
                 (unsigned long long)x, (unsigned)(off / 32));
        memcpy(p + off, line, 32);
    }
}

/* A small change: one row's balance, as an UPDATE would make. */
static void touch_page(uint8_t *p, unsigned generation)
{
    char bal[16];
    snprintf(bal, sizeof(bal), "%08u", generation * 7919u);
    memcpy(p + 1000 + (generation % 5) * 64, bal, 8);
}

/* ---- the record codec ---- */

static void test_delta_record(void **state)
{
    (void)state;
    uint8_t key[32], base[PAGE], page[PAGE];
    ASSERT_OK(cs_random_bytes(key, sizeof(key)));
    fill_page(base, 1);
    memcpy(page, base, PAGE);
    touch_page(page, 3);
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    Buf z = BUF_INIT, rec = BUF_INIT, plain = BUF_INIT, alone = BUF_INIT;

    int flags = cs_record_compress_prefixed(cctx, 3, base, PAGE, page, PAGE, &z);
    assert_int_equal(flags, CS_RECORD_FLAG_ZSTD | CS_RECORD_FLAG_DELTA);
    assert_int_equal(cs_record_compress(cctx, 3, page, PAGE, &alone), CS_RECORD_FLAG_ZSTD);
    assert_true(z.size * 4 < alone.size); /* the point of it */

    CsRecordMember m = { .length = PAGE };
    CsChunkSlice b = { .length = PAGE };
    ASSERT_OK(cs_random_bytes(m.id.bytes, CS_CHUNK_ID_SIZE));
    ASSERT_OK(cs_random_bytes(b.id.bytes, CS_CHUNK_ID_SIZE));
    CsRecordBases bases = { .v = &b, .n = 1, .depth = 1 };
    ASSERT_OK(cs_record_encode_delta(key, &m, 1, &bases, (uint8_t)flags, PAGE, z.data, z.size,
                                     &rec));
    assert_int_equal(rec.size, CS_RECORD_HEADER_SIZE + CS_RECORD_MEMBER_SIZE +
                                       CS_RECORD_BASE_COUNT_SIZE + CS_RECORD_MEMBER_SIZE + z.size +
                                       CS_RECORD_TRAILER_SIZE);
    CsRecordInfo in;
    ASSERT_OK(cs_record_info(rec.data, rec.size, &in));
    assert_int_equal(in.flags, flags);
    assert_int_equal(in.depth, 1);
    assert_int_equal(in.n_members, 1);
    assert_int_equal(in.n_bases, 1);
    assert_int_equal(in.prefix_len, PAGE);
    assert_memory_equal(in.bases, b.id.bytes, CS_CHUNK_ID_SIZE);

    const uint8_t *mp;
    size_t mn;
    ASSERT_OK(
            cs_record_decode_prefixed(NULL, key, rec.data, rec.size, base, PAGE, &plain, &mp, &mn));
    assert_int_equal(plain.size, PAGE);
    assert_memory_equal(plain.data, page, PAGE);
    assert_int_equal(mn, 1);

    /* Without its prefix, or with one of another length, the record does not decode. */
    ASSERT_ERR(EBADMSG, cs_record_decode(key, rec.data, rec.size, &plain, &mp, &mn));
    ASSERT_ERR(EBADMSG, cs_record_decode_prefixed(NULL, key, rec.data, rec.size, base, PAGE - 1,
                                                  &plain, &mp, &mn));
    /* A plain record given a prefix is refused too: nothing is decoded against the wrong bytes. */
    Buf plain_rec = BUF_INIT;
    ASSERT_OK(cs_record_encode(key, &m, 1, CS_RECORD_FLAG_ZSTD, PAGE, alone.data, alone.size,
                               &plain_rec));
    ASSERT_ERR(EBADMSG, cs_record_decode_prefixed(NULL, key, plain_rec.data, plain_rec.size, base,
                                                  PAGE, &plain, &mp, &mn));
    /* One context for many records: a prefix is for its frame only, so a plain record decodes
     * after a delta record, and the delta record again after that. */
    void *dctx = cs_zstd_dctx_new();
    assert_non_null(dctx);
    for (int i = 0; i < 2; i++) {
        ASSERT_OK(cs_record_decode_prefixed(dctx, key, rec.data, rec.size, base, PAGE, &plain, &mp,
                                            &mn));
        assert_memory_equal(plain.data, page, PAGE);
        ASSERT_OK(cs_record_decode_prefixed(dctx, key, plain_rec.data, plain_rec.size, NULL, 0,
                                            &plain, &mp, &mn));
        assert_memory_equal(plain.data, page, PAGE);
    }
    cs_zstd_dctx_free(dctx);

    /* Inconsistent requests are refused before anything is written. */
    Buf junk = BUF_INIT;
    ASSERT_ERR(EINVAL, cs_record_encode_delta(key, &m, 1, &bases, CS_RECORD_FLAG_DELTA, PAGE,
                                              z.data, z.size, &junk));
    ASSERT_ERR(EINVAL, cs_record_encode_delta(key, &m, 1, NULL, (uint8_t)flags, PAGE, z.data,
                                              z.size, &junk));
    CsRecordBases flat = { .v = &b, .n = 1, .depth = 0 };
    ASSERT_ERR(EINVAL, cs_record_encode_delta(key, &m, 1, &flat, (uint8_t)flags, PAGE, z.data,
                                              z.size, &junk));
    /* A base inside a chunk needs the sliced base list, which needs a delta record. */
    CsChunkSlice inside = { .id = b.id, .offset = PAGE, .length = PAGE };
    CsRecordBases sliced = { .v = &inside, .n = 1, .depth = 1 };
    ASSERT_ERR(EINVAL, cs_record_encode_delta(key, &m, 1, &sliced, (uint8_t)flags, PAGE, z.data,
                                              z.size, &junk));
    ASSERT_ERR(EINVAL, cs_record_encode(key, &m, 1,
                                        CS_RECORD_FLAG_ZSTD | CS_RECORD_FLAG_SLICED_BASES, PAGE,
                                        alone.data, alone.size, &junk));
    assert_int_equal(junk.size, 0);
    /* With the flag: 40-byte bases that say where they start. */
    Buf srec = BUF_INIT;
    ASSERT_OK(cs_record_encode_delta(key, &m, 1, &sliced,
                                     (uint8_t)(flags | CS_RECORD_FLAG_SLICED_BASES), PAGE, z.data,
                                     z.size, &srec));
    assert_int_equal(srec.size, rec.size + CS_SLICE_SIZE - CS_RECORD_MEMBER_SIZE);
    CsRecordInfo sin;
    ASSERT_OK(cs_record_info(srec.data, srec.size, &sin));
    assert_int_equal(sin.base_size, CS_SLICE_SIZE);
    assert_int_equal(sin.prefix_len, PAGE);
    CsChunkSlice back = cs_record_base(&sin, 0);
    assert_memory_equal(back.id.bytes, b.id.bytes, CS_CHUNK_ID_SIZE);
    assert_int_equal(back.offset, PAGE);
    assert_int_equal(back.length, PAGE);
    ASSERT_OK(cs_record_decode_prefixed(NULL, key, srec.data, srec.size, base, PAGE, &plain, &mp,
                                        &mn));
    assert_memory_equal(plain.data, page, PAGE);
    buf_free(&srec);

    /* In two halves: authenticated first, so a reader acts on no base list that is not the
     * writer's; then expanded against the bases. */
    Buf payload = BUF_INIT;
    CsRecordInfo oin;
    ASSERT_OK(cs_record_open(key, rec.data, rec.size, &payload, &oin));
    assert_int_equal(oin.n_bases, 1);
    assert_memory_equal(oin.bases, b.id.bytes, CS_CHUNK_ID_SIZE);
    ASSERT_OK(cs_record_expand(NULL, &oin, &payload, base, PAGE, &plain));
    assert_memory_equal(plain.data, page, PAGE);
    Buf forged = BUF_INIT;
    ASSERT_OK(buf_append(&forged, rec.data, rec.size));
    size_t base_at = CS_RECORD_HEADER_SIZE + CS_RECORD_MEMBER_SIZE + CS_RECORD_BASE_COUNT_SIZE;
    forged.data[base_at] ^= 1; /* another base, with a checksum to match */
    put_le64(forged.data + forged.size - 8, XXH3_64bits(forged.data, forged.size - 8));
    ASSERT_OK(cs_record_verify(forged.data, forged.size)); /* framing alone cannot tell */
    ASSERT_ERR(EBADMSG, cs_record_open(key, forged.data, forged.size, &payload, &oin));
    /* A raw length past what any writer makes is refused before anything is allocated. */
    buf_clear(&forged);
    ASSERT_OK(buf_append(&forged, rec.data, rec.size));
    put_le32(forged.data + 8, CS_RECORD_MAX_RAW + 1);
    put_le64(forged.data + forged.size - 8, XXH3_64bits(forged.data, forged.size - 8));
    ASSERT_ERR(EBADMSG, cs_record_verify(forged.data, forged.size));
    buf_free(&forged);
    buf_free(&payload);

    /* The depth byte must agree with the flags, even with a valid checksum. */
    Buf bad = BUF_INIT;
    for (int variant = 0; variant < 3; variant++) {
        buf_clear(&bad);
        ASSERT_OK(buf_append(&bad, rec.data, rec.size));
        if (variant == 0)
            bad.data[5] = 0; /* delta with depth 0 */
        else if (variant == 1)
            bad.data[4] = CS_RECORD_FLAG_DELTA; /* delta without zstd */
        else
            bad.data[4] = 0x04; /* unknown flag */
        put_le64(bad.data + bad.size - 8, XXH3_64bits(bad.data, bad.size - 8));
        ASSERT_ERR(EBADMSG, cs_record_verify(bad.data, bad.size));
    }
    ZSTD_freeCCtx(cctx);
    buf_free(&z);
    buf_free(&rec);
    buf_free(&plain);
    buf_free(&alone);
    buf_free(&plain_rec);
    buf_free(&junk);
    buf_free(&bad);
}

/* Version 4: one frame per member, each against its own base, decoded one at a time. */
static void test_framed_record(void **state)
{
    (void)state;
    uint8_t key[32], base[2][PAGE], page[2][PAGE];
    ASSERT_OK(cs_random_bytes(key, sizeof(key)));
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    void *dctx = cs_zstd_dctx_new();
    Buf frames[2] = { BUF_INIT, BUF_INIT }, payload = BUF_INIT, rec = BUF_INIT, open = BUF_INIT;
    CsRecordMember m[2] = { { .length = PAGE }, { .length = PAGE } };
    CsChunkSlice b[2] = { { .offset = PAGE, .length = PAGE }, { .length = PAGE } };
    for (int i = 0; i < 2; i++) {
        fill_page(base[i], (uint32_t)i + 10);
        memcpy(page[i], base[i], PAGE);
        touch_page(page[i], (unsigned)i + 1);
        ASSERT_OK(cs_random_bytes(m[i].id.bytes, CS_CHUNK_ID_SIZE));
        ASSERT_OK(cs_random_bytes(b[i].id.bytes, CS_CHUNK_ID_SIZE));
        ASSERT_OK(cs_frame_compress(cctx, 3, base[i], PAGE, page[i], PAGE, &frames[i]));
        assert_true(frames[i].size < PAGE / 20);
        ASSERT_OK(buf_append_le32(&payload, (uint32_t)frames[i].size));
    }
    for (int i = 0; i < 2; i++)
        ASSERT_OK(buf_append(&payload, frames[i].data, frames[i].size));
    uint8_t flags = CS_RECORD_FLAG_ZSTD | CS_RECORD_FLAG_DELTA | CS_RECORD_FLAG_SLICED_BASES |
                    CS_RECORD_FLAG_FRAMED;
    CsRecordBases bases = { .v = b, .n = 2, .depth = 1 };
    ASSERT_OK(cs_record_encode_delta(key, m, 2, &bases, flags, 2 * PAGE, payload.data,
                                     payload.size, &rec));
    CsRecordInfo in;
    ASSERT_OK(cs_record_open_framed(key, rec.data, rec.size, &open, &in));
    assert_int_equal(in.n_members, 2);
    assert_int_equal(in.n_bases, 2);
    assert_int_equal(in.raw_len, 2 * PAGE);
    assert_int_equal(open.size, payload.size);
    uint32_t offs[3];
    ASSERT_OK(cs_frames_index(open.data, open.size, 2, offs));
    /* Member 1 first: each decodes alone, against its own base. */
    uint8_t out[PAGE];
    for (int i = 1; i >= 0; i--) {
        CsChunkSlice back = cs_record_base(&in, (size_t)i);
        assert_int_equal(back.offset, b[i].offset);
        ASSERT_OK(cs_frame_decode(dctx, open.data + offs[i], offs[i + 1] - offs[i], base[i], PAGE,
                                  out, PAGE));
        assert_memory_equal(out, page[i], PAGE);
    }
    /* A base too short for the frame's matches, or an output of another length, is refused. */
    ASSERT_ERR(EBADMSG, cs_frame_decode(dctx, open.data + offs[0], offs[1] - offs[0],
                                        base[0] + PAGE - 16, 16, out, PAGE));
    ASSERT_ERR(EBADMSG, cs_frame_decode(dctx, open.data + offs[0], offs[1] - offs[0], base[0],
                                        PAGE, out, PAGE - 1));
    /* A framed record is not decoded whole, and a plain one is not opened as framed. */
    Buf plain = BUF_INIT;
    const uint8_t *mp;
    size_t mn;
    ASSERT_ERR(EBADMSG, cs_record_decode_prefixed(dctx, key, rec.data, rec.size, base[0], PAGE,
                                                  &plain, &mp, &mn));
    Buf plain_rec = BUF_INIT;
    ASSERT_OK(cs_record_encode(key, m, 1, 0, PAGE, page[0], PAGE, &plain_rec));
    ASSERT_ERR(EBADMSG, cs_record_open_framed(key, plain_rec.data, plain_rec.size, &open, &in));
    /* A frame table that does not tile the payload is damage. */
    uint8_t table[8];
    put_le32(table, 1000000);
    put_le32(table + 4, 0);
    ASSERT_ERR(EBADMSG, cs_frames_index(table, sizeof(table), 2, offs));
    ASSERT_ERR(EBADMSG, cs_frames_index(open.data, open.size - 1, 2, offs));
    ASSERT_ERR(EBADMSG, cs_frames_index(open.data, 4, 2, offs));
    /* One base per member, as slices; the flag means nothing without them. */
    Buf junk = BUF_INIT;
    CsRecordBases one = { .v = b, .n = 1, .depth = 1 };
    ASSERT_ERR(EINVAL, cs_record_encode_delta(key, m, 2, &one, flags, 2 * PAGE, payload.data,
                                              payload.size, &junk));
    ASSERT_ERR(EINVAL, cs_record_encode_delta(key, m, 2, &bases,
                                              (uint8_t)(flags & ~CS_RECORD_FLAG_SLICED_BASES),
                                              2 * PAGE, payload.data, payload.size, &junk));
    Buf bad = BUF_INIT;
    ASSERT_OK(buf_append(&bad, rec.data, rec.size));
    bad.data[4] = CS_RECORD_FLAG_ZSTD | CS_RECORD_FLAG_DELTA | CS_RECORD_FLAG_FRAMED;
    put_le64(bad.data + bad.size - 8, XXH3_64bits(bad.data, bad.size - 8));
    ASSERT_ERR(EBADMSG, cs_record_verify(bad.data, bad.size));
    /* The authenticated header: a changed base list fails the tag. */
    buf_clear(&bad);
    ASSERT_OK(buf_append(&bad, rec.data, rec.size));
    bad.data[CS_RECORD_HEADER_SIZE + 2 * CS_RECORD_MEMBER_SIZE + CS_RECORD_BASE_COUNT_SIZE] ^= 1;
    put_le64(bad.data + bad.size - 8, XXH3_64bits(bad.data, bad.size - 8));
    ASSERT_OK(cs_record_verify(bad.data, bad.size));
    ASSERT_ERR(EBADMSG, cs_record_open_framed(key, bad.data, bad.size, &open, &in));
    assert_int_equal(junk.size, 0);

    ZSTD_freeCCtx(cctx);
    cs_zstd_dctx_free(dctx);
    for (int i = 0; i < 2; i++)
        buf_free(&frames[i]);
    buf_free(&payload);
    buf_free(&rec);
    buf_free(&open);
    buf_free(&plain);
    buf_free(&plain_rec);
    buf_free(&junk);
    buf_free(&bad);
}

/* The index can be rebuilt from a pack holding delta records. */
static void test_delta_pack_trailer(void **state)
{
    (void)state;
    TestRepo t;
    test_repo_create(&t, "delta-trailer", PASSPHRASE);
    uint8_t base[PAGE], page[PAGE];
    fill_page(base, 2);
    memcpy(page, base, PAGE);
    touch_page(page, 1);
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    Buf z = BUF_INIT;
    int flags = cs_record_compress_prefixed(cctx, 3, base, PAGE, page, PAGE, &z);
    assert_true(flags > 0);
    CsRecordMember m[3] = { { .length = PAGE }, { .length = PAGE }, { .length = PAGE } };
    for (int i = 0; i < 3; i++)
        ASSERT_OK(cs_random_bytes(m[i].id.bytes, CS_CHUNK_ID_SIZE));
    CsChunkSlice b0 = { .id = m[0].id, .length = PAGE };
    CsRecordBases bases = { .v = &b0, .n = 1, .depth = 1 };

    CsPackWriter *w;
    ASSERT_OK(cs_pack_writer_new(t.repo->backend, t.repo->keys.enc_key, &w));
    ASSERT_OK(cs_pack_writer_add(w, &m[0], 1, 0, PAGE, base, PAGE));
    ASSERT_OK(cs_pack_writer_add_delta(w, &m[1], 1, &bases, (uint8_t)flags, PAGE, z.data,
                                       z.size));
    ASSERT_OK(cs_pack_writer_add(w, &m[2], 1, 0, PAGE, page, PAGE));
    CsPackId id, id2;
    CsPackEntry *written, *read;
    size_t n_written, n_read;
    uint64_t size;
    ASSERT_OK(cs_pack_writer_finish(w, &id, &written, &n_written, &size));
    char name[CS_PACK_NAME_MAX];
    cs_pack_name(&id, name);
    ASSERT_OK(cs_pack_read_trailer(t.repo->backend, name, &id2, &read, &n_read));
    assert_int_equal(n_read, 3);
    assert_int_equal(n_written, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_memory_equal(read[i].id.bytes, written[i].id.bytes, CS_CHUNK_ID_SIZE);
        assert_memory_equal(read[i].loc.pack.bytes, id.bytes, CS_PACK_ID_SIZE);
        assert_int_equal(read[i].loc.record_off, written[i].loc.record_off);
        assert_int_equal(read[i].loc.record_len, written[i].loc.record_len);
        assert_int_equal(read[i].loc.member_off, written[i].loc.member_off);
        assert_int_equal(read[i].loc.length, written[i].loc.length);
    }
    assert_memory_equal(id2.bytes, id.bytes, CS_PACK_ID_SIZE);
    free(written);
    free(read);
    ZSTD_freeCCtx(cctx);
    buf_free(&z);
    test_repo_destroy(&t);
}

/* Two delta records that name each other's member as their base: a reader reports damage
 * instead of recursing without end (only a key holder can write such records, but a reader
 * must not hang on them). */
static void test_delta_base_cycle(void **state)
{
    (void)state;
    TestRepo t;
    test_repo_create(&t, "delta-cycle", PASSPHRASE);
    uint8_t page[PAGE], other[PAGE];
    fill_page(page, 1);
    fill_page(other, 2);
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    Buf z1 = BUF_INIT, z2 = BUF_INIT;
    int f1 = cs_record_compress_prefixed(cctx, 3, other, PAGE, page, PAGE, &z1);
    int f2 = cs_record_compress_prefixed(cctx, 3, page, PAGE, other, PAGE, &z2);
    assert_true(f1 > 0 && f2 > 0);
    CsRecordMember x = { .length = PAGE }, y = { .length = PAGE };
    ASSERT_OK(cs_random_bytes(x.id.bytes, CS_CHUNK_ID_SIZE));
    ASSERT_OK(cs_random_bytes(y.id.bytes, CS_CHUNK_ID_SIZE));
    CsChunkSlice sx = { .id = x.id, .length = PAGE }, sy = { .id = y.id, .length = PAGE };
    CsRecordBases base_y = { .v = &sy, .n = 1, .depth = 1 }, base_x = { .v = &sx, .n = 1, .depth = 1 };
    CsPackWriter *w;
    ASSERT_OK(cs_pack_writer_new(t.repo->backend, t.repo->keys.enc_key, &w));
    ASSERT_OK(cs_pack_writer_add_delta(w, &x, 1, &base_y, (uint8_t)f1, PAGE, z1.data, z1.size));
    ASSERT_OK(cs_pack_writer_add_delta(w, &y, 1, &base_x, (uint8_t)f2, PAGE, z2.data, z2.size));
    CsPackId id;
    CsPackEntry *entries;
    size_t n;
    uint64_t size;
    ASSERT_OK(cs_pack_writer_finish(w, &id, &entries, &n, &size));
    ASSERT_OK(cs_index_publish_pack(t.repo->index, &id, size, entries, n));
    free(entries);
    CsReader *rd = NULL;
    ASSERT_OK(cs_reader_new(t.repo, &rd));
    const uint8_t *p;
    size_t len;
    ASSERT_ERR(EBADMSG, cs_reader_chunk(rd, &x.id, &p, &len));
    ASSERT_ERR(EBADMSG, cs_reader_chunk(rd, &y.id, &p, &len));
    cs_reader_free(rd);
    ZSTD_freeCCtx(cctx);
    buf_free(&z1);
    buf_free(&z2);
    test_repo_destroy(&t);
}

/* ---- generations through the pipeline ---- */

typedef struct Fixture {
    TestRepo t;
    char *src;
    uint8_t *file; /* the page file's current content */
} Fixture;

static int setup_version(void **state, uint32_t version)
{
    Fixture *f = calloc(1, sizeof(*f));
    test_repo_create_version(&f->t, "delta", PASSPHRASE, version);
    f->src = path_join(f->t.base, "src");
    assert_int_equal(mkdir(f->src, 0755), 0);
    _cleanup_free_ char *d = path_join(f->src, "base");
    assert_int_equal(mkdir(d, 0755), 0);
    f->file = test_xmalloc(PAGES * PAGE);
    for (uint32_t i = 0; i < PAGES; i++)
        fill_page(f->file + (size_t)i * PAGE, i);
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return setup_version(state, 0);
}

/* Version 3 repositories keep their chained deltas. */
static int setup_v3(void **state)
{
    return setup_version(state, CS_FORMAT_VERSION_RUNS);
}

static int teardown(void **state)
{
    Fixture *f = *state;
    test_repo_destroy(&f->t);
    free(f->src);
    free(f->file);
    free(f);
    return 0;
}

static bool is_page_file(const char *relpath, const struct stat *st, void *userdata)
{
    (void)st;
    (void)userdata;
    return strncmp(relpath, "base/", 5) == 0;
}

static void write_src(Fixture *f)
{
    _cleanup_free_ char *p = path_join(f->src, "base/16384");
    ASSERT_OK(write_file_atomic(p, f->file, PAGES * PAGE, 0600));
}

/* Store src with `previous` as the previous version; returns the writer's stats. */
static CsWriterStats store_generation(Fixture *f, const CsContentRef *previous, CsContentRef *root)
{
    CsWriter *w = NULL;
    ASSERT_OK(cs_writer_new(f->t.repo, &(CsWriterParams){ .threads = 2 }, &w));
    CsTreeParams tp = { .is_page_file = is_page_file, .previous = previous };
    ASSERT_OK(cs_tree_store(w, f->src, &tp, root, NULL));
    ASSERT_OK(cs_writer_flush(w));
    CsWriterStats st;
    cs_writer_stats(w, &st);
    cs_writer_free(w);
    return st;
}

/* The page file of a stored tree, read back whole. */
static void read_generation(CsReader *rd, const CsContentRef *root, Buf *out)
{
    CsDirEntry e;
    ASSERT_OK(cs_tree_lookup(rd, root, "base/16384", &e));
    buf_clear(out);
    ASSERT_OK(cs_reader_read_all(rd, &e.content, SIZE_MAX, out));
    cs_dir_entry_clear(&e);
}

/* Every one of n stored generations reads back as expected, the newest first. */
static void check_generations(CsReader *rd, const CsContentRef *roots, uint8_t *const *expect,
                              unsigned n, Buf *out)
{
    for (unsigned g = n; g-- > 0;) {
        read_generation(rd, &roots[g], out);
        assert_int_equal(out->size, PAGES * PAGE);
        if (memcmp(out->data, expect[g], out->size) != 0)
            fail_msg("generation %u does not read back", g);
    }
}

/* The slice of a flattened page-file list that holds page k (entries are runs of pages, or
 * single pages). */
static CsChunkSlice page_at(const CsContentRef *flat, size_t k)
{
    uint64_t at = (uint64_t)k * PAGE, start = 0;
    for (uint32_t i = 0; i < flat->count; i++) {
        const CsChunkSlice *e = &flat->entries[i];
        if (at < start + e->length) {
            assert_true(at + PAGE <= start + e->length);
            return (CsChunkSlice){ .id = e->id, .offset = e->offset + (uint32_t)(at - start),
                                   .length = PAGE };
        }
        start += e->length;
    }
    fail_msg("page %zu is past the end of the list", k);
    return (CsChunkSlice){ 0 };
}

/* Page k of a flattened page-file list, read. */
static int read_page(CsReader *rd, const CsContentRef *flat, size_t k, const uint8_t **ret)
{
    CsChunkSlice s = page_at(flat, k);
    return cs_reader_slice(rd, &s, ret);
}

static const uint32_t changed_pages[CHANGED] = { 3, 17, 40, 64, 65, 99, 128, 150, 151, 199 };

static void test_delta_generations(void **state)
{
    Fixture *f = *state;
    enum { GENERATIONS = CS_DELTA_MAX_DEPTH + 3 };
    CsContentRef roots[GENERATIONS];
    uint8_t *expect[GENERATIONS];
    CsWriterStats st[GENERATIONS];
    for (unsigned g = 0; g < GENERATIONS; g++) {
        if (g > 0)
            for (unsigned i = 0; i < CHANGED; i++)
                touch_page(f->file + (size_t)changed_pages[i] * PAGE, g);
        write_src(f);
        expect[g] = test_xmalloc(PAGES * PAGE);
        memcpy(expect[g], f->file, PAGES * PAGE);
        st[g] = store_generation(f, g ? &roots[g - 1] : NULL, &roots[g]);
    }
    /* The same pages change every time: generations 1..MAX are deltas, each one level deeper;
     * the next stores them whole, and the chain starts again. */
    for (unsigned g = 0; g < GENERATIONS; g++) {
        unsigned want = g == 0 || g == CS_DELTA_MAX_DEPTH + 1 ? 0 : CHANGED;
        if (st[g].delta_chunks != want)
            fail_msg("generation %u: %llu delta chunks, expected %u", g,
                     (unsigned long long)st[g].delta_chunks, want);
    }
    /* A delta costs a fraction of the page stored whole (the rest is metadata, the same in both). */
    assert_true(st[1].stored_bytes < st[CS_DELTA_MAX_DEPTH + 1].stored_bytes);

    /* Every generation restores byte for byte, through a fresh reader (no warm cache), and no
     * chunk sits deeper than the limit. */
    CsReader *rd = NULL;
    ASSERT_OK(cs_reader_new(f->t.repo, &rd));
    Buf out = BUF_INIT;
    check_generations(rd, roots, expect, GENERATIONS, &out);
    CsDirEntry e;
    ASSERT_OK(cs_tree_lookup(rd, &roots[CS_DELTA_MAX_DEPTH], "base/16384", &e));
    CsContentRef flat;
    ASSERT_OK(cs_reader_flatten(rd, &e.content, &flat));
    uint8_t deepest = 0;
    for (uint32_t i = 0; i < flat.count; i++) {
        const uint8_t *p;
        size_t n;
        uint8_t depth;
        ASSERT_OK(cs_reader_chunk_depth(rd, &flat.entries[i].id, &p, &n, &depth));
        deepest = MAX(deepest, depth);
    }
    assert_int_equal(deepest, CS_DELTA_MAX_DEPTH);
    cs_content_ref_free(&flat);
    cs_dir_entry_clear(&e);

    /* A whole restore of the newest generation through the tree code. */
    _cleanup_free_ char *dst = path_join(f->t.base, "restored");
    ASSERT_OK(cs_tree_restore(rd, &roots[GENERATIONS - 1], dst, &(CsRestoreParams){ 0 }, NULL));
    _cleanup_free_ char *rp = path_join(dst, "base/16384");
    _cleanup_free_ char *back = NULL;
    size_t back_n;
    ASSERT_OK(read_file(rp, SIZE_MAX, &back, &back_n));
    assert_int_equal(back_n, PAGES * PAGE);
    assert_memory_equal(back, expect[GENERATIONS - 1], PAGES * PAGE);

    buf_free(&out);
    cs_reader_free(rd);
    for (unsigned g = 0; g < GENERATIONS; g++) {
        cs_content_ref_free(&roots[g]);
        free(expect[g]);
    }
}

/* Flip a byte inside the record that holds `id`. */
static void damage_record_of(Fixture *f, const CsChunkId *id)
{
    CsIndexReader *ir;
    ASSERT_OK(cs_index_reader_begin(f->t.repo->index, &ir));
    CsChunkLoc loc;
    ASSERT_OK(cs_index_reader_lookup(ir, id, &loc));
    cs_index_reader_end(ir);
    char name[CS_PACK_NAME_MAX];
    cs_pack_name(&loc.pack, name);
    _cleanup_free_ char *path = path_join(f->t.location, name);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t byte;
    off_t at = (off_t)(loc.record_off + loc.record_len - 40);
    assert_int_equal(pread(fd, &byte, 1, at), 1);
    byte ^= 0x5a;
    assert_int_equal(pwrite(fd, &byte, 1, at), 1);
    close(fd);
}

static void test_delta_damaged_base(void **state)
{
    Fixture *f = *state;
    CsContentRef r0, r1, r2;
    write_src(f);
    store_generation(f, NULL, &r0);
    uint8_t *gen1 = test_xmalloc(PAGES * PAGE);
    touch_page(f->file + 3 * PAGE, 1);
    write_src(f);
    memcpy(gen1, f->file, PAGES * PAGE);
    assert_int_equal(store_generation(f, &r0, &r1).delta_chunks, 1);

    /* Damage the record holding page 3's previous version (pages 0..63 of generation 0). */
    CsReader *rd = NULL;
    ASSERT_OK(cs_reader_new(f->t.repo, &rd));
    CsDirEntry e0, e1;
    ASSERT_OK(cs_tree_lookup(rd, &r0, "base/16384", &e0));
    ASSERT_OK(cs_tree_lookup(rd, &r1, "base/16384", &e1));
    CsContentRef flat0, flat1;
    ASSERT_OK(cs_reader_flatten(rd, &e0.content, &flat0));
    ASSERT_OK(cs_reader_flatten(rd, &e1.content, &flat1));
    cs_reader_free(rd);
    CsChunkSlice page3 = page_at(&flat0, 3);
    damage_record_of(f, &page3.id);

    /* The delta page fails as damaged, never as other bytes; pages in other records read. */
    ASSERT_OK(cs_reader_new(f->t.repo, &rd));
    const uint8_t *p;
    ASSERT_ERR(EBADMSG, read_page(rd, &flat1, 3, &p));
    ASSERT_OK(read_page(rd, &flat1, 100, &p));
    assert_memory_equal(p, gen1 + 100 * PAGE, PAGE);
    cs_reader_free(rd);

    /* A new backup on top of the damaged chain still succeeds: the page that cannot serve as a
     * base is stored whole, and reads back. */
    touch_page(f->file + 3 * PAGE, 2);
    touch_page(f->file + 100 * PAGE, 2);
    write_src(f);
    CsWriterStats st = store_generation(f, &r1, &r2);
    assert_int_equal(st.delta_chunks, 1); /* page 100; page 3's base is unreadable */
    ASSERT_OK(cs_reader_new(f->t.repo, &rd));
    CsDirEntry e2;
    ASSERT_OK(cs_tree_lookup(rd, &r2, "base/16384", &e2));
    CsContentRef flat2;
    ASSERT_OK(cs_reader_flatten(rd, &e2.content, &flat2));
    ASSERT_OK(read_page(rd, &flat2, 3, &p));
    assert_memory_equal(p, f->file + 3 * PAGE, PAGE);
    ASSERT_OK(read_page(rd, &flat2, 100, &p));
    assert_memory_equal(p, f->file + 100 * PAGE, PAGE);
    cs_reader_free(rd);

    free(gen1);
    cs_content_ref_free(&flat0);
    cs_content_ref_free(&flat1);
    cs_content_ref_free(&flat2);
    cs_dir_entry_clear(&e0);
    cs_dir_entry_clear(&e1);
    cs_dir_entry_clear(&e2);
    cs_content_ref_free(&r0);
    cs_content_ref_free(&r1);
    cs_content_ref_free(&r2);
}

/* Every page of a stored generation's page file, as the reader gives it; true when each is the
 * expected bytes. */
static CsContentRef generation_flat(CsReader *rd, const CsContentRef *root)
{
    CsDirEntry e;
    ASSERT_OK(cs_tree_lookup(rd, root, "base/16384", &e));
    CsContentRef flat;
    ASSERT_OK(cs_reader_flatten(rd, &e.content, &flat));
    cs_dir_entry_clear(&e);
    return flat;
}

static bool same_slice(const CsChunkSlice *a, const CsChunkSlice *b)
{
    return a->offset == b->offset && a->length == b->length &&
           memcmp(a->id.bytes, b->id.bytes, CS_CHUNK_ID_SIZE) == 0;
}

/* Version 4: the same pages change in every generation, yet every delta is made against the
 * page as generation 0 stored it (depth 1, one frame to decode), and every generation restores.
 * A page rewritten whole becomes a new key, and its next change is a delta of that. */
static void test_keyed_generations(void **state)
{
    Fixture *f = *state;
    enum { GENERATIONS = 8, REWRITTEN = 150, REWRITE_AT = 4 };
    CsContentRef roots[GENERATIONS];
    uint8_t *expect[GENERATIONS];
    CsWriterStats st[GENERATIONS];
    /* Rows that compress like real ones: a delta of a few rows stays far below a whole page. */
    for (uint32_t i = 0; i < PAGES; i++)
        fill_page_hex(f->file + (size_t)i * PAGE, i);
    for (unsigned g = 0; g < GENERATIONS; g++) {
        if (g > 0)
            for (unsigned i = 0; i < CHANGED; i++)
                touch_page(f->file + (size_t)changed_pages[i] * PAGE, g);
        if (g == REWRITE_AT) /* other bytes altogether: no delta of its key is worth it */
            ASSERT_OK(cs_random_bytes(f->file + (size_t)REWRITTEN * PAGE, PAGE));
        write_src(f);
        expect[g] = test_xmalloc(PAGES * PAGE);
        memcpy(expect[g], f->file, PAGES * PAGE);
        st[g] = store_generation(f, g ? &roots[g - 1] : NULL, &roots[g]);
    }
    for (unsigned g = 0; g < GENERATIONS; g++) {
        unsigned want = g == 0 ? 0 : g == REWRITE_AT ? CHANGED - 1 : CHANGED;
        if (st[g].delta_chunks != want)
            fail_msg("generation %u: %llu delta chunks, expected %u", g,
                     (unsigned long long)st[g].delta_chunks, want);
    }

    CsReader *rd = NULL;
    ASSERT_OK(cs_reader_new(f->t.repo, &rd));
    Buf out = BUF_INIT;
    check_generations(rd, roots, expect, GENERATIONS, &out);
    /* The newest generation's changed pages: depth 1, and their key is generation 0's page
     * (generation REWRITE_AT's for the rewritten one), which is stored whole. */
    CsContentRef flat0 = generation_flat(rd, &roots[0]);
    CsContentRef flat_rw = generation_flat(rd, &roots[REWRITE_AT]);
    CsContentRef newest = generation_flat(rd, &roots[GENERATIONS - 1]);
    for (unsigned i = 0; i < CHANGED; i++) {
        uint32_t k = changed_pages[i];
        CsChunkSlice s = page_at(&newest, k);
        const uint8_t *p;
        size_t n;
        uint8_t depth;
        ASSERT_OK(cs_reader_chunk_depth(rd, &s.id, &p, &n, &depth));
        assert_int_equal(depth, 1);
        CsDeltaKey key;
        ASSERT_OK(cs_reader_delta_key(rd, &s, &key));
        CsChunkSlice want = page_at(k == REWRITTEN ? &flat_rw : &flat0, k);
        if (!same_slice(&key.slice, &want))
            fail_msg("page %u: its key is not the page stored whole", k);
        assert_memory_equal(key.p, k == REWRITTEN ? expect[REWRITE_AT] + (size_t)k * PAGE
                                                  : expect[0] + (size_t)k * PAGE,
                            PAGE);
        ASSERT_OK(cs_reader_chunk_depth(rd, &key.slice.id, &p, &n, &depth));
        assert_int_equal(depth, 0);
    }
    /* A delta costs a fraction of the page stored whole. */
    assert_true(st[GENERATIONS - 1].stored_bytes < st[0].stored_bytes / 4);

    buf_free(&out);
    cs_content_ref_free(&flat0);
    cs_content_ref_free(&flat_rw);
    cs_content_ref_free(&newest);
    cs_reader_free(rd);
    for (unsigned g = 0; g < GENERATIONS; g++) {
        cs_content_ref_free(&roots[g]);
        free(expect[g]);
    }
}

/* Version 4: a damaged key fails only the pages made against it. Pages 3 and 64 are deltas in
 * one record; page 3's key (pages 0..63 of generation 0) is damaged, page 64's is not. */
static void test_keyed_damaged_neighbour(void **state)
{
    Fixture *f = *state;
    CsContentRef r0, r1;
    write_src(f);
    store_generation(f, NULL, &r0);
    touch_page(f->file + 3 * PAGE, 1);
    touch_page(f->file + 64 * PAGE, 1);
    write_src(f);
    assert_int_equal(store_generation(f, &r0, &r1).delta_chunks, 2);

    CsReader *rd = NULL;
    ASSERT_OK(cs_reader_new(f->t.repo, &rd));
    CsContentRef flat0 = generation_flat(rd, &r0), flat1 = generation_flat(rd, &r1);
    CsChunkSlice d3 = page_at(&flat1, 3), d64 = page_at(&flat1, 64);
    CsIndexReader *ir;
    CsChunkLoc l3, l64;
    ASSERT_OK(cs_index_reader_begin(f->t.repo->index, &ir));
    ASSERT_OK(cs_index_reader_lookup(ir, &d3.id, &l3));
    ASSERT_OK(cs_index_reader_lookup(ir, &d64.id, &l64));
    cs_index_reader_end(ir);
    assert_int_equal(l3.record_off, l64.record_off); /* the premise: one record */
    cs_reader_free(rd);
    CsChunkSlice key3 = page_at(&flat0, 3);
    damage_record_of(f, &key3.id);

    ASSERT_OK(cs_reader_new(f->t.repo, &rd));
    const uint8_t *p;
    ASSERT_OK(read_page(rd, &flat1, 64, &p));
    assert_memory_equal(p, f->file + 64 * PAGE, PAGE);
    ASSERT_ERR(EBADMSG, read_page(rd, &flat1, 3, &p));
    ASSERT_OK(read_page(rd, &flat1, 64, &p));
    assert_memory_equal(p, f->file + 64 * PAGE, PAGE);
    cs_reader_free(rd);

    cs_content_ref_free(&flat0);
    cs_content_ref_free(&flat1);
    cs_content_ref_free(&r0);
    cs_content_ref_free(&r1);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
#define T3(fn) cmocka_unit_test_setup_teardown(fn, setup_v3, teardown)
RUN_TESTS(cmocka_unit_test(test_delta_record), cmocka_unit_test(test_framed_record),
          cmocka_unit_test(test_delta_pack_trailer), cmocka_unit_test(test_delta_base_cycle),
          T3(test_delta_generations), T3(test_delta_damaged_base), T(test_delta_damaged_base),
          T(test_keyed_generations), T(test_keyed_damaged_neighbour))
