/*
 * chunkstore/pack: record encode/decode (raw and zstd, one and many members), tamper and
 * truncation detection with and without the key, the on-disk record layout checked against
 * format.h by decrypting a record by hand and decompressing it with Debian's zstd, the pack
 * writer and trailer (including torn packs), pack names and index locations.
 */
#include "tests/unit/harness.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <xxhash.h>
#include <zstd.h>

#include "chunkstore/backend.h"
#include "chunkstore/crypto.h"
#include "chunkstore/format.h"
#include "chunkstore/pack.h"
#include "common/buf.h"
#include "common/endian.h"
#include "common/fs-util.h"
#include "common/hex.h"
#include "common/macro.h"

/* --- helpers --- */

static void random_buf(void *p, size_t n)
{
    ASSERT_OK(cs_random_bytes(p, n));
}

/* Compressible text-like data: words from a small vocabulary with a varying counter. */
static uint8_t *compressible(size_t n)
{
    static const char *const words[] = { "pitrfs ", "chunk ", "store ", "record ", "pack ",
                                         "zstd ", "frame ", "\n" };
    uint8_t *p = test_xmalloc(n);
    size_t off = 0;
    uint32_t x = 12345;
    while (off < n) {
        x = x * 1103515245u + 12345u;
        const char *w = words[(x >> 16) % ARRAY_SIZE(words)];
        size_t k = MIN(strlen(w), n - off);
        memcpy(p + off, w, k);
        off += k;
    }
    return p;
}

/* n members with the given lengths and random ids. */
static CsRecordMember *make_members(const uint32_t *lengths, size_t n)
{
    CsRecordMember *m = test_xmalloc(n * sizeof(*m));
    for (size_t i = 0; i < n; i++) {
        random_buf(m[i].id.bytes, CS_CHUNK_ID_SIZE);
        m[i].length = lengths[i];
    }
    return m;
}

static void check_members(const uint8_t *p, const CsRecordMember *m, size_t n)
{
    for (size_t i = 0; i < n; i++, p += CS_RECORD_MEMBER_SIZE) {
        assert_memory_equal(p, m[i].id.bytes, CS_CHUNK_ID_SIZE);
        assert_int_equal(get_le32(p + CS_CHUNK_ID_SIZE), m[i].length);
    }
}

/* Encode, check the size and the keyless verification, decode and compare. */
static void roundtrip(const uint8_t key[32], const CsRecordMember *m, size_t n_members,
                      const void *raw, size_t raw_len, bool compress)
{
    _cleanup_(buf_free) Buf payload = BUF_INIT, rec = BUF_INIT, plain = BUF_INIT;
    int flags = 0;
    if (compress) {
        ZSTD_CCtx *cctx = ZSTD_createCCtx();
        assert_non_null(cctx);
        flags = cs_record_compress(cctx, CS_DEFAULT_ZSTD_LEVEL, raw, raw_len, &payload);
        ZSTD_freeCCtx(cctx);
        ASSERT_OK(flags);
    } else {
        ASSERT_OK(buf_append(&payload, raw, raw_len));
    }
    ASSERT_OK(cs_record_encode(key, m, n_members, (uint8_t)flags, (uint32_t)raw_len, payload.data,
                               payload.size, &rec));
    assert_int_equal(rec.size, CS_RECORD_HEADER_SIZE + n_members * CS_RECORD_MEMBER_SIZE +
                                       payload.size + CS_RECORD_TRAILER_SIZE);
    ASSERT_OK(cs_record_verify(rec.data, rec.size));
    const uint8_t *members = NULL;
    size_t n = 0;
    ASSERT_OK(cs_record_decode(key, rec.data, rec.size, &plain, &members, &n));
    assert_int_equal(n, n_members);
    assert_int_equal(plain.size, raw_len);
    if (raw_len)
        assert_memory_equal(plain.data, raw, raw_len);
    assert_true(members >= rec.data && members + n * CS_RECORD_MEMBER_SIZE <= rec.data + rec.size);
    check_members(members, m, n_members);
}

/* --- records --- */

static void test_record_one_member(void **state)
{
    (void)state;
    uint8_t key[32];
    random_buf(key, sizeof(key));
    static const uint32_t sizes[] = { 1, 100, 4096, 65536, 300000 };
    for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
        _cleanup_free_ uint8_t *raw = test_xmalloc(sizes[i]);
        random_buf(raw, sizes[i]);
        _cleanup_free_ CsRecordMember *m = make_members(&sizes[i], 1);
        roundtrip(key, m, 1, raw, sizes[i], false);
        roundtrip(key, m, 1, raw, sizes[i], true); /* incompressible: stays raw */
        _cleanup_free_ uint8_t *text = compressible(sizes[i]);
        roundtrip(key, m, 1, text, sizes[i], false);
        roundtrip(key, m, 1, text, sizes[i], true);
    }
}

static void test_record_many_members(void **state)
{
    (void)state;
    uint8_t key[32];
    random_buf(key, sizeof(key));

    /* 50 members of assorted lengths. */
    uint32_t lengths[50];
    size_t total = 0;
    for (size_t i = 0; i < ARRAY_SIZE(lengths); i++) {
        lengths[i] = (uint32_t)(1 + (i * 977) % 5000);
        total += lengths[i];
    }
    _cleanup_free_ CsRecordMember *m = make_members(lengths, ARRAY_SIZE(lengths));
    _cleanup_free_ uint8_t *text = compressible(total);
    _cleanup_free_ uint8_t *rnd = test_xmalloc(total);
    random_buf(rnd, total);
    roundtrip(key, m, ARRAY_SIZE(lengths), text, total, true);
    roundtrip(key, m, ARRAY_SIZE(lengths), text, total, false);
    roundtrip(key, m, ARRAY_SIZE(lengths), rnd, total, true);

    /* The maximum member count, one byte each. */
    uint32_t *ones = test_xmalloc(CS_RECORD_MAX_MEMBERS * sizeof(*ones));
    for (size_t i = 0; i < CS_RECORD_MAX_MEMBERS; i++)
        ones[i] = 1;
    _cleanup_free_ CsRecordMember *mm = make_members(ones, CS_RECORD_MAX_MEMBERS);
    free(ones);
    _cleanup_free_ uint8_t *small = compressible(CS_RECORD_MAX_MEMBERS);
    roundtrip(key, mm, CS_RECORD_MAX_MEMBERS, small, CS_RECORD_MAX_MEMBERS, true);
    roundtrip(key, mm, CS_RECORD_MAX_MEMBERS, small, CS_RECORD_MAX_MEMBERS, false);

    /* Zero members or more than the maximum are refused. */
    _cleanup_(buf_free) Buf rec = BUF_INIT;
    ASSERT_ERR(EINVAL, cs_record_encode(key, mm, 0, 0, 0, small, 0, &rec));
    _cleanup_free_ CsRecordMember *too_many =
            test_xmalloc((CS_RECORD_MAX_MEMBERS + 1) * sizeof(*too_many));
    memset(too_many, 0, (CS_RECORD_MAX_MEMBERS + 1) * sizeof(*too_many));
    ASSERT_ERR(EINVAL, cs_record_encode(key, too_many, CS_RECORD_MAX_MEMBERS + 1, 0, 0, small, 0,
                                        &rec));
}

static void test_record_compress(void **state)
{
    (void)state;
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    assert_non_null(cctx);
    _cleanup_(buf_free) Buf out = BUF_INIT;

    /* Compressible data becomes a smaller zstd frame that zstd itself decodes. */
    size_t n = 200000;
    _cleanup_free_ uint8_t *text = compressible(n);
    int flags = cs_record_compress(cctx, 3, text, n, &out);
    assert_int_equal(flags, CS_RECORD_FLAG_ZSTD);
    assert_true(out.size < n / 2);
    static const uint8_t zstd_magic[4] = { 0x28, 0xb5, 0x2f, 0xfd };
    assert_memory_equal(out.data, zstd_magic, 4);
    _cleanup_free_ uint8_t *back = test_xmalloc(n);
    size_t z = ZSTD_decompress(back, n, out.data, out.size);
    assert_false(ZSTD_isError(z));
    assert_int_equal(z, n);
    assert_memory_equal(back, text, n);

    /* Random data does not shrink: copied raw, flag 0. The buffer is reset, not appended to. */
    _cleanup_free_ uint8_t *rnd = test_xmalloc(n);
    random_buf(rnd, n);
    flags = cs_record_compress(cctx, 3, rnd, n, &out);
    assert_int_equal(flags, 0);
    assert_int_equal(out.size, n);
    assert_memory_equal(out.data, rnd, n);

    /* Every level works. */
    for (int level = 1; level <= 19; level += 6) {
        flags = cs_record_compress(cctx, level, text, 5000, &out);
        assert_int_equal(flags, CS_RECORD_FLAG_ZSTD);
        z = ZSTD_decompress(back, n, out.data, out.size);
        assert_int_equal(z, 5000);
        assert_memory_equal(back, text, 5000);
    }
    ZSTD_freeCCtx(cctx);
}

/* Lengths and flags are authenticated and must agree with the payload. */
static void test_record_inconsistent(void **state)
{
    (void)state;
    uint8_t key[32];
    random_buf(key, sizeof(key));
    uint8_t raw[300];
    random_buf(raw, sizeof(raw));
    uint32_t lengths[2] = { 100, 200 };
    _cleanup_free_ CsRecordMember *m = make_members(lengths, 2);
    _cleanup_(buf_free) Buf rec = BUF_INIT, plain = BUF_INIT;
    const uint8_t *members;
    size_t n;

    /* Member lengths that do not add up to the plaintext. */
    m[1].length = 201;
    ASSERT_OK(cs_record_encode(key, m, 2, 0, sizeof(raw), raw, sizeof(raw), &rec));
    ASSERT_OK(cs_record_verify(rec.data, rec.size)); /* framing is fine... */
    ASSERT_ERR(EBADMSG, cs_record_decode(key, rec.data, rec.size, &plain, &members, &n));
    m[1].length = 200;

    /* A raw record whose raw_len differs from its payload. */
    buf_clear(&rec);
    ASSERT_OK(cs_record_encode(key, m, 2, 0, sizeof(raw) + 1, raw, sizeof(raw), &rec));
    ASSERT_ERR(EBADMSG, cs_record_decode(key, rec.data, rec.size, &plain, &members, &n));

    /* A "zstd" record whose payload is not a zstd frame. */
    buf_clear(&rec);
    ASSERT_OK(cs_record_encode(key, m, 2, CS_RECORD_FLAG_ZSTD, sizeof(raw), raw, sizeof(raw),
                               &rec));
    ASSERT_ERR(EBADMSG, cs_record_decode(key, rec.data, rec.size, &plain, &members, &n));

    /* A zstd frame that decodes to another length than raw_len. */
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    _cleanup_(buf_free) Buf z = BUF_INIT;
    _cleanup_free_ uint8_t *text = compressible(300);
    assert_int_equal(cs_record_compress(cctx, 3, text, 299, &z), CS_RECORD_FLAG_ZSTD);
    ZSTD_freeCCtx(cctx);
    buf_clear(&rec);
    ASSERT_OK(cs_record_encode(key, m, 2, CS_RECORD_FLAG_ZSTD, 300, z.data, z.size, &rec));
    ASSERT_ERR(EBADMSG, cs_record_decode(key, rec.data, rec.size, &plain, &members, &n));

    /* Unknown flags. */
    buf_clear(&rec);
    ASSERT_OK(cs_record_encode(key, m, 2, 0x80, sizeof(raw), raw, sizeof(raw), &rec));
    ASSERT_ERR(EBADMSG, cs_record_verify(rec.data, rec.size));
    ASSERT_ERR(EBADMSG, cs_record_decode(key, rec.data, rec.size, &plain, &members, &n));
}

/* Flipping any bit pattern of any single byte is detected by both the keyless check and the
 * decode; so are truncation and extension. */
static void check_tamper(const uint8_t key[32], const Buf *rec)
{
    _cleanup_(buf_free) Buf plain = BUF_INIT;
    _cleanup_free_ uint8_t *copy = test_xmalloc(rec->size + 1);
    const uint8_t *members;
    size_t n;
    static const uint8_t masks[] = { 0x01, 0x80, 0xff };

    memcpy(copy, rec->data, rec->size);
    for (size_t i = 0; i < rec->size; i++) {
        for (size_t k = 0; k < ARRAY_SIZE(masks); k++) {
            copy[i] ^= masks[k];
            int v = cs_record_verify(copy, rec->size);
            int d = cs_record_decode(key, copy, rec->size, &plain, &members, &n);
            copy[i] ^= masks[k];
            if (v != -EBADMSG || d != -EBADMSG)
                fail_msg("flip 0x%02x of byte %zu of %zu: verify %d, decode %d (expected %d)",
                         masks[k], i, rec->size, v, d, -EBADMSG);
        }
    }
    for (size_t len = 0; len < rec->size; len++) {
        if (cs_record_verify(copy, len) != -EBADMSG ||
            cs_record_decode(key, copy, len, &plain, &members, &n) != -EBADMSG)
            fail_msg("record truncated to %zu of %zu bytes was accepted", len, rec->size);
    }
    copy[rec->size] = 0;
    ASSERT_ERR(EBADMSG, cs_record_verify(copy, rec->size + 1));
    ASSERT_ERR(EBADMSG, cs_record_decode(key, copy, rec->size + 1, &plain, &members, &n));
    /* Untouched, it still decodes. */
    ASSERT_OK(cs_record_verify(copy, rec->size));
    ASSERT_OK(cs_record_decode(key, copy, rec->size, &plain, &members, &n));
}

static void test_record_tamper(void **state)
{
    (void)state;
    uint8_t key[32];
    random_buf(key, sizeof(key));
    uint32_t lengths[3] = { 40, 1, 23 };
    _cleanup_free_ CsRecordMember *m = make_members(lengths, 3);
    _cleanup_free_ uint8_t *text = compressible(64);
    _cleanup_(buf_free) Buf rec = BUF_INIT, z = BUF_INIT;

    /* Raw. */
    ASSERT_OK(cs_record_encode(key, m, 3, 0, 64, text, 64, &rec));
    check_tamper(key, &rec);

    /* zstd. */
    _cleanup_free_ uint8_t *big = compressible(2000);
    uint32_t one = 2000;
    _cleanup_free_ CsRecordMember *m1 = make_members(&one, 1);
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    assert_int_equal(cs_record_compress(cctx, 3, big, 2000, &z), CS_RECORD_FLAG_ZSTD);
    ZSTD_freeCCtx(cctx);
    buf_clear(&rec);
    ASSERT_OK(cs_record_encode(key, m1, 1, CS_RECORD_FLAG_ZSTD, 2000, z.data, z.size, &rec));
    check_tamper(key, &rec);
}

static void test_record_wrong_key(void **state)
{
    (void)state;
    uint8_t key[32], other[32];
    random_buf(key, sizeof(key));
    uint8_t raw[1000];
    random_buf(raw, sizeof(raw));
    uint32_t len = sizeof(raw);
    _cleanup_free_ CsRecordMember *m = make_members(&len, 1);
    _cleanup_(buf_free) Buf rec = BUF_INIT, plain = BUF_INIT;
    const uint8_t *members;
    size_t n;

    ASSERT_OK(cs_record_encode(key, m, 1, 0, len, raw, len, &rec));
    for (size_t bit = 0; bit < 256; bit += 7) {
        memcpy(other, key, 32);
        other[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        ASSERT_ERR(EBADMSG, cs_record_decode(other, rec.data, rec.size, &plain, &members, &n));
    }
    random_buf(other, sizeof(other));
    ASSERT_ERR(EBADMSG, cs_record_decode(other, rec.data, rec.size, &plain, &members, &n));
    /* The keyless check cannot tell; the right key still works. */
    ASSERT_OK(cs_record_verify(rec.data, rec.size));
    ASSERT_OK(cs_record_decode(key, rec.data, rec.size, &plain, &members, &n));
    assert_memory_equal(plain.data, raw, sizeof(raw));

    /* Per-pack keys: different packs give different keys; the same pack the same key. */
    CsPackId a, b;
    uint8_t ka[32], ka2[32], kb[32];
    random_buf(a.bytes, sizeof(a.bytes));
    random_buf(b.bytes, sizeof(b.bytes));
    ASSERT_OK(cs_pack_key(key, &a, ka));
    ASSERT_OK(cs_pack_key(key, &a, ka2));
    ASSERT_OK(cs_pack_key(key, &b, kb));
    assert_memory_equal(ka, ka2, 32);
    assert_memory_not_equal(ka, kb, 32);
    assert_memory_not_equal(ka, key, 32);
    /* It is HKDF-SHA-256(enc_key, salt = pack id, info = CS_INFO_PACK_KEY). */
    uint8_t expect[32];
    ASSERT_OK(cs_hkdf_sha256(key, 32, a.bytes, sizeof(a.bytes), CS_INFO_PACK_KEY,
                             strlen(CS_INFO_PACK_KEY), expect, 32));
    assert_memory_equal(ka, expect, 32);
}

/* --- the record layout, checked with independent tools --- */

/* Run a shell command with stdout captured into a Buf; returns its exit status. */
static int run_capture(const char *cmd, Buf *out)
{
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    uint8_t tmp[65536];
    size_t k;
    while ((k = fread(tmp, 1, sizeof(tmp), f)) > 0)
        ASSERT_OK(buf_append(out, tmp, k));
    int status = pclose(f);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void test_record_layout_zstd_cli(void **state)
{
    (void)state;
    if (system("command -v zstd >/dev/null 2>&1") != 0)
        fail_msg("the zstd command is needed (Debian package zstd; `make deps`)");
    _cleanup_free_ char *dir = test_mkdtemp("pack");
    uint8_t key[32];
    random_buf(key, sizeof(key));
    size_t n = 150000;
    _cleanup_free_ uint8_t *data = compressible(n);
    uint32_t lengths[3] = { 50000, 70000, 30000 };
    _cleanup_free_ CsRecordMember *m = make_members(lengths, 3);
    _cleanup_(buf_free) Buf z = BUF_INIT, rec = BUF_INIT, out = BUF_INIT;

    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    int flags = cs_record_compress(cctx, CS_DEFAULT_ZSTD_LEVEL, data, n, &z);
    ZSTD_freeCCtx(cctx);
    assert_int_equal(flags, CS_RECORD_FLAG_ZSTD);
    ASSERT_OK(cs_record_encode(key, m, 3, (uint8_t)flags, (uint32_t)n, z.data, z.size, &rec));

    /* Parse the header by hand, as docs/FORMAT.md and format.h describe it. */
    const uint8_t *p = rec.data;
    assert_true(rec.size > CS_RECORD_HEADER_SIZE + CS_RECORD_TRAILER_SIZE);
    assert_int_equal(get_le32(p), CS_RECORD_MAGIC);
    assert_memory_equal(p, "REC1", 4);
    assert_int_equal(p[4], CS_RECORD_FLAG_ZSTD);
    assert_int_equal(p[5], 0);
    uint16_t members = get_le16(p + 6);
    uint32_t raw_len = get_le32(p + 8), payload_len = get_le32(p + 12);
    const uint8_t *nonce = p + 16;
    assert_int_equal(members, 3);
    assert_int_equal(raw_len, n);
    assert_int_equal(payload_len, z.size);
    size_t aad_len = CS_RECORD_HEADER_SIZE + (size_t)members * CS_RECORD_MEMBER_SIZE;
    check_members(p + CS_RECORD_HEADER_SIZE, m, 3);
    assert_int_equal(rec.size, aad_len + payload_len + CS_TAG_SIZE + 8);
    const uint8_t *ct = p + aad_len, *tag = ct + payload_len;
    /* The trailing xxh3-64 covers everything before it. */
    assert_true(get_le64(tag + CS_TAG_SIZE) == XXH3_64bits(p, rec.size - 8));

    /* Decrypt with the plain AEAD: AAD = header + member list. */
    _cleanup_free_ uint8_t *plain = test_xmalloc(payload_len);
    ASSERT_OK(cs_aead_open(key, nonce, p, aad_len, ct, payload_len, plain, tag));
    /* A different AAD (say, the header alone) does not authenticate. */
    _cleanup_free_ uint8_t *junk = test_xmalloc(payload_len);
    ASSERT_ERR(EBADMSG, cs_aead_open(key, nonce, p, CS_RECORD_HEADER_SIZE, ct, payload_len, junk,
                                     tag));

    /* The plaintext is a standard zstd frame: Debian's zstd decodes it. */
    _cleanup_free_ char *zpath = path_join(dir, "record.zst");
    assert_non_null(zpath);
    ASSERT_OK(write_file_atomic(zpath, plain, payload_len, 0600));
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "zstd -q -d -c '%s'", zpath);
    assert_int_equal(run_capture(cmd, &out), 0);
    assert_int_equal(out.size, n);
    assert_memory_equal(out.data, data, n);

    /* The other way round: a frame made by the zstd command is a valid record payload. */
    _cleanup_free_ char *rpath = path_join(dir, "raw");
    assert_non_null(rpath);
    ASSERT_OK(write_file_atomic(rpath, data, n, 0600));
    snprintf(cmd, sizeof(cmd), "zstd -q -19 -c '%s'", rpath);
    buf_clear(&out);
    assert_int_equal(run_capture(cmd, &out), 0);
    assert_true(out.size < n);
    buf_clear(&rec);
    ASSERT_OK(cs_record_encode(key, m, 3, CS_RECORD_FLAG_ZSTD, (uint32_t)n, out.data, out.size,
                               &rec));
    _cleanup_(buf_free) Buf dec = BUF_INIT;
    const uint8_t *mp;
    size_t mn;
    ASSERT_OK(cs_record_decode(key, rec.data, rec.size, &dec, &mp, &mn));
    assert_int_equal(dec.size, n);
    assert_memory_equal(dec.data, data, n);

    /* A raw record's plaintext is the chunks themselves. */
    buf_clear(&rec);
    ASSERT_OK(cs_record_encode(key, m, 3, 0, (uint32_t)n, data, n, &rec));
    p = rec.data;
    assert_int_equal(p[4], 0);
    assert_int_equal(get_le32(p + 12), n);
    _cleanup_free_ uint8_t *plain2 = test_xmalloc(n);
    ASSERT_OK(cs_aead_open(key, p + 16, p, aad_len, p + aad_len, n, plain2, p + aad_len + n));
    assert_memory_equal(plain2, data, n);

    /* Two encodings of the same record use fresh nonces. */
    _cleanup_(buf_free) Buf rec2 = BUF_INIT;
    ASSERT_OK(cs_record_encode(key, m, 3, 0, (uint32_t)n, data, n, &rec2));
    assert_memory_not_equal(rec.data + 16, rec2.data + 16, CS_NONCE_SIZE);

    test_rm_rf(dir);
}

/* --- pack writer and trailer --- */

typedef struct TestRecord {
    CsRecordMember *members;
    size_t n;
    uint8_t *raw;
    size_t raw_len;
} TestRecord;

static size_t count_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        _cleanup_free_ char *p = path_join(dir, de->d_name);
        struct stat st;
        assert_int_equal(lstat(p, &st), 0);
        n += S_ISDIR(st.st_mode) ? count_files(p) : 1;
    }
    closedir(d);
    return n;
}

/* Write a pack of `n_records` records (some raw, some zstd); returns its entries. */
static void write_pack(CsBackend *b, const uint8_t enc_key[32], TestRecord *recs,
                       size_t n_records, CsPackId *ret_id, CsPackEntry **ret_entries,
                       size_t *ret_n, uint64_t *ret_size)
{
    CsPackWriter *w = NULL;
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    _cleanup_(buf_free) Buf payload = BUF_INIT;
    size_t expect_entries = 0;
    uint64_t last_size;

    ASSERT_OK(cs_pack_writer_new(b, enc_key, &w));
    assert_int_equal(cs_pack_writer_size(w), CS_PACK_HEADER_SIZE);
    assert_int_equal(cs_pack_writer_entries(w), 0);
    last_size = cs_pack_writer_size(w);
    for (size_t r = 0; r < n_records; r++) {
        TestRecord *t = &recs[r];
        t->n = 1 + r % 4;
        uint32_t lengths[4];
        t->raw_len = 0;
        for (size_t i = 0; i < t->n; i++) {
            lengths[i] = (uint32_t)(500 + 1000 * r + 333 * i);
            t->raw_len += lengths[i];
        }
        t->members = make_members(lengths, t->n);
        if (r % 2) {
            t->raw = test_xmalloc(t->raw_len);
            random_buf(t->raw, t->raw_len);
        } else {
            t->raw = compressible(t->raw_len);
        }
        int flags = cs_record_compress(cctx, 3, t->raw, t->raw_len, &payload);
        ASSERT_OK(flags);
        assert_int_equal(flags, r % 2 ? 0 : CS_RECORD_FLAG_ZSTD);
        ASSERT_OK(cs_pack_writer_add(w, t->members, t->n, (uint8_t)flags, (uint32_t)t->raw_len,
                                     payload.data, payload.size));
        expect_entries += t->n;
        assert_int_equal(cs_pack_writer_entries(w), expect_entries);
        assert_true(cs_pack_writer_size(w) > last_size);
        last_size = cs_pack_writer_size(w);
    }
    ZSTD_freeCCtx(cctx);
    ASSERT_OK(cs_pack_writer_finish(w, ret_id, ret_entries, ret_n, ret_size));
    assert_int_equal(*ret_n, expect_entries);
    assert_int_equal(*ret_size, last_size + n_records * CS_PACK_RECORD_REF_SIZE +
                                        CS_PACK_FOOTER_SIZE);
}

static void free_records(TestRecord *recs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(recs[i].members);
        free(recs[i].raw);
    }
}

static void test_pack_writer(void **state)
{
    (void)state;
    _cleanup_free_ char *dir = test_mkdtemp("pack");
    CsBackend *b = NULL;
    ASSERT_OK(cs_backend_local_open(dir, true, &b));
    uint8_t enc_key[32];
    random_buf(enc_key, sizeof(enc_key));
    TestRecord recs[7] = { 0 };
    CsPackId id;
    CsPackEntry *entries = NULL;
    size_t n = 0;
    uint64_t size = 0;

    write_pack(b, enc_key, recs, ARRAY_SIZE(recs), &id, &entries, &n, &size);

    /* The pack is published under its name, with the size reported. */
    char name[CS_PACK_NAME_MAX];
    cs_pack_name(&id, name);
    uint64_t st_size;
    ASSERT_OK(cs_backend_stat(b, name, &st_size));
    assert_int_equal(st_size, size);
    _cleanup_free_ char *packs = path_join(dir, "packs"), *tmp = path_join(dir, "tmp");
    assert_int_equal(count_files(packs), 1);
    assert_int_equal(count_files(tmp), 0); /* no spool left behind */

    /* Header: magic, version, pack id. */
    uint8_t header[CS_PACK_HEADER_SIZE];
    size_t got;
    ASSERT_OK(cs_backend_get_range(b, name, 0, header, sizeof(header), &got));
    assert_int_equal(got, sizeof(header));
    assert_memory_equal(header, CS_PACK_MAGIC, 8);
    assert_int_equal(get_le32(header + 8), CS_FORMAT_VERSION);
    assert_memory_equal(header + 16, id.bytes, CS_PACK_ID_SIZE);

    /* Entries as returned by finish: in order, tiling each record's plaintext. */
    size_t e = 0;
    uint64_t prev_end = CS_PACK_HEADER_SIZE;
    uint8_t pack_key[32];
    ASSERT_OK(cs_pack_key(enc_key, &id, pack_key));
    for (size_t r = 0; r < ARRAY_SIZE(recs); r++) {
        uint32_t member_off = 0;
        const CsChunkLoc *first = &entries[e].loc;
        assert_int_equal(first->record_off, prev_end); /* records are back to back */
        _cleanup_free_ uint8_t *raw = test_xmalloc(first->record_len);
        ASSERT_OK(cs_backend_get_range(b, name, first->record_off, raw, first->record_len, &got));
        assert_int_equal(got, first->record_len);
        _cleanup_(buf_free) Buf plain = BUF_INIT;
        const uint8_t *mp;
        size_t mn;
        ASSERT_OK(cs_record_decode(pack_key, raw, got, &plain, &mp, &mn));
        assert_int_equal(mn, recs[r].n);
        for (size_t i = 0; i < recs[r].n; i++, e++) {
            const CsPackEntry *pe = &entries[e];
            assert_memory_equal(pe->id.bytes, recs[r].members[i].id.bytes, CS_CHUNK_ID_SIZE);
            assert_memory_equal(pe->loc.pack.bytes, id.bytes, CS_PACK_ID_SIZE);
            assert_int_equal(pe->loc.record_off, first->record_off);
            assert_int_equal(pe->loc.record_len, first->record_len);
            assert_int_equal(pe->loc.member_off, member_off);
            assert_int_equal(pe->loc.length, recs[r].members[i].length);
            assert_memory_equal(plain.data + pe->loc.member_off, recs[r].raw + member_off,
                                pe->loc.length);
            member_off += pe->loc.length;
        }
        prev_end = first->record_off + first->record_len;
    }
    assert_int_equal(e, n);

    /* The trailer read back says the same. */
    CsPackId tid;
    CsPackEntry *tentries = NULL;
    size_t tn = 0;
    ASSERT_OK(cs_pack_read_trailer(b, name, &tid, &tentries, &tn));
    assert_memory_equal(tid.bytes, id.bytes, CS_PACK_ID_SIZE);
    assert_int_equal(tn, n);
    for (size_t i = 0; i < n; i++) {
        assert_memory_equal(tentries[i].id.bytes, entries[i].id.bytes, CS_CHUNK_ID_SIZE);
        assert_memory_equal(tentries[i].loc.pack.bytes, entries[i].loc.pack.bytes,
                            CS_PACK_ID_SIZE);
        assert_int_equal(tentries[i].loc.record_off, entries[i].loc.record_off);
        assert_int_equal(tentries[i].loc.record_len, entries[i].loc.record_len);
        assert_int_equal(tentries[i].loc.member_off, entries[i].loc.member_off);
        assert_int_equal(tentries[i].loc.length, entries[i].loc.length);
    }
    free(tentries);

    /* One record's member list, read alone (as the mount does to plan a group read). */
    _cleanup_(buf_free) Buf members = BUF_INIT;
    const CsChunkLoc *l0 = &entries[0].loc;
    ASSERT_OK(cs_record_read_members(b, name, l0->record_off, l0->record_len, &members));
    size_t in_first = 0;
    while (in_first < n && entries[in_first].loc.record_off == l0->record_off)
        in_first++;
    assert_int_equal(members.size, in_first * CS_RECORD_MEMBER_SIZE);
    for (size_t i = 0; i < in_first; i++) {
        assert_memory_equal(members.data + i * CS_RECORD_MEMBER_SIZE, entries[i].id.bytes,
                            CS_CHUNK_ID_SIZE);
        assert_int_equal(get_le32(members.data + i * CS_RECORD_MEMBER_SIZE + CS_CHUNK_ID_SIZE),
                         entries[i].loc.length);
    }
    /* A length that disagrees with the record's own, or an offset off a record: damaged. */
    ASSERT_ERR(EBADMSG,
               cs_record_read_members(b, name, l0->record_off, l0->record_len - 1, &members));
    ASSERT_ERR(EBADMSG,
               cs_record_read_members(b, name, l0->record_off + 1, l0->record_len, &members));

    /* Footer layout. */
    uint8_t footer[CS_PACK_FOOTER_SIZE];
    ASSERT_OK(cs_backend_get_range(b, name, size - CS_PACK_FOOTER_SIZE, footer, sizeof(footer),
                                   &got));
    assert_memory_equal(footer + 24, CS_PACK_FOOTER_MAGIC, 8);
    assert_int_equal(get_le64(footer), prev_end);
    assert_int_equal(get_le32(footer + 8), n);
    assert_int_equal(get_le32(footer + 12), ARRAY_SIZE(recs));

    /* A second pack gets another id and name. */
    TestRecord recs2[2] = { 0 };
    CsPackId id2;
    CsPackEntry *entries2 = NULL;
    size_t n2;
    uint64_t size2;
    write_pack(b, enc_key, recs2, ARRAY_SIZE(recs2), &id2, &entries2, &n2, &size2);
    assert_memory_not_equal(id.bytes, id2.bytes, CS_PACK_ID_SIZE);
    assert_int_equal(count_files(packs), 2);
    free(entries2);
    free_records(recs2, ARRAY_SIZE(recs2));

    free(entries);
    free_records(recs, ARRAY_SIZE(recs));
    cs_backend_free(b);
    test_rm_rf(dir);
}

static void test_pack_empty_and_abort(void **state)
{
    (void)state;
    _cleanup_free_ char *dir = test_mkdtemp("pack");
    CsBackend *b = NULL;
    ASSERT_OK(cs_backend_local_open(dir, true, &b));
    uint8_t enc_key[32];
    random_buf(enc_key, sizeof(enc_key));
    _cleanup_free_ char *packs = path_join(dir, "packs"), *tmp = path_join(dir, "tmp");

    /* An aborted pack leaves nothing, published or spooled. */
    CsPackWriter *w = NULL;
    ASSERT_OK(cs_pack_writer_new(b, enc_key, &w));
    uint8_t raw[100];
    random_buf(raw, sizeof(raw));
    uint32_t len = sizeof(raw);
    _cleanup_free_ CsRecordMember *m = make_members(&len, 1);
    ASSERT_OK(cs_pack_writer_add(w, m, 1, 0, len, raw, len));
    cs_pack_writer_abort(w);
    cs_pack_writer_abort(NULL);
    assert_int_equal(count_files(packs), 0);
    assert_int_equal(count_files(tmp), 0);

    /* A pack with no records still has a valid, empty trailer. */
    ASSERT_OK(cs_pack_writer_new(b, enc_key, &w));
    CsPackId id, tid;
    CsPackEntry *entries = NULL, *tentries = NULL;
    size_t n = 99, tn = 99;
    uint64_t size;
    ASSERT_OK(cs_pack_writer_finish(w, &id, &entries, &n, &size));
    assert_int_equal(n, 0);
    assert_int_equal(size, CS_PACK_HEADER_SIZE + CS_PACK_FOOTER_SIZE);
    char name[CS_PACK_NAME_MAX];
    cs_pack_name(&id, name);
    ASSERT_OK(cs_pack_read_trailer(b, name, &tid, &tentries, &tn));
    assert_int_equal(tn, 0);
    assert_memory_equal(tid.bytes, id.bytes, CS_PACK_ID_SIZE);
    free(entries);
    free(tentries);

    /* A pack that does not exist. */
    CsPackId missing;
    random_buf(missing.bytes, sizeof(missing.bytes));
    cs_pack_name(&missing, name);
    ASSERT_ERR(ENOENT, cs_pack_read_trailer(b, name, &tid, &tentries, &tn));

    cs_backend_free(b);
    test_rm_rf(dir);
}

/* A torn or damaged pack: every truncation and a flipped trailer byte give -EBADMSG. */
static void test_pack_truncated(void **state)
{
    (void)state;
    _cleanup_free_ char *dir = test_mkdtemp("pack");
    CsBackend *b = NULL;
    ASSERT_OK(cs_backend_local_open(dir, true, &b));
    uint8_t enc_key[32];
    random_buf(enc_key, sizeof(enc_key));
    TestRecord recs[3] = { 0 };
    CsPackId id, tid;
    CsPackEntry *entries = NULL, *tentries = NULL;
    size_t n, tn;
    uint64_t size;
    write_pack(b, enc_key, recs, ARRAY_SIZE(recs), &id, &entries, &n, &size);
    char name[CS_PACK_NAME_MAX];
    cs_pack_name(&id, name);
    _cleanup_free_ char *path = path_join(dir, name);
    assert_non_null(path);
    ASSERT_OK(cs_pack_read_trailer(b, name, &tid, &tentries, &tn));
    free(tentries);
    tentries = NULL;

    /* A flipped byte anywhere in the trailer entries or the footer. */
    uint64_t trailer_off = size - ARRAY_SIZE(recs) * CS_PACK_RECORD_REF_SIZE - CS_PACK_FOOTER_SIZE;
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    for (uint64_t off = trailer_off; off < size; off++) {
        uint8_t c;
        assert_int_equal(pread(fd, &c, 1, (off_t)off), 1);
        c ^= 0x10;
        assert_int_equal(pwrite(fd, &c, 1, (off_t)off), 1);
        int r = cs_pack_read_trailer(b, name, &tid, &tentries, &tn);
        c ^= 0x10;
        assert_int_equal(pwrite(fd, &c, 1, (off_t)off), 1);
        if (r >= 0) {
            free(tentries);
            tentries = NULL;
        }
        if (r != -EBADMSG)
            fail_msg("flipped byte at %llu of %llu (trailer at %llu): read_trailer returned %d",
                     (unsigned long long)off, (unsigned long long)size,
                     (unsigned long long)trailer_off, r);
    }
    /* The header magic too. */
    uint8_t c;
    assert_int_equal(pread(fd, &c, 1, 0), 1);
    c ^= 1;
    assert_int_equal(pwrite(fd, &c, 1, 0), 1);
    ASSERT_ERR(EBADMSG, cs_pack_read_trailer(b, name, &tid, &tentries, &tn));
    c ^= 1;
    assert_int_equal(pwrite(fd, &c, 1, 0), 1);
    ASSERT_OK(cs_pack_read_trailer(b, name, &tid, &tentries, &tn));
    free(tentries);
    tentries = NULL;

    /* A record count and trailer offset that add up to the size only modulo 2^64: refused
     * before anything is sized by them. */
    uint8_t footer[CS_PACK_FOOTER_SIZE], forged[CS_PACK_FOOTER_SIZE];
    assert_int_equal(pread(fd, footer, sizeof(footer), (off_t)(size - sizeof(footer))),
                     (ssize_t)sizeof(footer));
    memcpy(forged, footer, sizeof(forged));
    put_le32(forged + 12, UINT32_MAX);
    put_le64(forged, size - CS_PACK_FOOTER_SIZE - (uint64_t)UINT32_MAX * CS_PACK_RECORD_REF_SIZE);
    assert_int_equal(pwrite(fd, forged, sizeof(forged), (off_t)(size - sizeof(forged))),
                     (ssize_t)sizeof(forged));
    ASSERT_ERR(EBADMSG, cs_pack_read_trailer(b, name, &tid, &tentries, &tn));
    assert_int_equal(pwrite(fd, footer, sizeof(footer), (off_t)(size - sizeof(footer))),
                     (ssize_t)sizeof(footer));

    /* A trailer entry whose offset plus length wraps past 2^64 to inside the pack, with the
     * trailer's checksum to match: refused, not read. */
    uint8_t t0[CS_PACK_RECORD_REF_SIZE], tw[CS_PACK_RECORD_REF_SIZE];
    size_t t_len = ARRAY_SIZE(recs) * CS_PACK_RECORD_REF_SIZE;
    _cleanup_free_ uint8_t *tr = malloc(t_len);
    assert_non_null(tr);
    assert_int_equal(pread(fd, tr, t_len, (off_t)trailer_off), (ssize_t)t_len);
    memcpy(t0, tr, sizeof(t0));
    memcpy(tw, t0, sizeof(tw));
    put_le64(tw, UINT64_MAX - 15);
    put_le32(tw + 8, 64);
    memcpy(tr, tw, sizeof(tw));
    memcpy(forged, footer, sizeof(forged));
    put_le64(forged + 16, XXH3_64bits(tr, t_len));
    assert_int_equal(pwrite(fd, tr, t_len, (off_t)trailer_off), (ssize_t)t_len);
    assert_int_equal(pwrite(fd, forged, sizeof(forged), (off_t)(size - sizeof(forged))),
                     (ssize_t)sizeof(forged));
    ASSERT_ERR(EBADMSG, cs_pack_read_trailer(b, name, &tid, &tentries, &tn));
    memcpy(tr, t0, sizeof(t0));
    assert_int_equal(pwrite(fd, tr, t_len, (off_t)trailer_off), (ssize_t)t_len);
    assert_int_equal(pwrite(fd, footer, sizeof(footer), (off_t)(size - sizeof(footer))),
                     (ssize_t)sizeof(footer));
    ASSERT_OK(cs_pack_read_trailer(b, name, &tid, &tentries, &tn));
    free(tentries);
    tentries = NULL;
    /* Members read at places no record can have: damage, never a refused read (EINVAL). */
    Buf members = BUF_INIT;
    ASSERT_ERR(EBADMSG, cs_record_read_members(b, name, UINT64_MAX - 15, 64, &members));
    ASSERT_ERR(EBADMSG, cs_record_read_members(b, name, CS_PACK_HEADER_SIZE, UINT32_MAX, &members));
    buf_free(&members);

    /* Torn at every length from the full size down to nothing (in steps near the end). */
    for (uint64_t len = size - 1;; len = len > 200 ? len - 1 - len % 7 : len - 1) {
        assert_int_equal(ftruncate(fd, (off_t)len), 0);
        int r = cs_pack_read_trailer(b, name, &tid, &tentries, &tn);
        if (r >= 0) {
            free(tentries);
            tentries = NULL;
        }
        if (r != -EBADMSG)
            fail_msg("pack truncated to %llu of %llu bytes: read_trailer returned %d",
                     (unsigned long long)len, (unsigned long long)size, r);
        if (len == 0)
            break;
    }
    close(fd);

    free(entries);
    free_records(recs, ARRAY_SIZE(recs));
    cs_backend_free(b);
    test_rm_rf(dir);
}

/* --- names and locations --- */

static void test_pack_name(void **state)
{
    (void)state;
    for (int i = 0; i < 100; i++) {
        CsPackId id, back;
        random_buf(id.bytes, sizeof(id.bytes));
        if (i == 0)
            memset(id.bytes, 0, sizeof(id.bytes));
        if (i == 1)
            memset(id.bytes, 0xff, sizeof(id.bytes));
        char name[CS_PACK_NAME_MAX], hex[2 * CS_PACK_ID_SIZE + 1], expect[CS_PACK_NAME_MAX];
        cs_pack_name(&id, name);
        hex_encode(id.bytes, sizeof(id.bytes), hex);
        snprintf(expect, sizeof(expect), "packs/%.2s/%s.pack", hex, hex);
        assert_string_equal(name, expect);
        assert_true(strlen(name) < CS_PACK_NAME_MAX);
        memset(&back, 0xaa, sizeof(back));
        ASSERT_OK(cs_pack_name_parse(name, &back));
        assert_memory_equal(back.bytes, id.bytes, sizeof(id.bytes));
    }

    CsPackId id;
    static const char *const bad[] = {
        "",
        "packs/",
        "packs/00/.pack",
        "packs/00/00112233445566778899aabbccddeeff",
        "packs/00/00112233445566778899aabbccddeeff.pak",
        "packs/00/00112233445566778899aabbccddeeff.pack.tmp",
        "packs/00/00112233445566778899aabbccddee.pack",
        "packs/00/00112233445566778899aabbccddeeff00.pack",
        "packs/00/0011223344556677889xaabbccddeeff.pack",
        "packs/00/ 0112233445566778899aabbccddeeff.pack",
        "packs/00/00112233445566778899aabbccddeeff.pack/",
        "config",
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
        if (cs_pack_name_parse(bad[i], &id) != -EINVAL)
            fail_msg("cs_pack_name_parse(\"%s\") accepted a bad name", bad[i]);
}

static void test_loc_codec(void **state)
{
    (void)state;
    for (int i = 0; i < 50; i++) {
        CsChunkLoc loc, back;
        random_buf(&loc.pack, sizeof(loc.pack));
        random_buf(&loc.record_off, sizeof(loc.record_off));
        random_buf(&loc.record_len, sizeof(loc.record_len));
        random_buf(&loc.member_off, sizeof(loc.member_off));
        random_buf(&loc.length, sizeof(loc.length));
        if (i == 0)
            loc = (CsChunkLoc){ 0 };
        if (i == 1) {
            loc.record_off = UINT64_MAX;
            loc.record_len = loc.member_off = loc.length = UINT32_MAX;
        }
        uint8_t enc[CS_LOC_SIZE];
        cs_loc_encode(&loc, enc);
        /* pack_id[16] record_off u64 record_len u32 member_off u32 len u32, little-endian */
        assert_memory_equal(enc, loc.pack.bytes, CS_PACK_ID_SIZE);
        assert_true(get_le64(enc + 16) == loc.record_off);
        assert_int_equal(get_le32(enc + 24), loc.record_len);
        assert_int_equal(get_le32(enc + 28), loc.member_off);
        assert_int_equal(get_le32(enc + 32), loc.length);
        memset(&back, 0x5a, sizeof(back));
        ASSERT_OK(cs_loc_decode(enc, sizeof(enc), &back));
        assert_memory_equal(back.pack.bytes, loc.pack.bytes, CS_PACK_ID_SIZE);
        assert_true(back.record_off == loc.record_off);
        assert_int_equal(back.record_len, loc.record_len);
        assert_int_equal(back.member_off, loc.member_off);
        assert_int_equal(back.length, loc.length);
    }
    uint8_t enc[CS_LOC_SIZE + 1] = { 0 };
    CsChunkLoc loc;
    assert_true(cs_loc_decode(enc, CS_LOC_SIZE - 1, &loc) < 0);
    assert_true(cs_loc_decode(enc, CS_LOC_SIZE + 1, &loc) < 0);
    assert_true(cs_loc_decode(enc, 0, &loc) < 0);
}

RUN_TESTS(cmocka_unit_test(test_record_one_member), cmocka_unit_test(test_record_many_members),
          cmocka_unit_test(test_record_compress), cmocka_unit_test(test_record_inconsistent),
          cmocka_unit_test(test_record_tamper), cmocka_unit_test(test_record_wrong_key),
          cmocka_unit_test(test_record_layout_zstd_cli), cmocka_unit_test(test_pack_writer),
          cmocka_unit_test(test_pack_empty_and_abort), cmocka_unit_test(test_pack_truncated),
          cmocka_unit_test(test_pack_name), cmocka_unit_test(test_loc_codec))
